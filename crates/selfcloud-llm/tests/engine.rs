//! The engine and the embedder on the real shipped models (installed by `scripts/models.sh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfcloud_llm::{cosine, ChatMessage, Embedder, Engine, EngineConfig, FinishReason, LlmError, Model, Request, Role, Sampling};

fn model_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("SELFCLOUD_MODEL_DIR").map(PathBuf::from).unwrap_or_else(selfcloud_core::config::default_model_dir);
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run scripts/models.sh first (the test script does)", path.display());
    path
}

fn chat_model() -> Arc<Model> {
    Arc::new(Model::load(&model_file("SmolLM2-135M-Instruct.Q8_0.gguf"), "smollm2", 0).expect("load the chat model"))
}

fn engine(model: Arc<Model>, config: EngineConfig) -> Engine {
    Engine::start(model, config).expect("start the engine")
}

fn request(model: &Model, question: &str, sampling: Sampling) -> Request {
    let prompt = model.render_chat(&[ChatMessage::new(Role::User, question)]).expect("render");
    Request { prompt, sampling, deadline: Instant::now() + Duration::from_secs(120) }
}

fn greedy(max_tokens: u32) -> Sampling {
    Sampling { max_tokens, temperature: 0.0, ..Sampling::default() }
}

#[test]
fn greedy_and_seeded_generation_repeat_exactly() {
    let model = chat_model();
    let a = engine(model.clone(), EngineConfig::default());
    let b = engine(model.clone(), EngineConfig::default());
    let req = request(&model, "Name three colours of the rainbow.", greedy(40));
    let first = a.generate_blocking(req.clone()).unwrap();
    let again = a.generate_blocking(req.clone()).unwrap(); // this one reuses the cached prompt
    let other = b.generate_blocking(req).unwrap();
    assert!(!first.text.trim().is_empty());
    assert_eq!(first.text, again.text);
    assert_eq!(first.text, other.text);
    assert!(again.cached_tokens > 0 && again.cached_tokens < again.prompt_tokens, "{again:?}");

    let seeded = |seed| request(&model, "Write a short line about the sea.", Sampling { max_tokens: 30, temperature: 0.9, seed: Some(seed), ..Sampling::default() });
    let s1 = a.generate_blocking(seeded(7)).unwrap();
    let s2 = b.generate_blocking(seeded(7)).unwrap();
    assert_eq!(s1.text, s2.text, "the same seed must give the same text");
}

#[test]
fn limits_stops_and_cancellation() {
    let model = chat_model();
    let e = engine(model.clone(), EngineConfig::default());
    let long = "Count from one to one hundred in words, separated by commas.";

    let capped = e.generate_blocking(request(&model, long, greedy(5))).unwrap();
    assert_eq!((capped.completion_tokens, capped.finish_reason), (5, FinishReason::Length));

    let full = e.generate_blocking(request(&model, long, greedy(30))).unwrap();
    let stop = full.text.split_whitespace().nth(2).expect("an answer of several words").to_owned();
    let stopped = e.generate_blocking(request(&model, long, Sampling { stop: vec![stop.clone()], ..greedy(30) })).unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(!stopped.text.contains(&stop), "{:?} still contains the stop sequence {stop:?}", stopped.text);
    assert!(full.text.starts_with(&stopped.text));

    // The client goes away after the first piece of text.
    let (tx, rx) = std::sync::mpsc::channel();
    e.submit(request(&model, long, greedy(200)), Box::new(|_| false), Box::new(move |r| drop(tx.send(r)))).unwrap();
    let cancelled = rx.recv().unwrap().unwrap();
    assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
    assert!(cancelled.completion_tokens <= 2, "{cancelled:?}");

    // A deadline already passed ends the generation at once.
    let mut late = request(&model, long, greedy(200));
    late.deadline = Instant::now();
    assert_eq!(e.generate_blocking(late).unwrap().finish_reason, FinishReason::Deadline);
}

#[test]
fn prompts_over_the_context_and_a_full_queue_are_refused() {
    let model = chat_model();
    let small = engine(model.clone(), EngineConfig { n_ctx: 64, ..EngineConfig::default() });
    let too_long = request(&model, &"tell me about the weather ".repeat(40), greedy(8));
    match small.generate_blocking(too_long) {
        Err(LlmError::ContextExceeded { prompt_tokens, n_ctx: 64 }) => assert!(prompt_tokens > 64),
        other => panic!("expected ContextExceeded, got {other:?}"),
    }

    let queued = engine(model.clone(), EngineConfig { queue_max: 1, ..EngineConfig::default() });
    let slow = || request(&model, "Tell me a long story about a dragon.", greedy(300));
    let mut refused = 0;
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..4 {
        let tx = tx.clone();
        match queued.submit(slow(), Box::new(|_| true), Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        })) {
            Ok(()) => {}
            Err(LlmError::Busy(1)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    drop(tx);
    assert!(refused >= 2, "a queue of one must refuse some of four quick submissions (refused {refused})");
    assert!(rx.iter().all(|ok| ok), "the accepted generations complete");
}

#[test]
fn the_chat_template_comes_from_the_model() {
    let model = chat_model();
    let prompt = model.render_chat(&[ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, "Hi")]).unwrap();
    // SmolLM2's GGUF carries a ChatML template.
    assert!(prompt.contains("<|im_start|>system\nBe brief.<|im_end|>"), "{prompt:?}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    assert!(model.render_chat(&[]).is_err());
}

#[test]
fn embeddings_match_the_reference_model() {
    let embedder = Embedder::load(&model_file("all-MiniLM-L6-v2.gguf"), "all-minilm-l6-v2", 1).expect("load the embedding model");
    assert_eq!(embedder.dimensions(), 384);
    let texts: Vec<String> = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.", "A man is riding a horse."].map(String::from).to_vec();
    let (v, tokens) = embedder.embed(&texts).unwrap();
    assert!(tokens > 20);
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "vectors are unit length, got {norm}");
    }
    // sentence-transformers' documentation gives 0.7553 for this pair with all-MiniLM-L6-v2.
    let food = cosine(&v[0], &v[1]);
    assert!((food - 0.7553).abs() < 0.01, "cosine(food, bread) = {food}");
    assert!(cosine(&v[0], &v[2]) < 0.2 && cosine(&v[0], &v[3]) < food);
    // Texts longer than the model's window are cut, not refused.
    let (long, _) = embedder.embed(&["word ".repeat(2000)]).unwrap();
    assert_eq!(long[0].len(), 384);
}
