//! Decoding one image file into a square RGB face of the training size.

use anyhow::{bail, Context, Result};
use image::{imageops::FilterType, DynamicImage, RgbImage};
use std::path::Path;

/// How a photograph becomes a training image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropResize {
    /// Output side in pixels.
    pub size: u32,
    /// Side of the central square cut before resizing; `None` takes the largest
    /// centred square (CelebA's 178x218 becomes 178x178). Many CelebA GANs use 108 or
    /// 140 to zoom in on the face.
    pub crop: Option<u32>,
}

impl CropResize {
    /// Shortest side an input may have: a smaller picture carries too little detail
    /// to be worth upsampling into a training image.
    pub fn min_side(&self) -> u32 {
        (self.size / 2).max(8)
    }
}

/// The largest side of an image facegan decodes (a photograph of 16384x16384 pixels takes
/// 805 MB decoded); a header claiming more is refused before any pixel is allocated.
pub const MAX_SIDE: u32 = 16384;

/// Decodes and checks an image's bytes; `path` is only used in messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let format = image::guess_format(bytes).with_context(|| format!("{}: not a JPEG or PNG image", path.display()))?;
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        bail!("{}: truncated JPEG (no end-of-image marker)", path.display());
    }
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut header = reader();
    header.no_limits(); // reads the header alone; the limits apply to the decoding below
    let (w, h) =
        header.into_dimensions().with_context(|| format!("{}: cannot read the {:?} header", path.display(), format))?;
    if w.max(h) > MAX_SIDE {
        bail!("{}: the header claims {w}x{h} pixels; images up to {MAX_SIDE} pixels a side are read", path.display());
    }
    let mut r = reader();
    let mut limits = image::Limits::default();
    (limits.max_image_width, limits.max_image_height) = (Some(MAX_SIDE), Some(MAX_SIDE));
    r.limits(limits);
    let img = r.decode().with_context(|| format!("{}: cannot decode {:?} data", path.display(), format))?;
    Ok(img)
}

/// A JPEG ends with the EOI marker (FF D9), possibly followed by a little padding.
/// Decoders quietly fill the missing part of a cut-off file with grey, so check.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Centre-crop to a square and resize with an antialiasing filter (Lanczos3 when
/// shrinking, whose support widens with the scale factor; Catmull-Rom when growing).
pub fn crop_resize(img: &DynamicImage, spec: CropResize, path: &Path) -> Result<RgbImage> {
    let rgb = img.to_rgb8(); // grey, alpha, 16-bit and CMYK-decoded images become 8-bit RGB
    let (w, h) = rgb.dimensions();
    let short = w.min(h);
    if short < spec.min_side() {
        bail!(
            "{}: image is {}x{}, too small for {}x{} training images (need at least {} pixels on the short side)",
            path.display(),
            w,
            h,
            spec.size,
            spec.size,
            spec.min_side()
        );
    }
    let side = spec.crop.map_or(short, |c| c.min(short));
    let x0 = (w - side) / 2;
    let y0 = (h - side) / 2;
    let square = image::imageops::crop_imm(&rgb, x0, y0, side, side).to_image();
    if side == spec.size {
        return Ok(square);
    }
    let filter = if side > spec.size { FilterType::Lanczos3 } else { FilterType::CatmullRom };
    Ok(image::imageops::resize(&square, spec.size, spec.size, filter))
}

/// Reads, decodes, crops and resizes one file.
pub fn load_face(path: &Path, spec: CropResize) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let img = decode(&bytes, path)?;
    crop_resize(&img, spec, path)
}

