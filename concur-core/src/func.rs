//! Function tasks: a `fn` item or a closure that captures nothing, run as a
//! task with no struct, no `impl Task`, no name and no registration
//! ([`ExecutorExt::submit_fn`](crate::ExecutorExt::submit_fn),
//! [`ExecutorExt::map_fn`](crate::ExecutorExt::map_fn)).
//!
//! # How a worker process finds the function
//!
//! Every `fn` item and every closure has a type of its own, and one that
//! captures nothing is zero-sized: the type *is* the function. So
//! [`FnTask<F, I, O>`] holds only the input; the code that calls `F` is
//! compiled once per `<F, I, O>` and described by a *descriptor*, a constant
//! of the program image holding that code's entry points and a magic
//! number. On threads the task is moved and none of this is used.
//!
//! On processes a function task travels as the 8-byte offset of its
//! descriptor from an anchor in this crate, then its input. Workers are the
//! same executable as their parent, so the same offset names the same
//! descriptor in them even though address-space randomization moves the
//! image as a whole. Every function task goes through one built-in registry
//! entry, [`FN_TASK_NAME`]; it reads the offset and, before calling
//! anything, checks that the descriptor it names:
//! - lies, aligned, inside a readable mapping of the file that holds the
//!   anchor (the executable; read once from `/proc/self/maps`),
//! - starts with the magic number, and
//! - holds entry points that lie inside executable mappings of that file.
//!
//! The descriptor's code then decodes the task with the codec's limits and
//! checks that the descriptor is the one of its own type. Bytes that fail
//! any check are a [`ErrorKind::Codec`] error of that task, never a jump to
//! an address the bytes chose.
//!
//! # Trust
//!
//! The checks turn corrupted or mismatched bytes into typed errors; they are
//! not a defence against a hostile parent. A worker takes frames only from
//! the parent that started it, proven by the random token of the handshake,
//! and that parent refuses workers of another build (the handshake compares
//! the protocol version and the executable's build id), so the offsets a
//! worker receives were computed by the very same binary. A parent that
//! wanted to run arbitrary code in its workers could do so anyway: they are
//! its own children.
//!
//! # Requirements
//!
//! - `F` must be zero-sized: a `fn` item or a closure that captures nothing.
//!   A function pointer or a capturing closure fails to compile (see
//!   [`FnTask::new`]). A closure that captures only zero-sized values is
//!   accepted; in a worker those values are made from nothing, so capture
//!   none.
//! - The function and `concur-core` must be linked into the executable
//!   itself (the normal static linking of Rust crates), since the offset is
//!   taken from an anchor in `concur-core`.
//! - On processes: Linux (`/proc/self/maps`); elsewhere a worker refuses
//!   function tasks with a typed error.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{ErrorKind, TaskError};
use crate::panic;
use crate::payload::Payload;
use crate::registry::{self, TaskEntry};
use crate::task::{Message, Port, Task, TaskContext, WorkerInfo};

/// The registry name every function task is sent under. Reserved: a task
/// type of your own must not use it.
pub const FN_TASK_NAME: &str = "concur::fn";

/// What [`FnTask::new`] says at compile time when `F` is not zero-sized.
macro_rules! not_zero_sized {
    () => {
        "submit_fn takes a fn item or a closure that captures nothing"
    };
}

/// A function and its input, run as a task: `f(input)`.
///
/// Made by [`ExecutorExt::submit_fn`](crate::ExecutorExt::submit_fn) and
/// [`ExecutorExt::map_fn`](crate::ExecutorExt::map_fn); build one yourself
/// for the other submitting calls (`map_with`, `map_unordered`,
/// `submit_batch`, `submit_async`). Its [`Task::NAME`] is [`FN_TASK_NAME`]
/// for every function; errors it makes name the function itself
/// (`std::any::type_name` of `F`, such as `my_crate::square` or
/// `my_crate::main::{{closure}}`).
///
/// ```
/// use concur_core::FnTask;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let by_name = FnTask::new(square, 7);
/// let closure = FnTask::new(|(a, b): (u64, String)| format!("{b}{a}"), (1, "n".into()));
/// assert!(format!("{by_name:?}").contains("square"));
/// # drop(closure);
/// ```
///
/// A closure that captures something, or a function pointer, is refused at
/// compile time (the function must be found again in a worker process,
/// where captured values do not exist):
///
/// ```compile_fail,E0080
/// let offset = 3;
/// let _ = concur_core::FnTask::new(move |x: u64| x + offset, 1);
/// ```
///
/// ```compile_fail,E0080
/// let f: fn(u64) -> u64 = |x| x + 1;
/// let _ = concur_core::FnTask::new(f, 1);
/// ```
pub struct FnTask<F, I, O> {
    f: F,
    input: I,
    _output: PhantomData<fn() -> O>,
}

