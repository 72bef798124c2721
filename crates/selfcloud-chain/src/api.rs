//! The public node API (SPEC §6), served by each validator on its own HTTP port.
//!
//! Reads go straight to the store (redb snapshots); submissions go to the node's actor, which
//! admits them to the mempool and gossips them. The gateway exposes this API under `/chain`.

use crate::network::NetworkFile;
use crate::state::ChainStore;
use crate::{format_self, Action, Address, Block, ChainError, Tx, TxHash, MAX_BLOCK_BYTES};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long `?wait=true` waits for finality before answering `UNAVAILABLE` (the transaction may
/// still land; its hash says where to look).
const WAIT_FINAL: Duration = Duration::from_secs(20);

/// What the API asks of the node's actor.
pub enum ApiRequest {
    /// Admit signed transactions to the mempool (signatures already checked).
    Submit { txs: Vec<Tx>, reply: oneshot::Sender<Vec<Result<TxHash, ChainError>>> },
    /// Answer with the height once this transaction is final.
    Watch { hash: TxHash, reply: oneshot::Sender<u64> },
}

#[derive(Clone)]
struct Api {
    store: Arc<ChainStore>,
    node: mpsc::Sender<ApiRequest>,
    network: Arc<NetworkFile>,
    faucet: Option<Arc<Faucet>>,
    /// Transactions waiting in this node's mempool (kept by the node's actor).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Every block the node commits, for WebSocket subscribers.
    committed: tokio::sync::broadcast::Sender<Arc<Block>>,
}

/// What the dev faucet gives each new account.
pub const FAUCET_GRANT: u128 = 100 * crate::UNIT;

/// The local network's dev faucet: pays [`FAUCET_GRANT`] once to each account that has never held
/// anything, from the key `chain init` funded at genesis (`faucet.key` in the chain directory).
pub struct Faucet {
    key: ed25519_dalek::SigningKey,
    /// The next nonce to use (grants are serialized: one at a time, each waited to finality).
    lock: tokio::sync::Mutex<Option<u64>>,
}

impl Faucet {
    /// The faucet of the chain directory `dir`, if it has one.
    pub fn load(dir: &std::path::Path) -> Option<Faucet> {
        let key = crate::network::load_faucet_key(dir).ok()?;
        Some(Faucet { key, lock: tokio::sync::Mutex::new(None) })
    }
}

/// What the node shares with its API besides the store.
pub struct NodeFeeds {
    /// The mempool's size.
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Committed blocks, as the node commits them.
    pub committed: tokio::sync::broadcast::Sender<Arc<Block>>,
}

/// The node API's thread. [`ApiServer::stop`] ends it and with it every connection, so the store
/// handle it holds is let go of before the node closes its store.
pub struct ApiServer {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ApiServer {
    /// Stop serving (open WebSockets included) and wait for the thread to end.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// How long open connections get to finish when the API stops.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the API on `listen` in its own thread (own runtime, so slow clients never stall consensus).
pub fn serve(listen: SocketAddr, store: Arc<ChainStore>, node: mpsc::Sender<ApiRequest>, network: NetworkFile, faucet: Option<Faucet>, feeds: NodeFeeds) -> Result<ApiServer, ChainError> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| ChainError::Storage(format!("node API on {listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| ChainError::Storage(e.to_string()))?;
    let api = Api { store, node, network: Arc::new(network), faucet: faucet.map(Arc::new), pending: feeds.pending, committed: feeds.committed };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("chain-api".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return tracing::error!(error = %e, "node API runtime"),
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    served = axum::serve(listener, router(api)) => if let Err(e) = served {
                        tracing::error!(error = %e, "node API stopped");
                    },
                    _ = stopped => {}
                }
            });
            // Connections still open (WebSockets, slow clients) are tasks of this runtime.
            runtime.shutdown_timeout(STOP_GRACE);
        })
        .map_err(|e| ChainError::Storage(e.to_string()))?;
    Ok(ApiServer { stop, thread })
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block_at))
        .route("/v1/blocks/hash/{hash}", get(block_by_hash))
        .route("/v1/blocks/{height}/raw", get(block_raw))
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{hash}", get(transaction))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/accounts/{address}/balance", get(balance))
        .route("/v1/accounts/{address}/transactions", get(account_transactions))
        .route("/v1/validators", get(validators))
        .route("/v1/directory/{address}", get(directory))
        .route("/v1/apps/{app_id}", get(app_registration))
        .route("/v1/faucet", post(faucet))
        .route("/v1/ws", get(websocket))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BLOCK_BYTES * 2))
        .with_state(api)
}

