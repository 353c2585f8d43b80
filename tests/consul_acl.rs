//! The hook against a real Consul 1.8.7 with ACLs on (default deny) and TLS:
//! what it does when its token may not do what it needs, when the token is
//! revoked, and when the agent hangs. Each test runs its own agent inside the
//! node namespace (tests/common/real_consul.rs); the hook's token holds the
//! kit's database-node policy (patroni-conf/consul-acl-hook-db.hcl) unless
//! the test says otherwise.

mod common;

use common::hook::{code, Backend, Fixture, SCOPE, V4};
use common::text;

fn real(vip: &str) -> Option<Fixture> {
    Fixture::on(Backend::Real, vip)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A token whose policy reads nothing of the scope.
fn outsider(f: &Fixture) -> String {
    let a = f.consul.agent();
    a.token("outsider", r#"key_prefix "elsewhere/" { policy = "read" }"#)
        .secret
}

#[test]
fn the_kit_policy_is_enough_for_a_promotion_and_a_demotion() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    assert_eq!(f.holder().expect("vip-holder written")["member"], "pg1");
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
    assert!(f.holder().is_none(), "vip-holder deleted");
}

#[test]
fn a_fence_read_the_token_may_not_make_adds_no_vip_and_says_why() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let secret = outsider(&f);
    f.set_token(&secret);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    let err = stderr(&out);
    // Consul 1.8 answers the recursive read with 404, as if the scope were
    // empty; the hook asks the leader key itself and gets the 403.
    assert_eq!(
        code(&out),
        1,
        "a permission problem is not temporary: {}",
        text(&out)
    );
    assert_eq!(f.vip_count(V4), 0, "no VIP without the fence");
    assert!(
        err.contains("reading service/batman/leader")
            && err.contains("permission denied by Consul's ACL"),
        "names the key, the operation and the cause: {err}"
    );
    assert!(!err.contains("nothing at all in the DCS"), "{err}");
    assert!(
        !err.contains(&secret),
        "the token must never be logged: {err}"
    );
}

#[test]
fn a_revoked_token_still_lets_a_demotion_remove_the_vip() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    // The operator deletes the hook's token.
    let Some(common::hook::Kv::Real(a, t)) = Some(&f.consul) else {
        unreachable!()
    };
    a.revoke(t);
    // A hold cannot be fenced now: refused, loudly, and the VIP stays
    // where it is (this node still leads as far as anyone can tell).
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).contains("does not know this token"),
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains(&t.secret), "{}", text(&out));
    for release in [
        &["on_role_change", "replica", SCOPE][..],
        &["before-stop", "--scope", SCOPE][..],
        &["on_stop", "primary", SCOPE][..],
    ] {
        if f.vip_count(V4) == 0 {
            // Held again, as the hook would have left it.
            f.node
                .ip(&["addr", "add", &format!("{V4}/24"), "dev", "eth1"]);
            std::fs::write(
                f.dir.path().join(format!("vip-{SCOPE}.owned")),
                format!("{V4}/24 eth1 added\n"),
            )
            .unwrap();
        }
        let out = f.hook(release);
        assert_eq!(
            f.vip_count(V4),
            0,
            "{release:?} removes the VIP whatever Consul says: {}",
            text(&out)
        );
        assert_ne!(
            code(&out),
            75,
            "{release:?}: a revoked token is not temporary: {}",
            text(&out)
        );
        assert!(!stderr(&out).contains(&t.secret), "{}", text(&out));
    }
}

#[test]
fn a_record_the_token_may_not_write_fails_the_run_after_the_vip() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let a = f.consul.agent();
    let read_only = a.token(
        "read-only",
        r#"key_prefix "service/batman/" { policy = "read" }"#,
    );
    f.set_token(&read_only.secret);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    let err = stderr(&out);
    // Local first: the fence read passed, so the VIP is where Patroni's
    // primary is; the record could not be written, and the run says so.
    assert_eq!(f.vip_count(V4), 1, "{}", text(&out));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        err.contains("writing service/batman/vip-holder")
            && err.contains("permission denied by Consul's ACL"),
        "{err}"
    );
    assert!(f.holder().is_none());
}

