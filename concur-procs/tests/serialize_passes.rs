//! How many times a value's `Serialize` (user code, which may count, log or
//! take a lock) runs when it crosses the process boundary: once for a value
//! that travels inline, twice (count, then write into shared memory) for
//! one above the shared-memory threshold. Inputs, outputs and messages both
//! ways.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{join, Blob, DEADLINE};
use concur_procs::{Configure, Executor, ProcessPool, Task, TaskContext, DEFAULT_SHM_THRESHOLD};
use serde::{Deserialize, Serialize};

/// `Serialize` calls of [`Counted`] values in this process.
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// The tests of this binary count calls in one static of the parent: one
/// at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Bytes of a given length whose `Serialize` counts its calls in
/// [`CALLS`] and writes that call's number (1 for the first call since
/// the count was reset) beside the bytes: a decoded value says which pass
/// its bytes came from.
#[derive(Debug)]
struct Counted {
    len: usize,
    /// The call number the decoded bytes carry (0 in a value made here).
    pass: u8,
}

impl Counted {
    fn of(len: usize) -> Self {
        Counted { len, pass: 0 }
    }
}

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let call = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        // One byte whatever the count: every pass encodes the same length.
        let pass = u8::try_from(call).unwrap_or(u8::MAX);
        (pass, Blob(vec![1; self.len])).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (pass, bytes) = <(u8, Blob)>::deserialize(d)?;
        Ok(Counted {
            len: bytes.0.len(),
            pass,
        })
    }
}

/// Sends its caller a [`Counted`] of `len` bytes, receives one back, and
/// returns one of `len` bytes beside what it saw.
#[derive(Debug, Serialize, Deserialize)]
struct Passes {
    input: Counted,
    len: usize,
}

/// What a [`Passes`] task saw in its worker.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    /// The pass of the parent's whose bytes the input came from.
    input_pass: u8,
    input_len: usize,
    /// The worker's `Serialize` calls for the message it sent.
    message_calls: usize,
    /// The pass of the parent's whose bytes the caller's message came from.
    reply_pass: u8,
    reply_len: usize,
}

impl Task for Passes {
    type Output = (Seen, Counted);
    type ToCaller = Counted;
    type FromCaller = Counted;
    const NAME: &'static str = "procs-serialize-passes::Passes";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> (Seen, Counted) {
        CALLS.store(0, Ordering::SeqCst);
        cx.send(Counted::of(self.len)).unwrap();
        let message_calls = CALLS.load(Ordering::SeqCst);
        let reply = cx.recv_timeout(DEADLINE).expect("the caller's message");
        // Counted afresh from here: the output's pass number is the
        // worker's number of calls for it.
        CALLS.store(0, Ordering::SeqCst);
        let seen = Seen {
            input_pass: self.input.pass,
            input_len: self.input.len,
            message_calls,
            reply_pass: reply.pass,
            reply_len: reply.len,
        };
        (seen, Counted::of(self.len))
    }
}

concur_procs::register!(Passes);

/// Runs one [`Passes`] task with values of `len` bytes each way and checks
/// that every one was serialized `passes` times, on each side.
fn check(len: usize, passes: usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = ProcessPool::builder().workers(1).build().unwrap();
    CALLS.store(0, Ordering::SeqCst);
    let h = p
        .submit(Passes {
            input: Counted::of(len),
            len,
        })
        .unwrap();
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        passes,
        "the input, in the parent"
    );
    let msg = h.recv_timeout(DEADLINE).expect("the task's message");
    let want = u8::try_from(passes).unwrap();
    assert_eq!(
        (msg.len, msg.pass),
        (len, want),
        "the task's message carries the bytes of the worker's last pass"
    );
    CALLS.store(0, Ordering::SeqCst);
    h.send(Counted::of(len)).unwrap();
    // A caller's message is encoded once, whatever its size.
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the caller's message");
    let (seen, out) = join(h).unwrap();
    assert_eq!(
        (seen.input_len, seen.input_pass),
        (len, want),
        "the input carries the bytes of the parent's last pass"
    );
    assert_eq!(
        seen.message_calls, passes,
        "the task's message, in the worker"
    );
    assert_eq!((seen.reply_len, seen.reply_pass), (len, 1));
    assert_eq!(
        (out.len, out.pass),
        (len, want),
        "the output, in the worker: the bytes of its last pass"
    );
}

#[test]
fn a_short_value_is_serialized_once() {
    check(100, 1);
}

#[test]
fn a_value_above_the_threshold_is_serialized_twice() {
    // 1 MiB: well above the threshold.
    check(16 * DEFAULT_SHM_THRESHOLD, 2);
}
