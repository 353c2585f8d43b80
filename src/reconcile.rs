//! The reconcile verb: converge this host to what Consul says, once.
//!
//! On a database node (a `vip` section) the VIP follows the leader key; on the
//! PgBouncer host (a `pgbouncer` section) the managed `[databases]` entries
//! follow each cluster's leader. Leader discovery uses Patroni's own keys only:
//! `<ns>/<scope>/leader`, then `<ns>/<scope>/members/<leader>`'s `conn_url`
//! (never the member's `role`, which lags behind the lock).

use crate::apply::Report;
use crate::config::{parse_vip, Cluster, Config, PgbouncerConfig, TargetKind};
use crate::consul::{Consul, Entry};
use crate::error::{Error, Kind};
use crate::ini::{self, Target};
use crate::vip::{self, Mode};
use crate::{lock, note, pgbouncer};
use std::time::Instant;

/// Runs reconcile; returns the exit code.
pub async fn run(cfg: &Config, dry_run: bool, deadline: Instant) -> i32 {
    let mut report = Report::default();
    if cfg.vip.is_none() && cfg.pgbouncer.is_none() {
        report.fail(Error::usage(format!(
            "{}: neither a vip nor a pgbouncer section: nothing to reconcile",
            cfg.path.display()
        )));
        return report.exit_code();
    }
    let consul = Consul::new(&cfg.consul, deadline);
    // The VIP part reads Consul before taking the lock, so that a callback
    // (a demotion, say) never waits behind a reconcile that waits on Consul;
    // the callback generation tells whether a callback ran meanwhile.
    let vip_read = match (&cfg.vip, &cfg.scope) {
        (Some(_), Some(scope)) => {
            let generation = lock::read_generation(&cfg.lock_file);
            let keys = vip::Keys::new(&cfg.consul.namespace, scope);
            Some((generation, consul.list(&keys.prefix, true).await))
        }
        _ => None,
    };
    let _lock = if dry_run {
        None
    } else {
        match lock::acquire(&cfg.lock_file, deadline) {
            Ok(l) => Some(l),
            Err(e) => {
                report.fail(e);
                return report.exit_code();
            }
        }
    };
    if let Some(v) = &cfg.vip {
        match (&cfg.scope, vip_read) {
            (Some(scope), Some((generation, read))) => {
                if !dry_run && lock::read_generation(&cfg.lock_file) != generation {
                    note!("a callback ran while Consul was being read; its decision on the VIP stands");
                } else {
                    vip::converge(
                        cfg,
                        v,
                        scope,
                        &consul,
                        Mode::Reconcile,
                        Some(read),
                        dry_run,
                        &mut report,
                    )
                    .await
                }
            }
            _ => report.fail(Error::config(
                &cfg.path,
                "scope",
                "expected the Patroni scope: reconcile of the VIP needs it",
            )),
        }
    }
    if let Some(p) = &cfg.pgbouncer {
        pgbouncer_host(cfg, p, &consul, dry_run, &mut report).await;
    }
    report.exit_code()
}

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
    let prefix = format!("{namespace}/{}/", cluster.scope);
    let leader_key = format!("{prefix}leader");
    let leader = match entries.iter().find(|e| e.key == leader_key) {
        Some(e) => String::from_utf8_lossy(&e.value).trim().to_string(),
        None => String::new(),
    };
    if leader.is_empty() {
        return Resolved::Wait(format!("no leader key {leader_key} (mid-failover?)"));
    }
    let member_key = format!("{prefix}members/{leader}");
    let Some(member) = entries.iter().find(|e| e.key == member_key) else {
        return Resolved::Wait(format!("leader is {leader} but {member_key} is missing"));
    };
    let conn_url = match serde_json::from_slice::<serde_json::Value>(&member.value) {
        Ok(v) => match v.get("conn_url").and_then(|c| c.as_str()) {
            Some(c) => c.to_string(),
            None => return Resolved::Refused(format!("{member_key}: no conn_url string")),
        },
        Err(e) => return Resolved::Refused(format!("{member_key}: not JSON: {e}")),
    };
    let (host, port) = match parse_conn_url(&conn_url) {
        Ok(hp) => hp,
        Err(why) => return Resolved::Refused(format!("{member_key}: conn_url {why}")),
    };
    let host = match cluster.target {
        TargetKind::Leader => host,
        TargetKind::Vip => {
            let fip_key = format!("{prefix}floating-ip");
            match entries.iter().find(|e| e.key == fip_key) {
                None => {
                    return Resolved::Refused(format!("target is vip but {fip_key} is missing"))
                }
                Some(e) => match parse_vip(&String::from_utf8_lossy(&e.value)) {
                    Ok(net) => net.addr().to_string(),
                    Err(why) => return Resolved::Refused(format!("{fip_key}: {why}")),
                },
            }
        }
    };
    if let Err(e) = ini::validate_host(&host) {
        return Resolved::Refused(format!("{member_key}: {e}"));
    }
    Resolved::Target(Target { host, port }, leader)
}

