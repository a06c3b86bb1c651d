//! One learner, two policies (issue 18): PPO and GRPO (`ppo::update` with
//! GAE or group-normalised advantages) run on the fused MLP and on the
//! candle-autograd Gaussian policy from the same weights, batch and
//! generator, and reach the same loss decrease and the same weights; and
//! PPO on a chunk policy (horizon 4) clips per executed action.

use candle_core::Device;
use cerebellum_core::{
    Action, ActionChunk, ActionSpec, FieldSpec, Observation, ObservationSpec, Policy, RobotSpec,
    Sampling, Unit,
};
use cerebellum_policies::{
    CandleGaussianPolicy, Decision, EncodedDecisions, GaussianConfig, GaussianMlpPolicy,
    TrainablePolicy, Wants,
};
use cerebellum_runtime::learn::ppo::{self, Batch, PpoConfig};
use cerebellum_runtime::learn::{advantage, estimators};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const OBS: usize = 4;

fn spec() -> RobotSpec {
    RobotSpec {
        name: "learner_interface".into(),
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "s",
                Unit::Normalized,
                &["a", "b", "c", "d"],
                &[(-9.0, 9.0); OBS],
            )],
            cameras: vec![],
            instruction: false,
        },
        // Limits [−1, 1]: a command is its normalised draw.
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "u",
                Unit::Normalized,
                &["x", "y"],
                &[(-1.0, 1.0); 2],
            )],
        },
        control_rate_hz: 50.0,
    }
}

fn config() -> GaussianConfig {
    GaussianConfig {
        hidden: vec![16, 16],
        init_log_std: -0.5,
        ..Default::default()
    }
}

fn observations(n: usize, seed: u64) -> Vec<Observation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| Observation {
            state: (0..OBS)
                .map(|_| {
                    let x: f32 = StandardNormal.sample(&mut rng);
                    1.5 * x.clamp(-3.0, 3.0)
                })
                .collect(),
            images: vec![],
            instruction: None,
            timestamp: 0.0,
        })
        .collect()
}

/// The reward of a sampled action: closeness to a target the state sets.
fn reward(o: &Observation, a: &Action) -> f32 {
    -a.values
        .iter()
        .zip(&o.state)
        .map(|(u, s)| (u - 0.6 * s.tanh()).powi(2))
        .sum::<f32>()
}

fn fused_policy(obs: &[Observation]) -> GaussianMlpPolicy {
    let mut p = GaussianMlpPolicy::new(&spec(), config(), 11).unwrap();
    let all: Vec<&Observation> = obs.iter().collect();
    p.observe(&all);
    p
}

/// What both policies train on: the decisions' observations and sampled
/// actions, and the estimator's numbers.
struct Rollout {
    observations: Vec<Observation>,
    actions: Vec<Action>,
    old_log_probs: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    old_values: Vec<f32>,
}

impl Rollout {
    fn batch<P: TrainablePolicy>(&self, policy: &P) -> Batch<P::Encoded> {
        let decisions: Vec<Decision> = self
            .observations
            .iter()
            .zip(&self.actions)
            .map(|(o, a)| Decision::single(o, a))
            .collect();
        let n = decisions.len();
        Batch {
            decisions: policy.encode(&decisions).unwrap(),
            old_log_probs: self.old_log_probs.clone(),
            action_starts: (0..=n).collect(),
            advantages: self.advantages.clone(),
            loss_weights: Vec::new(),
            returns: self.returns.clone(),
            old_values: self.old_values.clone(),
        }
    }
}

/// Samples one action per observation from `policy` (the behaviour
/// policy): (actions, their log-probabilities).
fn sample(
    policy: &mut GaussianMlpPolicy,
    obs: &[Observation],
    seed: u64,
) -> (Vec<Action>, Vec<f32>) {
    policy
        .act(obs, Sampling::Stochastic { seed })
        .unwrap()
        .into_iter()
        .map(|out| {
            let chunk = out.sampled.unwrap_or(out.chunk);
            (chunk.actions[0].clone(), out.log_prob.unwrap())
        })
        .unzip()
}

