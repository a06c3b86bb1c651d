//! `cerebellum train` and `cerebellum eval` end to end, on small budgets.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cerebellum(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("some output")).expect("JSON last line")
}

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

    // --resume continues from the checkpoint up to the new total.
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--resume",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "16384",
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
