//! Scripted experts: inverse kinematics over the URDF chain plus the
//! servos' own position control. On reach and lift they read only what a
//! policy reads (the observation), so they can also play the teleoperator
//! over the wire. The colour tasks' observation holds no object (a policy
//! sees it through the camera): their expert is the base task's, reading
//! the privileged `ArmEnv::expert_view` (the named marker's or cube's pose
//! from the simulator) instead.

use crate::arm_model::ArmModel;
use crate::kinematics::{AxisGoal, IkOptions, IkSolution};
use crate::tasks::TaskKind;
use cerebellum_core::{Action, Observation, ObservationSpec};
use nalgebra::{Quaternion, UnitQuaternion, Vector3};
use std::sync::Arc;

/// Keeps IK goals this far inside the joint limits (rad), so the servo is
/// not pressed against a stop.
const LIMIT_MARGIN: f64 = 0.02;
/// Joint speed of the expert's commanded trajectory (rad/s).
const EXPERT_SPEED: f32 = 3.5;
/// Its acceleration and deceleration (rad/s²).
const EXPERT_ACCELERATION: f32 = 15.0;
/// Points checked along a joint-space path for table clearance (a power
/// of two: the checks halve the path's pieces in turn).
const PATH_CHECKS: usize = 32;
/// How far above the table every joint frame and the end effector stay
/// along a planned joint-space path (m).
const PATH_CLEARANCE: f32 = 0.02;
/// A detour passes this far above the higher of start and target (m).
const APPROACH_HEIGHT: f32 = 0.05;
/// IK seeds: the measured pose, then restarts spread over the joint ranges.
const IK_SEEDS: usize = 32;
/// Distinct IK solutions a plan chooses among.
const IK_CANDIDATES: usize = 9;
/// Via poses tried when no straight joint-space path clears the table:
/// this many spread over the joint ranges, and as many around each goal.
const VIA_SAMPLES: usize = 256;
/// Most pairs of via poses whose middle segment one plan checks (a few
/// microseconds each).
const PAIR_CHECKS: usize = 50_000;
/// Spacing of the joint waypoints along a Cartesian detour (m).
const CARTESIAN_STEP: f32 = 0.02;
/// Joint speed while the gripper is near or holding the cube (rad/s).
const CAREFUL_SPEED: f32 = 1.5;
/// Measured joints within this of the last waypoint count as arrived (rad).
const SETTLED: f32 = 0.02;
/// A lift phase that waits for the arm to arrive gives up after this (s).
const PHASE_TIMEOUT_S: f32 = 1.5;
/// Time the jaws get to close on the cube (s).
const GRASP_S: f32 = 0.5;
/// The pose above the grasp is this far back along the approach axis (m).
const GRASP_HOVER: f32 = 0.05;
/// How far the grasped cube is raised (m), more than the task's 5 cm.
const RAISE_HEIGHT: f32 = 0.08;
/// Leans of the fingers from straight down tried in turn (degrees), for
/// cubes too near or too far for a vertical grasp.
const GRASP_LEANS: [f64; 9] = [0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0];

/// Stages of the lift expert, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LiftPhase {
    /// To the pose above the grasp, gripper open.
    Approach,
    /// Along the approach axis onto the cube.
    Descend,
    /// Closing the jaws in place.
    Grasp,
    /// Straight up, then holding there.
    Raise,
}

/// A grasp of the cube planned from one observation of it.
#[derive(Clone, Debug)]
struct GraspPlan {
    /// The gripper's orientation, kept through the whole pick.
    axes: [AxisGoal; 2],
    /// End-effector positions at the grasp and above it (m).
    grasp: Vector3<f64>,
    above: Vector3<f64>,
    /// Joint positions at the grasp and above it.
    q_grasp: Vec<f32>,
    q_above: Vec<f32>,
}

pub struct ScriptedExpert {
    model: Arc<ArmModel>,
    task: TaskKind,
    control_period: f32,
    command: Option<Vec<f32>>,
    waypoints: Vec<Vec<f32>>,
    table_height: f32,
    goal_for: Option<[f32; 3]>,
    /// The gripper joint, which moves on its own; every other joint moves
    /// in step so that the arm follows straight joint-space segments.
    gripper_index: Option<usize>,
    /// Speed of the command along its path (rad/s of the joint that moves
    /// most).
    speed: f32,
    lift_phase: LiftPhase,
    phase_ticks: u32,
    grasp: Option<GraspPlan>,
    /// Where the cube was when the episode began.
    cube_start: Option<Vector3<f64>>,
}

