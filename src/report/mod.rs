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
    pub lines: Vec<MetricsLine>,
}

impl LearningCurve {
    /// The curve of a run folder, or of the run folder holding a checkpoint
    /// (`RUN/checkpoints/step-N.safetensors`), captioned `label` or the folder's name.
    pub fn of_run(model: &Path, label: Option<&str>) -> Result<Self> {
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
        if lines.iter().all(|l| l.fid.is_none()) {
            anyhow::bail!("{}: has no FID evaluation to plot (train with --eval-metrics fid)", path.display());
        }
        let cfg = crate::config::RunConfig::load(&run.join("config.toml"))?;
        let per_step = cfg.train.images_per_step();
        for l in &mut lines {
            l.images_seen.get_or_insert(l.step * per_step);
        }
        let name = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { label: label.map(str::to_string).unwrap_or(name), lines })
    }
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
