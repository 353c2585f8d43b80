//! Reconcile on the PgBouncer host: point the managed `[databases]` entries
//! of pgbouncer.ini at each cluster's leader, and make PgBouncer reload.
//!
//! Leader discovery uses Patroni's own keys only (`keys::ScopeView`): the
//! leader key, then that member's `conn_url` (never the member's `role`,
//! which lags behind the lock). Consul is read before the host lock is taken;
//! the lock covers only the file and the reload. Decisions are ordered by
//! ticket, so a run that read Consul earlier never overwrites the file a
//! later run already pointed at a newer leader.

use crate::admin::{self, Admin};
use crate::apply::Report;
use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig, TargetKind};
use crate::consul::{Consul, Entry};
use crate::error::{Error, Kind};
use crate::ini::{self, Target};
use crate::keys::{shown, LeaderKey, PauseRequest, ScopeKeys, ScopeView};
use crate::pause::{self, Decision};
use crate::state::{self, Ticket};
use crate::{note, out, patroni_api, pgbouncer};
use std::time::{Duration, Instant};

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

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cluster to resume after the file is reloaded, and why.
struct ToResume<'a> {
    cluster: &'a Cluster,
    why: String,
    keys: ScopeKeys,
    view: Option<ScopeView>,
}

/// Reconciles pgbouncer.ini once: pauses what asks for a pause, points the
/// managed entries at the leaders, reloads, resumes what may resume.
pub async fn reconcile(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    dry_run: bool,
    report: &mut Report,
) {
    let ticket = Ticket::now();
    let now = unix_now();
    let timeout_secs = p.pause_timeout.as_secs().max(1);
    report.facts.pgbouncer = Some(crate::metrics::PgbouncerFacts {
        scopes: p.clusters.iter().map(|c| c.scope.clone()).collect(),
        ..Default::default()
    });
    let entries = match read_clusters(&cfg.consul.namespace, &p.clusters, consul).await {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context("pgbouncer.ini kept as it is"));
            // Without Consul only the pause timeout can still act.
            let expired: Vec<ToResume> = p
                .clusters
                .iter()
                .filter_map(|c| {
                    let local = state::read_pause(&cfg.lock_file, &c.scope);
                    match pause::expired(&local, timeout_secs, now)? {
                        Decision::Resume(why) => Some(ToResume {
                            cluster: c,
                            why,
                            keys: ScopeKeys::new(&cfg.consul.namespace, &c.scope),
                            view: None,
                        }),
                        _ => None,
                    }
                })
                .collect();
            if !dry_run {
                resume(cfg, p, consul, budget, &expired, report).await;
            }
            paused_now(cfg, p, report);
            return;
        }
    };
    let mut targets: Vec<(String, Target)> = Vec::new();
    let mut to_pause = Vec::new();
    let mut to_resume = Vec::new();
    for c in &p.clusters {
        let keys = ScopeKeys::new(&cfg.consul.namespace, &c.scope);
        let view = ScopeView::read(&entries, &keys);
        let local = state::read_pause(&cfg.lock_file, &c.scope);
        let decision = pause::decide(&view, &local, p.pause_on, timeout_secs, now);
        crate::debug_line!("cluster {}: pause decision {decision:?}", c.scope);
        let follow = match &decision {
            Decision::Nothing => true,
            Decision::Pause { request } => {
                to_pause.push((c, request.clone(), view.clone(), keys.clone()));
                false
            }
            Decision::Hold(why) => {
                note!("cluster {}: paused: {why}", c.scope);
                report.set(Kind::Temporary);
                false
            }
            Decision::Resume(why) => {
                to_resume.push(ToResume {
                    cluster: c,
                    why: why.clone(),
                    keys: keys.clone(),
                    view: Some(view.clone()),
                });
                true
            }
            Decision::ResumeOnceWritable => {
                let writable = match resolve(&entries, &cfg.consul.namespace, c) {
                    Resolved::Target(_, leader) => {
                        wait_writable(&view, &leader, &local, p, budget, report).await
                    }
                    _ => false,
                };
                if writable {
                    to_resume.push(ToResume {
                        cluster: c,
                        why: "the new leader answers as a writable primary".into(),
                        keys: keys.clone(),
                        view: Some(view.clone()),
                    });
                } else {
                    report.set(Kind::Temporary);
                }
                writable
            }
        };
        if !follow {
            continue;
        }
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
                    if let Some(f) = report.facts.pgbouncer.as_mut() {
                        f.targets
                            .push((c.scope.clone(), db.clone(), t.host.clone(), t.port));
                    }
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
    if dry_run {
        for (c, request, _, _) in &to_pause {
            out::line(format_args!(
                "would pause {} (cluster {}{})",
                c.databases.join(", "),
                c.scope,
                request
                    .as_ref()
                    .map(|r| format!(", request {r}"))
                    .unwrap_or_default()
            ));
        }
    } else {
        for (c, request, view, keys) in &to_pause {
            pause_cluster(
                cfg,
                p,
                consul,
                budget,
                c,
                request.clone(),
                view,
                keys,
                ticket,
                report,
            )
            .await;
        }
    }
    if !targets.is_empty() {
        let rewrote = follow_leaders(cfg, p, &targets, ticket, dry_run, report).await;
        if let Some(f) = report.facts.pgbouncer.as_mut() {
            f.rewrote = rewrote;
        }
    }
    if dry_run {
        for r in &to_resume {
            out::line(format_args!(
                "would resume {} (cluster {}: {})",
                r.cluster.databases.join(", "),
                r.cluster.scope,
                r.why
            ));
        }
    } else {
        resume(cfg, p, consul, budget, &to_resume, report).await;
    }
    paused_now(cfg, p, report);
}

