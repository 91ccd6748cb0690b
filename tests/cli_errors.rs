//! Bad input: clear errors naming the file and the problem, no panics, nothing lost.

mod common;
use common::*;

#[test]
fn missing_and_empty_data_folders() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nothing-here");
    let (ok, out) =
        run(&["prepare", "--data", missing.to_str().unwrap(), "--out", t.path().join("c.fgc").to_str().unwrap()]);
    assert!(!ok && out.contains("nothing-here") && out.contains("does not exist"), "{out}");
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, out) =
        run(&["prepare", "--data", empty.to_str().unwrap(), "--out", t.path().join("c.fgc").to_str().unwrap()]);
    assert!(!ok && out.contains("empty") && out.contains("no images"), "{out}");
    let (ok, out) =
        run(&["train", "--data", missing.to_str().unwrap(), "--out", t.path().join("run").to_str().unwrap()]);
    assert!(!ok && out.contains("nothing-here"), "{out}");
}

#[test]
fn broken_images_are_listed_and_skipped_or_fatal_with_strict() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 4);
    std::fs::write(data.join("letter.jpg"), "Dear user, this is not a JPEG.").unwrap();
    let good = std::fs::read(data.join("0000.png")).unwrap();
    let mut jpeg = Vec::new();
    image::open(data.join("0000.png"))
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(data.join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    image::RgbImage::new(1, 1).save(data.join("dot.png")).unwrap();
    assert!(!good.is_empty());
    let out_path = t.path().join("c.fgc");
    let (ok, out) =
        run(&["prepare", "--data", data.to_str().unwrap(), "--size", "32", "--out", out_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    for name in ["letter.jpg", "cut.jpg", "dot.png"] {
        assert!(out.contains(name), "{name} not listed:\n{out}");
    }
    assert!(out.contains("prepared 4 images") && out.contains("3 skipped"), "{out}");
    assert!(out.contains("truncated") && out.contains("1x1") && out.contains("not a JPEG or PNG"), "{out}");

    let (ok, out) = run(&[
        "prepare",
        "--strict",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "32",
        "--out",
        t.path().join("s.fgc").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("--strict"), "{out}");
    assert!(!t.path().join("s.fgc").exists());

    let only_bad = t.path().join("bad");
    std::fs::create_dir(&only_bad).unwrap();
    std::fs::write(only_bad.join("x.jpg"), "text").unwrap();
    let (ok, out) =
        run(&["prepare", "--data", only_bad.to_str().unwrap(), "--out", t.path().join("b.fgc").to_str().unwrap()]);
    assert!(!ok && out.contains("no usable image") && out.contains("bad"), "{out}");
}

#[test]
fn unwritable_outputs() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 2);
    let (ok, out) = run(&["prepare", "--data", data.to_str().unwrap(), "--out", "/nonexistent-dir/c.fgc"]);
    assert!(!ok && out.contains("/nonexistent-dir"), "{out}");
    let blocker = t.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let run_dir = blocker.join("run");
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", run_dir.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let (ok, out) = run(&args);
    assert!(!ok && out.contains("cannot create run folder"), "{out}");
}

#[test]
fn unknown_preset_and_config_key_list_the_valid_ones() {
    let t = tempfile::tempdir().unwrap();
    let (ok, out) =
        run(&["train", "--preset", "dcgan-99", "--data", "x", "--out", t.path().join("r").to_str().unwrap()]);
    assert!(!ok && out.contains("dcgan-99") && out.contains("dcgan-64"), "{out}");
    let cfg = t.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nlearnin_rate = 0.1\n").unwrap();
    let (ok, out) = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        "x",
        "--out",
        t.path().join("r").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("bad.toml") && out.contains("learnin_rate") && out.contains("batch_size"), "{out}");
}

