//! One function per command: callbacks, status, check-config; reconcile lives
//! in `reconcile.rs`. Each returns the process exit code.

use crate::budget::{self, Budget};
use crate::cli::{Invocation, Request};
use crate::config::{self, Config};
use crate::dcs::keys::{LeaderKey, ScopeKeys, ScopeView};
use crate::dcs::Dcs;
use crate::error::{Error, Kind};
use crate::node::plan::{self, Action, Role, Trigger};
use crate::report::Report;
use crate::{
    log, metrics, node::before_stop, node::vip, note, out, pooler::host, reconcile, state,
};
use std::time::Instant;

/// Loads the configuration, sets up logging and runs the request. Returns the exit code.
pub fn main(inv: Invocation) -> i32 {
    let path = config::resolve_path(inv.config.as_deref());
    let (action, role, scope_arg) = match &inv.request {
        Request::Callback {
            action,
            role,
            scope,
        } => (action.as_str(), role.as_str(), scope.clone()),
        Request::BeforeStop { scope } => ("before-stop", "-", scope.clone()),
        Request::Reconcile => ("reconcile", "-", None),
        Request::Status { .. } => ("status", "-", None),
        Request::CheckConfig { .. } => ("check-config", "-", None),
    };
    let cfg = match config::load(&path, &config::Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("patroni-hook: {e}");
            return e.exit_code();
        }
    };
    let scope = scope_arg.or_else(|| cfg.scope.clone());
    log::init(
        inv.verbose,
        log::Fields {
            action: action.to_string(),
            role: role.to_string(),
            scope: scope.clone().unwrap_or_else(|| "-".into()),
        },
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patroni-hook: starting the async runtime: {e}");
            return 1;
        }
    };
    let started = Instant::now();
    let budget = Budget::new(started, cfg.deadline);
    let records = !inv.dry_run
        && matches!(
            inv.request,
            Request::Callback { .. } | Request::BeforeStop { .. } | Request::Reconcile
        );
    let run = async {
        // Built inside the runtime: reqwest's client needs one.
        let consul = Dcs::new(&cfg.dcs, &cfg.lock_file, budget.consul_until);
        match inv.request {
            Request::Callback { action, role, .. } => Outcome::Run(Box::new(
                callback(
                    &cfg,
                    &consul,
                    action,
                    role,
                    scope.as_deref(),
                    inv.dry_run,
                    budget,
                )
                .await,
            )),
            Request::BeforeStop { .. } => Outcome::Run(Box::new(
                before_stop::run(&cfg, &consul, scope.as_deref(), inv.dry_run, budget).await,
            )),
            Request::Reconcile => Outcome::Run(Box::new(
                reconcile::run(&cfg, &consul, budget, inv.dry_run).await,
            )),
            Request::Status { json } => {
                Outcome::Code(status(&cfg, &consul, scope.as_deref(), json).await)
            }
            Request::CheckConfig { online } => {
                let code = check_config(&cfg, &consul).await;
                // What the token may do is worth knowing whatever else the
                // file lacks; only a token or CA that cannot be read stops it.
                if online && consul.setup_error().is_none() {
                    let access = check_access(&cfg, &consul).await;
                    Outcome::Code(worse(code, access))
                } else {
                    Outcome::Code(code)
                }
            }
        }
    };
    // Backstop for the contract's bound: every call is already cut to the time
    // left, this catches anything that is not.
    let outcome = rt.block_on(async {
        match tokio::time::timeout(cfg.deadline, run).await {
            Ok(o) => o,
            Err(_) => {
                crate::warn_line!(
                    "deadline of {} reached; stopped, run again",
                    humantime::format_duration(cfg.deadline)
                );
                Outcome::Code(75)
            }
        }
    });
    // Dropping a runtime waits for its blocking threads, and reqwest resolves
    // host names on one: a hung DNS lookup would outlive the deadline.
    rt.shutdown_background();
    let code = match &outcome {
        Outcome::Run(r) => r.exit_code(),
        Outcome::Code(c) => *c,
    };
    // Runs that converge something leave their metrics (status and
    // check-config only look, and a dry run changes nothing).
    if let (Some(path), true) = (&cfg.metrics, records) {
        let facts = match &outcome {
            Outcome::Run(r) => r.facts.clone(),
            Outcome::Code(_) => metrics::Facts::default(),
        };
        write_metrics(&cfg, path, action, scope.as_deref(), code, started, &facts);
    }
    crate::debug_line!("finished in {:?} with exit code {code}", started.elapsed());
    code
}

