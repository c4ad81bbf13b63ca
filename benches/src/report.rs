//! Collecting the figures of every repetition, and presenting them: tables on stdout, JSON, an
//! SVG chart of latency per transport, and an SVG chart of the payload sweep (echo latency
//! against payload size, both on log scales, one line per transport and side).
//!
//! Every cell is the median over the repetitions with the min–max spread; ratios are taken
//! between those medians.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::measure::{SweepPoint, MEMCPY_SIZE, SWEEP_SIZES};

/// One figure of the output tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `add` / 16-byte ping-pong round trip, median.
    LatencyMedian,
    /// The same, p99.
    LatencyP99,
    /// Calls/s, 1 in flight on one connection.
    InFlight1,
    /// Calls/s, 64 in flight on one connection.
    InFlight64,
    /// Calls/s, 1000 in flight on one connection.
    InFlight1000,
    /// Calls/s, 4 connections × 64 in flight.
    MultiConn,
    /// 1 MiB echo, MB/s.
    Bulk,
    /// A 1 MiB result made afresh for each call in a heap buffer, MB/s (ours only).
    Made,
    /// The same filled in place in a loan of the connection (`CallContext::loan`), MB/s.
    MadeLent,
    /// A 1 MiB result made once in a heap buffer and sent again by every call, MB/s.
    Kept,
    /// The same made once in a loan, MB/s.
    KeptLent,
    /// One server stream of 16-byte items, M items/s (no raw figure).
    StreamSmall,
    /// One server stream of 64 KiB chunks, MB/s; raw: one-way 64 KiB messages.
    StreamChunks,
    /// `add` round trip beside a saturating stream of chunks on the same connection, median.
    BesideStreamMedian,
    /// The same, p99.
    BesideStreamP99,
}

impl Metric {
    /// In table order.
    pub const ALL: [Metric; 15] = [
        Metric::LatencyMedian,
        Metric::LatencyP99,
        Metric::InFlight1,
        Metric::InFlight64,
        Metric::InFlight1000,
        Metric::MultiConn,
        Metric::Bulk,
        Metric::Made,
        Metric::MadeLent,
        Metric::Kept,
        Metric::KeptLent,
        Metric::StreamSmall,
        Metric::StreamChunks,
        Metric::BesideStreamMedian,
        Metric::BesideStreamP99,
    ];

    /// The key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Metric::LatencyMedian => "latency_median_us",
            Metric::LatencyP99 => "latency_p99_us",
            Metric::InFlight1 => "pipelined_1_kcalls_s",
            Metric::InFlight64 => "pipelined_64_kcalls_s",
            Metric::InFlight1000 => "pipelined_1000_kcalls_s",
            Metric::MultiConn => "connections_4x64_kcalls_s",
            Metric::Bulk => "bulk_1mib_echo_mb_s",
            Metric::Made => "result_1mib_made_in_heap_mb_s",
            Metric::MadeLent => "result_1mib_filled_in_loan_mb_s",
            Metric::Kept => "result_1mib_kept_in_heap_mb_s",
            Metric::KeptLent => "result_1mib_kept_in_loan_mb_s",
            Metric::StreamSmall => "stream_16b_items_m_items_s",
            Metric::StreamChunks => "stream_64kib_chunks_mb_s",
            Metric::BesideStreamMedian => "add_beside_saturating_stream_median_us",
            Metric::BesideStreamP99 => "add_beside_saturating_stream_p99_us",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::LatencyMedian => "Round trip, median (µs; raw: 16-byte ping-pong, the others: add(a, b))",
            Metric::LatencyP99 => "Round trip, p99 (µs)",
            Metric::InFlight1 => "Pipelined, 1 in flight, one connection (k calls/s)",
            Metric::InFlight64 => "Pipelined, 64 in flight, one connection (k calls/s)",
            Metric::InFlight1000 => "Pipelined, 1000 in flight, one connection (k calls/s)",
            Metric::MultiConn => "Pipelined, 4 connections × 64 in flight (k calls/s)",
            Metric::Bulk => "Bulk: 1 MiB echo, one at a time (MB/s of payload)",
            Metric::Made => "A 1 MiB result the server makes for each call in a new heap buffer (MB/s of payload)",
            Metric::MadeLent => {
                "The same result filled in place in a loan of the connection (MB/s; shm: its slab, sent by reference; elsewhere the heap)"
            }
            Metric::Kept => "A 1 MiB result made once in a heap buffer, sent again by every call (MB/s of payload)",
            Metric::KeptLent => "The same result made once in a loan of the connection (MB/s; shm: sent by reference every time)",
            Metric::StreamSmall => {
                "Server stream of 16-byte items, one stream on one connection (M items/s received; no raw figure)"
            }
            Metric::StreamChunks => {
                "Server stream of 64 KiB rpc::Bytes chunks (MB/s of payload; raw: one-way 64 KiB writes, not echo-derived)"
            }
            Metric::BesideStreamMedian => {
                "add(a, b) beside a saturating stream of 64 KiB chunks on the same connection, median (µs)"
            }
            Metric::BesideStreamP99 => "add(a, b) beside a saturating stream of 64 KiB chunks, p99 (µs)",
        }
    }

    /// Whether a smaller figure is the better one (times) or a larger one (rates).
    pub fn lower_is_better(self) -> bool {
        matches!(
            self,
            Metric::LatencyMedian | Metric::LatencyP99 | Metric::BesideStreamMedian | Metric::BesideStreamP99
        )
    }
}

