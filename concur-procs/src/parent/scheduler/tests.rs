//! The scheduler's decisions, driven by hand with a fake clock and fake
//! progress words: no process, no thread, no sleep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use concur_core::{Admission, Completion, ErrorKind, Permit, TaskError, TaskId, WorkerExit};

use super::*;

/// Progress words by worker, and the workers whose process is stopped.
#[derive(Default)]
struct FakeProbe(HashMap<WorkerId, Progress>, Vec<WorkerId>);

impl FakeProbe {
    /// A probe that shows worker `w` with progress `p`.
    fn of(w: WorkerId, p: Progress) -> Self {
        FakeProbe(HashMap::from([(w, p)]), Vec::new())
    }
}

impl Probe for FakeProbe {
    fn progress(&self, w: WorkerId) -> Progress {
        self.0.get(&w).copied().unwrap_or_default()
    }
    fn can_run(&self, w: WorkerId) -> bool {
        !self.1.contains(&w)
    }
}

fn rules() -> Rules {
    Rules {
        workers: 1,
        timeout: None,
        unresponsive: None,
        retries: 0,
        max_tasks: None,
        max_crashes: 100,
        crash_window: Duration::from_secs(10),
        depth: 16,
        adaptive: false,
    }
}

/// Room for one task in a queue of its own (the scheduler does not look at it).
fn permit() -> Permit {
    Admission::new(1).acquire(1).unwrap()
}

fn single() -> (Unit, Completion) {
    let c = Completion::new(permit(), None);
    let u = Unit::new(c.id(), Sink::Single(c.clone()), "t", Body::Empty);
    (u, c)
}

fn singles(n: usize) -> (Vec<Unit>, Vec<Completion>) {
    (0..n).map(|_| single()).unzip()
}

/// A scheduler with one ready worker (id returned).
fn with_worker(rules: Rules, now: Instant) -> (Scheduler, WorkerId) {
    let mut s = Scheduler::new(rules);
    let w = ready(&mut s, now);
    (s, w)
}

/// A new worker ready in slot 0 (the first, or a replacement); what it was
/// given is in its `in_flight`.
fn ready(s: &mut Scheduler, now: Instant) -> WorkerId {
    let w = s.next_worker_id();
    let _ = s.on_ready(w, 0, now);
    w
}

/// A scheduler with one ready worker and `n` units submitted to it.
fn loaded(rules: Rules, n: usize, now: Instant) -> (Scheduler, WorkerId, Vec<Completion>) {
    let (mut s, w) = with_worker(rules, now);
    let (units, cs) = singles(n);
    let _ = s.submit(units, now).unwrap();
    (s, w, cs)
}

fn running(id: TaskId, started: Instant) -> Progress {
    Progress {
        running: id.0,
        started: Some(started),
        received: 0,
        seq: 1,
        last_ended: 0,
        beat: 0,
    }
}

/// The finished results of `fx`, by handle id.
fn finished(fx: &Effects) -> HashMap<TaskId, Result<(), ErrorKind>> {
    fx.finish
        .iter()
        .map(|(sink, r)| {
            (
                sink.handle_id(),
                r.as_ref().map(|_| ()).map_err(|e| e.kind().clone()),
            )
        })
        .collect()
}

fn apply(fx: Effects) {
    for (sink, r) in fx.finish {
        sink.finish(r);
    }
}

#[test]
fn units_go_to_the_ready_worker_in_order() {
    let now = Instant::now();
    let (mut s, w) = with_worker(rules(), now);
    let (units, cs) = singles(3);
    let fx = s.submit(units, now).unwrap();
    assert_eq!(fx.touched, vec![w]);
    assert_eq!(
        run_ids(&s.workers[&w].outgoing),
        cs.iter().map(Completion::id).collect::<Vec<_>>()
    );
}

/// The units that run frames carry, in order.
fn run_ids(outgoing: &[Out]) -> Vec<TaskId> {
    outgoing
        .iter()
        .flat_map(|o| match o {
            Out::Run { id, .. } => vec![*id],
            Out::RunGroup { units, .. } => units.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Small tasks submitted alone and given to a worker at once travel in
/// one frame, yet each keeps its own place in the pipeline (a worker
/// takes `depth` of them, not `depth` frames of them).
#[test]
fn small_single_tasks_given_at_once_share_one_frame() {
    let now = Instant::now();
    let mut r = rules();
    r.depth = 4;
    let (mut s, w) = with_worker(r, now);
    let (units, cs) = singles(6);
    let _ = s.submit(units, now).unwrap();
    let out = &s.workers[&w].outgoing;
    assert_eq!(out.len(), 1, "one frame: {out:?}");
    assert!(matches!(&out[0], Out::RunGroup { units, .. } if units.len() == 4));
    assert_eq!(
        run_ids(out),
        cs[..4].iter().map(Completion::id).collect::<Vec<_>>()
    );
    // Each result frees one place: the next task goes out alone.
    s.workers.get_mut(&w).unwrap().outgoing.clear();
    apply(s.on_done(w, cs[0].id(), Ok(Body::Empty), now));
    assert_eq!(run_ids(&s.workers[&w].outgoing), vec![cs[4].id()]);
}

/// A task with caller messages to follow its run frame, or a large input,
/// travels in a frame of its own.
#[test]
fn tasks_with_messages_or_large_inputs_travel_alone() {
    let now = Instant::now();
    let (mut s, w) = with_worker(rules(), now);
    let (mut units, cs) = singles(4);
    units[1].down.push(vec![1, 2, 3]);
    units[2].input = Arc::new(Body::inline(vec![0; GROUP_BYTES + 1]));
    let _ = s.submit(units, now).unwrap();
    let kinds: Vec<String> = s.workers[&w]
        .outgoing
        .iter()
        .map(|o| match o {
            Out::Run { .. } => "run".to_owned(),
            Out::RunGroup { units, .. } => format!("group{}", units.len()),
            Out::Deliver { .. } => "deliver".to_owned(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["run", "run", "deliver", "run", "run"]);
    assert_eq!(
        run_ids(&s.workers[&w].outgoing),
        cs.iter().map(Completion::id).collect::<Vec<_>>()
    );
}

#[test]
fn a_unit_cancelled_while_queued_is_never_sent() {
    let now = Instant::now();
    let mut s = Scheduler::new(rules());
    let (u, c) = single();
    let _ = s.submit(vec![u], now).unwrap();
    c.finish(Err(ErrorKind::Cancelled.into()));
    let w = ready(&mut s, now);
    assert!(s.workers[&w].outgoing.is_empty());
    assert!(s.is_idle());
}

/// 7.7: tasks sent to a worker that died before running them are not blamed.
#[test]
fn waiting_units_of_a_dead_worker_are_sent_again_at_no_cost() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 3, now);
    let fx = s.on_exit(w, WorkerExit::Signal(9), Progress::default(), now);
    assert!(fx.finish.is_empty(), "an innocent task was failed");
    assert_eq!(fx.start, vec![0]);
    assert!(cs.iter().all(|c| !c.is_done()));
    // The replacement gets all three.
    let w2 = ready(&mut s, now);
    assert_eq!(s.workers[&w2].in_flight.len(), 3);
}

/// Only the unit the progress word names is blamed; a unit waiting behind
/// it is sent again at no cost.
#[test]
fn only_the_running_unit_is_blamed() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 3, now);
    let fx = s.on_exit(w, WorkerExit::Signal(6), running(cs[0].id(), now), now);
    let done = finished(&fx);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        done[&cs[0].id()],
        Err(ErrorKind::WorkerLost(WorkerExit::Signal(6)))
    );
    let w2 = ready(&mut s, now);
    assert_eq!(s.workers[&w2].in_flight.len(), 2, "the two waiting ones");
}

