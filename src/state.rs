//! The per-host lock, and the small state files beside it.
//!
//! - The lock (flock on `lock_file`) serialises the *local* part of runs: it
//!   is never held across a Consul call, so no run waits behind another's
//!   network. The kernel drops it when its process dies (flock(2)).
//! - `vip-<scope>.owned`: the addresses this host owns for a scope, one
//!   `address/prefix interface added|adopted` per line, oldest first. An
//!   address is written here *before* it is added and removed from here
//!   *after* it is deleted, so a run killed at any moment leaves nothing the
//!   next release cannot find.
//! - `<subject>.decided`: the ticket of the last decision applied for a
//!   subject (a scope's VIP, pgbouncer.ini). A run takes its ticket when it
//!   starts observing; it applies only if no later-ticketed run applied
//!   first, so a run that observed before a release never undoes it.
//! - `<lock>.reload-pending`: pgbouncer.ini was replaced and PgBouncer has
//!   not had its reload yet.
//!
//! Every file is replaced atomically (temp file, rename), so a killed run
//! leaves the old or the new content, never a torn one; a later write sweeps
//! the temp files of runs that were killed. Files a root run creates (an
//! operator's manual `role-change`) are given to the directory's owner, so
//! they never lock the Patroni user out.

use crate::error::{Error, Result};
use crate::node::plan::Owned;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped (or when the process dies).
pub struct HostLock {
    _lock: Flock<File>,
}

/// Takes the exclusive lock on `path`, waiting at most until `until`.
/// A lock that cannot be had in time is a temporary error; a lock file that
/// cannot be opened is a failure naming the path.
pub fn acquire(path: &Path, until: Instant) -> Result<HostLock> {
    let mut file = open_lock(path)?;
    // Poll with LOCK_NB rather than block: a blocked flock cannot be given a
    // timeout, and the run must end by its deadline whatever happens.
    let mut pause = Duration::from_micros(200);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(HostLock { _lock: lock }),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => file = f,
            Err((_, e)) => {
                return Err(Error::failed(
                    format!("locking {}", path.display()),
                    e.desc(),
                ))
            }
        }
        let now = Instant::now();
        if now >= until {
            return Err(Error::temporary(
                format!("locking {}", path.display()),
                "another patroni-hook run holds the lock",
            ));
        }
        std::thread::sleep(pause.min(until - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Opens (or creates) the lock file. flock(2) needs no write access, so a
/// file another user created (root, by hand) is opened read-only.
fn open_lock(path: &Path) -> Result<File> {
    let fail = |e: std::io::Error| {
        let why = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => "it is a directory".to_string(),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                format!("{e} (the file is owned by uid {} with mode {:o})", m.uid(), m.mode() & 0o7777)
            }
            Err(_) => format!(
                "{e} (its directory must exist and be writable by this user; see the tmpfiles.d entry)"
            ),
        };
        Error::failed(format!("opening lock file {}", path.display()), why)
    };
    match OpenOptions::new().read(true).open(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
            Err(fail(std::io::Error::other("a directory")))
        }
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .open(path)
                .map_err(fail)?;
            give_to_dir_owner(path);
            Ok(f)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Checks that the lock can be opened and taken now (for check-config).
pub fn probe(lock_file: &Path) -> Result<()> {
    acquire(lock_file, Instant::now() + Duration::from_millis(200)).map(drop)
}

/// When this process is root, hands a file it created to the owner of its
/// directory (the Patroni user, by the tmpfiles.d entry).
fn give_to_dir_owner(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Some(dir) = path.parent() else { return };
    if let Ok(m) = std::fs::metadata(dir) {
        if m.uid() != 0 || m.gid() != 0 {
            let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
        }
    }
}

/// The directory of the state files: the lock file's.
fn dir(lock_file: &Path) -> &Path {
    lock_file.parent().unwrap_or_else(|| Path::new("/"))
}

/// Where a scope's owned addresses are remembered.
pub fn owned_path(lock_file: &Path, scope: &str) -> PathBuf {
    dir(lock_file).join(format!("vip-{scope}.owned"))
}

/// The single address older versions remembered, `vip-<scope>.addr`; read
/// as owned on the configured interface and removed when the set is written.
fn legacy_path(lock_file: &Path, scope: &str) -> PathBuf {
    dir(lock_file).join(format!("vip-{scope}.addr"))
}

/// The largest state file read: each holds a few lines; past this it is not
/// one of ours, and is not read into memory.
const MAX_STATE_FILE: u64 = 64 * 1024;

/// Reads a state file, which must be a regular file. Opened non-blocking:
/// a FIFO (or a device) put in its place would otherwise block the run
/// forever, past its deadline, while it holds the host lock; the deadline's
/// backstop cannot fire while the runtime's only thread is blocked.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if m.len() > MAX_STATE_FILE {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than a state file holds",
            m.len()
        )));
    }
    let mut out = Vec::new();
    f.take(MAX_STATE_FILE).read_to_end(&mut out)?;
    Ok(out)
}

