//! The one command-code registry for every weft protocol.
//!
//! A code is a big-endian `u16` in the frame header. Its high byte names the protocol family
//! (a range of 256 codes); the low byte names the message within it. Ranges are reserved for
//! protocols that do not exist yet so that adding one never renumbers another.

use serde::{Deserialize, Serialize};

/// A protocol family: one range of 256 command codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// 0x00xx: handshake, liveness and discovery.
    Session,
    /// 0x01xx: flood broadcast and its repair.
    Mesh,
    /// 0x02xx: the replicated sync table.
    Table,
    /// 0x03xx: the Chord distributed hash table.
    Chord,
    /// 0x04xx: folder replication, the ploppy protocol.
    Replication,
    /// 0x05xx: drops, owner-signed folders.
    Drops,
    /// 0x06xx: remote runs with live output.
    Remote,
}

impl Family {
    /// The family that owns codes with this high byte, if any.
    pub const fn from_high_byte(high: u8) -> Option<Family> {
        Some(match high {
            0x00 => Family::Session,
            0x01 => Family::Mesh,
            0x02 => Family::Table,
            0x03 => Family::Chord,
            0x04 => Family::Replication,
            0x05 => Family::Drops,
            0x06 => Family::Remote,
            _ => return None,
        })
    }
}

impl Family {
    /// Every family, known or reserved, in code order.
    pub const ALL: [Family; 7] = [
        Family::Session,
        Family::Mesh,
        Family::Table,
        Family::Chord,
        Family::Replication,
        Family::Drops,
        Family::Remote,
    ];

    /// The high byte of this family's codes.
    pub const fn high_byte(self) -> u8 {
        match self {
            Family::Session => 0x00,
            Family::Mesh => 0x01,
            Family::Table => 0x02,
            Family::Chord => 0x03,
            Family::Replication => 0x04,
            Family::Drops => 0x05,
            Family::Remote => 0x06,
        }
    }

    /// This family's bit in HELLO's `families` field: `1 << high_byte`.
    pub const fn bit(self) -> u32 {
        1 << self.high_byte()
    }

    /// The family's name, for logs and SPEC.md.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Session => "session",
            Family::Mesh => "mesh",
            Family::Table => "table",
            Family::Chord => "chord",
            Family::Replication => "replication",
            Family::Drops => "drops",
            Family::Remote => "remote",
        }
    }
}

/// A command code: which message a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Code(pub u16);

