//! The etcd3 backend on a bad day (tests/bad_day_etcd/mod.rs has the
//! world): runs SIGKILLed at every etcd call of a hold and of a release,
//! members that hang (SIGSTOP), fakes that lie, redirect, answer garbage or
//! never stop answering, a first member refused or black-holed, a write
//! that timed out on one member and must not be sent to another, tokens
//! that expire mid-run, authentication on without credentials, operator
//! typos, two nodes racing, and the password and token never shown.
//! Exit codes as docs/reference.md says: 75 temporary, 1 failure, 2 usage.

#[path = "bad_day_etcd/mod.rs"]
mod bd;

use bd::*;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn plain(hosts: &str) -> String {
    format!("hosts: {hosts}\ntimeout: 1s\n")
}

fn one_member() -> Etcd {
    Etcd::start(EtcdOpts {
        members: 1,
        auth: false,
        token_ttl: None,
    })
}

const HOLD: &[&str] = &["on_role_change", "primary", SCOPE];
const RELEASE: &[&str] = &["on_role_change", "replica", SCOPE];

/// The end state the next run must reach: the VIP here iff `holder`.
fn assert_converged(w: &World, e: &Etcd, holder: Option<&str>, what: &str) {
    match holder {
        Some(h) => {
            assert_eq!(w.vip_count(), 1, "{what}: VIP once on eth1");
            assert_eq!(e.holder().as_deref(), Some(h), "{what}: vip-holder");
        }
        None => {
            assert_eq!(w.vip_count(), 0, "{what}: no VIP");
            assert_eq!(e.holder(), None, "{what}: no vip-holder");
        }
    }
}

// ---- SIGKILL at every step ----------------------------------------------------

/// A hold (leader pg1) and a release (leader pg2), each killed at every
/// etcd call it makes, before the call reaches etcd and after etcd applied
/// it but before the hook saw the answer; the next run (reconcile, the
/// timer's) must converge: the VIP on eth1 once with vip-holder naming pg1,
/// or neither.
#[test]
fn sigkill_at_every_etcd_call_then_reconcile_converges() {
    World::run("kill", |w| {
        let e = one_member();
        let victim = Arc::new(AtomicI32::new(0));
        // (request number to act on, kill before?) ; usize::MAX: none.
        let plan = Arc::new(std::sync::Mutex::new((usize::MAX, true)));
        let base = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p2, b2) = (plan.clone(), base.clone());
        let seen = proxy(
            "127.0.0.1:12999",
            &e.members[0].client,
            victim.clone(),
            move |n, _| {
                let (at, before) = *p2.lock().unwrap();
                if at != usize::MAX && n == b2.load(Ordering::SeqCst) + at {
                    if before {
                        Act::KillBefore
                    } else {
                        Act::KillAfter
                    }
                } else {
                    Act::Forward
                }
            },
        );
        let c = w.config("c.yml", "pg1", &plain("127.0.0.1:12999"), true, "");
        // How many etcd calls a clean hold and a clean release make.
        e.set_leader("pg1");
        let n0 = seen.reqs().len();
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 0, "{}", r.text());
        let hold_calls = seen.reqs().len() - n0;
        e.set_leader("pg2");
        let n0 = seen.reqs().len();
        let r = hook(&c, RELEASE);
        assert_eq!(r.code, 0, "{}", r.text());
        let release_calls = seen.reqs().len() - n0;
        assert!(hold_calls >= 2 && release_calls >= 2, "{:?}", seen.paths());
        assert_converged(w, &e, None, "clean release");

        for (leader, args, calls, want) in [
            ("pg1", HOLD, hold_calls, Some("pg1")),
            ("pg2", RELEASE, release_calls, None),
        ] {
            for at in 0..calls {
                for before in [true, false] {
                    // Start from the opposite state, converged.
                    let other = if leader == "pg1" { "pg2" } else { "pg1" };
                    e.set_leader(other);
                    let r = hook(&c, &["reconcile"]);
                    assert!(r.code == 0, "setup: {}", r.text());
                    e.set_leader(leader);
                    *plan.lock().unwrap() = (at, before);
                    base.store(seen.reqs().len(), Ordering::SeqCst);
                    let h = spawn_hook(&c, args);
                    victim.store(h.pid, Ordering::SeqCst);
                    let r = h.wait(Duration::from_secs(10));
                    *plan.lock().unwrap() = (usize::MAX, true);
                    victim.store(0, Ordering::SeqCst);
                    let what = format!(
                        "{args:?} killed {} call {at} ({})",
                        if before { "before" } else { "after" },
                        seen.reqs()
                            .get(base.load(Ordering::SeqCst) + at)
                            .map(|r| r.path.clone())
                            .unwrap_or_default()
                    );
                    assert_eq!(r.code, -1, "{what}: was it killed? {}", r.text());
                    let r = hook(&c, &["reconcile"]);
                    assert_eq!(r.code, 0, "{what}: reconcile after: {}", r.text());
                    assert_converged(w, &e, want, &what);
                    // And once more: nothing left to do.
                    let rev = e.get(&Etcd::key("vip-holder")).map(|x| x.1);
                    let r = hook(&c, &["reconcile"]);
                    assert_eq!(r.code, 0, "{what}: second reconcile: {}", r.text());
                    assert_eq!(
                        e.get(&Etcd::key("vip-holder")).map(|x| x.1),
                        rev,
                        "{what}: rewritten"
                    );
                }
            }
        }
    });
}

// ---- hangs --------------------------------------------------------------------

