//! `cerebellum bench train`: Cerebellum's PPO against Stable-Baselines3 and
//! a CleanRL-style PyTorch PPO on Pendulum-v1 (env steps and wall time to a
//! deterministic evaluation return of −200), one PPO update against plain
//! PyTorch, and batch-1 policy latency against PyTorch and ONNX Runtime.
//! Every peer runs in the same invocation, one thread each.

use super::bench::run_peer;
use super::print_json;
use crate::learn::eval::evaluate;
use crate::learn::ppo::{self, Batch, PpoConfig};
use crate::learn::trainer::make_envs;
use crate::learn::{TrainConfig, Trainer};
use cerebellum_core::{ActionSpec, FieldSpec, ObservationSpec, RobotSpec, Unit};
use cerebellum_policies::fused_training::MlpDecisions;
use cerebellum_policies::{Adam, GaussianConfig, GaussianMlpPolicy, MlpTape};
use cerebellum_sim::{EnvConfig, TaskKind};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::time::Instant;

/// Learning speed and learner throughput against SB3, CleanRL-style PPO,
/// PyTorch and ONNX Runtime, measured in one run, one thread each.
///
/// Peers (bench/peers/, each with its requirements file):
///   pip install -r bench/peers/requirements-sb3.txt
///   pip install -r bench/peers/requirements-cleanrl.txt
///   pip install -r bench/peers/requirements-latency.txt
/// A peer that is not installed is reported as missing; ours still runs.
///
///   cerebellum bench train --seeds 3
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TrainBenchArgs {
    /// Pendulum seeds (0..N) for every learner.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Evaluate (10 deterministic episodes) every this many env steps.
    #[arg(long, default_value_t = 4096)]
    pub eval_every: u64,
    /// Give up on a seed after this many env steps.
    #[arg(long, default_value_t = 200_000)]
    pub max_steps: u64,
    /// Skip the Python peers (ours only).
    #[arg(long)]
    pub no_peers: bool,
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub json: bool,
}

const TARGET_RETURN: f64 = -200.0;

pub fn run(args: TrainBenchArgs) -> anyhow::Result<()> {
    // One thread for our side too; candle's pool is not used on this path.
    let mut ours = Vec::new();
    for seed in 0..args.seeds {
        let r = pendulum_to_target(seed, args.eval_every, args.max_steps)?;
        println!(
            "cerebellum PPO  seed {seed}: {} after {:>7} env steps, {:>6.2} s training ({:.2} s eval)",
            if r["reached"].as_bool() == Some(true) {
                "reached −200"
            } else {
                "did not reach"
            },
            r["env_steps"],
            r["train_wall_s"].as_f64().unwrap_or(f64::NAN),
            r["eval_wall_s"].as_f64().unwrap_or(f64::NAN)
        );
        ours.push(r);
    }
    let mut peers = serde_json::Map::new();
    for (name, script, requirements) in [
        ("sb3", "sb3_ppo_pendulum.py", "requirements-sb3.txt"),
        (
            "cleanrl",
            "cleanrl_ppo_pendulum.py",
            "requirements-cleanrl.txt",
        ),
    ] {
        if args.no_peers {
            break;
        }
        let mut runs = Vec::new();
        for seed in 0..args.seeds {
            let peer_args = [
                "--seed".to_owned(),
                seed.to_string(),
                "--target".into(),
                TARGET_RETURN.to_string(),
                "--eval-every".into(),
                args.eval_every.to_string(),
                "--eval-episodes".into(),
                "10".into(),
                "--max-steps".into(),
                args.max_steps.to_string(),
            ];
            match run_peer(&args.python, script, &peer_args, requirements) {
                Ok(r) => {
                    println!(
                        "{name:<15} seed {seed}: {} after {:>7} env steps, {:>6.2} s training",
                        if r["reached"].as_bool() == Some(true) {
                            "reached −200"
                        } else {
                            "did not reach"
                        },
                        r["env_steps"],
                        r["train_wall_s"].as_f64().unwrap_or(f64::NAN)
                    );
                    runs.push(r);
                }
                Err(why) => {
                    println!("{name:<15}: not measured: {why}");
                    break;
                }
            }
        }
        peers.insert(name.into(), Value::Array(runs));
    }
    let ours_time = mean_of(&ours, "train_wall_s");
    let ours_steps = mean_of(&ours, "env_steps");
    let mut ratios = serde_json::Map::new();
    for (name, runs) in &peers {
        let runs = runs.as_array().expect("array");
        if runs.is_empty() {
            continue;
        }
        let time_ratio = mean_of(runs, "train_wall_s") / ours_time;
        let steps_ratio = mean_of(runs, "env_steps") / ours_steps;
        println!(
            "pendulum to −200: {name} takes {time_ratio:.1}× our wall time and {steps_ratio:.2}× our env steps (means over seeds)"
        );
        ratios.insert(
            name.clone(),
            json!({"wall_time": time_ratio, "env_steps": steps_ratio}),
        );
    }

    let update = update_throughput()?;
    println!(
        "PPO update (4096 samples × 10 epochs, minibatch 64, 64-64 MLPs): {:>10.0} samples/s",
        update
    );
    let torch_update = if args.no_peers {
        Err("skipped".to_owned())
    } else {
        run_peer(
            &args.python,
            "torch_ppo_update.py",
            &[],
            "requirements-torch.txt",
        )
    };
    let update_ratio = match &torch_update {
        Ok(r) => {
            // Both sides count a sample once per epoch it is trained in.
            let theirs = r["sample_passes_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "PyTorch PPO update: {theirs:>10.0} samples/s → ours is {:.1}× faster",
                update / theirs
            );
            Some(update / theirs)
        }
        Err(why) => {
            println!("PyTorch PPO update: not measured: {why}");
            None
        }
    };

    let (p50, p99) = inference_latency();
    println!("policy latency, batch 1, 64→256→256→8: p50 {p50:.2} µs, p99 {p99:.2} µs");
    let latency_peer = if args.no_peers {
        Err("skipped".to_owned())
    } else {
        run_peer(
            &args.python,
            "inference_latency.py",
            &[],
            "requirements-latency.txt",
        )
    };
    match &latency_peer {
        Ok(r) => {
            for runtime in ["pytorch", "onnxruntime"] {
                if let Some(p) = r[runtime]["p50_us"].as_f64() {
                    println!(
                        "{runtime:<12} p50 {p:.2} µs, p99 {:.2} µs → ours is {:.1}× faster at p50",
                        r[runtime]["p99_us"].as_f64().unwrap_or(f64::NAN),
                        p / p50
                    );
                }
            }
        }
        Err(why) => println!("latency peers: not measured: {why}"),
    }
    if args.json {
        print_json(&json!({
            "command": "bench train",
            "pendulum": {"target_return": TARGET_RETURN, "cerebellum": ours, "peers": peers, "ratios": ratios},
            "update": {"cerebellum_samples_per_s": update, "pytorch": torch_update.ok(), "ratio": update_ratio},
            "latency": {"cerebellum": {"p50_us": p50, "p99_us": p99}, "peers": latency_peer.ok()},
        }));
    }
    Ok(())
}

