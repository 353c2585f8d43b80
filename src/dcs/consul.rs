//! The only module that speaks HTTP to Consul: KV reads and check-and-set writes.
//!
//! Every call carries its own timeout, cut to the time left before the
//! Consul part of the run's budget ends. Failures to reach Consul (connect,
//! timeout, 429, 5xx) are temporary (exit 75); a 403, a redirect, a malformed
//! or oversized answer, or a TLS verification failure is a failure (exit 1).
//! The token travels only in the `X-Consul-Token` header, marked sensitive,
//! only to the configured origin (redirects are never followed), and no error
//! message carries it.

use crate::config::ConsulConfig;
use crate::dcs::{http, Entry};
use crate::error::{Error, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::cell::Cell;
use std::time::{Duration, Instant};

pub use super::http::MAX_ANSWER;

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: Option<String>,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
    #[serde(rename = "Session", default)]
    session: Option<String>,
}

/// A client for the local Consul agent.
pub struct Consul {
    client: reqwest::Client,
    base: String,
    token: Option<reqwest::header::HeaderValue>,
    timeout: Duration,
    deadline: Cell<Instant>,
    /// The CA file, named when TLS verification fails.
    ca_file: Option<std::path::PathBuf>,
    /// Why no call can be made (unreadable token or CA file, bad client
    /// setup). Kept rather than returned by `new`, so that work that needs no
    /// Consul (removing the VIP) still happens; every call returns it.
    broken: Option<Error>,
}

