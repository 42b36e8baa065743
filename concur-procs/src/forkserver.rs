//! The fork server: a small template process, forked by [`crate::init`]
//! while the program is still single-threaded, that forks workers on
//! request, so that starting a worker costs a `fork` of a small process
//! instead of an `exec` of the whole executable (loader, relocations,
//! constructors, runtime start-up).
//!
//! **Isolation.** The template is a copy of the program as it was when
//! `init` ran: one thread, before `main` did anything else. It keeps only
//! the standard streams and its end of one private socket pair, and runs
//! nothing but the loop below (read a request, fork, reply). A worker is a
//! copy of the template, so it inherits nothing of the parent beyond what
//! the template had at `init`: no thread, no lock held by another thread, no
//! descriptor, no state the program built after `init`. What the parent may
//! have changed since (its environment, its working directory) travels in
//! the request and is applied in the new worker, so it sees what an exec'd
//! worker would see. Not carried: resource limits, the signal mask and
//! dispositions and the standard streams' targets changed after `init`
//! (the worker has the template's).
//!
//! **Parentage.** The template forks each worker with
//! `clone(CLONE_PARENT)`, so the worker is the *parent's* child, not the
//! template's: the supervisor reaps it by pid, watches its pidfd, reads its
//! exit status and ends its process group exactly as for an exec'd worker,
//! and its parent-death signal follows the parent. A raw `clone` skips the
//! C library's fork handlers, which is sound only because the template has
//! one thread (no lock can be held by another), and it leaves the C
//! library's cached thread id the template's; glibc (2.34 and later)
//! asks the kernel for the calling thread's id where it matters
//! (`raise`, hence `abort`), and threads the worker starts get their own.
//!
//! **Faults.** Every exchange with the template has a deadline. A template
//! that is gone (killed, crashed) or stuck is killed, reaped and never
//! used again: the pool falls back to exec for that start and every later
//! one. A program that never calls `init`, or calls it once threads exist,
//! never has a template and always execs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::sys;

/// How long the parent waits for the template to take a request and
/// answer with a pid (it only forks: milliseconds). Past it the template
/// counts as stuck and exec is used instead.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// The largest request the template accepts (the environment dominates).
const MAX_REQUEST: usize = 16 << 20;

/// The descriptor number of the template's end of the socket pair (and, in
/// a freshly forked worker, until it closes it).
const TEMPLATE_FD: RawFd = 3;

/// What an exec'd worker gets from its parent, for a forked one.
pub(crate) struct Request {
    /// The worker's token (over the private socket: never in an environment).
    pub(crate) token: String,
    /// The bootstrap server's name.
    pub(crate) server: String,
    /// The parent's pid.
    pub(crate) parent: u32,
    /// The parent's environment now.
    pub(crate) env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The parent's working directory now (none when it has none).
    pub(crate) cwd: Option<Vec<u8>>,
}

impl Request {
    /// The request for a worker of this process, as it is now.
    pub(crate) fn here(token: &str, server: &str) -> Request {
        use std::os::unix::ffi::OsStringExt;
        Request {
            token: token.to_owned(),
            server: server.to_owned(),
            parent: std::process::id(),
            env: std::env::vars_os()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.into_os_string().into_vec()),
        }
    }

    /// Length-prefixed fields: token, server, parent, cwd (flag + bytes),
    /// then the environment's pairs; the whole prefixed by its length.
    fn encode(&self) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        let mut out = vec![0; 4];
        put(&mut out, self.token.as_bytes());
        put(&mut out, self.server.as_bytes());
        out.extend_from_slice(&self.parent.to_le_bytes());
        match &self.cwd {
            Some(cwd) => {
                out.push(1);
                put(&mut out, cwd);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.env.len() as u32).to_le_bytes());
        for (k, v) in &self.env {
            put(&mut out, k);
            put(&mut out, v);
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    /// The inverse of [`Request::encode`] (without the length prefix).
    fn decode(mut b: &[u8]) -> Option<Request> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(head)
        }
        fn u32_of(b: &mut &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?))
        }
        fn field(b: &mut &[u8]) -> Option<Vec<u8>> {
            let n = u32_of(b)? as usize;
            Some(take(b, n)?.to_vec())
        }
        let token = String::from_utf8(field(&mut b)?).ok()?;
        let server = String::from_utf8(field(&mut b)?).ok()?;
        let parent = u32_of(&mut b)?;
        let cwd = match take(&mut b, 1)?[0] {
            0 => None,
            _ => Some(field(&mut b)?),
        };
        let n = u32_of(&mut b)?;
        let mut env = Vec::new();
        for _ in 0..n {
            env.push((field(&mut b)?, field(&mut b)?));
        }
        Some(Request {
            token,
            server,
            parent,
            env,
            cwd,
        })
    }
}

