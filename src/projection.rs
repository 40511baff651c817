//! The class means of a [`ClassStats`] on their first two principal axes: the PCA of the `C`
//! centred class means, as drawn by [`MeanGeometryPlot`](crate::plot::MeanGeometryPlot).
//!
//! ```text
//! Ṁ = [μ_c − μ_G]_c = U S Vᵀ          (d × C, thin SVD: Householder QR + one-sided Jacobi)
//! u_k = Ṁ v_k / s_k,  k = 1, 2         principal axes of the centred means
//! mean c ↦ ((μ_c − μ_G)·u_1, (μ_c − μ_G)·u_2) = (s_1 v_1[c], s_2 v_2[c])
//! v      ↦ (v·u_1, v·u_2)              any vector of the feature space (a centred sample h_i − μ_G,
//!                                       a classifier row w_c, …)
//! ```
//!
//! The SVD is of the `d × C` matrix `Ṁ`, in `O(d·C²)`; no `d × d` matrix is formed. The share of
//! `‖Ṁ‖²_F = Σ s_k²` an axis holds is `s_k² / Σ s_k²` (a simplex ETF spreads it evenly over
//! `C − 1` axes).
//!
//! ```
//! use ndarray::array;
//! use neural_collapse::prelude::*;
//! use neural_collapse::projection::MeanProjection;
//!
//! let x = array![[1.0f32, 0.0], [3.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]];
//! let stats = ClassStats::from_data(x.view(), &[0, 0, 1, 2])?;
//! let p = MeanProjection::new(&stats, GlobalMean::ClassMeans)?;
//! // The means span a plane: it holds all of ‖Ṁ‖²_F, and projected distances are exact.
//! assert!((p.share(0) + p.share(1) - 1.0).abs() < 1e-12);
//! let m = p.means();
//! let d01 = ((m[0].0 - m[1].0).powi(2) + (m[0].1 - m[1].1).powi(2)).sqrt();
//! assert!((d01 - 13f64.sqrt()).abs() < 1e-9); // ‖μ_0 − μ_1‖ = ‖(2, 0) − (−1, 2)‖
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::{Array1, Array2, ArrayView1};
use thiserror::Error;

use crate::stats::{ClassStats, GlobalMean};