impl ScriptedExpert {
    /// `table_height` is the height of the table top (m), which the
    /// planned end-effector path keeps clear of. A colour task gets its
    /// base task's expert (`TaskKind::base`), which `act` must be given
    /// `ArmEnv::expert_view` for.
    pub fn new(
        model: Arc<ArmModel>,
        task: TaskKind,
        control_rate_hz: f64,
        table_height: f32,
    ) -> Result<Self, String> {
        let task = task.base();
        if task == TaskKind::Pendulum {
            return Err("there is no scripted expert for the pendulum".into());
        }
        let gripper_index = match &model.config.gripper {
            Some(gripper) => Some(model.joint_index(&gripper.joint).ok_or_else(|| {
                format!(
                    "the robot config of {} names gripper joint `{}`, which is not an actuated joint",
                    model.urdf_path.display(),
                    gripper.joint
                )
            })?),
            None => None,
        };
        if task == TaskKind::Lift && gripper_index.is_none() {
            return Err(format!(
                "the lift expert needs a [gripper] table in the robot config of {}",
                model.urdf_path.display()
            ));
        }
        Ok(Self {
            model,
            task,
            control_period: (1.0 / control_rate_hz) as f32,
            command: None,
            waypoints: Vec::new(),
            table_height,
            goal_for: None,
            gripper_index,
            speed: 0.0,
            lift_phase: LiftPhase::Approach,
            phase_ticks: 0,
            grasp: None,
            cube_start: None,
        })
    }

    /// Forgets the current episode.
    pub fn reset(&mut self) {
        self.command = None;
        self.waypoints.clear();
        self.goal_for = None;
        self.speed = 0.0;
        self.lift_phase = LiftPhase::Approach;
        self.phase_ticks = 0;
        self.grasp = None;
        self.cube_start = None;
    }

