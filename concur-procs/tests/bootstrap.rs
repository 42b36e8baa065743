//! Starting workers safely (issue 8.7, 8.8, 8.9 and 8.4's descriptor
//! limit): the bootstrap directory is 0700 whatever the umask, the token
//! never shows in a worker's `/proc/<pid>/environ`, a worker of another
//! build is refused, a binary replaced on disk is never run as a worker,
//! and `init()` raises the descriptor limit.
//!
//! Tests that change process-wide state (umask, limits, the expected build)
//! do it in a child process: this binary re-run for one ignored role test.

mod common;

use std::error::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{assert_role_passed, in_role, Blob, Echo, DEADLINE};
use concur_procs::{Configure, ErrorKind, Executor, ProcessPool};

const ROLE: &str = "CONCUR_PROCS_TEST_BOOTSTRAP_ROLE";

/// [`common::run_role`] with this file's role variable.
fn run_role(
    exe: &Path,
    role: &str,
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> (std::process::ExitStatus, String) {
    common::run_role(exe, ROLE, role, setup)
}

fn me() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

/// The token was readable in `/proc/<pid>/environ` for the worker's whole
/// life (`remove_var` does not change that view); now it comes through a
/// pipe the worker reads and closes, and is in neither its environment nor
/// its command line.
#[test]
fn the_token_is_not_in_a_workers_environment_or_command_line() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let pid = pool.worker_pids()[0].unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    for (what, bytes) in [("environ", environ), ("cmdline", cmdline)] {
        for entry in bytes.split(|&b| b == 0) {
            let entry = String::from_utf8_lossy(entry);
            assert!(!entry.contains("TOKEN"), "{what}: {entry}");
            // The token is 32 hex digits; nothing that long and that shape may show.
            let value = entry.rsplit('=').next().unwrap_or_default();
            let tokenish = value.len() >= 32 && value.chars().all(|c| c.is_ascii_hexdigit());
            assert!(!tokenish, "{what} holds a token-like value: {entry}");
        }
    }
    // The worker works.
    let h = pool
        .submit(Echo {
            input: Blob(vec![1; 3]),
            out_len: 1,
            patterned: false,
        })
        .unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap().0, 3);
}

#[test]
#[ignore = "a role played by a child process of the_bootstrap_directory_is_private_under_umask_000"]
fn role_umask() {
    in_role(ROLE, "role_umask");
    // SAFETY: umask takes a mode and cannot fail.
    assert_eq!(unsafe { libc::umask(0) }, 0, "the parent set umask 000");
    // The bootstrap server is ipc-channel's one-shot server.
    let (_server, name) = ipc_channel::ipc::IpcOneShotServer::<u8>::new().unwrap();
    let dir = Path::new(&name).parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "bootstrap directory {dir:?} has mode {mode:o}");
    // And a pool starts under this umask.
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert!(pool.worker_pids()[0].is_some());
    println!("PRIVATE-DIR");
}

/// Under umask 000 the bootstrap directory was world-writable and another
/// user could connect to the socket in it; now it is 0700.
#[test]
fn the_bootstrap_directory_is_private_under_umask_000() {
    let out = run_role(&me(), "role_umask", || {
        // SAFETY: umask is async-signal-safe.
        unsafe { libc::umask(0) };
        Ok(())
    });
    assert_role_passed(out, "PRIVATE-DIR");
}

#[test]
#[ignore = "a role played by a child process of a_worker_of_another_build_is_refused"]
fn role_other_build() {
    in_role(ROLE, "role_other_build");
    concur_procs::__private::pretend_other_build(b"\x01\x00\x00\x00gnu:not-this-build");
    let err = ProcessPool::builder()
        .workers(1)
        .start_timeout(Duration::from_secs(30))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Spawn, "{err}");
    let cause = err.source().expect("a cause").to_string();
    assert!(cause.contains("different build"), "{cause}");
    println!("OTHER-BUILD-REFUSED");
}

/// A worker whose build differs from the parent's is refused with a clear
/// `Spawn` error before any of its frames is decoded (issue 8.9). The
/// parent here pretends to be another build (a hook only tests use).
#[test]
fn a_worker_of_another_build_is_refused() {
    assert_role_passed(
        run_role(&me(), "role_other_build", || Ok(())),
        "OTHER-BUILD-REFUSED",
    );
}

#[test]
#[ignore = "a role played by a child process of a_binary_replaced_on_disk_is_never_the_worker"]
fn role_replaced() {
    in_role(ROLE, "role_replaced");
    // Replace this very executable on disk by something that is not it.
    let exe = me();
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, "#!/bin/sh\necho impostor\nexit 3\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pool = ProcessPool::builder()
        .workers(1)
        .start_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let h = pool
        .submit(Echo {
            input: Blob(vec![2; 4]),
            out_len: 1,
            patterned: false,
        })
        .unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap().0, 8);
    println!("RAN-THE-ORIGINAL");
}

/// Workers were started from the executable's path, so a binary replaced
/// after the parent started (an upgrade, a rebuild) became the worker; now
/// they are exec'd through `/proc/self/exe`, the parent's own image.
#[test]
fn a_binary_replaced_on_disk_is_never_the_worker() {
    let dir = std::env::temp_dir().join(format!("concur-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("copy-of-test-binary");
    std::fs::copy(me(), &copy).unwrap();
    let out = run_role(&copy, "role_replaced", || Ok(()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_role_passed(out, "RAN-THE-ORIGINAL");
}

fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

#[test]
#[ignore = "a role played by a child process of init_raises_the_descriptor_limit_to_the_hard_limit"]
fn role_nofile() {
    in_role(ROLE, "role_nofile");
    let (soft, hard) = nofile();
    assert!(
        soft < hard,
        "the parent lowered the soft limit ({soft} of {hard})"
    );
    concur_procs::init();
    assert_eq!(nofile(), (hard, hard));
    println!("RAISED");
}

/// `init()` raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's
/// runtime does (issue 8.4): 1,500 unjoined results exhausted a soft limit
/// of 1024 while the hard limit allowed far more.
#[test]
fn init_raises_the_descriptor_limit_to_the_hard_limit() {
    let (_, hard) = nofile();
    if hard <= 64 {
        eprintln!("skipped: the hard limit ({hard}) leaves nothing to raise");
        return;
    }
    let out = run_role(&me(), "role_nofile", || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit are async-signal-safe system calls on a valid struct.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = 64;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        Ok(())
    });
    assert_role_passed(out, "RAISED");
}
