//! The node's established mesh links: one connection per peer.

use std::collections::BTreeMap;

use weft_protocol::NodeId;

use crate::connection::ConnId;

/// The one established link per peer, by node id. The connections are also kept as a plain
/// list in node-id order: every relay walks them, and links change rarely.
#[derive(Debug, Default)]
pub(crate) struct Links {
    by_node: BTreeMap<NodeId, ConnId>,
    /// `by_node`'s values, in its order.
    conns: Vec<ConnId>,
}

impl Links {
    /// The link to `node`.
    pub(crate) fn get(&self, node: &NodeId) -> Option<&ConnId> {
        self.by_node.get(node)
    }

    /// Whether there is a link to `node`.
    pub(crate) fn contains_key(&self, node: &NodeId) -> bool {
        self.by_node.contains_key(node)
    }

    /// Sets the link to `node`; returns the one it replaces.
    pub(crate) fn insert(&mut self, node: NodeId, conn: ConnId) -> Option<ConnId> {
        let old = self.by_node.insert(node, conn);
        self.rebuild();
        old
    }

    /// Forgets the link to `node`.
    pub(crate) fn remove(&mut self, node: &NodeId) -> Option<ConnId> {
        let old = self.by_node.remove(node);
        if old.is_some() {
            self.rebuild();
        }
        old
    }

    /// Links held.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// (peer, connection), in node-id order.
    pub(crate) fn iter(&self) -> std::collections::btree_map::Iter<'_, NodeId, ConnId> {
        self.by_node.iter()
    }

    /// The connections, in node-id order.
    pub(crate) fn values(&self) -> core::slice::Iter<'_, ConnId> {
        self.conns.iter()
    }

    fn rebuild(&mut self) {
        self.conns.clear();
        self.conns.extend(self.by_node.values().copied());
    }
}

impl<'a> IntoIterator for &'a Links {
    type Item = (&'a NodeId, &'a ConnId);
    type IntoIter = std::collections::btree_map::Iter<'a, NodeId, ConnId>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_node.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    quickcheck! {
        /// Any inserts and removes: the list is the map's values, in the map's order.
        fn the_list_follows_the_map(ops: Vec<(u8, Option<u64>)>) -> bool {
            let mut links = Links::default();
            let mut model = BTreeMap::new();
            for (node, op) in ops {
                let id = NodeId([node % 8; 32]);
                let same = match op {
                    Some(c) => links.insert(id, ConnId(c)) == model.insert(id, ConnId(c)),
                    None => links.remove(&id) == model.remove(&id),
                };
                let list: Vec<ConnId> = links.values().copied().collect();
                let want: Vec<ConnId> = model.values().copied().collect();
                if !same || list != want || links.len() != model.len() {
                    return false;
                }
            }
            true
        }
    }
}
