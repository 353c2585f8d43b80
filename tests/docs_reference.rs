//! docs/reference.md against the code, so that the reference cannot drift:
//!
//! - the configuration keys: the parser's own list of fields (serde names
//!   them when it refuses an unknown one), and each default in the table
//!   against what the parser makes of the key left out;
//! - the exit codes and which wins, against `src/error.rs`;
//! - the metrics and their labels, against what `src/metrics.rs` writes;
//! - the state files, against the path functions of `src/state.rs` and
//!   `src/metrics.rs`;
//! - the layout, against the tree;
//! - the command line, against what examples/gen-docs.rs generates from
//!   `src/cli.rs`.
//!
//! Each comparison is a function of (table, code) that lists the
//! differences; the unit tests at the end show each one failing on a wrong
//! table.

use patroni_hook::config::{self, Env};
use patroni_hook::error::{exit_code, Kind};
use patroni_hook::metrics::{Facts, PgbouncerFacts, Run, Store, VipFacts};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn reference() -> String {
    std::fs::read_to_string(Path::new(REPO).join("docs/reference.md")).unwrap()
}

/// The rows (cells, trimmed) of the first table after the heading `heading`
/// (its text, without the #s), header and separator left out.
fn table(md: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = md.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == heading)
        .unwrap_or_else(|| panic!("no heading {heading:?} in the reference"));
    let rows: Vec<Vec<String>> = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "no table under {heading:?}");
    rows.into_iter().skip(2).collect()
}

/// `` `x` `` -> `x`; a cell that is not one code span -> None.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

// ---- configuration ------------------------------------------------------

fn env() -> Env {
    Env {
        hostname: "pg1".into(),
        consul_http_token: None,
    }
}

fn parse(yaml: &str) -> Result<config::Config, String> {
    config::from_str(yaml, Path::new("/etc/ph.yml"), &env(), &|_: &Path| {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    })
    .map_err(|e| e.to_string())
}

/// The least YAML each section needs to parse; `pgbouncer.admin` and
/// `pgbouncer.clusters[]` live in the pgbouncer section's.
fn base(section: &str) -> serde_yaml::Value {
    let text = match section {
        "" => "{}",
        "consul" => "consul: {}",
        "etcd3" => "dcs: etcd3\netcd3: {}",
        "vip" => "scope: s\nvip: {interface: lo}",
        "before_stop" => "before_stop: {}",
        "metrics" => "metrics: {textfile: /var/lib/node/ph.prom}",
        "pgbouncer" | "pgbouncer.clusters[]" => {
            "pgbouncer: {ini: /etc/p.ini, pidfile: /run/p.pid, clusters: [{scope: s, databases: [app]}]}"
        }
        "pgbouncer.admin" => {
            "pgbouncer: {ini: /etc/p.ini, pidfile: /run/p.pid, clusters: [{scope: s, databases: [app]}], admin: {}}"
        }
        other => panic!("no base for section {other}"),
    };
    serde_yaml::from_str(text).unwrap()
}

/// The mapping at a section's path in `v` (`pgbouncer.clusters[]` is the
/// first cluster).
fn at<'a>(v: &'a mut serde_yaml::Value, section: &str) -> &'a mut serde_yaml::Mapping {
    let mut cur = v;
    for part in section.split('.').filter(|p| !p.is_empty()) {
        cur = match part.strip_suffix("[]") {
            Some(list) => &mut cur[list][0],
            None => &mut cur[part],
        };
    }
    cur.as_mapping_mut().unwrap()
}

/// (section, leaf) of a dotted key: `pgbouncer.admin.port` -> (`pgbouncer.admin`, `port`).
fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once('.').unwrap_or(("", key))
}

