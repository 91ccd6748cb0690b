//! CelebA's attribute file (`list_attr_celeba.txt`) and the per-image labels taken from it.
//!
//! The format: a line with the number of rows, a line of attribute names, then one row per
//! image, `000001.jpg  -1  1  1 ...`, values 1 or -1, space padded, CRLF or LF line ends.
//! Rows are matched to a prepared cache's images by file name (the cache stores every
//! image's name relative to its source folder). The cache then keeps every attribute of
//! every image beside its pixels (`cache::store_labels`), so a cache moved without its
//! folder still has its labels; [`AttrFile::from_stored`] reads them back.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The attribute file's usual name, looked for beside the image folder.
pub const ATTR_FILE_NAME: &str = "list_attr_celeba.txt";

/// A parsed attribute file.
pub struct AttrFile {
    pub path: PathBuf,
    /// Attribute names in the file's order.
    pub names: Vec<String>,
    /// Row of each image file name.
    rows: HashMap<String, usize>,
    /// `rows × names` values, true for 1.
    values: Vec<bool>,
    /// A hash of the file's bytes ([`key_of`]): which file a cache's stored labels came from.
    pub key: String,
}

/// Bytes of a stored label: the attribute is absent (-1 in the file), present (1), or the
/// image has no row.
const STORED_ABSENT: u8 = 0;
const STORED_PRESENT: u8 = 1;
const STORED_NO_ROW: u8 = 2;

/// The bytes of the attribute file at `path`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the attribute file {}", path.display()))
}

/// A hash of an attribute file's bytes.
pub fn key_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(10).map(|b| format!("{b:02x}")).collect()
}

