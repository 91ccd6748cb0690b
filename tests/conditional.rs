//! Conditional and supervised models end to end: CelebA's attribute file (the real one and
//! damaged copies), labels through training and resume, penalties under labels, `generate
//! --attr` / `--attr-grid`, the attribute classifier and `eval --metrics attr`, InfoGAN's
//! codes and `facegan traverse`.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use facegan::config::RunConfig;
use facegan::data::attrs::{AttrFile, ATTR_FILE_NAME};
use facegan::penalty::PenaltyConfig;
use facegan::train::{checkpoint, train, trainer::Session};
use std::path::{Path, PathBuf};

/// `n` synthetic faces in `dir/faces`, and beside them an attribute file with `Odd` (the
/// image's number is odd) and `Low` (below n/4) for every image but the last.
fn labelled_faces(dir: &Path, n: usize) -> PathBuf {
    let faces = dir.join("faces");
    synthetic_faces(&faces, n);
    let mut text = format!("{}\r\nOdd Low \r\n", n - 1);
    for i in 0..n - 1 {
        let sign = |b: bool| if b { " 1" } else { "-1" };
        text.push_str(&format!("{i:04}.png {} {}\r\n", sign(i % 2 == 1), sign(i < n / 4)));
    }
    std::fs::write(dir.join(ATTR_FILE_NAME), text).unwrap();
    faces
}

fn tiny(data: &Path, arch: &str, condition: &str) -> RunConfig {
    let mut c = RunConfig::preset("dcgan-32").unwrap();
    let m = &mut c.model;
    (m.arch, m.ngf, m.ndf, m.nz) = (arch.into(), 8, 8, 16);
    m.condition = condition.into();
    m.attrs = vec!["Odd".into(), "Low".into()];
    if arch == "resnet" {
        (m.ngf, m.ndf, m.d_norm, m.d_spectral_norm) = (4, 4, "none".into(), true);
    }
    c.train.batch_size = 8;
    c.train.steps = 6;
    c.train.seed = 5;
    (c.log.log_every, c.log.sample_every, c.log.checkpoint_every, c.log.sample_count) = (1, 100, 100, 4);
    c.data.path = data.display().to_string();
    c.data.cache_dir = Some(common::cache_dir().display().to_string());
    c
}

#[test]
fn the_real_attribute_file_parses_and_damaged_copies_name_line_and_problem() {
    let Some(dir) = celeba_dir() else { return };
    let path = dir.parent().unwrap().join(ATTR_FILE_NAME);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.windows(2).take(2000).any(|w| w == b"\r\n"), "the shared file has CRLF line ends");
    let f = AttrFile::read(&path).unwrap();
    assert_eq!((f.len(), f.names.len()), (202_599, 40));
    assert_eq!(
        (f.names[0].as_str(), f.names[20].as_str(), f.names[39].as_str()),
        ("5_o_Clock_Shadow", "Male", "Young")
    );
    // 000001.jpg, as in the file: -1 1 1 -1 -1 -1 -1 -1 -1 -1 -1 1 -1 ... (Attractive, Arched_Eyebrows, Brown_Hair ...).
    let all: Vec<usize> = (0..40).collect();
    let row = f.row("000001.jpg", &all).unwrap();
    let on: Vec<&str> = all.iter().filter(|&&c| row[c]).map(|&c| f.names[c].as_str()).collect();
    assert_eq!(
        on,
        [
            "Arched_Eyebrows",
            "Attractive",
            "Brown_Hair",
            "Heavy_Makeup",
            "High_Cheekbones",
            "Mouth_Slightly_Open",
            "No_Beard",
            "Pointy_Nose",
            "Smiling",
            "Straight_Hair",
            "Wearing_Earrings",
            "Wearing_Lipstick",
            "Young"
        ]
    );
    assert!(f.row("202599.jpg", &all).is_some());
    // Every shared image has a row.
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.iter().filter(|n| f.row(n, &[20]).is_none()).count(), 0);

    // Damaged copies: a short row, a bad value, no header line; each error names the file and line.
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let t = tempfile::tempdir().unwrap();
    let damaged = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        edit(&mut l);
        let p = t.path().join(name);
        std::fs::write(&p, l.join("\r\n")).unwrap();
        format!("{:#}", AttrFile::read(&p).err().unwrap_or_else(|| panic!("{name} parsed")))
    };
    let e = damaged("short.txt", &|l| l[1000] = l[1000].rsplit_once(' ').unwrap().0.to_string());
    assert!(e.contains("short.txt line 1001") && e.contains("39 values for 40 attributes"), "{e}");
    let e = damaged("value.txt", &|l| l[7] = l[7].replacen(" 1", " 2", 1));
    assert!(e.contains("value.txt line 8") && e.contains("'2' is not 1 or -1"), "{e}");
    let e = damaged("header.txt", &|l| {
        l.remove(1);
    });
    assert!(e.contains("header.txt line 2") && e.contains("attribute names"), "{e}");
}

