//! The VLA network on candle autograd: the tensors and the forward pass.
//!
//! ```text
//! words ──embedding, masked mean──▶ t (text_width)
//!                                   │ one linear: γ_l, β_l for every convolution l
//! image ──conv_l, ×(1+γ_l)+β_l, ReLU (per layer)──▶ feature map ──soft-argmax──▶ keypoints (2C)
//! [keypoints, t, normalised state] ──ReLU MLP──▶ H × act chunk means   (actor)
//!                                   first hidden layer ──▶ 3            (auxiliary head)
//!                                   ──tanh MLP──▶ V(s)                  (critic)
//! ```
//!
//! Only differentiable candle ops are used (conv2d, matmul, relu, tanh,
//! exp, index_select, sums, broadcasts): the soft-argmax's softmax is
//! written out (exp of the logits less their detached maximum, over their
//! sum), never candle's fused `softmax_last_dim`, which records no backward
//! pass (candle #2168). A test checks that every tensor gets a gradient.

use super::config::VlaConfig;
use super::conv::{Conv2d, FilmConv};
use super::finetune::{Finetune, TrainScope};
use super::soft_argmax::SpatialSoftArgmax;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A linear layer: weight `out × in`, bias `out`.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Var,
    pub(crate) bias: Var,
}

impl Linear {
    /// PyTorch's default initialisation, U(±1/√in), weights scaled by `gain`.
    fn new(
        inputs: usize,
        outputs: usize,
        gain: f32,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|_| gain * rng.random_range(-bound..bound))
            .collect();
        let b: Vec<f32> = (0..outputs)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Ok(Self {
            weight: Var::from_vec(w, (outputs, inputs), dev)?,
            bias: Var::from_vec(b, outputs, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }

    /// The layer with its weight and bias as `frozen` leaves them, plus
    /// the adapter's update when it has one.
    fn forward_with(
        &self,
        x: &Tensor,
        frozen: bool,
        adapter: Option<&Adapter>,
    ) -> candle_core::Result<Tensor> {
        let weight = adapted(&self.weight, frozen, adapter)?;
        x.matmul(&weight.t()?)?
            .broadcast_add(&tracked(&self.bias, frozen))
    }
}

/// A variable as the forward pass reads it: detached from the graph when
/// it is frozen, so no gradient is computed for it.
fn tracked(var: &Var, frozen: bool) -> Tensor {
    if frozen {
        var.as_tensor().detach()
    } else {
        var.as_tensor().clone()
    }
}

/// A weight (any shape, `out` first) plus its low-rank update, if any.
fn adapted(var: &Var, frozen: bool, adapter: Option<&Adapter>) -> candle_core::Result<Tensor> {
    let base = tracked(var, frozen);
    match adapter {
        Some(adapter) => base.add(&adapter.delta()?.reshape(var.shape())?),
        None => Ok(base),
    }
}

/// A low-rank adapter of one layer (LoRA, Hu et al. 2021): ΔW = s·B·A,
/// B `out × r` (zero at first: the adapted layer starts as the base),
/// A `r × in` (He-uniform), s = α / r.
#[derive(Debug)]
pub(crate) struct Adapter {
    pub(crate) a: Var,
    pub(crate) b: Var,
    pub(crate) scale: f64,
}

impl Adapter {
    fn new(
        outputs: usize,
        inputs: usize,
        finetune: &Finetune,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let r = finetune.lora_rank;
        let bound = (6.0 / inputs as f32).sqrt();
        let a: Vec<f32> = (0..r * inputs)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Ok(Self {
            a: Var::from_vec(a, (r, inputs), dev)?,
            b: Var::zeros((outputs, r), candle_core::DType::F32, dev)?,
            scale: finetune.lora_scale(),
        })
    }

    /// s·B·A, `out × in`.
    fn delta(&self) -> candle_core::Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale
    }
}

/// The adapters of a `lora` fine-tune: one per convolution, the FiLM layer
/// and each actor layer.
#[derive(Debug)]
pub(crate) struct Adapters {
    pub(crate) finetune: Finetune,
    pub(crate) convs: Vec<Adapter>,
    pub(crate) film: Adapter,
    pub(crate) actor: Vec<Adapter>,
}

/// A convolution: kernel `out × in × k × k`. No bias: the FiLM shift β
/// that follows it (a linear layer with its own bias) already gives each
/// channel one.
#[derive(Debug)]
pub(crate) struct Conv {
    pub(crate) weight: Var,
    stride: usize,
    padding: usize,
}

/// The model's inputs for a batch of B observations.
pub struct Inputs {
    /// `B × 3 × S × S`, normalised.
    pub images: Tensor,
    /// `B × max_words` word ids (0 = padding).
    pub words: Tensor,
    /// `B × max_words`: 1 for a word, 0 for padding.
    pub mask: Tensor,
    /// `B × obs`, normalised.
    pub states: Tensor,
}

/// What one forward pass computes.
pub struct Forward {
    /// `B × (H · act)` normalised action means.
    pub means: Tensor,
    /// `B × 3`: the auxiliary head's guess of the named object's position.
    pub aux: Tensor,
    /// `B` (when asked for).
    pub values: Option<Tensor>,
}

/// The network. See the module documentation.
#[derive(Debug)]
pub struct VlaModel {
    pub(crate) config: VlaConfig,
    pub(crate) obs: usize,
    pub(crate) act: usize,
    pub(crate) vocab: usize,
    pub(crate) device: Device,
    pub(crate) convs: Vec<Conv>,
    /// `vocab × text_width`.
    pub(crate) embedding: Var,
    /// `vocab`: how much each word counts in the instruction's embedding.
    pub(crate) salience: Var,
    /// text → (γ, β) of every convolution, in layer order.
    pub(crate) film: Linear,
    pub(crate) actor: Vec<Linear>,
    pub(crate) aux: Linear,
    /// `H · act` values: one σ per chunk position and action value.
    pub(crate) log_std: Var,
    pub(crate) critic: Vec<Linear>,
    /// Pixel-centre coordinates in [−1, 1] of the last feature map, `1 × 1 × (h·w)`.
    grid_x: Tensor,
    grid_y: Tensor,
    /// What training moves; the rest is read detached.
    pub(crate) scope: TrainScope,
    /// The low-rank adapters of a `lora` fine-tune.
    pub(crate) adapters: Option<Adapters>,
}

/// The parameter groups, in the order of [`VlaModel::groups`]; `lora`
/// only when the model has adapters.
pub const GROUPS: [&str; 7] = [
    "vision", "language", "actor", "aux", "log_std", "critic", "lora",
];

/// The groups each scope trains (indices into [`GROUPS`]).
pub fn trained_groups(scope: TrainScope) -> &'static [usize] {
    match scope {
        TrainScope::All => &[0, 1, 2, 3, 4, 5],
        TrainScope::Head => &[2, 4, 5],
        TrainScope::Lora => &[4, 5, 6],
    }
}

