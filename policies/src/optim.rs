//! Adam (Kingma & Ba 2015) over a list of flat parameter slices, with
//! gradient clipping by global norm (Pascanu et al. 2013), as PPO
//! implementations use it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// 1e-5 rather than the paper's 1e-8, following the PPO reference code
    /// (and CleanRL), where it keeps early steps small.
    pub epsilon: f64,
    step: u64,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
}

impl Adam {
    pub fn new(learning_rate: f64, sizes: &[usize]) -> Self {
        Self {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-5,
            step: 0,
            first: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            second: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update. `grads[k]` belongs to `params[k]`.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert_eq!(params.len(), self.first.len(), "parameter groups");
        self.step += 1;
        let t = self.step as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let step_size = (self.learning_rate / correction1) as f32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let sqrt_c2 = correction2.sqrt() as f32;
        let eps = self.epsilon as f32;
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            assert_eq!(p.len(), g.len(), "gradient group {k} size");
            for (((p, &g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(self.first[k].iter_mut())
                .zip(self.second[k].iter_mut())
            {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() / sqrt_c2 + eps);
            }
        }
    }
}

/// Global L2 norm of all gradients.
pub fn global_norm(grads: &[&[f32]]) -> f32 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// Scales all gradients so that their global norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let norm = global_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>());
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        grads
            .iter_mut()
            .for_each(|g| g.iter_mut().for_each(|x| *x *= scale));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adam_step_moves_each_parameter_by_the_learning_rate() {
        // With bias correction the first step is lr · g / (|g| + ε') ≈ lr · sign(g).
        let mut adam = Adam::new(0.1, &[3]);
        let mut p = vec![1.0f32, 1.0, 1.0];
        adam.step(&mut [&mut p], &[&[2.0, -0.5, 0.0]]);
        assert!((p[0] - 0.9).abs() < 1e-4 && (p[1] - 1.1).abs() < 1e-4 && p[2] == 1.0);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut a = vec![3.0f32];
        let mut b = vec![4.0f32];
        let norm = clip_global_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(norm, 5.0);
        assert!((a[0] - 0.6).abs() < 1e-5 && (b[0] - 0.8).abs() < 1e-5);
    }
}
