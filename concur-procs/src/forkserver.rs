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

use std::os::fd::RawFd;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

use crate::error::SpawnError;
use crate::sys;
use crate::wire::{Rx, Tx};

/// The longest the parent waits for the template to take a request and
/// answer with a pid (it only forks: milliseconds); also how long a pool's end waits
/// for a spare on its way. Past it the template counts as stuck, is
/// given up once, and exec is used for every later start. A start whose
/// own deadline comes first fails alone, once the template's answer has
/// said which child to end.
pub(crate) const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// What the parent asks of the template.
#[derive(Serialize, Deserialize)]
enum Ask {
    /// Fork a worker now.
    Worker(Request),
    /// Fork a spare (see [`Spare`]) and report it on the spares channel.
    Spare,
}

/// A worker asked of the template, and where it answers.
#[derive(Serialize, Deserialize)]
struct Request {
    /// Where the template answers: the worker's pid, or minus the errno of
    /// a failed fork.
    reply: IpcSender<i32>,
    job: Job,
}

/// What an exec'd worker gets from its parent, for a forked one. The
/// worker's channel to the parent travels in it (its descriptor passed
/// over the private socket pair), so a forked worker needs no bootstrap
/// server: the hello, with its token and build identity, goes straight
/// into the channel the parent made for it.
#[derive(Serialize, Deserialize)]
struct Job {
    /// The worker's end of its channel up to the parent.
    up: Tx,
    /// The worker's token (never in an environment).
    token: String,
    /// The parent's pid.
    parent: u32,
    /// The parent's environment now.
    env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The parent's working directory now (none when it has none).
    cwd: Option<Vec<u8>>,
}

impl Job {
    /// The job of a worker of this process, as it is now.
    fn here(up: Tx, token: &str) -> Job {
        use std::os::unix::ffi::OsStringExt;
        Job {
            up,
            token: token.to_owned(),
            parent: std::process::id(),
            env: std::env::vars_os()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.into_os_string().into_vec()),
        }
    }
}

/// The template's report of a spare it forked: its pid (or minus the
/// errno of a failed fork) and the only sender of its job, which the
/// template hands over and keeps no copy of.
#[derive(Serialize, Deserialize)]
struct SpareForked {
    pid: i32,
    assign: Option<IpcSender<Job>>,
}

/// A worker forked ahead of time: the parent's child (as every forked
/// worker), already in its own process group with its parent-death signal
/// set, blocked (no CPU) on its channel until the parent sends it a
/// [`Job`]. Handing it one takes the template's wake-up, the `clone` and
/// the worker's set-up before its hello off a start. Only the parent holds
/// its channel's sender, so it serves only the parent; the parent knows
/// its pid and ends and reaps it when no pool of forked workers is left or
/// the template is given up.
///
/// Two known limits, both documented rather than mended:
/// - a template killed between forking a spare and reporting it leaves
///   that spare (it exits when its channel closes) a zombie until the
///   parent exits, as for a worker whose template died before answering;
/// - the job is sent under the fork server's lock; it carries the
///   environment, so a spare stopped from outside (`SIGSTOP`) whose socket
///   cannot take an environment larger than its buffer (about 200 KB)
///   blocks the send, and every start of the process waits with it. An
///   environment of ordinary size fits, and that start then fails at its
///   `start_timeout` like any start whose worker never says hello.
struct Spare {
    pid: u32,
    assign: IpcSender<Job>,
}

/// The parent's side: the template's pid and the channel of requests.
struct Client {
    pid: u32,
    /// The process that started the template: the only one whose children
    /// its workers become (a copy of it made by `fork` must exec).
    owner: u32,
    requests: IpcSender<Ask>,
    /// Where the template reports the spares it forks.
    spares: IpcReceiver<SpareForked>,
    /// The spare ready for the next start.
    spare: Option<Spare>,
    /// A spare was asked for and not yet reported.
    spare_asked: bool,
    /// Pools of forked workers alive (see [`hold`]): spares are kept only
    /// while there is one.
    users: usize,
}

