//! OpenAI-compatible routes: `POST /v1/chat/completions` (streamed or not), `POST /v1/embeddings`,
//! `GET /v1/models`. Shapes follow OpenAI's API so its client libraries work unchanged; errors keep
//! selfcloud's JSON shape and codes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use selfcloud_core::ApiError;
use selfcloud_llm::{ChatMessage, Completion, Role};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{ai_of, complete, llm_error, parse_json, random_id, sse, start, unix_secs, SamplingIn, EMBED_MODEL_NAME};
use crate::api::{json_response, Ctx, Shared};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
}

/// Most messages in one request.
const MESSAGES_MAX: usize = 256;
/// Most inputs in one embeddings request.
const EMBED_INPUTS_MAX: usize = 256;
/// Longest single text, bytes.
const TEXT_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct ChatCompletionIn {
    model: Option<String>,
    messages: Vec<MessageIn>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(flatten)]
    sampling: SamplingIn,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    role: String,
    content: ContentIn,
}

/// Message content: a string, or OpenAI's list of parts (only text parts are understood).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ContentIn {
    Text(String),
    Parts(Vec<PartIn>),
}

#[derive(Debug, Deserialize)]
struct PartIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

pub(super) fn messages_from(ctx: &Ctx, input: Vec<(String, ContentOrText)>) -> Result<Vec<ChatMessage>, ApiError> {
    if input.is_empty() || input.len() > MESSAGES_MAX {
        return Err(ctx.fail(ApiError::invalid(format!("messages: 1 to {MESSAGES_MAX} messages"))));
    }
    input
        .into_iter()
        .map(|(role, content)| {
            let role = match role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(ctx.fail(ApiError::invalid(format!("messages: unknown role {other:?} (system, user or assistant)")))),
            };
            if content.0.len() > TEXT_BYTES_MAX {
                return Err(ctx.fail(ApiError::invalid(format!("messages: a message may be at most {TEXT_BYTES_MAX} bytes"))));
            }
            Ok(ChatMessage::new(role, content.0))
        })
        .collect()
}

/// Message text, whatever shape it arrived in.
pub(super) struct ContentOrText(pub(super) String);

fn content_text(ctx: &Ctx, content: ContentIn) -> Result<ContentOrText, ApiError> {
    match content {
        ContentIn::Text(t) => Ok(ContentOrText(t)),
        ContentIn::Parts(parts) => {
            let mut text = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ctx.fail(ApiError::invalid(format!("messages: content parts of type {:?} are not supported (text only)", p.kind))));
                }
                text.push_str(&p.text.unwrap_or_default());
            }
            Ok(ContentOrText(text))
        }
    }
}

pub(super) fn check_model(ctx: &Ctx, asked: Option<&str>, ours: &str) -> Result<(), ApiError> {
    match asked {
        None => Ok(()),
        Some(m) if m == ours || m == "default" => Ok(()),
        Some(m) => Err(ctx.fail(ApiError::not_found(format!("model {m:?} does not exist here; GET /v1/models lists {ours:?}")))),
    }
}

async fn chat_completions(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: ChatCompletionIn = parse_json(&ctx, &body)?;
    if input.n.is_some_and(|n| n != 1) {
        return Err(ctx.fail(ApiError::invalid("n: only 1 choice per request is supported")));
    }
    let ai = ai_of(&state, &ctx).await?;
    check_model(&ctx, input.model.as_deref(), ai.engine.model().name())?;
    let sampling = input.sampling.resolve(&ctx, &ai)?;
    let raw = input.messages.into_iter().map(|m| Ok((m.role, content_text(&ctx, m.content)?))).collect::<Result<Vec<_>, ApiError>>()?;
    let messages = messages_from(&ctx, raw)?;
    let prompt = ai.engine.model().render_chat(&messages).map_err(|e| llm_error(&ctx, e))?;
    let id = random_id("chatcmpl-");
    let model = ai.engine.model().name().to_owned();
    let created = unix_secs();

    if !input.stream {
        let c = complete(&ai, prompt, sampling).await.map_err(|e| llm_error(&ctx, e))?;
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason.openai(), "logprobs": null}],
            "usage": usage(&c),
            "system_fingerprint": null,
        });
        return Ok(json_response(StatusCode::OK, body.to_string().into_bytes()));
    }

    let include_usage = input.stream_options.is_some_and(|o| o.include_usage);
    let mut generation = start(&ai, prompt, sampling, true).map_err(|e| llm_error(&ctx, e))?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
            if include_usage {
                c["usage"] = serde_json::Value::Null;
            }
            sse::event(&c)
        };
        if tx.send(chunk(json!({"role": "assistant", "content": ""}), None)).await.is_err() {
            return;
        }
        while let Some(piece) = generation.text.recv().await {
            if tx.send(chunk(json!({"content": piece}), None)).await.is_err() {
                return;
            }
        }
        match generation.done.await {
            Ok(Ok(c)) => {
                let _ = tx.send(chunk(json!({}), Some(c.finish_reason.openai()))).await;
                if include_usage {
                    let last = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage(&c)});
                    let _ = tx.send(sse::event(&last)).await;
                }
            }
            Ok(Err(e)) => {
                let e = llm_error(&ctx, e);
                let _ = tx.send(sse::event(&json!({"error": {"code": e.code.as_str(), "message": e.message}}))).await;
            }
            Err(_) => return,
        }
        let _ = tx.send(sse::done_marker()).await;
    });
    Ok(sse::streaming("text/event-stream", rx))
}

fn usage(c: &Completion) -> serde_json::Value {
    json!({"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens}})
}

#[derive(Debug, Deserialize)]
struct EmbeddingsIn {
    input: EmbedInput,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

async fn embeddings(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: EmbeddingsIn = parse_json(&ctx, &body)?;
    // OpenAI's clients ask for base64 (little-endian float32s) by default.
    let base64 = match input.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ctx.fail(ApiError::invalid(format!("encoding_format: {other:?} is not \"float\" or \"base64\"")))),
    };
    let ai = ai_of(&state, &ctx).await?;
    check_model(&ctx, input.model.as_deref(), EMBED_MODEL_NAME)?;
    let texts = match input.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(v) => v,
    };
    if texts.is_empty() || texts.len() > EMBED_INPUTS_MAX || texts.iter().any(|t| t.is_empty() || t.len() > TEXT_BYTES_MAX) {
        return Err(ctx.fail(ApiError::invalid(format!("input: 1 to {EMBED_INPUTS_MAX} non-empty texts of at most {TEXT_BYTES_MAX} bytes"))));
    }
    let (vectors, tokens) = super::shared::embed(&ctx, &ai, texts).await?;
    let encode = |v: Vec<f32>| -> serde_json::Value {
        if base64 {
            use base64::Engine as _;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            json!(v)
        }
    };
    let data: Vec<serde_json::Value> = vectors.into_iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": encode(v)})).collect();
    let body = json!({"object": "list", "data": data, "model": EMBED_MODEL_NAME, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

async fn models(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    let ai = ai_of(&state, &ctx).await?;
    let mut data = vec![json!({"id": ai.engine.model().name(), "object": "model", "created": 0, "owned_by": "selfcloud", "context_length": ai.config.n_ctx, "max_tokens": ai.config.max_tokens})];
    if ai.has_embedder() {
        data.push(json!({"id": EMBED_MODEL_NAME, "object": "model", "created": 0, "owned_by": "selfcloud"}));
    }
    Ok(json_response(StatusCode::OK, json!({"object": "list", "data": data}).to_string().into_bytes()))
}

