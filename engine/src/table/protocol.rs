//! The sync table as a protocol: local writes from commands flooded to every link, received
//! writes judged and relayed, and bucket-digest anti-entropy when a link comes up and every
//! repair period (SPEC.md §19.6, §19.7).

use std::collections::VecDeque;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{Code, Family, Frame, Message, NetworkId, NodeId, TableWrite, HEADER_BYTES};

use std::collections::BTreeMap;

use super::persist::{self, STATE_NAME};
use super::sync::Reply;
use super::{Received, Signer, Table, TableLimits};
use crate::config::Config;
use crate::identity::Identity;
use crate::io::{HostRequest, HostResult};
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
    BULK_FRAME_BYTES_MAX,
};
use crate::session::Peer;
use crate::time::{earliest, Duration, Instant};
use crate::timer::Periodic;

/// What the application asks of the sync table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableCommand {
    /// Set a key, optionally taking a lease on it.
    Set {
        /// The key, 1 to `Limits::table_key_bytes_max` bytes.
        key: Vec<u8>,
        /// The value, at most `Limits::table_value_bytes_max` bytes.
        value: Vec<u8>,
        /// Own the key for this long (at most `Timers::table_lease_max`); `None` takes no
        /// lease and, from the owner, ends one.
        lease: Option<Duration>,
    },
    /// Delete a key (a tombstone; ends the writer's own lease).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// End this node's lease on a key early, keeping its value.
    Release {
        /// The key.
        key: Vec<u8>,
    },
}

/// What the sync table tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableEvent {
    /// A key's visible value changed (set, deleted, or a late write re-decided it).
    Changed {
        /// The key.
        key: Vec<u8>,
        /// The value before (`None`: unset).
        old: Option<Vec<u8>>,
        /// The value now (`None`: deleted).
        new: Option<Vec<u8>>,
        /// The node whose write decides the value now.
        by: NodeId,
    },
    /// One of this node's writes was refused: another node's lease covers it. Either at once
    /// (nothing was sent) or later, when the lease's write arrived.
    Refused {
        /// The key.
        key: Vec<u8>,
        /// The lease's owner.
        owner: NodeId,
        /// When its lease ends, Unix ms.
        until_ms: u64,
    },
    /// This node's local writes up to the `through`th (as `TableMetrics::writes_originated`
    /// counts them) are in the host's store: a restart keeps them (SPEC.md §19.11). Writes
    /// made while a store is under way are committed together by the next one.
    Committed {
        /// The count of local writes the store holds.
        through: u64,
    },
    /// The host could not store this node's local writes up to the `through`th (a host with
    /// no state folder says so): they are held and flooded, but not durable here until a later
    /// store succeeds.
    NotCommitted {
        /// The count of local writes the failed store held.
        through: u64,
        /// The host's one-line reason.
        reason: String,
    },
}

/// Why the sync table refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableRefusal {
    /// A write needs calendar time, and no `Input::WallClock` has come yet.
    #[error("no wall clock yet: table writes need Input::WallClock")]
    NoWallClock,
    /// A key is empty or over `Limits::table_key_bytes_max`.
    #[error("table key of {len} bytes: keys must be 1 to {max} bytes")]
    KeyLength {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is over `Limits::table_value_bytes_max`.
    #[error("table value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The table holds `Limits::table_entries_max` keys (tombstones included).
    #[error("the table is full: {max} keys")]
    Full {
        /// The limit.
        max: usize,
    },
    /// The table's writes would take more than `Limits::table_bytes_max` bytes.
    #[error("the table is full: {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// A lease of zero, over `Timers::table_lease_max`, or on a delete.
    #[error("lease of {ms} ms refused: a set may take a lease of 1 to {max_ms} ms")]
    Lease {
        /// The lease asked for, ms.
        ms: u64,
        /// The limit, ms.
        max_ms: u64,
    },
    /// A release of a lease this node does not hold.
    #[error("this node holds no lease on that key")]
    NotLeaseOwner,
    /// The table's clock cannot stamp the write later than every write held and within
    /// `Timers::table_clock_skew_max` of the wall clock (the wall clock went back, or the
    /// stamp or lease end would pass the largest u64): peers would refuse it.
    #[error("the table's clock is at {latest_ms} ms, too far ahead of the wall clock to write")]
    ClockAhead {
        /// The clock's latest stamp, Unix ms.
        latest_ms: u64,
    },
}