/// Labels stay with their images through caching, shuffling, flips and resume: a
/// conditional run of each kind resumed halfway equals the run without a stop, bit for bit;
/// the image without a row is left out; G's label prior is the data's frequencies.
#[test]
fn conditional_runs_resume_bitwise_and_learn_their_prior() {
    facegan::enable_second_order_gradients();
    let t = tempfile::tempdir().unwrap();
    // A prepared cache (the attribute file is found beside the folder it was prepared from).
    let folder = labelled_faces(t.path(), 25);
    let faces = t.path().join("faces.fgc");
    let spec = facegan::data::preprocess::CropResize { size: 32, crop: None };
    facegan::data::prepare(&folder, &faces, &facegan::data::PrepareOptions { spec, strict: false, progress: false })
        .unwrap();
    let mut projection = tiny(&faces, "resnet", "projection");
    projection.train.loss = "hinge".into();
    projection.train.n_critic = 2;
    projection.train.penalties = vec![PenaltyConfig::parse("r1:1:3").unwrap()];
    // SGAN with half the labels hidden and four images held out.
    let mut sgan = tiny(&faces, "dcgan", "sgan");
    (sgan.train.labelled_fraction, sgan.data.held_out) = (0.5, 4);
    // InfoGAN with ACGAN's labels as well: codes and labels side by side in G's input.
    let mut info = tiny(&faces, "dcgan", "acgan");
    (info.model.info_cat, info.model.info_cont) = (3, 2);
    for (name, cfg) in [
        ("concat", tiny(&faces, "dcgan", "concat")),
        ("acgan", tiny(&faces, "dcgan", "acgan")),
        ("projection", projection),
        ("infogan", info),
        ("sgan", sgan),
    ] {
        let a = train(opts(&cfg, &t.path().join(format!("{name}-a")), false, None)).unwrap();
        train(opts(&cfg, &t.path().join(format!("{name}-b")), false, Some(3))).unwrap();
        let b = train(opts(&cfg, &t.path().join(format!("{name}-b")), true, None)).unwrap();
        let ca = checkpoint::read(&a.checkpoint, &Device::Cpu).unwrap();
        let cb = checkpoint::read(&b.checkpoint, &Device::Cpu).unwrap();
        let mut keys: Vec<&String> = ca.tensors.keys().collect();
        keys.sort();
        assert_eq!(keys.len(), cb.tensors.len());
        for k in keys {
            let (x, y) = (&ca.tensors[k], &cb.tensors[k]);
            let (x, y) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(x == y, "{name}: {k} differs after resume");
        }
        if name == "sgan" {
            assert!(!ca.tensors.keys().any(|k| k.contains("label_prior")), "SGAN's G is unconditional");
        } else {
            // 24 labelled images: 12 odd, 6 below 25/4.
            let prior = ca.tensors["G_ema.buffers.label_prior"].to_vec1::<f32>().unwrap();
            assert_eq!(prior, [0.5, 0.25], "{name}");
        }
        let stats = facegan::train::stats::read(&t.path().join(format!("{name}-a/stats.jsonl"))).unwrap();
        for l in &stats {
            assert!(l.d_loss.is_finite() && l.g_loss.is_finite(), "{name}: {l:?}");
            if name == "sgan" {
                assert!(l.extra["d_class_real"] > 0.0, "{l:?}");
                // The class loss of every D step is taken on a whole batch of images with known
                // labels (10 of the 20 training images), not on the ~4 of a random batch.
                assert_eq!(l.extra["d_class_n"], 8.0, "{l:?}");
            }
            if name == "infogan" {
                assert!(l.extra["info_cat"] > 0.0 && l.extra["info_cont"] > 0.0, "{l:?}");
            }
            if name == "acgan" {
                for k in ["d_class_real", "d_class_fake", "g_class", "class_acc_real"] {
                    assert!(l.extra.get(k).is_some_and(|v| v.is_finite()), "{name}: no {k} in {l:?}");
                }
            }
        }
    }
}

