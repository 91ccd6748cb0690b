//! `facegan eval` and `train --eval-every`, as a user runs them: the metrics land in
//! the table, the JSON and metrics.jsonl, agree with each other, survive a resume, and
//! bad input gets a clear error.
//!
//! Needs the Inception weights (`bash scripts/fetch-inception.sh`); without them the
//! tests skip with a note, except under CI=true, where they fail.

mod common;
use common::*;
use facegan::train::eval::{read, METRICS_FILE};
use std::ffi::OsStr;
use std::path::Path;

/// Environment for one test: the weights where they are, everything else cached in `tmp`.
fn env<'a>(weights: &'a Path, tmp: &'a Path) -> [(&'static str, &'a OsStr); 2] {
    [("FACEGAN_INCEPTION", weights.as_os_str()), ("FACEGAN_CACHE_DIR", tmp.as_os_str())]
}

#[test]
fn training_evaluates_into_metrics_jsonl_and_eval_agrees() {
    let Some(weights) = inception_weights() else { return };
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let env = env(&weights, &cache);
    let data = t.path().join("faces");
    synthetic_faces(&data, 24);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let eval_flags = ["--eval-every", "1", "--eval-num", "8", "--eval-metrics", "fid,swd"];
    // The training's caches go to --cache-dir, not to the FACEGAN_CACHE_DIR of `env`.
    let train_cache = t.path().join("train-cache");
    let mut args = vec!["train", "--data", d, "--out", r, "--steps", "2", "--cache-dir", train_cache.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&eval_flags);
    let (ok, out) = run_env(&args, &env);
    assert!(ok, "{out}");
    let count = |dir: &Path| std::fs::read_dir(dir).map(|d| d.filter(|e| e.as_ref().unwrap().path().is_file()).count());
    assert_eq!(count(&train_cache).ok(), Some(1), "the prepared folder");
    assert_eq!(count(&train_cache.join("features")).ok(), Some(1), "the reference features");
    assert!(!cache.exists(), "nothing in FACEGAN_CACHE_DIR");
    let lines = read(&run_dir.join(METRICS_FILE)).unwrap();
    assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), [1, 2], "{lines:?}");
    for l in &lines {
        assert_eq!((l.num_fake, l.num_real), (8, 8));
        assert!(l.fid.is_some_and(|f| f.is_finite() && f > 0.0), "{l:?}");
        assert!(l.swd.is_some_and(|s| s.is_finite() && s > 0.0), "{l:?}");
        assert!(l.kid.is_none() && l.precision.is_none());
    }
    assert_ne!(lines[0].fid, lines[1].fid, "the generator changed between the evaluations");
    // Each line says how many real images D had seen and the training's CPU seconds so far
    // (the x-axes of a learning curve); TINY trains at batch 8.
    assert_eq!(lines.iter().map(|l| l.images_seen).collect::<Vec<_>>(), [Some(8), Some(16)]);
    let cpu: Vec<f64> = lines.iter().map(|l| l.cpu_s.unwrap()).collect();
    assert!(0.0 < cpu[0] && cpu[0] < cpu[1], "{cpu:?}");
    assert!(run_dir.join("metrics.png").is_file(), "the report plots the evaluations");

    // Resume for one more step: the log goes on from the checkpoint.
    let (ok, out) = run_env(&["train", "--resume", r, "--steps", "3", "--quiet"], &env);
    assert!(ok, "{out}");
    let lines = read(&run_dir.join(METRICS_FILE)).unwrap();
    assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), [1, 2, 3], "{lines:?}");
    assert!(lines[2].cpu_s.unwrap() > cpu[1], "the CPU count goes on after a resume: {lines:?}");

    // `facegan eval` on the run folder (its newest checkpoint) with the same faces and
    // reference gives the FID the training logged at that step.
    let json = t.path().join("report.json");
    let (ok, out) = run_env(
        &[
            "eval",
            r,
            "--real",
            d,
            "--num",
            "8",
            "--num-real",
            "8",
            "--metrics",
            "fid,kid,pr,swd",
            "--json",
            json.to_str().unwrap(),
            "--quiet",
        ],
        &env,
    );
    assert!(ok, "{out}");
    for row in ["FID", "KID", "precision (k=3)", "recall (k=3)", "SWD mean"] {
        assert!(out.contains(row), "no {row} in:\n{out}");
    }
    let report = facegan::metrics::EvalReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((report.num_fake, report.num_real, report.image_size), (8, 8, 32));
    assert!(out.contains("protocol fid8: 8 generated vs 8 real") && out.contains("TF-1 bilinear"), "{out}");
    assert!(report.protocol.as_deref().is_some_and(|p| p.starts_with("fid8:")), "{report:?}");
    assert!(report.fake.contains("step-0000003"), "{}", report.fake);
    let (fid, logged) = (report.fid.unwrap(), lines[2].fid.unwrap());
    assert!((fid - logged).abs() <= 1e-6 * logged.abs().max(1.0), "eval {fid} vs training's {logged}");
    let kid = report.kid.clone().unwrap();
    let (p, rc) = (report.precision.unwrap(), report.recall.unwrap());
    assert!(kid.mean.is_finite() && (0.0..=1.0).contains(&p) && (0.0..=1.0).contains(&rc), "{report:?}");
    assert!(out.contains(&format!("{fid:.4}")), "the table shows the JSON's FID:\n{out}");

    // The reference features were cached by the first evaluation and are reused.
    assert!(!report.real_features_cached, "{report:?}");
    let (ok, out) = run_env(
        &[
            "eval",
            r,
            "--real",
            d,
            "--num",
            "8",
            "--num-real",
            "8",
            "--metrics",
            "fid",
            "--json",
            json.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{out}");
    let again = facegan::metrics::EvalReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(again.real_features_cached, "{again:?}");
    assert!((again.fid.unwrap() - fid).abs() <= 1e-6 * fid, "{again:?}");
}

/// `--held-out N` keeps the last N faces out of training; `--eval-every` then measures
/// against them, and `facegan eval --held-out N` picks the same reference set.
#[test]
fn held_out_faces_are_the_reference_of_training_and_eval() {
    let Some(weights) = inception_weights() else { return };
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let env = env(&weights, &cache);
    let data = t.path().join("faces");
    synthetic_faces(&data, 24);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let mut args = vec!["train", "--data", d, "--out", r, "--steps", "1", "--held-out", "8"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--eval-every", "1", "--eval-num", "8", "--eval-metrics", "fid"]);
    let (ok, out) = run_env(&args, &env);
    assert!(ok, "{out}");
    let logged = read(&run_dir.join(METRICS_FILE)).unwrap()[0].fid.unwrap();
    let json = t.path().join("report.json");
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", r, "--real", d, "--num", "8", "--metrics", "fid", "--quiet", "--json"];
        a.push(json.to_str().unwrap());
        a.extend_from_slice(extra);
        let (ok, out) = run_env(&a, &env);
        assert!(ok, "{out}");
        facegan::metrics::EvalReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let held = eval(&["--held-out", "8"]);
    assert!(held.protocol.as_deref().is_some_and(|p| p.contains("its last 8 by name")), "{held:?}");
    assert!((held.fid.unwrap() - logged).abs() <= 1e-6 * logged, "eval {:?} vs training's {logged}", held.fid);
    let first = eval(&["--num-real", "8"]);
    assert!(
        (first.fid.unwrap() - logged).abs() > 1e-3,
        "the first 8 faces are another reference set than the held-out ones"
    );
    // `--cache-dir` puts the reference features elsewhere: not found there at first, found
    // there the second time, and FACEGAN_CACHE_DIR gains nothing.
    let other = t.path().join("other-cache");
    let files = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let before = files(&cache.join("features"));
    let flags = ["--held-out", "8", "--cache-dir", other.to_str().unwrap()];
    let elsewhere = eval(&flags);
    assert!(!elsewhere.real_features_cached && files(&other.join("features")) == 1, "{elsewhere:?}");
    assert!(eval(&flags).real_features_cached);
    assert_eq!(files(&cache.join("features")), before, "nothing new in FACEGAN_CACHE_DIR");
    assert!((elsewhere.fid.unwrap() - logged).abs() <= 1e-6 * logged, "{elsewhere:?}");
    // The features are keyed on the images' bytes: new modification times (a copied or
    // touched folder) find them, changed bytes do not.
    let mut names: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for f in &names {
        std::fs::File::options().write(true).open(f).unwrap().set_modified(later).unwrap();
    }
    assert!(eval(&flags).real_features_cached, "touched files reuse the features");
    std::fs::copy(&names[0], names.last().unwrap()).unwrap();
    let changed = eval(&flags);
    assert!(!changed.real_features_cached, "a held-out face changed: {changed:?}");
}

#[test]
fn eval_bad_input_is_named() {
    let Some(weights) = inception_weights() else { return };
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let env = env(&weights, &cache);
    let data = t.path().join("faces");
    synthetic_faces(&data, 8);
    let d = data.to_str().unwrap();
    let fake = t.path().join("fake");
    synthetic_faces(&fake, 4);
    let f = fake.to_str().unwrap();

    // Fewer images than asked for, on either side.
    let (ok, out) = run_env(&["eval", f, "--real", d, "--num", "10", "--metrics", "swd", "--quiet"], &env);
    assert!(!ok && out.contains("fake") && out.contains("4 images, fewer than the 10"), "{out}");
    let (ok, out) =
        run_env(&["eval", f, "--real", d, "--num", "4", "--num-real", "50", "--metrics", "swd", "--quiet"], &env);
    assert!(!ok && out.contains("faces") && out.contains("fewer than the 50"), "{out}");

    // Something that does not exist.
    let (ok, out) = run_env(&["eval", "/no/such/model.safetensors", "--real", d, "--quiet"], &env);
    assert!(!ok && out.contains("/no/such/model.safetensors") && out.contains("does not exist"), "{out}");

    // An unreadable image.
    std::fs::write(fake.join("note.jpg"), "not a picture").unwrap();
    let (ok, out) = run_env(&["eval", f, "--real", d, "--num", "5", "--metrics", "swd", "--quiet"], &env);
    assert!(!ok && out.contains("note.jpg"), "{out}");
    std::fs::remove_file(fake.join("note.jpg")).unwrap();

    // Missing or wrong weights say what to do.
    let none = t.path().join("missing.pt");
    let (ok, out) = run_env(
        &["eval", f, "--real", d, "--num", "4", "--quiet"],
        &[("FACEGAN_INCEPTION", none.as_os_str()), ("FACEGAN_CACHE_DIR", cache.as_os_str())],
    );
    assert!(!ok && out.contains("missing.pt") && out.contains("fetch-inception.sh"), "{out}");
    let junk = t.path().join("junk.pt");
    std::fs::write(&junk, "not an archive").unwrap();
    let (ok, out) = run_env(
        &["eval", f, "--real", d, "--num", "4", "--quiet"],
        &[("FACEGAN_INCEPTION", junk.as_os_str()), ("FACEGAN_CACHE_DIR", cache.as_os_str())],
    );
    assert!(!ok && out.contains("junk.pt"), "{out}");

    // No Inception Score in this archive, and the reason.
    let (ok, out) = run_env(&["eval", f, "--real", d, "--metrics", "fid,is"], &env);
    assert!(!ok && out.contains("Inception Score") && out.contains("logits"), "{out}");

    // A checkpoint is no reference; sizes must agree.
    let run_dir = t.path().join("run");
    let mut args = vec!["train", "--data", d, "--out", run_dir.to_str().unwrap(), "--steps", "1"];
    args.extend_from_slice(TINY);
    let (ok, out) = run_env(&args, &env);
    assert!(ok, "{out}");
    let ck = run_dir.join("checkpoints/step-0000001.safetensors");
    let (ok, out) = run_env(&["eval", f, "--real", ck.to_str().unwrap(), "--quiet"], &env);
    assert!(!ok && out.contains("reference must be an image folder or a prepared cache"), "{out}");
    let c64 = t.path().join("faces64.fgc");
    let (ok, out) = run_env(&["prepare", "--data", d, "--size", "64", "--out", c64.to_str().unwrap()], &env);
    assert!(ok, "{out}");
    let (ok, out) = run_env(
        &["eval", ck.to_str().unwrap(), "--real", c64.to_str().unwrap(), "--num", "4", "--metrics", "swd"],
        &env,
    );
    assert!(!ok && out.contains("faces64.fgc") && out.contains("64x64") && out.contains("32x32"), "{out}");
}

/// `eval --repeats N` evaluates a checkpoint at sample seeds seed..seed+N against the same
/// reals: each repeat is the evaluation `--seed` gives alone, the spread is their mean and
/// sample standard deviation, and inputs it cannot repeat are refused. SWD needs no Inception.
#[test]
fn repeats_report_each_draw_and_their_spread() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let env = [("FACEGAN_CACHE_DIR", cache.as_os_str())];
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let (d, run_dir) = (data.to_str().unwrap(), t.path().join("run"));
    let mut args = vec!["train", "--data", d, "--out", run_dir.to_str().unwrap(), "--steps", "2"];
    args.extend_from_slice(TINY);
    assert!(run_env(&args, &env).0);
    let r = run_dir.to_str().unwrap();
    let json = t.path().join("spread.json");
    let common = ["--real", d, "--num", "16", "--num-real", "16", "--metrics", "swd", "--quiet"];
    let mut args = vec!["eval", r, "--seed", "4", "--repeats", "3", "--json", json.to_str().unwrap()];
    args.extend_from_slice(&common);
    let (ok, out) = run_env(&args, &env);
    assert!(ok, "{out}");
    assert!(
        out.contains("sample seed 6") && out.contains("over 3 draws of generated faces (sample seeds 4 to 6)"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let swd = |r: &serde_json::Value| r["swd"]["mean"].as_f64().unwrap();
    let reps = v["repeats"].as_array().unwrap();
    assert_eq!(reps.iter().map(|r| r["seed"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 5, 6]);
    let values: Vec<f64> = reps.iter().map(swd).collect();
    assert!(values[0] != values[1] && values[1] != values[2], "each draw has its own faces: {values:?}");
    let spread = &v["spread"][0];
    assert_eq!(spread["metric"], "SWD mean (x1e3)");
    assert_eq!(spread["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(), values);
    let mean = values.iter().sum::<f64>() / 3.0;
    let sd = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!(
        (spread["mean"].as_f64().unwrap() - mean).abs() < 1e-9 && (spread["sd"].as_f64().unwrap() - sd).abs() < 1e-9
    );
    // The second repeat is what `--seed 5` alone reports.
    let one = t.path().join("one.json");
    let mut args = vec!["eval", r, "--seed", "5", "--json", one.to_str().unwrap()];
    args.extend_from_slice(&common);
    assert!(run_env(&args, &env).0);
    let one: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    assert_eq!(swd(&one), values[1]);

    // Nothing to redraw in an image folder; no zero repeats; no sweep with repeats.
    let (ok, out) = run_env(&["eval", d, "--real", d, "--metrics", "swd", "--num", "4", "--repeats", "2"], &env);
    assert!(!ok && out.contains("--repeats") && out.contains("image folder"), "{out}");
    let (ok, out) = run_env(&["eval", r, "--real", d, "--metrics", "swd", "--repeats", "0"], &env);
    assert!(!ok && out.contains("--repeats must be at least 1"), "{out}");
    let (ok, out) =
        run_env(&["eval", r, "--real", d, "--metrics", "swd", "--repeats", "2", "--truncation", "0.5,1"], &env);
    assert!(!ok && out.contains("truncation sweep"), "{out}");
}

/// Style families at evaluation: a truncation sweep writes one report per ψ and the plot,
/// ψ = 0 (every face the average face) lowers recall to at most that of ψ = 1; PPL-Inception
/// in W and in Z is finite and positive; a family without W is refused for the W path.
#[test]
fn truncation_sweep_and_perceptual_path_length() {
    let Some(weights) = inception_weights() else { return };
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let env = env(&weights, &cache);
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let mut args = vec!["train", "--data", d, "--out", r, "--steps", "2"];
    args.extend_from_slice(TINY_STYLEGAN2);
    let (ok, out) = run_env(&args, &env);
    assert!(ok, "{out}");
    let ck = run_dir.join("checkpoints/step-0000002.safetensors");
    let ck = ck.to_str().unwrap();
    let (plot, json) = (t.path().join("sweep.png"), t.path().join("sweep.json"));
    let (ok, out) = run_env(
        &[
            "eval",
            ck,
            "--real",
            d,
            "--num",
            "16",
            "--metrics",
            "fid,pr",
            "--truncation",
            "1,0",
            "--sweep-plot",
            plot.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--quiet",
        ],
        &env,
    );
    assert!(ok, "{out}");
    assert!(out.contains("truncation ψ = 1") && out.contains("truncation ψ = 0"), "{out}");
    assert!(image::open(&plot).is_ok());
    let reports: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(reports.len(), 2);
    let recall = |i: usize| reports[i]["recall"].as_f64().unwrap();
    assert!(recall(1) <= recall(0), "ψ = 0 has recall {} above ψ = 1's {}", recall(1), recall(0));
    for space in ["w", "z"] {
        let out_json = t.path().join(format!("ppl-{space}.json"));
        let (ok, out) = run_env(
            &[
                "ppl",
                "--checkpoint",
                ck,
                "--space",
                space,
                "--num",
                "6",
                "--batch-size",
                "3",
                "--json",
                out_json.to_str().unwrap(),
            ],
            &env,
        );
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
        let ppl = v["value"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl > 0.0, "{space}: {out}");
    }
    let shipped = env!("CARGO_MANIFEST_DIR").to_string() + "/models/dcgan64-celeba.safetensors";
    let (ok, out) = run_env(&["ppl", "--checkpoint", &shipped, "--num", "4"], &env);
    assert!(!ok && out.contains("dcgan, which has none"), "{out}");
    let (ok, out) = run_env(&["eval", ck, "--real", d, "--num", "4", "--truncation-cutoff", "2"], &env);
    assert!(!ok && out.contains("needs --truncation"), "{out}");
}
