//! Cerebellum's shared vocabulary: specs with units and limits, the values
//! that cross the control loop each tick, transitions with their provenance,
//! and the `Robot`, `Policy`, `RewardModel` and `Clock` traits.
//!
//! No physics, tensors or networking live here, and public types use plain
//! `Vec`s and std types so that firmware and every other crate can share them.

pub mod bounds;
mod clock;
mod message;
mod spec;
mod traits;
mod transition;

pub use clock::{Clock, SimClock, WallClock};
pub use message::{Action, ActionChunk, Image, Observation, RewardComponents, StepOutcome};
pub use spec::{
    ActionSpec, CameraSpec, FieldSpec, ObservationSpec, RATE_TOLERANCE, RobotSpec, SpecError,
    SpecMismatch, Unit, rates_match,
};
pub use traits::{
    Evaluation, Policy, PolicyError, PolicyOutput, ResetRequest, RewardModel, RewardModelError,
    Robot, RobotError, Sampling,
};
pub use transition::{Provenance, Transition};

#[cfg(test)]
mod tests;