/// The sync table's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableMetrics {
    /// Writes this node originated (sent).
    pub writes_originated: u64,
    /// Writes received (TABLE_WRITE and inside TABLE_ENTRIES), new or not.
    pub writes_received: u64,
    /// Writes received that were held already.
    pub write_duplicates: u64,
    /// Writes refused as older than the reclaim floor or a key's fold point.
    pub writes_too_old: u64,
    /// Writes for new keys dropped past twice `table_entries_max`, or past twice
    /// `table_bytes_max`.
    pub writes_dropped: u64,
    /// Writes refused as stamped more than `table_clock_skew_max` ahead of the wall clock (or
    /// received before the node had one).
    pub writes_too_new: u64,
    /// Writes refused for a lease longer than `table_lease_max`.
    pub writes_lease_too_long: u64,
    /// Writes whose signature did not verify: refused, and their sender disconnected (or,
    /// loaded from the host, dropped).
    pub writes_bad_signature: u64,
    /// Bytes of anti-entropy messages sent (TABLE_DIGEST, TABLE_WANT and TABLE_ENTRIES), as
    /// uncompressed frames.
    pub catchup_bytes: u64,
    /// What a full resend would have cost instead: at every TABLE_DIGEST sent, the bytes of
    /// every key's current write as TABLE_ENTRIES frames.
    pub full_resend_bytes: u64,
    /// Writes taken back from the host's stored table at start.
    pub writes_loaded: u64,
    /// Times the table was handed to the host to store, and stored.
    pub stores: u64,
    /// Loads and stores the host could not carry out, and stored tables that failed their
    /// hash.
    pub state_failures: u64,
    /// TABLE_DIGESTs passed over: a second from the same peer within [`DIGEST_GAP_MIN`].
    pub digests_ignored: u64,
    /// TABLE_WANTs passed over: naming no bucket, or a second from the same peer within
    /// [`DIGEST_GAP_MIN`].
    pub wants_ignored: u64,
}

/// The least time between two TABLE_DIGESTs of one peer that this node answers: each costs a
/// digest of the whole table and up to 65,536 fingerprints, for a message of a few bytes. A
/// peer sends one when a link comes up and one each repair period (10 s).
pub(crate) const DIGEST_GAP_MIN: Duration = Duration::from_secs(1);

/// Peers whose last answered TABLE_DIGEST is remembered, at most; past it those older than
/// [`DIGEST_GAP_MIN`] are forgotten, and if none is, all are.
pub(crate) const DIGEST_PEERS_MAX: usize = 1024;

/// Whether a message from `node` at `now` is answered, by `answered` (when each peer's last
/// answered one came): none answered from it in the last [`DIGEST_GAP_MIN`]. Remembers it if
/// so; at most [`DIGEST_PEERS_MAX`] peers (past it those older than the gap are forgotten,
/// and if none is, all are).
fn once_a_gap(answered: &mut BTreeMap<NodeId, Instant>, now: Instant, node: NodeId) -> bool {
    if answered
        .get(&node)
        .is_some_and(|&at| now < at + DIGEST_GAP_MIN)
    {
        return false;
    }
    if answered.len() >= DIGEST_PEERS_MAX {
        answered.retain(|_, &mut at| now < at + DIGEST_GAP_MIN);
        if answered.len() >= DIGEST_PEERS_MAX {
            answered.clear();
        }
    }
    answered.insert(node, now);
    true
}

/// Tokens of the table's requests to the host.
const LOAD: u64 = 1;
const STORE: u64 = 2;

