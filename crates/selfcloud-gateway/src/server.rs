//! Serving the gateway: one event loop per thread, each with its own listening socket.
//!
//! Why not one work-stealing runtime: a proxied request touches three tasks (the client
//! connection, the handler, the instance connection). Spread over worker threads, every hand-off is
//! a cross-thread wake-up, and on a small host those wake-ups, not our own code, dominated the
//! profile. Here each thread runs a current-thread runtime and accepts on its own `SO_REUSEPORT`
//! socket, so a request and its instance connection stay on one thread (the nginx model); the
//! kernel spreads new connections across the threads.
//!
//! Background work (the access-log writer, hibernation, limiter pruning) lives on the first
//! thread's runtime. Every runtime keeps running until [`Gateway::shutdown`] has stopped the
//! instances, because instance processes are watched by tasks on whichever thread woke them.

use std::future::Future;
use std::net::SocketAddr;
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

    let (gateway, first, addr) = main_rt.block_on(async {
        refuse_if_taken(config.listen)?;
        let gateway = Gateway::open(config.clone(), exe)?;
        let first = bind_reuseport(config.listen)?;
        let addr = first.local_addr().map_err(io("reading the bound address"))?;
        Ok::<_, ServeError>((gateway, first, addr))
    })?;
    let app = crate::routes::Front::new(gateway.clone());

    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ServeError>>();
    for index in 1..threads {
        let (app, mut stop_rx, mut done_rx, ready_tx) = (app.clone(), stop_rx.clone(), done_rx.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("gateway-{index}"))
            .spawn(move || {
                let rt = match current_thread_runtime() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                rt.block_on(async move {
                    let listener = match bind_reuseport(addr) {
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
        let listener = first.tap_io(|tcp| {
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

/// `SO_REUSEPORT` would let a second gateway share a port that is already served (and split its
/// traffic); a plain bind first makes "address in use" an error again.
fn refuse_if_taken(addr: SocketAddr) -> Result<(), ServeError> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr).map(drop).map_err(io(format!("binding {addr}")))
}

/// A listener on `addr` that other threads may bind too; the kernel balances connections.
fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io("creating the listening socket"))?;
    socket.set_reuseaddr(true).map_err(io("setting SO_REUSEADDR"))?;
    socket.set_reuseport(true).map_err(io("setting SO_REUSEPORT"))?;
    socket.bind(addr).map_err(io(format!("binding {addr}")))?;
    socket.listen(1024).map_err(io(format!("listening on {addr}")))
}
