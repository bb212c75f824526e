//! Access: loopback by default, TLS (rustls) for anything else.

mod common;

use std::time::Duration;

use chronos_sync::CoordinatorError;
use chronos_sync_service::{ClientConfig, RemoteCoordinator, Server, ServerConfig, ServiceError};
use common::{ServerProc, TempDir};

/// The server child (see `common::serve_if_child`); a no-op otherwise.
#[test]
fn server_process() {
    common::serve_if_child();
}

#[test]
fn a_non_loopback_address_needs_tls_or_an_explicit_opt_in() {
    let dir = TempDir::new("bind");
    let mut cfg = ServerConfig::new(dir.path());
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    match Server::open(cfg.clone()) {
        Err(ServiceError::Config { reason }) => assert!(reason.contains("loopback"), "{reason}"),
        other => panic!("{other:?}"),
    }
    cfg.allow_plaintext_remote = true;
    assert!(Server::open(cfg).is_ok());
}

#[test]
fn tls_serves_and_a_plaintext_client_is_refused() {
    let dir = TempDir::new("tls");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = key.cert.pem();
    let cert = dir.path().join("cert.pem");
    let keyf = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&keyf, key.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(
        &data,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", keyf.to_str().unwrap(), "--init", "1,2"],
    );
    let mut cfg = ClientConfig::new(format!("https://{}", server.addr));
    cfg.tls_ca_pem = Some(cert_pem.into_bytes());
    cfg.tls_domain = Some("localhost".into());
    let c = RemoteCoordinator::connect(cfg).unwrap();
    let lease = c.checkout(1).unwrap();
    assert_eq!(&*lease.params, &[1.0f32, 2.0]);

    // A plaintext client gets no answer: after its (short) budget, a typed
    // Unavailable.
    let mut plain = ClientConfig::new(format!("http://{}", server.addr));
    plain.retry_budget = Duration::from_millis(500);
    plain.rpc_timeout = Duration::from_millis(400);
    let e = RemoteCoordinator::connect(plain).unwrap().current_state().unwrap_err();
    assert!(matches!(e, chronos_sync::Error::Coordinator(CoordinatorError::Unavailable { .. })), "{e}");
}

#[test]
fn one_server_per_data_directory() {
    let dir = TempDir::new("lock");
    let mut cfg = ServerConfig::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let first = Server::open(cfg.clone()).unwrap();
    match Server::open(cfg.clone()) {
        Err(ServiceError::Config { reason }) => assert!(reason.contains("in use"), "{reason}"),
        other => panic!("{other:?}"),
    }
    drop(first);
    assert!(Server::open(cfg).is_ok());
}
