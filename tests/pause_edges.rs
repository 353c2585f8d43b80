//! The edges of a switchover pause, on the pause lab (real PgBouncer, two
//! real PostgreSQL, the Consul double, fake Patroni REST APIs): clocks that
//! disagree or step, an operator's own PAUSE, a host lock or an admin
//! console that is busy, configurations changed while paused, before-stop
//! where there is nothing to stop for. Each test names what must hold.

mod common;

use common::fake_consul::{FakeConsul, Reply};
use common::pause_lab::{add_robin, new_leader_pg2, request, stderr, unix_now, Lab, SCOPE};
use common::{require_all, text, tls, wait_for};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Takes the PgBouncer host's lock, as another run would.
fn hold_pgb_lock(lab: &Lab) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lab.dir.path().join("pgb.lock"))
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// A resume sends the queued clients to wherever the entries point: with
/// the entries not yet moved (the host lock busy), the pause holds, and the
/// next run moves them and resumes.
#[test]
fn a_pause_ends_only_once_the_entries_point_at_the_new_leader() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pause_for_a_switchover();
    new_leader_pg2(&lab);
    let lock = hold_pgb_lock(&lab);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        lab.paused(),
        "resumed towards the old primary: {}",
        text(&out)
    );
    assert!(!stderr(&out).contains("resumed"), "{}", text(&out));
    drop(lock);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
    assert_eq!(lab.ini_port(), lab.b.port.to_string());
}

/// The request's time stamp comes from the database node's clock: a node
/// whose clock is behind or ahead still gets its pause. Only a request older
/// than any stop (an hour) is ignored, and that is said.
#[test]
fn a_request_is_served_whatever_the_database_nodes_clock_says() {
    let Some(lab) = Lab::start("10s") else { return };
    for (id, since) in [("behind", unix_now() - 30), ("ahead", unix_now() + 120)] {
        request(&lab, "pg1", id, since);
        let out = lab.reconcile();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(lab.paused(), "clock {id}: not paused: {}", text(&out));
        lab.consul.kv_delete(&lab.key("pause-request"));
        let out = lab.reconcile();
        assert!(!lab.paused(), "{}", text(&out));
    }
    request(&lab, "pg1", "stale", unix_now() - 2 * 3600);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused());
    let err = stderr(&out);
    assert!(
        err.contains("INFO") && err.contains("stale") && err.contains("ignored"),
        "{}",
        text(&out)
    );
}

