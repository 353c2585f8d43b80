//! The only module that asks a member's Patroni REST API anything: whether
//! it is a writable primary now (`GET /primary` answers 200 only while the
//! member runs as primary and holds the leader lock).
//!
//! The leader key names a new member the moment it takes the lock, before
//! PostgreSQL there is promoted (`pre_promote`, then `pg_ctl promote`), so a
//! pause is resumed only once this answers 200.

use crate::error::Error;
use std::time::{Duration, Instant};

/// Asks `url` once; true when it answers 200 by `until` (no answer, another
/// status or an error: false).
pub async fn is_writable(url: &str, until: Instant) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    else {
        return false;
    };
    let left = until.saturating_duration_since(Instant::now());
    let ask = client.get(url).timeout(left);
    matches!(
        tokio::time::timeout(left, ask.send()).await,
        Ok(Ok(r)) if r.status() == reqwest::StatusCode::OK
    )
}

/// Polls `url` until it answers 200 or `until` passes; `Ok(true)` when it did.
pub async fn wait_writable(url: &str, until: Instant) -> Result<bool, Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::failed("building the REST API client", e))?;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ask = client
            .get(url)
            .timeout(left.min(Duration::from_millis(500)));
        if let Ok(Ok(r)) = tokio::time::timeout(left, ask.send()).await {
            if r.status() == reqwest::StatusCode::OK {
                return Ok(true);
            }
        }
        // Patroni promotes within a second of taking the lock; 20 ms keeps
        // the wait after promotion short without hammering the API.
        tokio::time::sleep(Duration::from_millis(20).min(left)).await;
    }
}
