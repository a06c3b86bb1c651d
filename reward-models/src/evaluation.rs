//! How far a learned reward is from the truth (ALGORITHMS.md §5), measured
//! on simulator transitions before anyone trains on it.
//!
//! - EPIC (Gleave et al. 2021, "Quantifying Differences in Reward
//!   Functions"): canonicalise each reward so that potential shaping
//!   disappears, then take the Pearson distance √((1 − ρ)/2). 0 means the
//!   rewards induce the same optimal policies for every dynamics; 1 means
//!   opposite.
//! - Spearman's rank correlation: predicted progress against time on an
//!   episode (1 = perfectly monotone).

/// Pearson's correlation coefficient; `None` when either side is constant
/// or the lengths differ or are < 2.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    (sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Ranks from 1, ties sharing the mean of their ranks.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let shared = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = shared;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (Pearson on ranks, ties averaged).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

/// Pearson distance √((1 − ρ)/2) ∈ [0, 1].
pub fn pearson_distance(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(x, y).map(|rho| ((1.0 - rho) / 2.0).max(0.0).sqrt())
}

/// Samples the canonicalisation averages over: states S (used for both S
/// and S′) and actions A, as in EPIC's coverage distributions.
pub struct Coverage<'a, S, A> {
    pub states: &'a [S],
    pub actions: &'a [A],
}

/// EPIC's canonical form of `reward` at (s, a, s′):
/// C(R)(s, a, s′) = R(s, a, s′) + E[γ R(s′, A, S′) − R(s, A, S′) − γ R(S, A, S′)]
/// with the expectations over the coverage samples. Potential shaping
/// γΦ(s′) − Φ(s) cancels exactly.
pub fn canonicalize<S, A>(
    reward: &dyn Fn(&S, &A, &S) -> f64,
    transition: (&S, &A, &S),
    coverage: &Coverage<S, A>,
    gamma: f64,
) -> f64 {
    let (s, a, s_next) = transition;
    let mean_from = |from: &S| {
        let mut sum = 0.0;
        for action in coverage.actions {
            for to in coverage.states {
                sum += reward(from, action, to);
            }
        }
        sum / (coverage.actions.len() * coverage.states.len()) as f64
    };
    let mean_all =
        coverage.states.iter().map(mean_from).sum::<f64>() / coverage.states.len() as f64;
    reward(s, a, s_next) + gamma * mean_from(s_next) - mean_from(s) - gamma * mean_all
}

/// EPIC distance between two rewards on `transitions` (e.g. from expert,
/// noisy and failed policies in the simulator); `None` when either
/// canonical reward is constant there or the coverage is empty.
pub fn epic_distance<S, A>(
    reward_a: &dyn Fn(&S, &A, &S) -> f64,
    reward_b: &dyn Fn(&S, &A, &S) -> f64,
    transitions: &[(S, A, S)],
    coverage: &Coverage<S, A>,
    gamma: f64,
) -> Option<f64> {
    if coverage.states.is_empty() || coverage.actions.is_empty() {
        return None;
    }
    let canonical = |reward: &dyn Fn(&S, &A, &S) -> f64| -> Vec<f64> {
        transitions
            .iter()
            .map(|(s, a, s_next)| canonicalize(reward, (s, a, s_next), coverage, gamma))
            .collect()
    };
    pearson_distance(&canonical(reward_a), &canonical(reward_b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) {
        assert!((a - b).abs() < tolerance, "{a} vs {b}");
    }

    #[test]
    fn pearson_and_spearman_by_hand() {
        close(
            pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(),
            1.0,
            1e-12,
        );
        close(
            pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0,
            1e-12,
        );
        // x = 1,2,3,4; y = 1,3,2,4: cov 1.0, var 1.25 each → 0.8
        close(
            pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            0.8,
            1e-12,
        );
        // Monotone but not linear: Spearman 1, Pearson below.
        let t = [0.0, 1.0, 2.0, 3.0, 4.0];
        let progress = [0.0, 0.1, 0.15, 0.6, 1.0];
        close(spearman(&t, &progress).unwrap(), 1.0, 1e-12);
        assert!(pearson(&t, &progress).unwrap() < 1.0);
        // Ties share ranks: y ranks 1, 2.5, 2.5, 4.
        assert_eq!(ranks(&[0.0, 0.5, 0.5, 1.0]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    type World = (Vec<f64>, Vec<f64>, Vec<(f64, f64, f64)>);

    fn world() -> World {
        // States on a line, actions as pushes; a fixed pseudo-random set
        // of transitions (no rand crate: a small LCG).
        let states: Vec<f64> = (0..12).map(|i| i as f64 * 0.25 - 1.5).collect();
        let actions: Vec<f64> = vec![-1.0, -0.3, 0.0, 0.4, 1.0];
        let mut seed = 12345u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let transitions = (0..200)
            .map(|_| (states[next(12)], actions[next(5)], states[next(12)]))
            .collect();
        (states, actions, transitions)
    }

    fn truth(s: &f64, a: &f64, s_next: &f64) -> f64 {
        -(s_next - 0.5).abs() - 0.1 * a * a + 0.3 * s
    }

    #[test]
    fn a_potential_shaped_copy_is_at_distance_zero() {
        let (states, actions, transitions) = world();
        let coverage = Coverage {
            states: &states,
            actions: &actions,
        };
        let gamma = 0.9;
        let phi = |s: &f64| (3.0 * s).sin() + s * s;
        let shaped =
            |s: &f64, a: &f64, s_next: &f64| truth(s, a, s_next) + gamma * phi(s_next) - phi(s);
        let d = epic_distance(&truth, &shaped, &transitions, &coverage, gamma).unwrap();
        close(d, 0.0, 1e-6);
        // Positive scaling plus shaping: still the same reward.
        let scaled = |s: &f64, a: &f64, s_next: &f64| 4.0 * shaped(s, a, s_next);
        close(
            epic_distance(&truth, &scaled, &transitions, &coverage, gamma).unwrap(),
            0.0,
            1e-6,
        );
        // The raw (uncanonicalised) Pearson distance is far from zero: the
        // canonicalisation is what removes the shaping.
        let raw_a: Vec<f64> = transitions.iter().map(|(s, a, n)| truth(s, a, n)).collect();
        let raw_b: Vec<f64> = transitions
            .iter()
            .map(|(s, a, n)| shaped(s, a, n))
            .collect();
        assert!(pearson_distance(&raw_a, &raw_b).unwrap() > 0.1);
    }

    #[test]
    fn the_negated_reward_is_at_distance_one() {
        let (states, actions, transitions) = world();
        let coverage = Coverage {
            states: &states,
            actions: &actions,
        };
        let negated = |s: &f64, a: &f64, n: &f64| -truth(s, a, n);
        close(
            epic_distance(&truth, &negated, &transitions, &coverage, 0.9).unwrap(),
            1.0,
            1e-6,
        );
    }

    #[test]
    fn an_unrelated_reward_is_near_the_middle() {
        let (states, actions, transitions) = world();
        let coverage = Coverage {
            states: &states,
            actions: &actions,
        };
        // Depends only on the action's sign pattern: unrelated to `truth`'s
        // state terms; ρ small, distance near √(1/2) ≈ 0.71.
        let unrelated = |_: &f64, a: &f64, _: &f64| (7.0 * a).cos();
        let d = epic_distance(&truth, &unrelated, &transitions, &coverage, 0.9).unwrap();
        assert!((0.55..0.85).contains(&d), "{d}");
    }
}
