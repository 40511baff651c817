//! [`MeanGeometryPlot`]: the centred class means on their first two principal axes.

use ndarray::Array1;
use plotters::style::RGBColor;

use crate::features::{Classifier, Features};
use crate::stats::{ClassStats, GlobalMean};

use super::axes::value_axis;
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::scene::{LegendEntry, Note, Panel, RefLine, Scene, Series, XyPanel};
use super::style::{viridis, Dash, Marker, Style, MUTED, PALETTE, TEXT};

/// Largest number of samples [`MeanGeometryPlot::samples`] draws.
pub const MAX_GEOMETRY_SAMPLES: usize = 5000;

/// The centred class means `μ_c − μ_G` projected on their first two principal axes, with the
/// classifier rows `w_c` and a seeded subsample of the samples when given.
///
/// ```text
/// Ṁ = [μ_c − μ_G]_c = U S Vᵀ          (d × C, thin SVD: Householder QR + one-sided Jacobi)
/// u_k = Ṁ v_k / s_k,  k = 1, 2         principal axes of the centred means
/// mean c   ↦ ((μ_c − μ_G)·u_1, (μ_c − μ_G)·u_2) = (s_1 v_1[c], s_2 v_2[c])
/// sample i ↦ ((h_i − μ_G)·u_1, (h_i − μ_G)·u_2)
/// row w_c  ↦ α (w_c·u_1, w_c·u_2),  α = ‖Ṁ‖_F / ‖W‖_F   (so W and Ṁ share a scale, as in NC3)
/// ```
///
/// This is the PCA of the `C` centred means computed with the crate's own SVD of the `d × C`
/// matrix `Ṁ` in `O(d·C²)` ([`MeanProjection`](crate::projection::MeanProjection)); no `d × d`
/// matrix is formed. The subtitle states the share of
/// `‖Ṁ‖²_F` the plane holds (`(s_1² + s_2²)/Σ s_k²`; a simplex ETF spreads it evenly, `2/(C−1)`)
/// and the mean pairwise cosine of the centred means next to the simplex-ETF value `−1/(C−1)`.
/// Axes have equal scales.
///
/// ```
/// use ndarray::array;
/// use neural_collapse::prelude::*;
///
/// let x = array![[1.0f32, 0.0], [0.9, 0.1], [-0.5, 0.9], [-0.4, 0.8], [-0.5, -0.9], [-0.6, -0.8]];
/// let f = Features::new(x, vec![0, 0, 1, 1, 2, 2]);
/// let fig = MeanGeometryPlot::from_features(&f).samples(6, 0).draw()?;
/// assert!(fig.svg().contains("−1/(C−1) = −0.5"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MeanGeometryPlot<'a> {
    stats: Option<&'a ClassStats>,
    features: Option<&'a Features>,
    classifier: Option<&'a Classifier>,
    samples: usize,
    seed: u64,
    global_mean: GlobalMean,
    class_names: Option<Vec<String>>,
    figure: FigureOptions,
}

impl<'a> MeanGeometryPlot<'a> {
    /// The geometry of the class means in `stats`.
    pub fn new(stats: &'a ClassStats) -> Self {
        MeanGeometryPlot {
            stats: Some(stats),
            ..MeanGeometryPlot::new_empty()
        }
    }

    /// The geometry of the class means of `features` (by `labels`), whose samples
    /// [`samples`](Self::samples) can show.
    pub fn from_features(features: &'a Features) -> Self {
        MeanGeometryPlot {
            features: Some(features),
            ..MeanGeometryPlot::new_empty()
        }
    }

    fn new_empty() -> Self {
        MeanGeometryPlot {
            stats: None,
            features: None,
            classifier: None,
            samples: 0,
            seed: 0,
            global_mean: GlobalMean::ClassMeans,
            class_names: None,
            figure: FigureOptions::default(),
        }
    }

    /// Also draw the classifier rows `w_c` (rescaled, see above).
    pub fn classifier(mut self, classifier: &'a Classifier) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Draw up to `max` samples (at most [`MAX_GEOMETRY_SAMPLES`]) chosen uniformly without
    /// replacement by a generator seeded with `seed` (only with
    /// [`from_features`](Self::from_features)).
    pub fn samples(mut self, max: usize, seed: u64) -> Self {
        self.samples = max;
        self.seed = seed;
        self
    }

    /// The global-mean convention (default: mean of the class means).
    pub fn global_mean(mut self, g: GlobalMean) -> Self {
        self.global_mean = g;
        self
    }

    /// Names printed next to the class means (default: the class index).
    pub fn class_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.class_names = Some(names.iter().map(|n| n.as_ref().to_string()).collect());
        self
    }

