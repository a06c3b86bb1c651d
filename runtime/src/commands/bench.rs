//! `cerebellum bench`: speed measurements printed as ratios against a
//! baseline measured in the same run.

use clap::{Args, Subcommand};

/// Measure speed against a baseline measured in the same run.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: BenchKind,
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Physics steps per second of the SO-101 in rapier against MuJoCo
    /// stepping the same arm, the camera's frames per second, and the
    /// vectorised environment's steps per second for N = 1, 8, 64.
    Physics(super::bench_physics::PhysicsBenchArgs),
    Camera(super::bench_camera::CameraBenchArgs),
    /// Pendulum-v1 learning speed against Stable-Baselines3 and a
    /// CleanRL-style PPO, one PPO update against PyTorch, and batch-1
    /// policy latency against PyTorch and ONNX Runtime.
    Train(super::bench_train::TrainBenchArgs),
    Loop(super::bench_loop::LoopBenchArgs),
    /// State → policy → command round trip over zenoh against bare zenoh
    /// ping–pong, and a fleet's transitions per second into one learner.
    Zenoh(super::bench_zenoh::ZenohBenchArgs),
    /// Learned-reward inference per transition against the policy's, and
    /// the loop's jitter with and without the labeller thread.
    Reward(super::bench_reward::RewardBenchArgs),
    /// The vision-language-action policy's batch-1 chunk latency and
    /// behaviour-cloning throughput against PyTorch, one thread each.
    Vla(super::bench_vla::VlaBenchArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchKind::Physics(args) => super::bench_physics::run(args),
        BenchKind::Camera(args) => super::bench_camera::run(args),
        BenchKind::Train(args) => super::bench_train::run(args),
        BenchKind::Loop(args) => super::bench_loop::run(args),
        BenchKind::Zenoh(args) => super::bench_zenoh::run(args),
        BenchKind::Reward(args) => super::bench_reward::run(args),
        BenchKind::Vla(args) => super::bench_vla::run(args),
    }
}

/// Runs the peer script `bench/peers/<script>` and returns the JSON object
/// on the last line of its stdout; an error says why it was not measured
/// (exit code 3 means a dependency is missing: the error says how to
/// install it).
pub(super) fn run_peer(
    python: &str,
    script: &str,
    args: &[String],
    requirements: &str,
) -> Result<serde_json::Value, String> {
    // The peers are Python scripts of the source tree, not part of the
    // binary: CEREBELLUM_PEERS names them elsewhere, else the tree the
    // binary was built from.
    let peers = std::env::var_os("CEREBELLUM_PEERS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/peers"));
    if !peers.join(script).is_file() {
        return Err(format!(
            "the peer {} is not there: the benchmark peers live in the source tree's bench/peers (set CEREBELLUM_PEERS=DIR to point at them)",
            peers.join(script).display()
        ));
    }
    let output = std::process::Command::new(python)
        .arg(peers.join(script))
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {python}: {e}"))?;
    if output.status.code() == Some(3) {
        return Err(format!(
            "{script} is not installed: pip install -r bench/peers/{requirements}"
        ));
    }
    if !output.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("unreadable output of {script} `{last}`: {e}"))
}
