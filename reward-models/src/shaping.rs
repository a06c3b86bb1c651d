//! Reward transforms (ALGORITHMS.md §4): small pure functions the learner
//! applies to the named reward components of a transition or an episode.
//! Each says in its doc where its formula comes from.

/// The logistic function σ(x) = 1 / (1 + e^(−x)), stable for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log σ(x), without underflow for very negative x.
pub fn log_sigmoid(x: f64) -> f64 {
    // log σ(x) = −log(1 + e^(−x)) = −softplus(−x)
    -softplus(-x)
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

/// Potential-based shaping (Ng, Harada & Russell 1999):
/// r' = r + γ Φ(s') − Φ(s). It leaves the optimal policy unchanged. At a
/// terminal transition Φ(s') is taken as 0, so the shaping terms of an
/// episode telescope to −Φ(s₀) for γ = 1.
pub fn potential_shaping(reward: f64, phi: f64, phi_next: f64, gamma: f64, terminal: bool) -> f64 {
    let next = if terminal { 0.0 } else { phi_next };
    reward + gamma * next - phi
}

/// Delta reward ("On Designing Effective RL Reward at Training Time"):
/// r_t = Φ(s_{t+1}) − Φ(s_t). Over an episode the sum telescopes to
/// Φ(s_T) − Φ(s_0), so revisiting a state cannot farm reward.
pub fn delta(phi: f64, phi_next: f64) -> f64 {
    phi_next - phi
}

/// Clip (same paper): r_t = min(r_PRM − η, 0): a process reward that can
/// only take away, so the policy gains nothing by lingering in states the
/// model likes.
pub fn clip(process_reward: f64, eta: f64) -> f64 {
    (process_reward - eta).min(0.0)
}

/// Preference-as-reward ("Reward Shaping to Mitigate Reward Hacking in
/// RLHF"): σ(r − r_ref), bounded in (0, 1) and centred on the reference.
pub fn preference(reward: f64, reference: f64) -> f64 {
    sigmoid(reward - reference)
}

/// Log-sigmoid sum ("Transforming and Combining Rewards"):
/// Σ_k log σ(r_k − ref_k) = log P(every component is good), so one very
/// bad component cannot be bought back by the others.
pub fn log_sigmoid_sum(rewards: &[f64], references: &[f64]) -> f64 {
    assert_eq!(
        rewards.len(),
        references.len(),
        "one reference per reward component"
    );
    rewards
        .iter()
        .zip(references)
        .map(|(r, reference)| log_sigmoid(r - reference))
        .sum()
}

/// Gate (G-RA): the step rewards of an episode count only when its
/// outcome reward reaches `threshold`; otherwise they are zeroed.
pub fn gate(step_rewards: &mut [f64], outcome: f64, threshold: f64) {
    if outcome < threshold {
        step_rewards.iter_mut().for_each(|r| *r = 0.0);
    }
}

/// Multiplicative infraction penalty (CaRL): R = completion × Π_j p_j,
/// with p_j ∈ [0, 1] the factor of each infraction that occurred (1 = no
/// effect, 0 = the episode earns nothing).
pub fn multiplicative_penalty(completion: f64, infraction_factors: &[f64]) -> f64 {
    infraction_factors
        .iter()
        .fold(completion, |r, p| r * p.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn sigmoid_and_log_sigmoid_match_their_definitions() {
        close(sigmoid(0.0), 0.5);
        close(sigmoid(2.0), 1.0 / (1.0 + (-2.0f64).exp()));
        close(sigmoid(-2.0), 1.0 - sigmoid(2.0));
        close(log_sigmoid(1.5), sigmoid(1.5).ln());
        // No underflow to −inf, no overflow to NaN.
        close(log_sigmoid(-800.0), -800.0);
        close(log_sigmoid(800.0), 0.0);
        close(sigmoid(-800.0), 0.0);
    }

    #[test]
    fn potential_shaping_by_hand() {
        // r = 1, Φ(s) = 0.2, Φ(s') = 0.5, γ = 0.9: 1 + 0.45 − 0.2
        close(potential_shaping(1.0, 0.2, 0.5, 0.9, false), 1.25);
        // Terminal: Φ(s') counts as 0.
        close(potential_shaping(1.0, 0.2, 0.5, 0.9, true), 0.8);
    }

    #[test]
    fn shaping_terms_telescope_over_an_episode() {
        let phi = [0.1, 0.4, 0.3, 0.9];
        let shaped: f64 = (0..3)
            .map(|t| potential_shaping(0.0, phi[t], phi[t + 1], 1.0, t == 2))
            .sum();
        close(shaped, -phi[0]);
        let deltas: f64 = (0..3).map(|t| delta(phi[t], phi[t + 1])).sum();
        close(deltas, phi[3] - phi[0]);
        // Going back and forth earns nothing.
        close(delta(0.3, 0.6) + delta(0.6, 0.3), 0.0);
    }

    #[test]
    fn clip_only_takes_away() {
        close(clip(0.9, 0.5), 0.0);
        close(clip(0.2, 0.5), -0.3);
        close(clip(0.5, 0.5), 0.0);
    }

    #[test]
    fn preference_is_bounded_and_centred() {
        close(preference(3.0, 3.0), 0.5);
        close(preference(4.0, 3.0), sigmoid(1.0));
        assert!(preference(1e6, 0.0) <= 1.0 && preference(-1e6, 0.0) >= 0.0);
    }

    #[test]
    fn log_sigmoid_sum_is_the_log_probability_that_all_are_good() {
        let r = [1.0, -0.5, 2.0];
        let reference = [0.0, 0.5, 1.0];
        let p_all = sigmoid(1.0) * sigmoid(-1.0) * sigmoid(1.0);
        close(log_sigmoid_sum(&r, &reference), p_all.ln());
    }

    #[test]
    fn gate_zeroes_the_steps_of_a_failed_episode() {
        let mut steps = [0.1, 0.2, 0.3];
        gate(&mut steps, 1.0, 0.5);
        assert_eq!(steps, [0.1, 0.2, 0.3]);
        gate(&mut steps, 0.0, 0.5);
        assert_eq!(steps, [0.0; 3]);
    }

    #[test]
    fn infractions_multiply() {
        close(multiplicative_penalty(0.8, &[]), 0.8);
        close(multiplicative_penalty(0.8, &[0.5, 0.5]), 0.2);
        close(multiplicative_penalty(0.8, &[0.0]), 0.0);
        // Factors outside [0, 1] are clamped, never amplify.
        close(multiplicative_penalty(0.8, &[1.5]), 0.8);
    }
}
