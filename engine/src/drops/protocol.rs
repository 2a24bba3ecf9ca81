//! Drops as a protocol the node hosts (family `0x05`, SPEC.md §24.6): subscriptions, pushed
//! versions, missing parents and file lists fetched and checked, the drop folder's gate set
//! to the chosen head's files, publishing, the drops' state blob, and the tracker on the
//! Chord ring (announcing held drops, looking up a subscription's holders).
//!
//! Timers (a [`TimerTable`]): `Sync` every [`DROP_SYNC_INTERVAL`] (heads to every link, a
//! stale file list asked of another holder, announcements that waited for a wall clock,
//! lookups of subscriptions that found nobody), and, on a ring member, `Announce` every
//! [`HOLDER_REANNOUNCE`] (every held drop announced again).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use weft_protocol::{
    Code, DropFile, DropFiles, DropGetFiles, DropGetVersion, DropHeads, DropId, DropManifest,
    DropMessage, DropNotFound, DropOwners, DropSubscribe, Family, FileEntry, FileKind, Frame,
    ManifestFields, Message, NodeId, PublicKey, RootHasher, Version, VersionId,
    DROP_FILES_BATCH_BYTES_MAX, DROP_FILES_BATCH_MAX, DROP_HEADS_MAX, HOLDER_REANNOUNCE,
};

