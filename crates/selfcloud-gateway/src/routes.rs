//! The gateway's route table.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use selfcloud_core::ApiError;

use crate::edge::Rid;
use crate::state::Gateway;
use crate::{control_api, oauth, pages, proxy};

/// Every route of the gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(home))
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::edge::control_body_limit_layer))
        .layer(axum::middleware::from_fn(crate::edge::request_id_layer))
        .with_state(gw)
}

async fn home(State(gw): State<Arc<Gateway>>) -> Response {
    pages::home(&gw.config.public_url())
}

async fn not_found(rid: Rid) -> Response {
    rid.err(ApiError::not_found("no such route")).into_response()
}

async fn method_not_allowed(rid: Rid) -> Response {
    let mut e = rid.err(ApiError::invalid("method not allowed on this route")).into_response();
    *e.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e
}
