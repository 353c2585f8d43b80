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

use common::fake_consul::{FakeConsul, Reply};
use common::pg::{self, Pgbouncer, PgbouncerOptions, Postgres};
use common::{text, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCOPE: &str = "batman";

/// A fake Patroni REST API: `/patroni` says role primary while `primary` is set.
struct Api {
    primary: Arc<AtomicBool>,
    server: FakeConsul,
}

impl Api {
    fn start(primary: bool) -> Api {
        let flag = Arc::new(AtomicBool::new(primary));
        let f = flag.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // Patroni's GET /patroni: the role from pg_is_in_recovery().
        let server = FakeConsul::start(listener, move |r| {
            let role = if f.load(Ordering::SeqCst) {
                "primary"
            } else {
                "replica"
            };
            match r.path.as_str() {
                "/patroni" => Reply::Respond(
                    200,
                    vec![],
                    format!(r#"{{"state":"running","role":"{role}"}}"#).into_bytes(),
                ),
                _ => Reply::Respond(404, vec![], vec![]),
            }
        });
        Api {
            primary: flag,
            server,
        }
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    a: Postgres,
    b: Postgres,
    api_a: Api,
    api_b: Api,
    pgb: Pgbouncer,
    consul: consul_double::Server,
    pgb_config: PathBuf,
    db_config: PathBuf,
}

impl Lab {
    fn start(pause_timeout: &str) -> Option<Lab> {
        if !pg::require_pg_and_pgbouncer() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        pg::open_path_for_postgres(dir.path());
        let a = Postgres::start(dir.path(), "a");
        let b = Postgres::start(dir.path(), "b");
        let a_port = a.port;
        let pgb = Pgbouncer::start_with(dir.path(), PgbouncerOptions::default(), |f| {
            format!(
                "[databases]\n\
                 appdb = host=127.0.0.1 port={a_port} dbname=postgres\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 admin_users = postgres\n\
                 pool_mode = transaction\n\
                 server_login_retry = 0.1\n\
                 query_wait_timeout = 60\n\
                 logfile = {}\n\
                 pidfile = {}\n",
                f.port,
                f.auth_file.display(),
                f.log.display(),
                f.pidfile.display()
            )
        });
        let consul = consul_double::Server::start(consul_double::Options::default()).unwrap();
        let api_a = Api::start(true);
        let api_b = Api::start(false);
        let pgb_config = dir.path().join("pgb.yml");
        std::fs::write(
            &pgb_config,
            format!(
                "name: pgb\ndeadline: 5s\nlock_file: {d}/pgb.lock\n\
                 consul:\n  url: {url}\n  timeout: 1s\n\
                 pgbouncer:\n  ini: {ini}\n  pidfile: {pid}\n\
                 \x20 admin:\n    host: 127.0.0.1\n    port: {port}\n    user: postgres\n\
                 \x20 pause_timeout: {pause_timeout}\n\
                 \x20 clusters:\n    - scope: {SCOPE}\n      databases: [appdb]\n",
                d = dir.path().display(),
                url = consul.url(),
                ini = pgb.ini.display(),
                pid = pgb.pidfile.display(),
                port = pgb.port,
            ),
        )
        .unwrap();
        let db_config = dir.path().join("db.yml");
        std::fs::write(
            &db_config,
            format!(
                "name: pg1\nscope: {SCOPE}\nlock_file: {d}/db.lock\n\
                 consul:\n  url: {url}\n  timeout: 1s\n\
                 before_stop:\n  wait: 3s\n",
                d = dir.path().display(),
                url = consul.url(),
            ),
        )
        .unwrap();
        let lab = Lab {
            _dir: dir,
            a,
            b,
            api_a,
            api_b,
            pgb,
            consul,
            pgb_config,
            db_config,
        };
        lab.member("pg1", lab.a.port, &lab.api_a);
        lab.member("pg2", lab.b.port, &lab.api_b);
        lab.set_leader("pg1");
        Some(lab)
    }

    fn key(&self, k: &str) -> String {
        format!("service/{SCOPE}/{k}")
    }

    fn member(&self, name: &str, port: u16, api: &Api) {
        self.consul.kv_put(
            &self.key(&format!("members/{name}")),
            format!(
                r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"{}/patroni"}}"#,
                api.server.url()
            )
            .as_bytes(),
        );
    }

    fn set_leader(&self, who: &str) {
        self.consul.kv_put(&self.key("leader"), who.as_bytes());
    }

    fn hook(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("patroni-hook"));
        c.arg("--config")
            .arg(config)
            .args(args)
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdin(Stdio::null());
        c
    }

    /// The reconcile a Consul watch runs on the PgBouncer host.
    fn reconcile(&self) -> Output {
        self.hook(&self.pgb_config, &["reconcile"])
            .output()
            .unwrap()
    }

    /// Whether PgBouncer has appdb paused (`SHOW DATABASES`).
    fn paused(&self) -> bool {
        let out = self.pgb.admin("SHOW DATABASES");
        let header: Vec<String> = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-h",
                "127.0.0.1",
                "-p",
                &self.pgb.port.to_string(),
            ])
            .args(["-U", "postgres", "-d", "pgbouncer", "-c", "SHOW DATABASES"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .split('|')
                    .map(String::from)
                    .collect()
            })
            .unwrap();
        let col = header
            .iter()
            .position(|h| h == "paused")
            .expect("a paused column");
        out.lines()
            .find(|l| l.starts_with("appdb|"))
            .map(|l| l.split('|').nth(col) == Some("1"))
            .unwrap_or(false)
    }

    /// The old primary's before-stop and the PgBouncer host's reconcile, as
    /// a switchover runs them: ends paused.
    fn pause_for_a_switchover(&self) {
        let before_stop = self
            .hook(&self.db_config, &["before-stop"])
            .spawn()
            .unwrap();
        wait_for("the pause request", Duration::from_secs(5), || {
            self.consul.kv_get(&self.key("pause-request")).is_some()
        });
        let out = self.reconcile();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let _ = before_stop.wait_with_output();
        assert!(self.paused(), "paused for the switchover");
    }

    fn ini_port(&self) -> String {
        self.pgb
            .database("appdb")
            .map(|(_, p)| p)
            .unwrap_or_default()
    }
}

