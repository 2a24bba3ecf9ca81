//! The drops tracker (SPEC.md §24.6, §20.9) between real nodes of the in-process network: a
//! subscriber linked only to a ring node finds a drop's owner through the holder records on
//! the Chord ring, dials it and gets its latest version; records an attacker forges are
//! refused by the ring and never dialed. Discovery is off on every node, so a link between
//! the subscriber and the owner can only come from the tracker.

mod drops_common;

use drops_common::{create, data, write};
use weft_engine::chord::{ChordCommand, ChordConfig, ChordRequest};
use weft_engine::drops::DropsCommand;
use weft_engine::protocol::{holders_key, DropId, HolderRecord, HOLDER_LIFETIME};
use weft_engine::{Command, Config, Duration, Event, Identity, Input};
use weft_sim::net::{config, Net};

const WALL_MS: u64 = 1_800_000_000_000;

/// A ring member that dials nobody on its own.
fn ring_node(seed: u64) -> Config {
    let mut c = config(seed);
    c.discovery = false;
    c.chord = Some(ChordConfig::default());
    c
}

/// `n` ring nodes with wall clocks, node `i > 0` linked to node 1 only (node 1 is the
/// tracker: a ring member every other node knows), the ring settled.
fn star(n: usize) -> Net {
    let mut net = Net::with_configs((1..=n as u64).map(ring_node).collect());
    for i in 0..n {
        net.input(i, Input::WallClock { unix_ms: WALL_MS });
    }
    let edges: Vec<(usize, usize)> = (0..n).filter(|&i| i != 1).map(|i| (i, 1)).collect();
    net.join(&edges);
    net.run_for(Duration::from_secs(20));
    net
}

/// Node 0 creates a drop and publishes two versions of `a`; returns the drop.
fn owner_publishes(net: &mut Net) -> DropId {
    let drop = create(net, 0);
    for content in [&b"first a"[..], b"second a, the latest"] {
        write(net, 0, drop, "a", content);
        net.run_for(Duration::from_secs(1));
        let publish = DropsCommand::Publish {
            drop,
            secondary: None,
        };
        net.command(0, Command::Drops(publish));
        net.run_for(Duration::from_secs(1));
    }
    assert_eq!(
        net.nodes[0].drop_chain(&drop).map(|c| c.len()),
        Some(2),
        "two versions published"
    );
    drop
}

#[test]
fn a_subscriber_linked_only_to_the_tracker_finds_the_owner_and_its_latest_version() {
    let mut net = star(3);
    let drop = owner_publishes(&mut net);
    let owner = net.nodes[0]
        .drop_tracker(&drop)
        .expect("the owner holds it");
    assert!(owner.announces >= 1, "{owner:?}");
    assert!(!net.linked(2, 0), "only the tracker links them");

    let latest = net.nodes[0]
        .drop_shown(&drop)
        .expect("the owner shows a version");
    net.command(2, Command::Drops(DropsCommand::Subscribe { drop }));
    // The harness's pipes have no latency: lookup, dial, handshake and fetch all land
    // within the command's pump; the run lets the timers settle.
    net.run_for(Duration::from_secs(10));
    assert!(net.linked(2, 0), "the subscriber dialed the owner");
    assert_eq!(net.nodes[2].drop_shown(&drop), Some(latest));
    assert_eq!(
        data(&net, 2, drop, "a").as_deref(),
        Some(&b"second a, the latest"[..])
    );
    let sub = net.nodes[2].drop_tracker(&drop).expect("subscribed");
    assert_eq!((sub.holders_found, sub.holders_dialed), (1, 1), "{sub:?}");
    assert_eq!(net.nodes[2].metrics().session.named_dials, 1);

    // The subscriber holds a version now: it announces itself too, so the tracker names
    // both holders to the next subscriber.
    net.run_for(Duration::from_secs(5));
    let sub = net.nodes[2].drop_tracker(&drop).expect("subscribed");
    assert!(sub.announces >= 1, "{sub:?}");
}

#[test]
fn holder_records_an_attacker_forges_are_refused_by_the_ring_and_never_dialed() {
    let mut net = star(4);
    let drop = owner_publishes(&mut net);
    let attacker = Identity::from_secret(&net.nodes[3].config().secret_key);
    let owner = Identity::from_secret(&net.nodes[0].config().secret_key);
    let attacker_addr = net.nodes[3]
        .config()
        .listen_addr
        .clone()
        .expect("an address");
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    let wall_ms = net.nodes[3].wall_clock_ms(net.now).expect("a wall clock");
    let forged = [
        // The owner's id, the attacker's address and signature.
        HolderRecord::sign(
            drop.0,
            &owner.public_key(),
            attacker_addr.clone(),
            wall_ms + lifetime_ms,
            |m| attacker.sign(m),
        ),
        // The attacker's own, expired.
        HolderRecord::sign(
            drop.0,
            &attacker.public_key(),
            attacker_addr.clone(),
            wall_ms - 1,
            |m| attacker.sign(m),
        ),
    ];
    for (request, r) in (100..).zip(&forged) {
        let op = ChordRequest::Put {
            key: holders_key(&drop.0),
            value: r.encode(),
            lifetime_ms: Some(lifetime_ms),
        };
        net.command(3, Command::Chord(ChordCommand { request, op }));
    }
    net.run_for(Duration::from_secs(5));
    for request in [100, 101] {
        let result = net.events.iter().find_map(|(n, e)| match e {
            Event::Chord(c) if *n == 3 && c.request == request => Some(c.result.clone()),
            _ => None,
        });
        assert!(matches!(result, Some(Err(_))), "{request}: {result:?}");
    }
    let refused: u64 = (0..4)
        .filter_map(|i| net.nodes[i].chord())
        .map(|c| c.metrics().entries_tracker_invalid)
        .sum();
    assert!(refused >= 2, "{refused}");

    net.command(2, Command::Drops(DropsCommand::Subscribe { drop }));
    net.run_for(Duration::from_secs(10));
    assert!(net.linked(2, 0), "the owner's record was dialed");
    assert!(!net.linked(2, 3), "no forged record was");
    let sub = net.nodes[2].drop_tracker(&drop).expect("subscribed");
    assert_eq!((sub.holders_found, sub.holders_dialed), (1, 1), "{sub:?}");
    assert_eq!(net.nodes[2].metrics().session.named_dials, 1);
    assert_eq!(
        data(&net, 2, drop, "a").as_deref(),
        Some(&b"second a, the latest"[..])
    );
}
