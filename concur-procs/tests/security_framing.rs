//! ipc-channel's framing from a hostile peer (issue 8.2, the patches in
//! vendor/ipc-channel): a forged length header is an error for that
//! message, never an abort or a panic, and in a receiver set it closes only
//! the channel it came on. Descriptors ipc-channel creates are
//! close-on-exec, and a received shared memory region can give up its
//! descriptor.
//!
//! The attacks run in a child process (this test binary re-run for one
//! role), so an abort shows as the child's exit status, as in rayon-core's
//! `stack_overflow_crash.rs`.

mod common;

use std::collections::HashSet;
use std::os::fd::RawFd;

use common::{assert_role_passed, in_role};
use ipc_channel::ipc::{
    self, IpcOneShotServer, IpcReceiverSet, IpcSelectionResult, IpcSharedMemory,
};

const ROLE: &str = "CONCUR_PROCS_TEST_FRAMING_ROLE";

/// Runs this binary's ignored test `role` in a child process (see
/// [`common::run_role`]).
fn run_role(role: &str) -> (std::process::ExitStatus, String) {
    common::run_role(&std::env::current_exe().unwrap(), ROLE, role, || Ok(()))
}

fn assert_role_passes(role: &str, marker: &str) {
    assert_role_passed(run_role(role), marker);
}

/// A raw SOCK_SEQPACKET connection to a one-shot server's socket, bypassing
/// ipc-channel's sender.
fn raw_connect(path: &str) -> RawFd {
    // SAFETY: plain socket calls on a zeroed sockaddr_un filled with a short path.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert_eq!(
            libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        fd
    }
}

/// Sends one record: ipc-channel's header (fragment size, total size) and
/// `data`, with descriptor `pass` attached when given.
fn send_record(fd: RawFd, fragment: usize, total: usize, data: &[u8], pass: Option<RawFd>) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&fragment.to_ne_bytes());
    bytes.extend_from_slice(&total.to_ne_bytes());
    bytes.extend_from_slice(data);
    // SAFETY: the msghdr points at live buffers for the duration of sendmsg;
    // the control buffer is sized with CMSG_SPACE for one descriptor.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: bytes.as_mut_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let mut control = vec![0u8; space];
        if let Some(pass) = pass {
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, pass);
        }
        let sent = libc::sendmsg(fd, &msg, 0);
        assert_eq!(
            sent,
            bytes.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// One end of a fresh socket pair (a descriptor to attach to a message).
fn a_socket() -> RawFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        },
        0
    );
    fds[0]
}

/// A shared memory region without seals: its sender could shrink it under
/// the receiver's mapping (reads of the lost pages then fault).
fn unsealed_memfd() -> RawFd {
    // SAFETY: memfd_create and ftruncate on a fresh descriptor.
    unsafe {
        let fd = libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, 4096), 0);
        fd
    }
}

const HEADER: usize = 2 * std::mem::size_of::<usize>();
const TIB: usize = 1 << 40;

/// The forged headers: 2^40 bytes with and without a descriptor, a
/// fragment size smaller than the header and one larger than the record,
/// a total smaller than the first fragment, and a well-formed message
/// carrying shared memory that is not sealed against shrinking.
fn forge(fd: RawFd, variant: usize) {
    match variant {
        0 => send_record(fd, HEADER, TIB, &[], None),
        1 => send_record(fd, HEADER, TIB, &[], Some(a_socket())),
        2 => send_record(fd, 4, 0, &[], None),
        3 => send_record(fd, HEADER + 1000, 1000, &[1; 8], None),
        4 => send_record(fd, HEADER + 8, 2, &[1; 8], None),
        _ => send_record(fd, HEADER + 1, 1, &[7], Some(unsealed_memfd())),
    }
}

const VARIANTS: usize = 6;

#[test]
#[ignore = "a role played by a child process of forged_headers_on_the_bootstrap_socket_are_errors"]
fn role_forged_bootstrap() {
    in_role(ROLE, "role_forged_bootstrap");
    for variant in 0..VARIANTS {
        let (server, name) = IpcOneShotServer::<Vec<u8>>::new().unwrap();
        let attacker = std::thread::spawn(move || {
            let fd = raw_connect(&name);
            forge(fd, variant);
            fd
        });
        let r = server.accept();
        assert!(r.is_err(), "variant {variant} was accepted");
        // SAFETY: closing the attacker's socket, which nothing else uses.
        unsafe { libc::close(attacker.join().unwrap()) };
        println!("variant {variant}: {}", r.err().unwrap());
    }
    println!("FORGED-REFUSED");
}

/// The header of a first message from an unauthenticated peer (the
/// bootstrap socket) claiming 2^40 bytes, with or without a descriptor,
/// made the parent abort or panic its accept thread; now `accept` returns
/// an error and the process goes on.
#[test]
fn forged_headers_on_the_bootstrap_socket_are_errors() {
    assert_role_passes("role_forged_bootstrap", "FORGED-REFUSED");
}

