//! The VIP at its edges: what an operator's bad day does to a database node.
//! Each test is a defect that was once reproduced (docs/design.md, "What the
//! hook owns" and "Consul transport"); all of them run in network namespaces
//! against the Consul double or a hostile fake Consul on the node's loopback.

mod common;

use common::fake_consul::{gated, kv_json, FakeConsul, Reply};
use common::hook::{code, Fixture, NODE_V4, NODE_V6, SCOPE, V4, V6};
use common::text;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Defect 1: a changed `floating-ip` once left the old VIP on the node for
/// good (the remembered address was one value, overwritten by the new one).
fn changed_floating_ip_leaves_nothing_behind(old: &str, new: &str, prefix: u8) {
    let Some(f) = Fixture::new(&format!("{old}/{prefix}")) else {
        return;
    };
    f.edit_config(&format!("  address: {old}/{prefix}\n"), "");
    f.set_members();
    f.set_leader("pg1");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{old}/{prefix}").as_bytes());
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(old), 1);

    // The operator moves the floating IP while this node leads.
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{new}/{prefix}").as_bytes());
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(new), 1, "the new VIP is held");
    assert_eq!(f.vip_count(old), 0, "the old VIP went: {}", text(&out));

    // Put the old one back by hand as the old hook would have left it: a
    // leader change must still not leave anything of ours behind.
    f.set_leader("pg2");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(new), 0);
    assert_eq!(f.vip_count(old), 0);
}

#[test]
fn changed_floating_ip_leaves_nothing_behind_ipv4() {
    changed_floating_ip_leaves_nothing_behind(V4, "198.51.100.101", 24);
}

#[test]
fn changed_floating_ip_leaves_nothing_behind_ipv6() {
    changed_floating_ip_leaves_nothing_behind(V6, "2001:db8::101", 64);
}

/// Also to settle: a changed `vip.interface` removes the VIP from the old one.
#[test]
fn changed_interface_moves_the_vip_off_the_old_one() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.count_on("eth1", V4), 1);
    f.edit_config("interface: eth1", "interface: eth2");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.count_on("eth2", V4), 1, "held on the new interface");
    assert_eq!(f.count_on("eth1", V4), 0, "gone from the old interface");
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.count_on("eth2", V4) + f.count_on("eth1", V4), 0);
}

/// Defect 2: a `floating-ip` equal to one of the node's own addresses made a
/// replica delete that address (and cut the node off).
fn own_address_as_floating_ip_is_refused(own: &str, prefix: u8) {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_members();
    let value = format!("{own}/{prefix}");
    f.consul.kv_put(&f.key("floating-ip"), value.as_bytes());
    f.set_leader("pg2");
    for args in [
        &["reconcile"][..],
        &["on_role_change", "replica", SCOPE][..],
        &["on_stop", "replica", SCOPE][..],
    ] {
        let out = f.hook(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains("floating-ip") && err.contains(&value),
            "{args:?}: the message names the key and the value: {err}"
        );
        assert_eq!(f.vip_count(own), 1, "{args:?}: the node kept its address");
    }
    // As the leader: refused too, nothing added or removed.
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(f.vip_count(own), 1);
    assert!(f.holder().is_none(), "no record for a refused VIP");

    // The same address in the config file is a configuration error.
    f.write_config(&value, "");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("vip.address"), "{}", text(&out));
    assert_eq!(f.vip_count(own), 1);
}

#[test]
fn own_address_as_floating_ip_is_refused_ipv4() {
    own_address_as_floating_ip_is_refused(NODE_V4, 24);
}

#[test]
fn own_address_as_floating_ip_is_refused_ipv6() {
    own_address_as_floating_ip_is_refused(NODE_V6, 64);
}

