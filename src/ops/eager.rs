//! Computations on the contents of CPU tensors outside the graph: optimizer updates, moving
//! averages, and the derivatives of backward ops, each one parallel pass instead of a chain
//! of candle ops (each a single-threaded pass that allocates).

use candle_core::{bail, CpuStorage, Result, Shape, Storage, Tensor, WithDType};

/// A computation on the contents of several CPU tensors of one dtype, producing new
/// tensors outside the graph.
pub(crate) trait Eager {
    const NAME: &'static str;
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<Vec<T>>;
}

/// Runs `e` on the contents of `inputs` (made contiguous) and returns its outputs with the
/// given shapes, on the inputs' device and dtype.
pub(crate) fn run_eager<E: Eager>(e: &E, inputs: &[&Tensor], shapes: &[Shape]) -> Result<Vec<Tensor>> {
    let inputs: Vec<Tensor> = inputs.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
    let dev = inputs[0].device();
    macro_rules! go {
        ($variant:ident) => {{
            let mut slices = Vec::with_capacity(guards.len());
            for (storage, layout) in &guards {
                match &**storage {
                    Storage::Cpu(CpuStorage::$variant(v)) => slices.push(super::contiguous_slice(v, layout, E::NAME)?),
                    _ => bail!("{}: f32 or f64 CPU inputs, all the same", E::NAME),
                }
            }
            let outs = e.run(&slices);
            outs.into_iter().zip(shapes).map(|(v, s)| Tensor::from_vec(v, s, dev)).collect()
        }};
    }
    match inputs[0].dtype() {
        candle_core::DType::F32 => go!(F32),
        candle_core::DType::F64 => go!(F64),
        dt => bail!("{}: f32 or f64 only, got {dt:?}", E::NAME),
    }
}
