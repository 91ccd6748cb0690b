//! facegan: train generative adversarial networks on face photographs and generate new faces.
pub mod ops;
