//! The vision-language-action model's settings: the `[vla]` table of a
//! training config, saved in the checkpoint's contract.

use crate::gaussian::{ActionMode, GaussianConfig, HIDDEN_WIDTH, INIT_LOG_STD, MAX_STEP};
use cerebellum_core::bounds::{Limits, refusal};
use serde::{Deserialize, Serialize};

/// Chunk positions the actor predicts.
pub const HORIZON: Limits<usize> = Limits::closed(1, 64).unit("actions");
pub const CONV_LAYERS: Limits<usize> = Limits::closed(1, 6).unit("layers");
pub const CONV_CHANNELS: Limits<usize> = Limits::closed(1, 256).unit("channels");
pub const CONV_KERNEL: Limits<usize> = Limits::closed(1, 9).unit("px");
pub const CONV_STRIDE: Limits<usize> = Limits::closed(1, 4).unit("px");
pub const TEXT_WIDTH: Limits<usize> = Limits::closed(1, 512).unit("units");
pub const MAX_WORDS: Limits<usize> = Limits::closed(1, 256).unit("words");
pub const HEAD_LAYERS: Limits<usize> = Limits::closed(1, 6).unit("layers");
pub const IMAGE_SIDE: Limits<u32> = Limits::closed(8, 512).unit("px");

/// The small-VLA recipe of RT-1 / BC-Z, sized for a CPU: strided
/// convolutions over one camera image, each FiLM-conditioned on the
/// instruction's embedding (Perez et al. 2018), spatial soft-argmax
/// keypoints (Levine et al. 2016), then an MLP head over the keypoints, the
/// instruction and the normalised joint state that outputs a Gaussian
/// action chunk; a critic beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlaConfig {
    /// Actions per chunk (H): one inference plans this many ticks.
    pub horizon: usize,
    /// Side of the square camera image the model reads (px); the robot's
    /// camera must deliver exactly this size.
    pub image_size: u32,
    /// Output channels of each convolution.
    pub conv_channels: Vec<usize>,
    /// Kernel side of each convolution (odd; padded to keep the centre).
    pub conv_kernels: Vec<usize>,
    pub conv_strides: Vec<usize>,
    /// Width of the instruction embedding (mean of its word embeddings).
    pub text_width: usize,
    /// Longest instruction read, in words; later words are dropped and
    /// counted.
    pub max_words: usize,
    /// Hidden layers of the actor head (ReLU).
    pub head_hidden: Vec<usize>,
    /// Hidden layers of the critic (tanh).
    pub critic_hidden: Vec<usize>,
    /// Initial log σ of the normalised action.
    pub init_log_std: f32,
    /// Absolute joint targets, or targets relative to the measured joints
    /// at the chunk's observation (as the MLP's `policy.action_mode`).
    pub action_mode: ActionMode,
}

impl Default for VlaConfig {
    fn default() -> Self {
        Self {
            horizon: 10,
            image_size: 64,
            // Full resolution, measured against the strided recipe (32
            // channels, kernels 5/3/3, strides 2/1/1): a 3×3 then a 1×1
            // convolution keep the keypoints on the 64×64 grid, where a
            // 2-px marker is one soft-argmax peak, and cost a third as
            // much per step; cloned reach-color, the strided net was at 0%
            // validation success after 1,500 steps where this one was at
            // 10%, and 50% at 2,000 (docs/BENCHMARKS.md).
            conv_channels: vec![16, 16],
            conv_kernels: vec![3, 1],
            conv_strides: vec![1, 1],
            text_width: 32,
            max_words: 16,
            head_hidden: vec![256, 256],
            critic_hidden: vec![64, 64],
            init_log_std: -1.0,
            action_mode: ActionMode::Delta { max_step: 0.2 },
        }
    }
}

