//! Access tokens: biscuits signed by the host's token key, verified offline on every request.
//!
//! An app token's authority block states `kind("app")`, `user(…)` (the instance = audience),
//! `app(…)`, one `scope(…)` per scope, `generation(…)` (of the grant) and `family(…)` (of its
//! refresh chain), plus `check if time($t), $t < {exp}`. Owner tokens state `kind("owner")` and
//! `session(…)`. Biscuit lets a holder append blocks to attenuate a token; facts from appended
//! blocks are never trusted here (queries read the authority block only), so attenuation can only
//! narrow a token through its checks.
//!
//! Verification is signature + datalog + deny lists. The first two are pure functions of the token
//! bytes, so their result is cached (bounded, recently used kept) by the token's SHA-256; the deny lists (revoked
//! token ids, revoked refresh families, signed-out sessions, revoked grant generations) live in
//! memory and are consulted on every request, which is why revocation bites at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use biscuit_auth::builder::{self, Term};
use biscuit_auth::{AuthorizerBuilder, Biscuit, KeyPair, PrivateKey, PublicKey};
use selfcloud_core::Scope;
use sha2::{Digest, Sha256};

/// Datalog run limits for checking a token. biscuit-auth's default wall-clock limit is 1 ms for
/// the whole check, and every `query` re-counts it: on a loaded host a preempted thread blew it
/// and a good token was refused as malformed (CI's flaky 401s). The fact and iteration limits
/// bound the work; the time limit only has to catch a runaway, so it is generous.
const RUN_LIMITS: biscuit_auth::AuthorizerLimits = biscuit_auth::AuthorizerLimits { max_facts: 1000, max_iterations: 100, max_time: std::time::Duration::from_millis(250) };

/// Verified tokens remembered at most (two generations of half as many; see [`Generations`]).
const CACHE_ENTRIES_MAX: usize = 65_536;
/// Longest token accepted, bytes (bounds parsing work on garbage).
pub const TOKEN_BYTES_MAX: usize = 4096;

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The instance owner, in a session.
    Owner {
        /// The session id.
        session: String,
    },
    /// An app under a grant.
    App {
        /// The app.
        app_id: String,
        /// Scopes granted.
        scopes: Vec<Scope>,
        /// The grant generation the token was minted under.
        generation: u64,
        /// The refresh family.
        family: String,
    },
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The instance (audience).
    pub username: String,
    /// The account id the token was minted for.
    pub account: String,
    /// Who.
    pub subject: Subject,
    /// Expiry, seconds.
    pub expires_at: u64,
    /// Issue time, seconds.
    pub issued_at: u64,
    /// Biscuit revocation ids, hex.
    pub revocation_ids: Vec<String>,
}

impl Claims {
    /// Whether the token carries `scope` (owners carry all).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.subject {
            Subject::Owner { .. } => true,
            Subject::App { scopes, .. } => scopes.contains(&scope),
        }
    }
    /// The app id, or `None` for the owner.
    pub fn app_id(&self) -> Option<&str> {
        match &self.subject {
            Subject::Owner { .. } => None,
            Subject::App { app_id, .. } => Some(app_id),
        }
    }
}

/// Why a token was refused. The client only ever sees `UNAUTHENTICATED`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token we signed, or tampered with.
    #[error("the token is malformed or its signature does not verify")]
    Invalid,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Revoked (directly, by family, by session, or by grant revocation).
    #[error("the token has been revoked")]
    Revoked,
}

/// Grant state as the deny list needs it.
#[derive(Debug, Clone, Copy)]
struct GrantState {
    generation: u64,
    active: bool,
}

#[derive(Default)]
struct DenyLists {
    token_ids: HashSet<String>,
    families: HashSet<String>,
    sessions: HashSet<String>,
    /// Keyed `{username}\0{app_id}`, so a lookup needs one short-lived key, not two clones.
    grants: HashMap<String, GrantState>,
}

