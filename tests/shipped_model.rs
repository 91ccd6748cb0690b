//! The README's first command: `facegan generate --out faces.png` with no other argument
//! writes an 8x8 grid of 64x64 faces from the generator the repository ships.

mod common;
use common::*;

#[test]
fn generate_with_no_arguments_uses_the_shipped_model() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("faces.png");
    let o = bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["generate", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&out).unwrap().to_rgb8();
    // 8 columns of 64 px with 2 px padding around and between them.
    assert_eq!(img.dimensions(), (8 * 66 + 2, 8 * 66 + 2));
    // Faces, not a constant: the cells differ from one another and have contrast.
    let cell = |r: u32, c: u32| -> Vec<u8> {
        let mut px = Vec::new();
        for y in 0..64 {
            for x in 0..64 {
                px.extend_from_slice(&img.get_pixel(2 + c * 66 + x, 2 + r * 66 + y).0);
            }
        }
        px
    };
    let a = cell(0, 0);
    let b = cell(3, 5);
    assert_ne!(a, b);
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
    let sd = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
    assert!(sd > 10.0, "a generated face is nearly flat (sd {sd})");

    // The same seed gives the same faces; the shipped file is small enough to commit.
    let again = t.path().join("again.png");
    assert!(bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["generate", "--out", again.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let size =
        std::fs::metadata(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/dcgan64-celeba.safetensors"))
            .unwrap()
            .len();
    assert!(size < 20_000_000);
}
