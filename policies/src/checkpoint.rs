//! Checkpoints: weights in safetensors plus a contract (JSON) that says what
//! the weights mean: the observation and action specs with units and limits,
//! the frozen normalisation statistics, the control rate, the chunk length,
//! the policy kind and version, and how the weights were trained.
//!
//! Loading checks everything before a single weight is used: a contract
//! that does not match the robot (by [`RobotSpec::check_compatible`], the
//! rule every path shares), a truncated or corrupt file, weights that are not
//! the ones the contract was saved with (their SHA-256, see
//! [`crate::weights_hash`]), a tensor of the wrong shape, or a non-finite
//! weight are errors that say which file, tensor or field is wrong.
//!
//! Format history: version 2 added the weights hash (`weights_sha256`,
//! `tensor_sha256`). Version 1 contracts are refused, since nothing vouches
//! for their weights; [`upgrade_format_1`] adopts such a checkpoint's weights
//! as they are, for whoever knows where it came from.

use crate::gaussian::{GaussianConfig, GaussianMlpPolicy};
use crate::mlp::Mlp;
use crate::normalizer::Normalizer;
use crate::weights_hash::{self, WeightsHash, WeightsMismatch};
use cerebellum_core::RobotSpec;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "checkpoint.safetensors";
pub const CONTRACT_FILE: &str = "contract.json";
const FORMAT: &str = "cerebellum-checkpoint";
/// 2: the contract carries the weights hash. 1: no hash (refused).
const FORMAT_VERSION: u32 = 2;

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
    /// SHA-256 (hex) of every tensor in `checkpoint.safetensors`, in name
    /// order, in the layout [`crate::weights_hash`] documents; checked at
    /// load before any weight is used.
    pub weights_sha256: String,
    /// Each tensor's own SHA-256 (hex), to name the tensor that changed.
    pub tensor_sha256: BTreeMap<String, String>,
    /// What a vision-language policy (`policy_kind = "vla"`) reads besides
    /// the state: its model, cameras and tokenizer
    /// (`crate::vla::checkpoint`); absent for the MLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vla: Option<crate::vla::checkpoint::VlaContract>,
}

impl Contract {
    /// The weights hash the contract promises.
    pub fn weights_hash(&self) -> WeightsHash {
        WeightsHash {
            weights_sha256: self.weights_sha256.clone(),
            tensor_sha256: self.tensor_sha256.clone(),
        }
    }
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
    /// The run this one forked from (`train --resume RUN --out NEW`), as it
    /// was when the fork started; absent for a run trained from scratch
    /// (and in contracts written before forks existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
}

