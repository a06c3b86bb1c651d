//! Every value a user gives in `--config` (TrainConfig), `--env-config`
//! (EnvConfig) and `--envelope` (EnvelopeConfig) passes one validation with
//! bounds, and a refusal names the key's TOML path, the value and the
//! accepted range (issue 17: no input crashes or hangs the binary). One test
//! per class of bad value, then the binary's own refusals.

mod common;

use common::cerebellum;

use cerebellum_core::bounds::Limits;
use cerebellum_runtime::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use cerebellum_runtime::learn::TrainConfig;
use cerebellum_runtime::learn::config::RobotSource;
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, SimEnv, TaskKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

fn so101() -> Arc<ArmModel> {
    static MODEL: OnceLock<Arc<ArmModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
        })
        .clone()
}

/// A fresh directory of its own (tests run in parallel).
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-config-validation-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The training config `text` is refused, naming `key` and `needle`.
fn train_refused(text: &str, key: &str, needle: &str) {
    let err = TrainConfig::from_toml(None, Some(text))
        .expect_err(&format!("accepted training config:\n{text}"));
    assert!(
        err.contains(&format!("`{key}`")) && err.contains(needle),
        "refusal of\n{text}\ndoes not name `{key}` and `{needle}`: {err}"
    );
}

/// The environment config `text`, read as `--env-config` reads it, is
/// refused naming the file, `key` and `needle`; and `SimEnv::new` refuses
/// it too (no caller can skip the check).
fn env_refused(text: &str, key: &str, needle: &str) {
    let dir = temp_dir("env");
    let path = dir.join("env.toml");
    std::fs::write(&path, text).unwrap();
    let source = RobotSource {
        env_config: Some(path.clone()),
        ..RobotSource::default()
    };
    let err = source
        .load(TaskKind::Lift)
        .err()
        .unwrap_or_else(|| panic!("accepted env config:\n{text}"))
        .to_string();
    assert!(
        err.contains(&format!("`{key}`"))
            && err.contains(needle)
            && err.contains(&path.display().to_string()),
        "refusal of\n{text}\ndoes not name the file, `{key}` and `{needle}`: {err}"
    );
    if let Ok(config) = toml::from_str::<EnvConfig>(text) {
        let config = EnvConfig {
            task: TaskKind::Lift,
            ..config
        };
        let err = SimEnv::new(config, Some(so101()))
            .err()
            .expect("SimEnv::new validates");
        assert!(err.contains(key), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The envelope file `text` is refused for the SO-101, naming `field`.
fn envelope_refused(text: &str, field: &str, needle: &str) {
    let config: EnvelopeConfig = toml::from_str(text).unwrap();
    let env = SimEnv::new(EnvConfig::default(), Some(so101())).unwrap();
    let spec = cerebellum_core::Robot::spec(&env).clone();
    let err = SafetyEnvelope::new(&spec, config, Some(Arc::new(ArmKinematics(so101()))))
        .err()
        .unwrap_or_else(|| panic!("accepted envelope:\n{text}"))
        .to_string();
    assert!(
        err.contains(&format!("envelope.{field}")) && err.contains(needle),
        "refusal of\n{text}\ndoes not name envelope.{field} and `{needle}`: {err}"
    );
}

#[test]
fn sizes_that_would_abort_on_allocation_or_run_forever_have_a_maximum() {
    let cases = [
        ("envs = 1000000", "envs", "at most 1024"),
        ("envs = 0", "envs", "at least 1"),
        ("threads = 100000", "threads", "at most 256"),
        (
            "rollout_steps = 100000000",
            "rollout_steps",
            "at most 65536",
        ),
        (
            "envs = 1024\nrollout_steps = 4096",
            "envs × rollout_steps",
            "at most 1048576",
        ),
        (
            "total_steps = 9223372036854775807",
            "total_steps",
            "at most 10000000000",
        ),
        ("eval_episodes = 1000000000", "eval_episodes", "at most"),
        ("algo = \"grpo\"\ngroup = 100000", "group", "at most 1024"),
        (
            "[policy]\nhidden = [1000000000]",
            "policy.hidden[0]",
            "at most 2048",
        ),
        ("[policy]\nhidden = []", "policy.hidden", "at least 1"),
        (
            "[policy]\nhidden = [8, 8, 8, 8, 8, 8, 8, 8, 8]",
            "policy.hidden",
            "at most 8 layers",
        ),
        ("[ppo]\nepochs = 1000000000", "ppo.epochs", "at most"),
        (
            "[ppo]\nminibatch_size = 9223372036854775807",
            "ppo.minibatch_size",
            "at most",
        ),
        (
            "[bc]\nexpert_episodes = 1000000000",
            "bc.expert_episodes",
            "at most",
        ),
        ("[bc]\nepochs = 1000000000", "bc.epochs", "at most"),
        ("[bc]\nra_bc_horizon = 0", "bc.ra_bc_horizon", "at least 1"),
        (
            "[online]\nchannel_capacity = 9223372036854775807",
            "online.channel_capacity",
            "at most",
        ),
        (
            "[online]\nbatch_transitions = 1000000000000",
            "online.batch_transitions",
            "at most",
        ),
        (
            "[reward]\nsuccess_frames = 4000000000",
            "reward.success_frames",
            "at most",
        ),
    ];
    for (text, key, needle) in cases {
        train_refused(text, key, needle);
    }
    let env_cases = [
        ("[physics]\nsubsteps = 4000000000", "physics.substeps"),
        (
            "[physics]\nsolver_iterations = 1000000000",
            "physics.solver_iterations",
        ),
        (
            "[randomization]\nmax_action_latency_ticks = 4294967295",
            "randomization.max_action_latency_ticks",
        ),
        ("[camera]\nwidth = 100000", "camera.width"),
        ("[camera]\nheight = 4096", "camera.height"),
    ];
    for (text, key) in env_cases {
        env_refused(text, key, "at most");
    }
}

#[test]
fn what_a_rollout_holds_is_bounded_with_the_environment() {
    let lift = |text: &str| {
        let mut config = TrainConfig::from_toml(Some(TaskKind::Lift), Some(text)).unwrap();
        config.task = "lift".into();
        config
    };
    // GRPO holds every copy's whole episode: 1024 × 5 s at 1 kHz.
    let grpo = lift("algo = \"grpo\"\nenvs = 1024\ngroup = 8\n");
    let fast: EnvConfig = toml::from_str("[physics]\ndt = 0.001\nsubsteps = 1\n").unwrap();
    let err = grpo.check_with_env(&fast, false).unwrap_err();
    assert!(
        err.contains("envs × the task's horizon") && err.contains("at most 1048576"),
        "{err}"
    );
    grpo.check_with_env(&EnvConfig::default(), false).unwrap();
    // Camera images: 1024 transitions of 1024² RGB is 3 GiB, 2048 is 6.
    let camera: EnvConfig = toml::from_str("[camera]\nwidth = 1024\nheight = 1024\n").unwrap();
    lift("envs = 32\nrollout_steps = 32\n")
        .check_with_env(&camera, false)
        .unwrap();
    let err = lift("envs = 64\nrollout_steps = 32\n")
        .check_with_env(&camera, false)
        .unwrap_err();
    assert!(
        err.contains("`envs × rollout_steps` = 2048") && err.contains("6.0 GiB"),
        "{err}"
    );
    let err = lift("[online]\nbatch_transitions = 2048\n")
        .check_with_env(&camera, true)
        .unwrap_err();
    assert!(err.contains("`online.batch_transitions` = 2048"), "{err}");
    let err = lift("").check_with_env(&camera, true).unwrap_err();
    assert!(err.contains("`online.channel_capacity` = 8192"), "{err}");
    lift("[online]\nbatch_transitions = 512\nchannel_capacity = 1024\n")
        .check_with_env(&camera, true)
        .unwrap();
    // The loading path applies it.
    let dir = temp_dir("load-env");
    let path = dir.join("env.toml");
    std::fs::write(&path, "[camera]\nwidth = 1024\nheight = 1024\n").unwrap();
    let mut config = lift("envs = 64\nrollout_steps = 32\n");
    config.robot.env_config = Some(path);
    let Err(err) = config.load_env(false) else {
        panic!("accepted 6 GiB of images")
    };
    assert!(err.to_string().contains("GiB"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn non_finite_and_meaningless_physics_never_reaches_rapier() {
    let cases = [
        (
            "[physics]\ngravity = [0.0, 0.0, nan]",
            "physics.gravity[2]",
            "NaN",
        ),
        (
            "[physics]\ngravity = [inf, 0.0, -9.81]",
            "physics.gravity[0]",
            "inf",
        ),
        (
            "[physics]\ngravity = [0.0, 0.0, -1e30]",
            "physics.gravity[2]",
            "at least -100",
        ),
        ("[physics]\ndt = nan", "physics.dt", "at most 0.05 s"),
        ("[physics]\ndt = inf", "physics.dt", "at most 0.05 s"),
        ("[physics]\ndt = 2.0", "physics.dt", "at most 0.05 s"),
        ("[physics]\ndt = 0.0", "physics.dt", "at least 0.0001"),
        ("[physics]\ndt = -0.005", "physics.dt", "at least 0.0001"),
        ("[physics]\nsubsteps = 0", "physics.substeps", "at least 1"),
        (
            "[physics]\nsolver_iterations = 0",
            "physics.solver_iterations",
            "at least 1",
        ),
        (
            "[physics]\ndt = 0.0001\nsubsteps = 1",
            "physics.dt × physics.substeps",
            "control period",
        ),
        (
            "[physics]\ndt = 0.05\nsubsteps = 100",
            "physics.dt × physics.substeps",
            "at most 1.0 s",
        ),
        ("[cube]\nmass = -1.0", "cube.mass", "at least"),
        ("[cube]\nmass = nan", "cube.mass", "NaN"),
        ("[cube]\nmass = 0.0", "cube.mass", "at least"),
        ("[cube]\nsize = 0.0", "cube.size", "at least 0.005"),
        ("[cube]\nsize = -0.03", "cube.size", "at least 0.005"),
        ("[cube]\nsize = 1e30", "cube.size", "at most 0.5 m"),
        ("[cube]\nfriction = inf", "cube.friction", "at most"),
        (
            "[camera]\neye = [nan, 0.0, 0.0]",
            "camera.eye",
            "eye must be finite",
        ),
        (
            "[camera]\nfov_y_degrees = inf",
            "camera.fov_y_degrees",
            "less than 179",
        ),
    ];
    for (text, key, needle) in cases {
        env_refused(text, key, needle);
    }
}

#[test]
fn every_clip_fed_by_a_config_is_a_valid_clamp_range() {
    // `f32::clamp(-eps, eps)` panics on eps < 0 or NaN; `clamp(1 − ε, 1 + ε)`
    // likewise: both are refused before any update runs.
    let cases = [
        ("[ppo]\nvalue_clip = -1.0", "ppo.value_clip"),
        ("[ppo]\nvalue_clip = nan", "ppo.value_clip"),
        ("[ppo]\nvalue_clip = 0.0", "ppo.value_clip"),
        ("[ppo]\nclip = nan", "ppo.clip"),
        ("[ppo]\nclip = -0.2", "ppo.clip"),
        ("[ppo]\nclip = 3.0", "ppo.clip"),
        ("[ppo]\ntarget_kl = nan", "ppo.target_kl"),
    ];
    for (text, key) in cases {
        train_refused(text, key, "must be");
    }
    // The edges that are accepted run an update without a panic.
    let config =
        TrainConfig::from_toml(None, Some("[ppo]\nvalue_clip = 1e-6\nclip = 0.999\n")).unwrap();
    let env = SimEnv::new(EnvConfig::default(), Some(so101())).unwrap();
    let spec = cerebellum_core::Robot::spec(&env).clone();
    let mut policy =
        cerebellum_policies::GaussianMlpPolicy::new(&spec, config.policy.clone(), 0).unwrap();
    let batch = tiny_batch(&policy, 8);
    let mut adam =
        cerebellum_policies::TrainablePolicy::optimizer(&policy, config.ppo.learning_rate);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let stats = cerebellum_runtime::learn::ppo::update(
        &mut policy,
        &mut adam,
        &batch,
        &config.ppo,
        config.ppo.learning_rate,
        &mut rng,
    );
    assert!(!stats.rolled_back);
}

/// `n` rows of plausible experience for `policy`.
pub fn tiny_batch(
    policy: &cerebellum_policies::GaussianMlpPolicy,
    n: usize,
) -> cerebellum_runtime::learn::ppo::Batch<cerebellum_policies::fused_training::MlpDecisions> {
    let (obs, act) = (policy.obs_size(), policy.act_size());
    let wave = |i: usize| ((i as f32) * 0.37).sin();
    let decisions = cerebellum_policies::fused_training::MlpDecisions::from_normalized(
        policy,
        (0..n * obs).map(wave).collect(),
        (0..n * act).map(|i| 0.5 * wave(i + 7)).collect(),
    )
    .unwrap();
    cerebellum_runtime::learn::ppo::Batch {
        decisions,
        old_log_probs: vec![-1.0; n],
        action_starts: (0..=n).collect(),
        advantages: (0..n).map(|i| wave(i + 3)).collect(),
        loss_weights: Vec::new(),
        returns: (0..n).map(|i| wave(i + 5)).collect(),
        old_values: vec![0.0; n],
    }
}

#[test]
fn finite_but_meaningless_values_are_refused_by_name() {
    // A typo in a reward weight would train on a reward of zero.
    let err = TrainConfig::from_toml(None, Some("[reward_weights]\ntaks = 1.0")).unwrap_err();
    assert!(
        err.contains("`reward_weights.taks`") && err.contains("known: task"),
        "{err}"
    );
    train_refused(
        "[reward_weights]\ntask = 0.0",
        "reward_weights",
        "non-zero weight",
    );
    train_refused(
        "[reward_weights]\nprogress = 1.0",
        "reward_weights.progress",
        "progress model",
    );
    train_refused(
        "[reward_weights]\nsuccess_model = 1.0",
        "reward_weights.success_model",
        "success classifier",
    );
    train_refused(
        "[reward_weights]\ntask = 1e30",
        "reward_weights.task",
        "at most 1000",
    );
    let cases = [
        // A step size above 1 makes every update roll back while the run
        // exits 0.
        (
            "[ppo]\nlearning_rate = 10.0",
            "ppo.learning_rate",
            "at most 1.0",
        ),
        (
            "[ppo]\nlearning_rate = 0.0",
            "ppo.learning_rate",
            "greater than 0.0",
        ),
        (
            "[bc]\nlearning_rate = 1e30",
            "bc.learning_rate",
            "at most 1.0",
        ),
        (
            "[online]\nlearning_rate = 5.0",
            "online.learning_rate",
            "at most 1.0",
        ),
        ("[ppo]\nvalue_coef = nan", "ppo.value_coef", "NaN"),
        ("[ppo]\nentropy_coef = nan", "ppo.entropy_coef", "NaN"),
        ("[ppo]\nentropy_coef = -1.0", "ppo.entropy_coef", "at least"),
        ("[ppo]\nmax_grad_norm = inf", "ppo.max_grad_norm", "at most"),
        ("gamma = nan", "gamma", "NaN"),
        ("gae_lambda = 2.0", "gae_lambda", "at most 1.0"),
        (
            "[policy]\ninit_log_std = 1e30",
            "policy.init_log_std",
            "at most 2.0",
        ),
        (
            "[policy.action_mode]\nkind = \"delta\"\nmax_step = 1e30",
            "policy.action_mode.max_step",
            "at most 1.0 rad",
        ),
        (
            "[bc]\nexpert_noise = 1e30",
            "bc.expert_noise",
            "at most 1.0 rad",
        ),
        ("[bc]\nrl_decay = 0.0", "bc.rl_decay", "greater than 0.0"),
        (
            "[reward]\nsuccess_threshold = nan",
            "reward.success_threshold",
            "NaN",
        ),
        (
            "[reward.aggregate.mean_minus_std]\nlambda = -1.0",
            "reward.aggregate.mean_minus_std.lambda",
            "at least 0.0",
        ),
    ];
    for (text, key, needle) in cases {
        train_refused(text, key, needle);
    }
    let env_cases = [
        (
            "[randomization]\njoint_position_noise = 1e30",
            "randomization.joint_position_noise",
            "at most 1.0 rad",
        ),
        (
            "[randomization]\njoint_velocity_noise = -1.0",
            "randomization.joint_velocity_noise",
            "at least 0.0",
        ),
        (
            "[randomization]\ncamera_translation = inf",
            "randomization.camera_translation",
            "at most 0.5 m",
        ),
        (
            "[randomization]\nlink_mass = 1.0",
            "randomization.link_mass",
            "less than 1.0",
        ),
        (
            "[randomization]\ncube_mass = -0.5",
            "randomization.cube_mass",
            "at least 0.0",
        ),
        (
            "[camera]\nname = \"wrist/left\"",
            "camera.name",
            "zenoh key chunk",
        ),
        ("[camera]\nname = \"\"", "camera.name", "zenoh key chunk"),
        (
            "[camera]\nname = \"front cam\"",
            "camera.name",
            "zenoh key chunk",
        ),
        (
            "[camera]\nname = \"cam*\"",
            "camera.name",
            "zenoh key chunk",
        ),
        ("[camera]\nwidth = 0", "camera.width", "at least 1"),
        ("robot_id = \"a#b\"", "robot_id", "zenoh key chunk"),
    ];
    for (text, key, needle) in env_cases {
        env_refused(text, key, needle);
    }
}

#[test]
fn wrong_types_and_unknown_keys_name_the_key() {
    train_refused_any("[ppo]\nepochs = \"ten\"", "ppo.epochs");
    train_refused_any("envs = -3", "envs");
    train_refused_any("envs = 1.5e9", "envs");
    train_refused_any("[policy]\nhidden = 64", "policy.hidden");
    train_refused_any("[ppo]\nlerning_rate = 0.001", "lerning_rate");
    env_refused_any("[physics]\ndt = \"fast\"", "physics.dt");
    env_refused_any("[physics]\nsubsteps = -4", "physics.substeps");
    env_refused_any("[cube]\nsize = true", "cube.size");
    env_refused_any("[physics]\ndtt = 0.01", "dtt");
}

fn train_refused_any(text: &str, key: &str) {
    let err = TrainConfig::from_toml(None, Some(text)).expect_err(text);
    assert!(
        err.contains(key),
        "refusal of {text:?} does not name {key}: {err}"
    );
}

fn env_refused_any(text: &str, key: &str) {
    let dir = temp_dir("env-any");
    let path = dir.join("env.toml");
    std::fs::write(&path, text).unwrap();
    let source = RobotSource {
        env_config: Some(path),
        ..RobotSource::default()
    };
    let Err(err) = source.load(TaskKind::Reach) else {
        panic!("accepted env config:\n{text}");
    };
    let err = err.to_string();
    assert!(
        err.contains(key),
        "refusal of {text:?} does not name {key}: {err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn envelope_files_are_bounded() {
    let six = |v: &str| [v; 6].join(", ");
    envelope_refused(
        &format!("max_joint_velocity = [{}]", six("1e30")),
        "max_joint_velocity[joint_target.shoulder_pan]",
        "at most 100.0 rad/s",
    );
    envelope_refused(
        &format!("max_step_per_tick = [{}]", six("-0.1")),
        "max_step_per_tick[joint_target.shoulder_pan]",
        "greater than 0.0",
    );
    envelope_refused(
        "[workspace]\nmin = [-1e30, -1.0, 0.0]\nmax = [1.0, 1.0, 1.0]",
        "workspace.x",
        "at least -10.0",
    );
    envelope_refused(
        "[workspace]\nmin = [-1.0, -1.0, 0.0]\nmax = [1.0, nan, 1.0]",
        "workspace.y",
        "non-empty interval",
    );
    envelope_refused(
        "stale_hold_ticks = 4000000000\nstale_safe_pose_ticks = 4000000000",
        "stale_hold_ticks",
        "at most 10000",
    );
    envelope_refused("stale_hold_ticks = 0", "stale_hold_ticks", "is 0");
    envelope_refused(
        "stale_safe_pose_ticks = 1000000",
        "stale_safe_pose_ticks",
        "at most 100000",
    );
}

#[test]
fn the_shipped_configs_and_every_default_pass() {
    for task in TaskKind::ALL {
        TrainConfig::for_task(task).validate().unwrap();
    }
    EnvConfig::default().validate().unwrap();
    EnvelopeConfig::default().validate().unwrap();
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    let rounds = std::fs::read_to_string(bench.join("reach-rounds.toml")).unwrap();
    TrainConfig::from_toml(None, Some(&rounds)).unwrap();
    let source = RobotSource {
        env_config: Some(bench.join("reach-unseen-dr.toml")),
        ..RobotSource::default()
    };
    source.load(TaskKind::Reach).unwrap();
    let camera = cerebellum_sim::CameraConfig::default();
    camera.validate().unwrap();
}

#[test]
fn bounds_print_the_key_the_value_and_the_range() {
    let dt = cerebellum_sim::world::PHYSICS_DT;
    assert_eq!(
        dt.check("physics.dt", 2.0).unwrap_err(),
        "config key `physics.dt` = 2.0: must be at least 0.0001 and at most 0.05 s"
    );
    let lr: Limits<f64> = cerebellum_runtime::learn::config::LEARNING_RATE;
    assert!(lr.contains(1.0) && !lr.contains(0.0) && !lr.contains(f64::NAN));
}

// --- The binary -----------------------------------------------------------

/// The command fails, prints no panic, and its last stdout line is the
/// `--json` error object, which names `key`.
fn cli_refuses(args: &[&str], key: &str) -> String {
    let (ok, stdout, stderr) = cerebellum(args);
    assert!(!ok, "{args:?} succeeded: {stdout}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{args:?}: last stdout line is not JSON ({e}): {stdout}"));
    assert_eq!(last["ok"], false, "{last}");
    let error = last["error"].as_str().expect("an error string").to_owned();
    assert!(
        error.contains(key),
        "{args:?}: error does not name {key}: {error}"
    );
    error
}

#[test]
fn train_refuses_bad_config_and_env_config_files_with_a_json_error() {
    let dir = temp_dir("cli");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cases = [
        ("[ppo]\nvalue_clip = -1.0\n", "ppo.value_clip"),
        ("[ppo]\nlearning_rate = 10.0\n", "ppo.learning_rate"),
        ("[reward_weights]\ntaks = 1.0\n", "reward_weights.taks"),
        ("[policy]\nhidden = [100000000000]\n", "policy.hidden[0]"),
        ("[ppo]\nepochs = \"ten\"\n", "ppo.epochs"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let config = write(&format!("bad{i}.toml"), text);
        let error = cli_refuses(&["train", "--config", &config, "--out", out, "--json"], key);
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
    let env = write("env.toml", "[physics]\ndt = 2.0\n");
    let error = cli_refuses(
        &["train", "--env-config", &env, "--out", out, "--json"],
        "physics.dt",
    );
    assert!(
        error.contains("env.toml") && error.contains("at most 0.05 s"),
        "{error}"
    );
    let env = write("gravity.toml", "[physics]\ngravity = [0.0, 0.0, nan]\n");
    cli_refuses(
        &["sim", "--task", "reach", "--env-config", &env, "--json"],
        "physics.gravity[2]",
    );
    let env = write("camera.toml", "[camera]\nname = \"a/b\"\n");
    cli_refuses(
        &["sim", "--task", "lift", "--env-config", &env, "--json"],
        "camera.name",
    );
    assert!(!Path::new(out).join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_flags_pass_the_same_validation() {
    let dir = temp_dir("flags");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--envs", "0"], "envs"),
        (&["--envs", "1000000"], "envs"),
        (&["--threads", "0"], "threads"),
        (&["--steps", "0"], "total_steps"),
        (&["--eval-episodes", "1000000000"], "eval_episodes"),
        (&["--algo", "mc-grpo", "--group", "1"], "group"),
        (&["--clip-high", "0"], "ppo.clip_high"),
        (
            &["--algo", "spo", "--dynamic-sampling"],
            "estimator.dynamic_sampling",
        ),
        (&["--algo", "grpo", "--group", "1000000"], "group"),
    ];
    for (flags, key) in cases {
        let mut args = vec!["train", "--task", "pendulum", "--out", out, "--json"];
        args.extend(flags);
        cli_refuses(&args, &format!("`{key}`"));
    }
    let _ = std::fs::remove_dir_all(dir);
}