/// For the metrics: which clusters this host has paused after the run.
fn paused_now(cfg: &Config, p: &PgbouncerConfig, report: &mut Report) {
    let now: Vec<String> = p
        .clusters
        .iter()
        .filter(|c| state::read_pause(&cfg.lock_file, &c.scope).paused.is_some())
        .map(|c| c.scope.clone())
        .collect();
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.paused_now = now;
    }
}

/// Waits (bounded by the pause's end and the run's) until the new leader's
/// REST API says it is a writable primary.
async fn wait_writable(
    view: &ScopeView,
    leader: &str,
    local: &pause::Local,
    p: &PgbouncerConfig,
    budget: &Budget,
    report: &mut Report,
) -> bool {
    let Some(url) = view.member(leader).and_then(|m| m.status_url()) else {
        // No http api_url to ask: the leader key is all there is.
        note!("leader {leader} has no http api_url to ask; resuming on the leader key");
        return true;
    };
    let paused_at = local.paused.as_ref().map(|x| x.since).unwrap_or(0);
    let left_in_pause =
        Duration::from_secs((paused_at + p.pause_timeout.as_secs()).saturating_sub(unix_now()));
    let run_end = budget
        .end
        .checked_sub(Duration::from_millis(200))
        .unwrap_or(budget.end);
    let until = (Instant::now() + left_in_pause).min(run_end);
    match patroni_api::wait_writable(&url, until).await {
        Ok(true) => true,
        Ok(false) => {
            crate::warn_line!(
                "new leader {leader} did not answer {url} with 200 in time; still paused"
            );
            false
        }
        Err(e) => {
            report.fail(e);
            false
        }
    }
}