/// The D step's penalty is computed under the batch's labels: the same images with other
/// labels give another R1 value through a projection D. A conditional model refuses a step
/// without labels.
#[test]
fn penalties_see_the_labels_and_a_step_without_labels_is_refused() {
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    let mut cfg = tiny(Path::new("unused"), "resnet", "projection");
    cfg.train.loss = "hinge".into();
    cfg.train.penalties = vec![PenaltyConfig::parse("r1:1").unwrap()];
    let reals = [facegan::rng::Rng::new(1).normal_tensor((8, 3, 32, 32), 0.0, 0.5, &dev).unwrap()];
    let labels = |v: f32| [Tensor::full(v, (8, 2), &dev).unwrap()];
    let r1 = |v: f32| {
        let mut s = Session::new(&cfg, &dev).unwrap();
        s.train_step_labelled(&reals, Some(&labels(v))).unwrap()["penalty_r1"]
    };
    let (a, b, a2) = (r1(0.0), r1(1.0), r1(0.0));
    assert_eq!(a, a2, "deterministic under the seed");
    assert!((a - b).abs() > 1e-6 * a.abs().max(1e-12), "R1 ignored the labels: {a} vs {b}");
    let e = Session::new(&cfg, &dev).unwrap().train_step(&reals).unwrap_err().to_string();
    assert!(e.contains("Odd, Low") && e.contains("no labels"), "{e}");
}

