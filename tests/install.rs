//! scripts/install.sh as an operator runs it: into a temporary root (every
//! file, mode, owner and capability; a second run changes nothing, not even an
//! mtime; --uninstall leaves the root as it found it), and once for real on /
//! followed by --uninstall, leaving this machine clean.

mod common;

use common::{pg, require, require_all, text, which};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("patroni-hook")
}

/// target/<profile>/examples/gen-docs, built by `cargo test` and by
/// `cargo build --all-targets` (scripts/test.sh).
fn gen_docs() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/gen-docs"))
        .unwrap()
}

fn prerequisites() -> bool {
    require_all(&[
        ("root", nix::unistd::geteuid().is_root()),
        (
            "setcap and getcap (libcap2-bin)",
            which("setcap").is_some() && which("getcap").is_some(),
        ),
        ("the postgres user", pg::have_postgres_user()),
        (
            "target/*/examples/gen-docs (cargo build --examples)",
            gen_docs().exists(),
        ),
    ])
}

/// The generated completions and man pages, as `--docs`.
fn docs(dir: &Path) -> PathBuf {
    let out = dir.join("docs");
    let o = Command::new(gen_docs()).arg(&out).output().unwrap();
    assert!(o.status.success(), "gen-docs: {}", text(&o));
    out
}

fn install(args: &[&str]) -> Output {
    let o = Command::new("bash")
        .arg(Path::new(REPO).join("scripts/install.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "install.sh {args:?}: {}", text(&o));
    o
}

/// Every path under `root` with its type, mode, owner, size, mtime and
/// content: what "changes nothing" is checked against.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                format!("{:x?}", md5ish(&std::fs::read(&p).unwrap()))
            } else {
                String::new()
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "mode {:o} uid {} gid {} size {} mtime {}.{} {content}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            );
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A content fingerprint (FNV-1a, 64 bit): enough to see a rewritten file.
fn md5ish(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

fn getcap(p: &Path) -> String {
    let o = Command::new(which("getcap").unwrap())
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mode_owner(p: &Path) -> (u32, String, String) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let user = nix::unistd::User::from_uid(m.uid().into())
        .unwrap()
        .unwrap()
        .name;
    let group = nix::unistd::Group::from_gid(m.gid().into())
        .unwrap()
        .unwrap()
        .name;
    (m.mode() & 0o7777, user, group)
}

/// What a complete install has, relative to the root (PREFIX /usr/local).
const FILES: &[&str] = &[
    "usr/local/bin/patroni-hook",
    "etc/patroni-hook/config.yml",
    "usr/lib/tmpfiles.d/patroni-hook.conf",
    "etc/systemd/system/patroni-hook-reconcile.service",
    "etc/systemd/system/patroni-hook-reconcile.timer",
    "usr/share/bash-completion/completions/patroni-hook",
    "usr/share/zsh/vendor-completions/_patroni-hook",
    "usr/share/fish/vendor_completions.d/patroni-hook.fish",
    "usr/local/share/man/man1/patroni-hook.1",
    "usr/local/share/man/man1/patroni-hook-reconcile.1",
    "usr/local/share/man/man1/patroni-hook-on_role_change.1",
];

fn check_installed(root: &Path, user: &str, group: &str) {
    for f in FILES {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    let b = root.join("usr/local/bin/patroni-hook");
    // Only root and the Patroni user's group may run a binary that moves addresses.
    assert_eq!(mode_owner(&b), (0o750, "root".into(), group.to_string()));
    assert!(
        getcap(&b).contains("cap_net_admin,cap_net_raw=ep"),
        "capabilities: {}",
        getcap(&b)
    );
    assert_eq!(
        std::fs::read(&b).unwrap(),
        std::fs::read(bin()).unwrap(),
        "installed binary differs from the given one"
    );
    assert_eq!(
        mode_owner(&root.join("etc/patroni-hook")),
        (0o750, "root".into(), group.into())
    );
    assert_eq!(
        mode_owner(&root.join("etc/patroni-hook/config.yml")),
        (0o640, "root".into(), group.into())
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/patroni-hook.conf"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        [format!("d /run/patroni-hook 0750 {user} {group} -")]
    );
    assert_eq!(
        mode_owner(&root.join("run/patroni-hook")),
        (0o750, user.into(), group.into())
    );
    // The completion registers itself in bash; the man page is a man page.
    let comp = root.join("usr/share/bash-completion/completions/patroni-hook");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p patroni-hook",
            comp.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "bash completion: {}", text(&o));
    let man =
        std::fs::read_to_string(root.join("usr/local/share/man/man1/patroni-hook.1")).unwrap();
    assert!(man.contains(".TH patroni-hook 1"), "{man}");
    assert!(man.contains("reconcile"));
}

#[test]
fn installs_into_a_root_idempotently_and_uninstalls_everything() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs(tmp.path());
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let binary = bin();
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--binary",
        binary.to_str().unwrap(),
        "--docs",
        docs.to_str().unwrap(),
    ];
    install(&args);
    check_installed(&root, "postgres", "postgres");
    assert_eq!(
        std::fs::read(root.join("etc/patroni-hook/config.yml")).unwrap(),
        std::fs::read(Path::new(REPO).join("patroni-conf/config.yml")).unwrap()
    );

    // Idempotent: a second run changes nothing, not even an mtime.
    let before = snapshot(&root);
    let o = install(&args);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing changed"),
        "{}",
        text(&o)
    );
    assert_eq!(before, snapshot(&root), "the second run changed files");

    // An operator's config is never overwritten, and --uninstall keeps it.
    let cfg = root.join("etc/patroni-hook/config.yml");
    std::fs::write(&cfg, "name: mine\n").unwrap();
    install(&args);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "name: mine\n");
    // A drifted mode is put back.
    std::fs::set_permissions(
        root.join("etc/systemd/system/patroni-hook-reconcile.timer"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    install(&args);
    assert_eq!(
        mode_owner(&root.join("etc/systemd/system/patroni-hook-reconcile.timer")).0,
        0o644
    );

    let o = install(&["--root", root.to_str().unwrap(), "--uninstall"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("kept: /etc/patroni-hook/config.yml"),
        "{}",
        text(&o)
    );
    let left: Vec<PathBuf> = snapshot(&root).into_keys().collect();
    assert_eq!(
        left,
        [
            PathBuf::from("etc"),
            "etc/patroni-hook".into(),
            "etc/patroni-hook/config.yml".into()
        ]
    );
    std::fs::remove_file(&cfg).unwrap();
    install(&["--root", root.to_str().unwrap(), "--uninstall"]);
    // The directories it created went too; the root itself stays.
    let left: Vec<PathBuf> = snapshot(&root).into_keys().collect();
    assert!(
        left.iter().all(|p| p == Path::new("etc")),
        "left behind: {left:?}"
    );
}

#[test]
fn user_option_owns_the_lock_directory() {
    if !prerequisites() {
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        return;
    };
    let group = nix::unistd::Group::from_gid(nobody.gid)
        .unwrap()
        .unwrap()
        .name;
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs(tmp.path());
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    install(&[
        "--root",
        root.to_str().unwrap(),
        "--binary",
        bin().to_str().unwrap(),
        "--docs",
        docs.to_str().unwrap(),
        "--user",
        "nobody",
    ]);
    check_installed(&root, "nobody", &group);
    // The timer's service runs as that user too, or it could not take the lock.
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/patroni-hook-reconcile.service"))
            .unwrap();
    assert!(unit.lines().any(|l| l == "User=nobody"), "{unit}");
    assert!(
        unit.lines().any(|l| l == format!("Group={group}")),
        "{unit}"
    );
}

#[test]
fn refuses_an_unknown_user_and_option() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "--root",
            tmp.path().to_str().unwrap(),
            "--user",
            "no-such-user-phk",
        ],
        vec!["--frobnicate"],
    ] {
        let o = Command::new("bash")
            .arg(Path::new(REPO).join("scripts/install.sh"))
            .args(&args)
            .arg("--binary")
            .arg(bin())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
    }
    assert!(snapshot(tmp.path()).is_empty(), "a refused run wrote files");
}