#[test]
#[ignore = "a role played by a child process of a_forged_header_closes_only_its_channel_in_a_receiver_set"]
fn role_receiver_set() {
    in_role(ROLE, "role_receiver_set");
    for variant in 0..VARIANTS {
        // A peer on a raw socket: its first, valid message is one postcard byte.
        let (server, name) = IpcOneShotServer::<u8>::new().unwrap();
        let peer = std::thread::spawn(move || {
            let fd = raw_connect(&name);
            send_record(fd, HEADER + 1, 1, &[7], None);
            fd
        });
        let (bad_rx, first) = server.accept().unwrap();
        assert_eq!(first, 7);
        let bad = peer.join().unwrap();
        let (good_tx, good_rx) = ipc::channel::<u8>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        let bad_id = set.add(bad_rx).unwrap();
        let good_id = set.add(good_rx).unwrap();

        forge(bad, variant);
        good_tx.send(42).unwrap();
        let (mut closed, mut got) = (false, false);
        while !(closed && got) {
            for event in set.select().expect("select survives a bad channel") {
                match event {
                    IpcSelectionResult::ChannelBroken(id, _) => {
                        assert_eq!(id, bad_id, "only the bad channel breaks");
                        closed = true;
                    }
                    IpcSelectionResult::ChannelClosed(id) => {
                        panic!("channel {id} reported closed, not broken")
                    }
                    IpcSelectionResult::MessageReceived(id, m) => {
                        assert_eq!(id, good_id);
                        assert_eq!(m.to::<u8>().unwrap(), 42);
                        got = true;
                    }
                }
            }
        }
        // The good channel still works after its neighbour was closed.
        good_tx.send(43).unwrap();
        match set.select().unwrap().pop().unwrap() {
            IpcSelectionResult::MessageReceived(id, m) => {
                assert_eq!((id, m.to::<u8>().unwrap()), (good_id, 43));
            }
            IpcSelectionResult::ChannelClosed(id) | IpcSelectionResult::ChannelBroken(id, _) => {
                panic!("channel {id} closed")
            }
        }
        // SAFETY: closing the peer's socket, which nothing else uses.
        unsafe { libc::close(bad) };
    }
    println!("SET-SURVIVED");
}

/// A receiver set serving many peers (the router) failed its whole
/// `select` (or aborted) on one peer's forged header; now that peer's
/// channel is reported closed and the others go on.
#[test]
fn a_forged_header_closes_only_its_channel_in_a_receiver_set() {
    assert_role_passes("role_receiver_set", "SET-SURVIVED");
}

/// This process's open descriptors and whether each is close-on-exec.
fn descriptors() -> Vec<(RawFd, bool)> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        v.push((fd, flags & libc::O_CLOEXEC as u32 != 0));
    }
    v
}

#[test]
#[ignore = "a role played by a child process of ipc_channel_descriptors_are_close_on_exec"]
fn role_cloexec() {
    in_role(ROLE, "role_cloexec");
    let before: HashSet<RawFd> = descriptors().into_iter().map(|(fd, _)| fd).collect();
    // An accepted connection, a channel, a region sent (cloned) and received.
    let (server, name) = IpcOneShotServer::<ipc::IpcSender<IpcSharedMemory>>::new().unwrap();
    let (tx, rx) = ipc::channel::<IpcSharedMemory>().unwrap();
    let client = std::thread::spawn(move || {
        let up = ipc::IpcSender::connect(name).unwrap();
        up.send(tx).unwrap();
    });
    let (_accepted, tx) = server.accept().unwrap();
    client.join().unwrap();
    let region = IpcSharedMemory::from_bytes(&[3; 8192]);
    let copy = region.clone();
    tx.send(region).unwrap();
    let received = rx.recv().unwrap();
    let leaky: Vec<RawFd> = descriptors()
        .into_iter()
        .filter(|(fd, cloexec)| !before.contains(fd) && !cloexec)
        .map(|(fd, _)| fd)
        .collect();
    assert!(
        leaky.is_empty(),
        "descriptors without close-on-exec: {leaky:?}"
    );
    drop((copy, received));
    println!("ALL-CLOEXEC");
}

/// The accepted bootstrap connection and duplicated shared memory
/// descriptors lacked close-on-exec and leaked into every child started
/// later (issue 8.6).
#[test]
fn ipc_channel_descriptors_are_close_on_exec() {
    assert_role_passes("role_cloexec", "ALL-CLOEXEC");
}

fn memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("ipc-channel-shared-memory"))
        })
        .count()
}

#[test]
#[ignore = "a role played by a child process of a_released_region_keeps_its_bytes_and_no_descriptor"]
fn role_release() {
    in_role(ROLE, "role_release");
    let (tx, rx) = ipc::channel::<IpcSharedMemory>().unwrap();
    let mut kept = Vec::new();
    for i in 0..10u8 {
        tx.send(IpcSharedMemory::from_byte(i, 100_000)).unwrap();
        let mut region = rx.recv().unwrap();
        region.release_descriptor();
        kept.push(region);
    }
    assert_eq!(memfds(), 0, "released regions hold no descriptor");
    for (i, region) in kept.iter().enumerate() {
        assert_eq!(region.len(), 100_000);
        assert!(region.iter().all(|&b| b == i as u8));
    }
    // Sending a released region copies it into a new one.
    tx.send(kept[3].clone()).unwrap();
    let again = rx.recv().unwrap();
    assert!(again.iter().all(|&b| b == 3));
    println!("RELEASED");
}

/// Results nobody collected yet each held a shared memory descriptor, so
/// 1,500 of them exhausted `ulimit -n 1024` (issue 8.4): a received region
/// can now keep its mapping and give its descriptor back.
#[test]
fn a_released_region_keeps_its_bytes_and_no_descriptor() {
    assert_role_passes("role_release", "RELEASED");
}