    figure_option_setters!("The title.", "Figure size in pixels (default 800 × 640).");

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for fewer than 2 classes, an empty class, non-finite features,
    /// coinciding class means, a classifier whose shape differs from `C × d` or is zero,
    /// class names of the wrong length, or samples requested without features.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let size = self.figure.size_or((800, 640))?;
        let invalid = |e: crate::stats::MetricError| PlotError::Invalid(e.to_string());
        let owned;
        let stats = match (self.stats, self.features) {
            (Some(s), _) => s,
            (None, Some(f)) => {
                owned = ClassStats::from_data(f.x.view(), &f.labels).map_err(invalid)?;
                &owned
            }
            (None, None) => return Err(PlotError::Invalid("no class statistics".into())),
        };
        let c = stats.classes();
        if c < 2 {
            return Err(PlotError::Invalid(format!(
                "class-mean geometry needs at least 2 classes, found {c}"
            )));
        }
        stats.require_all_classes().map_err(invalid)?;
        if stats.means().iter().any(|v| !v.is_finite()) {
            return Err(PlotError::Invalid("class means are not finite".into()));
        }
        if self.samples > 0 && self.features.is_none() {
            return Err(PlotError::Invalid(
                "samples need features: use MeanGeometryPlot::from_features".into(),
            ));
        }
        let names: Vec<String> = match &self.class_names {
            Some(n) if n.len() != c => {
                return Err(PlotError::Invalid(format!(
                    "{} class names for {c} classes",
                    n.len()
                )))
            }
            Some(n) => n.clone(),
            None => (0..c).map(|i| i.to_string()).collect(),
        };
        let projection = stats
            .mean_projection(self.global_mean)
            .map_err(|e| PlotError::Invalid(e.to_string()))?;
        let centered = projection.centered_means(); // C × d
        let total = projection.total();
        let project = |v: ndarray::ArrayView1<'_, f64>| projection.project(v);
        let means = projection.means();
        let share = |k: usize| projection.share(k);

        // Classifier rows, rescaled.
        let w_points: Option<Vec<(f64, f64)>> = match self.classifier {
            None => None,
            Some(cl) => {
                if cl.w.dim() != (c, stats.dim()) {
                    return Err(PlotError::Invalid(format!(
                        "classifier W is {} × {}, expected {c} × {} (classes × feature dimension)",
                        cl.w.nrows(),
                        cl.w.ncols(),
                        stats.dim()
                    )));
                }
                let fw = cl.w.iter().map(|v| v * v).sum::<f64>().sqrt();
                if !(fw.is_finite() && fw > 0.0) {
                    return Err(PlotError::Invalid(format!(
                        "classifier W has Frobenius norm {fw}; it cannot be rescaled"
                    )));
                }
                let alpha = total.sqrt() / fw;
                Some(
                    cl.w.outer_iter()
                        .map(|row| {
                            let (a, b) = project(row);
                            (alpha * a, alpha * b)
                        })
                        .collect(),
                )
            }
        };

        // Seeded subsample of the samples.
        let mut sample_points: Vec<Vec<(f64, f64)>> = vec![Vec::new(); c];
        let mut n_drawn = 0;
        let mut n_total = 0;
        if let (Some(f), true) = (self.features, self.samples > 0) {
            n_total = f.labels.len();
            let k = self.samples.min(MAX_GEOMETRY_SAMPLES).min(n_total);
            let mut idx: Vec<usize> = (0..n_total).collect();
            let mut rng = crate::probe::SplitMix64(self.seed);
            for i in 0..k {
                let j = i + rng.below(n_total - i);
                idx.swap(i, j);
            }
            let g = stats.global_mean(self.global_mean);
            for &i in &idx[..k] {
                let h: Array1<f64> = f.x.row(i).mapv(f64::from) - &g;
                let y = f.labels[i] as usize;
                if y < c {
                    sample_points[y].push(project(h.view()));
                }
            }
            n_drawn = k;
        }

