//! `cerebellum bench reward`: what learned rewards cost on this machine,
//! and proof that they stay off the control thread.

use super::print_json;
use crate::control_loop::{ControlLoop, Inference, LoopConfig, PolicySlot};
use crate::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use crate::learn::TrainConfig;
use crate::learn::labeller_thread::{LabellerThread, RewardModelSlot};
use crate::learn::online::{LearnerThread, OnlinePpo, Pace};
use cerebellum_core::{
    Observation, Policy, Provenance, RewardComponents, Robot, Sampling, Transition,
};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_reward_models::fields::FieldSelection;
use cerebellum_reward_models::labeller::{Labeller, PROGRESS, RewardModelConfig, RewardModels};
use cerebellum_reward_models::progress::{AnnotatedEpisode, ProgressConfig, ProgressModel};
use cerebellum_reward_models::success::SuccessClassifier;
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, SimEnv, TaskKind};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Measure learned-reward inference and its effect on the control loop.
///
/// (1) Time per transition of the reward models at their shipped sizes
/// (progress: 3-frame history, 2×128 hidden; success classifier: 64
/// hidden) on the reach arm's state, labelled one at a time (the online
/// labeller thread) and in batches of 1,024 (the batch trainer), against
/// the policy's own batch-1 inference measured in the same run.
/// (2) The wall-clock loop at each rate with an online PPO learner beside
/// it, without and with the labeller thread between them: tick-start
/// jitter, tick latency and deadline misses, and the ratio with/without.
/// Example:
///
///   cerebellum bench reward --seconds 30 --rates 50,500 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RewardBenchArgs {
    /// Seconds per rate and condition of the loop measurement.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Loop rates (Hz).
    #[arg(long, value_delimiter = ',', default_values_t = vec![50.0, 500.0])]
    pub rates: Vec<f64>,
    /// Transitions timed for the inference figures.
    #[arg(long, default_value_t = 5000)]
    pub transitions: usize,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Reward models of the shipped sizes over the arm's states (the weights
/// are barely trained: time does not depend on them).
fn models(states: &[Vec<f32>]) -> anyhow::Result<RewardModels> {
    let half = states.len() / 2;
    let episode = AnnotatedEpisode {
        states: states.to_vec(),
        stages: (0..states.len()).map(|t| u32::from(t >= half)).collect(),
    };
    let progress = ProgressModel::train(
        &[episode],
        2,
        &ProgressConfig {
            epochs: 2,
            ..ProgressConfig::default()
        },
    )?;
    let frames: Vec<(Vec<f32>, bool)> = states
        .iter()
        .enumerate()
        .map(|(t, s)| (s.clone(), t >= half))
        .collect();
    let success = SuccessClassifier::train(&frames, &FieldSelection::all(), 64, 2, 0)?;
    let config = RewardModelConfig {
        progress: vec![PathBuf::from("bench")],
        success: Some(PathBuf::from("bench")),
        success_ends_episode: false,
        ..RewardModelConfig::default()
    };
    Ok(RewardModels::new(
        vec![progress],
        Some(success),
        config,
        0.95,
        1,
    )?)
}

