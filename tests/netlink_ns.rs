//! The netlink and announce modules against a real kernel, inside network
//! namespaces made for each test; every effect is checked independently with
//! `ip -j` (addresses on the interface, a peer's neighbour cache).
//!
//! Addresses: 198.51.100.0/24 and 2001:db8::/32 only (docs/design.md, "How it is tested").

mod common;

use std::time::Duration;

use common::netns::{require_root_and_ip, veth, Netns};
use common::wait_for;
use ipnet::IpNet;
use patroni_hook::node::announce::announce;
use patroni_hook::node::netlink::Netlink;

/// How long a peer may take to take in an announcement; it normally takes
/// well under a millisecond.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(3);

fn net(s: &str) -> IpNet {
    s.parse().expect("test address")
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `vip` is on `ifname` and carries the hook's mark (`None`: absent).
async fn marked(nl: &Netlink, ifname: &str, vip: IpNet) -> Option<bool> {
    nl.addresses(ifname)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .find(|p| p.net.addr() == vip.addr())
        .map(|p| p.marked)
}

/// A namespace with interface `eth1` up (a veth whose peer `eth1p` is in the
/// same namespace, so the link has carrier).
fn node(label: &str) -> Netns {
    let ns = Netns::new(label);
    veth(&ns, "eth1", &ns, "eth1p");
    ns
}

#[test]
fn ipv4_vip_add_is_idempotent_and_del_removes_it() {
    if !require_root_and_ip() {
        return;
    }
    let ns = node("v4");
    let vip = net("198.51.100.100/24");

    let (added, added_again, present) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            nl.add_addr("eth1", vip).await.unwrap(),
            nl.add_addr("eth1", vip).await.unwrap(),
            marked(&nl, "eth1", vip).await,
        )
    });
    assert!(added, "first add reports a change");
    assert!(!added_again, "second add reports no change (EEXIST)");
    assert_eq!(present, Some(true), "addresses() sees the VIP, marked");
    let shown = ns.addrs("eth1", "198.51.100.100");
    assert_eq!(shown.len(), 1, "VIP exactly once: {shown:?}");
    assert_eq!(shown[0]["prefixlen"], 24);
    assert_eq!(shown[0]["broadcast"], "198.51.100.255");
    // The mark an operator sees, and that survives a lost state file.
    assert_eq!(shown[0]["label"], "eth1:phk", "{shown:?}");

    let (removed, removed_again, present) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            nl.del_addr("eth1", vip).await.unwrap(),
            nl.del_addr("eth1", vip).await.unwrap(),
            marked(&nl, "eth1", vip).await,
        )
    });
    assert!(removed, "first delete reports a change");
    assert!(!removed_again, "second delete reports no change");
    assert_eq!(present, None, "addresses() no longer sees the VIP");
    assert_eq!(
        ns.addrs("eth1", "198.51.100.100"),
        Vec::<serde_json::Value>::new()
    );
}

#[test]
fn ipv4_slash_32_vip_gets_no_broadcast() {
    if !require_root_and_ip() {
        return;
    }
    let ns = node("v4h");
    ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        assert!(nl.add_addr("eth1", net("198.51.100.100/32")).await.unwrap());
    });
    let shown = ns.addrs("eth1", "198.51.100.100");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["prefixlen"], 32);
    assert!(shown[0].get("broadcast").is_none(), "{shown:?}");
}

#[test]
fn del_removes_the_vip_whatever_prefix_the_kernel_has() {
    if !require_root_and_ip() {
        return;
    }
    let ns = node("pfx");
    // Put there by hand with other prefixes than the configuration's /24;
    // IPv4 allows one address under several prefixes.
    ns.ip(&["addr", "add", "198.51.100.100/32", "dev", "eth1"]);
    ns.ip(&["addr", "add", "198.51.100.100/25", "dev", "eth1"]);
    assert_eq!(ns.addrs("eth1", "198.51.100.100").len(), 2);
    ns.ip(&["addr", "add", "198.51.100.11/24", "dev", "eth1"]);
    let vip = net("198.51.100.100/24");

    let (present, removed) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            marked(&nl, "eth1", vip).await,
            nl.del_addr("eth1", vip).await.unwrap(),
        )
    });
    assert_eq!(
        present,
        Some(false),
        "found whatever the prefix, and not marked"
    );
    assert!(removed);
    assert_eq!(
        ns.addrs("eth1", "198.51.100.100"),
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(
        ns.addrs("eth1", "198.51.100.11").len(),
        1,
        "the interface's other address stays"
    );
}