impl<F, I, O> FnTask<F, I, O>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    /// The task `f(input)`.
    ///
    /// `F` must be a `fn` item or a closure that captures nothing; anything
    /// else (a function pointer, a capturing closure) fails to compile with
    /// "submit_fn takes a fn item or a closure that captures nothing".
    pub fn new(f: F, input: I) -> Self {
        const { assert!(size_of::<F>() == 0, not_zero_sized!()) };
        Self {
            f,
            input,
            _output: PhantomData,
        }
    }

    /// The function's name (`std::any::type_name` of `F`).
    pub fn function(&self) -> &'static str {
        std::any::type_name::<F>()
    }

    /// The input the function will be called with.
    pub fn input(&self) -> &I {
        &self.input
    }

    /// This task type's descriptor. The compiler may keep more than one
    /// copy of the constant; any will do, since a worker checks what it
    /// finds at an offset, not which copy it is.
    fn descriptor() -> &'static Descriptor {
        &<Self as Described>::DESCRIPTOR
    }
}

impl<F, I: fmt::Debug, O> fmt::Debug for FnTask<F, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTask")
            .field("function", &format_args!("{}", std::any::type_name::<F>()))
            .field("input", &self.input)
            .finish()
    }
}

impl<F: Copy, I: Clone, O> Clone for FnTask<F, I, O> {
    fn clone(&self) -> Self {
        Self {
            f: self.f,
            input: self.input.clone(),
            _output: PhantomData,
        }
    }
}

impl<F, I, O> Task for FnTask<F, I, O>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    type Output = O;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = FN_TASK_NAME;

    /// Calls the function. A panic in it is re-raised with the function's
    /// name before its message (``in `my_crate::square`: ...``; the
    /// location is kept), so the task's `Panicked` error says which
    /// function failed.
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> O {
        let Self { f, input, .. } = self;
        match std::panic::catch_unwind(AssertUnwindSafe(move || f(input))) {
            Ok(output) => output,
            Err(payload) => {
                let message = panic::payload_message(&*payload);
                // Dropping a payload can itself panic; never let that escape.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
                // `resume_unwind` skips the panic hook: the location the
                // hook recorded for the original panic stays the task's.
                std::panic::resume_unwind(Box::new(format!(
                    "in `{}`: {message}",
                    std::any::type_name::<F>()
                )))
            }
        }
    }
}

/// The inputs of [`ExecutorExt::map_fn`](crate::ExecutorExt::map_fn), each
/// made a [`FnTask`] of one function as it is pulled.
pub struct FnTasks<F, It> {
    f: F,
    inputs: It,
}

impl<F, It> FnTasks<F, It> {
    /// `f` over `inputs`, lazily.
    pub fn new(f: F, inputs: It) -> Self {
        Self { f, inputs }
    }
}

impl<F, It> fmt::Debug for FnTasks<F, It> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTasks")
            .field("function", &format_args!("{}", std::any::type_name::<F>()))
            .finish_non_exhaustive()
    }
}

impl<F, I, O, It> Iterator for FnTasks<F, It>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
    It: Iterator<Item = I>,
{
    type Item = FnTask<F, I, O>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inputs.next().map(|input| FnTask::new(self.f, input))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // `map` sizes its batches from this.
        self.inputs.size_hint()
    }
}

// ------------------------------------------------------------ the wire --

/// Runs one encoded task (the registry's `run`).
type RunFn = fn(&[u8], &dyn Port, WorkerInfo) -> Result<Payload, TaskError>;
/// Runs an encoded batch (the registry's `run_batch`).
type RunBatchFn = fn(&[u8], WorkerInfo) -> Result<Payload, TaskError>;

