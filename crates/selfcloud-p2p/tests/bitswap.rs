//! Two real libp2p nodes on loopback exchanging a multi-block file over our Bitswap.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use common::{config, pseudo_random};
use selfcloud_ipfs::{import, profile, MemoryBlocks};
use selfcloud_p2p::{Blocks, Error, Keypair, Node};


/// Blocks with a published subset, like an instance's store.
#[derive(Default)]
struct Published {
    blocks: Mutex<HashMap<Cid, Vec<u8>>>,
    published: Mutex<Vec<Cid>>,
}

impl Blocks for Published {
    fn served(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.published.lock().unwrap().contains(cid).then(|| self.blocks.lock().unwrap().get(cid).cloned()).flatten()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_dag_moves_and_an_unpublished_block_does_not() {
    let data = pseudo_random(3 * 262_144 + 12_345, 0x2545_f491_4f6c_dd1d);
    let mut memory = MemoryBlocks::default();
    let root = import::import_bytes(profile::UNIXFS_V0_2015, &data, &mut memory).unwrap().cid;
    let secret = selfcloud_ipfs::cid_of(cid::Version::V1, selfcloud_ipfs::RAW, b"private note");

    let serving = Arc::new(Published::default());
    serving.blocks.lock().unwrap().extend(memory.blocks.iter().map(|(c, b)| (*c, b.clone())));
    serving.blocks.lock().unwrap().insert(secret, b"private note".to_vec());
    serving.published.lock().unwrap().extend(memory.blocks.keys().copied());

    let a = Node::start(Keypair::generate_ed25519(), config(10), serving.clone()).await.unwrap();
    let b = Node::start(Keypair::generate_ed25519(), config(10), Arc::new(Published::default())).await.unwrap();
    assert!(matches!(b.want(root).await, Err(Error::NoPeers)));

    let addr = a.addresses().await.into_iter().next().unwrap();
    assert_eq!(b.connect(addr).await.unwrap(), a.peer_id());

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Cid, Vec<u8>)>(8);
    let collect = tokio::spawn(async move {
        let mut got = MemoryBlocks::default();
        while let Some((cid, block)) = rx.recv().await {
            selfcloud_ipfs::verify_block(&cid, &block).unwrap();
            got.blocks.insert(cid, block);
        }
        got
    });
    let (count, _) = b.fetch_dag(root, |_| None, tx).await.unwrap();
    let got = collect.await.unwrap();
    assert_eq!(count as usize, memory.blocks.len());
    let mut back = Vec::new();
    for piece in selfcloud_ipfs::export::FileReader::new(&got, root) {
        back.extend_from_slice(&piece.unwrap());
    }
    assert!(back == data, "the fetched file differs");

    // Present on A but never published: answered exactly like a missing block.
    assert!(matches!(b.want(secret).await, Err(Error::NotFound(c)) if c == secret));
}
