//! The dense linear algebra the metrics need, on row-major slices: matrix products
//! (the `gemm` crate, multi-threaded) and the eigendecomposition of a symmetric
//! matrix in f64 (Householder reduction to tridiagonal form, then the implicit QL
//! algorithm with Wilkinson-style shifts; eigenvector rotations are batched per QL
//! sweep and applied to column blocks in parallel).

use anyhow::{bail, Result};
use rayon::prelude::*;

/// Types the `gemm` crate multiplies.
pub trait Scalar: Copy + Send + Sync + 'static {
    fn zero() -> Self;
    fn one() -> Self;
}
impl Scalar for f32 {
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}
impl Scalar for f64 {
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}

/// `op(A) · op(B)` as a row-major (m, n) matrix, where op(A) is (m, k) and op(B) is
/// (k, n). `a` is stored row-major as (m, k), or as (k, m) when `a_t` (then op(A) is
/// its transpose); likewise `b` is (k, n), or (n, k) when `b_t`.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Scalar>(a: &[T], a_t: bool, b: &[T], b_t: bool, m: usize, k: usize, n: usize) -> Vec<T> {
    assert_eq!(a.len(), m * k, "lhs size");
    assert_eq!(b.len(), k * n, "rhs size");
    let mut c = vec![T::zero(); m * n];
    if m == 0 || n == 0 {
        return c;
    }
    if k == 0 {
        return c;
    }
    // (row stride, column stride) of op(A) and op(B).
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let threads = rayon::current_num_threads();
    let par =
        if m * n * k > 1 << 15 && threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers cover m*k, k*n and m*n elements with the strides above
    // (checked by the asserts), and `c` is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
    c
}

/// Eigenvalues (ascending) and eigenvectors of a symmetric matrix.
pub struct SymEigen {
    pub n: usize,
    pub values: Vec<f64>,
    /// Row-major (n, n): row `i` is the unit eigenvector of `values[i]`.
    pub vectors: Vec<f64>,
}

/// Householder reduction of the symmetric (n, n) matrix `a` (overwritten) to
/// tridiagonal form Qᵀ A Q = T. Returns (diagonal, subdiagonal with e[i] = T[i+1][i]
/// and e[n-1] = 0), and, when `want_q`, Qᵀ row-major.
fn tridiagonalize(a: &mut [f64], n: usize, want_q: bool) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    // Householder vectors: v_k (length n-k-1) stored in row k of `a` right of the
    // diagonal, with its factor beta_k (H = I - beta v vᵀ).
    let mut betas = vec![0.0; n];
    let mut p = vec![0.0; n];
    for k in 0..n.saturating_sub(1) {
        d[k] = a[k * n + k];
        let m = n - k - 1;
        let off = k + 1;
        if m == 1 {
            e[k] = a[k * n + off];
            continue;
        }
        let norm = a[k * n + off..(k + 1) * n].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            e[k] = 0.0;
            continue;
        }
        let x0 = a[k * n + off];
        let alpha = if x0 >= 0.0 { -norm } else { norm };
        e[k] = alpha;
        // v = x - alpha e1; vᵀv = 2 norm (norm + |x0|).
        a[k * n + off] = x0 - alpha;
        let vtv = 2.0 * norm * (norm + x0.abs());
        let beta = 2.0 / vtv;
        betas[k] = beta;
        let (head, rest) = a.split_at_mut(off * n);
        let v = &head[k * n + off..(k + 1) * n];
        // p = beta S v over the trailing block S = a[off.., off..].
        p[..m].par_iter_mut().zip(rest.par_chunks(n)).for_each(|(pi, row)| {
            *pi = beta * row[off..].iter().zip(v).map(|(s, v)| s * v).sum::<f64>();
        });
        let kk = 0.5 * beta * p[..m].iter().zip(v).map(|(p, v)| p * v).sum::<f64>();
        // w = p - kk v; S -= v wᵀ + w vᵀ.
        let w: Vec<f64> = p[..m].iter().zip(v).map(|(p, v)| p - kk * v).collect();
        rest.par_chunks_mut(n).zip(v.par_iter().zip(w.par_iter())).for_each(|(row, (&vi, &wi))| {
            for ((s, &vj), &wj) in row[off..].iter_mut().zip(v).zip(&w) {
                *s -= vi * wj + wi * vj;
            }
        });
    }
    if n > 0 {
        d[n - 1] = a[(n - 1) * n + n - 1];
    }
    let qt = want_q.then(|| {
        // Q = H_0 H_1 ... H_{n-3}; build Qᵀ = H_{n-3} ... H_0 applied as
        // Qᵀ = (...(I H_{n-3}ᵀ)...)ᵀ: accumulate Q backwards from the left, then transpose.
        let mut q = vec![0.0; n * n];
        for i in 0..n {
            q[i * n + i] = 1.0;
        }
        for k in (0..n.saturating_sub(2)).rev() {
            let beta = betas[k];
            if beta == 0.0 {
                continue;
            }
            let off = k + 1;
            let v = &a[k * n + off..(k + 1) * n];
            // Q[off.., off..] = H_k Q[off.., off..] = Q - beta v (vᵀ Q).
            let sub = &mut q[off * n..];
            let r: Vec<f64> = sub
                .par_chunks(n)
                .zip(v.par_iter())
                .fold(
                    || vec![0.0; n - off],
                    |mut acc, (row, &vi)| {
                        for (a, &x) in acc.iter_mut().zip(&row[off..]) {
                            *a += vi * x;
                        }
                        acc
                    },
                )
                .reduce(
                    || vec![0.0; n - off],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x += y;
                        }
                        a
                    },
                );
            sub.par_chunks_mut(n).zip(v.par_iter()).for_each(|(row, &vi)| {
                let f = beta * vi;
                for (x, &rj) in row[off..].iter_mut().zip(&r) {
                    *x -= f * rj;
                }
            });
        }
        transpose(&q, n)
    });
    (d, e, qt)
}

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    t.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, x) in row.iter_mut().enumerate() {
            *x = a[j * n + i];
        }
    });
    t
}

