//! `weft conform --dialect p2p.today`: the kit against an implementation of the p2p.today
//! dialect (py2p 0.7.878's wire, SPEC.md §25), first of all real py2p nodes.
//!
//! The kit dials the peer, plays py2p's side of each exchange under fresh py2p-style node ids
//! (one per connection), and reports one line per §25 section. py2p is the reference: where
//! the rules as first written and py2p's code disagree, the checks follow what py2p does, and
//! what py2p does that is worth knowing but not required is reported as a note.
//!
//! - [`conn`]: one connection and its frame reader (deadlines, every compression method);
//! - [`wire`]: the messages the kit sends, its node ids, a msgpack splitter;
//! - [`session`], [`compression`], [`frame`], [`mesh`], [`table`]: the checks;
//! - [`report`]: the report's lines and JSON.

pub mod compression;
pub mod conn;
pub mod frame;
pub mod mesh;
pub mod report;
pub mod session;
pub mod table;
pub mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use weft_engine::protocol::p2pt::{
    choose_compression, ids, receive_order, Handshake, MainFlag, Method, SubFlag,
};

use super::{ConformArgs, Step};
use conn::{Conn, Got};
use report::{CheckResult, Outcome, Report, Section};

/// The py2p subnet the peer runs (its protocol id is `protocol_id(subnet, "Plaintext")`): the
/// engine's own.
pub use weft_engine::p2pt::Subnet;

/// The codes the kit advertises on an ordinary link: py2p's own list, in its order.
pub const KIT_CODES: [u64; 4] = [0x13, 0x11, 0x10, 0x12];

/// What every check knows about the peer under test.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where the peer listens.
    pub addr: SocketAddr,
    /// The subnet the kit assumes.
    pub subnet: Subnet,
    /// Its protocol id, as text.
    pub protocol_id: String,
    /// How long an answer may take.
    pub wait: Duration,
    /// The peer's node id, from its first handshake.
    pub peer_id: Vec<u8>,
    /// The compression codes its first handshake advertised.
    pub peer_codes: Vec<u64>,
}

/// A linked connection: the kit's id on it, the peer's handshake and its `whisper/peers`.
pub struct Link {
    /// The connection.
    pub conn: Conn,
    /// The kit's node id on it.
    pub id: Vec<u8>,
    /// The codes the kit advertised on it.
    pub codes: Vec<u64>,
    /// The peer's handshake on it.
    pub theirs: Handshake,
    /// The peer's `whisper/peers` after the kit's handshake.
    pub peers: Got,
}

impl Ctx {
    /// A connection and a fresh kit id for it.
    pub fn dial(&self) -> Result<(Conn, Vec<u8>), String> {
        let conn = Conn::dial(self.addr, self.wait)?;
        let id = wire::fresh_id(conn.local, &self.protocol_id);
        Ok((conn, id))
    }

    /// The peer's handshake, which must be the first frame on `conn`.
    pub fn their_handshake(&self, conn: &mut Conn) -> Result<(Handshake, Got), String> {
        let got = conn.expect(self.wait, "its whisper/handshake", |_| true)?;
        let handshake = session::handshake_of(&got)?;
        Ok((handshake, got))
    }

    /// Sends the kit's handshake (raw, as py2p) advertising `codes`, and sets the method the
    /// kit sends with: the first of its own list the peer advertised.
    pub fn send_handshake(&self, conn: &mut Conn, id: &[u8], codes: &[u64]) {
        let m = wire::handshake(id, self.protocol_id.as_bytes(), conn.local, codes);
        conn.send_raw(&m);
        conn.send_with = self.send_method(codes);
    }

    /// The method the kit compresses with after advertising `codes`.
    pub fn send_method(&self, codes: &[u64]) -> Option<Method> {
        choose_compression(&receive_order(codes), &self.peer_codes)
    }

    /// A whole link advertising `codes`: the kit's handshake and the peer's, then the peer's
    /// `whisper/peers`.
    pub fn link_with(&self, codes: &[u64]) -> Result<Link, String> {
        let (mut conn, id) = self.dial()?;
        // Both sides send at once, as py2p's `connect` and `handle_accept` do.
        self.send_handshake(&mut conn, &id, codes);
        let (theirs, _) = self.their_handshake(&mut conn)?;
        let peers = conn.expect(self.wait, "whisper/peers after the kit's handshake", |g| {
            g.is(MainFlag::WHISPER, SubFlag::PEERS)
        })?;
        Ok(Link {
            conn,
            id,
            codes: codes.to_vec(),
            theirs,
            peers,
        })
    }

    /// An ordinary link, advertising py2p's own codes.
    pub fn link(&self) -> Result<Link, String> {
        self.link_with(&KIT_CODES)
    }
}

/// Notes a check makes: what it saw without judging it.
pub type Notes = Vec<String>;

/// One check: its section, its name and what it runs.
pub struct Check {
    /// The section it tests.
    pub section: Section,
    /// A few words on what it checks.
    pub name: &'static str,
    /// The check.
    pub run: fn(&Ctx, &mut Notes) -> Step,
}