/// The prepared cache stores the attribute file's labels: a cache prepared beside one has
/// them, a cache prepared before it gets them on first use (same pixels), a changed file
/// replaces them, and a cache moved without its folder's attribute file still trains on
/// them. Damaged stored labels are an error naming the cache.
#[test]
fn labels_are_stored_in_the_cache_and_travel_with_it() {
    use facegan::data::cache::{prepare, Dataset, PrepareOptions};
    use facegan::data::{attrs::Labels, preprocess::CropResize};
    use facegan::train::trainer::open_labels;
    let t = tempfile::tempdir().unwrap();
    let faces = labelled_faces(t.path(), 12);
    let attr_path = t.path().join(ATTR_FILE_NAME);
    let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
    let cfg_for = |data: &Path| tiny(data, "dcgan", "concat");
    let want = |attr_text: &str, images: &[String]| {
        let f = AttrFile::parse(attr_text, &attr_path).unwrap();
        Labels::from_file(&f, &["Odd".into(), "Low".into()], images, false).unwrap()
    };
    let attr_text = std::fs::read_to_string(&attr_path).unwrap();

    // Prepared beside the attribute file: stored at once.
    let cache = t.path().join("a.fgc");
    prepare(&faces, &cache, &opts).unwrap();
    let ds = Dataset::open(&cache).unwrap();
    let stored = ds.header.labels.clone().expect("labels stored while preparing");
    let canonical = std::fs::canonicalize(&attr_path).unwrap();
    assert_eq!(
        (stored.names.as_slice(), Path::new(&stored.file)),
        (&["Odd".to_string(), "Low".into()][..], canonical.as_path())
    );
    let from_cache = open_labels(&cfg_for(&cache), &ds).unwrap().unwrap();
    let expected = want(&attr_text, &ds.header.names);
    assert_eq!((&from_cache.values, &from_cache.labelled), (&expected.values, &expected.labelled));
    assert_eq!(from_cache.labelled.len(), 11, "the image without a row stays unlabelled");
    assert_eq!(from_cache.of(3), [1.0, 0.0]);

    // Moved alone, its folder's attribute file gone: the stored labels serve.
    let moved = t.path().join("elsewhere");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&cache, moved.join("a.fgc")).unwrap();
    std::fs::rename(&attr_path, t.path().join("put-away.txt")).unwrap();
    let ds_moved = Dataset::open(&moved.join("a.fgc")).unwrap();
    let alone = open_labels(&cfg_for(&moved.join("a.fgc")), &ds_moved).unwrap().unwrap();
    assert_eq!((&alone.values, &alone.labelled), (&expected.values, &expected.labelled));
    let all = facegan::data::attrs::expand_all(&["all".into()], None, &moved.join("a.fgc")).unwrap();
    assert_eq!(all, ["Odd", "Low"], "`--attrs all` reads the stored names");
    // ... but a named attribute file that does not exist is still an error.
    let mut named = cfg_for(&moved.join("a.fgc"));
    named.data.attr_file = Some(t.path().join("nope.txt").display().to_string());
    let e = format!("{:#}", open_labels(&named, &ds_moved).unwrap_err());
    assert!(e.contains("nope.txt") && e.contains("does not exist"), "{e}");

    // Prepared before the attribute file existed: no labels; the first conditional use
    // stores them, and the pixels are the same bytes.
    let early = t.path().join("b.fgc");
    prepare(&faces, &early, &opts).unwrap();
    let before = Dataset::open(&early).unwrap();
    assert!(before.header.labels.is_none());
    let pixels: Vec<Vec<u8>> = (0..before.len()).map(|i| before.image(i).to_vec()).collect();
    std::fs::rename(t.path().join("put-away.txt"), &attr_path).unwrap();
    let first = open_labels(&cfg_for(&early), &before).unwrap().unwrap();
    assert_eq!(first.values, expected.values);
    let after = Dataset::open(&early).unwrap();
    assert_eq!(after.header.labels.as_ref().map(|l| l.key.clone()), Some(stored.key.clone()));
    assert!((0..after.len()).all(|i| after.image(i) == pixels[i].as_slice()), "pixels unchanged");

    // The attribute file changes: the cache's labels are replaced by the new ones.
    let changed = attr_text.replacen("0003.png  1 -1", "0003.png -1 -1", 1);
    assert_ne!(changed, attr_text);
    std::fs::write(&attr_path, &changed).unwrap();
    let again = open_labels(&cfg_for(&early), &after).unwrap().unwrap();
    assert_eq!(again.of(3), [0.0, 0.0]);
    let replaced = Dataset::open(&early).unwrap();
    assert_ne!(replaced.header.labels.as_ref().unwrap().key, stored.key);
    assert_eq!(replaced.stored_attrs().unwrap().unwrap().row("0003.png", &[0, 1]), Some(vec![false, false]));

    // A damaged stored byte names the cache.
    let mut bytes = std::fs::read(moved.join("a.fgc")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = 7;
    std::fs::write(moved.join("bad.fgc"), &bytes).unwrap();
    let e = format!("{:#}", Dataset::open(&moved.join("bad.fgc")).unwrap().stored_attrs().err().unwrap());
    assert!(e.contains("bad.fgc") && e.contains("0011.png") && e.contains("damaged"), "{e}");
    // A cut-off label block is a truncated cache.
    std::fs::write(moved.join("cut.fgc"), &bytes[..last]).unwrap();
    let e = format!("{:#}", Dataset::open(&moved.join("cut.fgc")).err().unwrap());
    assert!(e.contains("cut.fgc") && e.contains("truncated"), "{e}");
}

