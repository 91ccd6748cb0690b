//! `facegan bench`: CPU timings of the building blocks of dcgan-64 training, to compare
//! with candle's own convolutions and with PyTorch (`scripts/bench_torch.py` takes the same
//! measurements under the same names; `scripts/bench_compare.sh` runs both).
//!
//! Each measurement is the median wall time of `iters` calls after `warmup` untimed ones,
//! with the median CPU time of the process over the same calls (all threads; on a busy
//! machine the steadier number, and CPU / wall shows how well the threads are used). In
//! the order they are taken:
//!
//! | name                        | what one call does                                             |
//! |-----------------------------|----------------------------------------------------------------|
//! | `matmul_2048`               | a 2048×2048 by 2048×2048 candle matmul: a yardstick of the machine |
//! | `g_fwd_eval`                | G(z), batch-norm running statistics, no graph                  |
//! | `g_fwd_train`               | G(z), batch statistics, graph kept (no backward)               |
//! | `d_fwd_bwd`                 | mean D(x) on a real batch, backward to D's weights             |
//! | `train_step`                | [`Session::train_step`] of dcgan-64 on a fixed real batch       |
//! | `wgan_gp_critic_step`       | wgan-gp-64's layer-norm critic: G(z) without graph, WGAN D loss + 10 × gradient penalty (a double backward), backward, Adam step |
//! | `sngan64_train_step`        | [`Session::train_step`] of the sngan-64 preset (ResNet, SN in D, hinge, 5 D steps with a real batch each, then G): images/s counts the 5·N real images |
//! | `sagan64_train_step`        | the same for sagan-64 (SN in G and D, attention at 32x32, one D step) |
//! | `stylegan2_64_step_plain`   | [`Session::train_step`] of stylegan2-64 without its lazy regularisers |
//! | `stylegan2_64_step_r1`, `_pl` | the same with R1 on D, or path length on G, every step: the amortised step is plain + (r1 − plain)/16 + (pl − plain)/4 |
//! | `conv2d_fwd[_bwd]`          | [`ops::conv2d`] of x (N,128,32,32) by w (256,128,4,4), stride 2, padding 1 (`_bwd`: backward to x and w from a gradient of ones) |
//! | `conv_transpose2d_fwd[_bwd]`| [`ops::conv_transpose2d`] of x (N,256,16,16) by w (256,128,4,4), stride 2, padding 1 |
//! | `candle_…`                  | the same four with candle's `Tensor::conv2d` / `conv_transpose2d` |
//! | `layer_g1_fwd_bwd` … `layer_d5_fwd_bwd` | each of dcgan-64's ten convolutions (G's transposed ones, then D's; shapes in `DCGAN64_LAYERS`) on a random input, forward and backward to input and weight |
//! | `layer_r64a_fwd_bwd` … `layer_r4_fwd_bwd` | the same for a 3x3 convolution of the ResNet families at each resolution (`RESNET64_LAYERS`) |
//! | `attention_fwd_bwd`         | sagan-64's self-attention block in G (64 channels at 32x32, keys and values max-pooled, γ = 0.5, no spectral norm), forward and backward to its input and weights |
//! | `inception`                 | FID Inception-v3 pool3 features of N random 64×64 images, resize to 299 included (skipped with a note when the weights are missing, unless asked for by name) |
//!
//! N is the batch size (64 by default). The peak resident set (VmHWM) is read right after
//! `train_step`, so it covers everything measured before it, but not the critic step or the
//! layer operations.
//!
//! The double backward needs second-order gradients ([`crate::enable_second_order_gradients`]
//! or [`crate::init`] at the start of the program); [`run_bench`] refuses to run without them,
//! as the critic step would silently skip the penalty's gradient.

use crate::config::RunConfig;
use crate::loss::AdversarialLoss;
use crate::nn::Mode;
use crate::ops;
use crate::penalty::penalty;
use crate::rng::Rng;
use crate::train::trainer::Session;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use std::time::Instant;

