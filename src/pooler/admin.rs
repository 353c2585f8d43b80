//! The only module that talks to PgBouncer's admin console: PAUSE, RESUME,
//! RELOAD, SHOW DATABASES and SET over the PostgreSQL wire protocol (tokio-postgres, simple
//! query protocol: the console refuses the extended one, and takes one
//! command per query).
//!
//! A PAUSE that does not complete in time cannot be cancelled (a cancel
//! request resumes only a global pause, admin.c admin_handle_cancel), and the
//! database stays paused: the connection is dropped and RESUME is sent on a
//! fresh one. RESUME of a database that is not paused answers 08P01 ("is not
//! paused"), which is success here.

use crate::config::{AdminConfig, AdminHost};
use crate::error::Error;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// How a PAUSE ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// Paused: no server connection of the database is in use.
    Done,
    /// Not complete by the time given; the database stays paused until a
    /// RESUME.
    TimedOut,
    /// PgBouncer answered with an error; the text is its message.
    Refused(String),
}

/// One row of `SHOW DATABASES`: what PgBouncer has loaded for a database.
/// In 1.18 its columns are name, host, port, database, force_user, ...,
/// paused, disabled; `host` is NULL for a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The entry's name.
    pub name: String,
    /// The host it connects to, as the entry says it (no quotes).
    pub host: Option<String>,
    /// The port it connects to.
    pub port: Option<u16>,
    /// Paused by PAUSE of this database.
    pub paused: bool,
}

impl Database {
    /// PURE: a row from its columns as text (the console speaks the simple
    /// query protocol only); a port that is not a number reads as none.
    pub fn from_columns(
        name: &str,
        host: Option<&str>,
        port: Option<&str>,
        paused: Option<&str>,
    ) -> Database {
        Database {
            name: name.to_string(),
            host: host.filter(|h| !h.is_empty()).map(String::from),
            port: port.and_then(|p| p.trim().parse().ok()),
            paused: paused == Some("1"),
        }
    }
}

/// A connection to the admin console.
pub struct Admin {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
    what: String,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Admin {
    /// Connects, waiting at most until `until`.
    pub async fn connect(cfg: &AdminConfig, until: Instant) -> Result<Admin, Error> {
        let what = match &cfg.host {
            AdminHost::Socket(d) => {
                format!("PgBouncer's admin console at {}:{}", d.display(), cfg.port)
            }
            AdminHost::Tcp(h) => format!("PgBouncer's admin console at {h}:{}", cfg.port),
        };
        // Peer authentication on the socket maps the process's user, looked
        // up once per run (a directory service may be slow; a run may
        // connect four times).
        static PROCESS_USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let user = cfg.user.clone().unwrap_or_else(|| {
            PROCESS_USER
                .get_or_init(|| {
                    nix::unistd::User::from_uid(nix::unistd::geteuid())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                        .unwrap_or_else(|| "postgres".into())
                })
                .clone()
        });
        let mut pg = tokio_postgres::Config::new();
        match &cfg.host {
            AdminHost::Socket(d) => pg.host_path(d),
            AdminHost::Tcp(h) => pg.host(h),
        };
        pg.port(cfg.port)
            .user(&user)
            .dbname("pgbouncer")
            .application_name("patroni-hook");
        if let Some(f) = &cfg.password_file {
            let pw = std::fs::read_to_string(f).map_err(|e| {
                Error::failed(
                    format!("reading pgbouncer.admin.password_file {}", f.display()),
                    e,
                )
            })?;
            pg.password(pw.trim_end_matches(['\n', '\r']));
        }
        let left = until.saturating_duration_since(Instant::now());
        let connected = tokio::time::timeout(left, pg.connect(NoTls)).await;
        let (client, connection) = match connected {
            Err(_) => {
                return Err(Error::temporary(
                    format!("connecting to {what}"),
                    "no answer in time",
                ))
            }
            Ok(Err(e)) => return Err(Error::failed(format!("connecting to {what}"), cause(&e))),
            Ok(Ok(c)) => c,
        };
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Admin { client, task, what })
    }

