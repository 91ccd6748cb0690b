//! Minibatch standard deviation (Karras et al. 2018, "Progressive growing of GANs"): D sees
//! how varied its batch is, which discourages mode collapse.

use candle_core::{Result, Tensor};

/// Appends one channel to (N, C, H, W): the batch is split into groups of `group` samples
/// (sample n belongs to group n mod (N / group), as in the StyleGAN code), and every
/// sample of a group gets, at every pixel, the mean over (C, H, W) of the standard
/// deviation across its group (biased, sqrt(var + 1e-8)). When `group` does not divide
/// N the largest group size below it that does is used.
pub fn minibatch_stddev(x: &Tensor, group: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let g = (1..=group.min(n)).rev().find(|g| n % g == 0).unwrap_or(1);
    let m = n / g;
    let y = x.reshape((g, m, c, h, w))?;
    let centred = y.broadcast_sub(&y.mean_keepdim(0)?)?;
    let std = (centred.sqr()?.mean(0)? + 1e-8)?.sqrt()?; // (m, c, h, w)
    let s = std.flatten_from(1)?.mean(1)?; // (m,)
    let s = s.reshape((1, m, 1, 1, 1))?.broadcast_as((g, m, 1, h, w))?.reshape((n, 1, h, w))?;
    Tensor::cat(&[x, &s.to_dtype(x.dtype())?], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_closed_form() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(5);
        let (n, c, h, w) = (8usize, 3usize, 2usize, 2usize);
        let x = rng.normal_tensor((n, c, h, w), 0.0, 1.0, &dev).unwrap();
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let at = |s: usize, i: usize| v[s * c * h * w + i] as f64;
        for group in [4usize, 3, 1] {
            let y = minibatch_stddev(&x, group).unwrap();
            assert_eq!(y.dims(), &[n, c + 1, h, w]);
            let g = if group == 3 { 2 } else { group }; // 3 does not divide 8: groups of 2
            let m = n / g;
            let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for s in 0..n {
                let members: Vec<usize> = (0..g).map(|k| k * m + s % m).collect();
                let mut total = 0.0;
                for i in 0..c * h * w {
                    let mean = members.iter().map(|&t| at(t, i)).sum::<f64>() / g as f64;
                    let var = members.iter().map(|&t| (at(t, i) - mean).powi(2)).sum::<f64>() / g as f64;
                    total += (var + 1e-8).sqrt();
                }
                let expected = total / (c * h * w) as f64;
                for px in 0..h * w {
                    let got = yv[s * (c + 1) * h * w + c * h * w + px] as f64;
                    assert!((got - expected).abs() < 1e-5, "group {group} sample {s}: {got} vs {expected}");
                }
                // The input channels pass through unchanged.
                assert_eq!(yv[s * (c + 1) * h * w] as f64, at(s, 0));
            }
        }
    }
}
