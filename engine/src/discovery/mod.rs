//! Discovery (ploppy, SPEC.md §10): cascades that spread who can see whom. ICANSEE when a link
//! comes up (the origin's links), IKNOWABOUT to the new peer (the address book), ICANTSEE when
//! a link goes down. Every address a cascade names goes into the session's address book, which
//! dials from it; this protocol only carries the news. Each peer may make this node handle
//! and relay cascades at a bounded rate (SPEC.md §10.8): the excess is dropped, and a peer
//! that keeps sending past it is disconnected.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use weft_protocol::{
    CascadeId, Code, Family, Frame, ICanSee, ICantSee, IKnowAbout, Message, NodeId, PeerInfo,
    PEERS_PER_MESSAGE_MAX,
};

use crate::config::Config;
use crate::connection::CloseReason;
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::rate::{RateLimit, TokenBucket};
use crate::seen::CascadeSeen;
use crate::session::{is_unspecified, Peer};
use crate::time::{Duration, Instant};

/// Discovery's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryMetrics {
    /// Cascades received past their sender's `cascade_rate`: dropped, neither acted on nor
    /// relayed.
    pub cascades_dropped: u64,
    /// Peers disconnected for more than `cascade_drops_max` drops within
    /// `cascade_drop_window`.
    pub peers_rate_limited: u64,
}

/// One peer's cascade budget: its token bucket, and its drops in the current window.
#[derive(Debug)]
struct Budget {
    bucket: TokenBucket,
    window_start: Instant,
    drops: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct DiscoveryProtocol {
    /// `Config::discovery`: off, cascades are neither sent nor acted on.
    enabled: bool,
    /// `Limits::cascade_hops`.
    hops: u8,
    incarnation: u64,
    cascades: CascadeSeen,
    last_cascade: u64,
    /// `Limits::cascade_rate`, `Limits::cascade_drops_max`, `Timers::cascade_drop_window`.
    rate: RateLimit,
    drops_max: u32,
    drop_window: Duration,
    /// Budgets of linked peers that sent cascades (removed when the link goes).
    budgets: BTreeMap<NodeId, Budget>,
    metrics: DiscoveryMetrics,
    outputs: VecDeque<ProtocolOutput<Infallible>>,
}

impl DiscoveryProtocol {
    /// Discovery for `config`; `seed` keys its hash of cascade ids.
    pub(crate) fn new(config: &Config, seed: [u8; 32]) -> DiscoveryProtocol {
        DiscoveryProtocol {
            enabled: config.discovery,
            hops: config.limits.cascade_hops,
            incarnation: config.incarnation,
            cascades: CascadeSeen::new(
                config.limits.cascade_seen_max,
                crate::hasher::hash_key(&seed),
            ),
            last_cascade: 0,
            rate: config.limits.cascade_rate,
            drops_max: config.limits.cascade_drops_max,
            drop_window: config.timers.cascade_drop_window,
            budgets: BTreeMap::new(),
            metrics: DiscoveryMetrics::default(),
            outputs: VecDeque::new(),
        }
    }

    pub(crate) fn metrics(&self) -> &DiscoveryMetrics {
        &self.metrics
    }

    /// Whether `from` may make this node handle one more cascade now, one that `origin`
    /// started. `Ok(false)`: dropped (counted); `Err`: dropped past `drops_max` in one window
    /// while `from` is the cascade's origin, the peer is disconnected. A peer only relaying
    /// others' cascades is never disconnected for their number, only dropped: an honest relay
    /// passes on what several links feed it, which may be more than one link may bring.
    fn admit(&mut self, now: Instant, from: NodeId, origin: NodeId) -> Result<bool, PeerFault> {
        let rate = self.rate;
        let budget = self.budgets.entry(from).or_insert_with(|| Budget {
            bucket: TokenBucket::new(rate, now),
            window_start: now,
            drops: 0,
        });
        if budget.bucket.take(rate, now) {
            return Ok(true);
        }
        self.metrics.cascades_dropped += 1;
        if origin != from {
            // Only drops of its own cascades are held against a peer: a relay's count stays
            // clean, so its own next cascade is not taken for an offender's.
            return Ok(false);
        }
        // A window starts at the first drop after the last one ended.
        if budget.drops == 0 || now.saturating_since(budget.window_start) >= self.drop_window {
            budget.window_start = now;
            budget.drops = 0;
        }
        budget.drops += 1;
        if budget.drops > self.drops_max {
            self.metrics.peers_rate_limited += 1;
            self.budgets.remove(&from);
            return Err(PeerFault::RateLimited);
        }
        Ok(false)
    }

    /// A fresh id for a cascade this node starts: incarnation in the high 32 bits.
    fn new_cascade(&mut self, origin: NodeId) -> CascadeId {
        self.last_cascade = self.last_cascade.wrapping_add(1) & 0xffff_ffff;
        let id = CascadeId {
            origin,
            seq: (self.incarnation << 32) | self.last_cascade,
        };
        self.cascades.insert(id);
        id
    }

