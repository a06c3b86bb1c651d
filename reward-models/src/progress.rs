//! Stage-aware progress model (SARM, ALGORITHMS.md §3.1): from a short
//! history of observations (never the time or step index, which would make
//! ranking trivial) predict the task stage k and the progress τ within it;
//! progress = P_{k−1} + ᾱ_k τ, with ᾱ_k the mean share of episode time
//! stage k takes in the demonstrations and P_{k−1} = Σ_{j<k} ᾱ_j.
//!
//! Targets come from stage-annotated demonstrations: stage k spans frames
//! [s_k, e_k] of an episode, τ_t = (t − s_k)/(e_k − s_k). The network is a
//! small MLP (candle, CPU) with a stage head (cross-entropy) and a τ head
//! (sigmoid, squared error).

use crate::layers::{linear, normalize_into, state_statistics};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct ProgressConfig {
    /// Frames of history the model sees (the current one and the ones
    /// before it; the first frame repeats at an episode's start).
    pub history: usize,
    pub hidden: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        Self {
            history: 3,
            hidden: 128,
            epochs: 400,
            learning_rate: 3e-3,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("no annotated frames to train on")]
    NoData,
    #[error("episode {episode}, frame {frame}: {reason}")]
    BadEpisode {
        episode: usize,
        frame: usize,
        reason: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "the progress model in {path} was trained on another observation spec ({found}); this robot's is {expected}"
    )]
    SpecMismatch {
        path: String,
        found: String,
        expected: String,
    },
}

/// What a saved progress model promises: the observations it reads, its
/// history, its stages and their shares (reward_model.json beside
/// progress.safetensors).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressContract {
    pub format: String,
    pub version: u32,
    pub kind: String,
    /// Increases each time the model is retrained.
    pub model_version: u64,
    pub observation: cerebellum_core::ObservationSpec,
    pub history: usize,
    pub hidden: usize,
    pub stage_names: Vec<String>,
    pub stage_shares: Vec<f64>,
}

const CONTRACT: &str = "reward_model.json";
const WEIGHTS: &str = "progress.safetensors";
const FORMAT: &str = "cerebellum-reward-model";

/// One demonstration: each frame's state vector and stage index.
pub struct AnnotatedEpisode {
    pub states: Vec<Vec<f32>>,
    pub stages: Vec<u32>,
}

/// A trained model; `predict` gives progress in [0, 1] for each frame.
pub struct ProgressModel {
    layers: Vec<Linear>,
    stage_head: Linear,
    tau_head: Linear,
    mean: Vec<f32>,
    std: Vec<f32>,
    history: usize,
    /// ᾱ_k per stage, summing to 1.
    pub stage_shares: Vec<f64>,
}

/// The model's input for frame `t`: the last `history` states, oldest
/// first, normalised.
fn features(states: &[Vec<f32>], t: usize, history: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let mut x = Vec::with_capacity(history * mean.len());
    for back in (0..history).rev() {
        normalize_into(&mut x, &states[t.saturating_sub(back)], mean, std);
    }
    x
}

/// Per-frame targets (stage, τ) of one episode, and each stage's share of it.
fn targets(episode: &AnnotatedEpisode, stages: usize) -> (Vec<(u32, f32)>, Vec<f64>) {
    let n = episode.stages.len();
    let mut spans = vec![None::<(usize, usize)>; stages];
    for (t, &k) in episode.stages.iter().enumerate() {
        let span = spans[k as usize].get_or_insert((t, t));
        span.1 = t;
    }
    let out = episode
        .stages
        .iter()
        .enumerate()
        .map(|(t, &k)| {
            let (start, end) = spans[k as usize].expect("seen");
            let tau = if end > start {
                (t - start) as f32 / (end - start) as f32
            } else {
                1.0
            };
            (k, tau)
        })
        .collect();
    let shares = spans
        .iter()
        .map(|s| s.map_or(0.0, |(a, b)| (b - a + 1) as f64 / n as f64))
        .collect();
    (out, shares)
}

