//! The drops scenario (SPEC.md §24): the primary owner (node 0) creates a drop and names a
//! secondary owner (node 1); every other node subscribes. Under faults both owners edit and
//! publish, while a forging node (one more, linked to two honest nodes) sends versions
//! signed by a non-owner, versions whose signature does not hold, replays of stale versions
//! and owner-list changes signed by the secondary owner, and serves blocks that do not match
//! their hashes. After the heal the primary publishes once more (a merge of every branch it
//! holds); then, as their users would, an owner whose settled copy has differed from the
//! version it shows for 2 s publishes again (either owner: an edit of the secondary's that
//! never reached the primary stays unpublished at the secondary), and the primary merges
//! branches left standing. Every honest node must then show the last version, every
//! subscriber's folder must be identical to the primary's, each owner's copy must hold, idle,
//! just what that version lists, and no honest node may hold a version a non-owner signed or
//! an owner list the forger is on. `ok` is true only then.
//!
//! Links are plaintext (simulation only): the forger's frames are written into its links as
//! they are, which a Noise link would not take.

use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use weft_engine::drops::{DropsCommand, DropsEventKind};
use weft_engine::protocol::{
    DropId, DropManifest, DropMessage, ManifestFields, Message, PublicKey, VersionId,
};
use weft_engine::replicate::{LocalChange, ReplicaCommand};
use weft_engine::{Command, Identity, ReplicateCommand};

use crate::links::LinkSetup;
use crate::rng::SimRng;
use crate::scenario::mesh::FaultMode;
use crate::scenario::{join, ms_or_never, settle, Cell, Row, RunHeader, Scenario, PROBE_MS};
use crate::topology::{self, Topology};
use crate::world::{World, WorldConfig, MS};

/// A drops run's parameters.
#[derive(Debug, Clone)]
pub struct DropsParams {
    /// Honest nodes (at least 3: the two owners and a subscriber).
    pub nodes: u32,
    /// Root seed.
    pub seed: u64,
    /// Publishes by the owners during the safety phase.
    pub publishes: u32,
    /// Faults.
    pub faults: FaultMode,
    /// Add the forging node.
    pub forger: bool,
    /// Length of the safety phase, simulated ms.
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    pub liveness_ms: u64,
}

impl DropsParams {
    /// Defaults for `nodes`, `seed` and `faults`, with the forger.
    pub fn new(nodes: u32, seed: u64, faults: FaultMode) -> DropsParams {
        DropsParams {
            nodes,
            seed,
            publishes: 8,
            faults,
            forger: true,
            safety_ms: 30_000,
            liveness_ms: 60_000,
        }
    }

    /// The command line that replays this run.
    pub fn replay(&self) -> String {
        let mut s = format!(
            "weft sim drops --nodes {} --seed {} --publishes {} --faults {}",
            self.nodes,
            self.seed,
            self.publishes,
            self.faults.as_arg()
        );
        if !self.forger {
            s.push_str(" --no-forger");
        }
        if self.safety_ms != 30_000 {
            s.push_str(&format!(" --safety-ms {}", self.safety_ms));
        }
        if self.liveness_ms != 60_000 {
            s.push_str(&format!(" --liveness-ms {}", self.liveness_ms));
        }
        s
    }
}

/// The forger's attacks, tried and what became of them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Attacks {
    /// Versions signed by the forger, a non-owner.
    pub non_owner_versions: u64,
    /// Owners' versions with a field changed after signing.
    pub bad_signatures: u64,
    /// Old owners' versions sent again.
    pub replayed_versions: u64,
    /// Owner-list changes signed by the secondary owner.
    pub owner_changes_by_secondary: u64,
    /// Files in the forger's copy whose bytes it changed, so the blocks it serves do not
    /// match their hashes.
    pub corrupted_files: u64,
    /// Blocks the forger sent with a byte changed on the wire, so they do not match the
    /// hash they were asked by.
    pub blocks_tampered: u64,
}

