//! PURE: the decision table. One [`Observed`] value in, one [`Plan`] out.
//!
//! Nothing here does I/O. A run observes (Consul, the interfaces, what this
//! host remembers having added), asks [`plan`] what to do, and `apply`
//! carries the steps out. The rules it encodes are in docs/design.md:
//!
//! - **What the hook owns.** Addresses it remembers having added (per scope,
//!   with their interface), addresses carrying its mark, and a VIP found on a
//!   node that no member uses (left by older tooling). It never removes
//!   anything else, and never a member's own address or an address that can
//!   never be a VIP (`keys::unusable_vip`).
//! - **Fenced holds.** A hold needs Consul to name this node as leader; when
//!   Consul cannot be reached Patroni is trusted; when it answers but not
//!   usefully, or has no leader key, nothing changes.
//! - **Local first.** VIP steps come before the record step, which is a
//!   separate type and is carried out after the VIP is where it should be.

use crate::keys::{Holder, LeaderKey, ScopeKeys, ScopeView};
use ipnet::IpNet;
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

/// The first column of the decision table: what a callback wants.
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

/// Why a run decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A Patroni callback, which wants this.
    Callback(Want),
    /// `reconcile`: follow the leader key.
    Reconcile,
}

/// What Consul said about the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsulView {
    /// Not asked (a release asks only after its local part).
    NotAsked,
    /// No answer in time, refused connection, 429, 5xx: temporary.
    Unreachable(String),
    /// Answered, but not usefully: 403, a redirect, a malformed or oversized
    /// answer, keys hidden by ACLs, a TLS verification failure.
    Unusable(String),
    /// Consul cannot be asked as configured: an unreadable token or CA file.
    Misconfigured(String),
    /// One recursive read of `<ns>/<scope>/`.
    Answered(ScopeView),
}

/// An address on an interface: the unit of what the hook owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owned {
    /// The address with the prefix it was added with.
    pub net: IpNet,
    /// The interface it was added to.
    pub interface: String,
}

impl Owned {
    fn same(&self, other: &Owned) -> bool {
        self.net.addr() == other.net.addr() && self.interface == other.interface
    }
}

impl fmt::Display for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.net, self.interface)
    }
}

/// An address the kernel has on one of the interfaces that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// The address with the kernel's prefix.
    pub net: IpNet,
    /// Its interface.
    pub interface: String,
    /// It carries the hook's mark (IPv4 label, address protocol).
    pub marked: bool,
}

/// Everything a run decides from.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Why the run decides.
    pub trigger: Trigger,
    /// This node's Patroni member name.
    pub me: String,
    /// The scope's keys (for messages).
    pub keys: ScopeKeys,
    /// `vip.interface`.
    pub interface: String,
    /// `vip.address`, if configured.
    pub config_vip: Option<IpNet>,
    /// Consul's answer.
    pub consul: ConsulView,
    /// Addresses on `interface` and on every interface of `remembered`.
    pub present: Vec<Present>,
    /// Addresses this host remembers having added, oldest first.
    pub remembered: Vec<Owned>,
    /// Re-announce a VIP that is already present (callbacks do; reconcile,
    /// which runs every few seconds, announces only what it adds).
    pub reannounce: bool,
}

/// A change to the VIP on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipStep {
    /// Write the address into this host's memory of what it owns (before adding).
    Remember(Owned),
    /// Add the address, marked as the hook's.
    Add(Owned),
    /// Send gratuitous ARP / unsolicited NA for it.
    Announce(Owned),
    /// Remove the address.
    Remove(Owned),
    /// Drop it from the memory (after removing).
    Forget(Owned),
}

impl fmt::Display for VipStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipStep::Remember(o) => write!(f, "remember {o}"),
            VipStep::Add(o) => write!(f, "add {} to {}", o.net, o.interface),
            VipStep::Announce(o) => write!(f, "announce {} on {}", o.net.addr(), o.interface),
            VipStep::Remove(o) => write!(f, "remove {} from {}", o.net, o.interface),
            VipStep::Forget(o) => write!(f, "forget {o}"),
        }
    }
}

