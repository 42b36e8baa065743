//! A panic in a task type's own `Serialize` / `Deserialize` is that task's
//! `Panicked` error (message kept), wherever a worker runs that code:
//! decoding the input, encoding the output.

use std::error::Error as _;

use concur_core::registry::{self, TaskEntry};
use concur_core::{ErrorKind, NullPort, Payload, Task, TaskContext, TaskError, WorkerInfo};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes fine; panics when decoded with `explode == true`.
#[derive(Serialize)]
struct BadInput {
    explode: bool,
}

impl<'de> Deserialize<'de> for BadInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let explode = bool::deserialize(d)?;
        if explode {
            panic!("input deserialize exploded");
        }
        Ok(BadInput { explode })
    }
}

impl Task for BadInput {
    type Output = BadOutput;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "codec_panics::BadInput";
    fn run(self, _: &mut TaskContext<'_, Self>) -> BadOutput {
        BadOutput(7)
    }
}

concur_core::register!(BadInput);

/// An output whose `Serialize` panics for 7 and whose `Deserialize` panics for 8.
#[derive(Debug)]
struct BadOutput(u32);

impl Serialize for BadOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 7 {
            panic!("output serialize exploded");
        }
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BadOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 8 {
            panic!("output deserialize exploded");
        }
        Ok(BadOutput(n))
    }
}

fn entry() -> &'static TaskEntry {
    registry::lookup(BadInput::NAME).unwrap()
}

fn worker() -> WorkerInfo {
    WorkerInfo::current(0, 0)
}

fn assert_panicked(err: &TaskError, text: &str) {
    match err.kind() {
        ErrorKind::Panicked { message, .. } => assert_eq!(message, text),
        other => panic!("expected Panicked({text}), got {other:?}"),
    }
}

#[test]
fn panic_in_input_deserialize_is_the_tasks_panic() {
    let input = concur_core::codec::encode(&BadInput { explode: true }, "task").unwrap();
    let err = entry().run(&input, &NullPort, worker()).unwrap_err();
    assert_panicked(&err, "input deserialize exploded");
}

#[test]
fn panic_in_batch_input_deserialize_is_a_panic_error() {
    let input = concur_core::codec::encode(&vec![BadInput { explode: true }], "batch").unwrap();
    let err = entry().run_batch(&input, worker()).unwrap_err();
    assert_panicked(&err, "input deserialize exploded");
}

#[test]
fn batch_items_run_one_by_one_with_the_null_port() {
    let good = concur_core::codec::encode(&BadInput { explode: false }, "task").unwrap();
    let bad = concur_core::codec::encode(&BadInput { explode: true }, "task").unwrap();
    let results: Vec<_> = [&good, &bad, &good]
        .into_iter()
        .map(|input| entry().run(input, &NullPort, worker()))
        .collect();
    assert!(results[0].is_ok());
    assert_panicked(
        results[1].as_ref().unwrap_err(),
        "input deserialize exploded",
    );
    assert!(results[2].is_ok());
}

#[test]
fn panic_in_output_serialize_is_a_panic_error_in_every_encoder() {
    let input = concur_core::codec::encode(&BadInput { explode: false }, "task").unwrap();
    // The output (7) panics when serialized; each encoder the process
    // backend uses must say so instead of unwinding.
    let out = entry().run(&input, &NullPort, worker()).unwrap();
    assert_panicked(&out.to_bytes().unwrap_err(), "output serialize exploded");
    assert_panicked(
        &out.to_bytes_bounded(1 << 20).unwrap_err(),
        "output serialize exploded",
    );
    assert_panicked(&out.encoded_len().unwrap_err(), "output serialize exploded");
    assert_panicked(
        &out.encode_into(&mut [0u8; 64]).unwrap_err(),
        "output serialize exploded",
    );
    // Boxed (large) values as well as inline ones.
    let big = Payload::value((BadOutput(7), [0u64; 8]));
    assert_panicked(&big.to_bytes().unwrap_err(), "output serialize exploded");
}

#[test]
fn panic_in_output_deserialize_is_a_panic_error() {
    let bytes = concur_core::codec::encode(&8u32, "output").unwrap();
    let err = Payload::bytes(bytes)
        .into_value::<BadOutput>("output")
        .unwrap_err();
    assert_panicked(&err, "output deserialize exploded");
}

/// Fails to decode with a message of its own.
#[derive(Debug, Serialize)]
struct Picky(u8);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u8::deserialize(d)?;
        if n > 9 {
            return Err(serde::de::Error::custom(format_args!("{n} is not a digit")));
        }
        Ok(Picky(n))
    }
}

#[test]
fn codec_error_keeps_serde_message_across_a_process_boundary() {
    let bytes = concur_core::codec::encode(&Picky(42), "task").unwrap();
    let err = concur_core::codec::decode::<Picky>(&bytes, "task").unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Codec { what } if what == "task"));
    assert_eq!(err.to_string(), "could not encode or decode the task");
    assert_eq!(err.source().unwrap().to_string(), "42 is not a digit");
    // As a worker would send it back to its parent.
    let wire = concur_core::codec::encode(&err, "error").unwrap();
    let back: TaskError = concur_core::codec::decode(&wire, "error").unwrap();
    assert!(matches!(back.kind(), ErrorKind::Codec { what } if what == "task"));
    assert_eq!(back.to_string(), "could not encode or decode the task");
    assert_eq!(back.source().unwrap().to_string(), "42 is not a digit");
}
