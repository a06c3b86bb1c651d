//! Success classifier (SERL, HIL-SERL, RoboFuME; ALGORITHMS.md §3.3):
//! P(success | observation) from labelled frames, used as a sparse reward
//! and an episode terminator. One confident frame is not enough: the
//! detector fires after `k` consecutive frames at or above the threshold,
//! which guards against false positives.

use crate::contract::{Expected, ModelError, RewardModelContract};
use crate::fields::FieldSelection;
use crate::layers::{linear, normalize_into, normalize_values_into, state_statistics};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A small MLP over the selected fields of one normalised observation state.
pub struct SuccessClassifier {
    hidden: Linear,
    out: Linear,
    mean: Vec<f32>,
    std: Vec<f32>,
    fields: FieldSelection,
}

impl SuccessClassifier {
    /// Trains on (state, label) frames with binary cross-entropy, the
    /// positive frames weighted so both classes count equally; the model
    /// reads `fields` of each state.
    pub fn train(
        frames: &[(Vec<f32>, bool)],
        fields: &FieldSelection,
        hidden: usize,
        epochs: usize,
        seed: u64,
    ) -> candle_core::Result<Self> {
        let frames: Vec<(Vec<f32>, bool)> =
            frames.iter().map(|(s, y)| (fields.select(s), *y)).collect();
        let n = frames.len();
        let dims = frames.first().map_or(0, |f| f.0.len());
        let (mean, std) = state_statistics(frames.iter().map(|f| &f.0), dims);
        let positives = frames.iter().filter(|f| f.1).count().max(1) as f32;
        let negatives = (n as f32 - positives).max(1.0);
        let mut x = Vec::with_capacity(n * dims);
        for (state, _) in &frames {
            normalize_into(&mut x, state, &mean, &std);
        }
        let y: Vec<f32> = frames.iter().map(|f| f32::from(u8::from(f.1))).collect();
        let w: Vec<f32> = frames
            .iter()
            .map(|f| {
                if f.1 {
                    0.5 * n as f32 / positives
                } else {
                    0.5 * n as f32 / negatives
                }
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::new();
        let model = Self {
            hidden: linear(&mut rng, dims, hidden, &mut vars)?,
            out: linear(&mut rng, hidden, 1, &mut vars)?,
            mean,
            std,
            fields: fields.clone(),
        };
        let x = Tensor::from_vec(x, (n, dims), &Device::Cpu)?;
        let y = Tensor::from_vec(y, (n, 1), &Device::Cpu)?;
        let w = Tensor::from_vec(w, (n, 1), &Device::Cpu)?;
        let mut optimizer = AdamW::new(
            vars,
            ParamsAdamW {
                lr: 3e-3,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        for _ in 0..epochs {
            let logits = model.logits(&x)?;
            // Weighted BCE with logits: w · (softplus(z) − y z).
            let softplus = (logits.exp()? + 1.0)?.log()?;
            let loss = ((softplus - (&y * &logits)?)? * &w)?.mean_all()?;
            optimizer.backward_step(&loss)?;
        }
        Ok(model)
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }

    /// P(success) per state; a non-finite state gives `None` (missing,
    /// never a silent 0).
    pub fn predict(&self, states: &[Vec<f32>]) -> candle_core::Result<Vec<Option<f32>>> {
        let dims = self.mean.len();
        let mut x = Vec::with_capacity(states.len() * dims);
        for state in states {
            normalize_values_into(&mut x, self.fields.values(state), &self.mean, &self.std);
        }
        // A ReLU turns NaN into 0, so a bad input must be caught before it
        // (a non-finite value read stays non-finite once normalised).
        let finite: Vec<bool> = x
            .chunks_exact(dims.max(1))
            .map(|row| row.iter().all(|v| v.is_finite()))
            .collect();
        let x = Tensor::from_vec(x, (states.len(), dims), &Device::Cpu)?;
        let p = candle_nn::ops::sigmoid(&self.logits(&x)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(p.into_iter()
            .zip(finite)
            .map(|(p, finite)| (p.is_finite() && finite).then_some(p))
            .collect())
    }
}

const WEIGHTS: &str = "success.safetensors";

impl SuccessClassifier {
    /// Writes success.safetensors and reward_model.json into `dir`.
    pub fn save(
        &self,
        dir: &std::path::Path,
        observation: &cerebellum_core::ObservationSpec,
        instruction: Option<&str>,
        model_version: u64,
    ) -> Result<RewardModelContract, ModelError> {
        let mut contract = RewardModelContract::new(
            "success",
            model_version,
            observation,
            instruction,
            1,
            self.hidden.weight().dim(0)?,
        );
        contract.fields = self.fields.names().to_vec();
        let vector = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu);
        let tensors = vec![
            ("hidden.weight".into(), self.hidden.weight().clone()),
            (
                "hidden.bias".into(),
                self.hidden.bias().expect("biased").clone(),
            ),
            ("out.weight".into(), self.out.weight().clone()),
            ("out.bias".into(), self.out.bias().expect("biased").clone()),
            ("obs_mean".into(), vector(&self.mean)?),
            ("obs_std".into(), vector(&self.std)?),
        ];
        crate::contract::save(dir, &contract, WEIGHTS, tensors)?;
        Ok(contract)
    }

    /// Loads a classifier saved by `save`, checked against `expected`.
    pub fn load(
        dir: &std::path::Path,
        expected: Option<Expected<'_>>,
    ) -> Result<(Self, RewardModelContract), ModelError> {
        let loaded = crate::contract::load(dir, "success", WEIGHTS, expected)?;
        let contract = &loaded.contract;
        let fields = FieldSelection::new(&contract.observation, &contract.fields, 0)?;
        let dims = fields.len(contract.observation.state_len());
        let hidden = contract.hidden;
        let model = Self {
            hidden: loaded.linear("hidden", dims, hidden)?,
            out: loaded.linear("out", hidden, 1)?,
            mean: loaded.vector("obs_mean", dims, false)?,
            std: loaded.vector("obs_std", dims, true)?,
            fields,
        };
        Ok((model, loaded.contract))
    }
}

/// Fires once `k` consecutive frames reach `threshold`.
#[derive(Clone, Debug)]
pub struct SuccessDetector {
    pub threshold: f32,
    pub k: u32,
    run: u32,
}

impl SuccessDetector {
    pub fn new(threshold: f32, k: u32) -> Self {
        Self {
            threshold,
            k: k.max(1),
            run: 0,
        }
    }

    /// Feeds one frame's probability (`None`: missing, which breaks the
    /// run); true when the episode should end as a success.
    pub fn observe(&mut self, probability: Option<f32>) -> bool {
        match probability {
            Some(p) if p >= self.threshold => self.run += 1,
            _ => self.run = 0,
        }
        self.run >= self.k
    }

    pub fn reset(&mut self) {
        self.run = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_needs_k_consecutive_confident_frames() {
        let mut d = SuccessDetector::new(0.8, 3);
        let fired: Vec<bool> = [0.9, 0.95, 0.5, 0.9, 0.85, 0.99, 0.99]
            .iter()
            .map(|p| d.observe(Some(*p)))
            .collect();
        assert_eq!(fired, [false, false, false, false, false, true, true]);
        d.reset();
        assert!(!d.observe(Some(1.0)));
        assert!(!d.observe(None), "a missing frame breaks the run");
        assert!(!d.observe(Some(1.0)));
    }

    #[test]
    fn a_separable_toy_set_is_learned() {
        let frames: Vec<(Vec<f32>, bool)> = (0..200)
            .map(|i| {
                let x = i as f32 / 100.0 - 1.0;
                (vec![x, 0.3 * x * x], x > 0.4)
            })
            .collect();
        let spec = cerebellum_core::ObservationSpec {
            fields: ["x", "y"]
                .map(|name| {
                    cerebellum_core::FieldSpec::new(
                        name,
                        cerebellum_core::Unit::Normalized,
                        &["v"],
                        &[(-2.0, 2.0)],
                    )
                })
                .to_vec(),
            cameras: vec![],
            instruction: false,
        };
        // Success depends on x alone; the classifier is told to read only x.
        let fields = FieldSelection::new(&spec, &["x".to_owned()], 0).unwrap();
        let model = SuccessClassifier::train(&frames, &fields, 32, 400, 1).unwrap();
        let states: Vec<Vec<f32>> = frames.iter().map(|f| f.0.clone()).collect();
        let p = model.predict(&states).unwrap();
        let y_moved: Vec<Vec<f32>> = states.iter().map(|s| vec![s[0], 1.5]).collect();
        assert_eq!(model.predict(&y_moved).unwrap(), p);
        let correct = p
            .iter()
            .zip(&frames)
            .filter(|(p, f)| (p.unwrap() >= 0.5) == f.1)
            .count();
        assert!(correct >= 190, "{correct}/200");

        let dir =
            std::env::temp_dir().join(format!("cerebellum-success-unit-{}", std::process::id()));
        let expected = Expected {
            observation: &spec,
            instruction: None,
        };
        model.save(&dir, &spec, None, 2).unwrap();
        let (loaded, contract) = SuccessClassifier::load(&dir, Some(expected)).unwrap();
        assert_eq!(
            (contract.kind.as_str(), contract.model_version),
            ("success", 2)
        );
        assert_eq!(contract.fields, vec!["x".to_owned()]);
        assert_eq!(loaded.predict(&states).unwrap(), p);
        let error = crate::progress::ProgressModel::load(&dir, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("a success model, expected a progress model"),
            "{error}"
        );
    }
}
