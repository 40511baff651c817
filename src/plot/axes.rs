//! Axes and ticks: [`Scale`], [`EpochAxis`], the tick engine (linear, log, `log10(epoch + 1)`,
//! categorical) and the plotters coordinate [`Ticked`] that puts ticks exactly where given.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// A value axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Logarithmic; every value must be `> 0` ([`PlotError::NonPositive`](super::PlotError::NonPositive) otherwise).
    #[default]
    Log,
    /// Linear.
    Linear,
    /// Logarithmic when every value is `> 0`, linear otherwise.
    Auto,
}

impl Scale {
    /// Whether the axis is logarithmic for these values.
    pub(super) fn is_log(self, values: impl IntoIterator<Item = f64>) -> bool {
        match self {
            Scale::Log => true,
            Scale::Linear => false,
            Scale::Auto => values.into_iter().all(|v| v > 0.0 || !v.is_finite()),
        }
    }
}

/// The epoch (x) axis; see the [module docs](crate::plot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpochAxis {
    /// `LogPlusOne` for checkpoints bunched early (largest ≥ 20, median ≤ largest / 5),
    /// `Linear` otherwise.
    #[default]
    Auto,
    /// Linear in the epoch.
    Linear,
    /// Position `log10(epoch + 1)`, labelled with epochs; epoch 0 sits at the left edge.
    LogPlusOne,
}

impl EpochAxis {
    pub(super) fn resolve(self, epochs: &[u32]) -> EpochAxis {
        match self {
            EpochAxis::Auto => {
                let mut e = epochs.to_vec();
                e.sort_unstable();
                let max = e.last().copied().unwrap_or(0);
                let median = e.get(e.len() / 2).copied().unwrap_or(0);
                if max >= 20 && median as f64 <= max as f64 / 5.0 {
                    EpochAxis::LogPlusOne
                } else {
                    EpochAxis::Linear
                }
            }
            other => other,
        }
    }

    pub(super) fn pos(self, epoch: u32) -> f64 {
        match self {
            EpochAxis::LogPlusOne => (epoch as f64 + 1.0).log10(),
            _ => epoch as f64,
        }
    }
}

/// An axis of a panel, in drawing coordinates (log10 of the value on a log axis).
#[derive(Debug, Clone)]
pub(super) struct AxisSpec {
    pub(super) label: String,
    pub(super) range: (f64, f64),
    pub(super) ticks: Vec<(f64, String)>,
    pub(super) minor: Vec<f64>,
}

/// `v` rounded for a tick label: plain decimals for `1e-3 ≤ |v| < 1e5`, `m×10ᵏ` otherwise.
pub(super) fn fmt_tick(v: f64, decimals: Option<usize>) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let k = (v.abs().log10() + 1e-9).floor() as i32;
    if (-3..5).contains(&k) {
        let d = decimals.unwrap_or_else(|| {
            // Up to 3 significant digits, trailing zeros trimmed.
            (2 - k).max(0) as usize
        });
        let s = format!("{v:.d$}");
        if decimals.is_none() && s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let m = v / 10f64.powi(k);
        let m_s = format!("{m:.1}");
        let m_s = m_s.trim_end_matches('0').trim_end_matches('.');
        if m_s == "1" {
            format!("10{}", superscript(k))
        } else if m_s == "-1" {
            format!("−10{}", superscript(k))
        } else {
            format!("{m_s}×10{}", superscript(k))
        }
    }
    .replace('-', "−")
}

pub(super) fn superscript(k: i32) -> String {
    k.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// A "nice" step (1, 2 or 5 × 10ᵏ) giving about `target` intervals over `span`: the nice
/// mantissa nearest (in ratio) to the raw step's.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let k = raw.log10().floor();
    let base = 10f64.powf(k);
    let m = raw / base;
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (m / a).ln().abs().total_cmp(&(m / b).ln().abs()))
        .unwrap_or(1.0);
    nice * base
}

/// Linear ticks within `[lo, hi]` (positions are values).
pub(super) fn linear_ticks(lo: f64, hi: f64, target: f64) -> Vec<(f64, String)> {
    let span = (hi - lo).abs().max(1e-12 * hi.abs().max(1.0));
    let step = nice_step(span, target);
    let decimals = (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    if last.saturating_sub(first) > 1000 {
        return Vec::new(); // a range beyond f64 precision: no ticks rather than millions
    }
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
            let label = if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3) {
                fmt_tick(v, None)
            } else {
                format!("{v:.decimals$}").replace('-', "−")
            };
            (v, label)
        })
        .collect()
}

