//! `#[task]` through its public use: what it fills in, that the type is
//! registered, and that a worker process runs it.

concur_procs::enable_test_support!();

use std::any::TypeId;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concur_core::registry::{ensure_registered, lookup};
use concur_core::{codec, Payload, Port, Task, TaskError, WorkerInfo};

/// Bounds a hang; never a timing threshold.
const DEADLINE: Duration = Duration::from_secs(60);

mod shapes {
    use concur_core::Task;
    use concur_macros::task;
    use serde::{Deserialize, Serialize};

    /// Everything filled in, the crate named by the attribute.
    #[derive(Serialize, Deserialize)]
    pub struct Square(pub u64);

    #[task(crate = concur_core)]
    impl Task for Square {
        type Output = u64;
        fn run(self) -> u64 {
            self.0 * self.0
        }
    }

    /// Everything filled in, the crate found in `Cargo.toml` (concur-core).
    #[derive(Serialize, Deserialize)]
    pub struct Cube(pub u64);

    #[task]
    impl Task for Cube {
        type Output = u64;
        fn run(self) -> u64 {
            self.0.pow(3)
        }
    }

    /// Through a backend's re-exports, with `mut self` and no return type.
    #[derive(Serialize, Deserialize)]
    pub struct Noop(pub u8);

    #[concur_macros::task(crate = concur_procs)]
    impl concur_procs::Task for Noop {
        type Output = ();
        fn run(mut self) {
            self.0 = self.0.wrapping_add(1);
        }
    }
}

mod talk {
    use concur_core::{Task, TaskContext};
    use serde::{Deserialize, Serialize};

    /// Sends each word to its caller and returns how many there were: the
    /// user's name, message type and context parameter are kept.
    #[derive(Serialize, Deserialize)]
    pub struct Words(pub String);

    #[concur_macros::task]
    impl Task for Words {
        const NAME: &'static str = "custom::Words";
        type Output = usize;
        type ToCaller = String;
        fn run(self, cx: &mut TaskContext<'_, Self>) -> usize {
            let words: Vec<&str> = self.0.split_whitespace().collect();
            for w in &words {
                cx.send((*w).to_owned()).unwrap();
            }
            words.len()
        }
    }
}

use shapes::{Cube, Noop, Square};
use talk::Words;

/// A port that keeps what a task sends.
#[derive(Default)]
struct Recorder(Mutex<Vec<Payload>>);

impl Port for Recorder {
    fn send(&self, msg: Payload) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(msg);
        Ok(())
    }
    fn recv(&self, _deadline: Option<Instant>) -> Option<Payload> {
        None
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Runs `task` the way a worker process does: encoded, found by its name in
/// the registry, decoded and run.
fn run_registered<T: Task>(task: &T, port: &dyn Port) -> T::Output {
    let input = codec::encode(task, "task").unwrap();
    lookup(T::NAME)
        .unwrap()
        .run(&input, port, WorkerInfo::current(0, 0))
        .unwrap()
        .into_value("output")
        .unwrap()
}

fn is_unit<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<()>()
}

#[test]
fn name_is_the_module_path_and_the_type() {
    assert_eq!(Square::NAME, "task::shapes::Square");
    assert_eq!(Cube::NAME, "task::shapes::Cube");
    assert_eq!(Noop::NAME, "task::shapes::Noop");
}

#[test]
fn a_written_name_is_kept() {
    assert_eq!(Words::NAME, "custom::Words");
}

#[test]
fn message_types_default_to_unit() {
    assert!(is_unit::<<Square as Task>::ToCaller>());
    assert!(is_unit::<<Square as Task>::FromCaller>());
    assert!(is_unit::<<Words as Task>::FromCaller>());
    assert!(!is_unit::<<Words as Task>::ToCaller>());
}

#[test]
fn every_task_is_registered_under_its_name() {
    ensure_registered::<Square>().unwrap();
    ensure_registered::<Cube>().unwrap();
    ensure_registered::<Noop>().unwrap();
    ensure_registered::<Words>().unwrap();
}

#[test]
fn run_without_a_context_parameter_runs() {
    let port = Recorder::default();
    assert_eq!(run_registered(&Square(7), &port), 49);
    assert_eq!(run_registered(&Cube(3), &port), 27);
    run_registered(&Noop(255), &port);
    assert!(port.0.lock().unwrap().is_empty());
}

#[test]
fn a_written_context_parameter_reaches_the_caller() {
    let port = Recorder::default();
    assert_eq!(run_registered(&Words("a bc d".into()), &port), 3);
    let sent: Vec<String> = std::mem::take(&mut *port.0.lock().unwrap())
        .into_iter()
        .map(|m| m.into_value("message").unwrap())
        .collect();
    assert_eq!(sent, ["a", "bc", "d"]);
}

#[test]
fn a_worker_process_runs_macro_tasks() {
    use concur_procs::{Configure, Executor, ProcessPool};

    fn join<T: Task>(h: concur_core::TaskHandle<T>) -> T::Output {
        match h.join_timeout(DEADLINE) {
            Ok(out) => out.unwrap(),
            Err(_) => panic!("no result within {DEADLINE:?}"),
        }
    }

    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(join(pool.submit(Square(12)).unwrap()), 144);
    assert_eq!(join(pool.submit(Cube(2)).unwrap()), 8);
    join(pool.submit(Noop(1)).unwrap());

    let h = pool.submit(Words("one two".into())).unwrap();
    assert_eq!(h.recv_timeout(DEADLINE).as_deref(), Some("one"));
    assert_eq!(h.recv_timeout(DEADLINE).as_deref(), Some("two"));
    assert_eq!(join(h), 2);
}
