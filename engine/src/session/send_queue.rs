//! One connection's frames not yet handed to the driver, and the bytes in flight (SPEC.md §12).
//!
//! Two lanes: control and relay frames in one FIFO, bulk frames in another. Bulk frames go
//! out only when the first lane is empty and no bulk frame is in flight, so a control or relay
//! frame waits behind at most one bulk frame already handed to the driver. The bulk lane holds
//! at most [`BULK_QUEUED_MAX`] frames; a sender asks for room rather than fill it.
//!
//! Small frames of the first lane queued one after another are copied into one run as they
//! come (at most [`RUN_BYTES_MAX`] bytes, one Noise message of plaintext), instead of each
//! being queued as a handle on its own buffer: a relayed broadcast goes to every link, and a
//! handle each costs two atomic reference-count updates and a queue slot per link. What the
//! queue hands out is then a frame or a run of frames; [`frames`] reads them back. The bytes
//! handed out, and every decision of [`SendQueue::enqueue`], are those of a queue of single
//! frames (a property below checks them against one).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use weft_protocol::{Code, Frame};

use crate::noise::PLAINTEXT_BYTES_MAX;
use crate::sending::Class;
pub(crate) use crate::sending::BULK_FRAME_BYTES_MAX;

/// Largest frame copied into a run; larger ones are queued as they are.
const RUN_FRAME_BYTES_MAX: usize = 2 * 1024;

/// A relayed frame shorter than this is copied when queued; a longer one is queued as the
/// slice of what arrived. A slice keeps its whole receive buffer alive (a read's plaintext,
/// up to 64 KiB), so copying the short ones keeps what the relay bound counts within half of
/// what the queue holds.
const RELAY_SHARED_BYTES_MIN: usize = 32 * 1024;

/// Largest run: one Noise message of plaintext.
pub(crate) const RUN_BYTES_MAX: usize = PLAINTEXT_BYTES_MAX;

/// The least room a run's buffer starts with.
const RUN_START_BYTES: usize = 1024;

/// The frames in `bytes`, a frame or a run of frames the queue handed out (whole frames this
/// node built, back to back), as (code, length).
pub(crate) fn frames(bytes: &[u8]) -> impl Iterator<Item = (Code, usize)> + '_ {
    let mut rest = bytes;
    core::iter::from_fn(move || {
        let code = Frame::peek_code(rest)?;
        let prefix = rest.first_chunk::<4>()?;
        let len = (4 + u32::from_be_bytes(*prefix) as usize).min(rest.len());
        rest = &rest[len..];
        Some((code, len))
    })
}

/// Whether `frame` (one frame, as queued) is HELLO or HELLO_ACK.
fn is_handshake(frame: &[u8]) -> bool {
    matches!(Frame::peek_code(frame), Some(Code::HELLO | Code::HELLO_ACK))
}

/// Bulk frames a connection holds that are not yet handed to the driver.
pub(crate) const BULK_QUEUED_MAX: usize = 1;

/// What happened to a frame offered to a send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// A relay over the relay bound: dropped.
    DroppedRelay,
    /// A bulk frame with no room (or over `BULK_FRAME_BYTES_MAX`): refused.
    NoRoom,
    /// Over the hard bound: the peer is too slow.
    Overflow,
}

/// A frame handed out by [`SendQueue::next_transmit`].
#[derive(Debug)]
pub(crate) struct Transmit {
    pub(crate) frame: Bytes,
    /// It was a bulk frame.
    pub(crate) bulk: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    lane: Fifo,
    /// The small frames queued after `lane`'s, being gathered into one run.
    run: Run,
    bulk: VecDeque<Bytes>,
    /// Bytes waiting in `lane`.
    queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    in_flight_bytes: usize,
    /// A bulk frame was handed out since the last `written`.
    bulk_in_flight: bool,
}

impl SendQueue {
    /// Whether [`SendQueue::enqueue`] would drop any relay frame offered now (the queue is
    /// already at the relay bound): the frame need not be built.
    pub(crate) fn drops_every_relay(&self, relay_max: usize) -> bool {
        self.queued_bytes > 0 && self.queued_bytes >= relay_max
    }

