//! Adam (Kingma and Ba 2014) and RMSprop (Tieleman and Hinton 2012, PyTorch's form),
//! with their moments exposed, so checkpoints can carry them.
//!
//! Gradients arrive with their graph attached (second-order gradients are on), so
//! every tensor that enters the optimizer's state is detached first.

use crate::nn::Params;
use crate::ops::eager::{run_eager, Eager};
use crate::ops::filled_par;
use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, WithDType};
use rayon::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Adam,
    /// v = αv + (1-α)g², p -= lr·g/(√v + ε), α = 0.99 (`beta2`), no momentum.
    RmsProp,
}

pub struct Optimizer {
    pub kind: Kind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of updates made so far.
    pub t: u64,
    /// Updates over which the learning rate ramps up linearly from lr/warmup to lr
    /// (0: none), counted from the moments' start: a run started from a continuation file
    /// restarts them, and its first updates would otherwise be full-size steps.
    pub warmup: u64,
    /// A factor on `lr` set by the trainer's schedule (`TrainConfig::lr_factor`), so the
    /// configured rate stays as it is.
    pub scale: f64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Optimizer {
    pub fn new(params: &Params, lr: f64, beta1: f64, beta2: f64) -> candle_core::Result<Self> {
        let zeros = |_: ()| -> candle_core::Result<Vec<Tensor>> {
            params.trainable().map(|(_, v)| v.as_tensor().zeros_like()).collect()
        };
        Ok(Self {
            kind: Kind::Adam,
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            t: 0,
            warmup: 0,
            scale: 1.0,
            m: zeros(())?,
            v: zeros(())?,
        })
    }

    /// "adam" (with `beta1`, `beta2`) or "rmsprop" (smoothing 0.99, as PyTorch).
    pub fn from_name(name: &str, params: &Params, lr: f64, beta1: f64, beta2: f64) -> anyhow::Result<Self> {
        let mut o = Self::new(params, lr, beta1, beta2)?;
        match name {
            "adam" => {}
            "rmsprop" => {
                o.kind = Kind::RmsProp;
                o.beta2 = 0.99;
            }
            _ => bail!("unknown optimizer '{name}'; valid: adam, rmsprop"),
        }
        Ok(o)
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, params: &Params, grads: &GradStore) -> candle_core::Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let lr = self.scale
            * match self.warmup {
                0 => self.lr,
                w => self.lr * (self.t as f64 / w as f64).min(1.0),
            };
        let rule = Update { kind: self.kind, lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, bc1, bc2 };
        for (((_, var), m), v) in params.trainable().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let (w, m2, v2) = match crate::ops::is_fast_cpu(var.as_tensor()) && g.dtype() == var.dtype() {
                true => rule.apply_eager(var.as_tensor(), &g, m, v)?,
                false => rule.apply_ops(var.as_tensor(), &g, m, v)?,
            };
            var.set(&w)?;
            (*m, *v) = (m2, v2);
        }
        Ok(())
    }

    pub fn to_tensors(&self, prefix: &str, params: &Params, out: &mut HashMap<String, Tensor>) {
        for (((name, _), m), v) in params.trainable().zip(&self.m).zip(&self.v) {
            out.insert(format!("{prefix}.m.{name}"), m.clone());
            out.insert(format!("{prefix}.v.{name}"), v.clone());
        }
    }

    pub fn load_tensors(
        &mut self,
        prefix: &str,
        params: &Params,
        map: &HashMap<String, Tensor>,
        t: u64,
        source: &str,
    ) -> Result<()> {
        for (((name, var), m), v) in params.trainable().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            for (kind, slot) in [("m", m), ("v", v)] {
                let key = format!("{prefix}.{kind}.{name}");
                match map.get(&key) {
                    Some(x) if x.dims() == var.dims() => *slot = x.to_device(&params.device)?,
                    Some(x) => bail!("{source}: {key} has shape {:?}, expected {:?}", x.dims(), var.dims()),
                    None => bail!("{source}: optimizer state {key} is missing"),
                }
            }
        }
        self.t = t;
        Ok(())
    }
}

