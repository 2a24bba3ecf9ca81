//! Drops as a protocol the node hosts (family `0x05`, SPEC.md §24.6): subscriptions, pushed
//! versions, missing parents and file lists fetched and checked, the drop folder's gate set
//! to the chosen head's files, publishing, the drops' state blob, and the tracker on the
//! Chord ring (announcing held drops, looking up a subscription's holders).
//!
//! Timers (a [`TimerTable`]): `Sync` every [`DROP_SYNC_INTERVAL`] (heads to every link, a
//! stale file list asked of another holder, announcements that waited for a wall clock,
//! lookups of subscriptions that found nobody), and, on a ring member, `Announce` every
//! [`HOLDER_REANNOUNCE`] (every held drop announced again).
//!
//! [`DropsProtocol`]'s methods are kept by concept: [`versions`] (publish, judge, heads),
//! [`file_lists`] (fetched, checked, served), [`tracking`] (the tracker on the ring),
//! [`persist`] (the state blob). This module holds the state, the gate and folder set-up,
//! the timers, the `Protocol` contract and the messages' dispatch.

mod file_lists;
mod persist;
mod tracking;
mod versions;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use weft_protocol::{
    Code, DropFile, DropGetVersion, DropId, DropManifest, DropMessage, DropNotFound, DropSubscribe,
    Family, FileEntry, FileKind, Frame, Message, NodeId, RootHasher, Version, VersionId,
    HOLDER_REANNOUNCE,
};

use super::tracker::{DropTracker, Tracker};
use super::{
    Chain, DropsCommand, DropsDurability, DropsEvent, DropsEventKind, DropsMetrics, DropsRefusal,
    DROPS_MAX, DROPS_STATE_NAME, DROP_SUBSCRIBERS_MAX,
};
use crate::config::Config;
use crate::identity::Identity;
use crate::io::{Command, HostRequest, HostResult};
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::replicate::{Gate, ReplicaCommand, ReplicaConfig, ReplicateCommand};
use crate::session::Peer;
use crate::time::{Duration, Instant};
use crate::timer::{TimerName, TimerTable};

/// Host request tokens.
const LOAD: u64 = 0;
const STORE: u64 = 1;

/// The persisted form of the drops (postcard), versioned by its first field.
const STATE_FORMAT: u32 = 1;

/// A file list being fetched from one peer, batch by batch, checked against its root.
#[derive(Debug)]
struct Assembly {
    version: VersionId,
    peer: NodeId,
    /// When it was asked for: an assembly older than [`DROP_SYNC_INTERVAL`] at a sync is
    /// asked of another holder.
    asked_at: Instant,
    hasher: RootHasher,
    files: Vec<DropFile>,
    /// The last batch was thin (see `on_files`).
    thin_before: bool,
}

/// One drop this node holds.
#[derive(Debug)]
struct Held {
    chain: Chain,
    /// The nonce its id derives from, if this node created it (an owner before any version
    /// names it).
    created: Option<[u8; 16]>,
    /// Verified file lists, of the heads and of the version shown.
    files: BTreeMap<VersionId, Vec<DropFile>>,
    /// The version the folder's gate lists.
    shown: Option<VersionId>,
    /// Linked peers that asked for pushes.
    subscribers: BTreeSet<NodeId>,
    /// Linked peers known to hold it (they answered with heads or pushed a version).
    holders: BTreeSet<NodeId>,
    assembly: Option<Assembly>,
    /// Its tracker counters.
    tracker: DropTracker,
    /// The owners in force the folder's gate was last given by (`Chain::owners`).
    gate_owners: Option<weft_protocol::DropOwners>,
    /// No holder lookup before this (none: at the next sync), and the wait after the next
    /// one: it doubles with each lookup while no holder links, from [`DROP_SYNC_INTERVAL`]
    /// up to [`DROP_LOOKUP_BACKOFF_MAX`].
    next_lookup: Option<Instant>,
    lookup_backoff: Duration,
}

impl Held {
    fn new(drop: DropId, created: Option<[u8; 16]>) -> Held {
        Held {
            chain: Chain::new(drop),
            created,
            files: BTreeMap::new(),
            shown: None,
            subscribers: BTreeSet::new(),
            holders: BTreeSet::new(),
            assembly: None,
            tracker: DropTracker::default(),
            gate_owners: None,
            next_lookup: None,
            lookup_backoff: DROP_SYNC_INTERVAL,
        }
    }

