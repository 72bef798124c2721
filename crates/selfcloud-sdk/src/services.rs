//! The instance API of SPEC §5, one handle per area. Each call needs the scope its area names.

use base64::Engine as _;
use futures::Stream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::session::Body;
use crate::{Code, Error, Session};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Path segments keep `/` (keys may be hierarchical) and escape everything else that is not
/// unreserved. `.` and `..` segments are refused here: URLs resolve them (even escaped), so they
/// would reach another route, and the instance refuses such keys anyway.
fn path(key: &str) -> Result<String, Error> {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::Api { code: Code::InvalidArgument, status: 400, message: "a key must not have \".\" or \"..\" segments (checked by the SDK)".into(), request_id: None, retry_after: None });
    }
    Ok(percent_encoding::utf8_percent_encode(key, KEEP).to_string())
}

/// One path segment (an id or CID): `/` is escaped too.
fn segment(value: &str) -> Result<String, Error> {
    Ok(path(value)?.replace('/', "%2F"))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let present: Vec<(&str, &str)> = pairs.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    if present.is_empty() {
        String::new()
    } else {
        format!("?{}", serde_urlencoded::to_string(present).unwrap_or_default())
    }
}

fn not_found_is_none<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(&Code::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An answer of the user's AI.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    /// The answer.
    pub text: String,
    /// The conversation it belongs to (pass it back to continue).
    pub conversation: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Token counts (`prompt_tokens`, `completion_tokens`, …).
    pub usage: Value,
    /// With `ai:collaborate`: the shared notes the answer drew on.
    pub sources: Vec<Value>,
}

impl ChatAnswer {
    fn from_json(v: &Value) -> ChatAnswer {
        ChatAnswer {
            text: v["message"]["content"].as_str().unwrap_or("").to_owned(),
            conversation: v["conversation"].as_str().unwrap_or("").to_owned(),
            finish_reason: v["finish_reason"].as_str().unwrap_or("").to_owned(),
            usage: v["usage"].clone(),
            sources: v["sources"].as_array().cloned().unwrap_or_default(),
        }
    }
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// More text.
    Delta(String),
    /// The end, with the whole answer.
    Done(ChatAnswer),
}

/// `ai:chat`: the user's private AI.
#[derive(Debug, Clone, Copy)]
pub struct Ai<'s> {
    pub(crate) session: &'s Session,
}

impl Ai<'_> {
    /// Asks the AI; `conversation` continues an earlier one (its memory is kept in the user's
    /// instance, per app).
    pub async fn chat(&self, message: &str, conversation: Option<&str>) -> Result<ChatAnswer, Error> {
        self.chat_with(json!({"message": message, "conversation": conversation})).await
    }

    /// Asks with any of `/v1/ai/chat`'s fields (`context`, `system`, `max_tokens`, `temperature`,
    /// `seed`, `stop`).
    pub async fn chat_with(&self, request: Value) -> Result<ChatAnswer, Error> {
        let mut request = request;
        request["stream"] = json!(false);
        let v = self.session.json(Method::POST, "/v1/ai/chat", Body::Json(request)).await?;
        Ok(ChatAnswer::from_json(&v))
    }

    /// The answer as it is generated (Server-Sent Events). Dropping the stream cancels the
    /// generation on the instance.
    pub async fn chat_stream(&self, message: &str, conversation: Option<&str>) -> Result<impl Stream<Item = Result<ChatEvent, Error>> + Send + 'static, Error> {
        let body = json!({"message": message, "conversation": conversation, "stream": true});
        let response = self.session.send(Method::POST, "/v1/ai/chat", Body::Json(body)).await?;
        let state = (response, String::new(), false);
        Ok(futures::stream::unfold(state, |(mut response, mut buffer, finished)| async move {
            if finished {
                return None;
            }
            loop {
                if let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let Some(data) = event.trim().strip_prefix("data: ") else { continue };
                    if data == "[DONE]" {
                        return None;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        return Some((Err(Error::Invalid(format!("a stream event is not JSON: {data}"))), (response, buffer, true)));
                    };
                    match v["type"].as_str() {
                        Some("delta") => return Some((Ok(ChatEvent::Delta(v["delta"].as_str().unwrap_or("").to_owned())), (response, buffer, false))),
                        Some("done") => return Some((Ok(ChatEvent::Done(ChatAnswer::from_json(&v))), (response, buffer, false))),
                        Some("error") => {
                            let e = Error::Api { code: Code::parse(v["error"]["code"].as_str().unwrap_or("")), status: 200, message: v["error"]["message"].as_str().unwrap_or("").to_owned(), request_id: None, retry_after: None };
                            return Some((Err(e), (response, buffer, true)));
                        }
                        _ => continue,
                    }
                }
                match response.chunk().await {
                    Ok(Some(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Ok(None) => return None,
                    Err(e) => return Some((Err(Error::Http(e)), (response, buffer, true))),
                }
            }
        }))
    }
}

