//! Plain llama.cpp, driven directly through `llama-cpp-2` with nothing of ours in the loop: the
//! peer `selfcloud bench llm` measures the engine against, in the same process and run.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
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
pub fn plain_run(model: &Model, prompt: &str, max_tokens: usize, n_ctx: u32, threads: u32) -> Result<PlainRun, LlmError> {
    let fail = |e: &dyn std::fmt::Display| LlmError::Inference(e.to_string());
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(256)
        .with_n_ubatch(256)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let mut ctx = model.inner.new_context(crate::model::backend()?, params).map_err(|e| fail(&e))?;
    let tokens = model.tokenize(prompt, model.add_bos());
    let started = Instant::now();
    let mut batch = LlamaBatch::new(256, 1);
    for (c, chunk) in tokens.chunks(256).enumerate() {
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            let pos = c * 256 + i;
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
