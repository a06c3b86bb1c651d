//! The training loop: collect a batch through the tick stages, turn rewards
//! into advantages with the configured estimator, update with the PPO loss.
//! PPO uses GAE and a critic; GRPO uses group-relative advantages over
//! rollouts that start from one snapshot and no critic. Both share the
//! rollout code and the loss.

use super::bc::{self, BcReport};
use super::chunk_credit::{self, ChunkStep};
use super::config::{Algo, TrainConfig};
use super::estimators::spo::{self, ContextTracker};
use super::group_advantages::{self, EpisodeOutcome, SpoInputs};
use super::ppo::{self, Batch, UpdateStats};
use super::rollout::{Collector, Rollout};
use cerebellum_core::{Observation, Robot, Transition};
use cerebellum_policies::{Adam, Decision, GaussianMlpPolicy, TrainablePolicy};
use cerebellum_reward_models::contract::Expected;
use cerebellum_reward_models::labeller::{self, Labeller, RewardModels};
use cerebellum_sim::vec_env::episode_seed;
use cerebellum_sim::{ArmModel, EnvConfig, SimEnv, VecEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What one iteration did; the learning figures go to `metrics.csv`, the
/// timings to `timing.csv`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IterationReport {
    pub iteration: u64,
    pub env_steps: u64,
    /// Env steps this iteration collected (more than
    /// `Trainer::steps_per_iteration` when dynamic sampling collected again).
    pub steps: u64,
    pub episodes: usize,
    pub mean_return: Option<f64>,
    pub success_rate: Option<f64>,
    pub update: UpdateStats,
    /// Transitions refused because an observation or reward was not finite,
    /// or a learned reward was missing.
    pub rejected: usize,
    /// Version of the reward models that labelled this batch (`--reward`).
    pub reward_version: Option<u64>,
    /// Mean ensemble spread of the learned progress over the batch.
    pub progress_std: Option<f64>,
    /// Times the learned success detector fired in this batch.
    pub learned_successes: u64,
    /// Hacking monitor (ALGORITHMS.md §5): Pearson correlation over the
    /// batch between the learned potential Φ(s′) and the simulator's
    /// `task` reward, where the simulator gives one. A policy that games
    /// the learned reward drives it down while the learned return rises.
    pub learned_truth_pearson: Option<f64>,
    /// Mean learned potential Φ(s′) over the batch: rising while the
    /// ground-truth return falls is the other face of reward hacking.
    pub progress_mean: Option<f64>,
    /// Starts left out of the update: a non-finite return, or no spread
    /// under dynamic sampling (`group_advantages`).
    pub discarded_starts: usize,
    /// Extra collections dynamic sampling made for starts with spread.
    pub resample_rounds: usize,
    pub collect_seconds: f64,
    pub update_seconds: f64,
}

/// What `--resume` needs beyond the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub iteration: u64,
    pub env_steps: u64,
    pub tick: u64,
    pub adam: Adam,
    pub shuffle_rng: ChaCha8Rng,
    pub reward_scale: RewardScale,
    /// SPO's per-start tracker and start sampler (`algo = "spo"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spo: Option<SpoState>,
}

/// What SPO carries from one update to the next: the tracked return of
/// each start of its pool, the generator that samples starts, and how far
/// the policy has moved. The policy's change since a start was last seen
/// (ρ's D) is the sum of the updates' mean |Δ log π| over their batches
/// since then: the tracker forgets a start's old outcomes as fast as the
/// policy has moved away from the one that earned them (SPO measures D on
/// the start's own last rollout; this needs no rollouts kept).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpoState {
    pub tracker: ContextTracker,
    pub rng: ChaCha8Rng,
    /// Σ over updates of the batch's mean |log π_new − log π_old|.
    pub drift: f64,
    /// `drift` when each start was last seen; `None`: never.
    pub drift_at_visit: Vec<Option<f64>>,
}

/// The file `TrainerState::save` writes into a run directory.
pub const STATE_FILE: &str = "trainer_state.json";
/// The state `STATE_FILE` held before the last save, kept until the next.
pub const PREVIOUS_STATE_FILE: &str = "trainer_state.previous.json";

/// The files a training run writes into its directory (`train`, and
/// `train --online` into its own): a directory holding any of them holds a
/// run.
pub const RUN_FILES: &[&str] = &[
    "config.toml",
    "metrics.csv",
    "timing.csv",
    "learning_curve.png",
    cerebellum_policies::checkpoint::WEIGHTS_FILE,
    cerebellum_policies::checkpoint::CONTRACT_FILE,
    STATE_FILE,
    PREVIOUS_STATE_FILE,
    "online.csv",
];

/// Refuses to start a new run in `out` when it already holds one, so that
/// nothing of it is overwritten (its checkpoint) or mixed with the new run
/// (its learning curve). A directory that does not exist, or holds none of
/// [`RUN_FILES`], is fine. `online`: the new run is a fine-tuning
/// (`train --online`), which always starts a run of its own.
pub fn check_new_run_dir(out: &Path, online: bool) -> anyhow::Result<()> {
    let found: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|file| out.join(file).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let remedy = if online {
        "fine-tuning writes a run of its own: choose another --out (--resume names the run to fine-tune)"
    } else {
        "pass --resume to continue it, or choose another --out"
    };
    anyhow::bail!(
        "{} already holds a run ({}): {remedy}",
        out.display(),
        found.join(", ")
    )
}

