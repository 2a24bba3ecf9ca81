//! The Chord scenario: nodes join one by one through random members; once the ring is
//! correct (every successor, predecessor and successor list matches the true ring of live
//! nodes) and the fingers have settled, keys are put and lookups measured (hops, and every
//! owner checked against the true ring). Optionally a fraction of the nodes then crashes at
//! once (paper §6.4), or nodes join and crash as Poisson processes while lookups run
//! (paper §6.5).

/// A line for `WEFT_CHORD_DEBUG` on stderr; a closed stderr is ignored (`eprintln!` would
/// panic).
macro_rules! debug_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use weft_engine::chord::{ChordConfig, ChordResult};
use weft_engine::chord::{ChordEvent, ChordRequest};
use weft_engine::Duration;

use crate::chord_net::{ChordNet, ChordNetConfig};

mod adversary;
mod tracker;
use crate::rng::SimRng;
use crate::scenario::{ms_or_never, Cell, Row, RunHeader, Scenario};

const MS: u64 = 1_000_000;
/// What the report's `links` says: Chord machines exchange messages, not bytes on links.
const NO_LINKS: &str = "none (message-level Chord machines)";
const S: u64 = 1_000 * MS;

/// What a chord run does.
#[derive(Debug, Clone)]
pub struct ChordParams {
    /// Nodes (before churn).
    pub nodes: u32,
    /// Root seed.
    pub seed: u64,
    /// Lookups measured (in churn mode: one per simulated second).
    pub lookups: u32,
    /// Keys put before failures or churn, and read back at the end.
    pub keys: u32,
    /// Fraction of nodes crashing at once after the keys are put.
    pub fail_fraction: f64,
    /// Joins and crashes per second each (Poisson), with stabilization every 30 s.
    pub churn: Option<f64>,
    /// Probability a message is lost (faults).
    pub loss: f64,
    /// Swarm faults after the keys are put: message loss, crashes, graceful leaves and
    /// (re)joins drawn from the seed for a minute, then a heal; the checks run after it.
    pub swarm: bool,
    /// One malicious member joins after the puts (SPEC.md §20.7).
    pub adversary: bool,
    /// The drops tracker phase with this many flood records of fresh keys (SPEC.md §20.7).
    pub tracker_flood: Option<u32>,
}

impl ChordParams {
    /// A run without failures or churn.
    pub fn new(nodes: u32, seed: u64, lookups: u32) -> ChordParams {
        ChordParams {
            nodes,
            seed,
            lookups,
            keys: 100,
            fail_fraction: 0.0,
            churn: None,
            loss: 0.0,
            swarm: false,
            adversary: false,
            tracker_flood: None,
        }
    }

    /// The `weft sim chord` line that replays this run.
    pub fn replay(&self) -> String {
        let mut s = format!(
            "weft sim chord --nodes {} --seed {} --lookups {} --keys {}",
            self.nodes, self.seed, self.lookups, self.keys
        );
        if self.fail_fraction > 0.0 {
            s.push_str(&format!(" --fail-fraction {}", self.fail_fraction));
        }
        if let Some(r) = self.churn {
            s.push_str(&format!(" --churn {r}"));
        }
        if self.loss > 0.0 {
            s.push_str(&format!(" --loss {}", self.loss));
        }
        if self.swarm {
            s.push_str(" --swarm");
        }
        if self.adversary {
            s.push_str(" --adversary");
        }
        if let Some(n) = self.tracker_flood {
            s.push_str(&format!(" --tracker-flood {n}"));
        }
        s
    }
}

