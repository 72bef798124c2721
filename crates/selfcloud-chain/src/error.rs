//! Errors of the chain crate, each mapping to one stable API code.

/// Why a transaction, block or request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid address {0}")]
    InvalidAddress(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the signature does not verify against the signer key")]
    BadSignature,
    #[error("wrong chain id {got:?} (this chain is {want:?})")]
    WrongChain { got: String, want: String },
    #[error("nonce {got} is not the account's next nonce {want}")]
    BadNonce { got: u64, want: u64 },
    #[error("fee {got} is below the minimum {min}")]
    FeeTooLow { got: u128, min: u128 },
    #[error("insufficient funds: balance {balance}, needs {needed}")]
    InsufficientFunds { balance: u128, needed: u128 },
    #[error("app id {0:?} is registered to another account")]
    AppTaken(String),
    #[error("transaction already known")]
    Duplicate,
    #[error("mempool is full")]
    MempoolFull,
    #[error("{0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl ChainError {
    /// The stable code the APIs return (SPEC error codes); refused transactions are `INVALID_ARGUMENT`.
    pub fn code(&self) -> &'static str {
        match self {
            ChainError::NotFound(_) => "NOT_FOUND",
            ChainError::Duplicate => "ALREADY_EXISTS",
            ChainError::MempoolFull | ChainError::Unavailable(_) => "UNAVAILABLE",
            ChainError::Storage(_) => "INTERNAL",
            ChainError::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            _ => "INVALID_ARGUMENT",
        }
    }
}

impl From<redb::Error> for ChainError {
    fn from(e: redb::Error) -> Self {
        ChainError::Storage(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ChainError {
            fn from(e: $t) -> Self { ChainError::Storage(e.to_string()) }
        }
    )*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, redb::SetDurabilityError);
