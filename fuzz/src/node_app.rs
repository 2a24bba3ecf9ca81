//! The node driver's sync-table and Chord traffic: the application's commands
//! (`TableCommand::Set`, `Delete`, `Release`, `ChordCommand`) and peers'
//! TABLE_* and CHORD_* frames built from arbitrary fields.
//!
//! Keys and values come mostly from a small set, so that writes and records collide, and
//! sometimes sit at or past a limit (the node's, or the wire's), so that refusals run. Leases,
//! lifetimes and timestamps range from none to far past any bound, and peers may echo what
//! the node sent (its Chord request numbers and ring positions, its table writes) so that
//! answers reach the paths that wait for them.

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use weft_engine::chord::{ChordCommand, ChordRequest};
use weft_engine::protocol::{
    key_position, ring_id, BucketHash, ChordFetch, ChordFind, ChordFound, ChordHandover,
    ChordMessage, ChordPeer, ChordRecord, ChordState, ChordStore, ChordStored, ChordValue,
    ChordValues, Frame, Hlc, Message, Signature, StoreOp, StoreOutcome, TableDigest, TableEntries,
    TableWant, TableWrite, CHORD_KEY_BYTES_MAX, CHORD_REPLICAS, CHORD_VALUE_BYTES_MAX,
};
use weft_engine::{Command, Duration, Identity, Input, Limits, TableCommand, Timers};

use super::{AddrSel, ConnSel, Driver, Msg, NodeSel, Seq, WALL_CLOCK_MS};

/// A table or Chord step.
#[derive(Debug, Arbitrary)]
pub(super) enum AppOp {
    /// Application: set a table key.
    TableSet {
        key: KeySel,
        value: ValueSel,
        lease: LeaseSel,
    },
    /// Application: delete a table key.
    TableDelete { key: KeySel },
    /// Application: end this node's lease on a table key.
    TableRelease { key: KeySel },
    /// Application: a Chord request (ids collide on purpose).
    Chord { request: u8, op: ChordOp },
    /// Well-formed frames of any family arrived, delivered in two pieces cut at `split % len`
    /// (in one piece if that is 0).
    Frames {
        conn: ConnSel,
        msgs: Vec<AnyMsg>,
        compress: bool,
        split: u16,
    },
}

/// A message of any family with arbitrary fields.
#[derive(Debug, Arbitrary)]
pub(super) enum AnyMsg {
    /// Session, mesh or discovery.
    Mesh(Msg),
    TableWrite(WriteSel),
    /// Bucket hashes under `bits % 10` bits (9 is over the wire's limit).
    TableDigest {
        bits: u8,
        buckets: Vec<(u8, [u8; 8])>,
    },
    /// Wanted buckets, and fingerprints of held writes under `salt`.
    TableWant {
        bits: u8,
        buckets: Vec<u8>,
        salt: u64,
        held: Vec<HeldSel>,
    },
    TableEntries(Vec<WriteSel>),
    Chord(ChordMsg),
}

impl AnyMsg {
    fn frame(&self, compress: bool, ctx: &Ctx<'_>) -> Frame {
        let msg = match self {
            AnyMsg::Mesh(msg) => return msg.frame(compress, ctx.families),
            AnyMsg::TableWrite(w) => Message::TableWrite(w.write(ctx)),
            AnyMsg::TableDigest { bits, buckets } => table_digest(*bits, buckets),
            AnyMsg::TableWant {
                bits,
                buckets,
                salt,
                held,
            } => table_want(ctx, *bits, buckets, *salt, held),
            AnyMsg::TableEntries(writes) => table_entries(ctx, writes),
            AnyMsg::Chord(c) => Message::Chord(c.message(ctx.heard)),
        };
        msg.to_frame(compress)
    }
}

