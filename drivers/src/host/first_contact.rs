//! A joining node's first contact (`weft join`): it must link to the network through the peer
//! it was given within a stated time, or stop with the reason. A peer of another network, or
//! an address where something other than a weft node answers, stops it at once; any other
//! failed dial is retried as usual until the time is up. Once any
//! peer links, the node has joined and this watch ends.

use weft_engine::protocol::{ByeReason, ProtocolError};
use weft_engine::{CloseReason, Duration, Instant};

use super::RunError;
use crate::dial_log;

/// The peer a joining node must reach, and how long it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstContact {
    /// The peer's address (`IP:PORT`), as the node dials it.
    pub addr: String,
    /// How long the node has to link to it.
    pub wait: Duration,
}

/// A first contact under way.
#[derive(Debug)]
pub(super) struct Watch {
    addr: String,
    wait: Duration,
    /// When the node stops if it has not linked.
    pub(super) by: Instant,
    /// Why the last dial of `addr` failed.
    last: Option<CloseReason>,
}

impl Watch {
    /// Watches `contact` from `now`.
    pub(super) fn new(now: Instant, contact: FirstContact) -> Watch {
        Watch {
            by: now + contact.wait,
            addr: contact.addr,
            wait: contact.wait,
            last: None,
        }
    }

    /// A dial of `addr` failed for `reason` (`given_up`: it is not tried again): the error
    /// the node stops in, if this failure ends the first contact.
    pub(super) fn dial_failed(
        &mut self,
        addr: &str,
        reason: CloseReason,
        given_up: bool,
    ) -> Option<RunError> {
        if addr != self.addr {
            return None;
        }
        let another_network = matches!(
            reason,
            CloseReason::WrongNetwork
                | CloseReason::BroadcastModeMismatch
                | CloseReason::PeerSaidBye(ByeReason::WrongNetwork)
        );
        if another_network {
            return Some(RunError::NotJoined(format!(
                "cannot join through {}: it belongs to another network (check --name, and the network secret if there is one)",
                self.addr
            )));
        }
        let describe = dial_log::describe(&reason);
        // Bytes that are not a weft handshake (a peer with another network secret closes
        // without a byte instead, SPEC.md §21.7): some other service listens there.
        let not_weft = match &reason {
            CloseReason::Protocol(ProtocolError::UnsupportedVersion(v)) => {
                Some(format!("it speaks version {v} of weft's wire format"))
            }
            CloseReason::Noise(_) | CloseReason::Protocol(_) => {
                Some(format!("it does not answer as a weft node ({describe})"))
            }
            _ => None,
        };
        if let Some(why) = not_weft {
            return Some(RunError::NotJoined(format!(
                "cannot join through {}: {why}",
                self.addr
            )));
        }
        self.last = Some(reason);
        given_up
            .then(|| RunError::NotJoined(format!("cannot join through {}: {describe}", self.addr)))
    }

    /// The error the node stops in once `by` has passed.
    pub(super) fn timed_out(&self) -> RunError {
        let why = match &self.last {
            Some(reason) => dial_log::describe(reason),
            None => "no answer".to_owned(),
        };
        let ms = self.wait.as_millis();
        let wait = if ms.is_multiple_of(1000) {
            format!("{} s", ms / 1000)
        } else {
            format!("{ms} ms")
        };
        RunError::NotJoined(format!(
            "cannot join through {}: not linked within {wait} ({why})",
            self.addr
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        let contact = FirstContact {
            addr: "127.0.0.1:9".into(),
            wait: Duration::from_secs(20),
        };
        Watch::new(Instant::ZERO, contact)
    }

    #[test]
    fn a_peer_of_another_network_ends_it_at_once() {
        for reason in [
            CloseReason::WrongNetwork,
            CloseReason::BroadcastModeMismatch,
            CloseReason::PeerSaidBye(ByeReason::WrongNetwork),
        ] {
            let error = watch().dial_failed("127.0.0.1:9", reason, false);
            let text = error.expect("another network ends the join").to_string();
            assert!(text.contains("another network"), "{text}");
        }
    }

    #[test]
    fn a_peer_that_does_not_speak_weft_ends_it_at_once() {
        let reason = CloseReason::Protocol(ProtocolError::BadCompression);
        let error = watch().dial_failed("127.0.0.1:9", reason, false);
        let text = error.expect("not weft ends the join").to_string();
        assert!(text.contains("does not answer as a weft node"), "{text}");
    }

    #[test]
    fn other_failures_are_retried_and_named_when_time_is_up() {
        let mut w = watch();
        assert!(w
            .dial_failed("127.0.0.1:9", CloseReason::ConnectFailed, false)
            .is_none());
        assert!(w
            .dial_failed("127.0.0.1:8", CloseReason::WrongNetwork, false)
            .is_none());
        assert_eq!(w.by, Instant::ZERO + Duration::from_secs(20));
        let text = w.timed_out().to_string();
        assert!(text.contains("within 20 s"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        let given_up = w.dial_failed("127.0.0.1:9", CloseReason::HandshakeTimeout, true);
        let text = given_up.expect("a dial given up ends the join").to_string();
        assert!(text.contains("timed out"), "{text}");
    }
}
