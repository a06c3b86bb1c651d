//! `train --resume RUN --out NEW` forks RUN (issue 18): NEW gets its own
//! config (RUN's, `--config` keys overlaid), its own files and evaluation,
//! `--steps` counts its own steps, its contract names the parent, and
//! nothing of RUN is written. `--resume RUN` alone continues RUN in place,
//! `--steps` then adding that many steps.

mod common;

use common::{cerebellum, last_json};
use std::path::{Path, PathBuf};

/// Env steps one pendulum iteration collects (its default envs ×
/// rollout_steps).
const ITERATION: u64 = 4096;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cerebellum-fork-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `cerebellum train ARGS --json`: the report, or the stderr on failure.
fn train(args: &[&str]) -> Result<serde_json::Value, (serde_json::Value, String)> {
    let mut args = [&["train"][..], args, &["--json"]].concat();
    args.retain(|a| !a.is_empty());
    let (ok, stdout, stderr) = cerebellum(&args);
    let report = last_json(&stdout);
    assert_eq!(report["ok"], ok, "{stdout}");
    if ok {
        Ok(report)
    } else {
        Err((report, stderr))
    }
}

/// Every file of a directory, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn contract(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("contract.json")).unwrap()).unwrap()
}

fn config(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

/// (iteration, env_steps) of every row of a run's metrics.csv.
fn rows(dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("iteration,env_steps,"));
    lines
        .map(|line| {
            let mut cells = line.split(',').map(|c| c.parse::<u64>().unwrap());
            (cells.next().unwrap(), cells.next().unwrap())
        })
        .collect()
}

