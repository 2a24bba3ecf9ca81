//! The one contract every protocol keeps, in the manner of str0m's sub-machines.
//!
//! A protocol is a pure state machine the node hosts beside the others. It is told what the
//! session layer saw (links up and down, room for bulk data), handed its messages by peer
//! [`NodeId`], given application commands and the time; it answers only through
//! [`Protocol::poll_output`]: messages to one peer or to every link, events for the
//! application, requests to the host, and addresses it learned. It never sees a connection.
//!
//! The host (`crate::node`) calls, after every input, each protocol's `poll_output` until it
//! returns `None` (the single-mutation rule), and folds every `poll_timeout` into the node's
//! one deadline. What a protocol reads of the session (its links, the address book, the wall
//! clock) it reads through a [`Context`], never by reaching into the session's fields.

use weft_protocol::{Code, Family, Frame, NodeId, PeerInfo, ProtocolError};

use crate::config::Config;
use crate::connection::CloseReason;
use crate::io::{Event, HostRequest, HostResult, Refusal};
pub(crate) use crate::sending::{Class, Outgoing, Recipients, BULK_FRAME_BYTES_MAX};
use crate::session::{Peer, Session};
use crate::time::Instant;

/// The shape of every protocol. See the module documentation.
pub(crate) trait Protocol {
    /// What it tells the application.
    type Event: Into<Event>;
    /// What the application asks of it.
    type Command;
    /// Why it refuses a command.
    type Refusal: Into<Refusal>;

    /// The family its messages belong to: announced in HELLO when it runs, and the family a
    /// dedicated connection it asks for carries.
    const FAMILY: Family;

    /// Whether `code` is one of its messages.
    fn owns(code: Code) -> bool;

    /// Whether it runs on this node (a protocol that is configured off answers `false`: the
    /// node does not announce its family and refuses its frames, SPEC.md §8.9).
    fn runs(&self) -> bool {
        true
    }

    /// A link came up or went down, or a peer has room for bulk data again.
    fn handle_link(&mut self, now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>);

    /// One of its messages arrived from an established peer. An `Err` closes that peer's
    /// connection with the fault as its reason.
    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault>;

    /// Every frame of one input (`Input::Received`) that went to this protocol has been
    /// handed over: work it held back across them (the mesh verifies its broadcasts' proofs
    /// in one batch) is done now. An `Err` closes the connection the frames came from.
    fn handle_input_end(&mut self, now: Instant, cx: &Context<'_>) -> Result<(), PeerFault> {
        let _ = (now, cx);
        Ok(())
    }

    /// An application command.
    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: Self::Command,
    ) -> Result<(), Self::Refusal>;

    /// Runs what is due at `now`. The host calls it once when the node starts (a protocol
    /// arms its timers then) and whenever `poll_timeout` has passed; early calls do nothing.
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>);

    /// The host finished the request this protocol sent with `token`.
    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult) {
        let _ = (now, cx, token, result);
    }

    /// The node is shutting down: last words (a Chord member hands its records on) before
    /// every connection closes.
    fn handle_shutdown(&mut self, now: Instant, cx: &Context<'_>) {
        let _ = (now, cx);
    }

    /// The next thing it wants done, or `None`.
    fn poll_output(&mut self) -> Option<ProtocolOutput<Self::Event>>;

    /// Whether [`poll_output`](Self::poll_output) has something: the host asks a protocol
    /// for outputs only after a call that left it some (most frames leave none).
    fn has_output(&self) -> bool;

    /// When it next wants `handle_timeout`.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Checks every bound it promises (tests, the fuzzer, the simulator's checkers).
    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }
}

impl<E> ProtocolOutput<E> {
    /// The same output with its event turned into `F`.
    pub(crate) fn map_event<F>(self, f: impl FnOnce(E) -> F) -> ProtocolOutput<F> {
        match self {
            ProtocolOutput::Send { to, message, class } => {
                ProtocolOutput::Send { to, message, class }
            }
            ProtocolOutput::Event(e) => ProtocolOutput::Event(f(e)),
            ProtocolOutput::Request { token, request } => {
                ProtocolOutput::Request { token, request }
            }
            ProtocolOutput::Learned { node, addr } => ProtocolOutput::Learned { node, addr },
            ProtocolOutput::Forget { node } => ProtocolOutput::Forget { node },
            ProtocolOutput::Command(c) => ProtocolOutput::Command(c),
            ProtocolOutput::ChordAnswer {
                to,
                request,
                result,
            } => ProtocolOutput::ChordAnswer {
                to,
                request,
                result,
            },
            ProtocolOutput::Dial { node, addr } => ProtocolOutput::Dial { node, addr },
        }
    }
}

