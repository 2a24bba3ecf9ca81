//! Redials (SPEC.md §8.10): addresses the session dials again on its own schedule, apart from
//! discovery's. A *configured* address (`Command::Connect`) is dialed for as long as the node
//! runs; a *saved* one (loaded from the known-peers blob) or a *lost* one (a link that went
//! away without a BYE) only for a bounded number of attempts. Each waits with exponential
//! backoff and jitter drawn from its own seeded ChaCha stream, so the same seed dials at the
//! same times.

use std::collections::BTreeMap;

use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use weft_protocol::NodeId;

use crate::connection::ConnId;
use crate::time::{Duration, Instant};

/// How long a link must have lasted (from its connection's opening) for its drop to be a
/// link that went away rather than a peer that drops links (SPEC.md §8.10): a configured
/// address's backoff resets only after such a link, and only such a link, lost, is redialed.
pub(crate) const LINK_SETTLED: Duration = Duration::from_secs(10);

/// How long to wait between dials of one address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The wait before the first redial.
    pub(crate) first: Duration,
    /// The longest wait.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait after `failures` failed dials (0: the first redial of an address whose link
    /// dropped): `first · 2^failures`, capped at `max`, less up to a quarter drawn from `rng`.
    pub(crate) fn wait(self, failures: u32, rng: &mut impl RngCore) -> Duration {
        let factor = 1u64 << failures.min(32);
        let full = self.first.0.saturating_mul(factor).min(self.max.0);
        let quarter = full / 4;
        let cut = if quarter == 0 {
            0
        } else {
            rng.next_u64() % quarter
        };
        Duration(full - cut)
    }
}

/// One address the session redials.
#[derive(Debug, Clone)]
struct Target {
    /// The node last reached at it, once a dial of it has linked.
    node: Option<NodeId>,
    /// Dialed for as long as the node runs (else `attempts_left` bounds it).
    configured: bool,
    /// Dials left before a saved or lost address is dropped.
    attempts_left: u8,
    /// Dials failed since it last linked.
    failures: u32,
    /// The dial under way, if any.
    dialing: Option<ConnId>,
    /// When it is next dialed; `None` while it is dialing or linked.
    next_dial_at: Option<Instant>,
}

/// What became of a failed dial of a redialed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// The address.
    pub(crate) addr: String,
    /// Dials of it failed in a row.
    pub(crate) failures: u32,
    /// The wait before the next dial; `None`: it is not dialed again.
    pub(crate) retry_in: Option<Duration>,
}

/// A redial that linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redialed {
    /// The address dialed.
    pub(crate) addr: String,
    /// Dials of it that had failed before.
    pub(crate) failures: u32,
    /// Configured (or given by `Command::Connect`): dialed on purpose, not a saved or lost
    /// address some peer named.
    pub(crate) configured: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Redials {
    targets: BTreeMap<String, Target>,
    configured_max: usize,
    /// Saved and lost addresses held at once.
    bounded_max: usize,
    backoff: Backoff,
    rng: ChaCha8Rng,
}

