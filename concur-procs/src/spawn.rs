//! Starting a worker process: fork it from the fork server (see
//! `forkserver.rs`) or re-run this executable in worker mode, then wait for
//! its hello and check its token and its build. Both ways end in the same
//! hello; only the start differs, and where the hello arrives: an exec'd
//! child connects to a one-shot server, a forked one was handed the
//! sending end of its channel.
//!
//! An exec'd child is this very executable, exec'd through `/proc/self/exe` (a
//! binary replaced on disk since the parent started is never run). It
//! inherits only the standard streams and one pipe holding its token (the
//! pipe's descriptor number is its argument; the token never appears in its
//! environment, which `/proc/<pid>/environ` shows to the same user for the
//! process's whole life). The bootstrap socket lives in a 0700 directory
//! (see the patched ipc-channel). The hello carries the protocol version and
//! the executable's build id, and a worker of another build is refused
//! before any of its frames is decoded.
//!
//! Every step has a deadline: a child that dies or stalls while starting is
//! a [`SpawnError`], never a hang.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcOneShotServer;

use crate::error::SpawnError;
use crate::sys;
use crate::wire::{Packet, Rx, Tx, Up};

/// Names the bootstrap server a worker connects to (not a secret: only
/// this user can reach it, and the token is still needed). Its presence
/// marks a process started as a worker.
pub(crate) const ENV_SERVER: &str = "CONCUR_PROCS_SERVER";
/// The parent's pid (a worker exits if its parent is already gone).
pub(crate) const ENV_PARENT: &str = "CONCUR_PROCS_PARENT";
/// The argument a worker is started with (first), followed by the number
/// of the descriptor its token can be read from. Worker mode starts from a
/// constructor when it sees it (`worker/entry.rs`), so `main` never does.
pub(crate) const WORKER_ARG: &str = "--concur-procs-worker";

/// The version of the private protocol (wire.rs) and of its encoding. Bump
/// it when either changes. A worker must report the same, and the same
/// build id: only then do both sides encode and decode frames alike.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// What a worker's hello says about its code, in a layout that never
/// changes (the frame's payload, read before the header is decoded):
/// the protocol version (4 bytes, little endian), then the build id.
pub(crate) fn identity() -> Vec<u8> {
    let mut v = PROTOCOL_VERSION.to_le_bytes().to_vec();
    v.extend_from_slice(concur_core::build::build_id());
    v
}

/// The identity the parent expects: its own, unless a test pretends
/// otherwise (see `__private::pretend_other_build`).
fn expected_identity() -> Vec<u8> {
    match PRETEND.get() {
        Some(other) => other.clone(),
        None => identity(),
    }
}

/// Set only by tests, through `__private::pretend_other_build`.
pub(crate) static PRETEND: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Checks a worker's identity against ours: `Ok` when it runs the same
/// protocol version and the same build.
pub(crate) fn check_identity(ours: &[u8], theirs: &[u8]) -> Result<(), SpawnError> {
    let version =
        |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)) };
    if ours == theirs {
        return Ok(());
    }
    let (Some(v_ours), v_theirs) = (version(ours), version(theirs)) else {
        return Err(SpawnError::Protocol("no build identity"));
    };
    Err(SpawnError::OtherBuild {
        ours: v_ours,
        theirs: v_theirs,
    })
}

/// Where the accepting thread reports the connection and its hello.
type Accepted = mpsc::Receiver<Result<(Rx, Packet), String>>;

/// A started, authenticated worker: its pid and both ends of its channel.
pub(crate) struct Started {
    pub(crate) pid: u32,
    /// Parent to worker.
    pub(crate) tx: Tx,
    /// Worker to parent.
    pub(crate) rx: Rx,
}

/// A child launched and not yet connected.
pub(crate) struct Pending {
    token: String,
    child: Child,
}

/// A launched child, and where its hello arrives.
enum Child {
    /// An exec'd child connects to this bootstrap server.
    Exec { pid: u32, server: Bootstrap },
    /// A child asked of the fork server, handed its channel.
    Forked(crate::forkserver::Forked),
}

