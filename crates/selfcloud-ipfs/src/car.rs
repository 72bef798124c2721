//! CAR v1: a DAG's blocks in one stream (header, then varint-framed `CID || block` sections).

use crate::{push_varint, BlockSink, Cid, Error};

/// Largest CAR header we read.
const HEADER_BYTES_MAX: usize = 64 << 10;

/// The CAR v1 header for `roots`: dag-cbor `{"roots": [CID…], "version": 1}`, length-prefixed.
pub fn header(roots: &[Cid]) -> Vec<u8> {
    // dag-cbor by hand is small here: a 2-entry map, keys in canonical (length, then bytewise) order.
    let mut cbor = vec![0xa2, 0x65];
    cbor.extend_from_slice(b"roots");
    cbor.push(0x80 | roots.len().min(23) as u8);
    for root in roots.iter().take(23) {
        let bytes = root.to_bytes();
        cbor.extend_from_slice(&[0xd8, 0x2a]); // tag 42
        let len = bytes.len() + 1;
        if len < 24 {
            cbor.push(0x40 | len as u8);
        } else {
            cbor.extend_from_slice(&[0x58, len as u8]);
        }
        cbor.push(0x00); // the multibase identity prefix of tag 42
        cbor.extend_from_slice(&bytes);
    }
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    push_varint(cbor.len() as u64, &mut out);
    out.extend_from_slice(&cbor);
    out
}

/// One section: `varint(len) || CID || block`.
pub fn section(cid: &Cid, block: &[u8]) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(block.len() + cid_bytes.len() + 10);
    push_varint((cid_bytes.len() + block.len()) as u64, &mut out);
    out.extend_from_slice(&cid_bytes);
    out.extend_from_slice(block);
    out
}

/// Read a whole CAR v1 from memory: each block is verified against its CID and handed to `sink`.
/// Returns the header's roots.
pub fn read(car: &[u8], sink: &mut (impl BlockSink + ?Sized)) -> Result<Vec<Cid>, Error> {
    let mut reader = CarReader::new(car)?;
    while let Some((cid, block)) = reader.next_block()? {
        sink.put(&cid, &block)?;
    }
    Ok(reader.roots)
}

/// Reads a CAR v1 from any byte stream, one verified block at a time, holding at most one
/// section in memory (so a CAR larger than memory imports fine).
pub struct CarReader<R: std::io::Read> {
    input: R,
    /// The header's roots.
    pub roots: Vec<Cid>,
}

impl<R: std::io::Read> CarReader<R> {
    /// Read and check the header.
    pub fn new(mut input: R) -> Result<CarReader<R>, Error> {
        let header_len = read_varint_from(&mut input)?.ok_or(Error::Malformed("empty CAR"))?;
        let header_len = usize::try_from(header_len).ok().filter(|n| *n <= HEADER_BYTES_MAX).ok_or(Error::Malformed("CAR header length out of range"))?;
        let mut header = vec![0u8; header_len];
        input.read_exact(&mut header).map_err(|_| Error::Malformed("CAR header is truncated"))?;
        let roots = parse_header(&header)?;
        Ok(CarReader { input, roots })
    }

    /// The next block, verified against its CID; `None` at the end of the stream.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, Error> {
        let Some(len) = read_varint_from(&mut self.input)? else { return Ok(None) };
        let len = usize::try_from(len).ok().filter(|n| *n <= crate::BLOCK_BYTES_MAX + 128).ok_or(Error::Malformed("CAR section length out of range"))?;
        let mut body = vec![0u8; len];
        self.input.read_exact(&mut body).map_err(|_| Error::Malformed("CAR section is truncated"))?;
        let mut cursor = std::io::Cursor::new(&body[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|_| Error::Malformed("bad CID in CAR section"))?;
        let at = cursor.position() as usize;
        body.drain(..at);
        crate::verify_block(&cid, &body)?;
        Ok(Some((cid, body)))
    }
}

/// A varint from a stream; `None` at a clean end of stream (before its first byte).
fn read_varint_from(input: &mut impl std::io::Read) -> Result<Option<u64>, Error> {
    let mut n: u64 = 0;
    for i in 0..10 {
        let Some(byte) = read_byte(input)? else {
            return if i == 0 { Ok(None) } else { Err(Error::Malformed("CAR is truncated inside a varint")) };
        };
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(n));
        }
    }
    Err(Error::Malformed("bad varint in CAR"))
}

fn read_byte(input: &mut impl std::io::Read) -> Result<Option<u8>, Error> {
    let mut byte = [0u8];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Store(format!("reading the CAR: {e}"))),
        }
    }
}

/// The roots of a CAR v1 header. Only what CAR writers emit is accepted: a map with `roots`
/// (tag-42 CIDs) and `version: 1`.
fn parse_header(cbor: &[u8]) -> Result<Vec<Cid>, Error> {
    let bad = Error::Malformed("CAR header is not {roots, version: 1}");
    let mut roots = Vec::new();
    let mut version = None;
    let mut at = 0;
    let byte = |at: usize| cbor.get(at).copied().ok_or(Error::Malformed("CAR header is truncated"));
    let entries = match byte(at)? {
        b @ 0xa1..=0xb7 => (b - 0xa0) as usize,
        _ => return Err(bad),
    };
    at += 1;
    for _ in 0..entries {
        let key_len = match byte(at)? {
            b @ 0x60..=0x77 => (b - 0x60) as usize,
            _ => return Err(Error::Malformed("CAR header key is not a short string")),
        };
        let key = cbor.get(at + 1..at + 1 + key_len).ok_or(Error::Malformed("CAR header is truncated"))?;
        at += 1 + key_len;
        match key {
            b"version" => {
                version = Some(byte(at)?);
                at += 1;
            }
            b"roots" => {
                let count = match byte(at)? {
                    b @ 0x80..=0x97 => (b - 0x80) as usize,
                    _ => return Err(Error::Malformed("CAR roots is not a short list")),
                };
                at += 1;
                for _ in 0..count {
                    if byte(at)? != 0xd8 || byte(at + 1)? != 0x2a {
                        return Err(Error::Malformed("CAR root is not a CID"));
                    }
                    at += 2;
                    let (len, head) = match byte(at)? {
                        b @ 0x40..=0x57 => ((b - 0x40) as usize, 1),
                        0x58 => (byte(at + 1)? as usize, 2),
                        _ => return Err(Error::Malformed("CAR root is not a byte string")),
                    };
                    let bytes = cbor.get(at + head..at + head + len).ok_or(Error::Malformed("CAR header is truncated"))?;
                    if bytes.first() != Some(&0) {
                        return Err(Error::Malformed("CAR root lacks the identity multibase prefix"));
                    }
                    roots.push(Cid::try_from(&bytes[1..]).map_err(|_| Error::Malformed("bad CID in CAR roots"))?);
                    at += head + len;
                }
            }
            _ => return Err(Error::Malformed("unexpected key in CAR header")),
        }
    }
    if version != Some(1) {
        return Err(Error::Malformed("only CAR version 1 is supported"));
    }
    Ok(roots)
}