impl VlaConfig {
    /// Every key checked, named by its path under `key` (`vla`).
    pub fn validate_at(&self, key: &str) -> Result<(), String> {
        HORIZON.check(&format!("{key}.horizon"), self.horizon)?;
        IMAGE_SIDE.check(&format!("{key}.image_size"), self.image_size)?;
        if !CONV_LAYERS.contains(self.conv_channels.len()) {
            return Err(refusal(
                &format!("{key}.conv_channels"),
                &self.conv_channels,
                &format!("must have {}", CONV_LAYERS.describe()),
            ));
        }
        for (name, list) in [
            ("conv_kernels", &self.conv_kernels),
            ("conv_strides", &self.conv_strides),
        ] {
            if list.len() != self.conv_channels.len() {
                return Err(refusal(
                    &format!("{key}.{name}"),
                    list,
                    &format!(
                        "must have one entry per convolution ({}, as conv_channels)",
                        self.conv_channels.len()
                    ),
                ));
            }
        }
        CONV_CHANNELS.check_each(&format!("{key}.conv_channels"), &self.conv_channels)?;
        CONV_KERNEL.check_each(&format!("{key}.conv_kernels"), &self.conv_kernels)?;
        if let Some(k) = self.conv_kernels.iter().find(|k| *k % 2 == 0) {
            return Err(refusal(
                &format!("{key}.conv_kernels"),
                &self.conv_kernels,
                &format!("every kernel must be odd ({k} is not)"),
            ));
        }
        CONV_STRIDE.check_each(&format!("{key}.conv_strides"), &self.conv_strides)?;
        if self.feature_side() < 2 {
            return Err(refusal(
                &format!("{key}.conv_strides"),
                &self.conv_strides,
                &format!(
                    "leave a feature map of at least 2×2 px from a {} px image",
                    self.image_size
                ),
            ));
        }
        TEXT_WIDTH.check(&format!("{key}.text_width"), self.text_width)?;
        MAX_WORDS.check(&format!("{key}.max_words"), self.max_words)?;
        for (name, list) in [
            ("head_hidden", &self.head_hidden),
            ("critic_hidden", &self.critic_hidden),
        ] {
            if !HEAD_LAYERS.contains(list.len()) {
                return Err(refusal(
                    &format!("{key}.{name}"),
                    list,
                    &format!("must have {}", HEAD_LAYERS.describe()),
                ));
            }
            HIDDEN_WIDTH.check_each(&format!("{key}.{name}"), list)?;
        }
        INIT_LOG_STD.check(&format!("{key}.init_log_std"), self.init_log_std)?;
        if let ActionMode::Delta { max_step } = self.action_mode {
            MAX_STEP.check(&format!("{key}.action_mode.max_step"), max_step)?;
        }
        Ok(())
    }

    /// Side of the last feature map: each convolution of kernel k, padding
    /// k / 2 and stride s maps n px to (n − 1) / s + 1.
    pub fn feature_side(&self) -> usize {
        self.conv_strides
            .iter()
            .fold(self.image_size as usize, |n, s| (n - 1) / s + 1)
    }

    /// Keypoints the soft-argmax gives: (x, y) per channel of the last map.
    pub fn keypoints(&self) -> usize {
        2 * self.conv_channels.last().copied().unwrap_or(0)
    }

    /// The Gaussian head's settings, in the form the checkpoint contract
    /// and the action mapping share with the MLP policy.
    pub fn gaussian(&self) -> GaussianConfig {
        GaussianConfig {
            hidden: self.head_hidden.clone(),
            init_log_std: self.init_log_std,
            action_mode: self.action_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_keys_are_named() {
        let config = VlaConfig::default();
        config.validate_at("vla").unwrap();
        assert_eq!(config.feature_side(), 64);
        assert_eq!(config.keypoints(), 32);
        let mut bad = config.clone();
        bad.conv_kernels = vec![3, 4];
        let e = bad.validate_at("vla").unwrap_err();
        assert!(e.contains("vla.conv_kernels") && e.contains("odd"), "{e}");
        let mut bad = config.clone();
        bad.conv_strides = vec![4, 4, 4, 4];
        let e = bad.validate_at("vla").unwrap_err();
        assert!(e.contains("vla.conv_strides"), "{e}");
        let mut bad = config.clone();
        bad.horizon = 0;
        let e = bad.validate_at("vla").unwrap_err();
        assert!(e.contains("vla.horizon"), "{e}");
        let mut bad = config;
        bad.image_size = 8;
        bad.conv_strides = vec![4, 4];
        let e = bad.validate_at("vla").unwrap_err();
        assert!(e.contains("2×2"), "{e}");
    }
}
