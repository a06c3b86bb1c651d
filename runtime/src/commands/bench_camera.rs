//! `cerebellum bench camera`: the software camera's frames per second, and
//! the vectorised environment's env steps per second with the camera off
//! and on, measured in the same run, with their ratio.

use super::print_json;
use cerebellum_core::Action;
use cerebellum_sim::{
    ArmModel, ArmOptions, Camera, CameraConfig, EnvConfig, SimEnv, TaskKind, VecEnv,
};
use clap::Args;
use serde_json::json;
use std::time::Instant;

/// The software camera's frames per second, and the vectorised
/// environment's env steps per second with the camera off and on.
///
/// Frames per second at 64×64 and 128×128 of the default camera on the
/// task's first world (1 thread).
///
/// The environment part steps N copies of the task with the same commands
/// for the same number of ticks, once without cameras and once with
/// `--cameras` cameras of `--side`×`--side` pixels (the default camera
/// pose, then further ones turned about the arm), alternating off and on
/// for `--rounds` rounds; it prints the median env steps/s of each and the
/// ratio on / off. Both are measured in this run, on this machine, so the
/// ratio holds up under a busy box better than either rate.
///
/// Example (the numbers in docs/BENCHMARKS.md):
///   cerebellum bench camera --frames 300 --envs 8 --ticks 100 --rounds 3
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CameraBenchArgs {
    /// Frames to time per image size.
    #[arg(long, default_value_t = 300)]
    pub frames: u32,
    /// Copies of the environment.
    #[arg(long, default_value_t = 8)]
    pub envs: usize,
    /// Control ticks per copy and round.
    #[arg(long, default_value_t = 100)]
    pub ticks: u32,
    /// Off/on rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Image width and height of the cameras in the environment part.
    #[arg(long, default_value_t = 64)]
    pub side: u32,
    /// Cameras in the environment part (1 to 8).
    #[arg(long, default_value_t = 1)]
    pub cameras: usize,
    /// Task of the environment part (an arm task: reach, lift, ...).
    #[arg(long, default_value = "lift")]
    pub task: String,
    /// Threads for the vectorised environment.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CameraBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.frames >= 1 && args.envs >= 1 && args.ticks >= 1 && args.rounds >= 1,
        "--frames, --envs, --ticks and --rounds must each be at least 1"
    );
    anyhow::ensure!(
        (1..=8).contains(&args.cameras),
        "--cameras {} must be between 1 and 8",
        args.cameras
    );
    let task: TaskKind = args.task.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        task != TaskKind::Pendulum,
        "--task {task}: the pendulum has no camera; pick an arm task"
    );
    let model = ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default())?;

    // Frames per second on the task's first world (the arm at home, the
    // task's objects on the table).
    let env = SimEnv::new(
        EnvConfig {
            task,
            ..EnvConfig::default()
        },
        Some(model.clone()),
    )
    .map_err(anyhow::Error::msg)?;
    let world = env.as_arm().expect("an arm task").world();
    let mut frame_rates = Vec::new();
    for side in [64u32, 128] {
        let camera = Camera::new(CameraConfig {
            width: side,
            height: side,
            ..CameraConfig::default()
        })
        .map_err(anyhow::Error::msg)?;
        let mut image = camera.render(world);
        let started = Instant::now();
        for _ in 0..args.frames {
            camera.render_into(world, &mut image);
        }
        let fps = args.frames as f64 / started.elapsed().as_secs_f64();
        println!("camera {side}x{side}: {fps:>8.0} frames/s (1 thread)");
        frame_rates.push(json!({"width": side, "height": side, "frames_per_second": fps}));
    }

    // The vectorised environment, camera off and on.
    let cameras = bench_cameras(args.side, args.cameras);
    let mut off_rates = Vec::new();
    let mut on_rates = Vec::new();
    for round in 0..args.rounds {
        for on in [false, true] {
            let config = EnvConfig {
                task,
                cameras: if on { cameras.clone() } else { Vec::new() },
                ..EnvConfig::default()
            };
            let rate = vec_env_rate(&model, &config, &args)?;
            println!(
                "round {round}: vec env N={} camera {}: {rate:>9.0} env steps/s",
                args.envs,
                if on { "on " } else { "off" }
            );
            if on {
                on_rates.push(rate);
            } else {
                off_rates.push(rate);
            }
        }
    }
    let off = median(&mut off_rates);
    let on = median(&mut on_rates);
    let ratio = on / off;
    println!(
        "vec env N={} ({} thread(s), task {task}): camera off {off:.0} env steps/s, {} camera(s) {}x{} on {on:.0} env steps/s, ratio on/off {ratio:.3}",
        args.envs, args.threads, args.cameras, args.side, args.side
    );
    if args.json {
        print_json(&json!({
            "command": "bench camera",
            "camera": frame_rates,
            "task": task.name(),
            "envs": args.envs,
            "threads": args.threads,
            "ticks": args.ticks,
            "rounds": args.rounds,
            "cameras": args.cameras,
            "side": args.side,
            "env_steps_per_second_camera_off": off,
            "env_steps_per_second_camera_on": on,
            "ratio_on_to_off": ratio,
        }));
    }
    Ok(())
}

/// `count` cameras of `side`² pixels: the default view, then the same
/// view turned about the vertical through its look-at point.
fn bench_cameras(side: u32, count: usize) -> Vec<CameraConfig> {
    let base = CameraConfig {
        width: side,
        height: side,
        ..CameraConfig::default()
    };
    (0..count)
        .map(|k| {
            let angle = k as f32 * 0.7;
            let (s, c) = angle.sin_cos();
            let [x, y, z] = base.eye;
            let [cx, cy, _] = base.look_at;
            let (dx, dy) = (x - cx, y - cy);
            CameraConfig {
                name: if k == 0 {
                    base.name.clone()
                } else {
                    format!("view{k}")
                },
                eye: [cx + c * dx - s * dy, cy + s * dx + c * dy, z],
                ..base.clone()
            }
        })
        .collect()
}

/// Env steps per second of `args.envs` copies of `config` over
/// `args.ticks` ticks, after a few ticks of warm-up.
fn vec_env_rate(
    model: &std::sync::Arc<ArmModel>,
    config: &EnvConfig,
    args: &CameraBenchArgs,
) -> anyhow::Result<f64> {
    let envs = (0..args.envs)
        .map(|_| SimEnv::new(config.clone(), Some(model.clone())).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut vec_env = VecEnv::new(envs, 0, args.threads);
    vec_env.reset()?;
    let commands = vec![Action::new(super::bench_physics::TARGET.to_vec()); args.envs];
    for _ in 0..5 {
        vec_env.step(&commands)?;
    }
    let started = Instant::now();
    for _ in 0..args.ticks {
        vec_env.step(&commands)?;
    }
    Ok((args.envs as u64 * args.ticks as u64) as f64 / started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
