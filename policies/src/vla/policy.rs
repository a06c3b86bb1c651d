//! [`VlaPolicy`]: the VLA network as a robot policy (`Policy`: one chunk
//! per observation) and as a trainable one (`TrainablePolicy`: exact
//! log-probabilities of executed chunk actions, values, imitation errors).

use super::config::VlaConfig;
use super::finetune::{Finetune, TrainScope};
use super::model::{Forward, GROUPS, Inputs, VlaModel, trained_groups};
use super::tokenizer::InstructionTokenizer;
use crate::gaussian::{GaussianConfig, GaussianMlpPolicy, LOG_STD_FLOOR, diagonal_log_prob};
use crate::optim::{Adam, clip_global_norm};
use crate::trainable::{
    Decision, EncodedDecisions, OutputGrads, Outputs, ParameterGroup, TrainablePolicy, Wants,
    gradients_by_group,
};
use candle_core::{Device, Tensor};
use cerebellum_core::{
    Action, ActionChunk, Evaluation, Observation, Policy, PolicyError, PolicyOutput, RobotSpec,
    Sampling,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const HALF_LOG_TWO_PI: f32 = 0.918_938_5;

/// Rows per forward pass where a caller hands over many observations at
/// once (values of a whole rollout, a feature cache): activations of a
/// 64 × 64 frame are ~1.5 MB a row, so passes are bounded (and kept
/// under the allocator's 32 MiB mmap threshold, `runtime/src/memory.rs`,
/// so their buffers are reused rather than mapped and faulted in anew).
const PASS_ROWS: usize = 32;

/// A tensor's checkpoint name, shape and values.
pub(crate) type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Pixels are read as (v / 255 − mean) / std, per channel.
pub const PIXEL_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const PIXEL_STD: [f32; 3] = [0.25, 0.25, 0.25];

pub(crate) fn candle(e: candle_core::Error) -> PolicyError {
    PolicyError::Other(format!("candle: {e}"))
}

/// The vision-language-action policy. See the module documentation of
/// [`super`].
pub struct VlaPolicy {
    /// Spec, state statistics, the action mapping and the version; its MLP
    /// weights are unused.
    pub(crate) base: GaussianMlpPolicy,
    pub(crate) tokenizer: InstructionTokenizer,
    pub(crate) model: VlaModel,
    /// Instruction words read as `[UNK]` since the policy was made.
    pub unknown_words: u64,
    /// Instruction words past `max_words`, dropped.
    pub dropped_words: u64,
}

impl std::fmt::Debug for VlaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlaPolicy")
            .field("config", &self.model.config)
            .field("parameters", &self.model.param_count())
            .finish_non_exhaustive()
    }
}

impl Clone for VlaPolicy {
    /// A deep copy: the clone's weights do not move with the original's.
    fn clone(&self) -> Self {
        Self {
            base: self.base.clone(),
            tokenizer: self.tokenizer.clone(),
            model: self
                .model
                .deep_clone()
                .expect("copying a policy's own tensors on its own device"),
            unknown_words: self.unknown_words,
            dropped_words: self.dropped_words,
        }
    }
}

/// Decisions in the VLA's coordinates: each row's camera frame (bytes),
/// instruction words, normalised state, and its executed actions in
/// normalised action coordinates. A policy whose encoder is frozen
/// (`head` fine-tuning) encodes each row's encoder output instead of its
/// frame: the feature cache.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VlaDecisions {
    frame: usize,
    obs: usize,
    act: usize,
    words: usize,
    /// `rows × frame` bytes (H × W × 3, as the camera sent them); empty
    /// when the rows carry cached features.
    pub frames: Vec<u8>,
    /// `rows × encoded` cached encoder outputs (keypoints, instruction),
    /// or empty.
    pub features: Vec<f32>,
    /// Width of a cached row (0 without a cache).
    pub encoded: usize,
    /// `rows × max_words` word ids.
    pub word_ids: Vec<u32>,
    /// `rows × obs`.
    pub states: Vec<f32>,
    /// `actions × act`, the rows' actions one after the other.
    pub actions: Vec<f32>,
    pub first_index: Vec<usize>,
    /// `rows + 1` offsets into the actions.
    pub starts: Vec<usize>,
}

