//! Slice-level CPU convolution kernels: im2col / col2im and the GEMM drivers built on them.
//!
//! All three convolution-like operations of this module relate a *big* spatial grid to a
//! *small* one (see [`Geometry`]):
//!
//! * `conv2d` reads the big grid (its input) and writes the small grid (its output),
//! * `conv_transpose2d` reads the small grid (its input) and scatters into the big grid,
//! * the weight gradient correlates a big and a small tensor into a kernel-sized tensor.
//!
//! Each one is a single GEMM per group of batch items on an im2col "column" matrix with one
//! row per (channel, kernel tap) and one column per small-grid position:
//!
//! | operation          | GEMM                                       | then          |
//! |--------------------|--------------------------------------------|---------------|
//! | `conv2d`           | `out (C_out, P) = W (C_out, C_in·K²) · col` | -             |
//! | `conv_transpose2d` | `col (C_out·K², P) = Wᵀ · x (C_in, P)`      | col2im        |
//! | weight gradient    | `dW (C_s, C_b·K²) += small (C_s, P) · colᵀ` | sum over batch|
//!
//! When the kernel covers the whole unpadded input (a 1×1 small grid) the operations are plain
//! fully connected layers and each is a single GEMM over the batch, without im2col.
//!
//! With stride 1 the big and small grids can swap roles ([`Geometry::stride_one_swapped`]): a
//! `conv2d` with few output channels runs as the `conv_transpose2d` of the flipped kernel, and
//! the weight gradient of a convolution that narrows im2cols its narrower operand, because a
//! GEMM only a few rows high over a large column matrix is bound by streaming that matrix.
//!
//! Batch items are processed in groups whose columns are concatenated (so that layers with a
//! tiny spatial size still get a reasonably wide GEMM). Groups run in parallel on the current
//! rayon pool with single-threaded GEMMs when there are enough of them; otherwise they run one
//! after the other with multi-threaded GEMMs and channel-parallel im2col / col2im.

use super::phases::Phases;
use candle_core::{bail, Result};
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// Element types the kernels support: the real types `gemm` implements.
pub(crate) trait Element: candle_core::WithDType + Default + sealed::Sealed {
    /// This thread's scratch buffers for the element type.
    fn scratch() -> &'static std::thread::LocalKey<std::cell::Cell<Scratch<Self>>>;

    /// `dst[i] = src[reads[i]]`, zero where `reads[i]` is outside `src`.
    fn gather(dst: &mut [Self], src: &[Self], reads: &[u32]) {
        super::gather::scalar(dst, src, reads)
    }
}

thread_local! {
    static SCRATCH_F32: std::cell::Cell<Scratch<f32>> = const { std::cell::Cell::new(Scratch::new()) };
    static SCRATCH_F64: std::cell::Cell<Scratch<f64>> = const { std::cell::Cell::new(Scratch::new()) };
}

impl Element for f32 {
    fn scratch() -> &'static std::thread::LocalKey<std::cell::Cell<Scratch<Self>>> {
        &SCRATCH_F32
    }

    fn gather(dst: &mut [Self], src: &[Self], reads: &[u32]) {
        super::gather::f32(dst, src, reads)
    }
}

impl Element for f64 {
    fn scratch() -> &'static std::thread::LocalKey<std::cell::Cell<Scratch<Self>>> {
        &SCRATCH_F64
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Aim for at least this many GEMM columns (small-grid positions × batch items) per task.
const MIN_GEMM_COLUMNS: usize = 256;

/// A convolution whose column matrix for one item would exceed this many bytes builds and
/// multiplies it a band of output rows at a time ([`conv2d_banded`]), so that the band's
/// columns are still in cache when the GEMM packs them.
const BAND_COL_BYTES: usize = 1 << 20;

/// Spatial relation between a big grid and a small grid: small position `(i, j)` combined with
/// kernel tap `(a, b)` touches big position `(i·stride + a − padding.0, j·stride + b − padding.1)`;
/// taps that fall outside the big grid read zeros (or are dropped when writing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Height and width of the big grid.
    pub big: (usize, usize),
    /// Height and width of the small grid.
    pub small: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    pub stride: usize,
    /// Zero padding of the big grid's rows (top and bottom) and columns (left and right).
    pub padding: (usize, usize),
}

/// Splits a rank-4 NCHW shape into its four dimensions.
fn dims4(op: &str, what: &str, dims: &[usize]) -> Result<(usize, usize, usize, usize)> {
    match *dims {
        [a, b, c, d] => Ok((a, b, c, d)),
        _ => bail!("{op}: {what} must have rank 4, got shape {dims:?}"),
    }
}

impl Geometry {
    /// Geometry of `conv2d(x, w)` for `x` (N, C_in, H, W) and `w` (C_out, C_in, KH, KW);
    /// `x` is the big grid. Returns it with the batch size and the channel counts (in, out).
    pub(crate) fn conv2d(
        x: &[usize],
        w: &[usize],
        stride: usize,
        padding: (usize, usize),
    ) -> Result<(Self, usize, usize, usize)> {
        const OP: &str = "conv2d";
        let (n, c_in, h, wd) = dims4(OP, "input", x)?;
        let (c_out, c_in_w, kh, kw) = dims4(OP, "weight", w)?;
        if c_in != c_in_w {
            bail!("{OP}: input has {c_in} channels but weight {w:?} expects {c_in_w}");
        }
        if stride == 0 {
            bail!("{OP}: stride must be positive");
        }
        if h == 0 || wd == 0 {
            bail!("{OP}: empty input size {h}x{wd}");
        }
        if h + 2 * padding.0 < kh || wd + 2 * padding.1 < kw || kh == 0 || kw == 0 {
            bail!("{OP}: kernel {kh}x{kw} does not fit input {h}x{wd} with padding {padding:?}");
        }
        let out = |size: usize, k: usize, p: usize| (size + 2 * p - k) / stride + 1;
        let small = (out(h, kh, padding.0), out(wd, kw, padding.1));
        let g = Self { big: (h, wd), small, kernel: (kh, kw), stride, padding };
        Ok((g, n, c_in, c_out))
    }

