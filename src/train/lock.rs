//! One trainer per run folder: `train` holds `RUN/.lock` (the holder's process id) while it
//! runs. A second trainer on the same folder is refused with the holder's pid; a lock left by
//! a process that no longer exists (killed, crashed) is taken over with a warning.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Name of the lock file in a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A held lock, released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// Whether process `pid` exists (on Unix; elsewhere every holder is assumed alive).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

impl RunLock {
    /// Takes the lock of run folder `run` (which must exist).
    pub fn acquire(run: &Path) -> Result<Self> {
        let path = run.join(LOCK_FILE);
        let me = std::process::id();
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{me}").with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if pid != me && alive(pid) => bail!(
                            "{} is in use by another trainer (process {pid}, lock file {}); wait for it to finish or stop it. If no such trainer runs, delete the lock file",
                            run.display(),
                            path.display()
                        ),
                        Ok(pid) => eprintln!(
                            "warning: {} was left by process {pid}, which is no longer running; taking it over",
                            path.display()
                        ),
                        Err(_) => eprintln!("warning: {} is unreadable; taking it over", path.display()),
                    }
                    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        bail!("{}: another trainer took the lock at the same moment", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_refused_stale_taken_over_released() {
        let t = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(t.path()).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join(LOCK_FILE)).unwrap().trim(), std::process::id().to_string());
        drop(lock);
        assert!(!t.path().join(LOCK_FILE).exists(), "released on drop");
        // A live holder: this test's parent process (pid 1 would need permissions we may lack).
        let parent = std::os::unix::process::parent_id();
        std::fs::write(t.path().join(LOCK_FILE), format!("{parent}\n")).unwrap();
        let e = RunLock::acquire(t.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("process {parent}")) && e.contains("in use"), "{e}");
        // A dead holder: a child that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(t.path().join(LOCK_FILE), format!("{dead}\n")).unwrap();
        let lock = RunLock::acquire(t.path()).unwrap();
        drop(lock);
    }
}
