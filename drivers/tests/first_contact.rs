//! A joining node's first contact (`Setup::first_contact`, what `weft join` sets), in both
//! drivers: a node that cannot link to the network through its peer in time, or whose peer
//! belongs to another network, ends its run in `RunError::NotJoined`; one that links runs on.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weft_drivers::mio_driver::MioDriver;
use weft_drivers::tokio_driver::TokioDriver;
use weft_drivers::{Exit, FirstContact, Handle, RunError, Setup};
use weft_engine::Config;

#[derive(Debug, Clone, Copy)]
enum Driver {
    Mio,
    Tokio,
}

const DRIVERS: [Driver; 2] = [Driver::Mio, Driver::Tokio];

/// How long a test's run may take before it counts as hung.
const RUN_BOUND: Duration = Duration::from_secs(20);

fn setup(network: &str, seed: u64, peer: Option<&str>, wait_ms: u64) -> Setup {
    let config = Config::from_seed(network, seed);
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut setup = Setup::bind(config, addr).expect("a listener on 127.0.0.1");
    if let Some(peer) = peer {
        setup.peers = vec![peer.to_owned()];
        setup.first_contact = Some(FirstContact {
            addr: peer.to_owned(),
            wait: weft_engine::Duration::from_millis(wait_ms),
        });
    }
    setup
}

/// Runs a node on its own thread: its handle, and where its run's end arrives.
fn spawn(driver: Driver, setup: Setup) -> (Handle, mpsc::Receiver<Result<Exit, RunError>>) {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let end = match driver {
            Driver::Mio => {
                let (node, handle) = MioDriver::new(setup).expect("a mio driver");
                let _ = handle_tx.send(handle);
                node.run()
            }
            Driver::Tokio => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                let _entered = rt.enter();
                let (node, handle) = TokioDriver::new(setup).expect("a tokio driver");
                let _ = handle_tx.send(handle);
                rt.block_on(node.run())
            }
        };
        let _ = end_tx.send(end);
    });
    let handle = handle_rx.recv().expect("the driver starts");
    (handle, end_rx)
}

fn not_joined(end: Result<Exit, RunError>) -> String {
    match end {
        Err(RunError::NotJoined(why)) => why,
        other => panic!("expected NotJoined, got {other:?}"),
    }
}

#[test]
fn an_unreachable_peer_ends_the_run_once_the_wait_is_over() {
    // Nothing listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let peer = free.local_addr().expect("its address").to_string();
    drop(free);
    for driver in DRIVERS {
        let started = Instant::now();
        let (_handle, end) = spawn(driver, setup("first-contact", 1, Some(&peer), 700));
        let why = not_joined(end.recv_timeout(RUN_BOUND).expect("the run ends"));
        let took = started.elapsed();
        assert!(
            why.contains("not linked within 700 ms"),
            "{driver:?}: {why}"
        );
        assert!(why.contains("connection refused"), "{driver:?}: {why}");
        assert!(took >= Duration::from_millis(700), "{driver:?}: {took:?}");
    }
}

#[test]
fn a_peer_of_another_network_ends_the_run_at_once() {
    for driver in DRIVERS {
        let (other, _other_end) = spawn(driver, setup("network-a", 2, None, 0));
        let addr = other.id().expect("the other node answers").listen_addr;
        let addr = addr.expect("it listens");
        // A wait far past the test's bound: only the refusal can end the run in time.
        let joiner = setup("network-b", 3, Some(&addr), 600_000);
        let (_handle, end) = spawn(driver, joiner);
        let why = not_joined(end.recv_timeout(RUN_BOUND).expect("the run ends"));
        assert!(why.contains("another network"), "{driver:?}: {why}");
        other.shutdown().expect("the other node stops");
    }
}

#[test]
fn a_service_that_is_not_weft_ends_the_run_at_once() {
    use std::io::{Read, Write};
    // Answers every connection with an HTTP error, as a web server on the wrong port would.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = server.local_addr().expect("its address").to_string();
    std::thread::spawn(move || {
        for mut conn in server.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    for driver in DRIVERS {
        let (_handle, end) = spawn(driver, setup("first-contact", 6, Some(&addr), 600_000));
        let why = not_joined(end.recv_timeout(RUN_BOUND).expect("the run ends"));
        assert!(
            why.contains("does not answer as a weft node"),
            "{driver:?}: {why}"
        );
    }
}

#[test]
fn a_node_that_links_runs_on_past_the_wait() {
    for driver in DRIVERS {
        let (member, _member_end) = spawn(driver, setup("network-a", 4, None, 0));
        let addr = member.id().expect("the member answers").listen_addr;
        let addr = addr.expect("it listens");
        let (joiner, end) = spawn(driver, setup("network-a", 5, Some(&addr), 700));
        // Well past the wait, the joiner still runs, linked to the member.
        assert!(
            end.recv_timeout(Duration::from_millis(1500)).is_err(),
            "{driver:?}: a linked node's run goes on"
        );
        let id = joiner.id().expect("the joiner answers");
        assert_eq!(id.peers_direct, 1, "{driver:?}");
        joiner.shutdown().expect("the joiner stops");
        let end = end.recv_timeout(RUN_BOUND).expect("the run ends");
        assert!(matches!(end, Ok(Exit::Requested)), "{driver:?}: {end:?}");
        member.shutdown().expect("the member stops");
    }
}
