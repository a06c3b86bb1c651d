//! Advantage estimators: pure functions from a batch of rewards (and what
//! each needs) to advantages. Formulas and sources: ALGORITHMS.md §1.

/// Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional
/// Continuous Control Using Generalized Advantage Estimation"):
///
///   δ_t = r_t + γ · V(s_{t+1}) · (1 − terminated_t) − V(s_t)
///   A_t = δ_t + γλ · (1 − ended_t) · A_{t+1}
///
/// All slices are time-major, `steps × envs` (index `t · envs + e`).
/// `next_values[t]` is V of the state that followed step t: the next
/// observation, or the *final* observation of an episode that was truncated
/// by its time limit, so that truncation bootstraps from V(s_T) while
/// termination (`terminated`) does not. `ended` (terminated or truncated)
/// stops the recursion at the episode boundary. Returns (advantages,
/// returns = advantages + values).
#[allow(clippy::too_many_arguments)]
pub fn gae(
    envs: usize,
    rewards: &[f32],
    values: &[f32],
    next_values: &[f32],
    terminated: &[bool],
    ended: &[bool],
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    assert!(
        envs > 0 && n.is_multiple_of(envs),
        "rewards must be steps × envs"
    );
    for len in [
        values.len(),
        next_values.len(),
        terminated.len(),
        ended.len(),
    ] {
        assert_eq!(len, n, "every input is steps × envs");
    }
    let mut advantages = vec![0.0f32; n];
    let mut running = vec![0.0f32; envs];
    for i in (0..n).rev() {
        let e = i % envs;
        let bootstrap = if terminated[i] {
            0.0
        } else {
            gamma * next_values[i]
        };
        let delta = rewards[i] + bootstrap - values[i];
        let carry = if ended[i] {
            0.0
        } else {
            gamma * lambda * running[e]
        };
        running[e] = delta + carry;
        advantages[i] = running[e];
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
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
    fn gae_by_hand_one_env() {
        // γ = 0.5, λ = 0.5; three steps, no episode end.
        // δ0 = 1 + 0.5·2 − 1 = 1;  δ1 = 0 + 0.5·3 − 2 = −0.5;  δ2 = 2 + 0.5·4 − 3 = 1
        // A2 = 1; A1 = −0.5 + 0.25·1 = −0.25; A0 = 1 + 0.25·(−0.25) = 0.9375
        let (adv, ret) = gae(
            1,
            &[1.0, 0.0, 2.0],
            &[1.0, 2.0, 3.0],
            &[2.0, 3.0, 4.0],
            &[false; 3],
            &[false; 3],
            0.5,
            0.5,
        );
        close(&adv, &[0.9375, -0.25, 1.0]);
        close(&ret, &[1.9375, 1.75, 4.0]);
    }

    #[test]
    fn termination_does_not_bootstrap_and_truncation_does() {
        // Step 0 ends the episode. Terminated: δ0 = 1 − 1 = 0.
        // Truncated with V(s_T) = 10: δ0 = 1 + 0.5·10 − 1 = 5. Neither carries A1.
        let run = |terminated: bool| {
            gae(
                1,
                &[1.0, 1.0],
                &[1.0, 1.0],
                &[10.0, 2.0],
                &[terminated, false],
                &[true, false],
                0.5,
                0.9,
            )
            .0
        };
        close(&run(true), &[0.0, 1.0]);
        close(&run(false), &[5.0, 1.0]);
    }

    #[test]
    fn gae_keeps_envs_apart() {
        // Two envs interleaved time-major; env 1 is env 0 shifted by one.
        let (adv, _) = gae(
            2,
            &[1.0, 0.0, 0.0, 1.0],
            &[0.0; 4],
            &[0.0; 4],
            &[false; 4],
            &[false; 4],
            0.9,
            1.0,
        );
        close(&adv, &[1.0, 0.9, 0.0, 1.0]);
    }
}
