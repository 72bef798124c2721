//! What the instance shows the network: published DAGs, in `store.redb`.
//!
//! * `published`: root CID bytes → the namespace that published it.
//! * `served_by_block` / `served_by_root`: block ↔ root, multimaps written together when a root
//!   is published, so answering a peer's want is one point read and unpublishing never scans.
//!
//! Private by default: a block is served to a foreign peer only while some published root's DAG
//! holds it, or when it belongs to an OrbitDB database (whose address is its read capability) (and it is still here: garbage collection of an unpinned DAG stops serving it).

use redb::{MultimapTableDefinition, ReadableDatabase, TableDefinition};
use selfcloud_ipfs::Cid;

use crate::store::{Store, StoreError};

const PUBLISHED: TableDefinition<&[u8], &str> = TableDefinition::new("published");
const SERVED_BY_BLOCK: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("served_by_block");
const SERVED_BY_ROOT: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("served_by_root");

/// Create the tables (at open, so read transactions always find them).
pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PUBLISHED)?;
    txn.open_multimap_table(SERVED_BY_BLOCK)?;
    txn.open_multimap_table(SERVED_BY_ROOT)?;
    Ok(())
}

impl Store {
    /// Publish the DAG under `root` (all of it must be here) on behalf of `namespace`.
    /// Publishing again is a no-op. Returns the number of blocks now served for it.
    pub fn publish(&self, namespace: &str, root: &Cid) -> Result<u64, StoreError> {
        let mut blocks = Vec::new();
        selfcloud_ipfs::export::walk(self, *root, |cid, _| {
            blocks.push(cid.to_bytes());
            Ok(())
        })
        .map_err(|e| StoreError::Dag(e.to_string()))?;
        let key = root.to_bytes();
        let txn = self.db.begin_write()?;
        {
            txn.open_table(PUBLISHED)?.insert(key.as_slice(), namespace)?;
            let mut by_block = txn.open_multimap_table(SERVED_BY_BLOCK)?;
            let mut by_root = txn.open_multimap_table(SERVED_BY_ROOT)?;
            for block in &blocks {
                by_block.insert(block.as_slice(), key.as_slice())?;
                by_root.insert(key.as_slice(), block.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(blocks.len() as u64)
    }

    /// Who published `root`, if anyone.
    pub fn publisher(&self, root: &Cid) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(PUBLISHED)?.get(root.to_bytes().as_slice())?.map(|v| v.value().to_owned()))
    }

    /// Stop serving `root`'s DAG (blocks shared with another published root stay served).
    /// `false` when it was not published.
    pub fn unpublish(&self, root: &Cid) -> Result<bool, StoreError> {
        let key = root.to_bytes();
        let txn = self.db.begin_write()?;
        let existed = {
            let existed = txn.open_table(PUBLISHED)?.remove(key.as_slice())?.is_some();
            let mut by_block = txn.open_multimap_table(SERVED_BY_BLOCK)?;
            let mut by_root = txn.open_multimap_table(SERVED_BY_ROOT)?;
            for block in by_root.remove_all(key.as_slice())? {
                by_block.remove(block?.value(), key.as_slice())?;
            }
            existed
        };
        txn.commit()?;
        Ok(existed)
    }

    /// The block under `cid` if a published DAG holds it and it is here.
    pub fn served_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let published = {
            let txn = self.db.begin_read()?;
            let by_block = txn.open_multimap_table(SERVED_BY_BLOCK)?;
            let mut roots = by_block.get(cid.to_bytes().as_slice())?;
            roots.next().is_some()
        };
        if !published {
            // Database blocks (entries, identities, manifests, access controllers) are served to
            // whoever asks by hash: a database's address is its read capability, as in OrbitDB.
            return crate::orbit::block(self, cid);
        }
        self.block(cid)
    }
}

/// The p2p node's view of the store: published blocks only.
pub struct Served(pub std::sync::Arc<Store>);

impl selfcloud_p2p::Blocks for Served {
    fn served(&self, cid: &Cid) -> Option<Vec<u8>> {
        match self.0.served_block(cid) {
            Ok(block) => block,
            Err(e) => {
                tracing::error!(%cid, error = %e, "reading a published block");
                None
            }
        }
    }
}