        // Range: symmetric about μ_G, equal scales.
        let r = means
            .iter()
            .chain(w_points.iter().flatten())
            .chain(sample_points.iter().flatten())
            .map(|(a, b)| a.abs().max(b.abs()))
            .fold(0.0f64, f64::max);
        let r = if r > 0.0 { r * 1.15 } else { 1.0 };
        let axis = |k: usize| {
            let mut a = value_axis(
                format!(
                    "PC{} of the class means ({:.0}% of ‖μ_c − μ_G‖²)",
                    k + 1,
                    100.0 * share(k)
                ),
                &[-r, r],
                false,
            );
            a.range = (-r, r);
            a
        };
        let class_color = |i: usize| {
            if c <= PALETTE.len() {
                PALETTE[i]
            } else {
                viridis(0.9 * i as f64 / (c - 1) as f64)
            }
        };
        let mut series = Vec::new();
        for (i, pts) in sample_points.iter().enumerate() {
            if !pts.is_empty() {
                let mut st = Style::points(class_color(i), Marker::Dot, 1.8);
                st.alpha = 0.35;
                series.push(Series {
                    points: pts.clone(),
                    style: st,
                    band: vec![],
                });
            }
        }
        if let Some(w) = &w_points {
            for (i, &p) in w.iter().enumerate() {
                let mut line = Style::line(class_color(i), Dash::Dashed, Marker::None);
                line.width = 1.5;
                series.push(Series {
                    points: vec![(0.0, 0.0), p],
                    style: line,
                    band: vec![],
                });
                series.push(Series {
                    points: vec![p],
                    style: Style::points(class_color(i), Marker::Triangle, 5.0),
                    band: vec![],
                });
            }
        }
        for (i, &p) in means.iter().enumerate() {
            series.push(Series {
                points: vec![p],
                style: Style::points(class_color(i), Marker::Circle, 6.0),
                band: vec![],
            });
        }
        let notes = means
            .iter()
            .enumerate()
            .map(|(i, &p)| Note {
                at: p,
                text: names[i].clone(),
                color: TEXT,
            })
            .collect();
        let origin = Style {
            width: 1.0,
            ..Style::line(RGBColor(0xb0, 0xb0, 0xb0), Dash::Solid, Marker::None)
        };
        let mut legend = vec![LegendEntry::new(
            "class mean μ_c − μ_G",
            Style::points(TEXT, Marker::Circle, 6.0),
        )];
        if w_points.is_some() {
            legend.push(LegendEntry::new(
                "classifier row w_c (rescaled)",
                Style {
                    width: 1.5,
                    ..Style::line(TEXT, Dash::Dashed, Marker::Triangle)
                },
            ));
        }
        if n_drawn > 0 {
            let mut st = Style::points(MUTED, Marker::Dot, 2.0);
            st.alpha = 0.6;
            legend.push(LegendEntry::new(
                format!("{n_drawn} of {n_total} samples"),
                st,
            ));
        }
        // Mean pairwise cosine of the centred means vs the simplex ETF's −1/(C−1).
        let norms: Vec<f64> = centered.outer_iter().map(|m| m.dot(&m).sqrt()).collect();
        let mut cos_sum = 0.0;
        let mut pairs = 0usize;
        for a in 0..c {
            for b in a + 1..c {
                if norms[a] > 0.0 && norms[b] > 0.0 {
                    cos_sum += centered.row(a).dot(&centered.row(b)) / (norms[a] * norms[b]);
                    pairs += 1;
                }
            }
        }
        let mean_cos = if pairs > 0 {
            cos_sum / pairs as f64
        } else {
            f64::NAN
        };
        let etf = -1.0 / (c as f64 - 1.0);
        let subtitle = vec![
            format!(
                "C = {c}: mean cos(μ_c − μ_G, μ_c′ − μ_G) = {}; simplex ETF: −1/(C−1) = {}",
                fmt_signed(mean_cos),
                fmt_signed(etf)
            ),
            format!(
                "this plane holds {:.0}% of ‖μ_c − μ_G‖² (a simplex ETF: {:.0}%)",
                100.0 * (share(0) + share(1)),
                100.0 * (2.0 / (c as f64 - 1.0)).min(1.0)
            ),
        ];
        let title = self.figure.title.clone().unwrap_or_else(|| {
            let mut t = "Class-mean geometry".to_string();
            if let Some(f) = self.features {
                let mut parts = Vec::new();
                if let Some(l) = &f.layer {
                    parts.push(format!("layer {l}"));
                }
                if let Some(e) = f.epoch {
                    parts.push(format!("epoch {e}"));
                }
                if let Some(s) = &f.split {
                    parts.push(format!("{s} split"));
                }
                if !parts.is_empty() {
                    t.push_str(" — ");
                    t.push_str(&parts.join(", "));
                }
            }
            t
        });
        Figure::render(Scene {
            title,
            subtitle,
            width: size.0,
            height: size.1,
            panels: vec![Panel::Xy(XyPanel {
                title: None,
                x: axis(0),
                y: axis(1),
                series,
                lines: vec![
                    RefLine {
                        vertical: true,
                        at: 0.0,
                        style: origin,
                    },
                    RefLine {
                        vertical: false,
                        at: 0.0,
                        style: origin,
                    },
                ],
                notes,
                equal_aspect: true,
            })],
            columns: 1,
            legend,
        })
    }
}

/// A signed number with 3 decimals and a typographic minus.
fn fmt_signed(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.replace('-', "−")
}
