//! Nearest-neighbour 2x upsampling and 2x2 window sums, each the other's adjoint
//! (⟨up(x), y⟩ = ⟨x, sum(y)⟩), so each is the other's backward pass and gradients of any
//! order are exact. A scale folds in the 1/4 of average pooling.
//!
//! Composed of candle ops (reshape, broadcast, strided copy; reshape and two sums over
//! non-last dimensions) they took 5–9% of a sngan-64 step; here each is one parallel pass.
//!
//! [`blur121`] is the separable binomial filter [1, 2, 1]/4 (zero padding) that turns them
//! into StyleGAN's blurred resampling: nearest upsampling then the blur is upsampling with
//! the [1, 3, 3, 1] filter (bilinear weights 3/4, 1/4), the blur then 2x2 average pooling is
//! the [1, 3, 3, 1]/8 filter at stride 2. The filter is symmetric and zero-padded, so the
//! op is its own adjoint and its own backward pass.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (N, C, H, W) -> (N, C, 2H, 2W), each pixel repeated over a 2x2 square and scaled.
pub fn upsample2x_scaled(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if !super::is_fast_cpu(x) {
        return x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?.reshape((n, c, 2 * h, 2 * w))? * scale;
    }
    x.contiguous()?.apply_op1(Resample { up: true, scale })
}

/// (N, C, H, W) -> (N, C, H/2, W/2), each 2x2 window's sum, scaled (H and W even).
pub fn sum_pool2x_scaled(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        bail!("2x2 pooling needs an even height and width, got {h}x{w}");
    }
    if !super::is_fast_cpu(x) {
        return x.reshape((n, c, h / 2, 2, w / 2, 2))?.sum(5)?.sum(3)? * scale;
    }
    x.contiguous()?.apply_op1(Resample { up: false, scale })
}

/// (N, C, H, W) -> (N, C, H, W): each plane filtered by [1, 2, 1]ᵀ[1, 2, 1]/16, pixels beyond
/// the border reading as zero.
pub fn blur121(x: &Tensor) -> Result<Tensor> {
    if !super::is_fast_cpu(x) {
        let (n, c, h, w) = x.dims4()?;
        let k = Tensor::new(&[[1f32, 2., 1.], [2., 4., 2.], [1., 2., 1.]], x.device())?.to_dtype(x.dtype())? / 16.0;
        return x.reshape((n * c, 1, h, w))?.conv2d(&k?.reshape((1, 1, 3, 3))?, 1, 1, 1, 1)?.reshape((n, c, h, w));
    }
    x.contiguous()?.apply_op1(Blur)
}

struct Blur;

/// Blurs planes of `h` x `w`: a horizontal then a vertical [1, 2, 1]/4 pass.
fn blur_planes<T: candle_core::WithDType>(x: &[T], (h, w): (usize, usize)) -> Vec<T> {
    let plane = h * w;
    let mut out = super::filled_par(x.len(), T::zero());
    let (quarter, half) = (T::from_f64(0.25), T::from_f64(0.5));
    out.par_chunks_mut(plane).zip(x.par_chunks(plane)).for_each(|(o, x)| {
        let mut tmp = vec![T::zero(); plane];
        for i in 0..h {
            let (r, t) = (&x[i * w..(i + 1) * w], &mut tmp[i * w..(i + 1) * w]);
            for j in 0..w {
                let left = if j > 0 { r[j - 1] } else { T::zero() };
                let right = if j + 1 < w { r[j + 1] } else { T::zero() };
                t[j] = r[j] * half + (left + right) * quarter;
            }
        }
        for i in 0..h {
            let mid = &tmp[i * w..(i + 1) * w];
            let o = &mut o[i * w..(i + 1) * w];
            for j in 0..w {
                o[j] = mid[j] * half;
            }
            for nb in [i.wrapping_sub(1), i + 1] {
                if nb < h {
                    let r = &tmp[nb * w..(nb + 1) * w];
                    for j in 0..w {
                        o[j] += r[j] * quarter;
                    }
                }
            }
        }
    });
    out
}

impl CustomOp1 for Blur {
    fn name(&self) -> &'static str {
        "blur-121"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(blur_planes(super::contiguous_slice(v, l, self.name())?, (h, w))),
            CpuStorage::F64(v) => CpuStorage::F64(blur_planes(super::contiguous_slice(v, l, self.name())?, (h, w))),
            _ => bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, l.shape().clone()))
    }

    /// The filter is symmetric with zero padding: its own adjoint.
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Blur)?))
    }
}

struct Resample {
    up: bool,
    scale: f64,
}