#[test]
fn check_config_online_says_which_keys_the_token_may_use_and_changes_none() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let a = f.consul.agent();
    let before = a.kv_index();
    let out = f.hook(&["check-config", "--online"]);
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 0, "the kit's policy allows all: {}", text(&out));
    for line in [
        "consul access: read service/batman/leader: ok",
        "consul access: write service/batman/vip-holder: ok",
        "consul access: write service/batman/pause-request: ok",
        "consul access: read service/batman/pause-ack/pg1: ok",
    ] {
        assert!(so.contains(line), "{line:?} in {so}");
    }
    let read_only = a.token(
        "read-only",
        r#"key_prefix "service/batman/" { policy = "read" }"#,
    );
    f.set_token(&read_only.secret);
    let out = f.hook(&["check-config", "--online"]);
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        so.contains("consul access: read service/batman/leader: ok"),
        "{so}"
    );
    assert!(
        so.contains("consul access: write service/batman/vip-holder: NO")
            && so.contains("permission denied by Consul's ACL"),
        "{so}"
    );
    assert!(!so.contains(&read_only.secret), "{so}");
    assert_eq!(a.kv_index(), before, "no key was written by the probes");
}

#[test]
fn a_promotion_while_consul_hangs_adds_the_floating_ip_read_earlier() {
    // vip.address unset: the VIP is Consul's floating-ip.
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    f.set_leader("pg2");
    // As a replica this node never held the VIP; its start callback read
    // the scope (after its local part) and kept the floating-ip.
    let out = f.hook(&["on_start", "replica", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
    // Consul hangs (every call times out); Patroni promotes this node.
    f.consul.agent().freeze();
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    f.consul.agent().thaw();
    assert_eq!(
        code(&out),
        75,
        "temporary: Consul did not answer: {}",
        text(&out)
    );
    assert_eq!(
        f.vip_count(V4),
        1,
        "the promotion adds the floating-ip read before: {}",
        text(&out)
    );
    // Once Consul answers, the record follows.
    f.set_leader("pg1");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.holder().expect("recorded")["member"], "pg1");
}

#[test]
fn a_changed_floating_ip_is_followed_once_consul_answers() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.edit_config(&format!("  address: {V4}/24\n"), "");
    f.consul.kv_put(&f.key("floating-ip"), b"198.51.100.101/24");
    f.set_leader("pg2");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The operator moves the floating-ip; this replica's next run reads it.
    f.consul
        .kv_put(&f.key("floating-ip"), format!("{V4}/24").as_bytes());
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    f.consul.agent().freeze();
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    f.consul.agent().thaw();
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "the newest floating-ip: {}", text(&out));
    assert_eq!(f.vip_count("198.51.100.101"), 0);
}

#[test]
fn reconcile_on_the_pgbouncer_host_changes_nothing_when_refused() {
    let Some(f) = real(&format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg2");
    f.set_members();
    let ini = f.dir.path().join("pgbouncer.ini");
    let before = "[databases]\nappdb = host=198.51.100.11 port=5432 dbname=app\n\n[pgbouncer]\nlisten_port = 6432\n";
    std::fs::write(&ini, before).unwrap();
    let a = f.consul.agent();
    let pgb = a.token(
        "pgbouncer",
        &common::hook::kit_policy("consul-acl-pgbouncer.hcl", "pgb"),
    );
    let write_config = |secret: &str| f.pgbouncer_host_config(secret, &[(SCOPE, "appdb")]);
    // Another scope's token: the cluster reads as empty, and the leader
    // key, read on its own, is refused.
    let other = a.token(
        "other-cluster",
        r#"key_prefix "service/other/" { policy = "read" }"#,
    );
    let config = write_config(&other.secret);
    let out = f.hook_with(&config, &["reconcile"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        err.contains("reading service/batman/leader")
            && err.contains("permission denied by Consul's ACL")
            && err.contains("its entries kept as they are"),
        "{err}"
    );
    assert!(!err.contains(&other.secret), "{err}");
    assert_eq!(
        std::fs::read_to_string(&ini).unwrap(),
        before,
        "ini unchanged"
    );
    // The kit's PgBouncer-host policy reads it: the entry follows pg2
    // (no PgBouncer runs here, so its reload is what fails).
    let config = write_config(&pgb.secret);
    let out = f.hook_with(&config, &["reconcile"]);
    assert!(
        std::fs::read_to_string(&ini)
            .unwrap()
            .contains("host=198.51.100.12"),
        "{}",
        text(&out)
    );
}
