//! Remote runs (SPEC.md §23) between real nodes in the in-process network, with scripted
//! processes (`weft_sim::process`): authorization, output order and pacing, exit statuses,
//! interrupts and the grace period, and kills when the link goes.

use weft_engine::protocol::{ExitStatus, OutputStream, RunRefusalReason, RunSignalKind};
use weft_engine::run::{
    RunCommand, RunEvent, RunEventKind, RunRefusal, RUNS_PER_PEER_MAX, RUN_ANSWER_WAIT, RUN_GRACE,
    RUN_WINDOW_BYTES,
};
use weft_engine::{
    CloseReason, Command, Config, Duration, Event, Input, InputError, NodeId, Refusal,
};
use weft_sim::net::{config, plaintext_config, Net};

/// Node 0 asks, node 1 runs; node 1 allows `allowed` (node 0's id if `None`) when `allow`.
fn pair(allow: bool, allowed: Option<NodeId>) -> Net {
    let mut requester = config(1);
    requester.discovery = false;
    let mut runner = config(2);
    runner.discovery = false;
    let requester_id = weft_engine::Node::new(requester.clone()).node_id();
    runner.run.allow = allow;
    runner.run.allow_from = vec![allowed.unwrap_or(requester_id)];
    let mut net = Net::with_configs(vec![requester, runner]);
    net.join(&[(0, 1)]);
    net
}

fn start(net: &mut Net, run: u64, program: &str, args: &[&str]) -> Result<(), InputError> {
    let peer = net.id(1);
    let command = RunCommand::Start {
        run,
        peer,
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        shell: false,
        folder: None,
    };
    let now = net.now;
    let result = net.nodes[0].handle_input(now, Input::Command(Command::Run(command)));
    net.pump();
    result
}

fn signal(net: &mut Net, run: u64, signal: RunSignalKind) {
    net.command(0, Command::Run(RunCommand::Signal { run, signal }));
}