/// Where a forked run started: the parent run's directory and the
/// checkpoint it took its weights from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRun {
    /// The parent's run directory as the command named it.
    pub path: String,
    /// The same directory made absolute, links resolved, when it forked.
    pub canonical_path: String,
    /// The parent checkpoint's weights hash (its contract's
    /// `weights_sha256`): the exact weights the fork started from.
    pub weights_sha256: String,
    /// The parent's counters at the fork: its updates and env steps, where
    /// the fork's own counters start.
    pub updates: u64,
    pub env_steps: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid contract: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("{path} is corrupt or truncated: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// The weights are not the ones the contract was saved with.
    #[error("{path} does not hold the weights its contract was saved with: {mismatch}")]
    Integrity {
        path: PathBuf,
        mismatch: WeightsMismatch,
    },
    #[error("the checkpoint does not fit this robot: {0}")]
    Mismatch(#[from] cerebellum_core::SpecMismatch),
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
    let mut normalizer = policy.normalizer.clone();
    normalizer.frozen = true;
    write_pair(dir, &tensors, &[], |hash| Contract {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        policy_kind: MLP_KIND.into(),
        policy_version: policy.version(),
        spec: policy.spec.clone(),
        action_chunk: 1,
        policy: policy.config.clone(),
        normalizer,
        provenance,
        weights_sha256: hash.weights_sha256,
        tensor_sha256: hash.tensor_sha256,
        vla: None,
    })
}

/// The policy kind of the state MLP.
pub const MLP_KIND: &str = "gaussian_mlp";

/// Writes `tensors` (name, shape, little-endian f32 bytes), the `extra`
/// files (name, bytes; each written whole or not at all, before the
/// commit point) and the contract `contract` makes from the weights' hash.
pub(crate) fn write_pair(
    dir: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    extra: &[(&str, &[u8])],
    contract: impl FnOnce(WeightsHash) -> Contract,
) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Weights {
        path: dir.join(WEIGHTS_FILE),
        reason: e.to_string(),
    };
    let weights = safetensors::serialize(views, None).map_err(corrupt)?;
    // Hashed from the bytes as written, the way `load` will read them.
    let hash = weights_hash::hash(
        &SafeTensors::deserialize(&weights)
            .map_err(corrupt)?
            .iter()
            .collect::<Vec<_>>(),
    );
    let contract = contract(hash);
    for (name, bytes) in extra {
        write_atomically(&dir.join(name), bytes)?;
    }
    // The two files change together: the weights go to a side file, the
    // contract (which names their hash) is renamed into place as the
    // commit point, then the weights follow. A crash before the commit
    // leaves the old pair; after it, `load` finds the new weights beside
    // the new contract and finishes the move (`recover_interrupted_save`).
    let next = dir.join(NEXT_WEIGHTS_FILE);
    write_synced(&next, &weights)?;
    let json = serde_json::to_vec_pretty(&contract).expect("contract serialises");
    write_atomically(&dir.join(CONTRACT_FILE), &json)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    std::fs::rename(&next, &weights_path).map_err(|source| CheckpointError::Write {
        path: weights_path,
        source,
    })?;
    sync_dir(dir)
}

/// Bounds on a contract's observation statistics (see `load_contract`).
const NORMALIZER_MAX_MEAN: f64 = 1e6;
const NORMALIZER_MAX_VAR: f64 = 1e12;

/// The weights of a save in progress (see `save`).
const NEXT_WEIGHTS_FILE: &str = "checkpoint.safetensors.next";

/// The bytes of `path`, which must be a regular file: a directory is an
/// error, and a FIFO or device is refused before it is opened (reading
/// one would block forever).
pub(crate) fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            if metadata.is_dir() {
                "a directory, expected a file"
            } else {
                "not a regular file"
            },
        ));
    }
    std::fs::read(path)
}

/// Writes `data` to `path` and flushes it to the disk.
fn write_synced(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    use std::io::Write;
    let write = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(write)?;
    file.write_all(data).map_err(write)?;
    file.sync_all().map_err(write)
}

