//! Sampling parameters and their allowed ranges (OpenAI's, where OpenAI defines one).

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// 0 picks the most likely token every time (greedy, deterministic); higher is more random.
    /// Default 0.8. Range 0–2.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probabilities add up to this.
    /// Default 0.95. Range (0, 1].
    pub top_p: f32,
    /// Seed of the random draw; the same seed, prompt and parameters give the same output.
    /// Default: a fresh seed per request.
    pub seed: Option<u32>,
    /// Generation ends before any of these strings (at most 4, each at most 64 bytes).
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling { max_tokens: 256, temperature: 0.8, top_p: 0.95, seed: None, stop: Vec::new() }
    }
}

/// A parameter out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct SamplingError {
    /// The parameter's name as clients send it.
    pub param: &'static str,
    /// What is allowed.
    pub reason: String,
}

impl Sampling {
    /// Most stop sequences a request may carry.
    pub const STOPS_MAX: usize = 4;
    /// Longest stop sequence, bytes.
    pub const STOP_BYTES_MAX: usize = 64;

    /// Checks every range; `max_tokens_cap` is the tier's ceiling.
    pub fn validate(&self, max_tokens_cap: u32) -> Result<(), SamplingError> {
        let err = |param, reason: String| Err(SamplingError { param, reason });
        if self.max_tokens == 0 || self.max_tokens > max_tokens_cap {
            return err("max_tokens", format!("must be from 1 to {max_tokens_cap} on this tier"));
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return err("temperature", "must be from 0 to 2".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err("top_p", "must be greater than 0 and at most 1".into());
        }
        if self.stop.len() > Self::STOPS_MAX {
            return err("stop", format!("at most {} sequences", Self::STOPS_MAX));
        }
        if self.stop.iter().any(|s| s.is_empty() || s.len() > Self::STOP_BYTES_MAX) {
            return err("stop", format!("each sequence must be 1 to {} bytes", Self::STOP_BYTES_MAX));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(Sampling::default().validate(512).is_ok());
        let bad = [
            Sampling { max_tokens: 0, ..Sampling::default() },
            Sampling { max_tokens: 513, ..Sampling::default() },
            Sampling { temperature: -0.1, ..Sampling::default() },
            Sampling { temperature: 2.5, ..Sampling::default() },
            Sampling { temperature: f32::NAN, ..Sampling::default() },
            Sampling { top_p: 0.0, ..Sampling::default() },
            Sampling { stop: vec![String::new()], ..Sampling::default() },
            Sampling { stop: vec!["x".into(); 5], ..Sampling::default() },
        ];
        for s in bad {
            assert!(s.validate(512).is_err(), "{s:?}");
        }
    }
}
