//! The running double: `Options`, `Server` (start, URL, direct state access,
//! stop), the background thread with its own tokio runtime, the accept loop
//! and the session reaper.
//!
//! The server owns a thread and a current-thread runtime so that it works the
//! same from plain `#[test]` functions and from inside tokio tests (a nested
//! runtime on the caller's thread would panic).

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use crate::state::{Entry, State};

/// How the double is configured.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smallest accepted session TTL (Consul's `session_ttl_min`, default 10 s, §3.5).
    pub session_ttl_min: Duration,
    /// When set, the one token that may do anything (ACL mode, §3.8).
    pub acl_token: Option<String>,
    /// `type=key` watches: (key, argv of the handler program), §4.
    pub watches: Vec<(String, Vec<String>)>,
    /// The agent's node name.
    pub node_name: String,
    /// A slow Consul, switched on and off from outside: while this file
    /// exists and holds a Go duration (`1.5s`), every request is answered
    /// that much later and every watch looks that much later. Read at each
    /// request, so a test creates and removes it while the double runs.
    pub delay_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            session_ttl_min: Duration::from_secs(10),
            acl_token: None,
            watches: Vec::new(),
            node_name: "consul-double".to_string(),
            delay_file: None,
        }
    }
}

/// Splits a `--watch` program text into argv on whitespace. There is no
/// shell and no quoting: an argument cannot contain spaces. Use a script for
/// anything fancier.
pub fn split_program(program: &str) -> Vec<String> {
    program.split_whitespace().map(str::to_string).collect()
}

/// State and channels shared by the HTTP handlers, the reaper and watches.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Carries the global index; every change wakes blocking queries and watches.
    pub changes: watch::Sender<u64>,
    /// Pokes the session reaper to recompute its deadline.
    pub session_timer: Notify,
    pub session_ttl_min: Duration,
    pub acl_token: Option<String>,
    pub node_id: String,
    delay_file: Option<PathBuf>,
    /// Whether an unreadable delay file was reported already (once is enough).
    delay_warned: AtomicBool,
}

impl Shared {
    /// Read access; a poisoned lock is still usable (state stays consistent
    /// because every mutation is a single `State` method).
    pub fn read(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The delay the delay file asks for now, if any (see [`Options::delay_file`]).
    /// A missing or empty file is no delay; a value that is not a Go
    /// duration is no delay either, and reported once.
    pub fn delay(&self) -> Option<Duration> {
        let path = self.delay_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match crate::duration::parse_go_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => None,
            Err(e) => {
                if !self.delay_warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "consul-double: {}: {e}; answering without delay",
                        path.display()
                    );
                }
                None
            }
        }
    }

    /// Mutates the state, then wakes blocking queries, watches and the reaper.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = self.write_quiet(f);
        self.session_timer.notify_one();
        r
    }

    /// Like [`Shared::write`] but leaves the reaper alone (the reaper's own
    /// writes must not wake itself).
    fn write_quiet<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, idx) = {
            let mut st = self.read();
            let r = f(&mut st);
            (r, st.index())
        };
        self.changes.send_if_modified(|v| {
            let changed = *v != idx;
            *v = idx;
            changed
        });
        r
    }
}

/// A running double. Stops on [`Server::stop`] or on drop; afterwards its
/// port refuses connections.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start(opts: Options) -> io::Result<Server> {
        Server::start_on(StdTcpListener::bind(("127.0.0.1", 0))?, opts)
    }

    /// Serves on a listener the caller bound (e.g. inside a network namespace).
    pub fn start_on(listener: StdTcpListener, opts: Options) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (changes, _) = watch::channel(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&opts.node_name)),
            changes,
            session_timer: Notify::new(),
            session_ttl_min: opts.session_ttl_min,
            acl_token: opts.acl_token.clone(),
            node_id: uuid::Uuid::new_v4().to_string(),
            delay_file: opts.delay_file.clone(),
            delay_warned: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("consul-double-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    tokio::spawn(reap_sessions(thread_shared.clone()));
                    for (key, argv) in opts.watches {
                        tokio::spawn(crate::watch::run(thread_shared.clone(), key, argv));
                    }
                    let _ = ready_tx.send(Ok(()));
                    serve(listener, thread_shared, stop_rx).await;
                });
                // Dropping the runtime here cancels every connection, blocking
                // query and watch task, and closes their sockets.
                drop(rt);
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Server {
                addr,
                shared,
                stop_tx: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("consul-double thread died during start")),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Plain PUT (flags 0): bumps the index unless nothing changed, and wakes
    /// blocking queries and watches.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        self.shared.write(|st| st.kv_set(key, value, 0));
    }

    /// One KV entry, if present.
    pub fn kv_get(&self, key: &str) -> Option<Entry> {
        self.shared.read().kv_get(key).1
    }

    /// Plain DELETE (leaves a tombstone).
    pub fn kv_delete(&self, key: &str) {
        self.shared.write(|st| st.kv_delete(key));
    }

    /// The current global index (never 0).
    pub fn index(&self) -> u64 {
        self.shared.read().index()
    }

    /// Ids of the live sessions.
    pub fn session_ids(&self) -> Vec<String> {
        self.shared
            .read()
            .sessions()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Stops serving and waits for the server thread to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| crate::http::handle(shared.clone(), req));
                        // Connection errors (client gone mid-request) are the
                        // client's business; nothing to report.
                        let _ = http1::Builder::new()
                            // Go canonicalises header names (X-Consul-Index); match it
                            // for clients that (wrongly) compare case-sensitively.
                            .title_case_headers(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    eprintln!("consul-double: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Invalidates sessions when their 2×TTL timer runs out (§3.5).
async fn reap_sessions(shared: Arc<Shared>) {
    loop {
        // Register interest before looking, so a session created between
        // the look and the sleep still wakes us.
        let notified = shared.session_timer.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = shared.write_quiet(|st| {
            st.expire_sessions(Instant::now());
            st.next_expiry()
        });
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}