impl TrainerState {
    /// Writes the state into the run directory `dir` as [`STATE_FILE`],
    /// atomically (a temporary file in `dir`, synced, renamed), keeping the
    /// state it replaces as [`PREVIOUS_STATE_FILE`]. Save it before the
    /// checkpoint it belongs to: whichever of the two saves a crash or a
    /// full disk interrupts, one of the two states matches the checkpoint
    /// left on disk, and [`TrainerState::load_for`] picks it. An error names
    /// the file.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let (path, previous) = (dir.join(STATE_FILE), dir.join(PREVIOUS_STATE_FILE));
        let bytes = serde_json::to_vec(self)?;
        if path.exists() {
            std::fs::rename(&path, &previous).map_err(|e| {
                anyhow::anyhow!(
                    "cannot keep {} as {}: {e}",
                    path.display(),
                    previous.display()
                )
            })?;
        }
        crate::recorder::write_atomically(&path, &bytes)
    }

    /// The trainer state that belongs to the checkpoint in `dir`, saved
    /// after `updates` updates and `env_steps` env steps (its contract's
    /// provenance): [`STATE_FILE`], else [`PREVIOUS_STATE_FILE`]. `None` when
    /// `dir` has neither; an error, naming the files and what they hold,
    /// when none matches (resuming from it would pair the weights with
    /// another update's optimiser and counters). The matching state is
    /// checked against the policy of the checkpoint in `dir` (its
    /// contract), as [`TrainerState::load_for_policy`] does.
    pub fn load_for(dir: &Path, updates: u64, env_steps: u64) -> anyhow::Result<Option<Self>> {
        if ![STATE_FILE, PREVIOUS_STATE_FILE]
            .iter()
            .any(|name| dir.join(name).exists())
        {
            return Ok(None);
        }
        let contract = cerebellum_policies::checkpoint::load_contract(dir)?;
        let policy =
            GaussianMlpPolicy::new(&contract.spec, contract.policy.clone(), 0).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}",
                    dir.join(cerebellum_policies::checkpoint::CONTRACT_FILE)
                        .display()
                )
            })?;
        Self::load_for_policy(dir, updates, env_steps, &policy)
    }

    /// [`TrainerState::load_for`] with the policy the state will train:
    /// the matching state is refused, naming the file, the field, the value
    /// and what was expected, when its optimiser does not fit `policy` (one
    /// group of Adam moments per parameter group, each as long as the
    /// group) or holds a value out of range (a moment that is not a finite
    /// `f32`, a negative second moment, hyperparameters, a step count
    /// Adam cannot raise its betas to, reward statistics that are not
    /// finite or a negative variance). A trainer state file that is not a
    /// regular file (a directory, a FIFO) is an error naming it.
    pub fn load_for_policy<P: TrainablePolicy>(
        dir: &Path,
        updates: u64,
        env_steps: u64,
        policy: &P,
    ) -> anyhow::Result<Option<Self>> {
        let groups: Vec<(&str, usize)> = policy
            .parameter_groups()
            .iter()
            .map(|g| (g.name, g.len))
            .collect();
        let mut seen = Vec::new();
        for name in [STATE_FILE, PREVIOUS_STATE_FILE] {
            let path = dir.join(name);
            let metadata = match std::fs::metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
            };
            anyhow::ensure!(
                metadata.is_file(),
                "{} is {}, expected a trainer state file",
                path.display(),
                if metadata.is_dir() {
                    "a directory"
                } else {
                    "not a regular file"
                }
            );
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(value) => value,
                Err(e) => {
                    seen.push(format!("{} is unreadable ({e})", path.display()));
                    continue;
                }
            };
            let counter = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
            match (counter("iteration"), counter("env_steps")) {
                (Some(iteration), Some(steps)) if (iteration, steps) == (updates, env_steps) => {
                    check_state(&value, &groups)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    let state: TrainerState = serde_json::from_value(value)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    return Ok(Some(state));
                }
                (Some(iteration), Some(steps)) => seen.push(format!(
                    "{} is at update {iteration} ({steps} env steps)",
                    path.display(),
                )),
                _ => seen.push(format!(
                    "{} is unreadable (no iteration and env_steps counters)",
                    path.display()
                )),
            }
        }
        if seen.is_empty() {
            return Ok(None);
        }
        anyhow::bail!(
            "cannot resume {}: its checkpoint was saved at update {updates} ({env_steps} env steps) and no trainer state matches it: {}",
            dir.display(),
            seen.join("; ")
        )
    }
}

/// The largest reward statistic a trainer state may hold: far beyond any
/// return, and small enough that the running variance stays finite.
const MAX_REWARD_STATISTIC: f64 = 1e15;

/// An interval of accepted values: `(lo, hi, lo_open, hi_open)`.
type Range = (f64, f64, bool, bool);

/// `value` (the JSON at `key`) is a number in `range`.
fn check_number(value: &serde_json::Value, key: &str, range: Range) -> Result<(), String> {
    let (lo, hi, lo_open, hi_open) = range;
    let fine = value
        .as_f64()
        .is_some_and(|x| (x > lo || (!lo_open && x == lo)) && (x < hi || (!hi_open && x == hi)));
    if fine {
        return Ok(());
    }
    Err(format!(
        "{key} = {value}: must be a number in {}{lo:?}, {hi:?}{}",
        if lo_open { "(" } else { "[" },
        if hi_open { ")" } else { "]" }
    ))
}

/// The parts of a trainer state (as JSON) that its types do not check: the
/// Adam moments fit `groups` and are finite `f32`s (second moments not
/// negative), the hyperparameters and step are in range, the reward
/// statistics finite (variance not negative). The error names the field.
fn check_state(state: &serde_json::Value, groups: &[(&str, usize)]) -> Result<(), String> {
    let adam = &state["adam"];
    let (positive, fraction) = ((0.0, 1.0, true, false), (0.0, 1.0, false, true));
    check_number(&adam["learning_rate"], "adam.learning_rate", positive)?;
    check_number(&adam["beta1"], "adam.beta1", fraction)?;
    check_number(&adam["beta2"], "adam.beta2", fraction)?;
    check_number(&adam["epsilon"], "adam.epsilon", positive)?;
    // Adam raises its betas to the step as an i32.
    let steps = (0.0, f64::from(i32::MAX), false, false);
    check_number(&adam["step"], "adam.step", steps)?;
    let shapes: Vec<String> = groups
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    for moments in ["first", "second"] {
        let key = format!("adam.{moments}");
        let Some(found) = adam[moments].as_array() else {
            return Err(format!("{key} is {}, not a list of moments", adam[moments]));
        };
        if found.len() != groups.len() {
            return Err(format!(
                "{key} has {} groups, the policy has {} parameter groups ({})",
                found.len(),
                groups.len(),
                shapes.join(", ")
            ));
        }
        for (k, (group, (name, size))) in found.iter().zip(groups).enumerate() {
            let Some(values) = group.as_array() else {
                return Err(format!("{key}[{k}] is {group}, not a list of numbers"));
            };
            if values.len() != *size {
                return Err(format!(
                    "{key}[{k}] has {} values, the policy's {name} has {size} parameters (groups: {})",
                    values.len(),
                    shapes.join(", ")
                ));
            }
            let lo = if moments == "second" {
                0.0
            } else {
                -f64::from(f32::MAX)
            };
            for (i, v) in values.iter().enumerate() {
                let fine = v
                    .as_f64()
                    .is_some_and(|x| x >= lo && x <= f64::from(f32::MAX));
                if !fine {
                    return Err(format!(
                        "{key}[{k}][{i}] = {v}: must be a finite f32 in [{:?}, {:?}]",
                        lo as f32,
                        f32::MAX
                    ));
                }
            }
        }
    }
    let scale = &state["reward_scale"];
    let m = MAX_REWARD_STATISTIC;
    check_number(
        &scale["count"],
        "reward_scale.count",
        (0.0, m, false, false),
    )?;
    check_number(&scale["mean"], "reward_scale.mean", (-m, m, false, false))?;
    check_number(
        &scale["var"],
        "reward_scale.var",
        (0.0, m * m, false, false),
    )?;
    let Some(returns) = scale["returns"].as_array() else {
        return Err(format!(
            "reward_scale.returns is {}, not a list of numbers",
            scale["returns"]
        ));
    };
    for (i, r) in returns.iter().enumerate() {
        check_number(
            r,
            &format!("reward_scale.returns[{i}]"),
            (-m, m, false, false),
        )?;
    }
    Ok(())
}

