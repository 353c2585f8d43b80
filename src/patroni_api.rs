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
//! transaction".

use crate::error::Error;
use std::time::{Duration, Instant};

fn client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::failed("building the REST API client", e))
}

/// Asks once; true when the member's status says role primary and state
/// running by `until` (no answer, an error, anything else: false).
async fn ask(client: &reqwest::Client, url: &str, until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    let send = client
        .get(url)
        .timeout(left.min(Duration::from_millis(500)))
        .send();
    let Ok(Ok(r)) = tokio::time::timeout(left, send).await else {
        return false;
    };
    let left = until.saturating_duration_since(Instant::now());
    let Ok(Ok(body)) = tokio::time::timeout(left, r.bytes()).await else {
        return false;
    };
    if body.len() > 1 << 20 {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    v.get("role").and_then(|r| r.as_str()) == Some("primary")
        && v.get("state").and_then(|s| s.as_str()) == Some("running")
}

/// Asks `url` (a member's `/patroni`) once, by `until`.
pub async fn is_writable(url: &str, until: Instant) -> bool {
    match client() {
        Ok(c) => ask(&c, url, until).await,
        Err(_) => false,
    }
}

/// Polls `url` until the member is a writable primary or `until` passes;
/// `Ok(true)` when it became one.
pub async fn wait_writable(url: &str, until: Instant) -> Result<bool, Error> {
    let client = client()?;
    loop {
        if ask(&client, url, until).await {
            return Ok(true);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Promotion ends within a second of the lock; 20 ms keeps the wait
        // after it short without hammering the API.
        tokio::time::sleep(Duration::from_millis(20).min(left)).await;
    }
}