/// Every key the parser knows, dotted, from the list serde gives when it
/// refuses an unknown field in each section.
fn code_keys() -> BTreeSet<String> {
    let sections = [
        "",
        "consul",
        "etcd3",
        "vip",
        "before_stop",
        "metrics",
        "pgbouncer",
        "pgbouncer.admin",
        "pgbouncer.clusters[]",
    ];
    let mut keys = BTreeSet::new();
    for section in sections {
        let mut v = base(section);
        at(&mut v, section).insert("zz_unknown".into(), 1.into());
        let err = parse(&serde_yaml::to_string(&v).unwrap()).unwrap_err();
        let expected = err
            .split_once("expected")
            .unwrap_or_else(|| panic!("{section}: {err}"))
            .1;
        for (i, name) in expected.split('`').enumerate() {
            if i % 2 == 1 {
                keys.insert(if section.is_empty() {
                    name.to_string()
                } else {
                    format!("{section}.{name}")
                });
            }
        }
    }
    keys
}

/// The table's keys against the parser's: every key the parser takes is in
/// the table, except sections whose keys are listed one by one; every key
/// in the table is one the parser takes.
fn key_drift(table_keys: &BTreeSet<String>, code: &BTreeSet<String>) -> Vec<String> {
    let is_section = |k: &String| {
        code.iter()
            .any(|c| c.starts_with(&format!("{k}.")) || c.starts_with(&format!("{k}[].")))
    };
    let mut bad = Vec::new();
    for k in code {
        if !table_keys.contains(k) && !is_section(k) {
            bad.push(format!("{k}: taken by the parser, not in the reference"));
        }
    }
    for k in table_keys {
        if !code.contains(k) {
            bad.push(format!("{k}: in the reference, not taken by the parser"));
        }
    }
    bad
}

/// A default in the table against the parser: the key written with the
/// documented default parses to the same configuration as the key left out;
/// a key documented as required is refused when left out.
fn default_drift(key: &str, default: &str) -> Option<String> {
    let (section, leaf) = split_key(key);
    let section_base = match section {
        "pgbouncer" if leaf == "admin" => return None,
        _ => section,
    };
    let mut without = base(section_base);
    if default == "required" {
        at(&mut without, section_base).remove(leaf);
        return match parse(&serde_yaml::to_string(&without).unwrap()) {
            Err(e) if e.contains(leaf) => None,
            Err(e) => Some(format!("{key}: left out, refused without naming it: {e}")),
            Ok(_) => Some(format!(
                "{key}: documented as required, but accepted without it"
            )),
        };
    }
    let value = code(default)?;
    at(&mut without, section_base).remove(leaf);
    let mut with = without.clone();
    let v: serde_yaml::Value = serde_yaml::from_str(value).unwrap();
    at(&mut with, section_base).insert(leaf.into(), v);
    let a = parse(&serde_yaml::to_string(&without).unwrap());
    let b = parse(&serde_yaml::to_string(&with).unwrap());
    match (a, b) {
        (Ok(a), Ok(b)) if format!("{a:?}") == format!("{b:?}") => None,
        (Ok(_), Ok(_)) => Some(format!(
            "{key}: default {value} is not what the parser uses when it is left out"
        )),
        (a, b) => Some(format!("{key}: {a:?} / {b:?}")),
    }
}

fn config_drift(rows: &[Vec<String>]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut keys = BTreeSet::new();
    for row in rows {
        let Some(key) = code(&row[0]) else {
            bad.push(format!("{}: not a `key`", row[0]));
            continue;
        };
        keys.insert(key.to_string());
        bad.extend(default_drift(key, &row[1]));
    }
    bad.extend(key_drift(&keys, &code_keys()));
    bad
}

#[test]
fn configuration_keys_and_defaults_are_the_parsers() {
    let bad = config_drift(&table(&reference(), "Configuration"));
    assert!(
        bad.is_empty(),
        "docs/reference.md, Configuration:\n{}",
        bad.join("\n")
    );
}

// ---- exit codes -----------------------------------------------------------