/// One Adam or RMSProp update of a parameter on the CPU, in one parallel pass over
/// `[w, g, m, v]` producing `[w', m', v']` ([`Update::apply_ops`], the candle-op formulation,
/// makes about fourteen single-threaded passes, each allocating).
struct Update {
    kind: Kind,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Bias corrections `1 − β1^t` and `1 − β2^t`.
    bc1: f64,
    bc2: f64,
}

impl Update {
    /// `(w', m', v')` in one parallel pass on the CPU (RMSProp leaves `m` as it is).
    fn apply_eager(
        &self,
        w: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let shape = w.shape().clone();
        if self.kind == Kind::RmsProp {
            let out = run_eager(self, &[w, g, v], &[shape.clone(), shape])?;
            let [w, v] = <[Tensor; 2]>::try_from(out).expect("two outputs");
            return Ok((w, m.clone(), v));
        }
        let out = run_eager(self, &[w, g, m, v], &[shape.clone(), shape.clone(), shape])?;
        let [w, m, v] = <[Tensor; 3]>::try_from(out).expect("three outputs");
        Ok((w, m, v))
    }

    /// The same update in candle ops (other devices and dtypes).
    fn apply_ops(
        &self,
        w: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
        if self.kind == Kind::RmsProp {
            let update = ((g / (v.sqrt()? + self.eps)?)? * self.lr)?;
            return Ok(((w.detach() - update)?, m.clone(), v));
        }
        let m = ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
        let denom = ((&v / self.bc2)?.sqrt()? + self.eps)?;
        let update = ((&m / denom)? * (self.lr / self.bc1))?;
        Ok(((w.detach() - update)?, m, v))
    }
}

impl Eager for Update {
    const NAME: &'static str = "optimizer-update";

