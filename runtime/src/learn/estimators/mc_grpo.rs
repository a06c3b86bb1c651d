//! MC-GRPO, median-centred group advantages (arXiv 2601.22582; official code
//! `src/open_r1/grpo_trainer_gsm.py`):
//!
//!   sample G + 1 rollouts per start state
//!   b      = median_j r_j                   (the pivot: the rollout b is)
//!   MAD    = median_j |r_j − b|             (over all G + 1, pivot included)
//!   A_i    = (r_i − b) / max(MAD, floor)
//!   A_i   ← A_i · (G + 1) / #{i : A_i ≠ 0}  for every non-zero A_i
//!
//! and the pivot is removed from the loss, so G rollouts carry the gradient.
//! The median is robust to one outlier where the mean is not; reported: G = 2
//! within 1% of G = 8 (LLMs). The rescaling restores the gradient scale lost
//! to zero-advantage rows (the pivot and any rollout tied with it).
//!
//! **The median of an even count.** With G even, G + 1 is odd and the median
//! is an element. For an even count there is no single median; we take the
//! **lower median**, the element at sorted position ⌊(n − 1)/2⌋, which is what
//! `torch.median` (the official code) returns. The same rule gives the MAD.
//!
//! **Ties.** The pivot is the **lowest index** among the returns equal to b
//! (`torch.median` leaves the index among ties unspecified). Other rollouts
//! tied with the pivot get A = 0; they stay in the loss (as in the official
//! code) but contribute nothing, and they do not count as non-zero.
//!
//! **The floor (ours, for control).** The official code divides by
//! MAD + 1e-3. 1e-3 is in reward units, so it is not scale-free: with
//! real-valued returns exact ties are rare and when two returns nearly tie
//! MAD is tiny, so with G = 2 the survivors get ±1.5 and ±1.5·d_far/d_near,
//! unbounded. We floor MAD at a scale that means something: a fraction
//! (default 0.1) of the batch's typical MAD, [`batch_mad_floor`], never below
//! [`MIN_MAD_FLOOR`] = 1e-6 so there is never a division by zero. With
//! binary success and G + 1 = 3 the MAD of every group is 0 (the majority
//! ties the median), which the official code turns into ±1000 · 3; the
//! batch floor falls back to the mean absolute deviation for such groups.

use super::{MaskedAdvantages, whole_groups};

/// The floor never goes below this, so the division is always defined.
pub const MIN_MAD_FLOOR: f32 = 1e-6;
/// Default fraction of the batch's typical MAD used as the floor.
pub const DEFAULT_MAD_FLOOR_FRACTION: f32 = 0.1;
/// |A| at or below this counts as zero in the rescaling (the official
/// `torch.isclose(A, 0, atol=1e-6)`).
const ZERO_ADVANTAGE: f64 = 1e-6;

/// MC-GRPO advantages for blocks of `sampled_per_group` + 1 returns
/// (G ≥ 1; the paper uses even G so that G + 1 has a true median).
/// `mad_floor` (finite, ≥ 0; raised to [`MIN_MAD_FLOOR`]) bounds the
/// advantages when returns nearly tie; see [`batch_mad_floor`].
pub fn mc_grpo(
    returns: &[f32],
    sampled_per_group: usize,
    mad_floor: f32,
) -> Result<MaskedAdvantages, String> {
    if sampled_per_group == 0 {
        return Err("sampled_per_group must be at least 1".into());
    }
    if !(mad_floor.is_finite() && mad_floor >= 0.0) {
        return Err(format!("mad_floor must be finite and ≥ 0, got {mad_floor}"));
    }
    let block = sampled_per_group + 1;
    whole_groups("returns", returns.len(), block, 2)?;
    let floor = mad_floor.max(MIN_MAD_FLOOR) as f64;
    let mut advantages = Vec::with_capacity(returns.len());
    let mut in_loss = Vec::with_capacity(returns.len());
    for g in returns.chunks_exact(block) {
        let pivot = lower_median_index(g);
        let centre = g[pivot] as f64;
        let mad = median_abs_deviation(g, centre);
        let scale = mad.max(floor);
        let mut group_advantages: Vec<f64> =
            g.iter().map(|&r| (r as f64 - centre) / scale).collect();
        let non_zero = group_advantages
            .iter()
            .filter(|a| a.abs() > ZERO_ADVANTAGE)
            .count();
        if non_zero > 0 {
            let rescale = block as f64 / non_zero as f64;
            for a in group_advantages
                .iter_mut()
                .filter(|a| a.abs() > ZERO_ADVANTAGE)
            {
                *a *= rescale;
            }
        }
        advantages.extend(group_advantages.iter().map(|&a| a as f32));
        in_loss.extend((0..block).map(|i| i != pivot));
    }
    Ok(MaskedAdvantages {
        advantages,
        in_loss,
    })
}

