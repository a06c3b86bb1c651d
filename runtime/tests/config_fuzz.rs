//! Property tests of the three config files a user writes: a valid
//! `--config` (TrainConfig), `--env-config` (EnvConfig) and `--envelope`
//! (EnvelopeConfig) TOML has one to three of its values replaced at random
//! (NaN, ±inf, 0, −1, ±1e30, the largest and smallest integers, a string, a
//! boolean, an array, a table), a key deleted or an unknown key added. Each
//! case is parsed, validated and, when accepted, taken one bounded step
//! (the policy built and one PPO epoch run; the simulation built, reset and
//! stepped once; the envelope built and one command checked). Any `Ok` or
//! `Err` passes; a panic fails, and so does a case that runs longer than
//! `LIMIT` (it runs on a thread of its own under a watchdog).
//!
//! `PROPTEST_CASES` sets the case count per config kind (32 by default).

use cerebellum_core::{Action, ResetRequest, Robot, RobotSpec};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_runtime::envelope::{
    ArmKinematics, EnvelopeConfig, Measured, SafetyEnvelope, WorkspaceBox,
};
use cerebellum_runtime::learn::ppo::{self, Batch, PpoConfig};
use cerebellum_runtime::learn::{TrainConfig, config::from_table};
use cerebellum_sim::camera::CameraConfig;
use cerebellum_sim::{
    ArmModel, ArmOptions, EnvConfig, PendulumEnv, Randomization, SimEnv, TaskKind,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use rand::SeedableRng;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

/// The longest one case may take: a parse, a validation and one step take
/// milliseconds; only a hang comes near it.
const LIMIT: Duration = Duration::from_secs(10);

fn so101() -> Arc<ArmModel> {
    static MODEL: OnceLock<Arc<ArmModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
        })
        .clone()
}

fn spec(task: TaskKind) -> RobotSpec {
    match task {
        TaskKind::Pendulum => PendulumEnv::new().spec().clone(),
        _ => {
            let config = EnvConfig {
                task,
                ..EnvConfig::default()
            };
            SimEnv::new(config, Some(so101())).unwrap().spec().clone()
        }
    }
}

// --- Mutations ------------------------------------------------------------

#[derive(Clone, Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    Replace(usize),
    Delete,
    UnknownKey,
}

/// What a value may be replaced with: the values that broke things
/// before (non-finite, zero, negative, absurd, huge integers) and wrong types.
fn replacement(k: usize) -> toml::Value {
    use toml::Value;
    match k {
        0 => Value::Float(f64::NAN),
        1 => Value::Float(f64::INFINITY),
        2 => Value::Float(f64::NEG_INFINITY),
        3 => Value::Integer(0),
        4 => Value::Float(0.0),
        5 => Value::Integer(-1),
        6 => Value::Float(-1.0),
        7 => Value::Float(1e30),
        8 => Value::Float(-1e30),
        9 => Value::Integer(i64::MAX),
        10 => Value::Integer(i64::MIN),
        11 => Value::Integer(u32::MAX as i64),
        12 => Value::Float(0.5),
        13 => Value::Integer(1),
        14 => Value::Integer(100),
        15 => Value::Float(1e-30),
        16 => Value::String("a/b *".into()),
        17 => Value::String(String::new()),
        18 => Value::Boolean(true),
        19 => Value::Array(Vec::new()),
        20 => Value::Array(vec![Value::Float(f64::NAN); 3]),
        21 => Value::Array(vec![Value::Integer(i64::MAX); 2]),
        _ => {
            let mut t = toml::Table::new();
            t.insert("kind".into(), Value::String("delta".into()));
            Value::Table(t)
        }
    }
}

const REPLACEMENTS: usize = 23;

fn mutation() -> impl Strategy<Value = (Index, Mutation)> {
    let what = prop_oneof![
        8 => (0..REPLACEMENTS).prop_map(Mutation::Replace),
        1 => Just(Mutation::Delete),
        1 => Just(Mutation::UnknownKey),
    ];
    (any::<Index>(), what)
}

