//! Redials of lost and configured links, the address book's dials and the known peers'
//! store (SPEC.md §8.10, §8.11, §10.7).

use weft_protocol::NodeId;

use super::address;
use super::known_peers::{self, KnownPeer};
use super::{KnownLoad, Session, SessionTimer, LOAD_KNOWN, STORE_KNOWN};
use crate::connection::{CloseReason, ConnId, Direction};
use crate::io::{Event, HostRequest, HostResult, Output};
use crate::time::Instant;

impl Session {
    /// Dials every redialed address that is due and not linked, while outbound slots last.
    pub(super) fn on_redial_timer(&mut self, now: Instant) {
        for addr in self.redials.due(now) {
            if let Some(node) = self.redials.node_of(&addr) {
                if self.links.contains_key(&node) {
                    self.redials.linked(None, node);
                    continue;
                }
            }
            if self.count(Direction::Outbound) >= self.limits.outbound_max {
                let at = now + self.redials.first_wait();
                self.redials.postpone(&addr, Some(at));
                continue;
            }
            if !self.redials.is_configured(&addr) {
                if !self.guard_allows_redial(now, &addr) {
                    continue;
                }
                // A saved or lost address always names its node (`add_bounded`).
                if let Some(node) = self.redials.node_of(&addr) {
                    let backoff = self.timer_periods.dial_backoff;
                    self.dial_guard.redialed(&addr, now, backoff, node);
                }
            }
            let conn = self.dial(now, addr.clone());
            self.redials.dialing(&addr, conn);
            self.metrics.redials += 1;
        }
        self.arm_redial();
    }

    /// Whether the saved or lost address `addr`, due at `now`, may be dialed: such an
    /// address is one a peer named (its HELLO's listen address), so it is dialed within
    /// discovery's bounds (SPEC.md §10.7, §8.10): its per-address record and the dial
    /// budget. If not, it waits until both allow it, or, out of attempts by its record, is
    /// given up.
    fn guard_allows_redial(&mut self, now: Instant, addr: &str) -> bool {
        let attempts_max = self.limits.dial_address_attempts_max;
        let per_minute = self.limits.discovery_dials_per_minute;
        let by_record = self.dial_guard.allows(addr, now, attempts_max);
        if by_record && self.dial_guard.budget_allows(now, per_minute) {
            return true;
        }
        self.metrics.redials_refused += 1;
        if self.dial_guard.exhausted(addr, now, attempts_max) {
            self.redials.give_up(addr);
            return false;
        }
        let record_at = self
            .dial_guard
            .next_allowed(addr, now)
            .filter(|_| !by_record);
        let budget_at = self.dial_guard.budget_free_at(per_minute);
        let at = record_at
            .max(budget_at)
            .filter(|at| *at > now)
            .unwrap_or(now + self.timer_periods.dial_backoff);
        self.redials.postpone(addr, Some(at));
        false
    }

    /// Arms the redial timer for the next due address, if any.
    pub(super) fn arm_redial(&mut self) {
        match self.redials.next_dial_at() {
            Some(at) if !self.shut_down => self.timers.set(SessionTimer::Redial, at),
            _ => self.timers.cancel(SessionTimer::Redial),
        }
    }

    /// Hands the known peers to the host if they changed, once their load is answered and no
    /// store is under way.
    pub(super) fn store_known(&mut self) {
        if self.known_load != KnownLoad::Done || self.known_storing {
            return;
        }
        if let Some(bytes) = self.known.take_changed() {
            self.known_storing = true;
            let name = known_peers::STATE_NAME.into();
            self.requests
                .push_back((STORE_KNOWN, HostRequest::StoreState { name, bytes }));
        }
    }

    /// The host answered the session's request `token`.
    pub(crate) fn completed(&mut self, now: Instant, token: u64, result: HostResult) {
        match (token, result) {
            (LOAD_KNOWN, result) => {
                self.known_load = KnownLoad::Done;
                match result {
                    HostResult::Loaded(Some(blob)) => match known_peers::decode(&blob) {
                        Some(entries) => self.load_known(now, entries),
                        None => self.metrics.known_peers_refused += 1,
                    },
                    HostResult::Loaded(None) => {}
                    _ => {
                        self.known_load = KnownLoad::Failed;
                        self.metrics.known_peers_state_failures += 1;
                    }
                }
            }
            (_, HostResult::Stored) => {
                self.known_storing = false;
                self.metrics.known_peers_stores += 1;
            }
            _ => {
                self.known_storing = false;
                self.known.store_failed();
                self.metrics.known_peers_state_failures += 1;
            }
        }
    }

