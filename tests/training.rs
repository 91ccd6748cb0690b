//! Training end to end through the library: resume equality, checkpoint round trip,
//! one D step, and a short run on real CelebA faces with every artefact checked.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use facegan::config::RunConfig;
use facegan::data::cache::Dataset;
use facegan::models::Latent;
use facegan::nn::Mode;
use facegan::penalty::PenaltyConfig;
use facegan::train::{checkpoint, train, trainer::Session};
use std::path::Path;

fn tiny_config(data: &Path) -> RunConfig {
    let mut c = RunConfig::preset("dcgan-32").unwrap();
    c.model.ngf = 8;
    c.model.ndf = 8;
    c.model.nz = 16;
    c.train.batch_size = 8;
    c.train.steps = 6;
    c.train.seed = 11;
    c.log.log_every = 2;
    c.log.sample_every = 3;
    c.log.checkpoint_every = 100;
    c.log.sample_count = 16;
    c.data.path = data.display().to_string();
    c.data.cache_dir = Some(common::cache_dir().display().to_string());
    c
}

fn flat(ck: &checkpoint::Checkpoint, prefix: &str) -> Vec<(String, Vec<f32>)> {
    let mut names: Vec<&String> = ck.tensors.keys().filter(|k| k.starts_with(prefix)).collect();
    names.sort();
    names.into_iter().map(|k| (k.clone(), ck.tensors[k].flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

/// A stats line's step, D and G losses, R1 and instance noise.
type LoggedStep = (u64, f64, f64, Option<f64>, Option<f64>);

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 24, 32);
    let mut cfg = tiny_config(&data);
    // Two D steps a step (the data order is counted in D steps), a lazy R1 whose interval
    // straddles the resume, and instance noise still decaying when it comes.
    cfg.train.n_critic = 2;
    cfg.train.penalties = vec![PenaltyConfig::parse("r1:1:3").unwrap()];
    cfg.model.d_norm = "layer".into();
    (cfg.train.instance_noise, cfg.train.instance_noise_steps) = (0.2, 5);
    let a = train(opts(&cfg, &t.path().join("a"), false, None)).unwrap();
    assert_eq!((a.step, a.interrupted), (6, false));
    let b1 = train(opts(&cfg, &t.path().join("b"), false, Some(4))).unwrap();
    assert_eq!((b1.step, b1.interrupted), (4, true));
    let b2 = train(opts(&cfg, &t.path().join("b"), true, None)).unwrap();
    assert_eq!(b2.step, 6);
    let ca = checkpoint::read(&a.checkpoint, &Device::Cpu).unwrap();
    let cb = checkpoint::read(&b2.checkpoint, &Device::Cpu).unwrap();
    // Bitwise: every tensor, buffers and optimizer moments included.
    let (fa, fb) = (flat(&ca, ""), flat(&cb, ""));
    assert_eq!(fa.iter().map(|(n, _)| n).collect::<Vec<_>>(), fb.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for prefix in ["G.", "D.", "G_ema.params", "G_ema.buffers", "opt_G.", "opt_D."] {
        assert!(fa.iter().any(|(n, _)| n.starts_with(prefix)), "no {prefix} tensors");
    }
    for ((name, va), (_, vb)) in fa.iter().zip(&fb) {
        assert!(va == vb, "{name} differs after resume");
    }
    assert_eq!(ca.meta["rng"], cb.meta["rng"]);
    let stats = |run: &str| -> Vec<LoggedStep> {
        let lines = facegan::train::stats::read(&t.path().join(run).join("stats.jsonl")).unwrap();
        lines
            .iter()
            .map(|l| {
                (l.step, l.d_loss, l.g_loss, l.extra.get("penalty_r1").copied(), l.extra.get("instance_noise").copied())
            })
            .collect()
    };
    assert_eq!(stats("a"), stats("b"), "the logged losses, penalties and noise of the resumed run");
    // stats.jsonl of the resumed run holds each logged step once.
    let steps: Vec<u64> =
        facegan::train::stats::read(&t.path().join("b/stats.jsonl")).unwrap().iter().map(|l| l.step).collect();
    assert_eq!(steps, vec![2, 4, 6]);
}

/// `train.lr_decay_steps`: the weights follow the constant-rate run exactly until the
/// decay starts and leave it at the first decayed update; stats.jsonl's `lr_factor` is the
/// linear schedule.
#[test]
fn the_learning_rate_decay_starts_where_it_says() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let session = |decay: u64| {
        let mut cfg = tiny_config(&data);
        cfg.train.lr_decay_steps = decay;
        let ds = Dataset::open(&data).unwrap();
        (Session::new(&cfg, &Device::Cpu).unwrap(), facegan::data::Loader::new(ds, 8, 0, true).unwrap())
    };
    let (mut a, mut la) = session(4);
    let (mut b, mut lb) = session(0);
    let mut factors = Vec::new();
    for step in 0..4 {
        let ra = la.batch(a.step, &mut a.rng, &Device::Cpu).unwrap().0;
        let rb = lb.batch(b.step, &mut b.rng, &Device::Cpu).unwrap().0;
        factors.push(a.train_step(std::slice::from_ref(&ra)).unwrap()["lr_factor"]);
        assert!(!b.train_step(std::slice::from_ref(&rb)).unwrap().contains_key("lr_factor"));
        let same = a.g.params().trainable().zip(b.g.params().trainable()).all(|((_, x), (_, y))| {
            x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == y.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        });
        // Steps 0-2 run at the full rate (the decay's first factor is 4/4); step 3 at 3/4.
        assert_eq!(same, step < 3, "step {step}");
    }
    assert_eq!(factors, [1.0, 1.0, 1.0, 0.75]);
    let mut cfg = tiny_config(&data);
    cfg.train.lr_decay_steps = 7;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("lr_decay_steps 7 exceeds train.steps 6"), "{e}");
}

#[test]
fn checkpoint_round_trip_and_generate_determinism() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let cfg = tiny_config(&data);
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let mut loader = facegan::data::Loader::new(ds, 8, 0, true).unwrap();
    for _ in 0..2 {
        let real = loader.batch(s.step, &mut s.rng, &Device::Cpu).unwrap().0;
        s.train_step(std::slice::from_ref(&real)).unwrap();
    }
    let path = t.path().join("ck.safetensors");
    s.save(&path).unwrap();
    let ck = checkpoint::read(&path, &Device::Cpu).unwrap();
    let r = Session::from_checkpoint(&ck, &cfg, &Device::Cpu).unwrap();
    assert_eq!(r.step, 2);
    assert_eq!(r.rng, s.rng);
    assert_eq!(r.opt_g.t, s.opt_g.t);
    // The training's CPU time travels with the checkpoint: a resumed session counts on from
    // it rather than from zero.
    let saved: f64 = ck.meta["cpu_s"].parse().unwrap();
    let (before, resumed) = (facegan::train::stats::process_cpu_seconds(), r.cpu_seconds().unwrap());
    assert!(saved > 0.0, "two training steps took CPU time: {saved}");
    assert!(resumed >= saved, "the resumed count {resumed} starts below the saved {saved}");
    assert!(resumed <= saved + 1e-6 + (facegan::train::stats::process_cpu_seconds() - before) + 1.0);
    // What runs inside `without_cpu_count` (the evaluations) is left out of the count.
    let mut r = r;
    let c1 = r.cpu_seconds().unwrap();
    r.without_cpu_count(|_| {
        let t = facegan::train::stats::process_cpu_seconds();
        while facegan::train::stats::process_cpu_seconds() - t < 0.3 {
            std::hint::black_box(0u64);
        }
    });
    let c2 = r.cpu_seconds().unwrap();
    assert!(c2 - c1 < 0.15, "0.3 s of excluded work counted: {c1} -> {c2}");
    let z = Latent::from_z(Tensor::ones((2, 16), candle_core::DType::F32, &Device::Cpu).unwrap());
    let diff = (s.g.forward(&z, Mode::EVAL).unwrap() - r.g.forward(&z, Mode::EVAL).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);

    // The generator-only export loads in `generate` and is deterministic under a seed.
    let gen = t.path().join("g.safetensors");
    s.save_generator(&gen, true).unwrap();
    let (g, gcfg) = facegan::sample::generate::load_generator(&gen, &Device::Cpu).unwrap();
    let x1 = facegan::sample::generate::generate(g.as_ref(), &gcfg, 5, 3, &Device::Cpu, None, &[]).unwrap();
    let x2 = facegan::sample::generate::generate(g.as_ref(), &gcfg, 5, 3, &Device::Cpu, None, &[]).unwrap();
    let x3 = facegan::sample::generate::generate(g.as_ref(), &gcfg, 5, 4, &Device::Cpu, None, &[]).unwrap();
    assert_eq!(x1.dims(), &[5, 3, 32, 32]);
    let d = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(d(&x1, &x2), 0.0);
    assert!(d(&x1, &x3) > 1e-3);

    // A checkpoint's tensors do not load into another size of model.
    let mut other = cfg.clone();
    other.model.image_size = 64;
    let big = facegan::models::build_generator(&other.model, &Device::Cpu, &mut facegan::rng::Rng::new(0)).unwrap();
    let e = big.params().load_tensors("G_ema", &ck.tensors, "ck.safetensors").unwrap_err().to_string();
    assert!(e.contains("ck.safetensors") && e.contains("another architecture"), "{e}");
}