/// A target a figure of ours is reported against (never enforced).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Ours at least this much.
    AtLeast(f64),
    /// Ours at most this much.
    AtMost(f64),
    /// Ours at least this fraction of raw.
    OfRaw(f64),
    /// Ours (MB/s) at least this fraction of this machine's memcpy rate.
    OfMemcpy(f64),
}

/// One goal checked against a run: `(transport, metric, target, ours' median, met)`, `met`
/// being `None` when a figure it needs is missing.
pub type GoalCheck = (&'static str, Metric, Target, Option<f64>, Option<bool>);

/// The goals the streaming rows are reported against.
pub const GOALS: &[(&str, Metric, Target)] = &[
    ("shm", Metric::StreamSmall, Target::AtLeast(5.0)),
    ("unix", Metric::StreamSmall, Target::AtLeast(2.0)),
    ("shm", Metric::Bulk, Target::OfMemcpy(1.0 / 6.0)),
    // Every byte-stream transport and mq: a 1 MiB echo at 70 % of the raw echo or better.
    ("tcp", Metric::Bulk, Target::OfRaw(0.7)),
    ("tls", Metric::Bulk, Target::OfRaw(0.7)),
    ("local", Metric::Bulk, Target::OfRaw(0.7)),
    ("unix", Metric::Bulk, Target::OfRaw(0.7)),
    ("fifo", Metric::Bulk, Target::OfRaw(0.7)),
    ("spawn", Metric::Bulk, Target::OfRaw(0.7)),
    ("mq", Metric::Bulk, Target::OfRaw(0.7)),
    // Sockets (tls against a raw rustls echo, see raw_tls.rs).
    ("tcp", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("tls", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("local", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("unix", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("tcp", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("tls", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("local", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("unix", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("tcp", Metric::BesideStreamP99, Target::AtMost(1000.0)),
    ("tls", Metric::BesideStreamP99, Target::AtMost(1000.0)),
    ("local", Metric::BesideStreamP99, Target::AtMost(1000.0)),
    ("unix", Metric::BesideStreamP99, Target::AtMost(1000.0)),
];

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeast(v) => format!("≥ {}", fmt_num(v)),
            Target::AtMost(v) => format!("≤ {}", fmt_num(v)),
            Target::OfRaw(f) => format!("≥ {:.0} % of raw", f * 100.0),
            Target::OfMemcpy(f) => format!("≥ 1/{:.0} of memcpy", 1.0 / f),
        }
    }
}

/// Who produced a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The bare OS primitive (`shm`: two processes spinning on shared atomics).
    Raw,
    /// The transport's own layer without the RPC engine, where a row has one (`shm`: our ring,
    /// framing and wake-ups): between it and `Raw` is what the ring costs, between `Ours` and
    /// it what the engine costs.
    Ring,
    /// This framework.
    Ours,
    /// tarpc over its own serde transport.
    Tarpc,
    /// tarpc's engine over our transport (`rpc::tarpc`): against `Ours` it isolates
    /// the engines, against `Tarpc` the transports.
    TarpcOnOurs,
    /// This framework's generated blocking client (`FooBlockingClient`), called from a plain
    /// thread: round trips only.
    Blocking,
}

impl Side {
    const ALL: [Side; 6] = [Side::Raw, Side::Ring, Side::Ours, Side::Tarpc, Side::TarpcOnOurs, Side::Blocking];

    fn key(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Ring => "ring",
            Side::Ours => "ours",
            Side::Tarpc => "tarpc",
            Side::TarpcOnOurs => "tarpc_on_ours",
            Side::Blocking => "blocking",
        }
    }

    /// The column or row heading in the tables.
    fn label(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Ring => "ring (no engine)",
            Side::Ours => "ours",
            Side::Tarpc => "tarpc",
            Side::TarpcOnOurs => "tarpc-on-ours",
            Side::Blocking => "ours blocking",
        }
    }
}

/// One figure of a payload-sweep point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepStat {
    /// Echo round trip, median (µs).
    Median,
    /// Echo round trip, p99 (µs).
    P99,
    /// MB/s of payload.
    Rate,
}

impl SweepStat {
    const ALL: [SweepStat; 3] = [SweepStat::Median, SweepStat::P99, SweepStat::Rate];

    fn key(self) -> &'static str {
        match self {
            SweepStat::Median => "median_us",
            SweepStat::P99 => "p99_us",
            SweepStat::Rate => "mb_s",
        }
    }

    fn title(self) -> &'static str {
        match self {
            SweepStat::Median => "Payload sweep: echo round trip by payload size, median (µs) — lower is better",
            SweepStat::P99 => {
                "Payload sweep: echo round trip, p99 (µs; of 50 echoes or fewer, the largest) — lower is better"
            }
            SweepStat::Rate => {
                "Payload sweep: echo MB/s of payload (each echoed message counted once) — higher is better"
            }
        }
    }

    fn of(self, point: &SweepPoint) -> f64 {
        match self {
            SweepStat::Median => point.latency.median_us,
            SweepStat::P99 => point.latency.p99_us,
            SweepStat::Rate => point.mb_s,
        }
    }
}

