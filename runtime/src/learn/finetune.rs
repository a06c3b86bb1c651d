//! RL fine-tuning of a cloned vision-language policy (`train --resume
//! VLA_RUN --out NEW`, the `[finetune]` table): what trains, how chunks
//! are played while collecting, and the memory the run may use.
//!
//! The learners are the ones every policy trains with (PPO with chunk GAE,
//! GRPO from identical snapshots; `trainer.rs`), through the learner
//! interface; this module sizes the run and refuses one that would not fit
//! its memory budget before anything trains.

use cerebellum_core::RobotSpec;
use cerebellum_core::bounds::Limits;
use cerebellum_policies::TrainablePolicy;
use cerebellum_policies::checkpoint::Contract;
use cerebellum_policies::vla::checkpoint::BaseWeights;
use cerebellum_policies::vla::{Finetune, TrainScope, VlaConfig, VlaPolicy};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// From the policies' log σ floor to σ = e.
pub const LOG_STD: Limits<f32> = Limits::closed(cerebellum_policies::gaussian::LOG_STD_FLOOR, 1.0);
pub const EXECUTE: Limits<usize> = Limits::closed(1, 64).unit("actions");
pub const MEMORY_BUDGET: Limits<f64> = Limits::closed(64.0, 1_048_576.0).unit("MiB");

/// The `[finetune]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// `head`: actor, log σ and critic on the frozen encoder (whose
    /// features are cached per decision); `lora`: low-rank adapters on the
    /// trunk, base frozen; `all`: everything.
    pub train: TrainScope,
    pub lora_rank: usize,
    pub lora_alpha: f32,
    /// Actions of each chunk played before the policy is asked again, in
    /// training and in the run's evaluations (the loop's `run` plays
    /// H − `--chunk-lead`: 8 of 10 by default).
    pub execute: usize,
    /// The exploration noise RL starts from: every chunk position's log σ
    /// (normalised action units) is set to this before the first rollout.
    /// Cloning never trains σ (it fits the means), so the cloned policy
    /// carries its initial σ, which is far too wide to act well by.
    pub log_std: Option<f32>,
    /// The run is refused before it starts when its estimated peak
    /// resident memory exceeds this (or the memory the machine has free).
    pub memory_budget_mib: f64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        let adapters = Finetune::default();
        Self {
            train: TrainScope::Head,
            lora_rank: adapters.lora_rank,
            lora_alpha: adapters.lora_alpha,
            execute: 8,
            log_std: Some(-3.0),
            // A Jetson Orin Nano has 8 GiB shared by CPU and GPU.
            memory_budget_mib: 4096.0,
        }
    }
}

impl FinetuneConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.scope().validate_at("finetune")?;
        EXECUTE.check("finetune.execute", self.execute)?;
        if let Some(log_std) = self.log_std {
            LOG_STD.check("finetune.log_std", log_std)?;
        }
        MEMORY_BUDGET.check("finetune.memory_budget_mib", self.memory_budget_mib)?;
        Ok(())
    }

    /// The policy-side settings.
    pub fn scope(&self) -> Finetune {
        Finetune {
            train: self.train,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
        }
    }
}

/// The cloned VLA in `from`, made ready to fine-tune as `settings` say
/// (scope, adapters drawn from `seed`, exploration noise), with its
/// contract and the base a fine-tune of it names. A checkpoint that is
/// itself a fine-tune on a base is refused: a fine-tune starts from one
/// that holds every tensor.
pub fn prepare(
    from: &Path,
    spec: &RobotSpec,
    settings: &FinetuneConfig,
    seed: u64,
) -> anyhow::Result<(VlaPolicy, Contract, BaseWeights)> {
    let (mut policy, contract) = VlaPolicy::load(from, Some(spec))?;
    if let Some(base) = contract
        .vla
        .as_ref()
        .and_then(|v| v.finetune.as_ref())
        .and_then(|f| f.base.as_ref())
    {
        anyhow::bail!(
            "{} is itself a fine-tune on {}: fine-tune from a run that holds every tensor",
            from.display(),
            base.path
        );
    }
    anyhow::ensure!(
        settings.execute <= policy.horizon(),
        "finetune.execute = {} but the policy plans chunks of {} actions",
        settings.execute,
        policy.horizon()
    );
    policy
        .set_finetune(&settings.scope(), seed)
        .map_err(|e| anyhow::anyhow!("[finetune]: {e}"))?;
    if let Some(log_std) = settings.log_std {
        policy.set_log_std(log_std)?;
    }
    let base = BaseWeights {
        path: from
            .canonicalize()
            .unwrap_or_else(|_| from.to_path_buf())
            .display()
            .to_string(),
        weights_sha256: contract.weights_sha256.clone(),
    };
    Ok((policy, contract, base))
}

