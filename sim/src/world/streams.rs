//! The in-memory byte streams between nodes: dials (refused across a partition), each
//! direction's latency, bandwidth and clogs, the slow reader's window, deliveries and
//! closes.

use bytes::Bytes;
use weft_engine::{ConnId, Input};

use super::{End, Ev, Link, World};

impl World {
    pub(super) fn latency(&mut self) -> u64 {
        let l = self.config.faults.latency;
        (l.min_us + self.link_rng.exp(l.mean_extra_us)) * 1_000
    }

    pub(super) fn blocked(&self, from: u32, to: u32) -> Option<u64> {
        let p = self.partition.as_ref()?;
        let (a, b) = (p.side_a[from as usize], p.side_a[to as usize]);
        (a && !b || p.symmetric && !a && b).then_some(p.until)
    }

    pub(super) fn connect(&mut self, i: u32, conn: ConnId, address: &str) {
        let target = address
            .strip_prefix('n')
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&t| (t as usize) < self.nodes.len());
        self.cold[i as usize]
            .dialing
            .insert(conn, target.unwrap_or(u32::MAX));
        let lat = 2 * self.latency();
        let incarnations = (
            self.nodes[i as usize].incarnation,
            target.map_or(0, |t| self.nodes[t as usize].incarnation),
        );
        self.push(
            self.now + lat,
            Ev::Dialed {
                node: i,
                conn,
                target: target.unwrap_or(u32::MAX),
                incarnations,
            },
        );
    }

    pub(super) fn dialed(&mut self, i: u32, conn: ConnId, target: u32, incarnations: (u64, u64)) {
        let sn = &self.nodes[i as usize];
        // The dialer may have crashed, or given up on the dial (closed it), meanwhile.
        if sn.node.is_none()
            || sn.incarnation != incarnations.0
            || !self.cold[i as usize].dialing.contains_key(&conn)
        {
            return;
        }
        let reachable = (target as usize) < self.nodes.len()
            && self.nodes[target as usize].node.is_some()
            && self.nodes[target as usize].incarnation == incarnations.1
            && self.blocked(i, target).is_none()
            && self.blocked(target, i).is_none();
        let p = self.config.faults.connect_fail_probability;
        if !reachable || (p > 0.0 && self.fault_rng.chance(p)) {
            self.cold[i as usize].dialing.remove(&conn);
            return self.input(i, Input::ConnectFailed { conn });
        }
        let t = &mut self.cold[target as usize];
        t.next_inbound += 1;
        let inbound = ConnId::inbound(t.next_inbound);
        let link = self.links.len() as u32;
        let ends = [
            End {
                node: i,
                conn,
                incarnation: incarnations.0,
                open: true,
            },
            End {
                node: target,
                conn: inbound,
                incarnation: incarnations.1,
                open: true,
            },
        ];
        self.links.push(Link::new(ends));
        self.nodes[i as usize].insert_conn(conn, link, 0);
        self.nodes[target as usize].insert_conn(inbound, link, 1);
        // The target's driver accepts (when it resumes, if paused); the dialer learns at once.
        self.dispatch(Ev::Accept {
            node: target,
            conn: inbound,
            from: i,
        });
        self.input(i, Input::Connected { conn });
    }

    /// Node `i` writes `bytes` on `conn`, its end `side` of `link_id`. The connection was
    /// open when the frame was taken from the node; if it has closed since (an earlier output
    /// closed it), the frame is dropped.
    pub(super) fn transmit(&mut self, i: u32, conn: ConnId, link_id: u32, side: u8, bytes: Bytes) {
        if !self.links[link_id as usize].is_open(side) {
            return;
        }
        let bytes = if self.tamper_blocks_from == Some(i) {
            let (bytes, changed) = crate::tamper::blocks(bytes);
            self.stats.blocks_tampered += changed;
            bytes
        } else {
            bytes
        };
        let len = bytes.len();
        self.stats.bytes += len as u64;
        let lat = self.latency();
        let to = self.links[link_id as usize].dirs[side as usize].to_node;
        let slow = self.slow_until_max > self.now && self.cold[to as usize].slow_until > self.now;
        let blocked = self.blocked(i, to);
        let rate = match (self.config.faults.bandwidth, slow) {
            (_, true) => Some(self.config.faults.slow_reader_bytes_per_sec.max(1)),
            (Some(b), false) => Some(b.bytes_per_sec.max(1)),
            (None, false) => None,
        };
        let buffer_cap = self
            .config
            .faults
            .bandwidth
            .map_or(usize::MAX, |b| b.buffer_bytes);
        let now = self.now;
        let d = &mut self.links[link_id as usize].dirs[side as usize];
        let mut depart = now;
        if let Some(rate) = rate {
            let start = now.max(d.busy_until);
            d.busy_until = start + (len as u64).saturating_mul(1_000_000_000) / rate;
            depart = d.busy_until;
        }
        let mut arrival = depart + lat;
        if let Some(until) = blocked {
            arrival = arrival.max(until + lat);
        }
        if d.clogged_until > now {
            arrival = arrival.max(d.clogged_until + lat);
        }
        arrival = arrival.max(d.last_arrival);
        d.last_arrival = arrival;
        d.buffered_bytes += len;
        debug_assert_eq!(
            d.in_flight_bytes,
            self.nodes[i as usize]
                .node
                .as_ref()
                .and_then(|n| n.conn_stats(conn))
                .map_or(0, |s| s.in_flight_bytes),
            "the mirrored in-flight count of node {i}'s {conn:?}"
        );
        let mut writable = false;
        if d.in_flight_bytes >= self.window_half {
            if d.buffered_bytes <= buffer_cap {
                writable = true;
                d.in_flight_bytes = 0;
            } else {
                d.writable_pending = true;
            }
        }
        if self.config.faults.random_chunks && len > 1 {
            let mut rest = bytes;
            while !rest.is_empty() {
                let take = (self.link_rng.between(1, 2 * len as u64) as usize).min(rest.len());
                let piece = rest.split_to(take);
                self.push(
                    arrival,
                    Ev::Deliver {
                        link: link_id,
                        side,
                        bytes: piece,
                    },
                );
            }
        } else {
            self.push(
                arrival,
                Ev::Deliver {
                    link: link_id,
                    side,
                    bytes,
                },
            );
        }
        if writable {
            self.input(i, Input::Writable { conn });
        }
    }

    /// A sender that was told to wait (its direction's buffer over the bandwidth fault's
    /// cap) hears there is room once the buffer has drained to the cap; not while it is
    /// paused (a paused node processes nothing: [`World::resume`] asks again).
    pub(super) fn writable_if_room(&mut self, link_id: u32, side: u8) {
        let buffer_cap = self
            .config
            .faults
            .bandwidth
            .map_or(usize::MAX, |b| b.buffer_bytes);
        let link = &mut self.links[link_id as usize];
        let paused = self.nodes[link.end(side).node as usize].paused;
        let d = &mut link.dirs[side as usize];
        if !d.writable_pending || d.buffered_bytes > buffer_cap || paused {
            return;
        }
        d.writable_pending = false;
        let sender = link.end(side);
        if sender.open && self.nodes[sender.node as usize].incarnation == sender.incarnation {
            link.dirs[side as usize].in_flight_bytes = 0;
            self.input(sender.node, Input::Writable { conn: sender.conn });
        }
    }

    /// With `writable_on_drain`: when everything sent on `links[link_id]`'s direction `side`
    /// has arrived, the sender's socket has drained, and a real driver says so (bulk data
    /// waits for it). Not while the sender has handed out bytes the world has not carried yet
    /// (the mirrored count must stay the engine's), nor while it is paused (a paused node
    /// processes nothing: [`World::resume`] asks again).
    pub(super) fn writable_if_drained(&mut self, link_id: u32, side: u8) {
        let link = &mut self.links[link_id as usize];
        let d = &link.dirs[side as usize];
        if !self.writable_on_drain
            || d.buffered_bytes != 0
            || d.in_flight_bytes == 0
            || d.writable_pending
        {
            return;
        }
        let sender = link.end(side);
        let mirrored = d.in_flight_bytes;
        let sn = &self.nodes[sender.node as usize];
        let same = sn
            .node
            .as_ref()
            .and_then(|n| n.conn_stats(sender.conn))
            .is_some_and(|s| s.in_flight_bytes == mirrored);
        if sender.open && sn.incarnation == sender.incarnation && !sn.paused && same {
            link.dirs[side as usize].in_flight_bytes = 0;
            self.input(sender.node, Input::Writable { conn: sender.conn });
        }
    }

    pub(super) fn deliver(&mut self, link_id: u32, side: u8, bytes: Bytes) {
        let link = &mut self.links[link_id as usize];
        let d = &mut link.dirs[side as usize];
        d.buffered_bytes = d.buffered_bytes.saturating_sub(bytes.len());
        let receiver = End {
            node: d.to_node,
            conn: d.to_conn,
            incarnation: d.to_incarnation,
            open: d.to_open,
        };
        self.writable_if_room(link_id, side);
        self.writable_if_drained(link_id, side);
        let rn = &self.nodes[receiver.node as usize];
        if !receiver.open || rn.node.is_none() || rn.incarnation != receiver.incarnation {
            return;
        }
        self.trace.delivery(self.now, receiver.node, &bytes);
        self.input(
            receiver.node,
            Input::Received {
                conn: receiver.conn,
                bytes,
            },
        );
    }

    /// Node `i` asked to close `conn`: its end closes now (after the bytes handed out, which
    /// are already scheduled); the other end learns after them.
    pub(super) fn close(&mut self, i: u32, conn: ConnId) {
        self.cold[i as usize].dialing.remove(&conn);
        let Some((link, side)) = self.nodes[i as usize].remove_conn(conn) else {
            // A dial that never connected.
            return self.input(i, Input::Closed { conn });
        };
        let l = &mut self.links[link as usize];
        l.close_end(side);
        let after = l.dirs[side as usize].last_arrival;
        let lat = self.latency();
        self.push(
            (self.now + lat).max(after),
            Ev::RemoteClosed {
                link,
                side: 1 - side,
            },
        );
        self.input(i, Input::Closed { conn });
    }

    pub(super) fn remote_closed(&mut self, link: u32, side: u8) {
        let end = self.links[link as usize].end(side);
        if !end.open {
            return;
        }
        self.links[link as usize].close_end(side);
        let sn = &mut self.nodes[end.node as usize];
        if sn.node.is_none() || sn.incarnation != end.incarnation {
            return;
        }
        sn.remove_conn(end.conn);
        let paused = sn.paused;
        let cold = &mut self.cold[end.node as usize];
        cold.dialing.remove(&end.conn);
        if paused {
            // A paused node processes nothing: it hears of the close when it resumes.
            cold.deferred.push_back(Ev::ConnClosed {
                node: end.node,
                conn: end.conn,
                incarnation: end.incarnation,
            });
            return;
        }
        self.input(end.node, Input::Closed { conn: end.conn });
    }

    /// Resets a link: both ends see `Closed`, nothing in flight arrives.
    pub(super) fn reset(&mut self, link: u32) {
        for side in 0..2u8 {
            self.remote_closed(link, side);
        }
    }
}
