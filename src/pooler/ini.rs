//! PURE editor of pgbouncer.ini: points managed `[databases]` entries at a new
//! host and port, and keeps every other byte of the file as it was.
//!
//! The file is read the way PgBouncer reads it, not the way a generic INI
//! library would, so that what we edit is what PgBouncer will load:
//!
//! - the file parser is libusual's `parse_ini_file` (usual/cfparser.c): it is
//!   token based, not line based; `#` and `;` start a comment only where a key
//!   could start; a key is `[A-Za-z0-9_.*-]*` (newer libusual also accepts a
//!   `'quoted'` key, PgBouncer 1.18 refuses it); the value runs to the end of
//!   the line, minus trailing white space (so a CR of a CRLF line is not part
//!   of it); `%include FILE` is a directive; a NUL byte ends the file;
//! - section names and keys are compared exactly (`find_sect`/`find_key` use
//!   `strcmp`): PgBouncer 1.18 refuses `[Databases]` ("invalid section") and
//!   `LISTEN_PORT` ("unknown parameter"), checked against the real binary;
//! - a `[databases]` value is a connection string parsed by `cstr_get_pair`
//!   (src/loader.c): pairs separated by spaces only (a tab is part of a value),
//!   `key = value` with spaces allowed around `=`, a value either unquoted up
//!   to the next space or `'single quoted'` with `''` for a quote, no empty
//!   values, and connection keys compared exactly (`strcmp("host", key)`);
//! - an entry name given twice is not an error: `parse_database` finds the
//!   existing database and overwrites it, so the last one wins (checked with
//!   PgBouncer 1.18 and `SHOW DATABASES`); likewise a `host=` or `port=` given
//!   twice inside one connection string. This editor therefore rewrites every
//!   occurrence, so whichever PgBouncer keeps points at the target.
//!
//! `%include` files are not followed (this module does no I/O): a managed entry
//! that lives only in an included file is reported missing, and a section
//! switch inside an included file is not seen.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::error::Error;

/// Where a managed `[databases]` entry must point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// An IP address or DNS name; checked by [`validate_host`].
    pub host: String,
    /// 1-65535.
    pub port: u16,
}

/// The result of [`edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new file content; equal to the input when nothing changed.
    pub output: Vec<u8>,
    /// Managed entries whose host or port changed, in the order of the targets.
    pub changed: Vec<String>,
    /// Managed entries not found in any `[databases]` section, in target order.
    pub missing: Vec<String>,
}

const DATABASES: &[u8] = b"databases";
const PGBOUNCER: &[u8] = b"pgbouncer";

/// PgBouncer's default `server_login_retry`, in seconds (doc/config.md).
pub const SERVER_LOGIN_RETRY_DEFAULT: f64 = 15.0;

