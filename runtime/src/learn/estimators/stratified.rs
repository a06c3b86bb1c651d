//! Stratified advantage normalisation (arXiv 2510.06214, "Stratified GRPO";
//! described in the paper, no official code found):
//!
//!   A_strat,i  = (r_i − mean_{s(i)} r) / (std_{s(i)} r + ε)   within i's stratum
//!   A_global,i = (r_i − mean r) / (std r + ε)                 over the batch
//!   A_i        = α · A_strat,i + (1 − α) · A_global,i
//!
//! A rollout alone in its stratum has no stratum statistics and gets
//! A_global alone. The paper's decomposition A_global = A_strat + (r̄_s − r̄)
//! (for equal stds) names what stratification removes: the cross-stratum
//! bias r̄_s − r̄. For a robot, rollouts the operator intervened in, that
//! the safety clamp cut short, that ran on the real robot rather than the
//! simulator, or that lasted much longer, have returns shifted for reasons
//! the policy's action did not cause; comparing within a stratum takes the
//! shift out, and the global term keeps the batch's overall ranking.
//!
//! **Never stratify by success.** Within a "succeeded" stratum every binary
//! return is equal, so the estimator would erase exactly the signal it
//! should learn from. [`NuisanceFlags`] therefore has no success field.
//! Length buckets are a nuisance only when length is not decided by success
//! (a fixed horizon, a time limit); where success ends the episode early,
//! leave the length bucket at 0.
//!
//! **Which std.** Sample std (n − 1), like the rest of the GRPO family here
//! (torch's default); the paper does not say. A stratum whose returns are
//! all equal gets A_strat = 0.

use std::collections::HashMap;

use super::{check_eps, mean, sample_std, standardise};

/// The nuisance variables a stratum may be built from. Deliberately no
/// success flag (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NuisanceFlags {
    /// The operator took over during the rollout.
    pub intervened: bool,
    /// The safety clamp modified or stopped an action.
    pub safety_clamped: bool,
    /// The rollout ran on the real robot (false: in the simulator).
    pub real_robot: bool,
    /// An episode-length bucket, see [`length_bucket`]; 0 to ignore length.
    pub length_bucket: u8,
}

impl NuisanceFlags {
    /// A stratum id: one bit per flag, the length bucket above them.
    /// Distinct flags always give distinct ids.
    pub fn stratum_id(&self) -> u32 {
        (self.intervened as u32)
            | (self.safety_clamped as u32) << 1
            | (self.real_robot as u32) << 2
            | (self.length_bucket as u32) << 3
    }
}

/// The bucket of an episode of `episode_len` steps among `buckets` equal
/// slices of `0..max_episode_len`; lengths at or past the maximum fall in
/// the last bucket. 0 when `buckets` is 0 or 1.
pub fn length_bucket(episode_len: usize, max_episode_len: usize, buckets: u8) -> u8 {
    if buckets <= 1 {
        return 0;
    }
    let bucket = episode_len.saturating_mul(buckets as usize) / max_episode_len.max(1);
    bucket.min(buckets as usize - 1) as u8
}

