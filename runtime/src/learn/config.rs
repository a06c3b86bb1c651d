//! The training configuration: defaults per task, overlaid by a TOML file,
//! overlaid by command-line flags. Unknown keys and out-of-range values are
//! errors that name the key.

use crate::learn::bc::BcConfig;
use crate::learn::online::OnlineConfig;
use crate::learn::ppo::PpoConfig;
use cerebellum_core::RewardComponents;
use cerebellum_core::bounds::{Limits, refusal};
use cerebellum_policies::{ActionMode, GaussianConfig};
use cerebellum_reward_models::labeller::{self, RewardModelConfig};
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, TaskKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The learners `train --algo` knows: PPO with a critic, and the
/// critic-free GRPO family (docs/learning.md, "Which learner"), each an
/// advantage estimator (`learn::estimators`, one file each) in front of
/// the one clipped loss (`learn::ppo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algo {
    /// PPO with GAE and a learned value function.
    Ppo,
    /// (r − mean_g) / (std_g + ε) over `group` rollouts from one snapshot.
    Grpo,
    /// r − mean_g, no std; the loss over a constant count of actions.
    DrGrpo,
    /// r − the mean of the group's other rollouts.
    Rloo,
    /// `group` + 1 rollouts, median-centred and MAD-scaled; the median
    /// rollout (the pivot) out of the loss.
    McGrpo,
    /// Single rollouts from a recurring pool of starts, each tracked for a
    /// baseline; batch-normalised, entropy-shaped.
    Spo,
    /// Each named reward component normalised within its group, then
    /// summed with its weight and normalised over the batch.
    Gdpo,
    /// GRPO normalised within nuisance strata (intervened, clamped, length
    /// bucket, sim or real), blended with the group's own.
    Stratified,
    /// `group` sampled rollouts and one deterministic (mean-action) rollout
    /// from the same start, whose return is the baseline.
    Remax,
}

impl Algo {
    pub const ALL: [Algo; 9] = [
        Algo::Ppo,
        Algo::Grpo,
        Algo::DrGrpo,
        Algo::Rloo,
        Algo::McGrpo,
        Algo::Spo,
        Algo::Gdpo,
        Algo::Stratified,
        Algo::Remax,
    ];

