//! GRPO group normalisation (Shao et al. 2024, "DeepSeekMath", arXiv
//! 2402.03300):
//!
//!   A_i = (r_i − mean_g r) / (std_g r + ε)
//!
//! over consecutive groups of G rollouts from the same start state.
//!
//! **Which std.** verl (`compute_grpo_outcome_advantage`: `torch.std`) and TRL
//! (`GRPOTrainer`: `.std(dim=1)`) both use torch's default, the *sample* std
//! with n − 1 in the denominator; so does this function. The population std
//! (n in the denominator, which `--algo grpo` used before issue 22) is smaller by
//! √((G − 1)/G), so its advantages are larger by √(G/(G − 1)). The gap is
//! largest at G = 2: for returns (a, b), a < b, the deviations are ∓Δ/2, the
//! sample std is Δ/√2 and A = ∓1/√2 ≈ ∓0.707, while the population std Δ/2
//! gives ∓1. Either way GRPO at G = 2 is sign-only: the size of the gap Δ is
//! lost (ALGORITHMS.md §1.9, pitfalls).
//!
//! A group whose returns are all equal has std 0 and carries no signal: its
//! advantages are 0 (not ±∞ when ε = 0).

use super::{check_eps, mean, sample_std, standardise, whole_groups};

/// GRPO advantages for `returns` laid out as consecutive groups of `group`
/// (at least 2: the sample std needs two values). `eps` ≥ 0 is added to the
/// std (verl's default is 1e-6, TRL's 1e-4).
pub fn grpo(returns: &[f32], group: usize, eps: f32) -> Result<Vec<f32>, String> {
    whole_groups("returns", returns.len(), group, 2)?;
    check_eps("eps", eps)?;
    let mut advantages = Vec::with_capacity(returns.len());
    for g in returns.chunks_exact(group) {
        let centre = mean(g);
        let std = sample_std(g, centre);
        // A group without spread has centre == every return exactly (the
        // mean of equal f32 values is exact in f64), so (r − mean) is 0 and
        // the guard in `standardise` only matters when std + ε is 0.
        let scale = std + eps as f64;
        advantages.extend(
            g.iter()
                .map(|&r| standardise(r as f64, centre, scale) as f32),
        );
    }
    Ok(advantages)
}

#[cfg(test)]
mod tests {
    use super::*;
    // 1/√2 = 0.70711, the G = 2 sample-std advantage.
    use std::f32::consts::FRAC_1_SQRT_2 as ROOT_HALF;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn two_rollouts_give_plus_minus_one_over_root_two() {
        // (0, 1): mean 0.5, deviations ∓0.5, sample std √(0.5/1) = 0.70711,
        // A = ∓0.5/0.70711 = ∓0.70711. Same for (0, 100): sign-only.
        let a = grpo(&[0.0, 1.0, 0.0, 100.0], 2, 0.0).unwrap();
        close(&a, &[-ROOT_HALF, ROOT_HALF, -ROOT_HALF, ROOT_HALF], 1e-5);
    }

    #[test]
    fn differs_from_the_population_std_by_root_g_over_g_minus_one() {
        // Population std of (0, 1) is 0.5, giving ∓1; sample gives ∓1/√2.
        // The population std of (0, 1) is 0.5: ∓0.5/0.5.
        let population = [-1.0f32, 1.0];
        let sample = grpo(&[0.0, 1.0], 2, 0.0).unwrap();
        close(&population, &[-1.0, 1.0], 1e-6);
        close(&[sample[1] * 2f32.sqrt()], &[population[1]], 1e-6);
    }

    #[test]
    fn three_rollouts_by_hand() {
        // (1, 2, 6): mean 3, deviations (−2, −1, 3), squares 4 + 1 + 9 = 14,
        // sample var 14/2 = 7, std 2.64575.
        // A = (−0.75593, −0.37796, 1.13389).
        let a = grpo(&[1.0, 2.0, 6.0], 3, 0.0).unwrap();
        close(&a, &[-0.75593, -0.37796, 1.13389], 1e-5);
    }

    #[test]
    fn eps_is_added_to_the_std() {
        // (0, 2): std √2 = 1.41421; with ε = 1: A = ∓1/2.41421 = ∓0.41421.
        let a = grpo(&[0.0, 2.0], 2, 1.0).unwrap();
        close(&a, &[-0.41421, 0.41421], 1e-5);
    }

    #[test]
    fn a_group_without_spread_gives_zeros_even_with_zero_eps() {
        let a = grpo(&[0.1, 0.1, 0.1, 3.0, 1.0, 2.0], 3, 0.0).unwrap();
        close(&a[..3], &[0.0, 0.0, 0.0], 0.0 + f32::MIN_POSITIVE);
        // The second group is untouched by the first: (3, 1, 2) → (1, −1, 0).
        close(&a[3..], &[1.0, -1.0, 0.0], 1e-6);
    }

    #[test]
    fn huge_finite_returns_do_not_overflow() {
        let a = grpo(&[3e38, -3e38], 2, 1e-6).unwrap();
        close(&a, &[ROOT_HALF, -ROOT_HALF], 1e-5);
    }

    #[test]
    fn malformed_shapes_are_errors() {
        assert!(grpo(&[1.0, 2.0, 3.0], 2, 1e-6).is_err());
        assert!(grpo(&[1.0, 2.0], 1, 1e-6).is_err());
        assert!(grpo(&[1.0, 2.0], 0, 1e-6).is_err());
        assert!(grpo(&[1.0, 2.0], 2, -1.0).unwrap_err().contains("eps"));
        assert_eq!(grpo(&[], 2, 1e-6).unwrap(), Vec::<f32>::new());
    }
}
