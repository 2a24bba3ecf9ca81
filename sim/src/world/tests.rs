//! The world itself: its disk, its links across network keys, and durability checks.

use weft_engine::TableCommand;

use super::*;
use crate::faults::FaultConfig;

/// Two linked nodes, no faults.
fn world() -> World {
    World::new(WorldConfig {
        seed: 7,
        nodes: 2,
        edges: vec![(0, 1)],
        faults: FaultConfig::none(),
        discovery: false,
        chord: false,
        sabotage: false,
        links: LinkSetup::OPEN,
    })
}

impl World {
    /// Node `i` asks its host for `request`, as if `poll_output` had handed it out: it
    /// goes through `route`, as every output of a drain does. Its completion is kept for
    /// [`World::synthetic_result`] instead of handed to a node that never asked.
    fn inject_request(&mut self, i: u32, id: u64, request: HostRequest) {
        self.synthetic.insert((i, RequestId(id)), None);
        let out = Output::Request {
            id: RequestId(id),
            request,
        };
        self.route(i, Pending { out, link: None });
    }

    /// What came of an injected request, once the disk has answered.
    fn synthetic_result(&self, i: u32, id: u64) -> Option<&HostResult> {
        self.synthetic.get(&(i, RequestId(id)))?.as_ref()
    }
}

fn load(name: &str) -> HostRequest {
    HostRequest::LoadState { name: name.into() }
}

fn store(name: &str, bytes: &'static [u8]) -> HostRequest {
    HostRequest::StoreState {
        name: name.into(),
        bytes: Bytes::from_static(bytes),
    }
}

#[test]
fn the_disk_answers_requests_and_survives_a_crash() {
    let mut w = world();
    w.run_until(500 * MS);
    assert!(w.violation().is_none(), "{:?}", w.violation());

    w.inject_request(0, 1, load("never-stored"));
    assert_eq!(w.synthetic_result(0, 1), None, "answered asynchronously");
    w.run_until(w.now + DISK_LATENCY - 1);
    assert_eq!(
        w.synthetic_result(0, 1),
        None,
        "not before the disk latency"
    );
    w.run_until(w.now + 1);
    assert_eq!(w.synthetic_result(0, 1), Some(&HostResult::Loaded(None)));

    w.inject_request(0, 2, store("mesh-state-1", b"blob"));
    w.inject_request(0, 3, load("mesh-state-1"));
    w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
    assert_eq!(w.synthetic_result(0, 2), Some(&HostResult::Stored));
    let blob = HostResult::Loaded(Some(Bytes::from_static(b"blob")));
    assert_eq!(w.synthetic_result(0, 3), Some(&blob), "a store then a load");
    w.inject_request(1, 4, load("mesh-state-1"));
    w.run_until(w.now + DISK_LATENCY);
    assert_eq!(
        w.synthetic_result(1, 4),
        Some(&HostResult::Loaded(None)),
        "each node has its own disk"
    );

    // A crash: a request in flight is lost with the incarnation that asked (the node is
    // back before the disk would have answered: the new incarnation must not hear of it),
    // the disk stays.
    let before = w.incarnations()[0];
    w.inject_request(0, 5, store("mesh-state-1", b"lost"));
    w.crash(0, 0);
    w.run_until(w.now + 10 * MS);
    assert!(w.node(0).is_some(), "restarted");
    assert_eq!(w.incarnations()[0], before + 1, "a new incarnation");
    assert_eq!(
        w.synthetic_result(0, 5),
        None,
        "the crashed incarnation's completion"
    );
    w.inject_request(0, 13, load("mesh-state-1"));
    w.crash(0, 100);
    w.run_until(w.now + 200 * MS);
    assert_eq!(
        w.synthetic_result(0, 13),
        None,
        "a completion for a node that is down"
    );
    assert!(w.node(0).is_some(), "restarted again");
    w.inject_request(0, 6, load("mesh-state-1"));
    w.run_until(w.now + DISK_LATENCY);
    assert_eq!(w.synthetic_result(0, 6), Some(&blob), "the blob survived");

    for (id, name) in [
        (7, ""),
        (8, "Mesh"),
        (9, "a/b"),
        (10, "état"),
        (11, &"x".repeat(65)[..]),
    ] {
        w.inject_request(0, id, load(name));
        w.inject_request(0, id + 100, store(name, b"x"));
    }
    w.inject_request(0, 12, load(&"x".repeat(64)));
    w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
    for id in (7..=11).chain(107..=111) {
        assert!(
            matches!(w.synthetic_result(0, id), Some(HostResult::Failed(_))),
            "request {id}: {:?}",
            w.synthetic_result(0, id)
        );
    }
    assert_eq!(w.synthetic_result(0, 12), Some(&HostResult::Loaded(None)));
    assert_eq!(w.cold[0].disk.len(), 1, "a refused name stores nothing");
    assert!(w.violation().is_none(), "{:?}", w.violation());
}

