//! Observation and action specs: named fields with units, limits and shapes.
//!
//! A spec is the contract between a robot, a policy and a checkpoint. Every
//! value that crosses a crate boundary is checked against one, and a failed
//! check names the field, the element and the value, so that a bad command or
//! a drifting sensor is found by reading one error line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The physical unit of a field. Units are part of the contract: a policy
/// trained on radians must never be fed degrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Radian,
    RadianPerSecond,
    Meter,
    MeterPerSecond,
    NewtonMeter,
    Newton,
    Second,
    /// A dimensionless quantity scaled to a documented range, such as a gripper
    /// opening in [0, 1] or the cosine of an angle.
    Normalized,
}

impl Unit {
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Radian => "rad",
            Unit::RadianPerSecond => "rad/s",
            Unit::Meter => "m",
            Unit::MeterPerSecond => "m/s",
            Unit::NewtonMeter => "N·m",
            Unit::Newton => "N",
            Unit::Second => "s",
            Unit::Normalized => "normalised",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One named vector-valued field, e.g. `joint_position` with one element per
/// joint. Limits are per element and inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub unit: Unit,
    /// Names of the elements (joint names, `x`/`y`/`z`, …); its length is the
    /// field's size.
    pub elements: Vec<String>,
    pub lower: Vec<f32>,
    pub upper: Vec<f32>,
}

impl FieldSpec {
    /// A field whose elements share a unit; `limits` gives (lower, upper) per element.
    pub fn new(name: &str, unit: Unit, elements: &[&str], limits: &[(f32, f32)]) -> Self {
        assert_eq!(
            elements.len(),
            limits.len(),
            "field `{name}`: one (lower, upper) pair per element"
        );
        Self {
            name: name.to_owned(),
            unit,
            elements: elements.iter().map(|e| (*e).to_owned()).collect(),
            lower: limits.iter().map(|l| l.0).collect(),
            upper: limits.iter().map(|l| l.1).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    fn check_values(&self, kind: &'static str, values: &[f32]) -> Result<(), SpecError> {
        for (i, &value) in values.iter().enumerate() {
            let element = || format!("{}[{}]", self.name, self.elements[i]);
            if !value.is_finite() {
                return Err(SpecError::NotFinite {
                    kind,
                    field: element(),
                    value,
                });
            }
            if value < self.lower[i] || value > self.upper[i] {
                return Err(SpecError::OutOfRange {
                    kind,
                    field: element(),
                    value,
                    lower: self.lower[i],
                    upper: self.upper[i],
                    unit: self.unit,
                });
            }
        }
        Ok(())
    }

    fn check_shape(&self) -> Result<(), SpecError> {
        if self.lower.len() != self.len() || self.upper.len() != self.len() {
            return Err(SpecError::Malformed(format!(
                "field `{}` has {} elements but {} lower and {} upper limits",
                self.name,
                self.len(),
                self.lower.len(),
                self.upper.len()
            )));
        }
        for i in 0..self.len() {
            let (lo, hi) = (self.lower[i], self.upper[i]);
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(SpecError::Malformed(format!(
                    "field `{}[{}]` has limits [{lo}, {hi}]",
                    self.name, self.elements[i]
                )));
            }
        }
        Ok(())
    }
}

/// A camera stream: frames are H×W×C bytes, row-major, channels last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSpec {
    pub name: String,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

impl CameraSpec {
    pub fn frame_len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }
}

/// What a robot reports each tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationSpec {
    /// State fields, concatenated in this order into `Observation::state`.
    pub fields: Vec<FieldSpec>,
    pub cameras: Vec<CameraSpec>,
    /// Whether observations carry a text instruction.
    pub instruction: bool,
}

/// What a robot accepts each tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// Command fields, concatenated in this order into `Action::values`.
    pub fields: Vec<FieldSpec>,
}

/// Everything a controller must agree on with a robot before the first tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobotSpec {
    pub name: String,
    pub observation: ObservationSpec,
    pub action: ActionSpec,
    /// Ticks per second of the control loop; actions in a chunk are one tick apart.
    pub control_rate_hz: f64,
}

impl RobotSpec {
    /// Both specs are well formed (limits per element, lower ≤ upper) and
    /// the control rate is a positive number.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.observation.validate()?;
        self.action.validate()?;
        if !(self.control_rate_hz.is_finite() && self.control_rate_hz > 0.0) {
            return Err(SpecError::Malformed(format!(
                "robot `{}` has control rate {} Hz",
                self.name, self.control_rate_hz
            )));
        }
        Ok(())
    }

    pub fn control_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.control_rate_hz)
    }
}

