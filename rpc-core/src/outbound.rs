//! The sending half of a connection, shared by every task that writes to it.
//!
//! There is no writer task: a caller queues its frame and flushes it itself, so an uncontended
//! call costs no hop to another task. Frames queued by other callers while one is flushing leave
//! together in the same flush (the stream sender coalesces them). Under load a client's calls go
//! further ([`SharedSender::poll_enqueue_batched`]): they queue without flushing, and a task of
//! the connection's flushes each batch once, after the callers that were ready had their turn
//! (`client/flusher.rs`).
//!
//! The transport registers only one waker per direction, but many callers may wait for a flush.
//! So the transport is always polled with a *broadcast* waker that wakes every waiting caller;
//! whichever runs first finishes the flush for all of them. A caller that gives up (its future is
//! dropped) therefore never strands the others. A caller joins the waiting list only when the
//! transport said pending, so the common case (ready at once) clones no waker and wakes nobody.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::RpcError;
use crate::transport::FrameSender;
use crate::wire::Encoded;

/// A [`FrameSender`] that many tasks can send through concurrently.
pub(crate) struct SharedSender {
    state: Mutex<State>,
    /// The transport's [`FrameSender::sends_at_once`], asked once.
    sends_at_once: bool,
    /// All frames with a sequence number up to this have been flushed. Stored under the state's
    /// lock (it only grows), loaded without it: a caller whose frame left finds out without the
    /// lock (over `shm://` nearly every caller, whose frame left as it was queued).
    flushed: AtomicU64,
    waiters: Arc<Waiters>,
    broadcast: Waker,
}

struct State {
    sender: Box<dyn FrameSender>,
    /// Number of frames queued so far; a frame's sequence number is the count after queueing it.
    queued: u64,
    failed: Option<RpcError>,
    /// The transport's last `poll_ready` or `poll_flush` was pending: frames wait for the peer.
    waiting: bool,
    /// Flushes that completed: progress, for transports that do not count their bytes.
    flushes: u64,
    /// The last frame (a goaway) is queued: nothing may follow it, though what is queued is
    /// still flushed.
    sealed: bool,
    /// A batch is open: frames queued under load since the last [`end_batch`] wait for the
    /// flush that a client's flushing task does for all of them.
    ///
    /// [`end_batch`]: SharedSender::end_batch
    batch_open: bool,
}

/// The callers waiting for the transport, woken all at once by the broadcast waker.
#[derive(Default)]
struct Waiters {
    list: Mutex<Vec<Waker>>,
    /// How many broadcasts there were. A caller reads it before it polls the transport and
    /// registers only if the poll was pending; a broadcast in between (the transport may fire
    /// from another thread as soon as it holds the waker) shows as a changed count, and the
    /// caller is woken at once instead of missing it.
    broadcasts: AtomicU64,
    /// The list may hold wakers: a broadcast that finds it unset takes no lock. Every completed
    /// flush broadcasts, nearly always to nobody; locking the list for that cost 84 of the 7,242
    /// instructions of an `add` over `mem://` (callgrind).
    listed: AtomicBool,
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The count first, then the flag; `register` sets the flag, then reads the count (all
        // `SeqCst`): a caller registering now either sees the new count or is seen here.
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        if !self.listed.load(Ordering::SeqCst) {
            return;
        }
        let wakers = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            self.listed.store(false, Ordering::SeqCst);
            std::mem::take(&mut *list)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Waiters {
    /// What to pass to [`register`](Self::register) after polling the transport.
    fn epoch(&self) -> u64 {
        self.broadcasts.load(Ordering::SeqCst)
    }

    /// Registers a caller whose poll of the transport, begun when the count of broadcasts was
    /// `epoch`, was pending.
    fn register(&self, waker: &Waker, epoch: u64) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        // Set under the lock, so a broadcast that clears it (also under the lock) takes every
        // waker registered before.
        self.listed.store(true, Ordering::SeqCst);
        if self.broadcasts.load(Ordering::SeqCst) != epoch {
            // The transport fired after the poll began: what it waited for may be there now.
            drop(list);
            waker.wake_by_ref();
        } else if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
    }
}

impl SharedSender {
    pub(crate) fn new(sender: Box<dyn FrameSender>) -> Self {
        let waiters = Arc::new(Waiters::default());
        let broadcast = Waker::from(Arc::clone(&waiters));
        Self {
            sends_at_once: sender.sends_at_once(),
            flushed: AtomicU64::new(0),
            state: Mutex::new(State {
                sender,
                queued: 0,
                failed: None,
                waiting: false,
                flushes: 0,
                sealed: false,
                batch_open: false,
            }),
            waiters,
            broadcast,
        }
    }

