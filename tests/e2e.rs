//! End to end, on the lab: real Patroni 4 + PostgreSQL 15 on three network
//! namespaces, PgBouncer and a client writing through both paths, all brought
//! up by `scripts/lab.sh` and driven by `scripts/lab/labtool.py` (the same
//! implementation the demo and the bench use). Names, addresses and ports come
//! from `scripts/lab/topology.env`, the lab's one definition of its layout.
//!
//! The hook's lab (Patroni on Consul: real Consul 1.8.7 with three servers and
//! an agent per host, or the double; `LAB_CONSUL`, else `LAB_CONSUL_DEFAULT`
//! of scripts/lab/topology.env) is brought up once and four
//! events run on it: a switchover, a failover by SIGKILL of the primary's
//! Patroni and PostgreSQL, a clean stop of the primary, and a SIGKILL of
//! Patroni alone. For each, labtool samples the three nodes' addresses every
//! 20 ms and writes `result.json`; this test asserts on it and checks the end
//! state itself: the VIP on the new primary only (`ip -j addr`), `vip-holder`
//! naming it, pgbouncer.ini pointing at it, writes through PgBouncer and through
//! the VIP landing on it, and every row the client saw acknowledged present.
//! The hook's lab on etcd3 (three etcd 3.4 members over TLS with client
//! certificates and the kit's RBAC, Patroni's etcd3 backend, the hook with
//! `dcs: etcd3`, reconcile from the kit's patroni-hook-etcd-watch@.service)
//! gets a switchover, a failover and a SIGKILL of Patroni alone, with the
//! same checks. The vip-manager lab (Patroni on the same etcd members' v2
//! API, Debian's vip-manager moving the VIP) gets one switchover with the
//! same end-state checks, so the bench's comparison rows cannot rot. A third lab runs the fault matrix
//! (`scripts/lab.sh faults`, scripts/lab/labkit/faults.py) but for its killed-runs
//! fault, with fewer repeats (slow-consul, the double's delay file, on the
//! double only; the faults of Raft, agents and tokens on real Consul only),
//! and this test checks every row it writes. Outages are printed, never asserted (timing
//! targets belong to the bench).
//!
//! Needs root, iproute2, PostgreSQL 15, PgBouncer, psql, setpriv, setcap, curl,
//! the Patroni virtualenv ($PATRONI_VENV) with Patroni's etcd extra, Consul
//! 1.8.7 and openssl (real) or the consul-double binary (double; built by
//! `cargo test --workspace`), vip-manager and
//! etcd (Debian's vip-manager and etcd-server). Missing: a failure under
//! CI=true, else a skip that says what is missing.

mod common;

use common::lab::{double_bin, repo};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where e2e labs keep their state: apart from an operator's own lab.
const LAB_ROOT: &str = "/run/patroni-hook-lab-e2e";

/// One whole lab at a time: two would share two cores between six Patroni
/// and PostgreSQL pairs.
static WHOLE_LAB: Mutex<()> = Mutex::new(());

/// `scripts/lab/topology.env`: plain `KEY=VALUE` lines (a value with spaces
/// in double quotes), comments and blank lines.
struct Topology {
    vars: HashMap<String, String>,
}

impl Topology {
    fn load() -> Topology {
        let path = repo().join("scripts/lab/topology.env");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut vars = HashMap::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: expected KEY=VALUE", path.display(), no + 1));
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            vars.insert(key.to_string(), value.to_string());
        }
        Topology { vars }
    }

    fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("scripts/lab/topology.env: {key} is not defined"))
    }

    fn addr(&self, host: &str) -> &str {
        self.get(&format!("LAB_ADDR_{host}"))
    }

    fn vip(&self) -> &str {
        self.get("LAB_VIP")
    }

    fn db_nodes(&self) -> Vec<&str> {
        self.get("LAB_DB_NODES").split_whitespace().collect()
    }

    /// The hosts (namespaces besides the switch) of a variant.
    fn hosts(&self, manager: &str) -> Vec<&str> {
        self.get(&format!("LAB_HOSTS_{}", manager.replace('-', "_")))
            .split_whitespace()
            .collect()
    }

    /// `<namespace>/<scope>/<key>`, as Patroni and the hook name the keys.
    fn key(&self, key: &str) -> String {
        format!(
            "{}/{}/{key}",
            self.get("LAB_DCS_NAMESPACE"),
            self.get("LAB_SCOPE")
        )
    }

    fn pgbouncer_conninfo(&self) -> String {
        format!(
            "host={} port={} dbname={}",
            self.addr("pgb"),
            self.get("LAB_PGB_PORT"),
            self.get("LAB_PGB_DB")
        )
    }

    fn vip_conninfo(&self) -> String {
        format!(
            "host={} port={} dbname=postgres",
            self.vip(),
            self.get("LAB_PG_PORT")
        )
    }
}

