//! A connection's in-flight limit: a count of free call slots, taken by the connection's read
//! loop (its only taker) and given back by each call once it is answered, from whichever thread
//! the call ran on.
//!
//! tokio's `Semaphore` would do, but it serves any number of waiters, so every release takes
//! its mutex: ~100 instructions a call (callgrind), for a limit that is rarely reached. With
//! one taker, an atomic count and one waker are enough: a release is one atomic add, and it
//! wakes the taker only when the count comes back from zero (the read loop may be waiting for
//! a slot) or reaches the maximum (the shutdown may be waiting for the last call).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// The free call slots of one connection.
#[derive(Debug)]
pub(crate) struct Permits {
    free: AtomicUsize,
    max: usize,
    /// The one task that waits: the read loop for a slot, later the shutdown for all of them.
    waiter: AtomicWaker,
}

/// One call slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Permits>);

impl Permits {
    /// `max` slots, all free.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Permits { free: AtomicUsize::new(max), max, waiter: AtomicWaker::new() })
    }

    /// A slot if one is free now.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Permit> {
        // Acquire: pairs with the release of the call that gave the slot back.
        self.free
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |free| free.checked_sub(1))
            .ok()
            .map(|_| Permit(Arc::clone(self)))
    }

    /// A slot, once one is free. Only one task may wait at a time (the waker of the last
    /// pending poll is the one woken).
    pub(crate) fn poll_take(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        self.poll_until(cx, || self.try_take())
    }

    /// A slot, once one is free.
    pub(crate) async fn take(self: &Arc<Self>) -> Permit {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }

    /// Ready once every slot is free (every call was answered or dropped).
    pub(crate) fn poll_all_free(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_until(cx, || (self.free.load(Ordering::Acquire) == self.max).then_some(()))
    }

    /// Ready with what `check` finds, registering the waiter in between two looks: a slot given
    /// back before the registration woke nobody, so the second look sees it.
    fn poll_until<T>(&self, cx: &mut Context<'_>, check: impl Fn() -> Option<T>) -> Poll<T> {
        if let Some(found) = check() {
            return Poll::Ready(found);
        }
        self.waiter.register(cx.waker());
        check().map_or(Poll::Pending, Poll::Ready)
    }

    /// Calls holding a slot now.
    pub(crate) fn taken(&self) -> usize {
        self.max - self.free.load(Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let permits = &self.0;
        let before = permits.free.fetch_add(1, Ordering::Release);
        if before == 0 || before + 1 == permits.max {
            permits.waiter.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake_count::WakeCount;

    #[test]
    fn slots_run_out_and_come_back() {
        let permits = Permits::new(2);
        let a = permits.try_take().unwrap();
        let b = permits.try_take().unwrap();
        assert!(permits.try_take().is_none());
        assert_eq!(permits.taken(), 2);
        drop(a);
        assert_eq!(permits.taken(), 1);
        let c = permits.try_take().unwrap();
        drop((b, c));
        assert_eq!(permits.taken(), 0);
    }

    #[test]
    fn a_waiting_taker_is_woken_by_the_first_slot_given_back_and_gets_it() {
        let permits = Permits::new(1);
        let held = permits.try_take().unwrap();
        let (count, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        assert!(permits.poll_take(&mut cx).is_pending());
        assert_eq!(count.get(), 0);
        drop(held);
        assert_eq!(count.get(), 1, "not woken when the slot came back");
        assert!(permits.poll_take(&mut cx).is_ready());
    }

    #[test]
    fn the_shutdown_is_woken_by_the_last_call_only() {
        let permits = Permits::new(3);
        let held: Vec<_> = (0..3).map(|_| permits.try_take().unwrap()).collect();
        let (count, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        assert!(permits.poll_all_free(&mut cx).is_pending());
        let mut held = held.into_iter();
        drop(held.next());
        // Back from zero: a wake (the taker could be waiting for a slot); the shutdown looks,
        // finds calls still running and waits again.
        assert_eq!(count.get(), 1);
        assert!(permits.poll_all_free(&mut cx).is_pending());
        drop(held.next());
        assert_eq!(count.get(), 1, "woken while a call still runs");
        drop(held.next());
        assert_eq!(count.get(), 2, "not woken by the last call");
        assert!(permits.poll_all_free(&mut cx).is_ready());
    }

    #[test]
    fn slots_given_back_from_many_threads_all_arrive() {
        let permits = Permits::new(64);
        let held: Vec<_> = (0..64).map(|_| permits.try_take().unwrap()).collect();
        let mut chunks: Vec<Vec<Permit>> = (0..4).map(|_| Vec::new()).collect();
        for (i, permit) in held.into_iter().enumerate() {
            chunks[i % 4].push(permit);
        }
        std::thread::scope(|s| {
            for chunk in chunks {
                s.spawn(move || drop(chunk));
            }
        });
        assert_eq!(permits.taken(), 0);
    }
}
