//! The only module that writes raw frames: it tells the link that the VIP now
//! lives at this host's hardware address, so neighbours and switches stop
//! sending to the old primary at once instead of when their caches expire.
//!
//! IPv4: gratuitous ARP in the "ARP Announcement" form of RFC 5227 section 3,
//! an ARP *request* whose sender and target IP are both the VIP, broadcast.
//! Linux treats it as gratuitous (net/ipv4/arp.c arp_is_garp: tip == sip) and
//! overrides an existing neighbour entry regardless of locktime; it does not
//! create entries unless arp_accept is set, which is what we want: only hosts
//! that talk to the VIP care. We send no reply form: Linux accepts a
//! gratuitous *reply* only when its target hardware address equals the
//! sender's (arp_is_garp), the request form is what arping -U and keepalived
//! send, and RFC 5227 section 3 names the request. ARP has no socket of its
//! own, so it goes out through an AF_PACKET/SOCK_DGRAM socket: the kernel adds
//! the Ethernet header with the interface's source address, we write the ARP
//! body.
//!
//! IPv6: an unsolicited Neighbor Advertisement (RFC 4861 section 7.2.6) to the
//! all-nodes group ff02::1, Override set and Solicited clear, with the Target
//! Link-Layer Address option. Receivers update an existing entry to the new
//! address, STALE (RFC 4861 section 7.2.5; net/ipv6/ndisc.c ndisc_recv_na).
//! It goes out through an ICMPv6 raw socket, where the kernel computes the
//! checksum (RFC 3542 section 3.1) and builds the IPv6 header, rather than
//! AF_PACKET: closing a packet socket waits for an RCU grace period
//! (net/packet/af_packet.c packet_release calls synchronize_net()), measured
//! at 5-20 ms here, several times the whole hook's budget, while an ICMPv6
//! socket closes in microseconds.
//!
//! Both sockets are send-only and closed before or shortly after this module
//! returns, so a killed run leaves nothing behind. Both need CAP_NET_RAW.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6,
};

use crate::error::Error;
use crate::node::netlink::errno_text;

/// Time between two announcements. The first goes out at once.
///
/// keepalived sends its burst back to back by default (vrrp_garp_interval 0);
/// a millisecond apart costs little of the hook's run time and keeps the burst
/// from being lost whole to one moment of a full transmit queue or switch
/// buffer.
pub const GAP: Duration = Duration::from_millis(1);

/// Ethernet broadcast, destination of gratuitous ARP.
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// All-nodes link-local multicast group (RFC 4291 section 2.7.1).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// ICMPv6 type of a Neighbor Advertisement (RFC 4861 section 4.4).
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// Sends `count` announcements that `ip` is at `mac`, out of interface
/// `ifname` (index `ifindex`): gratuitous ARP for IPv4, unsolicited neighbour
/// advertisements for IPv6. `count` 0 sends nothing.
pub fn announce(
    ifname: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: IpAddr,
    count: u32,
) -> Result<(), Error> {
    if count == 0 {
        return Ok(());
    }
    let context = format!("announcing {ip} on {ifname}");
    let sent = match ip {
        IpAddr::V4(v4) => send_arp(ifindex, mac, v4, count),
        IpAddr::V6(v6) => send_na(ifindex, mac, v6, count),
    };
    sent.map_err(|(step, errno)| {
        let context = if step.is_empty() {
            context
        } else {
            format!("{context}: {step}")
        };
        Error::failed(context, errno_text(errno as i32, "CAP_NET_RAW"))
    })
}

