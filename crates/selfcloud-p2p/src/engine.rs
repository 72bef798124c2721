//! The Bitswap engine: wants we are waiting on, one outbox (and writer task) per peer, and a
//! reader task per inbound stream.
//!
//! Bitswap streams are one-way: a peer writes its wants on a stream it opened to us, and we
//! answer on a stream we open to it. Outgoing messages to one peer queue in a bounded channel,
//! which is what bounds a server's memory: a peer wanting thousands of blocks gets them as fast
//! as it reads them, never all loaded at once. Queued messages are merged into one frame up to
//! the 4 MiB limit, so a fetch's many single wants leave as one wantlist.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cid::Cid;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use selfcloud_ipfs::bitswap::{self, Message, Presence, Want, WantType};
use tokio::sync::{mpsc, oneshot};

use crate::{Blocks, Error};

/// Messages queued per peer before senders wait (each holds at most one block when serving).
const OUTBOX_DEPTH: usize = 16;
/// Merge queued messages into frames up to this size (under the 4 MiB limit, with margin for
/// the estimate).
const FRAME_TARGET: usize = bitswap::MESSAGE_BYTES_MAX - (256 << 10);
/// Wants served per incoming message; the rest are ignored (a peer re-sends what it still wants).
const WANTS_PER_MESSAGE_MAX: usize = 1024;
/// Blocks loaded per trip to a blocking thread.
const LOOKUPS_PER_TRIP: usize = 8;
/// An unanswered want is sent again this often until it times out.
const REBROADCAST: Duration = Duration::from_secs(3);

type Reply = oneshot::Sender<Result<Vec<u8>, Error>>;

struct Waiter {
    replies: Vec<Reply>,
    asked: HashSet<PeerId>,
    refused: HashSet<PeerId>,
}

#[derive(Default)]
struct State {
    peers: HashSet<PeerId>,
    outboxes: HashMap<PeerId, mpsc::Sender<Message>>,
    wants: HashMap<Cid, Waiter>,
}

pub(crate) struct Engine {
    control: libp2p_stream::Control,
    blocks: Arc<dyn Blocks>,
    want_timeout: Duration,
    state: Mutex<State>,
}

impl Engine {
    pub(crate) fn new(control: libp2p_stream::Control, blocks: Arc<dyn Blocks>, want_timeout: Duration) -> Arc<Engine> {
        Arc::new(Engine { control, blocks, want_timeout, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the node would; keep going with what is there.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.state().peers.iter().copied().collect()
    }

    pub(crate) fn connected(&self, peer: PeerId) {
        self.state().peers.insert(peer);
    }

    pub(crate) fn disconnected(&self, peer: PeerId) {
        let mut state = self.state();
        state.peers.remove(&peer);
        state.outboxes.remove(&peer);
        let gone: Vec<Cid> = state.wants.iter_mut().filter_map(|(cid, w)| (w.asked.contains(&peer) && w.refuse(peer)).then_some(*cid)).collect();
        for cid in gone {
            if let Some(w) = state.wants.remove(&cid) {
                w.fail(|| Error::NotFound(cid));
            }
        }
    }

    /// The outbox of `peer`, starting its writer on first use.
    fn outbox(self: &Arc<Self>, state: &mut State, peer: PeerId) -> mpsc::Sender<Message> {
        if let Some(tx) = state.outboxes.get(&peer).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
        state.outboxes.insert(peer, tx.clone());
        tokio::spawn(write_loop(self.control.clone(), peer, rx));
        tx
    }

    pub(crate) async fn want(self: &Arc<Self>, cid: Cid) -> Result<Vec<u8>, Error> {
        self.want_all(vec![cid]).await.pop().unwrap_or(Err(Error::NotFound(cid)))
    }

    /// Wants every block of `cids` at once, answered in the same order. The new wants leave as
    /// one wantlist per peer: a Helia server answers each message it reads by sending every block
    /// still in its ledger, so a log walk that sent its wants one by one got each level's blocks
    /// two or three times over.
    pub(crate) async fn want_all(self: &Arc<Self>, cids: Vec<Cid>) -> Vec<Result<Vec<u8>, Error>> {
        let mut answers = Vec::with_capacity(cids.len());
        let mut fresh = Vec::new();
        let targets = {
            let mut state = self.state();
            if state.peers.is_empty() {
                return cids.iter().map(|_| Err(Error::NoPeers)).collect();
            }
            for &cid in &cids {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                if let Some(w) = state.wants.get_mut(&cid) {
                    w.replies.push(reply);
                } else {
                    let asked = state.peers.clone();
                    state.wants.insert(cid, Waiter { replies: vec![reply], asked, refused: HashSet::new() });
                    fresh.push(want_block(cid));
                }
            }
            let peers: Vec<PeerId> = state.peers.iter().copied().collect();
            if fresh.is_empty() { Vec::new() } else { peers.into_iter().map(|p| self.outbox(&mut state, p)).collect::<Vec<_>>() }
        };
        for outbox in targets {
            let _ = outbox.send(Message { wants: fresh.clone(), ..Message::default() }).await;
        }
        futures::future::join_all(cids.into_iter().zip(answers).map(|(cid, answer)| self.answer_of(cid, answer))).await
    }

    /// Waits for the answer to a want, asking again every [`REBROADCAST`] until the timeout.
    async fn answer_of(self: &Arc<Self>, cid: Cid, mut answer: oneshot::Receiver<Result<Vec<u8>, Error>>) -> Result<Vec<u8>, Error> {
        let want = want_block(cid);
        let deadline = tokio::time::Instant::now() + self.want_timeout;
        loop {
            let wait = REBROADCAST.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, &mut answer).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => return Err(Error::Stopped),
                Err(_) if tokio::time::Instant::now() < deadline => self.ask_again(cid, &want).await,
                Err(_) => {
                    let waiter = self.state().wants.remove(&cid);
                    if let Some(w) = waiter {
                        self.cancel(cid, &w.asked).await;
                        w.fail(|| Error::Timeout(cid));
                    }
                    return Err(Error::Timeout(cid));
                }
            }
        }
    }