    fn send(&mut self, to: Recipients, msg: &Message<'_>, class: Class) {
        self.outputs.push_back(ProtocolOutput::Send {
            to,
            message: Outgoing::message(msg),
            class,
        });
    }

    fn learn(&mut self, me: NodeId, peers: &[PeerInfo]) {
        for p in peers.iter().filter(|p| p.node != me) {
            self.outputs.push_back(ProtocolOutput::Learned {
                node: p.node,
                addr: p.addr.clone(),
            });
        }
    }

    /// A new link: tell the new peer what we have heard of, and cascade to every link what
    /// we can now see.
    fn announce(&mut self, cx: &Context<'_>, peer: &Peer) {
        let me = cx.me();
        let known = cx.known_peers(peer.node, PEERS_PER_MESSAGE_MAX);
        if !known.is_empty() {
            let msg = Message::IKnowAbout(IKnowAbout {
                cascade: self.new_cascade(me),
                hops_left: 0,
                peers: known,
            });
            self.send(Recipients::Peer(peer.node), &msg, Class::Control);
        }
        let peers: Vec<PeerInfo> = cx
            .links()
            .filter_map(|p| {
                Some(PeerInfo {
                    node: p.node,
                    addr: p.listen_addr.clone()?,
                })
            })
            .take(PEERS_PER_MESSAGE_MAX)
            .collect();
        let msg = Message::ICanSee(ICanSee {
            cascade: self.new_cascade(me),
            hops_left: self.hops,
            // A node listening on every interface announces no address: its peers learn one
            // from its connections (SPEC.md §8.12).
            origin_addr: cx
                .listen_addr()
                .filter(|a| !is_unspecified(a))
                .map(str::to_owned),
            peers,
        });
        self.send(Recipients::Links { except: None }, &msg, Class::Control);
    }

    /// A cascade's relay: one hop less, capped at our own hop limit, to every other link.
    fn relay(&mut self, from: NodeId, hops_left: u8, msg: impl FnOnce(u8) -> Message<'static>) {
        if hops_left > 0 {
            let hops = (hops_left - 1).min(self.hops);
            let to = Recipients::Links { except: Some(from) };
            self.send(to, &msg(hops), Class::Relay);
        }
    }
}

impl Protocol for DiscoveryProtocol {
    type Event = Infallible;
    type Command = Infallible;
    type Refusal = Infallible;

    const FAMILY: Family = Family::Session;

    fn owns(code: Code) -> bool {
        matches!(code, Code::ICANSEE | Code::IKNOWABOUT | Code::ICANTSEE)
    }

