//! The rapier world of one arm: a table, the arm as a multibody with
//! position-controlled motors, and optionally a cube.
//!
//! Plain data sets plus one `step_physics` stage, in rapier's style. The
//! whole world is `Clone`, which is what a snapshot is: cloning copies every
//! body, contact and solver warm-start, so a restored world steps
//! bit-identically.

use crate::arm_model::{ARM, ArmModel, CLEAR_OF_TABLE, JointMotion, VisualShape};
use crate::randomization::DynamicsSample;
use crate::robot_config::ActuatorParams;
use cerebellum_core::bounds::{Limits, refusal};
use rapier3d::math::{Pose, Vector};
use rapier3d::prelude::*;
use rapier3d_urdf::UrdfMultibodyOptions;
use std::sync::Arc;

/// Physics settings of a world.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhysicsConfig {
    /// Physics step (s).
    pub dt: f32,
    /// Physics steps per control tick; the control rate is 1 / (dt · substeps).
    pub substeps: u32,
    /// rapier's `num_solver_iterations`: the solver substeps of each physics
    /// step, each of which rebuilds the multibody's mass matrix (most of the
    /// step's cost). 2 (rapier's default is 4) keeps the servos' tracking
    /// error at rest and the tasks' returns unchanged and moves a step
    /// response by about 0.01 rad (docs/BENCHMARKS.md).
    pub solver_iterations: usize,
    pub gravity: [f32; 3],
    /// rapier's continuous collision detection, off by default: it sweeps
    /// every fast link against the table, but a multibody link's pose comes
    /// from its joint coordinates, so a clamped link is put back by the next
    /// step anyway, and the cube would need to move 3 m/s (half its size
    /// per step) to be swept. It cost a quarter of a randomly commanded
    /// step (see docs/BENCHMARKS.md).
    pub ccd: bool,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        Self {
            dt: 1.0 / 200.0,
            substeps: 4,
            solver_iterations: 2,
            gravity: [0.0, 0.0, -9.81],
            ccd: false,
        }
    }
}

/// Physics step: below 0.1 ms a tick costs hundreds of steps; above 50 ms
/// the servos' stiff position control goes unstable.
pub const PHYSICS_DT: Limits<f32> = Limits::closed(1e-4, 0.05).unit("s");
pub const PHYSICS_SUBSTEPS: Limits<u32> = Limits::closed(1, 100);
pub const SOLVER_ITERATIONS: Limits<usize> = Limits::closed(1, 64);
/// Each gravity component: within ten times Earth's.
pub const GRAVITY: Limits<f32> = Limits::closed(-100.0, 100.0).unit("m/s²");
/// The control period `dt · substeps`: 1 kHz down to 1 Hz.
pub const CONTROL_PERIOD: Limits<f64> = Limits::closed(1e-3, 1.0).unit("s");

impl PhysicsConfig {
    /// Bounds on every key (`physics.*`): no NaN or infinity reaches rapier,
    /// and no tick costs an unbounded number of steps.
    pub fn validate(&self) -> Result<(), String> {
        PHYSICS_DT.check("physics.dt", self.dt)?;
        PHYSICS_SUBSTEPS.check("physics.substeps", self.substeps)?;
        SOLVER_ITERATIONS.check("physics.solver_iterations", self.solver_iterations)?;
        GRAVITY.check_each("physics.gravity", &self.gravity)?;
        let period = 1.0 / self.control_rate_hz();
        if !CONTROL_PERIOD.contains(period) {
            return Err(refusal(
                "physics.dt × physics.substeps",
                period,
                &format!("the control period must be {}", CONTROL_PERIOD.describe()),
            ));
        }
        Ok(())
    }

    /// The control rate, 1 / (dt · substeps), in Hz.
    ///
    /// `dt` is an `f32`, and `0.005f32` is really 0.004999999888…, which
    /// would make the default 50.00000111758712 Hz instead of the 50 Hz the
    /// config says. So `dt` is taken as the decimal it was written as: its
    /// shortest representation (`5e-3`), which reads back as the same `f32`,
    /// parsed as an `f64`. The default is then exactly 50.0 and a spec
    /// written by hand (`control_rate_hz: 50.0`) is equal to it, not merely
    /// within `cerebellum_core::RATE_TOLERANCE`.
    pub fn control_rate_hz(&self) -> f64 {
        // `{:e}` prints the shortest digits that read back as `dt` (at most
        // 15 bytes for an f32, e.g. `-1.1754942e-38`); no allocation, as
        // observations call this every tick.
        use std::io::Write;
        let mut buf = [0u8; 32];
        let mut out = &mut buf[..];
        write!(out, "{:e}", self.dt).expect("an f32 fits in 32 bytes");
        let written = 32 - out.len();
        let dt: f64 = std::str::from_utf8(&buf[..written])
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(f64::from(self.dt));
        1.0 / (dt * f64::from(self.substeps))
    }
}

