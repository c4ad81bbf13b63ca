//! Credit-based flow control of one stream, as pure bookkeeping: [`SendWindow`] on the side
//! that sends items, [`RecvWindow`] on the side that receives them.
//!
//! Credit is counted in bytes of stream items frames. The receiver grants its window when the
//! connection starts (the hello exchange) and then, as its consumer takes frames, grants what
//! was taken, in credit frames worth at least a quarter of the window. The sender may send a
//! frame while it has any credit left, so it overshoots by at most one frame; the receiver
//! refuses a frame that arrives when the sender had none.

use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// The sending side's credit for one stream, shared between the task that sends items and the
/// reader that receives the peer's credit frames.
#[derive(Debug)]
pub(crate) struct SendWindow {
    state: Mutex<SendState>,
}

#[derive(Debug)]
struct SendState {
    /// Credit left: granted minus sent; below zero after an overshooting frame.
    credit: i64,
    /// The peer's window: the most credit it can ever legitimately have given us.
    window: u32,
    /// The peer stopped reading (or the call ended): send nothing more.
    stopped: bool,
    waker: Option<Waker>,
}

/// What [`SendWindow::poll_credit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// This many bytes may be sent (at least 1).
    Available(usize),
    /// The receiver does not want more.
    Stopped,
}

impl SendWindow {
    /// A stream to a peer that grants `window` bytes up front.
    pub(crate) fn new(window: u32) -> Self {
        SendWindow { state: Mutex::new(SendState { credit: i64::from(window), window, stopped: false, waker: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer granted `bytes` more. `Err` (a protocol violation) if that would give us more
    /// credit than its window: it can only grant back what it received.
    pub(crate) fn grant(&self, bytes: u32) -> Result<(), String> {
        let mut state = self.lock();
        let credit = state.credit + i64::from(bytes);
        if credit > i64::from(state.window) {
            return Err(format!(
                "the peer granted {bytes} bytes of stream credit, which makes {credit}, more than its window of {}",
                state.window
            ));
        }
        state.credit = credit;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// The receiver wants no more items.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Ready with the credit left once there is some (or the stream was stopped).
    pub(crate) fn poll_credit(&self, cx: &mut Context<'_>) -> Poll<Credit> {
        let mut state = self.lock();
        if state.stopped {
            return Poll::Ready(Credit::Stopped);
        }
        if state.credit > 0 {
            return Poll::Ready(Credit::Available(usize::try_from(state.credit).unwrap_or(usize::MAX)));
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A frame of `bytes` was queued.
    pub(crate) fn spend(&self, bytes: usize) {
        let mut state = self.lock();
        state.credit = state.credit.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The receiving side's accounting for one stream.
#[derive(Debug, Clone)]
pub(crate) struct RecvWindow {
    window: u32,
    /// Bytes granted in all (the window plus every credit frame).
    granted: u64,
    /// Bytes of stream items frames received.
    received: u64,
    /// Bytes the consumer took and that were not granted back yet.
    owed: u64,
}

impl RecvWindow {
    /// A stream this side grants `window` bytes up front.
    pub(crate) fn new(window: u32) -> Self {
        RecvWindow { window, granted: u64::from(window), received: 0, owed: 0 }
    }

    /// A stream items frame of `len` bytes arrived. `Err` (a protocol violation) if the sender
    /// had no credit left when it sent it.
    pub(crate) fn receive(&mut self, len: usize) -> Result<(), String> {
        if self.received >= self.granted {
            return Err(format!(
                "the peer sent {len} bytes of stream items beyond the {} bytes of credit it was granted",
                self.granted
            ));
        }
        self.received = self.received.saturating_add(len as u64);
        Ok(())
    }

    /// The consumer took a frame of `len` bytes.
    pub(crate) fn consumed(&mut self, len: usize) {
        self.owed = self.owed.saturating_add(len as u64);
    }

    /// Credit to grant now, if enough is owed to be worth a frame; counted as granted. Give it
    /// back with [`RecvWindow::ungrant`] if the frame could not be queued.
    pub(crate) fn take_grant(&mut self) -> Option<u32> {
        if self.owed < u64::from(self.window / 4).max(1) {
            return None;
        }
        let grant = u32::try_from(self.owed).unwrap_or(u32::MAX);
        self.owed -= u64::from(grant);
        self.granted += u64::from(grant);
        Some(grant)
    }

    /// A grant from [`RecvWindow::take_grant`] that was not sent after all.
    pub(crate) fn ungrant(&mut self, grant: u32) {
        self.owed += u64::from(grant);
        self.granted -= u64::from(grant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_overshoots_by_at_most_one_frame() {
        let window = SendWindow::new(100);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(window.poll_credit(&mut cx), Poll::Ready(Credit::Available(100)));
        window.spend(150);
        assert_eq!(window.poll_credit(&mut cx), Poll::Pending);
        window.grant(50).unwrap();
        assert_eq!(window.poll_credit(&mut cx), Poll::Pending, "credit is still 0");
        window.grant(1).unwrap();
        assert_eq!(window.poll_credit(&mut cx), Poll::Ready(Credit::Available(1)));
        window.stop();
        assert_eq!(window.poll_credit(&mut cx), Poll::Ready(Credit::Stopped));
    }

    #[test]
    fn credit_beyond_the_window_is_refused() {
        let window = SendWindow::new(100);
        window.spend(30);
        window.grant(30).unwrap();
        let err = window.grant(1).unwrap_err();
        assert!(err.contains("more than its window of 100"), "{err}");
        assert!(window.grant(u32::MAX).is_err());
    }

    #[test]
    fn a_receiver_refuses_frames_without_credit_and_grants_what_was_taken() {
        let mut recv = RecvWindow::new(100);
        recv.receive(60).unwrap();
        recv.receive(60).unwrap(); // 40 left when sent: allowed, overshoots
        assert!(recv.receive(1).is_err(), "no credit was left");
        recv.consumed(10);
        assert_eq!(recv.take_grant(), None, "less than a quarter of the window");
        recv.consumed(50);
        assert_eq!(recv.take_grant(), Some(60));
        assert_eq!(recv.take_grant(), None);
        recv.receive(1).unwrap();
        let grant = {
            recv.consumed(120);
            recv.take_grant().unwrap()
        };
        recv.ungrant(grant);
        assert_eq!(recv.take_grant(), Some(grant));
    }

    /// Whatever the order of sends, receipts and grants, a sender that follows its
    /// `SendWindow` is never refused by the receiver's `RecvWindow`, and the receiver never
    /// holds more than its window plus one frame.
    #[test]
    fn sender_and_receiver_agree() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u8..3, 1usize..300), 1..400))| {
            let mut cx = Context::from_waker(Waker::noop());
            let send = SendWindow::new(1000);
            let mut recv = RecvWindow::new(1000);
            let mut in_flight = std::collections::VecDeque::new();
            let mut buffered = std::collections::VecDeque::new();
            let mut held = 0usize;
            for (op, len) in ops {
                match op {
                    0 => if let Poll::Ready(Credit::Available(_)) = send.poll_credit(&mut cx) {
                        send.spend(len);
                        in_flight.push_back(len);
                    },
                    1 => if let Some(len) = in_flight.pop_front() {
                        prop_assert!(recv.receive(len).is_ok());
                        buffered.push_back(len);
                        held += len;
                        prop_assert!(held <= 1000 + 300);
                    },
                    _ => if let Some(len) = buffered.pop_front() {
                        held -= len;
                        recv.consumed(len);
                        if let Some(grant) = recv.take_grant() {
                            prop_assert!(send.grant(grant).is_ok());
                        }
                    },
                }
            }
        });
    }
}