/// A change to `<ns>/<scope>/vip-holder`, with check-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordStep {
    /// Write this node as holder of `owned`, if the ModifyIndex is still `cas`.
    Write {
        /// ModifyIndex seen (0: only if absent).
        cas: u64,
        /// What this node holds.
        owned: Owned,
    },
    /// Delete the record, if the ModifyIndex is still `cas`.
    Delete {
        /// ModifyIndex seen.
        cas: u64,
    },
}

impl fmt::Display for RecordStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordStep::Write { cas, .. } => {
                write!(f, "record this node as vip-holder (cas={cas})")
            }
            RecordStep::Delete { cas } => write!(f, "delete vip-holder (cas={cas})"),
        }
    }
}

/// How a run ends, besides its steps' own errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Temporary: local state is safe, run again later (exit 75).
    Temporary(String),
    /// Refused, or a value from Consul is unusable (exit 1).
    Failed(String),
    /// The configuration is wrong (exit 2).
    Config(String),
}

/// What this node does about the VIP, in one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Hold the VIP.
    Hold,
    /// Not hold it.
    Release,
    /// Change nothing now.
    Keep,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What this node does about the VIP.
    pub intent: Intent,
    /// The VIP held, when the intent is Hold and it is known.
    pub vip: Option<Owned>,
    /// VIP steps, in order.
    pub steps: Vec<VipStep>,
    /// The record step, after the VIP steps succeeded.
    pub record: Option<RecordStep>,
    /// How the run ends if every step succeeds (empty: converged).
    pub verdicts: Vec<Verdict>,
    /// A release that acted on what it knows locally and should now ask
    /// Consul (for the record, and for a VIP left by older tooling).
    pub ask_consul: bool,
}

/// What the run wants, from the trigger and Consul's answer alone; the verb
/// needs it before the lock (a release never waits for one).
pub fn intent(trigger: Trigger, consul: &ConsulView, me: &str) -> (Intent, Option<Verdict>) {
    let leader_says = |v: &ScopeView| match &v.leader {
        LeaderKey::Name(n) if n == me => Ok(true),
        LeaderKey::Name(_) => Ok(false),
        LeaderKey::Absent => Err(Verdict::Temporary(
            "no leader key in Consul (mid-failover?); VIP left as it is".into(),
        )),
        LeaderKey::Invalid(why) => Err(Verdict::Failed(format!("{why}; VIP left as it is"))),
    };
    let other = |v: &ScopeView| match &v.leader {
        LeaderKey::Name(n) => n.clone(),
        _ => String::new(),
    };
    match (trigger, consul) {
        (Trigger::Callback(Want::Release), _) => (Intent::Release, None),
        (_, ConsulView::NotAsked) => (Intent::Keep, None),
        (_, ConsulView::Unusable(why)) => (
            Intent::Keep,
            Some(Verdict::Failed(format!("{why}; VIP left as it is"))),
        ),
        (_, ConsulView::Misconfigured(why)) => (
            Intent::Keep,
            Some(Verdict::Config(format!("{why}; VIP left as it is"))),
        ),
        // Patroni only runs as primary while it holds the leader lock or is
        // in failsafe mode (patroni/ha.py), so with Consul out of reach a
        // callback trusts it; reconcile has nobody to trust.
        (Trigger::Callback(Want::Hold), ConsulView::Unreachable(why)) => (
            Intent::Hold,
            Some(Verdict::Temporary(format!(
                "{why}; trusting Patroni's role"
            ))),
        ),
        (Trigger::Reconcile, ConsulView::Unreachable(why)) => (
            Intent::Keep,
            Some(Verdict::Temporary(format!("{why}; VIP left as it is"))),
        ),
        (trigger, ConsulView::Answered(v)) => match leader_says(v) {
            Err(verdict) => (Intent::Keep, Some(verdict)),
            Ok(true) => (Intent::Hold, None),
            // Another member holds the lock: it gets the VIP, so this node
            // must not keep it either, or it would be on two hosts.
            Ok(false) => match trigger {
                Trigger::Callback(_) => (
                    Intent::Release,
                    Some(Verdict::Failed(format!(
                        "fence: leader key names {}, not this node; VIP not added",
                        crate::keys::shown(&other(v))
                    ))),
                ),
                Trigger::Reconcile => (Intent::Release, None),
            },
        },
    }
}

