//! What the host reports of the node: `weft id`, `weft stats`, `weft network`'s hosts and
//! each folder's files and transfers (`weft status`).

use weft_engine::protocol::FileKind;
use weft_engine::replicate::{conflict_origin, Record};
use weft_engine::{ConnId, NetworkKey};

use super::Host;
use crate::report::{
    hex_id, links_name, ConnReport, FileReport, FolderReport, HostReport, IdReport, NodeCounters,
    RingReport, StatsReport,
};

/// A kind's name in `weft status`.
pub(super) fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
    }
}

impl Host {
    /// Every shared folder and each of its paths' state; with `files_max`, each folder's
    /// first `files_max` paths (by path) of each state (synced; fetching; in error; in
    /// conflict or a conflict copy), and how many paths it has (the web page asks so every
    /// 500 ms: a report of every path of a large folder, built on the event loop, cost it
    /// that often, and a join fetches every path at once).
    pub(super) fn folder_reports(&self, files_max: Option<usize>) -> Vec<FolderReport> {
        self.folders
            .list()
            .into_iter()
            .map(|(folder, root, stopped, ready)| {
                let replica = self.node.replica(&folder);
                let transfers: std::collections::BTreeMap<String, u64> = replica
                    .map(|r| r.transfers())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.path, t.bytes_done))
                    .collect();
                let errors: std::collections::BTreeMap<&str, &String> = self
                    .folder_errors
                    .range((folder, String::new())..)
                    .take_while(|((f, _), _)| *f == folder)
                    .map(|((_, path), e)| (path.as_str(), e))
                    .collect();
                let records: Vec<&Record> = replica
                    .map(|r| r.records().filter(|r| !r.deleted).collect())
                    .unwrap_or_default();
                let origins: Vec<Option<String>> = records
                    .iter()
                    .map(|r| conflict_origin(&r.entry.path))
                    .collect();
                let conflicted: std::collections::BTreeSet<&str> =
                    origins.iter().flatten().map(String::as_str).collect();
                let mut files: Vec<FileReport> = Vec::new();
                // Paths reported so far in each state: synced, fetching, error, conflict.
                let mut shown = [0usize; 4];
                let room = |shown: &mut [usize; 4], at: usize| {
                    let has = files_max.is_none_or(|max| shown[at] < max);
                    if has {
                        shown[at] += 1;
                    }
                    has
                };
                for (r, origin) in records.iter().zip(&origins) {
                    let path = r.entry.path.as_str();
                    let error = errors.get(path);
                    let state = if error.is_some() {
                        "error"
                    } else if transfers.contains_key(path) {
                        "fetching"
                    } else if conflicted.contains(path) {
                        "conflict"
                    } else {
                        "synced"
                    };
                    let at = match state {
                        "fetching" => 1,
                        "error" => 2,
                        _ if state == "conflict" || origin.is_some() => 3,
                        _ => 0,
                    };
                    if !room(&mut shown, at) {
                        continue;
                    }
                    files.push(FileReport {
                        bytes_done: transfers.get(path).copied().unwrap_or(r.entry.size),
                        kind: kind_name(r.entry.kind).into(),
                        size: r.entry.size,
                        state: state.into(),
                        error: error.map(|e| (*e).clone()),
                        path: path.to_owned(),
                    });
                }
                // Files being fetched for the first time have no record yet. (A set, not a
                // scan of `files` per transfer: a join starts a transfer for every file, and
                // this runs on the event loop each time the web page or `weft status` asks.)
                let recorded: std::collections::BTreeSet<&str> =
                    records.iter().map(|r| r.entry.path.as_str()).collect();
                let first_fetches: Vec<_> = replica
                    .map(|r| r.transfers())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| !recorded.contains(t.path.as_str()))
                    .collect();
                let total = records.len() + first_fetches.len();
                for t in first_fetches {
                    if room(&mut shown, 1) {
                        files.push(FileReport::from(t));
                    }
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                FolderReport {
                    folder: folder.to_string(),
                    root: root.display().to_string(),
                    stopped: stopped.map(str::to_owned),
                    ready,
                    files_total: files_max.map(|_| total as u64),
                    files,
                }
            })
            .collect()
    }

    pub(super) fn hosts(&self) -> Vec<HostReport> {
        if let Some(p2pt) = self.node.p2pt() {
            return p2pt
                .peers()
                .into_iter()
                .map(|(id, _, addr)| HostReport {
                    node: id,
                    addr: Some(addr),
                    direct: true,
                    last_seen_ms_ago: 0,
                    last_seen_unix_ms: None,
                })
                .collect();
        }
        let now = self.clock.now();
        let wall = self.node.wall_clock_ms(now);
        self.node
            .hosts()
            .into_iter()
            .map(|h| {
                let ago = now.saturating_since(h.last_seen).as_millis();
                HostReport {
                    node: hex_id(&h.node),
                    addr: h.addr,
                    direct: h.direct,
                    last_seen_ms_ago: ago,
                    last_seen_unix_ms: wall.map(|w| w.saturating_sub(ago)),
                }
            })
            .collect()
    }

    pub(super) fn id(&self) -> IdReport {
        let node = &self.node;
        let hosts = node.hosts();
        let direct = hosts.iter().filter(|h| h.direct).count() as u64;
        let me = node.node_id();
        let chord = node.chord().map(|chord| {
            let successor = chord
                .successors()
                .first()
                .filter(|p| p.node != me)
                .map(|p| hex_id(&p.node));
            RingReport {
                position: format!("{:016x}", chord.me().ring_id()),
                joined: chord.is_joined(),
                successor,
                predecessor: chord.predecessor().map(|p| hex_id(&p.node)),
                records: chord.records_len() as u64,
            }
        });
        let p2pt = node.p2pt();
        IdReport {
            node: p2pt.map_or_else(|| hex_id(&me), |p| p.id()),
            network: node.config().network.clone(),
            incarnation: node.config().incarnation,
            pid: std::process::id(),
            driver: self.driver.to_owned(),
            links: links_of(node),
            network_secret: node.config().network_key != NetworkKey::OPEN,
            listen_addr: self.bound_addr.clone(),
            announce_addr: node.config().listen_addr.clone(),
            uptime_ms: self.clock.now().as_nanos() / 1_000_000,
            peers_direct: p2pt.map_or(direct, |p| p.peers().len() as u64),
            peers_heard_of: hosts.len() as u64 - direct,
            chord,
            table_keys: p2pt.map_or(node.table().iter().count() as u64, |p| {
                p.metrics().table_keys
            }),
        }
    }

    pub(super) fn stats(&self, unwritten: &dyn Fn(ConnId) -> usize) -> StatsReport {
        let node = &self.node;
        let peers: std::collections::BTreeMap<ConnId, _> =
            node.links().map(|(peer, conn)| (conn, peer)).collect();
        let connections = node
            .conn_ids()
            .filter_map(|conn| {
                let stats = node.conn_stats(conn)?;
                let addr = node.conn_addr(conn).unwrap_or_default().to_owned();
                let mut report =
                    ConnReport::new(conn.0, addr, peers.get(&conn), &stats, unwritten(conn));
                report.dedicated = node.dedicated_family(conn).map(|f| f.name().to_owned());
                Some(report)
            })
            .collect();
        let config = node.config();
        let mut counters = NodeCounters::from(&node.metrics());
        if let Some(p) = node.p2pt() {
            let m = p.metrics();
            counters.frames_received = m.frames_received;
            counters.frames_sent = m.frames_sent;
            counters.bytes_received = m.bytes_received;
            counters.bytes_sent = m.bytes_sent;
            counters.broadcasts_originated = m.broadcasts_originated;
            counters.broadcasts_delivered = m.delivered;
            counters.broadcast_duplicates = m.broadcast_duplicates;
            counters.broadcast_transmissions = m.broadcasts_relayed;
        }
        StatsReport {
            node: node
                .p2pt()
                .map_or_else(|| hex_id(&node.node_id()), |p| p.id()),
            network: config.network.clone(),
            incarnation: config.incarnation,
            listen_addr: config.listen_addr.clone(),
            driver: self.driver.to_owned(),
            links: links_of(node),
            network_secret: config.network_key != NetworkKey::OPEN,
            uptime_ms: self.clock.now().as_nanos() / 1_000_000,
            counters,
            connections,
            listeners: self.subscribers.iter().filter(|s| s.is_held()).count() as u64,
            listener_drops: self.listener_drops,
        }
    }
}

/// How `node`'s links are protected, as `weft id` and `weft stats` say it: a p2p.today
/// node's are plaintext whatever `link_encryption` says (py2p has no encryption).
fn links_of(node: &weft_engine::Node) -> String {
    match node.p2pt() {
        Some(_) => "plaintext (p2p.today)".to_owned(),
        None => links_name(node.config().link_encryption).to_owned(),
    }
}
