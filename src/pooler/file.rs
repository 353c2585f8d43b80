//! Thin effects on the PgBouncer host: replace pgbouncer.ini atomically, read
//! PgBouncer's pidfile, and make PgBouncer reload with SIGHUP. No policy here:
//! whether to write or reload is decided by the caller.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::Error;

/// Replaces the file at `path` with `content`, atomically, keeping its mode
/// and owner, provided it still holds `read` (what the caller read and
/// edited): an edit someone else made since (an operator's editor, `sed -i`)
/// is never overwritten. Returns false, replacing nothing, when the file
/// changed; the caller reads and edits it again.
///
/// The check and the replacement are one step where the file system allows
/// it: renameat2(RENAME_EXCHANGE) swaps the new file in and the old one out
/// to the temporary name, where it is compared with `read`; one that
/// differs (replaced by a rename, or written in place, after the read) is
/// swapped back. Where exchanging is not supported (EINVAL, ENOSYS), it is
/// read once more right before a plain rename, which leaves a window of
/// microseconds.
///
/// The steps are those of coreos/afterburn and of rename(2)'s contract: a
/// temporary file in the same directory (so the rename stays on one file
/// system), created exclusively, written, given the target's owner and mode,
/// fsynced, renamed over the target, then the directory fsynced so the rename
/// itself survives a crash. On any failure before the rename the temporary
/// file is removed and the original is untouched.
///
/// A symlink at `path` is resolved and the real file replaced, so the link
/// survives (renaming over the link would turn it into a plain file). The
/// target must exist and be a regular file: its mode and owner are the ones to
/// keep. Changing the owner needs root (or CAP_CHOWN); without it, a target
/// already owned by us is fine and anything else is an error. ACLs, extended
/// attributes and SELinux labels are not copied.
pub fn write_atomic(path: &Path, read: &[u8], content: &[u8]) -> Result<bool, Error> {
    let fail = |what: &str, cause: &dyn std::fmt::Display| {
        Error::failed(
            format_args!("{}", path.display()),
            format_args!("{what}: {cause}"),
        )
    };
    let real = fs::canonicalize(path).map_err(|e| fail("cannot resolve", &e))?;
    let meta = fs::metadata(&real).map_err(|e| fail("cannot stat", &e))?;
    if !meta.is_file() {
        return Err(fail("cannot replace", &"not a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    let (dir, name) = match (real.parent(), real.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy()),
        _ => return Err(fail("cannot replace", &"no parent directory")),
    };

    let (mut file, mut temp) = create_temp(dir, &name, mode).map_err(|e| {
        fail(
            &format!("cannot create a temporary file in {}", dir.display()),
            &e,
        )
    })?;
    let written = (|| {
        file.write_all(content)
            .map_err(|e| fail(&format!("cannot write {}", temp.path.display()), &e))?;
        let ours = file
            .metadata()
            .map_err(|e| fail(&format!("cannot stat {}", temp.path.display()), &e))?;
        if (ours.uid(), ours.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
                fail(
                    &format!("cannot keep owner {}:{}", meta.uid(), meta.gid()),
                    &e,
                )
            })?;
        }
        // After fchown: chown(2) may clear set-user-ID and set-group-ID bits.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| fail(&format!("cannot keep mode {mode:o}"), &e))?;
        file.sync_all()
            .map_err(|e| fail(&format!("cannot fsync {}", temp.path.display()), &e))?;
        let cannot = |what: &str, e: &std::io::Error| {
            fail(
                &format!(
                    "cannot {what} {} and {}",
                    temp.path.display(),
                    real.display()
                ),
                e,
            )
        };
        match exchange(&temp.path, &real) {
            Ok(()) => {
                // The old file is at the temporary name now: still the one
                // read? Else it goes back, and the new one is removed.
                let old = fs::read(&temp.path).map_err(|e| cannot("compare", &e))?;
                if old != read {
                    exchange(&temp.path, &real).map_err(|e| cannot("swap back", &e))?;
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                if fs::read(&real).map_err(|e| fail("cannot read", &e))? != read {
                    return Ok(false);
                }
                fs::rename(&temp.path, &real).map_err(|e| cannot("rename", &e))?;
                temp.armed = false;
                Ok(true)
            }
            Err(e) => Err(cannot("exchange", &e)),
        }
    })();
    drop(file);
    // The temporary name holds the old file, ours when swapped back, or
    // nothing after a plain rename: removed in every case.
    drop(temp);
    match written {
        Ok(true) => {}
        other => return other,
    }
    // Without this the rename may be lost on a crash (rename(2), fsync(2)).
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        fail(
            &format!("replaced, but cannot fsync directory {}", dir.display()),
            &e,
        )
    })?;
    Ok(true)
}

