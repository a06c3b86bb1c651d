//! The fused MLP's side of the learner interface: [`TrainablePolicy`] for
//! [`GaussianMlpPolicy`], with the gradients written out by hand.
//!
//! For u ~ N(μ_θ(s), diag σ²), σ = e^{log σ} (state-independent):
//!
//!   log π(u|s)        = Σ_j −½ z_j² − log σ_j − ½ log 2π,   z_j = (u_j − μ_j)/σ_j
//!   d log π / d μ_j   = z_j / σ_j
//!   d log π / d log σ_j = z_j² − 1
//!   H                 = Σ_j log σ_j + ½ + ½ log 2π,          d H / d log σ_j = 1
//!                       (the same for every action, so for their mean)
//!   imitation         = ½ ‖μ − u‖²,                          d / d μ = μ − u
//!
//! and the MLPs back-propagate from d/dμ (actor) and d/dV (critic). The
//! tests of `CandleGaussianPolicy` check all of it against candle autograd.

use crate::gaussian::{GaussianMlpPolicy, LOG_STD_FLOOR, diagonal_log_prob};
use crate::mlp::MlpTape;
use crate::optim::{Adam, clip_global_norm};
use crate::trainable::{
    Decision, EncodedDecisions, OutputGrads, Outputs, ParameterGroup, TrainablePolicy, Wants,
    gradients_by_group,
};
use crate::{CheckpointError, Contract, TrainingProvenance, checkpoint};
use cerebellum_core::{Observation, PolicyError, RobotSpec};
use std::path::Path;

/// Decisions for the fused MLP: normalised states and the sampled actions
/// in its normalised action coordinates, one action per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MlpDecisions {
    obs: usize,
    act: usize,
    /// `n × obs`.
    pub observations: Vec<f32>,
    /// `n × act`.
    pub actions: Vec<f32>,
}

impl MlpDecisions {
    /// Decisions already in the policy's coordinates (`rows × obs`
    /// normalised states, `rows × act` normalised actions): benchmarks and
    /// tests that feed the learner synthetic data.
    pub fn from_normalized(
        policy: &GaussianMlpPolicy,
        observations: Vec<f32>,
        actions: Vec<f32>,
    ) -> Result<Self, PolicyError> {
        let (obs, act) = (policy.obs_size(), policy.act_size());
        let rows = actions.len() / act.max(1);
        if observations.len() != rows * obs || actions.len() != rows * act {
            return Err(PolicyError::Other(format!(
                "{} state values and {} action values are not rows of {obs} and {act}",
                observations.len(),
                actions.len()
            )));
        }
        Ok(Self {
            obs,
            act,
            observations,
            actions,
        })
    }
}

impl EncodedDecisions for MlpDecisions {
    fn len(&self) -> usize {
        self.actions.len().checked_div(self.act).unwrap_or(0)
    }

    fn actions_in(&self, _row: usize) -> usize {
        1
    }
}

/// Tapes of the last forward pass and the gradients accumulated since the
/// last step (actor, log σ, critic).
#[derive(Default)]
pub struct FusedWorkspace {
    actor_tape: MlpTape,
    critic_tape: MlpTape,
    /// The rows of the last forward pass.
    rows: Vec<usize>,
    inputs: Vec<f32>,
    /// The rows' actions, `rows × act`.
    actions: Vec<f32>,
    actor_ran: bool,
    critic_ran: bool,
    mean_grad: Vec<f32>,
    value_grad: Vec<f32>,
    actor_grad: Vec<f32>,
    log_std_grad: Vec<f32>,
    critic_grad: Vec<f32>,
}

impl FusedWorkspace {
    fn size_for(&mut self, policy: &GaussianMlpPolicy) {
        self.actor_grad.resize(policy.actor.params().len(), 0.0);
        self.log_std_grad.resize(policy.log_std.len(), 0.0);
        self.critic_grad.resize(policy.critic.params().len(), 0.0);
    }
}

impl TrainablePolicy for GaussianMlpPolicy {
    type Encoded = MlpDecisions;
    type Workspace = FusedWorkspace;

    fn spec(&self) -> &RobotSpec {
        &self.spec
    }

