//! [`Executor::map_all`](concur_core::Executor::map_all) on the thread
//! pool: every output is written by the worker that ran its task straight
//! into the vector the caller gets back.
//!
//! `map` hands the caller one result at a time, so the caller reads (on its
//! own core) every value a worker wrote and copies it again into whatever
//! it collects; for tasks of a few nanoseconds that serial pass is most of
//! the time. Here the caller only waits: the input stays in its vector and
//! the workers claim ranges of it, run each task and write its output into
//! the same slot of the output vector, as rayon's indexed `collect` does.
//!
//! Safety rests on one rule: the caller returns (or frees either buffer)
//! only once every item is settled, that is its task has been moved out of
//! the input and its slot written or recorded as failed. Each range is
//! claimed exactly once (one atomic counter), by a worker or, when the work
//! is cancelled, by whoever gives the rest up; a range's items are settled
//! by its claimer alone. A pool with a task timeout does not come here: a
//! task over its timeout must fail while its thread still runs, and that
//! thread could write after the caller left.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use concur_core::{
    panic, Completion, ErrorKind, Executor, MapAllError, Payload, Task, TaskContext, TaskError,
    WorkerInfo,
};

use crate::batch::{BatchWork, QuietPort};
use crate::dispatch::Job;
use crate::generation::{lock, on_worker_of, with_worker};
use crate::pool::{Inner, ThreadPool};

/// Runs `tasks` on `pool` with the outputs written in place (see the
/// module's doc). A pool with a task timeout, or one that takes no work,
/// goes through `map` instead.
pub(crate) fn map_all<T: Task>(
    pool: &ThreadPool,
    tasks: Vec<T>,
) -> Result<Vec<T::Output>, MapAllError<T::Output>> {
    let inner = pool.inner();
    let config = &inner.shared.config;
    let n = tasks.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    if config.task_timeout_value().is_some() || pool.admission().is_closed() {
        return MapAllError::collect(concur_core::ExecutorExt::map(pool, tasks));
    }
    let workers = inner.shared.workers.max(1);
    // The queue bound counts the tasks running at once, one per runner:
    // the rest wait in the caller's vector, as `map`'s unread input does,
    // and other work keeps its room in the queue.
    let runners = workers.min(pool.admission().bound()).min(n).max(1);
    // Small ranges spread uneven tasks and let a runner step aside for
    // other work soon. Under a task limit a range is one task, so that a
    // worker stops exactly at its limit.
    let batch = if config.max_tasks_per_worker_value().is_some() {
        1
    } else {
        (n / (8 * workers)).clamp(1, MAX_RANGE)
    };
    let on_worker = on_worker_of(&inner.shared);
    // Called from one of this pool's own tasks, the caller is a runner
    // too (waiting alone could wait for the worker it occupies), and it
    // never waits for room: the calling task already holds some. Without
    // room for helpers it runs every task itself.
    let helpers = runners - usize::from(on_worker);
    let room = if on_worker {
        pool.admission()
            .try_acquire(helpers)
            .map(|p| p.filter(|_| helpers > 0))
    } else {
        pool.admission().acquire(helpers).map(Some)
    };
    let completion = match room {
        Ok(p) => p.map(|p| Completion::new(p, None)),
        Err(e) => return MapAllError::collect(tasks.into_iter().map(|_| Err(e.clone()))),
    };
    let all = Arc::new(All::new(tasks, batch, completion, inner.clone()));
    if let Some(c) = &all.completion {
        c.begin();
        for _ in 0..helpers {
            all.clone().send(inner);
        }
    }
    if on_worker {
        let info = with_worker(|w| w.info);
        let ran = all.run_ranges(info, None, || false);
        // They ran on this worker: its task limit, if any, takes effect
        // once the calling task returns.
        with_worker(|w| w.runs += ran);
    }
    all.wait_settled();
    if let Some(c) = &all.completion {
        c.finish(Ok(Payload::value(())));
    }
    all.take_outputs()
}

/// The most tasks in one range: short enough that a runner soon looks
/// for other queued work, long enough that claiming a range costs little
/// per task.
const MAX_RANGE: usize = 1024;

/// One `map_all` call: the input, the output buffer and the tally.
struct All<T: Task> {
    /// The input's items, each moved out exactly once (by the runner that
    /// claimed its range, or by `give_up`).
    input: *mut T,
    input_cap: usize,
    /// The output buffer, `len` slots; slot `i` is written when task `i`
    /// succeeded.
    output: *mut T::Output,
    output_cap: usize,
    len: usize,
    /// Items per range (the last range may be shorter).
    batch: usize,
    /// The next range to claim (range `r` starts at item `r * batch`).
    next: AtomicUsize,
    /// Holds the call's room in the queue (none when the caller, a task of
    /// this pool, runs every task itself). Begun by the caller; finished
    /// `Cancelled` by `shutdown_now`, which stops the runners.
    completion: Option<Completion>,
    /// The pool, whose `stopping` flag also stops the runners.
    pool: Arc<Inner>,
    tally: Mutex<Tally>,
    settled: Condvar,
}