#[test]
fn ipv6_vip_is_usable_at_once_not_tentative() {
    if !require_root_and_ip() {
        return;
    }
    // DAD stays enabled in this namespace (the default): only NODAD on the VIP
    // keeps it from being tentative.
    let ns = node("v6");
    let vip = net("2001:db8::100/64");

    let (added, added_again) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            nl.add_addr("eth1", vip).await.unwrap(),
            nl.add_addr("eth1", vip).await.unwrap(),
        )
    });
    let shown = ns.addrs("eth1", "2001:db8::100");
    let mark = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        marked(&nl, "eth1", vip).await
    });
    assert_eq!(
        mark,
        Some(true),
        "the IPv6 VIP carries the address protocol mark"
    );
    assert!(added && !added_again);
    assert_eq!(shown.len(), 1, "VIP exactly once: {shown:?}");
    assert_eq!(shown[0]["prefixlen"], 64);
    assert!(shown[0].get("tentative").is_none(), "tentative: {shown:?}");
    assert_eq!(shown[0]["nodad"], true, "{shown:?}");

    let (removed, removed_again) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            nl.del_addr("eth1", vip).await.unwrap(),
            nl.del_addr("eth1", vip).await.unwrap(),
        )
    });
    assert!(removed && !removed_again);
    assert_eq!(
        ns.addrs("eth1", "2001:db8::100"),
        Vec::<serde_json::Value>::new()
    );
}

#[test]
fn a_missing_interface_is_named_in_the_error() {
    if !require_root_and_ip() {
        return;
    }
    let ns = Netns::new("nodev");
    let vip = net("198.51.100.100/24");
    let errors = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        vec![
            nl.link_index("eth9").await.unwrap_err(),
            nl.link_mac("eth9").await.unwrap_err(),
            nl.add_addr("eth9", vip).await.unwrap_err(),
            nl.del_addr("eth9", vip).await.unwrap_err(),
        ]
    });
    for error in errors {
        assert_eq!(error.to_string(), "interface eth9: no such interface");
        assert_eq!(error.exit_code(), 1);
    }
    let listed = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        nl.addresses("eth9").await.unwrap()
    });
    assert!(listed.is_none(), "no such interface: no addresses");
}

#[test]
fn link_index_and_mac_match_what_ip_shows() {
    if !require_root_and_ip() {
        return;
    }
    let ns = node("link");
    let (index, mac) = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        (
            nl.link_index("eth1").await.unwrap(),
            nl.link_mac("eth1").await.unwrap(),
        )
    });
    let shown = ns.ip_json(&["link", "show", "dev", "eth1"]);
    assert_eq!(u64::from(index), shown[0]["ifindex"].as_u64().unwrap());
    assert_eq!(mac_string(mac), ns.mac("eth1"));
}

#[test]
fn announcing_on_a_down_interface_names_it_and_the_errno() {
    if !require_root_and_ip() {
        return;
    }
    let ns = node("down");
    ns.ip(&["link", "set", "eth1", "down"]);
    let errors = ns.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        let index = nl.link_index("eth1").await.unwrap();
        let mac = nl.link_mac("eth1").await.unwrap();
        ["198.51.100.100", "2001:db8::100"].map(|ip| {
            announce("eth1", index, mac, ip.parse().unwrap(), 3)
                .unwrap_err()
                .to_string()
        })
    });
    assert_eq!(
        errors,
        [
            "announcing 198.51.100.100 on eth1: network is down (ENETDOWN)",
            // No route to ff02::1 through a down interface.
            "announcing 2001:db8::100 on eth1: network is unreachable (ENETUNREACH)",
        ]
    );
}

