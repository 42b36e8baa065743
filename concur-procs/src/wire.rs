//! The private protocol between the parent and its workers.
//!
//! Every message is one [`Frame`] on an ipc-channel: a header encoded with
//! core's codec (bincode), the payload bytes when they are small, and the
//! payload as a shared-memory region when they are large (see [`crate::shm`]).
//! Nothing here is public: the protocol can change with the crate.

use concur_core::codec::{self, Bytes as Block};
use concur_core::{TaskError, TaskId};
use ipc_channel::ipc::{IpcReceiver, IpcSender, IpcSharedMemory};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeStruct, SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::shm::Body;

/// Most descriptors (shared-memory regions, channels) in one message.
/// ipc-channel allows 64, but sending duplicates each one for a moment,
/// and a packet that cannot get its duplicates (out of descriptors) fails
/// every task it carries: a few per packet keeps that failure to a few
/// tasks, at the cost of a system call per few large payloads.
pub(crate) const PACKET_FDS: usize = 8;

/// One message on a channel, either direction.
///
/// Encoded by hand (below) so that a frame without `views` is byte for byte
/// what it was before they existed.
pub(crate) struct Frame {
    /// The bincode-encoded [`Down`] or [`Up`] header.
    pub(crate) head: Block,
    /// A small payload, inline.
    pub(crate) body: Block,
    /// A large payload, in shared memory.
    pub(crate) shm: Option<IpcSharedMemory>,
    /// The regions of the `SharedBytes` the payload names by index (see
    /// [`crate::shm`]); mapped on receipt like `shm`.
    pub(crate) views: Vec<IpcSharedMemory>,
    /// The parent's sending end, carried once by the worker's hello.
    pub(crate) chan: Option<Tx>,
    /// The units this frame carries or concerns (parent side, never sent):
    /// if it cannot be sent, they fail.
    pub(crate) units: Vec<TaskId>,
}

/// The tag that says `views` follow (an `Option`'s tag is 0 or 1).
const WITH_VIEWS: u8 = 2;

/// `shm` and `views` as one field: exactly `shm` (an `Option`: tag 0, or
/// tag 1 and the region) when there are no views, else tag 2, `shm` and
/// the views. ipc-channel's format (postcard) writes an `Option`'s tag and
/// a `u8` alike, as one byte.
struct RegionsOut<'a>(&'a Option<IpcSharedMemory>, &'a [IpcSharedMemory]);

impl Serialize for RegionsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.1.is_empty() {
            return self.0.serialize(s);
        }
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&WITH_VIEWS)?;
        t.serialize_element(self.0)?;
        t.serialize_element(self.1)?;
        t.end()
    }
}

/// What [`RegionsOut`] wrote.
struct RegionsIn(Option<IpcSharedMemory>, Vec<IpcSharedMemory>);

impl<'de> Deserialize<'de> for RegionsIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RegionsIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a frame's regions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RegionsIn, A::Error> {
                let missing = || de::Error::custom("a frame's regions cut short");
                match seq.next_element::<u8>()?.ok_or_else(missing)? {
                    0 => Ok(RegionsIn(None, Vec::new())),
                    1 => Ok(RegionsIn(
                        Some(seq.next_element()?.ok_or_else(missing)?),
                        Vec::new(),
                    )),
                    WITH_VIEWS => Ok(RegionsIn(
                        seq.next_element()?.ok_or_else(missing)?,
                        seq.next_element()?.ok_or_else(missing)?,
                    )),
                    tag => Err(de::Error::custom(format!("a frame's regions: tag {tag}"))),
                }
            }
        }
        d.deserialize_tuple(3, V)
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Frame", 4)?;
        st.serialize_field("head", &self.head)?;
        st.serialize_field("body", &self.body)?;
        st.serialize_field("shm", &RegionsOut(&self.shm, &self.views))?;
        st.serialize_field("chan", &self.chan)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Frame;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a frame")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
                let missing = || de::Error::custom("a frame cut short");
                let head = seq.next_element()?.ok_or_else(missing)?;
                let body = seq.next_element()?.ok_or_else(missing)?;
                let RegionsIn(shm, views) = seq.next_element()?.ok_or_else(missing)?;
                let chan = seq.next_element()?.ok_or_else(missing)?;
                Ok(Frame {
                    head,
                    body,
                    shm,
                    views,
                    chan,
                    units: Vec::new(),
                })
            }
        }
        d.deserialize_struct("Frame", &["head", "body", "shm", "chan"], V)
    }
}

