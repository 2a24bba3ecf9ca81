//! Issue 14, points 3 and 8 (cascades): the sync table's writes from peers are authenticated
//! and bounded, refused writes never cost a link, and discovery cascades are rate-limited per
//! peer. One real node against hand-driven fake peers.

mod common;

use bytes::Bytes;
use common::{closed, drain, frames_to, node_with, Fake, T0};
use weft_engine::protocol::{
    CascadeId, Code, Hlc, ICantSee, Message, NodeId, PublicKey, TableWrite,
};
use weft_engine::{
    CloseReason, Command, ConnId, Duration, Identity, Input, Instant, Node, Output, TableCommand,
};

const WALL_MS: u64 = 1_800_000_000_000;

/// A write by `writer`, signed by it.
fn write(writer: &Fake, ms: u64, key: &str, value: Option<&str>, lease: Option<u64>) -> TableWrite {
    writer.sign_write(unsigned(writer.id(), ms, key, value, lease))
}

fn unsigned(
    node: NodeId,
    ms: u64,
    key: &str,
    value: Option<&str>,
    lease: Option<u64>,
) -> TableWrite {
    TableWrite {
        hlc: Hlc { ms, logical: 0 },
        node,
        incarnation: 1,
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
        lease_until_ms: lease,
        public_key: Default::default(),
        signature: Default::default(),
    }
}

/// A write naming `victim` as its writer, made by `forger`: it carries the victim's public
/// key (so it is well-formed) and the forger's signature.
fn forged(
    forger: &Fake,
    victim: PublicKey,
    ms: u64,
    key: &str,
    value: Option<&str>,
    lease: Option<u64>,
) -> TableWrite {
    let mut w = forger.sign_write(unsigned(
        NodeId::from_public_key(&victim),
        ms,
        key,
        value,
        lease,
    ));
    w.public_key = victim;
    w
}

fn frame(msg: Message<'_>) -> Bytes {
    msg.to_frame(false).into_bytes()
}

/// A node with a wall clock and three fake peers linked to it.
fn linked() -> (Node, Fake, Fake, Fake) {
    let mut node = node_with(|_| {});
    node.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let fakes = (
        Fake::new(7, ConnId::inbound(1)),
        Fake::new(8, ConnId::inbound(2)),
        Fake::new(9, ConnId::inbound(3)),
    );
    fakes.0.join(&mut node, T0);
    fakes.1.join(&mut node, T0);
    fakes.2.join(&mut node, T0);
    drain(&mut node);
    (node, fakes.0, fakes.1, fakes.2)
}

fn set(node: &mut Node, at: Instant, key: &str, value: &str, lease: Option<Duration>) {
    node.handle_input(
        at,
        Input::Command(Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
        })),
    )
    .expect("the set is taken");
}

/// The TABLE_WRITEs the node sent on `conn`, each decoded as a weft peer would: `Err` where a
/// peer would close the link as malformed.
fn writes_sent(outputs: &[Output], conn: ConnId) -> Vec<Result<TableWrite, String>> {
    frames_to(outputs, conn)
        .into_iter()
        .filter(|f| f.code() == Code::TABLE_WRITE)
        .map(|f| {
            let payload = f.payload().expect("inflates").to_vec();
            match Message::decode(Code::TABLE_WRITE, &payload) {
                Ok(Message::TableWrite(w)) => Ok(w),
                other => Err(format!("{other:?}")),
            }
        })
        .collect()
}

#[test]
fn a_write_naming_another_writer_is_refused_and_its_sender_disconnected() {
    let (mut node, a, b, c) = linked();
    // b leases "k" for a minute.
    let lease = write(&b, WALL_MS + 1, "k", Some("b's"), Some(WALL_MS + 60_000));
    b.send(&mut node, T0, frame(Message::TableWrite(lease)));
    drain(&mut node);
    assert_eq!(node.table().lease(b"k"), Some((b.id(), WALL_MS + 60_000)));
    // c sends a write in b's name: a release without a lease, and a new value.
    let fake = forged(
        &c,
        b.identity.public_key(),
        WALL_MS + 2,
        "k",
        Some("c's"),
        None,
    );
    c.send(&mut node, T0, frame(Message::TableWrite(fake)));
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"k"), Some(&b"b's"[..]), "b's value stays");
    assert_eq!(node.table().lease(b"k"), Some((b.id(), WALL_MS + 60_000)));
    assert!(frames_to(&out, a.conn).is_empty(), "nothing relayed");
    assert_eq!(closed(&out, c.conn), Some(CloseReason::BadSignature));
    assert_eq!(node.metrics().table.writes_bad_signature, 1);
    assert_eq!(node.metrics().table.writes_bad_signature, 1);
}

