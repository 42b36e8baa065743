//! Payload bodies: small ones travel inline through the socket, large ones
//! through shared memory.
//!
//! A large body is copied once into a fresh shared-memory region by the
//! sender; the receiver decodes straight from the mapping (no copy back into
//! a `Vec`), so a payload above the threshold is written once and read once.

use concur_core::{Payload, TaskError};
use ipc_channel::ipc::IpcSharedMemory;

/// The default size above which a payload travels through shared memory.
pub const DEFAULT_SHM_THRESHOLD: usize = 64 * 1024;

/// A payload body (not `Clone`: duplicating a region can fail, see
/// [`Body::try_clone`]).
#[derive(Debug)]
pub(crate) enum Body {
    /// No bytes.
    Empty,
    /// Bytes carried in the message itself.
    Inline(Vec<u8>),
    /// Bytes in a shared-memory region.
    Shared(IpcSharedMemory),
}

/// A received shared-memory region seen as bytes (for [`Payload::bytes`]).
struct Region(IpcSharedMemory);

impl AsRef<[u8]> for Region {
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
        })
    }

    /// The encoding of `value`: inline when short, else encoded straight
    /// into a fresh shared-memory region (no intermediate buffer: on this
    /// kind of machine every fresh page costs a fault, and a large payload
    /// would otherwise be written twice).
    pub(crate) fn encode(value: &Payload, threshold: usize) -> Result<Body, TaskError> {
        // One pass for small values; a large one is measured, then written once.
        if let Some(bytes) = value.to_bytes_bounded(threshold)? {
            return Ok(if bytes.is_empty() {
                Body::Empty
            } else {
                Body::Inline(bytes)
            });
        }
        let len = value.encoded_len()?;
        // Out of descriptors or memory: this task's error, not a panic.
        let mut region = IpcSharedMemory::try_zeroed(len).map_err(TaskError::io)?;
        // SAFETY: the region was just created and is not shared yet: this is
        // its only reference, so nothing else reads or writes it meanwhile.
        let dst = unsafe { region.deref_mut() };
        value.encode_into(dst)?;
        Ok(Body::Shared(region))
    }

    /// Keeps a received region's mapping but closes its descriptor, so a
    /// result that waits unjoined holds no descriptor.
    pub(crate) fn release_descriptor(&mut self) {
        if let Body::Shared(s) = self {
            s.release_descriptor();
        }
    }

    /// The bytes, wherever they are.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Inline(v) => v,
            Body::Shared(s) => s,
        }
    }

    /// The bytes as an owned buffer (moved when inline, copied otherwise).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::Inline(v) => v,
            Body::Shared(s) => s.to_vec(),
        }
    }

    /// The body as a payload; shared memory is decoded in place later.
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            Body::Empty => Payload::bytes(Vec::new()),
            Body::Inline(v) => Payload::bytes(v),
            Body::Shared(s) => Payload::bytes(Region(s)),
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
