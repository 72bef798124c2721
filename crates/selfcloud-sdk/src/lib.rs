//! The Rust SDK for apps built on selfcloud: `App → SDK → user authorization → instance API →
//! scoped access`.
//!
//! An [`App`] sends the user to their gateway's consent screen with a connection URL (OAuth 2.1
//! authorization code with PKCE S256 and `state`), turns the callback into a [`Session`] (the code
//! exchanged for an access token bound to that user's instance), and the session reaches the
//! user's instance within the scopes the user granted: [`Session::ai`], [`Session::storage`],
//! [`Session::files`], [`Session::db`], [`Session::blockchain`], [`Session::crypto`],
//! [`Session::network`], and the permission calls. Access tokens are refreshed automatically
//! (rotating refresh tokens). Every failure is an [`Error`]; refusals by the server carry SPEC §4's
//! stable [`Code`].
//!
//! This crate owns only the client side: it speaks HTTP to a gateway and knows nothing of the
//! server's internals.
//!
//! ```no_run
//! # async fn example() -> Result<(), selfcloud_sdk::Error> {
//! use selfcloud_sdk::{App, AppConfig};
//!
//! let app = App::new(AppConfig {
//!     app_id: "app_0123456789abcdef0123".into(),
//!     app_secret: Some("the secret from registration".into()),
//!     base_url: "http://127.0.0.1:8080".into(),
//!     redirect_uri: "https://notes.example/callback".into(),
//! })?;
//! // 1. Send the user to the consent screen; keep `pending` (state + PKCE verifier) for the callback.
//! let pending = app.connection_url(&["ai:chat", "storage:read", "storage:write"]);
//! println!("open {}", pending.url);
//! // 2. The browser comes back to the redirect URI with a code.
//! # let callback = String::new();
//! let session = app.handle_callback(&callback, &pending).await?;
//! // 3. Use the user's instance within what they granted.
//! session.storage().set("notes/1", &serde_json::json!({"title": "hello"})).await?;
//! let answer = session.ai().chat("Summarise my day", None).await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

mod app;
mod error;
mod services;
mod session;

pub use app::{App, AppConfig, PendingConnection, TestUser, Tokens};
pub use error::{Code, Error};
pub use services::{Ai, Blockchain, ChatAnswer, ChatEvent, Crypto, Db, Database, Files, Network, Storage};
pub use session::Session;
