//! [`ExecutorExt`]: conveniences built on the minimal [`Executor`] contract,
//! the same for every backend: async submit, batches, and `map` with a
//! bounded number of tasks in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::TaskError;
use crate::executor::Executor;
use crate::func::{FnTask, FnTasks};
use crate::handle::{BatchHandle, TaskHandle};
use crate::task::{Message, Task};

/// How `map` feeds the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Most tasks submitted and not yet yielded (default: enough to keep every
    /// worker busy, never more than the queue bound).
    pub in_flight: Option<usize>,
    /// Tasks sent to a worker as one unit (default: chosen from the input's
    /// size hint: 1 for short inputs, up to 256 for long ones).
    pub batch: Option<usize>,
}

impl MapOptions {
    /// At most `n` tasks in flight.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(n);
        self
    }

    /// Batches of `n` tasks.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = Some(n);
        self
    }

    /// The largest batch chosen from the size hint alone.
    const AUTO_BATCH: usize = 256;
    /// The largest batch a long map of quick tasks grows to (see `Feed::grow`).
    const GROWN_BATCH: usize = 4096;

    fn resolve(self, workers: usize, queue_bound: usize, size_hint: usize) -> (usize, usize) {
        let workers = workers.max(1);
        let auto_batch = (size_hint / (workers * 16)).clamp(1, Self::AUTO_BATCH);
        let in_flight = self
            .in_flight
            .unwrap_or_else(|| {
                (workers * 64).max(
                    self.batch
                        .unwrap_or(auto_batch)
                        .saturating_mul(workers)
                        .saturating_mul(4),
                )
            })
            .clamp(1, queue_bound.max(1));
        let batch = self
            .batch
            .unwrap_or_else(|| auto_batch.min((in_flight / (2 * workers)).max(1)))
            .clamp(1, in_flight);
        (in_flight, batch)
    }
}

/// Conveniences for every [`Executor`].
#[async_trait]
pub trait ExecutorExt: Executor {
    /// Submits a task, waiting asynchronously (not blocking the thread) for
    /// room in the queue. For use inside async runtimes such as tokio.
    ///
    /// # Errors
    /// As [`Executor::start`].
    async fn submit_async<T: Task>(&self, task: T) -> Result<TaskHandle<T>, TaskError> {
        let permit = self.admission().acquire_async(1).await?;
        self.start(task, permit)
    }

    /// Submits `tasks` as one unit (see [`Executor::start_batch`]), waiting for room.
    ///
    /// # Errors
    /// As [`Executor::start`]; a batch larger than the queue bound is a config error.
    fn submit_batch<T: Task>(&self, tasks: Vec<T>) -> Result<BatchHandle<T>, TaskError> {
        let permit = self.admission().acquire(tasks.len())?;
        self.start_batch(tasks, permit)
    }