    /// Re-send a want still unanswered to the peers asked that have not refused it, as Bitswap
    /// clients rebroadcast their wantlists: a peer may drop wants it has no room for (ours keeps
    /// the first [`WANTS_PER_MESSAGE_MAX`] of a message), and without this one lost want would
    /// stall a log walk for the whole timeout.
    async fn ask_again(self: &Arc<Self>, cid: Cid, want: &Want) {
        let outboxes: Vec<_> = {
            let mut state = self.state();
            let Some(waiter) = state.wants.get(&cid) else { return };
            let peers: Vec<PeerId> = waiter.asked.iter().filter(|p| !waiter.refused.contains(p) && state.peers.contains(p)).copied().collect();
            peers.into_iter().map(|p| self.outbox(&mut state, p)).collect()
        };
        for outbox in outboxes {
            let _ = outbox.send(Message { wants: vec![want.clone()], ..Message::default() }).await;
        }
    }

    /// Withdraw a want from the peers we asked.
    async fn cancel(self: &Arc<Self>, cid: Cid, asked: &HashSet<PeerId>) {
        let outboxes: Vec<_> = {
            let mut state = self.state();
            let connected: Vec<PeerId> = asked.iter().filter(|p| state.peers.contains(p)).copied().collect();
            connected.into_iter().map(|p| self.outbox(&mut state, p)).collect()
        };
        let cancel = Want { cid, priority: 1, cancel: true, want_type: WantType::Block, send_dont_have: false };
        for outbox in outboxes {
            let _ = outbox.send(Message { wants: vec![cancel.clone()], ..Message::default() }).await;
        }
    }

