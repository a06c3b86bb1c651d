//! The rapier3d simulation: URDF arms as multibodies with position servos,
//! tasks with their rewards and success tests, scripted experts, a software
//! camera, domain randomisation, snapshots, and a vectorised environment.
//!
//! The physics step is `ArmWorld::step_physics`; one control tick is
//! `substeps` of it.

pub mod arm_model;
pub mod camera;
pub mod env;
pub mod expert;
pub mod hull;
pub mod instructions;
pub mod kinematics;
pub mod pendulum;
pub mod randomization;
pub mod robot_config;
pub mod tasks;
pub mod urdf_files;
pub mod vec_env;
pub mod world;

pub use arm_model::{ArmModel, ArmOptions, ModelError};
pub use camera::{Camera, CameraConfig};
pub use env::{ArmEnv, ArmState, EnvConfig, PendulumEnv, SimEnv, SimSnapshot};
pub use expert::ScriptedExpert;
pub use instructions::InstructionSet;
pub use randomization::Randomization;
pub use tasks::TaskKind;
pub use vec_env::{VecEnv, VecStep};
pub use world::{ArmWorld, CubeConfig, PhysicsConfig};

pub use urdf_files::{so101_source_dir, so101_urdf};
