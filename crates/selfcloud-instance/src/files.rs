//! The instance's IPFS routes (SPEC §5 files rows, the Kubo RPC subset, the trustless gateway).
//!
//! Uploads stream: the body is fed piece by piece to the UnixFS importer on a blocking thread, which
//! writes sealed blocks in batches ([`crate::blocks`]); downloads stream the other way. Neither
//! holds a whole file in memory.
//!
//! Who sees what: an app sees only the CIDs pinned in its own namespace (`GET /v1/files/{cid}` of
//! anything else is `NOT_FOUND`, whether or not the block exists — no probing for content). The
//! owner (the only caller the gateway lets reach `/api/v0` and `/ipfs`) sees every block.

use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use selfcloud_core::caller::Caller;
use selfcloud_core::{ApiError, ErrorCode};
use selfcloud_ipfs::export::{self, ByteRange, DagScope, Entry};
use selfcloud_ipfs::{BlockSource, Cid, FileImporter, Profile};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::{blocking, Ctx, Shared};
use crate::blocks::Pin;
use crate::store::Store;

/// Pieces of an upload in flight between the socket and the importer.
pub(crate) const UPLOAD_QUEUE: usize = 16;
/// Pieces of a download in flight.
pub(crate) const DOWNLOAD_QUEUE: usize = 8;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/files", post(files_add).get(files_list))
        .route("/v1/files/{cid}", get(files_get).delete(files_remove))
        .route("/api/v0/add", post(kubo_add))
        .route("/api/v0/cat", post(kubo_cat))
        .route("/api/v0/pin/add", post(kubo_pin_add))
        .route("/api/v0/pin/rm", post(kubo_pin_rm))
        .route("/api/v0/pin/ls", post(kubo_pin_ls))
        .route("/api/v0/block/get", post(kubo_block_get))
        .route("/api/v0/block/stat", post(kubo_block_stat))
        .route("/api/v0/dag/export", post(kubo_dag_export))
        .route("/api/v0/repo/gc", post(kubo_repo_gc))
        .route("/ipfs/{cid}", get(gateway_get).head(gateway_get))
        // Uploads are bounded by the tier's quota, not by the JSON body limit.
        .layer(DefaultBodyLimit::disable())
}

// ---------- shared machinery ----------

/// A response body fed from a channel (the blocking reader is the sender).
pub(crate) struct ChannelBody {
    pub(crate) rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|item| item.map(|r| r.map(http_body::Frame::data)))
    }
}

/// Threads reading one download's blocks.
const READ_THREADS: usize = 2;