/// `64 B`, `4 KiB`, `16 MiB`: a payload size in the sweep's headings.
pub fn fmt_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Median, min and max over the repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The median of the repetitions (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest repetition.
    pub min: f64,
    /// The largest repetition.
    pub max: f64,
}

pub(crate) fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Summary { median, min: v[0], max: v[n - 1] })
}

/// Everything the run measured, and how.
pub struct Results {
    /// Transport names in run order.
    pub transports: Vec<&'static str>,
    /// Repetitions asked for.
    pub reps: usize,
    /// Whether this was `--quick`.
    pub quick: bool,
    /// What pinning was used, in words.
    pub pinning: String,
    /// The machine, in words.
    pub machine: String,
    /// What each side put on the wire, and each raw primitive.
    pub notes: Vec<(String, String)>,
    /// Wall time of the whole run, seconds (filled in at the end).
    pub elapsed_s: f64,
    values: HashMap<(&'static str, Metric, Side), Vec<f64>>,
    /// Each repetition's sweep point per transport, side and payload size.
    sweep: HashMap<(&'static str, Side, usize), Vec<SweepPoint>>,
    /// Each repetition's memcpy rate, MB/s.
    memcpy: Vec<f64>,
    /// Each repetition's cross-CPU round trip, ns.
    cross_cpu: Vec<f64>,
}

impl Results {
    /// No figures yet.
    pub fn new(transports: Vec<&'static str>, reps: usize, quick: bool, pinning: String, machine: String) -> Self {
        Self {
            transports,
            reps,
            quick,
            pinning,
            machine,
            notes: Vec::new(),
            elapsed_s: 0.0,
            values: HashMap::new(),
            sweep: HashMap::new(),
            memcpy: Vec::new(),
            cross_cpu: Vec::new(),
        }
    }

    /// Records one repetition's payload sweep of one side.
    pub fn push_sweep(&mut self, transport: &'static str, side: Side, points: &[SweepPoint]) {
        for point in points {
            self.sweep.entry((transport, side, point.size)).or_default().push(*point);
        }
    }

    /// Records one repetition's memcpy rate (MB/s).
    pub fn push_memcpy(&mut self, mb_s: f64) {
        self.memcpy.push(mb_s);
    }

    /// Records one repetition's cross-CPU round trip (ns).
    pub fn push_cross_cpu(&mut self, ns: f64) {
        self.cross_cpu.push(ns);
    }

    /// The cross-CPU round trip over the repetitions.
    pub fn cross_cpu(&self) -> Option<Summary> {
        summarize(&self.cross_cpu)
    }

    /// The memcpy rate over the repetitions.
    pub fn memcpy(&self) -> Option<Summary> {
        summarize(&self.memcpy)
    }

    /// The summary of one sweep figure, if it was measured.
    pub fn get_sweep(&self, transport: &str, side: Side, size: usize, stat: SweepStat) -> Option<Summary> {
        let key = self.sweep.keys().find(|(t, s, z)| *t == transport && *s == side && *z == size)?;
        summarize(&self.sweep[key].iter().map(|p| stat.of(p)).collect::<Vec<_>>())
    }

    fn sweep_ratio(&self, transport: &str, size: usize, stat: SweepStat, other: Side) -> Option<f64> {
        let ours = self.get_sweep(transport, Side::Ours, size, stat)?.median;
        let other = self.get_sweep(transport, other, size, stat)?.median;
        (other > 0.0).then(|| ours / other)
    }

    /// Ours' `metric` (MB/s) on `transport` as a fraction of the memcpy rate.
    pub fn of_memcpy(&self, transport: &str, metric: Metric) -> Option<f64> {
        let ours = self.get(transport, metric, Side::Ours)?.median;
        let memcpy = self.memcpy()?.median;
        (memcpy > 0.0).then(|| ours / memcpy)
    }

    /// Records one repetition's figure.
    pub fn push(&mut self, transport: &'static str, metric: Metric, side: Side, value: f64) {
        self.values.entry((transport, metric, side)).or_default().push(value);
    }

    /// The summary of one cell, if it was measured.
    pub fn get(&self, transport: &str, metric: Metric, side: Side) -> Option<Summary> {
        let key = self.values.keys().find(|(t, m, s)| *t == transport && *m == metric && *s == side)?;
        summarize(&self.values[key])
    }

    /// Each goal for a measured transport.
    pub fn goals(&self) -> Vec<GoalCheck> {
        GOALS
            .iter()
            .filter(|(t, _, _)| self.transports.contains(t))
            .map(|&(t, m, target)| {
                let ours = self.get(t, m, Side::Ours).map(|s| s.median);
                let met = match target {
                    Target::AtLeast(v) => ours.map(|o| o >= v),
                    Target::AtMost(v) => ours.map(|o| o <= v),
                    Target::OfRaw(f) => self.ratio(t, m, Side::Raw).map(|r| r >= f),
                    Target::OfMemcpy(f) => self.of_memcpy(t, m).map(|r| r >= f),
                };
                (t, m, target, ours, met)
            })
            .collect()
    }

    fn ratio(&self, transport: &str, metric: Metric, other: Side) -> Option<f64> {
        let ours = self.get(transport, metric, Side::Ours)?.median;
        let other = self.get(transport, metric, other)?.median;
        (other > 0.0).then(|| ours / other)
    }

    /// The tables, as printed on stdout.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rpc-bench: {}",
            if self.quick { "QUICK mode (tiny counts; figures mean nothing)" } else { "full mode" }
        );
        let _ = writeln!(out, "machine: {}", self.machine);
        let _ = writeln!(out, "pinning: {}", self.pinning);
        let _ = writeln!(out, "repetitions: {} (each cell: median of the repetitions [min–max])", self.reps);
        for (what, note) in &self.notes {
            let _ = writeln!(out, "{what}: {note}");
        }
        if let Some(m) = self.memcpy() {
            let _ = writeln!(
                out,
                "memcpy: {} MB/s copying {} buffers (each repetition: the median of its copies; here the median of the repetitions [min–max])",
                fmt_summary(m),
                fmt_size(MEMCPY_SIZE)
            );
        }
        if let Some(c) = self.cross_cpu() {
            let _ = writeln!(
                out,
                "cross-CPU round trip: {} ns (each repetition: the median batch; here the median of the repetitions [min–max])",
                fmt_summary(c)
            );
        }
        for metric in Metric::ALL {
            let better = if metric.lower_is_better() { "lower is better" } else { "higher is better" };
            let _ = writeln!(out, "\n## {} — {better}", metric.title());
            let _ = writeln!(
                out,
                "{:<10} {:>22} {:>22} {:>22} {:>22} {:>22} {:>9} {:>10} {:>10} {:>18} {:>22}",
                "transport",
                "raw",
                "ring (no engine)",
                "ours",
                "tarpc",
                "tarpc-on-ours",
                "ours/raw",
                "ours/ring",
                "ours/tarpc",
                "ours/tarpc-on-ours",
                "ours blocking"
            );
            for &t in &self.transports {
                let cell = |side| self.get(t, metric, side).map_or_else(|| "—".to_owned(), fmt_summary);
                let ratio = |side| self.ratio(t, metric, side).map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
                let _ = writeln!(
                    out,
                    "{:<10} {:>22} {:>22} {:>22} {:>22} {:>22} {:>9} {:>10} {:>10} {:>18} {:>22}",
                    t,
                    cell(Side::Raw),
                    cell(Side::Ring),
                    cell(Side::Ours),
                    cell(Side::Tarpc),
                    cell(Side::TarpcOnOurs),
                    ratio(Side::Raw),
                    ratio(Side::Ring),
                    ratio(Side::Tarpc),
                    ratio(Side::TarpcOnOurs),
                    cell(Side::Blocking)
                );
            }
        }
        out += &self.sweep_tables();
        let _ = writeln!(out);
        for (other, name) in [
            (Side::Raw, "ours/raw"),
            (Side::Ring, "ours/ring"),
            (Side::Tarpc, "ours/tarpc"),
            (Side::TarpcOnOurs, "ours/tarpc-on-ours"),
        ] {
            match self.slowest(other) {
                Some((t, m, slowdown)) => {
                    let _ = writeln!(
                        out,
                        "slowest {name}: {t}, {} — ours is {slowdown:.2}× {} {}",
                        m.key(),
                        if slowdown >= 1.0 { "worse than" } else { "better than (at worst)" },
                        other.key()
                    );
                }
                None => {
                    let _ = writeln!(out, "slowest {name}: nothing to compare");
                }
            }
        }
        let goals = self.goals();
        if !goals.is_empty() {
            let _ = writeln!(out, "\ngoals (reported, not enforced; ours' median):");
        }
        for (t, m, target, ours, met) in goals {
            let ours = ours.map_or_else(|| "—".to_owned(), fmt_num);
            let ratio = match target {
                Target::OfRaw(_) => {
                    self.ratio(t, m, Side::Raw).map_or_else(String::new, |r| format!(" = {:.0} % of raw", r * 100.0))
                }
                Target::OfMemcpy(_) => self.of_memcpy(t, m).map_or_else(String::new, |r| {
                    format!(" = 1/{:.1} of memcpy ({} MB/s)", 1.0 / r, fmt_num(self.memcpy().map_or(0.0, |m| m.median)))
                }),
                _ => String::new(),
            };
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            let _ = writeln!(out, "  {t:<6} {:<40} {} (goal {}): {verdict}", m.key(), ours + &ratio, target.describe());
        }
        let _ = writeln!(out, "total time: {:.1} s", self.elapsed_s);
        out
    }