/// renameat2(2) with RENAME_EXCHANGE: swaps two paths in one step.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that outlive the call, which only
    // reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A temporary file that is removed when dropped, unless renamed.
struct Temp {
    path: PathBuf,
    armed: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error that got us here is the one to report.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `.<name>.patroni-hook.<pid>.<n>` exclusively (O_EXCL), so a
/// concurrent run or a leftover file is never overwritten or followed.
fn create_temp(dir: &Path, name: &str, mode: u32) -> std::io::Result<(File, Temp)> {
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let path = dir.join(format!(".{name}.patroni-hook.{pid}.{n}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&path)
        {
            Ok(file) => return Ok((file, Temp { path, armed: true })),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The process id in PgBouncer's pidfile.
pub fn read_pidfile(path: &Path) -> Result<i32, Error> {
    let context = format!("pidfile {}", path.display());
    let text = fs::read_to_string(path).map_err(|e| Error::failed(&context, e))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => {
            let found: String = text.trim().chars().take(40).collect();
            Err(Error::failed(
                &context,
                format_args!("does not hold a process id (found {found:?})"),
            ))
        }
    }
}

/// Makes PgBouncer re-read its configuration: SIGHUP to the pid in `pidfile`.
/// Returns the pid signalled.
///
/// A pid that is not running, or that now belongs to another program (a stale
/// pidfile whose pid was reused), is an error naming the pidfile: it is never
/// signalled. The program is checked through /proc/<pid>/comm; without /proc
/// the check is skipped. A pid reused between the check and the kill cannot be
/// excluded without pidfds; that window is microseconds long.
pub fn reload(pidfile: &Path) -> Result<i32, Error> {
    let pid = read_pidfile(pidfile)?;
    let context = format!("pidfile {}", pidfile.display());
    let stale = |why: String| Error::failed(&context, format_args!("stale: {why}"));
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if comm.trim_end_matches('\n') == "pgbouncer" => {}
        Ok(comm) => {
            return Err(stale(format!(
                "process {pid} is {:?}, not pgbouncer",
                comm.trim_end_matches('\n')
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound && Path::new("/proc/self").exists() => {
            return Err(stale(format!("no process {pid}")))
        }
        // No /proc, or not allowed to look: let kill(2) be the judge.
        Err(_) => {}
    }
    match kill(Pid::from_raw(pid), Signal::SIGHUP) {
        Ok(()) => Ok(pid),
        Err(Errno::ESRCH) => Err(stale(format!("no process {pid}"))),
        Err(e) => Err(Error::failed(
            &context,
            format_args!("cannot send SIGHUP to process {pid}: {}", e.desc()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_is_a_positive_number_with_optional_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pid");
        fs::write(&path, "1234\n").unwrap();
        assert_eq!(read_pidfile(&path).unwrap(), 1234);
        for bad in ["", "abc\n", "0\n", "-5\n", "12 34\n", "99999999999\n"] {
            fs::write(&path, bad).unwrap();
            let err = read_pidfile(&path).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("pidfile {}: does not hold", path.display())),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn missing_pidfile_names_the_path() {
        let err = read_pidfile(Path::new("/nonexistent/p.pid")).unwrap_err();
        assert!(
            err.to_string().starts_with("pidfile /nonexistent/p.pid: "),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn write_atomic_replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbouncer.ini");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(write_atomic(&path, b"old", b"new").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// An operator's edit that lands between a run's read of pgbouncer.ini and
    /// its replacement (found by the lab's fault matrix: two of 69 edits,
    /// some timed into the PgBouncer host's runs, were lost) is never
    /// overwritten: the file is replaced only while it still holds what the
    /// run read, and the run edits again from the new content.
    #[test]
    fn write_atomic_does_not_overwrite_an_edit_made_after_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbouncer.ini");
        fs::write(&path, "read").unwrap();
        // sed -i: a new file renamed over the old one.
        let op = dir.path().join("sedXYZ");
        fs::write(&op, "edited").unwrap();
        fs::rename(&op, &path).unwrap();
        assert!(!write_atomic(&path, b"read", b"read, rewritten").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"edited");
        // An editor writing in place.
        fs::write(&path, "edited again").unwrap();
        assert!(!write_atomic(&path, b"edited", b"edited, rewritten").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"edited again");
        // Unchanged since the read: replaced.
        assert!(write_atomic(&path, b"edited again", b"rewritten").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"rewritten");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn write_atomic_refuses_a_missing_target_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.ini");
        let err = write_atomic(&missing, b"", b"x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot resolve", missing.display())),
            "{err}"
        );
        let err = write_atomic(dir.path(), b"", b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