/// A floor for [`mc_grpo`]: `fraction` × the mean over groups of each
/// group's MAD, at least [`MIN_MAD_FLOOR`]. Groups without spread are left
/// out (they have no signal and would drag the scale to 0). A group whose
/// returns differ but whose MAD is 0 (the majority ties the median, as with
/// binary success) contributes its mean absolute deviation from the median
/// instead, which is 0 only for a group without spread.
pub fn batch_mad_floor(
    returns: &[f32],
    sampled_per_group: usize,
    fraction: f32,
) -> Result<f32, String> {
    if sampled_per_group == 0 {
        return Err("sampled_per_group must be at least 1".into());
    }
    if !(fraction.is_finite() && fraction >= 0.0) {
        return Err(format!("fraction must be finite and ≥ 0, got {fraction}"));
    }
    let block = sampled_per_group + 1;
    whole_groups("returns", returns.len(), block, 2)?;
    let mut scale_sum = 0.0f64;
    let mut groups_with_spread = 0usize;
    for g in returns.chunks_exact(block) {
        let centre = g[lower_median_index(g)] as f64;
        let mad = median_abs_deviation(g, centre);
        let scale = if mad > 0.0 {
            mad
        } else {
            g.iter().map(|&r| (r as f64 - centre).abs()).sum::<f64>() / block as f64
        };
        if scale > 0.0 && scale.is_finite() {
            scale_sum += scale;
            groups_with_spread += 1;
        }
    }
    if groups_with_spread == 0 {
        return Ok(MIN_MAD_FLOOR);
    }
    let floor = fraction as f64 * scale_sum / groups_with_spread as f64;
    Ok((floor as f32).max(MIN_MAD_FLOOR))
}

/// Index of the lower median: sort, take position ⌊(n − 1)/2⌋, then the
/// lowest index holding that value. NaN sorts last (`total_cmp`), so a
/// non-finite return cannot panic here.
fn lower_median_index(g: &[f32]) -> usize {
    let value = lower_median(g.iter().map(|&r| r as f64).collect());
    g.iter()
        .position(|&r| (r as f64).total_cmp(&value).is_eq())
        .unwrap_or(0)
}

fn lower_median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

