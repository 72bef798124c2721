//! The gateway's shared state: the control store plus the in-memory views of it that the hot path
//! reads (accounts, grant generations, deny lists).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use selfcloud_control::audit::AuditLog;
use selfcloud_control::keys::HostKeys;
use selfcloud_control::model::Account;
use selfcloud_control::store::{ControlStore, RevokedKind};
use selfcloud_control::supervisor::{LaunchSpec, Supervisor, SupervisorConfig};
use selfcloud_core::{ApiError, Config, ErrorCode};

use crate::proxy::Pools;
use crate::ratelimit::RateLimits;
use crate::tokens::Tokens;

/// The control store is pruned at start-up and then every this many minute ticks (hourly).
const STORE_PRUNE_EVERY_TICKS: u64 = 60;

/// Everything a request handler may need.
pub struct Gateway {
    /// Host configuration.
    pub config: Config,
    /// The control store.
    pub store: Arc<ControlStore>,
    /// Host keys.
    pub keys: HostKeys,
    /// Token minting and verification.
    pub tokens: Tokens,
    /// Instance processes.
    pub supervisor: Arc<Supervisor>,
    /// The access log.
    pub audit: AuditLog,
    /// Rate limiters.
    pub limits: RateLimits,
    /// Connections to instance sockets.
    pub pools: Pools,
    /// The local SELF Chain's validators, whose node API `/chain/…` serves.
    pub chain: Option<selfcloud_control::supervisor::ChainLink>,
    accounts: RwLock<HashMap<String, Account>>,
    csrf_key: [u8; 32],
}

