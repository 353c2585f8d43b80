//! Reconcile on the PgBouncer host: point the managed `[databases]` entries
//! of pgbouncer.ini at each cluster's leader, and make PgBouncer reload.
//!
//! Leader discovery uses Patroni's own keys only (`keys::ScopeView`): the
//! leader key, then that member's `conn_url` (never the member's `role`,
//! which lags behind the lock). Consul is read before the host lock is taken;
//! the lock covers only the file and the reload. Decisions are ordered by
//! ticket, so a run that read Consul earlier never overwrites the file a
//! later run already pointed at a newer leader.

use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig, TargetKind};
use crate::dcs::consul::Consul;
use crate::dcs::keys::{shown, LeaderKey, ScopeKeys, ScopeView, Scopes};
use crate::dcs::Entry;
use crate::error::{Error, Kind};
use crate::node::apply::Report;
use crate::pooler::admin::{self, Admin};
use crate::pooler::ini::{self, Target};
use crate::pooler::pause::{self, Decision};
use crate::pooler::pause_host::{self, ToResume};
use crate::state::{self, Ticket};
use crate::{note, out, pooler::file};
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
    resolve_view(&ScopeView::read(entries, &keys), &keys, cluster)
}

/// PURE: [`resolve`] on a scope already read.
fn resolve_view(view: &ScopeView, keys: &ScopeKeys, cluster: &Cluster) -> Resolved {
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
///
/// A cluster whose read lacks its leader key may be one the token may not
/// read, wholly or in part (Consul 1.8 filters a recursive read without a
/// word): its leader key, read on its own, says 403 then. Such a cluster is
/// returned as refused, with why; the others are followed as usual
/// (clusters are independent). A probe Consul does not answer leaves the
/// read as it was (no leader key: wait, 75).
async fn read_clusters(
    namespace: &str,
    clusters: &[Cluster],
    consul: &Consul,
) -> Result<(Scopes, Vec<(String, Error)>), Error> {
    let entries = if clusters.len() == 1 {
        consul
            .list(&format!("{namespace}/{}/", clusters[0].scope), false)
            .await?
    } else {
        consul.list(&format!("{namespace}/"), false).await?
    };
    let scopes = Scopes::new(entries, namespace);
    let mut refused = Vec::new();
    for c in clusters {
        let keys = ScopeKeys::new(namespace, &c.scope);
        if let Err(e) = consul
            .check_hidden(&keys.prefix, scopes.of(&c.scope), &keys.leader)
            .await
        {
            refused.push((c.scope.clone(), e.context(format!("cluster {}", c.scope))));
        }
    }
    Ok((scopes, refused))
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
    report.facts.pgbouncer = Some(crate::metrics::PgbouncerFacts {
        scopes: p.clusters.iter().map(|c| c.scope.clone()).collect(),
        ..Default::default()
    });
    let read = read_clusters(&cfg.consul.namespace, &p.clusters, consul).await;
    // Taken after the read: a Consul that hung for its whole timeout must
    // not stretch a pause past pause_timeout.
    let now = pause_host::now();
    let mut to_resume = pause_host::unconfigured(cfg, p, dry_run);
    let (entries, mut refused) = match read {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context("pgbouncer.ini kept as it is"));
            // Without Consul only the pause timeout can still act.
            for c in &p.clusters {
                let local = state::read_pause(&cfg.lock_file, &c.scope);
                if let Some(Decision::Resume(why)) = pause::expired(&local, p.pause_timeout, &now) {
                    to_resume.push(ToResume::of(cfg, c, &local, why, None));
                }
            }
            finish(cfg, p, consul, budget, dry_run, &to_resume, report).await;
            return;
        }
    };
    let mut targets: Vec<(String, Target)> = Vec::new();
    let mut to_pause = Vec::new();
    let mut once_followed = Vec::new();
    for c in &p.clusters {
        let keys = ScopeKeys::new(&cfg.consul.namespace, &c.scope);
        let local = state::read_pause(&cfg.lock_file, &c.scope);
        if let Some(at) = refused.iter().position(|(s, _)| *s == c.scope) {
            let (_, e) = refused.swap_remove(at);
            report.fail(e.context("its entries kept as they are"));
            // What Consul will not say, only the pause timeout can act on.
            if let Some(Decision::Resume(why)) = pause::expired(&local, p.pause_timeout, &now) {
                to_resume.push(ToResume::of(cfg, c, &local, why, None));
            }
            continue;
        }
        let view = ScopeView::read(entries.of(&c.scope), &keys);
        if local.leaderless_served && matches!(view.leader, LeaderKey::Name(_)) && !dry_run {
            pause_host::leader_seen(cfg, budget, &c.scope);
        }
        let decision = pause::decide(&view, &local, p.pause_on, p.pause_timeout, &now);
        crate::debug_line!("cluster {}: pause decision {decision:?}", c.scope);
        let follow = match decision {
            Decision::Nothing => true,
            Decision::Ignored(why) => {
                note!("cluster {}: {why}", c.scope);
                true
            }
            Decision::Pause { request } => {
                to_pause.push((c, request, view.clone()));
                false
            }
            Decision::Hold(why) => {
                note!("cluster {}: paused: {why}", c.scope);
                report.set(Kind::Temporary);
                false
            }
            Decision::Adopt { request } => {
                if dry_run {
                    out::line(format_args!(
                        "would confirm request {request} (cluster {}, paused already)",
                        c.scope
                    ));
                } else {
                    pause_host::adopt(cfg, consul, budget, c, request, report).await;
                }
                false
            }
            Decision::Resume(why) => {
                to_resume.push(ToResume::of(cfg, c, &local, why, Some(&view)));
                true
            }
            Decision::ResumeOnceWritable => {
                let why = match resolve_view(&view, &keys, c) {
                    Resolved::Target(_, leader) => {
                        pause_host::wait_writable(&view, &leader, &local, p, budget, report).await
                    }
                    _ => None,
                };
                match why {
                    Some(why) => {
                        once_followed.push(ToResume::of(cfg, c, &local, why, Some(&view)));
                        true
                    }
                    None => {
                        report.set(Kind::Temporary);
                        false
                    }
                }
            }
        };
        if !follow {
            continue;
        }
        match resolve_view(&view, &keys, c) {
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
    for (c, request, view) in &to_pause {
        if dry_run {
            out::line(format_args!(
                "would pause {} (cluster {}{})",
                c.databases.join(", "),
                c.scope,
                request
                    .as_ref()
                    .map(|r| format!(", request {r}"))
                    .unwrap_or_default()
            ));
        } else {
            pause_host::pause_cluster(
                cfg,
                p,
                consul,
                budget,
                c,
                request.clone(),
                view,
                ticket,
                report,
            )
            .await;
        }
    }
    let followed = if targets.is_empty() {
        Followed::default()
    } else {
        follow_leaders(cfg, p, &targets, ticket, budget, dry_run, report).await
    };
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.rewrote = followed.rewrote;
    }
    // A resume sends the queued clients wherever the entries point: only
    // once PgBouncer has loaded entries that point at the new leader.
    for r in once_followed {
        if followed.current && !r.databases.iter().any(|d| followed.missing.contains(d)) {
            to_resume.push(r);
        } else if !dry_run {
            note!(
                "cluster {}: {}, but PgBouncer does not point at it yet; still paused",
                r.scope,
                r.why
            );
            report.set(Kind::Temporary);
        }
    }
    finish(cfg, p, consul, budget, dry_run, &to_resume, report).await;
}

