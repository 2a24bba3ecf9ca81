//! The protocols this node hosts: the one registration a new protocol adds.
//!
//! A protocol is a field of [`Protocols`], made in [`Protocols::new`], listed in
//! [`Protocols::all_mut`] (which fixes the order they are pumped and told of links), and, if
//! the application can command it, given a `Command` variant routed in `command`. Everything
//! else the host does for it (dispatching its frames, folding its deadline, carrying its
//! outputs, telling it of links) goes through the erased [`Hosted`] view and needs no edit.

use weft_protocol::{Code, Family, Frame};

use crate::chord::ChordProtocol;
use crate::config::Config;
use crate::discovery::DiscoveryProtocol;
use crate::io::{Command, Event, HostResult, InputError};
use crate::machine::{Context, LinkNotice, PeerFault, Protocol, ProtocolOutput};
use crate::mesh::MeshProtocol;
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
}

/// How many protocols are hosted: the length of [`Protocols::all_mut`].
pub(crate) const COUNT: usize = 4;

impl Protocols {
    /// Each protocol with its own RNG stream, drawn from the node's seed by its name.
    pub(crate) fn new(config: &Config, me: NodeId, seed: impl Fn(&str) -> [u8; 32]) -> Self {
        Protocols {
            discovery: DiscoveryProtocol::new(config),
            mesh: MeshProtocol::new(config, me, seed("mesh")),
            table: TableProtocol::new(config, me, seed("table")),
            chord: ChordProtocol::new(config, me, seed("chord")),
        }
    }

    /// Every protocol, in the order they are told of links and pumped.
    pub(crate) fn all_mut(&mut self) -> [&mut dyn Hosted; COUNT] {
        [
            &mut self.discovery,
            &mut self.mesh,
            &mut self.table,
            &mut self.chord,
        ]
    }

    /// Every protocol, in the same order.
    pub(crate) fn all(&self) -> [&dyn Hosted; COUNT] {
        [&self.discovery, &self.mesh, &self.table, &self.chord]
    }

    /// Routes an application command to its protocol. The session's own commands never
    /// come here (the host takes them first).
    pub(crate) fn command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: Command,
    ) -> Result<(), InputError> {
        match command {
            Command::Mesh(c) => self.mesh.handle_command(now, cx, c).map_err(err),
            Command::Table(c) => self.table.handle_command(now, cx, c).map_err(err),
            Command::Chord(c) => self.chord.handle_command(now, cx, c).map_err(err),
            Command::Connect { .. } | Command::Disconnect { .. } | Command::Shutdown => Ok(()),
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
    fn owns(&self, code: Code) -> bool;
    fn handle_link(&mut self, now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>);
    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault>;
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>);
    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult);
    fn handle_shutdown(&mut self, now: Instant, cx: &Context<'_>);
    fn poll_output(&mut self) -> Option<ProtocolOutput<Event>>;
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

    fn owns(&self, code: Code) -> bool {
        P::owns(code)
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

    fn poll_timeout(&self) -> Option<Instant> {
        Protocol::poll_timeout(self)
    }

    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        Protocol::check_invariants(self, config)
    }
}
