//! The only module that speaks HTTP to Consul: KV reads and check-and-set writes.
//!
//! Every call carries its own timeout, cut to the time left before the run's
//! deadline. Failures to reach Consul (connect, timeout, 5xx) are temporary
//! (exit 75); a 403 or a malformed answer is a failure (exit 1). The token
//! travels only in the `X-Consul-Token` header, marked sensitive, and no error
//! message carries it.

use crate::config::ConsulConfig;
use crate::error::{Error, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// One KV entry as Consul returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Decoded value (`null` becomes empty).
    pub value: Vec<u8>,
    /// ModifyIndex, for check-and-set.
    pub modify_index: u64,
    /// Session holding the key, if any.
    pub session: Option<String>,
}

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
    deadline: Instant,
    /// Why no call can be made (unreadable token or CA file, bad client
    /// setup). Kept rather than returned by `new`, so that work that needs no
    /// Consul (removing the VIP) still happens; every call returns it.
    broken: Option<Error>,
}

impl Consul {
    /// Builds the client; `deadline` is when the whole run must end. Setup
    /// errors surface on the first call.
    pub fn new(cfg: &ConsulConfig, deadline: Instant) -> Self {
        let mut broken = None;
        let mut builder = reqwest::Client::builder()
            // The agent is local; a proxy from the environment must not be used.
            .no_proxy()
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(1)
            .user_agent(concat!("patroni-hook/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            match read_ca(ca) {
                Ok(certs) => {
                    for c in certs {
                        builder = builder.add_root_certificate(c);
                    }
                }
                Err(e) => broken = Some(e),
            }
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                broken.get_or_insert(Error::failed("building the Consul HTTP client", e));
                reqwest::Client::new()
            }
        };
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
            deadline,
            broken,
        }
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
        check_status(status, &body, &what)?;
        let raw: Vec<RawEntry> = serde_json::from_slice(&body)
            .map_err(|e| Error::failed(&what, format!("unexpected answer: {e}")))?;
        raw.into_iter()
            .map(|r| {
                let value = match r.value {
                    None => Vec::new(),
                    Some(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|e| {
                            Error::failed(&what, format!("value of {} is not base64: {e}", r.key))
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
        let body = self.body(resp, what).await?;
        check_status(status, &body, what)?;
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(Error::failed(
                what,
                format!(
                    "unexpected answer {:?}",
                    String::from_utf8_lossy(&other[..other.len().min(80)])
                ),
            )),
        }
    }

    /// The timeout for the next call: the per-call timeout, cut to the time left.
    fn call_timeout(&self, what: &str) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::temporary(what, "run deadline reached"));
        }
        Ok(self.timeout.min(left))
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
        let mut req = self.client.request(method, url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        // The whole call, including the body read below, is also bounded by
        // tokio's timer: reqwest's timeout covers it, this is belt and braces.
        match tokio::time::timeout(timeout + Duration::from_millis(50), req.send()).await {
            Err(_) => Err(Error::temporary(
                what,
                format!("no answer within {}", fmt_dur(timeout)),
            )),
            Ok(Err(e)) => Err(transport_error(what, &e, timeout)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    async fn body(&self, resp: reqwest::Response, what: &str) -> Result<Vec<u8>> {
        let timeout = self.call_timeout(what)?;
        match tokio::time::timeout(timeout, resp.bytes()).await {
            Err(_) => Err(Error::temporary(what, "answer body not received in time")),
            Ok(Err(e)) => Err(transport_error(what, &e, timeout)),
            Ok(Ok(b)) => Ok(b.to_vec()),
        }
    }
}

/// Reads a PEM bundle of CA certificates.
fn read_ca(ca: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(ca)
        .map_err(|e| Error::usage(format!("reading consul.ca_file {}: {e}", ca.display())))?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::usage(format!(
            "consul.ca_file {}: not a PEM bundle: {e}",
            ca.display()
        ))
    })
}

fn check_status(status: reqwest::StatusCode, body: &[u8], what: &str) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string();
    let cause = if text.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {text}", status.as_u16())
    };
    if status == reqwest::StatusCode::FORBIDDEN {
        Err(Error::failed(
            what,
            format!("{cause} (check the Consul token and its ACL policy)"),
        ))
    } else if status.is_server_error() {
        // A Consul server without a leader answers 500 "No cluster leader": temporary.
        Err(Error::temporary(what, cause))
    } else {
        Err(Error::failed(what, cause))
    }
}

fn transport_error(what: &str, e: &reqwest::Error, timeout: Duration) -> Error {
    if e.is_timeout() {
        return Error::temporary(what, format!("no answer within {}", fmt_dur(timeout)));
    }
    // reqwest's Display hides the cause ("error sending request"); walk the chain
    // for the part an operator needs ("Connection refused").
    let mut cause = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if e.is_connect() || e.is_request() || e.is_body() {
        Error::temporary(what, format!("unreachable: {cause}"))
    } else {
        Error::failed(what, cause)
    }
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
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
        let e =
            check_status(reqwest::StatusCode::FORBIDDEN, b"Permission denied", "w").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let e = check_status(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            b"No cluster leader",
            "w",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 75);
        assert!(e.to_string().contains("No cluster leader"));
    }
}