/// A unit the worker took before the one it ran had run too: its result was
/// held back and died with the worker. Running it again spends a retry, so
/// with `retries(0)` it fails (it must not run twice) with a note saying it
/// ran; the blamed unit fails as a crash, the one waiting behind is resent.
#[test]
fn a_unit_whose_held_result_died_with_its_worker_spends_a_retry() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 3, now);
    let fx = s.on_exit(w, WorkerExit::Signal(9), running(cs[1].id(), now), now);
    let lost = fx
        .finish
        .iter()
        .find(|(sink, _)| sink.handle_id() == cs[0].id())
        .map(|(_, r)| r.as_ref().map(drop).unwrap_err().clone())
        .expect("the unit that ran before is not run again");
    assert_eq!(lost.kind(), &ErrorKind::WorkerLost(WorkerExit::Signal(9)));
    let note = std::error::Error::source(&lost)
        .expect("a note")
        .to_string();
    assert!(note.contains("the task ran"), "{note}");
    let done = finished(&fx);
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.contains_key(&cs[1].id()), "the running one is blamed");
    let w2 = ready(&mut s, now);
    assert_eq!(s.workers[&w2].in_flight.len(), 1, "only the waiting one");
}

/// With `retries(1)` a unit whose held result was lost runs once more; a
/// second loss fails it: `retries(n)` bounds how often a task runs. A unit
/// whose worker was killed by the pool (a timeout elsewhere) counts too.
#[test]
fn held_results_lost_twice_fail_after_one_retry() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 1;
    let (mut s, w, cs) = loaded(r, 2, now);
    // The pool killed the worker while cs[1] (no longer ours) ran; cs[0]
    // had ended before it, its result held back.
    let ended = Progress {
        running: 999,
        started: Some(now),
        last_ended: cs[0].id().0,
        beat: 0,
        seq: 3,
        received: 2,
    };
    let fx = s.on_exit(w, WorkerExit::Signal(9), ended, now);
    assert!(fx.finish.is_empty(), "first loss: run again");
    let w2 = ready(&mut s, now);
    // It goes alone: the unit that never ran waits until it is done.
    let sent: Vec<_> = s.workers[&w2].in_flight.iter().map(|u| u.id).collect();
    assert_eq!(sent, vec![cs[0].id()]);
    let fx = s.on_exit(w2, WorkerExit::Signal(9), ended, now);
    let done = finished(&fx);
    assert!(
        matches!(done.get(&cs[0].id()), Some(Err(ErrorKind::WorkerLost(_)))),
        "second loss fails it: {done:?}"
    );
    assert!(!done.contains_key(&cs[1].id()), "cs[1] never ran");
}

/// Retry semantics: run again up to `retries` times, then quarantine.
#[test]
fn the_running_unit_is_retried_then_quarantined() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 2;
    let (mut s, mut w) = with_worker(r, now);
    let (u, c) = single();
    let _ = s.submit(vec![u], now).unwrap();
    for death in 1..=3u32 {
        let fx = s.on_exit(w, WorkerExit::Signal(9), running(c.id(), now), now);
        if death <= 2 {
            assert!(fx.finish.is_empty(), "death {death}: failed too early");
            w = ready(&mut s, now);
            assert_eq!(
                s.workers[&w].in_flight.len(),
                1,
                "death {death}: not resent"
            );
        } else {
            let (_, r) = fx.finish.into_iter().next().expect("quarantined");
            let e = r.unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::WorkerLost(WorkerExit::Signal(9)));
            let note = std::error::Error::source(&e).expect("a note").to_string();
            assert!(note.contains("3 worker deaths"), "{note}");
        }
    }
}

/// The restart limit counts only deaths that failed work.
#[test]
fn a_kill_storm_whose_tasks_succeed_on_retry_does_not_fail_the_pool() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 1;
    r.max_crashes = 1;
    let (mut s, mut w) = with_worker(r, now);
    for _ in 0..20 {
        let (u, c) = single();
        let _ = s.submit(vec![u], now).unwrap();
        // Killed once while running it; the retry succeeds.
        let fx = s.on_exit(w, WorkerExit::Signal(9), running(c.id(), now), now);
        assert!(fx.finish.is_empty());
        w = ready(&mut s, now);
        let fx = s.on_done(w, c.id(), Ok(Body::Empty), now);
        apply(fx);
        assert!(c.is_done());
    }
    assert!(s.refusal().is_none(), "the pool failed");
}

/// 7.1: once the pool fails, nothing waits for a worker that never comes.
#[test]
fn pool_failure_fails_queued_and_requeued_work() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 3;
    r.max_crashes = 0;
    r.depth = 2;
    let (mut s, w, cs) = loaded(r, 5, now);
    // Two sent, three queued. The running one is killed for the 4th time.
    for _ in 0..3 {
        s.workers.get_mut(&w).unwrap().in_flight[0].deaths += 1;
    }
    let fx = s.on_exit(w, WorkerExit::Signal(6), running(cs[0].id(), now), now);
    assert!(fx.start.is_empty(), "a failed pool starts no worker");
    let done = finished(&fx);
    assert_eq!(done.len(), 5, "every task ends: {done:?}");
    assert!(matches!(done[&cs[0].id()], Err(ErrorKind::WorkerLost(_))));
    for c in &cs[1..] {
        assert!(matches!(done[&c.id()], Err(ErrorKind::PoolFailed { .. })));
    }
    assert!(s.is_idle());
    assert!(s.submit(singles(1).0, now).is_err());
}

/// 7.4: a worker that stops (SIGSTOP) before it starts its task still
/// times the task out (with or without the unresponsive check).
#[test]
fn a_stopped_worker_times_out_the_task_waiting_on_it() {
    for unresponsive in [None, Some(Duration::from_secs(10))] {
        let t0 = Instant::now();
        let mut r = rules();
        r.timeout = Some(Duration::from_secs(1));
        r.unresponsive = unresponsive;
        let (mut s, w) = with_worker(r, t0);
        let (u, c) = single();
        let fx = s.submit(vec![u], t0).unwrap();
        assert!(fx.arm);
        // It never starts anything, and cannot run.
        let probe = FakeProbe(HashMap::new(), vec![w]);
        let (fx, next) = s.on_tick(t0 + Duration::from_millis(500), &probe);
        assert!(fx.kill.is_empty());
        assert!(next.is_some_and(|n| n <= t0 + Duration::from_secs(1)));
        let (fx, _) = s.on_tick(t0 + Duration::from_secs(1), &probe);
        assert_eq!(fx.kill, vec![w]);
        assert_eq!(
            finished(&fx)[&c.id()],
            Err(ErrorKind::TimedOut {
                after: Duration::from_secs(1)
            })
        );
    }
}

