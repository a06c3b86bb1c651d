//! The three roles every crate plays against: a robot to drive, a policy to
//! ask, and a reward model to score what happened.

use crate::{
    Action, ActionChunk, Observation, RewardComponents, RobotSpec, SpecError, StepOutcome,
};
use serde::{Deserialize, Serialize};

/// Why a robot could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    /// The command (or reset request) does not satisfy the robot's spec; the
    /// robot did not move.
    #[error("rejected by the robot's spec: {0}")]
    Spec(#[from] SpecError),
    /// The robot is not reachable or did not answer in time.
    #[error("robot unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

/// How to start an episode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// Seed for the task instance (target, object poses, randomisation); the
    /// same seed gives the same start on the same robot.
    pub seed: u64,
}

/// A robot the control loop can drive: the in-process simulator or a real
/// robot over the wire. One tick is `observe` then `apply`.
pub trait Robot {
    fn spec(&self) -> &RobotSpec;

    /// Starts a new episode and returns its first observation.
    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError>;

    /// The newest observation.
    fn observe(&mut self) -> Result<Observation, RobotError>;

    /// Sends one checked command for the current tick. A simulator advances
    /// one control period; a real robot returns as soon as the command is
    /// sent. A command that fails the spec is refused and nothing moves.
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError>;

    /// The version of the policy weights that planned the next command; a
    /// robot over the wire stamps it on the command (the loop calls this
    /// before `apply`). In-process robots ignore it.
    fn set_policy_version(&mut self, _version: u64) {}
}

/// A robot chosen at run time (`--robot sim` or `--robot zenoh:…`).
impl<R: Robot + ?Sized> Robot for Box<R> {
    fn spec(&self) -> &RobotSpec {
        (**self).spec()
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        (**self).reset(request)
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        (**self).observe()
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        (**self).apply(command)
    }

    fn set_policy_version(&mut self, version: u64) {
        (**self).set_policy_version(version)
    }
}

/// How a policy should choose actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sampling {
    /// The mode of the action distribution; no noise is drawn.
    Deterministic,
    /// Draw noise from a generator seeded with this value, so that the same
    /// seed and observations give the same actions on any thread count.
    Stochastic { seed: u64 },
}

/// A policy's answer for one observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyOutput {
    /// What to send: within the action spec's limits.
    pub chunk: ActionChunk,
    /// The draw `log_prob` refers to, in the same units, before it was
    /// clipped to the limits; `None` when it equals `chunk`. Learners train
    /// on this one (recorded as `Transition::policy_action`).
    pub sampled: Option<ActionChunk>,
    /// log π(sampled | observation), summed over the chunk; `None` for
    /// policies without a tractable likelihood (scripted experts, some
    /// imitation models).
    pub log_prob: Option<f32>,
    /// log π of each action of the chunk (they sum to `log_prob`), for
    /// chunks of more than one action: a chunk cut short is credited with
    /// the actions that ran (ALGORITHMS.md §2, "Chunks as actions"), and
    /// each is recorded as its tick's `Transition::behaviour_log_prob`.
    /// `None` for a single action (its log-probability is `log_prob`).
    pub action_log_probs: Option<Vec<f32>>,
}

/// What a learner needs to know about a policy's own actions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub log_prob: f32,
    pub entropy: f32,
    /// The value estimate, for policies that carry a critic.
    pub value: Option<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("observation does not match the policy's contract: {0}")]
    Spec(#[from] SpecError),
    /// The policy's answer breaks the action spec (a NaN, a value out of
    /// the limits, a wrong length): the policy's fault, not the robot's.
    #[error("the policy's action breaks the action spec: {0}")]
    Action(SpecError),
    #[error("the policy cannot {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Other(String),
}

/// Maps observations to action chunks.
pub trait Policy {
    /// Increases every time the weights change; recorded on each transition.
    fn version(&self) -> u64;

    /// Chooses one chunk per observation, in order.
    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError>;

    /// Log-probability, entropy and value of given actions under the current
    /// weights, for learners. Policies that only act (scripted, replayed,
    /// trivial ones) keep this default.
    fn evaluate(
        &self,
        _observations: &[Observation],
        _actions: &[ActionChunk],
    ) -> Result<Vec<Evaluation>, PolicyError> {
        Err(PolicyError::Unsupported("evaluate"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RewardModelError {
    #[error("observation does not match the reward model's contract: {0}")]
    Spec(#[from] SpecError),
    #[error("empty observation history")]
    EmptyHistory,
    #[error("{0}")]
    Other(String),
}

/// Scores what happened from observations alone (no simulator ground truth),
/// as on a real robot.
pub trait RewardModel {
    /// Identifies the model's weights, so that a buffer can be relabelled
    /// when the model is retrained.
    fn version(&self) -> u64;

    /// Named reward components for the newest observation of `history`
    /// (oldest first).
    fn score(
        &mut self,
        history: &[Observation],
        instruction: Option<&str>,
    ) -> Result<RewardComponents, RewardModelError>;
}
