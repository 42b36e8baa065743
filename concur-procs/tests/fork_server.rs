//! Workers forked by the fork server (issue 11.1): a program whose `main`
//! calls `concur_procs::init()` first gets a template process, and pools
//! fork their workers from it instead of exec'ing the executable. The
//! checks below run in sequence in one program (the fork server exists only
//! after `init`, which a test harness would call too late, once its threads
//! exist), each panicking with its own message.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{
    alive, children, join, proc_state, signal, signal_of, spawn_reporting, wait_until, Crash, How,
    Sleep, DEADLINE,
};
use concur_procs::{
    Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, SpawnMode, Task, TaskContext,
};
use serde::{Deserialize, Serialize};

/// What a worker sees of itself.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    var: Option<String>,
    cwd: String,
    cmdline: Vec<u8>,
    is_worker: bool,
}

/// Reports what its worker sees: its ids, one environment variable, its
/// working directory and command line.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    var: String,
}

impl Task for Probe {
    type Output = Seen;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "fork-server-tests::Probe";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Seen {
        // SAFETY: getppid and getpgrp never fail.
        let (ppid, pgrp) = unsafe { (libc::getppid() as u32, libc::getpgrp() as u32) };
        Seen {
            pid: std::process::id(),
            ppid,
            pgrp,
            var: std::env::var(self.var).ok(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            cmdline: std::fs::read("/proc/self/cmdline").unwrap_or_default(),
            is_worker: concur_procs::is_worker(),
        }
    }
}

concur_procs::register!(Probe);

const ROLE: &str = "CONCUR_PROCS_TEST_FORK_PARENT_ROLE";
const LATE_VAR: &str = "CONCUR_PROCS_TEST_SET_AFTER_INIT";
const WORKER_ARG: &[u8] = b"--concur-procs-worker";

fn main() {
    concur_procs::init();
    match std::env::var(ROLE).as_deref() {
        Ok("parent") => parent_role(),
        Ok("stuck") => stuck_role(),
        _ => {}
    }
    let template = concur_procs::__private::fork_server_pid()
        .expect("init() in a single-threaded main starts a fork server");
    assert!(alive(template), "the fork server {template} is running");

    check("forked workers run tasks", forked_workers_run_tasks);
    check(
        "workers see the environment and directory of now",
        workers_see_the_environment_of_now,
    );
    check(
        "forked workers hold only their channel",
        forked_workers_hold_only_their_channel,
    );
    check(
        "a crashed worker is replaced by a forked one",
        a_crashed_worker_is_replaced,
    );
    check(
        "a crashed worker's replacement is forked before its task fails",
        || replacement_started_before_the_error(SpawnMode::Auto),
    );
    check(
        "a crashed worker's replacement is exec'd before its task fails",
        || replacement_started_before_the_error(SpawnMode::Exec),
    );
    check(
        "a pool that gives up ends the replacement started for it",
        a_pool_that_gives_up_ends_the_early_replacement,
    );
    check(
        "a crashed worker is replaced by the fork server's spare",
        a_crashed_worker_is_replaced_by_the_spare,
    );
    check(
        "a spare killed from outside is reaped and replaced",
        a_killed_spare_is_reaped_and_replaced,
    );
    check(
        "a spare stopped from outside is ended and skipped",
        a_stopped_spare_is_ended_and_skipped,
    );
    check("a late answer fails only its own start", || {
        a_late_answer_fails_only_its_own_start(template)
    });
    check("spawn_mode(Exec) execs", exec_mode_execs);
    check(
        "a forked copy of the parent execs its workers",
        a_forked_copy_execs,
    );
    check("nothing left behind but the fork server", || {
        assert_eq!(children(), vec![template], "children left behind")
    });
    check("parent death ends workers and fork server", parent_death);
    check("a stuck fork server fails one start, then exec", stuck);
    check("a killed fork server falls back to exec", || {
        a_killed_fork_server_falls_back_to_exec(template)
    });
    check("no child left at the end", || {
        assert_eq!(children(), Vec::<u32>::new(), "children left behind")
    });
}

fn check(name: &str, f: impl FnOnce()) {
    eprint!("check {name} ... ");
    f();
    eprintln!("ok");
}

fn probe(pool: &ProcessPool) -> Seen {
    join(
        pool.submit(Probe {
            var: LATE_VAR.into(),
        })
        .unwrap(),
    )
    .expect("probe ran")
}

/// Asserts that `seen` comes from a worker forked from the fork server: our
/// child, our command line (no worker argument), leading its own group.
fn assert_forked(seen: &Seen) {
    let ours = std::fs::read("/proc/self/cmdline").unwrap();
    assert_eq!(
        seen.cmdline, ours,
        "worker {} has another command line: it was exec'd",
        seen.pid
    );
    assert_eq!(
        seen.ppid,
        std::process::id(),
        "a forked worker is our child"
    );
    assert_eq!(seen.pgrp, seen.pid, "a worker leads its own process group");
    assert!(seen.is_worker, "is_worker() in a forked worker");
}

fn assert_execd(seen: &Seen) {
    assert!(
        seen.cmdline.split(|&b| b == 0).any(|arg| arg == WORKER_ARG),
        "worker {} was not exec'd: {:?}",
        seen.pid,
        String::from_utf8_lossy(&seen.cmdline)
    );
    assert_eq!(
        seen.ppid,
        std::process::id(),
        "an exec'd worker is our child"
    );
    assert_eq!(seen.pgrp, seen.pid, "a worker leads its own process group");
}

fn forked_workers_run_tasks() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let pids: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
    assert_eq!(pids.len(), 2);
    let results: Vec<u32> = pool
        .map((0..100).map(|ms| Sleep { ms: ms % 2 }))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|p| pids.contains(p)), "{results:?}");
    for _ in 0..4 {
        let seen = probe(&pool);
        assert!(pids.contains(&seen.pid));
        assert_forked(&seen);
    }
}