    /// Runs every task of `tasks` and yields the results in input order. The
    /// input is pulled lazily: at most a bounded number of tasks is in
    /// flight, so an endless iterator works. Every input yields exactly one
    /// item (a failed submission yields that error for its tasks).
    fn map<T, I>(&self, tasks: I) -> Map<'_, Self, I::IntoIter, T>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        self.map_with(tasks, MapOptions::default())
    }

    /// [`map`](Self::map) with explicit [`MapOptions`].
    fn map_with<T, I>(&self, tasks: I, options: MapOptions) -> Map<'_, Self, I::IntoIter, T>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        Map {
            feed: Feed::new(self, tasks.into_iter(), options),
            pending: VecDeque::new(),
            current: Vec::new().into_iter(),
            wait: BatchWait::default(),
        }
    }

    /// Like [`map`](Self::map) but yields results as they finish, each with
    /// its input index.
    fn map_unordered<T, I>(&self, tasks: I) -> MapUnordered<'_, Self, I::IntoIter, T>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        self.map_unordered_with(tasks, MapOptions::default())
    }

    /// [`map_unordered`](Self::map_unordered) with explicit [`MapOptions`].
    fn map_unordered_with<T, I>(
        &self,
        tasks: I,
        options: MapOptions,
    ) -> MapUnordered<'_, Self, I::IntoIter, T>
    where
        T: Task,
        I: IntoIterator<Item = T>,
        Self: Sized,
    {
        MapUnordered {
            feed: Feed::new(self, tasks.into_iter(), options),
            slots: Vec::new(),
            free: Vec::new(),
            woken: Arc::new(Woken::default()),
        }
    }

    /// Runs `f(input)` as a task: `f` is a `fn` item or a closure that
    /// captures nothing, taking one serializable argument (a tuple for
    /// several) and returning a serializable value. No struct, no
    /// `impl Task`, no registration: on every backend, process workers
    /// included (see [`FnTask`] for how a worker finds the function).
    ///
    /// ```
    /// use concur_core::{Executor, ExecutorExt, TaskError};
    ///
    /// fn hypot((a, b): (f64, f64)) -> f64 {
    ///     (a * a + b * b).sqrt()
    /// }
    ///
    /// fn on_any_backend(pool: &impl Executor) -> Result<f64, TaskError> {
    ///     let long_side = pool.submit_fn(hypot, (3.0, 4.0))?;
    ///     let doubled = pool.submit_fn(|x: f64| x * 2.0, 2.5)?;
    ///     Ok(long_side.join()? + doubled.join()?)
    /// }
    /// ```
    ///
    /// A closure that captures a variable does not compile ("submit_fn takes
    /// a fn item or a closure that captures nothing"): pass the value in the
    /// input instead.
    ///
    /// # Errors
    /// As [`Executor::submit`]. A panic in `f` is the task's
    /// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) error, its message
    /// prefixed with the function's name (``in `my_crate::hypot`: ...``).
    fn submit_fn<F, I, O>(&self, f: F, input: I) -> Result<TaskHandle<FnTask<F, I, O>>, TaskError>
    where
        F: Fn(I) -> O + Copy + Send + Sync + 'static,
        I: Message,
        O: Message,
    {
        self.submit(FnTask::new(f, input))
    }

    /// [`map`](Self::map) for a function: yields `f(input)` for every input,
    /// in input order, with the same lazy pulling, bounded in-flight work
    /// and batching. `f` is as for [`submit_fn`](Self::submit_fn).
    ///
    /// ```
    /// use concur_core::{Executor, ExecutorExt, TaskError};
    ///
    /// fn is_prime(n: u64) -> bool {
    ///     n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
    /// }
    ///
    /// fn primes_below(pool: &impl Executor, n: u64) -> Result<Vec<u64>, TaskError> {
    ///     let flags: Vec<bool> = pool.map_fn(is_prime, 0..n).collect::<Result<_, _>>()?;
    ///     Ok((0..n).filter(|&i| flags[i as usize]).collect())
    /// }
    /// ```
    ///
    /// For other options or the unordered variant, map the inputs into
    /// [`FnTask`]s: `pool.map_unordered(inputs.map(|i| FnTask::new(f, i)))`.
    // The type is `map`'s own, with the task type spelled out.
    #[allow(clippy::type_complexity)]
    fn map_fn<F, I, O, It>(
        &self,
        f: F,
        inputs: It,
    ) -> Map<'_, Self, FnTasks<F, It::IntoIter>, FnTask<F, I, O>>
    where
        F: Fn(I) -> O + Copy + Send + Sync + 'static,
        I: Message,
        O: Message,
        It: IntoIterator<Item = I>,
        Self: Sized,
    {
        self.map(FnTasks::new(f, inputs.into_iter()))
    }
}

impl<E: Executor + ?Sized> ExecutorExt for E {}

/// The lazy input side shared by both map flavours.
struct Feed<'a, E, I, T: Task> {
    exec: &'a E,
    input: std::iter::Fuse<I>,
    in_flight_limit: usize,
    batch: usize,
    /// How far batches may grow (`batch`, `in_flight_limit`) while the
    /// workers keep ahead of the caller: set for long inputs when neither
    /// option was given.
    growth: Option<(usize, usize)>,
    workers: usize,
    /// Tasks pulled from the input and not yet yielded.
    in_flight: usize,
    next_index: usize,
    ready: VecDeque<(usize, Result<T::Output, TaskError>)>,
}

/// A batch the feed started, or could not start.
enum Unit<T: Task> {
    Running {
        first: usize,
        handle: BatchHandle<T>,
    },
    Failed {
        first: usize,
        n: usize,
        error: TaskError,
    },
}

