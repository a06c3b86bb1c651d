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

use crate::fields::FieldSelection;
use crate::layers::{linear, normalize_into, normalize_values_into, state_statistics};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
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
    /// Rewound copies per demonstration (ReWiND, Zhang et al. 2025): the
    /// episode up to a random frame, then played backwards for a random
    /// length, every frame keeping its own label. The history of a
    /// rewound frame shows motion away from the goal with the progress of
    /// where it is, so the model learns progress from where the robot is,
    /// not from how demonstrations happen to move.
    pub rewinds: usize,
    /// Side of the grey-level grid the first camera's image is pooled to
    /// and appended to the state (0: state only). See `model_input`.
    pub image_pool: usize,
    /// The values of each input frame the model reads (all by default).
    pub fields: FieldSelection,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        Self {
            history: 3,
            hidden: 128,
            epochs: 400,
            learning_rate: 3e-3,
            seed: 0,
            rewinds: 0,
            image_pool: 0,
            fields: FieldSelection::all(),
        }
    }
}

pub use crate::contract::ModelError as ProgressError;
use crate::contract::{Expected, RewardModelContract};

const WEIGHTS: &str = "progress.safetensors";

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
    image_pool: usize,
    fields: FieldSelection,
    /// Values per input frame before the selection (`model_input`).
    frame_len: usize,
    /// ᾱ_k per stage, summing to 1.
    pub stage_shares: Vec<f64>,
}

