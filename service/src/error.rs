//! Errors of the service (start-up, storage, transport); call errors seen by
//! a client are the library's [`chronos_sync::Error`].

/// What can go wrong running or opening the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A file-system operation failed.
    #[error("could not {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The gRPC transport failed (bind, TLS setup, connect).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A setting is invalid or contradicts the stored one.
    #[error("configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
    /// A persisted record failed to decode or validate.
    #[error("corrupt {what}: {reason}")]
    CorruptRecord {
        /// Which record.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The coordinator refused the stored state or config.
    #[error(transparent)]
    Coordinator(#[from] chronos_sync::Error),
}
