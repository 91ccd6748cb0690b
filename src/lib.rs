//! facegan: train generative adversarial networks on face photographs and generate new faces.
//!
//! Second-order gradients (gradient penalties) need `CANDLE_GRAD_DO_NOT_DETACH=1` in the
//! environment before the first backward pass; the `facegan` binary sets it, and
//! `.cargo/config.toml` sets it for `cargo run` and `cargo test`. Call
//! [`enable_second_order_gradients`] at the start of a program that uses the library.

pub mod bench;
pub mod config;
pub mod data;
pub mod device;
pub mod fsutil;
pub mod interrupt;
pub mod loss;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod penalty;
pub mod presets;
pub mod report;
pub mod rng;
pub mod sample;
pub mod train;

/// Process-wide settings facegan needs, to call at the start of `main` before any tensor
/// work: second-order gradients on, and candle's element-wise thread pool kept to the
/// calling thread unless `CANDLE_NUM_THREADS` is set (its spinning workers fight rayon,
/// which the convolutions use, for the cores: 3-5x slower steps measured on 2 cores).
pub fn init() {
    enable_second_order_gradients();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    keep_freed_memory();
}

/// Makes glibc's allocator keep and reuse freed large blocks instead of returning them
/// to the kernel (the resident size stays at the peak of a training step). Every
/// activation and gradient is a fresh tensor of several MB; by default glibc serves those
/// with mmap and unmaps them on free, so each step pays
/// page faults and page clearing on all of its memory again (12% of an Inception pass
/// in the profile; with this, 4.4 -> 6.2 images/s). A no-op off glibc, and when the
/// user set MALLOC_MMAP_THRESHOLD_ themselves.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // program's threads start allocating tensors.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            // Never trim: a WGAN-GP critic step frees over 1 GiB at once, and a 1 GiB
            // threshold returned it to the kernel only to fault it back in (clear_page was a
            // quarter of the step's single-threaded time).
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        }
    }
}

/// Sets `CANDLE_GRAD_DO_NOT_DETACH=1`. Candle reads it once per thread, at that
/// thread's first backward pass, so call this before any tensor work.
pub fn enable_second_order_gradients() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
}