/// The parent's side: the template's pid and the parent's end of the pair.
struct Client {
    pid: u32,
    sock: OwnedFd,
}

/// The template, while it is usable. Locked for a whole exchange, so
/// requests from several pools never interleave.
static SERVER: Mutex<Option<Client>> = Mutex::new(None);
static STARTED: Once = Once::new();

fn server() -> std::sync::MutexGuard<'static, Option<Client>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the template, once per process, if this process has a single
/// thread now (otherwise a fork could copy a lock another thread holds).
/// Does nothing on failure: pools then exec their workers.
pub(crate) fn start() {
    STARTED.call_once(|| {
        if !single_threaded() {
            return;
        }
        if let Some(client) = spawn_template() {
            *server() = Some(client);
        }
    });
}

/// The template's pid, while it is in use.
pub(crate) fn pid() -> Option<u32> {
    server().as_ref().map(|c| c.pid)
}

/// True when this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

fn spawn_template() -> Option<Client> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: socketpair succeeded: both are fresh descriptors we own.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Buffered output would otherwise be written again by every worker.
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let parent = std::process::id();
    // SAFETY: this process has one thread (checked by the caller), so the
    // child is a full copy in which every lock is free; it never returns
    // from `template`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        drop(ours);
        template(theirs, parent);
    }
    drop(theirs);
    Some(Client {
        pid: pid as u32,
        sock: ours,
    })
}

/// Asks the template for a worker; returns its pid, or `None` when there
/// is no usable template (then exec it is). A template that fails here is
/// killed, reaped and not used again.
///
/// If the template dies between forking a worker and answering, that
/// worker is never told apart from a stranger: it finds no parent on its
/// bootstrap server, exits, and stays a zombie until the parent exits.
pub(crate) fn fork_worker(req: &Request) -> Option<u32> {
    let mut guard = server();
    let client = guard.as_ref()?;
    let deadline = Instant::now() + REPLY_DEADLINE;
    let bytes = req.encode();
    let answer = if bytes.len() - 4 > MAX_REQUEST {
        // Too large for the template: exec this one, keep the template.
        return None;
    } else {
        exchange(client.sock.as_raw_fd(), &bytes, deadline)
    };
    match answer {
        Ok(pid) if pid > 0 => {
            let pid = pid as u32;
            // The worker puts itself in a group of its own at once; doing it
            // here too (it is our child and has not exec'd) closes the window
            // in which the supervisor could see it in ours.
            // SAFETY: setpgid takes integers.
            unsafe { libc::setpgid(pid as libc::pid_t, pid as libc::pid_t) };
            Some(pid)
        }
        // The template could not fork (no memory, process limit): exec
        // will most likely fail the same way and report it.
        Ok(_) => None,
        Err(_) => {
            let client = guard.take()?;
            sys::kill(client.pid);
            let _ = sys::wait(client.pid);
            None
        }
    }
}

/// One request and its answer (a pid, or minus an errno), within `deadline`.
fn exchange(fd: RawFd, bytes: &[u8], deadline: Instant) -> io::Result<i32> {
    let mut sent = 0;
    while sent < bytes.len() {
        wait_for(fd, libc::POLLOUT, deadline)?;
        // SAFETY: a valid buffer range; MSG_NOSIGNAL: a gone template is
        // an EPIPE, never a SIGPIPE.
        let n = unsafe {
            libc::send(
                fd,
                bytes[sent..].as_ptr().cast(),
                bytes.len() - sent,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    let mut reply = [0u8; 4];
    let mut got = 0;
    while got < reply.len() {
        wait_for(fd, libc::POLLIN, deadline)?;
        // SAFETY: a valid buffer range.
        let n = unsafe {
            libc::recv(
                fd,
                reply[got..].as_mut_ptr().cast(),
                reply.len() - got,
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            n => got += n as usize,
        }
    }
    Ok(i32::from_le_bytes(reply))
}

/// Waits until `fd` is ready for `events`, or fails at `deadline`.
fn wait_for(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the call's duration.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            0 => return Err(io::ErrorKind::TimedOut.into()),
            r if r < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // Readiness, a hang-up or an error: the next call says which.
            _ => return Ok(()),
        }
    }
}

/// The template's whole life (in the child of `init`'s fork): one thread,
/// the standard streams and `sock`; reads requests and forks workers until
/// the parent goes.
fn template(sock: OwnedFd, parent: u32) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take and return integers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // The parent may have died before the request took effect.
        if libc::getppid() as u32 != parent {
            sys::exit_now(0);
        }
    }
    let fd = keep_only(sock);
    loop {
        let Some(req) = read_request(fd) else {
            // The parent closed its end (or sent garbage): nothing to serve.
            sys::exit_now(0)
        };
        // SAFETY: a raw clone with no stack argument is a fork; sound
        // without the C library's fork handlers because this process has
        // one thread (see the module doc). CLONE_PARENT makes the worker
        // the parent's child.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid == 0 {
            become_worker(req, fd);
        }
        let reply = if pid < 0 {
            -io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        } else {
            pid as i32
        };
        drop(req);
        if !write_all(fd, &reply.to_le_bytes()) {
            sys::exit_now(0);
        }
    }
}