#[test]
fn bad_checkpoints_and_resume_targets() {
    let t = tempfile::tempdir().unwrap();
    let (ok, out) = run(&["train", "--resume", t.path().to_str().unwrap()]);
    assert!(!ok && out.contains("no checkpoints"), "{out}");
    let (ok, out) = run(&["train", "--resume", t.path().join("nope").to_str().unwrap()]);
    assert!(!ok && out.contains("nope"), "{out}");

    let junk = t.path().join("junk.safetensors");
    std::fs::write(&junk, "not a checkpoint").unwrap();
    let (ok, out) =
        run(&["generate", "--checkpoint", junk.to_str().unwrap(), "--out", t.path().join("f.png").to_str().unwrap()]);
    assert!(!ok && out.contains("junk.safetensors"), "{out}");

    // A real checkpoint, then damaged copies of it.
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", run_dir.to_str().unwrap(), "--steps", "2"];
    args.extend_from_slice(TINY);
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    let ck = run_dir.join("checkpoints/step-0000002.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    let cut = t.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, out) =
        run(&["generate", "--checkpoint", cut.to_str().unwrap(), "--out", t.path().join("f.png").to_str().unwrap()]);
    assert!(!ok && out.contains("cut.safetensors") && out.contains("truncated"), "{out}");

    // generate into a folder that does not exist.
    let (ok, out) = run(&["generate", "--checkpoint", ck.to_str().unwrap(), "--out", "/nonexistent-dir/faces.png"]);
    assert!(!ok && out.contains("/nonexistent-dir"), "{out}");

    // Resuming with another architecture or size is refused, and the run is untouched.
    let (ok, out) =
        run(&["train", "--resume", run_dir.to_str().unwrap(), "--image-size", "64", "--steps", "4", "--quiet"]);
    assert!(!ok && out.contains("model.image_size: 32 in the checkpoint, 64 requested"), "{out}");
    assert_eq!(std::fs::read(&ck).unwrap(), bytes);
    // Even with --override: the networks cannot change under a run.
    let r = run_dir.to_str().unwrap();
    let (ok, out) = run(&["train", "--resume", r, "--override", "model.image_size=64", "--steps", "4", "--quiet"]);
    assert!(!ok && out.contains("model settings differ"), "{out}");
    assert_eq!(std::fs::read(&ck).unwrap(), bytes);

    // A new run into a folder that already holds one is refused.
    let (ok, out) = run(&args);
    assert!(!ok && out.contains("already holds a run"), "{out}");
}

/// Model options that do not fit a family are refused before anything is written, each
/// with the reason.
#[test]
fn family_options_that_do_not_fit_say_why() {
    let t = tempfile::tempdir().unwrap();
    let out_dir = t.path().join("r");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", "x", "--out", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--arch", "stylegan9"], &["stylegan9", "mlp, dcgan, resnet, ebgan"]),
        (&["--preset", "sngan-64", "--attention", "64"], &["attention 64", "8, 16, 32"]),
        (&["--preset", "sagan-64", "--ndf", "4"], &["at least 8 channels"]),
        (&["--preset", "ebgan-64", "--d-spectral-norm", "true"], &["d_spectral_norm", "ebgan", "d_norm"]),
        (&["--preset", "dcgan-64", "--attention", "16"], &["attention", "dcgan"]),
        (&["--preset", "resnet-wgan-gp-64", "--d-norm", "batch"], &["batch norm", "wgan-gp"]),
        (&["--preset", "dcgan-64", "--loss", "ebgan"], &["ebgan", "energy"]),
        (&["--preset", "dcgan-64", "--penalty", "pull-away"], &["pull-away", "embedding"]),
        (&["--preset", "mlp-64", "--mbstd-group", "1"], &["mbstd_group"]),
    ];
    for (args, needles) in cases {
        let (ok, out) = train(args);
        assert!(!ok, "{args:?} was accepted");
        for n in *needles {
            assert!(out.contains(n), "{args:?}: no '{n}' in:\n{out}");
        }
        assert!(!out_dir.exists(), "{args:?} created the run folder");
    }
}

/// `train --resume` refuses flags that would silently change the run, listing each one; with
/// `--override KEY=VALUE` the change is made and recorded in config-history.jsonl. Run length
/// and logging change freely.
#[test]
fn resume_refuses_silent_changes_and_records_overrides() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let r = run_dir.to_str().unwrap();
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", r, "--preset", "dcgan-32"];
    args.extend_from_slice(&["--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "4", "--steps", "2"]);
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    let (ok, out) =
        run(&["train", "--resume", r, "--steps", "3", "--seed", "9", "--batch-size", "8", "--loss", "hinge"]);
    assert!(!ok, "{out}");
    for needle in ["train.seed: 0 in the checkpoint, 9 requested", "train.batch_size: 4", "train.loss", "--override"] {
        assert!(out.contains(needle), "no '{needle}' in:\n{out}");
    }
    assert!(!run_dir.join("config-history.jsonl").exists());
    let (ok, out) = run(&["train", "--resume", r, "--steps", "3", "--override", "train.lr_d=1e-4", "--log-every", "1"]);
    assert!(ok, "{out}");
    let history = std::fs::read_to_string(run_dir.join("config-history.jsonl")).unwrap();
    assert!(
        history.contains("\"step\":2") && history.contains("train.lr_d") && history.contains("0.0001"),
        "{history}"
    );
    let (ok, out) = run(&["train", "--resume", r, "--steps", "4", "--override", "train.lr=1"]);
    assert!(!ok && out.contains("no setting 'train.lr'"), "{out}");
}