/// A Patroni REST API on https is asked too (trusting
/// `pgbouncer.patroni_ca_file`): no resume before the new leader answers as
/// a writable primary.
#[test]
fn the_new_leader_is_asked_over_https_too() {
    if !tls::require_openssl() {
        return;
    }
    let Some(lab) = Lab::start("10s") else { return };
    let d = tempfile::tempdir().unwrap();
    tls::make_pki(d.path());
    let status = d.path().join("patroni");
    std::fs::write(&status, r#"{"state":"running","role":"replica"}"#).unwrap();
    let server = tls::Server::start(d.path(), "-WWW");
    lab.consul.kv_put(
        &lab.key("members/pg2"),
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{}/postgres","api_url":"https://127.0.0.1:{}/patroni"}}"#,
            lab.b.port, server.port
        )
        .as_bytes(),
    );
    lab.edit_pgb_config(|s| {
        s.replace("deadline: 5s", "deadline: 2s").replace(
            "  pause_timeout:",
            &format!(
                "  patroni_ca_file: {}\n  pause_timeout:",
                d.path().join("ca.pem").display()
            ),
        )
    });
    lab.pause_for_a_switchover();
    lab.set_leader("pg2");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(lab.paused(), "resumed before promotion: {}", text(&out));
    std::fs::write(&status, r#"{"state":"running","role":"primary"}"#).unwrap();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
    assert_eq!(lab.ini_port(), lab.b.port.to_string());
}

/// A pause lasts pause_timeout by the host's boot clock: the wall clock
/// stepping back (NTP, a resumed VM) does not stretch it.
#[test]
fn a_wall_clock_step_does_not_stretch_a_pause() {
    if !require_all(&[(
        "the faketime command (Debian package faketime)",
        Command::new("faketime").arg("--version").output().is_ok(),
    )]) {
        return;
    }
    let Some(lab) = Lab::start("2s") else { return };
    lab.pause_for_a_switchover();
    let started = Instant::now();
    wait_for("pause_timeout to pass", Duration::from_secs(5), || {
        started.elapsed() > Duration::from_millis(2100)
    });
    let out = Command::new("faketime")
        .args(["-f", "-600s"])
        .arg(common::hook::bin())
        .arg("--config")
        .arg(&lab.pgb_config)
        .arg("reconcile")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .output()
        .unwrap();
    assert!(
        !lab.paused(),
        "the step stretched the pause: {}",
        text(&out)
    );
}

/// What was paused is resumed, even when the configuration no longer names
/// it: a database dropped from the list, a scope renamed.
#[test]
fn a_pause_is_undone_whatever_the_configuration_says_now() {
    let Some(lab) = Lab::start("2s") else { return };
    lab.edit_pgb_config(|s| s.replace("databases: [appdb]", "databases: [appdb, appdb2]"));
    lab.pause_for_a_switchover();
    assert!(lab.paused_db("appdb2"));
    lab.edit_pgb_config(|s| s.replace("databases: [appdb, appdb2]", "databases: [appdb]"));
    let started = Instant::now();
    wait_for("pause_timeout to pass", Duration::from_secs(5), || {
        started.elapsed() > Duration::from_millis(2100)
    });
    let out = lab.reconcile();
    assert!(!lab.paused_db("appdb"), "{}", text(&out));
    assert!(!lab.paused_db("appdb2"), "left paused: {}", text(&out));
    // The scope renamed while paused: nothing will ever lead it here, so its
    // pause ends at the next run.
    lab.consul.kv_delete(&lab.key("pause-request"));
    lab.edit_pgb_config(|s| s.replace("databases: [appdb]", "databases: [appdb, appdb2]"));
    lab.pause_for_a_switchover();
    lab.edit_pgb_config(|s| s.replace(&format!("scope: {SCOPE}"), "scope: robin"));
    let out = lab.reconcile();
    assert!(!lab.paused_db("appdb"), "{}", text(&out));
    assert!(!lab.paused_db("appdb2"), "{}", text(&out));
    assert!(
        stderr(&out).contains("no longer configured"),
        "{}",
        text(&out)
    );
    // Renamed back: the request it served is still served; no second pause.
    lab.edit_pgb_config(|s| s.replace("scope: robin", &format!("scope: {SCOPE}")));
    let out = lab.reconcile();
    assert!(
        !lab.paused(),
        "the same request paused twice: {}",
        text(&out)
    );
}

/// A managed database that PgBouncer has paused, with no record of this
/// host pausing it (an operator's PAUSE, a record lost), is not resumed by
/// the hook, and every run says so.
#[test]
fn a_pause_without_a_record_is_reported_and_left() {
    let Some(lab) = Lab::start("10s") else { return };
    let prom = lab.dir.path().join("hook.prom");
    lab.edit_pgb_config(|s| format!("{s}metrics:\n  textfile: {}\n", prom.display()));
    lab.pause_for_a_switchover();
    std::fs::remove_file(lab.pause_record(SCOPE)).unwrap();
    let out = lab.reconcile();
    assert!(lab.paused());
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("appdb") && err.contains("no record"),
        "{}",
        text(&out)
    );
    // Seen by monitoring too (an alert fires on it), not only in the log.
    let body = std::fs::read_to_string(&prom).unwrap();
    assert!(
        body.contains("patroni_hook_pgbouncer_unrecorded_pauses{scope=\"batman\"} 1"),
        "{body}"
    );
}

/// Patroni runs before_stop on a restart too; the primary that comes back
/// withdraws its request in its on_restart callback, also on a node with no
/// vip section (PgBouncer pointed at the leader).
#[test]
fn a_leader_back_from_a_restart_withdraws_its_request_without_a_vip_section() {
    let Some(lab) = Lab::start("10s") else { return };
    // A standby cluster's leader (role standby_leader, no vip.standby_leader,
    // so its callback releases any VIP) still leads: it withdraws too.
    for role in ["primary", "standby_leader"] {
        lab.pause_for_a_switchover();
        let out = lab
            .hook(&lab.db_config, &["on_restart", role, SCOPE])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{role}: {}", text(&out));
        assert!(
            lab.consul.kv_get(&lab.key("pause-request")).is_none(),
            "{role}: request left: {}",
            text(&out)
        );
        let out = lab.reconcile();
        assert!(!lab.paused(), "{role}: {}", text(&out));
    }
}

