//! Evaluation: Inception features and the metrics built on them.

pub mod inception;
pub mod torchscript;
