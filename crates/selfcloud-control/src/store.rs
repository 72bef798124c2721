//! The control store: one redb file, JSON records (see [`crate::model`]).
//!
//! Every write commits with redb's default immediate durability, so an acknowledged sign-up, grant
//! or revocation survives a crash. Tables are keyed by plain strings; composite keys join their
//! parts with `\0`, which no validated name contains.

use std::fmt::Write as _;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{Account, App, AuditEntry, AuthCode, Grant, RefreshToken};
use crate::Error;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const ACCOUNTS: Table = TableDefinition::new("accounts");
const APPS: Table = TableDefinition::new("apps");
const GRANTS: Table = TableDefinition::new("grants");
const CODES: Table = TableDefinition::new("codes");
const REFRESH: Table = TableDefinition::new("refresh");
/// Revoked things, keyed `{kind}\0{id}` (kind: `family`, `token`, `session`), value = expiry secs.
const REVOKED: Table = TableDefinition::new("revoked");
const META: Table = TableDefinition::new("meta");
/// `{username}\0{seq:020}` → entry JSON.
const AUDIT: Table = TableDefinition::new("audit");

const ALL_TABLES: [Table; 8] = [ACCOUNTS, APPS, GRANTS, CODES, REFRESH, REVOKED, META, AUDIT];

/// What happened when a refresh token was presented.
#[derive(Debug)]
pub enum RefreshUse {
    /// First use: it is now spent; mint its successor.
    Fresh(RefreshToken),
    /// Presented again after rotation: the family must be revoked.
    Reused(RefreshToken),
    /// Unknown.
    Missing,
}

/// Kinds of revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevokedKind {
    /// A refresh-token family (and every access token minted from it).
    Family,
    /// One access token, by biscuit revocation id (hex).
    Token,
    /// An owner session.
    Session,
}

impl RevokedKind {
    fn as_str(self) -> &'static str {
        match self {
            RevokedKind::Family => "family",
            RevokedKind::Token => "token",
            RevokedKind::Session => "session",
        }
    }
    fn parse(value: &str) -> Option<RevokedKind> {
        match value {
            "family" => Some(RevokedKind::Family),
            "token" => Some(RevokedKind::Token),
            "session" => Some(RevokedKind::Session),
            _ => None,
        }
    }
}

/// The control store.
pub struct ControlStore {
    db: Database,
}