/// A damaged attribute file beside a folder does not stop unconditional preparation: the
/// cache stores no labels, and asking for them reports the file's problem.
#[test]
fn a_damaged_attribute_file_only_matters_when_labels_are_asked_for() {
    use facegan::data::cache::{prepare, Dataset, PrepareOptions};
    use facegan::data::preprocess::CropResize;
    let t = tempfile::tempdir().unwrap();
    let faces = labelled_faces(t.path(), 6);
    std::fs::write(t.path().join(ATTR_FILE_NAME), "5\r\nOdd Low\r\n0000.png 1 x\r\n").unwrap();
    let cache = t.path().join("a.fgc");
    let opts = PrepareOptions { spec: CropResize { size: 16, crop: None }, strict: false, progress: false };
    prepare(&faces, &cache, &opts).unwrap();
    let ds = Dataset::open(&cache).unwrap();
    assert!(ds.header.labels.is_none());
    let e = format!("{:#}", facegan::train::trainer::open_labels(&tiny(&cache, "dcgan", "concat"), &ds).unwrap_err());
    assert!(e.contains(ATTR_FILE_NAME) && e.contains("line 3") && e.contains("'x'"), "{e}");
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn generate_with_attributes_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let faces = labelled_faces(t.path(), 25);
    let run_dir = t.path().join("run");
    let (f, r) = (faces.to_str().unwrap(), run_dir.to_str().unwrap());
    let train_flags = [TINY, &["--data", f, "--steps", "4", "--condition", "acgan"]].concat();
    // `all` expands to the file's names; the image without a row is named and left out.
    let (ok, text) = run(&[&["train"], &train_flags[..], &["--out", r, "--attrs", "all"]].concat());
    assert!(ok, "{text}");
    assert!(text.contains("1 of 25 images have no row") && text.contains("0024.png"), "{text}");
    let saved = RunConfig::load(&run_dir.join("config.toml")).unwrap();
    assert_eq!(saved.model.attrs, ["Odd", "Low"]);
    // --strict refuses the unlabelled image.
    let strict = t.path().join("strict");
    let (ok, text) =
        run(&[&["train"], &train_flags[..], &["--out", strict.to_str().unwrap(), "--attrs", "Odd", "--strict"]]
            .concat());
    assert!(!ok && text.contains("--strict refuses") && text.contains("0024.png"), "{text}");

    let ck = checkpoint::latest(&run_dir).unwrap();
    let ck = ck.to_str().unwrap();
    let out = |name: &str| t.path().join(name).to_str().unwrap().to_string();
    let gen = |attr: &str, seed: &str, name: &str| {
        let (ok, text) =
            run(&["generate", "--checkpoint", ck, "--count", "4", "--seed", seed, "--attr", attr, "--out", &out(name)]);
        assert!(ok, "{text}");
        file_bytes(Path::new(&out(name)))
    };
    let a = gen("Odd=1,Low=0", "3", "a.png");
    assert_eq!(a, gen("Odd=1,Low=0", "3", "a2.png"), "the same seed and attributes give the same faces");
    assert_ne!(a, gen("Odd=0,Low=0", "3", "b.png"), "the attributes change the faces");
    let (ok, text) = run(&["generate", "--checkpoint", ck, "--attr", "Smiling=1", "--out", &out("c.png")]);
    assert!(!ok && text.contains("not trained on attribute 'Smiling'") && text.contains("Odd, Low"), "{text}");
    let (ok, text) = run(&["generate", "--checkpoint", ck, "--attr", "Odd=2", "--out", &out("c.png")]);
    assert!(!ok && text.contains("must be 1 or 0"), "{text}");
    // The grid: one row with the attribute off and one with it on, for each attribute listed.
    let (ok, text) =
        run(&["generate", "--checkpoint", ck, "--attr-grid", "Odd,Low", "--count", "3", "--out", &out("grid.png")]);
    assert!(ok && text.contains("12 faces"), "{text}");
    let img = image::open(out("grid.png")).unwrap();
    let unconditional = t.path().join("plain");
    let (ok, _) =
        run(&[&["train"], TINY, &["--data", f, "--steps", "1", "--out", unconditional.to_str().unwrap()]].concat());
    assert!(ok);
    let plain = checkpoint::latest(&unconditional).unwrap();
    let (ok, text) =
        run(&["generate", "--checkpoint", plain.to_str().unwrap(), "--attr", "Odd=1", "--out", &out("d.png")]);
    assert!(!ok && text.contains("unconditional"), "{text}");
    assert!(img.height() > img.width(), "four rows of three faces: {}x{}", img.width(), img.height());
}