fn workers_see_the_environment_of_now() {
    // Changed after init(), so the template has neither.
    std::env::set_var(LATE_VAR, "late");
    let before = std::env::current_dir().unwrap();
    let dir = std::env::temp_dir().canonicalize().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let seen = probe(&pool);
    std::env::set_current_dir(before).unwrap();
    std::env::remove_var(LATE_VAR);
    assert_forked(&seen);
    assert_eq!(
        seen.var.as_deref(),
        Some("late"),
        "the worker's environment"
    );
    assert_eq!(
        seen.cwd,
        dir.display().to_string(),
        "the worker's directory"
    );
    // And a variable removed since is gone from the next worker.
    drop(pool);
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(probe(&pool).var, None, "a removed variable stays removed");
}

/// As `tests/fds_inherited.rs` checks for exec'd workers: the two channel
/// sockets, shared memory the worker made itself, the standard streams,
/// and standard input from `/dev/null`.
fn forked_workers_hold_only_their_channel() {
    // A descriptor opened without close-on-exec after init().
    // SAFETY: open on a valid C string; closed below.
    let careless = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(careless >= 0);
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    // A worker still in its handshake holds the sending end of its own
    // channel until its hello is sent: look until each is past it (the
    // deadline only bounds a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let parent_region = format!(".{}.", std::process::id());
    for pid in pool.worker_pids().into_iter().flatten() {
        let own_region = format!(".{pid}.");
        loop {
            let mut extra = Vec::new();
            for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
            {
                let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(target) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                let target = target.to_string_lossy().into_owned();
                if fd == 0 {
                    assert_eq!(target, "/dev/null", "worker {pid}'s standard input");
                }
                if fd > 2 && !(target.starts_with("/memfd:") && target.contains(&own_region)) {
                    extra.push((fd, target));
                }
            }
            let sockets = extra
                .iter()
                .filter(|(_, t)| t.starts_with("socket:"))
                .count();
            // Its progress word's region comes from the parent with its
            // init, and is let go of (the mapping kept) as soon as it is
            // read: a worker caught in between holds it for a moment.
            let receiving = extra
                .iter()
                .filter(|(_, t)| t.starts_with("/memfd:") && t.contains(&parent_region))
                .count();
            assert_eq!(
                sockets + receiving,
                extra.len(),
                "forked worker {pid} holds more than sockets: {extra:?}"
            );
            if sockets <= 2 && receiving == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "forked worker {pid} holds more than its channel: {extra:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(careless) };
}

fn a_crashed_worker_is_replaced() {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    let first = probe(&pool);
    let e = join(
        pool.submit(Crash {
            how: How::Abort,
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::WorkerLost(signal_of(How::Abort)),
        "abort in a forked worker: {e:?}"
    );
    let next = probe(&pool);
    assert_ne!(next.pid, first.pid, "the crashed worker was replaced");
    assert_forked(&next);
}

/// Where [`replacement_started_before_the_error`] learns what the waker saw.
#[derive(Default)]
struct Seen2 {
    /// Set by the wake-up: whether a new child had appeared by then.
    found: Mutex<Option<bool>>,
    woken: Condvar,
}

/// Called when the crashed task's handle is finished, on the thread that
/// finishes it (the pool's supervisor), before anything after it runs
/// there: it looks for a child of this process that is neither the fork
/// server nor the dead worker, waiting at most [`DEADLINE`] (without the
/// early start, the replacement is started by that very thread only after
/// this returns, so it never appears).
struct ReplacementWaker {
    before: Vec<u32>,
    seen: Arc<Seen2>,
}

impl Wake for ReplacementWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let end = Instant::now() + DEADLINE;
        let found = loop {
            if children().iter().any(|c| !self.before.contains(c)) {
                break true;
            }
            if Instant::now() >= end {
                break false;
            }
            std::thread::yield_now();
        };
        *self.seen.found.lock().unwrap() = Some(found);
        self.seen.woken.notify_all();
    }
}

/// A worker killed while it runs a task: its replacement is started as
/// soon as the death is seen, before the task's error is delivered (so the
/// start overlaps the error's way to the caller), in both spawn modes.
fn replacement_started_before_the_error(mode: SpawnMode) {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .spawn_mode(mode)
        .build()
        .unwrap();
    let mut h = pool
        .submit(Crash {
            how: How::Sigkill,
            wait: true,
        })
        .unwrap();
    let worker = h.recv_timeout(DEADLINE).expect("the task's pid");
    let before = children();
    assert!(before.contains(&worker), "{before:?} lacks worker {worker}");
    let seen = Arc::new(Seen2::default());
    let waker = Waker::from(Arc::new(ReplacementWaker {
        before,
        seen: seen.clone(),
    }));
    let mut cx = Context::from_waker(&waker);
    // Still waiting for its go-ahead: the waker is registered before the
    // crash.
    assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
    h.send(()).unwrap();
    let found = {
        let g = seen.found.lock().unwrap();
        let (g, _) = seen
            .woken
            .wait_timeout_while(g, DEADLINE * 2, |f| f.is_none())
            .unwrap();
        *g
    };
    assert_eq!(
        found,
        Some(true),
        "no replacement was started before the task failed"
    );
    match Pin::new(&mut h).poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(
            e.kind(),
            &ErrorKind::WorkerLost(signal_of(How::Sigkill)),
            "{e:?}"
        ),
        other => panic!("the crashed task: {other:?}"),
    }
    // The replacement serves.
    let next = probe(&pool);
    assert_ne!(next.pid, worker);
    match mode {
        SpawnMode::Exec => assert_execd(&next),
        _ => assert_forked(&next),
    }
}

/// A pool that gives up on the crash (restart limit 0) starts no worker:
/// the replacement started when the death was seen is ended and reaped,
/// while the pool still exists.
fn a_pool_that_gives_up_ends_the_early_replacement() {
    let before = but_spares(children());
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .restart_limit(0, Duration::from_secs(3600))
        .build()
        .unwrap();
    let first = probe(&pool);
    kill_the_worker(&pool);
    // The fork server's spare for the next start is not a replacement.
    wait_until("the unused replacement's end", DEADLINE, || {
        but_spares(children()) == before
    });
    assert!(!alive(first.pid));
    let refused = pool.submit(Probe {
        var: LATE_VAR.into(),
    });
    assert!(
        matches!(
            refused.as_ref().map_err(|e| e.kind()),
            Err(ErrorKind::PoolFailed { .. })
        ),
        "{refused:?}"
    );
    drop(pool);
    assert_eq!(children(), before, "children left behind");
}

/// Has the pool's worker kill itself with `SIGKILL`; its task fails with
/// that signal.
fn kill_the_worker(pool: &ProcessPool) {
    let e = join(
        pool.submit(Crash {
            how: How::Sigkill,
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::WorkerLost(signal_of(How::Sigkill)),
        "{e:?}"
    );
}

/// True when `pid` is a spare of the fork server, waiting for its job.
fn is_spare(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "concur-spare")
}

fn but_spares(mut pids: Vec<u32>) -> Vec<u32> {
    pids.retain(|&p| !is_spare(p));
    pids
}

/// The spares among this process's children.
fn spares() -> Vec<u32> {
    children().into_iter().filter(|&p| is_spare(p)).collect()
}

/// Once a pool of forked workers runs, the fork server keeps one spare,
/// forked ahead, our child; a crashed worker's replacement is that spare,
/// which then runs tasks as any forked worker, and the fork server forks
/// the next spare. The last pool's end ends and reaps the spare.
fn a_crashed_worker_is_replaced_by_the_spare() {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    let first = probe(&pool);
    wait_until("a spare is forked", DEADLINE, || spares().len() == 1);
    let spare = spares()[0];
    assert_ne!(spare, first.pid);
    kill_the_worker(&pool);
    let next = probe(&pool);
    assert_eq!(next.pid, spare, "the spare replaced the crashed worker");
    assert_forked(&next);
    assert_eq!(next.ppid, std::process::id());
    assert_eq!(next.pgrp, next.pid, "a group of its own");
    wait_until("the next spare is forked", DEADLINE, || {
        spares().iter().any(|&s| s != spare)
    });
    drop(pool);
    assert_eq!(spares(), Vec::<u32>::new(), "the last pool ended the spare");
}

/// A spare killed from outside while it waits is reaped at the next start,
/// which the fork server then forks itself: no start is lost to it.
fn a_killed_spare_is_reaped_and_replaced() {
    spare_hit_from_outside(libc::SIGKILL, |spare| !alive(spare));
}

/// A spare stopped from outside (`SIGSTOP`) is not handed the next start,
/// which it would hold until the start timeout: it is ended and reaped,
/// and the fork server forks the worker.
fn a_stopped_spare_is_ended_and_skipped() {
    spare_hit_from_outside(libc::SIGSTOP, |spare| proc_state(spare) == Some('T'));
}

/// Sends `sig` to the waiting spare, waits until `hit` says it took
/// effect, then has the pool's worker crash: the replacement is forked by
/// the template, not the spare, which is reaped.
fn spare_hit_from_outside(sig: i32, hit: impl Fn(u32) -> bool) {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        // Longer than the test's deadline: a start held by a stopped
        // spare would fail the probe below.
        .start_timeout(DEADLINE * 10)
        .build()
        .unwrap();
    let first = probe(&pool);
    wait_until("a spare is forked", DEADLINE, || spares().len() == 1);
    let spare = spares()[0];
    signal(spare, sig);
    wait_until("the signal takes effect", DEADLINE, || hit(spare));
    kill_the_worker(&pool);
    let next = probe(&pool);
    assert_ne!(next.pid, first.pid);
    assert_ne!(next.pid, spare);
    assert_forked(&next);
    assert!(!children().contains(&spare), "the spare was reaped");
    drop(pool);
}

/// A start whose own deadline passes before the fork server answers (here
/// the template is stopped for a second; a loaded machine and a short
/// `start_timeout` do the same) fails alone, with its own deadline in the
/// error; the fork server, which answers late, stays in use for every
/// other pool. Before, one such start gave the fork server up for good.
fn a_late_answer_fails_only_its_own_start(template: u32) {
    signal(template, libc::SIGSTOP);
    let building = std::thread::spawn(|| {
        ProcessPool::builder()
            .workers(1)
            .start_timeout(Duration::from_millis(200))
            .build()
    });
    // The scenario, not a synchronisation: the template answers a second
    // late, well within its own 5 s deadline.
    std::thread::sleep(Duration::from_secs(1));
    signal(template, libc::SIGCONT);
    let e = building.join().unwrap().expect_err("the start was late");
    assert_eq!(e.kind(), &ErrorKind::Spawn, "{e:?}");
    assert!(!format!("{e}").contains("fork server"), "{e}");
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_forked(&probe(&pool));
}

fn exec_mode_execs() {
    let pool = ProcessPool::builder()
        .workers(1)
        .spawn_mode(SpawnMode::Exec)
        .build()
        .unwrap();
    assert_execd(&probe(&pool));
}

fn a_killed_fork_server_falls_back_to_exec(template: u32) {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(0)
        .build()
        .unwrap();
    assert_forked(&probe(&pool));
    signal(template, libc::SIGKILL);
    wait_until("the fork server dies", DEADLINE, || !alive(template));
    // A pool that execs its workers never asks the template for one; it
    // still reaps the dead one, so that it does not stay a zombie.
    let execs = ProcessPool::builder()
        .workers(1)
        .spawn_mode(SpawnMode::Exec)
        .build()
        .unwrap();
    assert_execd(&probe(&execs));
    assert!(
        !children().contains(&template),
        "a pool that execs reaped the dead fork server"
    );
    drop(execs);
    // The worker it forked is the parent's and lives on.
    assert_forked(&probe(&pool));
    // Its replacement cannot come from the dead template: it is exec'd.
    let e = join(
        pool.submit(Crash {
            how: How::Abort,
            wait: false,
        })
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::WorkerLost(signal_of(How::Abort)));
    assert_execd(&probe(&pool));
    assert_eq!(
        concur_procs::__private::fork_server_pid(),
        None,
        "a failed fork server is not used again"
    );
    // New pools exec too.
    let other = ProcessPool::builder().workers(1).build().unwrap();
    assert_execd(&probe(&other));
    drop((pool, other));
    assert!(
        !children().contains(&template),
        "the dead fork server was reaped"
    );
}

/// Run as a child of `parent_death`: a pool of 2 from the fork server, one
/// worker busy; prints the pids (the fork server's, its spare's, the
/// workers'), then waits to be killed.
fn parent_role() -> ! {
    let template = concur_procs::__private::fork_server_pid().expect("a fork server");
    let p = ProcessPool::builder().workers(2).build().unwrap();
    let busy = p.submit(Sleep { ms: 600_000 }).unwrap();
    busy.recv_timeout(DEADLINE).expect("busy task started");
    let pids: Vec<String> = p
        .worker_pids()
        .into_iter()
        .map(|p| p.unwrap().to_string())
        .collect();
    wait_until("a spare is forked", DEADLINE, || spares().len() == 1);
    println!("PIDS {template} {} {}", spares()[0], pids.join(" "));
    std::thread::sleep(DEADLINE);
    eprintln!("the parent role was not killed");
    std::process::exit(1);
}

fn parent_death() {
    let (mut child, line, reader) = spawn_reporting(
        Command::new(std::env::current_exe().unwrap()).env(ROLE, "parent"),
        "PIDS ",
    );
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let all_alive = pids.iter().all(|&p| alive(p));
    child.kill().unwrap(); // SIGKILL, before any assertion can leave it running
    child.wait().unwrap();
    assert_eq!(pids.len(), 4, "fork server, spare and two workers: {line}");
    assert!(all_alive);
    for &pid in &pids {
        wait_until(
            &format!("process {pid} of the killed parent exits"),
            Duration::from_secs(10),
            || !alive(pid),
        );
    }
    reader.join().unwrap();
}

/// Run as a child of `stuck`: stops its own fork server, so that a start
/// waits for an answer that never comes.
fn stuck_role() -> ! {
    let template = concur_procs::__private::fork_server_pid().expect("a fork server");
    signal(template, libc::SIGSTOP);
    let e = ProcessPool::builder()
        .workers(1)
        .start_timeout(Duration::from_secs(1))
        .build()
        .expect_err("a start waiting on a stopped fork server fails");
    assert_eq!(e.kind(), &ErrorKind::Spawn, "{e:?}");
    let text = format!("{e:?}");
    assert!(
        text.contains("the fork server did not answer") && !text.contains("worker broke"),
        "{text}"
    );
    assert_eq!(concur_procs::__private::fork_server_pid(), None);
    assert!(
        !children().contains(&template),
        "the stuck fork server was reaped"
    );
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_execd(&probe(&pool));
    drop(pool);
    assert_eq!(children(), Vec::<u32>::new(), "children left behind");
    std::process::exit(0);
}

fn stuck() {
    let out = common::output_within(
        Command::new(std::env::current_exe().unwrap()).env(ROLE, "stuck"),
        "the stuck role",
    );
    assert!(
        out.status.success(),
        "the stuck role failed: {:?}\n{}",
        out.status,
        out.stderr
    );
}

/// A copy of this process made by `fork` (no exec) is not the template's
/// parent: workers the template forked for it would be ours, not its. It
/// builds its pool with exec'd workers, its own children.
fn a_forked_copy_execs() {
    // SAFETY: the child runs only the code below and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let ok = std::panic::catch_unwind(|| {
            assert_eq!(concur_procs::__private::fork_server_pid(), None);
            let pool = ProcessPool::builder().workers(1).build().unwrap();
            assert_execd(&probe(&pool));
        })
        .is_ok();
        // SAFETY: ends the forked child without the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let child = child as u32;
    wait_until("the forked copy finishes", DEADLINE, || !alive(child));
    let mut status = 0;
    // SAFETY: our own child, a valid out-pointer.
    assert_eq!(
        unsafe { libc::waitpid(child as i32, &mut status, 0) },
        child as i32
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked copy failed: status {status}"
    );
}
