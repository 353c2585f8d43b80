//! The PgBouncer host's side of a switchover pause: PAUSE (recorded first),
//! RESUME (of what the record names), the check that a new leader is
//! writable, and the pauses nobody else will end (scopes no longer
//! configured) or that are not this host's (an operator's, a lost record).
//! `pause` decides; `host::reconcile` calls these in order.

use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig};
use crate::dcs::consul::Consul;
use crate::dcs::keys::{shown, LeaderKey, PauseRequest, ScopeKeys, ScopeView};
use crate::error::Error;
use crate::node::apply::Report;
use crate::patroni_api::Api;
use crate::pooler::admin::{self, Admin};
use crate::pooler::pause::{self, Local, Now, Paused};
use crate::state::{self, Ticket};
use crate::{note, out};
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

/// The ordering subject of a scope's pause decisions.
fn subject(scope: &str) -> String {
    format!("pgbouncer-pause-{scope}")
}

/// A short wait for the host lock around a state file: these writes take
/// microseconds, and a run never waits long behind another.
fn lock_until(budget: &Budget) -> Instant {
    (Instant::now() + Duration::from_millis(500)).min(budget.end)
}

/// A pause to end, and why.
pub struct ToResume {
    /// The scope it was made for.
    pub scope: String,
    /// The databases to resume: the record's (what was paused), whatever
    /// the configuration names now.
    pub databases: Vec<String>,
    /// Why, for the log.
    pub why: String,
    /// The scope's keys (the request and this host's confirmation are tidied).
    pub keys: ScopeKeys,
    /// What Consul said this run, when it answered.
    pub view: Option<ScopeView>,
    /// False for a scope no longer configured.
    pub configured: bool,
    /// Resume only while the record still names a pause (false: a late
    /// PAUSE of this run that the record no longer covers).
    pub recorded: bool,
}

impl ToResume {
    /// The pause of configured cluster `c`, as `local` records it.
    pub fn of(
        cfg: &Config,
        c: &Cluster,
        local: &Local,
        why: String,
        view: Option<&ScopeView>,
    ) -> ToResume {
        let recorded = local
            .paused
            .as_ref()
            .map(|p| p.databases.clone())
            .unwrap_or_default();
        ToResume {
            scope: c.scope.clone(),
            databases: if recorded.is_empty() {
                c.databases.clone()
            } else {
                recorded
            },
            why,
            keys: ScopeKeys::new(&cfg.consul.namespace, &c.scope),
            view: view.cloned(),
            configured: true,
            recorded: true,
        }
    }
}

/// Pauses of scopes no longer configured: nothing will ever resolve them
/// here, so they end now. Their records stay (with the requests they
/// served), so a scope configured again does not serve a request twice.
pub fn unconfigured(cfg: &Config, p: &PgbouncerConfig, dry_run: bool) -> Vec<ToResume> {
    let mut out = Vec::new();
    for scope in state::pause_scopes(&cfg.lock_file) {
        if p.clusters.iter().any(|c| c.scope == scope) {
            continue;
        }
        let mut local = state::read_pause(&cfg.lock_file, &scope);
        match local.paused.take() {
            None => {}
            Some(made) if !made.databases.is_empty() => out.push(ToResume {
                keys: ScopeKeys::new(&cfg.consul.namespace, &scope),
                why: format!("scope {} is no longer configured", shown(&scope)),
                scope,
                databases: made.databases,
                view: None,
                configured: false,
                recorded: true,
            }),
            Some(_) => {
                // A record of an older version, which did not name them.
                crate::warn_line!(
                    "a pause record of scope {} (no longer configured) does not say which databases it paused; forgetting it (a database still paused is reported below)",
                    shown(&scope)
                );
                if !dry_run {
                    if let Err(e) = state::write_pause(&cfg.lock_file, &scope, &local) {
                        crate::warn_line!("{e}");
                    }
                }
            }
        }
    }
    out
}