/// Writes `path` whole or not at all: a flushed temporary file renamed
/// over it.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes renames in `dir` durable (a no-op where directories cannot be
/// opened for syncing).
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    if let Ok(handle) = std::fs::File::open(dir) {
        handle.sync_all().map_err(|source| CheckpointError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// A save interrupted after its commit point left the new contract beside
/// the old weights and the new ones in the side file: if the side file is
/// what the contract names, moves it into place. Returns the weights' bytes
/// when it did.
fn recover_interrupted_save(
    dir: &Path,
    contract: &Contract,
) -> Result<Option<Vec<u8>>, CheckpointError> {
    let next = dir.join(NEXT_WEIGHTS_FILE);
    let Ok(data) = read_file(&next) else {
        return Ok(None);
    };
    let Ok(tensors) = SafeTensors::deserialize(&data) else {
        return Ok(None);
    };
    if weights_hash::verify(
        &tensors.iter().collect::<Vec<_>>(),
        &contract.weights_hash(),
    )
    .is_err()
    {
        return Ok(None);
    }
    let path = dir.join(WEIGHTS_FILE);
    tracing::warn!(
        "{}: finishing a checkpoint save that was interrupted after its contract was written",
        dir.display()
    );
    std::fs::rename(&next, &path).map_err(|source| CheckpointError::Write { path, source })?;
    sync_dir(dir)?;
    Ok(Some(data))
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads the contract alone.
pub fn load_contract(dir: &Path) -> Result<Contract, CheckpointError> {
    let path = dir.join(CONTRACT_FILE);
    let text = read_file(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    parse_contract(&path, &text)
}

/// The contract in `text` (read from `path`), checked for everything that
/// does not need the weights.
fn parse_contract(path: &Path, text: &[u8]) -> Result<Contract, CheckpointError> {
    let path = path.to_path_buf();
    refuse_format_1(&path, text)?;
    let contract: Contract =
        serde_json::from_slice(text).map_err(|e| CheckpointError::Contract {
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
    match (contract.policy_kind.as_str(), &contract.vla) {
        (MLP_KIND, None) => {}
        (crate::vla::checkpoint::VLA_KIND, Some(_)) => {}
        (MLP_KIND | crate::vla::checkpoint::VLA_KIND, _) => {
            return Err(bad(format!(
                "policy_kind `{}` with{} a `vla` section",
                contract.policy_kind,
                if contract.vla.is_some() { "" } else { "out" }
            )));
        }
        (other, _) => {
            return Err(bad(format!(
                "unknown policy_kind `{other}`; known: {MLP_KIND}, {}",
                crate::vla::checkpoint::VLA_KIND
            )));
        }
    }
    if contract.policy_kind == MLP_KIND && contract.action_chunk != 1 {
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
    // Finite but meaningless statistics: no observation field of a robot
    // has a mean beyond 1e6 or a variance beyond 1e12 in its own units,
    // and such values scale every input to nothing.
    let normalizer = &contract.normalizer;
    for (i, (&mean, &var)) in normalizer.mean.iter().zip(&normalizer.var).enumerate() {
        if mean.abs() > NORMALIZER_MAX_MEAN || var > NORMALIZER_MAX_VAR {
            return Err(bad(format!(
                "normalizer element {i}: mean {mean:e}, variance {var:e}; accepted: |mean| ≤ {NORMALIZER_MAX_MEAN:e}, variance in [0, {NORMALIZER_MAX_VAR:e}]"
            )));
        }
    }
    Ok(contract)
}

/// A format 1 contract fails to parse (no hash fields), so it is recognised
/// first and refused with a message that says why and what to do.
fn refuse_format_1(path: &Path, text: &[u8]) -> Result<(), CheckpointError> {
    #[derive(Deserialize)]
    struct Version {
        format: Option<String>,
        format_version: Option<u32>,
    }
    match serde_json::from_slice::<Version>(text) {
        Ok(Version {
            format: Some(format),
            format_version: Some(1),
        }) if format == FORMAT => Err(CheckpointError::Contract {
            path: path.to_path_buf(),
            reason: format!(
                "format version 1 predates the weights hash, so nothing vouches that \
                 {WEIGHTS_FILE} holds the weights it was saved with; this build reads \
                 version {FORMAT_VERSION} only. Retrain, or, if you trust where it came from, \
                 adopt its weights as they are with \
                 `cerebellum checkpoint adopt DIR` (`checkpoint::upgrade_format_1`)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Adopts the weights of a format 1 checkpoint in `dir` as they are:
/// checks that they load (shapes, finite values), hashes them and rewrites
/// the contract as the current format. Nothing can tell whether the weights
/// changed since they were saved; call it only for a checkpoint whose
/// origin you trust.
pub fn upgrade_format_1(dir: &Path) -> Result<Contract, CheckpointError> {
    let path = dir.join(CONTRACT_FILE);
    let bad = |reason: String| CheckpointError::Contract {
        path: path.clone(),
        reason,
    };
    let text = read_file(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if json["format"] != FORMAT || json["format_version"] != 1 {
        return Err(bad(format!(
            "not a `{FORMAT}` version 1 contract (format {}, version {})",
            json["format"], json["format_version"]
        )));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let data = read_file(&weights_path).map_err(|source| CheckpointError::Io {
        path: weights_path.clone(),
        source,
    })?;
    let tensors = SafeTensors::deserialize(&data).map_err(|e| CheckpointError::Weights {
        path: weights_path.clone(),
        reason: e.to_string(),
    })?;
    let hash = weights_hash::hash(&tensors.iter().collect::<Vec<_>>());
    json["format_version"] = FORMAT_VERSION.into();
    json["weights_sha256"] = hash.weights_sha256.into();
    json["tensor_sha256"] = serde_json::to_value(hash.tensor_sha256).expect("strings");
    let json = serde_json::to_vec_pretty(&json).expect("contract serialises");
    // Everything else `load` checks, before the contract is replaced.
    let contract = parse_contract(&path, &json)?;
    read_policy(dir, &contract, &tensors)?;
    write_atomically(&path, &json)?;
    Ok(contract)
}

/// Loads a policy and checks its contract against `robot` (when given):
/// the spec first ([`check_contract`]), then the weights hash, then each
/// tensor's shape and values, all before any weight is used.
pub fn load(
    dir: &Path,
    robot: Option<&RobotSpec>,
) -> Result<(GaussianMlpPolicy, Contract), CheckpointError> {
    let contract = load_contract(dir)?;
    if contract.policy_kind != MLP_KIND {
        return Err(CheckpointError::Contract {
            path: dir.join(CONTRACT_FILE),
            reason: format!(
                "policy_kind `{}`: not a state MLP ({MLP_KIND}); load it as what it is",
                contract.policy_kind
            ),
        });
    }
    if let Some(robot) = robot {
        check_contract(&contract.spec, robot)?;
    }
    let data = verified_weights(dir, &contract)?;
    let path = dir.join(WEIGHTS_FILE);
    let tensors = SafeTensors::deserialize(&data).map_err(|e| CheckpointError::Weights {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let policy = read_policy(dir, &contract, &tensors)?;
    Ok((policy, contract))
}

/// The bytes of `dir`'s weights file, checked against the contract's hash
/// (finishing an interrupted save when that is what it finds).
pub(crate) fn verified_weights(
    dir: &Path,
    contract: &Contract,
) -> Result<Vec<u8>, CheckpointError> {
    let path = dir.join(WEIGHTS_FILE);
    let read = read_file(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    });
    match verified(&path, read, contract) {
        Ok(data) => Ok(data),
        Err(error) => match recover_interrupted_save(dir, contract)? {
            Some(data) => Ok(data),
            None => Err(error),
        },
    }
}

/// The weights' bytes, if they parse and carry the contract's hash.
fn verified(
    path: &Path,
    data: Result<Vec<u8>, CheckpointError>,
    contract: &Contract,
) -> Result<Vec<u8>, CheckpointError> {
    let data = data?;
    let tensors = SafeTensors::deserialize(&data).map_err(|e| CheckpointError::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    weights_hash::verify(
        &tensors.iter().collect::<Vec<_>>(),
        &contract.weights_hash(),
    )
    .map_err(|mismatch| CheckpointError::Integrity {
        path: path.to_path_buf(),
        mismatch,
    })?;
    Ok(data)
}

/// The policy the contract describes, from tensors checked for shape and
/// finite values.
fn read_policy(
    dir: &Path,
    contract: &Contract,
    tensors: &SafeTensors<'_>,
) -> Result<GaussianMlpPolicy, CheckpointError> {
    let path = dir.join(WEIGHTS_FILE);
    let corrupt = |reason: String| CheckpointError::Weights {
        path: path.clone(),
        reason,
    };
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
    Ok(policy)
}

/// Refuses a robot whose spec differs from the one the policy was trained
/// on, naming the first difference: [`RobotSpec::check_compatible`], the
/// rule the zenoh client and the reward models apply too (exact equality,
/// control rates within `cerebellum_core::RATE_TOLERANCE`).
pub fn check_contract(trained: &RobotSpec, robot: &RobotSpec) -> Result<(), CheckpointError> {
    Ok(trained.check_compatible(robot)?)
}
