//! The world's side of each node, as a driver would be: inputs handed in and outputs
//! drained, commands, host requests through the simulated disk, events checked by the
//! trackers, the periodic maintenance, and crashes, restarts, pauses and resumes.

use weft_engine::{
    CloseReason, Command, ConnId, Event, HostRequest, Input, Instant, MeshCommand, MeshEvent, Node,
    Output, RequestId, TableCommand, TableEvent,
};

use super::{
    addr, conn_link, ConnLink, DiskJob, Ev, Pending, Recovery, SimNode, World, DISK_LATENCY, MS,
    STORE_DELAY_MAX,
};

impl World {
    pub(super) fn start_node(&mut self, i: u32) {
        let unix_ms = self.wall_clock_ms(i);
        self.input(i, Input::WallClock { unix_ms });
    }

    /// Node `i`'s calendar clock: a shared epoch, its own offset, its own drift.
    pub(super) fn wall_clock_ms(&self, i: u32) -> u64 {
        let sn = &self.cold[i as usize];
        let elapsed_ms = (self.now / MS) as i64;
        let drift_ms = elapsed_ms * sn.drift_ppm / 1_000_000;
        (1_800_000_000_000i64 + sn.wall_offset_ms + elapsed_ms + drift_ms) as u64
    }

    /// Feeds node `i` an input at `now`, then drains it.
    pub(super) fn input(&mut self, i: u32, input: Input) {
        let now = Instant(self.now);
        let Some(n) = self.nodes[i as usize].node.as_mut() else {
            return;
        };
        let closed = matches!(input, Input::Closed { .. });
        if let Err(e) = n.handle_input(now, input) {
            if !closed {
                self.stats.driver_errors += 1;
                self.fail(format!("node {i} refused a driver input: {e}"));
            }
        }
        self.drain(i);
    }

    /// Carries out node `i`'s outputs, then schedules its next timer.
    ///
    /// Every output is first moved to the outbox (counting each transmitted frame into its
    /// direction's `in_flight_bytes`, as the engine counted it when it emitted the frame), then
    /// the outbox is worked off in order. An output may hand node `i` an input (`Writable`,
    /// `Closed`), whose nested drain appends the new outputs behind the ones still waiting and
    /// works them all off: the order of the engine's own output queue.
    pub(super) fn drain(&mut self, i: u32) {
        let SimNode { node, conns, .. } = &mut self.nodes[i as usize];
        if let Some(n) = node.as_mut() {
            while let Some(out) = n.poll_output() {
                let link = match &out {
                    Output::Transmit { conn, bytes } => {
                        conn_link(conns, *conn).map(|(link, side)| {
                            self.links[link as usize].dirs[side as usize].in_flight_bytes +=
                                bytes.len();
                            (link, side)
                        })
                    }
                    _ => None,
                };
                self.outbox.push_back(Pending { out, link });
            }
        }
        while let Some(p) = self.outbox.pop_front() {
            self.route(i, p);
        }
        let sn = &mut self.nodes[i as usize];
        let next = sn.node.as_ref().and_then(|n| n.poll_timeout());
        if let Some(t) = next {
            if sn.timer_at != Some(t.0) {
                sn.timer_at = Some(t.0);
                self.push(t.0, Ev::Timer { node: i, at: t.0 });
            }
        }
    }

    pub(super) fn route(&mut self, i: u32, p: Pending) {
        match p.out {
            Output::Transmit { conn, bytes } => {
                if let Some((link, side)) = p.link {
                    self.transmit(i, conn, link, side, bytes);
                }
            }
            Output::Connect { conn, addr } => self.connect(i, conn, &addr),
            Output::Close { conn, .. } => self.close(i, conn),
            Output::Request { id, request } => self.request(i, id, request),
            Output::Event(e) => self.event(i, e),
            other => self.fail(format!(
                "node {i} emitted an output the simulator does not carry out: {other:?}"
            )),
        }
    }

    /// The application on node `i` issues `command`; its table writes and Chord puts are
    /// recorded for the durability checker.
    pub(super) fn command(&mut self, i: u32, command: Command) {
        let now = Instant(self.now);
        let incarnation = self.nodes[i as usize].incarnation;
        let id = self.cold[i as usize].id;
        let Some(n) = self.nodes[i as usize].node.as_mut() else {
            return;
        };
        let key = match &command {
            Command::Table(
                TableCommand::Set { key, .. }
                | TableCommand::Delete { key }
                | TableCommand::Release { key },
            ) => Some(key.clone()),
            Command::Chord(c) => {
                self.durable.chord_asked(i, id, c.request, &c.op);
                None
            }
            _ => None,
        };
        let before = n.metrics().table.writes_originated;
        if n.handle_input(now, Input::Command(command)).is_err() {
            self.stats.command_errors += 1;
        }
        let after = n.metrics().table.writes_originated;
        if let Some(key) = key.filter(|_| after > before) {
            if let Some(w) = n.table().current(&key) {
                self.durable.wrote(i, incarnation, after, key, w.id());
            }
        }
        self.drain(i);
    }