/// An operator's PAUSE is theirs: the hook neither claims nor ends it; a
/// PAUSE that PgBouncer refuses (an operator's global PAUSE) is said as such.
#[test]
fn an_operators_pause_is_left_to_the_operator() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pgb.admin("PAUSE appdb");
    lab.pause_for_a_switchover();
    new_leader_pg2(&lab);
    let out = lab.reconcile();
    assert_eq!(lab.ini_port(), lab.b.port.to_string(), "{}", text(&out));
    assert!(lab.paused(), "the operator's pause ended: {}", text(&out));
    lab.pgb.admin("RESUME appdb");
    // A global PAUSE: PgBouncer refuses PAUSE of one database at once.
    lab.consul.kv_delete(&lab.key("pause-request"));
    lab.set_leader("pg1");
    lab.pgb.admin("PAUSE");
    let before_stop = lab.hook(&lab.db_config, &["before-stop"]).spawn().unwrap();
    wait_for("the pause request", Duration::from_secs(5), || {
        lab.consul.kv_get(&lab.key("pause-request")).is_some()
    });
    let out = lab.reconcile();
    let _ = before_stop.wait_with_output();
    lab.pgb.admin("RESUME");
    let err = stderr(&out);
    assert!(
        err.contains("refused") && !err.contains("did not complete"),
        "{}",
        text(&out)
    );
    // Undone with a leader present: that is no leaderless period's pause.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.pause_record(SCOPE)).unwrap()).unwrap();
    assert_eq!(record["leaderless_served"], false, "{record}");
}

/// RELOAD on an admin console that never answers ends in time for the
/// SIGHUP, whatever the deadline: PgBouncer follows the new leader. The
/// console that would say whether PgBouncer loaded the file does not
/// answer either, so the run does not claim it (75) and the reload stays
/// pending; the next run, with the console answering, reloads, sees the
/// new entry, and clears it.
#[test]
fn a_reload_falls_back_to_sighup_within_a_short_deadline() {
    let Some(lab) = Lab::start("10s") else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute = listener.local_addr().unwrap().port();
    let _mute = FakeConsul::start(listener, |_| Reply::Hang);
    let real = format!("port: {}\n", lab.pgb.port);
    lab.edit_pgb_config(|s| {
        s.replace("deadline: 5s", "deadline: 1s")
            .replace(&real, &format!("port: {mute}\n"))
            .replace("  pause_timeout:", "  pause_on: never\n  pause_timeout:")
    });
    new_leader_pg2(&lab);
    let started = Instant::now();
    let out = lab.reconcile();
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(stderr(&out).contains("sending SIGHUP"), "{}", text(&out));
    assert!(stderr(&out).contains("is not known"), "{}", text(&out));
    wait_for(
        "PgBouncer to load the new entry",
        Duration::from_secs(5),
        || lab.ini_port() == lab.b.port.to_string(),
    );
    assert!(lab.reload_pending().exists(), "{}", text(&out));
    lab.edit_pgb_config(|s| s.replace(&format!("port: {mute}\n"), &real));
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("reloaded pgbouncer (RELOAD on the admin console)"),
        "{}",
        text(&out)
    );
    assert!(!lab.reload_pending().exists(), "{}", text(&out));
}

/// The file alone does not say what PgBouncer serves: pgbouncer.ini that
/// already points at the leader while PgBouncer still serves the old one
/// (a reload it did not take, by a run that did not check) is reloaded, and
/// the run ends only once `SHOW DATABASES` shows the leader.
#[test]
fn a_file_that_points_at_the_leader_is_not_taken_for_what_pgbouncer_serves() {
    let Some(lab) = Lab::start("10s") else { return };
    new_leader_pg2(&lab);
    lab.edit_ini(|s| {
        s.replacen(
            &format!("appdb = host=127.0.0.1 port={} ", lab.a.port),
            &format!("appdb = host=127.0.0.1 port={} ", lab.b.port),
            1,
        )
    });
    assert_eq!(lab.ini_port(), lab.a.port.to_string());
    assert!(!lab.reload_pending().exists());
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.ini_port(),
        lab.b.port.to_string(),
        "PgBouncer still serves the old leader: {}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("still serves appdb"),
        "{}",
        text(&out)
    );
    // Now it does: nothing more to do, no reload.
    let reloads = lab.pgb.log_text().matches("RELOAD command issued").count();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("already points at the leaders"),
        "{}",
        text(&out)
    );
    assert_eq!(
        lab.pgb.log_text().matches("RELOAD command issued").count(),
        reloads,
        "{}",
        text(&out)
    );
}

