//! `cerebellum record`: demonstrations on disk, with stage annotations,
//! for behaviour cloning and for training progress models.

use super::{SimRobotArgs, print_json};
use crate::control_loop::TransitionSink;
use crate::recorder::{EpisodeRecorder, EpisodesMeta, Existing};
use crate::tick;
use cerebellum_core::{Provenance, ResetRequest, Robot};
use cerebellum_sim::SimEnv;
use cerebellum_sim::expert::ScriptedExpert;
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::json;
use std::path::PathBuf;

/// Record scripted-expert episodes, each tick annotated with its stage.
///
/// Writes the episode format of docs/episodes.md: DATA/meta.json (robot
/// spec and the stage names) and one JSON Lines file per episode, every
/// transition with its `stage` index. The stages are the expert's own:
/// reach approach/settle; lift approach/grasp/lift/hold (reach-color and
/// lift-color: the same as reach and lift). Starts are seeded
/// by --seed + episode index, as `cerebellum sim`.
///
/// An existing recording is never overwritten: --out DATA that holds one is
/// refused, unless --append adds episodes to it (same task, robot spec and
/// stages; numbered, and seeded, after its last episode). Examples:
///
///   cerebellum record --task lift --expert --episodes 50 --out data/lift-expert
///   cerebellum record --task lift --expert --episodes 50 --out data/lift-expert --append
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RecordArgs {
    #[command(flatten)]
    pub robot: SimRobotArgs,
    /// Record the scripted expert (the only demonstrator built in; teleop
    /// takeovers are recorded by `cerebellum run --record`).
    #[arg(long)]
    pub expert: bool,
    #[arg(long, default_value_t = 10)]
    pub episodes: u64,
    /// Standard deviation (rad) of Gaussian noise added to every expert
    /// command, seeded by the episode's seed: noisy and failed
    /// demonstrations for evaluating reward models. 0: the clean expert.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_name = "DATA")]
    pub out: PathBuf,
    /// Add the episodes to the recording in --out (which must be of the
    /// same task, robot spec and stages) instead of refusing it.
    #[arg(long)]
    pub append: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.expert,
        "only --expert is built in: teleop demonstrations are recorded with `cerebellum run --record DIR`"
    );
    anyhow::ensure!(args.episodes > 0, "--episodes must be at least 1");
    crate::learn::bc::EXPERT_NOISE
        .check("--noise", args.noise)
        .map_err(anyhow::Error::msg)?;
    let (config, model) = args.robot.load()?;
    let task = config.task;
    let mut env = SimEnv::new(config, model).map_err(anyhow::Error::msg)?;
    let SimEnv::Arm(arm) = &env else {
        anyhow::bail!(
            "task {task} has no scripted expert with stages (reach, lift, reach-color and lift-color do)"
        );
    };
    let mut expert = ScriptedExpert::new(
        arm.model().clone(),
        arm.config().task,
        arm.config().physics.control_rate_hz(),
        arm.world().table_height,
    )
    .map_err(anyhow::Error::msg)?;
    let spec = env.spec().clone();
    let names = ScriptedExpert::stage_names(task);
    let existing = if args.append {
        Existing::Append
    } else {
        Existing::Refuse
    };
    let meta = EpisodesMeta::new(&spec, names, Some(task.name()));
    let mut recorder = EpisodeRecorder::open(&args.out, meta, existing)?;
    let first_episode = recorder.next_episode();
    let (mut successes, mut ticks) = (0u64, 0u64);
    for episode in first_episode..first_episode + args.episodes {
        let seed = args.seed + episode;
        let mut observation = env.reset(&ResetRequest { seed })?;
        expert.reset();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4E01_5E00);
        let noise = Normal::new(0.0, args.noise).map_err(|e| anyhow::anyhow!("--noise: {e}"))?;
        for step in 0.. {
            let mut action = crate::episodes::expert_act(&mut expert, &observation, &env);
            if args.noise > 0.0 {
                let (lower, upper) = spec.action.limits();
                for ((v, lo), hi) in action.values.iter_mut().zip(&lower).zip(&upper) {
                    *v = (*v + noise.sample(&mut rng)).clamp(*lo, *hi);
                }
            }
            let stage = expert.stage();
            let outcome = env.apply(&action)?;
            let provenance = Provenance {
                robot_id: spec.name.clone(),
                episode_id: episode,
                task_instance_id: seed,
                group_id: None,
                step,
                policy_version: 0,
            };
            let mut transition = tick::record(
                provenance,
                observation,
                action.clone(),
                None,
                action,
                &outcome,
                tick::wall_clock_now(),
            );
            transition.stage = Some(stage);
            recorder.push(transition);
            ticks += 1;
            if outcome.done() {
                successes += u64::from(outcome.success.unwrap_or(false));
                break;
            }
            observation = env.observe()?;
        }
    }
    if let Some(failure) = recorder.failure() {
        return Err(failure.into());
    }
    println!(
        "recorded {} expert episodes of {task} ({ticks} ticks, success {:.1}%) with stages {} → {} (episodes {}–{})",
        args.episodes,
        100.0 * successes as f64 / args.episodes as f64,
        names.join("/"),
        args.out.display(),
        first_episode,
        first_episode + args.episodes - 1
    );
    if args.json {
        print_json(&json!({
            "command": "record",
            "task": task.name(),
            "episodes": recorder.episodes_written,
            "first_episode": first_episode,
            "ticks": ticks,
            "success_rate": successes as f64 / args.episodes as f64,
            "stages": names,
            "noise": args.noise,
            "out": args.out,
        }));
    }
    Ok(())
}
