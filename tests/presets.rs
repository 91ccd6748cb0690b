//! Every preset of 64x64 and up trains 100 steps on real CelebA faces at its own size
//! (small widths) without NaN or inf, and its losses and penalty values land in
//! stats.jsonl. The ResNet presets run at ngf = ndf = 4 (8 where attention needs it) with
//! batch 4: the behaviour under test (the preset's recipe staying finite) does not need
//! more, and CI's time does; the style presets likewise, with w_dim 32. The 32x32 presets
//! are the 64x64 recipes with a block fewer: the model shape tests cover them.

mod common;
use candle_core::Device;
use facegan::config::RunConfig;
use facegan::data::{prepare, PrepareOptions};
use facegan::presets::PRESETS;
use facegan::train::{stats, train, TrainOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

const STEPS: u64 = 100;

/// 256 shared CelebA faces prepared at `size` x `size` (64 or 128), once per test binary.
fn faces(size: usize) -> Option<PathBuf> {
    type Prepared = OnceLock<Option<(tempfile::TempDir, PathBuf)>>;
    static CACHE: [Prepared; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match size {
        64 => &CACHE[0],
        128 => &CACHE[1],
        _ => panic!("no prepared faces at {size}x{size}"),
    };
    slot.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let dir = common::celeba_subset(256, t.path())?;
        let out = t.path().join(format!("faces{size}.fgc"));
        let opts = PrepareOptions {
            spec: facegan::data::preprocess::CropResize { size: size as u32, crop: None },
            strict: true,
            progress: false,
        };
        prepare(&dir, &out, &opts).unwrap();
        Some((t, out))
    })
    .as_ref()
    .map(|(_, p)| p.clone())
}

fn run_preset(name: &str) {
    facegan::enable_second_order_gradients();
    let mut cfg = RunConfig::preset(name).unwrap();
    let Some(data) = faces(cfg.model.image_size) else { return };
    let resnet = matches!(cfg.model.arch.as_str(), "resnet" | "stylegan" | "stylegan2");
    if cfg.model.w_dim.is_some() {
        cfg.model.w_dim = Some(32);
    }
    cfg.model.ngf = if resnet { 4 } else { 8 };
    cfg.model.ndf = if resnet && cfg.model.attention == 0 { 4 } else { 8 };
    cfg.model.nz = 32;
    cfg.train.batch_size = if resnet { 4 } else { 8 };
    cfg.train.steps = STEPS;
    cfg.log.log_every = 20;
    cfg.log.sample_every = STEPS;
    cfg.log.checkpoint_every = STEPS;
    cfg.log.sample_count = 4;
    cfg.data.path = data.display().to_string();
    cfg.data.cache_dir = Some(common::cache_dir().display().to_string());
    if !cfg.model.attrs.is_empty() {
        // The subset's folder is a temporary one; its labels are in the shared attribute file.
        let dir = common::celeba_dir().unwrap();
        cfg.data.attr_file = Some(dir.parent().unwrap().join("list_attr_celeba.txt").display().to_string());
    }
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join(name);
    let out = train(TrainOptions {
        init_from: None,
        config: cfg.clone(),
        run_dir: run.clone(),
        resume: false,
        device: Device::Cpu,
        progress: false,
        stop_after: None,
        overrides: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(out.step, STEPS);
    let lines = stats::read(&run.join("stats.jsonl")).unwrap();
    assert_eq!(lines.len() as u64, STEPS / 20, "{name}");
    for l in &lines {
        assert!(l.d_loss.is_finite() && l.g_loss.is_finite(), "{name}: {l:?}");
        for p in &cfg.train.penalties {
            let v =
                l.extra.get(&format!("penalty_{}", p.kind)).unwrap_or_else(|| panic!("{name}: no {} in {l:?}", p.kind));
            assert!(v.is_finite() && *v >= 0.0, "{name}: {l:?}");
        }
        assert!(l.extra["logit_real"].is_finite() && l.extra["logit_fake"].is_finite());
        if cfg.model.info_cat > 0 {
            assert!(l.extra["info_cat"].is_finite() && l.extra["info_cont"] >= 0.0, "{name}: {l:?}");
        }
        if cfg.model.condition == "acgan" {
            assert!(l.extra["g_class"].is_finite() && l.extra["class_acc_real"] >= 0.0, "{name}: {l:?}");
        }
        if cfg.train.penalties.iter().any(|p| p.kind == "path-length") {
            assert!(l.extra["pl_mean"] > 0.0 && l.extra["pl_mean"].is_finite(), "{name}: {l:?}");
        }
    }
}

macro_rules! preset_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { run_preset($name); })*
        #[test]
        fn every_preset_has_a_test() {
            let tested = [$($name),*];
            for p in PRESETS {
                assert!(tested.contains(&p.name) || p.name.ends_with("-32"), "preset {} has no 100-step test", p.name);
            }
        }
    };
}

preset_tests! {
    dcgan_64 => "dcgan-64",
    minimax_64 => "minimax-64",
    lsgan_64 => "lsgan-64",
    wgan_64 => "wgan-64",
    wgan_gp_64 => "wgan-gp-64",
    hinge_64 => "hinge-64",
    dragan_64 => "dragan-64",
    r1_64 => "r1-64",
    fgan_kl_64 => "fgan-kl-64",
    fgan_js_64 => "fgan-js-64",
    ragan_64 => "ragan-64",
    ralsgan_64 => "ralsgan-64",
    rahinge_64 => "rahinge-64",
    mlp_64 => "mlp-64",
    resnet_wgan_gp_64 => "resnet-wgan-gp-64",
    sngan_64 => "sngan-64",
    sagan_64 => "sagan-64",
    selfmod_64 => "selfmod-64",
    ebgan_64 => "ebgan-64",
    cgan_64 => "cgan-64",
    acgan_64 => "acgan-64",
    cbn_projection_64 => "cbn-projection-64",
    infogan_64 => "infogan-64",
    sgan_64 => "sgan-64",
    stylegan_64 => "stylegan-64",
    stylegan2_64 => "stylegan2-64",
    dcgan_128 => "dcgan-128",
    sngan_128 => "sngan-128",
    sagan_128 => "sagan-128",
    stylegan2_128 => "stylegan2-128",
}