/// Where the table stands with the host's copy of it.
#[derive(Debug, Default)]
struct Persist {
    /// The stored table was asked for (at start).
    load_sent: bool,
    /// The host answered the load. No store goes before: it would replace the stored table
    /// with less.
    loaded: bool,
    /// The table changed since it was last handed to the host.
    dirty: bool,
    /// The stores under way, oldest first: the count of local writes each holds. At most one
    /// but after shutdown, whose last store goes beside the one under way (the host answers
    /// them in order).
    storing: VecDeque<u64>,
    /// Local writes whose store completed (`Committed`) or failed (`NotCommitted`).
    acknowledged: u64,
    /// Why the table is never stored in this run: the stored blob could not be read (damaged,
    /// or from a newer version). It is never overwritten; local writes are not committed.
    blocked: Option<String>,
}

/// The reply that goes when one more is wanted past [`REPLIES_MAX`]: the oldest want's of a
/// peer not in `linked`, else the oldest want's.
fn reply_to_drop(
    replies: &BTreeMap<NodeId, (u64, Reply)>,
    linked: &std::collections::BTreeSet<NodeId>,
) -> Option<NodeId> {
    replies
        .iter()
        .min_by_key(|(node, (n, _))| (linked.contains(node), *n))
        .map(|(node, _)| *node)
}

/// Replies to TABLE_WANTs being sent at once, at most (each holds its want's up to 65,536
/// fingerprints, 512 KiB).
pub(crate) const REPLIES_MAX: usize = 64;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TableProtocol {
    table: Table,
    repair: Periodic,
    /// When a changed table is next handed to the host.
    persist_timer: Periodic,
    persist: Persist,
    /// Replies to peers' TABLE_WANTs still being sent, a message each time the peer has room,
    /// each with the number of the want it answers; at most [`REPLIES_MAX`].
    replies: BTreeMap<NodeId, (u64, Reply)>,
    /// The last want's number.
    last_want: u64,
    /// When each peer's last answered TABLE_DIGEST came, at most [`DIGEST_PEERS_MAX`].
    digests_answered: BTreeMap<NodeId, Instant>,
    /// When each peer's last answered TABLE_WANT came, likewise.
    wants_answered: BTreeMap<NodeId, Instant>,
    rng: ChaCha8Rng,
    metrics: TableMetrics,
    outputs: VecDeque<ProtocolOutput<TableEvent>>,
}