/// The end of every reconcile: resume what may resume, report pauses that
/// are not this host's, note what stays paused.
async fn finish(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    dry_run: bool,
    to_resume: &[ToResume],
    report: &mut Report,
) {
    if dry_run {
        pause_host::show_resumes(to_resume);
        return;
    }
    pause_host::resume(cfg, p, consul, budget, to_resume, report).await;
    pause_host::report_foreign_pauses(cfg, p, budget, report).await;
    pause_host::paused_now(cfg, p, report);
}

/// What `follow_leaders` did.
#[derive(Debug, Default)]
struct Followed {
    /// It rewrote pgbouncer.ini.
    rewrote: bool,
    /// PgBouncer serves the targets given: `SHOW DATABASES` shows them
    /// (without an admin console: the file is current and SIGHUP was sent
    /// after it, all that can be known).
    current: bool,
    /// Databases with no entry in the file.
    missing: Vec<String>,
}

/// Points the managed entries at `targets`, under the lock, and reloads
/// PgBouncer (after the lock) when the file changed, a reload is still
/// pending, or PgBouncer serves something else than the file says.
async fn follow_leaders(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(String, Target)],
    ticket: Ticket,
    budget: &Budget,
    dry_run: bool,
    report: &mut Report,
) -> Followed {
    let mut done = Followed::default();
    let lock = if dry_run {
        None
    } else {
        let until = (Instant::now() + Duration::from_secs(1)).min(budget.end);
        match state::acquire(&cfg.lock_file, until) {
            Ok(l) => Some(l),
            Err(e) => {
                report.fail(e);
                return done;
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
                return done;
            }
        }
    }
    let input = match std::fs::read(&p.ini) {
        Ok(b) => b,
        Err(e) => {
            report.fail(Error::failed(format!("reading {}", p.ini.display()), e));
            return done;
        }
    };
    let pairs: Vec<(&str, &Target)> = targets.iter().map(|(d, t)| (d.as_str(), t)).collect();
    let edited = match ini::edit(&input, &pairs) {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context(format!("{} kept as it is", p.ini.display())));
            return done;
        }
    };
    if !edited.missing.is_empty() {
        report.fail(Error::failed(
            format!("{}", p.ini.display()),
            format!("no [databases] entry named {}", edited.missing.join(", ")),
        ));
        done.missing = edited.missing.clone();
    }
    // A file without any of the managed entries gives nothing to follow the
    // leaders in: most likely an operator's editor caught between its
    // truncate and its write (O_TRUNC, then write). Nothing is written, and
    // PgBouncer is not reloaded onto it: 1.18 refuses an empty file ("main
    // section missing from config file") and a reload still owed to an
    // earlier run's write would be spent on it, cleared as done. A pending
    // reload stays pending for a run that finds the entries again.
    if none_found(&edited, &pairs) {
        return done;
    }
    if dry_run {
        if edited.output == input {
            out::line(format_args!("pgbouncer.ini: nothing to do"));
        } else {
            out::line(format_args!(
                "would rewrite {}: {}",
                p.ini.display(),
                summary(targets, &edited.changed)
            ));
            out::line(format_args!(
                "would reload pgbouncer ({})",
                match &p.admin {
                    Some(_) => "RELOAD on the admin console".to_string(),
                    None => format!("SIGHUP to the pid in {}", p.pidfile.display()),
                }
            ));
        }
        return done;
    }
    // The pending mark is set from the moment a new file is about to be
    // written until PgBouncer is seen to serve it (without an admin console:
    // until it took SIGHUP): a run killed in between, or a reload PgBouncer
    // did not take, is finished by the next run although the file is
    // already current.
    if edited.output == input {
        let pending = state::reload_pending(&cfg.lock_file);
        drop(lock);
        let present = present(&pairs, &edited);
        done.current = match pending {
            Some(seen) => {
                note!(
                    "a previous run rewrote {} but PgBouncer was not seen to load it; reloading",
                    p.ini.display()
                );
                reload(cfg, p, &present, Some(&seen), ticket, budget, report).await
            }
            None => settled(cfg, p, &present, ticket, budget, report).await,
        };
        return done;
    }
    if let Err(e) = state::mark_reload_pending(&cfg.lock_file, ticket) {
        crate::warn_line!("{e}; a failed reload would not be retried");
    }
    let seen = state::reload_pending(&cfg.lock_file).unwrap_or_default();
    // An operator's edit made since the read is never overwritten
    // (file::write_atomic): the file is read and edited again.
    let (mut input, mut edited) = (input, edited);
    for attempt in 1.. {
        match file::write_atomic(&p.ini, &input, &edited.output) {
            Ok(true) => break,
            Ok(false) if attempt < 3 => {
                note!(
                    "{} changed while it was being rewritten; editing it again",
                    p.ini.display()
                );
                let again = std::fs::read(&p.ini)
                    .map_err(|e| Error::failed(format!("reading {}", p.ini.display()), e))
                    .and_then(|i| ini::edit(&i, &pairs).map(|e| (i, e)));
                match again {
                    Ok((_, e)) if none_found(&e, &pairs) => {
                        report.fail(Error::failed(
                            format!("{}", p.ini.display()),
                            format!("no [databases] entry named {}", e.missing.join(", ")),
                        ));
                        done.missing = e.missing;
                        return done;
                    }
                    Ok((i, e)) if e.output == i => {
                        // The edit points at the leaders itself; PgBouncer
                        // has not loaded it yet.
                        note!(
                            "{} changed while it was being rewritten, and points at the leaders now; reloading",
                            p.ini.display()
                        );
                        drop(lock);
                        let present = present(&pairs, &e);
                        done.current =
                            reload(cfg, p, &present, Some(&seen), ticket, budget, report).await;
                        return done;
                    }
                    Ok((i, e)) => (input, edited) = (i, e),
                    Err(e) => {
                        report.fail(e.context(format!("{} kept as it is", p.ini.display())));
                        return done;
                    }
                }
            }
            Ok(false) => {
                report.fail(Error::temporary(
                    format!("{}", p.ini.display()),
                    "changed under every rewrite; left to the next run",
                ));
                return done;
            }
            Err(e) => {
                report.fail(e);
                return done;
            }
        }
    }
    if let Err(e) = state::set_decided(&cfg.lock_file, SUBJECT, ticket) {
        crate::warn_line!("{e}");
    }
    note!(
        "rewrote {}: {}",
        p.ini.display(),
        summary(targets, &edited.changed)
    );
    done.rewrote = true;
    // The reload reads whatever file is there then; a run that rewrites it
    // meanwhile reloads after its own write. So the lock need not be held
    // across the admin console's answer.
    drop(lock);
    let present = present(&pairs, &edited);
    done.current = reload(cfg, p, &present, Some(&seen), ticket, budget, report).await;
    done
}

