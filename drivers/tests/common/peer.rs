//! An in-process peer: a real engine `Node` over a blocking `std::net` socket, so that tests
//! can misbehave on purpose (stop reading, write frames of their own) or flood faster than
//! `weft send` can.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole};
use weft_engine::{
    Command, Config, ConnId, Event, HostResult, Input, Instant, LinkEncryption, MeshCommand, Node,
    Output,
};

use super::WAIT;

/// The answer to the node's requests to load or store its state: this peer keeps none.
const NO_STATE: &str = "no state folder";

pub struct Peer {
    pub node: Node,
    socket: TcpStream,
    conn: ConnId,
    origin: StdInstant,
    /// The link's Noise layer when this peer runs it outside its node (see
    /// [`Peer::connect_with_own_noise`]); `None`: the node runs its own.
    noise: Option<NoiseLink>,
}

impl Peer {
    /// Dials `addr` on network `net` and completes the handshake; the node runs the link's
    /// Noise layer itself, as every node does.
    pub fn connect(addr: &str, net: &str, seed: u64) -> Peer {
        Peer::dial(addr, net, seed, false)
    }

    /// [`Peer::connect`], but the Noise layer runs here, under a node that speaks plaintext
    /// frames: [`Peer::write_frames`] can then send any bytes as this peer's frames,
    /// encrypted as the real node expects (a forged broadcast, say).
    pub fn connect_with_own_noise(addr: &str, net: &str, seed: u64) -> Peer {
        Peer::dial(addr, net, seed, true)
    }

    fn dial(addr: &str, net: &str, seed: u64, own_noise: bool) -> Peer {
        let mut config = Config::from_seed(net, seed);
        config.discovery = false;
        let noise = own_noise.then(|| {
            config.link_encryption = LinkEncryption::PlaintextSimulationOnly;
            let keys = NoiseKeys::new(
                &config.secret_key,
                config.network_key,
                config.limits.noise_rekey,
            );
            NoiseLink::new(&keys, NoiseRole::Initiator, [seed as u8; 32])
        });
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
            noise,
        };
        // With its own Noise layer, the peer shakes hands before its node starts its HELLO.
        let early = peer.noise_handshake(addr);
        peer.input(Input::Connected { conn });
        if !early.is_empty() {
            peer.input(Input::Received { conn, bytes: early });
        }
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

    /// Completes this peer's own Noise handshake, if it runs one; the plaintext that came
    /// after it.
    fn noise_handshake(&mut self, addr: &str) -> Bytes {
        let Some(link) = self.noise.as_mut() else {
            return Bytes::new();
        };
        let deadline = StdInstant::now() + WAIT;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(message) = link.poll_transmit() {
                self.socket.write_all(&message).expect("write to the node");
            }
            if link.is_established() {
                break;
            }
            assert!(
                link.error().is_none(),
                "Noise with {addr}: {:?}",
                link.error()
            );
            assert!(
                StdInstant::now() < deadline,
                "no Noise handshake with {addr}"
            );
            match self.socket.read(&mut buf) {
                Ok(0) => panic!("{addr} closed the connection in the Noise handshake"),
                Ok(n) => link.push(&buf[..n]),
                Err(_) => {}
            }
        }
        let mut early = Vec::new();
        while let Some(plain) = link.poll_plaintext() {
            early.extend_from_slice(&plain);
        }
        Bytes::from(early)
    }

    /// Writes `plain` as this peer's bytes on the link (blocking): sealed by the peer's own
    /// Noise layer, else as they are.
    fn write_sealed(&mut self, plain: &[u8]) {
        let sealed = match self.noise.as_mut() {
            Some(link) => link.seal(plain),
            None => Bytes::copy_from_slice(plain),
        };
        self.socket.write_all(&sealed).expect("write to the node");
    }

    /// Writes `frames` (encoded weft frames, or anything at all) on the link as if this
    /// peer's node had sent them. Needs [`Peer::connect_with_own_noise`]: a node's own Noise
    /// layer seals only what the node itself sends.
    pub fn write_frames(&mut self, frames: &[u8]) {
        assert!(
            self.noise.is_some(),
            "write_frames needs connect_with_own_noise"
        );
        self.write_sealed(frames);
    }

    /// Feeds an input, writes what the node emits (blocking), and returns its events.
    fn input(&mut self, input: Input) -> Vec<Event> {
        let now = self.now();
        self.node.handle_input(now, input).unwrap();
        self.drain()
    }

    /// Writes what the node emits (blocking), answers its requests, and returns its events.
    fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut requests = Vec::new();
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { bytes, .. } => {
                    self.write_sealed(&bytes);
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
                let bytes = match self.noise.as_mut() {
                    Some(link) => {
                        link.push(&buf[..n]);
                        assert_eq!(link.error(), None, "the node's Noise messages");
                        let mut plain = Vec::new();
                        while let Some(p) = link.poll_plaintext() {
                            plain.extend_from_slice(&p);
                        }
                        Bytes::from(plain)
                    }
                    None => Bytes::copy_from_slice(&buf[..n]),
                };
                if bytes.is_empty() {
                    return Vec::new();
                }
                self.input(Input::Received {
                    conn: self.conn,
                    bytes,
                })
            }
            Err(_) => Vec::new(),
        }
    }

    /// Hands this peer's node an application command; its events, or the refusal.
    pub fn command(&mut self, command: Command) -> Result<Vec<Event>, weft_engine::InputError> {
        let now = self.now();
        self.node.handle_input(now, Input::Command(command))?;
        Ok(self.drain())
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
