//! Golden and property tests of `ini::edit`: the bytes of pgbouncer.ini after
//! an edit, against hand-written expected files in tests/fixtures/ini/, and
//! against an independent model of the file for generated inputs.

use std::path::PathBuf;

use patroni_hook::pooler::ini::{self, Target};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ini")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

fn target(host: &str, port: u16) -> Target {
    Target {
        host: host.to_string(),
        port,
    }
}

/// Edits `<case>.in.ini` and compares with `<case>.out.ini`, byte for byte;
/// then checks that editing the result again changes nothing.
fn golden(case: &str, targets: &[(&str, &Target)], changed: &[&str], missing: &[&str]) {
    let input = fixture(&format!("{case}.in.ini"));
    let expected = fixture(&format!("{case}.out.ini"));
    let edited = ini::edit(&input, targets).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&edited.output),
        String::from_utf8_lossy(&expected),
        "{case}: output differs from {case}.out.ini"
    );
    assert_eq!(edited.output, expected, "{case}: bytes differ");
    assert_eq!(edited.changed, changed, "{case}: changed");
    assert_eq!(edited.missing, missing, "{case}: missing");

    let again = ini::edit(&expected, targets).unwrap();
    assert_eq!(again.output, expected, "{case}: second edit changed bytes");
    assert!(
        again.changed.is_empty(),
        "{case}: second edit reported a change"
    );
    assert_eq!(again.missing, missing, "{case}: second edit missing");
}

#[test]
fn golden_basic_comments_spacing_tabs_include_other_sections() {
    let t = target("198.51.100.21", 5432);
    golden(
        "basic",
        &[("appdb", &t), ("reports", &t)],
        &["appdb", "reports"],
        &[],
    );
}

#[test]
fn golden_crlf_no_final_newline_host_and_port_absent_ipv6() {
    let t = target("2001:db8::5", 6432);
    golden(
        "crlf",
        &[("appdb", &t), ("reports", &t), ("*", &t)],
        &["appdb", "reports", "*"],
        &[],
    );
}

#[test]
fn golden_quoted_values_keep_their_quotes() {
    let t = target("pg-new.example.net", 6000);
    golden(
        "quoted",
        &[("appdb", &t), ("reports", &t)],
        &["appdb", "reports"],
        &[],
    );
}

#[test]
fn golden_fallback_entry_twice_and_a_missing_name() {
    let t = target("198.51.100.7", 5432);
    golden("fallback", &[("ghost", &t), ("*", &t)], &["*"], &["ghost"]);
}

#[test]
fn golden_nothing_to_do_is_the_same_bytes() {
    let input = fixture("basic.out.ini");
    let t = target("198.51.100.21", 5432);
    let edited = ini::edit(&input, &[("appdb", &t), ("reports", &t)]).unwrap();
    assert_eq!(edited.output, input);
    assert!(edited.changed.is_empty());
}

#[test]
fn injection_attempts_are_refused_and_produce_no_output() {
    let input = fixture("basic.in.ini");
    let overlong = "a".repeat(300);
    let hosts: &[&str] = &[
        "\n[pgbouncer]\nadmin_users=x",
        "10.0.0.1\nadmin_users=x",
        "a b",
        "x=y",
        "'",
        "db1'",
        "[",
        "\"db1\"",
        "db1\r",
        "db1\0",
        "db1;x",
        "db1#x",
        "db1\tport=1",
        &overlong,
    ];
    for host in hosts {
        let t = target(host, 5432);
        let err = ini::edit(&input, &[("reports", &target("db1", 5432)), ("appdb", &t)])
            .expect_err(&format!("host {host:?} must be refused"));
        let message = err.to_string();
        assert!(
            message.starts_with("entry appdb: refusing host "),
            "{host:?}: {message}"
        );
        assert!(
            !message.contains('\n') && !message.contains('\r'),
            "{message}"
        );
        assert_eq!(err.exit_code(), 1);
    }
    let err = ini::edit(&input, &[("appdb", &target("db1", 0))]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry appdb: refusing port 0: a port is 1-65535"
    );
}

#[test]
fn settings_of_the_pgbouncer_section() {
    let input = fixture("basic.in.ini");
    assert_eq!(
        ini::pgbouncer_setting(&input, "pidfile").as_deref(),
        Some("/run/pgbouncer/pgbouncer.pid")
    );
    assert_eq!(ini::time_setting(&input, "server_login_retry", 15.0), 1.0);
    assert_eq!(
        ini::time_setting(&fixture("crlf.in.ini"), "server_login_retry", 15.0),
        15.0
    );
}

// ---------------------------------------------------------------------------
// Property test: generated files, rendered twice by an independent model (as
// written, and as it must read after the edit), compared byte for byte.

/// A connection-string parameter as written.
#[derive(Debug, Clone)]
struct Param {
    key: &'static str,
    /// Spaces around `=` inside the connection string.
    around_eq: (usize, usize),
    value: String,
    quoted: bool,
}

