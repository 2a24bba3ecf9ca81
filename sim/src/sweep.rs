//! Seed sweeps: many small runs with swarm faults, each derived from its seed (each scenario's
//! `sweep_params`), spread over the machine's cores; a shard option splits a sweep across
//! machines.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Which part of a sweep this process runs: seeds whose position `k` (from 0, the first seed's)
/// has `k % count == index`.
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

/// How far a sweep has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Seeds run.
    pub done: usize,
    /// Seeds this shard runs in all.
    pub total: usize,
    /// Runs of those that failed.
    pub failed: usize,
}

/// Runs `run` for this shard's seeds of `seeds` on `threads` threads; the results in seed
/// order.
pub fn run<R: Send>(
    seeds: RangeInclusive<u64>,
    shard: Shard,
    threads: usize,
    run: impl Fn(u64) -> R + Sync,
) -> Vec<R> {
    run_with_progress(seeds, shard, threads, run, |_| false, None)
}

/// [`run`], telling `progress` how far it has got (counting the results that `failed`
/// judges failed) each time `every` has passed since its last report (or the start), on a
/// result or in between. Nothing is reported in a sweep shorter than `every`.
pub fn run_with_progress<R: Send>(
    seeds: RangeInclusive<u64>,
    shard: Shard,
    threads: usize,
    run: impl Fn(u64) -> R + Sync,
    failed: impl Fn(&R) -> bool,
    progress: Option<(Duration, &mut dyn FnMut(Progress))>,
) -> Vec<R> {
    let first = *seeds.start();
    let mine: Vec<u64> = seeds
        .filter(|s| (s - first) % shard.count == shard.index)
        .collect();
    let next = AtomicUsize::new(0);
    let (sink, finished) = mpsc::channel();
    let mut results = Vec::with_capacity(mine.len());
    let mut state = Progress {
        done: 0,
        total: mine.len(),
        failed: 0,
    };
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let sink = sink.clone();
            let (mine, next, run) = (&mine, &next, &run);
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = mine.get(k) else { break };
                // The receiver lives until every worker has ended.
                let _ = sink.send((seed, run(seed)));
            });
        }
        drop(sink);
        let Some((every, report)) = progress else {
            results.extend(finished.iter());
            return;
        };
        let mut last = Instant::now();
        loop {
            // At least 1 ms, so that a zero `every` reports each result without spinning.
            let wait = every
                .saturating_sub(last.elapsed())
                .max(Duration::from_millis(1));
            match finished.recv_timeout(wait) {
                Ok((seed, result)) => {
                    state.done += 1;
                    state.failed += usize::from(failed(&result));
                    results.push((seed, result));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last.elapsed() >= every {
                report(state);
                last = Instant::now();
            }
        }
    });
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
        let mine = run(1..=10, Shard { index: 1, count: 3 }, 3, |seed| seed);
        assert_eq!(mine, [2, 5, 8]);
        // A sweep that starts further on counts positions from its first seed.
        let later = run(101..=110, Shard { index: 1, count: 3 }, 3, |seed| seed);
        assert_eq!(later, [102, 105, 108]);
    }

    #[test]
    fn progress_counts_every_seed_and_each_failure() {
        let mut reports = Vec::new();
        let mut record = |p: Progress| reports.push(p);
        let odd = |seed: &u64| seed % 2 == 1;
        let every = Some((Duration::ZERO, &mut record as &mut dyn FnMut(Progress)));
        let results = run_with_progress(1..=9, Shard::ALL, 3, |seed| seed, odd, every);
        assert_eq!(results, (1..=9).collect::<Vec<_>>());
        // With no wait between reports, each result is reported as it lands.
        let done: Vec<usize> = reports.iter().map(|p| p.done).collect();
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
        assert!((1..=9).all(|k| done.contains(&k)), "{done:?}");
        let last = reports.last().copied();
        assert_eq!(
            last,
            Some(Progress {
                done: 9,
                total: 9,
                failed: 5
            })
        );
        // A report a minute apart never comes in a sweep this short.
        let mut quiet = 0;
        let mut count = |_: Progress| quiet += 1;
        let minute = Some((
            Duration::from_secs(60),
            &mut count as &mut dyn FnMut(Progress),
        ));
        run_with_progress(1..=9, Shard::ALL, 3, |seed| seed, odd, minute);
        assert_eq!(quiet, 0);
    }
}