/// The metrics textfile has its own lock: a run records itself while
/// another run holds the host lock.
#[test]
fn a_run_is_counted_while_another_holds_the_host_lock() {
    let Some(lab) = Lab::start("10s") else { return };
    let prom = lab.dir.path().join("hook.prom");
    lab.edit_pgb_config(|s| {
        format!("{s}metrics:\n  textfile: {}\n", prom.display())
            .replace(&lab.consul.url(), "http://127.0.0.1:1")
    });
    let lock = hold_pgb_lock(&lab);
    let out = lab.reconcile();
    drop(lock);
    let text_out = text(&out);
    let body = std::fs::read_to_string(&prom).unwrap_or_default();
    assert!(
        body.contains("patroni_hook_runs_total{action=\"reconcile\",exit_code=\"75\""),
        "{text_out}\n{body}"
    );
}

/// `pause_on: always` pauses a leaderless cluster once: after pause_timeout
/// it resumes and stays resumed until a leader came and went again.
#[test]
fn pause_on_always_pauses_once_per_leaderless_period() {
    let Some(lab) = Lab::start("2s") else { return };
    lab.edit_pgb_config(|s| s.replace("  pause_timeout:", "  pause_on: always\n  pause_timeout:"));
    lab.consul.kv_delete(&lab.key("leader"));
    lab.reconcile();
    assert!(lab.paused());
    let started = Instant::now();
    wait_for("pause_timeout to pass", Duration::from_secs(5), || {
        started.elapsed() > Duration::from_millis(2100)
    });
    let out = lab.reconcile();
    assert!(!lab.paused(), "{}", text(&out));
    let out = lab.reconcile();
    assert!(
        !lab.paused(),
        "paused again in the same period: {}",
        text(&out)
    );
    lab.set_leader("pg1");
    lab.reconcile();
    lab.consul.kv_delete(&lab.key("leader"));
    let out = lab.reconcile();
    assert!(lab.paused(), "a new leaderless period: {}", text(&out));
}

