//! Proximal policy optimisation with a clipped surrogate (Schulman et al.
//! 2017, "Proximal Policy Optimization Algorithms"; ALGORITHMS.md §2), the
//! update CleanRL's `ppo_continuous_action.py` performs, on the fused MLP path:
//!
//!   ρ      = exp(log π_θ(u|s) − log π_old(u|s))
//!   L_clip = −E[min(ρ·Â, clip(ρ, 1 − ε, 1 + ε)·Â)]
//!   L_V    = ½·E[(V(s) − R)²]   (or, clipped, ½·E[max((V − R)², (V_old + clip(V − V_old, ±ε_V) − R)²)])
//!   L      = L_clip + c_V·L_V − c_H·H[π_θ]
//!
//! Â is normalised per minibatch; gradients are clipped to a global norm;
//! the learning rate is annealed linearly by the caller. Advantages come from
//! any estimator (GAE for PPO, group-relative ones for GRPO): a learner is an
//! advantage estimator plus this loss.
//!
//! The loss is written once, here, over what the policy's forward pass
//! gives (`TrainablePolicy`: log-probabilities and entropies per executed
//! action, values per decision): its gradient with respect to those
//! outputs (d L/d log π = −Â·ρ/N on the unclipped branch, 0 on the clipped
//! one) goes back to the policy's `backward`, which owns the rest of the
//! chain rule (by hand on the fused MLP, by candle autograd on a candle
//! model). A decision's actions are the executed part of a chunk and the
//! ratio is clipped per action (ALGORITHMS.md §2, "Chunks as actions").

use super::config::{EPOCHS, LEARNING_RATE, MAX_GRAD_NORM, MINIBATCH_SIZE};
use cerebellum_core::PolicyError;
use cerebellum_core::bounds::Limits;
use cerebellum_policies::optim::Adam;
use cerebellum_policies::{EncodedDecisions, OutputGrads, TrainablePolicy, Wants};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to zero over the run.
    pub anneal_lr: bool,
    pub epochs: usize,
    pub minibatch_size: usize,
    pub clip: f32,
    /// DAPO's clip-higher (Yu et al. 2025, arXiv 2503.14476): the upper
    /// bound of the ratio is 1 + `clip_high` while the lower stays
    /// 1 − `clip`, so an unlikely action that turned out good can gain
    /// more probability in one update (0.28 in the paper); `None`: `clip`
    /// both ways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_high: Option<f32>,
    /// Clip the value update to ±this around the old value; `None` = plain.
    pub value_clip: Option<f32>,
    pub value_coef: f32,
    pub entropy_coef: f32,
    pub max_grad_norm: f32,
    pub normalize_advantages: bool,
    /// Stop the epochs early once the approximate KL passes this.
    pub target_kl: Option<f32>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            learning_rate: 3e-4,
            anneal_lr: true,
            epochs: 10,
            minibatch_size: 64,
            clip: 0.2,
            clip_high: None,
            value_clip: None,
            value_coef: 0.5,
            entropy_coef: 0.0,
            max_grad_norm: 0.5,
            normalize_advantages: true,
            target_kl: None,
        }
    }
}

/// The surrogate's ε: ρ is clamped to [1 − ε, 1 + ε].
pub const CLIP: Limits<f32> = Limits::open(0.0, 1.0);
/// Clip-higher's ε_high: ρ ≤ 1 + ε_high.
pub const CLIP_HIGH: Limits<f32> = Limits::open(0.0, 10.0);
/// The value clip's ±ε_V around the old value (`f32::clamp` needs ε_V ≥ 0).
pub const VALUE_CLIP: Limits<f32> = Limits::open_closed(0.0, 1000.0);
pub const VALUE_COEF: Limits<f32> = Limits::closed(0.0, 100.0);
pub const ENTROPY_COEF: Limits<f32> = Limits::closed(0.0, 1.0);
pub const TARGET_KL: Limits<f32> = Limits::open_closed(0.0, 10.0);

