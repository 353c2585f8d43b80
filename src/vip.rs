//! The VIP verb: observe (interface, Consul), ask `plan`, apply, record the holder.
//!
//! Used by the Patroni callbacks and by `reconcile` on a database node. The
//! order of effects is the safety contract of PRODUCT.md:
//! - a release removes the VIP before Consul is asked anything;
//! - a hold is fenced by one consistent recursive read of `<ns>/<scope>/`
//!   (leader, floating-ip and vip-holder in one round trip);
//! - the VIP change happens before the Consul write.

use crate::apply::{Effects, Report};
use crate::config::{parse_vip, Config, VipConfig};
use crate::consul::{Consul, Entry};
use crate::error::{Error, Kind};
use crate::lock;
use crate::plan::{self, Holder, Leader, Reannounce, Want};
use crate::{debug_line, note, warn_line};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The JSON stored at `<ns>/<scope>/vip-holder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Patroni member name of the holder.
    pub member: String,
    /// The VIP with prefix.
    pub address: String,
    /// Interface it is on.
    pub interface: String,
    /// When this holder took it, RFC 3339 UTC.
    pub since: String,
}

/// Why the VIP is being converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A Patroni callback that wants this.
    Callback(Want),
    /// `reconcile`: follow the leader key.
    Reconcile,
}

/// Consul keys of one scope.
pub struct Keys {
    /// `<ns>/<scope>/`
    pub prefix: String,
    /// `<ns>/<scope>/leader`
    pub leader: String,
    /// `<ns>/<scope>/floating-ip`
    pub floating_ip: String,
    /// `<ns>/<scope>/vip-holder`
    pub holder: String,
}

impl Keys {
    /// The keys of `scope` under `namespace`.
    pub fn new(namespace: &str, scope: &str) -> Self {
        let prefix = format!("{namespace}/{scope}/");
        Keys {
            leader: format!("{prefix}leader"),
            floating_ip: format!("{prefix}floating-ip"),
            holder: format!("{prefix}vip-holder"),
            prefix,
        }
    }
}

/// Reads the leader view from a recursive read's entries.
pub fn leader_of(entries: &[Entry], keys: &Keys, me: &str) -> Leader {
    match entries.iter().find(|e| e.key == keys.leader) {
        None => Leader::NoKey,
        Some(e) => {
            let name = String::from_utf8_lossy(&e.value).trim().to_string();
            if name.is_empty() {
                Leader::NoKey
            } else if name == me {
                Leader::Me
            } else {
                Leader::Other(name)
            }
        }
    }
}

/// Reads the holder view from an entry, comparing with what this node would write.
pub fn holder_of(entry: Option<&Entry>, addr: IpNet, interface: &str) -> Holder {
    match entry {
        None => Holder::Absent,
        Some(e) => match serde_json::from_slice::<HolderRecord>(&e.value) {
            Ok(r) => Holder::Present {
                same_vip: r.address == addr.to_string() && r.interface == interface,
                member: r.member,
                index: e.modify_index,
            },
            Err(_) => Holder::Unparsable {
                index: e.modify_index,
            },
        },
    }
}

/// Converges the VIP of `scope` on this host. Errors and verdicts go into `report`.
///
/// `pre_read` is the consistent read of `<ns>/<scope>/` when the caller made it
/// already (reconcile reads before taking the lock); otherwise a hold reads it
/// here and a release reads nothing before removing.
#[allow(clippy::too_many_arguments)]
pub async fn converge(
    cfg: &Config,
    vip: &VipConfig,
    scope: &str,
    consul: &Consul,
    mode: Mode,
    pre_read: Option<Result<Vec<Entry>, Error>>,
    dry_run: bool,
    report: &mut Report,
) {
    let keys = Keys::new(&cfg.consul.namespace, scope);
    let cache = lock::cache_path(&cfg.lock_file, scope);
    let fx = match Effects::open(vip, dry_run).await {
        Ok(fx) => fx,
        Err(e) => return report.fail(e),
    };

    // A hold (or a reconcile) needs the fence first: one consistent read.
    let scope_read = match (mode, pre_read) {
        (_, Some(r)) => Some(r),
        (Mode::Callback(Want::Release), None) => None,
        (_, None) => Some(consul.list(&keys.prefix, true).await),
    };
    let leader = match &scope_read {
        None => Leader::Unreachable, // not consulted for a release
        Some(Ok(entries)) => leader_of(entries, &keys, &cfg.name),
        Some(Err(e)) if e.kind() == Kind::Temporary => {
            report.fail(e.clone().context("fence"));
            Leader::Unreachable
        }
        // Consul answered but not usefully (403, a malformed answer, an
        // unreadable token): that is not "unreachable", so Patroni is not
        // trusted blindly and the VIP is left as it is.
        Some(Err(e)) => {
            return report.fail(e.clone().context("fence: VIP left as it is"));
        }
    };
    let want = match mode {
        Mode::Callback(w) => w,
        Mode::Reconcile => match plan::reconcile_want(&leader) {
            Some(w) => w,
            None => {
                let why = match leader {
                    Leader::NoKey => "no leader key in Consul; VIP left as it is",
                    _ => "Consul unreachable; VIP left as it is",
                };
                note!("{why}");
                if dry_run {
                    println!("VIP: nothing to do ({why})");
                }
                return report.set(Kind::Temporary);
            }
        },
    };
    if let Leader::Other(who) = &leader {
        debug_line!("leader key {} names {who}", keys.leader);
    }

    // The addresses: a hold takes one; a release removes every address this
    // node may carry: the configured or Consul one, and the one remembered
    // from when it last held the VIP (Consul's floating-ip may have changed
    // since, or be out of reach).
    let addrs = match addresses(vip, &keys, scope_read.as_ref(), consul, want, &cache).await {
        Ok(a) => a,
        Err(e) => return report.fail(e),
    };
    let reannounce = match mode {
        Mode::Callback(_) => Reannounce::Always,
        Mode::Reconcile => Reannounce::OnlyWhenAdded,
    };
    let mut plans = Vec::new();
    for addr in &addrs {
        let present = match fx.has_vip(*addr).await {
            Ok(p) => p,
            Err(e) => return report.fail(e),
        };
        let vp = plan::plan_vip(want, &leader, present, reannounce);
        note!(
            "decision: want={} leader={} vip {} {} on {}; steps: {}",
            match want {
                Want::Hold => "hold",
                Want::Release => "release",
            },
            leader_text(&leader),
            addr,
            if present { "present" } else { "absent" },
            vip.interface,
            steps_text(&vp.steps)
        );
        if dry_run && vp.steps.is_empty() {
            println!(
                "VIP: nothing to do ({addr} {} on {})",
                if present { "present" } else { "absent" },
                vip.interface
            );
        }
        plans.push((*addr, vp));
    }
    let mut vip_ok = true;
    for (addr, vp) in &plans {
        for step in &vp.steps {
            if let Err(e) = fx.apply_vip(*step, *addr).await {
                report.fail(e);
                vip_ok = false;
                break;
            }
        }
        report.verdict(&vp.verdict);
        if vip_ok && vp.holds && !dry_run {
            // Remembered whenever this node holds it, added now or found in
            // place (say, by the glue this tool replaces), so that a later
            // release can remove it without Consul.
            if let Err(e) = lock::write_cached_vip(&cache, *addr) {
                warn_line!("{e}; a release without Consul may not find the VIP address");
            }
        }
    }
    let (addr, vp) = &plans[0];
    if !vip_ok || !vp.record {
        // The VIP is not where the plan wanted it, or nobody holds the leader
        // lock: do not claim or drop the record.
        return;
    }

    // The record, after the local change.
    let holder_entry = match scope_read {
        Some(Ok(entries)) => Ok(entries.into_iter().find(|e| e.key == keys.holder)),
        Some(Err(_)) => Err(()),
        None => consul
            .get(&keys.holder, true)
            .await
            .map_err(|e| report.fail(e)),
    };
    let holder = match &holder_entry {
        Ok(e) => holder_of(e.as_ref(), *addr, &vip.interface),
        Err(()) => Holder::Unreachable,
    };
    let (step, verdict) = plan::plan_record(vp.holds, &cfg.name, &holder);
    report.verdict(&verdict);
    match step {
        Some(step) => {
            let record = HolderRecord {
                member: cfg.name.clone(),
                address: addr.to_string(),
                interface: vip.interface.clone(),
                since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            };
            if let Err(e) = fx.apply_record(step, consul, &keys.holder, &record).await {
                report.fail(e);
            }
        }
        None if dry_run => println!("vip-holder: nothing to do"),
        None => {}
    }
}

/// The VIP addresses to act on, the primary one first.
async fn addresses(
    vip: &VipConfig,
    keys: &Keys,
    scope_read: Option<&Result<Vec<Entry>, Error>>,
    consul: &Consul,
    want: Want,
    cache: &std::path::Path,
) -> Result<Vec<IpNet>, Error> {
    let cached = lock::read_cached_vip(cache);
    let parse = |e: &Entry| {
        let s = String::from_utf8_lossy(&e.value);
        parse_vip(&s).map_err(|why| Error::failed(format!("Consul key {}", keys.floating_ip), why))
    };
    let no_key = || {
        Error::failed(
            "finding the VIP address",
            format!(
                "vip.address is not set and Consul has no key {}",
                keys.floating_ip
            ),
        )
    };
    // What config or Consul says now, if that can be known without waiting.
    let current = match (vip.address, scope_read) {
        (Some(a), _) => Some(Ok(a)),
        (None, Some(Ok(entries))) => Some(
            entries
                .iter()
                .find(|e| e.key == keys.floating_ip)
                .map_or_else(|| Err(no_key()), parse),
        ),
        (None, Some(Err(_))) | (None, None) => None,
    };
    match want {
        Want::Hold => match (current, cached) {
            (Some(r), _) => r.map(|a| vec![a]),
            (None, Some(a)) => Ok(vec![a]),
            (None, None) => Err(Error::temporary(
                "finding the VIP address",
                "vip.address is not set, Consul is unreachable and no address is remembered",
            )),
        },
        Want::Release => {
            let mut out = Vec::new();
            match current {
                Some(Ok(a)) => out.push(a),
                Some(Err(e)) if cached.is_none() => return Err(e),
                Some(Err(_)) => {}
                // Removal never waits on Consul: ask it only when nothing
                // is configured or remembered.
                None if cached.is_none() => match consul.get(&keys.floating_ip, false).await? {
                    Some(e) => out.push(parse(&e)?),
                    None => return Err(no_key()),
                },
                None => {}
            }
            if let Some(a) = cached {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
            Ok(out)
        }
    }
}

fn leader_text(l: &Leader) -> String {
    match l {
        Leader::Me => "this node".into(),
        Leader::Other(n) => n.clone(),
        Leader::NoKey => "none".into(),
        Leader::Unreachable => "unknown".into(),
    }
}

fn steps_text(steps: &[plan::Step]) -> String {
    if steps.is_empty() {
        "none".into()
    } else {
        steps
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, idx: u64) -> Entry {
        Entry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            modify_index: idx,
            session: None,
        }
    }

    #[test]
    fn leader_view() {
        let k = Keys::new("service", "batman");
        assert_eq!(leader_of(&[], &k, "pg1"), Leader::NoKey);
        assert_eq!(
            leader_of(&[entry("service/batman/leader", "pg1", 3)], &k, "pg1"),
            Leader::Me
        );
        assert_eq!(
            leader_of(&[entry("service/batman/leader", "pg2", 3)], &k, "pg1"),
            Leader::Other("pg2".into())
        );
        assert_eq!(
            leader_of(&[entry("service/batman/leader", "", 3)], &k, "pg1"),
            Leader::NoKey
        );
        // A key of another scope with a common prefix is not ours.
        assert_eq!(
            leader_of(&[entry("service/batman2/leader", "pg1", 3)], &k, "pg1"),
            Leader::NoKey
        );
    }

    #[test]
    fn holder_view() {
        let a: IpNet = "198.51.100.100/24".parse().unwrap();
        assert_eq!(holder_of(None, a, "eth1"), Holder::Absent);
        let rec = r#"{"member":"pg1","address":"198.51.100.100/24","interface":"eth1","since":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            holder_of(Some(&entry("k", rec, 5)), a, "eth1"),
            Holder::Present {
                member: "pg1".into(),
                same_vip: true,
                index: 5
            }
        );
        assert_eq!(
            holder_of(Some(&entry("k", rec, 5)), a, "eth2"),
            Holder::Present {
                member: "pg1".into(),
                same_vip: false,
                index: 5
            }
        );
        assert_eq!(
            holder_of(Some(&entry("k", "junk", 6)), a, "eth1"),
            Holder::Unparsable { index: 6 }
        );
    }
}