/// Divides rewards by the running standard deviation of the discounted
/// return, as gymnasium's `NormalizeReward` (used by CleanRL's PPO): it keeps
/// value targets near unit scale whatever the task's reward units, so the
/// critic's gradient does not swamp the actor's under the shared norm clip.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RewardScale {
    returns: Vec<f64>,
    count: f64,
    mean: f64,
    var: f64,
}

impl RewardScale {
    /// Scales time-major `rewards` (`envs` per tick) in place; `ended`
    /// restarts the discounted return of that copy.
    pub fn apply(&mut self, envs: usize, rewards: &mut [f32], ended: &[bool], gamma: f32) {
        self.returns.resize(envs, 0.0);
        if self.count == 0.0 {
            // gymnasium's RunningMeanStd prior: unit variance, tiny weight.
            (self.count, self.var) = (1e-4, 1.0);
        }
        for (i, r) in rewards.iter_mut().enumerate() {
            let e = i % envs;
            self.returns[e] = self.returns[e] * gamma as f64 + *r as f64;
            self.count += 1.0;
            let delta = self.returns[e] - self.mean;
            self.mean += delta / self.count;
            self.var += (delta * (self.returns[e] - self.mean) - self.var) / self.count;
            *r = (*r as f64 / (self.var + 1e-8).sqrt()) as f32;
            if ended[i] {
                self.returns[e] = 0.0;
            }
        }
    }
}

/// The training loop over any policy the learners can train
/// (`TrainablePolicy`); the CLI trains the fused Gaussian MLP.
pub struct Trainer<P: TrainablePolicy = GaussianMlpPolicy> {
    pub config: TrainConfig,
    pub policy: P,
    pub collector: Collector,
    pub state: TrainerState,
    /// The iteration this run started at: 0 for a run trained from
    /// scratch, the parent's updates for a fork (`train --resume RUN --out
    /// NEW`). `config.total_steps` counts the steps from here, and the
    /// learning rate anneals over them.
    pub run_start_iteration: u64,
    horizon: usize,
    /// Demonstrations still cloned during RL (`bc.rl_weight`).
    cloning: Option<bc::CloningSet<P>>,
    /// Learned reward models labelling each rollout (`config.reward`).
    labeller: Option<Labeller>,
}

/// The simulated robots a run trains on.
pub fn make_envs(
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
    count: usize,
) -> anyhow::Result<Vec<SimEnv>> {
    (0..count)
        .map(|_| SimEnv::new(env_config.clone(), model.clone()).map_err(anyhow::Error::msg))
        .collect()
}

impl Trainer<GaussianMlpPolicy> {
    /// A run of the fused Gaussian MLP the config describes (`policy.*`).
    pub fn new(
        config: TrainConfig,
        env_config: &EnvConfig,
        model: Option<Arc<ArmModel>>,
    ) -> anyhow::Result<Self> {
        Self::with_policy(config, env_config, model, |spec, config| {
            Ok(GaussianMlpPolicy::new(
                spec,
                config.policy.clone(),
                config.seed,
            )?)
        })
    }
}

