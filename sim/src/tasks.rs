//! Tasks on an arm: each a reset distribution, a reward and a success test.
//!
//! - `reach`: bring the end-effector frame to a target drawn from forward
//!   kinematics of uniformly sampled joint angles, above the table and at
//!   least 10 cm from the start; success is being within 2 cm at the last
//!   tick of a 2 s episode. Reward per tick: −distance (m).
//! - `lift`: grasp the cube and raise it at least 5 cm, held for 1 s.
//!   Reward per tick: −distance from the end effector to the cube, plus the
//!   cube's height gain normalised by the 5 cm goal (capped at 1), plus 1
//!   for every tick the cube is held high.
//! - `reach-color`: three coloured markers stand on the table; the
//!   instruction names one, and success is the end-effector frame within
//!   2 cm of the top of that marker at the last tick. The state holds the
//!   joints only: the markers reach a policy through the camera, which
//!   marker through the instruction. Reward as reach's, to the named marker.
//! - `lift-color`: a red and a blue cube; the instruction names one, and
//!   success is that cube raised 5 cm and held for 1 s (as lift) with the
//!   other one still down. Lifting the other cube fails.
//!
//! docs/tasks.md describes all of them.

use crate::arm_model::ArmModel;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Reach,
    Lift,
    Pendulum,
    /// Named as on the command line (`reach_color` is read too).
    #[serde(rename = "reach-color", alias = "reach_color")]
    ReachColor,
    #[serde(rename = "lift-color", alias = "lift_color")]
    LiftColor,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Reach,
        TaskKind::Lift,
        TaskKind::Pendulum,
        TaskKind::ReachColor,
        TaskKind::LiftColor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Reach => "reach",
            TaskKind::Lift => "lift",
            TaskKind::Pendulum => "pendulum",
            TaskKind::ReachColor => "reach-color",
            TaskKind::LiftColor => "lift-color",
        }
    }

    /// The instruction a language-conditioned policy receives: one fixed
    /// sentence for the tasks without colours. A colour task draws its
    /// episode's instruction from `crate::instructions` instead (the
    /// observation carries that one); this is what it asks in general.
    pub fn instruction(self) -> &'static str {
        match self {
            TaskKind::Reach => "move the gripper to the target",
            TaskKind::Lift => "pick up the cube and hold it up",
            TaskKind::Pendulum => "swing the pendulum up and balance it",
            TaskKind::ReachColor => "touch the marker of the named colour",
            TaskKind::LiftColor => "pick up the cube of the named colour",
        }
    }

    /// Whether the task's object is named by colour in a drawn
    /// instruction, and seen through the camera only.
    pub fn is_color(self) -> bool {
        matches!(self, TaskKind::ReachColor | TaskKind::LiftColor)
    }

    /// The task whose motion, reward shape and scripted expert a colour
    /// task shares (itself for the others).
    pub fn base(self) -> TaskKind {
        match self {
            TaskKind::ReachColor => TaskKind::Reach,
            TaskKind::LiftColor => TaskKind::Lift,
            other => other,
        }
    }

    /// Episode length of an arm task (s); `None` for the pendulum, whose
    /// episodes are counted in its own steps.
    pub fn arm_horizon_s(self) -> Option<f64> {
        match self.base() {
            TaskKind::Reach => Some(REACH_HORIZON_S),
            TaskKind::Lift => Some(LIFT_HORIZON_S),
            _ => None,
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                format!("unknown task `{s}`; known tasks: {}", known.join(", "))
            })
    }
}

/// Reach targets must be this far above the table (m).
pub const REACH_MIN_HEIGHT: f32 = 0.05;
/// …and this far from the start position of the end effector (m).
pub const REACH_MIN_DISTANCE: f32 = 0.10;
/// Every joint of the arm must be this far above the table at the sampled pose (m).
pub const REACH_ARM_CLEARANCE: f32 = 0.03;
pub const REACH_SUCCESS_RADIUS: f32 = 0.02;

/// Dense reach reward per tick: −distance (m), plus a precision term
/// 1 − tanh(distance / 10 cm) (the shaping robosuite's reaching tasks use)
/// whose slope near the target is ten times that of the distance, so that
/// the last centimetres, which decide success, are worth learning.
pub fn reach_reward(distance: f32) -> f32 {
    -distance + (1.0 - (distance / 0.1).tanh())
}
pub const REACH_HORIZON_S: f64 = 2.0;

