//! Checkpoints: weights in safetensors plus a contract (JSON) that says what
//! the weights mean: the observation and action specs with units and limits,
//! the frozen normalisation statistics, the control rate, the chunk length,
//! the policy kind and version, and how the weights were trained.
//!
//! Loading checks everything before a single weight is used: a truncated or
//! corrupt file, a tensor of the wrong shape, a non-finite weight, or a
//! contract that does not match the robot are errors that say which file,
//! tensor or field is wrong.

use crate::gaussian::{GaussianConfig, GaussianMlpPolicy};
use crate::mlp::Mlp;
use crate::normalizer::Normalizer;
use cerebellum_core::{FieldSpec, RobotSpec};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "checkpoint.safetensors";
pub const CONTRACT_FILE: &str = "contract.json";
const FORMAT: &str = "cerebellum-checkpoint";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub format: String,
    pub format_version: u32,
    pub policy_kind: String,
    /// Increases with every published update.
    pub policy_version: u64,
    /// Observation and action specs and the control rate the policy runs at.
    pub spec: RobotSpec,
    pub action_chunk: u32,
    pub policy: GaussianConfig,
    pub normalizer: Normalizer,
    pub provenance: TrainingProvenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingProvenance {
    /// The full training configuration, as written to `config.toml`.
    pub config: serde_json::Value,
    pub seed: u64,
    pub env_steps: u64,
    pub updates: u64,
    pub source_commit: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid contract: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("{path} is corrupt or truncated: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("the checkpoint does not fit this robot: {0}")]
    Mismatch(String),
}

/// Writes the weights and the contract into `dir` (created if needed). Each
/// file is written to a temporary name and renamed, so a crash mid-save
/// leaves the previous checkpoint intact.
pub fn save(
    dir: &Path,
    policy: &GaussianMlpPolicy,
    provenance: TrainingProvenance,
) -> Result<(), CheckpointError> {
    use cerebellum_core::Policy;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut normalizer = policy.normalizer.clone();
    normalizer.frozen = true;
    let contract = Contract {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        policy_kind: "gaussian_mlp".into(),
        policy_version: policy.version(),
        spec: policy.spec.clone(),
        action_chunk: 1,
        policy: policy.config.clone(),
        normalizer,
        provenance,
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, mlp) in [("actor", &policy.actor), ("critic", &policy.critic)] {
        for (k, (w, b)) in mlp.layers().into_iter().enumerate() {
            let (inputs, outputs) = (mlp.sizes()[k], mlp.sizes()[k + 1]);
            tensors.push((
                format!("{prefix}.{k}.weight"),
                vec![outputs, inputs],
                bytes(w),
            ));
            tensors.push((format!("{prefix}.{k}.bias"), vec![outputs], bytes(b)));
        }
    }
    tensors.push((
        "log_std".into(),
        vec![policy.log_std.len()],
        bytes(&policy.log_std),
    ));
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let weights = safetensors::serialize(views, None).map_err(|e| CheckpointError::Weights {
        path: dir.join(WEIGHTS_FILE),
        reason: e.to_string(),
    })?;
    write_atomically(&dir.join(WEIGHTS_FILE), &weights)?;
    let json = serde_json::to_vec_pretty(&contract).expect("contract serialises");
    write_atomically(&dir.join(CONTRACT_FILE), &json)
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads the contract alone.
pub fn load_contract(dir: &Path) -> Result<Contract, CheckpointError> {
    let path = dir.join(CONTRACT_FILE);
    let text = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let contract: Contract =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Contract {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let bad = |reason: String| CheckpointError::Contract {
        path: path.clone(),
        reason,
    };
    if contract.format != FORMAT || contract.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format `{}` version {}; this build reads `{FORMAT}` version {FORMAT_VERSION}",
            contract.format, contract.format_version
        )));
    }
    if contract.policy_kind != "gaussian_mlp" {
        return Err(bad(format!(
            "unknown policy kind `{}`",
            contract.policy_kind
        )));
    }
    if contract.action_chunk != 1 {
        return Err(bad(format!(
            "action_chunk {} (gaussian_mlp acts one tick at a time)",
            contract.action_chunk
        )));
    }
    let obs = contract.spec.observation.state_len();
    if contract.normalizer.len() != obs
        || contract.normalizer.var.len() != obs
        || contract
            .normalizer
            .mean
            .iter()
            .chain(&contract.normalizer.var)
            .any(|v| !v.is_finite())
        || contract.normalizer.var.iter().any(|&v| v < 0.0)
    {
        return Err(bad(format!(
            "normalizer must hold {obs} finite means and non-negative variances"
        )));
    }
    Ok(contract)
}

