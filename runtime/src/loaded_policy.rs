//! A checkpoint of any policy kind, loaded by what its contract says it is
//! (`policy_kind`): the state MLP or the vision-language-action policy.
//! Commands that run a checkpoint (`eval`, `run`) hold one of these, so
//! both kinds reach a robot through the same control loop and envelope.

use crate::control_loop::CheckedWeights;
use cerebellum_core::{
    ActionChunk, Evaluation, Observation, Policy, PolicyError, PolicyOutput, RobotSpec, Sampling,
};
use cerebellum_policies::checkpoint::{self, CheckpointError, Contract, MLP_KIND};
use cerebellum_policies::vla::checkpoint::VLA_KIND;
use cerebellum_policies::{GaussianMlpPolicy, TrainablePolicy, VlaPolicy};
use std::path::Path;

// One per command, loaded once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum LoadedPolicy {
    Mlp(GaussianMlpPolicy),
    Vla(VlaPolicy),
}

impl LoadedPolicy {
    /// The checkpoint in `dir`, loaded as the kind its contract names and
    /// checked against `robot` when given.
    pub fn load(
        dir: &Path,
        robot: Option<&RobotSpec>,
    ) -> Result<(Self, Contract), CheckpointError> {
        let contract = checkpoint::load_contract(dir)?;
        match contract.policy_kind.as_str() {
            VLA_KIND => {
                let (policy, contract) = VlaPolicy::load(dir, robot)?;
                Ok((Self::Vla(policy), contract))
            }
            MLP_KIND => {
                let (policy, contract) = checkpoint::load(dir, robot)?;
                Ok((Self::Mlp(policy), contract))
            }
            other => Err(CheckpointError::Contract {
                path: dir.join(checkpoint::CONTRACT_FILE),
                reason: format!("unknown policy_kind `{other}`"),
            }),
        }
    }

    /// `"mlp"` or `"vla"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mlp(_) => "mlp",
            Self::Vla(_) => "vla",
        }
    }

    /// Actions per chunk.
    pub fn horizon(&self) -> usize {
        match self {
            Self::Mlp(_) => 1,
            Self::Vla(p) => p.horizon(),
        }
    }

    /// Instruction words read as `[UNK]` so far (VLA only).
    pub fn unknown_words(&self) -> u64 {
        match self {
            Self::Mlp(_) => 0,
            Self::Vla(p) => p.unknown_words,
        }
    }
}

impl Policy for LoadedPolicy {
    fn version(&self) -> u64 {
        match self {
            Self::Mlp(p) => p.version(),
            Self::Vla(p) => p.version(),
        }
    }

    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        match self {
            Self::Mlp(p) => p.act(observations, sampling),
            Self::Vla(p) => p.act(observations, sampling),
        }
    }

    fn evaluate(
        &self,
        observations: &[Observation],
        actions: &[ActionChunk],
    ) -> Result<Vec<Evaluation>, PolicyError> {
        match self {
            Self::Mlp(p) => p.evaluate(observations, actions),
            Self::Vla(p) => p.evaluate(observations, actions),
        }
    }
}

impl CheckedWeights for LoadedPolicy {
    fn weights_finite(&self) -> bool {
        match self {
            Self::Mlp(p) => p.is_finite(),
            Self::Vla(p) => TrainablePolicy::is_finite(p),
        }
    }
}

impl CheckedWeights for VlaPolicy {
    fn weights_finite(&self) -> bool {
        TrainablePolicy::is_finite(self)
    }
}

/// A policy that, when `blank` is set, sees every camera frame blanked
/// (all zero bytes): the ablation (`eval --blank-image`) that shows
/// whether a policy looks.
#[derive(Clone)]
pub struct ImageAblation<P> {
    pub policy: P,
    pub blank: bool,
}

impl<P: Policy> Policy for ImageAblation<P> {
    fn version(&self) -> u64 {
        self.policy.version()
    }

    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        if !self.blank {
            return self.policy.act(observations, sampling);
        }
        let blank: Vec<Observation> = observations
            .iter()
            .map(|o| {
                let mut o = o.clone();
                for image in &mut o.images {
                    image.data.iter_mut().for_each(|b| *b = 0);
                }
                o
            })
            .collect();
        self.policy.act(&blank, sampling)
    }
}

impl<P: CheckedWeights> CheckedWeights for ImageAblation<P> {
    fn weights_finite(&self) -> bool {
        self.policy.weights_finite()
    }
}

/// A policy that reads `instruction` (when given) in every observation,
/// whatever the robot sent: the operator's words (`run --instruction`).
#[derive(Clone)]
pub struct Instructed<P> {
    pub policy: P,
    pub instruction: Option<String>,
}

impl<P: Policy> Policy for Instructed<P> {
    fn version(&self) -> u64 {
        self.policy.version()
    }

    fn act(
        &mut self,
        observations: &[Observation],
        sampling: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        // Observations are copied only when the robot said otherwise.
        let Some(text) = self.instruction.as_ref().filter(|t| {
            observations
                .iter()
                .any(|o| o.instruction.as_ref() != Some(*t))
        }) else {
            return self.policy.act(observations, sampling);
        };
        let instructed: Vec<Observation> = observations
            .iter()
            .map(|o| Observation {
                instruction: Some(text.clone()),
                ..o.clone()
            })
            .collect();
        self.policy.act(&instructed, sampling)
    }
}

impl<P: CheckedWeights> CheckedWeights for Instructed<P> {
    fn weights_finite(&self) -> bool {
        self.policy.weights_finite()
    }
}
