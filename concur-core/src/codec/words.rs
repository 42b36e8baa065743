//! bincode's errors in words. Their own `Display` is their `Debug`
//! (`UnexpectedEnd { additional: 3 }`), which would reach users as the
//! cause of a codec error; these say the same thing as a sentence.

use bincode::error::{DecodeError, EncodeError, IntegerType};

/// Why encoding failed, as a lowercase clause.
pub(super) fn encode(e: &EncodeError) -> String {
    use bincode::serde::EncodeError as Serde;
    match e {
        EncodeError::UnexpectedEnd => "the destination is too small for the encoding".to_owned(),
        EncodeError::RefCellAlreadyBorrowed { type_name, .. } => {
            format!("a `RefCell` in `{type_name}` was already mutably borrowed")
        }
        EncodeError::Other(text) => (*text).to_owned(),
        EncodeError::OtherString(text) => text.clone(),
        EncodeError::InvalidPathCharacters => "a path is not valid UTF-8".to_owned(),
        EncodeError::Io { inner, index } => {
            format!("writing failed after {index} bytes: {inner}")
        }
        EncodeError::LockFailed { type_name } => {
            format!("a lock in `{type_name}` is poisoned")
        }
        EncodeError::InvalidSystemTime { inner, .. } => {
            format!("a system time is before the epoch: {inner}")
        }
        EncodeError::Serde(Serde::SequenceMustHaveLength) => {
            "a sequence does not say its length in advance".to_owned()
        }
        other => format!("bincode could not encode it ({other:?})"),
    }
}

/// Why decoding failed, as a lowercase clause.
pub(super) fn decode(e: &DecodeError) -> String {
    use bincode::serde::DecodeError as Serde;
    match e {
        DecodeError::UnexpectedEnd { additional } => {
            format!("the bytes end early ({additional} more needed)")
        }
        DecodeError::LimitExceeded => "the bytes claim more than the size limit".to_owned(),
        DecodeError::InvalidIntegerType { expected, found } => format!(
            "a {} was expected, the bytes hold a {}",
            integer(expected),
            integer(found)
        ),
        DecodeError::NonZeroTypeIsZero { non_zero_type } => {
            format!("a non-zero {} is zero", integer(non_zero_type))
        }
        DecodeError::UnexpectedVariant {
            type_name, found, ..
        } => format!("`{type_name}` has no variant {found}"),
        DecodeError::Utf8 { inner } => format!("a string is not valid UTF-8: {inner}"),
        DecodeError::InvalidCharEncoding(bytes) => {
            format!("the bytes {bytes:02x?} are not a valid char")
        }
        DecodeError::InvalidBooleanValue(v) => format!("{v} is not a valid bool"),
        DecodeError::ArrayLengthMismatch { required, found } => {
            format!("an array of {required} elements was expected, the bytes hold {found}")
        }
        DecodeError::OutsideUsizeRange(v) => format!("{v} does not fit a usize"),
        DecodeError::EmptyEnum { type_name } => {
            format!("`{type_name}` has no variants, so no value of it can be decoded")
        }
        DecodeError::InvalidDuration { secs, nanos } => {
            format!("{secs} s and {nanos} ns is not a valid duration")
        }
        DecodeError::InvalidSystemTime { duration } => {
            format!("{duration:?} after the epoch is not a valid system time")
        }
        DecodeError::CStringNulError { position } => {
            format!("a C string has a nul byte at {position}")
        }
        DecodeError::Io { inner, additional } => {
            format!("reading {additional} more bytes failed: {inner}")
        }
        DecodeError::Other(text) => (*text).to_owned(),
        DecodeError::OtherString(text) => text.clone(),
        DecodeError::Serde(Serde::AnyNotSupported) => {
            "the type asks for self-describing data (`deserialize_any`), which bincode is not"
                .to_owned()
        }
        DecodeError::Serde(Serde::IdentifierNotSupported) => {
            "the type asks for identifiers, which bincode does not encode".to_owned()
        }
        DecodeError::Serde(Serde::IgnoredAnyNotSupported) => {
            "the type skips values (`IgnoredAny`), which bincode cannot do".to_owned()
        }
        DecodeError::Serde(Serde::CannotBorrowOwnedData) => {
            "the type borrows from the bytes, which this decoder cannot lend".to_owned()
        }
        other => format!("bincode could not decode it ({other:?})"),
    }
}

/// `u32`, `i64`, ... as Rust spells them.
fn integer(t: &IntegerType) -> String {
    format!("{t:?}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_read_as_words() {
        let e = DecodeError::UnexpectedEnd { additional: 3 };
        assert_eq!(decode(&e), "the bytes end early (3 more needed)");
        let e = DecodeError::InvalidIntegerType {
            expected: IntegerType::U32,
            found: IntegerType::U64,
        };
        assert_eq!(decode(&e), "a u32 was expected, the bytes hold a u64");
        assert_eq!(
            decode(&DecodeError::InvalidBooleanValue(7)),
            "7 is not a valid bool"
        );
    }

    #[test]
    fn encode_errors_read_as_words() {
        assert_eq!(
            encode(&EncodeError::UnexpectedEnd),
            "the destination is too small for the encoding"
        );
    }
}
