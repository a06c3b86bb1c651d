//! `cerebellum bench loop`: how well the wall-clock loop keeps its period,
//! alone and with a learner saturating the other core.

use super::print_json;
use crate::control_loop::{CheckedWeights, ControlLoop, Inference, LoopConfig, NoSink, PolicySlot};
use crate::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use crate::learn::ppo::{self, Batch, PpoConfig};
use cerebellum_core::{
    Action, ActionChunk, Observation, Policy, PolicyError, PolicyOutput, Robot, Sampling, WallClock,
};
use cerebellum_policies::fused_training::MlpDecisions;
use cerebellum_policies::{GaussianConfig, GaussianMlpPolicy, TrainablePolicy};
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, SimEnv};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Measure the control loop's timing at fixed rates.
///
/// Runs the loop in wall time on the simulated SO-101 with a trivial policy
/// (hold the measured pose) through the full safety envelope, at each rate,
/// twice: (a) alone, (b) with a PPO learner thread updating a 64-64 policy
/// flat out beside it. Prints tick-start lateness (jitter), tick latency
/// and deadline misses for both, and the ratio (b)/(a). Example:
///
///   cerebellum bench loop --seconds 60 --rates 500,1000 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct LoopBenchArgs {
    /// Seconds per rate and condition.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Loop rates (Hz).
    #[arg(long, value_delimiter = ',', default_values_t = vec![500.0, 1000.0])]
    pub rates: Vec<f64>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Sends back the measured joint positions (the first `joints` values of
/// the arm's state): costs nothing, moves nothing.
#[derive(Clone)]
struct HoldPolicy {
    joints: usize,
}

impl CheckedWeights for HoldPolicy {
    fn weights_finite(&self) -> bool {
        true
    }
}

impl Policy for HoldPolicy {
    fn version(&self) -> u64 {
        1
    }

    fn act(
        &mut self,
        observations: &[Observation],
        _: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        Ok(observations
            .iter()
            .map(|o| PolicyOutput {
                chunk: ActionChunk::single(Action::new(o.state[..self.joints].to_vec())),
                sampled: None,
                log_prob: None,
                action_log_probs: None,
            })
            .collect())
    }
}

/// PPO updates on a synthetic batch, as fast as they go, until `stop`.
fn saturating_learner(
    spec: cerebellum_core::RobotSpec,
    stop: Arc<AtomicBool>,
    updates: Arc<AtomicU64>,
) {
    let config = GaussianConfig {
        hidden: vec![64, 64],
        ..GaussianConfig::default()
    };
    let mut policy = GaussianMlpPolicy::new(&spec, config, 0).expect("policy");
    let (obs, act) = (policy.obs_size(), policy.act_size());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 1024;
    let observations = (0..n * obs).map(|_| rng.random::<f32>() - 0.5).collect();
    let actions = (0..n * act).map(|_| rng.random::<f32>() - 0.5).collect();
    let batch = Batch {
        decisions: MlpDecisions::from_normalized(&policy, observations, actions).expect("rows"),
        old_log_probs: vec![-5.0; n],
        action_starts: (0..=n).collect(),
        advantages: (0..n).map(|_| rng.random::<f32>() - 0.5).collect(),
        loss_weights: Vec::new(),
        returns: (0..n).map(|_| rng.random::<f32>()).collect(),
        old_values: vec![0.0; n],
    };
    let ppo_config = PpoConfig {
        epochs: 1,
        minibatch_size: 256,
        ..PpoConfig::default()
    };
    let mut adam = policy.optimizer(1e-4);
    while !stop.load(Ordering::Relaxed) {
        ppo::update(&mut policy, &mut adam, &batch, &ppo_config, 1e-4, &mut rng);
        updates.fetch_add(1, Ordering::Relaxed);
    }
}

fn measure(
    rate: f64,
    seconds: f64,
    with_learner: bool,
    model: &Arc<ArmModel>,
) -> anyhow::Result<serde_json::Value> {
    let env = SimEnv::new(EnvConfig::default(), Some(model.clone())).map_err(anyhow::Error::msg)?;
    let spec = env.spec().clone();
    let period = Duration::from_secs_f64(1.0 / rate);
    let joints = spec.action.len();
    let envelope = SafetyEnvelope::new(
        &spec,
        EnvelopeConfig {
            max_step_per_tick: vec![0.05; joints],
            max_joint_velocity: vec![6.0; joints],
            ..EnvelopeConfig::default()
        },
        Some(Arc::new(ArmKinematics(model.clone()))),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let learner = with_learner.then(|| {
        let (spec, stop, updates) = (spec.clone(), stop.clone(), updates.clone());
        std::thread::spawn(move || saturating_learner(spec, stop, updates))
    });
    let mut control = ControlLoop::new(
        env,
        WallClock::new(period, Duration::from_micros(200)),
        Inference::inline(PolicySlot::new(HoldPolicy { joints })),
        envelope,
        LoopConfig {
            seed: 0,
            stochastic: false,
            max_episodes: None,
            max_ticks: Some((seconds * rate).round() as u64),
            inference_deadline: Some(LoopConfig::deadline_for(period)),
            robot_id: "bench".into(),
            episodes_per_start: 1,
        },
    );
    control.run(&mut NoSink)?;
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = learner {
        let _ = handle.join();
    }
    let s = control.stats.summary();
    // A tick that started later than its period missed its slot.
    let late_ticks = control
        .stats
        .jitter_us
        .count_between(period.as_micros() as u64, u64::MAX);
    Ok(json!({
        "rate_hz": rate,
        "learner": with_learner,
        "learner_updates": updates.load(Ordering::Relaxed),
        "ticks": s.counters.ticks,
        "jitter_p50_us": s.jitter_p50_us,
        "jitter_p99_us": s.jitter_p99_us,
        "jitter_max_us": s.jitter_max_us,
        "tick_latency_p50_us": s.tick_latency_p50_us,
        "tick_latency_p99_us": s.tick_latency_p99_us,
        "tick_latency_max_us": s.tick_latency_max_us,
        "deadline_misses": s.counters.deadline_misses,
        "ticks_late_by_a_period": late_ticks,
    }))
}

pub fn run(args: LoopBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let model = ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default())?;
    let mut rows = Vec::new();
    for &rate in &args.rates {
        anyhow::ensure!(
            rate > 0.0 && rate <= 10_000.0,
            "rate {rate} Hz is out of range"
        );
        let idle = measure(rate, args.seconds, false, &model)?;
        let loaded = measure(rate, args.seconds, true, &model)?;
        // Against a zero idle figure (a tick never late at p99) there is no
        // ratio to give.
        let ratio = |key: &str| {
            let idle = idle[key].as_f64().unwrap_or(0.0);
            (idle > 0.0).then(|| loaded[key].as_f64().unwrap_or(0.0) / idle)
        };
        let label = if rate >= 1000.0 {
            format!("{:.0} kHz", rate / 1000.0)
        } else {
            format!("{rate:.0} Hz")
        };
        println!(
            "{label:>7}  jitter p50/p99/max µs: idle {}/{}/{}, learner {}/{}/{} (p99 ratio {}); tick latency p99 µs: idle {}, learner {}; deadline misses: idle {}, learner {}; learner did {} updates",
            idle["jitter_p50_us"],
            idle["jitter_p99_us"],
            idle["jitter_max_us"],
            loaded["jitter_p50_us"],
            loaded["jitter_p99_us"],
            loaded["jitter_max_us"],
            ratio("jitter_p99_us").map_or("n/a: idle p99 is 0".into(), |r| format!("{r:.2}")),
            idle["tick_latency_p99_us"],
            loaded["tick_latency_p99_us"],
            idle["deadline_misses"],
            loaded["deadline_misses"],
            loaded["learner_updates"],
        );
        rows.push(json!({
            "label": label,
            "idle": idle,
            "with_learner": loaded,
            "jitter_p99_ratio": ratio("jitter_p99_us"),
        }));
    }
    if args.json {
        print_json(&json!({
            "command": "bench loop",
            "seconds": args.seconds,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "rates": rows,
        }));
    }
    Ok(())
}
