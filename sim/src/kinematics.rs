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
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            max_iterations: 200,
            tolerance: 1e-4,
            damping: 0.01,
            max_step: 0.2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IkSolution {
    pub q: Vec<f64>,
    /// Remaining distance between the end effector and the target (m).
    pub error: f64,
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

    /// End-effector position and its Jacobian ∂p/∂q (3 × num_coordinates).
    /// A revolute joint contributes axis × (p − joint origin), a prismatic one
    /// its axis, each scaled by its mimic multiplier.
    pub fn position_jacobian(&self, q: &[f64]) -> (Vector3<f64>, DMatrix<f64>) {
        let mut frames = Vec::with_capacity(self.joints.len());
        let mut pose = self.base;
        for joint in &self.joints {
            let joint_frame = pose * joint.origin;
            frames.push(joint_frame);
            pose = joint_frame * Self::joint_motion(joint, q);
        }
        let tip = pose.translation.vector;
        let mut jacobian = DMatrix::zeros(3, self.num_coordinates);
        for (joint, frame) in self.joints.iter().zip(&frames) {
            let Some(drive) = &joint.drive else { continue };
            let axis = frame.rotation * joint.axis;
            let column = match joint.kind {
                ChainJointKind::Revolute => axis.cross(&(tip - frame.translation.vector)),
                ChainJointKind::Prismatic => axis,
                ChainJointKind::Fixed => continue,
            };
            for row in 0..3 {
                jacobian[(row, drive.index)] += drive.multiplier * column[row];
            }
        }
        (tip, jacobian)
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
        let mut q = q0.to_vec();
        let mut error = f64::INFINITY;
        for _ in 0..options.max_iterations {
            let (tip, mut jacobian) = self.position_jacobian(&q);
            let residual = target - tip;
            error = residual.norm();
            if error < options.tolerance {
                return IkSolution {
                    q,
                    error,
                    converged: true,
                };
            }
            for (column, &free) in movable.iter().enumerate() {
                if !free {
                    jacobian.column_mut(column).fill(0.0);
                }
            }
            let damping = options.damping * options.damping;
            let jjt = &jacobian * jacobian.transpose() + DMatrix::identity(3, 3) * damping;
            let Some(solved) = jjt
                .lu()
                .solve(&DVector::from_column_slice(residual.as_slice()))
            else {
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
        let converged = error < options.tolerance;
        IkSolution {
            q,
            error,
            converged,
        }
    }
}

/// A URDF `<origin xyz rpy>` as an isometry (fixed-axis roll, pitch, yaw).
pub fn urdf_origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}