    /// Whether a queued frame leaves at once (see [`FrameSender::sends_at_once`]).
    pub(crate) fn sends_at_once(&self) -> bool {
        self.sends_at_once
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a transport; the state it guards
        // stays consistent (counters are updated after the transport call returns).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` (taking it out of the option) and returns its sequence number.
    pub(crate) fn poll_enqueue(
        &self,
        cx: &mut Context<'_>,
        frame: &mut Option<Encoded>,
    ) -> Poll<Result<u64, RpcError>> {
        self.poll_enqueue_as(cx, frame, false, false).map_ok(|(seq, _)| seq)
    }

    /// [`poll_enqueue`](Self::poll_enqueue) for a caller under load, who leaves the flush to a
    /// task that does it once for a batch of frames: also says whether this frame opened a new
    /// batch (the caller must then wake that task, which ends it with
    /// [`end_batch`](Self::end_batch) when it flushes).
    pub(crate) fn poll_enqueue_batched(
        &self,
        cx: &mut Context<'_>,
        frame: &mut Option<Encoded>,
    ) -> Poll<Result<(u64, bool), RpcError>> {
        self.poll_enqueue_as(cx, frame, false, true)
    }

    /// Ends the open batch, about to be flushed: frames queued from now on open a new one.
    /// Returns the sequence number the flush must reach to carry the whole batch.
    pub(crate) fn end_batch(&self) -> u64 {
        let mut state = self.lock();
        state.batch_open = false;
        state.queued
    }

    /// [`poll_enqueue`](Self::poll_enqueue); with `last`, nothing can be queued after `frame`.
    fn poll_enqueue_as(
        &self,
        cx: &mut Context<'_>,
        frame: &mut Option<Encoded>,
        last: bool,
        batched: bool,
    ) -> Poll<Result<(u64, bool), RpcError>> {
        let mut state = self.lock();
        if let Some(err) = &state.failed {
            return Poll::Ready(Err(err.clone()));
        }
        if state.sealed {
            return Poll::Ready(Err(closing()));
        }
        let epoch = self.waiters.epoch();
        let mut bcx = Context::from_waker(&self.broadcast);
        let ready = state.sender.poll_ready(&mut bcx);
        state.waiting = ready.is_pending();
        match ready {
            Poll::Pending => {
                self.waiters.register(cx.waker(), epoch);
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(&mut state, e.into()))),
            Poll::Ready(Ok(())) => {}
        }
        let frame = frame.take().expect("poll_enqueue called again after it completed");
        if let Err(e) = state.sender.start_send_parts(frame) {
            return Poll::Ready(Err(self.fail(&mut state, e.into())));
        }
        state.queued += 1;
        state.sealed = last;
        if self.sends_at_once && state.sender.unsent_len() == 0 {
            // Everything queued so far has left, this frame with it, and needs no flush (what
            // `sends_at_once` promises).
            self.flushed.store(state.queued, Ordering::Release);
        }
        let opened = batched && !std::mem::replace(&mut state.batch_open, true);
        Poll::Ready(Ok((state.queued, opened)))
    }

    /// Whether the frame with sequence number `seq` has been flushed (without waiting).
    pub(crate) fn has_flushed(&self, seq: u64) -> bool {
        self.flushed.load(Ordering::Acquire) >= seq
    }