impl VlaModel {
    pub fn new(
        config: &VlaConfig,
        obs: usize,
        act: usize,
        vocab: usize,
        seed: u64,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_71A0);
        let mut convs = Vec::new();
        let mut channels_in = 3;
        for ((&c, &k), &s) in config
            .conv_channels
            .iter()
            .zip(&config.conv_kernels)
            .zip(&config.conv_strides)
        {
            let fan_in = channels_in * k * k;
            // He initialisation for a ReLU stack.
            let bound = (6.0 / fan_in as f32).sqrt();
            let w: Vec<f32> = (0..c * fan_in)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            convs.push(Conv {
                weight: Var::from_vec(w, (c, channels_in, k, k), dev)?,
                stride: s,
                padding: k / 2,
            });
            channels_in = c;
        }
        let t = config.text_width;
        let e: Vec<f32> = (0..vocab * t)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let embedding = Var::from_vec(e, (vocab, t), dev)?;
        let salience = Var::zeros(vocab, candle_core::DType::F32, dev)?;
        let film_out = 2 * config.conv_channels.iter().sum::<usize>();
        // Small at first: every layer starts close to unconditioned.
        let film = Linear::new(t, film_out, 0.1, &mut rng, dev)?;
        let features = config.keypoints() + t + obs;
        let mut actor = Vec::new();
        let mut inputs = features;
        for &h in &config.head_hidden {
            actor.push(Linear::new(inputs, h, 1.0, &mut rng, dev)?);
            inputs = h;
        }
        actor.push(Linear::new(
            inputs,
            config.horizon * act,
            0.1,
            &mut rng,
            dev,
        )?);
        let aux = Linear::new(config.head_hidden[0], 3, 1.0, &mut rng, dev)?;
        let mut critic = Vec::new();
        let mut inputs = features;
        for &h in &config.critic_hidden {
            critic.push(Linear::new(inputs, h, 1.0, &mut rng, dev)?);
            inputs = h;
        }
        critic.push(Linear::new(inputs, 1, 1.0, &mut rng, dev)?);
        let log_std = Var::from_vec(
            vec![config.init_log_std; config.horizon * act],
            config.horizon * act,
            dev,
        )?;
        let side = config.feature_side();
        let coords: Vec<f32> = (0..side)
            .map(|i| (2 * i + 1) as f32 / side as f32 - 1.0)
            .collect();
        let gx: Vec<f32> = (0..side * side).map(|i| coords[i % side]).collect();
        let gy: Vec<f32> = (0..side * side).map(|i| coords[i / side]).collect();
        Ok(Self {
            config: config.clone(),
            obs,
            act,
            vocab,
            device: dev.clone(),
            convs,
            embedding,
            salience,
            film,
            actor,
            aux,
            log_std,
            critic,
            grid_x: Tensor::from_vec(gx, (1, 1, side * side), dev)?,
            grid_y: Tensor::from_vec(gy, (1, 1, side * side), dev)?,
            scope: TrainScope::All,
            adapters: None,
        })
    }

    /// Sets what training moves; `lora` adds fresh adapters (drawn from
    /// `seed`) unless the model has them.
    pub(crate) fn set_scope(&mut self, finetune: &Finetune, seed: u64) -> candle_core::Result<()> {
        self.scope = finetune.train;
        if finetune.train != TrainScope::Lora {
            self.adapters = None;
            return Ok(());
        }
        if self.adapters.is_some() {
            return Ok(());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10_4A);
        let dev = self.device.clone();
        let convs = self
            .convs
            .iter()
            .map(|c| {
                let dims = c.weight.dims();
                Adapter::new(
                    dims[0],
                    dims[1] * dims[2] * dims[3],
                    finetune,
                    &mut rng,
                    &dev,
                )
            })
            .collect::<candle_core::Result<_>>()?;
        let linear = |l: &Linear, rng: &mut ChaCha8Rng| {
            let dims = l.weight.dims();
            Adapter::new(dims[0], dims[1], finetune, rng, &dev)
        };
        let film = linear(&self.film, &mut rng)?;
        let actor = self
            .actor
            .iter()
            .map(|l| linear(l, &mut rng))
            .collect::<candle_core::Result<_>>()?;
        self.adapters = Some(Adapters {
            finetune: *finetune,
            convs,
            film,
            actor,
        });
        Ok(())
    }

    /// Folds the adapters into the base weights (W ← W + s·B·A) and drops
    /// them: a plain model computing the same chunks.
    pub(crate) fn merge_adapters(&mut self) -> candle_core::Result<()> {
        let Some(adapters) = self.adapters.take() else {
            return Ok(());
        };
        let fold = |var: &Var, adapter: &Adapter| -> candle_core::Result<()> {
            let merged = adapted(var, true, Some(adapter))?;
            var.set(&merged)
        };
        for (conv, adapter) in self.convs.iter().zip(&adapters.convs) {
            fold(&conv.weight, adapter)?;
        }
        fold(&self.film.weight, &adapters.film)?;
        for (layer, adapter) in self.actor.iter().zip(&adapters.actor) {
            fold(&layer.weight, adapter)?;
        }
        self.scope = TrainScope::All;
        Ok(())
    }

    /// Whether the encoder (convolutions, words, FiLM) is frozen, so its
    /// output can be cached per decision.
    pub fn encoder_frozen(&self) -> bool {
        self.scope == TrainScope::Head
    }

    /// Width of the encoder's output: keypoints and the instruction.
    pub fn encoded_width(&self) -> usize {
        self.config.keypoints() + self.config.text_width
    }

    /// The variables of each group, in [`GROUPS`] order, each with its
    /// checkpoint name.
    pub(crate) fn groups(&self) -> Vec<Vec<(String, &Var)>> {
        fn linear<'a>(prefix: &str, l: &'a Linear) -> [(String, &'a Var); 2] {
            [
                (format!("{prefix}.weight"), &l.weight),
                (format!("{prefix}.bias"), &l.bias),
            ]
        }
        let mut vision = Vec::new();
        for (k, c) in self.convs.iter().enumerate() {
            vision.push((format!("vision.conv{k}.weight"), &c.weight));
        }
        let mut language = vec![
            ("language.embedding".to_owned(), &self.embedding),
            ("language.salience".to_owned(), &self.salience),
        ];
        language.extend(linear("language.film", &self.film));
        let actor = self
            .actor
            .iter()
            .enumerate()
            .flat_map(|(k, l)| linear(&format!("actor.{k}"), l))
            .collect();
        let critic = self
            .critic
            .iter()
            .enumerate()
            .flat_map(|(k, l)| linear(&format!("critic.{k}"), l))
            .collect();
        let mut groups = vec![
            vision,
            language,
            actor,
            linear("aux", &self.aux).to_vec(),
            vec![("log_std".to_owned(), &self.log_std)],
            critic,
        ];
        if let Some(adapters) = &self.adapters {
            let named = adapters
                .convs
                .iter()
                .enumerate()
                .map(|(k, a)| (format!("vision.conv{k}"), a))
                .chain(std::iter::once((
                    "language.film".to_owned(),
                    &adapters.film,
                )))
                .chain(
                    adapters
                        .actor
                        .iter()
                        .enumerate()
                        .map(|(k, a)| (format!("actor.{k}"), a)),
                );
            let mut lora = Vec::new();
            for (name, a) in named {
                lora.push((format!("lora.{name}.a"), &a.a));
                lora.push((format!("lora.{name}.b"), &a.b));
            }
            groups.push(lora);
        }
        groups
    }

    pub fn param_count(&self) -> usize {
        self.groups()
            .iter()
            .flatten()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// The instruction's embedding (`B × T`): its words' embeddings
    /// weighted by a softmax over their learned saliences (one number per
    /// vocabulary word). A plain mean changes with every word of a new
    /// phrasing; the saliences let the words that matter (the colour)
    /// dominate, whatever the words around them, which is what carries a
    /// policy to phrasings it never saw. They start equal (the mean).
    fn text(&self, words: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let frozen = self.scope != TrainScope::All;
        let (b, l) = words.dims2()?;
        let t = self.config.text_width;
        let flat = words.flatten_all()?;
        let each = tracked(&self.embedding, frozen)
            .index_select(&flat, 0)?
            .reshape((b, l, t))?;
        // Saliences are bounded (tanh) so exp never overflows: weights
        // within e^±8 of one another.
        let salience = (tracked(&self.salience, frozen)
            .index_select(&flat, 0)?
            .reshape((b, l))?
            .tanh()?
            * 8.0)?;
        let weights = (salience.exp()? * mask)?;
        let total = weights.sum_keepdim(1)?.clamp(1e-12, f64::MAX)?;
        let weights = weights.broadcast_div(&total)?;
        each.broadcast_mul(&weights.unsqueeze(2)?)?.sum(1)
    }

    /// The keypoints of the image under the instruction's FiLM (`B × 2C`).
    fn keypoints(&self, images: &Tensor, text: &Tensor) -> candle_core::Result<Tensor> {
        let frozen = self.scope != TrainScope::All;
        let adapters = self.adapters.as_ref();
        let film = self
            .film
            .forward_with(text, frozen, adapters.map(|a| &a.film))?;
        let mut x = images.clone();
        let mut at = 0;
        for (k, conv) in self.convs.iter().enumerate() {
            let c = conv.weight.dim(0)?;
            let op = FilmConv::new(Conv2d {
                stride: conv.stride,
                padding: conv.padding,
                input_grad: k > 0,
            });
            let weight = adapted(&conv.weight, frozen, adapters.map(|a| &a.convs[k]))?;
            x = op.forward(&x, &weight, &film.narrow(1, at, 2 * c)?)?;
            at += 2 * c;
        }
        SpatialSoftArgmax::new().forward(&x, &self.grid_x, &self.grid_y)
    }

    /// The encoder: keypoints of the image under the instruction, and the
    /// instruction's embedding (`B × encoded_width`).
    pub fn encode(&self, inputs: &Inputs) -> candle_core::Result<Tensor> {
        let text = self.text(&inputs.words, &inputs.mask)?;
        let keypoints = self.keypoints(&inputs.images, &text)?;
        Tensor::cat(&[keypoints, text], 1)
    }

    pub fn forward(&self, inputs: &Inputs, values: bool) -> candle_core::Result<Forward> {
        let encoded = self.encode(inputs)?;
        self.heads(&encoded, &inputs.states, values)
    }

    /// The actor, auxiliary head and critic over the encoder's output
    /// (computed now, or cached when the encoder is frozen) and the
    /// normalised states.
    pub fn heads(
        &self,
        encoded: &Tensor,
        states: &Tensor,
        values: bool,
    ) -> candle_core::Result<Forward> {
        let features = Tensor::cat(&[encoded.clone(), states.clone()], 1)?;
        let actor_frozen = self.scope == TrainScope::Lora;
        let adapters = self.adapters.as_ref();
        let mut h = features.clone();
        let mut first = None;
        let last = self.actor.len() - 1;
        for (k, layer) in self.actor.iter().enumerate() {
            h = layer.forward_with(&h, actor_frozen, adapters.map(|a| &a.actor[k]))?;
            if k < last {
                h = h.relu()?;
            }
            if k == 0 {
                first = Some(h.clone());
            }
        }
        let first = first.expect("at least one hidden layer");
        let aux = self
            .aux
            .forward_with(&first, self.scope != TrainScope::All, None)?;
        let values = if values {
            let mut v = features;
            let last = self.critic.len() - 1;
            for (k, layer) in self.critic.iter().enumerate() {
                v = layer.forward(&v)?;
                if k < last {
                    v = v.tanh()?;
                }
            }
            Some(v.squeeze(1)?)
        } else {
            None
        };
        Ok(Forward {
            means: h,
            aux,
            values,
        })
    }

    /// Adds each trained variable's gradient in `store` to `grads` (one
    /// flat buffer per trained group, in [`trained_groups`] order and
    /// variable order).
    pub(crate) fn accumulate(
        &self,
        store: &GradStore,
        grads: &mut [Vec<f32>],
    ) -> candle_core::Result<()> {
        let groups = self.groups();
        for (&g, acc) in trained_groups(self.scope).iter().zip(grads.iter_mut()) {
            let group = &groups[g];
            let len: usize = group.iter().map(|(_, v)| v.elem_count()).sum();
            acc.resize(len, 0.0);
            let mut at = 0;
            for (_, var) in group {
                let n = var.elem_count();
                if let Some(g) = store.get(var.as_tensor()) {
                    let g = g.flatten_all()?.to_vec1::<f32>()?;
                    for (a, g) in acc[at..at + n].iter_mut().zip(g) {
                        *a += g;
                    }
                }
                at += n;
            }
        }
        Ok(())
    }

    /// The trained groups' parameters, flat, in [`trained_groups`] order.
    pub(crate) fn flat_trained(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        let all = self.flat()?;
        Ok(trained_groups(self.scope)
            .iter()
            .map(|&g| all[g].clone())
            .collect())
    }

    /// Overwrites the trained groups' parameters (the layout of
    /// `flat_trained`).
    pub(crate) fn set_trained(&self, values: &[Vec<f32>]) -> candle_core::Result<()> {
        let trained = trained_groups(self.scope);
        if values.len() != trained.len() {
            candle_core::bail!(
                "{} parameter groups, the model trains {}",
                values.len(),
                trained.len()
            );
        }
        let groups = self.groups();
        for (&g, values) in trained.iter().zip(values) {
            self.set_group(&groups[g], values)?;
        }
        Ok(())
    }

    /// Overwrites the groups `indices` (into [`GROUPS`]).
    pub(crate) fn set_groups(
        &self,
        indices: &[usize],
        values: &[Vec<f32>],
    ) -> candle_core::Result<()> {
        let groups = self.groups();
        for (&g, values) in indices.iter().zip(values) {
            let Some(group) = groups.get(g) else {
                candle_core::bail!("the model has no parameter group {g}");
            };
            self.set_group(group, values)?;
        }
        Ok(())
    }

    fn set_group(&self, group: &[(String, &Var)], values: &[f32]) -> candle_core::Result<()> {
        let len: usize = group.iter().map(|(_, v)| v.elem_count()).sum();
        if values.len() != len {
            candle_core::bail!("a group of {} values for {len} parameters", values.len());
        }
        let mut at = 0;
        for (_, var) in group {
            let n = var.elem_count();
            let t = Tensor::from_slice(&values[at..at + n], var.shape(), &self.device)?;
            var.set(&t)?;
            at += n;
        }
        Ok(())
    }

    /// Every parameter, flat, group by group.
    pub(crate) fn flat(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        self.groups()
            .iter()
            .map(|group| {
                let mut out = Vec::new();
                for (_, var) in group {
                    out.extend(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(out)
            })
            .collect()
    }

    /// Overwrites every parameter from flat groups (the layout of `flat`).
    pub(crate) fn set_flat(&self, groups: &[Vec<f32>]) -> candle_core::Result<()> {
        let mine = self.groups();
        if groups.len() != mine.len() {
            candle_core::bail!(
                "{} parameter groups, the model has {}",
                groups.len(),
                mine.len()
            );
        }
        for (group, values) in mine.iter().zip(groups) {
            self.set_group(group, values)?;
        }
        Ok(())
    }

    /// A copy with its own variables.
    pub(crate) fn deep_clone(&self) -> candle_core::Result<Self> {
        let copy = Self::new(
            &self.config,
            self.obs,
            self.act,
            self.vocab,
            0,
            &self.device,
        )?;
        let mut copy = copy;
        if let Some(adapters) = &self.adapters {
            copy.set_scope(&adapters.finetune, 0)?;
        }
        copy.scope = self.scope;
        copy.set_flat(&self.flat()?)?;
        Ok(copy)
    }
}