impl Client {
    /// Takes the spares the template reported since the last look. One
    /// reported while no pool wants it is ended at once.
    fn take_reports(&mut self) {
        while let Ok(report) = self.spares.try_recv() {
            self.spare_asked = false;
            self.keep(report);
        }
    }

    fn keep(&mut self, report: SpareForked) {
        // A failed fork reports minus its errno and no sender: the template
        // sends a sender only with a pid above 0 (never 0, which `kill`
        // would take for our process group).
        let (Ok(pid), Some(assign)) = (u32::try_from(report.pid), report.assign) else {
            return;
        };
        let spare = Spare { pid, assign };
        if self.users == 0 || self.spare.is_some() {
            spare.end();
        } else {
            self.spare = Some(spare);
        }
    }

    /// Asks the template for a spare unless one is ready or on its way.
    /// False when the template is gone.
    fn ask_spare(&mut self) -> bool {
        if self.users == 0 || self.spare.is_some() || self.spare_asked {
            return true;
        }
        self.spare_asked = true;
        self.requests.send(Ask::Spare).is_ok()
    }

    /// Ends and reaps the spare, if any.
    fn end_spare(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.end();
        }
    }
}

impl Spare {
    /// Ends and reaps the spare: our child, not yet reaped (its pid is ours).
    fn end(self) {
        drop(self.assign);
        sys::kill(self.pid);
        let _ = sys::wait(self.pid);
    }
}

/// A spare's process name (`/proc/<pid>/comm`) while it waits.
pub(crate) const SPARE_NAME: &std::ffi::CStr = c"concur-spare";

/// A pool of forked workers, alive: spares are kept while one is.
pub(crate) struct Hold(bool);

/// A pool of forked workers starts: spares are kept until the [`Hold`] is
/// dropped (with the last one, see [`release`]).
pub(crate) fn hold() -> Hold {
    let mut guard = server();
    match guard.as_mut().filter(|c| c.owner == std::process::id()) {
        Some(c) => {
            c.users += 1;
            Hold(true)
        }
        None => Hold(false),
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0 {
            release();
        }
    }
}

/// A pool of forked workers ended: when it was the last one, the spare is
/// ended and reaped (a spare on its way is awaited for that, within
/// [`REPLY_DEADLINE`]: past it the template counts as stuck and is given
/// up), so that no process is left for pools that no
/// longer exist.
fn release() {
    let mut guard = server();
    let Some(c) = guard.as_mut().filter(|c| c.owner == std::process::id()) else {
        return;
    };
    c.users = c.users.saturating_sub(1);
    if c.users > 0 {
        return;
    }
    c.take_reports();
    c.end_spare();
    if c.spare_asked {
        match c.spares.try_recv_timeout(REPLY_DEADLINE) {
            Ok(report) => {
                c.spare_asked = false;
                c.keep(report);
            }
            Err(_) => {
                let pid = c.pid;
                give_up(&mut guard, pid);
            }
        }
    }
}

/// The template, while it is usable.
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
    let me = std::process::id();
    server().as_ref().filter(|c| c.owner == me).map(|c| c.pid)
}

/// Reaps the template if it has ended (killed from outside, say) and stops
/// using it. `fork_worker` finds a dead template when it asks it for a
/// worker; pools that exec their workers never ask, so they call this
/// instead and the template does not stay a zombie.
pub(crate) fn reap_if_gone() {
    let mut guard = server();
    let Some(client) = guard.as_ref() else { return };
    if client.owner != std::process::id() {
        return;
    }
    if let Ok(Some(_)) = sys::try_wait(client.pid) {
        if let Some(mut c) = guard.take() {
            c.take_reports();
            c.end_spare();
        }
    }
}

