//! The access log: every decision the gateway makes about a user's instance, appended in batches.
//!
//! Requests never wait for the disk: entries go through a bounded channel (backpressure when the
//! writer falls behind, never loss) to one writer task that commits whatever has queued up in a
//! single transaction, at most ~20 ms after it was sent. [`AuditLog::flush`] waits until everything
//! sent before it is on disk (used before reading the log, at shutdown, and by tests).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::model::AuditEntry;
use crate::store::ControlStore;

/// Entries queued before senders wait.
const QUEUE_ENTRIES_MAX: usize = 16_384;
/// Entries committed per transaction at most.
const BATCH_ENTRIES_MAX: usize = 4_096;
/// How long the writer waits for more entries before committing a batch.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

// Entries are nearly every message (one per request); boxing them to shrink the rare `Flush`
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Entry(String, AuditEntry),
    Flush(oneshot::Sender<()>),
}

/// Handle to the access log.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl AuditLog {
    /// Start the writer task.
    pub fn start(store: Arc<ControlStore>) -> AuditLog {
        let (tx, rx) = mpsc::channel(QUEUE_ENTRIES_MAX);
        tokio::spawn(writer(store, rx));
        AuditLog { tx }
    }

    /// Append an entry to `username`'s log. It is queued at the call; the future only waits when
    /// the queue is full (backpressure). Queuing first keeps the entry out of the future: the
    /// gateway awaits this on every request, and its future's size is copied with each request.
    pub fn record(&self, username: &str, entry: AuditEntry) -> impl std::future::Future<Output = ()> + Send + 'static {
        let waiting = match self.tx.try_send(Msg::Entry(username.to_owned(), entry)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let (tx, user) = (self.tx.clone(), username.to_owned());
                Some(Box::pin(async move {
                    if tx.send(msg).await.is_err() {
                        tracing::error!(user, "access log writer is gone; entry lost");
                    }
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(user = username, "access log writer is gone; entry lost");
                None
            }
        };
        async move {
            if let Some(waiting) = waiting {
                waiting.await;
            }
        }
    }

    /// Wait until everything sent so far is on disk.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(store: Arc<ControlStore>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<(String, AuditEntry)> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Sleep BATCH_LINGER after the first entry, then take everything queued: under load this
        // turns thousands of fsyncs per second into at most ~50, and because the writer is not
        // parked on the channel meanwhile, senders do not wake it once per request. A flush that
        // arrives first is served at once.
        if !matches!(first, Msg::Flush(_)) {
            tokio::time::sleep(BATCH_LINGER).await;
        }
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(user, entry) => batch.push((user, entry)),
                Msg::Flush(done) => waiters.push(done),
            }
            if batch.len() < BATCH_ENTRIES_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let store = store.clone();
            let mut entries = std::mem::take(&mut batch);
            let result = tokio::task::spawn_blocking(move || store.append_audit(&mut entries)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "access log write failed"),
                Err(e) => tracing::error!(error = %e, "access log writer panicked"),
            }
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}