    /// Ready once the frame with sequence number `seq` has been flushed to the transport.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>, seq: u64) -> Poll<Result<(), RpcError>> {
        if self.has_flushed(seq) {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.lock();
        // Flushed by another caller while we waited for the lock?
        if self.has_flushed(seq) {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = &state.failed {
            return Poll::Ready(Err(err.clone()));
        }
        let epoch = self.waiters.epoch();
        let target = state.queued;
        let mut bcx = Context::from_waker(&self.broadcast);
        let flush = state.sender.poll_flush(&mut bcx);
        state.waiting = flush.is_pending();
        match flush {
            Poll::Pending => {
                self.waiters.register(cx.waker(), epoch);
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(&mut state, e.into()))),
            Poll::Ready(Ok(())) => {
                self.flushed.store(target, Ordering::Release);
                state.flushes += 1;
                drop(state);
                // Others waiting for frames this flush carried can finish now.
                self.broadcast.wake_by_ref();
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Queues and flushes one frame.
    pub(crate) async fn send(&self, frame: impl Into<Encoded>) -> Result<(), RpcError> {
        self.send_as(frame.into(), false).await
    }

    /// Queues and flushes the connection's last frame (its goaway): a handler task still
    /// running on another thread, about to send an answer or a stream item, is refused
    /// instead of writing behind it.
    pub(crate) async fn send_last(&self, frame: impl Into<Encoded>) -> Result<(), RpcError> {
        self.send_as(frame.into(), true).await
    }

    async fn send_as(&self, frame: Encoded, last: bool) -> Result<(), RpcError> {
        let mut frame = Some(frame);
        let (seq, _) = std::future::poll_fn(|cx| self.poll_enqueue_as(cx, &mut frame, last, false)).await?;
        std::future::poll_fn(|cx| self.poll_flushed(cx, seq)).await
    }

    /// Queues a frame if that is possible right now without waiting, and returns its sequence
    /// number; `None` if the transport has no room or has failed.
    pub(crate) fn try_enqueue_now(&self, frame: impl Into<Encoded>) -> Option<u64> {
        let mut state = self.lock();
        if state.failed.is_some() || state.sealed {
            return None;
        }
        let mut bcx = Context::from_waker(&self.broadcast);
        if !matches!(state.sender.poll_ready(&mut bcx), Poll::Ready(Ok(())))
            || state.sender.start_send_parts(frame.into()).is_err()
        {
            return None;
        }
        state.queued += 1;
        Some(state.queued)
    }

    /// Tries once, without waiting, to flush whatever is queued. Queued bytes whose flushing
    /// caller gave up (a cancelled call) wait for the next flush; stall detection calls this
    /// first, so such bytes are not mistaken for a peer that stopped reading.
    pub(crate) fn nudge(&self) {
        let mut state = self.lock();
        if state.failed.is_some() {
            return;
        }
        let target = state.queued;
        let mut bcx = Context::from_waker(&self.broadcast);
        let flush = state.sender.poll_flush(&mut bcx);
        state.waiting = flush.is_pending();
        match flush {
            Poll::Pending => {}
            Poll::Ready(Err(e)) => {
                self.fail(&mut state, e.into());
            }
            Poll::Ready(Ok(())) => {
                self.flushed.store(target, Ordering::Release);
                state.flushes += 1;
                drop(state);
                self.broadcast.wake_by_ref();
            }
        }
    }

    /// Flushes that completed so far.
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// For stall detection: `(bytes waiting for the peer, a progress counter)`. The counter
    /// grows with every byte a transport reports written and every completed flush, so it also
    /// moves for transports that do not count bytes; frames count as waiting (at least 1 byte)
    /// while the transport is not ready for more or has not finished a flush.
    pub(crate) fn progress(&self) -> (usize, u64) {
        let state = self.lock();
        let unsent = state.sender.unsent_len().max(usize::from(state.waiting));
        (unsent, state.sender.bytes_written().wrapping_add(state.flushes))
    }

    /// Flushes and closes the sending half (EOF for the peer).
    pub(crate) async fn close(&self) -> Result<(), RpcError> {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            let epoch = self.waiters.epoch();
            let mut bcx = Context::from_waker(&self.broadcast);
            let closed = state.sender.poll_close(&mut bcx).map_err(RpcError::from);
            if closed.is_pending() {
                self.waiters.register(cx.waker(), epoch);
            }
            closed
        })
        .await
    }
}

/// What a frame queued after the connection's last one gets.
fn closing() -> RpcError {
    RpcError::disconnected("the connection is closing".to_owned())
}

impl SharedSender {
    /// The connection is over: every caller still waiting to queue or flush gives up (a handler
    /// task parked on a peer that stopped reading must not keep the connection alive).
    pub(crate) fn shut(&self) {
        let mut state = self.lock();
        if state.failed.is_none() {
            self.fail(&mut state, RpcError::disconnected("the connection was closed".to_owned()));
        }
    }

