//! Faults struck on the world (their kinds and rates are in [`crate::faults`]): the seeded
//! fault processes, a split, and the heal that ends them all.

use std::collections::BTreeMap;

use super::{Ev, FaultKind, Partition, Phase, Recovery, World, MS};
use crate::faults::Occurrence;

impl World {
    /// Starts the fault processes until `until` (ns); at `until` everything heals.
    pub fn start_faults(&mut self, until: u64) {
        self.safety_end = until;
        let f = self.config.faults.clone();
        let processes = [
            (FaultKind::Reset, f.resets),
            (FaultKind::Clog, f.clogs),
            (FaultKind::Partition, f.partitions),
            (FaultKind::Crash, f.crashes),
            (FaultKind::Pause, f.pauses),
            (FaultKind::SlowReader, f.slow_readers),
        ];
        for (kind, occurrence) in processes {
            if let Some(o) = occurrence {
                let at = self.now + self.fault_rng.exp(o.mean_interval_ms) * MS;
                self.push(at, Ev::Fault(kind));
            }
        }
    }

    /// Splits the network now until `until` (ns): nothing passes between the nodes with
    /// `side_a[i]` set and the others, either way, and no dial across succeeds.
    pub fn split(&mut self, side_a: Vec<bool>, until: u64) {
        self.partition = Some(Partition {
            side_a,
            symmetric: true,
            until,
        });
        self.push(until, Ev::Recover(Recovery::Partition));
    }

    /// Ends every fault now: partitions and clogs lift, slow readers recover, paused nodes
    /// resume and crashed nodes restart. Fault processes stop.
    pub fn heal(&mut self) {
        self.phase = Phase::Liveness;
        self.partition = None;
        self.config.faults.connect_fail_probability = 0.0;
        for link in &mut self.links {
            for d in &mut link.dirs {
                d.clogged_until = 0;
            }
        }
        self.release_held_frames();
        self.slow_until_max = 0;
        for i in 0..self.nodes.len() as u32 {
            self.cold[i as usize].slow_until = 0;
            if self.nodes[i as usize].node.is_none() {
                self.restart(i);
            }
            if self.nodes[i as usize].paused {
                self.resume(i);
            }
        }
    }

    /// Frames a partition or a clog holds arrive with the heal, not at the fault's planned
    /// end: each queued delivery on a direction without a bandwidth backlog arrives at most
    /// one latency from now, each direction still in order.
    pub(super) fn release_held_frames(&mut self) {
        let now = self.now;
        let mut last: BTreeMap<(u32, u8), u64> = BTreeMap::new();
        for (at, ev) in self.queue.take_all() {
            let at = match &ev {
                Ev::Deliver { link, side, .. }
                    if at > now
                        && self.links[*link as usize].dirs[*side as usize].busy_until <= now =>
                {
                    let earliest = now + self.latency();
                    let previous = last.get(&(*link, *side)).copied().unwrap_or(now);
                    let released = at.min(earliest.max(previous));
                    last.insert((*link, *side), released);
                    released
                }
                _ => at,
            };
            self.queue.push(at, ev);
        }
        for ((link, side), at) in last {
            self.links[link as usize].dirs[side as usize].last_arrival = at;
        }
    }

    pub(super) fn occurrence(&self, kind: FaultKind) -> Option<Occurrence> {
        let f = &self.config.faults;
        match kind {
            FaultKind::Reset => f.resets,
            FaultKind::Clog => f.clogs,
            FaultKind::Partition => f.partitions,
            FaultKind::Crash => f.crashes,
            FaultKind::Pause => f.pauses,
            FaultKind::SlowReader => f.slow_readers,
        }
    }

    /// The links open at both ends, in order (the links list keeps every link ever made: a
    /// reset or a clog of a closed one would do nothing).
    fn open_links(&self) -> Vec<u32> {
        (0..self.links.len() as u32)
            .filter(|&l| self.links[l as usize].dirs.iter().all(|d| d.to_open))
            .collect()
    }

    pub(super) fn fault(&mut self, kind: FaultKind) {
        if self.phase != Phase::Safety || self.now >= self.safety_end {
            return;
        }
        let Some(o) = self.occurrence(kind) else {
            return;
        };
        let next = self.now + self.fault_rng.exp(o.mean_interval_ms).max(1) * MS;
        self.push(next, Ev::Fault(kind));
        let duration_ms = self
            .fault_rng
            .between(o.duration_min_ms, 2 * o.duration_min_ms);
        // Crashes and pauses strike the network's nodes (at least half of them stay up);
        // partitions and slow readers any node.
        let n = self.nodes.len() as u64;
        let members = u64::from(self.config.nodes);
        let live: Vec<u32> = (0..members as u32)
            .filter(|&i| self.nodes[i as usize].node.is_some() && !self.nodes[i as usize].paused)
            .collect();
        match kind {
            FaultKind::Reset => {
                let open = self.open_links();
                if !open.is_empty() {
                    let l = open[self.fault_rng.below(open.len() as u64) as usize];
                    self.reset(l);
                    self.stats.faults += 1;
                }
            }
            FaultKind::Clog => {
                let open = self.open_links();
                if !open.is_empty() {
                    let l = open[self.fault_rng.below(open.len() as u64) as usize] as usize;
                    let side = self.fault_rng.below(2) as usize;
                    self.links[l].dirs[side].clogged_until = self.now + duration_ms * MS;
                    self.stats.faults += 1;
                }
            }
            FaultKind::Partition => {
                if self.partition.is_some() {
                    return;
                }
                let until = self.now + duration_ms * MS;
                let style = self.fault_rng.below(3);
                let side_a: Vec<bool> = if style == 2 {
                    // One-way: one node's traffic out is lost; traffic to it flows.
                    let x = self.fault_rng.below(n);
                    (0..n).map(|i| i == x).collect()
                } else {
                    let mut sides: Vec<bool> = (0..n).map(|_| self.fault_rng.chance(0.5)).collect();
                    if sides.iter().all(|&a| a == sides[0]) {
                        // Every node on one side cuts nothing: one goes to the other.
                        let x = self.fault_rng.below(n) as usize;
                        sides[x] = !sides[x];
                    }
                    sides
                };
                self.partition = Some(Partition {
                    side_a,
                    symmetric: style == 0,
                    until,
                });
                self.push(until, Ev::Recover(Recovery::Partition));
                self.stats.faults += 1;
                self.stats.partitions += 1;
            }
            FaultKind::Crash => {
                // Keep at least half the nodes up.
                if live.len() as u64 * 2 > members {
                    let i = live[self.fault_rng.below(live.len() as u64) as usize];
                    self.crash(i, duration_ms);
                    self.stats.faults += 1;
                }
            }
            FaultKind::Pause => {
                if live.len() as u64 * 2 > members {
                    let i = live[self.fault_rng.below(live.len() as u64) as usize];
                    self.nodes[i as usize].paused = true;
                    self.paused_nodes += 1;
                    self.stats.faults += 1;
                    self.stats.pauses += 1;
                    self.push(
                        self.now + duration_ms * MS,
                        Ev::Recover(Recovery::Resume { node: i }),
                    );
                }
            }
            FaultKind::SlowReader => {
                let i = self.fault_rng.below(n) as usize;
                self.cold[i].slow_until = self.now + duration_ms * MS;
                self.slow_until_max = self.slow_until_max.max(self.cold[i].slow_until);
                self.stats.faults += 1;
            }
        }
    }
}
