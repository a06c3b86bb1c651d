//! Which observation fields a reward model reads. A learned reward can
//! only be gamed through what it reads: a reach progress model that sees
//! joint velocities and absolute positions can be paid for moving the way
//! demonstrations happen to move; one that reads only where the gripper is
//! relative to the target can be paid only for getting there. Choosing the
//! fields is the operator's prior, written into the model's contract.

use crate::contract::ModelError;
use cerebellum_core::ObservationSpec;

/// The values of a model's input frame (the observation's state, then any
/// pooled image values) that the model reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelection {
    /// Field names as the contract stores them; empty: every value.
    names: Vec<String>,
    /// Positions in the input frame, in order; `None`: every value.
    indices: Option<Vec<usize>>,
}

impl FieldSelection {
    /// Every value of the frame.
    pub fn all() -> Self {
        Self::default()
    }

    /// The named fields of `spec`, in the spec's order, followed by the
    /// `extra` values a model appends after the state (pooled image cells),
    /// which are always read. Empty `names` selects everything.
    pub fn new(spec: &ObservationSpec, names: &[String], extra: usize) -> Result<Self, ModelError> {
        if names.is_empty() {
            return Ok(Self::all());
        }
        let known: Vec<&str> = spec.fields.iter().map(|f| f.name.as_str()).collect();
        for name in names {
            if !known.contains(&name.as_str()) {
                return Err(ModelError::UnknownField {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
        let mut indices = Vec::new();
        let mut offset = 0;
        for field in &spec.fields {
            if names.contains(&field.name) {
                indices.extend(offset..offset + field.len());
            }
            offset += field.len();
        }
        indices.extend(offset..offset + extra);
        let names = spec
            .fields
            .iter()
            .filter(|f| names.contains(&f.name))
            .map(|f| f.name.clone())
            .collect();
        Ok(Self {
            names,
            indices: Some(indices),
        })
    }

    /// The selected field names (empty: all of them).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many values of a `frame_len`-long frame are read.
    pub fn len(&self, frame_len: usize) -> usize {
        self.indices.as_ref().map_or(frame_len, Vec::len)
    }

    /// The read values of `frame`, in order, without copying it; a frame
    /// too short for the selection gives NaN where values are missing
    /// (reported missing, never guessed).
    pub fn values<'a>(&'a self, frame: &'a [f32]) -> impl Iterator<Item = f32> + 'a {
        let (whole, picked) = match &self.indices {
            None => (Some(frame.iter().copied()), None),
            Some(indices) => (
                None,
                Some(
                    indices
                        .iter()
                        .map(|&i| frame.get(i).copied().unwrap_or(f32::NAN)),
                ),
            ),
        };
        whole
            .into_iter()
            .flatten()
            .chain(picked.into_iter().flatten())
    }

    /// `values` collected (for training sets, which keep the selection).
    pub fn select(&self, frame: &[f32]) -> Vec<f32> {
        self.values(frame).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cerebellum_core::{FieldSpec, Unit};

    fn spec() -> ObservationSpec {
        ObservationSpec {
            fields: vec![
                FieldSpec::new("a", Unit::Normalized, &["x", "y"], &[(-1.0, 1.0); 2]),
                FieldSpec::new("b", Unit::Normalized, &["x"], &[(-1.0, 1.0)]),
                FieldSpec::new("c", Unit::Normalized, &["x", "y"], &[(-1.0, 1.0); 2]),
            ],
            cameras: vec![],
            instruction: false,
        }
    }

    #[test]
    fn named_fields_are_read_in_the_spec_order_then_the_extra_values() {
        let frame = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let names = ["c".to_owned(), "a".to_owned()];
        let selection = FieldSelection::new(&spec(), &names, 2).unwrap();
        assert_eq!(selection.select(&frame), vec![0.0, 1.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(selection.len(7), 6);
        assert_eq!(selection.names(), ["a", "c"]);
        let all = FieldSelection::new(&spec(), &[], 2).unwrap();
        assert_eq!(all.select(&frame), frame.to_vec());
        assert_eq!(all.len(7), 7);
        let short = FieldSelection::new(&spec(), &["c".to_owned()], 0).unwrap();
        assert!(short.select(&[0.0; 4])[1].is_nan());
    }

    #[test]
    fn an_unknown_field_is_refused_naming_the_known_ones() {
        let error = FieldSelection::new(&spec(), &["d".to_owned()], 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`d`") && error.contains("a, b, c"),
            "{error}"
        );
    }
}
