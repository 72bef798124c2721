//! Byte compatibility with the real `@orbitdb/core` from npm (interop/js/orbitdb-entry.mjs):
//! identities and entries made by JS decode, re-encode to the same bytes and verify here, and
//! ours verify in OrbitDB.

use std::path::{Path, PathBuf};
use std::process::Command;

use ipld_core::ipld::Ipld;
use selfcloud_orbitdb::{Clock, Entry, Identity, Keys};

fn script() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(dir.join("node_modules/@orbitdb/core").exists(), "OrbitDB is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    dir.join("orbitdb-entry.mjs")
}

fn node(args: &[&str]) -> serde_json::Value {
    let out = Command::new("node").arg(script()).args(args).output().expect("running node");
    assert!(out.status.success(), "OrbitDB script failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn orbitdbs_identities_and_entries_read_verify_and_reencode_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let made = node(&["make", dir.path().to_str().unwrap()]);

    let identity_bytes = unhex(made["identity_hex"].as_str().unwrap());
    let identity = Identity::decode(&identity_bytes).unwrap();
    assert_eq!(identity.id, made["identity_id"].as_str().unwrap());
    assert!(identity.verify(), "OrbitDB's identity verifies here");
    let (hash, bytes) = identity.encode().unwrap();
    assert_eq!((hash.as_str(), bytes.as_slice()), (made["identity_hash"].as_str().unwrap(), identity_bytes.as_slice()));

    let entry_bytes = unhex(made["entry_hex"].as_str().unwrap());
    let entry = Entry::decode(&entry_bytes).unwrap();
    assert!(entry.verify(&identity), "OrbitDB's entry verifies here");
    let (hash, bytes) = entry.encode().unwrap();
    assert_eq!(hash, made["entry_hash"].as_str().unwrap());
    assert!(bytes == entry_bytes, "re-encoded entry differs");

    // Any change breaks the signature.
    let mut forged = entry.clone();
    forged.clock.time += 1;
    assert!(!forged.verify(&identity));
    assert!(!forged.signed_by(&identity), "the check for an already verified identity also sees it");
    assert!(entry.signed_by(&identity));
    let stranger = Keys::generate().identity();
    assert!(!entry.verify(&stranger), "signed by someone else's key");
    assert!(!entry.signed_by(&stranger));
    // An identity whose binding is broken fails `verify` even though the entry's key matches.
    let mut unbound = identity.clone();
    unbound.signatures.public_key = stranger.signatures.public_key.clone();
    assert!(!entry.verify(&unbound));
}

#[test]
fn our_identities_and_entries_verify_in_orbitdb() {
    let keys = Keys::generate();
    let identity = keys.identity();
    let (identity_hash, identity_bytes) = identity.encode().unwrap();
    let payload = Ipld::Map([("op".to_owned(), Ipld::String("ADD".into())), ("value".to_owned(), Ipld::String("hello from Rust".into()))].into_iter().collect());
    let entry = Entry::create(&keys, &identity_hash, "log-rust", payload, Clock { id: identity.public_key.clone(), time: 3 }, vec![], vec![]).unwrap();
    let (entry_hash, entry_bytes) = entry.encode().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let checked = node(&["verify", dir.path().to_str().unwrap(), &hex(&identity_bytes), &hex(&entry_bytes)]);
    assert_eq!(checked["identity_ok"], true, "{checked}");
    assert_eq!(checked["entry_ok"], true, "{checked}");
    assert_eq!(checked["hash"], entry_hash.as_str());
    assert_eq!(checked["identity_hash"], identity_hash.as_str());

    // A forged entry is refused by OrbitDB too.
    let mut forged = entry.clone();
    forged.payload = Ipld::String("tampered".into());
    let (_, forged_bytes) = forged.encode().unwrap();
    let checked = node(&["verify", dir.path().to_str().unwrap(), &hex(&identity_bytes), &hex(&forged_bytes)]);
    assert_eq!(checked["entry_ok"], false, "{checked}");
}

#[test]
fn entries_order_by_clock_time_then_id() {
    let keys = Keys::generate();
    let at = |time: u64, id: &str| Entry::create(&keys, "zdpu", "log", Ipld::Null, Clock { id: id.into(), time }, vec![], vec![]).unwrap();
    let mut entries = [at(2, "b"), at(1, "z"), at(2, "a"), at(3, "a")];
    entries.sort_by(|x, y| x.order(y));
    let order: Vec<(u64, &str)> = entries.iter().map(|e| (e.clock.time, e.clock.id.as_str())).collect();
    assert_eq!(order, [(1, "z"), (2, "a"), (2, "b"), (3, "a")]);
}
