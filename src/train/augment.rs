//! Differentiable augmentation of D's inputs, so that D does not memorise a small dataset:
//! DiffAugment (Zhao et al. 2020: colour, translation, cutout, always applied) and ADA
//! (Karras et al. 2020: a pipeline of geometric and colour transforms, each applied with
//! probability p, p adjusted from the overfitting heuristic r_t = E[sign(D(real))], D's
//! output read as realness).
//!
//! Every D input is augmented (real and fake, in D's and in G's passes), and the
//! gradient penalties differentiate through the augmentation (R1 is taken with respect
//! to the un-augmented reals). An augmentation is drawn as a [`Plan`] (its random
//! parameters, fixed) and applied by [`Plan::apply`], a pure function of the images made
//! of differentiable candle ops (channel matmuls, a row gather with bilinear weights, a
//! mask), so gradients of any order pass through it. The parameters are drawn on the host
//! from the run's RNG, so a resumed run repeats them.
//!
//! Left out against the papers' code: ADA's anti-aliasing (it upsamples 2x with a wavelet
//! filter before the geometric warp; here the warp samples bilinearly at the image's own
//! resolution, with reflection at the borders) and its filter, noise and cutout groups.

use crate::config::TrainConfig;
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::f64::consts::PI;

/// Valid values of `train.augment`.
pub const AUGMENT_NAMES: &str = "none, diffaugment, ada, fixed";
/// DiffAugment's policies (`train.augment_pipe` with `diffaugment`).
pub const DIFFAUGMENT_POLICIES: [&str; 3] = ["color", "translation", "cutout"];
/// D steps between two adjustments of ADA's p (StyleGAN2-ADA's `ada_interval`).
pub const ADA_INTERVAL: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    None,
    DiffAugment,
    /// ADA's pipeline with p adjusted towards `ada_target`.
    Ada,
    /// ADA's pipeline at a constant p.
    Fixed,
}

/// Which transforms a plan draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pipe {
    /// DiffAugment: brightness, saturation, contrast.
    pub color: bool,
    /// DiffAugment: integer translation by up to 1/8 of the size, zero padding.
    pub translation: bool,
    /// DiffAugment: a zeroed square of half the size.
    pub cutout: bool,
    /// ADA `b`: x-flip, 90° rotations, integer translation.
    pub blit: bool,
    /// ADA `g`: isotropic scaling, rotation, anisotropic scaling, fractional translation.
    pub geom: bool,
    /// ADA `c`: brightness, contrast, luma flip, hue rotation, saturation.
    pub ada_color: bool,
}

impl Pipe {
    /// Parses `train.augment_pipe` for `kind` ("" means the papers' defaults).
    pub fn parse(kind: Kind, s: &str) -> Result<Self> {
        let mut p = Pipe::default();
        match kind {
            Kind::None => {}
            Kind::DiffAugment => {
                let s = if s.is_empty() { "color,translation,cutout" } else { s };
                for name in s.split(',').map(str::trim) {
                    match name {
                        "color" | "colour" => p.color = true,
                        "translation" => p.translation = true,
                        "cutout" => p.cutout = true,
                        other => bail!(
                            "train.augment_pipe: DiffAugment has no policy '{other}'; valid: {}",
                            DIFFAUGMENT_POLICIES.join(", ")
                        ),
                    }
                }
            }
            Kind::Ada | Kind::Fixed => {
                let s = if s.is_empty() { "bgc" } else { s };
                for c in s.chars() {
                    match c {
                        'b' => p.blit = true,
                        'g' => p.geom = true,
                        'c' => p.ada_color = true,
                        other => bail!(
                            "train.augment_pipe: ADA's pipeline has no group '{other}'; valid: b (x-flip, 90° rotations, integer translation), g (scale, rotation, anisotropy, fractional translation), c (brightness, contrast, luma flip, hue, saturation), e.g. \"bgc\""
                        ),
                    }
                }
            }
        }
        Ok(p)
    }
}

