//! Folder replication as a protocol the node hosts: one [`Replica`] per folder the application
//! adds, its messages carried by peer id, its storage steps turned into host requests, and its
//! bulk data (HEREIS) and index batches held per peer until the peer's connection has room
//! (SPEC.md §22).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_protocol::{
    Code, Family, FolderId, Frame, List, Message, NodeId, ReplicaMessage, HEADER_BYTES,
};

use super::{
    Lane, Recipient, Replica, ReplicaCommand, ReplicaConfig, ReplicaEvent, ReplicaFault,
    ReplicaOutput, ReplicaRefusal, StorageError, StorageRequest, StorageResult,
};
use crate::config::Config;
use crate::io::{HostRequest, HostResult};
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::sending::BULK_FRAME_BYTES_MAX;
use crate::session::Peer;
use crate::time::Instant;

/// Most folders one node replicates.
pub const FOLDERS_MAX: usize = 64;

/// Most bulk bytes (HEREIS) held for one peer waiting for room; a folder serves no more to a
/// peer that is this far behind (SPEC.md §22).
pub const BULK_QUEUE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// LISTs kept per peer for folders this node does not hold (SPEC.md §22.3): a newer one for
/// the same folder replaces the older, and past this the oldest goes.
pub const LISTS_KEPT_PER_PEER_MAX: usize = 16;

/// What the application asks of folder replication.
#[derive(Debug, Clone)]
pub enum ReplicateCommand {
    /// Start replicating a folder (`config.me` is set to this node's id). Its state is
    /// loaded first; links are asked for their index once it is.
    AddFolder(ReplicaConfig),
    /// Stop replicating a folder (a remote run's, once the run has ended). A change to its
    /// state not yet persisted is persisted first, so a later `AddFolder` resumes from it;
    /// answers to its storage steps still out are ignored.
    RemoveFolder(FolderId),
    /// The host's scanner found a change in `folder`.
    Local {
        /// The folder.
        folder: FolderId,
        /// The change.
        change: super::LocalChange,
    },
    /// A command for one folder.
    Folder {
        /// The folder.
        folder: FolderId,
        /// The command.
        command: ReplicaCommand,
    },
}

/// Why folder replication refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicateRefusal {
    /// No such folder was added.
    #[error("no folder {0}")]
    UnknownFolder(FolderId),
    /// The folder was added already.
    #[error("folder {0} is replicated already")]
    FolderExists(FolderId),
    /// [`FOLDERS_MAX`] folders are replicated already.
    #[error("too many folders")]
    TooManyFolders,
    /// The folder refused it.
    #[error(transparent)]
    Folder(#[from] ReplicaRefusal),
}

/// Something about one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateEvent {
    /// The folder.
    pub folder: FolderId,
    /// What happened.
    pub event: ReplicaEvent,
}

/// One peer's index batches waiting for room to go out, and whose turn it is.
#[derive(Debug, Default)]
struct IndexLane {
    /// The batches, in the order the folders sent them. While any waits, every folder holds
    /// its next batches to the peer (`Replica::hold_index`): at most
    /// `ANNOUNCE_BATCHES_PER_PUMP` per folder wait here.
    frames: VecDeque<Outgoing>,
    /// The next bulk frame is an index batch if one waits (index batches and blocks take
    /// turns while both wait).
    turn: bool,
}

/// How a host request maps back to its folder's storage step.
#[derive(Debug, Clone, Copy)]
struct Pending {
    folder: FolderId,
    token: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ReplicateProtocol {
    seed: [u8; 32],
    folders: BTreeMap<FolderId, Box<Replica>>,
    /// Folders whose state was loaded and whose links were told (`handle_link_up`).
    started: BTreeMap<FolderId, bool>,
    /// HEREIS messages waiting for their peer's room, and their bytes.
    bulk: BTreeMap<NodeId, (VecDeque<Outgoing>, usize)>,
    /// Index batches waiting for their peer's room.
    index: BTreeMap<NodeId, IndexLane>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    outputs: VecDeque<ProtocolOutput<ReplicateEvent>>,
    /// LISTs linked peers sent for folders this node does not hold (or held, and removed:
    /// the listeners it had), taken by the folder when it is added; a peer's go with its link.
    kept_lists: BTreeMap<NodeId, VecDeque<List>>,
}

impl ReplicateProtocol {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        ReplicateProtocol {
            seed,
            folders: BTreeMap::new(),
            started: BTreeMap::new(),
            bulk: BTreeMap::new(),
            index: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_token: 0,
            outputs: VecDeque::new(),
            kept_lists: BTreeMap::new(),
        }
    }