/// The worse of two exit codes, as a run's worst kind decides its code.
fn worse(a: i32, b: i32) -> i32 {
    let kind = |c: i32| {
        Kind::ALL
            .into_iter()
            .find(|k| crate::error::exit_code(Some(*k)) == c)
    };
    crate::error::exit_code(kind(a).max(kind(b)))
}

/// What a command returns: a run that converged something (with its
/// facts, for the metrics), or only an exit code.
enum Outcome {
    Run(Box<Report>),
    Code(i32),
}

/// Records this run in the metrics textfile, under a lock of its own
/// (counters are read back and incremented): it never waits behind a run
/// that holds the host lock across its work, and waits for another run's
/// metrics write only as long as this run's bound allows (its deadline;
/// before_stop.wait for before-stop, which holds Patroni's stop).
fn write_metrics(
    cfg: &Config,
    path: &std::path::Path,
    action: &str,
    scope: Option<&str>,
    code: i32,
    started: Instant,
    facts: &metrics::Facts,
) {
    // before-stop holds Patroni's stop: its bound is before_stop.wait.
    let bound = match action {
        "before-stop" => cfg.before_stop.wait.min(cfg.deadline),
        _ => cfg.deadline,
    };
    let until = started + bound.saturating_sub(std::time::Duration::from_millis(5));
    let _lock = match state::acquire(&metrics::lock_path(&cfg.lock_file), until) {
        Ok(l) => l,
        Err(e) => return crate::warn_line!("{e}; metrics not written"),
    };
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let run = metrics::Run {
        action,
        scope: scope.unwrap_or(""),
        exit_code: code,
        duration: started.elapsed(),
        ended,
        facts,
    };
    if let Err(e) = metrics::update(path, &run) {
        crate::warn_line!("{e}");
    }
}

fn need_scope(scope: Option<&str>) -> Result<&str, Error> {
    scope.ok_or_else(|| {
        Error::usage(
            "no scope: give it on the command line (--scope) or set `scope` in the configuration",
        )
    })
}

async fn callback(
    cfg: &Config,
    consul: &Dcs,
    action: Action,
    role: Role,
    scope: Option<&str>,
    dry_run: bool,
    budget: Budget,
) -> Report {
    let mut report = Report::default();
    let scope = match need_scope(scope) {
        Ok(s) => s,
        Err(e) => {
            report.fail(e);
            return report;
        }
    };
    let want = plan::want(
        action,
        role,
        cfg.vip.as_ref().is_some_and(|v| v.standby_leader),
    );
    // A leader's callback ends the pause its before-stop asked for (a
    // restart, a cancelled switchover); the VIP's hold does it in
    // vip::converge, and a leader whose VIP is released (a standby leader
    // without vip.standby_leader) or that has none does it here.
    let leads = plan::leads(action, role);
    let Some(v) = &cfg.vip else {
        if leads && !dry_run {
            before_stop::withdraw(cfg, consul, scope, budget).await;
        } else {
            note!("no vip section in {}; nothing to do", cfg.path.display());
        }
        return report;
    };
    let run = vip::Run {
        cfg,
        vip: v,
        scope,
        consul,
        budget,
        dry_run,
    };
    vip::converge(&run, Trigger::Callback(want), &mut report).await;
    if leads && want != plan::Want::Hold && !dry_run {
        before_stop::withdraw(cfg, consul, scope, budget).await;
    }
    report
}

