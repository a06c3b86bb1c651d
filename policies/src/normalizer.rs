//! Running observation statistics (Welford's algorithm, merged per batch with
//! Chan et al.'s parallel update), frozen into the checkpoint so that a
//! deployed policy sees exactly the inputs it was trained on.

use serde::{Deserialize, Serialize};

/// Normalised values are clipped to ±`CLIP` standard deviations, as
/// gymnasium's `NormalizeObservation` and CleanRL do.
pub const CLIP: f32 = 10.0;
const EPSILON: f64 = 1e-8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub mean: Vec<f64>,
    /// Population variance (M2 / count).
    pub var: Vec<f64>,
    pub count: f64,
    /// A frozen normaliser ignores `update`.
    pub frozen: bool,
}

impl Normalizer {
    pub fn new(size: usize) -> Self {
        Self {
            mean: vec![0.0; size],
            var: vec![1.0; size],
            count: 0.0,
            frozen: false,
        }
    }

    pub fn len(&self) -> usize {
        self.mean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// Folds a batch of rows (row-major, `len()` columns) into the
    /// statistics. Rows with a non-finite value are skipped, and counted in
    /// the return value, so one bad sensor reading cannot poison the
    /// statistics.
    pub fn update(&mut self, rows: &[f32]) -> usize {
        if self.frozen || self.is_empty() {
            return 0;
        }
        let size = self.len();
        let mut rejected = 0;
        let mut n = 0.0;
        let mut mean = vec![0.0f64; size];
        let mut m2 = vec![0.0f64; size];
        for row in rows.chunks_exact(size) {
            if row.iter().any(|v| !v.is_finite()) {
                rejected += 1;
                continue;
            }
            n += 1.0;
            for ((m, s), &x) in mean.iter_mut().zip(m2.iter_mut()).zip(row) {
                let delta = x as f64 - *m;
                *m += delta / n;
                *s += delta * (x as f64 - *m);
            }
        }
        if n == 0.0 {
            return rejected;
        }
        let total = self.count + n;
        for i in 0..size {
            let delta = mean[i] - self.mean[i];
            let m2_total =
                self.var[i] * self.count + m2[i] + delta * delta * self.count * n / total;
            self.mean[i] += delta * n / total;
            self.var[i] = m2_total / total;
        }
        self.count = total;
        rejected
    }

    /// Writes the normalised row into `out`.
    pub fn normalize_into(&self, row: &[f32], out: &mut [f32]) {
        for (((o, &x), m), v) in out.iter_mut().zip(row).zip(&self.mean).zip(&self.var) {
            let z = (x as f64 - m) / (v + EPSILON).sqrt();
            *o = (z as f32).clamp(-CLIP, CLIP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_updates_equal_one_pass() {
        let data: Vec<f32> = (0..40)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let mut whole = Normalizer::new(2);
        whole.update(&data);
        let mut parts = Normalizer::new(2);
        parts.update(&data[..14]);
        parts.update(&data[14..]);
        for i in 0..2 {
            assert!((whole.mean[i] - parts.mean[i]).abs() < 1e-12);
            assert!((whole.var[i] - parts.var[i]).abs() < 1e-12);
        }
        let column: Vec<f64> = data.iter().step_by(2).map(|&x| x as f64).collect();
        let mean = column.iter().sum::<f64>() / 20.0;
        let var = column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 20.0;
        assert!((whole.mean[0] - mean).abs() < 1e-12 && (whole.var[0] - var).abs() < 1e-12);
    }

    #[test]
    fn non_finite_rows_are_rejected_and_frozen_ignores_updates() {
        let mut n = Normalizer::new(2);
        assert_eq!(n.update(&[1.0, f32::NAN, 2.0, 3.0]), 1);
        assert_eq!(n.count, 1.0);
        n.frozen = true;
        n.update(&[100.0, 100.0]);
        assert_eq!(n.mean, vec![2.0, 3.0]);
    }
}