/// Mints and verifies tokens.
pub struct Tokens {
    root: KeyPair,
    public: PublicKey,
    cache: Mutex<Generations<Arc<Claims>>>,
    deny: RwLock<DenyLists>,
}

impl Tokens {
    /// Tokens signed with the ed25519 seed `signing_seed`.
    pub fn new(signing_seed: &[u8; 32]) -> Result<Tokens, String> {
        let private = PrivateKey::from_bytes(signing_seed, builder::Algorithm::Ed25519).map_err(|e| e.to_string())?;
        let root = KeyPair::from(&private);
        let public = root.public();
        Ok(Tokens { root, public, cache: Mutex::new(Generations::new(CACHE_ENTRIES_MAX / 2)), deny: RwLock::new(DenyLists::default()) })
    }

    /// Mint an owner token.
    pub fn mint_owner(&self, username: &str, account: &str, session: &str, ttl: Duration) -> Result<(String, u64), String> {
        let mut params = HashMap::new();
        params.insert("session".to_owned(), builder::string(session));
        self.mint("kind(\"owner\"); session({session});".to_owned(), params, username, account, ttl)
    }

    /// Mint an app token.
    #[allow(clippy::too_many_arguments)]
    pub fn mint_app(&self, username: &str, account: &str, app_id: &str, scopes: &[Scope], generation: u64, family: &str, ttl: Duration) -> Result<(String, u64), String> {
        let mut params = HashMap::new();
        params.insert("app".to_owned(), builder::string(app_id));
        params.insert("family".to_owned(), builder::string(family));
        params.insert("generation".to_owned(), builder::int(generation as i64));
        let mut code = String::from("kind(\"app\"); app({app}); family({family}); generation({generation});");
        for (i, scope) in scopes.iter().enumerate() {
            params.insert(format!("s{i}"), builder::string(scope.as_str()));
            code.push_str(&format!(" scope({{s{i}}});"));
        }
        self.mint(code, params, username, account, ttl)
    }

    fn mint(&self, mut code: String, mut params: HashMap<String, Term>, username: &str, account: &str, ttl: Duration) -> Result<(String, u64), String> {
        let now = selfcloud_core::unix_now();
        let expires_at = now + ttl.as_secs();
        params.insert("user".to_owned(), builder::string(username));
        params.insert("account".to_owned(), builder::string(account));
        params.insert("exp".to_owned(), builder::date(&(UNIX_EPOCH + Duration::from_secs(expires_at))));
        params.insert("exp_unix".to_owned(), builder::int(expires_at as i64));
        params.insert("iat".to_owned(), builder::int(now as i64));
        // A random nonce makes every token distinct even when minted twice in one second.
        params.insert("nonce".to_owned(), builder::string(&selfcloud_core::random_token()));
        code.push_str(" user({user}); account({account}); expires({exp_unix}); issued({iat}); nonce({nonce}); check if time($t), $t < {exp};");
        let token = Biscuit::builder()
            .code_with_params(code, params, HashMap::new())
            .map_err(|e| e.to_string())?
            .build(&self.root)
            .map_err(|e| e.to_string())?;
        Ok((token.to_base64().map_err(|e| e.to_string())?, expires_at))
    }