impl<P: TrainablePolicy> Trainer<P> {
    /// A run of the policy `make` builds for the robot spec of the
    /// config's env.
    pub fn with_policy(
        config: TrainConfig,
        env_config: &EnvConfig,
        model: Option<Arc<ArmModel>>,
        make: impl FnOnce(&cerebellum_core::RobotSpec, &TrainConfig) -> anyhow::Result<P>,
    ) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        config.check_for_algo().map_err(anyhow::Error::msg)?;
        config
            .check_with_env(env_config, false)
            .map_err(anyhow::Error::msg)?;
        let envs = make_envs(env_config, model, config.envs)?;
        let spec = envs[0].spec().clone();
        let labeller = if config.reward.is_empty() {
            None
        } else {
            let instruction = config.task_kind().instruction();
            let expected = Expected {
                observation: &spec.observation,
                instruction: Some(instruction),
            };
            let models = RewardModels::load(&config.reward, expected, config.gamma as f64)?;
            Some(Labeller::new(Arc::new(models)))
        };
        let horizon = match &envs[0] {
            SimEnv::Arm(arm) => arm.horizon() as usize,
            SimEnv::Pendulum(_) => cerebellum_sim::pendulum::Pendulum::HORIZON as usize,
        };
        let policy = make(&spec, &config)?;
        let adam = policy.optimizer(config.ppo.learning_rate);
        let mut collector = Collector::new(
            VecEnv::new(envs, config.seed, config.threads),
            spec.name.clone(),
        )?;
        if config.algo == Algo::Remax {
            // The last copy of each start runs the mean action: the baseline.
            let per_start = config.algo.rollouts_per_start(config.group);
            collector.set_greedy(
                (0..config.envs)
                    .map(|e| e % per_start == per_start - 1)
                    .collect(),
            );
        }
        Ok(Self {
            state: TrainerState {
                iteration: 0,
                env_steps: 0,
                tick: 0,
                adam,
                shuffle_rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5_4FF1E),
                reward_scale: RewardScale::default(),
                // Made by the first SPO iteration (`collect_starts`).
                spo: None,
            },
            config,
            policy,
            collector,
            run_start_iteration: 0,
            horizon,
            cloning: None,
            labeller,
        })
    }

    /// Behaviour cloning of the scripted expert on the task as evaluated
    /// (`config.bc`), before the first RL update; `None` when it is off.
    pub fn pretrain_from_expert(
        &mut self,
        env_config: &EnvConfig,
        model: Option<Arc<ArmModel>>,
    ) -> anyhow::Result<Option<BcReport>> {
        let bc = &self.config.bc;
        if !bc.data.is_empty() {
            return self.pretrain_from_recordings().map(Some);
        }
        if bc.expert_episodes == 0 {
            return Ok(None);
        }
        let mut env = make_envs(env_config, model, 1)?.remove(0);
        let (demos, demonstrations) = bc::expert_demonstrations(
            &mut env,
            bc.expert_episodes,
            bc.expert_noise,
            self.config.seed,
        )?;
        let (initial_loss, final_loss, set) =
            bc::pretrain(&mut self.policy, &demos, bc, self.config.seed)?;
        if bc.rl_weight > 0.0 {
            self.cloning = Some(set);
        }
        Ok(Some(BcReport {
            demonstrations: serde_json::to_value(demonstrations)?,
            initial_loss,
            final_loss,
        }))
    }

    /// Behaviour cloning on the recorded episodes of `bc.data`, RA-BC
    /// weighted when `bc.ra_bc_progress` names a progress model.
    fn pretrain_from_recordings(&mut self) -> anyhow::Result<BcReport> {
        let bc = self.config.bc.clone();
        let spec = self.policy.spec().clone();
        let mut episodes = Vec::new();
        for path in &bc.data {
            let (meta, mut recorded) = crate::recorder::read_episodes(path)?;
            spec.check_compatible(&meta.robot).map_err(|e| {
                anyhow::anyhow!(
                    "{} was recorded on another robot spec than this run's: {e}",
                    path.display()
                )
            })?;
            episodes.append(&mut recorded);
        }
        let progress = match &bc.ra_bc_progress {
            Some(dir) => {
                let expected = Expected {
                    observation: &spec.observation,
                    instruction: Some(self.config.task_kind().instruction()),
                };
                Some(
                    cerebellum_reward_models::progress::ProgressModel::load(dir, Some(expected))?.0,
                )
            }
            None => None,
        };
        let (demos, report) =
            bc::recorded_demonstrations(&episodes, progress.as_ref(), bc.ra_bc_horizon)?;
        let (initial_loss, final_loss, set) =
            bc::pretrain(&mut self.policy, &demos, &bc, self.config.seed)?;
        if bc.rl_weight > 0.0 {
            self.cloning = Some(set);
        }
        Ok(BcReport {
            demonstrations: serde_json::to_value(report)?,
            initial_loss,
            final_loss,
        })
    }

    /// The most env steps one iteration may hold: every collection
    /// dynamic sampling may make (what a run's memory is sized for).
    pub fn max_steps_per_iteration(&self) -> u64 {
        let collections = if self.config.estimator.dynamic_sampling {
            1 + self.config.estimator.max_resample_rounds as u64
        } else {
            1
        };
        self.steps_per_iteration().saturating_mul(collections)
    }

    /// Env steps one iteration collects (once: dynamic sampling may
    /// collect again).
    pub fn steps_per_iteration(&self) -> u64 {
        let per_copy = match self.config.algo {
            Algo::Ppo => self.config.rollout_steps,
            _ => self.horizon,
        };
        (per_copy * self.config.envs) as u64
    }

    /// The iteration the run ends at: `config.total_steps` (rounded up to
    /// whole iterations, at least one) after `run_start_iteration`.
    pub fn total_iterations(&self) -> u64 {
        let this_run = self
            .config
            .total_steps
            .div_ceil(self.steps_per_iteration())
            .max(1);
        self.run_start_iteration.saturating_add(this_run)
    }

    pub fn done(&self) -> bool {
        self.state.iteration >= self.total_iterations()
    }

    /// One collect-and-update iteration.
    pub fn iterate(&mut self) -> anyhow::Result<IterationReport> {
        let started = Instant::now();
        if !self.config.algo.has_critic() {
            return self.iterate_from_starts(started);
        }
        let steps = self.config.rollout_steps;
        let mut rollout = self.collector.collect(
            &mut self.policy,
            steps,
            Some((self.config.seed, self.state.tick)),
        )?;
        self.state.tick += steps as u64;
        let labelled = match self.labeller.as_mut() {
            Some(labeller) => Some(label_rollout(labeller, &mut rollout)?),
            None => None,
        };
        let usable = labelled.as_ref().map(|l| l.usable.as_slice());
        let collect_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (batch, rejected) = gae_batch(
            &mut self.policy,
            &self.config,
            &mut self.state.reward_scale,
            &rollout,
            usable,
        )?;
        let episodes = finished_stats(&rollout);
        let update = self.update(&batch)?;
        self.finish_iteration(&rollout.transitions, &update)?;
        Ok(IterationReport {
            iteration: self.state.iteration,
            env_steps: self.state.env_steps,
            steps: rollout.transitions.len() as u64,
            episodes: episodes.0,
            mean_return: episodes.1,
            success_rate: episodes.2,
            update,
            rejected,
            collect_seconds,
            update_seconds: started.elapsed().as_secs_f64(),
            ..IterationReport::default()
        }
        .with_labels(labelled.as_ref()))
    }

    /// The PPO loss on `batch` (critic-free learners without the value
    /// term), at this iteration's step size.
    fn update(&mut self, batch: &Batch<P::Encoded>) -> anyhow::Result<UpdateStats> {
        let ppo_config = self.config.loss_settings();
        let frac = if ppo_config.anneal_lr {
            let start = self.run_start_iteration;
            let done = self.state.iteration.saturating_sub(start);
            1.0 - done as f64 / (self.total_iterations() - start).max(1) as f64
        } else {
            1.0
        };
        let update = if batch.is_empty() {
            UpdateStats::default()
        } else {
            ppo::update(
                &mut self.policy,
                &mut self.state.adam,
                batch,
                &ppo_config,
                ppo_config.learning_rate * frac,
                &mut self.state.shuffle_rng,
            )
        };
        Ok(update)
    }

    /// After an update: the cloning term, the policy's version, the
    /// observation statistics and the counters.
    fn finish_iteration(
        &mut self,
        transitions: &[Transition],
        update: &UpdateStats,
    ) -> anyhow::Result<()> {
        let bc = &self.config.bc;
        let weight = bc.rl_weight * bc.rl_decay.powf(self.state.iteration as f64);
        if let Some(set) = self
            .cloning
            .as_mut()
            .filter(|_| weight > 1e-3 && !update.rolled_back)
        {
            set.fit(
                &mut self.policy,
                bc.minibatch_size,
                1,
                Some(bc.rl_minibatches),
                bc.learning_rate * weight,
                bc.max_grad_norm,
            )?;
        }
        if !update.rolled_back && update.minibatch_steps > 0 {
            let version = cerebellum_core::Policy::version(&self.policy) + 1;
            self.policy.set_version(version);
        }
        // The statistics move only between updates, so every rollout and
        // the update after it see one normalisation.
        if !self.config.freeze_observation_statistics {
            let observations: Vec<&Observation> =
                transitions.iter().map(|t| &t.observation).collect();
            self.policy.observe(&observations);
        }
        self.state.iteration += 1;
        self.state.env_steps += transitions.len() as u64;
        Ok(())
    }

    /// One iteration of a critic-free learner (`group_advantages`): whole
    /// episodes from starts (`Algo::rollouts_per_start` copies from one
    /// snapshot each; SPO: one copy per start, drawn from its pool), each
    /// copy's first episode scored, every decision of an episode given the
    /// episode's advantage. Under dynamic sampling, starts without spread
    /// are discarded and more starts collected, at most
    /// `estimator.max_resample_rounds` times.
    fn iterate_from_starts(&mut self, started: Instant) -> anyhow::Result<IterationReport> {
        let algo = self.config.algo;
        let envs = self.config.envs;
        let per_start = algo.rollouts_per_start(self.config.group);
        let estimator = &self.config.estimator;
        let max_rounds = if estimator.dynamic_sampling && algo != Algo::Spo {
            1 + estimator.max_resample_rounds
        } else {
            1
        };
        let mut rounds: Vec<StartRound> = Vec::new();
        let mut with_spread = 0;
        while rounds.len() < max_rounds {
            let round = self.collect_starts(rounds.len())?;
            with_spread += round
                .outcomes
                .chunks(per_start)
                .filter(|start| group_advantages::start_has_spread(algo, start))
                .count();
            rounds.push(round);
            if with_spread >= envs / per_start {
                break;
            }
        }
        let collect_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();

        // The rounds as one time-major rollout of `envs` copies: round k's
        // rows follow round k − 1's, each copy's first episode still its own.
        let resample_rounds = rounds.len() - 1;
        let rows_per_round = self.horizon * envs;
        let mut transitions = Vec::with_capacity(rounds.len() * rows_per_round);
        let (mut outcomes, mut rows_of, mut contexts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut true_returns, mut successes, mut rejected) = (Vec::new(), Vec::new(), 0);
        let mut labelled: Option<LabelledRollout> = None;
        for round in rounds {
            let offset = transitions.len();
            rows_of.extend(
                round
                    .rows
                    .into_iter()
                    .map(|rows| rows.into_iter().map(|i| i + offset).collect::<Vec<_>>()),
            );
            transitions.extend(round.rollout.transitions);
            outcomes.extend(round.outcomes);
            contexts.extend(round.contexts);
            true_returns.extend(round.true_returns);
            successes.extend(round.successes);
            rejected += round.rejected;
            labelled = match (labelled, round.labelled) {
                (Some(mut all), Some(this)) => {
                    all.usable.extend(this.usable);
                    all.successes += this.successes;
                    Some(LabelledRollout {
                        usable: all.usable,
                        successes: all.successes,
                        ..this
                    })
                }
                (_, this) => this,
            };
        }

        let spo_inputs = match self.state.spo.as_ref() {
            Some(spo_state) => Some((
                spo_baselines(&spo_state.tracker, &contexts, &outcomes),
                match transitions.first() {
                    Some(t) => entropy_surrogate(&self.policy, t)?,
                    None => 0.0,
                },
            )),
            None => None,
        };
        let estimate = group_advantages::episode_advantages(
            &self.config,
            &outcomes,
            spo_inputs.as_ref().map(|(baselines, entropy)| SpoInputs {
                baselines,
                entropy_surrogate: *entropy,
            }),
        )
        .map_err(anyhow::Error::msg)?;

        let n = transitions.len();
        let mut in_batch = vec![false; n];
        for (rows, _) in rows_of.iter().zip(&estimate.in_loss).filter(|(_, l)| **l) {
            rows.iter().for_each(|&i| in_batch[i] = true);
        }
        let zeros = vec![0.0f32; n];
        let steps =
            chunk_credit::chunk_steps(envs, &transitions, &zeros, &in_batch, self.config.gamma);
        let copy_of = |s: &ChunkStep| s.plan_row / rows_per_round * envs + s.env;
        let advantages: Vec<f32> = steps
            .steps
            .iter()
            .map(|s| estimate.advantages[copy_of(s)])
            .collect();
        let weights: Vec<f32> = steps
            .steps
            .iter()
            .map(|s| estimate.loss_weights[copy_of(s)])
            .collect();
        let zeros = vec![0.0f32; steps.steps.len()];
        let batch = decision_batch(
            &self.policy,
            &transitions,
            &steps.steps,
            &advantages,
            &zeros,
            &zeros,
            &weights,
        )?;
        rejected += steps.intervention_ticks;

        let update = self.update(&batch)?;
        if let Some(spo_state) = self.state.spo.as_mut() {
            let change = if update.rolled_back || batch.is_empty() {
                0.0
            } else {
                mean_abs_log_prob_change(&self.policy, &batch)?
            };
            spo_state.track(&contexts, &outcomes, &estimate.in_loss, change)?;
        }
        self.finish_iteration(&transitions, &update)?;
        let copies = true_returns.len().max(1) as f64;
        Ok(IterationReport {
            iteration: self.state.iteration,
            env_steps: self.state.env_steps,
            steps: transitions.len() as u64,
            episodes: true_returns.len(),
            mean_return: Some(true_returns.iter().sum::<f64>() / copies),
            success_rate: Some(successes.iter().filter(|&&s| s).count() as f64 / copies),
            update,
            rejected,
            discarded_starts: estimate.non_finite + estimate.no_spread,
            resample_rounds,
            collect_seconds,
            update_seconds: started.elapsed().as_secs_f64(),
            ..IterationReport::default()
        }
        .with_labels(labelled.as_ref()))
    }

    /// Starts `envs` copies (groups from one snapshot, or SPO's drawn
    /// starts), runs them a horizon and scores each copy's first episode.
    /// `round` > 0: a resample of this iteration, from new starts.
    fn collect_starts(&mut self, round: usize) -> anyhow::Result<StartRound> {
        let envs = self.config.envs;
        let per_start = self.config.algo.rollouts_per_start(self.config.group);
        let starts = envs / per_start;
        // A run forked from another learner's (or with another pool size)
        // starts its tracker afresh; one forked from SPO's into another
        // learner drops it.
        let pool = self.config.estimator.spo_contexts;
        if self.config.algo != Algo::Spo {
            self.state.spo = None;
        } else if self.state.spo.as_ref().is_none_or(|spo_state| {
            spo_state.tracker.len() != pool || spo_state.drift_at_visit.len() != pool
        }) {
            self.state.spo = Some(SpoState::new(&self.config));
        }
        let (seeds, contexts): (Vec<u64>, Vec<usize>) = match self.state.spo.as_mut() {
            Some(spo_state) => {
                let contexts = spo_state.tracker.sample_contexts(envs, &mut spo_state.rng);
                let seed = self.config.seed ^ 0x5_9050;
                let seeds = contexts.iter().map(|&k| episode_seed(seed, k, 0)).collect();
                (seeds, contexts)
            }
            None => {
                let seeds = (0..starts)
                    .map(|k| {
                        let k = round * starts + k;
                        episode_seed(self.config.seed ^ 0x6_2090, k, self.state.iteration)
                    })
                    .collect();
                (seeds, Vec::new())
            }
        };
        self.collector.reset_groups(per_start, &seeds)?;
        let mut rollout = self.collector.collect(
            &mut self.policy,
            self.horizon,
            Some((self.config.seed, self.state.tick)),
        )?;
        self.state.tick += self.horizon as u64;
        let labelled = match self.labeller.as_mut() {
            Some(labeller) => Some(label_rollout(labeller, &mut rollout)?),
            None => None,
        };
        let usable = labelled.as_ref().map(|l| l.usable.as_slice());

        // Each copy's first episode; a bad tick in it (a state or reward
        // that is not finite, a learned reward missing) makes its return
        // NaN, which discards its start whole (`group_advantages`).
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); envs];
        let mut bad = vec![false; envs];
        let mut open = vec![true; envs];
        let (mut true_returns, mut successes) = (vec![0.0f64; envs], vec![false; envs]);
        let mut rejected = 0;
        for (i, t) in rollout.transitions.iter().enumerate() {
            let e = i % envs;
            if !open[e] {
                continue;
            }
            rows[e].push(i);
            let fine = reward(&self.config, t).is_finite()
                && t.observation.state.iter().all(|v| v.is_finite())
                && usable.is_none_or(|u| u[i]);
            if !fine {
                bad[e] = true;
                rejected += 1;
            }
            true_returns[e] += t.rewards.iter().map(|(_, r)| r as f64).sum::<f64>();
            if t.terminated || t.truncated {
                open[e] = false;
                successes[e] = t
                    .rewards
                    .get(cerebellum_core::RewardComponents::SUCCESS)
                    .unwrap_or(0.0)
                    > 0.5;
            }
        }
        let outcomes = rows
            .iter()
            .zip(&bad)
            .map(|(rows, &bad)| {
                let episode: Vec<&Transition> =
                    rows.iter().map(|&i| &rollout.transitions[i]).collect();
                let mut outcome = EpisodeOutcome::of(&self.config, &episode, self.horizon);
                if bad {
                    outcome.weighted_return = f32::NAN;
                }
                outcome
            })
            .collect();
        Ok(StartRound {
            rollout,
            labelled,
            rows,
            outcomes,
            contexts,
            true_returns,
            successes,
            rejected,
        })
    }
}