/// Over planes of `h` x `w` (the input's): upsampled or window-summed, times `k`.
fn run<T: candle_core::WithDType>(x: &[T], (h, w): (usize, usize), up: bool, k: T) -> Vec<T> {
    let plane = h * w;
    let planes = x.len() / plane;
    let out_plane = if up { 4 * plane } else { plane / 4 };
    let mut out = super::filled_par(planes * out_plane, T::zero());
    out.par_chunks_mut(out_plane).zip(x.par_chunks(plane)).for_each(|(o, x)| {
        if up {
            for i in 0..h {
                let row = &x[i * w..(i + 1) * w];
                let (top, bottom) = o[4 * i * w..4 * (i + 1) * w].split_at_mut(2 * w);
                for (j, &v) in row.iter().enumerate() {
                    let v = v * k;
                    top[2 * j] = v;
                    top[2 * j + 1] = v;
                }
                bottom.copy_from_slice(top);
            }
        } else {
            let (ho, wo) = (h / 2, w / 2);
            for i in 0..ho {
                let (r0, r1) = (&x[2 * i * w..(2 * i + 1) * w], &x[(2 * i + 1) * w..(2 * i + 2) * w]);
                for j in 0..wo {
                    o[i * wo + j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * k;
                }
            }
        }
    });
    out
}

impl CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        if self.up {
            "upsample-2x"
        } else {
            "sum-pool-2x"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(run(super::contiguous_slice(v, l, self.name())?, (h, w), self.up, self.scale as f32))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(run(super::contiguous_slice(v, l, self.name())?, (h, w), self.up, self.scale))
            }
            _ => bail!("{}: f32 or f64 only", self.name()),
        };
        let shape = if self.up { (n, c, 2 * h, 2 * w) } else { (n, c, h / 2, w / 2) };
        Ok((out, Shape::from(shape)))
    }

    /// The adjoint op with the same scale.
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Resample { up: !self.up, scale: self.scale })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Forward against the composed candle ops, and second order: the gradient of
    /// ‖d(Σ w ⊙ f(x²))/dx‖² with respect to x, for f = upsampling and f = average pooling.
    #[test]
    fn match_the_composed_ops_to_second_order() {
        crate::enable_second_order_gradients();
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(8);
        let x = rng.normal_tensor((2, 3, 4, 6), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let composed_up = |t: &Tensor| {
            let (n, c, h, w) = t.dims4().unwrap();
            t.reshape((n, c, h, 1, w, 1))
                .unwrap()
                .broadcast_as((n, c, h, 2, w, 2))
                .unwrap()
                .reshape((n, c, 2 * h, 2 * w))
                .unwrap()
        };
        let composed_avg = |t: &Tensor| {
            let (n, c, h, w) = t.dims4().unwrap();
            (t.reshape((n, c, h / 2, 2, w / 2, 2)).unwrap().sum(5).unwrap().sum(3).unwrap() * 0.25).unwrap()
        };
        type F<'a> = &'a dyn Fn(&Tensor) -> Tensor;
        let composed_blur = |t: &Tensor| {
            let (n, c, h, w) = t.dims4().unwrap();
            let k = Tensor::new(&[[1f64, 2., 1.], [2., 4., 2.], [1., 2., 1.]], &dev).unwrap() / 16.0;
            let k = k.unwrap().reshape((1, 1, 3, 3)).unwrap();
            t.reshape((n * c, 1, h, w)).unwrap().conv2d(&k, 1, 1, 1, 1).unwrap().reshape((n, c, h, w)).unwrap()
        };
        let cases: [(F, F, &[usize]); 3] = [
            (&|t| upsample2x_scaled(t, 1.0).unwrap(), &composed_up, &[2, 3, 8, 12]),
            (&|t| sum_pool2x_scaled(t, 0.25).unwrap(), &composed_avg, &[2, 3, 2, 3]),
            (&|t| blur121(t).unwrap(), &composed_blur, &[2, 3, 4, 6]),
        ];
        for (ours, theirs, out_shape) in cases {
            assert!(crate::ops::max_abs_diff(&ours(&x), &theirs(&x)) < 1e-14);
            let w = rng.normal_tensor(out_shape, 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
            let second = |f: F| {
                let v = Var::from_tensor(&x).unwrap();
                let g1 = (f(&v.as_tensor().sqr().unwrap()) * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gx = g1.get(v.as_tensor()).unwrap().clone();
                let g2 = gx.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                (gx, g2.get(v.as_tensor()).unwrap().clone())
            };
            let ((a1, a2), (b1, b2)) = (second(ours), second(theirs));
            assert!(crate::ops::max_abs_diff(&a1, &b1) < 1e-12);
            assert!(crate::ops::max_abs_diff(&a2, &b2) < 1e-12);
        }
        assert!(sum_pool2x_scaled(&x.narrow(3, 0, 5).unwrap(), 1.0).is_err());
    }
}
