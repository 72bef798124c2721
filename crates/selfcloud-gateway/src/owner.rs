//! Instance routes the gateway answers itself because their data is the control plane's: grants,
//! the access log, permissions, and account deletion.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use selfcloud_core::{ApiError, AppId, Scope};

use crate::edge::{self, Rid};
use crate::state::{control_error, Gateway};
use crate::tokens::{Claims, Subject};

/// Largest page of the access log.
const AUDIT_LIMIT_MAX: usize = 1000;

/// An instance route the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRoute<'a> {
    /// `GET /v1/permissions`
    Permissions,
    /// `GET /v1/grants`
    Grants,
    /// `DELETE /v1/grants/{app_id}`
    Revoke(&'a str),
    /// `GET /v1/audit`
    Audit,
    /// `DELETE /v1/account`
    DeleteAccount,
}

impl OwnerRoute<'_> {
    /// Which of ours this is; `None` means "forward to the instance". Synchronous, so a proxied
    /// request decides without carrying the (rarely used) handlers' state in its future.
    pub fn of<'a>(method: &Method, route: &'a str) -> Option<OwnerRoute<'a>> {
        Some(match (method, route) {
            (&Method::GET, "/v1/permissions") => OwnerRoute::Permissions,
            (&Method::GET, "/v1/grants") => OwnerRoute::Grants,
            (&Method::DELETE, r) if r.starts_with("/v1/grants/") => OwnerRoute::Revoke(&r["/v1/grants/".len()..]),
            (&Method::GET, "/v1/audit") => OwnerRoute::Audit,
            (&Method::DELETE, "/v1/account") => OwnerRoute::DeleteAccount,
            _ => return None,
        })
    }
}

/// Answer one of our routes.
pub async fn handle(gw: &Arc<Gateway>, claims: &Claims, route: OwnerRoute<'_>, query: &str, rid: &Rid) -> Result<Response, ApiError> {
    match route {
        OwnerRoute::Permissions => Ok(permissions(claims)),
        OwnerRoute::Grants => grants(gw, &claims.username),
        OwnerRoute::Revoke(app_id) => revoke(gw, &claims.username, app_id),
        OwnerRoute::Audit => audit(gw, &claims.username, query).await,
        OwnerRoute::DeleteAccount => delete_account(gw, &claims.username).await,
    }
    .map_err(|e| rid.err(e))
}

fn permissions(claims: &Claims) -> Response {
    let body = match &claims.subject {
        Subject::Owner { .. } => serde_json::json!({ "owner": true, "scopes": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() }),
        Subject::App { app_id, scopes, .. } => serde_json::json!({ "owner": false, "app_id": app_id, "scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>() }),
    };
    edge::json(StatusCode::OK, &body)
}

fn grants(gw: &Gateway, username: &str) -> Result<Response, ApiError> {
    let grants = gw.store.grants_of(username).map_err(control_error)?;
    let list: Vec<serde_json::Value> = grants
        .into_iter()
        .filter(|(_, g)| g.active)
        .map(|(app_id, g)| {
            let name = gw.store.app(&app_id).ok().flatten().map(|a| a.name).unwrap_or_default();
            // What each scope allows in plain words, as the consent screen said it.
            let described: Vec<serde_json::Value> =
                g.scopes.iter().map(|s| serde_json::json!({ "scope": s, "description": Scope::parse(s).map(Scope::description).unwrap_or("") })).collect();
            serde_json::json!({ "app_id": app_id, "name": name, "scopes": g.scopes, "scope_details": described, "granted_at": g.created_at, "updated_at": g.updated_at })
        })
        .collect();
    Ok(edge::json(StatusCode::OK, &serde_json::json!({ "grants": list })))
}

fn revoke(gw: &Arc<Gateway>, username: &str, app_id: &str) -> Result<Response, ApiError> {
    let app_id = AppId::parse(app_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    match gw.store.revoke_grant(username, app_id.as_str()).map_err(control_error)? {
        Some(grant) => {
            // In memory first: from this line on, every token of the grant is refused.
            gw.tokens.set_grant(username, app_id.as_str(), grant.generation, false);
            tracing::info!(user = username, app = %app_id, "grant revoked");
            crate::receipts::record(gw, username, app_id.as_str(), &grant, true);
            Ok(edge::json(StatusCode::OK, &serde_json::json!({ "app_id": app_id.as_str(), "revoked": true })))
        }
        None => Err(ApiError::not_found("that app has no access to revoke")),
    }
}

async fn audit(gw: &Gateway, username: &str, query: &str) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Q {
        limit: Option<String>,
        cursor: Option<String>,
    }
    let q: Q = serde_urlencoded::from_str(query).map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=AUDIT_LIMIT_MAX).contains(n)).ok_or_else(|| ApiError::invalid(format!("limit must be 1-{AUDIT_LIMIT_MAX}")))?,
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| ApiError::invalid("cursor is not one this API issued"))?),
    };
    // Make the log include every call answered before this one.
    gw.audit.flush().await;
    let entries = gw.store.audit(username, before, limit).map_err(control_error)?;
    let next_cursor = if entries.len() == limit { entries.last().map(|e| e.seq.to_string()) } else { None };
    // Each app's display name, looked up once per page: revoked apps keep their names in the log.
    let mut names: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
    let entries: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|e| {
            let name = names.entry(e.app.clone()).or_insert_with(|| gw.store.app(&e.app).ok().flatten().map(|a| a.name)).clone();
            let mut json = serde_json::to_value(&e).unwrap_or_default();
            if let Some(name) = name {
                json["app_name"] = serde_json::Value::String(name);
            }
            json
        })
        .collect();
    Ok(edge::json(StatusCode::OK, &serde_json::json!({ "entries": entries, "next_cursor": next_cursor })))
}

async fn delete_account(gw: &Arc<Gateway>, username: &str) -> Result<Response, ApiError> {
    gw.supervisor.stop(username).await;
    gw.pools.forget(username);
    // Deleting the wrapped data key first makes the data unreadable even if removing files fails.
    gw.store.delete_account(username).map_err(control_error)?;
    gw.forget_account(username);
    let dir = gw.supervisor.data_dir(username);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::error!(user = username, error = %e, "removing the instance directory failed; its data stays crypto-shredded");
    }
    tracing::info!(user = username, "account deleted");
    Ok(edge::json(StatusCode::OK, &serde_json::json!({ "deleted": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_answers_exactly_its_own_routes() {
        let of = |m: Method, p: &'static str| OwnerRoute::of(&m, p);
        assert_eq!(of(Method::GET, "/v1/permissions"), Some(OwnerRoute::Permissions));
        assert_eq!(of(Method::GET, "/v1/grants"), Some(OwnerRoute::Grants));
        assert_eq!(of(Method::DELETE, "/v1/grants/app_1"), Some(OwnerRoute::Revoke("app_1")));
        assert_eq!(of(Method::GET, "/v1/audit"), Some(OwnerRoute::Audit));
        assert_eq!(of(Method::DELETE, "/v1/account"), Some(OwnerRoute::DeleteAccount));
        // Other methods on those paths, and everything else, go to the instance.
        assert_eq!(of(Method::GET, "/v1/grants/app_1"), None);
        assert_eq!(of(Method::POST, "/v1/audit"), None);
        assert_eq!(of(Method::GET, "/v1/account"), None);
        assert_eq!(of(Method::GET, "/v1/storage/app/key"), None);
    }
}
