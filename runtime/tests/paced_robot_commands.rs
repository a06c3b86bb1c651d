//! Every command that moves a robot does so through the control loop: one
//! command per tick at the robot's rate, each through the safety envelope.
//! Checked from the robot's side: a wall-clock `cerebellum serve-sim`
//! counts what it received (`inbox.accepted`), applied
//! (`commands_applied`), refused, and the largest step between consecutive
//! commands, while `eval`, `run` (alone and with a teleoperator) and
//! `train --online` drive it over real zenoh sessions on loopback.

mod common;

use common::{cerebellum, last_json, train_reach};

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The per-tick step the envelope allows each joint in these runs (rad).
const STEP: f64 = 0.04;

/// A wall-clock `serve-sim --json`; `stop` interrupts it and reads its
/// summary.
struct Served {
    child: Option<Child>,
    address: String,
}

impl Served {
    fn start(robot_id: &str) -> Self {
        let port = cerebellum_firmware_bridge::session::free_local_port();
        let endpoint = format!("tcp/127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
            .args([
                "serve-sim",
                "--task",
                "reach",
                "--robot-id",
                robot_id,
                "--listen",
                &endpoint,
                "--json",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve-sim starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("serving"), "{line}");
        assert!(line.contains("wall clock"), "{line}");
        child.stdout = Some(stdout.into_inner());
        Self {
            child: Some(child),
            address: format!("zenoh:{endpoint}/{robot_id}"),
        }
    }

    /// Ctrl-C, then the summary `serve-sim --json` prints as it stops.
    fn stop(mut self) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        let pid = child.id() as i32;
        // SAFETY: signalling a child process we own.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "serve-sim exited with {status}: {stdout}");
        last_json(&stdout)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An envelope with a per-tick rate limit on every joint, and a watchdog
/// slack enough that a loaded test machine does not trigger stale holds
/// (the one stage allowed to jump to the measured pose).
fn envelope_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("envelope.toml");
    let steps = vec![format!("{STEP}"); 6].join(", ");
    std::fs::write(
        &path,
        format!(
            "max_step_per_tick = [{steps}]\nstale_hold_ticks = 25\nstale_safe_pose_ticks = 50\n"
        ),
    )
    .unwrap();
    path
}

/// What the robot saw matches what the loop sent: about one command per
/// tick, none refused, each within the envelope's step of the previous.
fn check_robot_side(command: &str, ticks: u64, robot: &serde_json::Value) {
    println!("{command}: {ticks} ticks; the robot's side: {robot}");
    let accepted = robot["inbox"]["accepted"].as_u64().expect("inbox.accepted");
    let applied = robot["commands_applied"]
        .as_u64()
        .expect("commands_applied");
    assert!(ticks >= 50, "{command}: only {ticks} ticks ran");
    // Commands, plus a reset per episode and the odd e-stop frame: never a
    // flood (the hole this closes put 34,000 frames on the wire in 2 s).
    assert!(
        accepted as f64 <= 1.1 * ticks as f64 + 20.0,
        "{command}: the robot accepted {accepted} frames for {ticks} loop ticks: {robot}"
    );
    assert!(
        applied as f64 >= 0.5 * ticks as f64,
        "{command}: the robot applied only {applied} commands for {ticks} ticks: {robot}"
    );
    assert_eq!(
        robot["commands_out_of_limits"], 0,
        "{command}: commands outside the spec's limits reached the robot: {robot}"
    );
    let step = robot["max_command_step"]
        .as_f64()
        .expect("max_command_step");
    assert!(
        step <= STEP + 1e-5,
        "{command}: consecutive commands {step} rad apart, the envelope allows {STEP}: {robot}"
    );
}

#[test]
fn every_command_that_moves_a_robot_sends_one_enveloped_command_per_tick() {
    let checkpoint = train_reach("paced");
    let envelope = envelope_file(&checkpoint);
    let (checkpoint, envelope) = (checkpoint.to_str().unwrap(), envelope.to_str().unwrap());

    // eval: picks the wall clock itself for a robot on its own clock.
    let served = Served::start("arm0");
    let (ok, stdout, stderr) = cerebellum(&[
        "eval",
        "--checkpoint",
        checkpoint,
        "--episodes",
        "1",
        "--robot",
        &served.address,
        "--envelope",
        envelope,
        "--json",
    ]);
    assert!(ok, "eval failed: {stderr}");
    let eval = last_json(&stdout);
    assert_eq!(eval["loop"]["clock"], "wall", "{eval}");
    assert_eq!(eval["episodes"], 1);
    let robot = served.stop();
    check_robot_side("eval", eval["loop"]["ticks"].as_u64().unwrap(), &robot);

    // eval and run refuse simulated time on a robot with its own clock.
    let served = Served::start("arm0");
    for args in [
        vec!["eval", "--checkpoint", checkpoint, "--clock", "sim"],
        vec!["run", "--checkpoint", checkpoint, "--clock", "sim"],
    ] {
        let mut args = args;
        args.extend(["--robot", &served.address, "--json"]);
        let (ok, stdout, _) = cerebellum(&args);
        assert!(!ok, "{args:?} drove a wall-clock robot in simulated time");
        assert!(stdout.contains("own clock"), "{args:?}: {stdout}");
    }
    let robot = served.stop();
    assert_eq!(robot["commands_applied"], 0, "{robot}");

    // run, with the link's figures in its report.
    let served = Served::start("arm0");
    let (ok, stdout, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        checkpoint,
        "--robot",
        &served.address,
        "--duration",
        "3",
        "--envelope",
        envelope,
        "--json",
    ]);
    assert!(ok, "run failed: {stderr}");
    let run = last_json(&stdout);
    for key in ["lost", "recovered", "commands_sent"] {
        assert!(
            run["link"][key].is_u64(),
            "run --json lacks link.{key}: {run}"
        );
    }
    assert!(run["link"]["inbox"]["rejected"].is_object(), "{run}");
    let robot = served.stop();
    check_robot_side("run", run["ticks"].as_u64().unwrap(), &robot);

    // run with a teleoperator: the operator's commands go through the
    // same envelope (the scripted expert asks for larger steps).
    let served = Served::start("arm0");
    let address = served.address.clone();
    let teleop = std::thread::spawn(move || {
        cerebellum(&[
            "teleop",
            "--scripted",
            "--robot",
            &address,
            "--stray-ticks",
            "10",
            "--duration",
            "5",
            "--json",
        ])
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, stdout, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        checkpoint,
        "--robot",
        &served.address,
        "--duration",
        "4",
        "--sample",
        "--envelope",
        envelope,
        "--json",
    ]);
    assert!(ok, "run with teleop failed: {stderr}");
    let run = last_json(&stdout);
    let (ok, _, stderr) = teleop.join().unwrap();
    assert!(ok, "teleop failed: {stderr}");
    assert!(
        run["intervention_ticks"].as_u64().unwrap() >= 1,
        "the operator never took over: {run}"
    );
    let robot = served.stop();
    check_robot_side("run + teleop", run["ticks"].as_u64().unwrap(), &robot);

    // train --online in wall time.
    let served = Served::start("arm0");
    let out = std::env::temp_dir().join(format!("cerebellum-paced-online-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--resume",
        checkpoint,
        "--online",
        "--robot",
        &served.address,
        "--duration",
        "3",
        "--eval-episodes",
        "0",
        "--envelope",
        envelope,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "train --online failed: {stderr}");
    let online = last_json(&stdout);
    let robot = served.stop();
    check_robot_side("train --online", online["ticks"].as_u64().unwrap(), &robot);
}
