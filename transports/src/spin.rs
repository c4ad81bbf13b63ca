//! Polling for a peer in another thread or process before sleeping: waking a sleeping thread
//! across cores costs tens of microseconds here, while polling for a few microseconds first
//! catches an answer from a busy peer in well under one. Used by `shm://`, whose peer publishes
//! without a system call, and, through [`PollFirst`], by the sockets and pipes
//! ([`crate::spin_read`]) and `mq://`, where each look is a non-blocking system call.
//!
//! The spin happens inside `poll_*`, in the task that needs the bytes (a handoff through another
//! thread would cost the same tens of microseconds), in slices of a few microseconds: between
//! slices the task wakes itself and returns `Pending`, so the other tasks of its thread (callers
//! about to send the requests whose answers it waits for) run in between. The budget adapts:
//! after a wait longer than the maximum it halves (an idle peer stops costing CPU), after a
//! short one it doubles back towards the maximum. At its floor, one wait in
//! [`PROBE_EVERY`] spins the whole maximum again: a wait that ends in a sleep always looks long,
//! so without the probe a budget that fell below what a round trip takes (after a run of large
//! messages, say) would never see a short wait again and every later wait would sleep.

use std::task::Poll;
use std::time::{Duration, Instant};

/// The longest one poll spins before it yields to the other tasks of its thread (the rest of the
/// budget is spent in later polls). A caller in a busy client may be spinning for the answers
/// that other tasks of the same thread are about to ask for: they must get to run.
const SLICE: Duration = Duration::from_micros(4);

/// At the floor, every this many long waits the next wait spins the whole maximum. A probe that
/// fails costs one maximum spin in this many waits, each of which slept anyway (tens of
/// microseconds).
const PROBE_EVERY: u32 = 16;

/// The budget never falls below `max / FLOOR`. The floor must cover a round trip of small
/// messages to an awake peer (about 3 µs here, with a 50 µs default maximum): below it, both
/// sides' waits include the other's wake-up from a sleep, look long, and keep the budgets down,
/// each side waking the other by bell. (With a floor of `max / 16`, small echoes over shm took
/// 3 µs in some bench runs and 40-55 µs in others; this is our explanation of the slow mode.)
const FLOOR: u32 = 4;

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
    /// Long waits in a row with the budget at its floor.
    at_floor: u32,
    /// Checks between two reads of the clock: many when a check is a load from shared memory,
    /// one when it is a system call (which costs more than reading the clock).
    checks_per_clock: u32,
    /// The last `spin` found what it waited for: the wait it ends was short (see `done`).
    caught: bool,
}

impl Spin {
    pub(crate) fn new(max: Duration) -> Self {
        Spin { max, budget: max, since: None, at_floor: 0, checks_per_clock: 64, caught: false }
    }

    /// How long the current (or next) wait spins before it sleeps.
    fn allowance(&self) -> Duration {
        if self.at_floor == PROBE_EVERY {
            self.max
        } else {
            self.budget
        }
    }