fn transition(observation: &Observation, step: u32) -> Transition {
    Transition {
        provenance: Provenance {
            robot_id: "bench".into(),
            episode_id: u64::from(step / 100),
            step: step % 100,
            ..Provenance::default()
        },
        sim_time: 0.0,
        wall_time: 0.0,
        observation: observation.clone(),
        policy_action: cerebellum_core::Action::new(vec![]),
        sent_command: cerebellum_core::Action::new(vec![]),
        behaviour_log_prob: None,
        chunk_index: 0,
        intervention: false,
        safety_clamped: false,
        rewards: RewardComponents::new(),
        terminated: false,
        truncated: step % 100 == 99,
        success: None,
        stage: None,
        reward_version: None,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// (mean, p50, p99) µs per transition labelled one at a time, µs per
/// transition in batches of 1,024, and the policy's batch-1 inference.
fn inference(
    models: Arc<RewardModels>,
    policy: &mut GaussianMlpPolicy,
    observations: &[Observation],
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut labeller = Labeller::new(models.clone());
    let mut single = Vec::with_capacity(n);
    for i in 0..n {
        let mut t = transition(&observations[i % observations.len()], i as u32);
        let next = &observations[(i + 1) % observations.len()];
        let started = Instant::now();
        labeller.label(&mut [(&mut t, Some(next))])?;
        single.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mut labeller = Labeller::new(models);
    let batch = 1024;
    let mut rows: Vec<Transition> = (0..batch)
        .map(|i| transition(&observations[i % observations.len()], i as u32))
        .collect();
    let nexts: Vec<Observation> = (0..batch)
        .map(|i| observations[(i + 1) % observations.len()].clone())
        .collect();
    let rounds = n.div_ceil(batch).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        let mut items: Vec<(&mut Transition, Option<&Observation>)> =
            rows.iter_mut().zip(nexts.iter().map(Some)).collect();
        labeller.label(&mut items)?;
    }
    let batched = started.elapsed().as_secs_f64() * 1e6 / (rounds * batch) as f64;
    let mut policy_us = Vec::with_capacity(n);
    for i in 0..n {
        let o = std::slice::from_ref(&observations[i % observations.len()]);
        let started = Instant::now();
        policy.act(o, Sampling::Deterministic)?;
        policy_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    sort(&mut single);
    sort(&mut policy_us);
    let mean = single.iter().sum::<f64>() / n as f64;
    let policy_p50 = percentile(&policy_us, 0.5);
    Ok(json!({
        "label_single_us_mean": mean,
        "label_single_us_p50": percentile(&single, 0.5),
        "label_single_us_p99": percentile(&single, 0.99),
        "label_batched_us_per_transition": batched,
        "policy_inference_us_p50": policy_p50,
        "label_single_p50_vs_policy_p50": percentile(&single, 0.5) / policy_p50,
    }))
}

fn loop_with_learner(
    rate: f64,
    seconds: f64,
    labeller: Option<&Arc<RewardModels>>,
    model: &Arc<ArmModel>,
) -> anyhow::Result<serde_json::Value> {
    let env = SimEnv::new(EnvConfig::default(), Some(model.clone())).map_err(anyhow::Error::msg)?;
    let spec = env.spec().clone();
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.online.batch_transitions = 512;
    if let Some(models) = labeller {
        config.reward = models.config().clone();
        config.reward_weights = [(PROGRESS.to_owned(), 1.0)].into();
    }
    let mut policy = GaussianMlpPolicy::new(&spec, config.policy.clone(), 0)?;
    policy.set_version(1);
    let slot = PolicySlot::new(policy.clone());
    let pace = Pace::WallTime { capacity: 8192 };
    let (sink, learner) =
        LearnerThread::spawn(OnlinePpo::new(policy, config, None), slot.clone(), pace);
    let (mut sink, labelling) = match labeller {
        Some(models) => {
            let slot = RewardModelSlot::shared(models.clone());
            let (sink, thread) = LabellerThread::spawn(slot, sink, pace);
            (sink, Some(thread))
        }
        None => (sink, None),
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let envelope = SafetyEnvelope::new(
        &spec,
        EnvelopeConfig::default(),
        Some(Arc::new(ArmKinematics(model.clone()))),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut control = ControlLoop::new(
        env,
        cerebellum_core::WallClock::new(period, Duration::from_micros(200)),
        Inference::inline(slot),
        envelope,
        LoopConfig {
            seed: 0,
            stochastic: true,
            max_episodes: None,
            max_ticks: Some((seconds * rate).round() as u64),
            inference_deadline: Some(LoopConfig::deadline_for(period)),
            robot_id: "bench".into(),
            episodes_per_start: 1,
        },
    );
    control.run(&mut sink)?;
    drop(sink);
    let labelled = labelling.map(LabellerThread::join);
    let learner = learner.join();
    let s = control.stats.summary();
    Ok(json!({
        "rate_hz": rate,
        "labeller": labeller.is_some(),
        "ticks": s.counters.ticks,
        "jitter_p50_us": s.jitter_p50_us,
        "jitter_p99_us": s.jitter_p99_us,
        "jitter_max_us": s.jitter_max_us,
        "tick_latency_p50_us": s.tick_latency_p50_us,
        "tick_latency_p99_us": s.tick_latency_p99_us,
        "deadline_misses": s.counters.deadline_misses,
        "dropped_transitions": s.counters.dropped_transitions,
        "learner_updates": learner.counters.updates,
        "labelled": labelled.as_ref().map(|l| l.counts.labelled),
        "label_us_mean": labelled.as_ref().map(|l| l.label_us_mean),
    }))
}

pub fn run(args: RewardBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.transitions > 0, "--transitions must be positive");
    let model = ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default())?;
    let mut env =
        SimEnv::new(EnvConfig::default(), Some(model.clone())).map_err(anyhow::Error::msg)?;
    let spec = env.spec().clone();
    // Observations of the arm moving under random commands.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut observations = vec![Robot::reset(
        &mut env,
        &cerebellum_core::ResetRequest { seed: 0 },
    )?];
    let (lower, upper) = spec.action.limits();
    for _ in 0..499 {
        let command = cerebellum_core::Action::new(
            lower
                .iter()
                .zip(&upper)
                .map(|(lo, hi)| rng.random_range(*lo..*hi))
                .collect(),
        );
        Robot::apply(&mut env, &command)?;
        observations.push(Robot::observe(&mut env)?);
    }
    let states: Vec<Vec<f32>> = observations.iter().map(|o| o.state.clone()).collect();
    let models = Arc::new(models(&states)?);
    let mut policy = GaussianMlpPolicy::new(
        &spec,
        TrainConfig::for_task(TaskKind::Reach).policy.clone(),
        0,
    )?;
    let timing = inference(models.clone(), &mut policy, &observations, args.transitions)?;
    println!(
        "reward models per transition: one at a time {:.1} µs mean ({:.1} p50, {:.1} p99), batched {:.2} µs; the policy's batch-1 inference {:.1} µs p50 (ratio {:.2})",
        timing["label_single_us_mean"].as_f64().unwrap_or(f64::NAN),
        timing["label_single_us_p50"].as_f64().unwrap_or(f64::NAN),
        timing["label_single_us_p99"].as_f64().unwrap_or(f64::NAN),
        timing["label_batched_us_per_transition"]
            .as_f64()
            .unwrap_or(f64::NAN),
        timing["policy_inference_us_p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
        timing["label_single_p50_vs_policy_p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    let mut rows = Vec::new();
    for &rate in &args.rates {
        anyhow::ensure!(
            rate > 0.0 && rate <= 10_000.0,
            "rate {rate} Hz is out of range"
        );
        let without = loop_with_learner(rate, args.seconds, None, &model)?;
        let with = loop_with_learner(rate, args.seconds, Some(&models), &model)?;
        let ratio = |key: &str| {
            let base = without[key].as_f64().unwrap_or(0.0);
            (base > 0.0).then(|| with[key].as_f64().unwrap_or(0.0) / base)
        };
        println!(
            "{rate:>6.0} Hz  jitter p99 µs: learner {} / learner + labeller {} (ratio {}); tick latency p99 µs: {} / {}; deadline misses {} / {}; labelled {} at {:.1} µs each",
            without["jitter_p99_us"],
            with["jitter_p99_us"],
            ratio("jitter_p99_us").map_or("n/a".into(), |r| format!("{r:.2}")),
            without["tick_latency_p99_us"],
            with["tick_latency_p99_us"],
            without["deadline_misses"],
            with["deadline_misses"],
            with["labelled"],
            with["label_us_mean"].as_f64().unwrap_or(f64::NAN),
        );
        rows.push(json!({
            "rate_hz": rate,
            "learner_only": without,
            "learner_and_labeller": with,
            "jitter_p99_ratio": ratio("jitter_p99_us"),
            "tick_latency_p99_ratio": ratio("tick_latency_p99_us"),
        }));
    }
    if args.json {
        print_json(&json!({
            "command": "bench reward",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "inference": timing,
            "loop": rows,
        }));
    }
    Ok(())
}