/// Why the class means cannot be projected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A class without samples (its mean, and the global mean, are undefined).
    #[error("class {class} of {classes} has no samples")]
    EmptyClass {
        /// The first empty class.
        class: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A centred class mean is NaN or infinite (not produced by the checked constructors of
    /// [`ClassStats`], which reject non-finite features).
    #[error("the centred class means are not finite")]
    NonFinite,
    /// Every class mean equals the global mean: `Ṁ = 0` has no principal axes.
    #[error("all class means coincide: nothing to project")]
    Coincident,
}

/// The centred class means `μ_c − μ_G` of a [`ClassStats`] and their first two principal
/// axes; see the [module docs](self) for the formulas.
#[derive(Debug, Clone)]
pub struct MeanProjection {
    /// `C × d`: row `c` is `μ_c − μ_G` (the transpose of `Ṁ`).
    centered: Array2<f64>,
    /// Singular values of `Ṁ`, decreasing (`min(d, C)` of them).
    singular_values: Array1<f64>,
    /// `Σ s_k² = ‖Ṁ‖²_F`.
    total: f64,
    /// `u_1`, `u_2` (unit vectors of length `d`); an axis whose singular value is below
    /// `1e-12 · s_1` (or missing, for `d = 1` or `C = 2`) is the zero vector.
    axes: [Array1<f64>; 2],
}

impl MeanProjection {
    /// The principal plane of the class means of `stats`, centred by `global_mean`.
    ///
    /// # Errors
    /// [`ProjectionError::EmptyClass`], [`ProjectionError::NonFinite`],
    /// [`ProjectionError::Coincident`] when all class means coincide. (A [`ClassStats`] has at
    /// least 2 classes.)
    pub fn new(stats: &ClassStats, global_mean: GlobalMean) -> Result<Self, ProjectionError> {
        if let Some(class) = stats.first_empty_class() {
            return Err(ProjectionError::EmptyClass {
                class,
                classes: stats.classes(),
            });
        }
        let centered = stats.centered_means(global_mean); // C × d
        if centered.iter().any(|v| !v.is_finite()) {
            return Err(ProjectionError::NonFinite);
        }
        let svd = crate::linalg::thin_svd(centered.t());
        let total: f64 = svd.s.iter().map(|s| s * s).sum();
        if total <= 0.0 {
            return Err(ProjectionError::Coincident);
        }
        let s_max = svd.s[0];
        let axis = |k: usize| {
            let s = svd.s.get(k).copied().unwrap_or(0.0);
            if k < svd.v.ncols() && s > 1e-12 * s_max {
                centered.t().dot(&svd.v.column(k)) / s
            } else {
                Array1::zeros(stats.dim())
            }
        };
        let axes = [axis(0), axis(1)];
        Ok(MeanProjection {
            singular_values: svd.s,
            centered,
            total,
            axes,
        })
    }

    /// Coordinates `(v·u_1, v·u_2)` of a vector of the feature space (length `d`). Centre a
    /// sample first (`h_i − μ_G`) to place it with the means.
    ///
    /// # Panics
    /// If `v` does not have length `d`.
    pub fn project(&self, v: ArrayView1<'_, f64>) -> (f64, f64) {
        (v.dot(&self.axes[0]), v.dot(&self.axes[1]))
    }

    /// The projected centred class means, one `(x, y)` per class.
    pub fn means(&self) -> Vec<(f64, f64)> {
        self.centered
            .outer_iter()
            .map(|m| self.project(m))
            .collect()
    }

    /// The centred class means `μ_c − μ_G` as a `C × d` matrix.
    pub fn centered_means(&self) -> &Array2<f64> {
        &self.centered
    }

    /// The principal axes `u_1`, `u_2` (see [`MeanProjection`] for the zero-vector case).
    pub fn axes(&self) -> &[Array1<f64>; 2] {
        &self.axes
    }

    /// Singular values of `Ṁ`, decreasing.
    pub fn singular_values(&self) -> &Array1<f64> {
        &self.singular_values
    }

    /// `‖Ṁ‖²_F = Σ_c ‖μ_c − μ_G‖² = Σ s_k²`.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Share of `‖Ṁ‖²_F` along axis `k` (0-based): `s_k² / Σ s_j²`; 0 beyond the last axis.
    pub fn share(&self, k: usize) -> f64 {
        self.singular_values
            .get(k)
            .map_or(0.0, |s| s * s / self.total)
    }
}

// Defined here rather than in `stats` so that the statistics stay free of the SVD; rustdoc lists
// it with the other methods of `ClassStats`.
impl ClassStats {
    /// The class means on their first two principal axes ([`MeanProjection::new`]).
    ///
    /// # Errors
    /// As [`MeanProjection::new`].
    pub fn mean_projection(
        &self,
        global_mean: GlobalMean,
    ) -> Result<MeanProjection, ProjectionError> {
        MeanProjection::new(self, global_mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    fn stats(x: Array2<f32>, labels: &[u32]) -> ClassStats {
        ClassStats::from_data(x.view(), labels).unwrap()
    }

    #[test]
    fn simplex_etf_spreads_evenly() {
        // Three classes at the vertices of an equilateral triangle in 3-d (z = 0).
        let h = 3f32.sqrt() / 2.0;
        let x = array![[1.0f32, 0.0, 0.0], [-0.5, h, 0.0], [-0.5, -h, 0.0]];
        let p = stats(x, &[0, 1, 2])
            .mean_projection(GlobalMean::ClassMeans)
            .unwrap();
        assert!((p.share(0) - 0.5).abs() < 1e-6, "{}", p.share(0));
        assert!((p.share(1) - 0.5).abs() < 1e-6);
        assert_eq!(p.share(5), 0.0);
        // Projected means keep their norms (1) and pairwise cosines (−1/2).
        let m = p.means();
        for &(a, b) in &m {
            assert!(((a * a + b * b).sqrt() - 1.0).abs() < 1e-6);
        }
        let cos = m[0].0 * m[1].0 + m[0].1 * m[1].1;
        assert!((cos + 0.5).abs() < 1e-6);
        assert!((p.total() - 3.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let same = array![[1.0f32, 2.0], [1.0, 2.0]];
        assert_eq!(
            MeanProjection::new(&stats(same, &[0, 1]), GlobalMean::ClassMeans).unwrap_err(),
            ProjectionError::Coincident
        );
        let empty = ClassStats::new(3, 2).unwrap();
        assert_eq!(
            MeanProjection::new(&empty, GlobalMean::SampleWeighted).unwrap_err(),
            ProjectionError::EmptyClass {
                class: 0,
                classes: 3
            }
        );
    }

    #[test]
    fn two_classes_have_one_axis() {
        let x = array![[0.0f32, 0.0], [2.0, 2.0]];
        let p = MeanProjection::new(&stats(x, &[0, 1]), GlobalMean::ClassMeans).unwrap();
        assert!((p.share(0) - 1.0).abs() < 1e-12);
        assert!(p.axes()[1].iter().all(|v| *v == 0.0));
        let m = p.means();
        assert!((m[0].0 + m[1].0).abs() < 1e-12 && m[0].1 == 0.0);
    }
}