/// The augmentation of a run and, for ADA, its adaptive p.
#[derive(Clone, Debug)]
pub struct Augment {
    pub kind: Kind,
    pub pipe: Pipe,
    /// Probability of each ADA transform (unused by DiffAugment).
    pub p: f64,
    target: f64,
    kimg: f64,
    batch: usize,
    /// Sum of E[sign(D(real))] over the D steps since the last adjustment, and their count.
    sign_sum: f64,
    sign_steps: u64,
    /// r_t at the last adjustment.
    pub last_rt: Option<f64>,
}

impl Augment {
    pub fn parse_kind(s: &str) -> Result<Kind> {
        Ok(match s {
            "none" | "" => Kind::None,
            "diffaugment" => Kind::DiffAugment,
            "ada" => Kind::Ada,
            "fixed" => Kind::Fixed,
            other => bail!("train.augment '{other}' is unknown; valid: {AUGMENT_NAMES}"),
        })
    }

    /// Checks the settings (for `RunConfig::validate`).
    pub fn validate(t: &TrainConfig) -> Result<()> {
        Self::from_config(t).map(|_| ())
    }

    pub fn from_config(t: &TrainConfig) -> Result<Self> {
        let kind = Self::parse_kind(&t.augment)?;
        let pipe = Pipe::parse(kind, &t.augment_pipe)?;
        if kind == Kind::None && !t.augment_pipe.is_empty() {
            bail!("train.augment_pipe '{}' needs an augmentation (train.augment: {AUGMENT_NAMES})", t.augment_pipe);
        }
        if !(0.0..=1.0).contains(&t.augment_p) {
            bail!("train.augment_p {} must be in [0, 1]", t.augment_p);
        }
        if !(0.0..=1.0).contains(&t.ada_target) {
            bail!("train.ada_target {} must be in [0, 1]", t.ada_target);
        }
        if !(t.ada_kimg > 0.0 && t.ada_kimg.is_finite()) {
            bail!("train.ada_kimg {} must be a positive number", t.ada_kimg);
        }
        Ok(Self {
            kind,
            pipe,
            p: t.augment_p,
            target: t.ada_target,
            kimg: t.ada_kimg,
            batch: t.batch_size,
            sign_sum: 0.0,
            sign_steps: 0,
            last_rt: None,
        })
    }

    pub fn is_on(&self) -> bool {
        self.kind != Kind::None
    }

    /// Draws the augmentation of a batch shaped like `like` (N, C, H, W).
    pub fn plan(&self, like: &Tensor, rng: &mut Rng) -> Result<Plan> {
        let (n, c, h, w) = like.dims4()?;
        let (dtype, dev) = (like.dtype(), like.device());
        let mut ops = Vec::new();
        match self.kind {
            Kind::None => {}
            Kind::DiffAugment => {
                if self.pipe.color {
                    let mut params = Vec::with_capacity(n);
                    for _ in 0..n {
                        let brightness = rng.uniform() - 0.5;
                        let saturation = rng.uniform() * 2.0;
                        let contrast = rng.uniform() + 0.5;
                        params.push((brightness, saturation, contrast));
                    }
                    ops.extend(diffaugment_color(&params, c, dtype, dev)?);
                }
                if self.pipe.translation {
                    let (sy, sx) = ((h as f64 * 0.125 + 0.5) as i64, (w as f64 * 0.125 + 0.5) as i64);
                    let shifts: Vec<(i64, i64)> = (0..n)
                        .map(|_| {
                            let dx = rng.below(2 * sx as usize + 1) as i64 - sx;
                            let dy = rng.below(2 * sy as usize + 1) as i64 - sy;
                            (dx, dy)
                        })
                        .collect();
                    ops.push(translation(&shifts, h, w, dtype, dev)?);
                }
                if self.pipe.cutout {
                    let (ch, cw) = ((h as f64 * 0.5 + 0.5) as usize, (w as f64 * 0.5 + 0.5) as usize);
                    let boxes: Vec<(usize, usize)> = (0..n)
                        .map(|_| {
                            let cy = rng.below(h + 1 - ch % 2);
                            let cx = rng.below(w + 1 - cw % 2);
                            (cy, cx)
                        })
                        .collect();
                    ops.push(cutout(&boxes, (ch, cw), h, w, dtype, dev)?);
                }
            }
            Kind::Ada | Kind::Fixed => {
                if self.p <= 0.0 {
                    return Ok(Plan { ops });
                }
                if self.pipe.blit || self.pipe.geom {
                    let mats: Vec<Mat3> = (0..n).map(|_| ada_geometry(self.pipe, self.p, h, w, rng)).collect();
                    if mats.iter().any(|m| *m != IDENTITY3) {
                        ops.push(warp(&mats, h, w, dtype, dev)?);
                    }
                }
                if self.pipe.ada_color {
                    if c != 3 {
                        bail!("ADA's colour transforms need RGB images; these have {c} channels");
                    }
                    let mats: Vec<Mat4> = (0..n).map(|_| ada_color(self.p, rng)).collect();
                    if mats.iter().any(|m| *m != IDENTITY4) {
                        ops.push(color_matrix(&mats, dtype, dev)?);
                    }
                }
            }
        }
        Ok(Plan { ops })
    }

