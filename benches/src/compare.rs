//! What a change did, from runs of two builds made in turn (one repetition each), so that both
//! builds saw the same moods of the machine:
//!
//! - `rpc-bench --alternate BEFORE_BINARY [--pairs N] [--out DIR] [run options]` makes the runs
//!   (this binary is the after-build) and compares them;
//! - `rpc-bench --compare BEFORE.json... -- AFTER.json...` compares runs made otherwise.
//!
//! For every figure both sides have (a transport, a metric, a column: ours, raw, ring, ...)
//! it prints the median of the runs on each side with their spread, the ratio of the medians,
//! and in how many pairs (the i-th run of each side) the after-build did better, which says
//! more than a ratio on a noisy VM. The cross-CPU round trip of each run (with `--pin`) comes
//! first: runs in the VM's slow mode show there and are best left out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::report::{fmt_summary, summarize};
use crate::service::BoxError;

/// The columns a row may hold a figure in, in the order they are printed.
const COLUMNS: [&str; 6] = ["ours", "raw", "ring", "blocking", "tarpc", "tarpc_on_ours"];

/// One figure across the runs of both builds.
#[derive(Debug)]
pub struct Figure {
    pub transport: String,
    pub metric: String,
    pub column: &'static str,
    pub lower_is_better: bool,
    /// The run's value, one per run of each side (`None` where a run lacks the figure).
    pub before: Vec<Option<f64>>,
    pub after: Vec<Option<f64>>,
}

impl Figure {
    /// Pairs in which the after-build did better, and pairs in which both runs had the figure.
    pub fn wins(&self) -> (usize, usize) {
        let pairs = self.before.iter().zip(&self.after).filter_map(|(b, a)| Some(((*b)?, (*a)?)));
        pairs.fold((0, 0), |(wins, pairs), (b, a)| {
            let better = if self.lower_is_better { a < b } else { a > b };
            (wins + usize::from(better), pairs + 1)
        })
    }
}

/// The values present.
fn present(values: &[Option<f64>]) -> Vec<f64> {
    values.iter().flatten().copied().collect()
}

/// Every figure of the runs, in the order of the first run's rows. A figure only one build has
/// (a metric added by the change) is left out.
pub fn figures(before: &[Value], after: &[Value]) -> Vec<Figure> {
    // A few dozen figures: a list searched in place keeps them in first-seen order.
    let mut found: Vec<Figure> = Vec::new();
    for (is_after, runs) in [(false, before), (true, after)] {
        for (i, run) in runs.iter().enumerate() {
            let rows = run.get("rows").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for row in rows {
                let (Some(transport), Some(metric)) =
                    (row.get("transport").and_then(Value::as_str), row.get("metric").and_then(Value::as_str))
                else {
                    continue;
                };
                let lower_is_better = row.get("lower_is_better").and_then(Value::as_bool).unwrap_or(false);
                for column in COLUMNS {
                    let Some(value) = row.get(column).and_then(|c| c.get("median")).and_then(Value::as_f64) else {
                        continue;
                    };
                    let at =
                        found.iter().position(|f| f.transport == transport && f.metric == metric && f.column == column);
                    let figure = match at {
                        Some(at) => &mut found[at],
                        None => {
                            found.push(Figure {
                                transport: transport.to_owned(),
                                metric: metric.to_owned(),
                                column,
                                lower_is_better,
                                before: vec![None; before.len()],
                                after: vec![None; after.len()],
                            });
                            found.last_mut().expect("just pushed")
                        }
                    };
                    let values = if is_after { &mut figure.after } else { &mut figure.before };
                    values[i] = Some(value);
                }
            }
        }
    }
    found.retain(|f| f.before.iter().any(Option::is_some) && f.after.iter().any(Option::is_some));
    found
}

/// Each run's cross-CPU round trip in ns (`None` for a run without `--pin`).
fn cross_cpu(runs: &[Value]) -> Vec<Option<f64>> {
    runs.iter().map(|run| run.pointer("/cross_cpu_round_trip_ns/ns/median").and_then(Value::as_f64)).collect()
}

/// The JSON of each run.
fn load_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Value>, BoxError> {
    let load = |path: &Path| -> Result<Value, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    paths.iter().map(|path| load(path.as_ref())).collect()
}

