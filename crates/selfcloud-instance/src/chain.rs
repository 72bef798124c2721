//! The instance's SELF Chain node: a verifying follower that holds the user's account key.
//!
//! The account is the instance's ed25519 identity key (generated here, never leaving the
//! instance); its address is `self1…` of that key. The follower trusts no validator: every
//! account read comes with a Jellyfish Merkle proof against the state root of a block, and that
//! block is checked against the network's one group public key with its BLS threshold
//! finalization certificate. Anything that does not verify is an error, never an answer.
//!
//! On first start the instance asks the local network's dev faucet for its starting balance and
//! then publishes its directory entry (its URL and X25519 encryption key) in a transaction it
//! signs itself, in the background, so sign-up never waits for the chain.

use crate::api::{json_response, Ctx, Shared};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use selfcloud_chain::network::Variant;
use selfcloud_chain::{Account, Action, Address, Block, Tx, TxBody, MIN_FEE};
use selfcloud_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Where the chain is and what its certificates verify against (from `selfcloud up`).
#[derive(Clone, Debug)]
pub struct ChainLink {
    /// Validators' node API base URLs (`http://host:port`).
    pub apis: Vec<String>,
    /// The group public key, hex.
    pub identity: String,
    /// This instance's public URL (published in the directory).
    pub instance_url: String,
}

type GroupKey = <Variant as commonware_cryptography::bls12381::primitives::variant::Variant>::Public;

/// The follower: the user's key and a verified view of the chain.
pub struct ChainNode {
    link: ChainLink,
    group_key: GroupKey,
    key: ed25519_dalek::SigningKey,
    /// The user's account address (`self1…` of the identity key).
    pub address: Address,
    /// One transaction at a time: each takes the next nonce, and an app's daily spending is
    /// checked and counted around its send.
    sending: tokio::sync::Mutex<()>,
}

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainFailure {
    /// No validator could be reached.
    #[error("no validator answered: {0}")]
    Unreachable(String),
    /// A validator answered with something that does not check out.
    #[error("the chain's answer did not verify: {0}")]
    Unverified(String),
    /// A validator refused the request.
    #[error("{code}: {message}")]
    Refused {
        /// The node API's error code.
        code: String,
        /// Its message.
        message: String,
    },
}

impl ChainFailure {
    pub(crate) fn into_api(self) -> ApiError {
        match self {
            ChainFailure::Refused { code, message } if code == "INVALID_ARGUMENT" => ApiError::invalid(message),
            ChainFailure::Refused { code, message } if code == "NOT_FOUND" => ApiError::not_found(message),
            other => ApiError::new(ErrorCode::Unavailable, other.to_string()),
        }
    }
}

fn unverified(what: impl std::fmt::Display) -> ChainFailure {
    ChainFailure::Unverified(what.to_string())
}