fn join(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

impl ControlStore {
    /// Open or create `control.redb` at `path`.
    pub fn open(path: &Path) -> Result<ControlStore, Error> {
        let db = Database::builder().set_cache_size(16 << 20).create(path)?;
        let txn = db.begin_write()?;
        for table in ALL_TABLES {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(ControlStore { db })
    }

    fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, Error> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let Some(v) = t.get(key)? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(v.value())?))
    }

    fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)?;
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(&self, table: Table, prefix: &str) -> Result<Vec<(String, T)>, Error> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.range(prefix..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    // ----- accounts -----

    /// Create an account, assigning the next free instance uid. Fails if the name is taken.
    pub fn create_account(&self, mut account: Account, uid_base: u32, uid_count: u32) -> Result<Account, Error> {
        let txn = self.db.begin_write()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.get(account.username.as_str())?.is_some() {
                return Err(Error::AlreadyExists(format!("user {}", account.username)));
            }
            let mut meta = txn.open_table(META)?;
            let next = meta.get("next_uid_offset")?.map(|v| decode_u64(v.value())).unwrap_or(0);
            if next >= u64::from(uid_count) {
                return Err(Error::Invalid("the instance uid range is exhausted; raise SELFCLOUD_INSTANCE_UID_COUNT".into()));
            }
            account.uid = uid_base + next as u32;
            meta.insert("next_uid_offset", (next + 1).to_le_bytes().as_slice())?;
            accounts.insert(account.username.as_str(), serde_json::to_vec(&account)?.as_slice())?;
        }
        txn.commit()?;
        Ok(account)
    }

    /// An account.
    pub fn account(&self, username: &str) -> Result<Option<Account>, Error> {
        self.get(ACCOUNTS, username)
    }

    /// Every account (loaded once at start-up into the gateway's memory).
    pub fn accounts(&self) -> Result<Vec<Account>, Error> {
        Ok(self.scan::<Account>(ACCOUNTS, "")?.into_iter().map(|(_, a)| a).collect())
    }

    /// Delete an account, its wrapped data key (crypto-shredding), its grants and its log.
    pub fn delete_account(&self, username: &str) -> Result<(), Error> {
        let prefix = join(username, "");
        let txn = self.db.begin_write()?;
        {
            txn.open_table(ACCOUNTS)?.remove(username)?;
            for table in [GRANTS, AUDIT] {
                let mut t = txn.open_table(table)?;
                let keys: Vec<String> = t
                    .range(prefix.as_str()..)?
                    .map_while(|e| e.ok().map(|(k, _)| k.value().to_owned()).filter(|k| k.starts_with(&prefix)))
                    .collect();
                for k in keys {
                    t.remove(k.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    // ----- apps -----

    /// Register an app.
    pub fn create_app(&self, app: &App) -> Result<(), Error> {
        self.put(APPS, &app.app_id, app)
    }

    /// An app.
    pub fn app(&self, app_id: &str) -> Result<Option<App>, Error> {
        self.get(APPS, app_id)
    }

    // ----- grants -----

    /// The grant of `app_id` on `username`'s instance.
    pub fn grant(&self, username: &str, app_id: &str) -> Result<Option<Grant>, Error> {
        self.get(GRANTS, &join(username, app_id))
    }

    /// Every grant of a user, with app ids.
    pub fn grants_of(&self, username: &str) -> Result<Vec<(String, Grant)>, Error> {
        let prefix = join(username, "");
        Ok(self.scan::<Grant>(GRANTS, &prefix)?.into_iter().map(|(k, g)| (k[prefix.len()..].to_owned(), g)).collect())
    }

    /// Every grant on the host: `(username, app_id, grant)`.
    pub fn all_grants(&self) -> Result<Vec<(String, String, Grant)>, Error> {
        Ok(self
            .scan::<Grant>(GRANTS, "")?
            .into_iter()
            .filter_map(|(k, g)| k.split_once('\0').map(|(u, a)| (u.to_owned(), a.to_owned(), g)))
            .collect())
    }

    /// Add scopes to a grant (incremental consent), creating or re-activating it; a given
    /// `chain_daily_limit` (base units) replaces the one in force.
    pub fn add_to_grant(&self, username: &str, app_id: &str, scopes: &[String], chain_daily_limit: Option<u128>) -> Result<Grant, Error> {
        let key = join(username, app_id);
        let now = selfcloud_core::unix_now();
        let txn = self.db.begin_write()?;
        let grant;
        {
            let mut t = txn.open_table(GRANTS)?;
            let existing: Option<Grant> = t.get(key.as_str())?.map(|v| serde_json::from_slice(v.value())).transpose()?;
            let mut g = existing.unwrap_or(Grant { scopes: Vec::new(), generation: 0, active: true, created_at: now, updated_at: now, chain_daily_limit: None });
            if !g.active {
                // A revoked grant starts over: old scopes and limits are not silently restored.
                g.scopes.clear();
                g.chain_daily_limit = None;
                g.active = true;
            }
            if let Some(limit) = chain_daily_limit {
                g.chain_daily_limit = Some(limit.to_string());
            }
            for s in scopes {
                if !g.scopes.contains(s) {
                    g.scopes.push(s.clone());
                }
            }
            g.scopes.sort();
            g.updated_at = now;
            t.insert(key.as_str(), serde_json::to_vec(&g)?.as_slice())?;
            grant = g;
        }
        txn.commit()?;
        Ok(grant)
    }

    /// Revoke a grant: bump its generation so every token minted under it stops working.
    pub fn revoke_grant(&self, username: &str, app_id: &str) -> Result<Option<Grant>, Error> {
        let key = join(username, app_id);
        let txn = self.db.begin_write()?;
        let out;
        {
            let mut t = txn.open_table(GRANTS)?;
            let existing: Option<Grant> = t.get(key.as_str())?.map(|v| serde_json::from_slice(v.value())).transpose()?;
            out = match existing {
                Some(mut g) if g.active => {
                    g.active = false;
                    g.generation += 1;
                    g.updated_at = selfcloud_core::unix_now();
                    t.insert(key.as_str(), serde_json::to_vec(&g)?.as_slice())?;
                    Some(g)
                }
                _ => None,
            };
        }
        txn.commit()?;
        Ok(out)
    }

    // ----- authorization codes -----

    /// Store a new code under its hash.
    pub fn put_code(&self, code_hash: &str, code: &AuthCode) -> Result<(), Error> {
        self.put(CODES, code_hash, code)
    }

    /// Redeem a code: returns it and whether it had already been redeemed (by which family).
    /// Marks it redeemed by `family` atomically, so two racing exchanges cannot both win.
    pub fn redeem_code(&self, code_hash: &str, family: &str) -> Result<Option<AuthCode>, Error> {
        let txn = self.db.begin_write()?;
        let out;
        {
            let mut t = txn.open_table(CODES)?;
            let existing: Option<AuthCode> = t.get(code_hash)?.map(|v| serde_json::from_slice(v.value())).transpose()?;
            out = existing.clone();
            if let Some(mut code) = existing {
                if code.used_by_family.is_none() {
                    code.used_by_family = Some(family.to_owned());
                    t.insert(code_hash, serde_json::to_vec(&code)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(out)
    }

    // ----- refresh tokens -----

    /// Store a refresh token under its hash.
    pub fn put_refresh(&self, token_hash: &str, token: &RefreshToken) -> Result<(), Error> {
        self.put(REFRESH, token_hash, token)
    }

    /// Look up a refresh token without spending it (introspection, revocation).
    pub fn refresh(&self, token_hash: &str) -> Result<Option<RefreshToken>, Error> {
        self.get(REFRESH, token_hash)
    }

    /// Present a refresh token: spends it atomically.
    pub fn use_refresh(&self, token_hash: &str) -> Result<RefreshUse, Error> {
        let txn = self.db.begin_write()?;
        let out;
        {
            let mut t = txn.open_table(REFRESH)?;
            let existing: Option<RefreshToken> = t.get(token_hash)?.map(|v| serde_json::from_slice(v.value())).transpose()?;
            out = match existing {
                None => RefreshUse::Missing,
                Some(token) if token.used => RefreshUse::Reused(token),
                Some(mut token) => {
                    token.used = true;
                    t.insert(token_hash, serde_json::to_vec(&token)?.as_slice())?;
                    token.used = false;
                    RefreshUse::Fresh(token)
                }
            };
        }
        txn.commit()?;
        Ok(out)
    }

    // ----- revocations -----

    /// Record a revocation (kept until `expires_at`, after which the token is dead anyway).
    pub fn revoke(&self, kind: RevokedKind, id: &str, expires_at: u64) -> Result<(), Error> {
        self.put(REVOKED, &join(kind.as_str(), id), &expires_at)
    }

    /// Every live revocation, to load the gateway's in-memory deny lists at start-up.
    pub fn revocations(&self) -> Result<Vec<(RevokedKind, String)>, Error> {
        let now = selfcloud_core::unix_now();
        Ok(self
            .scan::<u64>(REVOKED, "")?
            .into_iter()
            .filter(|(_, exp)| *exp >= now)
            .filter_map(|(k, _)| {
                let (kind, id) = k.split_once('\0')?;
                Some((RevokedKind::parse(kind)?, id.to_owned()))
            })
            .collect())
    }

    // ----- housekeeping -----

    /// Deletes what can no longer be used: refresh tokens and revocations past their expiry, and
    /// authorization codes a day past theirs (kept that long so a late replay is still known as a
    /// replay and revokes what the code produced). Run periodically; everything else the store
    /// holds is live (accounts, apps, grants) or the user's history (the access log).
    pub fn prune_expired(&self, now: u64) -> Result<Pruned, Error> {
        /// The one field pruning reads of a stored code or refresh token.
        #[derive(serde::Deserialize)]
        struct Expiry {
            expires_at: u64,
        }
        let expired_after = |grace: u64| {
            move |_: &str, v: &[u8]| match serde_json::from_slice::<Expiry>(v) {
                Ok(e) => e.expires_at.saturating_add(grace) >= now,
                // Unreadable rows are kept (and never handed out as valid: their readers fail).
                Err(_) => true,
            }
        };
        let txn = self.db.begin_write()?;
        let mut pruned = Pruned::default();
        {
            let mut codes = txn.open_table(CODES)?;
            let before = codes.len()?;
            codes.retain(expired_after(CODE_REPLAY_MEMORY_SECS))?;
            pruned.codes = before - codes.len()?;
            let mut refresh = txn.open_table(REFRESH)?;
            let before = refresh.len()?;
            refresh.retain(expired_after(0))?;
            pruned.refresh_tokens = before - refresh.len()?;
            let mut revoked = txn.open_table(REVOKED)?;
            let before = revoked.len()?;
            revoked.retain(|_, v| serde_json::from_slice::<u64>(v).map_or(true, |exp| exp >= now))?;
            pruned.revocations = before - revoked.len()?;
        }
        txn.commit()?;
        Ok(pruned)
    }

    /// Deletes access-log entries older than `before_ms`. Each user's log is in time order, so a
    /// user's scan stops at its first entry to keep: the cost follows what is deleted, not the
    /// log's length. Returns how many entries went.
    pub fn prune_audit(&self, before_ms: u64) -> Result<u64, Error> {
        /// The one field pruning reads of an entry.
        #[derive(serde::Deserialize)]
        struct When {
            time_ms: u64,
        }
        /// Keys removed per pass, so memory stays bounded on a first prune of a long log.
        const PASS_KEYS_MAX: usize = 10_000;
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut t = txn.open_table(AUDIT)?;
            let mut from = String::new();
            loop {
                let mut old: Vec<String> = Vec::new();
                let mut next_user = None;
                for row in t.range(from.as_str()..)? {
                    let (k, v) = row?;
                    let key = k.value();
                    // An unreadable entry is kept, as is everything after it in that user's log.
                    match serde_json::from_slice::<When>(v.value()) {
                        Ok(when) if when.time_ms < before_ms => old.push(key.to_owned()),
                        _ => {
                            let user = key.split_once('\0').map_or(key, |(user, _)| user);
                            next_user = Some(format!("{user}\u{1}"));
                            break;
                        }
                    }
                    if old.len() >= PASS_KEYS_MAX {
                        break;
                    }
                }
                let full = old.len() >= PASS_KEYS_MAX;
                for key in &old {
                    t.remove(key.as_str())?;
                }
                removed += old.len() as u64;
                match next_user {
                    Some(next) => from = next,
                    // A full pass goes on from where it stopped (its keys are gone now).
                    None if full => {}
                    None => break,
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    // ----- access log -----

    /// Append entries (assigning sequence numbers) in one transaction.
    pub fn append_audit(&self, entries: &mut [(String, AuditEntry)]) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut seq = meta.get("audit_seq")?.map(|v| decode_u64(v.value())).unwrap_or(0);
            let mut t = txn.open_table(AUDIT)?;
            // One key and one value buffer for the whole batch (thousands of entries a second).
            let (mut key, mut value) = (String::new(), Vec::new());
            for (user, entry) in entries.iter_mut() {
                seq += 1;
                entry.seq = seq;
                key.clear();
                let _ = write!(key, "{user}\0{seq:020}"); // a String takes every write
                value.clear();
                serde_json::to_writer(&mut value, entry)?;
                t.insert(key.as_str(), value.as_slice())?;
            }
            meta.insert("audit_seq", seq.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A user's log, newest first, entries with `seq < before` (all when `None`), at most `limit`.
    pub fn audit(&self, username: &str, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let low = format!("{username}\0");
        let high = match before {
            Some(seq) => format!("{username}\0{seq:020}"),
            None => format!("{username}\u{1}"),
        };
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in t.range(low.as_str()..high.as_str())?.rev() {
            let (_, v) = entry?;
            out.push(serde_json::from_slice(v.value())?);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

/// How long an exchanged or expired authorization code is remembered after its expiry.
const CODE_REPLAY_MEMORY_SECS: u64 = 24 * 3600;

/// What [`ControlStore::prune_expired`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Authorization codes.
    pub codes: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Revocations.
    pub revocations: u64,
}

fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthCode, RefreshToken};

    fn code(expires_at: u64) -> AuthCode {
        AuthCode { username: "alice".into(), app_id: "app".into(), scopes: vec![], redirect_uri: "http://127.0.0.1/cb".into(), code_challenge: "c".into(), expires_at, used_by_family: None, generation: 1 }
    }

    fn refresh(expires_at: u64) -> RefreshToken {
        RefreshToken { family: "f".into(), username: "alice".into(), app_id: "app".into(), scopes: vec![], generation: 1, expires_at, used: true }
    }

    #[test]
    fn pruning_drops_only_what_can_no_longer_be_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = ControlStore::open(&dir.path().join("control.redb")).unwrap();
        let now = 1_000_000;
        store.put_code("old", &code(now - CODE_REPLAY_MEMORY_SECS - 1)).unwrap();
        store.put_code("recent", &code(now - 60)).unwrap(); // expired, still remembered as a replay
        store.put_code("live", &code(now + 60)).unwrap();
        store.put_refresh("spent-expired", &refresh(now - 1)).unwrap();
        store.put_refresh("live", &refresh(now + 1)).unwrap();
        store.revoke(RevokedKind::Token, "gone", now - 1).unwrap();
        store.revoke(RevokedKind::Token, "kept", now + 1).unwrap();

        let pruned = store.prune_expired(now).unwrap();
        assert_eq!(pruned, Pruned { codes: 1, refresh_tokens: 1, revocations: 1 });
        assert!(store.redeem_code("old", "x").unwrap().is_none());
        assert!(store.redeem_code("recent", "x").unwrap().is_some());
        assert!(store.redeem_code("live", "x").unwrap().is_some());
        assert!(store.refresh("spent-expired").unwrap().is_none());
        assert!(store.refresh("live").unwrap().is_some());
        assert!(store.prune_expired(now).unwrap() == Pruned::default(), "a second pass finds nothing");
    }

    fn entry(time_ms: u64) -> AuditEntry {
        AuditEntry { seq: 0, time_ms, app: "app".into(), method: "GET".into(), route: "/v1/info".into(), decision: "allowed".into(), code: None, status: 200, request_id: "r".into(), chain_tx: None }
    }

    #[test]
    fn access_log_pruning_drops_each_users_old_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ControlStore::open(&dir.path().join("control.redb")).unwrap();
        // Users whose names prefix one another, interleaved in time; "al" has only old entries,
        // "bob" only new ones; "alice" has more old entries than one pass removes.
        let mut batch: Vec<(String, AuditEntry)> = Vec::new();
        for i in 0..25_000u64 {
            batch.push(("alice".into(), entry(i)));
            if i % 1000 == 0 {
                batch.push(("al".into(), entry(i)));
                batch.push(("bob".into(), entry(1_000_000 + i)));
            }
        }
        for i in 0..10u64 {
            batch.push(("alice".into(), entry(1_000_000 + i)));
        }
        store.append_audit(&mut batch).unwrap();

        assert_eq!(store.prune_audit(20_000).unwrap(), 20_000 + 20);
        let alice = store.audit("alice", None, 100_000).unwrap();
        assert_eq!(alice.len(), 5_000 + 10);
        assert!(alice.iter().all(|e| e.time_ms >= 20_000), "only newer entries are left");
        assert_eq!(store.audit("al", None, 100).unwrap().iter().map(|e| e.time_ms).collect::<Vec<_>>(), vec![24_000, 23_000, 22_000, 21_000, 20_000], "newest first");
        assert_eq!(store.audit("bob", None, 100).unwrap().len(), 25);
        assert_eq!(store.prune_audit(20_000).unwrap(), 0, "a second pass finds nothing");
        // Sequence numbers keep counting after a prune: a cursor never points at a reused number.
        let mut more = vec![("alice".to_owned(), entry(2_000_000))];
        store.append_audit(&mut more).unwrap();
        assert!(more[0].1.seq > alice[0].seq);
    }
}
