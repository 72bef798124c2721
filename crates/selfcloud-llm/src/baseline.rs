//! Plain llama.cpp, driven directly through `llama-cpp-2` with nothing of ours in the loop: the
//! peer `selfcloud bench llm` measures the engine against, in the same process and run.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;

use crate::{LlmError, Model};

/// What one plain run measured.
#[derive(Debug, Clone, Copy)]
pub struct PlainRun {
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Time to evaluate the prompt and sample the first token.
    pub prompt_time: Duration,
    /// Tokens generated after the first.
    pub generated: usize,
    /// Time spent generating them.
    pub generate_time: Duration,
}

/// Evaluates `prompt` and then greedily generates `max_tokens` tokens (end-of-turn tokens are
/// generated through, so every run does the same work), in a fresh context.
/// `config` sizes the context exactly as the engine would (same batch and KV cache type).
pub fn plain_run(model: &Model, prompt: &str, max_tokens: usize, config: &crate::EngineConfig) -> Result<PlainRun, LlmError> {
    let (n_ctx, threads, n_batch) = (config.n_ctx, config.threads, config.n_batch as usize);
    let fail = |e: &dyn std::fmt::Display| LlmError::Inference(e.to_string());
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_batch as u32)
        .with_n_ubatch(n_batch as u32)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let params = if config.kv_q8 { params.with_type_k(KvCacheType::Q8_0).with_type_v(KvCacheType::Q8_0) } else { params };
    let mut ctx = model.inner.new_context(crate::model::backend()?, params).map_err(|e| fail(&e))?;
    let tokens = model.tokenize(prompt, model.add_bos());
    let started = Instant::now();
    let mut batch = LlamaBatch::new(n_batch, 1);
    for (c, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            let pos = c * n_batch + i;
            batch.add(t, pos as i32, &[0], pos == tokens.len() - 1).map_err(|e| fail(&e))?;
        }
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
    }
    let mut sampler = LlamaSampler::greedy();
    let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
    let prompt_time = started.elapsed();
    let generating = Instant::now();
    for pos in tokens.len()..tokens.len() + max_tokens.saturating_sub(1) {
        batch.clear();
        batch.add(token, pos as i32, &[0], true).map_err(|e| fail(&e))?;
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
        token = sampler.sample(&ctx, 0);
    }
    Ok(PlainRun { prompt_tokens: tokens.len(), prompt_time, generated: max_tokens.saturating_sub(1), generate_time: generating.elapsed() })
}
