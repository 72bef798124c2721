//! `/chain/…`: the public SELF Chain node API (SPEC §5, §6), served by passing the request to a
//! validator's own API. Public data needs no token; submitted transactions carry their own
//! signatures. The first validator that answers serves the request.

use crate::state::Gateway;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use selfcloud_core::{ApiError, ErrorCode};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body passed on (a batch of a block's worth of transactions, hex-encoded).
const MAX_BODY: usize = 16 << 20;
/// Largest answer passed back.
const MAX_ANSWER: usize = 32 << 20;

/// `ANY /chain/{*rest}` → `{validator}/{rest}`.
pub async fn forward(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let Some(chain) = gw.chain.as_ref() else {
        return ApiError::new(ErrorCode::Unavailable, "this host runs no chain (SELFCLOUD_VALIDATORS=0)").into_response();
    };
    let method = request.method().clone();
    if method != Method::GET && method != Method::POST {
        return ApiError::new(ErrorCode::InvalidArgument, "the chain API takes GET and POST").into_response();
    }
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Some(rest) = path_and_query.strip_prefix("/chain") else {
        return ApiError::not_found("no such route").into_response();
    };
    let rest = if rest.is_empty() { "/" } else { rest }.to_owned();
    if method == Method::GET && request.headers().get(axum::http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return websocket(&chain.apis, &rest, request).await;
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return ApiError::new(ErrorCode::PayloadTooLarge, format!("the chain API takes at most {MAX_BODY} bytes")).into_response(),
    };
    for api in &chain.apis {
        match send(api, method.clone(), &rest, body.clone()).await {
            Ok((status, answer)) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return (status, [(axum::http::header::CONTENT_TYPE, "application/json")], Body::from(answer)).into_response();
            }
            Err(e) => tracing::warn!(validator = %api, error = %e, "chain API unreachable"),
        }
    }
    ApiError::new(ErrorCode::Unavailable, "no validator answered").into_response()
}

async fn send(base: &str, method: Method, path: &str, body: bytes::Bytes) -> Result<(u16, bytes::Bytes), String> {
    let authority = base.strip_prefix("http://").ok_or("validator URLs are http://")?.trim_end_matches('/');
    let stream = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(authority)).await.map_err(|_| "connect timed out".to_string())?.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(45), sender.send_request(request)).await.map_err(|_| "no answer in time".to_string())?.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let answer = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, answer))
}

/// A WebSocket (`/chain/v1/ws`): the handshake goes to a validator; once it answers 101 the two
/// upgraded connections are joined byte for byte.
async fn websocket(apis: &[String], path: &str, mut request: Request) -> Response {
    let Some(client_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::invalid("this connection cannot be upgraded").into_response();
    };
    for api in apis {
        let Some(authority) = api.strip_prefix("http://").map(|a| a.trim_end_matches('/').to_owned()) else { continue };
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&authority)).await else { continue };
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await else { continue };
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut upstream = hyper::Request::builder().method(Method::GET).uri(path).header(hyper::header::HOST, authority.as_str());
        for name in ["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"] {
            if let Some(value) = request.headers().get(name) {
                upstream = upstream.header(name, value);
            }
        }
        let Ok(upstream) = upstream.body(http_body_util::Empty::<bytes::Bytes>::new()) else { continue };
        let Ok(mut answer) = sender.send_request(upstream).await else { continue };
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = answer.status();
            let body = Limited::new(answer.into_body(), 1 << 20).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return (status, [(axum::http::header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response();
        }
        let server_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = (client_upgrade.await, server_upgrade.await) else { return };
            let _ = tokio::io::copy_bidirectional(&mut hyper_util::rt::TokioIo::new(client), &mut hyper_util::rt::TokioIo::new(server)).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, value) in answer.headers() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        return response;
    }
    ApiError::new(ErrorCode::Unavailable, "no validator answered").into_response()
}
