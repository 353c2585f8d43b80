//! The Debian package as an operator gets it. `cargo deb` builds it (from the
//! release binary scripts/test.sh built, and what gen-docs generates); lintian
//! reports no error and no warning beyond the overrides that explain
//! themselves; then on this machine:
//!
//! - `dpkg -i`: the binary 0750 root:postgres with its file capabilities, no
//!   other user can run it, /run/patroni-hook owned by postgres, nothing
//!   enabled; every relative link of every installed document leads to a
//!   file the package installed; `check-config` as postgres refuses the
//!   shipped skeleton, naming reconcile (what the timer runs), as postinst
//!   says it will;
//! - the operator edits the conffile as the installed docs say; then
//!   `check-config` says "configuration OK", the timer's service command
//!   (its ExecStart, as its User) ends in a code the unit counts as success,
//!   and a callback run as postgres through the installed binary, in a
//!   network namespace against the Consul double, adds the VIP (checked with
//!   `ip -j addr`);
//! - another Patroni user through /etc/default/patroni-hook and
//!   `dpkg-reconfigure`, and back;
//! - an upgrade to a higher version keeps the edited conffile, and puts the
//!   capabilities back on the new binary (a callback then removes the VIP);
//! - `dpkg -r` leaves only configuration and state, `dpkg -P` nothing, and
//!   every directory the package created is gone again.
//!
//! The packages are written to a temporary directory; cargo-deb also clears
//! older patroni-hook packages from target/debian whenever it runs.

mod common;

use common::netns::{self, Netns};
use common::which;
use common::{require_all, text};
use consul_double::{Options, Server};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PKG: &str = "patroni-hook";
const BIN: &str = "/usr/bin/patroni-hook";
const CONFIG: &str = "/etc/patroni-hook/config.yml";
const DEFAULTS: &str = "/etc/default/patroni-hook";
const RUN: &str = "/run/patroni-hook";
const TMPFILES_OVERRIDE: &str = "/etc/tmpfiles.d/patroni-hook.conf";
const DROPIN: &str = "/etc/systemd/system/patroni-hook-reconcile.service.d/patroni-hook-user.conf";
const ETCD_WATCH_UNIT: &str = "/usr/lib/systemd/system/patroni-hook-etcd-watch@.service";
const ETCD_WATCH_DEFAULTS: &str = "/etc/default/patroni-hook-etcd-watch";
const ETCD_RBAC: &str = "/usr/share/patroni-hook/etcd-rbac.sh";
const SCOPE: &str = "debscope";
const VIP: &str = "198.51.100.100";

/// Where the package and dpkg put anything of ours; [`ours`] searches them.
const ROOTS: &[&str] = &[
    "/etc",
    "/usr/bin",
    "/usr/lib/systemd",
    "/usr/lib/tmpfiles.d",
    "/usr/share/doc",
    "/usr/share/man",
    "/usr/share/bash-completion",
    "/usr/share/zsh",
    "/usr/share/fish",
    "/usr/share/lintian",
    "/usr/share/patroni-hook",
    "/var/lib/systemd",
    "/var/lib/dpkg/info",
    "/var/lib/patroni-hook",
    "/run/patroni-hook",
];

/// The cargo target directory this test was built in (`<target>/debug/deps/deb-*`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// `<target>/debug/examples/gen-docs`, built by `cargo test` and by
/// `cargo build --all-targets` (scripts/test.sh).
fn gen_docs() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/gen-docs"))
        .unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a dpkg tool; while another process (apt) holds dpkg's lock, tries
