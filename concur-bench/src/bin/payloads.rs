//! Large payloads through processes, against the memory they cost, in one
//! process and one run:
//! `cargo run --release -p concur-bench --bin payloads`
//! (`ROUNDS=n` sets the rounds per figure, default 7; `MIB=n` the payload
//! size, default 64; `ONLY=vec|fresh|reused` runs only those figures).
//!
//! 1. a 64 MiB `Vec<u8>` (one block: `codec::Bytes`) to an echo task on a
//!    process worker and back, vs writing and reading 64 MiB through fresh
//!    memfd pages twice (memfd_create, ftruncate, mmap, write, read,
//!    munmap; twice), the page-fault floor of any shared-memory round trip
//!    (target <= 1.3x);
//! 2. the same round trip vs one warm memcpy of 64 MiB (target <= 3x);
//! 3. a 64 MiB `SharedBytes` built by the caller in fresh shared memory,
//!    echoed by the task and read back by the caller, vs fresh memfd pages
//!    twice (target <= 1.3x);
//! 4. a 64 MiB `SharedBytes` region reused task after task (the echo's
//!    output is the next input: the same region goes out and back without
//!    a copy), the caller reading all of it each time, vs one warm memcpy
//!    (target <= 3x).
//!
//! Each contender runs alternately with its anchor, after a warm-up each;
//! the figures are medians.

use concur_bench::{header, interleaved, rounds, wanted, Comparison};
use concur_core::codec::Bytes;
use concur_core::prelude::*;
use concur_core::SharedBytes;
use concur_procs::ProcessPool;
use serde::{Deserialize, Serialize};

/// Sends its bytes back (the first one changed, so they are really moved
/// through the task and not a value the pool could keep).
#[derive(Serialize, Deserialize)]
struct EchoBytes(Bytes);

impl Task for EchoBytes {
    type Output = Bytes;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::EchoBytes";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Bytes {
        let mut data = self.0;
        if let Some(first) = data.0.first_mut() {
            *first = first.wrapping_add(1);
        }
        data
    }
}

/// Sends its shared bytes back untouched.
#[derive(Serialize, Deserialize)]
struct EchoShared(SharedBytes);

impl Task for EchoShared {
    type Output = SharedBytes;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "concur-bench::EchoShared";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> SharedBytes {
        self.0
    }
}

concur_core::register!(EchoBytes, EchoShared);

/// Writes `src` into a fresh memfd mapping and reads it back into `dst`
/// (the cost of one direction through fresh shared memory).
fn through_fresh_memfd(src: &[u8], dst: &mut [u8]) {
    let len = src.len();
    // SAFETY: plain system calls on a descriptor and a mapping this function
    // owns; the mapping is `len` bytes and unmapped before return.
    unsafe {
        let fd = libc::memfd_create(c"concur-bench".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create");
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0, "ftruncate");
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let region = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        region.copy_from_slice(src);
        dst.copy_from_slice(region);
        libc::munmap(p, len);
        libc::close(fd);
    }
}

fn main() {
    concur_procs::init();
    let rounds = rounds(7);
    let mib: usize = std::env::var("MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let len = mib << 20;
    println!(
        "large payloads ({mib} MiB, {} cores, {rounds} rounds, medians)",
        concur_core::default_workers()
    );
    header();

    let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut dst = src.clone();
    let mut dst2 = src.clone();

    let pool = ProcessPool::builder().workers(1).build().expect("pool");
    // The echo's output is the next round's input: no copy outside concur's.
    let mut data = Some(Bytes(src.clone()));
    let mut round_trip = || {
        let input = data.take().expect("payload");
        let out = pool
            .submit(EchoBytes(input))
            .expect("submit")
            .join()
            .expect("echo");
        assert_eq!(out.0.len(), len);
        data = Some(out);
    };

    // 1. Round trip vs fresh memfd pages, twice.
    if wanted("vec") {
        let (fresh, ours) = interleaved(
            rounds,
            || {
                through_fresh_memfd(&src, &mut dst);
                through_fresh_memfd(&dst, &mut dst2);
            },
            &mut round_trip,
        );
        Comparison::new(
            &format!("{mib} MiB Vec round trip"),
            "fresh memfd x2",
            fresh,
            ours,
            1.3,
        )
        .print(1000, "ms");

        // 2. The same round trip vs one warm memcpy.
        let (memcpy, ours) = interleaved(
            rounds,
            || {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&dst);
            },
            &mut round_trip,
        );
        Comparison::new(
            &format!("{mib} MiB Vec round trip"),
            "warm memcpy",
            memcpy,
            ours,
            3.0,
        )
        .print(1000, "ms");
    }
    let back = data.expect("payload");
    assert_eq!(&back.0[1..], &src[1..]);

    // 3. SharedBytes: built fresh, echoed, read back.
    let echo_shared = |input: SharedBytes| -> SharedBytes {
        let out = pool
            .submit(EchoShared(input))
            .expect("submit")
            .join()
            .expect("echo");
        assert!(out.is_shared() && out.len() == len);
        out
    };
    let mut dst3 = src.clone();
    if wanted("fresh") {
        let (fresh, ours) = interleaved(
            rounds,
            || {
                through_fresh_memfd(&src, &mut dst);
                through_fresh_memfd(&dst, &mut dst2);
            },
            || {
                let out = echo_shared(SharedBytes::copy_from(&src));
                dst3.copy_from_slice(&out);
            },
        );
        Comparison::new(
            &format!("{mib} MiB SharedBytes, fresh"),
            "fresh memfd x2",
            fresh,
            ours,
            1.3,
        )
        .print(1000, "ms");
    }

    // 4. SharedBytes: one region out and back, task after task.
    if wanted("reused") {
        let mut region = Some(SharedBytes::copy_from(&src));
        let (memcpy, ours) = interleaved(
            rounds,
            || {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&dst);
            },
            || {
                let out = echo_shared(region.take().expect("region"));
                dst3.copy_from_slice(&out);
                region = Some(out);
            },
        );
        Comparison::new(
            &format!("{mib} MiB SharedBytes, reused"),
            "warm memcpy",
            memcpy,
            ours,
            3.0,
        )
        .print(1000, "ms");
    }
    assert_eq!(dst3, src);
}
