//! JSON shapes on the wire: the HTTP `DirEntry`, the Go `api.KVPair` that
//! watch handlers read, session objects, and Go's JSON string escaping.
//! Field order follows Consul's Go structs (SPEC.md §3.2, §3.5, §4.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use crate::duration::format_go_duration;
use crate::state::{Entry, Session};

/// `structs.DirEntry` as the KV HTTP endpoint prints it (§3.2). Serialised
/// from a struct, not a `serde_json::Value`, so the Go field order survives.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DirEntry<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    // `json:",omitempty"` in Consul.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
}

/// Go `api.KVPair` as a watch handler gets it: Session always present (§4.3).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ApiKvPair<'a> {
    key: &'a str,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    flags: u64,
    value: Option<String>,
    session: &'a str,
}

/// Session object as `/v1/session/renew|info|list` print it (§3.5).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    node: &'a str,
    lock_delay: u128,
    behavior: &'a str,
    #[serde(rename = "TTL")]
    ttl: &'a str,
    node_checks: Option<&'a [String]>,
    service_checks: Option<()>,
    create_index: u64,
    modify_index: u64,
}

/// Base64 of a value; empty values are `null` (§3.2, [I-875]).
fn value_b64(v: &[u8]) -> Option<String> {
    (!v.is_empty()).then(|| STANDARD.encode(v))
}

/// Serialises to compact JSON with Go's HTML-safe escaping (`json.Marshal`
/// escapes `<`, `>`, `&`, U+2028 and U+2029). Those characters can only occur
/// inside strings in our output, so a textual replacement is exact.
pub fn to_go_json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; fall back to `null`.
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".to_string());
    go_escape(&s).into_bytes()
}

/// Like [`to_go_json`] but indented with four spaces and ending in a
/// newline, for `?pretty`.
pub fn to_go_json_pretty<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if v.serialize(&mut ser).is_err() {
        return b"null".to_vec();
    }
    // Consul appends a newline to an indented answer (Consul 1.8.7).
    let mut text = go_escape(&String::from_utf8_lossy(&out));
    text.push('\n');
    text.into_bytes()
}

fn go_escape(s: &str) -> String {
    if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The HTTP list of entries (a JSON array even for one key, §3.2).
pub fn dir_entries(entries: &[Entry]) -> Vec<DirEntry<'_>> {
    entries
        .iter()
        .map(|e| DirEntry {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: value_b64(&e.value),
            session: e.session.as_deref(),
            create_index: e.create_index,
            modify_index: e.modify_index,
        })
        .collect()
}

/// What a `type=key` watch handler reads on stdin: the api struct or `null`,
/// then `\n` (Go `json.Encoder.Encode`, §4.2–4.3).
pub fn watch_stdin(entry: Option<&Entry>) -> Vec<u8> {
    let mut out = match entry {
        None => b"null".to_vec(),
        Some(e) => to_go_json(&ApiKvPair {
            key: &e.key,
            create_index: e.create_index,
            modify_index: e.modify_index,
            lock_index: e.lock_index,
            flags: e.flags,
            value: value_b64(&e.value),
            session: e.session.as_deref().unwrap_or(""),
        }),
    };
    out.push(b'\n');
    out
}

/// One session as JSON (`LockDelay` in ns, `TTL` as given, §3.5).
pub fn session_json(s: &Session) -> SessionJson<'_> {
    SessionJson {
        id: &s.id,
        name: &s.name,
        node: &s.node,
        lock_delay: s.lock_delay.as_nanos(),
        behavior: s.behavior.as_str(),
        ttl: &s.ttl_text,
        node_checks: Some(&s.node_checks),
        service_checks: None,
        create_index: s.create_index,
        modify_index: s.create_index,
    }
}

/// `GET /v1/agent/self`: the modern stable `Config` subset **without**
/// `SessionTTLMin`, which lives only in `DebugConfig` as a string. Patroni's
/// `adjust_ttl()` then hits `KeyError`, exactly as with real Consul (§0.2).
pub fn agent_self(
    node: &str,
    node_id: &str,
    session_ttl_min: std::time::Duration,
) -> serde_json::Value {
    serde_json::json!({
        "Config": {
            "Datacenter": "dc1",
            "PrimaryDatacenter": "dc1",
            "NodeName": node,
            "NodeID": node_id,
            "Revision": "consul-double",
            "Server": true,
            "Version": "1.21.4",
            "BuildDate": "2025-01-01T00:00:00Z"
        },
        "DebugConfig": {
            "Datacenter": "dc1",
            "NodeName": node,
            "SessionTTLMin": format_go_duration(session_ttl_min),
            "ACLsEnabled": false
        },
        "Coord": null,
        "Member": {
            "Name": node,
            "Addr": "127.0.0.1",
            "Port": 8301,
            "Tags": {"role": "consul", "dc": "dc1"},
            "Status": 1
        },
        "Stats": {},
        "Meta": {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8], session: Option<&str>) -> Entry {
        Entry {
            key: "foo/bar/baz".to_string(),
            value: value.to_vec(),
            create_index: 1793,
            modify_index: 1793,
            lock_index: 0,
            flags: 0,
            session: session.map(str::to_string),
        }
    }

    #[test]
    fn watch_stdin_matches_the_go_api_struct() {
        // The example of §4.3, byte for byte.
        assert_eq!(
            String::from_utf8_lossy(&watch_stdin(Some(&entry(b"hey", None)))),
            "{\"Key\":\"foo/bar/baz\",\"CreateIndex\":1793,\"ModifyIndex\":1793,\"LockIndex\":0,\"Flags\":0,\"Value\":\"aGV5\",\"Session\":\"\"}\n"
        );
        assert_eq!(watch_stdin(None), b"null\n");
    }

    #[test]
    fn dir_entry_order_and_omitempty() {
        let v = to_go_json(&dir_entries(&[entry(b"", None)]));
        assert_eq!(
            String::from_utf8_lossy(&v),
            "[{\"LockIndex\":0,\"Key\":\"foo/bar/baz\",\"Flags\":0,\"Value\":null,\"CreateIndex\":1793,\"ModifyIndex\":1793}]"
        );
    }

    #[test]
    fn go_escapes_html() {
        assert_eq!(to_go_json("a<b>&"), b"\"a\\u003cb\\u003e\\u0026\"");
    }
}