    /// The sweep's three tables (median, p99, MB/s): a row per transport and side, a column per
    /// payload size, and ours' ratio to each raw side below them.
    fn sweep_tables(&self) -> String {
        let mut out = String::new();
        if self.sweep.is_empty() {
            return out;
        }
        for stat in SweepStat::ALL {
            let _ = writeln!(out, "\n## {}", stat.title());
            let _ = write!(out, "{:<10} {:<18}", "transport", "side");
            for &size in &SWEEP_SIZES {
                let _ = write!(out, " {:>20}", fmt_size(size));
            }
            let _ = writeln!(out);
            for &t in &self.transports {
                let measured = |side| SWEEP_SIZES.iter().any(|&z| self.get_sweep(t, side, z, stat).is_some());
                for side in Side::ALL.into_iter().filter(|&side| measured(side)) {
                    let _ = write!(out, "{t:<10} {:<18}", side.label());
                    for &size in &SWEEP_SIZES {
                        let cell = self.get_sweep(t, side, size, stat).map_or_else(|| "—".to_owned(), fmt_summary);
                        let _ = write!(out, " {cell:>20}");
                    }
                    let _ = writeln!(out);
                }
                for other in [Side::Raw, Side::Ring].into_iter().filter(|&side| measured(side) && measured(Side::Ours))
                {
                    let _ = write!(out, "{t:<10} {:<18}", format!("ours/{}", other.key()));
                    for &size in &SWEEP_SIZES {
                        let r = self
                            .sweep_ratio(t, size, stat, other)
                            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
                        let _ = write!(out, " {r:>20}");
                    }
                    let _ = writeln!(out);
                }
            }
        }
        if let (Some(memcpy), Some(shm)) = (self.memcpy(), self.get("shm", Metric::Bulk, Side::Ours)) {
            let _ = write!(
                out,
                "\nshm 1 MiB echo, ours: {} MB/s in the bulk table = 1/{:.1} of memcpy ({} MB/s, {} buffers; the goal's figure)",
                fmt_num(shm.median),
                memcpy.median / shm.median,
                fmt_num(memcpy.median),
                fmt_size(MEMCPY_SIZE)
            );
            // The sweep's 1 MiB point runs on a fresh connection, the bulk figure after the
            // pipelined runs: both are shown, so a gap between them is visible.
            if let Some(point) = self.get_sweep("shm", Side::Ours, 1 << 20, SweepStat::Rate) {
                let _ = write!(
                    out,
                    "; {} MB/s in the sweep = 1/{:.1}",
                    fmt_num(point.median),
                    memcpy.median / point.median
                );
            }
            let _ = writeln!(out);
        }
        out
    }

