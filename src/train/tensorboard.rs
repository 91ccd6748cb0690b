//! TensorBoard event files (runs/NAME/tb/events.out.tfevents.*), written directly in the
//! documented record format: each record is its length (u64, little-endian), the masked
//! CRC-32C of those 8 bytes, the bytes of a protobuf `Event`, and their masked CRC-32C.
//! The few protobuf messages needed (Event, Summary, Summary.Value, Summary.Image,
//! SessionLog) are encoded by hand, so no crate is needed.
//!
//! A (re)started run writes a new file that begins with a `SessionLog START` at its first
//! step, which TensorBoard takes as the cue to drop the events of an earlier file beyond
//! that step (the ones a resume from an older checkpoint replaces).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder of a run's event files.
pub const TB_DIR: &str = "tb";

/// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// TFRecord's masked CRC.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// The minimal protobuf encoder.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }

    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }

    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// A value of a summary: a scalar, or a PNG image.
pub enum Value<'a> {
    Scalar(f32),
    Png { bytes: &'a [u8], width: u32, height: u32 },
}

fn event(step: u64, fill: impl FnOnce(&mut Proto)) -> Vec<u8> {
    let mut e = Proto::default();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    e.double(1, wall);
    e.uint(2, step);
    fill(&mut e);
    e.0
}

/// An `Event` with a `Summary` (field 5) of tagged values.
fn summary_event(step: u64, values: &[(&str, Value)]) -> Vec<u8> {
    event(step, |e| {
        let mut summary = Proto::default();
        for (tag, value) in values {
            let mut v = Proto::default();
            v.bytes(1, tag.as_bytes());
            match value {
                Value::Scalar(x) => v.float(2, *x),
                Value::Png { bytes, width, height } => {
                    let mut img = Proto::default();
                    img.uint(1, *height as u64);
                    img.uint(2, *width as u64);
                    img.uint(3, 3); // RGB
                    img.bytes(4, bytes);
                    v.bytes(4, &img.0);
                }
            }
            summary.bytes(1, &v.0);
        }
        e.bytes(5, &summary.0);
    })
}

/// Appends event files for one run.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), starting with the file version and a
    /// `SessionLog START` at `step`.
    pub fn create(dir: &Path, step: u64) -> Result<Self> {
        crate::fsutil::ensure_dir(dir)?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let path = dir.join(format!("events.out.tfevents.{secs}.facegan.{}", std::process::id()));
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self { path, out: BufWriter::new(file) };
        w.record(&event(step, |e| e.bytes(3, b"brain.Event:2")))?;
        w.record(&event(step, |e| {
            let mut log = Proto::default();
            log.uint(1, 1); // SessionLog.START
            e.bytes(6, &log.0);
        }))?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out.write_all(&rec).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Scalars under their tags at `step` (non-finite ones are written too: TensorBoard
    /// shows them as such).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let v: Vec<(&str, Value)> = values.iter().map(|(t, x)| (*t, Value::Scalar(*x as f32))).collect();
        self.record(&summary_event(step, &v))
    }

    /// An RGB image under `tag`, PNG-encoded.
    pub fn image(&mut self, step: u64, tag: &str, img: &image::RgbImage) -> Result<()> {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let value = Value::Png { bytes: &png, width: img.width(), height: img.height() };
        self.record(&summary_event(step, &[(tag, value)]))
    }

    /// Makes what was written visible to a reader (TensorBoard reads while training runs).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_record_framing() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let t = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(t.path(), 5).unwrap();
        w.scalars(7, &[("loss/d", 0.5), ("loss/g", 2.0)]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        // Walk the records: every length and payload CRC checks out, three records.
        let (mut at, mut records) = (0, Vec::new());
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let lcrc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(lcrc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc(data));
            records.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(records.len(), 3);
        assert!(records[0].windows(13).any(|w| w == b"brain.Event:2"));
        // The scalar event: step 7 (field 2 varint), the tag, and 0.5f32 after a field-2 fixed32 key.
        let s = &records[2];
        assert!(s.windows(2).any(|w| w == [0x10, 7]));
        assert!(s.windows(6).any(|w| w == b"loss/d"));
        let half = [0x15u8, 0, 0, 0, 0x3F];
        assert!(s.windows(5).any(|w| w == half));
    }
}
