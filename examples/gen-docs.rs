//! Generates the shell completions (bash, zsh, fish) and the man page from the
//! clap definitions in `patroni_hook::cli::Cli`, so they never drift from the
//! real command line and the product needs no extra runtime subcommand; and the
//! reconcile units as the Debian package installs them.
//!
//! `cargo run --release --example gen-docs -- OUTDIR` writes:
//!
//! ```text
//! OUTDIR/completions/patroni-hook.bash   -> /usr/share/bash-completion/completions/patroni-hook
//! OUTDIR/completions/_patroni-hook       -> /usr/share/zsh/vendor-completions/_patroni-hook
//! OUTDIR/completions/patroni-hook.fish   -> /usr/share/fish/vendor_completions.d/patroni-hook.fish
//! OUTDIR/man/patroni-hook.1              -> /usr/local/share/man/man1/patroni-hook.1
//! OUTDIR/man/patroni-hook-<command>.1    -> /usr/local/share/man/man1/ (one per subcommand)
//! OUTDIR/systemd/patroni-hook-reconcile.{service,timer}   (Debian package only)
//! ```
//!
//! scripts/install.sh runs it and installs completions/ and man/ at the paths
//! on the right. `cargo deb` packages all three directories from
//! target/gen-docs (see `[package.metadata.deb]` in Cargo.toml), with the man
//! pages under /usr/share/man.

use clap::CommandFactory;
use clap_complete::Shell;
use patroni_hook::cli::Cli;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::from(1)
        }
    }
}

/// The reconcile units of patroni-conf/, the one source of both variants.
const UNITS: [(&str, &str); 2] = [
    (
        "patroni-hook-reconcile.service",
        include_str!("../patroni-conf/patroni-hook-reconcile.service"),
    ),
    (
        "patroni-hook-reconcile.timer",
        include_str!("../patroni-conf/patroni-hook-reconcile.timer"),
    ),
];

/// Where scripts/install.sh puts the binary (its default prefix) and where the
/// Debian package puts it.
const INSTALL_SH_BIN: &str = "/usr/local/bin/patroni-hook";
const PACKAGE_BIN: &str = "/usr/bin/patroni-hook";

/// Writes every file; returns their paths.
fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let comp = out.join("completions");
    let man = out.join("man");
    let units = out.join("systemd");
    for d in [&comp, &man, &units] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let mut written = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "patroni-hook.bash"),
        (Shell::Zsh, "_patroni-hook"),
        (Shell::Fish, "patroni-hook.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "patroni-hook", &mut buf);
        written.push(write(&comp.join(name), &buf)?);
    }
    // One page for the command and one per subcommand (patroni-hook-reconcile.1,
    // ...), which the main page's SUBCOMMANDS section refers to. clap_mangen
    // always rewrites its files, so render into a staging directory and copy.
    let staging = out.join(".man-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    clap_mangen::generate_to(Cli::command(), &staging)
        .map_err(|e| format!("rendering the man pages: {e}"))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&staging)
        .map_err(|e| format!("reading {}: {e}", staging.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    for page in pages {
        let bytes = std::fs::read(&page).map_err(|e| format!("reading {}: {e}", page.display()))?;
        let name = page.file_name().unwrap_or_default();
        written.push(write(&man.join(name), &bytes)?);
    }
    std::fs::remove_dir_all(&staging)
        .map_err(|e| format!("removing {}: {e}", staging.display()))?;
    for (name, text) in UNITS {
        written.push(write(
            &units.join(name),
            package_unit(name, text)?.as_bytes(),
        )?);
    }
    Ok(written)
}

/// A unit as the package installs it: the binary's path is the package's.
/// The service must name the binary by install.sh's path, or the package
/// would ship a unit that runs something else.
fn package_unit(name: &str, text: &str) -> Result<String, String> {
    if name.ends_with(".service") && !text.contains(INSTALL_SH_BIN) {
        return Err(format!(
            "patroni-conf/{name}: no {INSTALL_SH_BIN} to rewrite to {PACKAGE_BIN}"
        ));
    }
    Ok(text.replace(INSTALL_SH_BIN, PACKAGE_BIN))
}

/// Writes `bytes` to `path` only when they differ, so a second install run
/// leaves the mtime of an unchanged file alone.
fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(path.to_path_buf())
}
