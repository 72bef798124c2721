//! Whole DAGs and raw blocks in and out through the Kubo RPC: `dag/import` (CAR files),
//! `block/put`, and `get` (a tar archive of a file or directory). Owner only, like all of
//! `/api/v0`.
//!
//! Everything streams: a CAR is read section by section on a blocking thread from pieces the
//! socket delivers, and `get` writes its tar through a bounded channel, so neither direction
//! holds more than a few blocks, whatever the DAG's size.

use std::io::{Read, Write};

use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::{Buf, Bytes};
use selfcloud_ipfs::car::CarReader;
use selfcloud_ipfs::export::{self, Entry};
use selfcloud_ipfs::{BlockSink, BlockSource, Cid};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::{Ctx, Shared};
use crate::blocks::RootOutcomes;
use crate::files::{feed_pieces, kubo_error, next_kubo_field, owner_arg, owner_only, ArgQuery, ChannelBody, Pieces, DOWNLOAD_QUEUE, UPLOAD_QUEUE};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v0/dag/import", post(dag_import))
        .route("/api/v0/block/put", post(block_put))
        .route("/api/v0/get", post(get))
}

/// A blocking `Read` over pieces arriving from the socket: `None` marks the clean end, and a
/// channel closed without it (the upload failed) reads as an error, so no cut-off upload is
/// taken for a whole one.
struct ChannelReader {
    rx: mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Some(piece)) => self.current = piece,
                Some(None) => return Ok(0),
                None => return Err(std::io::Error::other("the upload was cut off")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Feed one multipart field to a blocking worker reading it through a [`ChannelReader`]; returns
/// the worker's answer. Feeding stops early when the worker stops reading (e.g. a bad CAR).
async fn feed_field<T: Send + 'static>(field: &mut (dyn Pieces + Send), work: impl FnOnce(ChannelReader) -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel::<Option<Bytes>>(UPLOAD_QUEUE);
    let worker = tokio::task::spawn_blocking(move || work(ChannelReader { rx, current: Bytes::new() }));
    let fed = feed_pieces(field, tx).await;
    let answer = worker.await.map_err(|_| "internal error".to_owned())?;
    fed.map_err(|e| e.message)?;
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DagImportQuery {
    pin_roots: Option<bool>,
}

/// `dag/import` — one CAR v1 per multipart field; every block is verified against its CID, and
/// each root whose DAG is complete is pinned in the same commit as the blocks.
async fn dag_import(State(state): State<Shared>, ctx: Ctx, Query(q): Query<DagImportQuery>, mut multipart: Multipart) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let pin_roots = q.pin_roots.unwrap_or(true);
    let mut lines = String::new();
    loop {
        let mut field = match next_kubo_field(&mut multipart).await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(response) => return response,
        };
        let (store, quota) = (state.store.clone(), ctx.quota_bytes);
        let imported = feed_field(&mut field, move |input| -> Result<RootOutcomes, String> {
            let mut car = CarReader::new(input).map_err(|e| e.to_string())?;
            let mut writer = store.block_writer(quota).map_err(|e| e.to_string())?;
            while let Some((cid, block)) = car.next_block().map_err(|e| e.to_string())? {
                writer.put(&cid, &block).map_err(|e| e.to_string())?;
            }
            if pin_roots {
                writer.finish_pinning_complete("owner", &car.roots).map_err(|e| e.to_string())
            } else {
                writer.finish(None).map_err(|e| e.to_string())?;
                Ok(car.roots.iter().map(|r| (*r, Ok(0))).collect())
            }
        })
        .await;
        match imported {
            Ok(Ok(roots)) => {
                for (root, outcome) in roots {
                    let message = match outcome {
                        Ok(_) => String::new(),
                        Err(e) => format!("the DAG under this root is incomplete: {e}"),
                    };
                    lines.push_str(&serde_json::json!({ "Root": { "Cid": { "/": root.to_string() }, "PinErrorMsg": message } }).to_string());
                    lines.push('\n');
                }
            }
            Ok(Err(e)) | Err(e) => return kubo_error(StatusCode::BAD_REQUEST, format!("importing the CAR: {e}")),
        }
    }
    if lines.is_empty() {
        return kubo_error(StatusCode::BAD_REQUEST, "no CAR file in the multipart body");
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct BlockPutQuery {
    cid_codec: Option<String>,
    mhtype: Option<String>,
    pin: Option<bool>,
}

/// `block/put` — store raw blocks (one per multipart field) under CIDv1 of the given codec.
/// Unpinned unless `pin=true`, as in Kubo: the next garbage collection takes them otherwise.
async fn block_put(State(state): State<Shared>, ctx: Ctx, Query(q): Query<BlockPutQuery>, mut multipart: Multipart) -> Response {
    if let Err(r) = owner_only(&ctx) {
        return r;
    }
    let codec = match q.cid_codec.as_deref().unwrap_or("raw") {
        "raw" => selfcloud_ipfs::RAW,
        "dag-pb" => selfcloud_ipfs::DAG_PB,
        "dag-cbor" => selfcloud_ipfs::DAG_CBOR,
        other => return kubo_error(StatusCode::BAD_REQUEST, format!("unsupported cid-codec {other:?} (raw, dag-pb or dag-cbor)")),
    };
    if let Some(other) = q.mhtype.as_deref().filter(|m| *m != "sha2-256") {
        return kubo_error(StatusCode::BAD_REQUEST, format!("unsupported mhtype {other:?} (sha2-256)"));
    }
    let mut lines = String::new();
    loop {
        let mut field = match next_kubo_field(&mut multipart).await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(response) => return response,
        };
        let mut block = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(piece)) if block.len() + piece.len() <= selfcloud_ipfs::BLOCK_BYTES_MAX => block.extend_from_slice(&piece),
                Ok(Some(_)) => return kubo_error(StatusCode::BAD_REQUEST, format!("a block is at most {} bytes", selfcloud_ipfs::BLOCK_BYTES_MAX)),
                Ok(None) => break,
                Err(e) => return kubo_error(StatusCode::BAD_REQUEST, format!("malformed multipart body: {e}")),
            }
        }
        let cid = selfcloud_ipfs::cid_of(selfcloud_ipfs::cid::Version::V1, codec, &block);
        if codec == selfcloud_ipfs::DAG_PB {
            if let Err(e) = selfcloud_ipfs::links(&cid, &block) {
                return kubo_error(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
        let (store, quota, pin, size) = (state.store.clone(), ctx.quota_bytes, q.pin.unwrap_or(false), block.len());
        let stored = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut writer = store.block_writer(quota).map_err(|e| e.to_string())?;
            writer.put(&cid, &block).map_err(|e| e.to_string())?;
            if pin {
                writer.finish_pinning_complete("owner", &[cid]).map_err(|e| e.to_string())?;
                Ok(())
            } else {
                writer.finish(None).map_err(|e| e.to_string())
            }
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                lines.push_str(&serde_json::json!({ "Key": cid.to_string(), "Size": size }).to_string());
                lines.push('\n');
            }
            Ok(Err(e)) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, e),
            Err(_) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    }
    if lines.is_empty() {
        return kubo_error(StatusCode::BAD_REQUEST, "no block in the multipart body");
    }
    ([(header::CONTENT_TYPE, "application/json")], lines).into_response()
}

