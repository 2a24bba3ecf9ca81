//! An in-process peer: a real engine `Node` over a blocking `std::net` socket, so that tests
//! can misbehave on purpose (stop reading) or flood faster than `weft send` can.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use weft_engine::{
    Command, Config, ConnId, Event, HostResult, Input, Instant, MeshCommand, Node, Output,
};

use super::WAIT;

/// The answer to the node's requests to load or store its state: this peer keeps none.
const NO_STATE: &str = "no state folder";

pub struct Peer {
    pub node: Node,
    pub socket: TcpStream,
    conn: ConnId,
    origin: StdInstant,
}

impl Peer {
    /// Dials `addr` on network `net` and completes the handshake.
    pub fn connect(addr: &str, net: &str, seed: u64) -> Peer {
        let mut config = Config::from_seed(net, seed);
        config.discovery = false;
        let mut node = Node::new(config);
        let origin = StdInstant::now();
        node.handle_input(
            Instant(1),
            Input::Command(Command::Connect { addr: addr.into() }),
        )
        .unwrap();
        // The dial, and the node's requests for its state (this peer keeps none).
        let mut dial = None;
        loop {
            let mut requests = Vec::new();
            while let Some(out) = node.poll_output() {
                match out {
                    Output::Connect { conn, .. } => dial = Some(conn),
                    Output::Request { id, .. } => requests.push(id),
                    Output::Event(_) => {}
                    other => panic!("expected a dial, got {other:?}"),
                }
            }
            if requests.is_empty() {
                break;
            }
            for id in requests {
                let result = HostResult::Failed(NO_STATE.into());
                node.handle_input(Instant(1), Input::Completed { id, result })
                    .unwrap();
            }
        }
        let conn = dial.expect("a dial");
        let socket = TcpStream::connect(addr).expect("dial the node");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut peer = Peer {
            node,
            socket,
            conn,
            origin,
        };
        peer.input(Input::Connected { conn });
        let deadline = StdInstant::now() + WAIT;
        while !peer
            .pump_in()
            .iter()
            .any(|e| matches!(e, Event::PeerUp { .. }))
        {
            assert!(StdInstant::now() < deadline, "no handshake with {addr}");
        }
        peer
    }

    fn now(&self) -> Instant {
        Instant(self.origin.elapsed().as_nanos() as u64 + 1)
    }

    /// Feeds an input, writes what the node emits (blocking), and returns its events.
    fn input(&mut self, input: Input) -> Vec<Event> {
        let now = self.now();
        self.node.handle_input(now, input).unwrap();
        let mut events = Vec::new();
        let mut requests = Vec::new();
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { bytes, .. } => {
                    self.socket.write_all(&bytes).expect("write to the node");
                    let now = self.now();
                    self.node
                        .handle_input(now, Input::Writable { conn: self.conn })
                        .unwrap();
                }
                Output::Event(e) => events.push(e),
                // This peer keeps no state.
                Output::Request { id, .. } => requests.push(id),
                // One connection, kept open: no dials, and a close shows as end of stream.
                Output::Connect { .. } | Output::Close { .. } => {}
                other => panic!("the test peer does not handle {other:?}"),
            }
        }
        for id in requests {
            let result = HostResult::Failed(NO_STATE.into());
            events.extend(self.input(Input::Completed { id, result }));
        }
        events
    }

    /// Reads what has arrived (up to 50 ms of waiting) into the node.
    pub fn pump_in(&mut self) -> Vec<Event> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.read(&mut buf) {
            Ok(0) => panic!("the node closed the connection"),
            Ok(n) => {
                let bytes = Bytes::copy_from_slice(&buf[..n]);
                self.input(Input::Received {
                    conn: self.conn,
                    bytes,
                })
            }
            Err(_) => Vec::new(),
        }
    }

    /// Broadcasts `payload` (blocking until the socket took it).
    pub fn broadcast(&mut self, payload: Bytes) {
        self.input(Input::Command(Command::Mesh(MeshCommand::Broadcast {
            payload,
        })));
    }

    /// This peer's node id (64 hex digits).
    pub fn id(&self) -> String {
        weft_drivers::report::hex_id(&self.node.node_id())
    }
}
