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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct ObservationSpec {
    /// State fields, concatenated in this order into `Observation::state`.
    pub fields: Vec<FieldSpec>,
    pub cameras: Vec<CameraSpec>,
    /// Whether observations carry a text instruction.
    pub instruction: bool,
}

/// What a robot accepts each tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Command fields, concatenated in this order into `Action::values`.
    pub fields: Vec<FieldSpec>,
}

/// Everything a controller must agree on with a robot before the first tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Relative tolerance within which two control rates are the same rate.
///
/// This is the only tolerance in spec compatibility
/// ([`RobotSpec::check_compatible`]); every other value compares exactly.
/// Rates are written by hand in specs (`50.0`), derived from a time step
/// (`1 / (dt · substeps)`, with `dt` often an `f32`), and travel as `f32` on
/// the wire (`Meta.control_rate_hz`), so an exact `f64` comparison would
/// refuse 50 Hz against 50.00000111758712 Hz (`1 / (4 · 0.005f32)`). One
/// part per million is far below any meaningful rate difference (0.05 mHz
/// at 50 Hz, a drift of one tick in 5.5 hours) and far above `f32` rounding
/// (6e-8 relative).
pub const RATE_TOLERANCE: f64 = 1e-6;

/// Whether two control rates (Hz) are the same rate: `|a − b| ≤`
/// [`RATE_TOLERANCE`]` · max(|a|, |b|)`. Non-finite rates match nothing.
/// Every comparison of control rates goes through this function.
pub fn rates_match(a: f64, b: f64) -> bool {
    a.is_finite() && b.is_finite() && (a - b).abs() <= RATE_TOLERANCE * a.abs().max(b.abs())
}

/// The first way a robot's spec differs from the spec a policy, checkpoint
/// or reward model expects, in words: `what` differs, what was expected,
/// and what the robot has. Displayed as
/// "`what`: expected `expected`, the robot has `found`", e.g.
/// "observation field `joint_position[elbow]` upper limit: expected 1.5 rad,
/// the robot has 1.6 rad".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: expected {expected}, the robot has {found}")]
pub struct SpecMismatch {
    /// What differs: `robot name`, `control rate`, `observation fields`,
    /// `action field `joint_target` unit`, `observation field
    /// `target[x]` lower limit`, `cameras`, `camera `front` shape`,
    /// `observation instruction`, …
    pub what: String,
    pub expected: String,
    pub found: String,
}