/// A coloured object of the scene that is not part of the arm.
#[derive(Clone)]
pub struct Prop {
    pub pose: Pose,
    pub shape: SharedShape,
    /// Linear RGB in [0, 1].
    pub rgb: [f32; 3],
}

/// A coloured marker standing on the table (`reach-color`): an upright
/// cylinder, seen by the camera and touched by nothing. It has no collider,
/// so the arm moves as in `reach` and nothing pushes a marker out of place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Marker {
    /// Centre of its base on the table (m).
    pub base: [f32; 3],
    pub radius: f32,
    pub height: f32,
    /// Linear RGB in [0, 1].
    pub rgb: [f32; 3],
}

impl Marker {
    /// The centre of its top face, where the gripper touches it.
    pub fn top(&self) -> [f32; 3] {
        [self.base[0], self.base[1], self.base[2] + self.height]
    }
}

/// A cube besides `ArmWorld::cube` (`lift-color`'s second one), with its
/// colour.
#[derive(Clone, Copy, Debug)]
pub struct ExtraCube {
    pub body: RigidBodyHandle,
    pub config: CubeConfig,
    pub rgb: [f32; 3],
}

/// The cube of the `lift` task.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CubeConfig {
    /// Edge length (m).
    pub size: f32,
    /// kg.
    pub mass: f32,
    pub friction: f32,
}

/// Cube edge: the gripper opens to a few centimetres.
pub const CUBE_SIZE: Limits<f32> = Limits::closed(0.005, 0.5).unit("m");
pub const CUBE_MASS: Limits<f32> = Limits::closed(0.001, 10.0).unit("kg");
pub const CUBE_FRICTION: Limits<f32> = Limits::closed(0.0, 10.0);

impl CubeConfig {
    /// Bounds on every key (`cube.*`).
    pub fn validate(&self) -> Result<(), String> {
        CUBE_SIZE.check("cube.size", self.size)?;
        CUBE_MASS.check("cube.mass", self.mass)?;
        CUBE_FRICTION.check("cube.friction", self.friction)
    }
}

impl Default for CubeConfig {
    fn default() -> Self {
        Self {
            size: 0.03,
            mass: 0.03,
            friction: 1.0,
        }
    }
}

/// Where one actuated joint lives in the multibody.
#[derive(Clone, Copy, Debug)]
struct JointSlot {
    handle: MultibodyJointHandle,
    /// Index of the coordinate in the joint's 6-D spatial layout.
    axis: usize,
    motion: JointMotion,
}

#[derive(Clone)]
pub struct ArmWorld {
    pub model: Arc<ArmModel>,
    pub physics: PhysicsConfig,
    integration: IntegrationParameters,
    gravity: Vector,
    islands: IslandManager,
    broad_phase: BroadPhaseBvh,
    narrow_phase: NarrowPhase,
    pub(crate) bodies: RigidBodySet,
    pub(crate) colliders: ColliderSet,
    impulse_joints: ImpulseJointSet,
    multibody_joints: MultibodyJointSet,
    soft_bodies: SoftBodySet,
    ccd: CCDSolver,
    slots: Vec<JointSlot>,
    /// Per-joint servo parameters (the model's, possibly randomised).
    actuators: Vec<ActuatorParams>,
    /// Body of each `model.template.links` entry.
    pub(crate) link_bodies: Vec<RigidBodyHandle>,
    /// The URDF's mass properties of each link body, which randomised
    /// masses scale.
    link_mass: Vec<MassProperties>,
    pub cube: Option<(RigidBodyHandle, CubeConfig)>,
    /// Colour of `cube`.
    pub cube_rgb: [f32; 3],
    /// More physical cubes, each with its colour.
    pub extra_cubes: Vec<ExtraCube>,
    /// Visual markers on the table.
    pub markers: Vec<Marker>,
    /// Height of the table's top surface (m).
    pub table_height: f32,
    /// The table's body.
    pub table: RigidBodyHandle,
    targets: Vec<f32>,
}

