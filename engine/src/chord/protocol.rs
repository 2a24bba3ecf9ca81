//! Chord as a protocol the node hosts: carrying [`ChordOutput::Send`] to peers by node id
//! (over the peer's link, else a dedicated connection the session dials), joining the ring
//! through the first chord-running peer a lone node links to, and asking mesh peers who
//! follows it every repair period so rings that formed apart merge (SPEC.md §20.3, §20.4).
//!
//! Requests come from the application ([`Protocol::handle_command`]) and from other
//! protocols of this node ([`ChordProtocol::ask`]: the drops tracker's puts and gets). Each
//! gets a number of this protocol's own for the machine, so the two never collide; its end
//! goes back to whoever asked, with the asker's number: an [`crate::Event::Chord`] for the
//! application, a [`ProtocolOutput::ChordAnswer`] for a protocol.

use std::collections::{BTreeMap, VecDeque};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{ChordPeer, Code, Family, Frame, Message};

use super::persist::STATE_NAME;
use super::{Chord, ChordEvent, ChordOutput, ChordRequest, Commit};
use crate::config::Config;
use crate::io::{HostRequest, HostResult};
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::session::Peer;
use crate::time::{earliest, Duration, Instant};
use crate::timer::Periodic;

/// Mesh peers a node probes through each repair period (SPEC.md §20.3).
pub(crate) const CHORD_PROBES_PER_PERIOD: usize = 4;

/// A Chord put, get, delete or lookup; its end comes as [`crate::Event::Chord`] with
/// `request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordCommand {
    /// The application's id for it, echoed in the event.
    pub request: u64,
    /// What to do.
    pub op: ChordRequest,
}

/// Why Chord refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordRefusal {
    /// This node is no ring member (no `Config::chord`, or no listen address).
    #[error("chord is not enabled on this node")]
    Disabled,
}

/// The least time between two snapshots of the records handed to the host (SPEC.md §20.8).
pub(crate) const SNAPSHOT_GAP_MIN: Duration = Duration::from_millis(200);

/// The rate snapshots are paced to: after a snapshot of `n` bytes the next waits
/// `n / SNAPSHOT_BYTES_PER_S_MAX` s, at least [`SNAPSHOT_GAP_MIN`] and at most
/// [`SNAPSHOT_GAP_MAX`], so peers' small stores do not have the host write a large store
/// over and over.
pub(crate) const SNAPSHOT_BYTES_PER_S_MAX: u64 = 8 * 1024 * 1024;

/// The longest a snapshot waits for its gap: a held CHORD_STORED must reach its asker
/// within its RPC timeout and resend (1 s and 2 sends by default), or a healthy replica is
/// taken for failed.
pub(crate) const SNAPSHOT_GAP_MAX: Duration = Duration::from_secs(1);

/// Tokens of Chord's requests to the host.
const LOAD: u64 = 1;
const STORE: u64 = 2;

/// Where the records stand with the host's copy of them (SPEC.md §20.8).
#[derive(Debug, Default)]
struct Persist {
    /// The stored records were asked for (at start).
    load_sent: bool,
    /// The host answered the load; no store goes before.
    loaded: bool,
    /// A stored snapshot waiting for a wall clock to be taken back (its expiries are Unix ms).
    unrestored: Option<bytes::Bytes>,
    /// The store under way, with the answers it commits.
    storing: Option<Commit>,
    /// The stored records could not be read (a failed load, a damaged blob or one from a newer
    /// version): nothing is stored over them in this run, and answers go out uncommitted.
    blocked: bool,
    /// When the next snapshot may be handed to the host, by the last one's time and size
    /// ([`SNAPSHOT_GAP_MIN`], [`SNAPSHOT_BYTES_PER_S_MAX`]).
    next_at: Instant,
    /// A snapshot would go now but waits for `next_at`: the protocol's deadline.
    waiting: bool,
}