/// Defect 2, the rest: link-local, network and broadcast addresses are no VIP.
#[test]
fn special_addresses_are_no_vip() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    for bad in [
        "198.51.100.0/24",
        "198.51.100.255/24",
        "169.254.10.10/16",
        "fe80::10/64",
    ] {
        f.write_config(bad, "");
        let out = f.hook(&["check-config"]);
        assert_eq!(code(&out), 2, "config {bad}: {}", text(&out));
        assert!(stderr(&out).contains("vip.address"), "{}", text(&out));
    }
    f.write_config(&format!("{V4}/24"), "");
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_leader("pg1");
    for bad in ["198.51.100.255/24", "169.254.10.10/16"] {
        f.consul.kv_put(&f.key("floating-ip"), bad.as_bytes());
        let out = f.hook(&["on_role_change", "primary", SCOPE]);
        assert_eq!(code(&out), 1, "floating-ip {bad}: {}", text(&out));
        assert!(stderr(&out).contains(bad), "{}", text(&out));
        let ip = bad.split('/').next().unwrap();
        assert_eq!(f.vip_count(ip), 0, "{bad} not added");
    }
}

/// Defect 3: a demotion waited behind a reconcile that held the lock across
/// its vip-holder write to a hanging Consul.
#[test]
fn a_demotion_does_not_wait_behind_a_run_stuck_on_a_consul_write() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    // Reads answer at once (this node leads), writes hang.
    let scope_read = kv_json(&[("service/batman/leader", b"pg1", 5)]);
    let fake = FakeConsul::start(f.node_listener(), move |r| {
        if r.method == "GET" {
            Reply::Respond(
                200,
                vec![("X-Consul-Index".into(), "5".into())],
                scope_read.clone(),
            )
        } else {
            Reply::Hang
        }
    });
    let cfg = f.config_variant("hang-put.yml", "timeout: 1s", "timeout: 10s");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&f.consul.url(), &fake.url())
        .replace("deadline: 3s", "deadline: 12s");
    std::fs::write(&cfg, text_cfg).unwrap();
    let mut reconcile = f
        .command(&cfg, &["reconcile"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(
        "the reconcile to add the VIP and send its write",
        Duration::from_secs(5),
        || f.vip_count(V4) == 1 && fake.requests().iter().any(|r| r.method == "PUT"),
    );
    let started = Instant::now();
    let out = f.hook_with(&cfg, &["on_role_change", "demoted", SCOPE]);
    let took = started.elapsed();
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert!(
        reconcile.try_wait().unwrap().is_none(),
        "the reconcile is still stuck on its write"
    );
    // The demotion's own record step hits the hanging Consul too, but only
    // after the VIP is gone; with the lock held across the write it could not
    // even start before the reconcile's 10 s timeout.
    assert!(
        took < Duration::from_secs(9),
        "the demotion took {took:?}: it waited behind the reconcile"
    );
    let _ = reconcile.kill();
    let _ = reconcile.wait();
    assert_eq!(f.vip_count(V4), 0, "nothing put the VIP back");
}

/// Defect 3, the rest: a release that cannot open the lock still removes.
#[test]
fn a_release_without_a_lock_directory_still_removes_the_vip() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    let gone = f.dir.path().join("no-such-dir/hook.lock");
    f.edit_config(
        &f.lock_file().display().to_string(),
        &gone.display().to_string(),
    );
    let out = f.hook(&["on_role_change", "demoted", SCOPE]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert!(
        stderr(&out).contains("no-such-dir"),
        "says why: {}",
        text(&out)
    );
}

/// Defect 3, the rest: a release does not wait for a lock another run holds.
#[test]
fn a_release_does_not_wait_for_a_held_lock() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    // Another process holds the lock and does not let go (a run stopped by a
    // debugger, say).
    let held = f.hold_lock();
    let started = Instant::now();
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    let took = started.elapsed();
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert!(
        took < Duration::from_secs(2),
        "the release took {took:?}: it waited for the lock (deadline 3 s)"
    );
    assert!(stderr(&out).contains("lock"), "says why: {}", text(&out));
    drop(held);
}

/// Defect 4: with `consul.timeout` at or above `deadline`, a promotion against
/// a hanging Consul spent the whole deadline on the fence and never added the VIP.
#[test]
fn a_promotion_against_a_hanging_consul_adds_the_vip_whatever_the_timeout() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let fake = FakeConsul::start(f.node_listener(), |_| Reply::Hang);
    for (deadline, timeout) in [("1s", None), ("2s", Some("2s")), ("3s", Some("10s"))] {
        let mut t = std::fs::read_to_string(&f.config)
            .unwrap()
            .replace(&f.consul.url(), &fake.url())
            .replace("deadline: 3s", &format!("deadline: {deadline}"));
        t = match timeout {
            Some(x) => t.replace("timeout: 1s", &format!("timeout: {x}")),
            None => t.replace("  timeout: 1s\n", ""),
        };
        let cfg = f.dir.path().join("budget.yml");
        std::fs::write(&cfg, t).unwrap();
        let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
        assert_eq!(code(&out), 75, "deadline {deadline}: {}", text(&out));
        assert_eq!(f.vip_count(V4), 1, "deadline {deadline}: trust Patroni");
        let out = f.hook_with(&cfg, &["on_stop", "primary", SCOPE]);
        assert_eq!(f.vip_count(V4), 0, "deadline {deadline}: {}", text(&out));
    }
}

