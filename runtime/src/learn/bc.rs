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

use super::config::{EPOCHS, LEARNING_RATE, MAX_GRAD_NORM, MINIBATCH_SIZE};
use crate::episodes::{Controller, run_episode_with};
use cerebellum_core::bounds::Limits;
use cerebellum_core::{Action, Observation, Robot};
use cerebellum_policies::optim::Adam;
use cerebellum_policies::{Decision, OutputGrads, TrainablePolicy, Wants};
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
    /// Recorded episodes to clone instead of the scripted expert
    /// (`train --init-bc DATA`): expert runs, and the takeovers of teleop
    /// sessions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<std::path::PathBuf>,
    /// A progress model that weights each recorded tick by RA-BC
    /// (`train --init-bc-progress DIR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ra_bc_progress: Option<std::path::PathBuf>,
    /// RA-BC look-ahead H in ticks (the policy acts per tick; one tick's
    /// progress is mostly noise).
    pub ra_bc_horizon: usize,
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
            data: Vec::new(),
            ra_bc_progress: None,
            ra_bc_horizon: 10,
        }
    }
}

/// Episodes of the scripted expert: 400 take a minute.
pub const EXPERT_EPISODES: Limits<usize> = Limits::closed(0, 100_000).unit("episodes");
/// Noise on the expert's commands (rad or m).
pub const EXPERT_NOISE: Limits<f32> = Limits::closed(0.0, 1.0).unit("rad");
/// Cloning step size during RL is `learning_rate · rl_weight · …`.
pub const RL_WEIGHT: Limits<f64> = Limits::closed(0.0, 100.0);
pub const RL_DECAY: Limits<f64> = Limits::open_closed(0.0, 1.0);
pub const RL_MINIBATCHES: Limits<usize> = Limits::closed(0, 1000);
pub const RA_BC_HORIZON: Limits<usize> = Limits::closed(1, 10_000).unit("ticks");

impl BcConfig {
    /// Bounds on every key (`bc.*`), checked whether or not cloning is on.
    pub fn validate(&self) -> Result<(), String> {
        EXPERT_EPISODES.check("bc.expert_episodes", self.expert_episodes)?;
        EXPERT_NOISE.check("bc.expert_noise", self.expert_noise)?;
        EPOCHS.check("bc.epochs", self.epochs)?;
        MINIBATCH_SIZE.check("bc.minibatch_size", self.minibatch_size)?;
        LEARNING_RATE.check("bc.learning_rate", self.learning_rate)?;
        MAX_GRAD_NORM.check("bc.max_grad_norm", self.max_grad_norm)?;
        RL_WEIGHT.check("bc.rl_weight", self.rl_weight)?;
        RL_DECAY.check("bc.rl_decay", self.rl_decay)?;
        RL_MINIBATCHES.check("bc.rl_minibatches", self.rl_minibatches)?;
        RA_BC_HORIZON.check("bc.ra_bc_horizon", self.ra_bc_horizon)
    }
}

/// One demonstrated tick: what was seen and the command that was sent,
/// and how much it counts in L_BC (1, or its RA-BC weight).
#[derive(Clone, Debug, PartialEq)]
pub struct Demonstration {
    pub observation: Observation,
    pub command: Vec<f32>,
    pub weight: f32,
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
                weight: 1.0,
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
    /// What the demonstrations were (`DemoReport` or `RecordedReport`).
    pub demonstrations: serde_json::Value,
    /// L_BC over all demonstrations before and after training.
    pub initial_loss: f32,
    pub final_loss: f32,
}

/// The demonstrations a policy clones, checked against its spec, and the
/// optimiser and shuffler of cloning. They are encoded by the policy at
/// each use (`TrainablePolicy::encode`), since its observation statistics
/// move during RL.
pub struct CloningSet<P: TrainablePolicy> {
    observations: Vec<Observation>,
    commands: Vec<Action>,
    weights: Vec<f32>,
    adam: Adam,
    rng: ChaCha8Rng,
    workspace: P::Workspace,
}

impl<P: TrainablePolicy> std::fmt::Debug for CloningSet<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloningSet")
            .field("demonstrations", &self.commands.len())
            .finish_non_exhaustive()
    }
}