impl ChainNode {
    /// A follower for `link`, signing with the instance identity `secret`.
    pub fn new(link: ChainLink, secret: [u8; 32]) -> Result<ChainNode, String> {
        let bytes = selfcloud_core::unhex(&link.identity, 256).ok_or("the chain identity is not hex")?;
        let group_key = commonware_codec::DecodeExt::decode(commonware_codec::Copying(&bytes)).map_err(|e| format!("the chain identity: {e}"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let address = Address::of_key(&key.verifying_key().to_bytes());
        Ok(ChainNode { link, group_key, key, address, sending: tokio::sync::Mutex::new(()) })
    }

    /// Calls the validators in turn until one answers; the status and the JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value), ChainFailure> {
        let mut last = String::from("no validators configured");
        for api in &self.link.apis {
            match request(api, method.clone(), path, body.as_ref()).await {
                Ok((status, bytes)) => {
                    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    if status >= 400 {
                        let code = value["error"]["code"].as_str().unwrap_or("UNAVAILABLE").to_owned();
                        let message = value["error"]["message"].as_str().unwrap_or("refused").to_owned();
                        return Err(ChainFailure::Refused { code, message });
                    }
                    return Ok((status, value));
                }
                Err(e) => last = format!("{api}: {e}"),
            }
        }
        Err(ChainFailure::Unreachable(last))
    }

    /// The user's account, proved: (account, height), checked against a finalized block.
    pub async fn verified_account(&self) -> Result<(Account, u64), ChainFailure> {
        let key = selfcloud_chain::state::keys::account(&self.address);
        let (value, height) = self.verified_value(&format!("/v1/accounts/{}?proof=true", self.address), &key).await?;
        Ok((value.map(|v| Account::decode(&v)).unwrap_or_default(), height))
    }

    /// Another user's directory entry, proved: (their instance URL, their X25519 key), or `None`
    /// when they have none.
    pub async fn verified_directory(&self, address: &Address) -> Result<Option<(String, [u8; 32])>, ChainFailure> {
        let key = selfcloud_chain::state::keys::directory(address);
        let value = match self.verified_value(&format!("/v1/directory/{address}?proof=true"), &key).await {
            Err(ChainFailure::Refused { code, .. }) if code == "NOT_FOUND" => return Ok(None),
            other => other?.0,
        };
        let Some(value) = value else { return Ok(None) };
        let (encryption_key, url) = value.split_at(32.min(value.len()));
        let encryption_key: [u8; 32] = encryption_key.try_into().map_err(|_| unverified("short directory entry"))?;
        Ok(Some((String::from_utf8_lossy(url).into_owned(), encryption_key)))
    }

    /// A state value from `path` (a node API answer with `height`, `state_root`, `value` and
    /// `proof`), checked against the Merkle proof and the finalized block at that height.
    async fn verified_value(&self, path: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, u64), ChainFailure> {
        let (_, proved) = self.call(Method::GET, path, None).await?;
        let height = proved["height"].as_u64().ok_or_else(|| unverified("no height"))?;
        let root = hex32(&proved["state_root"]).ok_or_else(|| unverified("no state root"))?;
        let value = match &proved["value"] {
            Value::Null => None,
            v => Some(v.as_str().and_then(|h| selfcloud_core::unhex(h, 4096)).ok_or_else(|| unverified("bad value"))?),
        };
        let proof = proved["proof"].as_str().and_then(|h| selfcloud_core::unhex(h, 1 << 16)).ok_or_else(|| unverified("no proof"))?;
        selfcloud_chain::state::verify_proof(&root, key, value.as_deref(), &proof).map_err(unverified)?;
        if height > 0 {
            let block = self.verified_block(height).await?;
            if block.state_root != root {
                return Err(unverified(format!("block {height} commits to another state root")));
            }
        }
        Ok((value, height))
    }

    /// Block `height`, checked against its finalization certificate and the group key.
    pub async fn verified_block(&self, height: u64) -> Result<Block, ChainFailure> {
        let (_, raw) = self.call(Method::GET, &format!("/v1/blocks/{height}/raw"), None).await?;
        let bytes = raw["block"].as_str().and_then(|h| selfcloud_core::unhex(h, selfcloud_chain::MAX_BLOCK_BYTES)).ok_or_else(|| unverified("no block"))?;
        let certificate = raw["finalization"].as_str().and_then(|h| selfcloud_core::unhex(h, 1 << 16)).ok_or_else(|| unverified("no certificate"))?;
        let block = Block::decode_bytes(&bytes).map_err(unverified)?;
        if block.height != height {
            return Err(unverified(format!("asked for block {height}, got {}", block.height)));
        }
        if !selfcloud_chain::node::verify_finalization(&self.group_key, &certificate, &block.digest()) {
            return Err(unverified(format!("block {height}'s finalization certificate does not verify against the network key")));
        }
        Ok(block)
    }

    /// Signs and submits a transaction with the account's next nonce; answers once it is final.
    pub async fn submit(&self, action: Action) -> Result<(String, u64), ChainFailure> {
        let _one_at_a_time = self.sending.lock().await;
        self.submit_locked(action).await
    }

    async fn submit_locked(&self, action: Action) -> Result<(String, u64), ChainFailure> {
        let (account, _) = self.verified_account().await?;
        let tx: Tx = TxBody { chain_id: selfcloud_chain::CHAIN_ID.into(), signer: self.key.verifying_key().to_bytes(), nonce: account.nonce, fee: MIN_FEE, action }.sign(&self.key);
        let body = json!({"tx": selfcloud_core::hex(&tx.to_bytes())});
        let (_, reply) = self.call(Method::POST, "/v1/transactions?wait=true", Some(body)).await?;
        let hash = reply["hash"].as_str().unwrap_or_default().to_owned();
        let height = reply["height"].as_u64().unwrap_or(0);
        Ok((hash, height))
    }

    /// First start: take the faucet's grant (if the account is new), then publish the directory entry.
    pub async fn register(&self) -> Result<(), ChainFailure> {
        let (account, _) = self.verified_account().await?;
        if account.balance == 0 && account.nonce == 0 {
            self.call(Method::POST, "/v1/faucet", Some(json!({"address": self.address.to_string()}))).await?;
        }
        let encryption_key = self.key.verifying_key().to_montgomery().to_bytes();
        self.submit(Action::Directory { url: self.link.instance_url.clone(), encryption_key }).await?;
        Ok(())
    }
}

fn hex32(value: &Value) -> Option<[u8; 32]> {
    selfcloud_core::unhex(value.as_str()?, 32)?.try_into().ok()
}

/// One HTTP/1 request to `base` (`http://host:port`); the status and the body (at most 16 MiB).
/// One HTTP/1 request to `base` (`http://host:port`, optionally with a path prefix such as an
/// instance's `/i/{user}`) + `path`.
pub(crate) async fn request(base: &str, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), String> {
    let rest = base.strip_prefix("http://").ok_or("only http:// URLs are supported")?.trim_end_matches('/');
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(authority)).await.map_err(|_| "connect timed out".to_string())?.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let payload = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(45), sender.send_request(request)).await.map_err(|_| "no answer in time".to_string())?.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), 16 << 20).collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes.to_vec()))
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/chain/info", get(info))
        .route("/v1/chain/transactions", get(transactions).post(send))
        .route("/v1/chain/receipts", axum::routing::post(consent_receipt))
        .route("/v1/chain/apps", axum::routing::post(register_app))
        .route("/v1/chain/anchors", axum::routing::post(anchor))
}