/// Waits (bounded by the pause's end and the run's) until the new leader's
/// REST API says it is a writable primary. `Some(why)` when the pause may
/// end, for the log.
pub async fn wait_writable(
    view: &ScopeView,
    leader: &str,
    local: &Local,
    p: &PgbouncerConfig,
    budget: &Budget,
    report: &mut Report,
) -> Option<String> {
    let Some(url) = view.member(leader).and_then(|m| m.status_url()) else {
        // Patroni always publishes api_url; a member without one leaves the
        // leader key as all there is to go by.
        return Some(format!(
            "the new leader {} holds the leader key (it publishes no api_url to ask)",
            shown(leader)
        ));
    };
    let https = url.starts_with("https:");
    if https && p.patroni_ca_file.is_none() {
        crate::warn_line!(
            "leader {}'s REST API is https and pgbouncer.patroni_ca_file is not set: its promotion cannot be checked, so the pause ends at pgbouncer.pause_timeout",
            shown(leader)
        );
        return None;
    }
    // The CA is for https only: an http API is asked whatever it says.
    let ca = p.patroni_ca_file.as_deref().filter(|_| https);
    let api = match Api::new(ca, "pgbouncer.patroni_ca_file") {
        Ok(a) => a,
        Err(e) => {
            report.fail(e);
            return None;
        }
    };
    let now = now();
    let left_in_pause = local
        .paused
        .as_ref()
        .and_then(|x| x.at.as_ref())
        .and_then(|at| pause::age(at, &now))
        .map(|age| p.pause_timeout.saturating_sub(age))
        .unwrap_or_default();
    let run_end = budget
        .end
        .checked_sub(Duration::from_millis(200))
        .unwrap_or(budget.end);
    let until = (Instant::now() + left_in_pause).min(run_end);
    match api.wait_writable(&url, until).await {
        Ok(()) => Some(format!(
            "the new leader {} answers as a writable primary",
            shown(leader)
        )),
        Err(why) => {
            crate::warn_line!(
                "new leader {} is not a writable primary yet ({url}: {why}); still paused",
                shown(leader)
            );
            None
        }
    }
}

