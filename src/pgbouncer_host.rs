//! Reconcile on the PgBouncer host: point the managed `[databases]` entries
//! of pgbouncer.ini at each cluster's leader, and make PgBouncer reload.
//!
//! Leader discovery uses Patroni's own keys only (`keys::ScopeView`): the
//! leader key, then that member's `conn_url` (never the member's `role`,
//! which lags behind the lock). Consul is read before the host lock is taken;
//! the lock covers only the file and the reload. Decisions are ordered by
//! ticket, so a run that read Consul earlier never overwrites the file a
//! later run already pointed at a newer leader.

use crate::apply::Report;
use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig, TargetKind};
use crate::consul::{Consul, Entry};
use crate::error::{Error, Kind};
use crate::ini::{self, Target};
use crate::keys::{shown, LeaderKey, ScopeKeys, ScopeView};
use crate::state::{self, Ticket};
use crate::{note, out, pgbouncer};

/// The subject of the ticket ordering for pgbouncer.ini.
const SUBJECT: &str = "pgbouncer";

/// What one cluster's entries should point at, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Point the entries here.
    Target(Target, String),
    /// Change nothing now (mid-failover), exit 75.
    Wait(String),
    /// Refused: an untrusted value was not valid, exit 1.
    Refused(String),
}

/// PURE: from a cluster's keys, what its entries should point at.
pub fn resolve(entries: &[Entry], namespace: &str, cluster: &Cluster) -> Resolved {
    let keys = ScopeKeys::new(namespace, &cluster.scope);
    let view = ScopeView::read(entries, &keys);
    let leader = match &view.leader {
        LeaderKey::Absent => {
            return Resolved::Wait(format!("no leader key {} (mid-failover?)", keys.leader))
        }
        LeaderKey::Invalid(why) => return Resolved::Refused(why.clone()),
        LeaderKey::Name(n) => n.clone(),
    };
    let Some(member) = view.member(&leader) else {
        return Resolved::Wait(format!(
            "leader is {} but {}{leader} is missing",
            shown(&leader),
            keys.members
        ));
    };
    let (host, port) = match &member.conn {
        Ok(hp) => hp.clone(),
        Err(why) => return Resolved::Refused(why.clone()),
    };
    let host = match cluster.target {
        TargetKind::Leader => host,
        TargetKind::Vip => match &view.floating_ip {
            None => {
                return Resolved::Refused(format!(
                    "target is vip but {} is missing",
                    keys.floating_ip
                ))
            }
            Some(Err(why)) => return Resolved::Refused(why.clone()),
            Some(Ok(net)) => net.addr().to_string(),
        },
    };
    Resolved::Target(Target { host, port }, leader)
}

/// One read for all clusters of the namespace when there are several, one per
/// cluster when there is one (the smaller answer).
async fn read_clusters(
    namespace: &str,
    clusters: &[Cluster],
    consul: &Consul,
) -> Result<Vec<Entry>, Error> {
    if clusters.len() == 1 {
        consul
            .list(&format!("{namespace}/{}/", clusters[0].scope), false)
            .await
    } else {
        consul.list(&format!("{namespace}/"), false).await
    }
}

/// Reconciles pgbouncer.ini once.
pub async fn reconcile(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    dry_run: bool,
    report: &mut Report,
) {
    let ticket = Ticket::now();
    let entries = match read_clusters(&cfg.consul.namespace, &p.clusters, consul).await {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context("pgbouncer.ini kept as it is"));
            return;
        }
    };
    let mut targets: Vec<(String, Target)> = Vec::new();
    for c in &p.clusters {
        match resolve(&entries, &cfg.consul.namespace, c) {
            Resolved::Target(t, leader) => {
                crate::debug_line!(
                    "cluster {}: leader {leader} at {}:{}",
                    c.scope,
                    t.host,
                    t.port
                );
                for db in &c.databases {
                    targets.push((db.clone(), t.clone()));
                }
            }
            Resolved::Wait(why) => {
                crate::warn_line!("cluster {}: {why}; its entries kept as they are", c.scope);
                report.set(Kind::Temporary);
            }
            Resolved::Refused(why) => report.fail(Error::failed(
                format!(
                    "cluster {}: refused value from Consul, its entries kept as they are",
                    c.scope
                ),
                why,
            )),
        }
    }
    if targets.is_empty() {
        return;
    }
    let _lock = if dry_run {
        None
    } else {
        match state::acquire(&cfg.lock_file, budget.end) {
            Ok(l) => Some(l),
            Err(e) => return report.fail(e),
        }
    };
    if !dry_run {
        if let Some(last) = state::last_decided(&cfg.lock_file, SUBJECT) {
            if last > ticket {
                note!(
                    "a run that started {:?} after this one rewrote pgbouncer.ini meanwhile; its version stands",
                    last.since(ticket)
                );
                return;
            }
        }
    }
    let input = match std::fs::read(&p.ini) {
        Ok(b) => b,
        Err(e) => return report.fail(Error::failed(format!("reading {}", p.ini.display()), e)),
    };
    let pairs: Vec<(&str, &Target)> = targets.iter().map(|(d, t)| (d.as_str(), t)).collect();
    let edited = match ini::edit(&input, &pairs) {
        Ok(e) => e,
        Err(e) => return report.fail(e.context(format!("{} kept as it is", p.ini.display()))),
    };
    if !edited.missing.is_empty() {
        report.fail(Error::failed(
            format!("{}", p.ini.display()),
            format!("no [databases] entry named {}", edited.missing.join(", ")),
        ));
    }
    // Present from the moment a new file is about to be written until
    // PgBouncer took the SIGHUP: a run killed in between, or a failed reload,
    // is finished by the next run although the file is already current.
    let pending = state::reload_pending_path(&cfg.lock_file);
    if edited.output == input {
        if pending.exists() && !dry_run {
            note!(
                "a previous run rewrote {} but did not reload pgbouncer; reloading",
                p.ini.display()
            );
            reload(&p.pidfile, &pending, report);
        } else {
            note!("{} already points at the leaders", p.ini.display());
            if dry_run {
                out::line(format_args!("pgbouncer.ini: nothing to do"));
            }
        }
        return;
    }
    let summary = targets
        .iter()
        .filter(|(d, _)| edited.changed.contains(d))
        .map(|(d, t)| format!("{d} -> {}:{}", t.host, t.port))
        .collect::<Vec<_>>()
        .join(", ");
    if dry_run {
        out::line(format_args!("would rewrite {}: {summary}", p.ini.display()));
        out::line(format_args!(
            "would reload pgbouncer (SIGHUP to the pid in {})",
            p.pidfile.display()
        ));
        return;
    }
    if let Err(e) = std::fs::write(&pending, b"") {
        crate::warn_line!(
            "cannot create {}: {e}; a failed reload would not be retried",
            pending.display()
        );
    }
    if let Err(e) = pgbouncer::write_atomic(&p.ini, &edited.output) {
        return report.fail(e);
    }
    if let Err(e) = state::set_decided(&cfg.lock_file, SUBJECT, ticket) {
        crate::warn_line!("{e}");
    }
    note!("rewrote {}: {summary}", p.ini.display());
    reload(&p.pidfile, &pending, report);
}