/// 64 faces, half red (`Red` 1) and half blue, with a second attribute `Coin` that no pixel
/// shows; the attribute file beside them.
fn red_and_blue(dir: &Path) -> PathBuf {
    let faces = dir.join("rb");
    std::fs::create_dir_all(&faces).unwrap();
    let mut text = String::from("64\nRed Coin\n");
    let mut rng = facegan::rng::Rng::new(9);
    for i in 0..64 {
        let red = i % 2 == 0;
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let v = ((x * 7 + y * 3 + i as u32 * 11) % 40) as u8;
            if red {
                image::Rgb([200 + v, 40, 40])
            } else {
                image::Rgb([40, 40, 200 + v])
            }
        });
        img.save(faces.join(format!("{i:03}.png"))).unwrap();
        let coin = if rng.uniform() < 0.5 { 1 } else { -1 };
        text.push_str(&format!("{i:03}.png {} {coin}\n", if red { 1 } else { -1 }));
    }
    std::fs::write(dir.join(ATTR_FILE_NAME), text).unwrap();
    faces
}

/// A generator that paints the face red when asked for `Red` and blue otherwise.
struct Painter(facegan::nn::Params);

impl facegan::models::Generator for Painter {
    fn latent_dim(&self) -> usize {
        1
    }

    fn sample_latent(
        &self,
        n: usize,
        rng: &mut facegan::rng::Rng,
        device: &Device,
    ) -> anyhow::Result<facegan::models::Latent> {
        let mut l = facegan::models::Latent::from_z(rng.normal_tensor((n, 1), 0.0, 1.0, device)?);
        l.labels = Some(rng.uniform_tensor((n, 2), 0.0, 1.0, device)?.ge(0.5)?.to_dtype(candle_core::DType::F32)?);
        Ok(l)
    }

    fn forward(&self, latent: &facegan::models::Latent, _: facegan::nn::Mode) -> candle_core::Result<Tensor> {
        let y = latent.labels.as_ref().unwrap().narrow(1, 0, 1)?; // (N, 1): Red
        let n = y.dim(0)?;
        let red = Tensor::new(&[0.7f32, -0.7, -0.7], y.device())?.reshape((1, 3, 1, 1))?;
        let blue = Tensor::new(&[-0.7f32, -0.7, 0.7], y.device())?.reshape((1, 3, 1, 1))?;
        let y = y.reshape((n, 1, 1, 1))?;
        let colour = (y.broadcast_mul(&red)? + (1.0 - y)?.broadcast_mul(&blue)?)?;
        colour.broadcast_as((n, 3, 32, 32))?.contiguous()
    }

    fn params(&self) -> &facegan::nn::Params {
        &self.0
    }
}

