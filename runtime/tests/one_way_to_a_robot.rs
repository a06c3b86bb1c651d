//! A tripwire over the source: the control loop is the one place that
//! commands a robot other than the in-process simulator. The types make it
//! so (`robots::ConnectedRobot` has no `apply`, `ControlLoop`'s robot is
//! private, a wall-clock `ZenohRobot` paces itself); this test makes a new
//! call site that commands a robot directly fail until someone has looked
//! at it and added it below with the reason it is safe.

use std::path::{Path, PathBuf};

/// Every `.apply(` call on a robot outside the loop, with why it is safe.
const ALLOWED_APPLY: &[(&str, &str)] = &[
    // The one way to a robot: after the envelope, at the clock's rate.
    (
        "runtime/src/control_loop/mod.rs",
        "self.robot.apply(&checked.command)",
    ),
    // Delegation: `Box<dyn Robot>`, and the zenoh wrapper the loop drives.
    ("core/src/traits.rs", "(**self).apply(command)"),
    ("runtime/src/robots.rs", "self.robot.apply(command)"),
    // In-process simulators (`SimEnv`, `VecEnv`): training, recording
    // demonstrations, frame strips.
    ("runtime/src/episodes.rs", "env.apply(&command)"),
    ("runtime/src/commands/record.rs", "env.apply(&action)"),
    // The VLA's demonstrations and DAgger rollouts (`&mut SimEnv`).
    ("runtime/src/learn/vla.rs", "env.apply(&sent)"),
    (
        "runtime/src/commands/eval.rs",
        "env.apply(crate::tick::command(&output[0]))",
    ),
    ("sim/src/vec_env.rs", "slot.env.apply(&commands[index])"),
    ("sim/src/env.rs", "self.robot().apply(command)"),
    // The transport bench's own lockstep simulator (it checks
    // `is_lockstep()` before the first command).
    (
        "runtime/src/commands/bench_zenoh.rs",
        "arm.apply(&output[0].chunk.actions[0])",
    ),
    // The firmware side: a server applying received commands to its robot.
    ("firmware-bridge/src/server.rs", "self.robot.apply(&action)"),
];

/// Where a robot over zenoh may be connected: the `--robot` switch, whose
/// robots only become control loops, and the transport bench.
const ALLOWED_CONNECT: &[&str] = &[
    "runtime/src/robots.rs",
    "runtime/src/commands/bench_zenoh.rs",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source tree") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (file relative to the workspace, trimmed line) for each line of product
/// source (not tests) that contains `needle`, comments skipped.
fn calls(needle: &str) -> Vec<(String, String)> {
    let root = workspace();
    let mut files = Vec::new();
    for krate in [
        "core",
        "sim",
        "policies",
        "reward-models",
        "firmware-bridge",
        "runtime",
    ] {
        sources(&root.join(krate).join("src"), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .expect("under the workspace")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("readable source");
        for line in text.lines() {
            let code = line.trim();
            if code.starts_with("//") || !code.contains(needle) {
                continue;
            }
            found.push((relative.clone(), code.to_owned()));
        }
    }
    found
}

#[test]
fn only_the_control_loop_commands_a_robot_that_is_not_an_in_process_simulator() {
    let unexpected: Vec<_> = calls(".apply(")
        .into_iter()
        .filter(|(_, line)| !line.contains("reward_scale.apply("))
        .filter(|(file, line)| {
            !ALLOWED_APPLY
                .iter()
                .any(|(f, call)| f == file && line.contains(call))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "new call sites command a robot outside the control loop: {unexpected:#?}\n\
         A command to a robot goes through `robots::ConnectedRobot::into_loop` \
         (the safety envelope at the robot's rate); only in-process simulators \
         may be stepped directly."
    );
}

#[test]
fn robots_over_zenoh_are_connected_only_where_they_become_control_loops() {
    let unexpected: Vec<_> = calls("ZenohRobot::connect(")
        .into_iter()
        .filter(|(file, _)| !ALLOWED_CONNECT.contains(&file.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "robots over zenoh connected outside robots.rs: {unexpected:#?}"
    );
}