    /// Keeps `list` from `peer` for a folder this node does not hold.
    fn keep_list(&mut self, peer: NodeId, list: List) {
        let kept = self.kept_lists.entry(peer).or_default();
        kept.retain(|l| l.folder != list.folder);
        if kept.len() == LISTS_KEPT_PER_PEER_MAX {
            kept.pop_front();
        }
        kept.push_back(list);
    }

    /// The LISTs kept from `peer` for `folder`, taken.
    fn take_lists(&mut self, peer: &NodeId, folder: &FolderId) -> Vec<List> {
        let Some(kept) = self.kept_lists.get_mut(peer) else {
            return Vec::new();
        };
        let (taken, rest): (VecDeque<List>, VecDeque<List>) =
            kept.drain(..).partition(|l| l.folder == *folder);
        *kept = rest;
        if kept.is_empty() {
            self.kept_lists.remove(peer);
        }
        taken.into()
    }

    /// The folder `folder`'s machine, if it was added.
    pub(crate) fn folder(&self, folder: &FolderId) -> Option<&Replica> {
        self.folders.get(folder).map(|r| &**r)
    }

    /// Drains every folder's outputs; a folder whose state just loaded asks its links.
    fn pump(&mut self, now: Instant, cx: &Context<'_>) {
        let ids: Vec<FolderId> = self.folders.keys().copied().collect();
        for id in ids {
            self.pump_folder(now, cx, id);
        }
    }

    fn pump_folder(&mut self, now: Instant, cx: &Context<'_>, id: FolderId) {
        loop {
            let Some(replica) = self.folders.get_mut(&id) else {
                return;
            };
            if replica.is_ready() && !self.started.get(&id).copied().unwrap_or(false) {
                self.started.insert(id, true);
                let peers: Vec<NodeId> = cx
                    .links()
                    .map(|p| p.node)
                    .filter(|node| replicates_with(replica, node))
                    .collect();
                for peer in peers {
                    // A LIST the peer sent before this node held the folder is answered now.
                    let lists = self.take_lists(&peer, &id);
                    let Some(replica) = self.folders.get_mut(&id) else {
                        return;
                    };
                    replica.handle_link_up(now, peer);
                    for list in lists {
                        // A LIST is never a fault.
                        let _ = replica.handle_message(
                            now,
                            peer,
                            ReplicaMessage::List(list),
                            &Bytes::new(),
                        );
                    }
                }
                continue;
            }
            let Some(out) = replica.poll_output() else {
                return;
            };
            match out {
                ReplicaOutput::Send {
                    to: Recipient::Peer(node),
                    code,
                    payload,
                    lane: Lane::Index,
                } => {
                    replica.hold_index(node, true);
                    let lane = self.index.entry(node).or_default();
                    lane.frames.push_back(Outgoing::encoded(code, payload));
                    self.release_bulk(cx, node);
                }
                ReplicaOutput::Send {
                    to,
                    code,
                    payload,
                    lane,
                } => self.send(cx, to, code, payload, lane == Lane::Bulk),
                ReplicaOutput::Request { token, request } => {
                    let state_name = replica.config().state_name.clone();
                    self.request(id, token, state_name, request);
                }
                ReplicaOutput::Event(event) => {
                    self.outputs
                        .push_back(ProtocolOutput::Event(ReplicateEvent { folder: id, event }));
                }
            }
        }
    }

