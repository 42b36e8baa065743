//! Where results go: standard output (a closed pipe is not an error) or a
//! file that was checked to be writable before anything ran.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use crate::exit::{CliError, CliResult};

/// Writes `text` to standard output and flushes it. A reader that closed
/// the pipe (`| head`) yields [`CliError::BrokenPipe`], which exits 0 quietly.
///
/// # Errors
/// When standard output cannot be written.
pub fn stdout(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("writing to standard output", e))
}

/// A file opened for writing during validation, written at the end.
///
/// Opening it early proves it is writable before any work is done; it is
/// not truncated until [`OutFile::write`]. If it did not exist before and
/// is never written (the run failed), it is removed again, so a failed or
/// refused run leaves nothing behind.
#[derive(Debug)]
pub struct OutFile {
    path: PathBuf,
    file: Option<File>,
    created: bool,
}

impl OutFile {
    /// Opens `path` for writing without changing it. `flag` names the
    /// option in messages (`--out`).
    ///
    /// # Errors
    /// [`CliError::Usage`] when the path cannot be written.
    pub fn prepare(path: &Path, flag: &str) -> CliResult<Self> {
        let unwritable = |why: &dyn std::fmt::Display| {
            CliError::usage(format!("cannot write {flag} {}: {why}", path.display()))
        };
        if path.as_os_str().is_empty() {
            return Err(CliError::usage(format!("{flag} needs a file name")));
        }
        if path.is_dir() {
            return Err(unwritable(&"it is a directory"));
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| unwritable(&e))?;
        Ok(Self {
            path: path.to_owned(),
            file: Some(file),
            created,
        })
    }

    /// Replaces the file's contents with `bytes`.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when writing fails.
    pub fn write(mut self, bytes: &[u8]) -> CliResult<()> {
        let mut file = self.file.take().expect("an OutFile is written once");
        let doing = format!("writing {}", self.path.display());
        // Only a regular file is truncated (and synced): `/dev/stdout` or a
        // named pipe is written as it is.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let result = if regular {
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(bytes))
                .and_then(|()| file.sync_all())
        } else {
            file.write_all(bytes).and_then(|()| file.flush())
        };
        result.map_err(|e| CliError::io(doing, e))
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.file.take().is_some() && self.created {
            // Never written: leave no empty file behind.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("concur-out-{}-{name}", std::process::id()))
    }

    #[test]
    fn unwritten_new_file_is_removed() {
        let p = temp("unwritten");
        let f = OutFile::prepare(&p, "--out").unwrap();
        assert!(p.exists());
        drop(f);
        assert!(!p.exists());
    }

    #[test]
    fn written_file_replaces_contents() {
        let p = temp("written");
        std::fs::write(&p, "old contents that are longer").unwrap();
        OutFile::prepare(&p, "--out")
            .unwrap()
            .write(b"new")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn missing_directory_is_usage_error() {
        let p = temp("no-such-dir").join("x.json");
        let e = OutFile::prepare(&p, "--out").unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
        assert!(e.to_string().starts_with("cannot write --out"));
    }
}
