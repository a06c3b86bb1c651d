//! A Gaussian MLP chunk policy on candle autograd: the second
//! [`TrainablePolicy`], and the gradient reference the fused path
//! ([`GaussianMlpPolicy`], hand-written backward pass) is tested against.
//!
//! The model family is the fused one (a tanh MLP actor gives the mean of a
//! diagonal Gaussian over normalised actions, a state-independent learned
//! log σ, a tanh MLP critic) with one addition, a chunk horizon H ≥ 1: the
//! actor outputs H × act means, one Gaussian per chunk position, all with
//! the same σ, so a decision whose executed actions start at chunk index k
//! is scored at positions k, k + 1, …. With H = 1 it is exactly the fused
//! model ([`CandleGaussianPolicy::from_fused`], [`CandleGaussianPolicy::to_fused`]).
//!
//! Every weight used by a forward or backward pass is a candle [`Var`] on an
//! explicit [`Device`]; forward passes are plain differentiable candle ops
//! (matmul, tanh, exp, index_select, sums: none of the fused kernels that
//! record no backward pass), and gradients come from [`Tensor::backward`].
//! The gradients are kept as flat `f32` groups in the fused layout (actor,
//! log σ, critic; each MLP layer by layer, weights `out × in` row-major,
//! then biases), so the same [`Adam`] state fits both implementations.
//!
//! The non-differentiable parts (observation statistics, the spec checks,
//! the mapping between normalised draws and commands) are those of a
//! [`GaussianMlpPolicy`] the model holds; that policy's own weights are not
//! used (they are replaced by the `Var`s' values in [`CandleGaussianPolicy::to_fused`]).

use crate::checkpoint::{self, CheckpointError, Contract, TrainingProvenance};
use crate::gaussian::{GaussianConfig, GaussianMlpPolicy, LOG_STD_FLOOR, diagonal_log_prob};
use crate::mlp::Mlp;
use crate::optim::{Adam, clip_global_norm};
use crate::trainable::{
    Decision, EncodedDecisions, OutputGrads, Outputs, ParameterGroup, TrainablePolicy, Wants,
    gradients_by_group,
};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use cerebellum_core::bounds::Limits;
use cerebellum_core::{
    Action, ActionChunk, Evaluation, Observation, Policy, PolicyError, PolicyOutput, RobotSpec,
    Sampling,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

const HALF_LOG_TWO_PI: f32 = 0.918_938_5;

/// Chunk positions the actor predicts.
pub const HORIZON: Limits<usize> = Limits::closed(1, 256).unit("actions");

fn candle(e: candle_core::Error) -> PolicyError {
    PolicyError::Other(format!("candle: {e}"))
}

/// One MLP as candle variables: (weights `out × in`, biases `out`) per layer.
#[derive(Debug)]
struct Layers {
    sizes: Vec<usize>,
    layers: Vec<(Var, Var)>,
}

impl Layers {
    fn from_mlp(mlp: &Mlp, device: &Device) -> Result<Self, PolicyError> {
        let layers = mlp
            .layers()
            .into_iter()
            .zip(mlp.sizes().windows(2))
            .map(|((w, b), s)| {
                Ok((
                    Var::from_slice(w, (s[1], s[0]), device)?,
                    Var::from_slice(b, s[1], device)?,
                ))
            })
            .collect::<candle_core::Result<_>>()
            .map_err(candle)?;
        Ok(Self {
            sizes: mlp.sizes().to_vec(),
            layers,
        })
    }

    fn param_count(&self) -> usize {
        crate::mlp::param_count(&self.sizes)
    }

    fn vars(&self) -> impl Iterator<Item = &Var> {
        self.layers.iter().flat_map(|(w, b)| [w, b])
    }

    /// The parameters in the fused layout.
    fn flat(&self) -> Result<Vec<f32>, PolicyError> {
        let mut out = Vec::with_capacity(self.param_count());
        for var in self.vars() {
            out.extend(flat(var.as_tensor())?);
        }
        Ok(out)
    }

    fn set_flat(&self, params: &[f32]) -> Result<(), PolicyError> {
        if params.len() != self.param_count() {
            return Err(PolicyError::Other(format!(
                "{} parameters for a network of {}",
                params.len(),
                self.param_count()
            )));
        }
        let mut at = 0;
        for var in self.vars() {
            let n = var.elem_count();
            let t = Tensor::from_slice(&params[at..at + n], var.shape(), var.device())
                .map_err(candle)?;
            var.set(&t).map_err(candle)?;
            at += n;
        }
        Ok(())
    }

    /// Adds each variable's gradient in `store` into `grads` (fused layout).
    fn accumulate(&self, store: &GradStore, grads: &mut [f32]) -> Result<(), PolicyError> {
        let mut at = 0;
        for var in self.vars() {
            let n = var.elem_count();
            if let Some(g) = store.get(var.as_tensor()) {
                for (acc, g) in grads[at..at + n].iter_mut().zip(flat(g)?) {
                    *acc += g;
                }
            }
            at += n;
        }
        Ok(())
    }

    /// Hidden layers tanh, output linear (as [`Mlp`]).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (k, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if k + 1 < self.layers.len() {
                h = h.tanh()?;
            }
        }
        Ok(h)
    }

    fn to_mlp(&self) -> Result<Mlp, PolicyError> {
        Mlp::from_params(&self.sizes, self.flat()?)
            .ok_or_else(|| PolicyError::Other("parameter count does not match the sizes".into()))
    }

    /// A copy with its own storage (a cloned `Var` shares its storage).
    fn deep_clone(&self) -> Result<Self, PolicyError> {
        let layers = self
            .layers
            .iter()
            .map(|(w, b)| Ok((fresh(w)?, fresh(b)?)))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Self {
            sizes: self.sizes.clone(),
            layers,
        })
    }
}