/// What one drops run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DropsReport {
    /// What every report shares.
    #[serde(flatten)]
    pub header: RunHeader,
    /// The faults in force.
    pub faults: String,
    /// Faults that struck.
    pub faults_struck: u64,
    /// Publishes asked of the owners (some are refused: the secondary owner before it knows
    /// it is one).
    pub publishes: u32,
    /// Versions accepted over all honest nodes.
    pub versions_accepted: u64,
    /// The counter of the last version.
    pub last_counter: u64,
    /// The forger's attacks.
    pub attacks: Attacks,
    /// Versions the honest nodes refused (each closed the sender's connection).
    pub versions_refused: u64,
    /// Replays the honest nodes recognised.
    pub replays_recognised: u64,
    /// Blocks that failed their hash at honest nodes (discarded, fetched elsewhere).
    pub blocks_corrupt: u64,
    /// Versions a non-owner signed, or owner lists with the forger on them, held by honest
    /// nodes: must be 0.
    pub forged_held: u64,
    /// Whether every honest node shows the last version, every subscriber's folder is
    /// identical to the primary's, and each owner's copy holds just what that version lists.
    pub identical: bool,
    /// Simulated ms from the last publish until that held.
    pub converged_ms: Option<u64>,
}

impl Scenario for DropsReport {
    fn header(&self) -> &RunHeader {
        &self.header
    }

    fn rows(&self) -> Vec<Row> {
        let a = &self.attacks;
        vec![
            ("publishes", self.publishes.to_string()),
            ("versions accepted", self.versions_accepted.to_string()),
            ("last counter", self.last_counter.to_string()),
            (
                "attacks",
                format!(
                    "{} non-owner, {} bad signature, {} replayed, {} owners by secondary, {} corrupted files, {} tampered blocks",
                    a.non_owner_versions,
                    a.bad_signatures,
                    a.replayed_versions,
                    a.owner_changes_by_secondary,
                    a.corrupted_files,
                    a.blocks_tampered
                ),
            ),
            ("versions refused", self.versions_refused.to_string()),
            ("replays recognised", self.replays_recognised.to_string()),
            ("corrupt blocks", self.blocks_corrupt.to_string()),
            ("forged held", self.forged_held.to_string()),
            ("identical", self.identical.to_string()),
            ("converged", ms_or_never(self.converged_ms, " (simulated)")),
        ]
    }

    fn faults(&self) -> Option<(&str, u64)> {
        Some((&self.faults, self.faults_struck))
    }

    fn cells(&self) -> Vec<Cell> {
        let a = &self.attacks;
        let attacks = a.non_owner_versions
            + a.bad_signatures
            + a.replayed_versions
            + a.owner_changes_by_secondary
            + a.corrupted_files
            + a.blocks_tampered;
        vec![
            ("nodes", 6, self.header.nodes.to_string()),
            ("versions", 9, self.last_counter.to_string()),
            ("attacks", 8, attacks.to_string()),
            ("refused", 8, self.versions_refused.to_string()),
            ("corrupt", 8, self.blocks_corrupt.to_string()),
            ("forged", 7, self.forged_held.to_string()),
            ("identical", 10, self.identical.to_string()),
            ("converged", 11, ms_or_never(self.converged_ms, "")),
            ("events", 9, self.header.events.to_string()),
        ]
    }

