//! `cerebellum run`: the control loop in wall time with a trained policy.

use super::print_json;
use crate::control_loop::{ControlLoop, Inference, LoopConfig, NoSink, PolicySlot};
use crate::envelope::{ArmKinematics, EnvelopeConfig, ForwardKinematics, SafetyEnvelope};
use crate::learn::TrainConfig;
use crate::learn::trainer::make_envs;
use crate::recorder::EpisodeRecorder;
use cerebellum_core::{Robot, WallClock};
use cerebellum_policies::checkpoint;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run a trained policy in the real-time control loop.
///
/// Every tick is observe → infer → safety envelope → send → record, held to
/// the checkpoint's control rate by the wall clock. A policy that misses
/// its deadline is not waited for: the loop sends the next action of the
/// current chunk or holds position, and counts a miss. Prints success,
/// deadline misses, envelope clamps and tick latency. Example:
///
///   cerebellum run --checkpoint runs/reach0 --robot sim --duration 20 --json
///
/// Limits beyond the robot spec's (joint speeds, per-tick steps, an
/// end-effector box, the stale-observation watchdog, a safe pose) come from
/// `--envelope FILE.toml` (see docs/safety.md).
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The run directory holding checkpoint.safetensors and contract.json.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The robot: `sim` (the simulated arm, in process). Robots over zenoh
    /// arrive with the firmware bridge.
    #[arg(long, default_value = "sim")]
    pub robot: String,
    /// The task to run in the simulation [default: the one the checkpoint
    /// was trained on]; the contract check refuses a task whose robot spec
    /// differs.
    #[arg(long, value_parser = super::parse_task)]
    pub task: Option<cerebellum_sim::TaskKind>,
    /// Stop after this many seconds of wall time…
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// …or after this many episodes.
    #[arg(long)]
    pub episodes: Option<u64>,
    /// Run the policy on the loop's thread or on a worker thread.
    #[arg(long, value_enum, default_value_t = InferenceMode::Inline)]
    pub inference: InferenceMode,
    /// Safety envelope limits (TOML, the keys of `EnvelopeConfig`).
    #[arg(long, value_name = "FILE")]
    pub envelope: Option<PathBuf>,
    /// Write every episode to this directory (docs/episodes.md).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample from the policy's distribution instead of its mean.
    #[arg(long)]
    pub sample: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InferenceMode {
    Inline,
    Worker,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.robot == "sim",
        "--robot {}: only `sim` is available so far (robots over zenoh come with the firmware bridge)",
        args.robot
    );
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be a positive number of seconds"
    );
    let contract = checkpoint::load_contract(&args.checkpoint)?;
    let config: TrainConfig = serde_json::from_value(contract.provenance.config.clone())
        .map_err(|e| anyhow::anyhow!("the contract's training config is unreadable: {e}"))?;
    let task = args.task.unwrap_or_else(|| config.task_kind());
    let (env_config, model) = config.robot.load(task)?;
    let robot = make_envs(&env_config, model.clone(), 1)?.remove(0);
    let spec = robot.spec().clone();
    let (policy, _) = checkpoint::load(&args.checkpoint, Some(&spec))?;
    let envelope_config: EnvelopeConfig = match &args.envelope {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => EnvelopeConfig::default(),
    };
    let fk = model.map(|m| Arc::new(ArmKinematics(m)) as Arc<dyn ForwardKinematics>);
    let envelope = SafetyEnvelope::new(&spec, envelope_config, fk)
        .map_err(|e| anyhow::anyhow!("envelope: {e}"))?;
    let period = spec.control_period();
    let clock = WallClock::new(period, Duration::from_micros(200));
    let slot = PolicySlot::new(policy);
    let inference = match args.inference {
        InferenceMode::Inline => Inference::inline(slot),
        InferenceMode::Worker => Inference::worker(slot),
    };
    let loop_config = LoopConfig {
        seed: args.seed,
        stochastic: args.sample,
        max_episodes: args.episodes,
        max_ticks: Some((args.duration / period.as_secs_f64()).ceil() as u64),
        inference_deadline: Some(LoopConfig::deadline_for(period)),
        robot_id: spec.name.clone(),
        episodes_per_start: 1,
    };
    let mut control = ControlLoop::new(robot, clock, inference, envelope, loop_config);
    let mut recorder = match &args.record {
        Some(dir) => Some(EpisodeRecorder::create(dir, &spec)?),
        None => None,
    };
    match recorder.as_mut() {
        Some(r) => control.run(r)?,
        None => control.run(&mut NoSink)?,
    }
    let summary = control.stats.summary();
    if let Some(error) = recorder.as_ref().and_then(|r| r.error.clone()) {
        eprintln!("warning: {error}");
    }
    println!(
        "ran {} ticks at {:.0} Hz: {} episodes, success {}, {} deadline misses, {} clamps, tick latency p50 {} µs, p99 {} µs, max {} µs",
        summary.counters.ticks,
        spec.control_rate_hz,
        summary.counters.episodes,
        summary
            .success_rate
            .map_or("n/a".to_owned(), |s| format!("{:.1}%", 100.0 * s)),
        summary.counters.deadline_misses,
        summary.clamps,
        summary.tick_latency_p50_us,
        summary.tick_latency_p99_us,
        summary.tick_latency_max_us
    );
    if args.json {
        let mut report = serde_json::to_value(&summary)?;
        report["command"] = json!("run");
        report["control_rate_hz"] = json!(spec.control_rate_hz);
        report["recorded_episodes"] = json!(recorder.as_ref().map(|r| r.episodes_written));
        print_json(&report);
    }
    Ok(())
}
