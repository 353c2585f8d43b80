//! The `etcd3` section: how to reach etcd's v3 API, spelled like Patroni's
//! own `etcd3:` section so that an operator can copy theirs.

use super::{duration, read_secret, Secret, MIN_TIMEOUT};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// etcd's client port when a host names none.
const DEFAULT_PORT: u16 = 2379;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct Etcd3Config {
    /// Base URLs (`scheme://host:port`), tried in turn.
    pub urls: Vec<String>,
    /// Patroni's key prefix: `/` and the namespace, without a trailing slash
    /// (Patroni's etcd3 keys are `/service/<scope>/leader`).
    pub namespace: String,
    /// CA bundle for https.
    pub cacert: Option<PathBuf>,
    /// Client certificate and key (mutual TLS, etcd's `--client-cert-auth`).
    /// etcd 3.4's v3 gateway does not pass the certificate's CN on as the
    /// user, so with authentication on a user and password are needed too.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// etcd user and password (from `password_file`); an unreadable file is
    /// an error reported by the first etcd call, like Consul's token.
    pub auth: Option<(String, std::result::Result<Secret, Error>)>,
    /// Per HTTP call.
    pub timeout: Duration,
}

/// `hosts:` as Patroni takes it: a comma-separated string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Hosts {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd3 {
    host: Option<String>,
    hosts: Option<Hosts>,
    protocol: Option<String>,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    /// Refused with a pointer to `password_file`: a password in the file
    /// every run reads, and `check-config` may print, is one leak away.
    password: Option<serde_yaml::Value>,
    namespace: Option<String>,
    timeout: Option<String>,
}

pub(super) fn etcd3(
    path: &Path,
    raw: RawEtcd3,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Etcd3Config> {
    let bad = |key: &str, expected: &str| Error::config(path, key, expected);
    if raw.password.is_some() {
        return Err(bad(
            "etcd3.password",
            "not read from this file: put the password in a file readable by the hook alone and name it in etcd3.password_file",
        ));
    }
    let https = match raw.protocol.as_deref().map(str::trim) {
        None | Some("http") => false,
        Some("https") => true,
        Some(_) => return Err(bad("etcd3.protocol", "expected http or https")),
    };
    // Messages name the setting written, whatever its number of entries.
    let (key, hosts): (&str, Vec<String>) = match (raw.host, raw.hosts) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "etcd3.host",
                "set either host or hosts, not both (hosts lists every member)",
            ))
        }
        (Some(h), None) => ("etcd3.host", vec![h]),
        (None, Some(Hosts::One(s))) => ("etcd3.hosts", s.split(',').map(str::to_string).collect()),
        (None, Some(Hosts::Many(v))) => ("etcd3.hosts", v),
        (None, None) => ("etcd3.hosts", vec!["127.0.0.1:2379".to_string()]),
    };
    let mut urls = Vec::new();
    for h in &hosts {
        let u = host_url(h.trim(), https).map_err(|why| bad(key, &why))?;
        if !urls.contains(&u) {
            urls.push(u);
        }
    }
    if urls.is_empty() {
        return Err(bad(key, "expected host:port of at least one etcd member"));
    }
    if https && raw.cacert.is_none() {
        return Err(bad(
            "etcd3.cacert",
            "expected a CA file when etcd3.protocol is https",
        ));
    }
    for (k, p) in [
        ("etcd3.cacert", &raw.cacert),
        ("etcd3.cert", &raw.cert),
        ("etcd3.key", &raw.key),
    ] {
        if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(bad(k, "expected a path to a PEM file"));
        }
    }
    let cert = match (raw.cert, raw.key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "etcd3.key",
                "expected with etcd3.cert (its private key)",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "etcd3.cert",
                "expected with etcd3.key (the certificate)",
            ))
        }
    };
    if cert.is_some() && !https {
        return Err(bad(
            "etcd3.cert",
            "a client certificate needs etcd3.protocol: https",
        ));
    }
    let auth = match (raw.username, raw.password_file) {
        (None, None) => None,
        (Some(u), Some(f)) => {
            if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("etcd3.username", "expected an etcd user name"));
            }
            Some((u, read_secret(path, "etcd3.password_file", &f, read_file)))
        }
        (Some(_), None) => {
            return Err(bad(
                "etcd3.password_file",
                "expected with etcd3.username (a file holding the user's password)",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "etcd3.username",
                "expected with etcd3.password_file (the etcd user)",
            ))
        }
    };
    let namespace = raw.namespace.unwrap_or_else(|| "/service".to_string());
    let squeezed = super::squeeze_slashes(&namespace);
    let trimmed = squeezed.trim_matches('/');
    if trimmed.is_empty() || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "etcd3.namespace",
            "expected Patroni's namespace, such as /service",
        ));
    }
    let timeout = duration(path, "etcd3.timeout", raw.timeout.as_deref(), "2s")?;
    if timeout < MIN_TIMEOUT {
        return Err(bad(
            "etcd3.timeout",
            &format!(
                "expected at least {}, such as 2s",
                humantime::format_duration(MIN_TIMEOUT)
            ),
        ));
    }
    Ok(Etcd3Config {
        urls,
        // Patroni joins "/", the namespace and the scope, and squeezes
        // repeated slashes.
        namespace: format!("/{trimmed}"),
        cacert: raw.cacert,
        cert,
        auth,
        timeout,
    })
}