    /// Names of the stages `stage` reports for `task`, in order.
    /// A colour task's stages are its base task's.
    pub fn stage_names(task: TaskKind) -> &'static [&'static str] {
        match task.base() {
            TaskKind::Reach => &["approach", "settle"],
            TaskKind::Lift => &["approach", "grasp", "lift", "hold"],
            _ => &[],
        }
    }

    /// The stage of the task the last command belongs to (an index into
    /// `stage_names`), the annotation progress models train on: reach moves
    /// along its path (approach) then holds at the goal (settle); lift
    /// approaches and descends (approach), closes (grasp), raises (lift)
    /// and holds up (hold).
    pub fn stage(&self) -> u32 {
        // The path keeps its goal as the last waypoint: arrived means no
        // travel left to it (to a tenth of a milliradian).
        let moving = match &self.command {
            Some(command) if !self.waypoints.is_empty() => {
                let path: Vec<&[f32]> = self.waypoints.iter().map(Vec::as_slice).collect();
                arm_travel(self.gripper_index, command, &path) > 1e-4
            }
            _ => false,
        };
        match self.task {
            TaskKind::Reach => u32::from(!moving),
            TaskKind::Lift => match self.lift_phase {
                LiftPhase::Approach | LiftPhase::Descend => 0,
                LiftPhase::Grasp => 1,
                LiftPhase::Raise if moving => 2,
                LiftPhase::Raise => 3,
            },
            _ => 0,
        }
    }

    pub fn act(&mut self, observation: &Observation, spec: &ObservationSpec) -> Action {
        let field = |name: &str| {
            spec.field(&observation.state, name)
                .unwrap_or_else(|| panic!("the observation has no `{name}` field"))
        };
        let q = field("joint_position").to_vec();
        let (gripper_goal, speed) = match self.task {
            TaskKind::Reach => {
                let target: [f32; 3] = field("target").try_into().expect("3-D target");
                self.plan_reach(&q, target);
                (None, EXPERT_SPEED)
            }
            TaskKind::Lift => {
                let cube: [f32; 3] = field("cube_position").try_into().expect("3-D cube");
                let rotation: [f32; 4] = field("cube_orientation")
                    .try_into()
                    .expect("cube quaternion");
                let (gripper, speed) = self.lift_goal(&q, cube, rotation);
                (Some(gripper), speed)
            }
            _ => unreachable!("new keeps the base task, never the pendulum"),
        };
        if self.command.is_none() {
            self.command = Some(q.clone());
        }
        self.follow_path(speed);
        let command = self.command.as_mut().expect("set above");
        if let (Some(index), Some(goal)) = (self.gripper_index, gripper_goal) {
            let step = EXPERT_SPEED * self.control_period;
            command[index] += (goal - command[index]).clamp(-step, step);
        }
        for (c, joint) in command.iter_mut().zip(&self.model.joints) {
            *c = c.clamp(joint.lower, joint.upper);
        }
        Action::new(command.clone())
    }

    /// Plans the way to joints that put the end effector at `target`: once
    /// per target, from the measured pose, keeping non-chain joints where they
    /// are. Of the IK solutions and the ways to them that keep the arm above
    /// the table (straight, or through one or two via poses), the plan is
    /// the one that arrives first; only when there is none does the end
    /// effector detour over the target in Cartesian space.
    fn plan_reach(&mut self, q: &[f32], target: [f32; 3]) {
        if self.goal_for != Some(target) {
            let candidates = self.solve_all(q, target, IK_CANDIDATES);
            self.waypoints = match self.fastest_clear_path(q, &candidates) {
                Some(path) => path,
                None => {
                    // Up, across and down in Cartesian space, densely, so the
                    // end effector stays on that path between waypoints.
                    let start = self.model.ee_position(q);
                    let safe = start[2].max(target[2]) + APPROACH_HEIGHT;
                    let corners = [
                        [start[0], start[1], safe],
                        [target[0], target[1], safe],
                        target,
                    ];
                    self.cartesian_path(q, start, &corners)
                }
            };
            self.goal_for = Some(target);
        }
    }

    /// Travel along `path` from `q` (see `arm_travel`).
    fn travel(&self, q: &[f32], path: &[&[f32]]) -> f32 {
        arm_travel(self.gripper_index, q, path)
    }

    /// The quickest way from `q` to one of `goals` that keeps the arm above
    /// the table: straight, or through one or two via poses. The via poses
    /// are the staged ones (some joints to their goal first) and fixed
    /// spreads across the joint ranges and around the goal; every segment is
    /// a straight line in joint space, which is what the synchronised
    /// command follows. Pairs of vias are checked cheapest first, at most
    /// `PAIR_CHECKS` per plan, which bounds the time a plan takes.
    fn fastest_clear_path(&self, q: &[f32], goals: &[Vec<f32>]) -> Option<Vec<Vec<f32>>> {
        let table = self.table_height;
        let clear = |a: &[f32], b: &[f32]| self.path_clears(a, b, table);
        let mut best: Option<(f32, Vec<Vec<f32>>)> = None;
        let beats = |best: &Option<(f32, Vec<Vec<f32>>)>, time: f32| {
            best.as_ref().is_none_or(|(t, _)| time < *t)
        };
        for goal in goals {
            let time = self.travel(q, &[goal]);
            if beats(&best, time) && clear(q, goal) {
                best = Some((time, vec![goal.clone()]));
            }
        }
        // The spread and which of it the start sees, worked out only when
        // some goal has no straight way.
        let mut spread: Option<Vec<(Vec<f32>, bool)>> = None;
        let mut pair_checks = PAIR_CHECKS;
        for goal in goals {
            if !beats(&best, self.travel(q, &[goal])) {
                continue;
            }
            let spread = spread.get_or_insert_with(|| {
                self.spread_vias(q, None)
                    .map(|via| {
                        let seen = clear(q, &via);
                        (via, seen)
                    })
                    .collect()
            });
            let goal_vias: Vec<(Vec<f32>, bool)> = self
                .staged_vias(q, goal)
                .chain(self.spread_vias(q, Some(goal)))
                .map(|via| {
                    let seen = clear(q, &via);
                    (via, seen)
                })
                .collect();
            let vias: Vec<&(Vec<f32>, bool)> = goal_vias.iter().chain(spread.iter()).collect();
            // Which vias see the goal, checked only where they could help.
            let sees_goal: Vec<bool> = vias
                .iter()
                .map(|(via, _)| beats(&best, self.travel(q, &[via, goal])) && clear(via, goal))
                .collect();
            for ((via, seen), &to_goal) in vias.iter().zip(&sees_goal) {
                let time = self.travel(q, &[via, goal]);
                if *seen && to_goal && beats(&best, time) {
                    best = Some((time, vec![via.clone(), goal.clone()]));
                }
            }
            // Two vias: pairs by travel, the first clear pair is the best.
            let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
            for (i, (first, seen)) in vias.iter().enumerate() {
                if !seen {
                    continue;
                }
                for (j, (second, _)) in vias.iter().enumerate() {
                    if !sees_goal[j] || i == j {
                        continue;
                    }
                    let time = self.travel(q, &[first, second, goal]);
                    if beats(&best, time) {
                        pairs.push((time, i, j));
                    }
                }
            }
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            for &(time, i, j) in &pairs {
                if pair_checks == 0 {
                    break;
                }
                pair_checks -= 1;
                if clear(&vias[i].0, &vias[j].0) {
                    best = Some((
                        time,
                        vec![vias[i].0.clone(), vias[j].0.clone(), goal.clone()],
                    ));
                    break;
                }
            }
        }
        best.map(|(_, path)| path)
    }

    /// Via poses that move some of the joints to their goal first, fewer
    /// joints first.
    fn staged_vias<'a>(
        &self,
        q: &'a [f32],
        goal: &'a [f32],
    ) -> impl Iterator<Item = Vec<f32>> + 'a {
        let moving: Vec<usize> = (0..q.len()).filter(|&i| q[i] != goal[i]).collect();
        let mut subsets: Vec<u32> = if moving.len() > 12 {
            Vec::new()
        } else {
            (1..(1u32 << moving.len()) - 1).collect()
        };
        subsets.sort_by_key(|m| (m.count_ones(), *m));
        subsets.into_iter().map(move |mask| {
            let mut via = q.to_vec();
            for (bit, &joint) in moving.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    via[joint] = goal[joint];
                }
            }
            via
        })
    }

    /// `VIA_SAMPLES` via poses spread evenly over the ranges of the joints
    /// that move the end effector, or with `around`, over the middle half of
    /// the ranges centred on it (the last stretch to a goal tucked near the
    /// table is the hard one to clear); other joints stay at `q`.
    fn spread_vias<'a>(
        &'a self,
        q: &'a [f32],
        around: Option<&'a [f32]>,
    ) -> impl Iterator<Item = Vec<f32>> + 'a {
        let movable = self.model.moves_end_effector();
        let (lower, upper) = self.ik_limits(LIMIT_MARGIN);
        (1..=VIA_SAMPLES).map(move |k| {
            let u = quasi_random(k, q.len());
            (0..q.len())
                .map(|j| {
                    if !movable[j] {
                        return q[j];
                    }
                    let range = upper[j] - lower[j];
                    let value = match around {
                        None => lower[j] + range * u[j],
                        Some(centre) => centre[j] as f64 + range * (u[j] - 0.5) * 0.5,
                    };
                    value.clamp(lower[j], upper[j]) as f32
                })
                .collect()
        })
    }

    /// Moves the command along the waypoints, the arm's joints in step (so
    /// the arm follows the straight joint-space segments the planner
    /// checked) at up to `max_speed` for the joint that moves most, speeding
    /// up and slowing down at `EXPERT_ACCELERATION` so that stopping at the
    /// end does not fling a heavy arm against its weaker wrist joints.
    fn follow_path(&mut self, max_speed: f32) {
        let gripper = self.gripper_index;
        let dt = self.control_period;
        let (Some(command), false) = (self.command.as_mut(), self.waypoints.is_empty()) else {
            return;
        };
        let remaining = {
            let path: Vec<&[f32]> = self.waypoints.iter().map(Vec::as_slice).collect();
            arm_travel(gripper, command, &path)
        };
        self.speed = (self.speed + EXPERT_ACCELERATION * dt)
            .min(max_speed)
            .min((2.0 * EXPERT_ACCELERATION * remaining).sqrt());
        let mut step = self.speed * dt;
        loop {
            let next = &self.waypoints[0];
            let distance = arm_travel(gripper, command, &[next]);
            let fraction = if distance <= step {
                1.0
            } else {
                step / distance
            };
            for (i, (c, w)) in command.iter_mut().zip(next).enumerate() {
                if Some(i) != gripper {
                    *c += fraction * (w - *c);
                }
            }
            if fraction < 1.0 || self.waypoints.len() == 1 {
                break;
            }
            step -= distance;
            self.waypoints.remove(0);
        }
    }

    /// Whether the arm's command has reached `pose`.
    fn command_at(&self, pose: &[f32]) -> bool {
        self.command.as_ref().is_some_and(|command| {
            command
                .iter()
                .zip(pose)
                .enumerate()
                .all(|(i, (c, w))| Some(i) == self.gripper_index || (c - w).abs() < 1e-3)
        })
    }

    /// Whether the last waypoint is commanded and the measured arm has
    /// caught up with it.
    fn arrived(&self, q: &[f32]) -> bool {
        self.waypoints.len() == 1
            && self.command_at(&self.waypoints[0])
            && q.iter()
                .zip(&self.waypoints[0])
                .enumerate()
                .all(|(i, (m, w))| Some(i) == self.gripper_index || (m - w).abs() < SETTLED)
    }

    /// Joint waypoints every `CARTESIAN_STEP` metres along the polyline from
    /// `start` through `corners`, each solved from the one before.
    fn cartesian_path(&self, q: &[f32], start: [f32; 3], corners: &[[f32; 3]]) -> Vec<Vec<f32>> {
        let mut path = Vec::new();
        let mut previous_point = start;
        let mut previous_q = q.to_vec();
        for &corner in corners {
            let length = crate::tasks::distance(&previous_point, &corner);
            let pieces = (length / CARTESIAN_STEP).ceil().max(1.0) as usize;
            for k in 1..=pieces {
                let t = k as f32 / pieces as f32;
                let point =
                    [0, 1, 2].map(|i| previous_point[i] + t * (corner[i] - previous_point[i]));
                previous_q = self.solve(&previous_q, point);
                path.push(previous_q.clone());
            }
            previous_point = corner;
        }
        path
    }

    /// Whether the arm's joints and end effector stay above the table along the straight
    /// joint-space path from `from` to `to`.
    fn path_clears(&self, from: &[f32], to: &[f32], table: f32) -> bool {
        let floor = (table + PATH_CLEARANCE) as f64;
        let mut q = vec![0.0; from.len()];
        // Coarse to fine (1/2, then 1/4 and 3/4, …): a path that dips
        // usually dips mid-way, so most rejections take a check or two.
        let mut denominator = 2;
        while denominator <= PATH_CHECKS {
            for numerator in (1..denominator).step_by(2) {
                let t = numerator as f32 / denominator as f32;
                for ((v, a), b) in q.iter_mut().zip(from).zip(to) {
                    *v = (a + t * (b - a)) as f64;
                }
                if self.model.chain.lowest_height(&q) < floor {
                    return false;
                }
            }
            denominator *= 2;
        }
        self.model
            .chain
            .lowest_height(&to.iter().map(|&v| v as f64).collect::<Vec<_>>())
            >= floor
    }

    /// The IK solution from the measured pose, or the best of the restarts.
    fn solve(&self, q: &[f32], target: [f32; 3]) -> Vec<f32> {
        self.solve_all(q, target, 1).swap_remove(0)
    }

    /// Up to `wanted` converged IK solutions: from the measured pose first,
    /// then from deterministic restarts spread across the joint ranges (a
    /// different branch of the arm may be the one that clears the table).
    /// Never empty: without a converged solution, the closest attempt.
    fn solve_all(&self, q: &[f32], target: [f32; 3], wanted: usize) -> Vec<Vec<f32>> {
        let target = Vector3::new(target[0] as f64, target[1] as f64, target[2] as f64);
        let (solutions, closest) = self.ik_attempts(q, target, &[], wanted, LIMIT_MARGIN);
        if !solutions.is_empty() {
            return solutions;
        }
        // The target may need a joint right at its limit.
        let (mut solutions, at_limits) = self.ik_attempts(q, target, &[], wanted, 0.0);
        if solutions.is_empty() {
            let closest = if at_limits.error < closest.error {
                at_limits
            } else {
                closest
            };
            solutions.push(to_f32(&closest.q));
        }
        solutions
    }

    /// The joint limits the IK keeps within, `margin` inside the URDF's.
    fn ik_limits(&self, margin: f64) -> (Vec<f64>, Vec<f64>) {
        // A short range (a finger's few centimetres) keeps most of itself.
        let margin = |lo: f64, hi: f64| margin.min(0.25 * (hi - lo));
        self.model
            .lower()
            .into_iter()
            .zip(self.model.upper())
            .map(|(lo, hi)| (lo + margin(lo, hi), hi - margin(lo, hi)))
            .unzip()
    }

    /// One IK solve for `target` and `axes` from `seed`.
    fn ik(&self, seed: &[f32], target: Vector3<f64>, axes: &[AxisGoal]) -> IkSolution {
        self.ik_within(seed, target, axes, LIMIT_MARGIN)
    }

    /// One IK solve from `seed`, `margin` inside the joint limits.
    fn ik_within(
        &self,
        seed: &[f32],
        target: Vector3<f64>,
        axes: &[AxisGoal],
        margin: f64,
    ) -> IkSolution {
        let (lower, upper) = self.ik_limits(margin);
        let seed: Vec<f64> = seed
            .iter()
            .zip(lower.iter().zip(&upper))
            .map(|(&v, (&lo, &hi))| (v as f64).clamp(lo, hi))
            .collect();
        self.model.chain.solve_pose(
            target,
            axes,
            &seed,
            &lower,
            &upper,
            &self.model.moves_end_effector(),
            &IkOptions::default(),
        )
    }

    /// Converged IK solutions (up to `wanted`) from the measured pose and
    /// from restarts spread across the joint ranges, and the closest attempt.
    fn ik_attempts(
        &self,
        q: &[f32],
        target: Vector3<f64>,
        axes: &[AxisGoal],
        wanted: usize,
        margin: f64,
    ) -> (Vec<Vec<f32>>, IkSolution) {
        let (lower, upper) = self.ik_limits(margin);
        let movable = self.model.moves_end_effector();
        let mut solutions = Vec::new();
        let mut closest: Option<IkSolution> = None;
        let weight = IkOptions::default().orientation_weight;
        let score = |s: &IkSolution| s.error + weight * s.angle_error;
        for restart in 0..IK_SEEDS {
            let seed: Vec<f32> = if restart == 0 {
                q.to_vec()
            } else {
                let u = quasi_random(restart, q.len());
                (0..q.len())
                    .map(|j| {
                        if !movable[j] {
                            return q[j];
                        }
                        (lower[j] + (upper[j] - lower[j]) * u[j]) as f32
                    })
                    .collect()
            };
            let attempt = self.ik_within(&seed, target, axes, margin);
            if attempt.converged {
                solutions.push(to_f32(&attempt.q));
            }
            if closest.as_ref().is_none_or(|c| score(&attempt) < score(c)) {
                closest = Some(attempt);
            }
            if solutions.len() >= wanted {
                break;
            }
        }
        (solutions, closest.expect("at least one attempt"))
    }

    /// The lift expert's gripper target and joint speed for this tick, its
    /// path planned: a top-down
    /// grasp planned from the observed cube, approached from above with the
    /// gripper open, closed in place, raised straight up and held. If the
    /// cube did not come up with the gripper, it plans again.
    fn lift_goal(&mut self, q: &[f32], cube: [f32; 3], rotation: [f32; 4]) -> (f32, f32) {
        let gripper = self.model.config.gripper.clone().expect("checked in new");
        let cube = Vector3::new(cube[0] as f64, cube[1] as f64, cube[2] as f64);
        let rotation = UnitQuaternion::from_quaternion(Quaternion::new(
            rotation[3] as f64,
            rotation[0] as f64,
            rotation[1] as f64,
            rotation[2] as f64,
        ));
        let start = *self.cube_start.get_or_insert(cube);
        let period = self.control_period;
        let seconds = |s: f32| (s / period).round() as u32;
        self.phase_ticks += 1;
        match self.lift_phase {
            LiftPhase::Approach => {
                // Plan on entry, and again now and then while no plan works.
                if self.phase_ticks == 1
                    || (self.grasp.is_none() && self.phase_ticks.is_multiple_of(10))
                {
                    self.plan_approach(q, cube, rotation);
                }
                if let Some(plan) = &self.grasp
                    && (self.arrived(q) || self.phase_ticks > seconds(PHASE_TIMEOUT_S))
                {
                    self.waypoints =
                        self.cartesian_pose_path(&plan.q_above, plan.above, plan.grasp, &plan.axes);
                    self.enter(LiftPhase::Descend);
                }
            }
            LiftPhase::Descend => {
                if self.arrived(q) || self.phase_ticks > seconds(PHASE_TIMEOUT_S) {
                    self.enter(LiftPhase::Grasp);
                }
            }
            LiftPhase::Grasp => {
                if self.phase_ticks > seconds(GRASP_S) {
                    let plan = self.grasp.as_ref().expect("planned before descending");
                    let top = plan.grasp + Vector3::z() * RAISE_HEIGHT as f64;
                    let from = self.command.clone().unwrap_or_else(|| plan.q_grasp.clone());
                    self.waypoints = self.cartesian_pose_path(&from, plan.grasp, top, &plan.axes);
                    self.enter(LiftPhase::Raise);
                }
            }
            LiftPhase::Raise => {
                let lifted = cube.z - start.z >= 0.5 * crate::tasks::LIFT_HEIGHT as f64;
                if (self.arrived(q) || self.phase_ticks > seconds(PHASE_TIMEOUT_S)) && !lifted {
                    // The cube stayed behind: open and try again from here.
                    self.enter(LiftPhase::Approach);
                    self.phase_ticks = 1;
                    self.plan_approach(q, cube, rotation);
                }
            }
        }
        let (open, speed) = match self.lift_phase {
            LiftPhase::Approach => (true, EXPERT_SPEED),
            LiftPhase::Descend => (true, CAREFUL_SPEED),
            LiftPhase::Grasp => (false, CAREFUL_SPEED),
            LiftPhase::Raise => (false, CAREFUL_SPEED),
        };
        (if open { gripper.open } else { gripper.closed }, speed)
    }

    /// Plans a grasp of the cube where it is now and the way to the pose
    /// above it; without a grasp, the arm stays where it is.
    fn plan_approach(&mut self, q: &[f32], cube: Vector3<f64>, rotation: UnitQuaternion<f64>) {
        self.grasp = self.plan_grasp(q, cube, rotation);
        self.waypoints = match &self.grasp {
            Some(plan) => self.joint_path(q, &plan.q_above),
            None => vec![q.to_vec()],
        };
    }

    fn enter(&mut self, phase: LiftPhase) {
        self.lift_phase = phase;
        self.phase_ticks = 0;
    }

    /// Waypoints from `q` to `goal` in joint space: straight when that keeps
    /// the arm above the table, else through the quickest clear via pose.
    fn joint_path(&self, q: &[f32], goal: &[f32]) -> Vec<Vec<f32>> {
        self.fastest_clear_path(q, &[goal.to_vec()])
            .unwrap_or_else(|| vec![goal.to_vec()])
    }

    /// Joint waypoints every `CARTESIAN_STEP` metres along the straight line
    /// from `from` to `to` with the orientation `axes`, each solved from the
    /// one before so the arm stays on one branch.
    fn cartesian_pose_path(
        &self,
        q: &[f32],
        from: Vector3<f64>,
        to: Vector3<f64>,
        axes: &[AxisGoal],
    ) -> Vec<Vec<f32>> {
        let pieces = ((to - from).norm() / CARTESIAN_STEP as f64).ceil().max(1.0) as usize;
        let mut previous = q.to_vec();
        (1..=pieces)
            .map(|k| {
                let point = from + (to - from) * (k as f64 / pieces as f64);
                previous = to_f32(&self.ik(&previous, point, axes).q);
                previous.clone()
            })
            .collect()
    }

    /// A grasp of the cube with the jaws closing across a pair of its side
    /// faces and the fingers pointing down, or leaning as little as the arm
    /// needs; among those, the one whose pose above the cube is nearest to
    /// `q` in joint space.
    fn plan_grasp(
        &self,
        q: &[f32],
        cube: Vector3<f64>,
        rotation: UnitQuaternion<f64>,
    ) -> Option<GraspPlan> {
        let gripper = self.model.config.gripper.as_ref()?;
        let vector = |v: [f32; 3]| Vector3::new(v[0] as f64, v[1] as f64, v[2] as f64);
        let approach_local = vector(gripper.approach_axis).try_normalize(1e-9)?;
        let closing_local = vector(gripper.closing_axis);
        let closing_local = (closing_local - approach_local * closing_local.dot(&approach_local))
            .try_normalize(1e-9)?;
        let offset = vector(gripper.grasp_offset);
        let q64: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        // Lean the fingers in the vertical plane through the arm's base and
        // the cube, where a serial arm's wrist can lean them.
        let base = self.model.chain.frame_positions(&q64)[0];
        let radial = Vector3::new(cube.x - base.x, cube.y - base.y, 0.0)
            .try_normalize(1e-9)
            .unwrap_or_else(Vector3::x);
        let lean_axis = nalgebra::Unit::new_normalize(Vector3::z().cross(&radial));
        // The side faces, whichever face the cube rests on.
        let faces: Vec<Vector3<f64>> = [Vector3::x(), Vector3::y(), Vector3::z()]
            .iter()
            .flat_map(|axis| [rotation * axis, -(rotation * axis)])
            .filter_map(|normal| {
                let horizontal = Vector3::new(normal.x, normal.y, 0.0);
                (horizontal.norm() > 0.5).then(|| horizontal.normalize())
            })
            .collect();
        let movable = self.model.moves_end_effector();
        let distance = |a: &[f32], b: &[f32]| -> f32 {
            a.iter()
                .zip(b)
                .zip(&movable)
                .filter(|&(_, &m)| m)
                .map(|((x, y), _)| (x - y).abs())
                .sum()
        };
        for lean in GRASP_LEANS {
            let approach =
                UnitQuaternion::from_axis_angle(&lean_axis, lean.to_radians()) * -Vector3::z();
            let mut best: Option<(f32, GraspPlan)> = None;
            for face in &faces {
                let Some(closing) = (face - approach * face.dot(&approach)).try_normalize(1e-6)
                else {
                    continue;
                };
                let world =
                    nalgebra::Matrix3::from_columns(&[approach, closing, approach.cross(&closing)]);
                let local = nalgebra::Matrix3::from_columns(&[
                    approach_local,
                    closing_local,
                    approach_local.cross(&closing_local),
                ]);
                let orientation = world * local.transpose();
                let grasp = cube - orientation * offset;
                let above = grasp - approach * GRASP_HOVER as f64;
                let axes = [
                    AxisGoal {
                        local: approach_local,
                        world: approach,
                    },
                    AxisGoal {
                        local: closing_local,
                        world: closing,
                    },
                ];
                let (solutions, _) = self.ik_attempts(q, grasp, &axes, IK_CANDIDATES, LIMIT_MARGIN);
                for q_grasp in solutions {
                    let attempt = self.ik(&q_grasp, above, &axes);
                    if !attempt.converged {
                        continue;
                    }
                    let q_above = to_f32(&attempt.q);
                    if self.model.lowest_point(&q_above) < self.table_height + PATH_CLEARANCE {
                        continue;
                    }
                    let cost = distance(q, &q_above);
                    if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                        best = Some((
                            cost,
                            GraspPlan {
                                axes,
                                grasp,
                                above,
                                q_grasp,
                                q_above,
                            },
                        ));
                    }
                }
            }
            if let Some((_, plan)) = best {
                return Some(plan);
            }
        }
        None
    }
}

