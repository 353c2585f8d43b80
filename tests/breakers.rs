//! Regression tests for defects found by attacking the Consul ACL handling,
//! `check-config --online` and `vip-<scope>.seen` the way a bad day would:
//! a Consul (or something in front of it) that echoes the token, a scope
//! read that answers and a probe that does not, a remembered floating-ip
//! that a member took over, a state file nobody validated, one cluster's
//! missing permission on a PgBouncer host that serves several. Each test's
//! comment tells what the hook did before the fix; the test holds what it
//! does now.

mod common;

use common::fake_consul::{FakeConsul, Reply};
use common::hook::{code, Backend, Fixture, SCOPE, V4};
use common::text;

const SECRET: &str = "0b4d5e61-7a8f-4c2d-9e3b-5f6a7b8c9d0e";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A config of `f` (on the double) that talks to `fake` with the token
/// SECRET from a token file.
fn config_for_fake(f: &Fixture, name: &str, fake: &FakeConsul) -> std::path::PathBuf {
    let token_file = f.dir.path().join("secret.token");
    std::fs::write(&token_file, format!("{SECRET}\n")).unwrap();
    let with_fake = f.config_variant(name, &f.consul.url(), &fake.url());
    let text = std::fs::read_to_string(&with_fake).unwrap();
    std::fs::write(
        &with_fake,
        text.replace(
            "  timeout: 1s\n",
            &format!("  timeout: 1s\n  token_file: {}\n", token_file.display()),
        ),
    )
    .unwrap();
    with_fake
}

/// Something answering for Consul (a proxy, a misbehaving agent) echoes
/// the token it was sent in its error body: 403, 500, 400. The token must
/// never appear in any output (docs/design.md, Consul transport), whatever
/// the answer's body says.
#[test]
fn a_body_that_echoes_the_token_never_prints_it() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    for status in [403u16, 500, 400] {
        let fake = FakeConsul::start(f.node_listener(), move |r| {
            let tok = r.header("x-consul-token").unwrap_or("").to_string();
            let body = match status {
                403 => format!("ACL not found: token {tok} is not known"),
                _ => format!("rpc error: request with token={tok} failed"),
            };
            Reply::Respond(status, vec![], body.into_bytes())
        });
        let config = config_for_fake(&f, &format!("fake{status}.yml"), &fake);
        for args in [
            &["on_role_change", "primary", SCOPE][..],
            &["reconcile"][..],
            &["status"][..],
            &["check-config", "--online"][..],
        ] {
            let out = f.hook_with(&config, args);
            assert!(
                fake.requests()
                    .iter()
                    .any(|r| r.header("x-consul-token") == Some(SECRET)),
                "the fake was asked with the token"
            );
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                !all.contains(SECRET),
                "HTTP {status}, {args:?}: the token is in the output: {}",
                text(&out)
            );
            // Not even its first half (a body cut at 200 bytes or at 80
            // characters must not leave a prefix of it either).
            assert!(
                !all.contains(&SECRET[..18]),
                "HTTP {status}, {args:?}: part of the token is in the output: {}",
                text(&out)
            );
        }
    }
}

/// Consul answers the scope's recursive read (404: nothing there, e.g. a
/// mistyped namespace), then fails the leader-key probe with a 500 (it lost
/// its leader in between) or does not answer it in time. Consul answered
/// the fence read and named no leader: a promotion must not add the VIP as
/// if Consul had been unreachable all along (design: "A VIP is added only
/// after a consistent read names this node as leader, or when Consul cannot
/// be reached at all").
#[test]
fn an_empty_scope_whose_probe_fails_adds_no_vip() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    let fake = FakeConsul::start(f.node_listener(), |r| {
        if r.path.contains("recurse") {
            Reply::Respond(404, vec![], vec![])
        } else {
            Reply::Respond(500, vec![], b"No cluster leader".to_vec())
        }
    });
    let config = config_for_fake(&f, "probe500.yml", &fake);
    let out = f.hook_with(&config, &["on_role_change", "primary", SCOPE]);
    assert!(
        fake.requests().iter().any(|r| r.path.contains("recurse")),
        "the scope was read"
    );
    assert_eq!(
        f.vip_count(V4),
        0,
        "Consul answered the fence read with nothing under the scope; no VIP: {}",
        text(&out)
    );
    assert_eq!(code(&out), 75, "{}", text(&out));
}

