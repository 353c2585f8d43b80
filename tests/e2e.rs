//! End to end, on the lab: real Patroni 4 + PostgreSQL 15 on three network
//! namespaces, the Consul double, PgBouncer and a client writing through both
//! paths, all brought up by `scripts/lab.sh` (the same implementation the demo
//! and the bench use; the topology is not repeated here).
//!
//! One lab is brought up once and four events run on it: a switchover, a
//! failover by SIGKILL of the primary's Patroni and PostgreSQL, a clean stop of
//! the primary, and a SIGKILL of Patroni alone. For each, lab.sh samples the
//! three nodes' addresses every 20 ms and writes `result.json`; this test
//! asserts on it and checks the end state itself: the VIP on the new primary
//! only (`ip -j addr`), `vip-holder` naming it, pgbouncer.ini pointing at it,
//! writes through PgBouncer and through the VIP landing on it, and every row
//! the client saw acknowledged present. Outages are printed, never asserted
//! (LAB.md: timing targets belong to the bench).
//!
//! Needs root, iproute2, PostgreSQL 15, PgBouncer, psql, setpriv, setcap, curl,
//! the Patroni virtualenv ($PATRONI_VENV) and the consul-double binary (built
//! by `cargo test --workspace`). Missing: a failure under CI=true, else a skip
//! that says what is missing.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where e2e labs keep their state: apart from an operator's own lab.
const LAB_ROOT: &str = "/run/patroni-hook-lab-e2e";
const SCOPE: &str = "labcluster";
const VIP: &str = "198.51.100.100";
const NODES: [(&str, &str); 3] = [
    ("db1", "198.51.100.11"),
    ("db2", "198.51.100.12"),
    ("db3", "198.51.100.13"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_sh() -> PathBuf {
    repo().join("scripts/lab.sh")
}

fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("PATRONI_VENV").unwrap_or_else(|_| "/opt/patroni-hook-test/venv".into()),
    )
}

fn on_path(prog: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| Path::new(d).join(prog).exists());
    found
}

/// The consul-double binary next to this test's hook binary (same profile),
/// else the release one.
fn double_bin() -> Option<PathBuf> {
    let hook = PathBuf::from(env!("CARGO_BIN_EXE_patroni-hook"));
    let same = hook.with_file_name("consul-double");
    if same.exists() {
        return Some(same);
    }
    let release = repo().join("target/release/consul-double");
    release.exists().then_some(release)
}

/// Whether the lab can run here. LAB.md: under CI=true a missing prerequisite
/// fails; elsewhere the test prints exactly what is missing and returns.
fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for prog in ["ip", "pgbouncer", "psql", "setpriv", "setcap", "curl"] {
        if !on_path(prog) {
            missing.push(prog.to_string());
        }
    }
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        missing.push("PostgreSQL 15 (/usr/lib/postgresql/15/bin/postgres)".into());
    }
    if nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .is_none()
    {
        missing.push("the postgres user".into());
    }
    let patroni = venv().join("bin/patroni");
    if !patroni.exists() {
        missing.push(format!("{} (PATRONI_VENV)", patroni.display()));
    }
    if double_bin().is_none() {
        missing.push("the consul-double binary (cargo build -p consul-double)".into());
    }
    common::require(&missing)
}

