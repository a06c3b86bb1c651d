//! A stage-aware progress model trained on recorded lift demonstrations
//! ranks held-out successful episodes in time.

use cerebellum_reward_models::evaluation::spearman;
use cerebellum_reward_models::progress::{AnnotatedEpisode, ProgressConfig, ProgressModel};
use std::process::Command;

#[test]
fn a_progress_model_trained_on_lift_demonstrations_orders_held_out_episodes() {
    let out = std::env::temp_dir().join(format!("cerebellum-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args([
            "record",
            "--task",
            "lift",
            "--expert",
            "--episodes",
            "14",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (meta, episodes) = cerebellum_runtime::recorder::read_episodes(&out).unwrap();
    let annotated: Vec<AnnotatedEpisode> = episodes
        .iter()
        .map(|e| AnnotatedEpisode {
            states: e.iter().map(|t| t.observation.state.clone()).collect(),
            stages: e.iter().map(|t| t.stage.unwrap()).collect(),
        })
        .collect();
    let (train, held_out) = annotated.split_at(10);
    let model = ProgressModel::train(train, meta.stages.len(), &ProgressConfig::default()).unwrap();
    let mut worst = f64::INFINITY;
    for episode in held_out {
        let progress = model.predict(&episode.states).unwrap();
        let time: Vec<f64> = (0..progress.len()).map(|t| t as f64).collect();
        let rho = spearman(&time, &progress).unwrap();
        worst = worst.min(rho);
    }
    println!(
        "held-out Spearman (worst of {}): {worst:.3}",
        held_out.len()
    );
    assert!(worst >= 0.95, "held-out Spearman {worst}");
}
