//! The start-up gate (SPEC.md §8.1): a node dials no one and sends no frame until the host has
//! answered every start-up load; then what it held goes out in order.

mod common;

use common::{accepted, drain_raw, frames_to, node_with, T0};
use weft_engine::{Command, ConnId, HostRequest, HostResult, Input, Output};

#[test]
fn nothing_goes_out_until_every_startup_load_is_answered() {
    let mut node = node_with(|c| {
        c.listen_addr = Some("127.0.0.1:7000".into());
        c.chord = Some(Default::default());
    });
    let connect = Input::Command(Command::Connect {
        addr: "127.0.0.1:7001".into(),
    });
    node.handle_input(T0, connect).unwrap();
    let inbound = ConnId::inbound(1);
    node.handle_input(T0, accepted(inbound)).unwrap();
    let out = drain_raw(&mut node);
    let loads: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::LoadState { name },
            } => Some((*id, name.clone())),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = loads.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["table", "chord"], "the table's and Chord's loads");
    assert!(
        out.iter().all(|o| matches!(o, Output::Request { .. })),
        "no dial, no HELLO before the loads are answered: {out:?}"
    );
    assert!(!node.is_restored());

    let (first, second) = (loads[0].0, loads[1].0);
    let result = HostResult::Loaded(None);
    node.handle_input(T0, Input::Completed { id: first, result })
        .unwrap();
    assert!(drain_raw(&mut node).is_empty(), "one load still out");
    let result = HostResult::Failed("no state folder".into());
    node.handle_input(T0, Input::Completed { id: second, result })
        .unwrap();
    assert!(node.is_restored());
    let out = drain_raw(&mut node);
    assert!(
        matches!(out.first(), Some(Output::Connect { .. })),
        "the held dial first: {out:?}"
    );
    assert_eq!(
        frames_to(&out, inbound).len(),
        1,
        "the inbound HELLO, held till now"
    );
}