/// `status`: what this host holds and what Consul says.
async fn status(cfg: &Config, consul: &Dcs, scope: Option<&str>, json: bool) -> i32 {
    let mut out = serde_json::Map::new();
    let mut worst: Option<Kind> = None;
    let mut bump = |k: Kind| worst = Some(worst.map_or(k, |w: Kind| w.max(k)));
    out.insert("node".into(), cfg.name.clone().into());
    out.insert("config".into(), cfg.path.display().to_string().into());
    if let Some(scope) = scope {
        out.insert("scope".into(), scope.into());
        let keys = ScopeKeys::new(cfg.dcs.namespace(), scope);
        let view = match consul.list_scope(&keys.prefix, &keys.leader, false).await {
            Ok(es) => Some(ScopeView::read(&es, &keys)),
            Err(e) => {
                out.insert("dcs_error".into(), e.to_string().into());
                bump(e.kind());
                None
            }
        };
        if let Some(v) = &view {
            let leader = match &v.leader {
                LeaderKey::Name(n) => n.clone().into(),
                LeaderKey::Absent => serde_json::Value::Null,
                LeaderKey::Invalid(why) => format!("invalid: {why}").into(),
            };
            out.insert("leader".into(), leader);
            let holder = match &v.holder {
                crate::dcs::keys::Holder::Record { record, .. } => {
                    serde_json::to_value(record).unwrap_or_default()
                }
                crate::dcs::keys::Holder::Absent => serde_json::Value::Null,
                crate::dcs::keys::Holder::Unparsable { .. } => "unparsable".into(),
            };
            out.insert("vip_holder".into(), holder);
        }
        if let Some(vc) = &cfg.vip {
            let mut vj = serde_json::Map::new();
            vj.insert("interface".into(), vc.interface.clone().into());
            let from_consul = view
                .as_ref()
                .and_then(|v| v.floating_ip.as_ref())
                .and_then(|r| r.as_ref().ok().copied());
            let addr = vc.address.or(from_consul);
            vj.insert("address".into(), addr.map(|a| a.to_string()).into());
            let owned = state::read_owned(&cfg.lock_file, scope, &vc.interface);
            let local = async {
                let nl = crate::node::netlink::Netlink::open().await?;
                let mut found = Vec::new();
                let mut names = vec![vc.interface.clone()];
                if let Ok(o) = &owned {
                    names.extend(o.iter().map(|x| x.interface.clone()));
                }
                names.dedup();
                for n in names {
                    found.extend(nl.addresses(&n).await?.unwrap_or_default());
                }
                Ok::<_, Error>(found)
            }
            .await;
            match local {
                Ok(present) => {
                    if let Some(a) = addr {
                        let here = present
                            .iter()
                            .any(|p| p.interface == vc.interface && p.net.addr() == a.addr());
                        vj.insert("present".into(), here.into());
                    }
                    let mut ours: Vec<serde_json::Value> = Vec::new();
                    for o in owned.as_ref().map(|o| o.as_slice()).unwrap_or(&[]) {
                        let on = present
                            .iter()
                            .any(|p| p.interface == o.interface && p.net.addr() == o.net.addr());
                        ours.push(serde_json::json!({
                            "address": o.net.to_string(), "interface": o.interface, "present": on,
                        }));
                    }
                    for p in present.iter().filter(|p| p.marked) {
                        let listed = owned.as_ref().is_ok_and(|o| {
                            o.iter()
                                .any(|x| x.interface == p.interface && x.net.addr() == p.net.addr())
                        });
                        if !listed {
                            ours.push(serde_json::json!({
                                "address": p.net.to_string(), "interface": p.interface, "present": true,
                            }));
                        }
                    }
                    vj.insert("owned".into(), ours.into());
                }
                Err(e) => {
                    vj.insert("error".into(), e.to_string().into());
                    bump(e.kind());
                }
            }
            if let Err(e) = owned {
                vj.insert("state_error".into(), e.to_string().into());
            }
            out.insert("vip".into(), vj.into());
        }
    }
    if cfg.pgbouncer.is_some() {
        match host::status(cfg, consul).await {
            Ok(v) => {
                out.insert("pgbouncer".into(), v);
            }
            Err(e) => {
                out.insert("pgbouncer_error".into(), e.to_string().into());
                bump(e.kind());
            }
        }
    }
    let doc = serde_json::Value::Object(out);
    if json {
        out::line(format_args!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        ));
    } else {
        print_text(&doc, "");
    }
    crate::error::exit_code(worst)
}