/// True when this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// This process's open descriptors above the standard streams.
fn open_fds() -> Vec<RawFd> {
    let mut fds = Vec::new();
    // SAFETY: opendir/readdir/closedir on a valid C string; each entry's
    // name is a NUL-terminated string inside the entry readdir returned.
    unsafe {
        let dir = libc::opendir(c"/proc/self/fd".as_ptr());
        if dir.is_null() {
            return fds;
        }
        let own = libc::dirfd(dir);
        loop {
            let entry = libc::readdir(dir);
            if entry.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr());
            if let Some(fd) = name.to_str().ok().and_then(|n| n.parse::<RawFd>().ok()) {
                if fd > 2 && fd != own {
                    fds.push(fd);
                }
            }
        }
        libc::closedir(dir);
    }
    fds
}

fn spawn_template() -> Option<Client> {
    // Listed before the channels exist: the template closes exactly these.
    let inherited = open_fds();
    let (requests, template_requests) = ipc::channel::<Ask>().ok()?;
    let (template_spares, spares) = ipc::channel::<SpareForked>().ok()?;
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
        drop((requests, spares));
        template(template_requests, template_spares, parent, &inherited);
    }
    drop(template_spares);
    Some(Client {
        pid: pid as u32,
        owner: parent,
        requests,
        spares,
        spare: None,
        spare_asked: false,
        users: 0,
    })
}

/// A worker asked of the template: its pid is on the way.
pub(crate) struct Forked {
    /// Where the template's answer comes.
    pub(crate) answer: Answer,
    /// The channel the worker's hello comes on.
    pub(crate) up: Rx,
}

/// The template's answer to one request, on its way.
pub(crate) struct Answer {
    template: u32,
    /// When the request was sent: the template must answer within
    /// [`REPLY_DEADLINE`] of it.
    asked: Instant,
    /// Where the answer comes; none for a spare, whose pid is known.
    reply: Result<IpcReceiver<i32>, u32>,
}

/// Asks the template for a worker that will say hello, with `token`, on
/// the channel in the answer; does not wait for the fork (see
/// [`Answer::try_pid`]), so a pool's workers are forked while it goes on.
/// `None` when there is no usable template (then exec it is); a template
/// found gone here is reaped and not used again.
pub(crate) fn fork_worker(token: &str) -> Option<Forked> {
    let mut guard = server();
    let client = guard.as_mut()?;
    if client.owner != std::process::id() {
        return None;
    }
    client.take_reports();
    let template = client.pid;
    if client.spare.is_some() {
        // The channel first: a start that cannot make one (no descriptor
        // left) leaves the spare with the client, which ends it in time.
        let (up, up_rx) = ipc::channel().ok()?;
        let spare = client.spare.take().expect("checked above");
        // A spare stopped from outside would hold this start until its
        // `start_timeout`: it is ended instead, and the template forks.
        if !sys::cannot_run(spare.pid) && spare.assign.send(Job::here(up, token)).is_ok() {
            if !client.ask_spare() {
                give_up(&mut guard, template);
            }
            return Some(Forked {
                answer: Answer {
                    template,
                    asked: Instant::now(),
                    reply: Err(spare.pid),
                },
                up: up_rx,
            });
        }
        // It died or was stopped from outside: ended and reaped here, and
        // the template forks this worker.
        spare.end();
    }
    let (up, up_rx) = ipc::channel().ok()?;
    let (reply, reply_rx) = ipc::channel().ok()?;
    let request = Ask::Worker(Request {
        reply,
        job: Job::here(up, token),
    });
    if client.requests.send(request).is_err() || !client.ask_spare() {
        give_up(&mut guard, template);
        return None;
    }
    Some(Forked {
        answer: Answer {
            template,
            asked: Instant::now(),
            reply: Ok(reply_rx),
        },
        up: up_rx,
    })
}

impl Answer {
    /// The worker's pid if the template has answered, without waiting.
    ///
    /// The hello is not held back for this answer: the template answers
    /// once `clone` returns in it, which is often after the worker has run
    /// through its start and said hello (the new process runs first), so
    /// the pid a hello gives is taken as soon as it comes (the channel is
    /// private to this process, the template and the worker), and this
    /// answer serves only to find a worker that died before its hello.
    ///
    /// # Errors
    /// As [`Self::wait`], once the template is past its deadline or gone.
    pub(crate) fn try_pid(&self) -> Result<Option<u32>, SpawnError> {
        let reply = match &self.reply {
            Ok(r) => r,
            Err(pid) => return Ok(Some(*pid)),
        };
        match reply.try_recv() {
            Ok(answer) => answer_to_pid(answer).map(Some),
            Err(ipc_channel::TryRecvError::Empty) if self.asked.elapsed() < REPLY_DEADLINE => {
                Ok(None)
            }
            Err(_) => {
                give_up(&mut server(), self.template);
                Err(SpawnError::ForkServer(REPLY_DEADLINE))
            }
        }
    }

