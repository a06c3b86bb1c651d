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
//!
//! Later stages take precedence: while the e-stop is latched, or while the
//! observation is stale, the policy's command is not looked at, so the
//! policy stages neither run nor count on that tick (the workspace stage
//! still applies to the move toward the safe pose).
//!
//! What every returned command satisfies (`runtime/tests/envelope.rs` checks
//! it on random specs, configs and inputs):
//!
//! - it is finite and within the action spec's limits;
//! - with a rate limit and a previous command, each element lies in
//!   `[previous − step, previous + step]` (computed in `f32`), except when
//!   the command is the hold of a measured pose, which may jump there in
//!   three cases: the e-stop hold, the stale hold, and a workspace hold when
//!   nothing within one step of the previous command is known to be inside
//!   the box. Holding where the robot measurably is cannot move it, and a
//!   slow approach would keep commanding a pose the envelope refuses;
//! - with a workspace box, outside the e-stop and stale holds, the end
//!   effector is inside the box whenever the hold pose or the previous
//!   command is;
//! - while the e-stop is set, it is the latched hold, whatever the policy
//!   proposes.
//!
//! The hold pose is the newest measured joint position (this episode)
//! clamped to the limits; without one, the previous command; without that,
//! the midpoint of the limits (zero torque for a symmetric torque action).

use cerebellum_core::bounds::Limits;
use cerebellum_core::{Action, RobotSpec};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

impl Default for EnvelopeConfig {
    /// Only the spec's limits and the watchdog: 3 ticks without an
    /// observation is 0.1 s at 30 Hz, longer than any healthy gap.
    fn default() -> Self {
        Self {
            max_joint_velocity: Vec::new(),
            max_step_per_tick: Vec::new(),
            workspace: None,
            stale_hold_ticks: 2,
            stale_safe_pose_ticks: 30,
            safe_pose: None,
        }
    }
}

/// Bounds of the envelope file's keys. Speeds and steps are in the
/// action's units (rad or m) per second or per tick; a limit above them
/// is no limit.
pub const MAX_JOINT_VELOCITY: Limits<f32> = Limits::open_closed(0.0, 100.0).unit("rad/s");
pub const MAX_STEP_PER_TICK: Limits<f32> = Limits::open_closed(0.0, 10.0).unit("rad");
/// Each coordinate of the workspace box (robot base frame).
pub const WORKSPACE_COORDINATE: Limits<f32> = Limits::closed(-10.0, 10.0).unit("m");
/// 0 would hold on fresh observations; 10,000 ticks is minutes blind.
pub const STALE_HOLD_TICKS: Limits<u32> = Limits::closed(1, 10_000).unit("ticks");
pub const STALE_SAFE_POSE_TICKS: Limits<u32> = Limits::closed(1, 100_000).unit("ticks");

impl EnvelopeConfig {
    /// The checks that need no robot: workspace coordinates and watchdog
    /// tick counts within their bounds, the safe-pose move after the hold.
    /// `SafetyEnvelope::new` calls it first, then checks the per-joint
    /// values against the robot's spec (their count, their bounds, the safe
    /// pose within the limits and the box).
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if let Some(b) = &self.workspace {
            for (k, axis) in ["x", "y", "z"].iter().enumerate() {
                let (lo, hi) = (b.min[k], b.max[k]);
                if !(WORKSPACE_COORDINATE.contains(lo) && WORKSPACE_COORDINATE.contains(hi))
                    || lo >= hi
                {
                    return Err(config_error(
                        format!("workspace.{axis}"),
                        format!(
                            "[{}, {}] is not a finite, non-empty interval with both ends {}",
                            short(lo),
                            short(hi),
                            WORKSPACE_COORDINATE.describe()
                        ),
                    ));
                }
            }
        }
        let ticks = |field: &str, value: u32, limits: Limits<u32>| {
            if limits.contains(value) {
                Ok(())
            } else {
                let why = if value == 0 {
                    ", which would hold even on fresh observations"
                } else {
                    ""
                };
                Err(config_error(
                    field,
                    format!("is {value}{why}; it must be {}", limits.describe()),
                ))
            }
        };
        ticks("stale_hold_ticks", self.stale_hold_ticks, STALE_HOLD_TICKS)?;
        ticks(
            "stale_safe_pose_ticks",
            self.stale_safe_pose_ticks,
            STALE_SAFE_POSE_TICKS,
        )?;
        if self.stale_safe_pose_ticks < self.stale_hold_ticks {
            return Err(config_error(
                "stale_safe_pose_ticks",
                format!(
                    "is {}, less than stale_hold_ticks = {}: the robot must hold before it moves",
                    self.stale_safe_pose_ticks, self.stale_hold_ticks
                ),
            ));
        }
        Ok(())
    }
}

