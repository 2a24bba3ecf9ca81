//! What the page shows and what its buttons do, over the node's control socket: a snapshot
//! of the node ([`UiState`], gathered by [`Gatherer::gather`]) and the actions ([`Action`]).
//! Everything here blocks on the socket: the server calls it on tokio's blocking threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_engine::protocol::FolderId;

use crate::control::{self, ControlError, ControlReply, ControlRequest};
use crate::report::{
    DropReport, FileReport, FolderReport, HostReport, IdReport, StatsReport, TableEntryReport,
    ThroughputSample,
};

/// How long one control request of the page may take (a drop publish waits for its scan,
/// so actions get longer).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an action (resolve, subscribe, table write) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a drop publish may take: the node waits up to `DROP_PUBLISH_SCAN_TIMEOUT` for a
/// scan that finds the folder settled, and some more (as `weft drop publish` does). At the
/// shorter bound the page said it failed while the node went on and published, and a
/// second click published again.
const PUBLISH_TIMEOUT: Duration =
    Duration::from_secs(crate::host::DROP_PUBLISH_SCAN_TIMEOUT.as_secs() + 15);

/// The most files listed per folder (transfers, errors and conflicts are always all listed,
/// up to the same bound each); the page says how many there are in all.
pub const FILES_MAX: usize = 1000;

/// The most hosts listed.
pub const HOSTS_MAX: usize = 500;

/// The most table keys listed.
pub const TABLE_MAX: usize = 500;

/// The most bytes of each table value shown (the value's length is shown with it).
pub const TABLE_VALUE_BYTES_MAX: usize = 256;

/// The most conflict versions listed per conflicted path.
pub const VERSIONS_MAX: usize = 32;

/// Everything the page shows, at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UiState {
    /// Why the node could not be asked (not running, say), if it could not.
    pub error: Option<String>,
    /// This node.
    pub node: Option<NodeView>,
    /// Direct and heard-of hosts, with their traffic.
    pub hosts: Vec<HostView>,
    /// Hosts there are in all (the list stops at [`HOSTS_MAX`]).
    pub hosts_total: usize,
    /// The shared folders.
    pub folders: Vec<FolderView>,
    /// The drops.
    pub drops: Vec<DropReport>,
    /// The sync table.
    pub table: Vec<TableEntryReport>,
    /// Keys there are in all (the list stops at [`TABLE_MAX`]).
    pub table_total: usize,
    /// Bytes a second in and out over the last minutes, oldest first.
    pub throughput: Vec<RatePoint>,
}

/// This node, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its id (64 hex digits).
    pub id: String,
    /// The network's name.
    pub network: String,
    /// The run's incarnation.
    pub incarnation: u64,
    /// The node's process id.
    pub pid: u32,
    /// `mio` or `tokio`.
    pub driver: String,
    /// How links are protected.
    pub links: String,
    /// Whether the network has a secret.
    pub network_secret: bool,
    /// Where it listens.
    pub listen_addr: Option<String>,
    /// Where peers are told to dial it.
    pub announce_addr: Option<String>,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Bytes received in all.
    pub bytes_in: u64,
    /// Bytes sent in all.
    pub bytes_out: u64,
}

/// One host and its traffic over its open connections.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// Its id (64 hex digits).
    pub node: String,
    /// Where it is dialed, if known.
    pub addr: Option<String>,
    /// Linked (else heard of).
    pub direct: bool,
    /// Milliseconds since it was last heard from or of.
    pub last_seen_ms_ago: u64,
    /// Bytes received from it over the open connections.
    pub bytes_in: u64,
    /// Bytes sent to it over the open connections.
    pub bytes_out: u64,
    /// Its open connections.
    pub connections: u64,
}

/// A shared folder as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FolderView {
    /// Its id.
    pub folder: String,
    /// Its root here.
    pub root: String,
    /// `running`, `loading` or `stopped: why`.
    pub state: String,
    /// Its paths (at most [`FILES_MAX`]).
    pub files: Vec<FileReport>,
    /// Paths there are in all.
    pub files_total: usize,
    /// The transfers in flight, with their rate.
    pub transfers: Vec<TransferView>,
    /// The paths whose last write failed.
    pub errors: Vec<FileReport>,
    /// The conflicted paths and their versions.
    pub conflicts: Vec<ConflictView>,
}