/// before-stop that nobody confirms says so, rather than blaming Consul.
#[test]
fn before_stop_unconfirmed_says_how_many_confirmed() {
    let Some(lab) = Lab::start("10s") else { return };
    let out = lab.hook(&lab.db_config, &["before-stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(stderr(&out).contains("0 of 1"), "{}", text(&out));
}

/// before-stop on a node that does not lead (a replica's restart, a wrong
/// scope) asks for nothing and returns at once.
#[test]
fn before_stop_where_this_node_does_not_lead_asks_nothing() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.set_leader("pg2");
    let started = Instant::now();
    let out = lab.hook(&lab.db_config, &["before-stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_millis(900));
    assert!(lab.consul.kv_get(&lab.key("pause-request")).is_none());
    let out = lab
        .hook(&lab.db_config, &["before-stop", "--scope", "batmna"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(lab.consul.kv_get("service/batmna/pause-request").is_none());
}

/// A pause past pause_timeout ends in the run that finds it so, even when
/// that run waited on a hanging Consul first.
#[test]
fn a_pause_ends_at_pause_timeout_when_consul_hangs() {
    let Some(lab) = Lab::start("3s") else { return };
    lab.pause_for_a_switchover();
    let started = Instant::now();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang = FakeConsul::start(listener, |_| Reply::Hang);
    lab.edit_pgb_config(|s| {
        s.replace(&lab.consul.url(), &hang.url())
            .replace("timeout: 1s", "timeout: 2s")
    });
    wait_for("a part of pause_timeout", Duration::from_secs(5), || {
        started.elapsed() > Duration::from_millis(1200)
    });
    // The run starts 1.2 s into the pause and waits 2 s on Consul.
    let out = lab.reconcile();
    assert!(started.elapsed() > Duration::from_secs(3), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
}

/// Runs `reconcile` held `delay_us` by strace right after its first read of
/// the pause record (what it decides from; the record is absent then).
fn reconcile_with_record_read_delayed(lab: &Lab, delay_us: u64) -> std::process::Child {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=openat"])
        .arg("-P")
        .arg(lab.pause_record(SCOPE))
        .arg("-e")
        .arg(format!("inject=openat:delay_exit={delay_us}:when=1"))
        .arg(common::hook::bin())
        .arg("--config")
        .arg(&lab.pgb_config)
        .arg("reconcile")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two reconciles on one request (the pause-request watch and the timer):
/// the one that reads PgBouncer after the other paused must not take that
/// pause for an operator's and drop its record. One pause, recorded, made
/// once.
#[test]
fn two_reconciles_on_one_request_make_one_recorded_pause() {
    if !require_all(&[("strace", Command::new("strace").arg("-V").output().is_ok())]) {
        return;
    }
    let Some(lab) = Lab::start("10s") else { return };
    request(&lab, "pg1", "r1", unix_now());
    // A starts first (the older ticket), reads "no record" and goes on
    // after 0.3 s; B starts next, reads "no record" too, and reaches
    // PgBouncer after A paused.
    let a = reconcile_with_record_read_delayed(&lab, 300_000);
    std::thread::sleep(Duration::from_millis(50));
    let b = reconcile_with_record_read_delayed(&lab, 1_000_000);
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    let both = format!("A: {}\nB: {}", text(&a), text(&b));
    assert!(lab.paused(), "{both}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.pause_record(SCOPE)).unwrap()).unwrap();
    assert!(
        !record["paused"].is_null(),
        "the pause lost its record: {record}\n{both}"
    );
    let made = (stderr(&a) + &stderr(&b)).matches("paused appdb").count();
    assert_eq!(made, 1, "{both}");
    assert!(!both.contains("operator"), "{both}");
}

/// The leader stops again while its first pause is held (its withdrawal
/// was lost, a restart retried): the new request is confirmed and the pause
/// holds, not taken for a cancelled switchover.
#[test]
fn a_second_request_from_the_leader_while_paused_is_confirmed() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pause_for_a_switchover();
    request(&lab, "pg1", "second", unix_now());
    let out = lab.reconcile();
    assert!(
        lab.paused(),
        "resumed while the leader stops: {}",
        text(&out)
    );
    assert!(!stderr(&out).contains("cancelled"), "{}", text(&out));
    let ack = lab
        .consul
        .kv_get(&lab.key("pause-ack/pgb"))
        .expect("a confirmation");
    assert!(
        String::from_utf8_lossy(&ack.value).contains("\"second\""),
        "{}",
        String::from_utf8_lossy(&ack.value)
    );
}

/// before-stop ends within before_stop.wait, metrics included (their lock
/// held by another run); a wait longer than the deadline is refused.
#[test]
fn before_stop_ends_within_its_wait_whatever_holds_the_metrics_lock() {
    let Some(lab) = Lab::start("10s") else { return };
    let prom = lab.dir.path().join("db.prom");
    let cfg = std::fs::read_to_string(&lab.db_config).unwrap();
    std::fs::write(
        &lab.db_config,
        format!(
            "{}metrics:\n  textfile: {}\n",
            cfg.replace("wait: 3s", "wait: 1s"),
            prom.display()
        ),
    )
    .unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lab.dir.path().join("db.metrics.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let started = Instant::now();
    let out = lab.hook(&lab.db_config, &["before-stop"]).output().unwrap();
    let took = started.elapsed();
    drop(held);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        took < Duration::from_millis(1500),
        "{took:?}: {}",
        text(&out)
    );
    std::fs::write(
        &lab.db_config,
        format!("{cfg}deadline: 2s\n").replace("wait: 3s", "wait: 20s"),
    )
    .unwrap();
    let out = lab.hook(&lab.db_config, &["before-stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("before_stop.wait"), "{}", text(&out));
}

/// A pgbouncer.patroni_ca_file that cannot be read is a configuration
/// error at once, in every run, not at the first switchover.
#[test]
fn an_unreadable_patroni_ca_file_is_refused_at_once() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.edit_pgb_config(|s| {
        s.replace(
            "  pause_timeout:",
            "  patroni_ca_file: /nonexistent/ca.pem\n  pause_timeout:",
        )
    });
    for args in [&["reconcile"][..], &["check-config"][..]] {
        let out = lab.hook(&lab.pgb_config, args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains("pgbouncer.patroni_ca_file") && err.contains("/nonexistent/ca.pem"),
            "{}",
            text(&out)
        );
    }
}

/// A new leader that is not writable in time: the log says what its REST
/// API answered, not the time-out of the last try.
#[test]
fn a_new_leader_not_yet_writable_is_reported_with_its_answer() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.edit_pgb_config(|s| s.replace("deadline: 5s", "deadline: 1s"));
    lab.pause_for_a_switchover();
    lab.set_leader("pg2");
    let out = lab.reconcile();
    assert!(lab.paused());
    assert!(stderr(&out).contains("role replica"), "{}", text(&out));
}

/// Runs that see the new leader together resume once, and say so once.
#[test]
fn concurrent_runs_at_the_new_leader_resume_once() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pause_for_a_switchover();
    new_leader_pg2(&lab);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            lab.hook(&lab.pgb_config, &["reconcile"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = runs
        .into_iter()
        .map(|r| r.wait_with_output().unwrap())
        .collect();
    let all: String = outs.iter().map(text).collect::<Vec<_>>().join("\n");
    assert!(!lab.paused(), "{all}");
    assert_eq!(all.matches("resumed appdb").count(), 1, "{all}");
}

/// A fake Patroni REST API whose `/patroni` answers `role` (running).
fn api_with_role(role: &'static str) -> FakeConsul {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    FakeConsul::start(listener, move |r| match r.path.as_str() {
        "/patroni" => Reply::Respond(
            200,
            vec![],
            format!(r#"{{"state":"running","role":"{role}"}}"#).into_bytes(),
        ),
        _ => Reply::Respond(404, vec![], vec![]),
    })
}

/// Clusters do not wait on each other: while one cluster's new leader is
/// not yet writable (the run waits for it, up to the pause's end), another
/// cluster's switchover gets its pause at once, not after that wait.
#[test]
fn a_cluster_waiting_for_its_new_leader_does_not_hold_up_another() {
    let Some(lab) = Lab::start("10s") else { return };
    add_robin(&lab);
    // robin is paused for a switchover to pg3, which stays a replica.
    lab.consul.kv_put(
        "service/robin/pause-request",
        format!(r#"{{"member":"pg1","id":"rr","since":{}}}"#, unix_now()).as_bytes(),
    );
    let out = lab.reconcile();
    assert!(lab.paused_db("appdb2"), "{}", text(&out));
    let replica = api_with_role("replica");
    lab.consul.kv_put(
        "service/robin/members/pg3",
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{}/postgres","api_url":"{}/patroni"}}"#,
            lab.b.port,
            replica.url()
        )
        .as_bytes(),
    );
    lab.consul.kv_put("service/robin/leader", b"pg3");
    lab.consul.kv_delete("service/robin/pause-request");
    // batman's old primary asks for its pause meanwhile.
    request(&lab, "pg1", "bb", unix_now());
    let out = lab.reconcile();
    let err = stderr(&out);
    let paused_at = err.find("paused appdb (cluster batman)");
    let waited_at = err.find("is not a writable primary yet");
    assert!(paused_at.is_some() && waited_at.is_some(), "{}", text(&out));
    assert!(
        paused_at < waited_at,
        "batman's pause waited for robin's new leader: {}",
        text(&out)
    );
    assert!(lab.paused(), "{}", text(&out));
}

/// A standby cluster's new standby leader answers role standby_leader, not
/// primary: that ends the pause, as a writable primary does in a primary
/// cluster (it is all a standby cluster's leader ever becomes).
#[test]
fn a_standby_clusters_new_standby_leader_ends_the_pause() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pause_for_a_switchover();
    let standby = api_with_role("standby_leader");
    lab.consul.kv_put(
        &lab.key("members/pg2"),
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{}/postgres","api_url":"{}/patroni","role":"standby_leader"}}"#,
            lab.b.port,
            standby.url()
        )
        .as_bytes(),
    );
    lab.set_leader("pg2");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "still paused: {}", text(&out));
    assert_eq!(lab.ini_port(), lab.b.port.to_string());
}

/// `patronictl switchover --scheduled` writes the failover key at once,
/// with scheduled_at in the future: until then no switchover is under way,
/// and a restart's pause ends when the primary is back.
#[test]
fn a_scheduled_switchover_does_not_hold_a_restarts_pause() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.consul.kv_put(
        &lab.key("failover"),
        br#"{"leader":"pg1","member":"pg2","scheduled_at":"2999-01-01T00:00:00+00:00"}"#,
    );
    lab.pause_for_a_switchover();
    // pg1 is back from its restart: its on_start withdraws its request.
    lab.consul.kv_delete(&lab.key("pause-request"));
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !lab.paused(),
        "held for a scheduled switchover: {}",
        text(&out)
    );
}

/// A run that read Consul before a switchover ended must not PAUSE on that
/// old view once it is over: the view is read again right before PAUSE.
#[test]
fn a_pause_decided_on_a_stale_view_is_not_made() {
    if !require_all(&[("strace", Command::new("strace").arg("-V").output().is_ok())]) {
        return;
    }
    let Some(lab) = Lab::start("10s") else { return };
    request(&lab, "pg1", "old", unix_now());
    // A reads the request, then is held for a second.
    let a = reconcile_with_record_read_delayed(&lab, 1_000_000);
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the stop is over: pg2 leads, the request is gone, and a
    // run has followed the new leader.
    lab.consul.kv_delete(&lab.key("pause-request"));
    new_leader_pg2(&lab);
    let b = lab.reconcile();
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let a = a.wait_with_output().unwrap();
    assert!(
        !lab.paused(),
        "paused after the switchover was over:\nA: {}\nB: {}",
        text(&a),
        text(&b)
    );
}

/// Without pgbouncer.admin a pause this host holds cannot be ended: every
/// run says so and fails, rather than leaving PgBouncer paused in silence.
#[test]
fn a_pause_held_without_an_admin_console_fails_every_run() {
    let Some(lab) = Lab::start("10s") else { return };
    lab.pause_for_a_switchover();
    lab.edit_pgb_config(|s| {
        let start = s.find("  admin:\n").unwrap();
        let end = s[start..].find("  pause_timeout").unwrap() + start;
        format!("{}{}", &s[..start], &s[end..])
    });
    for _ in 0..2 {
        let out = lab.reconcile();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr(&out).contains("pgbouncer.admin"), "{}", text(&out));
    }
    assert!(lab.paused());
}

/// A managed database dropped from pgbouncer.ini while paused: PgBouncer
/// answers RESUME with "no such database"; there is nothing paused left,
/// so the record goes and the cluster's next switchover gets its pause.
#[test]
fn a_database_dropped_while_paused_does_not_wedge_its_record() {
    let Some(lab) = Lab::start("2s") else { return };
    lab.pause_for_a_switchover();
    lab.edit_ini(|s| {
        s.lines()
            .filter(|l| !l.starts_with("appdb ="))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    lab.pgb.admin("RELOAD");
    std::thread::sleep(Duration::from_millis(2100));
    let out = lab.reconcile();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.pause_record(SCOPE)).unwrap()).unwrap();
    assert!(
        record["paused"].is_null(),
        "the record stays: {record}\n{}",
        text(&out)
    );
}

/// The metrics say where the file points, not where the run meant it to:
/// a rewrite refused (an entry of the cluster that does not parse) leaves
/// target_info on the old leader's port, and wanted_info names the new one.
#[test]
fn target_info_says_what_the_file_holds() {
    let Some(lab) = Lab::start("10s") else { return };
    let prom = lab.dir.path().join("m.prom");
    lab.edit_pgb_config(|s| {
        s.replace("databases: [appdb]", "databases: [appdb, appdb2]")
            + &format!("metrics:\n  textfile: {}\n", prom.display())
    });
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lab.edit_ini(|s| {
        s.lines()
            .map(|l| {
                if l.starts_with("appdb2 =") {
                    format!("{l} application_name='unterminated\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    });
    new_leader_pg2(&lab);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let metrics = std::fs::read_to_string(&prom).unwrap();
    let line = |name: &str, with: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(with))
            .unwrap_or_default()
            .to_string()
    };
    let target = line("patroni_hook_pgbouncer_target_info{", "database=\"appdb\"");
    assert!(
        target.contains(&format!("port=\"{}\"", lab.a.port)),
        "target_info names where the run meant to point, not the file: {target}\n{metrics}\n{}",
        text(&out)
    );
    let wanted = line("patroni_hook_pgbouncer_wanted_info{", "");
    assert!(
        wanted.contains(&format!("port=\"{}\"", lab.b.port)),
        "{wanted}\n{metrics}"
    );
}
