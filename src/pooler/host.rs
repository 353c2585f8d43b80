//! Reconcile on the PgBouncer host: observe (`observe`), decide (`plan`,
//! pure), carry out (`apply`). Point the managed `[databases]` entries of
//! pgbouncer.ini at each cluster's leader, make PgBouncer reload, and pause
//! and resume around a switchover.
//!
//! Leader discovery uses Patroni's own keys only (`keys::ScopeView`): the
//! leader key, then that member's `conn_url` (never the member's `role`,
//! which lags behind the lock). Consul is read before the host lock is
//! taken; the lock covers only the state files and the file's rewrite.

use crate::budget::Budget;
use crate::config::{Config, PgbouncerConfig};
use crate::dcs::Dcs;
use crate::error::Error;
use crate::pooler::apply::{self, Run};
use crate::pooler::ini::{self, Target};
use crate::pooler::observe;
use crate::pooler::plan::{self, Resolved};
use crate::report::Report;
use crate::state::Ticket;

/// Reconciles pgbouncer.ini once.
pub async fn reconcile(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Dcs,
    budget: &Budget,
    dry_run: bool,
    report: &mut Report,
) {
    let ticket = Ticket::now();
    report.facts.pgbouncer = Some(crate::metrics::PgbouncerFacts {
        scopes: p.clusters.iter().map(|c| c.scope.clone()).collect(),
        ..Default::default()
    });
    let observed = observe::observe(cfg, p, consul, budget).await;
    let plan = plan::plan(cfg.dcs.namespace(), p, &observed);
    crate::debug_line!("plan: {plan:?}");
    let run = Run {
        cfg,
        p,
        consul,
        budget,
        dry_run,
        ticket,
        local: futures::lock::Mutex::new(()),
    };
    apply::apply(&run, &observed, &plan, report).await;
    // Read back for the metrics only: a second parse of the file, which
    // runs without metrics do not pay.
    if let (Some(f), Some(_)) = (report.facts.pgbouncer.as_mut(), &cfg.metrics) {
        f.targets = held(p);
    }
}

/// Where the file points each managed entry after the run (what PgBouncer
/// loads, not what the run meant it to): scope, database, host, port.
fn held(p: &PgbouncerConfig) -> Vec<(String, String, String, u16)> {
    let Ok(file) = std::fs::read(&p.ini) else {
        return Vec::new();
    };
    let held = ini::entry_targets(&file);
    let mut out = Vec::new();
    for c in &p.clusters {
        for db in &c.databases {
            if let Some(t) = held.get(db).cloned() {
                out.push((c.scope.clone(), db.clone(), t.host, t.port));
            }
        }
    }
    out
}

/// For `status`: each cluster's leader and whether the ini follows it. A
/// cluster Consul refused says so; the others are shown.
pub async fn status(cfg: &Config, consul: &Dcs) -> Result<serde_json::Value, Error> {
    let Some(p) = &cfg.pgbouncer else {
        return Ok(serde_json::Value::Null);
    };
    let (entries, refused) =
        observe::read_clusters(cfg.dcs.namespace(), &p.clusters, consul).await?;
    let input = std::fs::read(&p.ini)
        .map_err(|e| Error::failed(format!("reading {}", p.ini.display()), e))?;
    let mut out = Vec::new();
    for c in &p.clusters {
        let mut m = serde_json::Map::new();
        m.insert("scope".into(), c.scope.clone().into());
        m.insert("databases".into(), c.databases.clone().into());
        if let Some((_, e)) = refused.iter().find(|(s, _)| *s == c.scope) {
            m.insert("problem".into(), e.to_string().into());
            out.push(serde_json::Value::Object(m));
            continue;
        }
        match plan::resolve(entries.of(&c.scope), cfg.dcs.namespace(), c) {
            Resolved::Target(t, leader) => {
                m.insert("leader".into(), leader.into());
                m.insert("target".into(), format!("{}:{}", t.host, t.port).into());
                let pairs: Vec<(&str, &Target)> =
                    c.databases.iter().map(|d| (d.as_str(), &t)).collect();
                let state = match ini::edit(&input, &pairs) {
                    Ok(e) if !e.missing.is_empty() => {
                        format!("missing entries: {}", e.missing.join(", "))
                    }
                    Ok(e) if e.changed.is_empty() => "current".to_string(),
                    Ok(e) => format!("stale: {}", e.changed.join(", ")),
                    Err(e) => e.to_string(),
                };
                m.insert("ini".into(), state.into());
            }
            Resolved::Wait(why) | Resolved::Refused(why) => {
                m.insert("problem".into(), why.into());
            }
        }
        out.push(serde_json::Value::Object(m));
    }
    Ok(serde_json::Value::Array(out))
}

/// For `check-config`: warnings about the managed ini.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let Some(p) = &cfg.pgbouncer else {
        return w;
    };
    let input = match std::fs::read(&p.ini) {
        Ok(b) => b,
        Err(e) => {
            w.push(format!(
                "pgbouncer.ini: cannot read {}: {e}",
                p.ini.display()
            ));
            return w;
        }
    };
    let ini_path = p.ini.display();
    let retry = ini::time_setting(
        &input,
        "server_login_retry",
        ini::SERVER_LOGIN_RETRY_DEFAULT,
    );
    if retry > 2.0 {
        w.push(format!(
            "{ini_path}: server_login_retry = {retry}: after a failed login PgBouncer waits this long before it tries the server again, and a reload that points at the new primary does not cut the wait short; set it to 0.1"
        ));
    } else if retry == 0.0 {
        w.push(format!(
            "{ini_path}: server_login_retry = 0: PgBouncer retries a server that is down in a busy loop (one CPU, a log line per try); set it to 0.1"
        ));
    }
    if p.pause_on != crate::config::PauseOn::Never {
        let pause = p.pause_timeout.as_secs_f64();
        let wait = ini::time_setting(&input, "query_wait_timeout", 120.0);
        if wait > 0.0 && wait <= pause {
            w.push(format!(
                "{ini_path}: query_wait_timeout = {wait} is not longer than pgbouncer.pause_timeout ({pause} s): clients that wait through a pause get an error first; make it longer"
            ));
        }
        let query = ini::time_setting(&input, "query_timeout", 0.0);
        if query > 0.0 && query <= pause {
            w.push(format!(
                "{ini_path}: query_timeout = {query} is not longer than pgbouncer.pause_timeout ({pause} s): it applies to clients waiting through a pause too; make it longer, or 0"
            ));
        }
        if ini::pgbouncer_setting(&input, "pool_mode").as_deref() == Some("session") {
            w.push(format!(
                "{ini_path}: pool_mode = session: PAUSE completes only when every client has disconnected, so a switchover pause runs into pgbouncer.pause_timeout; use transaction pooling, or pause_on: never"
            ));
        }
    }
    let probe = Target {
        host: "127.0.0.1".into(),
        port: 5432,
    };
    let names: Vec<(&str, &Target)> = p
        .clusters
        .iter()
        .flat_map(|c| c.databases.iter().map(|d| (d.as_str(), &probe)))
        .collect();
    match ini::edit(&input, &names) {
        Ok(e) if !e.missing.is_empty() => w.push(format!(
            "{}: no [databases] entry named {}",
            p.ini.display(),
            e.missing.join(", ")
        )),
        Ok(_) => {}
        Err(e) => w.push(format!("{}: {e}", p.ini.display())),
    }
    w
}
