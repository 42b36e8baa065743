//! Large payloads and many tasks in flight: shared memory both ways, and no
//! deadlock whatever the sizes and however slowly results are read.

mod common;

use std::time::Duration;

use common::{bounded, byte_sum as sum, join, pattern, Blob, Echo, DEADLINE};
use concur_procs::{
    Configure, Executor, ExecutorExt, ProcessPool, Task, TaskContext, DEFAULT_SHM_THRESHOLD,
};
use serde::{Deserialize, Serialize};

#[test]
fn input_and_output_of_64_mib() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let input = pattern(64 << 20);
    let expect = sum(&input);
    let (got, out) = join(
        p.submit(Echo {
            input: Blob(input),
            out_len: 64 << 20,
            patterned: true,
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(got, expect);
    assert_eq!(out.0.len(), 64 << 20);
    assert_eq!(out.0, pattern(64 << 20));
}

#[test]
fn large_payloads_through_the_socket_too() {
    // Shared memory off: 8 MiB each way through the socket, several in flight.
    let p = ProcessPool::builder()
        .workers(2)
        .shm_threshold(usize::MAX)
        .in_flight_per_worker(4)
        .build()
        .unwrap();
    let input = pattern(8 << 20);
    let expect = sum(&input);
    let hs: Vec<_> = (0..8)
        .map(|_| {
            p.submit(Echo {
                input: Blob(input.clone()),
                out_len: 8 << 20,
                patterned: false,
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        let (s, out) = join(h).unwrap();
        assert_eq!(s, expect);
        assert_eq!(out.0.len(), 8 << 20);
    }
}

/// Ten thousand tasks in flight, each output large enough to travel
/// through shared memory, submitted before any is read: the parent must
/// keep draining. (Each output is twice the threshold, not 1 MiB as it
/// was: the same path, an eighth of the page faults.)
#[test]
fn ten_thousand_in_flight_with_shared_memory_outputs() {
    let n = 10_000;
    let len = 2 * DEFAULT_SHM_THRESHOLD;
    let p = ProcessPool::builder()
        .workers(2)
        .queue_bound(n)
        .build()
        .unwrap();
    // Submit everything before reading anything: the parent must keep draining.
    let hs: Vec<_> = (0..n)
        .map(|_| {
            p.submit(Echo {
                input: Blob(vec![1]),
                out_len: len,
                patterned: false,
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        let (s, out) = join(h).unwrap();
        assert_eq!(s, 1);
        assert_eq!(out.0.len(), len);
        assert_eq!(out.0[len - 1], 5);
    }
}

#[test]
fn socket_only_many_in_flight_with_1_mib_both_ways() {
    let n = 300;
    let p = ProcessPool::builder()
        .workers(2)
        .queue_bound(n)
        .shm_threshold(usize::MAX)
        .in_flight_per_worker(8)
        .build()
        .unwrap();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            p.submit(Echo {
                input: Blob(vec![2; 1 << 20]),
                out_len: 1 << 20,
                patterned: false,
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        let (s, out) = join(h).unwrap();
        assert_eq!(s, 2 << 20);
        assert_eq!(out.0.len(), 1 << 20);
    }
}

/// Streams `count` messages of `len` bytes to its caller, then echoes
/// back the total length of what the caller sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chatter {
    count: usize,
    len: usize,
}

impl Task for Chatter {
    type Output = usize;
    type ToCaller = Blob;
    type FromCaller = Blob;
    const NAME: &'static str = "procs-payloads::Chatter";
    fn run(self, cx: &mut TaskContext<'_, Self>) -> usize {
        for _ in 0..self.count {
            cx.send(Blob(vec![7; self.len])).unwrap();
        }
        let mut total = 0;
        for _ in 0..self.count {
            total += cx
                .recv_timeout(Duration::from_secs(60))
                .expect("caller message")
                .0
                .len();
        }
        total
    }
}

concur_procs::register!(Chatter);

#[test]
fn large_messages_both_ways() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let h = p
        .submit(Chatter {
            count: 4,
            len: 4 << 20,
        })
        .unwrap();
    for _ in 0..4 {
        assert_eq!(h.recv_timeout(DEADLINE).expect("message").0.len(), 4 << 20);
        h.send(Blob(vec![1; 3 << 20])).unwrap();
    }
    assert_eq!(join(h).unwrap(), 4 * (3 << 20));
}

#[test]
fn map_over_many_small_tasks() {
    let p = ProcessPool::builder().workers(2).build().unwrap();
    let n = 20_000;
    let total: u64 = bounded("the map", || {
        p.map((0..n).map(|_| Echo {
            input: Blob(vec![3]),
            out_len: 0,
            patterned: false,
        }))
        .map(|r| r.unwrap().0)
        .sum()
    });
    assert_eq!(total, 3 * n);
}
