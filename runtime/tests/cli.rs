//! The `cerebellum` binary end to end: real physics, JSON on the last line.

mod common;

use common::{cerebellum, last_json};

use std::path::{Path, PathBuf};
use std::process::Command;

/// The generated 7-DoF arm with no robot config beside it, so its end
/// effector is ambiguous unless named.
const ARM7_WITHOUT_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sim/tests/fixtures/arms/test_arm7/urdf/test_arm7_no_config.urdf"
);

#[test]
fn sim_reach_expert_reports_success_rate_and_is_repeatable() {
    let args = [
        "sim",
        "--task",
        "reach",
        "--expert",
        "--episodes",
        "20",
        "--seed",
        "0",
        "--json",
    ];
    let (ok, stdout, stderr) = cerebellum(&args);
    assert!(ok, "{stderr}");
    let report = last_json(&stdout);
    let rate = report["success_rate"].as_f64().unwrap();
    assert!(rate >= 0.95, "success rate {rate}");
    assert_eq!(report["episode_returns"].as_array().unwrap().len(), 20);
    assert!(report["mean_return"].is_number());
    assert!(
        report.get("timings").is_none(),
        "timings only with --timings"
    );
    let (_, again, _) = cerebellum(&args);
    assert_eq!(stdout, again, "same seed, same output");
}

