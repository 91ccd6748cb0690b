//! Times `facegan::ops` convolutions against candle's own ops on a DCGAN layer
//! (batch 64, 128 <-> 256 channels, 4x4 kernel, stride 2, padding 1), forward and
//! forward + backward (gradients with respect to both input and weight).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench --bench conv`. `BENCH_RUNS` sets the number of
//! timed runs per measurement of our ops (default 5, after one warm-up run),
//! `BENCH_CANDLE_RUNS` that of candle's much slower ones (default 3), and
//! `BENCH_SKIP_CANDLE=1` skips the reference timings. Besides the median wall time, the median CPU time of the
//! process (all threads, Linux only) is shown: on a shared machine it is the steadier number.
//! A 2048³ candle matmul is timed first as a yardstick of the machine's GEMM speed.

use candle_core::{Device, Result, Tensor, Var};
use facegan::ops;
use std::time::Instant;

/// CPU time used so far by the live threads of this process, in ms (Linux only).
fn cpu_time_ms() -> Option<f64> {
    let mut total_ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total_ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 / 1e6)
}

/// Median wall and CPU times of one call, in ms.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: Option<f64>,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:7.1} ms", self.wall)?;
        match self.cpu {
            Some(cpu) => write!(f, " (cpu {cpu:7.1} ms)"),
            None => Ok(()),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median times of `runs` calls of `f`, after one warm-up call.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    f()?;
    let (mut walls, mut cpus) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let cpu = cpu_time_ms();
        let start = Instant::now();
        f()?;
        walls.push(start.elapsed().as_secs_f64() * 1e3);
        cpus.extend(cpu.zip(cpu_time_ms()).map(|(a, b)| b - a));
    }
    let cpu = (cpus.len() == runs).then(|| median(cpus));
    Ok(Timing { wall: median(walls), cpu })
}

/// Forward, and forward + backward from a gradient of ones on the whole output.
fn time_op(
    runs: usize,
    x: &Tensor,
    w: &Tensor,
    op: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<[Timing; 2]> {
    let forward = time(runs, || op(x, w).map(drop))?;
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let backward = time(runs, || {
        let grads = op(&xv, &wv)?.backward()?;
        assert!(grads.get(&xv).is_some() && grads.get(&wv).is_some());
        Ok(())
    })?;
    Ok([forward, backward])
}

fn report(name: &str, ours: [Timing; 2], candle: Option<[Timing; 2]>) {
    for (i, label) in ["fwd", "fwd+bwd"].into_iter().enumerate() {
        let o = ours[i];
        match candle {
            Some(c) => println!(
                "{name:<17} {label:<8} ours {o}   candle {}   speed-up {:4.1}x wall, {} cpu",
                c[i],
                c[i].wall / o.wall,
                match (c[i].cpu, o.cpu) {
                    (Some(c), Some(o)) => format!("{:4.1}x", c / o),
                    _ => "-".into(),
                }
            ),
            None => println!("{name:<17} {label:<8} ours {o}"),
        }
    }
}

fn main() -> Result<()> {
    let env_runs =
        |name: &str, default: usize| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default).max(1);
    let runs = env_runs("BENCH_RUNS", 5);
    let candle_runs = env_runs("BENCH_CANDLE_RUNS", 3);
    let skip_candle = std::env::var("BENCH_SKIP_CANDLE").is_ok_and(|s| s == "1");
    let dev = Device::Cpu;
    println!("medians of {runs} runs (candle: {candle_runs}), {} rayon threads", rayon::current_num_threads());

    let a = Tensor::randn(0f32, 1., (2048, 2048), &dev)?;
    println!("candle matmul 2048^3          {}", time(runs, || a.matmul(&a).map(drop))?);

    let x = Tensor::randn(0f32, 1., (64, 128, 32, 32), &dev)?;
    let w = Tensor::randn(0f32, 0.05, (256, 128, 4, 4), &dev)?;
    let ours = time_op(runs, &x, &w, &|x, w| ops::conv2d(x, w, 2, 1))?;
    let candle = (!skip_candle).then(|| time_op(candle_runs, &x, &w, &|x, w| x.conv2d(w, 1, 2, 1, 1))).transpose()?;
    report("conv2d", ours, candle);

    let x = Tensor::randn(0f32, 1., (64, 256, 16, 16), &dev)?;
    let ours = time_op(runs, &x, &w, &|x, w| ops::conv_transpose2d(x, w, 2, 1, 0))?;
    let candle =
        (!skip_candle).then(|| time_op(candle_runs, &x, &w, &|x, w| x.conv_transpose2d(w, 1, 0, 2, 1))).transpose()?;
    report("conv_transpose2d", ours, candle);
    Ok(())
}