    fn sweep_sums(reports: &[Self]) -> (Vec<(&'static str, serde_json::Value)>, String) {
        let refused: u64 = reports.iter().map(|r| r.versions_refused).sum();
        let corrupt: u64 = reports.iter().map(|r| r.blocks_corrupt).sum();
        let forged: u64 = reports.iter().map(|r| r.forged_held).sum();
        let keys = vec![
            ("identical", reports.iter().all(|r| r.identical).into()),
            ("versions_refused", refused.into()),
            ("blocks_corrupt", corrupt.into()),
            ("forged_held", forged.into()),
        ];
        let text = format!(
            "{forged} forged held, {refused} versions refused, {corrupt} corrupt blocks discarded, "
        );
        (keys, text)
    }
}

fn public_key(w: &World, i: u32) -> PublicKey {
    Identity::from_secret(&w.config_of(i).secret_key).public_key()
}

/// Node `i` writes `data` at `path` in the drop's folder, and its scanner reports it. A node
/// just restarted has no copy of the folder until its drops state is loaded: its host's scan
/// once the copy is ready finds the file (`seen`, see [`rescan_restarted`]).
fn write(w: &mut World, i: u32, drop: DropId, path: &str, data: Vec<u8>, seen: &mut [u64]) {
    if w.node(i).is_none() {
        return;
    }
    let folder = drop.folder_id();
    let now_ms = (w.now / MS) as i64;
    let changes: Vec<LocalChange> = w.folder_mut(i, folder).write_file(path, data, 6, now_ms);
    if !ready(w, i, drop) {
        if let Some(s) = seen.get_mut(i as usize) {
            *s = SCAN_DUE;
        }
        return;
    }
    let at = w.now;
    for change in changes {
        w.schedule_command(
            at,
            i,
            Command::Replicate(ReplicateCommand::Local { folder, change }),
        );
    }
}

/// A `seen` entry that no incarnation equals: the node's folder is scanned once its copy is
/// ready.
const SCAN_DUE: u64 = u64::MAX;

/// Whether node `i` runs and its copy of the drop's folder is loaded.
fn ready(w: &World, i: u32, drop: DropId) -> bool {
    w.node(i)
        .and_then(|n| n.replica(&drop.folder_id()))
        .is_some_and(|r| r.is_ready())
}

/// What a host does when a node's copy of the folder becomes ready after a start: its scanner
/// reports the drop folder as it is (an edit made just before a crash, whose record was not
/// yet stored, is found again; so is one made while the node had no copy yet, its drops
/// state still loading). `seen`: each node's incarnation as last scanned, [`SCAN_DUE`] for
/// a scan owed.
fn rescan_restarted(w: &mut World, drop: DropId, seen: &mut [u64]) {
    let folder = drop.folder_id();
    let incarnations = w.incarnations();
    for (i, inc) in incarnations.into_iter().enumerate() {
        let i = i as u32;
        if seen.get(i as usize) == Some(&inc) || !ready(w, i, drop) {
            continue;
        }
        seen[i as usize] = inc;
        let changes = match (
            w.folder(i, &folder),
            w.node(i).and_then(|n| n.replica(&folder)),
        ) {
            (Some(f), Some(r)) => f.full_scan(r.records()),
            _ => continue,
        };
        let at = w.now;
        for change in changes {
            w.schedule_command(
                at,
                i,
                Command::Replicate(ReplicateCommand::Local { folder, change }),
            );
        }
    }
}

/// Every subscriber's user reverts what its copy refused (a crash can leave a file the
/// copy's records do not know, refused as a local edit; SPEC.md §24.6): the liveness phase's
/// part of the user.
fn revert_subscribers(w: &mut World, p: &DropsParams, drop: DropId) {
    let folder = drop.folder_id();
    let at = w.now;
    for i in 2..p.nodes.max(3) {
        let command = ReplicateCommand::Folder {
            folder,
            command: ReplicaCommand::Revert,
        };
        w.schedule_command(at, i, Command::Replicate(command));
    }
}

fn frame(m: DropManifest) -> Bytes {
    Message::Drop(DropMessage::Version(Box::new(m)))
        .to_frame(false)
        .into_bytes()
}

/// The primary's current version, if it runs.
fn primary_head(w: &World, drop: &DropId) -> Option<DropManifest> {
    head_of(w, 0, drop)
}

/// Node `i`'s current version, if it runs.
fn head_of(w: &World, i: u32, drop: &DropId) -> Option<DropManifest> {
    let chain = w.node(i)?.drop_chain(drop)?;
    chain.current().map(|(_, m)| m.clone())
}

/// One attack by the forger `f` on a random honest neighbour.
fn attack(w: &mut World, f: u32, drop: DropId, neighbours: &[u32], attacks: &mut Attacks) {
    let rng = w.app_rng();
    let kind = rng.below(5);
    let to = neighbours[rng.below(neighbours.len() as u64) as usize];
    let Some(head) = primary_head(w, &drop) else {
        return;
    };
    let forger_secret = w.config_of(f).secret_key;
    let secondary_secret = w.config_of(1).secret_key;
    let forger_key = public_key(w, f);
    let next = |owners, root| ManifestFields {
        drop,
        nonce: head.nonce,
        counter: head.counter + 1,
        parents: vec![head.version_id()],
        owners,
        root,
        files: 0,
        bytes: 0,
    };
    let bytes = match kind {
        0 => frame(DropManifest::sign(
            next(head.owners.clone(), [0xf0; 32]),
            &forger_secret,
        )),
        1 => {
            let mut m = head.clone();
            m.root[0] ^= 1;
            frame(m)
        }
        2 => {
            let first = w
                .node(0)
                .and_then(|n| n.drop_chain(&drop))
                .and_then(|c| c.versions().min_by_key(|m| m.counter).cloned())
                .unwrap_or(head);
            frame(first)
        }
        3 => {
            let mut owners = head.owners.clone();
            owners.secondary.push(forger_key);
            owners.secondary.sort();
            owners.secondary.dedup();
            frame(DropManifest::sign(
                next(owners, head.root),
                &secondary_secret,
            ))
        }
        _ => {
            // The forger's copy rots behind its scanner's back (an honest server checks a
            // block it reads before serving it, so this one answers NOTFOUND); the blocks it
            // does send are changed on the wire (`World::tamper_blocks_from`).
            let folder = drop.folder_id();
            let paths: Vec<String> = w
                .folder(f, &folder)
                .map(|fo| fo.iter().map(|(p, _)| p.clone()).collect())
                .unwrap_or_default();
            if let Some(path) = paths.first() {
                if w.folder_mut(f, folder).corrupt(path) {
                    attacks.corrupted_files += 1;
                }
            }
            return;
        }
    };
    // Counted once on the wire: the forger may be down, paused or unlinked.
    if w.inject(f, to, bytes) {
        match kind {
            0 => attacks.non_owner_versions += 1,
            1 => attacks.bad_signatures += 1,
            2 => attacks.replayed_versions += 1,
            _ => attacks.owner_changes_by_secondary += 1,
        }
    }
}

/// Whether every honest node shows `version` with one head, every subscriber's folder is
/// identical to the primary's, and each owner's copy, idle, holds just what `version` lists.
fn converged(w: &World, p: &DropsParams, drop: &DropId, version: VersionId) -> bool {
    let folder = drop.folder_id();
    let Some(primary) = w.folder(0, &folder).map(|f| f.digest()) else {
        return false;
    };
    (0..p.nodes).all(|i| {
        let Some(n) = w.node(i) else { return false };
        let one_head = n.drop_chain(drop).is_some_and(|c| c.heads().count() == 1);
        let same = if i < 2 {
            // An owner's copy holds just what the version lists: an edit of the other
            // owner's still on its way would make it differ, and its user publish again.
            n.replica(&folder).is_some_and(|r| r.is_idle()) && !drifted(w, i, drop)
        } else {
            w.folder(i, &folder).is_some_and(|f| f.digest() == primary)
        };
        n.drop_shown(drop) == Some(version) && one_head && same
    })
}

/// Whether owner `i`'s copy, settled, holds other content than the version it shows.
fn drifted(w: &World, i: u32, drop: &DropId) -> bool {
    let Some(replica) = w.node(i).and_then(|n| n.replica(&drop.folder_id())) else {
        return false;
    };
    let Some(gate) = replica.config().gate.as_ref() else {
        return false;
    };
    if !replica.is_idle() {
        return false;
    }
    let mut present = 0;
    for r in replica.records().filter(|r| !r.deleted) {
        present += 1;
        let listed = gate.files.get(&r.entry.path).is_some_and(|f| {
            f.kind == r.entry.kind
                && f.target == r.entry.target
                && f.mode == r.entry.mode
                && f.size == r.entry.size
                && f.blocks == r.entry.blocks
        });
        if !listed {
            return true;
        }
    }
    present != gate.files.len()
}

/// Whether the primary, settled, holds branches: heads no version names yet.
fn branched(w: &World, drop: &DropId) -> bool {
    let Some(n) = w.node(0) else {
        return false;
    };
    let idle = n.replica(&drop.folder_id()).is_some_and(|r| r.is_idle());
    idle && n.drop_chain(drop).is_some_and(|c| c.heads().count() > 1)
}

/// How long a converged run must stay converged before the liveness phase ends, simulated ms.
const STABLE_MS: u64 = 2_000;

/// How long an owner's copy must want a publish (drifted, or the primary's chain branched)
/// under one shown version before its user publishes, simulated ms.
const OWNER_WAIT_MS: u64 = 2_000;

/// Versions a non-owner signed, and owner lists naming the forger, held by honest nodes.
fn forged_held(w: &World, p: &DropsParams, drop: &DropId, forger: Option<PublicKey>) -> u64 {
    let owners = [public_key(w, 0), public_key(w, 1)];
    let mut n = 0;
    for i in 0..p.nodes {
        let Some(chain) = w.node(i).and_then(|n| n.drop_chain(drop)) else {
            continue;
        };
        for m in chain.versions() {
            let forged_owner = forger.is_some_and(|k| m.owners.contains(&k));
            if !owners.contains(&m.signer) || forged_owner {
                n += 1;
            }
        }
    }
    n
}

/// Runs the drops scenario.
pub fn run(p: &DropsParams) -> DropsReport {
    let wall = Instant::now();
    let faults = p.faults.config(p.seed);
    let with_faults = faults.any();
    let honest = p.nodes.max(3);
    let degree = 3.min(honest - 1);
    let mut edges = topology::edges(
        &Topology::Regular { degree },
        honest,
        &mut SimRng::child(p.seed, "topology", 0),
    );
    let forger = p.forger.then_some(honest);
    let mut forger_neighbours = Vec::new();
    if let Some(f) = forger {
        let mut r = SimRng::child(p.seed, "forger", 0);
        while forger_neighbours.len() < 2 {
            // Never the primary: the run needs it to publish the last version.
            let j = 1 + r.below(u64::from(honest - 1)) as u32;
            if !forger_neighbours.contains(&j) {
                forger_neighbours.push(j);
                edges.push((j, f));
            }
        }
    }
    let total = honest + u32::from(forger.is_some());
    let mut w = World::new(WorldConfig {
        seed: p.seed,
        nodes: total,
        edges,
        faults: faults.clone(),
        discovery: false,
        chord: false,
        sabotage: false,
        links: LinkSetup::plaintext(),
    });
    w.writable_on_drain = true;
    w.tamper_blocks_from = forger;
    join(&mut w, false);
    // The primary creates the drop, publishes a first version naming node 1, and the others
    // subscribe.
    let at = w.now;
    w.schedule_command(at, 0, Command::Drops(DropsCommand::Create));
    w.run_until(at + 100 * MS);
    let drop = w
        .drop_events
        .iter()
        .find_map(|(i, e)| (*i == 0 && e.kind == DropsEventKind::Created).then_some(e.drop));
    let Some(drop) = drop else {
        w.fail("node 0 created no drop".into());
        return report(
            p,
            wall,
            &mut w,
            &faults,
            Attacks::default(),
            None,
            None,
            forger,
        );
    };
    let mut rng = SimRng::child(p.seed, "drops-files", 0);
    let mut seen = w.incarnations();
    for k in 0..4 {
        let len = rng.between(1, 40_000) as usize;
        let data = (0..len).map(|_| rng.below(256) as u8).collect();
        write(&mut w, 0, drop, &format!("f{k}"), data, &mut seen);
    }
    let at = w.now + 100 * MS;
    let secondary = Some(vec![public_key(&w, 1)]);
    w.schedule_command(
        at,
        0,
        Command::Drops(DropsCommand::Publish { drop, secondary }),
    );
    for i in 1..total {
        w.schedule_command(at, i, Command::Drops(DropsCommand::Subscribe { drop }));
    }
    w.run_until(at + 3_000 * MS);
    // The safety phase: owners edit and publish, the forger attacks, faults strike.
    let start = w.now;
    let heal_at = start + p.safety_ms * MS;
    if with_faults {
        w.start_faults(heal_at);
    }
    let mut plan: Vec<(u64, u8)> = (0..p.publishes)
        .map(|_| (start + rng.below(p.safety_ms * MS), 0))
        .collect();
    if forger.is_some() {
        plan.extend((0..2 * p.publishes).map(|_| (start + rng.below(p.safety_ms * MS), 1)));
    }
    plan.sort_unstable();
    let mut attacks = Attacks::default();
    for (t, what) in plan {
        w.run_until(t);
        if w.violation().is_some() {
            break;
        }
        rescan_restarted(&mut w, drop, &mut seen);
        match (what, forger) {
            (1, Some(f)) => attack(&mut w, f, drop, &forger_neighbours, &mut attacks),
            _ => {
                let owner = rng.below(2) as u32;
                let len = rng.between(1, 30_000) as usize;
                let data = (0..len).map(|_| rng.below(256) as u8).collect();
                let path = format!("f{}", rng.below(6));
                write(&mut w, owner, drop, &path, data, &mut seen);
                let at = w.now + 200 * MS;
                let publish = Command::Drops(DropsCommand::Publish {
                    drop,
                    secondary: None,
                });
                w.schedule_command(at, owner, publish);
            }
        }
    }
    w.run_until(heal_at);
    if w.violation().is_none() {
        w.heal();
    }
    // Liveness: the primary publishes a merge of what it holds once the branches have had
    // time to meet, then every honest node must show it.
    let healed = w.now;
    for step in 1..=10 {
        w.run_until(healed + step * 1_000 * MS);
        rescan_restarted(&mut w, drop, &mut seen);
    }
    let at = w.now;
    w.schedule_command(
        at,
        0,
        Command::Drops(DropsCommand::Publish {
            drop,
            secondary: None,
        }),
    );
    w.run_until(at + MS);
    let mut last = primary_head(&w, &drop).map(|m| m.version_id());
    let from = w.now;
    let deadline = from + p.liveness_ms * MS;
    let mut converged_ms = None;
    // Since when each owner's copy has wanted a publish, and under which shown version.
    let mut unsettled: [Option<(u64, Option<VersionId>)>; 2] = [None, None];
    while let Some(v) = last {
        if w.violation().is_some() || w.now >= deadline {
            break;
        }
        w.run_until(w.now + PROBE_MS * MS);
        rescan_restarted(&mut w, drop, &mut seen);
        revert_subscribers(&mut w, p, drop);
        // An owner whose settled copy has held other content than the version it shows
        // for `OWNER_WAIT_MS` publishes again, as its user would: nobody else may still
        // serve the content the version lists. The primary drifts when an edit of the
        // secondary's reached it only after its publish; the secondary when the primary's
        // merge, made without an edit of the secondary's that never reached it (the two
        // unlinked, and every subscriber between them refusing the edit as the version they
        // show does not list it), left that edit unpublished at the secondary, where an
        // owner's edit is never overwritten (SPEC.md §24.6) and the subscribers linked only
        // through it can fetch nothing else. The primary also merges branches that stayed
        // (two owners that published at once). The wait lets a version just shown bring its
        // records first; without it two owners whose copies differ publish in turn, each
        // before the other's version has landed, and never stop.
        for i in [0, 1] {
            let shown = w.node(i).and_then(|n| n.drop_shown(&drop));
            let wants = drifted(&w, i, &drop) || (i == 0 && branched(&w, &drop));
            unsettled[i as usize] = match unsettled[i as usize] {
                Some((since, at)) if wants && at == shown => Some((since, at)),
                _ if wants => Some((w.now, shown)),
                _ => None,
            };
        }
        let due = |u: &Option<(u64, Option<VersionId>)>| {
            u.is_some_and(|(since, _)| w.now >= since + OWNER_WAIT_MS * MS)
        };
        if let Some(owner) = [0u32, 1].into_iter().find(|&i| due(&unsettled[i as usize])) {
            let publish = Command::Drops(DropsCommand::Publish {
                drop,
                secondary: None,
            });
            let at = w.now;
            w.schedule_command(at, owner, publish);
            w.run_until(at + MS);
            last = head_of(&w, owner, &drop).map(|m| m.version_id());
            unsettled = [None, None];
            continue;
        }
        // Converged, and still so once what is in flight has landed: an owner's edit on its
        // way to the other owner can change the primary's copy after all.
        if converged(&w, p, &drop, v) {
            let at = w.now;
            w.run_until(at + STABLE_MS * MS);
            if converged(&w, p, &drop, v) {
                converged_ms = Some((at - from) / MS);
                break;
            }
        }
    }
    settle(&mut w);
    report(
        p,
        wall,
        &mut w,
        &faults,
        attacks,
        converged_ms,
        Some((drop, last)),
        forger,
    )
}

/// The parameters `weft sim sweep drops` gives seed `seed`: six honest nodes and the forger,
/// swarm faults, the defaults otherwise.
pub fn sweep_params(seed: u64) -> DropsParams {
    DropsParams::new(6, seed, FaultMode::Swarm)
}

/// The end-of-run checks (failing the run on any), then the report.
#[allow(clippy::too_many_arguments)]
fn report(
    p: &DropsParams,
    wall: Instant,
    w: &mut World,
    faults: &crate::faults::FaultConfig,
    mut attacks: Attacks,
    converged_ms: Option<u64>,
    drop: Option<(DropId, Option<VersionId>)>,
    forger: Option<u32>,
) -> DropsReport {
    attacks.blocks_tampered = w.stats.blocks_tampered;
    let honest = 0..p.nodes.max(3);
    let metrics: Vec<_> = honest
        .clone()
        .filter_map(|i| w.node(i).map(|n| n.drops_metrics()))
        .collect();
    let (mut forged, mut identical, mut last_counter, mut blocks_corrupt) = (0, false, 0, 0);
    if let Some((drop, last)) = drop {
        let forger_key = forger.map(|f| public_key(w, f));
        forged = forged_held(w, p, &drop, forger_key);
        identical = last.is_some_and(|v| converged(w, p, &drop, v));
        last_counter = primary_head(w, &drop).map_or(0, |m| m.counter);
        let folder = drop.folder_id();
        blocks_corrupt = honest
            .filter_map(|i| w.node(i).and_then(|n| n.replica(&folder)))
            .map(|r| r.metrics().blocks_corrupt)
            .sum();
        if w.violation().is_none() && forged > 0 {
            w.fail(format!("{forged} forged versions held by honest nodes"));
        }
        if w.violation().is_none() && !identical {
            w.fail(format!(
                "not every honest node shows the last version with its files {} ms after the heal",
                p.liveness_ms
            ));
        }
    }
    DropsReport {
        header: RunHeader::new(
            "drops",
            p.seed,
            p.nodes,
            LinkSetup::plaintext().describe(),
            p.replay(),
        )
        .finish_world(wall, w),
        faults: faults.to_string(),
        faults_struck: w.stats.faults,
        publishes: p.publishes,
        versions_accepted: metrics.iter().map(|m| m.versions_accepted).sum(),
        last_counter,
        attacks,
        versions_refused: metrics.iter().map(|m| m.versions_refused).sum(),
        replays_recognised: metrics.iter().map(|m| m.versions_known).sum(),
        blocks_corrupt,
        forged_held: forged,
        identical,
        converged_ms,
    }
}
