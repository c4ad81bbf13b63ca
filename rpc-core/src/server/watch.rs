//! The stall policy of one server connection, as a state machine with no clock of its own.
//!
//! A connection is closed when its client stalls: it holds part of a frame and sends no more of
//! it ([`ServerOptions::frame_timeout`]), it sends nothing at all while none of its calls runs
//! ([`ServerOptions::idle_timeout`]), or it leaves its answers unread
//! ([`ServerOptions::send_timeout`]). [`Watch`] decides when that has happened. In the manner
//! of sans-I/O protocol state machines (quinn-proto's connections, for one), it never reads the
//! clock: every method takes the current time as an argument, and [`Watch::next_check`] says
//! when it next needs to look. The connection's read loop owns the one timer, feeds the watch
//! what it sees when the timer fires (calls running, the partial frame's length, the answers
//! waiting to be written and the bytes written so far), and closes the connection when the
//! watch returns a [`Stall`]. Tests drive it with made-up instants instead of waiting.

use std::time::Duration;

use tokio::time::Instant;

use super::ServerOptions;
use crate::wire::CloseCode;

/// Longer timeouts are taken as this (a century: never, in practice). `Duration::MAX` is a
/// natural way to say "never"; added to an `Instant` it would panic.
const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The watch never asks to be checked again sooner than this after a check, whatever the
/// options say, so the timer cannot fire in a tight loop.
pub(super) const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(1);

/// Why a connection's client is taken to have stalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stall {
    /// Answers were waiting and not one byte of them left for `timeout`: the client does not
    /// read, so nothing more (not even a goaway, unless there happens to be room) can reach it.
    Send {
        /// Bytes of answers waiting to be written.
        unsent: usize,
        /// The send timeout.
        timeout: Duration,
    },
    /// The client sent part of a frame, then nothing more of it for `timeout`.
    Frame {
        /// Bytes of the frame received.
        partial_len: usize,
        /// The frame timeout.
        timeout: Duration,
    },
    /// Nothing came in and no call ran for `timeout`.
    Idle {
        /// The idle timeout.
        timeout: Duration,
    },
}

impl Stall {
    /// The close code the client is told.
    pub(super) fn code(&self) -> CloseCode {
        match self {
            Stall::Send { .. } => CloseCode::SendTimeout,
            Stall::Frame { .. } => CloseCode::FrameTimeout,
            Stall::Idle { .. } => CloseCode::IdleTimeout,
        }
    }

    /// The reason the client is told, beside the code.
    pub(super) fn reason(&self) -> String {
        match self {
            Stall::Send { unsent, timeout } => format!(
                "the client read none of {unsent} bytes of answers for {} ms (the send timeout)",
                timeout.as_millis()
            ),
            Stall::Frame { partial_len, timeout } => format!(
                "{partial_len} bytes of a frame, then nothing for {} ms (the frame timeout)",
                timeout.as_millis()
            ),
            Stall::Idle { timeout } => format!("idle for {} ms (the idle timeout)", timeout.as_millis()),
        }
    }
}

/// Watches a connection for stalls: a partial frame that stops growing or (with an idle timeout)
/// no traffic at all while none of its calls runs, and answers that stop leaving because the
/// client does not read them. See the module docs.
#[derive(Debug)]
pub(super) struct Watch {
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    send_timeout: Duration,
    /// Since when nothing has come in: no frame, no call running, no new byte of a partial frame.
    quiet_since: Instant,
    /// Since when the partial frame has not grown (calls running do not count here: a client
    /// must not hold half a frame, and its buffer, for as long as it keeps one slow call going).
    frame_since: Instant,
    /// The partial frame's length at the last check.
    partial_len: usize,
    /// Frames received so far, and at the last check.
    frames: u64,
    frames_at_check: u64,
    /// Since when answers have been waiting without a byte leaving (or nothing was waiting).
    send_quiet_since: Instant,
    /// The transport's written-bytes counter at the last check.
    written: u64,
    next_check: Instant,
    /// A call was running at the last check: it may have ended only just now, so the quiet
    /// time is counted from this check, not the one before.
    was_running: bool,
}

impl Watch {
    /// The watch of a connection that starts at `now`.
    pub(super) fn new(options: &ServerOptions, now: Instant) -> Self {
        let cap = |d: Duration| d.min(MAX_TIMEOUT);
        let mut watch = Watch {
            frame_timeout: cap(options.frame_timeout),
            idle_timeout: options.idle_timeout.map(cap),
            send_timeout: cap(options.send_timeout),
            quiet_since: now,
            frame_since: now,
            partial_len: 0,
            frames: 0,
            frames_at_check: 0,
            send_quiet_since: now,
            written: 0,
            next_check: now,
            was_running: false,
        };
        watch.next_check = watch.plan(now, 0);
        watch
    }

