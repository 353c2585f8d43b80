//! Benchmark (prints figures, asserts nothing about speed) of `reconcile` on
//! the PgBouncer host, against the Consul double on loopback and a real
//! PgBouncer in front of two real PostgreSQL 15 instances:
//!
//! 1. wall time of one `patroni-hook reconcile` when nothing changed and when
//!    it rewrites (and reloads), with 1 cluster and with 500 clusters in the
//!    double (one recursive read), median and max of N runs;
//! 2. the same one-cluster rewrite done consul-template style: a shell script
//!    that reads the keys with curl, renders the ini with sed and sends SIGHUP;
//! 3. time from a leader-key change to PgBouncer serving the new host through
//!    the watch path (the double's `--watch` runs the handler), hook vs script.
//!
//! 4. rows 1's one-cluster reconcile against a real etcd 3.4 on loopback
//!    (tests/common/real_etcd.rs), `dcs: etcd3`: plain HTTP; TLS with a
//!    client certificate (mutual TLS, no etcd auth); and TLS with a client
//!    certificate and auth on, as the contract's patroni-hook-pgbouncer user
//!    with a password (one authenticate per run).
//!
//! Run: `cargo build --release && sudo cargo bench --bench reconcile`
//! (`RECONCILE_BENCH_RUNS`, default 50; watch-path samples default 20).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::pg::{self, Client, Pgbouncer, Postgres};
use consul_double::{Options, Server};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn member(port: u16) -> Vec<u8> {
    format!(r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4"}}"#).into_bytes()
}

fn time_ms(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(st.success(), "{cmd:?} exited {st}");
    ms
}

struct Row(String, f64, f64);

fn row(what: &str, v: Vec<f64>) -> Row {
    Row(what.into(), support::median(v.clone()), support::max(&v))
}

/// Writes a hook config for `clusters` scopes c0..cN-1 with entries db0..dbN-1.
fn write_config(path: &Path, dir: &Path, url: &str, pgb: &Pgbouncer, clusters: usize) {
    let mut s = format!(
        "lock_file: {}/hook.lock\nconsul:\n  url: {url}\npgbouncer:\n  ini: {}\n  pidfile: {}\n  clusters:\n",
        dir.display(),
        pgb.ini.display(),
        pgb.pidfile.display()
    );
    for i in 0..clusters {
        s.push_str(&format!("    - scope: c{i}\n      databases: [db{i}]\n"));
    }
    std::fs::write(path, s).unwrap();
}

fn main() {
    if !pg::require_pg_and_pgbouncer() {
        return;
    }
    let runs = support::env_count("RECONCILE_BENCH_RUNS", 50);
    let samples = support::env_count("RECONCILE_BENCH_WATCH_SAMPLES", 20);
    let hook = support::release_hook();

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pg::open_path_for_postgres(dir);
    let a = Postgres::start(dir, "A");
    let b = Postgres::start(dir, "B");
    let pgb = Pgbouncer::start(dir, a.port);
    // 500 managed entries db0..db499 in [databases]; db0 is the one clients use.
    let ini = std::fs::read_to_string(&pgb.ini).unwrap();
    let mut entries = String::new();
    for i in 0..500 {
        entries.push_str(&format!(
            "db{i} = host=127.0.0.1 port={} dbname=postgres\n",
            a.port
        ));
    }
    let ini = ini.replacen("[databases]\n", &format!("[databases]\n{entries}"), 1);
    std::fs::write(&pgb.ini, ini).unwrap();
    pg::chown_postgres(&pgb.ini);
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(std::fs::read_to_string(&pgb.pidfile).unwrap().trim())
        .status()
        .unwrap();
    assert!(st.success());

    let consul = Server::start(Options::default()).unwrap();
    for i in 0..500 {
        let p = format!("service/c{i}/");
        consul.kv_put(&format!("{p}members/pg-a"), &member(a.port));
        consul.kv_put(&format!("{p}members/pg-b"), &member(b.port));
        consul.kv_put(&format!("{p}leader"), b"pg-a");
        // What else Patroni keeps under a scope, so the recursive read is realistic.
        consul.kv_put(
            &format!("{p}config"),
            br#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576}"#,
        );
        consul.kv_put(&format!("{p}initialize"), b"7123456789012345678");
        consul.kv_put(
            &format!("{p}status"),
            br#"{"optime":67108960,"retain_slots":[]}"#,
        );
        consul.kv_put(
            &format!("{p}history"),
            br#"[[1,25165984,"no recovery target specified","2026-11-24T08:00:00+00:00","pg-a"]]"#,
        );
    }
    let one = dir.join("one.yml");
    let many = dir.join("many.yml");
    write_config(&one, dir, &consul.url(), &pgb, 1);
    write_config(&many, dir, &consul.url(), &pgb, 500);
    let reconcile = |cfg: &Path| {
        let mut c = Command::new(&hook);
        c.arg("--config")
            .arg(cfg)
            .arg("reconcile")
            .env("PATRONI_HOOK_LOG_STDERR", "1");
        c
    };
    let flip = |i: usize, n: usize| {
        let who: &[u8] = if n % 2 == 0 { b"pg-b" } else { b"pg-a" };
        consul.kv_put(&format!("service/c{i}/leader"), who);
    };

    // consul-template style, one cluster: read, render with sed, SIGHUP.
    let script = dir.join("render.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
set -e
url={url}
leader=$(curl -sf "$url/v1/kv/service/c0/leader?raw")
conn=$(curl -sf "$url/v1/kv/service/c0/members/$leader?raw" | sed -n 's/.*"conn_url":"postgres:\/\/\([^"/]*\)\/.*/\1/p')
host=${{conn%:*}}; port=${{conn##*:}}
tmp={ini}.tmp
sed "s/^db0 = host=[^ ]* port=[0-9]*/db0 = host=$host port=$port/" {ini} > "$tmp"
if cmp -s "$tmp" {ini}; then rm -f "$tmp"; exit 0; fi
mv "$tmp" {ini}
kill -HUP "$(cat {pid})"
"#,
            url = consul.url(),
            ini = pgb.ini.display(),
            pid = pgb.pidfile.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    for _ in 0..3 {
        time_ms(&mut reconcile(&one));
    }
    let mut rows = Vec::new();
    let (mut h_same, mut h_rw, mut s_same, mut s_rw) = (vec![], vec![], vec![], vec![]);
    for n in 0..runs {
        h_same.push(time_ms(&mut reconcile(&one)));
        s_same.push(time_ms(&mut Command::new(&script)));
        flip(0, n);
        h_rw.push(time_ms(&mut reconcile(&one)));
        flip(0, n + 1);
        s_rw.push(time_ms(&mut Command::new(&script)));
    }
    rows.push(row("patroni-hook reconcile, 1 cluster, unchanged", h_same));
    rows.push(row(
        "shell render (curl+sed+HUP), 1 cluster, unchanged",
        s_same,
    ));
    rows.push(row(
        "patroni-hook reconcile, 1 cluster, rewrite + reload",
        h_rw,
    ));
    rows.push(row(
        "shell render (curl+sed+HUP), 1 cluster, rewrite + reload",
        s_rw,
    ));
    // 500 clusters: converge once, then measure.
    time_ms(&mut reconcile(&many));
    let (mut m_same, mut m_rw) = (vec![], vec![]);
    for n in 0..runs {
        m_same.push(time_ms(&mut reconcile(&many)));
        flip(250, n);
        m_rw.push(time_ms(&mut reconcile(&many)));
    }
    rows.push(row(
        "patroni-hook reconcile, 500 clusters, unchanged",
        m_same,
    ));
    rows.push(row(
        "patroni-hook reconcile, 500 clusters, rewrite of one + reload",
        m_rw,
    ));
    // Put c0 back on A for the watch measurements.
    consul.kv_put("service/c0/leader", b"pg-a");
    time_ms(&mut reconcile(&one));
    drop(consul);

    // Watch path: the double's watch runs the handler on each leader change.
    let render_template = std::fs::read_to_string(&script).unwrap();
    let consul_url = consul_url_of(&script);
    let watch_ms = |use_hook: bool| -> Vec<f64> {
        // Bind first, so the handler's files name the right URL before the
        // watch's first run.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        write_config(&one, dir, &url, &pgb, 1);
        let watch_script = dir.join(format!(
            "render-watch-{}.sh",
            listener.local_addr().unwrap().port()
        ));
        std::fs::write(&watch_script, render_template.replace(&consul_url, &url)).unwrap();
        std::fs::set_permissions(&watch_script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let handler = if use_hook {
            vec![
                hook.display().to_string(),
                "--config".into(),
                one.display().to_string(),
                "reconcile".into(),
            ]
        } else {
            vec![watch_script.display().to_string()]
        };
        let s = Server::start_on(
            listener,
            Options {
                watches: vec![("service/c0/leader".to_string(), handler)],
                ..Options::default()
            },
        )
        .unwrap();
        s.kv_put("service/c0/members/pg-a", &member(a.port));
        s.kv_put("service/c0/members/pg-b", &member(b.port));
        s.kv_put("service/c0/leader", b"pg-a");
        let mut client = Client::connect(pgb.port, "db0");
        common::wait_for(
            "db0 to serve A before measuring",
            Duration::from_secs(10),
            || client.query_line("SELECT name FROM marker;") == "A",
        );
        let mut out = Vec::new();
        for n in 0..samples {
            let (who, want) = if n % 2 == 0 {
                (&b"pg-b"[..], "B")
            } else {
                (&b"pg-a"[..], "A")
            };
            let t = Instant::now();
            s.kv_put("service/c0/leader", who);
            let end = t + Duration::from_secs(10);
            while client.query_line("SELECT name FROM marker;") != want {
                assert!(
                    Instant::now() < end,
                    "PgBouncer did not serve {want} within 10 s"
                );
            }
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        out
    };
    rows.push(row(
        "watch path, leader change -> PgBouncer serves new host: patroni-hook",
        watch_ms(true),
    ));
    rows.push(row(
        "watch path, leader change -> PgBouncer serves new host: shell render",
        watch_ms(false),
    ));

    if common::real_etcd::require_etcd() {
        use common::real_etcd::{Etcd, Opts};
        // Scope batman: the one the contract's roles are made for.
        let cfg = dir.join("etcd.yml");
        for (label, opts) in [
            ("etcd (HTTP)", Opts::PLAIN),
            ("etcd (TLS + client certificate)", Opts::MTLS),
            (
                "etcd (TLS + client certificate + password, RBAC)",
                Opts::SECURE,
            ),
        ] {
            let etcd = Etcd::start(None, opts);
            let p = "/service/batman/";
            etcd.put(&format!("{p}members/pg-a"), &member(a.port));
            etcd.put(&format!("{p}members/pg-b"), &member(b.port));
            etcd.put(&format!("{p}leader"), b"pg-a");
            etcd.put(
                &format!("{p}config"),
                br#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576}"#,
            );
            etcd.put(&format!("{p}initialize"), b"7123456789012345678");
            etcd.put(
                &format!("{p}status"),
                br#"{"optime":67108960,"retain_slots":[]}"#,
            );
            std::fs::write(
                &cfg,
                format!(
                    "lock_file: {}/hook.lock\ndcs: etcd3\netcd3:\n{}pgbouncer:\n  ini: {}\n  pidfile: {}\n  clusters:\n    - scope: batman\n      databases: [db0]\n",
                    dir.display(),
                    etcd.hook_settings(dir, "patroni-hook-pgbouncer"),
                    pgb.ini.display(),
                    pgb.pidfile.display()
                ),
            )
            .unwrap();
            for _ in 0..3 {
                time_ms(&mut reconcile(&cfg));
            }
            let (mut same, mut rw) = (vec![], vec![]);
            for n in 0..runs {
                same.push(time_ms(&mut reconcile(&cfg)));
                let who: &[u8] = if n % 2 == 0 { b"pg-b" } else { b"pg-a" };
                etcd.put(&format!("{p}leader"), who);
                rw.push(time_ms(&mut reconcile(&cfg)));
            }
            rows.push(row(
                &format!("patroni-hook reconcile on {label}, 1 cluster, unchanged"),
                same,
            ));
            rows.push(row(
                &format!("patroni-hook reconcile on {label}, 1 cluster, rewrite + reload"),
                rw,
            ));
        }
    }

    println!("\nreconcile benchmark: {runs} runs per row ({samples} for the watch path), Consul double on loopback, {}\n", pgbouncer_version());
    println!("| what | median ms | max ms |");
    println!("|---|---:|---:|");
    for Row(what, med, max) in &rows {
        println!("| {what} | {med:.2} | {max:.2} |");
    }
    drop(pgb);
    drop(b);
    drop(a);
}

/// The Consul URL currently written into the render script.
fn consul_url_of(script: &Path) -> String {
    let s = std::fs::read_to_string(script).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("url="))
        .unwrap()
        .to_string()
}

fn pgbouncer_version() -> String {
    let out = Command::new(common::which("pgbouncer").unwrap())
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
