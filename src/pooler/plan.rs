//! PURE: what one reconcile on the PgBouncer host does, from what it
//! observed (`observe::Observed`), as typed steps for `apply`.
//!
//! Per cluster the pause decision (`pause::decide`) and the leader's target
//! (`resolve`) give the steps; the table is in docs/design.md ("The
//! PgBouncer host"). No step waits on another cluster: a cluster whose new
//! leader must first answer as writable gets a step of its own
//! (`PointOnceWritable`), which `apply` runs beside the others.

use crate::config::{Cluster, PgbouncerConfig, TargetKind};
use crate::dcs::keys::{shown, LeaderKey, ScopeKeys, ScopeView};
use crate::dcs::Entry;
use crate::error::Error;
use crate::pooler::ini::Target;
use crate::pooler::observe::{Observed, Seen};
use crate::pooler::pause::{self, Decision, Local, Paused};

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
pub fn resolve_view(view: &ScopeView, keys: &ScopeKeys, cluster: &Cluster) -> Resolved {
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

/// A pause to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The scope it was made for.
    pub scope: String,
    /// The databases to resume: the record's (what was paused), whatever
    /// the configuration names now.
    pub databases: Vec<String>,
    /// Why, for the log.
    pub why: String,
    /// The pause as the record held it when this was decided: under the
    /// lock the record must still hold exactly this one (another run may
    /// have ended it, or made a new one, meanwhile). `None`: a PAUSE this
    /// run sent that no record covers any more; resumed whatever the record.
    pub decided: Option<Paused>,
    /// The pause request this pause served and its index, when Consul still
    /// holds it: deleted once resumed (check-and-set).
    pub request: Option<(String, u64)>,
    /// The cluster had no leader (or Consul did not say): with `pause_on:
    /// always` this leaderless period has had its pause.
    pub leaderless: bool,
}

/// One step of a run on the PgBouncer host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Something to say about a cluster, and how the run ends for it
    /// (`Error::kind`: a note is not a step; a hold is temporary, a refusal
    /// a failure).
    Problem(Error),
    /// A note for the log, nothing to do.
    Note(String),
    /// A pause held on purpose: a note, and the run ends temporary (75).
    Hold(String),
    /// A leader is seen again: the next leaderless period may be paused.
    LeaderSeen(String),
    /// PAUSE a cluster's databases (those not paused already), recorded
    /// first, then confirm `request`.
    Pause {
        /// The scope.
        scope: String,
        /// The request answered.
        request: Option<String>,
        /// The leader key when decided.
        leader: Option<String>,
    },
    /// Keep the held pause, now for `request`, and confirm it.
    Adopt {
        /// The scope.
        scope: String,
        /// The new request.
        request: String,
    },
    /// Point a cluster's entries at its leader now.
    Point {
        /// The scope.
        scope: String,
        /// The leader.
        leader: String,
        /// Where.
        target: Target,
    },
    /// The cluster is paused and has a new leader: once it answers as
    /// writable (or standby leader), point the entries at it, and once
    /// PgBouncer serves them from there, resume.
    PointOnceWritable {
        /// The scope.
        scope: String,
        /// The new leader.
        leader: String,
        /// Where.
        target: Target,
        /// Its REST API's status URL (`None`: it publishes none to ask).
        api_url: Option<String>,
        /// How long the pause may still last.
        left: std::time::Duration,
        /// The resume that follows.
        resume: Resume,
    },
    /// End a pause now.
    Resume(Resume),
    /// A record of a scope no longer configured that does not say what it
    /// paused (an older version's): forgotten.
    Forget(String),
}