/// A blocking `Write` that hands the response body to the socket in 256 KiB pieces.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pending: Vec<u8>,
}

const WRITE_PIECE: usize = 256 << 10;

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= WRITE_PIECE {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.pending, Vec::with_capacity(WRITE_PIECE)));
        self.tx.blocking_send(Ok(piece)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// A file's bytes as a `Read`.
struct FileRead<'a, B: BlockSource + ?Sized> {
    pieces: export::FileReader<'a, B>,
    current: Bytes,
}

impl<B: BlockSource + ?Sized> Read for FileRead<'_, B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.pieces.next() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Directories nested deeper than this are refused (a DAG is data; recursion must be bounded).
const DEPTH_MAX: usize = 64;

fn append(archive: &mut tar::Builder<ChannelWriter>, source: &(impl BlockSource + ?Sized), cid: Cid, path: &str, depth: usize) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    match export::stat(source, &cid).map_err(|e| std::io::Error::other(e.to_string()))? {
        Entry::File { size } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(size);
            archive.append_data(&mut header, path, FileRead { pieces: export::FileReader::new(source, cid), current: Bytes::new() })
        }
        Entry::Directory(entries) => {
            if depth >= DEPTH_MAX {
                return Err(std::io::Error::other("directories nested too deep"));
            }
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            archive.append_data(&mut header, path, std::io::empty())?;
            for (name, child, _) in entries {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(std::io::Error::other(format!("unsafe entry name {name:?} in directory {cid}")));
                }
                append(archive, source, child, &format!("{path}/{name}"), depth + 1)?;
            }
            Ok(())
        }
    }
}

/// `get` — the file or directory under `arg` as a tar archive named by its CID (what Kubo's
/// `get` sends); a failure after the first byte cuts the archive short.
async fn get(State(state): State<Shared>, ctx: Ctx, Query(q): Query<ArgQuery>) -> Response {
    let root = match owner_arg(&ctx, &q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.get(&root)).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, format!("block was not found locally (offline): {root}")),
        _ => return kubo_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
    let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Builder::new(ChannelWriter { tx: tx.clone(), pending: Vec::with_capacity(WRITE_PIECE) });
        let written = append(&mut archive, store.as_ref(), root, &root.to_string(), 0).and_then(|()| archive.into_inner()).and_then(|mut w| w.flush());
        if let Err(e) = written {
            let _ = tx.blocking_send(Err(e));
        }
    });
    ([(header::CONTENT_TYPE, "application/x-tar")], Body::new(ChannelBody { rx })).into_response()
}