impl Code {
    /// First frame on a connection: identity, nonce, incarnation, capabilities.
    pub const HELLO: Code = Code(0x0001);
    /// Answer to HELLO: a signature over the peer's nonce proving the sender's key.
    pub const HELLO_ACK: Code = Code(0x0002);
    /// Liveness probe.
    pub const PING: Code = Code(0x0003);
    /// Answer to PING.
    pub const PONG: Code = Code(0x0004);
    /// Orderly goodbye with a reason; the sender closes after it.
    pub const BYE: Code = Code(0x0005);
    /// Cascade: the origin's direct peers.
    pub const ICANSEE: Code = Code(0x0010);
    /// Cascade: peers the sender has heard of.
    pub const IKNOWABOUT: Code = Code(0x0011);
    /// Cascade: the origin lost its link to a peer.
    pub const ICANTSEE: Code = Code(0x0012);
    /// Mesh flood broadcast.
    pub const BROADCAST: Code = Code(0x0100);
    /// Mesh repair: a digest of the broadcasts the sender holds in its recent window.
    pub const MESH_DIGEST: Code = Code(0x0101);
    /// Mesh repair: ranges of broadcasts the sender misses and asks for.
    pub const MESH_WANT: Code = Code(0x0102);
    /// Mesh repair: one held broadcast, sent in answer to MESH_WANT.
    pub const MESH_REPAIR: Code = Code(0x0103);
    /// Sync table: one write (set or delete), flooded to every node.
    pub const TABLE_WRITE: Code = Code(0x0200);
    /// Sync table anti-entropy: a hash per non-empty key bucket.
    pub const TABLE_DIGEST: Code = Code(0x0201);
    /// Sync table anti-entropy: the buckets whose entries the sender asks for.
    pub const TABLE_WANT: Code = Code(0x0202);
    /// Sync table anti-entropy: held writes of the wanted buckets.
    pub const TABLE_ENTRIES: Code = Code(0x0203);
    /// Chord: which node follows a ring position, or who is closer to it.
    pub const CHORD_FIND: Code = Code(0x0300);
    /// Chord: the answer to CHORD_FIND.
    pub const CHORD_FOUND: Code = Code(0x0301);
    /// Chord: asks for the receiver's predecessor and successor list.
    pub const CHORD_GET_STATE: Code = Code(0x0302);
    /// Chord: the answer to CHORD_GET_STATE.
    pub const CHORD_STATE: Code = Code(0x0303);
    /// Chord: the sender believes it is the receiver's predecessor.
    pub const CHORD_NOTIFY: Code = Code(0x0304);
    /// Chord: puts or deletes values of a key under one ring position.
    pub const CHORD_STORE: Code = Code(0x0305);
    /// Chord: the answer to CHORD_STORE.
    pub const CHORD_STORED: Code = Code(0x0306);
    /// Chord: asks for the values of a key under one ring position.
    pub const CHORD_FETCH: Code = Code(0x0307);
    /// Chord: the answer to CHORD_FETCH.
    pub const CHORD_VALUES: Code = Code(0x0308);
    /// Chord: records the receiver now owns.
    pub const CHORD_HANDOVER: Code = Code(0x0309);
    /// Replication: asks for the receiver's index of a folder, or the changes since a sequence.
    pub const LIST: Code = Code(0x0400);
    /// Replication: files of the sender's index, in a batch.
    pub const IHAVE: Code = Code(0x0401);
    /// Replication: renames the sender made.
    pub const IMOVED: Code = Code(0x0402);
    /// Replication: deletions the sender knows of.
    pub const IDELETED: Code = Code(0x0403);
    /// Replication: blocks the sender asks for, by hash.
    pub const IWANT: Code = Code(0x0404);
    /// Replication: a piece of a block, in binary.
    pub const HEREIS: Code = Code(0x0405);
    /// Replication: blocks the sender was asked for and no longer has.
    pub const NOTFOUND: Code = Code(0x0406);
    /// Replication: a path the sender will not take from the receiver, and why.
    pub const IREFUSE: Code = Code(0x0407);
    /// Drops: the sender wants the drop's new versions pushed to it.
    pub const DROP_SUBSCRIBE: Code = Code(0x0500);
    /// Drops: the sender no longer wants the drop's versions pushed.
    pub const DROP_UNSUBSCRIBE: Code = Code(0x0501);
    /// Drops: the sender's current heads of a drop.
    pub const DROP_HEADS: Code = Code(0x0502);
    /// Drops: asks for one version's manifest.
    pub const DROP_GET_VERSION: Code = Code(0x0503);
    /// Drops: one version's signed manifest, asked for or pushed.
    pub const DROP_VERSION: Code = Code(0x0504);
    /// Drops: asks for a version's file list from an index on.
    pub const DROP_GET_FILES: Code = Code(0x0505);
    /// Drops: files of a version's list, in a batch.
    pub const DROP_FILES: Code = Code(0x0506);
    /// Drops: the sender holds no such version.
    pub const DROP_NOTFOUND: Code = Code(0x0507);
    /// Remote run: asks the receiver to run a program.
    pub const RUN_REQUEST: Code = Code(0x0600);
    /// Remote run: the receiver will not run it, and why.
    pub const RUN_REFUSED: Code = Code(0x0601);
    /// Remote run: the process started.
    pub const RUN_STARTED: Code = Code(0x0602);
    /// Remote run: a piece of the process's output.
    pub const RUN_OUTPUT: Code = Code(0x0603);
    /// Remote run: output bytes received so far.
    pub const RUN_ACK: Code = Code(0x0604);
    /// Remote run: signal the process group.
    pub const RUN_SIGNAL: Code = Code(0x0605);
    /// Remote run: the process ended.
    pub const RUN_EXIT: Code = Code(0x0606);

    /// Every code this implementation knows, in ascending order.
    pub const ALL: [Code; 49] = [
        Code::HELLO,
        Code::HELLO_ACK,
        Code::PING,
        Code::PONG,
        Code::BYE,
        Code::ICANSEE,
        Code::IKNOWABOUT,
        Code::ICANTSEE,
        Code::BROADCAST,
        Code::MESH_DIGEST,
        Code::MESH_WANT,
        Code::MESH_REPAIR,
        Code::TABLE_WRITE,
        Code::TABLE_DIGEST,
        Code::TABLE_WANT,
        Code::TABLE_ENTRIES,
        Code::CHORD_FIND,
        Code::CHORD_FOUND,
        Code::CHORD_GET_STATE,
        Code::CHORD_STATE,
        Code::CHORD_NOTIFY,
        Code::CHORD_STORE,
        Code::CHORD_STORED,
        Code::CHORD_FETCH,
        Code::CHORD_VALUES,
        Code::CHORD_HANDOVER,
        Code::LIST,
        Code::IHAVE,
        Code::IMOVED,
        Code::IDELETED,
        Code::IWANT,
        Code::HEREIS,
        Code::NOTFOUND,
        Code::IREFUSE,
        Code::DROP_SUBSCRIBE,
        Code::DROP_UNSUBSCRIBE,
        Code::DROP_HEADS,
        Code::DROP_GET_VERSION,
        Code::DROP_VERSION,
        Code::DROP_GET_FILES,
        Code::DROP_FILES,
        Code::DROP_NOTFOUND,
        Code::RUN_REQUEST,
        Code::RUN_REFUSED,
        Code::RUN_STARTED,
        Code::RUN_OUTPUT,
        Code::RUN_ACK,
        Code::RUN_SIGNAL,
        Code::RUN_EXIT,
    ];

