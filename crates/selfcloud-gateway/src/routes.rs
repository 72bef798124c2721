//! The gateway's route table.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use selfcloud_core::caller::REQUEST_ID;
use selfcloud_core::ApiError;
use tower::ServiceExt;

use crate::edge::Rid;
use crate::state::Gateway;
use crate::{control_api, oauth, proxy};

/// Every route of the gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(crate::webapp::index))
        .route("/assets/app.js", get(crate::webapp::script))
        .route("/assets/app.css", get(crate::webapp::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/.well-known/oauth-authorization-server", get(oauth::metadata))
        .route("/v1/accounts", post(control_api::sign_up))
        .route("/v1/sessions", post(control_api::sign_in).delete(control_api::sign_out))
        .route("/v1/instances/me", get(control_api::instance_me))
        .route("/v1/apps", post(control_api::register_app))
        .route("/v1/apps/{app_id}/test-users", post(control_api::create_test_user))
        .route("/oauth/authorize", get(oauth::authorize_get).post(oauth::authorize_post))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/i/{username}/{*rest}", any(proxy::instance_route))
        .route("/chain/{*rest}", any(crate::chain_proxy::forward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::edge::control_body_limit_layer))
        .layer(axum::middleware::from_fn(crate::edge::request_id_layer))
        .with_state(gw)
}

/// What `selfcloud up` serves: `/i/…` requests go straight to [`proxy::handle`] (the hot path:
/// no routing table, no per-layer boxing), everything else to the [`router`].
#[derive(Clone)]
pub struct Front {
    gw: Arc<Gateway>,
    router: Router,
}

impl Front {
    /// The front service of a gateway.
    pub fn new(gw: Arc<Gateway>) -> Front {
        Front { router: router(gw.clone()), gw }
    }
}

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if crate::edge::is_cross_site_cookie_request(request.method(), request.headers()) {
            let rid = Rid(crate::edge::new_request_id());
            let e = rid.err(ApiError::permission_denied("a request from another site's page may not use the session cookie"));
            return Box::pin(std::future::ready(Ok(e.into_response())));
        }
        if request.uri().path().starts_with("/i/") {
            let gw = self.gw.clone();
            Box::pin(async move {
                let rid = Rid(crate::edge::new_request_id());
                let mut response = proxy::handle(&gw, &rid, request).await;
                let headers = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&rid.0) {
                    headers.insert(REQUEST_ID, v);
                }
                // Instance answers carry user content (files, notes) on the Super-App's origin:
                // opened directly, they must neither be sniffed into HTML nor run a script.
                headers.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                headers.insert(axum::http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
                Ok(response)
            })
        } else {
            Box::pin(self.router.clone().oneshot(request))
        }
    }
}

/// `axum::serve` asks for a service per connection: each gets a clone.
impl<'a, L: axum::serve::Listener> tower::Service<axum::serve::IncomingStream<'a, L>> for Front {
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: axum::serve::IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

async fn not_found(rid: Rid) -> Response {
    rid.err(ApiError::not_found("no such route")).into_response()
}

async fn method_not_allowed(rid: Rid) -> Response {
    let mut e = rid.err(ApiError::invalid("method not allowed on this route")).into_response();
    *e.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e
}
