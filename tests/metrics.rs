//! Metrics through the real node_exporter: the hook writes its textfile on
//! every run (callbacks in a node namespace, reconcile on a PgBouncer host
//! with real PgBouncer and PostgreSQL), Debian's prometheus-node-exporter
//! reads it with its textfile collector, and the test scrapes `/metrics` and
//! parses it with a Prometheus text-format parser.

mod common;

use common::hook::{code, Fixture, SCOPE, V4};
use common::pg::{self, Pgbouncer, Postgres};
use common::{free_port, require_all, text, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// node_exporter with only the textfile collector, on a loopback port.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new(NODE_EXPORTER)
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = NodeExporter { child, port };
        wait_for("node_exporter to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        n
    }

    /// `/metrics`, parsed.
    fn scrape(&self) -> prometheus_parse::Scrape {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scraping node_exporter: {}",
            text(&out)
        );
        let body = String::from_utf8(out.stdout).unwrap();
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("node_exporter's /metrics parses as the text format")
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn have_node_exporter() -> bool {
    require_all(&[(
        "prometheus-node-exporter (Debian package)",
        Path::new(NODE_EXPORTER).exists(),
    )])
}

/// The textfile collector found no error in the file.
fn no_textfile_error(s: &prometheus_parse::Scrape) {
    assert_eq!(
        value(s, "node_textfile_scrape_error", &[]),
        Some(0.0),
        "textfile error"
    );
}

#[test]
fn callbacks_leave_their_metrics_for_node_exporter() {
    let Some(f) = Fixture::new(&format!("{V4}/24")) else {
        return;
    };
    if !have_node_exporter() {
        return;
    }
    let textdir = f.dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let prom = textdir.join("patroni_hook.prom");
    f.write_config(
        &format!("{V4}/24"),
        &format!("metrics:\n  textfile: {}\n", prom.display()),
    );
    let ne = NodeExporter::start(&textdir);
    f.set_leader("pg1");
    let out = f.hook(&["on_role_change", "primary", SCOPE]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = ne.scrape();
    no_textfile_error(&s);
    let run = [("action", "on_role_change"), ("scope", SCOPE)];
    assert_eq!(
        value(&s, "patroni_hook_last_run_exit_code", &run),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "patroni_hook_vip_held", &[("scope", SCOPE)]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "patroni_hook_vip_info",
            &[
                ("scope", SCOPE),
                ("address", &format!("{V4}/24")),
                ("interface", "eth1")
            ]
        ),
        Some(1.0)
    );
    // A second primary run and a release: counters add up across runs.
    assert_eq!(code(&f.hook(&["on_role_change", "primary", SCOPE])), 0);
    let url = f.consul.url();
    f.edit_config(&url, "http://127.0.0.1:1");
    let out = f.hook(&["on_stop", "primary", SCOPE]);
    assert_eq!(code(&out), 75, "{}", text(&out));
    let s = ne.scrape();
    no_textfile_error(&s);
    let ok = [
        ("action", "on_role_change"),
        ("scope", SCOPE),
        ("exit_code", "0"),
    ];
    assert_eq!(value(&s, "patroni_hook_runs_total", &ok), Some(2.0));
    let stop = [("action", "on_stop"), ("scope", SCOPE), ("exit_code", "75")];
    assert_eq!(value(&s, "patroni_hook_runs_total", &stop), Some(1.0));
    assert_eq!(
        value(&s, "patroni_hook_vip_held", &[("scope", SCOPE)]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "patroni_hook_vip_info", &[("scope", SCOPE)]),
        None
    );
    let changes = |c: &str| {
        value(
            &s,
            "patroni_hook_vip_changes_total",
            &[("scope", SCOPE), ("change", c)],
        )
    };
    assert_eq!(
        (changes("added"), changes("removed")),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(
        value(
            &s,
            "patroni_hook_last_run_exit_code",
            &[("action", "on_stop")]
        ),
        Some(75.0)
    );
    // Only the .prom file: no temp file is left where node_exporter reads.
    let names: Vec<PathBuf> = std::fs::read_dir(&textdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, vec![prom]);
}

#[test]
fn reconcile_on_the_pgbouncer_host_leaves_its_metrics() {
    if !pg::require_pg_and_pgbouncer() || !have_node_exporter() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pg::open_path_for_postgres(dir.path());
    let a = Postgres::start(dir.path(), "a");
    let b = Postgres::start(dir.path(), "b");
    let pgb = Pgbouncer::start(dir.path(), a.port);
    let consul = consul_double::Server::start(consul_double::Options::default()).unwrap();
    let member = |name: &str, port: u16| {
        consul.kv_put(
            &format!("service/{SCOPE}/members/{name}"),
            format!(r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:8008/patroni"}}"#).as_bytes(),
        )
    };
    member("pg1", a.port);
    member("pg2", b.port);
    consul.kv_put(&format!("service/{SCOPE}/leader"), b"pg2");
    let textdir = dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let cfg = dir.path().join("pgb.yml");
    std::fs::write(
        &cfg,
        format!(
            "lock_file: {d}/pgb.lock\nconsul:\n  url: {url}\n\
             pgbouncer:\n  ini: {ini}\n  pidfile: {pid}\n  clusters:\n    - scope: {SCOPE}\n      databases: [appdb]\n\
             metrics:\n  textfile: {t}/patroni_hook.prom\n",
            d = dir.path().display(),
            url = consul.url(),
            ini = pgb.ini.display(),
            pid = pgb.pidfile.display(),
            t = textdir.display(),
        ),
    )
    .unwrap();
    let ne = NodeExporter::start(&textdir);
    let reconcile = || {
        Command::new(assert_cmd::cargo::cargo_bin("patroni-hook"))
            .arg("--config")
            .arg(&cfg)
            .arg("reconcile")
            .env("PATRONI_HOOK_LOG_STDERR", "1")
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = reconcile();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let s = ne.scrape();
    no_textfile_error(&s);
    // Two runs, one rewrite: the second found the file current.
    assert_eq!(
        value(
            &s,
            "patroni_hook_runs_total",
            &[("action", "reconcile"), ("exit_code", "0")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "patroni_hook_pgbouncer_rewrites_total", &[]),
        Some(1.0)
    );
    let port = b.port.to_string();
    assert_eq!(
        value(
            &s,
            "patroni_hook_pgbouncer_target_info",
            &[
                ("scope", SCOPE),
                ("database", "appdb"),
                ("host", "127.0.0.1"),
                ("port", &port)
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "patroni_hook_pgbouncer_paused", &[("scope", SCOPE)]),
        Some(0.0)
    );
    // The leader moves back: the target follows and the old one is gone.
    consul.kv_put(&format!("service/{SCOPE}/leader"), b"pg1");
    assert_eq!(reconcile().status.code(), Some(0));
    let s = ne.scrape();
    let targets: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "patroni_hook_pgbouncer_target_info")
        .map(|x| x.labels.get("port").unwrap_or_default().to_string())
        .collect();
    assert_eq!(targets, vec![a.port.to_string()]);
    assert_eq!(
        value(&s, "patroni_hook_pgbouncer_rewrites_total", &[]),
        Some(2.0)
    );
}

/// A run tidies what killed runs left (their temp files) and says when the
/// textfile it reads back holds lines it cannot read (its counters restart).
#[test]
fn a_run_sweeps_dead_temp_files_and_reports_a_garbled_textfile() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let prom = dir.join("hook.prom");
    std::fs::write(
        dir.join("pgbouncer.ini"),
        "[databases]\nappdb = host=192.0.2.1\n",
    )
    .unwrap();
    let cfg = dir.join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "lock_file: {d}/l\nconsul:\n  url: http://127.0.0.1:1\n  timeout: 1s\n\
             pgbouncer:\n  ini: {d}/pgbouncer.ini\n  pidfile: {d}/p.pid\n  clusters:\n    - scope: batman\n      databases: [appdb]\n\
             metrics:\n  textfile: {p}\n",
            d = dir.display(),
            p = prom.display()
        ),
    )
    .unwrap();
    // A temp file of a run killed before its rename (a pid that is not
    // running), and one of a live process that must stay.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let dead = dir.join(".hook.prom.4194000");
    let live = dir.join(format!(".hook.prom.{}", sleeper.id()));
    std::fs::write(&dead, "patroni_hook_runs_total 1\n").unwrap();
    std::fs::write(&live, "x").unwrap();
    std::fs::write(
        &prom,
        "patroni_hook_runs_total{action=\"reconcile\" 7\n\u{0}\u{1}garbage\n",
    )
    .unwrap();
    let out = Command::new(common::hook::bin())
        .arg("--config")
        .arg(&cfg)
        .arg("reconcile")
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        !dead.exists(),
        "a dead run's temp file stays: {}",
        text(&out)
    );
    assert!(live.exists(), "a live process's file was removed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN") && err.contains("hook.prom") && err.contains("2 line"),
        "{}",
        text(&out)
    );
}