impl Param {
    fn render(&self, value: &str) -> String {
        let value = if self.quoted {
            format!("'{}'", value.replace('\'', "''"))
        } else {
            value.to_string()
        };
        format!(
            "{}{}={}{}",
            self.key,
            " ".repeat(self.around_eq.0),
            " ".repeat(self.around_eq.1),
            value
        )
    }
}

#[derive(Debug, Clone)]
enum Line {
    Blank(String),
    Comment(String),
    Include(String),
    Entry {
        lead: String,
        key: String,
        before_eq: String,
        after_eq: String,
        params: Vec<(usize, Param)>,
        trail: String,
    },
}

#[derive(Debug, Clone)]
struct Section {
    name: &'static str,
    lead: String,
    trail: String,
    lines: Vec<(Line, &'static str)>,
}

#[derive(Debug, Clone)]
struct File {
    preamble: Vec<(Line, &'static str)>,
    sections: Vec<(Section, &'static str)>,
    final_newline: bool,
}

const MANAGED: [&str; 3] = ["appdb", "reports", "*"];

impl File {
    /// Renders the file; with targets, as the edit must leave it. Also
    /// returns the managed names that changed and those that are missing.
    fn render(&self, targets: Option<&[(&str, &Target)]>) -> (String, Vec<String>, Vec<String>) {
        let mut out = String::new();
        let mut changed = Vec::new();
        let mut found = Vec::new();
        let mut line = |line: &Line, section: Option<&str>, out: &mut String| match line {
            Line::Blank(s) | Line::Comment(s) | Line::Include(s) => out.push_str(s),
            Line::Entry {
                lead,
                key,
                before_eq,
                after_eq,
                params,
                trail,
            } => {
                let target = targets.and_then(|ts| {
                    ts.iter()
                        .find(|(n, _)| section == Some("databases") && n == key)
                        .map(|(_, t)| *t)
                });
                out.push_str(&format!("{lead}{key}{before_eq}={after_eq}"));
                let mut entry_changed = false;
                let (mut host, mut port) = (false, false);
                for (i, (spaces, param)) in params.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&" ".repeat(*spaces));
                    }
                    let value = match (target, param.key) {
                        (Some(t), "host") => {
                            host = true;
                            t.host.clone()
                        }
                        (Some(t), "port") => {
                            port = true;
                            t.port.to_string()
                        }
                        _ => param.value.clone(),
                    };
                    entry_changed |= value != param.value;
                    out.push_str(&param.render(&value));
                }
                if let Some(t) = target {
                    found.push(key.clone());
                    if !host {
                        out.push_str(&format!(" host={}", t.host));
                        entry_changed = true;
                    }
                    if !port {
                        out.push_str(&format!(" port={}", t.port));
                        entry_changed = true;
                    }
                    if entry_changed {
                        changed.push(key.clone());
                    }
                }
                out.push_str(trail);
            }
        };
        for (l, eol) in &self.preamble {
            line(l, None, &mut out);
            out.push_str(eol);
        }
        for (section, eol) in &self.sections {
            out.push_str(&format!(
                "{}[{}]{}{eol}",
                section.lead, section.name, section.trail
            ));
            for (l, eol) in &section.lines {
                line(l, Some(section.name), &mut out);
                out.push_str(eol);
            }
        }
        if !self.final_newline {
            while out.ends_with('\n') || out.ends_with('\r') {
                out.pop();
            }
        }
        let names: Vec<&str> = targets.unwrap_or(&[]).iter().map(|(n, _)| *n).collect();
        let changed = names
            .iter()
            .filter(|n| changed.iter().any(|c| c == *n))
            .map(|n| n.to_string())
            .collect();
        let missing = names
            .iter()
            .filter(|n| !found.iter().any(|f| f == *n))
            .map(|n| n.to_string())
            .collect();
        (out, changed, missing)
    }
}

fn blanks(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just(' '), Just('\t')], 0..=max)
        .prop_map(|v| v.into_iter().collect())
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\n\n"), Just("\r\n\r\n")]
}

fn param() -> impl Strategy<Value = Param> {
    let key = prop_oneof![
        Just("host"),
        Just("port"),
        Just("dbname"),
        Just("user"),
        Just("password"),
        Just("pool_size"),
        Just("application_name"),
    ];
    // Unquoted values stop at a space and must not start with a quote;
    // quoted ones may hold anything but a line break.
    let unquoted = "[A-Za-z0-9._:/=#;\\[-][A-Za-z0-9._:/=#;'\\[-]{0,11}";
    let quoted = "[A-Za-z0-9 ._:/=#;'\\[\\]\"-]{1,12}";
    (
        key,
        (0usize..2, 0usize..2),
        prop_oneof![
            unquoted.prop_map(|v| (v, false)),
            quoted.prop_map(|v| (v, true))
        ],
    )
        .prop_map(|(key, around_eq, (value, quoted))| Param {
            key,
            around_eq,
            value,
            quoted,
        })
}