#[test]
fn a_write_in_the_nodes_own_name_does_not_end_its_lease() {
    let (mut node, a, _b, c) = linked();
    set(&mut node, T0, "k", "mine", Some(Duration::from_secs(30)));
    drain(&mut node);
    let me = node.node_id();
    let until = node.table().lease(b"k").expect("leased").1;
    let key = Identity::from_secret(&node.config().secret_key).public_key();
    let fake = forged(&c, key, WALL_MS + 5, "k", None, None);
    c.send(&mut node, T0, frame(Message::TableWrite(fake)));
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"k"), Some(&b"mine"[..]));
    assert_eq!(node.table().lease(b"k"), Some((me, until)));
    assert!(frames_to(&out, a.conn).is_empty(), "nothing relayed");
    assert_eq!(closed(&out, c.conn), Some(CloseReason::BadSignature));
}

#[test]
fn a_lease_past_the_cap_is_refused_counted_and_the_link_kept() {
    let (mut node, a, b, _c) = linked();
    let endless = write(&a, WALL_MS + 1, "k", Some("a's"), Some(u64::MAX - 1));
    a.send(&mut node, T0, frame(Message::TableWrite(endless)));
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"k"), None, "not held");
    assert_eq!(node.table().lease(b"k"), None);
    assert!(frames_to(&out, b.conn).is_empty(), "not relayed");
    assert_eq!(
        closed(&out, a.conn),
        None,
        "a well-formed write keeps its link"
    );
    assert_eq!(node.metrics().table.writes_lease_too_long, 1);
    assert_eq!(node.metrics().table.writes_lease_too_long, 1);
    // The key stays free: the node's own set goes through.
    set(&mut node, T0, "k", "mine", None);
    assert_eq!(node.table().get(b"k"), Some(&b"mine"[..]));
    // A lease of exactly table_lease_max is taken.
    let max = node.config().timers.table_lease_max.as_millis();
    let longest = write(&a, WALL_MS + 10, "k", Some("a's"), Some(WALL_MS + 10 + max));
    a.send(&mut node, T0, frame(Message::TableWrite(longest)));
    drain(&mut node);
    assert_eq!(node.table().lease(b"k"), Some((a.id(), WALL_MS + 10 + max)));
}

#[test]
fn a_write_from_the_far_future_neither_poisons_the_clock_nor_wins() {
    let (mut node, a, b, _c) = linked();
    let skew = node.config().timers.table_clock_skew_max.as_millis();
    let mut poison = write(&a, u64::MAX, "k", Some("poison"), None);
    poison.hlc.logical = u32::MAX;
    a.send(&mut node, T0, frame(Message::TableWrite(poison)));
    // Just past the skew is refused too; just within it is taken.
    let early = write(&a, WALL_MS + skew + 1, "early", Some("x"), None);
    a.send(&mut node, T0, frame(Message::TableWrite(early)));
    let within = write(&a, WALL_MS + skew, "within", Some("y"), None);
    a.send(&mut node, T0, frame(Message::TableWrite(within)));
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"k"), None, "the poison is not held");
    assert_eq!(node.table().get(b"early"), None);
    assert_eq!(node.table().get(b"within"), Some(&b"y"[..]));
    assert_eq!(node.metrics().table.writes_too_new, 2);
    assert_eq!(node.metrics().table.writes_too_new, 2);
    assert_eq!(
        closed(&out, a.conn),
        None,
        "refused by policy: the link stays"
    );
    assert_eq!(
        writes_sent(&out, b.conn).len(),
        1,
        "only the write within is relayed"
    );
    // The node's own leased set wins, stamped by its clock (the write within the skew
    // raised it), and its lease ends a lease's length after its stamp.
    let later = T0 + Duration::from_millis(1);
    set(&mut node, later, "k", "mine", Some(Duration::from_secs(10)));
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"k"), Some(&b"mine"[..]));
    let sent = writes_sent(&out, b.conn);
    let [Ok(w)] = &sent[..] else {
        panic!("one well-formed write to b: {sent:?}")
    };
    assert!(w.hlc.ms <= WALL_MS + skew, "{:?}", w.hlc);
    assert_eq!(w.lease_until_ms, Some(w.hlc.ms + 10_000));
    assert_eq!(closed(&out, b.conn), None);
}

