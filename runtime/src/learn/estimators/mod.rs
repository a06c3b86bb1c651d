//! The GRPO family of advantage estimators (issue 22): pure functions from a
//! batch of returns (plus whatever each needs) to advantages, one file per
//! estimator, each with its formula, its paper and hand-computed tests.
//! Formulas and sources: ALGORITHMS.md §1.
//!
//! - [`grpo`]: (r − mean_g) / (sample std_g + ε), the DeepSeekMath/verl/TRL form.
//! - [`dr_grpo`]: r − mean_g, no std; the loss divided by a constant length.
//! - [`rloo`]: r_i − mean of the other rollouts of the group.
//! - [`mc_grpo`]: G + 1 rollouts, median-centred and MAD-scaled, the median
//!   rollout (the pivot) left out of the loss.
//! - [`spo`]: no groups: a per-context tracker (Beta or discounted mean) is the
//!   baseline, advantages normalised over the batch; MSSR entropy shaping.
//! - [`gdpo`]: several reward components, each group-normalised on its own
//!   before the weighted sum, then normalised over the batch.
//! - [`stratified`]: normalisation within nuisance strata (intervened, clamped,
//!   length bucket, sim/real) blended with the global one.
//! - [`remax`]: G sampled rollouts and one greedy (mean-action) rollout per
//!   group; the greedy return is the baseline.
//!
//! Returns are laid out as consecutive groups (`returns[g·G .. (g+1)·G]` is
//! group g) unless a file says otherwise. Shape errors a user can reach
//! (through a config or a CLI flag) come back as `Err` naming the argument.
//! Every function is total on finite input: no division by zero, no NaN.
//!
//! Below the list: the DAPO helpers (dynamic sampling and non-finite
//! returns), [`MaskedAdvantages`] for the estimators that add a rollout which
//! must not be trained on, and the small statistics the files share.

pub mod dr_grpo;
pub mod gdpo;
pub mod grpo;
pub mod mc_grpo;
pub mod remax;
pub mod rloo;
pub mod spo;
pub mod stratified;

/// Advantages for every rollout plus which rollouts enter the policy loss.
/// MC-GRPO's pivot and ReMax's greedy rollout have `in_loss == false`: they
/// only provide the baseline, so training on them would count them twice.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedAdvantages {
    pub advantages: Vec<f32>,
    pub in_loss: Vec<bool>,
}

/// DAPO dynamic sampling (Yu et al. 2025, arXiv 2503.14476; verl recipe): a
/// group whose returns do not differ carries no gradient under any
/// group-relative estimator, so it is discarded and more groups are drawn.
/// True when max − min > `tol`. Non-finite returns give false or an infinite
/// spread; filter them with [`finite_groups`] first.
pub fn has_spread(group_returns: &[f32], tol: f32) -> bool {
    let (lo, hi) = group_returns
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    // An empty group folds to −inf, which is not > tol: no spread.
    hi - lo > tol
}

/// A group with a non-finite return (a simulator blow-up, a NaN reward
/// model) would poison its group's mean and std, so the whole group is
/// discarded. Returns a mask over rollouts (true = kept) and the number of
/// discarded groups.
pub fn finite_groups(returns: &[f32], group: usize) -> Result<(Vec<bool>, usize), String> {
    whole_groups("returns", returns.len(), group, 1)?;
    let mut kept = Vec::with_capacity(returns.len());
    let mut discarded_groups = 0;
    for g in returns.chunks_exact(group) {
        let finite = g.iter().all(|r| r.is_finite());
        if !finite {
            discarded_groups += 1;
        }
        kept.extend(std::iter::repeat_n(finite, group));
    }
    Ok((kept, discarded_groups))
}

// ---- shared statistics (computed in f64 so that large finite returns cannot
// overflow a sum or a square into inf/NaN) ----

/// Checks that `len` values split into whole groups of at least `min_group`.
fn whole_groups(name: &str, len: usize, group: usize, min_group: usize) -> Result<(), String> {
    if group < min_group {
        return Err(format!(
            "{name}: group size {group} is below the minimum {min_group}"
        ));
    }
    if !len.is_multiple_of(group) {
        return Err(format!(
            "{name}: length {len} is not a whole number of groups of {group}"
        ));
    }
    Ok(())
}

/// ε must be a finite non-negative number; a negative ε could cancel a std.
fn check_eps(name: &str, eps: f32) -> Result<(), String> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be finite and ≥ 0, got {eps}"))
    }
}

fn mean(xs: &[f32]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64
}

/// Sample (n − 1, Bessel-corrected) std, as `torch.std` computes by default.
/// Zero for fewer than two values.
fn sample_std(xs: &[f32], mean: f64) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let squares: f64 = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum();
    (squares / (xs.len() - 1) as f64).sqrt()
}

/// (x − centre) / scale, and 0 where the scale is not a positive finite
/// number: a group with no spread has no signal, not an infinite one.
fn standardise(x: f64, centre: f64, scale: f64) -> f64 {
    if scale > 0.0 && scale.is_finite() {
        (x - centre) / scale
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_max_minus_min_against_the_tolerance() {
        assert!(!has_spread(&[1.0, 1.0, 1.0], 0.0));
        assert!(has_spread(&[1.0, 1.5, 1.0], 0.0));
        // max − min = 0.5: not more than a tolerance of 0.5.
        assert!(!has_spread(&[1.0, 1.5, 1.0], 0.5));
        assert!(!has_spread(&[], 0.0));
        assert!(!has_spread(&[f32::NAN, 1.0], 0.0));
    }

    #[test]
    fn a_non_finite_return_discards_its_whole_group() {
        let (kept, discarded) =
            finite_groups(&[1.0, 2.0, f32::NAN, 0.0, 3.0, f32::INFINITY], 2).unwrap();
        assert_eq!(kept, [true, true, false, false, false, false]);
        assert_eq!(discarded, 2);
    }

    #[test]
    fn shape_errors_name_the_argument() {
        let err = finite_groups(&[1.0, 2.0, 3.0], 2).unwrap_err();
        assert!(err.contains("returns") && err.contains('3'), "{err}");
        assert!(finite_groups(&[1.0], 0).is_err());
    }

    #[test]
    fn statistics_by_hand() {
        // (1, 2, 6): mean 3, squares 4 + 1 + 9 = 14, sample var 7.
        let m = mean(&[1.0, 2.0, 6.0]);
        assert_eq!(m, 3.0);
        assert!((sample_std(&[1.0, 2.0, 6.0], m) - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(sample_std(&[4.0], 4.0), 0.0);
        assert_eq!(standardise(5.0, 1.0, 0.0), 0.0);
        assert_eq!(standardise(5.0, 1.0, 2.0), 2.0);
    }
}
