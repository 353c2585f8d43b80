//! Runs planned steps against the kernel, the state files and Consul, and
//! collects how the run ends.
//!
//! No policy here: `plan` decided. In `--dry-run` nothing is carried out;
//! the verb prints the plan instead.

use crate::config::VipConfig;
use crate::dcs::keys::HolderRecord;
use crate::dcs::Dcs;
use crate::error::{Error, Kind};
use crate::node::announce;
use crate::node::netlink::Netlink;
use crate::node::plan::{Owned, Present, RecordStep, Verdict, VipStep};
use crate::note;
use crate::report::Report;
use crate::state;
use std::path::Path;

/// Logs a plan's verdict and remembers its kind.
pub fn verdict(report: &mut Report, v: &Verdict) {
    match v {
        Verdict::Temporary(why) => report.fail(Error::new(Kind::Temporary, why.clone())),
        Verdict::Failed(why) => report.fail(Error::new(Kind::Failed, why.clone())),
        Verdict::Config(why) => report.fail(Error::new(Kind::Usage, why.clone())),
    }
}

/// The local effects of a VIP run: netlink and the remembered set.
pub struct Local<'a> {
    netlink: Netlink,
    vip: &'a VipConfig,
    lock_file: &'a Path,
    scope: &'a str,
}

impl<'a> Local<'a> {
    /// Opens netlink.
    pub async fn open(
        vip: &'a VipConfig,
        lock_file: &'a Path,
        scope: &'a str,
    ) -> Result<Local<'a>, Error> {
        Ok(Local {
            netlink: Netlink::open().await?,
            vip,
            lock_file,
            scope,
        })
    }

    /// Whether the configured interface exists (an error naming it if not).
    pub async fn interface(&self) -> Result<(), Error> {
        self.netlink.link_index(&self.vip.interface).await.map(drop)
    }

    /// What this scope remembers owning, oldest first.
    pub fn remembered(&self) -> Result<Vec<Owned>, Error> {
        state::read_owned(self.lock_file, self.scope, &self.vip.interface)
    }

    /// What the other scopes of this host remember owning.
    pub fn others(&self) -> Vec<Owned> {
        state::read_others(self.lock_file, self.scope)
    }

    /// Every address on the host.
    pub async fn present(&self) -> Result<Vec<Present>, Error> {
        self.netlink.all_addresses().await
    }

    /// Whether `o` is on its interface now.
    pub async fn has(&self, o: &Owned) -> bool {
        match self.netlink.addresses(&o.interface).await {
            Ok(Some(found)) => found.iter().any(|p| p.net.addr() == o.net.addr()),
            _ => false,
        }
    }

    /// Carries out one VIP step. Announcements are sent by [`Local::announce`].
    pub async fn apply(&self, step: &VipStep) -> Result<(), Error> {
        match step {
            VipStep::Remember(o) => {
                let mut set = self.remembered().unwrap_or_default();
                if !set.iter().any(|x| x.same(o)) {
                    set.push(o.clone());
                    state::write_owned(self.lock_file, self.scope, &set)
                        .map_err(|e| e.context(format!("remembering {o}")))?;
                }
            }
            VipStep::Forget(o) => {
                let mut set = self.remembered().unwrap_or_default();
                let before = set.len();
                set.retain(|x| !x.same(o));
                if set.len() != before {
                    state::write_owned(self.lock_file, self.scope, &set)
                        .map_err(|e| e.context(format!("forgetting {o}")))?;
                }
            }
            VipStep::Add(o) => {
                if self.netlink.add_addr(&o.interface, o.net).await? {
                    note!("added {} to {}", o.net, o.interface);
                } else {
                    note!("{} already on {}", o.net, o.interface);
                }
            }
            VipStep::Remove(o) => {
                if self.netlink.del_addr(&o.interface, o.net).await? {
                    note!("removed {} from {}", o.net, o.interface);
                } else {
                    note!("{} already absent from {}", o.net, o.interface);
                }
            }
            VipStep::Announce(o) => self.announce(o).await?,
        }
        Ok(())
    }

    /// Sends the gratuitous ARP / unsolicited NA for `o`.
    pub async fn announce(&self, o: &Owned) -> Result<(), Error> {
        if self.vip.gratuitous_arp == 0 {
            return Ok(());
        }
        let mac = self.netlink.link_mac(&o.interface).await?;
        let index = self.netlink.link_index(&o.interface).await?;
        announce::announce(
            &o.interface,
            index,
            mac,
            o.net.addr(),
            self.vip.gratuitous_arp,
        )?;
        note!(
            "announced {} on {} ({} packets)",
            o.net.addr(),
            o.interface,
            self.vip.gratuitous_arp
        );
        Ok(())
    }
}

/// Carries out a record step with check-and-set; `me` is this node.
/// `Ok(false)`: the record changed since it was read (the cas was refused).
pub async fn record(step: &RecordStep, consul: &Dcs, key: &str, me: &str) -> Result<bool, Error> {
    match step {
        RecordStep::Write { cas, owned } => {
            let record = HolderRecord {
                member: me.to_string(),
                address: owned.net.to_string(),
                interface: owned.interface.clone(),
                since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            };
            let body = serde_json::to_vec(&record)
                .map_err(|e| Error::failed(format!("encoding {key}"), e))?;
            let done = consul.put_cas(key, &body, *cas).await?;
            if done {
                note!("recorded {me} as vip-holder in {key}");
            }
            Ok(done)
        }
        RecordStep::Delete { cas } => {
            let done = consul.delete_cas(key, *cas).await?;
            if done {
                note!("deleted {key}");
            }
            Ok(done)
        }
    }
}
