//! A worker's bytes cannot crash or wedge the parent (issue 8.1): a task
//! that forges a frame on its own channel, or returns (or is given) a value
//! nested far too deep, fails alone with a typed error; the pool goes on.

mod common;

use std::time::Duration;

use common::{bounded, join, one_frame_packet, send_on_every_socket, sockets, Who};
use concur_procs::{Configure, ErrorKind, Executor, ExecutorExt, ProcessPool, Task, TaskContext};
use serde::{Deserialize, Serialize};

/// An ipc-channel message (one fragment) holding one of our frames whose
/// header claims a 1 TiB string.
fn forged_message() -> Vec<u8> {
    // Our header, bincode 2 varint: variant 0 (`Up::Hello`), then a string
    // length of 2^40 (marker 0xFD, then a little-endian u64), and nothing.
    one_frame_packet(&[0u8, 0xFD, 0, 0, 0, 0, 0, 1, 0, 0])
}

/// Writes a forged frame to every socket it holds (its channel to the
/// parent among them), then waits to be stopped.
#[derive(Serialize, Deserialize)]
struct Forge;

impl Task for Forge {
    type Output = ();
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Forge";
    fn run(self, _cx: &mut TaskContext<'_, Self>) {
        send_on_every_socket(&forged_message());
        std::thread::sleep(Duration::from_secs(120));
    }
}
concur_procs::register!(Forge);

/// Closes the socket its worker sends results on (the one connected to a
/// named peer: the parent's bootstrap socket) and returns: its worker can
/// then never send the result, and ends after the task did.
#[derive(Serialize, Deserialize)]
struct Mute;

impl Task for Mute {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Mute";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        for fd in sockets() {
            // SAFETY: getpeername into a zeroed sockaddr_un of the right
            // size; close on a descriptor of ours.
            unsafe {
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                let named =
                    libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len)
                        == 0
                        && addr.sun_path[0] != 0;
                if named {
                    libc::close(fd);
                }
            }
        }
        7
    }
}
concur_procs::register!(Mute);

/// Writes junk to every socket it holds, then returns.
#[derive(Serialize, Deserialize)]
struct Junk;

impl Task for Junk {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Junk";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for fd in sockets() {
            for _ in 0..4 {
                // SAFETY: sends a plain buffer on a descriptor of ours.
                unsafe {
                    libc::send(fd, junk.as_ptr().cast(), junk.len(), libc::MSG_DONTWAIT);
                }
            }
        }
        7
    }
}
concur_procs::register!(Junk);

/// Writes 4096 bytes of 0xff to its worker's channel (fd 3), then returns.
#[derive(Serialize, Deserialize)]
struct Garbage;

impl Task for Garbage {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Garbage";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        write_junk();
        7
    }
}
concur_procs::register!(Garbage);

/// Writes 4 KiB of junk to descriptor 3, the worker's channel to the parent.
fn write_junk() {
    let junk = [0xffu8; 4096];
    // SAFETY: writes a plain buffer to a descriptor of this process.
    unsafe {
        libc::write(3, junk.as_ptr().cast(), junk.len());
    }
}

/// Tries to build a pool inside its worker; returns the error's causes.
#[derive(Serialize, Deserialize)]
struct BuildsAPool;

impl Task for BuildsAPool {
    type Output = String;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::BuildsAPool";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> String {
        match ProcessPool::builder().workers(1).build() {
            Ok(_) => "built".to_owned(),
            Err(e) => format!("{e:?}"),
        }
    }
}
concur_procs::register!(BuildsAPool);

/// A value nested `depth` levels deep (dropped without recursion).
#[derive(Serialize, Deserialize)]
enum Nest {
    Leaf,
    Node(Box<Nest>),
}

impl Nest {
    fn deep(depth: usize) -> Nest {
        let mut n = Nest::Leaf;
        for _ in 0..depth {
            n = Nest::Node(Box::new(n));
        }
        n
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        let mut next = match self {
            Nest::Node(b) => std::mem::replace(&mut **b, Nest::Leaf),
            Nest::Leaf => return,
        };
        while let Nest::Node(b) = &mut next {
            next = std::mem::replace(&mut **b, Nest::Leaf);
        }
    }
}