fn mismatch(
    what: impl Into<String>,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Result<(), SpecMismatch> {
    Err(SpecMismatch {
        what: what.into(),
        expected: expected.into(),
        found: found.into(),
    })
}

/// `` `a`, `b` `` (or `none`), for naming lists in a mismatch.
fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl RobotSpec {
    /// The one rule that decides whether a robot (`found`) fits what a
    /// policy or checkpoint expects (`self`); every path that connects a
    /// policy to a robot (simulation, zenoh, checkpoints) calls it.
    ///
    /// The specs must be equal in every field, with one exception: control
    /// rates compare with [`rates_match`] (relative tolerance
    /// [`RATE_TOLERANCE`]). Names, units, element names, camera shapes and
    /// the instruction flag compare exactly, and so do limits: they are
    /// `f32`s that round-trip exactly through JSON (shortest representation
    /// out, correctly rounded parse in), so a saved spec reads back
    /// bit-identical and any difference is a real one (`0.0` and `-0.0`
    /// are equal; a NaN limit matches nothing). Unknown keys never reach
    /// this check: every spec type refuses them when deserialised.
    ///
    /// Checks run in this order and the first difference is returned:
    /// robot name, control rate, observation fields (names, then per
    /// field: elements, unit, limits per element), cameras (names, then
    /// shapes), observation instruction flag, action fields (as for
    /// observations).
    pub fn check_compatible(&self, found: &RobotSpec) -> Result<(), SpecMismatch> {
        // Destructured so that a field added to the spec cannot be
        // forgotten here.
        let RobotSpec {
            name,
            observation,
            action,
            control_rate_hz,
        } = self;
        if *name != found.name {
            return mismatch(
                "robot name",
                format!("`{name}`"),
                format!("`{}`", found.name),
            );
        }
        if !rates_match(*control_rate_hz, found.control_rate_hz) {
            return mismatch(
                "control rate",
                format!("{control_rate_hz} Hz"),
                format!("{} Hz", found.control_rate_hz),
            );
        }
        observation.check_compatible(&found.observation)?;
        action.check_compatible(&found.action)
    }
}

impl ObservationSpec {
    /// Whether a robot's observations (`found`) fit what a policy or a
    /// reward model expects (`self`): equal fields (names, elements, units,
    /// limits, exactly), cameras and instruction flag. The observation part
    /// of [`RobotSpec::check_compatible`], which documents the rule.
    pub fn check_compatible(&self, found: &ObservationSpec) -> Result<(), SpecMismatch> {
        let ObservationSpec {
            fields,
            cameras,
            instruction,
        } = self;
        fields_compatible("observation", fields, &found.fields)?;
        let camera_names = |c: &[CameraSpec]| name_list(c.iter().map(|c| c.name.as_str()));
        if cameras.len() != found.cameras.len()
            || cameras
                .iter()
                .zip(&found.cameras)
                .any(|(a, b)| a.name != b.name)
        {
            return mismatch(
                "cameras",
                camera_names(cameras),
                camera_names(&found.cameras),
            );
        }
        for (expected, robot) in cameras.iter().zip(&found.cameras) {
            let CameraSpec {
                name,
                height,
                width,
                channels,
            } = expected;
            if (*height, *width, *channels) != (robot.height, robot.width, robot.channels) {
                let shape = |h, w, c| format!("{h}×{w}×{c} (height×width×channels)");
                return mismatch(
                    format!("camera `{name}` shape"),
                    shape(height, width, channels),
                    shape(&robot.height, &robot.width, &robot.channels),
                );
            }
        }
        if *instruction != found.instruction {
            let says = |i: bool| {
                if i {
                    "an instruction with every observation"
                } else {
                    "no instruction"
                }
            };
            return mismatch(
                "observation instruction",
                says(*instruction),
                says(found.instruction),
            );
        }
        Ok(())
    }
}

impl ActionSpec {
    /// Whether a robot's commands (`found`) fit what a policy expects
    /// (`self`): equal fields, exactly. The action part of
    /// [`RobotSpec::check_compatible`], which documents the rule.
    pub fn check_compatible(&self, found: &ActionSpec) -> Result<(), SpecMismatch> {
        let ActionSpec { fields } = self;
        fields_compatible("action", fields, &found.fields)
    }
}

fn fields_compatible(
    kind: &str,
    expected: &[FieldSpec],
    found: &[FieldSpec],
) -> Result<(), SpecMismatch> {
    let names = |f: &[FieldSpec]| name_list(f.iter().map(|f| f.name.as_str()));
    if expected.len() != found.len() || expected.iter().zip(found).any(|(a, b)| a.name != b.name) {
        return mismatch(format!("{kind} fields"), names(expected), names(found));
    }
    for (field, robot) in expected.iter().zip(found) {
        let FieldSpec {
            name,
            unit,
            elements,
            lower,
            upper,
        } = field;
        if *elements != robot.elements {
            let list = |e: &[String]| name_list(e.iter().map(String::as_str));
            return mismatch(
                format!("{kind} field `{name}` elements"),
                list(elements),
                list(&robot.elements),
            );
        }
        if *unit != robot.unit {
            return mismatch(
                format!("{kind} field `{name}` unit"),
                format!("{unit} ({unit:?})"),
                format!("{} ({:?})", robot.unit, robot.unit),
            );
        }
        for (side, ours, theirs) in [
            ("lower", lower, &robot.lower),
            ("upper", upper, &robot.upper),
        ] {
            if ours.len() != theirs.len() {
                return mismatch(
                    format!("{kind} field `{name}` {side} limits"),
                    format!("{} values", ours.len()),
                    format!("{} values", theirs.len()),
                );
            }
            for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
                // Exact: limits round-trip through JSON bit for bit.
                if a != b {
                    let element = elements.get(i).map_or_else(|| i.to_string(), Clone::clone);
                    return mismatch(
                        format!("{kind} field `{name}[{element}]` {side} limit"),
                        format!("{a} {unit}"),
                        format!("{b} {unit}"),
                    );
                }
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod compatibility_tests {
    use super::*;

    fn spec() -> RobotSpec {
        RobotSpec {
            name: "so101".into(),
            observation: ObservationSpec {
                fields: vec![
                    FieldSpec::new(
                        "joint_position",
                        Unit::Radian,
                        &["pan", "elbow"],
                        &[(-1.0, 1.0), (-2.0, 2.0)],
                    ),
                    FieldSpec::new("target", Unit::Meter, &["x", "y"], &[(-0.5, 0.5); 2]),
                ],
                cameras: vec![CameraSpec {
                    name: "front".into(),
                    height: 4,
                    width: 6,
                    channels: 3,
                }],
                instruction: false,
            },
            action: ActionSpec {
                fields: vec![FieldSpec::new(
                    "joint_target",
                    Unit::Radian,
                    &["pan", "elbow"],
                    &[(-1.0, 1.0), (-2.0, 2.0)],
                )],
            },
            control_rate_hz: 50.0,
        }
    }

    /// `edit` applied to the robot's copy is refused, naming `needle`.
    fn refused(edit: impl FnOnce(&mut RobotSpec), needle: &str) -> SpecMismatch {
        let mut robot = spec();
        edit(&mut robot);
        let error = spec().check_compatible(&robot).expect_err(needle);
        let text = error.to_string();
        assert!(text.contains(needle), "`{text}` should name `{needle}`");
        error
    }

    #[test]
    fn equal_specs_are_compatible() {
        assert_eq!(spec().check_compatible(&spec()), Ok(()));
        let json = serde_json::to_string(&spec()).unwrap();
        let back: RobotSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(spec().check_compatible(&back), Ok(()));
    }

    #[test]
    fn every_field_is_compared() {
        let e = refused(|s| s.name = "arm2".into(), "robot name");
        assert_eq!(e.expected, "`so101`");
        assert_eq!(e.found, "`arm2`");
        refused(
            |s| s.control_rate_hz = 30.0,
            "control rate: expected 50 Hz, the robot has 30 Hz",
        );
        refused(
            |s| s.observation.fields[1].name = "goal".into(),
            "observation fields: expected `joint_position`, `target`, the robot has `joint_position`, `goal`",
        );
        refused(|s| drop(s.observation.fields.pop()), "observation fields");
        refused(
            |s| s.observation.fields[0].elements[1] = "wrist".into(),
            "observation field `joint_position` elements",
        );
        refused(
            |s| s.observation.fields[1].unit = Unit::Radian,
            "observation field `target` unit",
        );
        let e = refused(
            |s| s.observation.fields[0].upper[1] = 2.5,
            "observation field `joint_position[elbow]` upper limit",
        );
        assert_eq!(
            (e.expected.as_str(), e.found.as_str()),
            ("2 rad", "2.5 rad")
        );
        refused(
            |s| s.observation.fields[1].lower[0] = -0.4,
            "observation field `target[x]` lower limit",
        );
        // The smallest possible change of a limit is a difference.
        refused(
            |s| s.observation.fields[1].lower[0] = f32::from_bits((-0.5f32).to_bits() - 1),
            "observation field `target[x]` lower limit",
        );
        refused(
            |s| s.observation.fields[1].upper.pop().map(drop).unwrap(),
            "upper limits",
        );
        refused(
            |s| s.observation.cameras[0].name = "wrist".into(),
            "cameras",
        );
        refused(
            |s| s.observation.cameras.clear(),
            "cameras: expected `front`, the robot has none",
        );
        refused(
            |s| s.observation.cameras[0].width = 8,
            "camera `front` shape: expected 4×6×3",
        );
        refused(
            |s| s.observation.cameras[0].channels = 1,
            "camera `front` shape",
        );
        refused(
            |s| s.observation.instruction = true,
            "observation instruction",
        );
        refused(
            |s| s.action.fields[0].name = "joint_velocity".into(),
            "action fields",
        );
        refused(
            |s| s.action.fields[0].elements.swap(0, 1),
            "action field `joint_target` elements",
        );
        refused(
            |s| s.action.fields[0].unit = Unit::RadianPerSecond,
            "action field `joint_target` unit",
        );
        refused(
            |s| s.action.fields[0].lower[0] = -0.9,
            "action field `joint_target[pan]` lower limit",
        );
        refused(
            |s| s.action.fields[0].upper[1] = 1.0,
            "action field `joint_target[elbow]` upper limit",
        );
    }

    #[test]
    fn rates_compare_within_the_tolerance_only() {
        let mut robot = spec();
        // 1 / (4 · 0.005f32), the rate an f32 time step gives.
        robot.control_rate_hz = 1.0 / (4.0 * f64::from(0.005f32));
        assert_ne!(robot.control_rate_hz, 50.0);
        assert_eq!(spec().check_compatible(&robot), Ok(()));
        robot.control_rate_hz = f64::from(50.0f32);
        assert_eq!(spec().check_compatible(&robot), Ok(()));
        for off in [
            50.0 * (1.0 + 2.0 * RATE_TOLERANCE),
            50.001,
            49.9,
            f64::NAN,
            f64::INFINITY,
        ] {
            robot.control_rate_hz = off;
            assert!(
                spec().check_compatible(&robot).is_err(),
                "{off} Hz accepted"
            );
        }
        assert!(rates_match(20.0, 1.0 / 0.05));
        assert!(!rates_match(f64::NAN, f64::NAN));
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        let json = serde_json::to_value(spec()).unwrap();
        let paths: [&[&str]; 5] = [
            &[],
            &["observation"],
            &["action"],
            &["observation", "fields", "0"],
            &["observation", "cameras", "0"],
        ];
        for path in paths {
            let mut edited = json.clone();
            let mut at = &mut edited;
            for key in path {
                at = match key.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*key],
                };
            }
            at.as_object_mut()
                .unwrap()
                .insert("gain".into(), 1.0.into());
            let error = serde_json::from_value::<RobotSpec>(edited).unwrap_err();
            assert!(
                error.to_string().contains("unknown field `gain`"),
                "{path:?}: {error}"
            );
        }
    }
}
