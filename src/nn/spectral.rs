//! Spectral normalisation (Miyato et al. 2018): a layer uses W / σ(W), σ the largest
//! singular value of W reshaped to (rows = outputs, cols = everything else), estimated by
//! power iteration with persistent vectors u (rows) and v (cols).
//!
//! As in the paper and PyTorch's `spectral_norm`: each training pass of the network being
//! trained runs one power iteration on the detached weight and stores u and v (they are
//! buffers, saved in checkpoints, so a resumed run continues the same estimate); σ = uᵀ W v
//! is then differentiated through W only. Frozen and evaluation passes reuse the stored u
//! and v. Every op is one of candle's, so gradients of any order (gradient penalties) are
//! exact for this definition of σ.

use super::{Mode, Params};
use crate::rng::Rng;
use candle_core::{Result, Tensor, Var};

/// PyTorch's `F.normalize` epsilon.
const EPS: f64 = 1e-12;

pub struct SpectralNorm {
    /// Left singular vector estimate, (rows,).
    pub u: Var,
    /// Right singular vector estimate, (cols,).
    pub v: Var,
    rows: usize,
    cols: usize,
}

fn normalised(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?;
    x.broadcast_div(&(norm + EPS)?)
}

impl SpectralNorm {
    /// Buffers `{name}.sn_u` and `{name}.sn_v`, drawn from N(0, 1) and normalised.
    pub fn new(p: &mut Params, rng: &mut Rng, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let dev = p.device.clone();
        let u = normalised(&rng.normal_tensor(rows, 0.0, 1.0, &dev)?)?;
        let v = normalised(&rng.normal_tensor(cols, 0.0, 1.0, &dev)?)?;
        let u = p.buffer(&format!("{name}.sn_u"), u)?;
        let v = p.buffer(&format!("{name}.sn_v"), v)?;
        Ok(Self { u, v, rows, cols })
    }

    /// One power iteration on the detached `w`, stored in u and v.
    pub fn power_iteration(&self, w: &Tensor) -> Result<()> {
        let m = w.detach().reshape((self.rows, self.cols))?;
        let u = self.u.as_tensor().to_dtype(m.dtype())?.reshape((self.rows, 1))?;
        let v = normalised(&m.t()?.matmul(&u)?)?;
        let u = normalised(&m.matmul(&v)?)?;
        self.v.set(&v.flatten_all()?.to_dtype(self.v.dtype())?.detach())?;
        self.u.set(&u.flatten_all()?.to_dtype(self.u.dtype())?.detach())?;
        Ok(())
    }

    /// σ = uᵀ W v with the stored vectors, a (1, 1) tensor differentiable in `w`.
    pub fn sigma(&self, w: &Tensor) -> Result<Tensor> {
        let m = w.reshape((self.rows, self.cols))?;
        let u = self.u.as_tensor().to_dtype(w.dtype())?.reshape((1, self.rows))?;
        let v = self.v.as_tensor().to_dtype(w.dtype())?.reshape((self.cols, 1))?;
        u.matmul(&m.matmul(&v)?)
    }

    /// `w / σ(w)`, after a power iteration when `mode` trains this network.
    pub fn normalise(&self, w: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode.updates_state() {
            self.power_iteration(w)?;
        }
        let sigma = self.sigma(w)?.reshape(())?;
        w.broadcast_div(&sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest singular value of a (rows, cols) matrix in f64, as the square root of the
    /// largest eigenvalue of WᵀW from the symmetric eigen-solver FID uses (a different
    /// algorithm than power iteration).
    fn largest_singular_value(w: &[f32], rows: usize, cols: usize) -> f64 {
        let mut wtw = vec![0.0f64; cols * cols];
        for i in 0..cols {
            for j in 0..cols {
                wtw[i * cols + j] = (0..rows).map(|r| w[r * cols + i] as f64 * w[r * cols + j] as f64).sum();
            }
        }
        let ev = crate::metrics::linalg::sym_eigenvalues(&wtw, cols).unwrap();
        ev.iter().cloned().fold(f64::MIN, f64::max).sqrt()
    }

    #[test]
    fn sigma_converges_to_the_largest_singular_value_and_normalises_it_to_one() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        // A conv weight (8, 3, 3, 3) viewed as (8, 27), and a tall linear weight (40, 12).
        for (shape, rows, cols) in [(vec![8, 3, 3, 3], 8, 27), (vec![40, 12], 40, 12)] {
            let mut p = Params::new(&dev);
            let sn = SpectralNorm::new(&mut p, &mut rng, "l", rows, cols).unwrap();
            let w = rng.normal_tensor(shape.as_slice(), 0.0, 0.3, &dev).unwrap();
            for _ in 0..200 {
                sn.power_iteration(&w).unwrap();
            }
            let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let exact = largest_singular_value(&wv, rows, cols);
            let sigma = sn.sigma(&w).unwrap().reshape(()).unwrap().to_scalar::<f32>().unwrap() as f64;
            assert!((sigma - exact).abs() / exact < 1e-4, "σ {sigma} vs {exact}");
            let normed = sn.normalise(&w, Mode::EVAL).unwrap();
            let nv = normed.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let after = largest_singular_value(&nv, rows, cols);
            assert!((after - 1.0).abs() < 1e-4, "σ(W/σ) = {after}");
        }
    }

    #[test]
    fn only_training_passes_of_the_trained_network_iterate() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        let mut p = Params::new(&dev);
        let sn = SpectralNorm::new(&mut p, &mut rng, "l", 5, 7).unwrap();
        let w = rng.normal_tensor((5, 7), 0.0, 1.0, &dev).unwrap();
        let u0 = sn.u.as_tensor().to_vec1::<f32>().unwrap();
        sn.normalise(&w, Mode::EVAL).unwrap();
        sn.normalise(&w, Mode::FROZEN).unwrap();
        assert_eq!(sn.u.as_tensor().to_vec1::<f32>().unwrap(), u0);
        sn.normalise(&w, Mode::TRAIN).unwrap();
        assert_ne!(sn.u.as_tensor().to_vec1::<f32>().unwrap(), u0);
        let names: Vec<&String> = p.buffers().map(|(n, _)| n).collect();
        assert_eq!(names, ["l.sn_u", "l.sn_v"]);
        assert_eq!(p.num_parameters(), 0);
    }
}
