//! `crypto:use` (SPEC §5): the user's keys at work without ever leaving the instance.
//!
//! * `POST /v1/crypto/sign` signs with the user's ed25519 identity key. The signed message is
//!   `selfcloud/crypto/sign/v1\n` followed by the data: the prefix keeps an app from obtaining a
//!   signature that could count as one of the user's chain transactions (those sign a different,
//!   namespaced payload) or any other protocol message of this key.
//! * `POST /v1/crypto/verify` checks such a signature for any public key.
//! * `POST /v1/crypto/encrypt` encrypts to another user: their X25519 key is looked up in the chain's
//!   instance directory and checked against a finalized block (a validator cannot substitute a key),
//!   then the data is sealed as a libsodium sealed box (`crypto_box_seal`: ephemeral X25519,
//!   XSalsa20-Poly1305), so any libsodium can open it with the recipient's key.
//! * `POST /v1/crypto/decrypt` opens a sealed box addressed to this user.
//!
//! Data is UTF-8 text by default, or base64 with `"encoding": "base64"`; binary results are base64.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use selfcloud_chain::Address;
use selfcloud_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use crate::api::{json_response, Ctx, Shared};

/// What a signature from `/v1/crypto/sign` covers before the data.
pub const SIGN_PREFIX: &[u8] = b"selfcloud/crypto/sign/v1\n";
/// The largest data one call takes.
const DATA_BYTES_MAX: usize = 64 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/crypto/keys", get(keys))
        .route("/v1/crypto/sign", post(sign))
        .route("/v1/crypto/verify", post(verify))
        .route("/v1/crypto/encrypt", post(encrypt))
        .route("/v1/crypto/decrypt", post(decrypt))
}

#[derive(Deserialize)]
struct DataIn {
    data: String,
    #[serde(default)]
    encoding: Option<String>,
}

impl DataIn {
    fn bytes(&self, ctx: &Ctx) -> Result<Vec<u8>, ApiError> {
        let bytes = match self.encoding.as_deref() {
            None | Some("utf8") => self.data.as_bytes().to_vec(),
            Some("base64") => B64.decode(&self.data).map_err(|_| ctx.fail(ApiError::invalid("data is not valid base64")))?,
            Some(other) => return Err(ctx.fail(ApiError::invalid(format!("encoding {other:?} is not \"utf8\" or \"base64\"")))),
        };
        if bytes.len() > DATA_BYTES_MAX {
            return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, format!("data may be at most {DATA_BYTES_MAX} bytes"))));
        }
        Ok(bytes)
    }
}

fn ok(body: serde_json::Value) -> Response {
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

fn signed_message(data: &[u8]) -> Vec<u8> {
    [SIGN_PREFIX, data].concat()
}

async fn keys(State(state): State<Shared>) -> Response {
    ok(json!({
        "signing_key": state.identity_public,
        "encryption_key": selfcloud_core::hex(&state.identity.encryption_public()),
        "address": state.chain.as_ref().map(|c| c.address.to_string()),
        "sign_prefix": String::from_utf8_lossy(SIGN_PREFIX),
    }))
}

async fn sign(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: DataIn = crate::ai::parse_json(&ctx, &body)?;
    let data = input.bytes(&ctx)?;
    let signature = state.identity.sign(&signed_message(&data));
    Ok(ok(json!({"signature": B64.encode(signature), "public_key": state.identity_public, "algorithm": "ed25519", "sign_prefix": String::from_utf8_lossy(SIGN_PREFIX)})))
}

#[derive(Deserialize)]
struct VerifyIn {
    #[serde(flatten)]
    data: DataIn,
    signature: String,
    public_key: String,
}

async fn verify(ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: VerifyIn = crate::ai::parse_json(&ctx, &body)?;
    let data = input.data.bytes(&ctx)?;
    let key: [u8; 32] = selfcloud_core::unhex(&input.public_key, 32)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ctx.fail(ApiError::invalid("public_key must be 64 hex characters")))?;
    let signature: [u8; 64] = B64.decode(&input.signature).ok().and_then(|s| s.try_into().ok()).ok_or_else(|| ctx.fail(ApiError::invalid("signature must be 64 bytes of base64")))?;
    let valid = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map(|k| k.verify_strict(&signed_message(&data), &ed25519_dalek::Signature::from_bytes(&signature)).is_ok())
        .unwrap_or(false);
    Ok(ok(json!({"valid": valid})))
}

#[derive(Deserialize)]
struct EncryptIn {
    #[serde(flatten)]
    data: DataIn,
    recipient: String,
}

async fn encrypt(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: EncryptIn = crate::ai::parse_json(&ctx, &body)?;
    let data = input.data.bytes(&ctx)?;
    let recipient: Address = input.recipient.parse().map_err(|_| ctx.fail(ApiError::invalid("recipient must be a self1… address")))?;
    let Some(chain) = state.chain.as_ref() else {
        return Err(ctx.fail(ApiError::new(ErrorCode::Unavailable, "this instance is not connected to the SELF Chain, where recipients' keys are published")));
    };
    let entry = chain.verified_directory(&recipient).await.map_err(|e| ctx.fail(e.into_api()))?;
    let Some((_, key)) = entry else {
        return Err(ctx.fail(ApiError::not_found(format!("{recipient} has no instance in the chain directory"))));
    };
    let sealed = crypto_box::PublicKey::from_bytes(key).seal(&mut crypto_box::aead::OsRng, &data).map_err(|_| ctx.fail(ApiError::internal()))?;
    Ok(ok(json!({"ciphertext": B64.encode(sealed), "recipient": recipient.to_string(), "encryption_key": selfcloud_core::hex(&key), "algorithm": "libsodium-sealed-box (X25519, XSalsa20-Poly1305)"})))
}

#[derive(Deserialize)]
struct DecryptIn {
    ciphertext: String,
}

async fn decrypt(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: DecryptIn = crate::ai::parse_json(&ctx, &body)?;
    let sealed = B64.decode(&input.ciphertext).map_err(|_| ctx.fail(ApiError::invalid("ciphertext is not valid base64")))?;
    if sealed.len() > DATA_BYTES_MAX + 48 {
        return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, "ciphertext too large")));
    }
    let plain = state.identity.encryption_secret().unseal(&sealed).map_err(|_| ctx.fail(ApiError::invalid("this is not a sealed box addressed to this user, or it was altered")))?;
    let text = String::from_utf8(plain.clone()).ok();
    Ok(ok(json!({"data": B64.encode(&plain), "text": text})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_box_opens_only_for_its_recipient() {
        let alice = crypto_box::SecretKey::from_bytes([1u8; 32]);
        let bob = crypto_box::SecretKey::from_bytes([2u8; 32]);
        let sealed = bob.public_key().seal(&mut crypto_box::aead::OsRng, b"for bob").unwrap();
        assert_eq!(bob.unseal(&sealed).unwrap(), b"for bob");
        assert!(alice.unseal(&sealed).is_err());
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(bob.unseal(&altered).is_err());
    }

    #[test]
    fn signatures_cover_the_prefix() {
        assert!(signed_message(b"x").starts_with(b"selfcloud/crypto/sign/v1\n"));
        // A chain transaction's payload starts with commonware's namespace length (a varint), never
        // with the prefix's first byte.
        assert_ne!(SIGN_PREFIX[0], b"SELF-CHAIN-TX-V1".len() as u8);
    }
}
