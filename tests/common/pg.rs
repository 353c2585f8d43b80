//! Real PostgreSQL 15 and PgBouncer for tests, run as the `postgres` user on
//! loopback, in a temporary directory, stopped by pid when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_for, which};

/// Where Debian puts PostgreSQL 15.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether PostgreSQL 15, PgBouncer, psql and the postgres user are here.
/// Missing under CI=true fails; elsewhere prints what is missing.
pub fn require_pg_and_pgbouncer() -> bool {
    let mut missing = pgbouncer_missing();
    if !Path::new(PG_BIN).join("postgres").exists() {
        missing.push(format!("PostgreSQL 15 ({PG_BIN}/postgres)"));
    }
    super::require(&missing)
}

/// Whether PgBouncer can run here as the postgres user and be asked with
/// psql (no PostgreSQL needed). As [`require_pg_and_pgbouncer`].
pub fn require_pgbouncer() -> bool {
    super::require(&pgbouncer_missing())
}

/// Whether the postgres user exists.
pub fn have_postgres_user() -> bool {
    matches!(nix::unistd::User::from_name("postgres"), Ok(Some(_)))
}

/// What running PgBouncer as postgres and asking it with psql lacks here.
fn pgbouncer_missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (to run servers as postgres and chown to it)".to_string());
    }
    if which("pgbouncer").is_none() {
        missing.push("pgbouncer (Debian package pgbouncer)".into());
    }
    if which("psql").is_none() {
        missing.push("psql (Debian package postgresql-client)".into());
    }
    if !have_postgres_user() {
        missing.push("the postgres user".into());
    }
    missing
}

/// A directory the postgres user owns, inside `parent`.
pub fn postgres_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    chown_postgres(&d);
    d
}

/// chown postgres:postgres PATH.
pub fn chown_postgres(p: &Path) {
    let st = Command::new("chown")
        .arg("postgres:postgres")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "chown postgres {}", p.display());
}

/// A command run as the postgres user.
pub fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", program]);
    c
}

/// Makes `dir` (and its parents up to /) traversable by the postgres user.
pub fn open_path_for_postgres(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Some(dir);
    while let Some(d) = p {
        if d == Path::new("/") {
            break;
        }
        if let Ok(m) = std::fs::metadata(d) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711));
            }
        }
        p = d.parent();
    }
}

/// A PostgreSQL instance with a `marker` table holding its name.
pub struct Postgres {
    /// Port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    pid: i32,
}

impl Postgres {
    /// initdb, start on 127.0.0.1:`port`, create `marker(name)` = `name`.
    pub fn start(parent: &Path, name: &str) -> Postgres {
        let port = free_port();
        let base = postgres_dir(parent, &format!("pg-{name}"));
        let data = base.join("data");
        let out = as_postgres(&format!("{PG_BIN}/initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = base.join("postgres.log");
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50 -c shared_buffers=16MB",
            base.display()
        );
        let out = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let pid: i32 = std::fs::read_to_string(data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pg = Postgres { port, data, pid };
        pg.sql(&format!(
            "CREATE TABLE marker(name text); INSERT INTO marker VALUES ('{name}');"
        ));
        pg
    }

    /// Runs SQL directly on this instance.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atqc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Postgres {
    /// Fast shutdown (SIGINT to the postmaster, as Patroni's stop does),
    /// waiting until it is gone; the drop does nothing more then.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        wait_for("PostgreSQL to stop", Duration::from_secs(30), || {
            nix::sys::signal::kill(pid, None).is_err()
        });
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown by pid (SIGINT), then make sure it is gone.
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && nix::sys::signal::kill(pid, None).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = &self.data;
    }
}

/// Where a test's PgBouncer keeps its files, for the test's ini to name: all
/// in one directory the postgres user owns.
pub struct PgbouncerFiles {
    /// Port on 127.0.0.1 for `listen_port`.
    pub port: u16,
    /// The directory itself (usable as `unix_socket_dir`).
    pub dir: PathBuf,
    /// For `pidfile`: the fixture waits until PgBouncer writes its pid there.
    pub pidfile: PathBuf,
    /// For `logfile`: the fixture waits until PgBouncer logs "process up" there.
    pub log: PathBuf,
    /// For `auth_file`: the postgres user with [`PgbouncerOptions::password`].
    pub auth_file: PathBuf,
}

/// What a test's PgBouncer may do differently from the default one.
#[derive(Default)]
pub struct PgbouncerOptions {
    /// The postgres user's password in the auth file, also used on the admin
    /// console; empty by default.
    pub password: &'static str,
    /// `-v`: PgBouncer also logs each entry it loads, for reading a failure.
    pub verbose: bool,
}

/// A real PgBouncer run as the postgres user, its ini managed by the test,
/// stopped by its pid when dropped.
pub struct Pgbouncer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The ini file (mode 0640, owned by postgres, as Debian installs it).
    pub ini: PathBuf,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The log file.
    pub log: PathBuf,
    password: &'static str,
    child: Child,
}

