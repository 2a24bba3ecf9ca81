//! `weft conform`: a conformance kit that plays a scripted peer against any implementation of
//! the weft protocol and reports, one line per SPEC.md section, what it does right and wrong
//! (issue 19; SPEC.md §18.1).
//!
//! The kit is blocking code over `std::net` with deadlines: each check opens the connections
//! it needs, each under a fresh identity, so one failure does not mask another. It speaks the
//! protocol through `weft_protocol` (frames, messages, the test vectors) and the engine's
//! sans-IO Noise layer and identity, never through a `Node`, so it can break any rule on
//! purpose.
//!
//! - [`conn`]: one connection (TCP, Noise, frames) and its expectations (a BYE, a close, a
//!   PONG);
//! - [`hello`]: the kit's identities and its side of the handshake;
//! - [`checks`]: the checks, one module per group of sections;
//! - [`report`]: the report's lines and JSON;
//! - [`p2pt`]: the kit for the p2p.today dialect (`--dialect p2p.today`, SPEC.md §25), a
//!   separate script with its own report.

pub mod checks;
pub mod conn;
pub mod hello;
pub mod p2pt;
pub mod report;
pub mod vectors;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use weft_engine::identity::Role;
use weft_engine::protocol::{Family, Hello, NetworkId, CAP_BROADCASTS_UNSIGNED};
use weft_engine::NetworkKey;

use conn::Conn;
use hello::{LinkOpts, Me};
use report::{CheckResult, Outcome, Report, Section};

pub use crate::cli::Dialect;

/// `weft conform`'s arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["peer", "listen"])))]
pub struct ConformArgs {
    /// Dial the implementation under test at HOST:PORT and test it, the kit as initiator.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<String>,
    /// Listen on ADDR, test the first peer that dials in (the kit as acceptor), and exit.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The network's name; without it the kit joins the network the peer's HELLO names.
    #[arg(long, value_parser = crate::cli::network_name)]
    pub name: Option<String>,
    /// The network's secret, if the peer's network is private (SPEC.md §21.7).
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// How long to wait for each answer, in milliseconds (100 to 600000: less fails checks a
    /// sound peer passes).
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub wait_ms: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also check the timers (idle PING, silence close, handshake timeout), assuming the
    /// peer runs SPEC.md §14's defaults: about 18 s more (as initiator only).
    #[arg(long)]
    pub timers: bool,
    /// The protocol the peer speaks: `weft`, or `p2p.today` (py2p 0.7.878's wire, SPEC.md
    /// §25; with --peer only).
    #[arg(long, value_enum, default_value_t = Dialect::Weft)]
    pub dialect: Dialect,
    /// With --dialect p2p.today: the py2p subnet the peer runs (`mesh`: a MeshSocket,
    /// `sync1`: a SyncSocket with leases, `sync0`: without); mesh if not given.
    #[arg(long, value_name = "SUBNET", value_parser = crate::cli::subnet)]
    pub subnet: Option<p2pt::Subnet>,
}

/// What every check knows about the peer under test.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where the peer listens.
    pub addr: SocketAddr,
    /// The network both sides claim.
    pub network: NetworkId,
    /// The Noise pre-shared key of the network.
    pub network_key: NetworkKey,
    /// How long an answer may take.
    pub wait: Duration,
    /// The peer's HELLO on the first link: its signing mode and families.
    pub peer: Hello,
    /// Whether the peer sends LIST on a new link (it holds a folder, SPEC.md §22): learnt by
    /// the first check that waits for one, so the others need not wait again.
    pub sends_list: std::sync::OnceLock<bool>,
    /// Whether the peer sends DROP_SUBSCRIBE on a new link announcing drops (it holds a
    /// drop, SPEC.md §24): learnt like `sends_list`.
    pub holds_drop: std::sync::OnceLock<bool>,
}

/// Why a check stopped early.
#[derive(Debug, Clone)]
pub enum Stop {
    /// The peer broke a rule: why.
    Fail(String),
    /// The check does not apply: why.
    Skip(String),
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Fail(why)
    }
}

/// What a check returns.
pub type Step = Result<(), Stop>;

/// A linked connection: the kit's identity on it and the peer's HELLO.
pub struct Link {
    /// The connection, established.
    pub conn: Conn,
    /// The kit's identity on it.
    pub me: Me,
    /// The peer's HELLO on it.
    pub peer: Hello,
}

impl Ctx {
    /// Whether the peer's network sends broadcasts unsigned.
    pub fn unsigned(&self) -> bool {
        self.peer.capabilities & CAP_BROADCASTS_UNSIGNED != 0
    }

    /// Whether the peer announced `family`.
    pub fn runs(&self, family: Family) -> bool {
        self.peer.families & family.bit() != 0
    }

    /// The kit's HELLO settings for an ordinary link.
    pub fn opts(&self) -> LinkOpts {
        LinkOpts::link(self.unsigned())
    }

