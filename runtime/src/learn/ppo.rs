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
//! The gradient is written out by hand: d ρ/d log π = ρ, d log π/d μ_j =
//! (u_j − μ_j)/σ_j², d log π/d log σ_j = ((u_j − μ_j)/σ_j)² − 1, d H/d log σ_j
//! = 1; the MLPs back-propagate the rest. A test checks it against candle
//! autograd.

use cerebellum_policies::optim::{Adam, clip_global_norm};
use cerebellum_policies::{GaussianMlpPolicy, MlpTape};
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
            value_clip: None,
            value_coef: 0.5,
            entropy_coef: 0.0,
            max_grad_norm: 0.5,
            normalize_advantages: true,
            target_kl: None,
        }
    }
}

/// One batch of experience, row-aligned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// `n × obs` normalised observations.
    pub observations: Vec<f32>,
    /// `n × act` draws in the policy's normalised action coordinates.
    pub raw_actions: Vec<f32>,
    pub old_log_probs: Vec<f32>,
    pub advantages: Vec<f32>,
    /// Value targets; ignored when `value_coef` is 0 (critic-free learners).
    pub returns: Vec<f32>,
    pub old_values: Vec<f32>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.old_log_probs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.old_log_probs.is_empty()
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

/// Loss parts and the gradient of the total for one minibatch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossAndGrad {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub total: f32,
    pub approx_kl: f32,
    pub clip_fraction: f32,
    pub actor_grad: Vec<f32>,
    pub log_std_grad: Vec<f32>,
    pub critic_grad: Vec<f32>,
}

/// Scratch buffers kept between minibatches.
#[derive(Default)]
pub struct Workspace {
    actor_tape: MlpTape,
    critic_tape: MlpTape,
    mean_grad: Vec<f32>,
    value_grad: Vec<f32>,
    advantages: Vec<f32>,
}

/// The PPO loss of the rows `index` of `batch`, and its gradient.
pub fn loss_and_grad(
    policy: &GaussianMlpPolicy,
    batch: &Batch,
    index: &[usize],
    config: &PpoConfig,
    ws: &mut Workspace,
) -> LossAndGrad {
    let (obs, act) = (policy.obs_size(), policy.act_size());
    let m = index.len();
    let inv_m = 1.0 / m as f32;
    let mut rows = Vec::with_capacity(m * obs);
    for &i in index {
        rows.extend_from_slice(&batch.observations[i * obs..][..obs]);
    }

    // Advantages, normalised over this minibatch (unbiased std, as torch).
    ws.advantages.clear();
    ws.advantages
        .extend(index.iter().map(|&i| batch.advantages[i]));
    if config.normalize_advantages && m > 1 {
        let mean = ws.advantages.iter().sum::<f32>() * inv_m;
        let var = ws
            .advantages
            .iter()
            .map(|a| (a - mean).powi(2))
            .sum::<f32>()
            / (m - 1) as f32;
        let scale = 1.0 / (var.sqrt() + 1e-8);
        ws.advantages
            .iter_mut()
            .for_each(|a| *a = (*a - mean) * scale);
    }

    // Policy: clipped surrogate.
    policy.actor.forward(&rows, m, &mut ws.actor_tape);
    let sigma: Vec<f32> = policy.log_std.iter().map(|s| s.exp()).collect();
    ws.mean_grad.clear();
    ws.mean_grad.resize(m * act, 0.0);
    let mut log_std_grad = vec![0.0f32; act];
    let (mut policy_loss, mut approx_kl, mut clipped) = (0.0f32, 0.0f32, 0usize);
    let means = ws.actor_tape.output();
    for (r, &i) in index.iter().enumerate() {
        let mean = &means[r * act..][..act];
        let u = &batch.raw_actions[i * act..][..act];
        let mut log_prob = 0.0;
        for j in 0..act {
            let z = (u[j] - mean[j]) / sigma[j];
            log_prob += -0.5 * z * z - policy.log_std[j] - 0.918_938_5;
        }
        let log_ratio = log_prob - batch.old_log_probs[i];
        let ratio = log_ratio.exp();
        let a = ws.advantages[r];
        let unclipped = -a * ratio;
        let clipped_ratio = ratio.clamp(1.0 - config.clip, 1.0 + config.clip);
        let clipped_loss = -a * clipped_ratio;
        policy_loss += unclipped.max(clipped_loss);
        approx_kl += (ratio - 1.0) - log_ratio;
        clipped += ((ratio - 1.0).abs() > config.clip) as usize;
        // Gradient flows only through the branch the max picked, and the
        // clipped branch is flat outside [1 − ε, 1 + ε].
        let d_log_prob = if unclipped >= clipped_loss {
            -a * ratio * inv_m
        } else {
            0.0
        };
        if d_log_prob != 0.0 {
            for j in 0..act {
                let z = (u[j] - mean[j]) / sigma[j];
                ws.mean_grad[r * act + j] = d_log_prob * z / sigma[j];
                log_std_grad[j] += d_log_prob * (z * z - 1.0);
            }
        }
    }
    let entropy = policy.entropy();
    log_std_grad
        .iter_mut()
        .for_each(|g| *g -= config.entropy_coef);
    let mut actor_grad = vec![0.0f32; policy.actor.params().len()];
    policy
        .actor
        .backward(&ws.mean_grad, &mut ws.actor_tape, &mut actor_grad);

    // Value function.
    let mut critic_grad = vec![0.0f32; policy.critic.params().len()];
    let mut value_loss = 0.0;
    if config.value_coef != 0.0 {
        policy.critic.forward(&rows, m, &mut ws.critic_tape);
        ws.value_grad.clear();
        ws.value_grad.resize(m, 0.0);
        let values = ws.critic_tape.output();
        for (r, &i) in index.iter().enumerate() {
            let (v, target) = (values[r], batch.returns[i]);
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
            ws.value_grad[r] = config.value_coef * d_v * inv_m;
        }
        policy
            .critic
            .backward(&ws.value_grad, &mut ws.critic_tape, &mut critic_grad);
    }

    let policy_loss = policy_loss * inv_m;
    LossAndGrad {
        policy_loss,
        value_loss,
        entropy,
        total: policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy,
        approx_kl: approx_kl * inv_m,
        clip_fraction: clipped as f32 * inv_m,
        actor_grad,
        log_std_grad,
        critic_grad,
    }
}

