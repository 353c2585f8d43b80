//! `reconcile` on the PgBouncer host, with real PgBouncer in front of two real
//! PostgreSQL 15 instances registered as two Patroni members in Consul (the
//! double, and for the tests marked `every_dcs!` also a real Consul 1.8.7
//! with ACLs and TLS, the hook's token holding the kit's PgBouncer-host
//! policy, and a real etcd 3.4 with mutual TLS and auth, the hook the
//! kit's patroni-hook-pgbouncer user):
//! a client through PgBouncer follows the leader key.

#[macro_use]
mod common;

use common::{free_port, text, wait_for};

use common::consul::Consul;
use common::pg::{self, Client, Pgbouncer, Postgres};
use common::Backend;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SCOPE: &str = "batman";

/// Fields drop in order: the servers stop (by pid) before their directory goes.
struct Lab {
    a: Postgres,
    b: Postgres,
    pgb: Pgbouncer,
    consul: Consul,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn hook() -> PathBuf {
    assert_cmd::cargo::cargo_bin("patroni-hook")
}

fn member(port: u16) -> Vec<u8> {
    // Patroni's member JSON; `role` deliberately lies: reconcile must not trust it.
    format!(
        r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4"}}"#
    )
    .into_bytes()
}

impl Lab {
    fn new() -> Option<Lab> {
        Lab::on(Backend::Double)
    }

    fn on(backend: Backend) -> Option<Lab> {
        if !pg::require_pg_and_pgbouncer() {
            return None;
        }
        let consul = match backend {
            Backend::Double => Consul::start(),
            Backend::Real => Consul::real(
                &std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("patroni-conf/consul-acl-pgbouncer.hcl"),
                )
                .unwrap()
                .replace("\"service/postgres/", &format!("\"service/{SCOPE}/"))
                .replace("pause-ack/pgbouncer\"", "pause-ack/pgb\""),
            )?,
            Backend::Etcd => Consul::etcd()?,
        };
        let dir = tempfile::tempdir().unwrap();
        pg::open_path_for_postgres(dir.path());
        let a = Postgres::start(dir.path(), "A");
        let b = Postgres::start(dir.path(), "B");
        let pgb = Pgbouncer::start(dir.path(), a.port);
        consul.put(
            &consul.key(&format!("{SCOPE}/members/pg-a")),
            &member(a.port),
        );
        consul.put(
            &consul.key(&format!("{SCOPE}/members/pg-b")),
            &member(b.port),
        );
        consul.put(&consul.key(&format!("{SCOPE}/leader")), b"pg-a");
        let config = dir.path().join("hook.yml");
        let lab = Lab {
            config,
            a,
            b,
            pgb,
            consul,
            _dir: dir,
        };
        lab.write_config(&lab.consul.url(), &lab.pgb.pidfile.clone());
        Some(lab)
    }

    fn write_config(&self, url: &str, pidfile: &Path) {
        std::fs::write(
            &self.config,
            format!(
                "name: pgb\nlock_file: {}\n{dcs}pgbouncer:\n  ini: {}\n  pidfile: {}\n  clusters:\n    - scope: {SCOPE}\n      databases: [appdb]\n",
                self._dir.path().join("hook.lock").display(),
                self.pgb.ini.display(),
                pidfile.display(),
                dcs = self.consul.dcs_section(self._dir.path(), url),
            ),
        )
        .unwrap();
    }

    fn reconcile(&self) -> Output {
        Command::new(hook())
            .arg("--config")
            .arg(&self.config)
            .arg("reconcile")
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn set_leader(&self, who: &str) {
        self.consul
            .put(&self.consul.key(&format!("{SCOPE}/leader")), who.as_bytes());
    }

    fn ini(&self) -> Vec<u8> {
        std::fs::read(&self.pgb.ini).unwrap()
    }
}

fn pgbouncer_follows_the_leader_key(b: Backend) {
    let Some(lab) = Lab::on(b) else { return };
    let mut client = Client::connect(lab.pgb.port, "appdb");
    assert_eq!(client.query_line("SELECT name FROM marker;"), "A");

    // Already pointing at A: nothing to write, no reload.
    let before = lab.ini();
    let reloads = lab.pgb.reloads();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lab.ini(), before);
    assert_eq!(lab.pgb.reloads(), reloads);

