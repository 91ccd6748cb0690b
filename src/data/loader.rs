//! Shuffled batches from a prepared cache, as NCHW f32 tensors in [-1, 1].
//!
//! The order is a pure function of (seed, step): epoch `e` uses a permutation drawn
//! from a stream derived from the seed and `e`, and the last incomplete batch of an
//! epoch is dropped. A resumed run therefore sees exactly the batches it would have
//! seen without stopping.

use super::attrs::Labels;
use super::cache::Dataset;
use super::preprocess::to_unit_range;
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

pub struct Loader {
    pub data: Dataset,
    /// Attribute labels (conditional models); batches then draw only labelled images.
    pub labels: Option<Labels>,
    batch: usize,
    seed: u64,
    flip: bool,
    /// Unlabelled runs draw from the first `train_count` images; the rest are held out.
    train_count: usize,
    perm: Option<(u64, Vec<usize>)>,
}

impl Loader {
    pub fn new(data: Dataset, batch: usize, seed: u64, flip: bool) -> Result<Self> {
        if batch == 0 {
            bail!("batch size must be at least 1");
        }
        if data.len() < batch {
            bail!("{} holds {} images, fewer than one batch of {batch}", data.path.display(), data.len());
        }
        let train_count = data.len();
        Ok(Self { data, labels: None, batch, seed, flip, train_count, perm: None })
    }

    /// Keeps the last `n` images (in file-name order) out of the batches: the faces an
    /// evaluation can use as ones the model never saw (`facegan eval --held-out`). The
    /// first images keep their places, so the batches of a run that holds out nothing
    /// are unchanged.
    pub fn hold_out(mut self, n: usize) -> Result<Self> {
        let len = self.data.len();
        if n >= len || len - n < self.batch {
            bail!(
                "{}: holding out {n} of its {len} images leaves {}, fewer than one batch of {}",
                self.data.path.display(),
                len.saturating_sub(n),
                self.batch
            );
        }
        self.train_count = len - n;
        self.perm = None;
        Ok(self)
    }

    /// Yields `labels` with every batch, and draws only the images that have them.
    pub fn with_labels(mut self, labels: Labels) -> Result<Self> {
        if labels.values.len() != self.data.len() * labels.k() {
            bail!("{}: labels for a different number of images", self.data.path.display());
        }
        if labels.labelled.len() < self.batch {
            bail!(
                "{} holds {} labelled images, fewer than one batch of {}",
                self.data.path.display(),
                labels.labelled.len(),
                self.batch
            );
        }
        self.labels = Some(labels);
        self.perm = None;
        Ok(self)
    }

    /// Images batches are drawn from: the labelled ones, or all but the held-out ones.
    fn pool(&self) -> usize {
        self.labels.as_ref().map_or(self.train_count, |l| l.labelled.len())
    }

    pub fn batches_per_epoch(&self) -> u64 {
        (self.pool() / self.batch) as u64
    }

    /// Image indices of batch number `step` (0-based, counted from the start of training).
    pub fn indices(&mut self, step: u64) -> Vec<usize> {
        let bpe = self.batches_per_epoch();
        let (epoch, k) = (step / bpe, (step % bpe) as usize);
        if self.perm.as_ref().map(|p| p.0) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.pool()).collect();
            Rng::derived(self.seed, 0x5EED_0000 + epoch).shuffle(&mut perm);
            if let Some(l) = &self.labels {
                perm.iter_mut().for_each(|i| *i = l.labelled[*i]);
            }
            self.perm = Some((epoch, perm));
        }
        self.perm.as_ref().unwrap().1[k * self.batch..(k + 1) * self.batch].to_vec()
    }

    /// Batch number `step`, with its images' labels (N, K) when the loader has labels;
    /// horizontal flips (if on) are drawn from `rng` and leave the labels as they are.
    pub fn batch(&mut self, step: u64, rng: &mut Rng, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let idx = self.indices(step);
        let flips: Vec<bool> = idx.iter().map(|_| self.flip && rng.uniform() < 0.5).collect();
        let images = images_to_tensor(&self.data, &idx, &flips, device)?;
        let labels = match &self.labels {
            Some(l) => {
                let v: Vec<f32> = idx.iter().flat_map(|&i| l.of(i).iter().copied()).collect();
                Some(Tensor::from_vec(v, (idx.len(), l.k()), device)?)
            }
            None => None,
        };
        Ok((images, labels))
    }
}

