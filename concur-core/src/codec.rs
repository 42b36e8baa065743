//! The wire codec: how values are turned into bytes when they cross a
//! process boundary. Every backend that serializes goes through here, so the
//! format can be swapped in one place.
//!
//! The format is bincode 2 (serde mode, standard configuration).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::TaskError;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into a fresh buffer.
///
/// # Errors
/// [`ErrorKind::Codec`](crate::ErrorKind::Codec) naming `what` when the value
/// cannot be serialized.
pub fn encode<V: Serialize + ?Sized>(value: &V, what: &str) -> Result<Vec<u8>, TaskError> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf, what)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf` (lets callers reuse buffers).
///
/// # Errors
/// As [`encode`].
pub fn encode_into<V: Serialize + ?Sized>(
    value: &V,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<usize, TaskError> {
    bincode::serde::encode_into_std_write(value, buf, config())
        .map_err(|e| TaskError::codec(what, e))
}

/// The number of bytes [`encode`] produces for `value`, without producing
/// them (lets a caller allocate the destination, shared memory say, first).
///
/// # Errors
/// As [`encode`].
pub fn encoded_len<V: Serialize + ?Sized>(value: &V, what: &str) -> Result<usize, TaskError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .map_err(|e| TaskError::codec(what, e))?;
    Ok(size.bytes_written)
}

/// Encodes `value` into the start of `dst` (sized with [`encoded_len`]);
/// returns the bytes written.
///
/// # Errors
/// As [`encode`], and when `dst` is too small.
pub fn encode_into_slice<V: Serialize + ?Sized>(
    value: &V,
    dst: &mut [u8],
    what: &str,
) -> Result<usize, TaskError> {
    bincode::serde::encode_into_slice(value, dst, config()).map_err(|e| TaskError::codec(what, e))
}

/// Encodes `value` if its encoding is at most `limit` bytes; `None` (after
/// at most `limit` bytes of work) when it is longer. Lets a caller encode
/// small values in one pass and send large ones elsewhere (shared memory,
/// sized with [`encoded_len`]).
///
/// # Errors
/// As [`encode`].
pub fn encode_bounded<V: Serialize + ?Sized>(
    value: &V,
    limit: usize,
    what: &str,
) -> Result<Option<Vec<u8>>, TaskError> {
    struct Bounded {
        buf: Vec<u8>,
        limit: usize,
        over: bool,
    }
    impl bincode::enc::write::Writer for Bounded {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            if self.buf.len() + bytes.len() > self.limit {
                self.over = true;
                return Err(bincode::error::EncodeError::Other("over the limit"));
            }
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }
    let mut w = Bounded {
        buf: Vec::new(),
        limit,
        over: false,
    };
    match bincode::serde::encode_into_writer(value, &mut w, config()) {
        Ok(()) => Ok(Some(w.buf)),
        Err(_) if w.over => Ok(None),
        Err(e) => Err(TaskError::codec(what, e)),
    }
}

/// Decodes a value from the start of `bytes`; trailing bytes are an error.
///
/// # Errors
/// [`ErrorKind::Codec`](crate::ErrorKind::Codec) naming `what` when the bytes
/// are not a valid encoding of `V`.
pub fn decode<V: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<V, TaskError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| TaskError::codec(what, e))?;
    if used != bytes.len() {
        return Err(TaskError::codec(
            what,
            std::io::Error::other(format!("{} trailing bytes", bytes.len() - used)),
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
    fn bounded_encoding_stops_at_the_limit() {
        let small = vec![1u8; 10];
        assert_eq!(
            encode_bounded(&small, 64, "t").unwrap(),
            Some(encode(&small, "t").unwrap())
        );
        assert_eq!(encode_bounded(&vec![1u8; 100], 64, "t").unwrap(), None);
    }

    #[test]
    fn garbage_is_codec_error() {
        let err = decode::<String>(&[0xff, 0xff, 0xff], "output").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { what } if what == "output"));
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&7u8, "n").unwrap();
        bytes.push(0);
        assert!(decode::<u8>(&bytes, "n").is_err());
    }
}
