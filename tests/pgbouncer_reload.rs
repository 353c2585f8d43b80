//! Tests of `pgbouncer` (reload, pidfile, atomic write) against a real
//! PgBouncer: the edited file is written with `write_atomic`, PgBouncer is sent
//! SIGHUP with `reload`, and what PgBouncer then serves is read back through its
//! admin console (`SHOW DATABASES`).
//!
//! Needs root (PgBouncer refuses to run as root, so it is started with
//! `-u postgres`, and the owner checks chown to postgres), the `pgbouncer`
//! binary, the `postgres` user and `psql`. Missing ones fail the test under
//! CI=true and skip it elsewhere, saying what is missing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use patroni_hook::ini::{self, Target};
use patroni_hook::pgbouncer;

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// What this environment lacks for the real-PgBouncer tests, if anything.
fn missing_prerequisites(needs: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for need in needs {
        match *need {
            "root" if !nix::unistd::geteuid().is_root() => {
                missing.push("root (to run PgBouncer as postgres and to chown)".to_string())
            }
            "pgbouncer" if !Path::new(PGBOUNCER).exists() => {
                missing.push(format!("{PGBOUNCER} (Debian package pgbouncer)"))
            }
            "postgres" if !matches!(User::from_name("postgres"), Ok(Some(_))) => {
                missing.push("the postgres user".to_string())
            }
            "psql" if which("psql").is_none() => {
                missing.push("psql (Debian package postgresql-client)".to_string())
            }
            _ => {}
        }
    }
    missing
}

/// True when the test may run; under CI=true a missing prerequisite panics.
fn prerequisites(test: &str, needs: &[&str]) -> bool {
    let missing = missing_prerequisites(needs);
    if missing.is_empty() {
        return true;
    }
    let message = format!("{test}: missing {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping {message}");
    false
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn postgres_ids() -> (u32, u32) {
    let user = User::from_name("postgres").unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Polls `check` until it returns Some, or panics after `limit` naming `what`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A PgBouncer started for one test, in its own temporary directory owned by
/// postgres; stopped by its pid when dropped.
struct Bouncer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Bouncer {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("patroni-hook-pgbouncer-")
            .tempdir()
            .unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let ini = format!(
            "[databases]\n\
             appdb = host=198.51.100.1 port=5432 dbname=app\n\
             other = host=198.51.100.2 port=5432\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             admin_users = postgres\n\
             pidfile = {d}/pgbouncer.pid\n\
             logfile = {d}/pgbouncer.log\n\
             server_login_retry = 1\n"
        );
        let bouncer_files = [("pgbouncer.ini", ini.as_str()), ("pgbouncer.log", "")];
        for (name, content) in bouncer_files {
            let path = dir.path().join(name);
            fs::write(&path, content).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        }
        // Foreground (no -d): the pid we hold is PgBouncer's own, and -v makes
        // it log each entry it loads.
        let child = Command::new(PGBOUNCER)
            .args(["-v", "-u", "postgres"])
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut bouncer = Bouncer { child, dir, port };
        let pid = bouncer.child.id() as i32;
        wait_for(
            "PgBouncer to write its pidfile and log \"process up\"",
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = bouncer.child.try_wait() {
                    panic!("PgBouncer exited with {status}; log:\n{}", bouncer.log());
                }
                let pidfile = fs::read_to_string(bouncer.pidfile()).ok()?;
                (pidfile.trim() == pid.to_string() && bouncer.log().contains("process up"))
                    .then_some(())
            },
        );
        bouncer
    }

    fn ini(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.ini")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.pid")
    }

    fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = fs::File::open(self.dir.path().join("pgbouncer.log")) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }

    /// `SHOW DATABASES` through the admin console: (name, host, port) rows.
    fn databases(&self) -> Vec<(String, String, String)> {
        let output = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-F",
                "|",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", "pgbouncer"])
            .args(["-c", "SHOW DATABASES"])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql SHOW DATABASES failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('|');
                Some((
                    cols.next()?.into(),
                    cols.next()?.into(),
                    cols.next()?.into(),
                ))
            })
            .collect()
    }

    fn database(&self, name: &str) -> Option<(String, String)> {
        self.databases()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, host, port)| (host, port))
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        // SIGTERM is PgBouncer's immediate shutdown; SIGKILL if it lingers.
        let _ = kill(pid, Signal::SIGTERM);
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