/// again, for at most five minutes.
fn dpkg_tool(program: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let o = run(Command::new(program)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        // "dpkg frontend lock was locked by another process", and the like.
        let locked = String::from_utf8_lossy(&o.stderr).contains("locked by another process");
        if o.status.success() || !locked {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 300 s waiting for dpkg's lock: {program} {args:?}: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn dpkg(args: &[&str]) -> Output {
    let o = dpkg_tool("dpkg", args);
    assert!(o.status.success(), "dpkg {args:?}: {}", text(&o));
    o
}

/// dpkg's status line of the package, or None when dpkg does not know it.
fn status() -> Option<String> {
    let o = run(Command::new("dpkg-query").args(["-W", "-f", "${Status} ${Version}", PKG]));
    o.status.success().then(|| stdout(&o))
}

/// Every path of ours under [`ROOTS`]: any path that names the package.
fn ours() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.to_string_lossy().contains(PKG) {
                out.insert(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for root in ROOTS {
        let root = Path::new(root);
        if root.to_string_lossy().contains(PKG) && root.exists() {
            out.insert(root.to_path_buf());
        }
        walk(root, &mut out);
    }
    out
}

/// Mode (permission bits), owner and group of a path.
fn mode_owner(p: &str) -> (u32, String, String) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let user = nix::unistd::User::from_uid(m.uid().into())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| m.uid().to_string());
    let group = nix::unistd::Group::from_gid(m.gid().into())
        .unwrap()
        .map(|g| g.name)
        .unwrap_or_else(|| m.gid().to_string());
    (m.mode() & 0o7777, user, group)
}

fn primary_group(user: &str) -> String {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    nix::unistd::Group::from_gid(u.gid).unwrap().unwrap().name
}

fn getcap(p: &str) -> String {
    stdout(&run(Command::new(which("getcap").unwrap()).arg(p)))
}

/// The installed binary: root and `group` only, with the capabilities.
fn check_binary(group: &str) {
    assert_eq!(mode_owner(BIN), (0o750, "root".into(), group.into()));
    assert!(
        getcap(BIN).contains("cap_net_admin,cap_net_raw=ep"),
        "capabilities of {BIN}: {}",
        getcap(BIN)
    );
}

/// The newest modification time of the files the binary is built from.
fn newest_source() -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(&e.path(), newest);
            } else {
                *newest = (*newest).max(m.modified().unwrap());
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(&Path::new(REPO).join("src"), &mut newest);
    for f in ["Cargo.toml", "Cargo.lock"] {
        let m = std::fs::metadata(Path::new(REPO).join(f)).unwrap();
        newest = newest.max(m.modified().unwrap());
    }
    newest
}

/// Builds the package into `out` with `cargo deb`, revision `revision`.
/// scripts/test.sh has built the release binary before the tests; when it is
/// there and newer than the sources it is packaged as it is (`--no-build`),
/// else cargo deb builds it.
fn cargo_deb(out: &Path, revision: &str) -> PathBuf {
    let release = target_dir().join("release/patroni-hook");
    let fresh = std::fs::metadata(&release)
        .and_then(|m| m.modified())
        .map(|t| t >= newest_source())
        .unwrap_or(false);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(REPO)
        .args(["deb", "--fast", "--deb-revision", revision, "--output"])
        .arg(out);
    if fresh {
        cmd.arg("--no-build");
    }
    run_ok(&mut cmd);
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{PKG}_0.1.0-{revision}_"))
        })
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    debs[0].clone()
}

/// The paths in a .deb (`./usr/bin/patroni-hook` -> `/usr/bin/patroni-hook`).
fn contents(deb: &Path) -> Vec<PathBuf> {
    let o = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| PathBuf::from(p.trim_start_matches('.').trim_end_matches('/')))
        .filter(|p| p != Path::new(""))
        .collect()
}

/// lintian's report; fails on any error or warning (the overrides shipped in
/// the package explain the rest).
fn lintian(deb: &Path) {
    let o = run(Command::new("lintian").arg("-I").arg(deb));
    let report = stdout(&o);
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("lintian {}:\n{report}", deb.display()).as_bytes(),
    );
    let bad: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(bad.is_empty(), "lintian: {bad:#?}\n{}", text(&o));
    // The exit status says whether lintian itself ran (2: errors found).
    assert!(o.status.success(), "lintian failed: {}", text(&o));
}

/// The installed binary as `user` inside `ns` (as Patroni runs a callback),
/// with the installed configuration.
fn hook_as(ns: &Netns, user: &str, args: &[&str]) -> Output {
    run(Command::new("ip")
        .current_dir("/")
        .args(["netns", "exec", ns.name(), "runuser", "-u", user, "--", BIN])
        .args(args)
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .env_remove("PATRONI_HOOK_CONFIG")
        .env_remove("CONSUL_HTTP_TOKEN"))
}

