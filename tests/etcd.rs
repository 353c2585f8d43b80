//! What only etcd does, on a real etcd 3.4 (tests/common/real_etcd.rs): the
//! leader key's lease, the check-and-set of vip-holder as a transaction on
//! `mod_revision`, the kit's RBAC roles and password users, tokens,
//! quorum loss in a three-member cluster, `hosts` tried in turn, TLS
//! verification, and `check-config --online`. The hook runs in a network
//! namespace as a database node (tests/common/hook.rs).

mod common;

use common::hook::{code, Backend, Fixture, Kv, SCOPE, V4};
use common::real_etcd::{self, Etcd, Opts, ETCDCTL};
use common::{text, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A database node whose hook talks to a real etcd with mutual TLS and
/// auth, as the user patroni-hook-db.
fn secure() -> Option<Fixture> {
    Fixture::on(Backend::Etcd, &format!("{V4}/24"))
}

/// No secret of `e`'s users appears in `o`'s output.
fn assert_no_password(e: &Etcd, o: &std::process::Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    for user in real_etcd::USERS {
        assert!(
            !all.contains(&e.password(user)),
            "{user}'s password in the output: {}",
            text(o)
        );
    }
}

/// Patroni's leader key carries a lease; when Patroni stops renewing it,
/// etcd deletes the key, and the hook must see no leader, not the last one.
#[test]
fn the_leader_key_counts_only_while_its_lease_lives() {
    let Some(f) = secure() else { return };
    let e = f.consul.etcd();
    e.put_with_lease("service/batman/leader", b"pg1", 2);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    let out = f.hook(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(v["leader"], "pg1", "{}", text(&out));
    wait_for(
        "etcd to expire the leader key's lease",
        Duration::from_secs(10),
        || e.get("service/batman/leader").is_none(),
    );
    let out = f.hook(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_ne!(
        v["leader"],
        "pg1",
        "a lapsed lease is no leader: {}",
        text(&out)
    );
    // No leader: reconcile changes nothing and says try again.
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "nothing changed without a leader");
    // And a promotion without a leader key adds nothing.
    assert_eq!(code(&f.hook(&["on_role_change", "replica", SCOPE])), 0);
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0, "no VIP on an expired leader key");
}

/// A proxy in the node's namespace in front of an etcd on the host's
/// loopback (plain HTTP): forwards each request on a connection of its own
/// and, before forwarding the first transaction, runs `before_first_txn`.
/// Records every transaction's request and answer bodies.
struct Proxy {
    addr: SocketAddr,
    txns: Arc<Mutex<Vec<(String, String)>>>,
}

fn proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    before_first_txn: impl FnOnce() + Send + 'static,
) -> Proxy {
    let addr = listener.local_addr().unwrap();
    let txns = Arc::new(Mutex::new(Vec::new()));
    let hook = Arc::new(Mutex::new(Some(
        Box::new(before_first_txn) as Box<dyn FnOnce() + Send>
    )));
    let t = txns.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (t, hook) = (t.clone(), hook.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some((n, v)) = line.split_once(':') {
                        if n.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let is_txn = head.starts_with("POST /v3/kv/txn ");
                if is_txn {
                    if let Some(f) = hook.lock().unwrap().take() {
                        f();
                    }
                }
                let mut up = TcpStream::connect(upstream).expect("the upstream etcd");
                let request = [
                    head.as_bytes(),
                    b"Connection: close\r\n\r\n",
                    body.as_slice(),
                ]
                .concat();
                up.write_all(&request).unwrap();
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer);
                // Close this connection too, and say so.
                let at = answer
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                let mut reply = answer[..at].to_vec();
                reply.extend_from_slice(b"Connection: close\r\n");
                reply.extend_from_slice(&answer[at..]);
                // Recorded before the answer goes back: the hook may exit,
                // and the test read the list, as soon as it has it.
                if is_txn {
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                    t.lock()
                        .unwrap()
                        .push((String::from_utf8_lossy(&body_of(&request)).into(), body));
                }
                let _ = conn.write_all(&reply);
            });
        }
    });
    Proxy { addr, txns }
}

fn body_of(request: &[u8]) -> Vec<u8> {
    let at = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |p| p + 4);
    request[at..].to_vec()
}

