//! runs/NAME/report.html: one self-contained page (every image inlined as a data URI, the
//! curves as inline SVG, no script or style from anywhere else) with the run's
//! configuration, its sample grids over time behind a slider, the loss, penalty and metric
//! curves, throughput and the machine it ran on.

use crate::train::eval::{MetricsLine, METRICS_FILE};
use crate::train::stats::{self, StatsLine};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { A[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Named series of (x, y) points, one line each in a plot.
pub type Series = Vec<(String, Vec<(f64, f64)>)>;

const COLOURS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// An SVG line plot of named series of (x, y) points, with the axis ranges written out.
pub fn svg_plot(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let rows = series.len().div_ceil(5).max(1) as f64; // legend rows of five names
    let (w, left, bottom) = (640.0, 60.0, 18.0 + 14.0 * rows);
    let h = 230.0 + bottom;
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).filter(|p| p.1.is_finite()).collect();
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    if pts.is_empty() {
        svg.push_str("</svg></figure>");
        return svg;
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let px = |x: f64| left + (x - x0) / xs * (w - left - 10.0);
    let py = |y: f64| 10.0 + (1.0 - (y - y0) / ys) * (h - bottom - 10.0);
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="10" width="{}" height="{}" fill="none" stroke="#999"/><text x="4" y="16" font-size="11">{y1:.4}</text><text x="4" y="{}" font-size="11">{y0:.4}</text><text x="{left}" y="{}" font-size="11">{x0}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{x1}</text>"##,
        w - left - 10.0,
        h - bottom - 10.0,
        h - bottom,
        h - bottom + 12.0,
        w - 10.0,
        h - bottom + 12.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> =
            points.iter().filter(|p| p.1.is_finite()).map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            path.join(" "),
            left + 8.0 + 110.0 * (i % 5) as f64,
            h - bottom + 28.0 + 14.0 * (i / 5) as f64,
            escape(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn hardware() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores available to this process, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn loss_series(lines: &[StatsLine]) -> (Series, Series) {
    let pick = |f: &dyn Fn(&StatsLine) -> f64| lines.iter().map(|l| (l.step as f64, f(l))).collect::<Vec<_>>();
    let losses = vec![("D loss".to_string(), pick(&|l| l.d_loss)), ("G loss".to_string(), pick(&|l| l.g_loss))];
    let mut extra: Series =
        vec![("D(x)".to_string(), pick(&|l| l.d_real)), ("D(G(z))".to_string(), pick(&|l| l.d_fake))];
    let mut keys: Vec<&String> =
        lines.iter().flat_map(|l| l.extra.keys()).filter(|k| k.starts_with("penalty_")).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let pts = lines.iter().filter_map(|l| l.extra.get(k).map(|v| (l.step as f64, *v))).collect();
        extra.push((k.trim_start_matches("penalty_").to_string(), pts));
    }
    (losses, extra)
}

/// Writes runs/NAME/report.html from what the run wrote.
pub fn write_html(run: &Path) -> Result<()> {
    let name = run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap_or_else(|_| "(no config.toml)".into());
    let stats_path = run.join("stats.jsonl");
    let lines = if stats_path.exists() { stats::read(&stats_path)? } else { Vec::new() };
    let metrics: Vec<MetricsLine> = match run.join(METRICS_FILE).exists() {
        true => crate::train::eval::read(&run.join(METRICS_FILE))?,
        false => Vec::new(),
    };
    let grids = super::sample_grids(run);
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>facegan run {n}</title><style>
body{{font-family:sans-serif;margin:2em;max-width:1000px}} pre{{background:#f4f4f4;padding:1em;overflow:auto;max-height:24em}}
.grid{{display:none;max-width:100%}} .grid.shown{{display:block}} figure{{margin:1em 0}} td,th{{padding:2px 10px;text-align:left}}
</style></head><body><h1>facegan run {n}</h1>"#,
        n = escape(&name)
    );
    let last = lines.last();
    let recent: Vec<f64> = lines.iter().rev().take(5).map(|l| l.img_per_s).filter(|v| v.is_finite()).collect();
    let ips = if recent.is_empty() { f64::NAN } else { recent.iter().sum::<f64>() / recent.len() as f64 };
    let _ = write!(
        html,
        "<table><tr><th>step reached</th><td>{}</td></tr><tr><th>wall time (since the last resume)</th><td>{:.0} s</td></tr><tr><th>CPU time of training (every resume)</th><td>{}</td></tr><tr><th>images/s (last {} intervals)</th><td>{:.1}</td></tr><tr><th>machine</th><td>{}</td></tr><tr><th>facegan</th><td>{}</td></tr></table>",
        last.map(|l| l.step).unwrap_or(0),
        last.map(|l| l.elapsed_s).unwrap_or(0.0),
        match last.and_then(|l| l.extra.get("cpu_s")) {
            Some(c) => format!("{:.2} CPU-hours", c / 3600.0),
            None => "not recorded".to_string(),
        },
        recent.len(),
        ips,
        escape(&hardware()),
        env!("CARGO_PKG_VERSION")
    );
    let _ = write!(html, "<h2>Samples over time</h2><p><input id=\"slider\" type=\"range\" min=\"0\" max=\"{}\" value=\"{}\" style=\"width:100%\"> <span id=\"caption\"></span></p>", grids.len().saturating_sub(1), grids.len().saturating_sub(1));
    for (i, g) in grids.iter().enumerate() {
        let bytes = std::fs::read(g).with_context(|| format!("cannot read {}", g.display()))?;
        let step = g
            .file_stem()
            .map(|s| s.to_string_lossy().trim_start_matches("step-").trim_start_matches('0').to_string())
            .unwrap_or_default();
        let step = if step.is_empty() { "0".to_string() } else { step };
        let _ = write!(
            html,
            r#"<img class="grid{}" data-step="{step}" alt="samples at step {step}" src="data:image/png;base64,{}">"#,
            if i + 1 == grids.len() { " shown" } else { "" },
            base64(&bytes)
        );
    }
    html.push_str("<h2>Curves</h2>");
    let (losses, extra) = loss_series(&lines);
    html.push_str(&svg_plot("losses by step", &losses));
    html.push_str(&svg_plot("D(x), D(G(z)) and penalties by step", &extra));
    let ips_series = vec![("images/s".to_string(), lines.iter().map(|l| (l.step as f64, l.img_per_s)).collect())];
    html.push_str(&svg_plot("real images shown to D per second", &ips_series));
    if !metrics.is_empty() {
        let m = |f: &dyn Fn(&MetricsLine) -> Option<f64>| {
            metrics.iter().filter_map(|l| f(l).map(|v| (l.step as f64, v))).collect::<Vec<_>>()
        };
        let series: Series = [
            ("FID", m(&|l| l.fid)),
            ("KID", m(&|l| l.kid)),
            ("precision", m(&|l| l.precision)),
            ("recall", m(&|l| l.recall)),
            ("SWD x1e3", m(&|l| l.swd)),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for s in series {
            html.push_str(&svg_plot(&format!("{} by step", s.0), std::slice::from_ref(&s)));
        }
    }
    if run.join("progress.gif").exists() {
        let gif = std::fs::read(run.join("progress.gif"))?;
        let _ =
            write!(html, r#"<h2>progress.gif</h2><img alt="progress" src="data:image/gif;base64,{}">"#, base64(&gif));
    }
    let _ = write!(html, "<h2>Configuration</h2><pre>{}</pre>", escape(&config));
    html.push_str(
        r#"<script>
const grids = document.querySelectorAll("img.grid");
const slider = document.getElementById("slider");
const caption = document.getElementById("caption");
function show(i) {
  grids.forEach((g, k) => g.classList.toggle("shown", k === i));
  caption.textContent = grids.length ? "step " + grids[i].dataset.step + " (" + (i + 1) + " of " + grids.length + ")" : "no sample grids";
}
slider.addEventListener("input", () => show(Number(slider.value)));
show(grids.length - 1);
document.body.dataset.ready = String(grids.length);
</script></body></html>
"#,
    );
    crate::fsutil::write_atomic(&run.join("report.html"), html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_the_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
