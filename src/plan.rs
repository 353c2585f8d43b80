//! PURE: the decision table of PRODUCT.md. (action, role, observed state) -> steps.
//!
//! Nothing here does I/O. A run observes (netlink, Consul), asks this module
//! what to do, and `apply` carries the steps out. The VIP is decided first
//! (`plan_vip`), then the Consul record (`plan_record`), because the VIP change
//! is local and must never wait for the record ("local first", "removal never
//! waits on Consul").

use std::fmt;

/// A Patroni callback action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// on_start
    Start,
    /// on_stop
    Stop,
    /// on_role_change
    RoleChange,
    /// on_restart
    Restart,
    /// on_reload
    Reload,
}

impl Action {
    /// Patroni's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "on_start",
            Action::Stop => "on_stop",
            Action::RoleChange => "on_role_change",
            Action::Restart => "on_restart",
            Action::Reload => "on_reload",
        }
    }
}

/// A role as Patroni passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// primary
    Primary,
    /// master (Patroni < 4 name of primary)
    Master,
    /// promoted (treated as primary)
    Promoted,
    /// standby_leader
    StandbyLeader,
    /// replica
    Replica,
    /// demoted
    Demoted,
    /// uninitialized
    Uninitialized,
}

impl Role {
    /// Patroni's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Master => "master",
            Role::Promoted => "promoted",
            Role::StandbyLeader => "standby_leader",
            Role::Replica => "replica",
            Role::Demoted => "demoted",
            Role::Uninitialized => "uninitialized",
        }
    }
}

/// Whether this node should hold the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Hold it (after the fence).
    Hold,
    /// Not hold it.
    Release,
}

/// The first column of the decision table.
pub fn want(action: Action, role: Role, standby_leader_holds: bool) -> Want {
    if action == Action::Stop {
        return Want::Release;
    }
    match role {
        Role::Primary | Role::Master | Role::Promoted => Want::Hold,
        Role::StandbyLeader if standby_leader_holds => Want::Hold,
        Role::StandbyLeader | Role::Replica | Role::Demoted | Role::Uninitialized => Want::Release,
    }
}

/// What Consul said about `<ns>/<scope>/leader` (consistent read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    /// The key names this node.
    Me,
    /// The key names another member.
    Other(String),
    /// No leader key (mid-failover).
    NoKey,
    /// Consul could not be asked within the time left.
    Unreachable,
}

/// The `vip-holder` record as read, with the ModifyIndex used for check-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No record; create with `cas=0`.
    Absent,
    /// A record.
    Present {
        /// Member it names.
        member: String,
        /// Whether address and interface match what this node would write.
        same_vip: bool,
        /// ModifyIndex for cas.
        index: u64,
    },
    /// A record that is not the JSON we write; replaced by a holder, never deleted.
    Unparsable {
        /// ModifyIndex for cas.
        index: u64,
    },
    /// Consul could not be asked.
    Unreachable,
}

/// One change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add the VIP to the interface.
    AddVip,
    /// Send gratuitous ARP / unsolicited NA for the VIP.
    Announce,
    /// Remove the VIP from the interface.
    RemoveVip,
    /// Write this node into `vip-holder` with check-and-set on `cas`.
    RecordHolder {
        /// ModifyIndex seen, 0 when absent.
        cas: u64,
    },
    /// Delete `vip-holder` with check-and-set on `cas`.
    ForgetHolder {
        /// ModifyIndex seen.
        cas: u64,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AddVip => f.write_str("add VIP"),
            Step::Announce => f.write_str("announce VIP"),
            Step::RemoveVip => f.write_str("remove VIP"),
            Step::RecordHolder { cas } => write!(f, "record this node as vip-holder (cas={cas})"),
            Step::ForgetHolder { cas } => write!(f, "delete vip-holder (cas={cas})"),
        }
    }
}

/// How a run ends when every step succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Converged.
    Ok,
    /// The fence refused the VIP (exit 1); the text says why.
    Refused(String),
    /// Local state is safe, run again later (exit 75); the text says why.
    Temporary(String),
}

/// The VIP part of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipPlan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// How the run ends if they succeed.
    pub verdict: Verdict,
    /// Whether the VIP should be on this node afterwards (decides the record step).
    pub holds: bool,
    /// Whether the `vip-holder` record may be touched at all: not while nobody
    /// holds the leader lock, when a write could only guess.
    pub record: bool,
}

