//! PgBouncer paused for a switchover: real PgBouncer 1.18 in front of two
//! real PostgreSQL 15 instances, the Consul double, and a fake Patroni REST
//! API per member (`GET /patroni`: role primary or replica, as the test says).
//!
//! The old primary's `before-stop` asks for the pause and waits for it; the
//! PgBouncer host's reconcile (run here as the Consul watch would run it)
//! pauses, and resumes once the new leader answers as a writable primary.
//! Clients through PgBouncer wait instead of failing. Every way a pause can
//! end is checked: the new leader, a cancelled switchover, pause_timeout
//! with Consul gone, a run killed while PAUSE waited, a PAUSE that cannot
//! complete in time.

mod common;

use common::pause_lab::{Lab, Load, SCOPE};
use common::pg;
use common::{text, wait_for};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn a_switchover_through_a_pause_fails_no_client() {
    let Some(mut lab) = Lab::start("10s") else {
        return;
    };
    let load = Load::start(lab.pgb.port, 4);
    wait_for(
        "the clients to run through PgBouncer",
        Duration::from_secs(10),
        || load.ok.load(Ordering::SeqCst) > 20,
    );
    // Patroni on the old primary: checkpoint, then before_stop (which waits
    // for the pause), then the fast stop.
    let before_stop = lab
        .hook(&lab.db_config, &["before-stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the pause request in Consul",
        Duration::from_secs(5),
        || lab.consul.kv_get(&lab.key("pause-request")).is_some(),
    );
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stopped = before_stop.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped));
    assert!(
        String::from_utf8_lossy(&stopped.stderr).contains("paused by pgb"),
        "{}",
        text(&stopped)
    );
    assert!(lab.paused(), "appdb paused");
    lab.a.stop();
    // A run while the old primary is down and nobody leads: stays paused.
    lab.consul.kv_delete(&lab.key("leader"));
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(lab.paused());
    // The new leader takes the key; its PostgreSQL is promoted a little later.
    lab.set_leader("pg2");
    let promote = {
        let flag = lab.api_b.primary.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        })
    };
    let out = lab.reconcile();
    promote.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "resumed: {}", text(&out));
    assert_eq!(lab.ini_port(), lab.b.port.to_string());
    let served = Instant::now() + Duration::from_secs(10);
    let last_port = || load.ports.lock().unwrap().last().cloned();
    while last_port() != Some(lab.b.port.to_string()) {
        assert!(
            Instant::now() < served,
            "the clients were not served by the new primary: ports {:?}, errors {:?}, log {}",
            load.ports.lock().unwrap(),
            load.errors.lock().unwrap(),
            lab.pgb.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, errors, ports) = load.finish();
    assert!(
        errors.is_empty(),
        "{} client errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(
        ports,
        vec![lab.a.port.to_string(), lab.b.port.to_string()],
        "{ok} queries"
    );
    // Tidied up: the request and the confirmation are gone.
    assert!(lab.consul.kv_get(&lab.key("pause-request")).is_none());
    assert!(lab.consul.kv_get(&lab.key("pause-ack/pgb")).is_none());
}

#[test]
fn a_cancelled_switchover_resumes() {
    let Some(lab) = Lab::start("10s") else {
        return;
    };
    lab.pause_for_a_switchover();
    // A run now: the old primary is still stopping.
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(lab.paused());
    // The stop failed and the node leads on: its on_role_change withdraws
    // the request (the hook on a database node; here, the same delete).
    lab.consul.kv_delete(&lab.key("pause-request"));
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_pause_ends_at_pause_timeout_even_without_consul() {
    let Some(lab) = Lab::start("2s") else {
        return;
    };
    lab.pause_for_a_switchover();
    // Consul goes away.
    let cfg = std::fs::read_to_string(&lab.pgb_config)
        .unwrap()
        .replace(&lab.consul.url(), "http://127.0.0.1:1");
    std::fs::write(&lab.pgb_config, cfg).unwrap();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(lab.paused(), "not yet: {}", text(&out));
    let started = Instant::now();
    wait_for("pause_timeout to pass", Duration::from_secs(5), || {
        started.elapsed() > Duration::from_millis(2100)
    });
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(!lab.paused(), "resumed at pause_timeout: {}", text(&out));
}

#[test]
fn a_pause_that_cannot_complete_is_undone_and_a_killed_pause_is_too() {
    let Some(lab) = Lab::start("2s") else {
        return;
    };
    // A client holds a transaction open through PgBouncer: PAUSE waits for it.
    let mut holder = pg::Client::connect(lab.pgb.port, "appdb");
    holder.query_line("BEGIN;");
    holder.query_line("SELECT 1;");
    let before_stop = lab.hook(&lab.db_config, &["before-stop"]).spawn().unwrap();
    wait_for("the pause request", Duration::from_secs(5), || {
        lab.consul.kv_get(&lab.key("pause-request")).is_some()
    });
    let out = lab.reconcile();
    assert!(
        !lab.paused(),
        "PAUSE that did not complete is undone: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not complete"),
        "{}",
        text(&out)
    );
    let stopped = before_stop.wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(75),
        "no confirmation: {}",
        text(&stopped)
    );
    // Again, and this time the run is killed while PAUSE waits: the pause it
    // made is undone by the next run (here, once the switchover is over).
    lab.consul.kv_delete(&lab.key("pause-request"));
    let before_stop = lab.hook(&lab.db_config, &["before-stop"]).spawn().unwrap();
    wait_for("the pause request", Duration::from_secs(5), || {
        lab.consul.kv_get(&lab.key("pause-request")).is_some()
    });
    let mut run = lab.hook(&lab.pgb_config, &["reconcile"]).spawn().unwrap();
    wait_for(
        "PgBouncer to mark appdb paused",
        Duration::from_secs(5),
        || lab.paused(),
    );
    run.kill().unwrap();
    let _ = run.wait();
    let _ = before_stop.wait_with_output();
    holder.query_line("COMMIT;");
    assert!(
        lab.paused(),
        "the killed run's pause stays until a run undoes it"
    );
    lab.consul.kv_delete(&lab.key("pause-request"));
    let out = lab.reconcile();
    assert!(!lab.paused(), "{}", text(&out));
    drop(holder);
}

/// Two runs that both see the new leader (the watches on the leader key and
/// on the failover key fire together): the second finds nothing paused and
/// says nothing is wrong.
#[test]
fn a_second_resume_of_the_same_pause_is_no_error() {
    let Some(lab) = Lab::start("10s") else {
        return;
    };
    lab.pause_for_a_switchover();
    let state = lab
        .pgb_config
        .parent()
        .unwrap()
        .join(format!("pgbouncer-pause-{SCOPE}.json"));
    let kept = std::fs::read(&state).expect("the pause is recorded");
    lab.set_leader("pg2");
    lab.api_b.primary.store(true, Ordering::SeqCst);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused());
    // A run that read the record before the first one cleared it.
    std::fs::write(&state, kept).unwrap();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused());
}
