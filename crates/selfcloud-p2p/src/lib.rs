//! An instance's libp2p node: TCP, noise, yamux, identify and gossipsub, with our own Bitswap
//! 1.2.0 client and server on raw streams, and raw streams of other protocols for the owner
//! (OrbitDB's heads exchange).
//!
//! This crate owns the peer-to-peer wire: dialing, listening, and moving blocks to and from
//! foreign peers. It does not own storage or policy: what may be served is asked of the
//! [`Blocks`] the instance hands in (only published DAGs answer), and fetched blocks are handed
//! back to the caller, which decides whether to keep them. Every block that arrives is named by
//! its own hash (see [`selfcloud_ipfs::bitswap`]), so a peer cannot plant data under a CID.
//! It must not touch the HTTP side, tokens or the instance's store directly.

mod engine;
mod swarm;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use cid::Cid;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};

/// What the node may serve. Called from blocking threads; implementations may do I/O.
pub trait Blocks: Send + Sync + 'static {
    /// The block under `cid` if the owner published a DAG holding it (and it is here).
    fn served(&self, cid: &Cid) -> Option<Vec<u8>>;
}

/// Failures of the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address or a peer address is not usable.
    #[error("invalid address: {0}")]
    Address(String),
    /// libp2p could not start (bad key, transport, listen failure).
    #[error("starting the p2p node: {0}")]
    Start(String),
    /// Dialing a peer failed.
    #[error("dialing {addr}: {reason}")]
    Dial {
        /// What was dialed.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// No peer is connected to ask.
    #[error("no peers are connected")]
    NoPeers,
    /// Every peer asked said it does not have the block.
    #[error("no connected peer has block {0}")]
    NotFound(Cid),
    /// Nobody answered in time.
    #[error("timed out waiting for block {0}")]
    Timeout(Cid),
    /// A fetched block cannot be followed (not dag-pb or raw, or malformed).
    #[error("block {0}: {1}")]
    Block(Cid, String),
    /// The node has stopped.
    #[error("the p2p node has stopped")]
    Stopped,
}

/// Node settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (e.g. `/ip4/127.0.0.1/tcp/4001`).
    pub listen: Multiaddr,
    /// Agent string in identify.
    pub agent: String,
    /// How long one wanted block may take to arrive.
    pub want_timeout: Duration,
}

/// What the network tells the node's owner.
#[derive(Debug)]
pub enum Event {
    /// A pubsub message on a topic we subscribe to (checked: signed by `from`).
    Message {
        /// The topic.
        topic: String,
        /// The payload.
        data: Vec<u8>,
        /// Who published it.
        from: PeerId,
    },
    /// A peer subscribed to a topic.
    Subscribed {
        /// The topic.
        topic: String,
        /// The peer.
        peer: PeerId,
    },
    /// A peer opened a stream on a protocol we [accept](Node::accept).
    Stream {
        /// The protocol.
        protocol: String,
        /// The peer.
        peer: PeerId,
        /// The stream.
        stream: Stream,
    },
}

pub use libp2p::Stream;

/// Events waiting for the owner before the network's are dropped.
const EVENT_QUEUE: usize = 4096;

/// A running node; cheap to clone. Dropping every clone stops it.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<swarm::Command>,
    engine: Arc<engine::Engine>,
    control: libp2p_stream::Control,
    events_tx: mpsc::Sender<Event>,
    events: Arc<std::sync::Mutex<Option<mpsc::Receiver<Event>>>>,
}

impl Node {
    /// Start listening with `keypair` (the instance's identity) and serve from `blocks`.
    /// Returns once the listener is bound.
    pub async fn start(keypair: Keypair, config: Config, blocks: Arc<dyn Blocks>) -> Result<Node, Error> {
        let peer_id = keypair.public().to_peer_id();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (commands, engine, control) = swarm::spawn(keypair, &config, blocks, events_tx.clone()).await?;
        Ok(Node { peer_id, commands, engine, control, events_tx, events: Arc::new(std::sync::Mutex::new(Some(events))) })
    }