/// [`read_file`], as text (bytes that are not UTF-8 are replaced).
fn read_text(path: &Path) -> std::io::Result<String> {
    read_file(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Where the auth token etcd gave `user` is kept between runs: etcd hashes
/// a password with bcrypt at every authenticate (tens of milliseconds of a
/// member's CPU), which a callback on the promotion path should not pay at
/// every run. The token is worth what the password file is worth for as
/// long as etcd keeps it (`--auth-token-ttl`), so it gets the same care:
/// mode 0600, in the state directory (tmpfs by default).
pub fn etcd_token_path(lock_file: &Path, user: &str) -> PathBuf {
    dir(lock_file).join(format!("etcd-token-{user}"))
}

/// The kept token, if it was given for `fingerprint` (the user, password
/// and members it was asked with: a password changed in the file must be
/// tried at once, not when etcd lets the old token expire). An unreadable,
/// odd or foreign file is none: etcd is asked for a new one.
pub fn read_etcd_token(path: &Path, fingerprint: &str) -> Option<String> {
    let t = read_text(path).ok()?;
    let (fp, t) = t.trim().split_once(' ')?;
    (fp == fingerprint
        && !t.is_empty()
        && t.len() < 4096
        && !t.chars().any(|c| c.is_control() || c == ' '))
    .then(|| t.to_string())
}

/// Keeps (or, with `None`, forgets) the token given for `fingerprint`.
/// Failures are not the run's: the next run authenticates again.
pub fn write_etcd_token(path: &Path, token: Option<(&str, &str)>) {
    let _ = match token {
        Some((fingerprint, t)) => {
            write_atomic_mode(path, format!("{fingerprint} {t}\n").as_bytes(), 0o600)
        }
        None => std::fs::remove_file(path),
    };
}

/// Where the scope's floating-ip, as last read from Consul, is kept.
pub fn seen_vip_path(lock_file: &Path, scope: &str) -> PathBuf {
    dir(lock_file).join(format!("vip-{scope}.seen"))
}

/// The scope's floating-ip as last read from Consul; `None` when never read,
/// forgotten, or unreadable (a guess is only a guess: a bad file is no VIP).
/// It is checked as Consul's value is (`keys::parse_vip`): a hand edit or a
/// stale file naming a network address or 0.0.0.0/0 is no VIP.
pub fn read_seen_vip(lock_file: &Path, scope: &str) -> Option<ipnet::IpNet> {
    let text = read_text(&seen_vip_path(lock_file, scope)).ok()?;
    crate::dcs::keys::parse_vip(&text).ok()
}

/// Keeps (or, with `None`, forgets) the scope's floating-ip as read.
pub fn write_seen_vip(lock_file: &Path, scope: &str, net: Option<ipnet::IpNet>) -> Result<()> {
    let path = seen_vip_path(lock_file, scope);
    let done = match net {
        Some(net) => write_atomic(&path, format!("{net}\n").as_bytes()),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    done.map_err(|e| Error::failed(format!("writing {}", path.display()), e))
}

/// The addresses this host remembers owning for `scope`, oldest first.
/// `interface` is the configured one, for the legacy single-address file.
/// A missing file is an empty set; lines that do not read (a torn write of
/// another tool, bytes that are not text, a hand edit) are skipped, since an
/// entry that cannot be read names nothing that could be removed.
pub fn read_owned(lock_file: &Path, scope: &str, interface: &str) -> Result<Vec<Owned>> {
    let path = owned_path(lock_file, scope);
    let mut out = Vec::new();
    match read_file(&path) {
        Ok(bytes) => parse_owned(&String::from_utf8_lossy(&bytes), &mut out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::failed(format!("reading {}", path.display()), e)),
    }
    if let Ok(bytes) = read_file(&legacy_path(lock_file, scope)) {
        if let Ok(net) = String::from_utf8_lossy(&bytes).trim().parse() {
            // Older versions remembered whatever they held, also an address
            // they found in place: adopted, not added.
            push_unique(
                &mut out,
                Owned {
                    net,
                    interface: interface.to_string(),
                    added: false,
                },
            );
        }
    }
    Ok(out)
}

fn parse_owned(text: &str, out: &mut Vec<Owned>) {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(net), Some(interface)) = (parts.next(), parts.next()) else {
            continue;
        };
        let added = match (parts.next(), parts.next()) {
            (Some("added"), None) => true,
            (Some("adopted") | None, None) => false,
            _ => continue,
        };
        if let Ok(net) = net.parse() {
            push_unique(
                out,
                Owned {
                    net,
                    interface: interface.to_string(),
                    added,
                },
            );
        }
    }
}

/// What the other scopes on this host remember owning: the hook's mark on
/// one of their addresses does not make it this scope's.
pub fn read_others(lock_file: &Path, scope: &str) -> Vec<Owned> {
    let mine = format!("vip-{scope}.owned");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(lock_file)) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("vip-") && name.ends_with(".owned") && name != mine {
            if let Ok(bytes) = read_file(&e.path()) {
                parse_owned(&String::from_utf8_lossy(&bytes), &mut out);
            }
        }
    }
    out
}