impl Consul {
    /// Builds the client; `deadline` is when the Consul part of the run must
    /// end. Setup errors surface on the first call.
    pub fn new(cfg: &ConsulConfig, deadline: Instant) -> Self {
        let (client, mut broken) = http::client(
            cfg.timeout,
            cfg.ca_file.as_deref().map(|ca| (ca, "consul.ca_file")),
            None,
        );
        let token = match &cfg.token {
            Ok(None) => None,
            Err(e) => {
                broken.get_or_insert(e.clone());
                None
            }
            Ok(Some(t)) => match reqwest::header::HeaderValue::from_str(t.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some(v)
                }
                Err(_) => {
                    broken.get_or_insert(Error::usage(
                        "the Consul token holds characters not allowed in an HTTP header",
                    ));
                    None
                }
            },
        };
        Consul {
            client,
            base: cfg.url.clone(),
            token,
            timeout: cfg.timeout,
            deadline: Cell::new(deadline),
            ca_file: cfg.ca_file.clone(),
            broken,
        }
    }

    /// Moves the end of the Consul part of the run (the record step after the
    /// local change gets the time the local steps left over).
    pub fn set_deadline(&self, deadline: Instant) {
        self.deadline.set(deadline);
    }

    /// The setup error every call would return, if any (for check-config).
    pub fn setup_error(&self) -> Option<&Error> {
        self.broken.as_ref()
    }

    /// The agent's base URL (for messages).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Reads one key; `None` when it does not exist.
    pub async fn get(&self, key: &str, consistent: bool) -> Result<Option<Entry>> {
        let q = if consistent { "?consistent=" } else { "" };
        let mut v = self.get_entries(key, q).await?;
        Ok(v.pop())
    }

    /// Reads a scope (`prefix`, ending in `/`) in one call, and when nothing
    /// comes back, reads `probe` (a key under it that the hook needs) once
    /// more on its own: Consul 1.8 answers a recursive read of a prefix the
    /// token may not read with 404, as if empty, where newer versions send
    /// `X-Consul-Results-Filtered-By-ACLs`. A direct read says 403. An empty
    /// scope the token may read stays empty; one it may not is a failure
    /// (exit 1), never "temporary".
    pub async fn list_scope(
        &self,
        prefix: &str,
        probe: &str,
        consistent: bool,
    ) -> Result<Vec<Entry>> {
        let entries = self.list(prefix, consistent).await?;
        self.check_hidden(prefix, &entries, probe).await?;
        Ok(entries)
    }

    /// For a read of `prefix` that came back as `entries`: when `probe` is
    /// not among them, reads it on its own, and fails when the token may
    /// not read it. Also a partly filtered read: a token that may read some
    /// of the prefix but not `probe` gets the rest, and "no leader key"
    /// would read as a failover under way (exit 75) at every run.
    pub async fn check_hidden(&self, prefix: &str, entries: &[Entry], probe: &str) -> Result<()> {
        if entries.iter().any(|e| e.key == probe) {
            return Ok(());
        }
        let how = if entries.is_empty() {
            "reads as empty"
        } else {
            "reads without this key"
        };
        match self.check_readable(probe).await {
            Ok(()) => Ok(()),
            // The read was answered: a probe that times out or meets a
            // Consul without a leader leaves that answer as it is (nothing
            // there, or no leader key: keep, 75); taking it for
            // "unreachable" would let a promotion add the VIP on an answer
            // that named no leader.
            Err(e) if e.kind() == crate::error::Kind::Temporary => Ok(()),
            Err(e) => Err(e.context(format!(
                "{prefix} {how}, which Consul 1.8 also answers when the token may not read it"
            ))),
        }
    }

    /// Reads `key` for its answer code only: Ok when the token may read it
    /// (present or not), the 403 (or any other failure) otherwise.
    pub async fn check_readable(&self, key: &str) -> Result<()> {
        self.get(key, false).await.map(drop)
    }

    /// Whether the token may write `key`, without writing it: a
    /// check-and-set at an index no key has is refused with `false` by a
    /// token that may write, and with 403 by one that may not. A delete needs
    /// the same `key` write permission in Consul's ACL model.
    pub async fn check_writable(&self, key: &str) -> Result<()> {
        match self.put_cas(key, b"", u64::MAX).await? {
            false => Ok(()),
            // Not possible for a real Consul: no ModifyIndex reaches u64::MAX.
            true => Err(Error::failed(
                format!("writing {key} to Consul {}", self.base),
                "a check-and-set at index 18446744073709551615 succeeded; not a Consul agent?",
            )),
        }
    }

    /// Reads every key under `prefix` (which should end in `/`) in one call.
    pub async fn list(&self, prefix: &str, consistent: bool) -> Result<Vec<Entry>> {
        let q = if consistent {
            "?recurse=&consistent="
        } else {
            "?recurse="
        };
        self.get_entries(prefix, q).await
    }

    async fn get_entries(&self, key: &str, query: &str) -> Result<Vec<Entry>> {
        let what = format!("reading {key} from Consul {}", self.base);
        let resp = self
            .send(reqwest::Method::GET, key, query, None, &what)
            .await?;
        let status = resp.status();
        // Consul hides keys the token may not read from a recursive read and
        // says so in this header; a fence that cannot see the leader key must
        // not take "no leader" for an answer.
        let filtered = resp
            .headers()
            .get("X-Consul-Results-Filtered-By-ACLs")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if filtered {
            return Err(Error::failed(
                &what,
                "some keys are hidden by Consul ACLs (the token needs key_prefix read on this prefix)",
            ));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let body = self.body(resp, &what).await?;
        check_status(status, &self.redact(&body), &what)?;
        // A parse error may quote the answer (serde_json quotes a string it
        // did not expect; a bad value is named by its key): redacted too.
        let redacted = |e: Error| {
            Error::new(
                e.kind(),
                String::from_utf8_lossy(&self.redact(e.message().as_bytes())),
            )
        };
        let raw: Vec<RawEntry> = serde_json::from_slice(&body)
            .map_err(|e| redacted(Error::failed(&what, format!("unexpected answer: {e}"))))?;
        raw.into_iter()
            .map(|r| {
                let value = match r.value {
                    None => Vec::new(),
                    Some(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|e| {
                            redacted(Error::failed(
                                &what,
                                format!("value of {} is not base64: {e}", r.key),
                            ))
                        })?,
                };
                Ok(Entry {
                    key: r.key,
                    value,
                    modify_index: r.modify_index,
                    session: r.session.filter(|s| !s.is_empty()),
                })
            })
            .collect()
    }

    /// Writes `value` only if the key's ModifyIndex is `cas` (0: only if absent).
    pub async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool> {
        let what = format!("writing {key} to Consul {}", self.base);
        let q = format!("?cas={cas}");
        let resp = self
            .send(reqwest::Method::PUT, key, &q, Some(value.to_vec()), &what)
            .await?;
        self.bool_answer(resp, &what).await
    }

    /// Writes `value` whatever the key holds.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let what = format!("writing {key} to Consul {}", self.base);
        let resp = self
            .send(reqwest::Method::PUT, key, "", Some(value.to_vec()), &what)
            .await?;
        match self.bool_answer(resp, &what).await? {
            true => Ok(()),
            false => Err(Error::failed(&what, "Consul answered false")),
        }
    }

    /// Deletes the key whatever it holds (absent is success).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let what = format!("deleting {key} from Consul {}", self.base);
        let resp = self
            .send(reqwest::Method::DELETE, key, "", None, &what)
            .await?;
        self.bool_answer(resp, &what).await.map(drop)
    }

    /// Deletes the key only if its ModifyIndex is `cas`.
    pub async fn delete_cas(&self, key: &str, cas: u64) -> Result<bool> {
        let what = format!("deleting {key} from Consul {}", self.base);
        let q = format!("?cas={cas}");
        let resp = self
            .send(reqwest::Method::DELETE, key, &q, None, &what)
            .await?;
        self.bool_answer(resp, &what).await
    }

    async fn bool_answer(&self, resp: reqwest::Response, what: &str) -> Result<bool> {
        let status = resp.status();
        let body = self.redact(&self.body(resp, what).await?);
        check_status(status, &body, what)?;
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(Error::failed(
                what,
                format!(
                    "unexpected answer {}",
                    crate::dcs::keys::shown(&String::from_utf8_lossy(other))
                ),
            )),
        }
    }

    /// An answer's body with the token taken out, before any of it can be
    /// quoted in a message: something answering for Consul (a proxy, a
    /// misbehaving agent) may echo the token it was sent. Done on the whole
    /// body, before a message clips it, so no prefix of the token is left.
    fn redact(&self, body: &[u8]) -> Vec<u8> {
        match &self.token {
            Some(t) => http::redact(body, &[(t.as_bytes(), "token")]),
            None => body.to_vec(),
        }
    }

    /// The timeout for the next call: the per-call timeout, cut to the time left.
    fn call_timeout(&self, what: &str) -> Result<Duration> {
        http::call_timeout(self.timeout, self.deadline.get(), what)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<reqwest::Response> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let timeout = self.call_timeout(what)?;
        let url = format!("{}/v1/kv/{}{}", self.base, encode_key(key), query);
        let mut req = self.client.request(method, url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        http::send(req, timeout, what, &self.ca())
            .await
            .map_err(|e| e.error)
    }

    fn ca(&self) -> http::Ca<'_> {
        http::Ca {
            key: "consul.ca_file",
            file: self.ca_file.as_ref(),
        }
    }

    async fn body(&self, resp: reqwest::Response, what: &str) -> Result<Vec<u8>> {
        let timeout = self.call_timeout(what)?;
        http::body(resp, timeout, what, &self.ca()).await
    }
}

