//! Real Patroni 4.x + PostgreSQL 15 against the double: the proof that the
//! double is faithful enough for Patroni's Consul backend (docs/design.md, "How it is tested").
//! Each test runs twice (`both!`): `<test>::double` against the double and
//! `<test>::real` against a real Consul 1.8.7 server, with the same
//! assertions, so what the double is trusted with is seen on the real thing.
//!
//! Needs root (to run PostgreSQL and Patroni as `postgres`), the `postgres`
//! user, PostgreSQL 15 binaries and a Patroni virtualenv (`$PATRONI_VENV`,
//! default `/opt/patroni-hook-test/venv`). Without them the tests fail under
//! `CI=true` and otherwise print what is missing and return.
//!
//! Patroni settings: ttl 20 (Patroni's minimum), loop_wait 2, retry_timeout 5
//! (`loop_wait + 2*retry_timeout <= ttl`). Patroni asks for session TTL
//! ttl/2 = `10.0s`, which the double's default `session_ttl_min` (10s) accepts.

mod common;

use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get, require, wait_for_some, Backend};
use consul_double::Options;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const DEFAULT_VENV: &str = "/opt/patroni-hook-test/venv";
const PATRONI_TTL: u64 = 20;

struct Prereqs {
    uid: u32,
    gid: u32,
    venv: PathBuf,
}

/// Checks what the tests need; `None` means "skip" (never under CI=true).
fn prereqs() -> Option<Prereqs> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (PostgreSQL and Patroni are run as the postgres user)".to_string());
    }
    let user = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; fields are read at once.
    let pw = unsafe { libc::getpwnam(user.as_ptr()) };
    let ids = if pw.is_null() {
        missing.push("the postgres user".to_string());
        None
    } else {
        // SAFETY: pw is non-null and points to libc's static passwd entry.
        Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
    };
    for bin in ["postgres", "initdb", "pg_ctl", "pg_basebackup"] {
        let p = Path::new(PG_BIN).join(bin);
        if !p.exists() {
            missing.push(format!("PostgreSQL 15 binary {}", p.display()));
        }
    }
    let venv =
        PathBuf::from(std::env::var("PATRONI_VENV").unwrap_or_else(|_| DEFAULT_VENV.to_string()));
    for bin in ["patroni", "patronictl"] {
        let p = venv.join("bin").join(bin);
        if !p.exists() {
            missing.push(format!(
                "{} (set PATRONI_VENV to a virtualenv with patroni[consul] 4.x)",
                p.display()
            ));
        }
    }
    if !require(&missing) {
        return None;
    }
    let (uid, gid) = ids?;
    Some(Prereqs { uid, gid, venv })
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we started (or its postmaster).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One Patroni + PostgreSQL member, killed (by pid) on drop.
struct Node {
    name: String,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pg_port: u16,
    patroni: Option<Child>,
}

impl Node {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster's pid from `postmaster.pid`, if PostgreSQL runs.
    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// SIGKILLs Patroni, then stops its postmaster with `postmaster_signal`
    /// (SIGKILL to simulate a crash, SIGQUIT to clean up) and waits for both.
    fn kill(&mut self, postmaster_signal: i32) {
        if let Some(mut child) = self.patroni.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            signal(pid, postmaster_signal);
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill(libc::SIGQUIT);
    }
}

/// A scope with its Consul and members; everything stops on drop, also on
/// panic (nodes first, then the temp dir; the Consul, which outlives the
/// cluster, after them).
struct Cluster<'a> {
    nodes: Vec<Node>,
    consul: &'a Backend,
    scope: String,
    prereqs: Prereqs,
    tmp: tempfile::TempDir,
}

