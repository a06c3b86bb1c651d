//! The VLA's convolutions: our own forward and backward passes (im2col
//! over `gemm`), as a candle custom op, so they take part in candle's
//! autograd like any other op.
//!
//! Why not candle's `conv2d`: its backward pass computes the kernel's
//! gradient as a convolution whose kernel is the whole output gradient map
//! (batch as channels) and the input's through `conv_transpose2d`, even for
//! the camera image, which needs none; on this net that made a training
//! step ~5× slower than PyTorch's (docs/BENCHMARKS.md, "Vision-language
//! policy"). Here, for a batch of B images (C_in × H × W) and a kernel
//! `C_out × C_in × k × k` (stride s, padding p):
//!
//! ```text
//! cols  (C_in·k·k × B·Ho·Wo) = im2col(x)          one column per output pixel
//! y     (C_out × B·Ho·Wo)    = W · cols           forward
//! dW    (C_out × C_in·k·k)   = dy · colsᵀ         backward, kernel
//! dcols (C_in·k·k × B·Ho·Wo) = Wᵀ · dy,  dx = col2im(dcols)   backward, input
//! ```
//!
//! The input's gradient is skipped for the first layer (`input_grad =
//! false`): the camera image is not trained. Every product runs on the
//! thread count candle uses (`RAYON_NUM_THREADS`); gemm splits only the
//! output among threads, so results do not depend on it. CPU only: on
//! another device the op says so (`cuda` builds use candle's own conv2d).

use crate::linalg::{Strided, matmul_on};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// One convolution's geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    /// Whether the input needs a gradient (not for the image).
    pub input_grad: bool,
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn of(op: &Conv2d, x: &[usize], kernel: &[usize]) -> candle_core::Result<Self> {
        let (&[b, c_in, h, w], &[c_out, kc, k, k2]) = (x, kernel) else {
            candle_core::bail!("conv2d: input {x:?} and kernel {kernel:?} must be 4-d");
        };
        if kc != c_in || k != k2 {
            candle_core::bail!("conv2d: kernel {kernel:?} does not fit input {x:?}");
        }
        let span = |n: usize| {
            (n + 2 * op.padding)
                .checked_sub(k)
                .map(|d| d / op.stride + 1)
        };
        let (Some(ho), Some(wo)) = (span(h), span(w)) else {
            candle_core::bail!("conv2d: kernel {k} larger than the padded input {h}x{w}");
        };
        Ok(Self {
            b,
            c_in,
            h,
            w,
            c_out,
            k,
            ho,
            wo,
        })
    }

    fn rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    fn columns(&self) -> usize {
        self.b * self.ho * self.wo
    }
}

fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