fn check_status(status: reqwest::StatusCode, body: &[u8], what: &str) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        // Never followed (the token would go with it); a Consul agent does
        // not redirect, so this is something else answering.
        return Err(Error::failed(
            what,
            format!("HTTP {}: a redirect, not followed", status.as_u16()),
        ));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let cause = http::cause(status, &text);
    if status == reqwest::StatusCode::FORBIDDEN {
        // Not temporary: a token lacks a permission until an operator acts.
        // Consul's own text ("Permission denied", "ACL not found") never
        // carries the token.
        let why = if text.contains("ACL not found") {
            "Consul does not know this token (revoked, expired or mistyped; check consul.token_file, or $CONSUL_HTTP_TOKEN without one)"
        } else {
            "permission denied by Consul's ACL (the token's policy lacks this key)"
        };
        Err(Error::failed(what, format!("{why} ({cause})")))
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        // A Consul server without a leader answers 500 "No cluster leader";
        // 429 is the agent's per-client limit (`limits.http_max_conns_per_client`).
        // Both pass.
        Err(Error::temporary(what, cause))
    } else {
        Err(Error::failed(what, cause))
    }
}

/// Percent-encodes a key path, keeping `/` (Patroni writes member names and
/// scopes that may hold characters a URL path cannot carry as they are).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_but_slashes_kept() {
        assert_eq!(encode_key("service/batman/leader"), "service/batman/leader");
        assert_eq!(encode_key("service/a b/x?y"), "service/a%20b/x%3Fy");
    }

    #[test]
    fn status_mapping() {
        let e = check_status(
            reqwest::StatusCode::FORBIDDEN,
            b"Permission denied",
            "reading k",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            r#"reading k: permission denied by Consul's ACL (the token's policy lacks this key) (HTTP 403: "Permission denied")"#
        );
        let e = check_status(reqwest::StatusCode::FORBIDDEN, b"ACL not found", "w").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("does not know this token"), "{e}");
        let e = check_status(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            b"No cluster leader",
            "w",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 75);
        assert!(e.to_string().contains("No cluster leader"));
        let e =
            check_status(reqwest::StatusCode::TOO_MANY_REQUESTS, b"slow down", "w").unwrap_err();
        assert_eq!(e.exit_code(), 75);
        let e = check_status(reqwest::StatusCode::TEMPORARY_REDIRECT, b"", "w").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("redirect"), "{e}");
        let e = check_status(reqwest::StatusCode::BAD_REQUEST, b"a\nb\x1b", "w").unwrap_err();
        assert!(e.to_string().contains(r"a\nb\u{1b}"), "{e}");
    }
}