    /// The name `--algo` and `algo = "…"` take.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ppo => "ppo",
            Algo::Grpo => "grpo",
            Algo::DrGrpo => "dr-grpo",
            Algo::Rloo => "rloo",
            Algo::McGrpo => "mc-grpo",
            Algo::Spo => "spo",
            Algo::Gdpo => "gdpo",
            Algo::Stratified => "stratified",
            Algo::Remax => "remax",
        }
    }

    /// PPO trains a critic and cuts rollouts every `rollout_steps`; the
    /// others are critic-free and learn from whole episodes.
    pub fn has_critic(self) -> bool {
        self == Algo::Ppo
    }

    /// Copies run from one start: `group` for the group estimators, one
    /// more for MC-GRPO (the pivot) and ReMax (the greedy rollout), 1 for
    /// SPO and PPO. `envs` is a multiple of it.
    pub fn rollouts_per_start(self, group: usize) -> usize {
        match self {
            Algo::Ppo | Algo::Spo => 1,
            Algo::McGrpo | Algo::Remax => group + 1,
            Algo::Grpo | Algo::DrGrpo | Algo::Rloo | Algo::Gdpo | Algo::Stratified => group,
        }
    }

    /// Every name, for an error message.
    pub fn known() -> String {
        Self::named(|_| true)
    }

    /// The names of the algorithms `which` picks, for an error message.
    pub fn named(which: impl Fn(Algo) -> bool) -> String {
        Self::ALL
            .into_iter()
            .filter(|&a| which(a))
            .map(Algo::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Algo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown algorithm `{s}`; known: {}", Self::known()))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub task: String,
    pub seed: u64,
    pub algo: Algo,
    /// Simulated robots stepped as one batch.
    pub envs: usize,
    /// Worker threads for the simulation; results do not depend on it.
    pub threads: usize,
    /// Environment steps in total (all copies together).
    pub total_steps: u64,
    /// Ticks per copy between updates (PPO).
    pub rollout_steps: usize,
    pub gamma: f32,
    pub gae_lambda: f32,
    /// Sampled rollouts per start (the GRPO family's G); `envs` must be a
    /// multiple of `Algo::rollouts_per_start` (G, or G + 1 for mc-grpo and
    /// remax).
    pub group: usize,
    /// The critic-free estimators' own settings (`[estimator]`).
    #[serde(default)]
    pub estimator: crate::learn::group_advantages::EstimatorConfig,
    /// Weight of each reward component in the scalar the learner optimises.
    pub reward_weights: BTreeMap<String, f32>,
    /// Scale rewards by the running std of the discounted return (PPO).
    pub normalize_rewards: bool,
    /// Keep the policy's observation statistics where RL starts (the
    /// clone's, or the resumed checkpoint's) instead of folding every
    /// rollout in. A policy cloned from a few demonstrations and not cloned
    /// further during RL (`bc.rl_weight = 0`) otherwise sees its inputs
    /// move under it: on reach, 100 cloned episodes at 38% held-out
    /// success fell to 0–12% within 60k steps of any learner.
    #[serde(default)]
    pub freeze_observation_statistics: bool,
    /// Held-out episodes for the final deterministic evaluation.
    pub eval_episodes: usize,
    /// Behaviour cloning of the scripted expert before RL.
    #[serde(default)]
    pub bc: BcConfig,
    /// Fine-tuning through the control loop (`train --online`).
    #[serde(default)]
    pub online: OnlineConfig,
    /// Learned reward models that label every transition (`train --reward`);
    /// the components they write (`progress`, `success_model`) take part
    /// in the reward through `reward_weights` like any other.
    #[serde(default, skip_serializing_if = "RewardModelConfig::is_empty")]
    pub reward: RewardModelConfig,
    /// Which policy trains: the state MLP (`policy.*`, `ppo.*`) or the
    /// vision-language policy (`vla.*`); `train --policy mlp|vla`.
    #[serde(default, skip_serializing_if = "PolicyKind::is_mlp")]
    pub policy_kind: PolicyKind,
    pub policy: GaussianConfig,
    /// The vision-language policy's model and cloning (`policy_kind =
    /// "vla"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vla: Option<crate::learn::vla::VlaTrainConfig>,
    /// RL fine-tuning of a cloned VLA (`train --resume VLA_RUN --out NEW`):
    /// what trains, chunk execution, the memory budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<crate::learn::finetune::FinetuneConfig>,
    pub ppo: PpoConfig,
    pub robot: RobotSource,
}

/// The policies `train --policy` knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// The state MLP (fused Gaussian MLP): PPO, GRPO, cloning.
    #[default]
    Mlp,
    /// The vision-language-action policy: camera, instruction, state →
    /// action chunk; cloned from demonstrations.
    Vla,
}

impl PolicyKind {
    pub fn is_mlp(&self) -> bool {
        *self == PolicyKind::Mlp
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mlp" => Ok(PolicyKind::Mlp),
            "vla" => Ok(PolicyKind::Vla),
            other => Err(format!("unknown policy `{other}`; known: mlp, vla")),
        }
    }
}

/// Bounds shared by the learners' configs (`ppo.*`, `bc.*`, `online.*`):
/// a step size above 1 makes every Adam update roll back.
pub const LEARNING_RATE: Limits<f64> = Limits::open_closed(0.0, 1.0);
pub const EPOCHS: Limits<usize> = Limits::closed(1, 10_000);
pub const MINIBATCH_SIZE: Limits<usize> = Limits::closed(1, 1 << 20).unit("rows");
pub const MAX_GRAD_NORM: Limits<f32> = Limits::open_closed(0.0, 1000.0);