/// Ticks of a log axis covering `[lo, hi]` in log10 space: majors (with labels) and minors.
pub(super) fn log_ticks(lo: f64, hi: f64) -> (Vec<(f64, String)>, Vec<f64>) {
    let eps = 1e-9;
    let k0 = (lo - eps).floor() as i32;
    let k1 = (hi + eps).ceil() as i32;
    let within = |p: f64| p >= lo - eps && p <= hi + eps;
    let candidates = |ms: &[f64]| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for k in k0..=k1 {
            for &m in ms {
                let v = m * 10f64.powi(k);
                let p = v.log10();
                if within(p) {
                    out.push((p, v));
                }
            }
        }
        out
    };
    let decades = candidates(&[1.0]);
    let all: Vec<f64> = (1..=9).map(f64::from).collect();
    let m125 = candidates(&[1.0, 2.0, 5.0]);
    let (major, minor_ms): (Vec<(f64, f64)>, Vec<f64>) = if decades.len() == 2 && m125.len() <= 8 {
        // About two decades: 1-2-5 ticks read better than two labels.
        (m125, vec![3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
    } else if decades.len() >= 2 {
        let stride = decades.len().div_ceil(7);
        let major: Vec<(f64, f64)> = decades
            .iter()
            .enumerate()
            .filter(|(i, (p, _))| {
                // Keep decades on a common grid so that labels read 10⁰, 10², 10⁴, …
                let k = p.round() as i64;
                let _ = i;
                k.rem_euclid(stride as i64) == 0
            })
            .map(|(_, &pv)| pv)
            .collect();
        let minor_ms = if hi - lo <= 6.0 {
            all[1..].to_vec()
        } else {
            vec![]
        };
        (major, minor_ms)
    } else {
        if m125.len() >= 4 {
            (m125, vec![3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
        } else {
            let m19 = candidates(&all);
            if m19.len() >= 3 {
                (m19, vec![])
            } else {
                // Less than a factor of ~2: linear ticks in value space.
                let (vlo, vhi) = (10f64.powf(lo), 10f64.powf(hi));
                let ticks = linear_ticks(vlo, vhi, 4.0)
                    .into_iter()
                    .filter(|(v, _)| *v > 0.0)
                    .map(|(v, l)| (v.log10(), l))
                    .collect();
                return (ticks, vec![]);
            }
        }
    };
    let ticks: Vec<(f64, String)> = major.iter().map(|&(p, v)| (p, fmt_tick(v, None))).collect();
    let mut minor: Vec<f64> = candidates(&minor_ms).into_iter().map(|(p, _)| p).collect();
    // Decades left out by the stride become minor lines.
    minor.extend(
        decades
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !ticks.iter().any(|(q, _)| (q - p).abs() < eps)),
    );
    (ticks, minor)
}

/// A value axis over `values` (already checked), padded by 5 % of the span.
pub(super) fn value_axis(label: String, values: &[f64], log: bool) -> AxisSpec {
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            let p = if log { v.log10() } else { v };
            (a.min(p), b.max(p))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.06 * span
    } else if log {
        0.3
    } else {
        0.1 * hi.abs().max(1.0)
    };
    let pad = if log { pad.max(0.05) } else { pad };
    let (lo, hi) = (lo - pad, hi + pad);
    let (ticks, minor) = if log {
        log_ticks(lo, hi)
    } else {
        (linear_ticks(lo, hi, 5.0), vec![])
    };
    AxisSpec {
        label,
        range: (lo, hi),
        ticks,
        minor,
    }
}

/// The epoch axis over `epochs`.
pub(super) fn epoch_axis(axis: EpochAxis, epochs: &[u32]) -> AxisSpec {
    let max = epochs.iter().copied().max().unwrap_or(0);
    let min = epochs.iter().copied().min().unwrap_or(0);
    match axis {
        EpochAxis::LogPlusOne => {
            let (lo, hi) = (axis.pos(min), axis.pos(max));
            let pad = 0.04 * (hi - lo).max(0.3);
            let mut candidates = vec![0u32];
            let mut base = 1u64;
            while base <= max as u64 {
                for m in [1u64, 2, 5] {
                    let e = m * base;
                    if e <= max as u64 && e >= min as u64 {
                        candidates.push(e as u32);
                    }
                }
                base *= 10;
            }
            candidates.retain(|&e| e >= min);
            if candidates.len() > 9 {
                candidates.retain(|&e| {
                    let s = e.to_string();
                    !s.starts_with('2') || e < 10
                });
            }
            // The last checkpoint gets a tick too unless one is close.
            if candidates
                .last()
                .is_some_and(|&c| axis.pos(max) - axis.pos(c) > 0.12)
            {
                candidates.push(max);
            }
            let ticks = candidates
                .into_iter()
                .map(|e| (axis.pos(e), e.to_string()))
                .collect();
            AxisSpec {
                label: "epoch (log scale of epoch + 1)".into(),
                range: (lo - pad, hi + pad),
                ticks,
                minor: vec![],
            }
        }
        _ => {
            let (lo, hi) = (min as f64, max as f64);
            let pad = 0.03 * (hi - lo).max(1.0);
            let step = nice_step((hi - lo).max(1.0), 6.0).max(1.0).round();
            let first = (lo / step).ceil() as i64;
            let last = (hi / step).floor() as i64;
            let ticks = (first..=last)
                .map(|i| {
                    let v = i as f64 * step;
                    (v, format!("{v:.0}"))
                })
                .collect();
            AxisSpec {
                label: "epoch".into(),
                range: (lo - pad, hi + pad),
                ticks,
                minor: vec![],
            }
        }
    }
}

/// A categorical axis: category `i` at position `i`.
pub(super) fn category_axis(label: String, names: &[String]) -> AxisSpec {
    AxisSpec {
        label,
        range: (-0.4, names.len() as f64 - 0.6),
        ticks: names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64, n.clone()))
            .collect(),
        minor: vec![],
    }
}