    lab.set_leader("pg-b");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = String::from_utf8(lab.ini()).unwrap();
    // Only the managed entry's port changed; everything else byte for byte.
    let expected = String::from_utf8(before.clone()).unwrap().replacen(
        &format!("appdb = host=127.0.0.1 port={} dbname=postgres", lab.a.port),
        &format!("appdb = host=127.0.0.1 port={} dbname=postgres", lab.b.port),
        1,
    );
    assert_eq!(after, expected);
    // The same client's next transaction reads B.
    wait_for(
        "PgBouncer to log the reload",
        Duration::from_secs(10),
        || lab.pgb.reloads() > reloads,
    );
    assert_eq!(client.query_line("SELECT name FROM marker;"), "B");

    // A second reconcile changes nothing: same mtime, no reload.
    let mtime = std::fs::metadata(&lab.pgb.ini).unwrap().modified().unwrap();
    let reloads = lab.pgb.reloads();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::metadata(&lab.pgb.ini).unwrap().modified().unwrap(),
        mtime
    );
    assert_eq!(lab.pgb.reloads(), reloads);
    // Owner kept (the file belongs to postgres; reconcile ran as root).
    use std::os::unix::fs::MetadataExt;
    let pg_uid = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(std::fs::metadata(&lab.pgb.ini).unwrap().uid(), pg_uid);
    // The unmanaged entry still goes to A.
    let mut other = Client::connect(lab.pgb.port, "other");
    assert_eq!(other.query_line("SELECT current_database();"), "template1");
    let _ = &lab.b;
}
every_dcs!(pgbouncer_follows_the_leader_key);

fn no_leader_or_no_consul_keeps_the_file_and_exits_75(b: Backend) {
    let Some(lab) = Lab::on(b) else { return };
    let before = lab.ini();
    lab.consul
        .delete(&lab.consul.key(&format!("{SCOPE}/leader")));
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert_eq!(lab.ini(), before);
    // The double stopped: connection refused.
    // Consul down: nothing listens on port 1, the connection is refused.
    lab.write_config(&lab.consul.endpoint("127.0.0.1:1"), &lab.pgb.pidfile);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert_eq!(lab.ini(), before);
}
every_dcs!(no_leader_or_no_consul_keeps_the_file_and_exits_75);

#[test]
fn stale_pidfile_is_an_error_naming_it_and_the_new_file_stays() {
    let Some(lab) = Lab::new() else { return };
    let stale = lab._dir.path().join("stale.pid");
    // A pid that is not running: one past the max pid is never a process.
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(&stale, format!("{}\n", max + 1)).unwrap();
    lab.write_config(&lab.consul.url(), &stale);
    lab.set_leader("pg-b");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(stale.to_str().unwrap()),
        "{}",
        text(&out)
    );
    let ini = String::from_utf8(lab.ini()).unwrap();
    assert!(
        ini.contains(&format!("port={}", lab.b.port)),
        "new file stays in place: {ini}"
    );
    // With the pidfile right again, the next run reloads although the file is current.
    let reloads = lab.pgb.reloads();
    lab.write_config(&lab.consul.url(), &lab.pgb.pidfile);
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_for(
        "the missed reload to happen",
        Duration::from_secs(10),
        || lab.pgb.reloads() > reloads,
    );
    let reloads = lab.pgb.reloads();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lab.pgb.reloads(), reloads, "only once");
}

