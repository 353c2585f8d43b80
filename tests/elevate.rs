//! The README's two commands as a user types them: scripts/test.sh and
//! scripts/lab.sh, started without root, run themselves again through sudo,
//! keeping PATH (where the user's rustup toolchain is) and the variables they
//! read; without sudo they stop with one line. (As root they run as they are:
//! that is how CI runs test.sh.)
//!
//! Each runs as `nobody` from a copy of the scripts, with a PATH of only the
//! tools they use before they elevate; the `sudo` on it records its arguments
//! and environment instead of switching users, since a real one would need a
//! sudoers rule for nobody on this machine.

mod common;

use common::which;
use common::{require_all, text};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn prerequisites() -> bool {
    require_all(&[
        ("root", nix::unistd::geteuid().is_root()),
        ("runuser (util-linux)", which("runuser").is_some()),
        (
            "the nobody user",
            nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .is_some(),
        ),
    ])
}

/// A copy of the scripts nobody can read (the checkout may be in /root), and
/// a bin directory with the tools the scripts run before they elevate.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(with_sudo: bool) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let open =
            |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        open(dir.path());
        let scripts = dir.path().join("repo/scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        open(&dir.path().join("repo"));
        open(&scripts);
        std::fs::create_dir_all(scripts.join("lab")).unwrap();
        open(&scripts.join("lab"));
        // lab.sh reads the topology before it elevates.
        for s in ["test.sh", "lab.sh", "prereqs.sh", "lab/topology.env"] {
            let to = scripts.join(s);
            std::fs::copy(Path::new(REPO).join("scripts").join(s), &to).unwrap();
            open(&to);
        }
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        open(&bin);
        for tool in ["bash", "id", "dirname", "readlink"] {
            let real = which(tool).unwrap_or_else(|| panic!("{tool} not found"));
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        if with_sudo {
            // Prints each argument on a line.
            let sudo = bin.join("sudo");
            let bash = which("bash").unwrap();
            std::fs::write(
                &sudo,
                format!("#!{}\nprintf 'arg %s\\n' \"$@\"\n", bash.display()),
            )
            .unwrap();
            open(&sudo);
        }
        Sandbox { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// `bash SCRIPT ARGS` as nobody, from the copy of the repository.
    fn run_as_nobody(&self, script: &str, args: &[&str]) -> Output {
        Command::new(which("runuser").unwrap())
            .args(["-u", "nobody", "--"])
            .arg(which("bash").unwrap())
            .arg(script)
            .args(args)
            .current_dir(self.dir.path().join("repo"))
            .env_clear()
            .env("PATH", self.bin())
            .env("HOME", "/nonexistent")
            .env("CI", "true")
            .env("TEST_THREADS", "3")
            .env("LAB_RUN_ID", "abc")
            .env("CONSUL_HTTP_TOKEN", "s3cret")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

#[test]
fn without_root_they_run_again_through_sudo_keeping_path_and_variables() {
    if !prerequisites() {
        return;
    }
    let sb = Sandbox::new(true);
    for (script, args) in [
        ("scripts/test.sh", vec![]),
        ("scripts/lab.sh", vec!["status"]),
    ] {
        let o = sb.run_as_nobody(script, &args);
        assert!(o.status.success(), "{script}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let argv: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("arg ")).collect();
        // sudo --preserve-env=LIST env PATH=... bash /abs/script ARGS
        let preserve = argv[0]
            .strip_prefix("--preserve-env=")
            .unwrap_or_else(|| panic!("{script}: {argv:?}"));
        let preserve: Vec<&str> = preserve.split(',').collect();
        for v in [
            "CI",
            "PATRONI_VENV",
            "TEST_THREADS",
            "LAB_RUN_ID",
            "CONSUL_HTTP_TOKEN",
        ] {
            assert!(
                preserve.contains(&v),
                "{script}: {v} not kept: {preserve:?}"
            );
        }
        assert_eq!(argv[1], "env", "{script}: {argv:?}");
        let path = argv[2].strip_prefix("PATH=").unwrap();
        assert!(
            path.split(':').next() == Some(sb.bin().to_str().unwrap()),
            "{script}: the user's PATH comes first: {path}"
        );
        assert_eq!(argv[3], "bash");
        let abs = sb.dir.path().join("repo").join(script);
        assert_eq!(Path::new(argv[4]), abs, "{script}: absolute script path");
        assert_eq!(argv[5..], args[..], "{script}: its arguments");
        // The token travels in the environment, never on a command line.
        assert!(!out.contains("s3cret"), "{script}: {argv:?}");
    }
}

#[test]
fn without_root_and_without_sudo_they_say_so_in_one_line() {
    if !prerequisites() {
        return;
    }
    let sb = Sandbox::new(false);
    for (script, args) in [
        ("scripts/test.sh", vec![]),
        ("scripts/lab.sh", vec!["demo"]),
    ] {
        let o = sb.run_as_nobody(script, &args);
        assert_eq!(o.status.code(), Some(2), "{script}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{script}: {err}");
        assert!(
            err.contains("must run as root")
                && err.contains("sudo is not installed")
                && err.contains("root shell"),
            "{script}: {err}"
        );
        assert!(o.stdout.is_empty(), "{script}: {}", text(&o));
    }
}
