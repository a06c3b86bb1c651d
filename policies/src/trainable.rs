//! The one interface every learner trains a policy through.
//!
//! PPO and its advantage estimators (GAE, group-relative, leave-one-out),
//! behaviour cloning (before and during RL), the online learner thread and
//! `train --resume` see a policy only through [`TrainablePolicy`]: they hand
//! it *decisions* (the observation a chunk was planned from and the actions
//! of it that ran), ask for the log-probabilities, entropies, values and
//! imitation errors of those actions under the current weights, give back
//! the gradient of their loss with respect to those outputs, and let the
//! policy turn that into a step of its own parameters. The losses are
//! written once, over plain `f32` outputs; a policy supplies the forward
//! pass and its vector–Jacobian product (`backward`).
//!
//! Two implementations: the fused MLP ([`crate::GaussianMlpPolicy`], hand
//! written forward and backward passes, the fast path) and a candle-autograd
//! Gaussian MLP ([`crate::CandleGaussianPolicy`]), which is also the gradient
//! reference the fused path is tested against.
//!
//! Chunks: a decision's actions are the *executed part* of a chunk, starting
//! at chunk index `first_index` (ALGORITHMS.md §2, "Chunks as actions"). A
//! policy that acts one tick at a time accepts only decisions of one action
//! at index 0.

use crate::checkpoint::{CheckpointError, Contract, TrainingProvenance};
use crate::optim::Adam;
use cerebellum_core::{
    Action, ActionChunk, Evaluation, Observation, Policy, PolicyError, RobotSpec,
};
use std::path::Path;

/// One decision of a rollout: the observation its chunk was planned from and
/// the actions of that chunk that ran, as the policy sampled them (before
/// any clipping to the robot's limits), the first at chunk index
/// `first_index`.
#[derive(Clone, Debug)]
pub struct Decision<'a> {
    pub observation: &'a Observation,
    pub first_index: u32,
    pub actions: Vec<&'a Action>,
}

impl<'a> Decision<'a> {
    /// A decision of one action planned from its own observation.
    pub fn single(observation: &'a Observation, action: &'a Action) -> Self {
        Self {
            observation,
            first_index: 0,
            actions: vec![action],
        }
    }
}

/// A batch of decisions in a policy's own coordinates (normalised states
/// and actions for the MLP, tensors for a candle model).
pub trait EncodedDecisions: Send {
    /// Decisions (rows).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Executed actions of row `row`.
    fn actions_in(&self, row: usize) -> usize;
}

/// What a forward pass should compute beside the log-probabilities and
/// entropies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Wants {
    /// log π(a | s) and the entropy, per executed action.
    pub log_probs: bool,
    /// V(s) per decision (the critic).
    pub values: bool,
    /// The policy's imitation loss per executed action (for a Gaussian:
    /// ½‖μ(s) − a‖² in its normalised action coordinates).
    pub imitation: bool,
}

/// The outputs of a forward pass over some rows of an encoded batch; per
/// action vectors list the rows' actions one row after the other, in the
/// order the rows were given. What was not asked for is empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub log_probs: Vec<f32>,
    pub entropies: Vec<f32>,
    pub values: Vec<f32>,
    pub imitation: Vec<f32>,
}

/// d loss / d output, laid out as [`Outputs`]; an empty vector is a zero
/// gradient. The entropy enters losses as its mean over the executed
/// actions of the forward pass (an entropy bonus), so its gradient is one
/// number: d loss / d mean entropy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputGrads {
    pub log_probs: Vec<f32>,
    pub mean_entropy: f32,
    pub values: Vec<f32>,
    pub imitation: Vec<f32>,
}

/// A named group of parameters, as the optimiser holds its moments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterGroup {
    pub name: &'static str,
    pub len: usize,
}