/// Stratified advantages: `strata[i]` is the stratum id of rollout i (from
/// [`NuisanceFlags::stratum_id`] or any other nuisance key), `alpha` in
/// [0, 1] the weight of the within-stratum term, `eps` ≥ 0 added to both stds.
pub fn stratified(
    returns: &[f32],
    strata: &[u32],
    alpha: f32,
    eps: f32,
) -> Result<Vec<f32>, String> {
    if strata.len() != returns.len() {
        return Err(format!(
            "strata: {} ids for {} returns",
            strata.len(),
            returns.len()
        ));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(format!("alpha must lie in [0, 1], got {alpha}"));
    }
    check_eps("eps", eps)?;
    let eps = eps as f64;
    let alpha = alpha as f64;

    let global_mean = mean(returns);
    let global_scale = sample_std(returns, global_mean) + eps;

    // Gather each stratum's returns, then its mean and std.
    let mut members: HashMap<u32, Vec<f32>> = HashMap::new();
    for (&r, &s) in returns.iter().zip(strata) {
        members.entry(s).or_default().push(r);
    }
    let stats: HashMap<u32, (usize, f64, f64)> = members
        .into_iter()
        .map(|(s, rs)| {
            let m = mean(&rs);
            (s, (rs.len(), m, sample_std(&rs, m) + eps))
        })
        .collect();

    Ok(returns
        .iter()
        .zip(strata)
        .map(|(&r, s)| {
            let r = r as f64;
            let global = standardise(r, global_mean, global_scale);
            let (count, stratum_mean, stratum_scale) = stats[s];
            if count < 2 {
                return global as f32;
            }
            let within = standardise(r, stratum_mean, stratum_scale);
            (alpha * within + (1.0 - alpha) * global) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    // 1/√2 = 0.70711, the G = 2 sample-std advantage.
    use std::f32::consts::FRAC_1_SQRT_2 as ROOT_HALF;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn blend_by_hand_with_a_stratum_of_one() {
        // returns (1, 3, 10, 14, 5), strata (0, 0, 1, 1, 2), α = 0.5, ε = 0.
        // Global: mean 6.6, deviations (−5.6, −3.6, 3.4, 7.4, −1.6),
        //   squares 31.36 + 12.96 + 11.56 + 54.76 + 2.56 = 113.2,
        //   sample var 28.3, std 5.31977
        //   → A_global = (−1.05268, −0.67672, 0.63912, 1.39104, −0.30076).
        // Stratum 0 (1, 3) and stratum 1 (10, 14): A_strat = (∓0.70711).
        // A = ½ A_strat + ½ A_global = (−0.87989, 0.01519, −0.03399, 1.04907);
        // rollout 4 is alone in stratum 2: A_global = −0.30076.
        let a = stratified(&[1.0, 3.0, 10.0, 14.0, 5.0], &[0, 0, 1, 1, 2], 0.5, 0.0).unwrap();
        close(&a, &[-0.87989, 0.01519, -0.03399, 1.04907, -0.30076]);
    }

    #[test]
    fn alpha_one_is_pure_within_stratum_and_zero_is_pure_global() {
        // Stratum 1 (intervened) sits 100 higher: within strata the two
        // rollouts of each stratum get ∓0.70711 regardless of the offset.
        let returns = [0.0, 1.0, 100.0, 101.0];
        let strata = [0, 0, 1, 1];
        close(
            &stratified(&returns, &strata, 1.0, 0.0).unwrap(),
            &[-ROOT_HALF, ROOT_HALF, -ROOT_HALF, ROOT_HALF],
        );
        // Global: mean 50.5, sample std √(2·(50.5² + 49.5²)/3) = √(10001/3)
        // = 57.73791 → A = (−0.87464, −0.85732, 0.85732, 0.87464).
        close(
            &stratified(&returns, &strata, 0.0, 0.0).unwrap(),
            &[-0.87464, -0.85732, 0.85732, 0.87464],
        );
    }

    #[test]
    fn a_stratum_without_spread_contributes_zero() {
        // Stratum 0 (2, 2) has std 0: A_strat = 0. Global over (2, 2, 0, 4):
        // mean 2, sample std √(8/3) = 1.63299 → A_global = (0, 0, −1.22474, 1.22474).
        // α = 0.5: stratum 1 (0, 4) adds ½ · ∓0.70711.
        let a = stratified(&[2.0, 2.0, 0.0, 4.0], &[0, 0, 1, 1], 0.5, 0.0).unwrap();
        close(&a, &[0.0, 0.0, -0.96593, 0.96593]);
    }

    #[test]
    fn stratum_ids_are_distinct_per_flag_combination() {
        let mut seen = std::collections::HashSet::new();
        for bits in 0..8u8 {
            for length_bucket in 0..4 {
                let flags = NuisanceFlags {
                    intervened: bits & 1 != 0,
                    safety_clamped: bits & 2 != 0,
                    real_robot: bits & 4 != 0,
                    length_bucket,
                };
                assert!(seen.insert(flags.stratum_id()), "{flags:?}");
            }
        }
        let clamped_on_robot = NuisanceFlags {
            safety_clamped: true,
            real_robot: true,
            length_bucket: 2,
            ..Default::default()
        };
        // 0b10 | 0b100 | 2 << 3 = 2 + 4 + 16 = 22.
        assert_eq!(clamped_on_robot.stratum_id(), 22);
    }

    #[test]
    fn length_buckets_by_hand() {
        // max 100, 4 buckets of 25 steps.
        assert_eq!(length_bucket(0, 100, 4), 0);
        assert_eq!(length_bucket(24, 100, 4), 0);
        assert_eq!(length_bucket(25, 100, 4), 1);
        assert_eq!(length_bucket(99, 100, 4), 3);
        assert_eq!(length_bucket(150, 100, 4), 3);
        assert_eq!(length_bucket(50, 0, 4), 3);
        assert_eq!(length_bucket(50, 100, 1), 0);
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert!(
            stratified(&[1.0, 2.0], &[0], 0.5, 0.0)
                .unwrap_err()
                .contains("strata")
        );
        assert!(
            stratified(&[1.0], &[0], 1.5, 0.0)
                .unwrap_err()
                .contains("alpha")
        );
        assert!(stratified(&[1.0], &[0], f32::NAN, 0.0).is_err());
        assert!(stratified(&[1.0], &[0], 0.5, -1.0).is_err());
        assert_eq!(stratified(&[], &[], 0.5, 0.0).unwrap(), Vec::<f32>::new());
    }
}
