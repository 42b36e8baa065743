//! Workers inherit only their own channel and the standard streams (issue
//! 8.6): no descriptor of the parent's (another worker's socket, a shared
//! memory region, a file the program opened without close-on-exec, the
//! token pipe) is open in a worker, first started or respawned.

mod common;

use std::time::Duration;

use common::{alive, wait_until, Blob, Echo, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool};

/// Worker `pid`'s descriptors above the standard streams, with what each
/// points at (a descriptor closed while listing is skipped).
fn extra_fds(pid: u32) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        if let Ok(target) = std::fs::read_link(entry.path()) {
            v.push((fd, target.to_string_lossy().into_owned()));
        }
    }
    v
}

/// A worker holds its two channel sockets (to and from the parent) and
/// nothing else above the standard streams, except shared memory it made
/// itself (a large result of its own on its way out: the region's name
/// carries the pid of the process that created it).
fn assert_only_its_channel(pid: u32) {
    let own_region = format!(".{pid}.");
    let fds: Vec<_> = extra_fds(pid)
        .into_iter()
        .filter(|(_, t)| !(t.starts_with("/memfd:") && t.contains(&own_region)))
        .collect();
    let sockets = fds.iter().filter(|(_, t)| t.starts_with("socket:")).count();
    assert!(
        sockets == fds.len() && sockets <= 2,
        "worker {pid} holds more than its channel: {fds:?}"
    );
}

#[test]
fn workers_hold_only_stdio_and_their_own_channel() {
    // A descriptor opened without close-on-exec, as C libraries and older
    // code still do: workers must not inherit it.
    // SAFETY: open on a valid C string; the descriptor is closed below.
    let careless = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(careless >= 0);

    let pool = ProcessPool::builder().workers(2).build().unwrap();
    // Payloads both ways through shared memory, results kept (their regions
    // stay open in the parent), so there is something to leak.
    let mut kept = Vec::new();
    for _ in 0..4 {
        let h = pool
            .submit(Echo {
                input: Blob(vec![1; 1 << 20]),
                out_len: 1 << 20,
                patterned: false,
            })
            .unwrap();
        kept.push(h.join_timeout(DEADLINE).unwrap().unwrap());
    }
    let pids: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
    assert_eq!(pids.len(), 2);
    for &pid in &pids {
        assert_only_its_channel(pid);
    }

    // A worker started while the parent holds another worker's sockets and
    // shared memory: kill one and check its replacement.
    // SAFETY: kill takes plain integers; `pids[0]` is a live child of this process.
    unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) };
    let mut respawned = None;
    wait_until("a replacement worker", DEADLINE, || {
        respawned = pool
            .worker_pids()
            .into_iter()
            .flatten()
            .find(|p| !pids.contains(p) && alive(*p));
        respawned.is_some()
    });
    let respawned = respawned.unwrap();
    // It may still be starting; its descriptors are final once it answers.
    let h = pool
        .submit(Echo {
            input: Blob(vec![2; 1 << 20]),
            out_len: 10,
            patterned: false,
        })
        .unwrap();
    h.join_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_only_its_channel(respawned);
    assert_only_its_channel(pids[1]);

    drop(kept);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(careless) };
}