    /// Offers a frame under the overflow rule (copied into a run if small, else shared).
    pub(crate) fn enqueue(
        &mut self,
        frame: &Bytes,
        class: Class,
        relay_max: usize,
        hard_max: usize,
    ) -> Enqueued {
        if class == Class::Bulk {
            if !self.has_bulk_room() || frame.len() > BULK_FRAME_BYTES_MAX {
                return Enqueued::NoRoom;
            }
            self.bulk.push_back(frame.clone());
            return Enqueued::Queued;
        }
        let after = self.queued_bytes + frame.len();
        // An empty queue always takes one relay, so a broadcast larger than the relay bound
        // still travels.
        if class == Class::Relay && after > relay_max && self.queued_bytes > 0 {
            return Enqueued::DroppedRelay;
        }
        if after > hard_max {
            return Enqueued::Overflow;
        }
        self.queued_bytes = after;
        // A handshake frame is an entry of its own, never in a run: the connection seals it
        // alone (the acceptor holds every byte of the message it comes in against the bound
        // on handshake bytes until it has it whole, SPEC.md §8.4).
        if is_handshake(frame) || frame.len() > RUN_FRAME_BYTES_MAX {
            self.close_run();
            if class == Class::Relay && frame.len() < RELAY_SHARED_BYTES_MIN {
                self.lane.push_back(Bytes::copy_from_slice(frame));
            } else {
                self.lane.push_back(frame.clone());
            }
        } else {
            if self.run.len() + frame.len() > RUN_BYTES_MAX {
                self.close_run();
            }
            self.run.push(frame);
        }
        Enqueued::Queued
    }

    /// Moves the run being gathered, if any, to the back of the lane.
    fn close_run(&mut self) {
        if let Some(run) = self.run.take() {
            self.lane.push_back(run);
        }
    }

    /// The lane's first entry (the run, closed, if the lane held nothing else).
    fn lane_front(&mut self) -> Option<&Bytes> {
        if self.lane.first.is_none() {
            self.close_run();
        }
        self.lane.first.as_ref()
    }

    /// Whether the bulk lane takes another frame.
    pub(crate) fn has_bulk_room(&self) -> bool {
        self.bulk.len() < BULK_QUEUED_MAX
    }

    /// The next frame to hand to the driver, if the transmit window allows one. The caller
    /// reports the bytes it hands out for it with [`handed_out`](Self::handed_out).
    #[inline]
    pub(crate) fn next_transmit(&mut self, window: usize) -> Option<Transmit> {
        if self.in_flight_bytes >= window {
            return None;
        }
        self.lane_front();
        if let Some(frame) = self.lane.pop_front() {
            self.queued_bytes -= frame.len();
            return Some(Transmit { frame, bulk: false });
        }
        if self.bulk_in_flight {
            return None;
        }
        let frame = self.bulk.pop_front()?;
        self.bulk_in_flight = true;
        Some(Transmit { frame, bulk: true })
    }

    /// The next control or relay frame (or run), if it is at most `len_max` bytes and not a
    /// handshake frame (sealed alone, see [`enqueue`](Self::enqueue)): to hand out with the
    /// one [`next_transmit`](Self::next_transmit) just gave, in the same seal.
    #[inline]
    pub(crate) fn next_lane_frame_within(&mut self, len_max: usize) -> Option<Bytes> {
        let front = self.lane_front()?;
        if front.len() > len_max || is_handshake(front) {
            return None;
        }
        let frame = self.lane.pop_front()?;
        self.queued_bytes -= frame.len();
        Some(frame)
    }

    /// Bytes handed to the driver and not yet reported written.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight_bytes
    }

    /// Counts `len` bytes handed to the driver (a frame as the transport sealed it).
    pub(crate) fn handed_out(&mut self, len: usize) {
        self.in_flight_bytes += len;
    }

    /// The driver wrote everything it had taken; `unpolled` bytes were handed out since it
    /// last took outputs (by timers run at the top of the very call that reports this) and
    /// stay in flight. A bulk frame in flight counts as written only with nothing unpolled
    /// (it may be among them; the next `Writable` settles it).
    pub(crate) fn written(&mut self, unpolled: usize) {
        self.in_flight_bytes = unpolled;
        self.bulk_in_flight &= unpolled > 0;
    }

    /// Drops everything not yet handed out (the connection is closing).
    pub(crate) fn clear(&mut self) {
        self.lane.clear();
        self.run = Run::default();
        self.bulk.clear();
        self.queued_bytes = 0;
    }

    /// Bytes waiting in the control and relay lane.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bulk frames waiting.
    pub(crate) fn bulk_queued(&self) -> usize {
        self.bulk.len()
    }

    /// Bytes handed out and not yet written.
    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }
}