/// Clients through PgBouncer: each keeps one connection and runs a short
/// transaction every 5 ms, counting errors and which backend answered.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    ports: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let ports = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, errors, ports) =
                    (stop.clone(), ok.clone(), errors.clone(), ports.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let conninfo = format!(
                            "host=127.0.0.1 port={port} user=postgres dbname=appdb connect_timeout=30"
                        );
                        let mut client = None;
                        while !stop.load(Ordering::SeqCst) {
                            if client.is_none() {
                                match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
                                    Ok((c, conn)) => {
                                        tokio::spawn(async move {
                                            let _ = conn.await;
                                        });
                                        client = Some(c);
                                    }
                                    Err(e) => {
                                        errors.lock().unwrap().push(format!("connect: {e}"));
                                        tokio::time::sleep(Duration::from_millis(5)).await;
                                        continue;
                                    }
                                }
                            }
                            let c = client.as_ref().unwrap();
                            match c.simple_query("SELECT current_setting('port')").await {
                                Ok(rows) => {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                    let row = rows.iter().find_map(|m| match m {
                                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                                        _ => None,
                                    });
                                    if let Some(r) = row {
                                        let p = r.get(0).unwrap_or_default().to_string();
                                        let mut seen = ports.lock().unwrap();
                                        if seen.last() != Some(&p) {
                                            seen.push(p);
                                        }
                                    }
                                }
                                Err(e) => {
                                    errors.lock().unwrap().push(format!("{e}"));
                                    client = None;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            ports,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().unwrap().clone();
        let ports = self.ports.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), errors, ports)
    }
}

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
