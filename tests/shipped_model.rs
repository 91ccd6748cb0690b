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
    let zoo =
        facegan::sample::zoo::Zoo::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap();
    let size = std::fs::metadata(zoo.path(zoo.default_model()).unwrap()).unwrap().len();
    assert!(size < 20_000_000);
}

/// A Python with torch, numpy and pillow: `$FACEGAN_TORCH_PYTHON`, else `python3` if it has
/// them. Torch is never required: without it the test skips, saying so (also under CI).
fn torch_python() -> Option<String> {
    let candidates = [std::env::var("FACEGAN_TORCH_PYTHON").ok(), Some("python3".to_string())];
    let found = candidates.into_iter().flatten().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import torch, numpy, PIL"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        eprintln!("skipping: no Python with torch, numpy and pillow (set FACEGAN_TORCH_PYTHON)");
    }
    found
}

/// scripts/to_pytorch.py loads the shipped DCGAN and an MLP generator into torch modules that
/// make the faces `facegan generate` makes from the same seed (to within one level of 255 in
/// a pixel, the rounding of a float difference).
#[test]
fn the_pytorch_script_makes_the_same_faces() {
    let Some(py) = torch_python() else { return };
    let t = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = t.path().join("faces");
    synthetic_faces(&data, 8);
    let mlp_run = t.path().join("mlp");
    let (ok, out) = run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        mlp_run.to_str().unwrap(),
        "--preset",
        "mlp-32",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{out}");
    let mlp = mlp_run.join("checkpoints/step-0000002.safetensors");
    for (name, model) in [("shipped", root.join("models/dcgan64-celeba.safetensors")), ("mlp", mlp)] {
        let ours = t.path().join(format!("{name}-facegan/"));
        let theirs = t.path().join(format!("{name}-torch"));
        let m = model.to_str().unwrap();
        let (ok, out) =
            run(&["generate", "--checkpoint", m, "--count", "6", "--seed", "4", "--out", ours.to_str().unwrap()]);
        assert!(ok, "{out}");
        let o = std::process::Command::new(&py)
            .arg(root.join("scripts/to_pytorch.py"))
            .args([m, "--count", "6", "--seed", "4", "--out", theirs.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for i in 0..6 {
            let f = format!("face-{i:04}.png");
            let a = image::open(ours.join(&f)).unwrap().to_rgb8();
            let b = image::open(theirs.join(&f)).unwrap().to_rgb8();
            assert_eq!(a.dimensions(), b.dimensions());
            let worst = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
            assert!(worst <= 1, "{name} face {i}: pixels differ by {worst}");
        }
    }
}

/// Every model of the zoo (models/zoo.toml) makes faces with `generate --model NAME`,
/// `facegan models` lists them all, the default is what `generate` alone uses, each file is
/// small enough to commit, and each continuation file is one `train --init-from` reads.
#[test]
fn every_zoo_model_generates_faces() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let zoo = facegan::sample::zoo::Zoo::load(&root.join("models")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let (ok, listing) = run(&["models"]);
    assert!(ok, "{listing}");
    for m in &zoo.models {
        assert!(listing.contains(&m.name), "{} missing from:\n{listing}", m.name);
        let dir = t.path().join(format!("{}/", m.name));
        let (ok, out) =
            run(&["generate", "--model", &m.name, "--count", "4", "--seed", "3", "--out", dir.to_str().unwrap()]);
        assert!(ok, "{}: {out}", m.name);
        let faces: Vec<_> =
            (0..4).map(|i| image::open(dir.join(format!("face-{i:04}.png"))).unwrap().to_rgb8()).collect();
        assert_ne!(faces[0], faces[1], "{}", m.name);
        let px = faces[0].as_raw();
        let mean = px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
        let sd = (px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt();
        assert!(sd > 10.0, "{}: a face is nearly flat (sd {sd})", m.name);
        assert!(std::fs::metadata(zoo.path(m).unwrap()).unwrap().len() < 20_000_000, "{}", m.name);
        if let Some(c) = &m.continuation {
            let p = root.join("models").join(c);
            assert!(std::fs::metadata(&p).unwrap().len() <= 25_000_000, "{c}");
            let ck = facegan::train::checkpoint::read(&p, &candle_core::Device::Cpu).unwrap();
            assert_eq!(ck.kind(), facegan::train::checkpoint::KIND_CONTINUATION, "{c}");
            assert_eq!(ck.meta_u64("images_seen").ok(), Some(m.images_seen), "{c}: the zoo's images seen");
        }
    }
    // The default model is what `generate` uses with no --model.
    let default = zoo.default_model();
    let (a, b) = (t.path().join("a.png"), t.path().join("b.png"));
    assert!(run(&["generate", "--count", "4", "--out", a.to_str().unwrap()]).0);
    assert!(run(&["generate", "--model", &default.name, "--count", "4", "--out", b.to_str().unwrap()]).0);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (ok, out) = run(&["generate", "--model", "no-such-model", "--out", a.to_str().unwrap()]);
    assert!(!ok && out.contains("no model no-such-model") && out.contains(&default.name), "{out}");
}

/// The zoo's style-family models draw the StyleGAN figures by name (`mix`, `noise` and
/// `generate --truncation` with `--model`), and with no model named, `mix` refuses the
/// default DCGAN, saying why.
#[test]
fn zoo_style_models_draw_the_style_figures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let zoo = facegan::sample::zoo::Zoo::load(&root.join("models")).unwrap();
    let style: Vec<_> = zoo.models.iter().filter(|m| m.preset.starts_with("stylegan")).collect();
    assert!(!style.is_empty(), "the zoo has no StyleGAN model");
    let t = tempfile::tempdir().unwrap();
    for m in style {
        for (cmd, want) in [("mix", (5 * 66, 10 * 66)), ("noise", (5 * 66, 3 * 66))] {
            let out = t.path().join(format!("{}-{cmd}.png", m.name));
            let (ok, text) = run(&[cmd, "--model", &m.name, "--out", out.to_str().unwrap()]);
            assert!(ok, "{} {cmd}: {text}", m.name);
            let img = image::open(&out).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (want.0 + 2, want.1 + 2), "{} {cmd}", m.name);
        }
        // psi = 0 puts every face at w_avg's: the faces differ only by their noise inputs,
        // far less than without truncation.
        let spread = |psi: &str| {
            let dir = t.path().join(format!("{}-psi{psi}/", m.name));
            let (ok, text) = run(&[
                "generate",
                "--model",
                &m.name,
                "--count",
                "4",
                "--truncation",
                psi,
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(ok, "{}: {text}", m.name);
            let faces: Vec<_> =
                (0..4).map(|i| image::open(dir.join(format!("face-{i:04}.png"))).unwrap().to_rgb8()).collect();
            let diff = |a: &image::RgbImage, b: &image::RgbImage| {
                a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len() as f64
            };
            (1..4).map(|k| diff(&faces[0], &faces[k])).sum::<f64>() / 3.0
        };
        let (collapsed, plain) = (spread("0"), spread("1"));
        assert!(collapsed < 0.5 * plain, "{}: psi 0 spread {collapsed} vs psi 1 {plain}", m.name);
    }
    let out = t.path().join("default-mix.png");
    let (ok, text) = run(&["mix", "--out", out.to_str().unwrap()]);
    assert!(!ok && text.contains("dcgan, which has none"), "{text}");
}

#[test]
fn inspect_counts_the_parameters_of_each_network() {
    // pytorch/examples' DCGAN generator (nz 100, ngf 64): 3,576,704 parameters; its batch-norm
    // statistics (1,920 values) are buffers, not parameters.
    let o = bin().args(["inspect", "models/dcgan64-celeba.safetensors"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("21 tensors, 3578624 values"), "{out}");
    assert!(out.lines().any(|l| l == "parameters: G_ema 3576704"), "{out}");
}
