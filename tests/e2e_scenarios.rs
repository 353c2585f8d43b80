//! End to end, the lab's scenarios beyond failover: `scripts/lab.sh backup`,
//! `adopt-single` and `adopt-cluster`, each on a lab of its own (real Patroni
//! 4 + PostgreSQL 15 in network namespaces, Consul (real 1.8.7, three servers
//! and an agent per host, or the double: `LAB_CONSUL`, else
//! `LAB_CONSUL_DEFAULT` of scripts/lab/topology.env), PgBouncer, the hook,
//! Debian's pgbackrest 2.45 with a repository host over TLS), run by
//! the same program lab.sh runs (scripts/lab/labtool.py; lab.sh itself first
//! installs missing packages, which scripts/test.sh has done already).
//!
//! Each scenario prints its checks and exits 0 only when every one held;
//! this test asserts that, then reads `lab-<scenario>.json` and checks what
//! a user would: every check there held, no acknowledged row was lost, the
//! outages were measured (printed, never asserted: timing belongs to the
//! bench), the point-in-time recovery kept every row acknowledged before its
//! target and none after it; and that the lab left no namespace behind.
//!
//! Needs root, iproute2, PostgreSQL 15, PgBouncer, psql, setpriv, setcap,
//! curl, openssl, pgbackrest, the Patroni virtualenv ($PATRONI_VENV) and
//! Consul 1.8.7 (real) or the consul-double binary (double). Missing: a
//! failure under CI=true, else a skip that says what is missing.

mod common;

use common::lab::{double_bin, repo, venv};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where these labs keep their state: apart from an operator's own lab and
/// from tests/e2e.rs's.
const LAB_ROOT: &str = "/run/patroni-hook-lab-scenarios";

/// One lab at a time: two would share two cores between six PostgreSQL.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn show(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn prerequisites() -> bool {
    let missing = common::lab::missing(
        &[
            "ip",
            "pgbouncer",
            "psql",
            "setpriv",
            "setcap",
            "curl",
            "openssl",
            "pgbackrest",
        ],
        true,
    );
    common::require(&missing)
}

/// Namespaces of run id `id` that still exist.
fn namespaces_of(id: &str) -> Vec<String> {
    common::lab::namespaces_with_prefix(&format!("phl-{id}-"))
}

/// `lab.sh down` for run id `id` (the scenario takes its lab down itself;
/// this is the guard for a scenario killed before it could).
fn lab_down(id: &str) -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/lab.sh"))
        .arg("down")
        .env("LAB_RUN_ID", id)
        .env("LAB_ROOT", LAB_ROOT)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("lab.sh down: {e}"),
    }
}

/// The lab of one scenario run, taken down when dropped if the scenario
/// left it up.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        if Path::new(LAB_ROOT).join(&self.0).exists() || !namespaces_of(&self.0).is_empty() {
            show(&lab_down(&self.0));
        }
    }
}

