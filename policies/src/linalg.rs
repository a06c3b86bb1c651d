//! Dense matrix products on the `gemm` crate (its run-time picked
//! AVX2/FMA/AVX-512/NEON kernels), for the hand-written passes of the fused
//! MLP and the VLA's convolutions.

/// A matrix view: element (r, c) is `data[r · row + c · col]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row: isize,
    pub(crate) col: isize,
}

impl<'a> Strided<'a> {
    pub(crate) fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row: cols as isize,
            col: 1,
        }
    }

    /// Whether every element of a `rows × cols` view lies inside `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || ((rows - 1) as isize * self.row + (cols - 1) as isize * self.col)
                < self.data.len() as isize
    }
}

/// dst (m × n, row-major) = [dst +] lhs (m × k) · rhs (k × n), on the
/// calling thread (so results are the same on every run).
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
) {
    matmul_on(m, n, k, dst, accumulate, lhs, rhs, 1)
}

/// `matmul` on up to `threads` threads: gemm splits the output into tiles
/// (each element is still summed over k on one thread, in one order), so
/// the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    threads: usize,
) {
    assert!(
        dst.len() >= m * n && lhs.covers(m, k) && rhs.covers(k, n),
        "matmul shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assertion above keeps every index gemm computes from
    // these strides inside the three slices, and `dst` does not alias them
    // (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col,
            lhs.row,
            rhs.data.as_ptr(),
            rhs.col,
            rhs.row,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}