/// This replica kept floating-ip 198.51.100.50/24. A new member pg3 then
/// registers with that very address as its own (the floating-ip key still
/// names it): every run that reads Consul refuses it as a member's
/// address, yet keeps the old value in vip-<scope>.seen. A promotion while
/// Consul is unreachable then adds pg3's own address here (design: .seen
/// is "never a member's address").
#[test]
fn a_kept_floating_ip_that_a_member_now_uses_is_not_added() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    let taken = "198.51.100.50";
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.set_members();
    f.set_leader("pg2");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{taken}/24").as_bytes());
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    f.consul.kv_put(
        &f.key("members/pg3"),
        format!(
            r#"{{"conn_url":"postgres://{taken}:5432/postgres","api_url":"http://{taken}:8008/patroni"}}"#
        )
        .as_bytes(),
    );
    let out = f.hook(&["reconcile"]);
    assert_eq!(
        code(&out),
        1,
        "the floating-ip is refused as pg3's: {}",
        text(&out)
    );
    // Consul goes away (nothing listens at the URL any more); Patroni
    // promotes this node.
    let gone = f.config_variant(
        "gone.yml",
        &f.consul.url(),
        &format!("http://127.0.0.1:{}", common::free_port()),
    );
    let out = f.hook_with(&gone, &["on_role_change", "primary", SCOPE]);
    assert_eq!(
        f.vip_count(taken),
        0,
        "member pg3's own address must never be added as the VIP: {}",
        text(&out)
    );
}

/// A vip-<scope>.seen that names no usable VIP (the network address of its
/// prefix, or 0.0.0.0/0: a hand edit, a torn or stale file) is taken as is
/// by a promotion while the DCS is unreachable, and added to the interface.
/// Consul's floating-ip and vip.address are checked with
/// keys::unusable_vip; the file that stands in for them is not.
#[test]
fn an_unusable_address_in_the_seen_file_is_not_added() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    let gone = f.config_variant(
        "gone.yml",
        &f.consul.url(),
        &format!("http://127.0.0.1:{}", common::free_port()),
    );
    for (seen, ip) in [
        ("198.51.100.0/24", "198.51.100.0"),
        ("0.0.0.0/0", "0.0.0.0"),
    ] {
        std::fs::write(
            f.dir.path().join(format!("vip-{SCOPE}.seen")),
            format!("{seen}\n"),
        )
        .unwrap();
        let out = f.hook_with(&gone, &["on_role_change", "primary", SCOPE]);
        let n = f.vip_count(ip);
        // Clean up for the next round, whatever happened.
        let _ = f.hook_with(&gone, &["on_stop", "primary", SCOPE]);
        assert_eq!(n, 0, "{seen} is no VIP: {}", text(&out));
    }
}

/// A database node's config without `scope:` is valid (Patroni passes the
/// scope to every callback), and its callbacks read `<ns>/<scope>/` and
/// write vip-holder. `check-config --online` says "nothing to check (no
/// scope and no pgbouncer clusters)" and exits 0, which an operator reads
/// as "the token is fine".
#[test]
fn check_config_online_without_a_scope_does_not_pass_silently() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    let config = f.config_variant("bare.yml", &format!("scope: {SCOPE}\n"), "");
    // The callbacks work with this config: the scope comes from Patroni.
    f.set_leader("pg1");
    let out = f.hook_with(&config, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = f.hook_with(&config, &["check-config", "--online"]);
    let so = stdout(&out);
    // It may not know the scope, but it must not say there is nothing to
    // check on a host whose callbacks use Consul: say how to check it.
    assert!(
        !so.contains("nothing to check"),
        "the callbacks' keys were not checked; that is not a pass: {}",
        text(&out)
    );
    assert!(
        so.lines()
            .any(|l| l.contains("scope") && !l.starts_with("consul access: nothing")),
        "says the scope is needed to check the callbacks' keys: {}",
        text(&out)
    );
}

