//! The `consul-double` binary: parses flags, binds, runs the in-process
//! double until SIGINT/SIGTERM. For the lab and for trying the hook by hand.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use consul_double::{parse_go_duration, split_program, Options, Server};

/// A Consul HTTP API double (KV, sessions, agent service, status, watches).
#[derive(Parser, Debug)]
#[command(name = "consul-double", version)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:8500.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Smallest session TTL accepted (Go duration, e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_ttl_min)]
    session_ttl_min: Duration,

    /// Enable ACL mode: only this token may do anything.
    #[arg(long, value_name = "TOKEN")]
    acl_token: Option<String>,

    /// Run PROGRAM like a Consul `type=key` watch handler on KEY (repeatable).
    /// PROGRAM is split on whitespace and exec'd without a shell.
    #[arg(long, value_name = "KEY=PROGRAM", value_parser = parse_watch)]
    watch: Vec<(String, Vec<String>)>,

    /// A slow Consul on demand: while FILE exists and holds a Go duration
    /// (e.g. 1.5s), every request is answered, and every watch looks, that
    /// much later. Read at each request.
    #[arg(long, value_name = "FILE")]
    delay_file: Option<std::path::PathBuf>,
}

fn parse_ttl_min(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

/// `KEY=PROGRAM`, split at the first `=` (so keys cannot contain `=`).
fn parse_watch(s: &str) -> Result<(String, Vec<String>), String> {
    let (key, program) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=PROGRAM, got {s:?}"))?;
    let argv = split_program(program);
    if key.is_empty() || argv.is_empty() {
        return Err(format!("expected KEY=PROGRAM, got {s:?}"));
    }
    Ok((key.to_string(), argv))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consul-double: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let listener =
        TcpListener::bind(cli.listen).map_err(|e| format!("listen on {}: {e}", cli.listen))?;
    let opts = Options {
        session_ttl_min: cli.session_ttl_min,
        acl_token: cli.acl_token,
        watches: cli.watch,
        delay_file: cli.delay_file,
        ..Options::default()
    };
    let server = Server::start_on(listener, opts).map_err(|e| format!("start: {e}"))?;
    eprintln!("consul-double: listening on {}", server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<(), String>(())
    })?;
    server.stop();
    eprintln!("consul-double: stopped");
    Ok(())
}