    /// `peer` holds the drop: kept while it is linked (holders are only ever asked over a
    /// link, and one that links again tells its heads again, answering this node's
    /// DROP_SUBSCRIBE), so the set never outgrows the links.
    fn add_holder(&mut self, peer: NodeId, linked: &BTreeSet<NodeId>) {
        if linked.contains(&peer) {
            self.holders.insert(peer);
            // A holder found: should all go again, the next lookup is at the next sync.
            self.next_lookup = None;
            self.lookup_backoff = DROP_SYNC_INTERVAL;
        }
    }

    /// Whether it is a subscription that needs holders: not created here, and no linked
    /// peer known to hold it. Versions held or not: one that had its holders' links closed
    /// (an owner's restart says BYE, and a BYE is not redialed; a tracker's dial is made
    /// once) stayed on its old version for good.
    fn needs_holders(&self, linked: &BTreeSet<NodeId>) -> bool {
        self.created.is_none() && !self.holders.iter().any(|h| linked.contains(h))
    }
}

/// The drops' timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropsTimer {
    /// Every [`DROP_SYNC_INTERVAL`].
    Sync = 0,
    /// Every [`HOLDER_REANNOUNCE`], on a ring member.
    Announce = 1,
}

impl TimerName for DropsTimer {
    const ALL: &'static [Self] = &[DropsTimer::Sync, DropsTimer::Announce];

    fn index(self) -> usize {
        self as usize
    }
}

/// How often a node tells its linked peers its heads of every drop it holds, and asks
/// again for a file list it still lacks (SPEC.md §24.6): pushes lost with a link or a crash
/// are made up for by then.
pub const DROP_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// The longest wait between two lookups of a drop's holders while none links: the wait
/// starts at [`DROP_SYNC_INTERVAL`] and doubles with each lookup (a subscriber whose holders
/// are all away looked them up, and dialed them, every 5 s for good).
pub const DROP_LOOKUP_BACKOFF_MAX: Duration = Duration::from_secs(320);

/// [`HOLDER_REANNOUNCE`] (150 s) as the engine's duration: the `Announce` timer's period.
const REANNOUNCE: Duration = Duration::from_millis(HOLDER_REANNOUNCE.as_millis() as u64);

/// A held drop as persisted.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    drop: DropId,
    created: Option<[u8; 16]>,
    versions: Vec<DropManifest>,
    shown: Option<(VersionId, Vec<DropFile>)>,
}

#[derive(Debug, Default)]
struct Persist {
    load_sent: bool,
    loaded: bool,
    /// The stored blob could not be read: it is never stored over in this run.
    unreadable: bool,
    /// The host failed the load (or keeps no store): nothing is stored in this run, over
    /// what it may still hold.
    stores_blocked: bool,
    outstanding: bool,
    dirty: bool,
    /// The durability of this node's changes to the held drops, as the host asks for it.
    durability: DropsDurability,
    /// The changes each store under way holds, first first (more than one only after a
    /// shutdown, whose store goes beside the one under way: the host answers them in order).
    storing: VecDeque<u64>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct DropsProtocol {
    me: NodeId,
    identity: Identity,
    secret_key: [u8; 32],
    rng: ChaCha8Rng,
    drops: BTreeMap<DropId, Held>,
    /// Peers linked that run drops.
    linked: BTreeSet<NodeId>,
    outputs: VecDeque<ProtocolOutput<DropsEvent>>,
    persist: Persist,
    metrics: DropsMetrics,
    now: Instant,
    timers: TimerTable<DropsTimer, 2>,
    tracker: Tracker,
}

impl DropsProtocol {
    /// `ring`: whether this node is a Chord ring member (the tracker is used only then).
    pub(crate) fn new(config: &Config, me: NodeId, seed: [u8; 32], ring: bool) -> DropsProtocol {
        DropsProtocol {
            me,
            identity: Identity::from_secret(&config.secret_key),
            secret_key: config.secret_key,
            rng: ChaCha8Rng::from_seed(seed),
            drops: BTreeMap::new(),
            linked: BTreeSet::new(),
            outputs: VecDeque::new(),
            persist: Persist::default(),
            metrics: DropsMetrics::default(),
            now: Instant::ZERO,
            timers: TimerTable::default(),
            tracker: Tracker::new(ring),
        }
    }

    pub(crate) fn metrics(&self) -> DropsMetrics {
        self.metrics
    }

    /// How far this node's changes to the held drops are stored.
    pub(crate) fn durability(&self) -> &DropsDurability {
        &self.persist.durability
    }

    /// The chain of a held drop.
    pub(crate) fn chain(&self, drop: &DropId) -> Option<&Chain> {
        self.drops.get(drop).map(|h| &h.chain)
    }

