//! Blocks and the genesis that roots the chain.
//!
//! Consensus orders only a block's digest (the SHA-256 of its encoding); the block itself travels
//! between validators beside consensus and is checked by re-executing it on its parent's state.

use crate::{Address, Tx};
use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{Copying, DecodeExt, Encode, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use sha2::{Digest as _, Sha256};

/// Most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Largest encoded block (bounded by transaction count × transaction size, with headroom).
pub const MAX_BLOCK_BYTES: usize = MAX_BLOCK_TXS * 256 + 1024;

/// A block: a batch of transactions executed on its parent's state, committing to the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Digest of the parent block (the genesis digest for height 1).
    pub parent: [u8; 32],
    pub height: u64,
    /// The consensus view that proposed it (binds the block to one proposal).
    pub view: u64,
    /// Proposer's wall clock in milliseconds; never earlier than the parent's.
    pub timestamp_ms: u64,
    /// Root of the authenticated state tree after executing `txs`.
    pub state_root: [u8; 32],
    pub txs: Vec<Tx>,
}

impl Block {
    /// The digest consensus votes on.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// Decodes one block, refusing oversized or non-canonical input.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Block, crate::ChainError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(crate::ChainError::TooLarge(format!("a block is at most {MAX_BLOCK_BYTES} bytes")));
        }
        Block::decode(Copying(bytes)).map_err(|e| crate::ChainError::Malformed(e.to_string()))
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.parent.write(buf);
        self.height.write(buf);
        self.view.write(buf);
        self.timestamp_ms.write(buf);
        self.state_root.write(buf);
        self.txs.write(buf);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        32 + 8 + 8 + 8 + 32 + self.txs.encode_size()
    }
}

impl Read for Block {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Block {
            parent: <[u8; 32]>::read_cfg(buf, &())?,
            height: u64::read_cfg(buf, &())?,
            view: u64::read_cfg(buf, &())?,
            timestamp_ms: u64::read_cfg(buf, &())?,
            state_root: <[u8; 32]>::read_cfg(buf, &())?,
            txs: Vec::<Tx>::read_cfg(buf, &(RangeCfg::new(0..=MAX_BLOCK_TXS), ()))?,
        })
    }
}

/// The chain's starting point: its id, its first balances and when it began.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Balances in base units at height 0.
    pub allocations: Vec<(Address, String)>,
}

impl Genesis {
    /// Parsed allocations (amounts are decimal strings in the file so that JSON keeps 128 bits).
    pub fn balances(&self) -> Result<Vec<(Address, u128)>, crate::ChainError> {
        self.allocations
            .iter()
            .map(|(address, amount)| {
                amount.parse::<u128>().map(|a| (*address, a)).map_err(|_| crate::ChainError::InvalidArgument(format!("genesis amount {amount:?} is not a base-unit integer")))
            })
            .collect()
    }

    /// The digest standing in for "block 0": consensus starts from it, height 1 names it as parent.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"SELF-CHAIN-GENESIS-V1\0");
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        hasher.finalize().into()
    }
}
