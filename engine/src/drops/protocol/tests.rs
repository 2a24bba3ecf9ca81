//! The drops protocol over a session with no link: announcing held drops, looking up
//! holders, file lists checked, heads told to subscribers.

use bytes::Bytes;
use weft_protocol::{
    holders_key, node_key_key, DropError, DropFiles, DropGetFiles, DropOwners, HolderRecord,
    ManifestFields, PathRefusal, PublicKey, Signature, HOLDER_LIFETIME,
};

use super::*;
use crate::chord::{ChordCommand, ChordError, ChordItem, ChordRequest, ChordResult};
use crate::session::Session;

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

    fn unlink(&mut self, peer: &Peer) {
        let cx = Context {
            session: &self.session,
        };
        let down = LinkNotice::Down {
            node: peer.node,
            reason: &crate::CloseReason::Lost,
        };
        self.drops.handle_link(self.now, &cx, down);
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

/// SPEC.md §24.6: a put that fails is made again at the next sync: the key record's too (it
/// waited for the next round of announcements, 150 s on).
#[test]
fn a_failed_key_record_put_goes_again_at_the_next_sync() {
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    h.command(DropsCommand::Create);
    let puts = chord_commands(&h.outputs());
    assert_eq!(puts.len(), 2, "{puts:?}");
    let done = Ok(ChordResult::Put {
        replicas: 5,
        nodes: 3,
        of: 3,
    });
    h.answer(puts[0].request, done.clone());
    h.answer(puts[1].request, Err(ChordError::Timeout));
    assert_eq!(h.drops.metrics().tracker_puts_failed, 1);
    h.advance(DROP_SYNC_INTERVAL);
    let again = chord_commands(&h.outputs());
    let me = h.drops.identity.node_id();
    assert!(
        matches!(&again[..], [c] if matches!(&c.op, ChordRequest::Put { key, .. } if *key == node_key_key(&me))),
        "{again:?}"
    );
    h.answer(again[0].request, done);
    h.advance(DROP_SYNC_INTERVAL);
    assert!(chord_commands(&h.outputs()).is_empty());
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

/// A linked peer of `id`'s key that runs every family.
fn peer_of(id: &Identity) -> Peer {
    Peer {
        node: id.node_id(),
        incarnation: 1,
        listen_addr: None,
        families: u32::MAX,
        dialer_nonce: [0; 32],
        public_key: id.public_key(),
    }
}

/// A harness subscribed to the owner's drop and linked to `peer`.
fn subscribed_to_the_owners_drop(peer: &Peer) -> (Harness, DropId) {
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    let drop = owner_drop();
    h.command(DropsCommand::Subscribe { drop });
    h.link(peer);
    (h, drop)
}

/// A version of the owner's drop listing `files`, signed by the owner.
fn version_of(files: &[DropFile]) -> DropManifest {
    version_after(files, 1, Vec::new())
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
        // Each inside alone, read as text; out of the folder through each other.
        (
            vec![
                file("a/b/c/up", FileKind::Symlink, Some("../../..")),
                file("x", FileKind::Symlink, Some("a/b/c/up/../../../..")),
            ],
            PathRefusal::SymlinkEscapes,
        ),
    ];
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
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

/// A version of the owner's drop after `parents`, listing `files`.
fn version_after(files: &[DropFile], counter: u64, parents: Vec<VersionId>) -> DropManifest {
    let owner = Identity::from_secret(&OWNER);
    let mut hasher = RootHasher::new();
    hasher.push_batch(files).expect("in order");
    let fields = ManifestFields {
        drop: owner_drop(),
        nonce: NONCE,
        counter,
        parents,
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

/// The list of the version shown stays held (served, stored, and under the gate) until the
/// next version's list is verified: it was dropped as soon as that version was accepted, so
/// a restart in between came back with an empty gate, and peers asking for it heard NOTFOUND.
#[test]
fn the_shown_list_is_kept_until_the_next_one_is_verified() {
    let owner = Identity::from_secret(&OWNER);
    let other = Identity::from_secret(&[0x0b; 32]);
    let (owner_peer, other_peer) = (peer_of(&owner), peer_of(&other));
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    let drop = owner_drop();
    h.command(DropsCommand::Subscribe { drop });
    h.link(&owner_peer);
    h.link(&other_peer);
    let first_files = vec![file("a", FileKind::File, None)];
    let v1 = version_after(&first_files, 1, Vec::new());
    let first = v1.version_id();
    h.message(&owner_peer, DropMessage::Version(Box::new(v1)))
        .expect("a valid version");
    let batch = DropFiles {
        drop,
        version: first,
        from: 0,
        files: first_files,
    };
    h.message(&owner_peer, DropMessage::Files(batch))
        .expect("a valid list");
    assert_eq!(h.drops.shown(&drop), Some(first));
    // The next version is accepted; its list is not here yet.
    let v2 = version_after(&[file("b", FileKind::File, None)], 2, vec![first]);
    h.message(&owner_peer, DropMessage::Version(Box::new(v2)))
        .expect("a valid version");
    h.outputs();
    assert_eq!(h.drops.shown(&drop), Some(first));
    let held = h.drops.drops.get(&drop).expect("held");
    assert!(held.files.contains_key(&first), "the shown list is kept");
    // A peer asking for it gets it.
    let get = DropGetFiles {
        drop,
        version: first,
        from: 0,
    };
    h.message(&other_peer, DropMessage::GetFiles(get))
        .expect("an ask");
    let answered = h.outputs().into_iter().find_map(|o| match o {
        ProtocolOutput::Send {
            to: Recipients::Peer(n),
            message,
            ..
        } if n == other.node_id() => Some(message.code),
        _ => None,
    });
    assert_eq!(answered, Some(Code::DROP_FILES));
}

/// More heads than a version may name as parents (a secondary owner published 9 versions on
/// one parent): the owner's next publish names the 8 with the highest counters and the next
/// one the rest, so the drop never freezes (every publish was refused as "not an owner").
/// A drop's holders are the linked peers that hold it: one that unlinks is forgotten, and one
/// heard without a link is not kept, so fresh ids linking, telling their heads and leaving
/// never grow the set.
#[test]
fn holders_are_kept_only_while_linked() {
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    h.command(DropsCommand::Create);
    let drop = *h.drops.drops.keys().next().expect("a drop");
    let heads = || {
        DropMessage::Heads(weft_protocol::DropHeads {
            drop,
            heads: Vec::new(),
        })
    };
    for n in 0..1_000u32 {
        let mut secret = [0x33; 32];
        secret[..4].copy_from_slice(&n.to_be_bytes());
        let peer = peer_of(&Identity::from_secret(&secret));
        h.link(&peer);
        h.message(&peer, heads()).expect("heads taken");
        assert_eq!(h.drops.drops[&drop].holders.len(), 1);
        h.unlink(&peer);
    }
    assert!(h.drops.drops[&drop].holders.is_empty());
    // Heard without a link (a dedicated connection): not kept, neither as a holder nor as
    // a subscriber (fresh keys on dedicated connections filled `DROP_SUBSCRIBERS_MAX` for
    // good: a subscriber is let go only when its link goes down), and not answered.
    h.outputs();
    for n in 0..=DROP_SUBSCRIBERS_MAX as u32 {
        let mut secret = [0x44; 32];
        secret[..4].copy_from_slice(&n.to_be_bytes());
        let stranger = peer_of(&Identity::from_secret(&secret));
        h.message(&stranger, heads()).expect("heads taken");
        let subscribe = DropMessage::Subscribe(DropSubscribe { drop });
        h.message(&stranger, subscribe).expect("subscribe taken");
    }
    assert!(h.drops.drops[&drop].holders.is_empty());
    assert!(h.drops.drops[&drop].subscribers.is_empty());
    assert!(h
        .outputs()
        .iter()
        .all(|o| !matches!(o, ProtocolOutput::Send { .. })));
    h.drops
        .check_invariants(&Config::from_seed("test-net", 1))
        .expect("invariants");
}

#[test]
fn an_owner_publishes_over_more_heads_than_a_version_may_name() {
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    h.command(DropsCommand::Create);
    let drop = *h.drops.drop_ids().next().expect("a drop");
    let second = Identity::from_secret(&[0x0c; 32]);
    let publish = |h: &mut Harness, secondary: Option<Vec<PublicKey>>, name: &str| {
        let cx = Context {
            session: &h.session,
        };
        let files = vec![file(name, FileKind::File, None)];
        h.drops.publish(h.now, &cx, drop, secondary, Some(files))
    };
    publish(&mut h, Some(vec![second.public_key()]), "v1").expect("the first version");
    let (base_id, base) = {
        let chain = &h.drops.drops.get(&drop).expect("held").chain;
        let (id, m) = chain.current().expect("a version");
        (id, m.clone())
    };
    // The secondary owner's 9 versions, each on the first.
    let peer = peer_of(&second);
    h.link(&peer);
    for n in 0..9u8 {
        let files = vec![file(&format!("branch-{n}"), FileKind::File, None)];
        let mut hasher = RootHasher::new();
        hasher.push_batch(&files).expect("in order");
        let fields = ManifestFields {
            drop,
            nonce: base.nonce,
            counter: 2,
            parents: vec![base_id],
            owners: base.owners.clone(),
            root: hasher.root(),
            files: hasher.files(),
            bytes: hasher.bytes(),
        };
        let m = DropManifest::sign(fields, &[0x0c; 32]);
        h.message(&peer, DropMessage::Version(Box::new(m)))
            .expect("a secondary owner's version");
    }
    let heads = |h: &Harness| {
        h.drops
            .drops
            .get(&drop)
            .expect("held")
            .chain
            .heads()
            .count()
    };
    assert_eq!(heads(&h), 9);
    publish(&mut h, None, "merge-1").expect("a publish over 9 heads");
    assert_eq!(heads(&h), 2, "8 merged, one branch left");
    publish(&mut h, None, "merge-2").expect("and the rest");
    assert_eq!(heads(&h), 1);
    // A secondary owner list over the bound is refused by name.
    let many: Vec<PublicKey> = (0..17u8)
        .map(|i| Identity::from_secret(&[0x40 + i; 32]).public_key())
        .collect();
    assert!(matches!(
        publish(&mut h, Some(many), "owners"),
        Err(DropsRefusal::TooManyOwners(_))
    ));
}

/// DROP_FILES of `drop`'s `version` holding up to `count` of `files` from `from`.
fn files_of(
    drop: DropId,
    version: VersionId,
    files: &[DropFile],
    from: usize,
    count: usize,
) -> DropMessage {
    DropMessage::Files(DropFiles {
        drop,
        version,
        from: from as u32,
        files: files[from..(from + count).min(files.len())].to_vec(),
    })
}

/// The DROP_GET_FILES asks among `outputs`, by where they start.
fn file_asks(outputs: &[ProtocolOutput<DropsEvent>]) -> Vec<u32> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ProtocolOutput::Send { message, .. } if message.code == Code::DROP_GET_FILES => {
                match Message::decode(message.code, &message.payload) {
                    Ok(Message::Drop(DropMessage::GetFiles(g))) => Some(g.from),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// A file list coming batch after batch is not fetched again from its start at the next
/// sync: it is stale only once no batch came for `DROP_SYNC_INTERVAL` (a list that took more
/// than one interval to come never finished).
#[test]
fn a_file_list_coming_in_batches_is_not_started_again() {
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&peer);
    let files: Vec<DropFile> = (0..600)
        .map(|i| file(&format!("f{i:04}"), FileKind::File, None))
        .collect();
    let v = version_of(&files);
    let version = v.version_id();
    h.message(&peer, DropMessage::Version(Box::new(v)))
        .expect("a valid version");
    assert_eq!(file_asks(&h.outputs()), [0]);
    h.advance(Duration::from_secs(4));
    h.outputs();
    h.message(&peer, files_of(drop, version, &files, 0, 256))
        .expect("a batch");
    assert_eq!(file_asks(&h.outputs()), [256]);
    // Past an interval since the first ask, not since the last batch: still coming.
    h.advance(Duration::from_secs(2));
    assert_eq!(file_asks(&h.outputs()), Vec::<u32>::new());
    for from in [256, 512] {
        h.message(&peer, files_of(drop, version, &files, from, 256))
            .expect("the rest");
    }
    assert_eq!(h.drops.shown(&drop), Some(version));
}

/// A holder serving a file list one file at a time, each within the sync interval, is
/// given up at its second thin batch in a row (no honest holder sends two: a short batch
/// stops only before a file of over half the batch bytes), and another holder is asked.
#[test]
fn a_holder_dripping_a_file_list_is_given_up_for_another() {
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&peer);
    let other = peer_of(&Identity::from_secret(&[0x5e; 32]));
    h.link(&other);
    let files: Vec<DropFile> = (0..600)
        .map(|i| file(&format!("f{i:04}"), FileKind::File, None))
        .collect();
    let v = version_of(&files);
    let version = v.version_id();
    h.message(&other, DropMessage::Version(Box::new(v.clone())))
        .expect("a valid version");
    h.message(&peer, DropMessage::Version(Box::new(v)))
        .expect("a valid version");
    let asks = |h: &mut Harness| -> Vec<(NodeId, u32)> {
        h.outputs()
            .into_iter()
            .filter_map(|o| match o {
                ProtocolOutput::Send {
                    to: Recipients::Peer(to),
                    message,
                    ..
                } if message.code == Code::DROP_GET_FILES => {
                    match Message::decode(message.code, &message.payload) {
                        Ok(Message::Drop(DropMessage::GetFiles(g))) => Some((to, g.from)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    };
    let first = asks(&mut h);
    assert_eq!(first.len(), 1, "{first:?}");
    let (dripper, _) = first[0];
    let honest = if dripper == peer.node {
        other.node
    } else {
        peer.node
    };
    let dripper_peer = if dripper == peer.node { &peer } else { &other };
    let drip = |h: &mut Harness, from: usize| {
        h.advance(Duration::from_secs(4));
        h.message(dripper_peer, files_of(drop, version, &files, from, 1))
            .expect("a batch that breaks no rule");
    };
    drip(&mut h, 0);
    assert_eq!(asks(&mut h), [(dripper, 1)], "one thin batch may come");
    drip(&mut h, 1);
    assert_eq!(
        asks(&mut h),
        [(honest, 0)],
        "the second in a row gives it up"
    );
    assert_eq!(h.drops.metrics().file_lists_too_slow, 1);
    let honest_peer = if honest == peer.node { &peer } else { &other };
    for from in [0, 256, 512] {
        h.message(honest_peer, files_of(drop, version, &files, from, 256))
            .expect("the list");
    }
    assert_eq!(h.drops.shown(&drop), Some(version));
}

/// A file list past the manifest's bytes is refused with the batch that passes them, not
/// kept until the list ends.
#[test]
fn a_file_list_past_the_manifests_bytes_is_refused_at_once() {
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&peer);
    let sized = |path: &str, size: u32| DropFile {
        path: path.into(),
        kind: FileKind::File,
        mode: 6,
        size: u64::from(size),
        target: None,
        blocks: vec![weft_protocol::Block {
            offset: 0,
            len: size,
            hash: [7; 32],
        }],
    };
    let v = version_of(&[sized("a", 5), sized("b", 5)]);
    let version = v.version_id();
    h.message(&peer, DropMessage::Version(Box::new(v)))
        .expect("a valid version");
    h.outputs();
    let big = DropFiles {
        drop,
        version,
        from: 0,
        files: vec![sized("a", 1000)],
    };
    assert!(h.message(&peer, DropMessage::Files(big)).is_err());
    let refused = h.outputs().into_iter().find_map(|o| match o {
        ProtocolOutput::Event(DropsEvent {
            kind: DropsEventKind::FilesRefused { error, .. },
            ..
        }) => Some(error),
        _ => None,
    });
    assert!(
        matches!(
            refused,
            Some(DropError::ByteCountMismatch {
                expected: 10,
                got: 1000
            })
        ),
        "{refused:?}"
    );
}

/// Holders that never answer a file list are not asked in turn for good while one that
/// would answer waits: a stale assembly's peer is no holder any more.
#[test]
fn holders_that_never_answer_give_way_to_one_that_does() {
    let mut ids: Vec<Identity> = (0x30..0x40u8)
        .map(|b| Identity::from_secret(&[b; 32]))
        .collect();
    ids.sort_by_key(|i| i.node_id());
    // x and y, the lowest ids, never answer; h, the highest, would.
    let (x, y, h_id) = (peer_of(&ids[0]), peer_of(&ids[1]), peer_of(&ids[15]));
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    let drop = owner_drop();
    h.command(DropsCommand::Subscribe { drop });
    for p in [&x, &y, &h_id] {
        h.link(p);
    }
    let v = version_of(&[file("a", FileKind::File, None)]);
    let version = v.version_id();
    h.message(&x, DropMessage::Version(Box::new(v)))
        .expect("a valid version");
    for p in [&y, &h_id] {
        let heads = weft_protocol::DropHeads {
            drop,
            heads: vec![version],
        };
        h.message(p, DropMessage::Heads(heads)).expect("heads");
    }
    h.outputs();
    let mut asked = Vec::new();
    for _ in 0..6 {
        h.advance(DROP_SYNC_INTERVAL + Duration::from_secs(1));
        for o in h.outputs() {
            if let ProtocolOutput::Send {
                to: crate::sending::Recipients::Peer(to),
                message,
                ..
            } = o
            {
                if message.code == Code::DROP_GET_FILES {
                    asked.push(to);
                }
            }
        }
    }
    assert!(asked.contains(&h_id.node), "{asked:?}");
}

/// A version of the owner's drop signed by `by`, after `parents`, with `owners`' secondary
/// keys and `files`.
fn signed_version(
    by: &[u8; 32],
    counter: u64,
    parents: &[&DropManifest],
    secondary: &[PublicKey],
    files: &[DropFile],
) -> DropManifest {
    let owner = Identity::from_secret(&OWNER);
    let mut hasher = RootHasher::new();
    hasher.push_batch(files).expect("in order");
    let mut parents: Vec<VersionId> = parents.iter().map(|m| m.version_id()).collect();
    parents.sort();
    let mut secondary = secondary.to_vec();
    secondary.sort();
    let fields = ManifestFields {
        drop: owner_drop(),
        nonce: NONCE,
        counter,
        parents,
        owners: DropOwners {
            primary: owner.public_key(),
            secondary,
        },
        root: hasher.root(),
        files: hasher.files(),
        bytes: hasher.bytes(),
    };
    DropManifest::sign(fields, by)
}

/// The nodes the last gate given to the drop's folder trusts.
fn last_gate_trusted(outputs: &[ProtocolOutput<DropsEvent>]) -> Option<BTreeSet<NodeId>> {
    outputs.iter().rev().find_map(|o| match o {
        ProtocolOutput::Command(Command::Replicate(ReplicateCommand::Folder {
            command: ReplicaCommand::SetGate(gate),
            ..
        })) => Some(gate.trusted.clone()),
        _ => None,
    })
}

/// The primary removes an owner on a branch that is not the highest (another owner's
/// versions have higher counters, so the current version stays): the gate goes by the owners
/// in force at once, and trusts the removed owner no more.
#[test]
fn a_gate_follows_the_owners_in_force_when_the_current_version_stays() {
    let me_secret = Config::from_seed("test-net", 1).secret_key;
    let me = Identity::from_secret(&me_secret);
    let s_secret = [0x0c; 32];
    let s = Identity::from_secret(&s_secret);
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&peer);
    let files = [file("a", FileKind::File, None)];
    let both = [me.public_key(), s.public_key()];
    let v1 = signed_version(&OWNER, 1, &[], &both, &files);
    let t2 = signed_version(&me_secret, 2, &[&v1], &both, &files);
    let t3 = signed_version(&me_secret, 3, &[&t2], &both, &files);
    for v in [&v1, &t2, &t3] {
        h.message(&peer, DropMessage::Version(Box::new(v.clone())))
            .expect("a valid version");
    }
    let t3_files = DropFiles {
        drop,
        version: t3.version_id(),
        from: 0,
        files: files.to_vec(),
    };
    h.message(&peer, DropMessage::Files(t3_files))
        .expect("the list");
    let trusted = last_gate_trusted(&h.outputs()).expect("a gate");
    assert!(trusted.contains(&s.node_id()), "{trusted:?}");
    // The primary removes s, after v1: t3 stays current.
    let v2 = signed_version(&OWNER, 2, &[&v1], &[me.public_key()], &files);
    h.message(&peer, DropMessage::Version(Box::new(v2)))
        .expect("a valid version");
    let trusted = last_gate_trusted(&h.outputs()).expect("a gate again");
    assert!(!trusted.contains(&s.node_id()), "{trusted:?}");
    assert!(trusted.contains(&owner.node_id()));
}

/// A secondary owner publishes while a removed owner's branch (listing other owners) is a
/// head: it follows only the heads that list the owners in force, so its version keeps to
/// rule 12 and is taken, instead of being refused by its own chain.
#[test]
fn a_secondary_owner_publishes_past_a_removed_owners_branch() {
    let me_secret = Config::from_seed("test-net", 1).secret_key;
    let me = Identity::from_secret(&me_secret);
    let r_secret = [0x0d; 32];
    let r = Identity::from_secret(&r_secret);
    let owner = Identity::from_secret(&OWNER);
    let peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&peer);
    let files = [file("a", FileKind::File, None)];
    let v1 = signed_version(&OWNER, 1, &[], &[me.public_key(), r.public_key()], &files);
    let v2 = signed_version(&OWNER, 2, &[&v1], &[me.public_key()], &files);
    let r2 = signed_version(
        &r_secret,
        2,
        &[&v1],
        &[me.public_key(), r.public_key()],
        &files,
    );
    let r3 = signed_version(
        &r_secret,
        3,
        &[&r2],
        &[me.public_key(), r.public_key()],
        &files,
    );
    for v in [&v1, &v2, &r2, &r3] {
        h.message(&peer, DropMessage::Version(Box::new(v.clone())))
            .expect("a valid version");
    }
    h.outputs();
    let cx = Context {
        session: &h.session,
    };
    let mine = vec![file("b", FileKind::File, None)];
    h.drops
        .publish(h.now, &cx, drop, None, Some(mine))
        .expect("published");
    let held = h.drops.drops.get(&drop).expect("held");
    let (_, current) = held.chain.current().expect("a current version");
    assert_eq!(current.signer, me.public_key());
    assert_eq!(current.parents, vec![v2.version_id()]);
    assert_eq!(current.owners.secondary, vec![me.public_key()]);
}

/// Stored drops that cannot be read are kept as they are: nothing is stored over them, and
/// no drop is created or subscribed to in this run (a near-empty store over them lost every
/// drop held). A store that fails is tried again at the next sync.
#[test]
fn unreadable_stored_drops_are_never_stored_over() {
    let config = Config::from_seed("test-net", 1);
    let me = Identity::from_secret(&config.secret_key).node_id();
    let session = Session::new(&config, 0, [0; 32]);
    let now = Instant(1_000_000_000);
    let cx = Context { session: &session };
    let stores = |drops: &mut DropsProtocol| {
        core::iter::from_fn(|| drops.poll_output())
            .filter(|o| {
                matches!(
                    o,
                    ProtocolOutput::Request {
                        request: HostRequest::StoreState { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let mut drops = DropsProtocol::new(&config, me, [1; 32], true);
    drops.handle_timeout(now, &cx);
    let junk = Bytes::from_static(b"\x04junk");
    drops.handle_completed(now, &cx, LOAD, HostResult::Loaded(Some(junk)));
    assert_eq!(
        drops.handle_command(now, &cx, DropsCommand::Create),
        Err(DropsRefusal::StateUnreadable)
    );
    let drop = owner_drop();
    assert_eq!(
        drops.handle_command(now, &cx, DropsCommand::Subscribe { drop }),
        Err(DropsRefusal::StateUnreadable)
    );
    drops.handle_timeout(now + DROP_SYNC_INTERVAL, &cx);
    assert_eq!(stores(&mut drops), 0, "nothing stored over them");

    // A load the host failed (a node without a store): the drops work in memory.
    let mut drops = DropsProtocol::new(&config, me, [1; 32], true);
    drops.handle_timeout(now, &cx);
    let none = HostResult::Failed("no state folder".into());
    drops.handle_completed(now, &cx, LOAD, none);
    drops
        .handle_command(now, &cx, DropsCommand::Create)
        .expect("a drop in memory");
    drops.handle_timeout(now + DROP_SYNC_INTERVAL, &cx);
    assert_eq!(
        stores(&mut drops),
        0,
        "nothing stored over what the store may hold"
    );
    // Readable (none stored), a failed store is tried again at the next sync.
    let mut drops = DropsProtocol::new(&config, me, [1; 32], true);
    drops.handle_timeout(now, &cx);
    drops.handle_completed(now, &cx, LOAD, HostResult::Loaded(None));
    drops
        .handle_command(now, &cx, DropsCommand::Create)
        .expect("a drop");
    assert_eq!(stores(&mut drops), 1);
    drops.handle_completed(now, &cx, STORE, HostResult::Failed("disk full".into()));
    assert_eq!(stores(&mut drops), 0, "not at once");
    drops.handle_timeout(now + DROP_SYNC_INTERVAL, &cx);
    assert_eq!(stores(&mut drops), 1, "at the next sync");
}

/// A subscriber far behind (a new one, of a drop with many versions) takes them in by the
/// waiting pool's worth at each walk: the pool keeps the lowest versions as the walk comes
/// down from the head, so they connect to what is held. It kept the first 64 it met, the
/// newest, and threw every older one away: each walk took in one version (500 took about
/// 36 minutes of syncs).
#[test]
fn a_subscriber_far_behind_takes_versions_in_by_the_pools_worth() {
    let owner = Identity::from_secret(&OWNER);
    let owner_peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&owner_peer);
    let files = vec![file("a", FileKind::File, None)];
    let mut chain: Vec<DropManifest> = Vec::new();
    for counter in 1..=150u64 {
        let parents = chain
            .last()
            .map(|v| vec![v.version_id()])
            .unwrap_or_default();
        chain.push(version_after(&files, counter, parents));
    }
    let by_id: std::collections::BTreeMap<VersionId, DropManifest> =
        chain.iter().map(|v| (v.version_id(), v.clone())).collect();
    h.outputs();
    let head = chain.last().expect("150 versions").clone();
    h.message(&owner_peer, DropMessage::Version(Box::new(head)))
        .expect("a valid version");
    // One walk: every DROP_GET_VERSION answered, until none is asked.
    loop {
        let asked: Vec<VersionId> = h
            .outputs()
            .into_iter()
            .filter_map(|o| match o {
                ProtocolOutput::Send { message, .. } if message.code == Code::DROP_GET_VERSION => {
                    match Message::decode(message.code, &message.payload) {
                        Ok(Message::Drop(DropMessage::GetVersion(g))) => Some(g.version),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect();
        if asked.is_empty() {
            break;
        }
        for id in asked {
            let v = by_id[&id].clone();
            h.message(&owner_peer, DropMessage::Version(Box::new(v)))
                .expect("a valid version");
        }
    }
    let held = h.drops.chain(&drop).map_or(0, |c| c.len());
    assert!(held > 64, "{held} versions held after one walk");
}

/// A subscriber that holds a version and has lost its links to every holder looks them up
/// again: it looked up only while it held no version, and one whose holders' links closed
/// (an owner's restart says BYE, not redialed) stayed on its old version for good.
#[test]
fn a_subscriber_with_a_version_and_no_holder_linked_looks_holders_up() {
    let owner = Identity::from_secret(&OWNER);
    let owner_peer = peer_of(&owner);
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    let drop = owner_drop();
    h.command(DropsCommand::Subscribe { drop });
    let gets = chord_commands(&h.outputs());
    assert_eq!(gets.len(), 1, "the lookup at the subscribe");
    h.answer(gets[0].request, Ok(ChordResult::Get { values: vec![] }));
    h.link(&owner_peer);
    let files = vec![file("a", FileKind::File, None)];
    let v = version_of(&files);
    let version = v.version_id();
    h.message(&owner_peer, DropMessage::Version(Box::new(v)))
        .expect("a valid version");
    let batch = DropFiles {
        drop,
        version,
        from: 0,
        files,
    };
    h.message(&owner_peer, DropMessage::Files(batch))
        .expect("a valid list");
    assert_eq!(h.drops.shown(&drop), Some(version));
    h.outputs();
    let lookups = |h: &mut Harness| {
        let get = ChordRequest::Get {
            key: holders_key(&drop.0),
        };
        chord_commands(&h.outputs())
            .into_iter()
            .filter(|c| c.op == get)
            .count()
    };
    h.advance(DROP_SYNC_INTERVAL);
    h.advance(DROP_SYNC_INTERVAL);
    assert_eq!(lookups(&mut h), 0, "a holder is linked: no lookup");
    h.unlink(&owner_peer);
    h.advance(DROP_SYNC_INTERVAL);
    h.advance(DROP_SYNC_INTERVAL);
    assert_eq!(lookups(&mut h), 1, "holders looked up");
}

/// DROP_HEADS names the heads of the owners in force first: a removed owner that signs many
/// heads above the primary's newest version (each valid on its own branch) does not push
/// that version out of the list, which hid the removal from every subscriber that had not
/// seen it yet.
#[test]
fn heads_name_the_owners_in_force_first() {
    let owner = Identity::from_secret(&OWNER);
    let owner_peer = peer_of(&owner);
    let (mut h, drop) = subscribed_to_the_owners_drop(&owner_peer);
    let removed_secret = [0x0c; 32];
    let removed = Identity::from_secret(&removed_secret).public_key();
    let files = vec![file("a", FileKind::File, None)];
    let v1 = signed_version(&OWNER, 1, &[], &[removed], &files);
    let p2 = signed_version(&OWNER, 2, &[&v1], &[], &files);
    let r2 = signed_version(&removed_secret, 2, &[&v1], &[removed], &files);
    let mut versions = vec![v1.clone(), p2.clone(), r2.clone()];
    for n in 0..weft_protocol::DROP_HEADS_MAX {
        let other = vec![file(&format!("r{n}"), FileKind::File, None)];
        versions.push(signed_version(
            &removed_secret,
            3,
            &[&r2],
            &[removed],
            &other,
        ));
    }
    for v in versions {
        h.message(&owner_peer, DropMessage::Version(Box::new(v)))
            .expect("a valid version");
    }
    let heads = h.drops.heads_of(&drop);
    assert_eq!(heads.heads.len(), weft_protocol::DROP_HEADS_MAX);
    assert!(
        heads.heads.contains(&p2.version_id()),
        "the primary's newest is named"
    );
}

/// While no holder links, the lookups of a drop's holders back off: each waits twice as long
/// as the one before, up to `DROP_LOOKUP_BACKOFF_MAX` (a subscriber whose holders are all
/// away looked them up, and dialed them, every 5 s for good); a holder that links starts
/// them over, and a lookup the ring could not answer does not lengthen the wait.
#[test]
fn holder_lookups_back_off_while_none_links() {
    let mut h = Harness::new(Some(WALL_MS), "192.0.2.7:7000");
    let drop = owner_drop();
    h.command(DropsCommand::Subscribe { drop });
    let get = ChordRequest::Get {
        key: holders_key(&drop.0),
    };
    // The lookups among the outputs, each answered `answer`; how many.
    let lookups = |h: &mut Harness, answer: Result<ChordResult, ChordError>| {
        let asked: Vec<u64> = chord_commands(&h.outputs())
            .into_iter()
            .filter(|c| c.op == get)
            .map(|c| c.request)
            .collect();
        for request in &asked {
            h.answer(*request, answer.clone());
        }
        asked.len()
    };
    let none = || Ok(ChordResult::Get { values: vec![] });
    let mut made = lookups(&mut h, none());
    for _ in 0..12 {
        h.advance(DROP_SYNC_INTERVAL);
        made += lookups(&mut h, none());
    }
    // 60 s: at the subscribe, then 5, 15 and 35 s after it.
    assert_eq!(made, 4);
    // A holder links, and goes: the lookups start over, at the next sync.
    let owner_peer = peer_of(&Identity::from_secret(&OWNER));
    h.link(&owner_peer);
    let heads = DropMessage::Heads(weft_protocol::DropHeads {
        drop,
        heads: vec![],
    });
    h.message(&owner_peer, heads).expect("heads");
    h.unlink(&owner_peer);
    h.advance(DROP_SYNC_INTERVAL);
    assert_eq!(
        lookups(&mut h, Err(ChordError::Timeout)),
        1,
        "at the next sync"
    );
    // Lookups the ring could not answer do not lengthen the wait: each is made again at the
    // next sync.
    for _ in 0..3 {
        h.advance(DROP_SYNC_INTERVAL);
        assert_eq!(
            lookups(&mut h, Err(ChordError::Timeout)),
            1,
            "again at the next sync"
        );
    }
}

/// The store requests among `outputs`.
fn stores(outputs: &[ProtocolOutput<DropsEvent>]) -> usize {
    outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                ProtocolOutput::Request {
                    token: STORE,
                    request: HostRequest::StoreState { .. }
                }
            )
        })
        .count()
}

/// A change to the drops counts until the store holding it is done (a host answers the
/// command then): a change made while a store is under way waits for the next; a failed
/// store says why; a shutdown stores a change still waiting beside the store under way.
#[test]
fn a_change_is_durable_once_the_store_holding_it_is_done() {
    let mut h = Harness::new(Some(WALL_MS), "127.0.0.1:7000");
    let cx_answer = |h: &mut Harness, result: HostResult| {
        let cx = Context {
            session: &h.session,
        };
        h.drops.handle_completed(h.now, &cx, STORE, result);
    };
    h.command(DropsCommand::Create);
    assert_eq!(stores(&h.outputs()), 1);
    let d = h.drops.durability().clone();
    assert_eq!((d.changes, d.stored_through), (1, 0));
    // A second change while the first store is out: held, then stored after it.
    h.command(DropsCommand::Create);
    assert_eq!(stores(&h.outputs()), 0);
    cx_answer(&mut h, HostResult::Stored);
    assert_eq!(h.drops.durability().stored_through, 1);
    assert_eq!(stores(&h.outputs()), 1, "the held change goes now");
    cx_answer(&mut h, HostResult::Failed("disk full".into()));
    let d = h.drops.durability().clone();
    assert_eq!((d.changes, d.stored_through, d.failed_through), (2, 1, 2));
    assert_eq!(d.failure.as_deref(), Some("disk full"));
    // Retried at the sync: then durable.
    h.advance(DROP_SYNC_INTERVAL);
    assert_eq!(stores(&h.outputs()), 1);
    cx_answer(&mut h, HostResult::Stored);
    assert_eq!(h.drops.durability().stored_through, 2);
    // A change held behind a store under way goes at the shutdown, beside it, and the
    // answers in order count each store's own changes.
    h.command(DropsCommand::Create);
    h.command(DropsCommand::Create);
    assert_eq!(stores(&h.outputs()), 1);
    let cx = Context {
        session: &h.session,
    };
    h.drops.handle_shutdown(h.now, &cx);
    assert_eq!(stores(&h.outputs()), 1, "the held change, beside");
    cx_answer(&mut h, HostResult::Stored);
    assert_eq!(
        h.drops.durability().stored_through,
        3,
        "the first holds three"
    );
    cx_answer(&mut h, HostResult::Stored);
    assert_eq!(h.drops.durability().stored_through, 4);
}

/// The drops count as restored once their stored blob is loaded (or there is none), never
/// after a blob that could not be read or a load that failed: a host forgets the folders of
/// drops not held only then.
#[test]
fn the_drops_are_restored_only_after_a_good_load() {
    let restored_after = |result: HostResult| {
        let mut config = Config::from_seed("test-net", 1);
        config.listen_addr = Some("127.0.0.1:7000".into());
        let me = Identity::from_secret(&config.secret_key).node_id();
        let session = Session::new(&config, 0, [0; 32]);
        let mut drops = DropsProtocol::new(&config, me, [1; 32], true);
        let now = Instant(1_000_000_000);
        let cx = Context { session: &session };
        drops.handle_timeout(now, &cx);
        assert!(!drops.durability().restored, "not before the load");
        drops.handle_completed(now, &cx, LOAD, result);
        drops.durability().restored
    };
    assert!(restored_after(HostResult::Loaded(None)));
    assert!(restored_after(HostResult::Loaded(Some(
        Bytes::from_static(&[1, 0])
    ))));
    assert!(!restored_after(HostResult::Loaded(Some(
        Bytes::from_static(b"\xff\xff")
    ))));
    assert!(!restored_after(HostResult::Failed("no store".into())));
}
