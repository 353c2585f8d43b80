//! The VIP verb, for Patroni callbacks and for reconcile on a database node:
//! observe, plan, apply.
//!
//! A run takes its ticket, asks Consul what it needs (a hold or a reconcile
//! needs the fence; a release needs nothing to start), then, under the host
//! lock and only for local work, observes the interfaces and what this host
//! remembers, plans (`plan::plan`) and applies the VIP steps. The record step
//! follows without the lock. A release that acted on local knowledge asks
//! Consul afterwards and plans once more for what only Consul can tell (its
//! record, a VIP left by older tooling). docs/design.md has the rules.

use crate::budget::Budget;
use crate::config::{Config, VipConfig};
use crate::dcs::keys::{ScopeKeys, ScopeView};
use crate::dcs::Dcs;
use crate::error::{Error, Kind};
use crate::node::apply::{self, Local};
use crate::node::plan::{self, ConsulView, Intent, Observed, Owned, Plan, Trigger, VipStep, Want};
use crate::report::Report;
use crate::state::{self, HostLock, Ticket};
use crate::{debug_line, note, out, warn_line};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a release waits for the lock before it goes on without it: the
/// lock is held only for local steps (milliseconds), so a longer hold means
/// a run that is stuck, and a release must not be kept waiting by it.
pub const RELEASE_LOCK_WAIT: Duration = Duration::from_millis(50);

/// One VIP run's fixed inputs.
pub struct Run<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// Its vip section.
    pub vip: &'a VipConfig,
    /// The scope.
    pub scope: &'a str,
    /// The Consul client.
    pub consul: &'a Dcs,
    /// The run's budget.
    pub budget: Budget,
    /// Print the plan, change nothing.
    pub dry_run: bool,
}

/// Reads the scope: one recursive read, as a view the planner takes.
pub async fn read_view(consul: &Dcs, keys: &ScopeKeys, consistent: bool) -> ConsulView {
    match consul
        .list_scope(&keys.prefix, &keys.leader, consistent)
        .await
    {
        Ok(entries) => ConsulView::Answered(Box::new(ScopeView::read(&entries, keys))),
        Err(e) => match e.kind() {
            Kind::Temporary => ConsulView::Unreachable(e.to_string()),
            Kind::Failed => ConsulView::Unusable(e.to_string()),
            Kind::Usage => ConsulView::Misconfigured(e.to_string()),
        },
    }
}

/// Converges the VIP of the run's scope. Returns the last plan applied
/// (`None` when nothing was decided: a newer run's decision stood, or the
/// local state could not be read).
pub async fn converge(run: &Run<'_>, trigger: Trigger, report: &mut Report) -> Option<Plan> {
    let ticket = Ticket::now();
    let keys = ScopeKeys::new(run.cfg.dcs.namespace(), run.scope);
    // Removal never waits on Consul: a release starts with what it knows.
    let first = match trigger {
        Trigger::Callback(Want::Release) if !run.dry_run => ConsulView::NotAsked,
        _ => read_view(run.consul, &keys, true).await,
    };
    let seen = Seen {
        members: members(&first, run.budget.consul_until).await,
        local_primary: local_primary(run, trigger, &first).await,
        consul: first,
    };
    // A primary ends a pause request that is done with (its own: it leads
    // again; another member's: it leads now), so the pause ends now rather
    // than at pause_timeout (before_stop.rs).
    let withdraw = match (&seen.consul, trigger) {
        (ConsulView::Answered(v), Trigger::Callback(Want::Hold)) => {
            crate::pooler::pause::done_request(v, &run.cfg.name)
        }
        _ => None,
    };
    let p = round(run, &keys, trigger, seen, ticket, report).await?;
    if let (Some(index), Intent::Hold, false) = (withdraw, &p.intent, run.dry_run) {
        run.consul.set_deadline(run.budget.end);
        match run.consul.delete_cas(&keys.pause_request, index).await {
            Ok(_) => note!("withdrew the pause request: this node leads"),
            Err(e) => debug_line!("{e}"),
        }
    }
    if !p.ask_consul {
        return Some(p);
    }
    // Local work is done: the rest of the deadline is Consul's.
    run.consul.set_deadline(run.budget.end);
    let view = read_view(run.consul, &keys, false).await;
    let seen = Seen {
        members: members(&view, run.budget.end).await,
        local_primary: None,
        consul: view,
    };
    round(run, &keys, trigger, seen, ticket, report).await
}

