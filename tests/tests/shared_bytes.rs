//! `SharedBytes` on every backend: the same tasks give the same bytes; on
//! processes a large one travels as shared memory both ways (built in
//! place by the task, echoed without a copy), and many of them leave no
//! descriptor behind.

mod common;

use common::{bounded, join};
use concur_core::prelude::*;
use concur_core::SharedBytes;
use concur_procs::ProcessPool;
use concur_threads::ThreadPool;
use serde::{Deserialize, Serialize};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(7))
        .collect()
}

/// Returns its input reversed, written in place into a new buffer.
#[derive(Serialize, Deserialize)]
struct Reverse(SharedBytes);

impl Task for Reverse {
    type Output = SharedBytes;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "shared_bytes::Reverse";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> SharedBytes {
        let mut out = SharedBytes::zeroed(self.0.len());
        for (o, i) in out.iter_mut().zip(self.0.iter().rev()) {
            *o = *i;
        }
        out
    }
}

/// Returns its input, its first byte changed when `bump` (a write to a
/// received region: it must go to a copy), and whether it arrived as
/// shared memory.
#[derive(Serialize, Deserialize)]
struct Echo {
    data: SharedBytes,
    bump: bool,
}

impl Task for Echo {
    type Output = (bool, SharedBytes);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "shared_bytes::Echo";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (bool, SharedBytes) {
        let shared = self.data.is_shared();
        let mut data = self.data;
        if self.bump {
            data[0] = data[0].wrapping_add(1);
        }
        (shared, data)
    }
}

concur_core::register!(Reverse, Echo);

/// `data` echoed by [`Echo`] on `pool`.
fn echo(pool: &ProcessPool, data: SharedBytes, bump: bool) -> (bool, SharedBytes) {
    join(pool.submit(Echo { data, bump }).unwrap()).unwrap()
}

fn threads() -> ThreadPool {
    ThreadPool::builder().workers(2).build().unwrap()
}

fn procs() -> ProcessPool {
    ProcessPool::builder().workers(2).build().unwrap()
}

fn reverse_on(pool: &impl Executor, len: usize) -> SharedBytes {
    let input = pattern(len, 3);
    let out = join(
        pool.submit(Reverse(SharedBytes::copy_from(&input)))
            .unwrap(),
    )
    .unwrap();
    let mut expect = input;
    expect.reverse();
    assert_eq!(&out[..], &expect[..], "{} bytes on {}", len, pool.backend());
    out
}

#[test]
fn a_task_builds_its_output_in_place_on_every_backend() {
    let t = threads();
    let p = procs();
    for len in [0, 10, 64 * 1024 - 1, 64 * 1024, 3 << 20] {
        reverse_on(&t, len);
        let out = reverse_on(&p, len);
        // Large outputs come back as the worker's shared memory.
        assert_eq!(out.is_shared(), len >= concur_core::shared::MIN_REGION);
    }
}

#[test]
fn an_echoed_region_travels_both_ways_and_writes_go_to_a_copy() {
    let p = procs();
    let input = pattern(1 << 20, 5);
    let sent = SharedBytes::copy_from(&input);
    assert!(sent.is_shared(), "a pool installs the region allocator");
    let (arrived_shared, back) = echo(&p, sent, false);
    assert!(arrived_shared && back.is_shared());
    assert_eq!(&back[..], &input[..]);
    // Sent again as it came back (no copy on the way), changed by the task.
    let (arrived_shared, bumped) = echo(&p, back, true);
    assert!(arrived_shared);
    assert_eq!(bumped[0], input[0].wrapping_add(1));
    assert_eq!(&bumped[1..], &input[1..]);
    // A received region written here is copied first: the worker's memory
    // is not written by the parent.
    let mut mine = bumped;
    mine[1] = mine[1].wrapping_add(1);
    assert_eq!(mine[1], input[1].wrapping_add(1));
}

#[test]
fn a_shorter_payload_decodes_to_exactly_its_bytes() {
    let p = procs();
    for (i, len) in [2 << 20, 1 << 20, 100_000, 70_000, 2 << 20]
        .into_iter()
        .enumerate()
    {
        let input = pattern(len, i as u8);
        let (_, back) = echo(&p, SharedBytes::copy_from(&input), false);
        assert_eq!(back.len(), len);
        assert_eq!(&back[..], &input[..]);
    }
}

/// The tests that count descriptors run one at a time (one holds 150
/// results at once).
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn many_large_values_leave_no_descriptor_behind() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let input = pattern(256 << 10, 9);
    let round = || {
        let (_, back) = echo(&p, SharedBytes::copy_from(&input), false);
        assert_eq!(back.len(), input.len());
    };
    for _ in 0..5 {
        round();
    }
    let before = open_descriptors();
    for _ in 0..200 {
        round();
    }
    let after = open_descriptors();
    // Other tests of this binary run in parallel: a few descriptors of
    // theirs may come and go, never one per round.
    assert!(
        after < before + 20,
        "{before} descriptors before 200 rounds, {after} after"
    );
}