#[test]
fn reload_makes_pgbouncer_serve_the_edited_entry() {
    let needs = ["root", "pgbouncer", "postgres", "psql"];
    if !prerequisites("reload_makes_pgbouncer_serve_the_edited_entry", &needs) {
        return;
    }
    let bouncer = Bouncer::start();
    assert_eq!(
        bouncer.database("appdb"),
        Some(("198.51.100.1".into(), "5432".into()))
    );

    let before = fs::read(bouncer.ini()).unwrap();
    let target = Target {
        host: "198.51.100.9".into(),
        port: 6543,
    };
    let edited = ini::edit(&before, &[("appdb", &target)]).unwrap();
    assert_eq!(edited.changed, ["appdb"]);
    pgbouncer::write_atomic(&bouncer.ini(), &edited.output).unwrap();

    let pid = pgbouncer::reload(&bouncer.pidfile()).unwrap();
    assert_eq!(pid, bouncer.child.id() as i32);
    wait_for(
        "PgBouncer to log \"got SIGHUP, re-reading config\"",
        Duration::from_secs(10),
        || {
            bouncer
                .log()
                .contains("got SIGHUP, re-reading config")
                .then_some(())
        },
    );
    wait_for(
        "SHOW DATABASES to list appdb at 198.51.100.9:6543",
        Duration::from_secs(10),
        || {
            (bouncer.database("appdb") == Some(("198.51.100.9".into(), "6543".into())))
                .then_some(())
        },
    );
    assert_eq!(
        bouncer.database("other"),
        Some(("198.51.100.2".into(), "5432".into())),
        "an unmanaged entry moved"
    );
    let meta = fs::metadata(bouncer.ini()).unwrap();
    assert_eq!((meta.uid(), meta.gid()), postgres_ids());
    assert_eq!(meta.mode() & 0o7777, 0o640);
}

#[test]
fn stale_pidfile_is_an_error_naming_the_path_and_signals_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgbouncer.pid");

    // A pid that has exited (and been reaped).
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    fs::write(&pidfile, format!("{dead_pid}\n")).unwrap();
    let err = pgbouncer::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("pidfile {}: stale: ", pidfile.display())),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);

    // A live pid that is not PgBouncer (this test process): refused, so the
    // SIGHUP that would end this process is never sent.
    fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    let err = pgbouncer::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string().contains("stale: ") && err.to_string().contains("not pgbouncer"),
        "{err}"
    );
}

#[test]
fn missing_or_garbage_pidfile_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgbouncer.pid");
    let err = pgbouncer::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("pidfile {}: ", pidfile.display())),
        "{err}"
    );
    fs::write(&pidfile, "pgbouncer\n").unwrap();
    let err = pgbouncer::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "pidfile {}: does not hold a process id",
            pidfile.display()
        )),
        "{err}"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_atomic_keeps_mode_and_owner_replaces_the_inode_and_leaves_no_temp_file() {
    if !prerequisites("write_atomic_keeps_mode_and_owner", &["root", "postgres"]) {
        return;
    }
    let (uid, gid) = postgres_ids();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgbouncer.ini");
    fs::write(&path, "[databases]\n").unwrap();
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();

    pgbouncer::write_atomic(&path, b"[databases]\nappdb = host=db1\n").unwrap();

    assert_eq!(fs::read(&path).unwrap(), b"[databases]\nappdb = host=db1\n");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner");
    assert_ne!(
        meta.ino(),
        inode,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(entries(dir.path()), ["pgbouncer.ini"]);
}

#[test]
fn write_atomic_through_a_symlink_replaces_the_real_file_and_keeps_the_link() {
    if !prerequisites("write_atomic_through_a_symlink", &["root", "postgres"]) {
        return;
    }
    let (uid, gid) = postgres_ids();
    let real_dir = tempfile::tempdir().unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let real = real_dir.path().join("pgbouncer.ini");
    let link = link_dir.path().join("pgbouncer.ini");
    fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::chown(&real, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();

    pgbouncer::write_atomic(&link, b"new\n").unwrap();

    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), real);
    assert_eq!(fs::read(&real).unwrap(), b"new\n");
    let meta = fs::metadata(&real).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, uid, gid)
    );
    assert_eq!(entries(real_dir.path()), ["pgbouncer.ini"]);
    assert_eq!(entries(link_dir.path()), ["pgbouncer.ini"]);
}