/// PURE: host and port of a libpq URL as Patroni writes it
/// (`postgres://host:port/db`, IPv6 in brackets, port 5432 when absent).
/// Anything that is not plainly a host and a port is refused: the value is
/// untrusted and its only destination is pgbouncer.ini.
pub fn parse_conn_url(url: &str) -> Result<(String, u16), String> {
    const MAX: usize = 1024;
    if url.len() > MAX {
        return Err(format!("longer than {MAX} bytes"));
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{:?}: expected postgres://host:port/...", clip(url)))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    // user[:password]@ is not something Patroni writes; drop it without echoing it.
    let authority = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or_else(|| format!("{:?}: unterminated [IPv6] host", clip(url)))?;
        let host = &r[..end];
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{:?}: junk after ]", clip(url))),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{:?}: [{}] is not an IPv6 address",
                clip(url),
                clip(host)
            ));
        }
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => 5432,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => return Err(format!("port {:?} is not 1-65535", clip(p))),
        },
    };
    if host.is_empty() {
        return Err(format!("{:?}: no host", clip(url)));
    }
    ini::validate_host(&host).map_err(|e| e.to_string())?;
    Ok((host, port))
}

/// Cuts an untrusted value for a message (and never prints control characters).
fn clip(s: &str) -> String {
    let c: String = s.chars().take(80).collect();
    c.escape_debug().to_string()
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

async fn pgbouncer_host(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    dry_run: bool,
    report: &mut Report,
) {
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
    let pending = lock::reload_pending_path(&cfg.lock_file);
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
                println!("pgbouncer.ini: nothing to do");
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
        println!("would rewrite {}: {summary}", p.ini.display());
        println!(
            "would reload pgbouncer (SIGHUP to the pid in {})",
            p.pidfile.display()
        );
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
    fn conn_url_forms() {
        assert_eq!(
            parse_conn_url("postgres://198.51.100.11:5432/postgres"),
            Ok(("198.51.100.11".into(), 5432))
        );
        assert_eq!(
            parse_conn_url("postgresql://db1.example.com/x"),
            Ok(("db1.example.com".into(), 5432))
        );
        assert_eq!(
            parse_conn_url("postgres://[2001:db8::11]:6432/postgres"),
            Ok(("2001:db8::11".into(), 6432))
        );
        assert_eq!(
            parse_conn_url("postgres://u:secret@10.0.0.1:5433/x"),
            Ok(("10.0.0.1".into(), 5433))
        );
        for bad in [
            "http://x:1/",
            "postgres://x:0/",
            "postgres://x:70000/",
            "postgres://x:12ab/",
            "postgres://:5432/",
            "postgres://a b:5432/",
            "postgres://x\n[pgbouncer]:5432/",
            "postgres://x=y:5432/",
            "postgres://'x':5432/",
            "postgres://[::1:5432/",
            "postgres://[notv6]:5432/",
        ] {
            assert!(parse_conn_url(bad).is_err(), "{bad:?}");
        }
        let long = format!("postgres://{}:5432/", "a".repeat(300));
        assert!(parse_conn_url(&long).is_err());
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
        let es = vec![
            e("service/batman/leader", "pg1"),
            e(
                "service/batman/members/pg1",
                r#"{"conn_url":"postgres://evil\n[pgbouncer]:5432/x"}"#,
            ),
        ];
        assert!(matches!(
            resolve(&es, "service", &cluster(TargetKind::Leader)),
            Resolved::Refused(_)
        ));
        let es = vec![
            e("service/batman/leader", "pg1"),
            e("service/batman/members/pg1", "not json"),
        ];
        assert!(matches!(
            resolve(&es, "service", &cluster(TargetKind::Leader)),
            Resolved::Refused(_)
        ));
    }
}
