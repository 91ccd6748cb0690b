//! Checkpoints: one safetensors file per save with every network, both optimizers'
//! moments, the step, the RNG state and the configuration (as metadata). Written to a
//! temporary file and renamed, so a crash never leaves a half-written checkpoint.

use crate::config::RunConfig;
use crate::fsutil::{ensure_dir, temp_path_for};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata tag of a checkpoint is this prefix and its format version.
pub const FORMAT_PREFIX: &str = "facegan-checkpoint-";
/// The format this build writes. 1: before model families (DCGAN only). 2: the family
/// registry: the configuration may carry layer options, and the metadata names the family.
/// Tensor names are the same in both, so version 1 files load as they are.
pub const FORMAT_VERSION: u32 = 2;
/// A checkpoint holding every network and the optimizer state.
pub const KIND_FULL: &str = "full";
/// A checkpoint holding only the EMA generator, for sharing and `generate`.
pub const KIND_GENERATOR: &str = "generator";
/// G, D and the EMA generator in f16 without optimizer moments, for going on with training
/// elsewhere (`export --continuation`, `train --init-from`).
pub const KIND_CONTINUATION: &str = "continuation";

pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
    pub config: RunConfig,
}

impl Checkpoint {
    pub fn kind(&self) -> &str {
        self.meta.get("kind").map(String::as_str).unwrap_or("")
    }

    /// The format version the file was written in (1 or 2).
    pub fn format_version(&self) -> u32 {
        self.meta.get("format").and_then(|f| parse_format(f)).unwrap_or(0)
    }

    pub fn step(&self) -> u64 {
        self.meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta
            .get(key)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: metadata '{key}' is missing or not a number", self.path.display()))
    }
}

/// Writes `tensors` with `meta` to `path` (temp file, then rename). With `half`, f32
/// tensors are stored as f16.
pub fn write(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    mut meta: HashMap<String, String>,
    half: bool,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            ensure_dir(dir)?;
        }
    }
    meta.insert("format".into(), format!("{FORMAT_PREFIX}{FORMAT_VERSION}"));
    let mut cpu = HashMap::new();
    for (k, t) in tensors {
        let t = t.detach().to_device(&Device::Cpu)?;
        let t = if half && t.dtype() == DType::F32 { t.to_dtype(DType::F16)? } else { t };
        cpu.insert(k.clone(), t);
    }
    // The SHA-256 of the tensor data goes into the metadata; the data section does not
    // depend on the metadata, so it is serialised once to hash it and once to write it.
    let serialize = |meta: &HashMap<String, String>| {
        safetensors::serialize(cpu.iter().map(|(k, v)| (k.as_str(), v)), Some(meta.clone()))
            .with_context(|| format!("cannot write checkpoint {}", path.display()))
    };
    let first = serialize(&meta)?;
    meta.insert(CHECKSUM_KEY.into(), data_sha256(&first).context("serialised checkpoint has no header")?);
    let bytes = serialize(&meta)?;
    drop(first);
    let tmp = temp_path_for(path);
    if let Err(e) = std::fs::write(&tmp, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write checkpoint {}: {e} (the previous checkpoints are untouched)", path.display());
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Metadata key of the SHA-256 (hex) of a checkpoint's tensor data.
pub const CHECKSUM_KEY: &str = "sha256";

/// SHA-256 (hex) of the data section of serialised safetensors bytes (after the 8-byte
/// header length and the header); None when the bytes are too short to hold a header.
fn data_sha256(bytes: &[u8]) -> Option<String> {
    use sha2::Digest;
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let start = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let digest = sha2::Sha256::digest(bytes.get(start..)?);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a checkpoint; every failure names the file and what is wrong with it.
pub fn read(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let bad = |why: String| anyhow::anyhow!("{}: not a usable facegan checkpoint: {why}", path.display());
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("{e:?} (truncated or not a safetensors file)")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    match meta.get("format").and_then(|f| parse_format(f)) {
        None => return Err(bad(format!("no '{FORMAT_PREFIX}N' format tag"))),
        Some(v) if v > FORMAT_VERSION => {
            return Err(bad(format!(
                "it is format {v}, written by a newer facegan; this build reads formats 1 to {FORMAT_VERSION}"
            )))
        }
        Some(_) => {}
    }
    // Files from before checksums have none; a present one must match.
    if let Some(want) = meta.get(CHECKSUM_KEY) {
        if data_sha256(&bytes).as_deref() != Some(want.as_str()) {
            return Err(bad(
                "its tensor data does not match its SHA-256 checksum (damaged on disk or in transfer)".into()
            ));
        }
    }
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(format!("{e} (truncated?)")))?;
    let config_text = meta.get("config").ok_or_else(|| bad("no config in its metadata".into()))?;
    let config = RunConfig::from_toml(config_text, &format!("{} (embedded config)", path.display()))?;
    Ok(Checkpoint { path: path.to_path_buf(), tensors, meta, config })
}

/// The JSON header of the safetensors file at `path` (tensor names, shapes and the
/// `__metadata__` table), read without reading any tensor.
fn read_header(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    use std::io::Read;
    let bad = |why: String| anyhow::anyhow!("{}: not a usable facegan checkpoint: {why}", path.display());
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| bad("shorter than a safetensors header".into()))?;
    let len = u64::from_le_bytes(len);
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > file_len.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!("its header claims {len} bytes (truncated or not a safetensors file)")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| bad(format!("cannot read its header: {e}")))?;
    serde_json::from_slice(&header).map_err(|e| bad(format!("its header is not JSON: {e}")))
}

