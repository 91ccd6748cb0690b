//! Mutation tests of every reader of user files: images, prepared caches, checkpoints and
//! their exports (down to building the generator their configuration describes), TorchScript
//! archives, TOML configurations and CelebA's attribute file. Each is fed thousands of
//! seeded mutations of a valid file (bit flips, overwritten, inserted and deleted bytes,
//! truncations, numbers made huge) and must answer every one with a value or an error that
//! names the file: no panic, and no single allocation above [`ALLOC_BOUND`].
//!
//! A failure prints the reader, the case number and the seed; `MUTATION_CASES=N` changes
//! the number of cases per reader (default 2,000).

mod common;
use common::*;
use facegan::rng::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest allocation a reader may ask for while reading a file of a few kilobytes.
const ALLOC_BOUND: usize = 256 << 20;

/// The system allocator, refusing (and remembering) any single request above the bound.
struct Bounded;
static LARGEST_REFUSED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_BOUND {
            LARGEST_REFUSED.fetch_max(layout.size(), Ordering::SeqCst);
            let msg = b"mutation test: an allocation above the bound was refused\n";
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_BOUND {
            LARGEST_REFUSED.fetch_max(layout.size(), Ordering::SeqCst);
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_BOUND {
            LARGEST_REFUSED.fetch_max(new_size, Ordering::SeqCst);
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn cases() -> usize {
    std::env::var("MUTATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// One random mutation (or a few) of `bytes`.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let below = |rng: &mut Rng, n: usize| (rng.uniform() * n as f64) as usize % n.max(1);
    for _ in 0..1 + below(rng, 3) {
        let n = b.len().max(1);
        match below(rng, 8) {
            0 => {
                let i = below(rng, n);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << below(rng, 8);
                }
            }
            1 => {
                let i = below(rng, n);
                let v = [0u8, 0xff, 0x7f, 0x80, 0x01][below(rng, 5)];
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            2 => b.truncate(below(rng, n)),
            3 => {
                let i = below(rng, n + 1).min(b.len());
                let extra: Vec<u8> = (0..1 + below(rng, 16)).map(|_| below(rng, 256) as u8).collect();
                b.splice(i..i, extra);
            }
            4 => {
                let i = below(rng, n).min(b.len());
                let j = (i + 1 + below(rng, 64)).min(b.len());
                b.drain(i..j);
            }
            5 => {
                // A run of ASCII digits (a count, a size, a width) made huge.
                let starts: Vec<usize> =
                    (0..b.len()).filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit())).collect();
                if !starts.is_empty() {
                    let i = starts[below(rng, starts.len())];
                    let big = ["99999999999999999999", "4294967296", "65536", "0", "-1"][below(rng, 5)];
                    b.splice(i..i, big.bytes());
                }
            }
            6 => {
                // Four bytes overwritten with a large little- or big-endian integer.
                let i = below(rng, n);
                let v: u32 = [u32::MAX, 1 << 30, 1 << 24, 0x7fff_ffff][below(rng, 4)];
                let bytes = if below(rng, 2) == 0 { v.to_le_bytes() } else { v.to_be_bytes() };
                for (k, x) in bytes.iter().enumerate() {
                    if let Some(y) = b.get_mut(i + k) {
                        *y = *x;
                    }
                }
            }
            _ => {
                // A stretch duplicated.
                let i = below(rng, n).min(b.len());
                let j = (i + below(rng, 256)).min(b.len());
                let copy = b[i..j].to_vec();
                b.splice(j..j, copy);
            }
        }
    }
    b
}

/// Feeds `cases()` mutations of `valid` to `read`; every error must name `file_name`.
fn fuzz(what: &str, seed: u64, valid: &[u8], file_name: &str, read: impl Fn(&[u8]) -> anyhow::Result<()>) {
    let mut rng = Rng::new(seed);
    read(valid).unwrap_or_else(|e| panic!("{what}: the valid file is refused: {e:#}"));
    let (mut errors, n) = (0, cases());
    for case in 0..n {
        let m = mutate(&mut rng, valid);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&m)));
        match r {
            Err(_) => panic!("{what}: case {case} (seed {seed}) panicked on a {}-byte mutant", m.len()),
            Ok(Err(e)) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains(file_name),
                    "{what}: case {case} (seed {seed}): the error does not name the file: {e}"
                );
                errors += 1;
            }
            Ok(Ok(())) => {}
        }
        let refused = LARGEST_REFUSED.load(Ordering::SeqCst);
        assert_eq!(refused, 0, "{what}: case {case} (seed {seed}) asked for {refused} bytes at once");
    }
    eprintln!("{what}: {n} mutants, {errors} refused with an error, {} read", n - errors);
    assert!(errors > 0, "{what}: no mutant was refused; the harness is not reaching the reader");
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 5) as u8, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn images() {
    use facegan::data::preprocess::{crop_resize, decode, CropResize};
    let spec = CropResize { size: 16, crop: None };
    let path = Path::new("mutant-face.png");
    let read = |b: &[u8]| decode(b, path).and_then(|img| crop_resize(&img, spec, path)).map(|_| ());
    fuzz("png", 1, &png(40, 48), "mutant-face.png", read);
    let img = image::RgbImage::from_fn(40, 48, |x, y| image::Rgb([(x * 5) as u8, (y * 5) as u8, 99]));
    let mut jpg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
    fuzz("jpeg", 2, jpg.get_ref(), "mutant-face.png", read);

    // A PNG header claiming 2^30 x 2^30 pixels (with a correct checksum) is refused before
    // any pixel is allocated.
    let mut huge = png(40, 48);
    huge[16..20].copy_from_slice(&(1u32 << 30).to_be_bytes());
    huge[20..24].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = format!("{:#}", read(&huge).unwrap_err());
    assert!(e.contains("mutant-face.png") && e.contains("claims 1073741824x1073741824 pixels"), "{e}");
    assert_eq!(LARGEST_REFUSED.load(Ordering::SeqCst), 0);
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

#[test]
fn caches() {
    let t = tempfile::tempdir().unwrap();
    let valid = std::fs::read(prepared(t.path(), 4, 16)).unwrap();
    let file = t.path().join("mutant.fgc");
    fuzz("cache", 3, &valid, "mutant.fgc", |b| {
        std::fs::write(&file, b)?;
        let ds = facegan::data::Dataset::open(&file)?;
        // Every image the header promises can be read.
        let sum: u64 = (0..ds.len()).map(|i| ds.image(i).iter().map(|&v| v as u64).sum::<u64>()).sum();
        std::hint::black_box(sum);
        Ok(())
    });
    // A cache that stores attribute labels: they read back or are refused, naming the file.
    let labelled = t.path().join("labelled");
    synthetic_faces(&labelled.join("faces"), 4);
    let rows: String = (0..4).map(|i| format!("{i:04}.png  1 -1\r\n")).collect();
    std::fs::write(labelled.join("list_attr_celeba.txt"), format!("4\r\nA B\r\n{rows}")).unwrap();
    let spec = facegan::data::preprocess::CropResize { size: 8, crop: None };
    let opts = facegan::data::cache::PrepareOptions { spec, strict: false, progress: false };
    facegan::data::cache::prepare(&labelled.join("faces"), &labelled.join("c.fgc"), &opts).unwrap();
    let valid_labelled = std::fs::read(labelled.join("c.fgc")).unwrap();
    fuzz("labelled cache", 4, &valid_labelled, "mutant.fgc", |b| {
        std::fs::write(&file, b)?;
        let ds = facegan::data::Dataset::open(&file)?;
        anyhow::ensure!(ds.header.labels.is_some(), "{}: no labels", file.display());
        std::hint::black_box(ds.stored_attrs()?.map(|a| a.len()));
        Ok(())
    });
    // A header whose image count overflows count x size² x 3.
    let hlen = u32::from_le_bytes(valid[8..12].try_into().unwrap()) as usize;
    let json = String::from_utf8(valid[12..12 + hlen].to_vec()).unwrap();
    let crafted = json.replacen("\"count\":4", &format!("\"count\":{}", 1u64 << 62), 1);
    assert_ne!(crafted, json);
    let mut bytes = valid[..8].to_vec();
    bytes.extend_from_slice(&(crafted.len() as u32).to_le_bytes());
    bytes.extend_from_slice(crafted.as_bytes());
    bytes.resize((12 + hlen).next_multiple_of(4096), 0);
    bytes.extend_from_slice(&valid[(12 + hlen).next_multiple_of(4096)..]);
    std::fs::write(&file, &bytes).unwrap();
    let e = format!("{:#}", facegan::data::Dataset::open(&file).err().unwrap());
    assert!(e.contains("mutant.fgc") && e.contains("cannot fit"), "{e}");
}

#[test]
fn checkpoints_and_exports() {
    let t = tempfile::tempdir().unwrap();
    let data = prepared(t.path(), 8, 32);
    let run_dir = t.path().join("run");
    let args = ["--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "4", "--steps", "1", "--quiet"];
    let (d, r) = (data.to_str().unwrap(), run_dir.to_str().unwrap());
    let (ok, out) = run(&[&["train", "--data", d, "--out", r, "--preset", "dcgan-32"][..], &args[..]].concat());
    assert!(ok, "{out}");
    let full = run_dir.join("checkpoints/step-0000001.safetensors");
    let (g, c) = (t.path().join("g.safetensors"), t.path().join("c.safetensors"));
    let f = full.to_str().unwrap();
    assert!(run(&["export", "--checkpoint", f, "--out", g.to_str().unwrap(), "--half"]).0);
    assert!(run(&["export", "--checkpoint", f, "--out", c.to_str().unwrap(), "--continuation"]).0);
    let file = t.path().join("mutant.safetensors");
    let read = |b: &[u8]| {
        std::fs::write(&file, b)?;
        let ck = facegan::train::checkpoint::read(&file, &candle_core::Device::Cpu)?;
        if ck.kind() != facegan::metrics::attr::KIND_CLASSIFIER {
            facegan::sample::generate::load_generator(&file, &candle_core::Device::Cpu)?;
        }
        Ok(())
    };
    for (what, seed, p) in [("checkpoint", 4, &full), ("export", 5, &g), ("continuation", 6, &c)] {
        fuzz(what, seed, &std::fs::read(p).unwrap(), "mutant.safetensors", read);
    }
    // The checksum covers the tensors, not the configuration the generator is built from: a
    // file whose configuration is damaged (or crafted) but whose checksum is right.
    let ck = facegan::train::checkpoint::read(&g, &candle_core::Device::Cpu).unwrap();
    let config = ck.meta["config"].clone();
    fuzz("export's configuration", 10, config.as_bytes(), "mutant.safetensors", |b| {
        let mut meta = ck.meta.clone();
        meta.insert("config".into(), String::from_utf8_lossy(b).into_owned());
        meta.remove(facegan::train::checkpoint::CHECKSUM_KEY);
        facegan::train::checkpoint::write(&file, &ck.tensors, meta, true)?;
        facegan::sample::generate::load_generator(&file, &candle_core::Device::Cpu)?;
        Ok(())
    });
}

#[test]
fn torchscript_archives() {
    let valid =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.torchscript.pt")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("mutant.pt");
    fuzz("torchscript", 7, &valid, "mutant.pt", |b| {
        std::fs::write(&file, b)?;
        let m = facegan::metrics::torchscript::read_module(&file, &candle_core::Device::Cpu)?;
        assert!(m.parameter_count() < 1 << 20);
        Ok(())
    });
}

#[test]
fn toml_configs() {
    let valid = facegan::config::RunConfig::preset("stylegan2-64").unwrap().to_toml();
    fuzz("config", 8, valid.as_bytes(), "mutant.toml", |b| {
        let c = facegan::config::RunConfig::from_toml(&String::from_utf8_lossy(b), "mutant.toml")?;
        c.validate().map_err(|e| e.context("mutant.toml"))
    });
}

#[test]
fn attribute_files() {
    let names = "Male Smiling Eyeglasses Young";
    let mut text = format!("30\n{names}\n");
    for i in 0..30 {
        text.push_str(&format!(
            "{:06}.jpg  {}  -1  1 {}\n",
            i + 1,
            if i % 2 == 0 { 1 } else { -1 },
            if i < 9 { 1 } else { -1 }
        ));
    }
    fuzz("attributes", 9, text.as_bytes(), "mutant.txt", |b| {
        facegan::data::attrs::AttrFile::parse(&String::from_utf8_lossy(b), Path::new("mutant.txt")).map(|_| ())
    });
}