fn exit_drift(rows: &[Vec<String>]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut kinds: BTreeMap<i32, Option<Kind>> = Kind::ALL
        .iter()
        .map(|k| (exit_code(Some(*k)), Some(*k)))
        .collect();
    kinds.insert(exit_code(None), None);
    let documented: BTreeSet<i32> = rows.iter().filter_map(|r| r[0].parse().ok()).collect();
    let real: BTreeSet<i32> = kinds.keys().copied().collect();
    if documented != real {
        bad.push(format!("codes {documented:?}, the code has {real:?}"));
    }
    for row in rows {
        let Ok(code) = row[0].parse::<i32>() else {
            bad.push(format!("{}: not a code", row[0]));
            continue;
        };
        let Some(Some(kind)) = kinds.get(&code) else {
            if !row[2].is_empty() {
                bad.push(format!("{code} wins over nothing"));
            }
            continue;
        };
        let said: BTreeSet<i32> = row[2]
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let real: BTreeSet<i32> = Kind::ALL
            .iter()
            .filter(|k| *k < kind)
            .map(|k| exit_code(Some(*k)))
            .collect();
        if said != real {
            bad.push(format!(
                "{code} wins over {said:?}; in the code over {real:?}"
            ));
        }
    }
    bad
}

#[test]
fn exit_codes_and_which_wins_are_the_codes() {
    let bad = exit_drift(&table(&reference(), "Exit codes"));
    assert!(
        bad.is_empty(),
        "docs/reference.md, Exit codes:\n{}",
        bad.join("\n")
    );
}

// ---- metrics --------------------------------------------------------------

/// Every metric a run can write, with its label names: a store that
/// recorded a run that did everything.
fn written_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let facts = Facts {
        vip: Some(VipFacts {
            scope: "s".into(),
            held: Some(Some(patroni_hook::node::plan::Owned {
                net: "198.51.100.100/24".parse().unwrap(),
                interface: "eth1".into(),
                added: true,
            })),
            added: 1,
            removed: 1,
        }),
        pgbouncer: Some(PgbouncerFacts {
            rewrote: true,
            targets: vec![("s".into(), "app".into(), "198.51.100.11".into(), 5432)],
            wanted: vec![("s".into(), "198.51.100.11".into(), 5432)],
            paused: vec!["s".into()],
            resumed: vec![("s".into(), Duration::from_secs(1))],
            paused_now: vec!["s".into()],
            scopes: vec!["s".into()],
            unrecorded: vec![("s".into(), 1)],
        }),
    };
    let mut store = Store::default();
    store.record(&Run {
        action: "reconcile",
        scope: "s",
        exit_code: 0,
        duration: Duration::from_millis(5),
        ended: 1.0,
        facts: &facts,
    });
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in store.render().lines().filter(|l| !l.starts_with('#')) {
        let head = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = head.split_once('{').unwrap_or((head, ""));
        let names = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()));
        out.entry(name.to_string()).or_default().extend(names);
    }
    out
}

