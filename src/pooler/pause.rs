//! PURE: when the PgBouncer host pauses a cluster's databases, and when it
//! resumes them.
//!
//! A switchover through PgBouncer costs clients errors when PgBouncer keeps
//! sending them to a primary that is shutting down: it arms PgBouncer's
//! login back-off and fails the clients that are connected. Paused, the
//! clients wait instead (PgBouncer's `PAUSE`, doc/usage.md: "planned events
//! such as restarts should normally be managed using the PAUSE command"). The
//! moment matters: the old primary's `before-stop` (Patroni's synchronous
//! `before_stop`, right before PostgreSQL stops, after its checkpoint) asks
//! for the pause and waits for it; the host resumes once the new leader
//! answers as a writable primary and the entries point at it.
//!
//! Every pause this host makes is undone: by the run that sees the new
//! leader, by any later run once the switchover is cancelled, and by any run
//! once `pause_timeout` has passed on this host's boot clock. A request is
//! served once, by its id, whatever the clock of the node that wrote it
//! says. docs/design.md has the table.

use crate::config::PauseOn;
use crate::dcs::keys::{LeaderKey, ScopeView};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request older than this by the PgBouncer host's clock is ignored: no
/// stop takes an hour, so it is one left behind (a before-stop killed before
/// anyone served it), not one to pause for. Anything younger is served once,
/// whatever the two hosts' clocks say.
pub const REQUEST_MAX_AGE: Duration = Duration::from_secs(3600);

/// What this host remembers about a cluster's pause (a file beside the lock,
/// written before PAUSE is sent, removed after RESUME).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    /// The pause this host made and has not undone.
    pub paused: Option<Paused>,
    /// The last request this host paused for (so a request is served once).
    pub handled: Option<String>,
    /// With `pause_on: always`: the cluster's leaderless period already had
    /// its pause (it ended without a leader), so it is not paused again
    /// until a leader has been seen.
    #[serde(default)]
    pub leaderless_served: bool,
}

/// A pause this host made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// The request it answered (none: a failover paused with `pause_on: always`).
    pub request: Option<String>,
    /// The leader key when it paused.
    pub leader: Option<String>,
    /// When, on this host's boot clock. A record without it (written by an
    /// older version) counts as expired.
    #[serde(default)]
    pub at: Option<Stamp>,
    /// The databases it paused: these are resumed, whatever the
    /// configuration names by then.
    #[serde(default)]
    pub databases: Vec<String>,
}

/// A moment on this host's boot clock (CLOCK_BOOTTIME, with the boot it
/// belongs to): unlike the wall clock it never steps, and it counts a
/// suspended VM's sleep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// /proc/sys/kernel/random/boot_id.
    pub boot: String,
    /// Milliseconds since that boot.
    pub ms: u64,
}

/// The present, as decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Now {
    /// On this host's boot clock (pause ages).
    pub at: Stamp,
    /// Seconds since the Unix epoch (only to spot a request left behind).
    pub unix: u64,
}

/// What to do about pausing one cluster now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: not paused, nothing asks for a pause.
    Nothing,
    /// Nothing, but a request was ignored; the text says which and why.
    Ignored(String),
    /// Pause the cluster's databases, and confirm `request`.
    Pause {
        /// The request answered.
        request: Option<String>,
    },
    /// Stay paused; the text says why.
    Hold(String),
    /// Stay paused, and confirm `request`: the leader stops again while
    /// its earlier pause is held (a restart retried, a withdrawal lost).
    Adopt {
        /// The new request.
        request: String,
    },
    /// A new leader: point the entries at it once it is writable, then resume.
    ResumeOnceWritable,
    /// Resume now; the text says why.
    Resume(String),
}

/// How long ago `at` was, or `None` when it belongs to another boot.
pub fn age(at: &Stamp, now: &Now) -> Option<Duration> {
    (at.boot == now.at.boot).then(|| Duration::from_millis(now.at.ms.saturating_sub(at.ms)))
}