/// When a run re-announces a VIP that is already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reannounce {
    /// Callbacks: a previous run may have been killed between adding and
    /// announcing, and the callback is a rare event, so announce again.
    Always,
    /// Reconcile runs every few seconds: announce only what it adds.
    OnlyWhenAdded,
}

/// Decides the VIP steps. `leader` is the fence read for `Want::Hold`;
/// for `Want::Release` it is not consulted (removal never waits on Consul).
pub fn plan_vip(want: Want, leader: &Leader, present: bool, reannounce: Reannounce) -> VipPlan {
    let hold = |verdict: Verdict| {
        let steps = if present {
            match reannounce {
                Reannounce::Always => vec![Step::Announce],
                Reannounce::OnlyWhenAdded => vec![],
            }
        } else {
            vec![Step::AddVip, Step::Announce]
        };
        VipPlan {
            steps,
            verdict,
            holds: true,
            record: true,
        }
    };
    let release = |verdict: Verdict| VipPlan {
        steps: if present {
            vec![Step::RemoveVip]
        } else {
            vec![]
        },
        verdict,
        holds: false,
        record: true,
    };
    match want {
        Want::Release => release(Verdict::Ok),
        Want::Hold => match leader {
            Leader::Me => hold(Verdict::Ok),
            // Patroni only runs as primary while it holds the leader lock or is in
            // failsafe mode (patroni/ha.py), so with Consul out of reach trust it.
            Leader::Unreachable => hold(Verdict::Temporary(
                "Consul unreachable; trusting Patroni's role".into(),
            )),
            // Another member holds the lock: that member gets the VIP, so this
            // node must not keep it either, or it would be on two hosts.
            Leader::Other(who) => release(Verdict::Refused(format!(
                "leader key names {who}, not this node; VIP not added"
            ))),
            // Mid-failover: nobody holds the lock. Change nothing.
            Leader::NoKey => VipPlan {
                steps: vec![],
                verdict: Verdict::Temporary("no leader key in Consul; VIP left as it is".into()),
                holds: present,
                record: false,
            },
        },
    }
}

/// Reconcile on a database node: what this node wants, from the leader key alone.
/// `None` means change nothing (no leader, or Consul unreachable).
pub fn reconcile_want(leader: &Leader) -> Option<Want> {
    match leader {
        Leader::Me => Some(Want::Hold),
        Leader::Other(_) => Some(Want::Release),
        Leader::NoKey | Leader::Unreachable => None,
    }
}

