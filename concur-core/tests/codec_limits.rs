//! The codec's limits, case by case: forged lengths, deep nesting and
//! zero-size floods fail with a `Codec` error (cause named) instead of
//! aborting, overflowing the stack or looping; legitimate values still
//! round-trip.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;

use concur_core::codec::{self, MAX_DEPTH};
use concur_core::{ErrorKind, TaskError};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// bincode's standard varint for a `u64` beyond `u32`: marker 253, then 8 bytes.
fn varint_u64(n: u64) -> Vec<u8> {
    let mut v = vec![253];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn codec_cause(err: &TaskError) -> String {
    assert!(
        matches!(err.kind(), ErrorKind::Codec { .. }),
        "expected a codec error, got {err:?}"
    );
    err.source()
        .expect("a codec error names its cause")
        .to_string()
}

/// Runs `f` on a thread with a 1 MiB stack (half a spawned thread's
/// default), so a decoder that recursed as deep as its input says would
/// overflow it.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn rejects<T: DeserializeOwned + fmt::Debug>(bytes: &[u8]) -> String {
    codec_cause(&codec::decode::<T>(bytes, "output").unwrap_err())
}

#[test]
fn a_string_claiming_a_tebibyte_fails_before_allocating() {
    // The 28-byte frame that made the parent abort: a 1 TiB string.
    let mut frame = varint_u64(1 << 40);
    frame.resize(28, b'a');
    rejects::<String>(&frame);
    rejects::<Vec<u8>>(&frame);
    rejects::<Vec<u64>>(&frame);
    rejects::<Vec<String>>(&frame);
    rejects::<HashMap<u64, String>>(&frame);
    rejects::<Buf>(&frame);
    rejects::<OnlyOwned>(&frame);
    rejects::<TaskError>(&frame);
}

#[test]
fn a_flood_of_zero_size_elements_fails_at_once() {
    let cause = rejects::<Vec<()>>(&varint_u64(1 << 60));
    assert!(cause.contains("more than the input can hold"), "{cause}");
    // Zero-size elements within the slack still decode.
    let v = vec![(); 1000];
    assert_eq!(
        codec::decode::<Vec<()>>(&codec::encode(&v, "v").unwrap(), "v").unwrap(),
        v
    );
}

#[test]
fn deep_input_fails_without_overflowing_the_stack() {
    let cause = on_small_stack(|| {
        // `Nest` is two levels (newtype, option) per `Some` byte.
        let mut bytes = vec![1u8; 100_000];
        bytes.push(0);
        rejects::<Nest>(&bytes)
    });
    assert!(cause.contains("nested deeper than 256 levels"), "{cause}");
}

#[test]
fn nesting_up_to_the_limit_round_trips_on_a_small_stack() {
    on_small_stack(|| {
        let levels = MAX_DEPTH / 2; // two levels per `Nest`
        let mut bytes = vec![1u8; levels - 1];
        bytes.push(0);
        let nest: Nest = codec::decode(&bytes, "n").unwrap();
        assert_eq!(codec::encode(&nest, "n").unwrap(), bytes);
        let mut deeper = vec![1u8; levels];
        deeper.push(0);
        assert!(codec::decode::<Nest>(&deeper, "n").is_err());
    });
}

#[test]
fn deep_values_fail_to_encode_without_overflowing_the_stack() {
    on_small_stack(|| {
        let deep = Deep(1_000_000);
        for err in [
            codec::encode(&deep, "task").unwrap_err(),
            codec::encoded_len(&deep, "task").unwrap_err(),
            codec::encode_bounded(&deep, 1 << 30, "task").unwrap_err(),
            codec::encode_into_slice(&deep, &mut [0u8; 1 << 12], "task").unwrap_err(),
        ] {
            let cause = codec_cause(&err);
            assert!(cause.contains("nested deeper than 256 levels"), "{cause}");
        }
        // A seq-of-seq chain is refused the same way.
        let err = codec::encode(&DeepSeq(1_000_000), "task").unwrap_err();
        assert!(codec_cause(&err).contains("nested deeper"));
        // Within the limit it encodes.
        assert!(codec::encode(&Deep(MAX_DEPTH - 1), "task").is_ok());
    });
}

#[test]
fn owned_strings_and_buffers_still_decode() {
    let s = String::from("héllo");
    assert_eq!(
        codec::decode::<String>(&codec::encode(&s, "s").unwrap(), "s").unwrap(),
        s
    );
    let b = Buf(vec![1, 2, 3]);
    let bytes = codec::encode(&b, "b").unwrap();
    assert_eq!(codec::decode::<Buf>(&bytes, "b").unwrap().0, b.0);
    // A visitor that only takes owned strings is still given one.
    let bytes = codec::encode("owned", "o").unwrap();
    assert_eq!(codec::decode::<OnlyOwned>(&bytes, "o").unwrap().0, "owned");
    let m: HashMap<String, Vec<u32>> = [("a".into(), vec![1, 2]), ("b".into(), vec![])].into();
    let back: HashMap<String, Vec<u32>> =
        codec::decode(&codec::encode(&m, "m").unwrap(), "m").unwrap();
    assert_eq!(back, m);
}

#[test]
fn trailing_bytes_are_named_in_the_cause() {
    let bytes = codec::encode(&String::from("x"), "s").unwrap();
    let cause = rejects::<OnlyOwned>(&[bytes.as_slice(), &[0xff]].concat());
    assert!(cause.contains("trailing"), "{cause}");
}

/// A linked list that nests one option and one newtype per link.
#[derive(Debug, Serialize, Deserialize)]
struct Nest(Option<Box<Nest>>);

/// A value `n` newtypes deep, produced lazily (no deep value in memory).
struct Deep(usize);

impl Serialize for Deep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            s.serialize_unit()
        } else {
            s.serialize_newtype_struct("Deep", &Deep(self.0 - 1))
        }
    }
}

/// A value `n` one-element sequences deep.
struct DeepSeq(usize);

impl Serialize for DeepSeq {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1))?;
        if self.0 > 0 {
            seq.serialize_element(&DeepSeq(self.0 - 1))?;
        }
        seq.end()
    }
}

/// A byte buffer decoded through `deserialize_byte_buf`.
#[derive(Debug, PartialEq)]
struct Buf(Vec<u8>);

impl Serialize for Buf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Buf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Buf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                Ok(Buf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A string whose visitor accepts only owned strings.
#[derive(Debug)]
struct OnlyOwned(String);

// Deliberately only the owned form (`visit_string`): the guard, which reads
// a borrowed string, must still hand this visitor an owned one.
#[allow(clippy::serde_api_misuse)]
impl<'de> Deserialize<'de> for OnlyOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = OnlyOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an owned string")
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<OnlyOwned, E> {
                Ok(OnlyOwned(v))
            }
        }
        d.deserialize_string(V)
    }
}