/// Every measurement, in the order they are taken.
pub const BENCH_NAMES: &[&str] = &[
    "matmul_2048",
    "g_fwd_eval",
    "g_fwd_train",
    "d_fwd_bwd",
    "train_step",
    "sngan64_train_step",
    "sagan64_train_step",
    "stylegan2_64_step_plain",
    "stylegan2_64_step_r1",
    "stylegan2_64_step_pl",
    "wgan_gp_critic_step",
    "conv2d_fwd",
    "conv2d_fwd_bwd",
    "candle_conv2d_fwd",
    "candle_conv2d_fwd_bwd",
    "conv_transpose2d_fwd",
    "conv_transpose2d_fwd_bwd",
    "candle_conv_transpose2d_fwd",
    "candle_conv_transpose2d_fwd_bwd",
    "layer_g1_fwd_bwd",
    "layer_g2_fwd_bwd",
    "layer_g3_fwd_bwd",
    "layer_g4_fwd_bwd",
    "layer_g5_fwd_bwd",
    "layer_d1_fwd_bwd",
    "layer_d2_fwd_bwd",
    "layer_d3_fwd_bwd",
    "layer_d4_fwd_bwd",
    "layer_d5_fwd_bwd",
    "layer_r64a_fwd_bwd",
    "layer_r64b_fwd_bwd",
    "layer_r32_fwd_bwd",
    "layer_r16_fwd_bwd",
    "layer_r8_fwd_bwd",
    "layer_r4_fwd_bwd",
    "attention_fwd_bwd",
    "inception",
];

/// One convolution of dcgan-64 (ngf = ndf = 64, nz = 100) for the `layer_*` measurements.
struct Layer {
    name: &'static str,
    /// A transposed convolution (G) rather than a convolution (D).
    transposed: bool,
    c_in: usize,
    c_out: usize,
    /// Height and width of the input.
    side: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

const fn layer(
    name: &'static str,
    transposed: bool,
    c_in: usize,
    c_out: usize,
    side: usize,
    stride: usize,
    padding: usize,
) -> Layer {
    Layer { name, transposed, c_in, c_out, side, kernel: 4, stride, padding }
}

/// G's five transposed convolutions, then D's five convolutions, in forward order.
const DCGAN64_LAYERS: [Layer; 10] = [
    layer("layer_g1", true, 100, 512, 1, 1, 0),
    layer("layer_g2", true, 512, 256, 4, 2, 1),
    layer("layer_g3", true, 256, 128, 8, 2, 1),
    layer("layer_g4", true, 128, 64, 16, 2, 1),
    layer("layer_g5", true, 64, 3, 32, 2, 1),
    layer("layer_d1", false, 3, 64, 64, 2, 1),
    layer("layer_d2", false, 64, 128, 32, 2, 1),
    layer("layer_d3", false, 128, 256, 16, 2, 1),
    layer("layer_d4", false, 256, 512, 8, 2, 1),
    layer("layer_d5", false, 512, 1, 4, 1, 0),
];

/// The 3x3, stride 1, padding 1 convolutions of the ResNet families (sngan-64, sagan-64; ngf =
/// ndf = 32), one per resolution (both of the 64x64 ones: G's last block widens 64 → 32).
/// They are the bulk of those steps' GEMM time.
const RESNET64_LAYERS: [Layer; 6] = [
    resnet_layer("layer_r64a", 64, 32, 64),
    resnet_layer("layer_r64b", 32, 32, 64),
    resnet_layer("layer_r32", 64, 64, 32),
    resnet_layer("layer_r16", 128, 128, 16),
    resnet_layer("layer_r8", 256, 256, 8),
    resnet_layer("layer_r4", 512, 512, 4),
];

const fn resnet_layer(name: &'static str, c_in: usize, c_out: usize, side: usize) -> Layer {
    Layer { name, transposed: false, c_in, c_out, side, kernel: 3, stride: 1, padding: 1 }
}

/// The prefix of candle's reference measurements of the layer operations.
pub const CANDLE_PREFIX: &str = "candle_";

/// Side of the square matrices of the `matmul_2048` yardstick.
const MATMUL_SIZE: usize = 2048;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Batch size of every measurement (the N of the layer shapes too).
    pub batch_size: usize,
    /// Timed calls per measurement; the median is reported.
    pub iters: usize,
    /// Untimed calls before them.
    pub warmup: usize,
    /// Take only the measurements whose name starts with one of these (all when empty),
    /// e.g. `conv2d` (its two facegan measurements), `candle` or `train_step`.
    pub only: Vec<String>,
    /// Print each measurement to stderr as it is taken.
    pub progress: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { batch_size: 64, iters: 5, warmup: 1, only: Vec::new(), progress: false }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchEntry {
    pub name: String,
    /// Median wall time of one call, in milliseconds.
    pub ms: f64,
    /// Median CPU time of the process (all threads) during one call, in milliseconds;
    /// `None` where `/proc/self/stat` cannot be read.
    pub cpu_ms: Option<f64>,
    /// Images per second (batch size / median wall time), for the network measurements.
    pub images_per_s: Option<f64>,
}

/// All measurements, as written by `facegan bench --json` (and, with `implementation`
/// "pytorch", by `scripts/bench_torch.py`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub implementation: String,
    pub preset: String,
    pub device: String,
    /// Threads of the rayon pool that the convolutions and candle's matmul use.
    pub threads: usize,
    pub batch_size: usize,
    pub iters: usize,
    pub warmup: usize,
    pub entries: Vec<BenchEntry>,
    /// Peak resident set size (VmHWM) in MiB, read after `peak_rss_after`; `None` where
    /// `/proc/self/status` cannot be read.
    pub peak_rss_mib: Option<f64>,
    /// The measurement after which the peak resident set was read: `train_step`, or `end`
    /// (after the last one) when `train_step` was not taken.
    pub peak_rss_after: String,
}