impl VlaDecisions {
    /// Adds `other`'s rows after this batch's (both encoded by one policy).
    pub fn append(&mut self, other: VlaDecisions) -> Result<(), PolicyError> {
        if self.first_index.is_empty() && self.frames.is_empty() {
            *self = other;
            return Ok(());
        }
        if (self.frame, self.obs, self.act, self.words, self.encoded)
            != (
                other.frame,
                other.obs,
                other.act,
                other.words,
                other.encoded,
            )
        {
            return Err(PolicyError::Other(
                "decisions encoded for another policy shape".into(),
            ));
        }
        let offset = self.starts.last().copied().unwrap_or(0);
        self.frames.extend(other.frames);
        self.features.extend(other.features);
        self.word_ids.extend(other.word_ids);
        self.states.extend(other.states);
        self.actions.extend(other.actions);
        self.first_index.extend(other.first_index);
        self.starts
            .extend(other.starts.into_iter().skip(1).map(|s| s + offset));
        Ok(())
    }
}

impl EncodedDecisions for VlaDecisions {
    fn len(&self) -> usize {
        self.first_index.len()
    }

    fn actions_in(&self, row: usize) -> usize {
        self.starts[row + 1] - self.starts[row]
    }
}

/// The last forward pass's outputs (their graphs lead to the variables)
/// and the gradients accumulated since the last step, per group.
#[derive(Default)]
pub struct VlaWorkspace {
    log_probs: Option<Tensor>,
    entropies: Option<Tensor>,
    imitation: Option<Tensor>,
    values: Option<Tensor>,
    grads: Vec<Vec<f32>>,
}

/// How a behaviour-cloning step perturbs its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    /// Each frame moved by up to this many px (edge repeated; DrQ).
    pub shift: u32,
    /// Each instruction word dropped with this probability (one is always
    /// kept), so the policy does not lean on the words around the one
    /// that matters.
    pub word_dropout: f32,
}

/// A behaviour-cloning step's losses (means over the batch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImitationLoss {
    /// ½‖μ − a‖² per action, normalised coordinates.
    pub imitation: f32,
    /// ‖aux − target‖² per row (0 without targets).
    pub aux: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
}

impl VlaPolicy {
    /// A fresh policy for `spec` (its first camera must be
    /// `image_size`² RGB, and its observations must carry an instruction).
    pub fn new(
        spec: &RobotSpec,
        config: VlaConfig,
        tokenizer: InstructionTokenizer,
        seed: u64,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        config.validate_at("vla").map_err(PolicyError::Other)?;
        check_spec(spec, &config)?;
        // The MLP the base holds is a placeholder of one unit: only its
        // statistics, action mapping and version are used.
        let base = GaussianMlpPolicy::new(
            spec,
            GaussianConfig {
                hidden: vec![1],
                ..config.gaussian()
            },
            seed,
        )?;
        let model = VlaModel::new(
            &config,
            base.obs_size(),
            base.act_size(),
            tokenizer.vocab_size(),
            seed,
            device,
        )
        .map_err(candle)?;
        Ok(Self {
            base,
            tokenizer,
            model,
            unknown_words: 0,
            dropped_words: 0,
        })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.model.config
    }

    pub fn tokenizer(&self) -> &InstructionTokenizer {
        &self.tokenizer
    }

    pub fn horizon(&self) -> usize {
        self.model.config.horizon
    }

    pub fn act_size(&self) -> usize {
        self.model.act
    }

    pub fn obs_size(&self) -> usize {
        self.model.obs
    }

    pub fn param_count(&self) -> usize {
        self.model.param_count()
    }

    pub fn device(&self) -> &Device {
        &self.model.device
    }

    pub fn normalizer(&self) -> &crate::Normalizer {
        &self.base.normalizer
    }

    pub fn log_std(&self) -> Result<Vec<f32>, PolicyError> {
        flat(self.model.log_std.as_tensor())
    }

    /// Bytes of one camera frame the model reads.
    fn frame_len(&self) -> usize {
        let s = self.model.config.image_size as usize;
        s * s * 3
    }