use super::tracker::{self, Ask, DropTracker, Skip, Tracker};
use super::{
    check_paths, Chain, DropsCommand, DropsEvent, DropsEventKind, DropsMetrics, DropsRefusal,
    Offer, DROPS_MAX, DROPS_STATE_NAME, DROP_SUBSCRIBERS_MAX,
};
use crate::chord::{ChordError, ChordResult};
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
        }
    }

    /// Whether it is a subscription that still needs holders: not created here, no version
    /// yet, and no linked peer known to hold it.
    fn needs_holders(&self, linked: &BTreeSet<NodeId>) -> bool {
        self.created.is_none()
            && self.chain.is_empty()
            && !self.holders.iter().any(|h| linked.contains(h))
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
    outstanding: bool,
    dirty: bool,
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

    /// Whether this node is an owner of `held`'s current version (or created it and no
    /// version exists yet).
    fn is_owner(&self, held: &Held) -> bool {
        let me = self.identity.public_key();
        match held.chain.current() {
            Some((_, m)) => m.owners.contains(&me),
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
        let trusted = match (owner, held.chain.current()) {
            (true, Some((_, m))) => core::iter::once(m.owners.primary)
                .chain(m.owners.secondary.iter().copied())
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
        self.command(Command::Replicate(ReplicateCommand::Folder {
            folder: drop.folder_id(),
            command: ReplicaCommand::SetGate(gate),
        }));
    }

    /// Adds `drop`'s folder to replication, gated.
    fn add_folder(&mut self, drop: DropId) {
        let mut config = ReplicaConfig::new(drop.folder_id(), self.me);
        config.gate = Some(self.gate(&drop));
        self.command(Command::Replicate(ReplicateCommand::AddFolder(config)));
    }

    fn hold(&mut self, drop: DropId, created: Option<[u8; 16]>) -> Result<(), DropsRefusal> {
        if !self.persist.loaded {
            return Err(DropsRefusal::Loading);
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
        self.store();
        Ok(())
    }

    /// Publishes `files` (the drop folder's index) as a version after every head.
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        drop: DropId,
        secondary: Option<Vec<PublicKey>>,
        files: Option<Vec<DropFile>>,
    ) -> Result<(), DropsRefusal> {
        self.now = now;
        let result = self.publish_files(drop, secondary, files);
        self.announce_fresh(now, cx);
        result
    }

    fn publish_files(
        &mut self,
        drop: DropId,
        secondary: Option<Vec<PublicKey>>,
        files: Option<Vec<DropFile>>,
    ) -> Result<(), DropsRefusal> {
        if !self.persist.loaded {
            return Err(DropsRefusal::Loading);
        }
        let Some(held) = self.drops.get(&drop) else {
            return Err(DropsRefusal::UnknownDrop(drop));
        };
        if !self.is_owner(held) {
            return Err(DropsRefusal::NotAnOwner(drop));
        }
        let Some(mut files) = files else {
            return Err(DropsRefusal::NoFolder(drop));
        };
        let me = self.identity.public_key();
        let heads: Vec<&DropManifest> = held
            .chain
            .heads()
            .filter_map(|h| held.chain.get(h))
            .collect();
        let current = held.chain.current().map(|(_, m)| m.owners.clone());
        let mut owners = current.unwrap_or(DropOwners {
            primary: me,
            secondary: Vec::new(),
        });
        if let Some(mut secondary) = secondary {
            if owners.primary != me {
                return Err(DropsRefusal::NotPrimary(drop));
            }
            secondary.sort();
            secondary.dedup();
            secondary.retain(|k| *k != me);
            owners.secondary = secondary;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        check_paths(&files).map_err(|e| DropsRefusal::Invalid(drop, e))?;
        let mut hasher = RootHasher::new();
        hasher
            .push_batch(&files)
            .map_err(|e| DropsRefusal::Invalid(drop, e))?;
        let mut parents: Vec<VersionId> = heads.iter().map(|m| m.version_id()).collect();
        parents.sort();
        let counter = heads.iter().map(|m| m.counter).max().unwrap_or(0) + 1;
        let nonce = match (held.chain.current(), held.created) {
            (Some((_, m)), _) => m.nonce,
            (None, Some(nonce)) => nonce,
            // `is_owner` holds: a drop with no version was created here.
            (None, None) => return Err(DropsRefusal::NotAnOwner(drop)),
        };
        let fields = ManifestFields {
            drop,
            nonce,
            counter,
            parents,
            owners,
            root: hasher.root(),
            files: hasher.files(),
            bytes: hasher.bytes(),
        };
        let manifest = DropManifest::sign(fields, &self.secret_key);
        let version = manifest.version_id();
        if let Some(held) = self.drops.get_mut(&drop) {
            held.files.insert(version, files);
        }
        self.offer(drop, None, manifest)
            .map_err(|_| DropsRefusal::NotAnOwner(drop))
    }

    /// Judges a version from `peer` (`None`: this node's own): accepted versions are pushed
    /// to the subscribers, missing parents asked of the peer, a broken rule is the peer's
    /// fault.
    fn offer(
        &mut self,
        drop: DropId,
        peer: Option<NodeId>,
        manifest: DropManifest,
    ) -> Result<(), PeerFault> {
        let Some(held) = self.drops.get_mut(&drop) else {
            return Ok(());
        };
        if let Some(p) = peer {
            held.holders.insert(p);
        }
        let first = held.chain.is_empty();
        match held.chain.offer(manifest) {
            Offer::Accepted(ids) => {
                if first {
                    // A subscriber holds the drop from its first accepted version.
                    self.tracker.mark_due(drop);
                }
                let accepted: Vec<DropManifest> = ids
                    .iter()
                    .filter_map(|id| held.chain.get(id).cloned())
                    .collect();
                let subscribers: Vec<NodeId> = held
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|s| Some(*s) != peer)
                    .collect();
                self.metrics.versions_accepted += accepted.len() as u64;
                for m in &accepted {
                    self.event(
                        drop,
                        DropsEventKind::Accepted {
                            version: m.version_id(),
                            counter: m.counter,
                            signer: m.signer,
                        },
                    );
                }
                for s in subscribers {
                    for m in &accepted {
                        self.send(s, DropMessage::Version(Box::new(m.clone())));
                    }
                    let heads = self.heads_of(&drop);
                    self.send(s, DropMessage::Heads(heads));
                }
                self.update_shown(drop, peer);
                self.store();
                Ok(())
            }
            Offer::Known => {
                self.metrics.versions_known += 1;
                Ok(())
            }
            Offer::Waiting(missing) => {
                if let Some(p) = peer {
                    for version in missing {
                        self.send(p, DropMessage::GetVersion(DropGetVersion { drop, version }));
                    }
                }
                Ok(())
            }
            Offer::Refused(error) => {
                self.metrics.versions_refused += 1;
                let Some(p) = peer else {
                    return Err(PeerFault::Unexpected("own drop version refused"));
                };
                self.event(drop, DropsEventKind::Refused { peer: p, error });
                Err(PeerFault::Unexpected("a drop version that breaks a rule"))
            }
            Offer::HistoryFull => {
                self.event(drop, DropsEventKind::HistoryFull);
                Ok(())
            }
        }
    }

    /// DROP_HEADS for `drop`: its heads, at most [`DROP_HEADS_MAX`] (the highest counters).
    fn heads_of(&self, drop: &DropId) -> DropHeads {
        let mut heads: Vec<(u64, VersionId)> = self
            .drops
            .get(drop)
            .map(|h| {
                h.chain
                    .heads()
                    .filter_map(|id| h.chain.get(id).map(|m| (m.counter, *id)))
                    .collect()
            })
            .unwrap_or_default();
        heads.sort_by(|a, b| b.cmp(a));
        heads.truncate(DROP_HEADS_MAX);
        let mut heads: Vec<VersionId> = heads.into_iter().map(|(_, id)| id).collect();
        heads.sort();
        DropHeads { drop: *drop, heads }
    }

    /// Moves the folder to the current head once its file list is verified; asks for the
    /// list (of `prefer`, else another holder) when it is not.
    fn update_shown(&mut self, drop: DropId, prefer: Option<NodeId>) {
        let now = self.now;
        let linked = self.linked.clone();
        let Some(held) = self.drops.get_mut(&drop) else {
            return;
        };
        let Some((current, m)) = held.chain.current() else {
            return;
        };
        let counter = m.counter;
        // Lists of versions that are no longer heads are not kept.
        let heads: BTreeSet<VersionId> = held.chain.heads().copied().collect();
        held.files.retain(|v, _| heads.contains(v));
        if held.files.contains_key(&current) {
            held.assembly = None;
            if held.shown != Some(current) {
                held.shown = Some(current);
                let branches = heads.len();
                // A peer that asked for this list before it was held here (and heard
                // NOTFOUND) takes this node as a holder again and asks it now, not at its
                // next sync.
                let subscribers: Vec<NodeId> = held
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|s| linked.contains(s))
                    .collect();
                let heads_message = self.heads_of(&drop);
                for s in subscribers {
                    self.send(s, DropMessage::Heads(heads_message.clone()));
                }
                self.set_gate(drop);
                self.event(
                    drop,
                    DropsEventKind::Current {
                        version: current,
                        counter,
                        branches,
                    },
                );
                self.store();
            }
            return;
        }
        let fresh = |a: &Assembly| a.asked_at + DROP_SYNC_INTERVAL > now;
        if held
            .assembly
            .as_ref()
            .is_some_and(|a| a.version == current && fresh(a))
        {
            return;
        }
        // A stale assembly's peer is tried last.
        let stale = held.assembly.take().map(|a| a.peer);
        let peer = prefer
            .filter(|p| linked.contains(p) && Some(*p) != stale)
            .or_else(|| {
                held.holders
                    .iter()
                    .find(|h| linked.contains(h) && Some(**h) != stale)
                    .copied()
            })
            .or_else(|| stale.filter(|p| linked.contains(p)));
        let Some(peer) = peer else {
            held.assembly = None;
            return;
        };
        held.assembly = Some(Assembly {
            version: current,
            peer,
            asked_at: now,
            hasher: RootHasher::new(),
            files: Vec::new(),
        });
        self.send(
            peer,
            DropMessage::GetFiles(DropGetFiles {
                drop,
                version: current,
                from: 0,
            }),
        );
    }

    /// A batch of a file list from `peer`.
    fn on_files(&mut self, peer: NodeId, m: DropFiles) -> Result<(), PeerFault> {
        let drop = m.drop;
        let Some(held) = self.drops.get_mut(&drop) else {
            return Ok(());
        };
        let Some(a) = held.assembly.as_mut() else {
            return Ok(());
        };
        if a.peer != peer || a.version != m.version || a.files.len() != m.from as usize {
            return Ok(());
        }
        let Some(manifest) = held.chain.get(&a.version) else {
            held.assembly = None;
            return Ok(());
        };
        let total = manifest.files as usize;
        // §22.3's path rules first: a list with one path they refuse is refused whole.
        let result = if m.files.is_empty() && a.files.len() < total {
            Err(weft_protocol::DropError::RootMismatch)
        } else {
            check_paths(&m.files).and_then(|()| a.hasher.push_batch(&m.files))
        };
        if let Err(error) = result {
            held.assembly = None;
            held.holders.remove(&peer);
            self.metrics.file_lists_refused += 1;
            if matches!(error, weft_protocol::DropError::BadPath { .. }) {
                self.metrics.file_lists_bad_path += 1;
            }
            self.event(drop, DropsEventKind::FilesRefused { peer, error });
            return Err(PeerFault::Unexpected("a drop file list that breaks a rule"));
        }
        a.files.extend(m.files);
        if a.files.len() < total {
            let from = a.files.len() as u32;
            let version = a.version;
            self.send(
                peer,
                DropMessage::GetFiles(DropGetFiles {
                    drop,
                    version,
                    from,
                }),
            );
            return Ok(());
        }
        let Some(a) = held.assembly.take() else {
            return Ok(());
        };
        if let Err(error) = a.hasher.finish(manifest) {
            held.holders.remove(&peer);
            self.metrics.file_lists_refused += 1;
            self.event(drop, DropsEventKind::FilesRefused { peer, error });
            return Err(PeerFault::Unexpected("a drop file list that breaks a rule"));
        }
        held.files.insert(a.version, a.files);
        self.update_shown(drop, Some(peer));
        Ok(())
    }

    /// DROP_FILES for a held list, from `from`: as many files as fit a batch.
    fn serve_files(&mut self, peer: NodeId, m: DropGetFiles) {
        let files = self
            .drops
            .get(&m.drop)
            .and_then(|h| h.files.get(&m.version))
            .map(|list| {
                let mut batch = Vec::new();
                let mut bytes = 0;
                for f in list.iter().skip(m.from as usize) {
                    let len = f.encoded_len();
                    if batch.len() == DROP_FILES_BATCH_MAX
                        || (!batch.is_empty() && bytes + len > DROP_FILES_BATCH_BYTES_MAX)
                    {
                        break;
                    }
                    bytes += len;
                    batch.push(f.clone());
                }
                batch
            });
        let message = match files {
            Some(files) => DropMessage::Files(DropFiles {
                drop: m.drop,
                version: m.version,
                from: m.from,
                files,
            }),
            None => DropMessage::NotFound(DropNotFound {
                drop: m.drop,
                version: m.version,
            }),
        };
        self.send(peer, message);
    }

    /// The holder a file list was asked of lacks it: another is asked.
    fn on_not_found(&mut self, peer: NodeId, m: DropNotFound) {
        let Some(held) = self.drops.get_mut(&m.drop) else {
            return;
        };
        if held
            .assembly
            .as_ref()
            .is_some_and(|a| a.peer == peer && a.version == m.version)
        {
            held.assembly = None;
            held.holders.remove(&peer);
            self.update_shown(m.drop, None);
        }
    }

    // ----- the tracker ------------------------------------------------------------------

    /// Whether this node holds `held` for the tracker: it created it, or it accepted a
    /// version of it.
    fn holding(held: &Held) -> bool {
        held.created.is_some() || !held.chain.is_empty()
    }

    /// Announces every drop due (SPEC.md §24.6) with the key record, if this node can: it
    /// needs a wall clock (a record's expiry is calendar time) and an address peers can dial.
    /// A skip is counted; a drop then waits for the next sync if the wall clock is missing,
    /// and is dropped if the address is (it cannot come later).
    fn announce_due(&mut self, now: Instant, cx: &Context<'_>) {
        let due = self.tracker.take_due();
        if due.is_empty() {
            return;
        }
        let ready = match (
            tracker::announce_addr(cx.listen_addr()),
            cx.wall_clock_ms(now),
        ) {
            (Err(skip), _) => Err(skip),
            (Ok(_), None) => Err(Skip::NoWallClock),
            (Ok(addr), Some(wall_ms)) => Ok((addr.to_owned(), wall_ms)),
        };
        let (addr, wall_ms) = match ready {
            Ok(ready) => ready,
            Err(skip) => {
                self.metrics.tracker_announces_skipped += due.len() as u64;
                if skip == Skip::NoWallClock {
                    for drop in due {
                        self.tracker.retry(drop);
                    }
                }
                return;
            }
        };
        for drop in due {
            if !self.drops.get(&drop).is_some_and(Self::holding) {
                continue;
            }
            if self.tracker.asking(Ask::Announce(drop)) {
                self.tracker.retry(drop);
                continue;
            }
            let command = self.tracker.announce(drop, &self.identity, &addr, wall_ms);
            self.command(Command::Chord(command));
            self.metrics.tracker_announces += 1;
            if let Some(held) = self.drops.get_mut(&drop) {
                held.tracker.announces += 1;
            }
        }
        if let Some(command) = self.tracker.node_key(&self.identity) {
            self.command(Command::Chord(command));
        }
    }

    /// Asks the ring for `drop`'s holders, unless this node is off the ring or a lookup of it
    /// is under way.
    fn look_up(&mut self, drop: DropId) {
        if !self.tracker.ring() || self.tracker.asking(Ask::Lookup(drop)) {
            return;
        }
        let Some(held) = self.drops.get_mut(&drop) else {
            return;
        };
        held.tracker.lookups += 1;
        self.metrics.tracker_lookups += 1;
        let command = self.tracker.lookup(drop);
        self.command(Command::Chord(command));
    }

    /// The end of a Chord request the tracker made (routed back by the node, never an
    /// application event): a failed put is tried again at the next sync; a lookup's records
    /// are checked and up to [`super::DROP_HOLDERS_DIALED_MAX`] holders not linked dialed.
    pub(crate) fn handle_chord_answer(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        request: u64,
        result: Result<ChordResult, ChordError>,
    ) {
        self.now = now;
        let Some(ask) = self.tracker.answered(request) else {
            return;
        };
        match (ask, result) {
            (Ask::Announce(_) | Ask::NodeKey, Ok(_)) => {}
            (Ask::Announce(drop), Err(_)) => {
                self.metrics.tracker_puts_failed += 1;
                self.tracker.retry(drop);
            }
            (Ask::NodeKey, Err(_)) => {
                self.metrics.tracker_puts_failed += 1;
                self.tracker.node_key_failed();
            }
            (Ask::Lookup(drop), Ok(ChordResult::Get { values })) => {
                let wall_ms = cx.wall_clock_ms(now);
                let (valid, refused) = tracker::holders(&values, &drop, &self.me, wall_ms);
                self.metrics.tracker_records_refused += refused;
                let found = valid.len() as u64;
                let linked: BTreeSet<NodeId> = cx.links().map(|p| p.node).collect();
                let picked = tracker::pick(valid, &mut self.rng, |n| linked.contains(n));
                let dialed = picked.len() as u64;
                for r in picked {
                    self.outputs.push_back(ProtocolOutput::Dial {
                        node: r.holder,
                        addr: r.addr,
                    });
                }
                self.metrics.tracker_holders_dialed += dialed;
                if let Some(held) = self.drops.get_mut(&drop) {
                    held.tracker.holders_found += found;
                    held.tracker.holders_dialed += dialed;
                }
            }
            // A lookup that failed (or any other answer) is made again at the next sync
            // while the subscription still needs holders.
            (Ask::Lookup(_), _) => {}
        }
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
            .filter(|(_, h)| h.needs_holders(&self.linked))
            .map(|(d, _)| *d)
            .collect();
        for drop in needing {
            self.look_up(drop);
        }
        self.announce_due(now, cx);
    }

    /// The `Announce` timer: every held drop announced again.
    fn reannounce(&mut self, now: Instant, cx: &Context<'_>) {
        let holding: Vec<DropId> = self
            .drops
            .iter()
            .filter(|(_, h)| Self::holding(h))
            .map(|(d, _)| *d)
            .collect();
        for drop in holding {
            self.tracker.mark_due(drop);
        }
        self.announce_due(now, cx);
    }

    /// After a message or command: announces the drops this node just started holding.
    fn announce_fresh(&mut self, now: Instant, cx: &Context<'_>) {
        if self.tracker.fresh() {
            self.announce_due(now, cx);
        }
    }

    // ----- persistence ----------------------------------------------------------------

    /// Hands the drops to the host, unless a store is under way (then once it is done).
    fn store(&mut self) {
        if !self.persist.loaded {
            return;
        }
        if self.persist.outstanding {
            self.persist.dirty = true;
            return;
        }
        let stored: Vec<Stored> = self
            .drops
            .iter()
            .map(|(drop, h)| Stored {
                drop: *drop,
                created: h.created,
                versions: h.chain.versions().cloned().collect(),
                shown: h
                    .shown
                    .and_then(|v| h.files.get(&v).map(|list| (v, list.clone()))),
            })
            .collect();
        // Ids, integers, strings and sequences: nothing here can fail to encode.
        let bytes = postcard::to_allocvec(&(STATE_FORMAT, stored)).expect("the drops encode");
        self.persist.outstanding = true;
        self.persist.dirty = false;
        self.outputs.push_back(ProtocolOutput::Request {
            token: STORE,
            request: HostRequest::StoreState {
                name: DROPS_STATE_NAME.into(),
                bytes: Bytes::from(bytes),
            },
        });
    }

    /// The stored drops, back: each chain rebuilt (every version checked again, parents
    /// first), its folder added with the gate of the version it showed.
    fn restore(&mut self, blob: &[u8]) {
        let Ok((format, stored)) = postcard::from_bytes::<(u32, Vec<Stored>)>(blob) else {
            self.metrics.state_failures += 1;
            return;
        };
        if format != STATE_FORMAT {
            self.metrics.state_failures += 1;
            return;
        }
        for s in stored.into_iter().take(DROPS_MAX) {
            let mut chain = Chain::new(s.drop);
            let mut versions = s.versions;
            versions.sort_by_key(|m| m.counter);
            for m in versions {
                let _ = chain.offer(m);
            }
            let mut files = BTreeMap::new();
            let mut shown = None;
            if let Some((v, list)) = s.shown {
                if chain.get(&v).is_some() {
                    files.insert(v, list);
                    shown = Some(v);
                }
            }
            let mut held = Held::new(s.drop, s.created);
            held.chain = chain;
            held.files = files;
            held.shown = shown;
            if s.created.is_some() || !held.chain.is_empty() {
                // Held across the restart: announced again at once.
                self.tracker.mark_due(s.drop);
            }
            self.drops.insert(s.drop, held);
            self.add_folder(s.drop);
            self.update_shown(s.drop, None);
        }
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
                held.holders.insert(peer);
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
                held.holders.insert(peer);
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

    /// The host finished a request: the stored drops loaded, or a store done.
    fn on_completed(&mut self, token: u64, result: HostResult) {
        match (token, result) {
            (LOAD, result) => {
                self.persist.loaded = true;
                match result {
                    HostResult::Loaded(Some(blob)) => self.restore(&blob),
                    HostResult::Loaded(None) => {}
                    _ => self.metrics.state_failures += 1,
                }
            }
            (STORE, result) => {
                self.persist.outstanding = false;
                // A failed store is tried again with the next change, not at once (a host
                // that fails every store would be asked without end).
                if !matches!(result, HostResult::Stored) {
                    self.metrics.state_failures += 1;
                } else if self.persist.dirty {
                    self.store();
                }
            }
            _ => self.metrics.state_failures += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::{ChordCommand, ChordItem, ChordRequest};
    use crate::session::Session;
    use bytes::Bytes;
    use weft_protocol::{
        holders_key, node_key_key, DropError, HolderRecord, PathRefusal, Signature, HOLDER_LIFETIME,
    };

    const WALL_MS: u64 = 1_800_000_000_000;
    const OWNER: [u8; 32] = [0x0a; 32];
    const NONCE: [u8; 16] = [3; 16];

    /// A drops protocol over a session that holds no link: `wall`, its wall clock if any;
    /// `addr`, its listen address. Its stored drops are loaded (none).
    struct Harness {
        session: Session,
        drops: DropsProtocol,
        now: Instant,
    }

    impl Harness {
        fn new(wall: Option<u64>, addr: &str) -> Harness {
            let mut config = Config::from_seed("test-net", 1);
            config.listen_addr = Some(addr.into());
            let me = Identity::from_secret(&config.secret_key).node_id();
            let mut session = Session::new(&config, 0, [0; 32]);
            let now = Instant(1_000_000_000);
            if let Some(w) = wall {
                session.set_wall_clock(w, now);
            }
            let drops = DropsProtocol::new(&config, me, [1; 32], true);
            let mut h = Harness {
                session,
                drops,
                now,
            };
            let cx = Context {
                session: &h.session,
            };
            h.drops.handle_timeout(now, &cx);
            h.drops
                .handle_completed(now, &cx, LOAD, HostResult::Loaded(None));
            h.outputs();
            h
        }

        fn outputs(&mut self) -> Vec<ProtocolOutput<DropsEvent>> {
            core::iter::from_fn(|| self.drops.poll_output()).collect()
        }

        fn command(&mut self, command: DropsCommand) {
            let cx = Context {
                session: &self.session,
            };
            self.drops
                .handle_command(self.now, &cx, command)
                .expect("a command drops take");
        }

        fn answer(&mut self, request: u64, result: Result<ChordResult, ChordError>) {
            let cx = Context {
                session: &self.session,
            };
            self.drops
                .handle_chord_answer(self.now, &cx, request, result);
        }

        fn advance(&mut self, by: Duration) {
            self.now = self.now + by;
            let cx = Context {
                session: &self.session,
            };
            self.drops.handle_timeout(self.now, &cx);
        }

        fn message(&mut self, from: &Peer, message: DropMessage) -> Result<(), PeerFault> {
            let message = Message::Drop(message);
            let frame = Frame::build(message.code(), &message.encode_payload(), false);
            let cx = Context {
                session: &self.session,
            };
            self.drops.handle_message(self.now, &cx, from, frame)
        }

        fn link(&mut self, peer: &Peer) {
            let cx = Context {
                session: &self.session,
            };
            let up = LinkNotice::Up {
                peer,
                replaced: false,
            };
            self.drops.handle_link(self.now, &cx, up);
        }
    }

    /// The Chord requests among `outputs`.
    fn chord_commands(outputs: &[ProtocolOutput<DropsEvent>]) -> Vec<ChordCommand> {
        outputs
            .iter()
            .filter_map(|o| match o {
                ProtocolOutput::Command(Command::Chord(c)) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn dials(outputs: &[ProtocolOutput<DropsEvent>]) -> Vec<(NodeId, String)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                ProtocolOutput::Dial { node, addr } => Some((*node, addr.clone())),
                _ => None,
            })
            .collect()
    }

    fn owner_drop() -> DropId {
        DropId::derive(&Identity::from_secret(&OWNER).public_key(), &NONCE)
    }

    fn record(signer: &Identity, drop: DropId, expires: u64) -> HolderRecord {
        HolderRecord::sign(
            drop.0,
            &signer.public_key(),
            format!("addr-{}", signer.node_id()),
            expires,
            |m| signer.sign(m),
        )
    }

    fn item(writer: &Identity, r: &HolderRecord) -> ChordItem {
        ChordItem {
            writer: writer.public_key(),
            value: Bytes::from(r.encode()),
        }
    }

    #[test]
    fn a_created_drop_is_announced_with_the_key_record_and_again_every_reannounce() {
        let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
        h.command(DropsCommand::Create);
        let out = h.outputs();
        let puts = chord_commands(&out);
        assert_eq!(puts.len(), 2, "{puts:?}");
        let ChordRequest::Put {
            key,
            value,
            lifetime_ms,
        } = &puts[0].op
        else {
            panic!("{puts:?}");
        };
        let drop = *h.drops.drop_ids().next().expect("a drop");
        assert_eq!(*key, holders_key(&drop.0));
        assert_eq!(*lifetime_ms, Some(HOLDER_LIFETIME.as_millis() as u64));
        let r = HolderRecord::decode(value).expect("a holder record");
        let me = h.drops.identity.clone();
        assert!(r.verify(&me.public_key()));
        assert_eq!(r.addr, "192.0.2.7:7000");
        assert_eq!(r.expires_unix_ms, WALL_MS + 300_000);
        assert!(matches!(
            &puts[1].op,
            ChordRequest::Put { key, value, .. }
                if *key == node_key_key(&me.node_id()) && value[..] == me.public_key().0[..]
        ));
        for p in &puts {
            h.answer(
                p.request,
                Ok(ChordResult::Put {
                    replicas: 5,
                    nodes: 3,
                    of: 3,
                }),
            );
        }
        // Nothing more until the re-announcement, 150 s on.
        h.advance(DROP_SYNC_INTERVAL);
        assert!(chord_commands(&h.outputs()).is_empty());
        h.advance(REANNOUNCE);
        assert_eq!(chord_commands(&h.outputs()).len(), 2);
        assert_eq!(h.drops.metrics().tracker_announces, 2);
        assert_eq!(h.drops.tracker_of(&drop).map(|t| t.announces), Some(2));
    }

    #[test]
    fn no_announcement_without_a_wall_clock_or_a_dialable_address() {
        let mut h = Harness::new(None, "192.0.2.7:7000");
        h.command(DropsCommand::Create);
        assert!(chord_commands(&h.outputs()).is_empty());
        assert_eq!(h.drops.metrics().tracker_announces_skipped, 1);
        // The wall clock comes: the next sync announces.
        h.session.set_wall_clock(WALL_MS, h.now);
        h.advance(DROP_SYNC_INTERVAL);
        assert_eq!(chord_commands(&h.outputs()).len(), 2);
        assert_eq!(h.drops.metrics().tracker_announces, 1);

        let mut h = Harness::new(Some(WALL_MS), "0.0.0.0:7000");
        h.command(DropsCommand::Create);
        h.advance(DROP_SYNC_INTERVAL);
        assert!(chord_commands(&h.outputs()).is_empty());
        assert_eq!(
            h.drops.metrics().tracker_announces_skipped,
            1,
            "not retried"
        );
    }

    #[test]
    fn a_lookup_dials_valid_holders_only_and_is_made_again_while_none_is_linked() {
        let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
        let drop = owner_drop();
        h.command(DropsCommand::Subscribe { drop });
        let gets = chord_commands(&h.outputs());
        assert_eq!(gets.len(), 1);
        assert_eq!(
            gets[0].op,
            ChordRequest::Get {
                key: holders_key(&drop.0)
            }
        );
        let a = Identity::from_secret(&[0x21; 32]);
        let b = Identity::from_secret(&[0x22; 32]);
        let later = WALL_MS + 200_000;
        let good = record(&a, drop, later);
        let mut forged = record(&b, drop, later);
        forged.signature = Signature([1; 64]);
        let values = vec![
            item(&a, &good),
            item(&b, &forged),
            // a's record put by b.
            item(&b, &good),
            item(&b, &record(&b, drop, WALL_MS - 1)),
            item(&b, &record(&b, DropId([9; 32]), later)),
        ];
        h.answer(gets[0].request, Ok(ChordResult::Get { values }));
        let out = h.outputs();
        assert_eq!(dials(&out), vec![(a.node_id(), good.addr.clone())]);
        let m = h.drops.metrics();
        assert_eq!(
            (m.tracker_records_refused, m.tracker_holders_dialed),
            (4, 1)
        );
        assert_eq!(
            h.drops.tracker_of(&drop),
            Some(DropTracker {
                announces: 0,
                lookups: 1,
                holders_found: 1,
                holders_dialed: 1,
            })
        );
        // No version and no holder linked: the next sync looks again; the answer's end is
        // awaited first (one lookup per drop at a time).
        h.advance(DROP_SYNC_INTERVAL);
        let again = chord_commands(&h.outputs());
        assert_eq!(again.len(), 1);
        h.advance(DROP_SYNC_INTERVAL);
        assert!(chord_commands(&h.outputs()).is_empty(), "one at a time");
        h.answer(again[0].request, Err(ChordError::Timeout));
        h.advance(DROP_SYNC_INTERVAL);
        assert_eq!(chord_commands(&h.outputs()).len(), 1);
    }

    /// A version of the owner's drop listing `files`, signed by the owner.
    fn version_of(files: &[DropFile]) -> DropManifest {
        let owner = Identity::from_secret(&OWNER);
        let mut hasher = RootHasher::new();
        hasher.push_batch(files).expect("in order");
        let fields = ManifestFields {
            drop: owner_drop(),
            nonce: NONCE,
            counter: 1,
            parents: Vec::new(),
            owners: DropOwners {
                primary: owner.public_key(),
                secondary: Vec::new(),
            },
            root: hasher.root(),
            files: hasher.files(),
            bytes: hasher.bytes(),
        };
        DropManifest::sign(fields, &OWNER)
    }

    fn file(path: &str, kind: FileKind, target: Option<&str>) -> DropFile {
        DropFile {
            path: path.into(),
            kind,
            mode: 6,
            size: 0,
            target: target.map(str::to_owned),
            blocks: Vec::new(),
        }
    }

    #[test]
    fn a_file_list_with_a_path_the_replication_rules_refuse_is_refused_whole() {
        let cases = [
            (
                vec![file("../escape", FileKind::File, None)],
                PathRefusal::DotComponent,
            ),
            (
                vec![file("/etc/passwd", FileKind::File, None)],
                PathRefusal::NotRelative,
            ),
            (
                vec![
                    file(".weft/marker", FileKind::File, None),
                    file("ok", FileKind::File, None),
                ],
                PathRefusal::Reserved,
            ),
            (
                vec![file("a/link", FileKind::Symlink, Some("../../out"))],
                PathRefusal::SymlinkEscapes,
            ),
        ];
        let owner = Identity::from_secret(&OWNER);
        let peer = Peer {
            node: owner.node_id(),
            incarnation: 1,
            listen_addr: None,
            families: u32::MAX,
            dialer_nonce: [0; 32],
            public_key: owner.public_key(),
        };
        for (files, refusal) in cases {
            let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
            let drop = owner_drop();
            h.command(DropsCommand::Subscribe { drop });
            h.link(&peer);
            let v = version_of(&files);
            let version = v.version_id();
            h.message(&peer, DropMessage::Version(Box::new(v)))
                .expect("a valid version");
            let out = h.outputs();
            assert!(out.iter().any(|o| matches!(
                o,
                ProtocolOutput::Send { message, .. } if message.code == Code::DROP_GET_FILES
            )));
            let files = DropFiles {
                drop,
                version,
                from: 0,
                files,
            };
            let fault = h.message(&peer, DropMessage::Files(files));
            assert!(fault.is_err(), "{refusal:?}");
            let refused = h.outputs().into_iter().find_map(|o| match o {
                ProtocolOutput::Event(DropsEvent {
                    kind: DropsEventKind::FilesRefused { error, .. },
                    ..
                }) => Some(error),
                _ => None,
            });
            assert!(
                matches!(refused, Some(DropError::BadPath { refusal: r, .. }) if r == refusal),
                "{refused:?}"
            );
            assert_eq!(h.drops.shown(&drop), None);
            let m = h.drops.metrics();
            assert_eq!((m.file_lists_refused, m.file_lists_bad_path), (1, 1));
        }
    }

    #[test]
    fn an_owner_cannot_publish_a_list_with_a_refused_path() {
        let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
        h.command(DropsCommand::Create);
        let drop = *h.drops.drop_ids().next().expect("a drop");
        let cx = Context {
            session: &h.session,
        };
        let files = vec![file("../x", FileKind::File, None)];
        let refused = h.drops.publish(h.now, &cx, drop, None, Some(files));
        assert!(matches!(
            refused,
            Err(DropsRefusal::Invalid(_, DropError::BadPath { .. }))
        ));
    }

    /// A peer that asked for a file list before this node held it (and heard NOTFOUND) hears
    /// this node's heads as soon as the folder shows that version, and so asks it again at
    /// once: along a chain of subscribers, each hop no longer waits for a sync to learn the
    /// list is there (a 3,000-seed drops sweep missed its liveness deadline this way).
    #[test]
    fn a_node_that_now_shows_a_version_tells_its_subscribers_its_heads() {
        let owner = Identity::from_secret(&OWNER);
        let peer_of = |id: &Identity| Peer {
            node: id.node_id(),
            incarnation: 1,
            listen_addr: None,
            families: u32::MAX,
            dialer_nonce: [0; 32],
            public_key: id.public_key(),
        };
        let other = Identity::from_secret(&[0x0b; 32]);
        let (owner_peer, other_peer) = (peer_of(&owner), peer_of(&other));
        let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
        let drop = owner_drop();
        h.command(DropsCommand::Subscribe { drop });
        h.link(&owner_peer);
        h.link(&other_peer);
        h.message(&other_peer, DropMessage::Subscribe(DropSubscribe { drop }))
            .expect("a subscribe");
        let files = vec![file("a", FileKind::File, None)];
        let v = version_of(&files);
        let version = v.version_id();
        h.message(&owner_peer, DropMessage::Version(Box::new(v)))
            .expect("a valid version");
        let get = DropGetFiles {
            drop,
            version,
            from: 0,
        };
        h.message(&other_peer, DropMessage::GetFiles(get))
            .expect("an ask");
        let to_other = |out: &[ProtocolOutput<DropsEvent>], code: Code| {
            out.iter()
                .filter(|o| {
                    matches!(o, ProtocolOutput::Send { to: Recipients::Peer(n), message, .. }
                        if *n == other.node_id() && message.code == code)
                })
                .count()
        };
        let out = h.outputs();
        assert_eq!(to_other(&out, Code::DROP_NOTFOUND), 1, "no list yet");
        let batch = DropFiles {
            drop,
            version,
            from: 0,
            files,
        };
        h.message(&owner_peer, DropMessage::Files(batch))
            .expect("a valid list");
        assert_eq!(h.drops.shown(&drop), Some(version));
        let out = h.outputs();
        assert_eq!(to_other(&out, Code::DROP_HEADS), 1, "the heads, at once");
    }
}