/// Point `k` of Roberts' additive recurrence in the unit `dims`-cube (the
/// R_d sequence, "The unreasonable effectiveness of quasirandom
/// sequences", 2018): x_k = frac(½ + k·α), αⱼ = φ⁻⁽ʲ⁺¹⁾ with φ the root of
/// x^(d+1) = x + 1. Evenly spread for any number of points, and fixed.
fn quasi_random(k: usize, dims: usize) -> Vec<f64> {
    let mut phi: f64 = 2.0;
    for _ in 0..30 {
        phi = (1.0 + phi).powf(1.0 / (dims as f64 + 1.0));
    }
    (0..dims)
        .map(|j| (0.5 + k as f64 * phi.powi(-(j as i32 + 1))).fract())
        .collect()
}

/// How far the synchronised command travels along straight segments
/// through `path` from `q` (rad): the largest move of an arm joint (any
/// but `gripper`) in each segment, summed. Travel over the joint speed is
/// the time the path takes.
fn arm_travel(gripper: Option<usize>, q: &[f32], path: &[&[f32]]) -> f32 {
    let mut from = q;
    let mut total = 0.0;
    for &to in path {
        total += from
            .iter()
            .zip(to)
            .enumerate()
            .filter(|&(i, _)| Some(i) != gripper)
            .map(|(_, (a, b))| (a - b).abs())
            .fold(0.0, f32::max);
        from = to;
    }
    total
}

