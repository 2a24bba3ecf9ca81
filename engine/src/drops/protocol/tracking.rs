//! The tracker on the Chord ring (SPEC.md §20.9, §24.6): held drops announced (again every
//! [`weft_protocol::HOLDER_REANNOUNCE`]), a subscription's holders looked up, checked and dialed.

use std::collections::BTreeSet;

use weft_protocol::{DropId, NodeId};

use super::{DropsProtocol, Held, DROP_LOOKUP_BACKOFF_MAX, DROP_SYNC_INTERVAL};
use crate::chord::{ChordError, ChordResult};
use crate::drops::tracker::{self, Ask, Skip};
use crate::io::Command;
use crate::machine::{Context, ProtocolOutput};
use crate::time::{Duration, Instant};

impl DropsProtocol {
    /// Whether this node holds `held` for the tracker: it created it, or it accepted a
    /// version of it.
    pub(super) fn holding(held: &Held) -> bool {
        held.created.is_some() || !held.chain.is_empty()
    }

    /// Announces every drop due (SPEC.md §24.6) with the key record, if this node can: it
    /// needs a wall clock (a record's expiry is calendar time) and an address peers can dial.
    /// A skip is counted; a drop then waits for the next sync if the wall clock is missing,
    /// and is dropped if the address is (it cannot come later).
    pub(super) fn announce_due(&mut self, now: Instant, cx: &Context<'_>) {
        let due = self.tracker.take_due();
        if due.is_empty() {
            // A key record whose put failed goes again at this sync, drops due or not.
            if let Some(command) = self.tracker.node_key_again(&self.identity) {
                self.command(Command::Chord(command));
            }
            return;
        }
        let ready = match (
            tracker::announce_addr(cx.listen_addr()),
            cx.wall_clock_ms(now),
        ) {
            (Err(skip), _) => Err(skip),
            (Ok(_), None) => Err(Skip::NoWallClock),
            (Ok(addr), Some(wall_ms)) => Ok((addr.to_owned(), wall_ms)),
        };
        let (addr, wall_ms) = match ready {
            Ok(ready) => ready,
            Err(skip) => {
                self.metrics.tracker_announces_skipped += due.len() as u64;
                if skip == Skip::NoWallClock {
                    for drop in due {
                        self.tracker.retry(drop);
                    }
                }
                return;
            }
        };
        for drop in due {
            if !self.drops.get(&drop).is_some_and(Self::holding) {
                continue;
            }
            if self.tracker.asking(Ask::Announce(drop)) {
                self.tracker.retry(drop);
                continue;
            }
            let command = self.tracker.announce(drop, &self.identity, &addr, wall_ms);
            self.command(Command::Chord(command));
            self.metrics.tracker_announces += 1;
            if let Some(held) = self.drops.get_mut(&drop) {
                held.tracker.announces += 1;
            }
        }
        if let Some(command) = self.tracker.node_key(&self.identity) {
            self.command(Command::Chord(command));
        }
    }

    /// Asks the ring for `drop`'s holders, unless this node is off the ring or a lookup of it
    /// is under way.
    pub(super) fn look_up(&mut self, drop: DropId) {
        if !self.tracker.ring() || self.tracker.asking(Ask::Lookup(drop)) {
            return;
        }
        let Some(held) = self.drops.get_mut(&drop) else {
            return;
        };
        held.next_lookup = Some(self.now + held.lookup_backoff);
        held.lookup_backoff =
            (held.lookup_backoff + held.lookup_backoff).min(DROP_LOOKUP_BACKOFF_MAX);
        held.tracker.lookups += 1;
        self.metrics.tracker_lookups += 1;
        let command = self.tracker.lookup(drop);
        self.command(Command::Chord(command));
    }

    /// The end of a Chord request the tracker made (routed back by the node, never an
    /// application event): a failed put is tried again at the next sync; a lookup's records
    /// are checked and up to [`crate::drops::DROP_HOLDERS_DIALED_MAX`] holders not linked dialed.
    pub(crate) fn handle_chord_answer(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        request: u64,
        result: Result<ChordResult, ChordError>,
    ) {
        self.now = now;
        let Some(ask) = self.tracker.answered(request) else {
            return;
        };
        match (ask, result) {
            (Ask::Announce(_) | Ask::NodeKey, Ok(_)) => {}
            (Ask::Announce(drop), Err(_)) => {
                self.metrics.tracker_puts_failed += 1;
                self.tracker.retry(drop);
            }
            (Ask::NodeKey, Err(_)) => {
                self.metrics.tracker_puts_failed += 1;
                self.tracker.node_key_failed();
            }
            (Ask::Lookup(drop), Ok(ChordResult::Get { values })) => {
                let wall_ms = cx.wall_clock_ms(now);
                let (valid, refused) = tracker::holders(&values, &drop, &self.me, wall_ms);
                self.metrics.tracker_records_refused += refused;
                let found = valid.len() as u64;
                let linked: BTreeSet<NodeId> = cx.links().map(|p| p.node).collect();
                let picked = tracker::pick(valid, &mut self.rng, |n| linked.contains(n));
                let dialed = picked.len() as u64;
                for r in picked {
                    self.outputs.push_back(ProtocolOutput::Dial {
                        node: r.holder,
                        addr: r.addr,
                    });
                }
                self.metrics.tracker_holders_dialed += dialed;
                if let Some(held) = self.drops.get_mut(&drop) {
                    held.tracker.holders_found += found;
                    held.tracker.holders_dialed += dialed;
                }
            }
            // A lookup that failed (a node not on the ring yet, a ring that is down) is made
            // again at the next sync while the subscription still needs holders, and does not
            // lengthen the wait: only a lookup the ring answered does.
            (Ask::Lookup(drop), _) => {
                if let Some(held) = self.drops.get_mut(&drop) {
                    held.next_lookup = None;
                    held.lookup_backoff =
                        Duration::from_millis(held.lookup_backoff.as_millis() / 2)
                            .max(DROP_SYNC_INTERVAL);
                }
            }
        }
    }

    /// The `Announce` timer: every held drop announced again.
    pub(super) fn reannounce(&mut self, now: Instant, cx: &Context<'_>) {
        let holding: Vec<DropId> = self
            .drops
            .iter()
            .filter(|(_, h)| Self::holding(h))
            .map(|(d, _)| *d)
            .collect();
        for drop in holding {
            self.tracker.mark_due(drop);
        }
        self.announce_due(now, cx);
    }

    /// After a message or command: announces the drops this node just started holding.
    pub(super) fn announce_fresh(&mut self, now: Instant, cx: &Context<'_>) {
        if self.tracker.fresh() {
            self.announce_due(now, cx);
        }
    }
}