    /// The version a held drop's folder shows.
    pub(crate) fn shown(&self, drop: &DropId) -> Option<VersionId> {
        self.drops.get(drop).and_then(|h| h.shown)
    }

    /// A held drop's tracker counters.
    pub(crate) fn tracker_of(&self, drop: &DropId) -> Option<DropTracker> {
        self.drops.get(drop).map(|h| h.tracker)
    }

    /// Every held drop.
    pub(crate) fn drop_ids(&self) -> impl Iterator<Item = &DropId> + '_ {
        self.drops.keys()
    }

    fn send(&mut self, to: NodeId, message: DropMessage) {
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Peer(to),
            message: Outgoing::message(&Message::Drop(message)),
            class: Class::Control,
        });
    }

    fn event(&mut self, drop: DropId, kind: DropsEventKind) {
        self.outputs
            .push_back(ProtocolOutput::Event(DropsEvent { drop, kind }));
    }

    fn command(&mut self, command: Command) {
        self.outputs.push_back(ProtocolOutput::Command(command));
    }

    /// Whether this node is an owner of `held` by the owners every copy goes by
    /// (`Chain::owners`), or created it and no version exists yet.
    fn is_owner(&self, held: &Held) -> bool {
        let me = self.identity.public_key();
        match held.chain.owners() {
            Some(owners) => owners.contains(&me),
            None => held.created.is_some(),
        }
    }

    /// The gate of `drop`'s folder: the shown version's files; an owner trusts the other
    /// owners and publishes its own changes, a subscriber trusts nobody and is read-only.
    fn gate(&self, drop: &DropId) -> Gate {
        let Some(held) = self.drops.get(drop) else {
            return Gate::default();
        };
        let owner = self.is_owner(held);
        let trusted = match (owner, held.chain.owners()) {
            (true, Some(owners)) => core::iter::once(owners.primary)
                .chain(owners.secondary.iter().copied())
                .map(|k| NodeId::from_public_key(&k))
                .filter(|n| *n != self.me)
                .collect(),
            _ => BTreeSet::new(),
        };
        let files = held
            .shown
            .and_then(|v| held.files.get(&v))
            .map(|list| list.iter().map(|f| (f.path.clone(), entry_of(f))).collect())
            .unwrap_or_default();
        Gate {
            trusted,
            files,
            read_only: !owner,
        }
    }

    fn set_gate(&mut self, drop: DropId) {
        let gate = self.gate(&drop);
        if let Some(held) = self.drops.get_mut(&drop) {
            held.gate_owners = held.chain.owners().cloned();
        }
        self.command(Command::Replicate(ReplicateCommand::Folder {
            folder: drop.folder_id(),
            command: ReplicaCommand::SetGate(gate),
        }));
    }

    /// Adds `drop`'s folder to replication, gated.
    fn add_folder(&mut self, drop: DropId) {
        let mut config = ReplicaConfig::new(drop.folder_id(), self.me);
        config.gate = Some(self.gate(&drop));
        if let Some(held) = self.drops.get_mut(&drop) {
            held.gate_owners = held.chain.owners().cloned();
        }
        self.command(Command::Replicate(ReplicateCommand::AddFolder(config)));
    }

    fn hold(&mut self, drop: DropId, created: Option<[u8; 16]>) -> Result<(), DropsRefusal> {
        if !self.persist.loaded {
            return Err(DropsRefusal::Loading);
        }
        if self.persist.unreadable {
            return Err(DropsRefusal::StateUnreadable);
        }
        if self.drops.contains_key(&drop) {
            return Err(DropsRefusal::Exists(drop));
        }
        if self.drops.len() >= DROPS_MAX {
            return Err(DropsRefusal::TooManyDrops);
        }
        self.drops.insert(drop, Held::new(drop, created));
        if created.is_some() {
            // An owner holds its drop from the start.
            self.tracker.mark_due(drop);
        }
        self.add_folder(drop);
        let linked: Vec<NodeId> = self.linked.iter().copied().collect();
        for peer in linked {
            self.send(peer, DropMessage::Subscribe(DropSubscribe { drop }));
        }
        self.changed();
        Ok(())
    }

    /// The `Sync` timer: heads to every link, stale file lists asked again, lookups for the
    /// subscriptions that still need holders, announcements that waited.
    fn sync(&mut self, now: Instant, cx: &Context<'_>) {
        let drops: Vec<DropId> = self.drops.keys().copied().collect();
        let linked: Vec<NodeId> = self.linked.iter().copied().collect();
        for drop in drops {
            let heads = self.heads_of(&drop);
            for peer in &linked {
                self.send(*peer, DropMessage::Heads(heads.clone()));
            }
            self.update_shown(drop, None);
        }
        let needing: Vec<DropId> = self
            .drops
            .iter()
            .filter(|(_, h)| {
                h.needs_holders(&self.linked) && h.next_lookup.is_none_or(|at| now >= at)
            })
            .map(|(d, _)| *d)
            .collect();
        for drop in needing {
            self.look_up(drop);
        }
        self.announce_due(now, cx);
    }
}

