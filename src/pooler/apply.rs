//! Carries out the PgBouncer host's plan (`plan::Plan`), step by step, and
//! re-checks under the host lock what another run may have changed since
//! the observation: the pause record before a PAUSE is recorded and before
//! a RESUME (`pause_host`), the file and the decision tickets before a
//! rewrite (`repoint`). In `--dry-run` it says what it would do instead.
//!
//! Clusters do not wait on each other: the steps that can take seconds (a
//! PAUSE waiting for idle databases, a new leader not yet writable) run side
//! by side, after the entries and the resumes due now, and each cluster is
//! pointed and resumed as soon as its own leader answers.

use crate::budget::Budget;
use crate::config::{Config, PgbouncerConfig};
use crate::dcs::keys::LeaderKey;
use crate::dcs::Dcs;
use crate::error::Kind;
use crate::pooler::ini::Target;
use crate::pooler::observe::{self, Observed};
use crate::pooler::pause::{self, Decision};
use crate::pooler::pause_host::{self, Ready};
use crate::pooler::plan::{databases_of, Plan, Resume, Step};
use crate::pooler::repoint;
use crate::report::Report;
use crate::state::{self, Ticket};
use crate::{note, out};
use futures::lock::Mutex;
use futures::stream::{FuturesUnordered, StreamExt};
use std::cell::RefCell;

/// One run's context.
pub struct Run<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// Its pgbouncer section.
    pub p: &'a PgbouncerConfig,
    /// Consul.
    pub consul: &'a Dcs,
    /// The run's deadline.
    pub budget: &'a Budget,
    /// Say, do not do.
    pub dry_run: bool,
    /// This run's place in the order of decisions.
    pub ticket: Ticket,
    /// Taken before the host lock by each of this run's steps that run
    /// side by side: the host lock is a flock, waited for by blocking, and
    /// a step of this very run holding it across an await must not be
    /// waited for that way.
    pub local: Mutex<()>,
}

/// Runs the plan: what to say first; then the entries and the resumes that
/// are due now (milliseconds); then, side by side, each PAUSE (it waits for
/// the cluster's databases to be idle, up to pause_timeout), each Adopt, and
/// each wait for a new leader, so that no cluster waits on another's.
pub async fn apply(run: &Run<'_>, o: &Observed, plan: &Plan, report: &mut Report) {
    let mut resumes: Vec<Resume> = Vec::new();
    let mut slow: Vec<&Step> = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Problem(e) => report.fail(e.clone()),
            Step::Note(text) => note!("{text}"),
            Step::Hold(text) => {
                note!("{text}");
                report.set(Kind::Temporary);
            }
            Step::LeaderSeen(scope) if !run.dry_run => {
                pause_host::leader_seen(run.cfg, run.budget, scope)
            }
            Step::LeaderSeen(_) => {}
            Step::Forget(scope) => {
                crate::warn_line!(
                    "a pause record of scope {} (no longer configured) does not say which databases it paused; forgetting it (a database still paused is reported below)",
                    crate::dcs::keys::shown(scope)
                );
                if !run.dry_run {
                    pause_host::forget(run.cfg, scope);
                }
            }
            Step::Point { .. } => {}
            Step::Resume(r) => resumes.push(r.clone()),
            Step::Pause { .. } | Step::Adopt { .. } | Step::PointOnceWritable { .. } => {
                slow.push(step)
            }
        }
    }
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.wanted = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Point { scope, target, .. }
                | Step::PointOnceWritable { scope, target, .. } => {
                    Some((scope.clone(), target.host.clone(), target.port))
                }
                _ => None,
            })
            .collect();
    }
    let points = plan.points(run.p);
    if !points.is_empty() {
        let followed = repoint::follow_leaders(run, &points, o.pgbouncer.as_deref(), report).await;
        if let Some(f) = report.facts.pgbouncer.as_mut() {
            f.rewrote = followed.rewrote;
        }
    }
    resume(run, &resumes, report).await;
    // What the new leaders' steps point at, with the entries above: each
    // rewrite keeps the others' targets.
    let pointed = RefCell::new(points);
    let mut side_by_side: FuturesUnordered<_> = slow
        .into_iter()
        .map(|step| {
            let pointed = &pointed;
            async move {
                let mut part = Report::part();
                match step {
                    Step::Pause {
                        scope,
                        request,
                        leader,
                    } => pause(run, scope, request, leader, &mut part).await,
                    Step::Adopt { scope, request } => adopt(run, scope, request, &mut part).await,
                    Step::PointOnceWritable { .. } => {
                        once_writable(run, pointed, step, &mut part).await
                    }
                    _ => {}
                }
                part
            }
        })
        .collect();
    while let Some(part) = side_by_side.next().await {
        report.merge(part);
    }
    if !run.dry_run {
        let paused = pause_host::report_foreign_pauses(run.cfg, run.p, run.budget, report).await;
        pause_host::paused_now(run.cfg, run.p, paused.as_deref(), report);
    }
}

