//! RL fine-tuning of a cloned VLA through the CLI (`train --resume VLA_RUN
//! --out NEW`): each scope trains, the run evaluates before and after,
//! the checkpoint it writes loads on its own through the base it names,
//! a wrong base and a run that would not fit its memory are refused, and
//! the same seed repeats the run exactly.

mod common;

use common::{cerebellum, last_json};
use std::path::{Path, PathBuf};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-vla-finetune-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A small cloned VLA (the pipeline, not the learning).
fn clone_base(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let config = write(
        &dir.join("base.toml"),
        "eval_episodes = 2\n[vla]\nexpert_episodes = 3\nsteps = 4\neval_every = 4\neval_episodes = 1\n\
         batch_size = 16\n[vla.model]\nhorizon = 4\nconv_channels = [8, 8]\nconv_kernels = [5, 3]\n\
         conv_strides = [2, 2]\nhead_hidden = [32]\n",
    );
    let out = dir.join(name);
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--task",
        "reach-color",
        "--policy",
        "vla",
        "--seed",
        seed,
        "--config",
        &config,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    out
}

/// `train --resume base --out out` with the overlay `overlay`.
fn finetune(base: &Path, out: &Path, overlay: &str) -> (bool, serde_json::Value, String) {
    let config = write(&out.with_extension("toml"), overlay);
    let (ok, stdout, stderr) = cerebellum(&[
        "train",
        "--resume",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        &config,
        "--json",
    ]);
    (ok, last_json(&stdout), format!("{stdout}\n{stderr}"))
}

fn overlay(train: &str, algo: &str) -> String {
    format!(
        "total_steps = 128\nenvs = 4\nrollout_steps = 16\ngroup = 2\neval_episodes = 2\nalgo = \"{algo}\"\n\
         [ppo]\nepochs = 2\nminibatch_size = 8\n[finetune]\ntrain = \"{train}\"\nexecute = 2\n"
    )
}

