//! The `cerebellum` binary end to end: real physics, JSON on the last line.

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

/// The generated 7-DoF arm with no robot config beside it, so its end
/// effector is ambiguous unless named.
const ARM7_WITHOUT_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sim/tests/fixtures/arms/test_arm7/urdf/test_arm7_no_config.urdf"
);

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("some output")).expect("JSON last line")
}

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