/// The managed entries the file holds (a missing one is reported apart):
/// what PgBouncer must serve once it has loaded the file.
fn present<'a>(
    pairs: &[(&'a str, &'a Target)],
    edited: &ini::Edited,
) -> Vec<(&'a str, &'a Target)> {
    pairs
        .iter()
        .filter(|(d, _)| !edited.missing.iter().any(|m| m == d))
        .copied()
        .collect()
}

/// True when the edit found none of the managed entries in the file.
fn none_found(edited: &ini::Edited, pairs: &[(&str, &Target)]) -> bool {
    pairs
        .iter()
        .all(|(d, _)| edited.missing.iter().any(|m| m == d))
}

fn summary(targets: &[(String, Target)], changed: &[String]) -> String {
    targets
        .iter()
        .filter(|(d, _)| changed.contains(d))
        .map(|(d, t)| format!("{d} -> {}:{}", t.host, t.port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A managed database that PgBouncer does not serve from its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// The database.
    pub database: String,
    /// Where PgBouncer serves it from (`host:port`); `None`: it has no
    /// such database.
    pub serves: Option<String>,
    /// Where the file points it.
    pub target: Target,
}

impl std::fmt::Display for Unserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.serves {
            Some(s) => write!(f, "{} from {s}", self.database),
            None => write!(f, "{} from nowhere (no such database)", self.database),
        }?;
        write!(f, ", not {}:{}", self.target.host, self.target.port)
    }
}

