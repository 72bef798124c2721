//! The instance's face to the IPFS network: publish and unpublish (SPEC §5 `files.publish`), the
//! Kubo `id` and `swarm` calls, and fetching a missing DAG over Bitswap for `pin/add`.
//!
//! Nothing leaves the instance unless published: the p2p node serves only what
//! [`crate::publish`] lists. Fetching is the owner's act (the Kubo RPC is owner-only), and what
//! arrives is hashed into its CID by the Bitswap codec before it is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use selfcloud_core::{ApiError, ErrorCode};
use selfcloud_ipfs::export::{self, Entry};
use selfcloud_ipfs::{Cid, MemoryBlocks};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::{blocking, Ctx, Shared};
use crate::blocks::Pin;
use crate::files::{kubo_error, owner_only, AppParam};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/files/{cid}/publish", post(publish).delete(unpublish))
        .route("/api/v0/id", post(kubo_id))
        .route("/api/v0/swarm/connect", post(kubo_swarm_connect))
        .route("/api/v0/swarm/peers", post(kubo_swarm_peers))
}

/// This node's peer id and addresses, for `/v1/info` and the publish answer.
pub(crate) async fn identity(state: &Shared) -> (Option<String>, Vec<String>) {
    match &state.p2p {
        Some(node) => (Some(node.peer_id().to_string()), node.addresses().await.iter().map(ToString::to_string).collect()),
        None => (None, Vec::new()),
    }
}

fn no_p2p() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "this instance runs without a p2p node (SELFCLOUD_P2P_HOST=off)")
}

/// `POST /v1/files/{cid}/publish` — serve a DAG the caller's namespace pins to other peers.
async fn publish(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<AppParam>) -> Result<Response, ApiError> {
    let root = crate::files::parse_cid(&ctx, &cid)?;
    let namespace = ctx.namespace(q.app.as_deref())?;
    if state.p2p.is_none() {
        return Err(ctx.fail(no_p2p()));
    }
    let store = state.store.clone();
    let blocks = blocking(&ctx, move || {
        if store.pin(&namespace, &root.to_string())?.is_none() {
            return Ok(None);
        }
        store.publish(&namespace, &root).map(Some)
    })
    .await?;
    let Some(blocks) = blocks else {
        return Err(ctx.fail(ApiError::not_found("no such file in this namespace")));
    };
    let (peer_id, multiaddrs) = identity(&state).await;
    Ok(axum::Json(serde_json::json!({ "cid": root.to_string(), "published": true, "blocks": blocks, "peer_id": peer_id, "multiaddrs": multiaddrs })).into_response())
}

/// `DELETE /v1/files/{cid}/publish` — stop serving it. An app may withdraw only what it
/// published; the owner may withdraw anything.
async fn unpublish(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<AppParam>) -> Result<Response, ApiError> {
    let root = crate::files::parse_cid(&ctx, &cid)?;
    let namespace = ctx.namespace(q.app.as_deref())?;
    let owner = ctx.caller == selfcloud_core::caller::Caller::Owner;
    let store = state.store.clone();
    let done = blocking(&ctx, move || match store.publisher(&root)? {
        Some(by) if by == namespace || owner => store.unpublish(&root),
        _ => Ok(false),
    })
    .await?;
    if !done {
        return Err(ctx.fail(ApiError::not_found("this namespace has not published that file")));
    }
    Ok(axum::Json(serde_json::json!({ "cid": root.to_string(), "published": false })).into_response())
}

async fn kubo_id(State(state): State<Shared>, ctx: Ctx) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let (peer_id, addresses) = identity(&state).await;
    axum::Json(serde_json::json!({
        "ID": peer_id,
        "Addresses": addresses,
        "AgentVersion": concat!("selfcloud/", env!("CARGO_PKG_VERSION")),
        "Protocols": if state.p2p.is_some() { vec![selfcloud_ipfs::bitswap::PROTOCOL, "/ipfs/id/1.0.0"] } else { Vec::new() },
    }))
    .into_response()
}

#[derive(Deserialize)]
struct AddrQuery {
    arg: Option<String>,
}

