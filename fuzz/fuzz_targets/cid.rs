//! CIDs from text (the routes' path parameters) and from bytes (Bitswap wants, CAR sections).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cid) = selfcloud_ipfs::parse_cid(text) {
            // Whatever parses must print and parse back to itself.
            assert_eq!(selfcloud_ipfs::parse_cid(&cid.to_string()).ok(), Some(cid));
        }
    }
    let _ = selfcloud_ipfs::Cid::try_from(data);
});
