//! The command line and configuration, as a user meets them: exit codes and
//! one-line errors naming what was wrong and where; the token in no output.
//! These need no root and no namespace: nothing here reaches a network
//! interface or a remote Consul (only a closed port on loopback, or the double).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn hook() -> Command {
    let mut c = Command::cargo_bin("patroni-hook").unwrap();
    c.env("PATRONI_HOOK_LOG_STDERR", "1")
        .env_remove("PATRONI_HOOK_CONFIG")
        .env_remove("CONSUL_HTTP_TOKEN");
    c
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One line on stderr, naming `needle`.
fn one_line_naming(needle: &'static str) -> impl Predicate<str> {
    predicate::str::contains(needle).and(predicate::function(|s: &str| {
        s.trim_end().lines().count() == 1
    }))
}

#[test]
fn help_and_version_exit_0() {
    hook()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("on_role_change"));
    hook()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains("patroni-hook"));
}

#[test]
fn unknown_role_is_a_usage_error() {
    hook()
        .args(["on_role_change", "boss", "batman"])
        .assert()
        .code(2)
        .stderr(one_line_naming("boss"));
}

#[test]
fn missing_arguments_and_unknown_commands_are_usage_errors() {
    hook()
        .args(["on_role_change", "primary"])
        .assert()
        .code(2)
        .stderr(one_line_naming("SCOPE"));
    hook()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(one_line_naming("frobnicate"));
    hook()
        .assert()
        .code(2)
        .stderr(one_line_naming("missing command"));
    hook().args(["--reconcile", "status"]).assert().code(2);
}

#[test]
fn missing_config_file_names_the_path() {
    hook()
        .args(["--config", "/nonexistent/ph.yml", "role-change", "primary"])
        .assert()
        .code(2)
        .stderr(one_line_naming("/nonexistent/ph.yml"));
}

#[test]
fn config_path_from_environment() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.yml", "bogus_key: 1\n");
    hook()
        .env("PATRONI_HOOK_CONFIG", &p)
        .arg("check-config")
        .assert()
        .code(2)
        .stderr(one_line_naming("bogus_key"));
}

#[test]
fn unknown_key_names_file_and_key() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.yml",
        "vip:\n  interface: eth1\n  adress: 198.51.100.100/24\n",
    );
    hook()
        .arg("--config")
        .arg(&p)
        .arg("check-config")
        .assert()
        .code(2)
        .stderr(one_line_naming("adress").and(predicate::str::contains(p.to_str().unwrap())));
}

#[test]
fn bad_cidr_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    for bad in ["198.51.100.100", "198.51.100.300/24", "vip"] {
        let p = write(
            d.path(),
            "c.yml",
            &format!("vip:\n  interface: eth1\n  address: {bad}\n"),
        );
        hook()
            .arg("--config")
            .arg(&p)
            .args(["on_role_change", "primary", "batman"])
            .assert()
            .code(2)
            .stderr(one_line_naming("vip.address"));
    }
}

#[test]
fn check_config_warns_about_server_login_retry() {
    let d = tempfile::tempdir().unwrap();
    let ini = write(
        d.path(),
        "pgbouncer.ini",
        "[databases]\nappdb = host=198.51.100.11 port=5432 dbname=appdb\n\n[pgbouncer]\nlisten_port = 6432\n",
    );
    let cfg = write(
        d.path(),
        "c.yml",
        &format!(
            "pgbouncer:\n  ini: {}\n  pidfile: /nonexistent/pgbouncer.pid\n  clusters:\n    - scope: batman\n      databases: [appdb]\n",
            ini.display()
        ),
    );
    hook()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .assert()
        .success()
        .stdout(
            predicate::str::contains("configuration OK")
                .and(predicate::str::contains("server_login_retry = 15")),
        );
    std::fs::write(
        &ini,
        "[databases]\nappdb = host=198.51.100.11 dbname=appdb\n[pgbouncer]\nserver_login_retry = 1\n",
    )
    .unwrap();
    hook()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .assert()
        .success()
        .stdout(predicate::str::contains("server_login_retry").not());
}

#[test]
fn callback_without_scope_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.yml",
        "vip:\n  interface: eth1\n  address: 198.51.100.100/24\n",
    );
    hook()
        .arg("--config")
        .arg(&p)
        .args(["role-change", "primary"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no scope"));
}

#[test]
fn callback_on_a_host_without_vip_section_does_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.yml", "scope: batman\n");
    hook()
        .arg("--config")
        .arg(&p)
        .args(["on_role_change", "primary", "batman"])
        .assert()
        .success();
}

