//! The gateway: the only way into any instance.
//!
//! It owns the HTTP edge (request ids, body limits, timeouts, one JSON error shape), the OAuth 2.1
//! authorization server ([`oauth`]: consent screen, PKCE, codes, biscuit access tokens, rotating
//! refresh tokens, revocation, introspection, metadata), owner sign-up and sessions
//! ([`control_api`]), per-tier rate limits ([`ratelimit`]), the access log, and the reverse proxy
//! to each instance's Unix socket ([`proxy`]), which wakes hibernating instances on demand.
//!
//! Every request to `/i/{user}/…` is checked in the same order: token signature and expiry,
//! deny lists (revocation), audience (the token's instance is the path's), the route's scope, the
//! tier's rate; only then is the instance touched. Every decision is logged to that user's access
//! log.
//!
//! It must never read or write inside an instance's data directory, and never hold a user's
//! unwrapped data key longer than it takes to hand it to a starting instance.
#![warn(missing_docs, unreachable_pub)]

mod bodies;
pub mod chain_proxy;
pub mod control_api;
pub mod edge;
mod listeners;
pub mod oauth;
pub mod owner;
pub mod pages;
pub mod proxy;
pub mod ratelimit;
pub mod receipts;
pub mod routes;
pub mod server;
pub mod state;
pub mod tokens;
pub mod webapp;

pub use state::Gateway;

/// Build the gateway's router (tests drive it without a socket; `selfcloud up` serves it).
pub fn app(gateway: std::sync::Arc<Gateway>) -> axum::Router {
    routes::router(gateway)
}
