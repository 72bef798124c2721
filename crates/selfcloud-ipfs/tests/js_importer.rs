//! Our CIDs against the JavaScript UnixFS importer (`ipfs-unixfs-importer` from npm, installed by
//! `scripts/setup.sh` into `interop/js`), run as a real Node process on the same files.

use std::path::{Path, PathBuf};
use std::process::Command;

use selfcloud_ipfs::import::import_bytes;
use selfcloud_ipfs::{DirectoryBuilder, FileImporter, MemoryBlocks, NullSink, Profile};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js")
}

/// (path, cid, size) per entry the JS importer reports.
fn js_import(profile: &str, paths: &[&Path]) -> Vec<(String, String, u64)> {
    let dir = interop_dir();
    assert!(dir.join("node_modules/ipfs-unixfs-importer").exists(), "the JS importer is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    let out = Command::new("node").arg(dir.join("unixfs-import.mjs")).arg(profile).args(paths).output().expect("running node");
    assert!(out.status.success(), "JS importer failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("cid").is_some())
        .map(|v| (v["path"].as_str().unwrap().to_owned(), v["cid"].as_str().unwrap().to_owned(), v["size"].as_u64().unwrap()))
        .collect()
}

/// Bytes that do not repeat within a chunk (so no two leaves share a CID by accident).
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(salt);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const KIB: usize = 1024;

#[test]
fn files_match_the_js_importer() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [0, 1, 256 * KIB - 1, 256 * KIB, 256 * KIB + 1, 174 * 256 * KIB + 1, 100 * KIB * KIB];
    let mut paths = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let path = tmp.path().join(format!("f{i}-{size}"));
        std::fs::write(&path, pattern(*size, i as u8)).unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    for name in ["unixfs-v0-2015", "unixfs-v1-2025"] {
        let profile = Profile::named(name).unwrap();
        let js = js_import(name, &refs);
        assert_eq!(js.len(), paths.len(), "{name}: one entry per file");
        for (path, (js_path, js_cid, js_size)) in paths.iter().zip(&js) {
            let bytes = std::fs::read(path).unwrap();
            // Feed in odd-sized pieces: chunking must not depend on how bytes arrive.
            let mut sink = NullSink;
            let mut importer = FileImporter::new(profile, &mut sink);
            for piece in bytes.chunks(100_003) {
                importer.write(piece).unwrap();
            }
            let ours = importer.finish().unwrap();
            assert_eq!(&ours.cid.to_string(), js_cid, "{name}: {js_path} ({} bytes)", bytes.len());
            assert_eq!(ours.dag_size, *js_size, "{name}: {js_path} size");
        }
    }
}

#[test]
fn a_directory_matches_the_js_importer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    let files = [("b.txt", 10), ("a.txt", 0), ("c.bin", 300 * KIB), ("Z upper", 5), ("é-unicode", 77)];
    for (i, (name, size)) in files.iter().enumerate() {
        std::fs::write(dir.join(name), pattern(*size, 100 + i as u8)).unwrap();
    }
    for name in ["unixfs-v0-2015", "unixfs-v1-2025"] {
        let profile = Profile::named(name).unwrap();
        let js = js_import(name, &[&dir]);
        let (_, js_cid, js_size) = js.iter().find(|(p, _, _)| p == "photos").expect("the JS importer reports the directory");
        let mut blocks = MemoryBlocks::default();
        let mut builder = DirectoryBuilder::new();
        for (file, _) in &files {
            let imported = import_bytes(profile, &std::fs::read(dir.join(file)).unwrap(), &mut blocks).unwrap();
            builder.add(file, imported).unwrap();
        }
        let ours = builder.finish(&profile, &mut blocks).unwrap();
        assert_eq!(&ours.cid.to_string(), js_cid, "{name}: directory CID");
        assert_eq!(ours.dag_size, *js_size, "{name}: directory size");
    }
}

#[test]
fn a_directory_over_the_threshold_is_sharded_like_the_js_importer() {
    // 2,300 entries with 100-byte names: over 256 KiB by either profile's estimate, and deep
    // enough that some indices hold sub-shards.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    std::fs::create_dir(&dir).unwrap();
    let names: Vec<String> = (0..2_300).map(|i| format!("{i:05}-{}", "n".repeat(94))).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(dir.join(name), format!("file number {i}")).unwrap();
    }
    for profile_name in ["unixfs-v0-2015", "unixfs-v1-2025"] {
        let profile = Profile::named(profile_name).unwrap();
        let js = js_import(profile_name, &[&dir]);
        let (_, js_cid, js_size) = js.iter().find(|(p, _, _)| p == "big").expect("the JS importer reports the directory");
        let mut blocks = MemoryBlocks::default();
        let mut builder = DirectoryBuilder::new();
        for name in &names {
            builder.add(name, import_bytes(profile, &std::fs::read(dir.join(name)).unwrap(), &mut blocks).unwrap()).unwrap();
        }
        let ours = builder.finish(&profile, &mut blocks).unwrap();
        assert_eq!(&ours.cid.to_string(), js_cid, "{profile_name}: sharded directory CID");
        assert_eq!(ours.dag_size, *js_size, "{profile_name}: sharded directory size");
        // And it reads back as the same directory.
        match selfcloud_ipfs::export::stat(&blocks, &ours.cid).unwrap() {
            selfcloud_ipfs::export::Entry::Directory(entries) => {
                let mut listed: Vec<String> = entries.into_iter().map(|(n, _, _)| n).collect();
                listed.sort();
                assert_eq!(listed, names, "{profile_name}: entries read back");
            }
            other => panic!("{profile_name}: a directory, not {other:?}"),
        }
    }
}
