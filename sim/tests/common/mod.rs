//! What the sweep tests share.

use std::collections::BTreeSet;

/// Asserts that a sweep's runs, as (their `links` header, their `noise_closes`), covered every
/// link setup the sweeps alternate (SPEC.md §16), and that every run with a wrong-secret node
/// had its handshakes refused (each run checked that it never linked).
pub fn assert_sweep_links<'a>(runs: impl Iterator<Item = (&'a str, u64)> + Clone) {
    let kinds: BTreeSet<&str> = runs.clone().map(|(links, _)| links).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "noise, open network",
            "noise, private network",
            "noise, private network, 1 wrong-secret node"
        ]
    );
    assert!(runs
        .filter(|(links, _)| links.contains("wrong-secret"))
        .all(|(_, closes)| closes > 0));
}
