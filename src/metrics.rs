//! Metrics without a daemon: every run rewrites one file in Prometheus' text
//! exposition format, for node_exporter's textfile collector
//! (`--collector.textfile.directory`), atomically (temp file, rename) and
//! under the host lock. Counters survive across runs: the file is read back
//! and incremented.
//!
//! The store is pure: series in, text out, text back in. Only [`update`]
//! touches the file.

use crate::error::Error;
use crate::node::plan::Owned;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A series: metric name and sorted label pairs.
type Series = (String, Vec<(String, String)>);

/// What one run did, for its metrics.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The VIP of a scope, when the run decided about one.
    pub vip: Option<VipFacts>,
    /// The PgBouncer host's part, when the run had one.
    pub pgbouncer: Option<PgbouncerFacts>,
}

/// What the run did about a scope's VIP.
#[derive(Debug, Clone, Default)]
pub struct VipFacts {
    /// The scope.
    pub scope: String,
    /// After the run: `Some(Some(addr))` held, `Some(None)` not held, `None`
    /// not known (the run kept things as they were, or failed).
    pub held: Option<Option<Owned>>,
    /// Addresses added.
    pub added: u32,
    /// Addresses removed.
    pub removed: u32,
}

/// What the run did on the PgBouncer host.
#[derive(Debug, Clone, Default)]
pub struct PgbouncerFacts {
    /// pgbouncer.ini was rewritten.
    pub rewrote: bool,
    /// Where the managed entries point after the run, as the file holds
    /// them: scope, database, host, port.
    pub targets: Vec<(String, String, String, u16)>,
    /// Where each cluster's entries should point by its leader key, when
    /// the run could tell: scope, host, port. A file that does not (a
    /// rewrite refused, a cluster paused for its new leader) shows in
    /// `targets` beside it.
    pub wanted: Vec<(String, String, u16)>,
    /// Clusters this host paused in this run.
    pub paused: Vec<String>,
    /// Clusters this host resumed in this run, and how long they were paused.
    pub resumed: Vec<(String, Duration)>,
    /// Clusters this host has paused now (after the run).
    pub paused_now: Vec<String>,
    /// Every cluster configured.
    pub scopes: Vec<String>,
    /// Per cluster, how many of its databases PgBouncer has paused with no
    /// record here of pausing them (when PgBouncer was asked).
    pub unrecorded: Vec<(String, usize)>,
}

/// One run, as the metrics see it.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The command or Patroni action.
    pub action: &'a str,
    /// The scope, or "".
    pub scope: &'a str,
    /// Its exit code.
    pub exit_code: i32,
    /// How long it took.
    pub duration: Duration,
    /// When it ended, seconds since the Unix epoch.
    pub ended: f64,
    /// What it did.
    pub facts: &'a Facts,
}

/// The metric families: name, type, help.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("patroni_hook_last_run_timestamp_seconds", "gauge", "When the last run of this action and scope ended."),
    ("patroni_hook_last_run_duration_seconds", "gauge", "How long the last run of this action and scope took."),
    ("patroni_hook_last_run_exit_code", "gauge", "Exit code of the last run: 0 converged, 1 failed or refused, 2 configuration, 75 temporary."),
    ("patroni_hook_runs_total", "counter", "Runs, by action, scope and exit code."),
    ("patroni_hook_vip_held", "gauge", "1 while this node holds the scope's VIP."),
    ("patroni_hook_vip_info", "gauge", "The VIP this node holds, as labels."),
    ("patroni_hook_vip_changes_total", "counter", "Addresses this node added or removed for the scope."),
    ("patroni_hook_pgbouncer_rewrites_total", "counter", "Rewrites of pgbouncer.ini."),
    ("patroni_hook_pgbouncer_last_rewrite_timestamp_seconds", "gauge", "When pgbouncer.ini was last rewritten."),
    ("patroni_hook_pgbouncer_target_info", "gauge", "Where a managed [databases] entry points, as labels."),
    ("patroni_hook_pgbouncer_wanted_info", "gauge", "Where a cluster's entries should point by its leader key, as labels."),
    ("patroni_hook_pgbouncer_paused", "gauge", "1 while this host has the cluster's databases paused."),
    ("patroni_hook_pgbouncer_pauses_total", "counter", "Pauses this host made for the cluster."),
    ("patroni_hook_pgbouncer_last_pause_duration_seconds", "gauge", "How long the last pause of the cluster lasted."),
    ("patroni_hook_pgbouncer_unrecorded_pauses", "gauge", "Managed databases PgBouncer has paused with no record of this host pausing them (an operator's PAUSE, or a lost record)."),
];

