//! The chain's state and history on disk: two redb files per node.
//!
//! State is a map from namespaced keys to values, authenticated by a Jellyfish Merkle tree whose
//! root every block commits to (tree version = block height). The latest value of each key is also
//! kept in a plain table so execution never walks the tree to read.
//!
//! The *block file* holds what the network agreed on: blocks, their finalization certificates
//! and the tip. It is appended to once per block, durably, in height order (a few pages).
//! The *state file* holds what follows from the blocks: the state, its tree and the transaction
//! indexes. Each block's rows land in random places there (keys are hashes), so making every
//! block's state durable rewrote megabytes of pages per block and held the disk that consensus's
//! votes wait on. The state file is made durable only at checkpoints (every [`CHECKPOINT`] and at
//! close); a node that crashes in between re-executes the blocks above its last checkpoint when
//! it opens, checking each state root, and so resumes at exactly the last block it wrote.
//!
//! Execution happens only on top of the *head*: the last finalized block. The node proposes and
//! verifies a block with transactions once its parent is final (see `node`; an empty block on a
//! parent not yet final carries its parent's state), so there is never more than one state to
//! execute on.
//!
//! A finalized block is first *staged* (kept in memory, executed, in height order) and written to
//! disk by the node's commit thread afterwards, so neither the next block nor the users waiting
//! for this one wait for the write. The thread appends the block to the block file at once; its
//! state waits for up to [`STATE_BATCH_BLOCKS`] blocks or [`STATE_BATCH_WAIT`], and the batch is
//! written in one transaction, so the pages a batch's blocks all touch are copied once. Every read goes through the staged blocks to the disk, so the
//! head (the last finalized block) is what execution and the node's API see alike. Finality is
//! the network's fact, not this disk's: staged blocks lost in a crash are fetched again from the
//! other validators, as by a node that was down, and nothing read from them changes.

use crate::{Action, Address, Block, ChainError, Genesis, Tx, TxHash, MIN_FEE};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How often the state file is made durable. A crash costs re-executing at most this much of the
/// chain at the next open; a longer spell lets more of a hot page's rewrites meet in one write.
pub const CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most finalized blocks whose state the commit thread writes in one transaction of the state
/// file. A row's page is copied once per transaction however many of the batch's rows land on it,
/// and most blocks touch the same accounts and the same leaves of the hash-keyed indexes.
pub const STATE_BATCH_BLOCKS: usize = 4;
/// Longest a finalized block's state waits in memory for others to share its write. Readers see
/// it meanwhile (it is staged); its block is in the block file already.
pub const STATE_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

// The state file.
const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_values");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const TXS: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("txs");
const ACCOUNT_TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("account_txs");
// The block file.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const DIGESTS: TableDefinition<&[u8], u64> = TableDefinition::new("block_digests");
const FINALIZATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("finalizations");
/// Blocks this node proposed or voted for that are not final yet, by (height, digest): kept
/// durably before the vote (see [`ChainStore::keep_voted`]), dropped once their height is final.
const VOTED: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("voted_blocks");
// Both: "tip", the last block each file holds.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// An account's spendable balance (base units) and next nonce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u128,
    pub nonce: u64,
}

impl Account {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.balance.to_be_bytes().to_vec();
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out
    }

    /// Decodes a stored account value (as state proofs carry it).
    pub fn decode(bytes: &[u8]) -> Account {
        let balance = bytes.get(..16).and_then(|b| b.try_into().ok()).map(u128::from_be_bytes).unwrap_or(0);
        let nonce = bytes.get(16..24).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        Account { balance, nonce }
    }
}

/// Keys of the authenticated state (the prefix keeps each kind in its own namespace).
pub mod keys {
    use crate::Address;

    pub fn account(address: &Address) -> Vec<u8> {
        [b"acct/".as_slice(), &address.0].concat()
    }
    pub fn directory(address: &Address) -> Vec<u8> {
        [b"dir/".as_slice(), &address.0].concat()
    }
    pub fn app(app_id: &str) -> Vec<u8> {
        [b"app/".as_slice(), app_id.as_bytes()].concat()
    }
    pub fn consent(address: &Address, receipt: &[u8; 32]) -> Vec<u8> {
        [b"consent/".as_slice(), &address.0, receipt].concat()
    }
    pub fn anchor(address: &Address) -> Vec<u8> {
        [b"anchor/".as_slice(), &address.0].concat()
    }
}

/// The last committed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub digest: [u8; 32],
    pub state_root: [u8; 32],
    pub timestamp_ms: u64,
}

impl Tip {
    fn encode(&self) -> Vec<u8> {
        [&self.height.to_be_bytes()[..], &self.digest, &self.state_root, &self.timestamp_ms.to_be_bytes()].concat()
    }

    fn decode(bytes: &[u8]) -> Option<Tip> {
        Some(Tip {
            height: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            digest: bytes.get(8..40)?.try_into().ok()?,
            state_root: bytes.get(40..72)?.try_into().ok()?,
            timestamp_ms: u64::from_be_bytes(bytes.get(72..80)?.try_into().ok()?),
        })
    }
}

/// The result of executing transactions on the head: what to write and the root it yields.
pub struct Executed {
    pub height: u64,
    pub state_root: [u8; 32],
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    tree: TreeUpdateBatch,
}

/// How execution treats a transaction that cannot apply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Verifying someone else's block: any bad transaction makes the whole block invalid.
    Strict,
    /// Building our own block: skip what cannot apply and keep going.
    Lenient,
}

/// A finalized block waiting for the commit thread, with what executing it produced.
pub struct Staged {
    /// Shared with the node's block subscribers, so a block is not copied to reach them.
    pub block: Arc<Block>,
    pub tip: Tip,
    executed: Executed,
    finalization: Vec<u8>,
    /// Its transactions' hashes, in block order (looked up by the API, indexed by the write).
    pub hashes: Vec<TxHash>,
    /// When it was staged (its state is written at most [`STATE_BATCH_WAIT`] later).
    staged_at: std::time::Instant,
}

/// One node's chain database: its block file and its state file (see the module doc).
///
/// Shared by reference between the node's actor (the only writer), its commit thread and its API
/// (readers): redb gives readers a consistent snapshot while a block commits.
pub struct ChainStore {
    blocks: Database,
    state: Database,
    chain_id: String,
    /// The last block whose state is on disk.
    tip: std::sync::RwLock<Tip>,
    /// The height of the last block in the block file (at or above `tip`'s).
    blocks_height: std::sync::atomic::AtomicU64,
    /// Finalized blocks whose state is not yet on disk, oldest first; each extends the one before
    /// (the first extends `tip`). Popped only after the state is on disk, so a reader that takes
    /// this list and then opens a read transaction sees every block in one or the other.
    staged: std::sync::Mutex<std::collections::VecDeque<Arc<Staged>>>,
    /// Signalled whenever staged blocks' state reaches the disk.
    written: std::sync::Condvar,
    /// When the state file was last made durable.
    checkpointed: std::sync::Mutex<std::time::Instant>,
}

