//! From finished episodes to advantages under the configured critic-free
//! algorithm (`--algo grpo | dr-grpo | rloo | mc-grpo | spo | gdpo |
//! stratified | remax`): the one place the simulator's trainer and the
//! on-board learner turn what each episode earned into the weight its
//! actions are pushed by. The estimators themselves are pure functions,
//! one file each, in `estimators/`; this file lays episodes out for them,
//! discards what must not be trained on, and says how many.
//!
//! Layout: episodes come in blocks of `Algo::rollouts_per_start` from one
//! start (G, or G + 1 for MC-GRPO and ReMax, whose last is the greedy
//! rollout; 1 for SPO).
//!
//! - A block with a non-finite return or component (a simulator blow-up, a
//!   learned reward that failed) is discarded whole and counted: its
//!   baseline would be wrong (for SPO, the one episode).
//! - Under DAPO's dynamic sampling (`estimator.dynamic_sampling`) a block
//!   whose returns do not differ is discarded and counted too, so the
//!   caller can collect more; without it such a block gets zero advantages,
//!   never a division by zero.
//! - The loss normaliser: `grpo` weighs each episode's actions by
//!   L̄ / L_i (the mean over the batch of its own length L_i), so that every
//!   episode counts once, as GRPO's 1/|o_i| mean per sequence does; every
//!   other estimator uses the constant normaliser of Dr. GRPO (the loss is
//!   the mean over a minibatch's actions), under which a long episode
//!   weighs more than a short one.

use super::config::{Algo, TrainConfig};
use super::estimators::{
    self, MaskedAdvantages, dr_grpo::dr_grpo, gdpo::gdpo, grpo::grpo, mc_grpo, remax::remax,
    rloo::rloo, spo, stratified,
};
use cerebellum_core::bounds::Limits;
use cerebellum_core::{RewardComponents, Transition};
use serde::{Deserialize, Serialize};

/// ε added to a group's std (GRPO, stratified): far below any reward's
/// resolution, so it only matters for a group with no spread.
const STD_EPS: f32 = 1e-6;

/// The critic-free estimators' settings (`[estimator]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// DAPO's dynamic sampling (`--dynamic-sampling`): a start whose
    /// rollouts all returned the same is discarded and more starts are
    /// collected, up to `max_resample_rounds` more collections per update.
    pub dynamic_sampling: bool,
    pub max_resample_rounds: usize,
    /// MC-GRPO's MAD floor as a fraction of the batch's typical MAD
    /// (`estimators::mc_grpo::batch_mad_floor`).
    pub mad_floor_fraction: f32,
    /// Stratified: the weight α of the within-stratum term.
    pub stratified_alpha: f32,
    /// Stratified: episode-length buckets used as a stratum (0 or 1: not
    /// used). Leave 0 where success ends episodes early (the reach and
    /// lift tasks): there length is the signal, not a nuisance.
    pub length_buckets: u8,
    /// SPO: the pool of recurring starts the tracker follows.
    pub spo_contexts: usize,
    /// SPO: MSSR's entropy shaping of the advantages.
    pub spo_entropy_shaping: bool,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            dynamic_sampling: false,
            max_resample_rounds: 4,
            mad_floor_fraction: mc_grpo::DEFAULT_MAD_FLOOR_FRACTION,
            stratified_alpha: 0.5,
            length_buckets: 0,
            spo_contexts: 256,
            spo_entropy_shaping: true,
        }
    }
}

pub const MAX_RESAMPLE_ROUNDS: Limits<usize> = Limits::closed(0, 64).unit("rounds");
pub const MAD_FLOOR_FRACTION: Limits<f32> = Limits::closed(0.0, 10.0);
pub const STRATIFIED_ALPHA: Limits<f32> = Limits::closed(0.0, 1.0);
pub const LENGTH_BUCKETS: Limits<u8> = Limits::closed(0, 32).unit("buckets");
pub const SPO_CONTEXTS: Limits<usize> = Limits::closed(1, 1 << 20).unit("contexts");

impl EstimatorConfig {
    pub fn validate(&self) -> Result<(), String> {
        MAX_RESAMPLE_ROUNDS.check("estimator.max_resample_rounds", self.max_resample_rounds)?;
        MAD_FLOOR_FRACTION.check("estimator.mad_floor_fraction", self.mad_floor_fraction)?;
        STRATIFIED_ALPHA.check("estimator.stratified_alpha", self.stratified_alpha)?;
        LENGTH_BUCKETS.check("estimator.length_buckets", self.length_buckets)?;
        SPO_CONTEXTS.check("estimator.spo_contexts", self.spo_contexts)
    }
}

