//! Reading the parameters of a TorchScript archive (`torch.jit.save`) without PyTorch.
//!
//! Such an archive is a zip file. Its `<name>/data.pkl` is a pickled *module tree*
//! (not a state dict, so `candle_core::pickle::read_all` finds nothing in it): every
//! module is an object built from a dict of attributes, where a parameter is a
//! `torch._utils._rebuild_tensor_v2` call on a persistent storage `<name>/data/N`
//! (raw little-endian values), a submodule is another built object, and plain
//! attributes are ints, bools or int lists (`torch.jit._pickle.build_intlist`).
//! We unpickle with candle's [`Stack`] and walk the tree, naming everything by its
//! dotted path (`net.layers.conv.weight`, `net.layers.conv.stride`).

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A non-tensor attribute of a module.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    IntList(Vec<i64>),
    Bool(bool),
}

/// Everything read from an archive: tensors and plain attributes by dotted path.
#[derive(Debug, Default)]
pub struct Module {
    pub tensors: BTreeMap<String, Tensor>,
    pub attrs: BTreeMap<String, Attr>,
    /// Class name of every module by path ("" is the root), e.g. `__torch__.wrap_net.WrapNet`.
    pub classes: BTreeMap<String, String>,
}

impl Module {
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).with_context(|| format!("the archive has no tensor '{name}'"))
    }

    pub fn int(&self, name: &str) -> Result<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Ok(*v),
            other => bail!("attribute '{name}' is not an int ({other:?})"),
        }
    }

    /// An int attribute, or an int list attribute.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Ok(vec![*v]),
            Some(Attr::IntList(v)) => Ok(v.clone()),
            other => bail!("attribute '{name}' is not an int or int list ({other:?})"),
        }
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }
}

/// Reads every tensor (as f32 on `device`) and attribute of the TorchScript archive `path`.
pub fn read_module(path: &Path, device: &Device) -> Result<Module> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a zip archive (TorchScript file)", path.display()))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .with_context(|| format!("{}: no <name>/data.pkl in the archive", path.display()))?;
    let dir = pkl_name.trim_end_matches(".pkl").to_string();
    let mut bytes = Vec::new();
    let unpickle = |e: anyhow::Error| e.context(format!("{}: cannot unpickle {pkl_name}", path.display()));
    zip.by_name(&pkl_name)
        .map_err(anyhow::Error::from)
        .and_then(|mut f| Ok(f.read_to_end(&mut bytes)?))
        .map_err(unpickle)?;
    let mut stack = Stack::empty();
    stack.read_loop(&mut std::io::Cursor::new(&bytes)).map_err(|e| unpickle(e.into()))?;
    let root = stack.finalize().map_err(|e| unpickle(e.into()))?;

    let mut out = Module::default();
    let mut pending = Vec::new();
    walk(root, "", &mut out, &mut pending).map_err(unpickle)?;
    for (name, info) in pending {
        let t = load_tensor(&mut zip, &dir, &info).with_context(|| format!("{}: tensor {name}", path.display()))?;
        out.tensors.insert(name, t.to_device(device)?);
    }
    Ok(out)
}

/// Where a tensor's values are: storage key, element offset, shape, strides, dtype.
#[derive(Debug)]
struct TensorRef {
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    dtype: DType,
}

