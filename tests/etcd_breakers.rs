//! etcd answers that go wrong on purpose, from a few-line fake on the
//! node's loopback (tests/common/fake_consul.rs) standing in for etcd's v3
//! JSON gateway: each answer's exit code per the contract (temporary: 75;
//! refusals and unusable answers: 1), the VIP added on a temporary failure
//! (Patroni is trusted) and not on a refusal, every run within the
//! deadline, and the password and the token never printed nor sent
//! anywhere but to the configured host.

mod common;

use common::fake_consul::{FakeConsul, Reply, Request};
use common::hook::{code, Backend, Fixture, SCOPE, V4};
use common::text;
use std::time::{Duration, Instant};

const PASSWORD: &str = "pw-7c1e4b9a2f6d8e30";
const TOKEN: &str = "tok-QpPelYNRcWJEspAC.20";

fn node() -> Option<Fixture> {
    Fixture::on(Backend::Double, &format!("{V4}/24"))
}

/// A config of `f` for the fake at `addr`: plain HTTP, user `hook` with
/// PASSWORD in its password file, timeout 1 s, deadline 3 s.
fn config(f: &Fixture, name: &str, fake: &FakeConsul) -> std::path::PathBuf {
    let pw = f.dir.path().join("etcd.password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let addr = fake.url().trim_start_matches("http://").to_string();
    f.etcd_config(
        name,
        &format!("{V4}/24"),
        &format!(
            "  hosts: {addr}\n  username: hook\n  password_file: {}\n  timeout: 1s\n",
            pw.display()
        ),
    )
}

/// A fake etcd that logs `hook` in with TOKEN and answers every other
/// call with `reply`.
fn fake(f: &Fixture, reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeConsul {
    FakeConsul::start(f.node_listener(), move |r| {
        if r.path == "/v3/auth/authenticate" {
            Reply::Respond(
                200,
                vec![],
                format!(r#"{{"header":{{"revision":"1"}},"token":"{TOKEN}"}}"#).into_bytes(),
            )
        } else {
            reply(r)
        }
    })
}

fn json(status: u16, body: &str) -> Reply {
    Reply::Respond(status, vec![], body.as_bytes().to_vec())
}

/// Runs `args` with `cfg` and checks the exit code, the time taken and
/// that no secret is in the output.
fn run(f: &Fixture, cfg: &std::path::Path, args: &[&str], want: i32, case: &str) {
    let started = Instant::now();
    let out = f.hook_with(cfg, args);
    let took = started.elapsed();
    assert_eq!(code(&out), want, "{case}, {args:?}: {}", text(&out));
    // deadline 3 s; slack for process start on a loaded machine.
    assert!(
        took < Duration::from_secs(5),
        "{case}, {args:?}: took {took:?}"
    );
    let all = text(&out);
    assert!(!all.contains(PASSWORD), "{case}: password printed: {all}");
    assert!(!all.contains(TOKEN), "{case}: token printed: {all}");
    assert!(
        !all.contains(&TOKEN[..12]),
        "{case}: part of the token printed: {all}"
    );
}

/// Exit `want` from reconcile and from a promotion; the promotion adds the
/// VIP only on a temporary failure (75).
fn check(case: &str, want: i32, reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
    let Some(f) = node() else { return };
    let fake = fake(&f, reply);
    let cfg = config(&f, "fake.yml", &fake);
    run(&f, &cfg, &["reconcile"], want, case);
    run(&f, &cfg, &["on_role_change", "primary", SCOPE], want, case);
    assert_eq!(
        f.vip_count(V4),
        usize::from(want == 75),
        "{case}: VIP added only when etcd could not answer"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.starts_with("/v3/kv/")),
        "{case}: the fake was asked"
    );
}

#[test]
fn a_hanging_etcd_is_75_within_the_deadline() {
    check("hang", 75, |_| Reply::Hang);
}

#[test]
fn http_429_is_75() {
    check("429", 75, |_| {
        json(429, r#"{"error":"too many requests","code":8}"#)
    });
}

#[test]
fn no_leader_is_75() {
    check("503 no leader", 75, |_| {
        json(
            503,
            r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#,
        )
    });
}

#[test]
fn a_compacted_revision_is_75() {
    check("400 compacted", 75, |_| {
        json(
            400,
            r#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
        )
    });
}

#[test]
fn permission_denied_is_1() {
    check("403 permission denied", 1, |_| {
        json(
            403,
            r#"{"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7}"#,
        )
    });
}

#[test]
fn malformed_json_is_1() {
    check("malformed JSON", 1, |_| {
        json(200, r#"{"header":{"revision":"#)
    });
}

#[test]
fn an_endless_body_is_1_and_bounded() {
    check("endless body", 1, |_| Reply::Endless);
}

/// A token etcd no longer takes (expired, or its member restarted): the
/// hook logs in once more, and when the new token is refused too it stops
/// (1); it does not loop.
#[test]
fn an_invalid_auth_token_logs_in_again_once_then_is_1() {
    let Some(f) = node() else { return };
    let fake = fake(&f, |_| {
        json(
            401,
            r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
        )
    });
    let cfg = config(&f, "token.yml", &fake);
    run(&f, &cfg, &["reconcile"], 1, "401 invalid auth token");
    let logins = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v3/auth/authenticate")
        .count();
    assert_eq!(logins, 2, "one login, then one more: {:?}", fake.requests());
    // The token travelled in the Authorization header.
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(TOKEN)));
}

/// An etcd member never redirects; something else answering 307 is not
/// followed, and neither the password nor the token goes to the target.
#[test]
fn a_redirect_is_1_and_not_followed() {
    let Some(f) = node() else { return };
    let elsewhere = FakeConsul::start(f.node_listener(), |_| json(200, "{}"));
    let target = elsewhere.url();
    for status in [301u16, 307, 308] {
        let target = target.clone();
        // Even the login is redirected: the password must not follow.
        let fake = FakeConsul::start(f.node_listener(), move |r| {
            Reply::Respond(
                status,
                vec![("Location".into(), format!("{target}{}", r.path))],
                vec![],
            )
        });
        let cfg = config(&f, "redirect.yml", &fake);
        run(&f, &cfg, &["reconcile"], 1, &format!("{status} redirect"));
        run(
            &f,
            &cfg,
            &["on_role_change", "primary", SCOPE],
            1,
            &format!("{status} redirect"),
        );
        assert_eq!(f.vip_count(V4), 0, "{status}: no VIP");
        assert!(!fake.requests().is_empty(), "{status}: the fake was asked");
    }
    assert!(
        elsewhere.requests().is_empty(),
        "a redirect was followed: {:?}",
        elsewhere.requests()
    );
}

/// Error bodies that quote the token or the password back (a proxy, a
/// misbehaving member): never printed, whole or in part.
#[test]
fn a_body_that_echoes_the_token_never_prints_it() {
    let Some(f) = node() else { return };
    for status in [400u16, 403, 500] {
        let fake = fake(&f, move |r| {
            let tok = r.header("authorization").unwrap_or("").to_string();
            json(
                status,
                &format!(
                    r#"{{"error":"etcdserver: request with token {tok} and password {PASSWORD} failed","code":2}}"#
                ),
            )
        });
        let cfg = config(&f, "echo.yml", &fake);
        let want = if status == 500 { 75 } else { 1 };
        for args in [
            &["reconcile"][..],
            &["status"][..],
            &["check-config", "--online"][..],
        ] {
            let out = f.hook_with(&cfg, args);
            let all = text(&out);
            assert!(
                !all.contains(TOKEN) && !all.contains(&TOKEN[..12]),
                "{status}, {args:?}: {all}"
            );
            assert!(!all.contains(&PASSWORD[..10]), "{status}, {args:?}: {all}");
        }
        run(&f, &cfg, &["reconcile"], want, &format!("{status} echo"));
    }
}
