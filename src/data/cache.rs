//! The packed uint8 cache: every face decoded, cropped and resized once, stored as
//! HWC RGB bytes one after another, memory-mapped by training.
//!
//! Layout: `FGCACHE1` (8 bytes), header length (u32 LE), header JSON, zero padding to
//! a 4096-byte boundary, then `count * size * size * 3` bytes, then, when the header has
//! `labels`, `count * labels.names.len()` bytes of attributes (see [`store_labels`]).

use super::attrs::{find_attr_file, AttrFile};
use super::preprocess::{crop_resize, decode, CropResize};
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
    /// [`listing_key`] of the folder when it was prepared (caches made before it: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<String>,
    /// File names relative to the source folder, in image order.
    pub names: Vec<String>,
    /// Attribute labels stored after the pixels (caches made before them, or of a folder
    /// without an attribute file: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<StoredLabels>,
}

/// What a cache's stored labels are: every attribute of an attribute file, a byte per image
/// and attribute (0 absent, 1 present, 2 the image has no row), in image order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredLabels {
    /// Attribute names, in the file's order.
    pub names: Vec<String>,
    /// The attribute file they were read from, and the hash of its bytes (`attrs::key_of`).
    pub file: String,
    pub key: String,
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
/// folder prepared the same way gets the same key (stored in the cache's header).
pub fn content_key(dir: &Path, files: &[PathBuf], spec: CropResize) -> Result<String> {
    let digests: Vec<[u8; 32]> = files
        .par_iter()
        .map(|f| -> Result<[u8; 32]> {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            Ok(file_digest(&f.strip_prefix(dir).unwrap_or(f).to_string_lossy(), &bytes))
        })
        .collect::<Result<_>>()?;
    Ok(key_of_digests(&digests, spec))
}

fn file_digest(rel_name: &str, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(rel_name.as_bytes());
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn key_of_digests(digests: &[[u8; 32]], spec: CropResize) -> String {
    let mut h = Sha256::new();
    h.update(format!("v1 size={} crop={:?}", spec.size, spec.crop));
    for d in digests {
        h.update(d);
    }
    h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect()
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

/// A key of a folder's listing: every file's relative name, length and modification time,
/// plus the preprocessing. One `stat` per file, so finding the cache of an unchanged folder
/// reads no image; [`content_key`] (`--verify`) hashes the bytes themselves.
pub fn listing_key(dir: &Path, files: &[PathBuf], spec: CropResize) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("listing-v1 size={} crop={:?}", spec.size, spec.crop));
    for f in files {
        let m = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(f.strip_prefix(dir).unwrap_or(f).to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update(m.len().to_le_bytes());
        h.update(mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
    }
    Ok(h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect())
}

/// Prepares `dir` into the cache file `out`, decoding in parallel.
pub fn prepare(dir: &Path, out: &Path, opts: &PrepareOptions) -> Result<PrepareReport> {
    let files = scan_images(dir)?;
    let listing = listing_key(dir, &files, opts.spec)?;
    prepare_files(dir, &files, &listing, out, opts, attrs_beside(dir).as_ref())
}

/// The attribute file in or beside the image folder `dir`, whose labels a new cache stores.
/// One that does not read is only a warning here: preparing needs no labels, and training
/// with `--attrs` reports it as an error.
fn attrs_beside(dir: &Path) -> Option<AttrFile> {
    let path = find_attr_file(None, dir).ok()?;
    match AttrFile::read(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("warning: {e:#}; the cache stores no labels");
            None
        }
    }
}

/// Returns a cache for `dir` at `opts.spec`, under `cache_dir`, preparing it only if there
/// is none for the folder's listing (names, sizes, modification times) yet. With `verify`,
/// every image is read and hashed, and a cache whose content key differs is made again.
pub fn prepare_cached(dir: &Path, cache_dir: &Path, opts: &PrepareOptions, verify: bool) -> Result<PathBuf> {
    let files = scan_images(dir)?;
    let listing = listing_key(dir, &files, opts.spec)?;
    let path = cache_dir.join(format!("{listing}-{}.{CACHE_EXTENSION}", opts.spec.size));
    if let Ok(ds) = Dataset::open(&path) {
        if !verify {
            return Ok(path);
        }
        let key = content_key(dir, &files, opts.spec)?;
        if ds.header.key == key {
            return Ok(path);
        }
        eprintln!(
            "--verify: the images of {} changed since {} was made (content key {key}, cache {}); preparing it again",
            dir.display(),
            path.display(),
            ds.header.key
        );
    } else if let Some(found) = cache_of_same_images(dir, &files, cache_dir, opts.spec) {
        // Renamed, not copied: the stale name goes, so touched folders do not pile up caches.
        if std::fs::rename(&found, &path).is_ok() {
            eprintln!(
                "{}: only the modification times of {} changed since it was made; reusing it as {}",
                found.display(),
                dir.display(),
                path.display()
            );
            return Ok(path);
        }
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache folder {}", cache_dir.display()))?;
    let report = prepare_files(dir, &files, &listing, &path, opts, attrs_beside(dir).as_ref())?;
    report_skipped(&report);
    Ok(path)
}

/// A cache in `cache_dir` of the same folder, made when its files had other modification
/// times (copied, restored or touched since): its content key, which reads every file but
/// decodes none, equals the folder's. Only caches of the same folder at the same crop and
/// size are candidates, so a new folder costs no extra read; an unreadable file means none.
fn cache_of_same_images(dir: &Path, files: &[PathBuf], cache_dir: &Path, spec: CropResize) -> Option<PathBuf> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let folder = canonical(dir);
    let suffix = format!("-{}.{CACHE_EXTENSION}", spec.size);
    let mut key: Option<String> = None;
    for entry in std::fs::read_dir(cache_dir).ok()?.flatten() {
        let path = entry.path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)) {
            continue;
        }
        let Ok(ds) = Dataset::open(&path) else { continue };
        let h = &ds.header;
        if h.size != spec.size
            || h.crop != spec.crop
            || h.count > files.len()
            || canonical(Path::new(&h.source)) != folder
        {
            continue;
        }
        let key = match &key {
            Some(k) => k,
            None => key.insert(content_key(dir, files, spec).ok()?),
        };
        if *key == h.key {
            return Some(path);
        }
    }
    None
}