fn push_unique(set: &mut Vec<Owned>, o: Owned) {
    if !set.iter().any(|x| x.same(&o)) {
        set.push(o);
    }
}

/// Replaces the remembered set of `scope` (and retires the legacy file).
pub fn write_owned(lock_file: &Path, scope: &str, set: &[Owned]) -> Result<()> {
    let path = owned_path(lock_file, scope);
    let text: String = set
        .iter()
        .map(|o| {
            format!(
                "{} {} {}\n",
                o.net,
                o.interface,
                if o.added { "added" } else { "adopted" }
            )
        })
        .collect();
    write_atomic(&path, text.as_bytes())
        .map_err(|e| Error::failed(format!("writing {}", path.display()), e))?;
    let legacy = legacy_path(lock_file, scope);
    match std::fs::remove_file(&legacy) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::failed(format!("removing {}", legacy.display()), e));
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, content, 0o644)
}

fn write_atomic_mode(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        // No fsync: the order that matters is against a killed process
        // (remember, then add), which the rename gives. A crash of the host
        // loses the kernel's addresses too, and the default directory is
        // tmpfs, cleared at boot with them.
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        give_to_dir_owner(path);
        // Once per directory and process: a killed run's leftovers need one
        // sweep, not one per write.
        static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if !swept.contains(&dir) {
            swept.push(dir);
            sweep(path);
        }
    }
    result
}

/// Removes temp files of state files left by runs that were killed before
/// their rename (`<name>.tmp<pid>` of a pid that no longer runs).
fn sweep(path: &Path) {
    let Some(dir) = path.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((stem, pid)) = name.rsplit_once(".tmp") else {
            continue;
        };
        let ours = stem.starts_with("vip-")
            || stem.starts_with("pgbouncer")
            || stem.ends_with(".reload-pending");
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if ours && gone && pid > 0 {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// When a run started observing, on this boot: decisions are ordered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u128);

impl Ticket {
    /// Now. CLOCK_BOOTTIME is one clock for every process on the host and
    /// never goes back, unlike the wall clock; it restarts at boot, so the
    /// file keeps the boot id beside it.
    pub fn now() -> Ticket {
        let ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
            .unwrap_or(0);
        Ticket(ns)
    }

    /// How long after `earlier` this ticket was taken.
    pub fn since(self, earlier: Ticket) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0).min(u64::MAX as u128) as u64)
    }
}

/// This boot's id, read once per process (it cannot change under it).
fn boot_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

/// Where the last applied decision of `subject` is kept.
pub fn decided_path(lock_file: &Path, subject: &str) -> PathBuf {
    dir(lock_file).join(format!("{subject}.decided"))
}

/// The ticket of the last decision applied for `subject` on this boot.
pub fn last_decided(lock_file: &Path, subject: &str) -> Option<Ticket> {
    let text = read_text(&decided_path(lock_file, subject)).ok()?;
    let (boot, ticket) = text.trim().split_once(' ')?;
    (boot == boot_id()).then_some(())?;
    ticket.parse().ok().map(Ticket)
}