#[test]
fn one_discriminator_step_lowers_its_loss_on_a_fixed_batch() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let cfg = tiny_config(&data);
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let real =
        facegan::data::loader::images_to_tensor(&ds, &(0..8).collect::<Vec<_>>(), &[false; 8], &Device::Cpu).unwrap();
    let z = s.g.sample_latent(8, &mut s.rng, &Device::Cpu).unwrap();
    let fake = s.g.forward(&z, Mode::TRAIN).unwrap().detach();
    let loss = facegan::loss::AdversarialLoss::NonSaturating;
    let d_loss = |s: &Session| {
        loss.d_loss(&s.d.forward(&real, None, Mode::TRAIN).unwrap(), &s.d.forward(&fake, None, Mode::TRAIN).unwrap())
            .unwrap()
    };
    let before = d_loss(&s);
    s.opt_d.step(s.d.params(), &before.backward().unwrap()).unwrap();
    let after = d_loss(&s);
    let (b, a) = (before.to_scalar::<f32>().unwrap(), after.to_scalar::<f32>().unwrap());
    assert!(a < b, "D loss went from {b} to {a}");
}

#[test]
fn thirty_steps_on_real_faces_write_every_artefact() {
    let t = tempfile::tempdir().unwrap();
    let Some(faces) = celeba_subset(256, t.path()) else {
        return;
    };
    let run = t.path().join("run");
    let cache = t.path().join("cache");
    // `--cache-dir` (and not the tests' FACEGAN_CACHE_DIR, which `bin` sets) decides where the
    // folder is prepared.
    let out = bin()
        .args(["train", "--data", faces.to_str().unwrap(), "--out", run.to_str().unwrap(), "--preset", "dcgan-64"])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args([
            "--ngf",
            "16",
            "--ndf",
            "16",
            "--batch-size",
            "16",
            "--steps",
            "30",
            "--log-every",
            "5",
            "--sample-every",
            "10",
            "--checkpoint-every",
            "15",
        ])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for f in [
        "config.toml",
        "stats.jsonl",
        "progress.gif",
        "losses.png",
        "checkpoints/step-0000015.safetensors",
        "checkpoints/step-0000030.safetensors",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for s in [0, 10, 20, 30] {
        let p = run.join(format!("samples/step-{s:07}.png"));
        let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(img.width(), 8 * 66 + 2);
    }
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(run.join("progress.gif")).unwrap(),
    ))
    .unwrap();
    use image::AnimationDecoder;
    assert_eq!(gif.into_frames().count(), 4);
    let lines = facegan::train::stats::read(&run.join("stats.jsonl")).unwrap();
    assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), vec![5, 10, 15, 20, 25, 30]);
    for l in &lines {
        for v in [l.d_loss, l.g_loss, l.d_real, l.d_fake, l.img_per_s] {
            assert!(v.is_finite() && v >= 0.0, "{l:?}");
        }
        assert!((0.0..=1.0).contains(&l.d_real) && (0.0..=1.0).contains(&l.d_fake));
    }
    let cfg = RunConfig::load(&run.join("config.toml")).unwrap();
    assert_eq!((cfg.model.ngf, cfg.train.steps, cfg.model.image_size), (16, 30, 64));
    assert_eq!(cfg.data.cache_dir.as_deref(), cache.to_str(), "a resumed run prepares where this one did");
    // The on-the-fly cache was made there, once.
    let caches: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    // generate from the run's checkpoint: deterministic under a seed.
    let ck = run.join("checkpoints/step-0000030.safetensors");
    let g = |seed: &str, out: &str| {
        let (ok, text) = run_cmd(&[
            "generate",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--count",
            "4",
            "--columns",
            "2",
            "--seed",
            seed,
            "--out",
            t.path().join(out).to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        std::fs::read(t.path().join(out)).unwrap()
    };
    assert_eq!(g("1", "a.png"), g("1", "b.png"));
    assert_ne!(g("1", "a.png"), g("2", "c.png"));
    let (ok, text) = run_cmd(&[
        "generate",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--count",
        "3",
        "--out",
        &format!("{}/", t.path().join("each").display()),
    ]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::read_dir(t.path().join("each")).unwrap().count(), 3);
}

fn run_cmd(args: &[&str]) -> (bool, String) {
    run(args)
}

#[test]
fn compare_draws_one_captioned_panel_per_model() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", run_dir.to_str().unwrap(), "--steps", "1"];
    args.extend_from_slice(TINY);
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    let r = run_dir.to_str().unwrap();
    let ck = run_dir.join("checkpoints/step-0000001.safetensors");
    let png = t.path().join("cmp.png");
    let (ok, out) = run(&[
        "compare",
        r,
        ck.to_str().unwrap(),
        r,
        "--count",
        "4",
        "--columns",
        "2",
        "--per-row",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let img = image::open(&png).unwrap().to_rgb8();
    // Panels: 2x2 faces of 32 px with 2 px padding = 70 px, a 22 px caption, 8 px gaps;
    // three panels two to a row.
    assert_eq!(img.dimensions(), (2 * (70 + 8) + 8, 2 * (70 + 22 + 8) + 8));
    // The same checkpoint twice gives the same faces.
    let panel = |x0: u32, y0: u32| image::imageops::crop_imm(&img, x0, y0, 70, 70).to_image();
    assert_eq!(panel(8, 30), panel(8, 30 + 100));
    let (ok, out) = run(&["compare", r, "--labels", "a,b", "--out", png.to_str().unwrap()]);
    assert!(!ok && out.contains("2 labels for 1 models"), "{out}");
    let (ok, out) = run(&["compare", "/no/such/run", "--out", png.to_str().unwrap()]);
    assert!(!ok && out.contains("/no/such/run"), "{out}");

    // Learning curves (--curves): a run without metrics.jsonl is named before anything is
    // drawn.
    let curves = t.path().join("curves.png");
    std::fs::remove_file(&png).unwrap();
    let (p, c) = (png.to_str().unwrap(), curves.to_str().unwrap());
    let (ok, out) = run(&["compare", r, "--out", p, "--curves", c]);
    assert!(!ok && out.contains("metrics.jsonl is missing") && out.contains("--eval-every"), "{out}");
    assert!(!png.exists() && !curves.exists());
    // One evaluation from before metrics.jsonl counted images and CPU time, one after: the
    // first gets its images from the run's batch size (8) and n_critic (1).
    let lines = [
        r#"{"step":1,"num_fake":8,"num_real":8,"fid":300.0,"seconds":1.0}"#,
        r#"{"step":3,"num_fake":8,"num_real":8,"fid":250.0,"seconds":1.0,"images_seen":24,"cpu_s":7200.0}"#,
    ];
    std::fs::write(run_dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let curve = facegan::report::LearningCurve::of_run(&ck, None).unwrap();
    assert_eq!(curve.label, "run");
    assert_eq!(curve.lines.iter().map(|l| l.images_seen).collect::<Vec<_>>(), [Some(8), Some(24)]);
    let (ok, out) = run(&["compare", r, "--out", p, "--curves", c]);
    assert!(ok, "{out}");
    let img = image::open(&curves).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1400, 500));
    // The run's colour appears in both panels: by images and (one counted point) by CPU.
    let red = |x0: u32| {
        (x0..x0 + 700)
            .flat_map(|x| (0..500).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [214, 39, 40])
            .count()
    };
    assert!(red(0) > 20 && red(700) > 20, "{} {}", red(0), red(700));

    // The same evaluations as a table (--table): parameters counted from the checkpoint's
    // header agree with the loaded tensors, the first evaluation has no CPU count, the
    // second 7,200 CPU-s over 24 images.
    let counts = checkpoint::parameter_counts(&ck).unwrap();
    let loaded = checkpoint::read(&ck, &Device::Cpu).unwrap();
    for net in ["G", "D", "G_ema"] {
        let want: usize = (loaded.tensors.iter())
            .filter(|(k, _)| k.starts_with(&format!("{net}.params.")))
            .map(|(_, t)| t.elem_count())
            .sum();
        assert!(want > 0 && counts[net] == want, "{net}: {counts:?} against {want}");
    }
    // A file that is not a checkpoint is named, with what is wrong with it.
    let junk = t.path().join("junk.safetensors");
    for (bytes, why) in [
        (&b"abc"[..], "shorter than"),
        (&[255u8; 16][..], "claims"),
        (&[2, 0, 0, 0, 0, 0, 0, 0, b'{', b'x'][..], "not JSON"),
    ] {
        std::fs::write(&junk, bytes).unwrap();
        let e = format!("{:#}", checkpoint::parameter_counts(&junk).unwrap_err());
        assert!(e.contains("junk.safetensors") && e.contains(why), "{e}");
    }
    let table = t.path().join("table.md");
    let (ok, out) = run(&["compare", r, "--out", p, "--table", table.to_str().unwrap()]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&table).unwrap();
    let m = |n: usize| format!("{:.2} M", n as f64 / 1e6);
    let want = format!(
        "| run | preset | parameters G / D | step | real images | CPU-hours | CPU-s per image | fid8 |\n\
         |---|---|---|---|---|---|---|---|\n\
         | run | dcgan-32 | {} / {} | 1 | 8 | - | - | 300.0 |\n\
         |  |  |  | 3 | 24 | 2.00 | 300.000 | 250.0 |\n",
        m(counts["G"]),
        m(counts["D"])
    );
    assert_eq!(text, want);
    assert!(out.contains(&want), "the table is printed too: {out}");

    // Evaluations without FID: no curve to plot (said before anything is written), but a table.
    let swd_only = r#"{"step":3,"num_fake":8,"num_real":8,"swd":55.5,"seconds":1.0,"images_seen":24}"#;
    std::fs::write(run_dir.join("metrics.jsonl"), format!("{swd_only}\n")).unwrap();
    std::fs::remove_file(&png).unwrap();
    let (ok, out) = run(&["compare", r, "--out", p, "--curves", c, "--table", table.to_str().unwrap()]);
    assert!(!ok && out.contains("run: its metrics.jsonl has no FID evaluation"), "{out}");
    assert!(!png.exists());
    let (ok, out) = run(&["compare", r, "--out", p, "--table", table.to_str().unwrap()]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(text.lines().next().unwrap().ends_with("| fid8 | SWD (x1e3) |"), "{text}");
    assert!(text.lines().nth(2).unwrap().ends_with("| 3 | 24 | - | - | - | 55.5 |"), "{text}");
}

/// A full DCGAN checkpoint written before the model-family redesign (commit bba5c4c, format
/// 1: `train --preset dcgan-32 --ngf 4 --ndf 4 --nz 8 --batch-size 8 --seed 11` on the 24
/// synthetic faces of `synthetic_faces`, stopped at step 4 of 6) loads, makes the faces that
/// version made from it (`generate --count 4 --columns 4 --seed 3`, byte for byte), and
/// resumes to step 6 with the faces that version's uninterrupted run made at step 6.
#[test]
fn checkpoint_from_before_the_families_loads_generates_and_resumes() {
    facegan::enable_second_order_gradients();
    use facegan::sample::generate::{generate, load_generator, write_faces};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-families");
    let old = fixtures.join("dcgan32-step4.safetensors");
    let t = tempfile::tempdir().unwrap();
    let faces_of = |ck: &Path, name: &str| {
        let (g, cfg) = load_generator(ck, &Device::Cpu).unwrap();
        let x = generate(g.as_ref(), &cfg, 4, 3, &Device::Cpu, None, &[]).unwrap();
        let out = t.path().join(name);
        write_faces(&x, &out, 4).unwrap();
        std::fs::read(out).unwrap()
    };
    let ck = checkpoint::read(&old, &Device::Cpu).unwrap();
    assert_eq!((ck.format_version(), ck.step()), (1, 4));
    assert_eq!(faces_of(&old, "f4.png"), std::fs::read(fixtures.join("faces-step4-seed3.png")).unwrap());

    let run = t.path().join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::copy(&old, checkpoint::checkpoint_path(&run, 4)).unwrap();
    let mut cfg = ck.config.clone();
    cfg.data.path = prepared(t.path(), 24, 32).display().to_string();
    cfg.data.cache_dir = Some(common::cache_dir().display().to_string());
    let done = train(opts(&cfg, &run, true, None)).unwrap();
    assert_eq!(done.step, 6);
    assert_eq!(checkpoint::read(&done.checkpoint, &Device::Cpu).unwrap().format_version(), 2);
    assert_eq!(faces_of(&done.checkpoint, "f6.png"), std::fs::read(fixtures.join("faces-step6-seed3.png")).unwrap());
}

/// A file from a newer facegan is refused with a message that says so.
#[test]
fn a_newer_checkpoint_format_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("future.safetensors");
    let cfg = RunConfig::preset("dcgan-32").unwrap();
    let mut meta = checkpoint::base_meta(checkpoint::KIND_GENERATOR, 0, &cfg);
    meta.insert("config".into(), cfg.to_toml());
    let tensors = std::collections::HashMap::from([(
        "x".to_string(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )]);
    checkpoint::write(&path, &tensors, meta, false).unwrap();
    // Rewrite the tag as a later format would.
    let mut bytes = std::fs::read(&path).unwrap();
    let tag = b"facegan-checkpoint-2";
    let at = bytes.windows(tag.len()).position(|w| w == tag).expect("the format tag");
    bytes[at + tag.len() - 1] = b'9';
    std::fs::write(&path, bytes).unwrap();
    let e = checkpoint::read(&path, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("future.safetensors") && e.contains("format 9") && e.contains("newer"), "{e}");
}

/// Resume is bitwise for the zoo's stateful layers: spectral norm's u and v (in G and D,
/// attention included), minibatch stddev, with n_critic = 2; and MLP dropout, whose masks
/// come from the run's RNG; StyleGAN2's w_avg and path-length mean. Every tensor of the
/// checkpoint, buffers included, is equal.
#[test]
fn resume_is_bitwise_with_spectral_norm_attention_and_dropout() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 24, 32);
    let mut sn = tiny_config(&data);
    let m = &mut sn.model;
    (m.arch, m.ngf, m.ndf, m.d_norm) = ("resnet".into(), 4, 4, "none".into());
    (m.g_spectral_norm, m.d_spectral_norm, m.attention, m.mbstd_group) = (true, true, 8, 2);
    (sn.train.loss, sn.train.n_critic) = ("hinge".into(), 2);
    let mut mlp = tiny_config(&data);
    (mlp.model.arch, mlp.model.d_dropout) = ("mlp".into(), 0.5);
    // StyleGAN2: w_avg (a buffer), the path-length mean (checkpoint metadata), style mixing and
    // noise seeds from the run's RNG; lazy R1 and path length fall before and after the resume.
    let mut style = tiny_config(&data);
    let m = &mut style.model;
    (m.arch, m.ngf, m.ndf, m.mbstd_group) = ("stylegan2".into(), 4, 4, 2);
    (m.w_dim, m.mapping_layers, m.style_mixing) = (Some(8), Some(2), Some(0.9));
    style.train.penalties =
        vec![PenaltyConfig::parse("r1:1:4").unwrap(), PenaltyConfig::parse("path-length:2:2").unwrap()];
    for (name, cfg) in [("sn", sn), ("mlp", mlp), ("style", style)] {
        let a = train(opts(&cfg, &t.path().join(format!("{name}-a")), false, None)).unwrap();
        train(opts(&cfg, &t.path().join(format!("{name}-b")), false, Some(3))).unwrap();
        let b = train(opts(&cfg, &t.path().join(format!("{name}-b")), true, None)).unwrap();
        let ca = checkpoint::read(&a.checkpoint, &Device::Cpu).unwrap();
        let cb = checkpoint::read(&b.checkpoint, &Device::Cpu).unwrap();
        let (fa, fb) = (flat(&ca, ""), flat(&cb, ""));
        assert_eq!(fa.len(), fb.len());
        if name == "sn" {
            assert!(fa.iter().any(|(n, _)| n == "D.buffers.block0.conv1.sn_u"), "u is in the checkpoint");
            assert!(fa.iter().any(|(n, _)| n.starts_with("G.params.attention")), "G has attention");
        }
        for ((na, va), (nb, vb)) in fa.iter().zip(&fb) {
            assert_eq!(na, nb);
            assert!(va == vb, "{name}: {na} differs after resume");
        }
        assert_eq!(ca.meta["rng"], cb.meta["rng"]);
        if name == "style" {
            assert!(fa.iter().any(|(n, v)| n == "G.buffers.mapping.w_avg" && v.iter().any(|x| *x != 0.0)));
            assert_ne!(ca.meta["pl_mean"], format!("{:016x}", 0f64.to_bits()), "path length ran");
            assert_eq!(ca.meta["pl_mean"], cb.meta["pl_mean"]);
        }
    }
}

