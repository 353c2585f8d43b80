//! Runs planned steps against the kernel and Consul, and collects how the run ends.
//!
//! No policy here: `plan` decided. In `--dry-run` each step is printed on
//! stdout as one line and nothing is changed.

use crate::announce;
use crate::config::VipConfig;
use crate::consul::Consul;
use crate::error::{exit_code, Error, Kind};
use crate::netlink::Netlink;
use crate::plan::{Step, Verdict};
use crate::vip::HolderRecord;
use crate::{error_line, note, warn_line};
use ipnet::IpNet;

/// How a run is ending: the worst kind seen so far.
#[derive(Debug, Default)]
pub struct Report {
    worst: Option<Kind>,
}

impl Report {
    /// Logs an error and remembers its kind.
    pub fn fail(&mut self, e: Error) {
        match e.kind() {
            Kind::Temporary => warn_line!("{e}"),
            _ => error_line!("{e}"),
        }
        self.set(e.kind());
    }

    /// Remembers a kind without logging.
    pub fn set(&mut self, k: Kind) {
        self.worst = Some(self.worst.map_or(k, |w| w.max(k)));
    }

    /// Logs a plan's verdict and remembers its kind.
    pub fn verdict(&mut self, v: &Verdict) {
        match v {
            Verdict::Ok => {}
            Verdict::Refused(why) => self.fail(Error::new(Kind::Failed, format!("fence: {why}"))),
            Verdict::Temporary(why) => {
                warn_line!("{why}");
                self.set(Kind::Temporary);
            }
        }
    }

    /// The worst kind seen.
    pub fn worst(&self) -> Option<Kind> {
        self.worst
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        exit_code(self.worst)
    }
}

/// The effects a VIP run needs, bound to one interface.
pub struct Effects<'a> {
    vip: &'a VipConfig,
    netlink: Netlink,
    ifindex: u32,
    dry_run: bool,
}

impl<'a> Effects<'a> {
    /// Opens netlink and looks the interface up (a missing interface is an error here).
    pub async fn open(vip: &'a VipConfig, dry_run: bool) -> Result<Effects<'a>, Error> {
        let netlink = Netlink::open().await?;
        let ifindex = netlink.link_index(&vip.interface).await?;
        Ok(Effects {
            vip,
            netlink,
            ifindex,
            dry_run,
        })
    }

    /// Whether the VIP is on the interface now.
    pub async fn has_vip(&self, addr: IpNet) -> Result<bool, Error> {
        self.netlink.has_addr(&self.vip.interface, addr).await
    }

    /// Carries out a VIP step.
    pub async fn apply_vip(&self, step: Step, addr: IpNet) -> Result<(), Error> {
        let ifname = &self.vip.interface;
        if self.dry_run {
            match step {
                Step::AddVip => println!("would add {addr} to {ifname}"),
                Step::Announce if self.vip.gratuitous_arp == 0 => {}
                Step::Announce => println!(
                    "would announce {} on {ifname} ({} packets)",
                    addr.addr(),
                    self.vip.gratuitous_arp
                ),
                Step::RemoveVip => println!("would remove {addr} from {ifname}"),
                other => println!("would {other}"),
            }
            return Ok(());
        }
        match step {
            Step::AddVip => {
                if self.netlink.add_addr(ifname, addr).await? {
                    note!("added {addr} to {ifname}");
                } else {
                    note!("{addr} already on {ifname}");
                }
            }
            Step::RemoveVip => {
                if self.netlink.del_addr(ifname, addr).await? {
                    note!("removed {addr} from {ifname}");
                } else {
                    note!("{addr} already absent from {ifname}");
                }
            }
            Step::Announce => {
                if self.vip.gratuitous_arp > 0 {
                    let mac = self.netlink.link_mac(ifname).await?;
                    announce::announce(
                        ifname,
                        self.ifindex,
                        mac,
                        addr.addr(),
                        self.vip.gratuitous_arp,
                    )?;
                    note!(
                        "announced {} on {ifname} ({} packets)",
                        addr.addr(),
                        self.vip.gratuitous_arp
                    );
                }
            }
            Step::RecordHolder { .. } | Step::ForgetHolder { .. } => {
                return Err(Error::failed("applying a step", "not a VIP step"))
            }
        }
        Ok(())
    }

    /// Carries out a record step with check-and-set.
    pub async fn apply_record(
        &self,
        step: Step,
        consul: &Consul,
        key: &str,
        record: &HolderRecord,
    ) -> Result<(), Error> {
        match step {
            Step::RecordHolder { cas } => {
                if self.dry_run {
                    println!("would write {key} = {} (cas={cas})", record.member);
                    return Ok(());
                }
                let body = serde_json::to_vec(record)
                    .map_err(|e| Error::failed(format!("encoding {key}"), e))?;
                if consul.put_cas(key, &body, cas).await? {
                    note!("recorded {} as vip-holder in {key}", record.member);
                    Ok(())
                } else {
                    Err(Error::temporary(
                        format!("writing {key}"),
                        format!("changed since it was read (cas={cas} refused); left to the newer writer"),
                    ))
                }
            }
            Step::ForgetHolder { cas } => {
                if self.dry_run {
                    println!("would delete {key} (cas={cas})");
                    return Ok(());
                }
                if consul.delete_cas(key, cas).await? {
                    note!("deleted {key}");
                    Ok(())
                } else {
                    Err(Error::temporary(
                        format!("deleting {key}"),
                        format!("changed since it was read (cas={cas} refused); left to the newer writer"),
                    ))
                }
            }
            other => Err(Error::failed(
                "applying a step",
                format!("{other} is not a record step"),
            )),
        }
    }
}