    /// Node `i` asked its host for `request`: its disk answers after [`DISK_LATENCY`] (a
    /// store after a seeded delay more), and after every request handed to it before.
    pub(super) fn request(&mut self, i: u32, id: RequestId, request: HostRequest) {
        let mut latency = DISK_LATENCY;
        if matches!(request, HostRequest::StoreState { .. }) {
            latency += self.disk_rng.below(STORE_DELAY_MAX + 1);
        }
        let cold = &mut self.cold[i as usize];
        let at = (self.now + latency).max(cold.disk_busy_until);
        cold.disk_busy_until = at;
        let job = DiskJob {
            incarnation: self.nodes[i as usize].incarnation,
            id,
            request,
        };
        self.push(
            at,
            Ev::Disk {
                node: i,
                job: Box::new(job),
            },
        );
    }

    /// What the network's live nodes lost of what was acknowledged to them as committed (see
    /// [`crate::durable::Durability`]; nothing reaches a wrong-secret node).
    pub fn durability_violations(&self) -> Vec<String> {
        let live = self.members().iter().filter_map(|n| n.node.as_deref());
        let mut lost = self.durable.lost_writes(live.clone());
        lost.extend(self.durable.lost_puts(Instant(self.now), live));
        lost
    }

    /// Node `i`'s disk carries out `job`, if the incarnation that asked is still up (a crash
    /// loses the requests it had in flight: a store the disk had not finished leaves the
    /// old blob), and hands it the result.
    pub(super) fn disk(&mut self, i: u32, job: DiskJob) {
        let sn = &self.nodes[i as usize];
        if sn.node.is_none() || sn.incarnation != job.incarnation {
            return;
        }
        let result = self.cold[i as usize].disk.carry_out(job.request);
        #[cfg(test)]
        if let Some(slot) = self.synthetic.get_mut(&(i, job.id)) {
            *slot = Some(result);
            return;
        }
        self.input(i, Input::Completed { id: job.id, result });
    }

