//! What the owner shares with the AI for `ai:collaborate`: notes (text) and files (by CID, read
//! from the user's own IPFS node), cut into passages and embedded once when shared. An app whose
//! grant includes `ai:collaborate` gets the passages nearest its message in the prompt, and the
//! response names them as sources. Only the owner may add, list or remove shared items.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use bytes::Bytes;
use selfcloud_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{parse_json, Ai};
use crate::api::{blocking, json_response, Ctx, Shared};

/// Why an app is refused here.
const OWNER_ONLY: &str = "only the owner decides what the AI may read";

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/v1/ai/shared", get(list)).route("/v1/ai/shared/{id}", put(share).get(read).delete(remove))
}

/// The owner's store namespace for shared items.
const NAMESPACE: &str = "ai-shared";
/// Passages are cut at about this many bytes (the embedding model reads 256 tokens).
const PASSAGE_BYTES: usize = 800;
/// Largest text or file that may be shared.
const SHARED_BYTES_MAX: usize = 256 * 1024;
/// At most this many passages go into one prompt…
const SOURCES_MAX: usize = 3;
/// …and only those at least this similar to the message.
const SIMILARITY_MIN: f32 = 0.25;

#[derive(Debug, Deserialize)]
struct ShareIn {
    title: String,
    #[serde(default)]
    text: Option<String>,
    /// A file in the user's IPFS node (UTF-8 text).
    #[serde(default)]
    cid: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SharedItem {
    id: String,
    title: String,
    cid: Option<String>,
    passages: Vec<Passage>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Passage {
    text: String,
    vector: Vec<f32>,
}

/// A passage chosen for a prompt.
pub(crate) struct Source {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) text: String,
    pub(crate) score: f32,
}

/// Cuts text into passages of about [`PASSAGE_BYTES`], at paragraph, then sentence, then word ends.
fn passages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        if current.len() + word.len() > PASSAGE_BYTES && !current.trim().is_empty() {
            out.push(current.trim().to_owned());
            current.clear();
        }
        current.push_str(word);
        let at_paragraph = current.ends_with("\n\n");
        if at_paragraph && current.len() > PASSAGE_BYTES / 2 {
            out.push(current.trim().to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Embeds `texts` off the reactor.
pub(crate) async fn embed(ctx: &Ctx, ai: &std::sync::Arc<Ai>, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    if !ai.has_embedder() {
        return Err(ctx.fail(ApiError::new(ErrorCode::Unavailable, "the embedding model is not installed on this host (run scripts/models.sh)")));
    }
    let ai = ai.clone();
    let result = tokio::task::spawn_blocking(move || ai.embedder().map(|e| e.embed(&texts))).await;
    match result {
        Ok(Some(Ok(out))) => Ok(out),
        Ok(Some(Err(e))) => Err(super::llm_error(ctx, e)),
        _ => Err(ctx.fail(ApiError::internal())),
    }
}

async fn read_file_text(state: &Shared, ctx: &Ctx, cid: &str) -> Result<String, ApiError> {
    let root = crate::files::parse_cid(ctx, cid)?;
    let store = state.store.clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in selfcloud_ipfs::export::FileReader::new(store.as_ref(), root) {
            out.extend_from_slice(&piece.map_err(|e| e.to_string())?);
            if out.len() > SHARED_BYTES_MAX {
                return Err(format!("the file is larger than {SHARED_BYTES_MAX} bytes"));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|_| ctx.fail(ApiError::internal()))?
    .map_err(|e| ctx.fail(ApiError::invalid(format!("cid: {e}"))))?;
    String::from_utf8(bytes).map_err(|_| ctx.fail(ApiError::invalid("cid: only UTF-8 text files can be shared with the AI")))
}

async fn share(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    ctx.check_id("an id", &id)?;
    let input: ShareIn = parse_json(&ctx, &body)?;
    if input.title.trim().is_empty() || input.title.len() > 200 {
        return Err(ctx.fail(ApiError::invalid("title: 1 to 200 bytes")));
    }
    let text = match (input.text, &input.cid) {
        (Some(text), None) => text,
        (None, Some(cid)) => read_file_text(&state, &ctx, cid).await?,
        _ => return Err(ctx.fail(ApiError::invalid("give either text or cid"))),
    };
    if text.trim().is_empty() || text.len() > SHARED_BYTES_MAX {
        return Err(ctx.fail(ApiError::invalid(format!("the shared text must be 1 to {SHARED_BYTES_MAX} bytes"))));
    }
    let ai = super::ai_of(&state, &ctx).await?;
    let pieces = passages(&text);
    // The title goes with every passage so a question about the note's subject finds it.
    let (vectors, _) = embed(&ctx, &ai, pieces.iter().map(|p| format!("{}: {p}", input.title)).collect()).await?;
    let item = SharedItem {
        id: id.clone(),
        title: input.title,
        cid: input.cid,
        passages: pieces.into_iter().zip(vectors).map(|(text, vector)| Passage { text, vector }).collect(),
    };
    let json = serde_json::to_vec(&item).map_err(|_| ctx.fail(ApiError::internal()))?;
    let (store, quota) = (state.store.clone(), ctx.quota_bytes);
    blocking(&ctx, move || store.kv_put(NAMESPACE, &id, &json, quota)).await?;
    let body = json!({"id": item.id, "title": item.title, "passages": item.passages.len()});
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

async fn load_all(state: &Shared, ctx: &Ctx) -> Result<Vec<SharedItem>, ApiError> {
    let store = state.store.clone();
    blocking(ctx, move || {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (rows, more) = store.kv_list(NAMESPACE, "", after.as_deref(), 1000)?;
            for row in &rows {
                if let Some(record) = store.kv_get(NAMESPACE, &row.key)? {
                    if let Ok(item) = serde_json::from_slice::<SharedItem>(&record.json) {
                        items.push(item);
                    }
                }
            }
            match (more, rows.last()) {
                (true, Some(last)) => after = Some(last.key.clone()),
                _ => return Ok(items),
            }
        }
    })
    .await
}

/// The shared passages nearest `message`, best first.
pub(crate) async fn relevant(state: &Shared, ctx: &Ctx, ai: &std::sync::Arc<Ai>, message: &str) -> Result<Vec<Source>, ApiError> {
    let items = load_all(state, ctx).await?;
    if items.is_empty() || !ai.has_embedder() {
        return Ok(Vec::new());
    }
    let (mut vectors, _) = embed(ctx, ai, vec![message.to_owned()]).await?;
    let query = vectors.pop().unwrap_or_default();
    let mut scored: Vec<Source> = items
        .iter()
        .flat_map(|item| {
            item.passages.iter().map(|p| Source { id: item.id.clone(), title: item.title.clone(), text: p.text.clone(), score: selfcloud_llm::cosine(&query, &p.vector) })
        })
        .filter(|s| s.score >= SIMILARITY_MIN)
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(SOURCES_MAX);
    Ok(scored)
}

async fn list(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let items = load_all(&state, &ctx).await?;
    let out: Vec<serde_json::Value> = items.iter().map(|i| json!({"id": i.id, "title": i.title, "cid": i.cid, "passages": i.passages.len()})).collect();
    Ok(json_response(StatusCode::OK, json!({"shared": out}).to_string().into_bytes()))
}

async fn read(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    ctx.check_id("an id", &id)?;
    let store = state.store.clone();
    let key = id.clone();
    let record = blocking(&ctx, move || store.kv_get(NAMESPACE, &key)).await?.ok_or_else(|| ctx.fail(ApiError::not_found(format!("nothing shared as {id}"))))?;
    let item: SharedItem = serde_json::from_slice(&record.json).map_err(|_| ctx.fail(ApiError::internal()))?;
    let text: Vec<&str> = item.passages.iter().map(|p| p.text.as_str()).collect();
    Ok(json_response(StatusCode::OK, json!({"id": item.id, "title": item.title, "cid": item.cid, "passages": text}).to_string().into_bytes()))
}

async fn remove(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    ctx.check_id("an id", &id)?;
    let store = state.store.clone();
    let key = id.clone();
    if !blocking(&ctx, move || store.kv_delete(NAMESPACE, &key)).await? {
        return Err(ctx.fail(ApiError::not_found(format!("nothing shared as {id}"))));
    }
    Ok(json_response(StatusCode::OK, json!({"deleted": id}).to_string().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_cover_the_text_in_bounded_pieces() {
        let text = "word ".repeat(1000);
        let parts = passages(&text);
        assert!(parts.len() >= 6, "{}", parts.len());
        assert!(parts.iter().all(|p| p.len() <= PASSAGE_BYTES));
        assert_eq!(parts.join(" ").split_whitespace().count(), 1000);
        assert_eq!(passages("short note"), vec!["short note".to_owned()]);
    }
}