/// A fresh random token: 16 bytes from the kernel's generator, in hex.
fn token() -> Result<String, SpawnError> {
    let mut bytes = [0u8; 16];
    // getrandom(2) without opening a file (it is on the path of every
    // worker start); /dev/urandom where the call is missing.
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(SpawnError::Os)?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A bootstrap server accepting in a helper thread (accept blocks).
struct Bootstrap {
    /// Its name: the path a child connects to.
    name: String,
    accepted: Accepted,
    /// A socket set aside to end its `accept` (see [`unblock`]); closed
    /// with the server.
    spare: std::os::fd::OwnedFd,
}

/// Starts a bootstrap server, with a socket set aside to unblock it.
fn serve() -> Result<Bootstrap, SpawnError> {
    // Made first: a process out of descriptors fails here, before there is
    // a thread to leak.
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SpawnError::Os(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let spare = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let (server, name) = IpcOneShotServer::<Packet>::new().map_err(SpawnError::Os)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("concur-procs-accept".into())
        .spawn(move || {
            let _ = tx.send(server.accept().map_err(|e| e.to_string()));
        })
        .map_err(SpawnError::Os)?;
    Ok(Bootstrap {
        name,
        accepted: rx,
        spare,
    })
}

/// How a pool starts its worker processes (see
/// [`ProcessPoolBuilder::spawn_mode`](crate::ProcessPoolBuilder::spawn_mode)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SpawnMode {
    /// Fork workers from the fork server when [`init`](crate::init)
    /// started one (it was called while the program had a single thread),
    /// else exec them; fall back to exec for good if the fork server fails.
    #[default]
    Auto,
    /// Always exec this executable again in worker mode.
    Exec,
}

/// Launches one worker process. Call it from a thread that lives as long as
/// the worker: an exec'd worker's parent-death signal fires when that
/// thread ends (a forked one's follows the thread that called `init`).
pub(crate) fn launch(mode: SpawnMode) -> Result<Pending, SpawnError> {
    if std::env::var_os(ENV_SERVER).is_some() {
        return Err(SpawnError::NestedWorker);
    }
    let token = token()?;
    if mode == SpawnMode::Exec {
        crate::forkserver::reap_if_gone();
    }
    if mode == SpawnMode::Auto {
        if let Some(forked) = crate::forkserver::fork_worker(&token) {
            return Ok(Pending {
                token,
                child: Child::Forked(forked),
            });
        }
    }
    // Before the server: failing here leaves no accept thread behind.
    let secret = sys::secret_pipe(token.as_bytes()).map_err(SpawnError::Os)?;
    let server = serve()?;
    let fd = secret.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    // The real path as argv[0], for `ps` and for messages (the worker's own
    // `current_exe` reads /proc/self/exe and is right either way).
    if let Ok(exe) = std::env::current_exe() {
        command.arg0(exe);
    }
    command
        .arg(WORKER_ARG)
        .arg(fd.to_string())
        .env(ENV_SERVER, &server.name)
        .env(ENV_PARENT, std::process::id().to_string())
        .stdin(Stdio::null());
    // Each worker leads a process group of its own, which the processes its
    // tasks fork join: when the worker ends, the supervisor ends the group,
    // so nothing a task started outlives its worker (a child that left the
    // group with `setsid` is its own business).
    command.process_group(0);
    // SAFETY: `inherit_only` makes async-signal-safe system calls only, as
    // code between fork and exec must.
    unsafe {
        command.pre_exec(move || sys::inherit_only(fd));
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            unblock(server);
            return Err(SpawnError::Os(e));
        }
    };
    // The child has its copy; ours must not reach later children.
    drop(secret);
    // The child is reaped with waitpid by pid, not through `Child`.
    let pid = child.id();
    Ok(Pending {
        token,
        child: Child::Exec { pid, server },
    })
}

impl Pending {
    /// Waits until `deadline` for the child to connect and prove its token.
    /// On failure the child is killed and reaped.
    pub(crate) fn connect(
        self,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Started, SpawnError> {
        let Pending { token, child } = self;
        let (pid, accepted) = match child {
            Child::Exec { pid, server } => {
                (pid, accept(server, &token, Some(pid), deadline, budget))
            }
            Child::Forked(forked) => accept_forked(forked, &token, deadline, budget)?,
        };
        match accepted {
            Ok((tx, rx)) => Ok(Started { pid, tx, rx }),
            // `accept` reaped the child: its pid may already be another
            // process's, so it is neither signalled nor waited for again.
            Err(e @ SpawnError::Exited(_)) => Err(e),
            // The connection broke: the child most likely died (killed,
            // crashed); how it ended decides how the failure counts.
            Err(e @ SpawnError::Protocol(_)) => match crate::parent::pidfd::open(pid) {
                Ok(fd) => Err(crate::parent::pidfd::exited_or_end(&fd, pid, e)),
                Err(_) => Err(end(pid, e)),
            },
            Err(e) => Err(end(pid, e)),
        }
    }
}

/// Kills and reaps child `pid` (not yet reaped) after its start failed
/// with `failed`, which it returns.
fn end(pid: u32, failed: SpawnError) -> SpawnError {
    sys::kill(pid);
    let _ = sys::wait(pid);
    failed
}

/// Waits for the hello on `accepted` and checks it. While waiting, watches
/// `child` (when given) so that a child that died is reported at once; it
/// is then reaped, and the error is [`SpawnError::Exited`] (the only error
/// after which the child is reaped).
fn accept(
    server: Bootstrap,
    token: &str,
    child: Option<u32>,
    deadline: Instant,
    budget: Duration,
) -> Result<(Tx, Rx), SpawnError> {
    let poll = Duration::from_millis(10);
    let got = loop {
        let now = Instant::now();
        if now >= deadline {
            unblock(server);
            return Err(SpawnError::Deadline(budget));
        }
        match server.accepted.recv_timeout(poll.min(deadline - now)) {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(SpawnError::Protocol("bootstrap thread ended"));
            }
        }
        if let Some(pid) = child {
            if let Ok(Some(exit)) = sys::try_wait(pid) {
                unblock(server);
                return Err(SpawnError::Exited(exit));
            }
        }
    };
    let (rx, packet) = got.map_err(|_| SpawnError::Protocol("no hello"))?;
    let (tx, _) = check_hello(packet, token, child)?;
    Ok((tx, rx))
}

