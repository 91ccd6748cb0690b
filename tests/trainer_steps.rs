//! What one training step does, checked against its definition on a tiny DCGAN: the EMA
//! generator and its warm-up, batch norm in evaluation mode, G's update leaving D alone,
//! weight clipping, the instance-noise schedule, lazy regularisation's interval and scale,
//! checkpoint pruning, and a TOML configuration merged over its preset.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use facegan::config::RunConfig;
use facegan::data::cache::Dataset;
use facegan::nn::{Mode, Params};
use facegan::penalty::PenaltyConfig;
use facegan::train::trainer::{lazy_weight, Session};
use facegan::train::{checkpoint, train};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tiny(data: &Path) -> RunConfig {
    let mut c = RunConfig::preset("dcgan-32").unwrap();
    (c.model.ngf, c.model.ndf, c.model.nz) = (8, 8, 16);
    (c.train.batch_size, c.train.steps, c.train.seed) = (8, 6, 3);
    (c.log.log_every, c.log.sample_every, c.log.checkpoint_every, c.log.sample_count) = (1, 100, 100, 4);
    c.data.path = data.display().to_string();
    c.data.cache_dir = Some(common::cache_dir().display().to_string());
    c
}

/// A prepared folder of 16 synthetic 32x32 faces and a batch of 8 of them.
fn faces(dir: &Path) -> (PathBuf, Tensor) {
    let data = prepared(dir, 16, 32);
    let ds = Dataset::open(&data).unwrap();
    let batch =
        facegan::data::loader::images_to_tensor(&ds, &(0..8).collect::<Vec<_>>(), &[false; 8], &Device::Cpu).unwrap();
    (data, batch)
}

fn values(p: &Params) -> BTreeMap<String, Vec<f32>> {
    p.trainable().map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn buffer_values(p: &Params) -> BTreeMap<String, Vec<f32>> {
    p.buffers().map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn max_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.values().zip(b.values()).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// G_ema ← d·G_ema + (1 − d)·G after every step, with d = min(ema_decay, (1 + t)/(10 + t)) at
/// step t; G_ema's buffers are G's.
#[test]
fn the_ema_generator_follows_g_with_its_warm_up() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let cfg = tiny(&data);
    assert_eq!(cfg.train.ema_decay, 0.999);
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    assert_eq!(max_diff(&values(s.g_ema.params()), &values(s.g.params())), 0.0, "G_ema starts as G");
    for (step, decay) in [(0u64, 0.1), (1, 2.0 / 11.0), (5000, 0.999)] {
        s.step = step;
        let before = values(s.g_ema.params());
        s.train_step(std::slice::from_ref(&real)).unwrap();
        let (g, ema) = (values(s.g.params()), values(s.g_ema.params()));
        assert!(max_diff(&g, &before) > 1e-4, "G moved");
        let mut moved = 0f32;
        for (k, e) in &ema {
            for ((e, b), g) in e.iter().zip(&before[k]).zip(&g[k]) {
                let want = decay * *b as f64 + (1.0 - decay) * *g as f64;
                assert!((*e as f64 - want).abs() <= 1e-6 + 1e-5 * want.abs(), "step {step}: {k}: {e} vs {want}");
                moved = moved.max((e - b).abs());
            }
        }
        assert!(moved > 0.0, "step {step}: G_ema moved");
        assert_eq!(buffer_values(s.g_ema.params()), buffer_values(s.g.params()), "step {step}: buffers");
    }
}

/// D's batch norm normalises with its running statistics in evaluation mode (a face's score
/// does not depend on the rest of the batch, and the statistics stay as they are) and with
/// the batch's in training mode (where the running statistics move).
#[test]
fn batch_norm_uses_running_statistics_in_eval_mode() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut s = Session::new(&tiny(&data), &Device::Cpu).unwrap();
    s.train_step(std::slice::from_ref(&real)).unwrap();
    let stats = buffer_values(s.d.params());
    assert!(!stats.is_empty(), "DCGAN's D has batch norm");
    let score = |x: &Tensor, mode: Mode| s.d.forward(x, None, mode).unwrap().to_vec1::<f32>().unwrap();
    let (one, four) = (real.narrow(0, 0, 1).unwrap(), real.narrow(0, 0, 4).unwrap());
    let (a, b) = (score(&one, Mode::EVAL)[0], score(&four, Mode::EVAL)[0]);
    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "eval: {a} alone vs {b} in a batch");
    assert_eq!(buffer_values(s.d.params()), stats, "evaluation leaves the running statistics alone");
    let (a, b) = (score(&real.narrow(0, 0, 2).unwrap(), Mode::TRAIN)[0], score(&four, Mode::TRAIN)[0]);
    assert!((a - b).abs() > 1e-4, "training mode normalises by the batch: {a} vs {b}");
    assert!(max_diff(&buffer_values(s.d.params()), &stats) > 0.0, "training mode moves the running statistics");
}