/// Simulated robots stepped as one batch (each a rapier world).
pub const ENVS: Limits<usize> = Limits::closed(1, 1024).unit("envs");
pub const THREADS: Limits<usize> = Limits::closed(1, 256).unit("threads");
/// Ten billion steps: days at the simulator's pace.
pub const TOTAL_STEPS: Limits<u64> = Limits::closed(1, 10_000_000_000).unit("steps");
pub const ROLLOUT_STEPS: Limits<usize> = Limits::closed(1, 1 << 16).unit("ticks");
/// Transitions held by one PPO rollout (`envs × rollout_steps`).
pub const ROLLOUT_ROWS: Limits<usize> = Limits::closed(1, 1 << 20).unit("transitions");
pub const GAMMA: Limits<f32> = Limits::open_closed(0.0, 1.0);
pub const GAE_LAMBDA: Limits<f32> = Limits::closed(0.0, 1.0);
/// Rollouts per GRPO group (checked whatever the algorithm).
pub const GROUP: Limits<usize> = Limits::closed(2, 1024).unit("rollouts");
pub const EVAL_EPISODES: Limits<usize> = Limits::closed(0, 100_000).unit("episodes");
pub const REWARD_WEIGHT: Limits<f32> = Limits::closed(-1000.0, 1000.0);
/// Camera images one rollout, one online batch or the online channel may
/// hold.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;

/// Every reward component a transition can carry: the simulator's and the
/// control loop's (core's `RewardComponents`) and the labeller's learned
/// ones. `reward_weights` names only these.
pub const REWARD_COMPONENTS: [&str; 9] = [
    RewardComponents::TASK,
    RewardComponents::SUCCESS,
    RewardComponents::INTERVENTION,
    RewardComponents::SAFETY,
    RewardComponents::ESTOP,
    labeller::PROGRESS,
    labeller::PROGRESS_STD,
    labeller::PROGRESS_POTENTIAL,
    labeller::LEARNED_SUCCESS,
];

/// Which simulated arm to train on (the bundled SO-101 when empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobotSource {
    pub urdf: Option<PathBuf>,
    pub ee_link: Option<String>,
    pub robot_config: Option<PathBuf>,
    pub env_config: Option<PathBuf>,
}

impl RobotSource {
    /// The environment settings (the file's, or the defaults) for `task`
    /// and, for arm tasks, the arm: the one place a command turns flags and
    /// configs into a simulation.
    pub fn load(&self, task: TaskKind) -> anyhow::Result<(EnvConfig, Option<Arc<ArmModel>>)> {
        let mut env = match &self.env_config {
            Some(path) => {
                let text = crate::recorder::read_text_file(path)?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                    anyhow::anyhow!("{} is not valid TOML: {}", path.display(), one_line(&e))
                })?;
                from_table::<EnvConfig>(table)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => EnvConfig::default(),
        };
        env.task = task;
        env.validate().map_err(|e| match &self.env_config {
            Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
            None => anyhow::anyhow!(e),
        })?;
        if task == TaskKind::Pendulum {
            return Ok((env, None));
        }
        let urdf = self.urdf.clone().unwrap_or_else(cerebellum_sim::so101_urdf);
        let options = ArmOptions {
            ee_link: self.ee_link.clone(),
            config: self.robot_config.clone(),
        };
        Ok((env, Some(ArmModel::load(&urdf, &options)?)))
    }
}