impl<'a> Cluster<'a> {
    fn new(p: Prereqs, consul: &'a Backend, test: &str) -> Cluster<'a> {
        let tmp = tempfile::Builder::new()
            .prefix("consul-double-patroni-")
            .tempdir()
            .expect("tempdir");
        // postgres must traverse and write under it.
        std::os::unix::fs::chown(tmp.path(), Some(p.uid), Some(p.gid)).expect("chown tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
        Cluster {
            nodes: Vec::new(),
            consul,
            scope: format!("ph-{}-{test}", std::process::id()),
            prereqs: p,
            tmp,
        }
    }

    fn add_node(&mut self, name: &str) -> usize {
        let dir = self.tmp.path().join(name);
        fs::create_dir(&dir).expect("node dir");
        std::os::unix::fs::chown(&dir, Some(self.prereqs.uid), Some(self.prereqs.gid))
            .expect("chown node dir");
        let (pg_port, api_port) = (free_port(), free_port());
        let config = dir.join("patroni.yml");
        fs::write(
            &config,
            patroni_yaml(
                &self.scope,
                name,
                &dir,
                pg_port,
                api_port,
                &self.consul.url(),
            ),
        )
        .expect("write config");
        let log = dir.join("patroni.log");
        self.nodes.push(Node {
            name: name.to_string(),
            dir,
            config,
            log,
            pg_port,
            patroni: None,
        });
        self.nodes.len() - 1
    }

    fn start(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = File::create(&node.log).expect("log file");
        let err = log.try_clone().expect("log fd");
        let child = Command::new(self.prereqs.venv.join("bin/patroni"))
            .arg(&node.config)
            .current_dir(&node.dir)
            .env("HOME", &node.dir)
            .env("USER", "postgres")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PATRONICTL_CONFIG_FILE")
            .uid(self.prereqs.uid)
            .gid(self.prereqs.gid)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn patroni");
        self.nodes[i].patroni = Some(child);
    }

    fn key(&self, rest: &str) -> String {
        format!("service/{}/{rest}", self.scope)
    }

    fn leader(&self) -> Option<(String, String)> {
        let e = self.consul.kv_get(&self.key("leader"))?;
        Some((String::from_utf8_lossy(&e.value).into_owned(), e.session?))
    }

    fn member(&self, name: &str) -> Option<serde_json::Value> {
        let e = self.consul.kv_get(&self.key(&format!("members/{name}")))?;
        serde_json::from_slice(&e.value).ok()
    }

    /// Runs `patronictl -c <cfg> list` (bounded) and returns its stdout.
    fn patronictl_list(&self, i: usize) -> String {
        let mut child = Command::new(self.prereqs.venv.join("bin/patronictl"))
            .arg("-c")
            .arg(&self.nodes[i].config)
            .arg("list")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn patronictl");
        let status = wait_for_some("patronictl list to exit", Duration::from_secs(30), || {
            child.try_wait().expect("try_wait patronictl")
        });
        let out = child.wait_with_output().expect("patronictl output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            status.success(),
            "patronictl list failed: {status}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "----- last lines of {} ({}) -----\n{}",
                    n.name,
                    n.log.display(),
                    n.log_tail(60)
                );
            }
        }
    }
}

