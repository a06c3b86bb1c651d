//! REINFORCE leave-one-out, RLOO (Kool et al. 2019, "Buy 4 REINFORCE
//! Samples, Get a Baseline for Free!"; Ahmadian et al. 2024, "Back to
//! Basics", arXiv 2402.14740):
//!
//!   A_i = r_i − (1/(G − 1)) Σ_{j≠i} r_j
//!
//! The baseline of rollout i does not contain r_i, so it is independent of
//! the action that produced r_i and the estimate is unbiased. Algebraically
//! A_i = G/(G − 1) · (r_i − mean_g r): Dr. GRPO scaled by G/(G − 1). At G = 2
//! RLOO gives ±Δ where Dr. GRPO gives ±Δ/2.

use super::whole_groups;

/// RLOO advantages for `returns` laid out as consecutive groups of `group`
/// (at least 2: a single rollout has no others to compare with).
pub fn rloo(returns: &[f32], group: usize) -> Result<Vec<f32>, String> {
    whole_groups("returns", returns.len(), group, 2)?;
    let others = (group - 1) as f64;
    let mut advantages = Vec::with_capacity(returns.len());
    for g in returns.chunks_exact(group) {
        let sum: f64 = g.iter().map(|&r| r as f64).sum();
        advantages.extend(g.iter().map(|&r| {
            let r = r as f64;
            (r - (sum - r) / others) as f32
        }));
    }
    Ok(advantages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::estimators::dr_grpo::dr_grpo;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn leave_one_out_by_hand() {
        // (1, 2, 6): 1 − (2+6)/2 = −3;  2 − (1+6)/2 = −1.5;  6 − (1+2)/2 = 4.5.
        close(&rloo(&[1.0, 2.0, 6.0], 3).unwrap(), &[-3.0, -1.5, 4.5]);
        // G = 2, (0, 1) and (5, 5): ∓1 = ∓Δ, and 0 without spread.
        close(
            &rloo(&[0.0, 1.0, 5.0, 5.0], 2).unwrap(),
            &[-1.0, 1.0, 0.0, 0.0],
        );
    }

    #[test]
    fn is_dr_grpo_times_g_over_g_minus_one() {
        // (1, 2, 6): Dr. GRPO (−2, −1, 3) · 3/2 = (−3, −1.5, 4.5).
        let returns = [1.0, 2.0, 6.0, 0.5, -4.0, 10.0];
        let scaled: Vec<f32> = dr_grpo(&returns, 3)
            .unwrap()
            .iter()
            .map(|a| a * 1.5)
            .collect();
        close(&rloo(&returns, 3).unwrap(), &scaled);
    }

    #[test]
    fn malformed_shapes_are_errors() {
        assert!(rloo(&[1.0, 2.0], 1).unwrap_err().contains("returns"));
        assert!(rloo(&[1.0, 2.0, 3.0], 2).is_err());
    }
}