/// The index record a gate compares a drop file with.
fn entry_of(f: &DropFile) -> FileEntry {
    FileEntry {
        path: f.path.clone(),
        kind: f.kind,
        target: f.target.clone().unwrap_or_default(),
        mode: f.mode,
        size: f.size,
        mtime_ms: 0,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks: f.blocks.clone(),
    }
}

/// A drop folder's present records as a version's file list.
pub(crate) fn drop_files(records: impl Iterator<Item = FileEntry>) -> Vec<DropFile> {
    let mut files: Vec<DropFile> = records
        .map(|e| DropFile {
            target: (e.kind == FileKind::Symlink).then_some(e.target),
            path: e.path,
            kind: e.kind,
            mode: e.mode,
            size: e.size,
            blocks: e.blocks,
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

impl Protocol for DropsProtocol {
    type Event = DropsEvent;
    type Command = DropsCommand;
    type Refusal = DropsRefusal;

    const FAMILY: Family = Family::Drops;

    fn owns(code: Code) -> bool {
        code.family() == Some(Family::Drops) && code.is_known()
    }

    fn handle_link(&mut self, now: Instant, _cx: &Context<'_>, notice: LinkNotice<'_>) {
        self.now = now;
        match notice {
            LinkNotice::Up { peer, .. } => {
                let node = peer.node;
                self.linked.insert(node);
                let drops: Vec<DropId> = self.drops.keys().copied().collect();
                for drop in drops {
                    self.send(node, DropMessage::Subscribe(DropSubscribe { drop }));
                }
            }
            LinkNotice::Down { node, .. } => {
                self.linked.remove(&node);
                let mut lost = Vec::new();
                for (drop, held) in &mut self.drops {
                    held.subscribers.remove(&node);
                    held.holders.remove(&node);
                    if held.assembly.as_ref().is_some_and(|a| a.peer == node) {
                        held.assembly = None;
                        lost.push(*drop);
                    }
                }
                for drop in lost {
                    self.update_shown(drop, None);
                }
            }
            LinkNotice::Room { .. } => {}
        }
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        self.now = now;
        // Drops run over links alone (a holder found through the tracker is dialed for a
        // link): a peer on a dedicated connection gets nothing and leaves nothing behind
        // (subscribers are let go when their link goes down, and such a peer has none).
        // The session's links too: a new link's first frame can come before its
        // `LinkNotice::Up` fills `linked`.
        if !self.linked.contains(&from.node) && !cx.is_linked(&from.node) {
            return Ok(());
        }
        let result = self.on_message(from.node, frame);
        self.announce_fresh(now, cx);
        result
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: DropsCommand,
    ) -> Result<(), DropsRefusal> {
        self.now = now;
        match command {
            DropsCommand::Create => {
                let mut nonce = [0u8; 16];
                self.rng.fill_bytes(&mut nonce);
                let drop = DropId::derive(&self.identity.public_key(), &nonce);
                self.hold(drop, Some(nonce))?;
                self.event(drop, DropsEventKind::Created);
                self.announce_fresh(now, cx);
                Ok(())
            }
            DropsCommand::Subscribe { drop } => {
                self.hold(drop, None)?;
                self.look_up(drop);
                Ok(())
            }
            // The node hands publishing the folder's records (`publish`).
            DropsCommand::Publish { drop, .. } => Err(DropsRefusal::NoFolder(drop)),
        }
    }

    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        self.now = now;
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                DropsTimer::Sync => {
                    self.timers.set(DropsTimer::Sync, now + DROP_SYNC_INTERVAL);
                    self.sync(now, cx);
                    if self.persist.dirty && !self.persist.outstanding {
                        // A store that failed: tried again.
                        self.store();
                    }
                }
                DropsTimer::Announce => {
                    self.timers.set(DropsTimer::Announce, now + REANNOUNCE);
                    self.reannounce(now, cx);
                }
            }
        }
        if !self.persist.load_sent {
            self.persist.load_sent = true;
            self.timers.set(DropsTimer::Sync, now + DROP_SYNC_INTERVAL);
            if self.tracker.ring() {
                self.timers.set(DropsTimer::Announce, now + REANNOUNCE);
            }
            self.outputs.push_back(ProtocolOutput::Request {
                token: LOAD,
                request: HostRequest::LoadState {
                    name: DROPS_STATE_NAME.into(),
                },
            });
        }
    }

    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult) {
        self.now = now;
        self.on_completed(token, result);
        self.announce_fresh(now, cx);
    }

    fn handle_shutdown(&mut self, _now: Instant, _cx: &Context<'_>) {
        // Chord stops with the node: no request of the tracker's ends.
        self.tracker.clear();
        // A change made while a store was under way goes now, beside it (the host answers
        // them in order): left for the next sync, a stopping node never stored it.
        if self.persist.dirty {
            self.persist.outstanding = false;
            self.store();
        }
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<DropsEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    fn check_invariants(&self, _config: &Config) -> Result<(), String> {
        for (drop, held) in &self.drops {
            held.chain
                .check_invariants()
                .map_err(|e| format!("drop {drop}: {e}"))?;
            if held.subscribers.len() > DROP_SUBSCRIBERS_MAX {
                return Err(format!("drop {drop}: too many subscribers"));
            }
            if let Some(h) = held.holders.iter().find(|h| !self.linked.contains(h)) {
                return Err(format!("drop {drop}: holder {h} kept without a link"));
            }
        }
        if self.drops.len() > DROPS_MAX {
            return Err("too many drops".into());
        }
        // At most one announcement and one lookup per drop, and the key record.
        if self.tracker.asks_len() > 2 * DROPS_MAX + 1 {
            return Err(format!("{} tracker requests", self.tracker.asks_len()));
        }
        Ok(())
    }
}

