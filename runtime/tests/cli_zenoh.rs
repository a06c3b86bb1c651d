//! `--robot zenoh:…` end to end: `cerebellum serve-sim` processes serving
//! the simulated arm, and `cerebellum run` / `train` driving them over real
//! zenoh sessions on loopback.

mod common;

use common::{cerebellum, last_json, train_reach};

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A `serve-sim` process, killed when dropped.
struct Served {
    child: Child,
    address: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_sim(robot_id: &str) -> Served {
    serve_sim_with(robot_id, &["--lockstep"])
}

fn serve_sim_with(robot_id: &str, extra: &[&str]) -> Served {
    serve_task(robot_id, "reach", extra)
}

fn serve_task(robot_id: &str, task: &str, extra: &[&str]) -> Served {
    let port = cerebellum_firmware_bridge::session::free_local_port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args([
            "serve-sim",
            "--task",
            task,
            "--robot-id",
            robot_id,
            "--listen",
            &endpoint,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve-sim starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("serving"), "{line}");
    Served {
        child,
        address: format!("zenoh:{endpoint}/{robot_id}"),
    }
}

fn trained_reach() -> PathBuf {
    static TRAINED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TRAINED.get_or_init(|| train_reach("zenoh")).clone()
}

#[test]
fn run_and_train_drive_serve_sim_over_zenoh_as_they_drive_the_simulator() {
    let checkpoint = trained_reach();
    let checkpoint = checkpoint.to_str().unwrap();
    let run = |robot: &str| {
        let (ok, stdout, stderr) = cerebellum(&[
            "run",
            "--checkpoint",
            checkpoint,
            "--robot",
            robot,
            "--clock",
            "sim",
            "--episodes",
            "3",
            "--duration",
            "1000",
            "--json",
        ]);
        assert!(ok, "run --robot {robot} failed: {stderr}");
        last_json(&stdout)
    };
    let arm0 = serve_sim("arm0");
    let local = run("sim");
    let remote = run(&arm0.address);
    assert_eq!(remote["robot"], arm0.address);
    // Same seed, same episodes: the wire changes nothing.
    for key in [
        "ticks",
        "episodes",
        "successes",
        "success_rate",
        "clamps",
        "holds",
    ] {
        assert_eq!(local[key], remote[key], "{key}: {local} vs {remote}");
    }
    assert_eq!(remote["episodes"], 3);
    let eval = |robot: &str| {
        let (ok, stdout, stderr) = cerebellum(&[
            "eval",
            "--checkpoint",
            checkpoint,
            "--episodes",
            "3",
            "--envs",
            "1",
            "--robot",
            robot,
            "--json",
        ]);
        assert!(ok, "eval --robot {robot} failed: {stderr}");
        last_json(&stdout)
    };
    let (local, remote) = (eval("sim"), eval(&arm0.address));
    for key in ["success_rate", "mean_return", "episode_returns"] {
        assert_eq!(local[key], remote[key], "{key}: {local} vs {remote}");
    }

    // A fleet: two servers, one learner.
    let arm1 = serve_sim("arm1");
    let out = std::env::temp_dir().join(format!("cerebellum-fleet-{}", std::process::id()));
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--resume",
        checkpoint,
        "--robot",
        &arm0.address,
        "--robot",
        &arm1.address,
        "--clock",
        "sim",
        "--duration",
        "4",
        "--eval-episodes",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "train on the fleet failed: {stderr}");
    let report = last_json(&stdout);
    let robots = report["robots"].as_array().unwrap();
    assert_eq!(robots.len(), 2, "{report}");
    let mut total = 0;
    for (robot, id) in robots.iter().zip(["arm0", "arm1"]) {
        assert_eq!(robot["robot_id"], id);
        assert_eq!(robot["ticks"], 200, "4 s at 50 Hz on each robot");
        total += robot["ticks"].as_u64().unwrap();
    }
    assert_eq!(report["learner"]["received"], total);
}

#[test]
fn a_scripted_operator_takes_over_a_straying_arm_and_the_loop_records_it() {
    let checkpoint = trained_reach();
    let arm = serve_sim_with("arm0", &[]);
    let address = arm.address.clone();
    let teleop = std::thread::spawn(move || {
        cerebellum(&[
            "teleop",
            "--scripted",
            "--robot",
            &address,
            "--stray-ticks",
            "10",
            "--duration",
            "7",
            "--json",
        ])
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, stdout, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--robot",
        &arm.address,
        "--duration",
        "5",
        "--sample",
        "--json",
    ]);
    assert!(ok, "run failed: {stderr}");
    let run = last_json(&stdout);
    let (ok, stdout, stderr) = teleop.join().unwrap();
    assert!(ok, "teleop failed: {stderr}");
    let teleop = last_json(&stdout);
    assert!(teleop["takeovers"].as_u64().unwrap() >= 1, "{teleop}");
    assert!(run["takeovers"].as_u64().unwrap() >= 1, "{run}");
    assert!(run["intervention_ticks"].as_u64().unwrap() >= 1, "{run}");
}

#[test]
fn authentication_failures_say_so() {
    let checkpoint = trained_reach();
    let dir = std::env::temp_dir().join(format!("cerebellum-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dictionary = dir.join("users.txt");
    std::fs::write(&dictionary, "runtime:runtime-secret\n").unwrap();
    let config = dir.join("robot.json5");
    std::fs::write(
        &config,
        format!(
            "{{ transport: {{ auth: {{ usrpwd: {{ dictionary_file: \"{}\" }} }} }} }}",
            dictionary.display()
        ),
    )
    .unwrap();
    let arm = serve_sim_with(
        "arm0",
        &["--lockstep", "--zenoh-config", config.to_str().unwrap()],
    );
    let eval = |user: Option<&str>, password: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cerebellum"));
        command.args([
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--episodes",
            "1",
            "--robot",
            &arm.address,
            "--meta-timeout",
            "3",
            "--json",
        ]);
        if let Some(user) = user {
            command.args(["--zenoh-user", user]);
        }
        command.env("CEREBELLUM_ZENOH_PASSWORD", password);
        let output = command.output().unwrap();
        let report = last_json(&String::from_utf8_lossy(&output.stdout));
        (output.status.success(), report)
    };
    let (ok, report) = eval(Some("runtime"), "guess");
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("refused the user or password") && error.contains("`runtime`"),
        "{error}"
    );
    let (ok, report) = eval(None, "");
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("requires authentication"), "{error}");
    let (ok, report) = eval(Some("runtime"), "runtime-secret");
    assert!(ok, "{report}");
}