/// What one episode earned, as the estimators see it.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeOutcome {
    /// Σ over the episode's steps of the weighted reward the config trains
    /// on (`trainer::reward`).
    pub weighted_return: f32,
    /// Per weighted component of `reward_weights` (in its order, weight
    /// not zero), the episode's unweighted sum: GDPO's inputs.
    pub components: Vec<f32>,
    pub flags: estimators::stratified::NuisanceFlags,
    /// Steps of the episode that enter the loss (GRPO's |o_i|).
    pub length: usize,
}

impl EpisodeOutcome {
    /// The outcome of one episode's transitions (those that enter the
    /// loss, in order); `max_len` is the task's horizon in ticks.
    pub fn of(config: &TrainConfig, episode: &[&Transition], max_len: usize) -> Self {
        let weighted_return = episode
            .iter()
            .map(|t| super::trainer::reward(config, t))
            .sum();
        let components = weighted_components(config)
            .map(|(name, _)| {
                episode
                    .iter()
                    .map(|t| t.rewards.get(name).unwrap_or(0.0))
                    .sum()
            })
            .collect();
        let flags = estimators::stratified::NuisanceFlags {
            intervened: episode
                .iter()
                .any(|t| t.intervention || t.rewards.get(RewardComponents::INTERVENTION).is_some()),
            safety_clamped: episode.iter().any(|t| t.safety_clamped),
            // One run drives one robot, and a group is one robot's: the
            // flag never splits a group (it would when groups mix sources).
            real_robot: false,
            length_bucket: estimators::stratified::length_bucket(
                episode.len(),
                max_len,
                config.estimator.length_buckets,
            ),
        };
        Self {
            weighted_return,
            components,
            flags,
            length: episode.len(),
        }
    }
}

/// The components GDPO normalises: `reward_weights` without zero weights.
fn weighted_components(config: &TrainConfig) -> impl Iterator<Item = (&str, f32)> {
    config
        .reward_weights
        .iter()
        .filter(|(_, w)| **w != 0.0)
        .map(|(name, w)| (name.as_str(), *w))
}

/// Per episode: its advantage, whether it enters the loss, and the weight
/// of its actions there; and what was discarded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpisodeAdvantages {
    pub advantages: Vec<f32>,
    pub in_loss: Vec<bool>,
    pub loss_weights: Vec<f32>,
    /// Starts discarded for a non-finite return (for SPO, episodes).
    pub non_finite: usize,
    /// Starts discarded by dynamic sampling for returns without spread.
    pub no_spread: usize,
    /// Starts whose episodes entered the estimate.
    pub kept: usize,
}

/// What SPO needs beside the episodes: each episode's baseline (its
/// context's tracked return, read before this batch updates it) and the
/// policy's entropy surrogate (`estimators::spo::gaussian_entropy_surrogate`).
#[derive(Clone, Copy, Debug)]
pub struct SpoInputs<'a> {
    pub baselines: &'a [f32],
    pub entropy_surrogate: f32,
}