/// The text of the comparison.
pub fn report(before: &[Value], after: &[Value]) -> String {
    let mut out = String::new();
    let list = |values: Vec<Option<f64>>| -> String {
        values.iter().map(|v| v.map_or("-".to_owned(), |v| format!("{v:.0}"))).collect::<Vec<_>>().join(" ")
    };
    out += &format!("cross-CPU round trip (ns), before: {}\n", list(cross_cpu(before)));
    out += &format!("cross-CPU round trip (ns), after:  {}\n\n", list(cross_cpu(after)));
    out += &format!(
        "{:<10} {:<40} {:<14} {:>22} {:>22} {:>7} {:>7}\n",
        "transport", "metric", "column", "before", "after", "ratio", "better"
    );
    for figure in figures(before, after) {
        let (Some(b), Some(a)) = (summarize(&present(&figure.before)), summarize(&present(&figure.after))) else {
            continue;
        };
        let (wins, pairs) = figure.wins();
        let ratio = if b.median == 0.0 { "-".to_owned() } else { format!("{:.3}", a.median / b.median) };
        out += &format!(
            "{:<10} {:<40} {:<14} {:>22} {:>22} {:>7} {:>7}\n",
            figure.transport,
            figure.metric,
            figure.column,
            fmt_summary(b),
            fmt_summary(a),
            ratio,
            format!("{wins}/{pairs}"),
        );
    }
    out += "\nratio: after's median over before's; better: pairs (the i-th run of each) in which after did better\n";
    out
}

/// `--compare`'s arguments: the before-files, `--`, the after-files.
pub fn run(args: &[String]) -> Result<(), BoxError> {
    const USAGE: &str = "usage: rpc-bench --compare BEFORE.json... -- AFTER.json...";
    let split = args.iter().position(|a| a == "--").ok_or(USAGE)?;
    let (before, after) = (&args[..split], &args[split + 1..]);
    if before.is_empty() || after.is_empty() {
        return Err(USAGE.into());
    }
    if before.len() != after.len() {
        return Err(format!(
            "{} runs before and {} after: the runs are compared in pairs, one of each build, made in turn",
            before.len(),
            after.len()
        )
        .into());
    }
    print!("{}", report(&load_all(before)?, &load_all(after)?));
    Ok(())
}

/// `--alternate`'s arguments, parsed.
#[derive(Debug, PartialEq)]
struct Alternate {
    before: PathBuf,
    pairs: usize,
    out: PathBuf,
    /// Passed to every run of both builds.
    run_options: Vec<String>,
}

const ALTERNATE_USAGE: &str = "usage: rpc-bench --alternate BEFORE_BINARY [--pairs N] [--out DIR] [run options]";

fn parse_alternate(args: &[String]) -> Result<Alternate, BoxError> {
    let (before, rest) = args.split_first().ok_or(ALTERNATE_USAGE)?;
    let mut parsed =
        Alternate { before: before.into(), pairs: 5, out: "target/bench/alternate".into(), run_options: Vec::new() };
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let mut value = || rest.next().ok_or_else(|| format!("{arg} needs a value\n{ALTERNATE_USAGE}"));
        match arg.as_str() {
            "--pairs" => parsed.pairs = value()?.parse().map_err(|e| format!("--pairs: {e}"))?,
            "--out" => parsed.out = value()?.into(),
            "--reps" | "--json" | "--svg" | "--sweep-svg" => {
                return Err(
                    format!("{arg}: --alternate sets it for each run (one repetition each, files in --out)").into()
                )
            }
            _ => parsed.run_options.push(arg.clone()),
        }
    }
    if parsed.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    Ok(parsed)
}

/// The order of the builds in pair `i` (from 0): before first in even pairs, after first in
/// odd ones, so that a machine that drifts over the session favours neither.
fn order(i: usize) -> [bool; 2] {
    if i % 2 == 0 {
        [false, true]
    } else {
        [true, false]
    }
}

