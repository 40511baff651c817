//! Cholesky solve of a symmetric positive definite system in f64.

use ndarray::{Array2, ArrayView2};

use super::LinalgError;

/// Solves `A X = B` for symmetric positive definite `A` (`d × d`; only its lower triangle is
/// read) by the factorisation `A = L Lᵀ` (`L` lower triangular with positive diagonal):
///
/// ```text
/// L_jj = √(A_jj − Σ_{k<j} L_jk²),   L_ij = (A_ij − Σ_{k<j} L_ik L_jk) / L_jj   (i > j)
/// L Y = B (forward),   Lᵀ X = Y (backward)
/// ```
///
/// A pivot `A_jj − Σ L_jk²` not above `tolerance · max_j A_jj` (including NaN) is
/// [`LinalgError::NotPositiveDefinite`] with the pivot's index and its value relative to
/// `max_j A_jj`; a non-square `A` or a `B` with other than `d` rows is [`LinalgError::Shape`].
/// Backward error: the computed `L` satisfies `L Lᵀ = A + E`, `|E| ≤ γ_{d+1} |L| |Lᵀ|`
/// (Higham, Accuracy and Stability, Thm 10.3), `γ_n = n u / (1 − n u)`, `u = 2⁻⁵³`.
pub fn cholesky_solve(
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    tolerance: f64,
) -> Result<Array2<f64>, LinalgError> {
    let d = a.nrows();
    if a.ncols() != d || b.nrows() != d {
        return Err(LinalgError::Shape {
            left: a.dim(),
            right: b.dim(),
            dst: (d, b.ncols()),
        });
    }
    let max_diag = (0..d).map(|j| a[[j, j]]).fold(0.0f64, f64::max);
    let threshold = tolerance * max_diag;
    // Row-major lower factor: row i of L is l[i·d ..][..= i].
    let mut l = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            l[i * d + j] = a[[i, j]];
        }
    }
    for j in 0..d {
        let pivot = {
            let row_j = &l[j * d..j * d + j + 1];
            row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>()
        };
        if !(pivot > threshold) {
            let relative = if max_diag > 0.0 {
                pivot / max_diag
            } else {
                pivot
            };
            return Err(LinalgError::NotPositiveDefinite { pivot: j, relative });
        }
        let ljj = pivot.sqrt();
        l[j * d + j] = ljj;
        let (upto, below) = l.split_at_mut((j + 1) * d);
        let lj = &upto[j * d..j * d + j];
        for row_i in below.chunks_mut(d) {
            let s: f64 = row_i[..j].iter().zip(lj).map(|(x, y)| x * y).sum();
            row_i[j] = (row_i[j] - s) / ljj;
        }
    }
    let mut x = b.to_owned();
    for mut col in x.columns_mut() {
        for i in 0..d {
            let s: f64 = l[i * d..i * d + i]
                .iter()
                .zip(col.iter())
                .map(|(p, q)| p * q)
                .sum();
            col[i] = (col[i] - s) / l[i * d + i];
        }
        for i in (0..d).rev() {
            let mut s = col[i];
            for r in i + 1..d {
                s -= l[r * d + i] * col[r];
            }
            col[i] = s / l[i * d + i];
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// A = [[4, 2], [2, 3]] (L = [[2, 0], [1, √2]]), B = A·[1, −2]ᵀ: X is recovered.
    #[test]
    fn solves_a_hand_case() {
        let a = array![[4.0, 2.0], [2.0, 3.0]];
        let b = array![[0.0], [-4.0]];
        let x = cholesky_solve(a.view(), b.view(), 1e-12).unwrap();
        assert!((x[[0, 0]] - 1.0).abs() < 1e-15 && (x[[1, 0]] + 2.0).abs() < 1e-15);
    }

    /// A singular matrix ([[1, 1], [1, 1]]) fails at pivot 1 with relative value 0; shapes are
    /// checked.
    #[test]
    fn singular_and_misshaped_inputs_are_typed_errors() {
        let a = array![[1.0, 1.0], [1.0, 1.0]];
        let b = array![[1.0], [1.0]];
        assert!(matches!(
            cholesky_solve(a.view(), b.view(), 1e-12),
            Err(LinalgError::NotPositiveDefinite { pivot: 1, relative }) if relative == 0.0
        ));
        assert!(matches!(
            cholesky_solve(a.view(), array![[1.0]].view(), 1e-12),
            Err(LinalgError::Shape { .. })
        ));
        let nan = array![[f64::NAN]];
        assert!(cholesky_solve(nan.view(), array![[1.0]].view(), 1e-12).is_err());
    }
}