/// Loads a policy and checks its contract against `robot` (when given).
pub fn load(
    dir: &Path,
    robot: Option<&RobotSpec>,
) -> Result<(GaussianMlpPolicy, Contract), CheckpointError> {
    let contract = load_contract(dir)?;
    if let Some(robot) = robot {
        check_contract(&contract.spec, robot)?;
    }
    let path = dir.join(WEIGHTS_FILE);
    let data = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let corrupt = |reason: String| CheckpointError::Weights {
        path: path.clone(),
        reason,
    };
    let tensors = SafeTensors::deserialize(&data).map_err(|e| corrupt(e.to_string()))?;
    let mut policy =
        GaussianMlpPolicy::new(&contract.spec, contract.policy.clone(), 0).map_err(|e| {
            CheckpointError::Contract {
                path: dir.join(CONTRACT_FILE),
                reason: e.to_string(),
            }
        })?;
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, CheckpointError> {
        let view = tensors
            .tensor(name)
            .map_err(|_| corrupt(format!("tensor `{name}` is missing")))?;
        if view.dtype() != Dtype::F32 || view.shape() != shape {
            return Err(corrupt(format!(
                "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(corrupt(format!(
                "tensor `{name}` holds {} at {i}",
                values[i]
            )));
        }
        Ok(values)
    };
    for (prefix, mlp) in [("actor", &mut policy.actor), ("critic", &mut policy.critic)] {
        let sizes = mlp.sizes().to_vec();
        let mut params = Vec::with_capacity(mlp.params().len());
        for (k, pair) in sizes.windows(2).enumerate() {
            params.extend(read(&format!("{prefix}.{k}.weight"), &[pair[1], pair[0]])?);
            params.extend(read(&format!("{prefix}.{k}.bias"), &[pair[1]])?);
        }
        *mlp = Mlp::from_params(&sizes, params).expect("sizes were checked per tensor");
    }
    policy.log_std = read("log_std", &[policy.act_size()])?;
    policy.normalizer = contract.normalizer.clone();
    policy.set_version(contract.policy_version);
    Ok((policy, contract))
}

/// Refuses a robot whose spec differs from the one the policy was trained
/// on, naming the first difference.
pub fn check_contract(trained: &RobotSpec, robot: &RobotSpec) -> Result<(), CheckpointError> {
    let mismatch = |s: String| Err(CheckpointError::Mismatch(s));
    if (trained.control_rate_hz - robot.control_rate_hz).abs() > 1e-9 {
        return mismatch(format!(
            "control rate: the policy runs at {} Hz, the robot at {} Hz",
            trained.control_rate_hz, robot.control_rate_hz
        ));
    }
    compare_fields(
        "observation",
        &trained.observation.fields,
        &robot.observation.fields,
    )?;
    compare_fields("action", &trained.action.fields, &robot.action.fields)?;
    let cams = |s: &RobotSpec| {
        s.observation
            .cameras
            .iter()
            .map(|c| format!("{} {}×{}×{}", c.name, c.height, c.width, c.channels))
            .collect::<Vec<_>>()
    };
    if cams(trained) != cams(robot) {
        return mismatch(format!(
            "cameras: the policy expects {:?}, the robot has {:?}",
            cams(trained),
            cams(robot)
        ));
    }
    Ok(())
}

fn compare_fields(
    kind: &str,
    trained: &[FieldSpec],
    robot: &[FieldSpec],
) -> Result<(), CheckpointError> {
    let names = |f: &[FieldSpec]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    if names(trained) != names(robot) {
        return Err(CheckpointError::Mismatch(format!(
            "{kind} fields: the policy expects {:?}, the robot has {:?}",
            names(trained),
            names(robot)
        )));
    }
    for (t, r) in trained.iter().zip(robot) {
        let field = format!("{kind} field `{}`", t.name);
        let element_name = |e: &str| format!("{kind} field `{}[{e}]`", t.name);
        if t.elements != r.elements {
            return Err(CheckpointError::Mismatch(format!(
                "{field}: the policy expects elements {:?}, the robot has {:?}",
                t.elements, r.elements
            )));
        }
        if t.unit != r.unit {
            return Err(CheckpointError::Mismatch(format!(
                "{field}: the policy expects {}, the robot measures {}",
                t.unit, r.unit
            )));
        }
        for (i, element) in t.elements.iter().enumerate() {
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + a.abs());
            if !close(t.lower[i], r.lower[i]) || !close(t.upper[i], r.upper[i]) {
                return Err(CheckpointError::Mismatch(format!(
                    "{}: the policy was trained with limits [{}, {}] {}, the robot has [{}, {}] {}",
                    element_name(element),
                    t.lower[i],
                    t.upper[i],
                    t.unit,
                    r.lower[i],
                    r.upper[i],
                    r.unit
                )));
            }
        }
    }
    Ok(())
}
