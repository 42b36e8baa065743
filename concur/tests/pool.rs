//! `concur::Pool` on every compiled-in backend: the core conformance suite
//! case by case on each (`cargo test -p concur --test pool on_threads::`),
//! the choice of backend (builder, `CONCUR_BACKEND`, default) and its
//! errors, `init` and `is_worker`.
//!
//! The tests of `CONCUR_BACKEND` never change this process's environment
//! (other tests run beside them): each runs itself again in a child process
//! of this test binary with the variable set ([`with_env_backend!`]).

/// Tasks here panic on purpose: their process workers keep it off stderr
/// (each panic still fails its task, message and location kept), so a
/// passing run stays quiet. Set before `main`, while the process has one
/// thread.
#[ctor::ctor]
fn quiet_worker_panics() {
    std::env::set_var("CONCUR_PROCS_QUIET_PANICS", "1");
}

concur::enable_test_support!();

mod common;

use common::{join, DEADLINE};
use concur::core::conformance;
use concur::prelude::*;
use concur::{PoolBuilder, PoolConfig};
use serde::{Deserialize, Serialize};

/// Builds pools for the conformance suite on one backend, through `Pool`.
struct OnPool(Backend);

impl conformance::Backend for OnPool {
    type Pool = Pool;
    fn build(&self, config: PoolConfig) -> Result<Pool, TaskError> {
        let pool = PoolBuilder::from_config(config).backend(self.0).build()?;
        assert_eq!(pool.backend(), self.0);
        Ok(pool)
    }
}

mod on_threads {
    concur::core::conformance_suite!(
        backend: super::OnPool(concur::Backend::Threads),
        supported: [shared_memory_visible],
        unsupported: [
            timeout_stops_running_task,
            cancel_running_stops_worker,
            memory_isolated,
            pool_failure_fails_work_in_flight,
        ],
    );
}

mod on_procs {
    concur::core::conformance_suite!(
        backend: super::OnPool(concur::Backend::Procs),
        supported: [
            timeout_stops_running_task,
            cancel_running_stops_worker,
            memory_isolated,
            pool_failure_fails_work_in_flight,
        ],
        unsupported: [shared_memory_visible],
    );
}

// ------------------------------------------------------------ the choice --

/// A test whose body runs with `CONCUR_BACKEND` set to `$value` (unset for
/// `None`): the test runs only itself again in a child process of this
/// binary with the variable set there, and passes when the child does.
macro_rules! with_env_backend {
    ($(#[$doc:meta])* fn $name:ident() with $value:expr => $body:block) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            if !common::in_rerun() {
                return common::rerun_with_env(
                    stringify!($name),
                    &[(concur::ENV_BACKEND, $value)],
                    DEADLINE,
                );
            }
            $body
        }
    };
}

/// Where a task ran: in a worker process or not, and its pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WhereAmI;

impl Task for WhereAmI {
    type Output = (bool, u32);
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::tests::pool::WhereAmI";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> (bool, u32) {
        (concur::is_worker(), std::process::id())
    }
}
concur::register!(WhereAmI);