/// The classifier learns a visible attribute to perfection on held-out faces, scores a
/// generator that obeys it at 1.0, and `eval --metrics attr` runs from the command line and
/// refuses what it cannot judge.
#[test]
fn the_classifier_learns_a_visible_attribute_and_judges_generators() {
    use facegan::metrics::attr::{attribute_accuracy, train_classifier, Classifier, ClassifierOptions};
    let t = tempfile::tempdir().unwrap();
    let faces = red_and_blue(t.path());
    let clf = t.path().join("clf.safetensors");
    let opts = ClassifierOptions {
        data: faces.display().to_string(),
        attrs: vec!["Red".into(), "Coin".into()],
        attr_file: None,
        image_size: 32,
        width: 8,
        steps: 40,
        batch_size: 16,
        lr: 1e-3,
        held_out: 16,
        categorical: false,
        labelled_fraction: 1.0,
        seed: 0,
        out: clf.clone(),
        device: Device::Cpu,
        progress: false,
        cache_dir: Some(common::cache_dir().display().to_string()),
    };
    let held = train_classifier(&opts).unwrap();
    assert_eq!((held.names[0].as_str(), held.count), ("Red", 16));
    assert_eq!((held.accuracy[0], held.balanced[0]), (1.0, 1.0), "{}", held.table());
    let c = Classifier::load(&clf, &Device::Cpu).unwrap();
    assert_eq!(c.held_out.as_deref(), Some(&held.balanced[..]));
    let mut gcfg = RunConfig::preset("acgan-64").unwrap();
    (gcfg.model.image_size, gcfg.model.attrs) = (32, vec!["Red".into(), "Coin".into()]);
    let painter = Painter(facegan::nn::Params::new(&Device::Cpu));
    let scores = attribute_accuracy(&painter, &gcfg, &c, 20, 0, &Device::Cpu).unwrap();
    assert_eq!((scores[0].hit_on, scores[0].hit_off, scores[0].balanced), (1.0, 1.0, 1.0), "{scores:?}");
    gcfg.model.attrs = vec!["Smiling".into()];
    let e = attribute_accuracy(&painter, &gcfg, &c, 4, 0, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("does not know attribute Smiling") && e.contains("Red, Coin"), "{e}");

    // From the command line, on a tiny ACGAN trained on the same faces.
    let run_dir = t.path().join("run");
    let (f, r) = (faces.to_str().unwrap(), run_dir.to_str().unwrap());
    let (ok, text) = run(&[
        &["train"],
        TINY,
        &["--data", f, "--steps", "2", "--out", r, "--condition", "acgan", "--attrs", "Red,Coin"],
    ]
    .concat());
    assert!(ok, "{text}");
    let (c, json) = (clf.to_str().unwrap(), t.path().join("attr.json"));
    let (ok, text) =
        run(&["eval", r, "--metrics", "attr", "--classifier", c, "--attr-num", "8", "--json", json.to_str().unwrap()]);
    assert!(ok && text.contains("Red") && text.contains("balanced"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let b = v["attr"][0]["balanced"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&b) && v["attr"][0]["classifier"].as_f64() == Some(1.0), "{v}");
    let (ok, text) = run(&["eval", r, "--metrics", "attr"]);
    assert!(!ok && text.contains("--classifier"), "{text}");
    let (ok, text) = run(&["eval", r, "--metrics", "attr", "--classifier", r]);
    assert!(!ok, "{text}");
    let (ok, text) = run(&["eval", r, "--metrics", "fid"]);
    assert!(!ok && text.contains("--real"), "{text}");
}

#[test]
fn infogan_traversals_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let faces = t.path().join("faces");
    synthetic_faces(&faces, 24);
    let (f, info, plain) = (faces.to_str().unwrap(), t.path().join("info"), t.path().join("plain"));
    let flags = [TINY, &["--data", f, "--steps", "2"]].concat();
    let (ok, text) =
        run(&[&["train"], &flags[..], &["--out", info.to_str().unwrap(), "--info-cat", "4", "--info-cont", "2"]]
            .concat());
    assert!(ok, "{text}");
    let (ok, text) = run(&[&["train"], &flags[..], &["--out", plain.to_str().unwrap()]].concat());
    assert!(ok, "{text}");
    let ck = checkpoint::latest(&info).unwrap();
    let ck = ck.to_str().unwrap();
    let out = |name: &str| t.path().join(name).to_str().unwrap().to_string();
    let size = |name: &str| {
        let i = image::open(out(name)).unwrap();
        (i.width(), i.height())
    };
    let (ok, text) = run(&["traverse", "--checkpoint", ck, "--code", "0", "--rows", "2", "--out", &out("cat.png")]);
    assert!(ok, "{text}");
    let (ok, text) =
        run(&["traverse", "--checkpoint", ck, "--code", "2", "--rows", "2", "--steps", "5", "--out", &out("cont.png")]);
    assert!(ok, "{text}");
    let ((w4, h4), (w5, h5)) = (size("cat.png"), size("cont.png"));
    assert!(h4 == h5 && w5 > w4 && w4 > 3 * h4 / 2, "4 categories then 5 steps across 2 rows: {w4}x{h4}, {w5}x{h5}");
    let (ok, text) = run(&["traverse", "--checkpoint", ck, "--code", "3", "--out", &out("x.png")]);
    assert!(!ok && text.contains("has 3 codes") && text.contains("4 categories"), "{text}");
    let p = checkpoint::latest(&plain).unwrap();
    let (ok, text) = run(&["traverse", "--checkpoint", p.to_str().unwrap(), "--code", "0", "--out", &out("x.png")]);
    assert!(!ok && text.contains("no InfoGAN codes"), "{text}");
    let (ok, text) =
        run(&[&["train"], &flags[..], &["--out", &out("r"), "--arch", "resnet", "--info-cat", "3"]].concat());
    assert!(!ok && text.contains("model.info_cat does not apply to the resnet family"), "{text}");
}