/// Two namespaces joined by a veth pair, `eth1` in each, with the given
/// addresses; returns (node, peer).
fn node_and_peer(label: &str, node_addr: &str, peer_addr: &str) -> (Netns, Netns) {
    let node = Netns::new(&format!("{label}-node"));
    let peer = Netns::new(&format!("{label}-peer"));
    veth(&node, "eth1", &peer, "eth1");
    // nodad on the test's own IPv6 addresses: nothing here should wait on DAD.
    let nodad: &[&str] = if node_addr.contains(':') {
        &["nodad"]
    } else {
        &[]
    };
    node.ip(&[&["addr", "add", node_addr, "dev", "eth1"][..], nodad].concat());
    peer.ip(&[&["addr", "add", peer_addr, "dev", "eth1"][..], nodad].concat());
    (node, peer)
}

/// Gives the peer a stale neighbour entry for `vip` with a wrong MAC, adds and
/// announces `vip` on the node, and waits until the peer's entry carries the
/// node's MAC. `add` puts the VIP on the node's eth1.
fn announcement_updates_a_stale_neighbour(
    node: &Netns,
    peer: &Netns,
    vip: IpNet,
    add: impl FnOnce(&Netns) + Send,
) {
    const WRONG: &str = "02:00:00:00:00:99";
    let ip = vip.addr().to_string();
    peer.ip(&[
        "neigh", "replace", &ip, "lladdr", WRONG, "dev", "eth1", "nud", "stale",
    ]);
    let node_mac = node.mac("eth1");

    add(node);
    node.run_async(|| async {
        let nl = Netlink::open().await.unwrap();
        // Adding the address alone must not change the peer's entry, or this
        // test could not tell whether the announcement works.
        assert_eq!(peer.neighbour_mac("eth1", &ip).as_deref(), Some(WRONG));
        let index = nl.link_index("eth1").await.unwrap();
        let mac = nl.link_mac("eth1").await.unwrap();
        announce("eth1", index, mac, vip.addr(), 3).unwrap();
    });

    wait_for(
        &format!("the peer's neighbour entry for {ip} to carry the node's MAC {node_mac}"),
        ANNOUNCE_TIMEOUT,
        || peer.neighbour_mac("eth1", &ip).as_deref() == Some(node_mac.as_str()),
    );
}

#[test]
fn gratuitous_arp_updates_a_peers_stale_entry() {
    if !require_root_and_ip() {
        return;
    }
    let (node, peer) = node_and_peer("arp", "198.51.100.11/24", "198.51.100.12/24");
    announcement_updates_a_stale_neighbour(
        &node,
        &peer,
        net("198.51.100.100/24"),
        add_vip(net("198.51.100.100/24")),
    );
}

#[test]
fn unsolicited_neighbour_advertisement_updates_a_peers_stale_entry() {
    if !require_root_and_ip() {
        return;
    }
    let (node, peer) = node_and_peer("na", "2001:db8::11/64", "2001:db8::12/64");
    announcement_updates_a_stale_neighbour(
        &node,
        &peer,
        net("2001:db8::100/64"),
        add_vip(net("2001:db8::100/64")),
    );
}

#[test]
fn neighbour_advertisement_goes_out_while_the_vip_is_still_tentative() {
    if !require_root_and_ip() {
        return;
    }
    // Someone added the VIP by hand, with DAD: it stays tentative for about a
    // second, and announcing must not wait for that nor fail.
    let (node, peer) = node_and_peer("tent", "2001:db8::11/64", "2001:db8::12/64");
    announcement_updates_a_stale_neighbour(&node, &peer, net("2001:db8::100/64"), |node| {
        node.ip(&["addr", "add", "2001:db8::100/64", "dev", "eth1"]);
        let shown = node.addrs("eth1", "2001:db8::100");
        assert_eq!(shown[0]["tentative"], true, "{shown:?}");
    });
}

/// Adds the VIP on the node's eth1 with [`Netlink::add_addr`].
fn add_vip(vip: IpNet) -> impl FnOnce(&Netns) + Send {
    move |node| {
        node.run_async(|| async {
            let nl = Netlink::open().await.unwrap();
            assert!(nl.add_addr("eth1", vip).await.unwrap());
        })
    }
}