/// What a progress model reads of one observation: the state, then, with
/// `image_pool` = P > 0, the first camera's image averaged over a P × P
/// grid of cells in grey levels scaled to [0, 1] (P² values). An
/// observation without an image gives NaN there, which the model reports
/// as a missing output rather than a guess.
pub fn model_input(observation: &cerebellum_core::Observation, image_pool: usize) -> Vec<f32> {
    let mut input = observation.state.clone();
    if image_pool == 0 {
        return input;
    }
    let Some(image) = observation.images.first().filter(|i| {
        i.width > 0 && i.height > 0 && i.data.len() == (i.width * i.height * i.channels) as usize
    }) else {
        input.extend(std::iter::repeat_n(f32::NAN, image_pool * image_pool));
        return input;
    };
    let (w, h, c) = (
        image.width as usize,
        image.height as usize,
        image.channels.max(1) as usize,
    );
    let mut sums = vec![0.0f32; image_pool * image_pool];
    let mut counts = vec![0u32; image_pool * image_pool];
    for y in 0..h {
        for x in 0..w {
            let cell = (y * image_pool / h) * image_pool + x * image_pool / w;
            let pixel = &image.data[(y * w + x) * c..][..c];
            sums[cell] += pixel.iter().map(|&v| f32::from(v)).sum::<f32>() / (255.0 * c as f32);
            counts[cell] += 1;
        }
    }
    input.extend(
        sums.iter()
            .zip(&counts)
            .map(|(s, &n)| if n > 0 { s / n as f32 } else { 0.0 }),
    );
    input
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
        Self::train_with_negatives(episodes, &[], stages, config)
    }

    /// Trains as `train`, with the frames of `negatives` (episodes that
    /// failed: the policy's own rollouts an operator marked as failures)
    /// as zero progress (first stage, τ = 0). Demonstrations alone say
    /// nothing about the states a policy reaches by going elsewhere; these
    /// frames teach the model that looking busy is not progress.
    pub fn train_with_negatives(
        episodes: &[AnnotatedEpisode],
        negatives: &[Vec<Vec<f32>>],
        stages: usize,
        config: &ProgressConfig,
    ) -> Result<Self, ProgressError> {
        let frames: usize = episodes.iter().map(|e| e.states.len()).sum();
        if frames == 0 || stages == 0 {
            return Err(ProgressError::NoData);
        }
        let dims_of_first = episodes[0].states[0].len();
        for (i, e) in negatives.iter().enumerate() {
            for (t, s) in e.iter().enumerate() {
                if s.len() != dims_of_first || s.iter().any(|v| !v.is_finite()) {
                    return Err(ProgressError::BadEpisode {
                        episode: i,
                        frame: t,
                        reason: "negative frame of the wrong size or not finite".into(),
                    });
                }
            }
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
        let select_all = |states: &[Vec<f32>]| -> Vec<Vec<f32>> {
            states.iter().map(|s| config.fields.select(s)).collect()
        };
        let selected: Vec<AnnotatedEpisode> = episodes
            .iter()
            .map(|e| AnnotatedEpisode {
                states: select_all(&e.states),
                stages: e.stages.clone(),
            })
            .collect();
        let negatives: Vec<Vec<Vec<f32>>> = negatives.iter().map(|e| select_all(e)).collect();
        if selected[0].states[0].iter().any(|v| !v.is_finite()) {
            return Err(ProgressError::BadEpisode {
                episode: 0,
                frame: 0,
                reason: format!("the field selection reads past the {dims} values of a frame"),
            });
        }
        let (episodes, frame_len, dims) = (&selected, dims, config.fields.len(dims));
        let (mean, std) = state_statistics(episodes.iter().flat_map(|e| &e.states), dims);
        let (mut x, mut labels, mut taus) = (Vec::new(), Vec::new(), Vec::new());
        let mut shares = vec![0.0; stages];
        let mut rewind_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x2E_3140);
        for e in episodes {
            let (t, s) = targets(e, stages);
            shares
                .iter_mut()
                .zip(s)
                .for_each(|(a, b)| *a += b / episodes.len() as f64);
            for (frame, (k, tau)) in t.iter().enumerate() {
                x.extend(features(&e.states, frame, config.history, &mean, &std));
                labels.push(*k);
                taus.push(*tau);
            }
            let n = e.states.len();
            let rewinds = if n > 2 { config.rewinds } else { 0 };
            for _ in 0..rewinds {
                let cut = rewind_rng.random_range(n / 4..n - 1).max(1);
                let length = rewind_rng.random_range(1..=cut);
                let order: Vec<usize> = (0..=cut).chain((cut - length..cut).rev()).collect();
                let states: Vec<Vec<f32>> = order.iter().map(|&i| e.states[i].clone()).collect();
                for (frame, &i) in order.iter().enumerate().skip(cut + 1) {
                    x.extend(features(&states, frame, config.history, &mean, &std));
                    labels.push(t[i].0);
                    taus.push(t[i].1);
                }
            }
        }
        for e in &negatives {
            for frame in 0..e.len() {
                x.extend(features(e, frame, config.history, &mean, &std));
                labels.push(0);
                taus.push(0.0);
            }
        }
        let frames = labels.len();
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
            image_pool: config.image_pool,
            fields: config.fields.clone(),
            frame_len,
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
        instruction: Option<&str>,
        stage_names: &[String],
        model_version: u64,
    ) -> Result<RewardModelContract, ProgressError> {
        let mut contract = RewardModelContract::new(
            "progress",
            model_version,
            observation,
            instruction,
            self.history,
            self.layers[0].weight().dim(0)?,
        );
        contract.stage_names = stage_names.to_vec();
        contract.stage_shares = self.stage_shares.clone();
        contract.image_pool = self.image_pool;
        contract.fields = self.fields.names().to_vec();
        crate::contract::save(dir, &contract, WEIGHTS, self.tensors())?;
        Ok(contract)
    }

    /// Loads a model saved by `save`; with `expected`, refuses one trained
    /// on another observation spec (fields, units, limits, cameras) or
    /// another instruction.
    pub fn load(
        dir: &std::path::Path,
        expected: Option<Expected<'_>>,
    ) -> Result<(Self, RewardModelContract), ProgressError> {
        let loaded = crate::contract::load(dir, "progress", WEIGHTS, expected)?;
        let contract = loaded.contract.clone();
        let frame_len = contract.observation.state_len() + contract.image_pool.pow(2);
        let fields = FieldSelection::new(
            &contract.observation,
            &contract.fields,
            contract.image_pool.pow(2),
        )?;
        let dims = fields.len(frame_len);
        if contract.image_pool > 0 && contract.observation.cameras.is_empty() {
            return Err(ProgressError::File {
                path: dir.display().to_string(),
                reason: "the model reads a camera image but its observation spec has no camera"
                    .into(),
            });
        }
        let (hidden, stages) = (contract.hidden, contract.stage_names.len());
        let inputs = loaded.inputs(contract.history, dims)?;
        let model = Self {
            layers: vec![
                loaded.linear("layer0", inputs, hidden)?,
                loaded.linear("layer1", hidden, hidden)?,
            ],
            stage_head: loaded.linear("stage", hidden, stages)?,
            tau_head: loaded.linear("tau", hidden, 1)?,
            mean: loaded.vector("obs_mean", dims, false)?,
            std: loaded.vector("obs_std", dims, true)?,
            history: contract.history,
            image_pool: contract.image_pool,
            fields,
            frame_len,
            stage_shares: contract.stage_shares.clone(),
        };
        Ok((model, contract))
    }

    /// Values per frame of input (`model_input`).
    pub fn input_len(&self) -> usize {
        self.frame_len
    }

    /// This model's input for one observation.
    pub fn input(&self, observation: &cerebellum_core::Observation) -> Vec<f32> {
        model_input(observation, self.image_pool)
    }

    /// Frames of history one prediction reads.
    pub fn history(&self) -> usize {
        self.history
    }

    /// Progress for each window of `history` states (oldest first, each
    /// window `history × state` values): `None` where the model's output
    /// is not finite (a non-finite state, or weights gone bad), so the
    /// caller can mark the reward missing instead of zero.
    pub fn predict_windows(&self, windows: &[f32]) -> Result<Vec<Option<f64>>, ProgressError> {
        let window_len = self.history * self.frame_len;
        let n = windows.len() / window_len.max(1);
        if n == 0 {
            return Ok(Vec::new());
        }
        let inputs = self.history * self.mean.len();
        let mut x = Vec::with_capacity(n * inputs);
        for frame in windows[..n * window_len].chunks_exact(self.frame_len) {
            normalize_values_into(&mut x, self.fields.values(frame), &self.mean, &self.std);
        }
        // A ReLU turns NaN into 0, so a bad input must be caught before it
        // (a non-finite value read stays non-finite once normalised).
        let finite_inputs: Vec<bool> = x
            .chunks_exact(inputs.max(1))
            .map(|w| w.iter().all(|v| v.is_finite()))
            .collect();
        let x = Tensor::from_vec(x, (n, inputs), &Device::Cpu)?;
        let (logits, tau) = self.forward(&x)?;
        let logits = logits.to_vec2::<f32>()?;
        let tau = tau.flatten_all()?.to_vec1::<f32>()?;
        Ok(logits
            .iter()
            .zip(tau)
            .zip(finite_inputs)
            .map(|((row, tau), finite)| {
                if !finite || !tau.is_finite() || row.iter().any(|v| !v.is_finite()) {
                    return None;
                }
                let k = row
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
                Some(self.progress(k, tau))
            })
            .collect())
    }

    fn progress(&self, stage: usize, tau: f32) -> f64 {
        let before: f64 = self.stage_shares[..stage].iter().sum();
        (before + self.stage_shares[stage] * tau as f64).clamp(0.0, 1.0)
    }

    /// Progress in [0, 1] for every frame of an episode (states in order).
    pub fn predict(&self, states: &[Vec<f32>]) -> Result<Vec<f64>, ProgressError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = self.history * self.mean.len();
        let states: Vec<Vec<f32>> = states.iter().map(|s| self.fields.select(s)).collect();
        let x: Vec<f32> = (0..states.len())
            .flat_map(|t| features(&states, t, self.history, &self.mean, &self.std))
            .collect();
        let x = Tensor::from_vec(x, (states.len(), inputs), &Device::Cpu)?;
        let (logits, tau) = self.forward(&x)?;
        let stages = logits.argmax(1)?.to_vec1::<u32>()?;
        let tau = tau.flatten_all()?.to_vec1::<f32>()?;
        Ok(stages
            .iter()
            .zip(tau)
            .map(|(&k, tau)| self.progress(k as usize, tau))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rollouts_as_negatives_lower_the_progress_of_what_they_visit() {
        // Demonstrations: a moves 0 → 1, then b does. A failed rollout
        // wiggles b without ever finishing a: no progress there.
        let demos: Vec<AnnotatedEpisode> = (0..4)
            .map(|i| {
                let n: usize = 30 + 2 * i;
                let states = (0..n)
                    .map(|t| {
                        let a = (2 * t).min(n) as f32 / n as f32;
                        let b = (2 * t).saturating_sub(n) as f32 / n as f32;
                        vec![a, b]
                    })
                    .collect();
                let stages = (0..n).map(|t| u32::from(2 * t >= n)).collect();
                AnnotatedEpisode { states, stages }
            })
            .collect();
        let failed: Vec<Vec<f32>> = (0..30)
            .map(|t| vec![0.3, 0.5 + 0.4 * ((t % 4) as f32 / 4.0)])
            .collect();
        let config = ProgressConfig {
            epochs: 200,
            history: 1,
            hidden: 32,
            ..ProgressConfig::default()
        };
        let plain = ProgressModel::train(&demos, 2, &config).unwrap();
        let taught =
            ProgressModel::train_with_negatives(&demos, std::slice::from_ref(&failed), 2, &config)
                .unwrap();
        let mean = |m: &ProgressModel| m.predict(&failed).unwrap().iter().sum::<f64>() / 30.0;
        assert!(
            mean(&taught) < 0.5 * mean(&plain),
            "{} vs {}",
            mean(&taught),
            mean(&plain)
        );
        // The demonstrations still rank in time.
        let p = taught.predict(&demos[0].states).unwrap();
        let time: Vec<f64> = (0..p.len()).map(|t| t as f64).collect();
        assert!(crate::evaluation::spearman(&time, &p).unwrap() > 0.9);
    }

    #[test]
    fn the_camera_image_is_pooled_to_grey_cells_after_the_state() {
        let image = cerebellum_core::Image {
            camera: "front".into(),
            width: 2,
            height: 2,
            channels: 3,
            // Pixels: black, white / red, grey 51.
            data: vec![0, 0, 0, 255, 255, 255, 255, 0, 0, 51, 51, 51],
        };
        let observation = cerebellum_core::Observation {
            state: vec![7.0],
            images: vec![image],
            instruction: None,
            timestamp: 0.0,
        };
        let two = model_input(&observation, 2);
        let expected = [7.0, 0.0, 1.0, 1.0 / 3.0, 0.2];
        for (a, b) in two.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{two:?}");
        }
        let one = model_input(&observation, 1);
        assert!((one[1] - (1.0 + 1.0 / 3.0 + 0.2) / 4.0).abs() < 1e-6);
        assert_eq!(model_input(&observation, 0), vec![7.0]);
        let blind = cerebellum_core::Observation {
            images: vec![],
            ..observation
        };
        assert!(model_input(&blind, 2)[1..].iter().all(|v| v.is_nan()));
    }

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
        let expect = |observation| Expected {
            observation,
            instruction: Some("rank it"),
        };
        model.save(&dir, &spec, Some("rank it"), &names, 3).unwrap();
        let (loaded, contract) = ProgressModel::load(&dir, Some(expect(&spec))).unwrap();
        assert_eq!(contract.model_version, 3);
        assert_eq!(loaded.predict(&held_out.states).unwrap(), progress);
        let mut other = spec.clone();
        other.fields[0].name = "y".into();
        assert!(matches!(
            ProgressModel::load(&dir, Some(expect(&other))),
            Err(ProgressError::SpecMismatch { .. })
        ));
        let other_task = Expected {
            observation: &spec,
            instruction: Some("something else"),
        };
        assert!(matches!(
            ProgressModel::load(&dir, Some(other_task)),
            Err(ProgressError::InstructionMismatch { .. })
        ));
        // Windows give what whole episodes give.
        let h = loaded.history();
        let windows: Vec<f32> = (0..held_out.states.len())
            .flat_map(|t| {
                (0..h)
                    .rev()
                    .flat_map(|back| held_out.states[t.saturating_sub(back)].clone())
                    .collect::<Vec<f32>>()
            })
            .collect();
        let by_window = loaded.predict_windows(&windows).unwrap();
        for (a, b) in by_window.iter().zip(&progress) {
            assert!((a.unwrap() - b).abs() < 1e-6);
        }
        std::fs::write(dir.join(WEIGHTS), b"not safetensors").unwrap();
        let error = ProgressModel::load(&dir, Some(expect(&spec)))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("progress.safetensors"), "{error}");
    }

    #[test]
    fn a_model_reads_only_its_fields_and_keeps_them_through_save_and_load() {
        // State: x = (a, b) moving 0 → 1 in turn, then a distractor that
        // demonstrations happen to move with time too.
        let spec = cerebellum_core::ObservationSpec {
            fields: vec![
                cerebellum_core::FieldSpec::new(
                    "x",
                    cerebellum_core::Unit::Normalized,
                    &["a", "b"],
                    &[(-2.0, 2.0), (-2.0, 2.0)],
                ),
                cerebellum_core::FieldSpec::new(
                    "busy",
                    cerebellum_core::Unit::Normalized,
                    &["v"],
                    &[(-2.0, 2.0)],
                ),
            ],
            cameras: vec![],
            instruction: false,
        };
        let episode = |len: usize| {
            let half = len / 2;
            let states = (0..len)
                .map(|t| {
                    let a = t.min(half) as f32 / half as f32;
                    let b = t.saturating_sub(half) as f32 / (len - half) as f32;
                    vec![a, b, t as f32 / len as f32]
                })
                .collect();
            let stages = (0..len).map(|t| u32::from(t >= half)).collect();
            AnnotatedEpisode { states, stages }
        };
        let train: Vec<_> = (0..6).map(|i| episode(40 + 4 * i)).collect();
        let config = ProgressConfig {
            epochs: 300,
            history: 2,
            fields: FieldSelection::new(&spec, &["x".to_owned()], 0).unwrap(),
            ..ProgressConfig::default()
        };
        let model = ProgressModel::train(&train, 2, &config).unwrap();
        assert_eq!(model.input_len(), 3);
        let held_out = episode(50);
        let progress = model.predict(&held_out.states).unwrap();
        // Only looking busy: the distractor at its final value changes nothing.
        let busy: Vec<Vec<f32>> = held_out
            .states
            .iter()
            .map(|s| vec![s[0], s[1], 1.0])
            .collect();
        assert_eq!(model.predict(&busy).unwrap(), progress);

        let dir =
            std::env::temp_dir().join(format!("cerebellum-progress-fields-{}", std::process::id()));
        let names = vec!["first".to_owned(), "second".to_owned()];
        let contract = model.save(&dir, &spec, None, &names, 1).unwrap();
        assert_eq!(contract.fields, vec!["x".to_owned()]);
        let expected = Expected {
            observation: &spec,
            instruction: None,
        };
        let (loaded, _) = ProgressModel::load(&dir, Some(expected)).unwrap();
        assert_eq!(loaded.predict(&held_out.states).unwrap(), progress);
        // Windows of whole frames (as the labeller builds them) agree.
        let windows: Vec<f32> = (0..held_out.states.len())
            .flat_map(|t| {
                [t.saturating_sub(1), t]
                    .into_iter()
                    .flat_map(|i| held_out.states[i].clone())
            })
            .collect();
        for (a, b) in loaded
            .predict_windows(&windows)
            .unwrap()
            .iter()
            .zip(&progress)
        {
            assert!((a.unwrap() - b).abs() < 1e-6);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
