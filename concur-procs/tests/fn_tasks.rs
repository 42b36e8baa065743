//! Function tasks on worker processes: the function runs in a worker, and
//! bytes that do not name a function of this program (a tampered or
//! garbage descriptor offset) fail their task with a typed `Codec` error
//! while the worker lives on.

concur_procs::enable_test_support!();

mod common;

use common::join;
use concur_procs::core::{codec, FnTask, FN_TASK_NAME};
use concur_procs::{Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, Task, TaskContext};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn square(x: u64) -> u64 {
    x * x
}

/// Raw bytes sent under the function-task name, as if a genuine function
/// task's encoding had been tampered with on the way: they reach the
/// worker's function-task entry as they are (no length prefix).
#[derive(Debug, Clone)]
struct Forged(Vec<u8>);

impl Serialize for Forged {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Forged {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("forged bytes are only ever sent"))
    }
}

impl Task for Forged {
    type Output = u64;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = FN_TASK_NAME;
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u64 {
        unreachable!("forged bytes run only as the function-task entry in a worker")
    }
}

/// The encoding of the genuine task `square(3)`: an 8-byte descriptor
/// offset, then the input.
fn genuine() -> Vec<u8> {
    codec::encode(&FnTask::new(square, 3), "task").unwrap()
}

fn with_offset(offset: u64) -> Forged {
    let mut bytes = genuine();
    bytes[..8].copy_from_slice(&offset.to_le_bytes());
    Forged(bytes)
}

fn pids(p: &ProcessPool) -> Vec<u32> {
    p.worker_pids().into_iter().flatten().collect()
}

#[test]
fn a_function_task_runs_in_a_worker_process() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let pid = join(p.submit_fn(|(): ()| std::process::id(), ()).unwrap()).unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(pids(&p), [pid]);
    assert_eq!(join(p.submit_fn(square, 5).unwrap()).unwrap(), 25);
}

#[test]
fn a_tampered_or_garbage_offset_is_a_codec_error_and_the_worker_lives() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    // The genuine bytes, sent the same way, run: the path itself works.
    assert_eq!(join(p.submit(Forged(genuine())).unwrap()).unwrap(), 9);
    let before = pids(&p);
    let offset = u64::from_le_bytes(genuine()[..8].try_into().unwrap());
    let tampered = [
        ("one byte off", with_offset(offset.wrapping_add(1))),
        ("one word off", with_offset(offset.wrapping_add(8))),
        ("one word before", with_offset(offset.wrapping_sub(8))),
        ("the anchor", with_offset(0)),
        ("garbage", with_offset(0x4141_4141_4141_4141)),
        ("far below", with_offset(u64::MAX - 4095)),
        ("too short", Forged(vec![1, 2, 3])),
        ("empty", Forged(Vec::new())),
    ];
    for (what, task) in tampered {
        let e = join(p.submit(task).unwrap()).expect_err(what);
        assert!(
            matches!(e.kind(), ErrorKind::Codec { .. }),
            "{what}: expected Codec, got {e:?}"
        );
    }
    assert_eq!(pids(&p), before, "the worker survived every refusal");
    assert_eq!(join(p.submit_fn(square, 4).unwrap()).unwrap(), 16);
}

#[test]
fn a_genuine_offset_with_a_bad_input_names_the_function() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let mut bytes = genuine();
    bytes.truncate(8);
    bytes.push(0xff); // a varint marker with no bytes after it
    let e = join(p.submit(Forged(bytes)).unwrap()).unwrap_err();
    match e.kind() {
        ErrorKind::Codec { what } => assert!(what.contains("square"), "{what}"),
        other => panic!("expected Codec, got {other:?}"),
    }
}

#[test]
fn in_a_batch_only_the_tampered_item_fails() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let batch = vec![
        Forged(genuine()),
        with_offset(0x4141_4141_4141_4141),
        Forged(genuine()),
    ];
    let results = p
        .submit_batch(batch)
        .unwrap()
        .join_timeout(common::DEADLINE)
        .unwrap_or_else(|_| panic!("the batch did not finish in time"));
    assert_eq!(*results[0].as_ref().unwrap(), 9);
    assert!(matches!(
        results[1].as_ref().unwrap_err().kind(),
        ErrorKind::Codec { .. }
    ));
    assert_eq!(*results[2].as_ref().unwrap(), 9);
}
