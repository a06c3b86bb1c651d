//! GDPO, group reward-decoupled normalisation policy optimisation (NVlabs,
//! arXiv 2601.05242; code: NVlabs/GDPO, TRL and verl versions):
//!
//!   Â_{i,k} = (r_{i,k} − mean_g r_k) / (std_g r_k + 1e-4)     per component k
//!   S_i     = Σ_k w_k Â_{i,k}
//!   A_i     = (S_i − mean_batch S) / (std_batch S + 1e-4)
//!
//! GRPO on the weighted sum Σ_k w_k r_k normalises once, so the component
//! with the largest spread (a task return in the hundreds) decides the
//! ranking and a 0/1 success component barely moves it; distinct reward
//! combinations can also collapse to identical advantages. Normalising each
//! component within its group first puts every component on the same scale,
//! so the weights w_k mean what they say. The batch normalisation keeps the
//! sum's scale independent of the number of components.
//!
//! **Which std.** Both stds are the *sample* std (n − 1): the TRL version
//! uses `.std(dim=1)` and `.std()`, torch's unbiased default; the verl
//! version normalises each component with verl's GRPO (`torch.std`). ε = 1e-4
//! as in the TRL version. When a component dominates because it is easy,
//! ALGORITHMS.md §1.5 suggests gating it on the hard one rather than
//! re-weighting.

use super::{mean, sample_std, standardise, whole_groups};

/// ε added to both stds, as in NVlabs' TRL implementation.
pub const GDPO_EPS: f64 = 1e-4;

