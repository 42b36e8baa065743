//! `concur::Pool` on the redis backend (feature `redis`): a `redis-server`
//! of the test's own ([`concur::redis::server::LocalServer`]), local
//! workers that are this test binary re-run (entering worker mode through
//! `concur::init`), struct, macro and `map` tasks, the refusal of function
//! tasks, and how the broker's URL is found.

use common::{bounded, DEADLINE};
use concur::prelude::*;
use concur::redis::server::{LocalServer, ServerOptions};
use concur::PoolBuilder;
use tasks::{cube, InWorker, Square};

mod common;

/// The test a local worker runs: `concur::init` enters worker mode there
/// and never returns; in a normal run it returns at once.
#[test]
fn worker_entry() {
    concur::init();
}

/// The outside program's tasks: a struct task, one written with the
/// macro (it tells whether it ran in a worker process) and a function task.
#[path = "outside/tasks.rs"]
mod tasks;

fn server() -> LocalServer {
    LocalServer::start(ServerOptions::new()).unwrap_or_else(|e| panic!("{e}: {e:?}"))
}

/// A queue no other test (or earlier run) uses.
fn fresh_queue(tag: &str) -> String {
    format!("facade-{tag}-{}", std::process::id())
}

/// The redis settings that make `queue` this test's own and its local
/// workers this binary's `worker_entry`.
fn local_workers(
    queue: &str,
) -> impl Fn(concur::redis::RedisPoolBuilder) -> concur::redis::RedisPoolBuilder + Send + Sync {
    let queue = queue.to_owned();
    move |b| {
        b.queue(&queue).worker_command(
            std::env::current_exe().expect("the test binary"),
            ["--exact", "worker_entry", "--nocapture", "--quiet"],
        )
    }
}

/// A redis pool builder whose local workers are this binary's `worker_entry`.
fn builder(queue: &str) -> PoolBuilder {
    Pool::builder()
        .workers(2)
        .backend(Backend::Redis)
        .redis(local_workers(queue))
}

#[test]
fn redis_pool_runs_struct_macro_and_map_tasks() {
    let server = server();
    let pool = builder(&fresh_queue("run"))
        .redis_url(&server.url())
        .build()
        .unwrap();
    assert_eq!(pool.backend(), Backend::Redis);
    assert_eq!(Executor::backend(&pool), "redis");
    assert!(pool.as_redis().is_some());

    let h = pool.submit(Square(7)).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 49);

    let h = pool.submit(InWorker).unwrap();
    assert!(
        h.join_timeout(DEADLINE).unwrap().unwrap(),
        "concur::is_worker() is true in a redis local worker"
    );
    assert!(!concur::is_worker());

    let squares: Vec<u64> = bounded("the map", || {
        pool.map((1..=20).map(Square))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(squares, (1..=20).map(|x| x * x).collect::<Vec<_>>());

    let e = pool.submit_fn(cube, 3).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Config { field, .. } if field == "task"),
        "{e:?}"
    );
    bounded("shutdown", || pool.shutdown()).unwrap();
}

/// Without `redis_url` or `CONCUR_REDIS_URL`, the redis backend is a
/// `Config` error that names both.
#[test]
fn without_a_redis_url_the_error_names_the_setting_and_the_variable() {
    if !common::in_rerun() {
        return common::rerun_with_env(
            "without_a_redis_url_the_error_names_the_setting_and_the_variable",
            &[(concur::ENV_REDIS_URL, None)],
            DEADLINE,
        );
    }
    let e = builder(&fresh_queue("nourl")).build().unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e.kind(), ErrorKind::Config { field, .. } if field == "redis_url"),
        "{e:?}"
    );
    assert!(
        text.contains("redis_url(") && text.contains("CONCUR_REDIS_URL"),
        "{text}"
    );
}

/// `CONCUR_BACKEND=redis` and `CONCUR_REDIS_URL` alone pick the backend
/// and its server.
#[test]
fn concur_backend_and_concur_redis_url_pick_the_server() {
    let server; // outlives the child that uses it
    if !common::in_rerun() {
        server = self::server();
        return common::rerun_with_env(
            "concur_backend_and_concur_redis_url_pick_the_server",
            &[
                (concur::ENV_REDIS_URL, Some(&server.url())),
                (concur::ENV_BACKEND, Some("redis")),
            ],
            DEADLINE,
        );
    }
    let pool = Pool::builder()
        .workers(1)
        .redis(local_workers(&fresh_queue("env")))
        .build()
        .unwrap();
    assert_eq!(pool.backend(), Backend::Redis);
    let h = pool.submit(Square(9)).unwrap();
    assert_eq!(h.join_timeout(DEADLINE).unwrap().unwrap(), 81);
}
