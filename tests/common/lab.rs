//! What the lab tests (tests/e2e.rs, tests/e2e_scenarios.rs) need on the
//! machine, in one place: the Patroni virtualenv, the consul-double binary and
//! the list of what is missing.

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

/// What a lab of real Patroni + PostgreSQL 15 behind the Consul double lacks
/// here: root, `programs`, PostgreSQL 15, the postgres user, Patroni and,
/// when `double`, the double. Empty when it can run.
pub fn missing(programs: &[&str], double: bool) -> Vec<String> {
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
    if double && double_bin().is_none() {
        missing.push("the consul-double binary (cargo build -p consul-double)".into());
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