/// Decides the `vip-holder` step once the VIP is where it should be.
pub fn plan_record(holds: bool, me: &str, holder: &Holder) -> (Option<Step>, Verdict) {
    match (holds, holder) {
        (_, Holder::Unreachable) => (
            None,
            Verdict::Temporary("Consul unreachable; vip-holder not updated".into()),
        ),
        (
            true,
            Holder::Present {
                member, same_vip, ..
            },
        ) if member == me && *same_vip => (None, Verdict::Ok),
        (true, Holder::Present { index, .. }) | (true, Holder::Unparsable { index }) => {
            (Some(Step::RecordHolder { cas: *index }), Verdict::Ok)
        }
        (true, Holder::Absent) => (Some(Step::RecordHolder { cas: 0 }), Verdict::Ok),
        (false, Holder::Present { member, index, .. }) if member == me => {
            (Some(Step::ForgetHolder { cas: *index }), Verdict::Ok)
        }
        // Names another node, is absent, or is not ours to judge: leave it.
        (false, _) => (None, Verdict::Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Role::*;

    const ACTIONS: [Action; 5] = [Start, Stop, RoleChange, Restart, Reload];
    const ROLES: [Role; 7] = [
        Primary,
        Master,
        Promoted,
        StandbyLeader,
        Replica,
        Demoted,
        Uninitialized,
    ];

    #[test]
    fn want_table() {
        for a in ACTIONS {
            for r in ROLES {
                for sl in [false, true] {
                    let expected = match (a, r) {
                        (Stop, _) => Want::Release,
                        (_, Primary | Master | Promoted) => Want::Hold,
                        (_, StandbyLeader) if sl => Want::Hold,
                        _ => Want::Release,
                    };
                    assert_eq!(want(a, r, sl), expected, "{a:?} {r:?} standby_leader={sl}");
                }
            }
        }
    }

    /// Every action × role × leader view × VIP presence, against the table.
    #[test]
    fn vip_table() {
        let leaders = [
            Leader::Me,
            Leader::Other("pg2".into()),
            Leader::NoKey,
            Leader::Unreachable,
        ];
        for a in ACTIONS {
            for r in ROLES {
                for l in &leaders {
                    for present in [false, true] {
                        let w = want(a, r, false);
                        let p = plan_vip(w, l, present, Reannounce::Always);
                        let ctx = format!("{a:?} {r:?} {l:?} present={present}");
                        match (w, l) {
                            (Want::Release, _) => {
                                assert_eq!(p.verdict, Verdict::Ok, "{ctx}");
                                assert!(p.record, "{ctx}");
                                assert!(!p.holds, "{ctx}");
                                let exp = if present {
                                    vec![Step::RemoveVip]
                                } else {
                                    vec![]
                                };
                                assert_eq!(p.steps, exp, "{ctx}");
                            }
                            (Want::Hold, Leader::Me | Leader::Unreachable) => {
                                assert!(p.holds, "{ctx}");
                                let exp = if present {
                                    vec![Step::Announce]
                                } else {
                                    vec![Step::AddVip, Step::Announce]
                                };
                                assert_eq!(p.steps, exp, "{ctx}");
                                if *l == Leader::Unreachable {
                                    assert!(matches!(p.verdict, Verdict::Temporary(_)), "{ctx}");
                                } else {
                                    assert_eq!(p.verdict, Verdict::Ok, "{ctx}");
                                }
                            }
                            (Want::Hold, Leader::Other(_)) => {
                                assert!(!p.holds, "{ctx}");
                                assert!(!p.steps.contains(&Step::AddVip), "{ctx}");
                                match &p.verdict {
                                    Verdict::Refused(m) => assert!(m.contains("pg2"), "{ctx}"),
                                    v => panic!("{ctx}: {v:?}"),
                                }
                            }
                            (Want::Hold, Leader::NoKey) => {
                                assert!(p.steps.is_empty(), "{ctx}");
                                assert_eq!(p.holds, present, "{ctx}");
                                assert!(!p.record, "{ctx}: no record without a lock holder");
                                assert!(matches!(p.verdict, Verdict::Temporary(_)), "{ctx}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reconcile_does_not_reannounce_a_present_vip() {
        let p = plan_vip(Want::Hold, &Leader::Me, true, Reannounce::OnlyWhenAdded);
        assert!(p.steps.is_empty());
        let p = plan_vip(Want::Hold, &Leader::Me, false, Reannounce::OnlyWhenAdded);
        assert_eq!(p.steps, vec![Step::AddVip, Step::Announce]);
    }

    #[test]
    fn reconcile_want_table() {
        assert_eq!(reconcile_want(&Leader::Me), Some(Want::Hold));
        assert_eq!(
            reconcile_want(&Leader::Other("x".into())),
            Some(Want::Release)
        );
        assert_eq!(reconcile_want(&Leader::NoKey), None);
        assert_eq!(reconcile_want(&Leader::Unreachable), None);
    }

    #[test]
    fn record_table() {
        let mine = Holder::Present {
            member: "pg1".into(),
            same_vip: true,
            index: 7,
        };
        let mine_other_vip = Holder::Present {
            member: "pg1".into(),
            same_vip: false,
            index: 8,
        };
        let theirs = Holder::Present {
            member: "pg2".into(),
            same_vip: true,
            index: 9,
        };
        let junk = Holder::Unparsable { index: 10 };
        let cases: Vec<(bool, &Holder, Option<Step>)> = vec![
            (true, &Holder::Absent, Some(Step::RecordHolder { cas: 0 })),
            (true, &mine, None),
            (true, &mine_other_vip, Some(Step::RecordHolder { cas: 8 })),
            (true, &theirs, Some(Step::RecordHolder { cas: 9 })),
            (true, &junk, Some(Step::RecordHolder { cas: 10 })),
            (false, &Holder::Absent, None),
            (false, &mine, Some(Step::ForgetHolder { cas: 7 })),
            (false, &mine_other_vip, Some(Step::ForgetHolder { cas: 8 })),
            // Delete only if it still names this node.
            (false, &theirs, None),
            (false, &junk, None),
        ];
        for (holds, h, exp) in cases {
            let (step, verdict) = plan_record(holds, "pg1", h);
            assert_eq!(step, exp, "holds={holds} {h:?}");
            assert_eq!(verdict, Verdict::Ok);
        }
        for holds in [true, false] {
            let (step, verdict) = plan_record(holds, "pg1", &Holder::Unreachable);
            assert_eq!(step, None);
            assert!(matches!(verdict, Verdict::Temporary(_)));
        }
    }
}