    /// Saved peers, loaded: each not linked and not this node is dialed, a bounded number of
    /// times, starting now.
    pub(super) fn load_known(&mut self, now: Instant, entries: Vec<KnownPeer>) {
        let me = self.identity.node_id();
        let attempts = self.limits.redial_attempts_max;
        for e in &entries {
            if e.node != me
                && !self.links.contains_key(&e.node)
                && !address::is_unspecified(&e.addr)
            {
                self.redials.add_bounded(&e.addr, e.node, now, attempts);
            }
        }
        self.known
            .loaded(entries.into_iter().filter(|e| e.node != me).collect());
        self.arm_redial();
    }

    /// A dial (`conn`, outbound, not yet established) ended for `reason` before its
    /// handshake finished: counted, and, if it was a redial, backed off and reported.
    pub(super) fn dial_ended(&mut self, now: Instant, conn: ConnId, reason: &CloseReason) {
        if matches!(reason, CloseReason::Shutdown | CloseReason::Requested) {
            return;
        }
        if *reason == CloseReason::SelfConnection {
            // A configured address of this very node: never dialed again.
            self.redials.drop_conn(conn);
            return;
        }
        self.metrics.dials_failed += 1;
        if !reason.is_fault() {
            self.metrics.connections_failed += 1;
        }
        if let Some(failed) = self.redials.failed(conn, now) {
            self.outputs.push_back(Output::Event(Event::DialFailed {
                addr: failed.addr,
                attempts: failed.failures,
                retry_in_ms: failed.retry_in.map(|d| d.as_millis()),
                reason: reason.clone(),
            }));
            self.arm_redial();
        }
    }

    /// The link to `node` (listening at `listen_addr`, its connection opened at `opened_at`)
    /// went away for `reason`: a configured address of it is redialed soon (with a growing
    /// wait if the link had not settled); a settled link lost without a BYE is redialed a
    /// bounded number of times.
    pub(super) fn redial_after_link_down(
        &mut self,
        now: Instant,
        node: NodeId,
        listen_addr: Option<String>,
        reason: &CloseReason,
        opened_at: Instant,
    ) {
        let settled = now.saturating_since(opened_at) >= super::redial::LINK_SETTLED;
        if self.shut_down || self.redials.link_down(&node, now, settled) {
            return self.arm_redial();
        }
        let lost = matches!(reason, CloseReason::Lost | CloseReason::Timeout);
        if let (true, true, Some(addr)) = (lost, settled, listen_addr) {
            let at = now + self.redials.first_wait();
            let attempts = self.limits.redial_attempts_max;
            self.redials.add_bounded(&addr, node, at, attempts);
            self.arm_redial();
        }
    }

    /// Dials one due address-book entry if outbound links are below target (SPEC.md §10.7).
    pub(super) fn on_dial_timer(&mut self, now: Instant) {
        let limits = &self.limits;
        if self.count(Direction::Outbound) >= limits.outbound_target.min(limits.outbound_max) {
            return;
        }
        let links = &self.links;
        let dialing: Vec<NodeId> = self.dial_targets.values().copied().collect();
        let me = self.identity.node_id();
        let backoff = self.timer_periods.dial_backoff;
        let (guard, attempts_max) = (&self.dial_guard, limits.dial_address_attempts_max);
        let disconnected = &self.disconnected;
        let mut refused = false;
        let picked = self.book.pick_dial(now, &mut self.rng, backoff, |n, addr| {
            let wanted = *n != me
                && !links.contains_key(n)
                && !dialing.contains(n)
                && !disconnected.contains(n);
            let allowed = guard.allows(addr, now, attempts_max);
            refused |= wanted && !allowed;
            wanted && allowed
        });
        if refused {
            self.metrics.discovery_dials_refused += 1;
        }
        let Some((node, addr)) = picked else {
            return;
        };
        if !self
            .dial_guard
            .budget_allows(now, self.limits.discovery_dials_per_minute)
        {
            self.metrics.discovery_dials_refused += 1;
            return;
        }
        self.dial_guard.dialed(&addr, now, backoff);
        let conn = self.dial(now, addr);
        self.dial_targets.insert(conn, node);
        self.metrics.discovery_dials += 1;
    }
}