/// Marks a descriptor. The check compares it one word at a time, so the
/// only other place it could sit whole is a constant the compiler made
/// of it, which is not followed by entry points into the code.
const MAGIC: [u64; 2] = [0x8f3a_61c2_d45e_07b9, 0x2c97_e0d1_5b68_a4f3];

/// Where the code of one function task type starts.
#[repr(C)]
struct Descriptor {
    magic: [u64; 2],
    run: RunFn,
    run_batch: RunBatchFn,
    function: fn() -> &'static str,
    type_id: fn() -> TypeId,
}

/// A descriptor's bytes before they are known to be one: words only, so
/// reading them is valid whatever they hold.
#[repr(C)]
struct RawDescriptor {
    magic: [u64; 2],
    code: [usize; 4],
}

const _: () = assert!(size_of::<Descriptor>() == size_of::<RawDescriptor>());
const _: () = assert!(align_of::<Descriptor>() == align_of::<RawDescriptor>());

trait Described {
    const DESCRIPTOR: Descriptor;
}

impl<F, I, O> Described for FnTask<F, I, O>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    const DESCRIPTOR: Descriptor = Descriptor {
        magic: MAGIC,
        run: run_encoded::<F, I, O>,
        run_batch: run_batch_encoded::<F, I, O>,
        function: std::any::type_name::<F>,
        type_id: TypeId::of::<FnTask<F, I, O>>,
    };
}

/// The point descriptors are measured from: a static of this crate, so
/// the same in every process of one executable relative to its code.
static ANCHOR: u8 = 0;

fn anchor() -> usize {
    std::ptr::addr_of!(ANCHOR).expose_provenance()
}

fn offset_of(d: &'static Descriptor) -> u64 {
    let addr = std::ptr::from_ref(d).expose_provenance();
    // Zero-extended on 32-bit targets; `resolve` truncates it back.
    addr.wrapping_sub(anchor()) as u64
}

impl<F, I, O> Serialize for FnTask<F, I, O>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A fixed 8 bytes, so the registry entry finds it without knowing `I`.
        let offset = offset_of(Self::descriptor()).to_le_bytes();
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&offset)?;
        t.serialize_element(&self.input)?;
        t.end()
    }
}

impl<'de, F, I, O> Deserialize<'de> for FnTask<F, I, O>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<fn() -> T>);

        impl<'de, F, I, O> Visitor<'de> for V<FnTask<F, I, O>>
        where
            F: Fn(I) -> O + Copy + Send + Sync + 'static,
            I: Message,
            O: Message,
        {
            type Value = FnTask<F, I, O>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a function task: descriptor offset and input")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let offset: [u8; 8] = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                // Checked before the input is read: bytes meant for another
                // function are not decoded as this one's input.
                let d = resolve(u64::from_le_bytes(offset)).map_err(A::Error::custom)?;
                if (d.type_id)() != TypeId::of::<FnTask<F, I, O>>() {
                    return Err(A::Error::custom(format_args!(
                        "the task is for `{}`, not `{}`",
                        (d.function)(),
                        std::any::type_name::<F>()
                    )));
                }
                let input: I = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(FnTask {
                    f: conjure::<F>(),
                    input,
                    _output: PhantomData,
                })
            }
        }

        d.deserialize_tuple(2, V(PhantomData))
    }
}

/// The value of the zero-sized function type `F`, made from nothing.
fn conjure<F: Copy>() -> F {
    const { assert!(size_of::<F>() == 0, not_zero_sized!()) };
    // SAFETY: `F` is zero-sized, so it has no bytes to be invalid, and it
    // is `Copy`, so a value of it may be duplicated freely: on stable Rust
    // a zero-sized `Fn + Copy` type is a fn item or a closure whose
    // captures (if any) are zero-sized `Copy` values. Were `F` uninhabited
    // (a closure capturing a never-type value), `zeroed` panics instead of
    // returning, and the panic is the task's error.
    unsafe { std::mem::zeroed() }
}

