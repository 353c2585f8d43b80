//! The per-host lock, and the small state files beside it.
//!
//! - The lock (flock on `lock_file`) serialises the *local* part of runs: it
//!   is never held across a Consul call, so no run waits behind another's
//!   network. The kernel drops it when its process dies (flock(2)).
//! - `vip-<scope>.owned`: the addresses this host added for a scope, one
//!   `address/prefix interface` per line, oldest first. An address is written
//!   here *before* it is added and removed from here *after* it is deleted,
//!   so a run killed at any moment leaves nothing the next release cannot find.
//! - `<subject>.decided`: the ticket of the last decision applied for a
//!   subject (a scope's VIP, pgbouncer.ini). A run takes its ticket when it
//!   starts observing; it applies only if no later-ticketed run applied
//!   first, so a run that observed before a release never undoes it.
//! - `<lock>.reload-pending`: pgbouncer.ini was replaced and PgBouncer has
//!   not had its reload yet.
//!
//! Every file is replaced atomically (temp file, rename), so a killed run
//! leaves the old or the new content, never a torn one.

use crate::error::{Error, Result};
use crate::plan::Owned;
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
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o660)
        .open(path)
        .map_err(|e| {
            Error::failed(
                format!("opening lock file {}", path.display()),
                format!("{e} (its directory must exist and be writable by this user; see the tmpfiles.d entry)"),
            )
        })?;
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

/// The addresses this host remembers adding for `scope`, oldest first.
/// `interface` is the configured one, for the legacy single-address file.
/// A missing file is an empty set; unreadable lines are skipped, since an
/// entry we cannot read names nothing we could remove.
pub fn read_owned(lock_file: &Path, scope: &str, interface: &str) -> Result<Vec<Owned>> {
    let path = owned_path(lock_file, scope);
    let mut out = Vec::new();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                if let (Some(net), Some(interface), None) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if let Ok(net) = net.parse() {
                        push_unique(
                            &mut out,
                            Owned {
                                net,
                                interface: interface.to_string(),
                            },
                        );
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::failed(format!("reading {}", path.display()), e)),
    }
    if let Ok(text) = std::fs::read_to_string(legacy_path(lock_file, scope)) {
        if let Ok(net) = text.trim().parse() {
            push_unique(
                &mut out,
                Owned {
                    net,
                    interface: interface.to_string(),
                },
            );
        }
    }
    Ok(out)
}

fn push_unique(set: &mut Vec<Owned>, o: Owned) {
    if !set
        .iter()
        .any(|x| x.net.addr() == o.net.addr() && x.interface == o.interface)
    {
        set.push(o);
    }
}

/// Replaces the remembered set of `scope` (and retires the legacy file).
pub fn write_owned(lock_file: &Path, scope: &str, set: &[Owned]) -> Result<()> {
    let path = owned_path(lock_file, scope);
    let text: String = set
        .iter()
        .map(|o| format!("{} {}\n", o.net, o.interface))
        .collect();
    write_atomic(&path, text.as_bytes())
        .map_err(|e| Error::failed(format!("remembering the VIP in {}", path.display()), e))?;
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
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(content)?;
        // No fsync: the order that matters is against a killed process
        // (remember, then add), which the rename gives. A crash of the host
        // loses the kernel's addresses too, and the default directory is
        // tmpfs, cleared at boot with them.
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Where the last applied decision of `subject` is kept.
pub fn decided_path(lock_file: &Path, subject: &str) -> PathBuf {
    dir(lock_file).join(format!("{subject}.decided"))
}

/// The ticket of the last decision applied for `subject` on this boot.
pub fn last_decided(lock_file: &Path, subject: &str) -> Option<Ticket> {
    let text = std::fs::read_to_string(decided_path(lock_file, subject)).ok()?;
    let (boot, ticket) = text.trim().split_once(' ')?;
    (boot == boot_id()).then_some(())?;
    ticket.parse().ok().map(Ticket)
}

/// Records that the decision of `ticket` was applied for `subject`.
pub fn set_decided(lock_file: &Path, subject: &str, ticket: Ticket) -> Result<()> {
    let path = decided_path(lock_file, subject);
    write_atomic(&path, format!("{} {}\n", boot_id(), ticket.0).as_bytes())
        .map_err(|e| Error::failed(format!("writing {}", path.display()), e))
}

/// The mark of a pgbouncer.ini rewritten but not yet followed by a reload.
pub fn reload_pending_path(lock_file: &Path) -> PathBuf {
    lock_file.with_extension("reload-pending")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(s: &str, i: &str) -> Owned {
        Owned {
            net: s.parse().unwrap(),
            interface: i.into(),
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
            vec![owned("198.51.100.100/24", "eth1")]
        );
        let set = vec![
            owned("198.51.100.100/24", "eth1"),
            owned("2001:db8::100/64", "eth2"),
        ];
        write_owned(&l, "batman", &set).unwrap();
        assert!(!dir.path().join("vip-batman.addr").exists());
        assert_eq!(read_owned(&l, "batman", "eth9").unwrap(), set);
        // A torn or foreign line names nothing and is skipped.
        std::fs::write(
            owned_path(&l, "batman"),
            "198.51.100.100/24 eth1\ngarbage\n198.51.100.101/24\n",
        )
        .unwrap();
        assert_eq!(
            read_owned(&l, "batman", "eth1").unwrap(),
            vec![owned("198.51.100.100/24", "eth1")]
        );
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
        // Another boot's ticket says nothing about this boot.
        std::fs::write(
            decided_path(&l, "vip-batman"),
            "other-boot 99999999999999999999\n",
        )
        .unwrap();
        assert_eq!(last_decided(&l, "vip-batman"), None);
    }
}