/// A file being fetched.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    /// Its path.
    pub path: String,
    /// Bytes written so far.
    pub bytes_done: u64,
    /// Its size.
    pub size: u64,
    /// Bytes a second since the last snapshot (`None` before a second snapshot of it; 0:
    /// stalled).
    pub rate: Option<u64>,
    /// Seconds left at that rate, if it moves.
    pub eta_s: Option<u64>,
}

/// A conflicted path: the versions a resolve may keep (the path first, then its copies).
#[derive(Debug, Clone, Serialize)]
pub struct ConflictView {
    /// The conflicted path.
    pub path: String,
    /// Itself and its conflict copies.
    pub versions: Vec<String>,
}

/// One point of the throughput chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RatePoint {
    /// Unix ms (or the node's uptime, if the calendar clock was unreadable).
    pub t_ms: u64,
    /// Bytes a second received.
    pub in_bps: u64,
    /// Bytes a second sent.
    pub out_bps: u64,
}

/// What the page's buttons ask.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Keep `keep` as `path`'s content everywhere.
    Resolve {
        /// The conflicted path.
        path: String,
        /// The version kept.
        keep: String,
    },
    /// Make a drop of the folder `dir`.
    DropCreate {
        /// An absolute directory.
        dir: String,
    },
    /// Publish the drop whose folder is `dir`.
    DropPublish {
        /// An absolute directory.
        dir: String,
    },
    /// Subscribe to `drop` into `dir`.
    DropSubscribe {
        /// The drop's id.
        drop: String,
        /// An absolute directory, empty or absent.
        dir: String,
    },
    /// Set a table key.
    TableSet {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a table key.
    TableDelete {
        /// The key.
        key: String,
    },
}

/// The longest field an action may carry, bytes (paths, keys, values).
pub const ACTION_FIELD_BYTES_MAX: usize = 4096;

impl Action {
    /// How long the node may take to answer it.
    pub fn timeout(&self) -> Duration {
        match self {
            Action::DropPublish { .. } => PUBLISH_TIMEOUT,
            _ => ACTION_TIMEOUT,
        }
    }

    /// The control request it is, or why it is refused.
    pub fn request(self) -> Result<ControlRequest, String> {
        let fields: Vec<&str> = match &self {
            Action::Resolve { path, keep } => vec![path, keep],
            Action::DropCreate { dir } | Action::DropPublish { dir } => vec![dir],
            Action::DropSubscribe { drop, dir } => vec![drop, dir],
            Action::TableSet { key, value } => vec![key, value],
            Action::TableDelete { key } => vec![key],
        };
        if fields.iter().any(|f| f.len() > ACTION_FIELD_BYTES_MAX) {
            return Err(format!("a field over {ACTION_FIELD_BYTES_MAX} bytes"));
        }
        if fields.iter().any(|f| f.trim().is_empty()) {
            return Err("an empty field".into());
        }
        Ok(match self {
            Action::Resolve { path, keep } => ControlRequest::Resolve { path, keep },
            Action::DropCreate { dir } => ControlRequest::DropCreate { dir },
            Action::DropPublish { dir } => ControlRequest::DropPublish { dir },
            Action::DropSubscribe { drop, dir } => ControlRequest::DropSubscribe {
                drop: drop.trim().to_owned(),
                dir,
            },
            Action::TableSet { key, value } => ControlRequest::TableSet {
                key,
                value,
                lease_ms: None,
            },
            Action::TableDelete { key } => ControlRequest::TableDelete { key },
        })
    }
}

/// What became of an action: a line for the page, or why it failed (`refused`: the node
/// said no; else it could not be asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// Whether it was done.
    pub ok: bool,
    /// What the page says about it.
    pub message: String,
}