/// What a chord run measured: the shared header (nodes: at the start; digest: over every
/// delivered frame), then Chord's own keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChordReport {
    /// What every report shares.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Lookups measured.
    pub lookups: u64,
    /// Mean nodes contacted per lookup.
    pub mean_hops: f64,
    /// Median hops.
    pub p50_hops: u32,
    /// 99th-percentile hops.
    pub p99_hops: u32,
    /// Lookups that ended in an error or named a node that is not the true owner.
    pub failed_lookup_fraction: f64,
    /// Keys put.
    pub keys: u64,
    /// Keys with a live holder that a get could not return.
    pub keys_lost: u64,
    /// Keys all of whose holders crashed (not counted as lost).
    pub keys_without_live_holder: u64,
    /// Simulated ms from the last join until the ring was first correct.
    pub ring_correct_ms: Option<u64>,
    /// Fraction of fingers pointing at their true owner when lookups began.
    pub fingers_correct_fraction: f64,
    /// Nodes that crashed or left (at once, under churn, or in the swarm).
    pub failed_nodes: u64,
    /// Chord messages delivered.
    pub messages: u64,
    /// Keys deleted by their writer after the puts (every tenth), checked to stay deleted.
    pub keys_deleted: u64,
    /// Entries honest nodes refused or dropped as forged (bad signature or position).
    pub entries_invalid: u64,
    /// Records the malicious member held at the end (handed to it by the node its ground id
    /// sits below, and since).
    pub adversary_records: u64,
    /// Tracker phase: honest holders that announced a drop before the flood.
    pub tracker_holders: u64,
    /// Tracker phase: of them, those a get of the drop's holders key found at the end.
    pub tracker_holders_found: u64,
    /// Tracker phase: valid holder records of fresh keys the flooding node offered.
    pub tracker_flood: u64,
    /// Tracker phase: of them, the most one replica of the key held at the end.
    pub tracker_flood_held: u64,
    /// Tracker phase: forged holder and node-key entries the flooding node offered.
    pub tracker_forged: u64,
    /// Tracker phase: forged entries any honest node held at the end (must be 0).
    pub tracker_forged_held: u64,
    /// Tracker phase: replicas that stored a holder announcing after the flood (0 while the
    /// flood fills the key).
    pub tracker_late_replicas: u64,
}

impl Scenario for ChordReport {
    fn header(&self) -> &RunHeader {
        &self.header
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            ("lookups", self.lookups.to_string()),
            ("mean hops", format!("{:.3}", self.mean_hops)),
            ("p50 hops", self.p50_hops.to_string()),
            ("p99 hops", self.p99_hops.to_string()),
            (
                "failed lookup fraction",
                format!("{:.5}", self.failed_lookup_fraction),
            ),
            ("keys", self.keys.to_string()),
            ("keys lost", self.keys_lost.to_string()),
            (
                "keys without live holder",
                self.keys_without_live_holder.to_string(),
            ),
            (
                "ring correct",
                ms_or_never(self.ring_correct_ms, " after last join"),
            ),
            (
                "fingers correct",
                format!("{:.4}", self.fingers_correct_fraction),
            ),
            ("failed nodes", self.failed_nodes.to_string()),
            ("messages", self.messages.to_string()),
            ("keys deleted", self.keys_deleted.to_string()),
            ("forged entries dropped", self.entries_invalid.to_string()),
            ("adversary records", self.adversary_records.to_string()),
            (
                "tracker holders found",
                format!("{} of {}", self.tracker_holders_found, self.tracker_holders),
            ),
            (
                "tracker flood held",
                format!("{} of {}", self.tracker_flood_held, self.tracker_flood),
            ),
            (
                "tracker forged held",
                format!("{} of {}", self.tracker_forged_held, self.tracker_forged),
            ),
            (
                "tracker late holder",
                format!("{} replicas", self.tracker_late_replicas),
            ),
        ]
    }

    fn cells(&self) -> Vec<Cell> {
        let h = &self.header;
        vec![
            ("nodes", 6, h.nodes.to_string()),
            ("lookups", 9, self.lookups.to_string()),
            ("mean hops", 10, format!("{:.3}", self.mean_hops)),
            ("p50", 6, self.p50_hops.to_string()),
            ("p99", 6, self.p99_hops.to_string()),
            ("failed", 9, format!("{:.4}", self.failed_lookup_fraction)),
            ("lost", 6, self.keys_lost.to_string()),
            ("ring ok", 12, ms_or_never(self.ring_correct_ms, "")),
            ("events", 9, h.events.to_string()),
            ("events/s", 11, h.events_per_sec.to_string()),
        ]
    }
}