/// `--alternate`: runs both builds `pairs` times in turn, then prints [`report`].
pub fn alternate(args: &[String]) -> Result<(), BoxError> {
    let options = parse_alternate(args)?;
    let after = std::env::current_exe()?;
    std::fs::create_dir_all(&options.out).map_err(|e| format!("{}: {e}", options.out.display()))?;
    let mut runs: [Vec<PathBuf>; 2] = [Vec::new(), Vec::new()];
    for i in 0..options.pairs {
        for is_after in order(i) {
            let (name, binary) = if is_after { ("after", &after) } else { ("before", &options.before) };
            let file = |ext: &str| options.out.join(format!("{name}-{}.{ext}", i + 1));
            let log = file("log");
            eprint!("pair {}/{}: {name} ... ", i + 1, options.pairs);
            let started = Instant::now();
            let output = Command::new(binary)
                .args(&options.run_options)
                .args(["--reps", "1", "--json"])
                .arg(file("json"))
                .arg("--svg")
                .arg(file("svg"))
                .arg("--sweep-svg")
                .arg(options.out.join(format!("{name}-{}-sweep.svg", i + 1)))
                .output()
                .map_err(|e| format!("{}: {e}", binary.display()))?;
            let mut text = output.stdout;
            text.extend_from_slice(&output.stderr);
            std::fs::write(&log, text)?;
            if !output.status.success() {
                return Err(format!("the {name}-build's run failed ({}): see {}", output.status, log.display()).into());
            }
            eprintln!("{:.0} s", started.elapsed().as_secs_f64());
            runs[usize::from(is_after)].push(file("json"));
        }
    }
    print!("{}", report(&load_all(&runs[0])?, &load_all(&runs[1])?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn median(values: &[Option<f64>]) -> Option<f64> {
        summarize(&present(values)).map(|s| s.median)
    }

    fn run(latency: f64, rate: f64, ring: Option<f64>) -> Value {
        let stat = |v: f64| json!({ "median": v, "min": v, "max": v, "reps": [v] });
        json!({
            "cross_cpu_round_trip_ns": { "ns": { "median": 66.0 } },
            "rows": [
                { "transport": "shm", "metric": "latency_median_us", "lower_is_better": true,
                  "ours": stat(latency), "raw": stat(0.14), "ring": ring.map(stat) },
                { "transport": "shm", "metric": "pipelined_64_kcalls_s", "lower_is_better": false,
                  "ours": stat(rate), "raw": null },
            ]
        })
    }

    #[test]
    fn medians_ratios_and_wins_follow_each_metric_s_direction() {
        let before = [run(0.8, 2000.0, Some(0.3)), run(0.7, 2100.0, Some(0.3)), run(0.9, 1900.0, Some(0.3))];
        let after = [run(0.6, 2200.0, None), run(0.75, 2000.0, None), run(0.65, 2300.0, None)];
        let figures = figures(&before, &after);
        let names: Vec<_> = figures.iter().map(|f| (f.metric.as_str(), f.column)).collect();
        // The ring column is on one side only: left out.
        assert_eq!(
            names,
            [("latency_median_us", "ours"), ("latency_median_us", "raw"), ("pipelined_64_kcalls_s", "ours")]
        );
        let latency = &figures[0];
        assert_eq!((median(&latency.before), median(&latency.after)), (Some(0.8), Some(0.65)));
        // Lower is better: after won the 1st and 3rd pairs.
        assert_eq!(latency.wins(), (2, 3));
        let rate = &figures[2];
        // Higher is better: after won the 1st and 3rd pairs, lost the 2nd.
        assert_eq!(rate.wins(), (2, 3));
        // Equal values are no win either way.
        assert_eq!(figures[1].wins(), (0, 3));
        let text = report(&before, &after);
        assert!(text.contains("cross-CPU round trip (ns), before: 66 66 66"), "{text}");
        let line = text.lines().find(|l| l.contains("pipelined_64_kcalls_s")).unwrap();
        assert!(
            line.contains("2000 [1900–2100]") && line.contains("2200 [2000–2300]") && line.contains("1.100"),
            "{line}"
        );
    }

    #[test]
    fn a_run_without_a_figure_is_no_pair() {
        let mut lacking = run(0.8, 2000.0, None);
        lacking["rows"][0]["ours"] = Value::Null;
        let figures = figures(&[run(0.8, 2000.0, None), lacking], &[run(0.7, 2000.0, None), run(0.6, 2000.0, None)]);
        assert_eq!(figures[0].wins(), (1, 1));
        assert_eq!(median(&figures[0].before), Some(0.8));
        assert_eq!(median(&[Some(1.0), Some(3.0)]), Some(2.0));
        assert_eq!(median(&[None]), None);
    }

    #[test]
    fn alternate_takes_its_own_options_and_passes_the_rest_to_every_run() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse_alternate(&args(&["/tmp/old", "--pin", "--pairs", "3", "--only", "shm", "--out", "x"]));
        assert_eq!(
            parsed.unwrap(),
            Alternate {
                before: "/tmp/old".into(),
                pairs: 3,
                out: "x".into(),
                run_options: args(&["--pin", "--only", "shm"]),
            }
        );
        assert_eq!(parse_alternate(&args(&["/tmp/old"])).unwrap().pairs, 5);
        for refused in
            [&["/tmp/old", "--reps", "3"][..], &["/tmp/old", "--json", "a.json"], &["/tmp/old", "--pairs", "0"]]
        {
            assert!(parse_alternate(&args(refused)).is_err(), "{refused:?}");
        }
        assert!(parse_alternate(&[]).is_err());
        // Before first, then after first: four pairs are two of each.
        assert_eq!((0..4).map(order).collect::<Vec<_>>(), [[false, true], [true, false], [false, true], [true, false]]);
    }

    #[test]
    fn unequal_or_missing_sides_are_refused() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(super::run(&args(&["a.json", "b.json"])).is_err(), "no --");
        assert!(super::run(&args(&["--", "b.json"])).is_err(), "nothing before");
        let err = super::run(&args(&["a.json", "--", "b.json", "c.json"])).unwrap_err();
        assert!(err.to_string().contains("1 runs before and 2 after"), "{err}");
        let err = super::run(&args(&["/nonexistent/a.json", "--", "/nonexistent/b.json"])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/a.json"), "{err}");
    }
}