fn total_len(fields: &[FieldSpec]) -> usize {
    fields.iter().map(FieldSpec::len).sum()
}

fn check_fields(kind: &'static str, fields: &[FieldSpec], values: &[f32]) -> Result<(), SpecError> {
    let expected = total_len(fields);
    if values.len() != expected {
        return Err(SpecError::WrongLength {
            kind,
            expected,
            actual: values.len(),
        });
    }
    let mut offset = 0;
    for field in fields {
        field.check_values(kind, &values[offset..offset + field.len()])?;
        offset += field.len();
    }
    Ok(())
}

fn field_slice<'a>(fields: &[FieldSpec], values: &'a [f32], name: &str) -> Option<&'a [f32]> {
    let mut offset = 0;
    for field in fields {
        if field.name == name {
            return values.get(offset..offset + field.len());
        }
        offset += field.len();
    }
    None
}

impl ObservationSpec {
    pub fn state_len(&self) -> usize {
        total_len(&self.fields)
    }

    /// The slice of `state` that holds the field called `name`.
    pub fn field<'a>(&self, state: &'a [f32], name: &str) -> Option<&'a [f32]> {
        field_slice(&self.fields, state, name)
    }

    /// Checks the spec itself is well formed (limits ordered, names unique).
    pub fn validate(&self) -> Result<(), SpecError> {
        self.fields.iter().try_for_each(FieldSpec::check_shape)?;
        unique_names(self.fields.iter().map(|f| f.name.as_str()))?;
        unique_names(self.cameras.iter().map(|c| c.name.as_str()))
    }

    pub fn check(&self, observation: &crate::Observation) -> Result<(), SpecError> {
        check_fields("observation", &self.fields, &observation.state)?;
        if observation.images.len() != self.cameras.len() {
            return Err(SpecError::Malformed(format!(
                "observation has {} camera images, spec has {} cameras",
                observation.images.len(),
                self.cameras.len()
            )));
        }
        for (image, camera) in observation.images.iter().zip(&self.cameras) {
            let shape_ok = image.camera == camera.name
                && image.height == camera.height
                && image.width == camera.width
                && image.channels == camera.channels
                && image.data.len() == camera.frame_len();
            if !shape_ok {
                return Err(SpecError::Malformed(format!(
                    "image from camera `{}` ({}x{}x{}, {} bytes) does not match camera `{}` ({}x{}x{})",
                    image.camera,
                    image.height,
                    image.width,
                    image.channels,
                    image.data.len(),
                    camera.name,
                    camera.height,
                    camera.width,
                    camera.channels
                )));
            }
        }
        if self.instruction && observation.instruction.is_none() {
            return Err(SpecError::Malformed(
                "the spec requires an instruction and the observation has none".into(),
            ));
        }
        Ok(())
    }
}

impl ActionSpec {
    pub fn len(&self) -> usize {
        total_len(&self.fields)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn field<'a>(&self, values: &'a [f32], name: &str) -> Option<&'a [f32]> {
        field_slice(&self.fields, values, name)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.fields.iter().try_for_each(FieldSpec::check_shape)?;
        unique_names(self.fields.iter().map(|f| f.name.as_str()))
    }

    pub fn check(&self, action: &crate::Action) -> Result<(), SpecError> {
        check_fields("action", &self.fields, &action.values)
    }

    pub fn check_chunk(&self, chunk: &crate::ActionChunk) -> Result<(), SpecError> {
        if chunk.actions.is_empty() {
            return Err(SpecError::Malformed("empty action chunk".into()));
        }
        chunk.actions.iter().try_for_each(|a| self.check(a))
    }

    /// Lower and upper limits of every element, in `Action::values` order.
    pub fn limits(&self) -> (Vec<f32>, Vec<f32>) {
        let lower = self.fields.iter().flat_map(|f| f.lower.iter().copied());
        let upper = self.fields.iter().flat_map(|f| f.upper.iter().copied());
        (lower.collect(), upper.collect())
    }
}

fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), SpecError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(SpecError::Malformed(format!("name `{name}` appears twice")));
        }
    }
    Ok(())
}

/// Why a value or a spec was refused. Every variant names what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("{kind} field `{field}` is {value}, not a finite number")]
    NotFinite {
        kind: &'static str,
        field: String,
        value: f32,
    },
    #[error("{kind} field `{field}` = {value} {unit} is outside [{lower}, {upper}] {unit}")]
    OutOfRange {
        kind: &'static str,
        field: String,
        value: f32,
        lower: f32,
        upper: f32,
        unit: Unit,
    },
    #[error("{kind} has {actual} values, the spec has {expected}")]
    WrongLength {
        kind: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{0}")]
    Malformed(String),
}