fn print_text(v: &serde_json::Value, indent: &str) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            match v {
                serde_json::Value::Object(_) => {
                    out::line(format_args!("{indent}{k}:"));
                    print_text(v, &format!("{indent}  "));
                }
                serde_json::Value::Array(items) => {
                    out::line(format_args!("{indent}{k}:"));
                    for it in items {
                        match it {
                            serde_json::Value::Object(_) => {
                                out::line(format_args!("{indent}  -"));
                                print_text(it, &format!("{indent}    "));
                            }
                            serde_json::Value::String(s) => {
                                out::line(format_args!("{indent}  - {}", s.escape_debug()))
                            }
                            other => out::line(format_args!("{indent}  - {other}")),
                        }
                    }
                }
                // Values come from Consul: escaped, so none starts a line
                // of its own or sends a terminal escape.
                serde_json::Value::String(s) => {
                    out::line(format_args!("{indent}{k}: {}", s.escape_debug()))
                }
                serde_json::Value::Null => out::line(format_args!("{indent}{k}: -")),
                other => out::line(format_args!("{indent}{k}: {other}")),
            }
        }
    }
}

/// `check-config --online`: asks Consul, key by key, whether the token may
/// do what this host's commands will do, without changing any key (a read,
/// or a check-and-set no key can match). One line per key; exit 1 when the
/// token lacks any, 75 when Consul cannot be asked now.
async fn check_access(cfg: &Config, consul: &Dcs) -> i32 {
    consul.login_afresh();
    let db_scope = cfg.scope.as_deref();
    let pgb_scopes: Vec<&str> = cfg
        .pgbouncer
        .as_ref()
        .map(|p| p.clusters.iter().map(|c| c.scope.as_str()).collect())
        .unwrap_or_default();
    let needed = crate::dcs::keys::needed_access(
        cfg.dcs.namespace(),
        &cfg.name,
        db_scope,
        cfg.vip.is_some(),
        &pgb_scopes,
    );
    // The callbacks get their scope from Patroni; without `scope` in the
    // file their keys cannot be named here, and saying nothing of them
    // would read as a pass.
    let tag = cfg.dcs.section();
    let mut worst: Option<Kind> = None;
    if db_scope.is_none() && (cfg.vip.is_some() || pgb_scopes.is_empty()) {
        out::line(format_args!(
            "{tag} access: not checked: {} sets no `scope`, so the keys this node's callbacks use (<namespace>/<scope>/...) cannot be named; set `scope:` (Patroni passes the same one to the callbacks)",
            cfg.path.display()
        ));
        worst = Some(Kind::Usage);
    }
    for n in &needed {
        let result = match n.access {
            crate::dcs::keys::Access::Read => consul.check_readable(&n.key).await,
            crate::dcs::keys::Access::Write => consul.check_writable(&n.key).await,
        };
        match &result {
            Ok(()) => out::line(format_args!(
                "{tag} access: {} {}: ok ({})",
                n.access, n.key, n.why
            )),
            // No answer is no verdict: "NO" is for what Consul refused.
            Err(e) if e.kind() == Kind::Temporary => out::line(format_args!(
                "{tag} access: {} {}: not checked ({}): {e}",
                n.access, n.key, n.why
            )),
            Err(e) => out::line(format_args!(
                "{tag} access: {} {}: NO ({}): {e}",
                n.access, n.key, n.why
            )),
        }
        if let Err(e) = &result {
            worst = Some(worst.map_or(e.kind(), |w| w.max(e.kind())));
        }
    }
    // A scope with nothing in it is what every run would then report
    // ("nothing at all in Consul under this scope"): most often a mistyped
    // namespace or scope, or a cluster Patroni has not bootstrapped yet.
    let mut scopes: Vec<&str> = db_scope.into_iter().chain(pgb_scopes).collect();
    scopes.sort_unstable();
    scopes.dedup();
    for scope in scopes {
        let keys = ScopeKeys::new(cfg.dcs.namespace(), scope);
        if let Ok(es) = consul.list_scope(&keys.prefix, &keys.leader, false).await {
            if es.is_empty() {
                out::line(format_args!(
                    "warning: nothing at all in {} under {} (check {tag}.namespace {:?} and the scope {scope:?}, or has Patroni not bootstrapped this cluster yet?)",
                    cfg.dcs.name(), keys.prefix, cfg.dcs.namespace()
                ));
            }
        }
    }
    crate::error::exit_code(worst)
}

