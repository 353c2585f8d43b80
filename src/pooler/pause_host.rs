//! The PgBouncer host's side of a switchover pause: PAUSE (recorded first),
//! RESUME (of what the record names), the check that a new leader is
//! writable, and the pauses nobody else will end (scopes no longer
//! configured) or that are not this host's (an operator's, a lost record).
//! `pause` decides, `plan` makes the steps; `apply` calls these.

use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig};
use crate::dcs::keys::{shown, PauseRequest, ScopeKeys};
use crate::dcs::Dcs;
use crate::error::Error;
use crate::note;
use crate::patroni_api::Api;
use crate::pooler::admin::{self, Admin};
use crate::pooler::apply::Run;
use crate::pooler::pause::{self, Now, Paused};
use crate::pooler::plan::Resume;
use crate::report::Report;
use crate::state::{self, Ticket};
use std::time::{Duration, Instant};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The present for pause decisions.
pub fn now() -> Now {
    Now {
        at: state::stamp_now(),
        unix: unix_now(),
    }
}

/// Kept back from the run for undoing a PAUSE that did not complete
/// (connect, RESUME, the record).
const UNDO_RESERVE: Duration = Duration::from_millis(500);

/// The ordering subject of a scope's pause decisions.
fn subject(scope: &str) -> String {
    format!("pgbouncer-pause-{scope}")
}

/// A short wait for the host lock around a state file: these writes take
/// microseconds, and a run never waits long behind another.
fn lock_until(budget: &Budget) -> Instant {
    (Instant::now() + Duration::from_millis(500)).min(budget.end)
}

/// Why a pause waiting for its new leader may end.
pub enum Ready {
    /// The new leader answers as writable: point the entries, then resume.
    Writable(String),
    /// The pause reached pause_timeout first: resume now.
    Expired(String),
}

/// Waits (bounded by the pause's end, `left`, and the run's) until the new
/// leader's REST API (`url`) says it runs as a writable primary, or as the
/// standby leader of a standby cluster (all its leader ever becomes).
/// `Ok` when the pause may end (why); `Err(Some)`: a failure to report;
/// `Err(None)`: not yet (said already).
pub async fn wait_ready(
    leader: &str,
    url: Option<&str>,
    left: Duration,
    p: &PgbouncerConfig,
    budget: &Budget,
) -> Result<Ready, Option<Error>> {
    let Some(url) = url else {
        // Patroni always publishes api_url; a member without one leaves the
        // leader key as all there is to go by.
        return Ok(Ready::Writable(format!(
            "the new leader {} holds the leader key (it publishes no api_url to ask)",
            shown(leader)
        )));
    };
    let https = url.starts_with("https:");
    if https && p.patroni_ca_file.is_none() {
        crate::warn_line!(
            "leader {}'s REST API is https and pgbouncer.patroni_ca_file is not set: its promotion cannot be checked, so the pause ends at pgbouncer.pause_timeout",
            shown(leader)
        );
        return Err(None);
    }
    // The CA is for https only: an http API is asked whatever it says.
    let ca = p.patroni_ca_file.as_deref().filter(|_| https);
    let api = Api::new(ca, "pgbouncer.patroni_ca_file").map_err(Some)?;
    let run_end = budget
        .end
        .checked_sub(Duration::from_millis(200))
        .unwrap_or(budget.end);
    let pause_end = Instant::now() + left;
    let until = pause_end.min(run_end);
    match api
        .wait_ready(url, until, &["primary", "standby_leader"])
        .await
    {
        Ok(role) => Ok(Ready::Writable(format!(
            "the new leader {} answers as a writable {}",
            shown(leader),
            if role == "primary" {
                "primary"
            } else {
                "standby leader"
            }
        ))),
        // The pause's own end came first: it ends now, as any pause does at
        // pause_timeout, rather than at the next run.
        Err(why) if until == pause_end => Ok(Ready::Expired(format!(
            "past pgbouncer.pause_timeout, and the new leader {} is not a writable primary yet ({url}: {why})",
            shown(leader)
        ))),
        Err(why) => {
            crate::warn_line!(
                "new leader {} is not a writable primary yet ({url}: {why}); still paused",
                shown(leader)
            );
            Err(None)
        }
    }
}

