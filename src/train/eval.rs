//! Evaluation during training (`--eval-every`): the EMA generator against the first
//! images of the training data, or against the held-out ones (`data.held_out`), one JSON
//! line per evaluation in metrics.jsonl.

use crate::config::RunConfig;
use crate::data::cache::Dataset;
use crate::metrics::{parse_metrics, EvalOptions, EvalReport, Evaluator, Source};
use crate::models::Generator;
use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Latent seed of the faces evaluated during training (the same at every evaluation,
/// so successive values differ by the model alone).
pub const EVAL_SEED: u64 = 0;

/// One line of metrics.jsonl. Metrics not computed are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    pub num_fake: usize,
    pub num_real: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    /// Mean multi-scale SWD (x1e3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swd: Option<f64>,
    /// Seconds the evaluation took (absent from points restored from elsewhere: an
    /// export's `facegan eval`, a table of an earlier run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Real images shown to D before this evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_seen: Option<u64>,
    /// CPU seconds of training before this evaluation (evaluations left out), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
}

impl MetricsLine {
    pub fn from_report(step: u64, r: &EvalReport, seconds: f64) -> Self {
        Self {
            step,
            num_fake: r.num_fake,
            num_real: r.num_real,
            fid: r.fid,
            kid: r.kid.as_ref().map(|k| k.mean),
            kid_std: r.kid.as_ref().map(|k| k.std),
            precision: r.precision,
            recall: r.recall,
            swd: r.swd.as_ref().map(|s| s.mean),
            seconds: Some(seconds),
            images_seen: None,
            cpu_s: None,
        }
    }

    /// "FID 41.2 KID 0.031" and so on, for the progress output.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: Option<f64>, digits: usize| {
            if let Some(v) = v {
                parts.push(format!("{name} {v:.digits$}"));
            }
        };
        add("FID", self.fid, 2);
        add("KID", self.kid, 4);
        add("precision", self.precision, 3);
        add("recall", self.recall, 3);
        add("SWD", self.swd, 2);
        parts.join(" ")
    }
}

/// The evaluator of a run: Inception and the real features stay loaded between
/// evaluations.
pub struct TrainEval {
    evaluator: Evaluator,
    num: usize,
    path: PathBuf,
}

impl TrainEval {
    /// `None` when the configuration asks for no evaluation. Fails at once (before any
    /// training) when the Inception weights are missing or the data is too small.
    pub fn new(cfg: &RunConfig, data: &Dataset, run: &Path, device: &Device, progress: bool) -> Result<Option<Self>> {
        let l = &cfg.log;
        if l.eval_every == 0 {
            return Ok(None);
        }
        // With held-out images, the reference is (the last of) them: faces G never saw.
        let held = cfg.data.held_out;
        let pool = if held > 0 { held } else { data.len() };
        let num_real = l.eval_num_real.unwrap_or(l.eval_num).min(pool);
        let mut opts = EvalOptions::new(Source::Checkpoint(PathBuf::new()), Source::Cache(data.path.clone()));
        opts.metrics = parse_metrics(&l.eval_metrics)?;
        opts.num = l.eval_num;
        opts.num_real = Some(num_real);
        opts.real_last = held > 0;
        opts.cache_dir = Some(cfg.data.cache_dir());
        opts.device = device.clone();
        opts.seed = EVAL_SEED;
        opts.progress = progress;
        if progress {
            match held > 0 {
                true => eprintln!(
                    "evaluation: {} against the last {num_real} of the {held} held-out images",
                    l.eval_metrics
                ),
                false => eprintln!("evaluation: {} against the first {num_real} training images", l.eval_metrics),
            }
        }
        let mut evaluator = Evaluator::new(&opts, cfg.model.image_size).context("cannot set up --eval-every")?;
        // The training progress bar owns the terminal from here on.
        evaluator.set_progress(false);
        Ok(Some(Self { evaluator, num: l.eval_num, path: run.join(METRICS_FILE) }))
    }

    /// Evaluates a generator (already in eval mode with its standing statistics) and
    /// appends the line to metrics.jsonl, with the images D has seen and the training's CPU
    /// seconds so far.
    pub fn run(
        &self,
        g: &dyn Generator,
        cfg: &RunConfig,
        step: u64,
        images_seen: u64,
        cpu_s: Option<f64>,
    ) -> Result<MetricsLine> {
        let t = std::time::Instant::now();
        let r = self.evaluator.evaluate_generator(g, cfg, self.num, EVAL_SEED, &format!("step {step}"))?;
        let mut line = MetricsLine::from_report(step, &r, t.elapsed().as_secs_f64());
        line.images_seen = Some(images_seen);
        line.cpu_s = cpu_s;
        super::stats::append(&self.path, &line)?;
        Ok(line)
    }
}

/// File name of the evaluation log in a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Reads metrics.jsonl.
pub fn read(path: &Path) -> Result<Vec<MetricsLine>> {
    super::stats::read_jsonl(path)
}

/// Metadata key of a continuation file that carries its run's learning curve (the
/// metrics.jsonl lines up to the file's step, as JSON lines), so that the curve outlives
/// the run folder and goes on in the run that `train --init-from` starts.
pub const CURVE_KEY: &str = "learning_curve";

/// The learning curve a continuation file carries (empty when it has none: files written
/// before the curve was carried, or runs without `--eval-every`).
pub fn carried_curve(ck: &crate::train::checkpoint::Checkpoint) -> Result<Vec<MetricsLine>> {
    let Some(text) = ck.meta.get(CURVE_KEY) else { return Ok(Vec::new()) };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{}: line {} of its learning curve ({CURVE_KEY}) is malformed", ck.path.display(), i + 1)
            })
        })
        .collect()
}

/// The learning curve of the run folder holding `checkpoint` (`RUN/checkpoints/step-N`):
/// its metrics.jsonl lines up to `step`, or none when the run evaluated nothing.
pub fn curve_up_to(checkpoint: &Path, step: u64) -> Result<Vec<MetricsLine>> {
    let dir = checkpoint.parent();
    // Only a checkpoint inside a run folder has a curve (not one copied elsewhere).
    let Some(run) = dir.filter(|d| d.file_name().is_some_and(|n| n == "checkpoints")).and_then(Path::parent) else {
        return Ok(Vec::new());
    };
    let path = run.join(METRICS_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    Ok(read(&path)?.into_iter().filter(|l| l.step <= step).collect())
}

/// `lines` as the JSON lines of metrics.jsonl.
pub fn to_jsonl(lines: &[MetricsLine]) -> Result<String> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    Ok(text)
}
