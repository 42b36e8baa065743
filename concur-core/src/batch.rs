//! How a batch's results travel when they are encoded: one entry per task,
//! each task's output encoded on its own, so that a value that cannot be
//! decoded fails only its own task.

use crate::codec::{self, Bytes, BytesRef};
use crate::error::TaskError;
use crate::task::Message;

/// Encodes a batch's results: each `Ok` holds one task's encoded output.
///
/// # Errors
/// A codec error when a task's error cannot be encoded.
pub fn encode_batch_items(items: &[Result<Vec<u8>, TaskError>]) -> Result<Vec<u8>, TaskError> {
    let view: Vec<Result<BytesRef<'_>, &TaskError>> = items
        .iter()
        .map(|r| r.as_ref().map(|b| BytesRef(b)))
        .collect();
    codec::encode(&view, "batch results")
}

/// Decodes what [`encode_batch_items`] made into one result per task; an
/// output that cannot be decoded fails its own task only.
///
/// # Errors
/// A codec error when the batch as a whole cannot be read.
pub fn decode_batch_items<O: Message>(
    bytes: &[u8],
) -> Result<Vec<Result<O, TaskError>>, TaskError> {
    decode_batch_items_with(bytes, Vec::new())
}

/// As [`decode_batch_items`], item `i` decoded with `regions[i]` (the
/// shared-memory regions its output came with; see [`crate::shared`]).
pub(crate) fn decode_batch_items_with<O: Message>(
    bytes: &[u8],
    regions: Vec<Vec<std::sync::Arc<dyn crate::shared::Region>>>,
) -> Result<Vec<Result<O, TaskError>>, TaskError> {
    let items: Vec<Result<Bytes, TaskError>> = codec::decode(bytes, "batch results")?;
    let mut regions = regions.into_iter();
    Ok(items
        .into_iter()
        .map(|r| {
            let mine = regions.next().unwrap_or_default();
            r.and_then(|b| crate::shared::provide_regions(mine, || codec::decode(&b.0, "output")))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn one_bad_output_fails_only_its_task() {
        let items = vec![
            Ok(codec::encode(&7u32, "t").unwrap()),
            Ok(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(TaskError::new(ErrorKind::Cancelled)),
        ];
        let bytes = encode_batch_items(&items).unwrap();
        let back = decode_batch_items::<u32>(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].as_ref().unwrap(), &7);
        assert!(matches!(
            back[1].as_ref().unwrap_err().kind(),
            ErrorKind::Codec { .. }
        ));
        assert!(back[2].as_ref().unwrap_err().is_cancelled());
    }
}