impl<'a, E: Executor, I: Iterator<Item = T>, T: Task> Feed<'a, E, I, T> {
    fn new(exec: &'a E, input: I, options: MapOptions) -> Self {
        let workers = exec.workers().max(1);
        let bound = exec.admission().bound();
        let (in_flight_limit, batch) = options.resolve(workers, bound, input.size_hint().0);
        let growth = (options == MapOptions::default() && batch >= MapOptions::AUTO_BATCH)
            .then(|| (MapOptions::GROWN_BATCH.min(bound / (4 * workers)), bound))
            .filter(|&(most, _)| most > batch);
        Self {
            exec,
            input: input.fuse(),
            in_flight_limit,
            batch,
            growth,
            workers,
            in_flight: 0,
            next_index: 0,
            ready: VecDeque::new(),
        }
    }

    /// The workers finished a batch before the caller needed it: the
    /// caller's per-batch work is what paces the map, so batches double
    /// (within `growth`), with room for four per worker in flight.
    fn grow(&mut self) {
        if let Some((most_batch, most_in_flight)) = self.growth {
            self.batch = (self.batch * 2).min(most_batch);
            self.in_flight_limit = self.in_flight_limit.max(
                self.batch
                    .saturating_mul(self.workers)
                    .saturating_mul(4)
                    .min(most_in_flight),
            );
        }
    }

    /// Starts the next batch if the in-flight bound leaves room for it.
    fn start_next(&mut self) -> Option<Unit<T>> {
        let room = self.in_flight_limit - self.in_flight;
        if room == 0 {
            return None;
        }
        let tasks: Vec<T> = self.input.by_ref().take(self.batch.min(room)).collect();
        if tasks.is_empty() {
            return None;
        }
        let first = self.next_index;
        let n = tasks.len();
        self.next_index += n;
        self.in_flight += n;
        let started = self
            .exec
            .admission()
            .acquire(n)
            .and_then(|permit| self.exec.start_batch(tasks, permit));
        Some(match started {
            Ok(handle) => Unit::Running { first, handle },
            Err(error) => Unit::Failed { first, n, error },
        })
    }

    fn finished(&mut self, first: usize, results: Vec<Result<T::Output, TaskError>>) {
        self.ready
            .extend(results.into_iter().enumerate().map(|(i, r)| (first + i, r)));
    }

    fn failed(&mut self, first: usize, n: usize, error: TaskError) {
        self.ready
            .extend((first..first + n).map(|i| (i, Err(error.clone()))));
    }

    /// The next finished item; it stops counting as in flight.
    fn pop_ready(&mut self) -> Option<(usize, Result<T::Output, TaskError>)> {
        let item = self.ready.pop_front()?;
        self.in_flight -= 1;
        Some(item)
    }
}

/// What [`Executor::map_all`] returns when at least one task failed:
/// every task's own result, in input order. The outputs of the tasks that
/// succeeded are here too, so a failure loses nothing.
///
/// It converts into the first failed task's [`TaskError`] (for `?` in a
/// function returning `Result<_, TaskError>`).
pub struct MapAllError<O> {
    /// At least one of them an error.
    results: Vec<Result<O, TaskError>>,
}

impl<O> MapAllError<O> {
    /// Every output when every result is `Ok`, else the error holding them
    /// all: what [`Executor::map_all`] returns for these `results`. Stops
    /// copying into the output vector at the first failure.
    ///
    /// # Errors
    /// When at least one result is an error.
    pub fn collect<R>(results: R) -> Result<Vec<O>, Self>
    where
        R: IntoIterator<Item = Result<O, TaskError>>,
    {
        let mut results = results.into_iter();
        let mut outputs = Vec::with_capacity(results.size_hint().0);
        for r in results.by_ref() {
            match r {
                Ok(o) => outputs.push(o),
                Err(e) => {
                    let mut all: Vec<Result<O, TaskError>> = outputs.into_iter().map(Ok).collect();
                    all.push(Err(e));
                    all.extend(results);
                    return Err(Self { results: all });
                }
            }
        }
        Ok(outputs)
    }

    /// Every task's result, in input order.
    pub fn results(&self) -> &[Result<O, TaskError>] {
        &self.results
    }

    /// Every task's result, in input order, by value.
    pub fn into_results(self) -> Vec<Result<O, TaskError>> {
        self.results
    }

    /// How many tasks failed (at least one).
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.is_err()).count()
    }

    /// The first failed task: its index in the input and its error.
    pub fn first_error(&self) -> (usize, &TaskError) {
        self.results
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
            .expect("a MapAllError holds a failed result")
    }
}