/// A number as written (`0.5`, `1`), or in exponent form when it is huge
/// (`-1e30`, not 31 digits).
fn short(v: f32) -> String {
    if v.is_finite() && v.abs() >= 1e6 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
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
    /// Ticks where a stage changed the proposed command (a clamp).
    pub fn clamps(&self) -> u64 {
        self.non_finite
            + self.position_clamps
            + self.velocity_clamps
            + self.rate_clamps
            + self.workspace_clamps
    }

    /// Ticks where the envelope replaced whatever was proposed: the stale
    /// watchdog's holds and safe-pose moves, and the e-stop latch. They
    /// are not clamps: no proposal was looked at.
    pub fn forced_holds(&self) -> u64 {
        self.stale_holds + self.safe_pose_ticks + self.estop_holds
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

/// Why an envelope could not be built; each names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("robot spec `{robot}`: {reason}")]
    Spec { robot: String, reason: String },
    #[error("envelope.{field}: {reason}")]
    Config { field: String, reason: String },
}

fn config_error(field: impl Into<String>, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Halvings of the segment in the workspace stage: 2⁻²⁰ of a 1 m move is
/// about a micrometre, far below any servo's resolution.
const WORKSPACE_BISECTIONS: u32 = 20;

/// Share of each joint's range per second that the safe-pose move may cover
/// when neither a rate nor a velocity limit is configured: the whole range
/// in ten seconds, slow enough to watch and stop.
const DEFAULT_SAFE_POSE_RANGE_PER_S: f32 = 0.1;

/// The e-stop latch: why it was set, and the pose it holds (`None` until a
/// pose has been measured in this episode).
#[derive(Clone, Debug)]
struct Latch {
    reason: String,
    pose: Option<Vec<f32>>,
}

/// The last word on every command: see the module documentation for the
/// stages and what every returned command satisfies.
pub struct SafetyEnvelope {
    config: EnvelopeConfig,
    lower: Vec<f32>,
    upper: Vec<f32>,
    /// Where `joint_position` starts in the observation state, when the
    /// action is joint position targets.
    joint_position_offset: Option<usize>,
    /// Per-tick bound of `|command − measured|`.
    velocity_step: Option<Vec<f32>>,
    rate_step: Option<Vec<f32>>,
    safe_pose_step: Vec<f32>,
    workspace: Option<(WorkspaceBox, Arc<dyn ForwardKinematics>)>,
    /// The command sent on the previous tick of this episode.
    previous: Option<Vec<f32>>,
    /// The newest valid measured pose of this episode, clamped to the limits.
    measured: Option<Vec<f32>>,
    estop: Option<Latch>,
    counters: EnvelopeCounters,
}

impl std::fmt::Debug for SafetyEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetyEnvelope")
            .field("config", &self.config)
            .field("lower", &self.lower)
            .field("upper", &self.upper)
            .field("previous", &self.previous)
            .field("measured", &self.measured)
            .field("estop", &self.estop)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The offset of an observation field `joint_position` with the same
/// elements and unit as the (single) action field: only then is the action
/// a joint position target and the measured pose a pose to hold.
fn joint_position_offset(spec: &RobotSpec) -> Option<usize> {
    let [action] = spec.action.fields.as_slice() else {
        return None;
    };
    let mut offset = 0;
    for field in &spec.observation.fields {
        if field.name == "joint_position" {
            let same = field.elements == action.elements && field.unit == action.unit;
            return same.then_some(offset);
        }
        offset += field.len();
    }
    None
}

/// A per-joint limit from the config: empty (stage off) or one value
/// within `limits` per action element.
fn per_joint_limit(
    field: &str,
    values: &[f32],
    names: &[String],
    limits: Limits<f32>,
) -> Result<Option<Vec<f32>>, EnvelopeError> {
    if values.is_empty() {
        return Ok(None);
    }
    if values.len() != names.len() {
        return Err(config_error(
            field,
            format!(
                "has {} values, the action has {} elements",
                values.len(),
                names.len()
            ),
        ));
    }
    for (&value, name) in values.iter().zip(names) {
        if !limits.contains(value) {
            return Err(config_error(
                format!("{field}[{name}]"),
                format!("is {value:?}; a limit must be {}", limits.describe()),
            ));
        }
    }
    Ok(Some(values.to_vec()))
}

/// Clamps each `x[i]` into `[lo[i], hi[i]]`; NaN-free inputs stay NaN-free
/// (`max`/`min` return the other operand on NaN). True if anything moved.
fn clamp_between(x: &mut [f32], lo: impl Fn(usize) -> f32, hi: impl Fn(usize) -> f32) -> bool {
    let mut changed = false;
    for (i, v) in x.iter_mut().enumerate() {
        let c = v.max(lo(i)).min(hi(i));
        changed |= c != *v;
        *v = c;
    }
    changed
}

/// Clamps `x` into `[center − half, center + half]`, the same `f32`
/// expressions the guarantee is stated in.
fn clamp_window(x: &mut [f32], center: &[f32], half: &[f32]) -> bool {
    clamp_between(x, |i| center[i] - half[i], |i| center[i] + half[i])
}

/// The point at `t` on the segment `a → b`, kept between `a` and `b`
/// element-wise so rounding cannot leave the box the two share (limits,
/// rate window).
fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let mut p: Vec<f32> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x * (1.0 - t) + y * t)
        .collect();
    clamp_between(&mut p, |i| a[i].min(b[i]), |i| a[i].max(b[i]));
    p
}

