//! Bitswap 1.2.0 messages: the protobuf `Message` and its length-prefixed framing.
//!
//! Pure encoding and decoding (no I/O), so the parser can be fuzzed on its own. The wire form is
//! an unsigned-varint length followed by the protobuf; one message is at most
//! [`MESSAGE_BYTES_MAX`]. Block payloads arrive as (CID prefix, data) pairs: the receiver rebuilds
//! the CID by hashing the data, so a block can never arrive under a name it does not hash to.

use cid::Cid;
use quick_protobuf::{BytesReader, Writer};

use crate::{push_varint, Error, BLOCK_BYTES_MAX, SHA2_256};

/// The protocol id this codec speaks.
pub const PROTOCOL: &str = "/ipfs/bitswap/1.2.0";

/// Largest message we send or accept (the spec's limit).
pub const MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Whether a want asks for the block itself or only whether the peer has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantType {
    /// Send the block.
    Block,
    /// Say HAVE (or DONT_HAVE when asked).
    Have,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The wanted block.
    pub cid: Cid,
    /// Higher first.
    pub priority: i32,
    /// This entry withdraws an earlier want.
    pub cancel: bool,
    /// Block or HAVE.
    pub want_type: WantType,
    /// Answer DONT_HAVE rather than staying silent when the block is not here.
    pub send_dont_have: bool,
}

/// A block presence answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The peer has the block.
    Have,
    /// The peer does not have it (or will not serve it).
    DontHave,
}

/// A decoded or to-be-encoded message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    /// Wantlist entries.
    pub wants: Vec<Want>,
    /// The wantlist replaces the sender's previous one.
    pub full_wantlist: bool,
    /// Blocks, each with the CID it hashes to.
    pub blocks: Vec<(Cid, Vec<u8>)>,
    /// HAVE / DONT_HAVE answers.
    pub presences: Vec<(Cid, Presence)>,
}

impl Message {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.wants.is_empty() && self.blocks.is_empty() && self.presences.is_empty() && !self.full_wantlist
    }

    /// Bytes this message will roughly take on the wire (to keep under [`MESSAGE_BYTES_MAX`]).
    pub fn encoded_len_estimate(&self) -> usize {
        16 + self.wants.len() * 48 + self.presences.len() * 44 + self.blocks.iter().map(|(_, b)| b.len() + 16).sum::<usize>()
    }

    /// The protobuf encoding (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_estimate());
        let mut w = Writer::new(&mut out);
        // Writing to a Vec cannot fail; the result is checked anyway rather than unwrapped.
        let result = (|| -> quick_protobuf::Result<()> {
            if !self.wants.is_empty() || self.full_wantlist {
                let wantlist = encode_wantlist(&self.wants, self.full_wantlist);
                w.write_with_tag(10, |w| w.write_bytes(&wantlist))?;
            }
            for (cid, data) in &self.blocks {
                let mut block = Vec::with_capacity(data.len() + 16);
                let mut bw = Writer::new(&mut block);
                bw.write_with_tag(10, |w| w.write_bytes(&prefix_of(cid)))?;
                bw.write_with_tag(18, |w| w.write_bytes(data))?;
                w.write_with_tag(26, |w| w.write_bytes(&block))?;
            }
            for (cid, presence) in &self.presences {
                let mut p = Vec::with_capacity(48);
                let mut pw = Writer::new(&mut p);
                pw.write_with_tag(10, |w| w.write_bytes(&cid.to_bytes()))?;
                pw.write_with_tag(16, |w| w.write_enum(if *presence == Presence::Have { 0 } else { 1 }))?;
                w.write_with_tag(34, |w| w.write_bytes(&p))?;
            }
            Ok(())
        })();
        debug_assert!(result.is_ok());
        out
    }

    /// The framed encoding: varint length, then the message.
    pub fn encode_framed(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(body.len() + 5);
        push_varint(body.len() as u64, &mut out);
        out.extend_from_slice(&body);
        out
    }

    /// Decode one message (without its length prefix). Never panics on input; blocks are checked
    /// against the size limit and hashed into their CIDs here.
    pub fn decode(bytes: &[u8]) -> Result<Message, Error> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(Error::Malformed("Bitswap message over 4 MiB"));
        }
        let bad = |_| Error::Malformed("Bitswap message is not valid protobuf");
        let mut r = BytesReader::from_bytes(bytes);
        let mut message = Message::default();
        while !r.is_eof() {
            match r.next_tag(bytes).map_err(bad)? {
                10 => {
                    let wantlist = r.read_bytes(bytes).map_err(bad)?;
                    decode_wantlist(wantlist, &mut message)?;
                }
                // Bitswap 1.0.0 blocks: bare data, CIDv0 implied.
                18 => {
                    let data = r.read_bytes(bytes).map_err(bad)?;
                    check_size(data)?;
                    message.blocks.push((crate::cid_of(cid::Version::V0, crate::DAG_PB, data), data.to_vec()));
                }
                26 => {
                    let block = r.read_bytes(bytes).map_err(bad)?;
                    message.blocks.push(decode_block(block)?);
                }
                34 => {
                    let presence = r.read_bytes(bytes).map_err(bad)?;
                    message.presences.push(decode_presence(presence)?);
                }
                tag => r.read_unknown(bytes, tag).map_err(bad)?,
            }
        }
        Ok(message)
    }
}