/// Rewrites `host=` and `port=` of each managed `[databases]` entry.
///
/// Every target is validated first ([`validate_host`], port 1-65535), so a
/// value from Consul can never add a line, a section or a parameter; any error
/// means no output at all. A missing `host=` or `port=` is appended to the
/// entry's connection string; a quoted value stays quoted. A managed name that
/// is absent is reported in [`Edited::missing`]; no entry is ever invented.
pub fn edit(input: &[u8], targets: &[(&str, &Target)]) -> Result<Edited, Error> {
    for (i, (name, target)) in targets.iter().enumerate() {
        validate_host(&target.host).map_err(|e| e.context(format_args!("entry {name}")))?;
        if target.port == 0 {
            return Err(Error::failed(
                format_args!("entry {name}"),
                "refusing port 0: a port is 1-65535",
            ));
        }
        if let Some((_, other)) = targets[..i].iter().find(|(n, _)| n == name) {
            if other != target {
                return Err(Error::failed(
                    format_args!("entry {name}"),
                    "managed twice with different targets",
                ));
            }
        }
    }

    let pairs = scan(input)?;
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut changed = Vec::new();
    let mut missing = Vec::new();
    for (i, (name, target)) in targets.iter().enumerate() {
        if targets[..i].iter().any(|(n, _)| n == name) {
            continue;
        }
        let port = target.port.to_string();
        let mut found = false;
        let mut entry_changed = false;
        let entries = pairs
            .iter()
            .filter(|p| p.in_section(input, DATABASES) && &input[p.key.clone()] == name.as_bytes());
        for pair in entries {
            found = true;
            let params = connstring(input, pair.value.clone()).map_err(|why| {
                Error::failed(
                    format_args!("line {}: entry {name}", line_of(input, pair.key.start)),
                    format_args!("connection string does not parse: {why}"),
                )
            })?;
            let (mut has_host, mut has_port) = (false, false);
            for param in &params {
                let new = match &input[param.key.clone()] {
                    b"host" => {
                        has_host = true;
                        target.host.as_bytes()
                    }
                    b"port" => {
                        has_port = true;
                        port.as_bytes()
                    }
                    _ => continue,
                };
                // Keep the quoting style: validation guarantees no quote inside.
                let text = if param.quoted {
                    [b"'", new, b"'"].concat()
                } else {
                    new.to_vec()
                };
                if input[param.raw.clone()] != text[..] {
                    edits.push((param.raw.clone(), text));
                    entry_changed = true;
                }
            }
            let mut append = Vec::new();
            if !has_host {
                append.push(format!("host={}", target.host));
            }
            if !has_port {
                append.push(format!("port={port}"));
            }
            if !append.is_empty() {
                let value = pair.value.clone();
                // An empty value sits right after `=` or after its blanks.
                let lead = if !value.is_empty() || input[value.start - 1] == b'=' {
                    " "
                } else {
                    ""
                };
                let text = format!("{lead}{}", append.join(" ")).into_bytes();
                edits.push((value.end..value.end, text));
                entry_changed = true;
            }
        }
        if !found {
            missing.push(name.to_string());
        } else if entry_changed {
            changed.push(name.to_string());
        }
    }

    edits.sort_by_key(|(range, _)| (range.start, range.end));
    let mut output = Vec::with_capacity(input.len() + 64);
    let mut cursor = 0;
    for (range, text) in edits {
        output.extend_from_slice(&input[cursor..range.start]);
        output.extend_from_slice(&text);
        cursor = range.end;
    }
    output.extend_from_slice(&input[cursor..]);
    Ok(Edited {
        output,
        changed,
        missing,
    })
}

/// PURE: where the file's `[databases]` entries point, entry by entry (the
/// first of a name, as PgBouncer takes it), in one pass over the file. An
/// entry that names no host or no valid port (a Unix socket, PgBouncer's
/// default port) is absent.
pub fn entry_targets(input: &[u8]) -> std::collections::HashMap<String, Target> {
    let mut out = std::collections::HashMap::new();
    let Ok(pairs) = scan(input) else {
        return out;
    };
    for pair in pairs.iter().filter(|p| p.in_section(input, DATABASES)) {
        let name = String::from_utf8_lossy(&input[pair.key.clone()]).into_owned();
        if out.contains_key(&name) {
            continue;
        }
        let Ok(params) = connstring(input, pair.value.clone()) else {
            continue;
        };
        let value = |key: &[u8]| {
            params
                .iter()
                .find(|p| &input[p.key.clone()] == key)
                .map(|p| {
                    String::from_utf8_lossy(&input[p.raw.clone()])
                        .trim_matches('\'')
                        .to_string()
                })
        };
        if let (Some(host), Some(Ok(port))) = (value(b"host"), value(b"port").map(|p| p.parse())) {
            out.insert(name, Target { host, port });
        }
    }
    out
}

