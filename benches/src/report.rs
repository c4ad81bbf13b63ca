//! Collecting the figures of every repetition, and presenting them: tables on stdout, JSON and an
//! SVG chart of latency per transport.
//!
//! Every cell is the median over the repetitions with the min–max spread; ratios are taken
//! between those medians.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

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
    pub const ALL: [Metric; 11] = [
        Metric::LatencyMedian,
        Metric::LatencyP99,
        Metric::InFlight1,
        Metric::InFlight64,
        Metric::InFlight1000,
        Metric::MultiConn,
        Metric::Bulk,
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
}

/// One goal checked against a run: `(transport, metric, target, ours' median, met)`, `met`
/// being `None` when a figure it needs is missing.
pub type GoalCheck = (&'static str, Metric, Target, Option<f64>, Option<bool>);

/// The goals the streaming rows are reported against.
pub const GOALS: &[(&str, Metric, Target)] = &[
    ("shm", Metric::StreamSmall, Target::AtLeast(5.0)),
    ("unix", Metric::StreamSmall, Target::AtLeast(2.0)),
    ("tcp", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("local", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("unix", Metric::StreamChunks, Target::OfRaw(0.7)),
    ("tcp", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("local", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("unix", Metric::BesideStreamMedian, Target::AtMost(1000.0)),
    ("tcp", Metric::BesideStreamP99, Target::AtMost(1000.0)),
    ("local", Metric::BesideStreamP99, Target::AtMost(1000.0)),
    ("unix", Metric::BesideStreamP99, Target::AtMost(1000.0)),
];

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeast(v) => format!("≥ {}", fmt_num(v)),
            Target::AtMost(v) => format!("≤ {}", fmt_num(v)),
            Target::OfRaw(f) => format!("≥ {:.0} % of raw", f * 100.0),
        }
    }
}

/// Who produced a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The bare OS primitive.
    Raw,
    /// This framework.
    Ours,
    /// tarpc over its own serde transport.
    Tarpc,
    /// tarpc's engine over our transport (`rpc::tarpc`): against `Ours` it isolates
    /// the engines, against `Tarpc` the transports.
    TarpcOnOurs,
}

impl Side {
    const ALL: [Side; 4] = [Side::Raw, Side::Ours, Side::Tarpc, Side::TarpcOnOurs];

    fn key(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Ours => "ours",
            Side::Tarpc => "tarpc",
            Side::TarpcOnOurs => "tarpc_on_ours",
        }
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

fn summarize(values: &[f64]) -> Option<Summary> {
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
}

impl Results {
    /// No figures yet.
    pub fn new(transports: Vec<&'static str>, reps: usize, quick: bool, pinning: String, machine: String) -> Self {
        Self { transports, reps, quick, pinning, machine, notes: Vec::new(), elapsed_s: 0.0, values: HashMap::new() }
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
        for metric in Metric::ALL {
            let better = if metric.lower_is_better() { "lower is better" } else { "higher is better" };
            let _ = writeln!(out, "\n## {} — {better}", metric.title());
            let _ = writeln!(
                out,
                "{:<10} {:>24} {:>24} {:>24} {:>24} {:>9} {:>10} {:>18}",
                "transport", "raw", "ours", "tarpc", "tarpc-on-ours", "ours/raw", "ours/tarpc", "ours/tarpc-on-ours"
            );
            for &t in &self.transports {
                let cell = |side| self.get(t, metric, side).map_or_else(|| "—".to_owned(), fmt_summary);
                let ratio = |side| self.ratio(t, metric, side).map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
                let _ = writeln!(
                    out,
                    "{:<10} {:>24} {:>24} {:>24} {:>24} {:>9} {:>10} {:>18}",
                    t,
                    cell(Side::Raw),
                    cell(Side::Ours),
                    cell(Side::Tarpc),
                    cell(Side::TarpcOnOurs),
                    ratio(Side::Raw),
                    ratio(Side::Tarpc),
                    ratio(Side::TarpcOnOurs)
                );
            }
        }
        let _ = writeln!(out);
        for (other, name) in
            [(Side::Raw, "ours/raw"), (Side::Tarpc, "ours/tarpc"), (Side::TarpcOnOurs, "ours/tarpc-on-ours")]
        {
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
        let colors =
            [(Side::Raw, "#9e9e9e"), (Side::Ours, "#1f77b4"), (Side::Tarpc, "#ff7f0e"), (Side::TarpcOnOurs, "#2ca02c")];
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
{body}<text x="10" y="{:.0}" font-size="11">grey: raw OS primitive, blue: ours, orange: tarpc, green: tarpc over our transport</text>
</svg>
"#,
            self.reps,
            xml_escape(&self.pinning),
            if self.quick { "; QUICK mode, figures mean nothing" } else { "" },
            height - 10.0
        )
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

fn fmt_summary(s: Summary) -> String {
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
}