/// Small frames gathered in order: the first kept as it is (a frame queued alone goes out
/// without a copy), from the second on all copied into one buffer.
#[derive(Debug, Default)]
struct Run {
    first: Option<Bytes>,
    /// The whole run once it has two frames or more (`first` is then `None`).
    copied: BytesMut,
}

impl Run {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.copied.len(), Bytes::len)
    }

    fn push(&mut self, frame: &Bytes) {
        if let Some(first) = self.first.take() {
            // Room for a few more such frames, growing (doubling) with the run: a run of two
            // PINGs does not take a Noise message's worth of memory.
            let room = (4 * (first.len() + frame.len())).clamp(RUN_START_BYTES, RUN_BYTES_MAX);
            self.copied = BytesMut::with_capacity(room);
            self.copied.extend_from_slice(&first);
            self.copied.extend_from_slice(frame);
        } else if self.copied.is_empty() {
            self.first = Some(frame.clone());
        } else {
            self.copied.extend_from_slice(frame);
        }
    }

    /// The run's bytes, leaving it empty; `None` if it was.
    fn take(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        (!self.copied.is_empty()).then(|| core::mem::take(&mut self.copied).freeze())
    }
}

/// A FIFO of frames whose oldest frame sits in a slot of its own: most frames are queued into
/// an empty queue and taken out at once, and then the ring buffer is never touched (made at
/// the first backlog, and kept). Checked against a plain deque by a property below.
#[derive(Debug, Default)]
struct Fifo {
    /// The oldest frame; empty only when `rest` is empty too.
    first: Option<Bytes>,
    /// The frames after it, in order.
    rest: VecDeque<Bytes>,
}

