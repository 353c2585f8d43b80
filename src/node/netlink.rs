//! The only module that talks rtnetlink to the kernel: look up an interface, and
//! check, add and remove one address on it.
//!
//! Methods are verbs and handle the errno that matters where it happens, as
//! containers/netavark's `network/netlink.rs` does: EEXIST on add and
//! EADDRNOTAVAIL on delete mean "already converged" (docs/design.md: idempotent),
//! ENODEV means the configured interface does not exist, EPERM means the
//! process lacks CAP_NET_ADMIN. Every other errno becomes one line naming the
//! operation, the address and the interface.
//!
//! The socket lives in the network namespace of the thread that calls
//! [`Netlink::open`]; the tests rely on that to work inside a namespace.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlag, AddressMessage};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::AddressFamily;

use crate::error::Error;
use crate::node::plan::Present;
use netlink_packet_utils::nla::{DefaultNla, Nla};

/// IFA_PROTO (include/uapi/linux/if_addr.h, Linux >= 5.18): who added an
/// address. The kernel stores any byte and shows it back; older kernels
/// ignore the attribute, and ownership then rests on the state file and,
/// for IPv4, on the label.
const IFA_PROTO: u16 = 11;

/// The protocol byte patroni-hook marks its addresses with (values up to 3
/// are the kernel's own: unspec, loopback, router advertisement, link-local).
pub const MARK_PROTO: u8 = 0x70;

/// The IPv4 label suffix patroni-hook marks its addresses with:
/// `eth1:phk`, shown by `ip addr` as the address's label.
pub const MARK_LABEL: &str = ":phk";

/// The label of an address the hook adds on `ifname`, when it fits in
/// IFNAMSIZ-1 bytes (the kernel's limit for labels too).
pub fn mark_label(ifname: &str) -> Option<String> {
    let label = format!("{ifname}{MARK_LABEL}");
    (label.len() <= 15).then_some(label)
}

