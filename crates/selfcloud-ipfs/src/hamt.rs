//! HAMT-sharded UnixFS directories, as Kubo (go-unixfs) and the JS importer write them.
//!
//! Fanout 256, hash type `0x22` (murmur3-x64-64: the first half of murmur3-x64-128, seed 0,
//! big-endian). Level `d` indexes by byte `d % 8` of the hash of the name, or, past the first 8
//! levels, of the name followed by the byte `d / 8`. A bucket exists where two or more names share
//! its prefix, so the shape depends only on the set of names. Links are named by the index as two
//! uppercase hex digits, followed by the entry's name for entries (sub-shards carry the digits
//! only), in index order; the node's `Data` is the bitmap of occupied indices as a minimal
//! big-endian integer.

use bytes::Bytes;
use ipld_dagpb::{PbLink, PbNode};

use crate::import::Imported;
use crate::unixfs::{Data, Kind};
use crate::{cid_of, BlockSink, Error, Profile, DAG_PB};

/// Multicodec of murmur3-x64-64, the only HAMT hash UnixFS uses.
pub const HASH_TYPE_MURMUR3_64: u64 = 0x22;
/// Entries per shard node.
pub const FANOUT: usize = 256;
/// Levels a name can be told apart on (beyond this every hash byte is exhausted many times).
const DEPTH_MAX: usize = 64;

/// Byte `depth` of the infinite hash of `name`.
fn index(name: &str, depth: usize) -> usize {
    let round = depth / 8;
    let mut input = name.as_bytes().to_vec();
    if round > 0 {
        // Only reached when names collide on 64 bits; u8 as the JS and Go implementations do.
        input.push(round as u8);
    }
    let h1 = murmur3::murmur3_x64_128(&mut std::io::Cursor::new(&input), 0).map_or(0, |h| h as u64);
    h1.to_be_bytes()[depth % 8] as usize
}

/// Write the shard tree over `entries` (names unique) and return its root.
pub(crate) fn build(entries: Vec<(String, Imported)>, profile: &Profile, sink: &mut (impl BlockSink + ?Sized)) -> Result<Imported, Error> {
    build_level(entries, 0, profile, sink)
}

fn build_level(entries: Vec<(String, Imported)>, depth: usize, profile: &Profile, sink: &mut (impl BlockSink + ?Sized)) -> Result<Imported, Error> {
    if depth > DEPTH_MAX {
        return Err(Error::Malformed("HAMT names collide beyond any depth"));
    }
    let mut slots: Vec<Vec<(String, Imported)>> = (0..FANOUT).map(|_| Vec::new()).collect();
    for (name, node) in entries {
        slots[index(&name, depth)].push((name, node));
    }
    let mut links = Vec::new();
    let mut bitmap = [0u8; FANOUT / 8];
    let (mut size, mut children_dag) = (0u64, 0u64);
    for (i, mut slot) in slots.into_iter().enumerate() {
        let (name, child) = match slot.len() {
            0 => continue,
            1 => {
                let (name, child) = slot.remove(0);
                (format!("{i:02X}{name}"), child)
            }
            _ => (format!("{i:02X}"), build_level(slot, depth + 1, profile, sink)?),
        };
        bitmap[FANOUT / 8 - 1 - i / 8] |= 1 << (i % 8);
        size += child.size;
        children_dag += child.dag_size;
        links.push(PbLink { cid: child.cid, name: Some(name), size: Some(child.dag_size) });
    }
    let first = bitmap.iter().position(|b| *b != 0).unwrap_or(bitmap.len() - 1);
    let data = Data { data: Some(&bitmap[first..]), hash_type: Some(HASH_TYPE_MURMUR3_64), fanout: Some(FANOUT as u64), ..Data::new(Kind::HamtShard) };
    let block = PbNode { links, data: Some(Bytes::from(data.encode())) }.into_bytes();
    let cid = cid_of(profile.cid_version, DAG_PB, &block);
    sink.put(&cid, &block)?;
    Ok(Imported { cid, size, dag_size: block.len() as u64 + children_dag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_first_half_of_murmur3_x64_128_big_endian() {
        // murmur3_x64_128("hello", 0) = cbd8a7b341bd9b02 5b1e906a48ae1d19 (as the JS importer's
        // @multiformats/murmur3 prints it); level 0 indexes by 0xcb, level 1 by 0xd8.
        assert_eq!(index("hello", 0), 0xcb);
        assert_eq!(index("hello", 1), 0xd8);
        assert_eq!(index("hello", 7), 0x02);
    }
}
