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

    /// Checks what the TOML types cannot: pads with a size, gripper axes
    /// that are directions and not parallel.
    pub fn validate(&self) -> Result<(), String> {
        for pad in &self.pads {
            if !pad.half_extents.iter().all(|&h| h > 0.0 && h.is_finite())
                || !pad.center.iter().all(|c| c.is_finite())
            {
                return Err(format!(
                    "the pad on `{}` needs finite centre and positive half_extents, got {:?} and {:?}",
                    pad.link, pad.center, pad.half_extents
                ));
            }
        }
        if let Some(gripper) = &self.gripper {
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
