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
//! OUTDIR/command-line.md                 the command-line section of docs/reference.md
//! OUTDIR/doc/README.md, OUTDIR/doc/docs/*.md, OUTDIR/doc/examples/*   the documents and the kit
//!                                        as the package installs them in /usr/share/doc/patroni-hook/
//! ```
//!
//! `cargo run --release --example gen-docs -- --reference docs/reference.md`
//! rewrites the generated command-line section of the reference in place;
//! tests/docs_reference.rs checks that the committed one is what this makes.
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let [flag, reference] = args.as_slice() {
        if flag == "--reference" {
            return match update_reference(Path::new(reference)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gen-docs: {e}");
                    ExitCode::from(1)
                }
            };
        }
    }
    let [out] = args.as_slice() else {
        eprintln!("usage: gen-docs OUTDIR | gen-docs --reference docs/reference.md");
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
    written.push(write(
        &out.join("command-line.md"),
        command_line_md().as_bytes(),
    )?);
    written.extend(package_docs(&out.join("doc"))?);
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

/// The markers around the generated command-line section of docs/reference.md.
const CLI_BEGIN: &str = "<!-- command line: generated from src/cli.rs by examples/gen-docs.rs (--reference); do not edit by hand -->";
const CLI_END: &str = "<!-- end of the generated command line -->";

/// The command-line reference, from clap: the help of the command and of
/// each subcommand, as `patroni-hook [COMMAND] --help` prints it.
fn command_line_md() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut md = format!("{CLI_BEGIN}\n");
    let mut section = |title: &str, c: &mut clap::Command| {
        let help = c.render_help().to_string();
        let help: Vec<&str> = help.lines().map(str::trim_end).collect();
        md.push_str(&format!(
            "\n### `{title}`\n\n```text\n{}\n```\n",
            help.join("\n").trim_end()
        ));
    };
    section("patroni-hook", &mut cmd.clone());
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    for name in names {
        if let Some(sub) = cmd.find_subcommand_mut(&name) {
            section(&format!("patroni-hook {name}"), sub);
        }
    }
    md.push_str(&format!("\n{CLI_END}\n"));
    md
}

/// Replaces the generated section of `reference` (between the markers).
fn update_reference(reference: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(reference)
        .map_err(|e| format!("reading {}: {e}", reference.display()))?;
    let (Some(b), Some(e)) = (text.find(CLI_BEGIN), text.find(CLI_END)) else {
        return Err(format!(
            "{}: no generated command-line section (the markers of examples/gen-docs.rs)",
            reference.display()
        ));
    };
    let new = format!(
        "{}{}{}",
        &text[..b],
        command_line_md(),
        &text[e + CLI_END.len() + 1..]
    );
    write(reference, new.as_bytes()).map(|_| ())
}

/// The documents the package installs in /usr/share/doc/patroni-hook/:
/// README.md and docs/*.md where they are in the repository, and the kit
/// (patroni-conf/) as examples/, so that the links between them hold. A link
/// to the kit is rewritten to examples/; a link to a file the package does
/// not ship (the sources, the tests, the lab, the Vagrant files) becomes its
/// text. The kit's other files are copied as they are.
fn package_docs(out: &Path) -> Result<Vec<PathBuf>, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = |dir: &str| -> Result<Vec<PathBuf>, String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(repo.join(dir))
            .map_err(|e| format!("reading {dir}/: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter_map(|p| p.strip_prefix(repo).ok().map(Path::to_path_buf))
            .collect();
        names.sort();
        Ok(names)
    };
    let mut docs = vec![PathBuf::from("README.md")];
    docs.extend(
        list("docs")?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    docs.extend(list("patroni-conf")?);
    let mut written = Vec::new();
    for doc in docs {
        let bytes = std::fs::read(repo.join(&doc))
            .map_err(|e| format!("reading {}: {e}", doc.display()))?;
        let Some(at) = installed(&doc) else {
            return Err(format!("{}: not a shipped document", doc.display()));
        };
        let bytes = if doc.extension().is_some_and(|x| x == "md") {
            let text = String::from_utf8(bytes)
                .map_err(|e| format!("{}: not UTF-8: {e}", doc.display()))?;
            let dir = doc.parent().unwrap_or(Path::new(""));
            let depth = at.parent().map_or(0, |d| d.components().count());
            rewrite_links(&text, |target| {
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                if file.is_empty() {
                    return Some(target.to_string());
                }
                let to = installed(&normalize(&dir.join(file)))?;
                let anchor = if anchor.is_empty() {
                    String::new()
                } else {
                    format!("#{anchor}")
                };
                let mut to = to.display().to_string();
                if file.ends_with('/') && !to.ends_with('/') {
                    to.push('/');
                }
                Some(format!("{}{to}{anchor}", "../".repeat(depth)))
            })
            .into_bytes()
        } else {
            bytes
        };
        let path = out.join(&at);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        }
        written.push(write(&path, &bytes)?);
    }
    Ok(written)
}

/// Where a repository path is in the package's documentation directory,
/// if the package ships it there.
fn installed(repo_path: &Path) -> Option<PathBuf> {
    if repo_path == Path::new("README.md") || repo_path.starts_with("docs") {
        return Some(repo_path.to_path_buf());
    }
    repo_path
        .strip_prefix("patroni-conf")
        .ok()
        .map(|rest| Path::new("examples").join(rest))
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Rewrites each relative Markdown link `[text](target)`: `map` gives the
/// new target, or `None` to keep only the text (as code when it was the
/// path itself). Links with a scheme and in-page anchors stay.
fn rewrite_links(text: &str, map: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("](") {
        let Some(close) = rest[open + 2..].find(')') else {
            break;
        };
        let target = &rest[open + 2..open + 2 + close];
        let start = rest[..open].rfind('[');
        let relative = !target.contains("://")
            && !target.starts_with('#')
            && !target.starts_with("mailto:")
            && !target.contains(' ');
        match (start, relative) {
            (Some(start), true) => {
                let label = &rest[start + 1..open];
                out.push_str(&rest[..start]);
                match map(target) {
                    Some(t) => out.push_str(&format!("[{label}]({t})")),
                    None => out.push_str(label),
                }
            }
            _ => out.push_str(&rest[..open + 2 + close + 1]),
        }
        rest = &rest[open + 2 + close + 1..];
    }
    out.push_str(rest);
    out
}
