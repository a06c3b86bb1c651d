//! Learning on the board: rollouts through the tick stages, advantage
//! estimators, the PPO loss, the training loop and evaluation.

pub mod advantage;
pub mod bc;
pub mod chunk_credit;
pub mod config;
pub mod estimators;
pub mod eval;
pub mod finetune;
pub mod group_advantages;
pub mod labeller_thread;
pub mod online;
pub mod ppo;
pub mod rollout;
pub mod trainer;
pub mod vla;

pub use config::{Algo, TrainConfig};
pub use trainer::{IterationReport, Trainer};