/// PPO's rollout: 8 envs × 16 steps, time-major, GAE advantages from the
/// critic (each env's last step truncated, bootstrapping from its own
/// value).
fn ppo_rollout(policy: &mut GaussianMlpPolicy, obs: Vec<Observation>) -> Rollout {
    let envs = 8;
    let n = obs.len();
    let (actions, old_log_probs) = sample(policy, &obs, 5);
    let all: Vec<&Observation> = obs.iter().collect();
    let values = policy.state_values(&all).unwrap();
    let next_values: Vec<f32> = (0..n)
        .map(|i| values.get(i + envs).copied().unwrap_or(values[i]))
        .collect();
    let ended: Vec<bool> = (0..n).map(|i| i + envs >= n).collect();
    let rewards: Vec<f32> = obs
        .iter()
        .zip(&actions)
        .map(|(o, a)| reward(o, a))
        .collect();
    let (advantages, returns) = advantage::gae(
        envs,
        &rewards,
        &values,
        &next_values,
        &vec![false; n],
        &ended,
        0.99,
        0.95,
    );
    Rollout {
        observations: obs,
        actions,
        old_log_probs,
        advantages,
        returns,
        old_values: values,
    }
}

/// GRPO's rollout: 8 groups of 8 draws from one observation each,
/// group-normalised returns as advantages, no critic.
fn grpo_rollout(policy: &mut GaussianMlpPolicy, starts: &[Observation]) -> Rollout {
    let group = 8;
    let obs: Vec<Observation> = starts
        .iter()
        .flat_map(|o| std::iter::repeat_n(o.clone(), group))
        .collect();
    let (actions, old_log_probs) = sample(policy, &obs, 6);
    let rewards: Vec<f32> = obs
        .iter()
        .zip(&actions)
        .map(|(o, a)| reward(o, a))
        .collect();
    let n = obs.len();
    Rollout {
        observations: obs,
        actions,
        old_log_probs,
        advantages: estimators::grpo::grpo(&rewards, group, 1e-8).unwrap(),
        returns: vec![0.0; n],
        old_values: vec![0.0; n],
    }
}

/// The PPO loss of the whole batch under the current weights (no step).
fn full_loss<P: TrainablePolicy>(p: &P, b: &Batch<P::Encoded>, c: &PpoConfig) -> ppo::Loss {
    let rows: Vec<usize> = (0..b.len()).collect();
    ppo::loss_and_grad(p, b, &rows, c, &mut P::Workspace::default()).unwrap()
}

