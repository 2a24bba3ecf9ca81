//! Links, tie-breaks and discovery between real nodes in the in-process network.

use weft_engine::protocol::Code;
use weft_engine::{Command, Config, Duration, Input};
use weft_sim::net::{config, plaintext_config, Net};

fn configs(n: u64, edit: impl Fn(&mut Config)) -> Vec<Config> {
    (1..=n)
        .map(|s| {
            let mut c = config(s);
            edit(&mut c);
            c
        })
        .collect()
}

#[test]
fn simultaneous_dials_keep_exactly_one_link_both_ends_agree() {
    for seeds in [(1, 2), (3, 4), (5, 6), (7, 8)] {
        let mut net = Net::with_configs(
            [seeds.0, seeds.1]
                .map(|s| {
                    let mut c = config(s);
                    c.discovery = false;
                    c
                })
                .to_vec(),
        );
        let now = net.now;
        for (from, to) in [(0, 1), (1, 0)] {
            let addr = net.nodes[to].config().listen_addr.clone().unwrap();
            net.nodes[from]
                .handle_input(now, Input::Command(Command::Connect { addr }))
                .unwrap();
        }
        net.pump();
        let l0: Vec<_> = net.nodes[0].links().collect();
        let l1: Vec<_> = net.nodes[1].links().collect();
        assert_eq!((l0.len(), l1.len()), (1, 1));
        assert_eq!(
            net.peer_end(0, l0[0].1),
            Some((1, l1[0].1)),
            "the same pipe"
        );
        assert_eq!(net.nodes[0].conn_ids().count(), 1, "the loser is gone");
        // It carries broadcasts exactly once.
        net.broadcast(0, b"one link");
        assert_eq!(net.delivered(1).len(), 1);
    }
}

#[test]
fn discovery_links_a_line_into_more_and_can_be_switched_off() {
    let mut on = Net::with_configs(configs(3, |_| {}));
    on.join(&[(0, 1), (1, 2)]);
    on.run_for(Duration::from_secs(10));
    assert!(on.linked(0, 2), "0 heard of 2 through 1 and dialed it");

    let mut off = Net::with_configs(configs(3, |c| c.discovery = false));
    off.join(&[(0, 1), (1, 2)]);
    off.run_for(Duration::from_secs(10));
    assert!(!off.linked(0, 2));
    // No discovery frame at all (ICANSEE, IKNOWABOUT, ICANTSEE), by the engines' counters.
    assert_eq!(off.traffic().discovery.frames_out, 0);
}

#[test]
fn icantsee_never_removes_a_live_link_and_a_silent_peer_is_reported() {
    // No discovery dials (target 0), cascades on. Plaintext links: ICANTSEE frames are
    // counted off the wire (the engines count discovery frames together).
    let mut net = Net::with_configs(
        (1..=4)
            .map(|s| {
                let mut c = plaintext_config(s);
                c.limits.outbound_target = 0;
                c
            })
            .collect(),
    );
    net.join(&[(0, 1), (0, 2), (1, 2), (1, 3)]);
    let id2 = net.id(2);
    let hears = |net: &Net, i: usize| net.nodes[i].hosts().iter().any(|h| h.node == id2);
    assert!(hears(&net, 3), "3 heard of 2 through 1's ICANSEE");
    net.command(1, Command::Disconnect { node: id2 });
    assert!(net.sent(Code::ICANTSEE) > 0);
    assert!(net.linked(0, 2), "0 keeps its live link to 2");
    assert!(hears(&net, 0));
    assert!(!hears(&net, 3), "3 had only heard of 2: forgotten");

    // Node 2 goes silent: 0 drops it on the timeout and says so.
    let before = net.sent(Code::ICANTSEE);
    net.paused.push(2);
    net.run_for(Duration::from_secs(20));
    assert!(!net.linked(0, 2));
    assert!(net.sent(Code::ICANTSEE) > before);
}

#[test]
fn a_restarted_node_rejoins_with_a_new_incarnation() {
    let mut net = Net::with_configs(configs(3, |c| c.discovery = false));
    net.join(&[(0, 1), (1, 2)]);
    let mut c = config(2);
    c.discovery = false;
    c.incarnation = 7;
    net.restart(1, c);
    net.pump();
    assert!(!net.linked(0, 1));
    net.join(&[(0, 1), (1, 2)]);
    let restarted = net.events.iter().filter(|(_, e)| {
        matches!(
            e,
            weft_engine::Event::PeerUp {
                restarted: true,
                incarnation: 7,
                ..
            }
        )
    });
    assert_eq!(
        restarted.count(),
        2,
        "both neighbours saw the new incarnation"
    );
    net.broadcast(1, b"back");
    assert_eq!(net.delivered(0).len(), 1);
    assert_eq!(net.delivered(2).len(), 1);
}

#[test]
fn a_stale_incarnation_is_refused() {
    let mut net = Net::with_configs(configs(2, |c| c.discovery = false));
    net.join(&[(0, 1)]);
    let mut c = config(2);
    c.discovery = false;
    c.incarnation = 0;
    net.restart(1, c);
    net.pump();
    net.connect(1, 0);
    assert!(!net.linked(0, 1));
    assert!(net
        .closes
        .iter()
        .any(|(i, _, r)| *i == 0 && *r == weft_engine::CloseReason::StaleIncarnation));
}
