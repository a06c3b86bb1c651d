//! Policies: a Gaussian MLP policy and value function on a fused,
//! hand-differentiated MLP path (fast at control-policy sizes), running
//! observation statistics, Adam, and checkpoints that carry their contract.
//!
//! Learners train any of them through one interface (`trainable`).
//!
//! candle is the tensor library for the large models (vision-language
//! policies, reward models) and the gradient reference for the fused path.

pub mod candle_gaussian;
mod candle_grads;
pub mod checkpoint;
pub mod device;
pub mod fused_training;
pub mod gaussian;
pub(crate) mod linalg;
pub mod mlp;
pub mod normalizer;
pub mod optim;
pub mod trainable;
pub mod vla;
pub mod weights_hash;

pub use candle_gaussian::CandleGaussianPolicy;
pub use checkpoint::{CheckpointError, Contract, TrainingProvenance};
pub use gaussian::{ActionMode, Draw, GaussianConfig, GaussianMlpPolicy};
pub use mlp::{Mlp, MlpTape};
pub use normalizer::Normalizer;
pub use optim::Adam;
pub use trainable::{
    Decision, EncodedDecisions, OutputGrads, Outputs, ParameterGroup, TrainablePolicy, Wants,
};
pub use vla::{VlaConfig, VlaPolicy};
pub use weights_hash::{WeightsHash, WeightsMismatch};