/// Checks a host from an untrusted source: an IPv4 or IPv6 literal, or a DNS
/// name per RFC 1123 (labels of `[A-Za-z0-9-]`, 1-63 bytes, no leading or
/// trailing `-`, at most 253 bytes in all, no trailing dot).
///
/// An IPv6 literal is written bare (`host=2001:db8::1`): the connection string
/// splits on spaces only, and PgBouncer 1.18 accepts it so (its docs show
/// `host=2001:0db8:85a3:0000:0000:8a2e:0370:7334`). Zone ids (`%eth0`) and
/// brackets are refused.
pub fn validate_host(host: &str) -> Result<(), Error> {
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(Error::failed(
            format_args!("refusing host {}", shown(host)),
            format_args!("not an IP address or DNS name: {why}"),
        ))
    };
    if host.is_empty() {
        return refuse("empty");
    }
    if host.len() > 253 {
        return refuse("longer than 253 bytes");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return refuse("a label must be 1-63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return refuse("a label holds only letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("a label must not start or end with '-'");
        }
    }
    // `999.1.1.1` passes the label rules but is a broken address, not a name
    // (RFC 3696 section 2: a top-level domain is never all digits).
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return refuse("looks like an IPv4 address but is not one");
    }
    Ok(())
}

/// The value of `key` in the `[pgbouncer]` section, if set.
///
/// The key is compared exactly, as PgBouncer does (`LISTEN_PORT` is an unknown
/// parameter to it). When a key is set twice the last one counts (`cf_set`
/// overwrites). `None` also when the file does not parse.
pub fn pgbouncer_setting(input: &[u8], key: &str) -> Option<String> {
    let pairs = scan(input).ok()?;
    pairs
        .iter()
        .rev()
        .find(|p| p.in_section(input, PGBOUNCER) && &input[p.key.clone()] == key.as_bytes())
        .map(|p| String::from_utf8_lossy(&input[p.value.clone()]).into_owned())
}

/// A time setting of `[pgbouncer]` in seconds (`server_login_retry`,
/// `query_timeout`, `query_wait_timeout`...), `default` when unset.
///
/// PgBouncer reads these as a fraction of seconds (`CF_TIME_USEC`,
/// `parse_time` in libusual's cfparser.c: strtod, no unit suffix, not
/// negative); a value it would refuse also gives `default`, so a warning
/// about the default still shows.
pub fn time_setting(input: &[u8], key: &str, default: f64) -> f64 {
    match pgbouncer_setting(input, key).map(|v| v.trim().parse::<f64>()) {
        Some(Ok(seconds)) if seconds.is_finite() && seconds >= 0.0 => seconds,
        _ => default,
    }
}

/// One `key = value` pair as libusual's `parse_ini_file` sees it.
#[derive(Debug)]
struct Pair {
    /// The name between `[` and `]` of the section it is in.
    section: Range<usize>,
    /// The key, without quotes.
    key: Range<usize>,
    /// The value, without leading blanks and trailing white space.
    value: Range<usize>,
}

impl Pair {
    fn in_section(&self, input: &[u8], name: &[u8]) -> bool {
        &input[self.section.clone()] == name
    }
}

/// C `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// C `isblank`.
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn line_of(input: &[u8], at: usize) -> usize {
    1 + input[..at].iter().filter(|&&b| b == b'\n').count()
}

