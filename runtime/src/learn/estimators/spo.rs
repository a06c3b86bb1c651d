//! Single-rollout advantages from a per-context tracker: SPO (Xu & Ding 2025,
//! "Single-stream Policy Optimization", arXiv 2509.13232; code: verl
//! `recipe/spo/spo_ray_trainer.py`) with MSSR's entropy shaping (arXiv
//! 2512.18215; the shaping term of Cheng et al. 2025, "Reasoning with
//! Exploration: An Entropy Perspective", `compute_entropy_advantage_shaping`).
//!
//! No groups: one rollout per context k (a task instance: start snapshot +
//! instruction), and a tracker per context supplies the baseline.
//!
//!   p̂_k   = α_k / (α_k + β_k)                     the baseline, read *before* the update
//!   A_i   = r_i − p̂_{k(i)}, then normalised over the batch: (A − mean)/(std + ε)
//!   α_k  ← ρ α_k + r,   β_k ← ρ β_k + (1 − r)      binary success r
//!   ρ     = clip(2^(−D/0.06), 0.875, 0.96)          D = mean |log π_stored − log π_now|
//!                                                   on k's last rollout; first visit 0.96
//!   weight_k = √(p̂_k (1 − p̂_k)) + 0.05            contexts sampled ∝ weight
//!
//! ρ forgets faster when the policy has moved (large D): ρ halves every
//! 0.06 nats of D, clipped so that the tracker remembers between
//! 1/(1 − 0.875) = 8 and 1/(1 − 0.96) = 25 effective past outcomes.
//!
//! **Prior.** Without offline estimates α0 = β0 = 0.5 (p̂ = 0.5, the most
//! uncertain, so unseen contexts are sampled most). With s offline successes
//! out of N trials the official code sets α0 = N_init (s + 0.5)/(N + 1),
//! β0 = N_init (N − s + 0.5)/(N + 1), N_init = 1/(1 − 0.875) = 8: the offline
//! estimate is worth as much as the longest memory ρ allows.
//!
//! **Real-valued returns (ours, ALGORITHMS.md §1.4).** The Beta update needs
//! r ∈ [0, 1]. For real returns the tracker keeps a discounted mean with the
//! same ρ: n ← ρ n + 1, μ ← μ + (r − μ)/n (n starts at 0, so the first visit
//! replaces the initial mean), and a discounted sum of squared deviations
//! S ← ρ S + (r − μ_old)(r − μ_new) (West 1979), so σ_k = √(S/n). The
//! sampling weight uses a *normalised spread proxy* in place of √(p̂(1 − p̂)):
//! 0.5 · σ_k / max_j σ_j, in [0, 0.5] like the binary term; a context
//! visited fewer than twice has no spread estimate yet and gets the maximum
//! 0.5, as an unseen binary context does.
//!
//! **Batch normalisation.** Sample std (n − 1), as the official
//! `advantages.std()`; ε = 1e-8 there. A batch without spread gives zeros.
//!
//! **MSSR entropy shaping.** ψ_t = min(0.4 · H_t, |A_t|/2), A_t ← A_t + ψ_t,
//! with H detached. ψ ≥ 0 is **added whatever A's sign**, exactly as the
//! reference `advantages + compute_entropy_advantage_shaping(...)`: for
//! A > 0 it reinforces an uncertain good action more, for A < 0 it punishes
//! an uncertain bad action less; both favour exploration. It cannot flip the
//! sign because ψ ≤ |A|/2, so |A + ψ| ≥ |A|/2 when A < 0. Adding sign(A)·ψ
//! instead would punish uncertain bad actions *more* and drive entropy down,
//! the opposite of the intent.
//!
//! **Entropy for a Gaussian policy.** The reference H is −p log p of a
//! sampled token, never negative. A Gaussian's differential entropy
//! ½ log(2πe σ²) is negative for σ < 1/√(2πe) ≈ 0.242, which would make ψ
//! negative: a penalty, and unbounded by the |A|/2 cap, so able to flip a
//! positive A. We use the non-negative surrogate
//! Σ_d max(0, H_d − H_floor) with H_floor the entropy at the policy's log-σ
//! floor; the ½ log(2πe) terms cancel, leaving Σ_d max(0, log σ_d − log σ_floor).
//! It is 0 at the floor and grows with σ. Summed over d action dimensions it
//! often exceeds |A|/(2 · 0.4), so ψ saturates at |A|/2 for wide policies.

use rand::Rng;

use super::{check_eps, mean, sample_std, standardise};

