//! Values between the JSON of our HTTP API and the IPLD data model of entry payloads.
//!
//! JSON → IPLD is lossless: integers stay integers, other numbers become floats. IPLD → JSON
//! writes bytes and links the way DAG-JSON does (`{"/": {"bytes": "<base64>"}}`,
//! `{"/": "<cid>"}`), since JavaScript peers may store both.

use std::collections::BTreeMap;

use base64::Engine;
use ipld_core::ipld::Ipld;
use serde_json::Value;

/// A JSON value as IPLD.
pub fn from_json(value: &Value) -> Ipld {
    match value {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ipld::Integer(i.into()),
            (None, Some(u)) => Ipld::Integer(u.into()),
            // serde_json numbers are i64, u64 or finite f64.
            _ => Ipld::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(items.iter().map(from_json).collect()),
        Value::Object(map) => Ipld::Map(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect::<BTreeMap<_, _>>()),
    }
}

/// An IPLD value as JSON.
pub fn to_json(value: &Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => match (i64::try_from(*i), u64::try_from(*i)) {
            (Ok(i), _) => i.into(),
            (_, Ok(u)) => u.into(),
            // CBOR integers reach ±2^64; beyond what JSON numbers carry exactly, write a string.
            _ => Value::String(i.to_string()),
        },
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => serde_json::json!({ "/": { "bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b) } }),
        Ipld::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Ipld::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Ipld::Link(cid) => serde_json::json!({ "/": cid.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_keeps_integers_apart_from_floats() {
        let json = serde_json::json!({"n": 1, "big": u64::MAX, "neg": -5, "f": 1.5, "s": "x", "a": [null, true], "o": {}});
        let ipld = from_json(&json);
        let Ipld::Map(map) = &ipld else { panic!("a map") };
        assert_eq!(map["n"], Ipld::Integer(1));
        assert_eq!(map["f"], Ipld::Float(1.5));
        assert_eq!(to_json(&ipld), json);
        assert_eq!(to_json(&Ipld::Bytes(vec![1, 2, 3])), serde_json::json!({"/": {"bytes": "AQID"}}));
    }
}