/// SIGHUP to PgBouncer; clears the pending mark once it was sent.
fn reload(pidfile: &std::path::Path, pending: &std::path::Path, report: &mut Report) {
    match pgbouncer::reload(pidfile) {
        Ok(pid) => {
            note!("reloaded pgbouncer (pid {pid})");
            let _ = std::fs::remove_file(pending);
        }
        Err(e) => report.fail(e),
    }
}

/// For `status`: each cluster's leader and whether the ini follows it.
pub async fn status(cfg: &Config, consul: &Consul) -> Result<serde_json::Value, Error> {
    let Some(p) = &cfg.pgbouncer else {
        return Ok(serde_json::Value::Null);
    };
    let entries = read_clusters(&cfg.consul.namespace, &p.clusters, consul).await?;
    let input = std::fs::read(&p.ini)
        .map_err(|e| Error::failed(format!("reading {}", p.ini.display()), e))?;
    let mut out = Vec::new();
    for c in &p.clusters {
        let mut m = serde_json::Map::new();
        m.insert("scope".into(), c.scope.clone().into());
        m.insert("databases".into(), c.databases.clone().into());
        match resolve(&entries, &cfg.consul.namespace, c) {
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
    let retry = ini::server_login_retry_seconds(&input);
    if retry > 2 {
        w.push(format!(
            "{}: server_login_retry = {retry}: after a switchover PgBouncer keeps retrying the old primary for up to {retry} s and a reload does not reset it; set it to 1",
            p.ini.display()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, v: &str) -> Entry {
        Entry {
            key: key.into(),
            value: v.as_bytes().to_vec(),
            modify_index: 1,
            session: None,
        }
    }

    fn cluster(target: TargetKind) -> Cluster {
        Cluster {
            scope: "batman".into(),
            databases: vec!["appdb".into()],
            target,
        }
    }

    #[test]
    fn resolve_follows_leader_key_not_role() {
        let es = vec![
            e("service/batman/leader", "pg2"),
            e(
                "service/batman/members/pg1",
                r#"{"conn_url":"postgres://198.51.100.11:5432/postgres","role":"primary"}"#,
            ),
            e(
                "service/batman/members/pg2",
                r#"{"conn_url":"postgres://198.51.100.12:5433/postgres","role":"replica"}"#,
            ),
            e("service/batman/floating-ip", "198.51.100.100/24"),
        ];
        assert_eq!(
            resolve(&es, "service", &cluster(TargetKind::Leader)),
            Resolved::Target(
                Target {
                    host: "198.51.100.12".into(),
                    port: 5433
                },
                "pg2".into()
            )
        );
        assert_eq!(
            resolve(&es, "service", &cluster(TargetKind::Vip)),
            Resolved::Target(
                Target {
                    host: "198.51.100.100".into(),
                    port: 5433
                },
                "pg2".into()
            )
        );
    }

    #[test]
    fn resolve_waits_and_refuses() {
        assert!(matches!(
            resolve(&[], "service", &cluster(TargetKind::Leader)),
            Resolved::Wait(_)
        ));
        let es = vec![e("service/batman/leader", "pg9")];
        assert!(matches!(
            resolve(&es, "service", &cluster(TargetKind::Leader)),
            Resolved::Wait(_)
        ));
        for bad in [
            r#"{"conn_url":"postgres://evil\n[pgbouncer]:5432/x"}"#,
            "not json",
            r#"{"api_url":"http://x:8008/"}"#,
        ] {
            let es = vec![
                e("service/batman/leader", "pg1"),
                e("service/batman/members/pg1", bad),
            ];
            match resolve(&es, "service", &cluster(TargetKind::Leader)) {
                Resolved::Refused(why) => assert!(!why.contains('\n'), "{why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let es = vec![e("service/batman/leader", "pg1\n[pgbouncer]")];
        assert!(matches!(
            resolve(&es, "service", &cluster(TargetKind::Leader)),
            Resolved::Refused(_)
        ));
    }
}