/// A route-netlink connection to the kernel, for one run.
pub struct Netlink {
    handle: rtnetlink::Handle,
    /// The task that drives the socket; aborted on drop so no task outlives us.
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens a route-netlink socket and drives it on the current tokio runtime.
    ///
    /// Must be called from inside a runtime (the binary uses a current-thread
    /// one); the connection task runs whenever a request is awaited.
    pub async fn open() -> Result<Netlink, Error> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::failed("opening a route-netlink socket", e))?;
        let connection = tokio::spawn(connection);
        Ok(Netlink { handle, connection })
    }

    /// The index of interface `ifname`; a missing interface is
    /// `interface eth9: no such interface`.
    pub async fn link_index(&self, ifname: &str) -> Result<u32, Error> {
        Ok(self.link(ifname).await?.header.index)
    }

    /// The Ethernet (6-byte) hardware address of interface `ifname`, for the
    /// sender fields of gratuitous ARP and neighbour advertisements.
    ///
    /// Read through netlink rather than /sys/class/net: sysfs shows the network
    /// namespace it was mounted in, not the one of the calling thread.
    pub async fn link_mac(&self, ifname: &str) -> Result<[u8; 6], Error> {
        let link = self.link(ifname).await?;
        let mac = link.attributes.iter().find_map(|attr| match attr {
            LinkAttribute::Address(bytes) => Some(bytes.as_slice()),
            _ => None,
        });
        match mac.map(<[u8; 6]>::try_from) {
            Some(Ok(mac)) => Ok(mac),
            // Tunnels (wireguard, ipip) have no hardware address or one of
            // another length: there is no neighbour cache to announce to.
            _ => Err(Error::failed(
                format!("interface {ifname}"),
                "has no Ethernet hardware address to announce from",
            )),
        }
    }

    /// Every address on interface `ifname` (IPv4 and IPv6), with whether it
    /// carries the hook's mark; `None` when there is no such interface.
    pub async fn addresses(&self, ifname: &str) -> Result<Option<Vec<Present>>, Error> {
        let index = match self.find_link(ifname).await? {
            Some(link) => link.header.index,
            None => return Ok(None),
        };
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = self.handle.address().get().set_link_index_filter(index);
            // One family per dump: the kernel then dumps only that table
            // (net/core/rtnetlink.c rtnl_dump_all is used for AF_UNSPEC only).
            request.message_mut().header.family = family;
            let all: Vec<AddressMessage> = request
                .execute()
                .try_collect()
                .await
                .map_err(|e| fail(format!("reading addresses of {ifname}"), e))?;
            for m in all.iter().filter(|m| m.header.index == index) {
                let Some(ip) = local_ip(m) else { continue };
                let Ok(net) = IpNet::new(ip, m.header.prefix_len) else {
                    continue;
                };
                out.push(present(m, net, ifname));
            }
        }
        Ok(Some(out))
    }

    /// Every address on the host (this network namespace), on every interface.
    pub async fn all_addresses(&self) -> Result<Vec<Present>, Error> {
        let links: Vec<netlink_packet_route::link::LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail("listing interfaces", e))?;
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.header.index == index)
                .and_then(|l| {
                    l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                })
        };
        // AF_UNSPEC: one dump of both families (rtnl_dump_all).
        let all: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail("listing addresses", e))?;
        let mut out = Vec::new();
        for m in &all {
            let (Some(ip), Some(ifname)) = (local_ip(m), name_of(m.header.index)) else {
                continue;
            };
            if let Ok(net) = IpNet::new(ip, m.header.prefix_len) {
                out.push(present(m, net, &ifname));
            }
        }
        Ok(out)
    }

    /// Adds `addr` to interface `ifname`; `Ok(false)` when it was already there.
    ///
    /// "Already there" is the kernel's EEXIST: the same IPv6 address with any
    /// prefix, or the same IPv4 address with the same prefix (IPv4 allows one
    /// address under several prefixes). Callers that mean "this IP with any
    /// prefix" look at [`Netlink::addresses`] first.
    ///
    /// IPv6 is added with IFA_F_NODAD: duplicate address detection would keep
    /// the VIP "tentative" for about a second (RFC 4862 section 5.4), during
    /// which the kernel neither accepts connections to it nor lets us send
    /// from it. Another holder of the VIP is excluded by Patroni's leader lock
    /// and our fence, not by DAD. The prefix route is kept, as `ip addr add`
    /// does.
    ///
    /// IPv4 gets a broadcast address for prefixes up to /30, computed from the
    /// prefix like `ip addr add ... brd +` and like vishvananda/netlink's
    /// `AddrAdd` (which vip-manager uses); /31 (RFC 3021) and /32 get none,
    /// since their "broadcast" would be a host address.
    pub async fn add_addr(&self, ifname: &str, addr: IpNet) -> Result<bool, Error> {
        let index = self.link_index(ifname).await?;
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        let message = request.message_mut();
        // rtnetlink 0.14 sets IFA_BROADCAST for every IPv4 prefix, including
        // /31 and /32 where it would name a host; we decide it ourselves.
        message
            .attributes
            .retain(|attr| !matches!(attr, AddressAttribute::Broadcast(_)));
        message.attributes.extend(extra_attributes(addr));
        // The mark: ownership that survives a lost state file.
        if let (IpNet::V4(_), Some(label)) = (addr, mark_label(ifname)) {
            message.attributes.push(AddressAttribute::Label(label));
        }
        message
            .attributes
            .push(AddressAttribute::Other(DefaultNla::new(
                IFA_PROTO,
                vec![MARK_PROTO],
            )));
        match request.execute().await {
            Ok(()) => Ok(true),
            // The kernel answers EEXIST when this IP is already on the interface
            // (net/ipv4/devinet.c inet_insert_ifa, net/ipv6/addrconf.c
            // ipv6_add_addr): converged.
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(fail(format!("adding {addr} to {ifname}"), e)),
        }
    }

    /// Removes `addr`'s IP from interface `ifname`; `Ok(false)` when it was absent.
    ///
    /// Every address on the interface with this IP is deleted, each with the
    /// prefix length the kernel has, so `198.51.100.100/32` put there by hand
    /// still goes when the configuration says `/24`.
    ///
    /// Deleting the primary IPv4 address of a subnet deletes that subnet's
    /// secondary addresses with it unless `promote_secondaries` is set on the
    /// interface (net/ipv4/devinet.c __inet_del_ifa): when the VIP became the
    /// primary (the host's own address was re-added after it), that would
    /// take the host's own address too, so it is refused instead.
    pub async fn del_addr(&self, ifname: &str, addr: IpNet) -> Result<bool, Error> {
        let index = self.link_index(ifname).await?;
        let what = format!("removing {addr} from {ifname}");
        if let IpNet::V4(v4) = addr {
            self.check_secondaries(ifname, v4).await?;
        }
        let present = self
            .find_addrs(index, addr.addr())
            .await
            .map_err(|e| fail(&what, e))?;
        let mut removed = false;
        for message in present {
            match self.handle.address().del(message).execute().await {
                Ok(()) => removed = true,
                // EADDRNOTAVAIL: someone removed it between our dump and our
                // delete (net/ipv4/devinet.c inet_rtm_deladdr,
                // net/ipv6/addrconf.c inet6_addr_del): converged.
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(fail(what, e)),
            }
        }
        Ok(removed)
    }

    /// Refuses to delete `addr` when it is the primary IPv4 address of its
    /// subnet on `ifname`, has secondaries, and they would go with it.
    async fn check_secondaries(&self, ifname: &str, addr: ipnet::Ipv4Net) -> Result<(), Error> {
        let Some(found) = self.addresses(ifname).await? else {
            return Ok(());
        };
        let Some(me) = found
            .iter()
            .find(|p| p.net.addr() == IpAddr::V4(addr.addr()))
        else {
            return Ok(());
        };
        if me.secondary {
            return Ok(());
        }
        let taken: Vec<String> = found
            .iter()
            .filter(|p| p.secondary && p.net.prefix_len() == me.net.prefix_len())
            .filter(|p| me.net.contains(&p.net.addr()))
            .map(|p| p.net.to_string())
            .collect();
        if taken.is_empty() || promotes_secondaries(ifname) {
            return Ok(());
        }
        Err(Error::failed(
            format!("removing {addr} from {ifname}"),
            format!(
                "it is the primary address of its subnet and the kernel would remove {} with it \
                 (net.ipv4.conf.{ifname}.promote_secondaries is 0); not removed: set \
                 promote_secondaries to 1, or remove it by hand",
                taken.join(", ")
            ),
        ))
    }

    /// The RTM_NEWLINK message of interface `ifname`.
    async fn link(&self, ifname: &str) -> Result<netlink_packet_route::link::LinkMessage, Error> {
        self.find_link(ifname)
            .await?
            .ok_or_else(|| Error::failed(format!("interface {ifname}"), "no such interface"))
    }

    /// The RTM_NEWLINK message of interface `ifname`, `None` when there is none.
    async fn find_link(
        &self,
        ifname: &str,
    ) -> Result<Option<netlink_packet_route::link::LinkMessage>, Error> {
        let context = format!("interface {ifname}");
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_owned())
            .execute();
        match links.try_next().await {
            Ok(found) => Ok(found),
            // RTM_GETLINK with IFLA_IFNAME answers ENODEV for an unknown name
            // (net/core/rtnetlink.c rtnl_getlink).
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            // Names longer than IFNAMSIZ-1 are refused with EINVAL.
            Err(e) if errno(&e) == Some(libc::EINVAL) => {
                Err(Error::failed(context, "not a valid interface name"))
            }
            Err(e) => Err(fail(context, e)),
        }
    }

    /// The address messages on link `index` whose IP is `ip`, ready for
    /// RTM_DELADDR. More than one when the same IPv4 address was added with
    /// different prefix lengths, which the kernel allows (net/ipv4/devinet.c
    /// inet_insert_ifa refuses only an equal address *and* mask).
    async fn find_addrs(
        &self,
        index: u32,
        ip: IpAddr,
    ) -> Result<Vec<AddressMessage>, rtnetlink::Error> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        // Ask for one family only: the kernel then dumps only that table
        // (net/core/rtnetlink.c rtnl_dump_all is used for AF_UNSPEC only).
        request.message_mut().header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        // Read the whole dump, so the request completes on the connection.
        let all: Vec<AddressMessage> = request.execute().try_collect().await?;
        Ok(all
            .into_iter()
            .filter(|message| local_ip(message) == Some(ip))
            .map(minimal_del_message)
            .collect())
    }
}

