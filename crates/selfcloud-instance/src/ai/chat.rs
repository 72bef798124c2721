//! `POST /v1/ai/chat`: chat with memory. Each caller (the owner, or one app) has its own
//! conversations, kept in the instance's encrypted store under a namespace no other caller's
//! requests can name; an app with `ai:collaborate` also gets the owner's shared notes that match
//! the message, and the response lists them as sources.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use selfcloud_core::caller::Caller;
use selfcloud_core::ApiError;
use selfcloud_llm::{ChatMessage, Completion, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::{ai_of, llm_error, parse_json, random_id, sse, start, Ai, SamplingIn};
use crate::api::{blocking, json_response, Ctx, Shared};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/ai/chat", post(chat))
        .route("/v1/ai/status", get(status))
        .route("/v1/ai/conversations", get(list))
        .route("/v1/ai/conversations/{id}", get(read).delete(remove))
}

/// Longest message, bytes.
const MESSAGE_BYTES_MAX: usize = 32 * 1024;
/// The system prompt when the caller gives none.
const DEFAULT_SYSTEM: &str = "You are a helpful, concise assistant running privately on the user's own server.";

#[derive(Debug, Deserialize)]
struct ChatIn {
    message: String,
    #[serde(default)]
    conversation: Option<String>,
    /// Extra context for this turn (not stored as a message).
    #[serde(default)]
    context: Option<serde_json::Value>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: SamplingIn,
}

/// A stored conversation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversation {
    id: String,
    created_ms: u64,
    updated_ms: u64,
    messages: Vec<ChatMessage>,
}

/// The store namespace of a caller's conversations. Storage routes only ever name `owner` and
/// `app:{id}` namespaces, so these are out of their reach.
fn namespace(ctx: &Ctx) -> String {
    match &ctx.caller {
        Caller::Owner => "ai-chat:owner".to_owned(),
        Caller::App(id) => format!("ai-chat:app:{id}"),
    }
}

async fn load_conversation(state: &Shared, ctx: &Ctx, id: &str) -> Result<Option<Conversation>, ApiError> {
    let (store, ns, key) = (state.store.clone(), namespace(ctx), format!("conversations/{id}"));
    let record = blocking(ctx, move || store.kv_get(&ns, &key)).await?;
    match record {
        None => Ok(None),
        Some(r) => serde_json::from_slice(&r.json).map(Some).map_err(|_| ctx.fail(ApiError::internal())),
    }
}

/// A stored conversation keeps at most this much (the oldest turns go first); the prompt only ever
/// holds what fits the context anyway.
const CONVERSATION_BYTES_MAX: usize = 1 << 20;

async fn save_conversation(state: &Shared, ctx: &Ctx, conversation: &mut Conversation) -> Result<(), ApiError> {
    let mut json = serde_json::to_vec(conversation).map_err(|_| ctx.fail(ApiError::internal()))?;
    while json.len() > CONVERSATION_BYTES_MAX && conversation.messages.len() > 2 {
        conversation.messages.drain(..2);
        json = serde_json::to_vec(conversation).map_err(|_| ctx.fail(ApiError::internal()))?;
    }
    let (store, ns, key, quota) = (state.store.clone(), namespace(ctx), format!("conversations/{}", conversation.id), ctx.quota_bytes);
    blocking(ctx, move || store.kv_put(&ns, &key, &json, quota)).await?;
    Ok(())
}

/// The prompt for this turn: system text (with shared notes and context), then as much of the
/// history as fits beside the answer, then the new message.
fn build_prompt(ai: &Ai, system: &str, history: &[ChatMessage], message: &str, max_tokens: u32) -> Result<String, selfcloud_llm::LlmError> {
    let model = ai.engine.model();
    let budget = ai.config.n_ctx.saturating_sub(max_tokens) as usize;
    let mut first = 0;
    loop {
        let mut messages = vec![ChatMessage::new(Role::System, system)];
        messages.extend_from_slice(&history[first..]);
        messages.push(ChatMessage::new(Role::User, message));
        let prompt = model.render_chat(&messages)?;
        // Drop the oldest turns until the prompt leaves room for the answer.
        if model.count_tokens(&prompt) <= budget || first >= history.len() {
            return Ok(prompt);
        }
        first = (first + 2).min(history.len());
    }
}