impl TableProtocol {
    pub(crate) fn new(config: &Config, seed: [u8; 32]) -> TableProtocol {
        let limits = &config.limits;
        let timers = &config.timers;
        let signer = Signer::new(
            Identity::from_secret(&config.secret_key),
            NetworkId::from_name(&config.network),
        );
        let table = Table::new(
            signer,
            config.incarnation,
            TableLimits {
                key_bytes_max: limits.table_key_bytes_max,
                value_bytes_max: limits.table_value_bytes_max,
                entries_max: limits.table_entries_max,
                key_writes_max: limits.table_key_writes_max,
                bytes_max: limits.table_bytes_max,
                lease_max: timers.table_lease_max,
                reclaim_horizon: timers.table_reclaim_horizon,
                clock_skew_max: timers.table_clock_skew_max,
            },
        );
        TableProtocol {
            table,
            repair: Periodic::new(timers.repair_interval),
            persist_timer: Periodic::new(timers.table_persist_interval),
            persist: Persist::default(),
            replies: BTreeMap::new(),
            last_want: 0,
            digests_answered: BTreeMap::new(),
            wants_answered: BTreeMap::new(),
            rng: ChaCha8Rng::from_seed(seed),
            metrics: TableMetrics::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The table, as this node holds it now.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    pub(crate) fn metrics(&self) -> &TableMetrics {
        &self.metrics
    }

    /// Hands the whole table to the host to store, if it changed, the stored table was loaded
    /// and no store is under way.
    fn store(&mut self) {
        if let Some(reason) = &self.persist.blocked {
            let through = self.metrics.writes_originated;
            if through > self.persist.acknowledged {
                self.persist.acknowledged = through;
                let reason = reason.clone();
                let event = TableEvent::NotCommitted { through, reason };
                self.outputs.push_back(ProtocolOutput::Event(event));
            }
            return;
        }
        if !self.persist.storing.is_empty() {
            return;
        }
        self.store_beside();
    }

    /// Hands a changed table to the host, even with a store under way.
    fn store_beside(&mut self) {
        if !self.persist.dirty || !self.persist.loaded || self.persist.blocked.is_some() {
            return;
        }
        self.persist.dirty = false;
        self.persist
            .storing
            .push_back(self.metrics.writes_originated);
        self.outputs.push_back(ProtocolOutput::Request {
            token: STORE,
            request: HostRequest::StoreState {
                name: STATE_NAME.into(),
                bytes: persist::encode(&self.table),
            },
        });
    }

    /// Moves the table's events to the outputs; the table changed.
    fn drain_events(&mut self) {
        self.persist.dirty = true;
        while let Some(e) = self.table.poll_event() {
            self.outputs.push_back(ProtocolOutput::Event(e));
        }
    }

    /// Floods a local write the table accepted (or reports the refusal it queued).
    fn originate(
        &mut self,
        write: Result<Option<TableWrite>, TableRefusal>,
    ) -> Result<(), TableRefusal> {
        let write = write?;
        self.drain_events();
        if let Some(w) = write {
            self.metrics.writes_originated += 1;
            self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Links { except: None },
                message: Outgoing::message(&Message::TableWrite(w)),
                class: Class::Control,
            });
            // A local write is acknowledged only once stored: store now, or (group commit)
            // right after the store under way.
            self.store();
        }
        Ok(())
    }

    /// The store under way completed (`Ok`) or failed: reports the local writes it held, and
    /// starts the next store at once if local writes wait for one.
    fn stored(&mut self, result: Result<(), String>) {
        let through = self.persist.storing.pop_front().unwrap_or(0);
        let report = through > self.persist.acknowledged;
        if report {
            self.persist.acknowledged = through;
        }
        match result {
            Ok(()) => {
                self.metrics.stores += 1;
                if report {
                    let event = TableEvent::Committed { through };
                    self.outputs.push_back(ProtocolOutput::Event(event));
                }
                if self.metrics.writes_originated > self.persist.acknowledged {
                    self.store();
                }
            }
            Err(reason) => {
                // Tried again at the persist timer, not at once: a host that cannot store
                // (no state folder) is not asked in a loop.
                self.persist.dirty = true;
                self.metrics.state_failures += 1;
                if report {
                    let event = TableEvent::NotCommitted { through, reason };
                    self.outputs.push_back(ProtocolOutput::Event(event));
                }
            }
        }
    }

    /// Takes back the stored table: the clock resumes from its stored stamp, and every write
    /// is checked as received but for the wall clock's skew (each passed it when it first
    /// arrived), its signature verified.
    fn restore(&mut self, blob: &[u8]) {
        let Some(stored) = persist::decode(blob) else {
            self.metrics.state_failures += 1;
            self.persist.blocked = Some(format!(
                "the stored table ({} bytes) is damaged or from a newer version; it is kept \
                 as it is and nothing is stored over it",
                blob.len()
            ));
            return;
        };
        let held_before = !self.table.is_empty();
        self.table.restore_clock(stored.clock);
        // Not checked against the wall clock for skew: each was when it first came, and a
        // clock set back at the restart would drop committed writes from the store.
        for write in stored.writes {
            let refused = self.table.admit(&write, None);
            if refused.is_none() && !self.table.signer().verify(&write) {
                self.metrics.writes_bad_signature += 1;
                continue;
            }
            match self.table.receive(write, None) {
                Received::New => self.metrics.writes_loaded += 1,
                refused => self.count_refused(refused),
            }
        }
        self.drain_events();
        // What was loaded alone is what is stored already.
        self.persist.dirty = held_before;
    }

