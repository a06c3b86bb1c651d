//! A Gaussian MLP policy with an MLP value function, on the fused MLP path.
//!
//! The actor maps the normalised observation to the mean μ of a diagonal
//! Gaussian over *normalised actions* u; the log-std is a learned vector
//! independent of the state (as CleanRL's continuous PPO). A draw u is turned
//! into a command in the action spec's units by the action mode, then clipped
//! to the spec's limits before it is sent. The log-probability is that of the
//! unclipped draw (the clipped command is what the robot gets; the learner
//! trains on the draw, as CleanRL and SB3 do). In spec units the density
//! differs from the one over u by a constant Jacobian, which cancels in every
//! probability ratio.

use crate::mlp::{Mlp, MlpTape};
use crate::normalizer::Normalizer;
use cerebellum_core::bounds::{Limits, refusal};
use cerebellum_core::{
    Action, ActionChunk, Evaluation, Observation, Policy, PolicyError, PolicyOutput, RobotSpec,
    Sampling,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

const HALF_LOG_TWO_PI: f32 = 0.918_938_5;

/// log N(u | mean, diag σ²) with σ = e^log_std, summed over the action's
/// dimensions: Σ_j −½ z_j² − log σ_j − ½ log 2π, z_j = (u_j − μ_j)/σ_j.
/// Every Gaussian policy here scores an action with it.
pub fn diagonal_log_prob(mean: &[f32], u: &[f32], log_std: &[f32]) -> f32 {
    let mut log_prob = 0.0;
    for ((m, u), s) in mean.iter().zip(u).zip(log_std) {
        let z = (u - m) / s.exp();
        log_prob += -0.5 * z * z - s - HALF_LOG_TWO_PI;
    }
    log_prob
}

/// How a normalised action u becomes a command.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionMode {
    /// u ∈ [−1, 1] spans the action limits: a = centre + half-range · u.
    Absolute,
    /// Joint-target actions relative to the measured joint positions:
    /// a = q + max_step · u. Closed-loop corrections are small numbers, which
    /// makes precise reaching far easier to learn than absolute targets.
    Delta { max_step: f32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianConfig {
    pub hidden: Vec<usize>,
    /// Initial log standard deviation of u.
    pub init_log_std: f32,
    pub action_mode: ActionMode,
}

impl Default for GaussianConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            init_log_std: 0.0,
            action_mode: ActionMode::Absolute,
        }
    }
}

/// Hidden layers of each network.
pub const HIDDEN_LAYERS: Limits<usize> = Limits::closed(1, 8).unit("layers");
/// Units of one hidden layer: 2048² weights is 16 MB per layer, and the
/// actor, critic and Adam's moments hold six copies.
pub const HIDDEN_WIDTH: Limits<usize> = Limits::closed(1, 2048).unit("units");
/// σ = e^log_std of the normalised action u ∈ [−1, 1]: from 0.007 to 7.4.
pub const INIT_LOG_STD: Limits<f32> = Limits::closed(LOG_STD_FLOOR, 2.0);
/// The floor every optimiser step keeps log σ above (ALGORITHMS.md §2):
/// without it a policy-gradient step can drive σ towards 0, where the
/// log-probabilities (∝ 1/σ²) and their ratios blow up on the next batch.
pub const LOG_STD_FLOOR: f32 = -5.0;
/// A delta action's largest step per tick (rad or m).
pub const MAX_STEP: Limits<f32> = Limits::open_closed(0.0, 1.0).unit("rad");

