//! dag-pb nodes and their UnixFS data, as export and the gateway read them.
#![no_main]

use selfcloud_ipfs::{cid_of, cid::Version, export, MemoryBlocks, DAG_PB};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cid = cid_of(Version::V0, DAG_PB, data);
    let _ = selfcloud_ipfs::links(&cid, data);
    let _ = selfcloud_ipfs::unixfs::Data::decode(data);
    // A lone block as a file root: stat, scoped walks and reading must fail cleanly.
    let mut blocks = MemoryBlocks::default();
    blocks.blocks.insert(cid, data.to_vec());
    let _ = export::stat(&blocks, &cid);
    let _ = export::walk_scoped(&blocks, cid, export::DagScope::Entity, Some(export::ByteRange { from: 1, to: Some(100) }), |_, _| Ok(()));
    for piece in export::FileReader::new(&blocks, cid) {
        if piece.is_err() {
            break;
        }
    }
});
