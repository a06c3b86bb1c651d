//! `cerebellum eval`: run a trained policy deterministically on held-out
//! starts and report its return and success rate.

use super::print_json;
use crate::learn::TrainConfig;
use crate::learn::eval;
use crate::learn::trainer::make_envs;
use crate::loaded_policy::{ImageAblation, LoadedPolicy};
use crate::robots::{
    ClockMode, EnvelopeArgs, OperatorInputs, RobotChoice, ZenohArgs, connect_robot,
};
use cerebellum_core::Robot;
use cerebellum_policies::checkpoint;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// Evaluate a checkpoint on held-out starts with the deterministic policy.
///
/// Any policy kind: the state MLP or the vision-language policy
/// (`train --policy vla`), as its contract says. On a colour task
/// (reach-color, lift-color) the report adds `success_by_color` and a
/// second evaluation on the held-out phrasings of the instructions
/// (`success_rate_heldout_phrasings`); --blank-image is the ablation that
/// blanks every camera frame:
///
///   cerebellum eval --checkpoint runs/reach-color-s0 --episodes 200 --json
///   cerebellum eval --checkpoint runs/reach-color-s0 --episodes 200 --blank-image
///
/// The checkpoint's contract (observation and action specs, units, limits,
/// control rate) is checked against the simulated robot first; a mismatch
/// is refused with the field that differs. The robot and task are the ones
/// the policy was trained on unless overridden. Example:
///
///   cerebellum eval --checkpoint runs/reach-s0 --episodes 100 --json
///
/// `--robot zenoh:tcp/HOST:PORT[/ROBOT]` evaluates on a robot over zenoh
/// instead, through the control loop and its safety envelope like every
/// command to a robot (`--envelope`): in simulated time for a robot in
/// lockstep (`serve-sim --lockstep` gives the figures of `--envs 1`), at
/// the robot's rate in wall time for one on its own clock.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    /// The run directory holding checkpoint.safetensors and contract.json.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Seed of the held-out starts (the training seed gives the starts
    /// `cerebellum train` evaluated on).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated robots run side by side (results do not depend on it).
    #[arg(long, default_value_t = 8)]
    pub envs: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Evaluate on this URDF arm instead of the one trained on.
    #[arg(long, value_name = "PATH")]
    pub urdf: Option<PathBuf>,
    /// Environment config (TOML), e.g. another control rate, which the
    /// contract check will refuse.
    #[arg(long, value_name = "FILE")]
    pub env_config: Option<PathBuf>,
    /// Sample actions with the policy's own noise (seeded by --seed)
    /// instead of taking the mean action.
    #[arg(long)]
    pub sample: bool,
    /// The ablation that shows whether a policy looks: every camera frame
    /// it is given is blanked (all zero). A vision-language policy on
    /// reach-color should then score near chance (about a third: it can
    /// still read the colour but not see where that marker is).
    #[arg(long)]
    pub blank_image: bool,
    /// A chunk policy plays this many actions of each chunk before it is
    /// asked again (in the simulator) [default: as a fine-tuned run was
    /// trained (`finetune.execute`), else 1: every tick].
    #[arg(long, value_name = "N")]
    pub execute: Option<usize>,
    /// Save one episode as a strip of camera frames (PNG), arm tasks only.
    #[arg(long, value_name = "PATH.png")]
    pub frame_strip: Option<PathBuf>,
    /// `sim` (in process) or `zenoh:tcp/HOST:PORT[/ROBOT]`.
    #[arg(long, default_value = "sim")]
    pub robot: RobotChoice,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    /// --robot zenoh: the loop's clock [default: `sim` for a robot in
    /// lockstep, `wall` (its control rate) otherwise; `sim` is refused for
    /// a robot on its own clock].
    #[arg(long, value_enum)]
    pub clock: Option<ClockMode>,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// --robot zenoh: give up (an error) when the episodes have not ended
    /// after this many seconds of robot time.
    #[arg(long, default_value_t = 3600.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let contract = checkpoint::load_contract(&args.checkpoint)?;
    let mut config: TrainConfig = serde_json::from_value(contract.provenance.config.clone())
        .map_err(|e| anyhow::anyhow!("the contract's training config is unreadable: {e}"))?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("the contract's training config: {e}"))?;
    {
        use crate::learn::config::{ENVS, EVAL_EPISODES};
        ENVS.check("--envs", args.envs)
            .map_err(anyhow::Error::msg)?;
        EVAL_EPISODES
            .check("--episodes", args.episodes)
            .map_err(anyhow::Error::msg)?;
    }
    if args.urdf.is_some() {
        config.robot.urdf = args.urdf.clone();
    }
    if args.env_config.is_some() {
        config.robot.env_config = args.env_config.clone();
    }
    let (env_config, model) = config.robot.load(config.task_kind())?;
    let envs = make_envs(
        &env_config,
        model.clone(),
        args.envs.clamp(1, args.episodes.max(1)),
    )?;
    let (policy, contract) = LoadedPolicy::load(&args.checkpoint, Some(envs[0].spec()))?;
    let mut policy = ImageAblation {
        policy,
        blank: args.blank_image,
    };
    if let Some(path) = &args.frame_strip {
        let env = make_envs(&env_config, model.clone(), 1)?.remove(0);
        save_frame_strip(&mut policy, env, args.seed.unwrap_or(config.seed), path)?;
    }
    let seed = args.seed.unwrap_or(config.seed);
    // Actions of each chunk played before replanning: --execute, else as
    // a fine-tuned policy was trained, else every tick.
    let execute = match args.execute {
        Some(n) => {
            crate::learn::finetune::EXECUTE
                .check("--execute", n)
                .map_err(anyhow::Error::msg)?;
            n
        }
        None => config.finetune.as_ref().map_or(1, |f| f.execute),
    };
    let color_task = config.task_kind().is_color();
    let mut heldout_phrasings = None;
    let (report, robot_loop) = match &args.robot {
        RobotChoice::Sim => {
            let report = eval::evaluate_with(
                &mut policy,
                envs,
                args.episodes,
                seed,
                args.threads,
                args.sample,
                execute,
            )?;
            if color_task {
                let mut held_out = env_config.clone();
                held_out.instructions = cerebellum_sim::InstructionSet::HeldOut;
                let envs = make_envs(
                    &held_out,
                    model.clone(),
                    args.envs.clamp(1, args.episodes.max(1)),
                )?;
                heldout_phrasings = Some(eval::evaluate_with(
                    &mut policy,
                    envs,
                    args.episodes,
                    seed,
                    args.threads,
                    args.sample,
                    execute,
                )?);
            }
            (report, None)
        }
        remote => {
            super::seconds("--timeout", args.timeout, super::MAX_SECONDS)?;
            let mut operator = OperatorInputs::default();
            let robot = connect_robot(
                remote,
                &args.zenoh,
                &env_config,
                None,
                &contract.spec,
                &mut operator,
            )?;
            let spec = robot.spec().clone();
            let clock = args.clock.unwrap_or(robot.natural_clock());
            let link = robot.link_stats();
            let envelope = args.envelope.build(&spec, model)?;
            let request = eval::RobotEval {
                episodes: args.episodes,
                seed,
                sample: args.sample,
                robot_id: args.robot.robot_id(&args.zenoh, &spec),
                max_ticks: (args.timeout * spec.control_rate_hz).ceil() as u64,
            };
            let (report, summary) =
                eval::evaluate_robot(policy.clone(), robot, clock, envelope, &operator, request)?;
            let mut figures = serde_json::to_value(&summary)?;
            figures["clock"] = json!(clock);
            figures["link"] = json!(link.and_then(|l| l.get()));
            (report, Some(figures))
        }
    };
    let colors = cerebellum_sim::tasks::color_names();
    let by_color = color_task.then(|| report.success_by_color(&colors));
    println!(
        "{} episodes of {}: success rate {:.1}%, mean return {:.3} (policy {} version {}{})",
        report.episodes,
        config.task,
        100.0 * report.success_rate,
        report.mean_return,
        policy.policy.kind(),
        contract.policy_version,
        if args.blank_image {
            ", camera frames blanked"
        } else {
            ""
        }
    );
    if let Some(by_color) = &by_color {
        println!(
            "by colour: {}",
            by_color
                .iter()
                .map(|(c, s)| format!("{c} {:.1}%", 100.0 * s))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(e) = &heldout_phrasings {
        println!(
            "held-out phrasings: success rate {:.1}% over {} episodes",
            100.0 * e.success_rate,
            e.episodes
        );
    }
    if args.json {
        print_json(&json!({
            "command": "eval",
            "robot": args.robot.to_string(),
            "task": config.task,
            "checkpoint": args.checkpoint,
            "policy_version": contract.policy_version,
            "seed": seed,
            "sampled": args.sample,
            "episodes": report.episodes,
            "execute": execute,
            "success_rate": report.success_rate,
            "mean_return": report.mean_return,
            "episode_returns": report.episode_returns,
            "episode_successes": report.episode_successes,
            "policy": policy.policy.kind(),
            "blank_image": args.blank_image,
            "success_by_color": by_color,
            "success_rate_heldout_phrasings": heldout_phrasings.as_ref().map(|e| e.success_rate),
            "unknown_words": policy.policy.unknown_words(),
            "loop": robot_loop,
        }));
    }
    Ok(())
}

/// One held-out episode, every tenth tick side by side.
fn save_frame_strip(
    policy: &mut dyn cerebellum_core::Policy,
    mut env: cerebellum_sim::SimEnv,
    seed: u64,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use cerebellum_core::{Image, ResetRequest, Sampling};
    anyhow::ensure!(env.as_arm().is_some(), "--frame-strip needs an arm task");
    let mut observation = env.reset(&ResetRequest {
        seed: seed ^ eval::HELD_OUT,
    })?;
    let mut frames: Vec<Image> = Vec::new();
    let spec = env.spec().clone();
    for tick in 0.. {
        if tick % 10 == 0 {
            frames.push(env.as_arm().expect("arm").render());
        }
        let output = crate::tick::infer(policy, &spec, &[observation], Sampling::Deterministic)?;
        let outcome = env.apply(crate::tick::command(&output[0]))?;
        if outcome.done() {
            frames.push(env.as_arm().expect("arm").render());
            break;
        }
        observation = env.observe()?;
    }
    let (h, w) = (frames[0].height as usize, frames[0].width as usize);
    let mut data = vec![0u8; h * w * 3 * frames.len()];
    for (k, frame) in frames.iter().enumerate() {
        for row in 0..h {
            let dst = (row * w * frames.len() + k * w) * 3;
            data[dst..dst + w * 3].copy_from_slice(&frame.data[row * w * 3..][..w * 3]);
        }
    }
    let strip = Image {
        camera: frames[0].camera.clone(),
        height: h as u32,
        width: (w * frames.len()) as u32,
        channels: 3,
        data,
    };
    cerebellum_sim::camera::save_png(&strip, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