    /// Counts a received write the table did not take.
    fn count_refused(&mut self, received: Received) {
        let counter = match received {
            Received::New => return,
            Received::Duplicate => &mut self.metrics.write_duplicates,
            Received::TooOld => &mut self.metrics.writes_too_old,
            Received::TooNew => &mut self.metrics.writes_too_new,
            Received::LeaseTooLong => &mut self.metrics.writes_lease_too_long,
            Received::Dropped => &mut self.metrics.writes_dropped,
        };
        *counter += 1;
    }

    /// A write from `from` (a TABLE_WRITE, with its frame, or one of TABLE_ENTRIES): judged
    /// by this node's policy (refused: counted, dropped, the link kept), then its signature
    /// verified (a bad one is the sender's fault: honest nodes relay only verified writes);
    /// if new, held and relayed to every other link (SPEC.md §19.8).
    fn on_write(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: NodeId,
        frame: Option<Frame>,
        write: TableWrite,
    ) -> Result<(), PeerFault> {
        self.metrics.writes_received += 1;
        // No wall clock yet: no stamp can be judged against it.
        let refused = match cx.wall_clock_ms(now) {
            None => Some(Received::TooNew),
            wall => self.table.admit(&write, wall),
        };
        if let Some(refused) = refused {
            self.count_refused(refused);
            return Ok(());
        }
        if !self.table.signer().verify(&write) {
            self.metrics.writes_bad_signature += 1;
            return Err(PeerFault::BadSignature);
        }
        // A plain frame may be needed (no frame, or a compressed one for a peer without lz4):
        // encode the payload before the table takes the write.
        let message = match frame {
            Some(f) if !f.flags().compressed() => Outgoing::relay(f, Bytes::new()),
            Some(f) => {
                let payload = Message::TableWrite(write.clone()).encode_payload();
                Outgoing::relay(f, Bytes::from(payload))
            }
            None => Outgoing::message(&Message::TableWrite(write.clone())),
        };
        match self.table.receive(write, cx.wall_clock_ms(now)) {
            Received::New => {}
            refused => {
                self.count_refused(refused);
                return Ok(());
            }
        }
        self.drain_events();
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Links { except: Some(from) },
            message,
            class: Class::Relay,
        });
        Ok(())
    }

    /// Sends an anti-entropy message and counts its bytes as catch-up.
    fn send_catchup(&mut self, to: NodeId, msg: &Message<'_>, class: Class) {
        let message = Outgoing::message(msg);
        self.metrics.catchup_bytes += (HEADER_BYTES + message.payload.len()) as u64;
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Peer(to),
            message,
            class,
        });
    }

    /// The next message of the reply to `to`'s want, if `to` has room for it: bulk frames, one
    /// at a time (a single write too long for one goes as a relay-class frame).
    fn continue_reply(&mut self, cx: &Context<'_>, to: NodeId) {
        while cx.has_room(&to, Family::Table) {
            let Some((_, reply)) = self.replies.get_mut(&to) else {
                return;
            };
            let Some(entries) = self.table.next_entries(reply) else {
                self.replies.remove(&to);
                return;
            };
            let message = Outgoing::message(&Message::TableEntries(entries));
            let len = HEADER_BYTES + message.payload.len();
            self.metrics.catchup_bytes += len as u64;
            let class = if len <= BULK_FRAME_BYTES_MAX {
                Class::Bulk
            } else {
                Class::Relay
            };
            self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Peer(to),
                message,
                class,
            });
            if class == Class::Bulk {
                // The next goes when the peer has room again (`LinkNotice::Room`).
                return;
            }
        }
    }

    /// Sends the table's bucket digest to `to`, if the table holds anything.
    fn send_digest(&mut self, to: NodeId) {
        if self.table.is_empty() {
            return;
        }
        let digest = self.table.digest();
        self.send_catchup(to, &Message::TableDigest(digest), Class::Control);
        self.metrics.full_resend_bytes += self.table.full_resend_bytes();
    }
}

