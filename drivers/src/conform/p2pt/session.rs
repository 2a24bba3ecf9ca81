//! §25.9 Session: the handshake each side sends first, a foreign protocol id closing the
//! link, `whisper/peers` after the kit's handshake, and `whisper/request`.
//!
//! py2p (`mesh.py`): `MeshDaemon.handle_accept` sends the handshake at once; the handshake
//! handler disconnects on another protocol id (`shutdown(SHUT_RDWR)`), else records the peer
//! and sends `whisper/peers` (its routing table with addresses, the new peer itself
//! included); `__handle_request` answers `packets[1] == b'*'` with `peers`. A str `"*"`, which
//! py2p's own `request_peers` sends, falls through to `packets[2]`, an `IndexError` that
//! `found_terminator` answers with `renegotiate/compression []` and `renegotiate/resend`.

use std::time::{Duration, Instant};

use weft_engine::protocol::p2pt::{ids, Handshake, MainFlag, Peers, SubFlag};

use super::conn::{span, Conn, Got, Next};
use super::wire;
use super::{Ctx, Link, Notes};
use crate::conform::Step;

/// How far the peer's timestamps may be from the kit's clock: py2p drops broadcasts older
/// than 60 s, so a peer off by more cannot take part.
const CLOCK_SLACK_SECS: u64 = 60;

/// The handshake in `got`, which must be `whisper/handshake` with py2p's four args.
pub fn handshake_of(got: &Got) -> Result<Handshake, String> {
    let Some(m) = &got.message else {
        return Err(format!(
            "its first frame is {}, not whisper/handshake",
            got.describe()
        ));
    };
    if m.main_flag != MainFlag::WHISPER || m.sub_flag != SubFlag::HANDSHAKE {
        return Err(format!(
            "its first frame is {}, not whisper/handshake",
            got.describe()
        ));
    }
    Handshake::parse(m).map_err(|e| format!("its handshake is not py2p's: {e}"))
}

/// Which py2p protocol a protocol id is, if any: `sync1/Plaintext`.
fn known_protocol(id: &[u8]) -> Option<String> {
    let subnets = [
        ids::SUBNET_MESH,
        ids::SUBNET_SYNC_LEASED,
        ids::SUBNET_SYNC,
        ids::SUBNET_CHORD,
    ];
    for subnet in subnets {
        for enc in [ids::ENCRYPTION_PLAINTEXT, ids::ENCRYPTION_SSL] {
            if ids::protocol_id(subnet, enc).as_bytes() == id {
                return Some(format!("{subnet}/{enc}"));
            }
        }
    }
    None
}

/// The first contact: the peer's first frame, unprompted, must be its handshake, with the
/// protocol id of the kit's subnet, its own id as sender, and a Unix-seconds timestamp.
pub fn first_handshake(
    conn: &mut Conn,
    subnet: &str,
    protocol_id: &str,
    wait: Duration,
    notes: &mut Notes,
) -> Result<Handshake, String> {
    let got = conn.expect(
        wait,
        "its whisper/handshake, before the kit sends anything,",
        |_| true,
    )?;
    let h = handshake_of(&got)?;
    if h.protocol_id != protocol_id.as_bytes() {
        let theirs = String::from_utf8_lossy(&h.protocol_id).into_owned();
        let hint = match known_protocol(&h.protocol_id) {
            Some(p) if p.ends_with(ids::ENCRYPTION_SSL) => {
                format!(" (py2p's {p}: the kit speaks Plaintext only)")
            }
            Some(p) => format!(
                " (py2p's {p}: give --subnet {})",
                p.split('/').next().unwrap_or_default()
            ),
            None => String::new(),
        };
        return Err(format!(
            "its protocol id is {theirs}, not {protocol_id} (py2p's {subnet}/Plaintext, the \
             kit's --subnet){hint}"
        ));
    }
    let m = got.message.as_ref().ok_or("its handshake is no message")?;
    if m.sender != h.id {
        return Err("its handshake's sender is not the id the handshake carries".to_owned());
    }
    let now = wire::now();
    if m.timestamp.abs_diff(now) > CLOCK_SLACK_SECS {
        return Err(format!(
            "its handshake's timestamp {} is {} s from the kit's clock (Unix seconds?)",
            m.timestamp,
            m.timestamp.abs_diff(now)
        ));
    }
    if h.addr.port != conn_port(conn) {
        notes.push(format!(
            "its handshake announces {}:{} (the kit dialed port {})",
            h.addr.host,
            h.addr.port,
            conn_port(conn)
        ));
    }
    Ok(h)
}

fn conn_port(conn: &Conn) -> u16 {
    conn.peer.port()
}

/// A handshake whose protocol id is another (py2p's chord) gets the link closed, and no
/// `whisper/peers`.
pub fn other_protocol_closes(ctx: &Ctx, _: &mut Notes) -> Step {
    let (mut conn, id) = ctx.dial()?;
    let other = ids::protocol_id(ids::SUBNET_CHORD, ids::ENCRYPTION_PLAINTEXT);
    let m = wire::handshake(&id, other.as_bytes(), conn.local, &super::KIT_CODES);
    conn.send_raw(&m);
    ctx.their_handshake(&mut conn)?;
    let deadline = Instant::now() + ctx.wait;
    loop {
        match conn.next(deadline) {
            Next::Frame(g) if g.is(MainFlag::WHISPER, SubFlag::PEERS) => {
                return Err(format!(
                    "it answered a handshake with protocol id {other} (chord) with \
                     whisper/peers: it took another protocol"
                )
                .into());
            }
            Next::Frame(_) => {}
            Next::Closed => return Ok(()),
            Next::Timeout => {
                return Err(format!(
                    "the link is still open {} after a handshake with another protocol id",
                    span(ctx.wait)
                )
                .into());
            }
        }
    }
}