/// Three members, the first (in hosts order) SIGSTOPped: the run finishes
/// within its deadline through the others; all three stopped: 75 within
/// the deadline, and once they run again the next run converges.
#[test]
fn sigstopped_members_cost_a_timeout_not_the_run() {
    World::run("stop", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 3,
            auth: false,
            token_ttl: None,
        });
        let c = w.config("c.yml", "pg1", &plain(&e.hosts()), true, "");
        e.set_leader("pg1");
        e.signal(0, nix::sys::signal::Signal::SIGSTOP);
        let r = hook(&c, HOLD);
        assert!(r.took < Duration::from_millis(3100), "{}", r.text());
        assert!(r.code == 0 || r.code == 75, "{}", r.text());
        // An election may have been under way: the next one must succeed.
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_converged(w, &e, Some("pg1"), "one member stopped");
        for i in 1..3 {
            e.signal(i, nix::sys::signal::Signal::SIGSTOP);
        }
        let r = hook(&c, &["reconcile"]);
        assert_eq!(r.code, 75, "{}", r.text());
        assert!(r.took < Duration::from_millis(3100), "{}", r.text());
        assert_eq!(w.vip_count(), 1, "a hang removes nothing");
        let r = hook(&c, RELEASE);
        assert!(r.took < Duration::from_millis(3100), "{}", r.text());
        assert_eq!(r.code, 75, "release, etcd hung: {}", r.text());
        assert_eq!(w.vip_count(), 0, "a release removes without etcd");
        for i in 0..3 {
            e.signal(i, nix::sys::signal::Signal::SIGCONT);
        }
        e.set_leader("pg2");
        let r = hook(&c, &["reconcile"]);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_converged(w, &e, None, "after the hang");
    });
}

// ---- hosts order ------------------------------------------------------------------

/// The first member refused, connected-but-silent (a listener that never
/// accepts), or unroutable (SYNs into a link with nobody on it): the run
/// ends within its deadline through the second.
#[test]
fn a_dead_first_member_is_skipped_within_the_deadline() {
    World::run("order", |w| {
        let e = one_member();
        let _hole = black_hole("127.0.0.1:12501");
        w.ip(&["addr", "add", "203.0.113.1/24", "dev", "eth1"]);
        for (first, min) in [
            ("127.0.0.1:12500", Duration::ZERO),
            ("127.0.0.1:12501", Duration::from_millis(900)),
            ("203.0.113.9:2379", Duration::from_millis(900)),
        ] {
            let c = w.config(
                "c.yml",
                "pg1",
                &plain(&format!("{first},{}", e.members[0].client)),
                true,
                "",
            );
            e.set_leader("pg1");
            let r = hook(&c, HOLD);
            assert_eq!(r.code, 0, "first {first}: {}", r.text());
            assert!(
                r.took >= min && r.took < Duration::from_millis(2900),
                "first {first}: {}",
                r.text()
            );
            assert_converged(w, &e, Some("pg1"), first);
            e.set_leader("pg2");
            let r = hook(&c, RELEASE);
            assert_eq!(r.code, 0, "first {first}: {}", r.text());
            assert!(
                r.took < Duration::from_millis(2900),
                "first {first}: {}",
                r.text()
            );
            assert_converged(w, &e, None, first);
        }
    });
}

/// A check-and-set that reached member A and got no answer may have been
/// applied: it is not sent to member B (B sees nothing at all), the run
/// exits 75, and the next run converges without writing twice.
#[test]
fn a_write_that_timed_out_is_not_sent_to_another_member() {
    World::run("nodup", |w| {
        let e = one_member();
        let swallow = Arc::new(AtomicBool::new(true));
        let s2 = swallow.clone();
        let a = proxy(
            "127.0.0.1:12601",
            &e.members[0].client,
            Default::default(),
            move |_, r| {
                if r.path == "/v3/kv/txn" && s2.swap(false, Ordering::SeqCst) {
                    Act::Swallow
                } else {
                    Act::Forward
                }
            },
        );
        let b = proxy(
            "127.0.0.1:12602",
            &e.members[0].client,
            Default::default(),
            |_, _| Act::Forward,
        );
        let c = w.config(
            "c.yml",
            "pg1",
            &plain("127.0.0.1:12601,127.0.0.1:12602"),
            true,
            "",
        );
        e.set_leader("pg1");
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 75, "{}", r.text());
        assert!(r.took < Duration::from_millis(3000), "{}", r.text());
        assert_eq!(b.conns(), 0, "member B got {:?}", b.paths());
        assert_eq!(a.paths().iter().filter(|p| *p == "/v3/kv/txn").count(), 1);
        // The write landed on etcd: the next run sees it and writes nothing.
        let (_, rev) = e.get(&Etcd::key("vip-holder")).expect("applied by A");
        let r = hook(&c, &["reconcile"]);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_converged(w, &e, Some("pg1"), "after the swallowed write");
        assert_eq!(e.get(&Etcd::key("vip-holder")).unwrap().1, rev);
    });
}

// ---- lies and garbage -------------------------------------------------------------