impl Protocol for TableProtocol {
    type Event = TableEvent;
    type Command = TableCommand;
    type Refusal = TableRefusal;

    const FAMILY: Family = Family::Table;

    fn owns(code: Code) -> bool {
        code.family() == Some(Family::Table)
    }

    fn handle_link(&mut self, _now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>) {
        match notice {
            LinkNotice::Up { peer, .. } => {
                // A new link, one that replaces another included, is answered afresh: the
                // answers on the link it replaced (a want, the entries) may have died with
                // it, and a digest the peer sends at once on the new one was ignored as
                // within `DIGEST_GAP_MIN` of the last (one node went without a write until
                // the other's repair timer picked it, two minutes in a swept seed).
                self.digests_answered.remove(&peer.node);
                self.wants_answered.remove(&peer.node);
                self.send_digest(peer.node);
            }
            LinkNotice::Down { node, .. } => {
                self.replies.remove(&node);
                self.digests_answered.remove(&node);
                self.wants_answered.remove(&node);
            }
            LinkNotice::Room { node } => self.continue_reply(cx, node),
        }
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        let payload = frame.payload()?;
        match Message::decode(frame.code(), &payload)? {
            Message::TableWrite(w) => self.on_write(now, cx, from.node, Some(frame), w)?,
            Message::TableDigest(d) => {
                if !once_a_gap(&mut self.digests_answered, now, from.node) {
                    self.metrics.digests_ignored += 1;
                    return Ok(());
                }
                let salt = self.rng.next_u64();
                if let Some(want) = self.table.want(&d, salt) {
                    self.send_catchup(from.node, &Message::TableWant(want), Class::Control);
                }
            }
            Message::TableWant(w) => {
                // Each costs a walk of the table; an honest peer sends one per digest of
                // ours, and never one naming no bucket (which would walk it all, send
                // nothing, and leave room for the next).
                if w.buckets.is_empty() || !once_a_gap(&mut self.wants_answered, now, from.node) {
                    self.metrics.wants_ignored += 1;
                    return Ok(());
                }
                // A newer want replaces a reply still being sent. A reply to a dedicated
                // connection's peer hears no link go down: past REPLIES_MAX the oldest want's
                // goes (its peer wants again at its next repair).
                // A linked peer's reply goes last: peers on dedicated connections (which any
                // node can open under fresh keys) cannot push out the links' catch-up.
                if self.replies.len() >= REPLIES_MAX && !self.replies.contains_key(&from.node) {
                    let linked: std::collections::BTreeSet<NodeId> =
                        cx.links().map(|p| p.node).collect();
                    if let Some(node) = reply_to_drop(&self.replies, &linked) {
                        self.replies.remove(&node);
                    }
                }
                self.last_want += 1;
                self.replies
                    .insert(from.node, (self.last_want, Reply::new(w)));
                self.continue_reply(cx, from.node);
            }
            Message::TableEntries(e) => {
                for w in e.writes {
                    self.on_write(now, cx, from.node, None, w)?;
                }
            }
            _ => return Err(PeerFault::Unexpected("not a table message")),
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: TableCommand,
    ) -> Result<(), TableRefusal> {
        let wall_ms = cx.wall_clock_ms(now);
        let write = match command {
            TableCommand::Set { key, value, lease } => {
                self.table.write(wall_ms, key, Some(value), lease)
            }
            TableCommand::Delete { key } => self.table.write(wall_ms, key, None, None),
            TableCommand::Release { key } => self.table.release(wall_ms, key),
        };
        self.originate(write)
    }

    /// At the start, asks the host for the stored table. The persist timer hands a changed
    /// table to the host. The repair timer raises the reclaim floor, then sends a digest to
    /// one random link.
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        if !self.persist.load_sent {
            self.persist.load_sent = true;
            self.outputs.push_back(ProtocolOutput::Request {
                token: LOAD,
                request: HostRequest::LoadState {
                    name: STATE_NAME.into(),
                },
            });
        }
        if self.persist_timer.fire(now) {
            self.store();
        }
        if !self.repair.fire(now) {
            return;
        }
        if let Some(wall_ms) = cx.wall_clock_ms(now) {
            self.table.expire(wall_ms);
        }
        let count = cx.link_count();
        if self.table.is_empty() || count == 0 {
            return;
        }
        let pick = (self.rng.next_u64() % count as u64) as usize;
        if let Some(peer) = cx.links().nth(pick) {
            self.send_digest(peer.node);
        }
    }