/// Node 0's run events for `run`, in order.
fn events(net: &Net, run: u64) -> Vec<RunEventKind> {
    net.events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Run(RunEvent { run: r, kind }) if *i == 0 && *r == run => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

fn last(net: &Net, run: u64) -> Option<RunEventKind> {
    events(net, run).pop()
}

#[test]
fn output_arrives_in_order_on_its_own_stream_then_the_exit() {
    let mut net = pair(true, None);
    start(&mut net, 1, "lines", &["1000"]).unwrap();
    let events = events(&net, 1);
    assert_eq!(events.first(), Some(&RunEventKind::Started));
    assert_eq!(
        events.last(),
        Some(&RunEventKind::Exited {
            status: ExitStatus::Code(0),
            copy: None
        })
    );
    let outputs: Vec<(OutputStream, String)> = events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Output { stream, bytes } => {
                Some((*stream, String::from_utf8(bytes.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 1000);
    for (n, (stream, text)) in (1..).zip(&outputs) {
        assert_eq!(text, &format!("{n}\n"));
        let expected = if n % 2 == 1 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        assert_eq!(*stream, expected, "line {n}");
    }
    assert_eq!(net.processes[1].running(), 0);
}

#[test]
fn exit_statuses_come_back_as_they_are() {
    let mut net = pair(true, None);
    start(&mut net, 1, "exit", &["0"]).unwrap();
    start(&mut net, 2, "exit", &["3"]).unwrap();
    start(&mut net, 3, "stubborn", &[]).unwrap();
    signal(&mut net, 3, RunSignalKind::Kill);
    assert_eq!(
        last(&net, 1),
        Some(RunEventKind::Exited {
            status: ExitStatus::Code(0),
            copy: None
        })
    );
    assert_eq!(
        last(&net, 2),
        Some(RunEventKind::Exited {
            status: ExitStatus::Code(3),
            copy: None
        })
    );
    assert_eq!(
        last(&net, 3),
        Some(RunEventKind::Exited {
            status: ExitStatus::Signal(9),
            copy: None
        })
    );
    assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
}

#[test]
fn much_output_is_paced_by_acknowledgements_and_all_arrives() {
    let mut net = pair(true, None);
    // 100 pieces of 64 KiB: 6.25 MiB, six times the window.
    start(&mut net, 1, "out", &["100", "65536"]).unwrap();
    let got: usize = events(&net, 1)
        .iter()
        .map(|e| match e {
            RunEventKind::Output { bytes, .. } => bytes.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(got, 100 * 65536);
    assert_eq!(
        last(&net, 1),
        Some(RunEventKind::Exited {
            status: ExitStatus::Code(0),
            copy: None
        })
    );
    let m = net.nodes[1].metrics().run;
    assert_eq!(m.output_bytes_sent, 100 * 65536);
    const { assert!(100 * 65536 > 6 * RUN_WINDOW_BYTES) };
}

#[test]
fn refusals_say_why() {
    let refused = |net: &Net, run| match last(net, run) {
        Some(RunEventKind::Refused { reason, text }) => (reason, text),
        other => panic!("not refused: {other:?}"),
    };
    // Started without --allow-run.
    let mut net = pair(false, None);
    start(&mut net, 1, "exit", &["0"]).unwrap();
    let (reason, text) = refused(&net, 1);
    assert_eq!(reason, RunRefusalReason::NotAllowed);
    assert!(text.contains("--allow-run"), "{text}");
    // Allowed, but for another node.
    let mut net = pair(true, Some(NodeId([9; 32])));
    start(&mut net, 1, "exit", &["0"]).unwrap();
    let (reason, text) = refused(&net, 1);
    assert_eq!(reason, RunRefusalReason::NotOnAllowList);
    assert!(text.contains(&net.id(0).to_string()), "{text}");
    assert_eq!(net.processes[1].spawned.len(), 0, "nothing ran");
    // A program that cannot start.
    let mut net = pair(true, None);
    start(&mut net, 1, "missing", &[]).unwrap();
    assert_eq!(refused(&net, 1).0, RunRefusalReason::SpawnFailed);
    // Too many at once for one peer.
    for run in 0..=RUNS_PER_PEER_MAX as u64 {
        start(&mut net, 10 + run, "wait", &[]).unwrap();
    }
    assert_eq!(
        refused(&net, 10 + RUNS_PER_PEER_MAX as u64).0,
        RunRefusalReason::Busy
    );
    assert_eq!(net.nodes[1].metrics().run.refused, 2);
}

#[test]
fn the_requester_refuses_what_cannot_go() {
    let mut net = pair(true, None);
    let refusal = |r: Result<(), InputError>| match r {
        Err(InputError::Refused(Refusal::Run(r))) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(refusal(start(&mut net, 1, "", &[])), RunRefusal::Invalid);
    assert_eq!(refusal(start(&mut net, 1, "a\0", &[])), RunRefusal::Invalid);
    start(&mut net, 1, "wait", &[]).unwrap();
    assert_eq!(
        refusal(start(&mut net, 1, "wait", &[])),
        RunRefusal::Duplicate(1)
    );
    let now = net.now;
    let signal = Command::Run(RunCommand::Signal {
        run: 7,
        signal: RunSignalKind::Kill,
    });
    assert_eq!(
        net.nodes[0].handle_input(now, Input::Command(signal)),
        Err(InputError::Refused(Refusal::Run(RunRefusal::UnknownRun(7))))
    );
    // Plaintext links (the simulator's speed runs) carry no runs.
    let mut configs: Vec<Config> = vec![plaintext_config(1), plaintext_config(2)];
    configs[1].run.allow = true;
    let mut net = Net::with_configs(configs);
    net.join(&[(0, 1)]);
    assert_eq!(
        refusal(start(&mut net, 1, "exit", &["0"])),
        RunRefusal::Plaintext
    );
}

#[test]
fn an_interrupt_ends_a_process_or_the_grace_period_kills_it() {
    let mut net = pair(true, None);
    start(&mut net, 1, "wait", &[]).unwrap();
    start(&mut net, 2, "stubborn", &[]).unwrap();
    signal(&mut net, 1, RunSignalKind::Interrupt);
    signal(&mut net, 2, RunSignalKind::Interrupt);
    assert_eq!(
        last(&net, 1),
        Some(RunEventKind::Exited {
            status: ExitStatus::Signal(2),
            copy: None
        })
    );
    assert_eq!(last(&net, 2), Some(RunEventKind::Started));
    net.run_for(Duration::from_millis(RUN_GRACE.as_millis() - 1));
    assert_eq!(
        last(&net, 2),
        Some(RunEventKind::Started),
        "not before the grace"
    );
    net.run_for(Duration::from_millis(1));
    assert_eq!(
        last(&net, 2),
        Some(RunEventKind::Exited {
            status: ExitStatus::Signal(9),
            copy: None
        })
    );
    let kills = net.processes[1]
        .signals
        .iter()
        .filter(|(_, s)| *s == RunSignalKind::Kill)
        .count();
    assert_eq!(kills, 1);
}

#[test]
fn repeated_signals_reach_the_host_once_each() {
    let mut net = pair(true, None);
    start(&mut net, 1, "stubborn", &[]).unwrap();
    for _ in 0..50 {
        signal(&mut net, 1, RunSignalKind::Interrupt);
    }
    let told = |net: &Net, kind: RunSignalKind| {
        net.processes[1]
            .signals
            .iter()
            .filter(|(_, s)| *s == kind)
            .count()
    };
    assert_eq!(told(&net, RunSignalKind::Interrupt), 1);
    assert_eq!(last(&net, 1), Some(RunEventKind::Started));
    signal(&mut net, 1, RunSignalKind::Kill);
    net.run_for(RUN_GRACE);
    assert_eq!(told(&net, RunSignalKind::Kill), 1);
    assert_eq!(
        last(&net, 1),
        Some(RunEventKind::Exited {
            status: ExitStatus::Signal(9),
            copy: None
        })
    );
}

#[test]
fn a_lost_link_kills_the_process_and_ends_the_run() {
    let mut net = pair(true, None);
    start(&mut net, 1, "stubborn", &[]).unwrap();
    let runner = net.id(1);
    net.command(0, Command::Disconnect { node: runner });
    assert_eq!(last(&net, 1), Some(RunEventKind::Lost));
    assert_eq!(net.processes[1].signals, vec![(1, RunSignalKind::Kill)]);
    assert_eq!(net.processes[1].running(), 0);
}

/// A link replaced by a new one to the same run of the peer (SPEC.md §8.6) may have lost
/// what was queued on it: the run ends as for a lost link, never waits forever.
#[test]
fn a_replaced_link_kills_the_process_and_ends_the_run() {
    let mut net = pair(true, None);
    start(&mut net, 1, "stubborn", &[]).unwrap();
    let runner = net.id(1);
    let conn_of = |net: &Net| {
        net.nodes[0]
            .links()
            .find(|(node, _)| *node == runner)
            .map(|(_, conn)| conn)
    };
    let first = conn_of(&net).expect("linked");
    // Each new connection wins the links' tie-break or loses it (its dialer's id, then its
    // nonce, decide): dial again, from either end, until one replaces the link.
    for n in 0..32 {
        if n % 2 == 0 {
            net.connect(0, 1);
        } else {
            net.connect(1, 0);
        }
        if conn_of(&net).is_some_and(|c| c != first) {
            break;
        }
        assert_eq!(
            events(&net, 1).len(),
            1,
            "a losing new connection changes nothing"
        );
    }
    assert_ne!(
        conn_of(&net),
        Some(first),
        "no new connection replaced the link"
    );
    assert_eq!(last(&net, 1), Some(RunEventKind::Lost));
    assert_eq!(net.processes[1].signals, vec![(1, RunSignalKind::Kill)]);
    assert_eq!(net.processes[1].running(), 0);
}

/// A run inside a folder: the runner's host is asked to spawn it with the folder, its sync
/// point as the requester sent it, and who asked (SPEC.md §23.5: the host holds the spawn
/// until its copy has caught up with that node's).
#[test]
fn a_run_in_a_folder_reaches_the_host_with_its_sync_point_and_requester() {
    let mut net = pair(true, None);
    let folder = weft_engine::protocol::RunFolder {
        id: weft_engine::protocol::FolderId::from_name("run:test"),
        index_id: 77,
        sequence: 12,
    };
    let command = RunCommand::Start {
        run: 1,
        peer: net.id(1),
        program: "exit".into(),
        args: vec!["0".into()],
        shell: false,
        folder: Some(folder),
    };
    net.command(0, Command::Run(command));
    net.run_for(Duration::from_millis(100));
    // The exit names the runner's copy as its host reported it (SPEC.md §23.3).
    let copy = weft_engine::protocol::SyncPoint {
        index_id: 78,
        sequence: 13,
    };
    assert_eq!(
        last(&net, 1),
        Some(RunEventKind::Exited {
            status: ExitStatus::Code(0),
            copy: Some(copy)
        })
    );
    assert_eq!(
        net.processes[1].spawned_for,
        vec![(Some(folder), net.id(0))]
    );
}

/// A RUN_EXIT naming a folder's copy for a run asked without a folder is out of order
/// (SPEC.md §23.4): the requester closes the connection, and the run is lost.
#[test]
fn an_exit_naming_a_copy_for_a_run_in_no_folder_closes_the_connection() {
    let mut net = pair(true, None);
    start(&mut net, 1, "lying", &[]).unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(events(&net, 1).first(), Some(&RunEventKind::Started));
    assert_eq!(last(&net, 1), Some(RunEventKind::Lost));
    let requester_closed: Vec<&CloseReason> = net
        .closes
        .iter()
        .filter(|(i, ..)| *i == 0)
        .map(|(_, _, r)| r)
        .collect();
    assert!(
        matches!(
            requester_closed[..],
            [CloseReason::UnexpectedMessage("a run message out of order")]
        ),
        "{:?}",
        net.closes
    );
}

/// A runner that never answers (RUN_STARTED nor RUN_REFUSED) does not keep the requester
/// waiting for as long as the link lasts: after `RUN_ANSWER_WAIT` the run is lost, the
/// runner asked to kill it should it start, and the link stays.
#[test]
fn a_run_never_answered_is_lost_after_the_answer_wait() {
    let mut net = pair(true, None);
    start(&mut net, 1, "unstartable", &[]).unwrap();
    net.run_for(Duration::from_millis(RUN_ANSWER_WAIT.as_millis() - 1_000));
    assert_eq!(events(&net, 1), vec![], "still waiting");
    net.run_for(Duration::from_secs(2));
    assert_eq!(events(&net, 1), vec![RunEventKind::Lost]);
    assert_eq!(net.nodes[0].metrics().run.asked_unanswered, 1);
    assert!(
        net.nodes[0].links().any(|(node, _)| node == net.id(1)),
        "the link stays"
    );
    // Another run goes as usual.
    start(&mut net, 2, "exit", &["0"]).unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        last(&net, 2),
        Some(RunEventKind::Exited {
            status: ExitStatus::Code(0),
            copy: None
        })
    );
}

/// A kill of a run whose spawn the runner's host still holds (its folder catching up) reaches
/// the host at once, which drops the spawn: the program never starts, where before the host
/// heard nothing and started it once the folder caught up, only to kill it then.
#[test]
fn a_kill_before_the_spawn_is_answered_drops_the_held_spawn() {
    let mut net = pair(true, None);
    start(&mut net, 1, "unstartable", &[]).unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(events(&net, 1), vec![], "the spawn is held");
    signal(&mut net, 1, RunSignalKind::Kill);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.processes[1].signals.len(), 1, "the host was told");
    assert!(
        matches!(
            last(&net, 1),
            Some(RunEventKind::Refused {
                reason: RunRefusalReason::SpawnFailed,
                ..
            })
        ),
        "{:?}",
        events(&net, 1)
    );
    assert!(net.processes[1].spawned.is_empty());
    // And likewise when the link goes before the spawn is answered.
    start(&mut net, 2, "unstartable", &[]).unwrap();
    net.run_for(Duration::from_millis(100));
    let runner = net.id(1);
    net.command(0, Command::Disconnect { node: runner });
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.processes[1].signals.len(), 2, "the host was told");
    assert!(net.processes[1].spawned.is_empty());
}
