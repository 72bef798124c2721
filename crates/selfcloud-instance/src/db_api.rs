//! The database routes of SPEC §5 (`/v1/db…`): each app creates and uses only its own
//! databases (its namespace); the owner uses its own, or an app's with `?app=`, and lists every
//! namespace's with `GET /v1/db?all=true`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use selfcloud_core::caller::Caller;
use selfcloud_core::{ApiError, ErrorCode};
use selfcloud_orbitdb::{value, Kind, Op};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{check_key, decode_cursor, encode_cursor, json_response, Ctx, Shared, LIST_LIMIT_MAX, VALUE_BYTES_MAX};
use crate::orbit::{DbError, DbInfo, Range};

/// Documents are indexed by this field, as OrbitDB's default `indexBy`.
const INDEX_BY: &str = "_id";
/// Events returned when `amount` is not given.
const EVENTS_DEFAULT: usize = 100;
/// Longest database name.
const NAME_BYTES_MAX: usize = 256;
/// Most writers an access controller may list.
const WRITERS_MAX: usize = 64;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/db", post(create).get(list))
        .route("/v1/db/open", post(open))
        .route("/v1/db/{cid}/kv", get(kv_all))
        .route("/v1/db/{cid}/kv/{*key}", get(kv_get).put(kv_put).delete(kv_del))
        .route("/v1/db/{cid}/events", post(event_add).get(events))
        .route("/v1/db/{cid}/docs", put(doc_put))
        .route("/v1/db/{cid}/docs/query", post(doc_query))
        .route("/v1/db/{cid}/docs/{*id}", get(doc_get).delete(doc_del))
}

#[derive(Deserialize)]
struct NsQuery {
    app: Option<String>,
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    write: Option<Vec<String>>,
}

fn parse<T: serde::de::DeserializeOwned>(ctx: &Ctx, body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ctx.fail(ApiError::invalid(format!("body must be JSON {shape}: {e}"))))
}

fn db_error(ctx: &Ctx, e: DbError) -> ApiError {
    match e {
        DbError::NotFound(m) => ctx.fail(ApiError::not_found(m)),
        DbError::Invalid(m) => ctx.fail(ApiError::invalid(m)),
        DbError::Denied(m) => ctx.fail(ApiError::permission_denied(m)),
        DbError::Store(crate::store::StoreError::QuotaExceeded { quota_bytes }) => {
            ctx.fail(ApiError::new(ErrorCode::QuotaExceeded, format!("the tier's storage quota of {quota_bytes} bytes would be exceeded")))
        }
        DbError::Stopped => ctx.fail(ApiError::new(ErrorCode::Unavailable, "the instance is stopping")),
        e => {
            tracing::error!(error = %e, request_id = %ctx.request_id, "database failure");
            ctx.fail(ApiError::internal())
        }
    }
}

/// Run a database read off the reactor (scans may touch many rows).
async fn read<T: Send + 'static>(state: &Shared, ctx: &Ctx, work: impl FnOnce(&crate::orbit::Orbit) -> Result<T, DbError> + Send + 'static) -> Result<T, ApiError> {
    let state = state.clone();
    match tokio::task::spawn_blocking(move || work(&state.orbit)).await {
        Ok(result) => result.map_err(|e| db_error(ctx, e)),
        Err(_) => Err(ctx.fail(ApiError::internal())),
    }
}

fn info_json(info: &DbInfo) -> Value {
    json!({ "address": info.address, "name": info.name, "type": info.kind, "write": info.write, "created_at": info.created_ms })
}

fn check_cid(ctx: &Ctx, cid: &str) -> Result<(), ApiError> {
    let ok = cid.len() <= 100 && cid.starts_with('z') && cid.parse::<selfcloud_ipfs::Cid>().is_ok();
    if ok { Ok(()) } else { Err(ctx.fail(ApiError::invalid(format!("{cid:?} is not a database address's CID (zdpu…)")))) }
}

/// The database `cid` of the caller's namespace, which must be of `kind`.
async fn db_of(state: &Shared, ctx: &Ctx, ns: &str, cid: &str, kind: Kind) -> Result<DbInfo, ApiError> {
    check_cid(ctx, cid)?;
    let info = match state.orbit.known_info(ns, cid) {
        Some(info) => info,
        None => {
            let (ns, cid) = (ns.to_owned(), cid.to_owned());
            read(state, ctx, move |orbit| orbit.info(&ns, &cid)).await?
        }
    };
    if info.kind != kind.as_str() {
        return Err(ctx.fail(ApiError::invalid(format!("database {} is of type {}, not {}", info.address, info.kind, kind.as_str()))));
    }
    Ok(info)
}