impl Persist {
    /// A snapshot of `bytes` bytes handed to the host at `now`: when the next may go.
    fn handed(&mut self, now: Instant, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        // At most 2^64 / 10^9 ns a byte-second: saturating, as `Duration` is.
        let wait_ns = u128::from(bytes) * 1_000_000_000 / u128::from(SNAPSHOT_BYTES_PER_S_MAX);
        let wait = Duration(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        self.next_at = now + wait.clamp(SNAPSHOT_GAP_MIN, SNAPSHOT_GAP_MAX);
    }
}

/// Who asked for a request under way, and by what number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// The application, with its request id.
    App(u64),
    /// The protocol of this family, with its own number.
    Protocol(Family, u64),
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ChordProtocol {
    /// The machine, when this node is a ring member.
    chord: Option<Box<Chord>>,
    /// Requests under way, by the number the machine knows them by: at most `ops_max` once
    /// the machine's outputs are drained (a request it refuses ends at once).
    asks: BTreeMap<u64, Asker>,
    /// The last number given to a request.
    last_ask: u64,
    /// The machine's `ops_max`.
    ops_max: usize,
    probe: Periodic,
    rng: ChaCha8Rng,
    outputs: VecDeque<ProtocolOutput<ChordEvent>>,
    persist: Persist,
}

impl ChordProtocol {
    pub(crate) fn new(config: &Config, me: weft_protocol::NodeId, seed: [u8; 32]) -> Self {
        let mut chord = match (config.chord.clone(), config.listen_addr.clone()) {
            (Some(chord), Some(addr)) => Some(Box::new(Chord::new(
                ChordPeer { node: me, addr },
                // The node's own key pair (the one `Context::identity` gives).
                crate::identity::Identity::from_secret(&config.secret_key),
                chord,
                config.rng_seed ^ config.incarnation,
            ))),
            _ => None,
        };
        if let Some(c) = chord.as_mut() {
            // A replica answers CHORD_STORED only once the records are in the host's store.
            c.set_durable(true);
        }
        let ops_max = config.chord.as_ref().map_or(0, |c| c.ops_max);
        ChordProtocol {
            chord,
            asks: BTreeMap::new(),
            last_ask: 0,
            ops_max,
            probe: Periodic::new(config.timers.repair_interval),
            rng: ChaCha8Rng::from_seed(seed),
            outputs: VecDeque::new(),
            persist: Persist::default(),
        }
    }

    /// Takes back a stored snapshot once the wall clock is known, then hands a changed store
    /// (or answers waiting for a commit) to the host, unless a store is under way.
    fn persist(&mut self, now: Instant, cx: &Context<'_>) {
        let Some(chord) = self.chord.as_mut() else {
            return;
        };
        self.persist.waiting = false;
        let wall = cx.wall_clock_ms(now).filter(|_| !self.persist.blocked);
        let Some(wall_ms) = wall else {
            // No calendar time yet (no snapshot could say when its entries expire), or no
            // store allowed: answers go out uncommitted rather than wait.
            chord.release_held(now);
            return;
        };
        if let Some(blob) = self.persist.unrestored.take() {
            if chord.restore(now, wall_ms, &blob).is_none() {
                chord.count_state_failure();
                self.persist.blocked = true;
                chord.release_held(now);
                return;
            }
        }
        if !self.persist.loaded || self.persist.storing.is_some() || !chord.needs_store() {
            return;
        }
        if now < self.persist.next_at && !chord.answers_full() {
            self.persist.waiting = true;
            return;
        }
        let (bytes, commit) = chord.begin_store(now, wall_ms);
        self.persist.handed(now, bytes.len());
        self.persist.storing = Some(commit);
        self.outputs.push_back(ProtocolOutput::Request {
            token: STORE,
            request: HostRequest::StoreState {
                name: STATE_NAME.into(),
                bytes,
            },
        });
    }

    /// The machine, when this node is a ring member.
    pub(crate) fn chord(&self) -> Option<&Chord> {
        self.chord.as_deref()
    }

    /// A request from another protocol of this node (the family `from`), numbered `request`
    /// by it: its end comes back as [`ProtocolOutput::ChordAnswer`] to that protocol, never
    /// to the application.
    pub(crate) fn ask(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: Family,
        command: ChordCommand,
    ) -> Result<(), ChordRefusal> {
        self.start_request(now, cx, Asker::Protocol(from, command.request), command.op)
    }