/// An API error: the SPEC's JSON shape with a stable code.
struct ApiError(ChainError);

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status = match code {
            "NOT_FOUND" => StatusCode::NOT_FOUND,
            "ALREADY_EXISTS" => StatusCode::CONFLICT,
            "PAYLOAD_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
            "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = if code == "INTERNAL" { "internal error".to_string() } else { self.0.to_string() };
        (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn status(State(api): State<Api>) -> ApiResult {
    let tip = api.store.head();
    Ok(Json(json!({
        "chain_id": api.store.chain_id(),
        "height": tip.height,
        "latest_hash": selfcloud_core::hex(&tip.digest),
        "state_root": selfcloud_core::hex(&tip.state_root),
        "timestamp_ms": tip.timestamp_ms,
        "validators": api.network.validators.len(),
        "identity": api.network.identity,
        "mempool": api.pending.load(std::sync::atomic::Ordering::Relaxed),
    })))
}

/// JSON view of a transaction.
pub fn tx_json(tx: &Tx) -> Value {
    let mut out = json!({
        "hash": tx.hash().to_string(),
        "from": tx.body.sender().to_string(),
        "nonce": tx.body.nonce,
        "fee": tx.body.fee.to_string(),
    });
    let fields = match &tx.body.action {
        Action::Transfer { to, amount } => json!({"type": "transfer", "to": to.to_string(), "amount": amount.to_string(), "amount_self": format_self(*amount)}),
        Action::Directory { url, encryption_key } => json!({"type": "directory", "url": url, "encryption_key": selfcloud_core::hex(encryption_key)}),
        Action::RegisterApp { app_id, name } => json!({"type": "register_app", "app_id": app_id, "name": name}),
        Action::Consent { receipt, revoked } => json!({"type": "consent", "receipt": selfcloud_core::hex(receipt), "revoked": revoked}),
        Action::Anchor { root } => json!({"type": "anchor", "root": selfcloud_core::hex(root)}),
    };
    if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
    }
    out
}

fn block_json(api: &Api, block: &Block) -> Value {
    let finalization = api.store.finalization(block.height).ok().flatten().map(|c| selfcloud_core::hex(&c));
    json!({
        "height": block.height,
        "hash": selfcloud_core::hex(&block.digest()),
        "parent": selfcloud_core::hex(&block.parent),
        "view": block.view,
        "timestamp_ms": block.timestamp_ms,
        "state_root": selfcloud_core::hex(&block.state_root),
        "transactions": block.txs.iter().map(tx_json).collect::<Vec<_>>(),
        "finalization": finalization,
    })
}

async fn latest_block(State(api): State<Api>) -> ApiResult {
    let height = api.store.head().height;
    block_response(&api, height)
}

fn block_response(api: &Api, height: u64) -> ApiResult {
    let block = blocking(|| api.store.block(height))?.ok_or_else(|| ChainError::NotFound(format!("no block at height {height}")))?;
    Ok(Json(block_json(api, &block)))
}

async fn block_at(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
    let height: u64 = height.parse().map_err(|_| ChainError::InvalidArgument(format!("{height:?} is not a height")))?;
    block_response(&api, height)
}

async fn block_by_hash(State(api): State<Api>, Path(hash): Path<String>) -> ApiResult {
    let digest = crate::parse_hash(&hash)?;
    let height = api.store.height_of(&digest)?.ok_or_else(|| ChainError::NotFound(format!("no block {hash}")))?;
    block_response(&api, height)
}

/// `GET /v1/blocks/{height}/raw` → `{block, finalization}`, both hex: what a verifying follower
/// needs to check a block against the group key without trusting this node.
async fn block_raw(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
    let height: u64 = height.parse().map_err(|_| ChainError::InvalidArgument(format!("{height:?} is not a height")))?;
    let block = blocking(|| api.store.block(height))?.ok_or_else(|| ChainError::NotFound(format!("no block at height {height}")))?;
    let finalization = api.store.finalization(height)?.unwrap_or_default();
    Ok(Json(json!({"height": height, "block": selfcloud_core::hex(&block.to_bytes()), "finalization": selfcloud_core::hex(&finalization)})))
}

#[derive(Deserialize)]
struct SubmitBody {
    tx: Option<String>,
    txs: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct SubmitQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /v1/transactions` `{tx: hex}` or `{txs: [hex, …]}`; `?wait=true` answers once final.
async fn submit(State(api): State<Api>, Query(query): Query<SubmitQuery>, body: axum::body::Bytes) -> ApiResult {
    let body: SubmitBody = serde_json::from_slice(&body).map_err(|e| ChainError::InvalidArgument(format!("body: {e}")))?;
    let single = body.tx.is_some();
    let encoded: Vec<String> = match (body.tx, body.txs) {
        (Some(tx), None) => vec![tx],
        (None, Some(txs)) if !txs.is_empty() && txs.len() <= crate::MAX_BLOCK_TXS => txs,
        _ => return Err(ChainError::InvalidArgument("send either `tx` or a non-empty `txs` list (at most one block's worth)".into()).into()),
    };
    let txs: Vec<Tx> = encoded
        .iter()
        .map(|hex| {
            let bytes = selfcloud_core::unhex(hex, crate::MAX_TX_BYTES).ok_or_else(|| ChainError::Malformed("a transaction is not hex (or is over 1024 bytes)".into()))?;
            Tx::decode_bytes(&bytes)
        })
        .collect::<Result<_, _>>()?;
    let verdicts = blocking(|| crate::verify_signatures(&txs));
    if let Some(bad) = verdicts.iter().position(|ok| !ok) {
        return Err(ApiError(if single { ChainError::BadSignature } else { ChainError::InvalidArgument(format!("transaction {bad}: {}", ChainError::BadSignature)) }));
    }
    let (reply, answer) = oneshot::channel();
    api.node.send(ApiRequest::Submit { txs, reply }).await.map_err(|_| ChainError::MempoolFull)?;
    let results = answer.await.map_err(|_| ChainError::MempoolFull)?;
    if single {
        let hash = results.into_iter().next().unwrap_or(Err(ChainError::MempoolFull))?;
        if !query.wait {
            return Ok(Json(json!({"hash": hash.to_string(), "status": "pending"})));
        }
        let (reply, answer) = oneshot::channel();
        api.node.send(ApiRequest::Watch { hash, reply }).await.map_err(|_| ChainError::MempoolFull)?;
        let height = match tokio::time::timeout(WAIT_FINAL, answer).await {
            Ok(Ok(height)) => height,
            Ok(Err(_)) => return Err(ChainError::InvalidArgument(format!("transaction {hash} could not execute (funds or nonce) and was dropped")).into()),
            Err(_) => return Err(ChainError::Unavailable(format!("transaction {hash} is pending but not final after {} s", WAIT_FINAL.as_secs())).into()),
        };
        return Ok(Json(json!({"hash": hash.to_string(), "status": "final", "height": height})));
    }
    let results: Vec<Value> = results.into_iter().map(|r| match r {
        Ok(hash) => json!({"hash": hash.to_string()}),
        Err(e) => json!({"error": {"code": e.code(), "message": e.to_string()}}),
    }).collect();
    Ok(Json(json!({"results": results})))
}

#[derive(Deserialize)]
struct FaucetBody {
    address: String,
}

/// `POST /v1/faucet` `{address}` → `{hash, height, amount}` once the grant is final.
async fn faucet(State(api): State<Api>, body: axum::body::Bytes) -> ApiResult {
    let faucet = api.faucet.clone().ok_or_else(|| ChainError::NotFound("this node runs no faucet".into()))?;
    let body: FaucetBody = serde_json::from_slice(&body).map_err(|e| ChainError::InvalidArgument(format!("body: {e}")))?;
    let address: Address = body.address.parse()?;
    let mut next = faucet.lock.lock().await;
    let existing = api.store.account(&address)?;
    if existing.balance > 0 || existing.nonce > 0 {
        return Err(ChainError::InvalidArgument(format!("{address} already holds funds or has sent; the faucet pays new accounts only")).into());
    }
    let from = Address::of_key(&faucet.key.verifying_key().to_bytes());
    let committed = api.store.account(&from)?.nonce;
    let nonce = next.map_or(committed, |n: u64| n.max(committed));
    let tx = crate::transfer(&faucet.key, nonce, address, FAUCET_GRANT, crate::MIN_FEE);
    let (reply, answer) = oneshot::channel();
    api.node.send(ApiRequest::Submit { txs: vec![tx.clone()], reply }).await.map_err(|_| ChainError::MempoolFull)?;
    let hash = answer.await.map_err(|_| ChainError::MempoolFull)?.into_iter().next().unwrap_or(Err(ChainError::MempoolFull))?;
    *next = Some(nonce + 1);
    let (reply, answer) = oneshot::channel();
    api.node.send(ApiRequest::Watch { hash, reply }).await.map_err(|_| ChainError::MempoolFull)?;
    let height = tokio::time::timeout(Duration::from_secs(30), answer).await.map_err(|_| ChainError::MempoolFull)?.map_err(|_| ChainError::MempoolFull)?;
    Ok(Json(json!({"hash": hash.to_string(), "height": height, "amount": FAUCET_GRANT.to_string()})))
}

async fn transaction(State(api): State<Api>, Path(hash): Path<String>) -> ApiResult {
    let hash: TxHash = hash.parse()?;
    let (height, index) = api.store.tx_location(&hash)?.ok_or_else(|| ChainError::NotFound(format!("no final transaction {hash}")))?;
    let block = blocking(|| api.store.block(height))?.ok_or_else(|| ChainError::NotFound(format!("block {height}")))?;
    let tx = block.txs.get(index as usize).ok_or_else(|| ChainError::NotFound(format!("transaction {hash}")))?;
    let mut out = tx_json(tx);
    if let Some(map) = out.as_object_mut() {
        map.insert("height".into(), json!(height));
        map.insert("index".into(), json!(index));
        map.insert("status".into(), json!("final"));
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct AccountQuery {
    #[serde(default)]
    proof: bool,
}

async fn account(State(api): State<Api>, Path(address): Path<String>, Query(query): Query<AccountQuery>) -> ApiResult {
    let address: Address = address.parse()?;
    let tip = api.store.head();
    let account = api.store.account(&address)?;
    let mut out = json!({"address": address.to_string(), "balance": account.balance.to_string(), "balance_self": format_self(account.balance), "nonce": account.nonce, "height": tip.height});
    if query.proof {
        // The value and its proof against the state root of block `height`.
        let key = crate::state::keys::account(&address);
        let (value, proof) = blocking(|| api.store.prove(&key, tip.height))?;
        if let Some(map) = out.as_object_mut() {
            map.insert("state_root".into(), json!(selfcloud_core::hex(&tip.state_root)));
            map.insert("value".into(), json!(value.map(|v| selfcloud_core::hex(&v))));
            map.insert("proof".into(), json!(selfcloud_core::hex(&proof)));
        }
    }
    Ok(Json(out))
}

async fn balance(State(api): State<Api>, Path(address): Path<String>) -> ApiResult {
    let address: Address = address.parse()?;
    let account = api.store.account(&address)?;
    Ok(Json(json!({"address": address.to_string(), "balance": account.balance.to_string(), "balance_self": format_self(account.balance)})))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn account_transactions(State(api): State<Api>, Path(address): Path<String>, Query(page): Query<Page>) -> ApiResult {
    let address: Address = address.parse()?;
    let limit = page.limit.unwrap_or(50).min(500);
    let hashes = api.store.account_txs(&address, limit, page.offset.unwrap_or(0))?;
    let mut out = Vec::with_capacity(hashes.len());
    for hash in hashes {
        if let Some((height, index)) = api.store.tx_location(&hash)? {
            if let Some(tx) = blocking(|| api.store.block(height))?.and_then(|b| b.txs.get(index as usize).cloned()) {
                let mut view = tx_json(&tx);
                if let Some(map) = view.as_object_mut() {
                    map.insert("height".into(), json!(height));
                }
                out.push(view);
            }
        }
    }
    Ok(Json(json!({"address": address.to_string(), "transactions": out})))
}

/// `GET /v1/directory/{address}` → `{address, url, encryption_key}`: where that user's instance
/// answers and the X25519 key to encrypt to. With `?proof=true`, also `{height, state_root, value,
/// proof}` as for accounts, so a follower can check the entry against a finalized block.
async fn directory(State(api): State<Api>, Path(address): Path<String>, Query(query): Query<AccountQuery>) -> ApiResult {
    let address: Address = address.parse()?;
    let key = crate::state::keys::directory(&address);
    let tip = api.store.head();
    let entry = api.store.latest(&key)?.ok_or_else(|| ChainError::NotFound(format!("{address} has no directory entry")))?;
    let (encryption_key, url) = entry.split_at(32.min(entry.len()));
    let mut out = json!({"address": address.to_string(), "url": String::from_utf8_lossy(url), "encryption_key": selfcloud_core::hex(encryption_key)});
    if query.proof {
        let (value, proof) = blocking(|| api.store.prove(&key, tip.height))?;
        if let Some(map) = out.as_object_mut() {
            map.insert("height".into(), json!(tip.height));
            map.insert("state_root".into(), json!(selfcloud_core::hex(&tip.state_root)));
            map.insert("value".into(), json!(value.map(|v| selfcloud_core::hex(&v))));
            map.insert("proof".into(), json!(selfcloud_core::hex(&proof)));
        }
    }
    Ok(Json(out))
}

/// `GET /v1/apps/{app_id}` → `{app_id, owner, name}`: who registered that app id.
async fn app_registration(State(api): State<Api>, Path(app_id): Path<String>) -> ApiResult {
    let entry = api.store.latest(&crate::state::keys::app(&app_id))?.ok_or_else(|| ChainError::NotFound(format!("app {app_id:?} is not registered")))?;
    let owner: [u8; 20] = entry.get(..20).and_then(|b| b.try_into().ok()).ok_or_else(|| ChainError::Storage("app record".into()))?;
    Ok(Json(json!({"app_id": app_id, "owner": Address(owner).to_string(), "name": String::from_utf8_lossy(&entry[20..])})))
}

async fn validators(State(api): State<Api>) -> ApiResult {
    let list: Vec<Value> = api.network.validators.iter().map(|v| json!({"public_key": v.public_key, "p2p": v.p2p.to_string(), "api": format!("http://{}", v.http)})).collect();
    Ok(Json(json!({"validators": list, "identity": api.network.identity})))
}

#[derive(Deserialize)]
struct WsQuery {
    /// Comma-separated channels; default all three.
    channels: Option<String>,
}

/// `GET /v1/ws?channels=blocks,transactions,validators` (WebSocket). The server sends JSON
/// messages `{channel, data}`: `validators` once on connecting (the set is fixed for the
/// network's life), then per committed block a `blocks` message (the block without its
/// transactions, plus `transaction_count`) and a `transactions` message per transaction (with
/// `height`). A client may also send `{"subscribe": [...]}` to change its channels. A client too
/// slow to keep up gets `{channel: "error", data: {lagged: n}}` and continues from the newest block.
async fn websocket(State(api): State<Api>, Query(query): Query<WsQuery>, upgrade: axum::extract::WebSocketUpgrade) -> Result<Response, ApiError> {
    let channels = parse_channels(query.channels.as_deref().unwrap_or("blocks,transactions,validators"))?;
    Ok(upgrade.max_message_size(64 * 1024).on_upgrade(move |socket| stream_events(api, socket, channels)))
}

#[derive(Clone, Copy, Default)]
struct Channels {
    blocks: bool,
    transactions: bool,
    validators: bool,
}

fn parse_channels(list: &str) -> Result<Channels, ChainError> {
    let mut channels = Channels::default();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "blocks" => channels.blocks = true,
            "transactions" => channels.transactions = true,
            "validators" => channels.validators = true,
            other => return Err(ChainError::InvalidArgument(format!("unknown channel {other:?} (blocks, transactions, validators)"))),
        }
    }
    Ok(channels)
}

async fn stream_events(api: Api, mut socket: axum::extract::ws::WebSocket, mut channels: Channels) {
    use axum::extract::ws::Message;
    let send = |value: Value| Message::Text(value.to_string().into());
    let validators_message = |api: &Api| {
        let list: Vec<Value> = api.network.validators.iter().map(|v| json!({"public_key": v.public_key, "api": format!("http://{}", v.http)})).collect();
        json!({"channel": "validators", "data": {"validators": list, "identity": api.network.identity}})
    };
    if channels.validators && socket.send(send(validators_message(&api))).await.is_err() {
        return;
    }
    let mut committed = api.committed.subscribe();
    loop {
        tokio::select! {
            block = committed.recv() => {
                let block = match block {
                    Ok(block) => block,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        if socket.send(send(json!({"channel": "error", "data": {"lagged": n}}))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                if channels.blocks {
                    let summary = json!({"channel": "blocks", "data": {
                        "height": block.height, "hash": selfcloud_core::hex(&block.digest()), "parent": selfcloud_core::hex(&block.parent),
                        "view": block.view, "timestamp_ms": block.timestamp_ms, "state_root": selfcloud_core::hex(&block.state_root),
                        "transaction_count": block.txs.len(),
                    }});
                    if socket.send(send(summary)).await.is_err() {
                        return;
                    }
                }
                if channels.transactions {
                    for tx in &block.txs {
                        let mut data = tx_json(tx);
                        if let Some(map) = data.as_object_mut() {
                            map.insert("height".into(), json!(block.height));
                        }
                        if socket.send(send(json!({"channel": "transactions", "data": data}))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { return };
                let Message::Text(text) = message else { continue };
                let asked = serde_json::from_str::<Value>(text.as_str()).ok().and_then(|v| v["subscribe"].as_array().cloned());
                let reply = match asked.map(|list| list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).map(|l| parse_channels(&l)) {
                    Some(Ok(new)) => {
                        let first_validators = new.validators && !channels.validators;
                        channels = new;
                        if first_validators && socket.send(send(validators_message(&api))).await.is_err() {
                            return;
                        }
                        json!({"channel": "subscribed", "data": {"blocks": channels.blocks, "transactions": channels.transactions, "validators": channels.validators}})
                    }
                    Some(Err(e)) => json!({"channel": "error", "data": {"code": e.code(), "message": e.to_string()}}),
                    None => json!({"channel": "error", "data": {"code": "INVALID_ARGUMENT", "message": "send {\"subscribe\": [channels]}"}}),
                };
                if socket.send(send(reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}