fn fresh(var: &Var) -> Result<Var, PolicyError> {
    var.as_detached_tensor()
        .copy()
        .and_then(|t| Var::from_tensor(&t))
        .map_err(candle)
}

fn flat(t: &Tensor) -> Result<Vec<f32>, PolicyError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle)
}

/// A Gaussian MLP chunk policy on candle autograd. See the module
/// documentation.
pub struct CandleGaussianPolicy {
    /// Statistics, spec, action mapping and version; its weights are unused.
    base: GaussianMlpPolicy,
    horizon: usize,
    device: Device,
    actor: Layers,
    /// `act` values.
    log_std: Var,
    critic: Layers,
}

impl std::fmt::Debug for CandleGaussianPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleGaussianPolicy")
            .field("actor", &self.actor.sizes)
            .field("critic", &self.critic.sizes)
            .field("horizon", &self.horizon)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Clone for CandleGaussianPolicy {
    /// A deep copy: the clone's weights do not move with the original's
    /// (learners keep a clone to roll back to).
    fn clone(&self) -> Self {
        let copy = || -> Result<Self, PolicyError> {
            Ok(Self {
                base: self.base.clone(),
                horizon: self.horizon,
                device: self.device.clone(),
                actor: self.actor.deep_clone()?,
                log_std: fresh(&self.log_std)?,
                critic: self.critic.deep_clone()?,
            })
        };
        copy().expect("copying a policy's own tensors on its own device")
    }
}

impl CandleGaussianPolicy {
    /// A fresh chunk policy of horizon `horizon` on `device`. With
    /// `horizon = 1` its weights are those of
    /// `GaussianMlpPolicy::new(spec, config, seed)`.
    pub fn new(
        spec: &RobotSpec,
        config: GaussianConfig,
        horizon: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        HORIZON
            .check("policy.horizon", horizon)
            .map_err(PolicyError::Other)?;
        let base = GaussianMlpPolicy::new(spec, config, seed)?;
        let actor = if horizon == 1 {
            base.actor.clone()
        } else {
            let mut sizes = base.actor.sizes().to_vec();
            *sizes.last_mut().expect("input and output") *= horizon;
            Mlp::new(&sizes, 0.01, seed)
        };
        Self::build(base, &actor, horizon, device)
    }

    /// The fused policy's model on `device`: the same weights, observation
    /// statistics, spec, configuration and version; horizon 1.
    pub fn from_fused(policy: &GaussianMlpPolicy, device: &Device) -> Result<Self, PolicyError> {
        Self::build(policy.clone(), &policy.actor, 1, device)
    }

    fn build(
        base: GaussianMlpPolicy,
        actor: &Mlp,
        horizon: usize,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            actor: Layers::from_mlp(actor, device)?,
            critic: Layers::from_mlp(&base.critic, device)?,
            log_std: Var::from_slice(&base.log_std, base.log_std.len(), device).map_err(candle)?,
            horizon,
            device: device.clone(),
            base,
        })
    }

    /// The fused policy with this model's weights (horizon 1 only).
    pub fn to_fused(&self) -> Result<GaussianMlpPolicy, PolicyError> {
        if self.horizon != 1 {
            return Err(PolicyError::Other(format!(
                "a chunk policy (horizon {}) has no fused counterpart, which acts one tick at a time",
                self.horizon
            )));
        }
        let mut fused = self.base.clone();
        fused.actor = self.actor.to_mlp()?;
        fused.log_std = flat(self.log_std.as_tensor())?;
        fused.critic = self.critic.to_mlp()?;
        Ok(fused)
    }

    /// Loads a checkpoint (horizon 1) onto `device`.
    pub fn load_on(
        dir: &Path,
        robot: Option<&RobotSpec>,
        device: &Device,
    ) -> Result<(Self, Contract), CheckpointError> {
        let (fused, contract) = checkpoint::load(dir, robot)?;
        let policy = Self::from_fused(&fused, device).map_err(|e| CheckpointError::Weights {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok((policy, contract))
    }

    pub fn horizon(&self) -> usize {
        self.horizon
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn obs_size(&self) -> usize {
        self.base.obs_size()
    }

    /// Values of one action.
    pub fn act_size(&self) -> usize {
        self.base.act_size()
    }

    pub fn config(&self) -> &GaussianConfig {
        &self.base.config
    }

    pub fn normalizer(&self) -> &crate::Normalizer {
        &self.base.normalizer
    }

    pub fn log_std(&self) -> Result<Vec<f32>, PolicyError> {
        flat(self.log_std.as_tensor())
    }

    /// Overwrites the parameters, group by group (the layout of
    /// [`TrainablePolicy::parameters`]).
    pub fn set_parameters(&mut self, groups: &[Vec<f32>]) -> Result<(), PolicyError> {
        let [actor, log_std, critic] = groups else {
            return Err(PolicyError::Other(format!(
                "{} parameter groups, the policy has 3",
                groups.len()
            )));
        };
        if log_std.len() != self.act_size() {
            return Err(PolicyError::Other(format!(
                "{} log σ values for {} action values",
                log_std.len(),
                self.act_size()
            )));
        }
        self.actor.set_flat(actor)?;
        self.critic.set_flat(critic)?;
        let t = Tensor::from_slice(log_std, log_std.len(), &self.device).map_err(candle)?;
        self.log_std.set(&t).map_err(candle)
    }

    /// The means of every chunk position for each observation (checked
    /// against the spec): `observations × horizon × act`, in normalised
    /// action coordinates.
    pub fn means(&self, observations: &[Observation]) -> Result<Vec<f32>, PolicyError> {
        let mut normalized = Vec::new();
        self.base.normalize(observations, &mut normalized)?;
        self.run(&self.actor, normalized, observations.len())
    }

    /// A network's outputs for `rows` normalised states, row-major.
    fn run(
        &self,
        net: &Layers,
        normalized: Vec<f32>,
        rows: usize,
    ) -> Result<Vec<f32>, PolicyError> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let x =
            Tensor::from_vec(normalized, (rows, self.obs_size()), &self.device).map_err(candle)?;
        flat(&net.forward(&x).map_err(candle)?)
    }

    /// The output tensors of a forward pass and the scalar Σ grads ⊙
    /// outputs, differentiated: `None` when every gradient is empty.
    fn grad_store(
        &self,
        grads: &OutputGrads,
        ws: &CandleWorkspace,
    ) -> Result<Option<GradStore>, PolicyError> {
        let outputs = crate::candle_grads::ForwardOutputs {
            log_probs: ws.log_probs.as_ref(),
            entropies: ws.entropies.as_ref(),
            imitation: ws.imitation.as_ref(),
            values: ws.values.as_ref(),
        };
        crate::candle_grads::objective(grads, outputs, &self.device)?
            .map(|t| t.backward().map_err(candle))
            .transpose()
    }

    #[cfg(test)]
    fn vars(&self) -> Vec<&Var> {
        self.actor
            .vars()
            .chain([&self.log_std])
            .chain(self.critic.vars())
            .collect()
    }
}

/// Decisions for the candle policy: normalised states, the executed
/// actions in normalised action coordinates, and where each decision's
/// actions sit in its chunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkDecisions {
    obs: usize,
    act: usize,
    horizon: usize,
    /// `rows × obs`.
    pub observations: Vec<f32>,
    /// `actions × act`, the rows' actions one row after the other.
    pub actions: Vec<f32>,
    /// Chunk index of each row's first action.
    pub first_index: Vec<usize>,
    /// `rows + 1` offsets into the actions.
    pub starts: Vec<usize>,
}

