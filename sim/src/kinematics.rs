//! Forward and inverse kinematics over a serial chain read from a URDF.
//!
//! Generic over the chain: revolute, continuous, prismatic and fixed joints,
//! with mimic joints expressed through their leader. Computed in f64 with
//! nalgebra, independently of the physics engine, so the scripted expert and
//! the task's target sampler work the same on any arm.

use nalgebra::{DMatrix, DVector, Isometry3, Translation3, UnitQuaternion, Vector3};

/// How one chain joint moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChainJointKind {
    Revolute,
    Prismatic,
    Fixed,
}

/// Which actuated coordinate drives a moving chain joint:
/// `q_joint = multiplier · q[index] + offset` (multiplier 1, offset 0 for a
/// directly actuated joint, the URDF `<mimic>` values otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JointDrive {
    pub index: usize,
    pub multiplier: f64,
    pub offset: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChainJoint {
    pub name: String,
    /// Pose of the joint frame in the parent link's frame (URDF `<origin>`).
    pub origin: Isometry3<f64>,
    /// Unit axis in the joint frame.
    pub axis: Vector3<f64>,
    pub kind: ChainJointKind,
    /// `None` for fixed joints.
    pub drive: Option<JointDrive>,
}

/// A serial chain from the robot's root link to its end-effector frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// Pose of the root link in the world.
    pub base: Isometry3<f64>,
    pub joints: Vec<ChainJoint>,
    /// Number of actuated coordinates `q` is indexed by (the whole robot's,
    /// not only this chain's).
    pub num_coordinates: usize,
}

/// Stops and step sizes of the damped least-squares solver.
#[derive(Clone, Copy, Debug)]
pub struct IkOptions {
    pub max_iterations: usize,
    /// Converged when the position error is below this (m).
    pub tolerance: f64,
    /// Levenberg–Marquardt damping λ (m).
    pub damping: f64,
    /// Largest change of one coordinate per iteration (rad or m).
    pub max_step: f64,
    /// Converged when every orientation goal is within this angle (rad).
    pub angle_tolerance: f64,
    /// Metres of position error one radian of orientation error weighs as.
    pub orientation_weight: f64,
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            max_iterations: 200,
            tolerance: 1e-4,
            damping: 0.01,
            max_step: 0.2,
            angle_tolerance: 1e-3,
            orientation_weight: 0.1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IkSolution {
    pub q: Vec<f64>,
    /// Remaining distance between the end effector and the target (m).
    pub error: f64,
    /// Largest remaining angle between an orientation goal's axis and its
    /// direction (rad); 0 without orientation goals.
    pub angle_error: f64,
    pub converged: bool,
}

impl Chain {
    fn joint_value(drive: &JointDrive, q: &[f64]) -> f64 {
        drive.multiplier * q[drive.index] + drive.offset
    }

    fn joint_motion(joint: &ChainJoint, q: &[f64]) -> Isometry3<f64> {
        let Some(drive) = &joint.drive else {
            return Isometry3::identity();
        };
        let value = Self::joint_value(drive, q);
        match joint.kind {
            ChainJointKind::Revolute => Isometry3::from_parts(
                Translation3::identity(),
                UnitQuaternion::from_scaled_axis(joint.axis * value),
            ),
            ChainJointKind::Prismatic => Isometry3::from_parts(
                Translation3::from(joint.axis * value),
                UnitQuaternion::identity(),
            ),
            ChainJointKind::Fixed => Isometry3::identity(),
        }
    }

    /// World pose of the end-effector frame for actuated coordinates `q`.
    pub fn forward(&self, q: &[f64]) -> Isometry3<f64> {
        self.joints.iter().fold(self.base, |pose, joint| {
            pose * joint.origin * Self::joint_motion(joint, q)
        })
    }

    /// World positions of every joint frame along the chain, then the end
    /// effector: a cheap outline of where the arm's links are.
    pub fn frame_positions(&self, q: &[f64]) -> Vec<Vector3<f64>> {
        let mut positions = Vec::with_capacity(self.joints.len() + 1);
        let mut pose = self.base;
        for joint in &self.joints {
            pose *= joint.origin;
            positions.push(pose.translation.vector);
            pose *= Self::joint_motion(joint, q);
        }
        positions.push(pose.translation.vector);
        positions
    }

    /// Height (z) of the lowest joint frame or the end effector for `q`:
    /// `frame_positions` without building the list, for checks run
    /// thousands of times per plan.
    pub fn lowest_height(&self, q: &[f64]) -> f64 {
        let mut pose = self.base;
        let mut lowest = f64::INFINITY;
        for joint in &self.joints {
            pose *= joint.origin;
            lowest = lowest.min(pose.translation.z);
            pose *= Self::joint_motion(joint, q);
        }
        lowest.min(pose.translation.z)
    }

