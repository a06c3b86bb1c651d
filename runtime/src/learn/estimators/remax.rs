//! ReMax baseline (Li et al. 2023, "ReMax: A Simple, Effective, and
//! Efficient Reinforcement Learning Method for Aligning Large Language
//! Models", arXiv 2310.10505):
//!
//!   A_i = r_i − r_greedy
//!
//! For language models the baseline is the reward of the greedy
//! (`do_sample=False`) response to the same prompt (verl: scored by the same
//! reward, no normalisation). For control (ours, ALGORITHMS.md §1.7) the
//! greedy rollout is the mean-action (noise-free) rollout from the same
//! simulator snapshot.
//!
//! **Layout.** Blocks of G + 1 returns: the first G of each block are the
//! sampled rollouts, the **last** is the greedy rollout of that start state.
//! The greedy rollout gets advantage 0 and `in_loss == false`: it was not
//! sampled from the policy's noise, so it carries no log-prob to push.

use super::{MaskedAdvantages, whole_groups};

/// ReMax advantages for blocks of `sampled_per_group` (G ≥ 1) sampled
/// returns followed by one greedy return.
pub fn remax(returns: &[f32], sampled_per_group: usize) -> Result<MaskedAdvantages, String> {
    if sampled_per_group == 0 {
        return Err("sampled_per_group must be at least 1".into());
    }
    let block = sampled_per_group + 1;
    whole_groups("returns", returns.len(), block, 2)?;
    let mut advantages = Vec::with_capacity(returns.len());
    let mut in_loss = Vec::with_capacity(returns.len());
    for b in returns.chunks_exact(block) {
        let (sampled, greedy) = b.split_at(sampled_per_group);
        let baseline = greedy[0] as f64;
        advantages.extend(sampled.iter().map(|&r| (r as f64 - baseline) as f32));
        advantages.push(0.0);
        in_loss.extend(std::iter::repeat_n(true, sampled_per_group));
        in_loss.push(false);
    }
    Ok(MaskedAdvantages {
        advantages,
        in_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_minus_greedy_and_the_greedy_row_is_left_out() {
        // G = 2. Block 1: sampled (1, 3), greedy 2 → (−1, 1, 0).
        // Block 2: sampled (5, 5), greedy 7 → (−2, −2, 0): both sampled
        // rollouts were worse than the mean action.
        let out = remax(&[1.0, 3.0, 2.0, 5.0, 5.0, 7.0], 2).unwrap();
        assert_eq!(out.advantages, [-1.0, 1.0, 0.0, -2.0, -2.0, 0.0]);
        assert_eq!(out.in_loss, [true, true, false, true, true, false]);
    }

    #[test]
    fn one_sampled_rollout_per_group() {
        // G = 1: (4, greedy 1) → (3, 0).
        let out = remax(&[4.0, 1.0], 1).unwrap();
        assert_eq!(out.advantages, [3.0, 0.0]);
        assert_eq!(out.in_loss, [true, false]);
    }

    #[test]
    fn malformed_shapes_are_errors() {
        // 5 returns are not whole blocks of G + 1 = 3.
        assert!(remax(&[1.0; 5], 2).unwrap_err().contains("returns"));
        assert!(
            remax(&[1.0; 2], 0)
                .unwrap_err()
                .contains("sampled_per_group")
        );
    }
}
