//! The binary away from its source tree: a `cerebellum` copied into an
//! empty directory trains on the SO-101 it carries inside itself, and
//! opens no file of the tree it was built from.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace this test (and the binary) was built from.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh directory holding nothing but a copy of the binary.
fn copied_binary(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cerebellum-away-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("cerebellum");
    std::fs::copy(env!("CARGO_BIN_EXE_cerebellum"), &binary).unwrap();
    (dir, binary)
}

const TRAIN: [&str; 10] = [
    "train",
    "--task",
    "reach",
    "--steps",
    "512",
    "--envs",
    "2",
    "--eval-episodes",
    "1",
    "--json",
];

/// `text` without its ANSI colour codes (the log colours even a pipe).
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

fn strace_available() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_copied_binary_trains_without_opening_its_source_tree() {
    let (dir, binary) = copied_binary("train");
    let out = dir.join("run");
    let trace = dir.join("files.trace");
    let traced = strace_available();
    let mut command = if traced {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=%file", "-o"])
            .arg(&trace)
            .arg(&binary);
        c
    } else {
        eprintln!("strace is not available: the files the binary opens are not checked");
        Command::new(&binary)
    };
    let output = command
        .args(TRAIN)
        .arg("--out")
        .arg(&out)
        .current_dir(&dir)
        // Nothing of the build's environment (cargo points LD_LIBRARY_PATH
        // into target/), as on a robot's board.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The arm loader says where the arm came from at debug level.
        .env("RUST_LOG", "warn,cerebellum_sim=debug")
        .output()
        .unwrap();
    let stderr = without_colours(&String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["env_steps"].as_u64(), Some(512));
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(
        stderr.contains("arm loaded") && stderr.contains("source=\"embedded\""),
        "the default arm comes from the binary: {stderr}"
    );
    assert!(
        stderr.contains("<embedded>/so101/so101_new_calib.urdf"),
        "{stderr}"
    );
    if traced {
        let trace = std::fs::read_to_string(&trace).unwrap();
        let root = workspace();
        let root = root.to_str().unwrap();
        let opened: Vec<&str> = trace
            .lines()
            .filter(|line| line.contains(root))
            // The copy's own directory, if the temporary directory is
            // inside the workspace.
            .filter(|line| !line.contains(dir.to_str().unwrap()))
            .collect();
        assert!(
            opened.is_empty(),
            "the binary touched its source tree:\n{}",
            opened.join("\n")
        );
        assert!(
            trace.contains("run/checkpoint.safetensors"),
            "the trace sees the binary's files"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (dir, binary) = copied_binary("version");
    let output = Command::new(&binary)
        .arg("--version")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let text = text.trim();
    // "cerebellum 0.1.0 (f87300c)", or "(unknown)" built outside git.
    let expected = format!("cerebellum {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text[expected.len()..].strip_suffix(')').unwrap();
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    let checkout = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace())
        .output()
        .is_ok_and(|o| o.status.success());
    if checkout {
        assert_ne!(commit, "unknown", "built in a git checkout: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_physics_says_it_needs_the_mujoco_scene_and_takes_mjcf() {
    let (dir, binary) = copied_binary("bench");
    let output = Command::new(&binary)
        .args(["bench", "physics", "--help"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        help.contains("--mjcf") && help.contains("not embedded"),
        "{help}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