/// A worker that can run but has not started its task (a loaded machine)
/// does not time it out: the task has not started. The unresponsive
/// check moves it if the worker never does; without that check, the
/// timeout still bounds the wait.
#[test]
fn a_runnable_worker_slow_to_start_does_not_time_its_task_out() {
    let t0 = Instant::now();
    let mut r = rules();
    r.timeout = Some(Duration::from_secs(1));
    r.unresponsive = Some(Duration::from_secs(10));
    let (mut s, w) = with_worker(r, t0);
    let (u, c) = single();
    let _ = s.submit(vec![u], t0).unwrap();
    let probe = FakeProbe::default();
    let (fx, next) = s.on_tick(t0 + Duration::from_secs(2), &probe);
    assert!(
        fx.kill.is_empty() && fx.finish.is_empty(),
        "timed out unstarted"
    );
    assert!(!c.is_done());
    // It looks again well before the timeout would end a task started now.
    assert!(next.is_some_and(|n| n <= t0 + Duration::from_millis(2250)));
    // It starts, then runs over its timeout: that one counts.
    let probe = FakeProbe::of(w, running(c.id(), t0 + Duration::from_secs(3)));
    let (fx, _) = s.on_tick(t0 + Duration::from_secs(4), &probe);
    assert_eq!(fx.kill, vec![w]);
    assert!(matches!(
        finished(&fx)[&c.id()],
        Err(ErrorKind::TimedOut { .. })
    ));
}

/// 7.4: each task of a batch has the whole timeout from its own start.
#[test]
fn each_unit_is_timed_from_its_own_start() {
    let t0 = Instant::now();
    let mut r = rules();
    r.timeout = Some(Duration::from_secs(1));
    let (mut s, w) = with_worker(r, t0);
    let (units, cs) = singles(3);
    let _ = s.submit(units, t0).unwrap();
    // The first finished after 0.9 s; the second started then.
    apply(s.on_done(
        w,
        cs[0].id(),
        Ok(Body::Empty),
        t0 + Duration::from_millis(900),
    ));
    let mut probe = FakeProbe::default();
    probe
        .0
        .insert(w, running(cs[1].id(), t0 + Duration::from_millis(900)));
    let (fx, next) = s.on_tick(t0 + Duration::from_millis(1200), &probe);
    assert!(fx.kill.is_empty(), "timed from the batch start");
    assert_eq!(next, Some(t0 + Duration::from_millis(1900)));
    let (fx, _) = s.on_tick(t0 + Duration::from_millis(1900), &probe);
    let done = finished(&fx);
    assert_eq!(done.len(), 1);
    assert!(matches!(done[&cs[1].id()], Err(ErrorKind::TimedOut { .. })));
}

/// 7.9: a kill the pool decided is reported as its cause, and the death
/// that follows blames nobody and counts nothing.
#[test]
fn a_timeout_kill_is_never_a_lost_worker() {
    let t0 = Instant::now();
    let mut r = rules();
    r.timeout = Some(Duration::from_secs(1));
    r.max_crashes = 0;
    let (mut s, w) = with_worker(r, t0);
    let (units, cs) = singles(2);
    let _ = s.submit(units, t0).unwrap();
    let probe = FakeProbe::of(w, running(cs[0].id(), t0));
    let (fx, _) = s.on_tick(t0 + Duration::from_secs(2), &probe);
    apply(fx);
    let fx = s.on_exit(
        w,
        WorkerExit::Signal(9),
        running(cs[0].id(), t0),
        t0 + Duration::from_secs(2),
    );
    assert!(fx.finish.is_empty(), "the waiting task must be resent");
    assert_eq!(fx.start, vec![0]);
    assert!(s.refusal().is_none());
    assert!(cs[0].is_done() && !cs[1].is_done());
}

/// 7.9: `shutdown_now` cancels; the kills that follow are not losses.
#[test]
fn shutdown_now_cancels_everything_then_kills() {
    let now = Instant::now();
    let mut r = rules();
    r.depth = 1;
    let (mut s, w, cs) = loaded(r, 3, now);
    let fx = s.close(true);
    assert_eq!(fx.kill, vec![w]);
    let done = finished(&fx);
    assert_eq!(done.len(), 3);
    assert!(done.values().all(|r| r == &Err(ErrorKind::Cancelled)));
    apply(fx);
    let fx = s.on_exit(w, WorkerExit::Signal(9), running(cs[0].id(), now), now);
    assert!(fx.finish.is_empty() && fx.start.is_empty());
}

#[test]
fn cancel_kills_a_running_unit_and_recalls_a_waiting_one() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 2, now);
    s.workers.get_mut(&w).unwrap().outgoing.clear();
    let probe = FakeProbe::of(w, running(cs[0].id(), now));
    let fx = s.cancel(cs[1].id(), &probe, now);
    assert!(fx.kill.is_empty());
    assert!(matches!(s.workers[&w].outgoing[..], [Out::Cancel { .. }]));
    let fx = s.cancel(cs[0].id(), &probe, now);
    assert_eq!(fx.kill, vec![w]);
}

/// 8.5: a worker that could not receive a task's input blames that task.
#[test]
fn a_worker_that_cannot_receive_an_input_blames_that_task() {
    let now = Instant::now();
    let (mut s, w) = with_worker(rules(), now);
    // Three frames (each event's frames are sent before the next event,
    // as the shell does), so `received` tells them apart.
    let (units, cs) = singles(3);
    for u in units {
        let _ = s.submit(vec![u], now).unwrap();
        s.workers.get_mut(&w).unwrap().outgoing.clear();
    }
    apply(s.on_done(w, cs[0].id(), Ok(Body::Empty), now));
    let p = Progress {
        running: 0,
        started: None,
        received: 1,
        seq: 2,
        last_ended: cs[0].id().0,
        beat: 0,
    };
    let fx = s.on_exit(w, WorkerExit::MemoryLimit, p, now);
    let done = finished(&fx);
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[&cs[1].id()],
        Err(ErrorKind::WorkerLost(WorkerExit::MemoryLimit))
    );
}

/// 8.1: an unreadable frame ends its worker and, with no retries, fails
/// the task it ran with the frame's error; the task behind it is resent.
#[test]
fn a_bad_frame_fails_the_running_task_and_kills_the_worker() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 2, now);
    let probe = FakeProbe::of(w, running(cs[0].id(), now));
    let e = TaskError::codec("frame", std::io::Error::other("garbage"));
    let fx = s.on_bad_frame(w, e, &probe);
    assert_eq!(fx.kill, vec![w]);
    assert!(fx.finish.is_empty(), "settled when the worker is gone");
    let fx = s.on_exit(w, WorkerExit::Signal(9), running(cs[0].id(), now), now);
    let done = finished(&fx);
    assert_eq!(done.len(), 1, "the other task is resent");
    assert!(matches!(done[&cs[0].id()], Err(ErrorKind::Codec { .. })));
    assert_eq!(fx.start, vec![0], "a replacement starts");
}

