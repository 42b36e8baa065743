//! [`SharedBytes`]: a large byte buffer that crosses a process boundary
//! without being encoded, copied or decoded.
//!
//! One type for every backend. On threads it is a buffer that moves with
//! the value. A process backend installs an allocator
//! ([`set_region_allocator`]), so a large `SharedBytes` lives in shared
//! memory; encoding it through that backend writes only an index into the
//! value's bytes and hands the region itself to the frame
//! ([`collect_regions`]); the receiver maps it and the decoded value reads
//! it in place ([`provide_regions`]). Encoded anywhere else (a backend that
//! serialises to a store, say), it is written as its bytes, and decodes to a
//! buffer.
//!
//! A region that came from another process, or that has been handed to one,
//! is never written in place: writing through [`DerefMut`] first copies it
//! into memory of this value's own. So a task that changes its input does
//! not change what a retry of that task would receive, and the receiver of
//! a region never writes memory its sender still reads. Its bytes can still
//! change under a reader if the *other* process keeps its mapping and writes
//! it: a parent that does not trust its workers copies what it needs
//! ([`SharedBytes::into_vec`]) before relying on it twice.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::codec::{Bytes, BytesRef};

/// Memory a backend lends to a [`SharedBytes`] (for backends: user code
/// only sees `SharedBytes`).
pub trait Region: Send + Sync + 'static {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes for writing in place, when no other process can see them
    /// (made here and never handed out); `None` otherwise, and the caller
    /// copies.
    fn bytes_mut(&mut self) -> Option<&mut [u8]>;
    /// The backend's own type, to hand the region to a frame.
    fn as_any(&self) -> &dyn Any;
}

/// Makes a zero-filled region of the given length, or `None` when none can
/// be made (then a buffer is used).
pub type RegionAllocator = fn(usize) -> Option<Box<dyn Region>>;

static ALLOCATOR: OnceLock<RegionAllocator> = OnceLock::new();

/// Below this many bytes a [`SharedBytes`] is an ordinary buffer: a region
/// costs a descriptor and a mapping, and small values travel inline anyway.
pub const MIN_REGION: usize = 64 * 1024;

/// Installs the allocator that large [`SharedBytes`] get their memory from
/// (a process backend does this once; the first call wins).
pub fn set_region_allocator(allocator: RegionAllocator) {
    let _ = ALLOCATOR.set(allocator);
}

/// Regions offered to a decoding, each taken at most once.
type Offered = Vec<Option<Arc<dyn Region>>>;

thread_local! {
    /// Regions met while encoding with [`collect_regions`].
    static OUT: RefCell<Option<Vec<Arc<dyn Region>>>> = const { RefCell::new(None) };
    /// Regions for decoding with [`provide_regions`].
    static IN: RefCell<Option<Offered>> = const { RefCell::new(None) };
}

/// Runs `f` with `key` set to `value`, then puts the outer value back (even
/// if `f` unwinds); returns what `f` returned and what `key` held at its end.
fn with_local<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> (R, Option<T>) {
    struct Restore<T: 'static>(
        &'static std::thread::LocalKey<RefCell<Option<T>>>,
        Option<T>,
    );
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let outer = self.1.take();
            self.0.with(|k| *k.borrow_mut() = outer);
        }
    }
    let _restore = Restore(key, key.with(|k| k.replace(Some(value))));
    let r = f();
    (r, key.with(|k| k.borrow_mut().take()))
}

/// Runs `f` (an encoding) so that every region-backed [`SharedBytes`] it
/// serialises is written as an index into the returned list instead of as
/// its bytes. The caller carries the list beside the encoding.
pub fn collect_regions<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<dyn Region>>) {
    let (r, regions) = with_local(&OUT, Vec::new(), f);
    (r, regions.unwrap_or_default())
}

/// Runs `f` (a decoding) with `regions` available to the [`SharedBytes`]
/// it decodes, by index (as [`collect_regions`] listed them). Regions no
/// value took are dropped.
pub fn provide_regions<R>(regions: Vec<Arc<dyn Region>>, f: impl FnOnce() -> R) -> R {
    if regions.is_empty() {
        return f();
    }
    with_local(&IN, regions.into_iter().map(Some).collect(), f).0
}

