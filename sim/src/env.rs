//! Simulated robots behind the `Robot` trait: an arm task in rapier, or the
//! analytic pendulum. One tick is `apply` (check the command, step the
//! physics `substeps` times, score the tick) followed by `observe`.
//!
//! Everything random comes from one ChaCha generator seeded at reset, and
//! the whole state is `Clone`, so `snapshot`/`restore` give bit-identical
//! continuations and the same seed gives the same trajectory.

use crate::arm_model::ArmModel;
use crate::camera::{Camera, CameraConfig};
use crate::instructions::{self, InstructionSet};
use crate::pendulum::Pendulum;
use crate::randomization::{DynamicsSample, Randomization};
use crate::tasks::{self, TaskKind};
use crate::world::{ArmWorld, CubeConfig, PhysicsConfig};
use cerebellum_core::bounds::check_name;
use cerebellum_core::{
    Action, ActionSpec, FieldSpec, Observation, ObservationSpec, ResetRequest, RewardComponents,
    Robot, RobotError, RobotSpec, StepOutcome, Unit,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rapier3d::prelude::{PhysicsPipeline, RigidBodyHandle};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// Everything that defines a simulated robot and its task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    pub task: TaskKind,
    pub robot_id: String,
    pub physics: PhysicsConfig,
    pub cube: CubeConfig,
    pub randomization: Randomization,
    /// Which phrasings the colour tasks draw their instructions from:
    /// `train` (the default) or `held_out`, for evaluating on phrasings
    /// training never saw (`crate::instructions`). Tasks with one fixed
    /// instruction ignore it.
    pub instructions: InstructionSet,
    /// An operator's instruction for every episode of a colour task
    /// (`run --instruction`), instead of drawn ones: it must name exactly
    /// one of the task's colours, and that colour's object is the one the
    /// episode scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Cameras whose images every observation carries, in this order (the
    /// spec lists them in the same order): `[[camera]]` tables, or one
    /// `[camera]` table (the older single-camera form). Names are unique.
    #[serde(
        rename = "camera",
        deserialize_with = "crate::camera::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cameras: Vec<CameraConfig>,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            task: TaskKind::Reach,
            robot_id: "sim0".into(),
            physics: PhysicsConfig::default(),
            cube: CubeConfig::default(),
            randomization: Randomization::default(),
            instructions: InstructionSet::Train,
            instruction: None,
            cameras: Vec::new(),
        }
    }
}