/// ρ never falls below this: even after a large policy change the tracker
/// still remembers 1/(1 − 0.875) = 8 effective outcomes.
pub const RHO_MIN: f32 = 0.875;
/// ρ never exceeds this: about 1/(1 − 0.96) = 25 effective outcomes remembered.
pub const RHO_MAX: f32 = 0.96;
/// The policy change D (mean |Δ log π|, nats) at which ρ halves.
pub const CHANGE_HALF_LIFE: f32 = 0.06;
/// Added to every sampling weight so that no context is starved.
pub const EXPLORATION_BONUS: f32 = 0.05;
/// N_init = 1/(1 − RHO_MIN): pseudo-count of an offline prior.
pub const OFFLINE_PRIOR_COUNT: f64 = 8.0;
/// MSSR's α: ψ = min(0.4 · H, |A|/κ).
pub const MSSR_ENTROPY_COEF: f32 = 0.4;
/// MSSR's 1/κ with κ = 2: ψ is at most half of |A|.
pub const MSSR_MAX_FRACTION: f32 = 0.5;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Estimate {
    /// Beta(α, β) over the success probability.
    Beta { alpha: f64, beta: f64 },
    /// Discounted count n, mean μ and sum of squared deviations S.
    DiscountedMean { count: f64, mean: f64, squares: f64 },
}

/// One estimate per context, all of the same kind (binary or real-valued).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContextTracker {
    estimates: Vec<Estimate>,
    visits: Vec<u32>,
}

impl ContextTracker {
    /// Binary-success tracker over `contexts` contexts, prior α0 = β0 = 0.5.
    pub fn binary(contexts: usize) -> Self {
        Self {
            estimates: vec![
                Estimate::Beta {
                    alpha: 0.5,
                    beta: 0.5
                };
                contexts
            ],
            visits: vec![0; contexts],
        }
    }

    /// Real-valued tracker over `contexts` contexts; `initial_mean` is the
    /// baseline until a context's first visit replaces it.
    pub fn real_valued(contexts: usize, initial_mean: f32) -> Self {
        Self {
            estimates: vec![
                Estimate::DiscountedMean {
                    count: 0.0,
                    mean: initial_mean as f64,
                    squares: 0.0,
                };
                contexts
            ],
            visits: vec![0; contexts],
        }
    }

    /// Sets context k's prior from `successes` out of `trials` offline
    /// rollouts (binary tracker only). No trials keeps α0 = β0 = 0.5.
    pub fn set_offline_prior(
        &mut self,
        k: usize,
        successes: u32,
        trials: u32,
    ) -> Result<(), String> {
        if successes > trials {
            return Err(format!("successes ({successes}) exceed trials ({trials})"));
        }
        let (s, n) = (successes as f64, trials as f64);
        match self.estimates.get_mut(k) {
            None => Err(format!("context {k} out of range 0..{}", self.visits.len())),
            Some(Estimate::DiscountedMean { .. }) => {
                Err("set_offline_prior needs a binary tracker".into())
            }
            Some(Estimate::Beta { alpha, beta }) => {
                if trials > 0 {
                    *alpha = OFFLINE_PRIOR_COUNT * (s + 0.5) / (n + 1.0);
                    *beta = OFFLINE_PRIOR_COUNT * (n - s + 0.5) / (n + 1.0);
                }
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.estimates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.estimates.is_empty()
    }

    /// How many times context k has been updated.
    pub fn visits(&self, k: usize) -> u32 {
        self.visits[k]
    }

    /// The baseline of context k: p̂ = α/(α + β), or the discounted mean.
    /// Read it *before* [`Self::update`] with the rollout it baselines.
    /// Panics if k is out of range (a caller bug, not user input).
    pub fn baseline(&self, k: usize) -> f32 {
        match self.estimates[k] {
            Estimate::Beta { alpha, beta } => (alpha / (alpha + beta)) as f32,
            Estimate::DiscountedMean { mean, .. } => mean as f32,
        }
    }

    /// Folds return `r` of context k in with forgetting factor `rho` in
    /// (0, 1] (see [`rho_from_change`]). A binary tracker needs r ∈ [0, 1].
    pub fn update(&mut self, k: usize, r: f32, rho: f32) -> Result<(), String> {
        if !(rho > 0.0 && rho <= 1.0) {
            return Err(format!("rho must lie in (0, 1], got {rho}"));
        }
        if !r.is_finite() {
            return Err(format!("return of context {k} is not finite: {r}"));
        }
        let (rho, r) = (rho as f64, r as f64);
        match self.estimates.get_mut(k) {
            None => return Err(format!("context {k} out of range 0..{}", self.visits.len())),
            Some(Estimate::Beta { alpha, beta }) => {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("a binary tracker needs r in [0, 1], got {r}"));
                }
                *alpha = rho * *alpha + r;
                *beta = rho * *beta + (1.0 - r);
            }
            Some(Estimate::DiscountedMean {
                count,
                mean,
                squares,
            }) => {
                let old_mean = *mean;
                *count = rho * *count + 1.0;
                *mean += (r - old_mean) / *count;
                *squares = rho * *squares + (r - old_mean) * (r - *mean);
            }
        }
        self.visits[k] += 1;
        Ok(())
    }