/// Carries out `action` through the node at `socket`.
pub fn act(socket: &Path, action: Action) -> ActionOutcome {
    let timeout = action.timeout();
    let request = match action.request() {
        Ok(r) => r,
        Err(why) => return failed(why),
    };
    match control::request_within(socket, &request, timeout) {
        Ok(reply) => ActionOutcome {
            ok: true,
            message: done(&reply),
        },
        Err(e) => failed(e.to_string()),
    }
}

fn failed(message: String) -> ActionOutcome {
    ActionOutcome { ok: false, message }
}

/// The page's line for a reply.
fn done(reply: &ControlReply) -> String {
    match reply {
        ControlReply::Resolved => {
            "resolved: the other versions are being removed everywhere".into()
        }
        ControlReply::DropCreated(id) => format!("drop created: {id}"),
        ControlReply::DropSubscribed => "subscribed".into(),
        ControlReply::DropPublished(p) => format!("published version {}", p.counter),
        ControlReply::Written => "written".into(),
        other => format!("{other:?}"),
    }
}

/// Bytes done of each transfer (by folder and path) at one snapshot.
type Progress = BTreeMap<(String, String), u64>;

/// Gathers snapshots from the node at a control socket, remembering the last transfers'
/// progress to tell their rates.
#[derive(Debug)]
pub struct Gatherer {
    socket: PathBuf,
    /// Bytes done per folder and path at the last snapshot, and when.
    last: Option<(Instant, Progress)>,
}

impl Gatherer {
    /// A gatherer for the node at `socket`.
    pub fn new(socket: PathBuf) -> Gatherer {
        Gatherer { socket, last: None }
    }

    /// A snapshot of the node (its `error` says why it is empty, if it is).
    pub fn gather(&mut self) -> UiState {
        match self.try_gather() {
            Ok(state) => state,
            Err(e) => {
                self.last = None;
                UiState {
                    error: Some(e.to_string()),
                    ..UiState::default()
                }
            }
        }
    }

    fn ask(&self, request: ControlRequest) -> Result<ControlReply, ControlError> {
        control::request_within(&self.socket, &request, QUERY_TIMEOUT)
    }

    fn try_gather(&mut self) -> Result<UiState, ControlError> {
        let unexpected = |r: ControlReply| ControlError::Protocol(format!("{r:?}"));
        let id = match self.ask(ControlRequest::Id)? {
            ControlReply::Id(id) => id,
            r => return Err(unexpected(r)),
        };
        let stats = match self.ask(ControlRequest::Stats)? {
            ControlReply::Stats(s) => s,
            r => return Err(unexpected(r)),
        };
        let hosts = match self.ask(ControlRequest::Network)? {
            ControlReply::Hosts(h) => h,
            r => return Err(unexpected(r)),
        };
        let folders = match self.ask(ControlRequest::Status {
            files_max: Some(FILES_MAX),
        })? {
            ControlReply::Folders(f) => f,
            r => return Err(unexpected(r)),
        };
        let drops = match self.ask(ControlRequest::DropStatus)? {
            ControlReply::Drops(d) => d,
            r => return Err(unexpected(r)),
        };
        let table = match self.ask(ControlRequest::TableList {
            entries_max: Some(TABLE_MAX),
            value_bytes_max: Some(TABLE_VALUE_BYTES_MAX),
        })? {
            ControlReply::Table(t) => t,
            r => return Err(unexpected(r)),
        };
        let samples = match self.ask(ControlRequest::Throughput)? {
            ControlReply::Throughput(s) => s,
            r => return Err(unexpected(r)),
        };
        let now = Instant::now();
        // The network's shared folder only: drops' folders show in their own panel, and
        // the folders of runs (`weft run --sync`) are the runs' own.
        let shared = FolderId::from_name(&id.network).to_string();
        let folders = folders.into_iter().filter(|f| f.folder == shared).collect();
        let folders = self.folder_views(now, folders);
        let hosts_total = hosts.len();
        let table_total = usize::try_from(id.table_keys).unwrap_or(usize::MAX);
        Ok(UiState {
            error: None,
            node: Some(node_view(&id, &stats)),
            hosts: host_views(hosts, &stats),
            hosts_total,
            folders,
            drops: drop_views(drops),
            table,
            table_total,
            throughput: rates(&samples),
        })
    }

