//! A request to stop, made by a signal (Ctrl-C, SIGTERM, SIGHUP during `facegan train`) and
//! read by long loops: the training loop checkpoints and stops, and the metrics' batch loops
//! (generating faces, Inception passes) give up with [`Interrupted`], so that an evaluation
//! in progress does not hold the checkpoint back for minutes.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks long loops to stop; returns whether a stop had already been asked for.
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Whether a stop has been asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forgets a request (a new training run in the same process starts afresh).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// The error of work given up because a stop was asked for.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `Err(Interrupted)` once a stop has been asked for.
pub fn check() -> Result<(), Interrupted> {
    match requested() {
        true => Err(Interrupted),
        false => Ok(()),
    }
}