    /// Records a transport failure and wakes every waiter so it sees the failure.
    fn fail(&self, state: &mut State, err: RpcError) -> RpcError {
        state.failed = Some(err.clone());
        self.broadcast.wake_by_ref();
        err
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;

    use super::SharedSender;
    use crate::transport::FrameSender;
    use crate::wake_count::WakeCount;

    /// A transport that takes every frame at once and keeps it.
    struct Keep(Arc<Mutex<Vec<Bytes>>>);

    impl FrameSender for Keep {
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(&mut self, frame: Bytes) -> io::Result<()> {
            self.0.lock().unwrap().push(frame);
            Ok(())
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A transport that is never ready and fires the waker it was given at once, as a
    /// transport whose peer made room on another thread just after the poll stored the waker.
    struct FiresAtOnce;

    impl FrameSender for FiresAtOnce {
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        fn start_send(&mut self, _: Bytes) -> io::Result<()> {
            unreachable!("never ready")
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_wake_between_the_poll_and_the_registration_is_not_lost() {
        // The caller joins the waiting list only after the transport said pending; the
        // broadcast fired before that must still reach it.
        let out = SharedSender::new(Box::new(FiresAtOnce));
        let (count, waker) = WakeCount::new();
        let mut frame = Some(Bytes::from_static(b"frame").into());
        assert!(out.poll_enqueue(&mut Context::from_waker(&waker), &mut frame).is_pending());
        assert_eq!(count.get(), 1, "the caller was not woken by the broadcast it missed");
    }

    #[test]
    fn a_send_that_never_waits_wakes_nobody() {
        // Ready at once: no waker is kept, so no later broadcast polls the caller again.
        let sent = Arc::new(Mutex::new(Vec::new()));
        let out = SharedSender::new(Box::new(Keep(Arc::clone(&sent))));
        let (count, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            let mut frame = Some(Bytes::from_static(b"frame").into());
            let Poll::Ready(Ok(seq)) = out.poll_enqueue(&mut cx, &mut frame) else { panic!("not queued at once") };
            assert!(matches!(out.poll_flushed(&mut cx, seq), Poll::Ready(Ok(()))));
        }
        assert_eq!(sent.lock().unwrap().len(), 3);
        assert_eq!(count.get(), 0, "a caller that never waited was woken");
    }

    /// A transport that is pending until the test fires the waker it kept.
    #[derive(Default)]
    struct Later(Arc<Mutex<(bool, Option<Waker>)>>);

    impl FrameSender for Later {
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut state = self.0.lock().unwrap();
            if state.0 {
                return Poll::Ready(Ok(()));
            }
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
        fn start_send(&mut self, _: Bytes) -> io::Result<()> {
            Ok(())
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn every_waiting_caller_is_woken_once_by_the_transport() {
        let later = Later::default();
        let state = Arc::clone(&later.0);
        let out = SharedSender::new(Box::new(later));
        let counts: Vec<_> = (0..3).map(|_| WakeCount::new()).collect();
        for (_, waker) in &counts {
            let mut frame = Some(Bytes::from_static(b"frame").into());
            assert!(out.poll_enqueue(&mut Context::from_waker(waker), &mut frame).is_pending());
        }
        let fire = |state: &Arc<Mutex<(bool, Option<Waker>)>>| state.lock().unwrap().1.take().unwrap().wake();
        fire(&state);
        assert_eq!(counts.iter().map(|(c, _)| c.get()).collect::<Vec<_>>(), [1, 1, 1]);
        // The list was emptied: a later broadcast (a flush completing) wakes none of them again.
        let (_, waker) = WakeCount::new();
        let mut frame = Some(Bytes::from_static(b"frame").into());
        assert!(out.poll_enqueue(&mut Context::from_waker(&waker), &mut frame).is_pending());
        state.lock().unwrap().0 = true;
        fire(&state);
        assert_eq!(counts.iter().map(|(c, _)| c.get()).collect::<Vec<_>>(), [1, 1, 1]);
    }

    /// A transport that sends frames as they are queued and keeps `unsent` bytes of each back
    /// for its flush, counting the flushes it is asked for.
    struct AtOnce {
        unsent: usize,
        flushes: Arc<Mutex<usize>>,
    }

    impl FrameSender for AtOnce {
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(&mut self, _: Bytes) -> io::Result<()> {
            Ok(())
        }
        fn sends_at_once(&self) -> bool {
            true
        }
        fn unsent_len(&self) -> usize {
            self.unsent
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            self.unsent = 0;
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_frame_that_left_whole_is_flushed_without_asking_the_transport() {
        let mut cx = Context::from_waker(Waker::noop());
        for (unsent, flushes_expected) in [(0, 0), (3, 1)] {
            let flushes = Arc::new(Mutex::new(0));
            let out = SharedSender::new(Box::new(AtOnce { unsent, flushes: Arc::clone(&flushes) }));
            let mut frame = Some(Bytes::from_static(b"frame").into());
            let Poll::Ready(Ok(seq)) = out.poll_enqueue(&mut cx, &mut frame) else { panic!("not queued at once") };
            assert!(matches!(out.poll_flushed(&mut cx, seq), Poll::Ready(Ok(()))));
            // With bytes left behind, only the transport's flush may say they left.
            assert_eq!(*flushes.lock().unwrap(), flushes_expected, "{unsent} bytes left unsent");
        }
    }

    #[tokio::test]
    async fn nothing_is_queued_after_the_last_frame() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let out = SharedSender::new(Box::new(Keep(Arc::clone(&sent))));
        out.send(Bytes::from_static(b"answer")).await.unwrap();
        out.send_last(Bytes::from_static(b"goaway")).await.unwrap();

        let mut cx = Context::from_waker(Waker::noop());
        let mut late = Some(Bytes::from_static(b"late item").into());
        match out.poll_enqueue(&mut cx, &mut late) {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("closing"), "{e}"),
            other => panic!("a frame was queued after the last one: {other:?}"),
        }
        assert_eq!(out.try_enqueue_now(Bytes::from_static(b"late answer")), None);
        assert!(out.send(Bytes::from_static(b"late")).await.is_err());
        assert_eq!(*sent.lock().unwrap(), [Bytes::from_static(b"answer"), Bytes::from_static(b"goaway")]);
    }
}
