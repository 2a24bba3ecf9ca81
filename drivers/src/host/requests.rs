//! The application's requests (from a [`crate::Handle`]: the control socket, the CLI, the
//! web page) carried out on the node, each answered on its own channel.

use crate::folder::run::Due;
use weft_engine::chord::ChordCommand;
use weft_engine::protocol::FolderId;
use weft_engine::replicate::{ReplicaCommand, ReplicateCommand};
use weft_engine::run::{ProcessResult, RunCommand};
use weft_engine::{Command, ConnId, HostResult, Input, MeshCommand, TableCommand, TableRefusal};

use super::events::add_subscriber;
use super::{Exit, Host};
use crate::handle::Request;
use crate::handle::{HandleError, TableOp};
use crate::report::TableEntryReport;

/// `path` as a path of the folder at `root`: a path on disk under `root` (or under its real
/// path, symlinks resolved) made relative, a leading `./` taken off; anything else as it is.
fn relative_to(root: &std::path::Path, path: String) -> String {
    let on_disk = std::path::Path::new(&path);
    let real_root = crate::folder::apart::real_path(root);
    for root in [root, real_root.as_path()] {
        if let Some(rest) = on_disk.strip_prefix(root).ok().and_then(|r| r.to_str()) {
            return rest.to_owned();
        }
    }
    let mut rest = path.as_str();
    while let Some(r) = rest.strip_prefix("./") {
        rest = r.trim_start_matches('/');
    }
    rest.to_owned()
}

