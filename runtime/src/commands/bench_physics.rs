//! `cerebellum bench physics`: SO-101 physics steps per second in rapier
//! against MuJoCo stepping the same arm in the same run, the software
//! camera's frames per second, and the vectorised environment's steps per
//! second for N = 1, 8, 64.

use super::print_json;
use cerebellum_core::Action;
use cerebellum_sim::{
    ArmModel, ArmOptions, ArmWorld, Camera, CameraConfig, EnvConfig, PhysicsConfig, SimEnv,
    TaskKind, VecEnv,
};
use clap::Args;
use rapier3d::prelude::PhysicsPipeline;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Measure rapier against MuJoCo on the SO-101, the camera, and the
/// vectorised environment.
///
/// The MuJoCo peer is `bench/peers/mujoco_physics.py`; install it with
///   pip install -r bench/peers/requirements-mujoco.txt
/// Without it the bench still runs and says the peer is missing.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct PhysicsBenchArgs {
    /// Physics steps to time for rapier and MuJoCo.
    #[arg(long, default_value_t = 20_000)]
    pub steps: u32,
    /// Camera frames to time.
    #[arg(long, default_value_t = 300)]
    pub frames: u32,
    /// Control ticks per copy for the vectorised environment.
    #[arg(long, default_value_t = 100)]
    pub ticks: u32,
    /// Threads for the vectorised environment.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Python interpreter for the MuJoCo peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// MJCF scene of the same arm for MuJoCo: `sim/robots/so101/scene.xml`
    /// of a Cerebellum source tree (not embedded in the binary; default: the
    /// one in the tree this binary was built from, when it is still there).
    #[arg(long, value_name = "PATH")]
    pub mjcf: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The same target pose the MuJoCo peer commands (mid-range plus a quarter
/// of the half-range, signs per joint; see bench/peers/mujoco_physics.py).
pub(super) const TARGET: [f32; 6] = [0.479965, -0.4363325, 0.4225, 0.414515, 0.7468125, 0.5454175];

pub fn run(args: PhysicsBenchArgs) -> anyhow::Result<()> {
    let model = ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default())?;
    let physics = PhysicsConfig::default();

    // rapier: one world, one thread, dt as configured, the servos driving
    // to the same target as in MuJoCo.
    let mut world = ArmWorld::new(model.clone(), &physics, &model.home, None);
    world.set_joint_targets(&TARGET);
    let mut pipeline = PhysicsPipeline::new();
    for _ in 0..500 {
        world.step_physics(&mut pipeline);
    }
    let started = Instant::now();
    for _ in 0..args.steps {
        world.step_physics(&mut pipeline);
    }
    let rapier_sps = args.steps as f64 / started.elapsed().as_secs_f64();
    let tracking_error = world
        .joint_positions()
        .iter()
        .zip(TARGET)
        .map(|(q, t)| (q - t).abs())
        .fold(0.0f32, f32::max);
    println!(
        "rapier  SO-101: {rapier_sps:>10.0} steps/s (dt {:.5} s, 1 thread), max tracking error {tracking_error:.2e} rad",
        physics.dt
    );

    let mujoco = run_mujoco(&args, physics.dt);
    let ratio = match &mujoco {
        Ok(peer) => {
            let mujoco_sps = peer["steps_per_second"].as_f64().unwrap_or(f64::NAN);
            println!(
                "MuJoCo  SO-101: {mujoco_sps:>10.0} steps/s, max tracking error {:.2e} rad",
                peer["max_abs_tracking_error"].as_f64().unwrap_or(f64::NAN)
            );
            println!("ratio rapier / MuJoCo: {:.3}", rapier_sps / mujoco_sps);
            Some(rapier_sps / mujoco_sps)
        }
        Err(reason) => {
            println!("MuJoCo  SO-101: not measured: {reason}");
            None
        }
    };

    // Camera.
    let mut camera_fps = Vec::new();
    for side in [64u32, 128] {
        let camera = Camera::new(CameraConfig {
            width: side,
            height: side,
            ..CameraConfig::default()
        })
        .map_err(anyhow::Error::msg)?;
        let mut image = camera.render(&world);
        let started = Instant::now();
        for _ in 0..args.frames {
            camera.render_into(&world, &mut image);
        }
        let fps = args.frames as f64 / started.elapsed().as_secs_f64();
        println!("camera {side}x{side}: {fps:>8.0} frames/s (1 thread)");
        camera_fps.push(json!({"width": side, "height": side, "frames_per_second": fps}));
    }

    // Vectorised reach environment, control ticks (4 physics steps each).
    let mut vec_results = Vec::new();
    let mut serial_rate = None;
    for n in [1usize, 8, 64] {
        let envs = (0..n)
            .map(|_| {
                SimEnv::new(
                    EnvConfig {
                        task: TaskKind::Reach,
                        ..EnvConfig::default()
                    },
                    Some(model.clone()),
                )
                .map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut vec_env = VecEnv::new(envs, 0, args.threads);
        vec_env.reset()?;
        let commands = vec![Action::new(TARGET.to_vec()); n];
        let started = Instant::now();
        for _ in 0..args.ticks {
            vec_env.step(&commands)?;
        }
        let rate = (n as u64 * args.ticks as u64) as f64 / started.elapsed().as_secs_f64();
        let baseline = *serial_rate.get_or_insert(rate);
        println!(
            "vec env N={n:<3} {rate:>9.0} env steps/s ({:.2}x N=1, {} thread(s))",
            rate / baseline,
            args.threads
        );
        vec_results
            .push(json!({"envs": n, "env_steps_per_second": rate, "ratio_to_n1": rate / baseline}));
    }

    if args.json {
        print_json(&json!({
            "command": "bench physics",
            "rapier_steps_per_second": rapier_sps,
            "rapier_max_tracking_error": tracking_error,
            "dt": physics.dt,
            "mujoco": mujoco.as_ref().ok(),
            "mujoco_missing": mujoco.as_ref().err(),
            "ratio_rapier_to_mujoco": ratio,
            "camera": camera_fps,
            "vec_env": vec_results,
            "threads": args.threads,
        }));
    }
    Ok(())
}

/// Runs the MuJoCo peer; an error says why it could not be measured.
fn run_mujoco(args: &PhysicsBenchArgs, dt: f32) -> Result<serde_json::Value, String> {
    let scene = mjcf_scene(args.mjcf.as_deref())?;
    let peer_args = [
        "--scene".to_owned(),
        scene.to_string_lossy().into_owned(),
        "--dt".into(),
        dt.to_string(),
        "--steps".into(),
        args.steps.to_string(),
        "--json".into(),
    ];
    super::bench::run_peer(
        &args.python,
        "mujoco_physics.py",
        &peer_args,
        "requirements-mujoco.txt",
    )
}

/// The MuJoCo scene to load: `--mjcf`, else the source tree's, which a
/// binary away from its source tree does not have; the error says so and
/// the bench goes on without the MuJoCo peer.
fn mjcf_scene(flag: Option<&std::path::Path>) -> Result<PathBuf, String> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    let source = cerebellum_sim::so101_source_dir().join("scene.xml");
    if source.is_file() {
        Ok(source)
    } else {
        Err(format!(
            "the MuJoCo model of the SO-101 is not embedded in the binary and the source tree it was built from ({}) is not here: pass --mjcf PATH to sim/robots/so101/scene.xml of a Cerebellum checkout",
            source.display()
        ))
    }
}
