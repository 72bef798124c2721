//! Bitswap both ways with a real Helia node from npm (interop/js/helia-peer.mjs).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cid::Cid;
use common::{config, pseudo_random};
use selfcloud_ipfs::{import, profile, MemoryBlocks};
use selfcloud_p2p::{Blocks, Keypair, Node};
use sha2::{Digest, Sha256};

struct AllPublished(HashMap<Cid, Vec<u8>>);

impl Blocks for AllPublished {
    fn served(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.0.get(cid).cloned()
    }
}

fn peer_script() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(dir.join("node_modules/@helia/utils").exists(), "Helia is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    dir.join("helia-peer.mjs")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helia_fetches_a_multi_block_file_from_us() {
    let data = pseudo_random(5 * 262_144 + 777, 0x9e37_79b9_7f4a_7c15);
    let mut memory = MemoryBlocks::default();
    let root = import::import_bytes(profile::UNIXFS_V0_2015, &data, &mut memory).unwrap().cid;
    assert!(memory.blocks.len() > 5);
    let node = Node::start(Keypair::generate_ed25519(), config(30), Arc::new(AllPublished(memory.blocks))).await.unwrap();
    let addr = node.addresses().await.into_iter().next().unwrap();

    let script = peer_script();
    let out = tokio::task::spawn_blocking(move || Command::new("node").arg(script).args(["fetch", &addr.to_string(), &root.to_string()]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "Helia fetch failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["bytes"], data.len());
    assert_eq!(report["sha256"], hex(&Sha256::digest(&data)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_fetch_a_multi_block_file_from_helia() {
    let data = pseudo_random(3 * 1_048_576 + 4_321, 0x2545_f491_4f6c_dd1d);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let mut helia = Command::new("node").arg(peer_script()).arg("serve").arg(file.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(helia.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let served: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("Helia said {line:?}: {e}"));
    let root: Cid = served["cid"].as_str().unwrap().parse().unwrap();
    let addr = served["addrs"][0].as_str().unwrap().parse().unwrap();

    let node = Node::start(Keypair::generate_ed25519(), config(30), Arc::new(AllPublished(HashMap::new()))).await.unwrap();
    node.connect(addr).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Cid, Vec<u8>)>(8);
    let collect = tokio::spawn(async move {
        let mut got = MemoryBlocks::default();
        while let Some((cid, block)) = rx.recv().await {
            got.blocks.insert(cid, block);
        }
        got
    });
    let (count, _) = node.fetch_dag(root, |_| None, tx).await.unwrap();
    let got = collect.await.unwrap();
    assert!(count > 3, "a multi-block file, got {count} blocks");
    let mut hash = Sha256::new();
    for piece in selfcloud_ipfs::export::FileReader::new(&got, root) {
        hash.update(piece.unwrap());
    }
    assert_eq!(hex(&hash.finalize()), served["sha256"].as_str().unwrap());

    // Closing its stdin stops the Helia node.
    drop(helia.stdin.take());
    assert!(helia.wait().unwrap().success());
}