    /// Polls `ready` until it is true, for one slice of the budget at most.
    pub(crate) fn spin(&mut self, mut ready: impl FnMut() -> bool) -> Spun {
        let now = Instant::now();
        self.caught = false;
        let start = *self.since.get_or_insert(now);
        let deadline = start + self.allowance();
        if now >= deadline {
            return Spun::Spent;
        }
        let slice_end = deadline.min(now + SLICE);
        loop {
            for _ in 0..self.checks_per_clock {
                if ready() {
                    self.caught = true;
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
    /// doubles the budget (up to the maximum), a longer one halves it (down to a floor).
    /// Doubling rather than jumping back to the maximum keeps a peer that is often descheduled
    /// (an overloaded machine) from costing a full spin on most waits.
    ///
    /// A wait that a spin ended lasted at most its allowance (within one round of checks), so
    /// it is short without reading the clock: the read (about 24 ns here) would come between
    /// the bytes arriving and their being used, on both sides of every round trip.
    pub(crate) fn done(&mut self) {
        let caught = std::mem::take(&mut self.caught);
        if let Some(since) = self.since.take() {
            // Never below the floor ([`FLOOR`]): a wait that includes a sleep costs more
            // than the maximum, so from a budget of zero no wait would ever look short again.
            let floor = self.max / FLOOR;
            if caught || since.elapsed() <= self.max {
                self.budget = (self.budget * 2).clamp(floor, self.max);
                self.at_floor = 0;
            } else {
                self.budget = (self.budget / 2).max(floor);
                // Counts up to a probe (`allowance`), then starts again after it.
                self.at_floor = if self.budget == floor { self.at_floor % PROBE_EVERY + 1 } else { 0 };
            }
        }
    }
}

/// One side of a connection waiting for what a system call can check (bytes to read, room to
/// write), after its reactor registration said `Pending`: it lets the other tasks of its thread
/// run once, then looks with `look` for up to its [`Spin`] budget before it sleeps until the
/// reactor wakes it. Used by the sockets and pipes ([`crate::spin_read`]) and by `mq://`.
///
/// The order matters for not losing a wake-up: the caller polls its reactor registration first,
/// as if there were no polling, so when that is `Pending` the reactor holds the task's waker and
/// the readiness is cleared. What arrives afterwards raises an edge-triggered event whether or
/// not `look` took it first: at worst the task is polled once more for nothing.
#[derive(Debug)]
pub(crate) struct PollFirst {
    spin: Spin,
    /// The current wait has yielded once already.
    yielded: bool,
    /// Whether a look that found nothing offers the CPU to other threads ([`offers_the_cpu`]),
    /// decided at the first look, in the runtime that polls.
    offer_cpu: Option<bool>,
}

impl PollFirst {
    /// Looks for at most `max` (adaptive) per wait; zero never looks.
    pub(crate) fn new(max: std::time::Duration) -> Self {
        PollFirst { spin: Spin { checks_per_clock: 1, ..Spin::new(max) }, yielded: false, offer_cpu: None }
    }

    /// Called after the reactor registration said `Pending`: `Ready` once `look` (one
    /// non-blocking system call, true if it got what we wait for) succeeded, `Pending` while
    /// the task should come back later or sleep. Each look takes a unit of tokio's budget.
    pub(crate) fn poll_look(&mut self, cx: &mut std::task::Context<'_>, mut look: impl FnMut() -> bool) -> Poll<()> {
        if self.spin.max.is_zero() {
            // Polling is off: sleep at once, as without a `PollFirst` (no yield either).
            return Poll::Pending;
        }
        // The first time in a wait, let the thread's other tasks run before looking: the peer
        // may be one of them (a client and a server in one thread), and the calls that other
        // tasks are about to make may be what we wait for.
        if !std::mem::replace(&mut self.yielded, true) {
            return yield_to_the_runtime(cx);
        }
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let offer_cpu = *self.offer_cpu.get_or_insert_with(offers_the_cpu);
        let spun = self.spin.spin(|| {
            let found = look();
            if !found && offer_cpu {
                // A peer on this same CPU cannot answer while we spin on it.
                std::thread::yield_now();
            }
            found
        });
        match spun {
            Spun::Ready => {
                self.done();
                coop.made_progress();
                Poll::Ready(())
            }
            // A slice is over, the budget is not: look again after the thread's other tasks.
            Spun::Yield => yield_to_the_runtime(cx),
            // Sleep until the reactor wakes us.
            Spun::Spent => Poll::Pending,
        }
    }

    /// The current wait is over (the reactor reported what we waited for, or `look` found it).
    pub(crate) fn done(&mut self) {
        self.spin.done();
        self.yielded = false;
    }
}

/// Whether a [`PollFirst`] look that found nothing should offer the CPU to other threads
/// (`sched_yield`) before the next: only when the runtime that polls has a single thread.
///
/// - One thread (a current-thread runtime, or one worker): the only other threads that can want
///   this CPU are other processes', the peer among them. Pinned to one CPU with its peer, an
///   `add` round trip over unix:// took 9.9 µs with the offer and 56-60 µs without, the peer
///   getting the CPU only when the spin was spent (`rpc-bench --pin-same`, one current-thread
///   runtime a side).
/// - Several workers (`#[tokio::main]`'s default): our process has threads of its own that
///   wake when bytes come or work is queued (the worker parked on the I/O driver, idle workers
///   told to look for work), and they wake the peer's likewise. Unpinned, the kernel had put
///   all four workers of a client and a server on one vCPU (a `sched_switch` trace of the
///   demo), where they woke one another in turn and each offer handed the CPU to the next.
///   Round trip over unix:// with the offer and without: `cargo run --example demo` 31-46 µs
///   against 5.5-7.1; `rpc-bench --multi-thread` unpinned 32-41 against 6.4-6.5. Pinned apart
///   (`--pin`) or together (`--pin-same`), the offer made no difference there.
fn offers_the_cpu() -> bool {
    !has_other_workers()
}

/// Whether the runtime that polls has more than one worker thread (`#[tokio::main]`'s default).
///
/// There, a task that yields (`yield_now`, a self-wake, or tokio's cooperative budget running
/// out) wakes an idle worker to steal it, and the worker that finds the task wakes another one
/// as it stops searching. Each wake-up is a system call, and on a machine that a spinning pair
/// keeps busy the woken thread takes a CPU from one of the two spinners. An `shm://` reader
/// there yields sparingly (see `shm::halves`): in a loop of lone `add` calls (a multi-thread
/// client, 2 vCPUs), its yields (one after every 50 µs of reading, one whenever the budget of
/// 128 reads ran out) had one worker waking another 8,900 and 15,300 times a second (two
/// scheduler traces).
pub(crate) fn has_other_workers() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| runtime.metrics().num_workers() > 1)
}

/// Returns `Pending` after arranging for the task to be polled again once the runtime has
/// polled its I/O driver and run the other tasks that were ready (what `tokio::task::yield_now`
/// does): a task that woke itself at once would be polled again before the reactor could tell
/// any other task of its thread that its bytes arrived.
pub(crate) fn yield_to_the_runtime<T>(cx: &mut std::task::Context<'_>) -> Poll<T> {
    use std::future::Future;
    let yielded = std::pin::pin!(tokio::task::yield_now()).poll(cx);
    debug_assert!(yielded.is_pending(), "a fresh yield_now is pending on its first poll");
    Poll::Pending
}

/// How long a waiter has found what it waits for within its spins, without once returning
/// `Pending`: a task that always finds its next bytes within a spin would never let the other
/// tasks of its thread run. Time is passed in.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// The first wait since the waiter last returned `Pending`.
    since: Option<Instant>,
}

impl Run {
    /// A wait begins at `now`: true if the waiter should yield once first, its run having
    /// lasted `max` (the next wait then starts a new run).
    pub(crate) fn yield_first(&mut self, now: Instant, max: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= max {
            self.since = None;
            return true;
        }
        false
    }