/// A release from what this node owns alone: Consul is not asked, so the
/// record is left to the next run (`before-stop`, which must not hold
/// Patroni's stop for Consul; `on_stop` follows it).
pub async fn release_local(run: &Run<'_>, report: &mut Report) -> Option<Plan> {
    let keys = ScopeKeys::new(run.cfg.dcs.namespace(), run.scope);
    let seen = Seen {
        consul: ConsulView::NotAsked,
        members: (BTreeSet::new(), false),
        local_primary: None,
    };
    let trigger = Trigger::Callback(Want::Release);
    round(run, &keys, trigger, seen, Ticket::now(), report).await
}

/// For reconcile when the leader key names this node: does its Patroni
/// answer `GET /primary` with 200 (asked once, within the Consul share)?
/// `None` when not asked: not reconcile, another leader, or no http
/// `api_url` of this member to ask.
async fn local_primary(run: &Run<'_>, trigger: Trigger, view: &ConsulView) -> Option<bool> {
    let ConsulView::Answered(v) = view else {
        return None;
    };
    if trigger != Trigger::Reconcile
        || v.leader != crate::dcs::keys::LeaderKey::Name(run.cfg.name.clone())
    {
        return None;
    }
    let url = v.member(&run.cfg.name)?.status_url()?;
    // A database node has no CA for its own https REST API here: not asked.
    if url.starts_with("https:") {
        return None;
    }
    let until = run
        .budget
        .consul_until
        .max(Instant::now() + Duration::from_millis(200));
    Some(crate::patroni_api::is_writable(&url, until).await)
}

/// What a round decides from, besides the local state: Consul's answer, the
/// members' addresses it names, and this node's Patroni.
struct Seen {
    consul: ConsulView,
    members: (BTreeSet<IpAddr>, bool),
    local_primary: Option<bool>,
}

/// The members' own addresses: IP literals, and what host names resolve to
/// (bounded by `until`); the flag says whether every member's host is known.
async fn members(view: &ConsulView, until: Instant) -> (BTreeSet<IpAddr>, bool) {
    let ConsulView::Answered(v) = view else {
        return (BTreeSet::new(), false);
    };
    let mut ips = BTreeSet::new();
    let mut known = true;
    let mut names = Vec::new();
    for m in &v.members {
        for hp in [&m.conn, &m.api] {
            match hp {
                Ok((host, port)) => match host.parse::<IpAddr>() {
                    Ok(ip) => {
                        ips.insert(ip);
                    }
                    Err(_) => names.push((host.clone(), *port)),
                },
                Err(_) => known = false,
            }
        }
    }
    names.sort();
    names.dedup();
    let left = until.saturating_duration_since(Instant::now());
    let lookups = names.iter().map(|(host, port)| async move {
        tokio::time::timeout(left, tokio::net::lookup_host((host.as_str(), *port))).await
    });
    for found in futures::future::join_all(lookups).await {
        match found {
            Ok(Ok(addrs)) => ips.extend(addrs.map(|a| a.ip())),
            _ => known = false,
        }
    }
    (ips, known)
}

/// Lock, observe locally, plan, apply the VIP steps, unlock, announce, then
/// the record.
async fn round(
    run: &Run<'_>,
    keys: &ScopeKeys,
    trigger: Trigger,
    seen: Seen,
    ticket: Ticket,
    report: &mut Report,
) -> Option<Plan> {
    let subject = format!("vip-{}", run.scope);
    let (local, lock, observed) =
        observe(run, keys, trigger, seen, ticket, &subject, report).await?;
    let p = decide(run, &observed);
    if run.dry_run {
        print_plan(run, &p, &keys.vip_holder);
        for v in &p.verdicts {
            apply::verdict(report, v);
        }
        return Some(p);
    }
    let applied = apply_local(run, &local, &p, &subject, ticket, report).await?;
    drop(lock);
    if applied {
        announce(run, &local, &p, &subject, ticket, report).await;
    }
    for v in &p.verdicts {
        apply::verdict(report, v);
    }
    if applied {
        if let Some(step) = &p.record {
            record(run, keys, &p, step.clone(), &subject, ticket, report).await;
        }
    }
    Some(p)
}

/// A run that started after `ticket` and has decided since, if any.
fn newer(run: &Run<'_>, subject: &str, ticket: Ticket) -> Option<Ticket> {
    state::last_decided(&run.cfg.lock_file, subject).filter(|last| *last > ticket)
}

