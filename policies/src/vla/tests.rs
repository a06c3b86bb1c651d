//! The VLA's contract with its learners and its checkpoints.

use super::checkpoint::{TOKENIZER_FILE, load};
use super::policy::{VlaDecisions, VlaPolicy, VlaWorkspace};
use super::tokenizer::{InstructionTokenizer, word_level_json};
use super::{Augment, VlaConfig};
use crate::checkpoint::TrainingProvenance;
use crate::gaussian::ActionMode;
use crate::optim::Adam;
use crate::trainable::{Decision, EncodedDecisions, OutputGrads, TrainablePolicy, Wants};
use candle_core::Device;
use cerebellum_core::{
    Action, ActionSpec, CameraSpec, FieldSpec, Image, Observation, ObservationSpec, Policy,
    RobotSpec, Sampling, Unit,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIDE: u32 = 16;

pub(super) fn spec() -> RobotSpec {
    RobotSpec {
        name: "test-arm".into(),
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "joint_position",
                Unit::Radian,
                &["a", "b"],
                &[(-3.0, 3.0); 2],
            )],
            cameras: vec![CameraSpec {
                name: "front".into(),
                height: SIDE,
                width: SIDE,
                channels: 3,
            }],
            instruction: true,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "joint_target",
                Unit::Radian,
                &["a", "b"],
                &[(-3.0, 3.0); 2],
            )],
        },
        control_rate_hz: 50.0,
    }
}

pub(super) fn config() -> VlaConfig {
    VlaConfig {
        horizon: 4,
        image_size: SIDE,
        conv_channels: vec![4, 5],
        conv_kernels: vec![3, 3],
        conv_strides: vec![2, 1],
        text_width: 6,
        max_words: 5,
        head_hidden: vec![16, 12],
        critic_hidden: vec![8],
        init_log_std: -0.5,
        action_mode: ActionMode::Delta { max_step: 0.2 },
    }
}

pub(super) fn tokenizer() -> InstructionTokenizer {
    InstructionTokenizer::from_json(&word_level_json(["touch", "the", "red", "green", "marker"]))
        .unwrap()
}

pub(super) fn policy(seed: u64) -> VlaPolicy {
    VlaPolicy::new(&spec(), config(), tokenizer(), seed, &Device::Cpu).unwrap()
}

pub(super) fn observation(rng: &mut ChaCha8Rng, color: &str) -> Observation {
    Observation {
        state: vec![rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)],
        images: vec![Image {
            camera: "front".into(),
            height: SIDE,
            width: SIDE,
            channels: 3,
            data: (0..SIDE * SIDE * 3).map(|_| rng.random()).collect(),
        }],
        instruction: Some(format!("touch the {color} marker")),
        timestamp: 0.0,
    }
}

pub(super) fn actions(rng: &mut ChaCha8Rng, n: usize) -> Vec<Action> {
    (0..n)
        .map(|_| {
            Action::new(vec![
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
            ])
        })
        .collect()
}

/// Observations and chunk actions with varied starting indices.
pub(super) fn decisions_data(n: usize) -> (Vec<Observation>, Vec<Vec<Action>>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let observations = (0..n)
        .map(|k| observation(&mut rng, if k % 2 == 0 { "red" } else { "green" }))
        .collect();
    let firsts: Vec<u32> = (0..n).map(|k| (k % 3) as u32).collect();
    let acts = firsts
        .iter()
        .map(|&f| actions(&mut rng, 4 - f as usize))
        .collect();
    (observations, acts, firsts)
}

pub(super) fn encode(policy: &VlaPolicy, n: usize) -> VlaDecisions {
    let (observations, acts, firsts) = decisions_data(n);
    let decisions: Vec<Decision> = observations
        .iter()
        .zip(&acts)
        .zip(&firsts)
        .map(|((observation, a), &first_index)| Decision {
            observation,
            first_index,
            actions: a.iter().collect(),
        })
        .collect();
    policy.encode(&decisions).unwrap()
}