    /// The node's events; the first caller gets them, later callers `None`.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Event>> {
        self.events.lock().ok()?.take()
    }

    /// Subscribe to a pubsub topic (again is a no-op).
    pub async fn subscribe(&self, topic: &str) -> Result<(), Error> {
        self.commands.send(swarm::Command::Subscribe(topic.to_owned())).await.map_err(|_| Error::Stopped)
    }

    /// Publish on a topic (to subscribed peers; none is not an error).
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), Error> {
        self.commands.send(swarm::Command::Publish(topic.to_owned(), data)).await.map_err(|_| Error::Stopped)
    }

    /// Accept streams of `protocol`; each arrives as [`Event::Stream`]. Accepting one twice fails.
    pub fn accept(&self, protocol: &str) -> Result<(), Error> {
        let name = libp2p::StreamProtocol::try_from_owned(protocol.to_owned()).map_err(|e| Error::Address(e.to_string()))?;
        let mut incoming = self.control.clone().accept(name).map_err(|e| Error::Start(e.to_string()))?;
        let (events, protocol) = (self.events_tx.clone(), protocol.to_owned());
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                if events.send(Event::Stream { protocol: protocol.clone(), peer, stream }).await.is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Open a stream of `protocol` to a connected peer.
    pub async fn open(&self, peer: PeerId, protocol: &str) -> Result<Stream, Error> {
        let name = libp2p::StreamProtocol::try_from_owned(protocol.to_owned()).map_err(|e| Error::Address(e.to_string()))?;
        self.control.clone().open_stream(peer, name).await.map_err(|e| Error::Dial { addr: peer.to_string(), reason: e.to_string() })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, each ending in `/p2p/<peer id>`.
    pub async fn addresses(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(swarm::Command::Addresses(tx)).await.is_err() {
            return Vec::new();
        }
        let peer = libp2p::multiaddr::Protocol::P2p(self.peer_id);
        rx.await.unwrap_or_default().into_iter().map(|a| a.with(peer.clone())).collect()
    }

    /// Connect to a peer at `addr` (which must name the peer with `/p2p/…`); returns its id.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        if !addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_))) {
            return Err(Error::Address(format!("{addr} does not end in /p2p/<peer id>")));
        }
        let (tx, rx) = oneshot::channel();
        self.commands.send(swarm::Command::Dial(addr, tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Peers connected now.
    pub fn peers(&self) -> Vec<PeerId> {
        self.engine.peers()
    }

    /// Ask every connected peer for `cid`; resolves with the block (already checked against
    /// its CID), or fails when all of them say they do not have it, or after the want timeout.
    pub async fn want(&self, cid: Cid) -> Result<Vec<u8>, Error> {
        self.engine.want(cid).await
    }

    /// Fetch several blocks at once, answered in the order asked; the wants leave as one
    /// wantlist per peer (see `engine::Engine::want_all`).
    pub async fn want_all(&self, cids: Vec<Cid>) -> Vec<Result<Vec<u8>, Error>> {
        self.engine.want_all(cids).await
    }

    /// Fetch the whole DAG under `root` from connected peers, `FETCH_WINDOW` blocks in flight.
    /// `local` returns a block already held (its links are followed, it is not fetched again);
    /// each fetched block goes to `sink` in arrival order. Returns the number of blocks fetched
    /// and their bytes. Stops at the first block no peer will give.
    pub async fn fetch_dag(&self, root: Cid, local: impl Fn(&Cid) -> Option<Vec<u8>>, sink: mpsc::Sender<(Cid, Vec<u8>)>) -> Result<(u64, u64), Error> {
        let mut queue = VecDeque::from([root]);
        let mut seen = HashSet::from([root]);
        let mut inflight = FuturesUnordered::new();
        let (mut blocks, mut bytes) = (0u64, 0u64);
        loop {
            while inflight.len() < FETCH_WINDOW {
                let Some(cid) = queue.pop_front() else { break };
                match local(&cid) {
                    Some(block) => follow(&cid, &block, &mut queue, &mut seen)?,
                    None => inflight.push(async move { (cid, self.want(cid).await) }),
                }
            }
            let Some((cid, fetched)) = inflight.next().await else { break };
            let block = fetched?;
            follow(&cid, &block, &mut queue, &mut seen)?;
            blocks += 1;
            bytes += block.len() as u64;
            sink.send((cid, block)).await.map_err(|_| Error::Stopped)?;
        }
        Ok((blocks, bytes))
    }
}

/// Blocks asked for at once while fetching a DAG.
const FETCH_WINDOW: usize = 64;

fn follow(cid: &Cid, block: &[u8], queue: &mut VecDeque<Cid>, seen: &mut HashSet<Cid>) -> Result<(), Error> {
    let links = selfcloud_ipfs::links(cid, block).map_err(|e| Error::Block(*cid, e.to_string()))?;
    for link in links {
        if seen.insert(link) {
            queue.push_back(link);
        }
    }
    Ok(())
}