/// Every value's path, tables and arrays included (replacing one replaces
/// all below it).
fn paths(value: &toml::Value, prefix: &mut Vec<Segment>, out: &mut Vec<Vec<Segment>>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                prefix.push(Segment::Key(k.clone()));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                prefix.push(Segment::Index(i));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn child<'a>(value: &'a mut toml::Value, segment: &Segment) -> Option<&'a mut toml::Value> {
    match (value, segment) {
        (toml::Value::Table(t), Segment::Key(k)) => t.get_mut(k),
        (toml::Value::Array(a), Segment::Index(i)) => a.get_mut(*i),
        _ => None,
    }
}

fn apply(root: &mut toml::Value, (index, mutation): &(Index, Mutation)) {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let path = index.get(&all).clone();
    let (last, parents) = path.split_last().expect("paths are not empty");
    let mut parent = &mut *root;
    for segment in parents {
        parent = match child(parent, segment) {
            Some(p) => p,
            None => return,
        };
    }
    match mutation {
        Mutation::Replace(k) => {
            if let Some(v) = child(parent, last) {
                *v = replacement(*k);
            }
        }
        Mutation::Delete => match (parent, last) {
            (toml::Value::Table(t), Segment::Key(k)) => {
                t.remove(k);
            }
            (toml::Value::Array(a), Segment::Index(i)) => {
                a.remove(*i);
            }
            _ => {}
        },
        Mutation::UnknownKey => {
            let target = match child(parent, last) {
                Some(toml::Value::Table(t)) => t,
                _ => match parent {
                    toml::Value::Table(t) => t,
                    _ => return,
                },
            };
            target.insert("no_such_key".into(), toml::Value::Integer(1));
        }
    }
}

/// `base` with `mutations` applied, as TOML text (`None` when TOML cannot
/// write the result, e.g. a table after a plain value).
fn mutated(base: &str, mutations: &[(Index, Mutation)]) -> Option<String> {
    let mut root = toml::Value::Table(base.parse().unwrap());
    for m in mutations {
        apply(&mut root, m);
    }
    match root {
        toml::Value::Table(t) => toml::to_string(&t).ok(),
        _ => None,
    }
}

// --- The watchdog ---------------------------------------------------------

/// Runs `case` on a thread of its own: a panic or a run past `LIMIT`
/// fails, whatever `Ok` or `Err` it returns passes.
fn watchdog<F>(what: &str, text: &str, case: F) -> Result<(), TestCaseError>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("{what} case"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(case));
            let _ = sender.send(outcome.map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned())
            }));
        })
        .expect("a thread");
    match receiver.recv_timeout(LIMIT) {
        Ok(Ok(_accepted_or_refused)) => Ok(()),
        Ok(Err(panic)) => Err(TestCaseError::fail(format!(
            "{what} panicked ({panic}) on:\n{text}"
        ))),
        // The thread is left running: it cannot be stopped from outside.
        Err(_) => Err(TestCaseError::fail(format!(
            "{what} took longer than {LIMIT:?} on:\n{text}"
        ))),
    }
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

// --- The three kinds ------------------------------------------------------

fn train_base(task: TaskKind) -> String {
    let mut config = TrainConfig::for_task(task);
    config.ppo.value_clip = Some(0.2);
    config.ppo.target_kl = Some(0.02);
    // The vision-language policy's table too, so its keys are mutated.
    config.vla = Some(Default::default());
    // And the VLA fine-tune's.
    config.finetune = Some(Default::default());
    // And clip-higher, which is left out of the file when unset.
    config.ppo.clip_high = Some(0.28);
    config.to_toml()
}