impl BenchReport {
    pub fn get(&self, name: &str) -> Option<&BenchEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The measurements as a text table; candle's layer timings sit beside ours, with the
    /// ratio candle / facegan (above 1: ours is faster).
    pub fn table(&self) -> String {
        let mut out = format!(
            "facegan bench: {} on the {}, batch {}, median of {} calls after {} warm-up, {} threads\n",
            self.preset, self.device, self.batch_size, self.iters, self.warmup, self.threads
        );
        out += &format!(
            "{:<28} {:>10} {:>10} {:>10} {:>11} {:>12}\n",
            "measurement", "wall ms", "cpu ms", "images/s", "candle ms", "candle/ours"
        );
        let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        for e in &self.entries {
            if let Some(ours) = e.name.strip_prefix(CANDLE_PREFIX) {
                if self.get(ours).is_some() {
                    continue; // shown in the row of our measurement
                }
            }
            let candle = self.get(&format!("{CANDLE_PREFIX}{}", e.name));
            out += &format!(
                "{:<28} {:>10.1} {:>10} {:>10} {:>11} {:>12}\n",
                e.name,
                e.ms,
                opt(e.cpu_ms, 1),
                opt(e.images_per_s, 1),
                opt(candle.map(|c| c.ms), 1),
                candle.map_or("-".to_string(), |c| format!("{:.2}x", c.ms / e.ms)),
            );
        }
        out += &format!("peak RSS after {}: {} MiB\n", self.peak_rss_after, opt(self.peak_rss_mib, 0));
        out
    }
}
/// CPU time used so far by this process, all threads, in ms (Linux only; 10 ms resolution).
/// CPU time used so far by the live threads of this process, in ms (Linux only).
fn cpu_time_ms() -> Option<f64> {
    // utime + stime of the whole process (threads that have exited included, so the count
    // never goes down), in clock ticks of 1/100 s on Linux.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 * 10.0)
}