/// `storage:read` / `storage:write`: the app's own key-value namespace.
#[derive(Debug, Clone, Copy)]
pub struct Storage<'s> {
    pub(crate) session: &'s Session,
}

impl Storage<'_> {
    /// Stores `value` under `key` (acknowledged once durable). Values are always sealed at rest.
    pub async fn set(&self, key: &str, value: &Value) -> Result<(), Error> {
        self.session.json(Method::PUT, &format!("/v1/storage/{}", path(key)?), Body::Json(json!({"value": value}))).await.map(drop)
    }
    /// The value under `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, Error> {
        let v = not_found_is_none(self.session.json(Method::GET, &format!("/v1/storage/{}", path(key)?), Body::None).await)?;
        Ok(v.map(|v| v["value"].clone()))
    }
    /// Keys starting with `prefix`, in order, `limit` at a time; pass the returned cursor back for
    /// the next page.
    pub async fn list(&self, prefix: &str, limit: Option<u32>, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), Error> {
        let q = query(&[("prefix", Some(prefix.to_owned())), ("limit", limit.map(|l| l.to_string())), ("cursor", cursor.map(str::to_owned))]);
        let v = self.session.json(Method::GET, &format!("/v1/storage{q}"), Body::None).await?;
        let keys = v["keys"].as_array().map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        Ok((keys, v["next_cursor"].as_str().map(str::to_owned)))
    }
    /// Deletes `key`; `false` when there was nothing.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(not_found_is_none(self.session.json(Method::DELETE, &format!("/v1/storage/{}", path(key)?), Body::None).await)?.is_some())
    }
}

/// `files:read` / `files:write`: the app's files in the user's IPFS node.
#[derive(Debug, Clone, Copy)]
pub struct Files<'s> {
    pub(crate) session: &'s Session,
}

impl Files<'_> {
    /// Adds a file; `{cid, size}`.
    pub async fn add(&self, data: impl Into<bytes::Bytes>, name: Option<&str>) -> Result<Value, Error> {
        let q = query(&[("name", name.map(str::to_owned))]);
        self.session.json(Method::POST, &format!("/v1/files{q}"), Body::Bytes(data.into(), "application/octet-stream")).await
    }
    /// The file's bytes.
    pub async fn cat(&self, cid: &str) -> Result<bytes::Bytes, Error> {
        Ok(self.session.send(Method::GET, &format!("/v1/files/{}", segment(cid)?), Body::None).await?.bytes().await?)
    }
    /// The app's files.
    pub async fn list(&self) -> Result<Vec<Value>, Error> {
        Ok(self.session.json(Method::GET, "/v1/files", Body::None).await?["files"].as_array().cloned().unwrap_or_default())
    }
    /// Unpins a file.
    pub async fn remove(&self, cid: &str) -> Result<(), Error> {
        self.session.json(Method::DELETE, &format!("/v1/files/{}", segment(cid)?), Body::None).await.map(drop)
    }
    /// Serves the file to IPFS peers.
    pub async fn publish(&self, cid: &str) -> Result<Value, Error> {
        self.session.json(Method::POST, &format!("/v1/files/{}/publish", segment(cid)?), Body::None).await
    }
}

/// `db:read` / `db:write`: the app's OrbitDB-compatible databases.
#[derive(Debug, Clone, Copy)]
pub struct Db<'s> {
    pub(crate) session: &'s Session,
}

