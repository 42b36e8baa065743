//! `rediss://` (feature `tls`): a pool and its local workers talk to a
//! TLS-only `redis-server` whose certificate is signed by a CA made for
//! the test (trusted through `SSL_CERT_FILE`, which the system-roots
//! loader reads). Needs `openssl` and a `redis-server` built with TLS
//! (Debian's is).

#![cfg(feature = "tls")]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use concur_core::conformance::Add;
use concur_redis::server::{LocalServer, ServerOptions};
use concur_redis::Executor;

support::worker_entry_test!();

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl on PATH (apt-get install -y openssl)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1, in `dir`.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=concur test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
}

#[test]
fn rediss_url_works() {
    let dir = std::env::temp_dir().join(format!("concur-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let server = LocalServer::start(ServerOptions::new().tls(
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    ))
    .unwrap_or_else(|e| panic!("{e}: {e:?}"));
    let port = server.port();
    // Read by rustls-native-certs here and in the local workers (inherited).
    std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));
    let url = server.url();
    let pool = support::pool(&url, support::workers(1));
    let h = pool.submit(Add(40, 2)).unwrap();
    assert_eq!(h.join_timeout(support::DEADLINE).unwrap().unwrap(), 42);
    drop(pool);
    let plain = format!("redis://127.0.0.1:{port}/0");
    let e = concur_redis::RedisPool::builder(&plain)
        .local_workers(false)
        .reconnect_timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), &concur_redis::ErrorKind::Io, "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
