//! The learner interface's backward pass for candle models: the scalar
//! Σ d loss/d output ⊙ output (plus d loss/d mean entropy × the mean
//! entropy), whose gradient with respect to the variables is the
//! vector–Jacobian product `TrainablePolicy::backward` adds.

use crate::trainable::OutputGrads;
use candle_core::{Device, Tensor};
use cerebellum_core::PolicyError;

fn candle(e: candle_core::Error) -> PolicyError {
    PolicyError::Other(format!("candle: {e}"))
}

/// The last forward pass's output tensors (their graphs lead to the
/// variables); `None` where it computed none.
pub(crate) struct ForwardOutputs<'a> {
    pub log_probs: Option<&'a Tensor>,
    pub entropies: Option<&'a Tensor>,
    pub imitation: Option<&'a Tensor>,
    pub values: Option<&'a Tensor>,
}

/// The scalar to differentiate, or `None` when every gradient is empty;
/// an error when a gradient does not fit the output it belongs to.
pub(crate) fn objective(
    grads: &OutputGrads,
    outputs: ForwardOutputs<'_>,
    device: &Device,
) -> Result<Option<Tensor>, PolicyError> {
    let mut total: Option<Tensor> = None;
    let mut add = |term: Tensor| -> Result<(), PolicyError> {
        total = Some(match total.take() {
            None => term,
            Some(t) => t.add(&term).map_err(candle)?,
        });
        Ok(())
    };
    for (what, g, out) in [
        ("log_probs", &grads.log_probs, outputs.log_probs),
        ("imitation", &grads.imitation, outputs.imitation),
        ("values", &grads.values, outputs.values),
    ] {
        if g.is_empty() {
            continue;
        }
        let Some(out) = out.filter(|o| o.elem_count() == g.len()) else {
            return Err(PolicyError::Other(format!(
                "gradient of {what} has {} values but the last forward pass gave {}",
                g.len(),
                out.map_or(0, |o| o.elem_count())
            )));
        };
        let term = Tensor::from_slice(g, g.len(), device)
            .and_then(|g| out.mul(&g))
            .and_then(|t| t.sum_all())
            .map_err(candle)?;
        add(term)?;
    }
    if grads.mean_entropy != 0.0 {
        let Some(entropies) = outputs.entropies else {
            return Err(PolicyError::Other(
                "gradient of the mean entropy, but the last forward pass computed no entropies"
                    .into(),
            ));
        };
        let term = entropies
            .mean_all()
            .and_then(|m| m.affine(f64::from(grads.mean_entropy), 0.0))
            .map_err(candle)?;
        add(term)?;
    }
    Ok(total)
}