    /// The cell where ours is furthest behind `other`, as a slowdown factor (>1: ours worse).
    pub fn slowest(&self, other: Side) -> Option<(&'static str, Metric, f64)> {
        let mut worst: Option<(&'static str, Metric, f64)> = None;
        for &t in &self.transports {
            for m in Metric::ALL {
                let Some(r) = self.ratio(t, m, other) else { continue };
                let slowdown = if m.lower_is_better() { r } else { 1.0 / r };
                if worst.is_none_or(|(_, _, w)| slowdown > w) {
                    worst = Some((t, m, slowdown));
                }
            }
        }
        worst
    }

    /// The JSON document written by `--json`.
    pub fn json(&self) -> Value {
        let mut rows = Vec::new();
        for &t in &self.transports {
            for m in Metric::ALL {
                let mut row = serde_json::Map::new();
                row.insert("transport".into(), json!(t));
                row.insert("metric".into(), json!(m.key()));
                row.insert("lower_is_better".into(), json!(m.lower_is_better()));
                for side in Side::ALL {
                    let value = match self.get(t, m, side) {
                        Some(s) => json!({
                            "median": s.median, "min": s.min, "max": s.max,
                            "reps": self.values.iter().find(|((tt, mm, ss), _)| *tt == t && *mm == m && *ss == side).map(|(_, v)| v.clone()),
                        }),
                        None => Value::Null,
                    };
                    row.insert(side.key().into(), value);
                }
                row.insert("ours_over_raw".into(), json!(self.ratio(t, m, Side::Raw)));
                row.insert("ours_over_ring".into(), json!(self.ratio(t, m, Side::Ring)));
                row.insert("ours_over_tarpc".into(), json!(self.ratio(t, m, Side::Tarpc)));
                row.insert("ours_over_tarpc_on_ours".into(), json!(self.ratio(t, m, Side::TarpcOnOurs)));
                rows.push(Value::Object(row));
            }
        }
        let notes: serde_json::Map<String, Value> = self.notes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let goals: Vec<Value> = self
            .goals()
            .into_iter()
            .map(|(t, m, target, ours, met)| {
                json!({ "transport": t, "metric": m.key(), "goal": target.describe(), "ours": ours, "met": met })
            })
            .collect();
        let summary = |s: Summary| json!({ "median": s.median, "min": s.min, "max": s.max });
        let mut points = Vec::new();
        for &t in &self.transports {
            for side in Side::ALL {
                for &size in &SWEEP_SIZES {
                    let Some(reps) = self.sweep.get(&(t, side, size)) else { continue };
                    let mut point = serde_json::Map::new();
                    point.insert("transport".into(), json!(t));
                    point.insert("side".into(), json!(side.key()));
                    point.insert("payload_bytes".into(), json!(size));
                    point.insert("calls".into(), json!(reps.iter().map(|p| p.calls).collect::<Vec<_>>()));
                    for stat in SweepStat::ALL {
                        let values: Vec<f64> = reps.iter().map(|p| stat.of(p)).collect();
                        let mut cell = summarize(&values).map_or(Value::Null, summary);
                        cell["reps"] = json!(values);
                        point.insert(stat.key().into(), cell);
                    }
                    if side != Side::Ours {
                        for stat in [SweepStat::Median, SweepStat::Rate] {
                            let key = format!("ours_over_this_{}", stat.key());
                            point.insert(key, json!(self.sweep_ratio(t, size, stat, side)));
                        }
                    }
                    points.push(Value::Object(point));
                }
            }
        }
        let memcpy = self.memcpy().map_or(Value::Null, |m| {
            json!({
                "buffer_bytes": MEMCPY_SIZE,
                "mb_s": summary(m),
                "reps": self.memcpy,
                "shm_bulk_1mib_echo_over_memcpy": self.of_memcpy("shm", Metric::Bulk),
            })
        });
        json!({
            "tool": "rpc-bench",
            "quick": self.quick,
            "reps": self.reps,
            "pinning": self.pinning,
            "machine": self.machine,
            "notes": notes,
            "elapsed_s": self.elapsed_s,
            "transports": self.transports,
            "rows": rows,
            "sweep": { "sizes_bytes": SWEEP_SIZES, "points": points },
            "memcpy": memcpy,
            "cross_cpu_round_trip_ns": self.cross_cpu().map_or(Value::Null, |c| json!({ "ns": summary(c), "reps": self.cross_cpu })),
            "goals": goals,
        })
    }

    /// A horizontal bar chart of the median round trip per transport and side, with the p99
    /// marked by a tick and both figures written next to the bar.
    pub fn svg(&self) -> String {
        const BAR: f64 = 16.0;
        const LEFT: f64 = 130.0;
        const WIDTH: f64 = 900.0;
        const PLOT: f64 = 560.0;
        let colors = [
            (Side::Raw, "#9e9e9e"),
            (Side::Ring, "#8c564b"),
            (Side::Ours, "#1f77b4"),
            (Side::Tarpc, "#ff7f0e"),
            (Side::TarpcOnOurs, "#2ca02c"),
        ];
        // Scale to the largest median, not p99: one outlier p99 would flatten every bar.
        let scale_max = self
            .transports
            .iter()
            .flat_map(|t| Side::ALL.map(|s| self.get(t, Metric::LatencyMedian, s)))
            .flatten()
            .map(|s| s.median)
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.6;
        let x = |v: f64| LEFT + (v / scale_max).min(1.0) * PLOT;
        let mut body = String::new();
        let mut y = 60.0;
        for &t in &self.transports {
            let _ = writeln!(body, r#"<text x="10" y="{:.0}" font-weight="bold">{t}</text>"#, y + BAR * 1.5 + 4.0);
            for (side, color) in colors {
                let (Some(med), p99) =
                    (self.get(t, Metric::LatencyMedian, side), self.get(t, Metric::LatencyP99, side))
                else {
                    continue;
                };
                let _ = writeln!(
                    body,
                    r#"<rect x="{LEFT}" y="{y:.0}" width="{:.1}" height="{}" fill="{color}"><title>{t} {}: median {:.1} µs</title></rect>"#,
                    x(med.median) - LEFT,
                    BAR - 2.0,
                    side.key(),
                    med.median
                );
                let mut label = format!("{} {:.1} µs", side.key(), med.median);
                if let Some(p99) = p99 {
                    let px = x(p99.median);
                    let _ = writeln!(
                        body,
                        r#"<line x1="{px:.1}" x2="{px:.1}" y1="{y:.0}" y2="{:.0}" stroke="black" stroke-width="2"/>"#,
                        y + BAR - 2.0
                    );
                    let _ = write!(label, " (p99 {:.1})", p99.median);
                }
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.0}" font-size="12">{label}</text>"#,
                    x(med.median).max(x(p99.map_or(0.0, |p| p.median))) + 6.0,
                    y + BAR - 4.0
                );
                y += BAR;
            }
            y += BAR;
        }
        let height = y + 30.0;
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="16" font-weight="bold">Round trip per transport (median bar, p99 tick), µs — lower is better</text>
<text x="10" y="42" font-size="12">{} repetitions; pinning: {}{}</text>
{body}<text x="10" y="{:.0}" font-size="11">grey: raw OS primitive (shm: spinning on shared atomics), brown: shm ring without the engine, blue: ours, orange: tarpc, green: tarpc over our transport</text>
</svg>
"#,
            self.reps,
            xml_escape(&self.pinning),
            if self.quick { "; QUICK mode, figures mean nothing" } else { "" },
            height - 10.0
        )
    }

    /// The payload sweep as a line chart: median echo round trip (log scale) against payload size
    /// (log scale), one colour per transport; ours solid, the raw primitive dashed, the `shm`
    /// ring without the engine dotted. Hovering a point shows its median, p99 and MB/s.
    pub fn sweep_svg(&self) -> String {
        const LEFT: f64 = 80.0;
        const TOP: f64 = 70.0;
        const PLOT_W: f64 = 620.0;
        const PLOT_H: f64 = 420.0;
        const WIDTH: f64 = 960.0;
        const PALETTE: [&str; 10] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf",
        ];
        let styles = [(Side::Ours, "", 2.5), (Side::Raw, "6 4", 1.5), (Side::Ring, "2 3", 1.5)];
        let medians: Vec<f64> = self
            .sweep
            .keys()
            .filter_map(|&(t, side, size)| self.get_sweep(t, side, size, SweepStat::Median))
            .map(|s| s.median)
            .filter(|&v| v > 0.0)
            .collect();
        let (lo, hi) = match (medians.iter().copied().reduce(f64::min), medians.iter().copied().reduce(f64::max)) {
            (Some(min), Some(max)) => {
                let (lo, hi) = (min.log10().floor(), max.log10().ceil());
                (lo, if hi > lo { hi } else { lo + 1.0 })
            }
            _ => (0.0, 1.0),
        };
        let (first, last) = (SWEEP_SIZES[0] as f64, SWEEP_SIZES[SWEEP_SIZES.len() - 1] as f64);
        let x = |size: usize| LEFT + (size as f64 / first).log2() / (last / first).log2() * PLOT_W;
        let y = |us: f64| TOP + PLOT_H - (us.max(1e-12).log10() - lo) / (hi - lo) * PLOT_H;
        let mut body = String::new();
        // Grid and axis labels.
        let mut decade = lo;
        while decade <= hi {
            let gy = y(10f64.powf(decade));
            let _ = writeln!(
                body,
                r##"<line x1="{LEFT}" x2="{:.0}" y1="{gy:.1}" y2="{gy:.1}" stroke="#dddddd"/><text x="{:.0}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                LEFT + PLOT_W,
                LEFT - 6.0,
                gy + 4.0,
                fmt_decade_us(decade as i32)
            );
            decade += 1.0;
        }
        for &size in &SWEEP_SIZES {
            let gx = x(size);
            let _ = writeln!(
                body,
                r##"<line x1="{gx:.1}" x2="{gx:.1}" y1="{TOP}" y2="{:.0}" stroke="#dddddd"/><text x="{gx:.1}" y="{:.0}" font-size="11" text-anchor="middle">{}</text>"##,
                TOP + PLOT_H,
                TOP + PLOT_H + 16.0,
                fmt_size(size)
            );
        }
        let _ = writeln!(
            body,
            r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="black"/>
<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="middle">payload per echo (log scale)</text>
<text x="16" y="{:.0}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.0})">echo round trip, median (log scale)</text>"##,
            LEFT + PLOT_W / 2.0,
            TOP + PLOT_H + 36.0,
            TOP + PLOT_H / 2.0,
            TOP + PLOT_H / 2.0
        );
        // One line per transport and side, a legend entry per transport.
        let mut legend_y = TOP + 10.0;
        for (i, &t) in self.transports.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut drawn = false;
            for (side, dash, width) in styles {
                let points: Vec<(usize, Summary)> = SWEEP_SIZES
                    .iter()
                    .filter_map(|&size| self.get_sweep(t, side, size, SweepStat::Median).map(|m| (size, m)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                drawn = true;
                let path: Vec<String> =
                    points.iter().map(|&(size, m)| format!("{:.1},{:.1}", x(size), y(m.median))).collect();
                let _ = writeln!(
                    body,
                    r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}"/>"##,
                    path.join(" ")
                );
                for (size, m) in points {
                    let p99 = self.get_sweep(t, side, size, SweepStat::P99).map_or(f64::NAN, |s| s.median);
                    let rate = self.get_sweep(t, side, size, SweepStat::Rate).map_or(f64::NAN, |s| s.median);
                    let _ = writeln!(
                        body,
                        r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{t} {}, {}: median {} µs, p99 {} µs, {} MB/s</title></circle>"##,
                        x(size),
                        y(m.median),
                        side.label(),
                        fmt_size(size),
                        fmt_num(m.median),
                        fmt_num(p99),
                        fmt_num(rate)
                    );
                }
            }
            if drawn {
                let lx = LEFT + PLOT_W + 30.0;
                let _ = writeln!(
                    body,
                    r##"<line x1="{lx:.0}" x2="{:.0}" y1="{legend_y:.0}" y2="{legend_y:.0}" stroke="{color}" stroke-width="2.5"/><text x="{:.0}" y="{:.0}">{t}</text>"##,
                    lx + 30.0,
                    lx + 38.0,
                    legend_y + 4.0
                );
                legend_y += 20.0;
            }
        }
        legend_y += 10.0;
        for (side, dash, width) in styles {
            let lx = LEFT + PLOT_W + 30.0;
            let what = match side {
                Side::Ours => "ours (echo call)",
                Side::Raw => "raw primitive",
                _ => "shm ring, no engine",
            };
            let _ = writeln!(
                body,
                r##"<line x1="{lx:.0}" x2="{:.0}" y1="{legend_y:.0}" y2="{legend_y:.0}" stroke="black" stroke-width="{width}" stroke-dasharray="{dash}"/><text x="{:.0}" y="{:.0}" font-size="12">{what}</text>"##,
                lx + 30.0,
                lx + 38.0,
                legend_y + 4.0
            );
            legend_y += 18.0;
        }
        let height = TOP + PLOT_H + 70.0;
        let memcpy = self.memcpy().map_or_else(String::new, |m| {
            format!("; memcpy {} MB/s ({} buffers)", fmt_num(m.median), fmt_size(MEMCPY_SIZE))
        });
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="16" font-weight="bold">Echo round trip against payload size (median, both axes log scale) — lower is better</text>
<text x="10" y="42" font-size="12">{} repetitions; pinning: {}{memcpy}{}</text>
{body}<text x="10" y="{:.0}" font-size="11">raw: the bare OS primitive's echo (shm: a spinning shared-memory mailbox); each point's tooltip gives median, p99 and MB/s</text>
</svg>
"#,
            self.reps,
            // The first clause only ("none", "client on CPU 0, servers on CPU 1"): the tables
            // carry the whole sentence.
            xml_escape(self.pinning.split([':', '(']).next().unwrap_or_default().trim()),
            if self.quick { "; QUICK mode, figures mean nothing" } else { "" },
            height - 10.0
        )
    }
}