/// u8 pixel to the training range [-1, 1].
#[inline]
pub fn to_unit_range(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// Training range [-1, 1] back to a u8 pixel (clamped, rounded).
#[inline]
pub fn from_unit_range(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn p() -> &'static Path {
        Path::new("test.png")
    }

    #[test]
    fn centre_crop_takes_the_middle_square() {
        // 4 wide, 8 tall: rows 0-1 red, rows 2-5 green, rows 6-7 blue.
        let img = RgbImage::from_fn(4, 8, |_, y| match y {
            0..=1 => Rgb([255, 0, 0]),
            2..=5 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        // The minimum side for any size is 8 pixels: this 4x8 picture is refused.
        assert!(crop_resize(&DynamicImage::ImageRgb8(img), CropResize { size: 4, crop: None }, p()).is_err());
        let img = RgbImage::from_fn(40, 80, |_, y| match y {
            0..=19 => Rgb([255, 0, 0]),
            20..=59 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let out = crop_resize(&DynamicImage::ImageRgb8(img), CropResize { size: 16, crop: None }, p()).unwrap();
        assert_eq!(out.dimensions(), (16, 16));
        for px in out.pixels() {
            assert_eq!(px.0, [0, 255, 0], "only the green middle survives the crop");
        }
    }

    #[test]
    fn resize_averages_instead_of_sampling() {
        // A fine checkerboard shrunk 8x must become flat grey, not an alias pattern
        // (nearest-neighbour would give pure black or white pixels).
        let img =
            RgbImage::from_fn(128, 128, |x, y| if (x + y) % 2 == 0 { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
        let out = crop_resize(&DynamicImage::ImageRgb8(img), CropResize { size: 16, crop: None }, p()).unwrap();
        for px in out.pixels() {
            for c in px.0 {
                assert!((100..=155).contains(&c), "pixel {c} is not mid-grey");
            }
        }
    }

    #[test]
    fn crop_option_zooms_in() {
        let img = RgbImage::from_fn(100, 100, |x, y| {
            if (30..70).contains(&x) && (30..70).contains(&y) {
                Rgb([10, 20, 30])
            } else {
                Rgb([200, 200, 200])
            }
        });
        let out = crop_resize(&DynamicImage::ImageRgb8(img), CropResize { size: 20, crop: Some(40) }, p()).unwrap();
        for px in out.pixels() {
            assert_eq!(px.0, [10, 20, 30]);
        }
    }

    #[test]
    fn grey_and_alpha_images_become_rgb() {
        let grey = image::GrayImage::from_pixel(32, 32, image::Luma([77]));
        let out = crop_resize(&DynamicImage::ImageLuma8(grey), CropResize { size: 16, crop: None }, p()).unwrap();
        assert!(out.pixels().all(|px| px.0 == [77, 77, 77]));
        let rgba = image::RgbaImage::from_pixel(32, 32, image::Rgba([1, 2, 3, 0]));
        let out = crop_resize(&DynamicImage::ImageRgba8(rgba), CropResize { size: 16, crop: None }, p()).unwrap();
        assert!(out.pixels().all(|px| px.0 == [1, 2, 3]));
        let deep = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(32, 32, image::Rgb([65535, 0, 32896]));
        let out = crop_resize(&DynamicImage::ImageRgb16(deep), CropResize { size: 16, crop: None }, p()).unwrap();
        assert!(out.pixels().all(|px| px.0 == [255, 0, 128]));
    }

    #[test]
    fn scale_to_unit_range_and_back() {
        assert_eq!(to_unit_range(0), -1.0);
        assert_eq!(to_unit_range(255), 1.0);
        assert!((to_unit_range(128) - 0.003_921_6).abs() < 1e-6);
        for v in [0u8, 1, 127, 128, 254, 255] {
            assert_eq!(from_unit_range(to_unit_range(v)), v);
        }
        assert_eq!(from_unit_range(3.0), 255);
        assert_eq!(from_unit_range(-3.0), 0);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("fake.jpg");
        std::fs::write(&text, "hello, I am text").unwrap();
        let e = format!("{:#}", load_face(&text, CropResize { size: 32, crop: None }).unwrap_err());
        assert!(e.contains("fake.jpg") && e.contains("not a JPEG or PNG"), "{e}");

        let img = RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8 * 4, y as u8 * 4, 0]));
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
        let e = format!("{:#}", load_face(&cut, CropResize { size: 32, crop: None }).unwrap_err());
        assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");

        let tiny = dir.path().join("tiny.png");
        RgbImage::from_pixel(1, 1, Rgb([1, 2, 3])).save(&tiny).unwrap();
        let e = format!("{:#}", load_face(&tiny, CropResize { size: 32, crop: None }).unwrap_err());
        assert!(e.contains("tiny.png") && e.contains("1x1") && e.contains("too small"), "{e}");
    }
}
