//! Scenarios: what a `weft sim` run does with a world, and the report it prints.

pub mod chord;
pub mod mesh;
pub mod table;

use serde::Serialize;

/// What one run measured. Keys shared by every protocol's report come first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The protocol exercised.
    pub protocol: &'static str,
    /// The root seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Intended links.
    pub edges: u64,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Of the deliveries owed at the end, the fraction made.
    pub delivered_fraction: f64,
    /// BROADCAST frames transmitted.
    pub transmissions: u64,
    /// Duplicate BROADCAST receptions.
    pub duplicates: u64,
    /// Repair frames (MESH_DIGEST, MESH_WANT, MESH_REPAIR) transmitted.
    pub repair_messages: u64,
    /// Simulated ms from the last broadcast's send (no faults) or the heal (faults) until
    /// every node held everything owed; `None` if that never happened.
    pub converged_ms: Option<u64>,
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
    /// The faults in force, as derived from the seed or named.
    pub faults: String,
    /// Faults that struck.
    pub faults_struck: u64,
    /// The broken invariant, if any.
    pub violation: Option<String>,
}

impl Report {
    /// The report as a human-readable block.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("{k:<22}{v}\n"));
        row("protocol", self.protocol.to_string());
        row("seed", self.seed.to_string());
        row("nodes", self.nodes.to_string());
        row("edges", self.edges.to_string());
        row("broadcasts", self.broadcasts.to_string());
        row(
            "delivered fraction",
            format!("{:.6}", self.delivered_fraction),
        );
        row("transmissions", self.transmissions.to_string());
        row("duplicates", self.duplicates.to_string());
        row("repair messages", self.repair_messages.to_string());
        row(
            "converged",
            self.converged_ms
                .map_or("never".into(), |ms| format!("{ms} ms (simulated)")),
        );
        row("events", self.events.to_string());
        row("wall time", format!("{} ms", self.wall_ms));
        row("events per second", self.events_per_sec.to_string());
        row("faults", self.faults.clone());
        row("faults struck", self.faults_struck.to_string());
        row("trace digest", self.digest.clone());
        row("replay", self.replay.clone());
        if let Some(v) = &self.violation {
            row("VIOLATION", v.clone());
        }
        row(
            "result",
            if self.ok {
                "ok".into()
            } else {
                "FAILED".into()
            },
        );
        s
    }
}
