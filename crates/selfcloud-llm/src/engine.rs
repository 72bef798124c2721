//! The one generation context of an instance and the worker thread that owns it.
//!
//! Requests queue in arrival order (FIFO) on a bounded channel and run one at a time: a context's KV
//! cache holds one conversation. The worker keeps the tokens of the last request in the KV cache and
//! reuses their common prefix, so the next turn of a conversation only evaluates what is new. The
//! context (KV cache and compute buffers) is created on first use and freed after an idle period;
//! the weights stay mapped.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::text::{Push, TextStream};
use crate::{LlmError, Model, Sampling};

/// How an instance's engine is sized.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Context window in tokens (prompt plus generation); sized by tier.
    pub n_ctx: u32,
    /// Threads for generating tokens.
    pub threads: u32,
    /// Threads for evaluating prompts.
    pub threads_batch: u32,
    /// Requests that may wait behind the running one; more are refused with [`LlmError::Busy`].
    pub queue_max: usize,
    /// Free the context after this long without a request.
    pub idle_free: Duration,
    /// Tokens evaluated per step while reading a prompt. llama.cpp reserves compute memory for a
    /// whole step's logits (vocabulary × step), so this bounds the context's memory too.
    pub n_batch: u32,
    /// Keep the KV cache as Q8_0 instead of F16: half the memory (with flash attention, which
    /// llama.cpp turns on for CPUs).
    pub kv_q8: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig { n_ctx: 2048, threads: 1, threads_batch: 1, queue_max: 8, idle_free: Duration::from_secs(120), n_batch: 128, kv_q8: true }
    }
}

/// One generation.
#[derive(Debug, Clone)]
pub struct Request {
    /// The full prompt text (already rendered with the chat template where it is a chat).
    pub prompt: String,
    /// Sampling parameters (already validated).
    pub sampling: Sampling,
    /// Generation stops at this instant (finish reason [`FinishReason::Deadline`]).
    pub deadline: Instant,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn or a stop sequence was generated.
    Stop,
    /// `max_tokens` was reached, or the context is full.
    Length,
    /// The request's deadline passed.
    Deadline,
    /// The client went away.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's spelling (`stop` or `length`; a deadline or cancellation reads as `length`, since
    /// the answer was cut short).
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            _ => "length",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Everything generated (stop sequence excluded).
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were reused from the KV cache rather than evaluated.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Time spent waiting in the queue.
    pub queued: Duration,
    /// Time to evaluate the prompt (until the first token was sampled).
    pub prompt_time: Duration,
    /// Time spent generating after the first token.
    pub generate_time: Duration,
}