/// Purges the package when the test ends, also when it fails.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if status().is_some() {
            let o = dpkg_tool("dpkg", &["--purge", PKG]);
            if !o.status.success() {
                eprintln!("dpkg --purge {PKG}: {}", text(&o));
            }
        }
    }
}

fn prerequisites() -> bool {
    if !netns::require_root_and_ip() {
        return false;
    }
    let cargo_deb = run(Command::new("cargo").args(["deb", "--version"]))
        .status
        .success();
    let ok = require_all(&[
        (
            "cargo-deb (cargo install --locked cargo-deb, scripts/prereqs.sh)",
            cargo_deb,
        ),
        (
            "dpkg-shlibdeps (dpkg-dev)",
            which("dpkg-shlibdeps").is_some(),
        ),
        ("lintian", which("lintian").is_some()),
        (
            "dpkg-reconfigure (debconf)",
            which("dpkg-reconfigure").is_some(),
        ),
        (
            "setcap and getcap (libcap2-bin)",
            which("setcap").is_some() && which("getcap").is_some(),
        ),
        ("runuser (util-linux)", which("runuser").is_some()),
        (
            "the postgres user",
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .is_some(),
        ),
        (
            "the nobody user",
            nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .is_some(),
        ),
        (
            "target/*/examples/gen-docs (cargo build --examples)",
            gen_docs().exists(),
        ),
    ]);
    if !ok {
        return false;
    }
    // Never replace or purge an operator's (or another run's) patroni-hook:
    // a machine that has one installed cannot run this test.
    let installed = status();
    let present = ours();
    require_all(&[(
        &format!("a machine without patroni-hook (dpkg: {installed:?}; files: {present:?})"),
        installed.is_none() && present.is_empty(),
    )])
}

/// Where the package puts its documents.
const DOC: &str = "/usr/share/doc/patroni-hook";

/// The relative links of the Markdown documents under `root` that lead to
/// no file under `root`, as `document: target`.
fn broken_doc_links(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut docs = Vec::new();
    walk(root, &mut docs);
    assert!(!docs.is_empty(), "no documents in {}", root.display());
    let mut bad = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            let mut rest = line;
            while let Some(i) = rest.find("](") {
                let after = &rest[i + 2..];
                let Some(j) = after.find(')') else { break };
                let target = &after[..j];
                rest = &after[j + 1..];
                let file = target.split('#').next().unwrap();
                if target.contains("://") || file.is_empty() {
                    continue;
                }
                let path = doc.parent().unwrap().join(file);
                let inside = path.canonicalize().is_ok_and(|p| p.starts_with(root));
                if !inside {
                    bad.push(format!("{}: {target}", doc.display()));
                }
            }
        }
    }
    bad
}

