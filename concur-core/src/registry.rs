//! The task registry: task name -> code, so that a worker process can run a
//! task it receives as bytes.
//!
//! Registration is static: each [`register!`](crate::register) line puts a
//! [`TaskEntry`] in one linker section of the executable (a `linkme`
//! distributed slice), so the parent and every worker process of the same
//! executable see the same registry without any start-up code, and without
//! a constructor per task. That last point matters to the process backend:
//! it enters worker mode from a constructor of its own, before `main`, and
//! every task must already be known then. With constructor-based
//! registration (as `inventory` does it) no constructor can be sure to run
//! after all of them.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::codec;
use crate::error::{ErrorKind, TaskError};
use crate::panic;
use crate::payload::Payload;
use crate::task::{NullPort, Port, Task, TaskContext, WorkerInfo};

/// Runs one encoded task: input bytes, the port to its caller, its worker.
type RunFn = fn(&[u8], &dyn Port, WorkerInfo) -> Result<Payload, TaskError>;
/// Runs an encoded batch of tasks.
type RunBatchFn = fn(&[u8], WorkerInfo) -> Result<Payload, TaskError>;

/// One registered task type. Built by [`register!`](crate::register).
#[derive(Debug)]
pub struct TaskEntry {
    name: &'static str,
    type_name: fn() -> &'static str,
    run: RunFn,
    run_batch: RunBatchFn,
}

/// Every registered task of the program, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

impl TaskEntry {
    /// The entry for task type `T`.
    pub const fn of<T: Task>() -> Self {
        Self {
            name: T::NAME,
            type_name: std::any::type_name::<T>,
            run: run_encoded::<T>,
            run_batch: run_batch_encoded::<T>,
        }
    }

    /// An entry from its parts: for built-in entries that serve many types
    /// under one name (function tasks, see `func.rs`).
    pub(crate) const fn from_raw(
        name: &'static str,
        type_name: fn() -> &'static str,
        run: RunFn,
        run_batch: RunBatchFn,
    ) -> Self {
        Self {
            name,
            type_name,
            run,
            run_batch,
        }
    }

    /// The task's stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Decodes a task from `input` and runs it, with panics caught in both
    /// (a panicking `Deserialize` is the task's panic). The output comes back
    /// as a value; the caller encodes it where it wants it
    /// ([`Payload::to_bytes`], or [`Payload::encode_into`] shared memory),
    /// whose encoders catch a panicking `Serialize` too. Also runs one item
    /// of a batch on its own (with [`NullPort`]: batch items have no
    /// caller port), so one item's failure stays that item's.
    ///
    /// # Errors
    /// Codec errors for the input, or the task's panic.
    pub fn run(
        &self,
        input: &[u8],
        port: &dyn Port,
        worker: WorkerInfo,
    ) -> Result<Payload, TaskError> {
        (self.run)(input, port, worker)
    }

    /// Runs an encoded `Vec<T>`; the result holds the
    /// `Vec<Result<T::Output, TaskError>>` (see [`crate::BatchHandle`]).
    ///
    /// # Errors
    /// Codec errors for the batch as a whole (and a panic in the task type's
    /// `Deserialize`, as [`ErrorKind::Panicked`]); each task's own failure is
    /// in its slot.
    pub fn run_batch(&self, input: &[u8], worker: WorkerInfo) -> Result<Payload, TaskError> {
        (self.run_batch)(input, worker)
    }
}

fn run_encoded<T: Task>(
    input: &[u8],
    port: &dyn Port,
    worker: WorkerInfo,
) -> Result<Payload, TaskError> {
    // Decoding runs the task type's `Deserialize` (user code): inside the
    // catch, so its panic is this task's `Panicked`, not the worker's death.
    let output = panic::catch(|| {
        let task: T = codec::decode(input, "task")?;
        Ok::<_, TaskError>(task.run(&mut TaskContext::new(port, worker)))
    })??;
    Ok(Payload::value(output))
}

fn run_batch_encoded<T: Task>(input: &[u8], worker: WorkerInfo) -> Result<Payload, TaskError> {
    let tasks: Vec<T> = panic::catch(|| codec::decode(input, "task batch"))??;
    Ok(Payload::value(run_batch(tasks, worker)))
}

/// Runs tasks one after another, each with its own panic catch. The in-process
/// half of [`TaskEntry::run_batch`]; thread backends call it directly.
pub fn run_batch<T: Task>(tasks: Vec<T>, worker: WorkerInfo) -> Vec<Result<T::Output, TaskError>> {
    tasks
        .into_iter()
        .map(|t| panic::catch(|| t.run(&mut TaskContext::new(&NullPort, worker))))
        .collect()
}