    /// Read every message `peer` sends on one inbound stream.
    pub(crate) async fn accept(self: Arc<Self>, mut incoming: libp2p_stream::IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(self.clone().read_loop(peer, stream));
        }
    }

    async fn read_loop(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        let mut buffer: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            // Take every complete frame in the buffer.
            loop {
                match bitswap::frame_length(&buffer) {
                    Ok(Some((len, at))) if buffer.len() >= at + len => {
                        let decoded = Message::decode(&buffer[at..at + len]);
                        buffer.drain(..at + len);
                        match decoded {
                            Ok(message) => {
                                tracing::trace!(%peer, wants = message.wants.len(), blocks = message.blocks.len(), presences = message.presences.len(), bytes = len, "bitswap message in");
                                self.handle(peer, message).await
                            }
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "dropping a peer's stream after a malformed Bitswap message");
                                return;
                            }
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "dropping a peer's stream");
                        return;
                    }
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn handle(self: &Arc<Self>, peer: PeerId, message: Message) {
        for (cid, presence) in message.presences {
            if presence == Presence::DontHave {
                let mut state = self.state();
                if state.wants.get_mut(&cid).is_some_and(|w| w.refuse(peer)) {
                    if let Some(w) = state.wants.remove(&cid) {
                        w.fail(|| Error::NotFound(cid));
                    }
                }
            }
        }
        for (cid, data) in message.blocks {
            let waiter = self.state().wants.remove(&cid);
            if let Some(mut w) = waiter {
                // Cancel at the other peers asked. Not at the sender: Helia, boxo (Kubo) and this
                // engine all drop a want once they have sent its block, and each message Helia
                // reads makes it send its whole ledger again, so a cancel sent while its reply
                // was still in flight only made it send that level's blocks a second time.
                w.asked.remove(&peer);
                self.cancel(cid, &w.asked).await;
                for reply in w.replies {
                    let _ = reply.send(Ok(data.clone()));
                }
            }
        }
        let wanted: Vec<Want> = message.wants.into_iter().filter(|w| !w.cancel).take(WANTS_PER_MESSAGE_MAX).collect();
        if !wanted.is_empty() {
            self.serve(peer, wanted).await;
        }
    }

    /// Answer a peer's wants from what the owner published: blocks, HAVEs, and DONT_HAVEs where
    /// asked for. Unpublished blocks are answered exactly like missing ones.
    async fn serve(self: &Arc<Self>, peer: PeerId, wanted: Vec<Want>) {
        let outbox = {
            let mut state = self.state();
            self.outbox(&mut state, peer)
        };
        for trip in wanted.chunks(LOOKUPS_PER_TRIP) {
            let blocks = self.blocks.clone();
            let trip = trip.to_vec();
            let answers = tokio::task::spawn_blocking(move || trip.into_iter().map(|w| (blocks.served(&w.cid), w)).collect::<Vec<_>>()).await;
            let Ok(answers) = answers else { return };
            for (block, want) in answers {
                let mut reply = Message::default();
                match (block, want.want_type) {
                    (Some(data), WantType::Block) => reply.blocks.push((want.cid, data)),
                    (Some(_), WantType::Have) => reply.presences.push((want.cid, Presence::Have)),
                    (None, _) if want.send_dont_have => reply.presences.push((want.cid, Presence::DontHave)),
                    (None, _) => continue,
                }
                if outbox.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn want_block(cid: Cid) -> Want {
    Want { cid, priority: 1, cancel: false, want_type: WantType::Block, send_dont_have: true }
}

impl Waiter {
    /// Note that `peer` will not send the block; true when nobody asked is left.
    fn refuse(&mut self, peer: PeerId) -> bool {
        self.refused.insert(peer);
        self.asked.iter().all(|p| self.refused.contains(p))
    }

    fn fail(self, error: impl Fn() -> Error) {
        for reply in self.replies {
            let _ = reply.send(Err(error()));
        }
    }
}

/// Send everything queued for one peer on one stream we opened, merging queued messages into
/// frames; reopen the stream once if a write fails.
async fn write_loop(mut control: libp2p_stream::Control, peer: PeerId, mut queue: mpsc::Receiver<Message>) {
    let protocol = StreamProtocol::new(bitswap::PROTOCOL);
    let mut stream: Option<Stream> = None;
    let mut carried: Option<Message> = None;
    loop {
        let mut frame = match carried.take() {
            Some(m) => m,
            None => match queue.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        while let Ok(next) = queue.try_recv() {
            if frame.encoded_len_estimate() + next.encoded_len_estimate() > FRAME_TARGET {
                carried = Some(next);
                break;
            }
            frame.wants.extend(next.wants);
            frame.blocks.extend(next.blocks);
            frame.presences.extend(next.presences);
        }
        let bytes = frame.encode_framed();
        tracing::trace!(%peer, wants = frame.wants.len(), blocks = frame.blocks.len(), presences = frame.presences.len(), bytes = bytes.len(), "bitswap message out");
        for _attempt in 0..2 {
            if stream.is_none() {
                match control.open_stream(peer, protocol.clone()).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "cannot open a Bitswap stream");
                        break;
                    }
                }
            }
            if let Some(s) = stream.as_mut() {
                match s.write_all(&bytes).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "Bitswap stream write failed; reopening");
                        stream = None;
                    }
                }
            }
        }
    }
    if let Some(mut s) = stream {
        let _ = s.close().await;
    }
}
