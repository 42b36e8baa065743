//! Where results go: standard output (a closed pipe is not an error) or a
//! file that was checked to be writable before anything ran.
//!
//! Standard output gets the report piece by piece as it is measured; a file
//! gets it whole at the end, so that a run that fails leaves an existing
//! file as it was.

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

/// Whether standard output is a pipe or socket whose reader has gone (as
/// when `| head` has read what it wanted). A long run checks this between
/// samples so that it ends promptly instead of at its next write.
pub fn stdout_closed() -> bool {
    #[cfg(unix)]
    {
        let mut fd = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: 0,
            revents: 0,
        };
        // SAFETY: poll reads and writes only the one pollfd passed, which
        // lives for the duration of the call; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Where a report goes as it is rendered.
#[derive(Debug)]
pub enum Sink {
    /// Standard output, written piece by piece.
    Stdout,
    /// A file, written whole by [`Sink::finish`].
    File {
        /// The file.
        file: OutFile,
        /// What it will hold.
        text: String,
    },
}

impl Sink {
    /// Standard output, or `file` when given.
    pub fn new(file: Option<OutFile>) -> Self {
        match file {
            None => Sink::Stdout,
            Some(file) => Sink::File {
                file,
                text: String::new(),
            },
        }
    }

    /// Whether this is standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(self, Sink::Stdout)
    }

    /// Writes `text` to standard output now, or keeps it for the file.
    ///
    /// # Errors
    /// When standard output cannot be written (a closed pipe gives
    /// [`CliError::BrokenPipe`]).
    pub fn write(&mut self, text: &str) -> CliResult<()> {
        match self {
            Sink::Stdout if text.is_empty() => Ok(()),
            Sink::Stdout => stdout(text),
            Sink::File { text: kept, .. } => {
                kept.push_str(text);
                Ok(())
            }
        }
    }

    /// Writes the file, if this is one; its path.
    ///
    /// # Errors
    /// [`CliError::Runtime`] when the file cannot be written.
    pub fn finish(self) -> CliResult<Option<PathBuf>> {
        match self {
            Sink::Stdout => Ok(None),
            Sink::File { file, text } => {
                let path = file.path().to_owned();
                file.write(text.as_bytes())?;
                Ok(Some(path))
            }
        }
    }
}

/// A file opened for writing during validation, written at the end.
///
/// Opening it early, and writing zero bytes to it, proves it is writable
/// before any work is done (`/dev/full` opens but fails every write); it is
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
    /// Opens `path` for writing without changing it, and tries an empty
    /// write. `flag` names the option in messages (`--out`).
    ///
    /// # Errors
    /// [`CliError::Usage`] when the path cannot be opened for writing;
    /// [`CliError::Runtime`] when it opens but refuses a write.
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
        let out = Self {
            path: path.to_owned(),
            file: Some(file),
            created,
        };
        out.probe()
            .map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
        Ok(out)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes zero bytes: it changes nothing, and a device that fails
    /// every write (`/dev/full`) fails this one too.
    fn probe(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let Some(file) = &self.file else {
                return Ok(());
            };
            // `Write::write` with an empty buffer is not promised to reach
            // the system, so the call is made directly.
            // SAFETY: a zero-length write reads no memory; the descriptor is
            // open for as long as `file` lives.
            let n = unsafe { libc::write(file.as_raw_fd(), [0u8; 1].as_ptr().cast(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
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
    fn a_device_that_refuses_writes_fails_at_once() {
        let e = OutFile::prepare(Path::new("/dev/full"), "--out").unwrap_err();
        assert!(matches!(e, CliError::Runtime { .. }), "{e}");
        assert!(e.to_string().starts_with("writing /dev/full: "), "{e}");
    }

    #[test]
    fn missing_directory_is_usage_error() {
        let p = temp("no-such-dir").join("x.json");
        let e = OutFile::prepare(&p, "--out").unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
        assert!(e.to_string().starts_with("cannot write --out"));
    }
}