/// Output that must be seen in CI logs: straight to the process's stderr,
/// past libtest's capture.
fn show(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// One lab, taken down (by lab.sh, by pid) when this value is dropped, also
/// when the test panics.
struct Lab {
    id: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        remove_orphans();
        Lab {
            id: format!("e{tag}{}", std::process::id()),
        }
    }

    fn run_dir(&self) -> PathBuf {
        Path::new(LAB_ROOT).join(&self.id)
    }

    fn ns(&self, host: &str) -> String {
        format!("phl-{}-{host}", self.id)
    }

    /// Runs `lab.sh ARGS` for this lab, bounded by `timeout`; returns
    /// (success, combined output).
    fn sh(&self, args: &[&str], timeout: Duration, extra_env: &[(&str, &str)]) -> (bool, String) {
        lab_command(&self.id, args, timeout, extra_env)
    }

    /// Like `sh`, panicking with the output when it fails.
    fn sh_ok(&self, args: &[&str], timeout: Duration) -> String {
        let (ok, out) = self.sh(args, timeout, &[]);
        show(&out);
        assert!(
            ok,
            "scripts/lab.sh {} failed (output above)",
            args.join(" ")
        );
        out
    }

    /// Runs a command inside the lab's client namespace; its stdout, trimmed.
    fn in_client(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("client"), program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    /// The nodes whose eth1 carries the VIP, from `ip -j addr` in each namespace.
    fn vip_holders(&self) -> Vec<String> {
        NODES
            .iter()
            .filter(|(n, _)| {
                let out = Command::new("ip")
                    .args(["-j", "-n", &self.ns(n), "addr", "show", "dev", "eth1"])
                    .output()
                    .expect("ip -j addr");
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("ip -j addr prints JSON");
                v[0]["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["local"] == VIP)
            })
            .map(|(n, _)| n.to_string())
            .collect()
    }

    fn consul_raw(&self, key: &str) -> String {
        self.in_client(
            "curl",
            &[
                "-s",
                "--max-time",
                "2",
                &format!("http://198.51.100.2:8500/v1/kv/service/{SCOPE}/{key}?raw"),
            ],
        )
        .1
    }

    /// Which node answers a write on `conninfo` (the data directory's node name).
    fn write_lands_on(&self, conninfo: &str) -> (bool, String) {
        self.in_client(
            "psql",
            &[
                &format!("{conninfo} user=lab connect_timeout=3"),
                "-Atqc",
                "INSERT INTO lab_writes(event, path, seq) VALUES ('e2e-probe', 'probe', \
                 (SELECT coalesce(max(seq), 0) + 1 FROM lab_writes WHERE event = 'e2e-probe')) \
                 RETURNING split_part(current_setting('data_directory'), '/', -2)",
            ],
        )
    }

    /// Runs one event and checks what a user would notice afterwards.
    fn event(&self, kind: &str) -> serde_json::Value {
        let started = Instant::now();
        self.sh_ok(&[kind], Duration::from_secs(420));
        let dir = std::fs::read_dir(self.run_dir().join("events"))
            .expect("events directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(&format!("-{kind}")))
            .max()
            .unwrap_or_else(|| panic!("no event directory for {kind}"));
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("result.json")).expect("result.json"),
        )
        .expect("result.json is JSON");
        let old = r["old"].as_str().expect("old").to_string();
        let new = r["new"].as_str().expect("new").to_string();
        show(&format!(
            "e2e {kind}: {old} -> {new} in {:.0?}; outage PgBouncer {} ms, VIP {} ms, \
             Patroni's own {} ms; VIP on two nodes {} ms; VIP {} ms after on_role_change",
            started.elapsed(),
            r["pgbouncer_outage_ms"],
            r["vip_outage_ms"],
            r["patroni_outage_ms"],
            r["two_holders_ms"],
            r["vip_after_callback_ms"],
        ));
        assert_ne!(old, new, "{kind}: the leader did not change");
        assert_eq!(
            r["converged"], true,
            "{kind}: lab.sh did not see convergence"
        );

        // The end state, checked here independently of lab.sh's own waits.
        assert_eq!(self.consul_raw("leader"), new, "{kind}: leader key");
        assert_eq!(
            self.vip_holders(),
            vec![new.clone()],
            "{kind}: the VIP must be on the new primary only"
        );
        let holder: serde_json::Value =
            serde_json::from_str(&self.consul_raw("vip-holder")).expect("vip-holder is JSON");
        assert_eq!(
            holder["member"],
            new.as_str(),
            "{kind}: vip-holder {holder}"
        );
        let new_addr = NODES.iter().find(|(n, _)| *n == new).expect("known node").1;
        let ini = std::fs::read_to_string(self.run_dir().join("pgbouncer/pgbouncer.ini"))
            .expect("pgbouncer.ini");
        let appdb = ini
            .lines()
            .find(|l| l.starts_with("appdb"))
            .expect("appdb entry");
        assert!(
            appdb.contains(&format!("host={new_addr} ")),
            "{kind}: pgbouncer.ini should point at {new_addr}: {appdb}"
        );
        for (path, conninfo) in [
            ("PgBouncer", "host=198.51.100.20 port=6432 dbname=appdb"),
            ("the VIP", "host=198.51.100.100 port=5432 dbname=postgres"),
        ] {
            assert_eq!(
                self.write_lands_on(conninfo),
                (true, new.clone()),
                "{kind}: a write through {path} should land on {new}"
            );
        }

        // The client's own account: it wrote through every path, and every row
        // it saw acknowledged is on the primary afterwards.
        for path in ["pgbouncer", "vip", "direct"] {
            assert!(
                r["acked"][path].as_u64().unwrap_or(0) > 0,
                "{kind}: no acknowledged writes through {path}: {}",
                r["acked"]
            );
        }
        assert_eq!(
            r["missing_acked_rows"], 0,
            "{kind}: acknowledged rows are missing (see load-result.json)"
        );
        assert!(
            r["sampler"]
                .as_str()
                .is_some_and(|s| s.starts_with("samples=")),
            "{kind}: the address sampler did not finish: {}",
            r["sampler"]
        );
        r
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(dir) = std::env::var("LAB_E2E_KEEP") {
                show(&format!("keeping the lab's logs in {dir}"));
                let (_, out) = self.sh(
                    &["down"],
                    Duration::from_secs(180),
                    &[("LAB_KEEP_LOGS", &dir)],
                );
                show(&out);
                return;
            }
        }
        let (ok, out) = self.sh(&["down"], Duration::from_secs(180), &[]);
        if !ok {
            show(&format!("lab.sh down for {} failed:\n{out}", self.id));
        }
    }
}