    /// Waits (until `deadline`, and at most [`REPLY_DEADLINE`] from the
    /// request) for the worker's pid.
    ///
    /// # Errors
    /// The fork failed (its errno), or the template did not answer: it is
    /// then killed, reaped and not used again, and only this start fails.
    /// If the template died after forking the worker, that worker is never
    /// known: its channel is dropped here, so it exits, and it stays a
    /// zombie until the parent exits.
    pub(crate) fn wait(&self, deadline: Instant) -> Result<u32, SpawnError> {
        let reply = match &self.reply {
            Ok(r) => r,
            Err(pid) => return Ok(*pid),
        };
        let left = deadline
            .min(self.asked + REPLY_DEADLINE)
            .saturating_duration_since(Instant::now());
        match reply.try_recv_timeout(left) {
            Ok(answer) => answer_to_pid(answer),
            Err(_) => {
                give_up(&mut server(), self.template);
                Err(SpawnError::ForkServer(REPLY_DEADLINE))
            }
        }
    }
}

/// The template's answer: a pid, or minus the errno of a failed fork.
fn answer_to_pid(answer: i32) -> Result<u32, SpawnError> {
    if answer <= 0 {
        return Err(SpawnError::Os(std::io::Error::from_raw_os_error(-answer)));
    }
    let pid = answer as u32;
    // The worker puts itself in a group of its own at once; doing it here
    // too (it is our child and has not exec'd) closes the window in which
    // it is still in ours.
    // SAFETY: setpgid takes integers.
    unsafe { libc::setpgid(pid as libc::pid_t, pid as libc::pid_t) };
    Ok(pid)
}

/// Kills and reaps template `pid` and stops using it, unless it was
/// already replaced by nothing (another start gave up on it first).
/// Its spare too: reported ones are ended and reaped once the template is
/// (it reports nothing more then).
fn give_up(guard: &mut Option<Client>, pid: u32) {
    if guard.as_ref().is_some_and(|c| c.pid == pid) {
        let Some(mut c) = guard.take() else { return };
        sys::kill(pid);
        let _ = sys::wait(pid);
        c.users = 0;
        c.take_reports();
        c.end_spare();
    }
}

/// A raw fork whose child is the parent's (`CLONE_PARENT`): the new pid,
/// 0 in the child, or minus the errno.
fn clone_for_parent() -> i32 {
    // SAFETY: a raw clone with no stack argument is a fork; sound without
    // the C library's fork handlers because this process has one thread
    // (see the module doc). CLONE_PARENT makes the child the parent's.
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
    if pid < 0 {
        -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        pid as i32
    }
}