    fn encode(&self, decisions: &[Decision<'_>]) -> Result<MlpDecisions, PolicyError> {
        let (obs, act) = (self.obs_size(), self.act_size());
        let mut out = MlpDecisions {
            obs,
            act,
            observations: vec![0.0; decisions.len() * obs],
            actions: Vec::with_capacity(decisions.len() * act),
        };
        for (d, row) in decisions.iter().zip(out.observations.chunks_exact_mut(obs)) {
            let [action] = d.actions.as_slice() else {
                return Err(PolicyError::Other(format!(
                    "this policy acts one tick at a time: a decision has one action, got {}",
                    d.actions.len()
                )));
            };
            if d.first_index != 0 {
                return Err(PolicyError::Other(format!(
                    "this policy acts one tick at a time: chunk index must be 0, got {}",
                    d.first_index
                )));
            }
            if action.values.len() != act {
                return Err(PolicyError::Other(format!(
                    "action has {} values, the policy has {act}",
                    action.values.len()
                )));
            }
            self.spec.observation.check(d.observation)?;
            self.normalizer.normalize_into(&d.observation.state, row);
            out.actions
                .extend(self.to_raw(&d.observation.state, &action.values));
        }
        Ok(out)
    }

    fn forward(
        &self,
        batch: &MlpDecisions,
        rows: &[usize],
        wants: Wants,
        ws: &mut FusedWorkspace,
    ) -> Result<Outputs, PolicyError> {
        let (obs, act) = (self.obs_size(), self.act_size());
        if batch.obs != obs || batch.act != act {
            return Err(PolicyError::Other(format!(
                "decisions encoded for {}→{} but the policy is {obs}→{act}",
                batch.obs, batch.act
            )));
        }
        let m = rows.len();
        ws.rows.clear();
        ws.rows.extend_from_slice(rows);
        ws.inputs.clear();
        ws.actions.clear();
        for &i in rows {
            if i >= batch.len() {
                return Err(PolicyError::Other(format!(
                    "row {i} of a batch of {}",
                    batch.len()
                )));
            }
            ws.inputs
                .extend_from_slice(&batch.observations[i * obs..][..obs]);
            ws.actions
                .extend_from_slice(&batch.actions[i * act..][..act]);
        }
        let mut out = Outputs::default();
        ws.actor_ran = wants.log_probs || wants.imitation;
        if ws.actor_ran {
            self.actor.forward(&ws.inputs, m, &mut ws.actor_tape);
            let means = ws.actor_tape.output();
            if wants.log_probs {
                out.log_probs = rows
                    .iter()
                    .enumerate()
                    .map(|(r, &i)| {
                        let mean = &means[r * act..][..act];
                        let u = &batch.actions[i * act..][..act];
                        diagonal_log_prob(mean, u, &self.log_std)
                    })
                    .collect();
                out.entropies = vec![self.entropy(); m];
            }
            if wants.imitation {
                out.imitation = rows
                    .iter()
                    .enumerate()
                    .map(|(r, &i)| {
                        let mean = &means[r * act..][..act];
                        let u = &batch.actions[i * act..][..act];
                        0.5 * mean
                            .iter()
                            .zip(u)
                            .map(|(m, u)| (m - u) * (m - u))
                            .sum::<f32>()
                    })
                    .collect();
            }
        }
        ws.critic_ran = wants.values;
        if wants.values {
            self.critic.forward(&ws.inputs, m, &mut ws.critic_tape);
            out.values = ws.critic_tape.output().to_vec();
        }
        Ok(out)
    }

    fn backward(&self, grads: &OutputGrads, ws: &mut FusedWorkspace) -> Result<(), PolicyError> {
        let act = self.act_size();
        let m = ws.rows.len();
        ws.size_for(self);
        let check = |what: &str, v: &[f32], ran: bool| {
            if v.is_empty() || (ran && v.len() == m) {
                Ok(())
            } else {
                Err(PolicyError::Other(format!(
                    "gradient of {what} has {} values for {m} rows (or was not computed)",
                    v.len()
                )))
            }
        };
        check("log_probs", &grads.log_probs, ws.actor_ran)?;
        check("imitation", &grads.imitation, ws.actor_ran)?;
        check("values", &grads.values, ws.critic_ran)?;
        let actor_grads = !grads.log_probs.is_empty() || !grads.imitation.is_empty();
        if actor_grads {
            let FusedWorkspace {
                actor_tape,
                actions,
                mean_grad,
                actor_grad,
                log_std_grad,
                ..
            } = ws;
            mean_grad.clear();
            mean_grad.resize(m * act, 0.0);
            let sigma: Vec<f32> = self.log_std.iter().map(|s| s.exp()).collect();
            {
                let means = actor_tape.output();
                for r in 0..m {
                    let mean = &means[r * act..][..act];
                    let u = &actions[r * act..][..act];
                    let d_mean = &mut mean_grad[r * act..][..act];
                    if let Some(&g) = grads.log_probs.get(r)
                        && g != 0.0
                    {
                        for j in 0..act {
                            let z = (u[j] - mean[j]) / sigma[j];
                            d_mean[j] += g * z / sigma[j];
                            log_std_grad[j] += g * (z * z - 1.0);
                        }
                    }
                    if let Some(&g) = grads.imitation.get(r)
                        && g != 0.0
                    {
                        for j in 0..act {
                            d_mean[j] += g * (mean[j] - u[j]);
                        }
                    }
                }
            }
            self.actor.backward(mean_grad, actor_tape, actor_grad);
        }
        // Every action's entropy is Σ_j log σ_j + const: so is their mean.
        if grads.mean_entropy != 0.0 {
            if !ws.actor_ran {
                return Err(PolicyError::Other(
                    "gradient of the mean entropy, but the last forward pass computed no entropies"
                        .into(),
                ));
            }
            let g = grads.mean_entropy;
            ws.log_std_grad.iter_mut().for_each(|s| *s += g);
        }
        if !grads.values.is_empty() {
            ws.value_grad.clear();
            ws.value_grad.extend_from_slice(&grads.values);
            let FusedWorkspace {
                critic_tape,
                value_grad,
                critic_grad,
                ..
            } = ws;
            self.critic.backward(value_grad, critic_tape, critic_grad);
        }
        Ok(())
    }

    fn clip_gradients(&self, ws: &mut FusedWorkspace, max_norm: f32) -> f32 {
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

    fn step(&mut self, optimizer: &mut Adam, ws: &mut FusedWorkspace) {
        ws.size_for(self);
        optimizer.step(
            &mut [
                self.actor.params_mut(),
                &mut self.log_std,
                self.critic.params_mut(),
            ],
            &[&ws.actor_grad, &ws.log_std_grad, &ws.critic_grad],
        );
        for g in [
            &mut ws.actor_grad,
            &mut ws.log_std_grad,
            &mut ws.critic_grad,
        ] {
            g.iter_mut().for_each(|x| *x = 0.0);
        }
        for s in &mut self.log_std {
            *s = s.max(LOG_STD_FLOOR);
        }
    }

    fn parameter_groups(&self) -> Vec<ParameterGroup> {
        vec![
            ParameterGroup {
                name: "actor",
                len: self.actor.params().len(),
            },
            ParameterGroup {
                name: "log_std",
                len: self.log_std.len(),
            },
            ParameterGroup {
                name: "critic",
                len: self.critic.params().len(),
            },
        ]
    }

    fn parameters(&self) -> Vec<Vec<f32>> {
        vec![
            self.actor.params().to_vec(),
            self.log_std.clone(),
            self.critic.params().to_vec(),
        ]
    }

    fn gradients(&self, ws: &FusedWorkspace) -> Vec<Vec<f32>> {
        gradients_by_group(
            &self.parameter_groups(),
            &[&ws.actor_grad, &ws.log_std_grad, &ws.critic_grad],
        )
    }

    fn state_values(&mut self, observations: &[&Observation]) -> Result<Vec<f32>, PolicyError> {
        let normalized = self.normalize_states(observations)?;
        Ok(self.values(&normalized))
    }

    fn observe(&mut self, observations: &[&Observation]) {
        let states: Vec<f32> = observations
            .iter()
            .flat_map(|o| o.state.iter().copied())
            .collect();
        self.normalizer.update(&states);
    }

    fn freeze_statistics(&mut self, frozen: bool) {
        self.normalizer.frozen = frozen;
    }

    fn set_version(&mut self, version: u64) {
        GaussianMlpPolicy::set_version(self, version);
    }

    fn is_finite(&self) -> bool {
        GaussianMlpPolicy::is_finite(self)
    }

    fn save(&self, dir: &Path, provenance: TrainingProvenance) -> Result<(), CheckpointError> {
        checkpoint::save(dir, self, provenance)
    }

    fn load(dir: &Path, robot: Option<&RobotSpec>) -> Result<(Self, Contract), CheckpointError> {
        checkpoint::load(dir, robot)
    }
}