/// After the kit's handshake the peer's next frame is `whisper/peers` (its `whisper/request`s,
/// which py2p sends to every link whenever one closes, aside), a list of `[[host, port],
/// id]` that holds the kit's other link with the address its handshake announced.
pub fn peers_after_handshake(ctx: &Ctx, notes: &mut Notes) -> Step {
    let earlier = ctx.link()?;
    let (mut conn, id) = ctx.dial()?;
    ctx.send_handshake(&mut conn, &id, &super::KIT_CODES);
    ctx.their_handshake(&mut conn)?;
    let deadline = Instant::now() + ctx.wait;
    let got = loop {
        match conn.next(deadline) {
            Next::Frame(g) if g.is(MainFlag::WHISPER, SubFlag::REQUEST) => {}
            Next::Frame(g) => break g,
            Next::Closed => return Err(conn.closed_reason("whisper/peers").into()),
            Next::Timeout => {
                return Err(format!(
                    "no whisper/peers within {} of the kit's handshake",
                    span(ctx.wait)
                )
                .into())
            }
        }
    };
    let Some(m) = got
        .message
        .as_ref()
        .filter(|_| got.is(MainFlag::WHISPER, SubFlag::PEERS))
    else {
        return Err(format!(
            "its first frame after the kit's handshake is {}, not whisper/peers",
            got.describe()
        )
        .into());
    };
    let peers = Peers::parse(m).map_err(|e| format!("its whisper/peers is not py2p's: {e}"))?;
    let announced = |link: &Link| {
        peers.0.iter().any(|(addr, pid)| {
            *pid == link.id
                && addr.port == link.conn.local.port()
                && addr.host == link.conn.local.ip().to_string()
        })
    };
    if !announced(&earlier) {
        return Err(format!(
            "its whisper/peers ({} entries) lacks the kit's other link, [[{}, {}], its id]",
            peers.0.len(),
            earlier.conn.local.ip(),
            earlier.conn.local.port()
        )
        .into());
    }
    if peers.0.iter().any(|(_, pid)| *pid == id) {
        notes.push("the list it sends a new link holds that link itself, as py2p's does".into());
    }
    Ok(())
}

/// `whisper/request [b"*"]` is answered with `whisper/peers`.
pub fn request_bin_answered(ctx: &Ctx, _: &mut Notes) -> Step {
    let mut link = ctx.link()?;
    let m = wire::request_peers(&link.id, true);
    link.conn.send(&m);
    link.conn
        .expect(ctx.wait, "whisper/peers answering the request", |g| {
            g.is(MainFlag::WHISPER, SubFlag::PEERS)
        })?;
    Ok(())
}

/// `whisper/request ["*"]` with a str star, which py2p's own `request_peers` sends and py2p
/// itself does not answer with `peers`: noted, never failed. A bin request after it is the
/// barrier: what came before its answer answered the str one.
pub fn request_str_noted(ctx: &Ctx, notes: &mut Notes) -> Step {
    let mut link = ctx.link()?;
    let str_form = wire::request_peers(&link.id, false);
    let bin_form = wire::request_peers(&link.id, true);
    link.conn.send(&str_form);
    link.conn.send(&bin_form);
    let deadline = Instant::now() + ctx.wait;
    let mut before = Vec::new();
    let mut peers_seen = 0;
    let answer = loop {
        match link.conn.next(deadline) {
            Next::Frame(g) if g.is(MainFlag::WHISPER, SubFlag::PEERS) => {
                peers_seen += 1;
                // A renegotiation before the first peers answered the str request; else the
                // first peers may be its answer, and a second one the bin request's.
                if peers_seen == 2 || !before.is_empty() {
                    break if peers_seen == 2 {
                        "whisper/peers".to_owned()
                    } else {
                        before.join(" and ")
                    };
                }
            }
            Next::Frame(g) if g.is(MainFlag::WHISPER, SubFlag::REQUEST) => {}
            Next::Frame(g) => before.push(describe_answer(&g)),
            Next::Closed => break format!("a close ({})", link.conn.closed_reason("peers")),
            Next::Timeout => {
                break match peers_seen {
                    0 => format!("nothing within {}", span(ctx.wait)),
                    _ => "nothing (the one whisper/peers answered the bin request)".into(),
                }
            }
        }
    };
    notes.push(format!("answered with {answer}"));
    Ok(())
}

/// `renegotiate/compression [19]`, `renegotiate/resend`.
fn describe_answer(g: &Got) -> String {
    match &g.message {
        Some(m) if g.is(MainFlag::RENEGOTIATE, SubFlag::COMPRESSION) => {
            let codes: Vec<String> = m
                .args
                .first()
                .and_then(|a| a.as_array())
                .map(|a| a.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default();
            format!("renegotiate/compression [{}]", codes.join(", "))
        }
        _ => g
            .describe()
            .split(" (")
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
