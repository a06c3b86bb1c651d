//! `cerebellum run`: the control loop in wall time with a trained policy.

use super::print_json;
use crate::control_loop::{Inference, LoopConfig, NoSink, PolicySlot};
use crate::learn::TrainConfig;
use crate::loaded_policy::{Instructed, LoadedPolicy};
use crate::recorder::{EpisodeRecorder, EpisodesMeta, Existing};
pub use crate::robots::ClockMode;
use crate::robots::{
    EnvelopeArgs, OperatorInputs, RobotChoice, RobotLoop, ZenohArgs, connect_robot,
};
use cerebellum_policies::checkpoint;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

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
/// The same command drives a robot over zenoh (real firmware, or
/// `cerebellum serve-sim`): only `--robot` changes.
///
///   cerebellum run --checkpoint runs/reach0 --robot zenoh:tcp/127.0.0.1:7447/arm0
///
/// Limits beyond the robot spec's (joint speeds, per-tick steps, an
/// end-effector box, the stale-observation watchdog, a safe pose) come from
/// `--envelope FILE.toml` (see docs/safety.md).
///
/// A vision-language policy (`train --policy vla`) reads the camera and an
/// instruction and plans a chunk of actions per inference, on the
/// inference worker: the chunk is played tick by tick from the index that
/// matches its observation's age, the next one is asked for before it runs
/// out, and an answer older than its whole chunk is refused as stale.
/// `--json` reports the chunk latency (p50, p99) and deadline misses:
///
///   cerebellum run --checkpoint runs/reach-color-s0 --task reach-color \
///       --instruction "touch the red marker" --episodes 5 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The run directory holding checkpoint.safetensors and contract.json.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The robot: `sim` (the simulated arm, in process) or
    /// `zenoh:tcp/HOST:PORT[/ROBOT]` (firmware or `serve-sim` over zenoh).
    #[arg(long, default_value = "sim")]
    pub robot: RobotChoice,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    /// `wall`: hold the control rate (deployment). `sim`: tick as fast as
    /// the robot answers, with every result reproducible (the simulator,
    /// or `serve-sim --lockstep`; refused for a robot on its own clock).
    #[arg(long, value_enum, default_value_t = ClockMode::Wall)]
    pub clock: ClockMode,
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
    /// Run the policy on the loop's thread or on a worker thread [default:
    /// inline for the state MLP, worker for the vision-language policy].
    #[arg(long, value_enum)]
    pub inference: Option<InferenceMode>,
    /// The operator's instruction to a vision-language policy, e.g. "touch
    /// the red marker". On the simulated colour tasks every episode then
    /// scores the object it names (it must name one of the task's
    /// colours); over zenoh it is what the policy reads, whatever the
    /// robot sends. Without it the simulator draws one per episode.
    #[arg(long, value_name = "TEXT")]
    pub instruction: Option<String>,
    /// A chunk policy: ask for the next chunk when this many actions of
    /// the current one are left (cover the inference latency in ticks, so
    /// the robot never waits).
    #[arg(long, default_value_t = 2, value_name = "TICKS")]
    pub chunk_lead: u32,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// Write every episode to this directory (docs/episodes.md). A
    /// directory that already holds a recording is refused unless
    /// --append.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// --record: add the episodes to the recording in DIR (same robot
    /// spec and task).
    #[arg(long, requires = "record")]
    pub append: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample from the policy's distribution instead of its mean.
    #[arg(long)]
    pub sample: bool,
    /// End episodes when this success classifier (`reward train --kind
    /// success`) sees success on --success-frames consecutive ticks, for a
    /// robot that cannot judge success itself. Under --clock sim it runs on
    /// the control thread (deterministic); in wall time on a thread of its
    /// own, its verdict ending the episode --success-lag ticks later.
    #[arg(long, value_name = "DIR")]
    pub success_model: Option<PathBuf>,
    #[arg(long, default_value_t = 0.9)]
    pub success_threshold: f32,
    #[arg(long, default_value_t = 3)]
    pub success_frames: u32,
    #[arg(long, default_value_t = 2)]
    pub success_lag: u64,
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
    super::seconds("--duration", args.duration, super::MAX_SECONDS)?;
    let contract = checkpoint::load_contract(&args.checkpoint)?;
    let config: TrainConfig = serde_json::from_value(contract.provenance.config.clone())
        .map_err(|e| anyhow::anyhow!("the contract's training config is unreadable: {e}"))?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("the contract's training config: {e}"))?;
    let task = args.task.unwrap_or_else(|| config.task_kind());
    let (mut env_config, model) = config.robot.load(task)?;
    if args.instruction.is_some() {
        env_config.instruction = args.instruction.clone();
        env_config
            .validate()
            .map_err(|e| anyhow::anyhow!("--instruction: {e}"))?;
    }
    let mut operator = OperatorInputs::default();
    let robot = connect_robot(
        &args.robot,
        &args.zenoh,
        &env_config,
        model.clone(),
        &contract.spec,
        &mut operator,
    )?;
    let spec = robot.spec().clone();
    let link = robot.link_stats();
    let (policy, _) = LoadedPolicy::load(&args.checkpoint, Some(&spec))?;
    let horizon = policy.horizon();
    let kind = policy.kind();
    let policy = Instructed {
        policy,
        instruction: args.instruction.clone(),
    };
    let envelope = args.envelope.build(&spec, model)?;
    let period = spec.control_period();
    let slot = PolicySlot::new(policy);
    let mode = args.inference.unwrap_or(if horizon > 1 {
        InferenceMode::Worker
    } else {
        InferenceMode::Inline
    });
    let inference = match mode {
        InferenceMode::Inline => Inference::inline(slot),
        InferenceMode::Worker => Inference::worker(slot),
    };
    let loop_config = LoopConfig {
        seed: args.seed,
        stochastic: args.sample,
        max_episodes: args.episodes,
        max_ticks: Some((args.duration / period.as_secs_f64()).ceil() as u64),
        // Set by the clock (`ConnectedRobot::into_loop`).
        inference_deadline: None,
        robot_id: args.robot.robot_id(&args.zenoh, &spec),
        episodes_per_start: 1,
    };
    let control = robot.into_loop(args.clock, inference, envelope, loop_config)?;
    // A chunk is played out, the next asked for before it runs out.
    let control = if horizon > 1 {
        anyhow::ensure!(
            (args.chunk_lead as usize) < horizon,
            "--chunk-lead {} must be less than the policy's chunk of {horizon} actions",
            args.chunk_lead
        );
        control.with_chunk_playback(args.chunk_lead)
    } else {
        control
    };
    let mut recorder = match &args.record {
        Some(dir) => Some(EpisodeRecorder::open(
            dir,
            EpisodesMeta::new(&spec, &[], Some(task.name())),
            if args.append {
                Existing::Append
            } else {
                Existing::Refuse
            },
        )?),
        None => None,
    };
    let judge = match &args.success_model {
        Some(dir) => Some(crate::success_judge::load(
            dir,
            cerebellum_reward_models::contract::Expected {
                observation: &spec.observation,
                instruction: args.task.map(|t| t.instruction()),
            },
            args.success_threshold,
            args.success_frames,
            args.clock == ClockMode::Sim,
            args.success_lag,
        )?),
        None => None,
    };
    let (summary, judged) = drive(
        control,
        Attachments {
            operator: &operator,
            judge,
        },
        recorder.as_mut(),
    )?;
    let recording_error = recorder
        .as_ref()
        .and_then(|r| r.failure())
        .map(|f| f.to_string());
    let link = link.and_then(|l| l.get());
    let failure = failure(&summary, link.as_ref(), recording_error.as_deref());
    println!(
        "ran {} ticks at {:.0} Hz: {} episodes, success {}, {} deadline misses, {} clamps, {} forced holds, tick latency p50 {} µs, p99 {} µs, max {} µs",
        summary.counters.ticks,
        spec.control_rate_hz,
        summary.counters.episodes,
        summary
            .success_rate
            .map_or("n/a".to_owned(), |s| format!("{:.1}%", 100.0 * s)),
        summary.counters.deadline_misses,
        summary.clamps,
        summary.holds_forced,
        summary.tick_latency_p50_us,
        summary.tick_latency_p99_us,
        summary.tick_latency_max_us
    );
    if args.json {
        let mut report = serde_json::to_value(&summary)?;
        report["command"] = json!("run");
        report["policy"] = json!(kind);
        report["chunk_length"] = json!(horizon);
        report["instruction"] = json!(args.instruction);
        report["inference"] = json!(format!("{mode:?}").to_lowercase());
        report["control_rate_hz"] = json!(spec.control_rate_hz);
        report["robot"] = json!(args.robot.to_string());
        report["recorded_episodes"] = json!(recorder.as_ref().map(|r| r.episodes_written));
        report["success_judge"] = json!(judged);
        report["clock"] = json!(args.clock);
        report["link"] = json!(link);
        report["recording_error"] = json!(recording_error);
        report["ok"] = json!(failure.is_none());
        report["error"] = json!(failure);
        print_json(&report);
    }
    match failure {
        None => Ok(()),
        // The summary above already says it, JSON included.
        Some(failure) => Err(super::Reported(failure).into()),
    }
}