impl AttrFile {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_bytes(read_bytes(path)?, path)
    }

    /// Parses the bytes of the attribute file at `path` (read with [`read_bytes`]).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: the attribute file is not UTF-8 text", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let at = |line: usize, why: String| anyhow::anyhow!("{} line {line}: {why}", path.display());
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).enumerate().map(|(i, l)| (i + 1, l));
        let (_, first) = lines.next().ok_or_else(|| at(1, "the file is empty".into()))?;
        let count: usize = first
            .trim()
            .parse()
            .map_err(|_| at(1, format!("expected the number of rows (e.g. 202599), found '{}'", first.trim())))?;
        let (_, header) = lines.next().ok_or_else(|| at(2, "missing the line of attribute names".into()))?;
        let names: Vec<String> = header.split_whitespace().map(str::to_string).collect();
        if names.is_empty() || names.iter().any(|n| n.parse::<i64>().is_ok() || n.contains('.')) {
            bail!(at(
                2,
                format!(
                    "expected the attribute names (e.g. 5_o_Clock_Shadow Arched_Eyebrows ...), found '{}'",
                    header.trim()
                )
            ));
        }
        let k = names.len();
        // The first line is only a claim: reserve no more rows than the text can hold.
        let cap = count.min(text.len() / (k + 1));
        let mut rows = HashMap::with_capacity(cap);
        let mut values = Vec::with_capacity(cap * k);
        for (no, line) in lines {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            let before = values.len();
            for f in fields {
                values.push(match f {
                    "1" => true,
                    "-1" => false,
                    other => bail!(at(no, format!("{name}: value '{other}' is not 1 or -1"))),
                });
            }
            if values.len() - before != k {
                bail!(at(no, format!("{name}: {} values for {k} attributes", values.len() - before)));
            }
            if rows.insert(name.to_string(), rows.len()).is_some() {
                bail!(at(no, format!("{name} has a second row")));
            }
        }
        if rows.len() != count {
            bail!("{}: the first line says {count} rows but the file has {}", path.display(), rows.len());
        }
        Ok(Self { path: path.to_path_buf(), names, rows, values, key: key_of(text.as_bytes()) })
    }

    /// Every attribute of each of `images` (file names), a byte each in image order: what a
    /// cache stores ([`Self::from_stored`] reads it back).
    pub fn stored_bytes(&self, images: &[String]) -> Vec<u8> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let mut out = Vec::with_capacity(images.len() * all.len());
        for name in images {
            match self.row(name, &all) {
                Some(row) => out.extend(row.into_iter().map(|v| if v { STORED_PRESENT } else { STORED_ABSENT })),
                None => out.extend(std::iter::repeat_n(STORED_NO_ROW, all.len())),
            }
        }
        out
    }

    /// The attribute file a cache stored for its `images`: `bytes` as [`Self::stored_bytes`]
    /// wrote them, `names` the attributes, `path` and `key` those of the file they came from.
    /// A byte other than the three a cache writes is an error naming `cache`.
    pub fn from_stored(
        cache: &Path,
        path: &Path,
        key: &str,
        names: &[String],
        images: &[String],
        bytes: &[u8],
    ) -> Result<Self> {
        let k = names.len();
        if k == 0 || bytes.len() != images.len() * k {
            bail!(
                "{}: the stored labels hold {} bytes for {} images of {k} attributes",
                cache.display(),
                bytes.len(),
                images.len()
            );
        }
        let (mut rows, mut values) = (HashMap::new(), Vec::with_capacity(bytes.len()));
        for (name, row) in images.iter().zip(bytes.chunks(k)) {
            if row.iter().all(|&b| b == STORED_NO_ROW) {
                continue;
            }
            if row.iter().any(|&b| b != STORED_ABSENT && b != STORED_PRESENT) {
                bail!(
                    "{}: the stored labels of {name} are damaged (bytes {row:?}: each 0 or 1, or all 2 for an image without a row)",
                    cache.display()
                );
            }
            let r = values.len() / k;
            values.extend(row.iter().map(|&b| b == STORED_PRESENT));
            let base = Path::new(name).file_name().and_then(|n| n.to_str()).unwrap_or(name);
            rows.insert(base.to_string(), r);
        }
        Ok(Self { path: path.to_path_buf(), names: names.to_vec(), rows, values, key: key.to_string() })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Column indices of `wanted` (`all` expands to every attribute); an unknown name is an
    /// error listing the valid ones.
    pub fn columns(&self, wanted: &[String]) -> Result<Vec<usize>> {
        if wanted.iter().any(|w| w == "all") {
            return Ok((0..self.names.len()).collect());
        }
        let mut out = Vec::new();
        for w in wanted {
            match self.names.iter().position(|n| n == w) {
                Some(i) if out.contains(&i) => bail!("attribute {w} is listed twice"),
                Some(i) => out.push(i),
                None => bail!("{}: no attribute '{w}'; valid names: {}", self.path.display(), self.names.join(", ")),
            }
        }
        Ok(out)
    }

    /// The values of `columns` for the image named `file` (matched by its file name, so
    /// `sub/000001.jpg` finds `000001.jpg`), or None when the file has no row for it.
    pub fn row(&self, file: &str, columns: &[usize]) -> Option<Vec<bool>> {
        let base = Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or(file);
        let r = *self.rows.get(base)?;
        let k = self.names.len();
        Some(columns.iter().map(|&c| self.values[r * k + c]).collect())
    }
}

/// The attribute names of an attribute file (its second line), without reading the rows.
pub fn read_names(path: &Path) -> Result<Vec<String>> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read the attribute file {}", path.display()))?;
    let mut lines = std::io::BufReader::new(f).lines().skip(1);
    let header = lines.next().transpose()?.unwrap_or_default();
    // The header as a file of no rows gets the same checks as in a full read.
    Ok(AttrFile::parse(&format!("0\n{header}\n"), path)?.names)
}

/// The attribute file for the data at `data` (an image folder, or a prepared cache, which
/// stands for the folder it was prepared from): `explicit` if given, else
/// `list_attr_celeba.txt` in that folder or beside it.
pub fn find_attr_file(explicit: Option<&str>, data: &Path) -> Result<PathBuf> {
    if let Some(p) = explicit {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("attribute file {} does not exist", p.display());
        }
        return Ok(p);
    }
    let image_dir = match data.is_file() {
        true => PathBuf::from(super::Dataset::open(data)?.header.source),
        false => data.to_path_buf(),
    };
    let candidates = [image_dir.join(ATTR_FILE_NAME), image_dir.parent().unwrap_or(&image_dir).join(ATTR_FILE_NAME)];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "conditioning on attributes needs CelebA's {ATTR_FILE_NAME}, which is neither in nor beside {}; give it with --attr-file PATH",
            image_dir.display()
        ),
    }
}