impl TrainConfig {
    /// Settings that work for each task.
    pub fn for_task(task: TaskKind) -> Self {
        let mut reward_weights = BTreeMap::new();
        reward_weights.insert("task".to_owned(), 1.0);
        let base = Self {
            task: task.name().to_owned(),
            seed: 0,
            algo: Algo::Ppo,
            envs: 16,
            threads: 2,
            total_steps: 200_000,
            rollout_steps: 64,
            gamma: 0.99,
            gae_lambda: 0.95,
            group: 8,
            estimator: Default::default(),
            reward_weights,
            normalize_rewards: true,
            freeze_observation_statistics: false,
            eval_episodes: 100,
            bc: BcConfig::default(),
            online: OnlineConfig::default(),
            reward: RewardModelConfig::default(),
            policy_kind: PolicyKind::Mlp,
            policy: GaussianConfig::default(),
            vla: None,
            finetune: None,
            ppo: PpoConfig::default(),
            robot: RobotSource::default(),
        };
        // A colour task starts from its base task's settings. The built-in
        // Gaussian MLP reads the state only, not the camera or the
        // instruction, so on a colour task it can only guess the named
        // object (docs/tasks.md): the settings are there for policies that
        // read both; they are evaluated on 200 held-out starts (a third of
        // them per colour).
        let settings = match task {
            TaskKind::Pendulum => Self {
                envs: 4,
                threads: 1,
                total_steps: 100_000,
                rollout_steps: 1024,
                gamma: 0.9,
                gae_lambda: 0.95,
                eval_episodes: 10,
                ppo: PpoConfig {
                    learning_rate: 1e-3,
                    ..PpoConfig::default()
                },
                ..base
            },
            TaskKind::Reach | TaskKind::ReachColor => Self {
                // Dense reward: credit over ~20 ticks is enough, and the
                // shorter horizon lowers the variance of the advantages.
                gamma: 0.95,
                total_steps: 1_000_000,
                // Targets behind the arm need a lean-back over the shoulder
                // that exploration never finds: clone 400 noisy expert
                // episodes first and keep cloning them, decaying, during RL
                // (84% → 95% held-out; docs/learning.md).
                bc: BcConfig {
                    expert_episodes: 400,
                    rl_weight: 1.0,
                    rl_decay: 0.995,
                    ..BcConfig::default()
                },
                envs: 32,
                rollout_steps: 32,
                policy: GaussianConfig {
                    hidden: vec![64, 64],
                    init_log_std: -0.5,
                    action_mode: ActionMode::Delta { max_step: 0.2 },
                },
                ppo: PpoConfig {
                    learning_rate: 1e-3,
                    epochs: 10,
                    minibatch_size: 256,
                    // A little entropy keeps exploring the targets that need
                    // a long swing (84% vs 78% held-out success at 700k steps).
                    entropy_coef: 0.01,
                    ..PpoConfig::default()
                },
                ..base
            },
            TaskKind::Lift | TaskKind::LiftColor => Self {
                total_steps: 1_000_000,
                policy: GaussianConfig {
                    hidden: vec![128, 128],
                    init_log_std: -0.5,
                    action_mode: ActionMode::Delta { max_step: 0.1 },
                },
                ..base
            },
        };
        if task.is_color() {
            Self {
                eval_episodes: 200,
                ..settings
            }
        } else {
            settings
        }
    }