fn injection_through_conn_url_leaves_the_file_byte_identical(b: Backend) {
    let Some(lab) = Lab::on(b) else { return };
    let before = lab.ini();
    let evil = [
        "postgres://127.0.0.1\n[pgbouncer]\nadmin_users=evil:5432/postgres",
        "postgres://127.0.0.1 auth_user=evil:5432/postgres",
        "postgres://host=evil:5432/postgres",
        "postgres://'evil':5432/postgres",
        "postgres://[pgbouncer]:5432/postgres",
        "postgres://127.0.0.1:0/postgres",
        "postgres://127.0.0.1:65536/postgres",
    ];
    let long = format!("postgres://{}:5432/postgres", "a".repeat(300));
    for url in evil.iter().map(|s| s.to_string()).chain([long]) {
        let json = serde_json::json!({ "conn_url": url, "role": "primary" }).to_string();
        lab.consul.put(
            &lab.consul.key(&format!("{SCOPE}/members/pg-b")),
            json.as_bytes(),
        );
        lab.set_leader("pg-b");
        let out = lab.reconcile();
        assert_eq!(out.status.code(), Some(1), "{url:?}: {}", text(&out));
        assert_eq!(lab.ini(), before, "{url:?} changed the file");
        // The message is one line per problem and names the member key.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("members/pg-b"),
            "{}",
            text(&out)
        );
    }
}
every_dcs!(injection_through_conn_url_leaves_the_file_byte_identical);

#[test]
fn reconcile_does_not_hang_on_watch_json_on_stdin() {
    let Some(lab) = Lab::new() else { return };
    lab.set_leader("pg-b");
    let mut child = Command::new(hook())
        .arg("--config")
        .arg(&lab.config)
        .arg("--reconcile")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What a Consul key watch writes; the pipe stays open (like a handler's
    // parent that has not closed it yet).
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"Key\":\"service/batman/leader\",\"CreateIndex\":5,\"ModifyIndex\":9,\"LockIndex\":1,\"Flags\":0,\"Value\":\"cGctYg==\",\"Session\":\"x\"}\n")
        .unwrap();
    wait_for(
        "reconcile to exit with stdin still open",
        Duration::from_secs(10),
        || child.try_wait().unwrap().is_some(),
    );
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8(lab.ini())
        .unwrap()
        .contains(&format!("port={}", lab.b.port)));
}

