//! Scenarios: what a `weft sim` run does with a world, and the report it prints. Every report
//! embeds a [`RunHeader`] and implements [`Scenario`], through which the command line shows
//! any of them: as text, as JSON, as a row of the default table, or summed over a sweep.

pub mod chord;
pub mod drops;
pub mod mesh;
pub mod p2pt;
pub mod replicate;
pub mod table;

use std::time::Instant;

use serde::Serialize;

use crate::world::{World, MS};

/// What every run's report shares. Its JSON keys come first in each report (SPEC.md §16,
/// §20.7: the shared keys).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunHeader {
    /// The protocol exercised: `"mesh"`, `"table"` or `"chord"`.
    pub protocol: &'static str,
    /// The root seed.
    pub seed: u64,
    /// Nodes (at the start; wrong-secret nodes not counted).
    pub nodes: u32,
    /// How the links are protected: `noise, open network`, `noise, private network`, with
    /// `, K wrong-secret node(s)`, or `PLAINTEXT (simulation only)`; Chord's message-level
    /// network has none.
    pub links: String,
    /// Events processed.
    pub events: u64,
    /// Wall-clock ms the run took.
    pub wall_ms: u64,
    /// Events per wall-clock second.
    pub events_per_sec: u64,
    /// BLAKE3 trace digest (hex).
    pub digest: String,
    /// The one-line command that replays this run.
    pub replay: String,
    /// Whether every invariant held.
    pub ok: bool,
    /// The broken invariant, if any.
    pub violation: Option<String>,
}

impl RunHeader {
    /// The header of a run of `protocol` with `seed`, `nodes` and `links`, replayed by
    /// `replay`; the run's measures come with [`RunHeader::finish`].
    pub fn new(
        protocol: &'static str,
        seed: u64,
        nodes: u32,
        links: String,
        replay: String,
    ) -> RunHeader {
        RunHeader {
            protocol,
            seed,
            nodes,
            links,
            events: 0,
            wall_ms: 0,
            events_per_sec: 0,
            digest: String::new(),
            replay,
            ok: true,
            violation: None,
        }
    }

    /// The header of a run begun at `started` and over now: `ok` unless there is a violation.
    pub fn finish(
        self,
        started: Instant,
        events: u64,
        digest: String,
        violation: Option<String>,
    ) -> RunHeader {
        let wall_ms = started.elapsed().as_millis() as u64;
        RunHeader {
            events,
            wall_ms,
            events_per_sec: events * 1000 / wall_ms.max(1),
            digest,
            ok: violation.is_none(),
            violation,
            ..self
        }
    }

    /// [`RunHeader::finish`] for a run of `w`: its events, digest and first violation.
    pub fn finish_world(self, started: Instant, w: &World) -> RunHeader {
        let violation = w
            .violation()
            .map(|v| format!("at {} ms: {}", v.at / MS, v.what));
        self.finish(started, w.stats.events, w.trace.digest(), violation)
    }

    /// `ok` or `FAILED`.
    pub fn result(&self) -> &'static str {
        if self.ok {
            "ok"
        } else {
            "FAILED"
        }
    }

    /// For a failed run, `"{what}: {violation}"` and the replay line under it.
    pub fn failure(&self, what: &str) -> Option<String> {
        let v = self.violation.as_deref()?;
        Some(format!("{what}: {v}\n  replay: {}", self.replay))
    }
}

/// One text row: a label and its value.
pub type Row = (&'static str, String);

/// One cell of the default table: its column's title and width, and the value.
pub type Cell = (&'static str, usize, String);

/// A run's report as `weft sim` shows it: the shared [`RunHeader`], then its own rows.
pub trait Scenario: Serialize {
    /// The part every report shares.
    fn header(&self) -> &RunHeader;

    /// The report's own text rows, shown between `nodes` and `events`.
    fn rows(&self) -> Vec<Row>;

    /// The faults in force and how many struck, shown after the event rate.
    fn faults(&self) -> Option<(&str, u64)> {
        None
    }

    /// The report's row of the default table, after the scenario's name.
    fn cells(&self) -> Vec<Cell>;

    /// What a sweep adds up over its reports besides seeds, failures and events: JSON keys,
    /// and the text its summary line shows for them.
    fn sweep_sums(_reports: &[Self]) -> (Vec<(&'static str, serde_json::Value)>, String)
    where
        Self: Sized,
    {
        (Vec::new(), String::new())
    }

    /// The report as a human-readable block.
    fn to_text(&self) -> String {
        let h = self.header();
        let mut rows = vec![
            ("protocol", h.protocol.to_string()),
            ("seed", h.seed.to_string()),
            ("nodes", h.nodes.to_string()),
            ("links", h.links.clone()),
        ];
        rows.extend(self.rows());
        rows.push(("events", h.events.to_string()));
        rows.push(("wall time", format!("{} ms", h.wall_ms)));
        rows.push(("events per second", h.events_per_sec.to_string()));
        if let Some((faults, struck)) = self.faults() {
            rows.push(("faults", faults.to_string()));
            rows.push(("faults struck", struck.to_string()));
        }
        rows.push(("trace digest", h.digest.clone()));
        rows.push(("replay", h.replay.clone()));
        rows.extend(h.violation.clone().map(|v| ("VIOLATION", v)));
        rows.push(("result", h.result().into()));
        let width = rows.iter().map(|(k, _)| k.len() + 2).fold(22, usize::max);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}{v}\n"))
            .collect()
    }

    /// The report as one JSON object.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A simulated duration as a table shows it: `N ms`, or `never`.
pub(crate) fn ms_or_never(ms: Option<u64>, suffix: &str) -> String {
    ms.map_or("never".into(), |ms| format!("{ms} ms{suffix}"))
}

/// How often the world scenarios probe for convergence, simulated ms.
const PROBE_MS: u64 = 100;
/// Longest the initial join may take, simulated ms.
const JOIN_MS: u64 = 30_000;

/// The join phase of a world scenario: until every intended link is up, at most [`JOIN_MS`];
/// without faults a link still down then is a violation.
fn join(w: &mut World, with_faults: bool) {
    while !w.all_linked() && w.now < JOIN_MS * MS && w.violation().is_none() {
        w.run_until(w.now + PROBE_MS * MS);
    }
    if !with_faults && !w.all_linked() {
        w.fail("not every link came up in the join phase".into());
    }
}

/// The end of a world scenario: unless it already failed, 2 simulated seconds more for what is
/// in flight (duplicates included) to land; then the totals and the network keys' checks
/// ([`World::check_keys`]).
fn settle(w: &mut World) {
    if w.violation().is_none() {
        let settle = w.now + 2_000 * MS;
        w.run_until(settle);
    }
    w.finish_stats();
    w.check_keys();
}
