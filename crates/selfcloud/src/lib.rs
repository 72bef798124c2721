//! Library half of the `selfcloud` binary: the small HTTP client that `demo`, `bench` and the
//! end-to-end tests share to drive a running system the way an app and a user would.
//!
//! The full developer SDK is a separate crate; this client exists so the binary can check itself.

pub mod chain_net;
pub mod client;
pub mod js_orbitdb;
pub mod system;