    /// When [`Watch::check`] should next be called.
    pub(super) fn next_check(&self) -> Instant {
        self.next_check
    }

    /// A whole frame came in. Counted, not timed: the next check sees that input arrived.
    pub(super) fn frame_received(&mut self) {
        self.frames += 1;
    }

    /// To be called at `now`, once [`Watch::next_check`] has passed, with what the connection
    /// looks like: `running` calls, `partial_len` bytes of a frame not yet whole, and `unsent`
    /// bytes of answers waiting to be written after `written` bytes in all. Returns why to close
    /// the connection, or `None` (and plans the next check). Quiet times start at the check
    /// that first saw the quiet, so a stall is noticed one to two timeouts after it began.
    pub(super) fn check(
        &mut self,
        now: Instant,
        running: usize,
        partial_len: usize,
        (unsent, written): (usize, u64),
    ) -> Option<Stall> {
        if unsent == 0 || written != self.written {
            self.send_quiet_since = now;
            self.written = written;
        }
        if unsent > 0 && now.saturating_duration_since(self.send_quiet_since) >= self.send_timeout {
            return Some(Stall::Send { unsent, timeout: self.send_timeout });
        }
        let ran = std::mem::replace(&mut self.was_running, running > 0);
        let input = partial_len != self.partial_len || self.frames != self.frames_at_check;
        if input {
            self.frame_since = now;
        }
        if running > 0 || ran || input {
            self.quiet_since = now;
        }
        self.partial_len = partial_len;
        self.frames_at_check = self.frames;
        let quiet = now.saturating_duration_since(self.quiet_since);
        if partial_len > 0 && now.saturating_duration_since(self.frame_since) >= self.frame_timeout {
            return Some(Stall::Frame { partial_len, timeout: self.frame_timeout });
        }
        if let Some(idle) = self.idle_timeout.filter(|idle| partial_len == 0 && quiet >= *idle) {
            return Some(Stall::Idle { timeout: idle });
        }
        self.next_check = self.plan(now, unsent);
        None
    }

