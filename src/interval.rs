//! Confidence intervals for a mean over a few values (seeds): Student's t and the percentile
//! bootstrap.
//!
//! A leaf module: it imports only the crate's seeded generator ([`SplitMix64`]). [`crate::study`] uses it to summarise a
//! statistic over the seeds of a study; the findings' criteria quote its intervals.
//!
//! # Which interval
//!
//! * [`t_interval`] (the default of the studies): `x̄ ± t_{n−1, (1+level)/2} · s/√n`, with `s`
//!   the sample standard deviation (divisor `n − 1`). Exact for normal values; with five seeds it
//!   is the honest choice, since a bootstrap over five values cannot see beyond their range.
//! * [`bootstrap_interval`]: the percentile bootstrap of the mean (`resamples` draws of `n` values
//!   with replacement, seeded; the interval is the `(1−level)/2` and `(1+level)/2` empirical
//!   quantiles of the resampled means, by the "nearest rank" rule). Offered for comparison and
//!   for statistics far from normal.
//!
//! Undefined is not zero: fewer than two finite values give an interval of `NaN` bounds (and
//! `mean` is `NaN` for none), never a zero-width interval.

use std::fmt;

use crate::datasets::SplitMix64;

/// How an [`Interval`] was computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntervalMethod {
    /// Student's t interval of the mean.
    StudentT,
    /// Percentile bootstrap of the mean, with the number of resamples and the seed.
    Bootstrap {
        /// Number of resamples.
        resamples: usize,
        /// Seed of the resampling.
        seed: u64,
    },
}

impl fmt::Display for IntervalMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntervalMethod::StudentT => write!(f, "t interval"),
            IntervalMethod::Bootstrap { resamples, .. } => {
                write!(f, "percentile bootstrap, {resamples} resamples")
            }
        }
    }
}

/// A mean with a two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Mean of the finite values (`NaN` when there are none).
    pub mean: f64,
    /// Lower bound (`NaN` with fewer than 2 finite values).
    pub lo: f64,
    /// Upper bound (`NaN` with fewer than 2 finite values).
    pub hi: f64,
    /// Number of finite values used (non-finite values are left out).
    pub n: usize,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// How the bounds were computed.
    pub method: IntervalMethod,
}

impl Interval {
    /// Whether the whole interval lies above `x` (false when the bounds are undefined).
    pub fn excludes_below(&self, x: f64) -> bool {
        self.lo > x
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.4} [{:.4}, {:.4}] ({:.0} % {}, n = {})",
            self.mean,
            self.lo,
            self.hi,
            100.0 * self.level,
            self.method,
            self.n
        )
    }
}

