//! Per-robot settings that a URDF does not carry: actuator gains, the
//! end-effector frame, the gripper, and collision pads for the fingers.
//!
//! Read from `<urdf stem>.toml` beside the URDF (or a path given on the
//! command line). An arm without one gets defaults derived from its URDF.
//! The embedded SO-101's config is read from the binary (`urdf_files`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A position servo on one joint, in MuJoCo's terms so that a MuJoCo model
/// and ours step the same controller: force = stiffness·(target − q) −
/// damping·q̇, clamped to ±max_force; plus passive joint damping, dry
/// friction (`frictionloss`) and armature (reflected rotor inertia).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorParams {
    /// N·m/rad (N/m for prismatic joints).
    pub stiffness: f32,
    /// N·m·s/rad.
    pub damping: f32,
    /// N·m.
    pub max_force: f32,
    /// Passive viscous damping, N·m·s/rad.
    #[serde(default)]
    pub joint_damping: f32,
    /// Dry friction, N·m.
    #[serde(default)]
    pub friction: f32,
    /// kg·m².
    #[serde(default)]
    pub armature: f32,
}

impl ActuatorParams {
    /// Defaults for an arm without an actuator file: the URDF effort limit as
    /// the force limit, full force at 0.01 rad of error (stiff enough that
    /// gravity sags a heavy arm by millimetres), and damping for a
    /// 20 ms time constant.
    pub fn from_effort(effort: f32) -> Self {
        let max_force = if effort > 0.0 { effort } else { 10.0 };
        let stiffness = max_force / 0.01;
        Self {
            stiffness,
            damping: stiffness * 0.02,
            max_force,
            joint_damping: 0.01 * max_force,
            friction: 0.0,
            armature: 0.01,
        }
    }
}

/// The largest length (m), angle (rad) or position a robot config may give.
const MAX_LENGTH: f32 = 1e3;
/// The largest gain, force, damping or armature a robot config may give.
const MAX_GAIN: f32 = 1e9;

/// `value` is finite and in `[lo, hi]`; otherwise a refusal naming `key`,
/// the value (NaN and infinities included) and the range.
fn check_in(key: &str, value: f32, lo: f32, hi: f32, unit: &str) -> Result<(), String> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{key} = {value:?}: must be a finite number in [{lo:?}, {hi:?}] {unit}"
    ))
}

impl ActuatorParams {
    /// Every gain finite and non-negative; `key` is the table's TOML path
    /// (`actuators.shoulder_pan`), for the refusal.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        for (name, value, unit) in [
            ("stiffness", self.stiffness, "N·m/rad"),
            ("damping", self.damping, "N·m·s/rad"),
            ("max_force", self.max_force, "N·m"),
            ("joint_damping", self.joint_damping, "N·m·s/rad"),
            ("friction", self.friction, "N·m"),
            ("armature", self.armature, "kg·m²"),
        ] {
            check_in(&format!("{key}.{name}"), value, 0.0, MAX_GAIN, unit)?;
        }
        Ok(())
    }
}

/// A box collider added to a link, e.g. a finger pad where the convex hull
/// of the jaw mesh would fill the grasp gap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollisionPad {
    pub link: String,
    /// Box centre in the link frame (m).
    pub center: [f32; 3],
    /// Half extents along the link frame's axes (m).
    pub half_extents: [f32; 3],
}

/// How the scripted expert opens, closes and aims the gripper. The axes
/// and the offset are in the end-effector frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GripperConfig {
    pub joint: String,
    pub open: f32,
    pub closed: f32,
    /// The direction the fingers point (the gripper moves along it onto an
    /// object); z by default, as in ROS tool frames.
    #[serde(default = "GripperConfig::default_approach_axis")]
    pub approach_axis: [f32; 3],
    /// The direction the jaws close along; y by default, as in ROS hand
    /// frames.
    #[serde(default = "GripperConfig::default_closing_axis")]
    pub closing_axis: [f32; 3],
    /// Where the centre of a grasped object sits (m): between the jaws, at
    /// a depth that keeps the fingertips off the table when the object
    /// rests on it.
    #[serde(default)]
    pub grasp_offset: [f32; 3],
}

impl GripperConfig {
    fn default_approach_axis() -> [f32; 3] {
        [0.0, 0.0, 1.0]
    }