/// Pauses one cluster's databases: asks PgBouncer which are paused already
/// (an operator's pause stays theirs), records the pause under the lock
/// (so a killed run leaves a pause the next run undoes, and a concurrent
/// run finds it), sends PAUSE, confirms the request. A PAUSE that does not
/// complete by `pause_timeout`, or that PgBouncer refuses, is undone at once.
#[allow(clippy::too_many_arguments)]
pub async fn pause_cluster(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    c: &Cluster,
    request: Option<String>,
    view: &ScopeView,
    ticket: Ticket,
    report: &mut Report,
) {
    let Some(admin_cfg) = &p.admin else { return };
    let keys = ScopeKeys::new(&cfg.consul.namespace, &c.scope);
    let started = Instant::now();
    let until = admin::pause_until(started, p.pause_timeout, budget.end);
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
    let made = {
        let _lock = match state::acquire(&cfg.lock_file, lock_until(budget)) {
            Ok(l) => l,
            Err(e) => return report.fail(not_paused(e)),
        };
        let mut local = state::read_pause(&cfg.lock_file, &c.scope);
        let served = request.is_some() && local.handled == request;
        if local.paused.is_some() || served {
            crate::debug_line!("cluster {}: another run paused for this already", c.scope);
            return;
        }
        if state::last_decided(&cfg.lock_file, &subject(&c.scope)).is_some_and(|l| l > ticket) {
            note!(
                "cluster {}: a newer run decided its pause meanwhile",
                c.scope
            );
            return;
        }
        local.handled = request.clone();
        local.paused = (!ours.is_empty()).then(|| Paused {
            request: request.clone(),
            leader: match &view.leader {
                LeaderKey::Name(n) => Some(n.clone()),
                _ => None,
            },
            at: Some(state::stamp_now()),
            databases: ours.clone(),
        });
        if let Err(e) = state::write_pause(&cfg.lock_file, &c.scope, &local)
            .and_then(|()| state::set_decided(&cfg.lock_file, &subject(&c.scope), ticket))
        {
            return report.fail(not_paused(e));
        }
        local.paused
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
    let mut failed = None;
    for db in &ours {
        match admin.pause(db, until).await {
            Ok(admin::Pause::Done) => {}
            Ok(admin::Pause::TimedOut) => {
                // PAUSE waits for every server connection to be released; a
                // long transaction (or session pooling) keeps it waiting.
                // Clients must not wait longer than that.
                failed = Some(format!(
                    "PAUSE {db} did not complete within {:.1} s",
                    until.saturating_duration_since(started).as_secs_f64()
                ));
                break;
            }
            Ok(admin::Pause::Refused(why)) => {
                failed = Some(format!("PgBouncer refused PAUSE {db}: {why}"));
                break;
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    drop(admin);
    let undo = |why: String| ToResume {
        scope: c.scope.clone(),
        databases: ours.clone(),
        why,
        keys: keys.clone(),
        view: Some(view.clone()),
        configured: true,
        recorded: true,
    };
    if let Some(why) = failed {
        crate::warn_line!(
            "cluster {}: {why}; resuming {} and carrying on without a pause",
            c.scope,
            ours.join(", ")
        );
        let r = undo("the pause was not made".into());
        resume(cfg, p, consul, budget, std::slice::from_ref(&r), report).await;
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
            let mut r = undo("ended while PAUSE waited".into());
            r.recorded = false;
            resume(cfg, p, consul, budget, std::slice::from_ref(&r), report).await;
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

/// The leader asks again while its earlier pause is held: the pause stays,
/// now for this request (its clock starts again: a new stop), and the
/// request is confirmed.
pub async fn adopt(
    cfg: &Config,
    consul: &Consul,
    budget: &Budget,
    c: &Cluster,
    request: String,
    report: &mut Report,
) {
    {
        let _lock = match state::acquire(&cfg.lock_file, lock_until(budget)) {
            Ok(l) => l,
            Err(e) => return report.fail(e),
        };
        let mut local = state::read_pause(&cfg.lock_file, &c.scope);
        let Some(p) = local.paused.as_mut() else {
            return;
        };
        p.request = Some(request.clone());
        p.at = Some(state::stamp_now());
        local.handled = Some(request.clone());
        if let Err(e) = state::write_pause(&cfg.lock_file, &c.scope, &local) {
            return report.fail(e);
        }
    }
    note!(
        "cluster {}: already paused; the leader stops again, confirming its request {}",
        c.scope,
        shown(&request)
    );
    let keys = ScopeKeys::new(&cfg.consul.namespace, &c.scope);
    confirm(cfg, consul, budget, &keys, Some(request), report).await;
}

/// Confirms `request` under this host's name (`pause-ack/<name>`).
async fn confirm(
    cfg: &Config,
    consul: &Consul,
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
/// lock with its record re-read (a concurrent run that resumed it already
/// leaves nothing to do), then clears the request and this host's
/// confirmation in Consul. RESUME of a database that is not paused is done.
pub async fn resume(
    cfg: &Config,
    p: &PgbouncerConfig,
    consul: &Consul,
    budget: &Budget,
    pauses: &[ToResume],
    report: &mut Report,
) {
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
            let _lock = match state::acquire(&cfg.lock_file, lock_until(budget)) {
                Ok(l) => l,
                // The record stays: the next run resumes.
                Err(e) => {
                    report.fail(e);
                    continue;
                }
            };
            let mut local = state::read_pause(&cfg.lock_file, &r.scope);
            if r.recorded && local.paused.is_none() {
                crate::debug_line!("cluster {}: another run resumed it", r.scope);
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
            let made = if r.recorded {
                local.paused.take()
            } else {
                None
            };
            // Ended while the cluster had no leader (or Consul did not say):
            // with `pause_on: always` this leaderless period had its pause.
            local.leaderless_served = r
                .view
                .as_ref()
                .is_none_or(|v| !matches!(v.leader, LeaderKey::Name(_)));
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
        consul.set_deadline(budget.end);
        if let Err(e) = consul
            .delete(&format!("{}{}", r.keys.pause_acks, cfg.name))
            .await
        {
            crate::debug_line!("{e}");
        }
        let request = made.and_then(|x| x.request);
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
pub async fn report_foreign_pauses(
    cfg: &Config,
    p: &PgbouncerConfig,
    budget: &Budget,
    report: &mut Report,
) {
    let Some(admin_cfg) = &p.admin else { return };
    let until = (Instant::now() + Duration::from_millis(500)).min(budget.end);
    if until.saturating_duration_since(Instant::now()) < Duration::from_millis(50) {
        return;
    }
    let paused = match Admin::connect(admin_cfg, until).await {
        Ok(a) => a.paused_databases(until).await,
        Err(e) => Err(e),
    };
    let paused = match paused {
        Ok(d) => d,
        Err(e) => return crate::debug_line!("{e}"),
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
}

/// For the metrics: which clusters this host has paused after the run.
pub fn paused_now(cfg: &Config, p: &PgbouncerConfig, report: &mut Report) {
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

/// For a dry run: what would be resumed.
pub fn show_resumes(pauses: &[ToResume]) {
    for r in pauses {
        out::line(format_args!(
            "would resume {} (cluster {}: {})",
            r.databases.join(", "),
            r.scope,
            r.why
        ));
    }
}