    /// Checks the observation and returns its frame and instruction words.
    fn read<'o>(&mut self, o: &'o Observation) -> Result<(&'o [u8], Vec<u32>), PolicyError> {
        self.base.spec.observation.check(o)?;
        let Some(text) = o.instruction.as_deref() else {
            return Err(PolicyError::Other(
                "observation has no instruction; the vision-language policy needs one".into(),
            ));
        };
        let tokens = self
            .tokenizer
            .encode(text, self.model.config.max_words)
            .map_err(PolicyError::Other)?;
        self.unknown_words += tokens.unknown as u64;
        self.dropped_words += tokens.dropped as u64;
        Ok((&o.images[0].data, tokens.ids))
    }

    /// Encodes observations (each checked) as network inputs.
    fn inputs_of(&mut self, observations: &[Observation]) -> Result<Inputs, PolicyError> {
        let mut frames = Vec::with_capacity(observations.len() * self.frame_len());
        let mut words = Vec::new();
        let mut states = vec![0.0; observations.len() * self.obs_size()];
        for (o, row) in observations
            .iter()
            .zip(states.chunks_exact_mut(self.model.obs))
        {
            let (frame, ids) = self.read(o)?;
            frames.extend_from_slice(frame);
            words.extend(ids);
            self.base.normalizer.normalize_into(&o.state, row);
        }
        self.inputs(&frames, &words, states, None)
    }

    /// Network inputs from raw frames (`rows × S × S × 3` bytes), word ids
    /// and normalised states; `shifts` moves each frame by (dx, dy) px,
    /// repeating its edge (random-shift augmentation, DrQ).
    pub fn inputs(
        &self,
        frames: &[u8],
        words: &[u32],
        states: Vec<f32>,
        shifts: Option<&[(i32, i32)]>,
    ) -> Result<Inputs, PolicyError> {
        let s = self.model.config.image_size as usize;
        let rows = frames.len() / (s * s * 3);
        let l = self.model.config.max_words;
        let mut pixels = vec![0.0f32; rows * 3 * s * s];
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * PIXEL_STD[c]));
        let offset: [f32; 3] = std::array::from_fn(|c| PIXEL_MEAN[c] / PIXEL_STD[c]);
        for (r, (frame, out)) in frames
            .chunks_exact(s * s * 3)
            .zip(pixels.chunks_exact_mut(3 * s * s))
            .enumerate()
        {
            let (dx, dy) = shifts.map_or((0, 0), |v| v[r]);
            for y in 0..s {
                let sy = (y as i32 + dy).clamp(0, s as i32 - 1) as usize;
                for x in 0..s {
                    let sx = (x as i32 + dx).clamp(0, s as i32 - 1) as usize;
                    let p = &frame[(sy * s + sx) * 3..][..3];
                    for c in 0..3 {
                        out[c * s * s + y * s + x] = f32::from(p[c]) * scale[c] - offset[c];
                    }
                }
            }
        }
        let mask: Vec<f32> = words.iter().map(|&w| f32::from(u8::from(w != 0))).collect();
        let dev = &self.model.device;
        let build = || -> candle_core::Result<Inputs> {
            Ok(Inputs {
                images: Tensor::from_vec(pixels, (rows, 3, s, s), dev)?,
                words: Tensor::from_slice(words, (rows, l), dev)?,
                mask: Tensor::from_vec(mask, (rows, l), dev)?,
                states: Tensor::from_vec(states, (rows, self.model.obs), dev)?,
            })
        };
        build().map_err(candle)
    }

    /// The chunk means (`rows × H × act`, normalised) for observations.
    pub fn means(&mut self, observations: &[Observation]) -> Result<Vec<f32>, PolicyError> {
        let mut out = Vec::new();
        for part in observations.chunks(PASS_ROWS) {
            let inputs = self.inputs_of(part)?;
            let forward = self.model.forward(&inputs, false).map_err(candle)?;
            out.extend(flat(&forward.means)?);
        }
        Ok(out)
    }

    /// Sets what RL trains (`finetune.train`): `lora` adds adapters drawn
    /// from `seed`. The observation statistics are frozen: the cloned
    /// policy's normalisation is part of what is fine-tuned.
    pub fn set_finetune(&mut self, finetune: &Finetune, seed: u64) -> Result<(), PolicyError> {
        finetune
            .validate_at("finetune")
            .map_err(PolicyError::Other)?;
        self.model.set_scope(finetune, seed).map_err(candle)?;
        self.base.normalizer.frozen = true;
        Ok(())
    }

    /// Sets every chunk position's log σ (at least the floor).
    pub fn set_log_std(&mut self, log_std: f32) -> Result<(), PolicyError> {
        let n = self.model.log_std.elem_count();
        let values = vec![log_std.max(LOG_STD_FLOOR); n];
        let t = Tensor::from_vec(values, n, &self.model.device).map_err(candle)?;
        self.model.log_std.set(&t).map_err(candle)
    }

    /// What training moves.
    pub fn scope(&self) -> TrainScope {
        self.model.scope
    }

    /// The adapters' settings, when the policy has adapters.
    pub fn adapters(&self) -> Option<Finetune> {
        self.model.adapters.as_ref().map(|a| a.finetune)
    }

    /// A copy with the adapters folded into the base weights: a plain VLA
    /// giving the same chunks (up to float rounding), trained whole.
    pub fn merged(&self) -> Result<VlaPolicy, PolicyError> {
        let mut copy = self.clone();
        copy.model.merge_adapters().map_err(candle)?;
        Ok(copy)
    }

    /// Every parameter, group by group in [`GROUPS`] order (the adapters
    /// last, when there are any), trained or not.
    pub fn all_parameters(&self) -> Vec<Vec<f32>> {
        self.model
            .flat()
            .expect("reading the policy's own f32 variables")
    }

    /// The checkpoint names and values of the tensors of the groups
    /// `groups` (indices into [`GROUPS`]).
    pub(crate) fn named_tensors(&self, groups: &[usize]) -> Result<Vec<NamedTensor>, PolicyError> {
        let all = self.model.groups();
        let mut out = Vec::new();
        for &g in groups {
            for (name, var) in &all[g] {
                out.push((name.clone(), var.dims().to_vec(), flat(var.as_tensor())?));
            }
        }
        Ok(out)
    }

    /// The encoder's output for observations (`rows × encoded_width`).
    pub fn encoded(&mut self, observations: &[Observation]) -> Result<Vec<f32>, PolicyError> {
        let mut out = Vec::new();
        for part in observations.chunks(PASS_ROWS) {
            let inputs = self.inputs_of(part)?;
            out.extend(flat(&self.model.encode(&inputs).map_err(candle)?)?);
        }
        Ok(out)
    }

    /// The rows of `batch` as inputs (`shift` > 0: each frame moved by a
    /// random offset of at most that many px, drawn from `rng`).
    fn batch_inputs(
        &self,
        batch: &VlaDecisions,
        rows: &[usize],
        augment: Option<(Augment, &mut ChaCha8Rng)>,
    ) -> Result<Inputs, PolicyError> {
        let (frame, obs, l) = (batch.frame, batch.obs, batch.words);
        if batch.frames.len() != batch.len() * frame {
            return Err(PolicyError::Other(
                "these decisions carry cached encoder features, not frames: they were encoded by a policy whose encoder is frozen".into(),
            ));
        }
        let mut frames = Vec::with_capacity(rows.len() * frame);
        let mut words = Vec::with_capacity(rows.len() * l);
        let mut states = Vec::with_capacity(rows.len() * obs);
        check_rows(batch, rows)?;
        for &i in rows {
            frames.extend_from_slice(&batch.frames[i * frame..][..frame]);
            words.extend_from_slice(&batch.word_ids[i * l..][..l]);
            states.extend_from_slice(&batch.states[i * obs..][..obs]);
        }
        let shifts: Option<Vec<(i32, i32)>> = augment.map(|(augment, rng)| {
            let m = augment.shift as i32;
            let shifts = rows
                .iter()
                .map(|_| (rng.random_range(-m..=m), rng.random_range(-m..=m)))
                .collect();
            if augment.word_dropout > 0.0 {
                for row in words.chunks_exact_mut(l) {
                    let present: Vec<usize> = (0..l).filter(|&k| row[k] != 0).collect();
                    let keep = present
                        .get(rng.random_range(0..present.len().max(1)))
                        .copied();
                    for &k in &present {
                        if Some(k) != keep && rng.random::<f32>() < augment.word_dropout {
                            row[k] = 0;
                        }
                    }
                }
            }
            shifts
        });
        self.inputs(&frames, &words, states, shifts.as_deref())
    }

    /// Means at each executed action's chunk position, and that position.
    fn executed_means(
        &self,
        forward: &Forward,
        batch: &VlaDecisions,
        rows: &[usize],
    ) -> candle_core::Result<(Tensor, Tensor, Vec<u32>)> {
        let (act, horizon) = (self.model.act, self.model.config.horizon);
        let mut positions = Vec::new();
        let mut chunk_positions = Vec::new();
        let mut actions = Vec::new();
        for (r, &i) in rows.iter().enumerate() {
            let (start, end) = (batch.starts[i], batch.starts[i + 1]);
            actions.extend_from_slice(&batch.actions[start * act..end * act]);
            for j in 0..end - start {
                positions.push((r * horizon + batch.first_index[i] + j) as u32);
                chunk_positions.push((batch.first_index[i] + j) as u32);
            }
        }
        let n = positions.len();
        let dev = &self.model.device;
        let means = forward
            .means
            .reshape((rows.len() * horizon, act))?
            .index_select(&Tensor::from_vec(positions, n, dev)?, 0)?;
        let actions = Tensor::from_vec(actions, (n, act), dev)?;
        Ok((means, actions, chunk_positions))
    }

    /// One behaviour-cloning step on `rows` of `batch`: the mean squared
    /// error of the chunk means (½‖μ − a‖² per executed action, averaged),
    /// plus `aux_weight` × the auxiliary head's squared error to
    /// `aux_targets` (3 per row: the named object's position, a privileged
    /// training signal), inputs perturbed by `augment`.
    #[allow(clippy::too_many_arguments)]
    pub fn imitation_step(
        &mut self,
        batch: &VlaDecisions,
        rows: &[usize],
        aux_targets: Option<&[f32]>,
        aux_weight: f32,
        augment: Augment,
        rng: &mut ChaCha8Rng,
        optimizer: &mut Adam,
        max_grad_norm: f32,
    ) -> Result<ImitationLoss, PolicyError> {
        let perturbed = augment.shift > 0 || augment.word_dropout > 0.0;
        let inputs = self.batch_inputs(batch, rows, perturbed.then_some((augment, rng)))?;
        let dev = self.model.device.clone();
        let run = || -> candle_core::Result<(Tensor, f32, f32)> {
            let forward = self.model.forward(&inputs, false)?;
            let (means, actions, _) = self.executed_means(&forward, batch, rows)?;
            let imitation = (actions.sub(&means)?.sqr()?.sum(1)? * 0.5)?.mean_all()?;
            let mut loss = imitation.clone();
            let mut aux_loss = 0.0;
            if let Some(targets) = aux_targets.filter(|_| aux_weight > 0.0) {
                let t = Tensor::from_slice(targets, (rows.len(), 3), &dev)?;
                let aux = forward.aux.sub(&t)?.sqr()?.sum(1)?.mean_all()?;
                aux_loss = aux.to_scalar::<f32>()?;
                loss = loss.add(&(aux * f64::from(aux_weight))?)?;
            }
            Ok((loss, imitation.to_scalar::<f32>()?, aux_loss))
        };
        let (loss, imitation, aux) = run().map_err(candle)?;
        let store = loss.backward().map_err(candle)?;
        let mut ws = VlaWorkspace::default();
        self.size_grads(&mut ws);
        self.model
            .accumulate(&store, &mut ws.grads)
            .map_err(candle)?;
        let grad_norm = self.clip_gradients(&mut ws, max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(PolicyError::Other(format!(
                "behaviour cloning: gradient norm {grad_norm}"
            )));
        }
        self.step(optimizer, &mut ws);
        Ok(ImitationLoss {
            imitation,
            aux,
            grad_norm,
        })
    }

    /// The auxiliary head's output for `rows` of `batch` (`rows × 3`).
    pub fn aux_outputs(
        &self,
        batch: &VlaDecisions,
        rows: &[usize],
    ) -> Result<Vec<f32>, PolicyError> {
        let inputs = self.batch_inputs(batch, rows, None)?;
        let forward = self.model.forward(&inputs, false).map_err(candle)?;
        flat(&forward.aux)
    }

    /// Overwrites the groups `indices` (into [`GROUPS`]).
    pub(crate) fn set_groups(
        &mut self,
        indices: &[usize],
        values: &[Vec<f32>],
    ) -> Result<(), PolicyError> {
        self.model.set_groups(indices, values).map_err(candle)
    }

    /// Overwrites every parameter, group by group in [`GROUPS`] order (the
    /// adapters last, when there are any).
    pub fn set_parameters(&mut self, groups: &[Vec<f32>]) -> Result<(), PolicyError> {
        self.model.set_flat(groups).map_err(candle)
    }

    /// The observations' normaliser moved over `states` and frozen: the
    /// statistics behaviour cloning trains with (all demonstrations).
    pub fn set_statistics(&mut self, states: &[f32]) {
        self.base.normalizer.frozen = false;
        self.base.normalizer.update(states);
        self.base.normalizer.frozen = true;
    }

    fn grad_store(
        &self,
        grads: &OutputGrads,
        ws: &VlaWorkspace,
    ) -> Result<Option<candle_core::backprop::GradStore>, PolicyError> {
        let outputs = crate::candle_grads::ForwardOutputs {
            log_probs: ws.log_probs.as_ref(),
            entropies: ws.entropies.as_ref(),
            imitation: ws.imitation.as_ref(),
            values: ws.values.as_ref(),
        };
        crate::candle_grads::objective(grads, outputs, &self.model.device)?
            .map(|t| t.backward().map_err(candle))
            .transpose()
    }

    /// Replaces the rows' frames by the frozen encoder's output: every
    /// forward pass of the update then starts at the head.
    fn cache_features(&self, batch: &mut VlaDecisions) -> Result<(), PolicyError> {
        let width = self.model.encoded_width();
        let mut features = Vec::with_capacity(batch.len() * width);
        let rows: Vec<usize> = (0..batch.len()).collect();
        for part in rows.chunks(PASS_ROWS) {
            let inputs = self.batch_inputs(batch, part, None)?;
            let encoded = self.model.encode(&inputs).map_err(candle)?;
            features.extend(flat(&encoded)?);
        }
        batch.features = features;
        batch.encoded = width;
        batch.frames = Vec::new();
        Ok(())
    }

    /// The network's outputs for `rows` of `batch`: from the cached
    /// encoder features when the batch has them, else from the frames.
    fn forward_rows(
        &self,
        batch: &VlaDecisions,
        rows: &[usize],
        values: bool,
    ) -> Result<Forward, PolicyError> {
        if batch.encoded == 0 {
            let inputs = self.batch_inputs(batch, rows, None)?;
            return self.model.forward(&inputs, values).map_err(candle);
        }
        if !self.model.encoder_frozen() || batch.encoded != self.model.encoded_width() {
            return Err(PolicyError::Other(format!(
                "these decisions carry cached encoder features; this policy trains `{}` and its encoder may move",
                self.scope().name()
            )));
        }
        let (width, obs) = (batch.encoded, batch.obs);
        let mut features = Vec::with_capacity(rows.len() * width);
        let mut states = Vec::with_capacity(rows.len() * obs);
        check_rows(batch, rows)?;
        for &i in rows {
            features.extend_from_slice(&batch.features[i * width..][..width]);
            states.extend_from_slice(&batch.states[i * obs..][..obs]);
        }
        let dev = &self.model.device;
        let run = || -> candle_core::Result<Forward> {
            let features = Tensor::from_vec(features, (rows.len(), width), dev)?;
            let states = Tensor::from_vec(states, (rows.len(), obs), dev)?;
            self.model.heads(&features, &states, values)
        };
        run().map_err(candle)
    }

    fn size_grads(&self, ws: &mut VlaWorkspace) {
        let groups = TrainablePolicy::parameter_groups(self);
        ws.grads.resize(groups.len(), Vec::new());
        for (g, group) in ws.grads.iter_mut().zip(&groups) {
            g.resize(group.len, 0.0);
        }
    }
}