/// What a protocol asks of the host.
#[derive(Debug)]
pub(crate) enum ProtocolOutput<E> {
    /// Send `message` to `to`, queued with `class`.
    Send {
        /// Who gets it.
        to: Recipients,
        /// The message.
        message: Outgoing,
        /// Its place in the send queue (SPEC.md §12).
        class: Class,
    },
    /// Something for the application.
    Event(E),
    /// Work for the host; its answer comes back to `handle_completed` with `token`.
    Request {
        /// The protocol's own name for it.
        token: u64,
        /// What to do.
        request: HostRequest,
    },
    /// `node` can be dialed at `addr`: into the session's address book.
    Learned {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: String,
    },
    /// Forget the address book's entry for `node` (unless it is linked).
    Forget {
        /// The node.
        node: NodeId,
    },
    /// A command for another protocol of this node, carried as if the application gave it
    /// (drops add and gate their folders this way); a refusal is dropped. A Chord request
    /// (`Command::Chord`) ends in a [`ProtocolOutput::ChordAnswer`] to the protocol that
    /// asked, not in an application event; `Connect`, `Disconnect` and `Shutdown` are the
    /// application's alone and are dropped (a protocol dials with [`ProtocolOutput::Dial`]).
    Command(crate::io::Command),
    /// The end of a Chord request the protocol of family `to` asked for (Chord only).
    ChordAnswer {
        /// The protocol that asked.
        to: Family,
        /// Its number for the request.
        request: u64,
        /// What came of it.
        result: Result<crate::chord::ChordResult, crate::chord::ChordError>,
    },
    /// Dial `node` at `addr` once, an address someone else named (SPEC.md §24.6): not
    /// configured for redials, skipped when `node` is linked or being dialed, and guarded per
    /// address as a discovery dial is (§10.7).
    Dial {
        /// The node the address is said to be of.
        node: NodeId,
        /// Its address.
        addr: String,
    },
}

/// What the session tells a protocol about its peers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LinkNotice<'a> {
    /// A link to `peer` is established. `replaced`: it replaced a link to the same run of the
    /// peer (no `PeerUp`; only catch-up is due).
    Up {
        /// The peer.
        peer: &'a Peer,
        /// Whether it replaced a link to the same run.
        replaced: bool,
    },
    /// The link to `node` went away.
    Down {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: &'a CloseReason,
    },
    /// A bulk frame to `node` (of any family: families share a connection's bulk lane)
    /// left, so its lane may have room again; a protocol told earlier in the turn may have
    /// taken it (ask `Context::has_room` before each frame).
    Room {
        /// The peer.
        node: NodeId,
    },
}

/// Why a protocol refuses a peer's message: its connection is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerFault {
    /// The payload does not decode, or breaks a limit.
    Malformed(ProtocolError),
    /// The message is not allowed here.
    Unexpected(&'static str),
    /// A signed message (a table write, or a broadcast's origin proof) that does not verify.
    BadSignature,
    /// The peer kept sending past its rate limit (discovery cascades, new broadcasts).
    RateLimited,
    /// The peer served replication blocks that failed their hash, again and again.
    CorruptBlocks,
}

impl From<ProtocolError> for PeerFault {
    fn from(e: ProtocolError) -> PeerFault {
        PeerFault::Malformed(e)
    }
}

impl From<PeerFault> for CloseReason {
    fn from(f: PeerFault) -> CloseReason {
        match f {
            PeerFault::Malformed(e) => CloseReason::Protocol(e),
            PeerFault::Unexpected(what) => CloseReason::UnexpectedMessage(what),
            PeerFault::BadSignature => CloseReason::BadSignature,
            PeerFault::RateLimited => CloseReason::RateLimited,
            PeerFault::CorruptBlocks => CloseReason::CorruptBlocks,
        }
    }
}

/// What a protocol may read of the node while it handles an input: its identity, its links,
/// the address book and the clocks. Read-only: a protocol changes things through its outputs.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) session: &'a Session,
}

impl<'a> Context<'a> {
    /// This node's id.
    pub(crate) fn me(&self) -> NodeId {
        self.session.node_id()
    }

    /// This run's incarnation: raised by the host at every start.
    pub(crate) fn incarnation(&self) -> u64 {
        self.session.incarnation()
    }

    /// This node's key pair, to sign what it originates.
    pub(crate) fn identity(&self) -> &'a crate::identity::Identity {
        self.session.identity()
    }

    /// Where this node accepts connections, if anywhere.
    pub(crate) fn listen_addr(&self) -> Option<&'a str> {
        self.session.listen_addr()
    }

    /// Established links' peers, in node-id order.
    pub(crate) fn links(&self) -> impl Iterator<Item = &'a Peer> + 'a {
        self.session.link_peers()
    }

    /// Whether `node` has an established link (not only a dedicated connection, SPEC.md §8.9).
    pub(crate) fn is_linked(&self, node: &NodeId) -> bool {
        self.session.link_peer(node).is_some()
    }

    /// How many links are established.
    pub(crate) fn link_count(&self) -> usize {
        self.session.link_count()
    }

    /// Up to `max` entries of the address book, most recently seen first, without `exclude`.
    pub(crate) fn known_peers(&self, exclude: NodeId, max: usize) -> Vec<PeerInfo> {
        self.session.known_peers(exclude, max)
    }

    /// Calendar time at `now` (Unix ms), from the driver's last `WallClock` input.
    pub(crate) fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        self.session.wall_clock_ms(now)
    }

    /// Whether `node`'s connection takes another bulk frame of `family` now.
    pub(crate) fn has_room(&self, node: &NodeId, family: Family) -> bool {
        self.session.has_room(node, family)
    }
}
