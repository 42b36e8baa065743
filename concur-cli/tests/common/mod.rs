//! Waiting for a child process of a test: with its output drained and a
//! deadline that only bounds a hang.

#![allow(dead_code)] // each test target uses part of it

use std::io::Read;
use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits for `child` (stdout and stderr piped, or stdout already closed)
/// until `deadline`; kills it past that and fails the test.
pub fn finish(mut child: Child, deadline: Duration, what: &str) -> Output {
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(i);
            buf
        }));
    }
    let end = Instant::now() + deadline;
    for _ in 0..2 {
        if rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {deadline:?}; killed");
        }
    }
    let mut bufs = readers
        .into_iter()
        .map(|r| r.join().expect("reader thread"));
    let stdout = bufs.next().unwrap_or_default();
    let stderr = bufs.next().unwrap_or_default();
    // Both pipes are closed: the process has exited or is exiting now; a
    // process that closed them and lives on is still held to the deadline.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for concur") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} closed its output but did not exit within {deadline:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout,
        stderr,
    }
}