/// Makes `sock` descriptor [`TEMPLATE_FD`] and closes every other one
/// above the standard streams; returns its number.
fn keep_only(sock: OwnedFd) -> RawFd {
    use std::os::fd::IntoRawFd;
    let raw = sock.into_raw_fd();
    if raw != TEMPLATE_FD {
        // SAFETY: dup2 onto a number this process is about to close anyway.
        if unsafe { libc::dup2(raw, TEMPLATE_FD) } != TEMPLATE_FD {
            sys::exit_now(0);
        }
        // SAFETY: `raw` is ours and no longer used.
        unsafe { libc::close(raw) };
    }
    // dup2 cleared close-on-exec; a worker closes it first thing anyway.
    sys::close_from(TEMPLATE_FD + 1);
    TEMPLATE_FD
}

/// Reads one request; `None` at end of stream or on a malformed one.
fn read_request(fd: RawFd) -> Option<Request> {
    let mut len = [0u8; 4];
    if !read_exact(fd, &mut len) {
        return None;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REQUEST {
        return None;
    }
    let mut buf = vec![0u8; len];
    if !read_exact(fd, &mut buf) {
        return None;
    }
    Request::decode(&buf)
}

fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: a valid buffer range.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return false;
        }
        buf = &mut buf[n as usize..];
    }
    true
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: a valid buffer range; SIGPIPE cannot kill the template.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// In a worker just forked by the template: sets up what exec and
/// `spawn::launch` give an exec'd worker (own process group, parent-death
/// signal, standard input from `/dev/null`, only the standard streams, the
/// parent's environment and working directory), then enters worker mode.
fn become_worker(req: Request, template_fd: RawFd) -> ! {
    // SAFETY: plain system calls on integers and a valid C string.
    unsafe {
        libc::close(template_fd);
        libc::setpgid(0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    sys::die_with_parent(req.parent);
    // One thread: changing the environment races with nobody.
    use std::os::unix::ffi::OsStrExt;
    let old: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in old {
        std::env::remove_var(k);
    }
    for (k, v) in &req.env {
        let (k, v) = (
            std::ffi::OsStr::from_bytes(k),
            std::ffi::OsStr::from_bytes(v),
        );
        if !k.is_empty() && !k.as_bytes().contains(&b'=') && !k.as_bytes().contains(&0) {
            if !v.as_bytes().contains(&0) {
                std::env::set_var(k, v);
            }
        }
    }
    if let Some(cwd) = &req.cwd {
        let _ = std::env::set_current_dir(std::ffi::OsStr::from_bytes(cwd));
    }
    crate::worker::main_forked(crate::worker::Bootstrap {
        server: req.server,
        token: req.token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_its_encoding() {
        let r = Request {
            token: "tok".into(),
            server: "/tmp/x/socket".into(),
            parent: 4242,
            env: vec![(b"A".to_vec(), b"1".to_vec()), (b"EMPTY".to_vec(), vec![])],
            cwd: Some(b"/tmp".to_vec()),
        };
        let bytes = r.encode();
        assert_eq!(
            u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        let d = Request::decode(&bytes[4..]).unwrap();
        assert_eq!(
            (d.token, d.server, d.parent, d.env, d.cwd),
            (r.token, r.server, r.parent, r.env, r.cwd)
        );
        let none = Request {
            cwd: None,
            ..d_like()
        };
        let d = Request::decode(&none.encode()[4..]).unwrap();
        assert!(d.cwd.is_none());
    }

    #[test]
    fn a_truncated_request_is_refused() {
        let bytes = d_like().encode();
        for cut in 4..bytes.len() {
            assert!(Request::decode(&bytes[4..cut]).is_none(), "cut at {cut}");
        }
    }

    fn d_like() -> Request {
        Request {
            token: "t".into(),
            server: "s".into(),
            parent: 1,
            env: vec![(b"K".to_vec(), b"V".to_vec())],
            cwd: Some(b"/".to_vec()),
        }
    }
}