impl PpoConfig {
    /// Bounds on every key (`ppo.*`).
    pub fn validate(&self) -> Result<(), String> {
        LEARNING_RATE.check("ppo.learning_rate", self.learning_rate)?;
        EPOCHS.check("ppo.epochs", self.epochs)?;
        MINIBATCH_SIZE.check("ppo.minibatch_size", self.minibatch_size)?;
        CLIP.check("ppo.clip", self.clip)?;
        if let Some(high) = self.clip_high {
            CLIP_HIGH.check("ppo.clip_high", high)?;
        }
        if let Some(eps) = self.value_clip {
            VALUE_CLIP.check("ppo.value_clip", eps)?;
        }
        VALUE_COEF.check("ppo.value_coef", self.value_coef)?;
        ENTROPY_COEF.check("ppo.entropy_coef", self.entropy_coef)?;
        MAX_GRAD_NORM.check("ppo.max_grad_norm", self.max_grad_norm)?;
        if let Some(kl) = self.target_kl {
            TARGET_KL.check("ppo.target_kl", kl)?;
        }
        Ok(())
    }
}

/// One batch of decisions and what the estimator made of them.
#[derive(Clone, Debug)]
pub struct Batch<E> {
    /// The decisions in the policy's coordinates (`TrainablePolicy::encode`).
    pub decisions: E,
    /// log π_old of each executed action, the rows' actions one row after
    /// the other (`action_starts[i]..action_starts[i + 1]` are row i's).
    pub old_log_probs: Vec<f32>,
    /// `rows + 1` offsets into `old_log_probs`.
    pub action_starts: Vec<usize>,
    /// One advantage per decision (every executed action of it shares it).
    pub advantages: Vec<f32>,
    /// Per decision, the weight of its actions in the policy loss (GRPO's
    /// 1/|episode| normalisation, `group_advantages`); empty: every
    /// action weighs 1 and the loss is the mean over the minibatch's
    /// actions.
    pub loss_weights: Vec<f32>,
    /// Value targets; ignored when `value_coef` is 0 (critic-free learners).
    pub returns: Vec<f32>,
    pub old_values: Vec<f32>,
}

impl<E: EncodedDecisions> Batch<E> {
    /// Rows (decisions).
    pub fn len(&self) -> usize {
        self.advantages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.advantages.is_empty()
    }