/// GDPO advantages. `components` are `(name, weight, returns per rollout)`;
/// every returns slice has the same length, laid out as consecutive groups
/// of `group` (≥ 2). Errors name the offending component.
pub fn gdpo(components: &[(&str, f32, &[f32])], group: usize) -> Result<Vec<f32>, String> {
    let Some(&(_, _, first)) = components.first() else {
        return Err("components: at least one reward component is needed".into());
    };
    let rollouts = first.len();
    for &(name, weight, returns) in components {
        whole_groups(name, returns.len(), group, 2)?;
        if returns.len() != rollouts {
            return Err(format!(
                "{name}: {} returns, but the first component has {rollouts}",
                returns.len()
            ));
        }
        if !weight.is_finite() {
            return Err(format!("{name}: weight must be finite, got {weight}"));
        }
    }

    // S_i = Σ_k w_k Â_{i,k}: each component normalised within its group.
    let mut weighted_sum = vec![0.0f64; rollouts];
    for &(_, weight, returns) in components {
        for (g, sums) in returns
            .chunks_exact(group)
            .zip(weighted_sum.chunks_exact_mut(group))
        {
            let centre = mean(g);
            let scale = sample_std(g, centre) + GDPO_EPS;
            for (sum, &r) in sums.iter_mut().zip(g) {
                *sum += weight as f64 * standardise(r as f64, centre, scale);
            }
        }
    }

    // A_i: S normalised over the whole batch. `sample_std` takes f32, so the
    // batch statistics are computed here in f64 directly.
    let n = rollouts as f64;
    let centre = weighted_sum.iter().sum::<f64>() / n.max(1.0);
    let std = if rollouts > 1 {
        (weighted_sum
            .iter()
            .map(|s| (s - centre).powi(2))
            .sum::<f64>()
            / (n - 1.0))
            .sqrt()
    } else {
        0.0
    };
    Ok(weighted_sum
        .iter()
        .map(|&s| standardise(s, centre, std + GDPO_EPS) as f32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::estimators::grpo::grpo;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    // One group of four rollouts, two components of very different scales:
    //   task    (100, 110, 100, 110)
    //   success (  1,   1,   0,   0)
    const TASK: [f32; 4] = [100.0, 110.0, 100.0, 110.0];
    const SUCCESS: [f32; 4] = [1.0, 1.0, 0.0, 0.0];

    #[test]
    fn each_component_counts_whatever_its_scale() {
        // task: mean 105, deviations ∓5, sample std √(100/3) = 5.7735:
        //   Â = (−0.86603, 0.86603, −0.86603, 0.86603) (ε shifts the 5th digit).
        // success: mean 0.5, deviations ±0.5, sample std √(1/3) = 0.57735:
        //   Â = (0.86603, 0.86603, −0.86603, −0.86603).
        // S = (0, 1.73205, −1.73205, 0): mean 0, sample std
        //   √(2 · 3 / 3) = √2 → A = (0, 1.22474, −1.22474, 0).
        // Succeeding is worth as much as the 10-point task gap: rollout 0
        // (low task, success) ties rollout 3 (high task, failure).
        let a = gdpo(&[("task", 1.0, &TASK), ("success", 1.0, &SUCCESS)], 4).unwrap();
        close(&a, &[0.0, 1.22474, -1.22474, 0.0], 1e-3);
    }

    #[test]
    fn grpo_on_the_weighted_sum_lets_the_big_component_dominate() {
        // Sum (101, 111, 100, 110): mean 105.5, deviations
        // (−4.5, 5.5, −5.5, 4.5), squares 20.25 + 30.25 + 30.25 + 20.25 = 101,
        // sample std √(101/3) = 5.80230 → A = (−0.77556, 0.94790, −0.94790, 0.77556).
        // The failed rollout 3 (0.776) ranks far above the successful
        // rollout 0 (−0.776): success moved A by only 0.17.
        let sum: Vec<f32> = TASK.iter().zip(SUCCESS).map(|(t, s)| t + s).collect();
        let a = grpo(&sum, 4, 0.0).unwrap();
        close(&a, &[-0.77556, 0.94790, -0.94790, 0.77556], 1e-4);
        assert!(a[3] > a[0]);
    }

    #[test]
    fn weights_scale_the_normalised_components() {
        // Weight 3 on success: S = 0.86603 · (−1 + 3, 1 + 3, −1 − 3, 1 − 3)
        //   = 0.86603 · (2, 4, −4, −2); mean 0, sample std 0.86603 · √(40/3).
        // A = (2, 4, −4, −2)/√(40/3) = (0.54772, 1.09545, −1.09545, −0.54772).
        let a = gdpo(&[("task", 1.0, &TASK), ("success", 3.0, &SUCCESS)], 4).unwrap();
        close(&a, &[0.54772, 1.09545, -1.09545, -0.54772], 1e-3);
    }

    #[test]
    fn a_component_without_spread_in_a_group_adds_nothing() {
        // Group 2 has success (1, 1): Â = 0 there, so only the task counts.
        // Group 1: task Â (−0.70711, 0.70711) (±5/√50), success (0.70711, −0.70711)
        //   → S = (0, 0). Group 2: task (0, 10) → S = (−0.70711, 0.70711).
        // Batch S = (0, 0, −0.70711, 0.70711): mean 0, sample std √(1/3) = 0.57735
        //   → A = (0, 0, −1.22474, 1.22474).
        let a = gdpo(
            &[
                ("task", 1.0, &[0.0, 10.0, 0.0, 10.0]),
                ("success", 1.0, &[1.0, 0.0, 1.0, 1.0]),
            ],
            2,
        )
        .unwrap();
        close(&a, &[0.0, 0.0, -1.22474, 1.22474], 1e-3);
    }

    #[test]
    fn malformed_components_are_errors_that_name_them() {
        assert!(gdpo(&[], 2).is_err());
        let err = gdpo(
            &[("task", 1.0, &[1.0, 2.0]), ("success", 1.0, &[1.0; 4])],
            2,
        )
        .unwrap_err();
        assert!(err.contains("success"), "{err}");
        let err = gdpo(&[("task", f32::NAN, &[1.0, 2.0])], 2).unwrap_err();
        assert!(err.contains("task"), "{err}");
        assert!(gdpo(&[("task", 1.0, &[1.0, 2.0, 3.0])], 2).is_err());
    }
}