fn to_f32(q: &[f64]) -> Vec<f32> {
    q.iter().map(|&v| v as f32).collect()
}

/// Swing-up and balance for Pendulum-v1: energy pumping far from upright
/// (Åström & Furuta 2000, "Swinging up a pendulum by energy control"),
/// a PD controller near it. A reference for what a learned policy should
/// reach, not a learner.
pub struct PendulumExpert;

impl PendulumExpert {
    pub fn act(&self, observation: &Observation) -> Action {
        use crate::pendulum::Pendulum;
        let (cos, sin, theta_dot) = (
            observation.state[0] as f64,
            observation.state[1] as f64,
            observation.state[2] as f64,
        );
        let theta = sin.atan2(cos);
        let max = Pendulum::MAX_TORQUE;
        let torque = if cos > 0.85 {
            -10.0 * theta - 2.0 * theta_dot
        } else {
            // Energy relative to upright at rest, per unit m·l²; pump in
            // the direction of motion while below it.
            let energy = 0.5 * theta_dot * theta_dot / 3.0
                + Pendulum::GRAVITY / (2.0 * Pendulum::LENGTH) * (cos - 1.0);
            let direction = if theta_dot == 0.0 {
                1.0
            } else {
                theta_dot.signum()
            };
            -energy.signum() * direction * max
        };
        Action::new(vec![torque.clamp(-max, max) as f32])
    }
}
