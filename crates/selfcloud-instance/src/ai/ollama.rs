//! Ollama-compatible routes for the owner (so tools that speak Ollama can use the private AI):
//! `POST /api/chat`, `POST /api/generate` (NDJSON streaming, on by default as in Ollama) and
//! `GET /api/tags`.

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

use super::openai::{check_model, messages_from, ContentOrText};
use super::{ai_of, llm_error, parse_json, sse, start, Ai, SamplingIn, StopIn};
use crate::api::{json_response, Ctx, Shared};

/// Why an app is refused here.
const OWNER_ONLY: &str = "the Ollama API is for the instance's owner";

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/api/chat", post(chat)).route("/api/generate", post(generate)).route("/api/tags", get(tags))
}

/// Ollama's `options` (the ones that map onto ours).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    num_predict: Option<u32>,
    stop: Option<Vec<String>>,
}

impl Options {
    fn sampling(self) -> SamplingIn {
        SamplingIn { max_tokens: self.num_predict, temperature: self.temperature, top_p: self.top_p, seed: self.seed, stop: self.stop.map(StopIn::Many), ..SamplingIn::default() }
    }
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct ChatIn {
    model: Option<String>,
    messages: Vec<MessageIn>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
}

#[derive(Debug, Deserialize)]
struct GenerateIn {
    model: Option<String>,
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    /// Send the prompt as is, without the chat template.
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
}

fn now_rfc3339() -> String {
    let ms = selfcloud_core::unix_now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

fn final_fields(c: &Completion) -> serde_json::Value {
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    json!({
        "done": true,
        "done_reason": c.finish_reason.openai(),
        "total_duration": ns(c.queued + c.prompt_time + c.generate_time),
        "prompt_eval_count": c.prompt_tokens,
        "prompt_eval_duration": ns(c.prompt_time),
        "eval_count": c.completion_tokens,
        "eval_duration": ns(c.generate_time),
    })
}

/// Runs one generation and answers as Ollama does: NDJSON lines built by `piece`, or one object.
async fn respond(ctx: Ctx, ai: &Ai, prompt: String, sampling: SamplingIn, stream: bool, piece: fn(&str, &str) -> serde_json::Value) -> Result<Response, ApiError> {
    let sampling = sampling.resolve(&ctx, ai)?;
    let model = ai.engine.model().name().to_owned();
    let mut generation = start(ai, prompt, sampling, stream).map_err(|e| llm_error(&ctx, e))?;
    if !stream {
        while generation.text.recv().await.is_some() {}
        let c = generation.done.await.map_err(|_| ctx.fail(ApiError::internal()))?.map_err(|e| llm_error(&ctx, e))?;
        let mut body = piece(&model, &c.text);
        merge(&mut body, final_fields(&c));
        return Ok(json_response(StatusCode::OK, body.to_string().into_bytes()));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(text) = generation.text.recv().await {
            let mut line = piece(&model, &text);
            line["done"] = json!(false);
            if tx.send(sse::line(&line)).await.is_err() {
                return;
            }
        }
        let last = match generation.done.await {
            Ok(Ok(c)) => {
                let mut line = piece(&model, "");
                merge(&mut line, final_fields(&c));
                line
            }
            Ok(Err(e)) => json!({"error": llm_error(&ctx, e).message}),
            Err(_) => return,
        };
        let _ = tx.send(sse::line(&last)).await;
    });
    Ok(sse::streaming("application/x-ndjson", rx))
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

async fn chat(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let input: ChatIn = parse_json(&ctx, &body)?;
    let ai = ai_of(&state, &ctx).await?;
    check_model(&ctx, input.model.as_deref(), ai.engine.model().name())?;
    let messages = messages_from(&ctx, input.messages.into_iter().map(|m| (m.role, ContentOrText(m.content))).collect())?;
    let prompt = ai.engine.model().render_chat(&messages).map_err(|e| llm_error(&ctx, e))?;
    respond(ctx, &ai, prompt, input.options.sampling(), input.stream.unwrap_or(true), |model, text| {
        json!({"model": model, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text}})
    })
    .await
}

async fn generate(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let input: GenerateIn = parse_json(&ctx, &body)?;
    let ai = ai_of(&state, &ctx).await?;
    check_model(&ctx, input.model.as_deref(), ai.engine.model().name())?;
    if input.prompt.is_empty() {
        return Err(ctx.fail(ApiError::invalid("prompt: must not be empty")));
    }
    let prompt = if input.raw {
        input.prompt
    } else {
        let mut messages = Vec::new();
        if let Some(system) = input.system {
            messages.push(ChatMessage::new(Role::System, system));
        }
        messages.push(ChatMessage::new(Role::User, input.prompt));
        ai.engine.model().render_chat(&messages).map_err(|e| llm_error(&ctx, e))?
    };
    respond(ctx, &ai, prompt, input.options.sampling(), input.stream.unwrap_or(true), |model, text| {
        json!({"model": model, "created_at": now_rfc3339(), "response": text})
    })
    .await
}

async fn tags(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let ai = ai_of(&state, &ctx).await?;
    let model = ai.engine.model();
    let body = json!({"models": [{
        "name": model.name(), "model": model.name(), "size": model.file_bytes(),
        "details": {"format": "gguf", "family": "llama", "context_length": ai.config.n_ctx},
    }]});
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}