    /// Sampling weight per context: √(p̂(1 − p̂)) + 0.05 (binary), or the
    /// normalised spread 0.5 · σ_k / max_j σ_j + 0.05 (real-valued; 0.5 for
    /// contexts visited fewer than twice). Always ≥ 0.05.
    pub fn sampling_weights(&self) -> Vec<f32> {
        let spread = |k: usize| match self.estimates[k] {
            Estimate::DiscountedMean { count, squares, .. } if self.visits[k] >= 2 => {
                Some((squares / count).max(0.0).sqrt())
            }
            _ => None,
        };
        let max_spread = (0..self.len()).filter_map(spread).fold(0.0f64, f64::max);
        (0..self.len())
            .map(|k| {
                let uncertainty = match self.estimates[k] {
                    Estimate::Beta { alpha, beta } => {
                        let p = alpha / (alpha + beta);
                        (p * (1.0 - p)).max(0.0).sqrt()
                    }
                    Estimate::DiscountedMean { .. } => match spread(k) {
                        None => 0.5,
                        Some(s) if max_spread > 0.0 => 0.5 * s / max_spread,
                        Some(_) => 0.0,
                    },
                };
                uncertainty as f32 + EXPLORATION_BONUS
            })
            .collect()
    }

    /// Draws `n` contexts with probability ∝ [`Self::sampling_weights`], as
    /// the official `np.random.choice(K, n, replace = n > K, p)`: without
    /// replacement when n ≤ K (a batch of distinct contexts), with
    /// replacement otherwise. Deterministic given the rng's state: one
    /// `rng.random::<f64>()` per draw.
    pub fn sample_contexts(&self, n: usize, rng: &mut impl Rng) -> Vec<usize> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut weights: Vec<f64> = self.sampling_weights().iter().map(|&w| w as f64).collect();
        let with_replacement = n > weights.len();
        (0..n)
            .map(|_| {
                let k = weighted_pick(&weights, rng.random::<f64>());
                if !with_replacement {
                    weights[k] = 0.0;
                }
                k
            })
            .collect()
    }
}

/// The index whose cumulative-weight interval holds u · Σw, u ∈ [0, 1).
/// Zero weights are never picked; rounding past the end picks the last
/// positive weight.
fn weighted_pick(weights: &[f64], u: f64) -> usize {
    let target = u * weights.iter().sum::<f64>();
    let mut cumulative = 0.0;
    let mut last_positive = 0;
    for (k, &w) in weights.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        last_positive = k;
        cumulative += w;
        if target < cumulative {
            return k;
        }
    }
    last_positive
}

/// ρ = clip(2^(−D/0.06), 0.875, 0.96) from D, the mean |log π_stored −
/// log π_now| on the context's last rollout. `None` (first visit: nothing
/// stored) gives 0.96, as the official code's D = 0. A NaN D gives the
/// fastest forgetting, 0.875: an unmeasurable change is treated as large.
pub fn rho_from_change(mean_abs_log_prob_change: Option<f32>) -> f32 {
    match mean_abs_log_prob_change {
        None => RHO_MAX,
        Some(d) if d.is_nan() => RHO_MIN,
        Some(d) => 2f32.powf(-d / CHANGE_HALF_LIFE).clamp(RHO_MIN, RHO_MAX),
    }
}

