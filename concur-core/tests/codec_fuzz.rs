//! Property test of the decoder the parent runs on every frame from a
//! worker: arbitrary bytes, truncated valid encodings, huge length headers
//! and deep nesting never panic, abort, overflow the stack or allocate more
//! than a small multiple of the input; they give a typed `Codec` error.
//!
//! Allocation is measured by a counting global allocator (per thread, so
//! tests running beside each other do not disturb each other).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use concur_core::codec::{self, MAX_DEPTH};
use concur_core::{ErrorKind, TaskError};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|l| {
        let now = l.get() + size;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most a decode of `len` bytes may have allocated at once: a small
/// multiple of the input (collections are preallocated from size hints of
/// at most one element per input byte, then grow by doubling) plus room for
/// an error and its message.
fn allowed(len: usize) -> usize {
    256 * len + (64 << 10)
}

/// Decodes `bytes` as `T`, checking the allocation bound and the error type.
fn check<T: DeserializeOwned + Debug>(bytes: &[u8]) -> Result<T, TaskError> {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let result = codec::decode::<T>(bytes, "output");
    let peak = PEAK.with(Cell::get) - before;
    assert!(
        peak <= allowed(bytes.len()),
        "decoding {} bytes as {} allocated {peak} bytes at once",
        bytes.len(),
        std::any::type_name::<T>()
    );
    if let Err(e) = &result {
        assert!(
            matches!(e.kind(), ErrorKind::Codec { what } if what == "output"),
            "{e:?}"
        );
    }
    result
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf(u64),
    Node(Vec<Tree>),
    Named(BTreeMap<String, Tree>),
    Text(Option<String>),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u128,
    name: String,
    tags: Vec<String>,
    scores: HashMap<String, Vec<u32>>,
    ratio: f64,
    flag: Option<char>,
    units: Vec<()>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Nest(Option<Box<Nest>>);

/// Tries the bytes as every type the frames of a process backend carry,
/// and some that stress the decoder's paths.
fn check_all(bytes: &[u8]) {
    let _ = check::<String>(bytes);
    let _ = check::<Vec<u8>>(bytes);
    let _ = check::<Vec<u64>>(bytes);
    let _ = check::<Vec<String>>(bytes);
    let _ = check::<Vec<()>>(bytes);
    let _ = check::<Vec<Vec<Vec<u16>>>>(bytes);
    let _ = check::<HashMap<String, Vec<u32>>>(bytes);
    let _ = check::<(u128, char, f64, Option<i16>)>(bytes);
    let _ = check::<Tree>(bytes);
    let _ = check::<Record>(bytes);
    let _ = check::<Nest>(bytes);
    let _ = check::<Result<Vec<u8>, TaskError>>(bytes);
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Tree::Leaf),
        proptest::option::of(".{0,8}").prop_map(Tree::Text),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Tree::Node),
            proptest::collection::btree_map(".{0,4}", inner, 0..3).prop_map(Tree::Named),
        ]
    })
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u128>(),
        ".{0,12}",
        proptest::collection::vec(".{0,6}", 0..4),
        proptest::collection::hash_map(
            ".{0,4}",
            proptest::collection::vec(any::<u32>(), 0..4),
            0..3,
        ),
        any::<f64>().prop_filter("comparable", |f| !f.is_nan()),
        any::<Option<char>>(),
        0usize..20,
    )
        .prop_map(|(id, name, tags, scores, ratio, flag, units)| Record {
            id,
            name,
            tags,
            scores,
            ratio,
            flag,
            units: vec![(); units],
        })
}

/// bincode's standard varint encodings of `n`, in every width that holds it.
fn varints(n: u64) -> Vec<Vec<u8>> {
    let mut out = vec![[vec![253], n.to_le_bytes().to_vec()].concat()];
    if let Ok(n) = u32::try_from(n) {
        out.push([vec![252], n.to_le_bytes().to_vec()].concat());
    }
    if let Ok(n) = u16::try_from(n) {
        out.push([vec![251], n.to_le_bytes().to_vec()].concat());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_give_a_value_or_a_codec_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check_all(&bytes);
    }

    #[test]
    fn truncated_encodings_fail(tree in tree(), record in record(), cut in any::<prop::sample::Index>()) {
        let bytes = codec::encode(&tree, "t").unwrap();
        prop_assert_eq!(check::<Tree>(&bytes).unwrap(), tree);
        let end = cut.index(bytes.len());
        prop_assert!(check::<Tree>(&bytes[..end]).is_err());

        let bytes = codec::encode(&record, "r").unwrap();
        prop_assert_eq!(check::<Record>(&bytes).unwrap(), record);
        let end = cut.index(bytes.len());
        prop_assert!(check::<Record>(&bytes[..end]).is_err());
    }

    #[test]
    fn huge_length_headers_fail_without_allocating(
        prefix in proptest::collection::vec(any::<u8>(), 0..8),
        claim in (1u64 << 16)..u64::MAX,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        for header in varints(claim) {
            check_all(&[prefix.as_slice(), &header, &tail].concat());
            // The header right where a length is read.
            let at_start = [header.as_slice(), &tail].concat();
            prop_assert!(check::<String>(&at_start).is_err());
            prop_assert!(check::<Vec<u64>>(&at_start).is_err());
            prop_assert!(check::<Vec<()>>(&at_start).is_err() || claim <= (1 << 20) + 80);
            prop_assert!(check::<HashMap<String, Vec<u32>>>(&at_start).is_err());
        }
    }

    #[test]
    fn deep_nesting_fails_past_the_limit(depth in 0usize..4 * MAX_DEPTH, seq in any::<bool>()) {
        // Either `Nest` (two levels per byte) or `Tree::Node` chains (two
        // levels per two bytes: variant, length 1).
        let (bytes, levels) = if seq {
            let mut b = [1u8, 1].repeat(depth);
            b.extend([0, 5]);
            (b, 2 * depth + 1)
        } else {
            let mut b = vec![1u8; depth];
            b.push(0);
            (b, 2 * depth + 2)
        };
        let ok = if seq { check::<Tree>(&bytes).is_ok() } else { check::<Nest>(&bytes).is_ok() };
        prop_assert_eq!(ok, levels <= MAX_DEPTH);
    }
}