/// Every check after the first contact, in the order they run.
pub fn all() -> Vec<Check> {
    use Section::*;
    let c = |section, name, run| Check { section, name, run };
    vec![
        c(
            Session,
            "a handshake with another protocol id closes the link",
            session::other_protocol_closes,
        ),
        c(
            Session,
            "whisper/peers follows the kit's handshake",
            session::peers_after_handshake,
        ),
        c(
            Session,
            "whisper/request [b\"*\"] is answered with whisper/peers",
            session::request_bin_answered,
        ),
        c(
            Session,
            "whisper/request [\"*\"] (str, as py2p's request_peers sends it)",
            session::request_str_noted,
        ),
        c(
            Compression,
            "its handshake is raw and advertises its codes",
            compression::handshake_raw,
        ),
        c(
            Compression,
            "the kit advertising only zlib gets zlib",
            compression::only_zlib,
        ),
        c(
            Compression,
            "the kit advertising only gzip gets gzip",
            compression::only_gzip,
        ),
        c(
            Compression,
            "the kit advertising nothing gets raw frames",
            compression::nothing_raw,
        ),
        c(
            Compression,
            "a raw frame on a compressed link is accepted",
            compression::raw_on_compressed,
        ),
        c(
            Compression,
            "renegotiate/compression is answered with the intersection",
            compression::renegotiate,
        ),
        c(
            Compression,
            "renegotiate/resend sends the last whisper/broadcast again",
            compression::resend,
        ),
        c(
            Frame,
            "a bad checksum closes the link, the others carry on",
            frame::bad_checksum_closes,
        ),
        c(
            Frame,
            "a frame cut short, then silence",
            frame::cut_short_noted,
        ),
        c(
            Mesh,
            "a broadcast is relayed once to the others, unchanged, not back",
            mesh::relayed_once,
        ),
        c(
            Mesh,
            "the same broadcast again is not relayed",
            mesh::duplicate_dropped,
        ),
        c(
            Mesh,
            "a broadcast over 60 s old is not relayed",
            mesh::old_dropped,
        ),
        c(
            Mesh,
            "a broadcast from a third id is relayed to every link",
            mesh::third_sender_to_all,
        ),
        c(
            Table,
            "a store is kept and handed to a new link with its owner",
            table::store_handed_over,
        ),
        c(
            Table,
            "another id's write to a key (sync1: refused, sync0: newer wins)",
            table::other_writer,
        ),
        c(
            Table,
            "a delete (nil) from the owner removes the key",
            table::delete_removes,
        ),
    ]
}

/// The kit against `addr`: the first contact (the peer's handshake, which teaches the kit
/// its id and codes, §25.9's first check), then every check. `Err` only when the peer cannot
/// be reached at all.
pub fn run(addr: SocketAddr, subnet: Subnet, wait: Duration) -> Result<Report, String> {
    let protocol_id = ids::protocol_id(subnet.name(), ids::ENCRYPTION_PLAINTEXT);
    let mut report = Report {
        peer: addr.to_string(),
        subnet: subnet.name(),
        results: Vec::new(),
    };
    let mut conn = Conn::dial(addr, wait)?;
    let mut notes = Vec::new();
    let first = session::first_handshake(&mut conn, subnet.name(), &protocol_id, wait, &mut notes);
    conn.shutdown();
    let first_name = "its whisper/handshake comes first";
    let handshake = match first {
        Ok(h) => {
            report.results.push(CheckResult {
                section: Section::Session,
                name: first_name,
                outcome: Outcome::Pass,
                notes,
            });
            h
        }
        Err(why) => {
            report.results.push(CheckResult {
                section: Section::Session,
                name: first_name,
                outcome: Outcome::Fail(why),
                notes,
            });
            for check in all() {
                report.results.push(CheckResult {
                    section: check.section,
                    name: check.name,
                    outcome: Outcome::Skip("no handshake from the peer".into()),
                    notes: Vec::new(),
                });
            }
            return Ok(report);
        }
    };
    let ctx = Ctx {
        addr,
        subnet,
        protocol_id,
        wait,
        peer_id: handshake.id,
        peer_codes: handshake.compression,
    };
    for check in all() {
        let mut notes = Vec::new();
        let outcome = super::outcome_of(check.section.tag(), check.name, || {
            (check.run)(&ctx, &mut notes)
        });
        report.results.push(CheckResult {
            section: check.section,
            name: check.name,
            outcome,
            notes,
        });
    }
    Ok(report)
}

/// Runs `weft conform --dialect p2p.today`: only as initiator (`--peer`), without the weft
/// dialect's `--name`, `--secret` and `--timers`.
pub fn conform(args: &ConformArgs) -> ExitCode {
    let refuse = |flag: &str| {
        crate::cli::usage(format!(
            "{flag} does not apply with --dialect p2p.today (the kit dials a py2p-style peer: \
             give --peer HOST:PORT and, for a sync table, --subnet)"
        ))
    };
    if args.listen.is_some() {
        return refuse("--listen");
    }
    if args.name.is_some() {
        return refuse("--name");
    }
    if args.secret.is_some() {
        return refuse("--secret");
    }
    if args.timers {
        return refuse("--timers");
    }
    let Some(peer) = &args.peer else {
        return crate::cli::usage("give --peer HOST:PORT");
    };
    let addr = match crate::cli::socket_addr(peer) {
        Ok(a) => a,
        Err(e) => return crate::cli::usage(format!("--peer {peer}: {e}")),
    };
    let wait = Duration::from_millis(args.wait_ms);
    let subnet = args.subnet.unwrap_or(Subnet::Mesh);
    let report = match run(addr, subnet, wait) {
        Ok(r) => r,
        Err(e) => return crate::cli::fail(e),
    };
    print_report(&report, args.json);
    if report.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints the report as lines, or as one JSON object.
pub fn print_report(report: &Report, json: bool) {
    super::report::print(&report.lines(), json.then(|| report.json()).as_ref());
}

/// A hex text of `bytes`, for keys and values the kit makes up.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