/// SPO advantages: A_i = r_i − baseline_i, normalised over the batch with
/// the sample std plus `eps` (official 1e-8). `baselines[i]` is the
/// tracker's baseline for rollout i's context, read before the update.
pub fn spo_advantages(returns: &[f32], baselines: &[f32], eps: f32) -> Result<Vec<f32>, String> {
    if baselines.len() != returns.len() {
        return Err(format!(
            "baselines: {} for {} returns",
            baselines.len(),
            returns.len()
        ));
    }
    check_eps("eps", eps)?;
    let raw: Vec<f32> = returns
        .iter()
        .zip(baselines)
        .map(|(&r, &b)| (r as f64 - b as f64) as f32)
        .collect();
    let centre = mean(&raw);
    let scale = sample_std(&raw, centre) + eps as f64;
    Ok(raw
        .iter()
        .map(|&a| standardise(a as f64, centre, scale) as f32)
        .collect())
}

/// MSSR entropy shaping of one advantage: A + min(0.4 · H, |A|/2), with the
/// shaping added whatever A's sign (see the module doc). A negative H is
/// treated as 0: a negative ψ would be an entropy *penalty* not bounded by
/// |A|/2. Use a non-negative H such as [`gaussian_entropy_surrogate`].
pub fn mssr_shape(advantage: f32, entropy_surrogate: f32) -> f32 {
    let entropy = entropy_surrogate.max(0.0);
    let psi = (MSSR_ENTROPY_COEF * entropy).min(MSSR_MAX_FRACTION * advantage.abs());
    advantage + psi
}