fn node<'a>(state: &'a Shared, ctx: &Ctx) -> Result<&'a ChainNode, ApiError> {
    state.chain.as_deref().ok_or_else(|| ctx.fail(ApiError::new(ErrorCode::Unavailable, "this instance is not connected to a chain")))
}

/// The follower, for routes only the owner (or the gateway acting for the owner) may call.
fn owner_node<'a>(state: &'a Shared, ctx: &Ctx, what: &str) -> Result<&'a ChainNode, ApiError> {
    if ctx.caller != selfcloud_core::caller::Caller::Owner {
        return Err(ctx.fail(ApiError::permission_denied(format!("only the owner {what}"))));
    }
    node(state, ctx)
}

/// `{hash, height}` of a final transaction.
fn final_answer(hash: &str, height: u64) -> Response {
    json_response(StatusCode::OK, json!({"hash": hash, "height": height}).to_string().into_bytes())
}

/// `GET /v1/chain/info` → `{address, balance, nonce, height}` (verified).
async fn info(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    let node = node(&state, &ctx)?;
    let (account, height) = node.verified_account().await.map_err(|e| ctx.fail(e.into_api()))?;
    let body = json!({"address": node.address.to_string(), "balance": account.balance.to_string(), "balance_self": selfcloud_chain::format_self(account.balance), "nonce": account.nonce, "height": height, "verified": true});
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    amount: String,
}

/// `POST /v1/chain/transactions` `{to, amount}` → `{hash, height}` once final.
async fn send(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let node = node(&state, &ctx)?;
    let body: SendBody = serde_json::from_slice(&body).map_err(|e| ctx.fail(ApiError::invalid(format!("body must be {{to, amount}}: {e}"))))?;
    let to: Address = body.to.parse().map_err(|e: selfcloud_chain::ChainError| ctx.fail(ApiError::invalid(e.to_string())))?;
    let amount: u128 = body.amount.parse().map_err(|_| ctx.fail(ApiError::invalid("amount must be a decimal string of base units (1 SELF = 10^18)")))?;
    if amount == 0 {
        return Err(ctx.fail(ApiError::invalid("amount must be positive")));
    }
    let _one_at_a_time = node.sending.lock().await;
    // An app spends only within the daily limit the user set on the consent screen.
    let spent_key = ctx.caller.app_id().map(|app| format!("chain.spent.{app}.{}", selfcloud_core::unix_now() / 86_400));
    if let Some(key) = spent_key.clone() {
        let store = state.store.clone();
        let spent = crate::api::blocking(&ctx, move || spent_today(&store, &key)).await?;
        if spent.saturating_add(amount) > ctx.chain_daily_limit {
            let left = ctx.chain_daily_limit.saturating_sub(spent);
            return Err(ctx.fail(ApiError::permission_denied(format!(
                "this app may spend {} SELF a day from this account and has {} SELF left today; nothing was sent",
                selfcloud_chain::format_self(ctx.chain_daily_limit),
                selfcloud_chain::format_self(left)
            ))));
        }
    }
    let (hash, height) = node.submit_locked(Action::Transfer { to, amount }).await.map_err(|e| ctx.fail(e.into_api()))?;
    if let Some(key) = spent_key {
        let store = state.store.clone();
        crate::api::blocking(&ctx, move || {
            let spent = spent_today(&store, &key)?;
            store.put_meta_sealed(&key, &spent.saturating_add(amount).to_be_bytes())
        })
        .await?;
    }
    Ok(final_answer(&hash, height))
}