/// What failed (empty for the send itself) and why, inside this module.
type Failure = (&'static str, nix::errno::Errno);

/// Sends `count` gratuitous ARP requests through a packet socket.
fn send_arp(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr, count: u32) -> Result<(), Failure> {
    // Protocol 0: a send-only socket; the kernel queues no received frames to it.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ("opening a packet socket", e))?;
    let fd = ClosedAside(Some(fd));
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| ("interface index out of range", nix::errno::Errno::EINVAL))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    let payload = arp_announcement(mac, ip);
    for n in 0..count {
        if n > 0 {
            std::thread::sleep(GAP);
        }
        // SAFETY: `fd` is an open socket we own; the buffer pointer and length
        // describe `payload`, and the address pointer and length describe `to`,
        // all alive for the duration of the call.
        let rc = unsafe {
            libc::sendto(
                fd.raw(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                std::ptr::addr_of!(to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            // ENETDOWN: the interface is down; ENXIO/ENODEV: it vanished.
            return Err(("", nix::errno::Errno::last()));
        }
    }
    Ok(())
}

/// A packet socket whose final close happens in a short-lived child process.
///
/// Closing a packet socket blocks for an RCU grace period (net/packet/af_packet.c
/// packet_release calls synchronize_net(); 5-20 ms measured here), after the
/// frames are gone. A thread does not help: the process cannot exit before the
/// close ends. So the socket is handed to a forked child that closes every
/// other descriptor at once (the lock file among them, so the lock is not held
/// a moment longer), then closes the socket, the slow last reference, and
/// exits; this process drops its own reference, which is not the last, in
/// microseconds. The child lives for one grace period and is reaped by init
/// (or by us if we are still running). If fork fails, a thread closes it.
struct ClosedAside(Option<OwnedFd>);

impl ClosedAside {
    fn raw(&self) -> i32 {
        self.0.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl Drop for ClosedAside {
    fn drop(&mut self) {
        let Some(fd) = self.0.take() else { return };
        let keep = fd.as_raw_fd();
        // SAFETY: between fork and _exit the child calls only async-signal-safe
        // system calls (close_range/close, _exit) on descriptors it inherited;
        // it touches no lock, allocator or runtime state of the parent.
        match unsafe { libc::fork() } {
            0 => unsafe {
                close_all_but(keep);
                libc::close(keep);
                libc::_exit(0);
            },
            pid if pid > 0 => drop(fd),
            _ => {
                let _ = std::thread::Builder::new()
                    .name("close-packet-socket".into())
                    .spawn(move || drop(fd));
            }
        }
    }
}

/// Closes every descriptor but `keep` (close_range(2), Linux >= 5.9; else one by one).
///
/// # Safety
/// Only for a freshly forked child: it closes descriptors without regard to
/// who owns them.
unsafe fn close_all_but(keep: i32) {
    let keep = keep as libc::c_uint;
    let ranges = [
        (0, keep.checked_sub(1)),
        (keep + 1, Some(libc::c_uint::MAX)),
    ];
    for (first, last) in ranges {
        let Some(last) = last else { continue };
        if libc::syscall(libc::SYS_close_range, first, last, 0) != 0 {
            // Old kernel: a bounded loop over the usual descriptor range.
            for fd in first..last.min(4096) {
                libc::close(fd as i32);
            }
        }
    }
}

/// Sends `count` unsolicited neighbour advertisements through an ICMPv6 raw
/// socket, from the VIP to ff02::1 on interface `ifindex`.
fn send_na(ifindex: u32, mac: [u8; 6], ip: Ipv6Addr, count: u32) -> Result<(), Failure> {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::IcmpV6,
    )
    .map_err(|e| ("opening an ICMPv6 socket", e))?;
    // Hop limit 255: receivers drop ND messages with any other value, the
    // proof that they were not forwarded (RFC 4861 section 7.1.2).
    set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)
        .map_err(|e| ("setting IPV6_MULTICAST_HOPS", e))?;
    // Our own host has no use for its advertisement.
    set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)
        .map_err(|e| ("setting IPV6_MULTICAST_LOOP", e))?;
    // The source is the VIP, an address of the sending interface as section
    // 7.2.6 asks. FREEBIND (kernel >= 4.15) lets us use it even while it is
    // still tentative, when someone else added it without NODAD; a tentative
    // address cannot otherwise be bound (net/ipv6/raw.c rawv6_bind).
    set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)
        .map_err(|e| ("setting IPV6_FREEBIND", e))?;
    // A link-local VIP needs its interface as scope; others ignore it.
    let scope = if ip.is_unicast_link_local() {
        ifindex
    } else {
        0
    };
    bind(
        fd.as_raw_fd(),
        &SockaddrIn6::from(SocketAddrV6::new(ip, 0, 0, scope)),
    )
    .map_err(|e| ("binding to the VIP", e))?;
    // The scope id of the link-local destination picks the interface
    // (net/ipv6/raw.c rawv6_sendmsg: flowi6_oif = sin6_scope_id).
    let to = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    let message = neighbour_advertisement(mac, ip);
    for n in 0..count {
        if n > 0 {
            std::thread::sleep(GAP);
        }
        sendto(fd.as_raw_fd(), &message, &to, MsgFlags::empty()).map_err(|e| ("", e))?;
    }
    Ok(())
}

/// setsockopt(2) with an int value.
fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), nix::errno::Errno> {
    // SAFETY: `fd` is an open socket; the pointer and length describe `value`,
    // alive for the call. nix has no wrapper for IPV6_MULTICAST_LOOP or
    // IPV6_FREEBIND.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// An ARP Announcement (RFC 5227 section 3) of `ip` at `mac`, without the
/// Ethernet header.
fn arp_announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    // Hardware type Ethernet, protocol type IPv4, their address lengths.
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    // Operation: request.
    p[6..8].copy_from_slice(&1u16.to_be_bytes());
    // Sender hardware and protocol address.
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address p[18..24] stays zero: "ignored and SHOULD be
    // set to all zeroes" (RFC 5227 section 2.1.1). Target protocol address:
    // the VIP again.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// An unsolicited Neighbor Advertisement of `ip` at `mac` (RFC 4861 sections
/// 4.4 and 7.2.6), without the IPv6 header; the checksum is left zero for the
/// kernel to fill in.
fn neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut na = [0u8; 32];
    // Type and code; the checksum na[2..4] is the kernel's.
    na[0] = ND_NEIGHBOR_ADVERT;
    na[1] = 0;
    // Flags: Router clear (a database host is no router; a set R bit would
    // make receivers treat us as one), Solicited clear (it was not asked for;
    // receivers drop S to a multicast destination, RFC 4861 section 7.1.2),
    // Override set so an existing cache entry takes the new address.
    na[4] = 0x20;
    // Target address, then the Target Link-Layer Address option: type 2,
    // length 1 (in units of 8 octets), our MAC.
    na[8..24].copy_from_slice(&ip.octets());
    na[24] = 2;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac);
    na
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];

    #[test]
    fn arp_announcement_is_a_request_for_the_vip_from_the_vip() {
        let vip = Ipv4Addr::new(198, 51, 100, 100);
        let p = arp_announcement(MAC, vip);
        assert_eq!(
            p,
            [
                0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, 6, 4, request
                2, 0, 0, 0, 0, 0x11, 198, 51, 100, 100, // sender
                0, 0, 0, 0, 0, 0, 198, 51, 100, 100, // target
            ]
        );
    }

    #[test]
    fn neighbour_advertisement_has_the_fields_of_rfc_4861() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let na = neighbour_advertisement(MAC, vip);
        assert_eq!((na[0], na[1]), (136, 0), "type and code");
        assert_eq!(&na[2..4], &[0, 0], "checksum left to the kernel");
        assert_eq!(&na[4..8], &[0b0010_0000, 0, 0, 0], "R=0 S=0 O=1");
        assert_eq!(&na[8..24], &vip.octets(), "target");
        assert_eq!(&na[24..32], &[2, 1, 2, 0, 0, 0, 0, 0x11], "TLLA option");
    }
}
