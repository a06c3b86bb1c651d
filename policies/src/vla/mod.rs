//! The vision-language-action policy: it sees its camera, reads its
//! instruction and acts in chunks.
//!
//! - [`config`]: the `[vla]` settings (chunk length, convolutions, widths).
//! - [`tokenizer`]: the word-level instruction tokenizer (HF `tokenizers`).
//! - [`model`]: the network on candle autograd (conv + FiLM, soft-argmax
//!   keypoints, MLP head to a Gaussian action chunk, critic, auxiliary head).
//! - [`policy`]: [`VlaPolicy`], a `Policy` and a `TrainablePolicy`.
//! - [`finetune`]: what RL fine-tuning trains (`all`, `head`, `lora`).
//! - [`checkpoint`]: weights + tokenizer + the contract's `vla` section;
//!   a fine-tuned checkpoint carries its head or adapters on a base it
//!   names by weights hash.

pub mod checkpoint;
pub mod config;
mod conv;
pub mod finetune;
pub mod model;
pub mod policy;
mod soft_argmax;
pub mod tokenizer;

pub use config::VlaConfig;
pub use finetune::{Finetune, TrainScope};
pub use policy::{Augment, ImitationLoss, VlaDecisions, VlaPolicy, VlaWorkspace};
pub use tokenizer::InstructionTokenizer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_finetune;
