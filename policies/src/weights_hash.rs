//! The integrity hash of a set of weights: SHA-256 over the canonical bytes
//! of every tensor, plus one digest per tensor so that a mismatch names the
//! tensor that changed.
//!
//! The hash reads what a tensor *is* (name, dtype, shape, data), not how a
//! file lays it out: the same tensors saved in another order, with other
//! padding or other metadata hash the same, and one flipped bit of any
//! tensor's data does not.
//!
//! # Byte layout
//!
//! A tensor's *record* is, with every integer a `u64` in little-endian:
//!
//! ```text
//! name length in bytes, then the name (UTF-8)
//! dtype length in bytes, then the dtype as safetensors writes it (`F32`, `BF16`, `I64`, …)
//! rank, then each dimension
//! data length in bytes, then the data exactly as stored (little-endian, row-major)
//! ```
//!
//! - the *tensor digest* ([`tensor_sha256`]) is the SHA-256 of its record;
//! - the *weights digest* ([`weights_sha256`]) is the SHA-256 of the records
//!   of all tensors concatenated in ascending byte order of their names.
//!
//! Digests are written as 64 lowercase hex digits. [`verify`] checks the
//! weights digest (one pass over the data) and computes the tensor digests
//! only to name what differs.
//!
//! This is independent of any policy: checkpoints use it today, and
//! anything that ships tensors (adapters, replayed or broadcast weights)
//! can call [`hash`] when writing and [`verify`] when reading.

use safetensors::tensor::TensorView;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Both digests of a set of tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsHash {
    /// SHA-256 of every tensor's record, in name order (hex).
    pub weights_sha256: String,
    /// Each tensor's own SHA-256 (hex), by name.
    pub tensor_sha256: BTreeMap<String, String>,
}

/// What differs between tensors and the digests they were saved with; the
/// first difference in name order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeightsMismatch {
    #[error("tensor `{name}` has SHA-256 {found}, expected {expected}")]
    Tensor {
        name: String,
        expected: String,
        found: String,
    },
    #[error("tensor `{name}` (SHA-256 {expected}) is missing")]
    Missing { name: String, expected: String },
    #[error("tensor `{name}` (SHA-256 {found}) is not among the hashed tensors")]
    Unexpected { name: String, found: String },
    /// Every tensor matches its own digest but not the weights digest: the
    /// per-tensor digests themselves were edited.
    #[error(
        "the weights have SHA-256 {found}, expected {expected} (every tensor matches its own digest, so the digests disagree with each other)"
    )]
    Weights { expected: String, found: String },
}

fn feed(hasher: &mut Sha256, name: &str, tensor: &TensorView<'_>) {
    let len = |n: usize| (n as u64).to_le_bytes();
    let dtype = tensor.dtype().to_string();
    hasher.update(len(name.len()));
    hasher.update(name.as_bytes());
    hasher.update(len(dtype.len()));
    hasher.update(dtype.as_bytes());
    hasher.update(len(tensor.shape().len()));
    for &dim in tensor.shape() {
        hasher.update(len(dim));
    }
    hasher.update(len(tensor.data().len()));
    hasher.update(tensor.data());
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    use std::fmt::Write;
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            write!(out, "{byte:02x}").expect("writing to a String");
            out
        })
}

