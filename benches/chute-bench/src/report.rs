//! Measurements and how they are reported: a [`Series`] of repeated runs, its
//! median and spread, its ratio to the baseline, and markdown [`Table`]s ready
//! for `doc/BENCHMARKING.md`.

use std::time::Duration;

/// Bytes moved and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub bytes: u64,
    pub secs: f64,
}

impl Measure {
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs.max(1e-9) / 1e6
    }
}

/// One measurement repeated: each run is printed as it ends, the median is
/// what the tables report, with the spread beside it.
#[derive(Debug, Clone, Default)]
pub struct Series(Vec<Measure>);

impl Series {
    pub fn push(&mut self, dataset: &str, what: &str, m: Measure) {
        println!(
            "  {dataset:<16} {what:<34} run {}: {:>6.0} MB/s ({:.2} s)",
            self.0.len() + 1,
            m.mb_s(),
            m.secs
        );
        self.0.push(m);
    }

    fn rates(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.0.iter().map(Measure::mb_s).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    /// Median MB/s.
    pub fn median(&self) -> f64 {
        median_of(self.rates())
    }

    /// Median seconds of one run.
    pub fn median_secs(&self) -> f64 {
        let mut s: Vec<f64> = self.0.iter().map(|m| m.secs).collect();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    }

    pub fn spread(&self) -> (f64, f64) {
        let r = self.rates();
        (
            r.first().copied().unwrap_or(0.0),
            r.last().copied().unwrap_or(0.0),
        )
    }

    /// How this series compares with another. Runs made in pairs (the same
    /// count, run i of each made back to back) are compared pair by pair and
    /// the median of those ratios taken: the machine's speed drifts between
    /// pairs more than within one. Otherwise, the ratio of the medians.
    pub fn ratio(&self, other: &Series) -> f64 {
        if self.0.len() == other.0.len() && !self.0.is_empty() {
            return median_of(
                self.0
                    .iter()
                    .zip(&other.0)
                    .map(|(a, b)| a.mb_s() / b.mb_s().max(1e-9))
                    .collect(),
            );
        }
        self.median() / other.median().max(1e-9)
    }

    pub fn runs(&self) -> usize {
        self.0.len()
    }
}

/// The median (the mean of the middle two for an even count; 0 for none).
pub fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of some durations (the upper middle one for an even count).
pub fn median_duration(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A result table: one row per (dataset, tool), medians over the runs, with
/// the ratio to the baseline (see [`Series::ratio`]).
pub struct Table {
    title: String,
    rows: Vec<(String, String, Series, Series)>,
}

impl Table {
    pub fn new(title: &str) -> Table {
        Table {
            title: title.to_owned(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, dataset: &str, tool: &str, m: &Series, baseline: &Series) {
        self.rows.push((
            dataset.to_owned(),
            tool.to_owned(),
            m.clone(),
            baseline.clone(),
        ));
    }

    /// Markdown, ready for the benchmarking doc.
    pub fn print(&self) {
        println!("\n{}\n", self.title);
        println!(
            "| dataset | tool | MB/s (median) | min–max | runs | seconds (median) | × baseline |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (d, tool, m, b) in &self.rows {
            let (lo, hi) = m.spread();
            println!(
                "| {d} | {tool} | {:.0} | {lo:.0}–{hi:.0} | {} | {:.2} | {:.2} |",
                m.median(),
                m.runs(),
                m.median_secs(),
                m.ratio(b)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_paired_ratios() {
        assert_eq!(median_of(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_of(Vec::new()), 0.0);
        let m = |bytes, secs| Measure { bytes, secs };
        let a = Series(vec![m(200, 1.0), m(100, 1.0), m(300, 1.0)]);
        let b = Series(vec![m(100, 1.0), m(100, 1.0), m(100, 1.0)]);
        // Pairwise: 2, 1, 3 → median 2.
        assert!((a.ratio(&b) - 2.0).abs() < 1e-9);
        assert_eq!(a.spread(), (100e-6, 300e-6));
    }
}