/// Implicit QL on the tridiagonal (d, e). With `zt` (row-major, row i = vector i),
/// the rotations are applied to its rows so that it ends up holding eigenvectors.
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64], mut zt: Option<&mut [f64]>) -> Result<()> {
    let n = d.len();
    let mut rotations: Vec<(usize, f64, f64)> = Vec::new();
    // Off-diagonal entries below eps * ||T|| count as zero: without this absolute
    // floor, the many (numerically) zero eigenvalues of a rank-deficient covariance
    // never meet the purely relative test.
    let anorm = d.iter().zip(e.iter()).map(|(d, e)| d.abs() + e.abs()).fold(0.0, f64::max);
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd.max(anorm) {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 100 {
                bail!("symmetric eigensolver did not converge (eigenvalue {l} of {n})");
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            rotations.clear();
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                rotations.push((i, c, s));
            }
            if let Some(z) = zt.as_deref_mut() {
                apply_rotations(z, n, &rotations);
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

/// Applies the rotations (in order) to the row pairs (i, i+1) of `zt`, in parallel
/// over blocks of columns.
fn apply_rotations(zt: &mut [f64], n: usize, rots: &[(usize, f64, f64)]) {
    if rots.is_empty() {
        return;
    }
    const BLOCK: usize = 128;
    let blocks = n.div_ceil(BLOCK);
    let ptr = SendPtr(zt.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|bi| {
        let ptr = &ptr;
        let c0 = bi * BLOCK;
        let c1 = (c0 + BLOCK).min(n);
        for &(i, c, s) in rots {
            // SAFETY: each task touches only columns c0..c1 of rows i and i+1, and the
            // column blocks are disjoint.
            unsafe {
                let a = std::slice::from_raw_parts_mut(ptr.0.add(i * n + c0), c1 - c0);
                let b = std::slice::from_raw_parts_mut(ptr.0.add((i + 1) * n + c0), c1 - c0);
                for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                    let f = *y;
                    *y = s * *x + c * f;
                    *x = c * *x - s * f;
                }
            }
        }
    });
}

struct SendPtr(*mut f64);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

fn check_square(a: &[f64], n: usize) -> Result<()> {
    if a.len() != n * n {
        bail!("matrix has {} elements, expected {n}x{n}", a.len());
    }
    if a.iter().any(|v| !v.is_finite()) {
        bail!("matrix has non-finite entries");
    }
    Ok(())
}

/// Sorts eigenpairs ascending.
fn sort_pairs(values: Vec<f64>, vectors: Option<Vec<f64>>, n: usize) -> (Vec<f64>, Option<Vec<f64>>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let vals = idx.iter().map(|&i| values[i]).collect();
    let vecs = vectors.map(|v| {
        let mut out = vec![0.0; n * n];
        out.par_chunks_mut(n.max(1))
            .zip(idx.par_iter())
            .for_each(|(row, &i)| row.copy_from_slice(&v[i * n..(i + 1) * n]));
        out
    });
    (vals, vecs)
}

/// Eigendecomposition of the symmetric (n, n) row-major matrix `a` (only its lower
/// and upper halves' average matters; pass a symmetric matrix).
pub fn sym_eigen(a: &[f64], n: usize) -> Result<SymEigen> {
    check_square(a, n)?;
    let mut work = symmetrized(a, n);
    let (mut d, mut e, qt) = tridiagonalize(&mut work, n, true);
    let mut zt = qt.unwrap();
    tridiagonal_ql(&mut d, &mut e, Some(&mut zt))?;
    let (values, vectors) = sort_pairs(d, Some(zt), n);
    Ok(SymEigen { n, values, vectors: vectors.unwrap() })
}

/// Eigenvalues (ascending) of the symmetric (n, n) row-major matrix `a`.
pub fn sym_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>> {
    check_square(a, n)?;
    let mut work = symmetrized(a, n);
    let (mut d, mut e, _) = tridiagonalize(&mut work, n, false);
    tridiagonal_ql(&mut d, &mut e, None)?;
    Ok(sort_pairs(d, None, n).0)
}

fn symmetrized(a: &[f64], n: usize) -> Vec<f64> {
    let mut s = vec![0.0; n * n];
    s.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        for (j, x) in row.iter_mut().enumerate() {
            *x = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    });
    s
}

/// Σ sqrt(λ) over the eigenvalues λ of `s1 · s2` for symmetric positive
/// semi-definite (n, n) matrices: the trace of the principal square root of s1 s2.
/// Computed as the eigenvalues of the symmetric Aᵀ s2 A with s1 = A Aᵀ,
/// A = V diag(sqrt(max(λ(s1), 0))) (the same eigenvalues as s1 s2); tiny negative
/// eigenvalues from rounding count as zero.
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], n: usize) -> Result<f64> {
    check_square(s2, n)?;
    let eig = sym_eigen(s1, n)?;
    // Aᵀ = diag(sqrt λ) Vᵀ: row i of the eigenvector matrix scaled by sqrt(λ_i).
    let mut at = eig.vectors;
    at.par_chunks_mut(n.max(1)).zip(eig.values.par_iter()).for_each(|(row, &l)| {
        let f = l.max(0.0).sqrt();
        row.iter_mut().for_each(|x| *x *= f);
    });
    trace_sqrt_product_factored(&at, n, s2, n)
}