/// Decodes and runs one function task: what a descriptor's `run` points to.
fn run_encoded<F, I, O>(
    input: &[u8],
    port: &dyn Port,
    worker: WorkerInfo,
) -> Result<Payload, TaskError>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    // Decoding runs the input type's `Deserialize` (user code): inside the
    // catch, so its panic is this task's `Panicked`, not the worker's death.
    let output = panic::catch(|| {
        let task: FnTask<F, I, O> =
            codec::decode(input, "task").map_err(|e| input_error::<F>(&e))?;
        Ok::<_, TaskError>(task.run(&mut TaskContext::new(port, worker)))
    })??;
    Ok(Payload::value(output))
}

/// Decodes and runs a batch of one function's tasks.
fn run_batch_encoded<F, I, O>(input: &[u8], worker: WorkerInfo) -> Result<Payload, TaskError>
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
    I: Message,
    O: Message,
{
    let tasks: Vec<FnTask<F, I, O>> =
        panic::catch(|| codec::decode(input, "task batch").map_err(|e| input_error::<F>(&e)))??;
    Ok(Payload::value(registry::run_batch(tasks, worker)))
}

/// A decoding error of `F`'s task, naming `F`; the codec's cause is kept
/// (as text).
fn input_error<F>(e: &TaskError) -> TaskError {
    let what = format!("input of `{}`", std::any::type_name::<F>());
    match std::error::Error::source(e) {
        Some(cause) => TaskError::codec(&what, Refused(cause.to_string())),
        None => TaskError::new(ErrorKind::Codec { what }),
    }
}

// --------------------------------------------------- the registry entry --

#[linkme::distributed_slice(crate::registry::TASKS)]
static FN_ENTRY: TaskEntry =
    TaskEntry::from_raw(FN_TASK_NAME, entry_type_name, run_entry, run_batch_entry);

fn entry_type_name() -> &'static str {
    "concur_core::FnTask<_, _, _>"
}

/// Why bytes are not a function task.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(what: &str, why: impl Into<String>) -> TaskError {
    TaskError::codec(what, Refused(why.into()))
}

/// The offset a function task's bytes start with.
fn leading_offset(bytes: &[u8], what: &str) -> Result<u64, TaskError> {
    let head = bytes
        .first_chunk::<8>()
        .ok_or_else(|| refused(what, "too short to hold a function descriptor offset"))?;
    Ok(u64::from_le_bytes(*head))
}

/// The function an encoded function task (one task's bytes, as the
/// `concur::fn` registry entry runs them) would call, by its Rust path;
/// `None` when the bytes do not name a function of this program (checked as
/// the entry checks them). Backends use it to name the function, not
/// `concur::fn`, in what they print about a running task.
pub fn function_task_name(input: &[u8]) -> Option<&'static str> {
    let offset = leading_offset(input, "task").ok()?;
    resolve(offset).ok().map(|d| (d.function)())
}

fn run_entry(input: &[u8], port: &dyn Port, worker: WorkerInfo) -> Result<Payload, TaskError> {
    let d = leading_offset(input, "task")
        .and_then(|offset| resolve(offset).map_err(|why| refused("task", why)))?;
    (d.run)(input, port, worker)
}

fn run_batch_entry(input: &[u8], worker: WorkerInfo) -> Result<Payload, TaskError> {
    // A batch is a sequence: its length (a bincode varint), then its tasks.
    let (len, used): (u64, usize) = bincode::serde::decode_from_slice(input, codec::config())
        .map_err(|e| TaskError::codec("task batch", e))?;
    if len == 0 {
        if used != input.len() {
            return Err(refused("task batch", "trailing bytes after an empty batch"));
        }
        // No task names a function. An empty list encodes the same for
        // every output type, and this one is only ever encoded.
        return Ok(Payload::value(Vec::<Result<(), TaskError>>::new()));
    }
    let d = leading_offset(&input[used..], "task batch")
        .and_then(|offset| resolve(offset).map_err(|why| refused("task batch", why)))?;
    // Every task's own offset is checked again as the batch decodes.
    (d.run_batch)(input, worker)
}

// ------------------------------------------------------ the checks --

