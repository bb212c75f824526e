//! The chronos-sync coordinator as a service a job can trust.
//!
//! * [`Server`]: a gRPC service (tonic, hand-written prost messages, no
//!   `protoc`) around the in-process [`chronos_sync::Coordinator`]. Every
//!   state change is written to SQLite (WAL, `synchronous = FULL`) in the
//!   same transaction as the idempotency record of the request that caused
//!   it, and only then answered; a server restarted on the same directory
//!   continues exactly where the last acknowledged request left it.
//! * [`RemoteCoordinator`]: a blocking client implementing
//!   [`chronos_sync::coordinator::CoordinatorApi`], so the worker loop of the
//!   README runs unchanged against a server in another process.
//!
//! Run a server with `chronos-sync coordinator serve --listen 127.0.0.1:50551
//! --data DIR` (the CLI member; its flags are [`cli::ServeArgs`]), then:
//!
//! ```no_run
//! use chronos_sync::coordinator::{CommitOutcome, CommitRequest};
//! use chronos_sync_service::{ClientConfig, RemoteCoordinator};
//! use std::{sync::Arc, time::Duration};
//!
//! let coord = Arc::new(RemoteCoordinator::connect(ClientConfig::new("http://127.0.0.1:50551"))?);
//! let workers: Vec<_> = (0..2u64)
//!     .map(|worker| {
//!         let coord = Arc::clone(&coord);
//!         std::thread::spawn(move || -> chronos_sync::Result<()> {
//!             for round in 0..3u64 {
//!                 let lease = coord.checkout(worker)?;
//!                 let hypergradient = lease.params.to_vec();
//!                 let validation_loss = lease.params.iter().map(|p| 0.5 * p * p).sum();
//!                 let request = CommitRequest { commit_id: round, hypergradient, validation_loss };
//!                 match coord.commit(&lease, request)? {
//!                     CommitOutcome::Accepted { .. } => {}
//!                     CommitOutcome::Rejected { .. } => {}
//!                 }
//!                 let _ = coord.wait_for_version(lease.version, Duration::from_millis(200));
//!             }
//!             Ok(())
//!         })
//!     })
//!     .collect();
//! for w in workers {
//!     w.join().expect("worker panicked")?;
//! }
//! assert!(coord.current_version()? >= 1);
//! # Ok::<(), chronos_sync::Error>(())
//! ```
//!
//! See `service/README.md` for access control (shared secret, TLS), limits
//! and the crash campaign.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod server;
pub mod store;
pub mod wire;

pub use client::{ClientConfig, RemoteCoordinator};
pub use config::ConfigRecord;
pub use error::ServiceError;
pub use server::{RunningServer, Server, ServerConfig, TlsFiles, run_blocking};
pub use store::{AcceptedRow, Audit};
