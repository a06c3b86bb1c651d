//! RL fine-tuning scopes: what each trains, the feature cache, adapters
//! and their checkpoints.

use super::checkpoint::{BaseWeights, save_on};
use super::finetune::{Finetune, TrainScope};
use super::model::GROUPS;
use super::policy::{VlaPolicy, VlaWorkspace};
use super::tests::{encode, observation, policy, spec};
use crate::checkpoint::{TrainingProvenance, load_contract};
use crate::optim::Adam;
use crate::trainable::{EncodedDecisions, OutputGrads, Outputs, TrainablePolicy, Wants};
use cerebellum_core::{Observation, Policy, Sampling};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ALL: Wants = Wants {
    log_probs: true,
    values: true,
    imitation: false,
};

fn scope(train: TrainScope) -> Finetune {
    Finetune {
        train,
        lora_rank: 2,
        lora_alpha: 4.0,
    }
}

/// A policy whose weights are not their initial ones (one cloning step).
fn trained(seed: u64) -> VlaPolicy {
    let mut p = policy(seed);
    let batch = encode(&p, 4);
    let mut optimizer: Adam = p.optimizer(1e-2);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    p.imitation_step(
        &batch,
        &[0, 1, 2, 3],
        None,
        0.0,
        Default::default(),
        &mut rng,
        &mut optimizer,
        1.0,
    )
    .unwrap();
    p
}

/// A PPO-shaped gradient of the outputs.
fn output_grads(out: &Outputs) -> OutputGrads {
    OutputGrads {
        log_probs: (0..out.log_probs.len())
            .map(|k| 0.4 - 0.15 * k as f32)
            .collect(),
        mean_entropy: -0.01,
        values: (0..out.values.len())
            .map(|k| 0.3 * k as f32 - 0.5)
            .collect(),
        imitation: Vec::new(),
    }
}

/// `steps` updates of `p` on one batch through the learner interface.
fn update(p: &mut VlaPolicy, steps: usize) {
    let batch = encode(p, 6);
    let rows: Vec<usize> = (0..batch.len()).collect();
    let mut optimizer = p.optimizer(1e-2);
    for _ in 0..steps {
        let mut ws = VlaWorkspace::default();
        let out = p.forward(&batch, &rows, ALL, &mut ws).unwrap();
        p.backward(&output_grads(&out), &mut ws).unwrap();
        p.clip_gradients(&mut ws, 1.0);
        p.step(&mut optimizer, &mut ws);
    }
}

fn chunks(p: &mut VlaPolicy, sampling: Sampling) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let observations: Vec<Observation> = (0..3).map(|_| observation(&mut rng, "red")).collect();
    p.act(&observations, sampling)
        .unwrap()
        .iter()
        .flat_map(|o| o.chunk.actions.iter().flat_map(|a| a.values.clone()))
        .collect()
}

#[test]
fn head_mode_leaves_the_encoder_bit_identical() {
    let mut p = trained(3);
    p.set_finetune(&scope(TrainScope::Head), 0).unwrap();
    let names: Vec<&str> = p.parameter_groups().iter().map(|g| g.name).collect();
    assert_eq!(names, ["actor", "log_std", "critic"]);
    let before = p.all_parameters();
    update(&mut p, 5);
    let after = p.all_parameters();
    for (name, (b, a)) in GROUPS.iter().zip(before.iter().zip(&after)) {
        let trained = matches!(*name, "actor" | "log_std" | "critic");
        assert_eq!(b != a, trained, "{name}");
    }
}

#[test]
fn the_feature_cache_gives_the_loss_and_gradients_of_recomputing() {
    let mut head = trained(4);
    head.set_finetune(&scope(TrainScope::Head), 0).unwrap();
    let cached = encode(&head, 6);
    assert!(cached.encoded > 0 && cached.frames.is_empty());
    // The same decisions with their frames, encoded by the same weights
    // trained whole.
    let whole = trained(4);
    let frames = encode(&whole, 6);
    assert_eq!(frames.encoded, 0);
    let rows = [4, 1, 3];
    let run = |batch| {
        let mut ws = VlaWorkspace::default();
        let out = head.forward(batch, &rows, ALL, &mut ws).unwrap();
        head.backward(&output_grads(&out), &mut ws).unwrap();
        (out, head.gradients(&ws))
    };
    let (out_cached, grads_cached) = run(&cached);
    let (out_frames, grads_frames) = run(&frames);
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    };
    close(&out_cached.log_probs, &out_frames.log_probs, "log-probs");
    close(&out_cached.values, &out_frames.values, "values");
    for (a, b) in grads_cached.iter().zip(&grads_frames) {
        close(a, b, "gradients");
    }
    // A policy that trains its encoder refuses cached rows.
    let mut ws = VlaWorkspace::default();
    let e = whole
        .forward(&cached, &rows, ALL, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cached encoder features"), "{e}");
}

