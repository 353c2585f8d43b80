//! The pause lab: real PgBouncer in front of two real PostgreSQL instances,
//! the Consul double, and a fake Patroni REST API per member (`GET /patroni`:
//! role primary or replica, as the test says); clients through PgBouncer.

use super::fake_consul::{patroni_api, FakeConsul};
use super::pg::{self, Pgbouncer, PgbouncerOptions, Postgres};
use super::{text, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SCOPE: &str = "batman";

/// A fake Patroni REST API: `/patroni` says role primary while `primary` is set.
pub struct Api {
    pub primary: Arc<AtomicBool>,
    pub server: FakeConsul,
}

impl Api {
    pub fn start(primary: bool) -> Api {
        let flag = Arc::new(AtomicBool::new(primary));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = patroni_api(listener, flag.clone());
        Api {
            primary: flag,
            server,
        }
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub a: Postgres,
    pub b: Postgres,
    pub api_a: Api,
    pub api_b: Api,
    pub pgb: Pgbouncer,
    pub consul: consul_double::Server,
    pub pgb_config: PathBuf,
    pub db_config: PathBuf,
}

impl Lab {
    pub fn start(pause_timeout: &str) -> Option<Lab> {
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
                 appdb2 = host=127.0.0.1 port={a_port} dbname=postgres\n\
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
            dir,
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

    pub fn key(&self, k: &str) -> String {
        format!("service/{SCOPE}/{k}")
    }

    pub fn member(&self, name: &str, port: u16, api: &Api) {
        self.consul.kv_put(
            &self.key(&format!("members/{name}")),
            format!(
                r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"{}/patroni"}}"#,
                api.server.url()
            )
            .as_bytes(),
        );
    }

    pub fn set_leader(&self, who: &str) {
        self.consul.kv_put(&self.key("leader"), who.as_bytes());
    }

    pub fn hook(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("patroni-hook"));
        c.arg("--config")
            .arg(config)
            .args(args)
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .stdin(Stdio::null());
        c
    }

    /// The reconcile a Consul watch runs on the PgBouncer host.
    pub fn reconcile(&self) -> Output {
        self.hook(&self.pgb_config, &["reconcile"])
            .output()
            .unwrap()
    }

    /// Whether PgBouncer has appdb paused (`SHOW DATABASES`).
    pub fn paused(&self) -> bool {
        self.paused_db("appdb")
    }

    /// Whether PgBouncer has `db` paused (`SHOW DATABASES`).
    pub fn paused_db(&self, db: &str) -> bool {
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
            .find(|l| l.starts_with(&format!("{db}|")))
            .map(|l| l.split('|').nth(col) == Some("1"))
            .unwrap_or(false)
    }

    /// The old primary's before-stop and the PgBouncer host's reconcile, as
    /// a switchover runs them: ends paused.
    pub fn pause_for_a_switchover(&self) {
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

    /// Rewrites the PgBouncer host's configuration.
    pub fn edit_pgb_config(&self, edit: impl FnOnce(String) -> String) {
        let s = std::fs::read_to_string(&self.pgb_config).unwrap();
        std::fs::write(&self.pgb_config, edit(s)).unwrap();
    }

    /// The PgBouncer host's pause record of `scope`.
    pub fn pause_record(&self, scope: &str) -> PathBuf {
        self.pgb_config
            .parent()
            .unwrap()
            .join(format!("pgbouncer-pause-{scope}.json"))
    }

    /// The reload-pending mark beside the PgBouncer host's lock.
    pub fn reload_pending(&self) -> PathBuf {
        self.dir.path().join("pgb.reload-pending")
    }

    /// Rewrites pgbouncer.ini in place (owner and mode kept), as an
    /// operator's editor does; PgBouncer is not told.
    pub fn edit_ini(&self, edit: impl FnOnce(String) -> String) {
        let s = std::fs::read_to_string(&self.pgb.ini).unwrap();
        std::fs::write(&self.pgb.ini, edit(s)).unwrap();
    }

    /// The port PgBouncer serves appdb from (`SHOW DATABASES`), whatever
    /// the file says.
    pub fn ini_port(&self) -> String {
        self.pgb
            .database("appdb")
            .map(|(_, p)| p)
            .unwrap_or_default()
    }
}

/// Clients through PgBouncer: each keeps one connection and runs a short
/// transaction every 5 ms, counting errors and which backend answered.
pub struct Load {
    pub stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub ports: Arc<Mutex<Vec<String>>>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, clients: usize) -> Load {
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

    pub fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().unwrap().clone();
        let ports = self.ports.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), errors, ports)
    }
}

// ---- what the pause tests share ----------------------------------------

/// Seconds since the epoch, as a database node's clock stamps a request.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A run's stderr (its log).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A pause request as a database node's before-stop writes it, with the
/// given time stamp (its own clock).
pub fn request(lab: &Lab, member: &str, id: &str, since: u64) {
    lab.consul.kv_put(
        &lab.key("pause-request"),
        format!(r#"{{"member":"{member}","id":"{id}","since":{since}}}"#).as_bytes(),
    );
}

/// The new leader takes over and answers as a writable primary.
pub fn new_leader_pg2(lab: &Lab) {
    lab.set_leader("pg2");
    lab.api_b.primary.store(true, Ordering::SeqCst);
}

/// A second cluster, robin, on the same PgBouncer: its database appdb2,
/// its leader pg1.
pub fn add_robin(lab: &Lab) {
    lab.edit_pgb_config(|s| {
        s.replace(
            "      databases: [appdb]\n",
            "      databases: [appdb]\n    - scope: robin\n      databases: [appdb2]\n",
        )
    });
    lab.consul.kv_put(
        "service/robin/members/pg1",
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{}/postgres","api_url":"{}/patroni"}}"#,
            lab.a.port,
            lab.api_a.server.url()
        )
        .as_bytes(),
    );
    lab.consul.kv_put("service/robin/leader", b"pg1");
}