/// One database (`events`, `documents` or `keyvalue`).
#[derive(Debug, Clone)]
pub struct Database<'s> {
    session: &'s Session,
    /// Its address, `/orbitdb/<cid>`.
    pub address: String,
    /// Its type.
    pub kind: String,
    cid: String,
}

impl<'s> Db<'s> {
    /// Opens (creating if needed) the app's database `name` of `kind`.
    pub async fn open(&self, name: &str, kind: &str) -> Result<Database<'s>, Error> {
        let v = self.session.json(Method::POST, "/v1/db", Body::Json(json!({"name": name, "type": kind}))).await?;
        let address = v["address"].as_str().ok_or_else(|| Error::Invalid("no address".into()))?.to_owned();
        let cid = address.trim_start_matches("/orbitdb/").to_owned();
        Ok(Database { session: self.session, address, kind: v["type"].as_str().unwrap_or(kind).to_owned(), cid })
    }
    /// The app's databases.
    pub async fn list(&self) -> Result<Vec<Value>, Error> {
        Ok(self.session.json(Method::GET, "/v1/db", Body::None).await?["databases"].as_array().cloned().unwrap_or_default())
    }
}

impl Database<'_> {
    /// keyvalue: sets `key`; the entry's hash.
    pub async fn put(&self, key: &str, value: &Value) -> Result<String, Error> {
        let v = self.session.json(Method::PUT, &format!("/v1/db/{}/kv/{}", self.cid, path(key)?), Body::Json(json!({"value": value}))).await?;
        Ok(v["hash"].as_str().unwrap_or("").to_owned())
    }
    /// keyvalue: the value of `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, Error> {
        let v = not_found_is_none(self.session.json(Method::GET, &format!("/v1/db/{}/kv/{}", self.cid, path(key)?), Body::None).await)?;
        Ok(v.map(|v| v["value"].clone()))
    }
    /// keyvalue: deletes `key`.
    pub async fn del(&self, key: &str) -> Result<bool, Error> {
        Ok(not_found_is_none(self.session.json(Method::DELETE, &format!("/v1/db/{}/kv/{}", self.cid, path(key)?), Body::None).await)?.is_some())
    }
    /// keyvalue: every `{key, value, hash}`.
    pub async fn all(&self) -> Result<Vec<Value>, Error> {
        Ok(self.session.json(Method::GET, &format!("/v1/db/{}/kv", self.cid), Body::None).await?["items"].as_array().cloned().unwrap_or_default())
    }
    /// events: appends `value`; the entry's hash.
    pub async fn add(&self, value: &Value) -> Result<String, Error> {
        let v = self.session.json(Method::POST, &format!("/v1/db/{}/events", self.cid), Body::Json(json!({"value": value}))).await?;
        Ok(v["hash"].as_str().unwrap_or("").to_owned())
    }
    /// events: the newest `amount` entries, newest first (like OrbitDB's iterator).
    pub async fn iterator(&self, amount: u32) -> Result<Vec<Value>, Error> {
        let v = self.session.json(Method::GET, &format!("/v1/db/{}/events?amount={amount}", self.cid), Body::None).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }
    /// documents: stores a document (it needs a string `_id`).
    pub async fn put_doc(&self, document: &Value) -> Result<Value, Error> {
        self.session.json(Method::PUT, &format!("/v1/db/{}/docs", self.cid), Body::Json(document.clone())).await
    }
    /// documents: the document `id`, or `None`.
    pub async fn get_doc(&self, id: &str) -> Result<Option<Value>, Error> {
        not_found_is_none(self.session.json(Method::GET, &format!("/v1/db/{}/docs/{}", self.cid, segment(id)?), Body::None).await)
    }
    /// documents: documents whose top-level fields equal those of `filter`.
    pub async fn query(&self, filter: &Value) -> Result<Vec<Value>, Error> {
        let v = self.session.json(Method::POST, &format!("/v1/db/{}/docs/query", self.cid), Body::Json(json!({"where": filter}))).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }
}

/// `chain:read` / `chain:transact`: the user's SELF Chain account.
#[derive(Debug, Clone, Copy)]
pub struct Blockchain<'s> {
    pub(crate) session: &'s Session,
}

