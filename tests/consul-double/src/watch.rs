//! `type=key` watches with a script handler, as a Consul agent runs them
//! (SPEC.md §4.1–4.3): the handler runs once on the first result and
//! again whenever the key's api struct changes, with the JSON (or `null`) plus
//! `\n` on stdin and `CONSUL_INDEX` in its environment. One handler at a time
//! per watch; the agent waits for it before looking again.

use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::server::Shared;
use crate::state::Entry;

/// Runs one watch until the server stops (the task is then dropped, and
/// `kill_on_drop` ends a handler that is still running).
pub(crate) async fn run(shared: Arc<Shared>, key: String, argv: Vec<String>) {
    if argv.is_empty() {
        eprintln!("consul-double: watch on {key:?}: empty handler program, watch not started");
        return;
    }
    // Like `api.KV.Get`, one leading `/` is not part of the key.
    let key = key.strip_prefix('/').unwrap_or(&key).to_string();
    let mut rx = shared.changes.subscribe();
    let mut last: Option<(u64, Option<Entry>)> = None;
    loop {
        // A slow Consul: the agent's blocking query is answered late, with
        // the state of that moment.
        if let Some(d) = shared.delay() {
            tokio::time::sleep(d).await;
        }
        rx.borrow_and_update();
        let (idx, entry) = shared.read().kv_get(&key);
        let idx = idx.max(1);
        // Fire on the first result, then only when the index moved *and*
        // the result differs (`reflect.DeepEqual` in api/watch/plan.go).
        let fire = match &last {
            None => true,
            Some((last_idx, last_entry)) => *last_idx != idx && *last_entry != entry,
        };
        if fire {
            run_handler(&key, &argv, idx, entry.as_ref()).await;
        }
        last = Some((idx, entry));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the handler to completion. Failures are logged, never fatal: the
/// agent only logs a non-zero exit (§4.2).
async fn run_handler(key: &str, argv: &[String], idx: u64, entry: Option<&Entry>) {
    let input = crate::wire::watch_stdin(entry);
    // The handler's stdout goes to our stderr, like its stderr.
    let stdout = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("CONSUL_INDEX", idx.to_string())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "consul-double: watch on {key:?}: cannot run {:?}: {e}",
                argv[0]
            );
            return;
        }
    };
    // Feed stdin concurrently with waiting, so a handler that never reads
    // (and a value larger than the pipe buffer) cannot deadlock us; a handler
    // that exits without reading gives EPIPE, which is ignored.
    let writer = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        })
    });
    match child.wait().await {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("consul-double: watch on {key:?}: handler exited with {status}"),
        Err(e) => eprintln!("consul-double: watch on {key:?}: waiting for handler: {e}"),
    }
    if let Some(w) = writer {
        // The child is gone: its stdin is closed, so the writer finishes
        // (with EPIPE at worst) unless a grandchild still holds the pipe.
        w.abort();
    }
}