impl<O> std::fmt::Debug for MapAllError<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (index, error) = self.first_error();
        f.debug_struct("MapAllError")
            .field("tasks", &self.results.len())
            .field("failed", &self.failed())
            .field("first_failed", &index)
            .field("first_error", error)
            .finish()
    }
}

impl<O> std::fmt::Display for MapAllError<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (index, error) = self.first_error();
        write!(
            f,
            "{} of {} tasks failed; the first, task {index}: {error}",
            self.failed(),
            self.results.len()
        )
    }
}

impl<O> std::error::Error for MapAllError<O> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.first_error().1)
    }
}

impl<O> From<MapAllError<O>> for TaskError {
    /// The first failed task's error.
    fn from(e: MapAllError<O>) -> Self {
        e.results
            .into_iter()
            .find_map(Result::err)
            .expect("a MapAllError holds a failed result")
    }
}

/// Results of [`ExecutorExt::map`], in input order.
///
/// Dropping it before the end cancels every task it submitted and did not
/// yield (as Python's `Executor.map` does when its iterator is closed):
/// queued ones never run and running ones are stopped where the backend
/// can, or told through [`TaskContext::is_cancelled`](crate::TaskContext::is_cancelled).
pub struct Map<'a, E, I, T: Task> {
    feed: Feed<'a, E, I, T>,
    pending: VecDeque<Unit<T>>,
    /// The results of the oldest batch, being yielded.
    current: std::vec::IntoIter<Result<T::Output, TaskError>>,
    wait: BatchWait,
}

/// How [`Map`] waits for its oldest batch. `join` spins a while before it
/// sleeps, which is what short batches want: their result comes within the
/// spin, with no sleep or wake-up on either side. A batch that takes longer
/// than the spin only loses the CPU the spin took, which on a small machine
/// is a core the workers could have used; so once a wait outlasts the spin,
/// the next one sleeps at once, until a wait is short again.
#[derive(Default)]
struct BatchWait {
    sleep_at_once: bool,
    /// The waker of the thread that last slept here, made once.
    waker: Option<(std::thread::ThreadId, Waker)>,
}

impl BatchWait {
    /// Waits longer than this sleep at once the next time (the caller's
    /// spin budget in `join`).
    const LONG: Duration = Duration::from_micros(150);

    fn join<T: Task>(&mut self, handle: BatchHandle<T>) -> Vec<Result<T::Output, TaskError>> {
        if handle.is_finished() {
            return handle.join();
        }
        let start = Instant::now();
        let results = if self.sleep_at_once {
            // A `Map` may move between threads: the waker unparks this one.
            let me = std::thread::current();
            let waker = match &mut self.waker {
                Some((id, waker)) if *id == me.id() => waker,
                slot => &mut slot.insert((me.id(), Waker::from(Arc::new(Unpark(me))))).1,
            };
            let mut cx = Context::from_waker(waker);
            loop {
                // The waker unparks this thread when the batch finishes; a
                // stray unpark only costs another poll. Bounded by the
                // batch: every accepted batch finishes (delivery contract).
                match handle.poll_join(&mut cx) {
                    Poll::Ready(results) => break results,
                    Poll::Pending => std::thread::park(),
                }
            }
        } else {
            handle.join()
        };
        self.sleep_at_once = start.elapsed() >= Self::LONG;
        results
    }
}

/// Wakes a thread parked in [`BatchWait::join`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl<E: Executor, I: Iterator<Item = T>, T: Task> Iterator for Map<'_, E, I, T> {
    type Item = Result<T::Output, TaskError>;

    // The common case, the next result of the batch at hand, is kept small
    // enough to inline into the caller's loop; refilling is out of line.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                self.feed.in_flight -= 1;
                return Some(r);
            }
            if !self.refill() {
                return None;
            }
        }
    }

    /// Exactly one item per input: those in flight plus what the input has left.
    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lo, hi) = self.feed.input.size_hint();
        let n = self.feed.in_flight;
        (lo.saturating_add(n), hi.and_then(|hi| hi.checked_add(n)))
    }
}

