//! Symmetric eigendecomposition in f64: Householder reduction to tridiagonal form, then the
//! implicit QL algorithm with Wilkinson-type shifts (the EISPACK `tred2`/`tql2` pair, in the form
//! of the public-domain JAMA library), storing the eigenvector matrix transposed so that every
//! inner loop runs over contiguous memory.
//!
//! Cost `≈ (4/3 + 3) n³` flops with `O(n²)` memory; used for the `n × n` Gram of NC1's
//! pseudo-inverse when `n` is too large for one-sided Jacobi (see `metrics::Nc1Route`).

use ndarray::{Array2, ArrayView2};

use crate::kernels::dot;

/// Eigenvalues (decreasing) and eigenvectors (column `k` for value `k`) of the symmetric `a`
/// (only its values are read as given; `a` must be symmetric). `None` if the QL iteration does
/// not converge (a NaN or infinite entry).
pub(crate) fn sym_eigen(a: ArrayView2<'_, f64>) -> Option<(Vec<f64>, Array2<f64>)> {
    let n = a.nrows();
    assert_eq!(n, a.ncols());
    if n == 0 {
        return Some((Vec::new(), Array2::zeros((0, 0))));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // w[j·n + k] = V[k][j]; V starts as a (symmetric, so w = a too).
    let mut w: Vec<f64> = a.as_standard_layout().iter().copied().collect();
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    tred2(&mut w, &mut d, &mut e, n);
    if !tql2(&mut w, &mut d, &mut e, n) {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let vals = order.iter().map(|&k| d[k]).collect();
    let vecs = Array2::from_shape_fn((n, n), |(i, k)| w[order[k] * n + i]);
    Some((vals, vecs))
}

/// Householder tridiagonalisation (JAMA `tred2`): on return `d` is the diagonal, `e[1..]` the
/// subdiagonal and `w` (transposed) the accumulated orthogonal transformation.
fn tred2(w: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let idx = |row: usize, col: usize| col * n + row; // V[row][col]
    for j in 0..n {
        d[j] = w[idx(n - 1, j)];
    }
    for i in (1..n).rev() {
        let mut scale = 0.0;
        let mut h = 0.0;
        for &dk in &d[..i] {
            scale += dk.abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = w[idx(i - 1, j)];
                w[idx(i, j)] = 0.0;
                w[idx(j, i)] = 0.0;
            }
        } else {
            for dk in &mut d[..i] {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                w[idx(j, i)] = f;
                let col = &w[j * n..j * n + i];
                g = e[j] + col[j] * f + dot(&col[j + 1..i], &d[j + 1..i]);
                for (ek, &ck) in e[j + 1..i].iter_mut().zip(&col[j + 1..i]) {
                    *ek += ck * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                let col = &mut w[j * n..j * n + i];
                for k in j..i {
                    col[k] -= f * e[k] + g * d[k];
                }
                d[j] = w[idx(i - 1, j)];
                w[idx(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        w[idx(n - 1, i)] = w[idx(i, i)];
        w[idx(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = w[idx(k, i + 1)] / h;
            }
            for j in 0..=i {
                // j ≤ i: column j of V lies before column i + 1 in w.
                let (lo, hi) = w.split_at_mut((i + 1) * n);
                let (cj, ci) = (&mut lo[j * n..j * n + i + 1], &hi[..i + 1]);
                let g = dot(ci, cj);
                for (v, &dk) in cj.iter_mut().zip(&d[..=i]) {
                    *v -= g * dk;
                }
            }
        }
        for k in 0..=i {
            w[idx(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = w[idx(n - 1, j)];
        w[idx(n - 1, j)] = 0.0;
    }
    w[idx(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal `(d, e)` (JAMA `tql2`), rotating the columns of `V` (rows of
/// `w`). Returns false if an eigenvalue needs more than 60 iterations.
fn tql2(w: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) -> bool {
    tql2_deferring(w, d, e, n, MAX_DEFERRED)
}

/// [`tql2`] applying its rotations to `w` whenever `max_deferred` of them are waiting (see
/// [`apply_rotations`]).
fn tql2_deferring(
    w: &mut [f64],
    d: &mut [f64],
    e: &mut [f64],
    n: usize,
    max_deferred: usize,
) -> bool {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    let mut rotations: Vec<(u32, f64, f64)> = Vec::new();
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 60 {
                    return false;
                }
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in &mut d[l + 2..n] {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    // Rotate columns i and i + 1 of V (rows i, i + 1 of w): deferred.
                    rotations.push((i as u32, c, s));
                }
                if rotations.len() >= max_deferred {
                    apply_rotations(w, n, &rotations);
                    rotations.clear();
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    apply_rotations(w, n, &rotations);
    true
}

/// Rotations `tql2` keeps before applying them (24 MB).
const MAX_DEFERRED: usize = 1 << 20;

/// Applies the plane rotations `(i, c, s)` of `tql2`, in order, to columns `i`, `i + 1` of `V`
/// (rows `i`, `i + 1` of the transposed `w`): `v_{i+1} ← s·v_i + c·v_{i+1}`,
/// `v_i ← c·v_i − s·v_{i+1}`.
///
/// The recurrences of the QL iteration never read `V`, so its rotations can wait; and a
/// rotation mixes the two vectors component by component, so component `k` of every vector
/// sees the same operations in the same order however the components are grouped. Applying a
/// batch of rotations to blocks of components (a block of all `n` vectors fits in L2), one
/// block per thread, therefore gives bit-for-bit the values of rotating whole vectors one
/// rotation at a time (JAMA's order), at `O(n)` memory per rotation instead of two passes over
/// `2n` values of memory per rotation.
fn apply_rotations(w: &mut [f64], n: usize, rotations: &[(u32, f64, f64)]) {
    if rotations.is_empty() || n == 0 {
        return;
    }
    // Components per block: n × width f64 within about 512 KiB, 8 to 64 at a time.
    let width = (262_144 / n).clamp(8, 256);
    let w_read: &[f64] = w;
    let blocks = crate::parallel::map_row_blocks_with(
        n,
        width,
        || (),
        |_, k0, k1| {
            let wd = k1 - k0;
            let mut b = Vec::with_capacity(n * wd);
            for j in 0..n {
                b.extend_from_slice(&w_read[j * n + k0..j * n + k1]);
            }
            for &(i, c, s) in rotations {
                let i = i as usize;
                let (lo, hi) = b.split_at_mut((i + 1) * wd);
                for (a, b) in lo[i * wd..].iter_mut().zip(hi[..wd].iter_mut()) {
                    let hb = *b;
                    *b = s * *a + c * hb;
                    *a = c * *a - s * hb;
                }
            }
            (k0, b)
        },
    );
    for (k0, b) in blocks {
        let wd = b.len() / n;
        for j in 0..n {
            w[j * n + k0..j * n + k0 + wd].copy_from_slice(&b[j * wd..(j + 1) * wd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JAMA's `tql2` as it was, rotating the vectors at once (the reference of the deferred
    /// rotations).
    fn tql2_immediate(w: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) -> bool {
        for i in 1..n {
            e[i - 1] = e[i];
        }
        e[n - 1] = 0.0;
        let (mut f, mut tst1, eps) = (0.0f64, 0.0f64, f64::EPSILON);
        for l in 0..n {
            tst1 = tst1.max(d[l].abs() + e[l].abs());
            let mut m = l;
            while m < n - 1 && e[m].abs() > eps * tst1 {
                m += 1;
            }
            if m > l {
                let mut iter = 0;
                loop {
                    iter += 1;
                    if iter > 60 {
                        return false;
                    }
                    let mut g = d[l];
                    let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                    let mut r = p.hypot(1.0);
                    if p < 0.0 {
                        r = -r;
                    }
                    d[l] = e[l] / (p + r);
                    d[l + 1] = e[l] * (p + r);
                    let dl1 = d[l + 1];
                    let mut h = g - d[l];
                    for di in &mut d[l + 2..n] {
                        *di -= h;
                    }
                    f += h;
                    p = d[m];
                    let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                    let el1 = e[l + 1];
                    let (mut s, mut s2) = (0.0f64, 0.0f64);
                    for i in (l..m).rev() {
                        c3 = c2;
                        c2 = c;
                        s2 = s;
                        g = c * e[i];
                        h = c * p;
                        r = p.hypot(e[i]);
                        e[i + 1] = s * r;
                        s = e[i] / r;
                        c = p / r;
                        p = c * d[i] - s * g;
                        d[i + 1] = h + s * (c * g + s * d[i]);
                        let (lo, hi) = w.split_at_mut((i + 1) * n);
                        for (a, b) in lo[i * n..].iter_mut().zip(hi[..n].iter_mut()) {
                            let hb = *b;
                            *b = s * *a + c * hb;
                            *a = c * *a - s * hb;
                        }
                    }
                    p = -s * s2 * c3 * el1 * e[l] / dl1;
                    e[l] = s * p;
                    d[l] = c * p;
                    if e[l].abs() <= eps * tst1 {
                        break;
                    }
                }
            }
            d[l] += f;
            e[l] = 0.0;
        }
        true
    }

    #[test]
    fn deferred_rotations_equal_immediate_ones_bit_for_bit() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        // n = 300: five blocks of components (64 wide), on every core.
        for n in [1usize, 2, 5, 40, 300] {
            let b = Array2::from_shape_fn((n, n / 2 + 1), |_| next());
            let a = b.dot(&b.t()); // a rank-deficient Gram: repeated zero eigenvalues
            let mut w0: Vec<f64> = a.iter().copied().collect();
            let (mut d0, mut e0) = (vec![0.0; n], vec![0.0; n]);
            tred2(&mut w0, &mut d0, &mut e0, n);
            let reference = {
                let (mut w, mut d, mut e) = (w0.clone(), d0.clone(), e0.clone());
                assert!(tql2_immediate(&mut w, &mut d, &mut e, n));
                (w, d)
            };
            // All deferred to the end, and flushed every 7 rotations.
            for max_deferred in [MAX_DEFERRED, 7] {
                let (mut w, mut d, mut e) = (w0.clone(), d0.clone(), e0.clone());
                assert!(tql2_deferring(&mut w, &mut d, &mut e, n, max_deferred));
                assert_eq!(d, reference.1, "n = {n}");
                assert!(
                    w.iter()
                        .zip(&reference.0)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "n = {n}, max_deferred = {max_deferred}"
                );
            }
        }
    }

    #[test]
    fn eigenpairs_of_random_symmetric_matrices() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in [1usize, 2, 3, 7, 40, 130] {
            let b = Array2::from_shape_fn((n, n + 3), |_| next());
            // A Gram (PSD, rank n) and a general symmetric matrix.
            for a in [b.dot(&b.t()), {
                let m = Array2::from_shape_fn((n, n), |_| next());
                &m + &m.t()
            }] {
                let (vals, vecs) = sym_eigen(a.view()).unwrap();
                for k in 1..n {
                    assert!(vals[k - 1] >= vals[k]);
                }
                let scale = vals.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
                // A V = V Λ and Vᵀ V = I.
                let av = a.dot(&vecs);
                for k in 0..n {
                    for i in 0..n {
                        assert!(
                            (av[[i, k]] - vecs[[i, k]] * vals[k]).abs() < 1e-12 * scale * n as f64
                        );
                    }
                }
                let vtv = vecs.t().dot(&vecs);
                for i in 0..n {
                    for j in 0..n {
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!((vtv[[i, j]] - want).abs() < 1e-12 * n as f64);
                    }
                }
                // The trace is the sum of the eigenvalues.
                let tr: f64 = (0..n).map(|i| a[[i, i]]).sum();
                assert!((tr - vals.iter().sum::<f64>()).abs() < 1e-12 * scale * n as f64);
            }
        }
        assert!(sym_eigen(ndarray::array![[f64::NAN]].view()).is_none());
    }
}