/// A flood of cascades through `a`, each started by `origin(a)`, at 10,000 a second for two
/// seconds: what the node relayed to `b`, and its outputs.
fn cascade_flood(origin: impl Fn(&Fake) -> NodeId) -> (Node, Fake, Fake, usize, Vec<Output>) {
    let mut node = node_with(|c| c.discovery = true);
    node.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (a, b) = (
        Fake::new(7, ConnId::inbound(1)),
        Fake::new(8, ConnId::inbound(2)),
    );
    a.join(&mut node, T0);
    b.join(&mut node, T0);
    drain(&mut node);
    let flood = 20_000u64;
    let mut relayed = 0;
    let mut out = Vec::new();
    for seq in 1..=flood {
        let cascade = ICantSee {
            cascade: CascadeId {
                origin: origin(&a),
                seq,
            },
            hops_left: 2,
            lost: NodeId([0xbb; 32]),
        };
        // The node may close a's connection: later frames are then refused as misuse.
        let _ = node.handle_input(
            Instant(T0.0 + seq * 100_000),
            Input::Received {
                conn: a.conn,
                bytes: frame(Message::ICantSee(cascade)),
            },
        );
        let o = drain(&mut node);
        relayed += frames_to(&o, b.conn)
            .iter()
            .filter(|f| f.code() == Code::ICANTSEE)
            .count();
        out.extend(o);
    }
    (node, a, b, relayed, out)
}

#[test]
fn a_cascade_flood_is_cut_to_the_rate_and_its_sender_disconnected() {
    let (node, a, b, relayed, out) = cascade_flood(|a| a.id());
    let rate = node.config().limits.cascade_rate;
    // Two seconds of flood: the burst and two seconds' worth at most.
    let allowed = (rate.burst + 2 * rate.per_second) as usize;
    assert!(relayed <= allowed, "{relayed} relayed of 20000");
    assert!(
        relayed >= rate.burst as usize,
        "{relayed} relayed: the burst goes through"
    );
    assert_eq!(closed(&out, a.conn), Some(CloseReason::RateLimited));
    assert_eq!(closed(&out, b.conn), None);
    let m = node.metrics().discovery;
    assert!(m.cascades_dropped > 0, "{m:?}");
    assert_eq!(m.peers_rate_limited, 1);
}

/// A peer that only relays others' cascades (an honest relay fed by several links may pass on
/// more than one link may bring) is cut to the rate the same way, and never disconnected for
/// it: one flooding originator would otherwise cut honest links all around it.
#[test]
fn a_relayed_cascade_flood_is_cut_to_the_rate_and_the_relay_kept() {
    let (node, a, b, relayed, out) = cascade_flood(|_| NodeId([0xaa; 32]));
    let rate = node.config().limits.cascade_rate;
    let allowed = (rate.burst + 2 * rate.per_second) as usize;
    assert!(relayed <= allowed, "{relayed} relayed of 20000");
    assert!(relayed >= rate.burst as usize, "{relayed} relayed");
    assert_eq!(closed(&out, a.conn), None);
    assert_eq!(closed(&out, b.conn), None);
    let m = node.metrics().discovery;
    assert!(m.cascades_dropped > 0, "{m:?}");
    assert_eq!(m.peers_rate_limited, 0);
}

/// Two real nodes over an in-memory wire (x dialed y), and the closes either asked for.
struct Pair {
    x: Node,
    y: Node,
    x_conn: ConnId,
    y_conn: ConnId,
    closes: Vec<CloseReason>,
}