/// What an engine has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Generations that ended normally (stop sequence, end of turn or token limit).
    pub completed: u64,
    /// Generations the client abandoned.
    pub cancelled: u64,
    /// Generations cut off by their deadline.
    pub timed_out: u64,
    /// Generations that failed.
    pub failed: u64,
    /// Whether the context (KV cache) is allocated now.
    pub context_loaded: bool,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
    context_loaded: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn record(&self, outcome: &Result<Completion, LlmError>) {
        let counter = match outcome {
            Ok(c) if c.finish_reason == FinishReason::Cancelled => &self.cancelled,
            Ok(c) if c.finish_reason == FinishReason::Deadline => &self.timed_out,
            Ok(_) => &self.completed,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called with each piece of final text; returning `false` cancels the generation.
pub type OnText = Box<dyn FnMut(&str) -> bool + Send>;
/// Called once with the outcome.
pub type OnDone = Box<dyn FnOnce(Result<Completion, LlmError>) + Send>;

struct Job {
    request: Request,
    on_text: OnText,
    on_done: OnDone,
    queued_at: Instant,
}

/// An instance's generation engine: a queue in front of one worker thread that owns the context.
#[derive(Clone)]
pub struct Engine {
    model: Arc<Model>,
    config: EngineConfig,
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("model", &self.model.name()).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the worker thread. The context is created on the first request.
    pub fn start(model: Arc<Model>, config: EngineConfig) -> Result<Engine, LlmError> {
        let (jobs, queue) = sync_channel::<Job>(config.queue_max);
        let waiting = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let worker = Worker { model: model.clone(), config: config.clone(), waiting: waiting.clone(), counters: counters.clone() };
        std::thread::Builder::new()
            .name("llm-engine".into())
            .spawn(move || worker.run(queue))
            .map_err(|e| LlmError::Inference(format!("starting the engine thread: {e}")))?;
        Ok(Engine { model, config, jobs, waiting, counters })
    }

    /// Counts of finished generations, and whether the context is allocated.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            completed: c.completed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            context_loaded: c.context_loaded.load(Ordering::Relaxed),
        }
    }

    /// The model this engine runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Its sizing.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Requests queued and not yet started.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queues a generation. `on_text` receives text as it becomes final (from the worker thread);
    /// `on_done` the outcome. Refused at once with [`LlmError::Busy`] when the queue is full, and
    /// with [`LlmError::ContextExceeded`] when the prompt cannot fit.
    pub fn submit(&self, request: Request, on_text: OnText, on_done: OnDone) -> Result<(), LlmError> {
        let prompt_tokens = self.model.tokenize(&request.prompt, self.model.add_bos()).len();
        if prompt_tokens + 1 > self.config.n_ctx as usize {
            return Err(LlmError::ContextExceeded { prompt_tokens, n_ctx: self.config.n_ctx });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let job = Job { request, on_text, on_done, queued_at: Instant::now() };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                Err(LlmError::Busy(self.config.queue_max))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                Err(LlmError::Stopped)
            }
        }
    }

    /// Runs one generation to the end on the calling thread's behalf (blocking), collecting text.
    /// For benchmarks and tools; servers use [`Engine::submit`].
    pub fn generate_blocking(&self, request: Request) -> Result<Completion, LlmError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(request, Box::new(|_| true), Box::new(move |r| drop(tx.send(r))))?;
        rx.recv().map_err(|_| LlmError::Stopped)?
    }
}

struct Worker {
    model: Arc<Model>,
    config: EngineConfig,
    waiting: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

/// What the KV cache holds between requests.
struct Loaded<'m> {
    ctx: LlamaContext<'m>,
    /// Tokens whose keys and values are in the cache, in position order.
    cached: Vec<LlamaToken>,
}

impl Worker {
    fn run(self, queue: std::sync::mpsc::Receiver<Job>) {
        let mut loaded: Option<Loaded<'_>> = None;
        loop {
            let job = match queue.recv_timeout(self.config.idle_free) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if loaded.take().is_some() {
                        self.counters.context_loaded.store(false, Ordering::Relaxed);
                        tracing::debug!("LLM context freed after idling");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            let Job { request, mut on_text, on_done, queued_at } = job;
            let queued = queued_at.elapsed();
            if loaded.is_none() {
                match self.new_context() {
                    Ok(ctx) => {
                        loaded = Some(Loaded { ctx, cached: Vec::new() });
                        self.counters.context_loaded.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        on_done(Err(e));
                        continue;
                    }
                }
            }
            let Some(state) = loaded.as_mut() else { continue };
            let outcome = self.generate(state, &request, &mut on_text).map(|mut c| {
                c.queued = queued;
                c
            });
            if outcome.is_err() {
                // The cache may hold a half-evaluated batch: start clean next time.
                state.ctx.clear_kv_cache();
                state.cached.clear();
            }
            self.counters.record(&outcome);
            on_done(outcome);
        }
    }

    fn new_context(&self) -> Result<LlamaContext<'_>, LlmError> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.config.n_ctx))
            .with_n_batch(self.config.n_batch)
            .with_n_ubatch(self.config.n_batch)
            .with_n_seq_max(1)
            .with_n_threads(self.config.threads as i32)
            .with_n_threads_batch(self.config.threads_batch as i32);
        let params = if self.config.kv_q8 { params.with_type_k(KvCacheType::Q8_0).with_type_v(KvCacheType::Q8_0) } else { params };
        let backend = crate::model::backend()?;
        self.model.inner.new_context(backend, params).map_err(|e| LlmError::Inference(format!("creating the context: {e}")))
    }