/// `wanted` with `all` replaced by every name of the data's attribute file (see
/// [`find_attr_file`]; for a prepared cache without one, the names of the labels it
/// stores); other lists are returned as they are.
pub fn expand_all(wanted: &[String], explicit: Option<&str>, data: &Path) -> Result<Vec<String>> {
    if !wanted.iter().any(|w| w == "all") {
        return Ok(wanted.to_vec());
    }
    match find_attr_file(explicit, data) {
        Ok(path) => read_names(&path),
        Err(e) if explicit.is_none() && data.is_file() => match super::Dataset::open(data)?.header.labels {
            Some(stored) => Ok(stored.names),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Labels of a dataset's images: `k` attributes each, 0 or 1, and which images have them.
#[derive(Clone, Debug)]
pub struct Labels {
    pub names: Vec<String>,
    /// `images × names`, 1.0 where the attribute is present.
    pub values: Vec<f32>,
    /// Images with a row in the attribute file, in dataset order.
    pub labelled: Vec<usize>,
}

impl Labels {
    /// Labels of `images` (file names in dataset order) for the attributes `wanted`. Images
    /// without a row are left out of `labelled` (with `strict`, they are an error); either
    /// way a few are named and all are counted.
    pub fn from_file(file: &AttrFile, wanted: &[String], images: &[String], strict: bool) -> Result<Self> {
        let columns = file.columns(wanted)?;
        let k = columns.len();
        let mut values = vec![0f32; images.len() * k];
        let mut labelled = Vec::with_capacity(images.len());
        let mut missing = Vec::new();
        for (i, name) in images.iter().enumerate() {
            match file.row(name, &columns) {
                Some(row) => {
                    for (j, v) in row.into_iter().enumerate() {
                        values[i * k + j] = f32::from(u8::from(v));
                    }
                    labelled.push(i);
                }
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            let few = missing.iter().take(5).copied().collect::<Vec<_>>().join(", ");
            let what = format!(
                "{} of {} images have no row in {} (e.g. {few})",
                missing.len(),
                images.len(),
                file.path.display()
            );
            if strict || labelled.is_empty() {
                bail!("{what}; {}", if strict { "--strict refuses them" } else { "no image is labelled" });
            }
            eprintln!("warning: {what}; training leaves them out");
        }
        let names = columns.iter().map(|&c| file.names[c].clone()).collect();
        Ok(Self { names, values, labelled })
    }

    pub fn k(&self) -> usize {
        self.names.len()
    }

    /// The labels of image `i`.
    pub fn of(&self, i: usize) -> &[f32] {
        &self.values[i * self.k()..(i + 1) * self.k()]
    }

    /// How often each attribute is present among the labelled images whose labels are
    /// known (not hidden by [`Self::hide`]).
    pub fn frequencies(&self) -> Vec<f64> {
        let mut f = vec![0f64; self.k()];
        let known: Vec<usize> = self.labelled.iter().copied().filter(|&i| self.of(i)[0] >= 0.0).collect();
        for &i in &known {
            for (a, v) in f.iter_mut().zip(self.of(i)) {
                *a += *v as f64;
            }
        }
        f.iter().map(|a| a / known.len().max(1) as f64).collect()
    }

    /// Takes the last `n` labelled images (dataset order: by file name) out of `labelled`
    /// and returns them.
    pub fn hold_out(&mut self, n: usize) -> Result<Vec<usize>> {
        if n >= self.labelled.len() {
            bail!("{n} held-out images leave none of the {} labelled ones to train on", self.labelled.len());
        }
        Ok(self.labelled.split_off(self.labelled.len() - n))
    }

    /// Keeps the labels of a `fraction` of the labelled images, chosen by `seed`, and marks
    /// the others' labels unknown (−1); they stay in `labelled`, as images. Returns how many
    /// keep their labels.
    pub fn hide(&mut self, fraction: f64, seed: u64) -> usize {
        let mut order = self.labelled.clone();
        crate::rng::Rng::derived(seed, 0x1ABE1).shuffle(&mut order);
        let keep = ((fraction * order.len() as f64).round() as usize).clamp(1, order.len());
        let k = self.k();
        for &i in &order[keep..] {
            self.values[i * k..(i + 1) * k].iter_mut().for_each(|v| *v = -1.0);
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str =
        "3\r\nSmiling Male  Young \r\n000001.jpg -1  1  1\r\n000002.jpg  1 -1  1\r\n000003.jpg  1  1 -1\r\n";

    fn parse(text: &str) -> Result<AttrFile> {
        AttrFile::parse(text, Path::new("attrs.txt"))
    }

    #[test]
    fn parses_crlf_and_padding_and_matches_by_file_name() {
        let f = parse(SMALL).unwrap();
        assert_eq!(f.names, ["Smiling", "Male", "Young"]);
        assert_eq!(f.len(), 3);
        let cols = f.columns(&["Young".into(), "Smiling".into()]).unwrap();
        assert_eq!(f.row("000002.jpg", &cols), Some(vec![true, true]));
        assert_eq!(f.row("some/dir/000003.jpg", &cols), Some(vec![false, true]));
        assert_eq!(f.row("000009.jpg", &cols), None);
        assert_eq!(f.columns(&["all".into()]).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn damaged_files_name_the_line_and_the_problem() {
        let cases = [
            ("", "line 1"),
            ("x\n", "number of rows"),
            ("3\n", "line 2: missing"),
            ("1\n000001.jpg 1 -1\n", "attribute names"),
            ("1\nA B\n000001.jpg 1\n", "line 3: 000001.jpg: 1 values for 2 attributes"),
            ("1\nA B\n000001.jpg 1 0\n", "line 3: 000001.jpg: value '0' is not 1 or -1"),
            ("2\nA B\n000001.jpg 1 1\n", "says 2 rows but the file has 1"),
            ("2\nA B\n000001.jpg 1 1\n000001.jpg 1 1\n", "line 4: 000001.jpg has a second row"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(text).err().unwrap_or_else(|| panic!("{text:?} parsed")));
            assert!(e.contains("attrs.txt") && e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_attributes_list_the_valid_names() {
        let f = parse(SMALL).unwrap();
        let e = f.columns(&["Smiling".into(), "Happy".into()]).unwrap_err().to_string();
        assert!(e.contains("'Happy'") && e.contains("Smiling, Male, Young"), "{e}");
        assert!(f.columns(&["Male".into(), "Male".into()]).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn held_out_images_leave_training_and_hidden_labels_are_unknown() {
        let text: String = (0..10).map(|i| format!("{i:03}.png {}\n", if i < 4 { 1 } else { -1 })).collect();
        let f = parse(&format!("10\nA\n{text}")).unwrap();
        let images: Vec<String> = (0..10).map(|i| format!("{i:03}.png")).collect();
        let mut l = Labels::from_file(&f, &["A".into()], &images, true).unwrap();
        assert_eq!(l.hold_out(3).unwrap(), [7, 8, 9]);
        assert_eq!(l.labelled, [0, 1, 2, 3, 4, 5, 6]);
        assert!(l.clone().hold_out(7).is_err(), "nothing left to train on");
        let mut m = l.clone();
        assert_eq!(l.hide(0.5, 3), 4);
        m.hide(0.5, 3);
        assert_eq!(l.values, m.values, "the same seed hides the same labels");
        let hidden: Vec<usize> = l.labelled.iter().copied().filter(|&i| l.of(i)[0] < 0.0).collect();
        assert_eq!((hidden.len(), l.labelled.len()), (3, 7), "hidden labels keep their images");
        let known: Vec<f32> = l.labelled.iter().map(|&i| l.of(i)[0]).filter(|v| *v >= 0.0).collect();
        let want = known.iter().sum::<f32>() as f64 / known.len() as f64;
        assert_eq!(l.frequencies(), [want], "frequencies count known labels only");
    }

    #[test]
    fn unlabelled_images_are_counted_named_and_refused_when_strict() {
        let f = parse(SMALL).unwrap();
        let images: Vec<String> = ["000003.jpg", "x.png", "000001.jpg"].iter().map(|s| s.to_string()).collect();
        let l = Labels::from_file(&f, &["Male".into(), "Smiling".into()], &images, false).unwrap();
        assert_eq!(l.labelled, [0, 2]);
        assert_eq!((l.of(0), l.of(2)), (&[1.0, 1.0][..], &[1.0, 0.0][..]));
        assert_eq!(l.frequencies(), [1.0, 0.5]);
        let e = Labels::from_file(&f, &["Male".into()], &images, true).unwrap_err().to_string();
        assert!(e.contains("1 of 3 images") && e.contains("x.png") && e.contains("--strict"), "{e}");
    }
}