/// The observe part of a round: opens netlink, takes the host lock, stands
/// down when a newer run has decided, and reads what this host has and
/// remembers. `None` when the round ends here (an error is in `report`, or
/// a newer run's decision stands); else the local effects, the lock (none
/// in a dry run, or for a release that could not have it) and what was seen.
async fn observe<'a>(
    run: &Run<'a>,
    keys: &ScopeKeys,
    trigger: Trigger,
    seen: Seen,
    ticket: Ticket,
    subject: &str,
    report: &mut Report,
) -> Option<(Local<'a>, Option<HostLock>, Observed)> {
    let cfg = run.cfg;
    let Seen {
        consul,
        members: (member_ips, members_known),
        local_primary,
    } = seen;
    let local = match Local::open(run.vip, &cfg.lock_file, run.scope).await {
        Ok(l) => l,
        Err(e) => {
            report.fail(e);
            return None;
        }
    };
    let (intent, _) = plan::intent(trigger, &consul, &cfg.name, local_primary);
    let release = intent == Intent::Release;
    // A hold needs its interface; a release removes what it owns wherever
    // that is, and says the configured interface is missing.
    if let Err(e) = local.interface().await {
        if !release {
            report.fail(e);
            return None;
        }
        report.fail(e);
    }
    let lock = match take_lock(run, release, report) {
        Ok(l) => l,
        Err(e) => {
            report.fail(e);
            return None;
        }
    };
    if !run.dry_run {
        if let Some(last) = newer(run, subject, ticket) {
            note!(
                "a run that started {:?} after this one decided meanwhile; its decision stands",
                last.since(ticket)
            );
            return None;
        }
    }
    let remembered = match local.remembered() {
        Ok(r) => r,
        Err(e) => {
            warn_line!("{e}; going on with what is marked as patroni-hook's");
            Vec::new()
        }
    };
    let present = match local.present().await {
        Ok(p) => p,
        Err(e) => {
            report.fail(e);
            return None;
        }
    };
    let seen_vip = keep_seen_vip(run, &consul, &member_ips);
    let observed = Observed {
        trigger,
        me: cfg.name.clone(),
        keys: keys.clone(),
        interface: run.vip.interface.clone(),
        config_vip: run.vip.address,
        consul,
        present,
        remembered,
        others: local.others(),
        member_ips,
        members_known,
        local_primary,
        reannounce: matches!(trigger, Trigger::Callback(_)),
        seen_vip,
    };
    Some((local, lock, observed))
}

/// The host lock for a round's local work (none in a dry run). A hold or a
/// reconcile waits for it until the run's end, and cannot go on without it
/// (`Err`); a release waits briefly, and goes on without it.
fn take_lock(run: &Run<'_>, release: bool, report: &mut Report) -> Result<Option<HostLock>, Error> {
    if run.dry_run {
        return Ok(None);
    }
    if !release {
        return state::acquire(&run.cfg.lock_file, run.budget.end).map(Some);
    }
    match state::acquire(&run.cfg.lock_file, Instant::now() + RELEASE_LOCK_WAIT) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            // A release goes on: removing the VIP is never the unsafe
            // direction, and waiting could leave it on a demoted node.
            warn_line!("{e}; releasing without the lock");
            if e.kind() != Kind::Temporary {
                report.set(e.kind());
            }
            Ok(None)
        }
    }
}

/// The decide part of a round: the plan, and one line saying what was
/// decided and from what.
fn decide(run: &Run<'_>, observed: &Observed) -> Plan {
    let p = plan::plan(observed);
    note!(
        "decision: {} (DCS: {}); steps: {}",
        match p.intent {
            Intent::Hold => "hold",
            Intent::Release => "release",
            Intent::Keep => "keep",
        },
        consul_text(&observed.consul, &run.cfg.name),
        steps_text(&p)
    );
    p
}

