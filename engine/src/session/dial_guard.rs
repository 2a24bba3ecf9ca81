//! Bounds on discovery's dials of addresses it was told about (SPEC.md §10.7): per address,
//! a count of unanswered dials with exponential backoff that no announcement resets; for all
//! addresses together, at most so many dials in any 60 seconds.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use weft_protocol::NodeId;

use crate::time::{Duration, Instant};

/// The window of the global dial budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// A record not dialed for this long is forgotten: an address out of attempts after a long
/// partition is dialed again once the network has healed (it was never dialed again, and
/// two halves that knew each other only through discovery never merged). At most
/// `attempts_max` unanswered dials per address per this long.
pub(crate) const DIAL_RECORD_IDLE_FORGET: Duration = Duration::from_secs(3600);

/// One address's record.
#[derive(Debug, Clone)]
struct Record {
    /// Dials not answered by the node they were for.
    unanswered: u8,
    /// No dial before this.
    next_dial_at: Instant,
    /// When it was last dialed (the least recent record is forgotten first).
    last_dialed: Instant,
    /// The node a redial of the address was last for (the peer that named it): a
    /// connection from that node, from the address's host, forgives the address.
    for_node: Option<NodeId>,
}

impl Record {
    /// Whether it is still held at `now` (dialed within [`DIAL_RECORD_IDLE_FORGET`]).
    fn held(&self, now: Instant) -> bool {
        now.saturating_since(self.last_dialed) < DIAL_RECORD_IDLE_FORGET
    }
}

/// The key of `addr`'s record: one spelling per socket address (IPv6 in its canonical text,
/// an IPv4-mapped IPv6 address as IPv4), so that liars announcing one address under many
/// spellings do not get it dialed once per spelling. What does not parse is its own key.
fn key(addr: &str) -> Cow<'_, str> {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => Cow::Owned(SocketAddr::from((v4, v6.port())).to_string()),
            None => Cow::Owned(SocketAddr::from((*v6.ip(), v6.port())).to_string()),
        },
        Ok(v4) => Cow::Owned(v4.to_string()),
        Err(_) => Cow::Borrowed(addr),
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct DialGuard {
    by_addr: BTreeMap<String, Record>,
    records_max: usize,
    /// When each dial in the current window was made, oldest first.
    recent: VecDeque<Instant>,
}

impl DialGuard {
    /// A guard remembering at most `records_max` addresses.
    pub(crate) fn new(records_max: usize) -> DialGuard {
        DialGuard {
            by_addr: BTreeMap::new(),
            records_max: records_max.max(1),
            recent: VecDeque::new(),
        }
    }

    /// Whether `addr` may be dialed at `now`, by its own record.
    pub(crate) fn allows(&self, addr: &str, now: Instant, attempts_max: u8) -> bool {
        self.held(addr, now)
            .is_none_or(|r| r.unanswered < attempts_max && r.next_dial_at <= now)
    }

    /// `addr`'s record, if it is still held at `now`.
    fn held(&self, addr: &str, now: Instant) -> Option<&Record> {
        self.by_addr.get(key(addr).as_ref()).filter(|r| r.held(now))
    }

    /// Whether `addr` has had `attempts_max` dials unanswered: not allowed again while its
    /// record is held.
    pub(crate) fn exhausted(&self, addr: &str, now: Instant, attempts_max: u8) -> bool {
        self.held(addr, now)
            .is_some_and(|r| r.unanswered >= attempts_max)
    }

