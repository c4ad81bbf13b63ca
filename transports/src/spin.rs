//! Polling for a peer in another thread or process before sleeping: waking a sleeping thread
//! across cores costs tens of microseconds here, while polling for a few microseconds first
//! catches an answer from a busy peer in well under one. Used by `shm://`, whose peer publishes
//! without a system call.
//!
//! The spin happens inside `poll_*`, in the task that needs the bytes (a handoff through another
//! thread would cost the same tens of microseconds), in slices of a few microseconds: between
//! slices the task wakes itself and returns `Pending`, so the other tasks of its thread (callers
//! about to send the requests whose answers it waits for) run in between. The budget adapts:
//! after a wait longer than the maximum it halves (an idle peer stops costing CPU), after a
//! short one it doubles back towards the maximum.

use std::time::{Duration, Instant};

/// The longest one poll spins before it yields to the other tasks of its thread (the rest of the
/// budget is spent in later polls). A caller in a busy client may be spinning for the answers
/// that other tasks of the same thread are about to ask for: they must get to run.
const SLICE: Duration = Duration::from_micros(4);

/// What a slice of spinning ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Spun {
    /// What we wait for is there.
    Ready,
    /// The slice is over; the budget is not: poll again soon.
    Yield,
    /// The budget is spent: sleep.
    Spent,
}

/// How long to poll before sleeping, adapted to what waiting recently cost.
#[derive(Debug)]
pub(crate) struct Spin {
    max: Duration,
    budget: Duration,
    /// When the current wait began (the first time what we wait for was not there).
    since: Option<Instant>,
}

impl Spin {
    pub(crate) fn new(max: Duration) -> Self {
        Spin { max, budget: max, since: None }
    }

    /// Polls `ready` until it is true, for one slice of the budget at most.
    pub(crate) fn spin(&mut self, mut ready: impl FnMut() -> bool) -> Spun {
        let now = Instant::now();
        let start = *self.since.get_or_insert(now);
        let deadline = start + self.budget;
        if now >= deadline {
            return Spun::Spent;
        }
        let slice_end = deadline.min(now + SLICE);
        loop {
            for _ in 0..64 {
                if ready() {
                    return Spun::Ready;
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            if now >= deadline {
                return Spun::Spent;
            }
            if now >= slice_end {
                return Spun::Yield;
            }
        }
    }

    /// The wait that began at the first `spin` is over: a wait a full spin would have covered
    /// doubles the budget (up to the maximum), a longer one halves it (down to a floor). Doubling rather than
    /// jumping back to the maximum keeps a peer that is often descheduled (an overloaded
    /// machine) from costing a full spin on most waits.
    pub(crate) fn done(&mut self) {
        if let Some(since) = self.since.take() {
            // Never below a sixteenth of the maximum: a wait that includes a sleep costs more
            // than the maximum, so from a budget of zero no wait would ever look short again.
            let floor = self.max / 16;
            self.budget = if since.elapsed() <= self.max {
                (self.budget * 2).clamp(floor, self.max)
            } else {
                (self.budget / 2).max(floor)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spin_budget_halves_on_long_waits_and_doubles_on_short_ones() {
        // Long waits halve it down to max / 16 (never zero, or no wait would look short again:
        // one that includes a sleep costs more than the maximum); short ones double it back.
        let max = Duration::from_micros(64);
        let mut spin = Spin::new(max);
        for expected in [32, 16, 8, 4, 4, 4] {
            spin.since = Some(Instant::now() - Duration::from_millis(5));
            spin.done();
            assert_eq!(spin.budget, Duration::from_micros(expected));
        }
        for expected in [8, 16, 32, 64, 64] {
            spin.since = Some(Instant::now());
            spin.done();
            assert_eq!(spin.budget, Duration::from_micros(expected));
        }
        assert_eq!(Spin::new(Duration::ZERO).spin(|| false), Spun::Spent, "a zero budget never spins");
        assert_eq!(Spin::new(max).spin(|| true), Spun::Ready);
        let mut long = Spin::new(Duration::from_secs(1));
        assert_eq!(long.spin(|| false), Spun::Yield, "one poll spins one slice, not the whole budget");
    }
}
