//! Benchmark (prints figures, asserts nothing about speed): whole-process wall
//! time and peak RSS of `on_role_change primary` and `on_role_change replica`,
//! in a network namespace against the Consul double, side by side in the same
//! run with a shell script doing what the original setup did
//! (`ip addr add` + `arping -U` + `curl -X PUT`, and `ip addr del` + `curl -X DELETE`).
//!
//! Then the same two callbacks against a real etcd 3.4 in the namespace
//! (tests/common/real_etcd.rs), `dcs: etcd3`: plain HTTP; TLS with a client
//! certificate (mutual TLS, no etcd auth); and TLS with a client
//! certificate and auth on, the hook logging in as patroni-hook-db with a
//! password (etcd's JSON gateway takes no certificate CN as the user while
//! auth is on, so this is how RBAC is used: one authenticate per run).
//!
//! Run: `sudo cargo bench --bench hook` (N runs each, default 50: `HOOK_BENCH_RUNS=100`;
//! the etcd rows `HOOK_BENCH_ETCD_RUNS`, default 20).
//! Uses the release binary: `cargo build --release` first.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::netns::{self, Netns};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "198.51.100.100/24";
const VIP_IP: &str = "198.51.100.100";

/// Runs a command to completion; returns wall time and the child's peak RSS in KiB.
fn measure_here(cmd: &mut Command) -> (Duration, i64, i32) {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child, writing into locals we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let took = started.elapsed();
    std::mem::forget(child); // already reaped
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (took, usage.ru_maxrss, code)
}

/// Runs `measure_here` from a thread inside `ns`.
fn measure_in(ns: &Netns, cmd: &mut Command) -> (Duration, i64, i32) {
    ns.run(|| measure_here(cmd))
}

struct Row {
    what: String,
    wall_ms: f64,
    max_ms: f64,
    rss_kib: f64,
}

fn series(what: &str, runs: usize, mut one: impl FnMut(usize) -> (Duration, i64, i32)) -> Row {
    let mut walls = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let (d, r, code) = one(i);
        assert!(code == 0, "{what}: run {i} exited {code}");
        walls.push(d.as_secs_f64() * 1000.0);
        rss.push(r as f64);
    }
    let max_ms = support::max(&walls);
    Row {
        what: what.to_string(),
        wall_ms: support::median(walls),
        max_ms,
        rss_kib: support::median(rss),
    }
}

