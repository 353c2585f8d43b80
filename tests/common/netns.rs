//! Network namespaces for tests: create them, join them with veth pairs, run
//! commands and Rust code inside them, and remove them on drop.
//!
//! The lab's network rules (docs/design.md, "How it is tested") hold here: names carry the test process id (plus a
//! per-namespace counter and label), so parallel runs never collide; links are
//! created directly inside the namespaces (`ip -n NS link add ...`), so the
//! host's own interfaces and routes are never touched; tests address only
//! 198.51.100.0/24 and 2001:db8::/32.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Prefix of every namespace these helpers create: `phk-<pid>-<n>-<label>`.
const PREFIX: &str = "phk-";

/// Per-process counter, so two namespaces with the same label differ.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether this test can run: root, the `ip` command and network namespaces.
///
/// A missing prerequisite fails the test under `CI=true`; elsewhere it
/// prints exactly what is missing and returns false, and the test returns early.
pub fn require_root_and_ip() -> bool {
    let mut missing = Vec::new();
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        missing.push(format!("root (running as uid {euid})"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push(format!(
            "a working `ip` command (`ip -V` exited with {})",
            out.status
        )),
        Err(e) => missing.push(format!("the `ip` command (iproute2): {e}")),
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        missing.push("network namespace support (/proc/self/ns/net is absent)".into());
    }
    super::require(&missing)
}

/// A network namespace that exists while this value lives.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `phk-<pid>-<n>-<label>` with its loopback up.
    ///
    /// Also removes namespaces left by earlier test processes that no longer
    /// exist (killed before their guards ran).
    pub fn new(label: &str) -> Netns {
        remove_orphans();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS...`, panicking with its stderr when it fails;
    /// returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip -j -n NS ARGS...` and parses its JSON output.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = run_ok(Command::new("ip").args(["-j", "-n", &self.name]).args(args));
        // `ip -j` prints nothing at all for some empty results.
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ip -j -n {} {}: not JSON ({e}): {}",
                self.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (`ip netns exec`) and
    /// returns its output, whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv6.conf.all.accept_dad`.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result (a panic in `f` is passed on).
    ///
    /// setns(2) switches the network namespace of the calling thread only, so
    /// sockets `f` opens (a netlink socket, a TcpListener) live in the
    /// namespace while the test's own thread stays where it was. Files under
    /// /sys still show the namespace /sys was mounted in.
    pub fn run<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        let file = self.open();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&file, &self.name);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Netns::run`], for async code: builds a current-thread tokio
    /// runtime inside the namespace (as the binary does) and blocks on the
    /// future `f` returns. The future need not be `Send`.
    pub fn run_async<R, Fut, F>(&self, f: F) -> R
    where
        R: Send,
        Fut: std::future::Future<Output = R>,
        F: FnOnce() -> Fut + Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(f())
        })
    }

    /// Spawns a thread that lives in this namespace, for servers that must
    /// outlive one call; the caller joins it.
    pub fn spawn<R, F>(&self, f: F) -> std::thread::JoinHandle<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let file = self.open();
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&file, &name);
            f()
        })
    }

    /// The hardware address of `ifname` in this namespace, as `ip -j link`
    /// shows it (`02:00:00:00:00:11`).
    pub fn mac(&self, ifname: &str) -> String {
        let link = self.ip_json(&["link", "show", "dev", ifname]);
        link[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {ifname} in {}: {link}", self.name))
            .to_owned()
    }

    /// The `addr_info` entries of `ifname` whose `local` is `ip`
    /// (from `ip -j addr show dev IFNAME`).
    pub fn addrs(&self, ifname: &str, ip: &str) -> Vec<serde_json::Value> {
        let shown = self.ip_json(&["addr", "show", "dev", ifname]);
        shown[0]["addr_info"]
            .as_array()
            .map(|infos| {
                infos
                    .iter()
                    .filter(|info| info["local"].as_str() == Some(ip))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The link-layer address of neighbour `ip` on `ifname`, if there is an
    /// entry with one.
    pub fn neighbour_mac(&self, ifname: &str, ip: &str) -> Option<String> {
        let shown = self.ip_json(&["neigh", "show", ip, "dev", ifname]);
        shown[0]["lladdr"].as_str().map(str::to_owned)
    }

    /// The open /run/netns file of this namespace.
    fn open(&self) -> File {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth ends inside it, and with them
        // their peers. Runs during a panic too; a failure is reported, not
        // raised, so it cannot turn a test failure into an abort.
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "removing namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("removing namespace {}: {e}", self.name),
        }
    }
}

/// Creates a veth pair, `a_if` in `a` and `b_if` in `b` (which may be the same
/// namespace), and brings both ends up. The pair is created inside `a`, so
/// the host never sees it.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Moves the calling thread into the namespace behind `file`.
fn enter(file: &File, name: &str) {
    // SAFETY: setns(2) on a file descriptor we hold open; CLONE_NEWNET changes
    // only this thread's network namespace and touches no Rust-visible memory.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!("setns into {name}: {}", std::io::Error::last_os_error());
    }
}

/// Runs a command and panics, with its stderr, unless it succeeds.
fn run_ok(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// Removes `phk-<pid>-...` namespaces whose process is gone: left behind by a
/// test run that was killed (SIGKILL skips Drop). Namespaces of live
/// processes, and any not named by these helpers, are left alone.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}