/// Epochs × minibatches of PPO on `batch`. Rows are shuffled with `rng`, so
/// the update is a deterministic function of (weights, batch, rng state).
/// A non-finite loss or gradient stops the update and restores the weights
/// it started from (`rolled_back`).
pub fn update(
    policy: &mut GaussianMlpPolicy,
    adam: &mut Adam,
    batch: &Batch,
    config: &PpoConfig,
    learning_rate: f64,
    rng: &mut ChaCha8Rng,
) -> UpdateStats {
    let start = (
        policy.actor.clone(),
        policy.critic.clone(),
        policy.log_std.clone(),
        adam.clone(),
    );
    adam.learning_rate = learning_rate;
    let mut ws = Workspace::default();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    let mut stats = UpdateStats::default();
    let minibatch = config.minibatch_size.clamp(1, batch.len().max(1));
    let mut sums = [0.0f32; 6];
    'epochs: for _ in 0..config.epochs {
        order.shuffle(rng);
        let mut epoch_kl = 0.0;
        let mut epoch_minibatches = 0;
        for index in order.chunks(minibatch) {
            let mut out = loss_and_grad(policy, batch, index, config, &mut ws);
            let mut grads: [&mut [f32]; 3] = [
                &mut out.actor_grad,
                &mut out.log_std_grad,
                &mut out.critic_grad,
            ];
            let norm = clip_global_norm(&mut grads, config.max_grad_norm);
            if !out.total.is_finite() || !norm.is_finite() {
                (policy.actor, policy.critic, policy.log_std, *adam) = start;
                stats.rolled_back = true;
                tracing::warn!(
                    loss = out.total,
                    grad_norm = norm,
                    "non-finite PPO loss or gradient: update stopped, weights restored"
                );
                return stats;
            }
            let [a, s, c] = grads;
            adam.step(
                &mut [
                    policy.actor.params_mut(),
                    &mut policy.log_std,
                    policy.critic.params_mut(),
                ],
                &[a, s, c],
            );
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
        if let Some(target) = config.target_kl {
            if epoch_kl / epoch_minibatches.max(1) as f32 > target {
                break 'epochs;
            }
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