/// The block file that goes with the state file at `state`: `chain.redb` → `chain.blocks.redb`.
pub fn block_file(state: &Path) -> std::path::PathBuf {
    state.with_extension("blocks.redb")
}

impl ChainStore {
    /// Opens (or creates from `genesis`) the store whose state file is `path` (its block file
    /// beside it, see [`block_file`]), re-executing the blocks whose state a crash lost.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<ChainStore, ChainError> {
        let store = ChainStore {
            blocks: Database::create(block_file(path))?,
            state: Database::create(path)?,
            chain_id: genesis.chain_id.clone(),
            tip: std::sync::RwLock::new(Tip { height: 0, digest: genesis.digest(), state_root: [0; 32], timestamp_ms: genesis.timestamp_ms }),
            blocks_height: Default::default(),
            staged: Default::default(),
            written: std::sync::Condvar::new(),
            checkpointed: std::sync::Mutex::new(std::time::Instant::now()),
        };
        store.move_blocks_out_of_state()?;
        let block_tip = read_tip(&store.blocks)?;
        if block_tip.is_none() {
            store.create_block_tables()?;
        }
        match read_tip(&store.state)? {
            Some(tip) => store.set_tip(tip),
            None => store.init_genesis(genesis)?,
        }
        let state_tip = store.tip();
        match block_tip {
            Some(block_tip) if block_tip.height > state_tip.height => store.replay(block_tip)?,
            Some(block_tip) if block_tip != state_tip => {
                return Err(ChainError::Storage(format!("the state file is at block {} but the block file ends at block {}", state_tip.height, block_tip.height)));
            }
            None if state_tip.height > 0 => {
                return Err(ChainError::Storage(format!("the block file {} is missing blocks 1 to {}", block_file(path).display(), state_tip.height)));
            }
            _ => {}
        }
        store.blocks_height.store(store.tip().height, std::sync::atomic::Ordering::Release);
        Ok(store)
    }

    /// A store written before the block file existed keeps its blocks in the state file: they
    /// move to the block file (durably) before they leave the state file, so a crash between
    /// the two only repeats the move.
    fn move_blocks_out_of_state(&self) -> Result<(), ChainError> {
        let read = self.state.begin_read()?;
        let old_blocks = match read.open_table(BLOCKS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(blocks = old_blocks.len()?, "moving the chain's blocks to their own file");
        drop(old_blocks);
        let write = self.blocks.begin_write()?;
        copy_table(&read, &write, BLOCKS)?;
        copy_table(&read, &write, DIGESTS)?;
        copy_table(&read, &write, FINALIZATIONS)?;
        if let Some(tip) = read.open_table(META)?.get("tip")? {
            write.open_table(META)?.insert("tip", tip.value())?;
        }
        write.commit()?;
        drop(read);
        let write = self.state.begin_write()?;
        write.delete_table(BLOCKS)?;
        write.delete_table(DIGESTS)?;
        write.delete_table(FINALIZATIONS)?;
        write.commit()?;
        Ok(())
    }

    /// Creates the block file's tables, so readers never meet a missing one.
    fn create_block_tables(&self) -> Result<(), ChainError> {
        let write = self.blocks.begin_write()?;
        write.open_table(BLOCKS)?;
        write.open_table(DIGESTS)?;
        write.open_table(FINALIZATIONS)?;
        write.open_table(VOTED)?;
        write.open_table(META)?;
        write.commit()?;
        Ok(())
    }

    /// Keeps `block` durably before this node votes for it (or proposes it), until a block at its
    /// height is final. A finalized block was voted for by a quorum, so at least a quorum keeps
    /// it: even if every validator crashes at once (they share a host under `selfcloud up`)
    /// before any wrote it as final, a quorum has it again when they restart, and the chain can
    /// go on from it. Without this, the finalization survives in consensus's journal while the
    /// block it names is gone everywhere, and no later block can be executed.
    ///
    /// `digest` is the block's (the caller has it; computing it encodes the whole block again).
    /// The rows go when [`ChainStore::write_staged_blocks`] writes a block at their height.
    pub fn keep_voted(&self, digest: &[u8; 32], block: &Block) -> Result<(), ChainError> {
        let mut write = self.blocks.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        {
            let mut voted = write.open_table(VOTED)?;
            if voted.get((block.height, digest.as_slice()))?.is_some() {
                return Ok(()); // a proposal verified again, or a repeated verify
            }
            voted.insert((block.height, digest.as_slice()), commonware_codec::Encode::encode(block).as_ref())?;
        }
        write.commit()?;
        Ok(())
    }

    /// The kept blocks above the final height (see [`ChainStore::keep_voted`]): what a
    /// restarted node may still need, to commit or to serve to the others.
    pub fn voted_blocks(&self) -> Result<Vec<Block>, ChainError> {
        let final_height = self.blocks_height.load(std::sync::atomic::Ordering::Acquire);
        let read = self.blocks.begin_read()?;
        let table = match read.open_table(VOTED) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.range((final_height + 1, [].as_slice())..)? {
            let (_, bytes) = row?;
            out.push(Block::decode_bytes(bytes.value())?);
        }
        Ok(out)
    }

    fn init_genesis(&self, genesis: &Genesis) -> Result<(), ChainError> {
        let mut writes = BTreeMap::new();
        for (address, balance) in genesis.balances()? {
            writes.insert(keys::account(&address), Some(Account { balance, nonce: 0 }.encode()));
        }
        let read = self.state.begin_read()?;
        let (root, tree) = put_values(&read, &[], &writes, 0)?;
        drop(read);
        let tip = Tip { height: 0, digest: genesis.digest(), state_root: root, timestamp_ms: genesis.timestamp_ms };
        let write = self.state.begin_write()?;
        write_tree(&write, &writes, &tree, 0)?;
        write.open_table(META)?.insert("tip", tip.encode().as_slice())?;
        // Create every table so readers never meet a missing one.
        write.open_table(TXS)?;
        write.open_table(ACCOUNT_TXS)?;
        write.commit()?;
        self.set_tip(tip);
        Ok(())
    }

    /// Re-executes the blocks above the state file's tip up to `to` (the block file's tip),
    /// checking each against the state root its block names, then checkpoints.
    fn replay(&self, to: Tip) -> Result<(), ChainError> {
        let from = self.tip().height + 1;
        tracing::info!(from, to = to.height, "re-executing the blocks whose state was not checkpointed before the node stopped");
        for height in from..=to.height {
            let block = self.block(height)?.ok_or_else(|| ChainError::Storage(format!("block {height} is missing from the block file")))?;
            let (_, executed) = self.execute(block.txs.clone(), Mode::Strict)?;
            if executed.state_root != block.state_root {
                return Err(ChainError::Storage(format!("re-executing block {height} gives a state root other than the block's")));
            }
            let tip = Tip { height, digest: block.digest(), state_root: executed.state_root, timestamp_ms: block.timestamp_ms };
            let hashes: Vec<TxHash> = block.txs.iter().map(Tx::hash).collect();
            self.write_state(&[(&block, &executed, &hashes)], tip)?;
            self.set_tip(tip);
            if height % 1_000 == 0 {
                tracing::info!(height, to = to.height, "re-executing");
            }
        }
        tracing::info!(height = to.height, "re-executed up to the block file's tip");
        self.checkpoint()
    }

    fn set_tip(&self, tip: Tip) {
        *self.tip.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tip;
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The last block on disk (what a restart resumes from).
    pub fn tip(&self) -> Tip {
        *self.tip.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last finalized block: the newest staged one, else the tip. Blocks execute on it.
    pub fn head(&self) -> Tip {
        self.head_of(&self.staged_blocks())
    }

    /// The head, given the staged blocks.
    fn head_of(&self, staged: &[Arc<Staged>]) -> Tip {
        staged.last().map_or_else(|| self.tip(), |last| last.tip)
    }

    /// The staged blocks, oldest first (a snapshot: take it before opening a read transaction).
    fn staged_blocks(&self) -> Vec<Arc<Staged>> {
        self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }

    /// The staged block at `height`, if that one is staged.
    fn staged_at(&self, height: u64) -> Option<Arc<Staged>> {
        self.staged_blocks().into_iter().find(|s| s.tip.height == height)
    }

    /// How many finalized blocks wait for the commit thread.
    pub fn staged_count(&self) -> usize {
        self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Blocks until at most `count` blocks are staged, or `timeout` passes; whether they are.
    pub fn wait_staged_at_most(&self, count: usize, timeout: std::time::Duration) -> bool {
        let staged = self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (staged, _) = self.written.wait_timeout_while(staged, timeout, |staged| staged.len() > count).unwrap_or_else(|poisoned| poisoned.into_inner());
        staged.len() <= count
    }

    /// An account as of the head.
    pub fn account(&self, address: &Address) -> Result<Account, ChainError> {
        Ok(self.latest(&keys::account(address))?.map(|v| Account::decode(&v)).unwrap_or_default())
    }

    /// Several accounts as of the head, in order, read in one transaction.
    pub fn accounts(&self, addresses: &[Address]) -> Result<Vec<Account>, ChainError> {
        let staged = self.staged_blocks();
        let read = self.state.begin_read()?;
        let table = read.open_table(STATE)?;
        addresses
            .iter()
            .map(|address| Ok(head_value(&staged, &table, &keys::account(address))?.map(|v| Account::decode(&v)).unwrap_or_default()))
            .collect()
    }

    /// The value of a state key as of the head.
    pub fn latest(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ChainError> {
        if let Some(value) = staged_value(&self.staged_blocks(), key) {
            return Ok(value.clone());
        }
        let read = self.state.begin_read()?;
        let table = read.open_table(STATE)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// The value of `key` at `height`, with a proof against that height's state root.
    pub fn prove(&self, key: &[u8], height: u64) -> Result<(Option<Vec<u8>>, Vec<u8>), ChainError> {
        let staged = self.staged_blocks();
        let head = self.head_of(&staged);
        if height > head.height {
            return Err(ChainError::NotFound(format!("height {height} is above the head {}", head.height)));
        }
        let read = self.state.begin_read()?;
        let reader = Reader { read: &read, staged: &staged };
        let (value, proof) = Sha256Jmt::new(&reader).get_with_proof(KeyHash::with::<Sha256>(key), height).map_err(|e| ChainError::Storage(e.to_string()))?;
        let proof = borsh::to_vec(&proof).map_err(|e| ChainError::Storage(e.to_string()))?;
        Ok((value, proof))
    }

    /// Executes `txs` on the head as block `head.height + 1`. In [`Mode::Strict`] any transaction
    /// that cannot apply is an error; in [`Mode::Lenient`] it is left out. Returns the
    /// transactions that applied, in order, and the state they produce.
    ///
    /// Signatures must already be checked ([`crate::verify_signatures`]).
    pub fn execute(&self, txs: Vec<Tx>, mode: Mode) -> Result<(Vec<Tx>, Executed), ChainError> {
        // The staged list before the read transaction (see `staged`).
        let staged = self.staged_blocks();
        let height = self.head_of(&staged).height + 1;
        let read = self.state.begin_read()?;
        let state = read.open_table(STATE)?;
        let mut overlay = Overlay { state: &state, staged: &staged, writes: BTreeMap::new() };
        let mut applied = Vec::with_capacity(txs.len());
        for tx in txs {
            match overlay.apply(&tx, &self.chain_id, height) {
                Ok(()) => applied.push(tx),
                Err(e) if mode == Mode::Strict => return Err(e),
                Err(e) => tracing::debug!(tx = %tx.hash(), error = %e, "left out of block"),
            }
        }
        let writes = overlay.writes;
        drop(state);
        let (state_root, tree) = put_values(&read, &staged, &writes, height)?;
        Ok((applied, Executed { height, state_root, writes, tree }))
    }

    /// Makes `block` (executed as `executed`) the new head, with its finalization certificate,
    /// to be written by [`ChainStore::write_staged`].
    pub fn stage(&self, block: Block, executed: Executed, finalization: Vec<u8>) -> Result<Arc<Staged>, ChainError> {
        let mut staged = self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let head = self.head_of(staged.make_contiguous());
        if block.height != head.height + 1 || executed.height != block.height || block.parent != head.digest {
            return Err(ChainError::InvalidArgument(format!("block {} does not extend the head {}", block.height, head.height)));
        }
        let tip = Tip { height: block.height, digest: block.digest(), state_root: executed.state_root, timestamp_ms: block.timestamp_ms };
        let hashes = block.txs.iter().map(Tx::hash).collect();
        let entry = Arc::new(Staged { block: Arc::new(block), tip, executed, finalization, hashes, staged_at: std::time::Instant::now() });
        staged.push_back(entry.clone());
        Ok(entry)
    }

    /// Writes every staged block the block file lacks, with its certificate, in one durable
    /// transaction; how many. Only one thread may call this (the commit thread, or `commit`).
    pub fn write_staged_blocks(&self) -> Result<usize, ChainError> {
        use std::sync::atomic::Ordering;
        let on_disk = self.blocks_height.load(Ordering::Acquire);
        let pending: Vec<Arc<Staged>> = self.staged_blocks().into_iter().filter(|s| s.tip.height > on_disk).collect();
        let Some(last) = pending.last() else { return Ok(0) };
        let mut write = self.blocks.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        {
            let (mut blocks, mut digests, mut finalizations) = (write.open_table(BLOCKS)?, write.open_table(DIGESTS)?, write.open_table(FINALIZATIONS)?);
            for staged in &pending {
                let encoded = commonware_codec::Encode::encode(staged.block.as_ref());
                blocks.insert(staged.tip.height, encoded.as_ref())?;
                digests.insert(staged.tip.digest.as_slice(), staged.tip.height)?;
                finalizations.insert(staged.tip.height, staged.finalization.as_slice())?;
            }
            // Kept blocks at final heights (these, or ones that lost to them) are let go.
            let mut voted = write.open_table(VOTED)?;
            voted.retain_in(..(last.tip.height + 1, [].as_slice()), |_, _| false)?;
            write.open_table(META)?.insert("tip", last.tip.encode().as_slice())?;
        }
        write.commit()?;
        self.blocks_height.store(last.tip.height, Ordering::Release);
        Ok(pending.len())
    }

    /// Writes the state of the oldest staged blocks that are in the block file (at most `max`)
    /// in one transaction of the state file, makes the newest of them the tip and unstages them;
    /// how many.
    pub fn write_staged_state(&self, max: usize) -> Result<usize, ChainError> {
        let on_disk = self.blocks_height.load(std::sync::atomic::Ordering::Acquire);
        let batch: Vec<Arc<Staged>> = self.staged_blocks().into_iter().take_while(|s| s.tip.height <= on_disk).take(max).collect();
        let Some(last) = batch.last() else { return Ok(0) };
        let rows: Vec<(&Block, &Executed, &[TxHash])> = batch.iter().map(|s| (s.block.as_ref(), &s.executed, s.hashes.as_slice())).collect();
        self.write_state(&rows, last.tip)?;
        self.set_tip(last.tip);
        self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..batch.len());
        self.written.notify_all();
        Ok(batch.len())
    }

    /// How many staged blocks' state waits for the disk, and how long the oldest has waited.
    pub fn state_backlog(&self) -> (usize, std::time::Duration) {
        let staged = self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (staged.len(), staged.front().map(|s| s.staged_at.elapsed()).unwrap_or_default())
    }

    /// Writes everything staged: the blocks, then their state; how many blocks.
    pub fn write_staged(&self) -> Result<usize, ChainError> {
        self.write_staged_blocks()?;
        self.write_staged_state(usize::MAX)
    }

    /// Stages `block` and writes everything staged: the new tip is `block`.
    pub fn commit(&self, block: Block, executed: Executed, finalization: &[u8]) -> Result<(), ChainError> {
        self.stage(block, executed, finalization.to_vec())?;
        self.write_staged()?;
        Ok(())
    }

    /// Writes what `blocks` did (in order) to the state and the transaction indexes, with `tip`
    /// (the last of them) as the state file's tip; durably only when a checkpoint is due (see
    /// the module doc).
    fn write_state(&self, blocks: &[(&Block, &Executed, &[TxHash])], tip: Tip) -> Result<(), ChainError> {
        let mut checkpointed = self.checkpointed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = checkpointed.elapsed() >= CHECKPOINT;
        let mut write = self.state.begin_write()?;
        write.set_durability(if due { Durability::Immediate } else { Durability::None })?;
        for (block, executed, _) in blocks {
            write_tree(&write, &executed.writes, &executed.tree, block.height)?;
        }
        {
            // Both indexes are keyed by hash or address, so a block's rows fall all over them.
            // Inserted in key order, consecutive rows land on the same leaf, which is then still
            // in cache and already copied for this transaction.
            let mut locations = Vec::new();
            let mut histories = Vec::new();
            for (block, _, hashes) in blocks {
                for ((tx, hash), index) in block.txs.iter().zip(hashes.iter()).zip(0u32..) {
                    locations.push((hash.0, (block.height, index)));
                    for party in parties(tx) {
                        histories.push((history_key(&party, block.height), index, hash.0));
                    }
                }
            }
            locations.sort_unstable_by_key(|&(hash, _)| hash);
            histories.sort_unstable_by_key(|&(key, index, _)| (key, index));
            let mut txs = write.open_table(TXS)?;
            for (hash, location) in &locations {
                txs.insert(hash.as_slice(), *location)?;
            }
            // One row per account and block: what the account sent and received in it.
            let mut by_account = write.open_table(ACCOUNT_TXS)?;
            for group in histories.chunk_by(|a, b| a.0 == b.0) {
                let hashes: Vec<u8> = group.iter().flat_map(|(_, _, hash)| *hash).collect();
                by_account.insert(group[0].0.as_slice(), hashes.as_slice())?;
            }
            write.open_table(META)?.insert("tip", tip.encode().as_slice())?;
        }
        write.commit()?;
        if due {
            *checkpointed = std::time::Instant::now();
        }
        Ok(())
    }

    /// Makes everything written to the state file durable.
    fn checkpoint(&self) -> Result<(), ChainError> {
        let mut checkpointed = self.checkpointed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut write = self.state.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        write.commit()?;
        *checkpointed = std::time::Instant::now();
        Ok(())
    }

    /// The finalized block at `height` (0 is genesis and has no block), staged or on disk.
    pub fn block(&self, height: u64) -> Result<Option<Block>, ChainError> {
        if let Some(staged) = self.staged_at(height) {
            return Ok(Some(Block::clone(&staged.block)));
        }
        let read = self.blocks.begin_read()?;
        let table = read.open_table(BLOCKS)?;
        match table.get(height)? {
            Some(bytes) => Ok(Some(Block::decode_bytes(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// The height of the finalized block with this digest, staged or on disk.
    pub fn height_of(&self, digest: &[u8; 32]) -> Result<Option<u64>, ChainError> {
        if let Some(staged) = self.staged_blocks().into_iter().find(|s| s.tip.digest == *digest) {
            return Ok(Some(staged.tip.height));
        }
        let read = self.blocks.begin_read()?;
        let table = read.open_table(DIGESTS)?;
        Ok(table.get(digest.as_slice())?.map(|v| v.value()))
    }

    /// The encoded finalization certificate of the block at `height`.
    pub fn finalization(&self, height: u64) -> Result<Option<Vec<u8>>, ChainError> {
        if let Some(staged) = self.staged_at(height) {
            return Ok(Some(staged.finalization.clone()));
        }
        let read = self.blocks.begin_read()?;
        let table = read.open_table(FINALIZATIONS)?;
        Ok(table.get(height)?.map(|v| v.value().to_vec()))
    }

    /// Where a final transaction is: (height, index in block).
    pub fn tx_location(&self, hash: &TxHash) -> Result<Option<(u64, u32)>, ChainError> {
        if let Some(found) = self.staged_blocks().iter().find_map(|s| s.hashes.iter().position(|h| h == hash).map(|index| (s.tip.height, index as u32))) {
            return Ok(Some(found));
        }
        let read = self.state.begin_read()?;
        let table = read.open_table(TXS)?;
        Ok(table.get(hash.0.as_slice())?.map(|v| v.value()))
    }

    /// Hashes of the transactions sent or received by `address`, newest first.
    pub fn account_txs(&self, address: &Address, limit: usize, offset: usize) -> Result<Vec<TxHash>, ChainError> {
        let staged = self.staged_blocks();
        let mut newest: Vec<TxHash> = staged.iter().rev().flat_map(|s| s.block.txs.iter().rev()).filter(|tx| involves(tx, address)).map(Tx::hash).collect();
        let from_staged = newest.len();
        let mut out: Vec<TxHash> = newest.drain(..).skip(offset).take(limit).collect();
        // On disk: only below the first staged block, which may reach the disk while we read.
        let below = staged.first().map_or(u64::MAX, |first| first.tip.height);
        let read = self.state.begin_read()?;
        let table = read.open_table(ACCOUNT_TXS)?;
        // Both row layouts (see `history_key`) sort by account, then height; a block's own
        // height ends the range exclusively in either.
        let start = history_key(address, 0);
        let end = history_key(address, below);
        let mut skip = offset.saturating_sub(from_staged);
        for entry in table.range(start.as_slice()..end.as_slice())?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, hashes) = entry?;
            for hash in hashes.value().chunks_exact(32).rev() {
                if skip > 0 {
                    skip -= 1;
                } else if out.len() < limit {
                    out.push(TxHash(hash.try_into().map_err(|_| ChainError::Storage("a history row is not whole hashes".into()))?));
                }
            }
        }
        Ok(out)
    }
}

impl Drop for ChainStore {
    /// A clean close leaves nothing to re-execute.
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "could not checkpoint the chain state at close; the next open re-executes the blocks since the last checkpoint");
        }
    }
}

/// Copies every row of `table` as `read` sees it into the same table in `write`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(read: &ReadTransaction, write: &redb::WriteTransaction, table: TableDefinition<K, V>) -> Result<(), ChainError> {
    let mut to = write.open_table(table)?;
    for entry in read.open_table(table)?.iter()? {
        let (key, value) = entry?;
        to.insert(key.value(), value.value())?;
    }
    Ok(())
}

/// The "tip" a file records: the last block it holds.
fn read_tip(db: &Database) -> Result<Option<Tip>, ChainError> {
    let read = db.begin_read()?;
    match read.open_table(META) {
        Ok(table) => Ok(table.get("tip")?.and_then(|v| Tip::decode(v.value()))),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks a proof from [`ChainStore::prove`] for `key` = `value` (or absence) under `root`.
pub fn verify_proof(root: &[u8; 32], key: &[u8], value: Option<&[u8]>, proof: &[u8]) -> Result<(), ChainError> {
    let proof: jmt::proof::SparseMerkleProof<Sha256> = borsh::from_slice(proof).map_err(|e| ChainError::Malformed(format!("state proof: {e}")))?;
    proof.verify(jmt::RootHash(*root), KeyHash::with::<Sha256>(key), value).map_err(|e| ChainError::InvalidArgument(format!("state proof does not verify: {e}")))
}

/// Reads and writes made by executing transactions, over the staged blocks' writes and the
/// state on disk.
struct Overlay<'a> {
    state: &'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    staged: &'a [Arc<Staged>],
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ChainError> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        head_value(self.staged, self.state, key)
    }

    fn account(&self, address: &Address) -> Result<Account, ChainError> {
        Ok(self.get(&keys::account(address))?.map(|v| Account::decode(&v)).unwrap_or_default())
    }

    fn set_account(&mut self, address: &Address, account: Account) {
        self.writes.insert(keys::account(address), Some(account.encode()));
    }

    /// Applies one transaction, or changes nothing and says why not.
    fn apply(&mut self, tx: &Tx, chain_id: &str, height: u64) -> Result<(), ChainError> {
        let body = &tx.body;
        if body.chain_id != chain_id {
            return Err(ChainError::WrongChain { got: body.chain_id.clone(), want: chain_id.into() });
        }
        if body.fee < MIN_FEE {
            return Err(ChainError::FeeTooLow { got: body.fee, min: MIN_FEE });
        }
        let sender = body.sender();
        let mut account = self.account(&sender)?;
        if body.nonce != account.nonce {
            return Err(ChainError::BadNonce { got: body.nonce, want: account.nonce });
        }
        let spend = match &body.action {
            Action::Transfer { amount, .. } => *amount,
            _ => 0,
        };
        let needed = spend.checked_add(body.fee).ok_or(ChainError::InsufficientFunds { balance: account.balance, needed: u128::MAX })?;
        if account.balance < needed {
            return Err(ChainError::InsufficientFunds { balance: account.balance, needed });
        }
        match &body.action {
            Action::Transfer { to, amount } => {
                if *to != sender {
                    let mut recipient = self.account(to)?;
                    recipient.balance = recipient.balance.checked_add(*amount).ok_or_else(|| ChainError::InvalidArgument("recipient balance would overflow".into()))?;
                    self.set_account(to, recipient);
                }
                account.balance -= needed;
                if *to == sender {
                    account.balance += amount;
                }
            }
            Action::Directory { url, encryption_key } => {
                let value = [&encryption_key[..], url.as_bytes()].concat();
                self.writes.insert(keys::directory(&sender), Some(value));
                account.balance -= needed;
            }
            Action::RegisterApp { app_id, name } => {
                if app_id.is_empty() {
                    return Err(ChainError::InvalidArgument("app id is empty".into()));
                }
                let key = keys::app(app_id);
                if let Some(existing) = self.get(&key)? {
                    if existing.get(..20) != Some(&sender.0[..]) {
                        return Err(ChainError::AppTaken(app_id.clone()));
                    }
                }
                self.writes.insert(key, Some([&sender.0[..], name.as_bytes()].concat()));
                account.balance -= needed;
            }
            Action::Consent { receipt, revoked } => {
                let value = [&height.to_be_bytes()[..], &[u8::from(*revoked)]].concat();
                self.writes.insert(keys::consent(&sender, receipt), Some(value));
                account.balance -= needed;
            }
            Action::Anchor { root } => {
                let value = [&root[..], &height.to_be_bytes()].concat();
                self.writes.insert(keys::anchor(&sender), Some(value));
                account.balance -= needed;
            }
        }
        account.nonce += 1;
        self.set_account(&sender, account);
        Ok(())
    }
}

/// Computes the tree after `writes` at `version` (reading the tree as of `version - 1`: the
/// staged blocks' nodes, then the disk's).
fn put_values(read: &ReadTransaction, staged: &[Arc<Staged>], writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, version: Version) -> Result<([u8; 32], TreeUpdateBatch), ChainError> {
    let reader = Reader { read, staged };
    let tree = Sha256Jmt::new(&reader);
    let values = writes.iter().map(|(key, value)| (KeyHash::with::<Sha256>(key), value.clone()));
    let (root, batch) = tree.put_value_set(values, version).map_err(|e| ChainError::Storage(format!("state tree: {e}")))?;
    Ok((root.0, batch))
}

fn write_tree(write: &redb::WriteTransaction, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, tree: &TreeUpdateBatch, version: Version) -> Result<(), ChainError> {
    let mut state = write.open_table(STATE)?;
    for (key, value) in writes {
        match value {
            Some(value) => state.insert(key.as_slice(), value.as_slice())?,
            None => state.remove(key.as_slice())?,
        };
    }
    let mut nodes = write.open_table(NODES)?;
    for (key, node) in tree.node_batch.nodes() {
        let key = borsh::to_vec(key).map_err(|e| ChainError::Storage(e.to_string()))?;
        let node = borsh::to_vec(node).map_err(|e| ChainError::Storage(e.to_string()))?;
        nodes.insert(key.as_slice(), node.as_slice())?;
    }
    let mut values = write.open_table(VALUES)?;
    for ((value_version, key_hash), value) in tree.node_batch.values() {
        debug_assert_eq!(*value_version, version);
        let key = value_key(key_hash, *value_version);
        let stored = match value {
            Some(v) => [&[1u8][..], v].concat(),
            None => vec![0u8],
        };
        values.insert(key.as_slice(), stored.as_slice())?;
    }
    Ok(())
}

/// An `ACCOUNT_TXS` key: the account, then the block. Its value is the hashes of the block's
/// transactions that involve the account, in block order. (Stores written before this layout
/// hold one row per transaction: the key also has the transaction's index, the value one hash.)
fn history_key(account: &Address, height: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(&account.0);
    key[20..].copy_from_slice(&height.to_be_bytes());
    key
}

/// The accounts `ACCOUNT_TXS` lists `tx` under: its sender, and a transfer's recipient if another.
fn parties(tx: &Tx) -> impl Iterator<Item = Address> {
    let sender = tx.body.sender();
    let recipient = match &tx.body.action {
        Action::Transfer { to, .. } if *to != sender => Some(*to),
        _ => None,
    };
    std::iter::once(sender).chain(recipient)
}

/// The newest staged write of `key`, if a staged block wrote it (`Some(None)`: deleted).
fn staged_value<'a>(staged: &'a [Arc<Staged>], key: &[u8]) -> Option<&'a Option<Vec<u8>>> {
    staged.iter().rev().find_map(|s| s.executed.writes.get(key))
}

/// The value of `key` as of the head: the newest staged write, else the state table (which must
/// be read after `staged` was taken, see `ChainStore::staged`).
fn head_value(staged: &[Arc<Staged>], state: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>, key: &[u8]) -> Result<Option<Vec<u8>>, ChainError> {
    if let Some(value) = staged_value(staged, key) {
        return Ok(value.clone());
    }
    Ok(state.get(key)?.map(|v| v.value().to_vec()))
}

fn involves(tx: &Tx, address: &Address) -> bool {
    parties(tx).any(|party| party == *address)
}

fn value_key(key_hash: &KeyHash, version: Version) -> Vec<u8> {
    [&key_hash.0[..], &version.to_be_bytes()].concat()
}

/// The tree's view of the staged blocks and of the database inside one read transaction.
struct Reader<'a> {
    read: &'a ReadTransaction,
    staged: &'a [Arc<Staged>],
}

