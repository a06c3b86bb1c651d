//! What the learned reward models share: seeded layer initialisation (so
//! the same seed trains the same model) and per-dimension state
//! statistics for normalising their inputs.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Linear;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A linear layer initialised uniformly in ±1/√inputs from `rng`, its
/// parameters appended to `vars` for the optimiser.
pub(crate) fn linear(
    rng: &mut ChaCha8Rng,
    inputs: usize,
    outputs: usize,
    vars: &mut Vec<Var>,
) -> candle_core::Result<Linear> {
    let bound = 1.0 / (inputs as f32).sqrt();
    let w: Vec<f32> = (0..inputs * outputs)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    let weight = Var::from_tensor(&Tensor::from_vec(w, (outputs, inputs), &Device::Cpu)?)?;
    let bias = Var::from_tensor(&Tensor::zeros(outputs, DType::F32, &Device::Cpu)?)?;
    let layer = Linear::new(weight.as_tensor().clone(), Some(bias.as_tensor().clone()));
    vars.push(weight);
    vars.push(bias);
    Ok(layer)
}

/// Mean and standard deviation (floored at 1e-3, so a constant dimension
/// does not blow up) of each dimension of `states`.
pub(crate) fn state_statistics<'a>(
    states: impl Iterator<Item = &'a Vec<f32>> + Clone,
    dims: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = states.clone().count().max(1) as f32;
    let mut mean = vec![0f32; dims];
    for s in states.clone() {
        mean.iter_mut().zip(s).for_each(|(m, v)| *m += v / n);
    }
    let mut std = vec![0f32; dims];
    for s in states {
        std.iter_mut()
            .zip(s)
            .zip(&mean)
            .for_each(|((d, v), m)| *d += (v - m).powi(2) / n);
    }
    std.iter_mut().for_each(|d| *d = d.sqrt().max(1e-3));
    (mean, std)
}

/// `state` normalised by `mean` and `std`, appended to `out`.
pub(crate) fn normalize_into(out: &mut Vec<f32>, state: &[f32], mean: &[f32], std: &[f32]) {
    normalize_values_into(out, state.iter().copied(), mean, std);
}

/// `values` normalised by `mean` and `std`, appended to `out`: reads a
/// field selection straight from the frame, with no copy in between.
pub(crate) fn normalize_values_into(
    out: &mut Vec<f32>,
    values: impl Iterator<Item = f32>,
    mean: &[f32],
    std: &[f32],
) {
    out.extend(values.zip(mean).zip(std).map(|((v, m), s)| (v - m) / s));
}
