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

use super::config::{EPOCHS, LEARNING_RATE, MAX_GRAD_NORM, MINIBATCH_SIZE};
use cerebellum_core::bounds::Limits;
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

/// The surrogate's ε: ρ is clamped to [1 − ε, 1 + ε].
pub const CLIP: Limits<f32> = Limits::open(0.0, 1.0);
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

/// Adam over the parameter groups `update` steps, in its order: actor,
/// log-std, critic.
pub fn optimizer(policy: &GaussianMlpPolicy, learning_rate: f64) -> Adam {
    Adam::new(
        learning_rate,
        &[
            policy.actor.params().len(),
            policy.log_std.len(),
            policy.critic.params().len(),
        ],
    )
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
    use cerebellum_core::{ActionSpec, FieldSpec, ObservationSpec, RobotSpec, Unit};
    use cerebellum_policies::GaussianConfig;

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

    fn batch(p: &mut GaussianMlpPolicy) -> Batch {
        let n = 6;
        let f = |k: usize, s: f32| ((k as f32 * 1.37 + s).sin()) * 1.2;
        let observations: Vec<f32> = (0..n * 3).map(|k| f(k, 0.1)).collect();
        let raw_actions: Vec<f32> = (0..n * 2).map(|k| f(k, 2.0)).collect();
        let mean = p.draw(&observations, None).mean;
        let now = p.log_prob(&mean, &raw_actions);
        // Old log-probs around the current ones, so that some ratios fall
        // inside [0.8, 1.2] and some outside, on both sides.
        let offsets = [-0.5, 0.05, 0.4, -0.1, 0.3, -0.02];
        Batch {
            observations,
            raw_actions,
            old_log_probs: now.iter().zip(offsets).map(|(l, o)| l + o).collect(),
            advantages: vec![0.5, -1.0, 2.0, -0.3, 0.9, -1.7],
            returns: (0..n).map(|k| f(k, 4.0)).collect(),
            old_values: (0..n).map(|k| f(k, 4.3) * 0.5).collect(),
        }
    }

    /// The same loss in candle, differentiated by candle's autograd.
    fn candle_grads(
        p: &GaussianMlpPolicy,
        b: &Batch,
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
        let x = Tensor::from_slice(&b.observations, (n, 3), &dev).unwrap();
        let u = Tensor::from_slice(&b.raw_actions, (n, 2), &dev).unwrap();
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
        let out = loss_and_grad(
            &p,
            &b,
            &(0..b.len()).collect::<Vec<_>>(),
            &config,
            &mut Workspace::default(),
        );
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
        assert_close(&out.actor_grad, &actor, "actor");
        assert_close(&out.log_std_grad, &log_std, "log_std");
        assert_close(&out.critic_grad, &critic, "critic");
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
            observations: vec![0.0; 3],
            raw_actions: vec![1.0, 1.0],
            old_log_probs: vec![log_prob - 0.5],
            advantages: vec![1.0],
            returns: vec![2.0],
            old_values: vec![0.0],
        };
        let config = PpoConfig {
            normalize_advantages: false,
            value_coef: 0.5,
            ..PpoConfig::default()
        };
        let out = loss_and_grad(&p, &b, &[0], &config, &mut Workspace::default());
        assert!((out.policy_loss + 1.2).abs() < 1e-6, "{}", out.policy_loss);
        // Only the actor was zeroed: the value loss is ½(V − 2)² with the
        // critic's own output.
        let v = p.values(&[0.0, 0.0, 0.0])[0];
        assert!((out.value_loss - 0.5 * (v - 2.0).powi(2)).abs() < 1e-5);
        assert!((out.approx_kl - (0.5f32.exp() - 1.0 - 0.5)).abs() < 1e-5);
        assert_eq!(out.clip_fraction, 1.0);
        assert!(
            out.actor_grad.iter().all(|&g| g == 0.0),
            "clipped: no policy gradient"
        );
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