/// [`trace_sqrt_product`] with `s1` given as a factor: `s1 = A Aᵀ` for the (n, m) matrix A,
/// passed as its row-major transpose `at` (m, n). The eigenvalues of `s1 · s2` are those of
/// the (m, m) matrix `Aᵀ s2 A` (and zeros), so when `s1` is a covariance of m < n centred
/// samples (A = Xᵀ/√(m − 1)) no eigendecomposition of an (n, n) matrix is needed: for 1,000
/// Inception features of 2,048 dimensions, one of 1,000 × 1,000 without eigenvectors.
pub fn trace_sqrt_product_factored(at: &[f64], m: usize, s2: &[f64], n: usize) -> Result<f64> {
    check_square(s2, n)?;
    if at.len() != m * n {
        bail!("factor has {} elements, expected {m}x{n}", at.len());
    }
    let t = matmul(at, false, s2, false, m, n, n); // Aᵀ s2
    let p = matmul(&t, false, at, true, m, n, m); // Aᵀ s2 A
    let mu = sym_eigenvalues(&p, m)?;
    Ok(mu.iter().map(|&v| v.max(0.0).sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_sym(n: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = r.normal();
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        a
    }

    fn random_psd(n: usize, rank: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        let x: Vec<f64> = (0..n * rank).map(|_| r.normal()).collect();
        matmul(&x, false, &x, true, n, rank, n)
    }

    #[test]
    fn matmul_handles_transposes() {
        // A = [[1,2,3],[4,5,6]] (2x3), B = [[1,0],[0,1],[1,1]] (3x2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(matmul(&a, false, &b, false, 2, 3, 2), vec![4.0, 5.0, 10.0, 11.0]);
        // Aᵀ stored as (3, 2).
        let at = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        assert_eq!(matmul(&at, true, &b, false, 2, 3, 2), vec![4.0, 5.0, 10.0, 11.0]);
        // A Aᵀ with the second operand marked transposed.
        assert_eq!(matmul(&a, false, &a, true, 2, 3, 2), vec![14.0, 32.0, 32.0, 77.0]);
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        assert_eq!(matmul(&a32, false, &a32, true, 2, 3, 2), vec![14.0, 32.0, 32.0, 77.0]);
    }

    #[test]
    fn eigen_reconstructs_and_is_orthonormal() {
        for (n, seed) in [(1, 1), (2, 2), (3, 3), (17, 4), (64, 5), (150, 6)] {
            let a = random_sym(n, seed);
            let eig = sym_eigen(&a, n).unwrap();
            assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
            let v = &eig.vectors;
            let scale = a.iter().map(|x| x.abs()).fold(0.0, f64::max);
            for i in 0..n {
                for j in 0..n {
                    // (V Λ Vᵀ)_ij with rows of `v` the eigenvectors.
                    let rec: f64 = (0..n).map(|k| v[k * n + i] * eig.values[k] * v[k * n + j]).sum();
                    assert!((rec - a[i * n + j]).abs() < 1e-10 * scale * n as f64, "n={n} ({i},{j})");
                    let dot: f64 = (0..n).map(|k| v[i * n + k] * v[j * n + k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-10, "n={n} orthonormality ({i},{j})");
                }
            }
            let vals = sym_eigenvalues(&a, n).unwrap();
            for (x, y) in vals.iter().zip(&eig.values) {
                assert!((x - y).abs() < 1e-10 * scale * n as f64);
            }
        }
    }

    #[test]
    fn eigen_of_known_matrices() {
        let d = [3.0, -1.0, 2.0, 0.0];
        let mut a = vec![0.0; 16];
        for i in 0..4 {
            a[i * 4 + i] = d[i];
        }
        assert_eq!(sym_eigenvalues(&a, 4).unwrap(), vec![-1.0, 0.0, 2.0, 3.0]);
        // [[2,1],[1,2]] has eigenvalues 1 and 3.
        let e = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        assert!((e.values[0] - 1.0).abs() < 1e-14 && (e.values[1] - 3.0).abs() < 1e-14);
        // Repeated eigenvalues and a rank-deficient matrix.
        let p = random_psd(40, 5, 9);
        let vals = sym_eigenvalues(&p, 40).unwrap();
        let top = vals[39];
        assert!(vals[..35].iter().all(|v| v.abs() < 1e-10 * top), "{vals:?}");
        assert!(vals[35..].iter().all(|&v| v > 1e-3 * top));
        // Many zero eigenvalues, as in the covariance of fewer samples than features.
        for (n, rank, seed) in [(200, 20, 11), (300, 299, 12), (256, 1, 13)] {
            let p = random_psd(n, rank, seed);
            let e = sym_eigen(&p, n).unwrap();
            let tr: f64 = (0..n).map(|i| p[i * n + i]).sum();
            assert!((e.values.iter().sum::<f64>() - tr).abs() < 1e-9 * tr);
            let got = trace_sqrt_product(&p, &p, n).unwrap();
            assert!((got - tr).abs() < 1e-6 * tr, "n={n} rank={rank}: {got} vs {tr}");
        }
        let zero = vec![0.0; 9];
        assert_eq!(sym_eigenvalues(&zero, 3).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn trace_sqrt_product_matches_diagonal_closed_form() {
        let n = 30;
        let mut s1 = vec![0.0; n * n];
        let mut s2 = vec![0.0; n * n];
        let mut want = 0.0;
        for i in 0..n {
            let (a, b) = (1.0 + i as f64, 0.5 + 0.1 * i as f64);
            s1[i * n + i] = a;
            s2[i * n + i] = b;
            want += (a * b).sqrt();
        }
        let got = trace_sqrt_product(&s1, &s2, n).unwrap();
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // tr sqrt(S S) = tr S for a PSD S, singular or not.
        let p = random_psd(50, 20, 3);
        let tr: f64 = (0..50).map(|i| p[i * 50 + i]).sum();
        let got = trace_sqrt_product(&p, &p, 50).unwrap();
        assert!((got - tr).abs() < 1e-6 * tr, "{got} vs {tr}");
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// `cargo test --release --lib bench_trace_sqrt -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_trace_sqrt_2048() {
        let n = 2048;
        let mut r = crate::rng::Rng::new(1);
        let x: Vec<f64> = (0..n * 3000).map(|_| r.normal()).collect();
        let s1 = matmul(&x, true, &x, false, n, 3000, n);
        let y: Vec<f64> = (0..n * 3000).map(|_| r.normal()).collect();
        let s2 = matmul(&y, true, &y, false, n, 3000, n);
        let t = std::time::Instant::now();
        let e = sym_eigen(&s1, n).unwrap();
        eprintln!("sym_eigen {n}: {:.2?}", t.elapsed());
        let t = std::time::Instant::now();
        let _ = sym_eigenvalues(&s2, n).unwrap();
        eprintln!("sym_eigenvalues {n}: {:.2?}", t.elapsed());
        let t = std::time::Instant::now();
        let v = trace_sqrt_product(&s1, &s2, n).unwrap();
        eprintln!("trace_sqrt_product {n}: {:.2?} -> {v} (min eig {})", t.elapsed(), e.values[0]);
    }
}