/// `0.1 µs`, `1 µs`, `10 ms`: a power of ten of microseconds, for the sweep chart's axis.
fn fmt_decade_us(exp: i32) -> String {
    match exp {
        e if e < 0 => format!("{} µs", 10f64.powi(e)),
        e if e < 3 => format!("{} µs", 10i64.pow(e as u32)),
        e if e < 6 => format!("{} ms", 10i64.pow(e as u32 - 3)),
        e => format!("{} s", 10i64.pow(e as u32 - 6)),
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn fmt_summary(s: Summary) -> String {
    format!("{} [{}–{}]", fmt_num(s.median), fmt_num(s.min), fmt_num(s.max))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0]).unwrap().median, 2.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn slowest_ratio_accounts_for_direction() {
        let mut r = Results::new(vec!["tcp"], 1, true, "none".into(), "test".into());
        r.push("tcp", Metric::LatencyMedian, Side::Raw, 10.0);
        r.push("tcp", Metric::LatencyMedian, Side::Ours, 20.0); // 2× worse
        r.push("tcp", Metric::Bulk, Side::Raw, 1000.0);
        r.push("tcp", Metric::Bulk, Side::Ours, 250.0); // 4× worse
        let (t, m, slowdown) = r.slowest(Side::Raw).unwrap();
        assert_eq!((t, m), ("tcp", Metric::Bulk));
        assert_eq!(slowdown, 4.0);
        assert!(r.svg().starts_with("<svg"));
        assert_eq!(r.json()["rows"].as_array().unwrap().len(), Metric::ALL.len());
    }

    #[test]
    fn sweep_and_memcpy_are_reported() {
        use crate::measure::LatencyStats;
        let mut r = Results::new(vec!["shm"], 1, true, "none".into(), "test".into());
        let point = |size, median_us, mb_s| SweepPoint {
            size,
            calls: 3,
            latency: LatencyStats { median_us, p99_us: median_us * 2.0 },
            mb_s,
        };
        r.push_sweep("shm", Side::Ours, &[point(64, 2.0, 30.0), point(16 << 20, 8000.0, 2000.0)]);
        r.push_sweep("shm", Side::Raw, &[point(64, 0.2, 300.0), point(16 << 20, 4000.0, 4000.0)]);
        r.push_memcpy(12_000.0);
        r.push_cross_cpu(170.0);
        r.push("shm", Metric::Bulk, Side::Ours, 3_000.0);
        assert_eq!(r.get_sweep("shm", Side::Ours, 64, SweepStat::P99).unwrap().median, 4.0);
        assert_eq!(r.sweep_ratio("shm", 64, SweepStat::Median, Side::Raw), Some(10.0));
        let tables = r.tables();
        assert!(tables.contains("16 MiB") && tables.contains("ours/raw"), "{tables}");
        assert!(tables.contains("3000 MB/s in the bulk table = 1/4.0 of memcpy"), "{tables}");
        let goal = r.goals().into_iter().find(|g| matches!(g.2, Target::OfMemcpy(_))).unwrap();
        assert_eq!(goal.4, Some(true));
        let json = r.json();
        assert_eq!(json["sweep"]["points"].as_array().unwrap().len(), 4);
        assert_eq!(json["memcpy"]["shm_bulk_1mib_echo_over_memcpy"], 0.25);
        assert_eq!(json["cross_cpu_round_trip_ns"]["reps"][0], 170.0);
        assert!(tables.contains("cross-CPU round trip: 170"), "{tables}");
        let svg = r.sweep_svg();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.ends_with("</svg>\n"));
        assert_eq!(fmt_size(64), "64 B");
        assert_eq!(fmt_size(16 << 20), "16 MiB");
        assert_eq!(fmt_decade_us(-1), "0.1 µs");
        assert_eq!(fmt_decade_us(4), "10 ms");
    }
}