impl SafetyEnvelope {
    /// Checks `config` against `spec` and builds the envelope. Refused, with
    /// the field named: an action spec that is malformed or has infinite
    /// limits (the hold falls back to their midpoint), a control rate that
    /// is not finite and positive, per-joint limits of the wrong length or
    /// not finite and positive, a velocity limit or workspace on a robot
    /// whose action is not joint positions, a safe pose of the wrong length,
    /// outside the action limits or (with a workspace) outside the box, an
    /// empty or inverted workspace box, a workspace without `fk`,
    /// `stale_hold_ticks == 0` and `stale_safe_pose_ticks < stale_hold_ticks`.
    pub fn new(
        spec: &RobotSpec,
        config: EnvelopeConfig,
        fk: Option<Arc<dyn ForwardKinematics>>,
    ) -> Result<Self, EnvelopeError> {
        config.validate()?;
        let spec_error = |reason: String| EnvelopeError::Spec {
            robot: spec.name.clone(),
            reason,
        };
        spec.action
            .validate()
            .map_err(|e| spec_error(format!("action: {e}")))?;
        let period = (spec.control_rate_hz.is_finite() && spec.control_rate_hz > 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(1.0 / spec.control_rate_hz).ok())
            .flatten()
            .ok_or_else(|| {
                spec_error(format!(
                    "control_rate_hz = {} must be finite and positive",
                    spec.control_rate_hz
                ))
            })?
            .as_secs_f32();
        let (lower, upper) = spec.action.limits();
        let names: Vec<String> = spec
            .action
            .fields
            .iter()
            .flat_map(|f| f.elements.iter().map(move |e| format!("{}.{e}", f.name)))
            .collect();
        for ((lo, hi), name) in lower.iter().zip(&upper).zip(&names) {
            if !(lo.is_finite() && hi.is_finite()) {
                return Err(spec_error(format!(
                    "action `{name}` has limits [{lo}, {hi}]; the envelope needs finite ones"
                )));
            }
        }
        let joint_position_offset = joint_position_offset(spec);
        let not_positions = |field: &str| {
            config_error(
                field,
                format!(
                    "needs joint position targets, and the action of `{}` is not matched by an \
                     observation field `joint_position` with the same elements and unit",
                    spec.name
                ),
            )
        };

        let velocity = per_joint_limit(
            "max_joint_velocity",
            &config.max_joint_velocity,
            &names,
            MAX_JOINT_VELOCITY,
        )?;
        if velocity.is_some() && joint_position_offset.is_none() {
            return Err(not_positions("max_joint_velocity"));
        }
        let velocity_step = velocity.map(|v| v.iter().map(|v| v * period).collect::<Vec<_>>());
        let rate_step = per_joint_limit(
            "max_step_per_tick",
            &config.max_step_per_tick,
            &names,
            MAX_STEP_PER_TICK,
        )?;

        let workspace = match (config.workspace, fk) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(config_error(
                    "workspace",
                    "a workspace box needs forward kinematics, and none was given",
                ));
            }
            (Some(_), Some(_)) if joint_position_offset.is_none() => {
                return Err(not_positions("workspace"));
            }
            (Some(b), Some(fk)) => Some((b, fk)),
        };

        if let Some(pose) = &config.safe_pose {
            if pose.len() != names.len() {
                return Err(config_error(
                    "safe_pose",
                    format!(
                        "has {} values, the action has {} elements",
                        pose.len(),
                        names.len()
                    ),
                ));
            }
            for (i, &v) in pose.iter().enumerate() {
                if !(v >= lower[i] && v <= upper[i]) {
                    return Err(config_error(
                        format!("safe_pose[{}]", names[i]),
                        format!(
                            "is {v}, outside the action limits [{}, {}]",
                            lower[i], upper[i]
                        ),
                    ));
                }
            }
        }

        let safe_pose_step = match (&rate_step, &velocity_step) {
            (Some(step), _) | (None, Some(step)) => step.clone(),
            (None, None) => lower
                .iter()
                .zip(&upper)
                .map(|(lo, hi)| (hi - lo) * DEFAULT_SAFE_POSE_RANGE_PER_S * period)
                .collect(),
        };
        let envelope = Self {
            config,
            lower,
            upper,
            joint_position_offset,
            velocity_step,
            rate_step,
            safe_pose_step,
            workspace,
            previous: None,
            measured: None,
            estop: None,
            counters: EnvelopeCounters::default(),
        };
        if let (Some(pose), Some((b, fk))) = (&envelope.config.safe_pose, &envelope.workspace)
            && !envelope.inside(pose)
        {
            return Err(config_error(
                "safe_pose",
                format!(
                    "puts the end effector at {:?}, outside the workspace box {:?}..{:?}",
                    fk.end_effector(pose),
                    b.min,
                    b.max
                ),
            ));
        }
        Ok(envelope)
    }

    pub fn config(&self) -> &EnvelopeConfig {
        &self.config
    }

    /// The joint positions in the observation state vector, in action
    /// order, when the robot's action is joint position targets: the
    /// observation has a field named `joint_position` whose element names
    /// and unit equal those of the single action field (the SO-101 arm);
    /// otherwise `None` (the pendulum, whose action is a torque).
    pub fn joint_positions<'a>(&self, state: &'a [f32]) -> Option<&'a [f32]> {
        let offset = self.joint_position_offset?;
        state.get(offset..offset + self.lower.len())
    }

    /// One tick. `proposed` is the policy's command, or `None` when there is
    /// none (the policy missed its deadline with an empty chunk): then the
    /// candidate is the hold pose, with no flag of its own (the loop counts
    /// its missed deadlines), and the later stages still apply to it.
    ///
    /// - finite: a NaN/inf element, or a command of the wrong length (as
    ///   unusable as a NaN), is replaced by the hold pose (`non_finite`);
    /// - position: clamped to the action spec's limits;
    /// - velocity (configured, and a pose measured this episode):
    ///   `|command − measured| ≤ max_joint_velocity · control period`, the
    ///   measured pose clamped to the limits so the window always meets them;
    /// - rate (configured, and a previous command this episode):
    ///   `|command − previous| ≤ max_step_per_tick`; it comes after velocity
    ///   and wins when the two disagree (a robot lagging its command);
    /// - workspace (configured): an end effector outside the box moves the
    ///   command back, by bisection, to the farthest point inside on the
    ///   segment from an anchor inside the box: the previous command, else
    ///   the hold pose brought within one step of it. Both keep the whole
    ///   segment within the limits and the rate window. With neither inside,
    ///   a hold pose inside the box is commanded directly (it is measured,
    ///   so the jump holds the robot where it is), else the hold pose is
    ///   approached at the rate limit;
    /// - stale: from `stale_hold_ticks` of observation age the command is
    ///   the hold pose, jumping there if need be (`stale_hold`); from
    ///   `stale_safe_pose_ticks`, with a safe pose, it moves from the
    ///   previous command (else the hold pose) toward the safe pose by at
    ///   most one step per tick (`safe_pose`): `max_step_per_tick`, else
    ///   `max_joint_velocity · period`, else a tenth of each joint's range
    ///   per second. The workspace stage applies to that move, so it may
    ///   stop at the box's edge short of the safe pose;
    /// - e-stop: while latched, the command is the latched pose (the pose
    ///   measured when it was set, else the first one measured after), or
    ///   the hold pose while none is known, whatever the policy proposes.
    ///
    /// A measurement of the wrong length or with a non-finite element is
    /// ignored, as is any measurement when the action is not joint
    /// positions. The clamping stages flag and count the ticks they changed
    /// the command on; the stale, safe-pose and e-stop stages replace the
    /// policy's command, and flag and count every tick they are in force.
    pub fn check(&mut self, proposed: Option<&Action>, measured: Measured) -> Checked {
        self.counters.ticks += 1;
        self.observe(measured.joint_positions);
        let hold = self.hold();
        let mut activations = Activations::default();
        let age = measured.observation_age_ticks;
        let command = if let Some(latch) = &mut self.estop {
            activations.estop = true;
            if latch.pose.is_none() {
                latch.pose = self.measured.clone();
            }
            latch.pose.clone().unwrap_or(hold)
        } else if let (true, Some(safe)) = (
            age >= self.config.stale_safe_pose_ticks,
            &self.config.safe_pose,
        ) {
            activations.safe_pose = true;
            let mut step = safe.clone();
            let base = self.previous.as_deref().unwrap_or(&hold);
            clamp_window(&mut step, base, &self.safe_pose_step);
            self.fit_workspace(step, &hold, &mut activations)
        } else if age >= self.config.stale_hold_ticks {
            activations.stale_hold = true;
            hold
        } else {
            self.limit(proposed, hold, &mut activations)
        };
        self.count(&activations);
        self.previous = Some(command.clone());
        Checked {
            command: Action::new(command),
            activations,
        }
    }

    /// Latches the e-stop: from the next tick every command holds the pose
    /// measured last (or the first one measured after, if none was). Setting
    /// it again keeps the first reason and pose.
    pub fn set_estop(&mut self, reason: &str) {
        if self.estop.is_none() {
            self.estop = Some(Latch {
                reason: reason.to_owned(),
                pose: self.measured.clone(),
            });
        }
    }

    /// Releases the latch; only an operator calls this. The next command is
    /// rate limited from the latched hold.
    pub fn clear_estop(&mut self) {
        self.estop = None;
    }

    /// Why the e-stop is latched, if it is.
    pub fn estop(&self) -> Option<&str> {
        self.estop.as_ref().map(|l| l.reason.as_str())
    }

    pub fn counters(&self) -> EnvelopeCounters {
        self.counters
    }

    /// New episode (the robot was reset): forgets the previous command used
    /// by the rate stage and the measured pose, since the reset moved the
    /// robot. Keeps the counters and the e-stop latch, but re-takes the
    /// latched pose from the first measurement of the new episode: holding
    /// the pre-reset pose would be a motion.
    pub fn begin_episode(&mut self) {
        self.previous = None;
        self.measured = None;
        if let Some(latch) = &mut self.estop {
            latch.pose = None;
        }
    }

    fn observe(&mut self, joint_positions: Option<&[f32]>) {
        if self.joint_position_offset.is_none() {
            return;
        }
        let Some(q) = joint_positions else { return };
        if q.len() != self.lower.len() || !q.iter().all(|v| v.is_finite()) {
            return;
        }
        let mut q = q.to_vec();
        clamp_between(&mut q, |i| self.lower[i], |i| self.upper[i]);
        self.measured = Some(q);
    }

    fn hold(&self) -> Vec<f32> {
        if let Some(q) = self.measured.as_ref().or(self.previous.as_ref()) {
            return q.clone();
        }
        // Halves first: `lo + hi` may overflow for limits near f32::MAX.
        let mut mid: Vec<f32> = (self.lower.iter().zip(&self.upper))
            .map(|(lo, hi)| 0.5 * lo + 0.5 * hi)
            .collect();
        clamp_between(&mut mid, |i| self.lower[i], |i| self.upper[i]);
        mid
    }

    /// The policy path: finite → position → velocity → rate → workspace.
    fn limit(
        &self,
        proposed: Option<&Action>,
        hold: Vec<f32>,
        activations: &mut Activations,
    ) -> Vec<f32> {
        let mut command = match proposed {
            None => hold.clone(),
            Some(a)
                if a.values.len() == self.lower.len() && a.values.iter().all(|v| v.is_finite()) =>
            {
                a.values.clone()
            }
            Some(_) => {
                activations.non_finite = true;
                hold.clone()
            }
        };
        activations.position = clamp_between(&mut command, |i| self.lower[i], |i| self.upper[i]);
        if let (Some(step), Some(measured)) = (&self.velocity_step, &self.measured) {
            activations.velocity = clamp_window(&mut command, measured, step);
        }
        activations.rate = self.rate_limit(&mut command);
        self.fit_workspace(command, &hold, activations)
    }

    fn rate_limit(&self, command: &mut [f32]) -> bool {
        match (&self.rate_step, &self.previous) {
            (Some(step), Some(previous)) => clamp_window(command, previous, step),
            _ => false,
        }
    }

    fn inside(&self, q: &[f32]) -> bool {
        let Some((b, fk)) = &self.workspace else {
            return true;
        };
        let p = fk.end_effector(q);
        (0..3).all(|k| p[k] >= b.min[k] && p[k] <= b.max[k])
    }

    fn fit_workspace(
        &self,
        command: Vec<f32>,
        hold: &[f32],
        activations: &mut Activations,
    ) -> Vec<f32> {
        if self.inside(&command) {
            return command;
        }
        let mut held = hold.to_vec();
        self.rate_limit(&mut held);
        let anchor = [self.previous.as_deref(), Some(held.as_slice())]
            .into_iter()
            .flatten()
            .find(|a| self.inside(a));
        let fitted = match anchor {
            Some(anchor) => {
                let (mut inside, mut outside) = (0.0_f32, 1.0_f32);
                for _ in 0..WORKSPACE_BISECTIONS {
                    let t = 0.5 * (inside + outside);
                    if self.inside(&lerp(anchor, &command, t)) {
                        inside = t;
                    } else {
                        outside = t;
                    }
                }
                lerp(anchor, &command, inside)
            }
            None if self.inside(hold) => hold.to_vec(),
            None => held,
        };
        activations.workspace |= fitted != command;
        fitted
    }

    fn count(&mut self, a: &Activations) {
        let c = &mut self.counters;
        c.non_finite += a.non_finite as u64;
        c.position_clamps += a.position as u64;
        c.velocity_clamps += a.velocity as u64;
        c.rate_clamps += a.rate as u64;
        c.workspace_clamps += a.workspace as u64;
        c.stale_holds += a.stale_hold as u64;
        c.safe_pose_ticks += a.safe_pose as u64;
        c.estop_holds += a.estop as u64;
    }
}

/// Forward kinematics of a simulated arm's URDF chain, for the workspace
/// stage.
pub struct ArmKinematics(pub Arc<cerebellum_sim::ArmModel>);

impl ForwardKinematics for ArmKinematics {
    fn end_effector(&self, joint_positions: &[f32]) -> [f32; 3] {
        self.0.ee_position(joint_positions)
    }
}