    fn send(&mut self, cx: &Context<'_>, to: Recipient, code: Code, payload: Bytes, bulk: bool) {
        let message = Outgoing::encoded(code, payload);
        match (to, bulk) {
            (Recipient::Peer(node), true) => {
                let (queue, bytes) = self.bulk.entry(node).or_default();
                let len = HEADER_BYTES + message.payload.len();
                if *bytes + len > BULK_QUEUE_BYTES_MAX {
                    // The requester times the block out and asks elsewhere (SPEC.md §22).
                    return;
                }
                *bytes += len;
                queue.push_back(message);
                self.release_bulk(cx, node);
            }
            (Recipient::Peer(node), false) => self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Peer(node),
                message,
                class: Class::Control,
            }),
            (Recipient::Links, _) => self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Links { except: None },
                message,
                class: Class::Control,
            }),
        }
    }

    /// Hands `node`'s held bulk messages (blocks and index batches, taking turns) to the
    /// session while its connection has room; once no index batch waits, the folders send
    /// their next ones. Returns whether no block waits.
    fn release_bulk(&mut self, cx: &Context<'_>, node: NodeId) -> bool {
        // The session takes one bulk frame at a time, and `has_room` cannot see a frame
        // still in this protocol's outputs (not yet handed to the session): one at a time,
        // the next on `Room`. More would be refused by the session and lost.
        let mut handed = self.outputs.iter().any(|o| {
            matches!(o, ProtocolOutput::Send {
                to: Recipients::Peer(n),
                class: Class::Bulk,
                ..
            } if *n == node)
        });
        let index_waited = self.index.contains_key(&node);
        while !handed && cx.has_room(&node, Family::Replication) {
            let blocks_wait = self.bulk.get(&node).is_some_and(|(q, _)| !q.is_empty());
            let index_next = self
                .index
                .get(&node)
                .is_some_and(|l| !l.frames.is_empty() && (l.turn || !blocks_wait));
            let message = if index_next {
                let Some(m) = self.index.get_mut(&node).and_then(|l| {
                    l.turn = false;
                    l.frames.pop_front()
                }) else {
                    break;
                };
                m
            } else {
                let Some((queue, bytes)) = self.bulk.get_mut(&node) else {
                    break;
                };
                let Some(m) = queue.pop_front() else {
                    break;
                };
                *bytes -= HEADER_BYTES + m.payload.len();
                if let Some(l) = self.index.get_mut(&node) {
                    l.turn = true;
                }
                m
            };
            // An index batch of one entry too long for a bulk frame (a file of more than
            // about 5,000 blocks) goes as a control frame, and the next follows at once.
            let class = if HEADER_BYTES + message.payload.len() <= BULK_FRAME_BYTES_MAX {
                Class::Bulk
            } else {
                Class::Control
            };
            handed = class == Class::Bulk;
            self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Peer(node),
                message,
                class,
            });
        }
        if index_waited && self.index.get(&node).is_none_or(|l| l.frames.is_empty()) {
            self.index.remove(&node);
            for replica in self.folders.values_mut() {
                replica.hold_index(node, false);
            }
        }
        if self.bulk.get(&node).is_some_and(|(q, _)| q.is_empty()) {
            self.bulk.remove(&node);
        }
        !self.bulk.contains_key(&node)
    }

    fn request(&mut self, folder: FolderId, token: u64, state_name: String, step: StorageRequest) {
        let request = match step {
            StorageRequest::LoadState => HostRequest::LoadState { name: state_name },
            StorageRequest::PersistState { bytes } => HostRequest::StoreState {
                name: state_name,
                bytes,
            },
            request => HostRequest::Storage { folder, request },
        };
        self.next_token += 1;
        self.pending
            .insert(self.next_token, Pending { folder, token });
        self.outputs.push_back(ProtocolOutput::Request {
            token: self.next_token,
            request,
        });
    }
}

/// Whether `replica` replicates with `peer` (`ReplicaConfig::only_with`).
fn replicates_with(replica: &Replica, peer: &NodeId) -> bool {
    replica
        .config()
        .only_with
        .as_ref()
        .is_none_or(|peers| peers.contains(peer))
}

