//! [`Payload`]: a value in flight between a caller and a task, either moved
//! (threads) or encoded (processes). Backends carry payloads; the typed API
//! in core turns them back into values.

use std::any::Any;
use std::fmt;

use crate::codec;
use crate::error::TaskError;
use crate::task::Message;

/// A type-erased message that can be moved as a value or encoded as bytes.
trait Erased: Send {
    fn encode(&self) -> Result<Vec<u8>, TaskError>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<M: Message> Erased for M {
    fn encode(&self) -> Result<Vec<u8>, TaskError> {
        codec::encode(self, std::any::type_name::<M>())
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A value travelling between caller and task.
///
/// In-process backends keep it as a [`Payload::value`] (moved, never
/// serialized); process backends turn it into bytes with
/// [`Payload::to_bytes`] and hand received bytes back as [`Payload::bytes`].
pub struct Payload(Inner);

enum Inner {
    Value(Box<dyn Erased>),
    Bytes(Box<dyn AsRef<[u8]> + Send>),
}

impl Payload {
    /// Wraps a value to be moved.
    pub fn value<M: Message>(value: M) -> Self {
        Payload(Inner::Value(Box::new(value)))
    }

    /// Wraps received bytes (a `Vec<u8>`, a shared-memory region, ...).
    pub fn bytes(bytes: impl AsRef<[u8]> + Send + 'static) -> Self {
        Payload(Inner::Bytes(Box::new(bytes)))
    }

    /// True when the payload holds encoded bytes rather than a value.
    pub fn is_encoded(&self) -> bool {
        matches!(self.0, Inner::Bytes(_))
    }

    /// The encoded form of the payload (encodes a value; copies bytes).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the value cannot be encoded.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TaskError> {
        match &self.0 {
            Inner::Value(v) => v.encode(),
            Inner::Bytes(b) => Ok(b.as_ref().as_ref().to_vec()),
        }
    }

    /// Turns the payload back into a `M`: a moved value is downcast, bytes are decoded.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the bytes do not decode
    /// or the value is of another type.
    pub fn into_value<M: Message>(self, what: &str) -> Result<M, TaskError> {
        match self.0 {
            Inner::Value(v) => v.into_any().downcast::<M>().map(|b| *b).map_err(|_| {
                TaskError::codec(
                    what,
                    std::io::Error::other(format!(
                        "payload is not a {}",
                        std::any::type_name::<M>()
                    )),
                )
            }),
            Inner::Bytes(b) => codec::decode((*b).as_ref(), what),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Value(_) => f.write_str("Payload::Value(..)"),
            Inner::Bytes(b) => write!(f, "Payload::Bytes({} bytes)", (**b).as_ref().len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_moves_and_bytes_decode() {
        let p = Payload::value(String::from("hi"));
        assert!(!p.is_encoded());
        let bytes = p.to_bytes().unwrap();
        assert_eq!(
            Payload::bytes(bytes).into_value::<String>("m").unwrap(),
            "hi"
        );
        assert_eq!(Payload::value(5u64).into_value::<u64>("m").unwrap(), 5);
    }

    #[test]
    fn wrong_type_is_codec_error() {
        let err = Payload::value(5u64).into_value::<String>("m").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { .. }));
    }
}