    /// Verify a token: signature, expiry, then the deny lists.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let claims = self.verify_signed(token)?;
        if claims.expires_at <= selfcloud_core::unix_now() {
            return Err(TokenError::Expired);
        }
        if self.is_denied(&claims) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Signature and datalog only (cached); no expiry or deny-list check.
    fn verify_signed(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Invalid);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            return Ok(hit);
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(digest, claims.clone());
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let biscuit = Biscuit::from_base64(token, self.public).map_err(|_| TokenError::Invalid)?;
        let mut authorizer = AuthorizerBuilder::new()
            .set_limits(RUN_LIMITS)
            .time()
            .code("allow if true;")
            .and_then(|b| b.build(&biscuit))
            .map_err(|_| TokenError::Invalid)?;
        if authorizer.authorize().is_err() {
            // The only check we put in tokens is the expiry; an appended block's failing check also
            // lands here, and either way the token is not usable now.
            return Err(TokenError::Expired);
        }
        let one_string = |authorizer: &mut biscuit_auth::Authorizer, rule: &str| -> Result<String, TokenError> {
            let rows: Vec<(String,)> = authorizer.query(rule).map_err(|_| TokenError::Invalid)?;
            match rows.as_slice() {
                [(value,)] => Ok(value.clone()),
                _ => Err(TokenError::Invalid),
            }
        };
        let one_int = |authorizer: &mut biscuit_auth::Authorizer, rule: &str| -> Result<u64, TokenError> {
            let rows: Vec<(i64,)> = authorizer.query(rule).map_err(|_| TokenError::Invalid)?;
            match rows.as_slice() {
                [(value,)] if *value >= 0 => Ok(*value as u64),
                _ => Err(TokenError::Invalid),
            }
        };
        let username = one_string(&mut authorizer, "data($v) <- user($v)")?;
        let kind = one_string(&mut authorizer, "data($v) <- kind($v)")?;
        let account = one_string(&mut authorizer, "data($v) <- account($v)")?;
        let expires_at = one_int(&mut authorizer, "data($v) <- expires($v)")?;
        let issued_at = one_int(&mut authorizer, "data($v) <- issued($v)")?;
        let subject = match kind.as_str() {
            "owner" => Subject::Owner { session: one_string(&mut authorizer, "data($v) <- session($v)")? },
            "app" => {
                let rows: Vec<(String,)> = authorizer.query("data($v) <- scope($v)").map_err(|_| TokenError::Invalid)?;
                let mut scopes: Vec<Scope> = rows.iter().filter_map(|(s,)| Scope::parse(s)).collect();
                scopes.sort();
                Subject::App {
                    app_id: one_string(&mut authorizer, "data($v) <- app($v)")?,
                    scopes,
                    generation: one_int(&mut authorizer, "data($v) <- generation($v)")?,
                    family: one_string(&mut authorizer, "data($v) <- family($v)")?,
                }
            }
            _ => return Err(TokenError::Invalid),
        };
        let revocation_ids = biscuit.revocation_identifiers().iter().map(|id| hex(id)).collect();
        Ok(Claims { username, account, subject, expires_at, issued_at, revocation_ids })
    }

    /// Claims of a token we signed even if expired or revoked (for introspection and revocation).
    pub fn inspect(&self, token: &str) -> Option<Arc<Claims>> {
        self.verify_signed(token).ok()
    }

    fn is_denied(&self, claims: &Claims) -> bool {
        let deny = self.deny.read().unwrap_or_else(|e| e.into_inner());
        if claims.revocation_ids.iter().any(|id| deny.token_ids.contains(id)) {
            return true;
        }
        match &claims.subject {
            Subject::Owner { session } => deny.sessions.contains(session),
            Subject::App { app_id, generation, family, .. } => {
                if deny.families.contains(family) {
                    return true;
                }
                match deny.grants.get(&grant_key(&claims.username, app_id)) {
                    Some(g) => !g.active || g.generation != *generation,
                    None => true,
                }
            }
        }
    }

    /// Deny one token by its revocation ids.
    pub fn deny_token_ids(&self, ids: &[String]) {
        let mut deny = self.deny.write().unwrap_or_else(|e| e.into_inner());
        deny.token_ids.extend(ids.iter().cloned());
    }
    /// Deny every token of a refresh family.
    pub fn deny_family(&self, family: &str) {
        self.deny.write().unwrap_or_else(|e| e.into_inner()).families.insert(family.to_owned());
    }
    /// Whether a refresh family is revoked.
    pub fn family_denied(&self, family: &str) -> bool {
        self.deny.read().unwrap_or_else(|e| e.into_inner()).families.contains(family)
    }
    /// Deny an owner session.
    pub fn deny_session(&self, session: &str) {
        self.deny.write().unwrap_or_else(|e| e.into_inner()).sessions.insert(session.to_owned());
    }
    /// Record a grant's current state (after consent, revocation, or at start-up).
    pub fn set_grant(&self, username: &str, app_id: &str, generation: u64, active: bool) {
        self.deny.write().unwrap_or_else(|e| e.into_inner()).grants.insert(grant_key(username, app_id), GrantState { generation, active });
    }
}