/// What an app has spent today (base units), kept sealed under `key` in the store's meta table.
fn spent_today(store: &crate::store::Store, key: &str) -> Result<u128, crate::store::StoreError> {
    Ok(store.get_meta_sealed(key)?.and_then(|v| v.try_into().ok()).map(u128::from_be_bytes).unwrap_or(0))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<u32>,
    offset: Option<u32>,
}

/// `GET /v1/chain/transactions?limit=&offset=` → the account's transactions, newest first.
async fn transactions(State(state): State<Shared>, ctx: Ctx, Query(page): Query<Page>) -> Result<Response, ApiError> {
    let node = node(&state, &ctx)?;
    let path = format!("/v1/accounts/{}/transactions?limit={}&offset={}", node.address, page.limit.unwrap_or(50).min(500), page.offset.unwrap_or(0));
    let (_, reply) = node.call(Method::GET, &path, None).await.map_err(|e| ctx.fail(e.into_api()))?;
    Ok(json_response(StatusCode::OK, reply.to_string().into_bytes()))
}

#[derive(Deserialize)]
struct ReceiptBody {
    receipt: String,
    revoked: bool,
}

/// `POST /v1/chain/receipts` `{receipt, revoked}` (owner only: the gateway, after a consent
/// decision) → `{hash, height}` once the receipt is on the chain, signed with the user's key.
async fn consent_receipt(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let node = owner_node(&state, &ctx, "records consent receipts")?;
    let body: ReceiptBody = serde_json::from_slice(&body).map_err(|e| ctx.fail(ApiError::invalid(format!("body must be {{receipt, revoked}}: {e}"))))?;
    let receipt: [u8; 32] = selfcloud_core::unhex(&body.receipt, 32).and_then(|b| b.try_into().ok()).ok_or_else(|| ctx.fail(ApiError::invalid("receipt must be 64 hex digits")))?;
    let (hash, height) = node.submit(Action::Consent { receipt, revoked: body.revoked }).await.map_err(|e| ctx.fail(e.into_api()))?;
    Ok(final_answer(&hash, height))
}

#[derive(Deserialize)]
struct AppBody {
    app_id: String,
    name: String,
}

/// `POST /v1/chain/apps` `{app_id, name}` (owner only: the gateway, after the user registered an
/// app) → `{hash, height}` once the app id is registered on the chain to this account.
async fn register_app(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let node = owner_node(&state, &ctx, "registers apps")?;
    let body: AppBody = serde_json::from_slice(&body).map_err(|e| ctx.fail(ApiError::invalid(format!("body must be {{app_id, name}}: {e}"))))?;
    let name: String = body.name.chars().take(100).collect();
    let (hash, height) = node.submit(Action::RegisterApp { app_id: body.app_id, name }).await.map_err(|e| ctx.fail(e.into_api()))?;
    Ok(final_answer(&hash, height))
}

/// `POST /v1/chain/anchors` (owner only) → `{root, hash, height, export}`: the user's export (the
/// same document as `GET /v1/export`), and an anchor transaction recording the SHA-256 of its
/// bytes exactly as returned. Keep the export: anyone can hash it and compare with the anchor on
/// the chain to prove the backup untampered.
async fn anchor(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    use sha2::Digest as _;
    let node = owner_node(&state, &ctx, "anchors their data")?;
    let export = crate::api::export_document(&state, &ctx).await?;
    let bytes = serde_json::to_vec(&export).map_err(|_| ctx.fail(ApiError::internal()))?;
    let root: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    let (hash, height) = node.submit(Action::Anchor { root }).await.map_err(|e| ctx.fail(e.into_api()))?;
    let mut answer = br#"{"root":""#.to_vec();
    answer.extend_from_slice(selfcloud_core::hex(&root).as_bytes());
    answer.extend_from_slice(format!(r#"","hash":"{hash}","height":{height},"export":"#).as_bytes());
    // The export's exact bytes, so hashing what the client received reproduces `root`.
    answer.extend_from_slice(&bytes);
    answer.push(b'}');
    Ok(json_response(StatusCode::OK, answer))
}