    /// The folders with their transfers' rates (against the last snapshot).
    fn folder_views(&mut self, now: Instant, folders: Vec<FolderReport>) -> Vec<FolderView> {
        let mut progress = BTreeMap::new();
        let views = folders
            .into_iter()
            .map(|f| {
                let transfers = f
                    .files
                    .iter()
                    .filter(|x| x.state == "fetching")
                    .take(FILES_MAX)
                    .map(|x| {
                        let key = (f.folder.clone(), x.path.clone());
                        let rate = self.rate(now, &key, x.bytes_done);
                        progress.insert(key, x.bytes_done);
                        let left = x.size.saturating_sub(x.bytes_done);
                        TransferView {
                            path: x.path.clone(),
                            bytes_done: x.bytes_done,
                            size: x.size,
                            rate,
                            eta_s: rate.filter(|r| *r > 0).map(|r| left.div_ceil(r)),
                        }
                    })
                    .collect();
                folder_view(f, transfers)
            })
            .collect();
        self.last = Some((now, progress));
        views
    }

    /// Bytes a second of the transfer `key`, now at `done`, since the last snapshot (`None`
    /// if the last one did not have it).
    fn rate(&self, now: Instant, key: &(String, String), done: u64) -> Option<u64> {
        let (then, last) = self.last.as_ref()?;
        let was = *last.get(key)?;
        let ms = now.saturating_duration_since(*then).as_millis();
        if ms == 0 {
            return None;
        }
        let bytes = u128::from(done.saturating_sub(was));
        Some(u64::try_from(bytes * 1000 / ms).unwrap_or(u64::MAX))
    }
}

fn node_view(id: &IdReport, stats: &StatsReport) -> NodeView {
    NodeView {
        id: id.node.clone(),
        network: id.network.clone(),
        incarnation: id.incarnation,
        pid: id.pid,
        driver: id.driver.clone(),
        links: id.links.clone(),
        network_secret: id.network_secret,
        listen_addr: id.listen_addr.clone(),
        announce_addr: id.announce_addr.clone(),
        uptime_ms: id.uptime_ms,
        bytes_in: stats.counters.bytes_received,
        bytes_out: stats.counters.bytes_sent,
    }
}

/// The hosts, linked first, each with the traffic of its open connections.
fn host_views(hosts: Vec<HostReport>, stats: &StatsReport) -> Vec<HostView> {
    let mut views: Vec<HostView> = hosts
        .into_iter()
        .map(|h| {
            let conns = stats
                .connections
                .iter()
                .filter(|c| c.peer.as_deref() == Some(h.node.as_str()));
            let (mut bytes_in, mut bytes_out, mut connections) = (0u64, 0u64, 0u64);
            for c in conns {
                bytes_in = bytes_in.saturating_add(c.bytes_in);
                bytes_out = bytes_out.saturating_add(c.bytes_out);
                connections += 1;
            }
            HostView {
                node: h.node,
                addr: h.addr,
                direct: h.direct,
                last_seen_ms_ago: h.last_seen_ms_ago,
                bytes_in,
                bytes_out,
                connections,
            }
        })
        .collect();
    views.sort_by(|a, b| b.direct.cmp(&a.direct).then_with(|| a.node.cmp(&b.node)));
    views.truncate(HOSTS_MAX);
    views
}

fn folder_view(f: FolderReport, transfers: Vec<TransferView>) -> FolderView {
    let state = match (&f.stopped, f.ready) {
        (Some(why), _) => format!("stopped: {why}"),
        (None, false) => "loading".into(),
        (None, true) => "running".into(),
    };
    let errors = f
        .files
        .iter()
        .filter(|x| x.state == "error")
        .take(FILES_MAX)
        .cloned()
        .collect();
    let conflicts = conflicts(&f.files);
    let files_total = f
        .files_total
        .map_or(f.files.len(), |t| usize::try_from(t).unwrap_or(usize::MAX));
    FolderView {
        folder: f.folder,
        root: f.root,
        state,
        files: f.files.into_iter().take(FILES_MAX).collect(),
        files_total,
        transfers,
        errors,
        conflicts,
    }
}

