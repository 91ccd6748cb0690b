//! Training: the step sequence, optimizers, checkpoints and the files a run leaves.

pub mod checkpoint;
pub mod eval;
pub mod optim;
pub mod stats;
pub mod trainer;

pub use trainer::{train, TrainOptions, TrainOutcome};