/// A byte buffer that a process backend carries as shared memory: a task
/// can take a large input and return a large output without either side
/// copying it.
///
/// Build one with [`SharedBytes::zeroed`] and write it in place (it derefs
/// to `[u8]`), or from a `Vec` with [`From`]. With a process backend in use,
/// one of [`MIN_REGION`] bytes or more lives in shared memory; otherwise it
/// is a plain buffer. See the module docs for who may write it.
///
/// ```
/// use concur_core::SharedBytes;
/// let mut b = SharedBytes::zeroed(4);
/// b.copy_from_slice(b"abcd");
/// assert_eq!(&b[..], b"abcd");
/// assert_eq!(b.into_vec(), b"abcd".to_vec());
/// ```
pub struct SharedBytes(Repr);

enum Repr {
    Heap(Vec<u8>),
    Region(Arc<dyn Region>),
}

impl SharedBytes {
    /// `len` zero bytes, in shared memory when a process backend is in use
    /// and `len` is at least [`MIN_REGION`].
    pub fn zeroed(len: usize) -> SharedBytes {
        if len >= MIN_REGION {
            if let Some(region) = ALLOCATOR.get().and_then(|alloc| alloc(len)) {
                if region.bytes().len() == len {
                    return SharedBytes(Repr::Region(Arc::from(region)));
                }
            }
        }
        SharedBytes(Repr::Heap(vec![0; len]))
    }

    /// A copy of `bytes` (in shared memory as [`zeroed`](Self::zeroed)).
    pub fn copy_from(bytes: &[u8]) -> SharedBytes {
        let mut b = SharedBytes::zeroed(bytes.len());
        b.copy_from_slice(bytes);
        b
    }

    /// True when the bytes live in shared memory (they travel to another
    /// process without being copied).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Region(_))
    }

    /// The bytes as a `Vec` (moved when it is one, copied otherwise).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Heap(v) => v,
            Repr::Region(r) => r.bytes().to_vec(),
        }
    }

    /// True when writing in place is allowed without a copy first.
    fn writable(&mut self) -> bool {
        match &mut self.0 {
            Repr::Heap(_) => true,
            Repr::Region(r) => Arc::get_mut(r).is_some_and(|r| r.bytes_mut().is_some()),
        }
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Heap(v) => v,
            Repr::Region(r) => r.bytes(),
        }
    }
}

impl DerefMut for SharedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        if !self.writable() {
            // Shared with another process (or with a frame in flight):
            // write a copy of our own, never the memory others read.
            *self = SharedBytes::copy_from(self);
        }
        match &mut self.0 {
            Repr::Heap(v) => v,
            Repr::Region(r) => Arc::get_mut(r)
                .and_then(|r| r.bytes_mut())
                .expect("a fresh copy is writable"),
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for SharedBytes {
    /// The vector itself (no copy, not shared memory: use
    /// [`SharedBytes::copy_from`] for that).
    fn from(v: Vec<u8>) -> SharedBytes {
        SharedBytes(Repr::Heap(v))
    }
}

impl Clone for SharedBytes {
    /// A copy of the bytes (a region is never shared by two values).
    fn clone(&self) -> SharedBytes {
        match &self.0 {
            Repr::Heap(v) => SharedBytes(Repr::Heap(v.clone())),
            Repr::Region(r) => SharedBytes::copy_from(r.bytes()),
        }
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedBytes({} bytes{})",
            self.len(),
            if self.is_shared() { ", shared" } else { "" }
        )
    }
}

/// The wire form's variants: the bytes themselves, or an index into the
/// regions that travel beside the encoding.
#[derive(Deserialize)]
#[serde(variant_identifier)]
enum Tag {
    Inline,
    Region,
}