/// A bad frame read while a task runs may have been written by the task
/// before it: the blamed task runs again alone (it may be a bystander),
/// and fails with the frame's `Codec` error only when it breaks the
/// channel again past its retries; the task that ended before it and whose
/// result the kill took may have written the frame too: it is a suspect as
/// well, charged one run.
#[test]
fn a_bad_frame_blames_like_a_crash_and_retries_the_running_task() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 1;
    let (mut s, w) = with_worker(r, now);
    let (units, cs) = singles(3);
    for u in units {
        let _ = s.submit(vec![u], now).unwrap();
        s.workers.get_mut(&w).unwrap().outgoing.clear();
    }
    // cs[0] ended (its result held), cs[1] runs when the garbage is read.
    let mut probe = FakeProbe::default();
    let at_frame = Progress {
        running: cs[1].id().0,
        started: Some(now),
        received: 3,
        seq: 3,
        last_ended: cs[0].id().0,
        beat: 0,
    };
    probe.0.insert(w, at_frame);
    let garbage = || TaskError::codec("frame", std::io::Error::other("garbage"));
    let fx = s.on_bad_frame(w, garbage(), &probe);
    assert_eq!(fx.kill, vec![w]);
    assert!(fx.finish.is_empty());
    let fx = s.on_exit(w, WorkerExit::Signal(9), at_frame, now);
    assert!(
        finished(&fx).is_empty(),
        "everything runs again: {:?}",
        finished(&fx)
    );
    let queued: Vec<(TaskId, u32, u32)> = s
        .queue
        .iter()
        .map(|u| (u.id, u.deaths, u.lost_runs))
        .collect();
    assert_eq!(
        queued,
        vec![(cs[0].id(), 1, 0), (cs[1].id(), 1, 0), (cs[2].id(), 0, 0),]
    );
    // The blamed task breaks the channel again on a worker of its own:
    // its retries are spent, and it fails with the frame's cause.
    let w2 = s.next_worker_id();
    apply(s.on_ready(w2, 0, now));
    let suspect = s.workers[&w2]
        .in_flight
        .iter()
        .position(|u| u.id == cs[1].id());
    if suspect.is_none() {
        // Not sent yet: it waits for an idle worker; finish what was sent.
        let ids: Vec<TaskId> = s.workers[&w2].in_flight.iter().map(|u| u.id).collect();
        for id in ids {
            apply(s.on_done(w2, id, Ok(Body::Empty), now));
        }
    }
    assert!(
        s.workers[&w2].in_flight.iter().all(|u| u.id == cs[1].id()),
        "a suspect runs alone"
    );
    let probe = FakeProbe::of(w2, running(cs[1].id(), now));
    apply(s.on_bad_frame(w2, garbage(), &probe));
    let fx = s.on_exit(w2, WorkerExit::Signal(9), running(cs[1].id(), now), now);
    let done = finished(&fx);
    assert!(
        matches!(done[&cs[1].id()], Err(ErrorKind::Codec { .. })),
        "{done:?}"
    );
}

/// 7.6: in a batch only the failing task fails; the batch still resolves.
#[test]
fn one_failing_task_of_a_batch_fails_alone() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 0;
    let (mut s, w) = with_worker(r, now);
    let c = Completion::new(permit(), None);
    let batch = Batch::new(c.clone(), 3);
    let units: Vec<Unit> = (0..3)
        .map(|i| {
            Unit::new(
                TaskId::next(),
                Sink::Item(batch.clone(), i),
                "t",
                Body::Empty,
            )
        })
        .collect();
    let ids: Vec<TaskId> = units.iter().map(|u| u.id).collect();
    let _ = s.submit(units, now).unwrap();
    let ok = |v: u32| Ok(Body::Inline(concur_core::codec::encode(&v, "t").unwrap()));
    apply(s.on_done(w, ids[0], ok(10), now));
    let fx = s.on_exit(w, WorkerExit::Signal(11), running(ids[1], now), now);
    apply(fx);
    let w2 = ready(&mut s, now);
    apply(s.on_done(w2, ids[2], ok(30), now));
    assert!(c.is_done());
    let h = concur_core::BatchHandle::<Dummy>::new(&c, 3);
    let got = h.join();
    assert_eq!(got[0].as_ref().unwrap(), &10);
    assert!(matches!(
        got[1].as_ref().unwrap_err().kind(),
        ErrorKind::WorkerLost(_)
    ));
    assert_eq!(got[2].as_ref().unwrap(), &30);
}

#[test]
fn recycling_starts_a_replacement_and_retires_the_worker() {
    let now = Instant::now();
    let mut r = rules();
    r.max_tasks = Some(2);
    let (mut s, w) = with_worker(r, now);
    let fx = s.submit(singles(2).0, now).unwrap();
    assert_eq!(fx.start, vec![0]);
    assert!(matches!(s.workers[&w].outgoing.last(), Some(Out::Shutdown)));
    // A clean exit after retiring blames nobody and starts nothing more.
    let fx = s.on_exit(w, WorkerExit::Code(0), Progress::default(), now);
    assert!(fx.start.is_empty());
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Dummy;

impl concur_core::Task for Dummy {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "scheduler::tests::Dummy";
    fn run(self, _cx: &mut concur_core::TaskContext<'_, Self>) -> u32 {
        0
    }
}

/// Starts that keep failing slowly (each up to the start timeout) fail
/// the pool even though they never fill the crash window.
#[test]
fn slow_start_failures_in_a_row_fail_the_pool() {
    let t0 = Instant::now();
    let mut r = rules();
    r.max_crashes = 2;
    r.crash_window = Duration::from_secs(1);
    let mut s = Scheduler::new(r);
    let (u, c) = single();
    let _ = s.submit(vec![u], t0).unwrap();
    let why = TaskError::new(ErrorKind::Spawn);
    for i in 0..3u32 {
        let at = t0 + Duration::from_secs(10) * i;
        let fx = s.on_start_failed(0, &why, at);
        if i < 2 {
            assert_eq!(fx.start_later, vec![0], "attempt {i}");
        } else {
            assert!(fx.start_later.is_empty());
            assert!(matches!(
                finished(&fx)[&c.id()],
                Err(ErrorKind::PoolFailed { .. })
            ));
        }
    }
}

/// A graceful stop that finds starts failing fails the queued units with
/// the last start's error in their reason (not a bare "spawn").
#[test]
fn a_drain_after_a_failed_start_names_its_error() {
    let t0 = Instant::now();
    let mut r = rules();
    r.max_crashes = u32::MAX;
    let mut s = Scheduler::new(r);
    let (u, c) = single();
    let _ = s.submit(vec![u], t0).unwrap();
    let why = TaskError::io(std::io::Error::other("no more descriptors"));
    let _ = s.on_start_failed(0, &why, t0);
    let fx = s.drain();
    let (_, result) = fx
        .finish
        .iter()
        .find(|(sink, _)| sink.handle_id() == c.id())
        .expect("the stranded unit finishes");
    let Err(e) = result else {
        panic!("the stranded unit fails");
    };
    let ErrorKind::PoolFailed { reason } = e.kind() else {
        panic!("{e:?}");
    };
    assert!(reason.contains("no more descriptors"), "{reason}");
}

/// 8.4: a unit whose frame cannot be sent fails alone, and the place it
/// held goes to the next queued unit (nothing else would dispatch it).
#[test]
fn an_unsent_unit_fails_alone_and_frees_its_place() {
    let now = Instant::now();
    let mut r = rules();
    r.depth = 1;
    let (mut s, w, cs) = loaded(r, 2, now);
    s.workers.get_mut(&w).unwrap().outgoing.clear();
    let e = TaskError::io(std::io::Error::from_raw_os_error(libc::EMFILE));
    let fx = s.on_unsent(w, &[cs[0].id()], &e, &FakeProbe::default(), now);
    assert!(fx.kill.is_empty(), "it never ran: nothing to stop");
    assert_eq!(finished(&fx)[&cs[0].id()], Err(ErrorKind::Io));
    assert!(
        s.workers[&w]
            .outgoing
            .iter()
            .any(|o| matches!(o, Out::Run { id, .. } if *id == cs[1].id())),
        "the next unit was not sent"
    );
}

/// 7.11: when the result router cannot go on, every task fails at once and
/// every worker is stopped; nothing waits for results that cannot come.
#[test]
fn a_failed_router_fails_everything_at_once() {
    let now = Instant::now();
    let mut r = rules();
    r.depth = 1;
    let (mut s, w, cs) = loaded(r, 3, now);
    let fx = s.fail_now("the result router failed".into());
    assert_eq!(fx.kill, vec![w]);
    let done = finished(&fx);
    assert_eq!(done.len(), 3);
    for c in &cs {
        assert!(matches!(done[&c.id()], Err(ErrorKind::PoolFailed { .. })));
    }
    assert!(s.is_idle());
}

/// A unit that ends its worker after it ran (it closed the worker's
/// channel, so its result never arrives) is blamed, retried, then
/// quarantined: never sent again for ever.
#[test]
fn a_unit_whose_result_never_arrives_is_blamed() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 1;
    let (mut s, mut w, cs) = loaded(r, 2, now);
    let ended = Progress {
        last_ended: cs[0].id().0,
        seq: 2,
        ..Progress::default()
    };
    let fx = s.on_exit(w, WorkerExit::Code(99), ended, now);
    assert!(fx.finish.is_empty(), "first death: retried");
    w = ready(&mut s, now);
    let fx = s.on_exit(w, WorkerExit::Code(99), ended, now);
    let done = finished(&fx);
    assert_eq!(done.len(), 1, "only that unit: {done:?}");
    assert!(matches!(done[&cs[0].id()], Err(ErrorKind::WorkerLost(_))));
}

