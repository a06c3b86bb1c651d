//! `cerebellum checkpoint`: look at a checkpoint's contract and verify its
//! weights against the hash the contract carries, or adopt the weights of
//! a checkpoint saved before the hash existed.

use super::print_json;
use cerebellum_policies::checkpoint;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;

/// Verify or upgrade a checkpoint (checkpoint.safetensors + contract.json).
///
/// Every checkpoint's contract carries a SHA-256 of its weights (canonical
/// per-tensor records in name order, docs/learning.md) and one digest per
/// tensor; every command that loads a checkpoint checks them before a
/// single weight is used. Examples:
///
///   cerebellum checkpoint verify runs/reach-s0 --json
///   cerebellum checkpoint adopt old-runs/reach-s0
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    pub action: CheckpointAction,
}

#[derive(Subcommand, Debug)]
pub enum CheckpointAction {
    /// Load the checkpoint as every command does (contract, weights hash,
    /// shapes, finite values) and print its kind, version, spec and hash.
    Verify(VerifyArgs),
    /// Adopt the weights of a format 1 checkpoint (saved before weights
    /// carried a hash) as they are: they are checked to load, hashed, and
    /// the contract is rewritten in the current format. Nothing can tell
    /// whether such weights changed since they were saved: adopt only
    /// checkpoints whose origin you trust.
    Adopt(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The run directory holding checkpoint.safetensors and contract.json.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckpointArgs) -> anyhow::Result<()> {
    let (action, args) = match args.action {
        CheckpointAction::Verify(a) => ("verify", a),
        CheckpointAction::Adopt(a) => ("adopt", a),
    };
    if action == "adopt" {
        checkpoint::upgrade_format_1(&args.dir)?;
    }
    let (_, contract) = checkpoint::load(&args.dir, None)?;
    println!(
        "{}: {} version {} for `{}` at {} Hz, weights sha256 {} ({} tensors){}",
        args.dir.display(),
        contract.policy_kind,
        contract.policy_version,
        contract.spec.name,
        contract.spec.control_rate_hz,
        contract.weights_sha256,
        contract.tensor_sha256.len(),
        if action == "adopt" {
            "; adopted"
        } else {
            "; verified"
        }
    );
    if args.json {
        print_json(&json!({
            "command": "checkpoint",
            "action": action,
            "ok": true,
            "checkpoint": args.dir,
            "policy_kind": contract.policy_kind,
            "policy_version": contract.policy_version,
            "robot": contract.spec.name,
            "control_rate_hz": contract.spec.control_rate_hz,
            "weights_sha256": contract.weights_sha256,
            "tensor_sha256": contract.tensor_sha256,
        }));
    }
    Ok(())
}
