//! Augmentation of D's inputs end to end: every family trains with DiffAugment and with
//! ADA's pipeline under a gradient penalty; ADA's p rises when D overfits a tiny dataset,
//! is logged, and survives an interruption bit for bit.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use facegan::config::RunConfig;
use facegan::penalty::PenaltyConfig;
use facegan::train::{checkpoint, train, trainer::Session};

/// The smallest member of each family, with `augment` and (where the loss allows) R1.
fn small(preset: &str, augment: &str) -> RunConfig {
    let mut c = RunConfig::preset(preset).unwrap();
    let m = &mut c.model;
    (m.image_size, m.nz, m.ngf, m.ndf) = (32, 8, 4, 4);
    if m.w_dim.is_some() {
        (m.w_dim, m.mapping_layers) = (Some(8), Some(2));
    }
    if m.attention != 0 {
        m.attention = 8;
    }
    if m.d_norm == "batch"
        && facegan::models::family(&m.arch).unwrap().options.contains(&facegan::models::ModelOption::DNorm)
    {
        m.d_norm = "layer".into();
    }
    let t = &mut c.train;
    (t.batch_size, t.n_critic, t.augment, t.augment_p) = (4, 1, augment.into(), 1.0);
    if t.loss != "ebgan" {
        t.penalties = vec![PenaltyConfig::parse("r1:1:1").unwrap()];
    }
    c
}

#[test]
fn every_family_trains_through_each_augmentation_under_a_penalty() {
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    for preset in ["mlp-32", "dcgan-32", "sagan-64", "ebgan-64", "stylegan-32", "stylegan2-32"] {
        for augment in ["diffaugment", "fixed"] {
            let cfg = small(preset, augment);
            let mut s = Session::new(&cfg, &dev).unwrap_or_else(|e| panic!("{preset}: {e:#}"));
            let real = Tensor::rand(-1f32, 1.0, (4, 3, 32, 32), &dev).unwrap();
            let before = s.d.params().trainable().next().unwrap().1.as_tensor().copy().unwrap();
            let stats =
                s.train_step(std::slice::from_ref(&real)).unwrap_or_else(|e| panic!("{preset} {augment}: {e:#}"));
            assert!(stats.values().all(|v| v.is_finite()), "{preset} {augment}: {stats:?}");
            if cfg.train.loss != "ebgan" {
                assert!(stats.contains_key("penalty_r1"), "{preset} {augment}: {stats:?}");
            }
            let after = s.d.params().trainable().next().unwrap().1.as_tensor().copy().unwrap();
            let moved = (after - before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(moved > 0.0, "{preset} {augment}: D did not learn");
            assert_eq!(stats.get("augment_p").copied(), (augment == "fixed").then_some(1.0), "{preset} {augment}");
        }
    }
}

fn tiny(data: &std::path::Path) -> RunConfig {
    let mut c = RunConfig::preset("dcgan-32").unwrap();
    (c.model.ngf, c.model.ndf, c.model.nz) = (8, 8, 16);
    let t = &mut c.train;
    (t.batch_size, t.steps, t.seed) = (8, 40, 3);
    (t.augment, t.ada_kimg) = ("ada".into(), 0.2);
    (c.log.log_every, c.log.sample_every, c.log.checkpoint_every) = (4, 1000, 1000);
    c.data.path = data.display().to_string();
    c.data.cache_dir = Some(common::cache_dir().display().to_string());
    c
}

/// On 8 images D soon tells real from fake, r_t goes above 0.6 and p climbs from 0; an
/// interrupted run resumes with p, r_t's partial sums and every weight as they were.
#[test]
fn ada_raises_p_on_a_tiny_dataset_and_resumes_it_exactly() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 8, 32);
    let cfg = tiny(&data);
    let a = train(opts(&cfg, &t.path().join("a"), false, None)).unwrap();
    let lines = facegan::train::stats::read(&t.path().join("a/stats.jsonl")).unwrap();
    let p: Vec<f64> = lines.iter().map(|l| l.extra["augment_p"]).collect();
    let rt: Vec<f64> = lines.iter().filter_map(|l| l.extra.get("ada_rt").copied()).collect();
    assert!(!rt.is_empty() && rt.iter().all(|r| (-1.0..=1.0).contains(r)), "{rt:?}");
    assert!(*p.last().unwrap() >= 0.3, "p stayed low on 8 images: {p:?} (r_t {rt:?})");
    // Stop at step 6 (mid-interval: 6 D steps since the last adjustment at 4) and resume.
    train(opts(&cfg, &t.path().join("b"), false, Some(6))).unwrap();
    let b = train(opts(&cfg, &t.path().join("b"), true, None)).unwrap();
    let ca = checkpoint::read(&a.checkpoint, &Device::Cpu).unwrap();
    let cb = checkpoint::read(&b.checkpoint, &Device::Cpu).unwrap();
    for k in ["augment_p", "ada_sign_sum", "ada_sign_steps", "rng"] {
        assert_eq!(ca.meta.get(k), cb.meta.get(k), "{k}");
    }
    let name = ca.tensors.keys().find(|k| k.starts_with("D.params")).unwrap();
    let diff = (&ca.tensors[name] - &cb.tensors[name]).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() <= 1e-6);
}