const NAME: &str = "SharedBytes";
const VARIANTS: &[&str] = &["Inline", "Region"];

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Repr::Region(r) = &self.0 {
            let index = OUT.with(|o| {
                o.borrow_mut().as_mut().map(|list| {
                    list.push(r.clone());
                    list.len() - 1
                })
            });
            if let Some(index) = index {
                let index = u32::try_from(index).map_err(serde::ser::Error::custom)?;
                return s.serialize_newtype_variant(NAME, 1, "Region", &index);
            }
        }
        s.serialize_newtype_variant(NAME, 0, "Inline", &BytesRef(self))
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SharedBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("shared bytes")
            }
            fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<SharedBytes, A::Error> {
                match data.variant()? {
                    (Tag::Inline, v) => {
                        Ok(SharedBytes(Repr::Heap(v.newtype_variant::<Bytes>()?.0)))
                    }
                    (Tag::Region, v) => {
                        let index: u32 = v.newtype_variant()?;
                        let region = IN.with(|i| {
                            i.borrow_mut()
                                .as_mut()
                                .map(|list| list.get_mut(index as usize).and_then(Option::take))
                        });
                        match region {
                            Some(Some(r)) => Ok(SharedBytes(Repr::Region(r))),
                            Some(None) => Err(de::Error::custom(format!(
                                "shared memory region {index} is missing (or named twice)"
                            ))),
                            // Bytes that travelled without their regions.
                            None => Err(de::Error::custom(format!(
                                "shared memory region {index} did not come with these bytes"
                            ))),
                        }
                    }
                }
            }
        }
        d.deserialize_enum(NAME, VARIANTS, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// A region of this process only, to test the index form.
    struct Mem(Vec<u8>, bool);
    impl Region for Mem {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
        fn bytes_mut(&mut self) -> Option<&mut [u8]> {
            self.1.then_some(&mut self.0[..])
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn region(bytes: &[u8], owned: bool) -> SharedBytes {
        SharedBytes(Repr::Region(Arc::new(Mem(bytes.to_vec(), owned))))
    }

    #[test]
    fn without_a_collector_it_encodes_as_bytes() {
        let b = region(b"hello", true);
        let bytes = codec::encode(&b, "t").unwrap();
        let back: SharedBytes = codec::decode(&bytes, "t").unwrap();
        assert!(!back.is_shared());
        assert_eq!(&back[..], b"hello");
    }

    #[test]
    fn with_a_collector_the_region_travels_beside() {
        let value = (7u8, region(b"abc", true), SharedBytes::from(b"xy".to_vec()));
        let (bytes, regions) = collect_regions(|| codec::encode(&value, "t").unwrap());
        assert_eq!(regions.len(), 1);
        assert!(bytes.len() < 8, "only an index: {bytes:?}");
        drop(value);
        let (n, a, b): (u8, SharedBytes, SharedBytes) =
            provide_regions(regions, || codec::decode(&bytes, "t")).unwrap();
        assert_eq!((n, &a[..], &b[..]), (7, &b"abc"[..], &b"xy"[..]));
        assert!(a.is_shared());
        // Without its region the index is a codec error, not a panic.
        let err = codec::decode::<(u8, SharedBytes, SharedBytes)>(&bytes, "t").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Codec { .. }));
    }

    #[test]
    fn a_region_not_ours_is_copied_before_writing() {
        let mut theirs = region(b"abc", false);
        theirs[0] = b'z';
        assert_eq!(&theirs[..], b"zbc");
        // A region also held elsewhere (a frame in flight) is copied too.
        let mut ours = region(b"abc", true);
        let (_, held) = collect_regions(|| codec::encode(&ours, "t").unwrap());
        ours[1] = b'q';
        assert_eq!(held[0].bytes(), b"abc");
        assert_eq!(&ours[..], b"aqc");
    }

    #[test]
    fn heap_buffers_and_copies() {
        let mut b = SharedBytes::zeroed(3);
        b.copy_from_slice(&[1, 2, 3]);
        assert_eq!(b.clone(), b);
        assert_eq!(format!("{b:?}"), "SharedBytes(3 bytes)");
        assert_eq!(b.into_vec(), vec![1, 2, 3]);
    }
}
