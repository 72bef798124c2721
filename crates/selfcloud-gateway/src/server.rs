//! Serving the gateway: one event loop per thread, each with its own listening socket.
//!
//! Why not one work-stealing runtime: a proxied request touches three tasks (the client
//! connection, the handler, the instance connection). Spread over worker threads, every hand-off is
//! a cross-thread wake-up, and on a small host those wake-ups, not our own code, dominated the
//! profile. Here each thread runs a current-thread runtime and accepts on its own `SO_REUSEPORT`
//! socket (all bound up front, and refused if a stranger shares the port), so a request and its instance connection stay on one thread (the nginx model); the
//! kernel spreads new connections across the threads.
//!
//! Background work (the access-log writer, hibernation, limiter pruning) lives on the first
//! thread's runtime. Every runtime keeps running until [`Gateway::shutdown`] has stopped the
//! instances, because instance processes are watched by tasks on whichever thread woke them.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use axum::serve::ListenerExt;
use selfcloud_core::Config;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::state::Gateway;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The control plane could not be opened.
    #[error(transparent)]
    Start(#[from] crate::state::StartError),
    /// A runtime or socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Run the gateway until the future made by `shutdown` resolves, then stop every instance.
/// `shutdown` is called inside the runtime before `on_ready` (so signal handlers are in place
/// before anyone is told the gateway is up); `on_ready` gets the bound address (useful when the
/// configured port is 0).
pub fn run<F: Future<Output = ()> + Send + 'static>(config: Config, exe: PathBuf, shutdown: impl FnOnce() -> F, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let threads = config.gateway_threads().max(1);
    let main_rt = current_thread_runtime()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);

    let (gateway, mut listeners, addr) = main_rt.block_on(async {
        let listeners = bind_all(config.listen, threads)?;
        let addr = listeners[0].local_addr().map_err(io("reading the bound address"))?;
        // A configured port 0 becomes the port the kernel picked, so the issuer URL and the
        // instance URLs name the address clients can actually reach.
        let config = Config { listen: addr, ..config };
        let gateway = Gateway::open(config, exe)?;
        Ok::<_, ServeError>((gateway, listeners, addr))
    })?;
    let first = listeners.remove(0);
    let app = crate::routes::Front::new(gateway.clone());

    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ServeError>>();
    for (index, std_listener) in (1..threads).zip(listeners) {
        let (app, mut stop_rx, mut done_rx, ready_tx) = (app.clone(), stop_rx.clone(), done_rx.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("gateway-{index}"))
            .spawn(move || {
                let rt = match current_thread_runtime() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener).map_err(io("registering a listening socket")) {
                        Ok(l) => l,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    let _ = ready_tx.send(Ok(()));
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let stopped = async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                        tracing::error!(thread = index, error = %e, "gateway thread stopped serving");
                    }
                    // Keep driving this thread's tasks (instance watchers) until shutdown is done.
                    let _ = done_rx.wait_for(|d| *d).await;
                });
            })
            .map_err(io("starting a gateway thread"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for result in ready_rx.iter().take(threads - 1) {
        result?;
    }
    let shutdown = {
        let _inside = main_rt.enter();
        shutdown()
    };
    on_ready(addr);

    let result = main_rt.block_on(async move {
        let listener = TcpListener::from_std(first).map_err(io("registering a listening socket"))?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stopped = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let served = axum::serve(listener, app).with_graceful_shutdown(stopped).await.map_err(io("serving"));
        tracing::info!("shutting down: stopping instances");
        gateway.shutdown().await;
        let _ = done_tx.send(true);
        served
    });
    drop(stop_rx);
    drop(done_rx);
    for handle in handles {
        let _ = handle.join();
    }
    result
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("starting a gateway runtime"))
}

/// One `SO_REUSEPORT` listener per thread on `addr` (the first fixes the port when `addr`'s is 0),
/// refused if any other socket listens on that port: the kernel would let a second `selfcloud up`
/// of the same user join the group and silently take half of our connections (and answer them
/// with its own keys), which a plain "is the port free" probe before binding cannot rule out.
fn bind_all(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let first = bind_reuseport(addr)?;
    let addr = first.local_addr().map_err(io("reading the bound address"))?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_reuseport(addr)?);
    }
    let listeners = listeners.into_iter().map(|l| l.into_std().map_err(io("detaching a listening socket"))).collect::<Result<Vec<_>, _>>()?;
    let ours = listeners.iter().map(|l| socket_inode(l.as_raw_fd())).collect::<Result<Vec<_>, _>>()?;
    let others = crate::listeners::on_port(addr).map_err(io("reading /proc/net/tcp"))?.into_iter().filter(|inode| !ours.contains(inode)).count();
    if others > 0 {
        return Err(ServeError::Io { what: format!("binding {addr}"), source: std::io::Error::from(std::io::ErrorKind::AddrInUse) });
    }
    Ok(listeners)
}

fn socket_inode(fd: std::os::fd::RawFd) -> Result<u64, ServeError> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(io("reading a socket's inode"))?;
    crate::listeners::parse_socket_link(&link.to_string_lossy()).ok_or_else(|| ServeError::Io { what: format!("reading a socket's inode from {}", link.display()), source: std::io::ErrorKind::InvalidData.into() })
}

fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io("creating the listening socket"))?;
    socket.set_reuseaddr(true).map_err(io("setting SO_REUSEADDR"))?;
    socket.set_reuseport(true).map_err(io("setting SO_REUSEPORT"))?;
    socket.bind(addr).map_err(io(format!("binding {addr}")))?;
    socket.listen(1024).map_err(io(format!("listening on {addr}")))
}
