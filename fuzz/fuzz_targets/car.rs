//! CAR v1 streams (dag/import bodies): header, sections, CIDs, block verification.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut sink = selfcloud_ipfs::MemoryBlocks::default();
    if selfcloud_ipfs::car::read(data, &mut sink).is_ok() {
        // Every block accepted hashes to its CID.
        for (cid, block) in &sink.blocks {
            assert!(selfcloud_ipfs::verify_block(cid, block).is_ok());
        }
    }
});