async fn create(State(state): State<Shared>, ctx: Ctx, Query(q): Query<NsQuery>, body: Bytes) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let body: CreateBody = parse(&ctx, &body, r#"{"name", "type": "events"|"keyvalue"|"documents", "write"?: [ids or "*"]}"#)?;
    if body.name.is_empty() || body.name.len() > NAME_BYTES_MAX || body.name.chars().any(char::is_control) || body.name.contains('/') {
        return Err(ctx.fail(ApiError::invalid(format!("a database name must be 1-{NAME_BYTES_MAX} bytes, without '/' or control characters"))));
    }
    let kind = Kind::parse(&body.kind).ok_or_else(|| ctx.fail(ApiError::invalid(r#"type must be "events", "keyvalue" or "documents""#)))?;
    if let Some(write) = &body.write {
        let valid = |w: &String| w == "*" || (w.len() == 66 && w.bytes().all(|b| b.is_ascii_hexdigit()));
        if write.is_empty() || write.len() > WRITERS_MAX || !write.iter().all(valid) {
            return Err(ctx.fail(ApiError::invalid(format!("write must list 1-{WRITERS_MAX} identity ids (66 hex digits) or \"*\""))));
        }
    }
    let (info, created) = state.orbit.create(&ns, &body.name, kind, body.write).await.map_err(|e| db_error(&ctx, e))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, info_json(&info).to_string().into_bytes()))
}

async fn list(State(state): State<Shared>, ctx: Ctx, Query(q): Query<NsQuery>) -> Result<Response, ApiError> {
    let every = q.all.unwrap_or(false);
    if every && ctx.caller != Caller::Owner {
        return Err(ctx.fail(ApiError::permission_denied("only the owner may list every app's databases")));
    }
    let ns = if every { None } else { Some(ctx.namespace(q.app.as_deref())?) };
    let identity = match &ns {
        Some(ns) => Some(state.orbit.identity(ns).await.map_err(|e| db_error(&ctx, e))?),
        None => None,
    };
    let rows = read(&state, &ctx, move |orbit| orbit.list(ns.as_deref())).await?;
    let dbs: Vec<Value> = rows
        .iter()
        .map(|(holder, info)| {
            let mut v = info_json(info);
            if every {
                v["namespace"] = json!(holder);
            }
            v
        })
        .collect();
    let mut body = json!({ "databases": dbs });
    if let Some(id) = identity {
        // The OrbitDB identity this namespace writes as: what another peer lists in `write`.
        body["identity"] = json!(id);
    }
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

async fn open(State(state): State<Shared>, ctx: Ctx, Query(q): Query<NsQuery>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct OpenBody {
        address: String,
    }
    let ns = ctx.namespace(q.app.as_deref())?;
    let body: OpenBody = parse(&ctx, &body, r#"{"address": "/orbitdb/…"}"#)?;
    let cid = body.address.strip_prefix("/orbitdb/").ok_or_else(|| ctx.fail(ApiError::invalid("address must be /orbitdb/<cid>")))?;
    check_cid(&ctx, cid)?;
    let info = state.orbit.open(&ns, &body.address).await.map_err(|e| db_error(&ctx, e))?;
    Ok(json_response(StatusCode::OK, info_json(&info).to_string().into_bytes()))
}

fn check_value(ctx: &Ctx, raw: &serde_json::value::RawValue) -> Result<Value, ApiError> {
    if raw.get().len() > VALUE_BYTES_MAX {
        return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, format!("a value may be at most {VALUE_BYTES_MAX} bytes of JSON"))));
    }
    serde_json::from_str(raw.get()).map_err(|e| ctx.fail(ApiError::invalid(e.to_string())))
}

#[derive(Deserialize)]
struct ValueBody {
    value: Box<serde_json::value::RawValue>,
}

async fn append(state: &Shared, ctx: &Ctx, ns: &str, cid: &str, op: Op) -> Result<String, ApiError> {
    state.orbit.append(ns, cid, op, ctx.quota_bytes).await.map_err(|e| db_error(ctx, e))
}

