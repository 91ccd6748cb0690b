//! stats.jsonl: one JSON line per logging interval.

use anyhow::{Context, Result};
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

pub fn append(path: &Path, line: &StatsLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads stats.jsonl, skipping lines that do not parse (a line cut by a crash).
pub fn read(path: &Path) -> Result<Vec<StatsLine>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Drops lines past `step` (after a resume from an earlier checkpoint).
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kept: Vec<String> =
        read(path)?.into_iter().filter(|l| l.step <= step).map(|l| serde_json::to_string(&l).unwrap()).collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}