#[test]
fn reconcile_with_consul_down_exits_75_and_keeps_the_file() {
    let d = tempfile::tempdir().unwrap();
    let ini_text = "[databases]\nappdb = host=198.51.100.11 port=5432 dbname=appdb\n";
    let ini = write(d.path(), "pgbouncer.ini", ini_text);
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let cfg = write(
        d.path(),
        "c.yml",
        &format!(
            "lock_file: {}/l\nconsul:\n  url: http://127.0.0.1:1\npgbouncer:\n  ini: {}\n  pidfile: {}/p.pid\n  clusters:\n    - scope: batman\n      databases: [appdb]\n",
            d.path().display(),
            ini.display(),
            d.path().display()
        ),
    );
    hook()
        .arg("--config")
        .arg(&cfg)
        .arg("reconcile")
        .assert()
        .code(75);
    hook()
        .arg("--config")
        .arg(&cfg)
        .arg("--reconcile")
        .assert()
        .code(75);
    assert_eq!(std::fs::read_to_string(&ini).unwrap(), ini_text);
}

/// The token from token_file or $CONSUL_HTTP_TOKEN never appears in any output,
/// at any verbosity, whether Consul accepts it, refuses it, or is down.
#[test]
fn token_never_appears_in_output() {
    let token = "tok-4f1d9a7e-never-print-me";
    let d = tempfile::tempdir().unwrap();
    let tf = write(d.path(), "token", &format!("{token}\n"));
    let ini = write(
        d.path(),
        "pgbouncer.ini",
        "[databases]\nappdb = host=198.51.100.11 port=5432\n",
    );
    // The double in ACL mode with another token: every call is refused with 403.
    let consul = consul_double::Server::start(consul_double::Options {
        acl_token: Some("a-different-token".into()),
        ..Default::default()
    })
    .unwrap();
    for url in [consul.url(), "http://127.0.0.1:1".to_string()] {
        let cfg = write(
            d.path(),
            "c.yml",
            &format!(
                "scope: batman\nlock_file: {dir}/l\nconsul:\n  url: {url}\n  token_file: {tf}\npgbouncer:\n  ini: {ini}\n  pidfile: {dir}/p.pid\n  clusters:\n    - scope: batman\n      databases: [appdb]\n",
                dir = d.path().display(),
                tf = tf.display(),
                ini = ini.display()
            ),
        );
        for v in ["-v", "-vv", "-vvv"] {
            for args in [
                &["reconcile"][..],
                &["status", "--json"][..],
                &["check-config"][..],
            ] {
                let out = hook()
                    .arg("--config")
                    .arg(&cfg)
                    .arg(v)
                    .args(args)
                    .output()
                    .unwrap();
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    !all.contains(token),
                    "token leaked by {args:?} {v} against {url}: {all}"
                );
            }
        }
        let out = hook()
            .arg("--config")
            .arg(&cfg)
            .env("CONSUL_HTTP_TOKEN", token)
            .args(["-vv", "reconcile"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stderr).contains(token));
    }
    // Against the refusing double, the error says 403 and points at the token.
    let cfg = d.path().join("c.yml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("http://127.0.0.1:1", &consul.url());
    std::fs::write(&cfg, text).unwrap();
    hook()
        .arg("--config")
        .arg(&cfg)
        .arg("reconcile")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("403").and(predicate::str::contains(token).not()));
}

/// check-config refuses what a command would refuse, naming the command:
/// the package's skeleton (reconcile, and so the timer, would exit 2 at
/// every run), a vip section without scope, an interface this host lacks.
#[test]
fn check_config_refuses_what_the_commands_refuse() {
    let d = tempfile::tempdir().unwrap();
    let lock = format!("lock_file: {}/hook.lock", d.path().display());
    let skeleton = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("patroni-conf/config.yml"),
    )
    .unwrap()
    .replace("lock_file: /run/patroni-hook/patroni-hook.lock", &lock);
    let vip_no_scope = format!("{lock}\nvip:\n  interface: lo\n  address: 198.51.100.100/24\n");
    let no_such_interface = format!(
        "{lock}\nscope: batman\nvip:\n  interface: ph-none0\n  address: 198.51.100.100/24\n"
    );
    for (name, text, needles) in [
        (
            "skeleton",
            skeleton,
            &["nothing to reconcile", "reconcile", "scope"][..],
        ),
        (
            "vip without scope",
            vip_no_scope,
            &["scope", "reconcile", "before-stop"][..],
        ),
        (
            "no such interface",
            no_such_interface,
            &["vip.interface", "ph-none0"][..],
        ),
    ] {
        let p = write(d.path(), "c.yml", &text);
        let out = hook()
            .arg("--config")
            .arg(&p)
            .arg("check-config")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}{stderr}");
        assert!(!stdout.contains("configuration OK"), "{name}: {stdout}");
        for n in needles {
            assert!(stderr.contains(n), "{name}: no {n:?} in {stderr}");
        }
    }
    // What check-config refuses, reconcile refuses too.
    let p = write(d.path(), "c.yml", &format!("{lock}\n"));
    hook()
        .arg("--config")
        .arg(&p)
        .arg("reconcile")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to reconcile"));
    // And the same file, completed, passes.
    let p = write(
        d.path(),
        "c.yml",
        &format!("{lock}\nscope: batman\nvip:\n  interface: lo\n  address: 198.51.100.100/24\n"),
    );
    hook()
        .arg("--config")
        .arg(&p)
        .arg("check-config")
        .assert()
        .success()
        .stdout(predicate::str::contains("configuration OK"));
}