/// The VIP Consul or the configuration names now, checked against the
/// members' own addresses: `Ok(None)` when it cannot be known (no address
/// configured, Consul not answered).
fn current_vip(o: &Observed, view: Option<&ScopeView>) -> Result<Option<IpNet>, Verdict> {
    let member_of = |net: IpNet| view.and_then(|v| v.member_using(net.addr()));
    match (o.config_vip, view) {
        (Some(net), _) => match member_of(net) {
            Some(m) => Err(Verdict::Config(format!(
                "vip.address {net} is the address of member {}, not a VIP",
                crate::keys::shown(&m.name)
            ))),
            None => Ok(Some(net)),
        },
        (None, None) => Ok(None),
        (None, Some(v)) => match &v.floating_ip {
            None => Err(Verdict::Failed(format!(
                "vip.address is not set and Consul has no key {}",
                o.keys.floating_ip
            ))),
            Some(Err(why)) => Err(Verdict::Failed(why.clone())),
            Some(Ok(net)) => match member_of(*net) {
                Some(m) => Err(Verdict::Failed(format!(
                    "{}: {net} is the address of member {}, not a VIP; nothing changed",
                    o.keys.floating_ip,
                    crate::keys::shown(&m.name)
                ))),
                None => Ok(Some(*net)),
            },
        },
    }
}