    /// Geometry of `conv_transpose2d(x, w)` for `x` (N, C_in, H, W) and `w` (C_in, C_out, KH, KW)
    /// with per-axis output padding; `x` is the small grid. Returns it with the batch size and the
    /// channel counts (in, out).
    pub(crate) fn conv_transpose2d(
        x: &[usize],
        w: &[usize],
        stride: usize,
        padding: (usize, usize),
        output_padding: (usize, usize),
    ) -> Result<(Self, usize, usize, usize)> {
        const OP: &str = "conv_transpose2d";
        let (n, c_in, h, wd) = dims4(OP, "input", x)?;
        let (c_in_w, c_out, kh, kw) = dims4(OP, "weight", w)?;
        if c_in != c_in_w {
            bail!("{OP}: input has {c_in} channels but weight {w:?} expects {c_in_w}");
        }
        if stride == 0 {
            bail!("{OP}: stride must be positive");
        }
        if output_padding.0 >= stride || output_padding.1 >= stride {
            bail!("{OP}: output padding {output_padding:?} must be smaller than stride {stride}");
        }
        if h == 0 || wd == 0 {
            bail!("{OP}: empty input size {h}x{wd}");
        }
        let out = |size: usize, k: usize, extra: usize, p: usize| ((size - 1) * stride + k + extra).checked_sub(2 * p);
        let (Some(bh), Some(bw)) = (out(h, kh, output_padding.0, padding.0), out(wd, kw, output_padding.1, padding.1))
        else {
            bail!("{OP}: padding {padding:?} is too large for input {h}x{wd} and kernel {kh}x{kw}");
        };
        if bh == 0 || bw == 0 {
            bail!("{OP}: empty output size {bh}x{bw}");
        }
        let g = Self { big: (bh, bw), small: (h, wd), kernel: (kh, kw), stride, padding };
        Ok((g, n, c_in, c_out))
    }

    /// Geometry of the weight gradient correlating `big` (N, C_big, H, W) with `small`
    /// (N, C_small, H', W'), where `small` has the size of `conv2d(big, kernel)`. Returns it with
    /// the batch size and the channel counts (big, small).
    pub(crate) fn weight_grad(
        big: &[usize],
        small: &[usize],
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> Result<(Self, usize, usize, usize)> {
        const OP: &str = "conv2d_weight_grad";
        let (n, c_big, _, _) = dims4(OP, "big input", big)?;
        let (n_small, c_small, sh, sw) = dims4(OP, "small input", small)?;
        if n != n_small {
            bail!("{OP}: batch sizes differ: {big:?} vs {small:?}");
        }
        let w = [c_small, c_big, kernel.0, kernel.1];
        let (g, ..) = Self::conv2d(big, &w, stride, padding)?;
        if g.small != (sh, sw) {
            bail!(
                "{OP}: small input {small:?} does not match the conv2d output {:?} of {big:?} \
                 with kernel {kernel:?}, stride {stride}, padding {padding:?}",
                g.small
            );
        }
        Ok((g, n, c_big, c_small))
    }

    fn big_len(&self) -> usize {
        self.big.0 * self.big.1
    }

    fn small_len(&self) -> usize {
        self.small.0 * self.small.1
    }

    fn taps(&self) -> usize {
        self.kernel.0 * self.kernel.1
    }

    /// The output padding that makes a transposed convolution from the small grid produce
    /// exactly the big grid (each component is below the stride for a valid geometry).
    pub(crate) fn output_padding(&self) -> (usize, usize) {
        let extra = |big: usize, small: usize, k: usize, p: usize| big + 2 * p - k - (small - 1) * self.stride;
        (
            extra(self.big.0, self.small.0, self.kernel.0, self.padding.0),
            extra(self.big.1, self.small.1, self.kernel.1, self.padding.1),
        )
    }

    /// True when im2col is the identity (1×1 kernel, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.taps() == 1 && self.stride == 1 && self.padding == (0, 0)
    }

    /// With stride 1, a convolution (`c_in` → `c_out` channels) is the transposed convolution
    /// of its input with the kernel flipped in space and its channel axes swapped, padded by
    /// `kernel − 1 − padding` ([`flip_kernel`]): a GEMM `c_out·K²` rows high and `c_in` deep
    /// followed by col2im, instead of im2col and a GEMM only `c_out` rows high over the whole
    /// `c_in·K²`-row column matrix. With few output channels the latter is bound by streaming
    /// that matrix (4.7 MB per image for 32 → 32 channels at 64x64): one such GEMM ran at a
    /// fifth of a core's peak, the col2im form's at half. Measured on a batch of 64, 2 threads
    /// (docs/benchmarks.md): 32 → 32 at 64x64 90 against 174-185 ms, 64 → 32 152-165 against
    /// 395-400, 32 → 3 12 against 29-31; 16 → 32 is slower this way (84 against 62), and with
    /// more than 32 output channels neither form wins clearly. Returns the transposed
    /// convolution's geometry (its small grid is the input) when it applies: stride 1, a
    /// kernel wider than each padding, not pointwise or dense (already single GEMMs), at
    /// most 32 output channels and at least 32 input channels.
    fn stride_one_as_transposed(&self, c_in: usize, c_out: usize) -> Option<Geometry> {
        self.stride_one_swapped().filter(|_| c_out <= 32 && c_in >= 32)
    }

    /// With stride 1, the weight gradient of a convolution that narrows (`c_big` → fewer
    /// `c_small` channels) is, flipped ([`flip_kernel`]), the weight gradient with the roles
    /// swapped: the gradient tensor read through im2col as the big grid (padded by
    /// `kernel − 1 − padding`) and the input as the small one. Its column matrix then has
    /// `c_small·K²` rows instead of `c_big·K²`, and its GEMM is `c_big` rows high instead of
    /// `c_small`. Batch 64, 2 threads, best of 3 (docs/benchmarks.md): 64 → 32 at 64x64 157-199
    /// against 252-273 ms, 32 → 3 at 64x64 11 against 74, 64 → 16 at 32x32 19 against 45,
    /// 512 → 256 at 4x4 28-29 against 31-32. Returns the swapped geometry when it applies:
    /// stride 1, a kernel wider than each padding, not pointwise or dense, fewer small-grid
    /// (output) channels than big-grid (input) ones.
    fn stride_one_adjoint_weight_grad(&self, c_big: usize, c_small: usize) -> Option<Geometry> {
        self.stride_one_swapped().filter(|_| c_small < c_big)
    }

    /// The stride-1 geometry with the grids' roles swapped (the small grid read as the big one,
    /// padded by `kernel − 1 − padding` so that each reaches the other), for a stride-1
    /// geometry whose kernel is wider than each padding and that is neither pointwise nor
    /// dense (those are single GEMMs already).
    fn stride_one_swapped(&self) -> Option<Geometry> {
        let (kh, kw) = self.kernel;
        let fits = self.padding.0 < kh && self.padding.1 < kw;
        if self.stride != 1 || !fits || self.is_pointwise() || self.is_dense() {
            return None;
        }
        Some(Geometry {
            big: self.small,
            small: self.big,
            kernel: self.kernel,
            stride: 1,
            padding: (kh - 1 - self.padding.0, kw - 1 - self.padding.1),
        })
    }

    /// True when the kernel exactly covers the unpadded big grid, so that the small grid is a
    /// single position and the operation is a fully connected layer (e.g. the first layer of a
    /// DCGAN generator and the last one of its discriminator).
    fn is_dense(&self) -> bool {
        self.small == (1, 1) && self.padding == (0, 0) && self.kernel == self.big
    }