pub const LIFT_HEIGHT: f32 = 0.05;

/// Dense lift reward per tick: −distance from the end effector to the cube
/// (m), plus the cube's height gain as a share of LIFT_HEIGHT, plus 1 while
/// it is that high.
pub fn lift_reward(ee: &[f32; 3], cube: &[f32; 3], cube_start_height: f32) -> f32 {
    let gain = cube[2] - cube_start_height;
    -distance(ee, cube) + (gain / LIFT_HEIGHT).clamp(0.0, 1.0) + (gain >= LIFT_HEIGHT) as u8 as f32
}

/// Whether an observation's state meets the task's success test at that
/// instant (reach: within REACH_SUCCESS_RADIUS of the target; lift: the
/// cube LIFT_HEIGHT above its start; lift's episode also needs it held for
/// LIFT_HOLD_S): the ground-truth label of success classifiers.
pub fn success_state(
    task: TaskKind,
    spec: &cerebellum_core::ObservationSpec,
    state: &[f32],
    cube_start_height: f32,
) -> Option<bool> {
    let point = |name: &str| -> Option<[f32; 3]> { spec.field(state, name)?.try_into().ok() };
    match task {
        TaskKind::Reach => {
            Some(distance(&point("ee_position")?, &point("target")?) < REACH_SUCCESS_RADIUS)
        }
        TaskKind::Lift => Some(point("cube_position")?[2] - cube_start_height >= LIFT_HEIGHT),
        // The colour tasks' state holds no object: the test needs the
        // simulator's own poses.
        TaskKind::Pendulum | TaskKind::ReachColor | TaskKind::LiftColor => None,
    }
}

/// The task's ground-truth reward from an observation's state (what the
/// simulator scores a step with), for checking learned rewards against it:
/// `None` for a task without an arm or a state missing the fields. Lift
/// needs the cube's height at the start of the episode.
pub fn ground_truth_reward(
    task: TaskKind,
    spec: &cerebellum_core::ObservationSpec,
    state: &[f32],
    cube_start_height: f32,
) -> Option<f32> {
    let point = |name: &str| -> Option<[f32; 3]> { spec.field(state, name)?.try_into().ok() };
    match task {
        TaskKind::Reach => Some(reach_reward(distance(
            &point("ee_position")?,
            &point("target")?,
        ))),
        TaskKind::Lift => Some(lift_reward(
            &point("ee_position")?,
            &point("cube_position")?,
            cube_start_height,
        )),
        TaskKind::Pendulum | TaskKind::ReachColor | TaskKind::LiftColor => None,
    }
}
pub const LIFT_HOLD_S: f64 = 1.0;
pub const LIFT_HORIZON_S: f64 = 5.0;

/// Draws a reach target: forward kinematics of joint angles drawn uniformly
/// within the limits of the joints that move the end effector, kept if it
/// is above the table (with every joint of the arm above it too) and far
/// enough from the start.
pub fn sample_reach_target<R: Rng + ?Sized>(
    model: &ArmModel,
    start: &[f32],
    table_height: f32,
    rng: &mut R,
) -> Result<[f32; 3], String> {
    let start_ee = model.ee_position(start);
    let movable = model.moves_end_effector();
    for _ in 0..10_000 {
        let q: Vec<f32> = model
            .joints
            .iter()
            .zip(&movable)
            .zip(start)
            .map(|((joint, &moves), &home)| {
                let u: f32 = rng.random();
                if moves {
                    joint.lower + u * (joint.upper - joint.lower)
                } else {
                    home
                }
            })
            .collect();
        let target = model.ee_position(&q);
        // The whole arm, not only its tip, must be above the table for the
        // pose to be reachable.
        if target[2] >= table_height + REACH_MIN_HEIGHT
            && model.lowest_point(&q) >= table_height + REACH_ARM_CLEARANCE
            && distance(&target, &start_ee) >= REACH_MIN_DISTANCE
        {
            return Ok(target);
        }
    }
    // An arm that cannot reach above the table (a valid URDF, the wrong
    // task) is refused, not a panic.
    Err(format!(
        "arm `{}` cannot do the reach task: no target {REACH_MIN_HEIGHT} m above the table and {REACH_MIN_DISTANCE} m from the start in 10000 draws of its joint ranges",
        model.name
    ))
}