    fn generate(&self, state: &mut Loaded<'_>, request: &Request, on_text: &mut OnText) -> Result<Completion, LlmError> {
        let model = &self.model;
        let prompt = model.tokenize(&request.prompt, model.add_bos());
        let n_ctx = self.config.n_ctx as usize;
        if prompt.len() + 1 > n_ctx {
            return Err(LlmError::ContextExceeded { prompt_tokens: prompt.len(), n_ctx: self.config.n_ctx });
        }
        let started = Instant::now();
        // Reuse the cached prefix; at least the last prompt token is evaluated again for its logits.
        let mut reuse = common_prefix(&state.cached, &prompt).min(prompt.len() - 1);
        let removed = state.ctx.clear_kv_cache_seq(Some(0), Some(reuse as u32), None).unwrap_or(false);
        if !removed {
            state.ctx.clear_kv_cache();
            reuse = 0;
        }
        state.cached.truncate(reuse);

        let n_batch = self.config.n_batch as usize;
        let mut batch = LlamaBatch::new(n_batch, 1);
        let fail = |what: &str, e: &dyn std::fmt::Display| LlmError::Inference(format!("{what}: {e}"));
        for (chunk_index, chunk) in prompt[reuse..].chunks(n_batch).enumerate() {
            batch.clear();
            let base = reuse + chunk_index * n_batch;
            for (i, &token) in chunk.iter().enumerate() {
                let pos = base + i;
                batch.add(token, pos as i32, &[0], pos == prompt.len() - 1).map_err(|e| fail("batch", &e))?;
            }
            state.ctx.decode(&mut batch).map_err(|e| fail("evaluating the prompt", &e))?;
            state.cached.extend_from_slice(chunk);
            if Instant::now() >= request.deadline {
                return Ok(self.finished(String::new(), &prompt, reuse, 0, FinishReason::Deadline, started, started));
            }
        }

        let mut sampler = sampler_for(&request.sampling);
        let mut text = TextStream::new(request.sampling.stop.clone());
        let mut generated = 0usize;
        let mut first_token_at = None;
        let mut logits_index = batch.n_tokens() - 1;
        let reason = loop {
            let token = sampler.sample(&state.ctx, logits_index);
            first_token_at.get_or_insert_with(Instant::now);
            if model.is_end(token) {
                break FinishReason::Stop;
            }
            generated += 1;
            match text.push(&model.piece(token)) {
                Push::Stopped(last) => {
                    if !last.is_empty() && !on_text(&last) {
                        break FinishReason::Cancelled;
                    }
                    break FinishReason::Stop;
                }
                Push::Text(t) => {
                    if !t.is_empty() && !on_text(&t) {
                        break FinishReason::Cancelled;
                    }
                }
            }
            if generated >= request.sampling.max_tokens as usize || state.cached.len() + 1 >= n_ctx {
                break FinishReason::Length;
            }
            if Instant::now() >= request.deadline {
                break FinishReason::Deadline;
            }
            batch.clear();
            batch.add(token, state.cached.len() as i32, &[0], true).map_err(|e| fail("batch", &e))?;
            state.ctx.decode(&mut batch).map_err(|e| fail("generating", &e))?;
            state.cached.push(token);
            logits_index = 0;
        };
        if reason != FinishReason::Cancelled {
            let rest = text.finish();
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        let first = first_token_at.unwrap_or_else(Instant::now);
        Ok(self.finished(text.released().to_owned(), &prompt, reuse, generated, reason, started, first))
    }

    #[allow(clippy::too_many_arguments)]
    fn finished(&self, text: String, prompt: &[LlamaToken], reuse: usize, generated: usize, reason: FinishReason, started: Instant, first: Instant) -> Completion {
        Completion {
            text,
            prompt_tokens: prompt.len(),
            cached_tokens: reuse,
            completion_tokens: generated,
            finish_reason: reason,
            queued: Duration::ZERO,
            prompt_time: first.duration_since(started),
            generate_time: first.elapsed(),
        }
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Temperature 0 is greedy (deterministic without a seed); otherwise top-p, then temperature, then
/// a seeded draw.
fn sampler_for(s: &Sampling) -> LlamaSampler {
    if s.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let seed = s.seed.unwrap_or_else(fresh_seed);
    LlamaSampler::chain_simple([LlamaSampler::top_k(40), LlamaSampler::top_p(s.top_p, 1), LlamaSampler::temp(s.temperature), LlamaSampler::dist(seed)])
}

fn fresh_seed() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