/// Pauses one cluster's databases: asks PgBouncer which are paused already
/// (an operator's pause stays theirs), records the pause under the lock
/// (so a killed run leaves a pause the next run undoes, and a concurrent
/// run finds it), sends PAUSE, confirms the request. A PAUSE that does not
/// complete by `pause_timeout`, or that PgBouncer refuses, is undone at once.
pub async fn pause_cluster(
    run: &Run<'_>,
    c: &Cluster,
    request: Option<String>,
    leader: Option<String>,
    report: &mut Report,
) {
    let (cfg, p, consul, budget) = (run.cfg, run.p, run.consul, run.budget);
    let Some(admin_cfg) = &p.admin else { return };
    let keys = ScopeKeys::new(cfg.dcs.namespace(), &c.scope);
    let started = Instant::now();
    // PAUSE never takes the whole run: one that does not complete is undone
    // on a fresh connection, and that needs time of its own.
    let undo_by = budget.end.checked_sub(UNDO_RESERVE).unwrap_or(budget.end);
    let until = admin::pause_until(started, p.pause_timeout, undo_by);
    let not_paused = |e: Error| e.context(format!("cluster {}: not paused", c.scope));
    let admin = match Admin::connect(admin_cfg, until).await {
        Ok(a) => a,
        Err(e) => return report.fail(not_paused(e)),
    };
    // Asked before the lock, and so possibly after another run paused: the
    // record, re-read under the lock, says whether that pause is this
    // host's (another run wrote it before its PAUSE).
    let already = match admin.paused_databases(until).await {
        Ok(a) => a,
        Err(e) => return report.fail(not_paused(e)),
    };
    let ours: Vec<String> = c
        .databases
        .iter()
        .filter(|d| !already.contains(d))
        .cloned()
        .collect();
    let recorded = {
        let _local = run.local.lock().await;
        record(run, c, &request, leader, &ours)
    };
    let made = match recorded {
        Ok(Recorded::Made(m)) => m,
        Ok(Recorded::Another) => return,
        Err(e) => return report.fail(not_paused(e)),
    };
    let Some(made) = made else {
        note!(
            "cluster {}: {} already paused in PgBouncer, not by this host (an operator's PAUSE?): confirming the request, and leaving the pause to whoever made it",
            c.scope,
            c.databases.join(", ")
        );
        confirm(cfg, consul, budget, &keys, request, report).await;
        return;
    };
    let failed = send_pauses(&admin, &ours, started, until).await;
    drop(admin);
    let undo = |why: String, decided: Option<Paused>| Resume {
        scope: c.scope.clone(),
        databases: ours.clone(),
        why,
        decided,
        request: None,
        leaderless: false,
    };
    if let Some(why) = failed {
        crate::warn_line!(
            "cluster {}: {why}; resuming {} and carrying on without a pause",
            c.scope,
            ours.join(", ")
        );
        let r = undo("the pause was not made".into(), Some(made.clone()));
        resume(run, std::slice::from_ref(&r), report).await;
        return;
    }
    // While PAUSE waited, a newer run may have ended this pause (the
    // switchover was over by then): what it resumed must not stay paused by
    // this late PAUSE.
    let record = state::read_pause(&cfg.lock_file, &c.scope);
    if record.paused.as_ref() != Some(&made) {
        if record.paused.is_none() {
            note!(
                "cluster {}: another run ended this pause while PAUSE waited",
                c.scope
            );
            let r = undo("ended while PAUSE waited".into(), None);
            resume(run, std::slice::from_ref(&r), report).await;
        }
        return;
    }
    note!(
        "paused {} (cluster {}) in {:?}",
        ours.join(", "),
        c.scope,
        started.elapsed()
    );
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.paused.push(c.scope.clone());
    }
    confirm(cfg, consul, budget, &keys, request, report).await;
}