/// A forked child's pid and how its hello went.
type HelloOf = (u32, Result<(Tx, Rx), SpawnError>);

/// Waits until `deadline` for the hello of a worker asked of the fork
/// server, on the channel it was handed, and checks it. Its pid comes with
/// the hello, or from the template's answer when it ends before saying
/// hello (see [`crate::forkserver::Answer::try_pid`]). As [`accept`]: a
/// child that died is reported at once, reaped, as [`SpawnError::Exited`].
///
/// Returns the pid (when known) and the outcome. On an error other than
/// `Exited` with a known pid, the caller ends and reaps that child.
fn accept_forked(
    f: crate::forkserver::Forked,
    token: &str,
    deadline: Instant,
    budget: Duration,
) -> Result<HelloOf, SpawnError> {
    let crate::forkserver::Forked { answer, up } = f;
    let poll = Duration::from_millis(10);
    let mut pid: Option<u32> = None;
    let failed = loop {
        let now = Instant::now();
        if now >= deadline {
            break SpawnError::Deadline(budget);
        }
        match up.try_recv_timeout(poll.min(deadline - now)) {
            Ok(packet) => match check_hello(packet, token, pid) {
                Ok((tx, said)) => {
                    return Ok((said, Ok((tx, up))));
                }
                Err(e) => break e,
            },
            Err(ipc_channel::TryRecvError::Empty) => {}
            // Its end closed: it died, or was never forked (the template
            // drops the request when the fork fails).
            Err(_) => break SpawnError::Protocol("no hello"),
        }
        match pid {
            None => pid = answer.try_pid()?,
            Some(p) => {
                if let Ok(Some(exit)) = sys::try_wait(p) {
                    return Ok((p, Err(SpawnError::Exited(exit))));
                }
            }
        }
    };
    // Whom to end: the template's answer, awaited past the start's own
    // deadline up to [`crate::forkserver::REPLY_DEADLINE`] from the
    // request. A healthy template answers within milliseconds, so a short
    // `start_timeout` fails only this start (with its own deadline in the
    // error) and the late child is known, ended and reaped; only a template
    // that does not answer at all is given up (later starts exec).
    let pid = match pid {
        Some(p) => p,
        None => answer.wait(Instant::now() + crate::forkserver::REPLY_DEADLINE)?,
    };
    if let Ok(Some(exit)) = sys::try_wait(pid) {
        return Ok((pid, Err(SpawnError::Exited(exit))));
    }
    Ok((pid, Err(failed)))
}

/// Checks a hello: the build identity first, from the payload, whose
/// layout never changes (a header from another build is never decoded),
/// then the token and the pid (when the child is known). Returns the
/// worker's channel down and the pid it gives.
fn check_hello(packet: Packet, token: &str, child: Option<u32>) -> Result<(Tx, u32), SpawnError> {
    let mut hello = packet
        .into_iter()
        .next()
        .ok_or(SpawnError::Protocol("empty hello"))?;
    let chan = hello.chan.take();
    let ours = expected_identity();
    let (up, _) = match check_identity(&ours, &hello.body.0) {
        Ok(()) => hello
            .open::<Up>()
            .map_err(|_| SpawnError::Protocol("bad hello"))?,
        Err(e) => return Err(e),
    };
    match up {
        Up::Hello { token: t, pid } if t == token && child.is_none_or(|c| c == pid) => {
            let chan = chan.ok_or(SpawnError::Protocol("hello without a channel"))?;
            Ok((chan, pid))
        }
        Up::Hello { .. } => Err(SpawnError::BadToken),
        _ => Err(SpawnError::Protocol("first message is not a hello")),
    }
}