/// Hop counts and failures of a batch of lookups.
#[derive(Default)]
struct LookupStats {
    hops: Vec<u32>,
    failed: u64,
}

/// Runs one scenario.
pub fn run(p: &ChordParams) -> ChordReport {
    let wall = Instant::now();
    let n = p.nodes.max(1) as usize;
    let mut chord = ChordConfig::default();
    // Room for the whole network's joins to queue lookups at one node.
    chord.ops_max = chord
        .ops_max
        .max(4 * p.lookups as usize + 4 * p.keys as usize);
    let churn_extra = p
        .churn
        .map_or(0, |r| (r * p.lookups as f64 * 2.0) as usize + 16)
        + if p.swarm { n / 4 + 2 } else { 0 };
    let adversary_slots = usize::from(p.adversary);
    let mut net = ChordNet::new(
        n + adversary_slots + churn_extra,
        ChordNetConfig {
            seed: p.seed,
            chord,
            latency_ms: (5, 50),
            loss: p.loss,
        },
    );
    let mut rng = SimRng::child(p.seed, "chord scenario", 0);
    let mut violation: Option<String> = None;

    // Joins: one every `spacing`, each through a random running node.
    let spacing = (20 * S / n as u64).clamp(MS, 50 * MS);
    net.start(0, None);
    for i in 1..n {
        net.run_until(net.now_ns() + spacing);
        let via = rng.below(i as u64) as usize;
        net.start(i, Some(via));
    }
    let last_join = net.now_ns();
    let ring_correct_ms = wait_ring(&mut net, 600 * S);
    if ring_correct_ms.is_none() {
        violation.get_or_insert_with(|| {
            format!(
                "ring not correct: {}",
                net.check_ring().err().unwrap_or_default()
            )
        });
    }
    let ring_correct_ms = ring_correct_ms.map(|t| (t - last_join) / MS);
    wait_fingers(&mut net, 600 * S);
    let fingers_correct_fraction = net.fingers_correct_fraction();

    // Keys.
    let keys: Vec<Vec<u8>> = (0..p.keys)
        .map(|k| format!("key-{k}").into_bytes())
        .collect();
    let mut next_request = 1u64;
    let mut writers = Vec::with_capacity(keys.len());
    for k in &keys {
        let at = pick_live(&net, &mut rng);
        writers.push(at);
        let req = ChordRequest::Put {
            key: k.clone(),
            value: k.iter().rev().copied().collect(),
            lifetime_ms: None,
        };
        net.request(at, next_request, req);
        next_request += 1;
    }
    let t = net.now_ns() + 20 * S;
    net.run_until(t);
    let failed_puts = net
        .app_events
        .drain(..)
        .filter(|(_, e)| !matches!(e.result, Ok(ChordResult::Put { replicas: 5, .. })))
        .count();
    if failed_puts > 0 && p.loss == 0.0 {
        violation.get_or_insert_with(|| format!("{failed_puts} puts not stored 5 times"));
    }
    // Every tenth key is deleted by its writer.
    let deleted: Vec<usize> = (0..keys.len()).filter(|k| k % 10 == 9).collect();
    for &k in &deleted {
        let at = writers[k];
        let req = ChordRequest::Delete {
            key: keys[k].clone(),
            value: None,
        };
        net.request(at, next_request, req);
        next_request += 1;
    }
    let t = net.now_ns() + 20 * S;
    net.run_until(t);
    let failed_deletes = net
        .app_events
        .drain(..)
        .filter(|(_, e)| !matches!(e.result, Ok(ChordResult::Delete { replicas: 5, .. })))
        .count();
    if failed_deletes > 0 && p.loss == 0.0 {
        violation.get_or_insert_with(|| format!("{failed_deletes} deletes not stored 5 times"));
    }
    if p.adversary {
        adversary::attack(&mut net, &mut rng, n, &keys, &writers);
        if wait_ring(&mut net, 600 * S).is_none() {
            violation.get_or_insert_with(|| {
                format!(
                    "ring not correct after the adversary joined: {}",
                    net.check_ring().err().unwrap_or_default()
                )
            });
        }
    }
    let first_fresh = n + adversary_slots;

    let mut failed_nodes = 0u64;
    if p.swarm {
        failed_nodes += swarm(&mut net, &mut rng, n, first_fresh);
        // Requests sent before the heal may still time out after it (every send lost) and
        // briefly drop a live neighbour: let them run out, then wait for the ring.
        let t = net.now_ns() + 5 * S;
        net.run_until(t);
        rejoin_stranded(&mut net, &mut rng);
        if wait_ring(&mut net, 600 * S).is_none() {
            violation.get_or_insert_with(|| {
                format!(
                    "ring not correct after the heal: {}",
                    net.check_ring().err().unwrap_or_default()
                )
            });
        }
    }
    let stats;
    if let Some(rate) = p.churn {
        stats = churn(
            &mut net,
            &mut rng,
            p,
            rate,
            first_fresh,
            &mut next_request,
            &mut failed_nodes,
        );
        if wait_ring(&mut net, 600 * S).is_none() {
            violation.get_or_insert_with(|| {
                format!(
                    "ring not correct after churn: {}",
                    net.check_ring().err().unwrap_or_default()
                )
            });
        }
    } else {
        let first = lookups(&mut net, &mut rng, p.lookups, &mut next_request);
        if p.fail_fraction > 0.0 {
            let live = net.live();
            let fail = ((live.len() as f64) * p.fail_fraction).round() as usize;
            let mut order = live.clone();
            shuffle(&mut order, &mut rng);
            for &i in order.iter().take(fail.min(live.len().saturating_sub(1))) {
                net.crash(i);
                failed_nodes += 1;
            }
            if wait_ring(&mut net, 600 * S).is_none() {
                violation.get_or_insert_with(|| {
                    format!(
                        "ring not correct after failures: {}",
                        net.check_ring().err().unwrap_or_default()
                    )
                });
            }
            wait_fingers(&mut net, 600 * S);
            stats = lookups(&mut net, &mut rng, p.lookups, &mut next_request);
        } else {
            stats = first;
        }
        if stats.failed > 0 && p.loss == 0.0 {
            violation.get_or_insert_with(|| format!("{} lookups failed", stats.failed));
        }
    }

    let tracker = p.tracker_flood.map(|count| {
        let strict = p.loss == 0.0;
        tracker::flood(&mut net, &mut rng, p.seed, count, &mut next_request, strict)
    });
    if let Some(v) = tracker.as_ref().and_then(|t| t.violation.clone()) {
        violation.get_or_insert(v);
    }
    let tracker = tracker.unwrap_or_default();

    // Read every key back from an honest node; a key counts only while an honest live node
    // holds it.
    let ring = net.true_ring();
    let bad = net.malicious();
    let mut keys_lost = 0u64;
    let mut keys_without_live_holder = 0u64;
    let mut gets = BTreeMap::new();
    for (k, key) in keys.iter().enumerate() {
        if net.holders(&ring, key).iter().all(|&h| Some(h) == bad) {
            keys_without_live_holder += 1;
            continue;
        }
        let at = pick_honest(&net, &mut rng);
        net.request(at, next_request, ChordRequest::Get { key: key.clone() });
        gets.insert(next_request, k);
        next_request += 1;
    }
    let t = net.now_ns() + 30 * S;
    net.run_until(t);
    let mut found = 0u64;
    let events: Vec<_> = net.app_events.drain(..).collect();
    for (_, e) in events {
        let Some(&k) = gets.get(&e.request) else {
            continue;
        };
        let want: Vec<u8> = keys[k].iter().rev().copied().collect();
        let writer = net.identity(writers[k]).public_key();
        let Ok(ChordResult::Get { values }) = &e.result else {
            continue;
        };
        // Whatever a get returns in the writer's name is what the writer wrote.
        if let Some(v) = values
            .iter()
            .find(|v| v.writer == writer && v.value[..] != want[..])
        {
            violation.get_or_insert_with(|| format!("key {k}: forged value {:?}", v.value));
        }
        let has = values
            .iter()
            .any(|v| v.writer == writer && v.value[..] == want[..]);
        if deleted.contains(&k) {
            if has && p.loss == 0.0 {
                violation.get_or_insert_with(|| format!("deleted key {k} came back"));
            }
            found += 1;
        } else if has {
            found += 1;
        }
    }
    keys_lost += gets.len() as u64 - found;
    if keys_lost > 0 && p.loss == 0.0 {
        violation.get_or_insert_with(|| format!("{keys_lost} keys lost"));
    }
    let entries_invalid = net
        .live()
        .into_iter()
        .filter(|&i| Some(i) != bad)
        .filter_map(|i| net.node(i).map(|c| c.metrics().entries_invalid))
        .sum();

    let mut hops = stats.hops.clone();
    hops.sort_unstable();
    let measured = hops.len() as u64 + stats.failed;
    let pct = |q: f64| -> u32 {
        if hops.is_empty() {
            0
        } else {
            hops[((hops.len() as f64 * q).ceil() as usize).clamp(1, hops.len()) - 1]
        }
    };
    ChordReport {
        header: RunHeader::new("chord", p.seed, p.nodes, NO_LINKS.into(), p.replay()).finish(
            wall,
            net.events,
            net.digest(),
            violation,
        ),
        lookups: measured,
        mean_hops: if hops.is_empty() {
            0.0
        } else {
            hops.iter().map(|&h| h as f64).sum::<f64>() / hops.len() as f64
        },
        p50_hops: pct(0.5),
        p99_hops: pct(0.99),
        failed_lookup_fraction: if measured == 0 {
            0.0
        } else {
            stats.failed as f64 / measured as f64
        },
        keys: keys.len() as u64,
        keys_lost,
        keys_without_live_holder,
        ring_correct_ms,
        fingers_correct_fraction,
        failed_nodes,
        messages: net.messages,
        keys_deleted: deleted.len() as u64,
        entries_invalid,
        adversary_records: bad
            .and_then(|m| net.node(m))
            .map_or(0, |c| c.records_len() as u64),
        tracker_holders: tracker.holders,
        tracker_holders_found: tracker.holders_found,
        tracker_flood: tracker.flood,
        tracker_flood_held: tracker.flood_held,
        tracker_forged: tracker.forged,
        tracker_forged_held: tracker.forged_held,
        tracker_late_replicas: tracker.late_replicas,
    }
}

