//! What the drops tests share: a drop created, files written into its folder, files read.

use weft_engine::drops::{DropsCommand, DropsEvent, DropsEventKind};
use weft_engine::protocol::DropId;
use weft_engine::{Command, Event, ReplicateCommand};
use weft_sim::folder::FsNode;
use weft_sim::net::Net;

/// Node `i` creates a drop; returns its id.
pub fn create(net: &mut Net, i: usize) -> DropId {
    net.command(i, Command::Drops(DropsCommand::Create));
    net.events
        .iter()
        .find_map(|(n, e)| match e {
            Event::Drops(DropsEvent {
                drop,
                kind: DropsEventKind::Created,
            }) if *n == i => Some(*drop),
            _ => None,
        })
        .expect("the node created a drop")
}

/// Node `i` writes `data` at `path` in the drop's folder and its scanner reports it.
pub fn write(net: &mut Net, i: usize, drop: DropId, path: &str, data: &[u8]) {
    let folder = drop.folder_id();
    let now_ms = (net.now.0 / 1_000_000) as i64;
    let changes = net.disks[i]
        .folder(folder)
        .write_file(path, data.to_vec(), 6, now_ms);
    for change in changes {
        net.command(
            i,
            Command::Replicate(ReplicateCommand::Local { folder, change }),
        );
    }
}

/// The bytes of the file at `path` in node `i`'s copy of the drop, if there is one.
pub fn data(net: &Net, i: usize, drop: DropId, path: &str) -> Option<Vec<u8>> {
    match net.disks[i].get_folder(&drop.folder_id())?.get(path)? {
        FsNode::File { data, .. } => Some(data.to_vec()),
        _ => None,
    }
}