/// Advantages for `episodes`, laid out in blocks from one start each (see
/// the module doc). `spo` is required for `algo = "spo"`. An error is a
/// layout the caller got wrong, never a property of the returns.
pub fn episode_advantages(
    config: &TrainConfig,
    episodes: &[EpisodeOutcome],
    spo: Option<SpoInputs>,
) -> Result<EpisodeAdvantages, String> {
    let algo = config.algo;
    let g = config.group;
    let block = algo.rollouts_per_start(g);
    if algo.has_critic() {
        return Err("PPO's advantages come from GAE, not from episodes".into());
    }
    if !episodes.len().is_multiple_of(block) {
        return Err(format!(
            "{} episodes are not whole starts of {block} ({algo})",
            episodes.len()
        ));
    }
    let n = episodes.len();
    let mut out = EpisodeAdvantages {
        advantages: vec![0.0; n],
        in_loss: vec![false; n],
        loss_weights: vec![1.0; n],
        ..Default::default()
    };
    // Which starts enter the estimate.
    let mut kept_starts = Vec::new();
    for (s, start) in episodes.chunks_exact(block).enumerate() {
        let finite = start
            .iter()
            .all(|e| e.weighted_return.is_finite() && e.components.iter().all(|c| c.is_finite()));
        if !finite {
            out.non_finite += 1;
            continue;
        }
        if config.estimator.dynamic_sampling && algo != Algo::Spo && !start_has_spread(algo, start)
        {
            out.no_spread += 1;
            continue;
        }
        kept_starts.push(s);
    }
    out.kept = kept_starts.len();
    if kept_starts.is_empty() {
        return Ok(out);
    }
    let kept: Vec<&EpisodeOutcome> = kept_starts
        .iter()
        .flat_map(|&s| &episodes[s * block..(s + 1) * block])
        .collect();
    let returns: Vec<f32> = kept.iter().map(|e| e.weighted_return).collect();
    let plain = |advantages: Vec<f32>| MaskedAdvantages {
        in_loss: vec![true; advantages.len()],
        advantages,
    };
    let masked = match algo {
        Algo::Ppo => unreachable!("checked above"),
        Algo::Grpo => plain(grpo(&returns, g, STD_EPS)?),
        Algo::DrGrpo => plain(dr_grpo(&returns, g)?),
        Algo::Rloo => plain(rloo(&returns, g)?),
        Algo::McGrpo => {
            let fraction = config.estimator.mad_floor_fraction;
            let floor = mc_grpo::batch_mad_floor(&returns, g, fraction)?;
            mc_grpo::mc_grpo(&returns, g, floor)?
        }
        Algo::Remax => remax(&returns, g)?,
        Algo::Gdpo => {
            let components: Vec<(&str, f32, Vec<f32>)> = weighted_components(config)
                .enumerate()
                .map(|(k, (name, w))| (name, w, kept.iter().map(|e| e.components[k]).collect()))
                .collect();
            let views: Vec<(&str, f32, &[f32])> = components
                .iter()
                .map(|(name, w, r)| (*name, *w, r.as_slice()))
                .collect();
            plain(gdpo(&views, g)?)
        }
        Algo::Stratified => {
            let mut advantages = Vec::with_capacity(returns.len());
            for (start, r) in kept.chunks(g).zip(returns.chunks(g)) {
                let strata: Vec<u32> = start.iter().map(|e| e.flags.stratum_id()).collect();
                advantages.extend(stratified::stratified(
                    r,
                    &strata,
                    config.estimator.stratified_alpha,
                    STD_EPS,
                )?);
            }
            plain(advantages)
        }
        Algo::Spo => {
            let Some(spo_inputs) = spo else {
                return Err("spo needs each episode's tracked baseline".into());
            };
            if spo_inputs.baselines.len() != n {
                return Err(format!(
                    "spo: {} baselines for {n} episodes",
                    spo_inputs.baselines.len()
                ));
            }
            let baselines: Vec<f32> = kept_starts
                .iter()
                .map(|&s| spo_inputs.baselines[s])
                .collect();
            let mut advantages = spo::spo_advantages(&returns, &baselines, 1e-8)?;
            if config.estimator.spo_entropy_shaping {
                for a in &mut advantages {
                    *a = spo::mssr_shape(*a, spo_inputs.entropy_surrogate);
                }
            }
            plain(advantages)
        }
    };
    let mut mean_length = 0.0;
    let mut in_loss_count = 0usize;
    for (e, (a, in_loss)) in kept_starts
        .iter()
        .flat_map(|&s| s * block..(s + 1) * block)
        .zip(masked.advantages.iter().zip(&masked.in_loss))
    {
        out.advantages[e] = *a;
        out.in_loss[e] = *in_loss;
        if *in_loss {
            mean_length += episodes[e].length as f64;
            in_loss_count += 1;
        }
    }
    if algo == Algo::Grpo && in_loss_count > 0 {
        // GRPO's per-episode mean: each episode's actions weigh L̄ / L_i.
        let mean_length = mean_length / in_loss_count as f64;
        for (w, e) in out.loss_weights.iter_mut().zip(episodes) {
            *w = (mean_length / e.length.max(1) as f64) as f32;
        }
    }
    Ok(out)
}