/// A Python with the `tensorboard` package: `$FACEGAN_TB_PYTHON`, else a throwaway virtual
/// environment with tensorboard installed from PyPI into `dir`. None (a skip, with the reason)
/// where that cannot be done, except under CI=true, where it must.
fn tensorboard_python(dir: &Path) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FACEGAN_TB_PYTHON") {
        return Some(p.into());
    }
    let venv = dir.join("tb-venv");
    let ok = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success())
        && std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "tensorboard"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(venv.join("bin/python"));
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but the tensorboard package could not be installed into a virtual environment");
    }
    eprintln!("skipping: could not install the tensorboard package (python3 -m venv + pip install tensorboard)");
    None
}

/// `facegan train` writes TensorBoard event files that the real `tensorboard` package reads
/// back: every stats.jsonl value as a scalar at its step, and the sample grids as images.
#[test]
fn tensorboard_reads_the_runs_scalars_and_sample_grids() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let Some(python) = tensorboard_python(t.path()) else { return };
    let data = prepared(t.path(), 24, 32);
    let mut cfg = tiny_config(&data);
    cfg.train.penalties = vec![facegan::penalty::PenaltyConfig::parse("r1:1:2").unwrap()];
    cfg.model.d_norm = "none".into();
    let run = t.path().join("run");
    train(opts(&cfg, &run, false, None)).unwrap();
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
ea.Reload()
tags = ea.Tags()
out = {"scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
       "images": [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in ea.Images("samples")]}
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python).args(["-c", script]).arg(run.join("tb")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = facegan::train::stats::read(&run.join("stats.jsonl")).unwrap();
    assert_eq!(lines.len(), 3);
    let mut checked = 0;
    for l in &lines {
        let mut fields = vec![("d_loss", l.d_loss), ("g_loss", l.g_loss), ("d_real", l.d_real), ("d_fake", l.d_fake)];
        fields.extend(l.extra.iter().map(|(k, v)| (k.as_str(), *v)));
        assert!(fields.iter().any(|(k, _)| *k == "penalty_r1"), "{fields:?}");
        for (tag, want) in fields {
            let series = v["scalars"][tag].as_array().unwrap_or_else(|| panic!("no scalar {tag} in {v}"));
            let at =
                series.iter().find(|p| p[0].as_u64() == Some(l.step)).unwrap_or_else(|| panic!("{tag} at {}", l.step));
            assert_eq!(at[1].as_f64().unwrap() as f32, want as f32, "{tag} at step {}", l.step);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 8, "four named fields, two logits, the penalty and the CPU count per line");
    // Grids at steps 0, 3 and 6: 16 faces of 32x32, 4 per row, 2-pixel gaps.
    let images: Vec<Vec<u64>> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect())
        .collect();
    let grid = image::open(run.join("samples/step-0000006.png")).unwrap();
    assert_eq!(images.iter().map(|i| i[0]).collect::<Vec<_>>(), [0, 3, 6]);
    assert!(images.iter().all(|i| i[1] == grid.width() as u64 && i[2] == grid.height() as u64 && i[3] > 100));
}

