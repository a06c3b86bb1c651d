//! Scripted experts: inverse kinematics over the URDF chain plus the
//! servos' own position control. They read only what a policy reads (the
//! observation), so they can also play the teleoperator over the wire.

use crate::arm_model::ArmModel;
use crate::kinematics::IkOptions;
use crate::tasks::TaskKind;
use cerebellum_core::{Action, Observation, ObservationSpec};
use nalgebra::Vector3;
use std::sync::Arc;

/// Keeps IK goals this far inside the joint limits (rad), so the servo is
/// not pressed against a stop.
const LIMIT_MARGIN: f64 = 0.02;
/// Joint speed of the expert's commanded trajectory (rad/s).
const EXPERT_SPEED: f32 = 3.0;
/// Points checked along a joint-space path for table clearance.
const PATH_CHECKS: usize = 20;
/// How far above the table the end effector must stay on a direct path (m).
const PATH_CLEARANCE: f32 = 0.02;
/// A detour passes this far above the higher of start and target (m).
const APPROACH_HEIGHT: f32 = 0.05;
/// IK restarts from spread-out seeds after the one from the measured pose.
const IK_RESTARTS: usize = 8;
/// Spacing of the joint waypoints along a Cartesian detour (m).
const CARTESIAN_STEP: f32 = 0.02;

/// Stages of the lift expert, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LiftPhase {
    Approach,
    Descend,
    Grasp,
    Raise,
}

pub struct ScriptedExpert {
    model: Arc<ArmModel>,
    task: TaskKind,
    control_period: f32,
    command: Option<Vec<f32>>,
    waypoints: Vec<Vec<f32>>,
    table_height: f32,
    goal_for: Option<[f32; 3]>,
    lift_phase: LiftPhase,
    phase_ticks: u32,
}

