//! Payload bodies: small ones travel inline through the socket, large ones
//! through shared memory.
//!
//! A large body is copied once into a fresh shared-memory region by the
//! sender; the receiver decodes straight from the mapping (no copy back into
//! a `Vec`), so a payload above the threshold is written once and read once.
//!
//! A [`SharedBytes`](concur_core::SharedBytes) in shared memory is not
//! copied at all: the encoding names it by index and its region travels
//! beside the frame ([`Body::Views`]); the receiver's decoded value reads the
//! mapping. Such regions are made by [`allocate`], which `init()`, a pool's
//! build and worker mode install as core's region allocator.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use concur_core::codec::BoundedEncoding;
use concur_core::shared::{self, Region};
use concur_core::{Payload, TaskError};
use ipc_channel::ipc::IpcSharedMemory;

/// The default size above which a payload travels through shared memory.
pub const DEFAULT_SHM_THRESHOLD: usize = 64 * 1024;

/// A payload body (not `Clone`: duplicating a region can fail, see
/// [`Body::try_clone`]).
pub(crate) enum Body {
    /// No bytes.
    Empty,
    /// Bytes carried in the message itself.
    Inline(Vec<u8>),
    /// Bytes in a shared-memory region.
    Shared(IpcSharedMemory),
    /// An encoding (never itself `Views`) that names `SharedBytes` regions
    /// by index, and those regions, which travel beside it.
    Views(Box<Body>, Vec<Arc<dyn Region>>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Inline(v) => write!(f, "Inline({} bytes)", v.len()),
            Body::Shared(s) => write!(f, "Shared({} bytes)", s.len()),
            Body::Views(b, r) => write!(f, "Views({b:?}, {} regions)", r.len()),
        }
    }
}

/// The memory behind a [`SharedBytes`](concur_core::SharedBytes) of a
/// process backend.
pub(crate) struct View {
    shm: IpcSharedMemory,
    /// Made by this process and never handed to another: nobody else has
    /// mapped it. Cleared for good when it is put in a frame ([`share`]),
    /// even if this process keeps a handle (a task that keeps what it
    /// returned in a static, say): writing it then copies, so the receiver
    /// never sees it change.
    ours: AtomicBool,
    /// A received region that holds one of the [`KEPT_DESCRIPTORS`].
    kept: bool,
}

/// Most received `SharedBytes` regions that keep their descriptor at once,
/// per process: 64, or a sixteenth of the descriptor limit when that is
/// lower (at `ulimit -n 64`, 4). A region with its descriptor goes to a
/// worker again without a copy; one without (past this bound) keeps only
/// its mapping, and sending it again copies it into a new region. So a
/// worker that sends many regions (hostile, or a caller that leaves
/// results unjoined) cannot use up the parent's descriptors.
pub(crate) const KEPT_DESCRIPTORS: usize = 64;

/// [`KEPT_DESCRIPTORS`], lowered to a sixteenth of this process's soft
/// descriptor limit (read once).
fn kept_descriptors() -> usize {
    static BOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BOUND.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid out-pointer.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
        } else {
            0
        };
        KEPT_DESCRIPTORS.min(soft / 16)
    })
}

static KEPT: AtomicUsize = AtomicUsize::new(0);