/// Why a run failed at what it was asked to do, when it did: the policy
/// never commanded the robot, the robot never answered or was lost for
/// good, or the recording broke. The loop kept the robot safe through all
/// of these, so it ran to its end; the exit code says it failed.
fn failure(
    summary: &crate::control_loop::LoopSummary,
    link: Option<&cerebellum_firmware_bridge::client::ClientStats>,
    recording_error: Option<&str>,
) -> Option<String> {
    let c = &summary.counters;
    if c.ticks > 0 && c.holds == c.ticks {
        return Some(if c.policy_errors > 0 {
            format!(
                "the policy failed on every one of the {} ticks ({} errors; the last: {}); the loop held the robot",
                c.ticks,
                c.policy_errors,
                summary.last_policy_error.as_deref().unwrap_or("unknown")
            )
        } else if c.stale_ticks == c.ticks {
            format!(
                "the robot sent no usable observation in {} ticks ({} errors); the loop held it",
                c.ticks, c.observe_errors
            )
        } else {
            format!(
                "no command but holds was sent in {} ticks ({} deadline misses)",
                c.ticks, c.deadline_misses
            )
        });
    }
    if let Some(link) = link
        && link.lost > link.recovered
    {
        return Some(format!(
            "the robot was lost and did not come back (lost {} times, recovered {})",
            link.lost, link.recovered
        ));
    }
    if c.ticks > 0 && c.apply_errors == c.ticks {
        return Some(format!(
            "the robot refused or failed every one of the {} commands",
            c.ticks
        ));
    }
    recording_error.map(|e| format!("{e}; the loop ran on and kept the robot safe"))
}

