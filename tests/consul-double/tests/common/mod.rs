//! Test helpers shared by the integration tests: a tiny blocking HTTP/1.1
//! client over a raw `TcpStream` (so tests control every byte, e.g. the
//! `Content-Length: 0` on GET that Patroni sends), and the std-only helpers
//! patroni-hook's tests use too (skip-or-fail under CI, bounded waits, a
//! free port), from the one copy in the repository's tests/common; and the
//! two backends a test body runs against (`backend`: the double and a real
//! Consul 1.8.7 agent).

#![allow(dead_code)]

mod backend;
#[path = "../../../common/basics.rs"]
mod basics;

pub use backend::*;
pub use basics::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// A header value, name compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `X-Consul-Index` as a number; panics when absent.
    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .unwrap_or_else(|| panic!("no X-Consul-Index in {self:?}"))
            .parse()
            .expect("numeric X-Consul-Index")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Sends one request (always with `Content-Length`, like Patroni) and reads
/// the whole response (`Connection: close`); panics on a network error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, target, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`] that reports a network error instead of panicking. A server
/// may answer before it has read the body and then reset the connection
/// (Go does so for a refused large body): whatever response arrived before
/// the reset counts.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| format!("set read timeout: {e}"))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .map_err(|e| format!("write head of {method} {target}: {e}"))?;
    let sent = s.write_all(body);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let complete = raw.windows(4).any(|w| w == b"\r\n\r\n");
    match (sent, read) {
        (Ok(()), Ok(_)) => {}
        (_, Err(_)) | (Err(_), _) if complete => {}
        (Err(e), _) => return Err(format!("write body of {method} {target}: {e}")),
        (_, Err(e)) => return Err(format!("read response to {method} {target}: {e}")),
    }
    if !complete {
        return Err(format!(
            "no complete response to {method} {target}: {:?}",
            String::from_utf8_lossy(&raw)
        ));
    }
    Ok(parse_response(&raw))
}

/// Parses a complete HTTP/1.1 response: a `Content-Length` body (or one
/// ending at close), or a chunked one (Go chunks large bodies).
pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let rest = &raw[end + 4..];
    Resp {
        status,
        headers,
        body: if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        },
    }
}

/// The payload of a chunked body: `<hex size>\r\n<bytes>\r\n`… up to size 0.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "truncated chunked body: {:?}",
                    String::from_utf8_lossy(rest)
                )
            });
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, &[], b"")
}

pub fn put(addr: SocketAddr, target: &str, body: &[u8]) -> Resp {
    request(addr, "PUT", target, &[], body)
}

pub fn delete(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "DELETE", target, &[], b"")
}