/// Records that the decision of `ticket` is being applied for `subject`.
/// A ticket never goes back: an older one than the one recorded is not
/// written (the one writer without the lock, a release, may race a holder).
pub fn set_decided(lock_file: &Path, subject: &str, ticket: Ticket) -> Result<()> {
    if last_decided(lock_file, subject).is_some_and(|last| last >= ticket) {
        return Ok(());
    }
    let path = decided_path(lock_file, subject);
    write_atomic(&path, format!("{} {}\n", boot_id(), ticket.0).as_bytes())
        .map_err(|e| Error::failed(format!("writing {}", path.display()), e))
}

/// Where the PgBouncer host keeps what it paused for a scope.
pub fn pause_path(lock_file: &Path, scope: &str) -> PathBuf {
    dir(lock_file).join(format!("pgbouncer-pause-{scope}.json"))
}

/// What this host paused for `scope` (nothing when the file is missing or
/// does not read). A pause whose record is lost stays until someone resumes
/// it: reconcile warns about a managed database PgBouncer has paused without
/// a record here, and leaves it (it may be an operator's).
pub fn read_pause(lock_file: &Path, scope: &str) -> crate::pooler::pause::Local {
    read_file(&pause_path(lock_file, scope))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The scopes this host has a pause record of (configured or not any more).
pub fn pause_scopes(lock_file: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(lock_file)) else {
        return Vec::new();
    };
    let mut scopes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("pgbouncer-pause-")?
                .strip_suffix(".json")
                .map(String::from)
        })
        .collect();
    scopes.sort();
    scopes
}

/// Now on this host's boot clock, for pause records.
pub fn stamp_now() -> crate::pooler::pause::Stamp {
    crate::pooler::pause::Stamp {
        boot: boot_id(),
        ms: (Ticket::now().0 / 1_000_000).min(u64::MAX as u128) as u64,
    }
}

/// Records what this host paused for `scope`.
pub fn write_pause(
    lock_file: &Path,
    scope: &str,
    local: &crate::pooler::pause::Local,
) -> Result<()> {
    let path = pause_path(lock_file, scope);
    let body = serde_json::to_vec(local)
        .map_err(|e| Error::failed(format!("encoding {}", path.display()), e))?;
    write_atomic(&path, &body).map_err(|e| Error::failed(format!("writing {}", path.display()), e))
}

/// The mark of a pgbouncer.ini rewritten but not yet followed by a reload.
pub fn reload_pending_path(lock_file: &Path) -> PathBuf {
    lock_file.with_extension("reload-pending")
}

/// Sets the reload-pending mark, holding `ticket` (call with the lock held).
pub fn mark_reload_pending(lock_file: &Path, ticket: Ticket) -> Result<()> {
    let path = reload_pending_path(lock_file);
    write_atomic(&path, format!("{} {}\n", boot_id(), ticket.0).as_bytes())
        .map_err(|e| Error::failed(format!("writing {}", path.display()), e))
}

/// The reload-pending mark's content, when there is one.
pub fn reload_pending(lock_file: &Path) -> Option<String> {
    read_text(&reload_pending_path(lock_file)).ok()
}

