//! The wire codec: how values are turned into bytes when they cross a
//! process boundary. Every backend that serializes goes through here, so the
//! format can be swapped in one place.
//!
//! The format is bincode 2 (serde mode, standard configuration). Decoding
//! is bounded for bytes from another process (claimed lengths, size hints
//! and nesting; see [`decode`]), and encoding refuses values nested deeper
//! than [`MAX_DEPTH`], so neither can abort or overflow the stack.

use std::cell::Cell;
use std::fmt;

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde::Serialize;

use crate::error::TaskError;

mod bytes;
mod de;
mod ser;
mod words;

pub use bytes::{Bytes, BytesRef};

pub use de::ZERO_SIZE_SLACK;

/// How deeply values may nest (each sequence, tuple, struct, map, enum
/// variant, option and newtype is one level), when encoding and when
/// decoding. Deeper values fail with [`ErrorKind::Codec`](crate::ErrorKind::Codec)
/// instead of overflowing the stack: a decoder facing bytes from another
/// process must not recurse as deep as those bytes say. 256 levels of the
/// guarded encoder or decoder take under 512 KiB of stack in a debug build
/// (about 1.5 KiB a level; tested on a thread with a 1 MiB stack, half of a
/// spawned thread's default), and real task values nest a handful of levels;
/// the same limit on both sides keeps everything encodable decodable.
pub const MAX_DEPTH: usize = 256;

/// The one bincode configuration of every encoding (the batch length
/// prefix that `func.rs` reads on its own included).
pub(crate) fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A cause with only a text: what serde or a limit said.
#[derive(Debug)]
struct Cause(String);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

fn encode_error(what: &str, e: bincode::error::EncodeError) -> TaskError {
    match e {
        // serde's own messages (custom errors, the depth limit) read best alone.
        bincode::error::EncodeError::OtherString(text) => TaskError::codec(what, Cause(text)),
        e => TaskError::codec(what, Cause(words::encode(&e))),
    }
}

fn decode_error(what: &str, e: bincode::error::DecodeError) -> TaskError {
    match e {
        bincode::error::DecodeError::OtherString(text) => TaskError::codec(what, Cause(text)),
        e => TaskError::codec(what, Cause(words::decode(&e))),
    }
}

/// Serializes `value` through the depth guard into `writer`.
fn encode_with<V: Serialize + ?Sized, W: bincode::enc::write::Writer>(
    value: &V,
    writer: W,
) -> Result<(), bincode::error::EncodeError> {
    let depth = ser::Depth::new();
    bincode::serde::encode_into_writer(depth.guard(value), writer, config())
}