/// The peak resident set size of this process (VmHWM), in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Takes the selected measurements and collects them.
struct Bencher<'a> {
    opts: &'a BenchOptions,
    entries: Vec<BenchEntry>,
}

impl Bencher<'_> {
    fn selected(&self, name: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|p| name.starts_with(p.as_str()))
    }

    fn any_selected(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.selected(n))
    }

    /// Times `f` under `name` if selected; `images` is the batch size for images/s.
    fn run(&mut self, name: &str, images: Option<usize>, mut f: impl FnMut() -> Result<()>) -> Result<()> {
        debug_assert!(BENCH_NAMES.contains(&name), "{name} missing from BENCH_NAMES");
        if !self.selected(name) {
            return Ok(());
        }
        for _ in 0..self.opts.warmup {
            f().with_context(|| format!("bench {name}"))?;
        }
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..self.opts.iters {
            let cpu = cpu_time_ms();
            let start = Instant::now();
            f().with_context(|| format!("bench {name}"))?;
            walls.push(start.elapsed().as_secs_f64() * 1e3);
            cpus.extend(cpu.zip(cpu_time_ms()).map(|(a, b)| b - a));
        }
        let ms = median(walls);
        let cpu_ms = (cpus.len() == self.opts.iters).then(|| median(cpus));
        let images_per_s = images.map(|n| n as f64 / (ms / 1e3));
        if self.opts.progress {
            eprintln!("{name:<32} {ms:10.1} ms");
        }
        self.entries.push(BenchEntry { name: name.to_string(), ms, cpu_ms, images_per_s });
        Ok(())
    }
}