#[test]
fn results_held_at_once_hold_a_bounded_number_of_descriptors() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let input = pattern(64 << 10, 4);
    let warm = join(p.submit(Reverse(SharedBytes::copy_from(&input))).unwrap()).unwrap();
    drop(warm);
    let before = open_descriptors();
    let handles: Vec<_> = (0..150)
        .map(|_| p.submit(Reverse(SharedBytes::copy_from(&input))).unwrap())
        .collect();
    let held: Vec<SharedBytes> = handles.into_iter().map(|h| join(h).unwrap()).collect();
    let during = open_descriptors();
    let mut expect = input.clone();
    expect.reverse();
    for out in &held {
        assert!(out.is_shared());
        assert_eq!(&out[..], &expect[..]);
    }
    // Each result keeps its mapping; at most 64 of them keep a descriptor
    // too (the parent's bound), and other tests' descriptors come and go.
    assert!(
        during < before + 64 + 20,
        "{before} descriptors before, {during} with 150 results held"
    );
    // The ones past the bound still go out again (as a copy).
    let last = held.into_iter().last().unwrap();
    let back = join(p.submit(Reverse(last)).unwrap()).unwrap();
    assert_eq!(&back[..], &input[..]);
}

/// Changes its input, then (first attempt only: `marker` does not exist
/// yet) ends its worker; a retry returns the first byte it received.
#[derive(Serialize, Deserialize)]
struct BumpThenCrash {
    data: SharedBytes,
    marker: std::path::PathBuf,
}

impl Task for BumpThenCrash {
    type Output = u8;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "shared_bytes::BumpThenCrash";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u8 {
        let first = self.data[0];
        let mut data = self.data;
        data[0] = data[0].wrapping_add(1);
        if std::fs::File::create_new(&self.marker).is_ok() {
            std::process::abort();
        }
        first
    }
}

concur_core::register!(BumpThenCrash);

#[test]
fn a_retry_gets_the_input_unchanged_by_the_lost_attempt() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(1)
        .build()
        .unwrap();
    let marker = std::env::temp_dir().join(format!("concur-shared-bytes-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let input = pattern(1 << 20, 1);
    let first = join(
        p.submit(BumpThenCrash {
            data: SharedBytes::copy_from(&input),
            marker: marker.clone(),
        })
        .unwrap(),
    );
    let _ = std::fs::remove_file(&marker);
    // The lost attempt wrote its own copy, not the region the parent keeps
    // for the retry.
    assert_eq!(first.unwrap(), input[0]);
}

#[test]
fn map_carries_shared_outputs_on_every_backend() {
    let t = threads();
    let p = procs();
    let input = pattern(100_000, 2);
    let mut expect = input.clone();
    expect.reverse();
    let tasks = || (0..7).map(|_| Reverse(SharedBytes::copy_from(&input)));
    for batch in [1, 3] {
        let options = concur_core::MapOptions::default().batch(batch);
        bounded("the map on processes", || {
            for out in p.map_with(tasks(), options) {
                let out = out.unwrap();
                // Each result of a batch came with its own region.
                assert!(out.is_shared());
                assert_eq!(&out[..], &expect[..]);
            }
        });
        bounded("the map on threads", || {
            for out in t.map_with(tasks(), options) {
                assert_eq!(&out.unwrap()[..], &expect[..]);
            }
        });
    }
}

/// What [`KeepOutput`] returned, kept by its worker.
static KEPT: std::sync::Mutex<Option<SharedBytes>> = std::sync::Mutex::new(None);

/// In the worker: serialises the worker's kept value, so the worker keeps
/// a handle to the very region it returns. In the parent: that value.
struct Kept(Option<SharedBytes>);

impl Serialize for Kept {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(b) => b.serialize(s),
            None => KEPT.lock().unwrap().as_ref().expect("kept").serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Kept {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kept, D::Error> {
        Ok(Kept(Some(SharedBytes::deserialize(d)?)))
    }
}

/// Builds a large value, keeps it, and returns the kept value.
#[derive(Serialize, Deserialize)]
struct KeepOutput(usize);

impl Task for KeepOutput {
    type Output = Kept;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "shared_bytes::KeepOutput";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Kept {
        let mut b = SharedBytes::zeroed(self.0);
        b.fill(1);
        *KEPT.lock().unwrap() = Some(b);
        Kept(None)
    }
}

/// Writes the value its worker kept, if it has one.
#[derive(Serialize, Deserialize)]
struct ScribbleKept(u8);

impl Task for ScribbleKept {
    type Output = bool;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "shared_bytes::ScribbleKept";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> bool {
        KEPT.lock()
            .unwrap()
            .as_mut()
            .map(|b| b.fill(self.0))
            .is_some()
    }
}

concur_core::register!(KeepOutput, ScribbleKept);

/// A region put in a frame is never written in place again by its sender,
/// even when the sender kept a handle to it: the receiver's value does not
/// change under it.
#[test]
fn a_region_once_sent_is_never_written_in_place_by_its_sender() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let got = join(p.submit(KeepOutput(1 << 20)).unwrap())
        .unwrap()
        .0
        .unwrap();
    assert!(got.is_shared(), "it came as shared memory");
    assert!(got.iter().all(|b| *b == 1));
    assert!(
        join(p.submit(ScribbleKept(0xAA)).unwrap()).unwrap(),
        "same worker"
    );
    assert!(
        got.iter().all(|b| *b == 1),
        "the worker's later write reached the parent's value"
    );
}