impl GaussianConfig {
    /// Bounds on every key (`policy.*`): layer counts and widths that
    /// allocate, an initial spread and a delta step that mean something.
    pub fn validate(&self) -> Result<(), String> {
        if !HIDDEN_LAYERS.contains(self.hidden.len()) {
            return Err(refusal(
                "policy.hidden",
                &self.hidden,
                &format!("must have {}", HIDDEN_LAYERS.describe()),
            ));
        }
        HIDDEN_WIDTH.check_each("policy.hidden", &self.hidden)?;
        INIT_LOG_STD.check("policy.init_log_std", self.init_log_std)?;
        if let ActionMode::Delta { max_step } = self.action_mode {
            MAX_STEP.check("policy.action_mode.max_step", max_step)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct GaussianMlpPolicy {
    pub spec: RobotSpec,
    pub config: GaussianConfig,
    pub actor: Mlp,
    pub log_std: Vec<f32>,
    pub critic: Mlp,
    pub normalizer: Normalizer,
    /// Where the measured joint positions start in `Observation::state`
    /// (delta mode only).
    joint_offset: Option<usize>,
    lower: Vec<f32>,
    upper: Vec<f32>,
    version: u64,
    tape: MlpTape,
    scratch: Vec<f32>,
}

/// What the policy drew for a batch, in normalised coordinates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Draw {
    /// `batch × act` means.
    pub mean: Vec<f32>,
    /// `batch × act` draws (equal to `mean` when deterministic).
    pub raw: Vec<f32>,
    pub log_prob: Vec<f32>,
}

impl GaussianMlpPolicy {
    pub fn new(spec: &RobotSpec, config: GaussianConfig, seed: u64) -> Result<Self, PolicyError> {
        spec.observation
            .validate()
            .and_then(|_| spec.action.validate())?;
        config.validate().map_err(PolicyError::Other)?;
        let obs = spec.observation.state_len();
        let act = spec.action.len();
        let joint_offset = match config.action_mode {
            ActionMode::Absolute => None,
            ActionMode::Delta { .. } => Some(joint_position_offset(spec)?),
        };
        let mut sizes = vec![obs];
        sizes.extend(&config.hidden);
        let mut actor_sizes = sizes.clone();
        actor_sizes.push(act);
        sizes.push(1);
        let (lower, upper) = spec.action.limits();
        Ok(Self {
            spec: spec.clone(),
            log_std: vec![config.init_log_std; act],
            actor: Mlp::new(&actor_sizes, 0.01, seed),
            critic: Mlp::new(&sizes, 1.0, seed ^ 0x5EED_C817),
            normalizer: Normalizer::new(obs),
            config,
            joint_offset,
            lower,
            upper,
            version: 0,
            tape: MlpTape::default(),
            scratch: Vec::new(),
        })
    }

    pub fn obs_size(&self) -> usize {
        self.actor.input_size()
    }

    pub fn act_size(&self) -> usize {
        self.actor.output_size()
    }

    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Checks each observation against the spec and writes the normalised
    /// states, row by row, into `out`.
    pub fn normalize(
        &self,
        observations: &[Observation],
        out: &mut Vec<f32>,
    ) -> Result<(), PolicyError> {
        let size = self.obs_size();
        out.resize(observations.len() * size, 0.0);
        for (o, row) in observations.iter().zip(out.chunks_exact_mut(size)) {
            self.spec.observation.check(o)?;
            self.normalizer.normalize_into(&o.state, row);
        }
        Ok(())
    }

    /// Means, draws and log-probabilities for normalised observations.
    /// `rng = None` is the deterministic policy (u = μ).
    pub fn draw(&mut self, normalized: &[f32], rng: Option<&mut ChaCha8Rng>) -> Draw {
        let batch = normalized.len() / self.obs_size();
        self.actor.forward(normalized, batch, &mut self.tape);
        let mean = self.tape.output().to_vec();
        let mut raw = mean.clone();
        if let Some(rng) = rng {
            for (u, s) in raw.iter_mut().zip(self.log_std.iter().cycle()) {
                let z: f32 = StandardNormal.sample(rng);
                *u += s.exp() * z;
            }
        }
        let log_prob = self.log_prob(&mean, &raw);
        Draw {
            mean,
            raw,
            log_prob,
        }
    }

    /// log N(raw | mean, exp(log_std)²) per row.
    pub fn log_prob(&self, mean: &[f32], raw: &[f32]) -> Vec<f32> {
        let act = self.act_size();
        mean.chunks_exact(act)
            .zip(raw.chunks_exact(act))
            .map(|(m, u)| diagonal_log_prob(m, u, &self.log_std))
            .collect()
    }

    /// The observations' states through the normaliser, row-major. Only
    /// their sizes are checked: a learner masks the rows whose state is not
    /// finite (their values are then not finite either).
    pub fn normalize_states(&self, observations: &[&Observation]) -> Result<Vec<f32>, PolicyError> {
        let size = self.obs_size();
        let mut normalized = vec![0.0; observations.len() * size];
        for (o, row) in observations.iter().zip(normalized.chunks_exact_mut(size)) {
            if o.state.len() != size {
                return Err(PolicyError::Other(format!(
                    "observation has {} values, the policy reads {size}",
                    o.state.len()
                )));
            }
            self.normalizer.normalize_into(&o.state, row);
        }
        Ok(normalized)
    }

    /// Entropy of the (state-independent) action distribution.
    pub fn entropy(&self) -> f32 {
        self.log_std.iter().map(|s| s + 0.5 + HALF_LOG_TWO_PI).sum()
    }

    /// Value estimates for normalised observations.
    pub fn values(&mut self, normalized: &[f32]) -> Vec<f32> {
        let batch = normalized.len() / self.obs_size();
        self.critic.forward(normalized, batch, &mut self.tape);
        self.tape.output().to_vec()
    }

    /// The command for one draw: (unclipped, clipped to the limits).
    pub fn to_command(&self, state: &[f32], raw: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let unclipped: Vec<f32> = match self.config.action_mode {
            ActionMode::Absolute => raw
                .iter()
                .zip(self.lower.iter().zip(&self.upper))
                .map(|(u, (lo, hi))| 0.5 * (hi + lo) + 0.5 * (hi - lo) * u)
                .collect(),
            ActionMode::Delta { max_step } => {
                let q = &state[self.joint_offset.expect("delta mode has joints")..];
                raw.iter().zip(q).map(|(u, q)| q + max_step * u).collect()
            }
        };
        let clipped = unclipped
            .iter()
            .zip(self.lower.iter().zip(&self.upper))
            .map(|(a, (lo, hi))| a.clamp(*lo, *hi))
            .collect();
        (unclipped, clipped)
    }

    /// The normalised draw behind an (unclipped) command: the inverse of
    /// `to_command`.
    pub fn to_raw(&self, state: &[f32], command: &[f32]) -> Vec<f32> {
        match self.config.action_mode {
            ActionMode::Absolute => command
                .iter()
                .zip(self.lower.iter().zip(&self.upper))
                .map(|(a, (lo, hi))| (a - 0.5 * (hi + lo)) / (0.5 * (hi - lo)))
                .collect(),
            ActionMode::Delta { max_step } => {
                let q = &state[self.joint_offset.expect("delta mode has joints")..];
                command
                    .iter()
                    .zip(q)
                    .map(|(a, q)| (a - q) / max_step)
                    .collect()
            }
        }
    }

    /// Every weight is finite (checked before a new version is published).
    pub fn is_finite(&self) -> bool {
        self.actor.params().iter().all(|v| v.is_finite())
            && self.critic.params().iter().all(|v| v.is_finite())
            && self.log_std.iter().all(|v| v.is_finite())
    }
}

impl Policy for GaussianMlpPolicy {
    fn version(&self) -> u64 {
        self.version
    }

    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        let mut normalized = std::mem::take(&mut self.scratch);
        self.normalize(observations, &mut normalized)?;
        let mut rng = match sampling {
            Sampling::Deterministic => None,
            Sampling::Stochastic { seed } => Some(ChaCha8Rng::seed_from_u64(seed)),
        };
        let draw = self.draw(&normalized, rng.as_mut());
        self.scratch = normalized;
        let act = self.act_size();
        Ok(observations
            .iter()
            .zip(draw.raw.chunks_exact(act))
            .zip(&draw.log_prob)
            .map(|((o, raw), &log_prob)| {
                let (sampled, sent) = self.to_command(&o.state, raw);
                PolicyOutput {
                    chunk: ActionChunk::single(Action::new(sent)),
                    sampled: Some(ActionChunk::single(Action::new(sampled))),
                    log_prob: Some(log_prob),
                    action_log_probs: None,
                }
            })
            .collect())
    }

    fn evaluate(
        &self,
        observations: &[Observation],
        actions: &[ActionChunk],
    ) -> Result<Vec<Evaluation>, PolicyError> {
        if observations.len() != actions.len() {
            return Err(PolicyError::Other(format!(
                "{} observations but {} actions",
                observations.len(),
                actions.len()
            )));
        }
        let mut normalized = Vec::new();
        self.normalize(observations, &mut normalized)?;
        let batch = observations.len();
        let mut tape = MlpTape::default();
        self.actor.forward(&normalized, batch, &mut tape);
        let mean = tape.output().to_vec();
        self.critic.forward(&normalized, batch, &mut tape);
        let values = tape.output().to_vec();
        let mut raw = Vec::with_capacity(mean.len());
        for (o, chunk) in observations.iter().zip(actions) {
            let [action] = chunk.actions.as_slice() else {
                return Err(PolicyError::Other(format!(
                    "this policy acts one tick at a time; got a chunk of {}",
                    chunk.len()
                )));
            };
            if action.values.len() != self.act_size() {
                return Err(PolicyError::Other(format!(
                    "action has {} values, the policy has {}",
                    action.values.len(),
                    self.act_size()
                )));
            }
            raw.extend(self.to_raw(&o.state, &action.values));
        }
        let entropy = self.entropy();
        Ok(self
            .log_prob(&mean, &raw)
            .into_iter()
            .zip(values)
            .map(|(log_prob, value)| Evaluation {
                log_prob,
                entropy,
                value: Some(value),
            })
            .collect())
    }
}

/// Offset of the `joint_position` field, which must name the same joints,
/// in the same order, as the action.
fn joint_position_offset(spec: &RobotSpec) -> Result<usize, PolicyError> {
    let mut offset = 0;
    for field in &spec.observation.fields {
        if field.name == "joint_position" {
            let joints: Vec<&String> = spec
                .action
                .fields
                .iter()
                .flat_map(|f| &f.elements)
                .collect();
            if field.elements.iter().collect::<Vec<_>>() != joints {
                return Err(PolicyError::Other(format!(
                    "delta actions need `joint_position` to list the action's joints in order: observation has {:?}, action has {:?}",
                    field.elements, joints
                )));
            }
            return Ok(offset);
        }
        offset += field.len();
    }
    Err(PolicyError::Other(
        "delta actions need a `joint_position` observation field".into(),
    ))
}