/// `host[:port]` (an IPv6 literal in brackets) as a base URL.
fn host_url(h: &str, https: bool) -> std::result::Result<String, String> {
    if h.is_empty() {
        return Err("expected host:port of an etcd member, got an empty entry".into());
    }
    if h.contains("://") {
        return Err(format!(
            "{h:?}: expected host:port without a scheme (etcd3.protocol says http or https)"
        ));
    }
    if h.contains(['/', '@', '?', '#']) || h.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{h:?}: expected host:port with no path or user info"
        ));
    }
    let has_port = match h.strip_prefix('[') {
        Some(r) => r.contains("]:"),
        None => h.contains(':'),
    };
    let scheme = if https { "https" } else { "http" };
    let url = if has_port {
        format!("{scheme}://{h}")
    } else {
        format!("{scheme}://{h}:{DEFAULT_PORT}")
    };
    // What the HTTP client will make of it: a port past 65535 or a broken
    // IPv6 literal must fail here, not at every run.
    match reqwest::Url::parse(&url) {
        Ok(u) if u.host().is_some() && u.port().is_some() => Ok(url),
        Ok(_) => Err(format!("{h:?}: expected host:port")),
        Err(e) => Err(format!(
            "{h:?}: not an address the HTTP client accepts: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Etcd3Config> {
        let raw: RawEtcd3 = serde_yaml::from_str(yaml).unwrap();
        etcd3(Path::new("/c.yml"), raw, &|p: &Path| {
            if p == Path::new("/pw") {
                Ok("hunter2\n".into())
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            }
        })
    }

    #[test]
    fn reads_like_patronis_section() {
        let c = parse(
            "hosts: 10.0.0.1:2379, 10.0.0.2,[2001:db8::1]:2379\nprotocol: https\ncacert: /ca\ncert: /c\nkey: /k\nnamespace: service/\n",
        )
        .unwrap();
        assert_eq!(
            c.urls,
            [
                "https://10.0.0.1:2379",
                "https://10.0.0.2:2379",
                "https://[2001:db8::1]:2379"
            ]
        );
        assert_eq!(c.namespace, "/service");
        assert_eq!(c.timeout, Duration::from_secs(2));
        let c = parse("hosts: [a:1, b:2]\nusername: hook\npassword_file: /pw\n").unwrap();
        assert_eq!(c.urls, ["http://a:1", "http://b:2"]);
        let (user, pw) = c.auth.unwrap();
        assert_eq!((user.as_str(), pw.unwrap().expose()), ("hook", "hunter2"));
        assert_eq!(
            parse("namespace: /pg//prod/").unwrap().namespace,
            "/pg/prod"
        );
        let c = parse("{}").unwrap();
        assert_eq!(c.urls, ["http://127.0.0.1:2379"]);
        assert_eq!(c.namespace, "/service");
    }

    #[test]
    fn each_mistake_is_named() {
        let err = |y: &str| parse(y).unwrap_err().to_string();
        assert!(err("password: x\n").contains("etcd3.password: not read from this file"));
        assert!(err("protocol: tcp\n").contains("etcd3.protocol: expected http or https"));
        assert!(err("protocol: https\n").contains("etcd3.cacert"));
        assert!(err("host: a\nhosts: b\n").contains("etcd3.host: set either"));
        assert!(err("hosts: http://a:2379\n").contains("without a scheme"));
        assert!(err("hosts: a:99999,b\n").contains("etcd3.hosts"));
        assert!(err("hosts: http://a\n").contains("etcd3.hosts:"));
        assert!(err("hosts: [http://a]\n").contains("etcd3.hosts:"));
        assert!(err("host: http://a\n").contains("etcd3.host:"));
        assert!(err("hosts: 'a:1,,b:2'\n").contains("empty entry"));
        assert!(err("protocol: https\ncacert: /ca\ncert: /c\n").contains("etcd3.key"));
        assert!(err("cert: /c\nkey: /k\n").contains("needs etcd3.protocol: https"));
        assert!(err("username: u\n").contains("etcd3.password_file: expected with"));
        assert!(err("password_file: /pw\n").contains("etcd3.username"));
        assert!(err("namespace: /\n").contains("etcd3.namespace"));
        assert!(err("timeout: 1ms\n").contains("etcd3.timeout"));
        // An unreadable password file is kept for the first call, like
        // Consul's token: a release needs no etcd.
        let c = parse("username: u\npassword_file: /nope\n").unwrap();
        let e = c.auth.unwrap().1.unwrap_err().to_string();
        assert!(e.contains("etcd3.password_file: cannot read /nope"), "{e}");
    }
}