/// Finds every `key = value` pair, following `parse_ini_file_internal` of
/// libusual usual/cfparser.c step by step.
fn scan(input: &[u8]) -> Result<Vec<Pair>, Error> {
    // load_file() hands the parser a C string: the first NUL ends the file.
    let s = &input[..input.iter().position(|&b| b == 0).unwrap_or(input.len())];
    let syntax = |at: usize, why: &str| {
        Error::failed(
            format_args!("line {}", line_of(input, at)),
            format_args!("syntax error: {why}"),
        )
    };
    let mut pairs = Vec::new();
    let mut section: Option<Range<usize>> = None;
    let mut p = 0;
    loop {
        while p < s.len() && is_space(s[p]) {
            p += 1;
        }
        if p == s.len() {
            return Ok(pairs);
        }
        if s[p..].starts_with(b"%include") && s.get(p + 8).copied().is_some_and(is_blank) {
            // Left alone and not followed: we do no I/O.
            while p < s.len() && s[p] != b'\n' {
                p += 1;
            }
            continue;
        }
        if s[p] == b'#' || s[p] == b';' {
            while p < s.len() && s[p] != b'\n' {
                p += 1;
            }
            continue;
        }
        if s[p] == b'[' {
            let start = p + 1;
            p = start;
            while p < s.len() && s[p] != b']' && s[p] != b'\n' {
                p += 1;
            }
            if p == s.len() || s[p] != b']' {
                return Err(syntax(p, "section header without ']'"));
            }
            section = Some(start..p);
            // The parser goes on right after ']', not at the next line.
            p += 1;
            continue;
        }
        let key = if s[p] == b'\'' {
            // Newer libusual; PgBouncer 1.18 calls this a syntax error.
            let start = p + 1;
            p = start;
            while p < s.len() && s[p] != b'\'' {
                p += 1;
            }
            if p == s.len() || p == start {
                return Err(syntax(p, "bad quoted key"));
            }
            p += 1;
            start..p - 1
        } else {
            let start = p;
            while p < s.len() && (s[p].is_ascii_alphanumeric() || b"_.-*".contains(&s[p])) {
                p += 1;
            }
            start..p
        };
        while p < s.len() && is_blank(s[p]) {
            p += 1;
        }
        if p == s.len() || s[p] != b'=' {
            return Err(syntax(p, "expected '=' after a key"));
        }
        p += 1;
        while p < s.len() && is_blank(s[p]) {
            p += 1;
        }
        let start = p;
        while p < s.len() && s[p] != b'\n' {
            p += 1;
        }
        let mut end = p;
        while end > start && is_space(s[end - 1]) {
            end -= 1;
        }
        let Some(section) = section.clone() else {
            // cf_load_file's handler: "value without section".
            return Err(syntax(key.start, "key outside any section"));
        };
        pairs.push(Pair {
            section,
            key,
            value: start..end,
        });
    }
}

/// One `key=value` of a connection string.
#[derive(Debug)]
struct Param {
    key: Range<usize>,
    /// The value as written, quotes included.
    raw: Range<usize>,
    quoted: bool,
}

/// Splits a `[databases]` connection string, following `cstr_get_pair` and
/// friends in PgBouncer's src/loader.c.
fn connstring(s: &[u8], value: Range<usize>) -> Result<Vec<Param>, &'static str> {
    let end = value.end;
    let mut p = value.start;
    let mut params = Vec::new();
    loop {
        // cstr_skip_ws skips ' ' only.
        while p < end && s[p] == b' ' {
            p += 1;
        }
        if p == end {
            return Ok(params);
        }
        let key_start = p;
        while p < end && s[p] != b'=' && s[p] != b' ' {
            p += 1;
        }
        let key = key_start..p;
        while p < end && s[p] == b' ' {
            p += 1;
        }
        if p == end || s[p] != b'=' || key.is_empty() {
            return Err("expected key=value");
        }
        p += 1;
        while p < end && s[p] == b' ' {
            p += 1;
        }
        if p < end && s[p] == b'\'' {
            let open = p;
            p += 1;
            loop {
                if p == end {
                    return Err("unterminated quote");
                }
                if s[p] == b'\'' {
                    if p + 1 < end && s[p + 1] == b'\'' {
                        p += 2;
                        continue;
                    }
                    break;
                }
                p += 1;
            }
            if p == open + 1 {
                return Err("empty value");
            }
            p += 1;
            params.push(Param {
                key,
                raw: open..p,
                quoted: true,
            });
        } else {
            let start = p;
            while p < end && s[p] != b' ' {
                p += 1;
            }
            if p == start {
                return Err("empty value");
            }
            params.push(Param {
                key,
                raw: start..p,
                quoted: false,
            });
        }
        // cstr_get_value cuts the byte after a value, whatever it is.
        if p < end {
            p += 1;
        }
    }
}

