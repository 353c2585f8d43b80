//! The database node's side of a switchover pause.
//!
//! `before-stop`: Patroni runs it (synchronously, with no arguments) right
//! before it stops PostgreSQL on this node, for a switchover, a restart or
//! a shutdown, on replicas too, and when it demotes a primary that lost
//! Consul. First it removes the VIP this node holds, from local knowledge,
//! before any Consul call: the stop that follows can hang (a fast shutdown
//! waits for WAL senders whose standbys a partition took away) while another
//! node is promoted, and on_stop runs only after it. When this node leads
//! its scope, it then asks the
//! PgBouncer hosts to pause the cluster's databases, so clients wait for the
//! new primary instead of meeting one that shuts down, and waits for their
//! confirmation at most `before_stop.wait`: a PgBouncer host or a Consul
//! that is away delays the stop by no more than that.
//!
//! A primary's callback (on_start, on_restart, on_role_change to primary)
//! deletes a pause request that is done with: its own (it leads on: a
//! restart, a cancelled switchover) or another member's (it leads now).

use crate::budget::Budget;
use crate::config::Config;
use crate::dcs::keys::{shown, LeaderKey, PauseRequest, ScopeKeys, ScopeView};
use crate::dcs::Dcs;
use crate::error::{Error, Kind};
use crate::report::Report;
use crate::{node::vip, note, out};
use std::time::{Duration, Instant};

/// `before-stop`.
pub async fn run(
    cfg: &Config,
    consul: &Dcs,
    scope: Option<&str>,
    dry_run: bool,
    budget: Budget,
) -> Report {
    let mut report = Report::default();
    let Some(scope) = scope else {
        report.fail(Error::usage(
            "no scope: give it on the command line (--scope) or set `scope` in the configuration",
        ));
        return report;
    };
    if let Some(v) = &cfg.vip {
        let run = vip::Run {
            cfg,
            vip: v,
            scope,
            consul,
            budget,
            dry_run,
        };
        vip::release_local(&run, &mut report).await;
    }
    let keys = ScopeKeys::new(cfg.dcs.namespace(), scope);
    let started = Instant::now();
    let until = (started + cfg.before_stop.wait).min(budget.end);
    consul.set_deadline(until);
    let view = match consul.list_scope(&keys.prefix, &keys.leader, false).await {
        Ok(es) => ScopeView::read(&es, &keys),
        Err(e) => {
            report.fail(e.context(STOPS_ANYWAY));
            return report;
        }
    };
    if !leads(cfg, &keys, &view, scope) {
        return report;
    }
    let request = pause_request(cfg);
    if dry_run {
        let wait = humantime::format_duration(cfg.before_stop.wait);
        out::line(format_args!(
            "would write {} = {} and wait up to {wait} for {} confirmation(s)",
            keys.pause_request, request.id, cfg.before_stop.confirmations
        ));
        return report;
    }
    let body = serde_json::to_vec(&request).unwrap_or_default();
    if let Err(e) = consul.put(&keys.pause_request, &body).await {
        report.fail(e.context(STOPS_ANYWAY));
        return report;
    }
    note!(
        "asked PgBouncer to pause scope {scope} (request {})",
        request.id
    );
    let wait = Wait {
        keys: &keys,
        request: &request,
        started,
        until,
    };
    wait_for_pause(cfg, consul, &wait, &mut report).await;
    report
}

/// The context of a failure that keeps PgBouncer from being asked.
const STOPS_ANYWAY: &str = "not asking PgBouncer to pause; PostgreSQL stops all the same";

/// Whether this node leads `scope`, by the leader key; if not, says so.
/// Only the leader's stop moves clients: a replica's (a restart) or one
/// under a scope that does not lead here asks for nothing.
fn leads(cfg: &Config, keys: &ScopeKeys, view: &ScopeView, scope: &str) -> bool {
    let who = match &view.leader {
        LeaderKey::Name(n) if *n == cfg.name => return true,
        LeaderKey::Name(n) => format!("{} leads it", shown(n)),
        LeaderKey::Absent if view.empty => format!("nothing is under {}", keys.prefix),
        _ => "it has no leader".to_string(),
    };
    note!(
        "{} does not lead scope {scope} ({who}): nothing to pause",
        shown(&cfg.name)
    );
    false
}

