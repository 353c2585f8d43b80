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
//! once `pause_timeout` has passed. docs/design.md has the table.

use crate::config::PauseOn;
use crate::keys::{LeaderKey, ScopeView};
use serde::{Deserialize, Serialize};

/// What this host remembers about a cluster's pause (a file beside the lock,
/// written before PAUSE is sent, removed after RESUME).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    /// The pause this host made and has not undone.
    pub paused: Option<Paused>,
    /// The last request this host paused for (so a request is served once).
    pub handled: Option<String>,
}

/// A pause this host made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// The request it answered (none: a failover paused with `pause_on: always`).
    pub request: Option<String>,
    /// The leader key when it paused.
    pub leader: Option<String>,
    /// When, seconds since the Unix epoch.
    pub since: u64,
}

/// What to do about pausing one cluster now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: not paused, nothing asks for a pause.
    Nothing,
    /// Pause the cluster's databases, and confirm `request`.
    Pause {
        /// The request answered.
        request: Option<String>,
    },
    /// Stay paused; the text says why.
    Hold(String),
    /// A new leader: point the entries at it once it is writable, then resume.
    ResumeOnceWritable,
    /// Resume now; the text says why.
    Resume(String),
}

/// A pause that has lasted `pause_timeout` ends, whatever Consul says or
/// whether it can be asked at all.
pub fn expired(local: &Local, timeout_secs: u64, now: u64) -> Option<Decision> {
    let p = local.paused.as_ref()?;
    let age = now.saturating_sub(p.since);
    (age >= timeout_secs)
        .then(|| Decision::Resume(format!("paused for {age} s, past pgbouncer.pause_timeout")))
}

/// Decides for one cluster. `now` and the times in `local` and in the
/// request are seconds since the Unix epoch.
pub fn decide(
    view: &ScopeView,
    local: &Local,
    pause_on: PauseOn,
    timeout_secs: u64,
    now: u64,
) -> Decision {
    let leader = match &view.leader {
        LeaderKey::Name(n) => Some(n.as_str()),
        _ => None,
    };
    if let Some(d) = expired(local, timeout_secs, now) {
        return d;
    }
    if let Some(p) = &local.paused {
        return match leader {
            None => Decision::Hold("no leader key yet".into()),
            Some(l) if Some(l) != p.leader.as_deref() => Decision::ResumeOnceWritable,
            Some(l) => {
                let asked = view
                    .pause_request
                    .as_ref()
                    .is_some_and(|(r, _)| Some(&r.id) == p.request.as_ref() && r.member == l);
                if asked {
                    Decision::Hold(format!("{l} is stopping"))
                } else if view.failover {
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
    if let Some((r, _)) = &view.pause_request {
        let fresh = now.saturating_sub(r.since) < timeout_secs && r.since <= now + 60;
        if fresh && leader == Some(r.member.as_str()) && local.handled.as_ref() != Some(&r.id) {
            return Decision::Pause {
                request: Some(r.id.clone()),
            };
        }
    }
    if pause_on == PauseOn::Always && leader.is_none() && !view.empty {
        return Decision::Pause { request: None };
    }
    Decision::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::Entry;
    use crate::keys::{PauseRequest, ScopeKeys};

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

    fn paused(request: Option<&str>, leader: Option<&str>, since: u64) -> Local {
        Local {
            paused: Some(Paused {
                request: request.map(Into::into),
                leader: leader.map(Into::into),
                since,
            }),
            handled: request.map(Into::into),
        }
    }

    const T: u64 = 10;
    const NOW: u64 = 1_000;

    #[test]
    fn a_fresh_request_from_the_leader_pauses_once() {
        let v = view(Some("pg1"), Some(("pg1", "r1", NOW - 1)), true);
        let d = decide(&v, &Local::default(), PauseOn::Switchover, T, NOW);
        assert_eq!(
            d,
            Decision::Pause {
                request: Some("r1".into())
            }
        );
        // Served once: the same request after the resume pauses no more.
        let served = Local {
            paused: None,
            handled: Some("r1".into()),
        };
        assert_eq!(
            decide(&v, &served, PauseOn::Switchover, T, NOW),
            Decision::Nothing
        );
        // Not when pausing is off, not from a member that does not lead, not
        // when stale.
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Never, T, NOW),
            Decision::Nothing
        );
        let v2 = view(Some("pg2"), Some(("pg1", "r1", NOW - 1)), true);
        assert_eq!(
            decide(&v2, &Local::default(), PauseOn::Switchover, T, NOW),
            Decision::Nothing
        );
        let old = view(Some("pg1"), Some(("pg1", "r1", NOW - T)), true);
        assert_eq!(
            decide(&old, &Local::default(), PauseOn::Switchover, T, NOW),
            Decision::Nothing
        );
    }

    #[test]
    fn a_failover_pauses_only_with_always() {
        let v = view(None, None, false);
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Switchover, T, NOW),
            Decision::Nothing
        );
        assert_eq!(
            decide(&v, &Local::default(), PauseOn::Always, T, NOW),
            Decision::Pause { request: None }
        );
    }

    /// Every path out of a pause this host made.
    #[test]
    fn every_pause_is_undone() {
        let p = paused(Some("r1"), Some("pg1"), NOW - 2);
        // Still stopping: hold.
        let v = view(Some("pg1"), Some(("pg1", "r1", NOW - 2)), true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, NOW),
            Decision::Hold(_)
        ));
        // Leader key released: hold.
        let v = view(None, Some(("pg1", "r1", NOW - 2)), true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, NOW),
            Decision::Hold(_)
        ));
        // A new leader: resume once it is writable.
        let v = view(Some("pg2"), Some(("pg1", "r1", NOW - 2)), false);
        assert_eq!(
            decide(&v, &p, PauseOn::Switchover, T, NOW),
            Decision::ResumeOnceWritable
        );
        // Cancelled: the same leader, no request, no failover key.
        let v = view(Some("pg1"), None, false);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, NOW),
            Decision::Resume(_)
        ));
        // The request deleted but the switchover still under way: hold.
        let v = view(Some("pg1"), None, true);
        assert!(matches!(
            decide(&v, &p, PauseOn::Switchover, T, NOW),
            Decision::Hold(_)
        ));
        // pause_timeout passed: resume, whatever Consul says (or if it says
        // nothing: the caller passes an empty view when Consul is out).
        for v in [
            view(Some("pg1"), Some(("pg1", "r1", NOW - 2)), true),
            view(None, None, false),
        ] {
            assert!(matches!(
                decide(
                    &v,
                    &paused(Some("r1"), Some("pg1"), NOW - T),
                    PauseOn::Switchover,
                    T,
                    NOW
                ),
                Decision::Resume(_)
            ));
        }
        // A pause made for a failover (no leader then) ends at the new leader.
        let p = paused(None, None, NOW - 1);
        let v = view(Some("pg2"), None, false);
        assert_eq!(
            decide(&v, &p, PauseOn::Always, T, NOW),
            Decision::ResumeOnceWritable
        );
        // Resuming does not depend on pause_on (it may have been turned off).
        let v = view(Some("pg1"), None, false);
        assert!(matches!(
            decide(
                &v,
                &paused(Some("r1"), Some("pg1"), NOW - 1),
                PauseOn::Never,
                T,
                NOW
            ),
            Decision::Resume(_)
        ));
    }
}
