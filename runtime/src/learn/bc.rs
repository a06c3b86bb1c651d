//! Behaviour cloning before reinforcement learning ("offline-to-online",
//! ALGORITHMS.md §6; BC pretraining then policy-gradient fine-tuning as in
//! Rajeswaran et al. 2018, "Learning Complex Dexterous Manipulation with
//! Deep Reinforcement Learning and Demonstrations"):
//!
//!   u*    = the demonstrated command in the policy's action coordinates
//!   L_BC  = ½·E[‖μ_θ(s) − u*‖²]
//!
//! Only the mean of the actor moves; the critic and the exploration noise
//! are left to RL. The observation normaliser first absorbs the
//! demonstrations, so that the first RL rollouts see the inputs BC trained on.
//!
//! Why it is there: some starts need a manoeuvre that exploration noise
//! does not find (on `reach`, targets behind the SO-101 are only reachable
//! by leaning back over the shoulder; PPO from scratch solves none of
//! them). A few hundred demonstrated episodes show the way; RL then
//! improves on them.

use crate::episodes::{Controller, run_episode_with};
use cerebellum_core::{Observation, Policy, Robot};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_policies::optim::{Adam, clip_global_norm};
use cerebellum_sim::SimEnv;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BcConfig {
    /// Episodes of the simulator's scripted expert to clone (0 = no BC).
    pub expert_episodes: usize,
    /// Standard deviation of the noise added to the expert's commands while
    /// demonstrating (rad or m; see `demonstrations`).
    pub expert_noise: f32,
    pub epochs: usize,
    pub minibatch_size: usize,
    pub learning_rate: f64,
    pub max_grad_norm: f32,
    /// Keep cloning during RL (DAPG's augmented loss, Rajeswaran et al.
    /// 2018): after each PPO update, `rl_minibatches` cloning steps at the
    /// step size `learning_rate · rl_weight · rl_decay^iteration`; 0 = off.
    pub rl_weight: f64,
    pub rl_decay: f64,
    pub rl_minibatches: usize,
}

impl Default for BcConfig {
    fn default() -> Self {
        Self {
            expert_episodes: 0,
            expert_noise: 0.05,
            epochs: 50,
            minibatch_size: 256,
            learning_rate: 1e-3,
            max_grad_norm: 1.0,
            rl_weight: 0.0,
            rl_decay: 0.99,
            rl_minibatches: 4,
        }
    }
}

impl BcConfig {
    pub fn validate(&self) -> Result<(), String> {
        let fail = |key: &str, why: &str| Err(format!("config key `bc.{key}`: {why}"));
        if self.expert_episodes == 0 {
            return Ok(());
        }
        if !(self.expert_noise >= 0.0 && self.expert_noise.is_finite()) {
            return fail("expert_noise", "must be zero or positive");
        }
        if self.epochs == 0 {
            return fail("epochs", "must be at least 1");
        }
        if self.minibatch_size == 0 {
            return fail("minibatch_size", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return fail("learning_rate", "must be positive");
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return fail("max_grad_norm", "must be positive");
        }
        if !(self.rl_weight >= 0.0 && self.rl_weight.is_finite()) {
            return fail("rl_weight", "must be zero or positive");
        }
        if !(self.rl_decay > 0.0 && self.rl_decay <= 1.0) {
            return fail("rl_decay", "must be in (0, 1]");
        }
        Ok(())
    }
}

/// One demonstrated tick: what was seen and the command that was sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Demonstration {
    pub observation: Observation,
    pub command: Vec<f32>,
}