/// Defect 5: a run killed between adding the VIP and remembering it left an
/// address no release could find while Consul was out.
#[test]
fn a_run_killed_right_after_adding_leaves_an_address_a_release_finds() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    // The VIP comes from Consul only, and announcing takes a while (50
    // packets, 1 ms apart), which widens the moment between add and the end.
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.edit_config("gratuitous_arp: 2", "gratuitous_arp: 50");
    f.set_leader("pg1");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    let mut run = f
        .command(&f.config, &["on_role_change", "primary", SCOPE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it the moment the address shows up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.vip_count(V4) == 0 {
        assert!(Instant::now() < deadline, "the VIP never appeared");
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before the VIP appeared"
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = run.wait();
    // Consul is out now: the release must find the address on its own.
    let url = f.consul.url();
    f.edit_config(&url, "http://127.0.0.1:1");
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
}

/// Defect 6: the token followed a redirect to another host.
#[test]
fn redirects_are_not_followed_and_the_token_stays_home() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let elsewhere = FakeConsul::start(f.node_listener(), |_| {
        Reply::Respond(
            200,
            vec![],
            kv_json(&[("service/batman/leader", b"pg1", 1)]),
        )
    });
    let target = elsewhere.url();
    let redirecting = FakeConsul::start(f.node_listener(), move |r| {
        Reply::Respond(
            307,
            vec![("Location".into(), format!("{target}{}", r.path))],
            vec![],
        )
    });
    let cfg = f.config_variant("redirect.yml", &f.consul.url(), &redirecting.url());
    let out = f
        .command(&cfg, &["on_role_change", "primary", SCOPE])
        .env("CONSUL_HTTP_TOKEN", "the-secret-token")
        .output()
        .unwrap();
    assert!(
        elsewhere.requests().is_empty(),
        "a request followed the redirect: {:?}",
        elsewhere.requests()
    );
    assert!(
        redirecting
            .requests()
            .iter()
            .all(|r| r.header("x-consul-token") == Some("the-secret-token")),
        "the token went to the configured agent"
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("redirect"), "{}", text(&out));
    assert!(!stderr(&out).contains("the-secret-token"));
    assert_eq!(f.vip_count(V4), 0, "a redirect is no fence answer");
}

/// Defect 7: 429 (Consul's per-client rate limit) was a hard failure on promotion.
#[test]
fn http_429_is_temporary() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let fake = FakeConsul::start(f.node_listener(), |_| {
        Reply::Respond(
            429,
            vec![],
            b"Your IP is issuing too many concurrent connections".to_vec(),
        )
    });
    let cfg = f.config_variant("429.yml", &f.consul.url(), &fake.url());
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "trust Patroni: VIP added");
    assert!(stderr(&out).contains("429"), "{}", text(&out));
}

/// Peak RSS of a finished child, in KiB (getrusage through wait4).
fn wait_rss(child: std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss)
}

/// Defect 8: an endless answer was read into memory without a bound.
#[test]
fn an_endless_answer_is_cut_at_a_size() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let fake = FakeConsul::start(f.node_listener(), |_| Reply::Endless);
    let cfg = f.config_variant("endless.yml", "timeout: 1s", "timeout: 10s");
    let t = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&f.consul.url(), &fake.url())
        .replace("deadline: 3s", "deadline: 12s");
    std::fs::write(&cfg, t).unwrap();
    let child = f
        .command(&cfg, &["on_role_change", "primary", SCOPE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, rss_kib) = wait_rss(child);
    assert!(
        rss_kib < 128 * 1024,
        "peak RSS {rss_kib} KiB: the answer was not cut (exit {status})"
    );
    // The answer is unusable, not unreachable: no blind trust.
    assert_eq!(status, 1, "exit");
    let out = f.hook_with(&cfg, &["--dry-run", "on_role_change", "primary", SCOPE]);
    assert!(stderr(&out).contains("larger than"), "{}", text(&out));
}

