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

/// A RELOAD that PgBouncer does not take is no reload. PgBouncer 1.18's
/// console answers `RELOAD` whatever became of the file: one it cannot load
/// (here `%include` of a file that does not exist; in the fault matrix an
/// operator's edit caught between its truncate and its write) is logged and
/// the old entries are kept. Resuming then would send the queued clients to
/// the old primary. So the run fails, the reload stays pending, the pause
/// holds; the file alone (pointing at the new leader) does not make a later
/// run take PgBouncer for converged, with the mark or without it. Once the
/// file loads again, the next run reloads, sees PgBouncer serve the new
/// leader, and resumes: the clients waited and none failed.
#[test]
fn a_reload_pgbouncer_refuses_resumes_nothing_until_it_is_taken() {
    let Some(mut lab) = Lab::start("60s") else {
        return;
    };
    let load = Load::start(lab.pgb.port, 2);
    wait_for(
        "the clients to run through PgBouncer",
        Duration::from_secs(10),
        || load.ok.load(Ordering::SeqCst) > 20,
    );
    lab.pause_for_a_switchover();
    lab.a.stop();
    let good = std::fs::read_to_string(&lab.pgb.ini).unwrap();
    lab.edit_ini(|s| format!("%include /nonexistent/x.ini\n{s}"));
    lab.set_leader("pg2");
    lab.api_b.primary.store(true, Ordering::SeqCst);
    let a_port = lab.a.port.to_string();
    let refused = |out: &std::process::Output, what: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{what}: {}", text(out));
        assert!(
            lab.paused(),
            "{what}: resumed while PgBouncer serves the old primary: {}",
            text(out)
        );
        assert_eq!(lab.ini_port(), a_port, "{what}: {}", text(out));
        for said in ["reloaded pgbouncer", "resumed appdb", "already points"] {
            assert!(!err.contains(said), "{what}: said {said:?}: {}", text(out));
        }
        assert!(
            lab.reload_pending().exists(),
            "{what}: the reload is no longer pending: {}",
            text(out)
        );
    };
    let out = lab.reconcile();
    let file = std::fs::read_to_string(&lab.pgb.ini).unwrap();
    assert!(
        file.contains(&format!("port={} ", lab.b.port)),
        "the file points at the new leader: {file}"
    );
    refused(&out, "the run that rewrote the file");
    assert!(
        lab.pgb.log_text().contains("config file loading failed"),
        "PgBouncer refused the file: {}",
        lab.pgb.log_text()
    );
    let out = lab.reconcile();
    refused(&out, "the next run, with the reload pending");
    // Without the mark (an older version's run cleared it on RELOAD's
    // answer), what PgBouncer serves still decides.
    std::fs::remove_file(lab.reload_pending()).unwrap();
    let out = lab.reconcile();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(lab.paused(), "{}", text(&out));
    assert_eq!(lab.ini_port(), a_port, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still serves appdb"),
        "{}",
        text(&out)
    );

    // The operator mends the file: the next run reloads, checks, resumes.
    lab.edit_ini(|s| s.replacen("%include /nonexistent/x.ini\n", "", 1));
    assert_eq!(
        std::fs::read_to_string(&lab.pgb.ini).unwrap(),
        good.replacen(
            &format!("appdb = host=127.0.0.1 port={} ", lab.a.port),
            &format!("appdb = host=127.0.0.1 port={} ", lab.b.port),
            1
        )
    );
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
    assert_eq!(lab.ini_port(), lab.b.port.to_string());
    assert!(!lab.reload_pending().exists(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("reloaded pgbouncer") && err.contains("resumed appdb"),
        "{}",
        text(&out)
    );
    let served = Instant::now() + Duration::from_secs(10);
    while load.ports.lock().unwrap().last() != Some(&lab.b.port.to_string()) {
        assert!(
            Instant::now() < served,
            "the clients were not served by the new primary: ports {:?}, errors {:?}",
            load.ports.lock().unwrap(),
            load.errors.lock().unwrap()
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
    assert_eq!(ports, vec![a_port, lab.b.port.to_string()], "{ok} queries");
}

/// The fault matrix's case: the RELOAD lands while an operator's edit is
/// being written, PgBouncer refuses the file as it is at that moment, and
/// the edit is done milliseconds later. The run sees PgBouncer still serve
/// the old primary, reloads again once the file points at the leader, and
/// only then resumes.
#[test]
fn a_reload_refused_while_the_file_is_being_edited_is_made_again() {
    let Some(mut lab) = Lab::start("60s") else {
        return;
    };
    lab.pause_for_a_switchover();
    lab.a.stop();
    lab.edit_ini(|s| format!("%include /nonexistent/x.ini\n{s}"));
    lab.set_leader("pg2");
    lab.api_b.primary.store(true, Ordering::SeqCst);
    let refusals = lab
        .pgb
        .log_text()
        .matches("config file loading failed")
        .count();
    let run = lab
        .hook(&lab.pgb_config, &["reconcile"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The operator's write ends right after PgBouncer refused the file.
    wait_for(
        "PgBouncer to refuse the file the run reloaded it onto",
        Duration::from_secs(10),
        || {
            lab.pgb
                .log_text()
                .matches("config file loading failed")
                .count()
                > refusals
        },
    );
    lab.edit_ini(|s| s.replacen("%include /nonexistent/x.ini\n", "", 1));
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        lab.ini_port(),
        lab.b.port.to_string(),
        "PgBouncer serves the old primary: {}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lab.paused(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trying again"),
        "{}",
        text(&out)
    );
    assert!(!lab.reload_pending().exists(), "{}", text(&out));
    let mut client = pg::Client::connect(lab.pgb.port, "appdb");
    assert_eq!(
        client.query_line("SELECT name FROM marker;"),
        "b",
        "{}",
        text(&out)
    );
}