/// Registers task types for process workers: one line per type, at item level
/// (module scope), anywhere in the program.
///
/// ```
/// # use concur_core::{Task, TaskContext};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Ping;
/// # impl Task for Ping {
/// #     type Output = (); type ToCaller = (); type FromCaller = ();
/// #     const NAME: &'static str = "doc::Ping";
/// #     fn run(self, _: &mut TaskContext<'_, Self>) {}
/// # }
/// concur_core::register!(Ping);
/// assert!(concur_core::registry::lookup("doc::Ping").is_ok());
/// ```
#[macro_export]
macro_rules! register {
    ($($task:ty),+ $(,)?) => {
        $( const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::registry::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::registry::TaskEntry = $crate::registry::TaskEntry::of::<$task>();
        }; )+
    };
}

struct Table {
    by_name: HashMap<&'static str, &'static TaskEntry>,
    clashes: HashMap<&'static str, Vec<&'static str>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut clashes: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for entry in TASKS.iter() {
            match by_name.insert(entry.name, entry) {
                Some(prev) if (prev.type_name)() != (entry.type_name)() => {
                    let types = clashes.entry(entry.name).or_default();
                    types.push((prev.type_name)());
                    types.push((entry.type_name)());
                }
                _ => {}
            }
        }
        Table { by_name, clashes }
    })
}

/// The registered task called `name`.
///
/// # Errors
/// [`ErrorKind::NotRegistered`] when no task has that name;
/// [`ErrorKind::Config`] when two different types registered the same name.
pub fn lookup(name: &str) -> Result<&'static TaskEntry, TaskError> {
    let t = table();
    if let Some(types) = t.clashes.get(name) {
        return Err(TaskError::config(
            "Task::NAME",
            &format!(
                "`{name}` is used by more than one task type: {}",
                types.join(", ")
            ),
        ));
    }
    t.by_name.get(name).copied().ok_or_else(|| {
        TaskError::new(ErrorKind::NotRegistered {
            task: name.to_owned(),
        })
    })
}

/// Checks that `T` is registered under its name.
///
/// # Errors
/// As [`lookup`].
pub fn ensure_registered<T: Task>() -> Result<(), TaskError> {
    let entry = lookup(T::NAME)?;
    // The function-task entry serves every `FnTask<F, I, O>` type.
    if entry.name != crate::func::FN_TASK_NAME && (entry.type_name)() != std::any::type_name::<T>()
    {
        return Err(TaskError::config(
            "Task::NAME",
            &format!(
                "`{}` is registered for {}, not {}",
                T::NAME,
                (entry.type_name)(),
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(())
}

/// Every registered task name, sorted.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<_> = table().by_name.keys().copied().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    macro_rules! named_task {
        ($ty:ident, $name:literal) => {
            #[derive(Serialize, Deserialize)]
            struct $ty;
            impl Task for $ty {
                type Output = u8;
                type ToCaller = ();
                type FromCaller = ();
                const NAME: &'static str = $name;
                fn run(self, _: &mut TaskContext<'_, Self>) -> u8 {
                    7
                }
            }
        };
    }

    named_task!(Alone, "registry-tests::Alone");
    named_task!(First, "registry-tests::Shared");
    named_task!(Second, "registry-tests::Shared");
    crate::register!(Alone, First, Second);
    // Registering the same type twice is harmless.
    crate::register!(Alone);

    #[test]
    fn a_registered_task_runs_by_name() {
        let entry = lookup("registry-tests::Alone").unwrap();
        let input = codec::encode(&Alone, "task").unwrap();
        let out = entry
            .run(&input, &NullPort, WorkerInfo::current(0, 0))
            .unwrap();
        assert_eq!(out.into_value::<u8>("output").unwrap(), 7);
        assert!(names().contains(&"registry-tests::Alone"));
        ensure_registered::<Alone>().unwrap();
    }

    #[test]
    fn two_types_under_one_name_are_refused_by_name() {
        let err = lookup("registry-tests::Shared").unwrap_err();
        let ErrorKind::Config { field, reason } = err.kind() else {
            panic!("not a config error: {err}");
        };
        assert_eq!(field, "Task::NAME");
        assert!(
            reason.contains("First") && reason.contains("Second"),
            "{reason}"
        );
    }

    #[test]
    fn an_unknown_name_is_not_registered() {
        let err = lookup("registry-tests::Nobody").unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::NotRegistered {
                task: "registry-tests::Nobody".into()
            }
        );
    }
}