/// Every row index is one of `batch`'s.
fn check_rows(batch: &VlaDecisions, rows: &[usize]) -> Result<(), PolicyError> {
    match rows.iter().find(|&&i| i >= batch.len()) {
        Some(i) => Err(PolicyError::Other(format!(
            "row {i} of a batch of {}",
            batch.len()
        ))),
        None => Ok(()),
    }
}

/// The spec a VLA can read: an instruction and a first camera of
/// `image_size`² RGB.
pub(crate) fn check_spec(spec: &RobotSpec, config: &VlaConfig) -> Result<(), PolicyError> {
    if !spec.observation.instruction {
        return Err(PolicyError::Other(format!(
            "robot `{}` sends no instruction; the vision-language policy reads one",
            spec.name
        )));
    }
    let Some(camera) = spec.observation.cameras.first() else {
        return Err(PolicyError::Other(format!(
            "robot `{}` has no camera; the vision-language policy reads one",
            spec.name
        )));
    };
    let s = config.image_size;
    if (camera.width, camera.height, camera.channels) != (s, s, 3) {
        return Err(PolicyError::Other(format!(
            "camera `{}` is {}x{}x{}; vla.image_size = {s} reads {s}x{s}x3 frames",
            camera.name, camera.width, camera.height, camera.channels
        )));
    }
    Ok(())
}

