//! Evaluation: Inception features and the metrics built on them.

pub mod fid;
pub mod inception;
pub mod kid;
pub mod linalg;
pub mod precision_recall;
pub mod swd;
pub mod torchscript;
