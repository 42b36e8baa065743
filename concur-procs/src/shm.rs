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

/// A payload body.
#[derive(Debug, Clone)]
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
    /// The body for `bytes`: shared memory when longer than `threshold`.
    pub(crate) fn from_vec(bytes: Vec<u8>, threshold: usize) -> Body {
        if bytes.is_empty() {
            Body::Empty
        } else if bytes.len() > threshold {
            Body::Shared(IpcSharedMemory::from_bytes(&bytes))
        } else {
            Body::Inline(bytes)
        }
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
        let mut region = IpcSharedMemory::from_byte(0, len);
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
        assert!(matches!(Body::from_vec(vec![], 4), Body::Empty));
        assert!(matches!(Body::from_vec(vec![1; 4], 4), Body::Inline(_)));
        let big = Body::from_vec(vec![7; 5], 4);
        assert!(matches!(big, Body::Shared(_)));
        assert_eq!(big.as_slice(), &[7; 5]);
        let p = Body::from_vec(
            concur_core::codec::encode(&vec![3u8; 100], "t").unwrap(),
            10,
        )
        .into_payload();
        assert_eq!(p.into_value::<Vec<u8>>("t").unwrap(), vec![3u8; 100]);
    }
}