    /// ADA: takes D's outputs on a batch of (augmented) reals as signed realness
    /// ([`crate::loss::AdversarialLoss::realness`]: D's logits for the cross-entropy losses);
    /// every [`ADA_INTERVAL`] D steps, moves p by sign(r_t − target) · batch · interval /
    /// (ada_kimg · 1000).
    pub fn observe(&mut self, realness: &Tensor) -> Result<()> {
        if self.kind != Kind::Ada {
            return Ok(());
        }
        let v = realness.detach().flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let signs = v
            .iter()
            .map(|x| {
                if *x > 0.0 {
                    1.0
                } else if *x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            })
            .sum::<f64>();
        self.sign_sum += signs / v.len().max(1) as f64;
        self.sign_steps += 1;
        if self.sign_steps >= ADA_INTERVAL {
            let rt = self.sign_sum / self.sign_steps as f64;
            let step = (self.batch as u64 * self.sign_steps) as f64 / (self.kimg * 1000.0);
            let direction = if rt > self.target {
                1.0
            } else if rt < self.target {
                -1.0
            } else {
                0.0
            };
            self.p = (self.p + direction * step).clamp(0.0, 1.0);
            self.last_rt = Some(rt);
            self.sign_sum = 0.0;
            self.sign_steps = 0;
        }
        Ok(())
    }

    /// The state a checkpoint keeps (bit-exact), by metadata key.
    pub fn state(&self) -> Vec<(String, String)> {
        match self.kind {
            Kind::Ada | Kind::Fixed => vec![
                ("augment_p".into(), format!("{:016x}", self.p.to_bits())),
                ("ada_sign_sum".into(), format!("{:016x}", self.sign_sum.to_bits())),
                ("ada_sign_steps".into(), self.sign_steps.to_string()),
            ],
            _ => Vec::new(),
        }
    }

    /// Restores [`Self::state`]; `get` reads a checkpoint's metadata. A `fixed` run keeps
    /// its configured p (a resume may change it with `--override`).
    pub fn restore(&mut self, get: impl Fn(&str) -> Option<String>, src: &str) -> Result<()> {
        let bits = |k: &str| -> Result<Option<f64>> {
            match get(k) {
                None => Ok(None),
                Some(s) => match u64::from_str_radix(&s, 16) {
                    Ok(b) => Ok(Some(f64::from_bits(b))),
                    Err(_) => bail!("{src}: {k} '{s}' is malformed"),
                },
            }
        };
        if self.kind == Kind::Ada {
            if let Some(p) = bits("augment_p")? {
                self.p = p;
            }
            self.sign_sum = bits("ada_sign_sum")?.unwrap_or(0.0);
            self.sign_steps = match get("ada_sign_steps") {
                None => 0,
                Some(s) => s.parse().map_err(|_| anyhow::anyhow!("{src}: ada_sign_steps '{s}' is malformed"))?,
            };
        }
        Ok(())
    }
}

/// An augmentation with its random parameters drawn: applying it is a deterministic,
/// differentiable function of the images.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    ops: Vec<Op>,
}