    /// When to look again: when the partial frame, the idle time or the unsent answers would run
    /// out, and at least once per frame and send timeout, since either stall may begin any time.
    fn plan(&self, now: Instant, unsent: usize) -> Instant {
        let mut next =
            if self.partial_len > 0 { self.frame_since + self.frame_timeout } else { now + self.frame_timeout };
        if let Some(idle) = self.idle_timeout.filter(|_| self.partial_len == 0) {
            next = next.min(self.quiet_since + idle);
        }
        next = next.min(if unsent > 0 { self.send_quiet_since + self.send_timeout } else { now + self.send_timeout });
        next.max(now + MIN_CHECK_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    /// What the connection looks like at one check, and what the watch must say.
    #[derive(Clone, Copy, Debug)]
    struct Tick {
        /// Time since the watch started.
        at: Duration,
        running: usize,
        partial_len: usize,
        unsent: usize,
        written: u64,
        /// Whole frames received since the previous tick.
        frames: u64,
        expect: Option<CloseCode>,
    }

    /// A check `at` after the start of a connection with nothing going on.
    fn at(at: Duration) -> Tick {
        Tick { at, running: 0, partial_len: 0, unsent: 0, written: 0, frames: 0, expect: None }
    }

    impl Tick {
        fn running(self, running: usize) -> Self {
            Tick { running, ..self }
        }
        fn partial(self, partial_len: usize) -> Self {
            Tick { partial_len, ..self }
        }
        fn unsent(self, unsent: usize, written: u64) -> Self {
            Tick { unsent, written, ..self }
        }
        fn frames(self, frames: u64) -> Self {
            Tick { frames, ..self }
        }
        fn closes(self, code: CloseCode) -> Self {
            Tick { expect: Some(code), ..self }
        }
    }

    fn options(frame: Duration, idle: Option<Duration>, send: Duration) -> ServerOptions {
        ServerOptions::new().frame_timeout(frame).idle_timeout(idle).send_timeout(send)
    }

    /// Drives a watch through `ticks`; each row must give its expected outcome, and the table
    /// ends at the first close.
    fn run(name: &str, options: &ServerOptions, ticks: &[Tick]) {
        let start = Instant::now();
        let mut watch = Watch::new(options, start);
        for (row, tick) in ticks.iter().enumerate() {
            for _ in 0..tick.frames {
                watch.frame_received();
            }
            let now = start + tick.at;
            let got = watch.check(now, tick.running, tick.partial_len, (tick.unsent, tick.written));
            assert_eq!(got.as_ref().map(Stall::code), tick.expect, "{name}, row {row}: {tick:?} gave {got:?}");
            if got.is_some() {
                assert_eq!(row, ticks.len() - 1, "{name}: rows after a close");
                return;
            }
            assert!(watch.next_check() >= now + MIN_CHECK_INTERVAL, "{name}, row {row}: next check too soon");
        }
    }

    #[test]
    fn a_partial_frame_that_stops_growing_closes_after_the_frame_timeout() {
        let o = options(10 * SECOND, None, 30 * SECOND);
        // The quiet counts from the first check that saw the frame at its final length.
        run(
            "stuck at once",
            &o,
            &[
                at(SECOND).partial(5),
                at(11 * SECOND - MS).partial(5),
                at(11 * SECOND).partial(5).closes(CloseCode::FrameTimeout),
            ],
        );
        run(
            "stuck after growing",
            &o,
            &[
                at(SECOND).partial(5),
                at(6 * SECOND).partial(900),
                at(16 * SECOND - MS).partial(900),
                at(16 * SECOND).partial(900).closes(CloseCode::FrameTimeout),
            ],
        );
        // Running calls keep the connection from being idle, not a half-sent frame.
        run(
            "stuck while calls run",
            &o,
            &[at(SECOND).partial(5).running(3), at(11 * SECOND).partial(5).running(3).closes(CloseCode::FrameTimeout)],
        );
        // A whole frame that came in meanwhile is input too, even if a new partial frame of
        // the same length follows it.
        run(
            "same length, new frame",
            &o,
            &[
                at(SECOND).partial(5),
                at(10 * SECOND).partial(5).frames(1),
                at(20 * SECOND - MS).partial(5),
                at(20 * SECOND).partial(5).closes(CloseCode::FrameTimeout),
            ],
        );
    }

    #[test]
    fn a_growing_partial_frame_is_not_a_stall() {
        let o = options(10 * SECOND, Some(10 * SECOND), 30 * SECOND);
        let ticks: Vec<Tick> = (1..=100).map(|s| at(s * 9 * SECOND / 10).partial(s as usize)).collect();
        run("growing", &o, &ticks);
        // It stops growing: closed one frame timeout after the check that last saw it grow.
        let mut ticks = ticks;
        ticks.push(at(100 * 9 * SECOND / 10 + 10 * SECOND).partial(100).closes(CloseCode::FrameTimeout));
        run("growing, then stuck", &o, &ticks);
    }

    #[test]
    fn idle_only_without_calls_or_a_partial_frame() {
        let o = options(60 * SECOND, Some(5 * SECOND), 60 * SECOND);
        run("quiet from the start", &o, &[at(5 * SECOND - MS), at(5 * SECOND).closes(CloseCode::IdleTimeout)]);
        run(
            "frames keep it busy",
            &o,
            &[at(4 * SECOND).frames(3), at(9 * SECOND - MS), at(9 * SECOND).closes(CloseCode::IdleTimeout)],
        );
        let running: Vec<Tick> = (1..=50).map(|s| at(s * SECOND).running(1)).collect();
        run("a long call", &o, &running);
        let partial: Vec<Tick> = (1..=50).map(|s| at(s * SECOND).partial(7)).collect();
        run("a partial frame (under the frame timeout)", &o, &partial);
    }

    #[test]
    fn a_call_that_just_ended_restarts_the_quiet_time() {
        let o = options(60 * SECOND, Some(5 * SECOND), 60 * SECOND);
        run(
            "ended between checks",
            &o,
            &[
                at(4 * SECOND).running(1),
                // No call runs now, but one did at the last check: it may have ended just now.
                at(6 * SECOND),
                at(11 * SECOND - MS),
                at(11 * SECOND).closes(CloseCode::IdleTimeout),
            ],
        );
    }

    #[test]
    fn unread_answers_close_after_the_send_timeout_and_progress_resets_it() {
        let o = options(60 * SECOND, None, 3 * SECOND);
        run(
            "no progress",
            &o,
            &[
                at(SECOND),
                at(2 * SECOND).unsent(100, 0),
                at(4 * SECOND - MS).unsent(100, 0),
                at(4 * SECOND).unsent(100, 0).closes(CloseCode::SendTimeout),
            ],
        );
        run(
            "progress",
            &o,
            &[
                at(SECOND),
                at(2 * SECOND).unsent(100, 0),
                at(3 * SECOND).unsent(100, 50),
                at(6 * SECOND - MS).unsent(100, 50),
                at(6 * SECOND).unsent(100, 50).closes(CloseCode::SendTimeout),
            ],
        );
        run(
            "drained",
            &o,
            &[
                at(SECOND).unsent(100, 0),
                at(3 * SECOND),
                at(6 * SECOND - MS).unsent(100, 0),
                at(6 * SECOND).unsent(100, 0).closes(CloseCode::SendTimeout),
            ],
        );
        // The send timeout wins over the others: nothing more can reach the client.
        let o = options(SECOND, Some(SECOND), SECOND);
        run("send first", &o, &[at(2 * SECOND).unsent(1, 0).partial(3).closes(CloseCode::SendTimeout)]);
    }

    #[test]
    fn duration_max_means_never() {
        let o = options(Duration::MAX, Some(Duration::MAX), Duration::MAX);
        let year = 365 * 24 * 3600 * SECOND;
        run("a stuck frame", &o, &[at(SECOND).partial(5), at(50 * year).partial(5)]);
        run("idle", &o, &[at(50 * year)]);
        run("unread answers", &o, &[at(SECOND).unsent(9, 0), at(50 * year).unsent(9, 0)]);
        let watch = Watch::new(&o, Instant::now());
        assert!(watch.next_check() > Instant::now() + 90 * year);
    }

    #[test]
    fn the_next_check_is_never_sooner_than_the_minimum_interval() {
        let zero = options(Duration::ZERO, None, Duration::ZERO);
        let start = Instant::now();
        let watch = Watch::new(&zero, start);
        assert_eq!(watch.next_check(), start + MIN_CHECK_INTERVAL);
        // Nothing to close for (no partial frame, no unsent answers, calls running keep a tiny
        // idle timeout from running out), yet every check plans the next one a while off.
        let running: Vec<Tick> = (1..=20).map(|i| at(i * MS).running(1)).collect();
        run("zero timeouts", &zero, &running);
        let tiny = options(Duration::from_micros(1), Some(Duration::from_micros(1)), Duration::from_micros(1));
        run("tiny timeouts", &tiny, &running);
    }

    /// Driven the way the read loop drives it, at the instants it asks for: a stall is noticed
    /// between one and two timeouts after it began, whatever its phase against the checks.
    #[test]
    fn checked_when_asked_a_stall_is_noticed_within_two_timeouts() {
        let timeout = 10 * SECOND;
        for stall_begins in [Duration::ZERO, 3 * SECOND, 9 * SECOND + 999 * MS, 10 * SECOND, 17 * SECOND] {
            for kind in [CloseCode::FrameTimeout, CloseCode::IdleTimeout, CloseCode::SendTimeout] {
                let o = options(timeout, Some(timeout), timeout);
                let start = Instant::now();
                let mut watch = Watch::new(&o, start);
                let mut previous = Duration::ZERO;
                let (noticed, stall) = loop {
                    let t = watch.next_check() - start;
                    // Until the stall begins, the client is active in the way that then stops:
                    // a frame grows byte by byte, calls come and go, or it reads the answers of
                    // its running calls as they are written. (Calls run in the first and last
                    // case, so that only the stall under test can close the connection.)
                    let active_until = t.min(stall_begins).as_millis();
                    let (running, partial_len, sent) = match kind {
                        CloseCode::FrameTimeout => (1, 1 + active_until as usize, (0, 0)),
                        CloseCode::IdleTimeout => {
                            if previous < stall_begins {
                                watch.frame_received();
                            }
                            (usize::from(t < stall_begins), 0, (0, 0))
                        }
                        _ => (1, 0, (64, active_until as u64)),
                    };
                    if let Some(stall) = watch.check(start + t, running, partial_len, sent) {
                        break (t, stall);
                    }
                    assert!(t < stall_begins + 3 * timeout, "{kind:?} from {stall_begins:?}: never noticed");
                    previous = t;
                };
                assert_eq!(stall.code(), kind);
                assert!(
                    noticed >= stall_begins + timeout && noticed <= stall_begins + 2 * timeout,
                    "{kind:?} stalled from {stall_begins:?}, noticed at {noticed:?}"
                );
            }
        }
    }

    #[test]
    fn reasons_name_the_timeout() {
        let o = options(1500 * MS, Some(2 * SECOND), 2500 * MS);
        let start = Instant::now();
        let mut watch = Watch::new(&o, start);
        let stall = watch.check(start + 3 * SECOND, 0, 0, (10, 0)).unwrap();
        assert_eq!(stall.reason(), "the client read none of 10 bytes of answers for 2500 ms (the send timeout)");
        let mut watch = Watch::new(&o, start);
        watch.check(start + MS, 0, 4, (0, 0));
        let stall = watch.check(start + 2 * SECOND, 0, 4, (0, 0)).unwrap();
        assert_eq!(stall.reason(), "4 bytes of a frame, then nothing for 1500 ms (the frame timeout)");
        let mut watch = Watch::new(&o, start);
        let stall = watch.check(start + 2 * SECOND, 0, 0, (0, 0)).unwrap();
        assert_eq!(stall.reason(), "idle for 2000 ms (the idle timeout)");
    }
}
