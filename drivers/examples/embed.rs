//! A weft node in a hand-written event loop over `std::net` (no mio, no tokio): the whole
//! driver contract in one file. It greets the mesh every two seconds and prints what it hears:
//! `cargo run -p weft-drivers --example embed -- NETWORK LISTEN_ADDR [PEER_ADDR]`
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use weft_engine::{
    Command, Config, ConnId, Event, HostResult, Input, Instant, MeshCommand, MeshEvent, Node,
    Output,
};

/// What a connection owes its socket: bytes handed out and not yet written.
#[derive(Default)]
struct Out {
    bytes: Vec<u8>,
    owed: bool,    // something was handed out since the last `Writable`
    closing: bool, // the node asked to close: write what is left, close, answer `Closed`
}

type Links = BTreeMap<ConnId, (TcpStream, Out)>;
fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(network), Some(listen)) = (args.first(), args.get(1)) else {
        return Err("usage: embed NETWORK LISTEN_ADDR [PEER_ADDR]".into());
    };
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let origin = StdInstant::now(); // the engine's clock: nanoseconds since the loop started
    let now = || Instant(origin.elapsed().as_nanos() as u64);
    // A throwaway key for the demo; `weft node` keeps its key in a state folder.
    let mut config = Config::from_seed(network.as_str(), unix_ms() ^ u64::from(std::process::id()));
    config.listen_addr = Some(listener.local_addr()?.to_string());
    let mut node = Node::new(config);
    let (id, addr) = (node.node_id(), listener.local_addr()?);
    println!("node {id} listening on {addr}");

    let mut links = Links::new();
    let mut inputs = VecDeque::from([Input::WallClock { unix_ms: unix_ms() }]);
    if let Some(addr) = args.get(2) {
        inputs.push_back(Input::Command(Command::Connect { addr: addr.clone() }));
    }
    let (mut accepted, mut greetings, mut next_greeting) = (0, 0, origin);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Ok((socket, addr)) = listener.accept() {
            socket.set_nonblocking(true)?;
            accepted += 1;
            let conn = ConnId::inbound(accepted);
            links.insert(conn, (socket, Out::default()));
            let addr = addr.to_string();
            inputs.push_back(Input::Accepted { conn, addr });
        }
        for (&conn, (socket, _)) in links.iter_mut().filter(|(_, (_, o))| !o.closing) {
            match socket.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    inputs.push_back(Input::Received { conn, bytes });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                _ => inputs.push_back(Input::Closed { conn }), // end of stream or an error
            }
        }
        if StdInstant::now() >= next_greeting {
            next_greeting += Duration::from_secs(2);
            greetings += 1;
            let payload = format!("hello #{greetings} from {id}").into();
            inputs.push_back(Input::Command(Command::Mesh(MeshCommand::Broadcast {
                payload,
            })));
            inputs.push_back(Input::WallClock { unix_ms: unix_ms() });
        }
        if node.poll_timeout().is_some_and(|at| at <= now()) {
            node.handle_timeout(now());
            drain(&mut node, &mut links, &mut inputs)?;
        }
        // The contract: hand over one input, then drain every output before the next.
        while let Some(input) = inputs.pop_front() {
            if let Input::Closed { conn } = &input {
                links.remove(conn);
            }
            if let Err(e) = node.handle_input(now(), input) {
                eprintln!("refused: {e}");
            }
            drain(&mut node, &mut links, &mut inputs)?;
        }
        // Write in order; once all that was handed out is written, the node is owed `Writable`.
        for (&conn, (socket, out)) in &mut links {
            let failed = match socket.write(&out.bytes) {
                Ok(0) => !out.bytes.is_empty(),
                Ok(n) => out.bytes.drain(..n).len() == 0, // never: `n` bytes were written
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            };
            if failed || (out.closing && out.bytes.is_empty()) {
                let _ = socket.shutdown(Shutdown::Both);
                inputs.push_back(Input::Closed { conn });
            } else if out.bytes.is_empty() && std::mem::take(&mut out.owed) {
                inputs.push_back(Input::Writable { conn });
            }
        }
        if inputs.is_empty() {
            // Sleep until the node's deadline, looking at the sockets every 2 ms meanwhile.
            let deadline = node.poll_timeout().map_or(u64::MAX, |at| at.0);
            let wait = Duration::from_nanos(deadline.saturating_sub(now().0));
            std::thread::sleep(wait.min(Duration::from_millis(2)));
        }
    }
}

/// Drains the node's outputs: bytes to write, dials, closes, requests and events. An output
/// this loop does not know ends it: dropping one would break the node's contract.
fn drain(node: &mut Node, links: &mut Links, inputs: &mut VecDeque<Input>) -> Result<(), String> {
    while let Some(output) = node.poll_output() {
        match output {
            Output::Transmit { conn, bytes } => {
                if let Some((_, out)) = links.get_mut(&conn) {
                    out.bytes.extend_from_slice(&bytes);
                    out.owed = true;
                }
            }
            Output::Connect { conn, addr } => {
                // A blocking dial keeps the example short; the drivers dial without blocking.
                let dial = |a| TcpStream::connect_timeout(&a, Duration::from_secs(2));
                match addr.parse().map(dial) {
                    Ok(Ok(socket)) if socket.set_nonblocking(true).is_ok() => {
                        links.insert(conn, (socket, Out::default()));
                        inputs.push_back(Input::Connected { conn });
                    }
                    _ => inputs.push_back(Input::ConnectFailed { conn }),
                }
            }
            Output::Close { conn, .. } => {
                if let Some((_, out)) = links.get_mut(&conn) {
                    out.closing = true;
                }
            }
            // This node keeps no state folder: it cannot load or store the node's state.
            Output::Request { id, .. } => {
                let result = HostResult::Failed("no state folder".into());
                inputs.push_back(Input::Completed { id, result });
            }
            Output::Event(Event::Mesh(MeshEvent::Broadcast {
                origin, payload, ..
            })) => {
                println!("{origin}: {}", String::from_utf8_lossy(&payload));
            }
            Output::Event(event) => eprintln!("{event:?}"),
            other => return Err(format!("an output this loop does not handle: {other:?}")),
        }
    }
    Ok(())
}
