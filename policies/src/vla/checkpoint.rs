//! VLA checkpoints: the weights (safetensors), the tokenizer the policy
//! reads its instructions with (`tokenizer.json`), and the contract, which
//! extends the MLP's with a `vla` section: the model's settings, the
//! cameras with their pixel normalisation, and the tokenizer's file and
//! SHA-256. Loading checks all of it before a weight is used and names
//! the field that is wrong; nothing is loaded from a checkpoint that fails.
//!
//! A fine-tuned checkpoint (`vla.finetune`) says what RL trained. One of
//! `head` or `lora` with a `base` holds only the tensors it trained (the
//! actor, log σ and critic; or the adapters, log σ and critic) and names
//! the checkpoint the rest comes from by its path and its weights' SHA-256:
//! it loads on its own by loading that base first, and a base whose hash
//! differs is refused, naming both hashes.

use super::config::VlaConfig;
use super::finetune::{Finetune, TrainScope};
use super::model::{GROUPS, trained_groups};
use super::policy::{PIXEL_MEAN, PIXEL_STD, VlaPolicy, check_spec};
use super::tokenizer::{InstructionTokenizer, sha256_hex};
use crate::checkpoint::{
    self, CONTRACT_FILE, CheckpointError, Contract, TrainingProvenance, WEIGHTS_FILE,
};
use candle_core::Device;
use cerebellum_core::{Policy, RobotSpec};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const VLA_KIND: &str = "vla";
/// The tokenizer a checkpoint carries, beside its weights.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What a VLA reads besides the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlaContract {
    pub model: VlaConfig,
    /// The cameras the model reads, in order, with their pixel
    /// normalisation: (v / 255 − mean) / std per channel.
    pub cameras: Vec<CameraInput>,
    pub tokenizer: TokenizerFile,
    /// What RL fine-tuning trained, and the base it trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneContract>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneContract {
    pub settings: Finetune,
    /// Where the frozen tensors come from; `None`: this checkpoint holds
    /// every tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseWeights>,
}