/// One collection of whole episodes from starts (`collect_starts`).
struct StartRound {
    rollout: Rollout,
    labelled: Option<LabelledRollout>,
    /// Per copy, the rows of its first episode.
    rows: Vec<Vec<usize>>,
    outcomes: Vec<EpisodeOutcome>,
    /// SPO: the start of the pool each copy ran.
    contexts: Vec<usize>,
    /// Per copy, the first episode's return over every reward component
    /// (ground truth in sim) and its success.
    true_returns: Vec<f64>,
    successes: Vec<bool>,
    rejected: usize,
}

impl SpoState {
    /// A tracker that has seen none of the pool's starts yet.
    pub fn new(config: &TrainConfig) -> Self {
        let contexts = config.estimator.spo_contexts;
        Self {
            tracker: ContextTracker::real_valued(contexts, 0.0),
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5_9050),
            drift: 0.0,
            drift_at_visit: vec![None; contexts],
        }
    }

    /// Folds this batch's returns into the tracker, each start forgetting
    /// at the ρ of the policy's change since its last visit
    /// (`spo::rho_from_change`); `change` is this update's mean |Δ log π|.
    /// Episodes left out of the estimate (`kept` false: a non-finite
    /// return) are left out of the tracker too.
    fn track(
        &mut self,
        contexts: &[usize],
        outcomes: &[EpisodeOutcome],
        kept: &[bool],
        change: f32,
    ) -> anyhow::Result<()> {
        for ((&k, outcome), _) in contexts.iter().zip(outcomes).zip(kept).filter(|(_, k)| **k) {
            let since = self.drift_at_visit[k].map(|at| (self.drift - at) as f32);
            let rho = spo::rho_from_change(since);
            self.tracker
                .update(k, outcome.weighted_return, rho)
                .map_err(anyhow::Error::msg)?;
            self.drift_at_visit[k] = Some(self.drift);
        }
        self.drift += f64::from(change);
        Ok(())
    }
}