/// MAD = lower median of |r_j − b| over the whole group, pivot included.
fn median_abs_deviation(g: &[f32], centre: f64) -> f64 {
    lower_median(g.iter().map(|&r| (r as f64 - centre).abs()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn two_sampled_plus_pivot_by_hand() {
        // G = 2, block (1, 4, 2): sorted (1, 2, 4), median b = 2 at index 2.
        // |r − b| = (1, 2, 0), sorted (0, 1, 2): MAD = 1.
        // A = (−1, 2, 0); two non-zero → × 3/2 = (−1.5, 3, 0).
        // The survivors get ±1.5 and 1.5·d_far/d_near = 1.5·2 = 3.
        let out = mc_grpo(&[1.0, 4.0, 2.0], 2, 0.0).unwrap();
        close(&out.advantages, &[-1.5, 3.0, 0.0], 1e-6);
        assert_eq!(out.in_loss, [true, true, false]);
    }

    #[test]
    fn ties_pick_the_lowest_index_and_tied_rows_stay_at_zero() {
        // G = 4, block (3, 3, 3, 0, 9): sorted (0, 3, 3, 3, 9), b = 3; the
        // pivot is index 0, the lowest of the three 3s.
        // |r − b| = (0, 0, 0, 3, 6): MAD = 0 → the floor 1.5 is the scale.
        // A = (0, 0, 0, −2, 4); two non-zero → × 5/2 = (0, 0, 0, −5, 10).
        let out = mc_grpo(&[3.0, 3.0, 3.0, 0.0, 9.0], 4, 1.5).unwrap();
        close(&out.advantages, &[0.0, 0.0, 0.0, -5.0, 10.0], 1e-6);
        assert_eq!(out.in_loss, [false, true, true, true, true]);
    }

    #[test]
    fn an_even_count_uses_the_lower_median() {
        // G = 3, block (1, 2, 3, 10): sorted position ⌊3/2⌋ = 1 → b = 2 at index 1.
        // |r − b| = (1, 0, 1, 8), sorted (0, 1, 1, 8): lower median 1 = MAD.
        // A = (−1, 0, 1, 8); three non-zero → × 4/3
        //   = (−1.33333, 0, 1.33333, 10.66667).
        let out = mc_grpo(&[1.0, 2.0, 3.0, 10.0], 3, 0.0).unwrap();
        close(&out.advantages, &[-1.33333, 0.0, 1.33333, 10.66667], 1e-5);
        assert_eq!(out.in_loss, [true, false, true, true]);
    }

    #[test]
    fn a_group_without_spread_is_all_zero() {
        let out = mc_grpo(&[2.0, 2.0, 2.0, 0.0, 1.0, 5.0], 2, 0.0).unwrap();
        close(&out.advantages[..3], &[0.0, 0.0, 0.0], 0.0);
        assert_eq!(out.in_loss[..3], [false, true, true]);
        // Second group (0, 1, 5): b = 1, |r − b| = (1, 0, 4), MAD 1,
        // A = (−1, 0, 4) × 3/2 = (−1.5, 0, 6).
        close(&out.advantages[3..], &[-1.5, 0.0, 6.0], 1e-6);
    }

    #[test]
    fn the_floor_bounds_advantages_when_two_returns_nearly_tie() {
        // Block (0, 1, 1 + 2⁻¹⁰): b = 1 (index 1), |r − b| = (1, 0, 2⁻¹⁰),
        // MAD = 2⁻¹⁰ = 0.0009765625.
        // No floor: A = (−1024, 0, 1) × 3/2 = (−1536, 0, 1.5).
        // Floor 0.125: A = (−8, 0, 2⁻⁷) × 3/2 = (−12, 0, 0.01171875).
        let returns = [0.0, 1.0, 1.0 + 1.0 / 1024.0];
        let unbounded = mc_grpo(&returns, 2, 0.0).unwrap();
        close(&unbounded.advantages, &[-1536.0, 0.0, 1.5], 1e-3);
        let floored = mc_grpo(&returns, 2, 0.125).unwrap();
        close(&floored.advantages, &[-12.0, 0.0, 0.01171875], 1e-6);
    }

    #[test]
    fn batch_floor_by_hand() {
        // (1, 4, 2): MAD 1.
        // (0, 0, 1): b = 0, |r − b| = (0, 0, 1): MAD 0 but spread →
        //   mean absolute deviation 1/3.
        // (5, 5, 5): no spread, left out.
        // floor = 0.1 · (1 + 1/3)/2 = 0.0666667.
        let returns = [1.0, 4.0, 2.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0];
        let floor = batch_mad_floor(&returns, 2, 0.1).unwrap();
        assert!((floor - 0.0666667).abs() < 1e-6, "{floor}");
        // Nothing with spread: the absolute minimum.
        assert_eq!(batch_mad_floor(&[5.0; 6], 2, 0.1).unwrap(), MIN_MAD_FLOOR);
    }

    #[test]
    fn binary_success_with_the_batch_floor_stays_bounded() {
        // (0, 0, 1): MAD 0. Floor 0.1 · 1/3 = 0.0333333:
        // A = (0, 0, 1/0.0333333 = 30) × 3/1 = (0, 0, 90), not 3000.
        let returns = [0.0, 0.0, 1.0];
        let floor = batch_mad_floor(&returns, 2, DEFAULT_MAD_FLOOR_FRACTION).unwrap();
        let out = mc_grpo(&returns, 2, floor).unwrap();
        close(&out.advantages, &[0.0, 0.0, 90.0], 1e-3);
        assert_eq!(out.in_loss, [false, true, true]);
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert!(mc_grpo(&[1.0; 4], 2, 0.1).unwrap_err().contains("returns"));
        assert!(
            mc_grpo(&[1.0; 3], 2, f32::NAN)
                .unwrap_err()
                .contains("mad_floor")
        );
        assert!(mc_grpo(&[1.0; 3], 0, 0.1).is_err());
        assert!(
            batch_mad_floor(&[1.0; 3], 2, -0.1)
                .unwrap_err()
                .contains("fraction")
        );
    }
}