#[derive(Clone, Debug)]
enum Op {
    /// Per-sample channel map x ↦ M x + t: M (N, C, C), t (N, C, 1).
    Channels { m: Tensor, t: Tensor },
    /// Per-sample contrast about the sample's mean over all its pixels: f (N, 1, 1, 1).
    Contrast { f: Tensor },
    /// Output pixel = Σ_k w_k · input row idx_k, rows of the (N·H·W, C) pixel table:
    /// idx (N·H·W·taps,) u32, w (N, H·W, taps, 1).
    Resample { idx: Tensor, w: Tensor, taps: usize },
    /// Multiplies by a mask (N, 1, H, W).
    Mask { m: Tensor },
}

impl Plan {
    pub fn is_identity(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for op in &self.ops {
            let (n, c, h, w) = x.dims4()?;
            x = match op {
                Op::Channels { m, t } => {
                    m.matmul(&x.reshape((n, c, h * w))?)?.broadcast_add(t)?.reshape((n, c, h, w))?
                }
                Op::Contrast { f } => {
                    let mean = x.flatten_from(1)?.mean_keepdim(1)?.reshape((n, 1, 1, 1))?;
                    x.broadcast_sub(&mean)?.broadcast_mul(f)?.broadcast_add(&mean)?
                }
                Op::Resample { idx, w: weights, taps } => {
                    let table = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
                    let picked = table.index_select(idx, 0)?.reshape((n, h * w, *taps, c))?;
                    let out = picked.broadcast_mul(weights)?.sum(2)?;
                    out.reshape((n, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?
                }
                Op::Mask { m } => x.broadcast_mul(m)?,
            };
        }
        Ok(x)
    }
}

fn tensor(v: Vec<f64>, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)?)
}

/// DiffAugment's colour ops for per-sample (brightness, saturation, contrast): x + b, then
/// (x − mean_c) · s + mean_c (mean over channels), then (x − mean) · c + mean (mean over
/// the whole sample). The first two fold into one channel map.
fn diffaugment_color(params: &[(f64, f64, f64)], c: usize, dtype: DType, dev: &Device) -> Result<Vec<Op>> {
    let n = params.len();
    let (mut m, mut t, mut f) = (Vec::with_capacity(n * c * c), Vec::with_capacity(n * c), Vec::with_capacity(n));
    for &(b, s, ct) in params {
        for i in 0..c {
            for j in 0..c {
                m.push(if i == j { s } else { 0.0 } + (1.0 - s) / c as f64);
            }
            t.push(b);
        }
        f.push(ct);
    }
    Ok(vec![
        Op::Channels { m: tensor(m, &[n, c, c], dtype, dev)?, t: tensor(t, &[n, c, 1], dtype, dev)? },
        Op::Contrast { f: tensor(f, &[n, 1, 1, 1], dtype, dev)? },
    ])
}

/// DiffAugment's translation: output (y, x) = input (y + dy, x + dx), zero outside.
fn translation(shifts: &[(i64, i64)], h: usize, w: usize, dtype: DType, dev: &Device) -> Result<Op> {
    let n = shifts.len();
    let (mut idx, mut wt) = (Vec::with_capacity(n * h * w), Vec::with_capacity(n * h * w));
    for (b, &(dx, dy)) in shifts.iter().enumerate() {
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let (sy, sx) = (y + dy, x + dx);
                let inside = (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx);
                idx.push(if inside { (b * h * w) as u32 + (sy as usize * w + sx as usize) as u32 } else { 0 });
                wt.push(if inside { 1.0 } else { 0.0 });
            }
        }
    }
    Ok(Op::Resample {
        idx: Tensor::from_vec(idx, n * h * w, dev)?,
        w: tensor(wt, &[n, h * w, 1, 1], dtype, dev)?,
        taps: 1,
    })
}