    /// Inputs `[w, g, m, v]` for Adam, giving `[w', m', v']`; `[w, g, v]` for RMSProp, giving
    /// `[w', v']`. In f64 whatever the parameters' type; the loops run over zipped chunks, with
    /// no indexing, so that they vectorise.
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<Vec<T>> {
        const CHUNK: usize = 1 << 14;
        let (b1, b2, eps, lr) = (self.beta1, self.beta2, self.eps, self.lr);
        let n = inputs[0].len();
        let second_moment = move |v: T, g: f64| b2 * v.to_f64() + (1.0 - b2) * g * g;
        match (self.kind, inputs) {
            (Kind::RmsProp, &[w, g, v]) => {
                let (mut w2, mut v2) = (filled_par(n, T::zero()), filled_par(n, T::zero()));
                let outputs = w2.par_chunks_mut(CHUNK).zip(v2.par_chunks_mut(CHUNK));
                let inputs = w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK));
                outputs.zip(inputs).for_each(|((w2, v2), ((w, g), v))| {
                    for ((w2, v2), ((&w, &g), &v)) in w2.iter_mut().zip(v2).zip(w.iter().zip(g).zip(v)) {
                        let (g, vi) = (g.to_f64(), second_moment(v, g.to_f64()));
                        *v2 = T::from_f64(vi);
                        *w2 = T::from_f64(w.to_f64() - lr * g / (vi.sqrt() + eps));
                    }
                });
                vec![w2, v2]
            }
            (Kind::Adam, &[w, g, m, v]) => {
                let (bc1, bc2) = (self.bc1, self.bc2);
                let [mut w2, mut m2, mut v2] = [(); 3].map(|_| filled_par(n, T::zero()));
                let outputs = w2.par_chunks_mut(CHUNK).zip(m2.par_chunks_mut(CHUNK)).zip(v2.par_chunks_mut(CHUNK));
                let inputs =
                    w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)));
                outputs.zip(inputs).for_each(|(((w2, m2), v2), ((w, g), (m, v)))| {
                    let outputs = w2.iter_mut().zip(m2).zip(v2);
                    for (((w2, m2), v2), ((&w, &g), (&m, &v))) in outputs.zip(w.iter().zip(g).zip(m.iter().zip(v))) {
                        let g = g.to_f64();
                        let (mi, vi) = (b1 * m.to_f64() + (1.0 - b1) * g, second_moment(v, g));
                        (*m2, *v2) = (T::from_f64(mi), T::from_f64(vi));
                        *w2 = T::from_f64(w.to_f64() - lr / bc1 * mi / ((vi / bc2).sqrt() + eps));
                    }
                });
                vec![w2, m2, v2]
            }
            _ => unreachable!("{}: wrong number of inputs", Self::NAME),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computed_adam_and_descends() {
        adam_against_hand_computation(0, 1.0);
    }

    /// With a warm-up of 4 updates the t-th update uses lr · t/4.
    #[test]
    fn warm_up_scales_the_first_updates() {
        adam_against_hand_computation(4, 1.0);
    }

    /// The schedule's factor (`scale`) multiplies the rate, on top of the warm-up.
    #[test]
    fn the_schedule_scale_multiplies_the_rate() {
        adam_against_hand_computation(0, 0.25);
        adam_against_hand_computation(2, 0.5);
    }

    fn adam_against_hand_computation(warmup: u64, scale: f64) {
        let mut p = Params::new(&Device::Cpu);
        let w = p.param("w", Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::new(&p, 0.1, 0.5, 0.999).unwrap();
        opt.warmup = warmup;
        opt.scale = scale;
        // loss = sum(w^2): gradient 2w
        let mut want = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&p, &loss.backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 2.0 * want[i];
                m[i] = 0.5 * m[i] + 0.5 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.5f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                let lr = scale * if warmup == 0 { 0.1 } else { 0.1 * (t as f64 / warmup as f64).min(1.0) };
                want[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - want[i]).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert!(got[0].abs() < 1.0 && got[1].abs() < 2.0);
    }

    #[test]
    fn rmsprop_matches_hand_computed_steps() {
        let mut p = Params::new(&Device::Cpu);
        let w = p.param("w", Tensor::new(&[3.0f32], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::from_name("rmsprop", &p, 0.01, 0.5, 0.999).unwrap();
        let (mut x, mut v) = (3.0f64, 0.0f64);
        for _ in 0..3 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&p, &loss.backward().unwrap()).unwrap();
            let g = 2.0 * x;
            v = 0.99 * v + 0.01 * g * g;
            x -= 0.01 * g / (v.sqrt() + 1e-8);
        }
        assert!((w.as_tensor().to_vec1::<f32>().unwrap()[0] as f64 - x).abs() < 1e-5);
        assert!(Optimizer::from_name("sgd", &p, 0.1, 0.5, 0.9).is_err());
    }

    #[test]
    fn one_pass_update_equals_the_candle_op_formulation() {
        let dev = Device::Cpu;
        let t = |seed: u64, pos: bool| {
            let x = crate::rng::Rng::new(seed).normal_tensor(1000, 0.0, 1.0, &dev).unwrap();
            if pos {
                x.abs().unwrap()
            } else {
                x
            }
        };
        let (w, g, m, v) = (t(1, false), t(2, false), t(3, false), t(4, true));
        for kind in [Kind::Adam, Kind::RmsProp] {
            let rule = Update { kind, lr: 0.01, beta1: 0.5, beta2: 0.99, eps: 1e-8, bc1: 0.75, bc2: 0.0199 };
            let a = rule.apply_eager(&w, &g, &m, &v).unwrap();
            let b = rule.apply_ops(&w, &g, &m, &v).unwrap();
            for (x, y) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                let d = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-6, "{kind:?}: {d}");
            }
            assert!((&a.0 - &w).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-4);
        }
    }
}
