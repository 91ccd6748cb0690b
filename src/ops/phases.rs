//! Stride-phase im2col and col2im (any stride; [`super::kernels`] chooses when to use them).
//!
//! With stride `s`, kernel tap `a` of small position `i` reads big position `s·i + a − p`,
//! which is position `i + ⌊(a − p)/s⌋` of the big grid's phase `(a − p) mod s` (the positions
//! congruent to it modulo `s`). Splitting each channel plane once into its `s × s` phases, each
//! stored with a zero border wide enough for every tap, turns every receptive row of im2col into
//! a contiguous window of one phase: the strided, bounds-checked gathers become plain row
//! copies, and col2im becomes row additions into the phases followed by one interleaving pass.
//! col2im always goes this way; im2col does except on narrow strided grids, where the
//! kernels' gather tables are faster (measurements at `IM2COL_TABLE_MAX_WIDTH`).

use super::kernels::{gather_strided, Element, Geometry};
use std::ops::Range;

/// One axis (rows or columns) of the phase layout.
#[derive(Clone, Copy, Debug)]
struct Axis {
    big: usize,
    small: usize,
    stride: usize,
    padding: usize,
    /// The phase index of the first stored position (≤ 0: the leading zero border).
    lo: isize,
    /// Positions stored per phase, borders included.
    len: usize,
}

impl Axis {
    fn new(big: usize, small: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        let shift = |tap: usize| (tap as isize - padding as isize).div_euclid(stride as isize);
        let lo = shift(0);
        let hi = (small as isize + shift(kernel.max(1) - 1)).max(big.div_ceil(stride) as isize);
        Self { big, small, stride, padding, lo, len: (hi - lo) as usize }
    }

    /// The phase tap `tap` reads and the stored index of its window's first position.
    fn tap(&self, tap: usize) -> (usize, usize) {
        let d = tap as isize - self.padding as isize;
        let s = self.stride as isize;
        (d.rem_euclid(s) as usize, (d.div_euclid(s) - self.lo) as usize)
    }

    /// Stored indices of phase `r` that lie inside the big grid (big position `r + s·k` for the
    /// `k`-th of them).
    fn inside(&self, r: usize) -> Range<usize> {
        let start = (-self.lo) as usize;
        start..start + self.big.saturating_sub(r).div_ceil(self.stride)
    }
}

/// The phase layout of one geometry: `s²` phases of `rows.len × cols.len` per channel plane.
#[derive(Clone, Copy, Debug)]
pub(super) struct Phases {
    rows: Axis,
    cols: Axis,
    kernel: (usize, usize),
}

impl Phases {
    pub(super) fn new(g: &Geometry) -> Self {
        Self {
            rows: Axis::new(g.big.0, g.small.0, g.kernel.0, g.stride, g.padding.0),
            cols: Axis::new(g.big.1, g.small.1, g.kernel.1, g.stride, g.padding.1),
            kernel: g.kernel,
        }
    }

    fn phase_len(&self) -> usize {
        self.rows.len * self.cols.len
    }

    /// Elements of the phases of one channel plane.
    pub(super) fn plane_len(&self) -> usize {
        self.rows.stride * self.rows.stride * self.phase_len()
    }