    fn handle_completed(
        &mut self,
        _now: Instant,
        _cx: &Context<'_>,
        token: u64,
        result: HostResult,
    ) {
        match (token, result) {
            (LOAD, result) => {
                self.persist.loaded = true;
                match result {
                    HostResult::Loaded(Some(blob)) => self.restore(&blob),
                    HostResult::Loaded(None) => {}
                    other => {
                        self.metrics.state_failures += 1;
                        let why = match other {
                            HostResult::Failed(why) => why,
                            other => format!("unexpected answer {other:?}"),
                        };
                        self.persist.blocked =
                            Some(format!("the stored table was not read: {why}"));
                    }
                }
                // Local writes made before the load answered are stored now.
                if self.metrics.writes_originated > self.persist.acknowledged {
                    self.persist.dirty = true;
                    self.store();
                }
            }
            (STORE, HostResult::Stored) => self.stored(Ok(())),
            (STORE, HostResult::Failed(why)) => self.stored(Err(why)),
            (STORE, other) => self.stored(Err(format!("unexpected answer {other:?}"))),
            _ => self.metrics.state_failures += 1,
        }
    }

    /// Last words: a changed table goes to the host, even with a store under way (the host
    /// carries requests out in order; each answer reports the writes its own store held).
    fn handle_shutdown(&mut self, _now: Instant, _cx: &Context<'_>) {
        if self.persist.storing.is_empty() {
            self.store();
        } else {
            self.store_beside();
        }
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<TableEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.repair.deadline(), self.persist_timer.deadline())
    }

    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        let limits = &config.limits;
        // Deletes of live keys are exempt from the byte bound, one per key at most.
        let deletes = self
            .table
            .entries_len()
            .saturating_mul(limits.table_key_bytes_max + super::DELETE_BYTES_OVER_KEY_MAX);
        if self.table.entries_len() > limits.table_entries_max.saturating_mul(2)
            || self.table.bytes() > limits.table_bytes_max.saturating_mul(2) + deletes
        {
            return Err("the table is over its bound".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    /// A reply to a peer that never has room (a dedicated connection's, which hears no link
    /// go down) is held until replaced: at most `REPLIES_MAX` are, the oldest want's going
    /// first.
    #[test]
    fn at_most_replies_max_replies_are_held() {
        let config = Config::from_seed("test-net", 1);
        let session = Session::new(&config, 0, [0; 32]);
        let mut table = TableProtocol::new(&config, [2; 32]);
        let cx = Context { session: &session };
        let want = Message::TableWant(weft_protocol::TableWant {
            bits: 0,
            buckets: vec![0],
            salt: 1,
            held: vec![[7; 8]; 1000],
        });
        let frame = Frame::build(want.code(), &want.encode_payload(), false);
        let peer = |i: u32| Peer {
            node: NodeId(blake3::hash(&i.to_le_bytes()).into()),
            incarnation: 1,
            listen_addr: None,
            families: 0,
            dialer_nonce: [0; 32],
            public_key: Default::default(),
        };
        for i in 0..REPLIES_MAX as u32 + 10 {
            let f = frame.clone();
            assert_eq!(
                table.handle_message(Instant::ZERO, &cx, &peer(i), f),
                Ok(())
            );
        }
        assert_eq!(table.replies.len(), REPLIES_MAX);
        assert!(
            !table.replies.contains_key(&peer(0).node),
            "the oldest went"
        );
        assert!(table
            .replies
            .contains_key(&peer(REPLIES_MAX as u32 + 9).node));
    }

    /// Past `REPLIES_MAX`, the oldest want's reply of a peer that is not linked goes first,
    /// and a linked peer's only when every held reply is a linked peer's.
    #[test]
    fn a_linked_peers_reply_goes_last() {
        let want = || {
            Reply::new(weft_protocol::TableWant {
                bits: 0,
                buckets: vec![0],
                salt: 1,
                held: Vec::new(),
            })
        };
        let node = |i: u8| NodeId([i; 32]);
        // Node 1's want is the oldest, and node 1 is linked.
        let replies: BTreeMap<NodeId, (u64, Reply)> = [
            (node(1), (1, want())),
            (node(2), (3, want())),
            (node(3), (2, want())),
        ]
        .into_iter()
        .collect();
        let linked = std::collections::BTreeSet::from([node(1)]);
        assert_eq!(reply_to_drop(&replies, &linked), Some(node(3)));
        let all = std::collections::BTreeSet::from([node(1), node(2), node(3)]);
        assert_eq!(reply_to_drop(&replies, &all), Some(node(1)));
        assert_eq!(reply_to_drop(&replies, &Default::default()), Some(node(1)));
    }

    /// A linked peer `i` (its id `i` repeated).
    fn peer(i: u8) -> Peer {
        Peer {
            node: NodeId([i; 32]),
            incarnation: 1,
            listen_addr: None,
            families: 0,
            dialer_nonce: [0; 32],
            public_key: Default::default(),
        }
    }

    /// `ms` milliseconds after the start.
    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// One peer's TABLE_DIGESTs are answered at most every `DIGEST_GAP_MIN`; another peer's
    /// are not held up by it.
    #[test]
    fn a_peers_digests_are_answered_at_most_every_digest_gap_min() {
        let config = Config::from_seed("test-net", 1);
        let session = Session::new(&config, 0, [0; 32]);
        let mut table = TableProtocol::new(&config, [2; 32]);
        let cx = Context { session: &session };
        let digest = Message::TableDigest(weft_protocol::TableDigest {
            bits: 0,
            buckets: vec![weft_protocol::BucketHash {
                bucket: 0,
                hash: [1; 8],
            }],
        });
        let frame = Frame::build(digest.code(), &digest.encode_payload(), false);
        let steps = [
            (0, 1, 0),
            (500, 1, 1),
            (600, 2, 1),
            (999, 1, 2),
            (1000, 1, 2),
        ];
        for (ms, who, ignored) in steps {
            let f = frame.clone();
            assert_eq!(table.handle_message(at(ms), &cx, &peer(who), f), Ok(()));
            assert_eq!(
                table.metrics.digests_ignored, ignored,
                "at {ms} ms from {who}"
            );
        }
    }

    /// A TABLE_WANT naming no bucket is passed over (it would walk the table and send
    /// nothing), and one peer's wants are answered at most every `DIGEST_GAP_MIN`.
    #[test]
    fn a_peers_wants_are_answered_at_most_every_digest_gap_min() {
        let config = Config::from_seed("test-net", 1);
        let session = Session::new(&config, 0, [0; 32]);
        let mut table = TableProtocol::new(&config, [2; 32]);
        let cx = Context { session: &session };
        let want = |buckets: Vec<u16>| {
            let m = Message::TableWant(weft_protocol::TableWant {
                bits: 8,
                buckets,
                salt: 0,
                held: Vec::new(),
            });
            Frame::build(m.code(), &m.encode_payload(), false)
        };
        let steps = [
            (0, vec![], 1),
            (0, vec![3], 1),
            (500, vec![3], 2),
            (1000, vec![3], 2),
        ];
        for (ms, buckets, ignored) in steps {
            assert_eq!(
                table.handle_message(at(ms), &cx, &peer(1), want(buckets)),
                Ok(())
            );
            assert_eq!(table.metrics.wants_ignored, ignored, "at {ms} ms");
        }
    }
}