/// The steps of one run, in the order `apply` takes them: problems and
/// notes, pauses, the entries, resumes, and the waits for new leaders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// The targets of the `Point` steps, database by database.
    pub fn points(&self, p: &PgbouncerConfig) -> Vec<(String, Target)> {
        let by_scope: std::collections::HashMap<&str, &[String]> = p
            .clusters
            .iter()
            .map(|c| (c.scope.as_str(), c.databases.as_slice()))
            .collect();
        let mut out = Vec::new();
        for s in &self.steps {
            if let Step::Point { scope, target, .. } = s {
                for db in by_scope.get(scope.as_str()).copied().unwrap_or_default() {
                    out.push((db.clone(), target.clone()));
                }
            }
        }
        out
    }
}

/// The databases configured for `scope`.
pub fn databases_of<'a>(p: &'a PgbouncerConfig, scope: &str) -> &'a [String] {
    p.clusters
        .iter()
        .find(|c| c.scope == scope)
        .map(|c| c.databases.as_slice())
        .unwrap_or(&[])
}

/// The resume of `local`'s pause of configured cluster `c`.
fn resume_of(c: &Cluster, local: &Local, why: String, view: Option<&ScopeView>) -> Resume {
    let decided = local.paused.clone();
    let recorded = decided
        .as_ref()
        .map(|p| p.databases.clone())
        .unwrap_or_default();
    let served = decided.as_ref().and_then(|p| p.request.clone());
    Resume {
        scope: c.scope.clone(),
        databases: if recorded.is_empty() {
            c.databases.clone()
        } else {
            recorded
        },
        why,
        decided,
        request: view.and_then(|v| {
            let (r, index) = v.pause_request.as_ref()?;
            (Some(&r.id) == served.as_ref()).then(|| (r.id.clone(), *index))
        }),
        leaderless: view.is_none_or(|v| !matches!(v.leader, LeaderKey::Name(_))),
    }
}

/// How long `local`'s pause may still last.
fn left_in_pause(local: &Local, p: &PgbouncerConfig, now: &pause::Now) -> std::time::Duration {
    local
        .paused
        .as_ref()
        .and_then(|x| x.at.as_ref())
        .and_then(|at| pause::age(at, now))
        .map(|age| p.pause_timeout.saturating_sub(age))
        .unwrap_or_default()
}

/// PURE: the plan of one run.
pub fn plan(namespace: &str, p: &PgbouncerConfig, o: &Observed) -> Plan {
    let mut steps = Vec::new();
    if let Some(e) = &o.unread {
        steps.push(Step::Problem(e.clone()));
    }
    unconfigured(p, o, &mut steps);
    for (c, seen) in p.clusters.iter().zip(&o.clusters) {
        cluster(namespace, p, o, c, seen, &mut steps);
    }
    // In the order apply says and takes them: what to say, then pauses and
    // adopts, the entries, resumes, new leaders (apply runs the entries and
    // the resumes first, and the rest side by side).
    steps.sort_by_key(|s| match s {
        Step::Problem(_)
        | Step::Note(_)
        | Step::Hold(_)
        | Step::LeaderSeen(_)
        | Step::Forget(_) => 0,
        Step::Pause { .. } | Step::Adopt { .. } => 1,
        Step::Point { .. } => 2,
        Step::Resume(_) => 3,
        Step::PointOnceWritable { .. } => 4,
    });
    Plan { steps }
}

/// Pauses of scopes no longer configured: nothing will ever resolve them
/// here, so they end now. Their records stay (with the requests they
/// served), so a scope configured again does not serve a request twice.
fn unconfigured(p: &PgbouncerConfig, o: &Observed, steps: &mut Vec<Step>) {
    for (scope, local) in &o.unconfigured {
        match &local.paused {
            None => {}
            Some(made) if p.admin.is_none() && !made.databases.is_empty() => {
                steps.push(Step::Problem(Error::failed(
                    format!("scope {} (no longer configured)", shown(scope)),
                    format!(
                        "this host paused {} and pgbouncer.admin is no longer configured, so it cannot RESUME them: restore pgbouncer.admin, or RESUME them on PgBouncer's admin console",
                        made.databases.join(", ")
                    ),
                )))
            }
            Some(made) if !made.databases.is_empty() => steps.push(Step::Resume(Resume {
                scope: scope.clone(),
                databases: made.databases.clone(),
                why: format!("scope {} is no longer configured", shown(scope)),
                decided: Some(made.clone()),
                request: None,
                leaderless: true,
            })),
            Some(_) => steps.push(Step::Forget(scope.clone())),
        }
    }
}