/// Each episode's SPO baseline: its start's tracked return, read before
/// this batch updates it; a start never visited has none yet, and takes
/// the mean return of this batch's first visits (the tracker's 0 would be
/// in reward units and arbitrary).
fn spo_baselines(
    tracker: &ContextTracker,
    contexts: &[usize],
    outcomes: &[EpisodeOutcome],
) -> Vec<f32> {
    let first: Vec<f32> = contexts
        .iter()
        .zip(outcomes)
        .filter(|(k, o)| tracker.visits(**k) == 0 && o.weighted_return.is_finite())
        .map(|(_, o)| o.weighted_return)
        .collect();
    let fallback = first.iter().sum::<f32>() / first.len().max(1) as f32;
    contexts
        .iter()
        .map(|&k| {
            if tracker.visits(k) == 0 {
                fallback
            } else {
                tracker.baseline(k)
            }
        })
        .collect()
}

/// MSSR's entropy term for the policy now: the non-negative surrogate of
/// its Gaussian's entropy (`spo::gaussian_entropy_surrogate`), from the
/// entropy the policy reports for one action: H − d·(½ log 2πe + log σ_floor)
/// is Σ_d (log σ_d − log σ_floor), the surrogate, while every σ_d is at or
/// above the floor (the policies clamp it there).
fn entropy_surrogate<P: TrainablePolicy>(policy: &P, t: &Transition) -> anyhow::Result<f32> {
    let decision = Decision::single(&t.observation, &t.policy_action);
    let encoded = policy.encode(&[decision])?;
    let wants = cerebellum_policies::Wants {
        log_probs: true,
        ..Default::default()
    };
    let out = policy.forward(&encoded, &[0], wants, &mut P::Workspace::default())?;
    let entropy = out.entropies.first().copied().unwrap_or(0.0);
    let dims = t.policy_action.values.len() as f32;
    let floor = cerebellum_policies::gaussian::LOG_STD_FLOOR;
    let at_floor = dims * (0.5 + 0.5 * (2.0 * std::f32::consts::PI).ln() + floor);
    Ok((entropy - at_floor).max(0.0))
}