/// Stream the file under `root` as a body; errors after the first byte cut the stream short
/// (the status is already sent), which clients see as a truncated transfer.
fn stream_file(store: Arc<Store>, root: Cid) -> Body {
    let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
    tokio::task::spawn_blocking(move || {
        // Blocks are read, opened and checked on two threads ahead of the one being sent.
        let gone = || selfcloud_ipfs::Error::Store("the client went away".into());
        let sent = export::read_file_parallel(store.as_ref(), root, READ_THREADS, |piece| tx.blocking_send(Ok(piece)).map_err(|_| gone()));
        if let Err(e) = sent {
            if !tx.is_closed() {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    Body::new(ChannelBody { rx })
}

/// Stream a CAR v1 of the DAG under `root`.
fn stream_car(store: Arc<Store>, root: Cid, scope: DagScope, range: Option<ByteRange>) -> Body {
    let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
    tokio::task::spawn_blocking(move || {
        if tx.blocking_send(Ok(Bytes::from(selfcloud_ipfs::car::header(&[root])))).is_err() {
            return;
        }
        let result = export::walk_scoped(store.as_ref(), root, scope, range, |cid, block| {
            tx.blocking_send(Ok(Bytes::from(selfcloud_ipfs::car::section(cid, block)))).map_err(|_| selfcloud_ipfs::Error::Store("client went away".into()))
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Body::new(ChannelBody { rx })
}

fn ipfs_error(ctx: &Ctx, e: selfcloud_ipfs::Error) -> ApiError {
    use selfcloud_ipfs::Error as E;
    ctx.fail(match e {
        E::Malformed(_) | E::Unsupported(_) | E::BlockTooLarge(_) => ApiError::invalid(e.to_string()),
        E::Missing(_) => ApiError::not_found(e.to_string()),
        E::HashMismatch(_) | E::Store(_) => {
            tracing::error!(error = %e, request_id = %ctx.request_id, "ipfs failure");
            ApiError::internal()
        }
        _ => ApiError::internal(),
    })
}

pub(crate) fn parse_cid(ctx: &Ctx, text: &str) -> Result<Cid, ApiError> {
    selfcloud_ipfs::parse_cid(text).map_err(|e| ctx.fail(ApiError::invalid(format!("{e}: {text:?}"))))
}

/// What an upload produced.
struct Added {
    cid: Cid,
    size: u64,
    dag_size: u64,
}

/// Import pieces arriving on `rx` as one file, pin it in `namespace`, durably.
async fn import_stream(ctx: &Ctx, store: Arc<Store>, profile: Profile, namespace: String, name: Option<String>, pieces: &mut (dyn Pieces + Send)) -> Result<Added, ApiError> {
    // `None` marks the clean end of the upload; a channel closed without it means the upload
    // failed (the client went away or stalled), and nothing may be pinned. (Aborting the
    // blocking task does not stop it once it runs: it saw the closed channel as the end of the
    // file and pinned what had arrived.)
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(UPLOAD_QUEUE);
    let quota = ctx.quota_bytes;
    let worker = tokio::task::spawn_blocking(move || -> Result<Result<Added, selfcloud_ipfs::Error>, crate::store::StoreError> {
        let mut writer = store.block_writer(quota)?;
        let imported = {
            let mut importer = FileImporter::new(profile, &mut writer);
            let mut failed = None;
            loop {
                match rx.blocking_recv() {
                    Some(Some(piece)) => {
                        if let Err(e) = importer.write(&piece) {
                            failed = Some(e);
                            break;
                        }
                    }
                    Some(None) => break,
                    None => {
                        failed = Some(selfcloud_ipfs::Error::Read(std::io::Error::other("the upload was cut off")));
                        break;
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => importer.finish(),
            }
        };
        match imported {
            Ok(root) => {
                let pin = Pin { cid: root.cid.to_string(), size: root.size, name, kind: "recursive".into(), pinned_at: selfcloud_core::unix_now_ms() };
                writer.finish(Some((&namespace, &pin)))?;
                Ok(Ok(Added { cid: root.cid, size: root.size, dag_size: root.dag_size }))
            }
            Err(_) if writer.over_quota() => Err(crate::store::StoreError::QuotaExceeded { quota_bytes: quota }),
            Err(e) => Ok(Err(e)),
        }
    });
    if let Err(e) = feed_pieces(pieces, tx).await {
        worker.abort();
        return Err(ctx.fail(e));
    }
    let outcome = match worker.await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(error = %e, "import task failed");
            return Err(ctx.fail(ApiError::internal()));
        }
    };
    match outcome {
        Ok(Ok(added)) => Ok(added),
        Ok(Err(e)) => Err(ipfs_error(ctx, e)),
        Err(crate::store::StoreError::QuotaExceeded { quota_bytes }) => {
            Err(ctx.fail(ApiError::new(ErrorCode::QuotaExceeded, format!("the tier's storage quota of {quota_bytes} bytes would be exceeded"))))
        }
        Err(e) => {
            tracing::error!(error = %e, request_id = %ctx.request_id, "store failure during import");
            Err(ctx.fail(ApiError::internal()))
        }
    }
}

/// Send an upload's pieces to its importer, then the end marker (`None`) once the body is whole.
/// A failed upload sends no marker, so the importer sees it cut off and keeps nothing. Stops
/// early, with `Ok`, when the importer stops reading (its result says why).
pub(crate) async fn feed_pieces(pieces: &mut (dyn Pieces + Send), tx: mpsc::Sender<Option<Bytes>>) -> Result<(), ApiError> {
    loop {
        match pieces.next_piece().await? {
            Some(piece) => {
                if tx.send(Some(piece)).await.is_err() {
                    return Ok(());
                }
            }
            None => {
                let _ = tx.send(None).await;
                return Ok(());
            }
        }
    }
}

/// A source of upload pieces: a raw body or one multipart field.
pub(crate) trait Pieces {
    /// The next piece, `None` at the end.
    fn next_piece(&mut self) -> StdPin<Box<dyn std::future::Future<Output = Result<Option<Bytes>, ApiError>> + Send + '_>>;
}

impl Pieces for Body {
    fn next_piece(&mut self) -> StdPin<Box<dyn std::future::Future<Output = Result<Option<Bytes>, ApiError>> + Send + '_>> {
        Box::pin(async move {
            loop {
                match http_body_util::BodyExt::frame(self).await {
                    None => return Ok(None),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Ok(Some(data)),
                        Err(_) => continue, // trailers
                    },
                    Some(Err(_)) => return Err(ApiError::invalid("the upload was cut short or too large")),
                }
            }
        })
    }
}

impl Pieces for axum::extract::multipart::Field<'_> {
    fn next_piece(&mut self) -> StdPin<Box<dyn std::future::Future<Output = Result<Option<Bytes>, ApiError>> + Send + '_>> {
        Box::pin(async move { self.chunk().await.map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}"))) })
    }
}

// ---------- SPEC §5 files rows ----------

#[derive(Deserialize)]
struct AddQuery {
    name: Option<String>,
    profile: Option<String>,
}

fn check_name(ctx: &Ctx, name: Option<String>) -> Result<Option<String>, ApiError> {
    match name {
        Some(n) if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) => Err(ctx.fail(ApiError::invalid("a name must be 1-255 characters without control characters"))),
        other => Ok(other),
    }
}

/// `POST /v1/files` — the raw body is the file.
async fn files_add(State(state): State<Shared>, ctx: Ctx, Query(q): Query<AddQuery>, request: Request) -> Result<Response, ApiError> {
    let namespace = ctx.namespace(None)?;
    let profile = match q.profile.as_deref() {
        None => Profile::default(),
        Some(p) => Profile::named(p).map_err(|e| ctx.fail(ApiError::invalid(e.to_string())))?,
    };
    let name = check_name(&ctx, q.name)?;
    let mut body = request.into_body();
    let added = import_stream(&ctx, state.store.clone(), profile, namespace, name, &mut body).await?;
    let body = serde_json::json!({ "cid": added.cid.to_string(), "size": added.size });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct AppParam {
    pub(crate) app: Option<String>,
}

/// `GET /v1/files` — the caller's pins.
async fn files_list(State(state): State<Shared>, ctx: Ctx, Query(q): Query<AppParam>) -> Result<Response, ApiError> {
    let namespace = ctx.namespace(q.app.as_deref())?;
    let store = state.store.clone();
    let pins = blocking(&ctx, move || store.pins(&namespace)).await?;
    Ok(axum::Json(serde_json::json!({ "files": pins })).into_response())
}

/// `GET /v1/files/{cid}` — the bytes, if the caller's namespace holds the file.
async fn files_get(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<AppParam>) -> Result<Response, ApiError> {
    let root = parse_cid(&ctx, &cid)?;
    let namespace = ctx.namespace(q.app.as_deref())?;
    let store = state.store.clone();
    let key = root.to_string();
    let pinned = blocking(&ctx, move || store.pin(&namespace, &key)).await?;
    let Some(pin) = pinned else {
        return Err(ctx.fail(ApiError::not_found("no such file in this namespace")));
    };
    let mut response = Response::new(stream_file(state.store.clone(), root));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(pin.size));
    headers.insert(header::ETAG, HeaderValue::from_str(&format!("\"{root}\"")).map_err(|_| ctx.fail(ApiError::internal()))?);
    Ok(response)
}

/// `DELETE /v1/files/{cid}` — unpin from the caller's namespace; unreferenced blocks are then
/// collected in the background.
async fn files_remove(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<AppParam>) -> Result<Response, ApiError> {
    let root = parse_cid(&ctx, &cid)?;
    let namespace = ctx.namespace(q.app.as_deref())?;
    let store = state.store.clone();
    let key = root.to_string();
    if !blocking(&ctx, move || store.remove_pin(&namespace, &key)).await? {
        return Err(ctx.fail(ApiError::not_found("no such file in this namespace")));
    }
    spawn_gc(state.store.clone());
    Ok(axum::Json(serde_json::json!({ "cid": root.to_string(), "removed": true })).into_response())
}

fn spawn_gc(store: Arc<Store>) {
    tokio::task::spawn_blocking(move || match store.collect_garbage() {
        Ok((blocks, bytes)) => tracing::info!(blocks, bytes, "garbage collected"),
        Err(e) => tracing::error!(error = %e, "garbage collection failed"),
    });
}

// ---------- Kubo RPC subset ----------

/// Kubo's error body `{Message, Code, Type}`.
/// The next part of a Kubo RPC multipart body; `Err` is the finished Kubo-shaped 400.
pub(crate) async fn next_kubo_field(multipart: &mut Multipart) -> Result<Option<axum::extract::multipart::Field<'_>>, Response> {
    multipart.next_field().await.map_err(|e| kubo_error(StatusCode::BAD_REQUEST, format!("malformed multipart body: {e}")))
}

pub(crate) fn kubo_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(kubo_error_value(message))).into_response()
}

/// Kubo's error object (also a value of its own in a stream that fails after it began).
fn kubo_error_value(message: impl Into<String>) -> serde_json::Value {
    serde_json::json!({ "Message": message.into(), "Code": 0, "Type": "error" })
}

fn kubo_from_api(e: ApiError) -> Response {
    kubo_error(e.code.status(), e.message)
}

#[allow(clippy::result_large_err)] // the error is the finished Kubo-shaped response
pub(crate) fn owner_only(ctx: &Ctx) -> Result<(), Response> {
    // The gateway already lets only the owner through; this is the instance's own guard.
    match ctx.caller {
        Caller::Owner => Ok(()),
        Caller::App(_) => Err(kubo_error(StatusCode::FORBIDDEN, "the Kubo RPC is for the instance's owner")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KuboAddQuery {
    cid_version: Option<u64>,
    raw_leaves: Option<bool>,
    chunker: Option<String>,
}

/// `POST /api/v0/add` — multipart; one NDJSON line `{Name, Hash, Size}` per file. Every add is
/// pinned in the owner's namespace (an unpinned add would be the next GC's to take), so Kubo's
/// `pin` and `quiet` parameters are accepted and ignored.
async fn kubo_add(State(state): State<Shared>, ctx: Ctx, Query(q): Query<KuboAddQuery>, mut multipart: Multipart) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let profile = match Profile::from_kubo_params(q.cid_version, q.raw_leaves, q.chunker.as_deref()) {
        Ok(p) => p,
        Err(e) => return kubo_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut lines = String::new();
    loop {
        let mut field = match next_kubo_field(&mut multipart).await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(response) => return response,
        };
        let name = field.file_name().or(field.name()).unwrap_or("").to_owned();
        let display = if name.is_empty() { None } else { Some(name.clone()) };
        match import_stream(&ctx, state.store.clone(), profile, "owner".into(), display, &mut field).await {
            Ok(added) => {
                let shown = if name.is_empty() { added.cid.to_string() } else { name };
                lines.push_str(&serde_json::json!({ "Name": shown, "Hash": added.cid.to_string(), "Size": added.dag_size.to_string() }).to_string());
                lines.push('\n');
            }
            Err(e) => return kubo_from_api(e),
        }
    }
    if lines.is_empty() {
        return kubo_error(StatusCode::BAD_REQUEST, "no file in the multipart body");
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ArgQuery {
    pub(crate) arg: Option<String>,
}

#[allow(clippy::result_large_err)] // the error is the finished Kubo-shaped response
fn arg_cid(q: &ArgQuery) -> Result<Cid, Response> {
    let arg = q.arg.as_deref().ok_or_else(|| kubo_error(StatusCode::BAD_REQUEST, "argument \"arg\" is required"))?;
    // Kubo accepts `/ipfs/<cid>` too.
    let text = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    selfcloud_ipfs::parse_cid(text).map_err(|e| kubo_error(StatusCode::BAD_REQUEST, format!("invalid path {arg:?}: {e}")))
}

async fn kubo_cat(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    let root = match owner_arg(&ctx, &q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || export::stat(store.as_ref(), &root)).await {
        Ok(Ok(Entry::File { size })) => {
            let mut response = Response::new(stream_file(state.store.clone(), root));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response.headers_mut().insert("x-content-length", HeaderValue::from(size));
            response
        }
        Ok(Ok(Entry::Directory(_))) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "this dag node is a directory"),
        Ok(Err(selfcloud_ipfs::Error::Missing(c))) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, format!("block was not found locally (offline): {c}")),
        Ok(Err(e)) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

#[derive(Deserialize)]
struct PinAddQuery {
    arg: Option<String>,
    recursive: Option<bool>,
    progress: Option<bool>,
}

/// How often a `pin/add?progress=true` stream reports (Kubo's interval).
const PIN_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `pin/add` — pin a DAG in the owner's namespace (`recursive=false`: the root block only, a
/// direct pin); blocks not held here are fetched from connected peers over Bitswap first.
///
/// A fetch has no total time limit (a large DAG takes as long as it takes); it fails when no block
/// arrives for the want timeout. With `progress=true` the answer streams as Kubo's does:
/// `{"Progress": n}` lines (blocks fetched so far) every half second, then `{"Pins": [cid]}`, or
/// an error object (`"Type": "error"`) if the fetch fails after the stream began.
async fn kubo_pin_add(State(state): State<Shared>, ctx: Ctx, Query(q): Query<PinAddQuery>) -> Response {
    let root = match owner_arg(&ctx, &ArgQuery { arg: q.arg }) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let recursive = q.recursive.unwrap_or(true);
    let fetched = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pinning = pin_add(state, ctx.quota_bytes, root, recursive, fetched.clone());
    let pinned = serde_json::json!({ "Pins": [root.to_string()] });
    if !q.progress.unwrap_or(false) {
        return match pinning.await {
            Ok(()) => axum::Json(pinned).into_response(),
            Err(e) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    }
    let (tx, rx) = mpsc::channel(4);
    // The pin runs in this task, which ends (dropping the fetch) as soon as the client is gone:
    // every send below fails once the response body, and with it `rx`, is dropped.
    tokio::spawn(async move {
        let progress = |n: u64| crate::ai::sse::line(&serde_json::json!({ "Progress": n }));
        let mut pinning = std::pin::pin!(pinning);
        let mut tick = tokio::time::interval(PIN_PROGRESS_EVERY);
        tick.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut pinning => break outcome,
                _ = tick.tick() => {
                    if tx.send(progress(fetched.load(std::sync::atomic::Ordering::Relaxed))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        };
        let last = match outcome {
            Ok(()) => {
                let n = fetched.load(std::sync::atomic::Ordering::Relaxed);
                if n > 0 && tx.send(progress(n)).await.is_err() {
                    return;
                }
                pinned
            }
            Err(e) => kubo_error_value(e),
        };
        let _ = tx.send(crate::ai::sse::line(&last)).await;
    });
    let mut response = crate::ai::sse::streaming("application/json", rx);
    // What Kubo's streaming commands send, so its clients read the body as a stream of values.
    response.headers_mut().insert("x-chunked-output", HeaderValue::from_static("1"));
    response
}

/// Pins `root` (see [`kubo_pin_add`]), counting the blocks fetched from the network in `fetched`.
async fn pin_add(state: Shared, quota_bytes: u64, root: Cid, recursive: bool, fetched: Arc<std::sync::atomic::AtomicU64>) -> Result<(), String> {
    let store = state.store.clone();
    let local = tokio::task::spawn_blocking(move || -> Result<(), selfcloud_ipfs::Error> {
        // Pin only what is complete: every block of the DAG (or the root, for a direct pin).
        if recursive {
            export::walk(store.as_ref(), root, |_, _| Ok(()))?;
        } else {
            export::fetch(store.as_ref(), &root)?;
        }
        let size = match export::stat(store.as_ref(), &root) {
            Ok(entry) => entry.size(),
            Err(_) if !recursive => 0,
            Err(e) => return Err(e),
        };
        let kind = if recursive { "recursive" } else { "direct" };
        let pin = Pin { cid: root.to_string(), size, name: None, kind: kind.into(), pinned_at: selfcloud_core::unix_now_ms() };
        store.add_pin("owner", &pin).map_err(|e| selfcloud_ipfs::Error::Store(e.to_string()))
    })
    .await;
    match local {
        Ok(Ok(())) => Ok(()),
        Ok(Err(selfcloud_ipfs::Error::Missing(_))) if recursive && state.p2p.is_some() => crate::network::fetch_and_pin(&state, quota_bytes, root, fetched).await.map(|_| ()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("internal error".into()),
    }
}

async fn kubo_pin_rm(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    let root = match owner_arg(&ctx, &q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = state.store.clone();
    let key = root.to_string();
    match tokio::task::spawn_blocking(move || store.remove_pin("owner", &key)).await {
        Ok(Ok(true)) => {
            spawn_gc(state.store.clone());
            axum::Json(serde_json::json!({ "Pins": [root.to_string()] })).into_response()
        }
        Ok(Ok(false)) => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "not pinned or pinned indirectly"),
        _ => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn kubo_pin_ls(State(state): State<Shared>, ctx: Ctx) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.pins("owner")).await {
        Ok(Ok(pins)) => {
            let keys: serde_json::Map<String, serde_json::Value> = pins.into_iter().map(|p| (p.cid, serde_json::json!({ "Type": p.kind }))).collect();
            axum::Json(serde_json::json!({ "Keys": keys })).into_response()
        }
        _ => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

/// The owner check and the `arg` CID every Kubo call that names a CID starts with.
#[allow(clippy::result_large_err)] // the error is the finished Kubo-shaped response
pub(crate) fn owner_arg(ctx: &Ctx, q: &ArgQuery) -> Result<Cid, Response> {
    owner_only(ctx)?;
    arg_cid(q)
}

async fn owner_block(state: &Shared, ctx: &Ctx, q: &ArgQuery) -> Result<(Cid, Vec<u8>), Response> {
    let cid = owner_arg(ctx, q)?;
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.get(&cid)).await {
        Ok(Ok(Some(block))) => Ok((cid, block)),
        Ok(Ok(None)) => Err(kubo_error(StatusCode::INTERNAL_SERVER_ERROR, format!("block was not found locally (offline): {cid}"))),
        _ => Err(kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
    }
}

async fn kubo_block_get(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    match owner_block(&state, &ctx, &q).await {
        Ok((_, block)) => ([(header::CONTENT_TYPE, "application/octet-stream")], block).into_response(),
        Err(r) => r,
    }
}

async fn kubo_block_stat(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    match owner_block(&state, &ctx, &q).await {
        Ok((cid, block)) => axum::Json(serde_json::json!({ "Key": cid.to_string(), "Size": block.len() })).into_response(),
        Err(r) => r,
    }
}

async fn kubo_dag_export(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    match owner_arg(&ctx, &q) {
        Ok(root) => ([(header::CONTENT_TYPE, "application/vnd.ipld.car")], stream_car(state.store.clone(), root, DagScope::All, None)).into_response(),
        Err(r) => r,
    }
}

async fn kubo_repo_gc(State(state): State<Shared>, ctx: Ctx) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.collect_garbage()).await {
        Ok(Ok((blocks, bytes))) => axum::Json(serde_json::json!({ "RemovedBlocks": blocks, "FreedBytes": bytes })).into_response(),
        _ => kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

// ---------- trustless gateway ----------

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct GatewayQuery {
    format: Option<String>,
    dag_scope: Option<String>,
    entity_bytes: Option<String>,
}

/// `GET|HEAD /ipfs/{cid}` with `format=raw|car` or the matching `Accept`.
async fn gateway_get(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<GatewayQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    let root = parse_cid(&ctx, &cid)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match q.format.as_deref() {
        Some("raw") => "raw",
        Some("car") => "car",
        Some(other) => return Err(ctx.fail(ApiError::invalid(format!("unsupported format {other:?} (raw or car)")))),
        None if accept.contains("application/vnd.ipld.raw") => "raw",
        None if accept.contains("application/vnd.ipld.car") => "car",
        None => return Err(ctx.fail(ApiError::invalid("this is a trustless gateway: ask for format=raw or format=car"))),
    };
    let scope = match q.dag_scope.as_deref() {
        None | Some("all") => DagScope::All,
        Some("entity") => DagScope::Entity,
        Some("block") => DagScope::Block,
        Some(other) => return Err(ctx.fail(ApiError::invalid(format!("unsupported dag-scope {other:?} (block, entity or all)")))),
    };
    let range = match q.entity_bytes.as_deref() {
        None => None,
        Some(_) if format != "car" || scope != DagScope::Entity => return Err(ctx.fail(ApiError::invalid("entity-bytes goes with format=car and dag-scope=entity"))),
        Some(text) => Some(ByteRange::parse(text).map_err(|e| ctx.fail(ApiError::invalid(e.to_string())))?),
    };
    let store = state.store.clone();
    let Some(block) = tokio::task::spawn_blocking(move || store.get(&root)).await.map_err(|_| ctx.fail(ApiError::internal()))?.map_err(|e| ipfs_error(&ctx, e))? else {
        return Err(ctx.fail(ApiError::not_found(format!("block {root} is not here"))));
    };
    // A CAR's bytes depend on its scope and range, so they are part of its entity tag.
    let variant = match (format, scope) {
        ("raw", _) | (_, DagScope::All) if range.is_none() => String::new(),
        _ => format!(".{scope:?}.{}", q.entity_bytes.as_deref().unwrap_or("")).to_lowercase(),
    };
    let etag = HeaderValue::from_str(&format!("\"{root}.{format}{variant}\"")).map_err(|_| ctx.fail(ApiError::internal()))?;
    let mut response = if format == "raw" {
        let mut r = Response::new(Body::from(block.clone()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.ipld.raw"));
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(block.len()));
        r
    } else {
        let mut r = Response::new(stream_car(state.store.clone(), root, scope, range));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.ipld.car; version=1"));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert("x-ipfs-roots", HeaderValue::from_str(&root.to_string()).map_err(|_| ctx.fail(ApiError::internal()))?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=29030400, immutable"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

