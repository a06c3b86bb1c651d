//! Checkpoints: save → load gives identical actions; a contract that does
//! not fit the robot, and a truncated or corrupt file, are errors that say
//! what is wrong.

use cerebellum_core::{
    ActionSpec, FieldSpec, Observation, ObservationSpec, Policy, RobotSpec, Sampling, Unit,
};
use cerebellum_policies::checkpoint::{self, CheckpointError, ParentRun, TrainingProvenance};
use cerebellum_policies::{ActionMode, GaussianConfig, GaussianMlpPolicy};
use std::path::PathBuf;

fn spec() -> RobotSpec {
    let joints = ["shoulder", "elbow"];
    RobotSpec {
        name: "two_link".into(),
        observation: ObservationSpec {
            fields: vec![
                FieldSpec::new("joint_position", Unit::Radian, &joints, &[(-2.0, 2.0); 2]),
                FieldSpec::new("target", Unit::Meter, &["x", "y"], &[(-1.0, 1.0); 2]),
            ],
            cameras: vec![],
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "joint_target",
                Unit::Radian,
                &joints,
                &[(-1.5, 1.5); 2],
            )],
        },
        control_rate_hz: 50.0,
    }
}

fn observations() -> Vec<Observation> {
    (0..5)
        .map(|i| Observation {
            state: vec![0.1 * i as f32, -0.3, 0.5, -0.2 * i as f32],
            images: vec![],
            instruction: None,
            timestamp: 0.0,
        })
        .collect()
}

