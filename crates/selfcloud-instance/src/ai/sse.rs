//! Streamed responses: Server-Sent Events (OpenAI and `/v1/ai/chat`) and NDJSON (Ollama).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

/// One SSE event carrying `data`.
pub(crate) fn event(data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// OpenAI's end-of-stream marker.
pub(crate) fn done_marker() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// One NDJSON line.
pub(crate) fn line(data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("{data}\n"))
}

/// A response whose body is what `rx` yields, as it arrives. When the client goes away the body
/// (and so `rx`) is dropped, which the producer sees as a closed channel.
pub(crate) fn streaming(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx)) });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(stream),
    )
        .into_response()
}