async fn kv_put(State(state): State<Shared>, ctx: Ctx, Path((cid, key)): Path<(String, String)>, Query(q): Query<NsQuery>, body: Bytes) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    check_key(&key).map_err(|e| ctx.fail(e))?;
    let body: ValueBody = parse(&ctx, &body, r#"{"value": …}"#)?;
    let value = check_value(&ctx, &body.value)?;
    db_of(&state, &ctx, &ns, &cid, Kind::KeyValue).await?;
    let hash = append(&state, &ctx, &ns, &cid, Op::Put { key: key.clone(), value: value::from_json(&value) }).await?;
    Ok(json_response(StatusCode::OK, json!({ "key": key, "hash": hash }).to_string().into_bytes()))
}

/// The live state of `key` in the caller's database `cid` of `kind` (checked first).
async fn lookup(state: &Shared, ctx: &Ctx, ns: &str, cid: &str, key: &str, kind: Kind, what: &str) -> Result<crate::orbit::Indexed, ApiError> {
    check_key(key).map_err(|e| ctx.fail(e))?;
    db_of(state, ctx, ns, cid, kind).await?;
    current(state, ctx, ns, cid, key, what).await
}

/// Delete a live key (a `DEL` entry); `NOT_FOUND` when it is not set. The new entry's hash.
async fn remove(state: &Shared, ctx: &Ctx, ns: &str, cid: &str, key: &str, kind: Kind, what: &str) -> Result<String, ApiError> {
    lookup(state, ctx, ns, cid, key, kind, what).await?;
    append(state, ctx, ns, cid, Op::Del { key: key.to_owned() }).await
}

/// Read the live state of `key`; `NOT_FOUND` when never set or deleted.
async fn current(state: &Shared, ctx: &Ctx, ns: &str, cid: &str, key: &str, what: &str) -> Result<crate::orbit::Indexed, ApiError> {
    let (ns, cid, k) = (ns.to_owned(), cid.to_owned(), key.to_owned());
    let found = read(state, ctx, move |orbit| orbit.get(&ns, &cid, &k)).await?;
    found.filter(|s| s.v.is_some()).ok_or_else(|| ctx.fail(ApiError::not_found(format!("no {what} {key:?}"))))
}

async fn kv_get(State(state): State<Shared>, ctx: Ctx, Path((cid, key)): Path<(String, String)>, Query(q): Query<NsQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let found = lookup(&state, &ctx, &ns, &cid, &key, Kind::KeyValue, "key").await?;
    Ok(json_response(StatusCode::OK, json!({ "key": key, "value": found.v, "hash": found.h }).to_string().into_bytes()))
}

async fn kv_del(State(state): State<Shared>, ctx: Ctx, Path((cid, key)): Path<(String, String)>, Query(q): Query<NsQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let hash = remove(&state, &ctx, &ns, &cid, &key, Kind::KeyValue, "key").await?;
    Ok(json_response(StatusCode::OK, json!({ "key": key, "deleted": true, "hash": hash }).to_string().into_bytes()))
}

#[derive(Deserialize)]
struct PageQuery {
    app: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn page(ctx: &Ctx, limit: Option<&str>, cursor: Option<&str>) -> Result<(usize, Option<String>), ApiError> {
    let limit = match limit {
        None | Some("") => 100,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=LIST_LIMIT_MAX).contains(n)).ok_or_else(|| ctx.fail(ApiError::invalid(format!("limit must be an integer from 1 to {LIST_LIMIT_MAX}"))))?,
    };
    let after = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ctx.fail(ApiError::invalid("cursor is not one this API issued")))?),
    };
    Ok((limit, after))
}

async fn kv_all(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<PageQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let (limit, after) = page(&ctx, q.limit.as_deref(), q.cursor.as_deref())?;
    db_of(&state, &ctx, &ns, &cid, Kind::KeyValue).await?;
    let (rows, more) = read(&state, &ctx, move |orbit| orbit.all(&ns, &cid, after.as_deref(), limit)).await?;
    let next = if more { rows.last().map(|(k, _)| encode_cursor(k)) } else { None };
    let items: Vec<Value> = rows.into_iter().map(|(key, s)| json!({ "key": key, "value": s.v, "hash": s.h })).collect();
    Ok(json_response(StatusCode::OK, json!({ "items": items, "next_cursor": next }).to_string().into_bytes()))
}

