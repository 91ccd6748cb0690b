//! What a run leaves for people to look at: progress.gif over the sample grids,
//! losses.png with the loss curves, metrics.png when the run evaluated itself, and
//! report.html with all of it on one self-contained page (`html`).

pub mod html;

use crate::train::eval::{MetricsLine, METRICS_FILE};
use crate::train::stats;
use anyhow::{Context, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// At most this many frames go into progress.gif (evenly spaced, last one kept).
pub const MAX_GIF_FRAMES: usize = 60;

pub fn sample_grids(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("samples"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().map(|n| n.to_string_lossy().starts_with("step-")).unwrap_or(false)
                && p.extension().map(|e| e == "png").unwrap_or(false)
        })
        .collect();
    v.sort();
    v
}

/// Builds runs/NAME/progress.gif and runs/NAME/losses.png from what the run wrote.
pub fn write_report(run: &Path) -> Result<()> {
    let grids = sample_grids(run);
    if !grids.is_empty() {
        write_gif(&grids, &run.join("progress.gif"))?;
    }
    let stats_path = run.join("stats.jsonl");
    if stats_path.exists() {
        plot_losses(&stats::read(&stats_path)?, &run.join("losses.png"))?;
    }
    let metrics_path = run.join(METRICS_FILE);
    if metrics_path.exists() {
        let lines = crate::train::eval::read(&metrics_path)?;
        if !lines.is_empty() {
            plot_metrics(&lines, &run.join("metrics.png"))?;
        }
    }
    html::write_html(run)
}

pub fn write_gif(frames: &[PathBuf], out: &Path) -> Result<()> {
    let n = frames.len();
    let picks: Vec<&PathBuf> = if n <= MAX_GIF_FRAMES {
        frames.iter().collect()
    } else {
        (0..MAX_GIF_FRAMES).map(|i| &frames[i * (n - 1) / (MAX_GIF_FRAMES - 1)]).collect()
    };
    let mut frames = Vec::new();
    for (i, p) in picks.iter().enumerate() {
        let img = image::open(p).with_context(|| format!("cannot read {}", p.display()))?.to_rgb8();
        frames.push((img, if i + 1 == picks.len() { 1500 } else { 200 }));
    }
    encode_gif(frames, out)
}

/// Writes frames, each shown for its number of milliseconds, as a looping GIF (atomically).
pub fn encode_gif(frames: Vec<(image::RgbImage, u32)>, out: &Path) -> Result<()> {
    let tmp = crate::fsutil::temp_path_for(out);
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", out.display()))?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(Repeat::Infinite)?;
    for (img, ms) in frames {
        let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
        enc.encode_frame(Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(ms, 1)))?;
    }
    drop(enc);
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))
}

/// Registers a system sans-serif font for plot labels; false if none is found (the
/// plot is then drawn without text).
pub(crate) fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        const CANDIDATES: &[&str] = &[
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ];
        CANDIDATES.iter().any(|p| {
            std::fs::read(p)
                .ok()
                .map(|b| {
                    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(b.into_boxed_slice()))
                        .is_ok()
                })
                .unwrap_or(false)
        })
    })
}

/// D and G loss curves against the step.
pub fn plot_losses(lines: &[stats::StatsLine], out: &Path) -> Result<()> {
    let series = |f: fn(&stats::StatsLine) -> f64| lines.iter().map(|l| (l.step as f64, f(l))).collect::<Vec<_>>();
    let curves = [("D loss", RED, series(|l| l.d_loss)), ("G loss", BLUE, series(|l| l.g_loss))];
    plot_curves("facegan losses", "step", "loss", &curves, out)
}

/// The evaluations of metrics.jsonl against the step: FID, and KID x 100 and SWD
/// where they were computed.
pub fn plot_metrics(lines: &[MetricsLine], out: &Path) -> Result<()> {
    let series = |f: fn(&MetricsLine) -> Option<f64>| {
        lines.iter().filter_map(|l| f(l).map(|v| (l.step as f64, v))).collect::<Vec<_>>()
    };
    let curves = [
        ("FID", RED, series(|l| l.fid)),
        ("KID x 100", BLUE, series(|l| l.kid.map(|k| k * 100.0))),
        ("SWD (x1e3)", GREEN, series(|l| l.swd)),
    ];
    let curves: Vec<_> = curves.into_iter().filter(|c| !c.2.is_empty()).collect();
    plot_curves("facegan evaluation", "step", "metric (lower is better)", &curves, out)
}