impl Driver {
    /// Runs one table or Chord step (refusals allowed) and checks the node's promises.
    pub(super) fn app_step(&mut self, op: AppOp) {
        let config = self.node.config();
        let limits = &config.limits;
        let command = match op {
            AppOp::TableSet { key, value, lease } => TableCommand::Set {
                key: key.key(limits.table_key_bytes_max),
                value: value.value(limits.table_value_bytes_max),
                lease: lease.lease(&config.timers),
            },
            AppOp::TableDelete { key } => TableCommand::Delete {
                key: key.key(limits.table_key_bytes_max),
            },
            AppOp::TableRelease { key } => TableCommand::Release {
                key: key.key(limits.table_key_bytes_max),
            },
            AppOp::Chord { request, op } => {
                let request = u64::from(request);
                let op = op.request(&self.heard);
                let command = Command::Chord(ChordCommand { request, op });
                if self.input(Input::Command(command)) {
                    *self.chord_open.entry(request).or_default() += 1;
                }
                return self.check();
            }
            AppOp::Frames {
                conn,
                msgs,
                compress,
                split,
            } => {
                let ctx = Ctx {
                    heard: &self.heard,
                    wall_ms: self.node.wall_clock_ms(self.now).unwrap_or(WALL_CLOCK_MS),
                    limits,
                    families: self.peer_families,
                };
                let mut bytes = Vec::new();
                for msg in &msgs {
                    bytes.extend_from_slice(msg.frame(compress, &ctx).bytes());
                }
                let conn = self.conn(&conn);
                return self.receive(conn, bytes, split);
            }
        };
        self.input(Input::Command(Command::Table(command)));
        self.check();
    }
}

/// The latest this many of each thing heard are kept for peers to echo.
const HEARD_MAX: usize = 32;

/// One year, in ms: the step of far-future timestamps.
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

/// What the node sent that a peer may echo: Chord request numbers and ring positions, table
/// writes. The latest [`HEARD_MAX`] of each.
#[derive(Debug, Default)]
pub(super) struct Heard {
    requests: VecDeque<u64>,
    positions: VecDeque<u64>,
    writes: VecDeque<TableWrite>,
}

impl Heard {
    /// Notes what `msg`, sent by the node, carries.
    pub(super) fn observe(&mut self, msg: &Message<'_>) {
        match msg {
            Message::TableWrite(w) => push(&mut self.writes, w.clone()),
            Message::TableEntries(e) => {
                for w in &e.writes {
                    push(&mut self.writes, w.clone());
                }
            }
            Message::Chord(ChordMessage::Find(f)) => {
                push(&mut self.requests, f.request);
                push(&mut self.positions, f.target);
            }
            Message::Chord(ChordMessage::GetState(request)) => push(&mut self.requests, *request),
            Message::Chord(ChordMessage::Store(s)) => {
                push(&mut self.requests, s.request);
                push(&mut self.positions, s.position);
            }
            Message::Chord(ChordMessage::Fetch(f)) => {
                push(&mut self.requests, f.request);
                push(&mut self.positions, f.position);
            }
            _ => {}
        }
    }
}

fn push<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == HEARD_MAX {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// The `i`th latest item, if any.
fn pick<T>(queue: &VecDeque<T>, i: u8) -> Option<&T> {
    match queue.len() {
        0 => None,
        len => queue.get(len - 1 - usize::from(i) % len),
    }
}

/// What building a frame may look at: what the node said, its calendar time and its limits.
struct Ctx<'a> {
    heard: &'a Heard,
    /// The node's wall clock now (Unix ms), or a plausible one if it has none.
    wall_ms: u64,
    limits: &'a Limits,
    /// The HELLO `families` of fuzzed peers.
    families: u32,
}

/// A length at or around `limit`: at it, one over, one under, or far over (past the wire's
/// limit for table keys under the default limits).
fn near(limit: usize, n: u8) -> usize {
    match n % 4 {
        0 => limit,
        1 => limit + 1,
        2 => limit.saturating_sub(1),
        _ => limit * 4 + 1,
    }
}

/// A table or Chord key.
#[derive(Debug, Arbitrary)]
pub(super) enum KeySel {
    /// One of 8 short keys.
    Small(u8),
    Empty,
    Bytes(Vec<u8>),
    /// Around the key limit.
    Limit(u8),
}

impl KeySel {
    pub(super) fn key(&self, limit: usize) -> Vec<u8> {
        match self {
            KeySel::Small(n) => vec![b'k', b'0' + n % 8],
            KeySel::Empty => Vec::new(),
            KeySel::Bytes(bytes) => bytes.clone(),
            KeySel::Limit(n) => vec![b'k'; near(limit, *n)],
        }
    }
}

