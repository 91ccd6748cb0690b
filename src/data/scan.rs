//! Finding the images under a folder.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// File extensions facegan reads, compared without regard to case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// All image files below `dir`, recursively, sorted by path so that every run sees
/// them in the same order.
pub fn scan_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        bail!("data folder {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        let entry = entry.with_context(|| format!("cannot read folder {}", dir.display()))?;
        if entry.file_type().is_file() && is_image_path(entry.path()) {
            files.push(entry.into_path());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "data folder {} holds no images (looked for {} files, recursively)",
            dir.display(),
            IMAGE_EXTENSIONS.join("/")
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_images_recursively_any_case_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["b.JPG", "a.png", "sub/c.jpeg", "notes.txt", "sub/d.gif"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = scan_images(dir.path()).unwrap();
        let names: Vec<_> =
            found.iter().map(|p| p.strip_prefix(dir.path()).unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, vec!["a.png", "b.JPG", "sub/c.jpeg"]);
    }

    #[test]
    fn empty_and_missing_folders_are_errors_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan_images(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no images") && err.contains(&dir.path().display().to_string()));
        let missing = dir.path().join("nope");
        let err = scan_images(&missing).unwrap_err().to_string();
        assert!(err.contains("does not exist") && err.contains("nope"));
    }
}
