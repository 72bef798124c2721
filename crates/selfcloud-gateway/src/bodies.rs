//! Bodies the gateway wraps on their way through: uploads timed by their progress, and
//! responses that keep their instance awake until their last byte is sent.
//!
//! Why uploads are not under the request timeout: a file streams to the instance as it comes,
//! and the instance answers only once it has all of it, so a total limit would cut off any file
//! larger than the timeout times the client's bandwidth (1 GiB at 20 MB/s is 50 s). What must
//! not happen is a request that hangs, so an upload fails when nothing moves for the timeout:
//! the client sends nothing, the instance takes nothing, or the instance does not answer after
//! the last byte.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use selfcloud_control::supervisor::Activity;
use tokio::time::Instant;

/// When an upload last moved, and who it is waiting for.
pub(crate) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
    waiting_for_client: AtomicBool,
}

/// Who stopped an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// The client sent nothing more.
    Client,
    /// The instance took nothing more, or did not answer after the last byte.
    Instance,
}

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress { start: Instant::now(), last_ms: AtomicU64::new(0), waiting_for_client: AtomicBool::new(false) })
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`, saying who was being waited for.
    pub(crate) async fn stalled(&self, limit: Duration) -> Stall {
        loop {
            let due = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= due {
                return if self.waiting_for_client.load(Ordering::Relaxed) { Stall::Client } else { Stall::Instance };
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A request body that records its progress.
pub(crate) struct Watched {
    inner: Body,
    progress: Arc<Progress>,
}

impl Watched {
    pub(crate) fn new(inner: Body, progress: Arc<Progress>) -> Watched {
        progress.moved();
        Watched { inner, progress }
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // Polled means the instance's side has room; pending here means the client is slow.
        self.progress.waiting_for_client.store(polled.is_pending(), Ordering::Relaxed);
        if polled.is_ready() {
            self.progress.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its instance's [`Activity`] until it is done or dropped.
pub(crate) struct Held<B> {
    inner: B,
    _activity: Activity,
}

impl<B> Held<B> {
    pub(crate) fn new(inner: B, activity: Activity) -> Held<B> {
        Held { inner, _activity: activity }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body fed by the test, frame by frame.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_moving_upload_never_stalls_and_a_stopped_one_names_who_stopped() {
        let progress = Progress::new();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut watched = Watched::new(Body::new(Fed(rx)), progress.clone());
        let limit = Duration::from_secs(1);
        // Eight frames 250 ms apart: twice the limit in all, and never a stall.
        let feeding = async {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                tx.send(Bytes::from_static(b"chunk")).await.unwrap();
                assert!(watched.frame().await.is_some());
            }
        };
        tokio::select! {
            () = feeding => {}
            stall = progress.stalled(limit) => panic!("a moving upload stalled: {stall:?}"),
        }
        // The client goes quiet while the body is being read: its stall, after the limit.
        let reading = tokio::spawn(async move { watched.frame().await.map(|f| f.is_ok()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        assert_eq!(progress.stalled(limit).await, Stall::Client);
        assert!(started.elapsed() >= Duration::from_millis(900), "stalled after {:?}", started.elapsed());
        // The body ends and nobody answers: the instance's stall.
        drop(tx);
        assert_eq!(reading.await.unwrap(), None);
        assert_eq!(progress.stalled(limit).await, Stall::Instance);
    }
}