impl EncodedDecisions for ChunkDecisions {
    fn len(&self) -> usize {
        self.first_index.len()
    }

    fn actions_in(&self, row: usize) -> usize {
        self.starts[row + 1] - self.starts[row]
    }
}

/// The output tensors of the last forward pass (their graphs lead back to
/// the `Var`s) and the gradients accumulated since the last step, flat, in
/// the fused layout: actor, log σ, critic.
#[derive(Default)]
pub struct CandleWorkspace {
    log_probs: Option<Tensor>,
    entropies: Option<Tensor>,
    imitation: Option<Tensor>,
    values: Option<Tensor>,
    actor_grad: Vec<f32>,
    log_std_grad: Vec<f32>,
    critic_grad: Vec<f32>,
}

impl CandleWorkspace {
    fn size_for(&mut self, policy: &CandleGaussianPolicy) {
        self.actor_grad.resize(policy.actor.param_count(), 0.0);
        self.log_std_grad.resize(policy.act_size(), 0.0);
        self.critic_grad.resize(policy.critic.param_count(), 0.0);
    }
}

impl TrainablePolicy for CandleGaussianPolicy {
    type Encoded = ChunkDecisions;
    type Workspace = CandleWorkspace;

    fn spec(&self) -> &RobotSpec {
        &self.base.spec
    }