/// `check-config`: the configuration parsed (or main already said why not);
/// everything any command would refuse in it, each naming the command
/// (exit 2, as that command would); a summary and warnings about settings
/// that hurt a switchover.
async fn check_config(cfg: &Config, consul: &Dcs) -> i32 {
    let mut refused: Vec<String> = config::refusals(cfg)
        .iter()
        .map(|r| format!("{}: {}; {}", r.key, r.why, r.commands))
        .collect();
    let mut warnings = Vec::new();
    let share = budget::consul_share(cfg.deadline);
    if cfg.dcs.timeout() > share {
        warnings.push(format!(
            "{}.timeout: {} does not fit in deadline {}: a {} call is cut to {} so that the local steps keep {} (a promotion against a hanging {} still adds the VIP)",
            cfg.dcs.section(),
            humantime::format_duration(cfg.dcs.timeout()),
            humantime::format_duration(cfg.deadline),
            cfg.dcs.name(),
            humantime::format_duration(share),
            humantime::format_duration(budget::reserve(cfg.deadline)),
            cfg.dcs.name(),
        ));
    }
    if let Some(v) = &cfg.vip {
        match crate::node::netlink::Netlink::open().await {
            Ok(nl) => {
                // Every hold would fail on it (exit 1), and a release would
                // have nothing to release from.
                if let Err(e) = nl.link_index(&v.interface).await {
                    refused.push(format!(
                        "vip.interface: {e}: the callbacks and reconcile cannot add the VIP to it"
                    ));
                }
            }
            Err(e) => warnings.push(format!("vip.interface not checked: {e}")),
        }
    }
    match cfg.lock_file.parent() {
        Some(lockdir) if !lockdir.is_dir() => warnings.push(format!(
            "lock_file: directory {} does not exist (the tmpfiles.d entry creates /run/patroni-hook)",
            lockdir.display()
        )),
        _ => {
            // The lock as this user would take it; a lock file that is a
            // directory, or that this user cannot open, stops every hold.
            if let Err(e) = state::probe(&cfg.lock_file) {
                if e.kind() != Kind::Temporary {
                    refused.push(format!("lock_file: {e}: every command takes it"));
                }
            }
        }
    }
    warnings.extend(host::check(cfg));
    if let Some(t) = &cfg.metrics {
        let dir = t.parent().unwrap_or(std::path::Path::new("/"));
        let writable = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
        if !writable {
            warnings.push(format!(
                "metrics.textfile: directory {} is not writable by this user; runs will not leave their metrics",
                dir.display()
            ));
        }
    }
    if cfg.vip.as_ref().is_some_and(|v| v.address.is_none()) {
        warnings.push(
            "vip.address is not set: the VIP comes from the DCS's floating-ip key; a node can remove it without the DCS only once it has held it".to_string(),
        );
    }
    // The token and CA files are read when Consul is first called; check them now.
    let setup = consul.setup_error();
    if refused.is_empty() && setup.is_none() {
        out::line(format_args!("configuration OK: {}", cfg.path.display()));
    }
    out::line(format_args!("node name: {}", cfg.name));
    out::line(format_args!(
        "{}: {} (namespace {})",
        cfg.dcs.section(),
        cfg.dcs.urls(),
        cfg.dcs.namespace()
    ));
    if let Some(v) = &cfg.vip {
        out::line(format_args!(
            "vip: {} on {}",
            v.address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "from the DCS floating-ip key".into()),
            v.interface
        ));
    }
    for w in &warnings {
        out::line(format_args!("warning: {w}"));
    }
    for r in &refused {
        eprintln!("patroni-hook: {}: {r}", cfg.path.display());
    }
    let mut worst = (!refused.is_empty()).then_some(Kind::Usage);
    if let Some(e) = setup {
        eprintln!("patroni-hook: {e}");
        worst = worst.max(Some(e.kind()));
    }
    crate::error::exit_code(worst)
}
