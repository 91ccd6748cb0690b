//! The packed uint8 cache: every face decoded, cropped and resized once, stored as
//! HWC RGB bytes one after another, memory-mapped by training.
//!
//! Layout: `FGCACHE1` (8 bytes), header length (u32 LE), header JSON, zero padding to
//! a 4096-byte boundary, then `count * size * size * 3` bytes.

use super::preprocess::{load_face, CropResize};
use super::scan::scan_images;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FGCACHE1";
const ALIGN: usize = 4096;
/// File extension of prepared caches.
pub const CACHE_EXTENSION: &str = "fgc";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheHeader {
    pub size: u32,
    pub count: usize,
    pub crop: Option<u32>,
    pub source: String,
    /// Content hash of the source folder and preprocessing.
    pub key: String,
    /// File names relative to the source folder, in image order.
    pub names: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub spec: CropResize,
    /// Any unreadable file is an error instead of being skipped.
    pub strict: bool,
    pub progress: bool,
}

#[derive(Debug)]
pub struct PrepareReport {
    pub written: usize,
    /// (file, reason) of every skipped file.
    pub skipped: Vec<(PathBuf, String)>,
    pub path: PathBuf,
}

/// A hash of every file's relative name and bytes, plus the preprocessing: the same
/// folder prepared the same way gets the same key.
pub fn content_key(dir: &Path, files: &[PathBuf], spec: CropResize) -> Result<String> {
    let digests: Vec<[u8; 32]> = files
        .par_iter()
        .map(|f| -> Result<[u8; 32]> {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let mut h = Sha256::new();
            h.update(f.strip_prefix(dir).unwrap_or(f).to_string_lossy().as_bytes());
            h.update([0u8]);
            h.update(&bytes);
            Ok(h.finalize().into())
        })
        .collect::<Result<_>>()?;
    let mut h = Sha256::new();
    h.update(format!("v1 size={} crop={:?}", spec.size, spec.crop));
    for d in &digests {
        h.update(d);
    }
    Ok(h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect())
}

/// Where on-the-fly caches live: `$FACEGAN_CACHE_DIR`, else `$XDG_CACHE_HOME/facegan`,
/// else `~/.cache/facegan`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FACEGAN_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("facegan");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("facegan")
}

/// Prepares `dir` into the cache file `out`, decoding in parallel.
pub fn prepare(dir: &Path, out: &Path, opts: &PrepareOptions) -> Result<PrepareReport> {
    let files = scan_images(dir)?;
    let key = content_key(dir, &files, opts.spec)?;
    prepare_files(dir, &files, &key, out, opts)
}

/// Returns a cache for `dir` at `opts.spec`, under `cache_dir`, preparing it only if no
/// cache with the same content key exists yet.
pub fn prepare_cached(dir: &Path, cache_dir: &Path, opts: &PrepareOptions) -> Result<PathBuf> {
    let files = scan_images(dir)?;
    let key = content_key(dir, &files, opts.spec)?;
    let path = cache_dir.join(format!("{key}-{}.{CACHE_EXTENSION}", opts.spec.size));
    if path.exists() && Dataset::open(&path).is_ok() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache folder {}", cache_dir.display()))?;
    let report = prepare_files(dir, &files, &key, &path, opts)?;
    report_skipped(&report);
    Ok(path)
}

/// Prints the skipped files and the totals.
pub fn report_skipped(report: &PrepareReport) {
    for (f, why) in &report.skipped {
        eprintln!("skipped {}: {}", f.display(), why);
    }
    eprintln!("prepared {} images into {} ({} skipped)", report.written, report.path.display(), report.skipped.len());
}

fn prepare_files(dir: &Path, files: &[PathBuf], key: &str, out: &Path, opts: &PrepareOptions) -> Result<PrepareReport> {
    let spec = opts.spec;
    let bar = if opts.progress {
        let b = ProgressBar::new(files.len() as u64);
        b.set_style(ProgressStyle::with_template("preparing {bar:40} {pos}/{len} images {per_sec} eta {eta}").unwrap());
        b
    } else {
        ProgressBar::hidden()
    };
    let results: Vec<Result<Vec<u8>>> = files
        .par_iter()
        .map(|f| {
            let r = load_face(f, spec).map(|img| img.into_raw());
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();

    let mut names = Vec::new();
    let mut pixels = Vec::new();
    let mut skipped = Vec::new();
    for (f, r) in files.iter().zip(results) {
        match r {
            Ok(px) => {
                names.push(f.strip_prefix(dir).unwrap_or(f).to_string_lossy().to_string());
                pixels.push(px);
            }
            Err(e) => {
                if opts.strict {
                    return Err(e.context("--strict: stopping at the first unusable image"));
                }
                skipped.push((f.clone(), format!("{e:#}")));
            }
        }
    }
    if names.is_empty() {
        bail!(
            "data folder {} has no usable image: all {} files failed (first: {})",
            dir.display(),
            files.len(),
            skipped.first().map(|s| s.1.as_str()).unwrap_or("?")
        );
    }
    let header = CacheHeader {
        size: spec.size,
        count: names.len(),
        crop: spec.crop,
        source: dir.display().to_string(),
        key: key.to_string(),
        names,
    };
    write_cache(out, &header, &pixels)?;
    Ok(PrepareReport { written: header.count, skipped, path: out.to_path_buf() })
}

fn write_cache(out: &Path, header: &CacheHeader, pixels: &[Vec<u8>]) -> Result<()> {
    let json = serde_json::to_vec(header)?;
    let tmp = crate::fsutil::temp_path_for(out);
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u32).to_le_bytes())?;
        f.write_all(&json)?;
        let used = MAGIC.len() + 4 + json.len();
        f.write_all(&vec![0u8; used.next_multiple_of(ALIGN) - used])?;
        for p in pixels {
            f.write_all(p)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write cache {}", out.display()));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write cache {}", out.display()))
}

