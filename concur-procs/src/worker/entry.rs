//! Entering worker mode before `main`.
//!
//! A worker is this executable started again with [`WORKER_ARG`]. It must
//! not run the program's `main`: that would repeat whatever the program
//! does before it builds a pool, once per worker. So worker mode starts
//! from a constructor, which the loader runs before `main`.
//!
//! **Where in the order.** An executable's `.init_array` holds the
//! constructors with a priority (sections `.init_array.NNNNN`) sorted by
//! number, then those without one (GNU ld and lld, rustc's default linker
//! on x86_64 Linux, sort alike). Rust's std captures `argc`/`argv` at
//! priority 99 (glibc passes them to constructors), so at priority 200 this
//! one comes after it and before every constructor without a priority (the
//! `ctor` crate's, `inventory`'s, C++ globals). Task registrations need no
//! constructor (`concur_core::registry` is collected by the linker), so
//! every task is known here already.
//!
//! **What it does in a worker.** First it runs the constructors that come
//! after it, as the loader would have, so that libraries which set things
//! up from constructors behave in a worker as in the parent; then it
//! enters worker mode, which ends the process and never returns: the
//! loader never reaches `main`. What Rust's runtime does for `main` and a
//! worker relies on is done by [`prepare`] instead (the standard streams,
//! SIGPIPE). Not done: std's stack-overflow message (a task that
//! overflows its stack ends its worker with SIGSEGV rather than SIGABRT)
//! and the main thread's name (`None` in a worker's main thread).
//!
//! **Being linked at all.** The linker copies an object file out of a
//! library only when something it needs is in it; the pool builder
//! refers to the constructor ([`keep_linked`]), so every program that can
//! start workers contains it.
//!
//! Other C libraries than glibc do not pass the arguments to
//! constructors; there the constructor is left out and `crate::init()` at
//! the top of `main` enters worker mode instead.

use std::ffi::CStr;

use crate::spawn::{ENV_PARENT, ENV_SERVER, WORKER_ARG};
use ipc_channel::ipc::IpcSender;

use crate::sys;
use crate::wire::Tx;

/// The entry in `.init_array.00200` (see the module doc for the number).
#[cfg(target_env = "gnu")]
#[used]
#[link_section = ".init_array.00200"]
static ENTER_BEFORE_MAIN: sys::Constructor = enter_before_main;

#[cfg(target_env = "gnu")]
extern "C" fn enter_before_main(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    // SAFETY: glibc passes the process's own argc and argv.
    if !unsafe { started_as_worker(argc, argv) } {
        return;
    }
    // SAFETY: called from the constructor itself with the loader's
    // arguments; `main` below never returns to the loader.
    unsafe { sys::run_constructors_after(enter_before_main, argc, argv, envp) };
    super::main()
}

/// Makes the linker keep the constructor: called by the pool builder.
pub(crate) fn keep_linked() {
    #[cfg(target_env = "gnu")]
    std::hint::black_box(&ENTER_BEFORE_MAIN);
}

/// True when the parent started this process as a worker: its first
/// argument is [`WORKER_ARG`] and the bootstrap server is in its
/// environment. Both, so that neither a stray variable nor a stray
/// argument turns a program into a worker.
///
/// # Safety
/// `argv` holds `argc` valid C strings (or is null).
unsafe fn started_as_worker(argc: libc::c_int, argv: *const *const libc::c_char) -> bool {
    if argc < 2 || argv.is_null() {
        return false;
    }
    // SAFETY: argv has at least two entries (argc >= 2).
    let first = unsafe { *argv.add(1) };
    if first.is_null() {
        return false;
    }
    // SAFETY: a non-null argv entry is a NUL-terminated string.
    let first = unsafe { CStr::from_ptr(first) };
    first.to_bytes() == WORKER_ARG.as_bytes() && std::env::var_os(ENV_SERVER).is_some()
}

/// What Rust's runtime does before `main` and a worker relies on; harmless
/// when it already ran (worker mode entered from `crate::init()`).
pub(super) fn prepare() {
    sys::ensure_standard_streams();
    sys::ignore_sigpipe();
    sys::raise_fd_limit();
}

/// How a worker reaches its parent, and the token that proves it is the
/// worker the parent started.
pub(crate) enum Bootstrap {
    /// An exec'd worker connects to the bootstrap server of this name.
    Exec { server: String, token: String },
    /// A forked worker was handed its channel up to the parent.
    Forked { up: Tx, token: String },
}

impl Bootstrap {
    /// In an exec'd worker: the server and parent pid from the
    /// environment (then removed: programs its tasks start are not
    /// workers), the token from the pipe named by the argument after
    /// [`WORKER_ARG`]. Asks for the parent-death signal first.
    pub(crate) fn from_exec() -> Result<Bootstrap, String> {
        let server = std::env::var(ENV_SERVER).map_err(|e| e.to_string())?;
        let parent: u32 = std::env::var(ENV_PARENT)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or("no parent pid")?;
        sys::die_with_parent(parent);
        // Read (and close) the token pipe before anything else opens a descriptor.
        let token = read_token()?;
        for var in [ENV_SERVER, ENV_PARENT] {
            std::env::remove_var(var);
        }
        Ok(Bootstrap::Exec { server, token })
    }

    /// The channel up to the parent, and the token for the hello.
    pub(crate) fn connect(self) -> Result<(Tx, String), String> {
        match self {
            Bootstrap::Exec { server, token } => {
                let up = IpcSender::connect(server)
                    .map_err(|e| format!("cannot connect to the parent: {e}"))?;
                Ok((up, token))
            }
            Bootstrap::Forked { up, token } => Ok((up, token)),
        }
    }
}

/// The token the parent left in the pipe named by the argument after
/// [`WORKER_ARG`]; the pipe is closed once read.
fn read_token() -> Result<String, String> {
    let fd = std::env::args_os()
        .skip_while(|a| a != WORKER_ARG)
        .nth(1)
        .and_then(|a| a.to_str()?.parse().ok())
        .ok_or("no bootstrap descriptor argument")?;
    let secret = sys::read_secret(fd).map_err(|e| format!("cannot read the token: {e}"))?;
    String::from_utf8(secret).map_err(|_| "the token is not text".to_owned())
}
