//! The control plane: accounts, apps, grants and every other fact the gateway decides with, plus
//! the supervisor that provisions, wakes and hibernates instance processes.
//!
//! * [`store::ControlStore`] — one redb file (`control.redb`) holding accounts, apps, grants,
//!   authorization codes, refresh-token families, revocations, sessions and the access log.
//! * [`keys::HostKeys`] — the host master key (wraps every user's data key) and the token-signing
//!   key, each in a 0600 file.
//! * [`accounts`] — sign-up (argon2id) and password checks.
//! * [`supervisor::Supervisor`] — one sandboxed `selfcloud instance` process per awake user.
//! * [`audit::AuditLog`] — the batched, append-only per-user access log.
//!
//! It must not parse HTTP or tokens (that is the gateway's job) and never reads inside an
//! instance's data directory beyond creating it: user data is the instance's alone.
#![warn(missing_docs, unreachable_pub)]

pub mod accounts;
pub mod audit;
pub mod keys;
pub mod model;
pub mod store;
pub mod supervisor;

/// A control-plane failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The control store failed.
    #[error("control store: {0}")]
    Store(String),
    /// A name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Input refused.
    #[error("{0}")]
    Invalid(String),
    /// A key file or directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The instance could not be started or did not answer.
    #[error("instance of {user}: {reason}")]
    Instance {
        /// Whose.
        user: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(impl From<$t> for Error { fn from(e: $t) -> Self { Error::Store(e.to_string()) } })*};
}
store_err!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, serde_json::Error);