/// An unreadable frame when nothing runs blames the unit that ended last
/// (the frame may be its result), not an innocent unit still waiting.
#[test]
fn a_bad_frame_between_units_blames_the_last_one_not_a_waiting_one() {
    let now = Instant::now();
    let (mut s, w, cs) = loaded(rules(), 2, now);
    let probe = FakeProbe::of(
        w,
        Progress {
            last_ended: cs[0].id().0,
            ..Progress::default()
        },
    );
    let e = TaskError::codec("frame", std::io::Error::other("garbage"));
    apply(s.on_bad_frame(w, e.clone(), &probe));
    let ended = Progress {
        last_ended: cs[0].id().0,
        ..Progress::default()
    };
    let fx = s.on_exit(w, WorkerExit::Signal(9), ended, now);
    let done = finished(&fx);
    assert_eq!(done.len(), 1);
    assert!(matches!(done[&cs[0].id()], Err(ErrorKind::Codec { .. })));
    // Nothing ran or ended here: nobody is failed, the worker is ended.
    let (mut s, w) = with_worker(rules(), now);
    let _ = s.submit(singles(1).0, now).unwrap();
    let fx = s.on_bad_frame(w, e, &FakeProbe::default());
    assert!(fx.finish.is_empty());
    assert_eq!(fx.kill, vec![w]);
    let fx = s.on_exit(w, WorkerExit::Signal(9), Progress::default(), now);
    assert!(fx.finish.is_empty(), "the waiting unit is resent");
}

/// A start that failed because the process ended with `exit`.
fn start_exit(exit: WorkerExit) -> TaskError {
    crate::error::SpawnError::Exited(exit).into()
}

/// Fails `bad` starts of slot 0 at `t`, then lets one start succeed;
/// `rounds` times. Returns the pool failure's reason, if the pool failed.
fn starts(s: &mut Scheduler, why: &TaskError, bad: u32, rounds: u32, t: Instant) -> Option<String> {
    for _ in 0..rounds {
        for _ in 0..bad {
            let _ = s.on_start_failed(0, why, t);
            if let Some(reason) = &s.failed {
                return Some(reason.clone());
            }
        }
        let w = ready(s, t);
        // It is killed in turn: the slot starts again.
        s.slots[0] = None;
        s.workers.remove(&w);
    }
    None
}

fn storm_rules() -> Rules {
    let mut r = rules();
    r.max_crashes = 4;
    r.crash_window = Duration::from_secs(10);
    r
}

/// SECURITY.md: outside kills (SIGKILL, SIGTERM) of starting workers,
/// with good starts between them, never fail the pool, however many fall
/// within the crash window.
#[test]
fn outside_kills_of_starting_workers_between_good_starts_never_fail_the_pool() {
    let t0 = Instant::now();
    for sig in [libc::SIGKILL, libc::SIGTERM] {
        let mut s = Scheduler::new(storm_rules());
        let why = start_exit(WorkerExit::Signal(sig));
        assert_eq!(starts(&mut s, &why, 3, 100, t0), None, "signal {sig}");
    }
}

/// Starts that are all killed, with no good start between them, still
/// fail the pool (the in-a-row rule), and the reason names the kill.
#[test]
fn starts_killed_every_time_still_fail_the_pool() {
    let mut s = Scheduler::new(storm_rules());
    let why = start_exit(WorkerExit::Signal(libc::SIGKILL));
    let reason = starts(&mut s, &why, 100, 1, Instant::now()).expect("the pool fails");
    assert!(
        reason.contains("5 worker starts failed in a row"),
        "{reason}"
    );
    assert!(reason.contains("killed by SIGKILL (signal 9)"), "{reason}");
}

/// A worker binary that cannot start (it exits at once) fails the pool
/// through the crash window even with good starts between its failures.
#[test]
fn a_worker_that_never_starts_still_fails_the_pool() {
    let mut s = Scheduler::new(storm_rules());
    let why = start_exit(WorkerExit::Code(101));
    let reason = starts(&mut s, &why, 1, 100, Instant::now()).expect("the pool fails");
    assert!(reason.contains("within 10s"), "{reason}");
    assert!(reason.contains("exited with code 101"), "{reason}");
}

/// An initializer that aborts every time (SIGABRT is the worker's own
/// crash, not an outside kill) still fails the pool.
#[test]
fn an_initializer_that_aborts_every_time_still_fails_the_pool() {
    let mut s = Scheduler::new(storm_rules());
    let why = start_exit(WorkerExit::Signal(libc::SIGABRT));
    let reason = starts(&mut s, &why, 1, 100, Instant::now()).expect("the pool fails");
    assert!(reason.contains("killed by SIGABRT (signal 6)"), "{reason}");
}

/// A worker that ended itself because its channel to the living parent
/// broke (garbage on it, say): its task's error says so, not merely "exited
/// with code 95"; a plain SIGKILL says nothing of the kind.
#[test]
fn an_exit_on_a_broken_channel_keeps_that_cause() {
    use std::error::Error as _;
    let now = Instant::now();
    for (exit, broke) in [
        (WorkerExit::Code(sys::EXIT_CHANNEL_BROKE), true),
        (WorkerExit::Signal(libc::SIGKILL), false),
    ] {
        let (mut s, w) = with_worker(rules(), now);
        let (u, c) = single();
        let _ = s.submit(vec![u], now).unwrap();
        let fx = s.on_exit(w, exit, running(c.id(), now), now);
        let (_, result) = fx.finish.into_iter().next().expect("the unit fails");
        let e = result.expect_err("an error");
        assert!(matches!(e.kind(), ErrorKind::WorkerLost(_)), "{e:?}");
        let source = e.source().map(|s| s.to_string()).unwrap_or_default();
        assert_eq!(
            source.contains("could not be read"),
            broke,
            "{exit:?}: {source}"
        );
    }
}

/// The adaptive depth: two tasks ahead until a worker's task length is
/// known, the full depth for tasks under a millisecond, four times it for
/// tasks under 50 µs (a burst of tiny tasks waits less on round trips).
#[test]
fn adaptive_depth_follows_task_length() {
    let depth_after = |took: Duration| {
        let now = Instant::now();
        let mut r = rules();
        r.adaptive = true;
        let (mut s, w, cs) = loaded(r, 200, now);
        assert_eq!(s.workers[&w].in_flight.len(), 2, "not yet measured");
        apply(s.on_done(w, cs[0].id(), Ok(Body::Empty), now + took));
        s.workers[&w].in_flight.len()
    };
    assert_eq!(depth_after(Duration::from_micros(10)), 16 * TINY_DEPTH);
    assert_eq!(depth_after(Duration::from_micros(200)), 16);
    assert_eq!(depth_after(Duration::from_millis(5)), 2);
}