fn main() {
    if !netns::require_root_and_ip() {
        return;
    }
    let runs = support::env_count("HOOK_BENCH_RUNS", 50);
    let hook = support::release_hook();
    for tool in ["arping", "curl"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "{tool} is needed for the side-by-side script (scripts/test.sh installs it)"
        );
    }

    let node = Netns::new("bnode");
    let peer = Netns::new("bpeer");
    netns::veth(&node, "eth1", &peer, "eth1");
    node.ip(&["addr", "add", "198.51.100.11/24", "dev", "eth1"]);
    peer.ip(&["addr", "add", "198.51.100.12/24", "dev", "eth1"]);
    let listener = node.run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let consul =
        consul_double::Server::start_on(listener, consul_double::Options::default()).unwrap();
    consul.kv_put("service/batman/leader", b"pg1");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "name: pg1\nscope: batman\nlock_file: {}\nconsul:\n  url: {}\nvip:\n  address: {VIP}\n  interface: eth1\n  gratuitous_arp: 3\n",
            dir.path().join("lock").display(),
            consul.url()
        ),
    )
    .unwrap();

    // Spawned from a thread that has entered the namespace (the child inherits
    // the thread's network namespace), not through `ip netns exec`, so the peak
    // RSS is the measured program's and not `ip`'s before it execs.
    let in_ns = |program: &Path| Command::new(program);
    let hook_cmd = |role: &str| {
        let mut c = in_ns(&hook);
        c.arg("--config")
            .arg(&cfg)
            .args(["on_role_change", role, "batman"]);
        c.env("PATRONI_HOOK_LOG_STDERR", "1");
        c
    };
    // What the original floating-ip script did; arping sends the same 3
    // announcements (-c 3) but waits 1 s between them, so it is given -c 1
    // here to compare the fixed cost, not arping's pacing.
    let script = dir.path().join("vip.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nif [ \"$1\" = primary ]; then\n  ip addr add {VIP} dev eth1\n  arping -q -U -c 1 -I eth1 {VIP_IP} || true\n  curl -sf -X PUT --data '{{\"member\":\"pg1\",\"address\":\"{VIP}\",\"interface\":\"eth1\"}}' {url}/v1/kv/service/batman/vip-holder >/dev/null\nelse\n  ip addr del {VIP} dev eth1\n  curl -sf -X DELETE {url}/v1/kv/service/batman/vip-holder >/dev/null\nfi\n",
            url = consul.url()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script_cmd = |role: &str| {
        let mut c = in_ns(&script);
        c.arg(role);
        c
    };
    // iputils arping waits about a second after its last packet before it
    // exits; the same script without arping shows the rest of its cost.
    let script_noarp = dir.path().join("vip-noarp.sh");
    std::fs::write(
        &script_noarp,
        std::fs::read_to_string(&script).unwrap().replace(
            &format!("  arping -q -U -c 1 -I eth1 {VIP_IP} || true\n"),
            "",
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script_noarp, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Warm up caches (binary pages, the double's connection accept path).
    for _ in 0..3 {
        measure_in(&node, &mut hook_cmd("primary"));
        measure_in(&node, &mut hook_cmd("replica"));
    }
    // Interleave so both see the same machine at the same moment.
    let mut rows = Vec::new();
    let mut extra = Vec::new();
    for role in ["primary", "replica"] {
        let mut h = Vec::new();
        let mut s = Vec::new();
        for _ in 0..runs {
            // Each measured run starts from the opposite state, so it changes something.
            let other = if role == "primary" {
                "replica"
            } else {
                "primary"
            };
            assert_eq!(measure_in(&node, &mut hook_cmd(other)).2, 0);
            h.push(measure_in(&node, &mut hook_cmd(role)));
            assert_eq!(measure_in(&node, &mut hook_cmd(other)).2, 0);
            s.push(measure_in(&node, &mut script_cmd(role)));
        }
        let mut hi = h.into_iter();
        let mut si = s.into_iter();
        rows.push(series(
            &format!("patroni-hook on_role_change {role}"),
            runs,
            |_| hi.next().unwrap(),
        ));
        rows.push(series(&format!("shell script ({role})"), runs, |_| {
            si.next().unwrap()
        }));
        if role == "primary" {
            extra.push(series(
                "shell script without arping (primary)",
                runs,
                |_| {
                    assert_eq!(measure_in(&node, &mut hook_cmd("replica")).2, 0);
                    let mut c = in_ns(&script_noarp);
                    c.arg("primary");
                    measure_in(&node, &mut c)
                },
            ));
        }
    }
    println!("\nhook benchmark: {runs} runs each, in a network namespace against the Consul double (loopback)\n");
    println!("| command | median wall ms | max wall ms | median peak RSS KiB |");
    println!("|---|---:|---:|---:|");
    for r in rows.iter().chain(&extra) {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} |",
            r.what, r.wall_ms, r.max_ms, r.rss_kib
        );
    }
    for pair in rows.chunks(2) {
        println!(
            "\n{}: patroni-hook median is {:.2}x the script's wall time ({:.2} ms vs {:.2} ms)",
            pair[0].what,
            pair[0].wall_ms / pair[1].wall_ms,
            pair[0].wall_ms,
            pair[1].wall_ms
        );
    }
    // The script's peak RSS is the largest of sh, ip, arping and curl: wait4
    // reports ru_maxrss over the child and the descendants it waited for.

    if common::real_etcd::require_etcd() {
        let etcd_runs = support::env_count("HOOK_BENCH_ETCD_RUNS", 20);
        let mut etcd_rows = Vec::new();
        // The double's rows again, measured beside etcd's.
        for role in ["primary", "replica"] {
            let other = if role == "primary" {
                "replica"
            } else {
                "primary"
            };
            etcd_rows.push(series(
                &format!("Consul double (HTTP): on_role_change {role}"),
                etcd_runs,
                |_| {
                    assert_eq!(measure_in(&node, &mut hook_cmd(other)).2, 0);
                    measure_in(&node, &mut hook_cmd(role))
                },
            ));
        }
        drop(consul);
        use common::real_etcd::{Etcd, Opts};
        for (label, opts) in [
            ("etcd (HTTP)", Opts::PLAIN),
            ("etcd (TLS + client certificate)", Opts::MTLS),
            (
                "etcd (TLS + client certificate + password, RBAC)",
                Opts::SECURE,
            ),
        ] {
            let etcd = Etcd::start(Some(&node), opts);
            etcd.put("/service/batman/leader", b"pg1");
            let ecfg = dir.path().join("etcd.yml");
            std::fs::write(
                &ecfg,
                format!(
                    "name: pg1\nscope: batman\nlock_file: {}\ndcs: etcd3\netcd3:\n{}vip:\n  address: {VIP}\n  interface: eth1\n  gratuitous_arp: 3\n",
                    dir.path().join("lock").display(),
                    etcd.hook_settings(dir.path(), "patroni-hook-db"),
                ),
            )
            .unwrap();
            let etcd_cmd = |role: &str| {
                let mut c = in_ns(&hook);
                c.arg("--config")
                    .arg(&ecfg)
                    .args(["on_role_change", role, "batman"])
                    .env("PATRONI_HOOK_LOG_STDERR", "1");
                c
            };
            for _ in 0..3 {
                measure_in(&node, &mut etcd_cmd("primary"));
                measure_in(&node, &mut etcd_cmd("replica"));
            }
            for role in ["primary", "replica"] {
                let other = if role == "primary" {
                    "replica"
                } else {
                    "primary"
                };
                etcd_rows.push(series(
                    &format!("{label}: on_role_change {role}"),
                    etcd_runs,
                    |_| {
                        assert_eq!(measure_in(&node, &mut etcd_cmd(other)).2, 0);
                        measure_in(&node, &mut etcd_cmd(role))
                    },
                ));
            }
        }
        println!("\nhook on etcd 3.4 beside the Consul double: {etcd_runs} runs each, in the same network namespace (loopback)\n");
        println!("| DCS: command | median wall ms | max wall ms | median peak RSS KiB |");
        println!("|---|---:|---:|---:|");
        for r in &etcd_rows {
            println!(
                "| {} | {:.2} | {:.2} | {:.0} |",
                r.what, r.wall_ms, r.max_ms, r.rss_kib
            );
        }
    }
    drop(peer);
    drop(node);
}