/// The conflicted paths and their versions: the path, then each present conflict copy of it.
fn conflicts(files: &[FileReport]) -> Vec<ConflictView> {
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.state == "conflict") {
        by_path.entry(f.path.clone()).or_default();
    }
    for f in files {
        if let Some(origin) = weft_engine::replicate::conflict_origin(&f.path) {
            if let Some(copies) = by_path.get_mut(&origin) {
                if copies.len() < VERSIONS_MAX {
                    copies.push(f.path.clone());
                }
            }
        }
    }
    by_path
        .into_iter()
        .take(FILES_MAX)
        .map(|(path, copies)| {
            let mut versions = vec![path.clone()];
            versions.extend(copies);
            ConflictView { path, versions }
        })
        .collect()
}

/// Bytes a second between neighbouring samples (a counter that went back, as after a
/// restart, counts as 0).
fn rates(samples: &[ThroughputSample]) -> Vec<RatePoint> {
    samples
        .windows(2)
        .filter_map(|w| {
            let ms = w[1].uptime_ms.checked_sub(w[0].uptime_ms)?;
            if ms == 0 {
                return None;
            }
            let per_s = |a: u64, b: u64| {
                u64::try_from(u128::from(b.saturating_sub(a)) * 1000 / u128::from(ms))
                    .unwrap_or(u64::MAX)
            };
            Some(RatePoint {
                t_ms: w[1].unix_ms.unwrap_or(w[1].uptime_ms),
                in_bps: per_s(w[0].bytes_in, w[1].bytes_in),
                out_bps: per_s(w[0].bytes_out, w[1].bytes_out),
            })
        })
        .collect()
}

