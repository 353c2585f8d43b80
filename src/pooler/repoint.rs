//! The PgBouncer host's entries: point the managed `[databases]` entries of
//! pgbouncer.ini at their targets (under the host lock, an operator's edit
//! never overwritten), and make PgBouncer load the file (RELOAD, or SIGHUP),
//! checked with `SHOW DATABASES`.
//!
//! Decisions are ordered by ticket, so a run that read Consul earlier never
//! overwrites the file a later run already pointed at a newer leader.

use crate::budget::Budget;
use crate::config::{Config, PgbouncerConfig};
use crate::error::Error;
use crate::pooler::admin::{self, Admin};
use crate::pooler::apply::Run;
use crate::pooler::ini::{self, Target};
use crate::report::Report;
use crate::state::{self, Ticket};
use crate::{note, out, pooler::file};
use std::time::{Duration, Instant};

/// The subject of the ticket ordering for pgbouncer.ini.
pub const SUBJECT: &str = "pgbouncer";

/// What `follow_leaders` did.
#[derive(Debug, Default)]
pub struct Followed {
    /// It rewrote pgbouncer.ini.
    pub rewrote: bool,
    /// PgBouncer serves the targets given: `SHOW DATABASES` shows them
    /// (without an admin console: the file is current and SIGHUP was sent
    /// after it, all that can be known).
    pub current: bool,
    /// Databases with no entry in the file.
    pub missing: Vec<String>,
}

/// Points the managed entries at `targets`, under the lock, and reloads
/// PgBouncer (after the lock) when the file changed, a reload is still
/// pending, or PgBouncer serves something else than the file says.
///
/// `rows`: PgBouncer's `SHOW DATABASES` as observed at the run's start,
/// when the file needs no rewrite the check of what PgBouncer serves.
pub async fn follow_leaders(
    run: &Run<'_>,
    targets: &[(String, Target)],
    rows: Option<&[admin::Database]>,
    report: &mut Report,
) -> Followed {
    let (cfg, p, ticket, budget) = (run.cfg, run.p, run.ticket, run.budget);
    let mut done = Followed::default();
    let local = run.local.lock().await;
    let Ok(lock) = lock_in_order(run, report) else {
        return done;
    };
    // Both go together: this run's other steps wait for `local`, other
    // runs for the flock.
    let lock = (lock, local);
    let pairs: Vec<(&str, &Target)> = targets.iter().map(|(d, t)| (d.as_str(), t)).collect();
    let Some((input, edited)) = read_and_edit(p, &pairs, report, &mut done) else {
        return done;
    };
    if run.dry_run {
        show(p, &input, &edited, targets);
        return done;
    }
    // The pending mark is set from the moment a new file is about to be
    // written until PgBouncer is seen to serve it (without an admin console:
    // until it took SIGHUP): a run killed in between, or a reload PgBouncer
    // did not take, is finished by the next run although the file is
    // already current.
    if edited.output == input {
        let pending = state::reload_pending(&cfg.lock_file);
        drop(lock);
        let present = present(&pairs, &edited);
        done.current = match pending {
            Some(seen) => {
                note!(
                    "a previous run rewrote {} but PgBouncer was not seen to load it; reloading",
                    p.ini.display()
                );
                reload(cfg, p, &present, Some(&seen), ticket, budget, report).await
            }
            None => settled(cfg, p, &present, rows, ticket, budget, report).await,
        };
        return done;
    }
    if let Err(e) = state::mark_reload_pending(&cfg.lock_file, ticket) {
        crate::warn_line!("{e}; a failed reload would not be retried");
    }
    let seen = state::reload_pending(&cfg.lock_file).unwrap_or_default();
    let edited = match write(p, &pairs, input, edited, report, &mut done) {
        Written::Done(edited) => edited,
        Written::PointsAlready(edited) => {
            // The edit points at the leaders itself; PgBouncer has not
            // loaded it yet.
            note!(
                "{} changed while it was being rewritten, and points at the leaders now; reloading",
                p.ini.display()
            );
            drop(lock);
            let present = present(&pairs, &edited);
            done.current = reload(cfg, p, &present, Some(&seen), ticket, budget, report).await;
            return done;
        }
        Written::Not => return done,
    };
    if let Err(e) = state::set_decided(&cfg.lock_file, SUBJECT, ticket) {
        crate::warn_line!("{e}");
    }
    note!(
        "rewrote {}: {}",
        p.ini.display(),
        summary(targets, &edited.changed)
    );
    done.rewrote = true;
    // The reload reads whatever file is there then; a run that rewrites it
    // meanwhile reloads after its own write. So the lock need not be held
    // across the admin console's answer.
    drop(lock);
    let present = present(&pairs, &edited);
    done.current = reload(cfg, p, &present, Some(&seen), ticket, budget, report).await;
    done
}