/// The mappings of the file that holds [`ANCHOR`] (the executable).
#[derive(Debug, Default, PartialEq, Eq)]
struct Image {
    /// Readable: where descriptors are (usually read-only data; with
    /// older linkers' layouts, possibly in the code's segment).
    data: Vec<Range<usize>>,
    /// Executable: where the code they point to is.
    code: Vec<Range<usize>>,
}

impl Image {
    fn holds(ranges: &[Range<usize>], start: usize, len: usize) -> bool {
        start
            .checked_add(len)
            .is_some_and(|end| ranges.iter().any(|r| r.start <= start && end <= r.end))
    }
}

/// The image's mappings from the text of `/proc/self/maps`: every
/// readable mapping with the device and inode of the one holding `anchor`,
/// adjacent ones merged.
fn parse_maps(maps: &str, anchor: usize) -> Option<Image> {
    struct Line<'a> {
        range: Range<usize>,
        readable: bool,
        executable: bool,
        file: (&'a str, &'a str),
    }
    fn parse(line: &str) -> Option<Line<'_>> {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?.as_bytes();
        let _offset = fields.next()?;
        let dev = fields.next()?;
        let inode = fields.next()?;
        Some(Line {
            range: usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?,
            readable: perms.first() == Some(&b'r'),
            executable: perms.get(2) == Some(&b'x'),
            file: (dev, inode),
        })
    }
    let lines: Vec<Line<'_>> = maps.lines().filter_map(parse).collect();
    let file = lines.iter().find(|l| l.range.contains(&anchor))?.file;
    if file.1 == "0" {
        return None; // not a file mapping
    }
    let mut image = Image::default();
    let push = |ranges: &mut Vec<Range<usize>>, r: &Range<usize>| match ranges.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => ranges.push(r.clone()),
    };
    for l in lines.iter().filter(|l| l.file == file && l.readable) {
        push(&mut image.data, &l.range);
        if l.executable {
            push(&mut image.code, &l.range);
        }
    }
    Some(image)
}

/// This process's image, read once (the executable's mappings do not move).
fn image() -> Result<&'static Image, String> {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    if let Some(image) = IMAGE.get() {
        return Ok(image);
    }
    // A local kernel file, a few kilobytes: read whole.
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps to check a function task: {e}"))?;
    let image = parse_maps(&maps, anchor())
        .ok_or("the executable's mappings are not in /proc/self/maps")?;
    Ok(IMAGE.get_or_init(|| image))
}

/// The descriptor `offset` names, if it passes every check.
fn resolve(offset: u64) -> Result<&'static Descriptor, String> {
    resolve_in(image()?, offset)
}

