//! A stage-aware progress model trained on recorded lift demonstrations
//! ranks held-out successful episodes in time (`cerebellum record`,
//! `cerebellum reward train|eval`).

use std::path::Path;
use std::process::Command;

fn cerebellum(args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        output.status.success(),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn record(task: &str, episodes: &str, seed: &str, out: &Path) {
    let (ok, _, stderr) = cerebellum(&[
        "record",
        "--task",
        task,
        "--expert",
        "--episodes",
        episodes,
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
}

#[test]
fn a_progress_model_trained_on_lift_demonstrations_orders_held_out_episodes() {
    let base = std::env::temp_dir().join(format!("cerebellum-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (data, unseen, reach, model) = (
        base.join("lift"),
        base.join("unseen"),
        base.join("reach"),
        base.join("model"),
    );
    record("lift", "14", "0", &data);
    record("lift", "4", "1000", &unseen);
    let (ok, trained, stderr) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--held-out",
        "4",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(trained["train_episodes"], 10);
    let held_out = trained["progress_spearman_min"].as_f64().unwrap();
    assert!(held_out >= 0.95, "held-out Spearman {trained}");
    let (ok, evaluated, stderr) = cerebellum(&[
        "reward",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        unseen.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(evaluated["successful_episodes"], 4);
    assert!(
        evaluated["progress_spearman_min"].as_f64().unwrap() >= 0.95,
        "{evaluated}"
    );
    // Retraining bumps the version.
    let (ok, again, _) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "5",
        "--json",
    ]);
    assert!(ok);
    assert_eq!(again["model_version"], 2);
    // A model is refused on episodes of another robot spec.
    record("reach", "1", "0", &reach);
    let (ok, _, stderr) = cerebellum(&[
        "reward",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        reach.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("another observation spec"),
        "{stderr}"
    );
}
