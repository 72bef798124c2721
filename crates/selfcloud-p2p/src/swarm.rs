//! The libp2p swarm and its event loop: listening, dialing, and telling the Bitswap engine who is
//! connected. Streams themselves are opened and accepted through `libp2p-stream`'s control.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::engine::Engine;
use crate::{Blocks, Config, Error, Event, Keypair};

pub(crate) enum Command {
    Addresses(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, Error>>),
    Subscribe(String),
    Publish(String, Vec<u8>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    streams: libp2p_stream::Behaviour,
    pubsub: gossipsub::Behaviour,
}

/// Gossipsub as JS libp2p peers (OrbitDB's) speak it: signed messages, strict validation, ids
/// from sender and sequence number (the defaults on both sides).
fn pubsub(key: &Keypair) -> Result<gossipsub::Behaviour, Error> {
    let config = gossipsub::ConfigBuilder::default().max_transmit_size(MAX_MESSAGE).build().map_err(|e| Error::Start(e.to_string()))?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config).map_err(|e| Error::Start(e.to_string()))
}

/// Largest pubsub message (an OrbitDB entry published on append).
const MAX_MESSAGE: usize = 1 << 20;

/// How long a connection with no open stream stays up (peers we fetched from or served).
const IDLE_CONNECTION: Duration = Duration::from_secs(120);

pub(crate) async fn spawn(keypair: Keypair, config: &Config, blocks: Arc<dyn Blocks>, events: mpsc::Sender<Event>) -> Result<(mpsc::Sender<Command>, Arc<Engine>, libp2p_stream::Control), Error> {
    let pubsub = pubsub(&keypair)?;
    let start = |e: &dyn std::fmt::Display| Error::Start(e.to_string());
    let agent = config.agent.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| start(&e))?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new("ipfs/0.1.0".into(), key.public()).with_agent_version(agent)),
            streams: libp2p_stream::Behaviour::new(),
            pubsub,
        })
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
        .build();
    let mut control = swarm.behaviour().streams.new_control();
    let incoming = control.accept(StreamProtocol::new(selfcloud_ipfs::bitswap::PROTOCOL)).map_err(|e| start(&e))?;
    swarm.listen_on(config.listen.clone()).map_err(|e| Error::Address(format!("{}: {e}", config.listen)))?;
    // Wait for the listener so callers can publish our address straight away.
    let mut listening = Vec::new();
    while listening.is_empty() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => listening.push(address),
            SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                return Err(Error::Address(format!("{}: {error}", config.listen)));
            }
            _ => {}
        }
    }
    let engine = Engine::new(control.clone(), blocks, config.want_timeout);
    tokio::spawn(engine.clone().accept(incoming));
    let (commands, rx) = mpsc::channel(1024);
    tokio::spawn(run(swarm, rx, engine.clone(), listening, events));
    Ok((commands, engine, control))
}

async fn run(mut swarm: libp2p::Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, engine: Arc<Engine>, mut listening: Vec<Multiaddr>, events: mpsc::Sender<Event>) {
    let mut dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, Error>>)> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                // Every handle is gone: stop the node.
                None => break,
                Some(Command::Addresses(reply)) => {
                    let _ = reply.send(listening.clone());
                }
                Some(Command::Subscribe(topic)) => {
                    if let Err(e) = swarm.behaviour_mut().pubsub.subscribe(&gossipsub::IdentTopic::new(topic.clone())) {
                        tracing::warn!(%topic, error = %e, "cannot subscribe");
                    }
                }
                Some(Command::Publish(topic, data)) => {
                    // No subscriber yet is normal (the heads exchange catches peers up later).
                    if let Err(e) = swarm.behaviour_mut().pubsub.publish(gossipsub::IdentTopic::new(topic.clone()), data) {
                        tracing::debug!(%topic, error = %e, "not published");
                    }
                }
                Some(Command::Dial(addr, reply)) => {
                    let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => {
                            dials.insert(id, (addr, reply));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(Error::Dial { addr: addr.to_string(), reason: e.to_string() }));
                        }
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => listening.push(address),
                SwarmEvent::ExpiredListenAddr { address, .. } => listening.retain(|a| a != &address),
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                    tracing::debug!(%peer_id, "peer connected");
                    engine.connected(peer_id);
                    if let Some((_, reply)) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    tracing::debug!(%peer_id, "peer disconnected");
                    engine.disconnected(peer_id);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Pubsub(event)) => {
                    let event = match event {
                        // Strict validation: every message delivered is signed by its source.
                        gossipsub::Event::Message { message, .. } => message.source.map(|from| Event::Message { topic: message.topic.into_string(), data: message.data, from }),
                        gossipsub::Event::Subscribed { peer_id, topic } => Some(Event::Subscribed { topic: topic.into_string(), peer: peer_id }),
                        _ => None,
                    };
                    if let Some(event) = event {
                        // A full queue means the instance is behind; the heads exchange repairs a
                        // dropped message on the next subscription, so do not stall the swarm.
                        if events.try_send(event).is_err() {
                            tracing::warn!("pubsub event dropped: the instance is not keeping up");
                        }
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some((addr, reply)) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(Error::Dial { addr: addr.to_string(), reason: error.to_string() }));
                    }
                }
                _ => {}
            },
        }
    }
}
