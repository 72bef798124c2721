//! Where OrbitDB state lives in `store.redb`, and how its keys are spelled.
//!
//! A database is held by one namespace (an app's, or the owner's); its key `db` is
//! `"{namespace}\0{cid}"` (`cid` is the `zdpu…` part of `/orbitdb/<cid>`), so two apps that open
//! the same address keep two replicas that never see each other's state.
//!
//! * `orbit_blocks`: `zdpu… → sealed block` — entries, identities, manifests and access
//!   controllers, shared by content (a block holds no namespace).
//! * `orbit_dbs`: `db → sealed JSON` [`DbInfo`](super::DbInfo).
//! * `orbit_heads`: `db → sealed JSON [hash, …]`.
//! * `orbit_members`: `"{db}\0{hash}" → order key` — which entries the log holds, and where.
//! * `orbit_order`: `order key → hash`, with order key = `db \0 time (8 bytes BE) clock-id \0 hash`:
//!   the log in OrbitDB's order (clock time, then clock id), so a range read is an iterator.
//! * `orbit_index`: `"{db}\0{key}" → sealed JSON` [`Indexed`](super::Indexed) — the current value
//!   of each key (keyvalue) or document (documents), tombstones included, so reopening a log of any
//!   length reads its state instead of replaying it.

use redb::TableDefinition;

pub(crate) const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("orbit_blocks");
pub(crate) const DBS: TableDefinition<&str, &[u8]> = TableDefinition::new("orbit_dbs");
pub(crate) const HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("orbit_heads");
pub(crate) const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orbit_members");
pub(crate) const ORDER: TableDefinition<&[u8], &str> = TableDefinition::new("orbit_order");
pub(crate) const INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("orbit_index");

/// Create the tables (at open, so read transactions always find them).
pub(crate) fn create(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(BLOCKS)?;
    txn.open_table(DBS)?;
    txn.open_table(HEADS)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(ORDER)?;
    txn.open_table(INDEX)?;
    Ok(())
}

/// The key of a database held by `namespace`.
pub(crate) fn db_key(namespace: &str, cid: &str) -> String {
    format!("{namespace}\0{cid}")
}

/// The key of `suffix` (an entry hash or a store key) under a database.
pub(crate) fn under(db: &str, suffix: &str) -> String {
    format!("{db}\0{suffix}")
}

/// An entry's place in its database's order.
pub(crate) fn order_key(db: &str, time: u64, clock_id: &str, hash: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(db.len() + 10 + clock_id.len() + hash.len());
    key.extend_from_slice(db.as_bytes());
    key.push(0);
    key.extend_from_slice(&time.to_be_bytes());
    key.extend_from_slice(clock_id.as_bytes());
    key.push(0);
    key.extend_from_slice(hash.as_bytes());
    key
}

/// The range of order keys of one database: `[db \0, db \1)`.
pub(crate) fn order_range(db: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = db.as_bytes().to_vec();
    start.push(0);
    let mut end = db.as_bytes().to_vec();
    end.push(1);
    (start, end)
}

/// The additional data a sealed value is bound to: its table and key, so a value cannot be moved
/// to another row (another app's database) and still open.
pub(crate) fn aad(table: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.len() + 1 + key.len());
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}
