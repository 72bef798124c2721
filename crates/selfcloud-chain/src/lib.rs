//! SELF Chain: the chain every selfcloud user holds an account on.
//!
//! This crate owns the chain's data model and rules — signed transactions ([`Tx`]), blocks,
//! bech32 `self1…` addresses, deterministic execution over an authenticated state tree
//! ([`ChainStore`], a Jellyfish Merkle tree in redb), the mempool and its fairness policy — and
//! the nodes that run them: validators ordering blocks with commonware's simplex BFT consensus
//! (threshold-BLS certificates, so anyone can check finality against one public key) and the
//! node HTTP API. It must not know about users, tokens or instances: the control plane and the
//! instance talk to it only through transactions and the node API.

mod address;
pub mod api;
mod block;
mod error;
pub mod mempool;
pub mod network;
pub mod node;
pub mod state;
mod tx;

pub use address::Address;
pub use block::{Block, Genesis, MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
pub use error::ChainError;
pub use mempool::Mempool;
pub use state::{Account, ChainStore, Mode, Tip};
pub use tx::{parse_hash, transfer, Action, Tx, TxBody, TxHash, MAX_TX_BYTES};

/// The local network's chain id.
pub const CHAIN_ID: &str = "self-testnet-1";
/// Base units in one SELF (18 decimals).
pub const UNIT: u128 = 1_000_000_000_000_000_000;
/// The smallest fee a transaction may pay (10⁻⁶ SELF); fees are burned.
pub const MIN_FEE: u128 = 1_000_000_000_000;

/// Checks every transaction's signature, spreading large batches over all cores.
/// Returns one verdict per transaction, in order.
pub fn verify_signatures(txs: &[Tx]) -> Vec<bool> {
    const PER_THREAD: usize = 256;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if txs.len() < 2 * PER_THREAD || threads == 1 {
        return txs.iter().map(|tx| tx.verify_signature().is_ok()).collect();
    }
    let chunk = txs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = txs.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(|tx| tx.verify_signature().is_ok()).collect::<Vec<bool>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

/// Formats base units as a decimal SELF amount ("1.5" for 1.5 × 10¹⁸).
pub fn format_self(units: u128) -> String {
    let whole = units / UNIT;
    let fraction = units % UNIT;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:018}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}
