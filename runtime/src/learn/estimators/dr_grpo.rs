//! Dr. GRPO, "GRPO done right" (Liu et al. 2025, "Understanding R1-Zero-Like
//! Training: A Critical Perspective", arXiv 2503.20783; verl docs):
//!
//!   A_i = r_i − mean_g r        (no division by the group std)
//!
//!   loss = mean over episodes of ( Σ_t loss_{i,t} / L_max )
//!
//! Two biases of GRPO removed:
//! - **std division**: dividing by std_g up-weights groups whose returns
//!   barely differ (nearly solved or nearly hopeless start states) and makes
//!   G = 2 sign-only. Without it A = ±Δ/2 at G = 2: a bigger gap, a bigger step.
//! - **length normalisation**: GRPO averages each episode's per-step losses
//!   over *that episode's* length |o_i|, so a short episode's steps weigh
//!   more than a long one's, and a failing episode is penalised less per step
//!   the longer it drags on. Dr. GRPO sums each episode's per-step losses and
//!   divides by one constant for the whole batch, the maximum episode length
//!   L_max (TRL `loss_type="dr_grpo"`: `sum / (batch · max_completion_length)`;
//!   verl `seq-mean-token-sum-norm`). Every step then weighs the same.

use super::{mean, whole_groups};

/// Dr. GRPO advantages for `returns` laid out as consecutive groups of
/// `group` (≥ 1; a group of one gets 0).
pub fn dr_grpo(returns: &[f32], group: usize) -> Result<Vec<f32>, String> {
    whole_groups("returns", returns.len(), group, 1)?;
    let mut advantages = Vec::with_capacity(returns.len());
    for g in returns.chunks_exact(group) {
        let centre = mean(g);
        advantages.extend(g.iter().map(|&r| (r as f64 - centre) as f32));
    }
    Ok(advantages)
}

/// The constant every episode's summed per-step loss is divided by: the
/// maximum episode length of the run (the environment's time limit), never
/// the episode's own length. At least 1, so a zero length cannot divide by 0.
pub fn dr_grpo_loss_normaliser(max_episode_len: usize) -> f32 {
    max_episode_len.max(1) as f32
}

/// The Dr. GRPO loss from each episode's *summed* per-step loss:
/// mean_i (Σ_t loss_{i,t} / L_max). Empty input gives 0.
pub fn dr_grpo_loss(episode_loss_sums: &[f32], max_episode_len: usize) -> f32 {
    if episode_loss_sums.is_empty() {
        return 0.0;
    }
    let normaliser = dr_grpo_loss_normaliser(max_episode_len) as f64;
    let total: f64 = episode_loss_sums
        .iter()
        .map(|&s| s as f64 / normaliser)
        .sum();
    (total / episode_loss_sums.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn mean_centred_without_std() {
        // (0, 1): ∓0.5 = ∓Δ/2. (0, 100): ∓50: the gap is kept.
        // (1, 2, 6): mean 3 → (−2, −1, 3).
        close(
            &dr_grpo(&[0.0, 1.0, 0.0, 100.0], 2).unwrap(),
            &[-0.5, 0.5, -50.0, 50.0],
        );
        close(&dr_grpo(&[1.0, 2.0, 6.0], 3).unwrap(), &[-2.0, -1.0, 3.0]);
        close(&dr_grpo(&[7.0], 1).unwrap(), &[0.0]);
    }

    #[test]
    fn the_loss_is_divided_by_the_maximum_length_not_each_episodes_own() {
        // Two episodes with a per-step loss of 1, lengths 2 and 4: sums 2, 4.
        // Dr. GRPO with L_max = 4: (2/4 + 4/4)/2 = 0.75: the longer episode
        // weighs twice as much (it has twice the steps).
        // GRPO's per-episode mean would give (2/2 + 4/4)/2 = 1: equal weight.
        assert!((dr_grpo_loss(&[2.0, 4.0], 4) - 0.75).abs() < 1e-6);
        assert_eq!(dr_grpo_loss_normaliser(4), 4.0);
        assert_eq!(dr_grpo_loss_normaliser(0), 1.0);
        assert_eq!(dr_grpo_loss(&[], 4), 0.0);
    }

    #[test]
    fn malformed_shapes_are_errors() {
        assert!(dr_grpo(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(dr_grpo(&[1.0], 0).is_err());
    }
}
