//! The command line: Patroni's `ACTION ROLE SCOPE` form appended after options,
//! the friendly forms for people, and `--reconcile` as an alias.
//!
//! Patroni runs `<configured command> <action> <role> <scope>`
//! (patroni/postgresql/callback_executor.py), so options always come before the
//! action and must be accepted there.

use crate::error::{Error, Result};
use crate::node::plan::{Action, Role};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// patroni-hook: moves the floating IP with Patroni's callbacks and points
/// PgBouncer at the leader, from Consul or etcd, with no daemon.
#[derive(Debug, Parser)]
#[command(name = "patroni-hook", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 converged, 1 a step failed or the fence refused, \
2 usage or configuration error, 75 temporary (the DCS unreachable or no leader)."
)]
pub struct Cli {
    /// Configuration file [default: $PATRONI_HOOK_CONFIG, then /etc/patroni-hook/config.yml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print what would be done, one line per step, and change nothing
    /// (accepted by every command; status and check-config change nothing anyway)
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// More log detail (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Same as the `reconcile` command
    #[arg(long)]
    pub reconcile: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A role as Patroni passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The primary.
    Primary,
    /// Old name of primary.
    Master,
    /// Just promoted; treated as primary.
    Promoted,
    /// Leader of a standby cluster.
    #[value(name = "standby_leader")]
    StandbyLeader,
    /// A replica.
    Replica,
    /// Just demoted.
    Demoted,
    /// Not initialised yet.
    Uninitialized,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Primary => Role::Primary,
            RoleArg::Master => Role::Master,
            RoleArg::Promoted => Role::Promoted,
            RoleArg::StandbyLeader => Role::StandbyLeader,
            RoleArg::Replica => Role::Replica,
            RoleArg::Demoted => Role::Demoted,
            RoleArg::Uninitialized => Role::Uninitialized,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Patroni callback: PostgreSQL started
    #[command(name = "on_start")]
    OnStart {
        /// The role Patroni passes
        role: RoleArg,
        /// The Patroni scope (the cluster's name)
        scope: String,
    },
    /// Patroni callback: PostgreSQL stopped
    #[command(name = "on_stop")]
    OnStop {
        /// The role Patroni passes
        role: RoleArg,
        /// The Patroni scope (the cluster's name)
        scope: String,
    },
    /// Patroni callback: the role changed
    #[command(name = "on_role_change")]
    OnRoleChange {
        /// The role Patroni passes
        role: RoleArg,
        /// The Patroni scope (the cluster's name)
        scope: String,
    },
    /// Patroni callback: PostgreSQL restarted
    #[command(name = "on_restart")]
    OnRestart {
        /// The role Patroni passes
        role: RoleArg,
        /// The Patroni scope (the cluster's name)
        scope: String,
    },
    /// Patroni callback: configuration reloaded
    #[command(name = "on_reload")]
    OnReload {
        /// The role Patroni passes
        role: RoleArg,
        /// The Patroni scope (the cluster's name)
        scope: String,
    },
    /// Run the role-change callback by hand, e.g. `role-change master`
    RoleChange {
        /// The role to act as
        role: RoleArg,
        /// The Patroni scope [default: `scope` in the configuration]
        #[arg(long)]
        scope: Option<String>,
    },
    /// Run the start callback by hand
    Start {
        /// The role to act as
        role: RoleArg,
        /// The Patroni scope [default: `scope` in the configuration]
        #[arg(long)]
        scope: Option<String>,
    },
    /// Run the stop callback by hand
    Stop {
        /// The role to act as (a stop releases the VIP whatever the role)
        role: Option<RoleArg>,
        /// The Patroni scope [default: `scope` in the configuration]
        #[arg(long)]
        scope: Option<String>,
    },
    /// Patroni's before_stop on a database node: ask the PgBouncer hosts to
    /// pause this cluster's databases, and wait (bounded) until they have
    #[command(name = "before-stop")]
    BeforeStop {
        /// The Patroni scope [default: `scope` in the configuration]
        #[arg(long)]
        scope: Option<String>,
    },
    /// Converge the VIP and pgbouncer.ini to what the DCS says
    Reconcile,
    /// Show what this host holds and what the DCS says
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print warnings
    CheckConfig {
        /// Also ask the DCS whether this host may read and write every key it needs
        /// this host's commands use (no key is changed)
        #[arg(long)]
        online: bool,
    },
}

/// What to do, after the command line is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A Patroni callback, from Patroni or by hand.
    Callback {
        action: Action,
        role: Role,
        scope: Option<String>,
    },
    /// Ask the PgBouncer hosts to pause, before PostgreSQL stops.
    BeforeStop { scope: Option<String> },
    /// Converge from the DCS.
    Reconcile,
    /// Report state.
    Status { json: bool },
    /// Validate configuration; `online`: and this host's access in the DCS.
    CheckConfig { online: bool },
}

/// A resolved invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `--config`, if given.
    pub config: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `-v` count.
    pub verbose: u8,
    /// What to do.
    pub request: Request,
}

/// Parses argv; help and version come back as `Ok(Err(text))` to be printed
/// with exit 0; a usage error is one line.
pub fn parse<I, T>(args: I) -> Result<std::result::Result<Invocation, String>>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    Ok(Err(e.render().to_string()))
                }
                _ => Err(Error::usage(one_line(&e.render().to_string()))),
            };
        }
    };
    resolve(cli).map(Ok)
}

