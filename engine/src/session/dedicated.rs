//! Dedicated connections (SPEC.md §8.9): a connection a protocol asked for to reach a peer it
//! has no link to. It carries that protocol's family (and session frames) only and is never a
//! link: no floods, cascades or digests travel it, and it is not counted against the link caps.

use std::collections::BTreeMap;

use weft_protocol::{Family, NodeId};

use crate::connection::ConnId;
use crate::sending::{Class, Outgoing};

/// Messages held for one peer while its dedicated connection opens; more are dropped.
pub(crate) const DEDICATED_PENDING_MAX: usize = 64;

/// Open dedicated connections, the dials under way, and what waits for them.
#[derive(Debug, Default)]
pub(crate) struct Dedicated {
    /// Established, by peer and family.
    pub(crate) by_peer: BTreeMap<(NodeId, Family), ConnId>,
    /// Dials under way, with the peer and family they are for.
    pub(crate) dialing: BTreeMap<ConnId, (NodeId, Family)>,
    /// Messages waiting for a dial, by peer and family (at most `DEDICATED_PENDING_MAX` each).
    pub(crate) pending: BTreeMap<(NodeId, Family), Vec<(Outgoing, Class)>>,
}

impl Dedicated {
    /// Open or opening.
    pub(crate) fn len(&self) -> usize {
        self.by_peer.len() + self.dialing.len()
    }

    /// A connection closed: forget it.
    pub(crate) fn closed(&mut self, conn: ConnId) {
        if let Some(key) = self.dialing.remove(&conn) {
            self.pending.remove(&key);
        }
        self.by_peer.retain(|_, c| *c != conn);
    }

    /// Holds a message for a dial under way; false if none is under way for that peer.
    pub(crate) fn hold(&mut self, key: (NodeId, Family), message: &Outgoing, class: Class) -> bool {
        let Some(queue) = self.pending.get_mut(&key) else {
            return false;
        };
        if queue.len() < DEDICATED_PENDING_MAX {
            queue.push((message.clone(), class));
        }
        true
    }
}