    /// A connection with its Noise handshake done, as `me`.
    pub fn noise(&self, me: &Me) -> Result<Conn, String> {
        let mut conn = Conn::dial(self.addr, &me.keys(self.network_key), self.wait)?;
        conn.finish_noise(self.wait)?;
        Ok(conn)
    }

    /// Noise, then the kit's HELLO and the peer's: the connection is in the handshake, the
    /// kit's HELLO_ACK not sent.
    pub fn hellos(&self, me: &Me, opts: &LinkOpts) -> Result<(Conn, Hello), String> {
        let mut conn = self.noise(me)?;
        conn.send_msg(
            &weft_engine::protocol::Message::Hello(me.hello(self.network, opts)),
            false,
        );
        let peer = hello::read_hello(&mut conn, self.wait)?;
        self.check_hello(&conn, &peer)?;
        Ok((conn, peer))
    }

    /// A whole handshake as `me` with `opts`: the link, or what went wrong.
    pub fn link_as(&self, me: Me, opts: &LinkOpts) -> Result<Link, String> {
        let (mut conn, peer) = self.hellos(&me, opts)?;
        let ack = me.ack(self.network, Role::Dialer, &peer);
        conn.send_msg(&weft_engine::protocol::Message::HelloAck(ack), false);
        let theirs = hello::read_ack(&mut conn, self.wait)?;
        if !me.verifies(self.network, Role::Dialer, &peer, &theirs) {
            return Err("its HELLO_ACK does not verify over the §7.3 transcript".into());
        }
        conn.answer_pings = true;
        Ok(Link { conn, me, peer })
    }

    /// An ordinary link under a fresh identity.
    pub fn link(&self) -> Result<Link, String> {
        self.link_as(Me::fresh(), &self.opts())
    }

    /// The rules every HELLO of the peer keeps (SPEC.md §6.2, §7.4, §21.2).
    pub fn check_hello(&self, conn: &Conn, h: &Hello) -> Result<(), String> {
        check_hello(conn, h, self.network)
    }
}

/// The rules a peer's HELLO keeps on a link: the network, the key the Noise handshake bound,
/// the session family, no `dedicated` from the acceptor.
fn check_hello(conn: &Conn, h: &Hello, network: NetworkId) -> Result<(), String> {
    if h.network != network {
        return Err("its HELLO names another network".into());
    }
    if conn.peer_identity() != Some(h.public_key) {
        return Err("its HELLO's key is not the key its Noise handshake bound (§21.2)".into());
    }
    if h.dedicated.is_some() {
        return Err("its HELLO asks for a dedicated connection on a link".into());
    }
    Ok(())
}

/// One check: its section, its name and what it runs.
pub struct Check {
    /// The section it tests.
    pub section: Section,
    /// A few words on what it checks.
    pub name: &'static str,
    /// The check.
    pub run: fn(&Ctx) -> Step,
}