async fn kubo_swarm_connect(State(state): State<Shared>, ctx: Ctx, Query(q): Query<AddrQuery>) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let Some(node) = &state.p2p else { return kubo_error(StatusCode::SERVICE_UNAVAILABLE, no_p2p().message) };
    let Some(text) = q.arg.as_deref() else { return kubo_error(StatusCode::BAD_REQUEST, "argument \"address\" is required") };
    let addr: selfcloud_p2p::Multiaddr = match text.parse() {
        Ok(a) => a,
        Err(e) => return kubo_error(StatusCode::BAD_REQUEST, format!("invalid multiaddr {text:?}: {e}")),
    };
    match node.connect(addr).await {
        Ok(peer) => axum::Json(serde_json::json!({ "Strings": [format!("connect {peer} success")] })).into_response(),
        Err(e) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, format!("connect failure: {e}")),
    }
}

async fn kubo_swarm_peers(State(state): State<Shared>, ctx: Ctx) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let peers: Vec<_> = state.p2p.as_ref().map(|n| n.peers()).unwrap_or_default().into_iter().map(|p| serde_json::json!({ "Peer": p.to_string() })).collect();
    axum::Json(serde_json::json!({ "Peers": peers })).into_response()
}

/// Fetch the DAG under `root` from connected peers into the store and pin it in the owner's
/// namespace, in one commit with its last blocks (so garbage collection never sees it half
/// pinned). A fetch cut short keeps what came, unpinned, for a retry (garbage collection takes
/// it if nobody pins it). Returns the blocks and bytes fetched; `fetched` counts the blocks as
/// they are stored, for progress reports.
pub(crate) async fn fetch_and_pin(state: &Shared, quota_bytes: u64, root: Cid, fetched: Arc<AtomicU64>) -> Result<(u64, u64), String> {
    let Some(node) = &state.p2p else { return Err(no_p2p().message) };
    let (blocks_tx, mut blocks_rx) = mpsc::channel::<(Cid, Vec<u8>)>(16);
    let (complete_tx, complete_rx) = tokio::sync::oneshot::channel::<bool>();
    let store = state.store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut writer = store.block_writer(quota_bytes).map_err(|e| e.to_string())?;
        // The root block tells the pin its file size.
        let mut size = None;
        while let Some((cid, block)) = blocks_rx.blocking_recv() {
            if cid == root {
                size = Some(file_size(&root, &block));
            }
            selfcloud_ipfs::BlockSink::put(&mut writer, &cid, &block).map_err(|e| e.to_string())?;
            fetched.fetch_add(1, Ordering::Relaxed);
        }
        let pin = match complete_rx.blocking_recv() {
            Ok(true) => {
                // Without a fetched root, the root was already here; only children came.
                let size = size.or_else(|| store.block(&root).ok().flatten().map(|block| file_size(&root, &block)));
                size.map(|size| Pin { cid: root.to_string(), size, name: None, kind: "recursive".into(), pinned_at: selfcloud_core::unix_now_ms() })
            }
            _ => None,
        };
        writer.finish(pin.as_ref().map(|pin| ("owner", pin))).map_err(|e| e.to_string())
    });
    let store = state.store.clone();
    // Held blocks are followed, not fetched again. Raw blocks have no links, so a held one need
    // not even be read.
    let local = move |cid: &Cid| -> Option<Vec<u8>> {
        if cid.codec() == selfcloud_ipfs::RAW {
            return store.has_block(cid).ok().filter(|held| *held).map(|_| Vec::new());
        }
        store.block(cid).ok().flatten()
    };
    // `fetch_dag` drops the block sender when it returns, which ends the writer's loop.
    let fetched = node.fetch_dag(root, local, blocks_tx).await;
    let _ = complete_tx.send(fetched.is_ok());
    let written = writer.await.map_err(|_| "the store writer stopped".to_owned())?;
    let counts = fetched.map_err(|e| e.to_string())?;
    written?;
    Ok(counts)
}

fn file_size(root: &Cid, block: &[u8]) -> u64 {
    let mut one = MemoryBlocks::default();
    one.blocks.insert(*root, block.to_vec());
    match export::stat(&one, root) {
        Ok(Entry::File { size }) => size,
        _ => block.len() as u64,
    }
}