/// One point of a truncation sweep: (ψ, FID, precision, recall), each metric where computed.
pub type SweepPoint = (f64, Option<f64>, Option<f64>, Option<f64>);

/// A truncation sweep: FID, and precision and recall x 100, against ψ.
pub fn plot_truncation_sweep(points: &[SweepPoint], out: &Path) -> Result<()> {
    let series = |f: &dyn Fn(&SweepPoint) -> Option<f64>| {
        let mut v: Vec<(f64, f64)> = points.iter().filter_map(|p| f(p).map(|y| (p.0, y))).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let curves = [
        ("FID", RED, series(&|p| p.1)),
        ("precision x 100", BLUE, series(&|p| p.2.map(|v| v * 100.0))),
        ("recall x 100", GREEN, series(&|p| p.3.map(|v| v * 100.0))),
    ];
    let curves: Vec<_> = curves.into_iter().filter(|c| !c.2.is_empty()).collect();
    plot_curves("truncation sweep", "truncation ψ (1: none)", "metric", &curves, out)
}

/// One run's learning curve for `facegan compare --curves`: its caption and evaluations,
/// each with the real images D had seen (filled in from the run's configuration for lines
/// written before metrics.jsonl recorded them).
pub struct LearningCurve {
    pub label: String,
    /// The preset the run started from (its config.toml's `preset`).
    pub preset: String,
    /// Trainable parameters per network of the run's newest checkpoint (empty when it has
    /// none).
    pub parameters: std::collections::BTreeMap<String, usize>,
    pub lines: Vec<MetricsLine>,
}

impl LearningCurve {
    /// The curve of a run folder, of the run folder holding a checkpoint
    /// (`RUN/checkpoints/step-N.safetensors`), or the one a continuation file carries,
    /// captioned `label` or the folder's (file's) name.
    pub fn of_run(model: &Path, label: Option<&str>) -> Result<Self> {
        // Only a continuation file carries its curve; a run's checkpoint points to its folder.
        if model.is_file() {
            let meta = crate::train::checkpoint::read_metadata(model)?;
            if meta.get("kind").map(String::as_str) == Some(crate::train::checkpoint::KIND_CONTINUATION) {
                let ck = crate::train::checkpoint::read(model, &candle_core::Device::Cpu)?;
                return Self::of_continuation(&ck, label);
            }
        }
        let run = if model.is_dir() {
            model.to_path_buf()
        } else {
            model.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
        };
        let path = run.join(METRICS_FILE);
        if !path.is_file() {
            anyhow::bail!(
                "{}: no learning curve ({METRICS_FILE} is missing); a run records one when trained with --eval-every N",
                model.display()
            );
        }
        let mut lines = crate::train::eval::read(&path)?;
        let cfg = crate::config::RunConfig::load(&run.join("config.toml"))?;
        let per_step = cfg.train.images_per_step();
        for l in &mut lines {
            l.images_seen.get_or_insert(l.step * per_step);
        }
        let checkpoint = if model.is_dir() { crate::train::checkpoint::latest(&run).ok() } else { Some(model.into()) };
        let parameters = match checkpoint {
            Some(ck) => crate::train::checkpoint::parameter_counts(&ck)?,
            None => Default::default(),
        };
        let name = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label = label.map(str::to_string).unwrap_or(name);
        Ok(Self { label, preset: cfg.preset.clone(), parameters, lines })
    }

    /// The curve a continuation file carries (`export --continuation`).
    fn of_continuation(ck: &crate::train::checkpoint::Checkpoint, label: Option<&str>) -> Result<Self> {
        let mut lines = crate::train::eval::carried_curve(ck)?;
        if lines.is_empty() {
            anyhow::bail!(
                "{}: this continuation file carries no learning curve (its run evaluated nothing with --eval-every, or the file predates curves in continuation files)",
                ck.path.display()
            );
        }
        let per_step = ck.config.train.images_per_step();
        for l in &mut lines {
            l.images_seen.get_or_insert(l.step * per_step);
        }
        let name = ck.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = name.trim_end_matches(".safetensors").trim_end_matches(".cont");
        Ok(Self {
            label: label.unwrap_or(name).to_string(),
            preset: ck.config.preset.clone(),
            parameters: crate::train::checkpoint::parameter_counts(&ck.path)?,
            lines,
        })
    }

    /// An error naming the run when it has no FID evaluation to plot (a table shows it anyway).
    pub fn check_plottable(&self) -> Result<()> {
        if self.lines.iter().all(|l| l.fid.is_none()) {
            anyhow::bail!(
                "{}: its {METRICS_FILE} has no FID evaluation to plot (train with --eval-metrics fid)",
                self.label
            );
        }
        Ok(())
    }
}

/// `n` with a comma between groups of three digits.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The runs' evaluations as one Markdown table (`facegan compare --table`): per run its
/// preset and parameter counts, then a row per evaluation with the step, the real images
/// shown to D, the training CPU-hours and CPU seconds per image (where the run counted
/// them) and each metric it measured. Columns no run has are left out.
pub fn learning_table(runs: &[LearningCurve]) -> String {
    let lines = || runs.iter().flat_map(|r| r.lines.iter());
    let mut counts: Vec<usize> = lines().map(|l| l.num_fake).collect();
    counts.sort_unstable();
    counts.dedup();
    let fid_head = match counts[..] {
        [n] => crate::metrics::protocol_name(n),
        _ => "FID".to_string(),
    };
    let has = |f: fn(&MetricsLine) -> bool| lines().any(f);
    let (kid, pr, swd) = (has(|l| l.kid.is_some()), has(|l| l.precision.is_some()), has(|l| l.swd.is_some()));
    let mut head = vec!["run", "preset", "parameters G / D", "step", "real images", "CPU-hours", "CPU-s per image"];
    head.push(&fid_head);
    if kid {
        head.push("KID");
    }
    if pr {
        head.push("precision / recall");
    }
    if swd {
        head.push("SWD (x1e3)");
    }
    let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    for r in runs {
        let millions = |net: &str| opt(r.parameters.get(net).map(|&n| n as f64), &|n| format!("{:.2} M", n / 1e6));
        for (i, l) in r.lines.iter().enumerate() {
            let mut row = match i {
                0 => vec![r.label.clone(), r.preset.clone(), format!("{} / {}", millions("G"), millions("D"))],
                _ => vec![String::new(); 3],
            };
            row.push(grouped(l.step));
            row.push(l.images_seen.map(grouped).unwrap_or_else(|| "-".into()));
            row.push(opt(l.cpu_s, &|c| format!("{:.2}", c / 3600.0)));
            let per_image = l.cpu_s.zip(l.images_seen.filter(|&n| n > 0)).map(|(c, n)| c / n as f64);
            row.push(opt(per_image, &|c| format!("{c:.3}")));
            let fid = opt(l.fid, &|f| format!("{f:.1}"));
            row.push(match counts.len() {
                1 => fid,
                _ => format!("{fid} ({})", crate::metrics::protocol_name(l.num_fake)),
            });
            if kid {
                row.push(opt(l.kid, &|k| format!("{k:.3}")));
            }
            if pr {
                row.push(match (l.precision, l.recall) {
                    (Some(p), Some(r)) => format!("{p:.3} / {r:.3}"),
                    _ => "-".into(),
                });
            }
            if swd {
                row.push(opt(l.swd, &|v| format!("{v:.1}")));
            }
            out += &format!("| {} |\n", row.join(" | "));
        }
    }
    out
}

/// Colours of successive runs' curves.
const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Runs' FID against thousands of real images shown to D (left) and against the hours of
/// CPU their training used (right; runs that did not record it are left out there and
/// named in the caption), as one PNG: which family gets furthest per image and per
/// CPU-hour.
pub fn plot_learning_curves(runs: &[LearningCurve], out: &Path) -> Result<()> {
    runs.iter().try_for_each(LearningCurve::check_plottable)?;
    let fid = |l: &MetricsLine| l.fid.filter(|f| f.is_finite());
    let mut by_images = Vec::new();
    let mut by_cpu = Vec::new();
    let mut uncounted = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts = r.lines.iter().filter_map(|l| Some((l.images_seen? as f64 / 1000.0, fid(l)?))).collect();
        by_images.push((r.label.as_str(), colour, pts));
        let cpu: Vec<(f64, f64)> = r.lines.iter().filter_map(|l| Some((l.cpu_s? / 3600.0, fid(l)?))).collect();
        if cpu.is_empty() {
            uncounted.push(r.label.as_str());
        } else {
            by_cpu.push((r.label.as_str(), colour, cpu));
        }
    }
    // The y axis names the number of generated faces when every evaluation used the same.
    let mut counts: Vec<usize> = runs.iter().flat_map(|r| r.lines.iter().map(|l| l.num_fake)).collect();
    counts.dedup();
    let y = match counts[..] {
        [n] => format!("FID ({n} generated)"),
        _ => "FID (sample counts differ between evaluations)".to_string(),
    };
    let right = match uncounted.is_empty() {
        true => "FID by training CPU-hours".to_string(),
        false => format!("FID by training CPU-hours (not counted: {})", uncounted.join(", ")),
    };
    let (w, h) = (1400u32, 500u32);
    render(out, (w, h), |root| {
        let (a, b) = root.split_horizontally(w / 2);
        draw_chart(&a, "FID by real images shown to D", "thousands of images", &y, &by_images)?;
        draw_chart(&b, &right, "CPU-hours", &y, &by_cpu)
    })
}