/// The apply part of a round, under the lock: stamps the decision, applies
/// the VIP steps but the announcements (they go out after the lock), and
/// counts them in the run's facts. Returns whether every step succeeded;
/// `None` when a newer run decided while this one was adding, and what this
/// one added has been undone.
async fn apply_local(
    run: &Run<'_>,
    local: &Local<'_>,
    p: &Plan,
    subject: &str,
    ticket: Ticket,
    report: &mut Report,
) -> Option<bool> {
    // A decision (not "keep") is stamped before its steps, so that a run
    // that observed earlier and comes late stands down, with or without the
    // lock; a stamp never goes back.
    if p.intent != Intent::Keep {
        if let Err(e) = state::set_decided(&run.cfg.lock_file, subject, ticket) {
            warn_line!("{e}");
        }
    }
    let mut applied = true;
    let mut added = Vec::new();
    let mut removed = 0;
    for step in p
        .steps
        .iter()
        .filter(|s| !matches!(s, VipStep::Announce(_)))
    {
        match local.apply(step).await {
            Ok(()) => match step {
                VipStep::Add(o) => added.push(o.clone()),
                VipStep::Remove(_) => removed += 1,
                _ => {}
            },
            // The address is gone; the memory of it is only stale, and the
            // next release finds it absent and forgets it.
            Err(e) if matches!(step, VipStep::Forget(_)) => warn_line!("{e}"),
            Err(e) => {
                report.fail(e);
                applied = false;
                break;
            }
        }
    }
    let facts = report
        .facts
        .vip
        .get_or_insert_with(|| crate::metrics::VipFacts {
            scope: run.scope.to_string(),
            ..Default::default()
        });
    facts.added += added.len() as u32;
    facts.removed += removed;
    if applied {
        match p.intent {
            Intent::Hold => facts.held = Some(p.vip.clone()),
            Intent::Release => facts.held = Some(None),
            Intent::Keep => {}
        }
    }
    // A release that could not wait for the lock may have run while this
    // hold was adding: then its decision is the newer one, and what this
    // run added goes again.
    if let Some(last) = newer(run, subject, ticket).filter(|_| !added.is_empty()) {
        note!(
            "a run that started {:?} after this one decided while it was adding; undoing",
            last.since(ticket)
        );
        facts.held = Some(None);
        let (undone, errors) = undo(local, &added).await;
        facts.removed += undone;
        for e in errors {
            report.fail(e);
        }
        return None;
    }
    Some(applied)
}

