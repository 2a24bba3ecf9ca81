//! What the log says of redialed addresses (SPEC.md §8.10): a failed dial at WARN the first
//! time and again only when its reason changes, not on every retry; INFO once it links; and,
//! at ERROR once per address, a peer refusing this node because another node runs with its
//! key.

use std::collections::{BTreeMap, BTreeSet};

use weft_engine::{CloseReason, NodeId};

/// Addresses remembered; past it the log starts afresh (one more WARN each at worst).
const ADDRESSES_MAX: usize = 1024;

/// The last reason logged for each failing address, and the addresses whose stale refusal
/// was logged.
#[derive(Debug, Default)]
pub(crate) struct DialLog {
    failing: BTreeMap<String, CloseReason>,
    refused_as_stale: BTreeSet<String>,
}

impl DialLog {
    /// A dial of `addr` failed, its `attempts`th in a row; `retry_in_ms`: when it is tried
    /// again, if it is.
    pub(crate) fn failed(
        &mut self,
        addr: String,
        attempts: u32,
        retry_in_ms: Option<u64>,
        reason: CloseReason,
    ) {
        let retry = match retry_in_ms {
            Some(ms) => format!("retrying in {:.1} s", ms as f64 / 1000.0),
            None => "giving up".to_owned(),
        };
        if self.failing.get(&addr) == Some(&reason) {
            if retry_in_ms.is_none() {
                tracing::warn!("cannot reach {addr} ({}), {retry}", describe(&reason));
                self.failing.remove(&addr);
            } else {
                tracing::debug!("dial {attempts} of {addr} failed ({reason:?}), {retry}");
            }
            return;
        }
        tracing::warn!(
            "cannot reach {addr}: {} (attempt {attempts}), {retry}; further failures for the same reason are logged at DEBUG",
            describe(&reason)
        );
        if self.failing.len() >= ADDRESSES_MAX {
            self.failing.clear();
        }
        if retry_in_ms.is_some() {
            self.failing.insert(addr, reason);
        } else {
            self.failing.remove(&addr);
        }
    }

    /// A redialed `addr` linked to `node` after `failures` failed dials.
    pub(crate) fn linked(&mut self, addr: &str, node: &NodeId, failures: u32) {
        self.failing.remove(addr);
        tracing::info!("reached {addr} ({node}) after {failures} failed dials");
    }

    /// The peer at `addr` refused this node as a stale run of its key.
    pub(crate) fn refused_as_stale(&mut self, addr: String) {
        if self.refused_as_stale.contains(&addr) {
            return;
        }
        tracing::error!(
            "peer {addr} refused this node: another node is running with this node's key (was the state folder copied?)"
        );
        if self.refused_as_stale.len() >= ADDRESSES_MAX {
            self.refused_as_stale.clear();
        }
        self.refused_as_stale.insert(addr);
    }
}

/// A failed dial's reason, in words.
pub(crate) fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ConnectFailed => "connection refused or unreachable".to_owned(),
        // Under Noise a peer with another network secret closes on the first message without
        // a byte (SPEC.md §21.7), as does one refusing a connection it has no room for.
        CloseReason::Lost => {
            "the connection closed during the handshake (another network secret, or no room)"
                .to_owned()
        }
        CloseReason::Noise(e) => e.to_string(),
        CloseReason::HandshakeTimeout => "the handshake timed out".to_owned(),
        CloseReason::WrongNetwork => "it belongs to another network".to_owned(),
        CloseReason::PeerSaidBye(bye) => format!("it refused the connection ({bye:?})"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_address_is_remembered_until_its_reason_changes_or_it_links() {
        let mut log = DialLog::default();
        log.failed("a".into(), 1, Some(500), CloseReason::ConnectFailed);
        assert_eq!(log.failing.get("a"), Some(&CloseReason::ConnectFailed));
        log.failed("a".into(), 2, Some(1000), CloseReason::HandshakeTimeout);
        assert_eq!(log.failing.get("a"), Some(&CloseReason::HandshakeTimeout));
        log.linked("a", &NodeId([1; 32]), 2);
        assert!(log.failing.is_empty());
        log.refused_as_stale("b".into());
        log.refused_as_stale("b".into());
        assert_eq!(log.refused_as_stale.len(), 1);
    }
}