    /// The batch's parts agree with each other: one advantage, return and
    /// old value per decision, one old log-probability per executed action.
    pub fn check(&self) -> Result<(), String> {
        let n = self.decisions.len();
        let actions: usize = (0..n).map(|i| self.decisions.actions_in(i)).sum();
        let starts_fit = self.action_starts.len() == n + 1
            && self.action_starts.first() == Some(&0)
            && (0..n).all(|i| {
                self.action_starts[i + 1] - self.action_starts[i] == self.decisions.actions_in(i)
            });
        if self.advantages.len() != n
            || self.returns.len() != n
            || self.old_values.len() != n
            || self.old_log_probs.len() != actions
            || !(self.loss_weights.is_empty() || self.loss_weights.len() == n)
            || !starts_fit
        {
            return Err(format!(
                "batch of {n} decisions ({actions} actions) has {} advantages, {} returns, {} old values, {} old log-probabilities and {} action offsets",
                self.advantages.len(),
                self.returns.len(),
                self.old_values.len(),
                self.old_log_probs.len(),
                self.action_starts.len()
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpdateStats {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub approx_kl: f32,
    pub clip_fraction: f32,
    pub grad_norm: f32,
    pub minibatch_steps: u64,
    /// The update stopped on a non-finite loss or gradient and the weights
    /// were rolled back to those before the update.
    pub rolled_back: bool,
}

/// The loss of one minibatch, by part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loss {
    pub policy_loss: f32,
    pub value_loss: f32,
    /// Mean entropy per executed action.
    pub entropy: f32,
    pub total: f32,
    pub approx_kl: f32,
    /// Fraction of executed actions whose ratio left [1 − ε, 1 + ε].
    pub clip_fraction: f32,
}

/// The PPO loss of the rows `index` of `batch` (see the module comment),
/// with its gradient added to the policy's workspace. The clipped
/// surrogate is taken per executed action and averaged over the executed
/// actions of the minibatch (ALGORITHMS.md §2, "Chunks as actions"): with
/// N = Σ_i m_i actions,
///
///   L_clip = −(1/N) Σ_i Σ_{j<m_i} min(ρ_ij Â_i, clip(ρ_ij, 1 ± ε) Â_i)
///
/// so a chunk cut short contributes fewer terms, not larger ones; the value
/// loss is per decision.
pub fn loss_and_grad<P: TrainablePolicy>(
    policy: &P,
    batch: &Batch<P::Encoded>,
    index: &[usize],
    config: &PpoConfig,
    workspace: &mut P::Workspace,
) -> Result<Loss, PolicyError> {
    let m = index.len();
    let inv_m = 1.0 / m as f32;

    // Advantages, normalised over this minibatch's decisions (unbiased
    // std, as torch).
    let mut advantages: Vec<f32> = index.iter().map(|&i| batch.advantages[i]).collect();
    if config.normalize_advantages && m > 1 {
        let mean = advantages.iter().sum::<f32>() * inv_m;
        let var = advantages.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / (m - 1) as f32;
        let scale = 1.0 / (var.sqrt() + 1e-8);
        advantages.iter_mut().for_each(|a| *a = (*a - mean) * scale);
    }

    let with_values = config.value_coef != 0.0;
    let out = policy.forward(
        &batch.decisions,
        index,
        Wants {
            log_probs: true,
            values: with_values,
            imitation: false,
        },
        workspace,
    )?;
    let actions = out.log_probs.len();
    let inv_n = 1.0 / actions.max(1) as f32;

    // Policy: the clipped surrogate, per executed action.
    let mut grads = OutputGrads {
        log_probs: vec![0.0; actions],
        ..OutputGrads::default()
    };
    let (mut policy_loss, mut approx_kl, mut clipped) = (0.0f32, 0.0f32, 0usize);
    let (low, high) = (
        1.0 - config.clip,
        1.0 + config.clip_high.unwrap_or(config.clip),
    );
    let mut at = 0;
    for (r, &i) in index.iter().enumerate() {
        let a = advantages[r] * batch.loss_weights.get(i).copied().unwrap_or(1.0);
        let old = &batch.old_log_probs[batch.action_starts[i]..batch.action_starts[i + 1]];
        for &old_log_prob in old {
            let log_ratio = out.log_probs[at] - old_log_prob;
            let ratio = log_ratio.exp();
            let unclipped = -a * ratio;
            let clipped_loss = -a * ratio.clamp(low, high);
            policy_loss += unclipped.max(clipped_loss);
            approx_kl += (ratio - 1.0) - log_ratio;
            clipped += !(low..=high).contains(&ratio) as usize;
            // Gradient flows only through the branch the max picked, and
            // the clipped branch is flat outside [1 − ε, 1 + ε_high].
            if unclipped >= clipped_loss {
                grads.log_probs[at] = -a * ratio * inv_n;
            }
            at += 1;
        }
    }
    if at != actions {
        return Err(PolicyError::Other(format!(
            "the policy gave {actions} log-probabilities for {at} executed actions"
        )));
    }
    let entropy = out.entropies.iter().sum::<f32>() * inv_n;
    grads.mean_entropy = -config.entropy_coef;

    // Value function, per decision.
    let mut value_loss = 0.0;
    if with_values {
        grads.values = vec![0.0; m];
        for (r, &i) in index.iter().enumerate() {
            let (v, target) = (out.values[r], batch.returns[i]);
            let plain = (v - target).powi(2);
            let (loss, d_v) = match config.value_clip {
                None => (plain, v - target),
                Some(eps) => {
                    let old = batch.old_values[i];
                    let v_clipped = old + (v - old).clamp(-eps, eps);
                    let clipped_sq = (v_clipped - target).powi(2);
                    if plain >= clipped_sq {
                        (plain, v - target)
                    } else {
                        let inside = ((v - old).abs() < eps) as u8 as f32;
                        (clipped_sq, (v_clipped - target) * inside)
                    }
                }
            };
            value_loss += 0.5 * loss * inv_m;
            grads.values[r] = config.value_coef * d_v * inv_m;
        }
    }
    policy.backward(&grads, workspace)?;

    let policy_loss = policy_loss * inv_n;
    Ok(Loss {
        policy_loss,
        value_loss,
        entropy,
        total: policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy,
        approx_kl: approx_kl * inv_n,
        clip_fraction: clipped as f32 * inv_n,
    })
}

/// Epochs × minibatches of PPO on `batch`. Rows are shuffled with `rng`, so
/// the update is a deterministic function of (weights, batch, rng state).
/// A non-finite loss or gradient, or a policy error, stops the update and
/// restores the weights and optimiser it started from (`rolled_back`).
pub fn update<P: TrainablePolicy>(
    policy: &mut P,
    adam: &mut Adam,
    batch: &Batch<P::Encoded>,
    config: &PpoConfig,
    learning_rate: f64,
    rng: &mut ChaCha8Rng,
) -> UpdateStats {
    let mut stats = UpdateStats::default();
    if let Err(e) = batch.check() {
        tracing::error!("PPO update skipped: {e}");
        stats.rolled_back = true;
        return stats;
    }
    let start = (policy.clone(), adam.clone());
    adam.learning_rate = learning_rate;
    let mut workspace = P::Workspace::default();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    let minibatch = config.minibatch_size.clamp(1, batch.len().max(1));
    let mut sums = [0.0f32; 6];
    'epochs: for _ in 0..config.epochs {
        order.shuffle(rng);
        let mut epoch_kl = 0.0;
        let mut epoch_minibatches = 0;
        for index in order.chunks(minibatch) {
            let out = loss_and_grad(policy, batch, index, config, &mut workspace);
            let norm = policy.clip_gradients(&mut workspace, config.max_grad_norm);
            let failure = match &out {
                Err(e) => Some(e.to_string()),
                Ok(out) if !out.total.is_finite() || !norm.is_finite() => Some(format!(
                    "non-finite loss ({}) or gradient norm ({norm})",
                    out.total
                )),
                Ok(_) => None,
            };
            if let Some(failure) = failure {
                (*policy, *adam) = start;
                stats.rolled_back = true;
                tracing::warn!("PPO update stopped, weights restored: {failure}");
                return stats;
            }
            let out = out.expect("checked above");
            policy.step(adam, &mut workspace);
            stats.minibatch_steps += 1;
            epoch_kl += out.approx_kl;
            epoch_minibatches += 1;
            for (sum, v) in sums.iter_mut().zip([
                out.policy_loss,
                out.value_loss,
                out.entropy,
                out.approx_kl,
                out.clip_fraction,
                norm,
            ]) {
                *sum += v;
            }
        }
        if config
            .target_kl
            .is_some_and(|target| epoch_kl / epoch_minibatches.max(1) as f32 > target)
        {
            break 'epochs;
        }
    }
    let n = stats.minibatch_steps.max(1) as f32;
    stats.policy_loss = sums[0] / n;
    stats.value_loss = sums[1] / n;
    stats.entropy = sums[2] / n;
    stats.approx_kl = sums[3] / n;
    stats.clip_fraction = sums[4] / n;
    stats.grad_norm = sums[5] / n;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, Var};
    use cerebellum_core::{
        Action, ActionSpec, FieldSpec, Observation, ObservationSpec, RobotSpec, Unit,
    };
    use cerebellum_policies::fused_training::{FusedWorkspace, MlpDecisions};
    use cerebellum_policies::{Decision, GaussianConfig, GaussianMlpPolicy};

    fn policy() -> GaussianMlpPolicy {
        let spec = RobotSpec {
            name: "test".into(),
            observation: ObservationSpec {
                fields: vec![FieldSpec::new(
                    "s",
                    Unit::Normalized,
                    &["a", "b", "c"],
                    &[(-9.0, 9.0); 3],
                )],
                cameras: vec![],
                instruction: false,
            },
            action: ActionSpec {
                fields: vec![FieldSpec::new(
                    "u",
                    Unit::Normalized,
                    &["x", "y"],
                    &[(-1.0, 1.0); 2],
                )],
            },
            control_rate_hz: 50.0,
        };
        let config = GaussianConfig {
            hidden: vec![5, 4],
            init_log_std: -0.3,
            ..Default::default()
        };
        let mut p = GaussianMlpPolicy::new(&spec, config, 5).unwrap();
        // A larger output layer than the 0.01 init, so the means matter.
        for v in p.actor.params_mut() {
            *v *= 3.0;
        }
        p.log_std = vec![-0.3, 0.2];
        p
    }

    fn observation(state: Vec<f32>) -> Observation {
        Observation {
            state,
            images: vec![],
            instruction: None,
            timestamp: 0.0,
        }
    }

    /// One-action decisions: states and actions (the action limits are
    /// [−1, 1], so a command is its normalised draw).
    pub(super) fn encoded(p: &GaussianMlpPolicy, states: &[f32], actions: &[f32]) -> MlpDecisions {
        let observations: Vec<Observation> =
            states.chunks(3).map(|s| observation(s.to_vec())).collect();
        let actions: Vec<Action> = actions.chunks(2).map(|a| Action::new(a.to_vec())).collect();
        let decisions: Vec<Decision> = observations
            .iter()
            .zip(&actions)
            .map(|(o, a)| Decision::single(o, a))
            .collect();
        p.encode(&decisions).unwrap()
    }

    fn batch(p: &mut GaussianMlpPolicy) -> Batch<MlpDecisions> {
        let n = 6;
        let f = |k: usize, s: f32| ((k as f32 * 1.37 + s).sin()) * 0.9;
        let states: Vec<f32> = (0..n * 3).map(|k| f(k, 0.1)).collect();
        let raw_actions: Vec<f32> = (0..n * 2).map(|k| f(k, 2.0)).collect();
        let decisions = encoded(p, &states, &raw_actions);
        let mean = p.draw(&decisions.observations, None).mean;
        let now = p.log_prob(&mean, &decisions.actions);
        // Old log-probs around the current ones, so that some ratios fall
        // inside [0.8, 1.2] and some outside, on both sides.
        let offsets = [-0.5, 0.05, 0.4, -0.1, 0.3, -0.02];
        Batch {
            decisions,
            old_log_probs: now.iter().zip(offsets).map(|(l, o)| l + o).collect(),
            action_starts: (0..=n).collect(),
            advantages: vec![0.5, -1.0, 2.0, -0.3, 0.9, -1.7],
            loss_weights: Vec::new(),
            returns: (0..n).map(|k| f(k, 4.0)).collect(),
            old_values: (0..n).map(|k| f(k, 4.3) * 0.5).collect(),
        }
    }

    /// The same loss in candle, differentiated by candle's autograd.
    fn candle_grads(
        p: &GaussianMlpPolicy,
        b: &Batch<MlpDecisions>,
        c: &PpoConfig,
    ) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let n = b.len();
        let vars = |mlp: &cerebellum_policies::Mlp| -> Vec<(Var, Var)> {
            mlp.layers()
                .into_iter()
                .zip(mlp.sizes().windows(2))
                .map(|((w, bias), s)| {
                    (
                        Var::from_slice(w, (s[1], s[0]), &dev).unwrap(),
                        Var::from_slice(bias, s[1], &dev).unwrap(),
                    )
                })
                .collect()
        };
        let forward = |layers: &[(Var, Var)], x: &Tensor| {
            let mut h = x.clone();
            for (k, (w, bias)) in layers.iter().enumerate() {
                h = h
                    .matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(bias.as_tensor())
                    .unwrap();
                if k + 1 < layers.len() {
                    h = h.tanh().unwrap();
                }
            }
            h
        };
        let actor = vars(&p.actor);
        let critic = vars(&p.critic);
        let log_std = Var::from_slice(&p.log_std, (1, 2), &dev).unwrap();
        let x = Tensor::from_slice(&b.decisions.observations, (n, 3), &dev).unwrap();
        let u = Tensor::from_slice(&b.decisions.actions, (n, 2), &dev).unwrap();
        let mean = forward(&actor, &x);
        let z = u
            .sub(&mean)
            .unwrap()
            .broadcast_div(&log_std.as_tensor().exp().unwrap())
            .unwrap();
        let log_prob = (z.sqr().unwrap() * -0.5)
            .unwrap()
            .broadcast_sub(log_std.as_tensor())
            .unwrap()
            .affine(1.0, -0.918_938_5)
            .unwrap()
            .sum(1)
            .unwrap();
        let old = Tensor::from_slice(&b.old_log_probs, n, &dev).unwrap();
        let ratio = log_prob.sub(&old).unwrap().exp().unwrap();
        let mean_a = b.advantages.iter().sum::<f32>() / n as f32;
        let std_a = (b
            .advantages
            .iter()
            .map(|a| (a - mean_a).powi(2))
            .sum::<f32>()
            / (n - 1) as f32)
            .sqrt();
        let adv: Vec<f32> = b
            .advantages
            .iter()
            .map(|a| (a - mean_a) / (std_a + 1e-8))
            .collect();
        let adv = Tensor::from_slice(&adv, n, &dev).unwrap();
        let unclipped = ratio.mul(&adv).unwrap().neg().unwrap();
        let clipped = ratio
            .clamp(1.0 - c.clip, 1.0 + c.clip)
            .unwrap()
            .mul(&adv)
            .unwrap()
            .neg()
            .unwrap();
        let pg = unclipped.maximum(&clipped).unwrap().mean_all().unwrap();
        let v = forward(&critic, &x).squeeze(1).unwrap();
        let target = Tensor::from_slice(&b.returns, n, &dev).unwrap();
        let old_v = Tensor::from_slice(&b.old_values, n, &dev).unwrap();
        let eps = c.value_clip.unwrap() as f64;
        let v_clipped = old_v
            .add(&v.sub(&old_v).unwrap().clamp(-eps, eps).unwrap())
            .unwrap();
        let vl = v
            .sub(&target)
            .unwrap()
            .sqr()
            .unwrap()
            .maximum(&v_clipped.sub(&target).unwrap().sqr().unwrap())
            .unwrap()
            .mean_all()
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap();
        let entropy = log_std
            .as_tensor()
            .affine(1.0, 0.5 + 0.918_938_5)
            .unwrap()
            .sum_all()
            .unwrap();
        let total = pg
            .add(&vl.affine(c.value_coef as f64, 0.0).unwrap())
            .unwrap()
            .sub(&entropy.affine(c.entropy_coef as f64, 0.0).unwrap())
            .unwrap();
        let grads = total.backward().unwrap();
        let flat = |layers: &[(Var, Var)]| -> Vec<f32> {
            layers
                .iter()
                .flat_map(|(w, bias)| {
                    let gw = grads
                        .get(w.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    let gb = grads
                        .get(bias.as_tensor())
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    gw.into_iter().chain(gb)
                })
                .collect()
        };
        let g_std = grads
            .get(log_std.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (
            total.to_scalar::<f32>().unwrap(),
            flat(&actor),
            g_std,
            flat(&critic),
        )
    }

    fn assert_close(ours: &[f32], reference: &[f32], what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}");
        for (k, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 + 1e-3 * b.abs(),
                "{what}[{k}]: ours {a}, candle {b}"
            );
        }
    }

    #[test]
    fn fused_gradient_matches_candle_autograd() {
        let mut p = policy();
        let b = batch(&mut p);
        let config = PpoConfig {
            value_clip: Some(0.2),
            entropy_coef: 0.01,
            ..PpoConfig::default()
        };
        let mut ws = FusedWorkspace::default();
        let out =
            loss_and_grad(&p, &b, &(0..b.len()).collect::<Vec<_>>(), &config, &mut ws).unwrap();
        let grads = p.gradients(&ws);
        assert!(
            out.clip_fraction > 0.0 && out.clip_fraction < 1.0,
            "both branches are exercised"
        );
        let (total, actor, log_std, critic) = candle_grads(&p, &b, &config);
        assert!(
            (out.total - total).abs() < 1e-4,
            "loss {} vs candle {total}",
            out.total
        );
        assert_close(&grads[0], &actor, "actor");
        assert_close(&grads[1], &log_std, "log_std");
        assert_close(&grads[2], &critic, "critic");
    }

    #[test]
    fn loss_by_hand_for_one_sample() {
        // One row, advantage not normalised: u = μ + σ, so log π_new =
        // −½ − log σ − ½ log 2π summed over two dims; old log-prob chosen
        // so that ρ = e^{0.5} ≈ 1.6487 > 1 + ε: the clipped branch wins for
        // A = 1, L_clip = −1.2.
        let mut p = policy();
        for v in p.actor.params_mut() {
            *v = 0.0;
        }
        p.log_std = vec![0.0, 0.0];
        let log_prob = 2.0 * (-0.5 - 0.918_938_5);
        let b = Batch {
            decisions: encoded(&p, &[0.0; 3], &[1.0, 1.0]),
            old_log_probs: vec![log_prob - 0.5],
            action_starts: vec![0, 1],
            advantages: vec![1.0],
            loss_weights: Vec::new(),
            returns: vec![2.0],
            old_values: vec![0.0],
        };
        let config = PpoConfig {
            normalize_advantages: false,
            value_coef: 0.5,
            ..PpoConfig::default()
        };
        let mut ws = FusedWorkspace::default();
        let out = loss_and_grad(&p, &b, &[0], &config, &mut ws).unwrap();
        assert!((out.policy_loss + 1.2).abs() < 1e-6, "{}", out.policy_loss);
        // Only the actor was zeroed: the value loss is ½(V − 2)² with the
        // critic's own output.
        let v = p.values(&[0.0, 0.0, 0.0])[0];
        assert!((out.value_loss - 0.5 * (v - 2.0).powi(2)).abs() < 1e-5);
        assert!((out.approx_kl - (0.5f32.exp() - 1.0 - 0.5)).abs() < 1e-5);
        assert_eq!(out.clip_fraction, 1.0);
        assert!(
            p.gradients(&ws)[0].iter().all(|&g| g == 0.0),
            "clipped: no policy gradient"
        );
    }

    #[test]
    fn clip_higher_lets_a_good_action_gain_past_one_plus_clip() {
        // ρ = e^{0.2} ≈ 1.221, A = 1: clipped at 1.2 by the symmetric clip
        // (no gradient), inside 1 + 0.28 with clip-higher (gradient −ρ).
        // A negative advantage at ρ = e^{−0.25} ≈ 0.779 stays clipped below
        // at 1 − 0.2 either way.
        let mut p = policy();
        for v in p.actor.params_mut() {
            *v = 0.0;
        }
        p.log_std = vec![0.0, 0.0];
        let log_prob = 2.0 * (-0.5 - 0.918_938_5);
        let one_row = |offset: f32, advantage: f32, weight: Vec<f32>| Batch {
            decisions: encoded(&p, &[0.0; 3], &[1.0, 1.0]),
            old_log_probs: vec![log_prob - offset],
            action_starts: vec![0, 1],
            advantages: vec![advantage],
            loss_weights: weight,
            returns: vec![0.0],
            old_values: vec![0.0],
        };
        let symmetric = PpoConfig {
            normalize_advantages: false,
            value_coef: 0.0,
            ..PpoConfig::default()
        };
        let higher = PpoConfig {
            clip_high: Some(0.28),
            ..symmetric.clone()
        };
        let loss = |batch: &Batch<MlpDecisions>, config: &PpoConfig| {
            let mut ws = FusedWorkspace::default();
            let out = loss_and_grad(&p, batch, &[0], config, &mut ws).unwrap();
            let moved = p.gradients(&ws)[0].iter().any(|&g| g != 0.0);
            (out.policy_loss, out.clip_fraction, moved)
        };
        let good = one_row(0.2, 1.0, Vec::new());
        let (l, clipped, moved) = loss(&good, &symmetric);
        assert!((l + 1.2).abs() < 1e-6 && clipped == 1.0 && !moved, "{l}");
        let (l, clipped, moved) = loss(&good, &higher);
        assert!(
            (l + 0.2f32.exp()).abs() < 1e-5 && clipped == 0.0 && moved,
            "{l}"
        );
        let bad = one_row(-0.25, -1.0, Vec::new());
        for config in [&symmetric, &higher] {
            let (l, clipped, moved) = loss(&bad, config);
            assert!((l - 0.8).abs() < 1e-6 && clipped == 1.0 && !moved, "{l}");
        }
        // A loss weight scales the row's term (GRPO's 1/|episode|).
        let weighted = one_row(0.2, 1.0, vec![0.5]);
        let (l, ..) = loss(&weighted, &higher);
        assert!((l + 0.5 * 0.2f32.exp()).abs() < 1e-5, "{l}");
    }

    #[test]
    fn a_non_finite_loss_rolls_back_to_the_last_good_weights() {
        let mut p = policy();
        let mut b = batch(&mut p);
        b.returns[3] = f32::INFINITY;
        let before = (p.actor.clone(), p.critic.clone(), p.log_std.clone());
        let sizes = [p.actor.params().len(), 2, p.critic.params().len()];
        let mut adam = Adam::new(1e-3, &sizes);
        let config = PpoConfig {
            minibatch_size: 2,
            ..PpoConfig::default()
        };
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let stats = update(&mut p, &mut adam, &b, &config, 1e-3, &mut rng);
        assert!(stats.rolled_back);
        assert_eq!((p.actor, p.critic, p.log_std), before);
        assert_eq!(adam.steps(), 0, "the optimiser state is restored too");
    }
}