    /// Small-grid indices `j` along one axis (of sizes `small` / `big`, padding `p`) for which
    /// `j·stride + tap − p` lies inside `0..big`.
    fn valid_range(&self, small: usize, big: usize, p: usize, tap: usize) -> Range<usize> {
        let s = self.stride;
        let lo = p.saturating_sub(tap).div_ceil(s);
        let hi = if big + p > tap { small.min((big + p - tap - 1) / s + 1) } else { 0 };
        lo.min(hi)..hi
    }
}

/// `dst[j] = src[j·S]` for every `j` (`src` holds at least `(dst.len() − 1)·S + 1` elements).
#[inline(always)]
fn gather_every<const S: usize, T: Copy>(dst: &mut [T], src: &[T]) {
    let (chunks, _) = src.as_chunks::<S>();
    let full = chunks.len().min(dst.len());
    for (d, c) in dst[..full].iter_mut().zip(chunks) {
        *d = c[0];
    }
    for (j, d) in dst.iter_mut().enumerate().skip(full) {
        *d = src[j * S];
    }
}

/// `dst[j] = src[j·stride]` for every `j`, with the common strides specialised so that the
/// loops vectorise.
pub(super) fn gather_strided<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => gather_every::<2, T>(dst, src),
        3 => gather_every::<3, T>(dst, src),
        4 => gather_every::<4, T>(dst, src),
        s => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[j * s];
            }
        }
    }
}

/// `dst[j·S] += src[j]` for every `j` (`dst` holds at least `(src.len() − 1)·S + 1` elements).
#[inline(always)]
fn scatter_add_every<const S: usize, T: Element>(dst: &mut [T], src: &[T]) {
    let (chunks, _) = dst.as_chunks_mut::<S>();
    let full = chunks.len().min(src.len());
    for (c, v) in chunks.iter_mut().zip(&src[..full]) {
        c[0] += *v;
    }
    for (j, v) in src.iter().enumerate().skip(full) {
        dst[j * S] += *v;
    }
}

/// `dst[j·stride] += src[j]` for every `j`, specialised like [`gather_strided`].
fn scatter_add_strided<T: Element>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => scatter_add_every::<1, T>(dst, src),
        2 => scatter_add_every::<2, T>(dst, src),
        3 => scatter_add_every::<3, T>(dst, src),
        4 => scatter_add_every::<4, T>(dst, src),
        s => {
            for (j, v) in src.iter().enumerate() {
                dst[j * s] += *v;
            }
        }
    }
}

/// Widest small grid for which a strided im2col reads through an index table (see
/// [`TapIndex`]) rather than the stride phases. Measured (ns per column element, 64 channels,
/// 4×4 stride 2, one thread; 2-core Xeon VM with AVX-512 gathers): tables 0.22-0.37 /
/// 0.39-0.44 / 0.52-0.58 vs phases 0.36-0.56 / 0.79-0.90 / 1.7-1.9 on 16- / 8- / 4-wide small
/// grids; on 32-wide ones 0.27-0.36 vs 0.38-0.51 (with scalar gathers on a Zen 3: 1.04 vs
/// 0.49, hence the cut at 16).
const IM2COL_TABLE_MAX_WIDTH: usize = 16;

/// How im2col and col2im walk the receptive fields of a geometry, worked out once per call so
/// that the per-plane loops do no index arithmetic. Three paths, tested against each other:
///
/// * stride phases ([`super::phases`]): col2im always (0.3-0.8 ns per column element where
///   row updates took 0.6-4.4 and per-position gather tables 1.1-1.7), and im2col except on
///   narrow strided grids;
/// * an index table for im2col on narrow strided grids (a GAN's inner 4×4 to 16×16 layers,
///   where even a phase split costs more than copying element by element);
/// * strided row copies from valid ranges per tap: the reference the tests check the others
///   against.
struct TapIndex {
    geometry: Geometry,
    /// Small-grid rows valid for each tap row `a` and columns valid for each tap column `b`
    /// ([`Geometry::valid_range`]).
    valid_i: Vec<Range<usize>>,
    valid_j: Vec<Range<usize>>,
    /// The im2col table, or empty: for tap `t` and small position `q`, `reads[t·small_len + q]`
    /// is the big-grid position read, or `u32::MAX` in the padding.
    reads: Vec<u32>,
    /// The stride-phase layout, when im2col / col2im go through it.
    phases: Option<Phases>,
}

impl TapIndex {
    /// The row-copy path.
    fn rows(g: &Geometry) -> Self {
        let ((bh, bw), (sh, sw), (kh, kw)) = (g.big, g.small, g.kernel);
        let valid_i = (0..kh).map(|a| g.valid_range(sh, bh, g.padding.0, a)).collect();
        let valid_j = (0..kw).map(|b| g.valid_range(sw, bw, g.padding.1, b)).collect();
        Self { geometry: *g, valid_i, valid_j, reads: Vec::new(), phases: None }
    }

    /// The index-table path.
    fn table(g: &Geometry) -> Self {
        let mut index = Self::rows(g);
        assert!(g.big_len().max(g.taps() * g.small_len()) < u32::MAX as usize, "convolution too large");
        let (bw, sw, kw, s, (ph, pw)) = (g.big.1, g.small.1, g.kernel.1, g.stride, g.padding);
        let mut reads = vec![u32::MAX; g.taps() * g.small_len()];
        for (a, vi) in index.valid_i.iter().enumerate() {
            for (b, vj) in index.valid_j.iter().enumerate() {
                for i in vi.clone() {
                    for j in vj.clone() {
                        let d = (i * s + a - ph) * bw + j * s + b - pw;
                        reads[(a * kw + b) * g.small_len() + i * sw + j] = d as u32;
                    }
                }
            }
        }
        index.reads = reads;
        index
    }

    /// The stride-phase path (`None` on an empty geometry).
    fn phases(g: &Geometry) -> Self {
        let empty = g.big_len() == 0 || g.small_len() == 0 || g.taps() == 0;
        Self { phases: (!empty).then(|| Phases::new(g)), ..Self::rows(g) }
    }

    fn for_im2col(g: &Geometry) -> Self {
        if g.stride > 1 && g.small.1 <= IM2COL_TABLE_MAX_WIDTH {
            Self::table(g)
        } else {
            Self::phases(g)
        }
    }

    fn for_col2im(g: &Geometry) -> Self {
        Self::phases(g)
    }

    /// Scratch elements per channel plane that im2col / col2im hand to the plane functions: the
    /// phases of a plane, or one unused element on the other paths (so that the per-plane
    /// loops zip with the scratch the same way on every path).
    fn phase_plane_len(&self) -> usize {
        self.phases.map_or(1, |p| p.plane_len())
    }

    /// Scratch elements im2col / col2im need for an item of `channels` planes.
    fn phase_scratch_len(&self, channels: usize) -> usize {
        channels * self.phase_plane_len()
    }
}