/// On the real root: what an operator gets on a fresh machine, then gone again.
#[test]
fn installs_on_this_machine_and_uninstalls_cleanly() {
    if !prerequisites() {
        return;
    }
    let root = Path::new("/");
    let ours: Vec<PathBuf> = FILES
        .iter()
        .map(|f| root.join(f))
        .chain([
            root.join("run/patroni-hook"),
            root.join("var/lib/patroni-hook"),
        ])
        .collect();
    // Never replace or remove an operator's (or another run's) install.
    let installed: Vec<String> = ours
        .iter()
        .find(|p| p.exists())
        .map(|p| {
            format!(
                "a machine without patroni-hook installed ({} exists)",
                p.display()
            )
        })
        .into_iter()
        .collect();
    if !require(&installed) {
        return;
    }
    // Every ancestor directory that exists now must exist afterwards, and every
    // one that does not must not.
    let mut dirs: Vec<PathBuf> = ours
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let existed: Vec<(PathBuf, bool)> = dirs.iter().map(|d| (d.clone(), d.exists())).collect();

    let tmp = tempfile::tempdir().unwrap();
    let docs = docs(tmp.path());
    let binary = bin();
    let args = [
        "--binary",
        binary.to_str().unwrap(),
        "--docs",
        docs.to_str().unwrap(),
    ];
    let result = std::panic::catch_unwind(|| {
        install(&args);
        check_installed(root, "postgres", "postgres");
        let o = install(&args);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("nothing changed"),
            "{}",
            text(&o)
        );
        // The installed binary, as the postgres user (Patroni's), reads the
        // installed config and finds the lock directory; the skeleton is
        // refused for what reconcile (the timer) would refuse, and only that.
        let o = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "/usr/local/bin/patroni-hook",
                "check-config",
            ])
            .env_remove("PATRONI_HOOK_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "check-config as postgres: {}",
            text(&o)
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("nothing to reconcile"), "{}", text(&o));
        assert!(!stderr.contains("lock_file"), "{}", text(&o));
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("warning"),
            "{}",
            text(&o)
        );
        // The installed units, with the installed binary and man pages.
        if which("systemd-analyze").is_some() {
            let man = if which("man").is_some() {
                "--man=yes"
            } else {
                "--man=no"
            };
            let o = Command::new("systemd-analyze")
                .args(["verify", man])
                .arg("/etc/systemd/system/patroni-hook-reconcile.service")
                .arg("/etc/systemd/system/patroni-hook-reconcile.timer")
                .output()
                .unwrap();
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "systemd-analyze verify: {}",
                text(&o)
            );
        }
    });
    // Uninstall whatever happened above, then check.
    install(&["--uninstall"]);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    for p in &ours {
        assert!(!p.exists(), "{} left after --uninstall", p.display());
    }
    for (d, was) in existed {
        assert_eq!(d.exists(), was, "{}: existed before: {was}", d.display());
    }
}