fn metrics_drift(
    rows: &[Vec<String>],
    written: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut documented = BTreeMap::new();
    for row in rows {
        let Some(name) = code(&row[0]) else {
            bad.push(format!("{}: not one `metric`", row[0]));
            continue;
        };
        let labels: BTreeSet<String> = row[1]
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        documented.insert(name.to_string(), labels);
    }
    for (name, labels) in written {
        match documented.get(name) {
            None => bad.push(format!("{name}: written, not in the reference")),
            Some(l) if l != labels => bad.push(format!(
                "{name}: labels {l:?} in the reference, {labels:?} written"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !written.contains_key(*n)) {
        bad.push(format!("{name}: in the reference, never written"));
    }
    bad
}

#[test]
fn metrics_and_labels_are_what_a_run_writes() {
    let bad = metrics_drift(&table(&reference(), "Metrics"), &written_metrics());
    assert!(
        bad.is_empty(),
        "docs/reference.md, Metrics:\n{}",
        bad.join("\n")
    );
}

// ---- state files ----------------------------------------------------------

/// The state files' names for the default lock file, from the functions
/// that make them, with the placeholder `<scope>`.
fn state_files() -> BTreeSet<String> {
    use patroni_hook::state;
    let lock = Path::new(config::DEFAULT_LOCK_FILE);
    let s = "<scope>";
    [
        lock.to_path_buf(),
        patroni_hook::metrics::lock_path(lock),
        state::owned_path(lock, s),
        state::seen_vip_path(lock, s),
        state::decided_path(lock, &format!("vip-{s}")),
        state::decided_path(lock, "pgbouncer"),
        state::reload_pending_path(lock),
        state::pause_path(lock, s),
        state::etcd_token_path(lock, "<user>"),
    ]
    .iter()
    .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
    .collect()
}

/// The path functions the state files come from: a new one must be added
/// to [`state_files`] (and so to the reference).
fn path_functions() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in ["src/state.rs", "src/metrics.rs"] {
        let text = std::fs::read_to_string(Path::new(REPO).join(f)).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub fn ") {
                let name = rest.split('(').next().unwrap();
                if name.ends_with("_path") {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

fn state_drift(rows: &[Vec<String>], real: &BTreeSet<String>) -> Vec<String> {
    let documented: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| code(&r[0]).map(String::from))
        .collect();
    let mut bad: Vec<String> = real
        .difference(&documented)
        .map(|f| format!("{f}: written, not in the reference"))
        .collect();
    bad.extend(
        documented
            .difference(real)
            .map(|f| format!("{f}: in the reference, never written")),
    );
    bad
}

#[test]
fn state_files_are_the_ones_the_code_names() {
    assert_eq!(
        path_functions(),
        [
            "decided_path",
            "etcd_token_path",
            "lock_path",
            "owned_path",
            "pause_path",
            "reload_pending_path",
            "seen_vip_path"
        ]
        .map(String::from)
        .into(),
        "a new state file: add it to state_files() here and to the reference's table"
    );
    let bad = state_drift(&table(&reference(), "State files"), &state_files());
    assert!(
        bad.is_empty(),
        "docs/reference.md, State files:\n{}",
        bad.join("\n")
    );
}

// ---- layout ---------------------------------------------------------------

/// The layout table against the tree under `repo`: every path it names
/// exists, and every file and directory directly under src/ is named.
fn layout_drift(rows: &[Vec<String>], repo: &Path) -> Vec<String> {
    let named: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| code(&r[0]).map(String::from))
        .collect();
    let mut bad: Vec<String> = named
        .iter()
        .filter(|p| !repo.join(p).exists())
        .map(|p| format!("{p}: no such path"))
        .collect();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(repo.join("src"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        let shown = if e.is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        if (e.is_dir() || name.ends_with(".rs")) && !named.contains(&shown) {
            bad.push(format!("{shown}: in the tree, not in the layout"));
        }
    }
    bad
}

#[test]
fn the_layout_is_the_tree() {
    let repo = Path::new(REPO);
    let bad = layout_drift(&table(&reference(), "Layout"), repo);
    assert!(
        bad.is_empty(),
        "docs/reference.md, Layout:\n{}",
        bad.join("\n")
    );
    // "Each source file opens with a comment saying what it owns."
    fn walk(dir: &Path, bad: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, bad);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                if !text.starts_with("//!") {
                    bad.push(p.display().to_string());
                }
            }
        }
    }
    let mut undocumented = Vec::new();
    walk(&repo.join("src"), &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "source files that do not open with //!: {undocumented:?}"
    );
}

// ---- command line -----------------------------------------------------------

/// target/<profile>/examples/gen-docs, built by a plain `cargo test` and by
/// `cargo build --all-targets` (scripts/test.sh); `cargo test --test
/// docs_reference` alone does not rebuild it: build it first
/// (`cargo build --release --example gen-docs`).
fn gen_docs() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/gen-docs"))
        .unwrap()
}