/// Runs `ppo::update` on both policies from the same weights, batch and
/// generator; returns the loss decreases (fused, candle).
fn same_update(
    name: &str,
    rollout: &Rollout,
    fused: &GaussianMlpPolicy,
    config: &PpoConfig,
) -> (f32, f32) {
    let mut fused = fused.clone();
    let mut candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
    let (bf, bc) = (rollout.batch(&fused), rollout.batch(&candle));
    let (before_f, before_c) = (
        full_loss(&fused, &bf, config),
        full_loss(&candle, &bc, config),
    );
    assert!(
        (before_f.total - before_c.total).abs() <= 1e-5 * (1.0 + before_f.total.abs()),
        "{name}: losses before {} vs {}",
        before_f.total,
        before_c.total
    );
    let (mut af, mut ac) = (
        fused.optimizer(config.learning_rate),
        candle.optimizer(config.learning_rate),
    );
    let sf = ppo::update(
        &mut fused,
        &mut af,
        &bf,
        config,
        config.learning_rate,
        &mut ChaCha8Rng::seed_from_u64(9),
    );
    let sc = ppo::update(
        &mut candle,
        &mut ac,
        &bc,
        config,
        config.learning_rate,
        &mut ChaCha8Rng::seed_from_u64(9),
    );
    assert!(!sf.rolled_back && !sc.rolled_back, "{name}");
    assert_eq!(sf.minibatch_steps, sc.minibatch_steps, "{name}");
    assert!(
        (sf.clip_fraction - sc.clip_fraction).abs() < 0.02,
        "{name}: {sf:?} vs {sc:?}"
    );
    let (after_f, after_c) = (
        full_loss(&fused, &bf, config),
        full_loss(&candle, &bc, config),
    );
    let (df, dc) = (
        before_f.total - after_f.total,
        before_c.total - after_c.total,
    );
    eprintln!(
        "{name}: loss {} → {} (fused, decrease {df}), {} → {} (candle, decrease {dc}); {} minibatch steps, clip fraction {} / {}",
        before_f.total,
        after_f.total,
        before_c.total,
        after_c.total,
        sf.minibatch_steps,
        sf.clip_fraction,
        sc.clip_fraction
    );
    assert!(
        df > 0.0 && dc > 0.0,
        "{name}: the loss decreased ({df}, {dc})"
    );
    // The surrogate alone decreases too, by the same amount.
    let (pf, pc) = (
        before_f.policy_loss - after_f.policy_loss,
        before_c.policy_loss - after_c.policy_loss,
    );
    eprintln!("{name}: surrogate decrease {pf} (fused), {pc} (candle)");
    assert!(
        pf > 0.0 && (pf - pc).abs() <= 1e-3 * pf,
        "{name}: surrogate decreases {pf} vs {pc}"
    );
    assert!(
        (df - dc).abs() <= 1e-3 * df.abs(),
        "{name}: decreases {df} vs {dc}"
    );
    for ((f, c), group) in fused
        .parameters()
        .iter()
        .zip(candle.parameters())
        .zip(["actor", "log_std", "critic"])
    {
        for (k, (f, c)) in f.iter().zip(&c).enumerate() {
            assert!(
                (f - c).abs() <= 1e-4 + 1e-3 * f.abs(),
                "{name}: {group}[{k}] fused {f}, candle {c}"
            );
        }
    }
    (df, dc)
}

#[test]
fn ppo_reaches_the_same_loss_decrease_on_fused_and_candle() {
    let obs = observations(128, 1);
    let mut fused = fused_policy(&obs);
    let rollout = ppo_rollout(&mut fused, obs);
    let config = PpoConfig {
        learning_rate: 1e-3,
        epochs: 4,
        minibatch_size: 32,
        entropy_coef: 0.01,
        value_clip: Some(0.2),
        ..PpoConfig::default()
    };
    same_update("PPO", &rollout, &fused, &config);
}

#[test]
fn grpo_reaches_the_same_loss_decrease_on_fused_and_candle() {
    let starts = observations(8, 2);
    let mut fused = fused_policy(&starts);
    let rollout = grpo_rollout(&mut fused, &starts);
    let config = PpoConfig {
        learning_rate: 1e-3,
        epochs: 4,
        minibatch_size: 16,
        value_coef: 0.0,
        normalize_advantages: false,
        ..PpoConfig::default()
    };
    same_update("GRPO", &rollout, &fused, &config);
}