/// A named, coloured curve of (x, value) points.
type Curve<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws with `f` on a white `size` bitmap and writes it as a PNG.
fn render(out: &Path, (w, h): (u32, u32), f: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        f(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer matches the plot size");
    crate::sample::grid::save_png(&img, out)
}

/// Named curves of (x, value) on one chart from x = 0, written as a PNG.
fn plot_curves(caption: &str, x_desc: &str, y_desc: &str, curves: &[Curve], out: &Path) -> Result<()> {
    render(out, (900, 500), |root| draw_chart(root, caption, x_desc, y_desc, curves))
}

/// Named curves of (x, value) on one chart from x = 0, in `root`.
fn draw_chart(root: &Area, caption: &str, x_desc: &str, y_desc: &str, curves: &[Curve]) -> Result<()> {
    let text = font_available();
    {
        let points = || curves.iter().flat_map(|c| c.2.iter()).filter(|p| p.1.is_finite());
        let max_step = points().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (lo, hi) = if lo.is_finite() { (lo.min(0.0), hi.max(lo + 1e-3) * 1.05) } else { (0.0, 1.0) };
        let mut builder = ChartBuilder::on(root);
        builder.margin(15);
        if text {
            builder.caption(caption, ("sans-serif", 22)).x_label_area_size(40).y_label_area_size(55);
        }
        let mut chart = builder.build_cartesian_2d(0f64..max_step, lo..hi).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_desc).y_desc(y_desc);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, colour, points) in curves {
            let colour = *colour;
            let series = chart
                .draw_series(LineSeries::new(
                    points.iter().copied().filter(|p| p.1.is_finite()),
                    colour.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if text {
                series
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            }
            // A mark on each point: evaluations are few and far between.
            chart
                .draw_series(points.iter().filter(|p| p.1.is_finite()).map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if text && !curves.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        let g: Vec<String> = [0, 999, 1_000, 64_000, 1_234_567].into_iter().map(grouped).collect();
        assert_eq!(g, ["0", "999", "1,000", "64,000", "1,234,567"]);
    }

    #[test]
    fn learning_table_names_mixed_protocols_and_keeps_only_measured_columns() {
        let line = |step, num_fake, fid| MetricsLine { step, num_fake, fid: Some(fid), ..Default::default() };
        let mut a = vec![line(100, 1000, 320.0), line(200, 5000, 301.25)];
        a[1].images_seen = Some(64_000);
        a[1].cpu_s = Some(3_600.0 * 2.5);
        a[1].precision = Some(0.5);
        a[1].recall = Some(0.0125);
        let runs = [
            LearningCurve {
                label: "a".into(),
                preset: "sngan-64".into(),
                parameters: [("G".to_string(), 3_590_000), ("D".to_string(), 4_890_000)].into(),
                lines: a,
            },
            LearningCurve { label: "b".into(), preset: "x".into(), parameters: Default::default(), lines: vec![] },
        ];
        let t = learning_table(&runs);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert_eq!(
            rows[0],
            "| run | preset | parameters G / D | step | real images | CPU-hours | CPU-s per image | FID | precision / recall |"
        );
        assert_eq!(rows[2], "| a | sngan-64 | 3.59 M / 4.89 M | 100 | - | - | - | 320.0 (fid1k) | - |");
        assert_eq!(rows[3], "|  |  |  | 200 | 64,000 | 2.50 | 0.141 | 301.2 (fid5k) | 0.500 / 0.013 |");
    }
}
