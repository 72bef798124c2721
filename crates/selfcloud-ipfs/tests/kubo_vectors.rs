//! CIDs from Kubo's own test vectors (`test/cli/cid_profiles_test.go`): the data is the ChaCha20
//! keystream with key sha256(seed) and a zero nonce, as Kubo's test harness makes it.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use selfcloud_ipfs::import::import_bytes;
use selfcloud_ipfs::profile::{UNIXFS_V0_2015, UNIXFS_V1_2025};
use selfcloud_ipfs::{FileImporter, NullSink, Profile};
use sha2::{Digest, Sha256};

/// Stream `size` deterministic bytes into an importer, 1 MiB at a time.
fn import_deterministic(profile: Profile, size: usize, seed: &str) -> String {
    let key: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    let mut cipher = chacha20::ChaCha20::new(&key.into(), &[0u8; 12].into());
    let mut sink = NullSink;
    let mut importer = FileImporter::new(profile, &mut sink);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        buf[..n].fill(0);
        cipher.apply_keystream(&mut buf[..n]);
        importer.write(&buf[..n]).unwrap();
        left -= n;
    }
    importer.finish().unwrap().cid.to_string()
}

#[test]
fn small_files() {
    let mut sink = selfcloud_ipfs::MemoryBlocks::default();
    assert_eq!(import_bytes(UNIXFS_V0_2015, b"hello world", &mut sink).unwrap().cid.to_string(), "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    assert_eq!(import_bytes(UNIXFS_V1_2025, b"hello world", &mut sink).unwrap().cid.to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    let empty = import_bytes(UNIXFS_V0_2015, b"", &mut sink).unwrap();
    assert_eq!(empty.cid.to_string(), "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
    assert_eq!((empty.size, empty.dag_size), (0, 6));
    let hw = import_bytes(UNIXFS_V0_2015, b"hello world", &mut sink).unwrap();
    assert_eq!((hw.size, hw.dag_size), (11, 19), "Kubo's Size of hello world is 19");
}

#[test]
fn empty_directory() {
    let mut sink = selfcloud_ipfs::MemoryBlocks::default();
    let dir = selfcloud_ipfs::DirectoryBuilder::new().finish(&UNIXFS_V0_2015, &mut sink).unwrap();
    assert_eq!(dir.cid.to_string(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
}

#[test]
fn v0_file_at_and_over_max_links() {
    assert_eq!(import_deterministic(UNIXFS_V0_2015, 44544 << 10, "v0-seed"), "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2");
    assert_eq!(import_deterministic(UNIXFS_V0_2015, 44800 << 10, "v0-seed"), "QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf");
}

#[test]
fn v1_file_at_and_over_max_links() {
    assert_eq!(import_deterministic(UNIXFS_V1_2025, 1024 << 20, "v1-2025-seed"), "bafybeihmf37wcuvtx4hpu7he5zl5qaf2ineo2lqlfrapokkm5zzw7zyhvm");
    assert_eq!(import_deterministic(UNIXFS_V1_2025, 1025 << 20, "v1-2025-seed"), "bafybeihmzokxxjqwxjcryerhp5ezpcog2wcawfryb2xm64xiakgm4a5jue");
}