/// Tiny tasks of a batch travel in groups that already carry many tasks
/// per place: they keep the plain depth in groups.
#[test]
fn tiny_batch_groups_keep_the_plain_depth() {
    let now = Instant::now();
    let mut r = rules();
    r.adaptive = true;
    let (mut s, w) = with_worker(r, now);
    let n = GROUP_UNITS * 40;
    let batch = Batch::new(Completion::new(permit(), None), n);
    let units: Vec<Unit> = (0..n)
        .map(|i| {
            Unit::new(
                TaskId::next(),
                Sink::Item(batch.clone(), i),
                "t",
                Body::Empty,
            )
        })
        .collect();
    let first = units[0].id;
    let _ = s.submit(units, now).unwrap();
    assert_eq!(s.workers[&w].open_groups, 2, "not yet measured");
    apply(s.on_done(w, first, Ok(Body::Empty), now + Duration::from_micros(10)));
    assert_eq!(s.workers[&w].open_groups, 16);
}

/// A unit that was running in a worker death goes alone to the
/// replacement, which takes nothing else until it is done: if it crashes
/// again, no other task's held result dies with it.
#[test]
fn a_suspect_runs_alone() {
    let now = Instant::now();
    let mut r = rules();
    r.retries = 2;
    let (mut s, w, cs) = loaded(r, 3, now);
    let _ = s.on_exit(w, WorkerExit::Signal(6), running(cs[0].id(), now), now);
    let w2 = ready(&mut s, now);
    let sent: Vec<_> = s.workers[&w2].in_flight.iter().map(|u| u.id).collect();
    assert_eq!(sent, vec![cs[0].id()], "the suspect, alone");
    assert_eq!(s.queue.len(), 2, "the others wait");
    // Its result arrives: the others follow.
    let fx = s.on_results(w2, vec![(cs[0].id(), Ok(Body::Empty))], now);
    apply(fx);
    let sent: Vec<_> = s.workers[&w2].in_flight.iter().map(|u| u.id).collect();
    assert_eq!(sent, vec![cs[1].id(), cs[2].id()]);
}

/// With no retries, a task whose result a bad-frame kill took fails with
/// `WorkerLost`, and its error says why (not that its worker died before
/// sending it); the task running when the frame was read fails with the
/// frame's `Codec` error.
#[test]
fn a_result_lost_to_a_bad_frame_says_so() {
    let now = Instant::now();
    let (mut s, w) = with_worker(rules(), now);
    let (units, cs) = singles(2);
    for u in units {
        let _ = s.submit(vec![u], now).unwrap();
        s.workers.get_mut(&w).unwrap().outgoing.clear();
    }
    let at_frame = Progress {
        running: cs[1].id().0,
        started: Some(now),
        received: 2,
        seq: 2,
        last_ended: cs[0].id().0,
        beat: 0,
    };
    let probe = FakeProbe::of(w, at_frame);
    let garbage = TaskError::codec("frame", std::io::Error::other("garbage"));
    apply(s.on_bad_frame(w, garbage, &probe));
    let fx = s.on_exit(w, WorkerExit::Signal(9), at_frame, now);
    let errors: HashMap<TaskId, String> = fx
        .finish
        .iter()
        .map(|(sink, r)| {
            let e = r.as_ref().expect_err("both fail");
            let source = std::error::Error::source(e).map(ToString::to_string);
            (
                sink.handle_id(),
                format!("{e}: {}", source.unwrap_or_default()),
            )
        })
        .collect();
    assert!(
        errors[&cs[0].id()].contains("could not be read before its result"),
        "{errors:?}"
    );
    assert!(
        errors[&cs[1].id()].contains("could not encode or decode"),
        "{errors:?}"
    );
}

fn watched(retries: u32, max_crashes: u32) -> Rules {
    let mut r = rules();
    r.unresponsive = Some(Duration::from_secs(4));
    r.retries = retries;
    r.max_crashes = max_crashes;
    r
}

fn beating(p: Progress, beat: u64) -> Progress {
    Progress { beat, ..p }
}

/// Issue 11 (stopped worker): a worker holding units whose heartbeat does
/// not move for the bound is killed; its death is settled like a crash
/// (the running unit spends its try and fails with the note, the waiting
/// one goes elsewhere at no cost) and never counts toward restart
/// intensity.
#[test]
fn a_worker_without_a_heartbeat_is_killed_and_settled_like_a_crash() {
    let t0 = Instant::now();
    let (mut s, w, cs) = loaded(watched(0, 0), 2, t0);
    let probe = FakeProbe::of(w, beating(running(cs[0].id(), t0), 7));
    let s1 = Duration::from_secs(1);
    let (fx, next) = s.on_tick(t0, &probe);
    assert!(fx.kill.is_empty());
    assert_eq!(next, Some(t0 + s1), "a quarter of the bound");
    for i in 1..4 {
        let (fx, _) = s.on_tick(t0 + s1 * i, &probe);
        assert!(fx.kill.is_empty(), "tick {i}");
    }
    let (fx, _) = s.on_tick(t0 + s1 * 4, &probe);
    assert_eq!(fx.kill, vec![w]);
    assert!(finished(&fx).is_empty(), "settled at its death");
    let fx = s.on_exit(
        w,
        WorkerExit::Signal(libc::SIGKILL),
        running(cs[0].id(), t0),
        t0 + s1 * 4,
    );
    assert_eq!(fx.start, vec![0], "replaced");
    let errors: Vec<_> = fx
        .finish
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert_eq!(errors.len(), 1, "only the running unit fails");
    assert_eq!(
        errors[0].kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGKILL))
    );
    assert!(
        format!("{:?}", errors[0]).contains("stopped responding"),
        "{:?}",
        errors[0]
    );
    // max_crashes 0: a counted failure would have failed the pool.
    let w2 = ready(&mut s, t0 + s1 * 4);
    assert_eq!(
        s.workers[&w2].in_flight.len(),
        1,
        "the waiting unit goes on"
    );
    assert!(s.submit(singles(1).0, t0 + s1 * 4).is_ok());
}

/// A worker judged unresponsive that died of its own accord before the
/// kill landed (a crash whose core dump outlasted the bound) is settled as
/// an ordinary crash: no "stopped responding" note, and it counts toward
/// the restart limit.
#[test]
fn an_unresponsive_worker_that_crashed_by_itself_is_a_crash() {
    let t0 = Instant::now();
    let (mut s, w, cs) = loaded(watched(0, 0), 1, t0);
    let probe = FakeProbe::of(w, beating(running(cs[0].id(), t0), 7));
    let s1 = Duration::from_secs(1);
    for i in 0..4 {
        let (fx, _) = s.on_tick(t0 + s1 * i, &probe);
        assert!(fx.kill.is_empty(), "tick {i}");
    }
    let (fx, _) = s.on_tick(t0 + s1 * 4, &probe);
    assert_eq!(fx.kill, vec![w]);
    let fx = s.on_exit(
        w,
        WorkerExit::Signal(libc::SIGSEGV),
        running(cs[0].id(), t0),
        t0 + s1 * 4,
    );
    let errors: Vec<_> = fx
        .finish
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert_eq!(
        errors[0].kind(),
        &ErrorKind::WorkerLost(WorkerExit::Signal(libc::SIGSEGV))
    );
    assert!(
        !format!("{:?}", errors[0]).contains("stopped responding"),
        "{:?}",
        errors[0]
    );
    // max_crashes 0: the counted crash failed the pool.
    assert!(s.submit(singles(1).0, t0 + s1 * 4).is_err());
}