impl Drop for View {
    fn drop(&mut self) {
        if self.kept {
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Region for View {
    fn bytes(&self) -> &[u8] {
        &self.shm
    }
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: a region of ours is mapped only here until it is put in
        // a frame (then `ours` is cleared for good), and `SharedBytes`
        // writes only through a unique handle (it checks `Arc::get_mut`),
        // so this is the only reader or writer meanwhile.
        (*self.ours.get_mut()).then(|| unsafe { self.shm.deref_mut() })
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A zero-filled region for a large `SharedBytes` (`None`: out of
/// descriptors or memory, and the value falls back to a buffer).
fn allocate(len: usize) -> Option<Box<dyn Region>> {
    let shm = IpcSharedMemory::try_zeroed(len).ok()?;
    Some(Box::new(View {
        shm,
        ours: AtomicBool::new(true),
        kept: false,
    }))
}

/// Makes large `SharedBytes` of this process live in shared memory.
pub(crate) fn install_allocator() {
    shared::set_region_allocator(allocate);
}

/// The region to put in a frame for `region` (a second handle: the body
/// keeps its own, for a retry).
pub(crate) fn share(region: &Arc<dyn Region>) -> Result<IpcSharedMemory, TaskError> {
    let view = region.as_any().downcast_ref::<View>().ok_or_else(|| {
        TaskError::codec(
            "shared bytes",
            std::io::Error::other("a region of another backend"),
        )
    })?;
    let shm = view.shm.try_clone().map_err(TaskError::io)?;
    view.ours.store(false, Ordering::Relaxed);
    Ok(shm)
}

/// A region received beside a frame, for the `SharedBytes` it names.
pub(crate) fn received(mut shm: IpcSharedMemory) -> Arc<dyn Region> {
    let kept = KEPT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < kept_descriptors()).then_some(n + 1)
        })
        .is_ok();
    if !kept {
        shm.release_descriptor();
    }
    Arc::new(View {
        shm,
        ours: AtomicBool::new(false),
        kept,
    })
}

/// A received shared-memory region seen as bytes (for [`Payload::bytes`]).
struct Mapped(IpcSharedMemory);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Body {
    /// The body for `bytes`, carried in the message itself.
    pub(crate) fn inline(bytes: Vec<u8>) -> Body {
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Inline(bytes)
        }
    }

    /// The body for `bytes`: shared memory when longer than `threshold`.
    ///
    /// # Errors
    /// `Io` when no shared-memory region can be made (out of descriptors).
    pub(crate) fn from_vec(bytes: Vec<u8>, threshold: usize) -> Result<Body, TaskError> {
        if bytes.len() <= threshold {
            return Ok(Body::inline(bytes));
        }
        let mut region = IpcSharedMemory::try_zeroed(bytes.len()).map_err(TaskError::io)?;
        // SAFETY: the region was just created and is not shared yet.
        unsafe { region.deref_mut() }.copy_from_slice(&bytes);
        Ok(Body::Shared(region))
    }

    /// A second body with the same bytes (a shared region is shared, not
    /// copied).
    ///
    /// # Errors
    /// `Io` when the region's descriptor cannot be duplicated.
    pub(crate) fn try_clone(&self) -> Result<Body, TaskError> {
        Ok(match self {
            Body::Empty => Body::Empty,
            Body::Inline(v) => Body::Inline(v.clone()),
            Body::Shared(s) => Body::Shared(s.try_clone().map_err(TaskError::io)?),
            Body::Views(b, r) => Body::Views(Box::new(b.try_clone()?), r.clone()),
        })
    }

    /// The encoding of `value`: inline when short, else encoded straight
    /// into a fresh shared-memory region (no intermediate buffer: on this
    /// kind of machine every fresh page costs a fault, and a large payload
    /// would otherwise be written twice).
    ///
    /// The value's `Serialize` (user code, which may count, log or lock)
    /// runs once for a short value and twice for a long one: a pass that
    /// keeps the bytes while they fit and then only counts, and the pass
    /// that writes the region.
    ///
    /// # Errors
    /// As [`Payload::to_bytes`]; `Io` when no region can be made; `Codec`
    /// when the writing pass does not produce exactly the length counted
    /// (a `Serialize` that differs between calls): a region left part
    /// unwritten, or written past, must not travel.
    pub(crate) fn encode(value: &Payload, threshold: usize) -> Result<Body, TaskError> {
        // Each pass lists the regions of the `SharedBytes` it meets (by
        // index, in order): those of the pass whose bytes are kept go beside.
        let (first, views) = shared::collect_regions(|| value.to_bytes_bounded(threshold));
        let len = match first? {
            BoundedEncoding::Fits(bytes) => return Ok(Body::inline(bytes).with_views(views)),
            BoundedEncoding::Exceeds(len) => len,
        };
        // Out of descriptors or memory: this task's error, not a panic.
        let mut region = IpcSharedMemory::try_zeroed(len).map_err(TaskError::io)?;
        // SAFETY: the region was just created and is not shared yet: this is
        // its only reference, so nothing else reads or writes it meanwhile.
        let dst = unsafe { region.deref_mut() };
        let (written, views) = shared::collect_regions(|| value.encode_into(dst));
        let written = written?;
        if written != len {
            return Err(TaskError::codec(
                "payload",
                std::io::Error::other(format!(
                    "serialize wrote {written} bytes after counting {len}"
                )),
            ));
        }
        Ok(Body::Shared(region).with_views(views))
    }

    /// This body with `views` beside it.
    fn with_views(self, views: Vec<Arc<dyn Region>>) -> Body {
        if views.is_empty() {
            self
        } else {
            Body::Views(Box::new(self), views)
        }
    }

    /// Takes the regions beside the encoding (for its decoding), leaving
    /// the encoding.
    pub(crate) fn take_views(&mut self) -> Vec<Arc<dyn Region>> {
        match std::mem::replace(self, Body::Empty) {
            Body::Views(b, r) => {
                *self = *b;
                r
            }
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    /// Keeps a received region's mapping but closes its descriptor, so a
    /// result that waits unjoined holds no descriptor.
    ///
    /// The regions of `SharedBytes` keep theirs, up to
    /// [`KEPT_DESCRIPTORS`] at once: a value decoded from one can then go
    /// to a worker again without a copy.
    pub(crate) fn release_descriptor(&mut self) {
        match self {
            Body::Shared(s) => s.release_descriptor(),
            Body::Views(b, _) => b.release_descriptor(),
            Body::Empty | Body::Inline(_) => {}
        }
    }

    /// The bytes, wherever they are.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Inline(v) => v,
            Body::Shared(s) => s,
            Body::Views(b, _) => b.as_slice(),
        }
    }

    /// The bytes as an owned buffer (moved when inline, copied otherwise).
    /// Regions beside them are dropped: the `SharedBytes` they stood for
    /// then fail to decode (a typed `Codec` error), as in a batch's result.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::Inline(v) => v,
            Body::Shared(s) => s.to_vec(),
            Body::Views(b, _) => b.into_vec(),
        }
    }

    /// The body as a payload; shared memory is decoded in place later.
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            Body::Empty => Payload::bytes(Vec::new()),
            Body::Inline(v) => Payload::bytes(v),
            Body::Shared(s) => Payload::bytes(Mapped(s)),
            Body::Views(b, r) => match *b {
                Body::Shared(s) => Payload::bytes_with_regions(Mapped(s), r),
                other => Payload::bytes_with_regions(other.into_vec(), r),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_goes_inline_or_to_shared_memory() {
        let small = Body::encode(&Payload::value(vec![1u8; 10]), 64).unwrap();
        assert!(matches!(small, Body::Inline(_)));
        let big_value = vec![7u8; 1000];
        let big = Body::encode(&Payload::value(big_value.clone()), 64).unwrap();
        assert!(matches!(big, Body::Shared(_)));
        assert_eq!(
            big.into_payload().into_value::<Vec<u8>>("t").unwrap(),
            big_value
        );
    }

    /// Bytes whose length is the next of `lens` at each `Serialize` call
    /// (the last repeats), and which count those calls.
    #[derive(Clone)]
    struct Shifting {
        lens: Vec<usize>,
        calls: Arc<AtomicUsize>,
    }

    impl serde::Serialize for Shifting {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let len = self.lens[call.min(self.lens.len() - 1)];
            s.serialize_bytes(&vec![9u8; len])
        }
    }

    impl<'de> serde::Deserialize<'de> for Shifting {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("only encoded here"))
        }
    }

    fn shifting(lens: &[usize]) -> (Payload, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let value = Shifting {
            lens: lens.to_vec(),
            calls: calls.clone(),
        };
        (Payload::value(value), calls)
    }

    #[test]
    fn encode_runs_serialize_once_when_short_and_twice_when_long() {
        let (small, calls) = shifting(&[10]);
        assert!(matches!(Body::encode(&small, 64).unwrap(), Body::Inline(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (big, calls) = shifting(&[1000]);
        let body = Body::encode(&big, 64).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            body.into_payload().into_value::<Vec<u8>>("t").unwrap(),
            vec![9u8; 1000]
        );
    }

    #[test]
    fn a_serialize_that_changes_length_between_passes_is_a_codec_error() {
        // Shorter when written: the region's tail would be zeros.
        // Longer: it does not fit the region.
        for lens in [[1000, 500], [1000, 2000]] {
            let (value, _) = shifting(&lens);
            let err = Body::encode(&value, 64).unwrap_err();
            assert!(
                matches!(err.kind(), concur_core::ErrorKind::Codec { .. }),
                "{lens:?}: {err:?}"
            );
        }
        // Changing within the inline size is one pass: nothing to disagree.
        let (value, _) = shifting(&[10, 20]);
        assert!(matches!(Body::encode(&value, 64).unwrap(), Body::Inline(_)));
    }

    #[test]
    fn shared_bytes_travel_beside_a_frame() {
        use concur_core::SharedBytes;
        install_allocator();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let value = (SharedBytes::copy_from(&data), 3u32);
        let body = Body::encode(&Payload::value(value), 64).unwrap();
        assert!(
            matches!(&body, Body::Views(inner, r) if r.len() == 1 && matches!(**inner, Body::Inline(_))),
            "{body:?}"
        );
        let frame = crate::wire::Frame::new(&(), body).unwrap();
        assert_eq!(frame.descriptors(), 1);
        let plain = crate::wire::Frame::new(&(), Body::Inline(vec![1])).unwrap();
        let (tx, rx) = ipc_channel::ipc::channel::<crate::wire::Packet>().unwrap();
        tx.send(vec![frame, plain]).unwrap();
        let mut got = rx.recv().unwrap().into_iter();
        let ((), body) = got.next().unwrap().open::<()>().unwrap();
        let (b, n): (SharedBytes, u32) = body.into_payload().into_value("t").unwrap();
        assert!(b.is_shared());
        assert_eq!((&b[..], n), (&data[..], 3));
        let ((), plain) = got.next().unwrap().open::<()>().unwrap();
        assert!(matches!(plain, Body::Inline(v) if v == [1]));
    }

    #[test]
    fn threshold_picks_the_road() {
        assert!(matches!(Body::from_vec(vec![], 4).unwrap(), Body::Empty));
        assert!(matches!(
            Body::from_vec(vec![1; 4], 4).unwrap(),
            Body::Inline(_)
        ));
        let big = Body::from_vec(vec![7; 5], 4).unwrap();
        assert!(matches!(big, Body::Shared(_)));
        assert_eq!(big.as_slice(), &[7; 5]);
        let p = Body::from_vec(
            concur_core::codec::encode(&vec![3u8; 100], "t").unwrap(),
            10,
        )
        .unwrap()
        .into_payload();
        assert_eq!(p.into_value::<Vec<u8>>("t").unwrap(), vec![3u8; 100]);
    }
}
