//! The values that flow through the loop each tick: observations, actions and
//! action chunks. Plain `Vec`s and std types only, so firmware and every
//! crate can use them without a math library.

use serde::{Deserialize, Serialize};

/// One camera frame, H×W×C bytes, row-major, channels last (RGB for C = 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub camera: String,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub data: Vec<u8>,
}

/// What the robot measured at one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// State fields concatenated in `ObservationSpec::fields` order.
    pub state: Vec<f32>,
    /// One image per camera, in `ObservationSpec::cameras` order.
    pub images: Vec<Image>,
    pub instruction: Option<String>,
    /// Seconds on the robot's clock when the state was measured.
    pub timestamp: f64,
}

/// One command: joint targets (or torques) for one tick, in
/// `ActionSpec::fields` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub values: Vec<f32>,
}

impl Action {
    pub fn new(values: Vec<f32>) -> Self {
        Self { values }
    }
}

/// A sequence of actions one control tick apart; the first is for the tick
/// whose observation produced the chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionChunk {
    pub actions: Vec<Action>,
}

impl ActionChunk {
    pub fn single(action: Action) -> Self {
        Self {
            actions: vec![action],
        }
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Reward components by name; nothing is summed away before it is logged.
/// Kept sorted by name so that serialised transitions are reproducible.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardComponents(pub std::collections::BTreeMap<String, f32>);

impl RewardComponents {
    /// Component names the whole project agrees on.
    pub const TASK: &'static str = "task";
    pub const PROGRESS: &'static str = "progress";
    pub const SUCCESS: &'static str = "success";
    pub const INTERVENTION: &'static str = "intervention";
    pub const SAFETY: &'static str = "safety";
    /// −1 at the tick an operator's e-stop is pressed.
    pub const ESTOP: &'static str = "estop";

    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: f32) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: &str, value: f32) {
        self.0.insert(name.to_owned(), value);
    }

    pub fn get(&self, name: &str) -> Option<f32> {
        self.0.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f32)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// What the robot (or the simulator's ground truth) says about the tick that
/// a command was applied in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Ground-truth reward components; a real robot without a reward function
    /// leaves this empty and learned models fill it in later.
    pub rewards: RewardComponents,
    /// The episode reached a terminal state (no bootstrapping past it).
    pub terminated: bool,
    /// The episode hit its time limit (bootstrap from the last state).
    pub truncated: bool,
    /// The task's success test, where the robot knows it.
    pub success: Option<bool>,
}

impl StepOutcome {
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}