/// ADA reads EBGAN's energies as realness (half the margin minus the energy): reals an untrained
/// auto-encoder reconstructs badly (noise of ±1, energy about 1 against the margin's 0.5) read
/// as fake, so r_t is below the target and p stays at 0. Read raw, energies are all positive,
/// r_t would be 1 and p would rise whatever D did.
#[test]
fn ada_reads_ebgan_energies_as_realness() {
    let dev = Device::Cpu;
    let mut cfg = small("ebgan-64", "ada");
    (cfg.train.augment_p, cfg.train.ada_kimg) = (0.0, 0.2);
    let mut s = Session::new(&cfg, &dev).unwrap();
    let noise = Tensor::rand(0f32, 1.0, (4, 3, 32, 32), &dev).unwrap().ge(0.5).unwrap();
    let real = ((noise.to_dtype(candle_core::DType::F32).unwrap() * 2.0).unwrap() - 1.0).unwrap();
    let mut last = None;
    for _ in 0..4 {
        last = Some(s.train_step(std::slice::from_ref(&real)).unwrap());
    }
    let stats = last.unwrap();
    let rt = stats["ada_rt"];
    assert!(rt < 0.6 && stats["augment_p"] == 0.0, "{stats:?}");
}

/// ADA reads a WGAN critic against the step's mean fake: two sessions that differ only in a
/// constant offset of the critic's output (its last bias at −100 or +100, which WGAN's loss
/// cannot see) measure the same r_t. Read against 0, as before, they would give −1 and +1.
#[test]
fn ada_reads_a_wgan_critic_whatever_its_offset() {
    let dev = Device::Cpu;
    let real = Tensor::rand(-1f32, 1.0, (4, 3, 32, 32), &dev).unwrap();
    let rt = |offset: f32| {
        let mut cfg = small("mlp-64", "ada");
        cfg.train.loss = "wgan".into();
        cfg.train.penalties.clear();
        (cfg.train.augment_p, cfg.train.ada_kimg) = (0.0, 0.2);
        let mut s = Session::new(&cfg, &dev).unwrap();
        let (_, bias) = s.d.params().trainable().find(|(k, _)| k.as_str() == "fc.2.bias").expect("fc.2.bias");
        bias.set(&Tensor::new(&[offset], &dev).unwrap()).unwrap();
        let mut last = None;
        for _ in 0..4 {
            last = Some(s.train_step(std::slice::from_ref(&real)).unwrap());
        }
        last.unwrap()["ada_rt"]
    };
    let (low, high) = (rt(-100.0), rt(100.0));
    assert!((low - high).abs() < 0.2, "r_t {low} with the critic at -100, {high} at +100");
}
