//! One function per command: callbacks, status, check-config; reconcile lives
//! in `reconcile.rs`. Each returns the process exit code.

use crate::apply::Report;
use crate::cli::{Invocation, Request};
use crate::config::{self, Config};
use crate::consul::Consul;
use crate::error::{Error, Kind};
use crate::plan::{self, Action, Role};
use crate::vip::{self, Mode};
use crate::{lock, log, note, reconcile};
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
        Request::Reconcile => ("reconcile", "-", None),
        Request::Status { .. } => ("status", "-", None),
        Request::CheckConfig => ("check-config", "-", None),
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
    let deadline = started + cfg.deadline;
    let run = async {
        match inv.request {
            Request::Callback { action, role, .. } => {
                callback(&cfg, action, role, scope.as_deref(), inv.dry_run, deadline).await
            }
            Request::Reconcile => reconcile::run(&cfg, inv.dry_run, deadline).await,
            Request::Status { json } => status(&cfg, scope.as_deref(), json, deadline).await,
            Request::CheckConfig => check_config(&cfg).await,
        }
    };
    // Backstop for the contract's bound: every call is already cut to the time
    // left, this catches anything that is not.
    let code = rt.block_on(async {
        match tokio::time::timeout(cfg.deadline, run).await {
            Ok(code) => code,
            Err(_) => {
                crate::warn_line!(
                    "deadline of {} reached; stopped, run again",
                    humantime::format_duration(cfg.deadline)
                );
                75
            }
        }
    });
    // Dropping a runtime waits for its blocking threads, and reqwest resolves
    // host names on one: a hung DNS lookup would outlive the deadline.
    rt.shutdown_background();
    crate::debug_line!("finished in {:?} with exit code {code}", started.elapsed());
    code
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
    action: Action,
    role: Role,
    scope: Option<&str>,
    dry_run: bool,
    deadline: Instant,
) -> i32 {
    let mut report = Report::default();
    let scope = match need_scope(scope) {
        Ok(s) => s,
        Err(e) => {
            report.fail(e);
            return report.exit_code();
        }
    };
    let Some(vip) = &cfg.vip else {
        note!("no vip section in {}; nothing to do", cfg.path.display());
        return 0;
    };
    let consul = Consul::new(&cfg.consul, deadline);
    let _lock = if dry_run {
        None
    } else {
        match lock::acquire(&cfg.lock_file, deadline) {
            Ok(l) => {
                // Tell a reconcile that read Consul before this callback that
                // its view is older than this decision.
                if let Err(e) = lock::bump_generation(&cfg.lock_file) {
                    crate::warn_line!("{e}");
                }
                Some(l)
            }
            Err(e) => {
                report.fail(e);
                return report.exit_code();
            }
        }
    };
    let want = plan::want(action, role, vip.standby_leader);
    vip::converge(
        cfg,
        vip,
        scope,
        &consul,
        Mode::Callback(want),
        None,
        dry_run,
        &mut report,
    )
    .await;
    report.exit_code()
}