impl<P: TrainablePolicy> CloningSet<P> {
    /// Checks every demonstration against the policy's spec first.
    pub fn new(
        policy: &P,
        demos: &[Demonstration],
        config: &BcConfig,
        seed: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!demos.is_empty(), "behaviour cloning needs demonstrations");
        let spec = policy.spec();
        anyhow::ensure!(
            demos
                .iter()
                .all(|d| d.weight.is_finite() && d.weight >= 0.0)
                && demos.iter().any(|d| d.weight > 0.0),
            "behaviour cloning needs finite, non-negative weights, not all zero"
        );
        let mut commands = Vec::with_capacity(demos.len());
        for d in demos {
            spec.observation.check(&d.observation)?;
            let command = Action::new(d.command.clone());
            spec.action.check(&command)?;
            commands.push(command);
        }
        Ok(Self {
            observations: demos.iter().map(|d| d.observation.clone()).collect(),
            commands,
            weights: demos.iter().map(|d| d.weight).collect(),
            adam: policy.optimizer(config.learning_rate),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xB_C0DE),
            workspace: P::Workspace::default(),
        })
    }

    /// The demonstrations `rows` as the policy's decisions.
    fn encode(&self, policy: &P, rows: &[usize]) -> anyhow::Result<P::Encoded> {
        let decisions: Vec<Decision> = rows
            .iter()
            .map(|&i| Decision::single(&self.observations[i], &self.commands[i]))
            .collect();
        Ok(policy.encode(&decisions)?)
    }

    /// L_BC over every demonstration, weighted.
    pub fn loss(&mut self, policy: &P) -> anyhow::Result<f32> {
        let rows: Vec<usize> = (0..self.commands.len()).collect();
        let encoded = self.encode(policy, &rows)?;
        let out = policy.forward(&encoded, &rows, IMITATION, &mut self.workspace)?;
        let sum: f64 = out
            .imitation
            .iter()
            .zip(&self.weights)
            .map(|(l, &w)| f64::from(w) * f64::from(*l))
            .sum();
        let total: f64 = self.weights.iter().map(|&w| f64::from(w)).sum();
        Ok((sum / total.max(f64::MIN_POSITIVE)) as f32)
    }

    /// Gradient steps on the weighted imitation loss (½‖μ − u*‖² for a
    /// Gaussian) over shuffled minibatches: `epochs` passes, or the first
    /// `limit` minibatches of one pass.
    pub fn fit(
        &mut self,
        policy: &mut P,
        minibatch_size: usize,
        passes: usize,
        limit: Option<usize>,
        learning_rate: f64,
        max_grad_norm: f32,
    ) -> anyhow::Result<()> {
        let n = self.commands.len();
        let mut order: Vec<usize> = (0..n).collect();
        self.adam.learning_rate = learning_rate;
        for _ in 0..passes {
            order.shuffle(&mut self.rng);
            for minibatch in order
                .chunks(minibatch_size)
                .take(limit.unwrap_or(usize::MAX))
            {
                let total: f32 = minibatch.iter().map(|&i| self.weights[i]).sum();
                if total <= 0.0 {
                    continue;
                }
                let encoded = self.encode(policy, minibatch)?;
                let rows: Vec<usize> = (0..minibatch.len()).collect();
                policy.forward(&encoded, &rows, IMITATION, &mut self.workspace)?;
                // d L_BC / d imitation_i = w_i / Σ w
                let grads = OutputGrads {
                    imitation: minibatch.iter().map(|&i| self.weights[i] / total).collect(),
                    ..OutputGrads::default()
                };
                policy.backward(&grads, &mut self.workspace)?;
                policy.clip_gradients(&mut self.workspace, max_grad_norm);
                policy.step(&mut self.adam, &mut self.workspace);
            }
        }
        Ok(())
    }
}

/// What cloning asks of a forward pass.
const IMITATION: Wants = Wants {
    log_probs: false,
    values: false,
    imitation: true,
};

