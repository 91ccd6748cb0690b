//! The model zoo: the generators the repository ships under `models/`, described in
//! `models/zoo.toml` (what each is, how far it trained, how good it measured). One entry is
//! the default, the model `facegan generate` uses when given neither `--model` nor
//! `--checkpoint`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The manifest's file name, in the models folder.
pub const ZOO_FILE: &str = "zoo.toml";

/// One shipped model.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZooEntry {
    /// What `--model` takes.
    pub name: String,
    /// The exported EMA generator, relative to the models folder.
    pub file: String,
    /// The model used when none is named (exactly one entry).
    #[serde(default)]
    pub default: bool,
    /// One line: family, size, recipe.
    pub about: String,
    /// The preset it trained from (its full settings are in the file's metadata).
    pub preset: String,
    /// Images shown to D when it was exported.
    pub images_seen: u64,
    /// CPU time of its training, in hours of this project's 2-core development machines.
    pub cpu_hours: f64,
    /// FID at export, with the protocol it was measured under.
    #[serde(default)]
    pub fid: Option<f64>,
    #[serde(default)]
    pub kid: Option<f64>,
    #[serde(default)]
    pub precision: Option<f64>,
    #[serde(default)]
    pub recall: Option<f64>,
    /// How the metrics were measured: fakes, which real faces (and whether it trained on them).
    #[serde(default)]
    pub protocol: Option<String>,
    /// The continuation file that lets training go on elsewhere (`train --init-from`).
    #[serde(default)]
    pub continuation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZooFile {
    model: Vec<ZooEntry>,
}

/// The models of one folder.
#[derive(Clone, Debug)]
pub struct Zoo {
    pub dir: PathBuf,
    pub models: Vec<ZooEntry>,
}

impl Zoo {
    /// `models/` in the working directory, else in the source tree this binary was built from.
    pub fn find() -> Result<Self> {
        let candidates = [PathBuf::from("models"), Path::new(env!("CARGO_MANIFEST_DIR")).join("models")];
        match candidates.iter().find(|d| d.join(ZOO_FILE).is_file()) {
            Some(dir) => Self::load(dir),
            None => bail!(
                "no model zoo here: neither models/{ZOO_FILE} nor {} exists; run from a facegan checkout, or pass --checkpoint",
                candidates[1].join(ZOO_FILE).display()
            ),
        }
    }

    /// Reads and checks `dir/zoo.toml`: unique names, exactly one default.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(ZOO_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: ZooFile =
            toml::from_str(&text).with_context(|| format!("{}: not a model zoo manifest", path.display()))?;
        let zoo = Self { dir: dir.to_path_buf(), models: file.model };
        for (i, m) in zoo.models.iter().enumerate() {
            if zoo.models[..i].iter().any(|o| o.name == m.name) {
                bail!("{}: the name {} is used twice", path.display(), m.name);
            }
        }
        match zoo.models.iter().filter(|m| m.default).count() {
            1 => Ok(zoo),
            n => bail!("{}: {n} models are marked default = true; exactly one must be", path.display()),
        }
    }

    pub fn default_model(&self) -> &ZooEntry {
        self.models.iter().find(|m| m.default).expect("checked at load")
    }

    /// The entry called `name`; the error lists the names there are.
    pub fn get(&self, name: &str) -> Result<&ZooEntry> {
        self.models.iter().find(|m| m.name == name).with_context(|| {
            let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            format!("no model {name} in {}; the zoo has: {}", self.dir.join(ZOO_FILE).display(), names.join(", "))
        })
    }

    /// The generator file of an entry, which must exist.
    pub fn path(&self, m: &ZooEntry) -> Result<PathBuf> {
        let p = self.dir.join(&m.file);
        match p.is_file() {
            true => Ok(p),
            false => bail!("model {}: its file {} is missing", m.name, p.display()),
        }
    }

    /// The file of the model called `name`, or of the default model.
    pub fn model_path(&self, name: Option<&str>) -> Result<PathBuf> {
        self.path(match name {
            Some(n) => self.get(n)?,
            None => self.default_model(),
        })
    }

    /// The table `facegan models` prints.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{:2}{:24} {:>5} {:14} {:>12} {:>9} {:>8}  {}\n",
            "", "name", "size", "preset", "images seen", "CPU-hours", "FID", "measured as"
        );
        for m in &self.models {
            let size = crate::train::checkpoint::read(&self.dir.join(&m.file), &candle_core::Device::Cpu)
                .map_or_else(|_| "?".into(), |c| format!("{}px", c.config.model.image_size));
            t.push_str(&format!(
                "{:2}{:24} {:>5} {:14} {:>12} {:>9.1} {:>8}  {}\n",
                if m.default { "*" } else { "" },
                m.name,
                size,
                m.preset,
                m.images_seen,
                m.cpu_hours,
                m.fid.map_or("-".into(), |f| format!("{f:.1}")),
                m.protocol.as_deref().unwrap_or("-"),
            ));
        }
        t.push_str("\n* the default (`facegan generate` with no --model)\n");
        for m in &self.models {
            t.push_str(&format!("{}: {}", m.name, m.about));
            if let Some(c) = &m.continuation {
                t.push_str(&format!(" (continue training with `facegan train --init-from models/{c}`)"));
            }
            t.push('\n');
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "[[model]]\nname = \"a\"\nfile = \"a.safetensors\"\nabout = \"x\"\npreset = \"dcgan-64\"\nimages_seen = 1\ncpu_hours = 0.5\n";

    fn zoo(text: &str) -> (tempfile::TempDir, Result<Zoo>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(ZOO_FILE), text).unwrap();
        let z = Zoo::load(d.path());
        (d, z)
    }

    #[test]
    fn bad_manifests_are_refused_naming_the_file() {
        let one = ENTRY.replace("about", "default = true\nabout");
        let (_d, z) = zoo(&one);
        let z = z.unwrap();
        assert_eq!(z.default_model().name, "a");
        let e = z.model_path(None).unwrap_err().to_string();
        assert!(e.contains("model a: its file") && e.contains("a.safetensors is missing"), "{e}");
        let e = z.get("b").unwrap_err().to_string();
        assert!(e.contains("no model b in") && e.contains("the zoo has: a"), "{e}");
        for (text, want) in [
            (ENTRY.to_string(), "0 models are marked default"),
            (format!("{one}{one}"), "the name a is used twice"),
            (format!("{one}{}", one.replace("\"a\"", "\"b\"")), "2 models are marked default"),
            (one.replace("preset", "colour = 1\npreset"), "not a model zoo manifest"),
        ] {
            let (_d, z) = zoo(&text);
            let e = format!("{:#}", z.unwrap_err());
            assert!(e.contains(want) && e.contains(ZOO_FILE), "{want}: {e}");
        }
    }
}