#[test]
fn the_command_line_section_is_generated_from_clap() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(gen_docs())
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "gen-docs: {o:?}");
    let generated = std::fs::read_to_string(out.path().join("command-line.md")).unwrap();
    let begin = generated.lines().next().unwrap();
    let end = generated.trim_end().lines().last().unwrap();
    let md = reference();
    let (Some(b), Some(e)) = (md.find(begin), md.find(end)) else {
        panic!("docs/reference.md has no generated command-line section ({begin})");
    };
    let committed = &md[b..e + end.len()];
    assert!(
        committed == generated.trim_end(),
        "docs/reference.md's command line differs from src/cli.rs; run: \
         cargo run --release --example gen-docs -- --reference docs/reference.md"
    );
}

// ---- the comparisons fail on wrong tables -----------------------------------

fn rows(md: &str, heading: &str) -> Vec<Vec<String>> {
    table(md, heading)
}

#[test]
fn each_comparison_fails_on_a_wrong_table() {
    let md = reference();

    // A wrong default, a key the parser does not take, a key left out.
    let mut config_rows = rows(&md, "Configuration");
    let deadline = config_rows
        .iter_mut()
        .find(|r| r[0] == "`deadline`")
        .unwrap();
    deadline[1] = "`6s`".into();
    config_rows.push(vec!["`vip.label`".into(), "none".into(), String::new()]);
    config_rows.retain(|r| r[0] != "`consul.timeout`");
    let bad = config_drift(&config_rows);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad.iter().any(|b| b.starts_with("deadline: default 6s")),
        "{bad:#?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.starts_with("vip.label: in the reference")),
        "{bad:#?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.starts_with("consul.timeout: taken by the parser")),
        "{bad:#?}"
    );
    // A key documented as required that is not.
    let mut required = rows(&md, "Configuration");
    required
        .iter_mut()
        .find(|r| r[0] == "`vip.address`")
        .unwrap()[1] = "required".into();
    assert_eq!(config_drift(&required).len(), 1);

    // 75 said to win over 1; a code that does not exist.
    let mut exit_rows = rows(&md, "Exit codes");
    exit_rows.iter_mut().find(|r| r[0] == "75").unwrap()[2] = "1".into();
    exit_rows.push(vec!["3".into(), "x".into(), String::new()]);
    let bad = exit_drift(&exit_rows);
    assert_eq!(bad.len(), 2, "{bad:#?}");

    // A label not written, and a metric left out.
    let mut metric_rows = rows(&md, "Metrics");
    metric_rows[0][1] = "action".into();
    metric_rows.retain(|r| r[0] != "`patroni_hook_vip_held`");
    let bad = metrics_drift(&metric_rows, &written_metrics());
    assert_eq!(bad.len(), 2, "{bad:#?}");

    // reload-pending named after the whole lock file name.
    let mut state_rows = rows(&md, "State files");
    state_rows
        .iter_mut()
        .find(|r| r[0] == "`patroni-hook.reload-pending`")
        .unwrap()[0] = "`patroni-hook.lock.reload-pending`".into();
    let bad = state_drift(&state_rows, &state_files());
    assert_eq!(bad.len(), 2, "{bad:#?}");

    // A file gone from the tree, and one the layout does not name.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("src/pooler")).unwrap();
    for f in ["src/main.rs", "src/new.rs"] {
        std::fs::write(tree.path().join(f), "//! x\n").unwrap();
    }
    let layout_rows = vec![
        vec!["`src/main.rs`".into(), String::new()],
        vec!["`src/pooler/`".into(), String::new()],
        vec!["`src/gone.rs`".into(), String::new()],
    ];
    let bad = layout_drift(&layout_rows, tree.path());
    assert_eq!(
        bad,
        [
            "src/gone.rs: no such path",
            "src/new.rs: in the tree, not in the layout"
        ]
    );
}