impl Host {
    /// Acts on one application request; `unwritten` tells the driver's unwritten bytes per
    /// connection, for the stats.
    pub(crate) fn on_request(&mut self, request: Request, unwritten: &dyn Fn(ConnId) -> usize) {
        match request {
            Request::Broadcast { payload, reply } => {
                let broadcast = Command::Mesh(MeshCommand::Broadcast { payload });
                let result = self.input(Input::Command(broadcast));
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!("broadcast refused: {e}");
                        }
                    }
                }
            }
            Request::Subscribe(subscriber) => add_subscriber(&mut self.subscribers, subscriber),
            Request::Hosts { reply } => {
                let _ = reply.send(self.hosts());
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.stats(unwritten));
            }
            Request::Throughput { reply } => {
                let _ = reply.send(self.throughput.report());
            }
            Request::TableWrite { key, op, reply } if self.node.p2pt().is_some() => {
                let _ = reply.send(self.p2pt_table_write(key, op));
            }
            Request::TableWrite { key, op, reply } => match self.table_write(key, op) {
                // A node with a state folder answers once the write is stored; one without
                // keeps nothing, so it answers at once (the write is not durable).
                Ok(number) if self.store.is_some() => {
                    self.table_waiting.insert(number, reply);
                }
                Ok(_) => {
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::TableRead { key, bounds, reply } if self.node.p2pt().is_some() => {
                let _ = reply.send(self.p2pt_table_read(key, bounds));
            }
            Request::TableRead { key, bounds, reply } => {
                let table = self.node.table();
                let cut = bounds.value_bytes_max;
                let entries = match key {
                    Some(k) => TableEntryReport::bounded(table, &k, cut)
                        .into_iter()
                        .collect(),
                    None => table
                        .iter()
                        .filter_map(|(k, _)| TableEntryReport::bounded(table, k, cut))
                        .take(bounds.entries_max.unwrap_or(usize::MAX))
                        .collect(),
                };
                let _ = reply.send(entries);
            }
            Request::Chord { op, reply } => {
                self.last_chord_request += 1;
                let request = self.last_chord_request;
                match self.input(Input::Command(Command::Chord(ChordCommand { request, op }))) {
                    Ok(()) => {
                        self.chord_waiting.insert(request, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Request::Id { reply } => {
                let _ = reply.send(self.id());
            }
            Request::Connect { addr, reply } => {
                let _ = reply.send(self.input(Input::Command(Command::Connect { addr })));
            }
            Request::Disconnect { node, reply } => {
                let _ = reply.send(self.input(Input::Command(Command::Disconnect { node })));
            }
            Request::Shutdown => self.begin_stop(Exit::Requested),
            Request::StorageDone { id, result } => {
                self.storage_in_flight = self.storage_in_flight.saturating_sub(1);
                self.answers.push((id, result));
            }
            // The state writer's answers are taken when the loop drains.
            Request::Nudge => {}
            Request::ProcessDone {
                process,
                id,
                result,
            } => {
                let result = match result {
                    ProcessResult::Exited { status, .. } => {
                        self.processes.ended(process);
                        // One that ran in a folder waits for the folder's scan.
                        match self.hold_exit(id, process, status) {
                            Some(result) => result,
                            None => return,
                        }
                    }
                    result => result,
                };
                self.answers.push((id, HostResult::Process(result)));
            }
            Request::Run {
                peer,
                program,
                args,
                shell,
                sync,
                cancelled,
                reply,
            } => match sync {
                Some(dir) => {
                    let run = super::sync::WaitingRun {
                        peer,
                        program,
                        args,
                        shell,
                        cancelled,
                    };
                    self.run_with_sync(dir, run, reply)
                }
                None => {
                    self.start_run(peer, program, args, shell, None, reply);
                }
            },
            // Nothing to do here: the loop is awake, and `check_held` drops the run.
            Request::RunCancelled => {}
            Request::RunSignal { run, signal } => {
                let command = Command::Run(RunCommand::Signal { run, signal });
                // A run that ended meanwhile: nothing to signal.
                if let Err(e) = self.input(Input::Command(command)) {
                    tracing::debug!("run {run}: signal not sent: {e}");
                }
            }
            // What a removed folder's scanner still reports is its business no more: the
            // folder added again since has a scanner of its own.
            Request::FolderChanges {
                folder, scanner, ..
            }
            | Request::FolderStopped {
                folder, scanner, ..
            } if !self.folders.is_current(&folder, scanner) => {
                tracing::debug!("folder {folder}: a report of an earlier scanner, ignored");
            }
            Request::FolderChanges {
                folder,
                changes,
                cache,
                settled,
                rules,
                ..
            } => {
                if !cache.is_empty() {
                    self.store_scan_cache(folder, cache);
                }
                let due = self.folders.on_changes(&folder, changes, rules);
                self.feed_local(folder, due);
                if let Some(started) = settled {
                    self.folders.scan_settled(&folder, started);
                }
            }
            Request::FolderStopped { folder, why, .. } => self.folders.stop(&folder, why),
            Request::FolderStatus { files_max, reply } => {
                let _ = reply.send(self.folder_reports(files_max));
            }
            Request::Resolve { path, keep, reply } => {
                // The network's shared folder, not one added for a run or a drop.
                let shared = self
                    .folders
                    .list()
                    .into_iter()
                    .find(|(id, ..)| !self.syncs.is_run_folder(id) && !self.is_drop_folder(id));
                let result = match shared {
                    Some((folder, root, ..)) => {
                        // As the user may name them: `./doc.txt`, or its path on disk.
                        let (path, keep) = (relative_to(root, path), relative_to(root, keep));
                        let command = ReplicaCommand::Resolve { path, keep };
                        let resolve = ReplicateCommand::Folder { folder, command };
                        self.input(Input::Command(Command::Replicate(resolve)))
                            .map_err(HandleError::Refused)
                    }
                    None => Err(HandleError::NoFolder),
                };
                let _ = reply.send(result);
            }
            Request::Drop { op, reply } => self.on_drop_request(op, reply),
        }
    }

    /// Hands the scanner's changes in `folder` to the engine.
    pub(super) fn feed_local(&mut self, folder: FolderId, due: Due) {
        if let Some(rules) = due.rules {
            let command = ReplicaCommand::SetIgnoreRules(rules);
            let set = ReplicateCommand::Folder { folder, command };
            if let Err(e) = self.input(Input::Command(Command::Replicate(set))) {
                tracing::warn!("folder {folder}: its ignore rules were refused: {e}");
            }
        }
        for change in due.changes {
            let local = ReplicateCommand::Local { folder, change };
            if let Err(e) = self.input(Input::Command(Command::Replicate(local))) {
                tracing::warn!("folder {folder}: a local change was refused: {e}");
            }
        }
    }

    /// Answers the table writes numbered up to `through`.
    pub(super) fn table_answer(&mut self, through: u64, result: Result<(), HandleError>) {
        let later = self.table_waiting.split_off(&(through + 1));
        for (_, reply) in std::mem::replace(&mut self.table_waiting, later) {
            let _ = reply.send(result.clone());
        }
    }

    /// A table write: its number (`writes_originated`), for its commit. A write the node
    /// accepts without sending was refused by a lease.
    pub(super) fn table_write(&mut self, key: Vec<u8>, op: TableOp) -> Result<u64, HandleError> {
        let command = match op {
            TableOp::Set { value, lease } => TableCommand::Set {
                key: key.clone(),
                value,
                lease,
            },
            TableOp::Delete => TableCommand::Delete { key: key.clone() },
            TableOp::Release => TableCommand::Release { key: key.clone() },
        };
        let before = self.node.metrics().table.writes_originated;
        self.input(Input::Command(Command::Table(command)))
            .map_err(HandleError::Refused)?;
        let after = self.node.metrics().table.writes_originated;
        if after > before {
            return Ok(after);
        }
        match self.node.table().lease(&key) {
            Some((owner, until_ms)) => Err(HandleError::Leased { owner, until_ms }),
            None => Err(HandleError::Refused(TableRefusal::NotLeaseOwner.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::Path;

    #[test]
    fn a_resolve_takes_a_path_as_the_user_names_it() {
        let root = Path::new("/home/u/shared");
        let rel = |p: &str| relative_to(root, p.to_owned());
        assert_eq!(rel("doc.txt"), "doc.txt");
        assert_eq!(rel("./doc.txt"), "doc.txt");
        assert_eq!(rel(".//./a/doc.txt"), "a/doc.txt");
        assert_eq!(rel("/home/u/shared/a/doc.txt"), "a/doc.txt");
        // Elsewhere on disk, or another folder: as it is (the engine finds no such path).
        assert_eq!(rel("/home/u/other/doc.txt"), "/home/u/other/doc.txt");
        assert_eq!(rel("../doc.txt"), "../doc.txt");
    }
}
