//! Benchmark (prints figures, asserts nothing): KV GET throughput of the
//! double on loopback with N concurrent keep-alive clients, so we know it is
//! never the bottleneck of a test. Run with
//! `cargo bench -p consul-double --bench kv_get` (optimised build).
//!
//! Each configuration runs several rounds of a bounded request count; the
//! median round is reported, with min and max for spread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use consul_double::{Options, Server};

const ROUNDS: usize = 5;
const REQUESTS_PER_ROUND: usize = 20_000;

/// Sends `n` keep-alive GETs (as Patroni sends them, with Content-Length: 0)
/// and reads each full response.
fn client(addr: SocketAddr, target: &str, n: usize) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    let mut line = String::new();
    let mut body = Vec::new();
    for _ in 0..n {
        writer
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut len = 0usize;
        let mut first = true;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            if first {
                if !line.starts_with("HTTP/1.1 200") {
                    return Err(format!("unexpected status line {line:?}"));
                }
                first = false;
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v
                        .trim()
                        .parse()
                        .map_err(|_| "bad content-length".to_string())?;
                }
            }
        }
        body.resize(len, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("body: {e}"))?;
    }
    Ok(())
}

fn round(addr: SocketAddr, clients: usize) -> Result<f64, String> {
    let per_client = REQUESTS_PER_ROUND / clients;
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || client(addr, "/v1/kv/service/bench/leader", per_client))
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "client thread panicked".to_string())??;
    }
    Ok((per_client * clients) as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    let server = match Server::start(Options::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kv_get bench: start double: {e}");
            std::process::exit(1);
        }
    };
    server.kv_put("service/bench/leader", b"postgresql0");
    println!(
        "consul-double KV GET throughput on loopback ({REQUESTS_PER_ROUND} requests per round, {ROUNDS} rounds, keep-alive)"
    );
    println!(
        "{:>8} {:>14} {:>14} {:>14}",
        "clients", "median req/s", "min req/s", "max req/s"
    );
    for clients in [1, 4, 16, 64] {
        let mut rates = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            match round(server.addr(), clients) {
                Ok(r) => rates.push(r),
                Err(e) => {
                    eprintln!("kv_get bench: {clients} clients: {e}");
                    std::process::exit(1);
                }
            }
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{clients:>8} {:>14.0} {:>14.0} {:>14.0}",
            rates[ROUNDS / 2],
            rates[0],
            rates[ROUNDS - 1]
        );
    }
    server.stop();
}