/// The template's whole life (in the child of `init`'s fork): one thread,
/// the standard streams and its channels; reads requests and forks
/// workers and spares until the parent goes.
fn template(
    requests: IpcReceiver<Ask>,
    spares: IpcSender<SpareForked>,
    parent: u32,
    inherited: &[RawFd],
) -> ! {
    // As a worker: it ends with its parent (its exit code then reaches
    // nobody).
    sys::die_with_parent(parent);
    // An answer to a parent that no longer listens (it took the pid from
    // the worker's hello and dropped the answer's channel) fails with
    // `EPIPE` instead of ending the template. Workers ignore SIGPIPE anyway
    // (`worker::entry::prepare`).
    sys::ignore_sigpipe();
    for &fd in inherited {
        // SAFETY: descriptors the parent had before the channels existed;
        // nothing in this process uses them again (it never returns).
        unsafe { libc::close(fd) };
    }
    loop {
        // The parent closed its end: nothing left to serve.
        let Ok(ask) = requests.recv() else {
            sys::exit_now(0)
        };
        match ask {
            Ask::Worker(req) => {
                let pid = clone_for_parent();
                if pid == 0 {
                    drop((requests, spares));
                    let Request { reply, job } = req;
                    // Only the template answers the parent.
                    drop(reply);
                    prepare(job.parent);
                    become_worker(job);
                }
                // A parent that gave up on this start no longer listens:
                // fine.
                let _ = req.reply.send(pid);
                // The worker has its copy of the channel; the template
                // keeps none.
                drop(req);
            }
            Ask::Spare => {
                let Ok((assign, wait)) = ipc::channel::<Job>() else {
                    let _ = spares.send(SpareForked {
                        pid: -libc::EMFILE,
                        assign: None,
                    });
                    continue;
                };
                let pid = clone_for_parent();
                if pid == 0 {
                    drop((requests, spares, assign));
                    spare(wait, parent);
                }
                drop(wait);
                let assign = (pid > 0).then_some(assign);
                // The parent learns every spare's pid: it is the spare's
                // parent and reaps it.
                let _ = spares.send(SpareForked { pid, assign });
            }
        }
    }
}

/// In a spare just forked: set up as a worker, then waits (blocked, no
/// CPU) for its job. The wait has no deadline: it ends with the job, with
/// the parent (the parent-death signal) or when the parent drops the only
/// sender (it ends the spare then anyway).
fn spare(wait: IpcReceiver<Job>, parent: u32) -> ! {
    prepare(parent);
    // Named while it waits, so that `ps` (and a test) tells it from a
    // worker; a worker gets the template's name back.
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`; PR_SET_NAME
    // reads a NUL-terminated string of at most 16.
    unsafe {
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, SPARE_NAME.as_ptr(), 0, 0, 0);
    }
    match wait.recv() {
        Ok(job) => {
            // A worker holds its channel and nothing else of the template.
            drop(wait);
            // SAFETY: as above; `name` ends with a NUL (16 bytes, at most
            // 15 written by the kernel).
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
            become_worker(job)
        }
        Err(_) => sys::exit_now(0),
    }
}

/// In a process just forked by the template for a worker: what exec and
/// `spawn::launch` give an exec'd worker before it runs (own process
/// group, parent-death signal, standard input from `/dev/null`).
fn prepare(parent: u32) {
    // SAFETY: plain system calls on integers and a valid C string.
    unsafe {
        libc::setpgid(0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    sys::die_with_parent(parent);
}

/// In a forked worker: takes the parent's environment and working
/// directory from its job, then enters worker mode.
fn become_worker(job: Job) -> ! {
    // One thread: changing the environment races with nobody. Only what
    // differs from the template's (the parent's at `init`, most often the
    // same) is changed: rewriting it all costs about 0.1 ms of copied
    // pages and allocations on every start.
    use std::os::unix::ffi::OsStrExt;
    let keep: std::collections::HashSet<&[u8]> = job.env.iter().map(|(k, _)| &k[..]).collect();
    let old: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| !keep.contains(k.as_bytes()))
        .collect();
    for k in old {
        std::env::remove_var(k);
    }
    for (k, v) in &job.env {
        // What `set_var` would panic on cannot come from `vars_os`.
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
            continue;
        }
        let k = std::ffi::OsStr::from_bytes(k);
        let v = std::ffi::OsStr::from_bytes(v);
        if std::env::var_os(k).as_deref() != Some(v) {
            std::env::set_var(k, v);
        }
    }
    if let Some(cwd) = &job.cwd {
        let _ = std::env::set_current_dir(std::ffi::OsStr::from_bytes(cwd));
    }
    crate::worker::main_forked(crate::worker::Bootstrap::Forked {
        up: job.up,
        token: job.token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fds_lists_a_new_descriptor() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let fds = open_fds();
        assert!(fds.contains(&fd), "{fds:?}");
        assert!(fds.iter().all(|&f| f > 2));
    }
}