/// What one socket message carries: frames queued together go together
/// (one system call and one wake-up for many small tasks).
pub(crate) type Packet = Vec<Frame>;
/// The sending end of a channel.
pub(crate) type Tx = IpcSender<Packet>;
/// The receiving end of a channel.
pub(crate) type Rx = IpcReceiver<Packet>;

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Down {
    /// The first message after the hello was accepted: who the worker is.
    /// The frame's shared memory is the worker's progress word
    /// ([`crate::progress`]); its payload is the initializer's encoding.
    Init {
        index: usize,
        incarnation: u64,
        /// Bytes of address space the worker may use beyond its start-up size.
        memory_limit: Option<u64>,
        /// Payloads longer than this travel through shared memory.
        shm_threshold: usize,
        /// Whether finished tasks' results may wait to leave together. Not
        /// in a pool without retries: a result held back when a later task
        /// crashes its worker would be lost, and its task may not run again.
        hold_results: bool,
        /// The initializer task's name; its encoding is the frame's payload.
        initializer: Option<String>,
    },
    /// Run a task (alone, or one task of a batch); its encoding is the
    /// frame's payload.
    Run { id: TaskId, name: String },
    /// Several small tasks of one batch: task `i`'s encoding is the
    /// payload's bytes from `ends[i - 1]` (or 0) to `ends[i]`.
    RunGroup {
        name: String,
        ids: Vec<TaskId>,
        ends: Vec<u32>,
    },
    /// A message from the caller to task `id`; the frame's payload.
    Deliver { id: TaskId },
    /// The caller cancelled task `id`: drop it if it has not started, and
    /// end the worker if it is running.
    Cancel { id: TaskId },
    /// The caller dropped its handle to task `id`: no more messages for it.
    CallerGone { id: TaskId },
    /// Give back those of tasks `ids` that have not started: another worker
    /// is idle while they wait behind a long task here.
    Recall { ids: Vec<TaskId> },
    /// Finish the tasks already received, then exit.
    Shutdown,
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Up {
    /// The first message: proves the worker is ours.
    Hello { token: String, pid: u32 },
    /// The initializer ran; the worker takes work.
    Ready,
    /// The initializer failed; the worker exits.
    InitFailed(TaskError),
    /// A message from task `id` to its caller; the frame's payload.
    Message { id: TaskId },
    /// Tasks given back unstarted after a [`Down::Recall`] (sent by the
    /// worker's reader thread, which never waits on the task thread).
    Recalled { ids: Vec<TaskId> },
    /// Task `id` ended; on success its output is the frame's payload.
    Done {
        id: TaskId,
        result: Result<(), TaskError>,
    },
    /// Several tasks ended; task `i`'s output (on success) is the
    /// payload's bytes from `ends[i - 1]` (or 0) to `ends[i]`.
    DoneGroup {
        ids: Vec<TaskId>,
        results: Vec<Result<(), TaskError>>,
        ends: Vec<u32>,
    },
    /// Several small messages from task `id` to its caller, in the order
    /// sent: message `i` is the payload's bytes from `ends[i - 1]` (or 0)
    /// to `ends[i]`.
    MessageGroup { id: TaskId, ends: Vec<u32> },
}

/// The ranges `ends` cut a buffer of `len` bytes into (see
/// [`Down::RunGroup`]); `None` when the ends do not fit the bytes.
pub(crate) fn ranges(len: usize, ends: &[u32]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut start = 0usize;
    let mut parts = Vec::with_capacity(ends.len());
    for &end in ends {
        let end = end as usize;
        if end < start || end > len {
            return None;
        }
        parts.push(start..end);
        start = end;
    }
    (start == len).then_some(parts)
}

/// Splits `bytes` at `ends` (see [`ranges`]).
pub(crate) fn split<'a>(bytes: &'a [u8], ends: &[u32]) -> Option<Vec<&'a [u8]>> {
    Some(
        ranges(bytes.len(), ends)?
            .into_iter()
            .map(|r| &bytes[r])
            .collect(),
    )
}