/// The vision-language policy over the wire: camera frames on the camera
/// key, the instruction from the robot's reset, chunks played by the loop;
/// in lockstep the episodes are those of the in-process simulator.
#[test]
fn a_vla_plays_its_chunks_over_zenoh_as_in_the_simulator() {
    let dir = std::env::temp_dir().join(format!("cerebellum-zenoh-vla-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tiny.toml");
    std::fs::write(
        &config,
        "eval_episodes = 0\n[vla]\nexpert_episodes = 4\nsteps = 4\neval_every = 4\neval_episodes = 0\n\
         batch_size = 16\n[vla.model]\nhorizon = 5\nconv_channels = [8]\nconv_kernels = [3]\n\
         conv_strides = [2]\nhead_hidden = [32]\n",
    )
    .unwrap();
    let checkpoint = dir.join("run");
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--config",
        config.to_str().unwrap(),
        "--out",
        checkpoint.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let checkpoint = checkpoint.to_str().unwrap();
    let run = |robot: &str| {
        let (ok, stdout, stderr) = cerebellum(&[
            "run",
            "--checkpoint",
            checkpoint,
            "--robot",
            robot,
            "--clock",
            "sim",
            "--episodes",
            "2",
            "--duration",
            "1000",
            "--json",
        ]);
        assert!(ok, "run --robot {robot} failed: {stdout}\n{stderr}");
        last_json(&stdout)
    };
    let arm = serve_task("vla0", "reach-color", &["--lockstep"]);
    let local = run("sim");
    let remote = run(&arm.address);
    assert_eq!(remote["policy"], "vla");
    assert_eq!(remote["episodes"], 2);
    assert_eq!(remote["policy_errors"], 0, "{remote}");
    for key in [
        "ticks",
        "episodes",
        "successes",
        "chunks",
        "stale_chunks",
        "holds",
    ] {
        assert_eq!(local[key], remote[key], "{key}: {local} vs {remote}");
    }
    let chunks = remote["chunks"].as_u64().unwrap();
    assert!(
        chunks > 0 && chunks < remote["ticks"].as_u64().unwrap() / 2,
        "{chunks} chunks"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