impl ArmWorld {
    /// A fresh world with the arm at `q` (one value per actuated joint) and,
    /// if given, a cube resting on the table at (x, y) with yaw.
    pub fn new(
        model: Arc<ArmModel>,
        physics: &PhysicsConfig,
        q: &[f32],
        cube: Option<(CubeConfig, [f32; 2], f32)>,
    ) -> Self {
        let mut bodies = RigidBodySet::new();
        let mut colliders = ColliderSet::new();
        let mut multibody_joints = MultibodyJointSet::new();
        let handles = model.template.clone().insert_using_multibody_joints(
            &mut bodies,
            &mut colliders,
            &mut multibody_joints,
            UrdfMultibodyOptions::DISABLE_SELF_CONTACTS,
        );
        let link_bodies: Vec<_> = handles.links.iter().map(|l| l.body).collect();
        // rapier folds a body's added mass properties (the URDF inertials)
        // into its mass properties only in the next step's bookkeeping; do it
        // now so that they can be read (and scaled) before the first step.
        let link_mass = link_bodies
            .iter()
            .map(|&body| {
                let body = &mut bodies[body];
                body.recompute_mass_properties_from_colliders(&colliders);
                body.mass_properties().local_mprops
            })
            .collect();
        let slots = model
            .joints
            .iter()
            .map(|joint| {
                let index = model.template_joint[&joint.name];
                let handle = handles.joints[index]
                    .joint
                    .expect("every moving URDF joint becomes a multibody joint");
                JointSlot {
                    handle,
                    axis: spatial_axis(joint.motion),
                    motion: joint.motion,
                }
            })
            .collect();

        // The table's top sits just below the lowest point of the root
        // link, so the fixed base never fights it.
        let table_height = handles.links[0]
            .colliders
            .iter()
            .filter_map(|c| colliders.get(c.handle))
            .map(|c| c.compute_aabb().mins.z)
            .fold(f32::INFINITY, f32::min);
        let table_height = if table_height.is_finite() {
            table_height - 0.001
        } else {
            0.0
        };
        let table = bodies.insert(RigidBodyBuilder::fixed().translation(Vector::new(
            0.0,
            0.0,
            table_height - 0.05,
        )));
        colliders.insert_with_parent(
            ColliderBuilder::cuboid(2.0, 2.0, 0.05)
                .friction(1.0)
                .collision_groups(table_collision_groups()),
            table,
            &mut bodies,
        );
        // A link that only turns about the vertical and starts above the
        // table stays above it: its speculative contact with the table (the
        // SO-101's shoulder hovers 2 cm above it, inside rapier's prediction
        // distance) would be solved every step and never push.
        for (link, &turns) in handles
            .links
            .iter()
            .zip(&model.turns_about_vertical)
            .skip(1)
        {
            let lowest = link
                .colliders
                .iter()
                .filter_map(|c| colliders.get(c.handle))
                .map(|c| c.compute_aabb().mins.z)
                .fold(f32::INFINITY, f32::min);
            if turns && lowest > table_height + TABLE_CLEARANCE {
                for c in &link.colliders {
                    if let Some(collider) = colliders.get_mut(c.handle) {
                        collider.set_collision_groups(clear_of_table_collision_groups());
                    }
                }
            }
        }

        let model_actuators = model.joints.iter().map(|j| j.actuator).collect();
        let mut integration = IntegrationParameters {
            dt: physics.dt,
            ..Default::default()
        };
        integration.num_solver_iterations = physics.solver_iterations;
        // rapier keeps a pair's contact points while the two bodies drift
        // less than 5 cm (`contact_recycle_distance`): far more than the
        // few millimetres between a cube and a closing jaw, whose stale
        // contact planes then push the cube about.
        integration.contact_recycling = false;
        if !physics.ccd {
            integration.max_ccd_substeps = 0;
        }
        let [gx, gy, gz] = physics.gravity;
        let mut world = Self {
            model,
            physics: physics.clone(),
            integration,
            gravity: Vector::new(gx, gy, gz),
            islands: IslandManager::new(),
            broad_phase: BroadPhaseBvh::new(),
            narrow_phase: NarrowPhase::new(),
            bodies,
            colliders,
            impulse_joints: ImpulseJointSet::new(),
            multibody_joints,
            soft_bodies: SoftBodySet::default(),
            ccd: CCDSolver::new(),
            slots,
            actuators: model_actuators,
            link_bodies,
            link_mass,
            cube: None,
            cube_rgb: crate::camera::CUBE_RGB,
            extra_cubes: Vec::new(),
            markers: Vec::new(),
            table_height,
            table,
            targets: q.to_vec(),
        };
        world.configure_actuators();
        let joint_handles: Vec<_> = handles.joints.iter().map(|j| j.joint).collect();
        world.couple_mimic_joints(&joint_handles);
        world.set_joint_positions(q);
        if let Some((config, [x, y], yaw)) = cube {
            world.add_cube(config, x, y, yaw);
        }
        world.set_joint_targets(q);
        world
    }