impl Pair {
    /// x and y linked, x's wall clock `x_ahead_ms` ahead of y's.
    fn new(x_ahead_ms: u64) -> Pair {
        let mut x = node_with(|c| c.listen_addr = Some("x".into()));
        let mut y = Node::new({
            let mut c = weft_engine::Config::from_seed("raw", 2);
            c.discovery = false;
            c.listen_addr = Some("y".into());
            // Plain, as x is for the fake peers that join it.
            c.link_encryption = weft_engine::LinkEncryption::PlaintextSimulationOnly;
            c
        });
        x.handle_input(
            T0,
            Input::WallClock {
                unix_ms: WALL_MS + x_ahead_ms,
            },
        )
        .unwrap();
        y.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
            .unwrap();
        let x_conn = common::dial(&mut x, T0, "y");
        let y_conn = ConnId::inbound(1);
        x.handle_input(T0, Input::Connected { conn: x_conn })
            .unwrap();
        y.handle_input(T0, common::accepted(y_conn)).unwrap();
        let mut pair = Pair {
            x,
            y,
            x_conn,
            y_conn,
            closes: Vec::new(),
        };
        pair.pump(T0);
        assert_eq!(pair.x.metrics().session.handshakes_completed, 1);
        pair
    }

    /// Carries bytes both ways until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for (from_x, outputs) in [(true, drain(&mut self.x)), (false, drain(&mut self.y))] {
                for o in outputs {
                    match o {
                        Output::Transmit { bytes, .. } => {
                            moved = true;
                            let (to, conn) = if from_x {
                                (&mut self.y, self.y_conn)
                            } else {
                                (&mut self.x, self.x_conn)
                            };
                            let _ = to.handle_input(now, Input::Received { conn, bytes });
                            let (back, own) = if from_x {
                                (&mut self.x, self.x_conn)
                            } else {
                                (&mut self.y, self.y_conn)
                            };
                            let _ = back.handle_input(now, Input::Writable { conn: own });
                        }
                        Output::Close { reason, .. } => self.closes.push(reason),
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs both nodes' timers second by second for `secs` seconds after `from`.
    fn run(&mut self, from: Instant, secs: u64) -> Instant {
        let mut now = from;
        for _ in 0..secs {
            now = Instant(now.0 + 1_000_000_000);
            self.x.handle_timeout(now);
            self.y.handle_timeout(now);
            self.pump(now);
        }
        now
    }
}

#[test]
fn a_refused_write_never_costs_a_link_between_two_real_nodes() {
    // The reproduction: a peer of x stamps a write at the end of time. Today it
    // poisoned x's and y's clocks, and x's next leased write (lease end = stamp) made y
    // drop the link as malformed, again at each write.
    let mut p = Pair::new(0);
    let f = Fake::new(9, ConnId::inbound(9));
    f.join(&mut p.x, T0);
    let poison = write(&f, u64::MAX, "k", Some("poison"), None);
    f.send(&mut p.x, T0, frame(Message::TableWrite(poison)));
    p.pump(T0);
    for i in 0..3 {
        set(
            &mut p.x,
            T0,
            "k",
            &format!("x{i}"),
            Some(Duration::from_secs(10)),
        );
        p.pump(T0);
    }
    assert_eq!(p.closes, vec![], "no link dropped");
    assert_eq!(p.y.table().get(b"k"), Some(&b"x2"[..]));
    assert_eq!(
        p.y.table().lease(b"k").map(|(owner, _)| owner),
        Some(p.x.node_id())
    );

    // Honest clocks five minutes apart: y refuses x's writes as too new and keeps the link;
    // anti-entropy brings them once y's clock is within the skew.
    let mut p = Pair::new(5 * 60_000);
    set(&mut p.x, T0, "later", "v", None);
    p.pump(T0);
    assert_eq!(p.y.table().get(b"later"), None);
    assert_eq!(p.y.metrics().table.writes_too_new, 1);
    let end = p.run(T0, 5 * 60);
    assert_eq!(p.closes, vec![], "no link dropped");
    assert_eq!(p.y.table().get(b"later"), Some(&b"v"[..]), "{end:?}");
}