/// The drops as the page shows them: each with at most [`FILES_MAX`] transfers (a new
/// subscriber of a drop of 50,000 files fetches them all at once, and each snapshot, twice a
/// second to every open page, carried every one).
fn drop_views(mut drops: Vec<DropReport>) -> Vec<DropReport> {
    for d in &mut drops {
        d.transfers.truncate(FILES_MAX);
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drop's transfers are listed up to the bound, as a folder's are.
    #[test]
    fn a_drops_transfers_are_listed_up_to_the_bound() {
        let many = DropReport {
            drop: "d".into(),
            role: "subscriber".into(),
            dir: None,
            version: None,
            counter: None,
            shown: None,
            heads: 1,
            owners: Vec::new(),
            transfers: (0..FILES_MAX + 5)
                .map(|i| file(&format!("f{i}"), "fetching"))
                .collect(),
            tracker: crate::report::TrackerReport::default(),
        };
        let views = drop_views(vec![many]);
        assert_eq!(views[0].transfers.len(), FILES_MAX);
    }

    /// A publish from the page waits as long as the node may take (its scan wait), not the
    /// other actions' bound: the page said it failed while the node went on and published.
    #[test]
    fn a_publish_waits_for_the_nodes_scan() {
        let publish = Action::DropPublish { dir: "/d".into() };
        assert!(publish.timeout() > crate::host::DROP_PUBLISH_SCAN_TIMEOUT);
        let set = Action::TableSet {
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(set.timeout(), ACTION_TIMEOUT);
    }

    fn file(path: &str, state: &str) -> FileReport {
        FileReport {
            path: path.into(),
            kind: "file".into(),
            size: 10,
            state: state.into(),
            bytes_done: 10,
            error: None,
        }
    }

    #[test]
    fn conflicts_list_the_path_then_its_copies() {
        let files = [
            file("a.txt", "conflict"),
            file("a.conflict-1a2b3c4d-3.txt", "synced"),
            file("a.conflict-99999999-1.txt", "synced"),
            file("b.txt", "synced"),
            file("b.conflict-1a2b3c4d-3.txt", "synced"),
        ];
        let c = conflicts(&files);
        assert_eq!(c.len(), 1, "b.txt is not marked conflicted: {c:?}");
        assert_eq!(
            c[0].versions,
            [
                "a.txt",
                "a.conflict-1a2b3c4d-3.txt",
                "a.conflict-99999999-1.txt"
            ]
        );
    }

    #[test]
    fn a_transfer_rate_is_its_progress_between_snapshots() {
        let mut g = Gatherer::new(PathBuf::from("/nowhere/control.sock"));
        let folder = |done| FolderReport {
            folder: "f".into(),
            root: "/r".into(),
            stopped: None,
            ready: true,
            files_total: None,
            files: vec![FileReport {
                bytes_done: done,
                size: 1000,
                ..file("x", "fetching")
            }],
        };
        let t0 = Instant::now();
        let first = g.folder_views(t0, vec![folder(100)]);
        assert_eq!(first[0].transfers[0].rate, None, "no earlier snapshot");
        assert_eq!(first[0].transfers[0].eta_s, None);
        let moving = g.folder_views(t0 + Duration::from_millis(500), vec![folder(300)]);
        assert_eq!(moving[0].transfers[0].rate, Some(400));
        assert_eq!(
            moving[0].transfers[0].eta_s,
            Some(2),
            "700 bytes at 400 a second"
        );
        let stalled = g.folder_views(t0 + Duration::from_millis(1000), vec![folder(300)]);
        assert_eq!(stalled[0].transfers[0].rate, Some(0));
        assert_eq!(stalled[0].transfers[0].eta_s, None);
        assert_eq!(stalled[0].state, "running");
    }

    #[test]
    fn rates_are_bytes_a_second_between_samples() {
        let s = |uptime_ms, bytes_in, bytes_out| ThroughputSample {
            uptime_ms,
            unix_ms: Some(1_000_000 + uptime_ms),
            bytes_in,
            bytes_out,
        };
        let points = rates(&[
            s(0, 0, 0),
            s(1000, 500, 2000),
            s(1500, 1000, 2000),
            s(2500, 10, 0),
        ]);
        assert_eq!(
            points,
            [
                RatePoint {
                    t_ms: 1_001_000,
                    in_bps: 500,
                    out_bps: 2000
                },
                RatePoint {
                    t_ms: 1_001_500,
                    in_bps: 1000,
                    out_bps: 0
                },
                RatePoint {
                    t_ms: 1_002_500,
                    in_bps: 0,
                    out_bps: 0
                },
            ]
        );
        assert!(rates(&[]).is_empty());
    }

    #[test]
    fn actions_become_control_requests_within_bounds() {
        let resolve: Action =
            serde_json::from_str(r#"{"action":"resolve","path":"a","keep":"b"}"#).expect("parses");
        assert_eq!(
            resolve.request(),
            Ok(ControlRequest::Resolve {
                path: "a".into(),
                keep: "b".into()
            })
        );
        let big = Action::TableSet {
            key: "k".into(),
            value: "v".repeat(ACTION_FIELD_BYTES_MAX + 1),
        };
        assert!(big.request().is_err());
        let empty = Action::DropPublish { dir: " ".into() };
        assert!(empty.request().is_err());
        assert!(serde_json::from_str::<Action>(r#"{"action":"shutdown"}"#).is_err());
        assert!(serde_json::from_str::<Action>(
            r#"{"action":"resolve","path":"a","keep":"b","x":1}"#
        )
        .is_err());
    }

    #[test]
    fn a_missing_node_is_an_error_in_the_snapshot_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = Gatherer::new(dir.path().join("control.sock"));
        let state = g.gather();
        assert!(state.node.is_none());
        assert!(
            state
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("no node is running"),
            "{state:?}"
        );
        let outcome = act(
            &dir.path().join("control.sock"),
            Action::TableDelete { key: "k".into() },
        );
        assert!(!outcome.ok);
    }
}