#[test]
fn lora_leaves_the_base_bit_identical_and_merges_to_the_same_chunk() {
    let mut base = trained(5);
    let mut p = base.clone();
    p.set_finetune(&scope(TrainScope::Lora), 9).unwrap();
    let names: Vec<&str> = p.parameter_groups().iter().map(|g| g.name).collect();
    assert_eq!(names, ["log_std", "critic", "lora"]);
    // B starts at zero: the adapted policy is the base, exactly.
    assert_eq!(
        chunks(&mut p, Sampling::Deterministic),
        chunks(&mut base, Sampling::Deterministic)
    );
    let before = p.all_parameters();
    update(&mut p, 5);
    let after = p.all_parameters();
    for (name, (b, a)) in GROUPS.iter().zip(before.iter().zip(&after)) {
        let trained = matches!(*name, "log_std" | "critic" | "lora");
        assert_eq!(b != a, trained, "{name}");
    }
    // Once B has moved, every adapter tensor (A and B) gets a gradient.
    let batch = encode(&p, 6);
    let rows: Vec<usize> = (0..batch.len()).collect();
    let mut ws = VlaWorkspace::default();
    let out = p.forward(&batch, &rows, ALL, &mut ws).unwrap();
    p.backward(&output_grads(&out), &mut ws).unwrap();
    let lora = p.gradients(&ws).pop().unwrap();
    let vars = p.model.groups().pop().unwrap();
    let mut at = 0;
    for (name, var) in vars {
        let n = var.elem_count();
        assert!(
            lora[at..at + n].iter().any(|&g| g != 0.0),
            "{name} gets no gradient"
        );
        at += n;
    }
    assert_eq!(at, lora.len());
    // Merged into the base weights: the same chunks.
    let mut merged = p.merged().unwrap();
    assert!(merged.adapters().is_none());
    for sampling in [Sampling::Deterministic, Sampling::Stochastic { seed: 4 }] {
        let a = chunks(&mut p, sampling);
        let b = chunks(&mut merged, sampling);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}

#[test]
fn a_finetune_checkpoint_carries_what_it_trained_on_a_named_base() {
    let root = std::env::temp_dir().join(format!("vla-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (base_dir, other_dir) = (root.join("base"), root.join("other"));
    let base = trained(6);
    base.save(&base_dir, TrainingProvenance::default()).unwrap();
    trained(7)
        .save(&other_dir, TrainingProvenance::default())
        .unwrap();
    let base_hash = load_contract(&base_dir).unwrap().weights_sha256;
    for (train, tensors) in [
        (TrainScope::Head, 3 * 2 + 1 + 2 * 2),
        (TrainScope::Lora, 1 + 2 * 2 + 2 * (2 + 1 + 3)),
    ] {
        let dir = root.join(train.name());
        let mut p = base.clone();
        p.set_finetune(&scope(train), 1).unwrap();
        update(&mut p, 3);
        let named = BaseWeights {
            path: base_dir.display().to_string(),
            weights_sha256: base_hash.clone(),
        };
        save_on(&dir, &p, TrainingProvenance::default(), Some(named)).unwrap();
        // Only the trained tensors are in the file.
        let data = std::fs::read(dir.join(crate::checkpoint::WEIGHTS_FILE)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&data).unwrap();
        assert_eq!(file.len(), tensors, "{}", train.name());
        // It loads on its own, through its base.
        let (mut loaded, contract) = VlaPolicy::load(&dir, Some(&spec())).unwrap();
        let finetune = contract.vla.unwrap().finetune.unwrap();
        assert_eq!(finetune.settings.train, train);
        assert_eq!(loaded.scope(), train);
        for sampling in [Sampling::Deterministic, Sampling::Stochastic { seed: 8 }] {
            assert_eq!(chunks(&mut loaded, sampling), chunks(&mut p, sampling));
        }
        // On another base: refused, naming both hashes.
        let contract_path = dir.join(crate::checkpoint::CONTRACT_FILE);
        let text = std::fs::read_to_string(&contract_path).unwrap();
        let moved = text.replace(
            &serde_json::to_string(&base_dir.display().to_string()).unwrap(),
            &serde_json::to_string(&other_dir.display().to_string()).unwrap(),
        );
        assert_ne!(moved, text);
        std::fs::write(&contract_path, moved).unwrap();
        let other_hash = load_contract(&other_dir).unwrap().weights_sha256;
        let e = VlaPolicy::load(&dir, None).unwrap_err().to_string();
        assert!(
            e.contains("weights_sha256") && e.contains(&base_hash) && e.contains(&other_hash),
            "{e}"
        );
        std::fs::write(&contract_path, text).unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
