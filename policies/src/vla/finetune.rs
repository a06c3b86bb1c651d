//! What RL fine-tuning trains of a cloned VLA (`[finetune]` of a forked
//! run), and the low-rank adapters of the `lora` mode.
//!
//! - `all`: every tensor, as cloning trained them.
//! - `head`: the actor, its log σ and the critic; the encoder (the
//!   convolutions, the word embeddings, saliences and FiLM layer) is frozen,
//!   so its output is computed once per decision and cached
//!   ([`super::VlaDecisions`] then carries features instead of frames).
//!   SmolVLA trains its action expert only.
//! - `lora`: low-rank adapters (Hu et al. 2021, "LoRA") on every
//!   convolution and linear layer of the trunk (the convolutions, the FiLM
//!   layer and the actor), W' = W + (α / r)·B·A with B (out × r) starting
//!   at zero and A (r × in) random, so training starts from the cloned
//!   policy exactly; the base stays frozen (and can be shared by several
//!   adapters: a fine-tuned checkpoint names it by its weights hash). The
//!   critic is new for RL and log σ is the exploration noise: both train
//!   whole. The backward pass still runs through the trunk, so `lora` saves
//!   optimiser state and checkpoint size, not compute.

use cerebellum_core::bounds::Limits;
use serde::{Deserialize, Serialize};

pub const LORA_RANK: Limits<usize> = Limits::closed(1, 64).unit("ranks");
pub const LORA_ALPHA: Limits<f32> = Limits::open_closed(0.0, 1024.0);

/// Which tensors RL trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainScope {
    #[default]
    All,
    Head,
    Lora,
}

impl TrainScope {
    pub fn name(self) -> &'static str {
        match self {
            TrainScope::All => "all",
            TrainScope::Head => "head",
            TrainScope::Lora => "lora",
        }
    }
}

/// The scope and the adapters' shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Finetune {
    pub train: TrainScope,
    /// r: the adapters' rank (`lora`).
    pub lora_rank: usize,
    /// α: the adapters' update is scaled by α / r.
    pub lora_alpha: f32,
}

impl Default for Finetune {
    fn default() -> Self {
        Self {
            train: TrainScope::All,
            lora_rank: 4,
            lora_alpha: 8.0,
        }
    }
}

impl Finetune {
    /// Bounds on every key, named under `at` (`finetune`).
    pub fn validate_at(&self, at: &str) -> Result<(), String> {
        LORA_RANK.check(&format!("{at}.lora_rank"), self.lora_rank)?;
        LORA_ALPHA.check(&format!("{at}.lora_alpha"), self.lora_alpha)?;
        Ok(())
    }

    /// The adapters' scale α / r.
    pub fn lora_scale(&self) -> f64 {
        f64::from(self.lora_alpha) / self.lora_rank as f64
    }
}