fn lab_sh() -> PathBuf {
    repo().join("scripts/lab.sh")
}

/// Whether the lab of `manager` (hook or vip-manager) on `dcs` (consul or
/// etcd3; vip-manager always runs on etcd) can run here. Under CI=true a
/// missing prerequisite fails; elsewhere the test prints exactly what is
/// missing and returns.
fn prerequisites(manager: &str, dcs: &str) -> bool {
    let mut missing = common::lab::missing(
        &["ip", "pgbouncer", "psql", "setpriv", "setcap", "curl"],
        manager == "hook" && dcs == "consul",
    );
    if manager == "vip-manager" {
        if common::which("vip-manager").is_none() {
            missing.push("vip-manager (Debian package vip-manager)".into());
        }
        missing.extend(common::lab::missing_etcd("v2"));
    } else if dcs == "etcd3" {
        missing.extend(common::lab::missing_etcd("v3"));
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
    topo: Topology,
    manager: &'static str,
    /// The Consul of the hook's lab: "real" or "double".
    consul: String,
    /// The DCS: "consul" or "etcd3" (the vip-manager lab: etcd3's members,
    /// Patroni on their v2 API).
    dcs: String,
}

impl Lab {
    fn new(tag: &str, manager: &'static str) -> Lab {
        Lab::on(tag, manager, "consul")
    }

    fn on(tag: &str, manager: &'static str, dcs: &str) -> Lab {
        common::lab::remove_orphans(LAB_ROOT, |name| {
            lab_command(name, &["down"], Duration::from_secs(180), &[]).1
        });
        Lab {
            id: format!("e{tag}{}", std::process::id()),
            topo: Topology::load(),
            manager,
            consul: common::lab::consul_kind(),
            dcs: dcs.to_string(),
        }
    }

    fn run_dir(&self) -> PathBuf {
        Path::new(LAB_ROOT).join(&self.id)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{}-{host}", self.topo.get("LAB_NS_PREFIX"), self.id)
    }

    /// Runs `lab.sh ARGS` for this lab, bounded by `timeout`; returns
    /// (success, combined output).
    fn sh(&self, args: &[&str], timeout: Duration, extra_env: &[(&str, &str)]) -> (bool, String) {
        let mut env = vec![
            ("LAB_VIP_MANAGER", self.manager),
            ("LAB_CONSUL", self.consul.as_str()),
            ("LAB_DCS", self.dcs.as_str()),
        ];
        env.extend_from_slice(extra_env);
        lab_command(&self.id, args, timeout, &env)
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

    /// The nodes whose interface carries the VIP, from `ip -j addr` in each namespace.
    fn vip_holders(&self) -> Vec<String> {
        self.topo
            .db_nodes()
            .into_iter()
            .filter(|n| {
                let out = Command::new("ip")
                    .args(["-j", "-n", &self.ns(n), "addr", "show"])
                    .args(["dev", self.topo.get("LAB_IFACE")])
                    .output()
                    .expect("ip -j addr");
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("ip -j addr prints JSON");
                v[0]["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["local"] == self.topo.vip())
            })
            .map(str::to_string)
            .collect()
    }

    /// The raw value of one of Patroni's keys (`leader`, `vip-holder`) in the
    /// lab's DCS: the Consul double over HTTP; else `lab.sh kv` (real Consul:
    /// the client host's agent with the management token; etcd3: etcdctl
    /// with root's client certificate; vip-manager: etcd's v2 API over HTTPS).
    fn dcs_raw(&self, key: &str) -> String {
        let t = &self.topo;
        if self.manager == "hook" && self.dcs == "consul" && self.consul == "double" {
            let url = format!(
                "http://{}:{}/v1/kv/{}?raw",
                t.addr("consul"),
                t.get("LAB_CONSUL_PORT"),
                t.key(key)
            );
            return self.in_client("curl", &["-s", "--max-time", "2", &url]).1;
        }
        let (ok, out) = lab_command(&self.id, &["kv", &t.key(key)], Duration::from_secs(30), &[]);
        assert!(ok, "lab.sh kv {}: {out}", t.key(key));
        out.trim().to_string()
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
            "e2e {} {kind}: {old} -> {new} in {:.0?}; outage PgBouncer {} ms, VIP {} ms, \
             Patroni's own {} ms; VIP on two nodes {} ms; VIP {} ms after the leader key",
            r["manager"].as_str().unwrap_or("?"),
            started.elapsed(),
            r["pgbouncer_outage_ms"],
            r["vip_outage_ms"],
            r["patroni_outage_ms"],
            r["vip_two_nodes_ms"],
            r["vip_after_leader_key_ms"],
        ));
        assert_ne!(old, new, "{kind}: the leader did not change");
        assert_eq!(
            r["converged"], true,
            "{kind}: labtool did not see convergence: {}",
            r["problems"]
        );

        // The end state, checked here independently of labtool's own waits.
        assert_eq!(self.dcs_raw("leader"), new, "{kind}: leader key");
        assert_eq!(
            self.vip_holders(),
            vec![new.clone()],
            "{kind}: the VIP must be on the new primary only"
        );
        let ini = std::fs::read_to_string(self.run_dir().join("pgbouncer/pgbouncer.ini"))
            .expect("pgbouncer.ini");
        let entry = ini
            .lines()
            .find(|l| l.starts_with(self.topo.get("LAB_PGB_DB")))
            .expect("the PgBouncer database's entry");
        // The hook points PgBouncer at the new primary; with vip-manager it
        // points at the VIP, and nothing rewrites it.
        let host = if self.manager == "hook" {
            let holder: serde_json::Value =
                serde_json::from_str(&self.dcs_raw("vip-holder")).expect("vip-holder is JSON");
            assert_eq!(
                holder["member"],
                new.as_str(),
                "{kind}: vip-holder {holder}"
            );
            self.topo.addr(&new)
        } else {
            self.topo.vip()
        };
        assert!(
            entry.contains(&format!("host={host} ")),
            "{kind}: pgbouncer.ini should point at {host}: {entry}"
        );
        for (path, conninfo) in [
            ("PgBouncer", self.topo.pgbouncer_conninfo()),
            ("the VIP", self.topo.vip_conninfo()),
        ] {
            assert_eq!(
                self.write_lands_on(&conninfo),
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
            r["lost_rows"], 0,
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

/// The namespaces of a lab that still exist.
fn namespaces_of(topo: &Topology, id: &str) -> Vec<String> {
    common::lab::namespaces_with_prefix(&format!("{}-{id}-", topo.get("LAB_NS_PREFIX")))
}

/// Every pid the lab recorded, plus the postmasters.
fn recorded_pids(topo: &Topology, run: &Path) -> Vec<i32> {
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
    for n in topo.db_nodes() {
        if let Some(pid) = std::fs::read_to_string(run.join(n).join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` runs: exists and is not a zombie (one that exited and waits
/// to be reaped by its parent, init for the lab's daemons, is not running).
fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Asserts that `down` left nothing: no namespace, no recorded process, no run dir.
fn assert_gone(lab: &Lab, run: &Path, pids: &[i32]) {
    let left = namespaces_of(&lab.topo, &lab.id);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let living: Vec<_> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(living.is_empty(), "processes still running: {living:?}");
    assert!(!run.exists(), "{} still exists", run.display());
}

/// Takes the lab down through lab.sh and checks nothing is left.
fn down_and_check(lab: &Lab) {
    let run = lab.run_dir();
    let pids = recorded_pids(&lab.topo, &run);
    assert!(pids.len() >= 9, "recorded pids: {pids:?}");
    lab.sh_ok(&["down"], Duration::from_secs(180));
    assert_gone(lab, &run, &pids);
}

#[test]
fn failover_events_on_a_real_patroni_cluster() {
    if !prerequisites("hook", "consul") {
        return;
    }
    let _one = WHOLE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let lab = Lab::new("", "hook");
    lab.sh_ok(&["up"], Duration::from_secs(300));
    show(&lab.sh_ok(&["status"], Duration::from_secs(60)));

    let sw = lab.event("switchover");
    assert_eq!(
        sw["vip_two_nodes_ms"], 0.0,
        "switchover: the VIP was on two nodes while Patroni ran on both: {}",
        sw["vip_two_node_spans"]
    );

    lab.event("failover");

    let stop = lab.event("stop-primary");
    assert_eq!(
        stop["vip_two_nodes_ms"], 0.0,
        "clean stop: the VIP was on two nodes: {}",
        stop["vip_two_node_spans"]
    );

    lab.event("kill-patroni");

    down_and_check(&lab);
    show(&format!(
        "e2e hook: all events in {:.0?}",
        started.elapsed()
    ));
}

/// The faults `tests/e2e.rs` runs through the fault matrix, and how many
/// switchovers the repeated one gets (the full matrix, `scripts/lab.sh
/// faults`, runs three). Every fault but killed-runs: its bound on the VIP's
/// time on two nodes fails when every release of the old primary is killed
/// before its removal, one switchover in sixty here (docs/faults.md),
/// which would make this test fail at random; the full
/// matrix runs it.
const FAULTS: &str = "isolation,consul-cut,consul-down,pgbouncer-cut,slow-consul,ini-edits,\
consul-leader-loss,consul-quorum-loss,agent-restart,token-revoked";

/// The faults only a real Consul has (Raft, agents, ACL tokens); the double
/// has no counterpart, and the matrix skips them there.
const REAL_ONLY: [&str; 4] = [
    "consul-leader-loss",
    "consul-quorum-loss",
    "agent-restart",
    "token-revoked",
];
const FAULT_REPEATS: &str = "3";

/// The fault matrix (scripts/lab/labkit/faults.py) on the hook's lab: an isolated
/// primary, a primary cut from Consul and Consul frozen (each with and
/// without failsafe_mode), the PgBouncer host cut from Consul during a
/// switchover, an operator editing pgbouncer.ini during switchovers, and on
/// real Consul its Raft leader killed, two of its three servers down, the
/// primary's agent restarted and the hook's tokens revoked during a
/// switchover (on the double instead: a slow Consul). labtool measures each with the load generator, a read probe
/// and the 20 ms sampler; this test checks every row itself: no
/// acknowledged row lost, the VIP never on two nodes, the end state
/// converged.
#[test]
fn fault_matrix_holds_on_a_real_patroni_cluster() {
    if !prerequisites("hook", "consul") {
        return;
    }
    let _one = WHOLE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let lab = Lab::new("f", "hook");
    // slow-consul slows the double's answers (its delay file): the double
    // only; the faults of Raft, agents and tokens: real Consul only.
    let faults: Vec<&str> = FAULTS
        .split(',')
        .filter(|f| lab.consul == "double" || *f != "slow-consul")
        .filter(|f| lab.consul == "real" || !REAL_ONLY.contains(f))
        .collect();
    let only = faults.join(",");
    lab.sh_ok(&["up"], Duration::from_secs(300));
    let out_dir = tempfile::tempdir().expect("results directory");
    let (ok, out) = lab.sh(
        &[
            "faults",
            "--use-lab",
            "--only",
            &only,
            "--repeats",
            FAULT_REPEATS,
        ],
        Duration::from_secs(1500),
        &[("LAB_OUT_DIR", &out_dir.path().to_string_lossy())],
    );
    show(&out);
    let json = out_dir.path().join("lab-faults.json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("{}: {e} (output above)", json.display())),
    )
    .expect("lab-faults.json is a JSON array of rows");
    let switchovers = format!("{FAULT_REPEATS} switchovers");
    let expected = [
        ("isolation", "link down 30 s"),
        ("consul-cut", "failsafe_mode: false"),
        ("consul-cut", "failsafe_mode: true"),
        ("consul-down", "failsafe_mode: false"),
        ("consul-down", "failsafe_mode: true"),
        ("pgbouncer-cut", "cut as the switchover starts"),
        ("pgbouncer-cut", "cut while PgBouncer is paused"),
        ("slow-consul", "switchover, answers 1.5s late"),
        ("ini-edits", switchovers.as_str()),
        ("consul-leader-loss", "Raft leader SIGKILLed"),
        ("consul-quorum-loss", "2 of 3 servers down 30 s"),
        ("agent-restart", "the primary's agent (SIGTERM, start)"),
        ("token-revoked", "switchover while revoked"),
    ]
    .into_iter()
    .filter(|(f, _)| faults.contains(f))
    .collect::<Vec<_>>();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["fault"].as_str().unwrap_or("?"),
                r["variant"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(got, expected, "the rows of the matrix");
    for r in &rows {
        let name = format!("{} ({})", r["fault"], r["variant"]);
        assert_eq!(r["lost_rows"], 0, "{name}: acknowledged rows lost: {r}");
        let two = r["vip_two_nodes_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: no vip_two_nodes_ms: {r}"));
        assert_eq!(two, 0.0, "{name}: the VIP was on two nodes for {two} ms");
        assert!(
            r["vip_absent_ms"].is_number() && r["pgbouncer_failed_attempts"].is_number(),
            "{name}: {r}"
        );
        for key in [
            "vip_on_leader_only",
            "ini_on_leader",
            "pgbouncer_not_paused",
        ] {
            assert_eq!(
                r["converged"][key], true,
                "{name}: not converged: {key}: {r}"
            );
        }
        assert!(r["converge_ms"].is_number(), "{name}: {r}");
        assert_eq!(r["problems"], serde_json::json!([]), "{name}");
        assert_eq!(r["holds"], true, "{name}: {r}");
    }
    assert!(ok, "scripts/lab.sh faults failed although every row holds");
    down_and_check(&lab);
    show(&format!(
        "e2e fault matrix: up, {} rows, down in {:.0?}",
        rows.len(),
        started.elapsed()
    ));
}

/// The hook's lab on etcd3: the switchover, failover and SIGKILL of Patroni
/// alone of the Consul lab, with the same checks (the leader and vip-holder
/// keys read through etcdctl's v3 API).
#[test]
fn failover_events_on_etcd3() {
    if !prerequisites("hook", "etcd3") {
        return;
    }
    let _one = WHOLE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let lab = Lab::on("t", "hook", "etcd3");
    lab.sh_ok(&["up"], Duration::from_secs(300));
    show(&lab.sh_ok(&["status"], Duration::from_secs(60)));
    let sw = lab.event("switchover");
    assert_eq!(
        sw["vip_two_nodes_ms"], 0.0,
        "etcd3 switchover: the VIP was on two nodes while Patroni ran on both: {}",
        sw["vip_two_node_spans"]
    );
    assert_eq!(sw["dcs"], "etcd3", "result.json records the DCS: {sw}");
    lab.event("failover");
    lab.event("kill-patroni");
    down_and_check(&lab);
    show(&format!(
        "e2e hook on etcd3: up, three events, down in {:.0?}",
        started.elapsed()
    ));
}

#[test]
fn vip_manager_on_etcd_follows_a_switchover() {
    if !prerequisites("vip-manager", "etcd3") {
        return;
    }
    let _one = WHOLE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let lab = Lab::on("v", "vip-manager", "etcd3");
    lab.sh_ok(&["up"], Duration::from_secs(300));
    lab.event("switchover");
    down_and_check(&lab);
    show(&format!(
        "e2e vip-manager: up, switchover, down in {:.0?}",
        started.elapsed()
    ));
}

#[test]
fn down_removes_a_partial_lab() {
    if !prerequisites("hook", "consul") {
        return;
    }
    let lab = Lab::new("p", "hook");
    let (ok, out) = lab.sh(
        &["up"],
        Duration::from_secs(120),
        &[("LAB_FAIL_AFTER", "dcs")],
    );
    assert!(!ok, "up with LAB_FAIL_AFTER=dcs should fail:\n{out}");
    let variant = if lab.consul == "real" {
        "hook_real"
    } else {
        "hook"
    };
    let expected = lab.topo.hosts(variant).len() + 1; // and the switch
    assert_eq!(
        namespaces_of(&lab.topo, &lab.id).len(),
        expected,
        "a partial up should have left its {expected} namespaces: {:?}\n{out}",
        namespaces_of(&lab.topo, &lab.id)
    );
    let run = lab.run_dir();
    let pids = recorded_pids(&lab.topo, &run);
    assert!(
        pids.iter().any(|p| alive(*p)),
        "the {} Consul should be running: {pids:?}\n{out}",
        lab.consul
    );
    lab.sh_ok(&["down"], Duration::from_secs(120));
    assert_gone(&lab, &run, &pids);
}
