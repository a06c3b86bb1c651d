//! The classic pendulum swing-up, ported from gymnasium's Pendulum-v1.
//!
//! A small, fast, fully deterministic task whose numbers can be checked
//! against a published reference, unlike the rapier arms.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// Gymnasium's Pendulum-v1: swing a frictionless pendulum up and balance it.
///
/// The state is the angle θ (0 is upright, ±π hangs straight down, positive
/// counter-clockwise; never wrapped) and the angular velocity θ̇. One step with
/// torque `u` does, with g = 10, m = 1, l = 1 and dt = 0.05:
///
/// ```text
/// u     = clip(u, -2, 2)
/// cost  = angle_normalize(θ)² + 0.1 θ̇² + 0.001 u²
/// θ̇'    = clip(θ̇ + (3g / (2l) · sin θ + 3 / (m l²) · u) · dt, -8, 8)
/// θ'    = θ + θ̇' · dt
/// reward = -cost
/// ```
///
/// so the reward is charged on the state *before* the step, and the
/// observation is `[cos θ', sin θ', θ̇']` as f32. Episodes never terminate and
/// are truncated after [`Pendulum::HORIZON`] steps, as gymnasium's `TimeLimit`
/// wrapper does for Pendulum-v1. Reset draws θ ~ U(-π, π) and θ̇ ~ U(-1, 1).
///
/// Source: gymnasium `gymnasium/envs/classic_control/pendulum.py`
/// (`PendulumEnv.step`, `reset`, `_get_obs`, `angle_normalize`). The state is
/// f64 and every expression keeps gymnasium's operation order, so a trajectory
/// matches numpy's float64 one to the last bit or so;
/// `tests/reference/pendulum_reference.py` generates the trajectories the
/// tests compare against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pendulum {
    theta: f64,
    theta_dot: f64,
    step_count: u32,
}

/// What one [`Pendulum::step`] produced besides the new state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PendulumStep {
    /// `-cost` of the state and clipped torque the step started from.
    pub reward: f64,
    /// The episode has reached [`Pendulum::HORIZON`] steps.
    pub truncated: bool,
}

impl Pendulum {
    pub const GRAVITY: f64 = 10.0;
    pub const MASS: f64 = 1.0;
    pub const LENGTH: f64 = 1.0;
    pub const DT: f64 = 0.05;
    pub const MAX_TORQUE: f64 = 2.0;
    pub const MAX_SPEED: f64 = 8.0;
    /// Gymnasium registers Pendulum-v1 with `max_episode_steps=200`.
    pub const HORIZON: u32 = 200;

    const RESET_MAX_SPEED: f64 = 1.0;

    /// Hanging straight down at rest. Gymnasium has no state before its first
    /// reset; this one is at least an equilibrium. Call [`Pendulum::reset`] or
    /// [`Pendulum::reset_to`] to start an episode.
    pub fn new() -> Self {
        Self {
            theta: PI,
            theta_dot: 0.0,
            step_count: 0,
        }
    }

    /// Starts an episode from θ ~ U(-π, π), θ̇ ~ U(-1, 1), drawn in that order.
    pub fn reset<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) {
        let theta = rng.random_range(-PI..PI);
        let theta_dot = rng.random_range(-Self::RESET_MAX_SPEED..Self::RESET_MAX_SPEED);
        self.reset_to(theta, theta_dot);
    }

    /// Starts an episode from a chosen state, for reproducible tests and
    /// evaluation. Neither value is clipped, matching gymnasium's custom
    /// reset bounds.
    pub fn reset_to(&mut self, theta: f64, theta_dot: f64) {
        debug_assert!(
            theta.is_finite() && theta_dot.is_finite(),
            "pendulum state must be finite, got θ = {theta}, θ̇ = {theta_dot}"
        );
        self.theta = theta;
        self.theta_dot = theta_dot;
        self.step_count = 0;
    }

    /// `[cos θ, sin θ, θ̇]`, computed in f64 and then rounded to f32 as
    /// gymnasium's `_get_obs` does.
    pub fn observation(&self) -> [f32; 3] {
        [
            self.theta.cos() as f32,
            self.theta.sin() as f32,
            self.theta_dot as f32,
        ]
    }

    /// `(θ, θ̇)`, with θ unwrapped.
    pub fn state(&self) -> (f64, f64) {
        (self.theta, self.theta_dot)
    }

    /// Steps taken since the last reset.
    pub fn step_count(&self) -> u32 {
        self.step_count
    }

    /// Applies `torque` for one `DT`, clipped to ±[`Pendulum::MAX_TORQUE`].
    ///
    /// The torque must be finite; callers validate actions before they reach
    /// the simulator, so debug builds panic on anything else. In release
    /// builds an infinite torque clips like any other and a NaN poisons the
    /// state. Stepping past the horizon keeps integrating and keeps reporting
    /// `truncated`.
    pub fn step(&mut self, torque: f64) -> PendulumStep {
        debug_assert!(
            torque.is_finite(),
            "pendulum torque must be finite, got {torque}"
        );
        let (g, m, l, dt) = (Self::GRAVITY, Self::MASS, Self::LENGTH, Self::DT);
        let (theta, theta_dot) = (self.theta, self.theta_dot);

        // Each expression keeps gymnasium's association order so the f64
        // rounding matches numpy's float64 step for step.
        let torque = torque.clamp(-Self::MAX_TORQUE, Self::MAX_TORQUE);
        let angle_error = angle_normalize(theta);
        let cost =
            angle_error * angle_error + 0.1 * (theta_dot * theta_dot) + 0.001 * (torque * torque);

        let angular_acceleration = 3.0 * g / (2.0 * l) * theta.sin() + 3.0 / (m * (l * l)) * torque;
        let new_theta_dot =
            (theta_dot + angular_acceleration * dt).clamp(-Self::MAX_SPEED, Self::MAX_SPEED);
        // Semi-implicit Euler: the angle advances with the *new* velocity.
        self.theta = theta + new_theta_dot * dt;
        self.theta_dot = new_theta_dot;
        self.step_count = self.step_count.saturating_add(1);

        PendulumStep {
            reward: -cost,
            truncated: self.step_count >= Self::HORIZON,
        }
    }
}

