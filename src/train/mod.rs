//! Training: the step sequence, optimizers, checkpoints and the files a run leaves
//! (stats.jsonl, TensorBoard event files, sample grids, metrics), and the run folder's lock.

pub mod augment;
pub mod checkpoint;
pub mod eval;
pub mod lock;
pub mod optim;
pub mod stats;
pub mod tensorboard;
pub mod trainer;

pub use trainer::{train, TrainOptions, TrainOutcome};