/// Pauses one cluster's databases: records the pause first (so a killed run
/// leaves a pause the next run undoes), sends PAUSE, confirms the request. A
/// PAUSE that does not complete by `pause_timeout` is undone at once.
#[allow(clippy::too_many_arguments)]
async fn pause_cluster(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    c: &Cluster,
    request: Option<String>,
    view: &ScopeView,
    keys: &ScopeKeys,
    ticket: Ticket,
    report: &mut Report,
) {
    let Some(admin_cfg) = &p.admin else { return };
    let subject = format!("pgbouncer-pause-{}", c.scope);
    let leader = match &view.leader {
        crate::keys::LeaderKey::Name(n) => Some(n.clone()),
        _ => None,
    };
    {
        let _lock = match state::acquire(&cfg.lock_file, budget.end) {
            Ok(l) => l,
            Err(e) => return report.fail(e),
        };
        if state::last_decided(&cfg.lock_file, &subject).is_some_and(|last| last > ticket) {
            note!(
                "cluster {}: a newer run decided its pause meanwhile",
                c.scope
            );
            return;
        }
        let local = pause::Local {
            paused: Some(pause::Paused {
                request: request.clone(),
                leader,
                since: unix_now(),
            }),
            handled: request.clone(),
        };
        if let Err(e) = state::write_pause(&cfg.lock_file, &c.scope, &local)
            .and_then(|()| state::set_decided(&cfg.lock_file, &subject, ticket))
        {
            return report.fail(e.context(format!("cluster {}: not paused", c.scope)));
        }
    }
    let started = Instant::now();
    let until = admin::pause_until(started, p.pause_timeout, budget.end);
    let admin = match Admin::connect(admin_cfg, until).await {
        Ok(a) => a,
        Err(e) => {
            report.fail(e.context(format!("cluster {}: not paused", c.scope)));
            clear_pause(cfg, &c.scope, ticket, &subject);
            return;
        }
    };
    let mut done = true;
    for db in &c.databases {
        match admin.pause(db, until).await {
            Ok(true) => {}
            Ok(false) => {
                done = false;
                break;
            }
            Err(e) => {
                report.fail(e);
                done = false;
                break;
            }
        }
    }
    drop(admin);
    if !done {
        // PAUSE waits for every server connection to be released; a long
        // transaction (or session pooling) keeps it waiting. Clients must not
        // wait longer than that: undo it and carry on without a pause.
        crate::warn_line!(
            "cluster {}: PAUSE {} did not complete within {:?}; resuming and carrying on without a pause",
            c.scope,
            c.databases.join(", "),
            until.saturating_duration_since(started)
        );
        let r = ToResume {
            cluster: c,
            why: "PAUSE did not complete in time".into(),
            keys: keys.clone(),
            view: None,
        };
        resume(cfg, p, consul, budget, std::slice::from_ref(&r), report).await;
        return;
    }
    note!(
        "paused {} (cluster {}) in {:?}",
        c.databases.join(", "),
        c.scope,
        started.elapsed()
    );
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.paused.push(c.scope.clone());
    }
    // A newer run resumed while this PAUSE waited: what it resumed must not
    // stay paused by this late PAUSE.
    if state::last_decided(&cfg.lock_file, &subject).is_some_and(|last| last > ticket) {
        let r = ToResume {
            cluster: c,
            why: "a newer run resumed while this PAUSE waited".into(),
            keys: keys.clone(),
            view: None,
        };
        resume(cfg, p, consul, budget, std::slice::from_ref(&r), report).await;
        return;
    }
    if let Some(id) = request {
        let ack = PauseRequest {
            member: cfg.name.clone(),
            id,
            since: unix_now(),
        };
        let key = format!("{}{}", keys.pause_acks, cfg.name);
        consul.set_deadline(budget.end);
        let body = serde_json::to_vec(&ack).unwrap_or_default();
        if let Err(e) = consul.put(&key, &body).await {
            report.fail(e.context("the pause is made but not confirmed"));
        }
    }
}

/// Forgets a pause that was recorded but never made.
fn clear_pause(cfg: &Config, scope: &str, ticket: Ticket, subject: &str) {
    let mut local = state::read_pause(&cfg.lock_file, scope);
    local.paused = None;
    if let Err(e) = state::write_pause(&cfg.lock_file, scope, &local) {
        crate::warn_line!("{e}");
    }
    let _ = state::set_decided(&cfg.lock_file, subject, ticket);
}