/// The chord parameters a sweep derives from `seed`: 16 to 40 nodes, 40 keys, 200 lookups,
/// swarm faults, one malicious member.
pub fn sweep_params(seed: u64) -> ChordParams {
    ChordParams {
        swarm: true,
        adversary: true,
        keys: 40,
        ..ChordParams::new(16 + (seed % 25) as u32, seed, 200)
    }
}

/// A live node other than the malicious member.
fn pick_honest(net: &ChordNet, rng: &mut SimRng) -> usize {
    let live: Vec<usize> = net
        .live()
        .into_iter()
        .filter(|&i| Some(i) != net.malicious())
        .collect();
    live[rng.below(live.len() as u64) as usize]
}

fn pick_live(net: &ChordNet, rng: &mut SimRng) -> usize {
    let live = net.live();
    live[rng.below(live.len() as u64) as usize]
}

fn shuffle(v: &mut [usize], rng: &mut SimRng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Runs until the ring is correct (checked every simulated second); the time it was.
fn wait_ring(net: &mut ChordNet, limit_ns: u64) -> Option<u64> {
    let deadline = net.now_ns() + limit_ns;
    loop {
        if net.check_ring().is_ok() {
            return Some(net.now_ns());
        }
        if net.now_ns() >= deadline {
            return None;
        }
        let t = net.now_ns() + S;
        net.run_until(t);
    }
}

/// Runs until every finger is right (checked every 5 simulated seconds), at most `limit_ns`.
fn wait_fingers(net: &mut ChordNet, limit_ns: u64) {
    let deadline = net.now_ns() + limit_ns;
    while net.fingers_correct_fraction() < 1.0 && net.now_ns() < deadline {
        let t = net.now_ns() + 5 * S;
        net.run_until(t);
    }
}

/// `count` lookups of random positions from random live nodes, all started at once; each
/// owner is checked against the true ring when the batch is over (the ring does not change).
fn lookups(net: &mut ChordNet, rng: &mut SimRng, count: u32, next: &mut u64) -> LookupStats {
    let mut targets = BTreeMap::new();
    for _ in 0..count {
        let at = pick_live(net, rng);
        let target = rng.next_u64();
        net.request(at, *next, ChordRequest::Lookup { target });
        targets.insert(*next, target);
        *next += 1;
    }
    let t = net.now_ns() + 30 * S;
    net.run_until(t);
    let ring = net.true_ring();
    let mut stats = LookupStats::default();
    let events: Vec<(usize, ChordEvent)> = net.app_events.drain(..).collect();
    let mut answered = 0u64;
    for (_, e) in events {
        let Some(&target) = targets.get(&e.request) else {
            continue;
        };
        answered += 1;
        match e.result {
            Ok(ChordResult::Lookup { owner, hops }) => {
                let right = net.true_owner(&ring, target).map(|o| net.peer(o).node);
                if right == Some(owner) {
                    stats.hops.push(hops);
                } else {
                    stats.failed += 1;
                    if std::env::var_os("WEFT_CHORD_DEBUG").is_some() {
                        debug_line!(
                            "lookup for {target:x}: owner {:?} want {:?}",
                            net.index_of(&owner),
                            net.true_owner(&ring, target)
                        );
                    }
                }
            }
            Err(e) => {
                stats.failed += 1;
                if std::env::var_os("WEFT_CHORD_DEBUG").is_some() {
                    debug_line!("lookup for {target:x}: {e}");
                }
            }
            _ => stats.failed += 1,
        }
    }
    stats.failed += targets.len() as u64 - answered;
    stats
}

/// One simulated minute of faults drawn from the seed, then a heal. Returns the nodes that
/// crashed or left.
fn swarm(net: &mut ChordNet, rng: &mut SimRng, n: usize, first_fresh: usize) -> u64 {
    let loss = rng.unit() * 0.05;
    net.set_loss(loss);
    let events = rng.below(n as u64 / 4 + 2) as usize;
    let end = net.now_ns() + 60 * S;
    let mut gone = 0u64;
    let mut fresh = first_fresh;
    for _ in 0..events {
        let t = net.now_ns() + rng.below(60 * S / (events as u64 + 1)).max(MS);
        net.run_until(t);
        // The malicious member stays to the end.
        let live: Vec<usize> = net
            .live()
            .into_iter()
            .filter(|&i| Some(i) != net.malicious())
            .collect();
        match rng.below(3) {
            // A crash or a graceful leave, keeping more than half the nodes.
            0 | 1 if live.len() > n / 2 + 1 => {
                let i = live[rng.below(live.len() as u64) as usize];
                if rng.chance(0.5) {
                    net.crash(i);
                } else {
                    net.leave(i);
                }
                if std::env::var_os("WEFT_CHORD_DEBUG").is_some() {
                    debug_line!("{} ms: node {i} down", net.now_ns() / MS);
                }
                gone += 1;
            }
            _ if fresh < net.len() => {
                let via = live[rng.below(live.len() as u64) as usize];
                net.start(fresh, Some(via));
                if std::env::var_os("WEFT_CHORD_DEBUG").is_some() {
                    debug_line!("{} ms: node {fresh} joins via {via}", net.now_ns() / MS);
                }
                fresh += 1;
            }
            _ => {}
        }
    }
    net.run_until(end);
    net.set_loss(0.0);
    gone
}

/// Paper §6.5: joins and crashes as Poisson processes at `rate` per second each, stabilization
/// every 30 s on average, one lookup per second; a lookup fails if it errs or names a node
/// that is not the true owner when it ends.
fn churn(
    net: &mut ChordNet,
    rng: &mut SimRng,
    p: &ChordParams,
    rate: f64,
    first_fresh: usize,
    next: &mut u64,
    crashed: &mut u64,
) -> LookupStats {
    let slow = ChordConfig {
        stabilize_interval: Duration::from_secs(30),
        fix_fingers_interval: Duration::from_secs(30),
        check_predecessor_interval: Duration::from_secs(30),
        ..ChordConfig::default()
    };
    net.set_chord_config(slow);
    let mean_gap_ms = (1000.0 / rate) as u64;
    let mut next_join = net.now_ns() + rng.exp(mean_gap_ms) * MS;
    let mut next_fail = net.now_ns() + rng.exp(mean_gap_ms) * MS;
    let mut next_lookup = net.now_ns() + rng.exp(1000) * MS;
    let mut unused = first_fresh;
    let mut stats = LookupStats::default();
    let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
    let mut issued = 0u32;
    while issued < p.lookups || !pending.is_empty() {
        let t = next_join.min(next_fail).min(next_lookup);
        net.run_until(t);
        collect(net, &mut pending, &mut stats);
        if t == next_lookup {
            next_lookup += rng.exp(1000).max(1) * MS;
            if issued < p.lookups {
                let at = pick_live(net, rng);
                let target = rng.next_u64();
                net.request(at, *next, ChordRequest::Lookup { target });
                pending.insert(*next, target);
                *next += 1;
                issued += 1;
            }
        } else if t == next_join {
            next_join += rng.exp(mean_gap_ms).max(1) * MS;
            if unused < net.len() {
                let via = pick_live(net, rng);
                net.start(unused, Some(via));
                unused += 1;
            }
        } else {
            next_fail += rng.exp(mean_gap_ms).max(1) * MS;
            let live = net.live();
            if live.len() > 2 {
                net.crash(live[rng.below(live.len() as u64) as usize]);
                *crashed += 1;
            }
        }
    }
    net.set_chord_config(ChordConfig::default());
    rejoin_stranded(net, rng);
    stats
}

/// Live nodes still off the ring join again through a live honest member on it, as their
/// operators would: a node whose join went to a member that went down before answering
/// knows no other member, and retries through that one only (SPEC.md §20.3). Nothing is
/// drawn from `rng` when no node is stranded.
fn rejoin_stranded(net: &mut ChordNet, rng: &mut SimRng) {
    let on_ring = |net: &ChordNet, i: usize| net.node(i).is_some_and(|c| c.is_joined());
    let live = net.live();
    let (members, stranded): (Vec<usize>, Vec<usize>) =
        live.into_iter().partition(|&i| on_ring(net, i));
    let members: Vec<usize> = members
        .into_iter()
        .filter(|&i| Some(i) != net.malicious())
        .collect();
    if members.is_empty() {
        return;
    }
    for i in stranded {
        let via = members[rng.below(members.len() as u64) as usize];
        if std::env::var_os("WEFT_CHORD_DEBUG").is_some() {
            debug_line!("{} ms: node {i} joins again via {via}", net.now_ns() / MS);
        }
        net.rejoin(i, via);
    }
}

/// Scores finished churn lookups against the true ring at the time they finished.
fn collect(net: &mut ChordNet, pending: &mut BTreeMap<u64, u64>, stats: &mut LookupStats) {
    if net.app_events.is_empty() {
        return;
    }
    let ring = net.true_ring();
    let events: Vec<(usize, ChordEvent)> = net.app_events.drain(..).collect();
    for (_, e) in events {
        let Some(target) = pending.remove(&e.request) else {
            continue;
        };
        match e.result {
            Ok(ChordResult::Lookup { owner, hops }) => {
                let right = net.true_owner(&ring, target).map(|o| net.peer(o).node);
                if right == Some(owner) {
                    stats.hops.push(hops);
                } else {
                    stats.failed += 1;
                }
            }
            _ => stats.failed += 1,
        }
    }
}