/// PURE: the databases of `targets` that PgBouncer, by its `SHOW DATABASES`
/// rows, does not serve from their target (host and port as the file has
/// them: PgBouncer shows the entry's values as written, unquoted). Empty
/// when PgBouncer has loaded every one of them.
pub fn unserved(rows: &[admin::Database], targets: &[(&str, &Target)]) -> Vec<Unserved> {
    let mut out: Vec<Unserved> = Vec::new();
    for (db, t) in targets {
        if out.iter().any(|u| u.database == *db) {
            continue;
        }
        let row = rows.iter().find(|r| r.name == *db);
        let ok = row
            .is_some_and(|r| r.host.as_deref() == Some(t.host.as_str()) && r.port == Some(t.port));
        if !ok {
            out.push(Unserved {
                database: db.to_string(),
                serves: row.map(|r| {
                    format!(
                        "{}:{}",
                        r.host.as_deref().unwrap_or("(a Unix socket)"),
                        r.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                    )
                }),
                target: (*t).clone(),
            });
        }
    }
    out
}

fn listed(u: &[Unserved]) -> String {
    u.iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Kept back from the run's end for SIGHUP, the fallback of RELOAD.
const SIGHUP_MARGIN: Duration = Duration::from_millis(50);
/// How long RELOAD may take.
const RELOAD_WAIT: Duration = Duration::from_secs(2);
/// How long `SHOW DATABASES` may take; after SIGHUP (handled in
/// PgBouncer's own time) how long it is asked again until it shows the
/// file's entries.
const CHECK_WAIT: Duration = Duration::from_secs(1);
/// Between two looks at `SHOW DATABASES` after SIGHUP.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How many reloads one run makes when PgBouncer does not take them.
const RELOAD_TRIES: u32 = 3;
/// Left of the run at least to try a reload again.
const RETRY_NEEDS: Duration = Duration::from_millis(300);

/// The file already points at the targets and no reload is owed: with an
/// admin console, `SHOW DATABASES` says whether PgBouncer serves them (a
/// reload it did not take, by a run that could not check, leaves a current
/// file and old entries), and a PgBouncer that does not is reloaded. True
/// when PgBouncer serves the targets; without a console the file is all
/// there is to go by.
async fn settled(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    ticket: Ticket,
    budget: &Budget,
    report: &mut Report,
) -> bool {
    let Some(a) = &p.admin else {
        note!("{} already points at the leaders", p.ini.display());
        return true;
    };
    let until = (Instant::now() + CHECK_WAIT).min(budget.end);
    match ask(a, targets, until, false).await {
        Ok(u) if u.is_empty() => {
            note!("{} already points at the leaders", p.ini.display());
            true
        }
        Ok(u) => {
            note!(
                "{} points at the leaders, but PgBouncer still serves {}; reloading",
                p.ini.display(),
                listed(&u)
            );
            reload(cfg, p, targets, None, ticket, budget, report).await
        }
        Err(e) => {
            crate::warn_line!(
                "{} points at the leaders; whether PgBouncer serves them is not known: {e}",
                p.ini.display()
            );
            false
        }
    }
}

/// Asks the admin console which of `targets` PgBouncer does not serve;
/// with `again`, asks until it serves them all or `until`.
async fn ask(
    a: &crate::config::AdminConfig,
    targets: &[(&str, &Target)],
    until: Instant,
    again: bool,
) -> Result<Vec<Unserved>, Error> {
    let admin = Admin::connect(a, until).await?;
    loop {
        let u = unserved(&admin.databases(until).await?, targets);
        if u.is_empty() || !again || Instant::now() + CHECK_EVERY >= until {
            return Ok(u);
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// One reload, and then what PgBouncer serves: how it was made, and the
/// databases of `targets` it does not serve from them (`Err` inside: the
/// console could not be asked). `Err`: not even SIGHUP could be sent.
async fn reload_once(
    a: &crate::config::AdminConfig,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    budget: &Budget,
) -> Result<(String, Result<Vec<Unserved>, Error>), Error> {
    let until = (Instant::now() + RELOAD_WAIT)
        .min(budget.end.checked_sub(SIGHUP_MARGIN).unwrap_or(budget.end));
    let admin = if until <= Instant::now() {
        Err(Error::temporary(
            "RELOAD on the admin console",
            "no time left in the run",
        ))
    } else {
        Admin::connect(a, until).await
    };
    let fallback = match admin {
        Ok(admin) => match admin.command("RELOAD", until).await {
            Ok(true) => {
                // 1.18 loads the file before it answers (admin.c
                // admin_cmd_reload calls load_config): one look tells.
                let until = (Instant::now() + CHECK_WAIT).min(budget.end);
                let rows = admin.databases(until).await;
                return Ok((
                    "RELOAD on the admin console".into(),
                    rows.map(|r| unserved(&r, targets)),
                ));
            }
            Ok(false) => "RELOAD on the admin console did not answer in time".to_string(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    crate::warn_line!("{fallback}; sending SIGHUP");
    let pid = file::reload(&p.pidfile)?;
    let until = (Instant::now() + CHECK_WAIT).min(budget.end);
    Ok((
        format!("SIGHUP to pid {pid}"),
        ask(a, targets, until, true).await,
    ))
}

/// True when `file` holds every one of `targets` at its target.
fn points_at(file: &[u8], targets: &[(&str, &Target)]) -> bool {
    ini::edit(file, targets).is_ok_and(|e| e.output == file && e.missing.is_empty())
}

/// Makes PgBouncer load the file, and with an admin console checks that it
/// did. The reload is RELOAD on the console, or SIGHUP when there is none
/// or it does not answer in time. PgBouncer 1.18 answers RELOAD, and takes
/// SIGHUP, also when it cannot load the file: it logs "config file loading
/// failed" and keeps its old entries (only 1.25's RELOAD reports the
/// error); an error in the file, or an operator's edit caught between its
/// truncate and its write. So a reload is done when `SHOW DATABASES` shows
/// every entry of `targets` at its target. One that is not is tried again
/// a few times in the run (an edit takes milliseconds), then reported with
/// the mark `seen` kept: exit 1 when the file stayed the same throughout
/// (PgBouncer refuses this very file: someone must mend it; its log says
/// why), 75 when it changed meanwhile (an edit under way: the next run
/// tries again). The mark is cleared (unless another run set it anew) and
/// true returned only when PgBouncer is seen to serve the targets, or,
/// without a console, once SIGHUP was sent: nothing more can be known then.
async fn reload(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    seen: Option<&str>,
    ticket: Ticket,
    budget: &Budget,
    report: &mut Report,
) -> bool {
    let clear = || {
        if let Some(seen) = seen {
            let until = (Instant::now() + Duration::from_millis(200)).min(budget.end);
            state::clear_reload_pending(&cfg.lock_file, seen, until);
        }
    };
    let Some(a) = &p.admin else {
        return match file::reload(&p.pidfile) {
            Ok(pid) => {
                note!(
                    "reloaded pgbouncer (SIGHUP to pid {pid}; without pgbouncer.admin nothing says whether it loaded the file)"
                );
                clear();
                true
            }
            Err(e) => {
                report.fail(e);
                false
            }
        };
    };
    let ini = p.ini.display();
    let first = std::fs::read(&p.ini).ok();
    let superseded = || {
        let newer = state::last_decided(&cfg.lock_file, SUBJECT).is_some_and(|l| l > ticket);
        if newer {
            note!("a newer run rewrote {ini} meanwhile; its reload stands");
        }
        newer
    };
    let mut last: Vec<Unserved> = Vec::new();
    for attempt in 1..=RELOAD_TRIES {
        if attempt > 1 {
            // An operator's in-place edit (truncate, then write) is over
            // in milliseconds: the file is read again after a pause, and
            // reloaded only if it still points at the leaders.
            let pause = Duration::from_millis(100 * u64::from(attempt - 1));
            crate::warn_line!(
                "PgBouncer did not take the reload: it still serves {}; trying again in {pause:?}",
                listed(&last)
            );
            tokio::time::sleep(pause).await;
            if superseded() {
                return false;
            }
            if !std::fs::read(&p.ini).is_ok_and(|f| points_at(&f, targets)) {
                report.fail(Error::temporary(
                    format!("{ini}"),
                    format!(
                        "PgBouncer still serves {}, and the file changed meanwhile: it no longer points at the leaders; left to the next run",
                        listed(&last)
                    ),
                ));
                return false;
            }
        }
        let (how, checked) = match reload_once(a, p, targets, budget).await {
            Ok(r) => r,
            Err(e) => {
                report.fail(e);
                return false;
            }
        };
        last = match checked {
            Ok(u) if u.is_empty() => {
                let serves: Vec<String> = targets
                    .iter()
                    .map(|(d, t)| format!("{d} from {}:{}", t.host, t.port))
                    .collect();
                note!(
                    "reloaded pgbouncer ({how}); it serves {}",
                    serves.join(", ")
                );
                clear();
                return true;
            }
            Ok(u) => u,
            Err(e) => {
                report.fail(Error::temporary(
                    format!("reloaded pgbouncer ({how})"),
                    format!(
                        "whether it loaded {ini} is not known ({e}); the next run checks again"
                    ),
                ));
                return false;
            }
        };
        if superseded() {
            return false;
        }
        let next_pause = Duration::from_millis(100 * u64::from(attempt));
        if Instant::now() + next_pause + RETRY_NEEDS >= budget.end {
            break;
        }
    }
    let why = format!(
        "PgBouncer did not load it: it still serves {} (its log says why); the next run reloads again",
        listed(&last)
    );
    report.fail(if std::fs::read(&p.ini).ok() == first {
        Error::failed(format!("{ini}"), why)
    } else {
        Error::temporary(
            format!("{ini}"),
            format!("changed while PgBouncer was being reloaded; {why}"),
        )
    });
    false
}

/// For `status`: each cluster's leader and whether the ini follows it.
pub async fn status(cfg: &Config, consul: &Consul) -> Result<serde_json::Value, Error> {
    let Some(p) = &cfg.pgbouncer else {
        return Ok(serde_json::Value::Null);
    };
    let (entries, refused) = read_clusters(&cfg.consul.namespace, &p.clusters, consul).await?;
    if let Some((_, e)) = refused.into_iter().next() {
        return Err(e);
    }
    let input = std::fs::read(&p.ini)
        .map_err(|e| Error::failed(format!("reading {}", p.ini.display()), e))?;
    let mut out = Vec::new();
    for c in &p.clusters {
        let mut m = serde_json::Map::new();
        m.insert("scope".into(), c.scope.clone().into());
        m.insert("databases".into(), c.databases.clone().into());
        match resolve(entries.of(&c.scope), &cfg.consul.namespace, c) {
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

    fn row(name: &str, host: Option<&str>, port: Option<u16>) -> admin::Database {
        admin::Database {
            name: name.into(),
            host: host.map(Into::into),
            port,
            paused: false,
        }
    }

    /// Whether PgBouncer serves the file's entries is read from
    /// `SHOW DATABASES`, never from the file: host and port must both match.
    #[test]
    fn unserved_compares_show_databases_rows_with_the_targets() {
        let b = Target {
            host: "198.51.100.12".into(),
            port: 5433,
        };
        let named = Target {
            host: "pg2.example.net".into(),
            port: 5432,
        };
        let targets = [("appdb", &b), ("reports", &named)];
        let rows = [
            row("pgbouncer", None, Some(6432)),
            row("appdb", Some("198.51.100.12"), Some(5433)),
            row("reports", Some("pg2.example.net"), Some(5432)),
            row("other", Some("198.51.100.11"), Some(5432)),
        ];
        assert_eq!(unserved(&rows, &targets), vec![]);
        // A reload not taken: the old host, or the old port.
        let old = [
            row("appdb", Some("198.51.100.11"), Some(5433)),
            row("reports", Some("pg2.example.net"), Some(5431)),
        ];
        let u = unserved(&old, &targets);
        assert_eq!(
            u.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            [
                "appdb from 198.51.100.11:5433, not 198.51.100.12:5433",
                "reports from pg2.example.net:5431, not pg2.example.net:5432"
            ]
        );
        // No such database (a file PgBouncer never loaded), a Unix socket,
        // a port it did not show.
        let odd = [
            row("reports", None, Some(5432)),
            row("appdb", Some("198.51.100.12"), None),
        ];
        assert_eq!(
            unserved(&odd, &targets[..1])[0].to_string(),
            "appdb from 198.51.100.12:?, not 198.51.100.12:5433"
        );
        assert_eq!(
            unserved(&odd[..0], &targets[..1])[0].serves,
            None,
            "no such database"
        );
        assert_eq!(
            unserved(&odd, &targets[1..])[0].serves.as_deref(),
            Some("(a Unix socket):5432")
        );
        // A name managed twice is reported once; nothing managed, nothing owed.
        assert_eq!(unserved(&[], &[("appdb", &b), ("appdb", &b)]).len(), 1);
        assert_eq!(unserved(&old, &[]), vec![]);
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