/// Copies the receptive fields of one channel plane (`big.0 × big.1`) into the `taps` rows of
/// `rows` (a row-major block with row stride `ld`), at columns `off .. off + small_len`;
/// `phases` is the plane's scratch ([`TapIndex::phase_plane_len`]).
fn im2col_plane<T: Element>(plane: &[T], index: &TapIndex, rows: &mut [T], ld: usize, off: usize, phases: &mut [T]) {
    if let Some(p) = &index.phases {
        return p.im2col(plane, phases, rows, ld, off);
    }
    let g = &index.geometry;
    let (bw, (sh, sw), kw, s, (ph, pw)) = (g.big.1, g.small, g.kernel.1, g.stride, g.padding);
    let (sl, zero) = (sh * sw, T::zero());
    if !index.reads.is_empty() {
        for (t, reads) in index.reads.chunks_exact(sl).enumerate() {
            T::gather(&mut rows[t * ld + off..][..sl], plane, reads);
        }
        return;
    }
    for (a, valid_i) in index.valid_i.iter().enumerate() {
        for (b, valid_j) in index.valid_j.iter().enumerate() {
            let dst = &mut rows[(a * kw + b) * ld + off..][..sl];
            for (i, d) in dst.chunks_exact_mut(sw).enumerate() {
                if !valid_i.contains(&i) || valid_j.is_empty() {
                    d.fill(zero);
                    continue;
                }
                let src = &plane[(i * s + a - ph) * bw..][..bw];
                d[..valid_j.start].fill(zero);
                d[valid_j.end..].fill(zero);
                let x0 = valid_j.start * s + b - pw;
                gather_strided(&mut d[valid_j.clone()], &src[x0..], s);
            }
        }
    }
}

/// The adjoint of [`im2col_plane`]: writes into each position of the channel plane the sum of
/// the entries of `rows` (row stride `ld`, columns `off ..`) that read it there.
fn col2im_plane<T: Element>(rows: &[T], ld: usize, off: usize, index: &TapIndex, plane: &mut [T], phases: &mut [T]) {
    if let Some(p) = &index.phases {
        return p.col2im(rows, ld, off, phases, plane);
    }
    let g = &index.geometry;
    let (bw, (sh, sw), kw, s, (ph, pw)) = (g.big.1, g.small, g.kernel.1, g.stride, g.padding);
    let rows = &rows[off..];
    plane.fill(T::zero());
    for (a, valid_i) in index.valid_i.iter().enumerate() {
        for (b, valid_j) in index.valid_j.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
            let src = &rows[(a * kw + b) * ld..][..sh * sw];
            for i in valid_i.clone() {
                let dst = &mut plane[(i * s + a - ph) * bw..][..bw];
                let x0 = valid_j.start * s + b - pw;
                scatter_add_strided(&mut dst[x0..], &src[i * sw..][valid_j.clone()], s);
            }
        }
    }
}

/// im2col of one batch item `item` (`channels` planes of the big grid) into `col`
/// (`channels·taps` rows with row stride `ld`), columns `off .. off + small_len`.
/// `phases` is scratch of [`TapIndex::phase_scratch_len`] elements.
fn im2col<T: Element>(
    item: &[T],
    index: &TapIndex,
    col: &mut [T],
    ld: usize,
    off: usize,
    parallel: bool,
    phases: &mut [T],
) {
    let (g, pl) = (&index.geometry, index.phase_plane_len());
    let block = g.taps() * ld;
    let channels = item.len() / g.big_len().max(1);
    let (col, phases) = (&mut col[..channels * block], &mut phases[..channels * pl]);
    if parallel {
        col.par_chunks_exact_mut(block)
            .zip(item.par_chunks_exact(g.big_len()))
            .zip(phases.par_chunks_exact_mut(pl))
            .for_each(|((rows, plane), q)| im2col_plane(plane, index, rows, ld, off, q));
    } else {
        let planes = col.chunks_exact_mut(block).zip(item.chunks_exact(g.big_len()));
        for ((rows, plane), q) in planes.zip(phases.chunks_exact_mut(pl)) {
            im2col_plane(plane, index, rows, ld, off, q);
        }
    }
}

/// col2im of columns `off .. off + small_len` of `col` (row stride `ld`) into one batch item
/// `item` (`channels` planes of the big grid), overwriting it.
/// `phases` is scratch as for [`im2col`].
fn col2im<T: Element>(
    col: &[T],
    ld: usize,
    off: usize,
    index: &TapIndex,
    item: &mut [T],
    parallel: bool,
    phases: &mut [T],
) {
    let (g, pl) = (&index.geometry, index.phase_plane_len());
    let block = g.taps() * ld;
    let phases = &mut phases[..item.len() / g.big_len().max(1) * pl];
    if parallel {
        item.par_chunks_exact_mut(g.big_len())
            .zip(col.par_chunks(block))
            .zip(phases.par_chunks_exact_mut(pl))
            .for_each(|((plane, rows), q)| col2im_plane(rows, ld, off, index, plane, q));
    } else {
        let planes = item.chunks_exact_mut(g.big_len()).zip(col.chunks(block));
        for ((plane, rows), q) in planes.zip(phases.chunks_exact_mut(pl)) {
            col2im_plane(rows, ld, off, index, plane, q);
        }
    }
}

/// A read-only strided matrix operand: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    fn row_major(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    fn col_major(data: &'a [T], rows: usize) -> Self {
        Self { data, rs: 1, cs: rows }
    }

    /// Asserts that a `rows × cols` matrix with these strides fits in the slice.
    fn check(&self, rows: usize, cols: usize) {
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(last < self.data.len(), "matrix operand out of bounds");
    }
}

/// `dst (m×n, row-major, row stride dst_rs) = [dst +] lhs (m×k) · rhs (k×n)`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Element>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "matmul destination out of bounds");
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(T::zero());
            }
        }
        return;
    }
    lhs.check(m, k);
    rhs.check(k, n);
    let parallelism = match rayon::current_num_threads() {
        threads if parallel && threads > 1 => Parallelism::Rayon(threads),
        _ => Parallelism::None,
    };
    // SAFETY: the asserts above guarantee that every element addressed through the given
    // dimensions and strides lies inside the corresponding slice, `dst` is borrowed mutably
    // (so it aliases neither operand), and `T` is f32 or f64, which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// How a batch is cut into GEMM tasks of `group` consecutive items.
///
/// Items are grouped only as far as needed to reach [`MIN_GEMM_COLUMNS`] columns: on the DCGAN
/// benchmark layer (256 columns per item), one task per item with single-threaded GEMMs spread
/// over the threads beat both groups of 2 to 8 items (larger buffers, worse cache use) and one
/// multi-threaded GEMM per item or per whole batch (synchronisation, and a huge column buffer).
#[derive(Clone, Copy, Debug)]
struct Plan {
    group: usize,
    tasks: usize,
    /// Run tasks concurrently (single-threaded GEMMs) rather than one after the other
    /// (multi-threaded GEMMs).
    parallel_tasks: bool,
    threads: usize,
}