impl TreeReader for Reader<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        // Node keys carry their version, so a key lives in exactly one block's batch.
        if let Some(node) = self.staged.iter().rev().find_map(|s| s.executed.tree.node_batch.nodes().get(node_key)) {
            return Ok(Some(node.clone()));
        }
        let table = match self.read.open_table(NODES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let key = borsh::to_vec(node_key)?;
        Ok(match table.get(key.as_slice())? {
            Some(bytes) => Some(borsh::from_slice(bytes.value())?),
            None => None,
        })
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        // Staged versions are newer than any on disk: the newest one at or below `max_version` wins.
        let staged = self.staged.iter().rev().filter(|s| s.tip.height <= max_version).find_map(|s| s.executed.tree.node_batch.values().get(&(s.tip.height, key_hash)));
        if let Some(value) = staged {
            return Ok(value.clone());
        }
        let table = match self.read.open_table(VALUES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let start = value_key(&key_hash, 0);
        let end = value_key(&key_hash, max_version);
        let last = table.range(start.as_slice()..=end.as_slice())?.next_back().transpose()?;
        Ok(last.and_then(|(_, stored)| match stored.value().split_first() {
            Some((1, value)) => Some(value.to_vec()),
            _ => None,
        }))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only jmt's state-sync restore asks for this; nodes here never restore from chunks.
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{address, genesis, transfer};
    use crate::UNIT;

    fn block_on(store: &ChainStore, txs: Vec<Tx>, state_root: [u8; 32]) -> Block {
        let tip = store.tip();
        Block { parent: tip.digest, height: tip.height + 1, view: tip.height + 1, timestamp_ms: tip.timestamp_ms + 1, state_root, txs }
    }

    #[test]
    fn transfers_commit_survive_reopen_and_prove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let store = ChainStore::open(&path, &genesis()).unwrap();
        let genesis_root = store.tip().state_root;
        assert_eq!(store.account(&address(1)).unwrap().balance, 1000 * UNIT);

        let txs = vec![transfer(1, 0, address(2), 5 * UNIT), transfer(1, 1, address(3), UNIT)];
        let (applied, executed) = store.execute(txs.clone(), Mode::Strict).unwrap();
        assert_eq!(applied, txs);
        let block = block_on(&store, applied, executed.state_root);
        store.commit(block.clone(), executed, b"cert").unwrap();
        assert_eq!(store.account(&address(2)).unwrap(), Account { balance: 5 * UNIT, nonce: 0 });
        assert_eq!(store.account(&address(1)).unwrap(), Account { balance: 994 * UNIT - 2 * MIN_FEE, nonce: 2 });
        let tip = store.tip();
        drop(store);

        let store = ChainStore::open(&path, &genesis()).unwrap();
        assert_eq!(store.tip(), tip, "a reopened store resumes at its last block");
        assert_eq!(store.block(1).unwrap().unwrap(), block);
        assert_eq!(store.height_of(&block.digest()).unwrap(), Some(1));
        assert_eq!(store.finalization(1).unwrap().unwrap(), b"cert");
        assert_eq!(store.tx_location(&txs[1].hash()).unwrap(), Some((1, 1)));
        assert_eq!(store.account_txs(&address(1), 10, 0).unwrap(), vec![txs[1].hash(), txs[0].hash()]);
        assert_eq!(store.account_txs(&address(2), 10, 0).unwrap(), vec![txs[0].hash()]);

        // Proofs: the balance at height 1 verifies against block 1's root, not genesis's, and
        // a changed value or a missing key does not verify as present.
        let key2 = keys::account(&address(2));
        let (value, proof) = store.prove(&key2, 1).unwrap();
        let value = value.unwrap();
        verify_proof(&tip.state_root, &key2, Some(&value), &proof).unwrap();
        assert!(verify_proof(&genesis_root, &key2, Some(&value), &proof).is_err());
        let mut forged = value.clone();
        forged[15] ^= 1;
        assert!(verify_proof(&tip.state_root, &key2, Some(&forged), &proof).is_err());
        let (absent, proof) = store.prove(&key2, 0).unwrap();
        assert!(absent.is_none());
        verify_proof(&genesis_root, &key2, None, &proof).unwrap();
    }

    #[test]
    fn strict_refuses_what_lenient_skips() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChainStore::open(&dir.path().join("c.redb"), &genesis()).unwrap();
        let overdraft = transfer(2, 0, address(1), UNIT); // address(2) has nothing
        let replay_gap = transfer(1, 5, address(2), UNIT); // nonce 5, account is at 0
        let good = transfer(1, 0, address(2), UNIT);
        assert!(matches!(store.execute(vec![overdraft.clone()], Mode::Strict), Err(ChainError::InsufficientFunds { .. })));
        assert!(matches!(store.execute(vec![replay_gap.clone()], Mode::Strict), Err(ChainError::BadNonce { got: 5, want: 0 })));
        let (applied, _) = store.execute(vec![overdraft, good.clone(), good.clone(), replay_gap], Mode::Lenient).unwrap();
        assert_eq!(applied, vec![good], "a replayed nonce in the same block must not apply twice");
    }

    /// Staging is invisible to readers: blocks executed on staged blocks (not yet written)
    /// produce the roots and state of blocks executed on written ones, and every read (accounts,
    /// proofs, blocks, transaction lookups, an account's history) answers the same before the
    /// commit thread writes them as after.
    #[test]
    fn staged_blocks_read_and_execute_as_written_ones() {
        let dir = tempfile::tempdir().unwrap();
        let written = ChainStore::open(&dir.path().join("written.redb"), &genesis()).unwrap();
        let staging = ChainStore::open(&dir.path().join("staging.redb"), &genesis()).unwrap();
        // Each block moves funds the next one spends: execution must read the staged writes.
        let rounds = [
            vec![transfer(1, 0, address(2), 10 * UNIT), transfer(1, 1, address(3), UNIT)],
            vec![transfer(2, 0, address(3), 4 * UNIT), transfer(1, 2, address(2), UNIT)],
            vec![transfer(3, 0, address(4), 5 * UNIT / 2), transfer(2, 1, address(1), UNIT)],
        ];
        let genesis_tip = staging.tip();
        let mut blocks = Vec::new();
        // Block 1 reaches the disk, blocks 2 and 3 stay staged: reads span both.
        for (round, txs) in rounds.into_iter().enumerate() {
            let (_, by_written) = written.execute(txs.clone(), Mode::Strict).unwrap();
            let (_, by_staging) = staging.execute(txs.clone(), Mode::Strict).unwrap();
            assert_eq!(by_staging.state_root, by_written.state_root);
            let block = block_on(&written, txs, by_written.state_root);
            written.commit(block.clone(), by_written, b"cert").unwrap();
            staging.stage(block.clone(), by_staging, format!("cert {round}").into_bytes()).unwrap();
            if round == 0 {
                assert_eq!(staging.write_staged().unwrap(), 1);
            }
            blocks.push(block);
        }
        assert_eq!(staging.staged_count(), 2);
        assert_ne!(staging.tip(), genesis_tip);
        assert_eq!(staging.tip().height, 1, "blocks 2 and 3 are not on disk yet");
        assert_eq!(staging.head(), written.tip());
        let (_, empty) = staging.execute(vec![], Mode::Strict).unwrap();
        assert_eq!(empty.height, 4, "execution is on the head");
        assert!(staging.stage(blocks[0].clone(), empty, vec![]).is_err(), "a block must extend the head");

        let same_answers = |when: &str| {
            for n in 1..=4 {
                assert_eq!(staging.account(&address(n)).unwrap(), written.account(&address(n)).unwrap(), "{when}: account {n}");
                assert_eq!(staging.account_txs(&address(n), 10, 0).unwrap(), written.account_txs(&address(n), 10, 0).unwrap(), "{when}: history of {n}");
                for (limit, offset) in [(1, 1), (2, 1), (10, 2), (10, 3)] {
                    assert_eq!(staging.account_txs(&address(n), limit, offset).unwrap(), written.account_txs(&address(n), limit, offset).unwrap(), "{when}: page ({limit}, {offset}) of {n}");
                }
            }
            for block in &blocks {
                assert_eq!(staging.height_of(&block.digest()).unwrap(), Some(block.height), "{when}");
                assert_eq!(staging.block(block.height).unwrap().as_ref(), Some(block), "{when}");
                for (index, tx) in block.txs.iter().enumerate() {
                    assert_eq!(staging.tx_location(&tx.hash()).unwrap(), Some((block.height, index as u32)), "{when}");
                }
            }
            assert_eq!(staging.finalization(3).unwrap().as_deref(), Some(&b"cert 2"[..]), "{when}");
            let key = keys::account(&address(3));
            let (value, proof) = staging.prove(&key, 3).unwrap();
            verify_proof(&blocks[2].state_root, &key, value.as_deref(), &proof).unwrap();
            let (value, proof) = staging.prove(&key, 2).unwrap();
            verify_proof(&blocks[1].state_root, &key, value.as_deref(), &proof).unwrap();
        };
        same_answers("staged");
        assert_eq!(staging.write_staged_blocks().unwrap(), 2);
        same_answers("in the block file only");
        assert_eq!(staging.write_staged_state(1).unwrap(), 1);
        assert_eq!((staging.staged_count(), staging.tip().height), (1, 2));
        same_answers("one block's state written");
        assert_eq!(staging.write_staged().unwrap(), 1);
        assert_eq!((staging.staged_count(), staging.tip()), (0, written.tip()));
        same_answers("written");
    }

    /// Commits `rounds` of transfers from address 1, one block each.
    fn commit_rounds(store: &ChainStore, rounds: std::ops::Range<u64>) {
        for round in rounds {
            let txs = vec![transfer(1, 2 * round, address(2), UNIT), transfer(1, 2 * round + 1, address(3 + round as u8), UNIT)];
            let (applied, executed) = store.execute(txs, Mode::Strict).unwrap();
            let block = block_on(store, applied, executed.state_root);
            store.commit(block, executed, format!("cert {round}").as_bytes()).unwrap();
        }
    }

    /// Everything a reader can ask of a store that has committed `rounds` blocks.
    fn answers(store: &ChainStore, blocks: u64) -> Vec<String> {
        let mut out = vec![format!("{:?}", store.tip())];
        for n in 1..=(3 + blocks as u8) {
            out.push(format!("{:?} {:?}", store.account(&address(n)).unwrap(), store.account_txs(&address(n), 100, 0).unwrap()));
        }
        for height in 1..=blocks {
            let block = store.block(height).unwrap().unwrap();
            out.push(format!("{:?} {:?}", store.height_of(&block.digest()).unwrap(), store.finalization(height).unwrap()));
            out.extend(block.txs.iter().map(|tx| format!("{:?}", store.tx_location(&tx.hash()).unwrap())));
            let (value, proof) = store.prove(&keys::account(&address(2)), height).unwrap();
            verify_proof(&block.state_root, &keys::account(&address(2)), value.as_deref(), &proof).unwrap();
        }
        out
    }

    /// The state file is made durable only at checkpoints: a crash loses what was written to it
    /// since, and the next open re-executes those blocks from the block file. Shown here by
    /// putting back a copy of the state file taken after block 2 under a store at block 5.
    #[test]
    fn state_lost_since_a_checkpoint_is_rebuilt_from_the_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let store = ChainStore::open(&path, &genesis()).unwrap();
        commit_rounds(&store, 0..2);
        drop(store); // checkpoints
        let at_block_2 = dir.path().join("state-at-2.redb");
        std::fs::copy(&path, &at_block_2).unwrap();

        let store = ChainStore::open(&path, &genesis()).unwrap();
        commit_rounds(&store, 2..5);
        let expected = answers(&store, 5);
        drop(store);
        std::fs::copy(&at_block_2, &path).unwrap();
        let store = ChainStore::open(&path, &genesis()).unwrap();
        assert_eq!(answers(&store, 5), expected, "blocks 3 to 5 re-executed");
        commit_rounds(&store, 5..6);
        let expected = answers(&store, 6);
        drop(store);

        // Even a lost state file only costs re-executing the chain.
        std::fs::remove_file(&path).unwrap();
        let store = ChainStore::open(&path, &genesis()).unwrap();
        assert_eq!(answers(&store, 6), expected, "all six blocks re-executed");
        drop(store);

        // A lost block file cannot be rebuilt: the store says so rather than forgetting the chain.
        std::fs::remove_file(block_file(&path)).unwrap();
        let error = ChainStore::open(&path, &genesis()).err().expect("a state file without its blocks must not open");
        assert!(error.to_string().contains("missing blocks 1 to 6"), "{error}");
    }

    /// A store from before the block file existed keeps blocks in its state file; opening it
    /// moves them out, and every answer stays the same.
    #[test]
    fn a_store_with_blocks_in_its_state_file_moves_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let store = ChainStore::open(&path, &genesis()).unwrap();
        commit_rounds(&store, 0..3);
        let expected = answers(&store, 3);
        drop(store);
        // Put the block file's tables back into the state file, as the old layout had them.
        {
            let blocks = Database::open(block_file(&path)).unwrap();
            let state = Database::open(&path).unwrap();
            let (read, write) = (blocks.begin_read().unwrap(), state.begin_write().unwrap());
            copy_table(&read, &write, BLOCKS).unwrap();
            copy_table(&read, &write, DIGESTS).unwrap();
            copy_table(&read, &write, FINALIZATIONS).unwrap();
            write.commit().unwrap();
        }
        std::fs::remove_file(block_file(&path)).unwrap();

        let store = ChainStore::open(&path, &genesis()).unwrap();
        assert_eq!(answers(&store, 3), expected);
        drop(store);
        let state = Database::open(&path).unwrap();
        let read = state.begin_read().unwrap();
        assert!(matches!(read.open_table(BLOCKS), Err(redb::TableError::TableDoesNotExist(_))), "the blocks left the state file");
    }

    /// Account histories are one row per account and block; stores written when they were one
    /// row per transaction read the same, also with both layouts in one store and across pages.
    #[test]
    fn account_history_reads_rows_of_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChainStore::open(&dir.path().join("chain.redb"), &genesis()).unwrap();
        commit_rounds(&store, 0..4);
        let pages = |store: &ChainStore| -> Vec<Vec<TxHash>> {
            let mut out = vec![store.account_txs(&address(1), 100, 0).unwrap()];
            for (limit, offset) in [(1, 0), (1, 1), (3, 1), (2, 5), (10, 7), (10, 8)] {
                out.push(store.account_txs(&address(1), limit, offset).unwrap());
            }
            out
        };
        let expected = pages(&store);
        assert_eq!(expected[0].len(), 8, "address 1 sent two transfers in each of 4 blocks");
        assert_eq!(expected[0][0], store.block(4).unwrap().unwrap().txs[1].hash(), "newest first");
        // Rewrite blocks 1 and 2 of address 1's history in the old layout.
        {
            let write = store.state.begin_write().unwrap();
            {
                let mut table = write.open_table(ACCOUNT_TXS).unwrap();
                for height in 1..=2u64 {
                    table.remove(history_key(&address(1), height).as_slice()).unwrap().expect("a row per block");
                    for (index, tx) in store.block(height).unwrap().unwrap().txs.iter().enumerate() {
                        let key = [&address(1).0[..], &height.to_be_bytes(), &(index as u32).to_be_bytes()].concat();
                        table.insert(key.as_slice(), tx.hash().0.as_slice()).unwrap();
                    }
                }
            }
            write.commit().unwrap();
        }
        assert_eq!(pages(&store), expected);
    }

    #[test]
    fn same_transactions_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let a = ChainStore::open(&dir.path().join("a.redb"), &genesis()).unwrap();
        let b = ChainStore::open(&dir.path().join("b.redb"), &genesis()).unwrap();
        let txs = vec![transfer(1, 0, address(2), 7), transfer(1, 1, address(2), 9)];
        let (_, ea) = a.execute(txs.clone(), Mode::Strict).unwrap();
        let (_, eb) = b.execute(txs, Mode::Strict).unwrap();
        assert_eq!(ea.state_root, eb.state_root);
        assert_ne!(ea.state_root, a.tip().state_root);
    }
}