/// Defect 9: a newline in a Consul value forged a log line.
#[test]
fn a_newline_in_a_consul_value_forges_no_log_line() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg2\nERROR forged: VIP stolen by pg9");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    let err = stderr(&out);
    assert!(
        err.lines().all(|l| !l.starts_with("ERROR forged")),
        "a line of its own: {err}"
    );
    assert!(err.contains(r"\nERROR forged"), "escaped in place: {err}");
    assert_eq!(f.vip_count(V4), 0);
    assert_eq!(code(&out), 1, "{}", text(&out));
}

/// Defect 10: absurd durations and a closed stdout panicked (exit 134).
#[test]
fn no_panics_on_absurd_durations_or_a_closed_stdout() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    for (from, to, key) in [
        ("deadline: 3s", "deadline: 300000000000y", "deadline"),
        ("timeout: 1s", "timeout: 300000000000y", "consul.timeout"),
    ] {
        let cfg = f.config_variant("absurd.yml", from, to);
        let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
        assert_eq!(code(&out), 2, "{to}: {}", text(&out));
        assert!(stderr(&out).contains(key), "{}", text(&out));
    }
    f.set_leader("pg1");
    // A closed stdout (not a pipe nobody reads: no descriptor at all).
    for (args, expect) in [
        (&["check-config"][..], 0),
        (&["--dry-run", "on_role_change", "primary", SCOPE][..], 0),
        (&["status"][..], 0),
    ] {
        let mut c = f.command(&f.config, args);
        use std::os::unix::process::CommandExt;
        // SAFETY: close(2) in the child between fork and exec, nothing else.
        unsafe {
            c.pre_exec(|| {
                libc::close(1);
                Ok(())
            });
        }
        let out = c.stderr(Stdio::piped()).output().unwrap();
        assert_eq!(code(&out), expect, "{args:?}: {}", text(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// Also to settle: a relative `lock_file` is a configuration error.
#[test]
fn a_relative_lock_file_is_a_configuration_error() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&f.lock_file().display().to_string(), "run/hook.lock");
    let out = f.hook(&["check-config"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("lock_file"), "{}", text(&out));
}

/// Ownership survives a lost state file: an address the hook added carries
/// its mark, and a release with neither state nor Consul still finds it; an
/// address the hook did not add is never removed by a release without Consul.
#[test]
fn ownership_survives_a_lost_state_file() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_leader("pg1");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    // Someone else's address on the same interface.
    f.node
        .ip(&["addr", "add", "198.51.100.150/24", "dev", "eth1"]);
    for e in std::fs::read_dir(f.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("vip-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let url = f.consul.url();
    f.edit_config(&url, "http://127.0.0.1:1");
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.150"), 1, "not ours: kept");
}

// ---- found by a hostile review of the redesign ---------------------------

/// The node's own address is never taken for the VIP and removed, even when
/// the members' URLs use host names (so no member address can be compared).
#[test]
fn own_address_is_kept_when_members_use_host_names() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_members_named();
    for (own, prefix) in [(NODE_V4, 24), (NODE_V6, 64)] {
        f.consul
            .kv_put(&f.key("floating-ip"), format!("{own}/{prefix}").as_bytes());
        f.set_leader("pg2");
        for args in [
            &["on_role_change", "replica", SCOPE][..],
            &["reconcile"][..],
        ] {
            let out = f.hook(args);
            assert_eq!(f.vip_count(own), 1, "{args:?}: {}", text(&out));
        }
        // As the leader: not adopted, so a corrected floating-ip takes nothing.
        f.set_leader("pg1");
        let out = f.hook(&["on_role_change", "primary", SCOPE]);
        assert_eq!(f.vip_count(own), 1, "{}", text(&out));
        f.consul
            .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
        // (A callback: reconcile cannot ask this Patroni, whose api_url host
        // does not resolve, whether it is primary, and adds nothing.)
        let out = f.hook(&["on_role_change", "primary", SCOPE]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(f.vip_count(V4), 1);
        assert_eq!(f.vip_count(own), 1, "own address kept: {}", text(&out));
        let out = f.hook(&["on_stop", "primary", SCOPE]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(f.vip_count(V4), 0);
        assert_eq!(f.vip_count(own), 1);
    }
}

/// A state file that names the node's own address (an old version's memory,
/// or a hand edit) removes nothing the hook did not add.
#[test]
fn a_state_file_naming_the_nodes_own_address_removes_nothing() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_members();
    std::fs::write(
        f.dir.path().join("vip-batman.owned"),
        format!("{NODE_V4}/24 eth1\n"),
    )
    .unwrap();
    std::fs::write(
        f.dir.path().join("vip-batman.addr"),
        format!("{NODE_V6}/64\n"),
    )
    .unwrap();
    // Consul out of reach: nothing it could check, nothing removed.
    let url = f.consul.url();
    f.edit_config(&url, "http://127.0.0.1:1");
    let out = f.hook(&["on_stop", "replica", SCOPE]);
    assert_eq!(f.vip_count(NODE_V4), 1, "{}", text(&out));
    assert_eq!(f.vip_count(NODE_V6), 1, "{}", text(&out));
    // Consul back: the members name these addresses; forgotten, not removed.
    f.edit_config("http://127.0.0.1:1", &url);
    f.set_leader("pg2");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(f.vip_count(NODE_V4), 1, "{}", text(&out));
    assert_eq!(f.vip_count(NODE_V6), 1, "{}", text(&out));
}

/// Two clusters' VIPs on one host: one scope's callbacks never remove the
/// other scope's VIP.
#[test]
fn one_scope_never_removes_another_scopes_vip() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.edit_config(&format!("scope: {SCOPE}\n"), "");
    f.consul
        .kv_put("service/beta/floating-ip", b"198.51.100.101/24");
    f.consul.kv_put("service/beta/leader", b"pg1");
    f.consul
        .kv_put("service/alpha/floating-ip", b"198.51.100.102/24");
    f.consul.kv_put("service/alpha/leader", b"pg2");
    let out = f.hook(&["on_start", "primary", "beta"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 1);
    let out = f.hook(&["on_role_change", "replica", "alpha"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 1, "{}", text(&out));
    f.consul.kv_put("service/alpha/leader", b"pg1");
    let out = f.hook(&["on_role_change", "primary", "alpha"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count("198.51.100.102"), 1);
    assert_eq!(f.vip_count("198.51.100.101"), 1, "{}", text(&out));
}

/// Whether strace (which delays one system call of a run, to hold it at a
/// precise moment) is here; LAB rules as for every prerequisite.
fn have_strace() -> bool {
    common::require_all(&[(
        "strace",
        std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_ok(),
    )])
}

/// A hold that took the lock before a release arrived, and was then held up
/// (descheduled, stopped), does not put the VIP back after the release.
#[test]
fn a_stalled_hold_does_not_put_the_vip_back_after_a_release() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    if !have_strace() {
        return;
    }
    f.set_leader("pg1");
    // A reconcile that reads "leader pg1", then stalls 2 s right after flock.
    let mut stalled = std::process::Command::new("strace");
    stalled
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=flock"])
        .args(["-e", "inject=flock:delay_exit=2000000"])
        .args(["ip", "netns", "exec", f.node.name()])
        .arg(common::hook::bin())
        .arg("--config")
        .arg(&f.config)
        .arg("reconcile")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let run = stalled.spawn().unwrap();
    common::wait_for(
        "the reconcile to hold the lock",
        Duration::from_secs(5),
        || {
            let l = std::fs::OpenOptions::new().read(true).open(f.lock_file());
            match l {
                Ok(file) => {
                    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                        .is_err()
                }
                Err(_) => false,
            }
        },
    );
    f.set_leader("pg2");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    let done = run.wait_with_output().unwrap();
    assert_eq!(
        f.vip_count(V4),
        0,
        "the stalled hold put the VIP back: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// A reconcile with an old view (another leader) that finds the lock held
/// does not remove the VIP a newer promotion added.
#[test]
fn an_older_release_without_the_lock_does_not_undo_a_newer_promotion() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let old_view = kv_json(&[("service/batman/leader", b"pg2", 5)]);
    let (fake, gate) = gated(f.node_listener(), old_view);
    let cfg = f.config_variant("old.yml", &f.consul.url(), &fake.url());
    let reconcile = f
        .command(&cfg, &["reconcile"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(
        "the reconcile to ask Consul",
        Duration::from_secs(5),
        || !fake.requests().is_empty(),
    );
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    // The lock is held (by a stuck run, say) when the old view arrives.
    let held = f.hold_lock();
    gate.open();
    let done = reconcile.wait_with_output().unwrap();
    drop(held);
    assert_eq!(
        f.vip_count(V4),
        1,
        "the older reconcile removed the newer promotion's VIP: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// A reconcile that decides to change nothing (no leader key) does not
/// cancel an older promotion still waiting for its fence.
#[test]
fn a_reconcile_that_keeps_does_not_cancel_an_older_promotion() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let fence = kv_json(&[("service/batman/leader", b"pg1", 5)]);
    let (fake, gate) = gated(f.node_listener(), fence);
    let cfg = f.config_variant("slow.yml", &f.consul.url(), &fake.url());
    let promotion = f
        .command(&cfg, &["on_role_change", "primary", SCOPE])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(
        "the promotion to ask Consul",
        Duration::from_secs(5),
        || !fake.requests().is_empty(),
    );
    // The double has no leader key: mid-failover, keep.
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    gate.open();
    let done = promotion.wait_with_output().unwrap();
    assert_eq!(
        f.vip_count(V4),
        1,
        "the promotion stood down: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// A member whose conn_url names the VIP (stale, or a lying Consul) does not
/// keep the VIP the hook added on a demoted node; the message names the key.
#[test]
fn a_member_claiming_the_vip_does_not_keep_it_on_a_demoted_node() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    f.consul.kv_put(
        &f.key("members/pg3"),
        format!(
            r#"{{"conn_url":"postgres://{V4}:5432/postgres","api_url":"http://{V4}:8008/patroni"}}"#
        )
        .as_bytes(),
    );
    f.set_leader("pg2");
    let out = f.hook(&["reconcile"]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("pg3"), "{}", text(&out));
}

/// A wrong `vip.interface` (a typo, a renamed link) does not stop a release
/// from removing what the hook added where it added it.
#[test]
fn a_release_with_a_missing_interface_still_removes_what_was_added() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    f.edit_config("interface: eth1", "interface: eth9");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(f.vip_count(V4), 0, "{}", text(&out));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("eth9"), "{}", text(&out));
}

/// A state file with bytes that are not text does not stop a promotion.
#[test]
fn a_garbled_state_file_does_not_stop_a_promotion() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    std::fs::write(
        f.dir.path().join("vip-batman.owned"),
        b"198.51.100.101/24 eth1 added\n# by ops \xe9t\xe9\n",
    )
    .unwrap();
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
}

/// A consul.url the HTTP client cannot use is a configuration error.
#[test]
fn an_unusable_consul_url_is_a_configuration_error() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    for bad in ["http://127.0.0.1:99999", "http://[::1:8500"] {
        let cfg = f.config_variant("url.yml", &f.consul.url(), bad);
        let out = f.hook_with(&cfg, &["check-config"]);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out));
        assert!(stderr(&out).contains("consul.url"), "{}", text(&out));
    }
}

/// A VIP that became the primary address of its subnet (the node's own
/// address re-added after it, promote_secondaries=0 as in this namespace) is
/// not removed, since the kernel would take the node's address with it.
#[test]
fn removing_the_vip_never_takes_the_nodes_address_with_it() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    // The node's own address is re-added (a network reconfigure): the VIP is
    // promoted to primary of the subnet and the node's address becomes its
    // secondary.
    f.node.sysctl("net.ipv4.conf.eth1.promote_secondaries", "1");
    f.node
        .ip(&["addr", "del", &format!("{NODE_V4}/24"), "dev", "eth1"]);
    f.node
        .ip(&["addr", "add", &format!("{NODE_V4}/24"), "dev", "eth1"]);
    f.node.sysctl("net.ipv4.conf.all.promote_secondaries", "0");
    f.node.sysctl("net.ipv4.conf.eth1.promote_secondaries", "0");
    assert_eq!(f.vip_count(V4), 1);
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(f.vip_count(NODE_V4), 1, "{}", text(&out));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).contains("promote_secondaries"),
        "{}",
        text(&out)
    );
}

