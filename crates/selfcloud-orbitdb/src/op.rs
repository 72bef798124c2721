//! What the three store types put in entry payloads, as OrbitDB writes them:
//! `{op: 'PUT', key, value}`, `{op: 'DEL', key, value: null}` (keyvalue and documents) and
//! `{op: 'ADD', key: null, value}` (events).

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;

/// A store type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An append-only event log (`ADD`).
    Events,
    /// Last-writer-wins keys (`PUT`/`DEL`).
    KeyValue,
    /// JSON documents keyed by a field, `_id` by default (`PUT`/`DEL`).
    Documents,
}

impl Kind {
    /// OrbitDB's name for it, as manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::KeyValue => "keyvalue",
            Kind::Documents => "documents",
        }
    }

    /// From a manifest's `type`.
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "events" => Some(Kind::Events),
            "keyvalue" => Some(Kind::KeyValue),
            "documents" => Some(Kind::Documents),
            _ => None,
        }
    }

    /// Whether `op` is one this store type writes.
    pub fn accepts(self, op: &Op) -> bool {
        matches!((self, op), (Kind::Events, Op::Add { .. }) | (Kind::KeyValue | Kind::Documents, Op::Put { .. } | Op::Del { .. }))
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key (for documents, the document's index field).
        key: String,
        /// The value (for documents, the whole document).
        value: Ipld,
    },
    /// Remove `key`.
    Del {
        /// The key.
        key: String,
    },
    /// Append an event.
    Add {
        /// The event.
        value: Ipld,
    },
}

impl Op {
    /// The entry payload.
    pub fn payload(&self) -> Ipld {
        let (op, key, value) = match self {
            Op::Put { key, value } => ("PUT", Ipld::String(key.clone()), value.clone()),
            Op::Del { key } => ("DEL", Ipld::String(key.clone()), Ipld::Null),
            Op::Add { value } => ("ADD", Ipld::Null, value.clone()),
        };
        Ipld::Map(BTreeMap::from([("op".to_owned(), Ipld::String(op.into())), ("key".to_owned(), key), ("value".to_owned(), value)]))
    }

    /// Read a payload; `None` for anything that is not one of the three operations (such an entry
    /// is kept in the log, as OrbitDB keeps it, but changes no state).
    pub fn from_payload(payload: &Ipld) -> Option<Op> {
        let Ipld::Map(map) = payload else { return None };
        let Some(Ipld::String(op)) = map.get("op") else { return None };
        let key = match map.get("key") {
            Some(Ipld::String(k)) => Some(k.clone()),
            _ => None,
        };
        let value = map.get("value").cloned().unwrap_or(Ipld::Null);
        match op.as_str() {
            "PUT" => Some(Op::Put { key: key?, value }),
            "DEL" => Some(Op::Del { key: key? }),
            "ADD" => Some(Op::Add { value }),
            _ => None,
        }
    }
}

/// Where an append's `refs` point: the entries at distances 2, 4, 8, … (up to `max`) from the
/// new entry in the log's order, newest first — so a replica that has the head can fetch older
/// parts of the log in parallel instead of one `next` at a time. `recent[0]` is the current
/// newest entry (distance 1).
pub fn refs<'a>(recent: impl IntoIterator<Item = &'a String>, max: usize) -> Vec<String> {
    let mut refs = Vec::new();
    let mut distance = 2usize;
    for (index, hash) in recent.into_iter().enumerate() {
        if refs.len() == max {
            break;
        }
        if index + 1 == distance {
            refs.push(hash.clone());
            distance *= 2;
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_refs_double() {
        for op in [Op::Put { key: "k".into(), value: Ipld::Integer(1) }, Op::Del { key: "k".into() }, Op::Add { value: Ipld::String("e".into()) }] {
            assert_eq!(Op::from_payload(&op.payload()), Some(op));
        }
        assert_eq!(Op::from_payload(&Ipld::String("x".into())), None);
        let recent: Vec<String> = (1..=20).map(|d| format!("d{d}")).collect();
        assert_eq!(refs(&recent, 16), ["d2", "d4", "d8", "d16"]);
        assert_eq!(refs(&recent, 2), ["d2", "d4"]);
    }
}
