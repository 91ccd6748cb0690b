//! stats.jsonl: one JSON line per logging interval.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsLine {
    pub step: u64,
    pub d_loss: f64,
    pub g_loss: f64,
    /// Mean D(x) = sigmoid(logit) on real images.
    pub d_real: f64,
    /// Mean D(G(z)) on fakes, before D's update.
    pub d_fake: f64,
    pub img_per_s: f64,
    pub elapsed_s: f64,
    /// Further means: raw logits, each penalty's value, the instance-noise level.
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// Running means of named values over one logging interval.
#[derive(Default)]
pub struct Accumulator {
    sums: BTreeMap<String, (f64, u64)>,
}

impl Accumulator {
    pub fn add(&mut self, name: &str, v: f64) {
        let e = self.sums.entry(name.to_string()).or_insert((0.0, 0));
        e.0 += v;
        e.1 += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Means so far, and resets.
    pub fn take(&mut self) -> BTreeMap<String, f64> {
        std::mem::take(&mut self.sums).into_iter().map(|(k, (s, n))| (k, s / n.max(1) as f64)).collect()
    }
}

/// A stats line from the interval's means; the named fields are taken out of `means`.
pub fn line(step: u64, mut means: BTreeMap<String, f64>, img_per_s: f64, elapsed_s: f64) -> StatsLine {
    let mut take = |k: &str| means.remove(k).unwrap_or(f64::NAN);
    StatsLine {
        step,
        d_loss: take("d_loss"),
        g_loss: take("g_loss"),
        d_real: take("d_real"),
        d_fake: take("d_fake"),
        img_per_s,
        elapsed_s,
        extra: means,
    }
}

/// CPU seconds (user + system, all threads) this process has used; 0 where the platform
/// does not say.
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a plain struct into memory we own.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } == 0 {
            let u = unsafe { u.assume_init() };
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            return secs(u.ru_utime) + secs(u.ru_stime);
        }
    }
    0.0
}

/// Appends one value as a JSON line (stats.jsonl, metrics.jsonl).
pub fn append<T: Serialize>(path: &Path, line: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads stats.jsonl.
pub fn read(path: &Path) -> Result<Vec<StatsLine>> {
    read_jsonl(path)
}

/// Reads a JSON-lines file, skipping lines that do not parse (a line cut by a crash).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Drops the lines of a JSON-lines log whose "step" is past `step` (after a resume
/// from an earlier checkpoint), and lines that do not parse.
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut kept = String::new();
    for l in text.lines() {
        let s = serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v.get("step")?.as_u64());
        if s.is_some_and(|s| s <= step) {
            kept.push_str(l);
            kept.push('\n');
        }
    }
    crate::fsutil::write_atomic(path, kept.as_bytes())
}
