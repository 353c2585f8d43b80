//! What one reconcile on the PgBouncer host sees, gathered once, before any
//! decision: each configured cluster's view in Consul, this host's pause
//! records, PgBouncer's `SHOW DATABASES` (with an admin console), and the
//! boot clock. `plan` decides on it alone.
//!
//! Consul is read first and the clock taken after it: a Consul that hung
//! for its whole timeout must not stretch a pause past pause_timeout.

use crate::budget::Budget;
use crate::config::{Cluster, Config, PgbouncerConfig};
use crate::dcs::keys::{ScopeKeys, ScopeView, Scopes};
use crate::dcs::Dcs;
use crate::error::Error;
use crate::pooler::admin::{self, Admin};
use crate::pooler::pause::{Local, Now};
use crate::pooler::pause_host;
use crate::state;
use std::time::{Duration, Instant};

/// One configured cluster, as seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its keys, or why they could not be read (Consul did not answer, or
    /// its ACL refused this cluster).
    pub view: Result<ScopeView, Error>,
    /// This host's pause record.
    pub local: Local,
}

/// Everything one run decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The present (after the Consul read).
    pub now: Now,
    /// Consul's whole read failed: why (each cluster's view then says only
    /// that it was not read).
    pub unread: Option<Error>,
    /// The configured clusters, in the configuration's order.
    pub clusters: Vec<Seen>,
    /// Pause records of scopes no longer configured.
    pub unconfigured: Vec<(String, Local)>,
    /// `SHOW DATABASES`, when an admin console is configured and answered.
    pub pgbouncer: Option<Vec<admin::Database>>,
}

/// How long the observation's `SHOW DATABASES` may take: a console that
/// does not answer leaves the rest of the run its time for RELOAD, and
/// SIGHUP after it.
const SHOW_WAIT: Duration = Duration::from_millis(300);

/// Observes once.
pub async fn observe(cfg: &Config, p: &PgbouncerConfig, consul: &Dcs, budget: &Budget) -> Observed {
    let read = read_clusters(cfg.dcs.namespace(), &p.clusters, consul).await;
    let now = pause_host::now();
    let ns = &cfg.dcs.namespace();
    let clusters = p
        .clusters
        .iter()
        .map(|c| Seen {
            view: match &read {
                Err(_) => Err(Error::temporary(
                    format!("cluster {}", c.scope),
                    "the DCS was not read",
                )),
                Ok((scopes, refused)) => match refused.iter().find(|(s, _)| *s == c.scope) {
                    Some((_, e)) => Err(e.clone().context("its entries kept as they are")),
                    None => Ok(ScopeView::read(
                        scopes.of(&c.scope),
                        &ScopeKeys::new(ns, &c.scope),
                    )),
                },
            },
            local: state::read_pause(&cfg.lock_file, &c.scope),
        })
        .collect();
    let unconfigured = state::pause_scopes(&cfg.lock_file)
        .into_iter()
        .filter(|s| !p.clusters.iter().any(|c| c.scope == *s))
        .map(|s| {
            let local = state::read_pause(&cfg.lock_file, &s);
            (s, local)
        })
        .collect();
    let pgbouncer = match &p.admin {
        None => None,
        Some(a) => {
            let until = (Instant::now() + SHOW_WAIT).min(budget.end);
            match Admin::connect(a, until).await {
                Ok(admin) => match admin.databases(until).await {
                    Ok(rows) => Some(rows),
                    Err(e) => {
                        crate::debug_line!("{e}");
                        None
                    }
                },
                Err(e) => {
                    crate::debug_line!("{e}");
                    None
                }
            }
        }
    };
    Observed {
        now,
        unread: read.err().map(|e| e.context("pgbouncer.ini kept as it is")),
        clusters,
        unconfigured,
        pgbouncer,
    }
}

/// One read for all clusters of the namespace when there are several, one per
/// cluster when there is one (the smaller answer).
///
/// A cluster whose read lacks its leader key may be one the token may not
/// read, wholly or in part (Consul 1.8 filters a recursive read without a
/// word): its leader key, read on its own, says 403 then. Such a cluster is
/// returned as refused, with why; the others are followed as usual
/// (clusters are independent). A probe Consul does not answer leaves the
/// read as it was (no leader key: wait, 75).
pub async fn read_clusters(
    namespace: &str,
    clusters: &[Cluster],
    consul: &Dcs,
) -> Result<(Scopes, Vec<(String, Error)>), Error> {
    let entries = if clusters.len() == 1 {
        consul
            .list(&format!("{namespace}/{}/", clusters[0].scope), false)
            .await?
    } else {
        consul.list(&format!("{namespace}/"), false).await?
    };
    let scopes = Scopes::new(entries, namespace);
    let mut refused = Vec::new();
    for c in clusters {
        let keys = ScopeKeys::new(namespace, &c.scope);
        if let Err(e) = consul
            .check_hidden(&keys.prefix, scopes.of(&c.scope), &keys.leader)
            .await
        {
            refused.push((c.scope.clone(), e.context(format!("cluster {}", c.scope))));
        }
    }
    Ok((scopes, refused))
}

/// One cluster's view read again (right before a PAUSE: the view the pause
/// was decided on may be a second old by then).
pub async fn read_again(namespace: &str, scope: &str, consul: &Dcs) -> Result<ScopeView, Error> {
    let keys = ScopeKeys::new(namespace, scope);
    let entries = consul.list(&keys.prefix, false).await?;
    Ok(ScopeView::read(&entries, &keys))
}