/// G's update changes G only: with D's optimizer at learning rate 0 a whole step leaves D's
/// weights as they were, and with G's at 0 it leaves G's.
#[test]
fn each_update_changes_its_own_network_only() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut s = Session::new(&tiny(&data), &Device::Cpu).unwrap();
    s.opt_d.lr = 0.0;
    let (g0, d0) = (values(s.g.params()), values(s.d.params()));
    s.train_step(std::slice::from_ref(&real)).unwrap();
    assert_eq!(values(s.d.params()), d0, "G's update touched D");
    assert!(max_diff(&values(s.g.params()), &g0) > 1e-4);
    let mut s = Session::new(&tiny(&data), &Device::Cpu).unwrap();
    s.opt_g.lr = 0.0;
    let (g0, d0) = (values(s.g.params()), values(s.d.params()));
    s.train_step(std::slice::from_ref(&real)).unwrap();
    assert_eq!(values(s.g.params()), g0, "D's update touched G");
    assert!(max_diff(&values(s.d.params()), &d0) > 1e-4);
}

/// WGAN's weight clipping keeps every weight of D (and only D) in [−c, c] after each update.
#[test]
fn weight_clipping_bounds_every_weight_of_d() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut cfg = tiny(&data);
    (cfg.train.loss, cfg.train.weight_clip, cfg.train.lr_d) = ("wgan".into(), 0.01, 0.05);
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    for _ in 0..2 {
        s.train_step(std::slice::from_ref(&real)).unwrap();
        let d = values(s.d.params());
        let max = d.values().flatten().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 0.01, "a weight of D at {max}");
        assert!(d.values().flatten().filter(|v| v.abs() == 0.01).count() > 100, "the clip binds");
    }
    let g_max = values(s.g.params()).values().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(g_max > 0.01, "G is not clipped ({g_max})");
}

fn steps_of(s: &mut Session, real: &Tensor, n: usize) -> Vec<BTreeMap<String, f64>> {
    let nc = s.cfg.train.n_critic as usize;
    (0..n).map(|_| s.train_step(&vec![real.clone(); nc]).unwrap()).collect()
}

/// Instance noise falls linearly from its start to 0 over `instance_noise_steps` and is logged
/// while it is on; noise changes what D sees.
#[test]
fn instance_noise_decays_linearly_and_reaches_d() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut cfg = tiny(&data);
    (cfg.train.instance_noise, cfg.train.instance_noise_steps) = (0.5, 4);
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    let logged: Vec<Option<f64>> =
        steps_of(&mut s, &real, 6).iter().map(|l| l.get("instance_noise").copied()).collect();
    assert_eq!(logged, [Some(0.5), Some(0.375), Some(0.25), Some(0.125), None, None]);
    let quiet = steps_of(&mut Session::new(&tiny(&data), &Device::Cpu).unwrap(), &real, 1);
    let noisy = steps_of(&mut Session::new(&cfg, &Device::Cpu).unwrap(), &real, 1);
    assert_ne!(quiet[0]["d_real"], noisy[0]["d_real"], "the noise reaches D");
}

/// A lazy regulariser (`r1:W:K`) is taken on every K-th update of D, counted across n_critic
/// steps, and weighted by W·K.
#[test]
fn lazy_penalties_fall_on_their_interval_with_their_weight_scaled() {
    assert_eq!(lazy_weight(10.0, 4, 0), Some(40.0));
    assert_eq!(lazy_weight(10.0, 4, 8), Some(40.0));
    assert_eq!(lazy_weight(10.0, 4, 3), None);
    assert_eq!(lazy_weight(0.5, 1, 7), Some(0.5));
    assert_eq!(lazy_weight(0.0, 1, 0), None);
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut cfg = tiny(&data);
    cfg.train.n_critic = 2;
    cfg.train.penalties = vec![PenaltyConfig::parse("r1:1:3").unwrap()];
    cfg.model.d_norm = "layer".into();
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    // D updates 0..14: the penalty falls on 0, 3, 6, 9, 12, i.e. in steps 0, 1, 3, 4 and 6.
    let with: Vec<usize> = steps_of(&mut s, &real, 7)
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains_key("penalty_r1"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with, [0, 1, 3, 4, 6]);
}