/// Start-up failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl Gateway {
    /// Open (or create) the host's state under `config.data_dir`. Must run inside a tokio runtime.
    pub fn open(config: Config, exe: PathBuf) -> Result<Arc<Gateway>, StartError> {
        let e = |what: &str, err: &dyn std::fmt::Display| StartError(format!("{what}: {err}"));
        let dir = config.data_dir.clone();
        for sub in ["", "instances", "models"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|err| e(&format!("create {}", dir.join(sub).display()), &err))?;
        }
        // Instances (other uids) may traverse to their own directory and read the models, nothing
        // else: listing is denied, and each instance directory is 0700 to its own uid.
        {
            use std::os::unix::fs::PermissionsExt;
            for (sub, mode) in [("", 0o711), ("instances", 0o711), ("models", 0o755)] {
                std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(mode)).map_err(|err| e("chmod data dir", &err))?;
            }
        }
        let store = Arc::new(ControlStore::open(&dir.join("control.redb")).map_err(|err| e("open control store", &err))?);
        {
            // Password hashes and wrapped keys: the operator's eyes only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("control.redb"), std::fs::Permissions::from_mode(0o600)).map_err(|err| e("chmod control store", &err))?;
        }
        let keys = HostKeys::load_or_create(&dir).map_err(|err| e("host keys", &err))?;
        let tokens = Tokens::new(keys.token_signing.as_bytes()).map_err(|err| e("token key", &err))?;
        let csrf_key = {
            use hmac::Mac;
            let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(keys.token_signing.as_bytes()).map_err(|err| e("csrf key", &err))?;
            mac.update(b"selfcloud csrf key v1");
            mac.finalize().into_bytes().into()
        };
        let mut accounts = HashMap::new();
        for account in store.accounts().map_err(|err| e("load accounts", &err))? {
            accounts.insert(account.username.clone(), account);
        }
        for (user, app, grant) in store.all_grants().map_err(|err| e("load grants", &err))? {
            tokens.set_grant(&user, &app, grant.generation, grant.active);
        }
        for (kind, id) in store.revocations().map_err(|err| e("load revocations", &err))? {
            match kind {
                RevokedKind::Family => tokens.deny_family(&id),
                RevokedKind::Token => tokens.deny_token_ids(&[id]),
                RevokedKind::Session => tokens.deny_session(&id),
            }
        }
        let chain = if config.validators > 0 { selfcloud_control::supervisor::ChainLink::from_network_file(&dir.join("chain").join("network.json")) } else { None };
        let supervisor = Supervisor::new(SupervisorConfig {
            exe,
            instances_dir: dir.join("instances"),
            models_dir: config.model_dir.clone(),
            llm_model: config.llm_model_path(),
            embed_model: config.embed_model_path(),
            llm_threads: config.llm_threads,
            llm_prompt_threads: config.llm_prompt_threads(),
            sandbox: config.sandbox,
            start_timeout: Duration::from_millis(config.instance_start_timeout_ms),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            p2p_host: config.p2p_host,
            chain: chain.clone(),
            public_url: config.public_url(),
        });
        supervisor.start_hibernation_loop();
        let audit = AuditLog::start(store.clone());
        let limits = RateLimits::new(&config);
        let limiter_prune_every = Duration::from_secs(60);
        tracing::info!(users = accounts.len(), dir = %dir.display(), "control plane loaded");
        let gateway = Arc::new(Gateway {
            config,
            store,
            keys,
            tokens,
            supervisor,
            audit,
            limits,
            pools: Pools::default(),
            chain,
            accounts: RwLock::new(accounts),
            csrf_key,
        });
        let weak = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(limiter_prune_every);
            let mut ticks = 0u64;
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                gw.limits.prune();
                if ticks % STORE_PRUNE_EVERY_TICKS == 0 {
                    gw.prune_store().await;
                }
                ticks += 1;
            }
        });
        Ok(gateway)
    }

    /// Deletes the control store's expired codes, refresh tokens and revocations (a store that
    /// only grows would grow with every sign-in and token refresh ever made), and access-log
    /// entries past the configured retention.
    async fn prune_store(&self) {
        let store = self.store.clone();
        let retention_ms = self.config.access_log_retention_days.saturating_mul(24 * 3600 * 1000);
        let prune = move || {
            let pruned = store.prune_expired(selfcloud_core::unix_now())?;
            let audit = match retention_ms {
                0 => 0,
                ms => store.prune_audit(selfcloud_core::unix_now_ms().saturating_sub(ms))?,
            };
            Ok::<_, selfcloud_control::Error>((pruned, audit))
        };
        match tokio::task::spawn_blocking(prune).await {
            Ok(Ok((pruned, audit))) => tracing::debug!(?pruned, access_log_entries = audit, "control store pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the control store failed; trying again later"),
            Err(e) => tracing::warn!(error = %e, "pruning the control store stopped"),
        }
    }

    /// An account, from memory.
    pub fn account(&self, username: &str) -> Option<Account> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner()).get(username).cloned()
    }

    /// Verify a token and that the account it was minted for still exists (a deleted and
    /// re-created username is a different account).
    pub fn verify_token(&self, token: &str) -> Result<Arc<crate::tokens::Claims>, crate::tokens::TokenError> {
        let claims = self.tokens.verify(token)?;
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        match accounts.get(&claims.username) {
            Some(account) if account.account_id == claims.account => Ok(claims),
            _ => Err(crate::tokens::TokenError::Revoked),
        }
    }

    /// The account id of a user.
    pub fn account_id(&self, username: &str) -> Option<String> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner()).get(username).map(|a| a.account_id.clone())
    }

    /// Tier of a user, from memory (hot path: no clone of the account).
    pub fn tier_of(&self, username: &str) -> Option<selfcloud_core::Tier> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner()).get(username).map(|a| a.tier)
    }

    pub(crate) fn remember_account(&self, account: Account) {
        self.accounts.write().unwrap_or_else(|e| e.into_inner()).insert(account.username.clone(), account);
    }

    pub(crate) fn forget_account(&self, username: &str) {
        self.accounts.write().unwrap_or_else(|e| e.into_inner()).remove(username);
    }

    /// The key CSRF tokens are derived from.
    pub(crate) fn csrf_key(&self) -> &[u8; 32] {
        &self.csrf_key
    }

    /// Wake `username`'s instance if it hibernates.
    pub async fn wake(&self, username: &str) -> Result<(), ApiError> {
        if self.supervisor.touch_if_awake(username) {
            return Ok(());
        }
        // Boxed: a start's state is kilobytes, and every proxied request's future would carry it.
        Box::pin(self.start(username)).await
    }

    async fn start(&self, username: &str) -> Result<(), ApiError> {
        let result = self
            .supervisor
            .ensure_awake(username, || {
                let account = self.account(username).ok_or_else(|| selfcloud_control::Error::NotFound(format!("user {username}")))?;
                let data_key = self.keys.unwrap(username, &account.wrapped_data_key)?;
                Ok(LaunchSpec { username: username.to_owned(), uid: account.uid, memory_bytes: self.config.memory_for(account.tier), quota_bytes: self.config.storage_quota_for(account.tier), data_key, llm_context: self.config.llm_context_for(account.tier), llm_max_tokens: self.config.llm_max_tokens_for(account.tier) })
            })
            .await;
        result.map_err(|err| {
            tracing::error!(user = username, error = %err, "instance did not start");
            ApiError::new(ErrorCode::Unavailable, "the instance could not be started; try again shortly")
        })
    }

    /// Stop everything cleanly: instances, then the access log.
    pub async fn shutdown(&self) {
        self.supervisor.stop_all().await;
        self.audit.flush().await;
    }
}

/// Map a control-plane error to the API's.
pub fn control_error(err: selfcloud_control::Error) -> ApiError {
    use selfcloud_control::Error as E;
    match err {
        E::AlreadyExists(what) => ApiError::new(ErrorCode::AlreadyExists, format!("{what} already exists")),
        E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
        E::Invalid(why) => ApiError::invalid(why),
        other => {
            tracing::error!(error = %other, "control plane failure");
            ApiError::internal()
        }
    }
}