    /// Runs one console command, waiting at most until `until`; `Ok(false)`
    /// when it did not complete in time (the connection is then unusable).
    pub async fn command(&self, sql: &str, until: Instant) -> Result<bool, Error> {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.client.simple_query(sql)).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(Error::failed(format!("{sql} on {}", self.what), cause(&e))),
        }
    }

    /// PAUSE one database, waiting until `until` for every server
    /// connection of it to be released.
    pub async fn pause(&self, db: &str, until: Instant) -> Result<Pause, Error> {
        let sql = format!("PAUSE {}", ident(db));
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.client.simple_query(&sql)).await {
            Err(_) => Ok(Pause::TimedOut),
            Ok(Ok(_)) => Ok(Pause::Done),
            // An answer at once, such as "already suspended/paused" under a
            // global PAUSE or SUSPEND (admin.c): PgBouncer said no.
            Ok(Err(e)) if e.as_db_error().is_some() => Ok(Pause::Refused(cause(&e))),
            Ok(Err(e)) => Err(Error::failed(format!("{sql} on {}", self.what), cause(&e))),
        }
    }

    /// What PgBouncer serves each database from, and which it has paused
    /// (`SHOW DATABASES`).
    pub async fn databases(&self, until: Instant) -> Result<Vec<Database>, Error> {
        let left = until.saturating_duration_since(Instant::now());
        let rows =
            match tokio::time::timeout(left, self.client.simple_query("SHOW DATABASES")).await {
                Err(_) => {
                    return Err(Error::temporary(
                        format!("SHOW DATABASES on {}", self.what),
                        "no answer in time",
                    ))
                }
                Ok(Err(e)) => {
                    return Err(Error::failed(
                        format!("SHOW DATABASES on {}", self.what),
                        cause(&e),
                    ))
                }
                Ok(Ok(rows)) => rows,
            };
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .filter_map(|r| {
                let col = |c: &str| r.try_get(c).ok().flatten();
                let name = col("name")?;
                Some(Database::from_columns(
                    name,
                    col("host"),
                    col("port"),
                    col("paused"),
                ))
            })
            .collect())
    }

    /// The databases PgBouncer has paused (`SHOW DATABASES`, its `paused`
    /// column; a global PAUSE does not show there).
    pub async fn paused_databases(&self, until: Instant) -> Result<Vec<String>, Error> {
        Ok(self
            .databases(until)
            .await?
            .into_iter()
            .filter(|d| d.paused)
            .map(|d| d.name)
            .collect())
    }

    /// RESUME one database; "not paused" is success.
    pub async fn resume(&self, db: &str, until: Instant) -> Result<(), Error> {
        let sql = format!("RESUME {}", ident(db));
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.client.simple_query(&sql)).await {
            Err(_) => Err(Error::temporary(
                format!("{sql} on {}", self.what),
                "no answer in time",
            )),
            Ok(Ok(_)) => Ok(()),
            // PgBouncer no longer has the database (dropped from the file
            // while paused): nothing of it is paused any more either.
            Ok(Err(e))
                if e.as_db_error().is_some_and(|d| {
                    d.code().code() == "08P01"
                        && (d.message().contains("not paused")
                            || d.message().contains("no such database"))
                }) =>
            {
                Ok(())
            }
            Ok(Err(e)) => Err(Error::failed(format!("{sql} on {}", self.what), cause(&e))),
        }
    }
}

/// A database name for the console: it takes a bare word, quoted with "" when
/// it holds anything else (admin.c uses the same tokenizer as the config).
fn ident(db: &str) -> String {
    if db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        db.to_string()
    } else {
        format!("\"{}\"", db.replace('"', "\"\""))
    }
}

fn cause(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s = format!("{s}: {c}");
                src = c.source();
            }
            s
        }
    }
}

/// The bound for a PAUSE: the earlier of the pause timeout and the run's end.
pub fn pause_until(since: Instant, pause_timeout: Duration, run_end: Instant) -> Instant {
    (since + pause_timeout).min(run_end)
}

#[cfg(test)]
mod tests {
    use super::Database;

    #[test]
    fn show_databases_rows_are_read_from_text_columns() {
        assert_eq!(
            Database::from_columns("appdb", Some("127.0.0.1"), Some("5432"), Some("0")),
            Database {
                name: "appdb".into(),
                host: Some("127.0.0.1".into()),
                port: Some(5432),
                paused: false,
            }
        );
        // The console's own row: no host; a paused database.
        let row = Database::from_columns("pgbouncer", None, Some("6432"), Some("1"));
        assert_eq!((row.host, row.paused), (None, true));
        let row = Database::from_columns("x", Some(""), Some("port"), None);
        assert_eq!((row.host, row.port, row.paused), (None, None, false));
    }

    #[test]
    fn database_names_are_quoted_when_needed() {
        assert_eq!(super::ident("appdb"), "appdb");
        assert_eq!(super::ident("app-db"), "\"app-db\"");
        assert_eq!(super::ident("a\"b"), "\"a\"\"b\"");
    }
}
