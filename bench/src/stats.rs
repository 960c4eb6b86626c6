//! Percentiles (nearest rank), latency summaries and medians.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram keeps, in microseconds (10 minutes).
pub const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    let _ = h.record(micros.clamp(1, MAX_MICROS));
}

/// The nearest-rank percentile `p` (0–100) of sorted samples: the smallest
/// sample such that at least `p` % of the samples are ≤ it.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || p.is_nan() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let n = sorted.len();
    // Rank in 1..=n; p = 0 gives the minimum.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// The median of values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `a / b`, when both are finite and `b` is not zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b != 0.0).then(|| a / b)
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pcts {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Pcts {
    /// From samples in microseconds (sorted here).
    pub fn from_micros(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let pick = |p| ms(percentile_sorted(samples, p).unwrap_or(0));
        let sum: u128 = samples.iter().map(|&x| u128::from(x)).sum();
        Self {
            count: samples.len() as u64,
            p50_ms: pick(50.0),
            p95_ms: pick(95.0),
            p99_ms: pick(99.0),
            max_ms: ms(*samples.last().unwrap_or(&0)),
            mean_ms: sum as f64 / samples.len() as f64 / 1000.0,
        }
    }

    /// From a histogram in microseconds.
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 95.0), Some(95));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&v, 0.5), Some(1));
        assert_eq!(percentile_sorted(&v, 99.1), Some(100));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 1.0), Some(7));
        assert_eq!(percentile_sorted(&[7], 99.0), Some(7));
        // Out-of-range percentiles are clamped.
        assert_eq!(percentile_sorted(&v, 150.0), Some(100));
        assert_eq!(percentile_sorted(&v, -3.0), Some(1));
        assert_eq!(percentile_sorted(&v, f64::NAN), None);
    }

    #[test]
    fn small_sets() {
        let v = [10, 20, 30, 40];
        assert_eq!(percentile_sorted(&v, 25.0), Some(10));
        assert_eq!(percentile_sorted(&v, 50.0), Some(20));
        assert_eq!(percentile_sorted(&v, 51.0), Some(30));
        assert_eq!(percentile_sorted(&v, 95.0), Some(40));
    }

    #[test]
    fn pcts_from_unsorted_micros() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1000).collect();
        let p = Pcts::from_micros(&mut v);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p95_ms, 950.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.max_ms, 1000.0);
        assert!((p.mean_ms - 500.5).abs() < 1e-9);
        assert_eq!(Pcts::from_micros(&mut []), Pcts::default());
    }

    #[test]
    fn histogram_agrees_with_exact() {
        let mut h = histogram();
        let mut v = Vec::new();
        for i in 1..=10_000u64 {
            let x = i * 37 % 9_973 + 1;
            record(&mut h, x);
            v.push(x);
        }
        let exact = Pcts::from_micros(&mut v);
        let approx = Pcts::from_hist(&h);
        assert_eq!(approx.count, exact.count);
        for (a, e) in [
            (approx.p50_ms, exact.p50_ms),
            (approx.p95_ms, exact.p95_ms),
            (approx.p99_ms, exact.p99_ms),
        ] {
            assert!((a - e).abs() <= e * 0.002 + 0.001, "{a} vs {e}");
        }
        // Values beyond the range are clamped, not lost.
        record(&mut h, u64::MAX);
        record(&mut h, 0);
        assert_eq!(h.len(), 10_002);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(ratio(10.0, 2.0), Some(5.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }
}
