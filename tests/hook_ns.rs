//! The Patroni callbacks end to end, in network namespaces, against the Consul
//! double, and for the tests marked `every_dcs!` also a real Consul with ACLs
//! and TLS and a real etcd 3.4 with mutual TLS and auth: the VIP on the interface (checked with `ip -j addr`), the
//! `vip-holder` record, the peer's neighbour table (proof the announcement went
//! out), the fence, the deadline, serialisation and SIGKILL.

#[macro_use]
mod common;

use common::hook::{bin, code, Backend, Fixture, SCOPE, V4, V6};
use common::{pg, require_all, text};
use consul_double::{Options, Server};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn primary_adds_announces_and_records_ipv4(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    // A stale neighbour entry on the peer with a wrong MAC: only an announcement
    // from the node can correct it.
    f.stale_peer_entry(V4);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "VIP on node eth1");
    let h = f.holder().expect("vip-holder written");
    assert_eq!(h["member"], "pg1");
    assert_eq!(h["address"], format!("{V4}/24"));
    assert_eq!(h["interface"], "eth1");
    assert!(h["since"].as_str().unwrap().ends_with('Z'), "{h}");
    f.wait_announced(V4, "the peer's neighbour entry to carry the node's MAC");

    // Idempotent: same callback again changes nothing and exits 0.
    let idx = f.holder_index();
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    assert_eq!(
        f.holder_index(),
        idx,
        "second run must not rewrite vip-holder"
    );
}
every_dcs!(primary_adds_announces_and_records_ipv4);

