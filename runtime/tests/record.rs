//! `cerebellum record`: stage-annotated expert demonstrations on disk.

use std::process::Command;

#[test]
fn recorded_expert_episodes_carry_their_stages_in_order() {
    for (task, stages) in [
        ("reach", vec!["approach", "settle"]),
        ("lift", vec!["approach", "grasp", "lift", "hold"]),
        ("reach-color", vec!["approach", "settle"]),
        ("lift-color", vec!["approach", "grasp", "lift", "hold"]),
    ] {
        let out =
            std::env::temp_dir().join(format!("cerebellum-record-{task}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
            .args([
                "record",
                "--task",
                task,
                "--expert",
                "--episodes",
                "2",
                "--json",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (meta, episodes) = cerebellum_runtime::recorder::read_episodes(&out).unwrap();
        assert_eq!(meta.stages, stages);
        assert_eq!(episodes.len(), 2);
        for episode in &episodes {
            let seen: Vec<u32> = episode
                .iter()
                .map(|t| t.stage.expect("annotated"))
                .collect();
            // Every stage appears, in order, each once as a run.
            let mut runs = seen.clone();
            runs.dedup();
            assert_eq!(
                runs,
                (0..stages.len() as u32).collect::<Vec<_>>(),
                "{task}: {seen:?}"
            );
            assert!(episode.last().unwrap().terminated || episode.last().unwrap().truncated);
            // The colour tasks: the episode's one instruction and the
            // camera's image on every tick.
            if task.ends_with("-color") {
                let instruction = episode[0].observation.instruction.clone().unwrap();
                assert!(
                    ["red", "green", "blue"]
                        .iter()
                        .any(|c| instruction.contains(c))
                );
                for t in episode {
                    assert_eq!(t.observation.instruction.as_ref(), Some(&instruction));
                    assert_eq!(t.observation.images.len(), 1);
                }
            }
        }
    }
}
