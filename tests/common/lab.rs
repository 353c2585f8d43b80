//! What the lab tests (tests/e2e.rs, tests/e2e_scenarios.rs) need on the
//! machine, in one place: the Patroni virtualenv, the Consul the hook's labs
//! run on (real Consul 1.8.7 or the consul-double binary) and the list of
//! what is missing.

use std::path::{Path, PathBuf};

/// The repository (the test crate's manifest directory).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Patroni virtualenv scripts/prereqs.sh makes ($PATRONI_VENV).
pub fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("PATRONI_VENV").unwrap_or_else(|_| "/opt/patroni-hook-test/venv".into()),
    )
}

/// The consul-double binary next to this test's hook binary (same profile),
/// else the release one.
pub fn double_bin() -> Option<PathBuf> {
    let same = PathBuf::from(env!("CARGO_BIN_EXE_patroni-hook")).with_file_name("consul-double");
    if same.exists() {
        return Some(same);
    }
    let release = repo().join("target/release/consul-double");
    release.exists().then_some(release)
}

/// The Consul the hook's labs run on: `$LAB_CONSUL` (what scripts/lab.sh
/// reads too), else `LAB_CONSUL_DEFAULT` of scripts/lab/topology.env.
pub fn consul_kind() -> String {
    if let Ok(kind) = std::env::var("LAB_CONSUL") {
        if !kind.is_empty() {
            return kind;
        }
    }
    let topology = repo().join("scripts/lab/topology.env");
    std::fs::read_to_string(&topology)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("LAB_CONSUL_DEFAULT="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}: no LAB_CONSUL_DEFAULT", topology.display()))
}

/// What a lab of real Patroni + PostgreSQL 15 lacks here: root, `programs`,
/// PostgreSQL 15, the postgres user, Patroni and, for the hook's lab
/// (`hook`), its Consul: Consul 1.8.7 and openssl, or the double. Empty when
/// it can run.
pub fn missing(programs: &[&str], hook: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for prog in programs {
        if super::which(prog).is_none() {
            missing.push(prog.to_string());
        }
    }
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        missing.push("PostgreSQL 15 (/usr/lib/postgresql/15/bin/postgres)".into());
    }
    if nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .is_none()
    {
        missing.push("the postgres user".into());
    }
    let patroni = venv().join("bin/patroni");
    if !patroni.exists() {
        missing.push(format!("{} (PATRONI_VENV)", patroni.display()));
    }
    if hook && consul_kind() == "real" {
        let version = std::process::Command::new("/usr/local/bin/consul")
            .arg("version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !version.starts_with("Consul v1.8.7\n") {
            missing.push("Consul 1.8.7 at /usr/local/bin/consul (scripts/prereqs.sh)".into());
        }
        if super::which("openssl").is_none() {
            missing.push("openssl".into());
        }
    } else if hook && double_bin().is_none() {
        missing.push("the consul-double binary (cargo build -p consul-double)".into());
    }
    missing
}

/// The DCS the labs run on: `$LAB_DCS` (what scripts/lab.sh reads too),
/// else `LAB_DCS_DEFAULT` of scripts/lab/topology.env (consul or etcd3).
pub fn dcs_kind() -> String {
    if let Ok(kind) = std::env::var("LAB_DCS") {
        if !kind.is_empty() {
            return kind;
        }
    }
    let topology = repo().join("scripts/lab/topology.env");
    std::fs::read_to_string(&topology)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("LAB_DCS_DEFAULT="))
        .map(str::to_string)
        .unwrap_or_else(|| "consul".to_string())
}

/// What a lab on the three etcd members lacks besides what `missing` checks:
/// etcd and etcdctl (Debian's etcd-server and etcd-client), openssl, the
/// kit's etcd files, and Patroni's backend for `api`: `v3` (the hook's lab,
/// patroni.dcs.etcd3) or `v2` (the vip-manager lab, python-etcd).
pub fn missing_etcd(api: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (prog, package) in [
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("openssl", "openssl"),
    ] {
        if super::which(prog).is_none() {
            missing.push(format!("{prog} (Debian package {package})"));
        }
    }
    let mut kit = vec!["patroni-conf/etcd-rbac.sh"];
    if api == "v3" {
        kit.push("patroni-conf/patroni-hook-etcd-watch@.service");
    }
    for file in kit {
        if !repo().join(file).exists() {
            missing.push(format!("the kit's {file}"));
        }
    }
    let (module, what) = if api == "v3" {
        (
            "patroni.dcs.etcd3",
            "Patroni's etcd3 extra (patroni[etcd3])",
        )
    } else {
        ("etcd", "python-etcd (patroni[etcd])")
    };
    let ok = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing.push(format!("{what} in PATRONI_VENV"));
    }
    missing
}

/// Takes down the labs under `root` of earlier test processes that were
/// killed before their guards ran (a run id carries its process's pid),
/// with `down` (which returns what to print).
pub fn remove_orphans(root: &str, down: impl Fn(&str) -> String) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .trim_start_matches(|c: char| c.is_ascii_lowercase())
            .parse::<u32>();
        if let Ok(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let out = down(&name);
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("removed orphaned lab {name}:\n{out}\n").as_bytes(),
                );
            }
        }
    }
}

/// The network namespaces whose names start with `prefix` that still exist.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
