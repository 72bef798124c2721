//! What a peer sends in OrbitDB's heads exchange and pubsub: a byte stream cut into CBOR items,
//! each decoded as an entry (or an identity) and verified.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(len)) = selfcloud_orbitdb::cbor::item_len(rest) {
        // A found item lies inside the input.
        assert!(len > 0 && len <= rest.len());
        let item = &rest[..len];
        if let Ok(entry) = selfcloud_orbitdb::Entry::decode(item) {
            let _ = entry.encode();
            let _ = selfcloud_orbitdb::op::Op::from_payload(&entry.payload);
        }
        if let Ok(identity) = selfcloud_orbitdb::Identity::decode(item) {
            let _ = identity.verify();
        }
        rest = &rest[len..];
    }
});