/// DiffAugment's cutout: zeroes rows [cy − ch/2, cy − ch/2 + ch) × columns likewise.
fn cutout(
    centres: &[(usize, usize)],
    size: (usize, usize),
    h: usize,
    w: usize,
    dtype: DType,
    dev: &Device,
) -> Result<Op> {
    let n = centres.len();
    let mut m = vec![1.0; n * h * w];
    for (b, &(cy, cx)) in centres.iter().enumerate() {
        let (y0, x0) = (cy as i64 - (size.0 / 2) as i64, cx as i64 - (size.1 / 2) as i64);
        for y in y0.max(0)..(y0 + size.0 as i64).min(h as i64) {
            for x in x0.max(0)..(x0 + size.1 as i64).min(w as i64) {
                m[b * h * w + y as usize * w + x as usize] = 0.0;
            }
        }
    }
    Ok(Op::Mask { m: tensor(m, &[n, 1, h, w], dtype, dev)? })
}

type Mat3 = [[f64; 3]; 3];
type Mat4 = [[f64; 4]; 4];
const IDENTITY3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
const IDENTITY4: Mat4 = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

fn mul3(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

fn mul4(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut r = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            r[i][j] = (0..4).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

fn scale2(sx: f64, sy: f64) -> Mat3 {
    [[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]]
}

fn translate2(tx: f64, ty: f64) -> Mat3 {
    [[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]
}

fn rotate2(theta: f64) -> Mat3 {
    let (s, c) = theta.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// ADA's geometric transforms for one sample, each applied with probability p, as the
/// inverse map (output pixel → input pixel, in pixels about the image centre).
fn ada_geometry(pipe: Pipe, p: f64, h: usize, w: usize, rng: &mut Rng) -> Mat3 {
    let mut g = IDENTITY3;
    let gate = |rng: &mut Rng, prob: f64| rng.uniform() < prob;
    if pipe.blit {
        if gate(rng, p) {
            let i = rng.below(2) as f64;
            g = mul3(&g, &scale2(1.0 - 2.0 * i, 1.0));
        }
        if gate(rng, p) {
            let i = rng.below(4) as f64;
            g = mul3(&g, &rotate2(-PI / 2.0 * i));
        }
        if gate(rng, p) {
            let (tx, ty) = (rng.uniform() * 2.0 - 1.0, rng.uniform() * 2.0 - 1.0);
            g = mul3(&g, &translate2(-(tx * 0.125 * w as f64).round(), -(ty * 0.125 * h as f64).round()));
        }
    }
    if pipe.geom {
        // Rotation is drawn twice (around the anisotropic scaling), each with this
        // probability, so that some rotation happens with probability p.
        let p_rot = 1.0 - (1.0 - p.min(1.0)).max(0.0).sqrt();
        if gate(rng, p) {
            let s = 2f64.powf(rng.normal() * 0.2);
            g = mul3(&g, &scale2(1.0 / s, 1.0 / s));
        }
        if gate(rng, p_rot) {
            let theta = (rng.uniform() * 2.0 - 1.0) * PI;
            g = mul3(&g, &rotate2(theta));
        }
        if gate(rng, p) {
            let s = 2f64.powf(rng.normal() * 0.2);
            g = mul3(&g, &scale2(1.0 / s, s));
        }
        if gate(rng, p_rot) {
            let theta = (rng.uniform() * 2.0 - 1.0) * PI;
            g = mul3(&g, &rotate2(theta));
        }
        if gate(rng, p) {
            let (tx, ty) = (rng.normal() * 0.125, rng.normal() * 0.125);
            g = mul3(&g, &translate2(-tx * w as f64, -ty * h as f64));
        }
    }
    g
}

/// Mirrors index `i` into [0, n) (reflection without repeating the edge pixel).
fn reflect(i: i64, n: i64) -> i64 {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let i = i.rem_euclid(period);
    if i >= n {
        period - i
    } else {
        i
    }
}

/// Bilinear resampling through per-sample inverse maps, reflecting at the borders.
/// Coordinates within 1e-6 of an integer are snapped, so flips, 90° rotations and integer
/// translations are exact.
fn warp(mats: &[Mat3], h: usize, w: usize, dtype: DType, dev: &Device) -> Result<Op> {
    let n = mats.len();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut idx = Vec::with_capacity(n * h * w * 4);
    let mut wt = Vec::with_capacity(n * h * w * 4);
    let snap = |v: f64| if (v - v.round()).abs() < 1e-6 { v.round() } else { v };
    for (b, g) in mats.iter().enumerate() {
        let base = (b * h * w) as i64;
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f64 - cx, y as f64 - cy);
                let sx = snap(g[0][0] * u + g[0][1] * v + g[0][2] + cx);
                let sy = snap(g[1][0] * u + g[1][1] * v + g[1][2] + cy);
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                for (dy, dx, weight) in
                    [(0, 0, (1.0 - fx) * (1.0 - fy)), (0, 1, fx * (1.0 - fy)), (1, 0, (1.0 - fx) * fy), (1, 1, fx * fy)]
                {
                    let ry = reflect(y0 as i64 + dy, h as i64);
                    let rx = reflect(x0 as i64 + dx, w as i64);
                    idx.push((base + ry * w as i64 + rx) as u32);
                    wt.push(weight);
                }
            }
        }
    }
    Ok(Op::Resample {
        idx: Tensor::from_vec(idx, n * h * w * 4, dev)?,
        w: tensor(wt, &[n, h * w, 4, 1], dtype, dev)?,
        taps: 4,
    })
}

/// ADA's colour transforms for one sample, each applied with probability p, as a 4x4
/// matrix on homogeneous RGB.
fn ada_color(p: f64, rng: &mut Rng) -> Mat4 {
    let mut c = IDENTITY4;
    let v = [1.0 / 3f64.sqrt(), 1.0 / 3f64.sqrt(), 1.0 / 3f64.sqrt(), 0.0];
    let outer: Mat4 = std::array::from_fn(|i| std::array::from_fn(|j| v[i] * v[j]));
    let gate = |rng: &mut Rng| rng.uniform() < p;
    if gate(rng) {
        let b = rng.normal() * 0.2;
        let mut t = IDENTITY4;
        (0..3).for_each(|i| t[i][3] = b);
        c = mul4(&t, &c);
    }
    if gate(rng) {
        let s = 2f64.powf(rng.normal() * 0.5);
        let mut m = IDENTITY4;
        (0..3).for_each(|i| m[i][i] = s);
        c = mul4(&m, &c);
    }
    if gate(rng) {
        let i = rng.below(2) as f64;
        let m: Mat4 = std::array::from_fn(|r| std::array::from_fn(|k| IDENTITY4[r][k] - 2.0 * outer[r][k] * i));
        c = mul4(&m, &c);
    }
    if gate(rng) {
        let theta = (rng.uniform() * 2.0 - 1.0) * PI;
        c = mul4(&rotate_about_luma(theta), &c);
    }
    if gate(rng) {
        let s = 2f64.powf(rng.normal());
        let m: Mat4 = std::array::from_fn(|r| {
            std::array::from_fn(|k| {
                if r == 3 || k == 3 {
                    IDENTITY4[r][k]
                } else {
                    outer[r][k] + (IDENTITY4[r][k] - outer[r][k]) * s
                }
            })
        });
        c = mul4(&m, &c);
    }
    c
}

/// Rotation by `theta` about the grey axis (1, 1, 1)/√3 (Rodrigues' formula): ADA's hue.
fn rotate_about_luma(theta: f64) -> Mat4 {
    let a = 1.0 / 3f64.sqrt();
    let (s, c) = theta.sin_cos();
    let k = [[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]];
    let mut m = IDENTITY4;
    for i in 0..3 {
        for j in 0..3 {
            let kk: f64 = (0..3).map(|l| k[i][l] * k[l][j]).sum();
            m[i][j] = IDENTITY4[i][j] + s * k[i][j] + (1.0 - c) * kk;
        }
    }
    m
}

fn color_matrix(mats: &[Mat4], dtype: DType, dev: &Device) -> Result<Op> {
    let n = mats.len();
    let (mut m, mut t) = (Vec::with_capacity(n * 9), Vec::with_capacity(n * 3));
    for c in mats {
        for row in c.iter().take(3) {
            m.extend_from_slice(&row[..3]);
            t.push(row[3]);
        }
    }
    Ok(Op::Channels { m: tensor(m, &[n, 3, 3], dtype, dev)?, t: tensor(t, &[n, 3, 1], dtype, dev)? })
}

#[cfg(test)]
mod tests;
