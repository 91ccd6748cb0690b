//! stats.jsonl: one JSON line per logging interval.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
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
}

/// Running means over one logging interval.
#[derive(Default)]
pub struct Accumulator {
    n: u64,
    sums: [f64; 4],
}

impl Accumulator {
    pub fn add(&mut self, d_loss: f64, g_loss: f64, d_real: f64, d_fake: f64) {
        self.n += 1;
        for (s, v) in self.sums.iter_mut().zip([d_loss, g_loss, d_real, d_fake]) {
            *s += v;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Means so far, and resets.
    pub fn take(&mut self) -> [f64; 4] {
        let n = self.n.max(1) as f64;
        let out = self.sums.map(|s| s / n);
        *self = Self::default();
        out
    }
}

pub fn append(path: &Path, line: &StatsLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads stats.jsonl, skipping lines that do not parse (a line cut by a crash).
pub fn read(path: &Path) -> Result<Vec<StatsLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Drops lines past `step` (after a resume from an earlier checkpoint).
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kept: Vec<String> = read(path)?
        .into_iter()
        .filter(|l| l.step <= step)
        .map(|l| serde_json::to_string(&l).unwrap())
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}