/// A pause that has lasted `pause_timeout` ends, whatever Consul says or
/// whether it can be asked at all.
pub fn expired(local: &Local, timeout: Duration, now: &Now) -> Option<Decision> {
    let p = local.paused.as_ref()?;
    let Some(at) = &p.at else {
        return Some(Decision::Resume(
            "a pause recorded without a boot-clock time".into(),
        ));
    };
    match age(at, now) {
        None => Some(Decision::Resume(
            "paused before this host last booted".into(),
        )),
        Some(a) if a >= timeout => Some(Decision::Resume(format!(
            "paused for {:.1} s, past pgbouncer.pause_timeout",
            a.as_secs_f64()
        ))),
        Some(_) => None,
    }
}

/// Decides for one cluster.
pub fn decide(
    view: &ScopeView,
    local: &Local,
    pause_on: PauseOn,
    timeout: Duration,
    now: &Now,
) -> Decision {
    let leader = match &view.leader {
        LeaderKey::Name(n) => Some(n.as_str()),
        _ => None,
    };
    if let Some(d) = expired(local, timeout, now) {
        return d;
    }
    if let Some(p) = &local.paused {
        return match leader {
            None => Decision::Hold("no leader key yet".into()),
            Some(l) if Some(l) != p.leader.as_deref() => Decision::ResumeOnceWritable,
            Some(l) => {
                let from_leader = view
                    .pause_request
                    .as_ref()
                    .filter(|(r, i)| r.member == l && !older_than_leadership(view, *i));
                let asked = from_leader.is_some_and(|(r, _)| Some(&r.id) == p.request.as_ref());
                if let Some((r, _)) = from_leader.filter(|_| !asked) {
                    if local.handled.as_ref() != Some(&r.id) {
                        return Decision::Adopt {
                            request: r.id.clone(),
                        };
                    }
                }
                if asked {
                    Decision::Hold(format!("{l} is stopping"))
                } else if view.failover && view.failover_at.is_none_or(|t| t <= now.unix as i64) {
                    Decision::Hold("a switchover is under way".into())
                } else {
                    Decision::Resume(format!(
                        "{l} still leads and no switchover is under way (cancelled)"
                    ))
                }
            }
        };
    }
    if pause_on == PauseOn::Never {
        return Decision::Nothing;
    }
    if let Some((r, index)) = &view.pause_request {
        if leader == Some(r.member.as_str()) && local.handled.as_ref() != Some(&r.id) {
            if older_than_leadership(view, *index) {
                return Decision::Ignored(format!(
                    "pause request {} from {} was written before {} took the leader key: left from an earlier stop; ignored",
                    crate::dcs::keys::shown(&r.id),
                    crate::dcs::keys::shown(&r.member),
                    crate::dcs::keys::shown(&r.member),
                ));
            }
            let age = now.unix.saturating_sub(r.since);
            if age > REQUEST_MAX_AGE.as_secs() {
                return Decision::Ignored(format!(
                    "pause request {} from {} is stale ({} s old by this host's clock); ignored",
                    crate::dcs::keys::shown(&r.id),
                    crate::dcs::keys::shown(&r.member),
                    age
                ));
            }
            return Decision::Pause {
                request: Some(r.id.clone()),
            };
        }
    }
    if pause_on == PauseOn::Always && leader.is_none() && !view.empty && !local.leaderless_served {
        return Decision::Pause { request: None };
    }
    Decision::Nothing
}

/// A request written before its member took the leader key it holds now
/// belongs to an earlier stop: the member was leader, asked for a pause,
/// stopped, and every run that would have deleted the request was killed;
/// now it leads again (a later leadership, a later ModifyIndex of the leader
/// key). A stop of the current leadership writes its request after the key.
fn older_than_leadership(view: &ScopeView, request_index: u64) -> bool {
    view.leader_index.is_some_and(|l| request_index < l)
}