/// A prepared cache, memory-mapped.
pub struct Dataset {
    pub header: CacheHeader,
    pub path: PathBuf,
    map: memmap2::Mmap,
    offset: usize,
}

impl Dataset {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the cache is written once (temp file + rename) and never modified in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let bad = |why: &str| anyhow::anyhow!("{}: not a facegan cache ({why})", path.display());
        if map.len() < 12 || &map[..8] != MAGIC {
            return Err(bad("wrong magic bytes; make one with `facegan prepare`"));
        }
        let hlen = u32::from_le_bytes(map[8..12].try_into().unwrap()) as usize;
        let hjson = map.get(12..12 + hlen).ok_or_else(|| bad("header cut short"))?;
        let header: CacheHeader = serde_json::from_slice(hjson).map_err(|e| bad(&format!("bad header: {e}")))?;
        let offset = (12 + hlen).next_multiple_of(ALIGN);
        let need = offset + header.count * (header.size as usize).pow(2) * 3;
        if map.len() < need {
            return Err(bad(&format!("file is truncated: {} bytes, expected {need}", map.len())));
        }
        Ok(Self { header, path: path.to_path_buf(), map, offset })
    }

    pub fn len(&self) -> usize {
        self.header.count
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    pub fn size(&self) -> usize {
        self.header.size as usize
    }

    /// HWC RGB bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.size() * self.size() * 3;
        &self.map[self.offset + i * n..self.offset + (i + 1) * n]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// Writes `n` synthetic 40x48 PNGs with distinct colours into `dir`.
    pub fn synthetic_folder(dir: &Path, n: usize) {
        for i in 0..n {
            let img = RgbImage::from_fn(40, 48, |x, y| Rgb([(i * 20) as u8, x as u8 * 5, y as u8 * 5]));
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }

    #[test]
    fn prepare_skips_bad_files_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_folder(dir.path(), 3);
        std::fs::write(dir.path().join("bad.jpg"), "text").unwrap();
        let out = dir.path().join("c.fgc");
        let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
        let rep = prepare(dir.path(), &out, &opts).unwrap();
        assert_eq!(rep.written, 3);
        assert_eq!(rep.skipped.len(), 1);
        assert!(rep.skipped[0].0.ends_with("bad.jpg"));
        let ds = Dataset::open(&out).unwrap();
        assert_eq!((ds.len(), ds.size()), (3, 16));
        assert_eq!(ds.header.names, vec!["000.png", "001.png", "002.png"]);
        // image 2 has red = 40 everywhere
        assert!(ds.image(2).chunks(3).all(|p| p[0] == 40));

        let strict = PrepareOptions { strict: true, ..opts.clone() };
        let e = format!("{:#}", prepare(dir.path(), &dir.path().join("d.fgc"), &strict).unwrap_err());
        assert!(e.contains("bad.jpg"), "{e}");
    }

    #[test]
    fn cached_preparation_is_reused_and_keyed_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        synthetic_folder(dir.path(), 2);
        let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
        let a = prepare_cached(dir.path(), cache.path(), &opts).unwrap();
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        let b = prepare_cached(dir.path(), cache.path(), &opts).unwrap();
        assert_eq!(a, b);
        assert_eq!(mtime, std::fs::metadata(&b).unwrap().modified().unwrap());
        let c = prepare_cached(
            dir.path(),
            cache.path(),
            &PrepareOptions { spec: CropResize { size: 32, crop: None }, ..opts.clone() },
        )
        .unwrap();
        assert_ne!(a, c);
        synthetic_folder(dir.path(), 3);
        let d = prepare_cached(dir.path(), cache.path(), &opts).unwrap();
        assert_ne!(a, d);
    }

    #[test]
    fn open_rejects_garbage_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.fgc");
        std::fs::write(&junk, "not a cache at all").unwrap();
        assert!(format!("{:#}", Dataset::open(&junk).err().unwrap()).contains("junk.fgc"));
        synthetic_folder(dir.path(), 2);
        let out = dir.path().join("c.fgc");
        let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
        prepare(dir.path(), &out, &opts).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::write(&out, &bytes[..bytes.len() - 10]).unwrap();
        assert!(format!("{:#}", Dataset::open(&out).err().unwrap()).contains("truncated"));
    }
}
