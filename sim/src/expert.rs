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
    goal: Option<Vec<f32>>,
    goal_for: Option<[f32; 3]>,
    lift_phase: LiftPhase,
    phase_ticks: u32,
}

impl ScriptedExpert {
    pub fn new(model: Arc<ArmModel>, task: TaskKind, control_rate_hz: f64) -> Result<Self, String> {
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
            goal: None,
            goal_for: None,
            lift_phase: LiftPhase::Approach,
            phase_ticks: 0,
        })
    }

    /// Forgets the current episode.
    pub fn reset(&mut self) {
        self.command = None;
        self.goal = None;
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

    /// Joint goal putting the end effector at `target`; solved once per
    /// target, from the measured pose, keeping non-chain joints where they are.
    fn ik_goal(&mut self, q: &[f32], target: [f32; 3]) -> Vec<f32> {
        if self.goal_for == Some(target)
            && let Some(goal) = &self.goal
        {
            return goal.clone();
        }
        let goal = self.solve(q, target);
        self.goal = Some(goal.clone());
        self.goal_for = Some(target);
        goal
    }

    fn solve(&self, q: &[f32], target: [f32; 3]) -> Vec<f32> {
        let model = &self.model;
        let lower: Vec<f64> = model.lower().iter().map(|l| l + LIMIT_MARGIN).collect();
        let upper: Vec<f64> = model.upper().iter().map(|u| u - LIMIT_MARGIN).collect();
        let movable = model.moves_end_effector();
        let target = Vector3::new(target[0] as f64, target[1] as f64, target[2] as f64);
        let start: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        // From the measured pose first; then from deterministic restarts
        // spread across the joint ranges, in case the first lands in a
        // local minimum at a joint limit.
        let mut best = model.chain.solve_position(
            target,
            &start,
            &lower,
            &upper,
            &movable,
            &IkOptions::default(),
        );
        for restart in 1..=8 {
            if best.converged {
                break;
            }
            let fraction = restart as f64 / 9.0;
            let seed: Vec<f64> = start
                .iter()
                .zip(lower.iter().zip(&upper))
                .zip(&movable)
                .map(|((&s, (&lo, &hi)), &moves)| {
                    if moves {
                        lo + (hi - lo) * ((fraction * (1.0 + 0.37 * s.abs())) % 1.0)
                    } else {
                        s
                    }
                })
                .collect();
            let attempt = model.chain.solve_position(
                target,
                &seed,
                &lower,
                &upper,
                &movable,
                &IkOptions::default(),
            );
            if attempt.error < best.error {
                best = attempt;
            }
        }
        best.q.iter().map(|&v| v as f32).collect()
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
            self.goal = Some(goal.clone());
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