/// Runs `weft conform`.
pub fn conform(args: ConformArgs) -> ExitCode {
    match args.dialect {
        Dialect::P2pToday => return p2pt::conform(&args),
        Dialect::Weft if args.subnet.is_some() => {
            return crate::cli::usage("--subnet is for --dialect p2p.today")
        }
        Dialect::Weft => {}
    }
    let network_key = match &args.secret {
        Some(s) => match NetworkKey::derive(s.as_bytes()) {
            Ok(k) => k,
            Err(e) => return crate::cli::usage(format!("--secret: {e}")),
        },
        None => NetworkKey::OPEN,
    };
    let wait = Duration::from_millis(args.wait_ms);
    let network = args.name.as_deref().map(NetworkId::from_name);
    let report = match (&args.peer, &args.listen) {
        (Some(peer), _) => {
            let addr = match crate::cli::socket_addr(peer) {
                Ok(a) => a,
                Err(e) => return crate::cli::usage(format!("--peer {peer}: {e}")),
            };
            match run_initiator(addr, network, network_key, wait, args.timers) {
                Ok(r) => r,
                Err(e) => return crate::cli::fail(e),
            }
        }
        (None, Some(listen)) => {
            let listener = match TcpListener::bind(listen) {
                Ok(l) => l,
                Err(e) => return crate::cli::usage(format!("--listen {listen}: {e}")),
            };
            if let Ok(local) = listener.local_addr() {
                let _ = writeln!(std::io::stderr(), "weft conform: listening on {local}");
            }
            match checks::acceptor::run(&listener, network, network_key, wait) {
                Ok(r) => r,
                Err(e) => return crate::cli::fail(e),
            }
        }
        // clap's group makes one of the two required.
        (None, None) => return crate::cli::usage("give --peer HOST:PORT or --listen ADDR"),
    };
    print_report(&report, args.json);
    if report.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs one check and turns how it stopped into its outcome; with `WEFT_CONFORM_TIMES` set,
/// prints how long it took on stderr.
pub(crate) fn outcome_of(
    tag: &str,
    name: &str,
    check: impl FnOnce() -> Result<(), Stop>,
) -> Outcome {
    let started = std::time::Instant::now();
    let result = check();
    if std::env::var_os("WEFT_CONFORM_TIMES").is_some() {
        // A closed stderr (`2>&1 | head`) is no reason to stop: `eprintln!` would panic.
        let _ = writeln!(
            std::io::stderr(),
            "{:>6} ms  {tag} {name}",
            started.elapsed().as_millis()
        );
    }
    match result {
        Ok(()) => Outcome::Pass,
        Err(Stop::Fail(why)) => Outcome::Fail(why),
        Err(Stop::Skip(why)) => Outcome::Skip(why),
    }
}

/// Prints the report as lines, or as one JSON object.
pub fn print_report(report: &Report, json: bool) {
    report::print(&report.lines(), json.then(|| report.json()).as_ref());
}

/// The kit as initiator against `addr`: the first link, then every check (with `timers`,
/// then the timer checks, all at once). `Err` only when the peer cannot be
/// reached at all.
pub fn run_initiator(
    addr: SocketAddr,
    network: Option<NetworkId>,
    network_key: NetworkKey,
    wait: Duration,
    timers: bool,
) -> Result<Report, String> {
    let mut report = Report {
        peer: addr.to_string(),
        role: "initiator",
        results: Vec::new(),
    };
    let me = Me::fresh();
    let mut conn = Conn::dial(addr, &me.keys(network_key), wait)?;
    // The first link: it teaches the kit the peer's network (without --name), mode and
    // families, and is itself checked.
    let first = first_link(&mut conn, &me, network, wait);
    let (peer, network) = match first {
        Ok(x) => x,
        Err((section, why)) => {
            report.results.push(CheckResult {
                section,
                name: "the first link",
                outcome: Outcome::Fail(why),
            });
            for s in Section::ALL.into_iter().filter(|s| *s != section) {
                report.results.push(CheckResult {
                    section: s,
                    name: "not run",
                    outcome: Outcome::Skip("no link with the peer".into()),
                });
            }
            return Ok(report);
        }
    };
    drop(conn);
    let ctx = Ctx {
        addr,
        network,
        network_key,
        wait,
        peer,
        sends_list: std::sync::OnceLock::new(),
        holds_drop: std::sync::OnceLock::new(),
    };
    let run = |check: &Check| {
        let outcome = outcome_of(check.section.tag(), check.name, || (check.run)(&ctx));
        CheckResult {
            section: check.section,
            name: check.name,
            outcome,
        }
    };
    for check in checks::all() {
        report.results.push(run(&check));
    }
    // After the others, whose traffic would keep a link from ever being idle; all at once.
    let timer_checks = if timers { checks::timed() } else { Vec::new() };
    std::thread::scope(|scope| {
        let waiting: Vec<_> = timer_checks
            .iter()
            .map(|check| scope.spawn(|| run(check)))
            .collect();
        for (thread, check) in waiting.into_iter().zip(&timer_checks) {
            let result = thread.join().unwrap_or_else(|_| CheckResult {
                section: check.section,
                name: check.name,
                outcome: Outcome::Fail("the check itself panicked".into()),
            });
            report.results.push(result);
        }
    });
    Ok(report)
}

/// Noise, the peer's HELLO (read before the kit sends its own: neither side waits, §7.2),
/// then the kit's HELLO and HELLO_ACK and the peer's. The peer's HELLO and the network.
fn first_link(
    conn: &mut Conn,
    me: &Me,
    network: Option<NetworkId>,
    wait: Duration,
) -> Result<(Hello, NetworkId), (Section, String)> {
    conn.finish_noise(wait).map_err(|e| {
        let hint = if e.contains("closed") {
            " (a private network? give its --secret)"
        } else {
            ""
        };
        (Section::Noise, format!("{e}{hint}"))
    })?;
    let peer = hello::read_hello(conn, wait).map_err(|e| (Section::Handshake, e))?;
    let network = network.unwrap_or(peer.network);
    if conn.peer_identity() != Some(peer.public_key) {
        return Err((
            Section::Noise,
            "its HELLO's key is not the key its Noise handshake bound (§21.2)".into(),
        ));
    }
    check_hello(conn, &peer, network).map_err(|e| (Section::Handshake, e))?;
    let opts = LinkOpts::link(peer.capabilities & CAP_BROADCASTS_UNSIGNED != 0);
    conn.send_msg(
        &weft_engine::protocol::Message::Hello(me.hello(network, &opts)),
        false,
    );
    conn.send_msg(
        &weft_engine::protocol::Message::HelloAck(me.ack(network, Role::Dialer, &peer)),
        false,
    );
    let ack = hello::read_ack(conn, wait).map_err(|e| (Section::Handshake, e))?;
    if !me.verifies(network, Role::Dialer, &peer, &ack) {
        return Err((
            Section::Handshake,
            "its HELLO_ACK does not verify over the §7.3 transcript".into(),
        ));
    }
    conn.answer_pings = true;
    conn.expect_alive(wait)
        .map_err(|e| (Section::Liveness, e))?;
    Ok((peer, network))
}
