//! Consent receipts: every grant and revocation is recorded on the SELF Chain, so a user's
//! consent history is tamper-evident.
//!
//! The receipt is the SHA-256 of the decision's canonical JSON (user, app, scopes, spending limit,
//! generation, grant or revoke, time). The user's own instance signs the transaction with the
//! user's key; the gateway only asks it to, in the background, so the user's call never waits for
//! the chain. When the transaction is final, the owner's access log gets an entry naming it.

use crate::edge::{new_request_id, Rid};
use crate::state::Gateway;
use selfcloud_control::model::{AuditEntry, Grant};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The receipt of one consent decision.
pub fn receipt(username: &str, app_id: &str, grant: &Grant, revoked: bool, time_ms: u64) -> [u8; 32] {
    // serde_json writes object keys in the order given here; the struct keeps it fixed.
    #[derive(serde::Serialize)]
    struct Decision<'a> {
        user: &'a str,
        app: &'a str,
        scopes: &'a [String],
        chain_daily_limit: Option<&'a str>,
        generation: u64,
        revoked: bool,
        time_ms: u64,
    }
    let decision = Decision { user: username, app: app_id, scopes: &grant.scopes, chain_daily_limit: grant.chain_daily_limit.as_deref(), generation: grant.generation, revoked, time_ms };
    Sha256::digest(serde_json::to_vec(&decision).unwrap_or_default()).into()
}

/// Records a grant (or, with `revoked`, its revocation) on the chain, in the background.
pub fn record(gw: &Arc<Gateway>, username: &str, app_id: &str, grant: &Grant, revoked: bool) {
    let receipt = receipt(username, app_id, grant, revoked, selfcloud_core::unix_now_ms());
    let body = serde_json::json!({"receipt": selfcloud_core::hex(&receipt), "revoked": revoked});
    let route = if revoked { "consent receipt: revoked" } else { "consent receipt: granted" };
    through_instance(gw, username, app_id, "/v1/chain/receipts", body, route);
}

/// Registers a new app's id on the chain, owned by the account of the user who registered it.
pub fn record_app(gw: &Arc<Gateway>, username: &str, app_id: &str, name: &str) {
    let body = serde_json::json!({"app_id": app_id, "name": name});
    through_instance(gw, username, app_id, "/v1/chain/apps", body, "app registration");
}

/// Asks `username`'s instance (as its owner) to sign and submit a chain transaction, retrying in
/// the background while the instance waits for its first funds; logs the transaction's hash.
fn through_instance(gw: &Arc<Gateway>, username: &str, app_id: &str, path: &'static str, body: serde_json::Value, route: &'static str) {
    if gw.chain.is_none() {
        return;
    }
    let (gw, username, app_id) = (gw.clone(), username.to_owned(), app_id.to_owned());
    tokio::spawn(async move {
        let rid = Rid(new_request_id());
        // ~5 minutes in all.
        let mut wait = Duration::from_millis(500);
        for _ in 0..12 {
            match crate::proxy::internal_post_json(&gw, &username, path, &body, &rid).await {
                Ok((status, answer)) if status.is_success() => {
                    let entry = AuditEntry {
                        seq: 0,
                        time_ms: selfcloud_core::unix_now_ms(),
                        app: app_id.clone(),
                        method: "CHAIN".into(),
                        route: route.into(),
                        decision: "allowed".into(),
                        code: None,
                        status: status.as_u16(),
                        request_id: rid.0.clone(),
                        chain_tx: answer["hash"].as_str().map(str::to_owned),
                    };
                    gw.audit.record(&username, entry).await;
                    return;
                }
                Ok((status, answer)) => tracing::info!(user = %username, %status, %answer, route, "chain record not made yet; retrying"),
                Err(e) => tracing::info!(user = %username, error = %e, route, "chain record not made yet; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        tracing::warn!(user = %username, app = %app_id, route, "gave up recording on the chain");
    });
}
