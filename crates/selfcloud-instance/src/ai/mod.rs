//! The private AI of the instance: SPEC §5's `/v1/ai/chat` with conversation memory, the
//! OpenAI-compatible routes, the Ollama-compatible routes for the owner, and the notes the owner
//! shares with the AI for `ai:collaborate`.
//!
//! Inference runs in this process (the weights are the host's shared read-only mapping, the KV
//! cache is this user's own); prompts, conversations and shared notes never leave the instance.
//! The model is loaded on the first AI request, so instances that never chat pay nothing.

mod chat;
mod ollama;
mod openai;
mod shared;
pub(crate) mod sse;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use selfcloud_core::{ApiError, ErrorCode};
use selfcloud_llm::{Completion, Embedder, Engine, EngineConfig, LlmError, Model, Request, Sampling};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::api::{Ctx, Shared};

/// How the instance's AI is set up (from the tier and the host's model directory).
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// The chat model (GGUF).
    pub model_path: PathBuf,
    /// The name APIs report for it.
    pub model_name: String,
    /// The embedding model (GGUF), if installed.
    pub embed_path: Option<PathBuf>,
    /// Context window in tokens (by tier).
    pub n_ctx: u32,
    /// Most tokens one answer may have (by tier).
    pub max_tokens: u32,
    /// Inference threads while generating.
    pub threads: u32,
    /// Inference threads while reading a prompt.
    pub prompt_threads: u32,
}

/// The name APIs report for the embedding model.
pub const EMBED_MODEL_NAME: &str = "all-minilm-l6-v2";

/// A non-streamed answer must be back before the gateway's request timeout (30 s by default).
const UNARY_DEADLINE: Duration = Duration::from_secs(25);
/// A streamed answer shows progress, so it may run longer.
const STREAM_DEADLINE: Duration = Duration::from_secs(300);

/// The loaded AI.
pub(crate) struct Ai {
    pub(crate) engine: Engine,
    /// Loaded on the first embedding: an instance that only chats never holds its vocabulary.
    embedder: std::sync::OnceLock<Option<Embedder>>,
    pub(crate) config: AiConfig,
}

impl Ai {
    /// Whether an embedding model is installed.
    pub(crate) fn has_embedder(&self) -> bool {
        self.config.embed_path.as_ref().is_some_and(|p| p.exists())
    }

    /// The embedding model, loading it on first use (blocking: call off the reactor).
    pub(crate) fn embedder(&self) -> Option<&Embedder> {
        self.embedder
            .get_or_init(|| {
                let path = self.config.embed_path.as_ref().filter(|p| p.exists())?;
                Embedder::load(path, EMBED_MODEL_NAME, self.config.prompt_threads).map_err(|e| tracing::error!(error = %e, "the embedding model could not be loaded")).ok()
            })
            .as_ref()
    }
}

/// The AI slot of an instance: configured at start, loaded on first use.
pub struct AiSlot {
    config: AiConfig,
    loaded: OnceCell<Arc<Ai>>,
}

impl AiSlot {
    /// An AI that loads `config`'s models on first use.
    pub fn new(config: AiConfig) -> AiSlot {
        AiSlot { config, loaded: OnceCell::new() }
    }

    pub(crate) async fn get(&self, ctx: &Ctx) -> Result<Arc<Ai>, ApiError> {
        let config = self.config.clone();
        let ai = self
            .loaded
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || load(config)).await.map_err(|e| LlmError::Inference(e.to_string()))?.map(Arc::new)
            })
            .await;
        ai.cloned().map_err(|e| {
            tracing::error!(error = %e, "the AI could not be loaded");
            ctx.fail(ApiError::new(ErrorCode::Unavailable, "the AI model is not installed on this host (run scripts/models.sh)"))
        })
    }
}

fn load(config: AiConfig) -> Result<Ai, LlmError> {
    let started = Instant::now();
    let model = Arc::new(Model::load(&config.model_path, &config.model_name, 0)?);
    let engine_config = EngineConfig { n_ctx: config.n_ctx, threads: config.threads, threads_batch: config.prompt_threads, ..EngineConfig::default() };
    let engine = Engine::start(model, engine_config)?;
    tracing::info!(model = %config.model_path.display(), ms = started.elapsed().as_millis() as u64, "AI loaded");
    Ok(Ai { engine, embedder: std::sync::OnceLock::new(), config })
}

