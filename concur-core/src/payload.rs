//! [`Payload`]: a value in flight between a caller and a task, either moved
//! (threads) or encoded (processes). Backends carry payloads; the typed API
//! in core turns them back into values.

use std::any::{Any, TypeId};
use std::fmt;
use std::mem::{self, MaybeUninit};
use std::sync::Arc;

use crate::codec::{self, BoundedEncoding};
use crate::error::TaskError;
use crate::panic;
use crate::shared::{self, Region};
use crate::task::Message;

/// A type-erased message that can be moved as a value or encoded as bytes.
trait Erased: Send {
    fn encode(&self) -> Result<Vec<u8>, TaskError>;
    fn encoded_len(&self) -> Result<usize, TaskError>;
    fn encode_into(&self, dst: &mut [u8]) -> Result<usize, TaskError>;
    fn encode_bounded(&self, limit: usize) -> Result<BoundedEncoding, TaskError>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<M: Message> Erased for M {
    fn encode(&self) -> Result<Vec<u8>, TaskError> {
        codec::encode(self, std::any::type_name::<M>())
    }
    fn encoded_len(&self) -> Result<usize, TaskError> {
        codec::encoded_len(self, std::any::type_name::<M>())
    }
    fn encode_into(&self, dst: &mut [u8]) -> Result<usize, TaskError> {
        codec::encode_into_slice(self, dst, std::any::type_name::<M>())
    }
    fn encode_bounded(&self, limit: usize) -> Result<BoundedEncoding, TaskError> {
        codec::encode_bounded(self, limit, std::any::type_name::<M>())
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
///
/// Encoding and decoding run the value type's own `Serialize` and
/// `Deserialize`, which are user code: a panic in them is caught and
/// returned as [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) (message
/// and location kept), the task's error, never the worker's death.
pub struct Payload(Inner);

/// Runs user serde code, a panic in it becoming the `Panicked` error.
fn caught<R>(f: impl FnOnce() -> Result<R, TaskError>) -> Result<R, TaskError> {
    panic::catch(f)?
}

enum Inner {
    /// A value small enough to live inline: most outputs (numbers, small
    /// structs) then cost no allocation on the thread backend's hot path.
    Small(Small),
    Value(Box<dyn Erased>),
    /// Encoded bytes, and the shared-memory regions that travelled beside
    /// them (see [`crate::shared`]): one list, or one per item of a batch's
    /// results.
    Bytes(Box<dyn AsRef<[u8]> + Send>, Vec<Vec<Arc<dyn Region>>>),
}

/// Room for an inline value, in words.
const SMALL_WORDS: usize = 3;

/// A value of some `Message` type stored inline, with the functions that
/// know its type.
struct Small {
    data: MaybeUninit<[usize; SMALL_WORDS]>,
    vt: &'static SmallVt,
}

struct SmallVt {
    type_id: fn() -> TypeId,
    /// Views the value at the pointer (which must hold a live value of the
    /// type) as an [`Erased`], for encoding.
    erased: fn(*const u8) -> *const dyn Erased,
    /// Drops the value at the pointer in place.
    drop: unsafe fn(*mut u8),
}

trait HasSmallVt {
    const VT: SmallVt;
}

impl<M: Message> HasSmallVt for M {
    const VT: SmallVt = SmallVt {
        type_id: TypeId::of::<M>,
        erased: erased_small::<M>,
        drop: drop_small::<M>,
    };
}

/// Only attaches `M`'s vtable to the pointer; using the result requires
/// `p` to point to a live, properly aligned `M`.
fn erased_small<M: Message>(p: *const u8) -> *const dyn Erased {
    p.cast::<M>() as *const dyn Erased
}

/// # Safety
/// `p` points to a live, properly aligned `M` that is not used afterwards.
unsafe fn drop_small<M: Message>(p: *mut u8) {
    // SAFETY: the caller guarantees `p` holds a live `M` it gives up.
    unsafe { std::ptr::drop_in_place(p.cast::<M>()) }
}

impl Small {
    fn fits<M>() -> bool {
        mem::size_of::<M>() <= mem::size_of::<[usize; SMALL_WORDS]>()
            && mem::align_of::<M>() <= mem::align_of::<[usize; SMALL_WORDS]>()
    }

    /// Stores `value` inline. Only called when [`Small::fits`] holds for `M`.
    fn new<M: Message>(value: M) -> Self {
        debug_assert!(Self::fits::<M>());
        let mut data = MaybeUninit::<[usize; SMALL_WORDS]>::uninit();
        // SAFETY: `fits` checked that `M`'s size and alignment fit the buffer.
        unsafe { data.as_mut_ptr().cast::<M>().write(value) };
        Small {
            data,
            vt: &<M as HasSmallVt>::VT,
        }
    }

    fn ptr(&self) -> *const u8 {
        self.data.as_ptr().cast()
    }

    fn erased(&self) -> &dyn Erased {
        // SAFETY: a `Small` always holds a live value of its vtable's type,
        // and the reference does not outlive `self`.
        unsafe { &*(self.vt.erased)(self.ptr()) }
    }

    /// Moves the value out if it is an `M`.
    fn take<M: Message>(self) -> Result<M, Self> {
        if (self.vt.type_id)() != TypeId::of::<M>() {
            return Err(self);
        }
        let this = mem::ManuallyDrop::new(self);
        // SAFETY: the type ids match, so the buffer holds a live `M`; `this`
        // is never dropped, so the value is moved out exactly once.
        Ok(unsafe { this.ptr().cast::<M>().read() })
    }
}

impl Drop for Small {
    fn drop(&mut self) {
        // SAFETY: a `Small` always holds a live value of its vtable's type
        // (`take` forgets the `Small` it moves out of).
        unsafe { (self.vt.drop)(self.data.as_mut_ptr().cast()) }
    }
}

impl Payload {
    /// Wraps a value to be moved.
    pub fn value<M: Message>(value: M) -> Self {
        if Small::fits::<M>() {
            return Payload(Inner::Small(Small::new(value)));
        }
        Payload(Inner::Value(Box::new(value)))
    }

    /// Wraps received bytes (a `Vec<u8>`, a shared-memory region, ...).
    pub fn bytes(bytes: impl AsRef<[u8]> + Send + 'static) -> Self {
        Payload(Inner::Bytes(Box::new(bytes), Vec::new()))
    }

    /// Wraps received bytes and the shared-memory regions that came with
    /// them: the [`SharedBytes`](crate::SharedBytes) values the bytes name
    /// by index are those regions (see [`crate::shared::collect_regions`]).
    pub fn bytes_with_regions(
        bytes: impl AsRef<[u8]> + Send + 'static,
        regions: Vec<Arc<dyn Region>>,
    ) -> Self {
        Payload(Inner::Bytes(Box::new(bytes), vec![regions]))
    }

    /// Wraps a batch's encoded results (see
    /// [`encode_batch_items`](crate::encode_batch_items)) and, for each item,
    /// the shared-memory regions that came with its output.
    pub fn batch_with_regions(
        bytes: impl AsRef<[u8]> + Send + 'static,
        items: Vec<Vec<Arc<dyn Region>>>,
    ) -> Self {
        Payload(Inner::Bytes(Box::new(bytes), items))
    }

    /// Takes the per-item regions of a batch's results (empty lists when
    /// none came), for [`decode_batch_items_with`](crate::batch::decode_batch_items_with).
    pub(crate) fn take_item_regions(&mut self) -> Vec<Vec<Arc<dyn Region>>> {
        match &mut self.0 {
            Inner::Bytes(_, items) => std::mem::take(items),
            _ => Vec::new(),
        }
    }

    /// True when the payload holds encoded bytes rather than a value.
    pub fn is_encoded(&self) -> bool {
        self.as_encoded().is_some()
    }

    /// The encoded bytes, when the payload holds bytes rather than a value
    /// (borrowed: no copy).
    pub fn as_encoded(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Bytes(b, _) => Some(b.as_ref().as_ref()),
            _ => None,
        }
    }

    /// The encoded form of the payload (encodes a value; copies bytes).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the value cannot be
    /// encoded; [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) when its
    /// `Serialize` panics.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TaskError> {
        match &self.0 {
            Inner::Small(s) => caught(|| s.erased().encode()),
            Inner::Value(v) => caught(|| v.encode()),
            Inner::Bytes(b, _) => Ok(b.as_ref().as_ref().to_vec()),
        }
    }

    /// The encoded form if it is at most `limit` bytes long, else its exact
    /// length, in one pass of the value's `Serialize` either way (see
    /// [`codec::encode_bounded`]): a large value then needs only one more
    /// pass, [`encode_into`](Self::encode_into) a destination of that length.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes).
    pub fn to_bytes_bounded(&self, limit: usize) -> Result<BoundedEncoding, TaskError> {
        match &self.0 {
            Inner::Small(s) => caught(|| s.erased().encode_bounded(limit)),
            Inner::Value(v) => caught(|| v.encode_bounded(limit)),
            Inner::Bytes(b, _) => {
                let b = b.as_ref().as_ref();
                Ok(if b.len() <= limit {
                    BoundedEncoding::Fits(b.to_vec())
                } else {
                    BoundedEncoding::Exceeds(b.len())
                })
            }
        }
    }

    /// The length of [`to_bytes`](Self::to_bytes)'s result, without encoding.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes).
    pub fn encoded_len(&self) -> Result<usize, TaskError> {
        match &self.0 {
            Inner::Small(s) => caught(|| s.erased().encoded_len()),
            Inner::Value(v) => caught(|| v.encoded_len()),
            Inner::Bytes(b, _) => Ok(b.as_ref().as_ref().len()),
        }
    }

    /// Writes the encoded form into the start of `dst` (sized with
    /// [`encoded_len`](Self::encoded_len)), so a process backend can encode
    /// straight into shared memory. Returns the bytes written.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes), and when `dst` is too small.
    pub fn encode_into(&self, dst: &mut [u8]) -> Result<usize, TaskError> {
        match &self.0 {
            Inner::Small(s) => caught(|| s.erased().encode_into(dst)),
            Inner::Value(v) => caught(|| v.encode_into(dst)),
            Inner::Bytes(b, _) => {
                let b = b.as_ref().as_ref();
                let to = dst.get_mut(..b.len()).ok_or_else(|| {
                    TaskError::codec("payload", std::io::Error::other("destination too small"))
                })?;
                to.copy_from_slice(b);
                Ok(b.len())
            }
        }
    }

    /// Turns the payload back into a `M`: a moved value is downcast, bytes are decoded.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the bytes do not decode
    /// or the value is of another type; [`ErrorKind::Panicked`](crate::ErrorKind::Panicked)
    /// when `M`'s `Deserialize` panics.
    pub fn into_value<M: Message>(self, what: &str) -> Result<M, TaskError> {
        let wrong_type = || {
            TaskError::codec(
                what,
                std::io::Error::other(format!("payload is not a {}", std::any::type_name::<M>())),
            )
        };
        match self.0 {
            Inner::Small(s) => s.take::<M>().map_err(|_| wrong_type()),
            Inner::Value(v) => v
                .into_any()
                .downcast::<M>()
                .map(|b| *b)
                .map_err(|_| wrong_type()),
            Inner::Bytes(b, regions) => {
                let regions = regions.into_iter().next().unwrap_or_default();
                caught(|| shared::provide_regions(regions, || codec::decode((*b).as_ref(), what)))
            }
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Small(_) | Inner::Value(_) => f.write_str("Payload::Value(..)"),
            Inner::Bytes(b, _) => write!(f, "Payload::Bytes({} bytes)", (**b).as_ref().len()),
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
    fn small_and_large_values_move_and_drop_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        // An Arc counts drops: it is small (one word), a Vec of them is not.
        let counter = Arc::new(AtomicUsize::new(0));
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Tracked {
            #[serde(skip)]
            drops: Option<Arc<AtomicUsize>>,
        }
        impl Drop for Tracked {
            fn drop(&mut self) {
                if let Some(c) = &self.drops {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        drop(Payload::value(Tracked {
            drops: Some(counter.clone()),
        }));
        assert_eq!(
            counter.load(Ordering::SeqCst),
            1,
            "inline value dropped once"
        );
        let back: Tracked = Payload::value(Tracked {
            drops: Some(counter.clone()),
        })
        .into_value("m")
        .unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 1, "moved out, not dropped");
        drop(back);
        assert_eq!(counter.load(Ordering::SeqCst), 2);
        let p = Payload::value(Tracked {
            drops: Some(counter.clone()),
        });
        assert!(p.into_value::<u64>("m").is_err());
        assert_eq!(
            counter.load(Ordering::SeqCst),
            3,
            "a failed take still drops"
        );
        let big = vec![7u64; 3];
        let p = Payload::value((big.clone(), [0u64; 8]));
        assert_eq!(
            p.to_bytes().unwrap(),
            crate::codec::encode(&(big.clone(), [0u64; 8]), "x").unwrap()
        );
        assert_eq!(p.into_value::<(Vec<u64>, [u64; 8])>("m").unwrap().0, big);
    }

    #[test]
    fn sized_encoding_of_every_kind() {
        let big = (vec![9u64; 50], String::from("x"));
        for p in [
            Payload::value(7u32),
            Payload::value(big.clone()),
            Payload::bytes(crate::codec::encode(&big, "b").unwrap()),
        ] {
            let bytes = p.to_bytes().unwrap();
            assert_eq!(p.encoded_len().unwrap(), bytes.len());
            assert_eq!(
                p.to_bytes_bounded(bytes.len()).unwrap(),
                BoundedEncoding::Fits(bytes.clone())
            );
            assert_eq!(
                p.to_bytes_bounded(bytes.len() - 1).unwrap(),
                BoundedEncoding::Exceeds(bytes.len())
            );
            let mut dst = vec![0u8; bytes.len()];
            assert_eq!(p.encode_into(&mut dst).unwrap(), bytes.len());
            assert_eq!(dst, bytes);
        }
    }

    #[test]
    fn wrong_type_is_codec_error() {
        let err = Payload::value(5u64).into_value::<String>("m").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { .. }));
    }
}