fn mean_of(runs: &[Value], key: &str) -> f64 {
    runs.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / runs.len().max(1) as f64
}

/// Our PPO on Pendulum with the default pendulum settings, evaluated every
/// `eval_every` env steps; training time excludes evaluation time.
fn pendulum_to_target(seed: u64, eval_every: u64, max_steps: u64) -> anyhow::Result<Value> {
    let mut config = TrainConfig::for_task(TaskKind::Pendulum);
    config.seed = seed;
    config.threads = 1;
    config.total_steps = max_steps;
    let env = EnvConfig {
        task: TaskKind::Pendulum,
        ..EnvConfig::default()
    };
    let mut trainer = Trainer::new(config, &env, None)?;
    let (mut train_s, mut eval_s) = (0.0, 0.0);
    let mut next_eval = eval_every;
    let mut curve = Vec::new();
    let mut last = f64::NEG_INFINITY;
    while !trainer.done() {
        let t = Instant::now();
        let r = trainer.iterate()?;
        train_s += t.elapsed().as_secs_f64();
        if r.env_steps >= next_eval {
            next_eval += eval_every;
            let t = Instant::now();
            let envs = make_envs(&env, None, 1)?;
            last = evaluate(&mut trainer.policy, envs, 10, seed, 1)?.mean_return;
            eval_s += t.elapsed().as_secs_f64();
            curve.push((r.env_steps, last));
            if last >= TARGET_RETURN {
                break;
            }
        }
    }
    Ok(json!({
        "peer": "cerebellum", "seed": seed, "reached": last >= TARGET_RETURN,
        "env_steps": trainer.state.env_steps, "train_wall_s": train_s, "eval_wall_s": eval_s,
        "final_eval_return": last, "curve": curve,
    }))
}

fn spec(obs: usize, act: usize) -> RobotSpec {
    let names: Vec<String> = (0..obs.max(act)).map(|i| format!("x{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    RobotSpec {
        name: "bench".into(),
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "s",
                Unit::Normalized,
                &names[..obs],
                &vec![(-10.0, 10.0); obs],
            )],
            cameras: vec![],
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "a",
                Unit::Normalized,
                &names[..act],
                &vec![(-1.0, 1.0); act],
            )],
        },
        control_rate_hz: 50.0,
    }
}

/// Samples per second of one PPO update: 4096 samples × 10 epochs,
/// minibatch 64, 64-64 MLPs on Pendulum-sized data (best of three).
fn update_throughput() -> anyhow::Result<f64> {
    let (n, obs, act) = (4096, 3, 1);
    let config = GaussianConfig {
        hidden: vec![64, 64],
        ..GaussianConfig::default()
    };
    let mut policy = GaussianMlpPolicy::new(&spec(obs, act), config, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut uniform = |k: usize| {
        (0..k)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    let (observations, actions) = (uniform(n * obs), uniform(n * act));
    let batch = Batch {
        decisions: MlpDecisions::from_normalized(&policy, observations, actions)?,
        old_log_probs: uniform(n).iter().map(|v| v - 1.0).collect(),
        action_starts: (0..=n).collect(),
        advantages: uniform(n),
        loss_weights: Vec::new(),
        returns: uniform(n),
        old_values: uniform(n),
    };
    let ppo_config = PpoConfig::default();
    let sizes = [
        policy.actor.params().len(),
        policy.log_std.len(),
        policy.critic.params().len(),
    ];
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut adam = Adam::new(3e-4, &sizes);
        let started = Instant::now();
        let stats = ppo::update(&mut policy, &mut adam, &batch, &ppo_config, 3e-4, &mut rng);
        let rate = (stats.minibatch_steps as usize * 64) as f64 / started.elapsed().as_secs_f64();
        best = best.max(rate);
    }
    Ok(best)
}

/// p50 and p99 of one batch-1 forward of a 64→256→256→8 MLP, in µs.
fn inference_latency() -> (f64, f64) {
    let mlp = cerebellum_policies::Mlp::new(&[64, 256, 256, 8], 0.01, 0);
    let input: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).sin()).collect();
    let mut tape = MlpTape::default();
    for _ in 0..2000 {
        mlp.forward(&input, 1, &mut tape);
    }
    let mut samples: Vec<f64> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            mlp.forward(std::hint::black_box(&input), 1, &mut tape);
            std::hint::black_box(tape.output());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}
