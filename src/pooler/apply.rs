//! Carries out the PgBouncer host's plan (`plan::Plan`), step by step, and
//! re-checks under the host lock what another run may have changed since
//! the observation: the pause record before a PAUSE is recorded and before
//! a RESUME (`pause_host`), the file and the decision tickets before a
//! rewrite (`repoint`). In `--dry-run` it says what it would do instead.
//!
//! Clusters do not wait on each other: the waits for new leaders to answer
//! as writable run side by side, after every other step, and each cluster
//! is pointed and resumed as soon as its own leader answers.

use crate::budget::Budget;
use crate::config::{Config, PgbouncerConfig};
use crate::dcs::consul::Consul;
use crate::error::Kind;
use crate::pooler::ini::Target;
use crate::pooler::observe::{self, Observed};
use crate::pooler::pause::{self, Decision};
use crate::pooler::pause_host;
use crate::pooler::plan::{databases_of, Plan, Resume, Step};
use crate::pooler::repoint::{self, Followed};
use crate::report::Report;
use crate::state::{self, Ticket};
use crate::{note, out};
use futures::stream::{FuturesUnordered, StreamExt};

/// One run's context.
pub struct Run<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// Its pgbouncer section.
    pub p: &'a PgbouncerConfig,
    /// Consul.
    pub consul: &'a Consul,
    /// The run's deadline.
    pub budget: &'a Budget,
    /// Say, do not do.
    pub dry_run: bool,
    /// This run's place in the order of decisions.
    pub ticket: Ticket,
}

/// Runs the plan.
pub async fn apply(run: &Run<'_>, o: &Observed, plan: &Plan, report: &mut Report) {
    let mut resumes: Vec<Resume> = Vec::new();
    let mut waits = Vec::new();
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
            Step::Pause {
                scope,
                request,
                leader,
            } => pause(run, scope, request, leader, report).await,
            Step::Adopt { scope, request } if run.dry_run => out::line(format_args!(
                "would confirm request {request} (cluster {scope}, paused already)"
            )),
            Step::Adopt { scope, request } => {
                pause_host::adopt(run.cfg, run.consul, run.budget, scope, request, report).await
            }
            Step::Point { .. } => {}
            Step::Resume(r) => resumes.push(r.clone()),
            Step::PointOnceWritable { .. } => waits.push(step),
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
    let followed = if points.is_empty() {
        Followed::default()
    } else {
        repoint::follow_leaders(run, &points, o.pgbouncer.as_deref(), report).await
    };
    if let Some(f) = report.facts.pgbouncer.as_mut() {
        f.rewrote = followed.rewrote;
    }
    resume(run, &resumes, report).await;
    once_writable(run, &points, &waits, report).await;
    if !run.dry_run {
        let paused = pause_host::report_foreign_pauses(run.cfg, run.p, run.budget, report).await;
        pause_host::paused_now(run.cfg, run.p, paused.as_deref(), report);
    }
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
    match observe::read_again(&run.cfg.consul.namespace, scope, run.consul).await {
        Ok(view) => {
            let local = state::read_pause(&run.cfg.lock_file, scope);
            let now = pause_host::now();
            let again = pause::decide(&view, &local, run.p.pause_on, run.p.pause_timeout, &now);
            if again
                != (Decision::Pause {
                    request: request.clone(),
                })
            {
                note!("cluster {scope}: no pause after all: read again, Consul and this host's record now say {again:?}");
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

/// The clusters whose new leader must answer as writable first: all asked
/// at once; as each answers, its entries are pointed at it (with the other
/// clusters' targets, which the file already holds), and once PgBouncer
/// serves them from there, it is resumed. A resume sends the queued clients
/// wherever the entries point.
async fn once_writable(
    run: &Run<'_>,
    points: &[(String, Target)],
    waits: &[&Step],
    report: &mut Report,
) {
    let mut pending: FuturesUnordered<_> = waits
        .iter()
        .filter_map(|s| match s {
            Step::PointOnceWritable {
                scope,
                leader,
                target,
                api_url,
                left,
                resume,
            } => Some(async move {
                let ready = if run.dry_run {
                    Ok(format!(
                        "once {} answers as writable",
                        crate::dcs::keys::shown(leader)
                    ))
                } else {
                    pause_host::wait_ready(leader, api_url.as_deref(), *left, run.p, run.budget)
                        .await
                };
                (scope, target, resume, ready)
            }),
            _ => None,
        })
        .collect();
    let mut pointed: Vec<(String, Target)> = points.to_vec();
    while let Some((scope, target, resume, ready)) = pending.next().await {
        if run.dry_run {
            out::line(format_args!(
                "would point {} at {}:{} and resume them (cluster {scope}), {}",
                databases_of(run.p, scope).join(", "),
                target.host,
                target.port,
                ready.unwrap_or_default()
            ));
            continue;
        }
        let why = match ready {
            Ok(why) => why,
            Err(Some(e)) => {
                report.fail(e);
                continue;
            }
            Err(None) => {
                report.set(Kind::Temporary);
                continue;
            }
        };
        let dbs = databases_of(run.p, scope);
        for db in dbs {
            pointed.push((db.clone(), target.clone()));
        }
        let followed = repoint::follow_leaders(run, &pointed, None, report).await;
        if let Some(f) = report.facts.pgbouncer.as_mut() {
            f.rewrote |= followed.rewrote;
        }
        let r = Resume {
            why,
            ..resume.clone()
        };
        if followed.current && !r.databases.iter().any(|d| followed.missing.contains(d)) {
            self::resume(run, std::slice::from_ref(&r), report).await;
        } else if !run.dry_run {
            note!(
                "cluster {}: {}, but PgBouncer does not point at it yet; still paused",
                r.scope,
                r.why
            );
            report.set(Kind::Temporary);
        }
    }
}