fn entry() -> impl Strategy<Value = Line> {
    let key = prop_oneof![
        3 => proptest::sample::select(MANAGED.to_vec()).prop_map(str::to_string),
        2 => "[a-z][a-z0-9_.-]{0,8}",
    ];
    (
        blanks(2),
        key,
        blanks(2),
        blanks(2),
        proptest::collection::vec((1usize..4, param()), 1..6),
        blanks(2),
    )
        .prop_map(
            |(lead, key, before_eq, after_eq, params, trail)| Line::Entry {
                lead,
                key,
                before_eq,
                after_eq,
                params,
                trail,
            },
        )
}

fn other_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        blanks(3).prop_map(Line::Blank),
        (
            blanks(2),
            prop_oneof![Just(";"), Just("#")],
            "[ -~]{0,30}",
            proptest::sample::select(MANAGED.to_vec())
        )
            .prop_map(|(lead, mark, text, name)| Line::Comment(format!(
                "{lead}{mark}{name} = host=evil {text}"
            ))),
        "[a-z/.]{1,20}".prop_map(|f| Line::Include(format!("%include /etc/pgbouncer/{f}"))),
    ]
}

fn lines() -> impl Strategy<Value = Vec<(Line, &'static str)>> {
    proptest::collection::vec((prop_oneof![3 => entry(), 2 => other_line()], eol()), 0..8)
}

fn file() -> impl Strategy<Value = File> {
    let section = (
        prop_oneof![
            4 => Just("databases"),
            1 => Just("pgbouncer"),
            1 => Just("users"),
            1 => Just("Databases"),
        ],
        blanks(2),
        blanks(2),
        lines(),
    )
        .prop_map(|(name, lead, trail, lines)| Section {
            name,
            lead,
            trail,
            lines,
        });
    (
        proptest::collection::vec((other_line(), eol()), 0..3),
        proptest::collection::vec((section, eol()), 1..4),
        any::<bool>(),
    )
        .prop_map(|(preamble, sections, final_newline)| File {
            preamble,
            sections,
            final_newline,
        })
}

fn valid_target() -> impl Strategy<Value = Target> {
    let host = prop_oneof![
        any::<u32>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<u128>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
    ];
    (host, 1u16..=65535)
        .prop_filter("valid host", |(h, _)| ini::validate_host(h).is_ok())
        .prop_map(|(host, port)| Target { host, port })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The output is exactly the model's rendering with the targets applied,
    /// and a second edit is a no-op.
    #[test]
    fn edit_changes_only_managed_host_and_port(
        file in file(),
        targets in proptest::collection::vec(valid_target(), 3),
        managed in proptest::sample::subsequence(vec![0usize, 1, 2], 0..=3),
    ) {
        let targets: Vec<(&str, &Target)> =
            managed.iter().map(|&i| (MANAGED[i], &targets[i])).collect();
        let (input, _, _) = file.render(None);
        let (expected, changed, missing) = file.render(Some(&targets));

        let edited = ini::edit(input.as_bytes(), &targets)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{input}")))?;
        prop_assert_eq!(String::from_utf8(edited.output.clone()).unwrap(), expected.clone());
        prop_assert_eq!(&edited.changed, &changed);
        prop_assert_eq!(&edited.missing, &missing);

        // Lines that hold no managed entry are byte-identical, line endings included.
        let managed_line = |l: &[u8]| {
            targets.iter().any(|(n, _)| {
                let t = String::from_utf8_lossy(l);
                t.trim_start_matches([' ', '\t']).starts_with(n)
            })
        };
        let a: Vec<&[u8]> = input.as_bytes().split(|&b| b == b'\n').collect();
        let b: Vec<&[u8]> = edited.output.split(|&b| b == b'\n').collect();
        prop_assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            if !managed_line(x) {
                prop_assert_eq!(x, y);
            }
        }

        let again = ini::edit(&edited.output, &targets).unwrap();
        prop_assert_eq!(&again.output, &edited.output);
        prop_assert!(again.changed.is_empty());
    }

    /// Any host holding a byte that could start a line, a section, a pair or a
    /// quote is refused, whatever the file.
    #[test]
    fn hosts_with_structure_bytes_are_refused(
        file in file(),
        prefix in "[a-z0-9.]{0,10}",
        bad in proptest::sample::select(vec!['\n', '\r', ' ', '\t', '=', '[', ']', '\'', '"', '\0', ';', '#', '%', ',', '/']),
        suffix in "[a-z0-9.]{0,10}",
        port in 1u16..,
    ) {
        let (input, _, _) = file.render(None);
        let host = format!("{prefix}{bad}{suffix}");
        let t = Target { host, port };
        prop_assert!(ini::edit(input.as_bytes(), &[("appdb", &t)]).is_err());
    }
}