/// The steps of one configured cluster.
fn cluster(
    namespace: &str,
    p: &PgbouncerConfig,
    o: &Observed,
    c: &Cluster,
    seen: &Seen,
    steps: &mut Vec<Step>,
) {
    let local = &seen.local;
    if let (Some(made), None) = (&local.paused, &p.admin) {
        // Nothing can RESUME without the console: every run says so (and
        // the paused metric stays up), rather than PgBouncer staying paused
        // in silence.
        steps.push(Step::Problem(Error::failed(
            format!("cluster {}", c.scope),
            format!(
                "this host paused {} and pgbouncer.admin is no longer configured, so it cannot RESUME them: restore pgbouncer.admin, or RESUME them on PgBouncer's admin console",
                made.databases.join(", ")
            ),
        )));
        return;
    }
    let view = match &seen.view {
        Ok(v) => v,
        Err(e) => {
            if o.unread.is_none() {
                steps.push(Step::Problem(e.clone()));
            }
            // What Consul will not say, only the pause timeout can act on.
            if let Some(Decision::Resume(why)) = pause::expired(local, p.pause_timeout, &o.now) {
                steps.push(Step::Resume(resume_of(c, local, why, None)));
            }
            return;
        }
    };
    let keys = ScopeKeys::new(namespace, &c.scope);
    if local.leaderless_served && matches!(view.leader, LeaderKey::Name(_)) {
        steps.push(Step::LeaderSeen(c.scope.clone()));
    }
    let follow = match pause::decide(view, local, p.pause_on, p.pause_timeout, &o.now) {
        Decision::Nothing => true,
        Decision::Ignored(why) => {
            steps.push(Step::Note(format!("cluster {}: {why}", c.scope)));
            true
        }
        Decision::Pause { request } if p.admin.is_some() => {
            steps.push(Step::Pause {
                scope: c.scope.clone(),
                request,
                leader: match &view.leader {
                    LeaderKey::Name(n) => Some(n.clone()),
                    _ => None,
                },
            });
            false
        }
        // Without the console there is no PAUSE: the entries follow.
        Decision::Pause { .. } => true,
        Decision::Hold(why) => {
            steps.push(Step::Hold(format!("cluster {}: paused: {why}", c.scope)));
            false
        }
        Decision::Adopt { request } => {
            steps.push(Step::Adopt {
                scope: c.scope.clone(),
                request,
            });
            false
        }
        Decision::Resume(why) => {
            steps.push(Step::Resume(resume_of(c, local, why, Some(view))));
            true
        }
        Decision::ResumeOnceWritable => {
            match resolve_view(view, &keys, c) {
                Resolved::Target(target, leader) => steps.push(Step::PointOnceWritable {
                    scope: c.scope.clone(),
                    resume: resume_of(c, local, String::new(), Some(view)),
                    api_url: view.member(&leader).and_then(|m| m.status_url()),
                    left: left_in_pause(local, p, &o.now),
                    leader,
                    target,
                }),
                Resolved::Wait(why) | Resolved::Refused(why) => {
                    steps.push(Step::Problem(Error::temporary(
                        format!("cluster {}", c.scope),
                        format!("paused: the new leader cannot be followed yet: {why}"),
                    )))
                }
            }
            false
        }
    };
    if !follow {
        return;
    }
    steps.push(match resolve_view(view, &keys, c) {
        Resolved::Target(target, leader) => Step::Point {
            scope: c.scope.clone(),
            leader,
            target,
        },
        Resolved::Wait(why) => Step::Problem(Error::temporary(
            format!("cluster {}", c.scope),
            format!("{why}; its entries kept as they are"),
        )),
        Resolved::Refused(why) => Step::Problem(Error::failed(
            format!(
                "cluster {}: refused value from the DCS, its entries kept as they are",
                c.scope
            ),
            why,
        )),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminConfig, AdminHost, PauseOn};
    use crate::error::Kind;
    use crate::pooler::pause::{Now, Stamp};
    use std::time::Duration;

    const NS: &str = "service";

    fn cfg(admin: bool) -> PgbouncerConfig {
        PgbouncerConfig {
            ini: "/etc/pgbouncer/pgbouncer.ini".into(),
            pidfile: "/run/postgresql/pgbouncer.pid".into(),
            clusters: vec![
                Cluster {
                    scope: "a".into(),
                    databases: vec!["adb".into()],
                    target: TargetKind::Leader,
                },
                Cluster {
                    scope: "b".into(),
                    databases: vec!["bdb".into()],
                    target: TargetKind::Leader,
                },
            ],
            admin: admin.then(|| AdminConfig {
                host: AdminHost::Tcp("127.0.0.1".into()),
                port: 6432,
                user: None,
                password_file: None,
            }),
            pause_on: PauseOn::Switchover,
            pause_timeout: Duration::from_secs(10),
            patroni_ca_file: None,
        }
    }

    fn now() -> Now {
        Now {
            at: Stamp {
                boot: "boot".into(),
                ms: 100_000,
            },
            unix: 1_000_000,
        }
    }

    /// A scope's view: `leader` leads (members pg1 and pg2 on ports 5001,
    /// 5002), with `extra` keys (key under the scope, value).
    fn view(scope: &str, leader: Option<&str>, extra: &[(&str, &str)]) -> ScopeView {
        let k = ScopeKeys::new(NS, scope);
        let mut es = Vec::new();
        let mut put = |key: String, v: &str, i: u64| {
            es.push(Entry {
                key,
                value: v.as_bytes().to_vec(),
                modify_index: i,
                session: None,
            })
        };
        if let Some(l) = leader {
            put(k.leader.clone(), l, 10);
        }
        for (m, port) in [("pg1", 5001), ("pg2", 5002)] {
            put(
                format!("{}{m}", k.members),
                &format!(
                    r#"{{"conn_url":"postgres://10.0.0.1:{port}/postgres","api_url":"http://10.0.0.1:8008/patroni"}}"#
                ),
                5,
            );
        }
        for (key, v) in extra {
            put(format!("{}{key}", k.prefix), v, 20);
        }
        ScopeView::read(&es, &k)
    }

    fn paused(leader: &str, request: Option<&str>, ms: u64) -> Local {
        Local {
            paused: Some(Paused {
                request: request.map(String::from),
                leader: Some(leader.into()),
                at: Some(Stamp {
                    boot: "boot".into(),
                    ms,
                }),
                databases: vec!["adb".into()],
            }),
            handled: request.map(String::from),
            leaderless_served: false,
        }
    }

    fn observed(a: (ScopeView, Local), b: (ScopeView, Local)) -> Observed {
        Observed {
            now: now(),
            unread: None,
            clusters: vec![
                Seen {
                    view: Ok(a.0),
                    local: a.1,
                },
                Seen {
                    view: Ok(b.0),
                    local: b.1,
                },
            ],
            unconfigured: vec![],
            pgbouncer: None,
        }
    }

    fn target(port: u16) -> Target {
        Target {
            host: "10.0.0.1".into(),
            port,
        }
    }

    fn kinds(plan: &Plan) -> Vec<&'static str> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Problem(e) if e.kind() == Kind::Temporary => "hold",
                Step::Problem(_) => "fail",
                Step::Note(_) => "note",
                Step::Hold(_) => "hold",
                Step::LeaderSeen(_) => "leader-seen",
                Step::Pause { .. } => "pause",
                Step::Adopt { .. } => "adopt",
                Step::Point { .. } => "point",
                Step::PointOnceWritable { .. } => "point-once-writable",
                Step::Resume(_) => "resume",
                Step::Forget(_) => "forget",
            })
            .collect()
    }

    const REQ: &str = r#"{"member":"pg1","id":"r1","since":1000000}"#;

    /// The table: (cluster a's leader, extra keys, its record) -> steps;
    /// cluster b always just follows pg1.
    #[test]
    fn the_decision_table() {
        let quiet = || (view("b", Some("pg1"), &[]), Local::default());
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Vec<(&'a str, &'a str)>,
            Local,
            Vec<&'a str>,
        );
        let rows: Vec<Row> = vec![
            (
                "nothing asks",
                Some("pg1"),
                vec![],
                Local::default(),
                vec!["point", "point"],
            ),
            (
                "the leader asks",
                Some("pg1"),
                vec![("pause-request", REQ)],
                Local::default(),
                vec!["pause", "point"],
            ),
            (
                "paused, still stopping",
                Some("pg1"),
                vec![("pause-request", REQ)],
                paused("pg1", Some("r1"), 99_000),
                vec!["hold", "point"],
            ),
            (
                "paused, new leader",
                Some("pg2"),
                vec![],
                paused("pg1", Some("r1"), 99_000),
                vec!["point", "point-once-writable"],
            ),
            (
                "paused, cancelled",
                Some("pg1"),
                vec![],
                paused("pg1", Some("r1"), 99_000),
                vec!["point", "point", "resume"],
            ),
            (
                "paused, switchover under way",
                Some("pg1"),
                vec![("failover", r#"{"leader":"pg1"}"#)],
                paused("pg1", Some("r1"), 99_000),
                vec!["hold", "point"],
            ),
            (
                "paused, scheduled switchover later",
                Some("pg1"),
                vec![(
                    "failover",
                    r#"{"leader":"pg1","scheduled_at":"1970-01-13T13:46:40+00:00"}"#,
                )],
                paused("pg1", Some("r1"), 99_000),
                vec!["point", "point", "resume"],
            ),
            (
                "paused, expired",
                None,
                vec![],
                paused("pg1", Some("r1"), 80_000),
                vec!["hold", "point", "resume"],
            ),
            (
                "paused, no leader",
                None,
                vec![],
                paused("pg1", Some("r1"), 99_000),
                vec!["hold", "point"],
            ),
        ];
        for (what, leader, extra, local, want) in rows {
            let o = observed((view("a", leader, &extra), local), quiet());
            let got = plan(NS, &cfg(true), &o);
            assert_eq!(kinds(&got), want, "{what}: {got:#?}");
        }
    }

    /// A cluster waiting for its new leader is a step of its own, after
    /// the other clusters' pauses and entries: clusters do not wait on each
    /// other.
    #[test]
    fn a_new_leader_to_wait_for_comes_after_the_others_steps() {
        let o = observed(
            (
                view("a", Some("pg2"), &[]),
                paused("pg1", Some("r1"), 99_000),
            ),
            (
                view("b", Some("pg1"), &[("pause-request", REQ)]),
                Local::default(),
            ),
        );
        let got = plan(NS, &cfg(true), &o);
        assert_eq!(kinds(&got), vec!["pause", "point-once-writable"]);
        let Step::PointOnceWritable {
            target: t, resume, ..
        } = &got.steps[1]
        else {
            unreachable!()
        };
        assert_eq!(*t, target(5002));
        assert_eq!(resume.databases, vec!["adb".to_string()]);
        assert_eq!(resume.decided, paused("pg1", Some("r1"), 99_000).paused);
    }

    /// A pause held with no admin console configured any more fails every
    /// run, and nothing else is done for that cluster.
    #[test]
    fn a_pause_without_a_console_fails() {
        let o = observed(
            (
                view("a", Some("pg2"), &[]),
                paused("pg1", Some("r1"), 99_000),
            ),
            (view("b", Some("pg1"), &[]), Local::default()),
        );
        let got = plan(NS, &cfg(false), &o);
        assert_eq!(kinds(&got), vec!["fail", "point"]);
        let Step::Problem(e) = &got.steps[0] else {
            unreachable!()
        };
        assert!(e.message().contains("pgbouncer.admin"), "{e}");
    }

    /// Without a console a request makes no pause: the entries follow.
    #[test]
    fn without_a_console_a_request_just_follows() {
        let o = observed(
            (
                view("a", Some("pg1"), &[("pause-request", REQ)]),
                Local::default(),
            ),
            (view("b", Some("pg1"), &[]), Local::default()),
        );
        assert_eq!(kinds(&plan(NS, &cfg(false), &o)), vec!["point", "point"]);
    }

    /// A resume carries the request it served only while Consul still
    /// holds that very request, and the pause it was decided on.
    #[test]
    fn a_resume_names_its_request_and_its_pause() {
        let o = observed(
            (
                view(
                    "a",
                    Some("pg1"),
                    &[(
                        "pause-request",
                        r#"{"member":"pg1","id":"other","since":1000000}"#,
                    )],
                ),
                paused("pg1", Some("r1"), 80_000),
            ),
            (view("b", Some("pg1"), &[]), Local::default()),
        );
        let got = plan(NS, &cfg(true), &o);
        let resume = got
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Resume(r) => Some(r),
                _ => None,
            })
            .expect("a resume");
        assert_eq!(resume.request, None);
        assert_eq!(resume.decided, paused("pg1", Some("r1"), 80_000).paused);
        assert!(!resume.leaderless);
    }

    /// A Consul that refused a cluster's read: only the timeout acts.
    #[test]
    fn a_refused_read_leaves_only_the_timeout() {
        let mut o = observed(
            (view("a", None, &[]), paused("pg1", Some("r1"), 80_000)),
            (view("b", Some("pg1"), &[]), Local::default()),
        );
        o.clusters[0].view = Err(Error::failed("cluster a", "denied"));
        let got = plan(NS, &cfg(true), &o);
        assert_eq!(kinds(&got), vec!["fail", "point", "resume"]);
    }

    /// Unconfigured scopes: a pause is ended, an old record forgotten.
    #[test]
    fn unconfigured_scopes() {
        let mut o = observed(
            (view("a", Some("pg1"), &[]), Local::default()),
            (view("b", Some("pg1"), &[]), Local::default()),
        );
        let mut old = paused("pg1", None, 1);
        old.paused.as_mut().unwrap().databases.clear();
        o.unconfigured = vec![
            ("gone".into(), paused("pg1", None, 1)),
            ("older".into(), old),
        ];
        let got = plan(NS, &cfg(true), &o);
        assert_eq!(kinds(&got), vec!["forget", "point", "point", "resume"]);
    }

    fn e(key: &str, v: &str) -> Entry {
        Entry {
            key: key.into(),
            value: v.as_bytes().to_vec(),
            modify_index: 1,
            session: None,
        }
    }

    fn cluster_of(target: TargetKind) -> Cluster {
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
            resolve(&es, "service", &cluster_of(TargetKind::Leader)),
            Resolved::Target(
                Target {
                    host: "198.51.100.12".into(),
                    port: 5433
                },
                "pg2".into()
            )
        );
        assert_eq!(
            resolve(&es, "service", &cluster_of(TargetKind::Vip)),
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
            resolve(&[], "service", &cluster_of(TargetKind::Leader)),
            Resolved::Wait(_)
        ));
        let es = vec![e("service/batman/leader", "pg9")];
        assert!(matches!(
            resolve(&es, "service", &cluster_of(TargetKind::Leader)),
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
            match resolve(&es, "service", &cluster_of(TargetKind::Leader)) {
                Resolved::Refused(why) => assert!(!why.contains('\n'), "{why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let es = vec![e("service/batman/leader", "pg1\n[pgbouncer]")];
        assert!(matches!(
            resolve(&es, "service", &cluster_of(TargetKind::Leader)),
            Resolved::Refused(_)
        ));
    }
}