/// The host's own IP in an address message: IFA_LOCAL when present, else
/// IFA_ADDRESS. On point-to-point links IFA_ADDRESS is the *peer*
/// (include/uapi/linux/if_addr.h), which must not count as ours.
fn local_ip(message: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &message.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

/// An address as the planner sees it.
fn present(m: &AddressMessage, net: IpNet, ifname: &str) -> Present {
    use netlink_packet_route::address::AddressHeaderFlag;
    let secondary = m.header.flags.contains(&AddressHeaderFlag::Secondary)
        || m.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Flags(f) if f.contains(&AddressFlag::Secondary)),
        );
    Present {
        net,
        interface: ifname.to_string(),
        marked: is_marked(m, ifname),
        secondary,
    }
}

/// Whether the kernel promotes a secondary when the primary of its subnet
/// goes (`all` or the interface's own setting, IN_DEV_ORCONF). Read from
/// /proc/sys/net, which shows the network namespace of the reader.
fn promotes_secondaries(ifname: &str) -> bool {
    ["all", ifname].iter().any(|conf| {
        std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{conf}/promote_secondaries"
        ))
        .is_ok_and(|v| v.trim() == "1")
    })
}

/// Whether an address carries the hook's mark: its protocol byte, or (IPv4)
/// its label.
fn is_marked(message: &AddressMessage, ifname: &str) -> bool {
    message.attributes.iter().any(|attr| match attr {
        AddressAttribute::Label(l) => Some(l) == mark_label(ifname).as_ref(),
        AddressAttribute::Other(nla) if nla.kind() == IFA_PROTO && nla.value_len() == 1 => {
            let mut b = [0u8; 1];
            nla.emit_value(&mut b);
            b[0] == MARK_PROTO
        }
        _ => false,
    })
}

