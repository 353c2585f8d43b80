//! The per-host lock that serialises runs (flock on one file), and the small
//! cache beside it that remembers the VIP address per scope.
//!
//! flock is released by the kernel when the process dies, so a run that Patroni
//! kills never leaves the lock held (flock(2)). Waiting for it is bounded by the
//! run's deadline.

use crate::error::{Error, Result};
use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped (or when the process dies).
pub struct HostLock {
    _lock: Flock<File>,
}

/// Takes the exclusive lock on `path`, waiting at most until `deadline`.
pub fn acquire(path: &Path, deadline: Instant) -> Result<HostLock> {
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
        if Instant::now() >= deadline {
            return Err(Error::temporary(
                format!("locking {}", path.display()),
                "another patroni-hook run held the lock until the deadline",
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The callback generation: a counter beside the lock that every callback
/// bumps while it holds the lock. Reconcile reads Consul before taking the
/// lock (so a callback never waits behind a reconcile that waits on Consul),
/// and drops its VIP decision if the counter moved meanwhile: a callback ran
/// after that read and its decision is newer.
pub fn generation_path(lock_file: &Path) -> PathBuf {
    lock_file.with_extension("generation")
}

/// Reads the callback generation (0 when never written).
pub fn read_generation(lock_file: &Path) -> u64 {
    std::fs::read_to_string(generation_path(lock_file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Bumps the callback generation; call with the lock held.
pub fn bump_generation(lock_file: &Path) -> Result<()> {
    let path = generation_path(lock_file);
    let next = read_generation(lock_file).wrapping_add(1);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, format!("{next}\n"))?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::failed(format!("writing {}", path.display()), e)
    })
}

/// The mark of a pgbouncer.ini rewritten but not yet followed by a reload.
pub fn reload_pending_path(lock_file: &Path) -> PathBuf {
    lock_file.with_extension("reload-pending")
}

/// Where the address of a scope's VIP is remembered: beside the lock file.
pub fn cache_path(lock_file: &Path, scope: &str) -> PathBuf {
    let dir = lock_file.parent().unwrap_or_else(|| Path::new("/"));
    dir.join(format!("vip-{scope}.addr"))
}

/// Reads the remembered VIP address of a scope, if any.
pub fn read_cached_vip(path: &Path) -> Option<IpNet> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Remembers the VIP address of a scope (temp file + rename, so a killed run
/// leaves either the old or the new address, never a torn one).
pub fn write_cached_vip(path: &Path, addr: IpNet) -> Result<()> {
    if read_cached_vip(path) == Some(addr) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, format!("{addr}\n"))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::failed(
            format!("remembering the VIP address in {}", path.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn generation_counts_up() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("x.lock");
        assert_eq!(read_generation(&l), 0);
        bump_generation(&l).unwrap();
        bump_generation(&l).unwrap();
        assert_eq!(read_generation(&l), 2);
    }

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = cache_path(&dir.path().join("l.lock"), "batman");
        assert_eq!(read_cached_vip(&p), None);
        let a: IpNet = "198.51.100.100/24".parse().unwrap();
        write_cached_vip(&p, a).unwrap();
        assert_eq!(read_cached_vip(&p), Some(a));
    }
}