/// The mean over `batch`'s actions of |log π_now − log π_old|: how far an
/// update moved the policy on the actions it was trained on (SPO's D).
fn mean_abs_log_prob_change<P: TrainablePolicy>(
    policy: &P,
    batch: &Batch<P::Encoded>,
) -> anyhow::Result<f32> {
    let wants = cerebellum_policies::Wants {
        log_probs: true,
        ..Default::default()
    };
    let rows: Vec<usize> = (0..batch.len()).collect();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for chunk in rows.chunks(256) {
        let out = policy.forward(&batch.decisions, chunk, wants, &mut P::Workspace::default())?;
        let old = chunk.iter().flat_map(|&i| {
            &batch.old_log_probs[batch.action_starts[i]..batch.action_starts[i + 1]]
        });
        for (now, old) in out.log_probs.iter().zip(old) {
            sum += f64::from((now - old).abs());
            count += 1;
        }
    }
    Ok((sum / count.max(1) as f64) as f32)
}

impl IterationReport {
    /// The figures of the learned rewards that labelled the iteration's
    /// rollouts (`--reward`), where they did.
    fn with_labels(self, labelled: Option<&LabelledRollout>) -> Self {
        let Some(l) = labelled else {
            return self;
        };
        Self {
            reward_version: Some(l.version),
            progress_std: l.progress_std,
            learned_successes: l.successes,
            learned_truth_pearson: l.truth_pearson,
            progress_mean: l.progress_mean,
            ..self
        }
    }
}

/// What labelling a rollout with learned rewards gave.
struct LabelledRollout {
    /// Per transition: every learned component present, and not after a
    /// learned success ended the episode.
    usable: Vec<bool>,
    version: u64,
    progress_std: Option<f64>,
    successes: u64,
    truth_pearson: Option<f64>,
    progress_mean: Option<f64>,
}

