//! consul-double: an in-process Consul HTTP API double, faithful enough that
//! real Patroni runs its Consul backend against it (spec:
//! tests/consul-double/SPEC.md). Module list and the public surface only.
//!
//! Start one with [`Server::start`]; tests that may run against a real agent
//! ask [`external_consul`] first.

mod duration;
mod http;
mod server;
mod state;
mod watch;
mod wire;

pub use duration::{format_go_duration, parse_go_duration};
pub use server::{split_program, Options, Server};
pub use state::Entry;

/// The real Consul agent to use instead of the double, from
/// `CONSUL_HTTP_ADDR` (as the Consul CLI reads it); `http://` is added when
/// the value has no scheme. `None` when unset or empty.
pub fn external_consul() -> Option<String> {
    external_consul_from(std::env::var("CONSUL_HTTP_ADDR").ok().as_deref())
}

fn external_consul_from(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    if v.is_empty() {
        return None;
    }
    let v = v.trim_end_matches('/');
    Some(if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    })
}

#[cfg(test)]
mod tests {
    use super::external_consul_from;

    #[test]
    fn external_consul_adds_scheme() {
        assert_eq!(external_consul_from(None), None);
        assert_eq!(external_consul_from(Some("")), None);
        assert_eq!(
            external_consul_from(Some("127.0.0.1:8500")).as_deref(),
            Some("http://127.0.0.1:8500")
        );
        assert_eq!(
            external_consul_from(Some("https://c:8501/")).as_deref(),
            Some("https://c:8501")
        );
    }
}