/// A table or Chord value.
#[derive(Debug, Arbitrary)]
pub(super) enum ValueSel {
    /// One of 9 short values (0 to 2 bytes).
    Small(u8),
    Bytes(Vec<u8>),
    /// Around the value limit.
    Limit(u8),
}

impl ValueSel {
    pub(super) fn value(&self, limit: usize) -> Vec<u8> {
        match self {
            ValueSel::Small(n) => vec![n % 4; usize::from(n / 4 % 3)],
            ValueSel::Bytes(bytes) => bytes.clone(),
            ValueSel::Limit(n) => vec![b'v'; near(limit, *n)],
        }
    }
}

/// The lease of a `TableCommand::Set`.
#[derive(Debug, Arbitrary)]
pub(super) enum LeaseSel {
    None,
    /// This many ms (0 is refused).
    Ms(u16),
    /// `Timers::table_lease_max` exactly.
    Max,
    /// Past `Timers::table_lease_max` by `n + 1` ms.
    OverMax(u16),
    /// The longest `Duration`.
    Huge,
}

impl LeaseSel {
    pub(super) fn lease(&self, timers: &Timers) -> Option<Duration> {
        match self {
            LeaseSel::None => None,
            LeaseSel::Ms(ms) => Some(Duration::from_millis(u64::from(*ms))),
            LeaseSel::Max => Some(timers.table_lease_max),
            LeaseSel::OverMax(ms) => {
                Some(timers.table_lease_max + Duration::from_millis(u64::from(*ms) + 1))
            }
            LeaseSel::Huge => Some(Duration::from_millis(u64::MAX)),
        }
    }
}

/// A Chord value's lifetime.
#[derive(Debug, Arbitrary)]
pub(super) enum LifetimeSel {
    Ms(u16),
    Max,
}

impl LifetimeSel {
    fn ms(sel: &Option<LifetimeSel>) -> Option<u64> {
        sel.as_ref().map(|l| match l {
            LifetimeSel::Ms(ms) => u64::from(*ms),
            LifetimeSel::Max => u64::MAX,
        })
    }
}

/// A ring position.
#[derive(Debug, Arbitrary)]
pub(super) enum TargetSel {
    Any(u64),
    /// A node's position, moved by `d`.
    Node(NodeSel, i8),
    /// A replica position of a key.
    Key(KeySel, u8),
    /// One the node looked up or stored under.
    Heard(u8),
}

impl TargetSel {
    fn position(&self, heard: &Heard) -> u64 {
        match self {
            TargetSel::Any(p) => *p,
            TargetSel::Node(node, d) => {
                ring_id(&node.to_node_id()).wrapping_add_signed((*d).into())
            }
            TargetSel::Key(key, replica) => key_position(
                &key.key(CHORD_KEY_BYTES_MAX),
                replica % CHORD_REPLICAS as u8,
            ),
            TargetSel::Heard(i) => pick(&heard.positions, *i).copied().unwrap_or(0),
        }
    }
}

/// The application's Chord request.
#[derive(Debug, Arbitrary)]
pub(super) enum ChordOp {
    Put {
        key: KeySel,
        value: ValueSel,
        lifetime: Option<LifetimeSel>,
    },
    Get {
        key: KeySel,
    },
    Delete {
        key: KeySel,
        value: Option<ValueSel>,
    },
    Lookup {
        target: TargetSel,
    },
}

impl ChordOp {
    pub(super) fn request(&self, heard: &Heard) -> ChordRequest {
        let key = |k: &KeySel| k.key(CHORD_KEY_BYTES_MAX);
        match self {
            ChordOp::Put {
                key: k,
                value,
                lifetime,
            } => ChordRequest::Put {
                key: key(k),
                value: value.value(CHORD_VALUE_BYTES_MAX),
                lifetime_ms: LifetimeSel::ms(lifetime),
            },
            ChordOp::Get { key: k } => ChordRequest::Get { key: key(k) },
            ChordOp::Delete { key: k, value } => ChordRequest::Delete {
                key: key(k),
                value: value.as_ref().map(|v| v.value(CHORD_VALUE_BYTES_MAX)),
            },
            ChordOp::Lookup { target } => ChordRequest::Lookup {
                target: target.position(heard),
            },
        }
    }
}