/// Parse and validate; when accepted, build the policy and run one epoch
/// of PPO on a few rows with the config's settings.
fn train_case(text: &str) -> Result<(), String> {
    let config = TrainConfig::from_toml(None, Some(text))?;
    config.validate().expect("from_toml validated it");
    config.check_with_env(&EnvConfig::default(), false)?;
    // An accepted [finetune] sizes a run without panicking: finite, and
    // refused or not by its budget.
    let finetune = config.finetune_settings();
    let memory = cerebellum_runtime::learn::finetune::estimate(
        &config.vla_settings().model,
        finetune.train,
        config.envs.saturating_mul(config.rollout_steps),
        finetune.execute,
        config.ppo.minibatch_size,
        100.0,
    );
    assert!(memory.total_mib.is_finite(), "{memory:?}");
    let _ = cerebellum_runtime::learn::finetune::check_fits(&memory, finetune.memory_budget_mib);
    estimators_case(&config);
    let spec = spec(config.task_kind());
    let mut policy = GaussianMlpPolicy::new(&spec, config.policy.clone(), config.seed)
        .map_err(|e| e.to_string())?;
    let rows = 8;
    let (obs, act) = (policy.obs_size(), policy.act_size());
    let wave = |i: usize| ((i as f32) * 0.37).sin();
    let decisions = cerebellum_policies::fused_training::MlpDecisions::from_normalized(
        &policy,
        (0..rows * obs).map(wave).collect(),
        (0..rows * act).map(|i| 0.5 * wave(i + 7)).collect(),
    )
    .map_err(|e| e.to_string())?;
    let batch = Batch {
        decisions,
        old_log_probs: vec![-1.0; rows],
        action_starts: (0..=rows).collect(),
        advantages: (0..rows).map(|i| wave(i + 3)).collect(),
        loss_weights: Vec::new(),
        returns: (0..rows).map(|i| wave(i + 5)).collect(),
        old_values: vec![0.0; rows],
    };
    let one_epoch = PpoConfig {
        epochs: 1,
        ..config.ppo.clone()
    };
    let mut adam =
        cerebellum_policies::TrainablePolicy::optimizer(&policy, one_epoch.learning_rate);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    ppo::update(
        &mut policy,
        &mut adam,
        &batch,
        &one_epoch,
        one_epoch.learning_rate,
        &mut rng,
    );
    Ok(())
}

/// Every critic-free learner with the accepted `group` and `[estimator]`:
/// `envs` rounded and checked as `train` does, then advantages over three
/// starts (one without spread, one with spread, one with a non-finite
/// return), which are finite whenever they are given.
fn estimators_case(config: &TrainConfig) {
    use cerebellum_runtime::learn::Algo;
    use cerebellum_runtime::learn::group_advantages::{
        EpisodeOutcome, SpoInputs, episode_advantages,
    };
    let components = config
        .reward_weights
        .values()
        .filter(|w| **w != 0.0)
        .count();
    for algo in Algo::ALL.into_iter().filter(|a| !a.has_critic()) {
        let mut config = config.clone();
        config.algo = algo;
        config.round_envs_to_starts();
        let _ = config.check_for_algo();
        let per_start = algo.rollouts_per_start(config.group);
        let outcomes: Vec<EpisodeOutcome> = (0..3 * per_start)
            .map(|i| {
                let r = match i / per_start {
                    0 => 1.0,
                    1 => 50.0 * ((i as f32) * 0.37).sin(),
                    _ if i % per_start == 0 => f32::NAN,
                    _ => 2.0,
                };
                EpisodeOutcome {
                    weighted_return: r,
                    components: vec![r; components],
                    flags: Default::default(),
                    length: 1 + i % 100,
                }
            })
            .collect();
        let baselines = vec![0.5; outcomes.len()];
        let spo = SpoInputs {
            baselines: &baselines,
            entropy_surrogate: 1.0,
        };
        if let Ok(estimate) = episode_advantages(&config, &outcomes, Some(spo)) {
            assert!(
                estimate
                    .advantages
                    .iter()
                    .chain(&estimate.loss_weights)
                    .all(|v| v.is_finite()),
                "{algo}: {estimate:?}"
            );
            assert!(
                estimate.non_finite >= 1,
                "{algo}: the NaN start is discarded"
            );
        }
    }
}