fn patroni_yaml(
    scope: &str,
    name: &str,
    dir: &Path,
    pg_port: u16,
    api_port: u16,
    consul_url: &str,
) -> String {
    let dir = dir.display();
    format!(
        r#"scope: {scope}
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
consul:
  url: {consul_url}
  register_service: true
bootstrap:
  dcs:
    ttl: {PATRONI_TTL}
    loop_wait: 2
    retry_timeout: 5
    postgresql:
      use_pg_rewind: false
      parameters:
        max_wal_senders: 5
        max_replication_slots: 5
        wal_level: replica
        hot_standby: "on"
  initdb:
    - encoding: UTF8
    - locale: C
    - no-sync
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {dir}/data
  bin_dir: {PG_BIN}
  pgpass: {dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: pg-pass
    replication:
      username: replicator
      password: rep-pass
  parameters:
    unix_socket_directories: '{dir}'
    fsync: "off"
    synchronous_commit: "off"
    full_page_writes: "off"
    shared_buffers: 16MB
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
"#
    )
}

/// Test A: one member bootstraps, takes the leader key, writes its member
/// key, registers its service and keeps its session alive past 2×TTL.
fn single_member_leads_and_keeps_its_session(consul: &Backend) {
    let Some(p) = prereqs() else { return };
    let mut c = Cluster::new(p, consul, "a");
    let n = c.add_node("node1");
    c.start(n);

    let (leader, session) = wait_for_some(
        "node1 to hold the leader key",
        Duration::from_secs(60),
        || c.leader().filter(|(name, _)| name == "node1"),
    );
    assert_eq!(leader, "node1");
    let pg_port = c.nodes[n].pg_port;
    let member = wait_for_some(
        "members/node1 with its conn_url",
        Duration::from_secs(30),
        || c.member("node1").filter(|m| m["role"] == "primary"),
    );
    let conn_url = member["conn_url"].as_str().unwrap_or_default();
    assert!(
        conn_url.contains(&format!("127.0.0.1:{pg_port}/")),
        "conn_url {conn_url}"
    );

    // Patroni asks for ttl/2 because Consul expires at 2×TTL (§1.5).
    let info = get(c.consul.addr(), &format!("/v1/session/info/{session}")).json();
    assert_eq!(info[0]["TTL"], "10.0s", "session {info}");
    assert_eq!(info[0]["Behavior"], "delete");

    let service_id = format!("{}/node1", c.scope);
    wait_for_some(
        "Patroni's service registration",
        Duration::from_secs(30),
        || {
            let services = get(c.consul.addr(), "/v1/agent/services").json();
            services.get(&service_id).cloned()
        },
    );

    // Observe beyond the session's 2×TTL (20 s): Patroni must keep renewing,
    // so the very same session keeps holding the leader key throughout.
    let observe_until = Instant::now() + Duration::from_secs(PATRONI_TTL + 3);
    while Instant::now() < observe_until {
        let now = c.leader();
        assert_eq!(
            now.as_ref().map(|(n, s)| (n.as_str(), s.as_str())),
            Some(("node1", session.as_str())),
            "leader key lost or re-created while Patroni was healthy"
        );
        std::thread::sleep(Duration::from_millis(500)); // observation cadence
    }
    assert!(c.consul.session_ids().contains(&session));

    let list = c.patronictl_list(n);
    eprintln!("{list}");
    assert!(
        list.contains("node1") && list.contains("Leader"),
        "patronictl list:\n{list}"
    );
}
both!(
    single_member_leads_and_keeps_its_session,
    Options::default()
);

/// Test B: two members; SIGKILL the leader's Patroni and postmaster; the
/// replica takes the leader key once the dead leader's session expired.
fn replica_takes_over_after_the_leader_session_expires(consul: &Backend) {
    let Some(p) = prereqs() else { return };
    let mut c = Cluster::new(p, consul, "b");
    let a = c.add_node("node1");
    let b = c.add_node("node2");
    c.start(a);
    c.start(b);

    let (old_leader, old_session) = wait_for_some(
        "a member to hold the leader key",
        Duration::from_secs(60),
        || c.leader(),
    );
    let (li, ri) = if old_leader == "node1" {
        (a, b)
    } else {
        (b, a)
    };
    let replica = c.nodes[ri].name.clone();
    wait_for_some(
        "the replica to run and report role replica",
        Duration::from_secs(90),
        || {
            c.member(&replica)
                .filter(|m| m["role"] == "replica" && m["state"] == "running")
        },
    );

    let list = c.patronictl_list(ri);
    eprintln!("{list}");
    assert!(
        list.contains("node1")
            && list.contains("node2")
            && list.contains("Leader")
            && list.contains("Replica"),
        "patronictl list should show both members:\n{list}"
    );

    let killed_at = Instant::now();
    c.nodes[li].kill(libc::SIGKILL);

    let (new_leader, new_session) = wait_for_some(
        "the replica to take the leader key after the session expiry",
        Duration::from_secs(60),
        || c.leader().filter(|(name, _)| *name == replica),
    );
    let took = killed_at.elapsed();
    eprintln!("{replica} took the leader key {took:?} after {old_leader} was killed");
    assert_eq!(new_leader, replica);
    assert_ne!(new_session, old_session);
    assert!(
        !c.consul.session_ids().contains(&old_session),
        "the dead leader's session should be gone"
    );
    // The dead leader's last renewal was at most loop_wait before the kill,
    // so its key can only vanish ~2×(ttl/2) - loop_wait = 18 s later (§3.5).
    assert!(
        took >= Duration::from_secs(15),
        "takeover after {took:?}: before the session could expire"
    );

    let list = c.patronictl_list(ri);
    eprintln!("{list}");
    let leader_row = list
        .lines()
        .find(|l| l.contains(&replica))
        .unwrap_or_default()
        .to_string();
    assert!(leader_row.contains("Leader"), "patronictl list:\n{list}");
}
both!(
    replica_takes_over_after_the_leader_session_expires,
    Options::default()
);