fn resolve_in(image: &Image, offset: u64) -> Result<&'static Descriptor, String> {
    let bad = || format!("offset {offset:#x} does not name a function of this program");
    // Truncation undoes `offset_of`'s zero extension on 32-bit targets.
    let addr = anchor().wrapping_add(offset as usize);
    if addr % align_of::<Descriptor>() != 0
        || !Image::holds(&image.data, addr, size_of::<Descriptor>())
    {
        return Err(bad());
    }
    let raw = std::ptr::with_exposed_provenance::<RawDescriptor>(addr);
    // SAFETY: `addr` is aligned for `RawDescriptor` and the whole of it
    // lies in a readable mapping of the executable, which stays mapped for
    // the life of the process; every bit pattern is a valid `RawDescriptor`.
    let raw = unsafe { raw.read() };
    let code_ok = raw.code.iter().all(|&f| Image::holds(&image.code, f, 1));
    if raw.magic[0] != MAGIC[0] || raw.magic[1] != MAGIC[1] || !code_ok {
        return Err(bad());
    }
    let d = std::ptr::with_exposed_provenance::<Descriptor>(addr);
    // SAFETY: the bytes are a descriptor: its magic number is there and its
    // entry points are non-null addresses in the executable's code, which
    // only the compiler's `Described::DESCRIPTOR` constants put side by side
    // with that number (the parent, the same binary, computed the offset
    // from one of them). Constants of the image live as long as the process.
    Ok(unsafe { &*d })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NullPort;

    fn square(x: u64) -> u64 {
        x * x
    }

    fn concat((a, b): (u64, String)) -> String {
        format!("{b}{a}")
    }

    fn fails(x: u64) -> u64 {
        panic!("no luck with {x}")
    }

    fn worker() -> WorkerInfo {
        WorkerInfo::current(0, 0)
    }

    fn encoded<F, I, O>(t: &FnTask<F, I, O>) -> Vec<u8>
    where
        F: Fn(I) -> O + Copy + Send + Sync + 'static,
        I: Message,
        O: Message,
    {
        codec::encode(t, "task").unwrap()
    }

    fn run_bytes<O: Message>(bytes: &[u8]) -> Result<O, TaskError> {
        registry::lookup(FN_TASK_NAME)?
            .run(bytes, &NullPort, worker())?
            .into_value("output")
    }

    fn codec_error(e: &TaskError) -> bool {
        matches!(e.kind(), ErrorKind::Codec { .. })
    }

    #[test]
    fn the_entry_runs_encoded_fn_items_and_closures() {
        assert_eq!(
            run_bytes::<u64>(&encoded(&FnTask::new(square, 9))).unwrap(),
            81
        );
        let t = FnTask::new(concat, (4, "x".to_owned()));
        assert_eq!(run_bytes::<String>(&encoded(&t)).unwrap(), "x4");
        let t = FnTask::new(|v: Vec<u8>| v.len(), vec![1, 2, 3]);
        assert_eq!(run_bytes::<usize>(&encoded(&t)).unwrap(), 3);
    }

    fn descriptor_of<F, I, O>(_: &FnTask<F, I, O>) -> &'static Descriptor
    where
        F: Fn(I) -> O + Copy + Send + Sync + 'static,
        I: Message,
        O: Message,
    {
        FnTask::<F, I, O>::descriptor()
    }

    #[test]
    fn the_registry_accepts_every_function_task_type() {
        fn check<F, I, O>(_: &FnTask<F, I, O>)
        where
            F: Fn(I) -> O + Copy + Send + Sync + 'static,
            I: Message,
            O: Message,
        {
            registry::ensure_registered::<FnTask<F, I, O>>().unwrap();
        }
        check(&FnTask::new(square, 1));
        check(&FnTask::new(concat, (1, String::new())));
        assert!(registry::names().contains(&FN_TASK_NAME));
    }

    #[test]
    fn forged_offsets_are_codec_errors() {
        let good = encoded(&FnTask::new(square, 3));
        let offset = u64::from_le_bytes(good[..8].try_into().unwrap());
        // Copies of one descriptor may differ in address (release builds
        // keep one per call site), never in what they describe.
        let here = resolve(offset_of(descriptor_of(&FnTask::new(square, 3)))).unwrap();
        assert_eq!((resolve(offset).unwrap().type_id)(), (here.type_id)());
        let forge = |o: u64| {
            let mut b = good.clone();
            b[..8].copy_from_slice(&o.to_le_bytes());
            b
        };
        // An entry point's own address is code, not a descriptor.
        let code = (run_entry as RunFn as usize).wrapping_sub(anchor()) as u64;
        for bad in [
            forge(offset.wrapping_add(1)),
            forge(offset.wrapping_add(8)),
            forge(offset.wrapping_sub(16)),
            forge(0), // the anchor itself
            forge(code),
            forge(0xdead_beef_dead_beef),
            forge(u64::MAX),
            good[..5].to_vec(),
            Vec::new(),
        ] {
            let e = run_bytes::<u64>(&bad).unwrap_err();
            assert!(codec_error(&e), "{e:?}");
        }
    }

    #[test]
    fn another_functions_offset_is_refused_on_decoding() {
        fn decode_as<F, I, O>(_: &FnTask<F, I, O>, bytes: &[u8]) -> Result<(), TaskError>
        where
            F: Fn(I) -> O + Copy + Send + Sync + 'static,
            I: Message,
            O: Message,
        {
            codec::decode::<FnTask<F, I, O>>(bytes, "task").map(drop)
        }
        let t = FnTask::new(square, 3);
        let mut bytes = encoded(&t);
        let other = encoded(&FnTask::new(|x: u64| x + 1, 0));
        decode_as(&t, &bytes).unwrap();
        bytes[..8].copy_from_slice(&other[..8]);
        let e = decode_as(&t, &bytes).unwrap_err();
        assert!(codec_error(&e));
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("{{closure}}"), "{cause}");
    }

    #[test]
    fn a_bad_input_names_the_function() {
        let mut bytes = encoded(&FnTask::new(concat, (1, "abc".into())));
        bytes.truncate(bytes.len() - 1);
        let e = run_bytes::<String>(&bytes).unwrap_err();
        match e.kind() {
            ErrorKind::Codec { what } => assert!(what.contains("concat"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_panic_names_the_function_and_keeps_message_and_location() {
        let t = FnTask::new(fails, 5);
        let e = panic::catch(|| t.run(&mut TaskContext::new(&NullPort, worker()))).unwrap_err();
        let ErrorKind::Panicked { message, location } = e.kind() else {
            panic!("{e:?}")
        };
        assert_eq!(
            message,
            "in `concur_core::func::tests::fails`: no luck with 5"
        );
        assert!(location.as_deref().unwrap().contains("func.rs"));
        // The same through the registry entry (the process path).
        let e = run_bytes::<u64>(&encoded(&FnTask::new(fails, 6))).unwrap_err();
        assert!(e
            .to_string()
            .contains("in `concur_core::func::tests::fails`: no luck with 6"));
    }

    #[test]
    fn batches_run_through_the_entry() {
        let entry = registry::lookup(FN_TASK_NAME).unwrap();
        let tasks: Vec<_> = (0..5).map(|x| FnTask::new(square, x)).collect();
        let bytes = codec::encode(&tasks, "batch").unwrap();
        let out: Vec<Result<u64, TaskError>> = entry
            .run_batch(&bytes, worker())
            .unwrap()
            .into_value("batch")
            .unwrap();
        let out: Vec<u64> = out.into_iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(out, [0, 1, 4, 9, 16]);
        let mut none = vec![FnTask::new(square, 0)];
        none.clear();
        let empty = codec::encode(&none, "b").unwrap();
        let out = entry.run_batch(&empty, worker()).unwrap();
        assert_eq!(out.to_bytes().unwrap(), empty);
        assert!(codec_error(
            &entry.run_batch(&[1, 0, 0, 0], worker()).unwrap_err()
        ));
    }

    #[test]
    fn debug_names_the_function() {
        let t = FnTask::new(square, 3);
        assert_eq!(
            format!("{t:?}"),
            "FnTask { function: concur_core::func::tests::square, input: 3 }"
        );
        assert_eq!(t.function(), "concur_core::func::tests::square");
    }

    #[test]
    fn maps_are_parsed_into_the_anchors_file() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 4242   /bin/prog
55d0c0001000-55d0c0005000 r-xp 00001000 fd:01 4242   /bin/prog
55d0c0005000-55d0c0006000 r--p 00005000 fd:01 4242   /bin/prog
55d0c0006000-55d0c0007000 r--p 00006000 fd:01 4242   /bin/prog
55d0c0007000-55d0c0008000 rw-p 00007000 fd:01 4242   /bin/prog
55d0c0008000-55d0c0009000 rw-p 00000000 00:00 0
7f0000000000-7f0000001000 r--p 00000000 fd:01 777    /lib/libc.so.6
7f0000001000-7f0000002000 ---p 00000000 fd:01 4242   /bin/prog
garbage line
";
        let image = parse_maps(maps, 0x55d0_c000_5010).unwrap();
        assert_eq!(image.code, vec![0x55d0_c000_1000..0x55d0_c000_5000]);
        assert_eq!(image.data, vec![0x55d0_c000_0000..0x55d0_c000_8000]);
        assert!(parse_maps(maps, 0x55d0_c000_8010).is_none(), "anonymous");
        assert!(parse_maps(maps, 0x1000).is_none(), "unmapped");
    }

    #[test]
    fn this_process_resolves_its_own_descriptors() {
        let d = descriptor_of(&FnTask::new(square, 0));
        let got = resolve(offset_of(d)).unwrap();
        assert!(std::ptr::eq(got, d));
        assert_eq!((got.function)(), "concur_core::func::tests::square");
    }
}