/// The host lock for the rewrite (none in a dry run), unless a run that
/// started after this one rewrote the file meanwhile: its version stands.
fn lock_in_order(run: &Run<'_>, report: &mut Report) -> Result<Option<state::HostLock>, ()> {
    if run.dry_run {
        return Ok(None);
    }
    let until = (Instant::now() + Duration::from_secs(1)).min(run.budget.end);
    let lock = state::acquire(&run.cfg.lock_file, until).map_err(|e| report.fail(e))?;
    if let Some(last) = state::last_decided(&run.cfg.lock_file, SUBJECT) {
        if last > run.ticket {
            note!(
                "a run that started {:?} after this one rewrote pgbouncer.ini meanwhile; its version stands",
                last.since(run.ticket)
            );
            return Err(());
        }
    }
    Ok(Some(lock))
}

/// Reads the file and points the managed entries at the targets; `None`
/// when there is nothing to write (reported).
fn read_and_edit(
    p: &PgbouncerConfig,
    pairs: &[(&str, &Target)],
    report: &mut Report,
    done: &mut Followed,
) -> Option<(Vec<u8>, ini::Edited)> {
    let input = match std::fs::read(&p.ini) {
        Ok(b) => b,
        Err(e) => {
            report.fail(Error::failed(format!("reading {}", p.ini.display()), e));
            return None;
        }
    };
    let edited = match ini::edit(&input, pairs) {
        Ok(e) => e,
        Err(e) => {
            report.fail(e.context(format!("{} kept as it is", p.ini.display())));
            return None;
        }
    };
    if !edited.missing.is_empty() {
        report.fail(Error::failed(
            format!("{}", p.ini.display()),
            format!("no [databases] entry named {}", edited.missing.join(", ")),
        ));
        done.missing = edited.missing.clone();
    }
    // A file without any of the managed entries gives nothing to follow the
    // leaders in: most likely an operator's editor caught between its
    // truncate and its write (O_TRUNC, then write). Nothing is written, and
    // PgBouncer is not reloaded onto it: 1.18 refuses an empty file ("main
    // section missing from config file") and a reload still owed to an
    // earlier run's write would be spent on it, cleared as done. A pending
    // reload stays pending for a run that finds the entries again.
    if none_found(&edited, pairs) {
        return None;
    }
    Some((input, edited))
}

/// A dry run's account of the rewrite and the reload.
fn show(p: &PgbouncerConfig, input: &[u8], edited: &ini::Edited, targets: &[(String, Target)]) {
    if edited.output == input {
        out::line(format_args!("pgbouncer.ini: nothing to do"));
        return;
    }
    out::line(format_args!(
        "would rewrite {}: {}",
        p.ini.display(),
        summary(targets, &edited.changed)
    ));
    out::line(format_args!(
        "would reload pgbouncer ({})",
        match &p.admin {
            Some(_) => "RELOAD on the admin console".to_string(),
            None => format!("SIGHUP to the pid in {}", p.pidfile.display()),
        }
    ));
}

/// How [`write`] ended.
enum Written {
    /// The file now holds this edit.
    Done(ini::Edited),
    /// An edit landed meanwhile that points at the leaders itself.
    PointsAlready(ini::Edited),
    /// Nothing written (reported).
    Not,
}