#[test]
fn each_scope_fine_tunes_and_its_checkpoint_loads_through_its_base() {
    let dir = fresh_dir("scopes");
    let base = clone_base(&dir, "base", "0");
    let mut parameters = None;
    for (train, algo) in [
        ("head", "ppo"),
        ("lora", "ppo"),
        ("all", "ppo"),
        ("head", "grpo"),
    ] {
        let out = dir.join(format!("{train}-{algo}"));
        let (ok, report, output) = finetune(&base, &out, &overlay(train, algo));
        assert!(ok, "{train} {algo}: {output}");
        assert_eq!(report["finetune"]["train"], train, "{output}");
        assert!(report["success_rate_before"].is_number(), "{output}");
        assert!(report["success_rate"].is_number(), "{output}");
        assert!(report["updates"].as_u64().unwrap() >= 1, "{output}");
        let total = report["parameters"].as_u64().unwrap();
        let trained = report["trained_parameters"].as_u64().unwrap();
        parameters.get_or_insert(total);
        match train {
            "all" => assert_eq!(trained, total),
            _ => assert!(trained < total, "{train}: {trained} of {total}"),
        }
        for file in [
            "config.toml",
            "metrics.csv",
            "checkpoint.safetensors",
            "contract.json",
            "tokenizer.json",
        ] {
            assert!(out.join(file).is_file(), "{train}: {file}");
        }
        let contract: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("contract.json")).unwrap()).unwrap();
        let finetune = &contract["vla"]["finetune"];
        assert_eq!(finetune["settings"]["train"], train);
        assert_eq!(finetune["base"].is_null(), train == "all", "{finetune}");
        // eval works on the fine-tuned checkpoint alone, playing chunks as
        // it was trained.
        let (ok, stdout, stderr) = cerebellum(&[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--episodes",
            "2",
            "--json",
        ]);
        assert!(ok, "{stdout}\n{stderr}");
        let eval = last_json(&stdout);
        assert_eq!(eval["execute"], 2);
        assert!(eval["success_rate"].is_number());
    }

    // An adapter on another base is refused, naming both hashes.
    let lora = dir.join("lora-ppo");
    let other = clone_base(&dir, "other", "5");
    let hash = |run: &Path| -> String {
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("contract.json")).unwrap()).unwrap();
        c["weights_sha256"].as_str().unwrap().to_owned()
    };
    let (base_hash, other_hash) = (hash(&base), hash(&other));
    assert_ne!(base_hash, other_hash);
    for file in ["checkpoint.safetensors", "contract.json"] {
        std::fs::copy(other.join(file), base.join(file)).unwrap();
    }
    let (ok, stdout, stderr) = cerebellum(&[
        "eval",
        "--checkpoint",
        lora.to_str().unwrap(),
        "--episodes",
        "1",
        "--json",
    ]);
    assert!(!ok);
    let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&base_hash) && error.contains(&other_hash),
        "{error}\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_fine_tunes_are_refused_before_training() {
    let dir = fresh_dir("refusals");
    let base = clone_base(&dir, "base", "0");
    // Would not fit its memory budget: refused before the run directory
    // is written.
    let out = dir.join("too-big");
    let (ok, report, output) = finetune(
        &base,
        &out,
        &format!(
            "{}memory_budget_mib = 64\n",
            overlay("all", "ppo").replace("rollout_steps = 16", "rollout_steps = 4096")
        ),
    );
    assert!(!ok, "{output}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("finetune.memory_budget_mib = 64"), "{error}");
    assert!(!out.join("config.toml").exists());
    // Bad keys, by name.
    for (key, text) in [
        ("finetune.lora_rank", "lora_rank = 0\n"),
        ("finetune.execute", "execute = 9\n"),
        ("finetune.log_std", "log_std = 5.0\n"),
        ("train", "train = \"everything\"\n"),
    ] {
        let out = dir.join("bad");
        let text = format!(
            "{}{text}",
            overlay("head", "ppo").replace("execute = 2\n", "")
        );
        let (ok, report, output) = finetune(&base, &out, &text);
        assert!(!ok, "{key}: {output}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(key), "{key}: {error}");
    }
    // A fine-tune continues into a run of its own, never over its base.
    let (ok, report, output) = finetune(&base, &base, &overlay("head", "ppo"));
    assert!(!ok, "{output}");
    assert!(
        report["error"].as_str().unwrap().contains("--out NEW"),
        "{output}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fine_tune_repeats_exactly() {
    let dir = fresh_dir("repeat");
    let base = clone_base(&dir, "base", "0");
    let run = |name: &str| {
        let out = dir.join(name);
        let (ok, _, output) = finetune(&base, &out, &overlay("lora", "ppo"));
        assert!(ok, "{output}");
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

/// `train --online --resume VLA_RUN` in lockstep (simulated time): the
/// loop plays chunks from the inference worker while the learner thread
/// fine-tunes the head beside it; the same seed gives the same learner
/// and the same weights, and the checkpoint loads through its base.
#[test]
fn the_online_learner_fine_tunes_a_vla_in_lockstep_repeatably() {
    let dir = fresh_dir("online");
    let base = clone_base(&dir, "base", "0");
    let settings = write(
        &dir.join("online.toml"),
        "eval_episodes = 2\n[online]\nbatch_transitions = 64\n[ppo]\nepochs = 2\nminibatch_size = 8\n\
         [finetune]\ntrain = \"head\"\nexecute = 2\n",
    );
    let tune = |name: &str| {
        let out = dir.join(name);
        let (ok, stdout, stderr) = cerebellum(&[
            "train",
            "--online",
            "--resume",
            base.to_str().unwrap(),
            "--config",
            &settings,
            "--out",
            out.to_str().unwrap(),
            "--clock",
            "sim",
            "--duration",
            "4",
            "--json",
        ]);
        assert!(ok, "{stdout}\n{stderr}");
        (
            last_json(&stdout),
            std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        )
    };
    let (a, weights_a) = tune("a");
    assert_eq!(a["ticks"], 200, "{a}");
    assert_eq!(a["deadline_misses"], 0, "{a}");
    assert_eq!(a["stale_chunks"], 0, "{a}");
    // Chunks of 4 with 2 left when the next is asked: 2 played of each.
    assert_eq!(a["chunks"], 100, "{a}");
    assert!(a["learner"]["updates"].as_u64().unwrap() >= 2, "{a}");
    assert!(a["learner"]["failure"].is_null(), "{a}");
    let (b, weights_b) = tune("b");
    assert_eq!(a["learner"], b["learner"], "lockstep is repeatable");
    assert!(weights_a == weights_b, "the weights differ");
    let (ok, stdout, stderr) = cerebellum(&[
        "eval",
        "--checkpoint",
        dir.join("a").to_str().unwrap(),
        "--episodes",
        "2",
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