#[test]
fn a_fork_trains_a_run_of_its_own_and_leaves_its_parent_untouched() {
    let root = fresh_dir("own");
    std::fs::create_dir_all(&root).unwrap();
    let (run, new) = (root.join("run"), root.join("new"));
    let (run_s, new_s) = (run.to_str().unwrap(), new.to_str().unwrap());
    let steps = (2 * ITERATION).to_string();
    train(&[
        "--task",
        "pendulum",
        "--steps",
        &steps,
        "--eval-episodes",
        "0",
        "--out",
        run_s,
    ])
    .unwrap();
    let parent_files = snapshot(&run);
    let parent_contract = contract(&run);
    let parent_hash = parent_contract["weights_sha256"].as_str().unwrap();
    assert_eq!(parent_hash.len(), 64);

    // Fork with a config overlay and this run's steps.
    let overlay = root.join("overlay.toml");
    std::fs::write(&overlay, "[ppo]\nlearning_rate = 1e-4\n").unwrap();
    let steps = ITERATION.to_string();
    let report = train(&[
        "--resume",
        run_s,
        "--out",
        new_s,
        "--steps",
        &steps,
        "--config",
        overlay.to_str().unwrap(),
        "--eval-episodes",
        "2",
    ])
    .unwrap();
    // Its counters go on from the parent's: this run's steps on top.
    assert_eq!(report["env_steps"], 3 * ITERATION);
    assert_eq!(report["updates"], 3);
    // It evaluates on its own.
    assert_eq!(report["eval_episodes"], 2);
    assert!(report["mean_return"].as_f64().unwrap().is_finite());
    let parent = &report["parent"];
    assert_eq!(parent["path"], run_s);
    assert_eq!(
        parent["canonical_path"],
        run.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(parent["weights_sha256"], parent_hash);
    assert_eq!(parent["updates"], 2);
    assert_eq!(parent["env_steps"], 2 * ITERATION);
    // The contract says the same.
    let forked = contract(&new);
    assert_eq!(&forked["provenance"]["parent"], parent);
    assert_eq!(forked["provenance"]["env_steps"], 3 * ITERATION);
    assert!(
        parent_contract["provenance"].get("parent").is_none(),
        "a run trained from scratch names no parent"
    );

    // NEW's config: the parent's, the overlaid key replaced, --steps and
    // --eval-episodes as given; nothing else differs.
    let (mut theirs, mut ours) = (config(&run), config(&new));
    assert_eq!(ours["ppo"]["learning_rate"].as_float(), Some(1e-4));
    assert_ne!(theirs["ppo"]["learning_rate"], ours["ppo"]["learning_rate"]);
    assert_eq!(ours["total_steps"].as_integer(), Some(ITERATION as i64));
    assert_eq!(ours["eval_episodes"].as_integer(), Some(2));
    for table in [&mut theirs, &mut ours] {
        table["ppo"].as_table_mut().unwrap().remove("learning_rate");
        table.remove("total_steps");
        table.remove("eval_episodes");
    }
    assert_eq!(theirs, ours, "every other key is the parent's");

    // NEW's files hold the fork's rows only, numbered on from the parent's.
    assert_eq!(rows(&new), [(3, 3 * ITERATION)]);
    let timing = std::fs::read_to_string(new.join("timing.csv")).unwrap();
    assert_eq!(timing.lines().count(), 2, "{timing}");
    for file in [
        "learning_curve.png",
        "checkpoint.safetensors",
        "trainer_state.json",
    ] {
        assert!(new.join(file).is_file(), "{file}");
    }
    assert_eq!(snapshot(&run), parent_files, "RUN is never written");

    // A NEW that holds a run is refused, and left as it is.
    let before = snapshot(&new);
    let (refused, stderr) = train(&["--resume", run_s, "--out", new_s]).unwrap_err();
    let error = refused["error"].as_str().unwrap();
    for needed in [new_s, "already holds a run", "choose another --out"] {
        assert!(error.contains(needed), "`{needed}` missing from: {error}");
    }
    assert!(stderr.contains("already holds a run"), "{stderr}");
    assert_eq!(snapshot(&new), before);

    // Without --steps a fork trains the resumed config's total_steps as
    // its own budget.
    let other = root.join("other");
    let report = train(&[
        "--resume",
        run_s,
        "--out",
        other.to_str().unwrap(),
        "--eval-episodes",
        "0",
    ])
    .unwrap();
    assert_eq!(report["env_steps"], 4 * ITERATION);
    assert_eq!(rows(&other), [(3, 3 * ITERATION), (4, 4 * ITERATION)]);
    assert_eq!(snapshot(&run), parent_files, "RUN is never written");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn resuming_in_place_adds_steps_and_keeps_the_parent() {
    let root = fresh_dir("in-place");
    std::fs::create_dir_all(&root).unwrap();
    let (run, new) = (root.join("run"), root.join("new"));
    let (run_s, new_s) = (run.to_str().unwrap(), new.to_str().unwrap());
    let one = ITERATION.to_string();
    train(&[
        "--task",
        "pendulum",
        "--steps",
        &one,
        "--eval-episodes",
        "0",
        "--out",
        run_s,
    ])
    .unwrap();
    // In place, --steps N trains N more, appended to the run's files; a
    // --config overlays the run's own config there too.
    let overlay = root.join("overlay.toml");
    std::fs::write(&overlay, "[ppo]\nepochs = 2\n").unwrap();
    let report = train(&[
        "--resume",
        run_s,
        "--steps",
        &one,
        "--config",
        overlay.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(report["env_steps"], 2 * ITERATION);
    assert_eq!(report["parent"], serde_json::Value::Null);
    assert_eq!(rows(&run), [(1, ITERATION), (2, 2 * ITERATION)]);
    let resumed = config(&run);
    assert_eq!(resumed["ppo"]["epochs"].as_integer(), Some(2));
    assert_eq!(resumed["task"].as_str(), Some("pendulum"));
    // config.toml says the run's new total: resumed again without
    // --steps, it has nothing left to do.
    assert_eq!(
        resumed["total_steps"].as_integer(),
        Some(2 * ITERATION as i64)
    );
    let report = train(&["--resume", run_s, "--eval-episodes", "0"]).unwrap();
    assert_eq!(report["env_steps"], 2 * ITERATION);

    // A fork resumed in place keeps its parent, and its total_steps count
    // from the fork: with a budget of 3 iterations of which 2 are done (a
    // fork stopped early), it makes the third.
    train(&[
        "--resume",
        run_s,
        "--out",
        new_s,
        "--steps",
        &(2 * ITERATION).to_string(),
        "--eval-episodes",
        "0",
    ])
    .unwrap();
    let parent = contract(&new)["provenance"]["parent"].clone();
    assert_eq!(parent["updates"], 2);
    let mut stopped = config(&new);
    stopped["total_steps"] = toml::Value::Integer(3 * ITERATION as i64);
    std::fs::write(new.join("config.toml"), toml::to_string(&stopped).unwrap()).unwrap();
    let report = train(&["--resume", new_s]).unwrap();
    assert_eq!(report["env_steps"], 5 * ITERATION, "2 + 3 iterations");
    assert_eq!(report["parent"], parent);
    assert_eq!(contract(&new)["provenance"]["parent"], parent);
    assert_eq!(
        rows(&new),
        [(3, 3 * ITERATION), (4, 4 * ITERATION), (5, 5 * ITERATION)]
    );
    let _ = std::fs::remove_dir_all(root);
}