pub(crate) fn flat(t: &Tensor) -> Result<Vec<f32>, PolicyError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle)
}

impl TrainablePolicy for VlaPolicy {
    type Encoded = VlaDecisions;
    type Workspace = VlaWorkspace;

    fn spec(&self) -> &RobotSpec {
        &self.base.spec
    }

    fn encode(&self, decisions: &[Decision<'_>]) -> Result<VlaDecisions, PolicyError> {
        let (obs, act, horizon) = (self.obs_size(), self.act_size(), self.horizon());
        let l = self.model.config.max_words;
        let mut out = VlaDecisions {
            frame: self.frame_len(),
            obs,
            act,
            words: l,
            states: vec![0.0; decisions.len() * obs],
            starts: vec![0],
            ..VlaDecisions::default()
        };
        for (d, row) in decisions.iter().zip(out.states.chunks_exact_mut(obs)) {
            let first = d.check(self.spec(), horizon, act)?;
            let text = d.observation.instruction.as_deref().ok_or_else(|| {
                PolicyError::Other("a decision's observation has no instruction".into())
            })?;
            let tokens = self.tokenizer.encode(text, l).map_err(PolicyError::Other)?;
            out.frames.extend_from_slice(&d.observation.images[0].data);
            out.word_ids.extend(tokens.ids);
            self.base
                .normalizer
                .normalize_into(&d.observation.state, row);
            for action in &d.actions {
                out.actions
                    .extend(self.base.to_raw(&d.observation.state, &action.values));
            }
            out.first_index.push(first);
            out.starts
                .push(out.starts.last().copied().unwrap_or(0) + d.actions.len());
        }
        if self.model.encoder_frozen() {
            self.cache_features(&mut out)?;
        }
        Ok(out)
    }

    fn forward(
        &self,
        batch: &VlaDecisions,
        rows: &[usize],
        wants: Wants,
        ws: &mut VlaWorkspace,
    ) -> Result<Outputs, PolicyError> {
        if (batch.frame, batch.obs, batch.act, batch.words)
            != (
                self.frame_len(),
                self.obs_size(),
                self.act_size(),
                self.model.config.max_words,
            )
        {
            return Err(PolicyError::Other(
                "decisions encoded for another policy shape".into(),
            ));
        }
        ws.log_probs = None;
        ws.entropies = None;
        ws.imitation = None;
        ws.values = None;
        let mut out = Outputs::default();
        if rows.is_empty() {
            return Ok(out);
        }
        let forward = self.forward_rows(batch, rows, wants.values)?;
        let act = self.act_size();
        let dev = self.model.device.clone();
        let mut run = || -> candle_core::Result<()> {
            if wants.log_probs || wants.imitation {
                let (means, actions, chunk_positions) =
                    self.executed_means(&forward, batch, rows)?;
                let n = chunk_positions.len();
                let diff = actions.sub(&means)?;
                if wants.log_probs {
                    let log_std = self
                        .model
                        .log_std
                        .as_tensor()
                        .reshape((self.horizon(), act))?
                        .index_select(&Tensor::from_vec(chunk_positions, n, &dev)?, 0)?;
                    let z = diff.div(&log_std.exp()?)?;
                    let log_probs = ((z.sqr()? * -0.5)? - &log_std)?
                        .sum(1)?
                        .affine(1.0, -(act as f64) * f64::from(HALF_LOG_TWO_PI))?;
                    let entropies = log_std
                        .sum(1)?
                        .affine(1.0, act as f64 * (0.5 + f64::from(HALF_LOG_TWO_PI)))?;
                    out.log_probs = log_probs.to_vec1()?;
                    out.entropies = entropies.to_vec1()?;
                    ws.log_probs = Some(log_probs);
                    ws.entropies = Some(entropies);
                }
                if wants.imitation {
                    let imitation = (diff.sqr()?.sum(1)? * 0.5)?;
                    out.imitation = imitation.to_vec1()?;
                    ws.imitation = Some(imitation);
                }
            }
            if let Some(values) = forward.values.clone() {
                out.values = values.to_vec1()?;
                ws.values = Some(values);
            }
            Ok(())
        };
        run().map_err(candle)?;
        Ok(out)
    }

    fn backward(&self, grads: &OutputGrads, ws: &mut VlaWorkspace) -> Result<(), PolicyError> {
        self.size_grads(ws);
        let Some(store) = self.grad_store(grads, ws)? else {
            return Ok(());
        };
        self.model.accumulate(&store, &mut ws.grads).map_err(candle)
    }

    fn clip_gradients(&self, ws: &mut VlaWorkspace, max_norm: f32) -> f32 {
        self.size_grads(ws);
        let mut refs: Vec<&mut [f32]> = ws.grads.iter_mut().map(|g| g.as_mut_slice()).collect();
        clip_global_norm(&mut refs, max_norm)
    }

    fn step(&mut self, optimizer: &mut Adam, ws: &mut VlaWorkspace) {
        self.size_grads(ws);
        let mut params = self.parameters();
        {
            let mut p: Vec<&mut [f32]> = params.iter_mut().map(|g| g.as_mut_slice()).collect();
            let g: Vec<&[f32]> = ws.grads.iter().map(|g| g.as_slice()).collect();
            optimizer.step(&mut p, &g);
        }
        let log_std = trained_groups(self.scope())
            .iter()
            .position(|&g| GROUPS[g] == "log_std")
            .expect("every scope trains log σ");
        for s in params[log_std].iter_mut() {
            *s = s.max(LOG_STD_FLOOR);
        }
        self.model
            .set_trained(&params)
            .expect("the policy's own parameters fit its variables");
        for g in &mut ws.grads {
            g.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    /// The groups the policy's scope trains (all of them unless it is
    /// fine-tuning its head or adapters).
    fn parameter_groups(&self) -> Vec<ParameterGroup> {
        let groups = self.model.groups();
        trained_groups(self.scope())
            .iter()
            .map(|&g| ParameterGroup {
                name: GROUPS[g],
                len: groups[g].iter().map(|(_, v)| v.elem_count()).sum(),
            })
            .collect()
    }

    fn parameters(&self) -> Vec<Vec<f32>> {
        self.model
            .flat_trained()
            .expect("reading the policy's own f32 variables")
    }

    fn gradients(&self, ws: &VlaWorkspace) -> Vec<Vec<f32>> {
        let buffers: Vec<&[f32]> = ws.grads.iter().map(|g| g.as_slice()).collect();
        let groups = self.parameter_groups();
        if buffers.len() != groups.len() {
            return groups.iter().map(|g| vec![0.0; g.len]).collect();
        }
        gradients_by_group(&groups, &buffers)
    }

    fn state_values(&mut self, observations: &[&Observation]) -> Result<Vec<f32>, PolicyError> {
        let mut out = Vec::with_capacity(observations.len());
        for part in observations.chunks(PASS_ROWS) {
            let owned: Vec<Observation> = part.iter().map(|o| (*o).clone()).collect();
            let inputs = self.inputs_of(&owned)?;
            let forward = self.model.forward(&inputs, true).map_err(candle)?;
            out.extend(flat(&forward.values.expect("values were asked for"))?);
        }
        Ok(out)
    }

    fn observe(&mut self, observations: &[&Observation]) {
        let states: Vec<f32> = observations
            .iter()
            .flat_map(|o| o.state.iter().copied())
            .collect();
        self.base.normalizer.update(&states);
    }

    fn freeze_statistics(&mut self, frozen: bool) {
        self.base.normalizer.frozen = frozen;
    }

    fn set_version(&mut self, version: u64) {
        self.base.set_version(version);
    }

    fn is_finite(&self) -> bool {
        self.all_parameters()
            .iter()
            .all(|g| g.iter().all(|v| v.is_finite()))
    }

    fn save(
        &self,
        dir: &std::path::Path,
        provenance: crate::checkpoint::TrainingProvenance,
    ) -> Result<(), crate::checkpoint::CheckpointError> {
        super::checkpoint::save(dir, self, provenance)
    }

    fn load(
        dir: &std::path::Path,
        robot: Option<&RobotSpec>,
    ) -> Result<(Self, crate::checkpoint::Contract), crate::checkpoint::CheckpointError> {
        super::checkpoint::load(dir, robot, &Device::Cpu)
    }
}

impl Policy for VlaPolicy {
    fn version(&self) -> u64 {
        Policy::version(&self.base)
    }

    /// One chunk of H actions per observation (checked against the spec:
    /// an instruction and a camera frame of the right size), with each
    /// action's log-probability.
    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        let means = self.means(observations)?;
        let log_std = self.log_std()?;
        let mut raw = means.clone();
        if let Sampling::Stochastic { seed } = sampling {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for (u, s) in raw.iter_mut().zip(log_std.iter().cycle()) {
                let z: f32 = StandardNormal.sample(&mut rng);
                *u += s.exp() * z;
            }
        }
        let (act, width) = (self.act_size(), self.act_size() * self.horizon());
        if means.iter().any(|m| !m.is_finite()) {
            return Err(PolicyError::Other(
                "the vision-language policy produced a non-finite action".into(),
            ));
        }
        Ok(observations
            .iter()
            .zip(means.chunks_exact(width).zip(raw.chunks_exact(width)))
            .map(|(o, (mean, raw))| {
                let each: Vec<f32> = mean
                    .chunks_exact(act)
                    .zip(raw.chunks_exact(act))
                    .zip(log_std.chunks_exact(act))
                    .map(|((mean, raw), log_std)| diagonal_log_prob(mean, raw, log_std))
                    .collect();
                let (sampled, sent): (Vec<Action>, Vec<Action>) = raw
                    .chunks_exact(act)
                    .map(|u| {
                        let (sampled, sent) = self.base.to_command(&o.state, u);
                        (Action::new(sampled), Action::new(sent))
                    })
                    .unzip();
                PolicyOutput {
                    chunk: ActionChunk { actions: sent },
                    sampled: Some(ActionChunk { actions: sampled }),
                    log_prob: Some(each.iter().sum()),
                    action_log_probs: (each.len() > 1).then_some(each),
                }
            })
            .collect())
    }

    fn evaluate(
        &self,
        observations: &[Observation],
        actions: &[ActionChunk],
    ) -> Result<Vec<Evaluation>, PolicyError> {
        crate::trainable::evaluate_chunks(self, observations, actions)
    }
}
