//! The libp2p swarm and its event loop: listening, dialing, and telling the Bitswap engine who is
//! connected. Streams themselves are opened and accepted through `libp2p-stream`'s control.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::engine::Engine;
use crate::{Blocks, Config, Error, Keypair};

pub(crate) enum Command {
    Addresses(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, Error>>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    streams: libp2p_stream::Behaviour,
}

/// How long a connection with no open stream stays up (peers we fetched from or served).
const IDLE_CONNECTION: Duration = Duration::from_secs(120);

pub(crate) async fn spawn(keypair: Keypair, config: &Config, blocks: Arc<dyn Blocks>) -> Result<(mpsc::Sender<Command>, Arc<Engine>), Error> {
    let start = |e: &dyn std::fmt::Display| Error::Start(e.to_string());
    let agent = config.agent.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| start(&e))?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new("ipfs/0.1.0".into(), key.public()).with_agent_version(agent)),
            streams: libp2p_stream::Behaviour::new(),
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
    let engine = Engine::new(control, blocks, config.want_timeout);
    tokio::spawn(engine.clone().accept(incoming));
    let (commands, rx) = mpsc::channel(64);
    tokio::spawn(run(swarm, rx, engine.clone(), listening));
    Ok((commands, engine))
}

async fn run(mut swarm: libp2p::Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, engine: Arc<Engine>, mut listening: Vec<Multiaddr>) {
    let mut dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, Error>>)> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                // Every handle is gone: stop the node.
                None => break,
                Some(Command::Addresses(reply)) => {
                    let _ = reply.send(listening.clone());
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