impl DropsProtocol {
    /// One DROP_* message from `peer`.
    fn on_message(&mut self, peer: NodeId, frame: Frame) -> Result<(), PeerFault> {
        let Message::Drop(message) = Message::decode(frame.code(), &frame.payload()?)? else {
            return Err(PeerFault::Unexpected("not a drop message"));
        };
        match message {
            DropMessage::Subscribe(m) => {
                let heads = self.heads_of(&m.drop);
                let Some(held) = self.drops.get_mut(&m.drop) else {
                    return Ok(());
                };
                held.add_holder(peer, &self.linked);
                // A new subscriber holds the drop too: subscribe back, so its versions reach
                // this node (its own DROP_SUBSCRIBE may have come before this node held it).
                let new =
                    held.subscribers.len() < DROP_SUBSCRIBERS_MAX && held.subscribers.insert(peer);
                self.send(peer, DropMessage::Heads(heads));
                if new {
                    let drop = m.drop;
                    self.send(peer, DropMessage::Subscribe(DropSubscribe { drop }));
                }
            }
            DropMessage::Unsubscribe(m) => {
                if let Some(held) = self.drops.get_mut(&m.drop) {
                    held.subscribers.remove(&peer);
                }
            }
            DropMessage::Heads(m) => {
                let Some(held) = self.drops.get_mut(&m.drop) else {
                    return Ok(());
                };
                held.add_holder(peer, &self.linked);
                // A peer that tells its heads holds the drop: it gets this node's pushes.
                if held.subscribers.len() < DROP_SUBSCRIBERS_MAX {
                    held.subscribers.insert(peer);
                }
                let unknown: Vec<VersionId> = m
                    .heads
                    .into_iter()
                    .filter(|h| held.chain.get(h).is_none())
                    .collect();
                for version in unknown {
                    self.send(
                        peer,
                        DropMessage::GetVersion(DropGetVersion {
                            drop: m.drop,
                            version,
                        }),
                    );
                }
                // A holder is a source for a file list still missing.
                self.update_shown(m.drop, Some(peer));
            }
            DropMessage::GetVersion(m) => {
                let found = self
                    .drops
                    .get(&m.drop)
                    .and_then(|h| h.chain.get(&m.version))
                    .cloned();
                let answer = match found {
                    Some(manifest) => DropMessage::Version(Box::new(manifest)),
                    None => DropMessage::NotFound(DropNotFound {
                        drop: m.drop,
                        version: m.version,
                    }),
                };
                self.send(peer, answer);
            }
            DropMessage::Version(manifest) => {
                return self.offer(manifest.drop, Some(peer), *manifest);
            }
            DropMessage::GetFiles(m) => self.serve_files(peer, m),
            DropMessage::Files(m) => return self.on_files(peer, m),
            DropMessage::NotFound(m) => self.on_not_found(peer, m),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