#[test]
fn every_trainable_tensor_gets_a_gradient() {
    let policy = policy(3);
    let batch = encode(&policy, 6);
    let rows: Vec<usize> = (0..batch.len()).collect();
    let wants = Wants {
        log_probs: true,
        values: true,
        imitation: true,
    };
    let mut ws = VlaWorkspace::default();
    let out = policy.forward(&batch, &rows, wants, &mut ws).unwrap();
    let n = out.log_probs.len();
    assert_eq!(n, batch.starts[batch.len()]);
    let grads = OutputGrads {
        log_probs: (0..n).map(|k| 0.3 - 0.1 * k as f32).collect(),
        mean_entropy: -0.01,
        values: (0..rows.len()).map(|k| 0.5 + k as f32).collect(),
        imitation: vec![0.2; n],
    };
    policy.backward(&grads, &mut ws).unwrap();
    let names: Vec<Vec<String>> = policy
        .model
        .groups()
        .into_iter()
        .map(|g| g.into_iter().map(|(name, _)| name).collect())
        .collect();
    for ((group, g), names) in policy
        .parameter_groups()
        .iter()
        .zip(policy.gradients(&ws))
        .zip(&names)
    {
        assert_eq!(g.len(), group.len);
        assert!(g.iter().all(|x| x.is_finite()), "{}", group.name);
        if group.name == "aux" {
            // Only behaviour cloning's auxiliary loss reaches the aux head.
            assert!(g.iter().all(|&x| x == 0.0));
            continue;
        }
        // Each variable of the group, not just the group.
        let vars = policy.model.groups();
        let vars = &vars[policy
            .parameter_groups()
            .iter()
            .position(|p| p.name == group.name)
            .unwrap()];
        let mut at = 0;
        for ((_, var), name) in vars.iter().zip(names) {
            let len = var.elem_count();
            assert!(
                g[at..at + len].iter().any(|&x| x != 0.0),
                "{name} gets no gradient"
            );
            at += len;
        }
    }
    // The aux head learns from the behaviour-cloning step.
    let mut policy = policy;
    let before = policy.parameters();
    let mut optimizer = policy.optimizer(1e-3);
    let targets = vec![0.1; 3 * rows.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let loss = policy
        .imitation_step(
            &batch,
            &rows,
            Some(&targets),
            1.0,
            Augment {
                shift: 2,
                word_dropout: 0.3,
            },
            &mut rng,
            &mut optimizer,
            1.0,
        )
        .unwrap();
    assert!(
        loss.imitation > 0.0 && loss.aux > 0.0 && loss.grad_norm > 0.0,
        "{loss:?}"
    );
    let after = policy.parameters();
    for ((b, a), group) in before.iter().zip(&after).zip(policy.parameter_groups()) {
        let changed = b != a;
        // Behaviour cloning moves all but the critic and log σ.
        let expected = !matches!(group.name, "critic" | "log_std");
        assert_eq!(changed, expected, "{}", group.name);
    }
}

#[test]
fn a_chunk_decision_is_scored_at_its_own_positions() {
    let mut policy = policy(4);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let observation = observation(&mut rng, "red");
    let output = policy
        .act(
            std::slice::from_ref(&observation),
            Sampling::Stochastic { seed: 5 },
        )
        .unwrap()
        .remove(0);
    let each = output.action_log_probs.clone().unwrap();
    assert_eq!(each.len(), 4);
    assert!((each.iter().sum::<f32>() - output.log_prob.unwrap()).abs() < 1e-4);
    let sampled = output.sampled.unwrap().actions;
    for first in 0..4 {
        let decision = Decision {
            observation: &observation,
            first_index: first as u32,
            actions: sampled[first..].iter().collect(),
        };
        let batch = policy.encode(&[decision]).unwrap();
        let wants = Wants {
            log_probs: true,
            ..Wants::default()
        };
        let out = policy
            .forward(&batch, &[0], wants, &mut VlaWorkspace::default())
            .unwrap();
        for (j, lp) in out.log_probs.iter().enumerate() {
            assert!(
                (lp - each[first + j]).abs() < 1e-3,
                "index {}: {lp} vs {}",
                first + j,
                each[first + j]
            );
        }
    }
    // A decision past the chunk is refused.
    let too_long = Decision {
        observation: &observation,
        first_index: 2,
        actions: sampled.iter().collect(),
    };
    let e = policy.encode(&[too_long]).unwrap_err().to_string();
    assert!(e.contains("runs past"), "{e}");
}

#[test]
fn bad_observations_are_refused_before_inference() {
    let mut policy = policy(5);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut no_words = observation(&mut rng, "red");
    no_words.instruction = None;
    let e = policy
        .act(&[no_words], Sampling::Deterministic)
        .unwrap_err()
        .to_string();
    assert!(e.contains("instruction"), "{e}");
    let mut small = observation(&mut rng, "red");
    small.images[0].width = 8;
    small.images[0].data.truncate(8 * 16 * 3);
    let e = policy
        .act(&[small], Sampling::Deterministic)
        .unwrap_err()
        .to_string();
    assert!(e.contains("front"), "{e}");
    // Unknown words are read as [UNK] and counted.
    let mut odd = observation(&mut rng, "red");
    odd.instruction = Some("touch the purple marker".into());
    policy.act(&[odd], Sampling::Deterministic).unwrap();
    assert_eq!(policy.unknown_words, 1);
    // A robot whose camera is not the model's size is refused.
    let mut wide = spec();
    wide.observation.cameras[0].width = 32;
    let e = VlaPolicy::new(&wide, config(), tokenizer(), 0, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image_size"), "{e}");
}

#[test]
fn save_load_gives_identical_chunks_and_refuses_tampering() {
    let dir = std::env::temp_dir().join(format!("vla-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut policy = policy(6);
    // Train a step so the weights are not the initial ones.
    let batch = encode(&policy, 4);
    let mut optimizer: Adam = policy.optimizer(1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    policy
        .imitation_step(
            &batch,
            &[0, 1, 2, 3],
            None,
            0.0,
            Augment {
                shift: 1,
                word_dropout: 0.0,
            },
            &mut rng,
            &mut optimizer,
            1.0,
        )
        .unwrap();
    policy.set_statistics(&[0.5, -0.5, 0.1, 0.2, 0.9, -0.3]);
    policy.set_version(7);
    policy.save(&dir, TrainingProvenance::default()).unwrap();
    let (mut loaded, contract) = VlaPolicy::load(&dir, Some(&spec())).unwrap();
    assert_eq!(contract.policy_kind, "vla");
    assert_eq!(contract.action_chunk, 4);
    assert_eq!(Policy::version(&loaded), 7);
    let vla = contract.vla.as_ref().unwrap();
    assert_eq!(vla.cameras[0].name, "front");
    assert_eq!(vla.tokenizer.sha256, policy.tokenizer().sha256());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let observations: Vec<Observation> = (0..3).map(|_| observation(&mut rng, "green")).collect();
    for sampling in [Sampling::Deterministic, Sampling::Stochastic { seed: 3 }] {
        let a = policy.act(&observations, sampling).unwrap();
        let b = loaded.act(&observations, sampling).unwrap();
        assert_eq!(a, b);
    }
    // The MLP loader refuses it, naming the kind.
    let e = match crate::checkpoint::load(&dir, None) {
        Ok(_) => panic!("the MLP loader took a VLA checkpoint"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("policy_kind `vla`"), "{e}");
    // Another robot: refused by the spec check.
    let mut other = spec();
    other.observation.cameras[0].name = "wrist".into();
    assert!(VlaPolicy::load(&dir, Some(&other)).is_err());
    // A changed tokenizer: refused, naming the field.
    let path = dir.join(TOKENIZER_FILE);
    let original = std::fs::read(&path).unwrap();
    std::fs::write(&path, word_level_json(["touch", "the", "blue"])).unwrap();
    let e = load(&dir, None, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("vla.tokenizer.sha256"), "{e}");
    std::fs::write(&path, &original).unwrap();
    // A contract edited to another model: refused, naming the field.
    let contract_path = dir.join(crate::checkpoint::CONTRACT_FILE);
    let text = std::fs::read_to_string(&contract_path).unwrap();
    std::fs::write(
        &contract_path,
        text.replace("\"horizon\": 4", "\"horizon\": 5"),
    )
    .unwrap();
    let e = load(&dir, None, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("horizon"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Speed probe of the default model (not a test of speed: `bench vla`
/// reports ratios): `cargo test --release -p cerebellum-policies probe_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn probe_speed() {
    let config = VlaConfig::default();
    let mut spec = spec();
    spec.observation.cameras[0].width = 64;
    spec.observation.cameras[0].height = 64;
    spec.observation.fields = vec![FieldSpec::new(
        "joint_position",
        Unit::Radian,
        &["a", "b", "c", "d", "e", "f"],
        &[(-3.0, 3.0); 6],
    )];
    spec.action.fields = vec![FieldSpec::new(
        "joint_target",
        Unit::Radian,
        &["a", "b", "c", "d", "e", "f"],
        &[(-3.0, 3.0); 6],
    )];
    let mut policy = VlaPolicy::new(
        &spec,
        config,
        InstructionTokenizer::shipped(),
        0,
        &Device::Cpu,
    )
    .unwrap();
    println!("parameters {}", policy.param_count());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let observations: Vec<Observation> = (0..64)
        .map(|_| Observation {
            state: (0..6).map(|_| rng.random_range(-1.0..1.0)).collect(),
            images: vec![Image {
                camera: "front".into(),
                height: 64,
                width: 64,
                channels: 3,
                data: (0..64 * 64 * 3).map(|_| rng.random()).collect(),
            }],
            instruction: Some("touch the red marker".into()),
            timestamp: 0.0,
        })
        .collect();
    for _ in 0..20 {
        policy
            .act(&observations[..1], Sampling::Deterministic)
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = std::time::Instant::now();
        policy
            .act(&observations[..1], Sampling::Deterministic)
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("infer p50 {:.3} ms p99 {:.3} ms", times[150], times[297]);
    let acts: Vec<Vec<Action>> = (0..64)
        .map(|_| (0..10).map(|_| Action::new(vec![0.1; 6])).collect())
        .collect();
    let decisions: Vec<Decision> = observations
        .iter()
        .zip(&acts)
        .map(|(observation, a)| Decision {
            observation,
            first_index: 0,
            actions: a.iter().collect(),
        })
        .collect();
    let batch = policy.encode(&decisions).unwrap();
    let rows: Vec<usize> = (0..64).collect();
    let targets = vec![0.1; 64 * 3];
    let mut optimizer = policy.optimizer(3e-4);
    for _ in 0..3 {
        policy
            .imitation_step(
                &batch,
                &rows,
                Some(&targets),
                1.0,
                Augment {
                    shift: 4,
                    word_dropout: 0.0,
                },
                &mut rng,
                &mut optimizer,
                1.0,
            )
            .unwrap();
    }
    let t = std::time::Instant::now();
    let steps = 20;
    for _ in 0..steps {
        policy
            .imitation_step(
                &batch,
                &rows,
                Some(&targets),
                1.0,
                Augment {
                    shift: 4,
                    word_dropout: 0.0,
                },
                &mut rng,
                &mut optimizer,
                1.0,
            )
            .unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "train {:.0} samples/s ({:.1} ms/step)",
        64.0 * steps as f64 / s,
        1e3 * s / steps as f64
    );
}