/// The metrics, by series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store(BTreeMap<Series, f64>);

/// A series; a label with an empty value is left out, as Prometheus reads
/// it anyway (a run with no scope, such as reconcile on the PgBouncer host,
/// has no scope label rather than scope="").
fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    (name.to_string(), l)
}

impl Store {
    /// Reads back what [`Store::render`] wrote; lines it does not know are
    /// dropped (the file is this program's alone).
    pub fn parse(text: &str) -> Store {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((s, v)) = parse_line(line) {
                if FAMILIES.iter().any(|(n, _, _)| *n == s.0) {
                    m.insert(s, v);
                }
            }
        }
        Store(m)
    }

    /// A value.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&series(name, labels)).copied()
    }

    fn set(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.insert(series(name, labels), v);
    }

    fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        *self.0.entry(series(name, labels)).or_insert(0.0) += v;
    }

    /// Drops every series of `name` whose labels contain all of `labels`.
    fn clear(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.retain(|(n, l), _| {
            n != name
                || !labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        });
    }

    /// Records one run.
    pub fn record(&mut self, run: &Run) {
        let base = [("action", run.action), ("scope", run.scope)];
        self.set("patroni_hook_last_run_timestamp_seconds", &base, run.ended);
        self.set(
            "patroni_hook_last_run_duration_seconds",
            &base,
            run.duration.as_secs_f64(),
        );
        self.set(
            "patroni_hook_last_run_exit_code",
            &base,
            run.exit_code as f64,
        );
        let code = run.exit_code.to_string();
        self.add(
            "patroni_hook_runs_total",
            &[
                ("action", run.action),
                ("scope", run.scope),
                ("exit_code", &code),
            ],
            1.0,
        );
        if let Some(v) = &run.facts.vip {
            let scope = [("scope", v.scope.as_str())];
            match &v.held {
                None => {}
                Some(held) => {
                    self.set(
                        "patroni_hook_vip_held",
                        &scope,
                        f64::from(u8::from(held.is_some())),
                    );
                    self.clear("patroni_hook_vip_info", &scope);
                    if let Some(o) = held {
                        let addr = o.net.to_string();
                        self.set(
                            "patroni_hook_vip_info",
                            &[
                                ("scope", &v.scope),
                                ("address", &addr),
                                ("interface", &o.interface),
                            ],
                            1.0,
                        );
                    }
                }
            }
            for (change, n) in [("added", v.added), ("removed", v.removed)] {
                self.add(
                    "patroni_hook_vip_changes_total",
                    &[("scope", &v.scope), ("change", change)],
                    f64::from(n),
                );
            }
        }
        if let Some(p) = &run.facts.pgbouncer {
            self.record_pgbouncer(p, run.ended);
        }
    }

    /// The PgBouncer host's part of a run.
    fn record_pgbouncer(&mut self, p: &PgbouncerFacts, ended: f64) {
        self.add(
            "patroni_hook_pgbouncer_rewrites_total",
            &[],
            f64::from(u8::from(p.rewrote)),
        );
        if p.rewrote {
            self.set(
                "patroni_hook_pgbouncer_last_rewrite_timestamp_seconds",
                &[],
                ended,
            );
        }
        for (scope, db, host, port) in &p.targets {
            self.clear(
                "patroni_hook_pgbouncer_target_info",
                &[("scope", scope), ("database", db)],
            );
            let port = port.to_string();
            self.set(
                "patroni_hook_pgbouncer_target_info",
                &[
                    ("scope", scope),
                    ("database", db),
                    ("host", host),
                    ("port", &port),
                ],
                1.0,
            );
        }
        for (scope, host, port) in &p.wanted {
            self.clear("patroni_hook_pgbouncer_wanted_info", &[("scope", scope)]);
            let port = port.to_string();
            self.set(
                "patroni_hook_pgbouncer_wanted_info",
                &[("scope", scope), ("host", host), ("port", &port)],
                1.0,
            );
        }
        for scope in &p.scopes {
            let s = [("scope", scope.as_str())];
            let paused = p.paused_now.contains(scope);
            self.set(
                "patroni_hook_pgbouncer_paused",
                &s,
                f64::from(u8::from(paused)),
            );
            self.add(
                "patroni_hook_pgbouncer_pauses_total",
                &s,
                f64::from(u8::from(p.paused.contains(scope))),
            );
        }
        for (scope, n) in &p.unrecorded {
            self.set(
                "patroni_hook_pgbouncer_unrecorded_pauses",
                &[("scope", scope.as_str())],
                *n as f64,
            );
        }
        for (scope, lasted) in &p.resumed {
            self.set(
                "patroni_hook_pgbouncer_last_pause_duration_seconds",
                &[("scope", scope)],
                lasted.as_secs_f64(),
            );
        }
    }

    /// The text exposition format, one HELP and TYPE per family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let rows: Vec<_> = self.0.iter().filter(|((n, _), _)| n == name).collect();
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for ((_, labels), v) in rows {
                out.push_str(name);
                if !labels.is_empty() {
                    let l: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    out.push_str(&format!("{{{}}}", l.join(",")));
                }
                out.push_str(&format!(" {}\n", number(*v)));
            }
        }
        out
    }
}