/// What is plugged into the loop besides robot, clock and policy.
struct Attachments<'a> {
    operator: &'a OperatorInputs,
    judge: Option<crate::success_judge::SuccessJudge>,
}

fn drive(
    control: RobotLoop<Instructed<LoadedPolicy>>,
    attachments: Attachments<'_>,
    recorder: Option<&mut EpisodeRecorder>,
) -> anyhow::Result<(
    crate::control_loop::LoopSummary,
    Option<crate::success_judge::JudgeCounters>,
)> {
    // Ctrl-C ends the run after the current tick, its episode closed as
    // truncated, the recording flushed and the summary printed; so does
    // the end of --duration.
    crate::interrupt::install();
    let mut control = attachments
        .operator
        .attach(control)
        .with_stop(crate::interrupt::requested)
        .with_final_truncation();
    if let Some(judge) = attachments.judge {
        control = control.with_success_judge(judge);
    }
    match recorder {
        Some(r) => control.run(r)?,
        None => control.run(&mut NoSink)?,
    }
    let figures = (control.stats.summary(), control.success_judge_counters());
    // The robot's link figures are final once the loop (and with it the
    // robot) is gone.
    drop(control);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::failure;
    use crate::control_loop::{LoopCounters, LoopSummary};

    fn summary(counters: LoopCounters, last_policy_error: Option<&str>) -> LoopSummary {
        LoopSummary {
            counters,
            success_rate: None,
            clamps: 0,
            holds_forced: 0,
            envelope: Default::default(),
            last_policy_error: last_policy_error.map(str::to_owned),
            tick_latency_p50_us: 0,
            tick_latency_p99_us: 0,
            tick_latency_max_us: 0,
            jitter_p50_us: 0,
            jitter_p99_us: 0,
            jitter_max_us: 0,
            inference_delay_p50_us: 0,
            inference_delay_p99_us: 0,
            inference_delay_max_us: 0,
        }
    }

    #[test]
    fn a_run_whose_policy_failed_on_every_tick_fails_and_says_why() {
        let counters = LoopCounters {
            ticks: 328,
            holds: 328,
            policy_errors: 328,
            ..LoopCounters::default()
        };
        let why = failure(&summary(counters, Some("NaN at 3")), None, None).unwrap();
        assert!(why.contains("every one of the 328 ticks"), "{why}");
        assert!(why.contains("NaN at 3"), "{why}");
    }

    #[test]
    fn a_run_whose_robot_was_lost_for_good_or_whose_recording_broke_fails() {
        let healthy = LoopCounters {
            ticks: 100,
            holds: 3,
            ..LoopCounters::default()
        };
        assert_eq!(failure(&summary(healthy, None), None, None), None);
        let link = cerebellum_firmware_bridge::client::ClientStats {
            lost: 2,
            recovered: 1,
            ..Default::default()
        };
        let why = failure(&summary(healthy, None), Some(&link), None).unwrap();
        assert!(why.contains("lost"), "{why}");
        let back = cerebellum_firmware_bridge::client::ClientStats {
            lost: 2,
            recovered: 2,
            ..Default::default()
        };
        assert_eq!(failure(&summary(healthy, None), Some(&back), None), None);
        let why = failure(&summary(healthy, None), None, Some("disk full")).unwrap();
        assert!(why.contains("disk full"), "{why}");
        let silent = LoopCounters {
            ticks: 50,
            holds: 50,
            stale_ticks: 50,
            observe_errors: 50,
            ..LoopCounters::default()
        };
        let why = failure(&summary(silent, None), None, None).unwrap();
        assert!(why.contains("no usable observation"), "{why}");
    }
}