    /// End-effector pose and its geometric Jacobian (6 × num_coordinates):
    /// rows 0–2 the linear velocity of the end effector, rows 3–5 the
    /// angular velocity. A revolute joint contributes (axis × (p − joint
    /// origin), axis), a prismatic one (axis, 0), each scaled by its mimic
    /// multiplier.
    pub fn jacobian(&self, q: &[f64]) -> (Isometry3<f64>, DMatrix<f64>) {
        let mut frames = Vec::with_capacity(self.joints.len());
        let mut pose = self.base;
        for joint in &self.joints {
            let joint_frame = pose * joint.origin;
            frames.push(joint_frame);
            pose = joint_frame * Self::joint_motion(joint, q);
        }
        let tip = pose.translation.vector;
        let mut jacobian = DMatrix::zeros(6, self.num_coordinates);
        for (joint, frame) in self.joints.iter().zip(&frames) {
            let Some(drive) = &joint.drive else { continue };
            let axis = frame.rotation * joint.axis;
            let (linear, angular) = match joint.kind {
                ChainJointKind::Revolute => (axis.cross(&(tip - frame.translation.vector)), axis),
                ChainJointKind::Prismatic => (axis, Vector3::zeros()),
                ChainJointKind::Fixed => continue,
            };
            for row in 0..3 {
                jacobian[(row, drive.index)] += drive.multiplier * linear[row];
                jacobian[(row + 3, drive.index)] += drive.multiplier * angular[row];
            }
        }
        (pose, jacobian)
    }

    /// End-effector position and its Jacobian ∂p/∂q (3 × num_coordinates).
    pub fn position_jacobian(&self, q: &[f64]) -> (Vector3<f64>, DMatrix<f64>) {
        let (pose, jacobian) = self.jacobian(q);
        (pose.translation.vector, jacobian.rows(0, 3).into_owned())
    }

    /// Joint coordinates that put the end effector at `target`, starting from
    /// `q0`, by damped least squares (Levenberg–Marquardt; Wampler 1986),
    /// Δq = Jᵀ (J Jᵀ + λ² I)⁻¹ e, with coordinates clamped to `[lower, upper]`
    /// after every step. Coordinates not in `movable` stay at `q0`.
    pub fn solve_position(
        &self,
        target: Vector3<f64>,
        q0: &[f64],
        lower: &[f64],
        upper: &[f64],
        movable: &[bool],
        options: &IkOptions,
    ) -> IkSolution {
        self.solve_pose(target, &[], q0, lower, upper, movable, options)
    }

    /// Like `solve_position`, and also turns the end effector so that each
    /// of `axes` (a unit vector in the end-effector frame) points along its
    /// world direction. The orientation residual is Σ aᵢ × gᵢ, whose rate is
    /// L ω with L = Σ (aᵢ gᵢᵀ − (aᵢ·gᵢ) I) (Siciliano et al., "Robotics",
    /// §3.7.3); it is weighted by `options.orientation_weight` metres per
    /// radian against the position residual. Converged when the position is
    /// within `tolerance` and every axis within `angle_tolerance`.
    #[allow(clippy::too_many_arguments)]
    pub fn solve_pose(
        &self,
        target: Vector3<f64>,
        axes: &[AxisGoal],
        q0: &[f64],
        lower: &[f64],
        upper: &[f64],
        movable: &[bool],
        options: &IkOptions,
    ) -> IkSolution {
        let rows = if axes.is_empty() { 3 } else { 6 };
        let weight = options.orientation_weight;
        let mut q = q0.to_vec();
        let mut residual = DVector::zeros(rows);
        for _ in 0..options.max_iterations {
            let (pose, full) = self.jacobian(&q);
            let position_error = target - pose.translation.vector;
            let error = position_error.norm();
            residual.rows_mut(0, 3).copy_from(&position_error);
            let mut jacobian = full.rows(0, rows).into_owned();
            let mut angle_error = 0.0;
            if !axes.is_empty() {
                let mut turn = Vector3::zeros();
                let mut coupling = nalgebra::Matrix3::zeros();
                for goal in axes {
                    let current = pose.rotation * goal.local;
                    turn += current.cross(&goal.world);
                    coupling += current * goal.world.transpose()
                        - nalgebra::Matrix3::identity() * current.dot(&goal.world);
                    angle_error = f64::max(angle_error, current.angle(&goal.world));
                }
                residual.rows_mut(3, 3).copy_from(&(-weight * turn));
                let angular = coupling * full.rows(3, 3);
                jacobian.rows_mut(3, 3).copy_from(&(weight * angular));
            }
            if error < options.tolerance && angle_error < options.angle_tolerance {
                return IkSolution {
                    q,
                    error,
                    angle_error,
                    converged: true,
                };
            }
            for (column, &free) in movable.iter().enumerate() {
                if !free {
                    jacobian.column_mut(column).fill(0.0);
                }
            }
            let damping = options.damping * options.damping;
            let jjt = &jacobian * jacobian.transpose() + DMatrix::identity(rows, rows) * damping;
            let Some(solved) = jjt.lu().solve(&residual) else {
                break;
            };
            let step = jacobian.transpose() * solved;
            let largest = step.amax();
            let scale = if largest > options.max_step {
                options.max_step / largest
            } else {
                1.0
            };
            for i in 0..q.len() {
                q[i] = (q[i] + scale * step[i]).clamp(lower[i], upper[i]);
            }
        }
        let (pose, _) = self.jacobian(&q);
        let error = (target - pose.translation.vector).norm();
        let angle_error = axes
            .iter()
            .map(|goal| (pose.rotation * goal.local).angle(&goal.world))
            .fold(0.0, f64::max);
        let converged = error < options.tolerance && angle_error < options.angle_tolerance;
        IkSolution {
            q,
            error,
            angle_error,
            converged,
        }
    }
}

/// An orientation goal: the end-effector frame's unit vector `local` should
/// point along the unit world vector `world`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisGoal {
    pub local: Vector3<f64>,
    pub world: Vector3<f64>,
}

/// A URDF `<origin xyz rpy>` as an isometry (fixed-axis roll, pitch, yaw).
pub fn urdf_origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}