/// Prints the skipped files and the totals.
pub fn report_skipped(report: &PrepareReport) {
    for (f, why) in &report.skipped {
        eprintln!("skipped {}: {}", f.display(), why);
    }
    eprintln!("prepared {} images into {} ({} skipped)", report.written, report.path.display(), report.skipped.len());
}

/// Images decoded at a time while preparing: memory stays bounded by about this many
/// decoded photographs and resized faces, whatever the size of the folder.
const PREPARE_CHUNK: usize = 256;

/// Decodes, crops and resizes `files` in parallel chunks, streaming each chunk's pixels to
/// the cache file as it is done; the file's content key is hashed from the bytes read. The
/// labels of `attrs`, if given, follow the pixels.
fn prepare_files(
    dir: &Path,
    files: &[PathBuf],
    listing: &str,
    out: &Path,
    opts: &PrepareOptions,
    attrs: Option<&AttrFile>,
) -> Result<PrepareReport> {
    let spec = opts.spec;
    let bar = if opts.progress {
        let b = ProgressBar::new(files.len() as u64);
        b.set_style(ProgressStyle::with_template("preparing {bar:40} {pos}/{len} images {per_sec} eta {eta}").unwrap());
        b
    } else {
        ProgressBar::hidden()
    };
    let rel = |f: &PathBuf| f.strip_prefix(dir).unwrap_or(f).to_string_lossy().to_string();
    // The header goes first but is only known at the end: reserve room for the largest it can
    // be (every file kept) and pad the real one with spaces to that length.
    let mut header = CacheHeader {
        size: spec.size,
        count: files.len(),
        crop: spec.crop,
        source: dir.display().to_string(),
        key: "0".repeat(20),
        listing: Some(listing.to_string()),
        names: files.iter().map(rel).collect(),
        labels: attrs.map(stored_labels_of),
    };
    let reserved = serde_json::to_vec(&header)?.len();
    let tmp = crate::fsutil::temp_path_for(out);
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write cache {}", out.display()))
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(fail)?);
    let data_start = (MAGIC.len() + 4 + reserved).next_multiple_of(ALIGN);
    f.write_all(&vec![0u8; data_start]).map_err(fail)?;

    let (mut names, mut skipped, mut digests) = (Vec::new(), Vec::new(), Vec::with_capacity(files.len()));
    for chunk in files.chunks(PREPARE_CHUNK) {
        let results: Vec<([u8; 32], Result<Vec<u8>>)> = chunk
            .par_iter()
            .map(|f| {
                let r = match std::fs::read(f) {
                    Ok(bytes) => {
                        let face = decode(&bytes, f).and_then(|img| crop_resize(&img, spec, f)).map(|i| i.into_raw());
                        (file_digest(&rel(f), &bytes), face)
                    }
                    Err(e) => ([0u8; 32], Err(anyhow::Error::new(e).context(format!("cannot read {}", f.display())))),
                };
                bar.inc(1);
                r
            })
            .collect();
        for (file, (digest, r)) in chunk.iter().zip(results) {
            digests.push(digest);
            match r {
                Ok(px) => {
                    f.write_all(&px).map_err(fail)?;
                    names.push(rel(file));
                }
                Err(e) if opts.strict => {
                    drop(f);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.context("--strict: stopping at the first unusable image"));
                }
                Err(e) => skipped.push((file.clone(), format!("{e:#}"))),
            }
        }
    }
    bar.finish_and_clear();
    if names.is_empty() {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "data folder {} has no usable image: all {} files failed (first: {})",
            dir.display(),
            files.len(),
            skipped.first().map(|s| s.1.as_str()).unwrap_or("?")
        );
    }
    if let Some(a) = attrs {
        f.write_all(&a.stored_bytes(&names)).map_err(fail)?;
    }
    (header.count, header.names, header.key) = (names.len(), names, key_of_digests(&digests, spec));
    let mut json = serde_json::to_vec(&header)?;
    debug_assert!(json.len() <= reserved);
    json.resize(reserved, b' ');
    let finish = |f: std::io::BufWriter<std::fs::File>| -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = f.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u32).to_le_bytes())?;
        f.write_all(&json)?;
        f.sync_all()
    };
    finish(f).map_err(fail)?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write cache {}", out.display()))?;
    Ok(PrepareReport { written: header.count, skipped, path: out.to_path_buf() })
}

