//! VLA checkpoints: the weights (safetensors), the tokenizer the policy
//! reads its instructions with (`tokenizer.json`), and the contract, which
//! extends the MLP's with a `vla` section: the model's settings, the
//! cameras with their pixel normalisation, and the tokenizer's file and
//! SHA-256. Loading checks all of it before a weight is used and names
//! the field that is wrong; nothing is loaded from a checkpoint that fails.

use super::config::VlaConfig;
use super::policy::{PIXEL_MEAN, PIXEL_STD, VlaPolicy, check_spec};
use super::tokenizer::{InstructionTokenizer, sha256_hex};
use crate::checkpoint::{
    self, CONTRACT_FILE, CheckpointError, Contract, TrainingProvenance, WEIGHTS_FILE,
};
use candle_core::{Device, Tensor};
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
    let write_error = |e: String| CheckpointError::Write {
        path: dir.join(WEIGHTS_FILE),
        source: std::io::Error::other(e),
    };
    let mut tensors = Vec::new();
    for (name, var) in policy.model.groups().into_iter().flatten() {
        let values = var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| write_error(e.to_string()))?;
        tensors.push((name, var.dims().to_vec(), le_bytes(&values)));
    }
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
/// name, shape and values, before any weight is used.
pub fn load(
    dir: &Path,
    robot: Option<&RobotSpec>,
    device: &Device,
) -> Result<(VlaPolicy, Contract), CheckpointError> {
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
    let data = checkpoint::verified_weights(dir, &contract)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let corrupt = |reason: String| CheckpointError::Weights {
        path: weights_path.clone(),
        reason,
    };
    let tensors = SafeTensors::deserialize(&data).map_err(|e| corrupt(e.to_string()))?;
    let mut policy = VlaPolicy::new(&contract.spec, vla.model.clone(), tokenizer, 0, device)
        .map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = policy
        .model
        .groups()
        .into_iter()
        .flatten()
        .map(|(name, _)| name)
        .collect();
    if tensors.len() != names.len() {
        return Err(corrupt(format!(
            "{} tensors; the model described by the contract has {}",
            tensors.len(),
            names.len()
        )));
    }
    let mut groups = Vec::new();
    for group in policy.model.groups() {
        let mut values = Vec::new();
        for (name, var) in group {
            let view = tensors
                .tensor(&name)
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
        groups.push(values);
    }
    policy
        .set_parameters(&groups)
        .map_err(|e| corrupt(e.to_string()))?;
    policy.base.normalizer = contract.normalizer.clone();
    policy.base.set_version(contract.policy_version);
    let _: Option<Tensor> = None;
    Ok((policy, contract))
}