/// What a fine-tuning run holds at its peak, estimated before it starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Resident now (the process, the loaded policy, the simulators).
    pub resident_mib: f64,
    /// One iteration's transitions: each tick's observation (its camera
    /// frame) twice (the observation and the next one), plus bookkeeping.
    pub rollout_mib: f64,
    /// The encoded update batch (frames, or cached features for `head`).
    pub batch_mib: f64,
    /// Activations and gradients of the largest forward pass (a minibatch
    /// through the trunk, or a pass of values over the rollout).
    pub activations_mib: f64,
    pub total_mib: f64,
}

const MIB: f64 = 1024.0 * 1024.0;
/// Bytes of a transition besides its frame (state, actions, rewards map,
/// provenance, allocator overhead), measured order of magnitude.
const TRANSITION_OVERHEAD: f64 = 1500.0;
/// Rows of the largest inference pass (`VlaPolicy` bounds passes to this).
const PASS_ROWS: f64 = 32.0;

/// The estimate for collecting `ticks` transitions per iteration and
/// updating in minibatches of `minibatch` with `scope` on `model`.
pub fn estimate(
    model: &VlaConfig,
    scope: TrainScope,
    ticks: usize,
    execute: usize,
    minibatch: usize,
    resident_mib: f64,
) -> MemoryEstimate {
    let side = model.image_size as f64;
    let frame = side * side * 3.0;
    let rollout = ticks as f64 * (2.0 * frame + TRANSITION_OVERHEAD) / MIB;
    let decisions = ticks.div_ceil(execute.max(1)) as f64;
    let row = match scope {
        TrainScope::Head => (model.keypoints() + model.text_width) as f64 * 4.0,
        _ => frame,
    };
    let batch = decisions * (row + 512.0) / MIB;
    // Per row through the trunk: the float image, and per convolution its
    // im2col buffer, pre-activation, output and their gradients.
    let map = (model.feature_side() as f64).powi(2);
    let trunk_row = 4.0
        * (3.0 * side * side
            + model
                .conv_channels
                .iter()
                .zip(&model.conv_kernels)
                .map(|(&c, &k)| map * (4.0 * c as f64 + (k * k * c) as f64))
                .sum::<f64>());
    let training_rows = if scope == TrainScope::Head {
        0.0
    } else {
        minibatch as f64
    };
    let activations = trunk_row * training_rows.max(PASS_ROWS / 2.0) / MIB;
    let total = resident_mib + rollout + batch + activations;
    MemoryEstimate {
        resident_mib,
        rollout_mib: rollout,
        batch_mib: batch,
        activations_mib: activations,
        total_mib: total,
    }
}

/// Memory the machine has free (MiB), where the OS says.
pub fn available_mib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The process's resident memory now (MiB), where the OS says.
pub fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Refuses a run whose estimate exceeds the budget or what is free.
pub fn check_fits(estimate: &MemoryEstimate, budget_mib: f64) -> Result<(), String> {
    let parts = format!(
        "resident {:.0} + rollout {:.0} + update batch {:.0} + activations {:.0} MiB",
        estimate.resident_mib, estimate.rollout_mib, estimate.batch_mib, estimate.activations_mib
    );
    if estimate.total_mib > budget_mib {
        return Err(format!(
            "finetune.memory_budget_mib = {budget_mib:.0}: this run would need about {:.0} MiB ({parts}); lower `envs` or `rollout_steps`, or train `head`",
            estimate.total_mib
        ));
    }
    if let Some(free) = available_mib()
        && estimate.total_mib - estimate.resident_mib > free
    {
        return Err(format!(
            "this run would need about {:.0} MiB more ({parts}) but the machine has {free:.0} MiB free",
            estimate.total_mib - estimate.resident_mib
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_needs_less_than_the_trunk_and_a_big_rollout_is_refused() {
        let model = VlaConfig::default();
        let head = estimate(&model, TrainScope::Head, 4096, 8, 64, 100.0);
        let all = estimate(&model, TrainScope::All, 4096, 8, 64, 100.0);
        assert!(head.batch_mib < all.batch_mib && head.activations_mib < all.activations_mib);
        // 4096 ticks of 64×64 frames, twice: ~100 MiB.
        assert!((90.0..110.0).contains(&head.rollout_mib), "{head:?}");
        assert!(check_fits(&head, 4096.0).is_ok());
        let huge = estimate(&model, TrainScope::All, 1_000_000, 8, 64, 100.0);
        let e = check_fits(&huge, 4096.0).unwrap_err();
        assert!(e.contains("finetune.memory_budget_mib = 4096"), "{e}");
    }

    #[test]
    fn bad_keys_are_named() {
        let config = FinetuneConfig {
            lora_rank: 0,
            ..Default::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("finetune.lora_rank")
        );
        let config = FinetuneConfig {
            execute: 0,
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().contains("finetune.execute"));
    }
}