/// Returns a value nested `0` levels deep; carries `1` as its own input.
#[derive(Serialize, Deserialize)]
struct Deep(usize, Nest);

impl Task for Deep {
    type Output = Nest;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Deep";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> Nest {
        Nest::deep(self.0)
    }
}
concur_procs::register!(Deep);

#[test]
fn a_forged_frame_fails_its_task_and_spares_the_parent() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let err = join(p.submit(Forge).unwrap()).unwrap_err();
    // The claim reached the parent's header decoder, which refused it.
    assert!(
        matches!(err.kind(), ErrorKind::Codec { what } if what == "protocol header"),
        "expected a codec error on the header, got {err:?}"
    );
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

#[test]
fn an_output_nested_too_deep_is_a_codec_error() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let Err(err) = join(p.submit(Deep(100_000, Nest::Leaf)).unwrap()) else {
        panic!("a 100,000-deep output was accepted")
    };
    assert!(matches!(err.kind(), ErrorKind::Codec { .. }), "{err}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

#[test]
fn an_input_nested_too_deep_is_refused_at_submit() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let Err(err) = p.submit(Deep(0, Nest::deep(1_000_000))) else {
        panic!("a 1,000,000-deep input was accepted")
    };
    assert!(matches!(err.kind(), ErrorKind::Codec { .. }), "{err}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// A task that cuts its worker off from the parent ends in one typed error
/// (retried, then quarantined) and the pool goes on. Which death blames it
/// depends on timing (the worker may die while the task still runs, or
/// after it ended with its result unsent); the scheduler test
/// `a_unit_whose_result_never_arrives_is_blamed` pins the second case.
#[test]
fn a_task_that_silences_its_worker_is_quarantined() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(1)
        .build()
        .unwrap();
    let err = join(p.submit(Mute).unwrap()).unwrap_err();
    eprintln!(
        "MUTE {err:?} {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(matches!(err.kind(), ErrorKind::WorkerLost(_)), "{err:?}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// A task that writes junk to every socket it holds ends in one typed
/// error, and the pool goes on.
#[test]
fn a_task_that_writes_junk_to_its_sockets_ends_in_one_error() {
    let p = ProcessPool::builder()
        .workers(1)
        .retries(1)
        .build()
        .unwrap();
    match join(p.submit(Junk).unwrap()) {
        Ok(7) => {} // the junk went where nobody reads it
        Ok(other) => panic!("wrong result {other}"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WorkerLost(_) | ErrorKind::Codec { .. }),
            "{e:?}"
        ),
    }
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// Garbage on a worker's channel: the pool stops that worker at once (it
/// is broken, not exiting), and the task's error keeps that cause: always
/// `Codec`, never a lost worker (its own exit on the closed channel races
/// with the pool's reading of the garbage, and must not win).
#[test]
fn garbage_on_the_channel_keeps_its_cause() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let err = join(p.submit(Garbage).unwrap()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Codec { .. }), "{err:?}");
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// A `map` over tasks that each break their worker's channel: every item
/// fails alone with the same typed cause, and the map ends (each broken
/// worker is stopped when its garbage is read, not after a hang-up's grace).
#[test]
fn a_map_of_channel_breakers_fails_each_item_with_its_cause() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let results: Vec<_> = bounded("the map", || p.map((0..6).map(|_| Garbage)).collect());
    assert_eq!(results.len(), 6);
    for r in results {
        let err = r.expect_err("the garbage was read");
        assert!(matches!(err.kind(), ErrorKind::Codec { .. }), "{err:?}");
    }
    join(p.submit(Who).unwrap()).expect("the pool goes on");
}

/// A pool built inside a worker's task is refused, and the error says so
/// (not that the process merely looks like a worker).
#[test]
fn a_pool_built_inside_a_task_is_refused_as_nested() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let text = join(p.submit(BuildsAPool).unwrap()).unwrap();
    assert!(
        text.contains("pools cannot be built inside a worker's task"),
        "{text}"
    );
    assert!(!text.contains("but is not one"), "{text}");
}