impl EnvConfig {
    /// The one check of an environment config (`--env-config`): every key
    /// within its bounds, each refusal naming the key's TOML path, the
    /// value and the accepted range. `SimEnv::new` calls it, so no
    /// simulation is built from an unchecked config.
    pub fn validate(&self) -> Result<(), String> {
        check_name("robot_id", &self.robot_id)?;
        self.physics.validate()?;
        self.cube.validate()?;
        self.randomization.validate()?;
        crate::camera::validate_cameras(&self.cameras)?;
        if let Some(text) = &self.instruction {
            let colors: &[tasks::Color] = match self.task {
                TaskKind::ReachColor => &tasks::MARKER_COLORS,
                TaskKind::LiftColor => &tasks::CUBE_COLORS,
                other => {
                    return Err(cerebellum_core::bounds::refusal(
                        "instruction",
                        text,
                        &format!(
                            "task {other} has one fixed instruction; only reach-color and lift-color take one"
                        ),
                    ));
                }
            };
            if instructions::named_color(text, colors).is_none() {
                let names: Vec<&str> = colors.iter().map(|(n, _)| *n).collect();
                return Err(cerebellum_core::bounds::refusal(
                    "instruction",
                    text,
                    &format!(
                        "must name exactly one of {}'s colours: {}",
                        self.task,
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Margin on the observed joint positions beyond the joint limits (rad or
/// m): a servo pushed against a limit overshoots it a little.
const JOINT_POSITION_MARGIN: f32 = 0.2;
const MAX_JOINT_SPEED: f32 = 100.0;
const WORKSPACE_BOUND: f32 = 5.0;

/// The mutable state of an arm episode; cloning it is a snapshot.
#[derive(Clone)]
pub struct ArmState {
    pub world: ArmWorld,
    rng: ChaCha8Rng,
    step: u32,
    target: [f32; 3],
    cube_start_height: f32,
    held_ticks: u32,
    /// The colour tasks: which object the instruction names (an index into
    /// `tasks::MARKER_COLORS` or `tasks::CUBE_COLORS`), the episode's
    /// instruction, and lift-color's cubes in `CUBE_COLORS` order with
    /// their start heights.
    named: usize,
    instruction: Option<String>,
    color_cubes: Vec<(RigidBodyHandle, f32)>,
    dynamics: DynamicsSample,
    /// The env's cameras with the episode's pose jitter, in spec order.
    cameras: Vec<Camera>,
    /// Commands waiting out the action latency.
    pending: VecDeque<Vec<f32>>,
    observation: Observation,
}

pub struct ArmEnv {
    model: Arc<ArmModel>,
    config: EnvConfig,
    spec: RobotSpec,
    cameras: Vec<Camera>,
    pipeline: PhysicsPipeline,
    horizon: u32,
    state: ArmState,
}

impl ArmEnv {
    pub fn new(model: Arc<ArmModel>, mut config: EnvConfig) -> Result<Self, String> {
        if config.task == TaskKind::Pendulum {
            return Err("the pendulum is not an arm task".into());
        }
        config.validate()?;
        // A colour task's objects are seen, not told: with no camera
        // configured it renders the default one.
        if config.task.is_color() && config.cameras.is_empty() {
            config.cameras.push(CameraConfig::default());
        }
        let physics = &config.physics;
        let cameras = config
            .cameras
            .iter()
            .cloned()
            .map(Camera::new)
            .collect::<Result<Vec<_>, _>>()?;
        let spec = arm_spec(&model, &config);
        let horizon_s = config
            .task
            .arm_horizon_s()
            .expect("an arm task has a horizon");
        let horizon = (horizon_s * physics.control_rate_hz()).round() as u32;
        let state = Self::initial_state(&model, &config, &cameras, &spec, 0)?;
        Ok(Self {
            model,
            config,
            spec,
            cameras,
            pipeline: PhysicsPipeline::new(),
            horizon,
            state,
        })
    }

    fn initial_state(
        model: &Arc<ArmModel>,
        config: &EnvConfig,
        cameras: &[Camera],
        spec: &RobotSpec,
        seed: u64,
    ) -> Result<ArmState, String> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dynamics =
            config
                .randomization
                .sample(&mut rng, model.visuals.len(), model.joints.len());
        let cube = (config.task == TaskKind::Lift).then(|| {
            let (xy, yaw) = tasks::sample_cube_position(&mut rng, (0.15, 0.26));
            let cube = CubeConfig {
                size: config.cube.size * dynamics.cube_size_scale,
                mass: config.cube.mass * dynamics.cube_mass_scale,
                friction: config.cube.friction * dynamics.cube_friction_scale,
            };
            (cube, xy, yaw)
        });
        let mut world = ArmWorld::new(model.clone(), &config.physics, &model.home, cube);
        world.apply_dynamics(&dynamics);
        let mut target = match config.task {
            TaskKind::Reach => {
                tasks::sample_reach_target(model, &model.home, world.table_height, &mut rng)?
            }
            _ => [0.0; 3],
        };
        let (named, instruction, color_cubes) =
            color_scene(&mut world, config, &dynamics, &mut rng, &mut target);
        let cube_start_height = match color_cubes.get(named) {
            Some(&(_, height)) => height,
            None => world.cube_pose().map_or(0.0, |p| p.translation.z),
        };
        let mut state = ArmState {
            world,
            rng,
            step: 0,
            target,
            cube_start_height,
            held_ticks: 0,
            named,
            instruction,
            color_cubes,
            // Jittered once per episode: each keeps what it can reuse
            // from frame to frame (`Camera::render_scene`).
            cameras: cameras
                .iter()
                .map(|c| c.with_pose_jitter(dynamics.camera_translation, dynamics.camera_rotation))
                .collect(),
            dynamics,
            pending: VecDeque::new(),
            observation: Observation {
                state: Vec::new(),
                images: Vec::new(),
                instruction: None,
                timestamp: 0.0,
            },
        };
        state.observation = measure(&mut state, config, spec);
        Ok(state)
    }

    pub fn model(&self) -> &Arc<ArmModel> {
        &self.model
    }

    pub fn config(&self) -> &EnvConfig {
        &self.config
    }

    pub fn world(&self) -> &ArmWorld {
        &self.state.world
    }

    /// The reach target, or the top of the marker reach-color's
    /// instruction names (zero for other tasks).
    pub fn target(&self) -> [f32; 3] {
        self.state.target
    }

    /// The colour tasks: the index of the object the episode's instruction
    /// names, in `tasks::MARKER_COLORS` (reach-color) or
    /// `tasks::CUBE_COLORS` (lift-color); `None` for other tasks.
    pub fn named(&self) -> Option<usize> {
        self.config.task.is_color().then_some(self.state.named)
    }

    /// The episode's instruction (the task's fixed one for the tasks
    /// without colours).
    pub fn instruction(&self) -> &str {
        self.state
            .instruction
            .as_deref()
            .unwrap_or(self.config.task.instruction())
    }

    /// lift-color's cubes, in `tasks::CUBE_COLORS` order (empty for other
    /// tasks).
    pub fn color_cubes(&self) -> Vec<RigidBodyHandle> {
        self.state
            .color_cubes
            .iter()
            .map(|&(body, _)| body)
            .collect()
    }

    /// What the scripted expert of a colour task reads: the observation of
    /// its base task (reach: joints, end effector, the named marker's top
    /// as `target`; lift: joints, end effector and the named cube's pose),
    /// built from the simulator's own state with this tick's joint
    /// measurements, and that task's observation spec. `None` for the
    /// other tasks, whose observation already holds all that.
    pub fn expert_view(&self) -> Option<(Observation, ObservationSpec)> {
        if !self.config.task.is_color() {
            return None;
        }
        let base = EnvConfig {
            task: self.config.task.base(),
            cameras: Vec::new(),
            ..self.config.clone()
        };
        let spec = arm_spec(&self.model, &base).observation;
        let observed = &self.state.observation;
        let joints = 2 * self.model.joints.len();
        let mut state = observed.state[..joints].to_vec();
        let ee = self.model.ee_position(&state[..self.model.joints.len()]);
        state.extend(ee);
        match self.config.task {
            TaskKind::ReachColor => {
                let target = self.state.target;
                state.extend(target);
                state.extend((0..3).map(|k| target[k] - ee[k]));
            }
            _ => {
                let pose = self.named_cube_pose().expect("lift-color has cubes");
                state.extend(pose.translation.to_array());
                state.extend(pose.rotation.to_array());
            }
        }
        let view = Observation {
            state,
            images: Vec::new(),
            instruction: observed.instruction.clone(),
            timestamp: observed.timestamp,
        };
        Some((view, spec))
    }

    /// The pose of the cube the task is about: lift's cube, or the one
    /// lift-color's instruction names.
    fn named_cube_pose(&self) -> Option<rapier3d::math::Pose> {
        named_cube_pose(&self.state)
    }

    pub fn step_count(&self) -> u32 {
        self.state.step
    }

    pub fn horizon(&self) -> u32 {
        self.horizon
    }

    pub fn snapshot(&self) -> ArmState {
        self.state.clone()
    }

    pub fn restore(&mut self, snapshot: &ArmState) {
        self.state = snapshot.clone();
    }

    /// Renders the first configured camera (or the default one) now,
    /// without the pose jitter of the observations.
    pub fn render(&self) -> cerebellum_core::Image {
        match self.cameras.first() {
            Some(camera) => camera.render(&self.state.world),
            None => Camera::new(CameraConfig::default())
                .expect("the default camera is valid")
                .render(&self.state.world),
        }
    }

    fn score(&mut self) -> StepOutcome {
        let state = &mut self.state;
        let ee = state.world.ee_position();
        let last_tick = state.step >= self.horizon;
        match self.config.task {
            TaskKind::Reach | TaskKind::ReachColor => {
                let distance = tasks::distance(&ee, &state.target);
                let success = distance < tasks::REACH_SUCCESS_RADIUS;
                let mut rewards = RewardComponents::new()
                    .with(RewardComponents::TASK, tasks::reach_reward(distance));
                if last_tick {
                    rewards.set(RewardComponents::SUCCESS, success as u8 as f32);
                }
                StepOutcome {
                    rewards,
                    terminated: false,
                    truncated: last_tick,
                    success: Some(success),
                }
            }
            TaskKind::Lift | TaskKind::LiftColor => {
                let cube = named_cube_pose(state).expect("lift has a cube").translation;
                let cube = [cube.x, cube.y, cube.z];
                let gain = cube[2] - state.cube_start_height;
                // lift-color: the other cube raised as high fails the tick.
                let wrong = state
                    .color_cubes
                    .iter()
                    .enumerate()
                    .any(|(i, &(body, start))| {
                        i != state.named
                            && state.world.body_pose(body).translation.z - start
                                >= tasks::LIFT_HEIGHT
                    });
                let high = gain >= tasks::LIFT_HEIGHT && !wrong;
                state.held_ticks = if high { state.held_ticks + 1 } else { 0 };
                let hold_ticks =
                    (tasks::LIFT_HOLD_S * self.config.physics.control_rate_hz()).round() as u32;
                let success = state.held_ticks >= hold_ticks;
                let reward = tasks::lift_reward(&ee, &cube, state.cube_start_height);
                let mut rewards = RewardComponents::new().with(RewardComponents::TASK, reward);
                if success || last_tick {
                    rewards.set(RewardComponents::SUCCESS, success as u8 as f32);
                }
                StepOutcome {
                    rewards,
                    terminated: success,
                    truncated: last_tick && !success,
                    success: Some(success),
                }
            }
            TaskKind::Pendulum => unreachable!("checked in ArmEnv::new"),
        }
    }
}

fn arm_spec(model: &ArmModel, config: &EnvConfig) -> RobotSpec {
    let names = model.joint_names();
    let limits: Vec<(f32, f32)> = model.joints.iter().map(|j| (j.lower, j.upper)).collect();
    let padded: Vec<(f32, f32)> = limits
        .iter()
        .map(|(lo, hi)| (lo - JOINT_POSITION_MARGIN, hi + JOINT_POSITION_MARGIN))
        .collect();
    let xyz = ["x", "y", "z"];
    let bound = [(-WORKSPACE_BOUND, WORKSPACE_BOUND); 3];
    let mut fields = vec![
        FieldSpec::new("joint_position", Unit::Radian, &names, &padded),
        FieldSpec::new(
            "joint_velocity",
            Unit::RadianPerSecond,
            &names,
            &vec![(-MAX_JOINT_SPEED, MAX_JOINT_SPEED); names.len()],
        ),
        FieldSpec::new("ee_position", Unit::Meter, &xyz, &bound),
    ];
    match config.task {
        // The colour tasks' objects reach a policy through the camera only.
        TaskKind::ReachColor => {
            fields.pop();
        }
        TaskKind::LiftColor => {}
        TaskKind::Reach => {
            fields.push(FieldSpec::new("target", Unit::Meter, &xyz, &bound));
            // What a learner needs most, given directly rather than left
            // for the network to find as a difference of two inputs.
            let offset = [(-2.0 * WORKSPACE_BOUND, 2.0 * WORKSPACE_BOUND); 3];
            fields.push(FieldSpec::new("target_offset", Unit::Meter, &xyz, &offset));
        }
        _ => {
            fields.push(FieldSpec::new("cube_position", Unit::Meter, &xyz, &bound));
            fields.push(FieldSpec::new(
                "cube_orientation",
                Unit::Normalized,
                &["qx", "qy", "qz", "qw"],
                &[(-1.0, 1.0); 4],
            ));
        }
    }
    let cameras = config
        .cameras
        .iter()
        .map(|c| cerebellum_core::CameraSpec {
            name: c.name.clone(),
            height: c.height,
            width: c.width,
            channels: 3,
        })
        .collect();
    RobotSpec {
        name: model.name.clone(),
        observation: ObservationSpec {
            fields,
            cameras,
            instruction: true,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "joint_target",
                Unit::Radian,
                &names,
                &limits,
            )],
        },
        control_rate_hz: config.physics.control_rate_hz(),
    }
}

/// The colour tasks' scene, drawn after the rest of the episode's start:
/// reach-color's three markers (and `target`, the named one's top),
/// lift-color's two cubes; then which one the instruction names and the
/// instruction. Returns the named index, the instruction and lift-color's
/// cubes with their start heights; nothing for the other tasks.
fn color_scene(
    world: &mut ArmWorld,
    config: &EnvConfig,
    dynamics: &DynamicsSample,
    rng: &mut ChaCha8Rng,
    target: &mut [f32; 3],
) -> (usize, Option<String>, Vec<(RigidBodyHandle, f32)>) {
    use rand::Rng;
    let (colors, cubes): (&[tasks::Color], _) = match config.task {
        TaskKind::ReachColor => {
            let spots = tasks::sample_markers(rng);
            for (&xy, (_, rgb)) in spots.iter().zip(&tasks::MARKER_COLORS) {
                world.add_marker(xy, tasks::MARKER_RADIUS, tasks::MARKER_HEIGHT, *rgb);
            }
            (&tasks::MARKER_COLORS, Vec::new())
        }
        TaskKind::LiftColor => {
            let cube = CubeConfig {
                size: config.cube.size * dynamics.cube_size_scale,
                mass: config.cube.mass * dynamics.cube_mass_scale,
                friction: config.cube.friction * dynamics.cube_friction_scale,
            };
            let cubes = tasks::sample_cube_pair(rng)
                .iter()
                .zip(&tasks::CUBE_COLORS)
                .map(|(&(xy, yaw), (_, rgb))| {
                    let body = world.add_colored_cube(cube, xy, yaw, *rgb);
                    (body, world.body_pose(body).translation.z)
                })
                .collect();
            (&tasks::CUBE_COLORS, cubes)
        }
        _ => return (0, None, Vec::new()),
    };
    let drawn = rng.random_range(0..colors.len());
    let named = match &config.instruction {
        // Validated: it names exactly one of the colours.
        Some(text) => instructions::named_color(text, colors).unwrap_or(drawn),
        None => drawn,
    };
    if let Some(marker) = world.markers.get(named) {
        *target = marker.top();
    }
    // Drawn whether or not it is used, so the scene after it is the same.
    let drawn_instruction =
        instructions::draw(config.task, config.instructions, colors[named].0, rng);
    let instruction = config.instruction.clone().or(drawn_instruction);
    (named, instruction, cubes)
}

/// lift's cube, or the cube lift-color's instruction names.
fn named_cube_pose(state: &ArmState) -> Option<rapier3d::math::Pose> {
    match state.color_cubes.get(state.named) {
        Some(&(body, _)) => Some(state.world.body_pose(body)),
        None => state.world.cube_pose(),
    }
}

/// Reads the sensors: joint state with the configured noise, end-effector
/// and task fields, and the camera.
fn measure(state: &mut ArmState, config: &EnvConfig, spec: &RobotSpec) -> Observation {
    let world = &state.world;
    let mut values = Vec::with_capacity(spec.observation.state_len());
    let noise = |rng: &mut ChaCha8Rng, std: f32| {
        let draw: f32 = StandardNormal.sample(rng);
        draw * std
    };
    let random = &config.randomization;
    let positions = world.joint_positions();
    for q in &positions {
        values.push(q + noise(&mut state.rng, random.joint_position_noise));
    }
    for v in world.joint_velocities() {
        values.push(v + noise(&mut state.rng, random.joint_velocity_noise));
    }
    let ee = world.model.ee_position(&positions);
    match config.task {
        TaskKind::ReachColor => {}
        TaskKind::LiftColor => values.extend(ee),
        TaskKind::Reach => {
            values.extend(ee);
            values.extend(state.target);
            values.extend((0..3).map(|k| state.target[k] - ee[k]));
        }
        _ => {
            values.extend(ee);
            let pose = world.cube_pose().expect("lift has a cube");
            values.extend(pose.translation.to_array());
            values.extend(pose.rotation.to_array());
        }
    }
    // Keep a hard collision from turning into an out-of-spec observation.
    let limits = spec
        .observation
        .fields
        .iter()
        .flat_map(|f| f.lower.iter().zip(&f.upper));
    for (v, (&lo, &hi)) in values.iter_mut().zip(limits) {
        *v = v.clamp(lo, hi);
    }
    // One posed scene (and shadow map) for all cameras.
    let scene = (!state.cameras.is_empty()).then(|| crate::camera::Scene::new(world));
    let images = scene
        .iter()
        .flat_map(|scene| {
            state
                .cameras
                .iter()
                .map(move |camera| camera.render_scene(scene))
        })
        .collect();
    Observation {
        state: values,
        images,
        instruction: Some(
            state
                .instruction
                .clone()
                .unwrap_or_else(|| config.task.instruction().to_owned()),
        ),
        timestamp: state.step as f64 / config.physics.control_rate_hz(),
    }
}

impl Robot for ArmEnv {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        self.state = Self::initial_state(
            &self.model,
            &self.config,
            &self.cameras,
            &self.spec,
            request.seed,
        )
        .map_err(RobotError::Other)?;
        Ok(self.state.observation.clone())
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        Ok(self.state.observation.clone())
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.spec.action.check(command)?;
        let state = &mut self.state;
        state.pending.push_back(command.values.clone());
        if state.pending.len() > state.dynamics.action_latency_ticks as usize {
            let due = state.pending.pop_front().expect("queue is not empty");
            state.world.set_joint_targets(&due);
        }
        state.world.step_tick(&mut self.pipeline);
        state.step += 1;
        let outcome = self.score();
        self.state.observation = measure(&mut self.state, &self.config, &self.spec);
        Ok(outcome)
    }
}

/// Pendulum-v1 behind the `Robot` trait: observation (cos θ, sin θ, θ̇),
/// action a torque in [−2, 2] N·m, 20 Hz.
#[derive(Clone)]
pub struct PendulumEnv {
    spec: RobotSpec,
    pendulum: Pendulum,
}

impl Default for PendulumEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl PendulumEnv {
    pub fn new() -> Self {
        let spec = RobotSpec {
            name: "pendulum-v1".into(),
            observation: ObservationSpec {
                fields: vec![
                    FieldSpec::new(
                        "angle",
                        Unit::Normalized,
                        &["cos", "sin"],
                        &[(-1.0, 1.0); 2],
                    ),
                    FieldSpec::new(
                        "angular_velocity",
                        Unit::RadianPerSecond,
                        &["theta_dot"],
                        &[(-Pendulum::MAX_SPEED as f32, Pendulum::MAX_SPEED as f32)],
                    ),
                ],
                cameras: Vec::new(),
                instruction: false,
            },
            action: ActionSpec {
                fields: vec![FieldSpec::new(
                    "torque",
                    Unit::NewtonMeter,
                    &["tau"],
                    &[(-Pendulum::MAX_TORQUE as f32, Pendulum::MAX_TORQUE as f32)],
                )],
            },
            control_rate_hz: 1.0 / Pendulum::DT,
        };
        Self {
            spec,
            pendulum: Pendulum::new(),
        }
    }

    pub fn pendulum(&self) -> &Pendulum {
        &self.pendulum
    }

    fn observation(&self) -> Observation {
        Observation {
            state: self.pendulum.observation().to_vec(),
            images: Vec::new(),
            instruction: None,
            timestamp: self.pendulum.step_count() as f64 * Pendulum::DT,
        }
    }
}

impl Robot for PendulumEnv {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
        self.pendulum.reset(&mut rng);
        Ok(self.observation())
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        Ok(self.observation())
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.spec.action.check(command)?;
        let step = self.pendulum.step(command.values[0] as f64);
        Ok(StepOutcome {
            rewards: RewardComponents::new().with(RewardComponents::TASK, step.reward as f32),
            terminated: false,
            truncated: step.truncated,
            success: None,
        })
    }
}

/// Any simulated robot.
pub enum SimEnv {
    Arm(Box<ArmEnv>),
    Pendulum(PendulumEnv),
}

/// A snapshot of any simulated robot.
#[derive(Clone)]
pub enum SimSnapshot {
    Arm(Box<ArmState>),
    Pendulum(Pendulum),
}

impl SimEnv {
    /// A simulated robot for `config.task`; arm tasks need the arm model.
    pub fn new(config: EnvConfig, model: Option<Arc<ArmModel>>) -> Result<Self, String> {
        match (config.task, model) {
            (TaskKind::Pendulum, _) => {
                config.validate()?;
                Ok(SimEnv::Pendulum(PendulumEnv::new()))
            }
            (_, Some(model)) => Ok(SimEnv::Arm(Box::new(ArmEnv::new(model, config)?))),
            (task, None) => Err(format!("task `{task}` needs an arm")),
        }
    }

    pub fn snapshot(&self) -> SimSnapshot {
        match self {
            SimEnv::Arm(env) => SimSnapshot::Arm(Box::new(env.snapshot())),
            SimEnv::Pendulum(env) => SimSnapshot::Pendulum(env.pendulum.clone()),
        }
    }

    pub fn restore(&mut self, snapshot: &SimSnapshot) {
        match (self, snapshot) {
            (SimEnv::Arm(env), SimSnapshot::Arm(state)) => env.restore(state),
            (SimEnv::Pendulum(env), SimSnapshot::Pendulum(p)) => env.pendulum = p.clone(),
            _ => panic!("snapshot of another kind of robot"),
        }
    }

    pub fn as_arm(&self) -> Option<&ArmEnv> {
        match self {
            SimEnv::Arm(env) => Some(env),
            SimEnv::Pendulum(_) => None,
        }
    }

    fn robot(&mut self) -> &mut dyn Robot {
        match self {
            SimEnv::Arm(env) => env.as_mut(),
            SimEnv::Pendulum(env) => env,
        }
    }
}

impl Robot for SimEnv {
    fn spec(&self) -> &RobotSpec {
        match self {
            SimEnv::Arm(env) => env.spec(),
            SimEnv::Pendulum(env) => env.spec(),
        }
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        self.robot().reset(request)
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.robot().observe()
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.robot().apply(command)
    }
}