/// A label value escaped as the exposition format wants (`\\`, `\"`, `\n`).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `name{k="v",...} value` as [`Store::render`] writes it.
fn parse_line(line: &str) -> Option<(Series, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), Vec::new()),
        Some((n, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            let mut chars = body.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if chars.next() != Some('"') {
                    return None;
                }
                let mut v = String::new();
                loop {
                    match chars.next()? {
                        '\\' => match chars.next()? {
                            'n' => v.push('\n'),
                            c => v.push(c),
                        },
                        '"' => break,
                        c => v.push(c),
                    }
                }
                // Files written before empty labels were left out.
                if !v.is_empty() {
                    labels.push((key, v));
                }
                if chars.peek() == Some(&',') {
                    chars.next();
                }
            }
            labels.sort();
            (n.to_string(), labels)
        }
    };
    Some(((name, labels), value))
}

/// The lock that serialises writers of the textfile, beside the host lock.
pub fn lock_path(lock_file: &Path) -> std::path::PathBuf {
    lock_file.with_extension("metrics.lock")
}

/// Reads the file back, records `run`, and replaces the file atomically.
/// Call with the metrics lock held (counters are read, then written).
pub fn update(path: &Path, run: &Run) -> Result<(), Error> {
    let mut store = match std::fs::read(path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let store = Store::parse(&text);
            let unread = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .filter(|l| parse_line(l).is_none())
                .count();
            if unread > 0 {
                crate::warn_line!(
                    "{}: {unread} line(s) not in the text format were dropped (a torn or edited file); counters missing from it start again at 0",
                    path.display()
                );
            }
            store
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::default(),
        Err(e) => return Err(Error::failed(format!("reading {}", path.display()), e)),
    };
    store.record(run);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // node_exporter reads *.prom only: the temp file ends otherwise.
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(store.render().as_bytes())?;
        // Readable by node_exporter, whoever it runs as.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::failed(format!("writing metrics to {}", path.display()), e)
    })?;
    sweep(path, &name);
    Ok(())
}

