//! Pools, builders and handles can move between threads (checked at compile time).

// The set-up line older versions needed still compiles (it does nothing now).
concur_procs::enable_test_support!();

use concur_procs::{ProcessPool, ProcessPoolBuilder, Task, TaskContext, TaskHandle};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Nop;

impl Task for Nop {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "procs-send-sync::Nop";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {}
}

const fn send_sync<T: Send + Sync>() {}
const fn send<T: Send>() {}

const _: () = {
    send_sync::<ProcessPool>();
    send_sync::<TaskHandle<Nop>>();
    send_sync::<concur_core::BatchHandle<Nop>>();
    send_sync::<concur_procs::TaskError>();
    send::<ProcessPoolBuilder>();
};

concur_procs::register!(Nop);

#[test]
fn pool_and_handles_cross_threads() {
    use concur_procs::{Configure, Executor};
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| pool.submit(Nop).unwrap()))
            .map(|t| t.join().unwrap())
            .collect();
        // Handles made on other threads are joined on yet another.
        s.spawn(move || {
            for h in handles {
                h.join_timeout(std::time::Duration::from_secs(60))
                    .unwrap()
                    .unwrap();
            }
        });
    });
}