/// A heartbeat that moves keeps a worker busy in one long unit alive.
#[test]
fn a_beating_worker_in_a_long_unit_is_not_killed() {
    let t0 = Instant::now();
    let (mut s, w, cs) = loaded(watched(0, 0), 1, t0);
    let mut probe = FakeProbe::default();
    for i in 0..40u32 {
        probe
            .0
            .insert(w, beating(running(cs[0].id(), t0), u64::from(i)));
        let (fx, next) = s.on_tick(t0 + Duration::from_secs(1) * i, &probe);
        assert!(fx.kill.is_empty(), "tick {i}");
        assert!(next.is_some());
    }
}

/// Issue 11: the parent's own check running much later than planned (the
/// parent was stopped with its workers, or starved) kills nobody: what it
/// saw before the gap proves nothing.
#[test]
fn a_late_check_of_a_stopped_parent_forgives_staleness() {
    let t0 = Instant::now();
    let (mut s, w, cs) = loaded(watched(0, 0), 1, t0);
    let mut probe = FakeProbe::of(w, beating(running(cs[0].id(), t0), 1));
    let (fx, _) = s.on_tick(t0, &probe);
    assert!(fx.kill.is_empty());
    // Stopped for a minute; the worker (stopped too) has not beaten since.
    let back = t0 + Duration::from_secs(60);
    let (fx, next) = s.on_tick(back, &probe);
    assert!(fx.kill.is_empty(), "forgiven");
    assert_eq!(next, Some(back + Duration::from_secs(1)));
    // Resumed together: it beats again, and is never killed.
    probe.0.insert(w, beating(running(cs[0].id(), t0), 2));
    let (fx, _) = s.on_tick(back + Duration::from_secs(1), &probe);
    assert!(fx.kill.is_empty());
    // A worker that stays stopped after the parent resumed is killed.
    for i in 2..=5u32 {
        let (fx, _) = s.on_tick(back + Duration::from_secs(1) * i, &probe);
        assert_eq!(fx.kill.is_empty(), i < 5, "tick {i}");
    }
}

/// A pool at work keeps the checker ticking: only the first unit sent to
/// an idle pool wakes it, not every unit.
#[test]
fn the_heartbeat_check_is_armed_once_per_busy_period() {
    let t0 = Instant::now();
    let (mut s, w) = with_worker(watched(0, 0), t0);
    let (u, c) = single();
    assert!(s.submit(vec![u], t0).unwrap().arm, "the first arms");
    let probe = FakeProbe::default();
    let (_, next) = s.on_tick(t0, &probe);
    assert!(next.is_some());
    apply(s.on_done(w, c.id(), Ok(Body::Empty), t0));
    let (u, c) = single();
    assert!(!s.submit(vec![u], t0).unwrap().arm, "still ticking");
    apply(s.on_done(w, c.id(), Ok(Body::Empty), t0));
    // A tick that sees work done since the last keeps ticking once more,
    // then the checker parks and the next unit arms it again.
    let (_, next) = s.on_tick(t0 + Duration::from_secs(1), &probe);
    assert!(next.is_some());
    let (_, next) = s.on_tick(t0 + Duration::from_secs(2), &probe);
    assert_eq!(next, None);
    let (u, _) = single();
    assert!(s.submit(vec![u], t0).unwrap().arm);
}

/// A scheduler of `n` ready workers (slots 0..n) whose tasks are known to
/// take `per_task`, the pool's and each worker's, with tasks packed onto at
/// most two awake workers while they are tiny (as on a 2-core machine).
fn measured_pool(n: usize, per_task: Duration, now: Instant) -> (Scheduler, Vec<WorkerId>) {
    let mut r = rules();
    r.workers = n;
    r.adaptive = true;
    let mut s = Scheduler::new(r);
    s.awake_cap = 2;
    let ws: Vec<WorkerId> = (0..n)
        .map(|slot| {
            let w = s.next_worker_id();
            let _ = s.on_ready(w, slot, now);
            s.workers.get_mut(&w).unwrap().per_task = Some(per_task);
            w
        })
        .collect();
    s.recent.add(per_task * 64, 64);
    (s, ws)
}

fn loads(s: &Scheduler, ws: &[WorkerId]) -> Vec<usize> {
    ws.iter().map(|w| s.workers[w].in_flight.len()).collect()
}

/// A burst of tiny tasks on a pool with more workers than cores goes to
/// workers already awake while they have pipeline room, and wakes an idle
/// one only while fewer than the cap are awake: the rest waits in the
/// queue rather than wake a process per task. Their replies refill the
/// same workers.
#[test]
fn a_burst_of_tiny_tasks_is_packed_onto_as_many_workers_as_cores() {
    let now = Instant::now();
    let (mut s, ws) = measured_pool(4, Duration::from_micros(1), now);
    let (units, cs) = singles(200);
    let fx = s.submit(units, now).unwrap();
    let full = 16 * TINY_DEPTH;
    assert_eq!(loads(&s, &ws), vec![full, full, 0, 0]);
    assert_eq!(s.queue.len(), 200 - 2 * full);
    assert!(fx.arm, "the tick watches the held queue");
    let done: Vec<_> = s.workers[&ws[0]]
        .in_flight
        .iter()
        .map(|u| (u.id, Ok(Body::Empty)))
        .collect();
    let at = now + Duration::from_micros(64);
    apply(s.on_results(ws[0], done, at));
    assert_eq!(loads(&s, &ws), vec![full, full, 0, 0]);
    assert_eq!(s.queue.len(), 200 - 3 * full);
    drop(cs);
}

/// Tasks that take long spread over every worker, least loaded first, as
/// before: there the work, not the wake-up, is the cost.
#[test]
fn long_tasks_still_spread_over_every_worker() {
    let now = Instant::now();
    let (mut s, ws) = measured_pool(4, Duration::from_millis(5), now);
    let (units, _cs) = singles(20);
    let _ = s.submit(units, now).unwrap();
    assert_eq!(loads(&s, &ws), vec![2, 2, 2, 2]);
}

/// While a packed burst waits on the cap, a worker whose running task
/// (by its progress word) has run past its stall bound ends packing: the
/// tick spreads the queue over the idle workers. A task that only waited
/// for its worker to wake (started lately) changes nothing.
#[test]
fn a_long_task_in_a_packed_burst_lets_an_idle_worker_take_the_queue() {
    let now = Instant::now();
    let (mut s, ws) = measured_pool(4, Duration::from_micros(1), now);
    let (units, _cs) = singles(300);
    let _ = s.submit(units, now).unwrap();
    let first = s.workers[&ws[0]].in_flight[0].id;
    let later = now + Duration::from_millis(2);
    let mut probe = FakeProbe::default();
    probe
        .0
        .insert(ws[0], running(first, later - Duration::from_micros(100)));
    let (fx, next) = s.on_tick(later, &probe);
    assert!(fx.touched.is_empty());
    assert_eq!(next, Some(later + HELD_CHECK), "it keeps watching");
    assert_eq!(loads(&s, &ws)[2..], [0, 0]);
    probe.0.insert(ws[0], running(first, now));
    let (fx, next) = s.on_tick(later, &probe);
    assert_eq!(fx.touched, vec![ws[2], ws[3]]);
    let full = 16 * TINY_DEPTH;
    assert_eq!(loads(&s, &ws), vec![full; 4]);
    assert_eq!(s.queue.len(), 300 - 4 * full);
    assert!(s.packing().is_none() && !s.watching && next.is_none());
}

