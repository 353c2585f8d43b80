//! A few-line HTTP server that answers badly on purpose: hangs, 429, redirects,
//! endless bodies, or a fixed KV answer for GET with something else for
//! writes. The Consul double is faithful; this one is hostile, for the edges.
//!
//! It records every request (method, path and headers), so a test can check
//! where a token went.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET, PUT, DELETE...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
pub enum Reply {
    /// Read the request, never answer; the connection stays open.
    Hang,
    /// Status, extra headers, body.
    Respond(u16, Vec<(String, String)>, Vec<u8>),
    /// 200 and a body that never ends, written as fast as the peer reads.
    Endless,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// The server; stops accepting when dropped.
pub struct FakeConsul {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeConsul {
    /// Serves on `listener` (bind it in the namespace the hook runs in).
    pub fn start(
        listener: TcpListener,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> FakeConsul {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        listener.set_nonblocking(true).unwrap();
        let (s, r) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (h, r, s) = (handler.clone(), r.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &*h, &r, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeConsul {
            addr,
            stop,
            requests,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, handler: &Handler, seen: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                let n = n.trim().to_ascii_lowercase();
                let v = v.trim().to_string();
                if n == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((n, v));
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Request {
            method,
            path,
            headers,
        };
        seen.lock().unwrap().push(req.clone());
        match handler(&req) {
            Reply::Hang => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Respond(status, extra, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
                    body.len()
                );
                for (n, v) in extra {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Endless => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "[".repeat(65536));
                while !stop.load(Ordering::SeqCst) {
                    if conn.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// A gate a handler waits at until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Lets every waiting and later request through.
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wait(&self) {
        while !self.0.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A fake that answers every request with `body` (200), but only once the
/// returned gate is opened: a Consul whose answer arrives when the test says.
pub fn gated(listener: TcpListener, body: Vec<u8>) -> (FakeConsul, Gate) {
    let gate = Gate::default();
    let g = gate.clone();
    let fake = FakeConsul::start(listener, move |_| {
        g.wait();
        Reply::Respond(200, vec![], body.clone())
    });
    (fake, gate)
}

/// A Consul KV answer (the JSON array of a GET) for `(key, value, index)` entries.
pub fn kv_json(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    use base64::Engine as _;
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|(k, v, i)| {
            serde_json::json!({
                "Key": k,
                "Value": base64::engine::general_purpose::STANDARD.encode(v),
                "CreateIndex": i, "ModifyIndex": i, "LockIndex": 0, "Flags": 0,
            })
        })
        .collect();
    serde_json::to_vec(&items).unwrap()
}

/// A fake Patroni REST API on `listener`: `GET /patroni` answers a running
/// member whose role (from `pg_is_in_recovery()` in Patroni) is primary
/// while `primary` is set, replica otherwise; anything else 404.
pub fn patroni_api(listener: TcpListener, primary: Arc<AtomicBool>) -> FakeConsul {
    FakeConsul::start(listener, move |r| {
        let role = if primary.load(Ordering::SeqCst) {
            "primary"
        } else {
            "replica"
        };
        match r.path.as_str() {
            "/patroni" => Reply::Respond(
                200,
                vec![],
                format!(r#"{{"state":"running","role":"{role}"}}"#).into_bytes(),
            ),
            _ => Reply::Respond(404, vec![], vec![]),
        }
    })
}