/// Read a frame's varint length prefix from the start of `buf`: `Ok(Some((len, prefix_bytes)))`,
/// `Ok(None)` when more bytes are needed, an error when the length is over the limit.
pub fn frame_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut len: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if len > MESSAGE_BYTES_MAX as u64 {
                return Err(Error::Malformed("Bitswap message over 4 MiB"));
            }
            return Ok(Some((len as usize, i + 1)));
        }
        if i == 4 {
            // Five 7-bit groups already exceed the 4 MiB limit.
            return Err(Error::Malformed("Bitswap message over 4 MiB"));
        }
    }
    Ok(None)
}

fn check_size(data: &[u8]) -> Result<(), Error> {
    if data.len() > BLOCK_BYTES_MAX {
        return Err(Error::BlockTooLarge(data.len()));
    }
    Ok(())
}

fn encode_wantlist(wants: &[Want], full: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(wants.len() * 48);
    let mut w = Writer::new(&mut out);
    let result = (|| -> quick_protobuf::Result<()> {
        for want in wants {
            let mut entry = Vec::with_capacity(48);
            let mut ew = Writer::new(&mut entry);
            ew.write_with_tag(10, |w| w.write_bytes(&want.cid.to_bytes()))?;
            ew.write_with_tag(16, |w| w.write_int32(want.priority))?;
            if want.cancel {
                ew.write_with_tag(24, |w| w.write_bool(true))?;
            }
            if want.want_type == WantType::Have {
                ew.write_with_tag(32, |w| w.write_enum(1))?;
            }
            if want.send_dont_have {
                ew.write_with_tag(40, |w| w.write_bool(true))?;
            }
            w.write_with_tag(10, |w| w.write_bytes(&entry))?;
        }
        if full {
            w.write_with_tag(16, |w| w.write_bool(true))?;
        }
        Ok(())
    })();
    debug_assert!(result.is_ok());
    out
}

fn decode_wantlist(bytes: &[u8], message: &mut Message) -> Result<(), Error> {
    let bad = |_| Error::Malformed("Bitswap wantlist is not valid protobuf");
    let mut r = BytesReader::from_bytes(bytes);
    while !r.is_eof() {
        match r.next_tag(bytes).map_err(bad)? {
            10 => {
                let entry = r.read_bytes(bytes).map_err(bad)?;
                message.wants.push(decode_want(entry)?);
            }
            16 => message.full_wantlist = r.read_bool(bytes).map_err(bad)?,
            tag => r.read_unknown(bytes, tag).map_err(bad)?,
        }
    }
    Ok(())
}

fn decode_want(bytes: &[u8]) -> Result<Want, Error> {
    let bad = |_| Error::Malformed("Bitswap wantlist entry is not valid protobuf");
    let mut r = BytesReader::from_bytes(bytes);
    let mut cid = None;
    let mut want = Want { cid: Cid::default(), priority: 1, cancel: false, want_type: WantType::Block, send_dont_have: false };
    while !r.is_eof() {
        match r.next_tag(bytes).map_err(bad)? {
            10 => cid = Some(Cid::try_from(r.read_bytes(bytes).map_err(bad)?).map_err(|_| Error::Malformed("wantlist entry has an invalid CID"))?),
            16 => want.priority = r.read_int32(bytes).map_err(bad)?,
            24 => want.cancel = r.read_bool(bytes).map_err(bad)?,
            32 => want.want_type = if r.read_enum::<i32>(bytes).map_err(bad)? == 1 { WantType::Have } else { WantType::Block },
            40 => want.send_dont_have = r.read_bool(bytes).map_err(bad)?,
            tag => r.read_unknown(bytes, tag).map_err(bad)?,
        }
    }
    want.cid = cid.ok_or(Error::Malformed("wantlist entry has no CID"))?;
    Ok(want)
}

