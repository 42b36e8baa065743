//! Pools, builders and handles can move between threads (checked at compile time).

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

#[test]
fn pool_can_be_shared_across_threads() {
    fn takes<T: Send + Sync + 'static>(_: &T) {}
    let b = ProcessPool::builder();
    send_sync::<ProcessPool>();
    takes(&std::sync::Arc::new(0u8));
    drop(b);
}