/// A table write's timestamp (Unix ms), relative to the node's wall clock.
#[derive(Debug, Arbitrary)]
pub(super) enum TimeSel {
    /// Within about 9 minutes of it, in 16 ms steps.
    Near(i16),
    /// `n + 1` years ahead.
    Future(u8),
    /// Early in 1970.
    Past(u16),
    /// Within 255 ms of `u64::MAX`.
    Max(u8),
    Any(u64),
}

impl TimeSel {
    fn ms(&self, wall_ms: u64) -> u64 {
        match self {
            TimeSel::Near(d) => wall_ms.saturating_add_signed(i64::from(*d) * 16),
            TimeSel::Future(years) => wall_ms.saturating_add((u64::from(*years) + 1) * YEAR_MS),
            TimeSel::Past(ms) => u64::from(*ms),
            TimeSel::Max(n) => u64::MAX - u64::from(*n),
            TimeSel::Any(ms) => *ms,
        }
    }
}

/// The lease end a peer's table write carries.
#[derive(Debug, Arbitrary)]
pub(super) enum WireLease {
    None,
    /// `n + 1` ms after the write.
    After(u16),
    /// Forever.
    Huge,
    /// Not after the write (the wire refuses it).
    NotAfter(u16),
}

/// A peer's table write.
#[derive(Debug, Arbitrary)]
pub(super) enum WriteSel {
    New {
        hlc: TimeSel,
        /// 255 stands for `u32::MAX`.
        logical: u8,
        writer: NodeSel,
        incarnation: Seq,
        key: KeySel,
        /// `None`: a delete.
        value: Option<ValueSel>,
        lease: WireLease,
    },
    /// A write the node sent, again; with another value under the same id if `value`.
    Heard { i: u8, value: Option<ValueSel> },
}

impl WriteSel {
    fn write(&self, ctx: &Ctx<'_>) -> TableWrite {
        let limits = ctx.limits;
        match self {
            WriteSel::New {
                hlc,
                logical,
                writer,
                incarnation,
                key,
                value,
                lease,
            } => {
                let ms = hlc.ms(ctx.wall_ms);
                let value = value
                    .as_ref()
                    .map(|v| v.value(limits.table_value_bytes_max));
                let lease_until_ms = match lease {
                    WireLease::None => None,
                    WireLease::After(d) => Some(ms.saturating_add(u64::from(*d) + 1)),
                    WireLease::Huge => Some(u64::MAX),
                    WireLease::NotAfter(d) => Some(ms.saturating_sub(u64::from(*d))),
                };
                writer.sign_write(TableWrite {
                    hlc: Hlc {
                        ms,
                        logical: if *logical == u8::MAX {
                            u32::MAX
                        } else {
                            u32::from(*logical)
                        },
                    },
                    node: writer.to_node_id(),
                    incarnation: incarnation.value(),
                    key: key.key(limits.table_key_bytes_max),
                    value,
                    lease_until_ms,
                    public_key: Default::default(),
                    signature: Default::default(),
                })
            }
            WriteSel::Heard { i, value } => {
                let mut write = pick(&ctx.heard.writes, *i).cloned().unwrap_or_else(|| {
                    NodeSel::Peer(0).sign_write(TableWrite {
                        hlc: Hlc {
                            ms: ctx.wall_ms,
                            logical: 0,
                        },
                        node: NodeSel::Peer(0).to_node_id(),
                        incarnation: 1,
                        key: b"k0".to_vec(),
                        value: None,
                        lease_until_ms: None,
                        public_key: Default::default(),
                        signature: Default::default(),
                    })
                });
                // Another value under the same id: its signature no longer verifies.
                if let Some(v) = value {
                    write.value = Some(v.value(limits.table_value_bytes_max));
                }
                write
            }
        }
    }
}

