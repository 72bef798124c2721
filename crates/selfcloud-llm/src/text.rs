//! Turning generated token bytes into text a client may see: whole UTF-8 characters only, and never
//! any part of a stop sequence.

/// Collects token bytes and releases text that is final.
#[derive(Debug, Default)]
pub(crate) struct TextStream {
    /// Bytes not yet released: an incomplete UTF-8 character, or text that may begin a stop sequence.
    pending: Vec<u8>,
    stops: Vec<String>,
    /// Everything released so far.
    released: String,
}

/// What pushing a token's bytes produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Text that may be shown now (may be empty).
    Text(String),
    /// A stop sequence was generated; this text before it is the last to show.
    Stopped(String),
}

impl TextStream {
    pub(crate) fn new(stops: Vec<String>) -> TextStream {
        TextStream { pending: Vec::new(), stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), released: String::new() }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Push {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // An incomplete character at the end waits for the next token; invalid bytes inside
            // become U+FFFD so a bad token cannot wedge the stream.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending = lossy.into_bytes();
                self.pending.len()
            }
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        if let Some(at) = self.stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            let before = text[..at].to_owned();
            self.pending.clear();
            self.released.push_str(&before);
            return Push::Stopped(before);
        }
        // Hold back the longest tail that could still grow into a stop sequence.
        let hold = self.stops.iter().map(|s| partial_suffix(&text, s)).max().unwrap_or(0);
        let cut = text.len() - hold;
        let out = text[..cut].to_owned();
        self.pending.drain(..cut);
        self.released.push_str(&out);
        Push::Text(out)
    }

    /// At the end of generation: whatever is still held back is final.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.released.push_str(&rest);
        rest
    }

    pub(crate) fn released(&self) -> &str {
        &self.released
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on a char boundary.
fn partial_suffix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max).rev().find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_wait_for_their_last_byte() {
        let mut s = TextStream::new(vec![]);
        let e = "é".as_bytes();
        assert_eq!(s.push(&e[..1]), Push::Text(String::new()));
        assert_eq!(s.push(&e[1..]), Push::Text("é".into()));
        assert_eq!(s.released(), "é");
    }

    #[test]
    fn stop_sequences_are_cut_even_across_tokens() {
        let mut s = TextStream::new(vec!["\nUser:".into()]);
        assert_eq!(s.push(b"Hello"), Push::Text("Hello".into()));
        assert_eq!(s.push(b"\nUs"), Push::Text(String::new()));
        assert_eq!(s.push(b"er: more"), Push::Stopped(String::new()));
        assert_eq!(s.released(), "Hello");
    }

    #[test]
    fn a_false_start_is_released() {
        let mut s = TextStream::new(vec!["STOP".into()]);
        assert_eq!(s.push(b"ST"), Push::Text(String::new()));
        assert_eq!(s.push(b"AY"), Push::Text("STAY".into()));
        assert_eq!(s.push(b"ST"), Push::Text(String::new()));
        assert_eq!(s.finish(), "ST");
        assert_eq!(s.released(), "STAYST");
    }

    #[test]
    fn invalid_bytes_do_not_wedge_the_stream() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(&[0xff, b'a']), Push::Text("\u{fffd}a".into()));
    }
}