fn resolve(cli: Cli) -> Result<Invocation> {
    let scoped = |s: String| Some(s);
    let request = match (cli.reconcile, cli.command) {
        (true, None) | (false, Some(Command::Reconcile)) => Request::Reconcile,
        (true, Some(_)) => {
            return Err(Error::usage(
                "--reconcile is an alias of the reconcile command and takes no other command",
            ))
        }
        (false, None) => {
            return Err(Error::usage(
                "missing command: expected a Patroni callback (on_start, on_stop, on_role_change, on_restart, on_reload), before-stop, role-change, start, stop, reconcile, status or check-config; see --help",
            ))
        }
        (false, Some(cmd)) => match cmd {
            Command::OnStart { role, scope } => callback(Action::Start, role, scoped(scope)),
            Command::OnStop { role, scope } => callback(Action::Stop, role, scoped(scope)),
            Command::OnRoleChange { role, scope } => {
                callback(Action::RoleChange, role, scoped(scope))
            }
            Command::OnRestart { role, scope } => callback(Action::Restart, role, scoped(scope)),
            Command::OnReload { role, scope } => callback(Action::Reload, role, scoped(scope)),
            Command::RoleChange { role, scope } => callback(Action::RoleChange, role, scope),
            Command::Start { role, scope } => callback(Action::Start, role, scope),
            Command::Stop { role, scope } => {
                callback(Action::Stop, role.unwrap_or(RoleArg::Replica), scope)
            }
            Command::BeforeStop { scope } => Request::BeforeStop { scope },
            Command::Reconcile => Request::Reconcile,
            Command::Status { json } => Request::Status { json },
            Command::CheckConfig { online } => Request::CheckConfig { online },
        },
    };
    if let Request::Callback { scope: Some(s), .. } | Request::BeforeStop { scope: Some(s) } =
        &request
    {
        if s.is_empty() || s.contains('/') || s.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::usage(format!(
                "invalid scope {s:?}: expected a Patroni scope name"
            )));
        }
    }
    Ok(Invocation {
        config: cli.config,
        dry_run: cli.dry_run,
        verbose: cli.verbose,
        request,
    })
}

fn callback(action: Action, role: RoleArg, scope: Option<String>) -> Request {
    Request::Callback {
        action,
        role: role.into(),
        scope,
    }
}

/// clap renders several lines (error, usage, hint); keep the error and the
/// possible values, drop usage and hints, join into one line.
fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        parts.push(l.trim_start_matches("error: ").to_string());
    }
    let mut s = parts.join(" ");
    if s.is_empty() {
        s = "invalid command line; see --help".to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(args: &[&str]) -> Invocation {
        let mut v = vec!["patroni-hook"];
        v.extend_from_slice(args);
        parse(v).unwrap().unwrap()
    }

    fn err(args: &[&str]) -> Error {
        let mut v = vec!["patroni-hook"];
        v.extend_from_slice(args);
        parse(v).unwrap_err()
    }

    #[test]
    fn patroni_form_after_options() {
        let i = ok(&["--config", "/c.yml", "on_role_change", "master", "batman"]);
        assert_eq!(i.config.as_deref(), Some(std::path::Path::new("/c.yml")));
        assert_eq!(
            i.request,
            Request::Callback {
                action: Action::RoleChange,
                role: Role::Master,
                scope: Some("batman".into())
            }
        );
        let i = ok(&["-vv", "--dry-run", "on_stop", "standby_leader", "b"]);
        assert!(i.dry_run);
        assert_eq!(i.verbose, 2);
        assert!(matches!(
            i.request,
            Request::Callback {
                action: Action::Stop,
                role: Role::StandbyLeader,
                ..
            }
        ));
    }

    #[test]
    fn friendly_forms() {
        let i = ok(&["role-change", "primary"]);
        assert_eq!(
            i.request,
            Request::Callback {
                action: Action::RoleChange,
                role: Role::Primary,
                scope: None
            }
        );
        let i = ok(&["stop"]);
        assert!(matches!(
            i.request,
            Request::Callback {
                action: Action::Stop,
                ..
            }
        ));
        let i = ok(&["start", "replica", "--scope", "x"]);
        assert!(matches!(i.request, Request::Callback { scope: Some(ref s), .. } if s == "x"));
        assert_eq!(
            ok(&["status", "--json"]).request,
            Request::Status { json: true }
        );
        assert_eq!(
            ok(&["check-config"]).request,
            Request::CheckConfig { online: false }
        );
        assert_eq!(
            ok(&["check-config", "--online"]).request,
            Request::CheckConfig { online: true }
        );
    }

    #[test]
    fn reconcile_and_its_alias() {
        assert_eq!(ok(&["reconcile"]).request, Request::Reconcile);
        assert_eq!(ok(&["--reconcile"]).request, Request::Reconcile);
        let i = ok(&["--config", "/x", "--reconcile", "--dry-run"]);
        assert_eq!(i.request, Request::Reconcile);
        assert!(i.dry_run);
        assert_eq!(err(&["--reconcile", "status"]).exit_code(), 2);
    }

    #[test]
    fn every_role_patroni_passes_is_accepted() {
        for r in [
            "primary",
            "master",
            "promoted",
            "standby_leader",
            "replica",
            "demoted",
            "uninitialized",
        ] {
            ok(&["on_role_change", r, "s"]);
        }
    }

    #[test]
    fn usage_errors_are_one_line_and_exit_2() {
        for args in [
            &["on_role_change", "boss", "s"][..],
            &["on_role_change", "primary"][..],
            &["frobnicate"][..],
            &[][..],
            &["on_start", "primary", "a/b"][..],
        ] {
            let e = err(args);
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(err(&["on_role_change", "boss", "s"])
            .to_string()
            .contains("boss"));
    }
}