impl Conv2d {
    /// `cols[r][n]`, r = (c·k + ki)·k + kj, n = (b·Ho + oy)·Wo + ox.
    fn im2col(&self, d: &Dims, x: &[f32]) -> Vec<f32> {
        let n = d.columns();
        let mut cols = vec![0.0f32; d.rows() * n];
        let hw_out = d.ho * d.wo;
        for c in 0..d.c_in {
            for ki in 0..d.k {
                for kj in 0..d.k {
                    let r = (c * d.k + ki) * d.k + kj;
                    let row = &mut cols[r * n..(r + 1) * n];
                    for b in 0..d.b {
                        let plane = &x[(b * d.c_in + c) * d.h * d.w..][..d.h * d.w];
                        let out = &mut row[b * hw_out..(b + 1) * hw_out];
                        for oy in 0..d.ho {
                            let iy = (oy * self.stride + ki) as isize - self.padding as isize;
                            if iy < 0 || iy >= d.h as isize {
                                continue;
                            }
                            let src = &plane[iy as usize * d.w..][..d.w];
                            let dst = &mut out[oy * d.wo..(oy + 1) * d.wo];
                            for (ox, v) in dst.iter_mut().enumerate() {
                                let ix = (ox * self.stride + kj) as isize - self.padding as isize;
                                if ix >= 0 && ix < d.w as isize {
                                    *v = src[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// The adjoint of `im2col`: adds each column entry back to its pixel.
    fn col2im(&self, d: &Dims, cols: &[f32]) -> Vec<f32> {
        let n = d.columns();
        let hw_out = d.ho * d.wo;
        let mut x = vec![0.0f32; d.b * d.c_in * d.h * d.w];
        for c in 0..d.c_in {
            for ki in 0..d.k {
                for kj in 0..d.k {
                    let r = (c * d.k + ki) * d.k + kj;
                    let row = &cols[r * n..(r + 1) * n];
                    for b in 0..d.b {
                        let plane = &mut x[(b * d.c_in + c) * d.h * d.w..][..d.h * d.w];
                        let src = &row[b * hw_out..(b + 1) * hw_out];
                        for oy in 0..d.ho {
                            let iy = (oy * self.stride + ki) as isize - self.padding as isize;
                            if iy < 0 || iy >= d.h as isize {
                                continue;
                            }
                            let dst = &mut plane[iy as usize * d.w..][..d.w];
                            for (ox, v) in src[oy * d.wo..(oy + 1) * d.wo].iter().enumerate() {
                                let ix = (ox * self.stride + kj) as isize - self.padding as isize;
                                if ix >= 0 && ix < d.w as isize {
                                    dst[ix as usize] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
        x
    }

    /// `C_out × (B·Ho·Wo)` ⇄ `B × C_out × Ho·Wo`.
    fn to_batch_major(d: &Dims, y: &[f32]) -> Vec<f32> {
        let hw = d.ho * d.wo;
        let mut out = vec![0.0f32; y.len()];
        for c in 0..d.c_out {
            for b in 0..d.b {
                out[(b * d.c_out + c) * hw..][..hw]
                    .copy_from_slice(&y[c * d.columns() + b * hw..][..hw]);
            }
        }
        out
    }

    fn to_channel_major(d: &Dims, y: &[f32]) -> Vec<f32> {
        let hw = d.ho * d.wo;
        let mut out = vec![0.0f32; y.len()];
        for c in 0..d.c_out {
            for b in 0..d.b {
                out[c * d.columns() + b * hw..][..hw]
                    .copy_from_slice(&y[(b * d.c_out + c) * hw..][..hw]);
            }
        }
        out
    }

    /// y = conv(x, kernel), batch-major (`B × C_out × Ho × Wo`).
    fn forward(&self, d: &Dims, x: &[f32], kernel: &[f32]) -> Vec<f32> {
        let (_, y) = self.forward_channel_major(d, x, kernel);
        Self::to_batch_major(d, &y)
    }

    /// The columns of x and y = conv(x, kernel), channel-major
    /// (`C_out × B·Ho·Wo`).
    fn forward_channel_major(&self, d: &Dims, x: &[f32], kernel: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let cols = self.im2col(d, x);
        let (m, n, kk) = (d.c_out, d.columns(), d.rows());
        let mut y = vec![0.0f32; m * n];
        matmul_on(
            m,
            n,
            kk,
            &mut y,
            false,
            Strided::row_major(kernel, kk),
            Strided::row_major(&cols, n),
            threads(),
        );
        (cols, y)
    }

    /// (dx, dkernel) from dy (`B × C_out × Ho × Wo`).
    fn backward(
        &self,
        d: &Dims,
        x: &[f32],
        kernel: &[f32],
        dy: &[f32],
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let dy = Self::to_channel_major(d, dy);
        self.backward_channel_major(d, self.im2col(d, x), kernel, &dy)
    }

    /// (dx, dkernel) from the columns of x and dy (`C_out × B·Ho·Wo`).
    fn backward_channel_major(
        &self,
        d: &Dims,
        cols: Vec<f32>,
        kernel: &[f32],
        dy: &[f32],
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let (m, n, kk) = (d.c_out, d.columns(), d.rows());
        let mut dkernel = vec![0.0f32; m * kk];
        // dW = dy · colsᵀ
        matmul_on(
            m,
            kk,
            n,
            &mut dkernel,
            false,
            Strided::row_major(dy, n),
            Strided {
                data: &cols,
                row: 1,
                col: n as isize,
            },
            threads(),
        );
        let dx = self.input_grad.then(|| {
            // dcols = Wᵀ · dy
            let mut dcols = cols;
            matmul_on(
                kk,
                n,
                m,
                &mut dcols,
                false,
                Strided {
                    data: kernel,
                    row: 1,
                    col: kk as isize,
                },
                Strided::row_major(dy, n),
                threads(),
            );
            self.col2im(d, &dcols)
        });
        (dx, dkernel)
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("conv2d: f32 tensors only");
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("conv2d: contiguous tensors only"),
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "cerebellum-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(self, l1.dims(), l2.dims())?;
        let y = self.forward(&d, contiguous(s1, l1)?, contiguous(s2, l2)?);
        Ok((CpuStorage::F32(y), Shape::from((d.b, d.c_out, d.ho, d.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(self, x.dims(), kernel.dims())?;
        let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let (dx, dk) = self.backward(&d, &flat(x)?, &flat(kernel)?, &flat(grad)?);
        let dev = x.device();
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, x.shape(), dev))
            .transpose()?;
        Ok((dx, Some(Tensor::from_vec(dk, kernel.shape(), dev)?)))
    }
}

/// One FiLM-conditioned convolution layer as a single op (Perez et al.
/// 2018): `y = relu(conv(x, W) · (1 + γ) + β)`, γ and β per sample and
/// channel (`film` is `B × 2C`: γ then β). Fusing the modulation and the
/// ReLU into the convolution saves six passes over the feature map each
/// way; the op keeps what its backward pass needs (the columns and the
/// convolution's output) from its forward pass, one op per call.
///
/// ```text
/// d pre = dy · [y > 0]
/// dγ[b,c] = Σ_p d pre · z,   dβ[b,c] = Σ_p d pre,   dz = d pre · (1 + γ)
/// ```
/// then dz through the convolution's backward pass.
pub(crate) struct FilmConv {
    pub conv: Conv2d,
    /// The forward pass's columns and `C_out × (B·Ho·Wo)` output.
    saved: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl FilmConv {
    pub(crate) fn new(conv: Conv2d) -> Self {
        Self {
            conv,
            saved: std::sync::Mutex::new(None),
        }
    }

    /// The layer on candle tensors, recorded for autograd: fused on the
    /// CPU; on another device, candle's own ops.
    pub(crate) fn forward(
        self,
        x: &Tensor,
        kernel: &Tensor,
        film: &Tensor,
    ) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            return x
                .contiguous()?
                .apply_op3(&kernel.contiguous()?, &film.contiguous()?, self);
        }
        let (b, c) = (x.dim(0)?, kernel.dim(0)?);
        let gamma = film.narrow(1, 0, c)?.reshape((b, c, 1, 1))?;
        let beta = film.narrow(1, c, c)?.reshape((b, c, 1, 1))?;
        x.conv2d(kernel, self.conv.padding, self.conv.stride, 1, 1)?
            .broadcast_mul(&(gamma + 1.0)?)?
            .broadcast_add(&beta)?
            .relu()
    }
}

impl CustomOp3 for FilmConv {
    fn name(&self) -> &'static str {
        "cerebellum-film-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(&self.conv, l1.dims(), l2.dims())?;
        let film = contiguous(s3, l3)?;
        if l3.dims() != [d.b, 2 * d.c_out] {
            candle_core::bail!("film: {:?}, expected [{}, {}]", l3.dims(), d.b, 2 * d.c_out);
        }
        let (cols, z) =
            self.conv
                .forward_channel_major(&d, contiguous(s1, l1)?, contiguous(s2, l2)?);
        let hw = d.ho * d.wo;
        let mut y = vec![0.0f32; z.len()];
        for b in 0..d.b {
            for c in 0..d.c_out {
                let scale = 1.0 + film[b * 2 * d.c_out + c];
                let shift = film[b * 2 * d.c_out + d.c_out + c];
                let src = &z[c * d.columns() + b * hw..][..hw];
                let dst = &mut y[(b * d.c_out + c) * hw..][..hw];
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = (v * scale + shift).max(0.0);
                }
            }
        }
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some((cols, z));
        Ok((CpuStorage::F32(y), Shape::from((d.b, d.c_out, d.ho, d.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        film: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(&self.conv, x.dims(), kernel.dims())?;
        let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (cols, z) = match saved {
            Some(saved) => saved,
            None => self
                .conv
                .forward_channel_major(&d, &flat(x)?, &flat(kernel)?),
        };
        let (film_v, y, dy) = (flat(film)?, flat(res)?, flat(grad)?);
        let hw = d.ho * d.wo;
        let n = d.columns();
        let mut dz = vec![0.0f32; z.len()];
        let mut dfilm = vec![0.0f32; film_v.len()];
        for b in 0..d.b {
            for c in 0..d.c_out {
                let scale = 1.0 + film_v[b * 2 * d.c_out + c];
                let at = (b * d.c_out + c) * hw;
                let (mut dgamma, mut dbeta) = (0.0f32, 0.0f32);
                let zc = &z[c * n + b * hw..][..hw];
                let dzc = &mut dz[c * n + b * hw..][..hw];
                for p in 0..hw {
                    if y[at + p] > 0.0 {
                        let g = dy[at + p];
                        dgamma += g * zc[p];
                        dbeta += g;
                        dzc[p] = g * scale;
                    }
                }
                dfilm[b * 2 * d.c_out + c] = dgamma;
                dfilm[b * 2 * d.c_out + d.c_out + c] = dbeta;
            }
        }
        let (dx, dk) = self
            .conv
            .backward_channel_major(&d, cols, &flat(kernel)?, &dz);
        let dev = x.device();
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, x.shape(), dev))
            .transpose()?;
        Ok((
            dx,
            Some(Tensor::from_vec(dk, kernel.shape(), dev)?),
            Some(Tensor::from_vec(dfilm, film.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Ours against candle's conv2d and its autograd, forward and both
    /// gradients, for strides 1 and 2 and odd sizes (square ones at stride
    /// 2: candle's own backward pass sizes the input gradient from the
    /// height alone).
    #[test]
    fn matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (b, c_in, h, w, c_out, k, stride) in [
            (2, 3, 9, 7, 4, 3, 1),
            (3, 2, 11, 11, 5, 5, 2),
            (2, 3, 8, 8, 4, 3, 2),
            (1, 4, 6, 6, 3, 1, 1),
        ] {
            let padding = k / 2;
            let mut rand =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
            let x = Var::from_vec(rand(b * c_in * h * w), (b, c_in, h, w), &dev).unwrap();
            let kernel =
                Var::from_vec(rand(c_out * c_in * k * k), (c_out, c_in, k, k), &dev).unwrap();
            let op = Conv2d {
                stride,
                padding,
                input_grad: true,
            };
            let ours = x.as_tensor().apply_op2(kernel.as_tensor(), op).unwrap();
            let reference = x
                .as_tensor()
                .conv2d(kernel.as_tensor(), padding, stride, 1, 1)
                .unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let weights = Tensor::from_vec(rand(ours.elem_count()), ours.shape(), &dev).unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{what}[{i}]: {a} vs {b}"
                    );
                }
            };
            close(&ours, &reference, "forward");
            let g_ours = (ours * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_ref = (reference * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            close(
                g_ours.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap(),
                "dx",
            );
            close(
                g_ours.get(kernel.as_tensor()).unwrap(),
                g_ref.get(kernel.as_tensor()).unwrap(),
                "dkernel",
            );

            // The fused FiLM layer against the same in plain candle ops.
            let film = Var::from_vec(rand(b * 2 * c_out), (b, 2 * c_out), &dev).unwrap();
            let fused = FilmConv::new(op)
                .forward(x.as_tensor(), kernel.as_tensor(), film.as_tensor())
                .unwrap();
            let gamma = film
                .as_tensor()
                .narrow(1, 0, c_out)
                .unwrap()
                .reshape((b, c_out, 1, 1))
                .unwrap();
            let beta = film
                .as_tensor()
                .narrow(1, c_out, c_out)
                .unwrap()
                .reshape((b, c_out, 1, 1))
                .unwrap();
            let plain = x
                .as_tensor()
                .conv2d(kernel.as_tensor(), padding, stride, 1, 1)
                .unwrap()
                .broadcast_mul(&(gamma + 1.0).unwrap())
                .unwrap()
                .broadcast_add(&beta)
                .unwrap()
                .relu()
                .unwrap();
            close(&fused, &plain, "film forward");
            let g_fused = (fused * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_plain = (plain * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (var, what) in [(&x, "film dx"), (&kernel, "film dkernel"), (&film, "dfilm")] {
                close(
                    g_fused.get(var.as_tensor()).unwrap(),
                    g_plain.get(var.as_tensor()).unwrap(),
                    what,
                );
            }
        }
    }
}