/// Packed, idle workers are the rule: a worker is asked to give back the
/// units behind its running task only when that task is seen running long
/// (not merely because its reply is late, as a loaded host's wake-up
/// makes it), and then they spread over the idle workers.
#[test]
fn packed_units_are_recalled_only_from_behind_a_long_task() {
    let now = Instant::now();
    let (mut s, ws) = measured_pool(3, Duration::from_micros(1), now);
    let (units, _cs) = singles(10);
    let fx = s.submit(units, now).unwrap();
    assert_eq!(loads(&s, &ws), vec![10, 0, 0]);
    assert!(fx.arm, "the tick watches the units behind the running one");
    let later = now + Duration::from_millis(2);
    let (units, _more) = singles(1);
    let _ = s.submit(units, later).unwrap();
    assert_eq!(loads(&s, &ws), vec![11, 0, 0]);
    let recall = |outgoing: &[Out]| -> Vec<TaskId> {
        outgoing
            .iter()
            .flat_map(|o| match o {
                Out::Recall { ids } => ids.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert!(
        recall(&s.workers[&ws[0]].outgoing).is_empty(),
        "a late reply is no long task"
    );
    let first = s.workers[&ws[0]].in_flight[0].id;
    let probe = FakeProbe::of(ws[0], running(first, now));
    let (fx, _) = s.on_tick(later, &probe);
    assert_eq!(fx.touched, vec![ws[0]]);
    let behind: Vec<TaskId> = s.workers[&ws[0]]
        .in_flight
        .iter()
        .skip(1)
        .map(|u| u.id)
        .collect();
    assert_eq!(recall(&s.workers[&ws[0]].outgoing), behind);
    let _ = s.on_recalled(ws[0], &behind, later);
    assert_eq!(loads(&s, &ws), vec![1, 5, 5]);
}

/// A unit the worker has ended (the progress word's last) is not timed
/// out while its result is on the way: held, or not yet read because the
/// parent was paused or starved. Before, such a unit, run in microseconds,
/// failed as `TimedOut` and its worker was killed.
#[test]
fn a_unit_that_ended_is_not_timed_out_while_its_result_is_on_the_way() {
    let t0 = Instant::now();
    let mut r = rules();
    r.timeout = Some(Duration::from_millis(50));
    let (mut s, w) = with_worker(r, t0);
    let (u, c) = single();
    let _ = s.submit(vec![u], t0).unwrap();
    let probe = FakeProbe::of(
        w,
        Progress {
            running: 0,
            started: None,
            received: 1,
            seq: 2,
            last_ended: c.id().0,
            beat: 0,
        },
    );
    let (fx, _) = s.on_tick(t0 + Duration::from_millis(10), &probe);
    assert!(fx.kill.is_empty() && fx.finish.is_empty());
    let (fx, _) = s.on_tick(t0 + Duration::from_millis(400), &probe);
    assert!(fx.kill.is_empty(), "its result is on the way");
    assert!(fx.finish.is_empty());
}

/// Units waiting behind a unit that runs far longer than usual are
/// recalled when it counts as stalled, by the tick, while another worker
/// idles: no event comes then (the idle worker is done). Before, they
/// waited for the long unit's whole run.
#[test]
fn units_behind_a_stalled_unit_are_recalled_by_the_tick() {
    let t0 = Instant::now();
    let (mut s, ws) = measured_pool(2, Duration::from_millis(1), t0);
    let (units, cs) = singles(3);
    let _ = s.submit(units, t0).unwrap();
    let (a, b) = (ws[0], ws[1]);
    let loads = |s: &Scheduler| (s.workers[&a].in_flight.len(), s.workers[&b].in_flight.len());
    assert_eq!(loads(&s), (2, 1), "two behind each other on one worker");
    for w in [a, b] {
        s.workers.get_mut(&w).unwrap().outgoing.clear();
    }
    // The other worker ends its unit soon; the first one's runs on.
    let t1 = t0 + Duration::from_millis(1);
    let fx = s.on_done(b, cs[1].id(), Ok(Body::Empty), t1);
    assert!(fx.arm, "the tick is armed for the stall");
    assert!(s.workers[&a].outgoing.is_empty(), "not stalled yet");
    let probe = FakeProbe::of(a, running(cs[0].id(), t0));
    let (_, next) = s.on_tick(t1, &probe);
    let at = next.expect("a check at the stall");
    assert!(at > t1);
    let (_, _) = s.on_tick(at, &probe);
    assert!(
        matches!(s.workers[&a].outgoing.as_slice(), [Out::Recall { ids }] if ids == &vec![cs[2].id()]),
        "the unit behind the stalled one is recalled"
    );
}

/// A worker whose own usual time is long (it ran a long task before)
/// still gives back the units behind its next long unit once that unit
/// has run past the pool's usual time, while another worker idles.
/// Before, they waited for its own (inflated) bound, often the whole run.
#[test]
fn a_worker_used_to_long_tasks_gives_back_units_at_the_pools_usual_time() {
    let t0 = Instant::now();
    let (mut s, ws) = measured_pool(2, Duration::from_millis(1), t0);
    let (a, b) = (ws[0], ws[1]);
    s.workers.get_mut(&a).unwrap().per_task = Some(Duration::from_secs(1));
    let (units, cs) = singles(3);
    let _ = s.submit(units, t0).unwrap();
    assert_eq!(s.workers[&a].in_flight.len(), 2);
    for w in [a, b] {
        s.workers.get_mut(&w).unwrap().outgoing.clear();
    }
    let t1 = t0 + Duration::from_millis(1);
    let _ = s.on_done(b, cs[1].id(), Ok(Body::Empty), t1);
    let probe = FakeProbe::of(a, running(cs[0].id(), t0));
    let (_, next) = s.on_tick(t1, &probe);
    let at = next.expect("a check at the stall");
    assert!(
        at < t0 + Duration::from_millis(100),
        "at the pool's usual time, not the worker's own 4 s"
    );
    let (_, _) = s.on_tick(at, &probe);
    assert!(
        matches!(s.workers[&a].outgoing.as_slice(), [Out::Recall { ids }] if ids == &vec![cs[2].id()]),
        "the unit behind the long one is recalled"
    );
}

/// A worker whose units have all run (its results wait unread: the router
/// held up by another worker's stalled message) has a sleeping heart; it
/// is not killed for that silence, unless its process is stopped. Before,
/// a bystander whose task had ended was killed as unresponsive.
#[test]
fn a_silent_worker_whose_units_all_ran_is_killed_only_if_stopped() {
    let t0 = Instant::now();
    let (mut s, w, cs) = loaded(watched(1, 0), 1, t0);
    let ended = Progress {
        running: 0,
        started: None,
        received: 1,
        seq: 2,
        last_ended: cs[0].id().0,
        beat: 5,
    };
    let mut probe = FakeProbe::default();
    probe.0.insert(w, ended);
    let s1 = Duration::from_secs(1);
    for i in 0..=8 {
        let (fx, _) = s.on_tick(t0 + s1 * i, &probe);
        assert!(fx.kill.is_empty(), "tick {i}: its result is on the way");
    }
    probe.1.push(w);
    // Last forgiven at tick 8; the bound (4 s) runs out at tick 12.
    for i in 9..12 {
        let (fx, _) = s.on_tick(t0 + s1 * i, &probe);
        assert!(fx.kill.is_empty(), "tick {i}");
    }
    let (fx, _) = s.on_tick(t0 + s1 * 12, &probe);
    assert_eq!(fx.kill, vec![w], "stopped after its last unit");
}