    fn handle_link(&mut self, _now: Instant, cx: &Context<'_>, notice: LinkNotice<'_>) {
        if let LinkNotice::Down { node, .. } = notice {
            self.budgets.remove(&node);
        }
        if !self.enabled {
            return;
        }
        match notice {
            LinkNotice::Up {
                peer,
                replaced: false,
            } => self.announce(cx, peer),
            LinkNotice::Down { node, reason } => {
                if matches!(reason, CloseReason::Shutdown | CloseReason::DuplicateLink) {
                    return;
                }
                let msg = Message::ICantSee(ICantSee {
                    cascade: self.new_cascade(cx.me()),
                    hops_left: self.hops,
                    lost: node,
                });
                self.send(Recipients::Links { except: None }, &msg, Class::Control);
            }
            LinkNotice::Up { .. } | LinkNotice::Room { .. } => {}
        }
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        let payload = frame.payload()?;
        let msg = Message::decode(frame.code(), &payload)?;
        let me = cx.me();
        let origin = match &msg {
            Message::ICanSee(m) => Some(m.cascade.origin),
            Message::IKnowAbout(m) => Some(m.cascade.origin),
            Message::ICantSee(m) => Some(m.cascade.origin),
            _ => None,
        };
        if let Some(origin) = origin {
            if self.enabled && !self.admit(now, from.node, origin)? {
                return Ok(());
            }
        }
        match msg {
            Message::ICanSee(m) => {
                if !self.enabled || !self.cascades.insert(m.cascade) {
                    return Ok(());
                }
                if let Some(addr) = &m.origin_addr {
                    if m.cascade.origin != me {
                        self.outputs.push_back(ProtocolOutput::Learned {
                            node: m.cascade.origin,
                            addr: addr.clone(),
                        });
                    }
                }
                self.learn(me, &m.peers);
                // An unspecified address (from an older peer) is never relayed (§8.12).
                let origin_addr = m.origin_addr.filter(|a| !is_unspecified(a));
                let peers = dialable_only(m.peers);
                self.relay(from.node, m.hops_left, |hops_left| {
                    Message::ICanSee(ICanSee {
                        hops_left,
                        origin_addr,
                        peers,
                        ..m
                    })
                });
            }
            Message::IKnowAbout(m) => {
                if !self.enabled || !self.cascades.insert(m.cascade) {
                    return Ok(());
                }
                self.learn(me, &m.peers);
                let peers = dialable_only(m.peers);
                self.relay(from.node, m.hops_left, |hops_left| {
                    Message::IKnowAbout(IKnowAbout {
                        hops_left,
                        peers,
                        ..m
                    })
                });
            }
            Message::ICantSee(m) => {
                if !self.enabled || !self.cascades.insert(m.cascade) {
                    return Ok(());
                }
                // A peer we hold a live link to stays, whatever others say about it (the
                // session keeps linked entries).
                self.outputs
                    .push_back(ProtocolOutput::Forget { node: m.lost });
                self.relay(from.node, m.hops_left, |hops_left| {
                    Message::ICantSee(ICantSee { hops_left, ..m })
                });
            }
            _ => return Err(PeerFault::Unexpected("not a discovery message")),
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        _now: Instant,
        _cx: &Context<'_>,
        command: Infallible,
    ) -> Result<(), Infallible> {
        match command {}
    }

    fn handle_timeout(&mut self, _now: Instant, _cx: &Context<'_>) {}

    fn poll_output(&mut self) -> Option<ProtocolOutput<Infallible>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        if self.cascades.len() > config.limits.cascade_seen_max.max(1) {
            return Err("the cascade-id set is over its bound".into());
        }
        Ok(())
    }
}

/// `peers` without those whose address has an unspecified IP (SPEC.md §8.12).
fn dialable_only(mut peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
    peers.retain(|p| !is_unspecified(&p.addr));
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_ids_carry_the_incarnation_and_are_seen_once() {
        let mut config = Config::from_seed("t", 1);
        config.incarnation = 7;
        let mut d = DiscoveryProtocol::new(&config, [0; 32]);
        let node = |b| NodeId([b; 32]);
        let id = d.new_cascade(node(1));
        assert_eq!(id.seq >> 32, 7);
        assert!(!d.cascades.insert(id), "own cascades are pre-marked");
        let other = CascadeId {
            origin: node(2),
            seq: 1,
        };
        assert!(d.cascades.insert(other));
        assert!(!d.cascades.insert(other));
    }

    #[test]
    fn a_peer_past_its_rate_is_dropped_then_disconnected_past_the_drops_in_a_window() {
        let mut config = Config::from_seed("t", 1);
        config.limits.cascade_rate = RateLimit {
            per_second: 1,
            burst: 2,
        };
        config.limits.cascade_drops_max = 3;
        config.timers.cascade_drop_window = Duration::from_secs(10);
        let mut d = DiscoveryProtocol::new(&config, [0; 32]);
        let peer = NodeId([2; 32]);
        let at = |ms: u64| Instant::ZERO + Duration::from_millis(ms);
        assert_eq!(d.admit(at(0), peer, peer), Ok(true));
        assert_eq!(d.admit(at(0), peer, peer), Ok(true));
        for _ in 0..3 {
            assert_eq!(d.admit(at(0), peer, peer), Ok(false));
        }
        // A token a second; the window's drops stay counted.
        assert_eq!(d.admit(at(1_000), peer, peer), Ok(true));
        assert_eq!(
            d.admit(at(9_999), peer, peer),
            Ok(true),
            "the bucket refilled to its burst"
        );
        assert_eq!(d.admit(at(9_999), peer, peer), Ok(true));
        assert_eq!(d.admit(at(9_999), peer, peer), Err(PeerFault::RateLimited));
        assert_eq!(d.metrics().cascades_dropped, 4);
        assert_eq!(d.metrics().peers_rate_limited, 1);
        // Once a window has passed since its first drop, drops count afresh.
        let other = NodeId([3; 32]);
        d.admit(at(0), other, other).unwrap();
        d.admit(at(0), other, other).unwrap();
        for ms in [0, 0, 0] {
            assert_eq!(d.admit(at(ms), other, other), Ok(false));
        }
        for _ in 0..2 {
            assert_eq!(d.admit(at(10_000), other, other), Ok(true));
        }
        for _ in 0..3 {
            assert_eq!(d.admit(at(10_000), other, other), Ok(false), "a new window");
        }
        // Cascades a peer only relays are dropped past its rate, never held against it.
        let relay = NodeId([4; 32]);
        let origin = NodeId([5; 32]);
        let mut taken = 0;
        for _ in 0..100 {
            taken += usize::from(d.admit(at(0), relay, origin).expect("never disconnected"));
        }
        assert_eq!(taken, 2, "the burst");
        assert_eq!(d.metrics().peers_rate_limited, 1, "as before");
        // Its own next cascade, the bucket still empty, is a first drop, not an offence.
        assert_eq!(d.admit(at(0), relay, relay), Ok(false));
    }
}