/// A host's answer as the folder's storage result.
fn storage_result(result: HostResult) -> StorageResult {
    match result {
        HostResult::Loaded(bytes) => StorageResult::Loaded(bytes),
        HostResult::Stored => StorageResult::Done,
        HostResult::Storage(result) => result,
        HostResult::Failed(why) => StorageResult::Failed(StorageError::Io(why)),
        HostResult::Process(other) => StorageResult::Failed(StorageError::Io(format!(
            "a process answer to a storage step: {other:?}"
        ))),
    }
}

impl From<ReplicaFault> for PeerFault {
    fn from(f: ReplicaFault) -> PeerFault {
        match f {
            ReplicaFault::CorruptBlocks => PeerFault::CorruptBlocks,
            ReplicaFault::Unexpected(what) => PeerFault::Unexpected(what),
        }
    }
}

impl Protocol for ReplicateProtocol {
    type Event = ReplicateEvent;
    type Command = ReplicateCommand;
    type Refusal = ReplicateRefusal;

    const FAMILY: Family = Family::Replication;

    fn owns(code: Code) -> bool {
        code.family() == Some(Family::Replication) && code.is_known()
    }

    fn handle_link(&mut self, now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>) {
        match notice {
            LinkNotice::Up { peer, .. } => {
                for (id, replica) in &mut self.folders {
                    let started = self.started.get(id).copied().unwrap_or(false);
                    if started && replicates_with(replica, &peer.node) {
                        replica.handle_link_up(now, peer.node);
                    }
                }
                // A new link that replaced one (no `Down` came) has an empty bulk lane: what
                // waited for the old one's room goes on it (no `Room` would ever come).
                if self.release_bulk(cx, peer.node) {
                    for replica in self.folders.values_mut() {
                        replica.handle_room(now, peer.node);
                    }
                }
            }
            LinkNotice::Down { node, .. } => {
                self.bulk.remove(&node);
                self.index.remove(&node);
                self.kept_lists.remove(&node);
                for replica in self.folders.values_mut() {
                    replica.handle_link_down(now, node);
                }
            }
            LinkNotice::Room { node } => {
                if self.release_bulk(cx, node) {
                    for replica in self.folders.values_mut() {
                        replica.handle_room(now, node);
                    }
                }
            }
        }
        self.pump(now, cx);
    }