fn stored_labels_of(file: &AttrFile) -> StoredLabels {
    let path = std::fs::canonicalize(&file.path).unwrap_or_else(|_| file.path.clone());
    StoredLabels { names: file.names.clone(), file: path.display().to_string(), key: file.key.clone() }
}

/// Stores every attribute of `file` for the images of the cache at `path`, replacing any
/// labels it had: a new file (temporary, then renamed over the old one, so a reader that
/// has the old one open keeps it) with the same header, pixels and the labels after them.
pub fn store_labels(path: &Path, file: &AttrFile) -> Result<()> {
    let ds = Dataset::open(path)?;
    let mut header = ds.header.clone();
    header.labels = Some(stored_labels_of(file));
    let labels = file.stored_bytes(&header.names);
    let pixels = &ds.map[ds.offset..ds.label_offset()];
    let json = serde_json::to_vec(&header)?;
    let tmp = crate::fsutil::temp_path_for(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u32).to_le_bytes())?;
        f.write_all(&json)?;
        f.write_all(&vec![0u8; (12 + json.len()).next_multiple_of(ALIGN) - 12 - json.len()])?;
        f.write_all(pixels)?;
        f.write_all(&labels)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!(
            "cannot store the labels of {} in {}",
            file.path.display(),
            path.display()
        ))
    })
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
        let need = (header.size as usize)
            .checked_pow(2)
            .and_then(|plane| plane.checked_mul(3))
            .and_then(|image| image.checked_mul(header.count))
            .and_then(|pixels| pixels.checked_add(offset))
            .and_then(|end| {
                end.checked_add(header.count.checked_mul(header.labels.as_ref().map_or(0, |l| l.names.len()))?)
            })
            .ok_or_else(|| {
                bad(&format!(
                    "the header's {} images of {}x{} cannot fit in a file",
                    header.count, header.size, header.size
                ))
            })?;
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

    /// Where the stored labels start: after the last image.
    fn label_offset(&self) -> usize {
        self.offset + self.len() * self.size() * self.size() * 3
    }

    /// The labels stored in the cache, as the attribute file they came from (its rows those
    /// of the cache's images), or None when it stores none.
    pub fn stored_attrs(&self) -> Result<Option<AttrFile>> {
        let Some(l) = &self.header.labels else { return Ok(None) };
        let start = self.label_offset();
        let bytes = &self.map[start..start + self.len() * l.names.len()];
        AttrFile::from_stored(&self.path, Path::new(&l.file), &l.key, &l.names, &self.header.names, bytes).map(Some)
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
        let a = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        let b = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        assert_eq!(a, b);
        assert_eq!(mtime, std::fs::metadata(&b).unwrap().modified().unwrap());
        let c = prepare_cached(
            dir.path(),
            cache.path(),
            &PrepareOptions { spec: CropResize { size: 32, crop: None }, ..opts.clone() },
            false,
        )
        .unwrap();
        assert_ne!(a, c);
        synthetic_folder(dir.path(), 3);
        let d = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        assert_ne!(a, d);
    }

    /// An unchanged listing finds its cache without reading an image; a file changed behind
    /// an unchanged name, size and modification time is only noticed with `verify`, which
    /// then prepares the cache again.
    #[test]
    fn the_listing_finds_the_cache_and_verify_checks_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        synthetic_folder(dir.path(), 3);
        let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
        let a = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        let first = Dataset::open(&a).unwrap().header;
        let files = scan_images(dir.path()).unwrap();
        assert_eq!(first.key, content_key(dir.path(), &files, opts.spec).unwrap(), "the key is hashed while preparing");
        assert_eq!(first.listing.as_deref(), Some(listing_key(dir.path(), &files, opts.spec).unwrap().as_str()));
        // Same size, same modification time, other pixels.
        let f = dir.path().join("001.png");
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let other = std::fs::read(dir.path().join("002.png")).unwrap();
        assert_eq!(other.len() as u64, std::fs::metadata(&f).unwrap().len());
        std::fs::write(&f, &other).unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        let b = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        assert_eq!((&a, Dataset::open(&b).unwrap().image(1)[0]), (&b, 20), "trusted: the old pixels");
        let c = prepare_cached(dir.path(), cache.path(), &opts, true).unwrap();
        let ds = Dataset::open(&c).unwrap();
        assert_eq!(ds.image(1)[0], 40, "verified: prepared again from the new bytes");
        assert_ne!(ds.header.key, first.key);
    }

    /// A folder copied or touched (same names and bytes, new modification times) gets its
    /// old cache back under the new listing instead of a second one; other bytes behind the
    /// same names are prepared again.
    #[test]
    fn touched_files_reuse_their_cache_and_changed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        synthetic_folder(dir.path(), 3);
        let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
        let a = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        let made = std::fs::metadata(&a).unwrap().modified().unwrap();
        let touch = |name: &str, secs: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options().write(true).open(dir.path().join(name)).unwrap().set_modified(t).unwrap();
        };
        for name in ["000.png", "001.png", "002.png"] {
            touch(name, 1_000_000);
        }
        let b = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        assert_ne!(a, b, "a new listing names the cache");
        assert!(!a.exists(), "the old name is gone");
        assert_eq!(std::fs::metadata(&b).unwrap().modified().unwrap(), made, "the same file, not prepared again");
        let caches = || std::fs::read_dir(cache.path()).unwrap().count();
        assert_eq!(caches(), 1);

        // Other pixels behind the same name and size, touched: the content key differs.
        let other = std::fs::read(dir.path().join("002.png")).unwrap();
        std::fs::write(dir.path().join("001.png"), &other).unwrap();
        touch("001.png", 2_000_000);
        let c = prepare_cached(dir.path(), cache.path(), &opts, false).unwrap();
        assert_ne!(b, c);
        assert_eq!(Dataset::open(&c).unwrap().image(1)[0], 40, "prepared from the new bytes");
        assert_eq!(caches(), 2, "the cache of the old images is left alone");
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