/// Clears the reload-pending mark after a reload, unless a run that wrote
/// pgbouncer.ini meanwhile set it anew (its reload is still to come). The
/// lock is taken for a moment; not had in time, the mark stays and the
/// next run reloads once more, which does no harm.
pub fn clear_reload_pending(lock_file: &Path, seen: &str, until: Instant) {
    let Ok(_lock) = acquire(lock_file, until) else {
        return;
    };
    if reload_pending(lock_file).as_deref() == Some(seen) {
        let _ = std::fs::remove_file(reload_pending_path(lock_file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_token_is_kept_private_and_read_back_only_when_sane() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("patroni-hook.lock");
        let p = etcd_token_path(&lock, "hook");
        assert_eq!(read_etcd_token(&p, "fp1"), None);
        write_etcd_token(&p, Some(("fp1", "abcDEF.17")));
        assert_eq!(read_etcd_token(&p, "fp1").as_deref(), Some("abcDEF.17"));
        assert_eq!(read_etcd_token(&p, "fp2"), None, "another password");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "fp1 a\u{1b}b\n").unwrap();
        assert_eq!(read_etcd_token(&p, "fp1"), None, "control characters");
        write_etcd_token(&p, None);
        assert!(!p.exists());
    }

    fn owned(s: &str, i: &str) -> Owned {
        Owned {
            net: s.parse().unwrap(),
            interface: i.into(),
            added: true,
        }
    }

    #[test]
    fn lock_is_exclusive_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let far = Instant::now() + Duration::from_secs(5);
        let held = acquire(&p, far).unwrap();
        let started = Instant::now();
        let e = acquire(&p, Instant::now() + Duration::from_millis(50))
            .err()
            .expect("second lock must wait and give up");
        assert_eq!(e.exit_code(), 75);
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        acquire(&p, far).unwrap();
    }

    #[test]
    fn missing_directory_names_the_path() {
        let e = acquire(Path::new("/nonexistent-dir/x.lock"), Instant::now())
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir/x.lock"), "{e}");
    }

    #[test]
    fn owned_set_round_trip_and_legacy_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("x.lock");
        assert!(read_owned(&l, "batman", "eth1").unwrap().is_empty());
        std::fs::write(dir.path().join("vip-batman.addr"), "198.51.100.100/24\n").unwrap();
        assert_eq!(
            read_owned(&l, "batman", "eth1").unwrap(),
            vec![Owned {
                added: false,
                ..owned("198.51.100.100/24", "eth1")
            }]
        );
        let set = vec![
            owned("198.51.100.100/24", "eth1"),
            owned("2001:db8::100/64", "eth2"),
        ];
        write_owned(&l, "batman", &set).unwrap();
        assert!(!dir.path().join("vip-batman.addr").exists());
        assert_eq!(read_owned(&l, "batman", "eth9").unwrap(), set);
        // A torn or foreign line names nothing and is skipped; bytes that
        // are not text do not spoil the rest.
        std::fs::write(
            owned_path(&l, "batman"),
            b"198.51.100.100/24 eth1 added\ngarbage\n198.51.100.101/24\n\xe9t\xe9\n2001:db8::1/64 eth2\n",
        )
        .unwrap();
        assert_eq!(
            read_owned(&l, "batman", "eth1").unwrap(),
            vec![
                owned("198.51.100.100/24", "eth1"),
                Owned {
                    added: false,
                    ..owned("2001:db8::1/64", "eth2")
                }
            ]
        );
        // Another scope's memory is the other scope's.
        write_owned(&l, "robin", &[owned("198.51.100.102/24", "eth1")]).unwrap();
        assert_eq!(
            read_others(&l, "batman"),
            vec![owned("198.51.100.102/24", "eth1")]
        );
        assert_eq!(read_others(&l, "robin").len(), 2);
    }

    #[test]
    fn temp_files_of_dead_runs_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("x.lock");
        let dead = dir.path().join("vip-batman.owned.tmp4194999");
        let alive = dir
            .path()
            .join(format!("vip-batman.owned.tmp{}", std::process::id()));
        let foreign = dir.path().join("notes.tmp4194999");
        for p in [&dead, &alive, &foreign] {
            std::fs::write(p, "x").unwrap();
        }
        write_owned(&l, "batman", &[]).unwrap();
        assert!(!dead.exists());
        assert!(foreign.exists(), "not a state file of ours");
        // Our own pid's temp file was the one renamed.
        assert!(!alive.exists());
    }

    #[test]
    fn a_lock_file_someone_else_created_is_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        acquire(&p, Instant::now() + Duration::from_secs(1)).unwrap();
        let e = acquire(dir.path(), Instant::now()).err().unwrap();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn decisions_are_ordered_by_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("x.lock");
        assert_eq!(last_decided(&l, "vip-batman"), None);
        let a = Ticket::now();
        let b = Ticket::now();
        assert!(b >= a);
        set_decided(&l, "vip-batman", b).unwrap();
        assert_eq!(last_decided(&l, "vip-batman"), Some(b));
        // Never back.
        set_decided(&l, "vip-batman", a).unwrap();
        assert_eq!(last_decided(&l, "vip-batman"), Some(b));
        // Another boot's ticket says nothing about this boot.
        std::fs::write(
            decided_path(&l, "vip-batman"),
            "other-boot 99999999999999999999\n",
        )
        .unwrap();
        assert_eq!(last_decided(&l, "vip-batman"), None);
    }
}