#[test]
fn ppo_on_a_chunk_policy_clips_per_executed_action() {
    let h = 4;
    let mut policy = CandleGaussianPolicy::new(&spec(), config(), h, 13, &Device::Cpu).unwrap();
    let obs = observations(48, 3);
    let all: Vec<&Observation> = obs.iter().collect();
    policy.observe(&all);
    // Sampled chunks of h actions; row i executes those from index i mod h,
    // 1 + ⌊i / h⌋ mod (h − first) of them: every (index, count) that fits.
    let chunks: Vec<ActionChunk> = policy
        .act(&obs, Sampling::Stochastic { seed: 4 })
        .unwrap()
        .into_iter()
        .map(|out| out.sampled.unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c.len() == h));
    let decisions: Vec<Decision> = obs
        .iter()
        .zip(&chunks)
        .enumerate()
        .map(|(i, (o, chunk))| {
            let first = i % h;
            let count = 1 + (i / h) % (h - first);
            Decision {
                observation: o,
                first_index: first as u32,
                actions: chunk.actions[first..first + count].iter().collect(),
            }
        })
        .collect();
    let encoded = policy.encode(&decisions).unwrap();
    let rows = encoded.len();
    let mut action_starts = vec![0];
    for i in 0..rows {
        action_starts.push(action_starts[i] + encoded.actions_in(i));
    }
    let n = action_starts[rows];
    assert!(
        n > rows + rows / 2,
        "chunk decisions: {n} actions in {rows} rows"
    );
    let wants = Wants {
        log_probs: true,
        ..Wants::default()
    };
    let row_ids: Vec<usize> = (0..rows).collect();
    let now = policy
        .forward(&encoded, &row_ids, wants, &mut Default::default())
        .unwrap()
        .log_probs;
    // Mean reward over the executed actions; advantages about it.
    let rewards: Vec<f32> = decisions
        .iter()
        .map(|d| {
            d.actions
                .iter()
                .map(|a| reward(d.observation, a))
                .sum::<f32>()
                / d.actions.len() as f32
        })
        .collect();
    let mean = rewards.iter().sum::<f32>() / rows as f32;
    let advantages: Vec<f32> = rewards.iter().map(|r| r - mean).collect();
    let values = policy.state_values(&all).unwrap();
    let mut batch = Batch {
        decisions: encoded,
        old_log_probs: now.clone(),
        action_starts,
        advantages: advantages.clone(),
        loss_weights: Vec::new(),
        returns: rewards,
        old_values: values,
    };
    batch.check().unwrap();

    // Every third action's old log-probability is 0.5 higher: ρ = e^{−0.5},
    // outside [0.8, 1.2]; the rest have ρ = 1. The clip fraction counts
    // actions, and the surrogate averages over actions.
    let config = PpoConfig {
        normalize_advantages: false,
        ..PpoConfig::default()
    };
    let offset = |k: usize| if k.is_multiple_of(3) { 0.5f32 } else { 0.0 };
    let mut shifted = batch.clone();
    shifted.old_log_probs = now.iter().enumerate().map(|(k, l)| l + offset(k)).collect();
    let loss = full_loss(&policy, &shifted, &config);
    let clipped = (0..n).filter(|k| k.is_multiple_of(3)).count();
    assert!(
        (loss.clip_fraction - clipped as f32 / n as f32).abs() < 1e-6,
        "{loss:?}"
    );
    let mut expected = 0.0;
    for (i, a) in advantages.iter().enumerate() {
        for k in shifted.action_starts[i]..shifted.action_starts[i + 1] {
            let ratio = (-offset(k)).exp();
            expected += (-a * ratio).max(-a * ratio.clamp(0.8, 1.2));
        }
    }
    expected /= n as f32;
    assert!(
        (loss.policy_loss - expected).abs() < 1e-5,
        "{} vs {expected}",
        loss.policy_loss
    );

    // An update from the behaviour log-probabilities lowers the loss.
    batch.old_log_probs = now;
    let config = PpoConfig {
        learning_rate: 1e-3,
        epochs: 4,
        minibatch_size: 12,
        ..PpoConfig::default()
    };
    let before = full_loss(&policy, &batch, &config);
    assert_eq!(before.clip_fraction, 0.0);
    let mut adam = policy.optimizer(config.learning_rate);
    let stats = ppo::update(
        &mut policy,
        &mut adam,
        &batch,
        &config,
        config.learning_rate,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert!(!stats.rolled_back);
    assert_eq!(stats.minibatch_steps, 16);
    assert!(
        stats.clip_fraction > 0.0 && stats.clip_fraction < 1.0,
        "{stats:?}"
    );
    let after = full_loss(&policy, &batch, &config);
    eprintln!(
        "chunk PPO (horizon {h}, {rows} decisions, {n} actions): loss {} → {}, clip fraction {}",
        before.total, after.total, stats.clip_fraction
    );
    assert!(
        after.total < before.total,
        "{} → {}",
        before.total,
        after.total
    );
    assert!(policy.is_finite());
}