/// Replaces the file with the edit, under the caller's lock. An operator's
/// edit made since the read is never overwritten (file::write_atomic): the
/// file is read and edited again, three times at most.
fn write(
    p: &PgbouncerConfig,
    pairs: &[(&str, &Target)],
    input: Vec<u8>,
    edited: ini::Edited,
    report: &mut Report,
    done: &mut Followed,
) -> Written {
    let (mut input, mut edited) = (input, edited);
    for attempt in 1.. {
        match file::write_atomic(&p.ini, &input, &edited.output) {
            Ok(true) => break,
            Ok(false) if attempt < 3 => {
                note!(
                    "{} changed while it was being rewritten; editing it again",
                    p.ini.display()
                );
                let again = std::fs::read(&p.ini)
                    .map_err(|e| Error::failed(format!("reading {}", p.ini.display()), e))
                    .and_then(|i| ini::edit(&i, pairs).map(|e| (i, e)));
                match again {
                    Ok((_, e)) if none_found(&e, pairs) => {
                        report.fail(Error::failed(
                            format!("{}", p.ini.display()),
                            format!("no [databases] entry named {}", e.missing.join(", ")),
                        ));
                        done.missing = e.missing;
                        return Written::Not;
                    }
                    Ok((i, e)) if e.output == i => return Written::PointsAlready(e),
                    Ok((i, e)) => (input, edited) = (i, e),
                    Err(e) => {
                        report.fail(e.context(format!("{} kept as it is", p.ini.display())));
                        return Written::Not;
                    }
                }
            }
            Ok(false) => {
                report.fail(Error::temporary(
                    format!("{}", p.ini.display()),
                    "changed under every rewrite; left to the next run",
                ));
                return Written::Not;
            }
            Err(e) => {
                report.fail(e);
                return Written::Not;
            }
        }
    }
    Written::Done(edited)
}

/// The managed entries the file holds (a missing one is reported apart):
/// what PgBouncer must serve once it has loaded the file.
fn present<'a>(
    pairs: &[(&'a str, &'a Target)],
    edited: &ini::Edited,
) -> Vec<(&'a str, &'a Target)> {
    pairs
        .iter()
        .filter(|(d, _)| !edited.missing.iter().any(|m| m == d))
        .copied()
        .collect()
}

/// True when the edit found none of the managed entries in the file.
fn none_found(edited: &ini::Edited, pairs: &[(&str, &Target)]) -> bool {
    pairs
        .iter()
        .all(|(d, _)| edited.missing.iter().any(|m| m == d))
}

fn summary(targets: &[(String, Target)], changed: &[String]) -> String {
    targets
        .iter()
        .filter(|(d, _)| changed.contains(d))
        .map(|(d, t)| format!("{d} -> {}:{}", t.host, t.port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A managed database that PgBouncer does not serve from its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// The database.
    pub database: String,
    /// Where PgBouncer serves it from (`host:port`); `None`: it has no
    /// such database.
    pub serves: Option<String>,
    /// Where the file points it.
    pub target: Target,
}

impl std::fmt::Display for Unserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.serves {
            Some(s) => write!(f, "{} from {s}", self.database),
            None => write!(f, "{} from nowhere (no such database)", self.database),
        }?;
        write!(f, ", not {}:{}", self.target.host, self.target.port)
    }
}

/// PURE: the databases of `targets` that PgBouncer, by its `SHOW DATABASES`
/// rows, does not serve from their target (host and port as the file has
/// them: PgBouncer shows the entry's values as written, unquoted). Empty
/// when PgBouncer has loaded every one of them.
pub fn unserved(rows: &[admin::Database], targets: &[(&str, &Target)]) -> Vec<Unserved> {
    let mut out: Vec<Unserved> = Vec::new();
    for (db, t) in targets {
        if out.iter().any(|u| u.database == *db) {
            continue;
        }
        let row = rows.iter().find(|r| r.name == *db);
        let ok = row
            .is_some_and(|r| r.host.as_deref() == Some(t.host.as_str()) && r.port == Some(t.port));
        if !ok {
            out.push(Unserved {
                database: db.to_string(),
                serves: row.map(|r| {
                    format!(
                        "{}:{}",
                        r.host.as_deref().unwrap_or("(a Unix socket)"),
                        r.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                    )
                }),
                target: (*t).clone(),
            });
        }
    }
    out
}