/// Fits the policy's mean to the demonstrations (see the module comment),
/// after the observation normaliser has absorbed them. Deterministic for a
/// given seed. Returns the loss before and after, and the set for cloning
/// during RL.
pub fn pretrain<P: TrainablePolicy>(
    policy: &mut P,
    demos: &[Demonstration],
    config: &BcConfig,
    seed: u64,
) -> anyhow::Result<(f32, f32, CloningSet<P>)> {
    let mut set = CloningSet::new(policy, demos, config, seed)?;
    let observations: Vec<&Observation> = set.observations.iter().collect();
    policy.observe(&observations);
    let initial_loss = set.loss(policy)?;
    set.fit(
        policy,
        config.minibatch_size,
        config.epochs,
        None,
        config.learning_rate,
        config.max_grad_norm,
    )?;
    let final_loss = set.loss(policy)?;
    anyhow::ensure!(
        policy.is_finite() && final_loss.is_finite(),
        "behaviour cloning diverged (loss {final_loss})"
    );
    let version = policy.version() + 1;
    policy.set_version(version);
    Ok((initial_loss, final_loss, set))
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

/// What cloning recorded episodes found in them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecordedReport {
    pub episodes: usize,
    /// Episodes cloned whole: successful ones without an operator.
    pub successful: usize,
    /// Ticks an operator was in control (cloned from any episode).
    pub intervention_ticks: usize,
    pub ticks: usize,
    /// RA-BC: the mean weight and the ticks weighted 0 (progress undone).
    pub mean_weight: Option<f64>,
    pub zero_weight_ticks: Option<usize>,
}

/// Demonstrations from recorded episodes (docs/episodes.md): every tick of
/// a successful episode without an operator (an expert run), and the ticks
/// an operator was in control of any other (a teleop takeover); the rest
/// is the policy's own behaviour and is not cloned. With `progress`, each
/// tick is weighted by RA-BC over `horizon` ticks (ALGORITHMS.md §3.1).
pub fn recorded_demonstrations(
    episodes: &[Vec<cerebellum_core::Transition>],
    progress: Option<&cerebellum_reward_models::progress::ProgressModel>,
    horizon: usize,
) -> anyhow::Result<(Vec<Demonstration>, RecordedReport)> {
    use cerebellum_reward_models::ra_bc;
    let mut report = RecordedReport {
        episodes: episodes.len(),
        ..RecordedReport::default()
    };
    let mut kept: Vec<(Demonstration, f64)> = Vec::new();
    for episode in episodes {
        let operated = episode.iter().any(|t| t.intervention);
        let successful = episode
            .last()
            .and_then(|t| t.rewards.get(cerebellum_core::RewardComponents::SUCCESS))
            .is_some_and(|s| s > 0.5);
        if !operated && !successful {
            continue;
        }
        report.successful += usize::from(!operated);
        let deltas = match progress {
            Some(model) => {
                let states: Vec<Vec<f32>> = episode
                    .iter()
                    .map(|t| t.observation.state.clone())
                    .collect();
                ra_bc::progress_deltas(&model.predict(&states)?, horizon)
            }
            None => vec![0.0; episode.len()],
        };
        for (t, delta) in episode.iter().zip(deltas) {
            if operated && !t.intervention {
                continue;
            }
            report.intervention_ticks += usize::from(t.intervention);
            kept.push((
                Demonstration {
                    observation: t.observation.clone(),
                    command: t.sent_command.values.clone(),
                    weight: 1.0,
                },
                delta,
            ));
        }
    }
    anyhow::ensure!(
        !kept.is_empty(),
        "no demonstrations in {} recorded episodes: none succeeded and no operator took over",
        episodes.len()
    );
    if progress.is_some() {
        let deltas: Vec<f64> = kept.iter().map(|k| k.1).collect();
        let (mean, std) = ra_bc::statistics(&deltas);
        for (demo, delta) in &mut kept {
            demo.weight = ra_bc::weight(*delta, mean, std, ra_bc::KAPPA) as f32;
        }
        let weights: Vec<f64> = kept.iter().map(|k| f64::from(k.0.weight)).collect();
        report.mean_weight = Some(weights.iter().sum::<f64>() / weights.len() as f64);
        report.zero_weight_ticks = Some(weights.iter().filter(|&&w| w == 0.0).count());
    }
    report.ticks = kept.len();
    Ok((kept.into_iter().map(|k| k.0).collect(), report))
}

/// Demonstration seeds are drawn from a stream of their own.
pub(crate) const DEMO_SEEDS: u64 = 0xDE70_0000_0000_0000;
