//! The vision-language policy through the CLI: `train --policy vla` writes
//! a run (config, metrics, curve, checkpoint with its tokenizer), `eval`
//! and `run` take that checkpoint, bad input is refused naming the field.

mod common;

use common::{cerebellum, last_json};
use std::path::{Path, PathBuf};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cerebellum-vla-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A few demonstrations and steps: the pipeline, not the learning.
fn tiny_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        "eval_episodes = 3\n[vla]\nexpert_episodes = 4\nsteps = 6\neval_every = 3\neval_episodes = 2\n\
         dagger_rounds = 1\ndagger_episodes = 2\ndagger_steps = 3\nbatch_size = 16\n\
         [vla.model]\nhorizon = 4\nconv_channels = [8, 8]\nconv_kernels = [5, 3]\nconv_strides = [2, 2]\n\
         head_hidden = [32]\n",
    )
    .unwrap();
    path
}

#[test]
fn train_eval_and_run_a_vla_checkpoint() {
    let dir = fresh_dir("pipeline");
    let config = tiny_config(&dir);
    let out = dir.join("run");
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let report = last_json(&stdout);
    assert_eq!(report["policy"], "vla");
    assert_eq!(report["steps"], 9);
    assert_eq!(report["dagger_rounds"][0]["episodes"], 2);
    assert!(report["success_rate"].is_number());
    assert!(report["success_rate_heldout_phrasings"].is_number());
    assert!(report["success_by_color"].is_object());
    for file in [
        "config.toml",
        "metrics.csv",
        "learning_curve.png",
        "checkpoint.safetensors",
        "contract.json",
        "tokenizer.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 3, "{metrics}");
    let config_toml = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config_toml.contains("policy_kind = \"vla\""),
        "{config_toml}"
    );

    // eval: any kind, by its contract; --blank-image is the ablation.
    for blank in [false, true] {
        let mut args = vec![
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--episodes",
            "3",
            "--json",
        ];
        if blank {
            args.push("--blank-image");
        }
        let (ok, stdout, stderr) = cerebellum(&args);
        assert!(ok, "{stdout}\n{stderr}");
        let report = last_json(&stdout);
        assert_eq!(report["policy"], "vla");
        assert_eq!(report["blank_image"], blank);
        assert_eq!(report["episodes"], 3);
        assert!(report["success_rate_heldout_phrasings"].is_number());
    }

    // run: the operator's instruction, chunks on the inference worker.
    let (ok, stdout, stderr) = cerebellum(&[
        "run",
        "--checkpoint",
        out.to_str().unwrap(),
        "--clock",
        "sim",
        "--instruction",
        "touch the green marker",
        "--episodes",
        "1",
        "--duration",
        "30",
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let report = last_json(&stdout);
    assert_eq!(report["policy"], "vla");
    assert_eq!(report["chunk_length"], 4);
    assert_eq!(report["inference"], "worker");
    assert_eq!(report["instruction"], "touch the green marker");
    assert_eq!(report["episodes"], 1);
    assert_eq!(report["policy_errors"], 0);
    // One inference per chunk, not per tick: the 100 ticks of the episode
    // take about 100 / (4 − 2) chunks.
    let chunks = report["chunks"].as_u64().unwrap();
    assert!((40..=60).contains(&chunks), "{chunks} chunks");
    assert_eq!(report["stale_chunks"], 0);
    assert!(report["inference_delay_p99_us"].as_u64().unwrap() > 0);

    // An instruction that names no colour of the task is refused, named.
    let (ok, stdout, _) = cerebellum(&[
        "run",
        "--checkpoint",
        out.to_str().unwrap(),
        "--clock",
        "sim",
        "--instruction",
        "touch the purple marker",
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("instruction") && error.contains("red, green, blue"),
        "{error}"
    );

    // A tampered tokenizer: refused, naming the field; nothing runs.
    std::fs::write(out.join("tokenizer.json"), "{}").unwrap();
    let (ok, stdout, _) = cerebellum(&[
        "eval",
        "--checkpoint",
        out.to_str().unwrap(),
        "--episodes",
        "1",
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("vla.tokenizer.sha256"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_vla_settings_and_tasks_are_refused_by_name() {
    let dir = fresh_dir("refusals");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[vla.model]\nconv_kernels = [5, 4, 3]\n").unwrap();
    let (ok, stdout, _) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("a").to_str().unwrap(),
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("vla.model.conv_kernels"), "{error}");
    std::fs::write(&bad, "[vla]\nstepz = 3\n").unwrap();
    let (ok, stdout, _) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("b").to_str().unwrap(),
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("stepz"), "{error}");
    // reach has no camera: the VLA cannot see it.
    let (ok, stdout, _) = cerebellum(&[
        "train",
        "--task",
        "reach",
        "--policy",
        "vla",
        "--out",
        dir.join("c").to_str().unwrap(),
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("camera"), "{error}");
    let (ok, _, stderr) = cerebellum(&["train", "--policy", "transformer"]);
    assert!(!ok);
    assert!(stderr.contains("known: mlp, vla"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The VLA learns reach-color from its own demonstrations, and it looks:
/// a short cloning run (untimed; about nine minutes on 2 cores, a quarter
/// of the default's steps) succeeds far more often than the same
/// checkpoint with every frame blanked, which cannot find the marker
/// (without word dropout, which slows the first thousands of steps).
#[test]
fn the_vla_learns_reach_color_well_beyond_blank_images() {
    let dir = fresh_dir("learns");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("short.toml");
    std::fs::write(
        &config,
        "eval_episodes = 0\n[vla]\nexpert_episodes = 300\nsteps = 2500\n\
         eval_every = 2500\neval_episodes = 0\nword_dropout = 0.0\n",
    )
    .unwrap();
    let out = dir.join("run");
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let eval = |blank: bool| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--episodes",
            "40",
            "--envs",
            "20",
            "--json",
        ];
        if blank {
            args.push("--blank-image");
        }
        let (ok, stdout, stderr) = cerebellum(&args);
        assert!(ok, "{stdout}\n{stderr}");
        last_json(&stdout)["success_rate"].as_f64().unwrap()
    };
    let (seeing, blind) = (eval(false), eval(true));
    assert!(
        seeing >= 0.3 && blind <= 0.05 && seeing >= blind + 0.25,
        "success {seeing} with the camera, {blind} with blank frames"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Same seed and config, same demonstrations, same learning curve, same
/// weights.
#[test]
fn a_vla_run_repeats_exactly() {
    let dir = fresh_dir("repeat");
    let config = tiny_config(&dir);
    let run = |name: &str| {
        let out = dir.join(name);
        let (ok, stdout, stderr) = cerebellum(&[
            "train",
            "--task",
            "reach-color",
            "--policy",
            "vla",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(ok, "{stdout}\n{stderr}");
        (
            std::fs::read(out.join("metrics.csv")).unwrap(),
            std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        )
    };
    let (a, b) = (run("a"), run("b"));
    assert!(a.0 == b.0, "metrics.csv differs");
    assert!(a.1 == b.1, "weights differ");
    std::fs::remove_dir_all(&dir).unwrap();
}