    fn add_cube(&mut self, config: CubeConfig, x: f32, y: f32, yaw: f32) {
        let body = self.insert_cube(config, x, y, yaw);
        self.cube = Some((body, config));
    }

    /// Adds another physical cube resting on the table at (x, y) with yaw,
    /// coloured `rgb`; a world without `cube` takes it as `cube`.
    pub fn add_colored_cube(
        &mut self,
        config: CubeConfig,
        [x, y]: [f32; 2],
        yaw: f32,
        rgb: [f32; 3],
    ) -> RigidBodyHandle {
        let body = self.insert_cube(config, x, y, yaw);
        if self.cube.is_none() {
            self.cube = Some((body, config));
            self.cube_rgb = rgb;
        } else {
            self.extra_cubes.push(ExtraCube { body, config, rgb });
        }
        body
    }

    /// Adds a marker of `height` and `radius` standing on the table at
    /// (x, y), coloured `rgb`.
    pub fn add_marker(&mut self, [x, y]: [f32; 2], radius: f32, height: f32, rgb: [f32; 3]) {
        self.markers.push(Marker {
            base: [x, y, self.table_height],
            radius,
            height,
            rgb,
        });
    }

    /// Pose of any body of this world.
    pub fn body_pose(&self, body: RigidBodyHandle) -> Pose {
        *self.bodies[body].position()
    }