/// How recording a pause ended.
enum Recorded {
    /// Recorded: this pause (`None`: every database was paused already,
    /// not by this host: nothing of it is this host's).
    Made(Option<Paused>),
    /// Another run paused for this already, or decided newer: nothing to do.
    Another,
}

/// Records the pause under the host lock, before PAUSE is sent (so a
/// killed run leaves a pause the next run undoes, and a concurrent run
/// finds it): unless the record, re-read under the lock, shows a pause or
/// this request served already, or a newer run decided this cluster's pause.
fn record(
    run: &Run<'_>,
    c: &Cluster,
    request: &Option<String>,
    leader: Option<String>,
    ours: &[String],
) -> Result<Recorded, Error> {
    let cfg = run.cfg;
    let _lock = state::acquire(&cfg.lock_file, lock_until(run.budget))?;
    let mut local = state::read_pause(&cfg.lock_file, &c.scope);
    let served = request.is_some() && local.handled == *request;
    if local.paused.is_some() || served {
        crate::debug_line!("cluster {}: another run paused for this already", c.scope);
        return Ok(Recorded::Another);
    }
    if state::last_decided(&cfg.lock_file, &subject(&c.scope)).is_some_and(|l| l > run.ticket) {
        note!(
            "cluster {}: a newer run decided its pause meanwhile",
            c.scope
        );
        return Ok(Recorded::Another);
    }
    local.handled = request.clone();
    local.paused = (!ours.is_empty()).then(|| Paused {
        request: request.clone(),
        leader,
        at: Some(state::stamp_now()),
        databases: ours.to_vec(),
    });
    state::write_pause(&cfg.lock_file, &c.scope, &local)
        .and_then(|()| state::set_decided(&cfg.lock_file, &subject(&c.scope), run.ticket))?;
    Ok(Recorded::Made(local.paused))
}

/// PAUSE of each database in turn, bounded by `until`; why it failed, if it
/// did (the first failure ends it).
async fn send_pauses(
    admin: &Admin,
    ours: &[String],
    started: Instant,
    until: Instant,
) -> Option<String> {
    for db in ours {
        match admin.pause(db, until).await {
            Ok(admin::Pause::Done) => {}
            Ok(admin::Pause::TimedOut) => {
                // PAUSE waits for every server connection to be released; a
                // long transaction (or session pooling) keeps it waiting.
                // Clients must not wait longer than that.
                return Some(format!(
                    "PAUSE {db} did not complete within {:.1} s",
                    until.saturating_duration_since(started).as_secs_f64()
                ));
            }
            Ok(admin::Pause::Refused(why)) => {
                return Some(format!("PgBouncer refused PAUSE {db}: {why}"));
            }
            Err(e) => {
                return Some(e.to_string());
            }
        }
    }
    None
}

/// The leader asks again while its earlier pause is held: the pause stays,
/// now for this request (its clock starts again: a new stop), and the
/// request is confirmed.
pub async fn adopt(run: &Run<'_>, scope: &str, request: &str, report: &mut Report) {
    let (cfg, consul, budget) = (run.cfg, run.consul, run.budget);
    {
        let _local = run.local.lock().await;
        let _lock = match state::acquire(&cfg.lock_file, lock_until(budget)) {
            Ok(l) => l,
            Err(e) => return report.fail(e),
        };
        let mut local = state::read_pause(&cfg.lock_file, scope);
        let Some(p) = local.paused.as_mut() else {
            return;
        };
        p.request = Some(request.to_string());
        p.at = Some(state::stamp_now());
        local.handled = Some(request.to_string());
        if let Err(e) = state::write_pause(&cfg.lock_file, scope, &local) {
            return report.fail(e);
        }
    }
    note!(
        "cluster {}: already paused; the leader stops again, confirming its request {}",
        scope,
        shown(request)
    );
    let keys = ScopeKeys::new(cfg.dcs.namespace(), scope);
    confirm(
        cfg,
        consul,
        budget,
        &keys,
        Some(request.to_string()),
        report,
    )
    .await;
}