/// Headless Chromium: `chromium` or `chromium-browser` on the PATH (Debian's package, which
/// .ci/run installs). None (a skip, saying why) elsewhere; a failure under CI=true.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no chromium on the PATH (.ci/run installs Debian's chromium)");
        }
        eprintln!("skipping the rendering check: no chromium on the PATH (apt-get install chromium)");
    }
    found
}

/// The run's report.html is one self-contained file, and renders in headless Chromium with no
/// console message, its script showing the newest of the run's three sample grids.
#[test]
fn report_page_is_self_contained_and_renders() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let run = t.path().join("run");
    train(opts(&tiny_config(&data), &run, false, None)).unwrap();
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert_eq!(page.matches("<img class=\"grid").count(), 3, "grids at steps 0, 3 and 6");
    for external in ["src=\"http", "href=\"http", "src=\"//", "url(http", "@import"] {
        assert!(!page.contains(external), "report.html loads something from elsewhere: {external}");
    }
    assert!(page.contains("lr_g") && page.contains("<svg") && page.contains("images/s"));
    let Some(browser) = chromium() else { return };
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", run.join("report.html").display()))
        .output()
        .unwrap();
    let (dom, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("data-ready=\"3\""), "the page's script did not run to its end");
    assert!(dom.contains("step 6 (3 of 3)"), "the newest grid is not the one shown");
}

