//! `concur demo`: start N workers, show who runs where, then show how memory
//! is shared (threads) or copied (processes) with one counter.

use std::collections::BTreeSet;
use std::time::Duration;

use concur_core::WorkerInfo;

use crate::backend::{Backend, PoolKind, Visit};
use crate::config::DemoConfig;
use crate::exit::{CliError, CliResult};
use crate::output;
use crate::tasks::{self, Checkin};

/// How much each worker adds to the counter.
const ADD: u64 = 1_000;
/// How long the demo waits for every worker to check in.
const WITHIN: Duration = Duration::from_secs(60);

/// Runs the demo on every backend of `config`.
///
/// # Errors
/// [`CliError::Runtime`] when a pool cannot start or a task fails.
pub fn run(config: DemoConfig) -> CliResult<()> {
    output::stdout(&format!("concur is process {}\n", std::process::id()))?;
    for backend in config.backends {
        backend.visit(Demo {
            workers: config.workers,
        })?;
    }
    Ok(())
}

struct Demo {
    workers: usize,
}

impl Visit for Demo {
    type Output = CliResult<()>;

    fn visit<K: PoolKind>(self, backend: Backend) -> CliResult<()> {
        let n = self.workers;
        let doing = |what: &str| format!("{what} on {backend}");
        output::stdout(&format!("\n{backend}: starting {n} workers\n"))?;
        let pool = K::build(n).map_err(|e| CliError::runtime(doing("starting the pool"), e))?;

        // Start and join: each worker checks in with where it runs.
        let mut write_err = None;
        let checkins = tasks::rendezvous(&pool, n, 0, WITHIN, |w| {
            if write_err.is_none() {
                write_err = output::stdout(&worker_line(backend, &w)).err();
            }
        })
        .map_err(|e| CliError::runtime(doing("starting every worker"), e))?;
        if let Some(e) = write_err {
            return Err(e);
        }
        output::stdout(&format!("{backend}: {}\n", pid_summary(n, &checkins)))?;

        // Shared counter: each worker adds 1,000 to "the" counter, which
        // starts from 0 for each backend (not from what the last one left).
        tasks::fresh_counter();
        let before = tasks::counter();
        let checkins = tasks::rendezvous(&pool, n, ADD, WITHIN, |_| {})
            .map_err(|e| CliError::runtime(doing("the counter experiment"), e))?;
        let after = tasks::counter();
        output::stdout(&format!(
            "{backend}: {}\n",
            counter_sentence(n, before, after, &checkins)
        ))?;
        drop(pool);
        Ok(())
    }
}

fn worker_line(backend: Backend, w: &WorkerInfo) -> String {
    format!(
        "{backend}: worker {} started: process id {}, thread id {}\n",
        w.index, w.pid, w.thread
    )
}

/// How many distinct process ids the workers had, and whether this process was one.
fn pid_summary(n: usize, checkins: &[Checkin]) -> String {
    let pids: BTreeSet<u32> = checkins.iter().map(|c| c.worker.pid).collect();
    let me = std::process::id();
    let where_ = if pids.contains(&me) {
        if pids.len() == 1 {
            "this process".to_owned()
        } else {
            "this process among them".to_owned()
        }
    } else {
        format!("none of them this process ({me})")
    };
    format!(
        "all {n} workers joined; {} distinct process id{}: {}",
        pids.len(),
        if pids.len() == 1 { "" } else { "s" },
        where_
    )
}

/// `1234567` as `1,234,567`.
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One sentence saying what the counter shows, derived from the numbers.
fn counter_sentence(n: usize, before: u64, after: u64, checkins: &[Checkin]) -> String {
    let seen: Vec<u64> = checkins.iter().map(|c| c.counter_after).collect();
    let n64 = n as u64;
    if after == before + n64 * ADD {
        format!(
            "one shared memory: each of the {n} workers added {} to the same counter, and the caller's counter went from {} to {}",
            thousands(ADD),
            thousands(before),
            thousands(after)
        )
    } else if after == before && seen.iter().all(|&s| s == ADD) {
        format!(
            "copied memory: every worker process has its own copy of the counter, so each of the {n} workers saw only its own {}, and the caller's counter did not move ({} before and after)",
            thousands(ADD),
            thousands(after)
        )
    } else {
        format!(
            "unexpected: the caller's counter went from {} to {} and the workers saw {seen:?}",
            thousands(before),
            thousands(after)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkin(pid: u32, counter_after: u64) -> Checkin {
        Checkin {
            worker: WorkerInfo {
                index: 0,
                pid,
                incarnation: 0,
                thread: 1,
            },
            counter_after,
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn counter_sentence_follows_the_numbers() {
        let shared = counter_sentence(2, 0, 2_000, &[checkin(1, 1_500), checkin(1, 2_000)]);
        assert!(shared.starts_with("one shared memory"), "{shared}");
        let copied = counter_sentence(2, 2_000, 2_000, &[checkin(7, 1_000), checkin(8, 1_000)]);
        assert!(copied.starts_with("copied memory"), "{copied}");
        let odd = counter_sentence(2, 0, 1_000, &[checkin(7, 1_000), checkin(8, 1_000)]);
        assert!(odd.starts_with("unexpected"), "{odd}");
    }

    #[test]
    fn pid_summary_counts_distinct_pids() {
        let me = std::process::id();
        let s = pid_summary(2, &[checkin(me, 0), checkin(me, 0)]);
        assert!(s.contains("1 distinct process id: this process"), "{s}");
        let s = pid_summary(2, &[checkin(me + 1, 0), checkin(me + 2, 0)]);
        assert!(
            s.contains("2 distinct process ids: none of them this process"),
            "{s}"
        );
    }
}
