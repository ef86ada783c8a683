//! Small statistics: mean, sample standard deviation, percentiles, and a
//! seeded paired bootstrap (splitmix64), so comparisons are reproducible
//! without a random-number crate.

/// Arithmetic mean; `None` for no values.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() { None } else { Some(xs.iter().sum::<f64>() / xs.len() as f64) }
}

/// Sample standard deviation (n − 1); 0 for a single value, `None` for none.
pub fn std_dev(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    if xs.len() < 2 {
        return Some(0.0);
    }
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64;
    Some(var.sqrt())
}

/// Percentile `p` (0–100) with linear interpolation between closest ranks
/// (numpy's default), so small samples do not jump between values.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(percentile_sorted(&v, p))
}

fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// splitmix64: tiny, fast and good enough for resampling indices; a fixed
/// seed makes every comparison reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`); Lemire's multiply-shift in
    /// 128 bits cannot overflow and its bias is negligible for dataset sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Seed of every bootstrap: fixed, so the same runs always give the same CI.
pub const BOOTSTRAP_SEED: u64 = 0x6d65_7368_6f70_7321;
/// Number of bootstrap resamples.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Resamples of a percentile statistic: each sorts two samples, so fewer
/// than for means keeps a large run's comparison quick.
pub const BOOTSTRAP_RESAMPLES_PERCENTILE: usize = 2_000;

/// The sorted means of `resamples` bootstrap resamples of `diffs` (paired
/// differences), from which any confidence interval can be read.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    means: Vec<f64>,
}

impl Bootstrap {
    /// Resamples `diffs` with replacement; `None` when there is nothing to
    /// resample.
    pub fn paired(diffs: &[f64], resamples: usize, seed: u64) -> Option<Self> {
        if diffs.is_empty() || resamples == 0 {
            return None;
        }
        let mut rng = SplitMix64::new(seed);
        let n = diffs.len();
        let mut means = Vec::with_capacity(resamples);
        for _ in 0..resamples {
            let mut sum = 0.0;
            for _ in 0..n {
                sum += diffs[rng.below(n)];
            }
            means.push(sum / n as f64);
        }
        means.sort_by(f64::total_cmp);
        Some(Self { means })
    }

    /// Paired bootstrap of any statistic of two paired samples: each
    /// resample draws row indices with replacement and evaluates
    /// `stat(a', b')` on the drawn rows of both. `None` when the samples
    /// are empty or of different lengths. Non-finite values of `stat` are
    /// kept at the ends of the sorted distribution.
    pub fn paired_statistic(
        a: &[f64],
        b: &[f64],
        resamples: usize,
        seed: u64,
        stat: impl Fn(&[f64], &[f64]) -> f64,
    ) -> Option<Self> {
        if a.is_empty() || a.len() != b.len() || resamples == 0 {
            return None;
        }
        let mut rng = SplitMix64::new(seed);
        let n = a.len();
        let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
        let mut means = Vec::with_capacity(resamples);
        for _ in 0..resamples {
            for i in 0..n {
                let j = rng.below(n);
                ra[i] = a[j];
                rb[i] = b[j];
            }
            means.push(stat(&ra, &rb));
        }
        means.sort_by(f64::total_cmp);
        Some(Self { means })
    }

    /// Bootstrap of a statistic of two independent samples (different
    /// requests, as in an A/B test): each resample draws each sample with
    /// replacement on its own and evaluates `stat(a', b')`. `None` when
    /// either is empty.
    pub fn unpaired_statistic(
        a: &[f64],
        b: &[f64],
        resamples: usize,
        seed: u64,
        stat: impl Fn(&[f64], &[f64]) -> f64,
    ) -> Option<Self> {
        if a.is_empty() || b.is_empty() || resamples == 0 {
            return None;
        }
        let mut rng = SplitMix64::new(seed);
        let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
        let mut means = Vec::with_capacity(resamples);
        for _ in 0..resamples {
            for x in ra.iter_mut() {
                *x = a[rng.below(a.len())];
            }
            for x in rb.iter_mut() {
                *x = b[rng.below(b.len())];
            }
            means.push(stat(&ra, &rb));
        }
        means.sort_by(f64::total_cmp);
        Some(Self { means })
    }

    /// The two-sided percentile interval at `confidence` (e.g. 0.95).
    pub fn interval(&self, confidence: f64) -> (f64, f64) {
        let alpha = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
        (percentile_sorted(&self.means, alpha * 100.0), percentile_sorted(&self.means, (1.0 - alpha) * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_percentiles() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mean(&xs), Some(2.5));
        assert!((std_dev(&xs).unwrap() - 1.290_994_448_735_805_6).abs() < 1e-12);
        assert_eq!(percentile(&xs, 50.0), Some(2.5));
        assert_eq!(percentile(&xs, 100.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(std_dev(&[7.0]), Some(0.0));
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_mean() {
        let diffs: Vec<f64> = (0..50).map(|i| (i % 5) as f64 * 0.1).collect();
        let a = Bootstrap::paired(&diffs, 2000, 7).unwrap().interval(0.95);
        let b = Bootstrap::paired(&diffs, 2000, 7).unwrap().interval(0.95);
        assert_eq!(a, b);
        let m = mean(&diffs).unwrap();
        assert!(a.0 < m && m < a.1, "{a:?} around {m}");
        let zero = Bootstrap::paired(&[0.0; 10], 100, 1).unwrap().interval(0.95);
        assert_eq!(zero, (0.0, 0.0));
    }

    #[test]
    fn paired_statistic_brackets_a_percentile_shift() {
        let a: Vec<f64> = (1..=100).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        let p95 = |x: &[f64]| percentile(x, 95.0).unwrap_or(0.0);
        let bs = Bootstrap::paired_statistic(&a, &b, 500, 3, |x, y| p95(y) - p95(x)).unwrap();
        let (lo, hi) = bs.interval(0.95);
        assert!((lo - 10.0).abs() < 1e-9 && (hi - 10.0).abs() < 1e-9, "a constant shift: [{lo}, {hi}]");
        assert!(Bootstrap::paired_statistic(&a, &b[..5], 10, 1, |_, _| 0.0).is_none());
        let noisy: Vec<f64> =
            a.iter().enumerate().map(|(i, x)| x + if i % 2 == 0 { 5.0 } else { -5.0 }).collect();
        let (lo, hi) =
            Bootstrap::paired_statistic(&a, &noisy, 500, 3, |x, y| p95(y) - p95(x)).unwrap().interval(0.95);
        assert!(lo <= hi && lo < 5.0 && hi > -5.0, "[{lo}, {hi}]");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::new(1);
        assert!((0..10_000).all(|_| r.below(3) < 3));
    }
}