/// The ModifyIndex of a pause request that is done with, seen by `me` in a
/// callback as primary: it leads, so the request is its own finished stop
/// (a restart, a cancelled switchover) or an old leader's whose switchover
/// is over.
pub fn done_request(view: &ScopeView, me: &str) -> Option<u64> {
    match &view.leader {
        LeaderKey::Name(l) if l == me => view.pause_request.as_ref().map(|(_, i)| *i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::keys::{PauseRequest, ScopeKeys};
    use crate::dcs::Entry;

    fn view(leader: Option<&str>, request: Option<(&str, &str, u64)>, failover: bool) -> ScopeView {
        let k = ScopeKeys::new("service", "batman");
        let mut es = vec![Entry {
            key: "service/batman/members/pg1".into(),
            value: b"{}".to_vec(),
            modify_index: 1,
            session: None,
        }];
        let mut put = |key: &str, v: String| {
            es.push(Entry {
                key: key.into(),
                value: v.into_bytes(),
                modify_index: 2,
                session: None,
            })
        };
        if let Some(l) = leader {
            put(&k.leader, l.into());
        }
        if let Some((m, id, since)) = request {
            let r = PauseRequest {
                member: m.into(),
                id: id.into(),
                since,
            };
            put(&k.pause_request, serde_json::to_string(&r).unwrap());
        }
        if failover {
            put(&k.failover, r#"{"leader":"pg1"}"#.into());
        }
        ScopeView::read(&es, &k)
    }

    fn stamp(ms: u64) -> Stamp {
        Stamp {
            boot: "b1".into(),
            ms,
        }
    }

    fn paused(request: Option<&str>, leader: Option<&str>, at_ms: u64) -> Local {
        Local {
            paused: Some(Paused {
                request: request.map(Into::into),
                leader: leader.map(Into::into),
                at: Some(stamp(at_ms)),
                databases: vec!["appdb".into()],
            }),
            handled: request.map(Into::into),
            leaderless_served: false,
        }
    }

    const T: Duration = Duration::from_secs(10);
    /// The PgBouncer host's present: 1000 s of uptime, Unix time 1_000_000.
    const NOW_MS: u64 = 1_000_000;
    const UNIX: u64 = 1_000_000;

    fn now() -> Now {
        Now {
            at: stamp(NOW_MS),
            unix: UNIX,
        }
    }

    #[test]
    fn a_request_older_than_the_leaders_lock_is_left_from_an_earlier_stop() {
        // pg1 asked for a pause (index 5) and stopped; every run that would
        // have deleted the request was killed; pg1 took the lock again
        // later (index 9). The request is not this leadership's stop.
        let mut v = view(Some("pg1"), Some(("pg1", "r1", UNIX - 30)), false);
        v.pause_request.as_mut().unwrap().1 = 5;
        v.leader_index = Some(9);
        let d = decide(&v, &Local::default(), PauseOn::Switchover, T, &now());
        assert!(
            matches!(&d, Decision::Ignored(why) if why.contains(r#"before "pg1" took the leader key"#)),
            "{d:?}"
        );
        // Already paused for another reason: not adopted either.
        let mut local = paused(None, Some("pg1"), NOW_MS - 1000);
        local.handled = None;
        let d = decide(&v, &local, PauseOn::Switchover, T, &now());
        assert!(!matches!(d, Decision::Adopt { .. }), "{d:?}");
        // This leadership's own stop writes after the lock: served.
        v.pause_request.as_mut().unwrap().1 = 12;
        let d = decide(&v, &Local::default(), PauseOn::Switchover, T, &now());
        assert_eq!(
            d,
            Decision::Pause {
                request: Some("r1".into())
            }
        );
    }

    #[test]
    fn a_request_from_the_leader_pauses_once_whatever_its_clock_says() {
        // The request's time comes from the database node's clock: behind,
        // ahead or right, it is served.
        for since in [UNIX - 1, UNIX - 600, UNIX + 600] {
            let v = view(Some("pg1"), Some(("pg1", "r1", since)), true);
            let d = decide(&v, &Local::default(), PauseOn::Switchover, T, &now());
            assert_eq!(
                d,
                Decision::Pause {
                    request: Some("r1".into())
                },
                "since {since}"
            );
        }
        let v = view(Some("pg1"), Some(("pg1", "r1", UNIX - 1)), true);
        // Served once: the same request after the resume pauses no more.
        let served = Local {
            handled: Some("r1".into()),
            ..Local::default()
        };
        assert_eq!(
            decide(&v, &served, PauseOn::Switchover, T, &now()),
            Decision::Nothing
        );
        // Not when pausing is off, not from a member that does not lead.
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Never, T, &now()),
            Decision::Nothing
        );
        let v2 = view(Some("pg2"), Some(("pg1", "r1", UNIX - 1)), true);
        assert_eq!(
            decide(&v2, &Local::default(), PauseOn::Switchover, T, &now()),
            Decision::Nothing
        );
        // One left behind for over an hour: ignored, and said.
        let old = view(
            Some("pg1"),
            Some(("pg1", "r1", UNIX - REQUEST_MAX_AGE.as_secs() - 1)),
            true,
        );
        assert!(matches!(
            decide(&old, &Local::default(), PauseOn::Switchover, T, &now()),
            Decision::Ignored(why) if why.contains("stale")
        ));
    }

    #[test]
    fn a_failover_pauses_only_with_always_and_once_per_leaderless_period() {
        let v = view(None, None, false);
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Switchover, T, &now()),
            Decision::Nothing
        );
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Always, T, &now()),
            Decision::Pause { request: None }
        );
        let served = Local {
            leaderless_served: true,
            ..Local::default()
        };
        assert_eq!(
            decide(&v, &served, PauseOn::Always, T, &now()),
            Decision::Nothing
        );
    }

    /// Every path out of a pause this host made.
    #[test]
    fn every_pause_is_undone() {
        let p = paused(Some("r1"), Some("pg1"), NOW_MS - 2_000);
        // Still stopping: hold.
        let v = view(Some("pg1"), Some(("pg1", "r1", UNIX - 2)), true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::Hold(_)
        ));
        // Leader key released: hold.
        let v = view(None, Some(("pg1", "r1", UNIX - 2)), true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::Hold(_)
        ));
        // A new leader: resume once it is writable.
        let v = view(Some("pg2"), Some(("pg1", "r1", UNIX - 2)), false);
        assert_eq!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::ResumeOnceWritable
        );
        // Cancelled: the same leader, no request, no failover key.
        let v = view(Some("pg1"), None, false);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::Resume(_)
        ));
        // The leader asks again with a new request: stay paused, confirm it.
        let v = view(Some("pg1"), Some(("pg1", "r2", UNIX - 1)), false);
        assert_eq!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::Adopt {
                request: "r2".into()
            }
        );
        // The request deleted but the switchover still under way: hold.
        let v = view(Some("pg1"), None, true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, &now()),
            Decision::Hold(_)
        ));
        // pause_timeout passed (by the boot clock, to the millisecond), a
        // record from another boot, a record without a boot-clock time:
        // resume, whatever Consul says (or if it says nothing: the caller
        // passes an empty view when Consul is out).
        let mut other_boot = paused(Some("r1"), Some("pg1"), NOW_MS - 1);
        other_boot
            .paused
            .as_mut()
            .unwrap()
            .at
            .as_mut()
            .unwrap()
            .boot = "b0".into();
        let mut no_time = paused(Some("r1"), Some("pg1"), NOW_MS - 1);
        no_time.paused.as_mut().unwrap().at = None;
        for local in [
            paused(Some("r1"), Some("pg1"), NOW_MS - T.as_millis() as u64),
            other_boot,
            no_time,
        ] {
            for v in [
                view(Some("pg1"), Some(("pg1", "r1", UNIX - 2)), true),
                view(None, None, false),
            ] {
                assert!(matches!(
                    decide(&v, &local, PauseOn::Switchover, T, &now()),
                    Decision::Resume(_)
                ));
            }
        }
        let nearly = paused(Some("r1"), Some("pg1"), NOW_MS - T.as_millis() as u64 + 1);
        assert_eq!(expired(&nearly, T, &now()), None);
        // A pause made for a failover (no leader then) ends at the new leader.
        let p = paused(None, None, NOW_MS - 1);
        let v = view(Some("pg2"), None, false);
        assert_eq!(
            decide(&v, &p, PauseOn::Always, T, &now()),
            Decision::ResumeOnceWritable
        );
        // Resuming does not depend on pause_on (it may have been turned off).
        let v = view(Some("pg1"), None, false);
        assert!(matches!(
            decide(
                &v,
                &paused(Some("r1"), Some("pg1"), NOW_MS - 1),
                PauseOn::Never,
                T,
                &now()
            ),
            Decision::Resume(_)
        ));
    }
}