#[derive(Default)]
struct Tally {
    /// Items settled so far.
    done: usize,
    /// The failed items (their output slots are not written).
    failed: Vec<(usize, TaskError)>,
}

// SAFETY: the raw pointers are only an address shared by the runners; each
// item is moved out and each slot written by the one thread that claimed
// its range (`next`), and the caller reads them only after every range is
// settled (`tally`). Tasks and outputs are `Send`.
unsafe impl<T: Task> Send for All<T> {}
// SAFETY: as for `Send`: shared access goes through `next`, `tally` and
// `completion`.
unsafe impl<T: Task> Sync for All<T> {}

impl<T: Task> All<T> {
    fn new(tasks: Vec<T>, batch: usize, completion: Option<Completion>, pool: Arc<Inner>) -> Self {
        let len = tasks.len();
        let mut tasks = std::mem::ManuallyDrop::new(tasks);
        let mut output = std::mem::ManuallyDrop::new(Vec::<T::Output>::with_capacity(len));
        Self {
            input: tasks.as_mut_ptr(),
            input_cap: tasks.capacity(),
            output: output.as_mut_ptr(),
            output_cap: output.capacity(),
            len,
            batch,
            next: AtomicUsize::new(0),
            completion,
            pool,
            tally: Mutex::new(Tally::default()),
            settled: Condvar::new(),
        }
    }

    /// Queues a job that runs ranges on a worker; if the pool has stopped,
    /// gives the rest up.
    fn send(self: Arc<Self>, inner: &Arc<Inner>) {
        inner.push_or_cancel(Job::Batch(self));
    }

    /// True once the call's work is cancelled (`shutdown_now`).
    fn cancelled(&self) -> bool {
        self.completion.as_ref().is_some_and(Completion::is_done)
            || self.pool.stopping.load(Ordering::SeqCst)
    }

    /// How many ranges the items make.
    fn ranges(&self) -> usize {
        self.len.div_ceil(self.batch)
    }

    /// The items of the next unclaimed range.
    fn claim_range(&self) -> Option<std::ops::Range<usize>> {
        let r = self.next.fetch_add(1, Ordering::Relaxed);
        (r < self.ranges()).then(|| r * self.batch..((r + 1) * self.batch).min(self.len))
    }

    /// Runs ranges until none is left, the work is cancelled, (with
    /// `limit`) this worker has run `limit` tasks, or, after a range,
    /// `others_wait` says other work is queued. Returns how many tasks it
    /// ran.
    fn run_ranges(
        &self,
        worker: WorkerInfo,
        limit: Option<u64>,
        others_wait: impl Fn() -> bool,
    ) -> u64 {
        // Cancelled once the call's work is (`shutdown_now`).
        let port = QuietPort(|| self.cancelled());
        let mut ran = 0u64;
        while limit.is_none_or(|l| ran < l) && (ran == 0 || !others_wait()) {
            if self.cancelled() {
                self.give_up();
                break;
            }
            let Some(range) = self.claim_range() else {
                break;
            };
            let mut failed = Vec::new();
            let mut i = range.start;
            // Read once here rather than per task (`self` has interior
            // mutability, so the compiler reloads its fields after each
            // call).
            let (input, output, cell) = (self.input, self.output, self.completion.as_ref());
            while i < range.end {
                // One `catch` spans a run of items: a panic ends the run at
                // the item that panicked, which gets the error.
                let run = panic::catch(|| {
                    while i < range.end {
                        // Per task, only the call's own cell (the pool's
                        // flag shares a cache line with the queue's lock,
                        // which every runner takes between ranges); a call
                        // run inline by a task has no cell: the flag then.
                        let stop = match cell {
                            Some(c) => c.is_done(),
                            None => self.pool.stopping.load(Ordering::Relaxed),
                        };
                        if stop {
                            return;
                        }
                        // SAFETY: `i` is in this thread's claimed range, so
                        // item `i` is read once, and slot `i` is written
                        // once, by this thread only; both buffers outlive
                        // every range (the caller waits for all).
                        unsafe {
                            let task = input.add(i).read();
                            i += 1;
                            let out = task.run(&mut TaskContext::new(&port, worker));
                            output.add(i - 1).write(out);
                        }
                    }
                });
                if let Err(e) = run {
                    failed.push((i - 1, e));
                } else if i < range.end {
                    // Cancelled in the middle of the range.
                    self.drop_items(i..range.end, &mut failed);
                    i = range.end;
                }
            }
            ran += (range.end - range.start) as u64;
            self.settle(range.len(), failed);
        }
        ran
    }

