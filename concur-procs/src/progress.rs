//! A worker's progress word: a few counters in a small shared-memory
//! region that the worker writes and the parent reads, with no message.
//!
//! It tells the parent, at any moment and after the worker died, which task
//! the worker was running and since when, and how many tasks it had
//! received. That is what lets the parent blame only the task a dead
//! worker was running (the others never started), time out each task
//! (batched or not, whether or not the worker can still talk), and find the
//! task whose input a worker could not receive.
//!
//! It also carries the worker's heartbeat: a counter a thread of the worker
//! that never runs task code moves while the worker holds work, so the
//! parent can tell a worker stopped or frozen from outside (`SIGSTOP`, a
//! debugger, a cgroup freezer: every thread stops) from one busy in a long
//! task (its heartbeat still moves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcSharedMemory;

/// Word indices in the region.
const RUNNING: usize = 0;
const STARTED: usize = 1;
const RECEIVED: usize = 2;
const SEQ: usize = 3;
const LAST: usize = 4;
const BEAT: usize = 5;
const WORDS: usize = 6;

/// What a worker's progress word says (written by the worker, read by
/// the parent through shared memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The unit it runs now (0: none).
    pub(crate) running: u64,
    /// When that unit started.
    pub(crate) started: Option<Instant>,
    /// How many tasks it has received.
    pub(crate) received: u64,
    /// Moves at every start and end of a task.
    pub(crate) seq: u64,
    /// The unit that ended last (its result may not have been sent).
    pub(crate) last_ended: u64,
    /// The worker's heartbeat: moves while the worker lives and holds work.
    pub(crate) beat: u64,
}

/// The shared region and a pointer to its words.
pub(crate) struct ProgressWord {
    region: IpcSharedMemory,
    words: *const AtomicU64,
}

// SAFETY: the pointer targets the region's mapping, which lives as long as
// `region` (owned here and never unmapped before drop); all access goes
// through atomics.
unsafe impl Send for ProgressWord {}
// SAFETY: as above; the atomics make shared access sound.
unsafe impl Sync for ProgressWord {}

/// Nanoseconds on the system-wide monotonic clock (the same in every
/// process, so a worker's stamp can be read by its parent).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl ProgressWord {
    /// A fresh, zeroed region (parent side; sent to the worker in its init).
    ///
    /// # Errors
    /// When no region can be made (out of descriptors or memory).
    pub(crate) fn new() -> std::io::Result<ProgressWord> {
        Ok(Self::from_region(IpcSharedMemory::try_zeroed(WORDS * 8)?))
    }

    /// The word over a region received from the parent (worker side).
    /// `None` when the region is too small.
    pub(crate) fn from_region(mut region: IpcSharedMemory) -> ProgressWord {
        assert!(region.len() >= WORDS * 8, "progress region too small");
        // SAFETY: the mapping is page-aligned (so 8-byte aligned) and at
        // least WORDS * 8 bytes long; it stays mapped while `region` lives.
        // Taking the pointer through `deref_mut` once, and then touching the
        // bytes only through atomics, is what lets two processes share it.
        let words = unsafe { region.deref_mut() }.as_mut_ptr() as *const AtomicU64;
        ProgressWord { region, words }
    }

    /// The word over a region received from the parent, holding no
    /// descriptor (a worker keeps only its channel and the standard streams).
    pub(crate) fn received(mut region: IpcSharedMemory) -> ProgressWord {
        region.release_descriptor();
        Self::from_region(region)
    }

    /// The region, to send to the worker.
    ///
    /// # Errors
    /// When its descriptor cannot be duplicated (none left).
    pub(crate) fn region(&self) -> std::io::Result<IpcSharedMemory> {
        self.region.try_clone()
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < WORDS);
        // SAFETY: `i < WORDS` and the mapping holds WORDS aligned words.
        unsafe { &*self.words.add(i) }
    }

    /// Worker: a task was received (before it is queued).
    pub(crate) fn count_received(&self) {
        self.word(RECEIVED).fetch_add(1, Ordering::Release);
    }

    /// Worker: task `id` starts now (before its input is decoded: decoding
    /// runs the task's own code).
    pub(crate) fn begin(&self, id: u64) {
        self.word(STARTED).store(monotonic_ns(), Ordering::Relaxed);
        self.word(RUNNING).store(id, Ordering::Release);
        self.word(SEQ).fetch_add(1, Ordering::Release);
    }

    /// Worker: the running task ended (its result is encoded, maybe not
    /// sent yet: it is remembered as the last to end).
    pub(crate) fn end(&self) {
        let id = self.word(RUNNING).load(Ordering::Relaxed);
        self.word(LAST).store(id, Ordering::Release);
        self.word(RUNNING).store(0, Ordering::Release);
        self.word(SEQ).fetch_add(1, Ordering::Release);
    }

    /// Worker: one heartbeat (from a thread that runs no task code).
    pub(crate) fn beat(&self) {
        self.word(BEAT).fetch_add(1, Ordering::Relaxed);
    }

    /// Worker: true from a task's [`begin`](Self::begin) to its
    /// [`end`](Self::end), which comes after its output is encoded (the
    /// task type's own `Serialize`, as long as it takes) and handed on.
    pub(crate) fn is_running(&self) -> bool {
        self.word(RUNNING).load(Ordering::Acquire) != 0
    }

    /// Parent: what the worker is doing, with its start converted to this
    /// process's clock (`now` is the caller's idea of the present).
    pub(crate) fn read(&self, now: Instant) -> Progress {
        let running = self.word(RUNNING).load(Ordering::Acquire);
        let started_ns = self.word(STARTED).load(Ordering::Relaxed);
        let started = (running != 0).then(|| {
            let ago = monotonic_ns().saturating_sub(started_ns);
            now.checked_sub(Duration::from_nanos(ago)).unwrap_or(now)
        });
        Progress {
            running,
            started,
            received: self.word(RECEIVED).load(Ordering::Acquire),
            seq: self.word(SEQ).load(Ordering::Acquire),
            last_ended: self.word(LAST).load(Ordering::Acquire),
            beat: self.word(BEAT).load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_words() {
        let parent = ProgressWord::new().unwrap();
        let worker = ProgressWord::from_region(parent.region().unwrap());
        let now = Instant::now();
        assert_eq!(parent.read(now).running, 0);
        worker.count_received();
        worker.begin(42);
        let p = parent.read(Instant::now());
        assert_eq!((p.running, p.received, p.seq), (42, 1, 1));
        assert!(p.started.is_some());
        worker.end();
        let p = parent.read(Instant::now());
        assert_eq!((p.running, p.seq, p.last_ended), (0, 2, 42));
        assert!(p.started.is_none());
        worker.beat();
        assert_eq!(parent.read(Instant::now()).beat, 1);
    }
}