/// An address the host has on another interface is no VIP.
#[test]
fn an_address_of_another_interface_is_no_vip() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.node
        .ip(&["addr", "add", "198.51.100.21/24", "dev", "eth2"]);
    f.set_leader("pg1");
    f.write_config("198.51.100.21/24", "");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(f.count_on("eth1", "198.51.100.21"), 0);
    assert_eq!(f.count_on("eth2", "198.51.100.21"), 1);
}

/// `status` prints values from Consul escaped.
#[test]
fn status_escapes_values_from_consul() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.consul.kv_put(
        &f.key("vip-holder"),
        b"{\"member\":\"pg2\\nleader: pg9\",\"address\":\"x\",\"interface\":\"eth1\\u001b[31m\",\"since\":\"s\"}",
    );
    let out = f.hook(&["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout
            .lines()
            .any(|l| l.trim_start().starts_with("leader: pg9")),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "{stdout}");
}

/// A replica without a floating-ip in Consul has nothing to do: exit 0.
#[test]
fn a_replica_without_a_floating_ip_converges_quietly() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_leader("pg2");
    for args in [
        &["on_role_change", "replica", SCOPE][..],
        &["reconcile"][..],
    ] {
        let out = f.hook(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
    }
}

/// Nothing at all under the scope's prefix says so, not "mid-failover".
#[test]
fn an_empty_scope_says_to_check_the_namespace() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert!(stderr(&out).contains("consul.namespace"), "{}", text(&out));
}