    /// The code's protocol family (its range), known or reserved.
    pub const fn family(self) -> Option<Family> {
        Family::from_high_byte((self.0 >> 8) as u8)
    }

    /// Whether this code names a message this implementation can decode.
    pub fn is_known(self) -> bool {
        Code::ALL.contains(&self)
    }

    /// The registry name, for logs and SPEC.md.
    pub const fn name(self) -> &'static str {
        match self {
            Code::HELLO => "HELLO",
            Code::HELLO_ACK => "HELLO_ACK",
            Code::PING => "PING",
            Code::PONG => "PONG",
            Code::BYE => "BYE",
            Code::ICANSEE => "ICANSEE",
            Code::IKNOWABOUT => "IKNOWABOUT",
            Code::ICANTSEE => "ICANTSEE",
            Code::BROADCAST => "BROADCAST",
            Code::MESH_DIGEST => "MESH_DIGEST",
            Code::MESH_WANT => "MESH_WANT",
            Code::MESH_REPAIR => "MESH_REPAIR",
            Code::TABLE_WRITE => "TABLE_WRITE",
            Code::TABLE_DIGEST => "TABLE_DIGEST",
            Code::TABLE_WANT => "TABLE_WANT",
            Code::TABLE_ENTRIES => "TABLE_ENTRIES",
            Code::CHORD_FIND => "CHORD_FIND",
            Code::CHORD_FOUND => "CHORD_FOUND",
            Code::CHORD_GET_STATE => "CHORD_GET_STATE",
            Code::CHORD_STATE => "CHORD_STATE",
            Code::CHORD_NOTIFY => "CHORD_NOTIFY",
            Code::CHORD_STORE => "CHORD_STORE",
            Code::CHORD_STORED => "CHORD_STORED",
            Code::CHORD_FETCH => "CHORD_FETCH",
            Code::CHORD_VALUES => "CHORD_VALUES",
            Code::CHORD_HANDOVER => "CHORD_HANDOVER",
            Code::LIST => "LIST",
            Code::IHAVE => "IHAVE",
            Code::IMOVED => "IMOVED",
            Code::IDELETED => "IDELETED",
            Code::IWANT => "IWANT",
            Code::HEREIS => "HEREIS",
            Code::NOTFOUND => "NOTFOUND",
            Code::IREFUSE => "IREFUSE",
            Code::DROP_SUBSCRIBE => "DROP_SUBSCRIBE",
            Code::DROP_UNSUBSCRIBE => "DROP_UNSUBSCRIBE",
            Code::DROP_HEADS => "DROP_HEADS",
            Code::DROP_GET_VERSION => "DROP_GET_VERSION",
            Code::DROP_VERSION => "DROP_VERSION",
            Code::DROP_GET_FILES => "DROP_GET_FILES",
            Code::DROP_FILES => "DROP_FILES",
            Code::DROP_NOTFOUND => "DROP_NOTFOUND",
            Code::RUN_REQUEST => "RUN_REQUEST",
            Code::RUN_REFUSED => "RUN_REFUSED",
            Code::RUN_STARTED => "RUN_STARTED",
            Code::RUN_OUTPUT => "RUN_OUTPUT",
            Code::RUN_ACK => "RUN_ACK",
            Code::RUN_SIGNAL => "RUN_SIGNAL",
            Code::RUN_EXIT => "RUN_EXIT",
            _ => "UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_has_a_family_a_name_and_is_unique() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert!(code.family().is_some(), "{code:?}");
            assert_ne!(code.name(), "UNKNOWN");
            assert!(Code::ALL[i + 1..].iter().all(|c| c != code));
        }
        assert_eq!(Code::HELLO.family(), Some(Family::Session));
        assert_eq!(Code::BROADCAST.family(), Some(Family::Mesh));
        assert_eq!(Code(0x0300).family(), Some(Family::Chord));
        assert_eq!(Code(0x0700).family(), None);
        assert_eq!(Code::DROP_VERSION.family(), Some(Family::Drops));
        assert!(!Code(0x0508).is_known());
        assert!(!Code(0x02ff).is_known());
        assert_eq!(Code::TABLE_WRITE.family(), Some(Family::Table));
        assert!(!Code(0x030a).is_known());
        assert_eq!(Code::CHORD_FIND.family(), Some(Family::Chord));
        for f in Family::ALL {
            assert_eq!(Family::from_high_byte(f.high_byte()), Some(f));
            assert_eq!(f.bit(), 1 << f.high_byte());
        }
    }
}