    pub(super) fn event(&mut self, i: u32, e: Event) {
        let incarnation = self.nodes[i as usize].incarnation;
        self.trace.event(self.now, i, &e);
        match &e {
            Event::PeerUp { conn, node, .. } => {
                self.cold[i as usize].dialing.remove(conn);
                // Nodes of different network keys never link (SPEC.md §21).
                if let Some(&j) = self.ids.get(node) {
                    if self.is_wrong_secret_node(i) != self.is_wrong_secret_node(j) {
                        self.fail(format!(
                            "node {i} linked with node {j}, whose network secret differs"
                        ));
                    }
                }
            }
            Event::ConnectionClosed {
                reason: CloseReason::Noise(_),
                ..
            } => self.stats.noise_closes += 1,
            Event::Table(TableEvent::Changed { .. }) => self.stats.table_changes += 1,
            Event::Table(TableEvent::Committed { through }) => {
                self.durable.committed(i, incarnation, *through);
            }
            Event::Chord(c) => {
                let id = self.cold[i as usize].id;
                self.durable.chord_ended(i, id, c.request, &c.result);
                self.chord_results
                    .entry((i, c.request))
                    .or_insert_with(|| c.result.clone());
            }
            Event::Table(TableEvent::Refused { .. }) => self.stats.table_refusals += 1,
            Event::Drops(d) => self.drop_events.push((i, d.clone())),
            Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation: origin_incarnation,
                seq,
                payload,
            }) => {
                let Some(&o) = self.ids.get(origin) else {
                    return self.fail(format!("node {i} delivered a broadcast from a stranger"));
                };
                let key = (o, *origin_incarnation, *seq);
                let times = if self.config.sabotage && !self.sabotaged {
                    self.sabotaged = true;
                    2
                } else {
                    1
                };
                for _ in 0..times {
                    if let Err(v) = self
                        .tracker
                        .delivered(self.now, i, incarnation, key, payload)
                    {
                        self.violation.get_or_insert(v);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn broadcast(&mut self, node: u32) {
        // The chosen node may be down: the next live one of the network (in index order)
        // sends instead.
        let n = self.config.nodes;
        let Some(origin) = (0..n)
            .map(|k| (node + k) % n)
            .find(|&k| self.nodes[k as usize].node.is_some() && !self.nodes[k as usize].paused)
        else {
            return;
        };
        let cold = &mut self.cold[origin as usize];
        cold.sent += 1;
        let key = (origin, self.nodes[origin as usize].incarnation, cold.sent);
        let payload = self.tracker.originate(self.now, key);
        let command = Command::Mesh(MeshCommand::Broadcast { payload });
        self.input(origin, Input::Command(command));
    }

    pub(super) fn maintain(&mut self, i: u32) {
        if self.nodes[i as usize].paused || self.nodes[i as usize].node.is_none() {
            return;
        }
        if let Some(n) = self.nodes[i as usize].node.as_ref() {
            if let Err(e) = n.check_invariants() {
                return self.fail(format!("node {i}: {e}"));
            }
        }
        let unix_ms = self.wall_clock_ms(i);
        self.input(i, Input::WallClock { unix_ms });
        // The lower-indexed end of an intended link (re)dials it when it is down; a
        // wrong-secret node dials its intended links too (both ends try, and must fail).
        let outsider = self.is_wrong_secret_node(i);
        let targets: Vec<u32> = self.cold[i as usize]
            .neighbours
            .iter()
            .copied()
            .filter(|&j| (j > i || outsider) && !self.linked(i, j))
            .filter(|j| {
                let sn = &self.nodes[i as usize];
                // A dedicated connection to `j` (Chord's) is no dial of the intended link.
                let dedicated = |c: &ConnId| {
                    sn.node
                        .as_ref()
                        .is_some_and(|n| n.dedicated_family(*c).is_some())
                };
                !self.cold[i as usize]
                    .dialing
                    .iter()
                    .any(|(c, t)| t == j && !dedicated(c))
            })
            .collect();
        for j in targets {
            self.input(i, Input::Command(Command::Connect { addr: addr(j) }));
        }
    }

    pub(super) fn crash(&mut self, i: u32, down_ms: u64) {
        let sn = &mut self.nodes[i as usize];
        let Some(old) = sn.node.take() else { return };
        self.stats.crashes += 1;
        let m = old.metrics();
        self.stats.duplicates += m.mesh.broadcast_duplicates;
        self.stats.frame_receptions += m.mesh.broadcasts_received;
        self.stats.table_catchup_bytes += m.table.catchup_bytes;
        self.stats.table_full_resend_bytes += m.table.full_resend_bytes;
        self.crashed.add(&old);
        sn.timer_at = None;
        if sn.paused {
            sn.paused = false;
            self.paused_nodes -= 1;
        }
        // In connection order, as the latency draws below have always been made.
        let mut conns = std::mem::take(&mut sn.conns);
        conns.sort_unstable_by_key(|c| c.conn);
        let cold = &mut self.cold[i as usize];
        cold.deferred.clear();
        cold.dialing.clear();
        for ConnLink { link, side, .. } in conns {
            self.links[link as usize].close_end(side);
            let lat = self.latency();
            self.push(
                self.now + lat,
                Ev::RemoteClosed {
                    link,
                    side: 1 - side,
                },
            );
        }
        self.tracker.crashed(i);
        self.push(
            self.now + down_ms * MS,
            Ev::Recover(Recovery::Restart { node: i }),
        );
    }

    pub(super) fn restart(&mut self, i: u32) {
        let sn = &mut self.nodes[i as usize];
        if sn.node.is_some() {
            return;
        }
        // What survives a crash: the key (in the config) and the incarnation, raised.
        sn.incarnation += 1;
        let cold = &mut self.cold[i as usize];
        cold.config.incarnation = sn.incarnation;
        sn.node = Some(Box::new(Node::new((*cold.config).clone())));
        cold.sent = 0;
        self.start_node(i);
        self.maintain(i);
    }

    pub(super) fn resume(&mut self, i: u32) {
        let sn = &mut self.nodes[i as usize];
        if !sn.paused {
            return;
        }
        sn.paused = false;
        self.paused_nodes -= 1;
        let deferred = std::mem::take(&mut self.cold[i as usize].deferred);
        for ev in deferred {
            self.dispatch(ev);
        }
        if let Some(n) = self.nodes[i as usize].node.as_mut() {
            n.handle_timeout(Instant(self.now));
        }
        self.drain(i);
        let sending: Vec<(u32, u8)> = self.nodes[i as usize]
            .conns
            .iter()
            .map(|c| (c.link, c.side))
            .collect();
        for (link, side) in sending {
            self.writable_if_room(link, side);
            self.writable_if_drained(link, side);
        }
    }
}