fn grant_key(username: &str, app_id: &str) -> String {
    let mut key = String::with_capacity(username.len() + 1 + app_id.len());
    key.push_str(username);
    key.push('\0');
    key.push_str(app_id);
    key
}

pub use selfcloud_core::hex;

/// A bounded cache in two generations: entries go into `young`; a full `young` becomes `old`
/// (dropping the previous `old`), and a hit in `old` moves the entry back to `young`. A token in
/// use survives any number of turnovers, while a burst of one-off tokens only pushes out what was
/// not used since the last turnover: LRU's behaviour, near enough, at a hash map's cost. (Before,
/// a full cache was cleared outright and every client paid the signature check again at once.)
struct Generations<V> {
    young: HashMap<[u8; 32], V>,
    old: HashMap<[u8; 32], V>,
    generation_max: usize,
}

impl<V: Clone> Generations<V> {
    fn new(generation_max: usize) -> Generations<V> {
        Generations { young: HashMap::new(), old: HashMap::new(), generation_max: generation_max.max(1) }
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<V> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let v = self.old.remove(key)?;
        self.insert(*key, v.clone());
        Some(v)
    }

    fn insert(&mut self, key: [u8; 32], value: V) {
        if self.young.len() >= self.generation_max {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cache_keeps_what_is_used_through_a_burst_of_one_off_tokens() {
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        };
        let mut cache = super::Generations::new(100);
        for hot in 0..10 {
            cache.insert(key(hot), hot);
        }
        // 10,000 tokens seen once, the ten hot ones used every 50 of them.
        for once in 1000..11_000 {
            cache.insert(key(once), once);
            if once % 50 == 0 {
                for hot in 0..10 {
                    assert_eq!(cache.get(&key(hot)), Some(hot), "hot token {hot} was evicted");
                }
            }
            assert!(cache.len() <= 200, "bounded: {}", cache.len());
        }
        assert_eq!(cache.get(&key(1000)), None, "an old one-off token is gone");
        assert_eq!(cache.get(&key(10_999)), Some(10_999));
    }

    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn app_token_round_trip_and_grant_revocation() {
        let t = tokens();
        t.set_grant("alice", "app_1", 0, true);
        let (tok, _) = t.mint_app("alice", "acct", "app_1", &[Scope::StorageRead], 0, "fam", Duration::from_secs(60)).unwrap();
        let claims = t.verify(&tok).unwrap();
        assert_eq!(claims.username, "alice");
        assert!(claims.has_scope(Scope::StorageRead));
        assert!(!claims.has_scope(Scope::StorageWrite));
        t.set_grant("alice", "app_1", 1, false);
        assert_eq!(t.verify(&tok).unwrap_err(), TokenError::Revoked);
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_fail() {
        let t = tokens();
        let (tok, _) = t.mint_owner("alice", "acct", "s1", Duration::from_secs(60)).unwrap();
        assert!(t.verify(&tok).is_ok());
        let mut bytes = tok.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert_eq!(t.verify(std::str::from_utf8(&bytes).unwrap()).unwrap_err(), TokenError::Invalid);
        let foreign = Tokens::new(&[9u8; 32]).unwrap();
        let (other, _) = foreign.mint_owner("alice", "acct", "s1", Duration::from_secs(60)).unwrap();
        assert_eq!(t.verify(&other).unwrap_err(), TokenError::Invalid);
        let (expired, _) = t.mint_owner("alice", "acct", "s2", Duration::from_secs(0)).unwrap();
        assert!(t.verify(&expired).is_err());
        t.deny_session("s1");
        assert_eq!(t.verify(&tok).unwrap_err(), TokenError::Revoked);
    }
}