/// The config error's field and reason, or a panic naming what came instead.
fn config_error(result: Result<Pool, TaskError>) -> (String, String) {
    match result.map(|p| p.backend()).map_err(TaskError::into_kind) {
        Err(ErrorKind::Config { field, reason }) => (field, reason),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn every_backend_is_compiled_into_the_tests() {
    assert_eq!(
        Backend::compiled(),
        [Backend::Threads, Backend::Procs, Backend::Redis]
    );
    assert!(Backend::ALL.iter().all(|b| b.is_compiled()));
    assert_eq!(Backend::default_compiled(), Backend::Threads);
}

#[test]
fn backend_names_round_trip() {
    for &b in Backend::ALL {
        assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        assert_eq!(b.feature(), b.as_str());
    }
    assert_eq!(" PROCS ".parse::<Backend>().unwrap(), Backend::Procs);
    assert_eq!("Threads".parse::<Backend>().unwrap(), Backend::Threads);
}

#[test]
fn bad_backend_name_is_a_config_error_listing_the_choices() {
    let err = "fibers".parse::<Backend>().unwrap_err();
    let ErrorKind::Config { field, reason } = err.kind() else {
        panic!("not a config error: {err}");
    };
    assert_eq!(field, "backend");
    assert!(reason.contains("`fibers`"), "{reason}");
    assert!(reason.contains("threads, procs, redis"), "{reason}");
}

with_env_backend! {
    fn without_a_choice_the_default_is_threads() with None => {
        let pool = Pool::new().unwrap();
        assert_eq!(pool.backend(), Backend::Threads);
        assert_eq!(Executor::backend(&pool), "threads");
    }
}

with_env_backend! {
    fn empty_env_variable_counts_as_unset() with Some("") => {
        assert_eq!(Pool::new().unwrap().backend(), Backend::Threads);
    }
}

with_env_backend! {
    fn env_variable_picks_the_backend() with Some("procs") => {
        let pool = Pool::builder().workers(1).build().unwrap();
        assert_eq!(pool.backend(), Backend::Procs);
        assert_eq!(Executor::backend(&pool), "procs");
        assert!(pool.as_procs().is_some() && pool.as_threads().is_none());
        let (in_worker, pid) = join(pool.submit(WhereAmI).unwrap()).unwrap();
        assert!(in_worker);
        assert_ne!(pid, std::process::id());
    }
}

with_env_backend! {
    fn env_variable_ignores_case_and_spaces() with Some(" Threads\n") => {
        assert_eq!(Pool::builder().chosen_backend().unwrap(), Backend::Threads);
    }
}

with_env_backend! {
    fn bad_env_variable_is_a_config_error_naming_the_variable_and_the_choices() with Some("fibers") => {
        let (field, reason) = config_error(Pool::new());
        assert_eq!(field, "CONCUR_BACKEND");
        assert!(reason.contains("`fibers` is not a backend"), "{reason}");
        assert!(reason.contains("valid choices: threads, procs"), "{reason}");
    }
}

with_env_backend! {
    fn builder_backend_wins_over_the_env_variable() with Some("procs") => {
        let pool = Pool::builder()
            .backend(Backend::Threads)
            .workers(1)
            .build()
            .unwrap();
        assert_eq!(pool.backend(), Backend::Threads);
        assert!(pool.as_threads().is_some() && pool.as_procs().is_none());
    }
}

with_env_backend! {
    fn builder_backend_makes_a_bad_env_variable_irrelevant() with Some("fibers") => {
        assert!(Pool::new().is_err());
        let pool = Pool::builder()
            .backend(Backend::Procs)
            .workers(1)
            .build()
            .unwrap();
        assert_eq!(pool.backend(), Backend::Procs);
    }
}

// ------------------------------------------------- settings and workers --

/// The backends that need nothing outside this process; redis (which needs
/// a broker) has its own tests in `tests/redis.rs`.
const LOCAL: [Backend; 2] = [Backend::Threads, Backend::Procs];

#[test]
fn common_settings_reach_either_backend() {
    for backend in LOCAL {
        let pool = Pool::builder()
            .backend(backend)
            .workers(3)
            .queue_bound(7)
            .build()
            .unwrap();
        assert_eq!(pool.workers(), 3, "{backend}");
        assert_eq!(pool.admission().bound(), 7, "{backend}");
    }
}

#[test]
fn procs_settings_apply_on_procs_only() {
    let builder = Pool::builder()
        .workers(1)
        .procs(|b| b.workers(2))
        .procs(|b| b.memory_limit(1 << 30));
    let on_threads = builder.clone().backend(Backend::Threads).build().unwrap();
    assert_eq!(on_threads.workers(), 1);
    let on_procs = builder.backend(Backend::Procs).build().unwrap();
    assert_eq!(on_procs.workers(), 2);
    assert!(on_procs.capabilities().memory_limit);
}

#[test]
fn invalid_setting_is_reported_by_the_chosen_backend() {
    for backend in LOCAL {
        let (field, _) = config_error(Pool::builder().backend(backend).workers(0).build());
        assert_eq!(field, "workers", "{backend}");
    }
}

#[test]
fn is_worker_is_false_in_the_program() {
    assert!(!concur::is_worker());
}

#[test]
fn is_worker_is_true_in_a_procs_task_and_false_in_a_threads_task() {
    let procs = Pool::builder()
        .backend(Backend::Procs)
        .workers(1)
        .build()
        .unwrap();
    let (in_worker, pid) = join(procs.submit(WhereAmI).unwrap()).unwrap();
    assert!(in_worker, "a task on procs runs in a worker process");
    assert_ne!(pid, std::process::id());

    let threads = Pool::builder()
        .backend(Backend::Threads)
        .workers(1)
        .build()
        .unwrap();
    let (in_worker, pid) = join(threads.submit(WhereAmI).unwrap()).unwrap();
    assert!(!in_worker, "a task on threads runs in this process");
    assert_eq!(pid, std::process::id());
}

#[test]
fn init_twice_is_harmless() {
    concur::init();
    concur::init();
    assert!(!concur::is_worker());
    let pool = Pool::builder()
        .backend(Backend::Procs)
        .workers(1)
        .build()
        .unwrap();
    assert!(join(pool.submit(WhereAmI).unwrap()).unwrap().0);
}

#[test]
fn backend_pools_convert_into_a_pool() {
    let pool = Pool::from(concur::threads::ThreadPool::new(1).unwrap());
    assert_eq!(pool.backend(), Backend::Threads);
    let procs = concur::procs::ProcessPool::builder()
        .workers(1)
        .build()
        .unwrap();
    let pool = Pool::from(procs);
    assert_eq!(pool.backend(), Backend::Procs);
    assert!(join(pool.submit(WhereAmI).unwrap()).unwrap().0);
}

/// Generic code takes `&impl Executor`; a `Pool` is one.
fn run_where_am_i(exec: &impl Executor) -> bool {
    join(exec.submit(WhereAmI).unwrap()).unwrap().0
}

#[test]
fn pool_serves_generic_executor_code() {
    let pool = Pool::builder()
        .backend(Backend::Threads)
        .workers(1)
        .build()
        .unwrap();
    assert!(!run_where_am_i(&pool));
}

#[test]
fn pool_and_builder_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
    send_sync::<PoolBuilder>();
    send_sync::<Backend>();
}

/// A task type nobody registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unregistered;

impl Task for Unregistered {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur::tests::pool::Unregistered";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {}
}

/// Issue 9, item 5: a facade user is told the facade's way to register a
/// task (`#[concur::task]` or `concur::register!`), not a backend crate's
/// path they never depend on.
#[test]
fn an_unregistered_task_names_the_facades_way_to_register_it() {
    let pool = Pool::builder()
        .backend(Backend::Procs)
        .workers(1)
        .build()
        .unwrap();
    let err = pool.submit(Unregistered).map(|_| ()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotRegistered { .. }),
        "got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("#[concur::task]") && text.contains("concur::register!"),
        "the hint names the facade's macros: {text}"
    );
    assert!(!text.contains("concur_procs::"), "no backend path: {text}");
}