/// A line of three nodes, no faults, with `links`; `edit` applied to each node's config.
fn line_of_three(links: LinkSetup, edit: impl FnMut(&mut Config)) -> World {
    let config = WorldConfig {
        seed: 7,
        nodes: 3,
        edges: vec![(0, 1), (1, 2)],
        faults: FaultConfig::none(),
        discovery: false,
        chord: false,
        sabotage: false,
        links,
    };
    World::with_node_config(config, edit)
}

#[test]
fn a_wrong_secret_node_is_refused_and_a_link_across_keys_is_a_violation() {
    // As set up: the network links, the wrong-secret node (3) never does, and the
    // handshakes between them are refused (both ways: each end dials).
    let mut w = line_of_three(LinkSetup::private("s", 1), |_| {});
    w.run_until(5_000 * MS);
    assert!(w.violation().is_none(), "{:?}", w.violation());
    assert!(w.all_linked());
    assert_eq!(w.node(3).map(|n| n.links().count()), Some(0));
    assert!(w.stats.noise_closes >= 4, "{}", w.stats.noise_closes);
    assert_eq!(
        w.live(),
        [true; 3],
        "the wrong-secret node is not of the network"
    );
    w.check_keys();
    assert!(w.violation().is_none(), "{:?}", w.violation());

    // The wrong-secret node given the network's key behind the world's back: it links,
    // and the world's check stops the run.
    let key = weft_engine::NetworkKey::derive(b"s").unwrap();
    let mut w = line_of_three(LinkSetup::private("s", 1), |c| c.network_key = key);
    w.run_until(5_000 * MS);
    let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
    assert!(what.contains("whose network secret differs"), "{what}");

    // Wrong-secret nodes never tried: the check saw nothing, and says so.
    let mut w = line_of_three(LinkSetup::private("s", 1), |_| {});
    w.check_keys();
    let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
    assert!(what.contains("never tried"), "{what}");

    // One node of an open network with another key, unknown to the world: its links
    // fail in the Noise layer, which between nodes of one key is a violation.
    let mut k = 0;
    let mut w = line_of_three(LinkSetup::OPEN, |c| {
        k += 1;
        if k == 3 {
            c.network_key = key;
        }
    });
    w.run_until(5_000 * MS);
    assert!(!w.all_linked());
    w.check_keys();
    let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
    assert!(what.contains("failed in the Noise layer"), "{what}");
}

/// A lone node with a table: `ack_on_accept` makes the checker count writes as
/// acknowledged when accepted (the broken behaviour), not when committed.
fn lone(ack_on_accept: bool) -> World {
    let mut w = World::new(WorldConfig {
        seed: 3,
        nodes: 1,
        edges: Vec::new(),
        faults: FaultConfig::none(),
        discovery: false,
        chord: false,
        sabotage: false,
        links: LinkSetup::OPEN,
    });
    w.durable.ack_on_accept = ack_on_accept;
    w.run_until(500 * MS);
    w
}

fn set(key: &str) -> Command {
    Command::Table(TableCommand::Set {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease: None,
    })
}

/// A crash before the store completes loses the write, and the node never acknowledged
/// it: no violation. Counting it acknowledged at once (acknowledging before the commit) is
/// caught as a lost write.
#[test]
fn a_write_acknowledged_before_its_commit_and_lost_in_a_crash_is_a_violation() {
    for broken in [false, true] {
        let mut w = lone(broken);
        w.command(0, set("k"));
        // Before the store can have completed.
        w.crash(0, 10);
        w.run_until(w.now + 1_000 * MS);
        assert!(w.node(0).is_some(), "restarted");
        assert_eq!(
            w.node(0).unwrap().table().get(b"k"),
            None,
            "the store was lost"
        );
        let lost = w.durability_violations();
        assert_eq!(lost.len(), usize::from(broken), "{lost:?}");
        assert_eq!(w.durable.acked_writes(), usize::from(broken));
    }
}

/// A write acknowledged after its commit survives the crash that follows.
#[test]
fn a_write_acknowledged_after_its_commit_survives_a_crash() {
    let mut w = lone(false);
    w.command(0, set("k"));
    w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
    assert_eq!(w.durable.acked_writes(), 1, "committed");
    w.crash(0, 10);
    w.run_until(w.now + 1_000 * MS);
    assert_eq!(w.node(0).unwrap().table().get(b"k"), Some(&b"v"[..]));
    assert!(w.durability_violations().is_empty());
}

/// A paused node processes nothing, not even a reset of its link: it hears of it when it
/// resumes, and nothing that was in flight on the link arrives.
#[test]
fn a_paused_node_hears_of_a_reset_only_when_it_resumes() {
    let mut w = world();
    w.run_until(500 * MS);
    assert_eq!(w.node(1).map(|n| n.links().count()), Some(1), "linked");
    w.nodes[1].paused = true;
    w.paused_nodes += 1;
    let link = w.nodes[1].conns[0].link;
    w.reset(link);
    assert_eq!(
        w.node(1).map(|n| n.links().count()),
        Some(1),
        "the paused node was told of the reset"
    );
    assert_eq!(w.node(0).map(|n| n.links().count()), Some(0));
    w.resume(1);
    assert_eq!(w.node(1).map(|n| n.links().count()), Some(0));
    assert!(w.violation().is_none(), "{:?}", w.violation());
}