impl Blockchain<'_> {
    /// `{address, balance, nonce, height, …}` (balance in base units, as a decimal string).
    pub async fn get_info(&self) -> Result<Value, Error> {
        self.session.json(Method::GET, "/v1/chain/info", Body::None).await
    }
    /// The account's transactions, newest first.
    pub async fn get_transactions(&self, limit: u32, offset: u32) -> Result<Value, Error> {
        self.session.json(Method::GET, &format!("/v1/chain/transactions?limit={limit}&offset={offset}"), Body::None).await
    }
    /// Sends `amount` base units (a decimal string) to `to`; `{hash, height}` once final.
    pub async fn transfer(&self, to: &str, amount: &str) -> Result<Value, Error> {
        self.session.json(Method::POST, "/v1/chain/transactions", Body::Json(json!({"to": to, "amount": amount}))).await
    }
}

/// `crypto:use`: the user's keys, which never leave the instance.
#[derive(Debug, Clone, Copy)]
pub struct Crypto<'s> {
    pub(crate) session: &'s Session,
}

impl Crypto<'_> {
    /// Seals `data` to another user (by `self1…` address); the ciphertext, base64.
    pub async fn encrypt(&self, data: &[u8], recipient: &str) -> Result<String, Error> {
        let v = self.session.json(Method::POST, "/v1/crypto/encrypt", Body::Json(json!({"data": B64.encode(data), "encoding": "base64", "recipient": recipient}))).await?;
        v["ciphertext"].as_str().map(str::to_owned).ok_or_else(|| Error::Invalid("no ciphertext".into()))
    }
    /// Opens a sealed box addressed to this user.
    pub async fn decrypt(&self, ciphertext: &str) -> Result<Vec<u8>, Error> {
        let v = self.session.json(Method::POST, "/v1/crypto/decrypt", Body::Json(json!({"ciphertext": ciphertext}))).await?;
        B64.decode(v["data"].as_str().unwrap_or("")).map_err(|e| Error::Invalid(format!("decrypted data: {e}")))
    }
    /// Signs `data` with the user's identity key: `{signature, public_key, sign_prefix}`.
    pub async fn sign(&self, data: &[u8]) -> Result<Value, Error> {
        self.session.json(Method::POST, "/v1/crypto/sign", Body::Json(json!({"data": B64.encode(data), "encoding": "base64"}))).await
    }
    /// Whether `signature` (from [`Crypto::sign`]) is `public_key`'s over `data`.
    pub async fn verify(&self, data: &[u8], signature: &str, public_key: &str) -> Result<bool, Error> {
        let v = self.session.json(Method::POST, "/v1/crypto/verify", Body::Json(json!({"data": B64.encode(data), "encoding": "base64", "signature": signature, "public_key": public_key}))).await?;
        Ok(v["valid"].as_bool().unwrap_or(false))
    }
}

/// `network:notify`: notifications to other users' inboxes.
#[derive(Debug, Clone, Copy)]
pub struct Network<'s> {
    pub(crate) session: &'s Session,
}

impl Network<'_> {
    /// Delivers `{type, payload}` to the inbox of the user at `recipient` (a `self1…` address).
    pub async fn notify(&self, recipient: &str, kind: &str, payload: &Value) -> Result<Value, Error> {
        self.session.json(Method::POST, "/v1/network/notify", Body::Json(json!({"recipient": recipient, "type": kind, "payload": payload}))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_but_keep_their_slashes() {
        assert_eq!(path("notes/1").unwrap(), "notes/1");
        assert_eq!(path("a b?c#d").unwrap(), "a%20b%3Fc%23d");
        assert_eq!(path("ünï").unwrap(), "%C3%BCn%C3%AF");
        assert_eq!(path("x/a.b..c").unwrap(), "x/a.b..c");
        for bad in ["../x", "x/./y", ".."] {
            assert_eq!(path(bad).unwrap_err().code(), Some(&Code::InvalidArgument), "{bad}");
        }
    }

    #[test]
    fn codes_parse_from_their_wire_spelling() {
        assert_eq!(Code::parse("RATE_LIMITED"), Code::RateLimited);
        assert_eq!(Code::parse("NEW_THING"), Code::Other("NEW_THING".into()));
    }
}