/// A start's returns differ (DAPO's filter): the weighted return, or for
/// GDPO any component (each is normalised on its own). The tolerance is
/// relative, so a tie up to float rounding counts as none.
pub fn start_has_spread(algo: Algo, start: &[EpisodeOutcome]) -> bool {
    let spread = |values: Vec<f32>| {
        let scale = values.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        estimators::has_spread(&values, 1e-6 * scale)
    };
    // ReMax's greedy rollout is the baseline: the sampled ones must differ
    // from it or from each other.
    if spread(start.iter().map(|e| e.weighted_return).collect()) {
        return true;
    }
    algo == Algo::Gdpo
        && (0..start[0].components.len())
            .any(|k| spread(start.iter().map(|e| e.components[k]).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(r: f32, length: usize) -> EpisodeOutcome {
        EpisodeOutcome {
            weighted_return: r,
            components: vec![r],
            flags: Default::default(),
            length,
        }
    }

    fn config(algo: Algo, group: usize) -> TrainConfig {
        let mut c = TrainConfig::for_task(cerebellum_sim::TaskKind::Reach);
        c.algo = algo;
        c.group = group;
        c
    }

    #[test]
    fn a_non_finite_return_discards_its_start_and_is_counted() {
        let c = config(Algo::Grpo, 2);
        let e = [
            episode(1.0, 10),
            episode(f32::NAN, 10),
            episode(0.0, 10),
            episode(2.0, 10),
        ];
        let out = episode_advantages(&c, &e, None).unwrap();
        assert_eq!(out.non_finite, 1);
        assert_eq!(out.kept, 1);
        assert_eq!(out.in_loss, [false, false, true, true]);
        assert!(out.advantages.iter().all(|a| a.is_finite()));
        // (0, 2): mean 1, sample std √2.
        let expected = 1.0 / (2f32.sqrt() + STD_EPS);
        assert!((out.advantages[3] - expected).abs() < 1e-6);
    }

    #[test]
    fn equal_returns_give_zeros_or_are_discarded_under_dynamic_sampling() {
        let mut c = config(Algo::Grpo, 2);
        let e = [
            episode(1.0, 10),
            episode(1.0, 10),
            episode(0.0, 10),
            episode(2.0, 10),
        ];
        let out = episode_advantages(&c, &e, None).unwrap();
        assert_eq!(&out.advantages[..2], &[0.0, 0.0]);
        assert_eq!(out.no_spread, 0);
        c.estimator.dynamic_sampling = true;
        let out = episode_advantages(&c, &e, None).unwrap();
        assert_eq!(out.no_spread, 1);
        assert_eq!(out.in_loss, [false, false, true, true]);
    }

    #[test]
    fn grpo_weighs_each_episode_once_and_dr_grpo_each_action() {
        let c = config(Algo::Grpo, 2);
        let e = [episode(1.0, 10), episode(0.0, 30)];
        let out = episode_advantages(&c, &e, None).unwrap();
        // L̄ = 20: weights 2 and 2/3.
        assert!((out.loss_weights[0] - 2.0).abs() < 1e-6);
        assert!((out.loss_weights[1] - 2.0 / 3.0).abs() < 1e-6);
        let out = episode_advantages(&config(Algo::DrGrpo, 2), &e, None).unwrap();
        assert_eq!(out.loss_weights, [1.0, 1.0]);
        assert_eq!(out.advantages, [0.5, -0.5]);
    }

    #[test]
    fn the_extra_rollout_of_mc_grpo_and_remax_stays_out_of_the_loss() {
        let e = [episode(0.0, 5), episode(3.0, 5), episode(1.0, 5)];
        let out = episode_advantages(&config(Algo::McGrpo, 2), &e, None).unwrap();
        // Median 1 (the third): out of the loss.
        assert_eq!(out.in_loss, [true, true, false]);
        let out = episode_advantages(&config(Algo::Remax, 2), &e, None).unwrap();
        // Greedy (last) returned 1: A = r − 1.
        assert_eq!(out.advantages, [-1.0, 2.0, 0.0]);
        assert_eq!(out.in_loss, [true, true, false]);
        let err = episode_advantages(&config(Algo::Remax, 2), &e[..2], None).unwrap_err();
        assert!(err.contains("whole starts of 3"), "{err}");
    }

    #[test]
    fn spo_reads_the_baselines_it_is_given() {
        let c = config(Algo::Spo, 8);
        let e = [episode(1.0, 5), episode(0.0, 5), episode(0.5, 5)];
        let spo = SpoInputs {
            baselines: &[1.0, 0.0, 0.0],
            entropy_surrogate: 0.0,
        };
        // r − b = (0, 0, 0.5): mean 1/6, normalised by the sample std.
        let out = episode_advantages(&c, &e, Some(spo)).unwrap();
        assert!(out.advantages[2] > 0.0 && out.advantages[0] < 0.0);
        assert!((out.advantages[0] - out.advantages[1]).abs() < 1e-6);
        assert!(episode_advantages(&c, &e, None).is_err());
    }
}