/// Confirms a new request of the leader while its pause is held.
async fn adopt(run: &Run<'_>, scope: &str, request: &str, report: &mut Report) {
    if run.dry_run {
        out::line(format_args!(
            "would confirm request {request} (cluster {scope}, paused already)"
        ));
        return;
    }
    pause_host::adopt(run, scope, request, report).await
}

/// PAUSE, once the scope's view is read again and still asks for it: the
/// view the plan used may be a second old by now (a slow Consul, a busy
/// host), and a pause for a stop that is over holds clients until the next
/// run.
async fn pause(
    run: &Run<'_>,
    scope: &str,
    request: &Option<String>,
    leader: &Option<String>,
    report: &mut Report,
) {
    let c = run
        .p
        .clusters
        .iter()
        .find(|c| c.scope == scope)
        .expect("a planned cluster is configured");
    if run.dry_run {
        out::line(format_args!(
            "would pause {} (cluster {scope}{})",
            c.databases.join(", "),
            request
                .as_ref()
                .map(|r| format!(", request {r}"))
                .unwrap_or_default()
        ));
        return;
    }
    match observe::read_again(run.cfg.dcs.namespace(), scope, run.consul).await {
        Ok(view) => {
            let local = state::read_pause(&run.cfg.lock_file, scope);
            let now = pause_host::now();
            let again = pause::decide(&view, &local, run.p.pause_on, run.p.pause_timeout, &now);
            if again
                != (Decision::Pause {
                    request: request.clone(),
                })
            {
                note!("cluster {scope}: no pause after all: read again, the DCS and this host's record now say {again:?}");
                return;
            }
        }
        Err(e) => return report.fail(e.context(format!("cluster {scope}: not paused"))),
    }
    pause_host::pause_cluster(run, c, request.clone(), leader.clone(), report).await;
}

/// Resumes, or in a dry run says what it would resume.
async fn resume(run: &Run<'_>, resumes: &[Resume], report: &mut Report) {
    if run.dry_run {
        for r in resumes {
            out::line(format_args!(
                "would resume {} (cluster {}: {})",
                r.databases.join(", "),
                r.scope,
                r.why
            ));
        }
        return;
    }
    pause_host::resume(run, resumes, report).await;
}

/// A cluster whose new leader must answer as writable first: once it does,
/// and the leader key still names it (read again: the wait may have taken
/// seconds), its entries are pointed at it with the others' targets, and
/// once PgBouncer serves them from there it is resumed; a resume sends the
/// queued clients wherever the entries point. A pause whose time runs out
/// meanwhile ends then, as any pause does at pause_timeout.
async fn once_writable(
    run: &Run<'_>,
    pointed: &RefCell<Vec<(String, Target)>>,
    step: &Step,
    report: &mut Report,
) {
    let Step::PointOnceWritable {
        scope,
        leader,
        target,
        api_url,
        left,
        resume,
    } = step
    else {
        return;
    };
    let dbs = databases_of(run.p, scope);
    if run.dry_run {
        out::line(format_args!(
            "would point {} at {}:{} and resume them (cluster {scope}), once {} answers as writable",
            dbs.join(", "),
            target.host,
            target.port,
            crate::dcs::keys::shown(leader)
        ));
        return;
    }
    let why =
        match pause_host::wait_ready(leader, api_url.as_deref(), *left, run.p, run.budget).await {
            Ok(Ready::Writable(why)) => why,
            Ok(Ready::Expired(why)) => {
                let r = Resume {
                    why,
                    ..resume.clone()
                };
                return self::resume(run, std::slice::from_ref(&r), report).await;
            }
            Err(Some(e)) => return report.fail(e),
            Err(None) => return report.set(Kind::Temporary),
        };
    match observe::read_again(run.cfg.dcs.namespace(), scope, run.consul).await {
        Ok(view) if view.leader == LeaderKey::Name(leader.clone()) => {}
        Ok(view) => {
            note!(
                "cluster {scope}: {why}, but the leader key now says {:?}; left to the next run",
                view.leader
            );
            return report.set(Kind::Temporary);
        }
        Err(e) => return report.fail(e.context(format!("cluster {scope}: still paused"))),
    }
    let targets = {
        let mut p = pointed.borrow_mut();
        for db in dbs {
            p.push((db.clone(), target.clone()));
        }
        p.clone()
    };
    let followed = repoint::follow_leaders(run, &targets, None, report).await;
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.rewrote |= followed.rewrote;
    }
    let r = Resume {
        why,
        ..resume.clone()
    };
    if followed.current && !r.databases.iter().any(|d| followed.missing.contains(d)) {
        self::resume(run, std::slice::from_ref(&r), report).await;
    } else {
        note!(
            "cluster {}: {}, but PgBouncer does not point at it yet; still paused",
            r.scope,
            r.why
        );
        report.set(Kind::Temporary);
    }
}