/// Runs `controller` from each seed and keeps every tick of the successful
/// episodes (a failed demonstration teaches the failure). With `noise` > 0
/// the robot is sent the command plus Gaussian noise of that standard
/// deviation while the clean command is kept as the label (DART, Laskey et
/// al. 2017): the demonstrations then cover the small deviations a cloned
/// policy makes, and show how to recover from them.
pub fn demonstrations(
    env: &mut SimEnv,
    controller: &mut dyn Controller,
    seeds: impl IntoIterator<Item = u64>,
    noise: f32,
) -> anyhow::Result<(Vec<Demonstration>, DemoReport)> {
    let mut kept = Vec::new();
    let mut report = DemoReport::default();
    let (lower, upper) = env.spec().action.limits();
    for seed in seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xDA27);
        let mut episode = Vec::new();
        let summary = run_episode_with(env, controller, seed, |observation, command| {
            let mut sent = command.clone();
            if noise > 0.0 {
                for ((a, lo), hi) in sent.values.iter_mut().zip(&lower).zip(&upper) {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    *a = (*a + noise * z).clamp(*lo, *hi);
                }
            }
            episode.push(Demonstration {
                observation: observation.clone(),
                command: command.values,
            });
            sent
        })?;
        let success = summary.success;
        report.episodes += 1;
        if success {
            report.successful += 1;
            kept.append(&mut episode);
        }
    }
    report.ticks = kept.len();
    Ok((kept, report))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DemoReport {
    pub episodes: usize,
    pub successful: usize,
    pub ticks: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BcReport {
    pub demonstrations: DemoReport,
    /// L_BC over all demonstrations before and after training.
    pub initial_loss: f32,
    pub final_loss: f32,
}

/// Demonstrations in the policy's coordinates: raw states (normalised at
/// each use, since the normaliser moves during RL) and the targets u*.
pub struct CloningSet {
    states: Vec<f32>,
    targets: Vec<f32>,
    adam: Adam,
    rng: ChaCha8Rng,
    tape: cerebellum_policies::MlpTape,
    grads: Vec<f32>,
}

impl std::fmt::Debug for CloningSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloningSet")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl CloningSet {
    /// Checks every demonstration against the policy's spec first.
    pub fn new(
        policy: &GaussianMlpPolicy,
        demos: &[Demonstration],
        config: &BcConfig,
        seed: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!demos.is_empty(), "behaviour cloning needs demonstrations");
        let spec = &policy.spec;
        let mut states = Vec::with_capacity(demos.len() * policy.obs_size());
        let mut targets = Vec::with_capacity(demos.len() * policy.act_size());
        for d in demos {
            spec.observation.check(&d.observation)?;
            spec.action
                .check(&cerebellum_core::Action::new(d.command.clone()))?;
            states.extend_from_slice(&d.observation.state);
            targets.extend(policy.to_raw(&d.observation.state, &d.command));
        }
        Ok(Self {
            states,
            targets,
            adam: Adam::new(config.learning_rate, &[policy.actor.params().len()]),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xB_C0DE),
            tape: Default::default(),
            grads: vec![0.0; policy.actor.params().len()],
        })
    }

    /// L_BC over every demonstration.
    pub fn loss(&mut self, policy: &GaussianMlpPolicy) -> f32 {
        let inputs = self.normalized(policy, None);
        loss(policy, &inputs, &self.targets, &mut self.tape)
    }

    fn normalized(&self, policy: &GaussianMlpPolicy, rows: Option<&[usize]>) -> Vec<f32> {
        let obs = policy.obs_size();
        let n = self.states.len() / obs;
        let all: Vec<usize>;
        let rows = match rows {
            Some(r) => r,
            None => {
                all = (0..n).collect();
                &all
            }
        };
        let mut out = vec![0.0; rows.len() * obs];
        for (&i, row) in rows.iter().zip(out.chunks_exact_mut(obs)) {
            policy
                .normalizer
                .normalize_into(&self.states[i * obs..(i + 1) * obs], row);
        }
        out
    }

    /// Gradient steps on ½‖μ − u*‖² over shuffled minibatches: `epochs`
    /// passes, or the first `limit` minibatches of one pass.
    pub fn fit(
        &mut self,
        policy: &mut GaussianMlpPolicy,
        minibatch_size: usize,
        passes: usize,
        limit: Option<usize>,
        learning_rate: f64,
        max_grad_norm: f32,
    ) {
        let (obs, act) = (policy.obs_size(), policy.act_size());
        let n = self.states.len() / obs;
        let mut order: Vec<usize> = (0..n).collect();
        self.adam.learning_rate = learning_rate;
        let mut target = Vec::new();
        let mut output_grad = Vec::new();
        for _ in 0..passes {
            order.shuffle(&mut self.rng);
            for minibatch in order
                .chunks(minibatch_size)
                .take(limit.unwrap_or(usize::MAX))
            {
                let inputs = self.normalized(policy, Some(minibatch));
                target.clear();
                for &i in minibatch {
                    target.extend_from_slice(&self.targets[i * act..(i + 1) * act]);
                }
                let rows = minibatch.len();
                policy.actor.forward(&inputs, rows, &mut self.tape);
                // d L_BC / d μ = (μ − u*) / n
                output_grad.clear();
                output_grad.extend(
                    self.tape
                        .output()
                        .iter()
                        .zip(&target)
                        .map(|(m, u)| (m - u) / rows as f32),
                );
                self.grads.iter_mut().for_each(|g| *g = 0.0);
                policy
                    .actor
                    .backward(&output_grad, &mut self.tape, &mut self.grads);
                clip_global_norm(&mut [&mut self.grads], max_grad_norm);
                self.adam
                    .step(&mut [policy.actor.params_mut()], &[&self.grads]);
            }
        }
    }
}