    /// Whether the global budget has room for a dial at `now` (at most `per_minute` in any
    /// 60 seconds).
    pub(crate) fn budget_allows(&mut self, now: Instant, per_minute: usize) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_since(*t) >= BUDGET_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.len() < per_minute
    }

    /// The time `addr` may next be dialed by its record, if it has one held at `now`.
    pub(crate) fn next_allowed(&self, addr: &str, now: Instant) -> Option<Instant> {
        self.held(addr, now).map(|r| r.next_dial_at)
    }

    /// When the budget next has room, if it is full at `now` (after
    /// [`budget_allows`](Self::budget_allows) pruned it).
    pub(crate) fn budget_free_at(&self, per_minute: usize) -> Option<Instant> {
        let full = self.recent.len() >= per_minute;
        let oldest = self.recent.front().filter(|_| full)?;
        Some(*oldest + BUDGET_WINDOW)
    }

    /// `addr` is redialed at `now` for `node` (the peer that named it): as
    /// [`dialed`](Self::dialed), and a connection from `node` forgives it
    /// ([`connected`](Self::connected)).
    pub(crate) fn redialed(&mut self, addr: &str, now: Instant, backoff: Duration, node: NodeId) {
        self.dialed(addr, now, backoff);
        if let Some(record) = self.by_addr.get_mut(key(addr).as_ref()) {
            record.for_node = Some(node);
        }
    }

    /// A connection from `node` was established, its remote address `from`: the addresses
    /// last redialed for it on `from`'s host are forgiven (it is back). One on another host
    /// is not: a node that names a third party's address, links, drops and links again
    /// would otherwise have that address dialed once per cycle for ever.
    pub(crate) fn connected(&mut self, node: &NodeId, from: &str) {
        // Spelled as the records are (an IPv4 peer reaching a dual-stack listener comes as
        // an IPv4-mapped IPv6 address).
        let from = key(from);
        let host = super::address::host_of(&from);
        self.by_addr
            .retain(|a, r| r.for_node.as_ref() != Some(node) || super::address::host_of(a) != host);
    }

    /// `addr` is dialed at `now`: counted as unanswered until [`answered`](Self::answered),
    /// next allowed `backoff · 2^unanswered` later.
    pub(crate) fn dialed(&mut self, addr: &str, now: Instant, backoff: Duration) {
        let addr = key(addr);
        let addr = addr.as_ref();
        self.recent.push_back(now);
        if !self.by_addr.contains_key(addr) && self.by_addr.len() >= self.records_max {
            let oldest = self
                .by_addr
                .iter()
                .min_by_key(|(a, r)| (r.last_dialed, a.as_str()))
                .map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                self.by_addr.remove(&oldest);
            }
        }
        let record = self.by_addr.entry(addr.to_owned()).or_insert(Record {
            unanswered: 0,
            next_dial_at: now,
            last_dialed: now,
            for_node: None,
        });
        if !record.held(now) {
            // Forgotten: counted from the start again.
            record.unanswered = 0;
            record.for_node = None;
        }
        record.unanswered = record.unanswered.saturating_add(1);
        record.last_dialed = now;
        let factor = 1u64 << record.unanswered.min(16);
        record.next_dial_at = now + Duration(backoff.0.saturating_mul(factor));
    }

    /// A dial of `addr` reached the node it was for: the address is forgiven.
    pub(crate) fn answered(&mut self, addr: &str) {
        self.by_addr.remove(key(addr).as_ref());
    }

    /// Addresses remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_backs_off_and_stops_after_its_attempts() {
        let mut g = DialGuard::new(4);
        let backoff = Duration::from_secs(2);
        let mut now = Instant::ZERO;
        for attempt in 1..=3u32 {
            assert!(g.allows("a", now, 3), "attempt {attempt}");
            g.dialed("a", now, backoff);
            assert!(!g.allows("a", now + Duration::from_secs(1), 3));
            now = now + Duration::from_secs(2 << attempt);
        }
        assert!(!g.allows("a", now + Duration::from_secs(3_000), 3));
        g.answered("a");
        assert!(g.allows("a", now, 3));
    }

    /// An address out of attempts is dialed again once its record has gone undialed for
    /// `DIAL_RECORD_IDLE_FORGET` (a long partition healed), counted from the start again.
    #[test]
    fn a_record_left_undialed_for_an_hour_is_forgotten() {
        let mut g = DialGuard::new(4);
        let backoff = Duration::from_secs(2);
        let t = Instant::ZERO;
        for _ in 0..3 {
            g.dialed("a", t, backoff);
        }
        assert!(g.exhausted("a", t, 3));
        let later = t + DIAL_RECORD_IDLE_FORGET;
        assert!(!g.exhausted("a", later, 3) && g.allows("a", later, 3));
        assert_eq!(g.next_allowed("a", later), None);
        g.dialed("a", later, backoff);
        assert!(!g.exhausted("a", later, 3), "one dial since, not four");
    }

    /// A connection from the node a redial was for forgives the address only if it comes
    /// from the address's host: one that names a third party's address, links, drops and
    /// links again from its own host does not get that address dialed once per cycle.
    #[test]
    fn only_a_connection_from_the_addresss_host_forgives_it() {
        let mut g = DialGuard::new(4);
        let t = Instant::ZERO;
        let node = NodeId([7; 32]);
        g.redialed("192.0.2.9:22", t, Duration::from_secs(2), node);
        g.connected(&node, "198.51.100.1:40000");
        assert_eq!(g.len(), 1, "from another host: kept");
        g.connected(&node, "192.0.2.9:51234");
        assert_eq!(g.len(), 0, "from its host: forgiven");
        // An IPv4 peer on a dual-stack listener comes as an IPv4-mapped address.
        g.redialed("192.0.2.9:22", t, Duration::from_secs(2), node);
        g.connected(&node, "[::ffff:192.0.2.9]:51234");
        assert_eq!(g.len(), 0, "the same host, spelled as IPv6");
    }

    #[test]
    fn the_budget_counts_dials_in_any_minute_and_records_are_bounded() {
        let mut g = DialGuard::new(2);
        let t = Instant::ZERO;
        for i in 0..3 {
            assert!(g.budget_allows(t, 3));
            g.dialed(&format!("a{i}"), t, Duration::from_secs(1));
        }
        assert_eq!(g.len(), 2);
        assert!(!g.budget_allows(t + Duration::from_secs(59), 3));
        assert!(g.budget_allows(t + BUDGET_WINDOW, 3));
    }

    #[test]
    fn one_address_under_many_spellings_is_one_record() {
        let mut g = DialGuard::new(8);
        let t = Instant::ZERO;
        let backoff = Duration::from_secs(1);
        g.dialed("[2001:DB8::1]:7000", t, backoff);
        g.dialed("[2001:0db8:0000::0001]:7000", t, backoff);
        assert_eq!(g.len(), 1);
        assert!(!g.allows("[2001:db8::1]:7000", t + Duration::from_secs(3), 2));
        g.dialed("[::ffff:1.2.3.4]:7000", t, backoff);
        g.dialed("[::ffff:102:304]:7000", t, backoff);
        assert!(!g.allows("1.2.3.4:7000", t + Duration::from_secs(3), 2));
        assert_eq!(g.len(), 2);
        g.answered("[::FFFF:1.2.3.4]:7000");
        assert!(g.allows("1.2.3.4:7000", t, 2));
        // Not a socket address: its own key.
        g.dialed("host.example:7000", t, backoff);
        assert_eq!(g.len(), 2);
    }
}