    /// Hands `op` to the machine under a number of this protocol's own, remembering `asker`.
    fn start_request(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        asker: Asker,
        op: ChordRequest,
    ) -> Result<(), ChordRefusal> {
        let chord = self.chord.as_mut().ok_or(ChordRefusal::Disabled)?;
        self.last_ask += 1;
        let number = self.last_ask;
        self.asks.insert(number, asker);
        chord.observe_wall_clock(now, cx.wall_clock_ms(now));
        chord.request_signed_by(now, cx.identity(), number, op);
        self.persist(now, cx);
        self.pump();
        Ok(())
    }

    /// Moves the machine's outputs to ours: messages to their peers (by node id, with the
    /// address for the session's book), results to the application.
    fn pump(&mut self) {
        let Some(chord) = self.chord.as_mut() else {
            return;
        };
        while let Some(out) = chord.poll_output() {
            match out {
                ChordOutput::Send { to, msg } => {
                    if to.node == chord.me().node {
                        continue;
                    }
                    if !to.addr.is_empty() {
                        self.outputs.push_back(ProtocolOutput::Learned {
                            node: to.node,
                            addr: to.addr,
                        });
                    }
                    self.outputs.push_back(ProtocolOutput::Send {
                        to: Recipients::PeerOrDial(to.node),
                        message: Outgoing::message(&Message::Chord(msg)),
                        class: Class::Control,
                    });
                }
                ChordOutput::Event(e) => {
                    // Every event ends a request this protocol numbered; an unknown number
                    // (none is) would go to the application as it is.
                    let output = match self.asks.remove(&e.request) {
                        Some(Asker::Protocol(to, request)) => ProtocolOutput::ChordAnswer {
                            to,
                            request,
                            result: e.result,
                        },
                        Some(Asker::App(request)) => ProtocolOutput::Event(ChordEvent {
                            request,
                            result: e.result,
                        }),
                        None => ProtocolOutput::Event(e),
                    };
                    self.outputs.push_back(output);
                }
            }
        }
    }

    /// Asks up to [`CHORD_PROBES_PER_PERIOD`] chord-running links (consecutive in node-id
    /// order from a random one) who follows this node on the ring.
    fn probe(&mut self, now: Instant, cx: &Context<'_>) {
        let Some(chord) = self.chord.as_mut() else {
            return;
        };
        let members: Vec<ChordPeer> = cx
            .links()
            .filter(|p| p.runs(Family::Chord))
            .filter_map(|p| {
                Some(ChordPeer {
                    node: p.node,
                    addr: p.listen_addr.clone()?,
                })
            })
            .collect();
        if members.is_empty() {
            return;
        }
        let count = members.len();
        let first = (self.rng.next_u64() % count as u64) as usize;
        for via in members
            .into_iter()
            .cycle()
            .skip(first)
            .take(count.min(CHORD_PROBES_PER_PERIOD))
        {
            chord.probe_via(now, via);
        }
    }
}

impl Protocol for ChordProtocol {
    type Event = ChordEvent;
    type Command = ChordCommand;
    type Refusal = ChordRefusal;

    const FAMILY: Family = Family::Chord;

    fn owns(code: Code) -> bool {
        code.family() == Some(Family::Chord)
    }

    fn runs(&self) -> bool {
        self.chord.is_some()
    }

    /// A lone node joins the ring through the first chord-running peer it links to.
    fn handle_link(&mut self, now: Instant, _cx: &Context<'_>, notice: LinkNotice<'_>) {
        let LinkNotice::Up {
            peer,
            replaced: false,
        } = notice
        else {
            return;
        };
        let (Some(chord), true, Some(addr)) = (
            self.chord.as_mut(),
            peer.runs(Family::Chord),
            peer.listen_addr.as_ref(),
        ) else {
            return;
        };
        let via = ChordPeer {
            node: peer.node,
            addr: addr.clone(),
        };
        chord.join_if_alone(now, via);
        self.pump();
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        let payload = frame.payload()?;
        let Message::Chord(msg) = Message::decode(frame.code(), &payload)? else {
            return Err(PeerFault::Unexpected("not a chord message"));
        };
        let from = ChordPeer {
            node: from.node,
            addr: from.listen_addr.clone().unwrap_or_default(),
        };
        if let Some(chord) = self.chord.as_mut() {
            chord.observe_wall_clock(now, cx.wall_clock_ms(now));
            chord.handle_message(now, &from, msg);
        }
        self.persist(now, cx);
        self.pump();
        Ok(())
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: ChordCommand,
    ) -> Result<(), ChordRefusal> {
        self.start_request(now, cx, Asker::App(command.request), command.op)
    }