impl Plan {
    fn new(batch: usize, small_len: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let wanted = MIN_GEMM_COLUMNS.div_ceil(small_len.max(1));
        let group = wanted.min(batch.div_ceil(threads)).max(1);
        let tasks = batch.div_ceil(group);
        let parallel_tasks = threads > 1 && tasks >= threads && (tasks.is_multiple_of(threads) || tasks >= 4 * threads);
        Self { group, tasks, parallel_tasks, threads }
    }

    fn items(&self, task: usize, batch: usize) -> Range<usize> {
        task * self.group..((task + 1) * self.group).min(batch)
    }
}

/// `w` (a, b, taps) → (b, a, taps) with the taps reversed (both spatial axes flipped): a
/// convolution's kernel (c_out, c_in, ·) becomes that of the equal stride-1 transposed
/// convolution (c_in, c_out, ·).
fn flip_kernel<T: Element>(w: &[T], a: usize, b: usize, taps: usize) -> Vec<T> {
    let mut out = vec![T::zero(); w.len()];
    for (j, dst) in out.chunks_exact_mut(a * taps).enumerate() {
        for (i, dst) in dst.chunks_exact_mut(taps).enumerate() {
            let src = &w[(i * b + j) * taps..][..taps];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// The transpose of a `rows × cols` row-major matrix, output row blocks in parallel.
fn transpose<T: Element>(matrix: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 32;
    let mut out = vec![T::zero(); rows * cols];
    if out.is_empty() {
        return out;
    }
    // Each task writes TILE output rows (a block that stays in cache) from TILE-wide strips of
    // the input rows.
    out.par_chunks_mut(rows * TILE).enumerate().for_each(|(block, dst)| {
        let c0 = block * TILE;
        let width = dst.len() / rows;
        for r in 0..rows {
            for (c, &v) in matrix[r * cols + c0..][..width].iter().enumerate() {
                dst[c * rows + r] = v;
            }
        }
    });
    out
}

/// Copies the `rows × len` blocks of consecutive batch items side by side into a
/// `rows × (items·len)` row-major matrix.
fn interleave<T: Element>(items: &[T], rows: usize, len: usize, out: &mut Vec<T>) {
    let n = items.len() / (rows * len).max(1);
    out.clear();
    out.reserve(rows * n * len);
    for r in 0..rows {
        for item in items.chunks_exact(rows * len) {
            out.extend_from_slice(&item[r * len..][..len]);
        }
    }
}

/// The inverse of [`interleave`].
fn deinterleave<T: Element>(matrix: &[T], rows: usize, len: usize, items: &mut [T]) {
    let n = items.len() / (rows * len).max(1);
    for (r, src_row) in matrix.chunks_exact(n * len).enumerate().take(rows) {
        for (item, src) in items.chunks_exact_mut(rows * len).zip(src_row.chunks_exact(len)) {
            item[r * len..][..len].copy_from_slice(src);
        }
    }
}

/// Scratch buffers for the tasks, kept per thread across calls: a task's column buffer is
/// allocated (and zeroed) once per thread and size, not once per task (up to a few MiB each time).
pub(crate) struct Scratch<T> {
    col: Vec<T>,
    tmp: Vec<T>,
    phases: Vec<T>,
}

impl<T> Scratch<T> {
    const fn new() -> Self {
        Self { col: Vec::new(), tmp: Vec::new(), phases: Vec::new() }
    }
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` with this thread's scratch buffers. They are taken out of the thread-local slot for
/// the call, so a nested call (rayon may run another task on this thread while `f` waits)
/// starts from empty buffers instead of sharing them.
fn with_scratch<T: Element, R>(f: impl FnOnce(&mut Scratch<T>) -> R) -> R {
    let mut scratch = T::scratch().take();
    let result = f(&mut scratch);
    T::scratch().set(scratch);
    result
}

/// The first `len` elements of `buf`, which grows (with zeros) when shorter but never shrinks, so
/// that reusing it does not write it again.
fn sized<T: Element>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    &mut buf[..len]
}

/// The im2col column matrix of a group of consecutive batch items (`channels` planes each):
/// `channels·taps` rows, one column per small position of each item, built in `col_buf`; the
/// items themselves when im2col is the identity (a pointwise geometry and a single item).
fn columns<'a, T: Element>(
    items: &'a [T],
    channels: usize,
    index: &TapIndex,
    col_buf: &'a mut Vec<T>,
    phase_buf: &mut Vec<T>,
    par: bool,
) -> &'a [T] {
    let g = &index.geometry;
    let item_len = channels * g.big_len();
    let n = items.len() / item_len.max(1);
    if g.is_pointwise() && n == 1 {
        return items;
    }
    let cols = n * g.small_len();
    let col = sized(col_buf, channels * g.taps() * cols);
    let phases = sized(phase_buf, index.phase_scratch_len(channels));
    for (idx, item) in items.chunks_exact(item_len).enumerate() {
        im2col(item, index, col, cols, idx * g.small_len(), par, phases);
    }
    col
}

/// Runs `task(items, output chunk, scratch, parallel_inside)` for every task of `plan`, where the
/// output chunk is the part of `out` (`item_len` elements per item) belonging to those items.
fn run_tasks<T, F>(plan: Plan, batch: usize, out: &mut [T], item_len: usize, task: F)
where
    T: Element,
    F: Fn(Range<usize>, &mut [T], &mut Scratch<T>, bool) + Sync,
{
    let chunk = plan.group * item_len;
    if plan.parallel_tasks {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(t, o)| with_scratch(|scratch| task(plan.items(t, batch), o, scratch, false)));
    } else {
        with_scratch(|scratch| {
            for (t, o) in out.chunks_mut(chunk).enumerate() {
                task(plan.items(t, batch), o, scratch, true);
            }
        });
    }
}

/// Forward 2-D convolution: `x` (batch, c_in, big), `w` (c_out, c_in, kernel) -> (batch, c_out, small).
pub(crate) fn conv2d<T: Element>(x: &[T], w: &[T], dims: (usize, usize, usize), g: &Geometry) -> Vec<T> {
    conv2d_then(x, w, dims, g, None)
}

/// [`conv2d`] followed by `max(0, y + bias[c])` (NaN stays NaN): on banded convolutions each
/// band's output is finished while it is still in cache, elsewhere in one pass at the end.
pub(crate) fn conv2d_bias_relu<T: Element>(
    x: &[T],
    w: &[T],
    dims: (usize, usize, usize),
    g: &Geometry,
    bias: &[T],
) -> Vec<T> {
    conv2d_then(x, w, dims, g, Some(bias))
}

/// Adds `bias[c]` to row `c` of a `bias.len() × ld` row-major block (columns `off .. off +
/// len`) and clamps below at 0.
fn bias_relu_rows<T: Element>(out: &mut [T], ld: usize, off: usize, len: usize, bias: &[T]) {
    for (c, &b) in bias.iter().enumerate() {
        for v in &mut out[c * ld + off..][..len] {
            let y = *v + b;
            *v = if y < T::zero() { T::zero() } else { y };
        }
    }
}

fn conv2d_then<T: Element>(
    x: &[T],
    w: &[T],
    (batch, c_in, c_out): (usize, usize, usize),
    g: &Geometry,
    bias: Option<&[T]>,
) -> Vec<T> {
    let (mut out, finished) = conv2d_inner(x, w, (batch, c_in, c_out), g, bias);
    if let (Some(b), false) = (bias, finished) {
        let sl = g.small_len();
        out.par_chunks_mut(c_out * sl).for_each(|item| bias_relu_rows(item, sl, 0, sl, b));
    }
    out
}

/// [`conv2d_then`]'s convolution, and whether it applied the bias and ReLU too (banded
/// convolutions do, band by band).
fn conv2d_inner<T: Element>(
    x: &[T],
    w: &[T],
    (batch, c_in, c_out): (usize, usize, usize),
    g: &Geometry,
    bias: Option<&[T]>,
) -> (Vec<T>, bool) {
    let (bl, sl) = (g.big_len(), g.small_len());
    let k = c_in * g.taps();
    assert_eq!(x.len(), batch * c_in * bl, "conv2d input size");
    assert_eq!(w.len(), c_out * k, "conv2d weight size");
    let plan = Plan::new(batch, sl);
    // On grids large enough for bands, the banded im2col form beats the transposed one.
    let banded = band_rows::<T>(g, k, plan.group);
    if let Some(t) = g.stride_one_as_transposed(c_in, c_out).filter(|_| banded.is_none()) {
        return (conv_transpose2d(x, &flip_kernel(w, c_out, c_in, g.taps()), (batch, c_in, c_out), &t), false);
    }
    let mut out = super::filled_par(batch * c_out * sl, T::zero());
    if out.is_empty() || k == 0 {
        return (out, false);
    }
    if g.is_dense() {
        // out (batch × c_out) = x (batch × k) · Wᵀ
        let (x, w) = (Mat::row_major(x, k), Mat::col_major(w, k));
        matmul((batch, c_out, k), &mut out, c_out, false, x, w, true);
        return (out, false);
    }
    if let Some(rows) = banded {
        conv2d_banded(x, w, (c_in, c_out), g, plan, rows, bias, &mut out);
        return (out, true);
    }
    let index = TapIndex::for_im2col(g);
    run_tasks(plan, batch, &mut out, c_out * sl, |items, out, scratch, par| {
        let x = &x[items.start * c_in * bl..items.end * c_in * bl];
        let cols = items.len() * sl;
        let col = columns(x, c_in, &index, &mut scratch.col, &mut scratch.phases, par);
        let w = Mat::row_major(w, k);
        let col = Mat::row_major(col, cols);
        if items.len() == 1 {
            matmul((c_out, cols, k), out, cols, false, w, col, par);
        } else {
            let tmp = sized(&mut scratch.tmp, c_out * cols);
            matmul((c_out, cols, k), tmp, cols, false, w, col, par);
            deinterleave(tmp, c_out, sl, out);
        }
    });
    (out, false)
}

/// Output rows per band for [`conv2d_banded`], or None when one item's column matrix (`k`
/// rows) fits in [`BAND_COL_BYTES`], items are grouped, or a band would be narrower than
/// [`MIN_GEMM_COLUMNS`] columns.
pub(super) fn band_rows<T>(g: &Geometry, k: usize, group: usize) -> Option<usize> {
    let (sh, sw) = g.small;
    let row_bytes = k * sw * std::mem::size_of::<T>();
    if group != 1 || g.is_pointwise() || row_bytes * sh <= BAND_COL_BYTES {
        return None;
    }
    let rows = (BAND_COL_BYTES / row_bytes.max(1)).max(MIN_GEMM_COLUMNS.div_ceil(sw.max(1)));
    (rows < sh).then_some(rows)
}

/// The bands of output rows of a convolution geometry whose column matrix is built a band at a
/// time ([`band_rows`]): each band reads `(rows − 1)·stride + kernel` input rows, copied with the
/// zero padding above and below written out, and im2col's them with padding only at the sides.
struct BandIndex {
    geometry: Geometry,
    rows: usize,
    /// The im2col index of a full band, and of the shorter last one where the rows do not divide
    /// the output.
    full: TapIndex,
    last: Option<TapIndex>,
}

impl BandIndex {
    fn new(g: &Geometry, rows: usize) -> Self {
        let band = |rows: usize| Geometry {
            big: ((rows - 1) * g.stride + g.kernel.0, g.big.1),
            small: (rows, g.small.1),
            padding: (0, g.padding.1),
            ..*g
        };
        let last = (!g.small.0.is_multiple_of(rows)).then(|| TapIndex::for_im2col(&band(g.small.0 % rows)));
        Self { geometry: *g, rows, full: TapIndex::for_im2col(&band(rows)), last }
    }

    /// The first output row of each band, with the band's im2col index.
    fn bands(&self) -> impl Iterator<Item = (usize, &TapIndex)> {
        let sh = self.geometry.small.0;
        (0..sh).step_by(self.rows).map(move |r0| match r0 + self.rows <= sh {
            true => (r0, &self.full),
            false => (r0, self.last.as_ref().expect("a last band")),
        })
    }

    /// The column matrix of the band from output row `r0` of one item `x` (`channels` planes),
    /// built in `scratch.col`, and its number of columns.
    fn columns<'a, T: Element>(
        &self,
        x: &[T],
        channels: usize,
        r0: usize,
        index: &TapIndex,
        scratch: &'a mut Scratch<T>,
        par: bool,
    ) -> (&'a [T], usize) {
        let ((bh, bw), s, ph) = (self.geometry.big, self.geometry.stride, self.geometry.padding.0);
        let (band_h, cols) = (index.geometry.big.0, index.geometry.small_len());
        let input = sized(&mut scratch.tmp, channels * band_h * bw);
        for (c, dst) in input.chunks_exact_mut(band_h * bw).enumerate() {
            for (r, dst) in dst.chunks_exact_mut(bw).enumerate() {
                match (r0 * s + r).checked_sub(ph).filter(|&y| y < bh) {
                    Some(y) => dst.copy_from_slice(&x[(c * bh + y) * bw..][..bw]),
                    None => dst.fill(T::zero()),
                }
            }
        }
        let col = sized(&mut scratch.col, channels * self.geometry.taps() * cols);
        let phases = sized(&mut scratch.phases, index.phase_scratch_len(channels));
        im2col(input, index, col, cols, 0, par, phases);
        (col, cols)
    }
}

/// [`conv2d`] of items one at a time, each in bands of `rows` output rows ([`BandIndex`])
/// multiplied into the band's columns of the output, which then gets `bias` and ReLU if given.
#[allow(clippy::too_many_arguments)]
fn conv2d_banded<T: Element>(
    x: &[T],
    w: &[T],
    (c_in, c_out): (usize, usize),
    g: &Geometry,
    plan: Plan,
    rows: usize,
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (bl, sl, k, sw) = (g.big_len(), g.small_len(), c_in * g.taps(), g.small.1);
    let bands = BandIndex::new(g, rows);
    let batch = out.len() / (c_out * sl).max(1);
    run_tasks(plan, batch, out, c_out * sl, |items, out, scratch, par| {
        let x = &x[items.start * c_in * bl..][..c_in * bl];
        for (r0, index) in bands.bands() {
            let (col, cols) = bands.columns(x, c_in, r0, index, scratch, par);
            let (w, col) = (Mat::row_major(w, k), Mat::row_major(col, cols));
            matmul((c_out, cols, k), &mut out[r0 * sw..], sl, false, w, col, par);
            if let Some(b) = bias {
                bias_relu_rows(out, sl, r0 * sw, cols, b);
            }
        }
    });
}

/// Transposed 2-D convolution: `x` (batch, c_in, small), `w` (c_in, c_out, kernel)
/// -> (batch, c_out, big).
pub(crate) fn conv_transpose2d<T: Element>(
    x: &[T],
    w: &[T],
    (batch, c_in, c_out): (usize, usize, usize),
    g: &Geometry,
) -> Vec<T> {
    let (bl, sl) = (g.big_len(), g.small_len());
    let m = c_out * g.taps();
    assert_eq!(x.len(), batch * c_in * sl, "conv_transpose2d input size");
    assert_eq!(w.len(), c_in * m, "conv_transpose2d weight size");
    let mut out = super::filled_par(batch * c_out * bl, T::zero());
    if out.is_empty() || c_in == 0 {
        return out;
    }
    if g.is_dense() {
        // out (batch × c_out·taps) = x (batch × c_in) · W
        let (x, w) = (Mat::row_major(x, c_in), Mat::row_major(w, m));
        matmul((batch, m, c_in), &mut out, m, false, x, w, true);
        return out;
    }
    let plan = Plan::new(batch, sl);
    // `gemm` packs the weight once per task; packing it is faster from a row-major Wᵀ.
    let w_t = transpose(w, c_in, m);
    let index = TapIndex::for_col2im(g);
    run_tasks(plan, batch, &mut out, c_out * bl, |items, out, scratch, par| {
        let x = &x[items.start * c_in * sl..items.end * c_in * sl];
        let cols = items.len() * sl;
        let rhs = if items.len() == 1 {
            x
        } else {
            interleave(x, c_in, sl, &mut scratch.tmp);
            &scratch.tmp[..]
        };
        let w = Mat::row_major(&w_t, c_in);
        let rhs = Mat::row_major(rhs, cols);
        if g.is_pointwise() && items.len() == 1 {
            matmul((m, cols, c_in), out, cols, false, w, rhs, par);
            return;
        }
        let col = sized(&mut scratch.col, m * cols);
        matmul((m, cols, c_in), col, cols, false, w, rhs, par);
        let phases = sized(&mut scratch.phases, index.phase_scratch_len(c_out));
        for (idx, item) in out.chunks_exact_mut(c_out * bl).enumerate() {
            col2im(col, cols, idx * sl, &index, item, par, phases);
        }
    });
    out
}

/// Weight gradient: correlates `big` (batch, c_big, big grid) with `small`
/// (batch, c_small, small grid) into (c_small, c_big, kernel):
/// `out[a, b, ki, kj] = Σ_{n,i,j} small[n, a, i, j] · big[n, b, i·s + ki − p, j·s + kj − p]`.
///
/// Where one item's column matrix exceeds [`BAND_COL_BYTES`] it is built a band of output rows
/// at a time ([`BandIndex`]) and each band's product added into the gradient: batch 64, 2
/// threads, best of 4 (docs/benchmarks.md), 64 → 64 at 64x64 232 against 377 ms, 32 → 32 at
/// 64x64 63 against 108, 64 → 64 at 32x32 57 against 73.
pub(crate) fn weight_grad<T: Element>(
    big: &[T],
    small: &[T],
    (batch, c_big, c_small): (usize, usize, usize),
    g: &Geometry,
) -> Vec<T> {
    let (bl, sl) = (g.big_len(), g.small_len());
    let k = c_big * g.taps();
    assert_eq!(big.len(), batch * c_big * bl, "weight gradient big input size");
    assert_eq!(small.len(), batch * c_small * sl, "weight gradient small input size");
    let len = c_small * k;
    if batch == 0 || len == 0 {
        return vec![T::zero(); len];
    }
    if g.is_dense() {
        // out (c_small × k) = smallᵀ (c_small × batch) · big (batch × k)
        let mut out = vec![T::zero(); len];
        let (small, big) = (Mat::col_major(small, c_small), Mat::row_major(big, k));
        matmul((c_small, k, batch), &mut out, k, false, small, big, true);
        return out;
    }
    if let Some(adjoint) = g.stride_one_adjoint_weight_grad(c_big, c_small) {
        let dw = weight_grad(small, big, (batch, c_small, c_big), &adjoint);
        return flip_kernel(&dw, c_big, c_small, g.taps());
    }
    let plan = Plan::new(batch, sl);
    // Each item's column matrix whole, or in bands of output rows: only that one's index is built.
    #[allow(clippy::large_enum_variant)] // one local value per call
    enum Layout {
        Whole(TapIndex),
        Banded(BandIndex),
    }
    let layout = match band_rows::<T>(g, k, plan.group) {
        Some(rows) => Layout::Banded(BandIndex::new(g, rows)),
        None => Layout::Whole(TapIndex::for_im2col(g)),
    };
    // Accumulates the tasks `tasks` into `acc`, overwriting it first.
    let accumulate = |tasks: &mut dyn Iterator<Item = usize>, acc: &mut [T], par: bool| {
        let mut first = true;
        with_scratch(|scratch| {
            for t in tasks {
                let index = match &layout {
                    Layout::Whole(index) => index,
                    Layout::Banded(bands) => {
                        // One item (band_rows groups none), a band of output rows at a time.
                        let item = plan.items(t, batch).start;
                        let big = &big[item * c_big * bl..][..c_big * bl];
                        let small = &small[item * c_small * sl..][..c_small * sl];
                        for (r0, index) in bands.bands() {
                            let (col, cols) = bands.columns(big, c_big, r0, index, scratch, par);
                            let lhs = Mat { data: &small[r0 * g.small.1..], rs: sl, cs: 1 };
                            matmul((c_small, k, cols), acc, k, !first, lhs, Mat::col_major(col, cols), par);
                            first = false;
                        }
                        continue;
                    }
                };
                let items = plan.items(t, batch);
                let cols = items.len() * sl;
                let big = &big[items.start * c_big * bl..items.end * c_big * bl];
                let small = &small[items.start * c_small * sl..items.end * c_small * sl];
                let col = columns(big, c_big, index, &mut scratch.col, &mut scratch.phases, par);
                let lhs = if items.len() == 1 {
                    small
                } else {
                    interleave(small, c_small, sl, &mut scratch.tmp);
                    &scratch.tmp[..]
                };
                let lhs = Mat::row_major(lhs, cols);
                let rhs = Mat::col_major(col, cols);
                matmul((c_small, k, cols), acc, k, !first, lhs, rhs, par);
                first = false;
            }
        });
        if first {
            acc.fill(T::zero());
        }
    };
    if !plan.parallel_tasks {
        let mut out = vec![T::zero(); len];
        accumulate(&mut (0..plan.tasks), &mut out, true);
        return out;
    }
    // One partial sum per worker; the first becomes the result and the others are added to
    // it in parallel.
    let workers = plan.threads;
    let mut partials: Vec<Vec<T>> = (0..workers)
        .into_par_iter()
        .map(|worker| {
            let mut acc = vec![T::zero(); len];
            accumulate(&mut (worker..plan.tasks).step_by(workers), &mut acc, false);
            acc
        })
        .collect();
    let mut out = partials.swap_remove(0);
    for partial in &partials {
        out.par_chunks_mut(1 << 14).zip(partial.par_chunks(1 << 14)).for_each(|(o, p)| {
            for (o, v) in o.iter_mut().zip(p) {
                *o += *v;
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(big: usize, small: usize, k: usize, stride: usize, padding: usize) -> Geometry {
        Geometry { big: (big, big), small: (small, small), kernel: (k, k), stride, padding: (padding, padding) }
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for big in 1..7 {
            for k in 1..6 {
                for stride in 1..4 {
                    for padding in 0..4 {
                        if big + 2 * padding < k {
                            continue;
                        }
                        let small = (big + 2 * padding - k) / stride + 1;
                        let g = geometry(big, small, k, stride, padding);
                        for tap in 0..k {
                            let expected: Vec<usize> = (0..small)
                                .filter(|&j| {
                                    let x = (j * stride + tap) as isize - padding as isize;
                                    x >= 0 && x < big as isize
                                })
                                .collect();
                            let r = g.valid_range(small, big, padding, tap);
                            assert_eq!(r.clone().collect::<Vec<_>>(), expected, "{g:?} tap {tap}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_and_col2im_paths_agree_and_are_adjoint() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
        };
        let square = [
            (9, 3, 1, 1),
            (8, 4, 2, 1),
            (11, 5, 2, 2),
            (7, 1, 2, 0),
            (9, 3, 3, 0),
            (4, 5, 1, 2),
            (10, 4, 2, 3),
            (6, 2, 4, 1),
            (16, 4, 2, 1),
            (32, 4, 2, 1),
        ]
        .map(|(big, k, stride, p)| (big, (k, k), stride, (p, p)));
        // Inception's one-axis kernels and paddings, and an odd mix.
        let one_axis =
            [(17, (1, 7), 1, (0, 3)), (17, (7, 1), 1, (3, 0)), (8, (3, 1), 2, (1, 0)), (9, (2, 5), 2, (0, 2))];
        for (big, kernel, stride, padding) in square.into_iter().chain(one_axis) {
            let out = |n: usize, k: usize, p: usize| (n + 2 * p - k) / stride + 1;
            let g = Geometry {
                big: (big, big + 1),
                small: (out(big, kernel.0, padding.0), out(big + 1, kernel.1, padding.1)),
                kernel,
                stride,
                padding,
            };
            let (ld, off, channels) = (g.small_len() + 5, 3, 2);
            // Row copies (the reference), the im2col table (col2im by rows), stride phases.
            let indices = [TapIndex::rows(&g), TapIndex::table(&g), TapIndex::phases(&g)];
            let item: Vec<f64> = (0..channels * g.big_len()).map(|_| next()).collect();
            let col: Vec<f64> = (0..channels * g.taps() * ld).map(|_| next()).collect();
            let mut first: Option<(Vec<f64>, Vec<f64>)> = None;
            for (path, index) in indices.iter().enumerate() {
                for parallel in [false, true] {
                    let mut phases = vec![f64::NAN; index.phase_scratch_len(channels)];
                    let mut cx = vec![0.0; col.len()];
                    im2col(&item, index, &mut cx, ld, off, parallel, &mut phases);
                    let mut xc = vec![f64::NAN; item.len()];
                    col2im(&col, ld, off, index, &mut xc, parallel, &mut phases);
                    match &first {
                        None => {
                            assert!(cx.iter().any(|v| *v != 0.0));
                            // The adjoint: <im2col(x), c> = <x, col2im(c)> over the columns written.
                            let lhs: f64 = cx
                                .chunks(ld)
                                .zip(col.chunks(ld))
                                .map(|(u, v)| {
                                    u[off..][..g.small_len()].iter().zip(&v[off..]).map(|(u, v)| u * v).sum::<f64>()
                                })
                                .sum();
                            let rhs: f64 = item.iter().zip(&xc).map(|(u, v)| u * v).sum();
                            assert!((lhs - rhs).abs() < 1e-9, "adjoint {g:?}: {lhs} vs {rhs}");
                            first = Some((cx, xc));
                        }
                        Some((cx0, xc0)) => {
                            assert_eq!(&cx, cx0, "im2col path {path} {g:?}");
                            let close = xc.iter().zip(xc0).all(|(a, b)| (a - b).abs() < 1e-12);
                            assert!(close, "col2im path {path} {g:?}: {xc:?} vs {xc0:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_copies_match_naive_loops() {
        let src: Vec<f64> = (0..40).map(f64::from).collect();
        for stride in 1..7 {
            for len in 1..=(40 - 1) / stride + 1 {
                let mut dst = vec![0.0; len];
                gather_strided(&mut dst, &src, stride);
                let expected: Vec<f64> = (0..len).map(|j| src[j * stride]).collect();
                assert_eq!(dst, expected, "gather stride {stride} len {len}");

                let mut acc = vec![1.0; 40];
                scatter_add_strided(&mut acc, &dst, stride);
                for (i, v) in acc.iter().enumerate() {
                    let hit = i % stride == 0 && i / stride < len;
                    let want = if hit { 1.0 + src[i] } else { 1.0 };
                    assert_eq!(*v, want, "scatter stride {stride} len {len} at {i}");
                }
            }
        }
    }

    #[test]
    fn interleave_roundtrip() {
        let items: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let mut m = Vec::new();
        interleave(&items, 3, 2, &mut m);
        assert_eq!(&m[..8], &[0., 1., 6., 7., 12., 13., 18., 19.]);
        let mut back = vec![0f32; 24];
        deinterleave(&m, 3, 2, &mut back);
        assert_eq!(back, items);
    }
}
