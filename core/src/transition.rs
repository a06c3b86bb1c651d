//! One tick of experience with everything needed to trust it later.

use crate::{Action, Observation, RewardComponents};
use serde::{Deserialize, Serialize};

/// Where a transition came from. Learners drop or re-weight stale data by
/// `policy_version`; group-relative learners group by `group_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub robot_id: String,
    pub episode_id: u64,
    /// The sampled task instance (a reach target, a cube pose, …).
    pub task_instance_id: u64,
    /// Rollouts that start from one simulator snapshot share a group id.
    pub group_id: Option<u64>,
    pub step: u32,
    pub policy_version: u64,
}

/// One step of experience: what was seen, what the policy asked for, what the
/// robot actually received, and every reward component by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub provenance: Provenance,
    /// Seconds of simulated (or robot) time at the observation.
    pub sim_time: f64,
    /// Seconds since the Unix epoch when the tick ran.
    pub wall_time: f64,
    pub observation: Observation,
    /// The action the policy sampled (what its log-probability refers to).
    pub policy_action: Action,
    /// The command the robot received; differs from `policy_action` after a
    /// safety clamp or an operator takeover.
    pub sent_command: Action,
    /// log π_behaviour(policy_action | observation), when the policy has one.
    pub behaviour_log_prob: Option<f32>,
    /// Index of `policy_action` within the chunk it came from.
    pub chunk_index: u32,
    /// An operator was in control at this tick.
    pub intervention: bool,
    /// A safety stage changed the command at this tick.
    pub safety_clamped: bool,
    pub rewards: RewardComponents,
    pub terminated: bool,
    pub truncated: bool,
    /// Whether the episode succeeded, on the tick that ends it when the
    /// robot (or a success detector) knows; `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Index of the task stage this tick belongs to, where a demonstrator
    /// annotated it (scripted experts do: the names are in the episodes'
    /// meta.json); progress models train on it (ALGORITHMS.md §3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
    /// Version of the learned reward models that wrote the learned
    /// components (`progress`, `success_model`, …); `None` when no model
    /// labelled this transition. A learner reports which version it
    /// trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_version: Option<u64>,
}