    /// Calls `f(tap, phase, stored index of the window's first element)` for every kernel tap.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (s, qw) = (self.rows.stride, self.cols.len);
        for a in 0..self.kernel.0 {
            let (ry, u) = self.rows.tap(a);
            for b in 0..self.kernel.1 {
                let (rx, v) = self.cols.tap(b);
                f(a * self.kernel.1 + b, ry * s + rx, u * qw + v);
            }
        }
    }

    /// Writes the phases of `plane` into `phases` (`plane_len` elements), zero outside the grid.
    fn split<T: Element>(&self, plane: &[T], phases: &mut [T]) {
        let (s, bw, qw) = (self.rows.stride, self.cols.big, self.cols.len);
        for (ph, phase) in phases.chunks_exact_mut(self.phase_len()).enumerate() {
            let (ry, rx) = (ph / s, ph % s);
            let (inside_u, inside_v) = (self.rows.inside(ry), self.cols.inside(rx));
            for (u, row) in phase.chunks_exact_mut(qw).enumerate() {
                if !inside_u.contains(&u) || inside_v.is_empty() {
                    row.fill(T::zero());
                    continue;
                }
                let y = ry + s * (u - inside_u.start);
                row[..inside_v.start].fill(T::zero());
                row[inside_v.end..].fill(T::zero());
                gather_strided(&mut row[inside_v.clone()], &plane[y * bw + rx..(y + 1) * bw], s);
            }
        }
    }

    /// Writes into `plane` the big-grid positions held by `phases`, dropping the borders.
    fn merge<T: Element>(&self, phases: &[T], plane: &mut [T]) {
        let (s, bw, qw, pl) = (self.rows.stride, self.cols.big, self.cols.len, self.phase_len());
        let v0 = (-self.cols.lo) as usize;
        for (y, dst) in plane.chunks_exact_mut(bw).enumerate() {
            let (ry, u) = (y % s, (y / s) as isize - self.rows.lo);
            let row = |rx: usize| &phases[(ry * s + rx) * pl + u as usize * qw + v0..][..self.cols.inside(rx).len()];
            if s == 2 {
                let (even, odd) = (row(0), row(1));
                let (pairs, tail) = dst.as_chunks_mut::<2>();
                for (pair, (e, o)) in pairs.iter_mut().zip(even.iter().zip(odd)) {
                    *pair = [*e, *o];
                }
                if let [last] = tail {
                    *last = even[pairs.len()];
                }
            } else {
                for rx in 0..s.min(bw) {
                    for (d, v) in dst[rx..].iter_mut().step_by(s).zip(row(rx)) {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// im2col of one channel plane through its phases (`phases`: `plane_len` elements of
    /// scratch) into the `taps` rows of `rows` (row stride `ld`), columns `off .. off + small_len`.
    pub(super) fn im2col<T: Element>(&self, plane: &[T], phases: &mut [T], rows: &mut [T], ld: usize, off: usize) {
        self.split(plane, phases);
        let (pl, qw, (sh, sw)) = (self.phase_len(), self.cols.len, (self.rows.small, self.cols.small));
        self.for_each_tap(|t, ph, start| {
            let src = &phases[ph * pl + start..];
            let dst = &mut rows[t * ld + off..][..sh * sw];
            match sw {
                4 => copy_rows::<4, T>(dst, src, qw),
                8 => copy_rows::<8, T>(dst, src, qw),
                16 => copy_rows::<16, T>(dst, src, qw),
                _ => {
                    for (i, d) in dst.chunks_exact_mut(sw).enumerate() {
                        d.copy_from_slice(&src[i * qw..][..sw]);
                    }
                }
            }
        });
    }

    /// col2im (the adjoint of [`Self::im2col`]) of columns `off ..` of `rows` into one channel
    /// plane, overwriting it; `phases` is scratch as for `im2col`.
    pub(super) fn col2im<T: Element>(&self, rows: &[T], ld: usize, off: usize, phases: &mut [T], plane: &mut [T]) {
        phases.fill(T::zero());
        let (pl, qw, (sh, sw)) = (self.phase_len(), self.cols.len, (self.rows.small, self.cols.small));
        self.for_each_tap(|t, ph, start| {
            let src = &rows[t * ld + off..][..sh * sw];
            let dst = &mut phases[ph * pl + start..];
            match sw {
                4 => add_rows::<4, T>(dst, src, qw),
                8 => add_rows::<8, T>(dst, src, qw),
                16 => add_rows::<16, T>(dst, src, qw),
                _ => {
                    for (i, s) in src.chunks_exact(sw).enumerate() {
                        for (d, v) in dst[i * qw..][..sw].iter_mut().zip(s) {
                            *d += *v;
                        }
                    }
                }
            }
        });
        self.merge(phases, plane);
    }
}

/// Copies the `W`-wide rows of `dst` from rows of `src` `stride` elements apart (a fixed width,
/// so that each row is a few vector moves rather than a `memcpy` call).
#[inline(always)]
fn copy_rows<const W: usize, T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    for (i, d) in dst.as_chunks_mut::<W>().0.iter_mut().enumerate() {
        d.copy_from_slice(&src[i * stride..][..W]);
    }
}

/// Adds the `W`-wide rows of `src` into rows of `dst` `stride` elements apart.
#[inline(always)]
fn add_rows<const W: usize, T: Element>(dst: &mut [T], src: &[T], stride: usize) {
    for (i, s) in src.as_chunks::<W>().0.iter().enumerate() {
        for (d, v) in dst[i * stride..][..W].iter_mut().zip(s) {
            *d += *v;
        }
    }
}