/// A mistyped consul.namespace with a token that may read and write there
/// (no ACLs, or a broad policy): `check-config --online` says "ok" for every
/// key, exits 0 and never mentions that the scope is empty, while every
/// run then says "nothing at all in the DCS under this scope". The check that exists to catch Consul-side setup
/// mistakes before the first failover should say the scope is empty.
#[test]
fn check_config_online_notices_a_scope_with_nothing_in_it() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    f.set_members();
    let typo = f.config_variant(
        "typo.yml",
        "  timeout: 1s\n",
        "  timeout: 1s\n  namespace: servce\n",
    );
    let out = f.hook_with(&typo, &["reconcile"]);
    assert!(
        stderr(&out).contains("nothing at all in the DCS"),
        "{}",
        text(&out)
    );
    let out = f.hook_with(&typo, &["check-config", "--online"]);
    // Every key may be "ok" (an empty scope can be a cluster Patroni has
    // not bootstrapped yet), but the check must say that nothing is there,
    // naming consul.namespace, as every run will.
    let so = stdout(&out);
    assert!(
        so.lines()
            .filter(|l| !l.starts_with("consul: "))
            .any(|l| l.contains("namespace")),
        "says servce/batman/ is empty and names consul.namespace: {}",
        text(&out)
    );
}

/// A PgBouncer host serves two clusters; its token reads batman (the kit's
/// policy) but not robin (a cluster just added to pgbouncer.clusters, its
/// policy rule forgotten). batman fails over to pg2: its entry must follow,
/// while robin's is kept and the run exits 1 (design: "Clusters are
/// independent: one ... with refused data (1) keeps its entries while the
/// others follow their leaders"). Before the fix robin's 403 stopped every cluster.
#[test]
fn one_refused_cluster_does_not_stop_the_others_on_the_pgbouncer_host() {
    let Some(f) = Fixture::on(Backend::Real, &format!("{V4}/24")) else {
        return;
    };
    f.set_members();
    f.set_leader("pg2");
    let a = f.consul.agent();
    // robin has a leader too, which this token may not read.
    a.kv_put("service/robin/leader", b"r1");
    let ini = f.dir.path().join("pgbouncer.ini");
    let before = "[databases]\nappdb = host=198.51.100.11 port=5432 dbname=app\n\
                  robindb = host=198.51.100.77 port=5432 dbname=robin\n\n[pgbouncer]\nlisten_port = 6432\n";
    std::fs::write(&ini, before).unwrap();
    let pgb = a.token(
        "pgbouncer",
        &common::hook::kit_policy("consul-acl-pgbouncer.hcl", "pgb"),
    );
    let config = f.pgbouncer_host_config(&pgb.secret, &[(SCOPE, "appdb"), ("robin", "robindb")]);
    let out = f.hook_with(&config, &["reconcile"]);
    let err = stderr(&out);
    assert!(
        err.contains("service/robin/leader") && err.contains("permission denied by Consul's ACL"),
        "robin's refusal is named: {}",
        text(&out)
    );
    assert_ne!(code(&out), 75, "{}", text(&out));
    let after = std::fs::read_to_string(&ini).unwrap();
    assert!(
        after.contains("robindb = host=198.51.100.77"),
        "robin's entry kept: {after}"
    );
    assert!(
        after.contains("appdb = host=198.51.100.12"),
        "batman's entry follows its new leader pg2 although robin is refused: {}\n{after}",
        text(&out)
    );
}

