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

use crate::dcs::keys::{Holder, LeaderKey, ScopeKeys, ScopeView};
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

/// Whether a callback says this node leads its cluster (a primary, or a
/// standby cluster's standby leader), whatever it wants done with the VIP:
/// a leader ends the pause request its before-stop left (a restart).
pub fn leads(action: Action, role: Role) -> bool {
    action != Action::Stop
        && matches!(
            role,
            Role::Primary | Role::Master | Role::Promoted | Role::StandbyLeader
        )
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
    Answered(Box<ScopeView>),
}

/// An address on an interface: the unit of what the hook owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owned {
    /// The address with the prefix it was added with.
    pub net: IpNet,
    /// The interface it was added to.
    pub interface: String,
    /// The hook added it (false: found in place and adopted, or listed by an
    /// older version's memory; such an address is removed only once Consul
    /// has confirmed it is no host's own address).
    pub added: bool,
}

impl Owned {
    /// The same address on the same interface, whatever the prefix.
    pub fn same(&self, other: &Owned) -> bool {
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
    /// IPv4: a secondary address of its subnet (IFA_F_SECONDARY). A primary
    /// one is the host's own address of that subnet, as far as the kernel is
    /// concerned, and is never taken for a VIP the hook did not add.
    pub secondary: bool,
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
    /// Every address on the host, on every interface.
    pub present: Vec<Present>,
    /// Addresses this host remembers owning for this scope, oldest first.
    pub remembered: Vec<Owned>,
    /// The scope's `floating-ip` as this host last read it from Consul, in
    /// any run (replicas' and reconciles' too): what a promotion adds when
    /// Consul cannot be read and `vip.address` is not set.
    pub seen_vip: Option<IpNet>,
    /// Addresses remembered for other scopes on this host: marked, but not
    /// this scope's.
    pub others: Vec<Owned>,
    /// The members' own addresses: IP literals of `conn_url` and `api_url`
    /// hosts, and what their host names resolve to.
    pub member_ips: std::collections::BTreeSet<std::net::IpAddr>,
    /// Every member's host is known (all parsed, all names resolved).
    pub members_known: bool,
    /// What this node's Patroni REST API said of `GET /primary`, if asked.
    pub local_primary: Option<bool>,
    /// Re-announce a VIP that is already present (callbacks do; reconcile,
    /// which runs every few seconds, announces what it adds, and a held VIP
    /// only while the record does not name this node yet).
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
///
/// `local_primary` is what this node's own Patroni REST API said (`GET
/// /primary`), when it was asked: reconcile adds the VIP only once Patroni
/// here runs as primary. The leader key names a new leader the moment it
/// takes the lock, before its promotion and possibly before the old
/// primary's release has run; the promotion callback adds the VIP after it.
pub fn intent(
    trigger: Trigger,
    consul: &ConsulView,
    me: &str,
    local_primary: Option<bool>,
) -> (Intent, Option<Verdict>) {
    let leader_says = |v: &ScopeView| match &v.leader {
        LeaderKey::Name(n) if n == me => Ok(true),
        LeaderKey::Name(_) => Ok(false),
        LeaderKey::Absent => Err(Verdict::Temporary(
            "no leader key in the DCS (mid-failover?); VIP left as it is".into(),
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
        (_, ConsulView::Answered(v)) if v.empty => (
            Intent::Keep,
            Some(Verdict::Temporary(
                "nothing at all in the DCS under this scope (check consul.namespace or etcd3.namespace, and the scope); VIP left as it is".into(),
            )),
        ),
        (trigger, ConsulView::Answered(v)) => match leader_says(v) {
            Err(verdict) => (Intent::Keep, Some(verdict)),
            Ok(true) if trigger == Trigger::Reconcile && local_primary == Some(false) => (
                Intent::Keep,
                Some(Verdict::Temporary(
                    "the leader key names this node but its Patroni does not answer as primary yet; the VIP waits for the promotion".into(),
                )),
            ),
            Ok(true) => (Intent::Hold, None),
            // Another member holds the lock: it gets the VIP, so this node
            // must not keep it either, or it would be on two hosts.
            Ok(false) => match trigger {
                Trigger::Callback(_) => (
                    Intent::Release,
                    Some(Verdict::Failed(format!(
                        "fence: leader key names {}, not this node; VIP not added",
                        crate::dcs::keys::shown(&other(v))
                    ))),
                ),
                Trigger::Reconcile => (Intent::Release, None),
            },
        },
    }
}

/// The VIP Consul or the configuration names now, checked: not a member's
/// own address, not an address another interface of this host has.
/// `Ok(None)` when it cannot be known (no address configured, Consul not
/// answered), or when a release finds no `floating-ip` (nothing to release).
fn current_vip(
    o: &Observed,
    view: Option<&ScopeView>,
    intent: &Intent,
) -> Result<Option<IpNet>, Verdict> {
    let from_config = o.config_vip.is_some();
    let (net, key) = match (o.config_vip, view) {
        (Some(net), _) => (net, "vip.address".to_string()),
        (None, None) => return Ok(None),
        (None, Some(v)) => match &v.floating_ip {
            None if *intent == Intent::Release => return Ok(None),
            None => {
                return Err(Verdict::Failed(format!(
                    "vip.address is not set and the DCS has no key {}",
                    o.keys.floating_ip
                )))
            }
            Some(Err(why)) => return Err(Verdict::Failed(why.clone())),
            Some(Ok(net)) => (*net, o.keys.floating_ip.clone()),
        },
    };
    if o.member_ips.contains(&net.addr()) {
        let who = view.and_then(|v| v.member_using(net.addr()));
        let name = who.map(|m| m.name.as_str()).unwrap_or("?");
        let why = format!(
            "{key} {net} is the address of member {} (key {}{}), not a VIP; nothing changed",
            crate::dcs::keys::shown(name),
            o.keys.members,
            name.escape_debug()
        );
        // This node's own address in its own config file is a typo there;
        // another member claiming it is a conflict in what Consul says.
        return Err(if from_config && name == o.me {
            Verdict::Config(why)
        } else {
            Verdict::Failed(why)
        });
    }
    if let Some(interface) = elsewhere(o, net) {
        let why = format!(
            "{key} {net} is an address of interface {interface} on this host, not a VIP; nothing changed"
        );
        return Err(if from_config {
            Verdict::Config(why)
        } else {
            Verdict::Failed(why)
        });
    }
    Ok(Some(net))
}

/// The other interface of this host that has `net`'s address, not marked
/// as the hook's, if any.
fn elsewhere(o: &Observed, net: IpNet) -> Option<String> {
    o.present
        .iter()
        .find(|p| p.net.addr() == net.addr() && p.interface != o.interface && !p.marked)
        .map(|p| p.interface.clone())
}

/// Whether an address the hook did not add may be taken over (a VIP found
/// in place on a leader) or removed (found on a node that is not): only when
/// Consul answered, every member's address is known and none is this one,
/// and the kernel does not hold it as the host's own address of its subnet
/// (IPv4: the primary one; IPv6: the only global one on the interface).
fn claimable(o: &Observed, net: IpNet, interface: &str) -> Result<(), String> {
    if !matches!(o.consul, ConsulView::Answered(_)) {
        return Err("the DCS has not confirmed it is no member's address".into());
    }
    if !o.members_known {
        return Err("not every member's address is known (a host name did not resolve)".into());
    }
    if o.member_ips.contains(&net.addr()) {
        return Err("a member uses it".into());
    }
    if o.others
        .iter()
        .any(|x| x.net.addr() == net.addr() && x.interface == interface)
    {
        return Err("another scope on this host owns it".into());
    }
    let here = o
        .present
        .iter()
        .find(|p| p.net.addr() == net.addr() && p.interface == interface);
    match (net, here) {
        (_, None) => Ok(()),
        (IpNet::V4(_), Some(p)) if !p.secondary => Err(format!(
            "it is the primary IPv4 address of its subnet on {interface}, which is how a host's own address looks"
        )),
        (IpNet::V6(_), Some(_)) => {
            let others = o.present.iter().filter(|p| {
                p.interface == interface
                    && p.net.addr() != net.addr()
                    && matches!(p.net, IpNet::V6(n) if (n.addr().segments()[0] & 0xffc0) != 0xfe80)
            });
            if others.count() == 0 {
                Err(format!(
                    "it is the only global IPv6 address on {interface}, which is how a host's own address looks"
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
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

/// The record step after a refused check-and-set, from the scope read
/// again: as `record_step`, except that a holder whose leader key has moved
/// on writes nothing. The refusal may be the new leader's own record; a
/// retry from the decision made before the switchover would name this node
/// over it, and the record would lie until this node's demotion.
pub fn record_step_again(
    intent: &Intent,
    vip: Option<&Owned>,
    me: &str,
    view: &ScopeView,
) -> Option<RecordStep> {
    if matches!(intent, Intent::Hold) && !matches!(&view.leader, LeaderKey::Name(n) if n == me) {
        return None;
    }
    record_step(intent, vip, me, &view.holder)
}

/// Decides the steps. The rows of the decision table, in order: the intent
/// and its verdict (`intent`, which holds the fence); a hold or a reconcile
/// without Consul's answer asks first; then, by intent, the VIP steps and
/// the record step (`hold`, `release`).
pub fn plan(o: &Observed) -> Plan {
    let view = match &o.consul {
        ConsulView::Answered(v) => Some(v.as_ref()),
        _ => None,
    };
    let (intent, first) = intent(o.trigger, &o.consul, &o.me, o.local_primary);
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
    let owned = owned_by_scope(o);
    match intent {
        Intent::Keep => {}
        Intent::Hold => hold(o, view, &owned, &mut p),
        Intent::Release => release(o, view, &owned, &mut p),
    }
    p
}

/// The address is on the host, on the interface named with it.
fn is_present(o: &Observed, x: &Owned) -> bool {
    o.present
        .iter()
        .any(|p| p.net.addr() == x.net.addr() && p.interface == x.interface)
}

/// This host remembers owning the address for this scope.
fn is_remembered(o: &Observed, x: &Owned) -> bool {
    o.remembered.iter().any(|r| r.same(x))
}

/// The address is on the host and carries the hook's mark.
fn is_marked(o: &Observed, x: &Owned) -> bool {
    o.present
        .iter()
        .any(|p| p.marked && p.net.addr() == x.net.addr() && p.interface == x.interface)
}

/// What this scope owns: what it remembers, and what carries the hook's
/// mark unless another scope on this host remembers it.
fn owned_by_scope(o: &Observed) -> Vec<Owned> {
    let mut owned: Vec<Owned> = o.remembered.clone();
    for p in o.present.iter().filter(|p| p.marked) {
        let x = Owned {
            net: p.net,
            interface: p.interface.clone(),
            added: true,
        };
        if !owned.iter().any(|y| y.same(&x)) && !o.others.iter().any(|y| y.same(&x)) {
            owned.push(x);
        }
    }
    owned
}

/// Removes an owned address and forgets it. One the hook added (or
/// marked) goes; one it only adopted goes when it is claimable, else it
/// stays and is kept in memory until Consul can tell (or forgotten, when
/// a member uses it now).
fn drop_owned(o: &Observed, view: Option<&ScopeView>, x: &Owned, p: &mut Plan) {
    if is_present(o, x) {
        if x.added || is_marked(o, x) {
            p.steps.push(VipStep::Remove(x.clone()));
        } else if let Err(why) = claimable(o, x.net, &x.interface) {
            if o.member_ips.contains(&x.net.addr()) {
                p.steps.push(VipStep::Forget(x.clone()));
            } else if view.is_some() {
                p.verdicts.push(Verdict::Failed(format!(
                    "{x} was found in place, not added by patroni-hook, and is not removed: {why}"
                )));
            }
            return;
        } else {
            p.steps.push(VipStep::Remove(x.clone()));
        }
    }
    if is_remembered(o, x) {
        p.steps.push(VipStep::Forget(x.clone()));
    }
}

/// Hold: the VIP to hold, its steps, the other owned addresses dropped (only
/// when the VIP is known, not guessed), and the record. A VIP that cannot be
/// held turns the intent into Keep, with its verdict and no steps.
fn hold(o: &Observed, view: Option<&ScopeView>, owned: &[Owned], p: &mut Plan) {
    let (target, known) = match hold_target(o, view) {
        Ok(t) => t,
        Err(v) => {
            p.intent = Intent::Keep;
            p.verdicts.push(v);
            return;
        }
    };
    let record = match (view, known) {
        (Some(v), true) => record_step(&Intent::Hold, Some(&target), &o.me, &v.holder),
        _ => None,
    };
    hold_vip_steps(o, view, owned, &target, record.as_ref(), p);
    if known {
        for x in owned.iter().filter(|x| !x.same(&target)) {
            drop_owned(o, view, x, p);
        }
    }
    p.record = record;
    p.vip = Some(target);
}

/// The address a hold puts on `vip.interface`, and whether it is known
/// (named by the configuration or by Consul) rather than guessed.
fn hold_target(o: &Observed, view: Option<&ScopeView>) -> Result<(Owned, bool), Verdict> {
    let (vip, known) = match current_vip(o, view, &Intent::Hold)? {
        Some(net) => (net, true),
        // Consul unreachable and no address configured: the
        // floating-ip last read here (every run that reads Consul
        // keeps it, so it is at least as new as any address held),
        // else the newest address this scope held; others are left
        // alone, since which one is the VIP now is not known.
        None => match o
            .seen_vip
            .map(|net| Owned {
                net,
                interface: o.interface.clone(),
                added: true,
            })
            .as_ref()
            .or(o.remembered.last())
        {
            Some(r) if elsewhere(o, r.net).is_some() => {
                return Err(Verdict::Failed(format!(
                    "{r} is remembered, but interface {} of this host has that address now; not added",
                    elsewhere(o, r.net).unwrap_or_default()
                )));
            }
            Some(r) => (r.net, false),
            None => {
                return Err(Verdict::Temporary(
                    "vip.address is not set, the DCS is unreachable, and this host has never read a floating-ip nor held an address for this scope".into(),
                ));
            }
        },
    };
    let target = Owned {
        net: vip,
        interface: o.interface.clone(),
        added: true,
    };
    Ok((target, known))
}

/// The VIP steps of a hold for `target`: adopt or announce it when it is in
/// place, else remember, add and announce it.
fn hold_vip_steps(
    o: &Observed,
    view: Option<&ScopeView>,
    owned: &[Owned],
    target: &Owned,
    record: Option<&RecordStep>,
    p: &mut Plan,
) {
    if is_present(o, target) {
        let ours = owned.iter().any(|x| x.same(target));
        if !ours {
            // A VIP already in place (left by older tooling) is
            // adopted when it can be told from a host address.
            match claimable(o, target.net, &o.interface) {
                Ok(()) => p.steps.push(VipStep::Remember(Owned {
                    added: false,
                    ..target.clone()
                })),
                Err(why) if view.is_some() => p.verdicts.push(Verdict::Failed(format!(
                    "{target} is in place but not patroni-hook's, and is not taken over: {why}"
                ))),
                Err(_) => {}
            }
        }
        // A record not naming this node yet: the run that added the
        // VIP stopped before its record step, maybe before it
        // announced (add, announce, record is the order).
        if o.reannounce || matches!(record, Some(RecordStep::Write { .. })) {
            p.steps.push(VipStep::Announce(target.clone()));
        }
    } else {
        if !is_remembered(o, target) {
            p.steps.push(VipStep::Remember(target.clone()));
        }
        p.steps.push(VipStep::Add(target.clone()));
        p.steps.push(VipStep::Announce(target.clone()));
    }
}

/// Release: every owned address dropped, then a VIP found in place that is
/// not ours, then the record.
fn release(o: &Observed, view: Option<&ScopeView>, owned: &[Owned], p: &mut Plan) {
    for x in owned {
        drop_owned(o, view, x, p);
    }
    release_found_vip(o, view, owned, p);
    release_record(o, view, p);
}

/// A VIP not ours but in place (older tooling) goes when it can be told
/// from a host address.
fn release_found_vip(o: &Observed, view: Option<&ScopeView>, owned: &[Owned], p: &mut Plan) {
    match current_vip(o, view, &Intent::Release) {
        Ok(Some(net)) if view.is_some() => {
            let x = Owned {
                net,
                interface: o.interface.clone(),
                added: false,
            };
            if is_present(o, &x) && !owned.iter().any(|y| y.same(&x)) {
                match claimable(o, net, &o.interface) {
                    Ok(()) => p.steps.push(VipStep::Remove(x)),
                    Err(why) => p.verdicts.push(Verdict::Failed(format!(
                        "{x} is in place but not patroni-hook's, and is not removed: {why}"
                    ))),
                }
            }
        }
        Ok(_) => {}
        Err(v) => p.verdicts.push(v),
    }
}

/// A release's record step: deleted when Consul answered and names this
/// node; asked for when Consul was not asked; else the verdict says why the
/// record stays.
fn release_record(o: &Observed, view: Option<&ScopeView>, p: &mut Plan) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::keys::HolderRecord;
    use crate::dcs::Entry;
    use proptest::prelude::*;
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
            added: true,
        }
    }

    fn adopted(s: &str, i: &str) -> Owned {
        Owned {
            added: false,
            ..owned(s, i)
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
        ConsulView::Answered(Box::new(ScopeView::read(&es, &keys())))
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

    #[test]
    fn a_refused_record_is_written_again_only_while_this_node_leads() {
        let target = Owned {
            net: net("198.51.100.100/24"),
            interface: "eth1".into(),
            added: true,
        };
        let view = |leader: &str| match answered(
            Some(leader),
            &[holder(leader, "198.51.100.100/24", 9)],
        ) {
            ConsulView::Answered(v) => *v,
            _ => unreachable!(),
        };
        // The refusal was pg2's record after a switchover: left as it is.
        assert_eq!(
            record_step_again(&Intent::Hold, Some(&target), "pg1", &view("pg2")),
            None
        );
        // An older run of this host wrote late: written again over it.
        let mut v = view("pg1");
        v.holder = ScopeView::read(&[holder("pg2", "198.51.100.100/24", 9)], &keys()).holder;
        assert_eq!(
            record_step_again(&Intent::Hold, Some(&target), "pg1", &v),
            Some(RecordStep::Write {
                cas: 9,
                owned: target.clone()
            })
        );
        // A release deletes its own record whoever leads now.
        let mut v = view("pg2");
        v.holder = ScopeView::read(&[holder("pg1", "198.51.100.100/24", 9)], &keys()).holder;
        assert_eq!(
            record_step_again(&Intent::Release, None, "pg1", &v),
            Some(RecordStep::Delete { cas: 9 })
        );
    }

    fn observed(trigger: Trigger, consul: ConsulView) -> Observed {
        let (member_ips, members_known) = match &consul {
            ConsulView::Answered(v) => (v.member_ips(), true),
            _ => (Default::default(), false),
        };
        Observed {
            trigger,
            me: "pg1".into(),
            keys: keys(),
            interface: "eth1".into(),
            config_vip: Some(net("198.51.100.100/24")),
            consul,
            present: vec![],
            remembered: vec![],
            others: vec![],
            member_ips,
            members_known,
            local_primary: None,
            reannounce: true,
            seen_vip: None,
        }
    }

    /// An address on the host; an unmarked IPv4 one is a secondary (as a VIP
    /// added next to the host's own address is).
    fn at(o: &mut Observed, s: &str, i: &str, marked: bool) {
        o.present.push(Present {
            net: net(s),
            interface: i.into(),
            marked,
            secondary: true,
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
                let (i, v) = intent(trigger, view, "pg1", None);
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
    fn reconcile_adds_only_once_patroni_here_is_primary() {
        let me = answered(Some("pg1"), &[]);
        for (local, want) in [
            (None, Intent::Hold),
            (Some(true), Intent::Hold),
            (Some(false), Intent::Keep),
        ] {
            assert_eq!(
                intent(Trigger::Reconcile, &me, "pg1", local).0,
                want,
                "{local:?}"
            );
            // A callback is Patroni itself: it is not asked.
            assert_eq!(
                intent(Trigger::Callback(Want::Hold), &me, "pg1", local).0,
                Intent::Hold
            );
        }
        // Releasing never waits for it.
        let other = answered(Some("pg2"), &[]);
        assert_eq!(
            intent(Trigger::Reconcile, &other, "pg1", Some(false)).0,
            Intent::Release
        );
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

    /// A hold adds, announces, then records. A VIP that is ours and in
    /// place while the record does not name this node comes from a run that
    /// stopped between adding and recording, maybe before announcing (found
    /// by the lab's fault matrix: a reconcile SIGKILLed right after adding
    /// left clients with the old primary's MAC for seconds, and the next
    /// reconciles only wrote the record). Reconcile announces it again then.
    #[test]
    fn reconcile_announces_a_held_vip_again_while_the_record_is_not_this_node() {
        let vip = owned("198.51.100.100/24", "eth1");
        for record in [vec![], vec![holder("pg2", "198.51.100.100/24", 9)]] {
            let mut o = observed(Trigger::Reconcile, answered(Some("pg1"), &record));
            o.reannounce = false;
            o.remembered = vec![vip.clone()];
            at(&mut o, "198.51.100.100/24", "eth1", true);
            let p = plan(&o);
            assert_eq!(p.steps, vec![VipStep::Announce(vip.clone())], "{record:?}");
            assert!(
                matches!(p.record, Some(RecordStep::Write { .. })),
                "{record:?}"
            );
        }
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
            VipStep::Remember(adopted("198.51.100.100/24", "eth1"))
        );
        assert!(!p.steps.iter().any(|s| matches!(s, VipStep::Add(_))));
        // The same, but the primary IPv4 address of its subnet (how a host's
        // own address looks): not taken over, and said so.
        o.present[0].secondary = false;
        let p = plan(&o);
        assert!(
            !p.steps.iter().any(|s| matches!(s, VipStep::Remember(_))),
            "{:?}",
            p.steps
        );
        assert_eq!(kinds(&p), ["failed"]);
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
    fn promotion_with_consul_unreachable_adds_the_floating_ip_last_read() {
        // A replica read floating-ip 198.51.100.102 in an earlier run and
        // never held it; it is promoted while Consul hangs.
        let mut o = observed(
            Trigger::Callback(Want::Hold),
            ConsulView::Unreachable("no answer".into()),
        );
        o.config_vip = None;
        o.seen_vip = Some(net("198.51.100.102/24"));
        let vip = owned("198.51.100.102/24", "eth1");
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![
                VipStep::Remember(vip.clone()),
                VipStep::Add(vip.clone()),
                VipStep::Announce(vip.clone())
            ]
        );
        assert_eq!(p.intent, Intent::Hold);
        assert_eq!(p.record, None, "no record without Consul");
        assert_eq!(kinds(&p), ["temporary"]);
        // It wins over an address held before it was read (an older
        // floating-ip), which is left alone, as Consul cannot confirm it.
        o.remembered = vec![owned("198.51.100.100/24", "eth1")];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![
                VipStep::Remember(vip.clone()),
                VipStep::Add(vip.clone()),
                VipStep::Announce(vip)
            ]
        );
        // Another interface of this host has it now: not added.
        let mut o = observed(
            Trigger::Callback(Want::Hold),
            ConsulView::Unreachable("no answer".into()),
        );
        o.config_vip = None;
        o.seen_vip = Some(net("198.51.100.102/24"));
        o.present.push(Present {
            net: net("198.51.100.102/24"),
            interface: "eth2".into(),
            marked: false,
            secondary: false,
        });
        let p = plan(&o);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(kinds(&p), ["temporary", "failed"]);
        // Reconcile never guesses: Consul unreachable keeps things as they are.
        let mut o = observed(
            Trigger::Reconcile,
            ConsulView::Unreachable("no answer".into()),
        );
        o.config_vip = None;
        o.seen_vip = Some(net("198.51.100.102/24"));
        let p = plan(&o);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.intent, Intent::Keep);
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
        // This node's own address in the config file: a configuration
        // error; another member's: a conflict in Consul's data.
        let mut o = observed(Trigger::Callback(Want::Hold), answered(Some("pg1"), &[]));
        o.config_vip = Some(net("198.51.100.11/24"));
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["config"]);
        o.config_vip = Some(net("198.51.100.12/24"));
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["failed"]);
        // An address another interface of this host has: not a VIP.
        o.config_vip = Some(net("198.51.100.21/24"));
        at(&mut o, "198.51.100.21/24", "eth2", false);
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
            vec![VipStep::Remove(adopted("198.51.100.100/24", "eth1"))]
        );
        assert_eq!(p.record, Some(RecordStep::Delete { cas: 11 }));
        // Not when a member's host name did not resolve: it could be theirs.
        let mut o = observed(
            Trigger::Callback(Want::Release),
            answered(Some("pg2"), &[holder("pg1", "198.51.100.100/24", 11)]),
        );
        o.members_known = false;
        at(&mut o, "198.51.100.100/24", "eth1", false);
        let p = plan(&o);
        assert!(p.steps.is_empty());
        assert_eq!(kinds(&p), ["failed"]);
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
        // Adopted once (an older version remembered what it found): a
        // member's own address now, so forgotten and left in place.
        let mut o = observed(Trigger::Callback(Want::Release), answered(Some("pg2"), &[]));
        o.remembered = vec![adopted("198.51.100.11/24", "eth1")];
        at(&mut o, "198.51.100.11/24", "eth1", false);
        let p = plan(&o);
        assert_eq!(
            p.steps,
            vec![VipStep::Forget(adopted("198.51.100.11/24", "eth1"))]
        );
        // Without Consul, an adopted address is not touched at all.
        let mut o = observed(Trigger::Callback(Want::Release), ConsulView::NotAsked);
        o.remembered = vec![adopted("198.51.100.11/24", "eth1")];
        at(&mut o, "198.51.100.11/24", "eth1", false);
        let p = plan(&o);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert!(p.ask_consul);
        // An address the hook added goes even when a member claims it (a
        // stale or lying member key): it was never that member's.
        let mut o = observed(
            Trigger::Callback(Want::Release),
            answered(Some("pg2"), &[member("pg3", "198.51.100.100")]),
        );
        o.remembered = vec![owned("198.51.100.100/24", "eth1")];
        at(&mut o, "198.51.100.100/24", "eth1", true);
        let p = plan(&o);
        assert_eq!(
            p.steps[0],
            VipStep::Remove(owned("198.51.100.100/24", "eth1"))
        );
        assert!(
            format!("{:?}", p.verdicts).contains("pg3"),
            "{:?}",
            p.verdicts
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
        // Seeds of failures once found are kept beside this file and run first.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        /// For any observation: a plan removes only what this scope owns
        /// (added, or marked and no other scope's) or an address it could
        /// claim (Consul answered, every member known and none using it, not
        /// the host's own-looking address); never another scope's address;
        /// never an address it did not add that a member uses or that cannot
        /// be a VIP; every add is remembered first and fenced.
        #[test]
        fn removals_are_only_ever_what_the_hook_owns(
            trigger in arb_trigger(),
            consul in arb_consul(),
            config_vip in prop_oneof![Just(None), arb_net().prop_map(Some)],
            remembered in proptest::collection::vec((arb_net(), arb_if(), any::<bool>()), 0..4),
            others in proptest::collection::vec((arb_net(), arb_if()), 0..2),
            present in proptest::collection::vec((arb_net(), arb_if(), any::<bool>(), any::<bool>()), 0..6),
            members_known in any::<bool>(),
        ) {
            let mut o = observed(trigger, consul.clone());
            o.members_known = o.members_known && members_known;
            o.config_vip = config_vip.filter(|n| crate::dcs::keys::unusable_vip(*n).is_none());
            // Remembered addresses were valid VIPs when they were written.
            // One entry per address and interface, as state::read_owned keeps it.
            for (net, interface, added) in remembered {
                let x = Owned { net, interface, added };
                if crate::dcs::keys::unusable_vip(net).is_none() && !o.remembered.iter().any(|r| r.same(&x)) {
                    o.remembered.push(x);
                }
            }
            o.others = others
                .into_iter()
                .map(|(net, interface)| Owned { net, interface, added: true })
                .collect();
            o.present = present
                .into_iter()
                .map(|(net, interface, marked, secondary)| Present { net, interface, marked, secondary })
                .collect();
            let p = plan(&o);
            let mut remembered_so_far = o.remembered.clone();
            for s in &p.steps {
                match s {
                    VipStep::Remove(x) => {
                        let mine = o.remembered.iter().find(|r| r.same(x));
                        let marked = o.present.iter().any(|q| q.marked && q.net.addr() == x.net.addr() && q.interface == x.interface);
                        let theirs = o.others.iter().any(|r| r.same(x));
                        let added = mine.is_some_and(|r| r.added) || (marked && (!theirs || mine.is_some()));
                        prop_assert!(!(theirs && mine.is_none()), "removes another scope's {x}: {:?}", p.steps);
                        if !added {
                            prop_assert!(matches!(consul, ConsulView::Answered(_)), "claims {x} without Consul");
                            prop_assert!(o.members_known, "claims {x} with members unknown");
                            prop_assert!(!o.member_ips.contains(&x.net.addr()), "removes member address {x}");
                            prop_assert!(crate::dcs::keys::unusable_vip(x.net).is_none(), "removes {x}");
                            let here = o.present.iter().find(|q| q.net.addr() == x.net.addr() && q.interface == x.interface).unwrap();
                            if x.net.addr().is_ipv4() {
                                prop_assert!(here.secondary, "removes a primary IPv4 address {x} it did not add");
                            }
                        }
                    }
                    VipStep::Remember(x) => remembered_so_far.push(x.clone()),
                    VipStep::Add(x) => {
                        prop_assert!(remembered_so_far.iter().any(|r| r.same(x)), "adds {x} before remembering it");
                        prop_assert!(!o.member_ips.contains(&x.net.addr()), "adds member address {x}");
                        prop_assert!(crate::dcs::keys::unusable_vip(x.net).is_none());
                        prop_assert!(
                            !o.present.iter().any(|q| q.net.addr() == x.net.addr() && !q.marked),
                            "adds {x}, an address the host already has"
                        );
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