/// Only the newest `log.keep_checkpoints` checkpoints stay.
#[test]
fn old_checkpoints_are_pruned() {
    let t = tempfile::tempdir().unwrap();
    let (data, _) = faces(t.path());
    let mut cfg = tiny(&data);
    (cfg.log.checkpoint_every, cfg.log.keep_checkpoints, cfg.train.steps) = (1, 2, 5);
    train(opts(&cfg, &t.path().join("run"), false, None)).unwrap();
    let steps: Vec<u64> = checkpoint::list_checkpoints(&t.path().join("run")).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [4, 5]);
}

/// `--config FILE` is merged over the preset (settings the file leaves out keep the preset's
/// values) and flags win over both; the run's config.toml records the result.
#[test]
fn a_config_file_is_merged_over_its_preset_and_flags_win() {
    let t = tempfile::tempdir().unwrap();
    let faces = t.path().join("faces");
    synthetic_faces(&faces, 8);
    let file = t.path().join("mine.toml");
    std::fs::write(&file, "[train]\nlr_d = 0.0001\nbatch_size = 4\n\n[model]\nndf = 16\n").unwrap();
    let out = t.path().join("run");
    let args = ["train", "--preset", "dcgan-32", "--config", file.to_str().unwrap(), "--data", faces.to_str().unwrap()];
    let flags = ["--out", out.to_str().unwrap(), "--steps", "1", "--ngf", "8", "--nz", "16", "--batch-size", "2"];
    let (ok, text) = run(&[&args[..], &flags[..], &["--quiet"]].concat());
    assert!(ok, "{text}");
    let run_cfg = RunConfig::load(&out.join("config.toml")).unwrap();
    let preset = RunConfig::preset("dcgan-32").unwrap();
    assert_eq!(run_cfg.train.lr_d, 0.0001, "from the file");
    assert_eq!(run_cfg.model.ndf, 16, "from the file");
    assert_eq!(run_cfg.train.batch_size, 2, "the flag beats the file");
    assert_eq!((run_cfg.train.lr_g, run_cfg.train.beta1), (preset.train.lr_g, preset.train.beta1), "the preset's");
    assert_eq!((run_cfg.model.arch.as_str(), run_cfg.model.image_size), ("dcgan", 32));
    std::fs::write(&file, "[train]\nlr_dd = 1\n").unwrap();
    let (ok, text) = run(&[&args[..], &flags[..]].concat());
    assert!(!ok && text.contains("mine.toml") && text.contains("lr_dd"), "{text}");
}

/// Feature matching (`train.feature_matching`) replaces G's adversarial loss: against a frozen
/// D, G's updates bring the mean of D's features on its fakes toward their mean on the real
/// batch, so the logged G loss falls. D's own step is the same as without it. Only DCGAN's D
/// reports its features; other families are refused by name.
#[test]
fn feature_matching_pulls_the_fakes_features_toward_the_reals() {
    let t = tempfile::tempdir().unwrap();
    let (data, real) = faces(t.path());
    let mut cfg = tiny(&data);
    cfg.train.feature_matching = true;
    cfg.train.lr_g = 1e-3;
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    s.opt_d.lr = 0.0;
    let g_loss: Vec<f64> = steps_of(&mut s, &real, 16).iter().map(|l| l["g_loss"]).collect();
    assert!(g_loss.iter().all(|&v| v.is_finite() && v >= 0.0), "{g_loss:?}");
    let (first, last) = ((g_loss[0] + g_loss[1]) / 2.0, (g_loss[14] + g_loss[15]) / 2.0);
    assert!(last < 0.5 * first, "feature matching loss {first} -> {last}: {g_loss:?}");
    let mut plain = tiny(&data);
    plain.train.lr_g = 1e-3;
    let a = steps_of(&mut Session::new(&plain, &Device::Cpu).unwrap(), &real, 1);
    let b = steps_of(&mut Session::new(&cfg, &Device::Cpu).unwrap(), &real, 1);
    assert_eq!(a[0]["d_loss"], b[0]["d_loss"], "D's step does not change");
    assert_ne!(a[0]["g_loss"], b[0]["g_loss"]);
    cfg.model.arch = "resnet".into();
    let e = Session::new(&cfg, &Device::Cpu).err().expect("refused").to_string();
    assert!(e.contains("feature_matching") && e.contains("resnet"), "{e}");
}
