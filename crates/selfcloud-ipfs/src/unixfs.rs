//! The UnixFS `Data` message (the payload of a dag-pb node), as Kubo writes it.
//!
//! proto2, fields in number order, `blocksizes` unpacked — byte-for-byte what go-unixfs emits, which
//! is what makes our CIDs equal Kubo's.

use quick_protobuf::{BytesReader, Writer};

use crate::Error;

/// The UnixFS node kinds we write or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Leaf data of the legacy (non-raw) kind.
    Raw,
    /// A directory.
    Directory,
    /// A file (a leaf with data, or an internal node listing its children's sizes).
    File,
    /// Metadata (unsupported; refused on read).
    Metadata,
    /// A symbolic link.
    Symlink,
    /// A HAMT-sharded directory.
    HamtShard,
}

impl Kind {
    fn code(self) -> i32 {
        match self {
            Kind::Raw => 0,
            Kind::Directory => 1,
            Kind::File => 2,
            Kind::Metadata => 3,
            Kind::Symlink => 4,
            Kind::HamtShard => 5,
        }
    }

    fn from_code(code: i32) -> Result<Kind, Error> {
        Ok(match code {
            0 => Kind::Raw,
            1 => Kind::Directory,
            2 => Kind::File,
            3 => Kind::Metadata,
            4 => Kind::Symlink,
            5 => Kind::HamtShard,
            _ => return Err(Error::Malformed("unknown UnixFS type")),
        })
    }
}

/// A decoded or to-be-encoded `Data` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data<'a> {
    /// Node kind.
    pub kind: Kind,
    /// Inline file bytes (leaves).
    pub data: Option<&'a [u8]>,
    /// Total file bytes under this node.
    pub filesize: Option<u64>,
    /// File bytes under each child link, in link order.
    pub blocksizes: Vec<u64>,
    /// HAMT hash function (sharded directories).
    pub hash_type: Option<u64>,
    /// HAMT fanout (sharded directories).
    pub fanout: Option<u64>,
}

impl<'a> Data<'a> {
    /// A node of `kind` with nothing else set.
    pub fn new(kind: Kind) -> Data<'a> {
        Data { kind, data: None, filesize: None, blocksizes: Vec::new(), hash_type: None, fanout: None }
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.map_or(0, <[u8]>::len) + 16 + 10 * self.blocksizes.len());
        let mut w = Writer::new(&mut out);
        // Writing to a Vec cannot fail; the results are checked anyway rather than unwrapped.
        let result = (|| -> quick_protobuf::Result<()> {
            w.write_with_tag(8, |w| w.write_enum(self.kind.code()))?;
            if let Some(data) = self.data {
                w.write_with_tag(18, |w| w.write_bytes(data))?;
            }
            if let Some(size) = self.filesize {
                w.write_with_tag(24, |w| w.write_uint64(size))?;
            }
            for size in &self.blocksizes {
                w.write_with_tag(32, |w| w.write_uint64(*size))?;
            }
            if let Some(h) = self.hash_type {
                w.write_with_tag(40, |w| w.write_uint64(h))?;
            }
            if let Some(f) = self.fanout {
                w.write_with_tag(48, |w| w.write_uint64(f))?;
            }
            Ok(())
        })();
        debug_assert!(result.is_ok());
        out
    }

    /// Decode, refusing anything malformed (never panics on input).
    pub fn decode(bytes: &'a [u8]) -> Result<Data<'a>, Error> {
        let bad = |_| Error::Malformed("UnixFS data is not valid protobuf");
        let mut r = BytesReader::from_bytes(bytes);
        let mut kind = None;
        let mut out = Data::new(Kind::File);
        while !r.is_eof() {
            match r.next_tag(bytes).map_err(bad)? {
                8 => kind = Some(Kind::from_code(r.read_enum::<i32>(bytes).map_err(bad)?)?),
                18 => out.data = Some(r.read_bytes(bytes).map_err(bad)?),
                24 => out.filesize = Some(r.read_uint64(bytes).map_err(bad)?),
                32 => out.blocksizes.push(r.read_uint64(bytes).map_err(bad)?),
                34 => {
                    // Packed blocksizes, which some writers emit.
                    let packed = r.read_packed(bytes, |r, b| r.read_uint64(b)).map_err(bad)?;
                    out.blocksizes.extend(packed);
                }
                40 => out.hash_type = Some(r.read_uint64(bytes).map_err(bad)?),
                48 => out.fanout = Some(r.read_uint64(bytes).map_err(bad)?),
                tag => r.read_unknown(bytes, tag).map_err(bad)?,
            }
        }
        out.kind = kind.ok_or(Error::Malformed("UnixFS data has no type"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut d = Data::new(Kind::File);
        d.filesize = Some(300_000);
        d.blocksizes = vec![262_144, 37_856];
        let bytes = d.encode();
        assert_eq!(Data::decode(&bytes).unwrap(), d);
        let leaf = Data { data: Some(b"hello"), filesize: Some(5), ..Data::new(Kind::File) };
        assert_eq!(leaf.encode(), [8, 2, 18, 5, b'h', b'e', b'l', b'l', b'o', 24, 5]);
    }

    #[test]
    fn garbage_is_an_error() {
        for input in [&[0xff, 0xff][..], &[8], &[18, 10, 1], &[24, 1], &[8, 99]] {
            assert!(Data::decode(input).is_err(), "{input:?}");
        }
    }
}