fn trained_policy() -> GaussianMlpPolicy {
    let config = GaussianConfig {
        hidden: vec![16, 16],
        init_log_std: -0.7,
        action_mode: ActionMode::Delta { max_step: 0.2 },
    };
    let mut policy = GaussianMlpPolicy::new(&spec(), config, 11).unwrap();
    // Make the weights and statistics non-trivial, as after training.
    for (k, p) in policy.actor.params_mut().iter_mut().enumerate() {
        *p += 0.01 * ((k * 7919) % 13) as f32 - 0.06;
    }
    let states: Vec<f32> = observations()
        .iter()
        .flat_map(|o| o.state.clone())
        .collect();
    policy.normalizer.update(&states);
    policy.set_version(42);
    policy
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cerebellum-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn save_then_load_gives_identical_actions() {
    let mut policy = trained_policy();
    let dir = temp_dir("roundtrip");
    checkpoint::save(
        &dir,
        &policy,
        TrainingProvenance {
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut loaded, contract) = checkpoint::load(&dir, Some(&spec())).unwrap();
    assert_eq!(contract.policy_version, 42);
    assert_eq!(contract.provenance.seed, 3);
    assert!(
        contract.normalizer.frozen,
        "the saved statistics are frozen"
    );
    assert_eq!(loaded.version(), 42);
    for sampling in [Sampling::Deterministic, Sampling::Stochastic { seed: 9 }] {
        let a = policy.act(&observations(), sampling).unwrap();
        let b = loaded.act(&observations(), sampling).unwrap();
        assert_eq!(a, b);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A forked run's contract names its parent; contracts without one (from
/// scratch, or written before forks existed) load and stay without one.
#[test]
fn the_parent_of_a_fork_round_trips_and_older_contracts_load_without_one() {
    let policy = trained_policy();
    let dir = temp_dir("parent");
    let parent = ParentRun {
        path: "runs/reach-s0".into(),
        canonical_path: "/home/me/runs/reach-s0".into(),
        weights_sha256: "ab".repeat(32),
        updates: 7,
        env_steps: 28_672,
    };
    let provenance = TrainingProvenance {
        seed: 3,
        updates: 9,
        parent: Some(parent.clone()),
        ..Default::default()
    };
    checkpoint::save(&dir, &policy, provenance).unwrap();
    let (_, contract) = checkpoint::load(&dir, Some(&spec())).unwrap();
    assert_eq!(contract.provenance.parent, Some(parent));

    // No parent: no key written, and a contract without the key loads.
    checkpoint::save(&dir, &policy, TrainingProvenance::default()).unwrap();
    let text = std::fs::read_to_string(dir.join(checkpoint::CONTRACT_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json["provenance"].get("parent").is_none(), "{text}");
    assert_eq!(
        checkpoint::load_contract(&dir).unwrap().provenance.parent,
        None
    );

    // Unknown keys in a parent are refused, as everywhere in a contract.
    let mut json = json;
    json["provenance"]["parent"] = serde_json::json!({
        "path": "a", "canonical_path": "/a", "weights_sha256": "", "updates": 0,
        "env_steps": 0, "grandparent": "b"
    });
    std::fs::write(
        dir.join(checkpoint::CONTRACT_FILE),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    let error = checkpoint::load_contract(&dir).unwrap_err().to_string();
    assert!(error.contains("grandparent"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_robot_that_differs_is_refused_naming_the_field() {
    let policy = trained_policy();
    let dir = temp_dir("mismatch");
    checkpoint::save(&dir, &policy, TrainingProvenance::default()).unwrap();
    let expect = |robot: RobotSpec, needle: &str| {
        let err = checkpoint::load(&dir, Some(&robot))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(needle), "`{err}` should mention `{needle}`");
    };
    let mut renamed = spec();
    renamed.action.fields[0].elements[1] = "wrist".into();
    expect(renamed, "wrist");
    let mut rate = spec();
    rate.control_rate_hz = 30.0;
    expect(rate, "30 Hz");
    let mut limits = spec();
    limits.observation.fields[1].upper[0] = 2.0;
    expect(limits, "target[x]");
    let mut unit = spec();
    unit.observation.fields[1].unit = Unit::Radian;
    expect(unit, "target");
    let mut fields = spec();
    fields.observation.fields.pop();
    expect(fields, "observation fields");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_or_corrupt_files_are_errors_not_panics() {
    let policy = trained_policy();
    let dir = temp_dir("corrupt");
    checkpoint::save(&dir, &policy, TrainingProvenance::default()).unwrap();
    let weights = dir.join(checkpoint::WEIGHTS_FILE);
    let good = std::fs::read(&weights).unwrap();

    for cut in [0, 7, good.len() / 2, good.len() - 1] {
        std::fs::write(&weights, &good[..cut]).unwrap();
        match checkpoint::load(&dir, Some(&spec())) {
            Err(CheckpointError::Weights { .. }) => {}
            other => panic!("truncated at {cut}: {:?}", other.map(|_| ())),
        }
    }
    // A NaN where a weight was: the weights hash refuses it, naming the
    // tensor; saved with a NaN (the hash matching), the finiteness check
    // names the value.
    let mut nan = good.clone();
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, &nan).unwrap();
    let err = checkpoint::load(&dir, Some(&spec()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tensor `log_std` has SHA-256"), "{err}");
    let contract = dir.join(checkpoint::CONTRACT_FILE);
    let text = std::fs::read_to_string(&contract).unwrap();
    let hash = cerebellum_policies::weights_hash::hash(
        &safetensors::SafeTensors::deserialize(&nan)
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
    );
    let mut rehashed: serde_json::Value = serde_json::from_str(&text).unwrap();
    rehashed["weights_sha256"] = hash.weights_sha256.into();
    rehashed["tensor_sha256"] = serde_json::to_value(hash.tensor_sha256).unwrap();
    std::fs::write(&contract, rehashed.to_string()).unwrap();
    let err = checkpoint::load(&dir, Some(&spec()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
    std::fs::write(&weights, &good).unwrap();
    std::fs::write(&contract, &text).unwrap();
    assert!(checkpoint::load(&dir, Some(&spec())).is_ok());

    std::fs::write(&contract, &text[..text.len() / 3]).unwrap();
    assert!(matches!(
        checkpoint::load(&dir, Some(&spec())),
        Err(CheckpointError::Contract { .. })
    ));
    std::fs::write(
        &contract,
        text.replace("\"policy_kind\"", "\"policy_kinds\""),
    )
    .unwrap();
    let err = checkpoint::load(&dir, Some(&spec()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("policy_kinds"), "{err}");
    std::fs::remove_file(&contract).unwrap();
    assert!(matches!(
        checkpoint::load(&dir, None),
        Err(CheckpointError::Io { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_save_interrupted_at_any_point_leaves_a_checkpoint_that_loads() {
    let old = trained_policy();
    let mut new = trained_policy();
    for p in new.actor.params_mut() {
        *p *= 0.5;
    }
    new.set_version(43);
    let dir = temp_dir("interrupted");
    let staged = temp_dir("interrupted-new");
    checkpoint::save(&dir, &old, TrainingProvenance::default()).unwrap();
    checkpoint::save(&staged, &new, TrainingProvenance::default()).unwrap();
    let next = dir.join("checkpoint.safetensors.next");
    // Crashed before the commit point: the new weights sit in the side
    // file, the old contract and weights still agree.
    std::fs::copy(staged.join(checkpoint::WEIGHTS_FILE), &next).unwrap();
    let (_, contract) = checkpoint::load(&dir, Some(&spec())).unwrap();
    assert_eq!(contract.policy_version, 42);
    // Crashed after it: the new contract beside the old weights; loading
    // finishes the move and gives the new policy.
    std::fs::copy(
        staged.join(checkpoint::CONTRACT_FILE),
        dir.join(checkpoint::CONTRACT_FILE),
    )
    .unwrap();
    let (mut loaded, contract) = checkpoint::load(&dir, Some(&spec())).unwrap();
    assert_eq!(contract.policy_version, 43);
    assert!(!next.exists(), "the side file was moved into place");

    assert_eq!(
        loaded
            .act(&observations(), Sampling::Deterministic)
            .unwrap(),
        new.act(&observations(), Sampling::Deterministic).unwrap()
    );
    // A side file that is not what the contract names changes nothing: the
    // mismatch is reported as it was.
    std::fs::copy(dir.join(checkpoint::WEIGHTS_FILE), &next).unwrap();
    let mut bytes = std::fs::read(dir.join(checkpoint::WEIGHTS_FILE)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&next, &bytes).unwrap();
    std::fs::write(dir.join(checkpoint::WEIGHTS_FILE), &bytes).unwrap();
    assert!(matches!(
        checkpoint::load(&dir, Some(&spec())),
        Err(CheckpointError::Integrity { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&staged);
}

#[test]
fn normaliser_statistics_out_of_any_sensible_range_are_refused() {
    let dir = temp_dir("normaliser");
    checkpoint::save(&dir, &trained_policy(), TrainingProvenance::default()).unwrap();
    let path = dir.join(checkpoint::CONTRACT_FILE);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in [("var", 1e300), ("var", -1.0), ("mean", 1e30)] {
        let mut contract = original.clone();
        contract["normalizer"][key][0] = serde_json::json!(value);
        std::fs::write(&path, serde_json::to_vec(&contract).unwrap()).unwrap();
        let error = checkpoint::load(&dir, Some(&spec()))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("normalizer"), "{error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_contract_or_weights_path_that_is_not_a_file_is_refused_not_read_forever() {
    let dir = temp_dir("fifo");
    checkpoint::save(&dir, &trained_policy(), TrainingProvenance::default()).unwrap();
    for name in [checkpoint::WEIGHTS_FILE, checkpoint::CONTRACT_FILE] {
        let path = dir.join(name);
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo here: nothing to test
        }
        let error = checkpoint::load(&dir, Some(&spec()))
            .err()
            .expect("refused");
        assert!(error.to_string().contains(name), "{error}");
        std::fs::remove_file(&path).unwrap();
        checkpoint::save(&dir, &trained_policy(), TrainingProvenance::default()).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
