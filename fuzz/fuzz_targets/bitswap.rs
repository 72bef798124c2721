//! Bitswap frames and messages as a foreign peer sends them.
#![no_main]

use selfcloud_ipfs::bitswap::{frame_length, Message};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some((len, at))) = frame_length(data) {
        assert!(len <= selfcloud_ipfs::bitswap::MESSAGE_BYTES_MAX);
        if let Some(body) = data.get(at..at + len) {
            let _ = Message::decode(body);
        }
    }
    if let Ok(message) = Message::decode(data) {
        // Blocks are named by their own hash, and what decodes re-encodes to the same message.
        for (cid, block) in &message.blocks {
            assert!(selfcloud_ipfs::verify_block(cid, block).is_ok());
        }
        assert_eq!(Message::decode(&message.encode()).ok(), Some(message));
    }
});