/// Byte strings laid end to end in one buffer, and the ends [`split`]
/// needs to cut them apart again (a group's payload and its `ends`).
#[derive(Default)]
pub(crate) struct Parts {
    pub(crate) bytes: Vec<u8>,
    pub(crate) ends: Vec<u32>,
}

impl Parts {
    /// Adds `part` after those already here.
    pub(crate) fn push(&mut self, part: &[u8]) {
        self.bytes.extend_from_slice(part);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }
}

/// Joins `parts` into one buffer and the ends [`split`] needs.
pub(crate) fn join<'a>(parts: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u32>) {
    let mut joined = Parts::default();
    parts.for_each(|p| joined.push(p));
    (joined.bytes, joined.ends)
}

impl Frame {
    /// Descriptors this frame carries (ipc-channel limits them per message).
    pub(crate) fn descriptors(&self) -> usize {
        usize::from(self.shm.is_some()) + usize::from(self.chan.is_some()) + self.views.len()
    }

    /// A frame with header `head` and payload `body`.
    pub(crate) fn new<H: Serialize>(head: &H, body: Body) -> Result<Frame, TaskError> {
        let head = Block(codec::encode(head, "protocol header")?);
        let (body, views) = match body {
            Body::Views(b, regions) => (
                *b,
                regions
                    .iter()
                    .map(crate::shm::share)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            b => (b, Vec::new()),
        };
        let (body, shm) = match body {
            Body::Empty | Body::Views(..) => (Block::default(), None),
            Body::Inline(v) => (Block(v), None),
            Body::Shared(s) => (Block::default(), Some(s)),
        };
        Ok(Frame {
            head,
            body,
            shm,
            views,
            chan: None,
            units: Vec::new(),
        })
    }

    /// The decoded header and the payload.
    pub(crate) fn open<H: serde::de::DeserializeOwned>(self) -> Result<(H, Body), TaskError> {
        let head = codec::decode(&self.head.0, "protocol header")?;
        let body = match self.shm {
            Some(s) => Body::Shared(s),
            None if self.body.0.is_empty() => Body::Empty,
            None => Body::Inline(self.body.0),
        };
        if self.views.is_empty() {
            return Ok((head, body));
        }
        let views = self.views.into_iter().map(crate::shm::received).collect();
        Ok((head, Body::Views(Box::new(body), views)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(head: Vec<u8>, body: Vec<u8>) -> Frame {
        Frame {
            head: Block(head),
            body: Block(body),
            shm: None,
            views: Vec::new(),
            chan: None,
            units: Vec::new(),
        }
    }

    /// tests/messages.rs forges this header byte for byte (a hostile
    /// worker's malformed group); this keeps the two in step.
    #[test]
    fn message_group_header_bytes() {
        let up = Up::MessageGroup {
            id: TaskId(0),
            ends: vec![5],
        };
        assert_eq!(codec::encode(&up, "t").unwrap(), [7, 0, 1, 5]);
    }

    proptest! {
        /// The parent's frame decoder: whatever a worker puts in a frame's
        /// header, opening it gives a header or a typed error, never a
        /// panic or an allocation of what the bytes claim.
        #[test]
        fn arbitrary_frames_never_panic(head in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Err(e) = frame(head, Vec::new()).open::<Up>() {
                let is_codec = matches!(e.kind(), concur_core::ErrorKind::Codec { .. });
                prop_assert!(is_codec, "not a codec error: {}", e);
            }
        }

        /// Valid headers cut short are errors, not panics.
        #[test]
        fn truncated_headers_are_errors(cut in 0usize..40) {
            let up = Up::DoneGroup {
                ids: vec![TaskId(1), TaskId(2)],
                results: vec![Ok(()), Err(concur_core::TaskError::new(concur_core::ErrorKind::Cancelled))],
                ends: vec![3, 7],
            };
            let bytes = codec::encode(&up, "t").unwrap();
            let cut = cut.min(bytes.len());
            let r = frame(bytes[..cut].to_vec(), Vec::new()).open::<Up>();
            prop_assert!(cut == bytes.len() || r.is_err());
        }

        /// Group ends that do not fit their bytes are refused.
        #[test]
        fn group_ends_are_checked(len in 0usize..64, ends in proptest::collection::vec(any::<u32>(), 0..8)) {
            let bytes = vec![0u8; len];
            if let Some(parts) = split(&bytes, &ends) {
                prop_assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), len);
            }
        }
    }
}
