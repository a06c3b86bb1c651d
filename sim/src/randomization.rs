//! Domain randomisation from a seeded config: every draw comes from the
//! episode's generator, so the same seed gives the same randomised world.
//!
//! Each setting is a relative range (a scale drawn uniformly from
//! `[1 − r, 1 + r]`) or an absolute one; zero turns it off, which is the
//! default.

use cerebellum_core::bounds::Limits;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Randomization {
    /// Relative range of each link's mass (and inertia).
    pub link_mass: f32,
    /// Relative range of each joint's passive damping.
    pub joint_damping: f32,
    /// Relative range of each joint's dry friction.
    pub joint_friction: f32,
    /// Relative range of each servo's stiffness and damping.
    pub motor_gain: f32,
    /// Relative range of the cube's edge length.
    pub cube_size: f32,
    /// Relative range of the cube's mass.
    pub cube_mass: f32,
    /// Relative range of the cube's friction.
    pub cube_friction: f32,
    /// Largest camera displacement along each axis (m).
    pub camera_translation: f32,
    /// Largest camera rotation about each axis (rad).
    pub camera_rotation: f32,
    /// Standard deviation of Gaussian noise on joint positions (rad).
    pub joint_position_noise: f32,
    /// Standard deviation of Gaussian noise on joint velocities (rad/s).
    pub joint_velocity_noise: f32,
    /// Commands take effect this many ticks late, drawn from 0..=max.
    pub max_action_latency_ticks: u32,
}

/// One episode's draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicsSample {
    pub link_mass_scale: Vec<f32>,
    pub joint_damping_scale: Vec<f32>,
    pub joint_friction_scale: Vec<f32>,
    pub motor_gain_scale: Vec<f32>,
    pub cube_size_scale: f32,
    pub cube_mass_scale: f32,
    pub cube_friction_scale: f32,
    pub camera_translation: [f32; 3],
    pub camera_rotation: [f32; 3],
    pub action_latency_ticks: u32,
}

/// Uniform in [−range, range]; draws even when the range is zero, so the
/// stream of draws does not depend on which settings are on.
fn offset<R: Rng + ?Sized>(rng: &mut R, range: f32) -> f32 {
    let unit: f32 = rng.random();
    range * (2.0 * unit - 1.0)
}

fn scale<R: Rng + ?Sized>(rng: &mut R, range: f32) -> f32 {
    1.0 + offset(rng, range)
}

/// A relative range r draws a scale from [1 − r, 1 + r], which must stay
/// positive.
pub const RELATIVE_RANGE: Limits<f32> = Limits::closed_open(0.0, 1.0);
pub const CAMERA_TRANSLATION: Limits<f32> = Limits::closed(0.0, 0.5).unit("m");
pub const CAMERA_ROTATION: Limits<f32> = Limits::closed(0.0, 1.0).unit("rad");
pub const JOINT_POSITION_NOISE: Limits<f32> = Limits::closed(0.0, 1.0).unit("rad");
pub const JOINT_VELOCITY_NOISE: Limits<f32> = Limits::closed(0.0, 10.0).unit("rad/s");
/// Two seconds at 50 Hz.
pub const MAX_ACTION_LATENCY_TICKS: Limits<u32> = Limits::closed(0, 100).unit("ticks");

impl Randomization {
    /// Bounds on every key (`randomization.*`).
    pub fn validate(&self) -> Result<(), String> {
        let relative = [
            ("link_mass", self.link_mass),
            ("joint_damping", self.joint_damping),
            ("joint_friction", self.joint_friction),
            ("motor_gain", self.motor_gain),
            ("cube_size", self.cube_size),
            ("cube_mass", self.cube_mass),
            ("cube_friction", self.cube_friction),
        ];
        for (name, value) in relative {
            RELATIVE_RANGE.check(&format!("randomization.{name}"), value)?;
        }
        let absolute = [
            (
                "camera_translation",
                CAMERA_TRANSLATION,
                self.camera_translation,
            ),
            ("camera_rotation", CAMERA_ROTATION, self.camera_rotation),
            (
                "joint_position_noise",
                JOINT_POSITION_NOISE,
                self.joint_position_noise,
            ),
            (
                "joint_velocity_noise",
                JOINT_VELOCITY_NOISE,
                self.joint_velocity_noise,
            ),
        ];
        for (name, limits, value) in absolute {
            limits.check(&format!("randomization.{name}"), value)?;
        }
        MAX_ACTION_LATENCY_TICKS.check(
            "randomization.max_action_latency_ticks",
            self.max_action_latency_ticks,
        )
    }

    /// Draws one episode's dynamics for an arm with `links` bodies and
    /// `joints` actuated joints. Always draws the same number of values, so
    /// turning one setting on does not shift the draws of the others.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        links: usize,
        joints: usize,
    ) -> DynamicsSample {
        let mut many = |n: usize, range: f32| (0..n).map(|_| scale(rng, range)).collect::<Vec<_>>();
        let link_mass_scale = many(links, self.link_mass);
        let joint_damping_scale = many(joints, self.joint_damping);
        let joint_friction_scale = many(joints, self.joint_friction);
        let motor_gain_scale = many(joints, self.motor_gain);
        DynamicsSample {
            link_mass_scale,
            joint_damping_scale,
            joint_friction_scale,
            motor_gain_scale,
            cube_size_scale: scale(rng, self.cube_size),
            cube_mass_scale: scale(rng, self.cube_mass),
            cube_friction_scale: scale(rng, self.cube_friction),
            camera_translation: [(); 3].map(|_| offset(rng, self.camera_translation)),
            camera_rotation: [(); 3].map(|_| offset(rng, self.camera_rotation)),
            action_latency_ticks: rng.random::<u32>() % (self.max_action_latency_ticks + 1),
        }
    }
}