fn class_name(o: &Object) -> Option<String> {
    match o {
        Object::Class { module_name, class_name } => Some(format!("{module_name}.{class_name}")),
        _ => None,
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(obj: Object, path: &str, out: &mut Module, pending: &mut Vec<(String, TensorRef)>) -> Result<()> {
    match obj {
        // A module: NEWOBJ(class, ()) then BUILD(state dict).
        Object::Build { callable, args } => {
            if let Object::Reduce { callable: cls, .. } = *callable {
                out.classes.insert(path.to_string(), class_name(&cls).unwrap_or_default());
            }
            if let Object::Dict(items) = *args {
                for (k, v) in items {
                    if let Object::Unicode(k) = k {
                        walk(v, &join(path, &k), out, pending)?;
                    }
                }
            }
        }
        Object::Reduce { callable, args } => match class_name(&callable).as_deref() {
            Some("torch._utils._rebuild_tensor_v2") => {
                pending.push((path.to_string(), tensor_ref(*args)?));
            }
            Some("torch.jit._pickle.build_intlist") => {
                let list = match *args {
                    Object::Tuple(mut t) if t.len() == 1 => t.remove(0),
                    other => bail!("{path}: unexpected build_intlist arguments {other:?}"),
                };
                let Object::List(items) = list else {
                    bail!("{path}: build_intlist without a list");
                };
                let v = items
                    .into_iter()
                    .map(|i| i.int_or_long().map_err(|o| anyhow::anyhow!("{o:?}")))
                    .collect::<Result<Vec<_>>>()?;
                out.attrs.insert(path.to_string(), Attr::IntList(v));
            }
            _ => {}
        },
        Object::Int(v) => {
            out.attrs.insert(path.to_string(), Attr::Int(v as i64));
        }
        Object::Long(v) => {
            out.attrs.insert(path.to_string(), Attr::Int(v));
        }
        Object::Bool(v) => {
            out.attrs.insert(path.to_string(), Attr::Bool(v));
        }
        _ => {}
    }
    Ok(())
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` where
/// storage is `persistent_load(("storage", StorageClass, key, location, numel))`.
fn tensor_ref(args: Object) -> Result<TensorRef> {
    let bad = |what: &str| anyhow::anyhow!("unexpected tensor record: {what}");
    let Object::Tuple(args) = args else {
        return Err(bad("arguments are not a tuple"));
    };
    if args.len() < 4 {
        return Err(bad("fewer than 4 arguments"));
    }
    let Object::PersistentLoad(pid) = &args[0] else {
        return Err(bad("no persistent storage"));
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(bad("storage id is not a tuple"));
    };
    if pid.len() < 3 {
        return Err(bad("short storage id"));
    }
    let dtype = match class_name(&pid[1]).as_deref() {
        Some("torch.FloatStorage") => DType::F32,
        Some("torch.DoubleStorage") => DType::F64,
        Some("torch.HalfStorage") => DType::F16,
        other => return Err(bad(&format!("storage type {other:?}"))),
    };
    let Object::Unicode(key) = &pid[2] else {
        return Err(bad("storage key is not a string"));
    };
    let int = |o: &Object| -> Result<usize> {
        o.clone().int_or_long().map(|v| v as usize).map_err(|o| bad(&format!("{o:?} is not an int")))
    };
    let ints = |o: &Object| -> Result<Vec<usize>> {
        match o {
            Object::Tuple(v) => v.iter().map(int).collect(),
            _ => Err(bad("size/stride is not a tuple")),
        }
    };
    Ok(TensorRef { key: key.clone(), offset: int(&args[1])?, shape: ints(&args[2])?, stride: ints(&args[3])?, dtype })
}

fn load_tensor<R: Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>, dir: &str, info: &TensorRef) -> Result<Tensor> {
    // Only contiguous (row-major) tensors: all the archive needs.
    let mut expect = 1;
    for (d, s) in info.shape.iter().zip(&info.stride).rev() {
        if *d > 1 && *s != expect {
            bail!("non-contiguous layout {:?} / {:?}", info.shape, info.stride);
        }
        expect *= d;
    }
    let entry = format!("{dir}/{}", info.key);
    let mut bytes = Vec::new();
    zip.by_name(&entry).with_context(|| format!("storage {entry} is missing"))?.read_to_end(&mut bytes)?;
    let esize = info.dtype.size_in_bytes();
    let count: usize = info.shape.iter().product();
    let start = info.offset * esize;
    let end = start + count * esize;
    if bytes.len() < end {
        bail!("storage {entry} holds {} bytes, need {end}", bytes.len());
    }
    let t = Tensor::from_raw_buffer(&bytes[start..end], info.dtype, &info.shape, &Device::Cpu)?;
    Ok(t.to_dtype(DType::F32)?)
}