fn env_base(task: TaskKind) -> String {
    let config = EnvConfig {
        task,
        randomization: Randomization {
            link_mass: 0.1,
            motor_gain: 0.2,
            cube_size: 0.1,
            cube_mass: 0.2,
            camera_translation: 0.01,
            camera_rotation: 0.02,
            joint_position_noise: 0.01,
            joint_velocity_noise: 0.05,
            max_action_latency_ticks: 1,
            ..Randomization::default()
        },
        cameras: vec![CameraConfig {
            width: 16,
            height: 12,
            ..CameraConfig::default()
        }],
        ..EnvConfig::default()
    };
    toml::to_string(&config).unwrap()
}

/// Parse, then build the simulation (which validates), reset it and step
/// it once with the middle of its action limits.
fn env_case(text: &str) -> Result<(), String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let config: EnvConfig = from_table(table)?;
    let mut env = SimEnv::new(config, Some(so101()))?;
    env.reset(&ResetRequest { seed: 7 })
        .map_err(|e| e.to_string())?;
    let (lower, upper) = env.spec().action.limits();
    let middle = lower
        .iter()
        .zip(&upper)
        .map(|(l, h)| 0.5 * (l + h))
        .collect();
    env.apply(&Action::new(middle)).map_err(|e| e.to_string())?;
    env.observe().map_err(|e| e.to_string())?;
    Ok(())
}

fn envelope_base() -> String {
    let model = so101();
    let joints = model.joints.len();
    let config = EnvelopeConfig {
        max_joint_velocity: vec![6.0; joints],
        max_step_per_tick: vec![0.1; joints],
        workspace: Some(WorkspaceBox {
            min: [-0.6, -0.6, -0.1],
            max: [0.6, 0.6, 0.8],
        }),
        stale_hold_ticks: 2,
        stale_safe_pose_ticks: 30,
        safe_pose: Some(model.home.clone()),
    };
    toml::to_string(&config).unwrap()
}

/// Parse, build the envelope for the SO-101 reach spec and check one
/// proposed command from home.
fn envelope_case(text: &str) -> Result<(), String> {
    let config: EnvelopeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let model = so101();
    let spec = spec(TaskKind::Reach);
    let mut envelope =
        SafetyEnvelope::new(&spec, config, Some(Arc::new(ArmKinematics(model.clone()))))
            .map_err(|e| e.to_string())?;
    let proposed: Vec<f32> = model.home.iter().map(|q| q + 0.05).collect();
    envelope.check(
        Some(&Action::new(proposed)),
        Measured {
            joint_positions: Some(&model.home),
            observation_age_ticks: 0,
        },
    );
    Ok(())
}

fn tasks() -> impl Strategy<Value = TaskKind> {
    prop_oneof![
        Just(TaskKind::Reach),
        Just(TaskKind::Lift),
        Just(TaskKind::Pendulum),
        Just(TaskKind::ReachColor),
        Just(TaskKind::LiftColor)
    ]
}

#[test]
fn the_bases_are_valid_and_step() {
    for task in TaskKind::ALL {
        train_case(&train_base(task)).unwrap();
        env_case(&env_base(task)).unwrap();
    }
    envelope_case(&envelope_base()).unwrap();
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn a_mutated_training_config_is_refused_or_steps(
        task in tasks(),
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        if let Some(text) = mutated(&train_base(task), &mutations) {
            let case = text.clone();
            watchdog("training config", &text, move || train_case(&case))?;
        }
    }

    #[test]
    fn a_mutated_env_config_is_refused_or_steps(
        task in tasks(),
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        if let Some(text) = mutated(&env_base(task), &mutations) {
            let case = text.clone();
            watchdog("env config", &text, move || env_case(&case))?;
        }
    }

    #[test]
    fn a_mutated_envelope_is_refused_or_checks(
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        if let Some(text) = mutated(&envelope_base(), &mutations) {
            let case = text.clone();
            watchdog("envelope", &text, move || envelope_case(&case))?;
        }
    }
}
