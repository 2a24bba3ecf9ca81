//! The simulator's promises: determinism, exact flood counts without faults, convergence under
//! swarm faults over a seed sweep, and violations that stop a run with a replay line.

mod common;

use std::time::Instant;

use weft_sim::links::LinkSetup;
use weft_sim::scenario::mesh::{self, FaultMode, MeshParams, Shape};
use weft_sim::scenario::Scenario;
use weft_sim::sweep::{self, Shard};

/// Seeds in the sweep: `WEFT_SIM_SEEDS` (default 400).
fn sweep_seeds() -> u64 {
    weft_sim::sweep::env_or("WEFT_SIM_SEEDS", 400)
}

#[test]
fn seed_sweep_of_small_networks_under_swarm_faults() {
    let seeds = sweep_seeds();
    let started = Instant::now();
    let reports = sweep::run(1..=seeds, Shard::ALL, 2, |s| {
        mesh::run(&mesh::sweep_params(s))
    });
    let failures: Vec<String> = reports
        .iter()
        .filter_map(|r| r.header.failure(&format!("seed {}", r.header.seed)))
        .collect();
    println!(
        "swept {} seeds in {:?}: {} events, {} faults struck, {} failures",
        reports.len(),
        started.elapsed(),
        reports.iter().map(|r| r.header.events).sum::<u64>(),
        reports.iter().map(|r| r.faults_struck).sum::<u64>(),
        failures.len()
    );
    assert_eq!(reports.len() as u64, seeds);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The sweep really injected faults (counted once applied: crashes and partitions that
    // cut something among them), and broadcasts really came through repair.
    assert!(reports.iter().map(|r| r.faults_struck).sum::<u64>() > seeds);
    assert!(reports.iter().map(|r| r.crashes).sum::<u64>() > 0);
    assert!(reports.iter().map(|r| r.partitions).sum::<u64>() > 0);
    assert!(reports.iter().map(|r| r.repairs_received).sum::<u64>() > 0);
    // Noise on every seed: open networks, private ones, and private ones with a wrong-secret
    // node.
    common::assert_sweep_links(
        reports
            .iter()
            .map(|r| (r.header.links.as_str(), r.noise_closes)),
    );
}

/// Same parameters, same digest, with Noise on every link (the default): an open network,
/// and a private one with wrong-secret nodes (whose refused handshakes are in the trace too).
#[test]
fn one_seed_twice_gives_one_digest_and_other_seeds_others() {
    for links in [LinkSetup::OPEN, LinkSetup::private("replay", 2)] {
        let run = |seed| {
            let mut p = MeshParams::new(12, 3, seed, 10, FaultMode::Swarm);
            p.links = links.clone();
            mesh::run(&p)
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert!(
            a.header.ok && c.header.ok,
            "{:?} {:?}",
            a.header.violation,
            c.header.violation
        );
        assert!(a.header.links.starts_with("noise, "), "{}", a.header.links);
        assert_eq!(a.header.digest, b.header.digest);
        assert_eq!(a.header.events, b.header.events);
        assert_ne!(a.header.digest, c.header.digest);
    }
    let quiet = |seed| {
        mesh::run(&MeshParams::new(30, 4, seed, 5, FaultMode::None))
            .header
            .digest
    };
    assert_eq!(quiet(1), quiet(1));
    assert_ne!(quiet(1), quiet(2));
}

/// `--plaintext-sim-only` changes the bytes on the wire, so the digest, but not what the run
/// shows: without faults the same deliveries at the same flood cost; under swarm faults both
/// converge (the timing differs: frames are shorter, handshakes fewer). And it replays.
#[test]
fn plaintext_links_change_the_digest_not_the_outcome() {
    let run = |faults: FaultMode, links: LinkSetup| {
        let mut p = MeshParams::new(20, 4, 3, 8, faults);
        p.links = links;
        mesh::run(&p)
    };
    let (noise, plain) = (
        run(FaultMode::None, LinkSetup::OPEN),
        run(FaultMode::None, LinkSetup::plaintext()),
    );
    assert!(noise.header.ok && plain.header.ok);
    assert_eq!(plain.header.links, "PLAINTEXT (simulation only)");
    assert!(plain.header.replay.ends_with(" --plaintext-sim-only"));
    assert_ne!(noise.header.digest, plain.header.digest);
    let outcome = |r: &mesh::MeshReport| {
        (
            r.broadcasts,
            r.delivered_fraction,
            r.transmissions,
            r.duplicates,
            r.repair_messages,
        )
    };
    assert_eq!(outcome(&noise), outcome(&plain));
    let plain_again = run(FaultMode::None, LinkSetup::plaintext());
    assert_eq!(plain_again.header.digest, plain.header.digest);

    let (noise, plain) = (
        run(FaultMode::Swarm, LinkSetup::OPEN),
        run(FaultMode::Swarm, LinkSetup::plaintext()),
    );
    assert!(noise.header.ok, "{}", noise.to_text());
    assert!(plain.header.ok, "{}", plain.to_text());
    assert_ne!(noise.header.digest, plain.header.digest);
    assert_eq!(
        (noise.delivered_fraction, noise.broadcasts),
        (plain.delivered_fraction, plain.broadcasts)
    );
}

#[test]
fn without_faults_every_shape_floods_at_exactly_2e_minus_n_plus_1() {
    for shape in Shape::ALL {
        let mut p = MeshParams::new(40, 4, 3, 7, FaultMode::None);
        p.shape = shape;
        let r = mesh::run(&p);
        assert!(r.header.ok, "{shape:?}: {:?}", r.header.violation);
        let (n, e, b) = (u64::from(r.header.nodes), r.edges, r.broadcasts);
        assert_eq!(r.transmissions, b * (2 * e - n + 1), "{shape:?}");
        assert_eq!(r.duplicates, 2 * b * (e + 1 - n), "{shape:?}");
        assert_eq!(r.delivered_fraction, 1.0);
        assert_eq!(r.repair_messages, 0, "nothing to repair");
    }
}

#[test]
fn each_fault_alone_still_converges() {
    for fault in weft_sim::faults::FAULT_NAMES {
        let r = mesh::run(&MeshParams::new(
            16,
            3,
            11,
            20,
            FaultMode::List(fault.into()),
        ));
        assert!(r.header.ok, "{fault}: {}", r.to_text());
        assert_eq!(r.delivered_fraction, 1.0, "{fault}");
    }
}

#[test]
fn a_broken_invariant_stops_the_run_with_the_seed_and_a_replay_line() {
    let mut p = MeshParams::new(10, 3, 42, 5, FaultMode::Swarm);
    p.sabotage = true;
    let r = mesh::run(&p);
    assert!(!r.header.ok);
    let violation = r.header.violation.as_deref().unwrap_or_default();
    assert!(violation.contains("twice"), "{violation}");
    assert_eq!(
        r.header.replay,
        "weft sim mesh --nodes 10 --degree 3 --seed 42 --broadcasts 5 --faults swarm --sabotage"
    );
    println!("violation: {violation}\nreplay: {}", r.header.replay);
    // The one replay line, the text block and the flat JSON object all show it.
    assert_eq!(
        r.header.failure("seed 42"),
        Some(format!(
            "seed 42: {violation}\n  replay: {}",
            r.header.replay
        ))
    );
    let text = r.to_text();
    assert!(text.starts_with("protocol              mesh\nseed                  42\n"));
    assert!(text.ends_with(&format!(
        "VIOLATION             {violation}\nresult                FAILED\n"
    )));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["protocol"], "mesh");
    assert_eq!(json["violation"], violation);
    assert_eq!(json["edges"], r.edges);
    assert_eq!(json["faults_struck"], r.faults_struck);
    // The replay reproduces it exactly.
    assert_eq!(mesh::run(&p).header.digest, r.header.digest);
}
