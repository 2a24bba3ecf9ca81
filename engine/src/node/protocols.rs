//! The protocols this node hosts: the one registration a new protocol adds.
//!
//! A protocol is a field of [`Protocols`], made in [`Protocols::new`], given an index in
//! [`Protocols::all`], [`Protocols::get_mut`] and `OWNS` (which fixes the order they are
//! pumped and told of links), and, if the application can command it, a `Command` variant
//! routed in `command`. Everything
//! else the host does for it (dispatching its frames, folding its deadline, carrying its
//! outputs, telling it of links) goes through the erased [`Hosted`] view and needs no edit.

use weft_protocol::{Code, Family, Frame};

use crate::chord::{ChordError, ChordProtocol, ChordResult};
use crate::config::Config;
use crate::discovery::DiscoveryProtocol;
use crate::drops::DropsProtocol;
use crate::io::{Command, Event, HostResult, InputError};
use crate::machine::{Context, LinkNotice, PeerFault, Protocol, ProtocolOutput};
use crate::mesh::MeshProtocol;
use crate::replicate::ReplicateProtocol;
use crate::run::RunProtocol;
use crate::session::Peer;
use crate::table::TableProtocol;
use crate::time::Instant;
use weft_protocol::NodeId;

/// Every hosted protocol. See the module documentation.
#[derive(Debug)]
pub(crate) struct Protocols {
    pub(crate) discovery: DiscoveryProtocol,
    pub(crate) mesh: MeshProtocol,
    pub(crate) table: TableProtocol,
    pub(crate) chord: ChordProtocol,
    pub(crate) replicate: ReplicateProtocol,
    pub(crate) run: RunProtocol,
    pub(crate) drops: DropsProtocol,
    /// Each protocol's deadline as it last said, asked again after every call into it (a
    /// protocol's deadline changes only when it is called).
    deadlines: [Option<Instant>; COUNT],
    /// The soonest of `deadlines`.
    soonest: Option<Instant>,
    /// Bit `i`: protocol `i` has outputs not yet drained (as it said after the last call).
    pending: u8,
}

/// How many protocols are hosted: the length of [`Protocols::all`].
pub(crate) const COUNT: usize = 7;

/// Each protocol's family, by index.
pub(crate) const FAMILIES: [Family; COUNT] = [
    DiscoveryProtocol::FAMILY,
    MeshProtocol::FAMILY,
    TableProtocol::FAMILY,
    ChordProtocol::FAMILY,
    ReplicateProtocol::FAMILY,
    RunProtocol::FAMILY,
    DropsProtocol::FAMILY,
];

/// Whether each protocol, by index, owns a code: dispatch without a call through `Hosted`.
const OWNS: [fn(Code) -> bool; COUNT] = [
    DiscoveryProtocol::owns,
    MeshProtocol::owns,
    TableProtocol::owns,
    ChordProtocol::owns,
    ReplicateProtocol::owns,
    RunProtocol::owns,
    DropsProtocol::owns,
];

impl Protocols {
    /// Each protocol with its own RNG stream, drawn from the node's seed by its name.
    pub(crate) fn new(config: &Config, me: NodeId, seed: impl Fn(&str) -> [u8; 32]) -> Self {
        let chord = ChordProtocol::new(config, me, seed("chord"));
        // Drops announce and look up holders on the ring only where this node is a member.
        let ring = Protocol::runs(&chord);
        Protocols {
            discovery: DiscoveryProtocol::new(config, seed("discovery")),
            mesh: MeshProtocol::new(config, me, seed("mesh")),
            table: TableProtocol::new(config, seed("table")),
            chord,
            replicate: ReplicateProtocol::new(seed("replicate")),
            run: RunProtocol::new(config),
            drops: DropsProtocol::new(config, me, seed("drops"), ring),
            deadlines: [None; COUNT],
            soonest: None,
            pending: 0,
        }
    }

    /// Protocol `i` (its index in `all`).
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut dyn Hosted {
        match i {
            0 => &mut self.discovery,
            1 => &mut self.mesh,
            2 => &mut self.table,
            3 => &mut self.chord,
            4 => &mut self.replicate,
            5 => &mut self.run,
            _ => &mut self.drops,
        }
    }

