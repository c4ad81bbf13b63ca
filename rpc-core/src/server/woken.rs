//! A wait that is polled again only once it has woken its task: for the read loop's waits that
//! sit beside every read and rarely fire (the server's shutdown, the stall timer).
//!
//! `select!` polls each of its branches whenever the task runs. For a connection that waits for
//! its next request after every call, that re-polled the shutdown's `WaitForCancellationFuture`
//! (a mutex and the waiter list of a `Notify`) and the timer's `Sleep` (the time driver's entry)
//! once a call: 276 of the 7,518 instructions of an `add` over `mem://` (callgrind). Here the
//! inner future gets a waker of our own, which notes that it fired before it wakes the task;
//! until then, and while the task's waker stays the same, a poll returns `Pending` without
//! touching the inner one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `inner`, polled only after it woke us, when the task's waker changed, or after
/// [`Woken::get_mut`].
pub(crate) struct Woken<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// The waker handed to `inner`: it marks `signal` and wakes the task.
    waker: Waker,
    /// The task's waker at the last poll of `inner`; `None` until the first.
    task: Option<Waker>,
}

/// Set by the inner future's waker; read by the next poll.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken, so the poll that follows sees it.
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Woken<F> {
    pub(crate) fn new(inner: F) -> Self {
        let signal = Arc::new(Signal::default());
        let waker = Waker::from(Arc::clone(&signal));
        Woken { inner: Box::pin(inner), signal, waker, task: None }
    }

    /// The inner future, to change it (a timer's new deadline); it is polled at the next poll.
    pub(crate) fn get_mut(&mut self) -> Pin<&mut F> {
        self.task = None;
        self.inner.as_mut()
    }

    /// Polls the inner future if it may have changed since it was last polled.
    pub(crate) fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let same_task = self.task.as_ref().is_some_and(|task| task.will_wake(cx.waker()));
        // The plain load first: a swap is a write, and this runs on every poll.
        let fired = self.signal.fired.load(Ordering::Acquire) && self.signal.fired.swap(false, Ordering::Acquire);
        if same_task && !fired {
            return Poll::Pending;
        }
        // Registered again after a wake too (waking took the waker out), and before the inner
        // future is polled: a wake during or after that poll then reaches the task.
        self.signal.task.register(cx.waker());
        if !same_task {
            self.task = Some(cx.waker().clone());
        }
        self.inner.as_mut().poll(&mut Context::from_waker(&self.waker))
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().poll_woken(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::wake_count::WakeCount;

    /// Counts its polls; ready once `open` is set, waking the waker it was last polled with.
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Slot,
    }

    /// Where a `Gate` keeps the waker it was last polled with.
    type Slot = Arc<std::sync::Mutex<Option<Waker>>>;

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A `Woken` gate, with its poll count, its switch and the waker it was last polled with.
    fn gate() -> (Woken<Gate>, Arc<AtomicUsize>, Arc<AtomicBool>, Slot) {
        let (polls, open, slot): (Arc<AtomicUsize>, Arc<AtomicBool>, Slot) = Default::default();
        let gate = Gate { polls: Arc::clone(&polls), open: Arc::clone(&open), waker: Arc::clone(&slot) };
        (Woken::new(gate), polls, open, slot)
    }

    #[test]
    fn the_inner_future_is_polled_again_only_after_it_fired() {
        let (mut woken, polls, open, slot) = gate();
        let (task, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            assert!(woken.poll_woken(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "re-polled while nothing happened");
        // It fires: the task is woken and the next poll reaches the inner future.
        open.store(true, Ordering::SeqCst);
        slot.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.get(), 1, "the task was not woken");
        assert!(woken.poll_woken(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_that_finds_the_inner_future_pending_leaves_the_next_one_to_wake_the_task() {
        let (mut woken, polls, open, slot) = gate();
        let (task, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        assert!(woken.poll_woken(&mut cx).is_pending());
        // A wake with nothing to report: the inner future is polled and is still pending.
        slot.lock().unwrap().take().unwrap().wake();
        assert!(woken.poll_woken(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // The real one must still reach the task.
        open.store(true, Ordering::SeqCst);
        slot.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.get(), 2, "the second wake was lost");
        assert!(woken.poll_woken(&mut cx).is_ready());
    }

    #[test]
    fn a_new_task_waker_or_a_change_reaches_the_inner_future() {
        let (mut woken, polls, _, slot) = gate();
        let ((one, w1), (two, w2)) = (WakeCount::new(), WakeCount::new());
        assert!(woken.poll_woken(&mut Context::from_waker(&w1)).is_pending());
        assert!(woken.poll_woken(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "another task's waker must be registered");
        assert!(!woken.get_mut().open.load(Ordering::SeqCst), "changed: polled again next time");
        assert!(woken.poll_woken(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 3, "not polled after a change");
        // The wake goes to the task that polled last.
        slot.lock().unwrap().take().unwrap().wake();
        assert_eq!((one.get(), two.get()), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_timer_fires_at_its_new_deadline() {
        let start = tokio::time::Instant::now();
        let mut timer = Woken::new(tokio::time::sleep_until(start + std::time::Duration::from_secs(10)));
        assert!(std::future::poll_fn(|cx| Poll::Ready(timer.poll_woken(cx).is_pending())).await);
        timer.get_mut().reset(start + std::time::Duration::from_secs(1));
        (&mut timer).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(1));
    }
}
