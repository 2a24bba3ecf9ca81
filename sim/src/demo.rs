//! The in-process demo: a small network of real nodes joins, discovers itself and floods
//! broadcasts; a report says what happened and whether every node got everything once.

use crate::net::{config, Net};
use weft_engine::protocol::Code;
use weft_engine::Duration;

/// What one demo run measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Nodes in the network.
    pub nodes: usize,
    /// Links established after discovery ran.
    pub links: usize,
    /// Broadcasts originated.
    pub broadcasts: u64,
    /// Broadcast deliveries over all nodes.
    pub delivered: u64,
    /// Deliveries expected: every broadcast at every node but its originator.
    pub expected: u64,
    /// BROADCAST frames transmitted.
    pub transmissions: u64,
    /// Duplicate BROADCAST receptions.
    pub duplicates: u64,
    /// Frames of every kind transmitted.
    pub frames: u64,
    /// BLAKE3 digest of the run's bytes and events.
    pub digest: String,
}

impl DemoReport {
    /// True when every broadcast reached every other node exactly once.
    pub fn ok(&self) -> bool {
        self.delivered == self.expected
    }
}

/// Runs `nodes` nodes joined in a line; discovery fills in more links; each node broadcasts
/// `rounds` times.
pub fn run(nodes: usize, rounds: u64) -> DemoReport {
    let nodes = nodes.max(2);
    let mut net = Net::with_configs((1..=nodes as u64).map(config).collect());
    let line: Vec<(usize, usize)> = (0..nodes - 1).map(|i| (i, i + 1)).collect();
    net.join(&line);
    net.run_for(Duration::from_secs(20));
    for r in 0..rounds {
        for i in 0..nodes {
            net.broadcast(i, format!("hello {r} from {i}").as_bytes());
        }
    }
    net.run_for(Duration::from_secs(1));
    let links = net.nodes.iter().map(|n| n.links().count()).sum::<usize>() / 2;
    let delivered = (0..nodes).map(|i| net.delivered(i).len() as u64).sum();
    DemoReport {
        nodes,
        links,
        broadcasts: rounds * nodes as u64,
        delivered,
        expected: rounds * (nodes * (nodes - 1)) as u64,
        transmissions: net.sent(Code::BROADCAST),
        duplicates: net
            .nodes
            .iter()
            .map(|n| n.metrics().broadcast_duplicates)
            .sum(),
        frames: net.sent_by_code.values().sum(),
        digest: net.trace.finalize().to_hex()[..16].to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_delivers_everything_once_and_discovery_adds_links() {
        let r = super::run(5, 3);
        assert!(r.ok(), "{r:?}");
        assert!(r.links > 4, "discovery linked more than the line: {r:?}");
        assert_eq!(r, super::run(5, 3), "deterministic");
    }
}