    /// The waiter returned `Pending`: its run is over.
    pub(crate) fn yielded(&mut self) {
        self.since = None;
    }

    /// Whether a run of waits has begun and not ended.
    #[cfg(test)]
    pub(crate) fn running(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_waits_that_never_return_pending_yields_once_it_lasted_the_maximum() {
        let max = Duration::from_micros(50);
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut run = Run::default();
        // Waits at 0, 10, 49 µs end within their spins: no yield. The one at 50 µs yields.
        let waits: Vec<bool> = [0, 10, 49, 50].map(|us| run.yield_first(at(us), max)).into();
        assert_eq!(waits, [false, false, false, true]);
        // The next run starts at the next wait, not at the yield.
        assert!(!run.yield_first(at(1000), max));
        assert!(!run.yield_first(at(1049), max));
        assert!(run.yield_first(at(1050), max));
        // A wait that returned `Pending` (a slice spent, a sleep) ends the run as well: however
        // long it slept, the first wait after it starts a new run.
        assert!(!run.yield_first(at(2000), max));
        run.yielded();
        assert!(!run.yield_first(at(9000), max));
        assert!(!run.yield_first(at(9049), max));
    }

    fn wait(spin: &mut Spin, took: Duration) {
        spin.since = Some(Instant::now() - took);
        spin.done();
    }

    #[test]
    fn at_the_floor_one_wait_in_sixteen_spins_the_whole_maximum() {
        let max = Duration::from_micros(64);
        let (long, short) = (Duration::from_millis(5), Duration::from_micros(3));
        let mut spin = Spin::new(max);
        for _ in 0..2 {
            wait(&mut spin, long);
        }
        assert_eq!(spin.allowance(), max / 4, "at the floor");
        let waits_to_a_probe = |spin: &mut Spin| {
            let mut waits = 0;
            while spin.allowance() != max {
                assert_eq!(spin.allowance(), max / 4, "between probes, the floor");
                wait(spin, long);
                waits += 1;
                assert!(waits <= PROBE_EVERY);
            }
            waits
        };
        // The wait that reached the floor was the first of sixteen at it.
        assert_eq!(waits_to_a_probe(&mut spin), PROBE_EVERY - 1);
        // A probe that fails leaves the budget at the floor and the count starts again: from
        // then on, one wait in sixteen (the probe itself included) spins the maximum.
        wait(&mut spin, long);
        assert_eq!(waits_to_a_probe(&mut spin), PROBE_EVERY - 1);
        wait(&mut spin, long);
        assert_eq!(waits_to_a_probe(&mut spin), PROBE_EVERY - 1);
        // The probe catches a fast peer: the budget climbs back and no probe is pending.
        wait(&mut spin, short);
        assert_eq!((spin.allowance(), spin.at_floor), (max / 2, 0));
        wait(&mut spin, short);
        assert_eq!(spin.allowance(), max);
        // Long waits above the floor do not count towards a probe.
        wait(&mut spin, long);
        assert_eq!((spin.allowance(), spin.at_floor), (max / 2, 0));
    }

    #[test]
    fn the_spin_budget_halves_on_long_waits_and_doubles_on_short_ones() {
        // Long waits halve it down to max / 4 (never zero, or no wait would look short again:
        // one that includes a sleep costs more than the maximum); short ones double it back.
        let max = Duration::from_micros(64);
        let mut spin = Spin::new(max);
        for expected in [32, 16, 16, 16] {
            spin.since = Some(Instant::now() - Duration::from_millis(5));
            spin.done();
            assert_eq!(spin.budget, Duration::from_micros(expected));
        }
        for expected in [32, 64, 64] {
            spin.since = Some(Instant::now());
            spin.done();
            assert_eq!(spin.budget, Duration::from_micros(expected));
        }
        assert_eq!(Spin::new(Duration::ZERO).spin(|| false), Spun::Spent, "a zero budget never spins");
        let mut zero = Spin::new(Duration::ZERO);
        for _ in 0..PROBE_EVERY {
            wait(&mut zero, Duration::from_millis(5));
        }
        assert_eq!((zero.at_floor, zero.allowance()), (PROBE_EVERY, Duration::ZERO), "nor does its probe");
        assert_eq!(zero.spin(|| false), Spun::Spent);
        assert_eq!(Spin::new(max).spin(|| true), Spun::Ready);
        let mut long = Spin::new(Duration::from_secs(1));
        assert_eq!(long.spin(|| false), Spun::Yield, "one poll spins one slice, not the whole budget");
    }

    #[test]
    fn a_wait_a_spin_ended_counts_as_short_whatever_the_clock_would_say() {
        let max = Duration::from_micros(64);
        let mut spin = Spin::new(max);
        for _ in 0..2 {
            wait(&mut spin, Duration::from_millis(5));
        }
        assert_eq!(spin.allowance(), max / 4);
        // A spin finds what it waits for; `since` is then moved back as if the wait had lasted
        // 5 ms. The clock is not read: the budget doubles, as after any short wait.
        assert_eq!(spin.spin(|| true), Spun::Ready);
        spin.since = Some(Instant::now() - Duration::from_millis(5));
        spin.done();
        assert_eq!(spin.allowance(), max / 2);
        // What a spin found counts for that wait only: a wait that a later spin did not end (a
        // sleep did) is judged by the clock again, even if an earlier spin had caught its bytes
        // (and the caller found nothing to take after all).
        assert_eq!(spin.spin(|| true), Spun::Ready);
        spin.since = Some(Instant::now() - Duration::from_millis(5));
        assert_eq!(spin.spin(|| false), Spun::Spent);
        spin.done();
        assert_eq!(spin.allowance(), max / 4);
        // Nor does it outlive `done`: the next wait, ended by a sleep, is long.
        assert_eq!(spin.spin(|| true), Spun::Ready);
        spin.done();
        assert_eq!(spin.allowance(), max / 2);
        wait(&mut spin, Duration::from_millis(5));
        assert_eq!(spin.allowance(), max / 4);
    }

    /// A wait's looks offer the CPU to other threads only in a runtime of one thread, decided
    /// where the wait is polled (`offers_the_cpu` says why).
    #[test]
    fn only_a_wait_polled_in_a_single_threaded_runtime_offers_the_cpu() {
        use tokio::runtime::Builder;
        let runtimes = [
            ("current-thread", Builder::new_current_thread().build().unwrap(), true),
            ("one worker", Builder::new_multi_thread().worker_threads(1).build().unwrap(), true),
            ("two workers", Builder::new_multi_thread().worker_threads(2).build().unwrap(), false),
        ];
        for (name, runtime, offers) in runtimes {
            let decided = runtime.block_on(async {
                let mut wait = PollFirst::new(Duration::from_millis(10));
                let mut looks = 0;
                std::future::poll_fn(|cx| {
                    wait.poll_look(cx, || {
                        looks += 1;
                        looks == 2
                    })
                })
                .await;
                wait.offer_cpu
            });
            assert_eq!(decided, Some(offers), "{name}");
        }
    }

    #[test]
    fn other_workers_are_those_of_the_runtime_that_polls() {
        use tokio::runtime::Builder;
        assert!(!has_other_workers(), "outside any runtime");
        let runtimes = [
            ("current-thread", Builder::new_current_thread().build().unwrap(), false),
            ("one worker", Builder::new_multi_thread().worker_threads(1).build().unwrap(), false),
            ("two workers", Builder::new_multi_thread().worker_threads(2).build().unwrap(), true),
        ];
        for (name, runtime, others) in runtimes {
            let found = runtime.block_on(async { tokio::spawn(async { has_other_workers() }).await.unwrap() });
            assert_eq!(found, others, "{name}");
        }
    }
}