/// The semi-supervised GAN from the command line: trained with a tenth of the labels and
/// faces held out, its D measured on those faces by `classifier eval`, beside the same
/// network trained as a plain classifier on the same labels (`classifier train --categorical`).
#[test]
fn sgan_and_its_plain_classifier_twin_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let faces = red_and_blue(t.path());
    let (f, sgan) = (faces.to_str().unwrap(), t.path().join("sgan"));
    let common = ["--labelled-fraction", "0.5", "--held-out", "16", "--attrs", "Red"];
    let (ok, text) = run(&[
        &["train"],
        TINY,
        &["--data", f, "--steps", "4", "--out", sgan.to_str().unwrap(), "--condition", "sgan"],
        &common[..],
    ]
    .concat());
    assert!(ok, "{text}");
    let (ok, text) = run(&["classifier", "eval", "--model", sgan.to_str().unwrap(), "--data", f, "--held-out", "16"]);
    assert!(ok && text.contains("classes of Red") && text.contains("(16 held-out faces)"), "{text}");
    let twin = t.path().join("twin.safetensors");
    let json = t.path().join("twin.json");
    let (ok, text) =
        run(
            &[
                &[
                    "classifier",
                    "train",
                    "--categorical",
                    "--data",
                    f,
                    "--size",
                    "32",
                    "--width",
                    "8",
                    "--steps",
                    "100",
                ][..],
                &["--batch-size", "8", "--out", twin.to_str().unwrap(), "--json", json.to_str().unwrap(), "--quiet"],
                &common[..],
            ]
            .concat(),
        );
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["held_out"], 16);
    assert_eq!(v["accuracy"][0].as_f64(), Some(1.0), "red against blue is learnt from 24 labels: {v}");
    let (ok, text) = run(&["train", "--preset", "cgan-64", "--data", f, "--labelled-fraction", "0.5", "--out", "x"]);
    assert!(!ok && text.contains("labelled_fraction") && text.contains("sgan"), "{text}");
    let (ok, text) = run(&["classifier", "eval", "--model", twin.to_str().unwrap(), "--data", f, "--held-out", "64"]);
    assert!(!ok && text.contains("leave none"), "{text}");
}
