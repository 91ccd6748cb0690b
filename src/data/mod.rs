//! Face data: scan a folder, decode + centre-crop + resize, a packed uint8 cache that
//! training memory-maps, and a shuffled batch loader.

pub mod attrs;
pub mod cache;
pub mod loader;
pub mod preprocess;
pub mod scan;

pub use cache::{prepare, Dataset, PrepareOptions, PrepareReport};
pub use loader::Loader;