/// The metadata of the checkpoint at `path` (kind, step, configuration, ...) from its
/// header alone: no tensor is read and the checksum is not verified (`read` does that).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let header = read_header(path)?;
    let Some(meta) = header.get("__metadata__") else { return Ok(HashMap::new()) };
    serde_json::from_value(meta.clone()).map_err(|e| {
        anyhow::anyhow!("{}: not a usable facegan checkpoint: its metadata is malformed: {e}", path.display())
    })
}

/// Trainable parameters per network of the checkpoint at `path` (tensors named
/// `NET.params.*`; buffers such as batch-norm statistics and the optimizers' moments are
/// not parameters), from the file's header alone: no tensor is read.
pub fn parameter_counts(path: &Path) -> Result<std::collections::BTreeMap<String, usize>> {
    let bad = |why: String| anyhow::anyhow!("{}: not a usable facegan checkpoint: {why}", path.display());
    let header = read_header(path)?;
    let mut counts = std::collections::BTreeMap::new();
    for (name, info) in &header {
        let mut parts = name.split('.');
        if let (Some(net), Some("params")) = (parts.next(), parts.next()) {
            let shape = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("tensor {name} has no shape")))?;
            let n = shape.iter().map(|d| d.as_u64().map(|d| d as usize)).product::<Option<usize>>();
            *counts.entry(net.to_string()).or_default() += n.ok_or_else(|| bad(format!("tensor {name}: bad shape")))?;
        }
    }
    Ok(counts)
}

pub fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

pub fn checkpoint_path(run: &Path, step: u64) -> PathBuf {
    checkpoint_dir(run).join(format!("step-{step:07}.safetensors"))
}

/// Checkpoints of a run, oldest first.
pub fn list_checkpoints(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(checkpoint_dir(run))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The newest checkpoint of `run`, or an error saying there is none.
pub fn latest(run: &Path) -> Result<PathBuf> {
    if !run.is_dir() {
        bail!("{}: no such run folder", run.display());
    }
    list_checkpoints(run)
        .pop()
        .map(|c| c.1)
        .with_context(|| format!("{}: the run has no checkpoints in {}", run.display(), checkpoint_dir(run).display()))
}

/// The newest checkpoint of `run` that reads and passes its checksum; damaged newer ones
/// are skipped with a warning naming them.
pub fn read_latest(run: &Path, device: &Device) -> Result<Checkpoint> {
    latest(run)?;
    let mut errors = Vec::new();
    for (_, p) in list_checkpoints(run).into_iter().rev() {
        match read(&p, device) {
            Ok(ck) => {
                // Said once per process: `train --resume` reads the newest good checkpoint
                // twice (its settings first, then the whole run).
                static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
                let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
                let new: Vec<_> = errors.iter().filter(|(q, _)| !warned.contains(q)).collect();
                for (_, e) in &new {
                    eprintln!("warning: skipping {e}");
                }
                if !new.is_empty() {
                    eprintln!("warning: using the newest good checkpoint, {}", p.display());
                }
                warned.extend(errors.iter().map(|(q, _)| q.clone()));
                return Ok(ck);
            }
            Err(e) => errors.push((p.clone(), format!("{e:#}"))),
        }
    }
    let errors: Vec<String> = errors.into_iter().map(|e| e.1).collect();
    bail!("{}: no checkpoint of the run is usable:\n  {}", run.display(), errors.join("\n  "))
}

/// Deletes all but the newest `keep` checkpoints.
pub fn prune(run: &Path, keep: usize) {
    let list = list_checkpoints(run);
    for (_, p) in list.iter().take(list.len().saturating_sub(keep)) {
        let _ = std::fs::remove_file(p);
    }
}

/// The version in a format tag `facegan-checkpoint-N`.
fn parse_format(tag: &str) -> Option<u32> {
    tag.strip_prefix(FORMAT_PREFIX)?.parse().ok().filter(|&v| v >= 1)
}

pub fn base_meta(kind: &str, step: u64, config: &RunConfig) -> HashMap<String, String> {
    HashMap::from([
        ("kind".to_string(), kind.to_string()),
        ("family".to_string(), config.model.arch.clone()),
        ("step".to_string(), step.to_string()),
        ("config".to_string(), config.to_toml()),
    ])
}