fn listed(u: &[Unserved]) -> String {
    u.iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Kept back from the run's end for SIGHUP, the fallback of RELOAD.
const SIGHUP_MARGIN: Duration = Duration::from_millis(50);
/// How long RELOAD may take.
const RELOAD_WAIT: Duration = Duration::from_secs(2);
/// How long `SHOW DATABASES` may take; after SIGHUP (handled in
/// PgBouncer's own time) how long it is asked again until it shows the
/// file's entries.
const CHECK_WAIT: Duration = Duration::from_secs(1);
/// Between two looks at `SHOW DATABASES` after SIGHUP.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How many reloads one run makes when PgBouncer does not take them.
const RELOAD_TRIES: u32 = 3;
/// Left of the run at least to try a reload again.
const RETRY_NEEDS: Duration = Duration::from_millis(300);

/// The file already points at the targets and no reload is owed: with an
/// admin console, `SHOW DATABASES` says whether PgBouncer serves them (a
/// reload it did not take, by a run that could not check, leaves a current
/// file and old entries), and a PgBouncer that does not is reloaded. True
/// when PgBouncer serves the targets; without a console the file is all
/// there is to go by.
async fn settled(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    rows: Option<&[admin::Database]>,
    ticket: Ticket,
    budget: &Budget,
    report: &mut Report,
) -> bool {
    let Some(a) = &p.admin else {
        note!("{} already points at the leaders", p.ini.display());
        return true;
    };
    let until = (Instant::now() + CHECK_WAIT).min(budget.end);
    let unserved = match rows {
        Some(rows) => Ok(unserved(rows, targets)),
        None => ask(a, targets, until, false).await,
    };
    match unserved {
        Ok(u) if u.is_empty() => {
            note!("{} already points at the leaders", p.ini.display());
            true
        }
        Ok(u) => {
            note!(
                "{} points at the leaders, but PgBouncer still serves {}; reloading",
                p.ini.display(),
                listed(&u)
            );
            reload(cfg, p, targets, None, ticket, budget, report).await
        }
        Err(e) => {
            crate::warn_line!(
                "{} points at the leaders; whether PgBouncer serves them is not known: {e}",
                p.ini.display()
            );
            false
        }
    }
}

/// Asks the admin console which of `targets` PgBouncer does not serve;
/// with `again`, asks until it serves them all or `until`.
async fn ask(
    a: &crate::config::AdminConfig,
    targets: &[(&str, &Target)],
    until: Instant,
    again: bool,
) -> Result<Vec<Unserved>, Error> {
    let admin = Admin::connect(a, until).await?;
    loop {
        let u = unserved(&admin.databases(until).await?, targets);
        if u.is_empty() || !again || Instant::now() + CHECK_EVERY >= until {
            return Ok(u);
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// One reload, and then what PgBouncer serves: how it was made, and the
/// databases of `targets` it does not serve from them (`Err` inside: the
/// console could not be asked). `Err`: not even SIGHUP could be sent.
async fn reload_once(
    a: &crate::config::AdminConfig,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    budget: &Budget,
) -> Result<(String, Result<Vec<Unserved>, Error>), Error> {
    let until = (Instant::now() + RELOAD_WAIT)
        .min(budget.end.checked_sub(SIGHUP_MARGIN).unwrap_or(budget.end));
    let admin = if until <= Instant::now() {
        Err(Error::temporary(
            "RELOAD on the admin console",
            "no time left in the run",
        ))
    } else {
        Admin::connect(a, until).await
    };
    let fallback = match admin {
        Ok(admin) => match admin.command("RELOAD", until).await {
            Ok(true) => {
                // 1.18 loads the file before it answers (admin.c
                // admin_cmd_reload calls load_config): one look tells.
                let until = (Instant::now() + CHECK_WAIT).min(budget.end);
                let rows = admin.databases(until).await;
                return Ok((
                    "RELOAD on the admin console".into(),
                    rows.map(|r| unserved(&r, targets)),
                ));
            }
            Ok(false) => "RELOAD on the admin console did not answer in time".to_string(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    crate::warn_line!("{fallback}; sending SIGHUP");
    let pid = file::reload(&p.pidfile)?;
    let until = (Instant::now() + CHECK_WAIT).min(budget.end);
    Ok((
        format!("SIGHUP to pid {pid}"),
        ask(a, targets, until, true).await,
    ))
}

/// True when `file` holds every one of `targets` at its target.
fn points_at(file: &[u8], targets: &[(&str, &Target)]) -> bool {
    ini::edit(file, targets).is_ok_and(|e| e.output == file && e.missing.is_empty())
}

/// Makes PgBouncer load the file, and with an admin console checks that it
/// did. The reload is RELOAD on the console, or SIGHUP when there is none
/// or it does not answer in time. PgBouncer 1.18 answers RELOAD, and takes
/// SIGHUP, also when it cannot load the file: it logs "config file loading
/// failed" and keeps its old entries (only 1.25's RELOAD reports the
/// error); an error in the file, or an operator's edit caught between its
/// truncate and its write. So a reload is done when `SHOW DATABASES` shows
/// every entry of `targets` at its target. One that is not is tried again
/// a few times in the run (an edit takes milliseconds), then reported with
/// the mark `seen` kept: exit 1 when the file stayed the same throughout
/// (PgBouncer refuses this very file: someone must mend it; its log says
/// why), 75 when it changed meanwhile (an edit under way: the next run
/// tries again). The mark is cleared (unless another run set it anew) and
/// true returned only when PgBouncer is seen to serve the targets, or,
/// without a console, once SIGHUP was sent: nothing more can be known then.
async fn reload(
    cfg: &Config,
    p: &PgbouncerConfig,
    targets: &[(&str, &Target)],
    seen: Option<&str>,
    ticket: Ticket,
    budget: &Budget,
    report: &mut Report,
) -> bool {
    let clear = || {
        if let Some(seen) = seen {
            let until = (Instant::now() + Duration::from_millis(200)).min(budget.end);
            state::clear_reload_pending(&cfg.lock_file, seen, until);
        }
    };
    let Some(a) = &p.admin else {
        return match file::reload(&p.pidfile) {
            Ok(pid) => {
                note!(
                    "reloaded pgbouncer (SIGHUP to pid {pid}; without pgbouncer.admin nothing says whether it loaded the file)"
                );
                clear();
                true
            }
            Err(e) => {
                report.fail(e);
                false
            }
        };
    };
    let ini = p.ini.display();
    let first = std::fs::read(&p.ini).ok();
    let superseded = || {
        let newer = state::last_decided(&cfg.lock_file, SUBJECT).is_some_and(|l| l > ticket);
        if newer {
            note!("a newer run rewrote {ini} meanwhile; its reload stands");
        }
        newer
    };
    let mut last: Vec<Unserved> = Vec::new();
    for attempt in 1..=RELOAD_TRIES {
        if attempt > 1 {
            // An operator's in-place edit (truncate, then write) is over
            // in milliseconds: the file is read again after a pause, and
            // reloaded only if it still points at the leaders.
            let pause = Duration::from_millis(100 * u64::from(attempt - 1));
            crate::warn_line!(
                "PgBouncer did not take the reload: it still serves {}; trying again in {pause:?}",
                listed(&last)
            );
            tokio::time::sleep(pause).await;
            if superseded() {
                return false;
            }
            if !std::fs::read(&p.ini).is_ok_and(|f| points_at(&f, targets)) {
                report.fail(Error::temporary(
                    format!("{ini}"),
                    format!(
                        "PgBouncer still serves {}, and the file changed meanwhile: it no longer points at the leaders; left to the next run",
                        listed(&last)
                    ),
                ));
                return false;
            }
        }
        let (how, checked) = match reload_once(a, p, targets, budget).await {
            Ok(r) => r,
            Err(e) => {
                report.fail(e);
                return false;
            }
        };
        last = match checked {
            Ok(u) if u.is_empty() => {
                let serves: Vec<String> = targets
                    .iter()
                    .map(|(d, t)| format!("{d} from {}:{}", t.host, t.port))
                    .collect();
                note!(
                    "reloaded pgbouncer ({how}); it serves {}",
                    serves.join(", ")
                );
                clear();
                return true;
            }
            Ok(u) => u,
            Err(e) => {
                report.fail(Error::temporary(
                    format!("reloaded pgbouncer ({how})"),
                    format!(
                        "whether it loaded {ini} is not known ({e}); the next run checks again"
                    ),
                ));
                return false;
            }
        };
        if superseded() {
            return false;
        }
        let next_pause = Duration::from_millis(100 * u64::from(attempt));
        if Instant::now() + next_pause + RETRY_NEEDS >= budget.end {
            break;
        }
    }
    let why = format!(
        "PgBouncer did not load it: it still serves {} (its log says why); the next run reloads again",
        listed(&last)
    );
    report.fail(if std::fs::read(&p.ini).ok() == first {
        Error::failed(format!("{ini}"), why)
    } else {
        Error::temporary(
            format!("{ini}"),
            format!("changed while PgBouncer was being reloaded; {why}"),
        )
    });
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, host: Option<&str>, port: Option<u16>) -> admin::Database {
        admin::Database {
            name: name.into(),
            host: host.map(Into::into),
            port,
            paused: false,
        }
    }

    /// Whether PgBouncer serves the file's entries is read from
    /// `SHOW DATABASES`, never from the file: host and port must both match.
    #[test]
    fn unserved_compares_show_databases_rows_with_the_targets() {
        let b = Target {
            host: "198.51.100.12".into(),
            port: 5433,
        };
        let named = Target {
            host: "pg2.example.net".into(),
            port: 5432,
        };
        let targets = [("appdb", &b), ("reports", &named)];
        let rows = [
            row("pgbouncer", None, Some(6432)),
            row("appdb", Some("198.51.100.12"), Some(5433)),
            row("reports", Some("pg2.example.net"), Some(5432)),
            row("other", Some("198.51.100.11"), Some(5432)),
        ];
        assert_eq!(unserved(&rows, &targets), vec![]);
        // A reload not taken: the old host, or the old port.
        let old = [
            row("appdb", Some("198.51.100.11"), Some(5433)),
            row("reports", Some("pg2.example.net"), Some(5431)),
        ];
        let u = unserved(&old, &targets);
        assert_eq!(
            u.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            [
                "appdb from 198.51.100.11:5433, not 198.51.100.12:5433",
                "reports from pg2.example.net:5431, not pg2.example.net:5432"
            ]
        );
        // No such database (a file PgBouncer never loaded), a Unix socket,
        // a port it did not show.
        let odd = [
            row("reports", None, Some(5432)),
            row("appdb", Some("198.51.100.12"), None),
        ];
        assert_eq!(
            unserved(&odd, &targets[..1])[0].to_string(),
            "appdb from 198.51.100.12:?, not 198.51.100.12:5433"
        );
        assert_eq!(
            unserved(&odd[..0], &targets[..1])[0].serves,
            None,
            "no such database"
        );
        assert_eq!(
            unserved(&odd, &targets[1..])[0].serves.as_deref(),
            Some("(a Unix socket):5432")
        );
        // A name managed twice is reported once; nothing managed, nothing owed.
        assert_eq!(unserved(&[], &[("appdb", &b), ("appdb", &b)]).len(), 1);
        assert_eq!(unserved(&old, &[]), vec![]);
    }
}