/// Non-negative entropy surrogate of a diagonal Gaussian:
/// Σ_d max(0, H_d − H_floor), H_d = ½ log(2πe σ_d²), H_floor the entropy at
/// σ = exp(`log_std_floor`) (e.g. the policy's log-σ floor, −5). The
/// ½ log(2πe) cancels: Σ_d max(0, log σ_d − log_std_floor).
pub fn gaussian_entropy_surrogate(log_std: &[f32], log_std_floor: f32) -> f32 {
    log_std.iter().map(|&l| (l - log_std_floor).max(0.0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn near(a: f32, b: f32, tol: f32) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn binary_prior_is_one_half_and_offline_prior_by_hand() {
        let mut tracker = ContextTracker::binary(2);
        assert_eq!(tracker.baseline(0), 0.5);
        // 3 of 4 offline: α0 = 8 · 3.5/5 = 5.6, β0 = 8 · 1.5/5 = 2.4, p̂ = 0.7.
        tracker.set_offline_prior(1, 3, 4).unwrap();
        near(tracker.baseline(1), 0.7, 1e-6);
        // The prior is worth 8 outcomes: one failure with ρ = 1 gives
        // 5.6/(5.6 + 3.4) = 0.62222.
        tracker.update(1, 0.0, 1.0).unwrap();
        near(tracker.baseline(1), 0.62222, 1e-5);
        // No trials: keeps 0.5/0.5.
        tracker.set_offline_prior(0, 0, 0).unwrap();
        assert_eq!(tracker.baseline(0), 0.5);
        assert!(tracker.set_offline_prior(0, 5, 4).is_err());
        assert!(tracker.set_offline_prior(9, 1, 4).is_err());
    }

    #[test]
    fn binary_update_arithmetic() {
        // α = β = 0.5. Success with ρ = 0.96: α = 0.48 + 1 = 1.48, β = 0.48,
        // p̂ = 1.48/1.96 = 0.75510. Failure with ρ = 0.875:
        // α = 1.295, β = 0.42 + 1 = 1.42, p̂ = 1.295/2.715 = 0.47698.
        let mut tracker = ContextTracker::binary(1);
        tracker.update(0, 1.0, 0.96).unwrap();
        near(tracker.baseline(0), 0.75510, 1e-5);
        tracker.update(0, 0.0, 0.875).unwrap();
        near(tracker.baseline(0), 0.47698, 1e-5);
        assert_eq!(tracker.visits(0), 2);
        assert!(tracker.update(0, 2.0, 0.9).unwrap_err().contains("[0, 1]"));
        assert!(tracker.update(0, 1.0, 0.0).unwrap_err().contains("rho"));
        assert!(tracker.update(0, f32::NAN, 0.9).is_err());
        assert!(tracker.update(3, 1.0, 0.9).is_err());
    }

    #[test]
    fn discounted_mean_update_arithmetic() {
        // ρ = 0.5, returns 2 then 4, initial mean 10.
        // n = 1, μ = 10 + (2 − 10)/1 = 2 (the first visit replaces the prior),
        //   S = (2 − 10)(2 − 2) = 0.
        // n = 0.5 + 1 = 1.5, μ = 2 + 2/1.5 = 3.33333 (= (0.5·2 + 4)/1.5),
        //   S = 0 + (4 − 2)(4 − 3.33333) = 1.33333, σ² = S/n = 0.88889
        //   (= (0.5·1.33333² + 0.66667²)/1.5).
        let mut tracker = ContextTracker::real_valued(1, 10.0);
        assert_eq!(tracker.baseline(0), 10.0);
        tracker.update(0, 2.0, 0.5).unwrap();
        assert_eq!(tracker.baseline(0), 2.0);
        tracker.update(0, 4.0, 0.5).unwrap();
        near(tracker.baseline(0), 3.33333, 1e-5);
        match tracker.estimates[0] {
            Estimate::DiscountedMean { count, squares, .. } => {
                assert!((squares / count - 0.88889).abs() < 1e-5)
            }
            _ => unreachable!(),
        }
        // A real-valued tracker takes returns outside [0, 1].
        tracker.update(0, -50.0, 0.9).unwrap();
        assert!(tracker.set_offline_prior(0, 1, 2).is_err());
    }

    #[test]
    fn rho_clip_bounds_and_first_visit() {
        assert_eq!(rho_from_change(None), 0.96);
        // D = 0: 2⁰ = 1 → clipped to 0.96 (what the official first visit computes).
        assert_eq!(rho_from_change(Some(0.0)), 0.96);
        // D = 0.01: 2^(−1/6) = 0.89090, inside the clip.
        near(rho_from_change(Some(0.01)), 0.89090, 1e-5);
        // D = 0.06: one half-life, 0.5 → clipped to 0.875.
        assert_eq!(rho_from_change(Some(0.06)), 0.875);
        assert_eq!(rho_from_change(Some(f32::INFINITY)), 0.875);
        assert_eq!(rho_from_change(Some(f32::NAN)), 0.875);
        assert_eq!(rho_from_change(Some(-1.0)), 0.96);
    }

    #[test]
    fn binary_sampling_weights_by_hand() {
        // Prior p̂ = 0.5: √0.25 + 0.05 = 0.55.
        // After a success at ρ = 0.96, p̂ = 0.75510: √(0.75510 · 0.24490) + 0.05 = 0.48003.
        let mut tracker = ContextTracker::binary(2);
        tracker.update(1, 1.0, 0.96).unwrap();
        let w = tracker.sampling_weights();
        near(w[0], 0.55, 1e-6);
        near(w[1], 0.48003, 1e-5);
    }

    #[test]
    fn real_valued_sampling_weights_use_the_normalised_spread() {
        // Context 0: returns 0, 2 at ρ = 1: μ = 1, S = 2, σ = 1.
        // Context 1: returns 0, 4: μ = 2, S = 8, σ = 2 (the largest).
        // Context 2: one visit, no spread yet → 0.5.
        // Weights: 0.5 · 1/2 + 0.05 = 0.3, 0.5 + 0.05 = 0.55, 0.55.
        let mut tracker = ContextTracker::real_valued(3, 0.0);
        for (k, r) in [(0, 0.0), (0, 2.0), (1, 0.0), (1, 4.0), (2, 7.0)] {
            tracker.update(k, r, 1.0).unwrap();
        }
        let w = tracker.sampling_weights();
        near(w[0], 0.3, 1e-6);
        near(w[1], 0.55, 1e-6);
        near(w[2], 0.55, 1e-6);
    }

    #[test]
    fn weighted_pick_by_hand() {
        // Weights (0.55, 0.05, 0.55), total 1.15, intervals
        // [0, 0.55), [0.55, 0.6), [0.6, 1.15).
        let w = [0.55, 0.05, 0.55];
        assert_eq!(weighted_pick(&w, 0.0), 0);
        assert_eq!(weighted_pick(&w, 0.47), 0); // 0.5405
        assert_eq!(weighted_pick(&w, 0.5), 1); // 0.575
        assert_eq!(weighted_pick(&w, 0.53), 2); // 0.6095
        assert_eq!(weighted_pick(&w, 0.999_999_9), 2);
        // A zero weight is never picked.
        assert_eq!(weighted_pick(&[0.5, 0.0, 0.5], 0.5), 2);
    }

    #[test]
    fn sampling_is_deterministic_and_follows_the_weights() {
        let mut tracker = ContextTracker::binary(3);
        // Context 2 learnt to succeed always: low weight.
        for _ in 0..50 {
            tracker.update(2, 1.0, 0.96).unwrap();
        }
        let draw = |seed, n| tracker.sample_contexts(n, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(draw(7, 100), draw(7, 100));
        assert_ne!(draw(7, 100), draw(8, 100));
        // n ≤ K: without replacement, every context once.
        let mut distinct = draw(3, 3);
        distinct.sort();
        assert_eq!(distinct, [0, 1, 2]);
        // n > K: with replacement, frequencies ∝ weights.
        let w = tracker.sampling_weights();
        let total: f32 = w.iter().sum();
        let draws = draw(11, 20_000);
        for (k, wk) in w.iter().enumerate() {
            let freq = draws.iter().filter(|&&d| d == k).count() as f32 / 20_000.0;
            near(freq, wk / total, 0.015);
        }
        assert!(
            ContextTracker::binary(0)
                .sample_contexts(4, &mut ChaCha8Rng::seed_from_u64(0))
                .is_empty()
        );
    }

    #[test]
    fn advantages_are_normalised_over_the_batch() {
        // r − p̂ = (1 − 0.5, 0 − 0.5, 1 − 0.75, 0 − 0.25) = (0.5, −0.5, 0.25, −0.25):
        // mean 0, squares 0.25 + 0.25 + 0.0625 + 0.0625 = 0.625, sample var
        // 0.20833, std 0.45644 → A = (1.09545, −1.09545, 0.54772, −0.54772).
        let a = spo_advantages(&[1.0, 0.0, 1.0, 0.0], &[0.5, 0.5, 0.75, 0.25], 0.0).unwrap();
        for (x, y) in a.iter().zip([1.09545, -1.09545, 0.54772, -0.54772]) {
            near(*x, y, 1e-5);
        }
        // No spread (every rollout beat its baseline by 0.5): zeros.
        let flat = spo_advantages(&[1.0, 1.0], &[0.5, 0.5], 0.0).unwrap();
        assert_eq!(flat, [0.0, 0.0]);
        assert_eq!(spo_advantages(&[1.0], &[0.5], 1e-8).unwrap(), [0.0]);
        assert!(
            spo_advantages(&[1.0], &[], 1e-8)
                .unwrap_err()
                .contains("baselines")
        );
    }

    #[test]
    fn mssr_shaping_by_hand_and_it_never_flips_the_sign() {
        // A = 1, H = 0.5: ψ = min(0.2, 0.5) = 0.2 → 1.2.
        near(mssr_shape(1.0, 0.5), 1.2, 1e-6);
        // A = −1, H = 0.5: ψ = 0.2 → −0.8 (a smaller penalty).
        near(mssr_shape(-1.0, 0.5), -0.8, 1e-6);
        // A = −1, H = 10: ψ = min(4, 0.5) = 0.5 → −0.5, still negative.
        near(mssr_shape(-1.0, 10.0), -0.5, 1e-6);
        assert_eq!(mssr_shape(0.0, 10.0), 0.0);
        // A negative entropy would be a penalty: treated as 0.
        assert_eq!(mssr_shape(1.0, -3.0), 1.0);
        for a in [-5.0f32, -1.0, -1e-3, 1e-3, 0.7, 9.0] {
            for h in [0.0f32, 0.01, 1.0, 100.0, -100.0] {
                let shaped = mssr_shape(a, h);
                assert_eq!(shaped.signum(), a.signum(), "a {a}, h {h}");
                assert!(shaped.abs() >= a.abs() / 2.0);
            }
        }
    }

    #[test]
    fn gaussian_entropy_surrogate_by_hand() {
        // Floor −5: log σ = (0, −6, −1) → 5 + 0 + 4 = 9.
        near(
            gaussian_entropy_surrogate(&[0.0, -6.0, -1.0], -5.0),
            9.0,
            1e-6,
        );
        // σ = 0.1: differential entropy ½ log(2πe) + log 0.1 = 1.41894 − 2.30259
        // = −0.88365 < 0, but the surrogate is −2.30259 + 5 = 2.69741 > 0.
        let log_sigma = 0.1f32.ln();
        let differential =
            0.5 * (2.0 * std::f32::consts::PI * std::f32::consts::E).ln() + log_sigma;
        near(differential, -0.88365, 1e-5);
        near(
            gaussian_entropy_surrogate(&[log_sigma], -5.0),
            2.69741,
            1e-5,
        );
        // Differential entropy crosses 0 at σ = 1/√(2πe) = 0.24197.
        near(
            (-0.5 * (2.0 * std::f32::consts::PI * std::f32::consts::E).ln()).exp(),
            0.24197,
            1e-5,
        );
        assert_eq!(gaussian_entropy_surrogate(&[], -5.0), 0.0);
    }
}