impl Default for Pendulum {
    fn default() -> Self {
        Self::new()
    }
}

/// Wraps an angle into [-π, π], bit for bit like gymnasium's
/// `((x + pi) % (2 * pi)) - pi`.
///
/// Python's `%` takes the sign of the divisor, which is `rem_euclid` for a
/// positive divisor, not Rust's `%`. Both ±π map to -π, but rounding blurs
/// the seam in both directions: the float just below +π also maps to -π, and
/// the float just below -π maps to +π. Gymnasium does exactly the same.
pub fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde::Deserialize;

    const OBSERVATION_TOLERANCE: f64 = 1e-6;
    const REWARD_TOLERANCE: f64 = 1e-9;

    #[derive(Deserialize)]
    struct ReferenceFixture {
        cases: Vec<ReferenceCase>,
    }

    #[derive(Deserialize)]
    struct ReferenceCase {
        name: String,
        theta0: f64,
        theta_dot0: f64,
        actions: Vec<f64>,
        initial_observation: [f64; 3],
        observations: Vec<[f64; 3]>,
        rewards: Vec<f64>,
    }

    fn assert_observation_close(actual: [f32; 3], expected: [f64; 3], context: &str) {
        for (component, (&actual, &expected)) in ["cos θ", "sin θ", "θ̇"]
            .iter()
            .zip(actual.iter().zip(expected.iter()))
        {
            let actual = f64::from(actual);
            assert!(
                (actual - expected).abs() <= OBSERVATION_TOLERANCE,
                "{context}: observation {component} is {actual}, reference {expected}"
            );
        }
    }

    #[test]
    fn matches_gymnasium_reference_trajectories() {
        let fixture: ReferenceFixture =
            serde_json::from_str(include_str!("../tests/fixtures/pendulum_reference.json"))
                .expect("pendulum reference fixture parses");
        assert!(
            fixture.cases.len() >= 2,
            "fixture should hold several cases"
        );

        for case in &fixture.cases {
            assert_eq!(
                case.actions.len(),
                Pendulum::HORIZON as usize,
                "{}",
                case.name
            );
            assert_eq!(case.observations.len(), case.actions.len(), "{}", case.name);
            assert_eq!(case.rewards.len(), case.actions.len(), "{}", case.name);

            let mut pendulum = Pendulum::new();
            pendulum.reset_to(case.theta0, case.theta_dot0);
            assert_observation_close(
                pendulum.observation(),
                case.initial_observation,
                &format!("case {} after reset", case.name),
            );

            for (index, &action) in case.actions.iter().enumerate() {
                let step_number = index + 1;
                let context = format!(
                    "case {} diverged on step {step_number} (action {action})",
                    case.name
                );
                let outcome = pendulum.step(action);

                assert_observation_close(
                    pendulum.observation(),
                    case.observations[index],
                    &context,
                );
                let expected_reward = case.rewards[index];
                assert!(
                    (outcome.reward - expected_reward).abs() <= REWARD_TOLERANCE,
                    "{context}: reward {}, reference {expected_reward}",
                    outcome.reward
                );
                assert_eq!(
                    outcome.truncated,
                    step_number == Pendulum::HORIZON as usize,
                    "{context}: truncation flag"
                );
            }
        }
    }

    #[test]
    fn angle_normalize_matches_python_modulo() {
        // Expected values printed by numpy's ((x + pi) % (2 * pi)) - pi.
        let cases = [
            (0.0, 0.0),
            (-0.0, 0.0),
            (1.0, 1.0),
            (-1.0, -1.0),
            (1.5 * PI, -0.5 * PI),
            (-1.5 * PI, 0.5 * PI),
            (2.0 * PI, 0.0),
            (-2.0 * PI, 0.0),
            (7.0, 0.716_814_692_820_413_8),
            (-7.0, -0.716_814_692_820_413_8),
            (100.0, -0.530_964_914_873_376_2),
            (-100.0, 0.530_964_914_873_383_3),
            // The seam: both ±π land on -π, and so does the float just
            // below +π, because x + π rounds up to exactly 2π; the float just
            // below -π lands on +π, because fmod's tiny negative remainder
            // plus 2π rounds up to 2π.
            (PI, -PI),
            (-PI, -PI),
            (PI.next_down(), -PI),
            ((-PI).next_down(), PI),
            ((-PI).next_up(), (-PI).next_up()),
            (-1e-300, 0.0),
        ];
        for (input, expected) in cases {
            assert_eq!(
                angle_normalize(input),
                expected,
                "angle_normalize({input:e})"
            );
        }
    }

    #[test]
    fn torque_beyond_the_limit_is_clipped() {
        for (excessive, limit) in [(5.0, Pendulum::MAX_TORQUE), (-5.0, -Pendulum::MAX_TORQUE)] {
            let mut pushed_hard = Pendulum::new();
            let mut pushed_at_limit = Pendulum::new();
            pushed_hard.reset_to(0.3, -0.4);
            pushed_at_limit.reset_to(0.3, -0.4);

            let hard = pushed_hard.step(excessive);
            let at_limit = pushed_at_limit.step(limit);

            assert_eq!(hard, at_limit, "torque {excessive} vs {limit}");
            assert_eq!(
                pushed_hard, pushed_at_limit,
                "torque {excessive} vs {limit}"
            );
        }
    }

    #[test]
    fn speed_is_clipped_at_max_speed() {
        for direction in [1.0, -1.0] {
            let mut pendulum = Pendulum::new();
            // Gravity and torque both accelerate the already fast pendulum:
            // 7.9 + (15 + 6) · 0.05 would be 8.95 unclipped.
            pendulum.reset_to(direction * 0.5 * PI, direction * 7.9);
            pendulum.step(direction * Pendulum::MAX_TORQUE);

            let (theta, theta_dot) = pendulum.state();
            assert_eq!(theta_dot, direction * Pendulum::MAX_SPEED);
            assert_eq!(
                theta,
                direction * 0.5 * PI + direction * Pendulum::MAX_SPEED * Pendulum::DT
            );
            assert_eq!(
                pendulum.observation()[2],
                (direction * Pendulum::MAX_SPEED) as f32
            );

            for _ in 0..100 {
                pendulum.step(direction * Pendulum::MAX_TORQUE);
                assert!(pendulum.state().1.abs() <= Pendulum::MAX_SPEED);
            }
        }
    }

    #[test]
    fn truncates_at_exactly_the_horizon() {
        let mut pendulum = Pendulum::new();
        pendulum.reset_to(1.0, 0.0);
        for step_number in 1..Pendulum::HORIZON {
            assert!(
                !pendulum.step(0.5).truncated,
                "truncated early on step {step_number}"
            );
        }
        assert!(
            pendulum.step(0.5).truncated,
            "not truncated on step {}",
            Pendulum::HORIZON
        );
        assert_eq!(pendulum.step_count(), Pendulum::HORIZON);

        pendulum.reset_to(1.0, 0.0);
        assert_eq!(pendulum.step_count(), 0);
        assert!(!pendulum.step(0.5).truncated);
    }

    #[test]
    fn reset_draws_within_bounds_and_is_seed_deterministic() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut replay_rng = ChaCha8Rng::seed_from_u64(7);
        let mut pendulum = Pendulum::new();
        let mut replay = Pendulum::new();
        for _ in 0..1000 {
            pendulum.step(1.0);
            pendulum.reset(&mut rng);
            replay.reset(&mut replay_rng);

            let (theta, theta_dot) = pendulum.state();
            assert!((-PI..PI).contains(&theta), "θ = {theta}");
            assert!((-1.0..1.0).contains(&theta_dot), "θ̇ = {theta_dot}");
            assert_eq!(pendulum.step_count(), 0);
            assert_eq!(pendulum, replay);
        }
    }

    #[test]
    fn state_survives_a_serde_round_trip() {
        let mut pendulum = Pendulum::new();
        pendulum.reset_to(-2.5, 0.25);
        pendulum.step(1.5);
        // Through a `Value`, not text: serde_json's default float parser can
        // miss the last bit of an f64 unless its `float_roundtrip` feature is on.
        let value = serde_json::to_value(&pendulum).expect("serialises");
        let restored: Pendulum = serde_json::from_value(value).expect("deserialises");
        assert_eq!(restored, pendulum);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "pendulum torque must be finite")]
    fn non_finite_torque_panics_in_debug_builds() {
        Pendulum::new().step(f64::NAN);
    }
}
