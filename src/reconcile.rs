//! The reconcile verb: converge this host to what Consul says, once.
//!
//! On a database node (a `vip` section) the VIP follows the leader key
//! (`vip::converge` with `Trigger::Reconcile`); on the PgBouncer host (a
//! `pgbouncer` section) the managed `[databases]` entries follow each
//! cluster's leader (`pooler::host`). A host with both does both.

use crate::budget::Budget;
use crate::config::Config;
use crate::dcs::Dcs;
use crate::error::Error;
use crate::node::plan::Trigger;
use crate::report::Report;
use crate::{node::vip, pooler::host};

/// Runs reconcile; returns how it ended and what it did.
pub async fn run(cfg: &Config, consul: &Dcs, budget: Budget, dry_run: bool) -> Report {
    let mut report = Report::default();
    if cfg.vip.is_none() && cfg.pgbouncer.is_none() {
        report.fail(Error::usage(format!(
            "{}: neither a vip nor a pgbouncer section: nothing to reconcile",
            cfg.path.display()
        )));
        return report;
    }
    if let Some(v) = &cfg.vip {
        match &cfg.scope {
            Some(scope) => {
                let run = vip::Run {
                    cfg,
                    vip: v,
                    scope,
                    consul,
                    budget,
                    dry_run,
                };
                vip::converge(&run, Trigger::Reconcile, &mut report).await;
            }
            None => report.fail(Error::config(
                &cfg.path,
                "scope",
                "expected the Patroni scope: reconcile of the VIP needs it",
            )),
        }
    }
    if let Some(p) = &cfg.pgbouncer {
        // Writing the file and signalling PgBouncer take a few ms; the read
        // may use the rest of the run.
        let keep = std::time::Duration::from_millis(100);
        consul.set_deadline(budget.end.checked_sub(keep).unwrap_or(budget.end));
        host::reconcile(cfg, p, consul, &budget, dry_run, &mut report).await;
    }
    report
}