fn primary_adds_announces_and_records_ipv6(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V6}/64")) else {
        return;
    };
    f.set_leader("pg1");
    f.stale_peer_entry(V6);
    let out = f.hook(&["on_start", "master", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let addrs = f.node.addrs("eth1", V6);
    assert_eq!(addrs.len(), 1, "VIP on node eth1");
    assert!(
        addrs[0].get("tentative").is_none(),
        "usable at once (no DAD): {}",
        addrs[0]
    );
    f.wait_announced(
        V6,
        "the peer's IPv6 neighbour entry to carry the node's MAC",
    );
    assert_eq!(f.holder().unwrap()["address"], format!("{V6}/64"));
}
every_dcs!(primary_adds_announces_and_records_ipv6);

fn replica_stop_and_start_replica_remove_the_vip_and_only_our_record(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    for release in [
        &["on_role_change", "replica", SCOPE][..],
        &["on_stop", "primary", SCOPE][..],
        &["on_start", "replica", SCOPE][..],
        &["on_role_change", "demoted", SCOPE][..],
    ] {
        let out = f.hook(&["on_role_change", "primary", SCOPE]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(f.vip_count(V4), 1);
        let out = f.hook(release);
        assert_eq!(code(&out), 0, "{release:?}: {}", text(&out));
        assert_eq!(f.vip_count(V4), 0, "{release:?} must remove the VIP");
        assert!(f.holder().is_none(), "{release:?} must delete our record");
        // Again: nothing to do, still 0.
        let out = f.hook(release);
        assert_eq!(code(&out), 0, "{release:?} repeated: {}", text(&out));
    }
    // A record naming another node is left alone.
    let theirs = br#"{"member":"pg2","address":"198.51.100.100/24","interface":"eth1","since":"2026-01-01T00:00:00Z"}"#;
    f.consul.kv_put(&f.key("vip-holder"), theirs);
    let out = f.hook(&["on_stop", "replica", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.holder().unwrap()["member"], "pg2");
}
every_dcs!(replica_stop_and_start_replica_remove_the_vip_and_only_our_record);

fn fence_refuses_when_another_member_holds_the_leader_key(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg2");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg2"),
        "message names the holder: {}",
        text(&out)
    );
    assert_eq!(f.vip_count(V4), 0, "no VIP without the leader lock");
    assert!(f.holder().is_none());
}
every_dcs!(fence_refuses_when_another_member_holds_the_leader_key);

fn no_leader_key_changes_nothing_and_exits_75(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
}
every_dcs!(no_leader_key_changes_nothing_and_exits_75);

fn consul_unreachable_adds_the_vip_and_exits_75_within_the_deadline(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    // A listener in the node namespace that accepts and never answers: the
    // worst Consul, the one that would hang a run without timeouts.
    let hang = f
        .node
        .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let port = hang.local_addr().unwrap().port();
    let cfg = f.config_variant(
        "hang.yml",
        &f.consul.url(),
        &f.consul.endpoint(&format!("127.0.0.1:{port}")),
    );
    let started = Instant::now();
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    let took = started.elapsed();
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "trust Patroni: VIP added");
    // deadline is 3 s in the fixture; the bound is the contract, with slack
    // for process start on a loaded machine.
    assert!(
        took < Duration::from_secs(5),
        "run took {took:?}, deadline 3s"
    );

    // Refused connections (the double stopped): same outcome, and quickly.
    let Fixture { consul, .. } = &f;
    let url = consul.url();
    drop(hang);
    let stopped_cfg = f.config_variant(
        "stopped.yml",
        &url,
        &consul.endpoint(&format!("127.0.0.1:{port}")),
    );
    let out = f.hook_with(&stopped_cfg, &["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 75, "removal done, record not: {}", text(&out));
    assert_eq!(f.vip_count(V4), 0, "removal never waits on Consul");
}
every_dcs!(consul_unreachable_adds_the_vip_and_exits_75_within_the_deadline);

fn concurrent_runs_end_in_the_state_of_the_last_one(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let roles = ["primary", "replica"];
    let children: Vec<_> = (0..20)
        .map(|i| {
            let role = roles[(i * 7 + i / 3) % 2];
            let child = f
                .command(&f.config, &["on_role_change", role, SCOPE])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (role, child)
        })
        .collect();
    // Each run logs its decision after taking the lock; the latest decision
    // line is the last run, and the final state must be its state.
    let mut last: Option<(String, &str)> = None;
    for (role, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{role}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        // A run that started before another one that already applied its
        // decision stands down without deciding.
        let Some(line) = err.lines().find(|l| l.contains("decision:")) else {
            assert!(err.contains("its decision stands"), "{role}: {err}");
            continue;
        };
        let stamp = line.split_whitespace().next().unwrap().to_string();
        if last.as_ref().is_none_or(|(s, _)| stamp > *s) {
            last = Some((stamp, role));
        }
    }
    let (_, last_role) = last.unwrap();
    let expect = usize::from(last_role == "primary");
    assert_eq!(f.vip_count(V4), expect, "last run was {last_role}");
    assert_eq!(f.holder().is_some(), last_role == "primary");
}
every_dcs!(concurrent_runs_end_in_the_state_of_the_last_one);

fn a_run_killed_midway_leaves_a_state_the_next_run_converges_from(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let spawn = |role: &str| {
        f.command(&f.config, &["on_role_change", role, SCOPE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Kill at a spread of moments through a run (process start, lock, fence
    // read, address change, record write).
    for (i, delay_us) in [0u64, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 20000]
        .into_iter()
        .enumerate()
    {
        let role = if i % 2 == 0 { "primary" } else { "replica" };
        let mut child = spawn(role);
        std::thread::sleep(Duration::from_micros(delay_us)); // the kill moment itself
                                                             // `ip netns exec` execs the hook, so this pid is the hook's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        // The next run converges: lock free, VIP and record as the role says.
        for role in ["primary", "replica"] {
            let out = f.hook(&["on_role_change", role, SCOPE]);
            assert_eq!(
                code(&out),
                0,
                "after kill at {delay_us}us, {role}: {}",
                text(&out)
            );
            let holds = role == "primary";
            assert_eq!(
                f.vip_count(V4),
                usize::from(holds),
                "after kill at {delay_us}us, {role}"
            );
            assert_eq!(
                f.holder().is_some(),
                holds,
                "after kill at {delay_us}us, {role}"
            );
        }
    }
}
every_dcs!(a_run_killed_midway_leaves_a_state_the_next_run_converges_from);

fn floating_ip_from_consul_and_removal_without_consul(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    // No vip.address: the address comes from <ns>/<scope>/floating-ip.
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_leader("pg1");
    f.consul.kv_put(&f.key("floating-ip"), b"198.51.100.101/24");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 1);
    // A bad floating-ip value is refused with a message naming the key.
    f.consul.kv_put(&f.key("floating-ip"), b"not-an-address");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("floating-ip"),
        "{}",
        text(&out)
    );
    // Consul gone: the remembered address is removed all the same.
    let url = f.consul.url();
    f.edit_config(&url, &f.consul.endpoint("127.0.0.1:1"));
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 0);
}
every_dcs!(floating_ip_from_consul_and_removal_without_consul);

fn dry_run_prints_steps_and_changes_nothing(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let out = f.hook(&["--dry-run", "on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("would add {V4}/24 to eth1")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "would write {}",
            f.consul.shown_key("service/batman/vip-holder")
        )),
        "{stdout}"
    );
    assert_eq!(f.vip_count(V4), 0);
    assert!(f.holder().is_none());
}
every_dcs!(dry_run_prints_steps_and_changes_nothing);

fn missing_interface_is_a_clear_error(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    f.edit_config("interface: eth1", "interface: eth9");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eth9") && err.contains("no such interface"),
        "{err}"
    );
}
every_dcs!(missing_interface_is_a_clear_error);

fn status_shows_the_holder_and_the_vip(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    let out = f.hook(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(v["leader"], "pg1");
    assert_eq!(v["vip"]["present"], true);
    assert_eq!(v["vip_holder"]["member"], "pg1");
}

every_dcs!(status_shows_the_holder_and_the_vip);

/// Patroni runs callbacks as its own user: the hook must work as `postgres`
/// with file capabilities only (no root), and say which capability is missing
/// when it has none.
fn runs_as_postgres_with_file_capabilities(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    if !require_all(&[
        ("the postgres user", pg::have_postgres_user()),
        (
            "setcap (libcap2-bin)",
            Command::new("setcap").arg("-v").output().is_ok(),
        ),
        (
            "runuser (util-linux)",
            Command::new("runuser").arg("--help").output().is_ok(),
        ),
    ]) {
        return;
    }
    f.set_leader("pg1");
    // A copy the postgres user can reach, with capabilities on the file.
    let d = f.dir.path();
    let exe = d.join("patroni-hook");
    std::fs::copy(bin(), &exe).unwrap();
    let lockdir = d.join("run");
    std::fs::create_dir(&lockdir).unwrap();
    pg::chown_postgres(&lockdir);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&f.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.edit_config(
        &format!("{}", d.join("hook.lock").display()),
        &format!("{}", lockdir.join("hook.lock").display()),
    );
    let as_postgres = |args: &[&str]| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                f.node.name(),
                "runuser",
                "-u",
                "postgres",
                "--",
            ])
            .arg(&exe)
            .arg("--config")
            .arg(&f.config)
            .args(args)
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // An operator ran the documented manual command as root first: the lock
    // and state files it created must not lock the Patroni user out.
    let out = f.hook(&["role-change", "replica"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Without capabilities: refused by the kernel, and the message says what is needed.
    let out = as_postgres(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"),
        "{}",
        text(&out)
    );
    assert_eq!(f.vip_count(V4), 0);

    let st = Command::new("setcap")
        .arg("cap_net_admin,cap_net_raw+ep")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "setcap");
    f.stale_peer_entry(V4);
    let out = as_postgres(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    assert_eq!(f.holder().unwrap()["member"], "pg1");
    f.wait_announced(V4, "the announcement sent by the postgres user");
    let out = as_postgres(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
    assert!(f.holder().is_none());
}

every_dcs!(runs_as_postgres_with_file_capabilities);

/// The safety net on a database node: `reconcile` converges the VIP to the
/// leader key when no callback ran (Patroni killed, its PostgreSQL running on).
fn reconcile_on_a_database_node_follows_the_leader_key(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    assert_eq!(f.vip_count(V4), 1);

    // Another member took the lock and no callback ran here.
    f.set_leader("pg2");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        f.vip_count(V4),
        0,
        "VIP removed when the leader key names another member"
    );
    assert!(f.holder().is_none(), "our record dropped");

    // No leader key: change nothing, exit 75.
    f.node
        .ip(&["addr", "add", &format!("{V4}/24"), "dev", "eth1"]);
    f.consul.kv_delete(&f.key("leader"));
    let out = f.hook(&["--reconcile"]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "nothing changed without a leader");
    f.node
        .ip(&["addr", "del", &format!("{V4}/24"), "dev", "eth1"]);

    // The leader key names this node: added and recorded.
    f.set_leader("pg1");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    assert_eq!(f.holder().unwrap()["member"], "pg1");
    // And once converged, a reconcile changes nothing.
    let idx = f.holder_index();
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.holder_index(), idx);
}

every_dcs!(reconcile_on_a_database_node_follows_the_leader_key);

/// A VIP this node holds (even one put there by other tooling) is remembered,
/// so removal works with Consul unreachable, and a release removes the old
/// address too when Consul's floating-ip changed meanwhile.
fn release_without_consul_removes_every_address_this_node_held(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_leader("pg1");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    // Put there by the glue this tool replaces, not by the hook.
    f.node
        .ip(&["addr", "add", &format!("{V4}/24"), "dev", "eth1"]);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The operator moves the floating IP; the node takes the new one too.
    f.consul.kv_put(&f.key("floating-ip"), b"198.51.100.101/24");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 1);
    // Consul gone, then demoted: both addresses removed, exit 75 for the record.
    let url = f.consul.url();
    let gone = f.consul.endpoint("127.0.0.1:1");
    f.edit_config(&url, &gone);
    let out = f.hook(&["on_role_change", "demoted", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 0, "{}", text(&out));
    // The first address was remembered before the floating-ip moved; the
    // remembered one is the last held, so reconcile with Consul back cleans up.
    f.edit_config(&gone, &url);
    f.set_leader("pg2");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 0);
}

