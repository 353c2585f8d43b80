//! What the benchmarks share: their knobs, the release binary, medians.

use std::path::PathBuf;

/// A count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The release binary, which the benchmarks measure (not the debug build):
/// `$CARGO_TARGET_DIR/release/patroni-hook`, or `target/release/...`.
pub fn release_hook() -> PathBuf {
    // Where cargo put it: $CARGO_TARGET_DIR when set, else ./target.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let hook = target.join("release/patroni-hook");
    assert!(
        hook.exists(),
        "build the release binary first: cargo build --release ({})",
        hook.display()
    );
    hook
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The largest value of `v` (0 when empty).
pub fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(0.0, f64::max)
}