/// An untrusted string for an error message: escaped, and cut when long.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}... ({} bytes)", s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_string(),
            port,
        }
    }

    fn edit1(input: &str, name: &str, host: &str, port: u16) -> Result<Edited, Error> {
        edit(input.as_bytes(), &[(name, &target(host, port))])
    }

    fn out(e: &Edited) -> &str {
        std::str::from_utf8(&e.output).unwrap()
    }

    #[test]
    fn replaces_host_and_port_in_place() {
        let e = edit1(
            "[databases]\nappdb = host=10.0.0.1 port=5432 dbname=app\n",
            "appdb",
            "198.51.100.2",
            5433,
        )
        .unwrap();
        assert_eq!(
            out(&e),
            "[databases]\nappdb = host=198.51.100.2 port=5433 dbname=app\n"
        );
        assert_eq!(e.changed, ["appdb"]);
        assert!(e.missing.is_empty());
    }

    #[test]
    fn unchanged_entry_gives_same_bytes_and_no_change() {
        let input = "[databases]\r\nappdb=host=db1 port=5432\r\n";
        let e = edit1(input, "appdb", "db1", 5432).unwrap();
        assert_eq!(e.output, input.as_bytes());
        assert!(e.changed.is_empty());
    }

    #[test]
    fn appends_missing_host_and_port_before_trailing_space() {
        let e = edit1(
            "[databases]\nappdb = dbname=app  \r\n",
            "appdb",
            "db2",
            6000,
        )
        .unwrap();
        assert_eq!(
            out(&e),
            "[databases]\nappdb = dbname=app host=db2 port=6000  \r\n"
        );
        let e = edit1("[databases]\nappdb = host=db1", "appdb", "db2", 6000).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host=db2 port=6000");
    }

    #[test]
    fn empty_value_gets_host_and_port() {
        let e = edit1("[databases]\nappdb =\n", "appdb", "db2", 6000).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host=db2 port=6000\n");
        let e = edit1("[databases]\nappdb = \n", "appdb", "db2", 6000).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host=db2 port=6000\n");
    }

    #[test]
    fn quoted_values_stay_quoted() {
        let e = edit1(
            "[databases]\nappdb = host='o''ld' port='5432' password='a b'\n",
            "appdb",
            "db2",
            6000,
        )
        .unwrap();
        assert_eq!(
            out(&e),
            "[databases]\nappdb = host='db2' port='6000' password='a b'\n"
        );
    }

    #[test]
    fn spaces_around_connstring_equals_are_kept() {
        let e = edit1(
            "[databases]\nappdb = host = a  port =  1\n",
            "appdb",
            "b",
            2,
        )
        .unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host = b  port =  2\n");
    }

    #[test]
    fn spaces_after_connstring_equals_belong_to_the_value_start() {
        // cstr_get_value skips spaces first: `host= port=1` is host "port=1".
        let e = edit1("[databases]\nappdb = host= port=1\n", "appdb", "b", 2).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host= b port=2\n");
    }

    #[test]
    fn tab_is_part_of_a_value_not_a_separator() {
        // loader.c cstr_get_value stops at ' ' only: PgBouncer reads host "a\tport=5".
        let e = edit1("[databases]\nappdb = host=a\tport=5\n", "appdb", "b", 7).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host=b port=7\n");
    }

    #[test]
    fn every_duplicate_is_rewritten() {
        let e = edit1(
            "[databases]\nappdb = host=a port=1\nappdb = host=c host=d port=2\n",
            "appdb",
            "b",
            3,
        )
        .unwrap();
        assert_eq!(
            out(&e),
            "[databases]\nappdb = host=b port=3\nappdb = host=b host=b port=3\n"
        );
        assert_eq!(e.changed, ["appdb"]);
    }

    #[test]
    fn other_sections_and_near_names_are_left_alone() {
        let input =
            "[users]\nappdb = pool_mode=session\n[databases]\nappdb2 = host=a\nAPPDB = host=a\n";
        let e = edit1(input, "appdb", "b", 3).unwrap();
        assert_eq!(e.output, input.as_bytes());
        assert_eq!(e.missing, ["appdb"]);
        assert!(e.changed.is_empty());
    }

    #[test]
    fn section_header_is_exact_and_parsing_continues_after_bracket() {
        // `[Databases]` is no section PgBouncer knows; it is not ours.
        let e = edit1("[Databases]\nappdb = host=a\n", "appdb", "b", 3).unwrap();
        assert_eq!(e.missing, ["appdb"]);
        // cfparser.c resumes right after ']': the pair on the same line counts.
        let e = edit1("[databases] appdb = host=a\n", "appdb", "b", 3).unwrap();
        assert_eq!(out(&e), "[databases] appdb = host=b port=3\n");
    }

    #[test]
    fn fallback_entry_can_be_managed() {
        let e = edit1("[databases]\n* = host=a port=1\n", "*", "b", 2).unwrap();
        assert_eq!(out(&e), "[databases]\n* = host=b port=2\n");
    }

    #[test]
    fn quoted_key_of_newer_pgbouncer_matches() {
        let e = edit1("[databases]\n'app db' = host=a\n", "app db", "b", 2).unwrap();
        assert_eq!(out(&e), "[databases]\n'app db' = host=b port=2\n");
    }

    #[test]
    fn include_and_comments_are_not_entries() {
        let input = "[databases]\n%include /etc/appdb.ini\n;appdb = host=a\n# appdb = host=a\n";
        let e = edit1(input, "appdb", "b", 2).unwrap();
        assert_eq!(e.output, input.as_bytes());
        assert_eq!(e.missing, ["appdb"]);
    }

    #[test]
    fn nothing_after_a_nul_is_seen_or_changed() {
        let input = b"[databases]\nx = host=a\n\0appdb = host=a\n";
        let e = edit(input, &[("appdb", &target("b", 2))]).unwrap();
        assert_eq!(e.output, input);
        assert_eq!(e.missing, ["appdb"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = edit1("[databases]\nappdb host=a\n", "appdb", "b", 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: syntax error: expected '=' after a key"
        );
        let err = edit1("[databases\nappdb = host=a\n", "appdb", "b", 2).unwrap_err();
        assert!(err.to_string().starts_with("line 1: "), "{err}");
        let err = edit1("appdb = host=a\n", "appdb", "b", 2).unwrap_err();
        assert!(err.to_string().contains("outside any section"), "{err}");
    }

    #[test]
    fn bad_connection_strings_of_managed_entries_are_errors() {
        for bad in ["host='a", "host=", "host=''", "=a", "host"] {
            let input = format!("[databases]\nx = host=keep\nappdb = {bad}\n");
            let err = edit1(&input, "appdb", "b", 2).unwrap_err();
            assert!(
                err.to_string().starts_with("line 3: entry appdb: "),
                "{bad}: {err}"
            );
        }
        // An unmanaged broken entry is not ours to judge.
        let input = "[databases]\nother = host='a\nappdb = host=a\n";
        assert!(edit1(input, "appdb", "b", 2).is_ok());
    }

    #[test]
    fn byte_after_closing_quote_is_eaten_like_pgbouncer() {
        // `host='a'xport=5`: cstr_get_value cuts the 'x', so the next key is "port".
        let e = edit1("[databases]\nappdb = host='a'xport=5\n", "appdb", "b", 6).unwrap();
        assert_eq!(out(&e), "[databases]\nappdb = host='b'xport=6\n");
    }

    #[test]
    fn untrusted_targets_are_refused_before_anything() {
        let input = "[databases]\nappdb = host=a port=1\n";
        for host in [
            "\n[pgbouncer]\nadmin_users=x",
            "a b",
            "x=y",
            "'",
            "[",
            "",
            "a\0b",
            "-a",
            "a-",
            "a..b",
            "a.",
            "999.1.1.1",
            "fe80::1%eth0",
            "[::1]",
            "host\r",
            "ünïcode",
            &"a".repeat(64),
            &"a.".repeat(150),
        ] {
            let err = edit1(input, "appdb", host, 5432).unwrap_err();
            assert!(
                err.to_string().starts_with("entry appdb: refusing host "),
                "{host:?}: {err}"
            );
            assert!(!err.to_string().contains('\n'));
        }
        let err = edit1(input, "appdb", "db1", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry appdb: refusing port 0: a port is 1-65535"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn valid_hosts_pass() {
        for host in [
            "127.0.0.1",
            "2001:db8::1",
            "::ffff:198.51.100.1",
            "db-1.example.com",
            "localhost",
            "1a",
            &"a".repeat(63),
            &[
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61),
            ]
            .join("."),
        ] {
            validate_host(host).unwrap();
        }
    }

    #[test]
    fn conflicting_targets_for_one_name_are_refused() {
        let a = target("a", 1);
        let b = target("b", 1);
        let input = b"[databases]\nappdb = host=x\n";
        assert!(edit(input, &[("appdb", &a), ("appdb", &b)]).is_err());
        let e = edit(input, &[("appdb", &a), ("appdb", &a)]).unwrap();
        assert_eq!(e.changed, ["appdb"]);
    }

    #[test]
    fn pgbouncer_settings_are_read_exactly_and_last_wins() {
        let input = b"[databases]\nserver_login_retry = 9\n[pgbouncer]\nserver_login_retry = 4\r\nserver_login_retry = 1 \npidfile = /run/p.pid\n";
        assert_eq!(
            pgbouncer_setting(input, "server_login_retry").as_deref(),
            Some("1")
        );
        assert_eq!(
            pgbouncer_setting(input, "pidfile").as_deref(),
            Some("/run/p.pid")
        );
        assert_eq!(pgbouncer_setting(input, "PIDFILE"), None);
        assert_eq!(pgbouncer_setting(input, "logfile"), None);
        assert_eq!(time_setting(input, "server_login_retry", 15.0), 1.0);
    }

    #[test]
    fn time_settings_default_and_keep_fractions() {
        let with = |v: &str| format!("[pgbouncer]\nserver_login_retry = {v}\n").into_bytes();
        let retry = |i: &[u8]| time_setting(i, "server_login_retry", SERVER_LOGIN_RETRY_DEFAULT);
        assert_eq!(retry(b"[pgbouncer]\n"), 15.0);
        assert_eq!(retry(&with("2")), 2.0);
        assert_eq!(retry(&with("2.5")), 2.5);
        assert_eq!(retry(&with("0.1")), 0.1);
        assert_eq!(retry(&with("0")), 0.0);
        assert_eq!(retry(&with("soon")), 15.0);
        assert_eq!(retry(&with("-1")), 15.0);
        assert_eq!(retry(&with("100ms")), 15.0);
    }

    #[test]
    fn entry_target_reads_what_the_file_holds() {
        let f = b"[databases]\nappdb = host=198.51.100.1 port=5433 dbname=x\nq = host='198.51.100.2' port='6000'\nsock = dbname=x\n[pgbouncer]\nappdb = host=bad\n";
        assert_eq!(
            entry_targets(f).remove("appdb"),
            Some(Target {
                host: "198.51.100.1".into(),
                port: 5433
            })
        );
        assert_eq!(entry_targets(f).remove("q").map(|t| t.port), Some(6000));
        assert_eq!(
            entry_targets(f).remove("q").map(|t| t.host),
            Some("198.51.100.2".into())
        );
        assert_eq!(entry_targets(f).remove("sock"), None);
        assert_eq!(entry_targets(f).remove("none"), None);
    }
}