/// Gathers images `idx` of `data` into an (N, 3, S, S) tensor in [-1, 1], mirroring
/// those whose `flips` entry is set.
pub fn images_to_tensor(data: &Dataset, idx: &[usize], flips: &[bool], device: &Device) -> candle_core::Result<Tensor> {
    let s = data.size();
    let plane = s * s;
    let mut out = vec![0f32; idx.len() * 3 * plane];
    out.par_chunks_mut(3 * plane).zip(idx.par_iter().zip(flips.par_iter())).for_each(|(dst, (&i, &flip))| {
        let src = data.image(i);
        for y in 0..s {
            for x in 0..s {
                let sx = if flip { s - 1 - x } else { x };
                let p = &src[(y * s + sx) * 3..(y * s + sx) * 3 + 3];
                for c in 0..3 {
                    dst[c * plane + y * s + x] = to_unit_range(p[c]);
                }
            }
        }
    });
    Tensor::from_vec(out, (idx.len(), 3, s, s), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache::tests::synthetic_folder;
    use crate::data::preprocess::CropResize;
    use crate::data::{prepare, PrepareOptions};

    fn dataset(n: usize) -> (tempfile::TempDir, Dataset) {
        let dir = tempfile::tempdir().unwrap();
        synthetic_folder(dir.path(), n);
        let out = dir.path().join("c.fgc");
        let opts = PrepareOptions { spec: CropResize { size: 8, crop: None }, strict: false, progress: false };
        prepare(dir.path(), &out, &opts).unwrap();
        let ds = Dataset::open(&out).unwrap();
        (dir, ds)
    }

    #[test]
    fn epochs_are_permutations_and_reproducible() {
        let (_d, ds) = dataset(10);
        let mut l = Loader::new(ds, 3, 42, false).unwrap();
        assert_eq!(l.batches_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|s| l.indices(s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "one epoch draws 9 distinct images of 10");
        let b4 = l.indices(4);
        let (_d2, ds2) = dataset(10);
        let mut l2 = Loader::new(ds2, 3, 42, false).unwrap();
        assert_eq!(l2.indices(4), b4, "batch k depends only on seed and k");
        assert_ne!(l.indices(0), l.indices(3), "epochs are reshuffled");
    }

    #[test]
    fn held_out_images_never_enter_a_batch() {
        let (_d, ds) = dataset(10);
        let mut all = Loader::new(ds, 2, 7, false).unwrap();
        let (_d2, ds2) = dataset(10);
        let mut l = Loader::new(ds2, 2, 7, false).unwrap().hold_out(3).unwrap();
        assert_eq!(l.batches_per_epoch(), 3, "7 training images make 3 batches of 2");
        let seen: Vec<usize> = (0..30).flat_map(|s| l.indices(s)).collect();
        assert!(seen.iter().all(|&i| i < 7), "{seen:?}");
        assert_eq!((0..7).filter(|i| seen.contains(i)).count(), 7, "every training image is drawn");
        let (_d3, ds3) = dataset(10);
        let mut none = Loader::new(ds3, 2, 7, false).unwrap().hold_out(0).unwrap();
        assert_eq!(
            (0..8).map(|s| none.indices(s)).collect::<Vec<_>>(),
            (0..8).map(|s| all.indices(s)).collect::<Vec<_>>()
        );
        let (_d4, ds4) = dataset(10);
        let e = Loader::new(ds4, 4, 7, false).unwrap().hold_out(7).err().unwrap().to_string();
        assert!(e.contains("c.fgc") && e.contains("leaves 3, fewer than one batch of 4"), "{e}");
    }

    #[test]
    fn batches_are_scaled_nchw_and_flipped() {
        let (_d, ds) = dataset(4);
        let t = images_to_tensor(&ds, &[1], &[false], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 8, 8]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        // image 1 has red = 20 everywhere
        assert!((v[0] - (20.0 / 127.5 - 1.0)).abs() < 1e-6);
        let f = images_to_tensor(&ds, &[1], &[true], &Device::Cpu).unwrap();
        let a = t.i((0, 1, 2)).unwrap().to_vec1::<f32>().unwrap();
        let b = f.i((0, 1, 2)).unwrap().to_vec1::<f32>().unwrap();
        let rev: Vec<f32> = b.iter().rev().cloned().collect();
        assert_eq!(a, rev);
    }

    #[test]
    fn labels_stay_with_their_images_through_shuffles_and_flips() {
        use crate::data::attrs::{AttrFile, Labels};
        let (_d, ds) = dataset(10);
        // Image i (red = 20 i) is "Odd" when i is odd; image 007 has no row.
        let mut text = String::from("9\r\nOdd Low\r\n");
        for i in (0..10).filter(|&i| i != 7) {
            text.push_str(&format!(
                "{i:03}.png  {} {}\r\n",
                if i % 2 == 1 { 1 } else { -1 },
                if i < 5 { 1 } else { -1 }
            ));
        }
        let file = AttrFile::parse(&text, std::path::Path::new("a.txt")).unwrap();
        let labels = Labels::from_file(&file, &["Odd".into()], &ds.header.names, false).unwrap();
        let mut l = Loader::new(ds, 3, 5, true).unwrap().with_labels(labels).unwrap();
        assert_eq!(l.batches_per_epoch(), 3, "9 labelled images");
        let mut rng = Rng::new(1);
        for step in 0..9 {
            let (x, y) = l.batch(step, &mut rng, &Device::Cpu).unwrap();
            let y = y.unwrap().to_vec2::<f32>().unwrap();
            for (n, row) in y.iter().enumerate() {
                let red = x.i((n, 0, 0, 0)).unwrap().to_scalar::<f32>().unwrap();
                let i = ((red + 1.0) * 127.5 / 20.0).round() as usize;
                assert_ne!(i, 7, "an unlabelled image was drawn");
                assert_eq!(row[0], (i % 2) as f32, "step {step}: image {i} got label {row:?}");
            }
        }
    }

    #[test]
    fn too_few_images_for_a_batch_is_an_error() {
        let (_d, ds) = dataset(2);
        let e = Loader::new(ds, 8, 0, true).err().unwrap().to_string();
        assert!(e.contains("fewer than one batch"), "{e}");
    }
    use candle_core::IndexOp;
}