    /// Drops the tasks of `items` unrun, each failing `Cancelled`.
    fn drop_items(&self, items: std::ops::Range<usize>, failed: &mut Vec<(usize, TaskError)>) {
        for i in items {
            // SAFETY: as in `run_ranges`: the caller owns the range.
            let task = unsafe { self.input.add(i).read() };
            // A task whose `Drop` panics costs that panic, not the rest.
            let _ = panic::catch(move || drop(task));
            failed.push((i, ErrorKind::Cancelled.into()));
        }
    }

    /// Claims every range left and fails its items `Cancelled` (the pool
    /// is stopping, or this call's work was cancelled).
    fn give_up(&self) {
        while let Some(range) = self.claim_range() {
            let mut failed = Vec::with_capacity(range.len());
            self.drop_items(range.clone(), &mut failed);
            self.settle(range.len(), failed);
        }
    }

    fn settle(&self, items: usize, failed: Vec<(usize, TaskError)>) {
        let mut t = lock(&self.tally);
        t.done += items;
        t.failed.extend(failed);
        if t.done == self.len {
            self.settled.notify_all();
        }
    }

    /// Waits until every item is settled. Unbounded on purpose: the
    /// runners write into the caller's buffers, so it must not leave
    /// before they are done; it waits for the tasks themselves, as `join`
    /// does (a task timeout sends the call through `map` instead).
    fn wait_settled(&self) {
        let mut t = lock(&self.tally);
        while t.done < self.len {
            t = self.settled.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The outputs (every item settled), or every item's result.
    fn take_outputs(&self) -> Result<Vec<T::Output>, MapAllError<T::Output>> {
        let mut failed = std::mem::take(&mut lock(&self.tally).failed);
        // SAFETY: every item was moved out of the input: free it empty.
        drop(unsafe { Vec::from_raw_parts(self.input, 0, self.input_cap) });
        if failed.is_empty() {
            // SAFETY: every item is settled and none failed: every slot
            // was written.
            return Ok(unsafe { Vec::from_raw_parts(self.output, self.len, self.output_cap) });
        }
        failed.sort_unstable_by_key(|(i, _)| *i);
        let mut failed = failed.into_iter().peekable();
        // Straight into `collect`, which builds the error's vector itself.
        let results = (0..self.len).map(|i| match failed.next_if(|(at, _)| *at == i) {
            Some((_, e)) => Err(e),
            // SAFETY: a settled item that did not fail wrote its slot;
            // each slot is read once, here.
            None => Ok(unsafe { self.output.add(i).read() }),
        });
        let all = MapAllError::collect(results);
        // SAFETY: `collect` takes every item, so every written slot was
        // moved out (one it left would leak, not be dropped): free it empty.
        drop(unsafe { Vec::from_raw_parts(self.output, 0, self.output_cap) });
        all
    }
}

impl<T: Task> BatchWork for All<T> {
    fn completion(&self) -> &Completion {
        self.completion
            .as_ref()
            .expect("only a call with room in the queue sends jobs")
    }

    fn claim(&self) -> bool {
        !self.cancelled()
    }

    fn cancel(&self) {
        self.completion().finish(Err(ErrorKind::Cancelled.into()));
        self.give_up();
    }

    fn run_items(self: Arc<Self>, pool: &Arc<Inner>, worker: WorkerInfo) -> u64 {
        // A worker with a task limit runs up to what it has left, then
        // hands the rest to a fresh job (its replacement takes it). Work
        // queued meanwhile by others goes first: the job queues itself
        // again behind it, so a long call does not hold every worker.
        let limit = pool
            .shared
            .config
            .max_tasks_per_worker_value()
            .map(|l| l.saturating_sub(with_worker(|w| w.runs)).max(1));
        // This call's own jobs waiting in the queue are not other work.
        let me = Arc::as_ptr(&self).cast::<()>();
        let others_wait = || {
            lock(&pool.queue)
                .iter()
                .any(|job| !matches!(job, Job::Batch(b) if Arc::as_ptr(b).cast::<()>() == me))
        };
        let ran = self.run_ranges(worker, limit, others_wait);
        if self.next.load(Ordering::Relaxed) < self.ranges() && !self.cancelled() {
            self.send(pool);
        }
        ran
    }
}