/// The immediate trigger: the double's `--watch` runs reconcile on a leader
/// change, as a Consul agent `watches` entry would; nothing else triggers it.
/// Always against the double: the watch runner under test is its own.
#[test]
fn watch_handler_moves_pgbouncer_on_a_leader_change() {
    let Some(lab) = Lab::new() else { return };
    // A separate double process with the watch (the in-process one holds the members).
    let port = free_port();
    let handler = format!(
        "{} --config {} reconcile",
        hook().display(),
        lab.config.display()
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _double = Kill(
        Command::new(assert_cmd::cargo::cargo_bin("consul-double"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--watch"])
            .arg(format!("service/{SCOPE}/leader={handler}"))
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting consul-double"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for("consul-double to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let put = |key: &str, body: &[u8]| {
        let st = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                "--data-binary",
                "@-",
                &format!("{url}/v1/kv/{key}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body)?;
                c.wait()
            })
            .unwrap();
        assert!(st.success(), "PUT {key}");
    };
    lab.write_config(&url, &lab.pgb.pidfile);
    let config = std::fs::read_to_string(&lab.config).unwrap().replace(
        &format!("namespace: {}", lab.consul.namespace()),
        "namespace: service",
    );
    std::fs::write(&lab.config, config).unwrap();
    put(
        &format!("service/{SCOPE}/members/pg-a"),
        &member(lab.a.port),
    );
    put(
        &format!("service/{SCOPE}/members/pg-b"),
        &member(lab.b.port),
    );
    put(&format!("service/{SCOPE}/leader"), b"pg-b");
    let want = format!("port={}", lab.b.port);
    wait_for(
        "the watch handler to point pgbouncer.ini at B",
        Duration::from_secs(15),
        || String::from_utf8(lab.ini()).unwrap().contains(&want),
    );
    let mut client = Client::connect(lab.pgb.port, "appdb");
    wait_for("PgBouncer to serve B", Duration::from_secs(10), || {
        client.query_line("SELECT name FROM marker;") == "B"
    });
    put(&format!("service/{SCOPE}/leader"), b"pg-a");
    let want = format!("port={}", lab.a.port);
    wait_for(
        "the watch handler to point pgbouncer.ini back at A",
        Duration::from_secs(15),
        || String::from_utf8(lab.ini()).unwrap().contains(&want),
    );
}

/// Several clusters behind one PgBouncer, one of them through its VIP: one
/// reconcile points each managed entry at its own cluster's leader (or VIP),
/// leaves the unmanaged entry alone, and refuses only the cluster whose
/// Consul data is bad.
#[test]
fn several_clusters_and_a_vip_target() {
    let Some(lab) = Lab::new() else { return };
    let ini = String::from_utf8(lab.ini()).unwrap().replacen(
        "[databases]\n",
        "[databases]\nreports = host=127.0.0.1 port=1 dbname=postgres\nbilling = dbname=postgres host=127.0.0.1 port=1 pool_size=5\n",
        1,
    );
    std::fs::write(&lab.pgb.ini, &ini).unwrap();
    let c = &lab.consul;
    c.put(&c.key("robin/members/r1"), &member(lab.b.port));
    c.put(&c.key("robin/leader"), b"r1");
    c.put(&c.key("joker/members/j1"), &member(lab.a.port));
    c.put(&c.key("joker/leader"), b"j1");
    c.put(&c.key("joker/floating-ip"), b"198.51.100.100/24");
    let config = std::fs::read_to_string(&lab.config).unwrap().replace(
        "      databases: [appdb]\n",
        "      databases: [appdb]\n    - scope: robin\n      databases: [reports]\n    - scope: joker\n      databases: [billing]\n      target: vip\n",
    );
    std::fs::write(&lab.config, config).unwrap();
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = ini
        .replace(
            "reports = host=127.0.0.1 port=1 dbname",
            &format!("reports = host=127.0.0.1 port={} dbname", lab.b.port),
        )
        .replace(
            "billing = dbname=postgres host=127.0.0.1 port=1 pool_size=5",
            &format!(
                "billing = dbname=postgres host=198.51.100.100 port={} pool_size=5",
                lab.a.port
            ),
        );
    assert_eq!(String::from_utf8(lab.ini()).unwrap(), expected);
    // reports now reaches B through PgBouncer.
    let mut client = Client::connect(lab.pgb.port, "reports");
    assert_eq!(client.query_line("SELECT name FROM marker;"), "B");

    // Bad data in one cluster: that cluster is refused (exit 1), the others still follow.
    c.put(
        &c.key("robin/members/r1"),
        br#"{"conn_url":"postgres://bad host:5432/x"}"#,
    );
    lab.set_leader("pg-b");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster robin"),
        "{}",
        text(&out)
    );
    let now = String::from_utf8(lab.ini()).unwrap();
    assert!(
        now.contains(&format!(
            "appdb = host=127.0.0.1 port={} dbname",
            lab.b.port
        )),
        "{now}"
    );
    assert!(
        now.contains(&format!(
            "reports = host=127.0.0.1 port={} dbname",
            lab.b.port
        )),
        "{now}"
    );
}

/// An operator's editor that writes pgbouncer.ini in place (backupcopy):
/// the file opened with O_TRUNC, its new content written afterwards through
/// the same descriptor.
struct InPlaceWrite {
    file: std::fs::File,
    ino: u64,
}

impl InPlaceWrite {
    /// Truncates `path` and holds it open: the file is empty until `finish`.
    fn truncate(path: &Path) -> InPlaceWrite {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        let ino = file.metadata().unwrap().ino();
        InPlaceWrite { file, ino }
    }

    /// Writes `part` through the descriptor opened before.
    fn write(&mut self, part: &[u8]) {
        use std::io::Write;
        self.file.write_all(part).unwrap();
    }

    /// Writes the rest, and closes the descriptor.
    fn finish(mut self, rest: &[u8]) {
        self.write(rest);
    }
}

/// What a run that read pgbouncer.ini between an operator's truncate and
/// write must have left: a failure naming the missing entry, the file not
/// replaced (still the inode the operator's descriptor writes to, holding
/// only what the operator wrote so far), no temporary file, PgBouncer not
/// reloaded onto it.
fn assert_refused(lab: &Lab, op: &InPlaceWrite, written: &[u8], out: &Output, reloads: usize) {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [databases] entry named appdb"),
        "{}",
        text(out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("already points at the leaders"),
        "a file without the entry points at nothing: {}",
        text(out)
    );
    let meta = std::fs::metadata(&lab.pgb.ini).unwrap();
    assert_eq!(
        meta.ino(),
        op.ino,
        "pgbouncer.ini was replaced: {}",
        text(out)
    );
    assert_eq!(
        lab.ini(),
        written,
        "pgbouncer.ini was written: {}",
        text(out)
    );
    let dir = lab.pgb.ini.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pgbouncer.ini") && n != "pgbouncer.ini")
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
    assert_eq!(
        lab.pgb.reloads(),
        reloads,
        "PgBouncer was reloaded onto the operator's unfinished file: {}",
        text(out)
    );
}

/// An operator's in-place write caught between its truncate and its write
/// (what the fault matrix's ini-edits row makes every other edit), and
/// again after a first part of it: the run finds no managed entry, refuses,
/// and writes nothing built from what it read; the operator's write then
/// lands in the live file, and the next run points it at the leader, the
/// operator's edit kept.
#[test]
fn a_run_between_an_operators_truncate_and_write_refuses_the_empty_file() {
    let Some(lab) = Lab::new() else { return };
    let mut client = Client::connect(lab.pgb.port, "appdb");
    assert_eq!(client.query_line("SELECT name FROM marker;"), "A");
    let note = "; operator note: edit 2\n";
    let edited = format!("{note}{}", String::from_utf8(lab.ini()).unwrap());
    lab.set_leader("pg-b");
    let reloads = lab.pgb.reloads();

    let mut op = InPlaceWrite::truncate(&lab.pgb.ini);
    let out = lab.reconcile();
    assert_refused(&lab, &op, b"", &out, reloads);
    // An editor that writes in parts: the first one has no [databases].
    op.write(note.as_bytes());
    let out = lab.reconcile();
    assert_refused(&lab, &op, note.as_bytes(), &out, reloads);
    op.finish(&edited.as_bytes()[note.len()..]);
    assert_eq!(
        String::from_utf8(lab.ini()).unwrap(),
        edited,
        "the operator's write is in the live file"
    );
    assert_eq!(client.query_line("SELECT name FROM marker;"), "A");

    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8(lab.ini()).unwrap(),
        edited.replacen(
            &format!("appdb = host=127.0.0.1 port={} ", lab.a.port),
            &format!("appdb = host=127.0.0.1 port={} ", lab.b.port),
            1
        )
    );
    wait_for(
        "PgBouncer to log the reload",
        Duration::from_secs(10),
        || lab.pgb.reloads() > reloads,
    );
    assert_eq!(client.query_line("SELECT name FROM marker;"), "B");
}

/// The same with a reload still pending (a previous run rewrote the file but
/// its reload failed): the run that reads the empty file does not reload
/// PgBouncer onto it; the pending reload is left to a run that finds the
/// managed entry again.
#[test]
fn a_pending_reload_is_not_done_onto_an_operators_truncated_file() {
    let Some(lab) = Lab::new() else { return };
    let mut client = Client::connect(lab.pgb.port, "appdb");
    assert_eq!(client.query_line("SELECT name FROM marker;"), "A");
    // A run whose reload fails: the file points at B, the reload is pending.
    let stale = lab._dir.path().join("stale.pid");
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(&stale, format!("{}\n", max + 1)).unwrap();
    lab.write_config(&lab.consul.url(), &stale);
    lab.set_leader("pg-b");
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let current = String::from_utf8(lab.ini()).unwrap();
    assert!(
        current.contains(&format!("port={}", lab.b.port)),
        "{current}"
    );
    lab.write_config(&lab.consul.url(), &lab.pgb.pidfile);
    let reloads = lab.pgb.reloads();

    let op = InPlaceWrite::truncate(&lab.pgb.ini);
    let out = lab.reconcile();
    assert_refused(&lab, &op, b"", &out, reloads);
    let edited = format!("; operator note: edit 2\n{current}");
    op.finish(edited.as_bytes());
    assert_eq!(client.query_line("SELECT name FROM marker;"), "A");

    // The managed entry is back: the pending reload is done now.
    let out = lab.reconcile();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8(lab.ini()).unwrap(), edited);
    wait_for("the pending reload", Duration::from_secs(10), || {
        lab.pgb.reloads() > reloads
    });
    assert_eq!(client.query_line("SELECT name FROM marker;"), "B");
}