/// The reconcile service as the timer starts it: its User, its ExecStart
/// split into words, and the exit codes it counts as success.
fn service(unit: &str) -> (String, Vec<String>, Vec<i32>) {
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let user = value("User").unwrap_or_else(|| "root".into());
    let exec = value("ExecStart")
        .expect("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    let success = value("SuccessExitStatus")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    (user, exec, success)
}

// One function, past the 120-line rule: each step runs on the machine state
// the one before left (installed, edited, reconfigured, upgraded, removed),
// and the machine holds one installed package at a time.
#[test]
fn package_installs_runs_upgrades_and_purges_cleanly() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // What the package is built from: the generated man pages, completions
    // and units, at the path Cargo.toml's [package.metadata.deb] names.
    run_ok(Command::new(gen_docs()).arg(Path::new(REPO).join("target/gen-docs")));
    let v1 = cargo_deb(&tmp.path().join("v1"), "1");
    let v2 = cargo_deb(&tmp.path().join("v2"), "2");
    lintian(&v1);

    let files = contents(&v1);
    for want in [
        BIN,
        CONFIG,
        DEFAULTS,
        "/usr/lib/systemd/system/patroni-hook-reconcile.service",
        "/usr/lib/systemd/system/patroni-hook-reconcile.timer",
        "/usr/lib/tmpfiles.d/patroni-hook.conf",
        "/usr/share/man/man1/patroni-hook.1.gz",
        "/usr/share/man/man1/patroni-hook-reconcile.1.gz",
        "/usr/share/bash-completion/completions/patroni-hook",
        "/usr/share/zsh/vendor-completions/_patroni-hook",
        "/usr/share/fish/vendor_completions.d/patroni-hook.fish",
        "/usr/share/doc/patroni-hook/README.md",
        "/usr/share/doc/patroni-hook/docs/operations.md",
        "/usr/share/doc/patroni-hook/docs/reference.md",
        "/usr/share/doc/patroni-hook/docs/design.md",
        "/usr/share/doc/patroni-hook/README.Debian",
        "/usr/share/doc/patroni-hook/examples/patroni.yml",
        "/usr/share/doc/patroni-hook/examples/patroni-hook-db-etcd3.yml",
        "/usr/share/doc/patroni-hook/examples/patroni-hook-pgbouncer-etcd3.yml",
        ETCD_WATCH_UNIT,
        ETCD_WATCH_DEFAULTS,
        ETCD_RBAC,
        "/usr/share/doc/patroni-hook/copyright",
        "/usr/share/doc/patroni-hook/changelog.Debian.gz",
    ] {
        assert!(
            files.contains(&PathBuf::from(want)),
            "{want} not in {files:?}"
        );
    }
    // Which directories exist before: the same must exist after the purge.
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .flat_map(|p| p.ancestors().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let existed: Vec<(PathBuf, bool)> = dirs.into_iter().map(|d| (d.clone(), d.exists())).collect();

    let _purge = Purge;
    let o = dpkg(&["-i", v1.to_str().unwrap()]);
    assert_eq!(status().as_deref(), Some("install ok installed 0.1.0-1"));
    assert!(
        stdout(&o).contains("systemctl enable --now patroni-hook-reconcile.timer"),
        "postinst says what to do next: {}",
        text(&o)
    );
    let pg_group = primary_group("postgres");
    check_binary(&pg_group);
    assert_eq!(
        mode_owner("/etc/patroni-hook"),
        (0o750, "root".into(), pg_group.clone())
    );
    assert_eq!(
        mode_owner(RUN),
        (0o750, "postgres".into(), pg_group.clone())
    );
    let conffiles = stdout(&run_ok(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Conffiles}",
        PKG,
    ])));
    for f in [CONFIG, DEFAULTS, ETCD_WATCH_DEFAULTS] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    // The etcd kit: the watch's EnvironmentFile holds a password, so root's
    // alone; the RBAC script runs as it is; the template unit is the kit's,
    // enabled for no scope.
    assert_eq!(
        mode_owner(ETCD_WATCH_DEFAULTS),
        (0o600, "root".into(), "root".into())
    );
    assert_eq!(mode_owner(ETCD_RBAC), (0o755, "root".into(), "root".into()));
    assert_eq!(
        std::fs::read(ETCD_WATCH_UNIT).unwrap(),
        std::fs::read(Path::new(REPO).join("patroni-conf/patroni-hook-etcd-watch@.service"))
            .unwrap()
    );
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants");
    let enabled: Vec<_> = std::fs::read_dir(wants)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.starts_with("patroni-hook-etcd-watch@"))
                .collect()
        })
        .unwrap_or_default();
    assert!(enabled.is_empty(), "enabled: {enabled:?}");
    // Its ExecStart is etcdctl (etcd-client, not a dependency: only a
    // PgBouncer host on etcd needs it); verified where it is installed.
    if which("systemd-analyze").is_some() && Path::new("/usr/bin/etcdctl").exists() {
        run_ok(Command::new("systemd-analyze").args(["verify", "--man=no", ETCD_WATCH_UNIT]));
    }
    // Nothing enabled, nothing that would run before there is a configuration.
    assert!(
        !Path::new("/etc/systemd/system/timers.target.wants/patroni-hook-reconcile.timer").exists()
    );
    // The packaged unit runs the packaged binary.
    let unit =
        std::fs::read_to_string("/usr/lib/systemd/system/patroni-hook-reconcile.service").unwrap();
    assert!(
        unit.lines()
            .any(|l| l == format!("ExecStart={BIN} --config {CONFIG} reconcile")),
        "{unit}"
    );
    if which("systemd-analyze").is_some() {
        run_ok(Command::new("systemd-analyze").args([
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/patroni-hook-reconcile.service",
            "/usr/lib/systemd/system/patroni-hook-reconcile.timer",
        ]));
    }
    // No other local user may run a binary that moves addresses.
    let o = run(Command::new("runuser").args(["-u", "nobody", "--", BIN, "--version"]));
    assert!(!o.status.success(), "nobody ran {BIN}: {}", text(&o));

    // The shipped configuration, as Patroni's user reads it.
    let shipped = std::fs::read(CONFIG).unwrap();
    assert_eq!(
        shipped,
        std::fs::read(Path::new(REPO).join("patroni-conf/config.yml")).unwrap()
    );
    // Every document the package installs links only to what it installs.
    let bad = broken_doc_links(Path::new(DOC));
    assert!(bad.is_empty(), "installed documents: {bad:#?}");
    // The skeleton is a start: check-config says what reconcile (the timer)
    // would refuse in it, so that nobody enables a timer that fails.
    let o = run(Command::new("runuser").current_dir("/").args([
        "-u",
        "postgres",
        "--",
        BIN,
        "check-config",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!stdout(&o).contains("configuration OK"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reconcile refuses it"),
        "{}",
        text(&o)
    );

    // The operator edits the conffile; Patroni runs the callback as postgres.
    let ns = Netns::new("deb");
    netns::veth(&ns, "eth1", &ns, "eth2");
    ns.ip(&["addr", "add", "198.51.100.11/24", "dev", "eth1"]);
    let listener = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind in ns"));
    let consul = Server::start_on(listener, Options::default()).expect("start the double");
    consul.kv_put(&format!("service/{SCOPE}/leader"), b"pg1");
    let edited = format!(
        "# edited by the operator\nname: pg1\nscope: {SCOPE}\ndeadline: 5s\n\
         lock_file: {RUN}/patroni-hook.lock\n\
         consul:\n  url: {}\n  timeout: 2s\n\
         vip:\n  address: {VIP}/24\n  interface: eth1\n  gratuitous_arp: 1\n",
        consul.url()
    );
    std::fs::write(CONFIG, &edited).unwrap();
    // As postinst says: check it until it says so, then enable the timer.
    let o = hook_as(&ns, "postgres", &["check-config"]);
    assert_eq!(o.status.code(), Some(0), "check-config: {}", text(&o));
    assert!(stdout(&o).contains("configuration OK"), "{}", text(&o));
    assert!(!stdout(&o).contains("warning"), "{}", text(&o));
    let timer_run = || {
        let (user, exec, success) = service(&unit);
        let o = run(Command::new("ip")
            .current_dir("/")
            .args(["netns", "exec", ns.name(), "runuser", "-u", &user, "--"])
            .args(&exec)
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .env_remove("PATRONI_HOOK_CONFIG")
            .env_remove("CONSUL_HTTP_TOKEN"));
        let code = o.status.code().unwrap_or(-1);
        assert!(
            code == 0 || success.contains(&code),
            "the timer's run {exec:?} as {user} exits {code}, a unit failure: {}",
            text(&o)
        );
        o
    };
    timer_run();
    let o = hook_as(&ns, "postgres", &["on_role_change", "primary", SCOPE]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "callback as postgres: {}",
        text(&o)
    );
    assert_eq!(ns.addrs("eth1", VIP).len(), 1, "VIP on eth1");
    let holder = consul
        .kv_get(&format!("service/{SCOPE}/vip-holder"))
        .expect("vip-holder written");
    let holder: serde_json::Value = serde_json::from_slice(&holder.value).unwrap();
    assert_eq!(holder["member"], "pg1");
    let addr_file = format!("{RUN}/vip-{SCOPE}.owned");
    assert_eq!(mode_owner(&addr_file).1, "postgres");

    // Another Patroni user, the documented way, and back.
    let defaults = std::fs::read_to_string(DEFAULTS).unwrap();
    assert!(
        defaults.contains("\nPATRONI_HOOK_USER=postgres\n"),
        "{defaults}"
    );
    std::fs::write(
        DEFAULTS,
        defaults.replace(
            "\nPATRONI_HOOK_USER=postgres\n",
            "\nPATRONI_HOOK_USER=nobody\n",
        ),
    )
    .unwrap();
    let reconfigure = || {
        let o = dpkg_tool("dpkg-reconfigure", &[PKG]);
        assert!(o.status.success(), "dpkg-reconfigure: {}", text(&o));
    };
    reconfigure();
    let nobody_group = primary_group("nobody");
    check_binary(&nobody_group);
    assert_eq!(mode_owner(RUN).1, "nobody");
    assert_eq!(
        mode_owner(&addr_file).1,
        "nobody",
        "the lock directory's files follow"
    );
    assert!(
        std::fs::read_to_string(TMPFILES_OVERRIDE)
            .unwrap()
            .lines()
            .any(|l| l == format!("d {RUN} 0750 nobody {nobody_group} -")),
        "{TMPFILES_OVERRIDE}"
    );
    let dropin = std::fs::read_to_string(DROPIN).unwrap();
    assert!(dropin.lines().any(|l| l == "User=nobody"), "{dropin}");
    std::fs::write(DEFAULTS, &defaults).unwrap();
    reconfigure();
    check_binary(&pg_group);
    assert_eq!(mode_owner(RUN).1, "postgres");
    assert_eq!(mode_owner(&addr_file).1, "postgres");
    assert!(!Path::new(TMPFILES_OVERRIDE).exists());
    assert!(!Path::new(DROPIN).exists());
    assert!(!Path::new(DROPIN).parent().unwrap().exists());

    // Upgrade: the edited conffile stays, without a question (stdin is
    // /dev/null, so a prompt would fail); the new binary gets its group and
    // capabilities back, and a callback through it works.
    dpkg(&["-i", v2.to_str().unwrap()]);
    assert_eq!(status().as_deref(), Some("install ok installed 0.1.0-2"));
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert_eq!(std::fs::read_to_string(DEFAULTS).unwrap(), defaults);
    check_binary(&pg_group);
    let o = hook_as(&ns, "postgres", &["on_role_change", "replica", SCOPE]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "callback after the upgrade: {}",
        text(&o)
    );
    assert_eq!(ns.addrs("eth1", VIP).len(), 0, "VIP removed");
    assert!(consul
        .kv_get(&format!("service/{SCOPE}/vip-holder"))
        .is_none());

    // Remove: configuration and state stay, nothing else.
    let listed: Vec<PathBuf> = stdout(&run_ok(Command::new("dpkg").args(["-L", PKG])))
        .lines()
        .map(PathBuf::from)
        .collect();
    dpkg(&["-r", PKG]);
    assert_eq!(
        status().as_deref(),
        Some("deinstall ok config-files 0.1.0-2")
    );
    for p in &listed {
        let is_conffile = conffiles.contains(&format!("{} ", p.display()));
        if p.is_file() && !is_conffile {
            panic!("{} left after dpkg -r", p.display());
        }
    }
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    for p in ours() {
        let s = p.to_string_lossy();
        let kept = s == "/etc/patroni-hook"
            || s == CONFIG
            || s == DEFAULTS
            || s == ETCD_WATCH_DEFAULTS
            || s.starts_with(RUN)
            || s.starts_with("/var/lib/dpkg/info/patroni-hook.")
            // deb-systemd-helper masks the timer of a removed package and
            // remembers that, until the purge.
            || (s == "/etc/systemd/system/patroni-hook-reconcile.timer"
                && std::fs::read_link(&p).ok() == Some(PathBuf::from("/dev/null")))
            || s.starts_with("/var/lib/systemd/deb-systemd-helper-");
        assert!(kept, "{s} left after dpkg -r");
    }

    // Purge: nothing of ours anywhere, and the directories as they were.
    dpkg(&["-P", PKG]);
    assert_eq!(status(), None, "dpkg still knows {PKG} after the purge");
    let left = ours();
    assert!(left.is_empty(), "left after dpkg -P: {left:?}");
    for (d, was) in existed {
        assert_eq!(d.exists(), was, "{}: existed before: {was}", d.display());
    }
}
