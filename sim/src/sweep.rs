//! Seed sweeps: many small runs with swarm faults, each derived from its seed (each scenario's
//! `sweep_params`), spread over the machine's cores; a shard option splits a sweep across
//! machines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which part of a sweep this process runs: seeds whose position `k` has `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u64,
    /// Shards in all.
    pub count: u64,
}

impl Shard {
    /// The whole sweep.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with `I < N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard takes I/N with 0 <= I < N, got '{s}'");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// A number from the environment variable `var` (a sweep's size, a bound), or `default` when
/// it is unset or not a number: how tests let `WEFT_*_SEEDS=K` enlarge their sweeps.
pub fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `run` for this shard's seeds of `1..=seeds` on `threads` threads; the results in seed
/// order.
pub fn run<R: Send>(
    seeds: u64,
    shard: Shard,
    threads: usize,
    run: impl Fn(u64) -> R + Sync,
) -> Vec<R> {
    let mine: Vec<u64> = (1..=seeds)
        .filter(|s| (s - 1) % shard.count == shard.index)
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(mine.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = mine.get(k) else { break };
                let result = run(seed);
                // A poisoned lock means another run panicked: that panic is reported anyway.
                if let Ok(mut r) = results.lock() {
                    r.push((seed, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_the_seeds() {
        assert_eq!(Shard::parse("1/3"), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "x/2", "1", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let p = crate::scenario::mesh::sweep_params(7);
        assert!(p.degree < p.nodes && p.broadcasts >= 5);
        let mine = run(10, Shard { index: 1, count: 3 }, 3, |seed| seed);
        assert_eq!(mine, [2, 5, 8]);
    }
}