/// A style family from the command line: train a tiny StyleGAN2, then truncation (ψ = 1 is the
/// untruncated output byte for byte, ψ = 0 collapses the faces towards w_avg's), the mixing and
/// noise figures and a walk GIF; and the clear refusals (no W space, cutoff beyond the layers,
/// ψ outside [0, 1], style options or path length on a family without W).
#[test]
fn style_family_truncation_figures_and_refusals_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let mut args = vec!["train", "--data", d, "--out", r, "--steps", "3"];
    args.extend_from_slice(TINY_STYLEGAN2);
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    let ck = run_dir.join("checkpoints/step-0000003.safetensors");
    let ck = ck.to_str().unwrap();
    let png = |name: &str| t.path().join(name).to_str().unwrap().to_string();
    let faces = |file: &str, extra: &[&str]| {
        let out = png(file);
        let mut args = vec!["generate", "--checkpoint", ck, "--count", "4", "--columns", "4", "--out", &out];
        args.extend_from_slice(extra);
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
        image::open(&out).unwrap().to_rgb8()
    };
    let plain = faces("plain.png", &[]);
    assert_eq!(plain, faces("psi1.png", &["--truncation", "1"]));
    let spread = |img: &image::RgbImage| {
        // Mean absolute difference of faces 1..3 from face 0 (32 px faces, 2 px padding).
        let face = |k: u32| image::imageops::crop_imm(img, 2 + k * 34, 2, 32, 32).to_image();
        let f0 = face(0);
        (1..4)
            .map(|k| face(k).pixels().zip(f0.pixels()).map(|(a, b)| (a[0] as f64 - b[0] as f64).abs()).sum::<f64>())
            .sum::<f64>()
    };
    let collapsed = faces("psi0.png", &["--truncation", "0"]);
    assert!(spread(&collapsed) < 0.5 * spread(&plain), "{} vs {}", spread(&collapsed), spread(&plain));
    for (cmd, file) in [("mix", "mix.png"), ("noise", "noise.png")] {
        let out = png(file);
        let (ok, text) = run(&[cmd, "--checkpoint", ck, "--out", &out]);
        assert!(ok, "{text}");
        let img = image::open(&out).unwrap().to_rgb8();
        // mix: 5 columns, a row of sources and 3 bands of 3 rows; noise: 4 draws and the std map, 3 rows.
        let want = if cmd == "mix" { (5 * 34, 10 * 34) } else { (5 * 34, 3 * 34) };
        assert_eq!(img.dimensions(), (want.0 + 2, want.1 + 2), "{cmd}");
    }
    let gif = png("walk.gif");
    let (ok, text) = run(&["interpolate", "--checkpoint", ck, "--count", "4", "--frames", "3", "--out", &gif]);
    assert!(ok, "{text}");
    let frames = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&gif).unwrap()))
        .map(|d| image::AnimationDecoder::into_frames(d).count())
        .unwrap();
    assert_eq!(frames, 4 * 3);
    // Refusals.
    let shipped = env!("CARGO_MANIFEST_DIR").to_string() + "/models/dcgan64-celeba.safetensors";
    for (args, want) in [
        (vec!["generate", "--checkpoint", &shipped, "--truncation", "0.7"], "dcgan, which has none"),
        (vec!["mix", "--checkpoint", &shipped], "dcgan, which has none"),
        (vec!["generate", "--checkpoint", ck, "--truncation", "0.7", "--truncation-cutoff", "99"], "must be 1 to 8"),
        (vec!["generate", "--checkpoint", ck, "--truncation", "1.5"], "must be in [0, 1]"),
        (vec!["generate", "--checkpoint", ck, "--truncation-cutoff", "2"], "needs --truncation"),
        (vec!["mix", "--checkpoint", ck, "--styles", "fine,huge"], "huge"),
        (vec!["train", "--data", d, "--out", r, "--arch", "dcgan", "--w-dim", "8"], "w_dim does not apply"),
        (vec!["train", "--data", d, "--out", r, "--penalty", "path-length"], "which the dcgan family does not have"),
        (
            vec!["train", "--preset", "stylegan2-32", "--data", d, "--out", r, "--style-mixing", "2"],
            "must be in [0, 1]",
        ),
    ] {
        let (ok, text) = run(&args);
        assert!(!ok && text.contains(want), "{args:?}: {text}");
    }
}

