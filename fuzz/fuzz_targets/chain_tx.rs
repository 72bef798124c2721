//! What anyone can send a validator: a transaction's bytes (node API, mempool gossip, blocks).
//! Decoding must never panic, and whatever decodes must re-encode to the same bytes (one
//! encoding per transaction) and survive a signature check.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = selfcloud_chain::Tx::decode_bytes(data) {
        assert_eq!(tx.to_bytes(), data, "a decoded transaction must re-encode to its input");
        let _ = tx.verify_signature();
        let _ = tx.hash();
    }
    if let Ok(block) = selfcloud_chain::Block::decode_bytes(data) {
        let _ = block.digest();
    }
});