type LayerOp = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// Takes the measurements selected by `opts` (see the module documentation).
pub fn run_bench(opts: &BenchOptions) -> Result<BenchReport> {
    ensure!(opts.batch_size >= 1, "the batch size must be at least 1");
    ensure!(opts.iters >= 1, "the number of timed iterations must be at least 1");
    for p in &opts.only {
        if !BENCH_NAMES.iter().any(|n| n.starts_with(p.as_str())) {
            bail!("'{p}' starts the name of no measurement; the measurements are {}", BENCH_NAMES.join(", "));
        }
    }
    if std::env::var("CANDLE_GRAD_DO_NOT_DETACH").as_deref() != Ok("1") {
        bail!("second-order gradients are off: call facegan::init() (or set CANDLE_GRAD_DO_NOT_DETACH=1) before any tensor work");
    }
    let n = opts.batch_size;
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let mut b = Bencher { opts, entries: Vec::new() };

    if b.selected("matmul_2048") {
        let a = rng.normal_tensor((MATMUL_SIZE, MATMUL_SIZE), 0.0, 1.0, &dev)?;
        b.run("matmul_2048", None, || Ok(a.matmul(&a).map(drop)?))?;
    }

    let mut cfg = RunConfig::preset("dcgan-64")?;
    cfg.train.batch_size = n;
    let size = cfg.model.image_size;
    let mut peak_rss_after = "end";
    let mut peak = None;
    if b.any_selected(&["g_fwd_eval", "g_fwd_train", "d_fwd_bwd", "train_step"]) {
        let mut s = Session::new(&cfg, &dev)?;
        let z = s.g.sample_latent(n, &mut rng, &dev)?;
        let real = rng.uniform_tensor((n, 3, size, size), -1.0, 1.0, &dev)?;
        b.run("g_fwd_eval", Some(n), || Ok(s.g.forward(&z, Mode::EVAL).map(drop)?))?;
        b.run("g_fwd_train", Some(n), || Ok(s.g.forward(&z, Mode::TRAIN).map(drop)?))?;
        b.run("d_fwd_bwd", Some(n), || Ok(s.d.forward(&real, None, Mode::TRAIN)?.mean_all()?.backward().map(drop)?))?;
        if b.selected("train_step") {
            b.run("train_step", Some(n), || s.train_step(std::slice::from_ref(&real)).map(drop))?;
            peak_rss_after = "train_step";
            peak = peak_rss_mib();
        }
    }

    for (name, preset) in [("sngan64_train_step", "sngan-64"), ("sagan64_train_step", "sagan-64")] {
        if !b.selected(name) {
            continue;
        }
        let mut cfg = RunConfig::preset(preset)?;
        cfg.train.batch_size = n;
        let mut s = Session::new(&cfg, &dev)?;
        let nc = cfg.train.n_critic as usize;
        let reals = (0..nc)
            .map(|_| rng.uniform_tensor((n, 3, size, size), -1.0, 1.0, &dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        b.run(name, Some(n * nc), || s.train_step(&reals).map(drop))?;
    }

    for (name, keep) in
        [("stylegan2_64_step_plain", ""), ("stylegan2_64_step_r1", "r1"), ("stylegan2_64_step_pl", "path-length")]
    {
        if !b.selected(name) {
            continue;
        }
        let mut cfg = RunConfig::preset("stylegan2-64")?;
        cfg.train.batch_size = n;
        // Only the regulariser measured, every step, at the preset's weight times its interval.
        cfg.train.penalties.retain(|p| p.kind == keep);
        for p in &mut cfg.train.penalties {
            (p.weight, p.every) = (p.weight * p.every as f64, 1);
        }
        let mut s = Session::new(&cfg, &dev)?;
        let real = rng.uniform_tensor((n, 3, size, size), -1.0, 1.0, &dev)?;
        b.run(name, Some(n), || s.train_step(std::slice::from_ref(&real)).map(drop))?;
    }

    if b.selected("wgan_gp_critic_step") {
        let mut cfg = RunConfig::preset("wgan-gp-64")?;
        cfg.train.batch_size = n;
        let loss = AdversarialLoss::parse(&cfg.train.loss)?;
        let gp = cfg.train.penalties.first().context("wgan-gp-64 has a penalty")?;
        let (kind, weight) = (gp.kind(), gp.weight);
        let mut s = Session::new(&cfg, &dev)?;
        let z = s.g.sample_latent(n, &mut rng, &dev)?;
        let real = rng.uniform_tensor((n, 3, size, size), -1.0, 1.0, &dev)?;
        let mut gp_rng = Rng::new(1);
        b.run("wgan_gp_critic_step", Some(n), || {
            // G without a graph (its weights detached, no input variable): torch.no_grad().
            let fake = s.g.forward(&z, Mode::FROZEN)?;
            let d = &s.d;
            let critic = |x: &Tensor| d.forward(x, None, Mode::TRAIN);
            let adv = loss.d_loss(&critic(&real)?, &critic(&fake)?)?;
            let total = (adv + (penalty(kind, &critic, &real, &fake, &mut gp_rng)? * weight)?)?;
            let grads = total.backward()?;
            s.opt_d.step(s.d.params(), &grads)?;
            Ok(())
        })?;
    }

    let layer_names: Vec<&str> = BENCH_NAMES.iter().copied().filter(|n| n.contains("conv")).collect();
    if b.any_selected(&layer_names) {
        let x = rng.normal_tensor((n, 128, 32, 32), 0.0, 1.0, &dev)?;
        let xt = rng.normal_tensor((n, 256, 16, 16), 0.0, 1.0, &dev)?;
        let w = rng.normal_tensor((256, 128, 4, 4), 0.0, 0.05, &dev)?;
        let layer_ops: [(&str, &Tensor, LayerOp); 4] = [
            ("conv2d", &x, |x, w| ops::conv2d(x, w, 2, 1)),
            ("candle_conv2d", &x, |x, w| x.conv2d(w, 1, 2, 1, 1)),
            ("conv_transpose2d", &xt, |x, w| ops::conv_transpose2d(x, w, 2, 1, 0)),
            ("candle_conv_transpose2d", &xt, |x, w| x.conv_transpose2d(w, 1, 0, 2, 1)),
        ];
        for (name, x, op) in layer_ops {
            b.run(&format!("{name}_fwd"), None, || Ok(op(x, &w).map(drop)?))?;
            let bwd = format!("{name}_fwd_bwd");
            if b.selected(&bwd) {
                let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(&w)?);
                b.run(&bwd, None, || {
                    let grads = op(&xv, &wv)?.backward()?;
                    ensure!(grads.get(&xv).is_some() && grads.get(&wv).is_some(), "{name}: a gradient is missing");
                    Ok(())
                })?;
            }
        }
    }

    for l in DCGAN64_LAYERS.iter().chain(&RESNET64_LAYERS) {
        let name = format!("{}_fwd_bwd", l.name);
        if !b.selected(&name) {
            continue;
        }
        let w_shape =
            if l.transposed { (l.c_in, l.c_out, l.kernel, l.kernel) } else { (l.c_out, l.c_in, l.kernel, l.kernel) };
        let x = Var::from_tensor(&rng.normal_tensor((n, l.c_in, l.side, l.side), 0.0, 1.0, &dev)?)?;
        let w = Var::from_tensor(&rng.normal_tensor(w_shape, 0.0, 0.05, &dev)?)?;
        b.run(&name, None, || {
            let y = if l.transposed {
                ops::conv_transpose2d(&x, &w, l.stride, l.padding, 0)?
            } else {
                ops::conv2d(&x, &w, l.stride, l.padding)?
            };
            let grads = y.backward()?;
            ensure!(grads.get(&x).is_some() && grads.get(&w).is_some(), "{}: a gradient is missing", l.name);
            Ok(())
        })?;
    }

    if b.selected("attention_fwd_bwd") {
        let mut p = crate::nn::Params::new(&dev);
        let attn = crate::nn::attention::SelfAttention::new(&mut p, &mut rng, "attn", 64, false)?;
        attn.gamma.set(&Tensor::new(&[0.5f32], &dev)?)?;
        let x = Var::from_tensor(&rng.normal_tensor((n, 64, 32, 32), 0.0, 1.0, &dev)?)?;
        b.run("attention_fwd_bwd", None, || {
            let grads = attn.forward(&x, Mode::TRAIN)?.backward()?;
            ensure!(grads.get(&x).is_some(), "attention: no input gradient");
            for (name, v) in p.trainable() {
                ensure!(grads.get(v.as_tensor()).is_some(), "attention: no gradient for {name}");
            }
            Ok(())
        })?;
    }

    if b.selected("inception") {
        match crate::metrics::inception::Inception::load_default(&dev) {
            Ok(net) => {
                let pixels: Vec<u8> = (0..n * 64 * 64 * 3).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
                let images: Vec<&[u8]> = pixels.chunks(64 * 64 * 3).collect();
                b.run("inception", Some(n), || net.features_u8(&images, 64).map(drop))?;
            }
            Err(e) if opts.only.is_empty() => eprintln!("inception skipped: {e:#}"),
            Err(e) => return Err(e),
        }
    }

    if peak.is_none() {
        peak = peak_rss_mib();
    }
    Ok(BenchReport {
        implementation: "facegan".into(),
        preset: cfg.preset.clone(),
        device: "cpu".into(),
        threads: rayon::current_num_threads(),
        batch_size: n,
        iters: opts.iters,
        warmup: opts.warmup,
        entries: b.entries,
        peak_rss_mib: peak,
        peak_rss_after: peak_rss_after.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measurement_runs_and_is_a_positive_finite_number() {
        crate::enable_second_order_gradients();
        let opts = BenchOptions { batch_size: 2, iters: 1, warmup: 0, ..Default::default() };
        let r = run_bench(&opts).unwrap();
        let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
        // Without the Inception weights that measurement is skipped with a note.
        let have_weights = crate::metrics::inception::find_weights().is_ok();
        let expected: Vec<&str> = BENCH_NAMES.iter().copied().filter(|n| have_weights || *n != "inception").collect();
        assert_eq!(names, expected);
        let positive = |v: f64| v.is_finite() && v > 0.0;
        for e in &r.entries {
            assert!(positive(e.ms), "{e:?}");
            assert!(e.cpu_ms.is_none_or(|v| v.is_finite() && v >= 0.0), "{e:?}");
            let layer = ["layer_", "attention", "matmul"].iter().any(|p| e.name.starts_with(p));
            let network = !e.name.contains("conv") && !layer;
            assert_eq!(e.images_per_s.is_some(), network, "{e:?}");
            assert!(e.images_per_s.is_none_or(positive), "{e:?}");
        }
        assert!(r.peak_rss_mib.is_some_and(positive) && r.peak_rss_after == "train_step", "{r:?}");
        let table = r.table();
        assert!(table.contains("conv_transpose2d_fwd_bwd") && table.contains("x\n"), "{table}");
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["entries"].as_array().unwrap().len(), expected.len());
    }

    /// scripts/bench_torch.py must take the same measurements on the same layer shapes, or
    /// `bench_compare.sh` compares different things.
    #[test]
    fn the_pytorch_twin_has_the_same_names_and_layers() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch.py");
        let py = std::fs::read_to_string(path).unwrap();
        let block = |start: &str| {
            let from = py.find(start).unwrap_or_else(|| panic!("{start} missing from {path}"));
            let len = py[from..].find("\n]").unwrap();
            py[from + start.len()..from + len].to_string()
        };
        let quoted: Vec<String> = block("BENCH_NAMES = [").split('"').skip(1).step_by(2).map(str::to_string).collect();
        assert_eq!(quoted, BENCH_NAMES);
        // A table's tuples, one per line, without spaces.
        let tuples = |start: &str| -> Vec<String> {
            block(start)
                .lines()
                .filter(|l| l.trim_start().starts_with('('))
                .map(|l| l.trim().trim_end_matches(',').replace(' ', ""))
                .collect()
        };
        let dcgan: Vec<String> = DCGAN64_LAYERS
            .iter()
            .map(|l| {
                assert_eq!(l.kernel, 4, "the Python table assumes 4x4 kernels");
                let t = if l.transposed { "True" } else { "False" };
                format!("(\"{}\",{t},{},{},{},{},{})", l.name, l.c_in, l.c_out, l.side, l.stride, l.padding)
            })
            .collect();
        assert_eq!(tuples("DCGAN64_LAYERS = ["), dcgan);
        let resnet: Vec<String> = RESNET64_LAYERS
            .iter()
            .map(|l| {
                let assumed = (l.kernel, l.stride, l.padding, l.transposed);
                assert_eq!(assumed, (3, 1, 1, false), "the Python table assumes these");
                format!("(\"{}\",{},{},{})", l.name, l.c_in, l.c_out, l.side)
            })
            .collect();
        assert_eq!(tuples("RESNET64_LAYERS = ["), resnet);
    }

    #[test]
    fn only_selects_by_prefix_and_rejects_unknown_names() {
        crate::enable_second_order_gradients();
        let opts = BenchOptions { batch_size: 1, iters: 1, warmup: 0, only: vec!["conv2d".into()], progress: false };
        let r = run_bench(&opts).unwrap();
        let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["conv2d_fwd", "conv2d_fwd_bwd"]);
        assert_eq!(r.peak_rss_after, "end");
        let e = run_bench(&BenchOptions { only: vec!["conv3d".into()], ..opts }).unwrap_err().to_string();
        assert!(e.contains("conv3d") && e.contains("train_step"), "{e}");
    }
}
