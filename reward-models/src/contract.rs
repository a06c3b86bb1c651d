//! The on-disk form every reward model shares: a directory holding
//! `reward_model.json` (what the model promises: its kind, the
//! observations and instruction it reads, its version) beside its weights
//! as safetensors. Loading checks the promise against the robot before a
//! single prediction is made.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

const CONTRACT: &str = "reward_model.json";
const FORMAT: &str = "cerebellum-reward-model";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
    /// The robot's observations do not fit the model's, by the rule every
    /// path shares ([`cerebellum_core::ObservationSpec::check_compatible`]).
    #[error("the reward model in {path} was trained on another observation spec: {mismatch}")]
    SpecMismatch {
        path: String,
        mismatch: cerebellum_core::SpecMismatch,
    },
    #[error(
        "the reward model in {path} was trained for the instruction {found:?}; this robot's task is {expected:?}"
    )]
    InstructionMismatch {
        path: String,
        found: String,
        expected: String,
    },
    #[error("the observation has no field `{name}`; its fields are {known}")]
    UnknownField { name: String, known: String },
}

/// What a saved reward model promises (reward_model.json).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelContract {
    pub format: String,
    pub version: u32,
    /// `progress` or `success`.
    pub kind: String,
    /// Increases each time the model is retrained.
    pub model_version: u64,
    /// The observations it reads: fields, units, limits and camera sizes.
    pub observation: cerebellum_core::ObservationSpec,
    /// The task instruction it was trained for, when the data named one.
    #[serde(default)]
    pub instruction: Option<String>,
    /// Frames of history per prediction (1 for a success classifier).
    pub history: usize,
    pub hidden: usize,
    #[serde(default)]
    pub stage_names: Vec<String>,
    #[serde(default)]
    pub stage_shares: Vec<f64>,
    /// Progress: the camera image pooled to this grid side and appended
    /// to the state (0: none).
    #[serde(default)]
    pub image_pool: usize,
    /// The observation fields the model reads (empty: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl RewardModelContract {
    pub fn new(
        kind: &str,
        model_version: u64,
        observation: &cerebellum_core::ObservationSpec,
        instruction: Option<&str>,
        history: usize,
        hidden: usize,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            kind: kind.into(),
            model_version,
            observation: observation.clone(),
            instruction: instruction.map(str::to_owned),
            history,
            hidden,
            stage_names: Vec::new(),
            stage_shares: Vec::new(),
            image_pool: 0,
            fields: Vec::new(),
        }
    }
}

/// What the robot offers a reward model: its observation spec and, where
/// it has one, its task instruction.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub observation: &'a cerebellum_core::ObservationSpec,
    pub instruction: Option<&'a str>,
}

fn file_error(path: &Path, e: &dyn std::fmt::Display) -> ModelError {
    ModelError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `tensors` to `dir/weights` and the contract beside them.
pub(crate) fn save(
    dir: &Path,
    contract: &RewardModelContract,
    weights: &str,
    tensors: Vec<(String, Tensor)>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e))?;
    let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
    let path = dir.join(weights);
    candle_core::safetensors::save(&tensors, &path).map_err(|e| file_error(&path, &e))?;
    let path = dir.join(CONTRACT);
    let json = serde_json::to_vec_pretty(contract).map_err(|e| file_error(&path, &e))?;
    std::fs::write(&path, json).map_err(|e| file_error(&path, &e))
}

/// Reads the contract in `dir` only (to name a model's kind and version).
pub fn read_contract(dir: &Path) -> Result<RewardModelContract, ModelError> {
    let path = dir.join(CONTRACT);
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, &e))?;
    let contract: RewardModelContract =
        serde_json::from_str(&text).map_err(|e| file_error(&path, &e))?;
    if contract.format != FORMAT || contract.version != 1 {
        return Err(file_error(
            &path,
            &format!(
                "{} version {}, expected {FORMAT} version 1",
                contract.format, contract.version
            ),
        ));
    }
    Ok(contract)
}

/// The weights of the `kind` model saved in `dir`, after checking its
/// contract against `expected` (when given).
pub(crate) struct Loaded {
    pub contract: RewardModelContract,
    tensors: HashMap<String, Tensor>,
    path: String,
}

impl Loaded {
    pub fn get(&self, name: &str) -> Result<Tensor, ModelError> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::File {
                path: self.path.clone(),
                reason: format!("no tensor `{name}`"),
            })
    }

    pub fn linear(&self, name: &str) -> Result<candle_nn::Linear, ModelError> {
        Ok(candle_nn::Linear::new(
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
        ))
    }

    /// Refuses weights whose shapes the contract does not explain, or that
    /// are not finite.
    pub fn ensure(&self, consistent: bool) -> Result<(), ModelError> {
        let finite = self.tensors.values().all(|t| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .is_ok_and(|v| v.iter().all(|x| x.is_finite()))
        });
        if consistent && finite {
            Ok(())
        } else {
            Err(ModelError::File {
                path: self.path.clone(),
                reason: "weights do not match the contract's shapes, or are not finite".into(),
            })
        }
    }
}

pub(crate) fn load(
    dir: &Path,
    kind: &str,
    weights: &str,
    expected: Option<Expected<'_>>,
) -> Result<Loaded, ModelError> {
    let contract = read_contract(dir)?;
    if contract.kind != kind {
        return Err(file_error(
            &dir.join(CONTRACT),
            &format!("a {} model, expected a {kind} model", contract.kind),
        ));
    }
    if let Some(expected) = expected {
        if let Err(mismatch) = contract.observation.check_compatible(expected.observation) {
            return Err(ModelError::SpecMismatch {
                path: dir.display().to_string(),
                mismatch,
            });
        }
        if let (Some(found), Some(wanted)) = (&contract.instruction, expected.instruction)
            && found != wanted
        {
            return Err(ModelError::InstructionMismatch {
                path: dir.display().to_string(),
                found: found.clone(),
                expected: wanted.to_owned(),
            });
        }
    }
    let path = dir.join(weights);
    let tensors =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| file_error(&path, &e))?;
    Ok(Loaded {
        contract,
        tensors,
        path: path.display().to_string(),
    })
}
