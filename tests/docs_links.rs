//! The documents' links and the paths they name hold: every relative link in
//! README.md and docs/*.md leads to a file of the repository (and to a
//! heading of it, when it names one), and every repository path a document
//! names in code (`scripts/lab/labtool.py`) exists. A file moved or renamed
//! fails here, not in a reader's browser.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and docs/*.md, relative to the repository.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![PathBuf::from("README.md")];
    let mut names: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.strip_prefix(REPO).unwrap().to_path_buf())
        .collect();
    names.sort();
    docs.extend(names);
    docs
}

/// The targets of the Markdown links `[text](target)` in `text`, outside
/// fenced code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            out.push(after[..j].to_string());
            rest = &after[j + 1..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// What is wrong with the relative links of `doc` (its text `text`), as
/// `doc: target: why`; `exists` says whether a repository path exists.
fn broken_links(
    doc: &Path,
    text: &str,
    exists: &dyn Fn(&Path) -> bool,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<String> {
    let dir = doc.parent().unwrap_or(Path::new(""));
    let mut bad = Vec::new();
    for target in links(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
        let path = if file.is_empty() {
            doc.to_path_buf()
        } else {
            normalize(&dir.join(file))
        };
        if !exists(&path) {
            bad.push(format!(
                "{}: {target}: no {}",
                doc.display(),
                path.display()
            ));
            continue;
        }
        if !anchor.is_empty() && path.extension().is_some_and(|x| x == "md") {
            let text = read(&path).unwrap_or_default();
            if !anchors(&text).contains(anchor) {
                bad.push(format!(
                    "{}: {target}: no heading #{anchor} in {}",
                    doc.display(),
                    path.display()
                ));
            }
        }
    }
    bad
}

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

/// Repository paths named in code spans: `scripts/lab/labtool.py`, not
/// `vip-<scope>.owned` or `target/lab-demo.md` (made by a run).
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 7] = [
        "src/",
        "scripts/",
        "tests/",
        "docs/",
        "patroni-conf/",
        "benches/",
        "examples/",
    ];
    let mut out = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let plain = !span.contains(|c: char| {
            c.is_whitespace() || matches!(c, '<' | '>' | '*' | '{' | '}' | '$' | ',' | '|')
        });
        if plain && ROOTS.iter().any(|r| span.starts_with(r)) {
            out.push(span.trim_end_matches(':').to_string());
        }
    }
    out
}

#[test]
fn every_link_in_the_documents_resolves() {
    let repo = Path::new(REPO);
    let mut bad = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(repo.join(&doc)).unwrap();
        bad.extend(broken_links(
            &doc,
            &text,
            &|p| repo.join(p).exists(),
            &|p| std::fs::read_to_string(repo.join(p)).ok(),
        ));
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn every_repository_path_the_documents_name_exists() {
    let repo = Path::new(REPO);
    let mut bad = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(repo.join(&doc)).unwrap();
        for p in named_paths(&text) {
            if !repo.join(&p).exists() {
                bad.push(format!("{}: `{p}`", doc.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "paths that do not exist:\n{}",
        bad.join("\n")
    );
}

/// The checks can fail: a link to a missing file, a missing heading and a
/// missing path are each reported.
#[test]
fn the_checks_fail_on_a_wrong_document() {
    let doc = Path::new("docs/x.md");
    let text = "# Title\n\n[a](y.md) [b](x.md#title) [c](x.md#nothing) [d](../README.md)\n```\n[e](not-a-link.md)\n```\n`scripts/gone.sh`\n";
    let bad = broken_links(
        doc,
        text,
        &|p| p == Path::new("docs/x.md") || p == Path::new("README.md"),
        &|_| Some(text.to_string()),
    );
    assert_eq!(
        bad,
        [
            "docs/x.md: y.md: no docs/y.md",
            "docs/x.md: x.md#nothing: no heading #nothing in docs/x.md"
        ]
    );
    assert_eq!(named_paths(text), ["scripts/gone.sh"]);
    assert_eq!(
        slug(" Consul with ACLs and TLS"),
        "consul-with-acls-and-tls"
    );
}