impl ScriptedExpert {
    /// `table_height` is the height of the table top (m), which the
    /// planned end-effector path keeps clear of.
    pub fn new(
        model: Arc<ArmModel>,
        task: TaskKind,
        control_rate_hz: f64,
        table_height: f32,
    ) -> Result<Self, String> {
        if task == TaskKind::Pendulum {
            return Err("there is no scripted expert for the pendulum".into());
        }
        if task == TaskKind::Lift && model.config.gripper.is_none() {
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
            lift_phase: LiftPhase::Approach,
            phase_ticks: 0,
        })
    }

    /// Forgets the current episode.
    pub fn reset(&mut self) {
        self.command = None;
        self.waypoints.clear();
        self.goal_for = None;
        self.lift_phase = LiftPhase::Approach;
        self.phase_ticks = 0;
    }

    pub fn act(&mut self, observation: &Observation, spec: &ObservationSpec) -> Action {
        let field = |name: &str| {
            spec.field(&observation.state, name)
                .unwrap_or_else(|| panic!("the observation has no `{name}` field"))
        };
        let q = field("joint_position").to_vec();
        let goal = match self.task {
            TaskKind::Reach => {
                let target: [f32; 3] = field("target").try_into().expect("3-D target");
                self.ik_goal(&q, target)
            }
            TaskKind::Lift => {
                let cube: [f32; 3] = field("cube_position").try_into().expect("3-D cube");
                self.lift_goal(&q, cube)
            }
            TaskKind::Pendulum => unreachable!("checked in new"),
        };
        // Move the command toward the goal at a bounded joint speed.
        let command = self.command.get_or_insert_with(|| q.clone());
        let step = EXPERT_SPEED * self.control_period;
        for ((c, g), joint) in command.iter_mut().zip(&goal).zip(&self.model.joints) {
            *c = (*c + (g - *c).clamp(-step, step)).clamp(joint.lower, joint.upper);
        }
        Action::new(command.clone())
    }

    /// Joint goal putting the end effector at `target`; planned once per
    /// target, from the measured pose, keeping non-chain joints where they
    /// are. When the straight joint-space path would drag the end effector
    /// through the table, the plan goes through a point above the target.
    fn ik_goal(&mut self, q: &[f32], target: [f32; 3]) -> Vec<f32> {
        if self.goal_for != Some(target) {
            let table = self.table_height;
            let candidates = self.solve_all(q, target, IK_RESTARTS + 1);
            // Prefer a solution with a direct clear path, then one with a
            // staged path, then the first one with a Cartesian detour.
            let direct = candidates.iter().find(|g| self.path_clears(q, g, table));
            let staged = || {
                candidates
                    .iter()
                    .find_map(|g| Some((self.staged_via(q, g, table)?, g.clone())))
            };
            self.waypoints = if let Some(goal) = direct {
                vec![goal.clone()]
            } else if let Some((via, goal)) = staged() {
                vec![via, goal]
            } else {
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
            };
            self.goal_for = Some(target);
        }
        // Advance to the next waypoint once the command has reached this one.
        if self.waypoints.len() > 1
            && let Some(command) = &self.command
            && command
                .iter()
                .zip(&self.waypoints[0])
                .all(|(c, w)| (c - w).abs() < 1e-3)
        {
            self.waypoints.remove(0);
        }
        self.waypoints[0].clone()
    }

    /// A via pose that moves some joints to their goal first and the rest
    /// after, with both straight stretches clear of the table; subsets with
    /// fewer joints are tried first.
    fn staged_via(&self, q: &[f32], goal: &[f32], table: f32) -> Option<Vec<f32>> {
        let movable: Vec<usize> = (0..q.len()).filter(|&i| q[i] != goal[i]).collect();
        if movable.len() > 12 {
            return None;
        }
        let mut subsets: Vec<u32> = (1..(1u32 << movable.len()) - 1).collect();
        subsets.sort_by_key(|m| (m.count_ones(), *m));
        subsets.into_iter().find_map(|mask| {
            let mut via = q.to_vec();
            for (bit, &joint) in movable.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    via[joint] = goal[joint];
                }
            }
            (self.path_clears(q, &via, table) && self.path_clears(&via, goal, table)).then_some(via)
        })
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
        (1..=PATH_CHECKS).all(|k| {
            let t = k as f32 / PATH_CHECKS as f32;
            let q: Vec<f32> = from.iter().zip(to).map(|(a, b)| a + t * (b - a)).collect();
            self.model.lowest_point(&q) >= table + PATH_CLEARANCE
        })
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
        let model = &self.model;
        // A short range (a finger's few centimetres) keeps most of itself.
        let margin = |lo: f64, hi: f64| LIMIT_MARGIN.min(0.25 * (hi - lo));
        let (lower, upper): (Vec<f64>, Vec<f64>) = model
            .lower()
            .into_iter()
            .zip(model.upper())
            .map(|(lo, hi)| (lo + margin(lo, hi), hi - margin(lo, hi)))
            .unzip();
        let movable = model.moves_end_effector();
        let target = Vector3::new(target[0] as f64, target[1] as f64, target[2] as f64);
        let start: Vec<f64> = q
            .iter()
            .zip(lower.iter().zip(&upper))
            .map(|(&v, (&lo, &hi))| (v as f64).clamp(lo, hi))
            .collect();
        let mut solutions = Vec::new();
        let mut closest: Option<crate::kinematics::IkSolution> = None;
        for restart in 0..=IK_RESTARTS {
            let seed: Vec<f64> = if restart == 0 {
                start.clone()
            } else {
                (0..start.len())
                    .map(|j| {
                        if !movable[j] {
                            return start[j];
                        }
                        // Golden-ratio sequence per joint: well spread, fixed.
                        let u = (restart as f64 * 0.618_033_988_75 * (j + 1) as f64 + 0.5) % 1.0;
                        lower[j] + (upper[j] - lower[j]) * u
                    })
                    .collect()
            };
            let attempt = model.chain.solve_position(
                target,
                &seed,
                &lower,
                &upper,
                &movable,
                &IkOptions::default(),
            );
            if attempt.converged {
                solutions.push(attempt.q.iter().map(|&v| v as f32).collect());
                if solutions.len() >= wanted {
                    break;
                }
            } else if closest.as_ref().is_none_or(|c| attempt.error < c.error) {
                closest = Some(attempt);
            }
        }
        if solutions.is_empty() {
            let closest = closest.expect("at least one attempt");
            solutions.push(closest.q.iter().map(|&v| v as f32).collect());
        }
        solutions
    }

    fn lift_goal(&mut self, q: &[f32], cube: [f32; 3]) -> Vec<f32> {
        let gripper = self.model.config.gripper.clone().expect("checked in new");
        let gripper_index = self
            .model
            .joint_index(&gripper.joint)
            .expect("the gripper joint is actuated");
        self.phase_ticks += 1;
        let ticks_per_second = 1.0 / self.control_period;
        let (offset, open, duration_s) = match self.lift_phase {
            LiftPhase::Approach => (0.06, true, 1.0),
            LiftPhase::Descend => (0.0, true, 0.8),
            LiftPhase::Grasp => (0.0, false, 0.5),
            LiftPhase::Raise => (0.12, false, f32::INFINITY),
        };
        let hover = match self.lift_phase {
            // Hold the grasp height fixed while closing and raise relative
            // to where the cube was grasped.
            LiftPhase::Grasp | LiftPhase::Raise => self.goal_for.unwrap_or(cube),
            _ => cube,
        };
        let target = [hover[0], hover[1], hover[2] + offset];
        let mut goal = if self.lift_phase == LiftPhase::Raise || self.lift_phase == LiftPhase::Grasp
        {
            self.ik_goal(q, target)
        } else {
            let goal = self.solve(q, target);
            self.goal_for = Some(cube);
            self.waypoints = vec![goal.clone()];
            goal
        };
        goal[gripper_index] = if open { gripper.open } else { gripper.closed };
        if self.phase_ticks as f32 >= duration_s * ticks_per_second {
            self.phase_ticks = 0;
            self.lift_phase = match self.lift_phase {
                LiftPhase::Approach => LiftPhase::Descend,
                LiftPhase::Descend => LiftPhase::Grasp,
                LiftPhase::Grasp => LiftPhase::Raise,
                LiftPhase::Raise => LiftPhase::Raise,
            };
        }
        goal
    }
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