/// Removes and forgets what this run added. Returns how many addresses were
/// removed, and the errors, for the caller to report.
async fn undo(local: &Local<'_>, added: &[Owned]) -> (u32, Vec<Error>) {
    let mut undone = 0;
    let mut errors = Vec::new();
    for o in added {
        for step in [VipStep::Remove(o.clone()), VipStep::Forget(o.clone())] {
            match local.apply(&step).await {
                Ok(()) if matches!(step, VipStep::Remove(_)) => undone += 1,
                Ok(()) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    (undone, errors)
}

/// Announcements go out without the lock (they take a millisecond per
/// packet), and only while this run's decision is still the newest and
/// the address is still there: an announcement for an address gone would
/// pull its clients to the wrong node.
async fn announce(
    run: &Run<'_>,
    local: &Local<'_>,
    p: &Plan,
    subject: &str,
    ticket: Ticket,
    report: &mut Report,
) {
    for step in &p.steps {
        if let VipStep::Announce(o) = step {
            if newer(run, subject, ticket).is_some() || !local.has(o).await {
                note!(
                    "{} is no longer this run's to announce; not announced",
                    o.net
                );
                continue;
            }
            if let Err(e) = local.announce(o).await {
                report.fail(e);
            }
        }
    }
}

/// Keeps the scope's floating-ip as Consul names it now, for a later
/// promotion that cannot read Consul (`vip.address` unset), and returns the
/// one to go by: Consul's when it answered, else the one kept. Written only
/// when it changes. What Consul answers now replaces what was kept: a key it
/// no longer has, or a value that is no VIP (unparsable, a member's own
/// address), is forgotten, so a promotion without Consul never adds what
/// every run with Consul refuses.
fn keep_seen_vip(
    run: &Run<'_>,
    consul: &ConsulView,
    member_ips: &BTreeSet<IpAddr>,
) -> Option<ipnet::IpNet> {
    if run.vip.address.is_some() {
        // A guess kept from before vip.address was set must not outlive
        // it: forgotten (a stat per run when there is none).
        if !run.dry_run && state::seen_vip_path(&run.cfg.lock_file, run.scope).exists() {
            if let Err(e) = state::write_seen_vip(&run.cfg.lock_file, run.scope, None) {
                warn_line!("{e}");
            }
        }
        return None;
    }
    let kept = state::read_seen_vip(&run.cfg.lock_file, run.scope);
    let now = match consul {
        ConsulView::Answered(v) if !v.empty => match &v.floating_ip {
            Some(Ok(net)) if !member_ips.contains(&net.addr()) => Some(*net),
            _ => None,
        },
        _ => return kept,
    };
    if now != kept && !run.dry_run {
        if let Err(e) = state::write_seen_vip(&run.cfg.lock_file, run.scope, now) {
            warn_line!("{e}");
        }
    }
    now
}

/// The record step, without the lock: skipped when a newer run decided
/// since (that run owns the record now); on a refused check-and-set, read
/// again and retry a few times, since the refusal may come from an older
/// run of this same host whose write landed late.
async fn record(
    run: &Run<'_>,
    keys: &ScopeKeys,
    p: &Plan,
    mut step: plan::RecordStep,
    subject: &str,
    ticket: Ticket,
    report: &mut Report,
) {
    run.consul.set_deadline(run.budget.end);
    for attempt in 1..=3 {
        if state::last_decided(&run.cfg.lock_file, subject).is_some_and(|last| last > ticket) {
            note!("a newer run decided meanwhile; the vip-holder record is left to it");
            return;
        }
        match apply::record(&step, run.consul, &keys.vip_holder, &run.cfg.name).await {
            Ok(true) => return,
            Err(e) => return report.fail(e),
            Ok(false) if attempt == 3 => {
                return report.fail(Error::temporary(
                    format!("writing {}", keys.vip_holder),
                    "changed under every check-and-set; left to the next run",
                ))
            }
            Ok(false) => {
                debug_line!(
                    "{} changed since it was read; reading it again",
                    keys.vip_holder
                );
                match read_view(run.consul, keys, true).await {
                    ConsulView::Answered(v) => {
                        match plan::record_step_again(&p.intent, p.vip.as_ref(), &run.cfg.name, &v)
                        {
                            Some(next) => step = next,
                            None => {
                                note!(
                                    "{} changed since it was read, and the record stands as it is now ({}): not written over",
                                    keys.vip_holder,
                                    consul_text(&ConsulView::Answered(v.clone()), &run.cfg.name)
                                );
                                return;
                            }
                        }
                    }
                    ConsulView::Unreachable(why) => {
                        return report.fail(Error::temporary(
                            format!("writing {}", keys.vip_holder),
                            why,
                        ))
                    }
                    ConsulView::Unusable(why) | ConsulView::Misconfigured(why) => {
                        return report
                            .fail(Error::failed(format!("writing {}", keys.vip_holder), why))
                    }
                    ConsulView::NotAsked => return,
                }
            }
        }
    }
}

fn consul_text(c: &ConsulView, me: &str) -> String {
    match c {
        ConsulView::NotAsked => "not asked".into(),
        ConsulView::Unreachable(_) => "unreachable".into(),
        ConsulView::Unusable(_) => "unusable answer".into(),
        ConsulView::Misconfigured(_) => "not usable as configured".into(),
        ConsulView::Answered(v) => match &v.leader {
            crate::dcs::keys::LeaderKey::Name(n) if n == me => "leader is this node".into(),
            crate::dcs::keys::LeaderKey::Name(n) => {
                format!("leader is {}", crate::dcs::keys::shown(n))
            }
            crate::dcs::keys::LeaderKey::Absent => "no leader key".into(),
            crate::dcs::keys::LeaderKey::Invalid(_) => "invalid leader key".into(),
        },
    }
}

fn steps_text(p: &Plan) -> String {
    let mut parts: Vec<String> = p.steps.iter().map(|s| s.to_string()).collect();
    if let Some(r) = &p.record {
        parts.push(r.to_string());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// `--dry-run`: the plan on stdout, one line per step.
fn print_plan(run: &Run<'_>, p: &Plan, holder_key: &str) {
    for step in &p.steps {
        match step {
            plan::VipStep::Announce(_) if run.vip.gratuitous_arp == 0 => {}
            plan::VipStep::Announce(o) => out::line(format_args!(
                "would announce {} on {} ({} packets)",
                o.net.addr(),
                o.interface,
                run.vip.gratuitous_arp
            )),
            other => out::line(format_args!("would {other}")),
        }
    }
    if p.steps.is_empty() {
        out::line(format_args!("VIP: nothing to do"));
    }
    match &p.record {
        Some(plan::RecordStep::Write { cas, .. }) => out::line(format_args!(
            "would write {holder_key} = {} (cas={cas})",
            run.cfg.name
        )),
        Some(plan::RecordStep::Delete { cas }) => {
            out::line(format_args!("would delete {holder_key} (cas={cas})"))
        }
        None => out::line(format_args!("vip-holder: nothing to do")),
    }
}