/// `status`: what this host holds and what Consul says.
async fn status(cfg: &Config, scope: Option<&str>, json: bool, deadline: Instant) -> i32 {
    let mut out = serde_json::Map::new();
    let mut worst: Option<Kind> = None;
    let mut bump = |k: Kind| worst = Some(worst.map_or(k, |w: Kind| w.max(k)));
    out.insert("node".into(), cfg.name.clone().into());
    out.insert("config".into(), cfg.path.display().to_string().into());
    let consul = Consul::new(&cfg.consul, deadline);
    if let Some(scope) = scope {
        out.insert("scope".into(), scope.into());
        let keys = vip::Keys::new(&cfg.consul.namespace, scope);
        let entries = consul.list(&keys.prefix, false).await;
        match &entries {
            Ok(es) => {
                let leader = es
                    .iter()
                    .find(|e| e.key == keys.leader)
                    .map(|e| String::from_utf8_lossy(&e.value).to_string());
                out.insert("leader".into(), leader.into());
                let holder = es
                    .iter()
                    .find(|e| e.key == keys.holder)
                    .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.value).ok());
                out.insert(
                    "vip_holder".into(),
                    holder.unwrap_or(serde_json::Value::Null),
                );
            }
            Err(e) => {
                out.insert("consul_error".into(), e.to_string().into());
                bump(e.kind());
            }
        }
        if let Some(v) = &cfg.vip {
            let cached = lock::read_cached_vip(&lock::cache_path(&cfg.lock_file, scope));
            let from_consul = entries.as_ref().ok().and_then(|es| {
                es.iter()
                    .find(|e| e.key == keys.floating_ip)
                    .and_then(|e| config::parse_vip(&String::from_utf8_lossy(&e.value)).ok())
            });
            let addr = v.address.or(from_consul).or(cached);
            let mut vj = serde_json::Map::new();
            vj.insert("interface".into(), v.interface.clone().into());
            vj.insert("address".into(), addr.map(|a| a.to_string()).into());
            if let Some(a) = addr {
                let present = async {
                    let nl = crate::netlink::Netlink::open().await?;
                    nl.has_addr(&v.interface, a).await
                }
                .await;
                match present {
                    Ok(p) => {
                        vj.insert("present".into(), p.into());
                    }
                    Err(e) => {
                        vj.insert("error".into(), e.to_string().into());
                        bump(e.kind());
                    }
                }
            }
            out.insert("vip".into(), vj.into());
        }
    }
    if cfg.pgbouncer.is_some() {
        match reconcile::status(cfg, &consul).await {
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
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
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
                    println!("{indent}{k}:");
                    print_text(v, &format!("{indent}  "));
                }
                serde_json::Value::Array(items) => {
                    println!("{indent}{k}:");
                    for it in items {
                        match it {
                            serde_json::Value::Object(_) => {
                                println!("{indent}  -");
                                print_text(it, &format!("{indent}    "));
                            }
                            other => println!("{indent}  - {other}"),
                        }
                    }
                }
                serde_json::Value::String(s) => println!("{indent}{k}: {s}"),
                serde_json::Value::Null => println!("{indent}{k}: -"),
                other => println!("{indent}{k}: {other}"),
            }
        }
    }
}

/// `check-config`: the configuration parsed (or main already said why not);
/// print a summary and warnings about settings that hurt a switchover.
async fn check_config(cfg: &Config) -> i32 {
    println!("configuration OK: {}", cfg.path.display());
    println!("node name: {}", cfg.name);
    println!(
        "consul: {} (namespace {})",
        cfg.consul.url, cfg.consul.namespace
    );
    let mut warnings = Vec::new();
    if let Some(v) = &cfg.vip {
        println!(
            "vip: {} on {}",
            v.address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "from Consul floating-ip".into()),
            v.interface
        );
        match crate::netlink::Netlink::open().await {
            Ok(nl) => {
                if let Err(e) = nl.link_index(&v.interface).await {
                    warnings.push(format!("vip.interface: {e}"));
                }
            }
            Err(e) => warnings.push(format!("vip.interface not checked: {e}")),
        }
    }
    if let Some(lockdir) = cfg.lock_file.parent() {
        if !lockdir.is_dir() {
            warnings.push(format!(
                "lock_file: directory {} does not exist (the tmpfiles.d entry creates /run/patroni-hook)",
                lockdir.display()
            ));
        }
    }
    warnings.extend(reconcile::check(cfg));
    if cfg.vip.as_ref().is_some_and(|v| v.address.is_none()) {
        warnings.push(
            "vip.address is not set: the VIP comes from Consul's floating-ip; a node can remove it without Consul only once it has held it".to_string(),
        );
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    // The token and CA files are read when Consul is first called; check them now.
    let consul = Consul::new(&cfg.consul, Instant::now() + cfg.deadline);
    if let Some(e) = consul.setup_error() {
        eprintln!("patroni-hook: {e}");
        return e.exit_code();
    }
    0
}