/// The checkpoint a fine-tune trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseWeights {
    /// Its directory (absolute, or relative to this checkpoint's).
    pub path: String,
    /// Its contract's `weights_sha256`.
    pub weights_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraInput {
    pub name: String,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerFile {
    /// Beside the contract.
    pub file: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
    pub vocab_size: usize,
    pub max_words: usize,
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Saves `policy` into `dir`: the tokenizer file first, then the weights
/// and the contract as the MLP's are saved (the contract is the commit
/// point; a crash leaves the previous checkpoint loadable).
pub fn save(
    dir: &Path,
    policy: &VlaPolicy,
    provenance: TrainingProvenance,
) -> Result<(), CheckpointError> {
    save_on(dir, policy, provenance, None)
}

/// [`save`], and for a policy fine-tuning its `head` or `lora` with a
/// `base`, only the tensors it trains, naming the base.
pub fn save_on(
    dir: &Path,
    policy: &VlaPolicy,
    provenance: TrainingProvenance,
    base: Option<BaseWeights>,
) -> Result<(), CheckpointError> {
    let write_error = |e: String| CheckpointError::Write {
        path: dir.join(WEIGHTS_FILE),
        source: std::io::Error::other(e),
    };
    let scope = policy.scope();
    let settings = policy.adapters().unwrap_or(Finetune {
        train: scope,
        ..Finetune::default()
    });
    let base = base.filter(|_| scope != TrainScope::All);
    let groups: Vec<usize> = if base.is_some() {
        trained_groups(scope).to_vec()
    } else {
        (0..policy.model.groups().len()).collect()
    };
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = policy
        .named_tensors(&groups)
        .map_err(|e| write_error(e.to_string()))?
        .into_iter()
        .map(|(name, shape, values)| (name, shape, le_bytes(&values)))
        .collect();
    let finetune = (scope != TrainScope::All || provenance.parent.is_some())
        .then_some(FinetuneContract { settings, base });
    let camera = &policy.base.spec.observation.cameras[0];
    let config = policy.config().clone();
    let mut normalizer = policy.base.normalizer.clone();
    normalizer.frozen = true;
    let tokenizer = policy.tokenizer();
    let vla = VlaContract {
        cameras: vec![CameraInput {
            name: camera.name.clone(),
            height: camera.height,
            width: camera.width,
            channels: camera.channels,
            mean: PIXEL_MEAN,
            std: PIXEL_STD,
        }],
        tokenizer: TokenizerFile {
            file: TOKENIZER_FILE.into(),
            sha256: tokenizer.sha256().to_owned(),
            vocab_size: tokenizer.vocab_size(),
            max_words: config.max_words,
        },
        model: config.clone(),
        finetune,
    };
    checkpoint::write_pair(
        dir,
        &tensors,
        &[(TOKENIZER_FILE, tokenizer.json().as_bytes())],
        |hash| Contract {
            format: "cerebellum-checkpoint".into(),
            format_version: 2,
            policy_kind: VLA_KIND.into(),
            policy_version: policy.version(),
            spec: policy.base.spec.clone(),
            action_chunk: config.horizon as u32,
            policy: config.gaussian(),
            normalizer,
            provenance,
            weights_sha256: hash.weights_sha256,
            tensor_sha256: hash.tensor_sha256,
            vla: Some(vla),
        },
    )
}

/// Loads a VLA checkpoint onto `device`, checking the contract against
/// `robot` when given, the tokenizer against its hash, and every tensor's
/// name, shape and values, before any weight is used. A fine-tune on a
/// base loads its base first (which must hash as recorded).
pub fn load(
    dir: &Path,
    robot: Option<&RobotSpec>,
    device: &Device,
) -> Result<(VlaPolicy, Contract), CheckpointError> {
    let (contract, vla, tokenizer) = checked_contract(dir, robot)?;
    let bad = |reason: String| CheckpointError::Contract {
        path: dir.join(CONTRACT_FILE),
        reason,
    };
    let finetune = vla.finetune.clone();
    let (mut policy, groups) = match finetune.as_ref().and_then(|f| f.base.clone()) {
        Some(base) => {
            let settings = finetune
                .as_ref()
                .expect("a base comes with settings")
                .settings;
            if settings.train == TrainScope::All {
                return Err(bad(
                    "vla.finetune.base is set but vla.finetune.settings.train is `all`: an `all` fine-tune holds every tensor".into(),
                ));
            }
            let base_dir = resolve_base(dir, &base.path);
            let (mut policy, base_contract) =
                load_whole(&base_dir, robot, device).map_err(|e| {
                    bad(format!(
                        "vla.finetune.base `{}` (resolved to {}) does not load: {e}",
                        base.path,
                        base_dir.display()
                    ))
                })?;
            if base_contract.weights_sha256 != base.weights_sha256 {
                return Err(bad(format!(
                    "vla.finetune.base.weights_sha256 is {} but the checkpoint at {} has weights {}: this fine-tune was trained on another base",
                    base.weights_sha256,
                    base_dir.display(),
                    base_contract.weights_sha256
                )));
            }
            let base_vla = base_contract.vla.as_ref().expect("a VLA contract");
            if base_vla.model != vla.model || base_vla.tokenizer != vla.tokenizer {
                return Err(bad(format!(
                    "vla.model / vla.tokenizer differ from the base's at {}",
                    base_dir.display()
                )));
            }
            policy
                .set_finetune(&settings, 0)
                .map_err(|e| bad(e.to_string()))?;
            (policy, trained_groups(settings.train).to_vec())
        }
        None => {
            let mut policy =
                VlaPolicy::new(&contract.spec, vla.model.clone(), tokenizer, 0, device)
                    .map_err(|e| bad(e.to_string()))?;
            if let Some(f) = &finetune {
                policy
                    .set_finetune(&f.settings, 0)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let groups = (0..policy.model.groups().len()).collect();
            (policy, groups)
        }
    };
    read_tensors(dir, &contract, &mut policy, &groups)?;
    policy.base.normalizer = contract.normalizer.clone();
    policy.base.set_version(contract.policy_version);
    Ok((policy, contract))
}

/// A checkpoint that holds every tensor (a base).
fn load_whole(
    dir: &Path,
    robot: Option<&RobotSpec>,
    device: &Device,
) -> Result<(VlaPolicy, Contract), CheckpointError> {
    let (contract, vla, tokenizer) = checked_contract(dir, robot)?;
    if vla.finetune.as_ref().is_some_and(|f| f.base.is_some()) {
        return Err(CheckpointError::Contract {
            path: dir.join(CONTRACT_FILE),
            reason: "it is itself a fine-tune on a base; fine-tune from a checkpoint that holds every tensor".into(),
        });
    }
    let mut policy = VlaPolicy::new(&contract.spec, vla.model.clone(), tokenizer, 0, device)
        .map_err(|e| CheckpointError::Contract {
            path: dir.join(CONTRACT_FILE),
            reason: e.to_string(),
        })?;
    let groups: Vec<usize> = (0..policy.model.groups().len()).collect();
    read_tensors(dir, &contract, &mut policy, &groups)?;
    policy.base.normalizer = contract.normalizer.clone();
    policy.base.set_version(contract.policy_version);
    Ok((policy, contract))
}

/// A base path as recorded: absolute, or relative to the fine-tune's
/// directory.
fn resolve_base(dir: &Path, path: &str) -> std::path::PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The contract of the checkpoint in `dir`, checked in everything but the
/// weights, and its tokenizer.
fn checked_contract(
    dir: &Path,
    robot: Option<&RobotSpec>,
) -> Result<(Contract, VlaContract, InstructionTokenizer), CheckpointError> {
    let contract_path = dir.join(CONTRACT_FILE);
    let contract = checkpoint::load_contract(dir)?;
    let bad = |reason: String| CheckpointError::Contract {
        path: contract_path.clone(),
        reason,
    };
    let Some(vla) = contract
        .vla
        .clone()
        .filter(|_| contract.policy_kind == VLA_KIND)
    else {
        return Err(bad(format!(
            "policy_kind `{}`: not a vision-language policy ({VLA_KIND})",
            contract.policy_kind
        )));
    };
    if let Some(robot) = robot {
        checkpoint::check_contract(&contract.spec, robot)?;
    }
    vla.model
        .validate_at("vla.model")
        .map_err(|e| bad(e.to_string()))?;
    if let Some(f) = &vla.finetune {
        f.settings
            .validate_at("vla.finetune.settings")
            .map_err(bad)?;
    }
    check_spec(&contract.spec, &vla.model).map_err(|e| bad(e.to_string()))?;
    if contract.action_chunk as usize != vla.model.horizon {
        return Err(bad(format!(
            "action_chunk {} but vla.model.horizon {}",
            contract.action_chunk, vla.model.horizon
        )));
    }
    if contract.policy != vla.model.gaussian() {
        return Err(bad(
            "policy (the head's settings) does not match vla.model".into()
        ));
    }
    let camera = &contract.spec.observation.cameras[0];
    let expected = CameraInput {
        name: camera.name.clone(),
        height: camera.height,
        width: camera.width,
        channels: camera.channels,
        mean: PIXEL_MEAN,
        std: PIXEL_STD,
    };
    if vla.cameras != [expected.clone()] {
        return Err(bad(format!(
            "vla.cameras is {:?}; this build reads one camera, {expected:?}",
            vla.cameras
        )));
    }
    if vla.tokenizer.file != TOKENIZER_FILE || vla.tokenizer.max_words != vla.model.max_words {
        return Err(bad(format!(
            "vla.tokenizer names file `{}` with max_words {}; expected `{TOKENIZER_FILE}` and vla.model.max_words {}",
            vla.tokenizer.file, vla.tokenizer.max_words, vla.model.max_words
        )));
    }
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let text = checkpoint::read_file(&tokenizer_path).map_err(|source| CheckpointError::Io {
        path: tokenizer_path.clone(),
        source,
    })?;
    let found = sha256_hex(&text);
    if found != vla.tokenizer.sha256 {
        return Err(bad(format!(
            "vla.tokenizer.sha256 is {} but {} hashes to {found}: the tokenizer is not the one the policy was trained with",
            vla.tokenizer.sha256,
            tokenizer_path.display()
        )));
    }
    let text = String::from_utf8(text)
        .map_err(|_| bad(format!("{} is not UTF-8 text", tokenizer_path.display())))?;
    let tokenizer = InstructionTokenizer::from_json(&text)
        .map_err(|e| bad(format!("{}: {e}", tokenizer_path.display())))?;
    if tokenizer.vocab_size() != vla.tokenizer.vocab_size {
        return Err(bad(format!(
            "vla.tokenizer.vocab_size {} but the file holds {}",
            vla.tokenizer.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    Ok((contract, vla, tokenizer))
}

/// Reads the tensors of `groups` (indices into [`GROUPS`]) from the
/// checkpoint's weights file, which must hold exactly those, each of the
/// shape the policy has and finite, and sets them.
fn read_tensors(
    dir: &Path,
    contract: &Contract,
    policy: &mut VlaPolicy,
    groups: &[usize],
) -> Result<(), CheckpointError> {
    let data = checkpoint::verified_weights(dir, contract)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let corrupt = |reason: String| CheckpointError::Weights {
        path: weights_path.clone(),
        reason,
    };
    let tensors = SafeTensors::deserialize(&data).map_err(|e| corrupt(e.to_string()))?;
    let all = policy.model.groups();
    let expected: usize = groups.iter().map(|&g| all[g].len()).sum();
    if tensors.len() != expected {
        return Err(corrupt(format!(
            "{} tensors; the contract describes {expected} (groups {})",
            tensors.len(),
            groups
                .iter()
                .map(|&g| GROUPS[g])
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut values_by_group = Vec::new();
    for &g in groups {
        let mut values = Vec::new();
        for (name, var) in &all[g] {
            let view = tensors
                .tensor(name)
                .map_err(|_| corrupt(format!("tensor `{name}` is missing")))?;
            if view.dtype() != Dtype::F32 || view.shape() != var.dims() {
                return Err(corrupt(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    var.dims()
                )));
            }
            let start = values.len();
            values.extend(
                view.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            if let Some(i) = values[start..].iter().position(|v| !v.is_finite()) {
                return Err(corrupt(format!(
                    "tensor `{name}` holds {} at {i}",
                    values[start + i]
                )));
            }
        }
        values_by_group.push(values);
    }
    drop(all);
    policy
        .set_groups(groups, &values_by_group)
        .map_err(|e| corrupt(e.to_string()))
}