    /// At the start, asks the host for the stored records. Runs the machine's due timers,
    /// probes every repair period, and stores what changed.
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        let Some(chord) = self.chord.as_mut() else {
            return;
        };
        if !self.persist.load_sent {
            self.persist.load_sent = true;
            self.outputs.push_back(ProtocolOutput::Request {
                token: LOAD,
                request: HostRequest::LoadState {
                    name: STATE_NAME.into(),
                },
            });
        }
        chord.start(now);
        if chord.poll_timeout().is_some_and(|at| at <= now) {
            chord.handle_timeout(now);
        }
        if self.probe.fire(now) {
            self.probe(now, cx);
        }
        self.persist(now, cx);
        self.pump();
    }

    /// The stored records come back (once there is a wall clock); a finished store releases
    /// the answers it held, stored or not (a host that cannot store, such as one with no
    /// state folder, keeps nothing: its answers then say the records are held in memory).
    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult) {
        let Some(chord) = self.chord.as_mut() else {
            return;
        };
        match (token, result) {
            (LOAD, result) => {
                self.persist.loaded = true;
                match result {
                    HostResult::Loaded(Some(blob)) => self.persist.unrestored = Some(blob),
                    HostResult::Loaded(None) => {}
                    _ => {
                        chord.count_state_failure();
                        self.persist.blocked = true;
                    }
                }
            }
            (STORE, result) => {
                if result != HostResult::Stored {
                    chord.count_state_failure();
                }
                if let Some(commit) = self.persist.storing.take() {
                    chord.committed(now, commit);
                }
            }
            _ => chord.count_state_failure(),
        }
        self.persist(now, cx);
        self.pump();
    }

    /// Hands every record to the successor, then leaves the ring.
    fn handle_shutdown(&mut self, now: Instant, _cx: &Context<'_>) {
        if let Some(chord) = self.chord.as_mut() {
            chord.leave(now);
        }
        self.pump();
        self.chord = None;
        // No request ends after this: nobody waits for one.
        self.asks.clear();
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<ChordEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let machine = self.chord.as_ref()?;
        // A snapshot that waits for its gap is due when the gap ends.
        let snapshot = self.persist.waiting.then_some(self.persist.next_at);
        earliest(
            earliest(machine.poll_timeout(), self.probe.deadline()),
            snapshot,
        )
    }

    fn check_invariants(&self, _config: &Config) -> Result<(), String> {
        if self.asks.len() > self.ops_max {
            return Err(format!("{} chord requests under way", self.asks.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next snapshot waits the last one's size at `SNAPSHOT_BYTES_PER_S_MAX`, at least
    /// `SNAPSHOT_GAP_MIN` and at most `SNAPSHOT_GAP_MAX` (within an asker's RPC timeout).
    #[test]
    fn a_snapshot_waits_its_size_at_the_byte_rate_within_its_bounds() {
        let mut p = Persist::default();
        let t = Instant(5_000_000_000);
        p.handed(t, 10);
        assert_eq!(p.next_at, t + SNAPSHOT_GAP_MIN);
        p.handed(t, 4 * 1024 * 1024);
        assert_eq!(p.next_at, t + Duration::from_millis(500));
        p.handed(t, 128 * 1024 * 1024);
        assert_eq!(p.next_at, t + SNAPSHOT_GAP_MAX);
        p.handed(t, usize::MAX);
        assert_eq!(p.next_at, t + SNAPSHOT_GAP_MAX);
    }
}