    fn handle_shutdown(&mut self, now: Instant, cx: &Context<'_>) {
        for replica in self.folders.values_mut() {
            replica.persist_now(now);
        }
        self.pump(now, cx);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        // Replication runs over links alone: a peer on a dedicated connection (which this
        // implementation never opens for it) gets nothing, and leaves nothing behind (the
        // state kept of a peer is let go when its link goes down, and such a peer has none).
        if !cx.is_linked(&from.node) {
            return Ok(());
        }
        let payload = frame.payload()?;
        let Message::Replica(message) = Message::decode(frame.code(), &payload)? else {
            return Err(PeerFault::Unexpected("not a replication message"));
        };
        let folder = message.folder();
        // A folder this node does not hold: the peer's business, not a fault. Its LIST is
        // kept, for the folder may be added while the link lasts (a remote run's).
        let Some(replica) = self.folders.get_mut(&folder) else {
            if let ReplicaMessage::List(list) = message {
                self.keep_list(from.node, list);
            }
            return Ok(());
        };
        // A folder kept with other peers alone (a remote run's): ignored, like one not held.
        if !replicates_with(replica, &from.node) {
            return Ok(());
        }
        // A peer whose blocks already waiting for room reach half the bound is not served
        // more: each IWANT would have the blocks read and hashed for a queue that drops them
        // (a peer that stops reading and asks again and again made the node read and hash
        // 64 MiB per 150-byte ask).
        let behind = self
            .bulk
            .get(&from.node)
            .is_some_and(|(_, bytes)| *bytes >= BULK_QUEUE_BYTES_MAX / 2);
        if behind && matches!(message, ReplicaMessage::IWant(_)) {
            replica.count_want_behind();
            return Ok(());
        }
        let result = replica.handle_message(now, from.node, message, &payload);
        self.pump_folder(now, cx, folder);
        result.map_err(PeerFault::from)
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: ReplicateCommand,
    ) -> Result<(), ReplicateRefusal> {
        let folder = match command {
            ReplicateCommand::AddFolder(mut config) => {
                let folder = config.folder;
                if self.folders.contains_key(&folder) {
                    return Err(ReplicateRefusal::FolderExists(folder));
                }
                if self.folders.len() >= FOLDERS_MAX {
                    return Err(ReplicateRefusal::TooManyFolders);
                }
                config.me = cx.me();
                let mut seed = blake3::Hasher::new_derive_key("weft replica seed v1");
                seed.update(&self.seed);
                seed.update(&folder.0);
                let seed = *seed.finalize().as_bytes();
                let mut replica = Replica::new(config, seed);
                replica.set_incarnation(cx.incarnation());
                self.folders.insert(folder, Box::new(replica));
                self.started.insert(folder, false);
                folder
            }
            ReplicateCommand::RemoveFolder(folder) => {
                let replica = self
                    .folders
                    .get_mut(&folder)
                    .ok_or(ReplicateRefusal::UnknownFolder(folder))?;
                replica.persist_final(now);
                // Its listeners are kept as LISTs: added again, it tells them what changed.
                let index_id = replica.index_id();
                for (peer, since) in replica.listeners() {
                    let list = List {
                        folder,
                        index_id,
                        since,
                    };
                    self.keep_list(peer, list);
                }
                self.pump_folder(now, cx, folder);
                self.folders.remove(&folder);
                self.started.remove(&folder);
                // The host's answers to its steps, the persist just asked for included, find
                // no folder; a folder added again later numbers its steps afresh.
                self.pending.retain(|_, p| p.folder != folder);
                return Ok(());
            }
            ReplicateCommand::Local { folder, change } => {
                let replica = self
                    .folders
                    .get_mut(&folder)
                    .ok_or(ReplicateRefusal::UnknownFolder(folder))?;
                replica.handle_local(now, change);
                folder
            }
            ReplicateCommand::Folder { folder, command } => {
                let replica = self
                    .folders
                    .get_mut(&folder)
                    .ok_or(ReplicateRefusal::UnknownFolder(folder))?;
                replica.handle_command(now, command)?;
                folder
            }
        };
        self.pump_folder(now, cx, folder);
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        for replica in self.folders.values_mut() {
            if replica.poll_timeout().is_some_and(|t| t <= now) {
                replica.handle_timeout(now);
            }
        }
        self.pump(now, cx);
    }

    fn handle_completed(&mut self, now: Instant, cx: &Context<'_>, token: u64, result: HostResult) {
        let Some(Pending { folder, token }) = self.pending.remove(&token) else {
            return;
        };
        if let Some(replica) = self.folders.get_mut(&folder) {
            replica.handle_completed(now, token, storage_result(result));
            self.pump_folder(now, cx, folder);
        }
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<ReplicateEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.folders.values().filter_map(|r| r.poll_timeout()).min()
    }

    fn check_invariants(&self, _config: &Config) -> Result<(), String> {
        for (id, replica) in &self.folders {
            replica
                .check_invariants()
                .map_err(|e| format!("folder {id}: {e}"))?;
        }
        if let Some((node, _)) = self
            .kept_lists
            .iter()
            .find(|(_, kept)| kept.is_empty() || kept.len() > LISTS_KEPT_PER_PEER_MAX)
        {
            return Err(format!("kept LISTs of {node}: none, or past the bound"));
        }
        for (node, (queue, bytes)) in &self.bulk {
            let sum: usize = queue.iter().map(|m| HEADER_BYTES + m.payload.len()).sum();
            if sum != *bytes || *bytes > BULK_QUEUE_BYTES_MAX {
                return Err(format!("bulk queue of {node}: {bytes} counted, {sum} held"));
            }
        }
        if let Some((node, _)) = self.index.iter().find(|(_, l)| l.frames.is_empty()) {
            return Err(format!("an empty index lane kept for {node}"));
        }
        for (id, replica) in &self.folders {
            if let Some(node) = replica
                .index_holds()
                .find(|node| !self.index.contains_key(node))
            {
                return Err(format!("folder {id} holds its index to {node}, none waits"));
            }
        }
        Ok(())
    }
}