impl Fifo {
    fn push_back(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let first = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(first)
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0; len])
    }

    #[test]
    fn a_control_frame_waits_behind_at_most_one_bulk_frame() {
        let mut q = SendQueue::default();
        let window = 1000;
        assert_eq!(
            q.enqueue(&frame(900), Class::Bulk, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(&frame(900), Class::Bulk, 10, 100),
            Enqueued::NoRoom
        );
        let t = q.next_transmit(window).expect("the bulk frame goes out");
        assert!(t.bulk);
        q.handed_out(t.frame.len());
        assert!(q.has_bulk_room(), "handed out: room for the next");
        assert_eq!(
            q.enqueue(&frame(900), Class::Bulk, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(&frame(50), Class::Control, 10, 100),
            Enqueued::Queued
        );
        let t = q
            .next_transmit(window)
            .expect("control goes before the queued bulk frame");
        assert!(!t.bulk);
        q.handed_out(t.frame.len());
        assert!(
            q.next_transmit(usize::MAX).is_none(),
            "no second bulk frame while one is in flight, whatever the window"
        );
        q.written(0);
        assert!(q.next_transmit(window).is_some_and(|t| t.bulk));
        assert_eq!(
            q.queued_bytes(),
            0,
            "bulk frames never count toward the slow bound"
        );
    }

    /// HELLO and HELLO_ACK are entries of their own, never in a run with the small frames
    /// queued around them: the connection seals each alone (a dialer's HELLO_ACK went out
    /// in one Noise message with its new link's first frames, up to 64 KiB, which the
    /// acceptor held against the handshake bound until it had all of it).
    #[test]
    fn handshake_frames_never_share_a_run() {
        let mut q = SendQueue::default();
        let control = |code| Frame::build(code, &[7; 100], false).into_bytes();
        let small = control(Code::PING);
        let ack = control(Code::HELLO_ACK);
        for f in [&small, &ack, &small, &small] {
            assert_eq!(
                q.enqueue(f, Class::Control, 1 << 20, 1 << 20),
                Enqueued::Queued
            );
        }
        let codes = |t: Transmit| frames(&t.frame).map(|(c, _)| c).collect::<Vec<_>>();
        let first = q.next_transmit(usize::MAX).expect("the ping before");
        assert_eq!(codes(first), [Code::PING]);
        let second = q.next_transmit(usize::MAX).expect("the ack");
        assert_eq!(codes(second), [Code::HELLO_ACK]);
        let third = q
            .next_transmit(usize::MAX)
            .expect("the pings after, one run");
        assert_eq!(codes(third), [Code::PING, Code::PING]);
        // Nor is one handed out to share the seal of the entry before it.
        q.enqueue(&small, Class::Control, 1 << 20, 1 << 20);
        q.enqueue(&ack, Class::Control, 1 << 20, 1 << 20);
        let first = q.next_transmit(usize::MAX).expect("the ping");
        assert_eq!(codes(first), [Code::PING]);
        assert!(q.next_lane_frame_within(usize::MAX).is_none());
    }

    #[test]
    fn bulk_frames_over_the_size_bound_are_refused() {
        let mut q = SendQueue::default();
        let big = frame(BULK_FRAME_BYTES_MAX + 1);
        assert_eq!(q.enqueue(&big, Class::Bulk, 0, 0), Enqueued::NoRoom);
    }

    #[test]
    fn relays_drop_over_the_relay_bound_and_control_overflows_the_hard_bound() {
        let mut q = SendQueue::default();
        assert_eq!(
            q.enqueue(&frame(50), Class::Relay, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(&frame(5), Class::Relay, 10, 100),
            Enqueued::DroppedRelay
        );
        assert_eq!(
            q.enqueue(&frame(40), Class::Control, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(&frame(11), Class::Control, 10, 100),
            Enqueued::Overflow
        );
        assert_eq!(q.queued_bytes(), 90);
    }

    quickcheck! {
        /// A relay is left unbuilt only when any relay frame would be dropped.
        fn a_relay_left_unbuilt_would_have_been_dropped(sizes: Vec<(u16, bool)>, offered: u16) -> bool {
            let (relay_max, hard_max) = (3_000, 60_000);
            let mut q = SendQueue::default();
            for (len, relay) in sizes {
                let class = if relay { Class::Relay } else { Class::Control };
                let _ = q.enqueue(&frame(usize::from(len % 2_000) + 1), class, relay_max, hard_max);
            }
            let offered = frame(usize::from(offered) + 1);
            let skip = q.drops_every_relay(relay_max);
            let outcome = q.enqueue(&offered, Class::Relay, relay_max, hard_max);
            !skip || outcome == Enqueued::DroppedRelay
        }
    }

    /// The queue the runs stand in for: the same rules, every frame queued and handed out on
    /// its own (the queue before runs).
    #[derive(Default)]
    struct Single {
        lane: VecDeque<Bytes>,
        bulk: VecDeque<Bytes>,
        queued_bytes: usize,
        bulk_in_flight: bool,
    }

    impl Single {
        fn enqueue(
            &mut self,
            frame: Bytes,
            class: Class,
            relay_max: usize,
            hard_max: usize,
        ) -> Enqueued {
            if class == Class::Bulk {
                if self.bulk.len() >= BULK_QUEUED_MAX || frame.len() > BULK_FRAME_BYTES_MAX {
                    return Enqueued::NoRoom;
                }
                self.bulk.push_back(frame);
                return Enqueued::Queued;
            }
            let after = self.queued_bytes + frame.len();
            if class == Class::Relay && after > relay_max && self.queued_bytes > 0 {
                return Enqueued::DroppedRelay;
            }
            if after > hard_max {
                return Enqueued::Overflow;
            }
            self.queued_bytes = after;
            self.lane.push_back(frame);
            Enqueued::Queued
        }

        fn next_transmit(&mut self) -> Option<Transmit> {
            if let Some(frame) = self.lane.pop_front() {
                self.queued_bytes -= frame.len();
                return Some(Transmit { frame, bulk: false });
            }
            if self.bulk_in_flight {
                return None;
            }
            let frame = self.bulk.pop_front()?;
            self.bulk_in_flight = true;
            Some(Transmit { frame, bulk: true })
        }
    }

    /// Everything either queue hands out now: (lane bytes, bulk bytes, frames).
    fn drain(mut next: impl FnMut() -> Option<Transmit>) -> (Vec<u8>, Vec<u8>, usize) {
        let (mut lane, mut bulk, mut frames) = (Vec::new(), Vec::new(), 0);
        while let Some(t) = next() {
            frames += super::frames(&t.frame).count();
            if t.bulk {
                bulk.extend_from_slice(&t.frame);
            } else {
                lane.extend_from_slice(&t.frame);
            }
        }
        (lane, bulk, frames)
    }

    quickcheck! {
        /// Any frames of any class and size (some over the run's frame bound), drains, writes
        /// and clears: the queue with runs decides every frame as the queue of single frames
        /// does, holds as many bytes, and hands out the same bytes in the same order, the
        /// same frames (read back from its runs).
        fn runs_hand_out_what_single_frames_would(ops: Vec<(u8, u16)>) -> bool {
            let (relay_max, hard_max) = (6_000, 40_000);
            let mut q = SendQueue::default();
            let mut model = Single::default();
            for (i, (op, size)) in ops.into_iter().enumerate() {
                match op % 8 {
                    0..=4 => {
                        let class = [Class::Control, Class::Relay, Class::Relay, Class::Bulk][usize::from(op / 8) % 4];
                        let code = if class == Class::Relay { Code::BROADCAST } else { Code::PING };
                        let len = usize::from(size) % (RUN_FRAME_BYTES_MAX + 600);
                        let f = Frame::build(code, &vec![i as u8; len], false).into_bytes();
                        let ours = q.enqueue(&f, class, relay_max, hard_max);
                        if ours != model.enqueue(f, class, relay_max, hard_max) {
                            return false;
                        }
                    }
                    5 => {
                        let ours = drain(|| q.next_transmit(usize::MAX));
                        let theirs = drain(|| model.next_transmit());
                        if ours != theirs {
                            return false;
                        }
                    }
                    6 => {
                        q.written(0);
                        model.bulk_in_flight = false;
                    }
                    _ => {
                        q.clear();
                        model.lane.clear();
                        model.bulk.clear();
                        model.queued_bytes = 0;
                    }
                }
                if q.queued_bytes() != model.queued_bytes || q.bulk_queued() != model.bulk.len() {
                    return false;
                }
            }
            drain(|| q.next_transmit(usize::MAX)) == drain(|| model.next_transmit())
        }

        /// Any pushes, pops and clears: the same frames in the same order as a plain deque.
        fn fifo_is_a_plain_fifo(ops: Vec<Option<u8>>) -> bool {
            let mut q = Fifo::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Some(0) => {
                        q.clear();
                        model.clear();
                    }
                    Some(b) => {
                        q.push_back(Bytes::from(vec![b]));
                        model.push_back(Bytes::from(vec![b]));
                    }
                    None => {
                        if q.pop_front() != model.pop_front() {
                            return false;
                        }
                    }
                }
            }
            while let Some(b) = model.pop_front() {
                if q.pop_front() != Some(b) {
                    return false;
                }
            }
            q.pop_front().is_none()
        }
    }

    /// A relay of a few KiB that arrived within a large read is copied (its slice would
    /// keep the whole read alive, uncounted); a large one is not.
    #[test]
    fn short_relays_are_copied_out_of_what_they_arrived_in() {
        let read = Bytes::from(vec![1u8; 64 * 1024]);
        let mut q = SendQueue::default();
        for (len, class, copied) in [
            (4 * 1024, Class::Relay, true),
            (4 * 1024, Class::Control, false),
            (RELAY_SHARED_BYTES_MIN, Class::Relay, false),
        ] {
            let slice = read.slice(..len);
            assert_eq!(
                q.enqueue(&slice, class, usize::MAX, usize::MAX),
                Enqueued::Queued
            );
            let t = q.next_transmit(usize::MAX).expect("queued");
            assert_eq!(t.frame, slice);
            assert_eq!(
                t.frame.as_ptr() != slice.as_ptr(),
                copied,
                "{len} {class:?}"
            );
            q.handed_out(t.frame.len());
            q.written(0);
        }
    }
}