/// Confirms `request` under this host's name (`pause-ack/<name>`).
async fn confirm(
    cfg: &Config,
    consul: &Dcs,
    budget: &Budget,
    keys: &ScopeKeys,
    request: Option<String>,
    report: &mut Report,
) {
    let Some(id) = request else { return };
    let ack = PauseRequest {
        member: cfg.name.clone(),
        id,
        since: unix_now(),
    };
    consul.set_deadline(budget.end);
    let body = serde_json::to_vec(&ack).unwrap_or_default();
    if let Err(e) = consul
        .put(&format!("{}{}", keys.pause_acks, cfg.name), &body)
        .await
    {
        report.fail(e.context("the pause is made but not confirmed"));
    }
}

/// Resumes pauses this host made and forgets them, each under the host
/// lock with its record re-read: the record must still hold the very pause
/// the plan decided on (a concurrent run that resumed it, or paused anew,
/// leaves nothing to do here); then clears the request and this host's
/// confirmation in Consul. RESUME of a database that is not paused, or that
/// PgBouncer no longer has, is done.
pub async fn resume(run: &Run<'_>, pauses: &[Resume], report: &mut Report) {
    let (cfg, p, consul, budget) = (run.cfg, run.p, run.consul, run.budget);
    if pauses.is_empty() {
        return;
    }
    let Some(admin_cfg) = &p.admin else { return };
    let admin = match Admin::connect(admin_cfg, budget.end).await {
        Ok(a) => a,
        Err(e) => return report.fail(e.context("resuming")),
    };
    for r in pauses {
        let made = {
            let _local = run.local.lock().await;
            let _lock = match state::acquire(&cfg.lock_file, lock_until(budget)) {
                Ok(l) => l,
                // The record stays: the next run resumes.
                Err(e) => {
                    report.fail(e);
                    continue;
                }
            };
            let mut local = state::read_pause(&cfg.lock_file, &r.scope);
            if r.decided.is_some() && local.paused != r.decided {
                crate::debug_line!(
                    "cluster {}: another run resumed it, or paused anew, meanwhile",
                    r.scope
                );
                continue;
            }
            // RESUME answers at once; the lock keeps a concurrent run from
            // resuming (and saying so) twice.
            let until = (Instant::now() + Duration::from_secs(1)).min(budget.end);
            let mut ok = true;
            for db in &r.databases {
                if let Err(e) = admin.resume(db, until).await {
                    report.fail(e);
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            note!(
                "resumed {} (cluster {}): {}",
                r.databases.join(", "),
                r.scope,
                r.why
            );
            let made = if r.decided.is_some() {
                local.paused.take()
            } else {
                None
            };
            local.leaderless_served = r.leaderless;
            if let Err(e) = state::write_pause(&cfg.lock_file, &r.scope, &local).and_then(|()| {
                state::set_decided(&cfg.lock_file, &subject(&r.scope), Ticket::now())
            }) {
                report.fail(e);
            }
            made
        };
        if let (Some(m), Some(f)) = (&made, report.facts.pgbouncer.as_mut()) {
            let lasted =
                m.at.as_ref()
                    .and_then(|at| pause::age(at, &now()))
                    .unwrap_or_default();
            f.resumed.push((r.scope.clone(), lasted));
        }
        // Consul's part is tidying: the request is one this host served, and
        // its confirmation is done with.
        let keys = ScopeKeys::new(cfg.dcs.namespace(), &r.scope);
        consul.set_deadline(budget.end);
        if let Err(e) = consul
            .delete(&format!("{}{}", keys.pause_acks, cfg.name))
            .await
        {
            crate::debug_line!("{e}");
        }
        if let Some((_, index)) = &r.request {
            if let Err(e) = consul.delete_cas(&keys.pause_request, *index).await {
                crate::debug_line!("{e}");
            }
        }
    }
}

/// Forgets the pause record of a scope no longer configured that does not
/// say which databases it paused (an older version's).
pub fn forget(cfg: &Config, scope: &str) {
    let mut local = state::read_pause(&cfg.lock_file, scope);
    local.paused = None;
    if let Err(e) = state::write_pause(&cfg.lock_file, scope, &local) {
        crate::warn_line!("{e}");
    }
}

/// A leader seen again: the next leaderless period may have its pause.
pub fn leader_seen(cfg: &Config, budget: &Budget, scope: &str) {
    let Ok(_lock) = state::acquire(&cfg.lock_file, lock_until(budget)) else {
        return;
    };
    let mut local = state::read_pause(&cfg.lock_file, scope);
    if local.leaderless_served {
        local.leaderless_served = false;
        if let Err(e) = state::write_pause(&cfg.lock_file, scope, &local) {
            crate::warn_line!("{e}");
        }
    }
}

/// Warns about managed databases that PgBouncer has paused with no record
/// here of pausing them: an operator's PAUSE, or a record lost. They are
/// left paused (the hook resumes only what it paused), and counted for the
/// metrics (an alert fires on them); asked only when the run has time left.
/// Returns what PgBouncer has paused, when it was asked.
pub async fn report_foreign_pauses(
    cfg: &Config,
    p: &PgbouncerConfig,
    budget: &Budget,
    report: &mut Report,
) -> Option<Vec<String>> {
    let admin_cfg = p.admin.as_ref()?;
    let until = (Instant::now() + Duration::from_millis(500)).min(budget.end);
    if until.saturating_duration_since(Instant::now()) < Duration::from_millis(50) {
        return None;
    }
    let paused = match Admin::connect(admin_cfg, until).await {
        Ok(a) => a.paused_databases(until).await,
        Err(e) => Err(e),
    };
    let paused = match paused {
        Ok(d) => d,
        Err(e) => {
            crate::debug_line!("{e}");
            return None;
        }
    };
    let mut counts = Vec::new();
    for c in &p.clusters {
        let local = state::read_pause(&cfg.lock_file, &c.scope);
        let ours = local.paused.map(|x| x.databases).unwrap_or_default();
        let mut n = 0;
        for db in c.databases.iter().filter(|d| paused.contains(d)) {
            if !ours.contains(db) {
                n += 1;
                crate::warn_line!(
                    "database {db} (cluster {}) is paused in PgBouncer, and this host has no record of pausing it (an operator's PAUSE, or a lost record): left paused; `RESUME {db}` on the admin console ends it",
                    c.scope
                );
            }
        }
        counts.push((c.scope.clone(), n));
    }
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.unrecorded = counts;
    }
    Some(paused)
}

/// For the metrics: which clusters this host has paused after the run: a
/// record, and (when PgBouncer was asked) a database of it that PgBouncer
/// holds paused. A PgBouncer restarted while paused holds nothing; its
/// record stays until the pause is resolved (RESUME then finds nothing
/// paused, which is done).
pub fn paused_now(
    cfg: &Config,
    p: &PgbouncerConfig,
    paused: Option<&[String]>,
    report: &mut Report,
) {
    let now: Vec<String> = p
        .clusters
        .iter()
        .filter(|c| {
            let made = state::read_pause(&cfg.lock_file, &c.scope).paused;
            made.is_some_and(|m| {
                paused.is_none_or(|held| m.databases.iter().any(|d| held.contains(d)))
            })
        })
        .map(|c| c.scope.clone())
        .collect();
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.paused_now = now;
    }
}