/// Resumes clusters this host paused (RESUME on a fresh admin connection;
/// "not paused" counts as done), then forgets the pause and clears the
/// request and this host's confirmation in Consul.
async fn resume(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    clusters: &[ToResume<'_>],
    report: &mut Report,
) {
    if clusters.is_empty() {
        return;
    }
    let Some(admin_cfg) = &p.admin else { return };
    let admin = match Admin::connect(admin_cfg, budget.end).await {
        Ok(a) => a,
        Err(e) => return report.fail(e.context("resuming")),
    };
    for r in clusters {
        let c = r.cluster;
        let mut ok = true;
        for db in &c.databases {
            if let Err(e) = admin.resume(db, budget.end).await {
                report.fail(e);
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        note!(
            "resumed {} (cluster {}): {}",
            c.databases.join(", "),
            c.scope,
            r.why
        );
        let subject = format!("pgbouncer-pause-{}", c.scope);
        let mut local = state::read_pause(&cfg.lock_file, &c.scope);
        let made = local.paused.take();
        if let (Some(m), Some(f)) = (&made, report.facts.pgbouncer.as_mut()) {
            let lasted = unix_now().saturating_sub(m.since);
            f.resumed
                .push((c.scope.clone(), Duration::from_secs(lasted)));
        }
        let request = made.and_then(|x| x.request);
        if let Err(e) = state::write_pause(&cfg.lock_file, &c.scope, &local)
            .and_then(|()| state::set_decided(&cfg.lock_file, &subject, Ticket::now()))
        {
            report.fail(e);
        }
        // Consul's part is tidying: the request is one this host served, and
        // its confirmation is done with.
        consul.set_deadline(budget.end);
        let ack = format!("{}{}", r.keys.pause_acks, cfg.name);
        if let Err(e) = consul.delete(&ack).await {
            crate::debug_line!("{e}");
        }
        if let (Some(id), Some(view)) = (request, &r.view) {
            if let Some((req, index)) = &view.pause_request {
                if req.id == id {
                    if let Err(e) = consul.delete_cas(&r.keys.pause_request, *index).await {
                        crate::debug_line!("{e}");
                    }
                }
            }
        }
    }
}

/// Points the managed entries at `targets`, under the lock, and reloads
/// PgBouncer when the file changed (or a reload is still pending). True
/// when it rewrote the file.
async fn follow_leaders(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(String, Target)],
    ticket: Ticket,
    dry_run: bool,
    report: &mut Report,
) -> bool {
    let _lock = if dry_run {
        None
    } else {
        match state::acquire(&cfg.lock_file, Instant::now() + Duration::from_secs(1)) {
            Ok(l) => Some(l),
            Err(e) => {
                report.fail(e);
                return false;
            }
        }
    };
    if !dry_run {
        if let Some(last) = state::last_decided(&cfg.lock_file, SUBJECT) {
            if last > ticket {
                note!(
                    "a run that started {:?} after this one rewrote pgbouncer.ini meanwhile; its version stands",
                    last.since(ticket)
                );
                return false;
            }
        }
    }
    let input = match std::fs::read(&p.ini) {
        Ok(b) => b,
        Err(e) => {
            report.fail(Error::failed(format!("reading {}", p.ini.display()), e));
            return false;
        }
    };
    let pairs: Vec<(&str, &Target)> = targets.iter().map(|(d, t)| (d.as_str(), t)).collect();
    let edited = match ini::edit(&input, &pairs) {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context(format!("{} kept as it is", p.ini.display())));
            return false;
        }
    };
    if !edited.missing.is_empty() {
        report.fail(Error::failed(
            format!("{}", p.ini.display()),
            format!("no [databases] entry named {}", edited.missing.join(", ")),
        ));
    }
    // Present from the moment a new file is about to be written until
    // PgBouncer took the reload: a run killed in between, or a failed reload,
    // is finished by the next run although the file is already current.
    let pending = state::reload_pending_path(&cfg.lock_file);
    if edited.output == input {
        if pending.exists() && !dry_run {
            note!(
                "a previous run rewrote {} but did not reload pgbouncer; reloading",
                p.ini.display()
            );
            reload(p, &pending, report).await;
        } else {
            note!("{} already points at the leaders", p.ini.display());
            if dry_run {
                out::line(format_args!("pgbouncer.ini: nothing to do"));
            }
        }
        return false;
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
            "would reload pgbouncer ({})",
            match &p.admin {
                Some(_) => "RELOAD on the admin console".to_string(),
                None => format!("SIGHUP to the pid in {}", p.pidfile.display()),
            }
        ));
        return false;
    }
    if let Err(e) = std::fs::write(&pending, b"") {
        crate::warn_line!(
            "cannot create {}: {e}; a failed reload would not be retried",
            pending.display()
        );
    }
    if let Err(e) = pgbouncer::write_atomic(&p.ini, &edited.output) {
        report.fail(e);
        return false;
    }
    if let Err(e) = state::set_decided(&cfg.lock_file, SUBJECT, ticket) {
        crate::warn_line!("{e}");
    }
    note!("rewrote {}: {summary}", p.ini.display());
    reload(p, &pending, report).await;
    true
}

/// Makes PgBouncer load the file: RELOAD on the admin console when there is
/// one (it is done when the console answers, so a RESUME after it sends the
/// queued clients to the new host), else SIGHUP. Clears the pending mark.
async fn reload(p: &PgbouncerConfig, pending: &std::path::Path, report: &mut Report) {
    if let Some(a) = &p.admin {
        let until = Instant::now() + Duration::from_secs(2);
        let done = match Admin::connect(a, until).await {
            Ok(admin) => admin.command("RELOAD", until).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(true) => {
                note!("reloaded pgbouncer (RELOAD on the admin console)");
                let _ = std::fs::remove_file(pending);
                return;
            }
            Ok(false) => {
                crate::warn_line!("RELOAD on the admin console did not answer; sending SIGHUP")
            }
            Err(e) => crate::warn_line!("{e}; sending SIGHUP"),
        }
    }
    signal_reload(&p.pidfile, pending, report);
}

/// SIGHUP to PgBouncer; clears the pending mark once it was sent.
fn signal_reload(pidfile: &std::path::Path, pending: &std::path::Path, report: &mut Report) {
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