fn sorted<'t, 'd>(tensors: &'t [(&'t str, TensorView<'d>)]) -> Vec<&'t (&'t str, TensorView<'d>)> {
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
}

/// The SHA-256 (hex) of one tensor's record.
pub fn tensor_sha256(name: &str, tensor: &TensorView<'_>) -> String {
    let mut hasher = Sha256::new();
    feed(&mut hasher, name, tensor);
    hex(hasher.finalize())
}

/// The SHA-256 (hex) of all tensors' records in name order; the order of
/// `tensors` does not matter. `SafeTensors::iter().collect()` gives the
/// slice for a safetensors file.
pub fn weights_sha256(tensors: &[(&str, TensorView<'_>)]) -> String {
    let mut hasher = Sha256::new();
    for (name, tensor) in sorted(tensors) {
        feed(&mut hasher, name, tensor);
    }
    hex(hasher.finalize())
}

/// Both digests, to store beside the weights.
pub fn hash(tensors: &[(&str, TensorView<'_>)]) -> WeightsHash {
    WeightsHash {
        weights_sha256: weights_sha256(tensors),
        tensor_sha256: tensors
            .iter()
            .map(|(name, tensor)| ((*name).to_owned(), tensor_sha256(name, tensor)))
            .collect(),
    }
}

/// Checks `tensors` against the digests they were saved with, naming the
/// first tensor (in name order) that changed, is missing or was added.
pub fn verify(
    tensors: &[(&str, TensorView<'_>)],
    expected: &WeightsHash,
) -> Result<(), WeightsMismatch> {
    let found = weights_sha256(tensors);
    if found == expected.weights_sha256 {
        return Ok(());
    }
    let found_tensors = hash(tensors).tensor_sha256;
    let mut names: Vec<&String> = expected
        .tensor_sha256
        .keys()
        .chain(found_tensors.keys())
        .collect();
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    names.dedup();
    for name in names {
        match (expected.tensor_sha256.get(name), found_tensors.get(name)) {
            (Some(expected), Some(found)) if expected == found => {}
            (Some(expected), Some(found)) => {
                return Err(WeightsMismatch::Tensor {
                    name: name.clone(),
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
            (Some(expected), None) => {
                return Err(WeightsMismatch::Missing {
                    name: name.clone(),
                    expected: expected.clone(),
                });
            }
            (None, Some(found)) => {
                return Err(WeightsMismatch::Unexpected {
                    name: name.clone(),
                    found: found.clone(),
                });
            }
            (None, None) => unreachable!("the name came from one of the maps"),
        }
    }
    Err(WeightsMismatch::Weights {
        expected: expected.weights_sha256.clone(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn the_record_layout_is_as_documented() {
        let data = f32_bytes(&[1.0, -2.0]);
        let view = TensorView::new(Dtype::F32, vec![2, 1], &data).unwrap();
        let mut record = Vec::new();
        record.extend(1u64.to_le_bytes());
        record.extend(b"w");
        record.extend(3u64.to_le_bytes());
        record.extend(b"F32");
        record.extend(2u64.to_le_bytes());
        record.extend(2u64.to_le_bytes());
        record.extend(1u64.to_le_bytes());
        record.extend(8u64.to_le_bytes());
        record.extend(&data);
        assert_eq!(tensor_sha256("w", &view), hex(Sha256::digest(&record)));
        assert_eq!(weights_sha256(&[("w", view)]), hex(Sha256::digest(&record)));
        // The digest of nothing is the SHA-256 of no bytes.
        assert_eq!(
            weights_sha256(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn order_does_not_matter_and_every_part_does() {
        let (a, b) = (f32_bytes(&[1.0, 2.0]), f32_bytes(&[3.0]));
        let view = |data, shape| TensorView::new(Dtype::F32, shape, data).unwrap();
        let tensors = [("b", view(&b, vec![1])), ("a", view(&a, vec![2]))];
        let reference = hash(&tensors);
        let swapped = [tensors[1].clone(), tensors[0].clone()];
        assert_eq!(hash(&swapped), reference);
        assert_eq!(verify(&swapped, &reference), Ok(()));
        let shaped = [("b", view(&b, vec![1])), ("a", view(&a, vec![1, 2]))];
        let as_u32 = TensorView::new(Dtype::U32, vec![2], &a).unwrap();
        let retyped = [("b", view(&b, vec![1])), ("a", as_u32)];
        let renamed = [("b", view(&b, vec![1])), ("c", view(&a, vec![2]))];
        let mut flipped = a.clone();
        flipped[5] ^= 0x10;
        let bit = [("b", view(&b, vec![1])), ("a", view(&flipped, vec![2]))];
        for other in [&shaped[..], &retyped, &renamed, &bit] {
            assert_ne!(weights_sha256(other), reference.weights_sha256);
        }
        match verify(&bit, &reference) {
            Err(WeightsMismatch::Tensor { name, expected, .. }) => {
                assert_eq!(
                    (name.as_str(), &expected),
                    ("a", &reference.tensor_sha256["a"])
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify(&renamed, &reference),
            Err(WeightsMismatch::Missing { name, .. }) if name == "a"
        ));
        assert!(matches!(
            verify(&tensors[..1], &reference),
            Err(WeightsMismatch::Missing { name, .. }) if name == "a"
        ));
        let mut edited = reference.clone();
        edited.tensor_sha256.remove("b");
        edited.weights_sha256 = "0".repeat(64);
        assert!(matches!(
            verify(&tensors, &edited),
            Err(WeightsMismatch::Unexpected { name, .. }) if name == "b"
        ));
        edited.tensor_sha256 = reference.tensor_sha256.clone();
        assert!(matches!(
            verify(&tensors, &edited),
            Err(WeightsMismatch::Weights { .. })
        ));
    }
}
