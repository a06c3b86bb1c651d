//! Rewards where the simulator has none: learned progress and success
//! models, ensembles of them, rewards from people and the envelope, the
//! transforms that combine them, and the measures that say how far a
//! learned reward is from the truth before anyone trusts it.
//!
//! Formulas and sources: ../shared/ALGORITHMS.md §3–§5.
//!
//! - [`shaping`]: the reward transforms (§4) as small pure functions.
//! - [`ensemble`]: combining members' rewards, and their spread as an
//!   out-of-distribution alarm (§3.5).
//! - [`evaluation`]: EPIC distance and Spearman correlation (§5).
//! - [`progress`]: the stage-aware progress model (§3.1).
//! - [`success`]: the success classifier and its k-frame detector (§3.3).
//! - [`ra_bc`]: reward-aligned behaviour cloning weights from progress.
//! - [`fields`]: which observation fields a model reads.
//! - [`contract`]: the on-disk form they share, checked against the robot
//!   at load.
//! - [`labeller`]: turns a stream of transitions into learned reward
//!   components, each stamped with the models' version.

pub mod contract;
pub mod ensemble;
pub mod evaluation;
pub mod fields;
pub mod labeller;
mod layers;
pub mod progress;
pub mod ra_bc;
pub mod shaping;
pub mod success;