/// `Redials::configure` refused: the configured set is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Redials {
    pub(crate) fn new(
        configured_max: usize,
        bounded_max: usize,
        backoff: Backoff,
        rng: ChaCha8Rng,
    ) -> Redials {
        Redials {
            targets: BTreeMap::new(),
            configured_max,
            bounded_max,
            backoff,
            rng,
        }
    }

    /// Makes `addr` configured: dialed for as long as the node runs. Refused when
    /// `configured_max` other addresses are configured.
    pub(crate) fn configure(&mut self, addr: &str) -> Result<(), Full> {
        let configured = self.targets.values().filter(|t| t.configured).count();
        match self.targets.get_mut(addr) {
            Some(t) => t.configured = true,
            None if configured >= self.configured_max => return Err(Full),
            None => {
                self.targets.insert(
                    addr.to_owned(),
                    Target {
                        node: None,
                        configured: true,
                        attempts_left: 0,
                        failures: 0,
                        dialing: None,
                        next_dial_at: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Adds a saved or lost address `addr` of `node`, to be dialed at `at`, at most
    /// `attempts` times. An address already held keeps its schedule; past `bounded_max` such
    /// addresses the new one is not added.
    pub(crate) fn add_bounded(&mut self, addr: &str, node: NodeId, at: Instant, attempts: u8) {
        if self.targets.contains_key(addr) || attempts == 0 {
            return;
        }
        let bounded = self.targets.values().filter(|t| !t.configured).count();
        if bounded >= self.bounded_max {
            return;
        }
        self.targets.insert(
            addr.to_owned(),
            Target {
                node: Some(node),
                configured: false,
                attempts_left: attempts,
                failures: 0,
                dialing: None,
                next_dial_at: Some(at),
            },
        );
    }

    /// The wait before the first redial of an address whose link dropped.
    pub(crate) fn first_wait(&mut self) -> Duration {
        self.backoff.wait(0, &mut self.rng)
    }

    /// Whether an address was last reached at `node`.
    pub(crate) fn has_node(&self, node: &NodeId) -> bool {
        self.targets.values().any(|t| t.node.as_ref() == Some(node))
    }

    /// Forgets every address last reached at `node`; whether there was one.
    pub(crate) fn remove_node(&mut self, node: &NodeId) -> bool {
        let before = self.targets.len();
        self.targets.retain(|_, t| t.node.as_ref() != Some(node));
        self.targets.len() != before
    }

    /// Addresses due for a dial at `now`, in address order.
    pub(crate) fn due(&self, now: Instant) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, t)| t.dialing.is_none() && t.next_dial_at.is_some_and(|at| at <= now))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Whether `addr` is configured (or given by `Command::Connect`).
    pub(crate) fn is_configured(&self, addr: &str) -> bool {
        self.targets.get(addr).is_some_and(|t| t.configured)
    }

    /// Whether `conn` dials a configured address (or one given by `Command::Connect`).
    pub(crate) fn dials_on_purpose(&self, conn: ConnId) -> bool {
        self.targets
            .values()
            .any(|t| t.configured && t.dialing == Some(conn))
    }

    /// Forgets the saved or lost address `addr` (a configured one stays).
    pub(crate) fn give_up(&mut self, addr: &str) {
        if !self.is_configured(addr) {
            self.targets.remove(addr);
        }
    }

    /// The node last reached at `addr`.
    pub(crate) fn node_of(&self, addr: &str) -> Option<NodeId> {
        self.targets.get(addr).and_then(|t| t.node)
    }

    /// `addr` is dialed on `conn`.
    pub(crate) fn dialing(&mut self, addr: &str, conn: ConnId) {
        if let Some(t) = self.targets.get_mut(addr) {
            t.dialing = Some(conn);
            t.next_dial_at = None;
        }
    }

    /// `addr` is not dialed now (its node is linked, or no outbound slot is free): it waits
    /// until `at`, or, with `None`, until its link drops.
    pub(crate) fn postpone(&mut self, addr: &str, at: Option<Instant>) {
        if let Some(t) = self.targets.get_mut(addr) {
            t.next_dial_at = at;
        }
    }

    /// The dial on `conn` failed at `now`: the address backs off, or, a saved or lost one out
    /// of attempts, is dropped. `None` if `conn` was no redial.
    pub(crate) fn failed(&mut self, conn: ConnId, now: Instant) -> Option<Failed> {
        let (addr, t) = self
            .targets
            .iter_mut()
            .find(|(_, t)| t.dialing == Some(conn))?;
        let addr = addr.clone();
        t.dialing = None;
        t.failures = t.failures.saturating_add(1);
        if !t.configured {
            t.attempts_left = t.attempts_left.saturating_sub(1);
            if t.attempts_left == 0 {
                let failures = t.failures;
                self.targets.remove(&addr);
                return Some(Failed {
                    addr,
                    failures,
                    retry_in: None,
                });
            }
        }
        let wait = self.backoff.wait(t.failures - 1, &mut self.rng);
        t.next_dial_at = Some(now + wait);
        Some(Failed {
            addr,
            failures: t.failures,
            retry_in: Some(wait),
        })
    }

    /// Drops the address dialed on `conn` (it was this node's own).
    pub(crate) fn drop_conn(&mut self, conn: ConnId) {
        self.targets.retain(|_, t| t.dialing != Some(conn));
    }

    /// `node` is linked (through `conn`, if a dial made the link): its addresses stop waiting
    /// (their failures count on until the link drops: [`link_down`](Self::link_down)); a
    /// saved or lost address has done its work and is dropped. Returns what `conn` dialed,
    /// if it was a redial.
    pub(crate) fn linked(&mut self, conn: Option<ConnId>, node: NodeId) -> Option<Redialed> {
        let mut dialed = None;
        for (addr, t) in &mut self.targets {
            if conn.is_some() && t.dialing == conn {
                dialed = Some(Redialed {
                    addr: addr.clone(),
                    failures: t.failures,
                    configured: t.configured,
                });
                t.dialing = None;
                t.node = Some(node);
            }
            if t.node == Some(node) && t.dialing.is_none() {
                t.next_dial_at = None;
            }
        }
        self.targets
            .retain(|_, t| t.configured || t.node != Some(node) || t.dialing.is_some());
        dialed
    }

    /// Whether a dial of `addr` is under way.
    pub(crate) fn is_dialing(&self, addr: &str) -> bool {
        self.targets.get(addr).is_some_and(|t| t.dialing.is_some())
    }

    /// The link to `node` dropped at `now`: its configured addresses are dialed again, after
    /// the first wait if the link had `settled` (lasted [`LINK_SETTLED`]: their failures
    /// reset), else counting its drop as one more failure (a peer that takes links and drops
    /// them at once is dialed ever more slowly, not twice a second). Whether it had one.
    pub(crate) fn link_down(&mut self, node: &NodeId, now: Instant, settled: bool) -> bool {
        let mut any = false;
        let backoff = self.backoff;
        for t in self.targets.values_mut() {
            if t.configured && t.node.as_ref() == Some(node) {
                any = true;
                t.failures = if settled {
                    0
                } else {
                    t.failures.saturating_add(1)
                };
                if t.dialing.is_none() {
                    let wait = backoff.wait(t.failures.saturating_sub(1), &mut self.rng);
                    t.next_dial_at = Some(now + wait);
                }
            }
        }
        any
    }

    /// The next dial's time.
    pub(crate) fn next_dial_at(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter(|t| t.dialing.is_none())
            .filter_map(|t| t.next_dial_at)
            .min()
    }

    /// Addresses held.
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    const SECOND: u64 = 1_000_000_000;

    fn backoff() -> Backoff {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }

    fn redials(seed: u64) -> Redials {
        Redials::new(4, 4, backoff(), ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn the_wait_doubles_to_the_cap_less_at_most_a_quarter() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for failures in 0..40 {
            let full = (500_000_000u64 << failures.min(32)).min(60 * SECOND);
            let wait = backoff().wait(failures, &mut rng).0;
            assert!(wait <= full && wait > full - full / 4, "{failures}: {wait}");
        }
        let capped = backoff().wait(30, &mut rng).0;
        assert!(capped > 45 * SECOND && capped <= 60 * SECOND);
    }

    #[test]
    fn jitter_is_the_same_for_the_same_seed_and_differs_across_seeds() {
        let waits = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..8)
                .map(|f| backoff().wait(f, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(waits(1), waits(1));
        assert_ne!(waits(1), waits(2));
    }

    #[test]
    fn a_configured_address_backs_off_forever_and_resets_on_link() {
        let mut r = redials(1);
        r.configure("a").unwrap();
        let mut now = Instant(0);
        let mut last = Duration::ZERO;
        for n in 1..=12u64 {
            r.dialing("a", ConnId(2 * n));
            let f = r.failed(ConnId(2 * n), now).unwrap();
            let wait = f.retry_in.expect("configured: always retried");
            assert!(
                wait.0 >= last.0 * 3 / 2 || wait.0 > 45 * SECOND,
                "{n}: {wait:?}"
            );
            last = wait;
            now = r.next_dial_at().unwrap();
            assert_eq!(r.due(now), vec!["a".to_string()]);
        }
        r.dialing("a", ConnId(100));
        let linked = r.linked(Some(ConnId(100)), NodeId([1; 32]));
        let expected = Redialed {
            addr: "a".into(),
            failures: 12,
            configured: true,
        };
        assert_eq!(linked, Some(expected));
        assert_eq!(r.next_dial_at(), None, "linked: nothing to dial");
        assert!(r.link_down(&NodeId([1; 32]), now, true));
        let again = r.next_dial_at().unwrap();
        assert!(
            again.saturating_since(now) <= Duration::from_millis(500),
            "reset"
        );
        assert!(r.remove_node(&NodeId([1; 32])));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_saved_address_gives_up_after_its_attempts() {
        let mut r = redials(1);
        r.add_bounded("s", NodeId([2; 32]), Instant(0), 2);
        assert_eq!(r.due(Instant(0)), vec!["s".to_string()]);
        r.dialing("s", ConnId(2));
        assert!(r.failed(ConnId(2), Instant(0)).unwrap().retry_in.is_some());
        r.dialing("s", ConnId(4));
        assert_eq!(r.failed(ConnId(4), Instant(0)).unwrap().retry_in, None);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn the_configured_set_is_bounded() {
        let mut r = redials(1);
        for a in ["a", "b", "c", "d"] {
            r.configure(a).unwrap();
        }
        assert_eq!(r.configure("e"), Err(Full));
        assert_eq!(r.configure("a"), Ok(()), "already configured");
    }
}
