//! Helpers the loop and actor/learner tests share.

#![allow(dead_code)] // each test binary uses its own share of the helpers

use cerebellum_core::{
    Action, ActionChunk, Observation, Policy, PolicyError, PolicyOutput, Sampling, Transition,
};
use cerebellum_runtime::control_loop::CheckedWeights;
use cerebellum_sim::{ArmModel, ArmOptions};
use std::sync::Arc;

pub fn so101() -> Arc<ArmModel> {
    ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
}

/// Wall-clock fields aside, the transition log as bytes.
pub fn log_bytes(log: &[Transition]) -> Vec<u8> {
    let mut log = log.to_vec();
    for t in &mut log {
        t.wall_time = 0.0;
    }
    serde_json::to_vec(&log).unwrap()
}

/// Plans ten ticks ahead: joint 0 moves 0.02 rad further each tick.
#[derive(Clone)]
pub struct SweepPolicy;

impl CheckedWeights for SweepPolicy {
    fn weights_finite(&self) -> bool {
        true
    }
}

impl Policy for SweepPolicy {
    fn version(&self) -> u64 {
        1
    }

    fn act(
        &mut self,
        observations: &[Observation],
        _: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        Ok(observations
            .iter()
            .map(|o| {
                let actions = (1..=10)
                    .map(|k| {
                        let mut q = o.state[..6].to_vec();
                        q[0] += 0.02 * k as f32;
                        Action::new(q)
                    })
                    .collect();
                PolicyOutput {
                    chunk: ActionChunk { actions },
                    sampled: None,
                    log_prob: None,
                    action_log_probs: None,
                }
            })
            .collect())
    }
}

/// Runs the built `cerebellum` binary: (succeeded, stdout, stderr).
pub fn cerebellum(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The JSON object every command prints as its last line with `--json`.
pub fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("some output")).expect("JSON last line")
}

/// A small reach policy (2,048 steps) in a fresh temporary run directory
/// named after `name` and this process, for tests that need a checkpoint.
pub fn train_reach(name: &str) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("cerebellum-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (ok, _, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach",
        "--steps",
        "2048",
        "--envs",
        "4",
        "--eval-episodes",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "train failed: {stderr}");
    out
}
