//! A named store of trainable parameters and non-trainable buffers (batch-norm running
//! statistics), with the copy, average and (de)serialisation operations that EMA and
//! checkpoints need.

use crate::ops::eager::{run_eager, Eager};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, WithDType};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

thread_local! {
    /// Elements the networks built on this thread may still create ([`with_parameter_budget`]).
    static BUDGET: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `build` with at most `elements` parameter and buffer elements to create on this
/// thread: a network larger than that fails with an error before its tensors are allocated.
/// Loading a file builds the network its configuration describes, and the configuration
/// may be damaged or crafted; the file's own tensors say how large it can honestly be.
pub fn with_parameter_budget<T>(elements: usize, build: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = BUDGET.with(|b| b.replace(Some(elements)));
    let out = build();
    BUDGET.with(|b| b.set(before));
    out
}

/// Fails when a tensor of `elements` would not fit in the budget (if one is set).
pub fn check_budget(elements: usize) -> candle_core::Result<()> {
    match BUDGET.with(|b| b.get()) {
        Some(left) if elements > left => Err(candle_core::Error::Msg(format!(
            "the network needs more than {left} more parameter elements, more than the file holds"
        ))),
        _ => Ok(()),
    }
}

fn charge(elements: usize) -> candle_core::Result<()> {
    check_budget(elements)?;
    BUDGET.with(|b| b.set(b.get().map(|left| left - elements)));
    Ok(())
}

#[derive(Clone)]
pub struct Params {
    pub device: Device,
    /// The dtype of every tensor stored here (f32; f64 in gradient tests).
    pub dtype: DType,
    params: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
}

impl Params {
    pub fn new(device: &Device) -> Self {
        Self::with_dtype(device, DType::F32)
    }

    pub fn with_dtype(device: &Device, dtype: DType) -> Self {
        Self { device: device.clone(), dtype, params: BTreeMap::new(), buffers: BTreeMap::new() }
    }

    fn insert(map: &mut BTreeMap<String, Var>, name: &str, t: Tensor, dtype: DType) -> candle_core::Result<Var> {
        assert!(!map.contains_key(name), "parameter {name} defined twice");
        charge(t.elem_count())?;
        let v = Var::from_tensor(&t.to_dtype(dtype)?)?;
        map.insert(name.to_string(), v.clone());
        Ok(v)
    }

    pub fn param(&mut self, name: &str, t: Tensor) -> candle_core::Result<Var> {
        Self::insert(&mut self.params, name, t, self.dtype)
    }

    pub fn buffer(&mut self, name: &str, t: Tensor) -> candle_core::Result<Var> {
        Self::insert(&mut self.buffers, name, t, self.dtype)
    }

    /// A parameter drawn from N(mean, std^2).
    pub fn normal(
        &mut self,
        name: &str,
        shape: &[usize],
        mean: f64,
        std: f64,
        rng: &mut Rng,
    ) -> candle_core::Result<Var> {
        check_budget(shape.iter().product())?;
        let t = rng.normal_tensor(shape, mean, std, &self.device)?;
        self.param(name, t)
    }

    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> candle_core::Result<Var> {
        check_budget(shape.iter().product())?;
        let t = Tensor::zeros(shape, DType::F32, &self.device)?;
        self.param(name, t)
    }

    /// Trainable parameters, sorted by name.
    pub fn trainable(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.params.iter()
    }

    pub fn buffers(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.buffers.iter()
    }

    pub fn num_parameters(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// The pairs of same-named tensors of `self` and `other`, which must hold the same
    /// names with the same shapes (the same architecture).
    fn paired<'a>(
        mine: &'a BTreeMap<String, Var>,
        theirs: &'a BTreeMap<String, Var>,
    ) -> candle_core::Result<Vec<(&'a Var, &'a Var)>> {
        if mine.len() != theirs.len() {
            candle_core::bail!("parameter sets differ: {} tensors against {}", mine.len(), theirs.len());
        }
        mine.iter()
            .map(|(name, a)| match theirs.get(name) {
                Some(b) if b.dims() == a.dims() => Ok((a, b)),
                Some(b) => candle_core::bail!("parameter {name}: shape {:?} against {:?}", a.dims(), b.dims()),
                None => candle_core::bail!("parameter {name} has no counterpart of that name"),
            })
            .collect()
    }

    /// Sets every parameter and buffer to the value of `other`'s of the same name.
    pub fn copy_from(&self, other: &Params) -> candle_core::Result<()> {
        for (a, b) in Self::paired(&self.params, &other.params)? {
            a.set(&b.as_tensor().detach())?;
        }
        for (a, b) in Self::paired(&self.buffers, &other.buffers)? {
            a.set(&b.as_tensor().detach())?;
        }
        Ok(())
    }

    /// Exponential moving average by name: self = decay * self + (1 - decay) * other, for
    /// the parameters; buffers are copied (as StyleGAN2-ADA does).
    pub fn ema_from(&self, other: &Params, decay: f64) -> candle_core::Result<()> {
        for (a, b) in Self::paired(&self.params, &other.params)? {
            let new = if crate::ops::is_fast_cpu(a.as_tensor()) && a.dtype() == b.dtype() {
                let out = run_eager(&Lerp { decay }, &[a.as_tensor(), b.as_tensor()], &[a.shape().clone()])?;
                out.into_iter().next().expect("one output")
            } else {
                ((a.as_tensor() * decay)? + (b.as_tensor().detach() * (1.0 - decay))?)?
            };
            a.set(&new.detach())?;
        }
        for (a, b) in Self::paired(&self.buffers, &other.buffers)? {
            a.set(&b.as_tensor().detach())?;
        }
        Ok(())
    }

    /// All tensors under `prefix.params.NAME` and `prefix.buffers.NAME`.
    pub fn to_tensors(&self, prefix: &str, out: &mut HashMap<String, Tensor>) {
        for (k, v) in &self.params {
            out.insert(format!("{prefix}.params.{k}"), v.as_tensor().detach());
        }
        for (k, v) in &self.buffers {
            out.insert(format!("{prefix}.buffers.{k}"), v.as_tensor().detach());
        }
    }

    /// Loads every tensor under `prefix` from `map`; names and shapes must match
    /// exactly. `source` names the file in messages.
    pub fn load_tensors(&self, prefix: &str, map: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        let mut missing = Vec::new();
        for (kind, vars) in [("params", &self.params), ("buffers", &self.buffers)] {
            for (k, v) in vars {
                let key = format!("{prefix}.{kind}.{k}");
                let Some(t) = map.get(&key) else {
                    missing.push(key);
                    continue;
                };
                if t.dims() != v.dims() {
                    bail!(
                        "{source}: tensor {key} has shape {:?} but this model expects {:?}: the checkpoint is from another architecture or image size",
                        t.dims(),
                        v.dims()
                    );
                }
                v.set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
            }
        }
        if !missing.is_empty() {
            bail!(
                "{source}: {} tensors this model needs are missing (first: {}): the checkpoint is from another architecture",
                missing.len(),
                missing[0]
            );
        }
        let expected = self.params.len() + self.buffers.len();
        let present = map.keys().filter(|k| k.starts_with(&format!("{prefix}."))).count();
        if present != expected {
            bail!("{source}: holds {present} tensors under {prefix} but this model has {expected}: the checkpoint is from another architecture");
        }
        Ok(())
    }
}

/// `decay·a + (1 − decay)·b` in one parallel pass.
struct Lerp {
    decay: f64,
}

impl Eager for Lerp {
    const NAME: &'static str = "moving-average";

    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<Vec<T>> {
        let &[a, b] = inputs else { unreachable!("two inputs") };
        let mut out = crate::ops::filled_par(a.len(), T::zero());
        let (d, e) = (T::from_f64(self.decay), T::from_f64(1.0 - self.decay));
        out.par_chunks_mut(1 << 14).zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14))).for_each(|(o, (a, b))| {
            o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = a * d + b * e);
        });
        vec![out]
    }
}