/// Removes the temp files of runs killed before their rename
/// (`.<name>.<pid>` of a pid that no longer runs).
fn sweep(path: &Path, name: &str) {
    let Some(dir) = path.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if pid > 0 && gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<'a>(action: &'a str, code: i32, facts: &'a Facts) -> Run<'a> {
        Run {
            action,
            scope: "batman",
            exit_code: code,
            duration: Duration::from_millis(6),
            ended: 1_800_000_000.5,
            facts,
        }
    }

    #[test]
    fn counters_survive_a_round_trip_and_gauges_follow_the_last_run() {
        let held = Facts {
            vip: Some(VipFacts {
                scope: "batman".into(),
                held: Some(Some(Owned {
                    net: "198.51.100.100/24".parse().unwrap(),
                    interface: "eth1".into(),
                    added: true,
                })),
                added: 1,
                removed: 0,
            }),
            pgbouncer: None,
        };
        let mut s = Store::default();
        s.record(&run("on_role_change", 0, &held));
        let text = s.render();
        let mut back = Store::parse(&text);
        assert_eq!(back, s, "{text}");
        let released = Facts {
            vip: Some(VipFacts {
                scope: "batman".into(),
                held: Some(None),
                added: 0,
                removed: 1,
            }),
            pgbouncer: None,
        };
        back.record(&run("on_role_change", 75, &released));
        let r = |n: &str, l: &[(&str, &str)]| back.get(n, l);
        assert_eq!(
            r(
                "patroni_hook_runs_total",
                &[
                    ("action", "on_role_change"),
                    ("scope", "batman"),
                    ("exit_code", "0")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            r(
                "patroni_hook_runs_total",
                &[
                    ("action", "on_role_change"),
                    ("scope", "batman"),
                    ("exit_code", "75")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            r("patroni_hook_vip_held", &[("scope", "batman")]),
            Some(0.0)
        );
        assert_eq!(
            r(
                "patroni_hook_vip_changes_total",
                &[("scope", "batman"), ("change", "added")]
            ),
            Some(1.0)
        );
        assert_eq!(
            r(
                "patroni_hook_vip_changes_total",
                &[("scope", "batman"), ("change", "removed")]
            ),
            Some(1.0)
        );
        assert!(
            !back.render().contains("patroni_hook_vip_info"),
            "{}",
            back.render()
        );
        assert_eq!(
            r(
                "patroni_hook_last_run_exit_code",
                &[("action", "on_role_change"), ("scope", "batman")]
            ),
            Some(75.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let facts = Facts {
            pgbouncer: Some(PgbouncerFacts {
                targets: vec![(
                    "a\"b\\c\nd".into(),
                    "appdb".into(),
                    "198.51.100.12".into(),
                    5432,
                )],
                scopes: vec!["a\"b\\c\nd".into()],
                ..PgbouncerFacts::default()
            }),
            vip: None,
        };
        let mut s = Store::default();
        s.record(&run("reconcile", 0, &facts));
        let text = s.render();
        assert!(text.contains(r#"scope="a\"b\\c\nd""#), "{text}");
        assert_eq!(Store::parse(&text), s);
        assert_eq!(
            text.lines().filter(|l| l.contains("target_info{")).count(),
            1
        );
    }

    /// A run with no scope (reconcile on the PgBouncer host, which follows
    /// every configured cluster) carries no scope label, not scope="";
    /// a file written with scope="" reads back without it.
    #[test]
    fn a_run_without_a_scope_has_no_scope_label() {
        let facts = Facts::default();
        let mut s = Store::default();
        s.record(&Run {
            scope: "",
            ..run("reconcile", 0, &facts)
        });
        let text = s.render();
        assert!(!text.contains("scope="), "{text}");
        assert!(
            text.contains("patroni_hook_runs_total{action=\"reconcile\",exit_code=\"0\"} 1"),
            "{text}"
        );
        let old = "patroni_hook_runs_total{action=\"reconcile\",exit_code=\"0\",scope=\"\"} 4\n";
        let mut back = Store::parse(old);
        back.record(&Run {
            scope: "",
            ..run("reconcile", 0, &facts)
        });
        assert_eq!(
            back.get(
                "patroni_hook_runs_total",
                &[("action", "reconcile"), ("exit_code", "0")]
            ),
            Some(5.0)
        );
        assert!(!back.render().contains("scope="), "{}", back.render());
    }
}
