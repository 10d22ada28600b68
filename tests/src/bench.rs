//! One result format for every benchmark, so that `scripts/bench.sh` can print a single table
//! (benchmark, figure, floor, ratio, target, pass/fail) whatever bench produced the rows.
//!
//! Each bench prints its own detailed output and calls [`report`] once per headline figure.
//! When `CREDBROKER_BENCH_RESULTS` names a file, the row is also appended to it as one JSON
//! line; `scripts/bench.sh` sets it and renders the table from those lines.

use std::io::Write as _;

use serde::Serialize;

/// The environment variable naming the JSON-lines file rows are appended to.
pub const RESULTS_ENV: &str = "CREDBROKER_BENCH_RESULTS";

/// What a figure is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// `ratio` must be at most this.
    MaxRatio(f64),
    /// The figure (in its own unit) must be at most this; the ratio is informational.
    MaxFigure(f64),
    /// The figure (in its own unit) must be at least this.
    MinFigure(f64),
    /// Reported for context; nothing to pass.
    None,
}

/// One headline figure of a benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub benchmark: String,
    /// The measured value, in `unit`.
    pub figure: f64,
    /// The floor measured in the same run, in `unit` (`None` when the target is absolute).
    pub floor: Option<f64>,
    pub unit: String,
    pub target: Target,
    /// `true` when this was a smoke run (`cargo test`): figures mean nothing, pass is not judged.
    pub smoke: bool,
}

impl Row {
    pub fn new(
        benchmark: impl Into<String>,
        figure: f64,
        floor: Option<f64>,
        unit: &str,
        target: Target,
    ) -> Self {
        Self { benchmark: benchmark.into(), figure, floor, unit: unit.to_owned(), target, smoke: false }
    }

    /// `figure / floor`, when there is a floor.
    pub fn ratio(&self) -> Option<f64> {
        self.floor.filter(|floor| *floor > 0.0).map(|floor| self.figure / floor)
    }

    /// Whether the figure meets its target (`None` when there is nothing to judge).
    pub fn pass(&self) -> Option<bool> {
        if self.smoke {
            return None;
        }
        match self.target {
            Target::MaxRatio(max) => self.ratio().map(|ratio| ratio <= max),
            Target::MaxFigure(max) => Some(self.figure <= max),
            Target::MinFigure(min) => Some(self.figure >= min),
            Target::None => None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    row: &'a Row,
    ratio: Option<f64>,
    pass: Option<bool>,
}

/// Prints `row` as one line and appends it to the results file, if one is named. Panics if
/// the file cannot be written: a bench run whose results are lost must not look green.
pub fn report(row: &Row) {
    let ratio = row.ratio().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
    let verdict = match row.pass() {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "-",
    };
    println!(
        "result: {} = {:.3} {} (floor {}, ratio {ratio}, target {}) {verdict}",
        row.benchmark,
        row.figure,
        row.unit,
        row.floor.map_or_else(|| "-".to_owned(), |f| format!("{f:.3}")),
        describe(row.target, &row.unit),
    );
    let Ok(path) = std::env::var(RESULTS_ENV) else { return };
    let line = serde_json::to_string(&Line { row, ratio: row.ratio(), pass: row.pass() })
        .expect("a result row serializes");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {RESULTS_ENV}={path}: {e}"));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("cannot append to {path}: {e}"));
}

/// The target as the table shows it: `≤ 1.5x`, `≤ 32 MB`, `≥ 1000 mints/s`.
pub fn describe(target: Target, unit: &str) -> String {
    match target {
        Target::MaxRatio(max) => format!("≤ {max}x"),
        Target::MaxFigure(max) => format!("≤ {max} {unit}"),
        Target::MinFigure(min) => format!("≥ {min} {unit}"),
        Target::None => "-".to_owned(),
    }
}

/// The `q`-quantile (0.0–1.0, nearest rank) of `samples`, which it sorts.
// Sample counts are far below 2^52, and `rank` is within 0..len by construction.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    assert!(!samples.is_empty(), "quantile of no samples");
    samples.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * (samples.len() - 1) as f64).round();
    samples[rank as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_targets_pass_at_or_below_the_limit() {
        let row = |figure| Row::new("x", figure, Some(10.0), "ms", Target::MaxRatio(1.5));
        assert_eq!(row(15.0).pass(), Some(true));
        assert_eq!(row(15.1).pass(), Some(false));
        assert_eq!(
            Row::new("x", 1.0, None, "ms", Target::MaxRatio(1.5)).pass(),
            None,
            "no floor, no verdict"
        );
    }

    #[test]
    fn absolute_targets_ignore_the_floor() {
        assert_eq!(Row::new("rss", 31.0, Some(1.0), "MB", Target::MaxFigure(32.0)).pass(), Some(true));
        assert_eq!(Row::new("rss", 33.0, None, "MB", Target::MaxFigure(32.0)).pass(), Some(false));
        assert_eq!(Row::new("rate", 999.0, None, "/s", Target::MinFigure(1000.0)).pass(), Some(false));
        let mut smoke = Row::new("rate", 0.0, None, "/s", Target::MinFigure(1000.0));
        smoke.smoke = true;
        assert_eq!(smoke.pass(), None, "smoke runs are not judged");
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut samples = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert!((quantile(&mut samples, 0.5) - 3.0).abs() < f64::EPSILON);
        assert!((quantile(&mut samples, 0.95) - 5.0).abs() < f64::EPSILON);
        assert!((quantile(&mut samples, 0.0) - 1.0).abs() < f64::EPSILON);
    }
}