/// Fits the policy's mean to the demonstrations (see the module comment),
/// after the observation normaliser has absorbed them. Deterministic for a
/// given seed. Returns the loss before and after, and the set for cloning
/// during RL.
pub fn pretrain(
    policy: &mut GaussianMlpPolicy,
    demos: &[Demonstration],
    config: &BcConfig,
    seed: u64,
) -> anyhow::Result<(f32, f32, CloningSet)> {
    let mut set = CloningSet::new(policy, demos, config, seed)?;
    policy.normalizer.update(&set.states);
    let initial_loss = set.loss(policy);
    set.fit(
        policy,
        config.minibatch_size,
        config.epochs,
        None,
        config.learning_rate,
        config.max_grad_norm,
    );
    let final_loss = set.loss(policy);
    anyhow::ensure!(
        policy.is_finite() && final_loss.is_finite(),
        "behaviour cloning diverged (loss {final_loss})"
    );
    policy.set_version(policy.version() + 1);
    Ok((initial_loss, final_loss, set))
}

fn loss(
    policy: &GaussianMlpPolicy,
    inputs: &[f32],
    targets: &[f32],
    tape: &mut cerebellum_policies::MlpTape,
) -> f32 {
    let n = targets.len() / policy.act_size();
    policy.actor.forward(inputs, n, tape);
    let sum: f64 = tape
        .output()
        .iter()
        .zip(targets)
        .map(|(m, u)| 0.5 * f64::from(m - u).powi(2))
        .sum();
    (sum / n as f64) as f32
}

/// Demonstrations of the scripted expert on `env`'s task from seeds no
/// training or held-out episode uses.
pub fn expert_demonstrations(
    env: &mut SimEnv,
    episodes: usize,
    noise: f32,
    seed: u64,
) -> anyhow::Result<(Vec<Demonstration>, DemoReport)> {
    let mut expert = crate::episodes::make_controller(true, env).map_err(anyhow::Error::msg)?;
    let spec_name = env.spec().name.clone();
    let seeds = (0..episodes as u64)
        .map(|k| cerebellum_sim::vec_env::episode_seed(seed ^ DEMO_SEEDS, usize::MAX - 1, k));
    let result = demonstrations(env, expert.as_mut(), seeds, noise)?;
    anyhow::ensure!(
        result.1.successful > 0,
        "the scripted expert succeeded in none of {episodes} episodes on {spec_name}"
    );
    Ok(result)
}

/// Demonstration seeds are drawn from a stream of their own.
const DEMO_SEEDS: u64 = 0xDE70_0000_0000_0000;