fn finite(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Student's t interval of the mean of the finite `values` at confidence `level` (in (0, 1)).
///
/// ```text
/// x̄ ± t_{n−1, (1+level)/2} · s / √n,   s² = Σ (x_i − x̄)² / (n − 1)
/// ```
///
/// Fewer than 2 finite values, or a `level` outside (0, 1), give `NaN` bounds.
///
/// ```
/// use neural_collapse::interval::t_interval;
/// // n = 2, level 0.95: t_{1, 0.975} = tan(0.475 π) = 12.7062…, s/√n = 0.5.
/// let i = t_interval(&[1.0, 2.0], 0.95);
/// assert!((i.hi - (1.5 + 0.5 * 12.706204736174707)).abs() < 1e-9);
/// ```
pub fn t_interval(values: &[f64], level: f64) -> Interval {
    let v = finite(values);
    let n = v.len();
    let m = mean(&v);
    let (lo, hi) = if n >= 2 && level > 0.0 && level < 1.0 {
        let s2 = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
        let half = student_t_quantile(0.5 + level / 2.0, (n - 1) as f64) * (s2 / n as f64).sqrt();
        (m - half, m + half)
    } else {
        (f64::NAN, f64::NAN)
    };
    Interval {
        mean: m,
        lo,
        hi,
        n,
        level,
        method: IntervalMethod::StudentT,
    }
}

/// Percentile bootstrap interval of the mean of the finite `values`: `resamples` means of `n`
/// values drawn with replacement ([`SplitMix64`] seeded with `seed`, unbiased indices), sorted; the bounds are the
/// resampled means of rank `⌈r·(1−level)/2⌉` and `⌈r·(1+level)/2⌉` (1-based, clamped to 1..=r).
///
/// Fewer than 2 finite values, no resamples, or a `level` outside (0, 1) give `NaN` bounds.
///
/// ```
/// use neural_collapse::interval::bootstrap_interval;
/// let i = bootstrap_interval(&[3.0, 3.0, 3.0], 0.95, 1000, 7);
/// assert_eq!((i.lo, i.mean, i.hi), (3.0, 3.0, 3.0));
/// ```
pub fn bootstrap_interval(values: &[f64], level: f64, resamples: usize, seed: u64) -> Interval {
    let v = finite(values);
    let n = v.len();
    let m = mean(&v);
    let method = IntervalMethod::Bootstrap { resamples, seed };
    if n < 2 || resamples == 0 || !(level > 0.0 && level < 1.0) {
        return Interval {
            mean: m,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
            level,
            method,
        };
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..n {
                s += v[rng.below(n as u64) as usize];
            }
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let rank = |q: f64| -> usize {
        let r = (q * resamples as f64).ceil() as usize;
        r.clamp(1, resamples) - 1
    };
    Interval {
        mean: m,
        lo: means[rank((1.0 - level) / 2.0)],
        hi: means[rank((1.0 + level) / 2.0)],
        n,
        level,
        method,
    }
}

/// The quantile `t_{df, p}` of Student's t distribution with `df > 0` degrees of freedom, for
/// `p` in (0, 1): the `t` with `P(T ≤ t) = p`. Solved by bisection on [`student_t_cdf`] to
/// 1e-12 relative; `NaN` outside the domain.
///
/// ```
/// use neural_collapse::interval::student_t_quantile;
/// // df = 1 is the Cauchy distribution: t = tan(π (p − ½)).
/// let p: f64 = 0.975;
/// let exact = (std::f64::consts::PI * (p - 0.5)).tan();
/// assert!((student_t_quantile(p, 1.0) - exact).abs() < 1e-9);
/// ```
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && df > 0.0 && df.is_finite()) {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    // Bracket: the t quantile grows without bound as p → 1; double until the CDF passes p.
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while student_t_cdf(hi, df) < p {
        lo = hi;
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    for _ in 0..400 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi.abs().max(1e-300) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The distribution function of Student's t with `df` degrees of freedom:
///
/// ```text
/// P(T ≤ t) = 1 − ½ I_{df/(df+t²)}(df/2, ½)   for t ≥ 0 (and by symmetry for t < 0),
/// ```
///
/// with `I` the regularised incomplete beta function (continued fraction, Lentz's method).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() || !(df > 0.0) {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    let x = df / (df + t * t);
    let tail = 0.5 * regularized_incomplete_beta(x, df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(π x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `I_x(a, b)`, the regularised incomplete beta function, for `x` in [0, 1] and `a, b > 0`.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1)/(a + b + 2); else use the symmetry.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(x, a, b) / a
    } else {
        1.0 - front * beta_cf(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One step of the modified Lentz recurrence with coefficient `aa`: updates `d` and `c` and
    // returns the factor by which the fraction's value changes.
    let step = |d: &mut f64, c: &mut f64, aa: f64| -> f64 {
        *d = 1.0 + aa * *d;
        if d.abs() < TINY {
            *d = TINY;
        }
        *c = 1.0 + aa / *c;
        if c.abs() < TINY {
            *c = TINY;
        }
        *d = 1.0 / *d;
        *d * *c
    };
    for m in 1..=10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        h *= step(&mut d, &mut c, m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(
            &mut d,
            &mut c,
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        );
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// df = 2 has a closed-form quantile: t = (2p − 1) / √(2 p (1 − p)).
    #[test]
    fn t_quantile_df2_closed_form() {
        for p in [0.6_f64, 0.9, 0.975, 0.995, 0.9999] {
            let exact = (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
            let got = student_t_quantile(p, 2.0);
            assert!(
                (got - exact).abs() < 1e-9 * exact.abs(),
                "p {p}: {got} vs {exact}"
            );
        }
    }

    /// df = 1 (Cauchy): t = tan(π(p − ½)); symmetry for p < ½.
    #[test]
    fn t_quantile_cauchy_and_symmetry() {
        for p in [0.01_f64, 0.3, 0.7, 0.975] {
            let exact = (std::f64::consts::PI * (p - 0.5)).tan();
            let got = student_t_quantile(p, 1.0);
            assert!(
                (got - exact).abs() < 1e-9 * exact.abs().max(1.0),
                "p {p}: {got} vs {exact}"
            );
        }
    }

    /// df → ∞ tends to the normal quantile 1.959964; df = 4 matches the printed table (2.776445).
    #[test]
    fn t_quantile_tables() {
        assert!((student_t_quantile(0.975, 1e7) - 1.959_963_985).abs() < 1e-5);
        assert!((student_t_quantile(0.975, 4.0) - 2.776_445_105).abs() < 1e-8);
        assert!(student_t_quantile(1.0, 4.0).is_nan());
        assert!(student_t_quantile(0.9, 0.0).is_nan());
    }

    /// A t interval of known data, by hand: values 1..=5, mean 3, s² = 2.5, n = 5,
    /// half-width t_{4, 0.975} · √(2.5/5).
    #[test]
    fn t_interval_hand_case() {
        let i = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95);
        let half = 2.776_445_105_197_799 * (0.5_f64).sqrt();
        assert!((i.mean - 3.0).abs() < 1e-15);
        assert!((i.lo - (3.0 - half)).abs() < 1e-9 && (i.hi - (3.0 + half)).abs() < 1e-9);
        assert_eq!(i.n, 5);
    }

    /// Non-finite values are left out; fewer than two values leave the bounds undefined.
    #[test]
    fn undefined_is_nan_not_zero() {
        let i = t_interval(&[2.0, f64::NAN], 0.95);
        assert_eq!((i.n, i.mean), (1, 2.0));
        assert!(i.lo.is_nan() && i.hi.is_nan());
        let e = t_interval(&[], 0.95);
        assert!(e.mean.is_nan());
        assert!(bootstrap_interval(&[1.0], 0.95, 100, 1).lo.is_nan());
    }

    /// Two-point data {0, 1} repeated: the bootstrap mean of n draws is Binomial(n, ½)/n, so the
    /// percentile bounds must approach its 2.5 % and 97.5 % quantiles (computed exactly here).
    #[test]
    fn bootstrap_matches_binomial_quantiles() {
        let n = 20;
        let values: Vec<f64> = (0..n).map(|i| f64::from(i % 2 == 0)).collect();
        let i = bootstrap_interval(&values, 0.95, 200_000, 42);
        // Exact Binomial(20, ½) CDF.
        let mut cdf = Vec::new();
        let mut acc = 0.0;
        let mut c = 1.0_f64; // C(20, k)
        for k in 0..=n {
            if k > 0 {
                c = c * f64::from(n - k + 1) / f64::from(k);
            }
            acc += c / 2f64.powi(n);
            cdf.push(acc);
        }
        let q = |p: f64| cdf.iter().position(|&c| c >= p).unwrap() as f64 / f64::from(n);
        assert_eq!(i.lo, q(0.025));
        assert_eq!(i.hi, q(0.975));
        assert!((i.mean - 0.5).abs() < 1e-15);
    }

    /// The CDF and the quantile invert each other.
    #[test]
    fn cdf_quantile_roundtrip() {
        for df in [1.5, 3.0, 9.0, 30.0] {
            for p in [0.05, 0.5, 0.8, 0.99] {
                let t = student_t_quantile(p, df);
                assert!((student_t_cdf(t, df) - p).abs() < 1e-10, "df {df} p {p}");
            }
        }
    }
}
