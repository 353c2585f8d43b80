//! Tests of `pooler::file` (reload, pidfile, atomic write) against a real
//! PgBouncer: the edited file is written with `write_atomic`, PgBouncer is sent
//! SIGHUP with `reload`, and what PgBouncer then serves is read back through its
//! admin console (`SHOW DATABASES`).
//!
//! Needs root (PgBouncer refuses to run as root, so the shared fixture runs it
//! as postgres, and the owner checks chown to postgres), the `pgbouncer`
//! binary, the `postgres` user and `psql`. Missing ones fail the test under
//! CI=true and skip it elsewhere, saying what is missing.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pg::{self, Pgbouncer, PgbouncerOptions};
use common::{require_all, wait_for};
use nix::unistd::User;
use patroni_hook::pooler::file;
use patroni_hook::pooler::ini::{self, Target};

fn postgres_ids() -> (u32, u32) {
    let user = User::from_name("postgres").unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Root and the postgres user, for the tests that chown to postgres.
fn require_root_and_postgres() -> bool {
    require_all(&[
        (
            "root (to chown to postgres)",
            nix::unistd::geteuid().is_root(),
        ),
        ("the postgres user", pg::have_postgres_user()),
    ])
}

/// A PgBouncer with two entries on documentation addresses (it never
/// connects to them), any login on the admin console, and `-v`, so its log
/// names each entry it loads.
fn start_pgbouncer(dir: &Path) -> Pgbouncer {
    let options = PgbouncerOptions {
        verbose: true,
        ..PgbouncerOptions::default()
    };
    Pgbouncer::start_with(dir, options, |f| {
        format!(
            "[databases]\n\
             appdb = host=198.51.100.1 port=5432 dbname=app\n\
             other = host=198.51.100.2 port=5432\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             admin_users = postgres\n\
             pidfile = {}\n\
             logfile = {}\n\
             server_login_retry = 1\n",
            f.port,
            f.pidfile.display(),
            f.log.display()
        )
    })
}

#[test]
fn reload_makes_pgbouncer_serve_the_edited_entry() {
    if !pg::require_pgbouncer() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pg::open_path_for_postgres(dir.path());
    let bouncer = start_pgbouncer(dir.path());
    assert_eq!(
        bouncer.database("appdb"),
        Some(("198.51.100.1".into(), "5432".into()))
    );

    let before = fs::read(&bouncer.ini).unwrap();
    let target = Target {
        host: "198.51.100.9".into(),
        port: 6543,
    };
    let edited = ini::edit(&before, &[("appdb", &target)]).unwrap();
    assert_eq!(edited.changed, ["appdb"]);
    assert!(file::write_atomic(&bouncer.ini, &before, &edited.output).unwrap());

    let pid = file::reload(&bouncer.pidfile).unwrap();
    assert_eq!(pid, bouncer.pid());
    wait_for(
        "PgBouncer to log \"got SIGHUP, re-reading config\"",
        Duration::from_secs(10),
        || bouncer.log_text().contains("got SIGHUP, re-reading config"),
    );
    wait_for(
        "SHOW DATABASES to list appdb at 198.51.100.9:6543",
        Duration::from_secs(10),
        || bouncer.database("appdb") == Some(("198.51.100.9".into(), "6543".into())),
    );
    assert_eq!(
        bouncer.database("other"),
        Some(("198.51.100.2".into(), "5432".into())),
        "an unmanaged entry moved"
    );
    let meta = fs::metadata(&bouncer.ini).unwrap();
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
    let err = file::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("pidfile {}: stale: ", pidfile.display())),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);

    // A live pid that is not PgBouncer (this test process): refused, so the
    // SIGHUP that would end this process is never sent.
    fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    let err = file::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string().contains("stale: ") && err.to_string().contains("not pgbouncer"),
        "{err}"
    );
}

#[test]
fn missing_or_garbage_pidfile_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgbouncer.pid");
    let err = file::reload(&pidfile).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("pidfile {}: ", pidfile.display())),
        "{err}"
    );
    fs::write(&pidfile, "pgbouncer\n").unwrap();
    let err = file::reload(&pidfile).unwrap_err();
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
    if !require_root_and_postgres() {
        return;
    }
    let (uid, gid) = postgres_ids();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgbouncer.ini");
    fs::write(&path, "[databases]\n").unwrap();
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();

    assert!(
        file::write_atomic(&path, b"[databases]\n", b"[databases]\nappdb = host=db1\n").unwrap()
    );

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
    if !require_root_and_postgres() {
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

    assert!(file::write_atomic(&link, b"old\n", b"new\n").unwrap());

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