    /// Calls protocol `i`, then records its deadline and whether it has outputs.
    pub(crate) fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut dyn Hosted) -> R) -> R {
        let p = self.get_mut(i);
        let r = f(p);
        let deadline = p.poll_timeout();
        let has_output = p.has_output();
        if self.deadlines[i] != deadline {
            self.deadlines[i] = deadline;
            self.soonest = self.deadlines.iter().flatten().min().copied();
        }
        self.pending |= u8::from(has_output) << i;
        r
    }

    /// The protocol that owns `code`: the one of its family (each family has one protocol),
    /// if that protocol owns it.
    pub(crate) fn owner(code: Code) -> Option<usize> {
        let family = code.family()?;
        let i = FAMILIES.iter().position(|f| *f == family)?;
        OWNS[i](code).then_some(i)
    }

    /// The protocols with outputs not yet drained; forgets them.
    pub(crate) fn take_pending(&mut self) -> u8 {
        core::mem::take(&mut self.pending)
    }

    /// Protocol `i`'s deadline, as it last said.
    pub(crate) fn deadline_of(&self, i: usize) -> Option<Instant> {
        self.deadlines[i]
    }

    /// The soonest protocol deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.soonest
    }

    /// Every protocol, in the order they are told of links and pumped; the index of each
    /// is its `i` in [`get_mut`](Self::get_mut) and [`call`](Self::call).
    pub(crate) fn all(&self) -> [&dyn Hosted; COUNT] {
        [
            &self.discovery,
            &self.mesh,
            &self.table,
            &self.chord,
            &self.replicate,
            &self.run,
            &self.drops,
        ]
    }

    /// Routes an application command to its protocol. The session's own commands never
    /// come here (the host takes them first).
    pub(crate) fn command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: Command,
    ) -> Result<(), InputError> {
        let (i, result) = match command {
            Command::Mesh(c) => (1, self.mesh.handle_command(now, cx, c).map_err(err)),
            Command::Table(c) => (2, self.table.handle_command(now, cx, c).map_err(err)),
            Command::Chord(c) => (3, self.chord.handle_command(now, cx, c).map_err(err)),
            Command::Replicate(c) => (4, self.replicate.handle_command(now, cx, c).map_err(err)),
            Command::Run(c) => (5, self.run.handle_command(now, cx, c).map_err(err)),
            // Publishing signs the drop folder's index as it is now: read from replication.
            Command::Drops(crate::drops::DropsCommand::Publish { drop, secondary }) => {
                let files = self.replicate.folder(&drop.folder_id()).map(|r| {
                    crate::drops::drop_files(
                        r.records().filter(|r| !r.deleted).map(|r| r.entry.clone()),
                    )
                });
                let published = self.drops.publish(now, cx, drop, secondary, files);
                (6, published.map_err(err))
            }
            Command::Drops(c) => (6, self.drops.handle_command(now, cx, c).map_err(err)),
            Command::Connect { .. } | Command::Disconnect { .. } | Command::Shutdown => {
                return Ok(());
            }
        };
        self.call(i, |_| ());
        result
    }

    /// A command protocol `from` (its index) gave for another protocol: as the
    /// application's, except that a Chord request is the asker's own, its end routed back
    /// to it ([`chord_answer`](Self::chord_answer)).
    pub(crate) fn command_from(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: usize,
        command: Command,
    ) -> Result<(), InputError> {
        let Command::Chord(c) = command else {
            return self.command(now, cx, command);
        };
        let result = self.chord.ask(now, cx, FAMILIES[from], c).map_err(err);
        self.call(3, |_| ());
        result
    }

    /// The end of a Chord request the protocol of family `to` asked for, handed to it.
    pub(crate) fn chord_answer(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        to: Family,
        request: u64,
        result: Result<ChordResult, ChordError>,
    ) {
        // Drops are the only protocol that asks Chord anything.
        if to == Family::Drops {
            self.drops.handle_chord_answer(now, cx, request, result);
            self.call(6, |_| ());
        }
    }

    /// The HELLO `families` bits of the protocols that run.
    pub(crate) fn families(&self) -> u32 {
        self.all()
            .iter()
            .filter(|p| p.runs())
            .fold(0, |bits, p| bits | p.family().bit())
    }
}

fn err<R: Into<crate::io::Refusal>>(r: R) -> InputError {
    InputError::Refused(r.into())
}

/// A protocol as the host drives it, whatever its own event and command types: the
/// [`Protocol`] contract with events turned into the node's [`Event`].
pub(crate) trait Hosted {
    fn family(&self) -> Family;
    fn runs(&self) -> bool;
    fn handle_link(&mut self, now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>);
    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault>;
    fn handle_input_end(&mut self, now: Instant, cx: &Context<'_>) -> Result<(), PeerFault>;
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>);
    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult);
    fn handle_shutdown(&mut self, now: Instant, cx: &Context<'_>);
    fn poll_output(&mut self) -> Option<ProtocolOutput<Event>>;
    fn has_output(&self) -> bool;
    fn poll_timeout(&self) -> Option<Instant>;
    fn check_invariants(&self, config: &Config) -> Result<(), String>;
}

impl<P: Protocol> Hosted for P {
    fn family(&self) -> Family {
        P::FAMILY
    }

    fn runs(&self) -> bool {
        Protocol::runs(self)
    }

    fn handle_link(&mut self, now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>) {
        Protocol::handle_link(self, now, cx, notice);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        Protocol::handle_message(self, now, cx, from, frame)
    }

    fn handle_input_end(&mut self, now: Instant, cx: &Context<'_>) -> Result<(), PeerFault> {
        Protocol::handle_input_end(self, now, cx)
    }

    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        Protocol::handle_timeout(self, now, cx);
    }

    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult) {
        Protocol::handle_completed(self, now, cx, token, result);
    }

    fn handle_shutdown(&mut self, now: Instant, cx: &Context<'_>) {
        Protocol::handle_shutdown(self, now, cx);
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<Event>> {
        Protocol::poll_output(self).map(|o| o.map_event(Into::into))
    }

    fn has_output(&self) -> bool {
        Protocol::has_output(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Protocol::poll_timeout(self)
    }

    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        Protocol::check_invariants(self, config)
    }
}
