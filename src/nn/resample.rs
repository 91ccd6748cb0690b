//! Nearest-neighbour 2x upsampling, 2x2 average pooling and global sum pooling, the
//! resolution changes of the ResNet blocks (max pooling is `crate::ops::max_pool2x`). The
//! first two are our CPU ops (`crate::ops::upsample2x_scaled`, `sum_pool2x_scaled`), each the
//! other's backward pass, so gradients of any order are exact.

use candle_core::{Result, Tensor};

/// (N, C, H, W) -> (N, C, 2H, 2W), each pixel repeated in a 2x2 square.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    crate::ops::upsample2x_scaled(x, 1.0)
}

/// (N, C, H, W) -> (N, C, H/2, W/2), the mean of each 2x2 square (H and W even).
pub fn avg_pool2x(x: &Tensor) -> Result<Tensor> {
    crate::ops::sum_pool2x_scaled(x, 0.25)
}

/// StyleGAN's blurred 2x upsampling: nearest, then the [1, 2, 1] blur; together the
/// [1, 3, 3, 1] filter (bilinear weights 3/4 and 1/4).
pub fn upsample2x_blur(x: &Tensor) -> Result<Tensor> {
    crate::ops::blur121(&upsample2x(x)?)
}

/// StyleGAN's blurred 2x downsampling: the [1, 2, 1] blur, then 2x2 averages; together the
/// [1, 3, 3, 1]/8 filter at stride 2.
pub fn downsample2x_blur(x: &Tensor) -> Result<Tensor> {
    avg_pool2x(&crate::ops::blur121(x)?)
}

/// (N, C, H, W) -> (N, C): the sum over every position (SN-GAN's global sum pooling).
pub fn global_sum_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.sum(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn closed_forms() {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let p = avg_pool2x(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(p, [2.5, 4.5, 10.5, 12.5]);
        let m = crate::ops::max_pool2x(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m, [5.0, 7.0, 13.0, 15.0]);
        let u = upsample2x(&avg_pool2x(&x).unwrap()).unwrap();
        assert_eq!(u.dims(), &[1, 1, 4, 4]);
        let row0 = u.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        let row1 = u.get(0).unwrap().get(0).unwrap().get(1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((row0.clone(), row1), (vec![2.5, 2.5, 4.5, 4.5], row0));
        assert_eq!(global_sum_pool(&x).unwrap().to_vec2::<f32>().unwrap(), [[120.0]]);
        assert!(avg_pool2x(&x.narrow(3, 0, 3).unwrap()).is_err());
    }
}
