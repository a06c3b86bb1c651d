//! `cerebellum sim`: run the scripted expert (or random commands) in the
//! simulation and report per-episode returns and the success rate.

use super::{SimRobotArgs, print_json};
use crate::episodes::{EpisodeSummary, make_controller, run_episode, run_episode_with};
use cerebellum_sim::SimEnv;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Run episodes in the simulation with the scripted expert or random
/// commands.
///
/// Episode i starts from seed S + i, so a run is repeatable: the same
/// seed prints the same JSON. Example:
///
///   cerebellum sim --task reach --expert --episodes 20 --seed 0 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct SimArgs {
    #[command(flatten)]
    pub robot: SimRobotArgs,
    /// Drive the robot with the task's scripted expert (inverse kinematics
    /// plus the servos' position control) instead of random commands.
    #[arg(long)]
    pub expert: bool,
    #[arg(long, default_value_t = 10)]
    pub episodes: u32,
    /// Seed of the first episode.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Include wall-clock timings (they differ between runs, so they are
    /// left out by default to keep the JSON of a seed identical).
    #[arg(long)]
    pub timings: bool,
    /// Save one camera image of the first episode's start as PNG.
    #[arg(long, value_name = "PATH.png")]
    pub save_frame: Option<PathBuf>,
    /// Save what the policy sees over the first episode's first ticks as
    /// one PNG: a row per camera of the env config (its observation images,
    /// pose jitter included), the ticks left to right; with no camera
    /// configured, the default 64×64 front camera. Example:
    ///   cerebellum sim --task lift --expert --frame-strip lift.png
    #[arg(long, value_name = "PATH.png")]
    pub frame_strip: Option<PathBuf>,
    /// Ticks in the frame strip (1 to 64), from the reset on.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub strip_ticks: u32,
    /// Ticks between two frames of the strip (1 to 100).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub strip_every: u32,
    /// Pixels per camera pixel in the strip (1 to 8; nearest neighbour).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub strip_scale: u32,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.episodes == 0 {
        anyhow::bail!("--episodes must be at least 1");
    }
    let (config, model) = args.robot.load()?;
    let mut env = SimEnv::new(config.clone(), model.clone()).map_err(anyhow::Error::msg)?;
    let mut controller = make_controller(args.expert, &env).map_err(anyhow::Error::msg)?;

    if let Some(path) = &args.save_frame {
        save_start_frame(&mut env, args.seed, path)?;
    }
    if let Some(path) = &args.frame_strip {
        save_frame_strip(&config, model.clone(), controller.as_mut(), &args, path)?;
    }
    let started = Instant::now();
    let mut summaries: Vec<EpisodeSummary> = Vec::new();
    for i in 0..args.episodes {
        let seed = args.seed + i as u64;
        let summary = run_episode(&mut env, controller.as_mut(), seed)?;
        if !args.json {
            println!(
                "episode {i:>3}  seed {seed:>4}  return {:>10.3}  steps {:>4}  {}",
                summary.episode_return,
                summary.steps,
                if summary.success {
                    "success"
                } else {
                    "failure"
                }
            );
        }
        summaries.push(summary);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = summaries.len() as f64;
    let success_rate = summaries.iter().filter(|s| s.success).count() as f64 / n;
    let mean_return = summaries.iter().map(|s| s.episode_return).sum::<f64>() / n;
    let steps: u64 = summaries.iter().map(|s| s.steps as u64).sum();
    println!(
        "{} episodes of {}: success rate {:.1}%, mean return {:.3}",
        summaries.len(),
        config.task,
        100.0 * success_rate,
        mean_return
    );
    if args.json {
        let mut report = json!({
            "command": "sim",
            "task": config.task.name(),
            "robot": env_robot_name(&env),
            "controller": if args.expert { "expert" } else { "random" },
            "seed": args.seed,
            "episodes": summaries.len(),
            "success_rate": success_rate,
            "mean_return": mean_return,
            "episode_returns": summaries.iter().map(|s| s.episode_return).collect::<Vec<_>>(),
            "episode_successes": summaries.iter().map(|s| s.success).collect::<Vec<_>>(),
            "steps": steps,
        });
        if args.timings {
            report["timings"] = json!({
                "seconds": elapsed,
                "steps_per_second": steps as f64 / elapsed,
            });
        }
        print_json(&report);
    }
    Ok(())
}

fn env_robot_name(env: &SimEnv) -> String {
    use cerebellum_core::Robot;
    env.spec().name.clone()
}

fn save_start_frame(env: &mut SimEnv, seed: u64, path: &std::path::Path) -> anyhow::Result<()> {
    use cerebellum_core::{ResetRequest, Robot};
    if env.as_arm().is_none() {
        anyhow::bail!("--save-frame needs an arm task: the pendulum has no camera");
    }
    env.reset(&ResetRequest { seed })?;
    let image = env.as_arm().expect("checked above").render();
    cerebellum_sim::camera::save_png(&image, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The first episode's frames, every `strip_every` ticks for `strip_ticks`
/// frames (fewer when the episode ends first), a row per camera. The
/// episode runs in a copy of the env; one without cameras gets the default
/// 64×64 front camera.
fn save_frame_strip(
    config: &cerebellum_sim::EnvConfig,
    model: Option<std::sync::Arc<cerebellum_sim::ArmModel>>,
    controller: &mut dyn crate::episodes::Controller,
    args: &SimArgs,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use cerebellum_core::Image;
    if config.task == cerebellum_sim::TaskKind::Pendulum {
        anyhow::bail!("--frame-strip needs an arm task: the pendulum has no camera");
    }
    let mut config = config.clone();
    if config.cameras.is_empty() {
        config.cameras.push(cerebellum_sim::CameraConfig::default());
    }
    let mut env = SimEnv::new(config, model).map_err(anyhow::Error::msg)?;
    let mut columns: Vec<Vec<Image>> = Vec::new();
    let (wanted, every) = (args.strip_ticks as usize, args.strip_every as usize);
    let mut tick = 0;
    run_episode_with(&mut env, controller, args.seed, |observation, command| {
        if tick % every == 0 && columns.len() < wanted {
            columns.push(observation.images.clone());
        }
        tick += 1;
        command
    })?;
    let scale = args.strip_scale as usize;
    // Each row is as tall as its camera; every column as wide as the widest.
    let cell_width = columns[0]
        .iter()
        .map(|i| i.width as usize)
        .max()
        .unwrap_or(1)
        * scale;
    let heights: Vec<usize> = columns[0]
        .iter()
        .map(|i| i.height as usize * scale)
        .collect();
    let (width, height) = (cell_width * columns.len(), heights.iter().sum::<usize>());
    let mut data = vec![255u8; width * height * 3];
    for (c, frames) in columns.iter().enumerate() {
        let mut top = 0;
        for (frame, &rows) in frames.iter().zip(&heights) {
            for y in 0..rows {
                for x in 0..frame.width as usize * scale {
                    let src = ((y / scale) * frame.width as usize + x / scale) * 3;
                    let dst = ((top + y) * width + c * cell_width + x) * 3;
                    data[dst..dst + 3].copy_from_slice(&frame.data[src..src + 3]);
                }
            }
            top += rows;
        }
    }
    let strip = Image {
        camera: columns[0][0].camera.clone(),
        height: height as u32,
        width: width as u32,
        channels: 3,
        data,
    };
    cerebellum_sim::camera::save_png(&strip, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