/// One item of a mixed `map`: breaks its worker's channel, or returns
/// its number.
#[derive(Serialize, Deserialize)]
enum Mixed {
    Junk,
    Fine(u32),
}

impl Task for Mixed {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::Mixed";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        match self {
            Mixed::Junk => {
                write_junk();
                0
            }
            Mixed::Fine(n) => n,
        }
    }
}
concur_procs::register!(Mixed);

/// Garbage is often read after its task ended, while the next task runs:
/// the task that runs then is blamed, but runs again alone, so only the
/// tasks that wrote garbage fail (with `Codec`) and every other item of the
/// map gets its own result.
#[test]
fn garbage_read_late_fails_only_the_tasks_that_wrote_it() {
    let p = ProcessPool::builder().workers(1).build().unwrap();
    let junk = |i: u32| i % 5 == 0;
    let items = (0..40).map(move |i| if junk(i) { Mixed::Junk } else { Mixed::Fine(i) });
    let results: Vec<_> = common::bounded("the map", || p.map(items).collect());
    assert_eq!(results.len(), 40);
    for (i, r) in (0u32..).zip(results) {
        if junk(i) {
            let err = r.expect_err("its garbage was read");
            assert!(
                matches!(err.kind(), ErrorKind::Codec { .. }),
                "{i}: {err:?}"
            );
        } else {
            assert_eq!(r.expect("a bystander is not failed"), i);
        }
    }
}

/// Sends on descriptor 3 (its channel to the parent) the first fragment of
/// a message that claims 4096 bytes, with the receiving end of a fresh
/// fragment channel whose sending end it keeps open and never writes: the
/// parent would wait for the rest for ever.
fn send_a_stalled_first_fragment() {
    // SAFETY: plain system calls on descriptors this function creates, and
    // a message whose buffers outlive the call.
    unsafe {
        let mut sv = [0i32; 2];
        let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        assert_eq!(libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()), 0);
        let data = [0u8; 8];
        let fragment: usize = 16 + data.len();
        let total: usize = 4096;
        let mut iov = [
            libc::iovec {
                iov_base: (&fragment as *const usize).cast_mut().cast(),
                iov_len: 8,
            },
            libc::iovec {
                iov_base: (&total as *const usize).cast_mut().cast(),
                iov_len: 8,
            },
            libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            },
        ];
        let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), sv[1]);
        libc::sendmsg(3, &msg, 0);
        libc::close(sv[1]);
        // sv[0] stays open (and silent) while the worker lives.
    }
}

/// See [`send_a_stalled_first_fragment`].
#[derive(Serialize, Deserialize)]
struct StallFragment;

impl Task for StallFragment {
    type Output = u32;
    type ToCaller = ();
    type FromCaller = ();
    const NAME: &'static str = "hostile::StallFragment";
    fn run(self, _cx: &mut TaskContext<'_, Self>) -> u32 {
        send_a_stalled_first_fragment();
        5
    }
}
concur_procs::register!(StallFragment);

/// A task that sends the start of a fragmented message and never the rest
/// cannot stall the pool: the rest must come within a deadline, so the
/// other worker's result arrives, the staller fails with `Codec`, and the
/// pool goes on (before, the thread that reads every worker waited for
/// ever, and dropping the pool hung).
#[test]
fn a_stalled_fragmented_message_does_not_stall_the_pool() {
    common::bounded("the pool with a stalled fragment", || {
        let p = ProcessPool::builder()
            .workers(2)
            .retries(0)
            .build()
            .unwrap();
        let other = p.submit(common::Sleep { ms: 300 }).unwrap();
        let other_pid = other.recv_timeout(common::DEADLINE).expect("it started");
        let staller = p.submit(StallFragment).unwrap();
        let err = join(staller).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Codec { .. }), "{err:?}");
        assert_eq!(join(other).expect("the other worker's result"), other_pid);
        join(p.submit(Who).unwrap()).expect("the pool goes on");
    });
}
