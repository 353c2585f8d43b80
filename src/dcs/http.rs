//! What Consul's and etcd's clients share: one bounded HTTP call, a bounded
//! body, and the way a transport failure becomes an exit code.
//!
//! Failures to reach the DCS (connect, timeout, 429, 5xx) are temporary
//! (exit 75); a TLS verification failure, a redirect, or an oversized answer
//! is a failure (exit 1).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest answer read from the DCS. A recursive read of a namespace
/// with 1,000 Patroni clusters (leader, three members, config, history,
/// status...) is a few MiB of JSON; past this the answer is refused, not
/// buffered.
pub const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// A client for one DCS: no proxy from the environment (the DCS is local or
/// on the cluster's network), redirects never followed (a token or password
/// goes to the configured origin and nowhere else), trusting only `ca`.
/// `identity` is a client certificate and key, PEM.
pub fn client(
    connect_timeout: Duration,
    ca: Option<(&Path, &str)>,
    identity: Option<(&Path, &Path, &str)>,
) -> (reqwest::Client, Option<Error>) {
    let mut broken = None;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(1)
        .user_agent(concat!("patroni-hook/", env!("CARGO_PKG_VERSION")));
    if let Some((ca, key)) = ca {
        match crate::tls::read_ca(ca, key) {
            Ok(certs) => {
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
            Err(e) => broken = Some(e),
        }
    }
    if let Some((cert, key, setting)) = identity {
        let pem = std::fs::read(cert).and_then(|mut c| {
            c.push(b'\n');
            c.extend(std::fs::read(key)?);
            Ok(c)
        });
        match pem.map_err(|e| e.to_string()).and_then(|pem| {
            reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("not a PEM certificate and key: {e}"))
        }) {
            Ok(id) => builder = builder.identity(id),
            Err(e) => {
                broken.get_or_insert(Error::usage(format!(
                    "{setting} {} and {}: {e}",
                    cert.display(),
                    key.display()
                )));
            }
        }
    }
    match builder.build() {
        Ok(c) => (c, broken),
        Err(e) => (
            reqwest::Client::new(),
            Some(broken.unwrap_or_else(|| Error::failed("building the HTTP client", e))),
        ),
    }
}

/// The timeout for the next call: the per-call timeout, cut to the time
/// left before `deadline`.
pub fn call_timeout(timeout: Duration, deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::temporary(what, "run deadline reached"));
    }
    Ok(timeout.min(left))
}

/// A call that failed before an answer, and whether it surely never
/// reached the server (no connection was made): only then may a write be
/// tried on another server without the risk of applying it twice.
pub struct SendError {
    pub error: Error,
    pub not_sent: bool,
}

/// Sends `req`, bounded by `timeout` (reqwest's own, and tokio's timer as
/// belt and braces).
pub async fn send(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    what: &str,
    ca: &Ca<'_>,
) -> std::result::Result<reqwest::Response, SendError> {
    match tokio::time::timeout(
        timeout + Duration::from_millis(50),
        req.timeout(timeout).send(),
    )
    .await
    {
        Err(_) => Err(SendError {
            error: Error::temporary(what, format!("no answer within {}", fmt_dur(timeout))),
            not_sent: false,
        }),
        Ok(Err(e)) => Err(SendError {
            error: ca.transport_error(what, &e, timeout),
            not_sent: e.is_connect(),
        }),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Reads a whole body, at most `MAX_ANSWER` bytes, within `timeout`.
pub async fn body(
    mut resp: reqwest::Response,
    timeout: Duration,
    what: &str,
    ca: &Ca<'_>,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_large(what));
    }
    let read = async {
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if out.len() + chunk.len() > MAX_ANSWER {
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(Error::temporary(what, "answer body not received in time")),
        Ok(Err(e)) => Err(ca.transport_error(what, &e, timeout)),
        Ok(Ok(None)) => Err(too_large(what)),
        Ok(Ok(Some(b))) => Ok(b),
    }
}

/// The CA setting a TLS failure is blamed on (`consul.ca_file`).
pub struct Ca<'a> {
    /// The setting's name.
    pub key: &'a str,
    /// Its value, if set.
    pub file: Option<&'a PathBuf>,
}

impl Ca<'_> {
    /// A transport error, naming the CA setting when it is TLS verification.
    pub fn transport_error(&self, what: &str, e: &reqwest::Error, timeout: Duration) -> Error {
        if let Some(tls) = tls_cause(e) {
            let ca = match self.file {
                Some(p) => format!("{} {}", self.key, p.display()),
                None => format!("no {}", self.key),
            };
            return match tls {
                rustls::Error::InvalidCertificate(_) => Error::failed(
                    what,
                    format!("TLS verification failed (trusting only {ca}): {tls}"),
                ),
                _ => Error::failed(
                    what,
                    format!(
                        "TLS handshake failed (does the server speak https at this address?): {tls}"
                    ),
                ),
            };
        }
        transport_error(what, e, timeout)
    }
}

/// `body` with every secret in `secrets` replaced by `<name>`, before any of
/// it can be quoted in a message: something answering for the DCS (a
/// proxy, a misbehaving server) may echo what it was sent. Done on the
/// whole body, before a message clips it, so no prefix of a secret is left.
pub fn redact(body: &[u8], secrets: &[(&[u8], &str)]) -> Vec<u8> {
    let mut out = body.to_vec();
    for (secret, name) in secrets {
        if secret.is_empty() {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(at) = rest.windows(secret.len()).position(|w| w == *secret) {
            next.extend_from_slice(&rest[..at]);
            next.extend_from_slice(format!("<{name}>").as_bytes());
            rest = &rest[at + secret.len()..];
        }
        next.extend_from_slice(rest);
        out = next;
    }
    out
}

/// "HTTP 403: <the answer's text>" (the text shown escaped, at most 200
/// bytes of it read), or "HTTP 403" without one.
pub fn cause(status: reqwest::StatusCode, text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!(
            "HTTP {}: {}",
            status.as_u16(),
            crate::dcs::keys::shown(text)
        )
    }
}

pub fn too_large(what: &str) -> Error {
    Error::failed(
        what,
        format!(
            "answer larger than {} MiB; refused",
            MAX_ANSWER / 1024 / 1024
        ),
    )
}

/// The rustls error among a transport error's causes: a certificate the CA
/// file does not vouch for, or a name the certificate does not cover.
/// hyper-util wraps it in an `io::Error` inside another `io::Error`, whose
/// `source()` skips the wrapped error itself, so `get_ref` is followed too.
fn tls_cause(e: &reqwest::Error) -> Option<rustls::Error> {
    fn find(e: &(dyn std::error::Error + 'static), depth: u8) -> Option<rustls::Error> {
        if depth > 16 {
            return None;
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = find(inner, depth + 1) {
                return Some(t);
            }
        }
        e.source().and_then(|s| find(s, depth + 1))
    }
    std::error::Error::source(e).and_then(|s| find(s, 0))
}

/// Whether something answered that is not HTTP (another service on the
/// port: a typo, not an outage).
fn not_http(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return true;
            }
        }
        src = s.source();
    }
    false
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
    if not_http(e) {
        Error::failed(what, format!("not an HTTP answer: {cause}"))
    } else if e.is_connect() || e.is_request() || e.is_body() {
        Error::temporary(what, format!("unreachable: {cause}"))
    } else {
        Error::failed(what, cause)
    }
}

pub fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}
