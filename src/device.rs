//! Choosing the compute device from a command-line name.

use anyhow::{bail, Result};
use candle_core::Device;

/// "cpu" (default), "cuda", "cuda:N" (with the `cuda` feature) or "metal" (with the
/// `metal` feature).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "metal" => {
            if !cfg!(feature = "metal") {
                bail!("--device metal needs facegan built with `--features metal`");
            }
            Ok(Device::new_metal(0)?)
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            if !cfg!(feature = "cuda") {
                bail!("--device {s} needs facegan built with `--features cuda`");
            }
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| anyhow::anyhow!("bad CUDA device number in '{s}'"))?,
                None => 0,
            };
            Ok(Device::new_cuda(ordinal)?)
        }
        _ => bail!("unknown device '{name}'; valid: cpu, cuda, cuda:N, metal"),
    }
}
