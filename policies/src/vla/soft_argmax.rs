//! Spatial soft-argmax (Levine et al. 2016, "End-to-End Training of Deep
//! Visuomotor Policies"; robomimic's `SpatialSoftmax`): each channel's
//! feature map becomes the expected image position of its activation,
//! a keypoint (x, y) in [−1, 1].
//!
//! ```text
//! p_i = exp(a_i − max a) / Σ_j exp(a_j − max a)      (over the h·w pixels)
//! k_x = Σ_i p_i x_i,   k_y = Σ_i p_i y_i
//! ∂L/∂a_i = p_i · (g_x (x_i − k_x) + g_y (y_i − k_y))
//! ```
//!
//! One op with its own backward pass on the CPU (it keeps p from the
//! forward pass), instead of eight candle ops each way; elsewhere the same
//! formula in differentiable candle ops, never candle's fused
//! `softmax_last_dim` (no backward pass, candle #2168).

use candle_core::{CpuStorage, CustomOp1, D, Layout, Shape, Tensor};

/// `B × C × h × w` → `B × 2C` (all x, then all y, per sample).
pub(crate) struct SpatialSoftArgmax {
    /// The forward pass's probabilities (`B·C × h·w`) and keypoints.
    saved: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

/// Pixel-centre coordinates in [−1, 1] of an `h × w` map: (x, y) of pixel i.
fn coordinates(h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
    let centre = |i: usize, n: usize| (2 * i + 1) as f32 / n as f32 - 1.0;
    let xs = (0..h * w).map(|i| centre(i % w, w)).collect();
    let ys = (0..h * w).map(|i| centre(i / w, h)).collect();
    (xs, ys)
}

impl SpatialSoftArgmax {
    pub(crate) fn new() -> Self {
        Self {
            saved: std::sync::Mutex::new(None),
        }
    }

    /// Keypoints of `x`; `grid_x`, `grid_y` (`1 × 1 × h·w`, the pixel
    /// coordinates) serve the candle-ops path off the CPU.
    pub(crate) fn forward(
        self,
        x: &Tensor,
        grid_x: &Tensor,
        grid_y: &Tensor,
    ) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            return x.contiguous()?.apply_op1(self);
        }
        let (b, c, h, w) = x.dims4()?;
        let logits = x.reshape((b, c, h * w))?;
        let peak = logits.max_keepdim(D::Minus1)?.detach();
        let e = logits.broadcast_sub(&peak)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let kx = p.broadcast_mul(grid_x)?.sum(D::Minus1)?;
        let ky = p.broadcast_mul(grid_y)?.sum(D::Minus1)?;
        Tensor::cat(&[kx, ky], 1)
    }
}

impl CustomOp1 for SpatialSoftArgmax {
    fn name(&self) -> &'static str {
        "cerebellum-spatial-soft-argmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[b, c, h, w] = l.dims() else {
            candle_core::bail!("soft-argmax: input {:?} must be 4-d", l.dims());
        };
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("soft-argmax: f32 only");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("soft-argmax: contiguous input only");
        };
        let x = &data[start..end];
        let (xs, ys) = coordinates(h, w);
        let hw = h * w;
        let mut p = vec![0.0f32; x.len()];
        let mut out = vec![0.0f32; b * 2 * c];
        for (map, (a, q)) in x.chunks_exact(hw).zip(p.chunks_exact_mut(hw)).enumerate() {
            let peak = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (q, &a) in q.iter_mut().zip(a) {
                *q = (a - peak).exp();
                sum += *q;
            }
            let (mut kx, mut ky) = (0.0f32, 0.0f32);
            for ((q, x), y) in q.iter_mut().zip(&xs).zip(&ys) {
                *q /= sum;
                kx += *q * x;
                ky += *q * y;
            }
            let (sample, channel) = (map / c, map % c);
            out[sample * 2 * c + channel] = kx;
            out[sample * 2 * c + c + channel] = ky;
        }
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, out.clone()));
        Ok((CpuStorage::F32(out), Shape::from((b, 2 * c))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, c, h, w) = x.dims4()?;
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((p, k)) = saved else {
            candle_core::bail!("soft-argmax: backward pass without its forward pass");
        };
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let (xs, ys) = coordinates(h, w);
        let hw = h * w;
        let mut dx = vec![0.0f32; p.len()];
        for (map, (d, q)) in dx.chunks_exact_mut(hw).zip(p.chunks_exact(hw)).enumerate() {
            let (sample, channel) = (map / c, map % c);
            let (gx, gy) = (g[sample * 2 * c + channel], g[sample * 2 * c + c + channel]);
            let (kx, ky) = (k[sample * 2 * c + channel], k[sample * 2 * c + c + channel]);
            for (((d, q), x), y) in d.iter_mut().zip(q).zip(&xs).zip(&ys) {
                *d = q * (gx * (x - kx) + gy * (y - ky));
            }
        }
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_the_candle_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let (b, c, h, w) = (3, 4, 5, 6);
        let values: Vec<f32> = (0..b * c * h * w)
            .map(|_| rng.random_range(-3.0..3.0))
            .collect();
        let x = Var::from_vec(values, (b, c, h, w), &dev).unwrap();
        let (xs, ys) = coordinates(h, w);
        let gx = Tensor::from_vec(xs, (1, 1, h * w), &dev).unwrap();
        let gy = Tensor::from_vec(ys, (1, 1, h * w), &dev).unwrap();
        let ours = SpatialSoftArgmax::new()
            .forward(x.as_tensor(), &gx, &gy)
            .unwrap();
        // The candle-ops path, forced by going through a reshape graph.
        let logits = x.as_tensor().reshape((b, c, h * w)).unwrap();
        let peak = logits.max_keepdim(D::Minus1).unwrap().detach();
        let e = logits.broadcast_sub(&peak).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let kx = p.broadcast_mul(&gx).unwrap().sum(D::Minus1).unwrap();
        let ky = p.broadcast_mul(&gy).unwrap().sum(D::Minus1).unwrap();
        let reference = Tensor::cat(&[kx, ky], 1).unwrap();
        let weights: Vec<f32> = (0..b * 2 * c)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let weights = Tensor::from_vec(weights, (b, 2 * c), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, r) in flat(&ours).iter().zip(flat(&reference)) {
            assert!((a - r).abs() < 1e-5, "{a} vs {r}");
        }
        let g1 = (ours * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (reference * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (g1, g2) = (
            flat(g1.get(x.as_tensor()).unwrap()),
            flat(g2.get(x.as_tensor()).unwrap()),
        );
        for (a, r) in g1.iter().zip(&g2) {
            assert!((a - r).abs() < 1e-5, "{a} vs {r}");
        }
        assert!(g1.iter().any(|v| v.abs() > 1e-3));
    }
}