/// The record step for a decided intent, against the record as read: a
/// holder writes itself unless the record already says so; a releaser
/// deletes the record only while it names this node.
pub fn record_step(
    intent: &Intent,
    vip: Option<&Owned>,
    me: &str,
    holder: &Holder,
) -> Option<RecordStep> {
    match (intent, vip) {
        (Intent::Hold, Some(target)) => match holder {
            Holder::Record { record, .. }
                if record.member == me
                    && record.address == target.net.to_string()
                    && record.interface == target.interface =>
            {
                None
            }
            Holder::Record { index, .. } | Holder::Unparsable { index } => {
                Some(RecordStep::Write {
                    cas: *index,
                    owned: target.clone(),
                })
            }
            Holder::Absent => Some(RecordStep::Write {
                cas: 0,
                owned: target.clone(),
            }),
        },
        (Intent::Release, _) => match holder {
            Holder::Record { record, index } if record.member == me => {
                Some(RecordStep::Delete { cas: *index })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Decides the steps.
pub fn plan(o: &Observed) -> Plan {
    let view = match &o.consul {
        ConsulView::Answered(v) => Some(v),
        _ => None,
    };
    let (intent, first) = intent(o.trigger, &o.consul, &o.me);
    let mut p = Plan {
        intent: intent.clone(),
        vip: None,
        steps: Vec::new(),
        record: None,
        verdicts: first.into_iter().collect(),
        ask_consul: false,
    };
    if o.consul == ConsulView::NotAsked && o.trigger != Trigger::Callback(Want::Release) {
        // Holds and reconcile decide from Consul; the verb asks first.
        p.ask_consul = true;
        return p;
    }
    let present = |owned: &Owned| {
        o.present
            .iter()
            .any(|p| p.net.addr() == owned.net.addr() && p.interface == owned.interface)
    };
    let remembered = |owned: &Owned| o.remembered.iter().any(|r| r.same(owned));
    // What this host owns: what it remembers, and what carries its mark.
    let mut owned: Vec<Owned> = o.remembered.clone();
    for p in o.present.iter().filter(|p| p.marked) {
        let candidate = Owned {
            net: p.net,
            interface: p.interface.clone(),
        };
        if !owned.iter().any(|x| x.same(&candidate)) {
            owned.push(candidate);
        }
    }
    let members = view.map(|v| v.member_ips()).unwrap_or_default();
    let current = current_vip(o, view);
    // Removes an owned address (unless a member uses it now) and forgets it.
    let drop_owned = |steps: &mut Vec<VipStep>, x: &Owned| {
        if !members.contains(&x.net.addr()) && present(x) {
            steps.push(VipStep::Remove(x.clone()));
        }
        if remembered(x) {
            steps.push(VipStep::Forget(x.clone()));
        }
    };

    match intent {
        Intent::Keep => {}
        Intent::Hold => {
            let (vip, known) = match current {
                Err(v) => {
                    p.intent = Intent::Keep;
                    p.verdicts.push(v);
                    return p;
                }
                Ok(Some(net)) => (net, true),
                // Consul unreachable and no address configured: the newest
                // address this host held, if any; others are left alone,
                // since which one is the VIP now is not known.
                Ok(None) => match o.remembered.last() {
                    Some(r) => (r.net, false),
                    None => {
                        p.intent = Intent::Keep;
                        p.verdicts.push(Verdict::Temporary(
                            "vip.address is not set, Consul is unreachable and no address is remembered".into(),
                        ));
                        return p;
                    }
                },
            };
            let target = Owned {
                net: vip,
                interface: o.interface.clone(),
            };
            if present(&target) {
                let ours = owned.iter().any(|x| x.same(&target));
                // A VIP already in place (left by older tooling) is adopted
                // once Consul confirmed no member uses it.
                if !ours && view.is_some() {
                    p.steps.push(VipStep::Remember(target.clone()));
                }
                if o.reannounce {
                    p.steps.push(VipStep::Announce(target.clone()));
                }
            } else {
                if !remembered(&target) {
                    p.steps.push(VipStep::Remember(target.clone()));
                }
                p.steps.push(VipStep::Add(target.clone()));
                p.steps.push(VipStep::Announce(target.clone()));
            }
            if known {
                for x in owned.iter().filter(|x| !x.same(&target)) {
                    drop_owned(&mut p.steps, x);
                }
            }
            if let (Some(v), true) = (view, known) {
                p.record = record_step(&Intent::Hold, Some(&target), &o.me, &v.holder);
            }
            p.vip = Some(target);
        }
        Intent::Release => {
            for x in &owned {
                drop_owned(&mut p.steps, x);
            }
            match current {
                // A VIP not ours but in place (older tooling) goes when no
                // member uses it; current_vip checked that against Consul.
                Ok(Some(net)) if view.is_some() => {
                    let x = Owned {
                        net,
                        interface: o.interface.clone(),
                    };
                    if present(&x) && !owned.iter().any(|y| y.same(&x)) {
                        p.steps.push(VipStep::Remove(x));
                    }
                }
                Ok(_) => {}
                Err(v) => p.verdicts.push(v),
            }
            match (&o.consul, view) {
                (_, Some(v)) => {
                    p.record = record_step(&Intent::Release, None, &o.me, &v.holder);
                }
                (ConsulView::NotAsked, _) => p.ask_consul = true,
                (ConsulView::Unreachable(why), _) => p
                    .verdicts
                    .push(Verdict::Temporary(format!("{why}; vip-holder not updated"))),
                (ConsulView::Unusable(why), _) => p
                    .verdicts
                    .push(Verdict::Failed(format!("{why}; vip-holder not updated"))),
                (ConsulView::Misconfigured(why), _) => p
                    .verdicts
                    .push(Verdict::Config(format!("{why}; vip-holder not updated"))),
                (ConsulView::Answered(_), None) => {}
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::Entry;
    use crate::keys::HolderRecord;
    use proptest::prelude::*;
    use std::net::IpAddr;
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

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn owned(s: &str, i: &str) -> Owned {
        Owned {
            net: net(s),
            interface: i.into(),
        }
    }

    fn keys() -> ScopeKeys {
        ScopeKeys::new("service", "batman")
    }

    fn entry(k: &str, v: &str, idx: u64) -> Entry {
        Entry {
            key: format!("service/batman/{k}"),
            value: v.as_bytes().to_vec(),
            modify_index: idx,
            session: None,
        }
    }

    fn member(name: &str, host: &str) -> Entry {
        entry(
            &format!("members/{name}"),
            &format!(
                r#"{{"conn_url":"postgres://{host}:5432/postgres","api_url":"http://{host}:8008/patroni"}}"#
            ),
            3,
        )
    }

    /// A Consul answer: leader, members pg1 (198.51.100.11) and pg2
    /// (198.51.100.12), and what else is given.
    fn answered(leader: Option<&str>, extra: &[Entry]) -> ConsulView {
        let mut es = vec![
            member("pg1", "198.51.100.11"),
            member("pg2", "198.51.100.12"),
        ];
        if let Some(l) = leader {
            es.push(entry("leader", l, 5));
        }
        es.extend_from_slice(extra);
        ConsulView::Answered(ScopeView::read(&es, &keys()))
    }

    fn holder(member: &str, addr: &str, idx: u64) -> Entry {
        let r = HolderRecord {
            member: member.into(),
            address: addr.into(),
            interface: "eth1".into(),
            since: "2026-01-01T00:00:00Z".into(),
        };
        entry("vip-holder", &serde_json::to_string(&r).unwrap(), idx)
    }

    fn observed(trigger: Trigger, consul: ConsulView) -> Observed {
        Observed {
            trigger,
            me: "pg1".into(),
            keys: keys(),
            interface: "eth1".into(),
            config_vip: Some(net("198.51.100.100/24")),
            consul,
            present: vec![],
            remembered: vec![],
            reannounce: true,
        }
    }

    fn at(o: &mut Observed, s: &str, i: &str, marked: bool) {
        o.present.push(Present {
            net: net(s),
            interface: i.into(),
            marked,
        });
    }

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.verdicts
            .iter()
            .map(|v| match v {
                Verdict::Temporary(_) => "temporary",
                Verdict::Failed(_) => "failed",
                Verdict::Config(_) => "config",
            })
            .collect()
    }

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

    /// The intent table: every trigger against every kind of Consul answer.
    #[test]
    fn intent_table() {
        use Intent::*;
        let hold = Trigger::Callback(Want::Hold);
        let release = Trigger::Callback(Want::Release);
        let rec = Trigger::Reconcile;
        let views = [
            ("me", answered(Some("pg1"), &[])),
            ("other", answered(Some("pg2"), &[])),
            ("nokey", answered(None, &[])),
            ("invalid", answered(Some("pg2\nx"), &[])),
            ("unreachable", ConsulView::Unreachable("u".into())),
            ("unusable", ConsulView::Unusable("x".into())),
            ("misconfigured", ConsulView::Misconfigured("t".into())),
        ];
        type Row = [(Intent, Option<&'static str>); 7];
        let table: [(Trigger, Row); 3] = [
            (
                hold,
                [
                    (Hold, None),
                    (Release, Some("failed")),
                    (Keep, Some("temporary")),
                    (Keep, Some("failed")),
                    (Hold, Some("temporary")),
                    (Keep, Some("failed")),
                    (Keep, Some("config")),
                ],
            ),
            (
                release,
                [
                    (Release, None),
                    (Release, None),
                    (Release, None),
                    (Release, None),
                    (Release, None),
                    (Release, None),
                    (Release, None),
                ],
            ),
            (
                rec,
                [
                    (Hold, None),
                    (Release, None),
                    (Keep, Some("temporary")),
                    (Keep, Some("failed")),
                    (Keep, Some("temporary")),
                    (Keep, Some("failed")),
                    (Keep, Some("config")),
                ],
            ),
        ];
        for (trigger, row) in table {
            for ((name, view), (want_intent, want_verdict)) in views.iter().zip(row) {
                let (i, v) = intent(trigger, view, "pg1");
                assert_eq!(i, want_intent, "{trigger:?} {name}");
                let k = v.map(|v| match v {
                    Verdict::Temporary(_) => "temporary",
                    Verdict::Failed(_) => "failed",
                    Verdict::Config(_) => "config",
                });
                assert_eq!(k, want_verdict, "{trigger:?} {name}");
            }
        }
    }

    #[test]
    fn hold_adds_remembers_first_announces_and_records() {
        let o = observed(Trigger::Callback(Want::Hold), answered(Some("pg1"), &[]));
        let p = plan(&o);
        let vip = owned("198.51.100.100/24", "eth1");
        assert_eq!(
            p.steps,
            vec![
                VipStep::Remember(vip.clone()),
                VipStep::Add(vip.clone()),
                VipStep::Announce(vip.clone())
            ]
        );
        assert_eq!(p.record, Some(RecordStep::Write { cas: 0, owned: vip }));
        assert!(p.verdicts.is_empty());
    }

    #[test]
    fn hold_converged_reannounces_only_for_callbacks_and_keeps_the_record() {
        let mut o = observed(
            Trigger::Callback(Want::Hold),
            answered(Some("pg1"), &[holder("pg1", "198.51.100.100/24", 9)]),
        );
        o.remembered = vec![owned("198.51.100.100/24", "eth1")];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![VipStep::Announce(owned("198.51.100.100/24", "eth1"))]
        );
        assert_eq!(p.record, None);
        o.trigger = Trigger::Reconcile;
        o.reannounce = false;
        assert!(plan(&o).steps.is_empty());
    }

    #[test]
    fn hold_removes_what_it_owned_before_and_adopts_what_it_finds() {
        // Defect 1: the floating-ip moved from .100 to .101 and the interface
        // from eth2 to eth1; both old addresses go.
        let mut o = observed(
            Trigger::Reconcile,
            answered(Some("pg1"), &[entry("floating-ip", "198.51.100.101/24", 4)]),
        );
        o.config_vip = None;
        o.reannounce = false;
        o.remembered = vec![
            owned("198.51.100.100/24", "eth1"),
            owned("198.51.100.101/24", "eth2"),
        ];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        at(&mut o, "198.51.100.101/24", "eth2", true);
        let p = plan(&o);
        let new = owned("198.51.100.101/24", "eth1");
        assert_eq!(
            p.steps,
            vec![
                VipStep::Remember(new.clone()),
                VipStep::Add(new.clone()),
                VipStep::Announce(new),
                VipStep::Remove(owned("198.51.100.100/24", "eth1")),
                VipStep::Forget(owned("198.51.100.100/24", "eth1")),
                VipStep::Remove(owned("198.51.100.101/24", "eth2")),
                VipStep::Forget(owned("198.51.100.101/24", "eth2")),
            ]
        );
        // Found in place, not ours, Consul answered: adopted.
        let mut o = observed(Trigger::Callback(Want::Hold), answered(Some("pg1"), &[]));
        at(&mut o, "198.51.100.100/32", "eth1", false);
        let p = plan(&o);
        assert_eq!(
            p.steps[0],
            VipStep::Remember(owned("198.51.100.100/24", "eth1"))
        );
        assert!(!p.steps.iter().any(|s| matches!(s, VipStep::Add(_))));
    }

    #[test]
    fn hold_with_consul_unreachable_trusts_patroni_and_touches_nothing_else() {
        let mut o = observed(
            Trigger::Callback(Want::Hold),
            ConsulView::Unreachable("no answer".into()),
        );
        o.config_vip = None;
        o.remembered = vec![
            owned("198.51.100.100/24", "eth1"),
            owned("198.51.100.101/24", "eth1"),
        ];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        let p = plan(&o);
        // The newest remembered address, added; the other left alone.
        let newest = owned("198.51.100.101/24", "eth1");
        assert_eq!(
            p.steps,
            vec![VipStep::Add(newest.clone()), VipStep::Announce(newest)]
        );
        assert_eq!(p.record, None);
        assert_eq!(kinds(&p), ["temporary"]);
        // Nothing remembered, nothing configured: nothing to hold.
        o.remembered.clear();
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["temporary", "temporary"]);
    }

    #[test]
    fn own_or_member_addresses_are_refused_and_nothing_changes() {
        // Defect 2: floating-ip names this node's own address.
        for trigger in [
            Trigger::Reconcile,
            Trigger::Callback(Want::Hold),
            Trigger::Callback(Want::Release),
        ] {
            let mut o = observed(
                trigger,
                answered(Some("pg2"), &[entry("floating-ip", "198.51.100.11/24", 4)]),
            );
            o.config_vip = None;
            at(&mut o, "198.51.100.11/24", "eth1", false);
            let p = plan(&o);
            assert!(p.steps.is_empty(), "{trigger:?}: {:?}", p.steps);
            assert!(kinds(&p).contains(&"failed"), "{trigger:?}");
            let text = format!("{:?}", p.verdicts);
            assert!(text.contains("floating-ip") && text.contains("198.51.100.11/24"));
        }
        // In the config file: a configuration error.
        let mut o = observed(Trigger::Callback(Want::Hold), answered(Some("pg1"), &[]));
        o.config_vip = Some(net("198.51.100.12/24"));
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["config"]);
    }

    #[test]
    fn release_removes_what_it_owns_first_and_asks_consul_after() {
        let mut o = observed(Trigger::Callback(Want::Release), ConsulView::NotAsked);
        o.config_vip = None;
        o.remembered = vec![owned("198.51.100.100/24", "eth1")];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        at(&mut o, "198.51.100.101/24", "eth1", true);
        at(&mut o, "198.51.100.150/24", "eth1", false);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![
                VipStep::Remove(owned("198.51.100.100/24", "eth1")),
                VipStep::Forget(owned("198.51.100.100/24", "eth1")),
                // Marked, not remembered (the state file was lost): removed,
                // nothing to forget.
                VipStep::Remove(owned("198.51.100.101/24", "eth1")),
            ]
        );
        assert!(p.ask_consul);
        assert!(p.verdicts.is_empty());
    }

    #[test]
    fn release_with_consul_removes_a_vip_left_by_older_tooling_and_its_record() {
        let mut o = observed(
            Trigger::Callback(Want::Release),
            answered(Some("pg2"), &[holder("pg1", "198.51.100.100/24", 11)]),
        );
        at(&mut o, "198.51.100.100/24", "eth1", false);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![VipStep::Remove(owned("198.51.100.100/24", "eth1"))]
        );
        assert_eq!(p.record, Some(RecordStep::Delete { cas: 11 }));
        // The record of another node is not ours to delete.
        let o = observed(
            Trigger::Callback(Want::Release),
            answered(Some("pg2"), &[holder("pg2", "198.51.100.100/24", 12)]),
        );
        assert_eq!(plan(&o).record, None);
        // Without Consul, an address that is not ours stays.
        let mut o = observed(
            Trigger::Callback(Want::Release),
            ConsulView::Unreachable("down".into()),
        );
        at(&mut o, "198.51.100.100/24", "eth1", false);
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["temporary"]);
    }

    #[test]
    fn no_leader_key_or_an_unusable_answer_changes_nothing() {
        for (consul, kind) in [
            (answered(None, &[]), "temporary"),
            (ConsulView::Unusable("403".into()), "failed"),
        ] {
            for trigger in [Trigger::Callback(Want::Hold), Trigger::Reconcile] {
                let mut o = observed(trigger, consul.clone());
                o.remembered = vec![owned("198.51.100.101/24", "eth1")];
                at(&mut o, "198.51.100.101/24", "eth1", true);
                let p = plan(&o);
                assert!(p.steps.is_empty(), "{trigger:?} {consul:?}");
                assert_eq!(p.record, None);
                assert_eq!(kinds(&p), [kind]);
            }
        }
    }

    #[test]
    fn the_fence_releases_when_another_member_leads() {
        let mut o = observed(
            Trigger::Callback(Want::Hold),
            answered(Some("pg2"), &[holder("pg1", "198.51.100.100/24", 3)]),
        );
        o.remembered = vec![owned("198.51.100.100/24", "eth1")];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        let p = plan(&o);
        assert_eq!(p.intent, Intent::Release);
        assert!(p
            .steps
            .contains(&VipStep::Remove(owned("198.51.100.100/24", "eth1"))));
        assert_eq!(p.record, Some(RecordStep::Delete { cas: 3 }));
        assert_eq!(kinds(&p), ["failed"]);
    }

    #[test]
    fn a_member_address_remembered_from_before_is_forgotten_not_removed() {
        let mut o = observed(Trigger::Callback(Want::Release), answered(Some("pg2"), &[]));
        o.remembered = vec![owned("198.51.100.11/24", "eth1")];
        at(&mut o, "198.51.100.11/24", "eth1", false);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![VipStep::Forget(owned("198.51.100.11/24", "eth1"))]
        );
    }

    // ---- property: what a plan removes ------------------------------------

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (0u8..8).prop_map(|i| net(&format!(
                "198.51.100.{}/24",
                [11, 12, 100, 101, 102, 150, 0, 255][i as usize]
            ))),
            (0u8..4).prop_map(|i| net(&format!(
                "2001:db8::{}/64",
                ["11", "100", "101", "0"][i as usize]
            ))),
        ]
    }

    fn arb_if() -> impl Strategy<Value = String> {
        prop_oneof![Just("eth1".to_string()), Just("eth2".to_string())]
    }

    fn arb_consul() -> impl Strategy<Value = ConsulView> {
        let leader = prop_oneof![Just(None), Just(Some("pg1")), Just(Some("pg2"))];
        let fip = prop_oneof![Just(None), arb_net().prop_map(Some),];
        prop_oneof![
            Just(ConsulView::NotAsked),
            Just(ConsulView::Unreachable("down".into())),
            Just(ConsulView::Unusable("403".into())),
            Just(ConsulView::Misconfigured("token".into())),
            (leader, fip).prop_map(|(l, f)| {
                let extra: Vec<Entry> = f
                    .map(|n| entry("floating-ip", &n.to_string(), 4))
                    .into_iter()
                    .collect();
                answered(l, &extra)
            }),
        ]
    }

    fn arb_trigger() -> impl Strategy<Value = Trigger> {
        prop_oneof![
            Just(Trigger::Callback(Want::Hold)),
            Just(Trigger::Callback(Want::Release)),
            Just(Trigger::Reconcile),
        ]
    }

    proptest! {
        /// For any observation, the addresses a plan removes are owned
        /// (remembered, marked) or the current VIP, and never a member's
        /// address or one that cannot be a VIP; and every Add was
        /// remembered first.
        #[test]
        fn removals_are_only_ever_what_the_hook_owns(
            trigger in arb_trigger(),
            consul in arb_consul(),
            config_vip in prop_oneof![Just(None), arb_net().prop_map(Some)],
            remembered in proptest::collection::vec((arb_net(), arb_if()), 0..4),
            present in proptest::collection::vec((arb_net(), arb_if(), any::<bool>()), 0..6),
        ) {
            let mut o = observed(trigger, consul.clone());
            o.config_vip = config_vip.filter(|n| crate::keys::unusable_vip(*n).is_none());
            // Remembered addresses were valid VIPs when they were written.
            o.remembered = remembered
                .into_iter()
                .filter(|(n, _)| crate::keys::unusable_vip(*n).is_none())
                .map(|(net, interface)| Owned { net, interface })
                .collect();
            o.present = present
                .into_iter()
                .map(|(net, interface, marked)| Present { net, interface, marked })
                .collect();
            let p = plan(&o);
            let member_ips: std::collections::BTreeSet<IpAddr> = match &consul {
                ConsulView::Answered(v) => v.member_ips(),
                _ => Default::default(),
            };
            let current = current_vip(&o, match &consul { ConsulView::Answered(v) => Some(v), _ => None });
            let mut remembered_so_far = o.remembered.clone();
            for s in &p.steps {
                match s {
                    VipStep::Remove(x) => {
                        let ours = o.remembered.iter().any(|r| r.same(x))
                            || o.present.iter().any(|q| q.marked && q.net.addr() == x.net.addr() && q.interface == x.interface);
                        let is_vip = matches!(current, Ok(Some(n)) if n.addr() == x.net.addr());
                        prop_assert!(ours || is_vip, "removes {x} it does not own: {:?}", p.steps);
                        prop_assert!(!member_ips.contains(&x.net.addr()), "removes member address {x}");
                        prop_assert!(crate::keys::unusable_vip(x.net).is_none() || ours, "removes {x}");
                        if !ours {
                            prop_assert!(matches!(consul, ConsulView::Answered(_)), "unowned removal without Consul");
                        }
                    }
                    VipStep::Remember(x) => remembered_so_far.push(x.clone()),
                    VipStep::Add(x) => {
                        prop_assert!(remembered_so_far.iter().any(|r| r.same(x)), "adds {x} before remembering it");
                        prop_assert!(!member_ips.contains(&x.net.addr()), "adds member address {x}");
                        prop_assert!(crate::keys::unusable_vip(x.net).is_none());
                    }
                    _ => {}
                }
            }
            // Only a hold adds; nothing is added without a fence answer
            // naming this node or an unreachable Consul.
            if p.steps.iter().any(|s| matches!(s, VipStep::Add(_))) {
                let ok = match (&trigger, &consul) {
                    (Trigger::Callback(Want::Hold), ConsulView::Unreachable(_)) => true,
                    (Trigger::Callback(Want::Hold) | Trigger::Reconcile, ConsulView::Answered(v)) =>
                        v.leader == LeaderKey::Name("pg1".into()),
                    _ => false,
                };
                prop_assert!(ok, "added without the fence: {trigger:?} {consul:?}");
            }
        }
    }
}
