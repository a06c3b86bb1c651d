//! The on-disk form every reward model shares: a directory holding
//! `reward_model.json` (what the model promises: its kind, the
//! observations and instruction it reads, its version) beside its weights
//! as safetensors. Loading checks the promise against the robot before a
//! single prediction is made.

use candle_core::{DType, Device, Tensor};
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

/// The most frames of history a model may read per prediction.
pub const MAX_HISTORY: usize = 1024;
/// The widest hidden layer a model may have.
pub const MAX_HIDDEN: usize = 1 << 16;
/// The finest grid a camera image may be pooled to (a side).
pub const MAX_IMAGE_POOL: usize = 256;

impl RewardModelContract {
    /// Checks what the JSON types cannot, each refusal naming the field,
    /// the value and the accepted range: the format and version, a known
    /// kind, `history` (1 for a success classifier) and `hidden` within
    /// their ranges, a well-formed observation spec, and for a progress
    /// model at least one stage, a share per stage, each share in [0, 1],
    /// summing to 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT || self.version != 1 {
            return Err(format!(
                "{} version {}, expected {FORMAT} version 1",
                self.format, self.version
            ));
        }
        let history_range = match self.kind.as_str() {
            "progress" => (1, MAX_HISTORY),
            "success" => (1, 1),
            other => {
                return Err(format!("kind `{other}`: expected `progress` or `success`"));
            }
        };
        let in_range = |key: &str, value: usize, (lo, hi): (usize, usize)| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{key} = {value}: must be in [{lo}, {hi}] for a {} model",
                    self.kind
                ))
            }
        };
        in_range("history", self.history, history_range)?;
        in_range("hidden", self.hidden, (1, MAX_HIDDEN))?;
        let pool_range = if self.kind == "progress" {
            (0, MAX_IMAGE_POOL)
        } else {
            (0, 0)
        };
        in_range("image_pool", self.image_pool, pool_range)?;
        self.observation
            .validate()
            .map_err(|e| format!("observation: {e}"))?;
        if self.kind == "progress" {
            if self.stage_names.is_empty() {
                return Err(
                    "stage_names is empty: a progress model needs at least one stage".into(),
                );
            }
            if self.stage_shares.len() != self.stage_names.len() {
                return Err(format!(
                    "stage_shares has {} values for {} stage_names: one share per stage",
                    self.stage_shares.len(),
                    self.stage_names.len()
                ));
            }
            for (i, &share) in self.stage_shares.iter().enumerate() {
                if !(0.0..=1.0).contains(&share) {
                    return Err(format!(
                        "stage_shares[{i}] = {share:?}: must be a number in [0.0, 1.0]"
                    ));
                }
            }
            let total: f64 = self.stage_shares.iter().sum();
            if (total - 1.0).abs() > 1e-3 {
                return Err(format!(
                    "stage_shares sum to {total:?}: they must sum to 1 (within 0.001)"
                ));
            }
        }
        Ok(())
    }
}

/// The bytes of the regular file at `path`; a directory, a FIFO (which
/// would block forever) or anything else there is an error naming it.
fn read_regular_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let metadata = std::fs::metadata(path).map_err(|e| file_error(path, &e))?;
    if !metadata.is_file() {
        let what = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(file_error(path, &format!("is {what}, expected a file")));
    }
    std::fs::read(path).map_err(|e| file_error(path, &e))
}

/// Reads the contract in `dir` only (to name a model's kind and version),
/// checked ([`RewardModelContract::validate`]); an error names the file.
pub fn read_contract(dir: &Path) -> Result<RewardModelContract, ModelError> {
    let path = dir.join(CONTRACT);
    let bytes = read_regular_file(&path)?;
    let contract: RewardModelContract =
        serde_json::from_slice(&bytes).map_err(|e| file_error(&path, &e))?;
    contract.validate().map_err(|e| file_error(&path, &e))?;
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
    fn refuse(&self, reason: String) -> ModelError {
        ModelError::File {
            path: self.path.clone(),
            reason,
        }
    }

    /// The tensor `name`, checked: present, `f32`, of `shape`, every value
    /// finite. An error names the file, the tensor and what is wrong.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| self.refuse(format!("no tensor `{name}`")))?;
        if tensor.dtype() != DType::F32 || tensor.dims() != shape {
            return Err(self.refuse(format!(
                "tensor `{name}` is {:?} {:?}, expected F32 {shape:?} (from {CONTRACT})",
                tensor.dtype(),
                tensor.dims()
            )));
        }
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.refuse(format!(
                "tensor `{name}` holds {} at {i}: weights must be finite",
                values[i]
            )));
        }
        Ok(tensor.clone())
    }

    /// The vector `name` of `len` values, checked as [`Loaded::tensor`];
    /// `positive`: every value above zero (a standard deviation).
    pub fn vector(&self, name: &str, len: usize, positive: bool) -> Result<Vec<f32>, ModelError> {
        let values = self.tensor(name, &[len])?.to_vec1::<f32>()?;
        if positive && let Some(i) = values.iter().position(|&v| v <= 0.0) {
            return Err(self.refuse(format!(
                "tensor `{name}` holds {} at {i}: must be above 0",
                values[i]
            )));
        }
        Ok(values)
    }

    /// The linear layer `name` from `inputs` to `outputs` values
    /// (`name.weight` [outputs, inputs], `name.bias` [outputs]), checked.
    pub fn linear(
        &self,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<candle_nn::Linear, ModelError> {
        Ok(candle_nn::Linear::new(
            self.tensor(&format!("{name}.weight"), &[outputs, inputs])?,
            Some(self.tensor(&format!("{name}.bias"), &[outputs])?),
        ))
    }

    /// Values per input row for `history` frames of `frame` values, or an
    /// error naming the contract when that overflows.
    pub fn inputs(&self, history: usize, frame: usize) -> Result<usize, ModelError> {
        history.checked_mul(frame).ok_or_else(|| {
            self.refuse(format!(
                "history {history} × {frame} values per frame overflows"
            ))
        })
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
    let bytes = read_regular_file(&path)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| file_error(&path, &e))?;
    Ok(Loaded {
        contract,
        tensors,
        path: path.display().to_string(),
    })
}