every_dcs!(release_without_consul_removes_every_address_this_node_held);

/// A Consul that answers but refuses (403: a token it does not know) is not
/// "unreachable": the fence does not fall back to trusting Patroni, and the
/// VIP is not added.

#[test]
fn consul_refusing_the_token_does_not_open_the_fence() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let listener = f
        .node
        .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let acl = Server::start_on(
        listener,
        Options {
            acl_token: Some("the-right-token".into()),
            ..Options::default()
        },
    )
    .unwrap();
    acl.kv_put("service/batman/leader", b"pg1");
    let cfg = f.config_variant("acl.yml", &f.consul.url(), &acl.url());
    let out = f
        .command(&cfg, &["on_role_change", "primary", SCOPE])
        .env("CONSUL_HTTP_TOKEN", "a-wrong-token")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403"), "{}", text(&out));
    assert!(!err.contains("a-wrong-token"), "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0, "no VIP without a fence answer");
}

/// An unreadable token file stops Consul calls, not the removal of the VIP.
fn unreadable_token_file_still_lets_a_release_remove_the_vip(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    // The token file named, or (real Consul) the one in use, is gone.
    let text_cfg: String = std::fs::read_to_string(&f.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("  token_file: "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "  timeout: 1s\n",
            "  timeout: 1s\n  token_file: /nonexistent/consul.token\n",
        );
    std::fs::write(&f.config, text_cfg).unwrap();
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("consul.token_file"),
        "{}",
        text(&out)
    );
    assert_eq!(
        f.vip_count(V4),
        0,
        "removed although Consul could not be called"
    );
    // check-config reports the file.
    let out = f.hook(&["check-config"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

both!(unreadable_token_file_still_lets_a_release_remove_the_vip);

/// A reconcile waiting on an unresponsive Consul does not hold the lock, so a
/// demotion callback is not kept waiting behind it.
fn a_reconcile_waiting_on_consul_does_not_delay_a_demotion(b: Backend) {
    let Some(f) = Fixture::on(b, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    let hang = f
        .node
        .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let cfg = f.config_variant(
        "hang.yml",
        &f.consul.url(),
        &f.consul.endpoint(&hang.local_addr().unwrap().to_string()),
    );
    let mut reconcile = f
        .command(&cfg, &["reconcile"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the reconcile is connected to the silent Consul.
    let (conn, _) = hang.accept().expect("reconcile connects to Consul");
    let out = f.hook(&["on_role_change", "demoted", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
    assert!(
        reconcile.try_wait().unwrap().is_none(),
        "the demotion finished while the reconcile was still waiting on Consul"
    );
    drop(conn);
    let done = reconcile.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    // It saw that a callback ran meanwhile and left the callback's decision
    // alone (0), or its Consul read failed (75); either way the VIP stays gone.
    assert!(matches!(done.status.code(), Some(0 | 75)), "{err}");
    assert_eq!(
        f.vip_count(V4),
        0,
        "the reconcile did not undo the demotion"
    );
}

every_dcs!(a_reconcile_waiting_on_consul_does_not_delay_a_demotion);

/// Patroni runs before_stop right before it stops PostgreSQL, also when it
/// demotes a primary that lost Consul. That stop can hang for as long as a
/// partition lasts (a fast shutdown waits for its WAL senders, which wait for
/// standbys it cannot reach), and on_stop runs only after it, when another
/// node may already hold the VIP. So before-stop removes the VIP first, from
/// what this node owns, before it asks Consul for anything (found by the
/// lab's fault matrix: an isolated primary kept the VIP for the whole
/// partition).

#[test]
fn before_stop_removes_the_vip_before_it_asks_consul() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    assert_eq!(f.vip_count(V4), 1);
    // A Consul that accepts and never answers.
    let hang = f.node_listener();
    hang.set_nonblocking(true).unwrap();
    let cfg = f.config_variant(
        "hang.yml",
        &f.consul.url(),
        &format!("http://{}", hang.local_addr().unwrap()),
    );
    let before_stop = f
        .command(&cfg, &["before-stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let conn = common::wait_for_some(
        "before-stop to ask Consul for the pause",
        Duration::from_secs(10),
        || hang.accept().ok(),
    );
    assert_eq!(
        f.vip_count(V4),
        0,
        "the VIP must be gone before before-stop waits on Consul"
    );
    drop(conn);
    let done = before_stop.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(75), "no pause confirmed: {err}");
    assert_eq!(f.vip_count(V4), 0, "{err}");
    // The record is on_stop's to delete, with Consul.
    assert_eq!(f.holder().expect("vip-holder")["member"], "pg1");
}