/// A policy a learner can train. See the module documentation.
pub trait TrainablePolicy: Policy + Clone + Send + 'static {
    /// Decisions in the policy's own coordinates.
    type Encoded: EncodedDecisions;
    /// What a forward pass keeps for its backward pass, and the gradients
    /// accumulated since the last step.
    type Workspace: Default + Send;

    /// The robot the policy was built for.
    fn spec(&self) -> &RobotSpec;

    /// Checks each decision against the spec (and against what the policy
    /// can act: a per-tick policy takes one action at index 0) and encodes
    /// it with the current observation statistics.
    fn encode(&self, decisions: &[Decision<'_>]) -> Result<Self::Encoded, PolicyError>;

    /// The outputs `wants` asks for, for the rows `rows` of `batch`, under
    /// the current weights. The workspace keeps what `backward` needs.
    fn forward(
        &self,
        batch: &Self::Encoded,
        rows: &[usize],
        wants: Wants,
        workspace: &mut Self::Workspace,
    ) -> Result<Outputs, PolicyError>;

    /// Adds d loss / d parameters for the last `forward` to the workspace's
    /// gradients, given d loss / d outputs.
    fn backward(
        &self,
        grads: &OutputGrads,
        workspace: &mut Self::Workspace,
    ) -> Result<(), PolicyError>;

    /// Scales the accumulated gradients to a global L2 norm of at most
    /// `max_norm` (Pascanu et al. 2013); returns the norm before scaling,
    /// not finite when a gradient is not.
    fn clip_gradients(&self, workspace: &mut Self::Workspace, max_norm: f32) -> f32;

    /// One optimiser step with the accumulated gradients, which it then
    /// clears; keeps the parameters in their domain (the log σ floor).
    fn step(&mut self, optimizer: &mut Adam, workspace: &mut Self::Workspace);

    /// The parameter groups the optimiser holds moments for, in order.
    fn parameter_groups(&self) -> Vec<ParameterGroup>;

    /// A copy of the parameters, group by group (tests, reference models).
    fn parameters(&self) -> Vec<Vec<f32>>;

    /// The gradients accumulated in `workspace`, group by group (zeros
    /// before the first `backward`).
    fn gradients(&self, workspace: &Self::Workspace) -> Vec<Vec<f32>>;

    /// A fresh optimiser over [`TrainablePolicy::parameter_groups`].
    fn optimizer(&self, learning_rate: f64) -> Adam {
        let sizes: Vec<usize> = self.parameter_groups().iter().map(|g| g.len).collect();
        Adam::new(learning_rate, &sizes)
    }

    /// V(s) of each observation.
    fn state_values(&mut self, observations: &[&Observation]) -> Result<Vec<f32>, PolicyError>;

    /// Moves the observation statistics towards `observations` (no-op when
    /// frozen or when the policy keeps none).
    fn observe(&mut self, observations: &[&Observation]);

    /// Freezes (or thaws) the observation statistics.
    fn freeze_statistics(&mut self, frozen: bool);

    fn set_version(&mut self, version: u64);

    /// Every parameter is finite (checked before a version is published).
    fn is_finite(&self) -> bool;

    /// Saves the weights and their contract into `dir` (checkpoint.rs).
    fn save(&self, dir: &Path, provenance: TrainingProvenance) -> Result<(), CheckpointError>;

    /// Loads a checkpoint saved by [`TrainablePolicy::save`], checking its
    /// contract against `robot` when given.
    fn load(dir: &Path, robot: Option<&RobotSpec>) -> Result<(Self, Contract), CheckpointError>
    where
        Self: Sized;
}

impl Decision<'_> {
    /// Checks the decision against a chunk policy of `horizon` actions of
    /// `act` values each and the robot `spec`; returns its first chunk index.
    pub fn check(
        &self,
        spec: &RobotSpec,
        horizon: usize,
        act: usize,
    ) -> Result<usize, PolicyError> {
        let first = self.first_index as usize;
        if self.actions.is_empty() {
            return Err(PolicyError::Other(
                "a decision has no executed actions".into(),
            ));
        }
        if first + self.actions.len() > horizon {
            return Err(PolicyError::Other(format!(
                "a decision of {} actions from chunk index {first} runs past the policy's chunk (horizon {horizon})",
                self.actions.len()
            )));
        }
        spec.observation.check(self.observation)?;
        if let Some(action) = self.actions.iter().find(|a| a.values.len() != act) {
            return Err(PolicyError::Other(format!(
                "action has {} values, the policy has {act}",
                action.values.len()
            )));
        }
        Ok(first)
    }
}

/// Offsets of each row's actions in a per-action vector over `rows`.
pub fn action_offsets<E: EncodedDecisions>(batch: &E, rows: &[usize]) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    let mut at = 0;
    offsets.push(0);
    for &row in rows {
        at += batch.actions_in(row);
        offsets.push(at);
    }
    offsets
}

/// Gradient buffers read group by group, for
/// [`TrainablePolicy::gradients`]: a buffer not yet sized to its group (no
/// `backward` since the workspace was made) reads as zeros.
pub fn gradients_by_group(groups: &[ParameterGroup], buffers: &[&[f32]]) -> Vec<Vec<f32>> {
    groups
        .iter()
        .zip(buffers)
        .map(|(group, buffer)| {
            if buffer.len() == group.len {
                buffer.to_vec()
            } else {
                vec![0.0; group.len]
            }
        })
        .collect()
}

/// `Policy::evaluate` of a chunk policy, through the learner interface:
/// each chunk is a decision from chunk index 0, and its log-probability
/// and entropy are those of its actions together (sums over them).
pub fn evaluate_chunks<P: TrainablePolicy>(
    policy: &P,
    observations: &[Observation],
    actions: &[ActionChunk],
) -> Result<Vec<Evaluation>, PolicyError> {
    if observations.len() != actions.len() {
        return Err(PolicyError::Other(format!(
            "{} observations but {} actions",
            observations.len(),
            actions.len()
        )));
    }
    let decisions: Vec<Decision> = observations
        .iter()
        .zip(actions)
        .map(|(observation, chunk)| Decision {
            observation,
            first_index: 0,
            actions: chunk.actions.iter().collect(),
        })
        .collect();
    let batch = policy.encode(&decisions)?;
    let rows: Vec<usize> = (0..batch.len()).collect();
    let wants = Wants {
        log_probs: true,
        values: true,
        imitation: false,
    };
    let out = policy.forward(&batch, &rows, wants, &mut P::Workspace::default())?;
    let offsets = action_offsets(&batch, &rows);
    Ok(rows
        .iter()
        .map(|&i| {
            let span = offsets[i]..offsets[i + 1];
            Evaluation {
                log_prob: out.log_probs[span.clone()].iter().sum(),
                entropy: out.entropies[span].iter().sum(),
                value: Some(out.values[i]),
            }
        })
        .collect())
}
