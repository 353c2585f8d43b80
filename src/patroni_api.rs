//! The only module that asks a member's Patroni REST API anything: whether
//! PostgreSQL there runs as a writable primary now.
//!
//! `GET /patroni` answers the member's status as JSON; its `role` comes from
//! `pg_is_in_recovery()`, asked for each request (patroni/api.py
//! get_postgresql_status), so `"role": "primary"` means PostgreSQL accepts
//! writes. The leader key, and `GET /primary` with it, say "primary" from
//! the moment the member takes the lock, before its promotion ends
//! recovery (Patroni runs `pg_ctl promote` without waiting): a pause resumed
//! then sends the queued clients into "cannot execute INSERT in a read-only
//! transaction". An https REST API (Patroni's `restapi.certfile`) is
//! verified against the CA file given, and only that.

use crate::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

/// A client for members' REST APIs.
pub struct Api {
    client: reqwest::Client,
}

impl Api {
    /// `ca_file` (the setting `key` names it) is what an https API is
    /// verified against; without one, https answers nothing.
    pub fn new(ca_file: Option<&Path>, key: &str) -> Result<Api, Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca_file {
            for c in crate::tls::read_ca(ca, key)? {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::failed("building the REST API client", e))?;
        Ok(Api { client })
    }

    /// Asks once: `Ok` when the member's status says role primary and state
    /// running by `until`, else why not.
    pub async fn writable(&self, url: &str, until: Instant) -> Result<(), String> {
        self.ready(url, until, &["primary"]).await.map(|_| ())
    }

    /// Asks once: `Ok(role)` when the member's status says state running
    /// and one of `roles` by `until`, else why not.
    pub async fn ready(&self, url: &str, until: Instant, roles: &[&str]) -> Result<String, String> {
        let left = until.saturating_duration_since(Instant::now());
        let send = self
            .client
            .get(url)
            .timeout(left.min(Duration::from_millis(500)))
            .send();
        let r = match tokio::time::timeout(left, send).await {
            Err(_) => return Err("no answer in time".into()),
            Ok(Err(e)) => return Err(chain(&e)),
            Ok(Ok(r)) => r,
        };
        let status = r.status();
        let left = until.saturating_duration_since(Instant::now());
        let body = match tokio::time::timeout(left, r.bytes()).await {
            Ok(Ok(b)) if b.len() <= 1 << 20 => b,
            Ok(Ok(_)) => return Err("an answer over 1 MiB".into()),
            _ => return Err("no whole answer in time".into()),
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Err(format!("HTTP {}, not JSON", status.as_u16()));
        };
        let field = |k: &str| v.get(k).and_then(|r| r.as_str()).unwrap_or("?").to_string();
        let (role, state) = (field("role"), field("state"));
        if roles.contains(&role.as_str()) && state == "running" {
            Ok(role)
        } else {
            Err(format!("role {role}, state {state}"))
        }
    }

    /// Polls `url` until the member runs as one of `roles` or `until`
    /// passes; `Ok(role)` answered, or why it did not become one: its last
    /// answer (or connection error), not the time-out of a try cut short by
    /// the end.
    pub async fn wait_ready(
        &self,
        url: &str,
        until: Instant,
        roles: &[&str],
    ) -> Result<String, String> {
        let mut said: Option<String> = None;
        loop {
            let why = match self.ready(url, until, roles).await {
                Ok(role) => return Ok(role),
                Err(why) => why,
            };
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() || said.is_none() {
                said = Some(why);
            }
            if left.is_zero() {
                return Err(said.unwrap_or_default());
            }
            // Promotion ends within a second of the lock; 20 ms keeps the wait
            // after it short without hammering the API.
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }
}

/// A transport error with its causes (the TLS one says what failed).
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// Asks `url` (a member's `/patroni`, http) once, by `until`.
pub async fn is_writable(url: &str, until: Instant) -> bool {
    match Api::new(None, "") {
        Ok(api) => api.writable(url, until).await.is_ok(),
        Err(_) => false,
    }
}