/// Configuration that means something else than it says is refused.
#[test]
fn configuration_that_says_nothing_is_refused() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let text_ok = std::fs::read_to_string(&f.config).unwrap();
    let vip_at = text_ok.find("vip:\n").unwrap();
    for (name, body, key) in [
        ("null vip", format!("{}vip:\n", &text_ok[..vip_at]), "vip"),
        ("empty file", String::new(), "empty"),
        (
            "1ns timeout",
            text_ok.replace("timeout: 1s", "timeout: 1ns"),
            "consul.timeout",
        ),
    ] {
        std::fs::write(&f.config, body).unwrap();
        let out = f.hook(&["check-config"]);
        assert_eq!(code(&out), 2, "{name}: {}", text(&out));
        assert!(stderr(&out).contains(key), "{name}: {}", text(&out));
    }
    std::fs::write(&f.config, &text_ok).unwrap();
    f.edit_config(
        &f.lock_file().display().to_string(),
        &f.dir.path().display().to_string(),
    );
    let out = f.hook(&["check-config"]);
    assert_eq!(code(&out), 2, "lock_file a directory: {}", text(&out));
    assert!(stderr(&out).contains("lock_file"), "{}", text(&out));
}

/// A run killed while writing a state file leaves a temp file; the next
/// write sweeps it.
#[test]
fn temp_files_of_killed_runs_are_swept() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    // A pid that is not running (pid_max is far below it).
    let litter = f.dir.path().join("vip-batman.tmp4194999");
    std::fs::write(&litter, "198.51.100.9/24 eth1\n").unwrap();
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!litter.exists(), "{}", text(&out));
}

/// Reconcile on a node the leader key names adds the VIP only once that
/// node's Patroni answers as primary: the key moves at lock time, before the
/// promotion and maybe before the old primary's release ran (a switchover
/// put the VIP on two nodes for a moment when reconcile added it then).
#[test]
fn reconcile_adds_the_vip_only_once_patroni_here_is_primary() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    let primary = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api = common::fake_consul::patroni_api(f.node_listener(), primary.clone());
    f.consul.kv_put(
        &f.key("members/pg1"),
        format!(
            r#"{{"conn_url":"postgres://{NODE_V4}:5432/postgres","api_url":"{}/patroni"}}"#,
            api.url()
        )
        .as_bytes(),
    );
    f.set_leader("pg1");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(
        f.vip_count(V4),
        0,
        "not before the promotion: {}",
        text(&out)
    );
    assert!(api.requests().iter().any(|r| r.path == "/patroni"));
    primary.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "{}", text(&out));
    // The promotion callback is Patroni itself: it does not ask.
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    primary.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
}