/// A new pause request from this node, with an id of its own.
fn pause_request(cfg: &Config) -> PauseRequest {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    PauseRequest {
        member: cfg.name.clone(),
        id: format!("{}-{}", cfg.name, since.as_nanos()),
        since: since.as_secs(),
    }
}

/// A pause request written, awaiting its confirmations.
struct Wait<'a> {
    keys: &'a ScopeKeys,
    request: &'a PauseRequest,
    started: Instant,
    until: Instant,
}

/// Polls the PgBouncer hosts' confirmations of `w.request` until
/// `before_stop.confirmations` of them have come or `w.until` has passed;
/// either way PostgreSQL stops after, and a short count is a temporary
/// outcome in `report`.
async fn wait_for_pause(cfg: &Config, consul: &Dcs, w: &Wait<'_>, report: &mut Report) {
    let keys = w.keys;
    let wait = humantime::format_duration(cfg.before_stop.wait);
    let mut confirmed: Vec<String> = Vec::new();
    let mut probed = false;
    loop {
        match consul.list(&keys.pause_acks, false).await {
            // Consul 1.8 answers a recursive read the token may not make
            // with 404, as if no PgBouncer host had confirmed: the wait would
            // run out and blame PgBouncer. A key under the prefix, read on
            // its own, says 403 then (asked once).
            Ok(es) if es.is_empty() && !probed => {
                probed = true;
                let probe = format!("{}{}", keys.pause_acks, cfg.name);
                if let Err(e) = consul.check_readable(&probe).await {
                    if e.kind() != Kind::Temporary {
                        report.fail(e.context(format!(
                            "{} reads as empty, which Consul 1.8 also answers when the token may not read it; PostgreSQL stops all the same",
                            keys.pause_acks
                        )));
                        return;
                    }
                }
            }
            Ok(es) => {
                confirmed = ScopeView::read(&es, keys)
                    .pause_acks
                    .into_iter()
                    .filter(|(_, id)| *id == w.request.id)
                    .map(|(host, _)| host)
                    .collect();
            }
            // The wait ran out during the read: that is the wait's end,
            // not a Consul failure.
            Err(_) if Instant::now() + Duration::from_millis(5) >= w.until => {}
            Err(e) => {
                report.fail(
                    e.context("waiting for PgBouncer's pause; PostgreSQL stops all the same"),
                );
                return;
            }
        }
        if confirmed.len() >= cfg.before_stop.confirmations as usize {
            note!(
                "paused by {} in {:?}",
                confirmed.join(", "),
                w.started.elapsed()
            );
            return;
        }
        if Instant::now() + Duration::from_millis(5) >= w.until {
            crate::warn_line!(
                "{} of {} PgBouncer host(s) confirmed a pause within {wait} (before_stop.wait); PostgreSQL stops all the same",
                confirmed.len(),
                cfg.before_stop.confirmations,
            );
            report.set(Kind::Temporary);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// In a primary's callback without a vip section: deletes a pause request
/// that is done with (the vip path does the same in `vip::converge`).
pub async fn withdraw(cfg: &Config, consul: &Dcs, scope: &str, budget: Budget) {
    let keys = ScopeKeys::new(cfg.dcs.namespace(), scope);
    consul.set_deadline(budget.end);
    let view = match consul.list_scope(&keys.prefix, &keys.leader, false).await {
        Ok(es) => ScopeView::read(&es, &keys),
        Err(e) => {
            return crate::warn_line!("{e}; a pause request, if any, is left to pause_timeout")
        }
    };
    let Some(index) = crate::pooler::pause::done_request(&view, &cfg.name) else {
        return note!("no pause request to withdraw");
    };
    match consul.delete_cas(&keys.pause_request, index).await {
        Ok(_) => note!("withdrew the pause request: this node leads"),
        Err(e) => crate::warn_line!("{e}; the pause request is left to pause_timeout"),
    }
}