/// A colour word and its linear RGB.
pub type Color = (&'static str, [f32; 3]);

/// The markers of `reach-color`: red, green and blue, far from one another
/// in colour and from the table's beige checker, the arm's yellow and its
/// black servos.
pub const MARKER_COLORS: [Color; 3] = [
    ("red", crate::camera::CUBE_RGB),
    ("green", [0.08, 0.62, 0.16]),
    ("blue", [0.10, 0.22, 0.90]),
];
/// Every colour word the colour tasks name an object by, sorted.
pub fn color_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = MARKER_COLORS
        .iter()
        .chain(&CUBE_COLORS)
        .map(|(name, _)| *name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The cubes of `lift-color`: the lift cube's red and the markers' blue.
pub const CUBE_COLORS: [Color; 2] = [MARKER_COLORS[0], MARKER_COLORS[2]];
/// A marker is an upright cylinder standing on the table, this high (m):
/// its top, where the end effector touches it, is as high above the table
/// as the expert's planned paths keep every joint frame (2 cm) and then
/// some.
pub const MARKER_HEIGHT: f32 = 0.04;
pub const MARKER_RADIUS: f32 = 0.012;
/// Least distance between two markers' centres (m).
pub const MARKER_SPACING: f32 = 0.06;
/// Markers stand this far from the arm's base (m), within
/// `MARKER_BEARING_DEG` of straight ahead: reachable, and in view of the
/// default camera (sim/tests/color_tasks.rs checks both over 200 seeds).
pub const MARKER_RADII: (f32, f32) = (0.15, 0.28);
pub const MARKER_BEARING_DEG: f32 = 50.0;
/// Least distance between the centres of `lift-color`'s two cubes (m):
/// the open jaws around one clear the other.
pub const CUBE_SPACING: f32 = 0.08;
/// The cubes of `lift-color` start as lift's does, this far from the base.
pub const CUBE_RADII: (f32, f32) = (0.15, 0.26);

/// Where the markers of `reach-color` stand (x, y on the table), one per
/// `MARKER_COLORS` entry: drawn in the region of `MARKER_RADII` and
/// `MARKER_BEARING_DEG` until every pair is `MARKER_SPACING` apart.
pub fn sample_markers<R: Rng + ?Sized>(rng: &mut R) -> [[f32; 2]; 3] {
    loop {
        let points: [[f32; 2]; 3] = std::array::from_fn(|_| {
            let u: f32 = rng.random();
            let v: f32 = rng.random();
            // Uniform over the area of the annular sector.
            let (r0, r1) = MARKER_RADII;
            let radius = (r0 * r0 + u * (r1 * r1 - r0 * r0)).sqrt();
            let bearing = (v * 2.0 - 1.0) * MARKER_BEARING_DEG.to_radians();
            [radius * bearing.cos(), radius * bearing.sin()]
        });
        if spaced(&points, MARKER_SPACING) {
            return points;
        }
    }
}

/// Where the two cubes of `lift-color` start, as lift's one cube does,
/// `CUBE_SPACING` apart.
pub fn sample_cube_pair<R: Rng + ?Sized>(rng: &mut R) -> [([f32; 2], f32); 2] {
    loop {
        let pair = [
            sample_cube_position(rng, CUBE_RADII),
            sample_cube_position(rng, CUBE_RADII),
        ];
        if spaced(&[pair[0].0, pair[1].0], CUBE_SPACING) {
            return pair;
        }
    }
}

/// Whether every two of `points` are at least `spacing` apart.
fn spaced(points: &[[f32; 2]], spacing: f32) -> bool {
    points.iter().enumerate().all(|(i, a)| {
        points[i + 1..]
            .iter()
            .all(|b| (a[0] - b[0]).hypot(a[1] - b[1]) >= spacing)
    })
}

/// Where the lift cube may start: in front of the arm, within the given
/// radii of the base, at most 60° to either side.
pub fn sample_cube_position<R: Rng + ?Sized>(rng: &mut R, radii: (f32, f32)) -> ([f32; 2], f32) {
    let radius = radii.0 + rng.random::<f32>() * (radii.1 - radii.0);
    let bearing = (rng.random::<f32>() * 2.0 - 1.0) * 60f32.to_radians();
    let yaw = (rng.random::<f32>() * 2.0 - 1.0) * std::f32::consts::FRAC_PI_4;
    ([radius * bearing.cos(), radius * bearing.sin()], yaw)
}

pub fn distance(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}