async fn chat(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: ChatIn = parse_json(&ctx, &body)?;
    if input.message.trim().is_empty() || input.message.len() > MESSAGE_BYTES_MAX {
        return Err(ctx.fail(ApiError::invalid(format!("message must be 1 to {MESSAGE_BYTES_MAX} bytes of text"))));
    }
    if let Some(id) = &input.conversation {
        ctx.check_id("a conversation id", id)?;
    }
    let ai = ai_of(&state, &ctx).await?;
    let sampling = input.sampling.resolve(&ctx, &ai)?;
    let now = selfcloud_core::unix_now_ms();
    let mut conversation = match &input.conversation {
        Some(id) => load_conversation(&state, &ctx, id).await?.unwrap_or(Conversation { id: id.clone(), created_ms: now, ..Conversation::default() }),
        None => Conversation { id: random_id("c_"), created_ms: now, ..Conversation::default() },
    };
    let sources = if ctx.has_scope("ai:collaborate") { super::shared::relevant(&state, &ctx, &ai, &input.message).await? } else { Vec::new() };
    let mut system = input.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM.to_owned());
    if !sources.is_empty() {
        system.push_str("\n\nNotes the user shared with you (use them when relevant):");
        for s in &sources {
            system.push_str(&format!("\n- {}: {}", s.title, s.text));
        }
    }
    if let Some(context) = &input.context {
        let text = match context {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        system.push_str(&format!("\n\nContext for this message: {text}"));
    }
    // Rendering and counting tokens over a long history is CPU work: off the reactor.
    let prompt = {
        let (ai, history, message, max_tokens) = (ai.clone(), conversation.messages.clone(), input.message.clone(), sampling.max_tokens);
        tokio::task::spawn_blocking(move || build_prompt(&ai, &system, &history, &message, max_tokens))
            .await
            .map_err(|_| ctx.fail(ApiError::internal()))?
            .map_err(|e| llm_error(&ctx, e))?
    };
    let sources_json: Vec<serde_json::Value> = sources.iter().map(|s| json!({"id": s.id, "title": s.title, "score": s.score})).collect();
    let mut generation = start(&ai, prompt, sampling, input.stream).map_err(|e| llm_error(&ctx, e))?;
    let id = conversation.id.clone();
    conversation.messages.push(ChatMessage::new(Role::User, input.message.clone()));

    if !input.stream {
        while generation.text.recv().await.is_some() {}
        let completion = generation.done.await.map_err(|_| ctx.fail(ApiError::internal()))?.map_err(|e| llm_error(&ctx, e))?;
        conversation.messages.push(ChatMessage::new(Role::Assistant, completion.text.clone()));
        conversation.updated_ms = selfcloud_core::unix_now_ms();
        save_conversation(&state, &ctx, &mut conversation).await?;
        let body = answer_json(&id, &completion, &sources_json);
        return Ok(json_response(StatusCode::OK, body.to_string().into_bytes()));
    }

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _ = tx.send(sse::event(&json!({"type": "start", "conversation": id, "sources": sources_json}))).await;
        while let Some(piece) = generation.text.recv().await {
            if tx.send(sse::event(&json!({"type": "delta", "conversation": id, "delta": piece}))).await.is_err() {
                return; // client gone: dropping `generation` cancels it
            }
        }
        let outcome = match generation.done.await {
            Ok(outcome) => outcome,
            Err(_) => return,
        };
        match outcome {
            Ok(completion) => {
                conversation.messages.push(ChatMessage::new(Role::Assistant, completion.text.clone()));
                conversation.updated_ms = selfcloud_core::unix_now_ms();
                let saved = save_conversation(&state, &ctx, &mut conversation).await;
                let mut done = answer_json(&id, &completion, &sources_json);
                done["type"] = json!("done");
                if let Err(e) = saved {
                    done["error"] = json!({"code": e.code.as_str(), "message": "the answer could not be saved to the conversation"});
                }
                let _ = tx.send(sse::event(&done)).await;
            }
            Err(e) => {
                let e = llm_error(&ctx, e);
                let _ = tx.send(sse::event(&json!({"type": "error", "error": {"code": e.code.as_str(), "message": e.message}}))).await;
            }
        }
        let _ = tx.send(sse::done_marker()).await;
    });
    Ok(sse::streaming("text/event-stream", rx))
}

fn answer_json(conversation: &str, c: &Completion, sources: &[serde_json::Value]) -> serde_json::Value {
    json!({
        "conversation": conversation,
        "message": {"role": "assistant", "content": c.text},
        "finish_reason": c.finish_reason.openai(),
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "total_tokens": c.prompt_tokens + c.completion_tokens, "cached_tokens": c.cached_tokens},
        "timings_ms": {"queued": c.queued.as_millis() as u64, "prompt": c.prompt_time.as_millis() as u64, "generate": c.generate_time.as_millis() as u64},
        "sources": sources,
    })
}

async fn list(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    let (store, ns) = (state.store.clone(), namespace(&ctx));
    let (rows, _) = blocking(&ctx, move || store.kv_list(&ns, "conversations/", None, 1000)).await?;
    let ids: Vec<serde_json::Value> = rows.iter().map(|r| json!({"id": r.key.trim_start_matches("conversations/")})).collect();
    Ok(json_response(StatusCode::OK, json!({"conversations": ids}).to_string().into_bytes()))
}

async fn read(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.check_id("a conversation id", &id)?;
    let conversation = load_conversation(&state, &ctx, &id).await?.ok_or_else(|| ctx.fail(ApiError::not_found(format!("no conversation {id}"))))?;
    let body = serde_json::to_vec(&conversation).map_err(|_| ctx.fail(ApiError::internal()))?;
    Ok(json_response(StatusCode::OK, body))
}

async fn remove(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.check_id("a conversation id", &id)?;
    let (store, ns, key) = (state.store.clone(), namespace(&ctx), format!("conversations/{id}"));
    if !blocking(&ctx, move || store.kv_delete(&ns, &key)).await? {
        return Err(ctx.fail(ApiError::not_found(format!("no conversation {id}"))));
    }
    Ok(json_response(StatusCode::OK, json!({"deleted": id}).to_string().into_bytes()))
}

/// `GET /v1/ai/status`: the model, the queue and what the engine has done (no conversation data).
async fn status(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    let ai = ai_of(&state, &ctx).await?;
    let stats = ai.engine.stats();
    let body = json!({
        "model": ai.engine.model().name(),
        "embedding_model": ai.has_embedder().then_some(super::EMBED_MODEL_NAME),
        "context_length": ai.config.n_ctx,
        "max_tokens": ai.config.max_tokens,
        "threads": ai.config.threads,
        "prompt_threads": ai.config.prompt_threads,
        "queue_waiting": ai.engine.waiting(),
        "context_loaded": stats.context_loaded,
        "generations": {"completed": stats.completed, "cancelled": stats.cancelled, "timed_out": stats.timed_out, "failed": stats.failed},
    });
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}