fn range_answer(kvs: &str) -> String {
    format!(r#"{{"header":{{"revision":"9"}},"kvs":[{kvs}]}}"#)
}

fn kv(key: &str, value: &str, rev: &str) -> String {
    format!(
        r#"{{"key":"{}","value":"{}","mod_revision":{rev},"create_revision":"2","version":"1"}}"#,
        b64(key),
        b64(value)
    )
}

/// What a fake member answers, and the exit code the contract gives it.
#[test]
fn bad_answers_map_to_the_contracts_exit_codes() {
    let leader = Etcd::key("leader");
    let big = vec![b'x'; 64 * 1024];
    type Answer = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;
    let cases: Vec<(&str, Answer, i32)> = vec![
        (
            "429",
            Arc::new(|_: &Req| Reply::Json(429, "slow down".into())),
            75,
        ),
        (
            "503 html",
            Arc::new(|_: &Req| Reply::Json(503, "<html>bad gateway</html>".into())),
            75,
        ),
        (
            "no leader",
            Arc::new(|_: &Req| {
                Reply::Json(503, r#"{"error":"etcdserver: no leader","code":14}"#.into())
            }),
            75,
        ),
        (
            "compacted",
            Arc::new(|_: &Req| {
                Reply::Json(400, r#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11}"#.into())
            }),
            75,
        ),
        (
            "permission denied",
            Arc::new(|_: &Req| {
                Reply::Json(
                    403,
                    r#"{"error":"etcdserver: permission denied","code":7}"#.into(),
                )
            }),
            1,
        ),
        (
            "not json",
            Arc::new(|_: &Req| Reply::Json(200, "this is not json".into())),
            1,
        ),
        (
            "base64 garbage",
            Arc::new(|_: &Req| {
                Reply::Json(
                    200,
                    range_answer(r#"{"key":"%%%not-base64%%%","value":"cGcx","mod_revision":"3"}"#),
                )
            }),
            1,
        ),
        (
            "value base64 garbage",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| {
                    Reply::Json(
                        200,
                        range_answer(&format!(
                            r#"{{"key":"{}","value":"@@@","mod_revision":"3"}}"#,
                            b64(&l)
                        )),
                    )
                })
            },
            1,
        ),
        (
            "mod_revision garbage",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| Reply::Json(200, range_answer(&kv(&l, "pg1", r#""3abc""#))))
            },
            1,
        ),
        (
            "mod_revision negative",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| Reply::Json(200, range_answer(&kv(&l, "pg1", r#""-3""#))))
            },
            1,
        ),
        (
            "mod_revision negative number",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| Reply::Json(200, range_answer(&kv(&l, "pg1", "-3"))))
            },
            1,
        ),
        (
            "mod_revision huge",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| {
                    Reply::Json(
                        200,
                        range_answer(&kv(&l, "pg1", r#""123456789012345678901234567890""#)),
                    )
                })
            },
            1,
        ),
        (
            "mod_revision float",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| Reply::Json(200, range_answer(&kv(&l, "pg1", "3.5"))))
            },
            1,
        ),
        (
            "a leader key for another member",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| Reply::Json(200, range_answer(&kv(&l, "pg2", r#""3""#))))
            },
            1,
        ),
        (
            "announced 64 MiB",
            Arc::new(|_: &Req| {
                Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n{".to_vec())
            }),
            1,
        ),
        (
            "endless fast body",
            {
                let b = big.clone();
                Arc::new(move |_: &Req| Reply::Endless {
                    chunk: b.clone(),
                    every: Duration::ZERO,
                })
            },
            1,
        ),
        (
            "endless slow body",
            Arc::new(|_: &Req| Reply::Endless {
                chunk: b" ".to_vec(),
                every: Duration::from_millis(100),
            }),
            75,
        ),
        (
            "lease garbage",
            {
                let l = leader.clone();
                Arc::new(move |_: &Req| {
                    Reply::Json(
                        200,
                        range_answer(&format!(
                            r#"{{"key":"{}","value":"{}","mod_revision":"3","lease":"-7"}}"#,
                            b64(&l),
                            b64("pg1")
                        )),
                    )
                })
            },
            1,
        ),
        (
            "kvs null",
            Arc::new(|_: &Req| Reply::Json(200, r#"{"header":{},"kvs":null}"#.into())),
            1,
        ),
        (
            "error code past i32",
            Arc::new(|_: &Req| {
                Reply::Json(
                    503,
                    r#"{"error":"etcdserver: no leader","code":99999999999}"#.into(),
                )
            }),
            75,
        ),
        (
            "no answer",
            Arc::new(|_: &Req| Reply::Hang(Duration::from_secs(10))),
            75,
        ),
    ];
    World::run("lies", |w| {
        let mut port = 12700;
        let mut failed = Vec::new();
        for (what, answer, want) in cases {
            port += 1;
            let addr = format!("127.0.0.1:{port}");
            let a = answer.clone();
            fake(&addr, move |_, r| a(r));
            let c = w.config(&format!("{port}.yml"), "pg1", &plain(&addr), true, "");
            let r = hook(&c, HOLD);
            let vip = w.vip_count();
            if r.code != want || r.took > Duration::from_millis(3100) || (want == 1 && vip != 0) {
                failed.push(format!("{what}: want {want}, VIP {vip}: {}", r.text()));
            }
            if vip != 0 {
                w.ip(&["addr", "flush", "dev", "eth1", "to", &format!("{VIP}/32")]);
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n---\n"));
    });
}

/// Keys outside what was asked for are not taken for the leader key, and a
/// txn that "succeeds" at a revision no key has is caught by check-config.
#[test]
fn lying_fakes_do_not_move_the_vip() {
    World::run("lies2", |w| {
        let wrong = range_answer(&format!(
            "{},{}",
            kv("/service/other/leader", "pg1", r#""3""#),
            kv("/service/batman-x/leader", "pg1", r#""4""#)
        ));
        fake("127.0.0.1:12801", move |_, _| {
            Reply::Json(200, wrong.clone())
        });
        let c = w.config("c.yml", "pg1", &plain("127.0.0.1:12801"), true, "");
        let r = hook(&c, HOLD);
        assert_ne!(r.code, 0, "{}", r.text());
        assert_eq!(w.vip_count(), 0, "{}", r.text());

        let leader = range_answer(&kv(&Etcd::key("leader"), "pg1", r#""3""#));
        fake("127.0.0.1:12802", move |_, r| {
            if r.path == "/v3/kv/txn" {
                Reply::Json(200, r#"{"header":{},"succeeded":true}"#.into())
            } else {
                Reply::Json(200, leader.clone())
            }
        });
        let c = w.config("c2.yml", "pg1", &plain("127.0.0.1:12802"), true, "");
        let r = hook(&c, &["check-config", "--online"]);
        assert_eq!(r.code, 1, "{}", r.text());
        assert!(r.all().contains("not an etcd member"), "{}", r.text());
    });
}

// ---- redirects ---------------------------------------------------------------------

/// A 307 is not followed: the port it names receives nothing, neither the
/// password (authenticate redirected) nor the token (a call redirected
/// after authenticate); exit 1.
#[test]
fn redirects_are_not_followed_and_carry_no_secret() {
    World::run("redir", |w| {
        let elsewhere = fake("127.0.0.1:12902", |_, _| Reply::Json(200, "{}".into()));
        let loc = |p: &str| {
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:12902{p}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
        };
        // Everything redirected.
        fake("127.0.0.1:12901", move |_, r| Reply::Raw(loc(&r.path)));
        // Authenticate answered, the call after it redirected.
        let loc2 = |p: &str| {
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:12902{p}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
        };
        let token = "tok-BADDAY-0123456789";
        let tok = token.to_string();
        let after = fake("127.0.0.1:12903", move |_, r| {
            if r.path == "/v3/auth/authenticate" {
                Reply::Json(200, format!(r#"{{"header":{{}},"token":"{tok}"}}"#))
            } else {
                Reply::Raw(loc2(&r.path))
            }
        });
        let pw = w.password_file(PASSWORD);
        let auth = format!(
            "username: patroni-hook-db\npassword_file: {}\n",
            pw.display()
        );
        for (member, creds) in [
            ("127.0.0.1:12901", ""),
            ("127.0.0.1:12901", auth.as_str()),
            ("127.0.0.1:12903", auth.as_str()),
        ] {
            let c = w.config(
                "c.yml",
                "pg1",
                &format!("{}{creds}", plain(member)),
                true,
                "",
            );
            let r = hook(&c, HOLD);
            assert_eq!(r.code, 1, "{member} {creds}: {}", r.text());
            assert!(r.stderr.contains("redirect"), "{}", r.text());
            assert_eq!(elsewhere.conns(), 0, "the redirect's target was reached");
            assert!(
                !leaks(&r.all(), PASSWORD) && !leaks(&r.all(), token),
                "{}",
                r.text()
            );
            assert_eq!(w.vip_count(), 0);
        }
        assert!(after
            .reqs()
            .iter()
            .any(|r| r.header("authorization").as_deref() == Some(token)));
    });
}

// ---- authentication -------------------------------------------------------------------

/// etcd with auth on, the config without credentials: 1, naming the
/// settings; a wrong password: 1, naming password_file, the password
/// never shown.
#[test]
fn auth_on_without_or_with_wrong_credentials_fails_clearly() {
    World::run("auth", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 1,
            auth: true,
            token_ttl: None,
        });
        e.set_leader("pg1");
        let c = w.config("c.yml", "pg1", &plain(&e.hosts()), true, "");
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 1, "{}", r.text());
        assert!(r.stderr.contains("etcd3.username"), "{}", r.text());
        assert_eq!(w.vip_count(), 0);
        let wrong = "Wrong-Pa55word-bad-day";
        let pw = w.password_file(wrong);
        let c = w.config(
            "c2.yml",
            "pg1",
            &format!(
                "{}username: patroni-hook-db\npassword_file: {}\n",
                plain(&e.hosts()),
                pw.display()
            ),
            true,
            "",
        );
        let r = hook(&c, &["-vv", "on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 1, "{}", r.text());
        assert!(r.stderr.contains("etcd3.password_file"), "{}", r.text());
        assert!(!leaks(&r.all(), wrong), "{}", r.text());
        assert_eq!(w.vip_count(), 0);
    });
}

/// Simple tokens with --auth-token-ttl 1: the token expires between two
/// calls of one run (the proxy holds the write for 2.5 s); the run
/// authenticates again, once, and succeeds. Neither the password nor any
/// token shows in stdout, stderr (-vv) or the metrics file, here and when
/// the role lacks the key (permission denied).
#[test]
fn an_expired_token_mid_run_is_renewed_and_no_secret_is_shown() {
    World::run("ttl", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 1,
            auth: true,
            token_ttl: Some(1),
        });
        e.set_leader("pg1");
        let delay = Arc::new(AtomicBool::new(true));
        let d2 = delay.clone();
        let seen = proxy(
            "127.0.0.1:12999",
            &e.members[0].client,
            Default::default(),
            move |_, r| {
                if r.path == "/v3/kv/txn" && d2.swap(false, Ordering::SeqCst) {
                    Act::Delay(Duration::from_millis(2500))
                } else {
                    Act::Forward
                }
            },
        );
        let pw = w.password_file(PASSWORD);
        let metrics = w.path("hook.prom");
        let c = w.config_d(
            "c.yml",
            "pg1",
            &format!("hosts: 127.0.0.1:12999\ntimeout: 4s\nusername: patroni-hook-db\npassword_file: {}\n", pw.display()),
            true,
            "8s",
            &format!("metrics:\n  textfile: {}\n", metrics.display()),
        );
        let r = hook(&c, &["-vv", "on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 0, "{}\n{:?}", r.text(), seen.paths());
        assert_converged(w, &e, Some("pg1"), "after the token expired");
        let auths = seen
            .paths()
            .iter()
            .filter(|p| *p == "/v3/auth/authenticate")
            .count();
        assert_eq!(auths, 2, "{:?}", seen.paths());
        // Permission denied: the role loses vip-holder.
        e.etcdctl(&[
            "role",
            "revoke-permission",
            "patroni-hook-db",
            &Etcd::key("vip-holder"),
        ]);
        e.set_leader("pg2");
        let r2 = hook(&c, &["-vv", "reconcile"]);
        assert_eq!(r2.code, 1, "{}", r2.text());
        assert!(r2.stderr.contains("permission denied"), "{}", r2.text());
        let r3 = hook(&c, &["-vv", "check-config", "--online"]);
        let r4 = hook(&c, &["-vv", "status", "--json"]);
        let tokens: Vec<String> = seen
            .reqs()
            .iter()
            .filter_map(|r| r.header("authorization"))
            .collect();
        assert!(tokens.len() >= 3, "{:?}", seen.paths());
        let prom = std::fs::read_to_string(&metrics).unwrap_or_default();
        for (what, text) in [
            ("run 1", r.all()),
            ("run 2", r2.all()),
            ("check-config", r3.all()),
            ("status", r4.all()),
            ("metrics", prom),
        ] {
            assert!(!leaks(&text, PASSWORD), "{what} shows the password: {text}");
            for t in &tokens {
                assert!(!text.contains(t.as_str()), "{what} shows token {t}: {text}");
            }
        }
    });
}

// ---- compaction ---------------------------------------------------------------------------

/// A compacted history changes nothing for the hook: it never reads at a
/// revision, and a compare on mod_revision needs no history.
#[test]
fn a_compacted_history_does_not_stop_hold_or_release() {
    World::run("compact", |w| {
        let e = one_member();
        let c = w.config("c.yml", "pg1", &plain(&e.hosts()), true, "");
        e.set_leader("pg1");
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 0, "{}", r.text());
        for i in 0..20 {
            e.put(&Etcd::key("members/pg2"), &format!("{{\"n\":{i}}}"));
        }
        e.compact(e.revision());
        e.set_leader("pg2");
        let r = hook(&c, RELEASE);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_converged(w, &e, None, "released after compaction");
        e.compact(e.revision());
        e.set_leader("pg1");
        let r = hook(&c, HOLD);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_converged(w, &e, Some("pg1"), "held after compaction");
    });
}

// ---- typos -----------------------------------------------------------------------------

/// Each typo: exit 2, one line on stderr naming the key, no connection to
/// etcd, no VIP.
#[test]
fn operator_typos_name_the_key_exit_2_and_change_nothing() {
    World::run("typo", |w| {
        let seen = fake("127.0.0.1:12379", |_, _| Reply::Json(200, range_answer("")));
        let lock = w.path("pg1.lock");
        let head = format!("name: pg1\nscope: {SCOPE}\nlock_file: {}\nvip:\n  address: {VIP}/24\n  interface: eth1\n", lock.display());
        for (body, key) in [
            ("dcs: etcd3\netcd3:\n  hosts: http://127.0.0.1:12379,127.0.0.1:12381\n", "etcd3.hosts"),
            ("dcs: etcd3\netcd3:\n  host: https://127.0.0.1:12379\n", "etcd3.host"),
            ("dcs: etcd3\netcd3:\n  host: '127.0.0.1:'\n", "etcd3.host"),
            ("dcs: etcd3\netcd3:\n  host: 127.0.0.1:12379\n  cert: /etc/c.pem\n  key: /etc/k.pem\n", "etcd3.cert"),
            ("dcs: etcd3\netcd3:\n  host: 127.0.0.1:12379\n  protocol: https\n", "etcd3.cacert"),
            ("dcs: etcd3\netcd3:\n  host: 127.0.0.1:12379\n  password: hunter2\n", "etcd3.password"),
            ("dcs: etcd3\netcd3:\n  host: 127.0.0.1:12379\n  username: u\n", "etcd3.password_file"),
            ("dcs: etcd\netcd3:\n  host: 127.0.0.1:12379\n", "dcs"),
            ("dcs: etcd\netcd:\n  host: 127.0.0.1:12379\n", "etcd"),
            ("consul:\n  url: http://127.0.0.1:12379\netcd3:\n  host: 127.0.0.1:12379\n", "dcs"),
            ("dcs: consul\netcd3:\n  host: 127.0.0.1:12379\n", "etcd3"),
            ("dcs: etcd3\n", "etcd3"),
            ("dcs: etcd3\netcd3:\n  host: 127.0.0.1:12379\n  namespace: /\n", "etcd3.namespace"),
        ] {
            let c = w.path("typo.yml");
            std::fs::write(&c, format!("{head}{body}")).unwrap();
            for args in [HOLD, &["reconcile"][..], &["check-config"][..]] {
                let r = hook(&c, args);
                assert_eq!(r.code, 2, "{body}: {}", r.text());
                let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                assert_eq!(lines.len(), 1, "{body}: one line: {}", r.text());
                assert!(lines[0].contains(&format!("{key}:")), "{body}: names {key}: {}", r.text());
            }
            assert_eq!(seen.conns(), 0, "{body}: etcd was called");
            assert_eq!(w.vip_count(), 0, "{body}");
        }
    });
}

/// `namespace: service` (Patroni's own spelling, no leading slash) and
/// `/service/` read where Patroni writes: /service/<scope>/.
#[test]
fn namespace_spellings_read_where_patroni_writes() {
    World::run("ns", |w| {
        let e = one_member();
        e.set_leader("pg1");
        for ns in ["service", "/service/", "//service"] {
            let c = w.config(
                "c.yml",
                "pg1",
                &format!("{}namespace: {ns}\n", plain(&e.hosts())),
                true,
                "",
            );
            let r = hook(&c, HOLD);
            assert_eq!(r.code, 0, "{ns}: {}", r.text());
            assert_converged(w, &e, Some("pg1"), ns);
            let r = hook(&c, RELEASE);
            assert_eq!(r.code, 0, "{ns}: {}", r.text());
        }
    });
}

// ---- two nodes ----------------------------------------------------------------------------

/// pg1 (this world) and pg2 (a second namespace) on one etcd: both promote
/// at once (one of them stale), then the leader flips with the new one's
/// promotion and the old one's demotion at the same moment, a few times:
/// after each round exactly one node has the VIP and vip-holder names it.
#[test]
fn two_nodes_racing_end_with_one_vip_named_by_vip_holder() {
    World::run("race", |w| {
        let e = one_member();
        let n2 = Node2::new(w, "n2", "198.51.100.12");
        // pg2 reaches etcd through a proxy on the world's side of the link.
        proxy(
            "203.0.113.1:12379",
            &e.members[0].client,
            Default::default(),
            |_, _| Act::Forward,
        );
        let c1 = w.config("c1.yml", "pg1", &plain(&e.hosts()), true, "");
        // Another host: its own lock file and state directory.
        let c2 = w.config("c2.yml", "pg2", &plain("203.0.113.1:12379"), true, "");
        let d2 = w.path("pg2");
        std::fs::create_dir(&d2).unwrap();
        let text = std::fs::read_to_string(&c2).unwrap();
        let l2 = w.path("pg2.lock");
        std::fs::write(
            &c2,
            text.replace(
                &l2.display().to_string(),
                &d2.join("pg2.lock").display().to_string(),
            ),
        )
        .unwrap();
        let run2 = |args: &[&str]| spawn_hook_in(Some(&n2.name), &c2, args, &[]);
        let check = |who: &str, what: &str| {
            let (v1, v2) = (w.vip_count(), n2.vip_count());
            let holder = e.holder();
            assert_eq!(
                (v1, v2, holder.as_deref()),
                if who == "pg1" {
                    (1, 0, Some("pg1"))
                } else {
                    (0, 1, Some("pg2"))
                },
                "{what}"
            );
        };
        e.set_leader("pg1");
        let a = spawn_hook(&c1, HOLD);
        let b = run2(HOLD);
        let (ra, rb) = (
            a.wait(Duration::from_secs(10)),
            b.wait(Duration::from_secs(10)),
        );
        assert_eq!(ra.code, 0, "{}", ra.text());
        assert_eq!(rb.code, 1, "pg2 fenced: {}", rb.text());
        check("pg1", "both promoted");
        let mut leader = "pg1";
        for round in 0..4 {
            let next = if leader == "pg1" { "pg2" } else { "pg1" };
            e.set_leader(next);
            let (up, down) = if next == "pg1" {
                (spawn_hook(&c1, HOLD), run2(RELEASE))
            } else {
                (run2(HOLD), spawn_hook(&c1, RELEASE))
            };
            let (ru, rd) = (
                up.wait(Duration::from_secs(10)),
                down.wait(Duration::from_secs(10)),
            );
            assert_eq!(ru.code, 0, "round {round} promote {next}: {}", ru.text());
            assert_eq!(rd.code, 0, "round {round} demote {leader}: {}", rd.text());
            check(next, &format!("round {round}"));
            leader = next;
        }
    });
}

/// The member that issued the run's token restarts between two calls of
/// the run: the run succeeds (authenticating again at most once).
#[test]
fn a_member_restarted_mid_run_forgets_the_token_and_the_run_goes_on() {
    World::run("restart", |w| {
        let e = Arc::new(std::sync::Mutex::new(Etcd::start(EtcdOpts {
            members: 1,
            auth: true,
            token_ttl: None,
        })));
        let upstream = e.lock().unwrap().members[0].client.clone();
        e.lock().unwrap().set_leader("pg1");
        let once = Arc::new(AtomicBool::new(true));
        // Weak: the proxy thread outlives the test, the members must not.
        let (e2, o2) = (Arc::downgrade(&e), once.clone());
        let seen = proxy(
            "127.0.0.1:12999",
            &upstream,
            Default::default(),
            move |_, r| {
                if r.path == "/v3/kv/txn" && o2.swap(false, Ordering::SeqCst) {
                    if let Some(e) = e2.upgrade() {
                        e.lock().unwrap().restart(0);
                    }
                }
                Act::Forward
            },
        );
        let pw = w.password_file(PASSWORD);
        let c = w.config_d(
            "c.yml",
            "pg1",
            &format!(
                "hosts: 127.0.0.1:12999\ntimeout: 5s\nusername: patroni-hook-db\npassword_file: {}\n",
                pw.display()
            ),
            true,
            "10s",
            "",
        );
        let r = hook(&c, &["-vv", "on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 0, "{}\n{:?}", r.text(), seen.paths());
        assert!(
            !once.load(Ordering::SeqCst),
            "restarted: {:?}",
            seen.paths()
        );
        let auths = seen
            .paths()
            .iter()
            .filter(|p| *p == "/v3/auth/authenticate")
            .count();
        // etcd 3.4 replays the authenticate entry from its WAL on restart:
        // the token may well survive; if not, one more authenticate.
        assert!((1..=2).contains(&auths), "{:?}", seen.paths());
        let e = e.lock().unwrap();
        assert_converged(w, &e, Some("pg1"), "after the restart");
        assert!(!leaks(&r.all(), PASSWORD), "{}", r.text());
    });
}

/// The token kept between runs (state directory, etcd-token-<user>):
/// mode 0600, used by the next run without authenticating, replaced when
/// it is garbage, expired or cut short, and never shown.
#[test]
fn the_kept_token_is_private_renewed_when_stale_and_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    World::run("keep", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 1,
            auth: true,
            token_ttl: Some(1),
        });
        e.set_leader("pg1");
        let seen = proxy(
            "127.0.0.1:12999",
            &e.members[0].client,
            Default::default(),
            |_, _| Act::Forward,
        );
        let pw = w.password_file(PASSWORD);
        let c = w.config(
            "c.yml",
            "pg1",
            &format!(
                "hosts: 127.0.0.1:12999\ntimeout: 1s\nusername: patroni-hook-db\npassword_file: {}\n",
                pw.display()
            ),
            true,
            "",
        );
        let kept = w.path("etcd-token-patroni-hook-db");
        let auths = || {
            seen.paths()
                .iter()
                .filter(|p| *p == "/v3/auth/authenticate")
                .count()
        };
        let mut outputs = Vec::new();
        let r = hook(&c, &["-vv", "on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 0, "{}", r.text());
        outputs.push(r.all());
        let mode = std::fs::metadata(&kept)
            .unwrap_or_else(|e| panic!("{}: {e}", kept.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "kept token readable by others: {mode:o}");
        assert_eq!(auths(), 1);
        // At once: the kept token serves.
        let r = hook(&c, &["-vv", "reconcile"]);
        assert_eq!(r.code, 0, "{}", r.text());
        outputs.push(r.all());
        assert_eq!(auths(), 1, "{:?}", seen.paths());
        // Garbage, then a token etcd has let expire: authenticate again.
        for (what, text) in [
            ("garbage", Some("not-a-token-at-all")),
            ("control characters", Some("tok\u{1b}[31m")),
            ("expired", None),
        ] {
            let before = auths();
            match text {
                Some(t) => std::fs::write(&kept, format!("{t}\n")).unwrap(),
                None => std::thread::sleep(Duration::from_millis(2300)),
            }
            e.set_leader(if before % 2 == 0 { "pg1" } else { "pg2" });
            let r = hook(&c, &["-vv", "reconcile"]);
            assert_eq!(r.code, 0, "{what}: {}", r.text());
            assert_eq!(auths(), before + 1, "{what}: {:?}", seen.paths());
            outputs.push(r.all());
        }
        let tokens: Vec<String> = seen
            .reqs()
            .iter()
            .filter_map(|r| r.header("authorization"))
            .collect();
        let kept_now = std::fs::read_to_string(&kept).unwrap_or_default();
        for out in &outputs {
            assert!(!leaks(out, PASSWORD), "password shown: {out}");
            for t in tokens.iter().chain([&kept_now.trim().to_string()]) {
                assert!(
                    t.is_empty() || !out.contains(t.as_str()),
                    "token {t} shown: {out}"
                );
            }
        }
    });
}

// ---- defects these attacks found, fixed (each seen failing first) ----

/// `hosts:` with one entry and a typo: the message names `etcd3.hosts`,
/// the setting written (it once named `etcd3.host`, picked by the number
/// of entries).
#[test]
fn a_typo_in_hosts_with_one_entry_names_etcd3_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.yml");
    for hosts in [
        "hosts: http://127.0.0.1:2379",
        "hosts: [http://127.0.0.1:2379]",
        "hosts: 127.0.0.1:2379 127.0.0.2:2379",
    ] {
        std::fs::write(
            &c,
            format!(
                "name: pg1\nscope: {SCOPE}\nlock_file: {}\ndcs: etcd3\netcd3:\n  {hosts}\nvip:\n  address: {VIP}/24\n  interface: eth1\n",
                dir.path().join("l.lock").display()
            ),
        )
        .unwrap();
        let r = hook(&c, &["check-config"]);
        assert_eq!(r.code, 2, "{}", r.text());
        assert!(
            r.stderr.contains("etcd3.hosts:"),
            "{hosts}: the message must name the key written: {}",
            r.text()
        );
    }
}

/// Patroni squeezes repeated slashes out of `/<namespace>/<scope>`
/// (patroni/dcs/__init__.py: re.sub('/+', '/', ...)); so does the hook, so
/// `namespace: /pg//prod` reads /pg/prod/batman/, where Patroni writes (it
/// once trimmed them only at the ends).
#[test]
fn a_namespace_with_a_doubled_slash_reads_where_patroni_writes() {
    World::run("ns2", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 1,
            auth: false,
            token_ttl: None,
        });
        e.put(&format!("/pg/prod/{SCOPE}/leader"), "pg1");
        let c = w.config(
            "c.yml",
            "pg1",
            &format!("hosts: {}\ntimeout: 1s\nnamespace: /pg//prod\n", e.hosts()),
            true,
            "",
        );
        let r = hook(&c, &["on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_eq!(w.vip_count(), 1);
    });
}

/// Something that is not HTTP answers on the member's port (an operator
/// typo: another service's port). The contract: a malformed answer is a
/// failure (1), not a temporary one (75) that a caller retries forever (it
/// once read as "unreachable").
#[test]
fn a_non_http_answer_is_a_failure_not_temporary() {
    World::run("nonhttp", |w| {
        for (port, garbage) in [
            (12801, &b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"[..]),
            (
                12802,
                &b"\x00\x00\x00\x04\x00\x00\x00\x00garbage\r\n\r\n"[..],
            ),
        ] {
            let addr = format!("127.0.0.1:{port}");
            let g = garbage.to_vec();
            fake(&addr, move |_, _| Reply::Raw(g.clone()));
            let c = w.config(
                "c.yml",
                "pg1",
                &format!("hosts: {addr}\ntimeout: 1s\n"),
                true,
                "",
            );
            let r = hook(&c, &["on_role_change", "primary", SCOPE]);
            assert_eq!(r.code, 1, "{}", r.text());
        }
    });
}

/// A member (or whatever answers on its port) whose error body quotes the
/// request: the authenticate call's body holds the password, and the hook
/// quotes up to 200 bytes of an error body in its message: redacted first
/// (it once showed the password).
#[test]
fn an_error_body_echoing_the_request_does_not_show_the_password() {
    World::run("echo", |w| {
        fake("127.0.0.1:12811", |_, r| {
            Reply::Json(400, format!("bad request: {}", r.body))
        });
        let pw = w.password_file(PASSWORD);
        let c = w.config(
            "c.yml",
            "pg1",
            &format!(
                "hosts: 127.0.0.1:12811\ntimeout: 1s\nusername: patroni-hook-db\npassword_file: {}\n",
                pw.display()
            ),
            true,
            "",
        );
        let r = hook(&c, &["on_role_change", "primary", SCOPE]);
        assert_eq!(r.code, 1, "{}", r.text());
        assert!(
            !leaks(&r.all(), PASSWORD),
            "the password is shown: {}",
            r.text()
        );
    });
}

/// Two promotions race: pg1's run read the leader key (pg1) and added the
/// VIP; before its check-and-set of vip-holder lands, the leader key moves
/// to pg2 and pg2's promotion records pg2. pg1's check-and-set is refused;
/// src/node/vip.rs `record` reads again, and `plan::record_step_again`
/// sees the leader key has moved on and writes nothing. (It once wrote pg1
/// over pg2's record; pg1's demotion then deleted it, and pg2 held the VIP
/// with no record naming it.)
#[test]
fn a_refused_record_is_not_retried_over_the_new_leaders_record() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    World::run("race2", |w| {
        let e = Etcd::start(EtcdOpts {
            members: 1,
            auth: false,
            token_ttl: None,
        });
        let n2 = Node2::new(w, "n2", "198.51.100.12");
        proxy(
            "203.0.113.1:12379",
            &e.members[0].client,
            Default::default(),
            |_, _| Act::Forward,
        );
        let (held, go) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h2, g2) = (held.clone(), go.clone());
        proxy(
            "127.0.0.1:12998",
            &e.members[0].client,
            Default::default(),
            move |_, r| {
                if r.path == "/v3/kv/txn" && !h2.swap(true, Ordering::SeqCst) {
                    let t0 = Instant::now();
                    while !g2.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(3) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Act::Forward
            },
        );
        let c1 = w.config(
            "c1.yml",
            "pg1",
            "hosts: 127.0.0.1:12998\ntimeout: 2s\n",
            true,
            "",
        );
        let d2 = w.path("pg2");
        std::fs::create_dir(&d2).unwrap();
        let c2 = w.config(
            "c2.yml",
            "pg2",
            "hosts: 203.0.113.1:12379\ntimeout: 1s\n",
            true,
            "",
        );
        let text = std::fs::read_to_string(&c2).unwrap();
        std::fs::write(
            &c2,
            text.replace(
                &w.path("pg2.lock").display().to_string(),
                &d2.join("pg2.lock").display().to_string(),
            ),
        )
        .unwrap();
        e.set_leader("pg1");
        let a = spawn_hook(&c1, &["on_role_change", "primary", SCOPE]);
        let t0 = Instant::now();
        while !held.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(3), "pg1 never wrote");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Switchover while pg1's record is in flight.
        e.set_leader("pg2");
        let r2 = spawn_hook_in(
            Some(&n2.name),
            &c2,
            &["on_role_change", "primary", SCOPE],
            &[],
        )
        .wait(Duration::from_secs(10));
        assert_eq!(r2.code, 0, "{}", r2.text());
        assert_eq!(e.holder().as_deref(), Some("pg2"));
        go.store(true, Ordering::SeqCst);
        let r1 = a.wait(Duration::from_secs(10));
        assert_eq!(
            e.holder().as_deref(),
            Some("pg2"),
            "pg1's late record replaced the leader's: {}",
            r1.text()
        );
        // Patroni demotes pg1.
        let r = hook(&c1, &["on_role_change", "replica", SCOPE]);
        assert_eq!(r.code, 0, "{}", r.text());
        assert_eq!((w.vip_count(), n2.vip_count()), (0, 1));
        assert_eq!(
            e.holder().as_deref(),
            Some("pg2"),
            "no record names the holder"
        );
    });
}