    fn default_closing_axis() -> [f32; 3] {
        [0.0, 1.0, 0.0]
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// The link whose frame is the end effector (required when the URDF has
    /// several leaf links).
    pub ee_link: Option<String>,
    /// Joint positions of the start pose; joints not named start at the
    /// middle of their range (0 when the range contains 0).
    #[serde(default)]
    pub home: BTreeMap<String, f32>,
    pub gripper: Option<GripperConfig>,
    /// Links whose mesh colliders are replaced by `pads` (the jaws).
    #[serde(default)]
    pub replace_collision: Vec<String>,
    #[serde(default)]
    pub pads: Vec<CollisionPad>,
    /// How far (m) a mesh's collision hull may shrink when it is simplified
    /// to fewer vertices (default 0.5 mm, see `hull.rs`); 0 keeps the exact
    /// convex hulls, which cost rapier far more per step.
    pub hull_tolerance: Option<f32>,
    /// Applies to every actuated joint not named in `actuators`.
    pub default_actuator: Option<ActuatorParams>,
    #[serde(default)]
    pub actuators: BTreeMap<String, ActuatorParams>,
}

impl RobotConfig {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = crate::urdf_files::read_to_string(path)
            .map_err(|e| format!("cannot read robot config {}: {e}", path.display()))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| format!("robot config {}: {e}", path.display()))?;
        config
            .validate()
            .map_err(|e| format!("robot config {}: {e}", path.display()))?;
        Ok(config)
    }

    /// Checks what the TOML types cannot, each refusal naming the key, the
    /// value and the accepted range: actuator gains finite and
    /// non-negative, home positions and gripper openings finite, pads
    /// with a finite centre and a positive size, gripper axes that are
    /// directions and not parallel.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(tolerance) = self.hull_tolerance {
            check_in("hull_tolerance", tolerance, 0.0, MAX_LENGTH, "m")?;
        }
        if let Some(actuator) = &self.default_actuator {
            actuator.validate("default_actuator")?;
        }
        for (joint, actuator) in &self.actuators {
            actuator.validate(&format!("actuators.{joint}"))?;
        }
        for (joint, &q) in &self.home {
            check_in(
                &format!("home.{joint}"),
                q,
                -MAX_LENGTH,
                MAX_LENGTH,
                "rad or m",
            )?;
        }
        for (i, pad) in self.pads.iter().enumerate() {
            if !pad.half_extents.iter().all(|&h| h > 0.0 && h <= MAX_LENGTH)
                || !pad
                    .center
                    .iter()
                    .all(|c| c.is_finite() && c.abs() <= MAX_LENGTH)
            {
                return Err(format!(
                    "pads[{i}] (on `{}`): center = {:?} and half_extents = {:?}: the centre must be finite within ±{MAX_LENGTH} m and the half extents in (0, {MAX_LENGTH}] m",
                    pad.link, pad.center, pad.half_extents
                ));
            }
        }
        if let Some(gripper) = &self.gripper {
            check_in(
                "gripper.open",
                gripper.open,
                -MAX_LENGTH,
                MAX_LENGTH,
                "rad or m",
            )?;
            check_in(
                "gripper.closed",
                gripper.closed,
                -MAX_LENGTH,
                MAX_LENGTH,
                "rad or m",
            )?;
            for (key, values) in [
                ("gripper.approach_axis", &gripper.approach_axis),
                ("gripper.closing_axis", &gripper.closing_axis),
                ("gripper.grasp_offset", &gripper.grasp_offset),
            ] {
                if !values
                    .iter()
                    .all(|v| v.is_finite() && v.abs() <= MAX_LENGTH)
                {
                    return Err(format!(
                        "{key} = {values:?}: each must be a finite number in [-{MAX_LENGTH}, {MAX_LENGTH}]"
                    ));
                }
            }
            let [a, c] = [gripper.approach_axis, gripper.closing_axis].map(|v| {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.map(|x| x / norm)
            });
            let cross = [
                a[1] * c[2] - a[2] * c[1],
                a[2] * c[0] - a[0] * c[2],
                a[0] * c[1] - a[1] * c[0],
            ];
            let sine = cross.iter().map(|x| x * x).sum::<f32>().sqrt();
            // A zero axis makes the sine NaN.
            if sine.is_nan() || sine <= 0.1 {
                return Err(format!(
                    "[gripper] approach_axis {:?} and closing_axis {:?} must be non-zero and not parallel",
                    gripper.approach_axis, gripper.closing_axis
                ));
            }
        }
        Ok(())
    }

    /// The file that configures the URDF at `urdf`, if there is one: its
    /// name with `.toml` in place of `.urdf`.
    pub fn beside(urdf: &Path) -> Option<std::path::PathBuf> {
        let path = urdf.with_extension("toml");
        crate::urdf_files::is_file(&path).then_some(path)
    }

    pub fn actuator_for(&self, joint: &str, effort: f32) -> ActuatorParams {
        self.actuators
            .get(joint)
            .copied()
            .or(self.default_actuator)
            .unwrap_or_else(|| ActuatorParams::from_effort(effort))
    }
}