/// The vip-holder record is written with a transaction that compares
/// `mod_revision` with the one read: a record another node wrote in
/// between makes etcd refuse the write (only one of two writers wins), and
/// the hook reads again before it writes anew; no blind overwrite.
#[test]
fn vip_holder_is_a_transaction_on_mod_revision() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    if !real_etcd::require_etcd() {
        return;
    }
    let e = Etcd::start(None, Opts::PLAIN);
    e.put("service/batman/leader", b"pg1");
    let url = e.url(0);
    let theirs = r#"{"member":"pg2","address":"198.51.100.100/24","interface":"eth1","since":"2026-01-01T00:00:00Z"}"#;
    let upstream: SocketAddr = e.host(0).parse().unwrap();
    let p = proxy(f.node_listener(), upstream, move || {
        // Another writer's record lands between the hook's read and its write.
        let o = std::process::Command::new(ETCDCTL)
            .arg(format!("--endpoints={url}"))
            .args(["put", "/service/batman/vip-holder", theirs])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    });
    let cfg = f.etcd_config(
        "proxy.yml",
        &format!("{V4}/24"),
        &format!("  hosts: {}\n  timeout: 2s\n", p.addr),
    );
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    let txns = p.txns.lock().unwrap().clone();
    assert!(!txns.is_empty(), "no transaction: {}", text(&out));
    let (req, first) = &txns[0];
    // Absent when read: "must not exist" (create_revision 0, or mod_revision 0).
    assert!(
        req.contains(r#""compare""#)
            && (req.contains(r#""mod_revision":"0""#) || req.contains(r#""create_revision":"0""#))
            && req.contains(&base64(b"/service/batman/vip-holder")),
        "the write compares the revision read: {req}"
    );
    let first: serde_json::Value = serde_json::from_str(first).expect("txn answer JSON");
    assert_ne!(
        first["succeeded"],
        true,
        "etcd refused the stale write: {first} ({})",
        text(&out)
    );
    // pg1 holds the leader key, so after reading again it records itself
    // over the newer revision; the other record was seen, not clobbered blind.
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(txns.len() >= 2, "read again and retried: {txns:?}");
    let (value, _) = e.get("service/batman/vip-holder").expect("vip-holder");
    let h: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(h["member"], "pg1", "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
}

/// A role that may not write vip-holder (the PgBouncer host's, used on a
/// database node by mistake): exit 1, one line naming the key and
/// "permission denied", no password anywhere.
#[test]
fn permission_denied_by_rbac_is_exit_1_naming_the_key() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let e = f.consul.etcd();
    let pw = e.password_file(f.dir.path(), "patroni-hook-pgbouncer");
    let cfg = f.etcd_variant(
        "pgb-user.yml",
        &[
            ("username", Some("patroni-hook-pgbouncer")),
            ("password_file", Some(pw.to_str().unwrap())),
        ],
    );
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("permission denied"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/service/batman/vip-holder")),
        "a line names the key and the refusal: {err}"
    );
    assert!(f.holder().is_none());
    assert_no_password(e, &out);
    // (The fence read was answered: the VIP went on; the next part starts without it.)
    assert_eq!(code(&f.hook(&["on_role_change", "replica", SCOPE])), 0);
    assert_eq!(f.vip_count(V4), 0);
    // A user whose role reads nothing: the leader key's read is refused,
    // which is no "no leader" (75) and opens no fence.
    e.ctl(&["role", "add", "nothing"]);
    e.ctl(&["user", "add", "nobody:nobody-pw-1234"]);
    e.ctl(&["user", "grant-role", "nobody", "nothing"]);
    let nobody = f.dir.path().join("nobody.password");
    std::fs::write(&nobody, "nobody-pw-1234\n").unwrap();
    let cfg = f.etcd_variant(
        "nobody.yml",
        &[
            ("username", Some("nobody")),
            ("password_file", Some(nobody.to_str().unwrap())),
        ],
    );
    for args in [
        &["on_role_change", "primary", SCOPE][..],
        &["reconcile"][..],
    ] {
        let out = f.hook_with(&cfg, args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains("permission denied"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(!text(&out).contains("nobody-pw-1234"), "{}", text(&out));
        assert_eq!(
            f.vip_count(V4),
            0,
            "{args:?}: no VIP without a fence answer"
        );
    }
}

/// A wrong password: exit 1, the message names the settings to check,
/// never the password (the wrong one or any other).
#[test]
fn a_wrong_password_is_exit_1_naming_the_settings() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let wrong = "wrong-5f3c1e9a7b2d4c6e8f0a";
    let pw = f.dir.path().join("wrong.password");
    std::fs::write(&pw, format!("{wrong}\n")).unwrap();
    let cfg = f.etcd_variant(
        "wrong.yml",
        &[("password_file", Some(pw.to_str().unwrap()))],
    );
    for args in [
        &["on_role_change", "primary", SCOPE][..],
        &["reconcile"][..],
        &["check-config", "--online"][..],
    ] {
        let out = f.hook_with(&cfg, args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains("etcd3.username") && all.contains("etcd3.password_file"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(!all.contains(wrong), "{args:?}: {}", text(&out));
        assert_no_password(f.consul.etcd(), &out);
    }
    assert_eq!(f.vip_count(V4), 0, "a refused login opens no fence");
}

/// An unreadable password file stops etcd calls (exit 2, naming the
/// setting), not the removal of the VIP.
#[test]
fn an_unreadable_password_file_still_lets_a_release_remove_the_vip() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    assert_eq!(f.vip_count(V4), 1);
    let cfg = f.etcd_variant(
        "nopw.yml",
        &[("password_file", Some("/nonexistent/etcd.password"))],
    );
    let out = f.hook_with(&cfg, &["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("etcd3.password_file"),
        "{}",
        text(&out)
    );
    assert_eq!(
        f.vip_count(V4),
        0,
        "removed although etcd could not be called"
    );
}

/// A client certificate whose CN names the etcd user (etcdctl's way, over
/// gRPC): etcd's JSON gateway refuses every request from it
/// while auth is on. The hook says so and exits 1; it adds no VIP.
#[test]
fn a_certificate_with_a_cn_is_refused_by_the_gateway() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let (cert, key) = f.consul.etcd().client_cert("cn-db");
    let (c, k) = (f.dir.path().join("cn.pem"), f.dir.path().join("cn.key"));
    std::fs::copy(cert, &c).unwrap();
    std::fs::copy(key, &k).unwrap();
    let cfg = f.etcd_variant(
        "cn.yml",
        &[
            ("cert", Some(c.to_str().unwrap())),
            ("key", Some(k.to_str().unwrap())),
            ("username", None),
            ("password_file", None),
        ],
    );
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("CommonName"), "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
}

/// etcd with no quorum (three members, two killed): no leader to answer a
/// linearizable read. `reconcile` exits 75 within the deadline and leaves
/// the VIP as it is; a promotion trusts Patroni.
#[test]
fn no_quorum_is_75_and_the_vip_stays() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    if !real_etcd::require_etcd() {
        return;
    }
    let mut e = Etcd::cluster(Some(&f.node), 3, Opts::PLAIN);
    e.put("service/batman/leader", b"pg1");
    let cfg = f.etcd_config(
        "cluster.yml",
        &format!("{V4}/24"),
        &format!("  hosts: {}\n  timeout: 1s\n", e.hosts()),
    );
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    // pg2 takes over while the cluster still has quorum, then two members die.
    e.put("service/batman/leader", b"pg2");
    e.kill(0);
    e.kill(1);
    let started = Instant::now();
    let out = f.hook_with(&cfg, &["reconcile"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(
        f.vip_count(V4),
        1,
        "left as it is without an answer: {}",
        text(&out)
    );
    assert!(took < Duration::from_secs(5), "took {took:?}, deadline 3s");
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "trust Patroni");
}

/// Every host unreachable (refused): 75, and a promotion trusts Patroni.
#[test]
fn all_hosts_unreachable_is_75() {
    let Some(f) = Fixture::on(Backend::Double, &format!("{V4}/24")) else {
        return;
    };
    f.set_leader("pg1");
    let cfg = f.etcd_config(
        "dead.yml",
        &format!("{V4}/24"),
        "  hosts: 127.0.0.1:1,127.0.0.1:2\n  timeout: 1s\n",
    );
    let out = f.hook_with(&cfg, &["reconcile"]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1, "trust Patroni: VIP added");
    let out = f.hook_with(&cfg, &["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0, "removal never waits on etcd");
}

/// `hosts` are tried in turn: a dead first host and a live second one work.
#[test]
fn a_dead_first_host_and_a_live_second_one_work() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let e = f.consul.etcd();
    let cfg = f.etcd_variant(
        "second.yml",
        &[("hosts", Some(&format!("127.0.0.1:1,{}", e.host(0))))],
    );
    let out = f.hook_with(&cfg, &["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 1);
    assert_eq!(f.holder().expect("vip-holder")["member"], "pg1");
    // As a YAML list too.
    let out = f.hook_with(
        &f.etcd_variant(
            "second-list.yml",
            &[(
                "hosts",
                Some(&format!("[\"127.0.0.1:1\", \"{}\"]", e.host(0))),
            )],
        ),
        &["reconcile"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// The hook keeps etcd's auth token between runs (no bcrypt per run). A
/// kept token that died with a restart of etcd is refused (401); the run
/// logs in again and succeeds, and keeps the new token.
#[test]
fn a_kept_token_that_died_with_a_restart_logs_in_again() {
    let Some(mut f) = secure() else { return };
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let Kv::Etcd(e) = &mut f.consul else {
        unreachable!()
    };
    e.restart(0);
    let out = f.hook(&["on_role_change", "replica", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.vip_count(V4), 0);
    assert!(
        f.holder().is_none(),
        "the record deleted after logging in again"
    );
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(f.holder().expect("vip-holder")["member"], "pg1");
}

/// `check-config --online` is how an operator proves a configuration
/// works: a wrong password must show there even while a token from an
/// earlier login is still kept, not first when that token expires (in a
/// failover, say).
#[test]
fn check_config_online_finds_a_wrong_password_despite_a_kept_token() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let pw = f.dir.path().join("etcd-patroni-hook-db.password");
    assert!(pw.exists(), "the fixture's password file");
    std::fs::write(&pw, "not-the-password\n").unwrap();
    let out = f.hook(&["check-config", "--online"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("etcd3.password_file"), "{}", text(&out));
    // A run, too: the kept token was given for the old password.
    let out = f.hook(&["reconcile"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("etcd3.password_file"), "{}", text(&out));
}

/// A CA that did not sign etcd's certificate: exit 1 naming etcd3.cacert;
/// no VIP (a failed verification is no unreachable etcd).
#[test]
fn a_wrong_ca_is_exit_1_naming_etcd3_cacert() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let other = f.dir.path().join("other-ca.pem");
    std::fs::copy(f.consul.etcd().other_ca_file(), &other).unwrap();
    let cfg = f.etcd_variant("wrong-ca.yml", &[("cacert", Some(other.to_str().unwrap()))]);
    for args in [
        &["on_role_change", "primary", SCOPE][..],
        &["reconcile"][..],
    ] {
        let out = f.hook_with(&cfg, args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains("etcd3.cacert"), "{}", text(&out));
        assert_no_password(f.consul.etcd(), &out);
    }
    assert_eq!(f.vip_count(V4), 0);
}

/// `check-config --online` says, key by key, what the configured user's
/// role may read and write, and writes nothing.
#[test]
fn check_config_online_reports_what_each_role_may_do() {
    let Some(f) = secure() else { return };
    f.set_leader("pg1");
    let e = f.consul.etcd();
    let before = e.ctl(&["get", "/", "--prefix", "-w", "json", "--keys-only"]);
    let out = f.hook(&["check-config", "--online"]);
    let so = stdout(&out);
    assert_eq!(code(&out), 0, "the db role allows all: {}", text(&out));
    for line in [
        "etcd3 access: read /service/batman/leader: ok",
        "etcd3 access: write /service/batman/vip-holder: ok",
        "etcd3 access: write /service/batman/pause-request: ok",
    ] {
        assert!(so.contains(line), "{line:?} in {so}");
    }
    // The PgBouncer host's role on a database node: vip-holder is not its.
    let pw = e.password_file(f.dir.path(), "patroni-hook-pgbouncer");
    let cfg = f.etcd_variant(
        "pgb-user.yml",
        &[
            ("username", Some("patroni-hook-pgbouncer")),
            ("password_file", Some(pw.to_str().unwrap())),
        ],
    );
    let out = f.hook_with(&cfg, &["check-config", "--online"]);
    let so = stdout(&out);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        so.contains("etcd3 access: read /service/batman/leader: ok"),
        "{so}"
    );
    assert!(
        so.contains("etcd3 access: write /service/batman/vip-holder: NO")
            && so.contains("permission denied"),
        "{so}"
    );
    assert!(
        so.contains("etcd3 access: write /service/batman/pause-request: ok"),
        "{so}"
    );
    assert_no_password(e, &out);
    let after = e.ctl(&["get", "/", "--prefix", "-w", "json", "--keys-only"]);
    let keys = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["kvs"].clone(), v["header"]["revision"].clone())
    };
    assert_eq!(
        keys(&after),
        keys(&before),
        "no key was written by the probes"
    );
}

fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