    fn insert_cube(&mut self, config: CubeConfig, x: f32, y: f32, yaw: f32) -> RigidBodyHandle {
        let half = config.size / 2.0;
        let body = self.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(x, y, self.table_height + half))
                .rotation(Vector::new(0.0, 0.0, yaw))
                .can_sleep(false),
        );
        let volume = config.size.powi(3);
        self.colliders.insert_with_parent(
            ColliderBuilder::cuboid(half, half, half)
                .density(config.mass / volume)
                .friction(config.friction),
            body,
            &mut self.bodies,
        );
        body
    }

    /// Motors, passive damping, friction, armature, and mimic couplings.
    fn configure_actuators(&mut self) {
        for (&params, slot) in self.actuators.iter().zip(&self.slots) {
            let axis = joint_axis(slot.motion);
            let (multibody, link_id) = self
                .multibody_joints
                .get_mut(slot.handle)
                .expect("joint handle from this world");
            let link = multibody.link_mut(link_id).expect("link of this joint");
            let assembly = link.assembly_id();
            link.joint
                .data
                .set_motor_model(axis, MotorModel::ForceBased)
                .set_motor_position(axis, 0.0, params.stiffness, params.damping)
                .set_motor_max_force(axis, params.max_force);
            multibody.damping_mut()[assembly] = params.joint_damping;
            multibody.frictions_mut()[assembly] = params.friction;
            multibody.armature_mut()[assembly] = params.armature;
        }
    }

    /// Mimic joints follow their leader through a holonomic coupling
    /// `q_follower = multiplier · q_leader + offset`.
    fn couple_mimic_joints(&mut self, handles: &[Option<MultibodyJointHandle>]) {
        for mimic in &self.model.mimics {
            let follower = handles[self.model.template_joint[&mimic.name]]
                .expect("every moving URDF joint becomes a multibody joint");
            let leader = self.slots[mimic.leader];
            let (_, leader_link) = self.multibody_joints.get(leader.handle).unwrap();
            let (multibody, follower_link) = self.multibody_joints.get_mut(follower).unwrap();
            multibody.add_dof_coupling(MultibodyDofCoupling {
                link1: leader_link,
                dof1: 0,
                axis1: leader.axis,
                link2: follower_link,
                dof2: 0,
                axis2: spatial_axis(mimic.motion),
                coeff: mimic.multiplier,
                offset: mimic.offset,
            });
        }
    }

    /// Applies one episode's randomised dynamics: link masses, servo gains,
    /// joint damping and friction. The cube's draws are applied by `new`.
    pub fn apply_dynamics(&mut self, sample: &DynamicsSample) {
        let links = self.link_bodies.iter().zip(&self.link_mass);
        for ((&body, props), &scale) in links.zip(&sample.link_mass_scale) {
            let body = &mut self.bodies[body];
            let scaled = MassProperties::new(
                props.local_com,
                props.mass() * scale,
                props.principal_inertia() * scale,
            );
            let scaled = MassProperties {
                principal_inertia_local_frame: props.principal_inertia_local_frame,
                ..scaled
            };
            body.set_additional_mass_properties(scaled, false);
            body.recompute_mass_properties_from_colliders(&self.colliders);
        }
        let model_params = self.model.joints.iter().map(|j| j.actuator);
        for (i, base) in model_params.enumerate() {
            let gain = sample.motor_gain_scale[i];
            self.actuators[i] = ActuatorParams {
                stiffness: base.stiffness * gain,
                damping: base.damping * gain,
                joint_damping: base.joint_damping * sample.joint_damping_scale[i],
                friction: base.friction * sample.joint_friction_scale[i],
                ..base
            };
        }
        self.configure_actuators();
        let targets = self.targets.clone();
        self.set_joint_targets(&targets);
    }

    /// Teleports the arm to `q` at rest (used at reset only).
    pub fn set_joint_positions(&mut self, q: &[f32]) {
        let current = self.joint_positions();
        let Some(first) = self.slots.first() else {
            return;
        };
        let (multibody, _) = self.multibody_joints.get_mut(first.handle).unwrap();
        let mut displacement = vec![0.0; multibody.ndofs()];
        for (slot, (target, now)) in self.slots.iter().zip(q.iter().zip(&current)) {
            let (multibody, link_id) = self.multibody_joints.get(slot.handle).unwrap();
            let assembly = multibody.link(link_id).unwrap().assembly_id();
            displacement[assembly] = target - now;
        }
        let (multibody, _) = self.multibody_joints.get_mut(first.handle).unwrap();
        multibody.apply_displacements(&displacement);
        multibody.generalized_velocity_mut().fill(0.0);
        multibody.forward_kinematics(&self.bodies, true);
        multibody.update_rigid_bodies(&mut self.bodies, true);
    }

    /// Position targets for the motors, held until the next call.
    pub fn set_joint_targets(&mut self, targets: &[f32]) {
        for ((&params, slot), &target) in self.actuators.iter().zip(&self.slots).zip(targets) {
            let axis = joint_axis(slot.motion);
            let (multibody, link_id) = self.multibody_joints.get_mut(slot.handle).unwrap();
            multibody
                .link_mut(link_id)
                .unwrap()
                .joint
                .data
                .set_motor_position(axis, target, params.stiffness, params.damping);
        }
        self.targets.clear();
        self.targets.extend_from_slice(targets);
    }

    pub fn joint_targets(&self) -> &[f32] {
        &self.targets
    }

    pub fn joint_positions(&self) -> Vec<f32> {
        self.slots
            .iter()
            .map(|slot| {
                let (multibody, link_id) = self.multibody_joints.get(slot.handle).unwrap();
                multibody.link(link_id).unwrap().joint.coords()[slot.axis]
            })
            .collect()
    }

    pub fn joint_velocities(&self) -> Vec<f32> {
        self.slots
            .iter()
            .map(|slot| {
                let (multibody, link_id) = self.multibody_joints.get(slot.handle).unwrap();
                let link = multibody.link(link_id).unwrap();
                multibody.joint_velocity(link)[0]
            })
            .collect()
    }

    /// The physics step: one rapier pipeline step of `dt`.
    pub fn step_physics(&mut self, pipeline: &mut PhysicsPipeline) {
        pipeline.step(
            self.gravity,
            &self.integration,
            &mut self.islands,
            &mut self.broad_phase,
            &mut self.narrow_phase,
            &mut self.bodies,
            &mut self.colliders,
            &mut self.impulse_joints,
            &mut self.multibody_joints,
            &mut self.soft_bodies,
            &mut self.ccd,
            &(),
            &(),
        );
    }

    /// One control tick: `substeps` physics steps with the current targets.
    pub fn step_tick(&mut self, pipeline: &mut PhysicsPipeline) {
        for _ in 0..self.physics.substeps {
            self.step_physics(pipeline);
        }
    }

    /// End-effector position from the measured joint positions.
    pub fn ee_position(&self) -> [f32; 3] {
        self.model.ee_position(&self.joint_positions())
    }

    /// World pose of the body of the URDF link called `name` (links merged
    /// into their parent as frames have no body of their own).
    pub fn link_pose(&self, name: &str) -> Option<Pose> {
        let index = self.model.link_names.iter().position(|l| l == name)?;
        Some(*self.bodies[self.link_bodies[index]].position())
    }

    /// The arm's links with a collider that intersects `shape` at `pose`.
    pub fn links_touching(&self, shape: &dyn Shape, pose: &Pose) -> Vec<&str> {
        self.link_bodies
            .iter()
            .zip(&self.model.link_names)
            .filter(|&(&body, _)| {
                let body = &self.bodies[body];
                body.colliders().iter().any(|&handle| {
                    let collider = &self.colliders[handle];
                    // From the body, which is current even before a step
                    // has moved the collider.
                    let local = collider.position_wrt_parent().copied().unwrap_or_default();
                    rapier3d::parry::query::intersection_test(
                        &(body.position() * local),
                        collider.shape(),
                        pose,
                        shape,
                    )
                    .is_ok_and(|hit| hit.intersecting)
                })
            })
            .map(|(_, name)| name.as_str())
            .collect()
    }

    pub fn cube_pose(&self) -> Option<Pose> {
        self.cube.map(|(body, _)| *self.bodies[body].position())
    }

    /// The coloured objects of the scene beside the arm and the table (the
    /// task's cubes and markers), posed, for the camera: what a task adds
    /// to the scene appears in every camera's image through this one list.
    pub fn props(&self) -> Vec<Prop> {
        let mut props = Vec::new();
        if let (Some((_, config)), Some(pose)) = (self.cube, self.cube_pose()) {
            props.push(Prop {
                pose,
                shape: SharedShape::cuboid(config.size / 2.0, config.size / 2.0, config.size / 2.0),
                rgb: self.cube_rgb,
            });
        }
        for cube in &self.extra_cubes {
            let half = cube.config.size / 2.0;
            props.push(Prop {
                pose: self.body_pose(cube.body),
                shape: SharedShape::cuboid(half, half, half),
                rgb: cube.rgb,
            });
        }
        for marker in &self.markers {
            // parry's cylinders run along y; a marker stands along z.
            let [x, y, z] = marker.base;
            props.push(Prop {
                pose: Pose::from_parts(
                    Vector::new(x, y, z + marker.height / 2.0),
                    rapier3d::math::Rotation::from_rotation_x(std::f32::consts::FRAC_PI_2),
                ),
                shape: SharedShape::cylinder(marker.height / 2.0, marker.radius),
                rgb: marker.rgb,
            });
        }
        props
    }

    /// Every visual shape with its world pose, for the camera.
    pub fn visual_shapes(&self) -> impl Iterator<Item = (Pose, &VisualShape)> {
        self.link_bodies
            .iter()
            .zip(&self.model.visuals)
            .flat_map(move |(&body, shapes)| {
                let pose = *self.bodies[body].position();
                shapes.iter().map(move |s| (pose * s.local_pose, s))
            })
    }

    /// A hash of every body's pose and velocity bits, for determinism tests.
    pub fn state_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (_, body) in self.bodies.iter() {
            let pose = body.position();
            let values = [
                pose.translation.x,
                pose.translation.y,
                pose.translation.z,
                pose.rotation.x,
                pose.rotation.y,
                pose.rotation.z,
                pose.rotation.w,
                body.linvel().x,
                body.linvel().y,
                body.linvel().z,
                body.angvel().x,
                body.angvel().y,
                body.angvel().z,
            ];
            for v in values {
                v.to_bits().hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

/// How far (m) above the table a link that only turns about the vertical
/// must start for its contacts with the table to be dropped.
const TABLE_CLEARANCE: f32 = 0.001;

/// The table collides with everything but the links that cannot reach it.
fn table_collision_groups() -> InteractionGroups {
    InteractionGroups::new(
        Group::ALL,
        Group::ALL.difference(CLEAR_OF_TABLE),
        InteractionTestMode::And,
    )
}

/// Links that stay above the table: they still touch the cube, not the arm.
fn clear_of_table_collision_groups() -> InteractionGroups {
    InteractionGroups::new(
        CLEAR_OF_TABLE,
        Group::ALL.difference(ARM).difference(CLEAR_OF_TABLE),
        InteractionTestMode::And,
    )
}

/// Index of a joint's coordinate in rapier's 6-D spatial layout.
fn spatial_axis(motion: JointMotion) -> usize {
    match motion {
        JointMotion::Revolute => 3,
        JointMotion::Prismatic => 0,
    }
}

fn joint_axis(motion: JointMotion) -> JointAxis {
    match motion {
        JointMotion::Revolute => JointAxis::AngX,
        JointMotion::Prismatic => JointAxis::LinX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Randomization;

    /// The SO-101's shoulder only pans, 2 cm above the table: it keeps no
    /// contact pair with the table, while it still collides with a cube.
    #[test]
    fn links_that_cannot_reach_the_table_keep_no_contacts_with_it() {
        let model = crate::ArmModel::load(&crate::so101_urdf(), &Default::default()).unwrap();
        let turning: Vec<&str> = model
            .link_names
            .iter()
            .zip(&model.turns_about_vertical)
            .filter(|(_, turns)| **turns)
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(turning, ["base_link", "shoulder_link"]);

        let cube = Some((CubeConfig::default(), [0.2, 0.0], 0.0));
        let mut world = ArmWorld::new(model.clone(), &PhysicsConfig::default(), &model.home, cube);
        world.set_joint_targets(&[0.48, -0.44, 0.42, 0.41, 0.75, 0.55]);
        let mut pipeline = PhysicsPipeline::new();
        for _ in 0..100 {
            world.step_physics(&mut pipeline);
        }
        let shoulder = world.link_bodies[1];
        let table = Some(world.table);
        let touching: Vec<_> = world
            .narrow_phase
            .contact_pairs()
            .map(|pair| {
                let parent = |c: ColliderHandle| world.colliders[c].parent();
                (parent(pair.collider1), parent(pair.collider2))
            })
            .filter(|&(a, b)| {
                (a, b) == (Some(shoulder), table) || (b, a) == (Some(shoulder), table)
            })
            .collect();
        assert!(touching.is_empty());
        let [shoulder_collider, ..] = world.bodies[shoulder].colliders() else {
            panic!("the shoulder has colliders");
        };
        let groups = world.colliders[*shoulder_collider].collision_groups();
        let cube = world.bodies[world.cube.unwrap().0].colliders()[0];
        assert!(groups.test(world.colliders[cube].collision_groups()));
        assert!(!groups.test(table_collision_groups()));
    }

    #[test]
    fn continuous_collision_detection_is_off_unless_asked_for() {
        let model = crate::ArmModel::load(&crate::so101_urdf(), &Default::default()).unwrap();
        let world = ArmWorld::new(model.clone(), &PhysicsConfig::default(), &model.home, None);
        assert_eq!(world.integration.max_ccd_substeps, 0);
        let physics = PhysicsConfig {
            ccd: true,
            ..PhysicsConfig::default()
        };
        let world = ArmWorld::new(model.clone(), &physics, &model.home, None);
        assert!(world.integration.max_ccd_substeps > 0);
    }

    /// Randomised link masses scale the URDF's (they once scaled the zero
    /// mass a body reports before its first step, which left every
    /// environment's arm massless).
    #[test]
    fn randomised_link_masses_scale_the_urdf_masses() {
        let model = crate::ArmModel::load(&crate::so101_urdf(), &Default::default()).unwrap();
        let mut world = ArmWorld::new(model.clone(), &PhysicsConfig::default(), &model.home, None);
        let upper_arm = world.link_bodies[2];
        assert!((world.bodies[upper_arm].mass() - 0.103).abs() < 1e-6);
        let draw = Randomization {
            link_mass: 0.5,
            ..Randomization::default()
        };
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let sample = draw.sample(&mut rng, model.link_names.len(), model.joints.len());
        world.apply_dynamics(&sample);
        let mut pipeline = PhysicsPipeline::new();
        world.step_physics(&mut pipeline);
        let mass = world.bodies[upper_arm].mass();
        assert!(
            (mass - 0.103 * sample.link_mass_scale[2]).abs() < 1e-6,
            "{mass}"
        );
        assert!(sample.link_mass_scale[2] != 1.0);
    }
}