/// Runs `labtool.py SCENARIO` bounded by `timeout`, its output shown; returns
/// its result file.
fn scenario(name: &str, tag: &str, timeout: Duration) -> serde_json::Value {
    common::lab::remove_orphans(LAB_ROOT, lab_down);
    let id = format!("{tag}{}", std::process::id());
    let _guard = Guard(id.clone());
    let out_dir = tempfile::tempdir().expect("a results directory");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let started = Instant::now();
    let mut child = Command::new(venv().join("bin/python"))
        .arg(repo().join("scripts/lab/labtool.py"))
        .arg(name)
        .env("LAB_RUN_ID", &id)
        .env("LAB_ROOT", LAB_ROOT)
        .env("LAB_OUT_DIR", out_dir.path())
        .env("LAB_HOOK_BIN", env!("CARGO_BIN_EXE_patroni-hook"))
        .env(
            "LAB_DOUBLE_BIN",
            double_bin().unwrap_or_else(|| PathBuf::from("/nonexistent/consul-double")),
        )
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn labtool.py");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for labtool.py") {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            // SIGTERM: labtool takes its lab down on the way out.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = String::new();
    let _ = log.reopen().expect("log").read_to_string(&mut output);
    show(&output);
    show(&format!(
        "e2e scenario {name}: {:.0?}, exit {:?}",
        started.elapsed(),
        status.map(|s| s.code())
    ));
    let status =
        status.unwrap_or_else(|| panic!("scripts/lab.sh {name} did not finish within {timeout:?}"));
    assert!(
        status.success(),
        "scripts/lab.sh {name} failed (its checks above)"
    );
    assert!(
        namespaces_of(&id).is_empty(),
        "{name} left namespaces: {:?}",
        namespaces_of(&id)
    );
    let path = out_dir.path().join(format!("lab-{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r["scenario"], name);
    let checks = r["checks"].as_array().expect("checks");
    assert!(checks.len() >= 10, "{name}: only {} checks", checks.len());
    for c in checks {
        assert_eq!(c["ok"], true, "{name}: check failed: {c}");
        assert!(c["name"].is_string(), "{c}");
    }
    assert_eq!(r["lost_rows"], 0, "{name}: acknowledged rows lost");
    for path in ["vip", "pgbouncer"] {
        assert!(
            r["outage_ms"][path].is_number(),
            "{name}: no outage through {path}: {}",
            r["outage_ms"]
        );
    }
    show(&format!(
        "e2e scenario {name}: {} checks held, outage VIP {} ms, PgBouncer {} ms",
        checks.len(),
        r["outage_ms"]["vip"],
        r["outage_ms"]["pgbouncer"]
    ));
    r
}

fn has_check(r: &serde_json::Value, needle: &str) -> bool {
    r["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"].as_str().is_some_and(|n| n.contains(needle)) && c["ok"] == true)
}

#[test]
fn backup_scenario_backs_up_rebuilds_and_recovers_to_a_point_in_time() {
    if !prerequisites() {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let r = scenario("backup", "eb", Duration::from_secs(900));
    let before = r["rows_before_target"].as_u64().unwrap_or(0);
    assert!(before > 0, "no rows acknowledged before the target: {r}");
    assert_eq!(
        r["rows_after_target_found"], 0,
        "rows after the target came back"
    );
    assert!(
        r["rows_after_target"].as_u64().unwrap_or(0) > 0,
        "nothing was written after the target: {r}"
    );
    for needle in [
        "pgbackrest check before the switchover",
        "pgbackrest check after the switchover",
        "with the pgbackrest method",
        "streams again",
        "PostgreSQL stopped recovery at the target",
        "after the switchover: the VIP on the leader",
        "after the point-in-time recovery: pgbouncer.ini points at the leader",
    ] {
        assert!(has_check(&r, needle), "backup: no passed check {needle:?}");
    }
}

#[test]
fn adopt_single_takes_over_a_standalone_node_in_place() {
    if !prerequisites() {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let r = scenario("adopt-single", "es", Duration::from_secs(600));
    for needle in [
        "data taken over in place",
        "the VIP stayed on db1 through the adoption",
        "adopted, not added",
        "pgbouncer.ini unchanged byte for byte",
        "db2 added as a streaming replica",
        "switchover: the new primary serves PgBouncer and the VIP",
        "differs only in the managed entry's host",
    ] {
        assert!(
            has_check(&r, needle),
            "adopt-single: no passed check {needle:?}"
        );
    }
}

#[test]
fn adopt_cluster_takes_over_streaming_replicas_without_recloning() {
    if !prerequisites() {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let r = scenario("adopt-cluster", "ec", Duration::from_secs(600));
    for needle in [
        "db2: same data directory, same system identifier",
        "db3 was not re-cloned",
        "one system identifier for all three",
        "the VIP stayed on db1 through the adoption",
        "pgbouncer.ini unchanged byte for byte",
        "the old glue stays stopped",
        "switchover: the new primary serves PgBouncer and the VIP",
    ] {
        assert!(
            has_check(&r, needle),
            "adopt-cluster: no passed check {needle:?}"
        );
    }
}