/// The parts of a dumped address that identify it for RTM_DELADDR.
///
/// The kernel matches on index, prefix length, IFA_LOCAL and IFA_ADDRESS
/// (net/ipv4/devinet.c inet_rtm_deladdr; net/ipv6/addrconf.c
/// inet6_rtm_deladdr); the dump's cache info and flags are not needed.
fn minimal_del_message(found: AddressMessage) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = found.header.family;
    message.header.prefix_len = found.header.prefix_len;
    message.header.index = found.header.index;
    message.attributes = found
        .attributes
        .into_iter()
        .filter(|attr| {
            matches!(
                attr,
                AddressAttribute::Address(_) | AddressAttribute::Local(_)
            )
        })
        .collect();
    message
}

/// The positive errno carried by a netlink error, if any.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// One-line error for a failed netlink operation, naming the errno.
fn fail(context: impl std::fmt::Display, error: rtnetlink::Error) -> Error {
    match errno(&error) {
        Some(code) => Error::failed(context, errno_text(code, "CAP_NET_ADMIN")),
        None => Error::failed(context, error),
    }
}

/// `file exists (EEXIST)`; EPERM names the capability the operation needs.
///
/// Shared with the announce module, whose raw sockets need CAP_NET_RAW.
pub(crate) fn errno_text(code: i32, capability: &str) -> String {
    let errno = nix::errno::Errno::from_raw(code);
    if errno == nix::errno::Errno::EPERM {
        return format!("operation not permitted (needs {capability})");
    }
    let desc = errno.desc();
    let mut chars = desc.chars();
    let lowered = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect::<String>(),
        None => String::new(),
    };
    format!("{lowered} ({errno:?})")
}

/// What we add beyond IFA_ADDRESS/IFA_LOCAL: the IPv4 broadcast, or IPv6 NODAD.
///
/// See [`Netlink::add_addr`] for why.
fn extra_attributes(addr: IpNet) -> Option<AddressAttribute> {
    match addr {
        IpNet::V4(v4) if v4.prefix_len() <= 30 => Some(AddressAttribute::Broadcast(v4.broadcast())),
        IpNet::V4(_) => None,
        // IFA_FLAGS (kernel >= 3.14) carries flags beyond the 8 bits of the
        // header's ifa_flags; NODAD would fit in either.
        IpNet::V6(_) => Some(AddressAttribute::Flags(vec![AddressFlag::Nodad])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn errno_text_names_the_errno_and_the_capability() {
        assert_eq!(errno_text(libc::EEXIST, "X"), "file exists (EEXIST)");
        assert_eq!(
            errno_text(libc::EPERM, "CAP_NET_ADMIN"),
            "operation not permitted (needs CAP_NET_ADMIN)"
        );
    }

    #[test]
    fn ipv4_gets_a_broadcast_up_to_slash_30_and_ipv6_gets_nodad() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            extra_attributes(net("198.51.100.100/24")),
            Some(AddressAttribute::Broadcast(Ipv4Addr::new(
                198, 51, 100, 255
            )))
        );
        assert_eq!(
            extra_attributes(net("198.51.100.100/30")),
            Some(AddressAttribute::Broadcast(Ipv4Addr::new(
                198, 51, 100, 103
            )))
        );
        assert_eq!(extra_attributes(net("198.51.100.100/31")), None);
        assert_eq!(extra_attributes(net("198.51.100.100/32")), None);
        assert_eq!(
            extra_attributes(net("2001:db8::100/64")),
            Some(AddressAttribute::Flags(vec![AddressFlag::Nodad]))
        );
    }

    #[test]
    fn the_local_ip_is_ifa_local_not_a_point_to_point_peer() {
        let ours = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
        let peer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12));
        let mut message = AddressMessage::default();
        message.attributes = vec![
            AddressAttribute::Address(peer),
            AddressAttribute::Local(ours),
        ];
        assert_eq!(local_ip(&message), Some(ours));
        // IPv6 dumps usually carry IFA_ADDRESS only.
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        message.attributes = vec![AddressAttribute::Address(v6)];
        assert_eq!(local_ip(&message), Some(v6));
    }

    #[test]
    fn delete_message_keeps_only_what_identifies_the_address() {
        let mut found = AddressMessage::default();
        found.header.family = AddressFamily::Inet;
        found.header.prefix_len = 32;
        found.header.index = 7;
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100));
        found.attributes = vec![
            AddressAttribute::Address(ip),
            AddressAttribute::Local(ip),
            AddressAttribute::Label("eth1".into()),
            AddressAttribute::Flags(vec![AddressFlag::Permanent]),
        ];
        let message = minimal_del_message(found);
        assert_eq!(message.header.prefix_len, 32);
        assert_eq!(message.header.index, 7);
        assert_eq!(
            message.attributes,
            vec![AddressAttribute::Address(ip), AddressAttribute::Local(ip)]
        );
    }
}