impl<E: Executor, I: Iterator<Item = T>, T: Task> Map<'_, E, I, T> {
    /// Starts what the in-flight bound allows and waits for the oldest
    /// batch. False when every input has been yielded.
    #[inline(never)]
    fn refill(&mut self) -> bool {
        while let Some(unit) = self.feed.start_next() {
            self.pending.push_back(unit);
        }
        let Some(unit) = self.pending.pop_front() else {
            return false;
        };
        self.current = match unit {
            Unit::Running { handle, .. } => {
                if handle.is_finished() {
                    self.feed.grow();
                }
                self.wait.join(handle)
            }
            Unit::Failed { n, error, .. } => (0..n).map(|_| Err(error.clone())).collect(),
        }
        .into_iter();
        true
    }
}

impl<E, I, T: Task> Drop for Map<'_, E, I, T> {
    fn drop(&mut self) {
        for unit in &self.pending {
            if let Unit::Running { handle, .. } = unit {
                handle.cancel();
            }
        }
        // Outputs whose `Drop` panics: one panic reaches the caller, not an abort.
        let unread = std::mem::take(&mut self.current);
        crate::panic::drop_each(unread.chain(self.feed.ready.drain(..).map(|(_, r)| r)));
    }
}

#[derive(Default)]
struct Woken {
    slots: Mutex<Vec<usize>>,
    cond: Condvar,
}

struct SlotWaker {
    slot: usize,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut g = self.woken.slots.lock().unwrap_or_else(|e| e.into_inner());
        g.push(self.slot);
        self.woken.cond.notify_one();
    }
}

/// Results of [`ExecutorExt::map_unordered`]: `(input index, result)` as
/// tasks finish.
///
/// Dropping it before the end cancels every task it submitted that has not
/// finished, as [`Map`] does.
pub struct MapUnordered<'a, E, I, T: Task> {
    feed: Feed<'a, E, I, T>,
    slots: Vec<Option<(usize, BatchHandle<T>)>>,
    free: Vec<usize>,
    woken: Arc<Woken>,
}

impl<E: Executor, I: Iterator<Item = T>, T: Task> MapUnordered<'_, E, I, T> {
    fn poll_slot(&mut self, slot: usize) {
        let Some((first, handle)) = &self.slots[slot] else {
            return;
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            slot,
            woken: self.woken.clone(),
        }));
        if let Poll::Ready(results) = handle.poll_join(&mut Context::from_waker(&waker)) {
            let first = *first;
            self.slots[slot] = None;
            self.free.push(slot);
            self.feed.finished(first, results);
        }
    }
}

impl<E, I, T: Task> Drop for MapUnordered<'_, E, I, T> {
    fn drop(&mut self) {
        for (_, handle) in self.slots.iter().flatten() {
            handle.cancel();
        }
        // Outputs whose `Drop` panics: one panic reaches the caller, not an abort.
        crate::panic::drop_each(self.feed.ready.drain(..).map(|(_, r)| r));
    }
}

impl<E: Executor, I: Iterator<Item = T>, T: Task> Iterator for MapUnordered<'_, E, I, T> {
    type Item = (usize, Result<T::Output, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while let Some(unit) = self.feed.start_next() {
                let s = match unit {
                    Unit::Running { first, handle } => (first, handle),
                    Unit::Failed { first, n, error } => {
                        self.feed.failed(first, n, error);
                        continue;
                    }
                };
                let slot = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = Some(s);
                        i
                    }
                    None => {
                        self.slots.push(Some(s));
                        self.slots.len() - 1
                    }
                };
                self.poll_slot(slot);
            }
            if let Some(item) = self.feed.pop_ready() {
                return Some(item);
            }
            if self.feed.in_flight == 0 {
                return None;
            }
            let woken: Vec<usize> = {
                let mut g = self.woken.slots.lock().unwrap_or_else(|e| e.into_inner());
                while g.is_empty() {
                    g = self.woken.cond.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::take(&mut *g)
            };
            for slot in woken {
                self.poll_slot(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_resolve_sensibly() {
        // Short input: one task per batch, every worker busy.
        assert_eq!(MapOptions::default().resolve(2, 2048, 16), (128, 1));
        // Long input: big batches, in flight within the queue bound.
        let (in_flight, batch) = MapOptions::default().resolve(2, 2048, 1_000_000);
        assert_eq!(batch, 256);
        assert!(in_flight <= 2048 && in_flight >= batch * 2);
        // Explicit in-flight bound is honoured and batches fit in it.
        assert_eq!(
            MapOptions::default()
                .in_flight(3)
                .resolve(2, 2048, 1_000_000),
            (3, 1)
        );
    }
}
