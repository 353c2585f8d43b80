//! The example files of patroni-conf/, as the example tests read them.

use std::path::Path;

/// patroni-conf/ of this checkout.
pub const CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/patroni-conf");

/// The text of patroni-conf/`name`.
pub fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(CONF).join(name))
        .unwrap_or_else(|e| panic!("reading patroni-conf/{name}: {e}"))
}

/// Replaces each `from` with `to`, failing if a `from` is not in the text:
/// a substitution that silently matches nothing would test the wrong file.
pub fn subst(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = text.to_string();
    for (from, to) in pairs {
        assert!(s.contains(from), "expected {from:?} in the example");
        s = s.replace(from, to);
    }
    s
}
