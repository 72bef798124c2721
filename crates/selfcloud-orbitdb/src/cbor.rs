//! Where one CBOR item ends in a byte stream. OrbitDB's heads exchange writes head entries raw,
//! one after another with no length prefix, and the transport splits and joins writes as it
//! likes (yamux frames are at most 256 KiB, and JS peers coalesce small writes), so items must be
//! found in the bytes themselves.

use crate::Error;

/// Largest item accepted (an entry with a payload of up to about 4 MiB).
pub const ITEM_BYTES_MAX: usize = 4 << 20;

fn malformed(reason: &str) -> Error {
    Error::Malformed { what: "CBOR item", reason: reason.to_owned() }
}

/// The length of the first complete CBOR item in `buf`, `None` if more bytes are needed.
/// DAG-CBOR only: indefinite lengths and reserved headers are refused, as is anything that
/// would be larger than [`ITEM_BYTES_MAX`].
pub fn item_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let mut pos = 0usize;
    let mut pending = 1u64;
    while pending > 0 {
        let Some(&initial) = buf.get(pos) else { return Ok(None) };
        let (major, info) = (initial >> 5, initial & 31);
        let extra = match info {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(malformed("indefinite length or reserved header")),
        };
        let Some(arg_bytes) = buf.get(pos + 1..pos + 1 + extra) else { return Ok(None) };
        let value = if extra == 0 { u64::from(info) } else { arg_bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)) };
        pos += 1 + extra;
        pending -= 1;
        let grow = |n: u64| -> Result<u64, Error> {
            // Every item takes at least one byte: more than the cap could ever hold is malformed.
            if n > ITEM_BYTES_MAX as u64 { Err(malformed("too many items")) } else { Ok(n) }
        };
        match major {
            0 | 1 | 7 => {}
            2 | 3 => {
                let len = usize::try_from(value).ok().filter(|l| *l <= ITEM_BYTES_MAX).ok_or_else(|| malformed("string too long"))?;
                pos += len;
            }
            4 => pending += grow(value)?,
            5 => pending += grow(value.saturating_mul(2))?,
            _ => pending += 1, // 6: a tag, then its item
        }
        if pos > ITEM_BYTES_MAX || pending > ITEM_BYTES_MAX as u64 {
            return Err(malformed("item too large"));
        }
    }
    Ok(if pos <= buf.len() { Some(pos) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_found_whole_and_only_whole() {
        let entry = crate::encode("t", &serde_json::json!({"a": [1, "two", {"b": null}], "c": 1.5, "d": "x".repeat(300)})).unwrap();
        let mut stream = entry.clone();
        stream.extend_from_slice(&entry);
        assert_eq!(item_len(&stream).unwrap(), Some(entry.len()));
        for cut in 0..entry.len() {
            assert_eq!(item_len(&entry[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(item_len(&[0x9f]).is_err(), "indefinite array");
        assert!(item_len(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(), "huge string");
        assert!(item_len(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(), "huge array");
    }
}
