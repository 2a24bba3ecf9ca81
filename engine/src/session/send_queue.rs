//! One connection's frames not yet handed to the driver, and the bytes in flight (SPEC.md §12).
//!
//! Two lanes: control and relay frames in one FIFO, bulk frames in another. Bulk frames go
//! out only when the first lane is empty and no bulk frame is in flight, so a control or relay
//! frame waits behind at most one bulk frame already handed to the driver. The bulk lane holds
//! at most [`BULK_QUEUED_MAX`] frames; a sender asks for room rather than fill it.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::machine::Class;
pub(crate) use crate::machine::BULK_FRAME_BYTES_MAX;

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
    bulk: VecDeque<Bytes>,
    /// Bytes waiting in `lane`.
    queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    in_flight_bytes: usize,
    /// A bulk frame was handed out since the last `written`.
    bulk_in_flight: bool,
}

impl SendQueue {
    /// Offers a frame under the overflow rule.
    pub(crate) fn enqueue(
        &mut self,
        frame: Bytes,
        class: Class,
        relay_max: usize,
        hard_max: usize,
    ) -> Enqueued {
        if class == Class::Bulk {
            if !self.has_bulk_room() || frame.len() > BULK_FRAME_BYTES_MAX {
                return Enqueued::NoRoom;
            }
            self.bulk.push_back(frame);
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
        self.lane.push_back(frame);
        Enqueued::Queued
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

    /// The next control or relay frame, if it is at most `len_max` bytes: a frame to hand out
    /// with the one [`next_transmit`](Self::next_transmit) just gave, in the same seal.
    #[inline]
    pub(crate) fn next_lane_frame_within(&mut self, len_max: usize) -> Option<Bytes> {
        if self.lane.first.as_ref()?.len() > len_max {
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

    /// The driver wrote everything handed to it.
    pub(crate) fn written(&mut self) {
        self.in_flight_bytes = 0;
        self.bulk_in_flight = false;
    }

    /// Drops everything not yet handed out (the connection is closing).
    pub(crate) fn clear(&mut self) {
        self.lane.clear();
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
            q.enqueue(frame(900), Class::Bulk, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(frame(900), Class::Bulk, 10, 100),
            Enqueued::NoRoom
        );
        let t = q.next_transmit(window).expect("the bulk frame goes out");
        assert!(t.bulk);
        q.handed_out(t.frame.len());
        assert!(q.has_bulk_room(), "handed out: room for the next");
        assert_eq!(
            q.enqueue(frame(900), Class::Bulk, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(frame(50), Class::Control, 10, 100),
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
        q.written();
        assert!(q.next_transmit(window).is_some_and(|t| t.bulk));
        assert_eq!(
            q.queued_bytes(),
            0,
            "bulk frames never count toward the slow bound"
        );
    }

    #[test]
    fn bulk_frames_over_the_size_bound_are_refused() {
        let mut q = SendQueue::default();
        let big = frame(BULK_FRAME_BYTES_MAX + 1);
        assert_eq!(q.enqueue(big, Class::Bulk, 0, 0), Enqueued::NoRoom);
    }

    #[test]
    fn relays_drop_over_the_relay_bound_and_control_overflows_the_hard_bound() {
        let mut q = SendQueue::default();
        assert_eq!(
            q.enqueue(frame(50), Class::Relay, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(frame(5), Class::Relay, 10, 100),
            Enqueued::DroppedRelay
        );
        assert_eq!(
            q.enqueue(frame(40), Class::Control, 10, 100),
            Enqueued::Queued
        );
        assert_eq!(
            q.enqueue(frame(11), Class::Control, 10, 100),
            Enqueued::Overflow
        );
        assert_eq!(q.queued_bytes(), 90);
    }

    quickcheck! {
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
}