/// Lets a helper thread blocked in `accept` finish (a child that never
/// connected). The connection is dropped at once. It is made with the
/// socket `serve` set aside, so a process out of descriptors (the likely
/// reason a start failed) still ends the thread and its listening socket.
fn unblock(server: Bootstrap) {
    let Bootstrap { name, spare, .. } = server;
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied within
    // its bounds and the call only reads it.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = name.as_bytes();
        if path.len() >= addr.sun_path.len() {
            return;
        }
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        libc::connect(
            spare.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::Body;
    use ipc_channel::ipc::IpcSender;

    use crate::wire::Frame;

    fn hello(name: String, token: &str) -> Rx {
        let up = IpcSender::<Packet>::connect(name).unwrap();
        let (down_tx, down_rx) = ipc_channel::ipc::channel::<Packet>().unwrap();
        let mut f = Frame::new(
            &Up::Hello {
                token: token.into(),
                pid: 1,
            },
            Body::Inline(identity()),
        )
        .unwrap();
        f.chan = Some(down_tx);
        up.send(vec![f]).unwrap();
        down_rx
    }

    #[test]
    fn impostor_without_token_is_dropped() {
        let server = serve().unwrap();
        let impostor = std::thread::spawn({
            let name = server.name.clone();
            move || hello(name, "not-the-token")
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = accept(server, "the-token", None, deadline, Duration::from_secs(10));
        assert!(
            matches!(r, Err(SpawnError::BadToken)),
            "impostor was accepted"
        );
        // The parent kept nothing of the impostor's: its channel is closed, no work ever comes.
        let down = impostor.join().unwrap();
        assert!(down.recv().is_err());
    }

    #[test]
    fn right_token_is_accepted() {
        let server = serve().unwrap();
        let worker = std::thread::spawn({
            let name = server.name.clone();
            move || hello(name, "tok")
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let (tx, _rx) = accept(server, "tok", None, deadline, Duration::from_secs(10)).unwrap();
        let down = worker.join().unwrap();
        tx.send(vec![
            Frame::new(&crate::wire::Down::Shutdown, Body::Empty).unwrap()
        ])
        .unwrap();
        let frame = down.recv().unwrap().into_iter().next().unwrap();
        let (d, _) = frame.open::<crate::wire::Down>().unwrap();
        assert!(matches!(d, crate::wire::Down::Shutdown));
    }

    #[test]
    fn identity_check_refuses_another_build_or_version() {
        let ours = identity();
        assert!(check_identity(&ours, &ours).is_ok());
        // Same protocol version, another executable.
        let mut other_build = PROTOCOL_VERSION.to_le_bytes().to_vec();
        other_build.extend_from_slice(b"gnu:0123");
        let e = check_identity(&ours, &other_build).unwrap_err();
        assert!(
            matches!(
                e,
                SpawnError::OtherBuild {
                    ours: PROTOCOL_VERSION,
                    theirs: Some(PROTOCOL_VERSION)
                }
            ),
            "{e:?}"
        );
        // Another protocol version, same build id.
        let mut other_version = (PROTOCOL_VERSION + 1).to_le_bytes().to_vec();
        other_version.extend_from_slice(&ours[4..]);
        let e = check_identity(&ours, &other_version).unwrap_err();
        assert!(
            matches!(e, SpawnError::OtherBuild { theirs: Some(v), .. } if v == PROTOCOL_VERSION + 1),
            "{e:?}"
        );
        // A hello without any identity (an older build) is refused too.
        let e = check_identity(&ours, &[]).unwrap_err();
        assert!(
            matches!(e, SpawnError::OtherBuild { theirs: None, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("different build"), "{e}");
    }

    #[test]
    fn our_identity_names_this_build() {
        let id = identity();
        assert_eq!(id[..4], PROTOCOL_VERSION.to_le_bytes());
        // Stable within a process, and more than the version alone.
        assert_eq!(id, identity());
        assert!(id.len() > 8, "{id:?}");
    }

    #[test]
    fn a_child_reaped_while_connecting_is_never_signalled() {
        // A child that ends at once without connecting; `connect` reaps it by pid.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let server = serve().unwrap();
        let pending = Pending {
            token: "tok".into(),
            child: Child::Exec { pid, server },
        };
        let r = pending.connect(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert!(matches!(r, Err(SpawnError::Exited(_))), "{:?}", r.err());
        // It was reaped by `accept`: its pid may be another process's now.
        let killed = sys::KILLED.with(|k| k.borrow().clone());
        assert!(!killed.contains(&pid), "signalled reaped pid {pid}");
        assert!(sys::try_wait(pid).is_err(), "reaped exactly once");
    }

    #[test]
    fn silent_child_hits_the_deadline() {
        let server = serve().unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let r = accept(server, "tok", None, deadline, Duration::from_millis(50));
        assert!(matches!(r, Err(SpawnError::Deadline(_))));
    }
}