async fn event_add(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<NsQuery>, body: Bytes) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let body: ValueBody = parse(&ctx, &body, r#"{"value": …}"#)?;
    let value = check_value(&ctx, &body.value)?;
    db_of(&state, &ctx, &ns, &cid, Kind::Events).await?;
    let hash = append(&state, &ctx, &ns, &cid, Op::Add { value: value::from_json(&value) }).await?;
    Ok(json_response(StatusCode::CREATED, json!({ "hash": hash }).to_string().into_bytes()))
}

#[derive(Deserialize)]
struct EventsQuery {
    app: Option<String>,
    gt: Option<String>,
    gte: Option<String>,
    lt: Option<String>,
    lte: Option<String>,
    amount: Option<String>,
}

async fn events(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<EventsQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let amount = match q.amount.as_deref() {
        None | Some("") => EVENTS_DEFAULT,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=LIST_LIMIT_MAX).contains(n)).ok_or_else(|| ctx.fail(ApiError::invalid(format!("amount must be an integer from 1 to {LIST_LIMIT_MAX}"))))?,
    };
    for hash in [&q.gt, &q.gte, &q.lt, &q.lte].into_iter().flatten() {
        check_cid(&ctx, hash)?;
    }
    db_of(&state, &ctx, &ns, &cid, Kind::Events).await?;
    let range = Range { gt: q.gt, gte: q.gte, lt: q.lt, lte: q.lte, amount: Some(amount) };
    let rows = read(&state, &ctx, move |orbit| orbit.events(&ns, &cid, &range)).await?;
    let items: Vec<Value> = rows.into_iter().map(|(hash, value)| json!({ "hash": hash, "value": value })).collect();
    Ok(json_response(StatusCode::OK, json!({ "items": items }).to_string().into_bytes()))
}

async fn doc_put(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<NsQuery>, body: Bytes) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    if body.len() > VALUE_BYTES_MAX {
        return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, format!("a document may be at most {VALUE_BYTES_MAX} bytes of JSON"))));
    }
    let doc: serde_json::Map<String, Value> = parse(&ctx, &body, r#"{"_id": "…", …}"#)?;
    let id = match doc.get(INDEX_BY) {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ctx.fail(ApiError::invalid(format!("a document needs a string {INDEX_BY:?} field")))),
    };
    check_key(&id).map_err(|e| ctx.fail(e))?;
    db_of(&state, &ctx, &ns, &cid, Kind::Documents).await?;
    let hash = append(&state, &ctx, &ns, &cid, Op::Put { key: id.clone(), value: value::from_json(&Value::Object(doc)) }).await?;
    Ok(json_response(StatusCode::OK, json!({ "_id": id, "hash": hash }).to_string().into_bytes()))
}

async fn doc_get(State(state): State<Shared>, ctx: Ctx, Path((cid, id)): Path<(String, String)>, Query(q): Query<NsQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let found = lookup(&state, &ctx, &ns, &cid, &id, Kind::Documents, "document").await?;
    Ok(json_response(StatusCode::OK, found.v.unwrap_or(Value::Null).to_string().into_bytes()))
}

async fn doc_del(State(state): State<Shared>, ctx: Ctx, Path((cid, id)): Path<(String, String)>, Query(q): Query<NsQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let hash = remove(&state, &ctx, &ns, &cid, &id, Kind::Documents, "document").await?;
    Ok(json_response(StatusCode::OK, json!({ "_id": id, "deleted": true, "hash": hash }).to_string().into_bytes()))
}

async fn doc_query(State(state): State<Shared>, ctx: Ctx, Path(cid): Path<String>, Query(q): Query<PageQuery>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct QueryBody {
        #[serde(rename = "where", default)]
        filter: serde_json::Map<String, Value>,
    }
    let ns = ctx.namespace(q.app.as_deref())?;
    let (limit, after) = page(&ctx, q.limit.as_deref(), q.cursor.as_deref())?;
    let body: QueryBody = parse(&ctx, &body, r#"{"where": {field: value, …}}"#)?;
    db_of(&state, &ctx, &ns, &cid, Kind::Documents).await?;
    let (rows, more) = read(&state, &ctx, move |orbit| orbit.query(&ns, &cid, &body.filter, after.as_deref(), limit)).await?;
    let next = if more { rows.last().map(|(k, _)| encode_cursor(k)) } else { None };
    let items: Vec<Value> = rows.into_iter().filter_map(|(_, s)| s.v).collect();
    Ok(json_response(StatusCode::OK, json!({ "items": items, "next_cursor": next }).to_string().into_bytes()))
}