/// A fingerprint a peer's TABLE_WANT lists.
#[derive(Debug, Arbitrary)]
pub(super) enum HeldSel {
    /// Of a write the node sent.
    Heard(u8),
    Raw([u8; 8]),
}

/// A ring member a peer names.
#[derive(Debug, Arbitrary)]
pub(super) struct PeerSel {
    node: NodeSel,
    addr: AddrSel,
}

impl PeerSel {
    fn peer(&self) -> ChordPeer {
        ChordPeer {
            node: self.node.to_node_id(),
            addr: self.addr.to_addr(),
        }
    }
}

fn peers(sel: &[PeerSel]) -> Vec<ChordPeer> {
    sel.iter().map(PeerSel::peer).collect()
}

/// A Chord request number.
#[derive(Debug, Arbitrary)]
pub(super) enum RequestSel {
    /// One the node sent.
    Heard(u8),
    /// 0: an unasked CHORD_STATE.
    Zero,
    Any(u64),
}

impl RequestSel {
    fn request(&self, heard: &Heard) -> u64 {
        match self {
            RequestSel::Heard(i) => pick(&heard.requests, *i).copied().unwrap_or(1),
            RequestSel::Zero => 0,
            RequestSel::Any(r) => *r,
        }
    }
}

/// A signed entry (a put, a delete of one value or of every value) with its lifetime: signed
/// for its key by one of two fuzz writers, or carrying a forged signature.
#[derive(Debug, Arbitrary)]
pub(super) struct ChordValueSel {
    value: ValueSel,
    /// 0: put, 1: delete one, else delete all.
    op: u8,
    seq: u8,
    writer: bool,
    forged: bool,
    lifetime: Option<LifetimeSel>,
}

impl ChordValueSel {
    fn value(&self, key: &[u8]) -> ChordValue {
        let bytes = self.value.value(CHORD_VALUE_BYTES_MAX);
        let op = match self.op % 3 {
            0 => StoreOp::Put(bytes),
            1 => StoreOp::Delete(Some(bytes)),
            _ => StoreOp::Delete(None),
        };
        let signer = Identity::from_secret(&[1 + u8::from(self.writer); 32]);
        let writer = signer.public_key();
        let seq = u64::from(self.seq);
        let signature = if self.forged {
            Signature([self.seq; 64])
        } else {
            signer.sign(&ChordValue::signed_bytes(key, &writer, seq, &op))
        };
        ChordValue {
            writer,
            seq,
            op,
            lifetime_ms: LifetimeSel::ms(&self.lifetime),
            signature,
        }
    }
}

fn values(sel: &[ChordValueSel], key: &[u8]) -> Vec<ChordValue> {
    sel.iter().map(|v| v.value(key)).collect()
}

/// A handed-over record.
#[derive(Debug, Arbitrary)]
pub(super) struct RecordSel {
    position: TargetSel,
    key: KeySel,
    values: Vec<ChordValueSel>,
}

/// A Chord message with arbitrary fields.
#[derive(Debug, Arbitrary)]
pub(super) enum ChordMsg {
    Find {
        request: RequestSel,
        target: TargetSel,
    },
    Found {
        request: RequestSel,
        done: bool,
        peers: Vec<PeerSel>,
    },
    GetState(RequestSel),
    State {
        request: RequestSel,
        predecessor: Option<PeerSel>,
        successors: Vec<PeerSel>,
    },
    Notify,
    Store {
        request: RequestSel,
        position: TargetSel,
        key: KeySel,
        value: ChordValueSel,
    },
    Stored {
        request: RequestSel,
        /// Indexes the six outcomes.
        outcome: u8,
    },
    Fetch {
        request: RequestSel,
        position: TargetSel,
        key: KeySel,
    },
    Values {
        request: RequestSel,
        /// The key the entries are signed for.
        key: KeySel,
        values: Vec<ChordValueSel>,
    },
    Handover {
        request: RequestSel,
        records: Vec<RecordSel>,
    },
}