/// Runs lab.sh for run id `id`, bounded; on timeout kills lab.sh by its pid
/// (the caller's guard then takes the lab down).
fn lab_command(
    id: &str,
    args: &[&str],
    timeout: Duration,
    extra_env: &[(&str, &str)],
) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = Command::new("bash");
    cmd.arg(lab_sh())
        .args(args)
        .env("LAB_RUN_ID", id)
        .env("LAB_ROOT", LAB_ROOT)
        .env("LAB_HOOK_BIN", env!("CARGO_BIN_EXE_patroni-hook"))
        .env(
            "LAB_DOUBLE_BIN",
            double_bin().unwrap_or_else(|| PathBuf::from("/nonexistent/consul-double")),
        )
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn scripts/lab.sh");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lab.sh") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let _ = log.reopen().expect("log").read_to_string(&mut out);
    match status {
        Some(s) => (s.success(), out),
        None => (
            false,
            format!(
                "{out}\ntimed out after {timeout:?} waiting for scripts/lab.sh {}",
                args.join(" ")
            ),
        ),
    }
}

/// Takes down labs of earlier test processes that were killed before their
/// guards ran (their run id carries their pid).
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(LAB_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .trim_start_matches(|c: char| c.is_ascii_lowercase())
            .parse::<u32>();
        if let Ok(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let (_, out) = lab_command(&name, &["down"], Duration::from_secs(180), &[]);
                show(&format!("removed orphaned lab {name}:\n{out}"));
            }
        }
    }
}

/// The namespaces of a lab that still exist.
fn namespaces_of(id: &str) -> Vec<String> {
    let prefix = format!("phl-{id}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Every pid the lab recorded, plus the postmasters.
fn recorded_pids(run: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir(run.join("pids"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(pid) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            pids.push(pid);
        }
    }
    for (n, _) in NODES {
        if let Some(pid) = std::fs::read_to_string(run.join(n).join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Asserts that `down` left nothing: no namespace, no recorded process, no run dir.
fn assert_gone(id: &str, run: &Path, pids: &[i32]) {
    assert!(
        namespaces_of(id).is_empty(),
        "namespaces left: {:?}",
        namespaces_of(id)
    );
    let living: Vec<_> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(living.is_empty(), "processes still running: {living:?}");
    assert!(!run.exists(), "{} still exists", run.display());
}

#[test]
fn failover_events_on_a_real_patroni_cluster() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let lab = Lab::new("");
    lab.sh_ok(&["up"], Duration::from_secs(300));
    show(&lab.sh_ok(&["status"], Duration::from_secs(60)));

    let sw = lab.event("switchover");
    assert_eq!(
        sw["two_holders_ms"], 0.0,
        "switchover: the VIP was on two nodes while Patroni ran on both: {}",
        sw["two_holder_spans"]
    );

    let fo = lab.event("failover");
    show(&format!(
        "e2e failover: the killed node kept the VIP {} ms after the new primary got it (safety net)",
        fo["old_kept_vip_after_new_got_it_ms"]
    ));

    let stop = lab.event("stop-primary");
    assert_eq!(
        stop["two_holders_ms"], 0.0,
        "clean stop: the VIP was on two nodes: {}",
        stop["two_holder_spans"]
    );

    let kp = lab.event("kill-patroni");
    show(&format!(
        "e2e kill-patroni: the old node kept the VIP {} ms after the new primary got it, until the safety net removed it",
        kp["old_kept_vip_after_new_got_it_ms"]
    ));

    let run = lab.run_dir();
    let pids = recorded_pids(&run);
    assert!(pids.len() >= 9, "recorded pids: {pids:?}");
    lab.sh_ok(&["down"], Duration::from_secs(180));
    assert_gone(&lab.id, &run, &pids);
    show(&format!("e2e: all events in {:.0?}", started.elapsed()));
}

#[test]
fn down_removes_a_partial_lab() {
    if !prerequisites() {
        return;
    }
    let lab = Lab::new("p");
    let (ok, out) = lab.sh(
        &["up"],
        Duration::from_secs(120),
        &[("LAB_FAIL_AFTER", "consul")],
    );
    assert!(!ok, "up with LAB_FAIL_AFTER=consul should fail:\n{out}");
    assert!(
        namespaces_of(&lab.id).len() == 7,
        "a partial up should have left its 7 namespaces: {:?}\n{out}",
        namespaces_of(&lab.id)
    );
    let run = lab.run_dir();
    let pids = recorded_pids(&run);
    assert!(
        pids.iter().any(|p| alive(*p)),
        "the Consul double should be running: {pids:?}\n{out}"
    );
    lab.sh_ok(&["down"], Duration::from_secs(120));
    assert_gone(&lab.id, &run, &pids);
}
