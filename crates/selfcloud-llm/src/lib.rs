//! The private AI of an instance: llama.cpp inference (through `llama-cpp-2`) over one model file per
//! host.
//!
//! This crate owns loading models ([`Model`], memory-mapped read-only so every instance process on a
//! host shares one page-cache copy of the weights), the one generation context of an instance
//! ([`Engine`]: its KV cache, sized by tier, its FIFO queue, cancellation, deadlines and freeing the
//! context when idle), sentence embeddings ([`Embedder`]), and installing models ([`install`]).
//! It must not know about users, tokens, HTTP or storage: the instance turns requests into
//! [`Request`]s and keeps conversation memory in the user's own store.
#![warn(missing_docs, unreachable_pub)]

pub mod baseline;
mod embed;
mod engine;
pub mod install;
mod model;
mod params;
mod text;

pub use embed::{cosine, Embedder, EMBED_TOKENS_MAX};
pub use engine::{Completion, Engine, EngineConfig, EngineStats, FinishReason, OnDone, OnText, Request};
pub use model::{ChatMessage, Model, Role};
pub use params::{Sampling, SamplingError};

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The model file could not be loaded.
    #[error("loading model {path}: {reason}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The prompt does not fit the context window.
    #[error("the prompt is {prompt_tokens} tokens; this model's context holds {n_ctx} (prompt plus at least one generated token)")]
    ContextExceeded {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The context window.
        n_ctx: u32,
    },
    /// The request is malformed (empty conversation, bad role, …).
    #[error("{0}")]
    Invalid(String),
    /// Too many requests are already waiting for this instance's AI.
    #[error("{0} requests are already waiting for this AI; try again shortly")]
    Busy(usize),
    /// The engine's worker is gone (the process is shutting down).
    #[error("the AI engine stopped")]
    Stopped,
    /// llama.cpp failed while running.
    #[error("inference failed: {0}")]
    Inference(String),
    /// File work while installing models.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl LlmError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> LlmError {
        LlmError::Io { what: what.into(), source }
    }
}
