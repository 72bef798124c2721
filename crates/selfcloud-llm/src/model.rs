//! One model file, loaded once per process and memory-mapped read-only: the weights' pages belong
//! to the page cache, so every instance process that maps the same file shares one copy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::LlmError;

/// llama.cpp's backend is process-global and may be initialised once.
pub(crate) fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlmError::Inference(format!("llama.cpp backend: {e}")))
}

/// Who said a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person (or app) asking.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name as chat templates and APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role, content: content.into() }
    }
}

/// A loaded model.
pub struct Model {
    pub(crate) inner: LlamaModel,
    template: Option<LlamaChatTemplate>,
    name: String,
    path: PathBuf,
    file_bytes: u64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

impl Model {
    /// Maps `path` read-only. `gpu_layers` > 0 offloads that many layers where a GPU backend is
    /// built in (the `cuda` feature); CPU builds ignore it. `name` is what APIs call the model.
    pub fn load(path: &Path, name: &str, gpu_layers: u32) -> Result<Model, LlmError> {
        let fail = |reason: String| LlmError::Load { path: path.display().to_string(), reason };
        let file_bytes = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
        let backend = backend()?;
        // use_mmap is llama.cpp's default; said here because page sharing depends on it.
        let params = LlamaModelParams::default().with_use_mmap(true).with_n_gpu_layers(gpu_layers);
        let inner = LlamaModel::load_from_file(backend, path, &params).map_err(|e| fail(e.to_string()))?;
        let template = inner.chat_template(None).ok();
        Ok(Model { inner, template, name: name.to_owned(), path: path.to_owned(), file_bytes })
    }

    /// The name APIs use for this model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the model file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }

    /// Renders a conversation with the model's own chat template (from the GGUF metadata), ending
    /// with the opening of the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        if messages.is_empty() {
            return Err(LlmError::Invalid("a conversation needs at least one message".into()));
        }
        if messages.iter().any(|m| m.content.contains('\0')) {
            return Err(LlmError::Invalid("a message must not contain NUL characters".into()));
        }
        let Some(template) = &self.template else {
            // A model without a template: a plain transcript still works for base models.
            let mut out: String = messages.iter().map(|m| format!("{}: {}\n", m.role.as_str(), m.content)).collect();
            out.push_str("assistant:");
            return Ok(out);
        };
        let chat: Vec<LlamaChatMessage> = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.as_str().to_owned(), m.content.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| LlmError::Invalid(e.to_string()))?;
        self.inner.apply_chat_template(template, &chat, true).map_err(|e| LlmError::Inference(format!("chat template: {e}")))
    }

    /// Tokens of `text`; special tokens written in the text (from the chat template) are parsed.
    pub(crate) fn tokenize(&self, text: &str, add_bos: bool) -> Vec<LlamaToken> {
        self.inner.vocab().tokenize(text.as_bytes(), add_bos, true)
    }

    /// How many tokens `text` is.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenize(text, false).len()
    }

    pub(crate) fn piece(&self, token: LlamaToken) -> Vec<u8> {
        self.inner.vocab().token_to_piece(token, false, None)
    }

    pub(crate) fn is_end(&self, token: LlamaToken) -> bool {
        self.inner.vocab().is_eog(token)
    }

    pub(crate) fn add_bos(&self) -> bool {
        self.inner.vocab().should_add_bos()
    }
}