impl Pgbouncer {
    /// Writes an ini in transaction pooling with `appdb` pointing at
    /// `backend_port` (and the unmanaged `other` too) and starts PgBouncer.
    pub fn start(parent: &Path, backend_port: u16) -> Pgbouncer {
        Pgbouncer::start_with(parent, PgbouncerOptions::default(), |f| {
            format!(
                "; managed by patroni-hook: host= and port= of appdb follow the leader\n\
                 [databases]\n\
                 appdb = host=127.0.0.1 port={backend_port} dbname=postgres\n\
                 ; not managed: stays on the first backend\n\
                 other = host=127.0.0.1 port={backend_port} dbname=template1\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 server_login_retry = 1\n\
                 logfile = {}\n\
                 pidfile = {}\n",
                f.port,
                f.auth_file.display(),
                f.log.display(),
                f.pidfile.display()
            )
        })
    }

    /// Starts PgBouncer on the ini `ini` writes for the files in
    /// `<parent>/pgbouncer`, and waits (20 s at most) until it runs: its pid
    /// in the pidfile, "process up" in its log and its port accepting.
    pub fn start_with(
        parent: &Path,
        options: PgbouncerOptions,
        ini: impl FnOnce(&PgbouncerFiles) -> String,
    ) -> Pgbouncer {
        let dir = postgres_dir(parent, "pgbouncer");
        let files = PgbouncerFiles {
            port: free_port(),
            pidfile: dir.join("pgbouncer.pid"),
            log: dir.join("pgbouncer.log"),
            auth_file: dir.join("userlist.txt"),
            dir,
        };
        std::fs::write(
            &files.auth_file,
            format!("\"postgres\" \"{}\"\n", options.password),
        )
        .unwrap();
        chown_postgres(&files.auth_file);
        let ini_path = files.dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini(&files)).unwrap();
        chown_postgres(&ini_path);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ini_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        // setpriv execs PgBouncer in place (runuser would fork), so the child
        // we hold is PgBouncer itself: its pid is the one in the pidfile, and
        // a signal to it reaches PgBouncer.
        let child = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(which("pgbouncer").expect("pgbouncer on PATH or in /usr/sbin"))
            .args(options.verbose.then_some("-v"))
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pgb = Pgbouncer {
            port: files.port,
            ini: ini_path,
            pidfile: files.pidfile,
            log: files.log,
            password: options.password,
            child,
        };
        let pid = pgb.pid().to_string();
        wait_for(
            "PgBouncer to write its pidfile, log \"process up\" and listen",
            Duration::from_secs(20),
            || {
                if let Ok(Some(st)) = pgb.child.try_wait() {
                    panic!(
                        "PgBouncer exited with {st} on {}; log:\n{}",
                        pgb.ini.display(),
                        pgb.log_text()
                    );
                }
                std::fs::read_to_string(&pgb.pidfile).is_ok_and(|p| p.trim() == pid)
                    && pgb.log_text().contains("process up")
                    && std::net::TcpStream::connect(("127.0.0.1", pgb.port)).is_ok()
            },
        );
        pgb
    }

    /// PgBouncer's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What PgBouncer has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times PgBouncer logged a reload.
    pub fn reloads(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("SIGHUP"))
            .count()
    }

    /// `psql` on the admin console (database `pgbouncer`) as postgres, rows
    /// as `a|b|c`; panics unless psql succeeds.
    pub fn admin(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "pgbouncer", "-c", sql])
            .env("PGPASSWORD", self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", super::text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Host and port PgBouncer serves database `name` from (`SHOW DATABASES`).
    pub fn database(&self, name: &str) -> Option<(String, String)> {
        self.admin("SHOW DATABASES").lines().find_map(|l| {
            let mut cols = l.split('|');
            if cols.next()? != name {
                return None;
            }
            Some((cols.next()?.into(), cols.next()?.into()))
        })
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // By the pid we started. SIGTERM is PgBouncer's immediate shutdown;
        // SIGKILL if it lingers. No panic here: this runs during one too.
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("PgBouncer {pid} ignored SIGTERM for 5 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that keeps one connection to PgBouncer open (psql reading stdin),
/// so a test can see the *next transaction* on the same client follow a new host.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Connects to `db` through PgBouncer on `port`.
    pub fn connect(port: u16, db: &str) -> Client {
        let mut child = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-Atq",
                "-v",
                "ON_ERROR_STOP=0",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one query returning one line; `None` if psql printed nothing (an error).
    pub fn query_line(&mut self, sql: &str) -> String {
        // The trailing `\echo` marks the end of this query's output.
        writeln!(self.stdin, "{sql}\n\\echo __end__").unwrap();
        self.stdin.flush().unwrap();
        let mut result = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "psql ended");
            let line = line.trim_end();
            if line == "__end__" {
                return result;
            }
            result = line.to_string();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