    fn encode(&self, decisions: &[Decision<'_>]) -> Result<ChunkDecisions, PolicyError> {
        let (obs, act, horizon) = (self.obs_size(), self.act_size(), self.horizon);
        let mut out = ChunkDecisions {
            obs,
            act,
            horizon,
            observations: vec![0.0; decisions.len() * obs],
            actions: Vec::new(),
            first_index: Vec::with_capacity(decisions.len()),
            starts: vec![0],
        };
        for (d, row) in decisions.iter().zip(out.observations.chunks_exact_mut(obs)) {
            let first = d.check(self.spec(), horizon, act)?;
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
        Ok(out)
    }

    fn forward(
        &self,
        batch: &ChunkDecisions,
        rows: &[usize],
        wants: Wants,
        ws: &mut CandleWorkspace,
    ) -> Result<Outputs, PolicyError> {
        let (obs, act, horizon) = (self.obs_size(), self.act_size(), self.horizon);
        if (batch.obs, batch.act, batch.horizon) != (obs, act, horizon) {
            return Err(PolicyError::Other(format!(
                "decisions encoded for {}→{}×{} but the policy is {obs}→{horizon}×{act}",
                batch.obs, batch.horizon, batch.act
            )));
        }
        let m = rows.len();
        let mut inputs = Vec::with_capacity(m * obs);
        let mut actions = Vec::new();
        // Row r's action j is the mean at chunk position first + j of row r.
        let mut positions: Vec<u32> = Vec::new();
        for (r, &i) in rows.iter().enumerate() {
            if i >= batch.len() {
                return Err(PolicyError::Other(format!(
                    "row {i} of a batch of {}",
                    batch.len()
                )));
            }
            inputs.extend_from_slice(&batch.observations[i * obs..][..obs]);
            let (start, end) = (batch.starts[i], batch.starts[i + 1]);
            actions.extend_from_slice(&batch.actions[start * act..end * act]);
            positions
                .extend((0..end - start).map(|j| (r * horizon + batch.first_index[i] + j) as u32));
        }
        let n = positions.len();
        ws.log_probs = None;
        ws.entropies = None;
        ws.imitation = None;
        ws.values = None;
        let mut out = Outputs::default();
        if m == 0 {
            return Ok(out);
        }
        let dev = &self.device;
        let run = || -> candle_core::Result<()> {
            let x = Tensor::from_vec(inputs, (m, obs), dev)?;
            if wants.log_probs || wants.imitation {
                let means = self
                    .actor
                    .forward(&x)?
                    .reshape((m * horizon, act))?
                    .index_select(&Tensor::from_vec(positions, n, dev)?, 0)?;
                let u = Tensor::from_vec(actions, (n, act), dev)?;
                let diff = u.sub(&means)?;
                if wants.log_probs {
                    let log_std = self.log_std.as_tensor();
                    let z = diff.broadcast_div(&log_std.exp()?)?;
                    let log_probs = (z.sqr()? * -0.5)?
                        .broadcast_sub(log_std)?
                        .sum(1)?
                        .affine(1.0, -(act as f64) * HALF_LOG_TWO_PI as f64)?;
                    let entropies = log_std
                        .sum_all()?
                        .affine(1.0, act as f64 * (0.5 + HALF_LOG_TWO_PI as f64))?
                        .broadcast_as(n)?;
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
            if wants.values {
                let values = self.critic.forward(&x)?.squeeze(1)?;
                out.values = values.to_vec1()?;
                ws.values = Some(values);
            }
            Ok(())
        };
        run().map_err(candle)?;
        Ok(out)
    }

    fn backward(&self, grads: &OutputGrads, ws: &mut CandleWorkspace) -> Result<(), PolicyError> {
        ws.size_for(self);
        let Some(store) = self.grad_store(grads, ws)? else {
            return Ok(());
        };
        self.actor.accumulate(&store, &mut ws.actor_grad)?;
        if let Some(g) = store.get(self.log_std.as_tensor()) {
            for (acc, g) in ws.log_std_grad.iter_mut().zip(flat(g)?) {
                *acc += g;
            }
        }
        self.critic.accumulate(&store, &mut ws.critic_grad)
    }

    fn clip_gradients(&self, ws: &mut CandleWorkspace, max_norm: f32) -> f32 {
        ws.size_for(self);
        clip_global_norm(
            &mut [
                &mut ws.actor_grad,
                &mut ws.log_std_grad,
                &mut ws.critic_grad,
            ],
            max_norm,
        )
    }

    fn step(&mut self, optimizer: &mut Adam, ws: &mut CandleWorkspace) {
        ws.size_for(self);
        let mut params = self.parameters();
        if let [actor, log_std, critic] = params.as_mut_slice() {
            optimizer.step(
                &mut [actor, log_std, critic],
                &[&ws.actor_grad, &ws.log_std_grad, &ws.critic_grad],
            );
            for s in log_std.iter_mut() {
                *s = s.max(LOG_STD_FLOOR);
            }
        }
        self.set_parameters(&params)
            .expect("the policy's own parameters fit its variables");
        for g in [
            &mut ws.actor_grad,
            &mut ws.log_std_grad,
            &mut ws.critic_grad,
        ] {
            g.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    fn parameter_groups(&self) -> Vec<ParameterGroup> {
        vec![
            ParameterGroup {
                name: "actor",
                len: self.actor.param_count(),
            },
            ParameterGroup {
                name: "log_std",
                len: self.act_size(),
            },
            ParameterGroup {
                name: "critic",
                len: self.critic.param_count(),
            },
        ]
    }

    fn parameters(&self) -> Vec<Vec<f32>> {
        let read = || -> Result<Vec<Vec<f32>>, PolicyError> {
            Ok(vec![
                self.actor.flat()?,
                self.log_std()?,
                self.critic.flat()?,
            ])
        };
        read().expect("reading the policy's own f32 variables")
    }

    fn gradients(&self, ws: &CandleWorkspace) -> Vec<Vec<f32>> {
        gradients_by_group(
            &self.parameter_groups(),
            &[&ws.actor_grad, &ws.log_std_grad, &ws.critic_grad],
        )
    }

    fn state_values(&mut self, observations: &[&Observation]) -> Result<Vec<f32>, PolicyError> {
        let normalized = self.base.normalize_states(observations)?;
        self.run(&self.critic, normalized, observations.len())
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
        self.parameters()
            .iter()
            .all(|g| g.iter().all(|v| v.is_finite()))
    }

    /// Horizon 1 only: saved as the fused policy it equals.
    fn save(&self, dir: &Path, provenance: TrainingProvenance) -> Result<(), CheckpointError> {
        if self.horizon != 1 {
            return Err(CheckpointError::Write {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "chunk checkpoints (horizon {}) are not supported by this reference model",
                        self.horizon
                    ),
                ),
            });
        }
        let fused = self.to_fused().map_err(|e| CheckpointError::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        checkpoint::save(dir, &fused, provenance)
    }

    /// Loads onto the CPU; [`CandleGaussianPolicy::load_on`] picks the device.
    fn load(dir: &Path, robot: Option<&RobotSpec>) -> Result<(Self, Contract), CheckpointError> {
        Self::load_on(dir, robot, &Device::Cpu)
    }
}

impl Policy for CandleGaussianPolicy {
    fn version(&self) -> u64 {
        Policy::version(&self.base)
    }

    /// One chunk of `horizon` actions per observation; the log-probability
    /// is that of the whole sampled chunk, and each action's is given too. Noise is drawn as the fused
    /// policy draws it (one generator over the batch, row by row).
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
        let (act, width) = (self.act_size(), self.act_size() * self.horizon);
        Ok(observations
            .iter()
            .zip(means.chunks_exact(width).zip(raw.chunks_exact(width)))
            .map(|(o, (mean, raw))| {
                // One log-probability per chunk position: a chunk cut short
                // is credited with the actions that ran.
                let each: Vec<f32> = mean
                    .chunks_exact(act)
                    .zip(raw.chunks_exact(act))
                    .map(|(mean, raw)| diagonal_log_prob(mean, raw, &log_std))
                    .collect();
                let log_prob = each.iter().sum();
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
                    log_prob: Some(log_prob),
                    action_log_probs: (each.len() > 1).then_some(each),
                }
            })
            .collect())
    }

    /// Each chunk is a decision from chunk index 0; its log-probability and
    /// entropy are those of its actions together (sums over them).
    fn evaluate(
        &self,
        observations: &[Observation],
        actions: &[ActionChunk],
    ) -> Result<Vec<Evaluation>, PolicyError> {
        crate::trainable::evaluate_chunks(self, observations, actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused_training::FusedWorkspace;
    use cerebellum_core::{ActionSpec, FieldSpec, ObservationSpec, Unit};

    fn spec() -> RobotSpec {
        RobotSpec {
            name: "test".into(),
            observation: ObservationSpec {
                fields: vec![FieldSpec::new(
                    "s",
                    Unit::Normalized,
                    &["a", "b", "c"],
                    &[(-9.0, 9.0); 3],
                )],
                cameras: vec![],
                instruction: false,
            },
            action: ActionSpec {
                fields: vec![FieldSpec::new(
                    "u",
                    Unit::Normalized,
                    &["x", "y"],
                    &[(-1.0, 1.0); 2],
                )],
            },
            control_rate_hz: 50.0,
        }
    }

    fn config() -> GaussianConfig {
        GaussianConfig {
            hidden: vec![6, 5],
            init_log_std: -0.3,
            ..Default::default()
        }
    }

    fn observation(state: Vec<f32>) -> Observation {
        Observation {
            state,
            images: vec![],
            instruction: None,
            timestamp: 0.0,
        }
    }

    fn normal(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x: f32 = StandardNormal.sample(rng);
                scale * x.clamp(-2.5, 2.5)
            })
            .collect()
    }

    /// A fused policy whose means matter (a larger output layer than the
    /// 0.01 init), with two different σ and non-trivial statistics.
    fn fused() -> GaussianMlpPolicy {
        let mut p = GaussianMlpPolicy::new(&spec(), config(), 5).unwrap();
        for v in p.actor.params_mut() {
            *v *= 3.0;
        }
        p.log_std = vec![-0.3, 0.2];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        p.normalizer.update(&normal(&mut rng, 30, 2.0));
        p.set_version(7);
        p
    }

    /// Random single-action decisions: observations and actions.
    fn single(n: usize, seed: u64) -> (Vec<Observation>, Vec<Action>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let observations = (0..n)
            .map(|_| observation(normal(&mut rng, 3, 2.0)))
            .collect();
        let actions = (0..n)
            .map(|_| Action::new(normal(&mut rng, 2, 0.8)))
            .collect();
        (observations, actions)
    }

    fn decisions<'a>(observations: &'a [Observation], actions: &'a [Action]) -> Vec<Decision<'a>> {
        observations
            .iter()
            .zip(actions)
            .map(|(o, a)| Decision::single(o, a))
            .collect()
    }

    fn all() -> Wants {
        Wants {
            log_probs: true,
            values: true,
            imitation: true,
        }
    }

    /// Non-zero random gradients for every output of `out`.
    fn output_grads(out: &Outputs, seed: u64) -> OutputGrads {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut g = |v: &Vec<f32>| {
            normal(&mut rng, v.len(), 1.0)
                .into_iter()
                .map(|x| if x.abs() < 0.05 { 0.5 } else { x })
                .collect()
        };
        OutputGrads {
            log_probs: g(&out.log_probs),
            mean_entropy: -0.7,
            values: g(&out.values),
            imitation: g(&out.imitation),
        }
    }

    fn assert_close(ours: &[f32], reference: &[f32], abs: f32, rel: f32, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: lengths");
        for (k, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= abs + rel * b.abs(),
                "{what}[{k}]: candle {a}, reference {b}"
            );
        }
    }

    fn assert_groups_close(
        ours: &[Vec<f32>],
        reference: &[Vec<f32>],
        abs: f32,
        rel: f32,
        what: &str,
    ) {
        assert_eq!(ours.len(), reference.len());
        for ((a, b), group) in ours
            .iter()
            .zip(reference)
            .zip(["actor", "log_std", "critic"])
        {
            assert_close(a, b, abs, rel, &format!("{what} {group}"));
        }
    }

    /// Chunk decisions for horizon `h`: row i starts at index i mod h and
    /// runs 1 + (3i mod (h − first)) actions.
    fn chunks(h: usize, n: usize, seed: u64) -> (Vec<Observation>, Vec<Vec<Action>>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let observations = (0..n)
            .map(|_| observation(normal(&mut rng, 3, 2.0)))
            .collect();
        let mut firsts = Vec::new();
        let actions = (0..n)
            .map(|i| {
                let first = i % h;
                firsts.push(first as u32);
                let count = 1 + (3 * i) % (h - first);
                (0..count)
                    .map(|_| Action::new(normal(&mut rng, 2, 0.8)))
                    .collect()
            })
            .collect();
        (observations, actions, firsts)
    }

    #[test]
    fn every_parameter_tensor_gets_a_gradient() {
        for h in [1, 3] {
            let mut policy =
                CandleGaussianPolicy::new(&spec(), config(), h, 3, &Device::Cpu).unwrap();
            // Larger means than the 0.01 init, so that no gradient is tiny.
            let mut params = policy.parameters();
            params[0].iter_mut().for_each(|v| *v *= 30.0);
            policy.set_parameters(&params).unwrap();
            let (observations, actions, firsts) = chunks(h, 9, 4);
            let decisions: Vec<Decision> = observations
                .iter()
                .zip(&actions)
                .zip(&firsts)
                .map(|((observation, a), &first_index)| Decision {
                    observation,
                    first_index,
                    actions: a.iter().collect(),
                })
                .collect();
            let batch = policy.encode(&decisions).unwrap();
            let rows: Vec<usize> = (0..batch.len()).collect();
            let wants = Wants {
                log_probs: true,
                values: true,
                imitation: false,
            };
            let mut ws = CandleWorkspace::default();
            let out = policy.forward(&batch, &rows, wants, &mut ws).unwrap();
            // A PPO-like loss: gradients on log-probabilities, entropies
            // and values, none on imitation.
            let mut grads = output_grads(&out, 9);
            grads.imitation.clear();
            assert!(out.imitation.is_empty());
            let store = policy.grad_store(&grads, &ws).unwrap().unwrap();
            for (k, var) in policy.vars().into_iter().enumerate() {
                let g = store
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("horizon {h}: variable {k} has no gradient"));
                assert!(
                    flat(g).unwrap().iter().any(|&x| x != 0.0),
                    "horizon {h}: variable {k} has a zero gradient"
                );
            }
            policy.backward(&grads, &mut ws).unwrap();
            for (g, group) in policy
                .gradients(&ws)
                .iter()
                .zip(["actor", "log_std", "critic"])
            {
                assert!(g.iter().all(|x| x.is_finite()), "{group}");
                assert!(g.iter().any(|&x| x != 0.0), "{group}");
            }
        }
    }

    #[test]
    fn fused_and_candle_agree_on_outputs_and_gradients() {
        let fused = fused();
        let candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
        assert_eq!(fused.parameters(), candle.parameters());
        assert_eq!(fused.parameter_groups(), candle.parameter_groups());
        let (observations, actions) = single(12, 2);
        let decisions = decisions(&observations, &actions);
        let (bf, bc) = (
            fused.encode(&decisions).unwrap(),
            candle.encode(&decisions).unwrap(),
        );
        assert_eq!(bf.observations, bc.observations);
        assert_eq!(bf.actions, bc.actions);
        let (mut wf, mut wc) = (FusedWorkspace::default(), CandleWorkspace::default());
        // Two minibatches (out of order, one row twice) accumulate.
        for (rows, seed) in [
            (vec![5, 0, 11, 3, 3, 8], 10),
            (vec![1, 2, 4, 6, 7, 9, 10], 11),
        ] {
            let of = fused.forward(&bf, &rows, all(), &mut wf).unwrap();
            let oc = candle.forward(&bc, &rows, all(), &mut wc).unwrap();
            assert_close(&oc.log_probs, &of.log_probs, 1e-5, 1e-5, "log_probs");
            assert_close(&oc.entropies, &of.entropies, 1e-5, 1e-5, "entropies");
            assert_close(&oc.values, &of.values, 1e-5, 1e-5, "values");
            assert_close(&oc.imitation, &of.imitation, 1e-5, 1e-5, "imitation");
            let grads = output_grads(&of, seed);
            fused.backward(&grads, &mut wf).unwrap();
            candle.backward(&grads, &mut wc).unwrap();
            assert_groups_close(
                &candle.gradients(&wc),
                &fused.gradients(&wf),
                1e-4,
                1e-3,
                "gradient",
            );
        }
        assert!(fused.gradients(&wf).iter().flatten().all(|&g| g != 0.0));
        let (nf, nc) = (
            fused.clip_gradients(&mut wf, 0.5),
            candle.clip_gradients(&mut wc, 0.5),
        );
        assert!((nf - nc).abs() <= 1e-4 * nf, "norms {nf} vs {nc}");
        assert_groups_close(
            &candle.gradients(&wc),
            &fused.gradients(&wf),
            1e-5,
            1e-3,
            "clipped",
        );
        // A gradient for an output the forward pass did not compute is refused.
        let out = candle
            .forward(
                &bc,
                &[0, 1],
                Wants {
                    values: true,
                    ..Wants::default()
                },
                &mut wc,
            )
            .unwrap();
        assert!(out.log_probs.is_empty());
        let err = candle
            .backward(
                &OutputGrads {
                    log_probs: vec![1.0, 1.0],
                    ..Default::default()
                },
                &mut wc,
            )
            .unwrap_err();
        assert!(err.to_string().contains("log_probs"), "{err}");
    }

    #[test]
    fn adam_steps_keep_fused_and_candle_together() {
        let mut fused = fused();
        let mut candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
        let (observations, actions) = single(16, 3);
        let decisions = decisions(&observations, &actions);
        let (bf, bc) = (
            fused.encode(&decisions).unwrap(),
            candle.encode(&decisions).unwrap(),
        );
        let rows: Vec<usize> = (0..16).collect();
        let (mut af, mut ac) = (fused.optimizer(3e-3), candle.optimizer(3e-3));
        let (mut wf, mut wc) = (FusedWorkspace::default(), CandleWorkspace::default());
        let grads = output_grads(&fused.forward(&bf, &rows, all(), &mut wf).unwrap(), 12);
        let first = candle.parameters();
        for _ in 0..8 {
            fused.forward(&bf, &rows, all(), &mut wf).unwrap();
            candle.forward(&bc, &rows, all(), &mut wc).unwrap();
            fused.backward(&grads, &mut wf).unwrap();
            candle.backward(&grads, &mut wc).unwrap();
            let (nf, nc) = (
                fused.clip_gradients(&mut wf, 1.0),
                candle.clip_gradients(&mut wc, 1.0),
            );
            assert!((nf - nc).abs() <= 1e-4 * nf, "norms {nf} vs {nc}");
            fused.step(&mut af, &mut wf);
            candle.step(&mut ac, &mut wc);
            assert!(
                candle.gradients(&wc).iter().flatten().all(|&g| g == 0.0),
                "cleared"
            );
        }
        assert_eq!((af.steps(), ac.steps()), (8, 8));
        assert_groups_close(
            &candle.parameters(),
            &fused.parameters(),
            2e-5,
            1e-4,
            "parameters",
        );
        let moved = candle.parameters()[0]
            .iter()
            .zip(&first[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 1e-2, "the steps moved the weights ({moved})");
    }

    #[test]
    fn a_step_keeps_log_std_above_the_floor() {
        let mut fused = fused();
        fused.log_std = vec![LOG_STD_FLOOR + 1e-3, 0.0];
        let mut candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
        let (observations, actions) = single(4, 5);
        let batch = candle.encode(&decisions(&observations, &actions)).unwrap();
        let mut ws = CandleWorkspace::default();
        let mut adam = candle.optimizer(0.1);
        let out = candle
            .forward(&batch, &[0, 1, 2, 3], all(), &mut ws)
            .unwrap();
        // d loss / d H > 0: every step lowers log σ.
        assert!(!out.entropies.is_empty());
        let grads = OutputGrads {
            mean_entropy: 1.0,
            ..Default::default()
        };
        candle.backward(&grads, &mut ws).unwrap();
        candle.step(&mut adam, &mut ws);
        let log_std = candle.log_std().unwrap();
        assert_eq!(log_std[0], LOG_STD_FLOOR);
        assert!((log_std[1] + 0.1).abs() < 1e-4, "{log_std:?}");
    }

    #[test]
    fn a_clone_does_not_share_weights() {
        let mut candle = CandleGaussianPolicy::from_fused(&fused(), &Device::Cpu).unwrap();
        let copy = candle.clone();
        let before = copy.parameters();
        let mut params = candle.parameters();
        params.iter_mut().flatten().for_each(|v| *v += 1.0);
        candle.set_parameters(&params).unwrap();
        assert_eq!(copy.parameters(), before);
        assert_ne!(candle.parameters(), before);
    }

    #[test]
    fn acts_and_evaluates_as_the_fused_policy() {
        let mut fused = fused();
        let mut candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
        assert_eq!(Policy::version(&candle), 7);
        let (observations, _) = single(5, 6);
        for sampling in [Sampling::Deterministic, Sampling::Stochastic { seed: 42 }] {
            let f = fused.act(&observations, sampling).unwrap();
            let c = candle.act(&observations, sampling).unwrap();
            for (f, c) in f.iter().zip(&c) {
                assert_eq!(c.chunk.len(), 1);
                let sampled =
                    |o: &PolicyOutput| o.sampled.as_ref().unwrap().actions[0].values.clone();
                assert_close(&sampled(c), &sampled(f), 1e-5, 1e-5, "sampled");
                assert_close(
                    &c.chunk.actions[0].values,
                    &f.chunk.actions[0].values,
                    1e-5,
                    1e-5,
                    "sent",
                );
                assert!((c.log_prob.unwrap() - f.log_prob.unwrap()).abs() < 1e-4);
            }
            let chunks: Vec<ActionChunk> = c.iter().map(|o| o.sampled.clone().unwrap()).collect();
            let ef = fused.evaluate(&observations, &chunks).unwrap();
            let ec = candle.evaluate(&observations, &chunks).unwrap();
            for ((f, c), out) in ef.iter().zip(&ec).zip(&c) {
                assert!((f.log_prob - c.log_prob).abs() < 1e-4);
                assert!((f.entropy - c.entropy).abs() < 1e-5);
                assert!((f.value.unwrap() - c.value.unwrap()).abs() < 1e-5);
                assert!((c.log_prob - out.log_prob.unwrap()).abs() < 1e-4);
            }
        }
        let obs: Vec<&Observation> = observations.iter().collect();
        let (vf, vc) = (
            fused.state_values(&obs).unwrap(),
            candle.state_values(&obs).unwrap(),
        );
        assert_close(&vc, &vf, 1e-5, 1e-5, "values");
    }

    #[test]
    fn a_chunk_decision_is_scored_at_its_own_positions() {
        let h = 5;
        let mut policy = CandleGaussianPolicy::new(&spec(), config(), h, 8, &Device::Cpu).unwrap();
        let mut params = policy.parameters();
        params[0].iter_mut().for_each(|v| *v *= 30.0);
        params[1] = vec![-0.4, 0.3];
        policy.set_parameters(&params).unwrap();
        let o = observation(vec![0.5, -1.0, 2.0]);
        let means = policy.means(std::slice::from_ref(&o)).unwrap();
        assert_eq!(means.len(), h * 2);
        let actions: Vec<Action> = (0..3)
            .map(|k| Action::new(vec![0.1 * k as f32 - 0.2, 0.3 - 0.2 * k as f32]))
            .collect();
        let decision = Decision {
            observation: &o,
            first_index: 2,
            actions: actions.iter().collect(),
        };
        let batch = policy.encode(std::slice::from_ref(&decision)).unwrap();
        assert_eq!(batch.actions_in(0), 3);
        let out = policy
            .forward(&batch, &[0], all(), &mut CandleWorkspace::default())
            .unwrap();
        assert_eq!((out.log_probs.len(), out.values.len()), (3, 1));
        let log_std = [-0.4f32, 0.3];
        let mut total = 0.0;
        for (j, a) in actions.iter().enumerate() {
            let mean = &means[(2 + j) * 2..][..2];
            let by_hand: f32 = (0..2)
                .map(|d| {
                    let z = (a.values[d] - mean[d]) / log_std[d].exp();
                    -0.5 * z * z - log_std[d] - 0.5 * (2.0 * std::f32::consts::PI).ln()
                })
                .sum();
            let imitation: f32 = (0..2).map(|d| 0.5 * (mean[d] - a.values[d]).powi(2)).sum();
            assert!(
                (out.log_probs[j] - by_hand).abs() < 1e-5,
                "position {}",
                2 + j
            );
            assert!((out.imitation[j] - imitation).abs() < 1e-5);
            total += by_hand;
        }
        // A different position gives a different answer (the means differ).
        let at_zero = Decision {
            first_index: 0,
            ..decision.clone()
        };
        let b0 = policy.encode(&[at_zero]).unwrap();
        let o0 = policy
            .forward(&b0, &[0], all(), &mut CandleWorkspace::default())
            .unwrap();
        assert!((o0.log_probs.iter().sum::<f32>() - total).abs() > 1e-3);
        // act: a chunk of h actions whose log-probability evaluate agrees with.
        let out = policy
            .act(std::slice::from_ref(&o), Sampling::Stochastic { seed: 3 })
            .unwrap();
        assert_eq!(out[0].chunk.len(), h);
        let sampled = out[0].sampled.clone().unwrap();
        let eval = policy
            .evaluate(std::slice::from_ref(&o), std::slice::from_ref(&sampled))
            .unwrap();
        assert!((eval[0].log_prob - out[0].log_prob.unwrap()).abs() < 1e-4);
        // Past the horizon, empty, or the wrong size: refused, by name.
        let past = Decision {
            first_index: 3,
            ..decision.clone()
        };
        let err = policy.encode(&[past]).unwrap_err().to_string();
        assert!(err.contains("horizon 5"), "{err}");
        let empty = Decision {
            actions: vec![],
            ..decision.clone()
        };
        assert!(policy.encode(&[empty]).is_err());
        assert!(CandleGaussianPolicy::new(&spec(), config(), 0, 8, &Device::Cpu).is_err());
        // No fused counterpart and no checkpoint for a chunk policy.
        assert!(
            policy
                .to_fused()
                .err()
                .unwrap()
                .to_string()
                .contains("horizon 5")
        );
        let dir =
            std::env::temp_dir().join(format!("cerebellum-candle-chunk-{}", std::process::id()));
        let err = policy
            .save(&dir, TrainingProvenance::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk checkpoints"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn checkpoint_round_trip() {
        let fused = fused();
        let candle = CandleGaussianPolicy::from_fused(&fused, &Device::Cpu).unwrap();
        let dir =
            std::env::temp_dir().join(format!("cerebellum-candle-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        candle.save(&dir, TrainingProvenance::default()).unwrap();
        let (mut loaded, contract) = CandleGaussianPolicy::load(&dir, Some(&spec())).unwrap();
        assert_eq!(contract.spec, spec());
        assert_eq!(loaded.parameters(), candle.parameters());
        // Loading freezes the statistics (a deployed policy's inputs).
        let (a, b) = (loaded.normalizer(), candle.normalizer());
        assert_eq!((&a.mean, &a.var, a.count), (&b.mean, &b.var, b.count));
        assert_eq!(loaded.horizon(), 1);
        // The fused policy reads the same checkpoint.
        let (mut as_fused, _) = GaussianMlpPolicy::load(&dir, None).unwrap();
        assert_eq!(as_fused.parameters(), candle.parameters());
        let (observations, _) = single(3, 9);
        let a = loaded.act(&observations, Sampling::Deterministic).unwrap();
        let b = as_fused
            .act(&observations, Sampling::Deterministic)
            .unwrap();
        for (a, b) in a.iter().zip(&b) {
            assert_close(
                &a.chunk.actions[0].values,
                &b.chunk.actions[0].values,
                1e-5,
                1e-5,
                "action",
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