impl ProgressModel {
    /// Trains on `episodes` with `stages` named stages.
    pub fn train(
        episodes: &[AnnotatedEpisode],
        stages: usize,
        config: &ProgressConfig,
    ) -> Result<Self, ProgressError> {
        let frames: usize = episodes.iter().map(|e| e.states.len()).sum();
        if frames == 0 || stages == 0 {
            return Err(ProgressError::NoData);
        }
        let dims = episodes[0].states[0].len();
        for (i, e) in episodes.iter().enumerate() {
            for (t, (s, &k)) in e.states.iter().zip(&e.stages).enumerate() {
                let bad = |reason: String| ProgressError::BadEpisode {
                    episode: i,
                    frame: t,
                    reason,
                };
                if s.len() != dims {
                    return Err(bad(format!("{} values, expected {dims}", s.len())));
                }
                if k as usize >= stages {
                    return Err(bad(format!("stage {k} of {stages}")));
                }
                if s.iter().any(|v| !v.is_finite()) {
                    return Err(bad("non-finite state".into()));
                }
            }
        }
        let (mean, std) = state_statistics(episodes.iter().flat_map(|e| &e.states), dims);
        let (mut x, mut labels, mut taus) = (Vec::new(), Vec::new(), Vec::new());
        let mut shares = vec![0.0; stages];
        for e in episodes {
            let (t, s) = targets(e, stages);
            shares
                .iter_mut()
                .zip(s)
                .for_each(|(a, b)| *a += b / episodes.len() as f64);
            for (frame, (k, tau)) in t.into_iter().enumerate() {
                x.extend(features(&e.states, frame, config.history, &mean, &std));
                labels.push(k);
                taus.push(tau);
            }
        }
        let total: f64 = shares.iter().sum();
        shares.iter_mut().for_each(|s| *s /= total);

        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut vars = Vec::new();
        let inputs = config.history * dims;
        let layers = vec![
            linear(&mut rng, inputs, config.hidden, &mut vars)?,
            linear(&mut rng, config.hidden, config.hidden, &mut vars)?,
        ];
        let stage_head = linear(&mut rng, config.hidden, stages, &mut vars)?;
        let tau_head = linear(&mut rng, config.hidden, 1, &mut vars)?;
        let model = Self {
            layers,
            stage_head,
            tau_head,
            mean,
            std,
            history: config.history,
            stage_shares: shares,
        };
        let x = Tensor::from_vec(x, (frames, inputs), &Device::Cpu)?;
        let labels = Tensor::from_vec(labels, frames, &Device::Cpu)?;
        let taus = Tensor::from_vec(taus, (frames, 1), &Device::Cpu)?;
        let mut optimizer = AdamW::new(
            vars,
            ParamsAdamW {
                lr: config.learning_rate,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        for _ in 0..config.epochs {
            let (logits, tau) = model.forward(&x)?;
            let loss = (candle_nn::loss::cross_entropy(&logits, &labels)?
                + candle_nn::loss::mse(&tau, &taus)?)?;
            optimizer.backward_step(&loss)?;
        }
        Ok(model)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?.relu()?;
        }
        let logits = self.stage_head.forward(&h)?;
        let tau = candle_nn::ops::sigmoid(&self.tau_head.forward(&h)?)?;
        Ok((logits, tau))
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut named = Vec::new();
        let mut push = |name: &str, layer: &Linear| {
            named.push((format!("{name}.weight"), layer.weight().clone()));
            if let Some(bias) = layer.bias() {
                named.push((format!("{name}.bias"), bias.clone()));
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            push(&format!("layer{i}"), layer);
        }
        push("stage", &self.stage_head);
        push("tau", &self.tau_head);
        let vector = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).expect("a vector");
        named.push(("obs_mean".into(), vector(&self.mean)));
        named.push(("obs_std".into(), vector(&self.std)));
        named
    }

    /// Writes progress.safetensors and reward_model.json into `dir`.
    pub fn save(
        &self,
        dir: &std::path::Path,
        observation: &cerebellum_core::ObservationSpec,
        stage_names: &[String],
        model_version: u64,
    ) -> Result<ProgressContract, ProgressError> {
        let file_error = |path: &std::path::Path, e: &dyn std::fmt::Display| ProgressError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e))?;
        let contract = ProgressContract {
            format: FORMAT.into(),
            version: 1,
            kind: "progress".into(),
            model_version,
            observation: observation.clone(),
            history: self.history,
            hidden: self.layers[0].weight().dim(0)?,
            stage_names: stage_names.to_vec(),
            stage_shares: self.stage_shares.clone(),
        };
        let tensors: std::collections::HashMap<String, Tensor> =
            self.tensors().into_iter().collect();
        let weights = dir.join(WEIGHTS);
        candle_core::safetensors::save(&tensors, &weights).map_err(|e| file_error(&weights, &e))?;
        let path = dir.join(CONTRACT);
        let json = serde_json::to_vec_pretty(&contract).map_err(|e| file_error(&path, &e))?;
        std::fs::write(&path, json).map_err(|e| file_error(&path, &e))?;
        Ok(contract)
    }

    /// Loads a model saved by `save`; with `expected`, refuses one trained
    /// on another observation spec (fields, units, limits, cameras).
    pub fn load(
        dir: &std::path::Path,
        expected: Option<&cerebellum_core::ObservationSpec>,
    ) -> Result<(Self, ProgressContract), ProgressError> {
        let path = dir.join(CONTRACT);
        let file_error = |e: &dyn std::fmt::Display| ProgressError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&e))?;
        let contract: ProgressContract = serde_json::from_str(&text).map_err(|e| file_error(&e))?;
        if contract.format != FORMAT || contract.version != 1 || contract.kind != "progress" {
            return Err(file_error(&format!(
                "{} version {} kind {}, expected {FORMAT} version 1 kind progress",
                contract.format, contract.version, contract.kind
            )));
        }
        if let Some(expected) = expected
            && expected != &contract.observation
        {
            let names = |o: &cerebellum_core::ObservationSpec| {
                o.fields
                    .iter()
                    .map(|f| format!("{}[{}]", f.name, f.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ProgressError::SpecMismatch {
                path: dir.display().to_string(),
                found: names(&contract.observation),
                expected: names(expected),
            });
        }
        let weights_path = dir.join(WEIGHTS);
        let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
            ProgressError::File {
                path: weights_path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let get = |name: &str| {
            weights
                .get(name)
                .cloned()
                .ok_or_else(|| ProgressError::File {
                    path: weights_path.display().to_string(),
                    reason: format!("no tensor `{name}`"),
                })
        };
        let layer = |name: &str| -> Result<Linear, ProgressError> {
            Ok(Linear::new(
                get(&format!("{name}.weight"))?,
                Some(get(&format!("{name}.bias"))?),
            ))
        };
        let dims = contract.observation.state_len();
        let model = Self {
            layers: vec![layer("layer0")?, layer("layer1")?],
            stage_head: layer("stage")?,
            tau_head: layer("tau")?,
            mean: get("obs_mean")?.to_vec1()?,
            std: get("obs_std")?.to_vec1()?,
            history: contract.history,
            stage_shares: contract.stage_shares.clone(),
        };
        let consistent = model.mean.len() == dims
            && model.std.len() == dims
            && model.layers[0].weight().dims() == [contract.hidden, contract.history * dims]
            && model.stage_head.weight().dim(0)? == contract.stage_names.len()
            && contract.stage_shares.len() == contract.stage_names.len()
            && model.tensors().iter().all(|(_, t)| {
                t.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .is_ok_and(|v| v.iter().all(|x| x.is_finite()))
            });
        if !consistent {
            return Err(ProgressError::File {
                path: weights_path.display().to_string(),
                reason: "weights do not match the contract's shapes, or are not finite".into(),
            });
        }
        Ok((model, contract))
    }

    /// Progress in [0, 1] for every frame of an episode (states in order).
    pub fn predict(&self, states: &[Vec<f32>]) -> Result<Vec<f64>, ProgressError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = self.history * self.mean.len();
        let x: Vec<f32> = (0..states.len())
            .flat_map(|t| features(states, t, self.history, &self.mean, &self.std))
            .collect();
        let x = Tensor::from_vec(x, (states.len(), inputs), &Device::Cpu)?;
        let (logits, tau) = self.forward(&x)?;
        let stages = logits.argmax(1)?.to_vec1::<u32>()?;
        let tau = tau.flatten_all()?.to_vec1::<f32>()?;
        Ok(stages
            .iter()
            .zip(tau)
            .map(|(&k, tau)| {
                let before: f64 = self.stage_shares[..k as usize].iter().sum();
                (before + self.stage_shares[k as usize] * tau as f64).clamp(0.0, 1.0)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_shares_follow_the_stage_spans() {
        let episode = AnnotatedEpisode {
            states: vec![vec![0.0]; 6],
            stages: vec![0, 0, 0, 1, 1, 1],
        };
        let (t, shares) = targets(&episode, 2);
        let taus: Vec<f32> = t.iter().map(|x| x.1).collect();
        assert_eq!(taus, vec![0.0, 0.5, 1.0, 0.0, 0.5, 1.0]);
        assert_eq!(shares, vec![0.5, 0.5]);
    }

    #[test]
    fn a_toy_two_stage_task_is_ranked_in_time() {
        // One coordinate moves 0 → 1 (stage 0), a second then 0 → 1 (stage 1).
        let episode = |len: usize, offset: f32| {
            let half = len / 2;
            let states = (0..len)
                .map(|t| {
                    let a = (t.min(half) as f32 / half as f32) + offset;
                    let b = t.saturating_sub(half) as f32 / (len - half) as f32;
                    vec![a, b]
                })
                .collect();
            let stages = (0..len).map(|t| u32::from(t >= half)).collect();
            AnnotatedEpisode { states, stages }
        };
        let train: Vec<_> = (0..6)
            .map(|i| episode(40 + 4 * i, 0.01 * i as f32))
            .collect();
        let config = ProgressConfig {
            epochs: 300,
            ..ProgressConfig::default()
        };
        let model = ProgressModel::train(&train, 2, &config).unwrap();
        let held_out = episode(50, 0.025);
        let progress = model.predict(&held_out.states).unwrap();
        let time: Vec<f64> = (0..progress.len()).map(|t| t as f64).collect();
        let rho = crate::evaluation::spearman(&time, &progress).unwrap();
        assert!(rho > 0.95, "Spearman {rho}");
        assert!(progress[0] < 0.2 && progress[49] > 0.8, "{progress:?}");

        // Saved and loaded, it predicts the same; a corrupt or foreign
        // model is refused with the reason.
        let dir =
            std::env::temp_dir().join(format!("cerebellum-progress-unit-{}", std::process::id()));
        let spec = cerebellum_core::ObservationSpec {
            fields: vec![cerebellum_core::FieldSpec::new(
                "x",
                cerebellum_core::Unit::Normalized,
                &["a", "b"],
                &[(-2.0, 2.0), (-2.0, 2.0)],
            )],
            cameras: vec![],
            instruction: false,
        };
        let names = vec!["first".to_owned(), "second".to_owned()];
        model.save(&dir, &spec, &names, 3).unwrap();
        let (loaded, contract) = ProgressModel::load(&dir, Some(&spec)).unwrap();
        assert_eq!(contract.model_version, 3);
        assert_eq!(loaded.predict(&held_out.states).unwrap(), progress);
        let mut other = spec.clone();
        other.fields[0].name = "y".into();
        assert!(matches!(
            ProgressModel::load(&dir, Some(&other)),
            Err(ProgressError::SpecMismatch { .. })
        ));
        std::fs::write(dir.join(WEIGHTS), b"not safetensors").unwrap();
        let error = ProgressModel::load(&dir, Some(&spec))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("progress.safetensors"), "{error}");
    }
}
