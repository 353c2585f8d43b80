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
/// LAB.md: missing under CI=true fails; elsewhere prints what is missing.
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

/// A PgBouncer in transaction pooling, its ini managed by the test.
pub struct Pgbouncer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The ini file.
    pub ini: PathBuf,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The log file.
    pub log: PathBuf,
    child: Child,
    pid: i32,
}

impl Pgbouncer {
    /// Writes an ini with `appdb` pointing at `backend_port` and starts PgBouncer.
    pub fn start(parent: &Path, backend_port: u16) -> Pgbouncer {
        let dir = postgres_dir(parent, "pgbouncer");
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        let pidfile = dir.join("pgbouncer.pid");
        let log = dir.join("pgbouncer.log");
        let auth = dir.join("userlist.txt");
        std::fs::write(&auth, "\"postgres\" \"\"\n").unwrap();
        chown_postgres(&auth);
        std::fs::write(
            &ini,
            format!(
                "; managed by patroni-hook: host= and port= of appdb follow the leader\n\
                 [databases]\n\
                 appdb = host=127.0.0.1 port={backend_port} dbname=postgres\n\
                 ; not managed: stays on the first backend\n\
                 other = host=127.0.0.1 port={backend_port} dbname=template1\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 server_login_retry = 1\n\
                 logfile = {}\n\
                 pidfile = {}\n",
                auth.display(),
                log.display(),
                pidfile.display()
            ),
        )
        .unwrap();
        chown_postgres(&ini);
        // setpriv execs PgBouncer in place (runuser would fork), so the child
        // we hold is PgBouncer itself and dies with a kill of its pid.
        let child = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(which("pgbouncer").unwrap())
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut pgb = Pgbouncer {
            port,
            ini,
            pidfile,
            log,
            child,
            pid,
        };
        wait_for(
            "pgbouncer to write its pidfile and listen",
            Duration::from_secs(20),
            || {
                if let Ok(Some(st)) = pgb.child.try_wait() {
                    let log = std::fs::read_to_string(&pgb.log).unwrap_or_default();
                    panic!("pgbouncer exited with {st}: {log}");
                }
                pgb.pidfile.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
        );
        pgb
    }

    /// How many times PgBouncer logged a reload.
    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("SIGHUP"))
            .count()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // By the pid we started (setpriv exec'd PgBouncer in place); the
        // directory with the pidfile may be gone already.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
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