/// SIGTERM (as a scheduler or `kill` sends it) writes a checkpoint and stops like Ctrl-C; a
/// second trainer on a run folder in use is refused with the holder's pid, and the lock is
/// gone once the first stops; checkpoints are also written by wall time.
/// A tiny trainer on `run_dir` (with `extra` flags) under way: its first two stats lines written.
fn started_trainer(data: &str, run_dir: &Path, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["train", "--data", data, "--out", run_dir.to_str().unwrap(), "--steps", "1000000"];
    args.extend_from_slice(&["--log-every", "1"]);
    args.extend_from_slice(extra);
    args.extend_from_slice(TINY);
    let child = bin().args(&args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stats = run_dir.join("stats.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&stats).map(|s| s.lines().count()).unwrap_or(0) < 2 {
        assert!(t0.elapsed().as_secs() < 120, "the trainer did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Sends `signal` to a trainer and checks that it stopped cleanly: exit 0, "interrupted", a
/// checkpoint at the step it stopped, the lock released.
fn stops_cleanly_on(child: std::process::Child, signal: libc::c_int, run_dir: &Path) {
    // SAFETY: sends a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("interrupted") && text.contains("stopped at step"), "{text}");
    assert!(!run_dir.join(facegan::train::lock::LOCK_FILE).exists(), "the lock is released");
    let newest = checkpoint::latest(run_dir).unwrap();
    let ck = checkpoint::read(&newest, &Device::Cpu).unwrap();
    assert!(ck.step() >= 1, "a checkpoint at the step it stopped");
}

#[test]
fn sigterm_checkpoints_a_second_trainer_is_refused_and_wall_time_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let child = started_trainer(d, &run_dir, &[]);
    let mut again = vec!["train", "--data", d, "--out", r, "--steps", "5"];
    again.extend_from_slice(TINY);
    let (ok, out) = run(&again);
    assert!(!ok && out.contains("in use by another trainer") && out.contains(&child.id().to_string()), "{out}");
    stops_cleanly_on(child, libc::SIGTERM, &run_dir);
    // Ctrl-C (SIGINT) the same way.
    let int_dir = t.path().join("ctrl-c");
    stops_cleanly_on(started_trainer(d, &int_dir, &[]), libc::SIGINT, &int_dir);
    // Wall time: with a tiny interval every step checkpoints, though checkpoint_every is large.
    let timed = t.path().join("timed");
    let mut args = vec!["train", "--data", d, "--out", timed.to_str().unwrap(), "--steps", "3"];
    args.extend_from_slice(&["--checkpoint-every", "1000", "--checkpoint-minutes", "0.000001"]);
    args.extend_from_slice(TINY);
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    let steps: Vec<u64> = checkpoint::list_checkpoints(&timed).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [1, 2, 3], "{out}");
}

/// A signal during an evaluation (`--eval-every`) cuts it short: the trainer checkpoints and
/// stops without waiting for minutes of Inception passes, and writes no metrics line for it.
#[test]
fn a_signal_during_an_evaluation_checkpoints_without_waiting_for_it() {
    if inception_weights().is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("faces");
    synthetic_faces(&data, 16);
    let run_dir = t.path().join("run");
    // 5,000 faces through Inception take minutes here; the evaluation comes at step 2.
    let eval = ["--eval-every", "2", "--eval-num", "5000", "--eval-metrics", "fid"];
    let mut child = started_trainer(data.to_str().unwrap(), &run_dir, &eval);
    // Step 2 is logged before its evaluation; a few seconds later the Inception passes run.
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: sends SIGTERM to the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let t1 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t1.elapsed().as_secs() > 120 {
            let _ = child.kill();
            panic!("the trainer went on evaluating after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("evaluation cut short") && text.contains("stopped at step 2"),
        "{text}"
    );
    let ck = checkpoint::read(&checkpoint::latest(&run_dir).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(ck.step(), 2);
    let metrics = facegan::train::eval::read(&run_dir.join(facegan::train::eval::METRICS_FILE)).unwrap_or_default();
    assert!(metrics.is_empty(), "{metrics:?}");
}

fn buffers(p: &facegan::nn::Params, prefix: &str) -> Vec<(String, Vec<f32>)> {
    let mut t = std::collections::HashMap::new();
    p.to_tensors(prefix, &mut t);
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .filter(|(k, _)| k.contains(".buffers.") && k.contains("running"))
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A checkpoint written where no sample grid was drawn still carries the EMA generator's
/// own batch statistics (recomputed from its weights), not G's running averages.
#[test]
fn an_off_schedule_checkpoint_carries_the_ema_generators_standing_statistics() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let mut cfg = tiny_config(&data);
    (cfg.train.steps, cfg.log.sample_every, cfg.log.checkpoint_every) = (5, 1000, 5);
    let out = train(opts(&cfg, &t.path().join("run"), false, None)).unwrap();
    let ck = checkpoint::read(&out.checkpoint, &Device::Cpu).unwrap();
    let saved: Vec<(String, Vec<f32>)> =
        flat(&ck, "G_ema.buffers").into_iter().filter(|(k, _)| k.contains("running")).collect();
    assert!(!saved.is_empty());
    let s = Session::from_checkpoint(&ck, &cfg, &Device::Cpu).unwrap();
    assert_ne!(
        saved.iter().map(|x| &x.1).collect::<Vec<_>>(),
        buffers(s.g.params(), "G").iter().map(|x| &x.1).collect::<Vec<_>>(),
        "G's statistics were stored for G_ema"
    );
    s.refresh_ema_stats().unwrap();
    assert_eq!(saved, buffers(s.g_ema.params(), "G_ema"));
}

/// `export` with several checkpoints writes the mean of their EMA generators, with batch
/// statistics of the mean's own, at the newest one's step, and names the steps it averaged;
/// a checkpoint of another model, or one step twice, is refused by name.
#[test]
fn export_of_several_checkpoints_averages_their_ema_generators() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let mut cfg = tiny_config(&data);
    (cfg.train.steps, cfg.log.checkpoint_every, cfg.log.keep_checkpoints) = (6, 2, 10);
    train(opts(&cfg, &t.path().join("a"), false, None)).unwrap();
    let cks: Vec<String> =
        checkpoint::list_checkpoints(&t.path().join("a")).into_iter().map(|(_, p)| p.display().to_string()).collect();
    assert_eq!(cks.len(), 3, "{cks:?}");
    let out = t.path().join("avg.safetensors");
    let out_s = out.to_str().unwrap();
    // Given out of order: the newest is found by its step.
    let (ok, log) = run(&["export", "--checkpoint", &cks[2], &cks[0], &cks[1], "--out", out_s]);
    assert!(ok && log.contains("[2, 4, 6]"), "{log}");
    let avg = checkpoint::read(&out, &Device::Cpu).unwrap();
    assert_eq!((avg.kind(), avg.step(), avg.meta["ema_average_of"].as_str()), ("generator", 6, "2,4,6"));
    let snaps: Vec<_> =
        cks.iter().map(|p| flat(&checkpoint::read(Path::new(p), &Device::Cpu).unwrap(), "G_ema.params")).collect();
    assert_ne!(snaps[0], snaps[2], "the snapshots must differ for the mean to show anything");
    let got = flat(&avg, "G_ema.params");
    assert_eq!(got.len(), snaps[0].len());
    for (i, (name, v)) in got.iter().enumerate() {
        for (j, x) in v.iter().enumerate() {
            let mean = (snaps[0][i].1[j] + snaps[1][i].1[j] + snaps[2][i].1[j]) / 3.0;
            assert!((x - mean).abs() <= 1e-6 * (1.0 + mean.abs()), "{name}[{j}]: {x} against the mean {mean}");
        }
    }
    // Its batch-norm statistics are the mean generator's standing statistics.
    let newest = checkpoint::read(Path::new(&cks[2]), &Device::Cpu).unwrap();
    let s = Session::from_checkpoint(&newest, &cfg, &Device::Cpu).unwrap();
    s.g_ema.params().load_tensors("G_ema", &avg.tensors, "avg").unwrap();
    s.refresh_ema_stats().unwrap();
    let saved: Vec<_> = flat(&avg, "G_ema.buffers").into_iter().filter(|(k, _)| k.contains("running")).collect();
    assert!(!saved.is_empty());
    assert_eq!(saved, buffers(s.g_ema.params(), "G_ema"));
    assert_ne!(
        saved,
        flat(&newest, "G_ema.buffers").into_iter().filter(|(k, _)| k.contains("running")).collect::<Vec<_>>()
    );

    // A continuation file of the mean goes on from the newest step with the mean as G_ema.
    let cont = t.path().join("cont.safetensors");
    let (ok, log) =
        run(&["export", "--checkpoint", &cks[1], &cks[2], "--out", cont.to_str().unwrap(), "--continuation"]);
    assert!(ok, "{log}");
    let c = checkpoint::read(&cont, &Device::Cpu).unwrap();
    assert_eq!((c.kind(), c.step(), c.meta["ema_average_of"].as_str()), ("continuation", 6, "4,6"));
    for (k, v) in flat(&newest, "G.params") {
        let x =
            c.tensors[&k].to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect();
        assert_eq!(x, want, "{k}: G is the newest checkpoint's");
    }

    // Refusals, by name: another model's checkpoint, and one step twice.
    let mut other = cfg.clone();
    (other.model.ngf, other.train.steps) = (16, 2);
    let b = train(opts(&other, &t.path().join("b"), false, None)).unwrap();
    let (ok, log) = run(&["export", "--checkpoint", &cks[2], b.checkpoint.to_str().unwrap(), "--out", out_s]);
    assert!(!ok && log.contains(b.checkpoint.to_str().unwrap()) && log.contains("model settings differ"), "{log}");
    let (ok, log) = run(&["export", "--checkpoint", &cks[1], &cks[1], "--out", out_s]);
    assert!(!ok && log.contains("step 4"), "{log}");
}

/// `export --continuation` writes G, D and G_ema in f16; `train --init-from` starts a new
/// run from it whose EMA generator makes the faces of the exported generator, at the step
/// the file was written, and trains on with fresh moments and a warm-up.
#[test]
fn a_continuation_file_reproduces_the_exported_generator_and_trains_on() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let mut cfg = tiny_config(&data);
    // A learning curve (SWD needs no Inception) that the continuation file carries on.
    (cfg.log.eval_every, cfg.log.eval_num, cfg.log.eval_metrics) = (3, 8, "swd".into());
    let a = train(opts(&cfg, &t.path().join("a"), false, None)).unwrap();
    let ck = a.checkpoint.to_str().unwrap();
    let (cont, gen) = (t.path().join("cont.safetensors"), t.path().join("g.safetensors"));
    let (ok, log) = run(&["export", "--checkpoint", ck, "--out", cont.to_str().unwrap(), "--continuation"]);
    assert!(ok && log.contains("--init-from"), "{log}");
    assert!(run(&["export", "--checkpoint", ck, "--out", gen.to_str().unwrap(), "--half"]).0);
    let full = std::fs::metadata(&a.checkpoint).unwrap().len();
    assert!(std::fs::metadata(&cont).unwrap().len() < full / 2, "no optimizer moments, f16");

    let c = checkpoint::read(&cont, &Device::Cpu).unwrap();
    assert_eq!((c.kind(), c.step()), ("continuation", 6));
    assert_eq!(c.meta["images_seen"], "48");
    let s = Session::from_continuation(&c, &cfg, &Device::Cpu).unwrap();
    let (g, gcfg) = facegan::sample::generate::load_generator(&gen, &Device::Cpu).unwrap();
    let z = Latent::from_z(Tensor::randn(0f32, 1.0, (4, 16), &Device::Cpu).unwrap());
    let d = (s.g_ema.forward(&z, Mode::EVAL).unwrap() - g.forward(&z, Mode::EVAL).unwrap()).unwrap();
    assert_eq!(d.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(gcfg.model, cfg.model);
    // `generate` reads the continuation file as it reads the export.
    let (gc, _) = facegan::sample::generate::load_generator(&cont, &Device::Cpu).unwrap();
    let d = (gc.forward(&z, Mode::EVAL).unwrap() - g.forward(&z, Mode::EVAL).unwrap()).unwrap();
    assert_eq!(d.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);

    // Too few steps, and a full checkpoint given as a continuation, are refused by name.
    let b = t.path().join("b");
    let (ok, log) =
        run(&["train", "--init-from", cont.to_str().unwrap(), "--out", b.to_str().unwrap(), "--steps", "6", "--quiet"]);
    assert!(!ok && log.contains("at step 6") && log.contains("--steps"), "{log}");
    let (ok, log) = run(&["train", "--init-from", ck, "--out", b.to_str().unwrap(), "--steps", "9", "--quiet"]);
    assert!(!ok && log.contains("not a continuation file"), "{log}");
    let (ok, log) = run(&[
        "train",
        "--init-from",
        cont.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--steps",
        "10",
        "--eval-every",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{log}");
    let cb = checkpoint::read(&checkpoint::latest(&b).unwrap(), &Device::Cpu).unwrap();
    assert_eq!((cb.step(), cb.meta["opt_G.t"].as_str(), cb.config.train.lr_warmup), (10, "4", 100));
    let stats = facegan::train::stats::read(&b.join("stats.jsonl")).unwrap();
    assert!(stats.iter().all(|l| l.step > 6 && l.d_loss.is_finite() && l.g_loss.is_finite()));

    // The learning curve went with the file: the new run's metrics.jsonl starts with the
    // first run's evaluations, as they were, and goes on; the next continuation file carries
    // all of them, and `compare --table` and `inspect` read it from the file alone.
    let first = facegan::train::eval::read(&t.path().join("a").join("metrics.jsonl")).unwrap();
    assert_eq!(first.iter().map(|l| l.step).collect::<Vec<_>>(), [3, 6]);
    assert!(first.iter().all(|l| l.swd.is_some_and(f64::is_finite)));
    let curve = facegan::train::eval::read(&b.join("metrics.jsonl")).unwrap();
    assert_eq!(curve.iter().map(|l| l.step).collect::<Vec<_>>(), [3, 6, 8, 10]);
    assert_eq!(curve[..2], first[..]);
    let cont2 = t.path().join("cont2.safetensors");
    let ckb = checkpoint::latest(&b).unwrap();
    let (ok, log) =
        run(&["export", "--checkpoint", ckb.to_str().unwrap(), "--out", cont2.to_str().unwrap(), "--continuation"]);
    assert!(ok && log.contains("a learning curve of 4 evaluations"), "{log}");
    let carried = facegan::train::eval::carried_curve(&checkpoint::read(&cont2, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(carried, curve);
    let table = t.path().join("curve.md");
    let (ok, log) = run(&[
        "compare",
        cont2.to_str().unwrap(),
        "--out",
        t.path().join("faces.png").to_str().unwrap(),
        "--count",
        "4",
        "--table",
        table.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    let table = std::fs::read_to_string(table).unwrap();
    assert!(table.contains("SWD") && table.contains("| cont2 | dcgan-32 |"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with('|')).count(), 2 + 4, "{table}");
    let (ok, log) = run(&["inspect", cont2.to_str().unwrap()]);
    assert!(ok && log.contains("learning curve: 4 evaluations, steps 3 to 10"), "{log}");
    // A checkpoint in a run folder still reads the folder's metrics.jsonl (steps 3 and 6).
    let table_a = t.path().join("a.md");
    let (ok, log) =
        run(&["compare", ck, "--out", t.path().join("x.png").to_str().unwrap(), "--table", table_a.to_str().unwrap()]);
    assert!(ok, "a run folder's checkpoint still reads its metrics.jsonl: {log}");
    let table_a = std::fs::read_to_string(table_a).unwrap();
    assert_eq!(table_a.lines().filter(|l| l.starts_with('|')).count(), 2 + 2, "{table_a}");
    // A checkpoint copied out of its run folder has no curve to carry; the continuation file
    // exported from it says so when a curve is asked of it, naming the file.
    let loose = t.path().join("loose.safetensors");
    std::fs::copy(&a.checkpoint, &loose).unwrap();
    let cont3 = t.path().join("cont3.safetensors");
    let (ok, log) =
        run(&["export", "--checkpoint", loose.to_str().unwrap(), "--out", cont3.to_str().unwrap(), "--continuation"]);
    assert!(ok && log.contains("no learning curve: the checkpoint is not in a run folder"), "{log}");
    assert_eq!(checkpoint::read_metadata(&cont3).unwrap()["kind"], "continuation");
    let (ok, log) = run(&[
        "compare",
        cont3.to_str().unwrap(),
        "--out",
        t.path().join("y.png").to_str().unwrap(),
        "--table",
        "/dev/null",
    ]);
    assert!(!ok && log.contains("cont3.safetensors: this continuation file carries no learning curve"), "{log}");
}

/// Images seen are counted step by step: a resume that changes the batch size (an
/// `--override` the help offers) counts the earlier steps at their own batch size, in the
/// checkpoint, the continuation file and the learning curve.
#[test]
fn images_seen_survive_a_batch_size_changed_on_resume() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let mut cfg = tiny_config(&data);
    (cfg.train.steps, cfg.log.checkpoint_every) = (4, 2);
    (cfg.log.eval_every, cfg.log.eval_num, cfg.log.eval_metrics) = (2, 8, "swd".into());
    let a = t.path().join("a");
    train(opts(&cfg, &a, false, None)).unwrap();
    let a_s = a.to_str().unwrap();
    let (ok, log) = run(&["train", "--resume", a_s, "--steps", "7", "--override", "train.batch_size=4", "--quiet"]);
    assert!(ok, "{log}");
    let ck = checkpoint::read(&checkpoint::latest(&a).unwrap(), &Device::Cpu).unwrap();
    assert_eq!((ck.step(), ck.config.train.batch_size), (7, 4));
    assert_eq!(ck.meta["images_seen"], (4 * 8 + 3 * 4).to_string());
    let curve = facegan::train::eval::read(&a.join("metrics.jsonl")).unwrap();
    let seen: Vec<_> = curve.iter().map(|l| (l.step, l.images_seen)).collect();
    assert_eq!(seen, [(2, Some(16)), (4, Some(32)), (6, Some(40)), (7, Some(44))]);
    let cont = t.path().join("cont.safetensors");
    let ck_s = checkpoint::latest(&a).unwrap();
    let (ok, log) =
        run(&["export", "--checkpoint", ck_s.to_str().unwrap(), "--out", cont.to_str().unwrap(), "--continuation"]);
    assert!(ok && log.contains("44 images seen"), "{log}");
    // A run started from the file goes on counting from there.
    let b = t.path().join("b");
    let (ok, log) =
        run(&["train", "--init-from", cont.to_str().unwrap(), "--out", b.to_str().unwrap(), "--steps", "8", "--quiet"]);
    assert!(ok, "{log}");
    let cb = checkpoint::read(&checkpoint::latest(&b).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(cb.meta["images_seen"], "48");
}

/// A run whose rates had decayed, resumed at constant rates, ramps back up over 100 steps from
/// the rate of its last update instead of jumping to the full rate; the ramp's factor is
/// logged and stored, so a resume in the middle of it goes on from where it was.
#[test]
fn a_resume_that_raises_the_learning_rates_ramps_them_up() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let mut cfg = tiny_config(&data);
    (cfg.train.steps, cfg.train.lr_decay_steps, cfg.log.checkpoint_every, cfg.log.log_every) = (4, 4, 4, 1);
    let a = t.path().join("a");
    train(opts(&cfg, &a, false, None)).unwrap();
    let factor_meta = |run: &Path| -> f64 {
        let ck = checkpoint::read(&checkpoint::latest(run).unwrap(), &Device::Cpu).unwrap();
        ck.meta["lr_factor"].parse().unwrap()
    };
    // The decay's factors at steps 0-3 are 1, 3/4, 1/2, 1/4.
    assert_eq!(factor_meta(&a), 0.25);
    let a_s = a.to_str().unwrap();
    let args = ["train", "--resume", a_s, "--steps", "8", "--override", "train.lr_decay_steps=0", "--quiet"];
    let (ok, log) = run(&args);
    assert!(ok, "{log}");
    assert!(log.contains("ramp up over 100 steps from 0.250"), "{log}");
    let logged = |lines: &[facegan::train::stats::StatsLine]| -> Vec<(u64, f64)> {
        lines.iter().filter(|l| l.step > 4).map(|l| (l.step, l.extra["lr_factor"])).collect()
    };
    let lines = facegan::train::stats::read(&a.join("stats.jsonl")).unwrap();
    let want: Vec<(u64, f64)> = (1..=4).map(|k| (4 + k, 0.25 + 0.75 * k as f64 / 100.0)).collect();
    for ((step, got), (s, w)) in logged(&lines).into_iter().zip(&want) {
        assert!(step == *s && (got - w).abs() < 1e-12, "step {step}: factor {got}, want {w}");
    }
    assert_eq!(logged(&lines).len(), 4);
    assert!((factor_meta(&a) - 0.28).abs() < 1e-12);
    // Resumed again, the ramp starts from the factor it had reached.
    let (ok, log) = run(&["train", "--resume", a_s, "--steps", "9", "--quiet"]);
    assert!(ok && log.contains("from 0.280"), "{log}");
    let lines = facegan::train::stats::read(&a.join("stats.jsonl")).unwrap();
    assert!((lines.last().unwrap().extra["lr_factor"] - (0.28 + 0.72 / 100.0)).abs() < 1e-12);
}

/// Absurd learning rates make every loss non-finite: those updates are skipped, the run
/// goes back to its newest checkpoint with halved learning rates (and says so, in the log
/// and the config history), and after `max_rollbacks` it stops with a message; the
/// checkpoint it went back to is intact and finite.
#[test]
fn a_diverging_run_skips_rolls_back_and_stops_with_its_checkpoints_intact() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let base = ["--preset", "dcgan-32", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "8", "--quiet"];
    let (ok, log) =
        run(&[&["train", "--data", d, "--out", r, "--steps", "4", "--checkpoint-every", "4"], &base[..]].concat());
    assert!(ok, "{log}");
    let good = checkpoint::read(&checkpoint::latest(&run_dir).unwrap(), &Device::Cpu).unwrap();
    let args = ["train", "--resume", r, "--steps", "200", "--checkpoint-every", "1000", "--quiet"];
    let over = ["--override", "train.lr_g=1e30", "--override", "train.lr_d=1e30"];
    let (ok, log) = run(&[&args[..], &over[..]].concat());
    assert!(!ok, "{log}");
    assert_eq!(log.matches("going back to step 4").count(), 3, "{log}");
    assert!(log.contains("halved learning rates (lr_g 1e30 -> 5e29"), "{log}");
    assert!(log.contains("training keeps diverging") && log.contains("checkpoints in"), "{log}");
    let history = std::fs::read_to_string(run_dir.join("config-history.jsonl")).unwrap();
    assert_eq!(history.matches("\"rollback\"").count(), 3, "{history}");
    // The newest checkpoint is still the good one, bit for bit, and finite.
    let ck = checkpoint::read(&checkpoint::latest(&run_dir).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(ck.step(), 4);
    for (k, v) in &ck.tensors {
        let a = v.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let b =
            good.tensors[k].flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().all(|x| x.is_finite()) && a == b, "{k}");
    }
    let s = Session::from_checkpoint(&ck, &ck.config, &Device::Cpu).unwrap();
    assert!(s.networks_finite().unwrap());
}

/// A flipped bit in the newest checkpoint's tensor data fails its checksum on load, naming
/// the file; `--resume` warns, skips it and goes on from the newest good one.
#[test]
fn resume_skips_a_damaged_newest_checkpoint_for_the_newest_good_one() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let run_dir = t.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let base = ["--preset", "dcgan-32", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "8", "--quiet"];
    let args = ["train", "--data", d, "--out", r, "--steps", "4", "--checkpoint-every", "2"];
    let (ok, log) = run(&[&args[..], &base[..]].concat());
    assert!(ok, "{log}");
    let newest = checkpoint::latest(&run_dir).unwrap();
    assert!(checkpoint::read(&newest, &Device::Cpu).unwrap().meta.contains_key(checkpoint::CHECKSUM_KEY));
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    let e = format!("{:#}", checkpoint::read(&newest, &Device::Cpu).err().expect("the damage is noticed"));
    assert!(e.contains("step-0000004") && e.contains("checksum"), "{e}");
    let (ok, log) = run(&["train", "--resume", r, "--steps", "6", "--quiet"]);
    assert!(ok, "{log}");
    assert!(log.contains("warning: skipping") && log.contains("from step 2"), "{log}");
    assert_eq!(log.matches("warning: skipping").count(), 1, "said once:\n{log}");
    assert_eq!(checkpoint::read(&checkpoint::latest(&run_dir).unwrap(), &Device::Cpu).unwrap().step(), 6);
}

/// A full disk when a checkpoint is written (a real ENOSPC: the checkpoint's temporary file
/// is a link to /dev/full) stops the run with a message naming the file and the error; the
/// previous checkpoint stays intact and `--resume` goes on from it.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_at_a_checkpoint_keeps_the_previous_one() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 16, 32);
    let run_dir = t.path().join("run");
    std::fs::create_dir_all(run_dir.join("checkpoints")).unwrap();
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let base = ["--preset", "dcgan-32", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "8", "--quiet"];
    let args = ["train", "--data", d, "--out", r, "--steps", "6", "--checkpoint-every", "2"];
    let child = bin()
        .args([&args[..], &base[..]].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The trainer writes step 4's checkpoint to this name before renaming it.
    let tmp = run_dir.join(format!("checkpoints/.step-0000004.safetensors.tmp-{}", child.id()));
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && !log.contains("panicked"), "{log}");
    assert!(log.contains("cannot write checkpoint") && log.contains("step-0000004.safetensors"), "{log}");
    assert!(log.contains("No space left on device") && log.contains("previous checkpoints are untouched"), "{log}");
    let list: Vec<u64> = checkpoint::list_checkpoints(&run_dir).iter().map(|c| c.0).collect();
    assert_eq!(list, [2], "only the good checkpoint is there");
    assert_eq!(checkpoint::read_latest(&run_dir, &Device::Cpu).unwrap().step(), 2);
    let (ok, log) = run(&["train", "--resume", r, "--steps", "6", "--quiet"]);
    assert!(ok && log.contains("from step 2"), "{log}");
    assert_eq!(checkpoint::read_latest(&run_dir, &Device::Cpu).unwrap().step(), 6);
}

/// Determinism, through the binary: the same seed on the same machine (and thread count)
/// gives an identical stats.jsonl (all but the timing columns) and identical checkpoint
/// tensors, with ADA, a lazy R1 penalty and the G_ema update in the path; another seed
/// does not.
#[test]
fn the_same_seed_gives_identical_stats_and_weights() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 32, 32);
    let go = |name: &str, seed: &str| {
        let run_dir = t.path().join(name);
        let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", run_dir.to_str().unwrap()];
        args.extend_from_slice(&[
            "--preset",
            "dcgan-32",
            "--ngf",
            "8",
            "--ndf",
            "8",
            "--nz",
            "16",
            "--batch-size",
            "8",
        ]);
        args.extend_from_slice(&["--steps", "8", "--log-every", "2", "--augment", "ada", "--augment-p", "0.5"]);
        args.extend_from_slice(&["--penalty", "r1:1:2", "--d-norm", "layer", "--seed", seed, "--quiet"]);
        let (ok, out) = run(&args);
        assert!(ok, "{out}");
        let stats: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("stats.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().retain(|k, _| !["img_per_s", "elapsed_s", "cpu_s"].contains(&k.as_str()));
                v
            })
            .collect();
        let ck = checkpoint::read(&checkpoint::latest(&run_dir).unwrap(), &Device::Cpu).unwrap();
        let mut tensors: Vec<(String, Vec<f32>)> = ck
            .tensors
            .iter()
            .map(|(k, v)| {
                (k.clone(), v.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        (stats, tensors)
    };
    let (a, b, c) = (go("a", "5"), go("b", "5"), go("c", "6"));
    assert_eq!(a.0.len(), 4);
    assert!(a.0.iter().all(|l| l.get("penalty_r1").is_some() && l.get("augment_p").is_some()), "{:?}", a.0);
    assert_eq!(a.0, b.0, "stats.jsonl");
    assert!(a.1 == b.1, "checkpoint tensors differ between two runs with one seed");
    assert_ne!(a.0, c.0, "another seed, another run");
}