fn label_rollout(
    labeller: &mut Labeller,
    rollout: &mut Rollout,
) -> anyhow::Result<LabelledRollout> {
    let before = labeller.counts.successes;
    let mut items: Vec<(&mut Transition, Option<&Observation>)> = rollout
        .transitions
        .iter_mut()
        .zip(rollout.next_observations.iter().map(Some))
        .collect();
    let labels = labeller.label(&mut items)?;
    let mean_of = |name: &str| {
        let values: Vec<f64> = rollout
            .transitions
            .iter()
            .filter_map(|t| t.rewards.get(name))
            .map(f64::from)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    Ok(LabelledRollout {
        usable: labels.iter().map(|l| l.usable()).collect(),
        version: labeller.models().version,
        progress_std: mean_of(labeller::PROGRESS_STD),
        progress_mean: mean_of(labeller::PROGRESS_POTENTIAL),
        successes: labeller.counts.successes - before,
        truth_pearson: learned_truth_pearson(&rollout.transitions),
    })
}

/// Pearson of Φ(s′) against the simulator's `task` reward over the
/// transitions that have both.
fn learned_truth_pearson(transitions: &[Transition]) -> Option<f64> {
    let (learned, truth): (Vec<f64>, Vec<f64>) = transitions
        .iter()
        .filter_map(|t| {
            let phi = t.rewards.get(labeller::PROGRESS_POTENTIAL)?;
            let truth = t.rewards.get(cerebellum_core::RewardComponents::TASK)?;
            Some((f64::from(phi), f64::from(truth)))
        })
        .unzip();
    cerebellum_reward_models::evaluation::pearson(&learned, &truth)
}

/// (episodes, mean return, success rate) of the episodes that ended.
type EpisodeStats = (usize, Option<f64>, Option<f64>);

/// [`EpisodeStats`] of the episodes of `rollout` that ended.
fn finished_stats(rollout: &Rollout) -> EpisodeStats {
    let n = rollout.finished.len();
    if n == 0 {
        return (0, None, None);
    }
    let mean = rollout
        .finished
        .iter()
        .map(|f| f.episode_return)
        .sum::<f64>()
        / n as f64;
    let success = rollout.finished.iter().filter(|f| f.success).count() as f64 / n as f64;
    (n, Some(mean), Some(success))
}

/// The weighted sum of a transition's reward components the config trains
/// on. A component a learned model should have written but did not (a
/// non-finite output) makes the sum NaN, so the row is left out and
/// counted, never trained on as a zero; other absent components are 0
/// (an intervention reward only exists where an operator took over).
pub fn reward(config: &TrainConfig, t: &Transition) -> f32 {
    let learned = |name: &str| {
        (name == labeller::PROGRESS && !config.reward.progress.is_empty())
            || (name == labeller::LEARNED_SUCCESS && config.reward.success.is_some())
    };
    config
        .reward_weights
        .iter()
        .map(|(name, w)| match t.rewards.get(name) {
            Some(r) => w * r,
            None if learned(name) => f32::NAN,
            None => 0.0,
        })
        .sum()
}

/// GAE over the decisions of a time-major rollout (`chunk_credit`: one
/// decision per tick for a policy that acts one tick at a time, one per
/// executed part of a chunk otherwise), rewards scaled by `reward_scale`
/// when the config asks. Ticks whose observation or reward is not finite,
/// or that `usable` rules out (a learned reward missing), are left out and
/// cut the advantage recursion on both sides; operator ticks belong to no
/// decision. Returns the batch and how many ticks were left out.
pub fn gae_batch<P: TrainablePolicy>(
    policy: &mut P,
    config: &TrainConfig,
    reward_scale: &mut RewardScale,
    rollout: &Rollout,
    usable: Option<&[bool]>,
) -> anyhow::Result<(Batch<P::Encoded>, usize)> {
    let n = rollout.transitions.len();
    let envs = rollout.envs;
    let transitions = &rollout.transitions;
    let mut rewards: Vec<f32> = transitions.iter().map(|t| reward(config, t)).collect();
    let ended: Vec<bool> = transitions
        .iter()
        .map(|t| t.terminated || t.truncated)
        .collect();
    let valid: Vec<bool> = (0..n)
        .map(|i| {
            rewards[i].is_finite()
                && usable.is_none_or(|u| u[i])
                && transitions[i]
                    .observation
                    .state
                    .iter()
                    .all(|v| v.is_finite())
                && rollout.next_observations[i]
                    .state
                    .iter()
                    .all(|v| v.is_finite())
        })
        .collect();
    if config.normalize_rewards {
        for (r, ok) in rewards.iter_mut().zip(&valid) {
            if !ok {
                *r = 0.0;
            }
        }
        reward_scale.apply(envs, &mut rewards, &ended, config.gamma);
    }
    let steps = chunk_credit::chunk_steps(envs, transitions, &rewards, &valid, config.gamma);
    // Values of the states a decision starts from and of those its last
    // tick leads to, and of no other tick: every tick for a per-tick
    // policy, about two in `execute` for a chunk policy (a VLA's encoder
    // pass is most of its update). The observation after tick t is tick
    // t + 1's, except where an episode ended and on the rollout's last
    // tick: only those next observations are evaluated on their own.
    let follows = |row: usize| !ended[row] && row + envs < n;
    let mut needed = vec![false; n];
    for s in &steps.steps {
        needed[s.plan_row] = true;
        if follows(s.last_row()) {
            needed[s.last_row() + envs] = true;
        }
    }
    let rows: Vec<usize> = (0..n).filter(|&i| needed[i]).collect();
    let states: Vec<&Observation> = rows.iter().map(|&i| &transitions[i].observation).collect();
    let mut tick_values = vec![0.0f32; n];
    for (&i, v) in rows.iter().zip(policy.state_values(&states)?) {
        tick_values[i] = v;
    }
    let own_next: Vec<usize> = steps
        .steps
        .iter()
        .map(|s| s.last_row())
        .filter(|&row| !follows(row))
        .collect();
    let next: Vec<&Observation> = own_next
        .iter()
        .map(|&i| &rollout.next_observations[i])
        .collect();
    let mut own_values = vec![0.0f32; n];
    for (&i, v) in own_next.iter().zip(policy.state_values(&next)?) {
        own_values[i] = v;
    }
    let values: Vec<f32> = steps
        .steps
        .iter()
        .map(|s| tick_values[s.plan_row])
        .collect();
    let next_values: Vec<f32> = steps
        .steps
        .iter()
        .map(|s| {
            let last = s.last_row();
            if follows(last) {
                tick_values[last + envs]
            } else {
                own_values[last]
            }
        })
        .collect();
    let (advantages, returns) = chunk_credit::chunk_gae(
        &steps.steps,
        &values,
        &next_values,
        config.gamma,
        config.gae_lambda,
    );
    let batch = decision_batch(
        policy,
        transitions,
        &steps.steps,
        &advantages,
        &returns,
        &values,
        &[],
    )?;
    let used: usize = steps.steps.iter().map(|s| s.rows.len()).sum();
    Ok((batch, n - used))
}

/// The PPO rows of `steps`, one per decision: the plan's observation and
/// the executed actions as sampled, encoded by the policy, the behaviour
/// log-probability of each action recorded at acting time (where none was,
/// the current one: the rollout was collected by these weights), and the
/// decision's advantage, return, value and the weight of its actions in
/// the loss (`loss_weights`, per step; empty: every action weighs 1).
pub fn decision_batch<P: TrainablePolicy>(
    policy: &P,
    transitions: &[Transition],
    steps: &[ChunkStep],
    advantages: &[f32],
    returns: &[f32],
    values: &[f32],
    loss_weights: &[f32],
) -> anyhow::Result<Batch<P::Encoded>> {
    // Decisions in the time-major order of their first tick: for a policy
    // acting one tick at a time, the rollout's own row order.
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|&i| steps[i].rows.first().copied().unwrap_or(usize::MAX));
    let steps: Vec<&ChunkStep> = order.iter().map(|&i| &steps[i]).collect();
    let pick = |v: &[f32]| -> Vec<f32> { order.iter().map(|&i| v[i]).collect() };
    let decisions: Vec<Decision> = steps
        .iter()
        .map(|s| Decision {
            observation: &transitions[s.plan_row].observation,
            first_index: s.first_index,
            actions: s
                .rows
                .iter()
                .map(|&r| &transitions[r].policy_action)
                .collect(),
        })
        .collect();
    let decisions = policy.encode(&decisions)?;
    let mut old_log_probs: Vec<Option<f32>> = steps
        .iter()
        .flat_map(|s| s.rows.iter().map(|&r| transitions[r].behaviour_log_prob))
        .collect();
    if old_log_probs.iter().any(Option::is_none) {
        let rows: Vec<usize> = (0..steps.len()).collect();
        let wants = cerebellum_policies::Wants {
            log_probs: true,
            ..Default::default()
        };
        let now = policy.forward(&decisions, &rows, wants, &mut P::Workspace::default())?;
        for (old, now) in old_log_probs.iter_mut().zip(now.log_probs) {
            old.get_or_insert(now);
        }
    }
    let mut action_starts = Vec::with_capacity(steps.len() + 1);
    action_starts.push(0);
    for s in steps {
        action_starts.push(action_starts.last().copied().unwrap_or(0) + s.rows.len());
    }
    Ok(Batch {
        decisions,
        old_log_probs: old_log_probs
            .into_iter()
            .map(|l| l.unwrap_or(0.0))
            .collect(),
        action_starts,
        advantages: pick(advantages),
        loss_weights: if loss_weights.is_empty() {
            Vec::new()
        } else {
            pick(loss_weights)
        },
        returns: pick(returns),
        old_values: pick(values),
    })
}
