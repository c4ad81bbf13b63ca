//! The task that flushes, once for all of them, the requests that calls made under load queue
//! without flushing.
//!
//! A call made while others of its connection are pending (`PendingCall::busy`) queues its
//! request and goes straight on to wait for its answer. The first of such calls since the last
//! batch ended wakes this task, which lets the callers that are ready now queue theirs too (it
//! yields once, to the back of its runtime's queue) and then flushes them all in one write. (A
//! batch ends earlier if one of its calls takes the reader's role: that call sends it before it
//! waits for its answer, see `Inner::poll_frame`.) Each call used to do that itself (yield
//! once, then flush): one more poll of every call's future, where now there is one poll of this
//! task per batch. A call's own future cannot be the one trusted with the others' requests: a
//! future polled once and then neither polled nor dropped would hold them back. This task is
//! polled whenever it is woken.
//!
//! The task holds the connection weakly: it ends when the connection's last handle is dropped
//! (which wakes it) or its runtime shuts down (then it sends what it was woken for on its way).
//! A call on another runtime than the task's flushes its batch itself: that runtime may not be
//! running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use super::Inner;

/// The handle the connection keeps to its flushing task.
#[derive(Default)]
pub(super) struct Flusher {
    /// A batch is queued that nobody has flushed yet.
    wanted: AtomicBool,
    waker: AtomicWaker,
    /// The task, once started.
    task: OnceLock<tokio::task::AbortHandle>,
    /// The runtime it runs on.
    runtime: OnceLock<tokio::runtime::Id>,
}

impl Flusher {
    /// A flusher for a connection made on a tokio runtime, `None` outside one (a client
    /// driven by another executor), whose calls then each flush their own.
    pub(super) fn new() -> Option<Arc<Flusher>> {
        tokio::runtime::Handle::try_current().ok().map(|_| Arc::new(Flusher::default()))
    }

    /// Starts the task for the connection `inner`, once it exists (a task started before could
    /// find it missing and end); on the runtime [`new`](Self::new) found.
    pub(super) fn start(self: &Arc<Self>, inner: Weak<Inner>) {
        let _ = self.runtime.set(tokio::runtime::Handle::current().id());
        let task = tokio::spawn(run(inner, Arc::clone(self)));
        let _ = self.task.set(task.abort_handle());
    }

    /// Whether the task runs: not once its runtime shut down, and then calls flush their own
    /// requests.
    pub(super) fn alive(&self) -> bool {
        self.task.get().is_some_and(|task| !task.is_finished())
    }

    /// A request opened a new batch: wakes the task to flush it. False, waking nothing, when
    /// the caller does not run on the task's runtime (a client made on one runtime and used on
    /// another, which may not be running): the caller must flush the batch itself. Asked once
    /// a batch, not once a call.
    pub(super) fn want(&self) -> bool {
        let here = tokio::runtime::Handle::try_current().ok().map(|runtime| runtime.id());
        if here.is_none() || here.as_ref() != self.runtime.get() {
            return false;
        }
        self.wanted.store(true, Ordering::SeqCst);
        self.waker.wake();
        true
    }

    /// The connection is being dropped: the task, woken, finds it gone and ends.
    pub(super) fn close(&self) {
        self.waker.wake();
    }
}

/// Where the task is in a batch.
enum Step {
    /// Waiting to be wanted.
    Idle,
    /// Woken by a call and yielded once: the other ready callers queue meanwhile.
    Yielded,
    /// Flushing up to this sequence number.
    Flushing(u64),
}

async fn run(inner: Weak<Inner>, flusher: Arc<Flusher>) {
    // Dropped unfinished only when the runtime shuts down: the batch it was woken for, if any,
    // is sent as far as the transport takes it now (its callers' runtime may be another one).
    let _sends_the_last_batch = SendOnDrop(Weak::clone(&inner));
    let mut step = Step::Idle;
    std::future::poll_fn(|cx| {
        // Registered on every poll, whatever else the task waits for (the transport's room), so
        // that `close` always reaches it.
        flusher.waker.register(cx.waker());
        loop {
            // Gone once its last handle was dropped (`Inner`'s drop wakes us for this).
            let Some(inner) = inner.upgrade() else { return Poll::Ready(()) };
            match step {
                Step::Idle => {
                    if !flusher.wanted.swap(false, Ordering::SeqCst) {
                        return Poll::Pending;
                    }
                    // Woken by itself, a task goes to the back of its runtime's queue, behind
                    // the callers that are ready now (another task's wake-up could run it next).
                    step = Step::Yielded;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Yielded => step = Step::Flushing(inner.out.end_batch()),
                Step::Flushing(target) => match inner.out.poll_flushed(cx, target) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        step = Step::Idle;
                        // The calls waiting for answers must hear that their requests are lost.
                        if let Err(e) = result {
                            inner.fail(e);
                        }
                    }
                },
            }
        }
    })
    .await
}

/// Flushes what is queued, once and without waiting, when dropped (see [`run`]).
struct SendOnDrop(Weak<Inner>);

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.out.nudge();
        }
    }
}