/// Consul 1.8 filters a recursive read by the token's ACL without saying
/// so, also partly: a token that may read the scope's members/ but not its
/// leader key (a hand-written policy that lists key prefixes and misses
/// one) gets the scope without the leader. The hook probed only a scope
/// that read as empty, so it took this for "no leader key in the DCS
/// (mid-failover?)" and exited 75 at every run: a permission problem
/// reported as temporary, which nothing alerts on.
#[test]
fn a_leader_key_hidden_by_the_acl_is_not_taken_for_no_leader() {
    let Some(f) = Fixture::on(Backend::Real, &format!("{V4}/24")) else {
        return;
    };
    f.set_members();
    f.set_leader("pg1");
    let a = f.consul.agent();
    let t = a.token(
        "no-leader-read",
        r#"key_prefix "service/batman/members/" { policy = "read" }
key "service/batman/vip-holder" { policy = "write" }
key "service/batman/pause-request" { policy = "write" }"#,
    );
    f.set_token(&t.secret);
    for args in [
        &["on_role_change", "primary", SCOPE][..],
        &["reconcile"][..],
    ] {
        let out = f.hook(args);
        assert_eq!(f.vip_count(V4), 0, "{args:?}: {}", text(&out));
        assert_eq!(
            code(&out),
            1,
            "{args:?}: a permission problem is not temporary: {}",
            text(&out)
        );
        assert!(
            stderr(&out).contains("reading service/batman/leader")
                && stderr(&out).contains("permission denied by Consul's ACL"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// A state file that is a FIFO (a mistaken `mkfifo`, or anyone with write
/// access to the lock directory) blocks the read of it forever: the run
/// hangs past its deadline, holding the host lock, so every hold after it
/// fails to get the lock (a promotion adds no VIP) until something kills
/// it. The deadline's backstop cannot fire: the read blocks the runtime's
/// only thread. vip-<scope>.seen is new; vip-<scope>.owned has the same
/// read.
#[test]
fn a_state_file_that_is_a_fifo_does_not_hang_the_run() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    f.set_members();
    f.set_leader("pg2");
    for file in [format!("vip-{SCOPE}.seen"), format!("vip-{SCOPE}.owned")] {
        let path = f.dir.path().join(&file);
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let mut child = f
            .command(&f.config, &["reconcile"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the hook");
        // The config's deadline is 3 s; give it more than three times that.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ended = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break true;
            }
            if std::time::Instant::now() >= until {
                let _ = child.kill();
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = child.wait();
        std::fs::remove_file(&path).unwrap();
        assert!(
            ended,
            "{file} as a FIFO: reconcile still running 10 s after it started (deadline 3 s)"
        );
    }
}

/// before-stop waits for PgBouncer's confirmations by reading
/// `<ns>/<scope>/pause-ack/` recursively. Consul 1.8 answers that read with
/// 404 when the token may not read the prefix, as if no host had
/// confirmed: the leader waits all of before_stop.wait and exits 75 saying
/// "0 of 1 PgBouncer host(s) confirmed", blaming PgBouncer for what is a
/// permission problem (a policy that lists the scope's keys and misses
/// pause-ack/). The scope read was probed when empty; this one was not.
#[test]
fn before_stop_names_an_unreadable_pause_ack_prefix() {
    let Some(f) = Fixture::on(Backend::Real, &format!("{V4}/24")) else {
        return;
    };
    f.write_config(&format!("{V4}/24"), "before_stop:\n  wait: 2s\n");
    f.set_members();
    f.set_leader("pg1");
    let a = f.consul.agent();
    let t = a.token(
        "no-ack-read",
        r#"key "service/batman/leader" { policy = "read" }
key_prefix "service/batman/members/" { policy = "read" }
key "service/batman/vip-holder" { policy = "write" }
key "service/batman/pause-request" { policy = "write" }"#,
    );
    f.set_token(&t.secret);
    let out = f.hook(&["before-stop", "--scope", SCOPE]);
    assert!(
        a.kv_get(&f.key("pause-request")).is_some(),
        "the request was written: {}",
        text(&out)
    );
    assert_eq!(
        code(&out),
        1,
        "a permission problem is not temporary: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("pause-ack") && err.contains("permission denied by Consul's ACL"),
        "names the prefix it may not read: {}",
        text(&out)
    );
}

/// The same echo in a 200 answer: a body that is a JSON string holding the
/// token (serde_json quotes a string it did not expect, "invalid type:
/// string \"...\""), or an entry whose key carries the token and whose
/// value is not base64 (the message names the key). Neither goes through
/// the status check, so redacting only the bodies of refusals leaves these.
#[test]
fn a_200_answer_that_echoes_the_token_never_prints_it() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    for (i, shape) in ["string", "key"].into_iter().enumerate() {
        let fake = FakeConsul::start(f.node_listener(), move |r| {
            let tok = r.header("x-consul-token").unwrap_or("").to_string();
            let body = match shape {
                "string" => format!("\"{tok}\""),
                _ => format!(r#"[{{"Key":"service/{SCOPE}/{tok}","Value":"!!","ModifyIndex":1}}]"#),
            };
            Reply::Respond(200, vec![], body.into_bytes())
        });
        let config = config_for_fake(&f, &format!("fake200-{i}.yml"), &fake);
        for args in [
            &["on_role_change", "primary", SCOPE][..],
            &["reconcile"][..],
            &["check-config", "--online"][..],
        ] {
            let out = f.hook_with(&config, args);
            assert!(
                fake.requests()
                    .iter()
                    .any(|r| r.header("x-consul-token") == Some(SECRET)),
                "the fake was asked with the token"
            );
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                !all.contains(&SECRET[..18]),
                "{shape}, {args:?}: the token is in the output: {}",
                text(&out)
            );
        }
    }
}

/// The PgBouncer host's read of a cluster is filtered the same way: a
/// token that may read the cluster's members/ but not its leader key gets
/// the scope without the leader, which reads as "no leader key" (a failover
/// under way: exit 75, and with `pause_on: always` a pause) at every run.
/// Only a cluster that read as wholly empty was probed.
#[test]
fn a_leader_key_hidden_from_the_pgbouncer_host_is_not_taken_for_no_leader() {
    let Some(f) = Fixture::on(Backend::Real, &format!("{V4}/24")) else {
        return;
    };
    f.set_members();
    f.set_leader("pg2");
    let a = f.consul.agent();
    let ini = f.dir.path().join("pgbouncer.ini");
    let before = "[databases]\nappdb = host=198.51.100.11 port=5432 dbname=app\n\n[pgbouncer]\nlisten_port = 6432\n";
    std::fs::write(&ini, before).unwrap();
    let t = a.token(
        "pgb-no-leader",
        r#"key_prefix "service/batman/members/" { policy = "read" }
key "service/batman/pause-ack/pgb" { policy = "write" }
key "service/batman/pause-request" { policy = "write" }"#,
    );
    let config = f.pgbouncer_host_config(&t.secret, &[(SCOPE, "appdb")]);
    let out = f.hook_with(&config, &["reconcile"]);
    assert_eq!(
        code(&out),
        1,
        "a permission problem is not temporary: {}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("service/batman/leader")
            && stderr(&out).contains("permission denied by Consul's ACL"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&ini).unwrap(), before);
}

/// A Consul that does not answer (429 here) gives no verdict on a key:
/// `check-config --online` says "not checked", not "NO" (which reads as a
/// missing permission), and exits 75.
#[test]
fn check_config_online_does_not_call_a_busy_consul_a_refusal() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    let fake = FakeConsul::start(f.node_listener(), |_| {
        Reply::Respond(
            429,
            vec![],
            b"Your IP is issuing too many concurrent connections".to_vec(),
        )
    });
    let config = config_for_fake(&f, "busy.yml", &fake);
    let out = f.hook_with(&config, &["check-config", "--online"]);
    let so = stdout(&out);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert!(so.contains(": not checked ("), "{so}");
    assert!(!so.contains(": NO ("), "{so}");
}

/// A host with a vip section and PgBouncer clusters but no `scope`: the
/// callbacks' keys cannot be named, the clusters' keys are still checked,
/// and the run does not pass (exit 2).
#[test]
fn check_config_online_without_a_scope_still_checks_the_pgbouncer_clusters() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let ini = f.dir.path().join("pgbouncer.ini");
    std::fs::write(&ini, "[databases]\nappdb = host=198.51.100.11\n").unwrap();
    let config = f.config_variant(
        "both.yml",
        &format!("scope: {SCOPE}\n"),
        &format!(
            "pgbouncer:\n  ini: {}\n  pidfile: /nonexistent.pid\n  clusters:\n    - scope: {SCOPE}\n      databases: [appdb]\n",
            ini.display()
        ),
    );
    let out = f.hook_with(&config, &["check-config", "--online"]);
    let so = stdout(&out);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(so.contains("consul access: not checked:"), "{so}");
    assert!(
        so.contains(&format!("consul access: read service/{SCOPE}/leader: ok")),
        "{so}"
    );
}

/// A floating-ip kept from before `vip.address` was set must not outlive
/// it: once the address is configured, the kept one is forgotten, so that
/// removing `vip.address` later cannot bring the old guess back.
#[test]
fn a_kept_floating_ip_is_forgotten_once_vip_address_is_set() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    let seen = f.dir.path().join(format!("vip-{SCOPE}.seen"));
    std::fs::write(&seen, "198.51.100.50/24\n").unwrap();
    f.set_leader("pg2");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !seen.exists(),
        "the kept floating-ip is gone: {}",
        text(&out)
    );
}