fn decode_block(bytes: &[u8]) -> Result<(Cid, Vec<u8>), Error> {
    let bad = |_| Error::Malformed("Bitswap block is not valid protobuf");
    let mut r = BytesReader::from_bytes(bytes);
    let (mut prefix, mut data) = (None, None);
    while !r.is_eof() {
        match r.next_tag(bytes).map_err(bad)? {
            10 => prefix = Some(r.read_bytes(bytes).map_err(bad)?),
            18 => data = Some(r.read_bytes(bytes).map_err(bad)?),
            tag => r.read_unknown(bytes, tag).map_err(bad)?,
        }
    }
    let prefix = prefix.ok_or(Error::Malformed("Bitswap block has no CID prefix"))?;
    let data = data.unwrap_or_default();
    check_size(data)?;
    Ok((cid_from_prefix(prefix, data)?, data.to_vec()))
}

fn decode_presence(bytes: &[u8]) -> Result<(Cid, Presence), Error> {
    let bad = |_| Error::Malformed("Bitswap block presence is not valid protobuf");
    let mut r = BytesReader::from_bytes(bytes);
    let (mut cid, mut presence) = (None, Presence::Have);
    while !r.is_eof() {
        match r.next_tag(bytes).map_err(bad)? {
            10 => cid = Some(Cid::try_from(r.read_bytes(bytes).map_err(bad)?).map_err(|_| Error::Malformed("block presence has an invalid CID"))?),
            16 => presence = if r.read_enum::<i32>(bytes).map_err(bad)? == 1 { Presence::DontHave } else { Presence::Have },
            tag => r.read_unknown(bytes, tag).map_err(bad)?,
        }
    }
    Ok((cid.ok_or(Error::Malformed("block presence has no CID"))?, presence))
}

/// A CID's prefix: version, codec, hash code, digest length, as varints.
fn prefix_of(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    for value in [u64::from(cid.version()), cid.codec(), cid.hash().code(), u64::from(cid.hash().size())] {
        push_varint(value, &mut out);
    }
    out
}

fn cid_from_prefix(prefix: &[u8], data: &[u8]) -> Result<Cid, Error> {
    let mut fields = [0u64; 4];
    let mut rest = prefix;
    for field in &mut fields {
        let (value, tail) = read_varint(rest).ok_or(Error::Malformed("Bitswap block prefix is truncated"))?;
        *field = value;
        rest = tail;
    }
    let [version, codec, hash_code, hash_len] = fields;
    if hash_code != SHA2_256 || hash_len != 32 {
        return Err(Error::Unsupported("blocks hashed with anything but sha2-256"));
    }
    match version {
        0 if codec == crate::DAG_PB => Ok(crate::cid_of(cid::Version::V0, codec, data)),
        1 => Ok(crate::cid_of(cid::Version::V1, codec, data)),
        _ => Err(Error::Malformed("Bitswap block prefix has an invalid CID version")),
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let block = b"hello world".to_vec();
        let raw = crate::cid_of(cid::Version::V1, crate::RAW, &block);
        let pb = crate::cid_of(cid::Version::V0, crate::DAG_PB, b"\x0a\x02\x08\x01");
        Message {
            wants: vec![
                Want { cid: raw, priority: 7, cancel: false, want_type: WantType::Have, send_dont_have: true },
                Want { cid: pb, priority: 1, cancel: true, want_type: WantType::Block, send_dont_have: false },
            ],
            full_wantlist: true,
            blocks: vec![(raw, block), (pb, b"\x0a\x02\x08\x01".to_vec())],
            presences: vec![(pb, Presence::DontHave), (raw, Presence::Have)],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        let framed = m.encode_framed();
        let (len, at) = frame_length(&framed).unwrap().unwrap();
        assert_eq!(len + at, framed.len());
        assert_eq!(Message::decode(&framed[at..]).unwrap(), m);
    }

    #[test]
    fn a_block_is_named_by_its_hash_not_by_the_sender() {
        // Claiming a CIDv1 raw prefix for the data yields the data's own CID.
        let data = b"not what you asked for";
        let m = Message { blocks: vec![(crate::cid_of(cid::Version::V1, crate::RAW, b"other"), data.to_vec())], ..Message::default() };
        let decoded = Message::decode(&m.encode()).unwrap();
        assert_eq!(decoded.blocks[0].0, crate::cid_of(cid::Version::V1, crate::RAW, data));
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        for input in [&[0xff, 0xff][..], &[10, 5, 1], &[26, 2, 10, 9], &[34, 1, 0xff], &[26, 2, 18, 0]] {
            assert!(Message::decode(input).is_err(), "{input:?}");
        }
        assert!(frame_length(&[0x80, 0x80, 0x80, 0x04]).is_err(), "8 MiB frame");
        assert!(frame_length(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert_eq!(frame_length(&[0x80]).unwrap(), None);
    }
}
