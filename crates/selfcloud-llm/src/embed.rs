//! Sentence embeddings with all-MiniLM-L6-v2 run by llama.cpp (mean pooling, L2-normalised, as the
//! sentence-transformers model defines them).
//!
//! The model is tiny and has no KV cache, so a context is made per call and dropped right after:
//! an idle instance holds only the mapped weights. Calls are serialised (one context at a time).

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;

use crate::{LlmError, Model};

/// Texts are cut to this many tokens, like the reference model (`max_seq_length` 256).
pub const EMBED_TOKENS_MAX: usize = 256;

/// An embedding model.
pub struct Embedder {
    model: Model,
    busy: Mutex<()>,
    threads: u32,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.model).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Maps the GGUF embedding model at `path`.
    pub fn load(path: &Path, name: &str, threads: u32) -> Result<Embedder, LlmError> {
        Ok(Embedder { model: Model::load(path, name, 0)?, busy: Mutex::new(()), threads })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Vector length.
    pub fn dimensions(&self) -> usize {
        self.model.inner.n_embd().max(0) as usize
    }

    /// One unit-length vector per text, and the tokens read in all. Blocking: call it off the reactor.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), LlmError> {
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(EMBED_TOKENS_MAX as u32 + 2))
            .with_n_batch(EMBED_TOKENS_MAX as u32 + 2)
            .with_n_ubatch(EMBED_TOKENS_MAX as u32 + 2)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let mut ctx = self
            .model
            .inner
            .new_context(crate::model::backend()?, params)
            .map_err(|e| LlmError::Inference(format!("creating the embedding context: {e}")))?;
        let mut batch = LlamaBatch::new(EMBED_TOKENS_MAX + 2, 1);
        let mut vectors = Vec::with_capacity(texts.len());
        let mut total_tokens = 0;
        for text in texts {
            let mut tokens = self.model.tokenize(text, true);
            if tokens.len() > EMBED_TOKENS_MAX {
                // Keep [CLS] … and the closing [SEP].
                let sep = tokens[tokens.len() - 1];
                tokens.truncate(EMBED_TOKENS_MAX - 1);
                tokens.push(sep);
            }
            total_tokens += tokens.len();
            batch.clear();
            for (i, &t) in tokens.iter().enumerate() {
                batch.add(t, i as i32, &[0], true).map_err(|e| LlmError::Inference(format!("batch: {e}")))?;
            }
            ctx.clear_kv_cache();
            ctx.decode(&mut batch).map_err(|e| LlmError::Inference(format!("embedding: {e}")))?;
            let pooled = ctx.embeddings_seq_ith(0).map_err(|e| LlmError::Inference(format!("embedding: {e}")))?;
            vectors.push(normalized(pooled));
        }
        Ok((vectors, total_tokens))
    }
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