/// Encodes `value` into a fresh buffer.
///
/// # Errors
/// [`ErrorKind::Codec`](crate::ErrorKind::Codec) naming `what` when the value
/// cannot be serialized or nests deeper than [`MAX_DEPTH`]; the cause
/// (serde's message) is the error's `source()`.
///
/// # Panics
/// When the value's `Serialize` panics ([`Payload`](crate::Payload)'s
/// encoders catch that and return [`ErrorKind::Panicked`](crate::ErrorKind::Panicked)).
pub fn encode<V: Serialize + ?Sized>(value: &V, what: &str) -> Result<Vec<u8>, TaskError> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf, what)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf` (lets callers reuse buffers).
///
/// # Errors
/// As [`encode`].
///
/// # Panics
/// As [`encode`].
pub fn encode_into<V: Serialize + ?Sized>(
    value: &V,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<usize, TaskError> {
    struct Append<'a>(&'a mut Vec<u8>);
    impl bincode::enc::write::Writer for Append<'_> {
        #[inline]
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    let start = buf.len();
    encode_with(value, Append(buf)).map_err(|e| encode_error(what, e))?;
    Ok(buf.len() - start)
}

/// The number of bytes [`encode`] produces for `value`, without producing
/// them (lets a caller allocate the destination, shared memory say, first).
///
/// # Errors
/// As [`encode`].
///
/// # Panics
/// As [`encode`].
pub fn encoded_len<V: Serialize + ?Sized>(value: &V, what: &str) -> Result<usize, TaskError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    encode_with(value, &mut size).map_err(|e| encode_error(what, e))?;
    Ok(size.bytes_written)
}

/// Encodes `value` into the start of `dst` (sized with [`encoded_len`]);
/// returns the bytes written.
///
/// # Errors
/// As [`encode`], and when `dst` is too small.
///
/// # Panics
/// As [`encode`].
pub fn encode_into_slice<V: Serialize + ?Sized>(
    value: &V,
    dst: &mut [u8],
    what: &str,
) -> Result<usize, TaskError> {
    let mut w = bincode::enc::write::SliceWriter::new(dst);
    encode_with(value, &mut w).map_err(|e| encode_error(what, e))?;
    Ok(w.bytes_written())
}

/// What [`encode_bounded`] found: the encoding itself when it is short, else
/// only its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedEncoding {
    /// The whole encoding, at most the limit long (identical to [`encode`]'s).
    Fits(Vec<u8>),
    /// The encoding is longer than the limit; this is its exact length (what
    /// [`encoded_len`] returns), counted without storing the bytes.
    Exceeds(usize),
}

/// Encodes `value` in one pass if its encoding is at most `limit` bytes;
/// when it is longer, the same pass keeps counting without storing and
/// returns the exact length instead. A caller can then send small values
/// as they are and write large ones elsewhere (shared memory, allocated at
/// that length) in a second pass: a large value's `Serialize` runs twice
/// (count, write), a small one's once. Buffers at most `limit` bytes.
///
/// # Errors
/// As [`encode`].
///
/// # Panics
/// As [`encode`].
pub fn encode_bounded<V: Serialize + ?Sized>(
    value: &V,
    limit: usize,
    what: &str,
) -> Result<BoundedEncoding, TaskError> {
    struct Bounded {
        buf: Vec<u8>,
        len: usize,
        limit: usize,
    }
    impl bincode::enc::write::Writer for Bounded {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.len = self.len.saturating_add(bytes.len());
            if self.len <= self.limit {
                self.buf.extend_from_slice(bytes);
            } else if self.buf.capacity() > 0 {
                // The bytes so far will never be sent: free them now rather
                // than hold up to `limit` for the rest of a long count.
                self.buf = Vec::new();
            }
            Ok(())
        }
    }
    let mut w = Bounded {
        buf: Vec::new(),
        len: 0,
        limit,
    };
    encode_with(value, &mut w).map_err(|e| encode_error(what, e))?;
    Ok(if w.len <= limit {
        BoundedEncoding::Fits(w.buf)
    } else {
        BoundedEncoding::Exceeds(w.len)
    })
}

thread_local! {
    /// The length of the input [`decode`] is about to read, for the guard's
    /// budgets (bincode's slice decoder is reached only through a
    /// `Deserialize` impl, which cannot take arguments).
    static INPUT_LEN: Cell<usize> = const { Cell::new(0) };
}

/// `V`, decoded through the guard.
struct Guarded<V>(V);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Guarded<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read at once: a nested `decode` (in a user's `Deserialize`) sets
        // its own length before reaching here.
        let len = INPUT_LEN.with(Cell::get);
        de::guarded(d, len).map(Guarded)
    }
}

/// Decodes a value from the start of `bytes`; trailing bytes are an error.
///
/// Safe on bytes from anywhere; whatever they hold, this returns a value or
/// an error, never aborts, overflows the stack or loops for long:
/// - a string or byte buffer is read as a slice of the input before it is
///   copied, so a claimed length the input cannot hold fails before
///   anything is allocated;
/// - the lengths of all sequences and maps together may claim at most one
///   element per input byte, plus [`ZERO_SIZE_SLACK`] for elements that
///   encode to nothing (`()`); a longer claim fails before its first element;
/// - size hints (what collections preallocate from) add up to at most one
///   element per input byte, so preallocation is a small multiple of the
///   input;
/// - nesting deeper than [`MAX_DEPTH`] fails.
///
/// bincode's own `with_limit` is not used: it is a compile-time constant
/// counted over the in-memory size of every value decoded, so any one
/// value either refuses large legitimate payloads or lets a tiny frame
/// allocate a lot; the input's own length is the bound that fits every
/// frame. How large a frame may be is the transport's to bound.
///
/// # Errors
/// [`ErrorKind::Codec`](crate::ErrorKind::Codec) naming `what` when the bytes
/// are not a valid encoding of `V` or exceed a limit; the cause (serde's or
/// the limit's message) is the error's `source()`.
///
/// # Panics
/// When `V`'s `Deserialize` panics ([`Payload::into_value`](crate::Payload::into_value)
/// catches that and returns [`ErrorKind::Panicked`](crate::ErrorKind::Panicked)).
pub fn decode<V: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<V, TaskError> {
    INPUT_LEN.with(|l| l.set(bytes.len()));
    let (Guarded(value), used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| decode_error(what, e))?;
    if used != bytes.len() {
        return Err(TaskError::codec(
            what,
            Cause(format!("{} trailing bytes", bytes.len() - used)),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (1u32, String::from("x"), vec![1u8, 2, 3]);
        let bytes = encode(&v, "test").unwrap();
        let back: (u32, String, Vec<u8>) = decode(&bytes, "test").unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn sized_encoding_matches() {
        let v = (vec![1u32; 1000], String::from("hello"), Some(3u8));
        let bytes = encode(&v, "t").unwrap();
        assert_eq!(encoded_len(&v, "t").unwrap(), bytes.len());
        let mut dst = vec![0u8; bytes.len()];
        assert_eq!(encode_into_slice(&v, &mut dst, "t").unwrap(), bytes.len());
        assert_eq!(dst, bytes);
        assert!(encode_into_slice(&v, &mut [0u8; 3], "t").is_err());
    }

    #[test]
    fn bounded_encoding_of_a_short_value_is_its_encoding() {
        for v in [vec![], vec![1u8; 10], vec![2u8; 63]] {
            assert_eq!(
                encode_bounded(&v, 64, "t").unwrap(),
                BoundedEncoding::Fits(encode(&v, "t").unwrap())
            );
        }
        // Exactly at the limit still fits.
        let at = vec![3u8; 63];
        let len = encoded_len(&at, "t").unwrap();
        assert_eq!(
            encode_bounded(&at, len, "t").unwrap(),
            BoundedEncoding::Fits(encode(&at, "t").unwrap())
        );
        assert_eq!(
            encode_bounded(&at, len - 1, "t").unwrap(),
            BoundedEncoding::Exceeds(len)
        );
    }

    #[test]
    fn bounded_encoding_of_a_long_value_is_its_exact_length() {
        let values = [
            (vec![1u32; 100], String::new()),
            (vec![7u32; 100_000], String::from("tail after the limit")),
        ];
        for v in values {
            assert_eq!(
                encode_bounded(&v, 64, "t").unwrap(),
                BoundedEncoding::Exceeds(encoded_len(&v, "t").unwrap())
            );
        }
        assert_eq!(
            encode_bounded(&vec![0u8; 1 << 20], 0, "t").unwrap(),
            BoundedEncoding::Exceeds(encode(&vec![0u8; 1 << 20], "t").unwrap().len())
        );
    }

    #[test]
    fn bounded_encoding_runs_serialize_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counted<'a>(&'a AtomicUsize, usize);
        impl Serialize for Counted<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.fetch_add(1, Ordering::Relaxed);
                s.collect_seq(std::iter::repeat_n(5u8, self.1))
            }
        }
        let calls = AtomicUsize::new(0);
        for (len, limit) in [(10, 64), (1000, 64)] {
            calls.store(0, Ordering::Relaxed);
            encode_bounded(&Counted(&calls, len), limit, "t").unwrap();
            assert_eq!(calls.load(Ordering::Relaxed), 1, "{len} bytes");
        }
    }

    #[test]
    fn bounded_encoding_keeps_errors_past_the_limit() {
        struct FailsLate;
        impl Serialize for FailsLate {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error, SerializeTuple};
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&vec![0u8; 128])?;
                drop(t);
                Err(S::Error::custom("late failure"))
            }
        }
        let err = encode_bounded(&FailsLate, 64, "late").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { what } if what == "late"));
    }

    #[test]
    fn garbage_is_codec_error() {
        let err = decode::<String>(&[0xff, 0xff, 0xff], "output").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { what } if what == "output"));
    }

    #[test]
    fn codec_causes_read_as_words() {
        use std::error::Error;
        let err = decode::<u64>(&[0xfd, 1], "output").unwrap_err();
        let cause = err.source().expect("a cause").to_string();
        assert!(
            !cause.contains('{') && !cause.contains("UnexpectedEnd"),
            "{cause}"
        );
        assert!(cause.contains("end early"), "{cause}");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&7u8, "n").unwrap();
        bytes.push(0);
        assert!(decode::<u8>(&bytes, "n").is_err());
    }
}