#[test]
fn sim_saves_a_camera_frame() {
    let path = std::env::temp_dir().join(format!("cerebellum-frame-{}.png", std::process::id()));
    let (ok, _, stderr) = cerebellum(&[
        "sim",
        "--task",
        "lift",
        "--episodes",
        "1",
        "--save-frame",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    std::fs::remove_file(path).ok();
}

#[test]
fn sim_writes_a_frame_strip_of_what_the_policy_sees() {
    let path = std::env::temp_dir().join(format!("cerebellum-strip-{}.png", std::process::id()));
    let (ok, _, stderr) = cerebellum(&[
        "sim",
        "--task",
        "reach-color",
        "--expert",
        "--episodes",
        "1",
        "--frame-strip",
        path.to_str().unwrap(),
        "--strip-scale",
        "1",
    ]);
    assert!(ok, "{stderr}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    // One row for the default 64×64 camera, frames side by side.
    assert_eq!(info.height, 64, "one camera row at scale 1");
    assert!(
        info.width >= 64 && info.width.is_multiple_of(64),
        "width {}",
        info.width
    );
    let first = &pixels[..3];
    assert!(
        pixels.chunks_exact(3).any(|p| p != first),
        "the strip shows a scene, not one colour"
    );
    // A pendulum has no camera: refused by name, not a panic.
    let (ok, _, stderr) = cerebellum(&[
        "sim",
        "--task",
        "pendulum",
        "--frame-strip",
        path.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--frame-strip"), "{stderr}");
    std::fs::remove_file(path).ok();
}

#[test]
fn sim_pendulum_runs_200_steps_per_episode() {
    let (ok, stdout, stderr) = cerebellum(&[
        "sim",
        "--task",
        "pendulum",
        "--expert",
        "--episodes",
        "2",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(last_json(&stdout)["steps"], 400);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (ok, _, stderr) = cerebellum(&["sim", "--task", "stack"]);
    assert!(!ok);
    assert!(
        stderr.contains("reach") && stderr.contains("pendulum"),
        "{stderr}"
    );

    let (ok, _, stderr) = cerebellum(&["sim", "--urdf", "/nonexistent/arm.urdf"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/arm.urdf"), "{stderr}");

    let fixture = ARM7_WITHOUT_CONFIG;
    let (ok, _, stderr) = cerebellum(&["sim", "--urdf", fixture]);
    assert!(!ok);
    assert!(
        stderr.contains("tool_frame") && stderr.contains("finger_left"),
        "{stderr}"
    );
}

#[test]
fn another_urdf_arm_runs_reach_unchanged() {
    let fixture = ARM7_WITHOUT_CONFIG;
    let (ok, stdout, stderr) = cerebellum(&[
        "sim",
        "--task",
        "reach",
        "--expert",
        "--episodes",
        "20",
        "--urdf",
        fixture,
        "--ee-link",
        "tool_frame",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let rate = last_json(&stdout)["success_rate"].as_f64().unwrap();
    // Measured 100% over 100 starts.
    assert!(rate >= 0.95, "success rate {rate}");
}

// `cerebellum train` and `cerebellum eval` end to end, on small budgets.

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cerebellum-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn train_pendulum(out: &Path, extra: &[&str]) -> serde_json::Value {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "train",
        "--task",
        "pendulum",
        "--steps",
        "8192",
        "--eval-episodes",
        "2",
        "--out",
        out,
        "--json",
    ];
    args.extend(extra);
    let (ok, stdout, stderr) = cerebellum(&args);
    assert!(ok, "train failed: {stderr}");
    last_json(&stdout)
}

#[test]
fn train_writes_the_run_directory_and_eval_reads_it() {
    let out = run_dir("files");
    let report = train_pendulum(&out, &[]);
    assert_eq!(report["env_steps"], 8192);
    assert!(report["mean_return"].as_f64().unwrap().is_finite());
    for file in [
        "config.toml",
        "metrics.csv",
        "timing.csv",
        "learning_curve.png",
        "checkpoint.safetensors",
        "contract.json",
        "trainer_state.json",
    ] {
        assert!(out.join(file).is_file(), "{file} is written");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        !metrics.contains("seconds"),
        "wall-clock figures stay in timing.csv"
    );
    let png = std::fs::read(out.join("learning_curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    let (ok, stdout, stderr) = cerebellum(&[
        "eval",
        "--checkpoint",
        out.to_str().unwrap(),
        "--episodes",
        "3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let eval = last_json(&stdout);
    assert_eq!(eval["episodes"], 3);
    assert_eq!(eval["episode_returns"].as_array().unwrap().len(), 3);

    // The saved config repeats the run.
    let again = run_dir("again");
    let config = out.join("config.toml");
    train_pendulum(&again, &["--config", config.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(again.join("metrics.csv")).unwrap(),
        metrics,
        "same seed and config, same learning curve"
    );

    // --resume continues from the checkpoint: --steps more steps.
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--resume",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "8192",
        "--eval-episodes",
        "1",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(last_json(&stdout)["env_steps"], 16384);
    let resumed = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        resumed.lines().count(),
        metrics.lines().count() * 2 - 1,
        "appended, one header"
    );
    for dir in [out, again] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn eval_refuses_another_rate_and_a_corrupt_checkpoint() {
    let out = run_dir("refuse");
    let dir = out.to_str().unwrap();
    let (ok, _, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach",
        "--envs",
        "2",
        "--steps",
        "128",
        "--eval-episodes",
        "1",
        "--out",
        dir,
    ]);
    assert!(ok, "{stderr}");

    // The policy runs at 50 Hz; the same arm at 25 Hz is refused by name.
    let env = out.join("env.toml");
    std::fs::write(
        &env,
        "task = \"reach\"\n[physics]\ndt = 0.01\nsubsteps = 4\n",
    )
    .unwrap();
    let (ok, _, stderr) = cerebellum(&[
        "eval",
        "--checkpoint",
        dir,
        "--env-config",
        env.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("control rate"), "{stderr}");

    let weights = out.join("checkpoint.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, stderr) = cerebellum(&["eval", "--checkpoint", dir]);
    assert!(!ok);
    assert!(stderr.contains("corrupt or truncated"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bad_training_configs_are_named() {
    let out = run_dir("badconfig");
    std::fs::create_dir_all(&out).unwrap();
    let config = out.join("bad.toml");
    std::fs::write(&config, "task = \"pendulum\"\n[ppo]\nclip = 3.0\n").unwrap();
    let (ok, _, stderr) = cerebellum(&["train", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("ppo.clip"), "{stderr}");
    std::fs::write(&config, "task = \"pendulum\"\nlearning_rate = 0.1\n").unwrap();
    let (ok, _, stderr) = cerebellum(&["train", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("learning_rate"), "{stderr}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn run_drives_a_checkpoint_in_wall_time_and_records_its_episodes() {
    let out = run_dir("run");
    let out_s = out.to_str().unwrap();
    let (ok, _, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach",
        "--steps",
        "2048",
        "--envs",
        "4",
        "--eval-episodes",
        "1",
        "--out",
        out_s,
        "--json",
    ]);
    assert!(ok, "train failed: {stderr}");
    let record = out.join("episodes");
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        out_s,
        "--robot",
        "sim",
        "--task",
        "reach",
        "--episodes",
        "1",
        "--duration",
        "10",
        "--inference",
        "worker",
        "--record",
        record.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "run failed: {stderr}");
    let report = last_json(&stdout);
    println!("{report}");
    // One 2 s episode at 50 Hz, held to the wall clock.
    assert_eq!(report["episodes"], 1);
    assert_eq!(report["ticks"], 100);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900));
    for key in [
        "success_rate",
        "deadline_misses",
        "clamps",
        "tick_latency_p50_us",
        "tick_latency_p99_us",
        "tick_latency_max_us",
    ] {
        assert!(!report[key].is_null(), "{key} missing from {report}");
    }
    let (meta, episodes) = cerebellum_runtime::recorder::read_episodes(&record).unwrap();
    assert_eq!(meta.robot.control_rate_hz, 50.0);
    assert_eq!(episodes.len(), 1);
    assert_eq!(episodes[0].len(), 100);
    assert!(episodes[0].last().unwrap().truncated);
    // The recording is never overwritten: a second run into it is
    // refused, naming it, unless it appends.
    let again = |append: bool| {
        let mut args = vec![
            "run",
            "--checkpoint",
            out_s,
            "--clock",
            "sim",
            "--episodes",
            "1",
            "--record",
            record.to_str().unwrap(),
            "--json",
        ];
        if append {
            args.push("--append");
        }
        cerebellum(&args)
    };
    let (ok, stdout, _) = again(false);
    assert!(!ok, "a second run overwrote the recording");
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains(record.to_str().unwrap()), "{error}");
    let (ok, _, stderr) = again(true);
    assert!(ok, "run --append failed: {stderr}");
    let (_, episodes) = cerebellum_runtime::recorder::read_episodes(&record).unwrap();
    assert_eq!(episodes.len(), 2, "one episode appended");

    let (ok, _, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        out_s,
        "--robot",
        &format!(
            "zenoh:tcp/127.0.0.1:{}",
            cerebellum_firmware_bridge::session::free_local_port()
        ),
        "--meta-timeout",
        "0.5",
    ]);
    // Nobody serving there: a clear error, no hang.
    assert!(!ok && stderr.contains("serve-sim"), "{stderr}");

    // Fine-tuning through the loop: lockstep (deterministic) and wall time.
    let online = run_dir("online");
    let settings = out.join("online.toml");
    std::fs::write(
        &settings,
        "[online]\nbatch_transitions = 64\n[ppo]\nepochs = 2\nminibatch_size = 32\n",
    )
    .unwrap();
    // Each fine-tuning run forks into its own directory: --out never
    // overwrites a run.
    let tune = |clock: &str, seconds: &str, run: u32| {
        let online = online.with_extension(run.to_string());
        let _ = std::fs::remove_dir_all(&online);
        let (ok, stdout, stderr) = cerebellum(&[
            "train",
            "--online",
            "--resume",
            out_s,
            "--config",
            settings.to_str().unwrap(),
            "--out",
            online.to_str().unwrap(),
            "--clock",
            clock,
            "--duration",
            seconds,
            "--eval-episodes",
            "2",
            "--json",
        ]);
        assert!(ok, "train --online failed: {stderr}");
        last_json(&stdout)
    };
    let lockstep = tune("sim", "4", 1);
    println!("{lockstep}");
    assert_eq!(lockstep["ticks"], 200);
    assert_eq!(lockstep["dropped_transitions"], 0);
    assert_eq!(lockstep["learner"]["updates"], 3, "200 transitions / 64");
    for key in [
        "success_rate_before",
        "success_rate",
        "success_gain",
        "deadline_misses",
    ] {
        assert!(!lockstep[key].is_null(), "{key} missing from {lockstep}");
    }
    let again = tune("sim", "4", 2);
    assert_eq!(
        again["learner"], lockstep["learner"],
        "lockstep is repeatable"
    );
    let online = online.with_extension("1");
    let csv = std::fs::read_to_string(online.join("online.csv")).unwrap();
    assert!(csv.starts_with("robot_seconds,"), "{csv}");
    // The fine-tuned checkpoint loads against the robot it was tuned on.
    let contract = cerebellum_policies::checkpoint::load_contract(&online).unwrap();
    assert_eq!(contract.spec.control_rate_hz, 50.0);
    let wall = tune("wall", "2", 3);
    assert_eq!(wall["ticks"], 100);
    assert!(wall["learner"]["failure"].is_null());
    for run in 1..=3 {
        let _ = std::fs::remove_dir_all(online.with_extension(run.to_string()));
    }
}

#[test]
fn a_zenoh_user_without_a_password_variable_is_refused_not_given_an_empty_password() {
    for password in [None, Some("")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cerebellum"));
        command.args([
            "teleop",
            "--scripted",
            "--robot",
            "zenoh:tcp/127.0.0.1:1/arm0",
            "--zenoh-user",
            "operator",
            "--duration",
            "1",
            "--json",
        ]);
        match password {
            None => command.env_remove("CEREBELLUM_ZENOH_PASSWORD"),
            Some(p) => command.env("CEREBELLUM_ZENOH_PASSWORD", p),
        };
        let output = command.output().expect("the binary runs");
        assert!(!output.status.success());
        let report = last_json(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(report["ok"], false);
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("CEREBELLUM_ZENOH_PASSWORD"), "{error}");
        assert!(error.contains("--zenoh-user operator"), "{error}");
    }
}

#[test]
fn checkpoint_verify_names_the_hash_and_refuses_a_flipped_bit_naming_the_tensor() {
    let out = std::env::temp_dir().join(format!("cerebellum-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let out_s = out.to_str().unwrap();
    let (ok, _, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach",
        "--steps",
        "512",
        "--envs",
        "2",
        "--eval-episodes",
        "1",
        "--out",
        out_s,
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cerebellum(&["checkpoint", "verify", out_s, "--json"]);
    assert!(ok, "{stderr}");
    let report = last_json(&stdout);
    assert_eq!(report["weights_sha256"].as_str().unwrap().len(), 64);
    // One bit of the last tensor's data (safetensors stores data after
    // the header, tensors in name order: the last bytes are `log_std`'s).
    let path = out.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (ok, stdout, _) = cerebellum(&["checkpoint", "verify", out_s, "--json"]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("log_std"), "{error}");
    let (ok, stdout, _) = cerebellum(&["eval", "--checkpoint", out_s, "--json"]);
    assert!(!ok, "eval loaded a corrupted checkpoint: {stdout}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn durations_beyond_their_maximum_are_refused_naming_the_flag_never_a_panic() {
    for args in [
        vec!["serve-sim", "--duration", "1e20", "--json"],
        vec![
            "teleop",
            "--scripted",
            "--robot",
            "zenoh:tcp/127.0.0.1:1/arm0",
            "--duration",
            "1e20",
            "--json",
        ],
        vec!["serve-sim", "--duration", "NaN", "--json"],
        vec!["serve-sim", "--duration=-1", "--json"],
    ] {
        let (ok, stdout, stderr) = cerebellum(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
        assert!(error.contains("--duration"), "{args:?}: {error}");
    }
}
