//! A stage-aware progress model trained on recorded lift demonstrations
//! ranks held-out successful episodes in time (`cerebellum record`,
//! `cerebellum reward train|eval`).

use cerebellum_reward_models::progress::{AnnotatedEpisode, ProgressConfig, ProgressModel};
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

#[test]
fn a_success_classifier_trained_on_labelled_lift_frames_finds_success_on_held_out_ones() {
    use cerebellum_reward_models::fields::FieldSelection;
    use cerebellum_reward_models::success::{SuccessClassifier, SuccessDetector};
    use cerebellum_sim::TaskKind;
    let base = std::env::temp_dir().join(format!("cerebellum-success-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    // Clean demonstrations succeed; noisy ones mostly fail: both classes.
    let (clean, noisy) = (base.join("clean"), base.join("noisy"));
    record("lift", "10", "0", &clean);
    let (ok, _, stderr) = cerebellum(&[
        "record",
        "--task",
        "lift",
        "--expert",
        "--noise",
        "0.05",
        "--episodes",
        "8",
        "--seed",
        "500",
        "--out",
        noisy.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let mut episodes = Vec::new();
    let mut spec = None;
    for dir in [&clean, &noisy] {
        let (meta, mut e) = cerebellum_runtime::recorder::read_episodes(dir).unwrap();
        spec = Some(meta.robot.observation);
        episodes.append(&mut e);
    }
    let spec = spec.unwrap();
    // Frames labelled by the simulator's success test at that instant.
    let label = |episode: &Vec<cerebellum_core::Transition>| -> Vec<(Vec<f32>, bool)> {
        let start = spec
            .field(&episode[0].observation.state, "cube_position")
            .unwrap()[2];
        episode
            .iter()
            .map(|t| {
                let s = t.observation.state.clone();
                let y =
                    cerebellum_sim::tasks::success_state(TaskKind::Lift, &spec, &s, start).unwrap();
                (s, y)
            })
            .collect()
    };
    // Held out: the last two clean and last two noisy episodes.
    let held: Vec<usize> = vec![8, 9, 16, 17];
    let train: Vec<(Vec<f32>, bool)> = (0..episodes.len())
        .filter(|i| !held.contains(i))
        .flat_map(|i| label(&episodes[i]))
        .collect();
    let model = SuccessClassifier::train(&train, &FieldSelection::all(), 64, 400, 0).unwrap();
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for &i in &held {
        let frames = label(&episodes[i]);
        let states: Vec<Vec<f32>> = frames.iter().map(|f| f.0.clone()).collect();
        for (p, (_, y)) in model.predict(&states).unwrap().iter().zip(&frames) {
            match (p.unwrap() >= 0.9, *y) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    println!(
        "held-out frames at threshold 0.9: precision {precision:.3}, recall {recall:.3} ({tp} tp, {fp} fp, {fn_} fn)"
    );
    assert!(
        precision >= 0.85 && recall >= 0.95,
        "precision {precision}, recall {recall}"
    );
    // As a terminator (threshold 0.9, 5 frames) it ends the clean held-out
    // episodes and no episode before the cube is up.
    for &i in &held[..2] {
        let states: Vec<Vec<f32>> = episodes[i]
            .iter()
            .map(|t| t.observation.state.clone())
            .collect();
        let mut detector = SuccessDetector::new(0.9, 5);
        let fired = model
            .predict(&states)
            .unwrap()
            .into_iter()
            .position(|p| detector.observe(p));
        let first_up = label(&episodes[i]).iter().position(|f| f.1);
        assert!(
            fired.is_some() && fired >= first_up,
            "fired {fired:?}, cube up at {first_up:?}"
        );
    }
}

#[test]
fn an_ensembles_spread_is_larger_off_the_demonstrations_than_on_them() {
    use cerebellum_reward_models::ensemble::{Aggregate, aggregate};
    let base = std::env::temp_dir().join(format!("cerebellum-ensemble-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (clean, unseen, noisy) = (base.join("clean"), base.join("unseen"), base.join("noisy"));
    record("lift", "8", "0", &clean);
    record("lift", "3", "900", &unseen);
    let (ok, _, stderr) = cerebellum(&[
        "record",
        "--task",
        "lift",
        "--expert",
        "--noise",
        "0.08",
        "--episodes",
        "3",
        "--seed",
        "700",
        "--out",
        noisy.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let load = |dir: &Path| {
        let (meta, episodes) = cerebellum_runtime::recorder::read_episodes(dir).unwrap();
        let annotated: Vec<AnnotatedEpisode> = episodes
            .iter()
            .map(|e| AnnotatedEpisode {
                states: e.iter().map(|t| t.observation.state.clone()).collect(),
                stages: e.iter().map(|t| t.stage.unwrap()).collect(),
            })
            .collect();
        (meta.stages.len(), annotated)
    };
    let (stages, train) = load(&clean);
    // Members differ in their initialisation seed.
    let members: Vec<ProgressModel> = (0..3)
        .map(|seed| {
            let config = ProgressConfig {
                seed,
                epochs: 200,
                ..ProgressConfig::default()
            };
            ProgressModel::train(&train, stages, &config).unwrap()
        })
        .collect();
    let mean_std = |episodes: &[AnnotatedEpisode]| {
        let (mut sum, mut n) = (0.0, 0);
        for e in episodes {
            let predictions: Vec<Vec<f64>> = members
                .iter()
                .map(|m| m.predict(&e.states).unwrap())
                .collect();
            for t in 0..e.states.len() {
                let scores: Vec<f64> = predictions.iter().map(|p| p[t]).collect();
                sum += aggregate(&scores, Aggregate::Mean).unwrap().std;
                n += 1;
            }
        }
        sum / n as f64
    };
    let (on, off) = (mean_std(&load(&unseen).1), mean_std(&load(&noisy).1));
    println!("ensemble std: {on:.4} on unseen clean demonstrations, {off:.4} on noisy ones");
    assert!(
        off > on,
        "spread off the demonstrations {off} vs on them {on}"
    );
}

/// `train --reward progress:DIR,success:DIR --init-bc DATA`: the policy is
/// cloned from recordings with RA-BC weights, then PPO trains on the
/// learned components only, each stamped with the models' version; a model
/// of another robot is refused at load, naming why.
#[test]
fn training_on_learned_rewards_from_recordings_end_to_end() {
    let base = std::env::temp_dir().join(format!("cerebellum-learned-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (clean, noisy, lift) = (base.join("clean"), base.join("noisy"), base.join("lift"));
    record("reach", "8", "0", &clean);
    let (ok, _, stderr) = cerebellum(&[
        "record",
        "--task",
        "reach",
        "--expert",
        "--noise",
        "0.1",
        "--episodes",
        "8",
        "--seed",
        "100",
        "--out",
        noisy.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (progress, success) = (base.join("progress"), base.join("success"));
    let (ok, _, stderr) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--epochs",
        "60",
        "--held-out",
        "2",
        "--data",
        clean.to_str().unwrap(),
        "--out",
        progress.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let train_success = |fields: &str, out: &Path| {
        cerebellum(&[
            "reward",
            "train",
            "--kind",
            "success",
            "--task",
            "reach",
            "--epochs",
            "400",
            "--held-out",
            "2",
            "--data",
            clean.to_str().unwrap(),
            "--data",
            noisy.to_str().unwrap(),
            "--fields",
            fields,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
    };
    let (ok, trained, stderr) = train_success("target_offset", &success);
    assert!(ok, "{stderr}");
    assert!(trained["success_precision"].is_number(), "{trained}");
    assert_eq!(trained["fields"], serde_json::json!(["target_offset"]));
    let contract: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(success.join("reward_model.json")).unwrap())
            .unwrap();
    assert_eq!(contract["fields"], serde_json::json!(["target_offset"]));
    let (ok, _, stderr) = train_success("target_offset,speed", &base.join("refused-fields"));
    assert!(
        !ok && stderr.contains("no field `speed`") && stderr.contains("target_offset"),
        "{stderr}"
    );
    let reward = format!(
        "progress:{},success:{}",
        progress.display(),
        success.display()
    );
    let out = base.join("run");
    let (ok, report, stderr) = cerebellum(&[
        "train",
        "--reward",
        &reward,
        "--init-bc",
        clean.to_str().unwrap(),
        "--steps",
        "2048",
        "--eval-episodes",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        report["reward_components"],
        serde_json::json!({"progress": 1.0, "success_model": 1.0})
    );
    assert_eq!(report["reward_version"], 2, "progress v1 + success v1");
    let demos = &report["bc"]["demonstrations"];
    assert_eq!(demos["successful"], 8, "{report}");
    let mean_weight = demos["mean_weight"].as_f64().unwrap();
    assert!(
        mean_weight > 0.0 && mean_weight < 1.0,
        "RA-BC weights: {demos}"
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("[reward]") && config.contains("ra_bc_progress"),
        "{config}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.lines().nth(1).unwrap().contains(",2,"), "{metrics}");
    // The hacking monitor: learned Φ against the simulator's reward.
    assert!(
        metrics.starts_with("iteration")
            && metrics
                .lines()
                .next()
                .unwrap()
                .contains("learned_truth_pearson,progress_mean")
    );
    let monitor = report["learned_truth_pearson_last"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&monitor), "{report}");

    // A lift model on the reach arm: refused before anything runs.
    record("lift", "3", "0", &lift);
    let lift_model = base.join("lift-progress");
    let (ok, _, stderr) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--epochs",
        "10",
        "--held-out",
        "1",
        "--data",
        lift.to_str().unwrap(),
        "--out",
        lift_model.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cerebellum(&[
        "train",
        "--reward",
        &format!("progress:{}", lift_model.display()),
        "--steps",
        "64",
        "--out",
        base.join("refused").to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("another observation spec"),
        "{stderr}"
    );
}

/// With `--image-pool`, the progress model also reads the camera: the
/// pooled image is part of its input and its contract, and a robot without
/// that camera is refused.
#[test]
fn a_progress_model_can_read_the_camera() {
    let base = std::env::temp_dir().join(format!("cerebellum-camera-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let env = base.join("camera.toml");
    std::fs::write(&env, "[camera]\nwidth = 24\nheight = 16\n").unwrap();
    let data = base.join("data");
    let (ok, _, stderr) = cerebellum(&[
        "record",
        "--task",
        "reach",
        "--expert",
        "--episodes",
        "4",
        "--env-config",
        env.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let model = base.join("model");
    let (ok, trained, stderr) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--image-pool",
        "4",
        "--epochs",
        "30",
        "--held-out",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert!(trained["progress_spearman"].is_number(), "{trained}");
    let contract: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("reward_model.json")).unwrap())
            .unwrap();
    assert_eq!(contract["image_pool"], 4);
    let (ok, eval, stderr) = cerebellum(&[
        "reward",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--task",
        "reach",
        "--json",
    ]);
    assert!(ok && eval["epic_distance"].is_number(), "{stderr}");
    // Without the camera the spec differs: refused at load.
    let plain = base.join("plain");
    record("reach", "2", "0", &plain);
    let (ok, _, stderr) = cerebellum(&[
        "reward",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        plain.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("cameras: expected `front`"),
        "{stderr}"
    );
    // And a state-only recording cannot train an image model.
    let (ok, _, stderr) = cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--image-pool",
        "4",
        "--data",
        plain.to_str().unwrap(),
        "--held-out",
        "1",
        "--out",
        base.join("no").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("camera images"), "{stderr}");
}