    /// Task defaults, then the file's keys on top. An unknown key anywhere
    /// is an error naming it.
    pub fn from_toml(task: Option<TaskKind>, text: Option<&str>) -> Result<Self, String> {
        let file: toml::Table = match text {
            Some(t) => t.parse().map_err(|e: toml::de::Error| {
                format!("config is not valid TOML: {}", one_line(&e))
            })?,
            None => toml::Table::new(),
        };
        let task = match (task, file.get("task")) {
            (Some(t), _) => t,
            (None, Some(toml::Value::String(name))) => name.parse::<TaskKind>()?,
            (None, Some(other)) => return Err(format!("`task` must be a string, got {other}")),
            (None, None) => TaskKind::Reach,
        };
        let mut merged = toml::Table::try_from(Self::for_task(task)).expect("defaults serialise");
        merge(&mut merged, file);
        merged.insert("task".into(), task.name().into());
        let config: Self = from_table(merged).map_err(|e| format!("config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn task_kind(&self) -> TaskKind {
        self.task.parse().expect("validated")
    }

    /// The environment to train on (`robot.load` for this task), checked
    /// against this config (`check_with_env`): what a training command
    /// builds its simulation from; `online` for `train --online`.
    pub fn load_env(&self, online: bool) -> anyhow::Result<(EnvConfig, Option<Arc<ArmModel>>)> {
        let (env, model) = self.robot.load(self.task_kind())?;
        self.check_with_env(&env, online)
            .map_err(anyhow::Error::msg)?;
        Ok((env, model))
    }

    /// The bounds that need the environment too: the transitions one
    /// iteration holds (PPO: `envs × rollout_steps`; the GRPO family: `envs`
    /// × the task's horizon at the configured control rate, times every
    /// collection dynamic sampling may make), and the memory their
    /// camera images take: in a rollout, or (`online`) in an online batch
    /// and the channel to the learner.
    pub fn check_with_env(&self, env: &EnvConfig, online: bool) -> Result<(), String> {
        let task = self.task_kind();
        let horizon = match task.arm_horizon_s() {
            None => cerebellum_sim::pendulum::Pendulum::HORIZON as usize,
            Some(seconds) => (seconds * env.physics.control_rate_hz()).round() as usize,
        };
        // What one update may hold: under dynamic sampling, every
        // collection it may make.
        let (rows, rows_key) = match self.algo {
            Algo::Ppo => (
                self.envs.saturating_mul(self.rollout_steps),
                "envs × rollout_steps",
            ),
            _ if self.estimator.dynamic_sampling => (
                self.envs
                    .saturating_mul(horizon)
                    .saturating_mul(1 + self.estimator.max_resample_rounds),
                "envs × the task's horizon in ticks × (1 + estimator.max_resample_rounds)",
            ),
            _ => (
                self.envs.saturating_mul(horizon),
                "envs × the task's horizon in ticks (physics.dt × physics.substeps)",
            ),
        };
        if !ROLLOUT_ROWS.contains(rows) {
            return Err(refusal(
                rows_key,
                rows,
                &format!(
                    "the transitions of one rollout must be {}",
                    ROLLOUT_ROWS.describe()
                ),
            ));
        }
        if env.cameras.is_empty() || task == TaskKind::Pendulum {
            return Ok(());
        }
        // Every camera's image, per transition.
        let image: u64 = env
            .cameras
            .iter()
            .map(|c| u64::from(c.width) * u64::from(c.height) * 3)
            .sum();
        let sizes = env
            .cameras
            .iter()
            .map(|c| format!("{}×{}", c.width, c.height))
            .collect::<Vec<_>>()
            .join(" + ");
        let held = if online {
            vec![
                ("online.batch_transitions", self.online.batch_transitions),
                ("online.channel_capacity", self.online.channel_capacity),
            ]
        } else {
            vec![(rows_key, rows)]
        };
        for (key, transitions) in held {
            let bytes = (transitions as u64).saturating_mul(image);
            if bytes > MAX_IMAGE_BYTES {
                return Err(refusal(
                    key,
                    transitions,
                    &format!(
                        "{transitions} transitions with {sizes} camera pixels each take {:.1} GiB, \
                         at most {} GiB are allowed (hold fewer, or make the cameras' \
                         `width` × `height` smaller, or use fewer cameras)",
                        bytes as f64 / (1u64 << 30) as f64,
                        MAX_IMAGE_BYTES >> 30
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The one check of a training config (the file's keys and the flags
    /// laid over them): every key within its bounds, each refusal naming
    /// the key's TOML path, the value and the accepted range. `from_toml`,
    /// `resolve_config` (after the flags) and `Trainer::new` call it.
    pub fn validate(&self) -> Result<(), String> {
        if let Err(e) = self.task.parse::<TaskKind>() {
            return Err(refusal("task", &self.task, &e));
        }
        ENVS.check("envs", self.envs)?;
        THREADS.check("threads", self.threads)?;
        TOTAL_STEPS.check("total_steps", self.total_steps)?;
        ROLLOUT_STEPS.check("rollout_steps", self.rollout_steps)?;
        if self.algo == Algo::Ppo {
            let rows = self.envs.saturating_mul(self.rollout_steps);
            if !ROLLOUT_ROWS.contains(rows) {
                return Err(refusal(
                    "envs × rollout_steps",
                    rows,
                    &format!(
                        "the transitions of one PPO rollout must be {}",
                        ROLLOUT_ROWS.describe()
                    ),
                ));
            }
        }
        GAMMA.check("gamma", self.gamma)?;
        GAE_LAMBDA.check("gae_lambda", self.gae_lambda)?;
        GROUP.check("group", self.group)?;
        self.estimator.validate()?;
        EVAL_EPISODES.check("eval_episodes", self.eval_episodes)?;
        self.check_reward_weights()?;
        self.bc.validate()?;
        self.online.validate()?;
        self.reward.validate()?;
        self.policy.validate()?;
        if let Some(vla) = &self.vla {
            vla.validate()?;
        }
        if let Some(finetune) = &self.finetune {
            finetune.validate()?;
        }
        self.ppo.validate()
    }

    /// The checks that depend on the algorithm once the flags are laid
    /// over the file: `envs` is a whole number of starts (G copies, or
    /// G + 1 for mc-grpo and remax, from each; `round_envs_to_starts` makes
    /// it one), and dynamic sampling is asked of a learner with groups to
    /// discard. `train` calls it after rounding, `Trainer` when it builds a
    /// run.
    pub fn check_for_algo(&self) -> Result<(), String> {
        if self.estimator.dynamic_sampling && matches!(self.algo, Algo::Ppo | Algo::Spo) {
            return Err(refusal(
                "estimator.dynamic_sampling",
                true,
                &format!(
                    "algo = \"{}\" has no groups of rollouts to discard; dynamic sampling works with {}",
                    self.algo,
                    Algo::named(|a| a.rollouts_per_start(2) > 1)
                ),
            ));
        }
        let per_start = self.algo.rollouts_per_start(self.group);
        if self.envs.is_multiple_of(per_start) {
            return Ok(());
        }
        let what = match self.algo {
            Algo::McGrpo | Algo::Remax => format!("group + 1 = {per_start}"),
            _ => format!("group = {per_start}"),
        };
        Err(refusal(
            "envs",
            self.envs,
            &format!(
                "must be a multiple of {what} with algo = \"{}\" (`train` rounds it up)",
                self.algo
            ),
        ))
    }

    /// The clipped loss's settings for this learner: `ppo.*`, and for the
    /// critic-free ones no value term and no per-minibatch renormalisation
    /// of the advantages: the estimator is their normalisation (GRPO's
    /// group std, SPO's and GDPO's batch std, Dr. GRPO's and ReMax's
    /// none), as each paper has it, and the minibatch's would undo it.
    pub fn loss_settings(&self) -> PpoConfig {
        let mut loss = self.ppo.clone();
        if !self.algo.has_critic() {
            loss.value_coef = 0.0;
            loss.normalize_advantages = false;
        }
        loss
    }

    /// Rounds `envs` up to a whole number of starts for the algorithm
    /// (`Algo::rollouts_per_start`); the sentence to tell the user when it
    /// changed, `None` when it did not.
    pub fn round_envs_to_starts(&mut self) -> Option<String> {
        let per_start = self.algo.rollouts_per_start(self.group);
        let rounded = self.envs.div_ceil(per_start) * per_start;
        if rounded == self.envs {
            return None;
        }
        let note = format!(
            "envs {} rounded up to {rounded}: algo {} runs {per_start} copies from each start",
            self.envs, self.algo
        );
        self.envs = rounded;
        Some(note)
    }

    /// The `[finetune]` settings (their defaults when the config has none).
    pub fn finetune_settings(&self) -> crate::learn::finetune::FinetuneConfig {
        self.finetune.clone().unwrap_or_default()
    }

    /// The `[vla]` settings (their defaults when the config has none).
    pub fn vla_settings(&self) -> crate::learn::vla::VlaTrainConfig {
        self.vla.clone().unwrap_or_default()
    }

    /// Every weight names a component something writes (a typo would
    /// train on a reward of zero), each is finite and bounded, a learned
    /// component has its model, and at least one weight is not zero.
    fn check_reward_weights(&self) -> Result<(), String> {
        for (name, &weight) in &self.reward_weights {
            let key = format!("reward_weights.{name}");
            if !REWARD_COMPONENTS.contains(&name.as_str()) {
                return Err(refusal(
                    &key,
                    weight,
                    &format!(
                        "`{name}` is not a reward component; known: {}",
                        REWARD_COMPONENTS.join(", ")
                    ),
                ));
            }
            REWARD_WEIGHT.check(&key, weight)?;
            let model =
                match name.as_str() {
                    labeller::PROGRESS | labeller::PROGRESS_STD | labeller::PROGRESS_POTENTIAL => {
                        self.reward.progress.is_empty().then_some(
                            "a progress model (`reward.progress` or --reward progress:DIR)",
                        )
                    }
                    labeller::LEARNED_SUCCESS => self.reward.success.is_none().then_some(
                        "a success classifier (`reward.success` or --reward success:DIR)",
                    ),
                    _ => None,
                };
            if let Some(model) = model
                && weight != 0.0
            {
                return Err(refusal(
                    &key,
                    weight,
                    &format!("the component is written only with {model}"),
                ));
            }
        }
        if self.reward_weights.values().all(|&w| w == 0.0) {
            return Err(refusal(
                "reward_weights",
                &self.reward_weights,
                "no component has a non-zero weight: the reward would be zero",
            ));
        }
        Ok(())
    }

    /// The whole configuration as TOML (written to `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

/// A TOML table as `T`; an error names the key it is about (wrong type,
/// unknown key, integer out of range), e.g. ``invalid type: string "ten",
/// expected usize in `ppo.epochs` ``.
pub fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| one_line(&e))
}

/// A TOML error on one line (its display spans several, with the line at
/// fault drawn in a gutter): `TOML parse error at line 1, column 8, in
/// `envs = 99999999999999999999`: invalid type: …`.
pub(crate) fn one_line(e: &toml::de::Error) -> String {
    let mut out = String::new();
    for line in e
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if line.starts_with('|') {
            continue;
        }
        match line.split_once(" | ") {
            Some((n, text)) if n.chars().all(|c| c.is_ascii_digit()) => {
                out.push_str(&format!(", in `{}`:", text.trim()));
            }
            _ => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(line);
            }
        }
    }
    out
}

/// Overlays `top` onto `base`, table by table: a key of `top` replaces
/// that key of `base`, tables merge key by key, except `reward_weights`,
/// which `top` replaces whole (its keys are the components trained on).
pub(crate) fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) if key != "reward_weights" => {
                merge(b, t)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        for task in TaskKind::ALL {
            let config = TrainConfig::for_task(task);
            let again = TrainConfig::from_toml(None, Some(&config.to_toml())).unwrap();
            assert_eq!(config, again);
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = TrainConfig::from_toml(None, Some("envz = 3")).unwrap_err();
        assert!(err.contains("envz"), "{err}");
        let err = TrainConfig::from_toml(None, Some("[ppo]\nlearning_rat = 1.0")).unwrap_err();
        assert!(err.contains("learning_rat"), "{err}");
        let err = TrainConfig::from_toml(None, Some("gamma = 1.5")).unwrap_err();
        assert!(err.contains("gamma"), "{err}");
        let err = TrainConfig::from_toml(None, Some("task = \"fly\"")).unwrap_err();
        assert!(err.contains("reach"), "lists the known tasks: {err}");
    }

    #[test]
    fn file_keys_override_task_defaults() {
        let c =
            TrainConfig::from_toml(None, Some("task = \"pendulum\"\n[ppo]\nepochs = 3")).unwrap();
        assert_eq!(c.ppo.epochs, 3);
        assert_eq!(c.ppo.learning_rate, 1e-3, "the pendulum default survives");
        assert_eq!(c.gamma, 0.9);
    }
}
