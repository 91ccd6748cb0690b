//! The Rust Inception features against PyTorch's on the same archive
//! (tests/fixtures/inception_reference.json, written by scripts/reference_features.py).
//!
//! Needs the weights in the cache folder (`bash scripts/fetch-inception.sh`): without
//! them the test is skipped with a note, except under CI=true, where it fails.

use candle_core::Device;
use facegan::metrics::inception::Inception;

mod common;
use common::inception_weights as weights_or_skip;
use serde_json::Value;

/// The fixture's integer recipe (see scripts/reference_features.py).
fn synthetic_image(k: i64, size: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                let v = (37 * k + (3 + k) * x + (5 + 2 * k) * y + 85 * c + 11 * ((x * y) % (7 + k))) % 256;
                let disc = (x - 32).pow(2) + (y - 32).pow(2) < (10 + 5 * k).pow(2);
                out.push(if disc { 255 - v } else { v } as u8);
            }
        }
    }
    out
}

#[test]
fn features_match_pytorch_within_1e3() {
    let Some(path) = weights_or_skip() else {
        return;
    };
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inception_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let net = Inception::load(&path, &Device::Cpu).unwrap();
    assert_eq!(net.weights_sha256, fixture["weights_sha256"].as_str().unwrap());
    assert_eq!(net.parameter_count, 21_802_784);
    let size = fixture["image_size"].as_i64().unwrap();
    let images: Vec<Vec<u8>> = (0..4).map(|k| synthetic_image(k, size)).collect();
    let refs: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
    let x = facegan::metrics::inception::images_to_input(&refs, size as usize, &Device::Cpu).unwrap();
    let t = std::time::Instant::now();
    let feats = net.forward(&x).unwrap();
    eprintln!("4 images in {:.2?}", t.elapsed());
    assert_eq!(feats.dims(), &[4, 2048]);
    let feats = feats.to_vec2::<f32>().unwrap();
    let means = x.flatten_from(1).unwrap().mean(1).unwrap().to_vec1::<f32>().unwrap();
    for (k, want) in fixture["images"].as_array().unwrap().iter().enumerate() {
        let f = &feats[k];
        let input_mean = want["input_mean"].as_f64().unwrap();
        assert!((means[k] as f64 - input_mean).abs() < 1e-5, "image {k}: input mean {} vs {input_mean}", means[k]);
        let norm = f.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let want_norm = want["norm"].as_f64().unwrap();
        let rel = (norm - want_norm).abs() / want_norm;
        assert!(rel < 1e-3, "image {k}: norm {norm} vs {want_norm} (rel {rel:.2e})");
        let sum: f64 = f.iter().map(|&v| v as f64).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!((sum - want_sum).abs() / want_sum.abs() < 1e-3, "image {k}: sum {sum} vs {want_sum}");
        let first: Vec<f64> = want["first16"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let scale = want_norm / (2048f64).sqrt();
        for (i, w) in first.iter().enumerate() {
            let got = f[i] as f64;
            assert!((got - w).abs() <= 1e-3 * w.abs().max(scale), "image {k} feature {i}: {got} vs {w}");
        }
        eprintln!("image {k}: norm {norm:.5} (torch {want_norm:.5}, rel {rel:.1e})");
    }
}

/// A whole evaluation through the library: Inception features of two folders, KID
/// and precision/recall, and the real features read back from the cache folder.
#[test]
fn evaluate_folders_and_reuse_cached_real_features() {
    use facegan::metrics::{evaluate, parse_metrics, EvalOptions, Source};
    if weights_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (real, fake, cache) = (dir.path().join("real"), dir.path().join("fake"), dir.path().join("cache"));
    for d in [&real, &fake] {
        std::fs::create_dir_all(d).unwrap();
    }
    for k in 0..5 {
        let save = |d: &std::path::Path, img: Vec<u8>| {
            image::RgbImage::from_raw(64, 64, img).unwrap().save(d.join(format!("{k}.png"))).unwrap()
        };
        save(&real, synthetic_image(k, 64));
        // The fakes: the same pictures upside down.
        let rows: Vec<Vec<u8>> = synthetic_image(k, 64).chunks(64 * 3).rev().map(|r| r.to_vec()).collect();
        save(&fake, rows.concat());
    }
    let mut opts = EvalOptions::new(Source::from_path(&fake), Source::from_path(&real));
    opts.metrics = parse_metrics("kid,pr").unwrap();
    opts.cache_dir = Some(cache.clone());
    opts.num = 5;
    opts.batch_size = 5;
    opts.kid.subsets = 10;
    let first = evaluate(&opts).unwrap();
    assert!(!first.real_features_cached);
    assert_eq!((first.num_fake, first.num_real, first.image_size), (5, 5, 64));
    assert!(first.kid.as_ref().unwrap().mean.is_finite());
    let p = first.precision.unwrap();
    assert!((0.0..=1.0).contains(&p));
    let second = evaluate(&opts).unwrap();
    assert!(second.real_features_cached, "the real features are reused");
    assert_eq!(first.kid, second.kid);
    assert_eq!(first.precision, second.precision);
    // The same folder on both sides: every sample lies in the other's manifold.
    opts.fake = Source::from_path(&real);
    let same = evaluate(&opts).unwrap();
    assert_eq!((same.precision, same.recall), (Some(1.0), Some(1.0)));
}
