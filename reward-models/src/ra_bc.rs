//! Reward-aligned behaviour cloning weights (RA-BC, ALGORITHMS.md §3.1,
//! exact, from the SARM paper via the LeRobot docs): a demonstrated frame
//! counts in the cloning loss as much as the progress its next `H` ticks
//! made,
//!
//!   Δφ = φ(o_{t+H}) − φ(o_t)
//!   w  = 1                                          if Δφ > κ
//!      = clip((Δφ − (μ − 2σ)) / (4σ + ε), 0, 1)     if 0 ≤ Δφ ≤ κ
//!      = 0                                          if Δφ < 0
//!
//! with κ = 0.01 and μ, σ the mean and standard deviation of Δφ over the
//! dataset. Frames that undo progress teach nothing; hesitant ones teach
//! a little. H is the policy's action chunk; a per-tick policy uses a
//! short look-ahead instead (a single tick's progress is mostly noise).

/// κ of the formula.
pub const KAPPA: f64 = 0.01;
const EPSILON: f64 = 1e-6;

/// Δφ for each frame of one episode's progress; the last `horizon` frames
/// look ahead to the episode's end.
pub fn progress_deltas(progress: &[f64], horizon: usize) -> Vec<f64> {
    let n = progress.len();
    (0..n)
        .map(|t| progress[(t + horizon.max(1)).min(n - 1)] - progress[t])
        .collect()
}

/// (μ, σ) of Δφ over every frame of the dataset.
pub fn statistics(deltas: &[f64]) -> (f64, f64) {
    let n = deltas.len().max(1) as f64;
    let mean = deltas.iter().sum::<f64>() / n;
    let var = deltas.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The RA-BC weight of one frame.
pub fn weight(delta: f64, mean: f64, std: f64, kappa: f64) -> f64 {
    if delta > kappa {
        1.0
    } else if delta >= 0.0 {
        ((delta - (mean - 2.0 * std)) / (4.0 * std + EPSILON)).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_branch_of_the_formula_by_hand() {
        // μ = 0.02, σ = 0.01: the middle branch is (Δφ − 0) / 0.04.
        assert_eq!(weight(0.5, 0.02, 0.01, KAPPA), 1.0);
        assert_eq!(weight(0.011, 0.02, 0.01, KAPPA), 1.0);
        assert!((weight(0.008, 0.02, 0.01, KAPPA) - 0.008 / (0.04 + EPSILON)).abs() < 1e-12);
        assert_eq!(weight(0.0, 0.02, 0.01, KAPPA), 0.0);
        assert_eq!(weight(-0.001, 0.02, 0.01, KAPPA), 0.0);
        // A wide spread lifts small steps: μ = 0, σ = 0.1 → (Δφ + 0.2) / 0.4.
        assert!((weight(0.005, 0.0, 0.1, KAPPA) - 0.205 / (0.4 + EPSILON)).abs() < 1e-12);
    }

    #[test]
    fn deltas_look_ahead_and_stop_at_the_end() {
        let progress = [0.0, 0.1, 0.3, 0.2, 0.6];
        let d = progress_deltas(&progress, 2);
        let expected = [0.3, 0.1, 0.3, 0.4, 0.0];
        for (a, b) in d.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{d:?}");
        }
        let (mean, std) = statistics(&[1.0, 3.0]);
        assert_eq!((mean, std), (2.0, 1.0));
    }
}