/// A linear f64 axis whose tick marks (bold) and light grid lines sit exactly where given.
#[derive(Debug, Clone)]
pub(super) struct Ticked {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) bold: Vec<f64>,
    pub(super) light: Vec<f64>,
}

impl Ticked {
    pub(super) fn new(range: (f64, f64), bold: Vec<f64>, light: Vec<f64>) -> Self {
        Ticked {
            lo: range.0,
            hi: range.1,
            bold,
            light,
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span == 0.0 || !span.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let t = ((*v - self.lo) / span).clamp(-10.0, 10.0);
        limit.0 + ((limit.1 - limit.0) as f64 * t + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

pub(super) fn tick_label(ticks: &[(f64, String)], v: f64) -> String {
    ticks
        .iter()
        .find(|(p, _)| (p - v).abs() <= 1e-9 * p.abs().max(1.0))
        .map(|(_, l)| l.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_log_axes() {
        // Four decades: labels at powers of ten.
        let (t, minor) = log_ticks(-3.1, 0.2);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.001", "0.01", "0.1", "1"]);
        assert!(!minor.is_empty());
        // Half a decade: 1-2-5 ticks.
        let (t, _) = log_ticks(0.1f64.log10(), 0.6f64.log10());
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]);
        // Tiny values are written with powers of ten.
        assert_eq!(fmt_tick(1e-6, None), "10⁻⁶");
        assert_eq!(fmt_tick(5e-6, None), "5×10⁻⁶");
        assert_eq!(fmt_tick(2e5, None), "2×10⁵");
        assert_eq!(fmt_tick(0.002, None), "0.002");
    }

    #[test]
    fn epoch_axis_choice() {
        let geometric = [0, 1, 2, 5, 10, 20, 50, 100, 200];
        assert_eq!(EpochAxis::Auto.resolve(&geometric), EpochAxis::LogPlusOne);
        let uniform: Vec<u32> = (0..=100).step_by(10).collect();
        assert_eq!(EpochAxis::Auto.resolve(&uniform), EpochAxis::Linear);
        let a = epoch_axis(EpochAxis::LogPlusOne, &geometric);
        assert_eq!(a.ticks[0], (0.0, "0".to_string()));
        assert!(a.range.0 < 0.0);
    }
}
