//! Thin singular value decomposition of a tall `d × C` matrix in f64
//! (Householder QR, then one-sided Jacobi on the `C × C` factor).
//!
//! One-sided Jacobi computes singular values to high accuracy relative to the largest one, which
//! is what the rank decision of the pseudo-inverse in NC1 needs. Cost: `O(d·C²)` for the QR plus
//! `O(C³)` per Jacobi sweep; no `d × d` matrix is formed.

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Thin SVD `A = U diag(s) Vᵀ` of a `rows × cols` matrix with singular values sorted in
/// decreasing order. Only `V` (`cols × cols`) and `s` are returned: callers form the left
/// singular vectors they need as `u_k = A v_k / s_k`.
pub(crate) struct Svd {
    pub s: Array1<f64>,
    pub v: Array2<f64>,
}

/// Upper-triangular factor `R` (`min(rows, cols) × cols`) of a Householder QR of `a`.
fn householder_r(a: ArrayView2<'_, f64>) -> Array2<f64> {
    let (rows, cols) = a.dim();
    // Work on the transpose so that each column of `a` is a contiguous row.
    let mut t = a.t().to_owned(); // cols × rows
    let steps = rows.min(cols);
    for j in 0..steps {
        let norm = t
            .row(j)
            .slice(ndarray::s![j..])
            .mapv(|v| v * v)
            .sum()
            .sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if t[[j, j]] > 0.0 { -norm } else { norm };
        // v = x − alpha e_1, stored in place of x.
        let mut v = t.row(j).slice(ndarray::s![j..]).to_owned();
        v[0] -= alpha;
        let vv = v.dot(&v);
        if vv == 0.0 {
            continue;
        }
        t[[j, j]] = alpha;
        t.row_mut(j).slice_mut(ndarray::s![j + 1..]).fill(0.0);
        for k in j + 1..cols {
            let mut col = t.row_mut(k);
            let mut tail = col.slice_mut(ndarray::s![j..]);
            let f = 2.0 * v.dot(&tail) / vv;
            tail.scaled_add(-f, &v);
        }
    }
    let mut r = Array2::<f64>::zeros((steps, cols));
    for k in 0..cols {
        for i in 0..steps.min(k + 1) {
            r[[i, k]] = t[[k, i]];
        }
    }
    r
}

/// One-sided (Hestenes) Jacobi SVD of a small matrix: returns singular values (decreasing) and
/// right singular vectors.
fn jacobi(b: Array2<f64>) -> Svd {
    let n = b.ncols();
    // Columns of b as contiguous rows.
    let mut bt = b.t().as_standard_layout().into_owned(); // n × m, row-major
    let mut v = Array2::<f64>::eye(n);
    let eps = f64::EPSILON;
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (alpha, beta, gamma) = {
                    let bp = bt.row(p);
                    let bq = bt.row(q);
                    (bp.dot(&bp), bq.dot(&bq), bp.dot(&bq))
                };
                if gamma == 0.0 || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate_rows(&mut bt, p, q, c, s);
                rotate_rows(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = bt.outer_iter().map(|r| r.dot(&r).sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let s = Array1::from_iter(order.iter().map(|&k| norms[k]));
    // Rows of `v` hold the rotated basis vectors: right singular vector k is row k.
    let v_sorted = v.select(Axis(0), &order).reversed_axes();
    Svd { s, v: v_sorted }
}

/// Applies the rotation `[c −s; s c]` to rows `p < q` of `m` (as columns of its transpose).
fn rotate_rows(m: &mut Array2<f64>, p: usize, q: usize, c: f64, s: f64) {
    debug_assert!(p < q);
    let cols = m.ncols();
    let data = m.as_slice_mut().expect("standard layout");
    let (head, tail) = data.split_at_mut(q * cols);
    let rp = &mut head[p * cols..(p + 1) * cols];
    let rq = &mut tail[..cols];
    for (a, b) in rp.iter_mut().zip(rq.iter_mut()) {
        let (x, y) = (*a, *b);
        *a = c * x - s * y;
        *b = s * x + c * y;
    }
}

/// Thin SVD of a `rows × cols` matrix (any shape; intended for `rows ≥ cols`).
pub(crate) fn thin_svd(a: ArrayView2<'_, f64>) -> Svd {
    if a.nrows() > a.ncols() {
        jacobi(householder_r(a))
    } else {
        jacobi(a.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn svd_of_known_matrix() {
        // A = diag(3, 2) embedded in 3 × 2, rotated by a Givens rotation on the right.
        let (c, s) = (0.6, 0.8);
        let a = array![[3.0 * c, -3.0 * s], [2.0 * s, 2.0 * c], [0.0, 0.0]];
        let svd = thin_svd(a.view());
        assert!((svd.s[0] - 3.0).abs() < 1e-14);
        assert!((svd.s[1] - 2.0).abs() < 1e-14);
        // A V = U S: columns of A V have norms s.
        let av = a.dot(&svd.v);
        for k in 0..2 {
            let n = av.column(k).dot(&av.column(k)).sqrt();
            assert!((n - svd.s[k]).abs() < 1e-14);
        }
        // V orthogonal.
        let vtv = svd.v.t().dot(&svd.v);
        assert!((&vtv - &Array2::<f64>::eye(2))
            .iter()
            .all(|e| e.abs() < 1e-14));
    }

    #[test]
    fn rank_deficient_has_tiny_singular_value() {
        // Third column = first + second.
        let a = array![
            [1.0, 2.0, 3.0],
            [4.0, 5.0, 9.0],
            [7.0, 8.0, 15.0],
            [1.0, 0.0, 1.0]
        ];
        let svd = thin_svd(a.view());
        assert!(svd.s[2] < 1e-14 * svd.s[0]);
        // Frobenius norm² = sum of s².
        let fro2: f64 = a.iter().map(|v| v * v).sum();
        let s2: f64 = svd.s.iter().map(|v| v * v).sum();
        assert!((fro2 - s2).abs() < 1e-12 * fro2);
    }
}