impl ChordMsg {
    fn message(&self, heard: &Heard) -> ChordMessage {
        let key = |k: &KeySel| k.key(CHORD_KEY_BYTES_MAX);
        match self {
            ChordMsg::Find { request, target } => ChordMessage::Find(ChordFind {
                request: request.request(heard),
                target: target.position(heard),
            }),
            ChordMsg::Found {
                request,
                done,
                peers: p,
            } => ChordMessage::Found(ChordFound {
                request: request.request(heard),
                done: *done,
                peers: peers(p),
            }),
            ChordMsg::GetState(request) => ChordMessage::GetState(request.request(heard)),
            ChordMsg::State {
                request,
                predecessor,
                successors,
            } => ChordMessage::State(ChordState {
                request: request.request(heard),
                predecessor: predecessor.as_ref().map(PeerSel::peer),
                successors: peers(successors),
            }),
            ChordMsg::Notify => ChordMessage::Notify,
            ChordMsg::Store {
                request,
                position,
                key: k,
                value,
            } => ChordMessage::Store(ChordStore {
                request: request.request(heard),
                position: position.position(heard),
                value: value.value(&key(k)),
                key: key(k),
            }),
            ChordMsg::Stored { request, outcome } => ChordMessage::Stored(ChordStored {
                request: request.request(heard),
                outcome: StoreOutcome::ALL[usize::from(*outcome) % StoreOutcome::ALL.len()],
            }),
            ChordMsg::Fetch {
                request,
                position,
                key: k,
            } => ChordMessage::Fetch(ChordFetch {
                request: request.request(heard),
                position: position.position(heard),
                key: key(k),
            }),
            ChordMsg::Values {
                request,
                key: k,
                values: v,
            } => ChordMessage::Values(ChordValues {
                request: request.request(heard),
                values: values(v, &key(k)),
            }),
            ChordMsg::Handover { request, records } => ChordMessage::Handover(ChordHandover {
                request: request.request(heard),
                records: records
                    .iter()
                    .map(|r| ChordRecord {
                        position: r.position.position(heard),
                        key: key(&r.key),
                        values: values(&r.values, &key(&r.key)),
                    })
                    .collect(),
            }),
        }
    }
}

/// `bits % 10`, and the buckets ascending, unique and below `2^bits` when `bits` is valid.
fn buckets<T>(bits: u8, mut buckets: Vec<(u16, T)>) -> (u8, Vec<(u16, T)>) {
    let bits = bits % 10;
    if bits <= 8 {
        let mask = (1u16 << bits) - 1;
        for b in &mut buckets {
            b.0 &= mask;
        }
        buckets.sort_by_key(|b| b.0);
        buckets.dedup_by_key(|b| b.0);
    }
    (bits, buckets)
}

/// TABLE_DIGEST: bucket hashes under `bits % 10` bits (9 is over the wire's limit), the
/// buckets put in order and cut to the range.
fn table_digest(bits: u8, sel: &[(u8, [u8; 8])]) -> Message<'static> {
    let (bits, sel) = buckets(bits, sel.iter().map(|&(b, h)| (u16::from(b), h)).collect());
    Message::TableDigest(TableDigest {
        bits,
        buckets: sel
            .into_iter()
            .map(|(bucket, hash)| BucketHash { bucket, hash })
            .collect(),
    })
}

/// TABLE_WANT: buckets as for [`table_digest`], and held fingerprints under `salt`.
fn table_want(
    ctx: &Ctx<'_>,
    bits: u8,
    sel: &[u8],
    salt: u64,
    held: &[HeldSel],
) -> Message<'static> {
    let (bits, sel) = buckets(bits, sel.iter().map(|&b| (u16::from(b), ())).collect());
    let held = held
        .iter()
        .map(|h| match h {
            HeldSel::Heard(i) => {
                pick(&ctx.heard.writes, *i).map_or([0; 8], |w| w.fingerprint(salt))
            }
            HeldSel::Raw(fp) => *fp,
        })
        .collect();
    Message::TableWant(TableWant {
        bits,
        buckets: sel.into_iter().map(|(b, ())| b).collect(),
        salt,
        held,
    })
}

/// TABLE_ENTRIES.
fn table_entries(ctx: &Ctx<'_>, writes: &[WriteSel]) -> Message<'static> {
    Message::TableEntries(TableEntries {
        writes: writes.iter().map(|w| w.write(ctx)).collect(),
    })
}
