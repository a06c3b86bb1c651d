//! A training run's directory: `train --out` never overwrites another run
//! (offline or `--online`), and the trainer state is saved atomically, in
//! step with the checkpoint, so that a crash or a full disk between the two
//! leaves a run that resumes.

mod common;

use common::{cerebellum, last_json};

use cerebellum_runtime::learn::trainer::{PREVIOUS_STATE_FILE, STATE_FILE, TrainerState};
use std::path::{Path, PathBuf};

fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cerebellum-run-dir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small pendulum run (one update per 4096 steps, no evaluation).
fn train(out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "train",
        "--task",
        "pendulum",
        "--steps",
        "4096",
        "--eval-episodes",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    cerebellum(&args)
}

/// `train --resume OUT --steps STEPS`: STEPS more steps, in place.
fn resume(out: &Path, steps: &str) -> (bool, String, String) {
    cerebellum(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--eval-episodes",
        "0",
        "--json",
    ])
}

/// Every file of a run directory, by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn train_refuses_an_out_that_holds_a_run_and_leaves_it_untouched() {
    // An empty directory is fine.
    let out = fresh_dir("refuse");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, _, stderr) = train(&out, &[]);
    assert!(ok, "{stderr}");
    let before = snapshot(&out);

    let (ok, stdout, stderr) = train(&out, &["--seed", "1"]);
    assert!(!ok, "a second run into the same --out is refused");
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    for needed in [
        out.to_str().unwrap(),
        "already holds a run",
        "--resume",
        "--out",
    ] {
        assert!(error.contains(needed), "`{needed}` missing from: {error}");
    }
    assert!(stderr.contains("already holds a run"), "{stderr}");
    assert_eq!(snapshot(&out), before, "nothing of the old run changed");

    // A directory holding only one file of a run holds a run.
    let partial = fresh_dir("refuse-metrics");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("metrics.csv"), "iteration\n").unwrap();
    let (ok, _, stderr) = train(&partial, &[]);
    assert!(!ok && stderr.contains("metrics.csv"), "{stderr}");

    // --resume continues it (--steps: that many more).
    let (ok, stdout, stderr) = resume(&out, "4096");
    assert!(ok, "{stderr}");
    assert_eq!(last_json(&stdout)["env_steps"], 8192);

    // Fine-tuning writes a run of its own, and refuses one that exists:
    // the default DIR-online, and an --out given.
    let online = out.with_file_name(format!(
        "{}-online",
        out.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&online);
    for target in [None, Some(&partial)] {
        if target.is_none() {
            std::fs::create_dir_all(&online).unwrap();
            std::fs::write(online.join("config.toml"), "").unwrap();
        }
        let mut args = vec![
            "train",
            "--online",
            "--resume",
            out.to_str().unwrap(),
            "--clock",
            "sim",
            "--duration",
            "1",
        ];
        if let Some(dir) = target {
            args.extend(["--out", dir.to_str().unwrap()]);
        }
        let (ok, _, stderr) = cerebellum(&args);
        let named = target.unwrap_or(&online);
        assert!(!ok, "--online into {} is refused", named.display());
        assert!(
            stderr.contains(named.to_str().unwrap())
                && stderr.contains("already holds a run")
                && stderr.contains("choose another --out"),
            "{stderr}"
        );
    }
    for dir in [out, partial, online] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A crash after the trainer state was saved and before the checkpoint
/// that belongs to it: the state before it was kept and the run resumes
/// from it; with no state that matches the checkpoint, resuming is refused
/// and says why.
#[test]
fn a_run_interrupted_between_trainer_state_and_checkpoint_resumes() {
    let out = fresh_dir("crash");
    let (ok, _, stderr) = train(&out, &[]);
    assert!(ok, "{stderr}");
    let old_checkpoint = ["checkpoint.safetensors", "contract.json"]
        .map(|f| (f, std::fs::read(out.join(f)).unwrap()));
    let old_state = std::fs::read(out.join(STATE_FILE)).unwrap();
    let (ok, _, stderr) = resume(&out, "4096");
    assert!(ok, "{stderr}");
    let new_state = std::fs::read(out.join(STATE_FILE)).unwrap();
    assert_ne!(old_state, new_state);

    // The next save got as far as its trainer state: the checkpoint on disk
    // is the one before.
    for (file, bytes) in &old_checkpoint {
        std::fs::write(out.join(file), bytes).unwrap();
    }
    std::fs::write(out.join(STATE_FILE), &new_state).unwrap();
    std::fs::write(out.join(PREVIOUS_STATE_FILE), &old_state).unwrap();
    let (ok, stdout, stderr) = resume(&out, "4096");
    assert!(
        ok,
        "resumes from the state kept beside the checkpoint: {stderr}"
    );
    assert_eq!(last_json(&stdout)["env_steps"], 8192);

    // No state matches the checkpoint: refused, naming both files.
    for (file, bytes) in &old_checkpoint {
        std::fs::write(out.join(file), bytes).unwrap();
    }
    std::fs::write(out.join(STATE_FILE), &new_state).unwrap();
    std::fs::write(out.join(PREVIOUS_STATE_FILE), &new_state).unwrap();
    let (ok, _, stderr) = resume(&out, "12288");
    assert!(!ok);
    for needed in [
        "no trainer state matches",
        "saved at update 1 (4096 env steps)",
        STATE_FILE,
        PREVIOUS_STATE_FILE,
        "at update 2 (8192 env steps)",
    ] {
        assert!(stderr.contains(needed), "`{needed}` missing from: {stderr}");
    }
    let _ = std::fs::remove_dir_all(out);
}

/// A failed write of the trainer state (here: its temporary file cannot be
/// created) names the file, leaves no half file, and the run still resumes
/// once the cause is gone.
#[test]
fn a_failed_trainer_state_write_names_the_file_and_the_run_still_resumes() {
    let out = fresh_dir("full");
    let (ok, _, stderr) = train(&out, &[]);
    assert!(ok, "{stderr}");
    let blocker = out.join(format!("{STATE_FILE}.tmp"));
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let (ok, _, stderr) = resume(&out, "4096");
    assert!(!ok, "the save fails");
    let state_path = out.join(STATE_FILE);
    assert!(
        stderr.contains(&format!("cannot write {}", state_path.display())),
        "{stderr}"
    );
    std::fs::remove_dir_all(&blocker).unwrap();
    let (ok, stdout, stderr) = resume(&out, "4096");
    assert!(ok, "{stderr}");
    assert_eq!(last_json(&stdout)["env_steps"], 8192);

    // The library call names the path too: a directory that is a file.
    let state: TrainerState = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let not_a_dir = out.join("config.toml");
    let error = state.save(&not_a_dir).unwrap_err().to_string();
    assert!(
        error.contains(&not_a_dir.join(STATE_FILE).display().to_string()),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(out);
}
