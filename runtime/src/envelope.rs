//! The safety envelope: every command passes it between the policy and the
//! robot, in this order, each stage counted:
//!
//!   finite check → joint position limits → joint velocity limits →
//!   per-tick rate limit → workspace box on the end effector →
//!   stale-observation watchdog → e-stop latch
//!
//! (ARCHITECTURE.md, "Safety envelope".) The robot is a position servo, so
//! "stop" means "hold the measured pose": a zero command is a motion.
//! Every activation is also a reward event: `Checked::activations` names the
//! stages that changed the command, and the loop records them as the
//! `safety` reward component and `Transition::safety_clamped`.

use cerebellum_core::{Action, RobotSpec};
use serde::{Deserialize, Serialize};

/// End-effector position from joint positions (forward kinematics of the
/// robot's URDF chain), for the workspace box.
pub trait ForwardKinematics: Send + Sync {
    fn end_effector(&self, joint_positions: &[f32]) -> [f32; 3];
}

/// Limits beyond the robot spec's own (which always apply), from a config
/// file (`[envelope]` in TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    /// Largest speed a command may ask of each joint (rad/s or m/s): how far
    /// the target may lead the measured position, per control period.
    /// Empty: no velocity stage.
    pub max_joint_velocity: Vec<f32>,
    /// Largest change of each joint's command from one tick to the next.
    /// Empty: no rate stage.
    pub max_step_per_tick: Vec<f32>,
    /// Axis-aligned box (robot base frame, m) the end effector must stay in;
    /// `None`: no workspace stage.
    pub workspace: Option<WorkspaceBox>,
    /// Ticks without a fresh observation before the loop holds position.
    pub stale_hold_ticks: u32,
    /// Ticks without a fresh observation before it moves to `safe_pose`.
    pub stale_safe_pose_ticks: u32,
    /// Where to go when observations stop for good; `None`: keep holding.
    pub safe_pose: Option<Vec<f32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBox {
    pub min: [f32; 3],
    pub max: [f32; 3],
}

/// How many times each stage changed a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeCounters {
    pub ticks: u64,
    pub non_finite: u64,
    pub position_clamps: u64,
    pub velocity_clamps: u64,
    pub rate_clamps: u64,
    pub workspace_clamps: u64,
    pub stale_holds: u64,
    pub safe_pose_ticks: u64,
    pub estop_holds: u64,
}

impl EnvelopeCounters {
    /// Ticks where any stage changed the command.
    pub fn clamps(&self) -> u64 {
        self.non_finite
            + self.position_clamps
            + self.velocity_clamps
            + self.rate_clamps
            + self.workspace_clamps
            + self.stale_holds
            + self.safe_pose_ticks
            + self.estop_holds
    }
}

/// Which stages changed this tick's command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activations {
    pub non_finite: bool,
    pub position: bool,
    pub velocity: bool,
    pub rate: bool,
    pub workspace: bool,
    pub stale_hold: bool,
    pub safe_pose: bool,
    pub estop: bool,
}

impl Activations {
    pub fn any(&self) -> bool {
        self.non_finite
            || self.position
            || self.velocity
            || self.rate
            || self.workspace
            || self.stale_hold
            || self.safe_pose
            || self.estop
    }
}

/// The command that may go to the robot, and what the envelope did to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub command: Action,
    pub activations: Activations,
}

/// What the envelope knows about the robot at this tick.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    /// Joint positions from the newest observation (in action order), or
    /// `None` when the robot's action is not joint positions (the pendulum's
    /// torque): then only the finite and spec-limit stages apply.
    pub joint_positions: Option<&'a [f32]>,
    /// Ticks since the last fresh observation (0: fresh this tick).
    pub observation_age_ticks: u32,
}