/// The AI's routes.
pub(crate) fn routes() -> Router<Shared> {
    chat::routes().merge(openai::routes()).merge(ollama::routes()).merge(shared::routes())
}

pub(crate) async fn ai_of(state: &Shared, ctx: &Ctx) -> Result<Arc<Ai>, ApiError> {
    match &state.ai {
        Some(slot) => slot.get(ctx).await,
        None => Err(ctx.fail(ApiError::new(ErrorCode::Unavailable, "this instance runs without an AI"))),
    }
}

/// A generation in flight: text as it becomes final, then the outcome. Dropping `text` cancels it.
pub(crate) struct Generation {
    pub(crate) text: mpsc::UnboundedReceiver<String>,
    pub(crate) done: oneshot::Receiver<Result<Completion, LlmError>>,
}

pub(crate) fn start(ai: &Ai, prompt: String, sampling: Sampling, stream: bool) -> Result<Generation, LlmError> {
    let (text_tx, text) = mpsc::unbounded_channel::<String>();
    let (done_tx, done) = oneshot::channel();
    let deadline = Instant::now() + if stream { STREAM_DEADLINE } else { UNARY_DEADLINE };
    ai.engine.submit(
        Request { prompt, sampling, deadline },
        // A closed receiver means the client went away: stop generating for it.
        Box::new(move |piece| text_tx.send(piece.to_owned()).is_ok()),
        Box::new(move |outcome| drop(done_tx.send(outcome))),
    )?;
    Ok(Generation { text, done })
}

/// Runs a generation to its end and returns the outcome.
pub(crate) async fn complete(ai: &Ai, prompt: String, sampling: Sampling) -> Result<Completion, LlmError> {
    let mut generation = start(ai, prompt, sampling, false)?;
    while generation.text.recv().await.is_some() {}
    generation.done.await.map_err(|_| LlmError::Stopped)?
}

pub(crate) fn llm_error(ctx: &Ctx, e: LlmError) -> ApiError {
    let err = match e {
        LlmError::ContextExceeded { .. } | LlmError::Invalid(_) => ApiError::invalid(e.to_string()),
        LlmError::Busy(_) => {
            let mut err = ApiError::new(ErrorCode::RateLimited, e.to_string());
            err.retry_after_secs = Some(1);
            err
        }
        LlmError::Stopped => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        other => {
            tracing::error!(error = %other, "inference failed");
            ApiError::internal()
        }
    };
    ctx.fail(err)
}

/// Sampling parameters as clients send them (OpenAI's names; Ollama's `options` map onto them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SamplingIn {
    pub(crate) max_tokens: Option<u32>,
    pub(crate) max_completion_tokens: Option<u32>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) seed: Option<i64>,
    pub(crate) stop: Option<StopIn>,
}

/// `stop` is a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StopIn {
    One(String),
    Many(Vec<String>),
}

impl SamplingIn {
    /// Defaults filled in and every range checked against the tier's ceiling.
    pub(crate) fn resolve(self, ctx: &Ctx, ai: &Ai) -> Result<Sampling, ApiError> {
        let cap = ai.config.max_tokens;
        let seed = match self.seed {
            None => None,
            Some(s) => Some(u32::try_from(s).map_err(|_| ctx.fail(ApiError::invalid(format!("seed: must be from 0 to {}", u32::MAX))))?),
        };
        let sampling = Sampling {
            max_tokens: self.max_completion_tokens.or(self.max_tokens).unwrap_or(cap.min(256)),
            temperature: self.temperature.unwrap_or(Sampling::default().temperature),
            top_p: self.top_p.unwrap_or(Sampling::default().top_p),
            seed,
            stop: match self.stop {
                None => Vec::new(),
                Some(StopIn::One(s)) => vec![s],
                Some(StopIn::Many(v)) => v,
            },
        };
        sampling.validate(cap).map_err(|e| ctx.fail(ApiError::invalid(e.to_string())))?;
        Ok(sampling)
    }
}

/// Parses a JSON body into `T`, answering `INVALID_ARGUMENT` with serde's reason.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(ctx: &Ctx, body: &[u8]) -> Result<T, ApiError> {
    crate::api::parse_body(body).map_err(|e| ctx.fail(e))
}

pub(crate) fn unix_secs() -> u64 {
    selfcloud_core::unix_now_ms() / 1000
}

/// A random id with a prefix (`chatcmpl-…`, conversation ids).
pub(crate) fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::getrandom(&mut bytes);
    format!("{prefix}{}", selfcloud_core::hex(&bytes))
}
