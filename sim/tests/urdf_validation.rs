//! A URDF's numbers are checked when the arm loads: a NaN, an infinity, an
//! inverted joint range, a zero joint axis, a negative mass or inertia is
//! refused with the joint or link, the attribute, the value and the
//! accepted range, and never reaches rapier (where a NaN panics). The
//! robot config beside a URDF (actuator gains, home pose, gripper) is
//! checked the same way. Each URDF is a small two-joint arm written by the
//! test, one value changed at a time.

use cerebellum_core::{Action, ResetRequest, Robot};
use cerebellum_sim::*;
use std::path::{Path, PathBuf};

/// A two-joint arm: `base` → `pan` (revolute about z) → `upper` → `lift`
/// (revolute about y) → `tip`. Every number the tests change is a
/// `{placeholder}`.
const ARM: &str = r#"<?xml version="1.0"?>
<robot name="tiny">
  <link name="base">
    <inertial>
      <origin xyz="0 0 0.05" rpy="0 0 0"/>
      <mass value="2"/>
      <inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/>
    </inertial>
    <collision>
      <origin xyz="0 0 0.05" rpy="0 0 0"/>
      <geometry><box size="{base.size}"/></geometry>
    </collision>
  </link>
  <joint name="pan" type="revolute">
    <parent link="base"/>
    <child link="upper"/>
    <origin xyz="{pan.xyz}" rpy="{pan.rpy}"/>
    <axis xyz="{pan.axis}"/>
    <limit lower="{pan.lower}" upper="{pan.upper}" effort="{pan.effort}" velocity="{pan.velocity}"/>
  </joint>
  <link name="upper">
    <inertial>
      <origin xyz="{upper.com}" rpy="0 0 0"/>
      <mass value="{upper.mass}"/>
      <inertia ixx="{upper.ixx}" ixy="{upper.ixy}" ixz="0" iyy="0.002" iyz="0" izz="0.002"/>
    </inertial>
    <visual>
      <origin xyz="0 0 0.1" rpy="{upper.visual_rpy}"/>
      <geometry><cylinder radius="{upper.radius}" length="0.2"/></geometry>
    </visual>
    <collision>
      <origin xyz="0 0 0.1" rpy="0 0 0"/>
      <geometry><box size="0.04 0.04 0.2"/></geometry>
    </collision>
  </link>
  <joint name="lift" type="revolute">
    <parent link="upper"/>
    <child link="tip"/>
    <origin xyz="0 0 0.2" rpy="0 0 0"/>
    <axis xyz="0 1 0"/>
    <limit lower="-1.2" upper="1.2" effort="3" velocity="3"/>
  </joint>
  <link name="tip">
    <inertial>
      <origin xyz="0 0 0.05" rpy="0 0 0"/>
      <mass value="0.2"/>
      <inertia ixx="0.0002" ixy="0" ixz="0" iyy="0.0002" iyz="0" izz="0.0001"/>
    </inertial>
    <collision>
      <origin xyz="0 0 0.05" rpy="0 0 0"/>
      <geometry><box size="0.03 0.03 0.1"/></geometry>
    </collision>
  </link>
</robot>
"#;

const DEFAULTS: &[(&str, &str)] = &[
    ("base.size", "0.1 0.1 0.1"),
    ("pan.xyz", "0 0 0.1"),
    ("pan.rpy", "0 0 0"),
    ("pan.axis", "0 0 1"),
    ("pan.lower", "-1.5"),
    ("pan.upper", "1.5"),
    ("pan.effort", "5"),
    ("pan.velocity", "3"),
    ("upper.com", "0 0 0.1"),
    ("upper.mass", "0.5"),
    ("upper.ixx", "0.002"),
    ("upper.ixy", "0"),
    ("upper.visual_rpy", "0 0 0"),
    ("upper.radius", "0.02"),
];

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-urdf-validation-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The arm's URDF with `changes` in place of the defaults, written into
/// `dir` as `tiny.urdf` (and `config`, when given, as `tiny.toml` beside
/// it).
fn write_arm(dir: &Path, changes: &[(&str, &str)], config: Option<&str>) -> PathBuf {
    let mut text = ARM.to_owned();
    for (key, default) in DEFAULTS {
        let value = changes
            .iter()
            .find(|(k, _)| k == key)
            .map_or(*default, |(_, v)| *v);
        text = text.replace(&format!("{{{key}}}"), value);
    }
    for (key, _) in changes {
        assert!(
            DEFAULTS.iter().any(|(k, _)| k == key),
            "no placeholder {key}"
        );
    }
    let urdf = dir.join("tiny.urdf");
    std::fs::write(&urdf, text).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.join("tiny.toml"), config).unwrap();
    }
    urdf
}

fn load(urdf: &Path) -> Result<std::sync::Arc<ArmModel>, String> {
    ArmModel::load(urdf, &ArmOptions::default()).map_err(|e| e.to_string())
}

/// Builds the lift task on the arm and steps it once (the lift task needs
/// no reach target, which a tiny arm may not be able to reach).
fn step_once(model: std::sync::Arc<ArmModel>) {
    let config = EnvConfig {
        task: TaskKind::Lift,
        ..EnvConfig::default()
    };
    let mut env = SimEnv::new(config, Some(model)).unwrap();
    env.reset(&ResetRequest { seed: 0 }).unwrap();
    let command = Action::new(vec![0.0; env.spec().action.len()]);
    let outcome = env.apply(&command).unwrap();
    assert!(!outcome.rewards.0.is_empty());
}

#[test]
fn the_test_arm_loads_and_steps() {
    let dir = dir("valid");
    let model = load(&write_arm(&dir, &[], None)).unwrap();
    assert_eq!(model.joint_names(), ["pan", "lift"]);
    step_once(model);
}

#[test]
fn an_arm_that_cannot_reach_above_the_table_is_refused_by_the_reach_task_not_a_panic() {
    let dir = dir("cannot-reach");
    let model = load(&write_arm(&dir, &[], None)).unwrap();
    let config = EnvConfig {
        task: TaskKind::Reach,
        ..EnvConfig::default()
    };
    match SimEnv::new(config, Some(model)) {
        Ok(mut env) => {
            // It found a target for the first start: later ones are
            // errors too if there is none, never a panic.
            for seed in 0..5 {
                let _ = env.reset(&ResetRequest { seed });
            }
        }
        Err(e) => assert!(e.contains("cannot do the reach task"), "{e}"),
    }
}

/// Placeholder values that differ from [`DEFAULTS`].
type Changes<'a> = &'a [(&'a str, &'a str)];

/// Each case: the values changed, and what the refusal must say (all of
/// it, in any order).
#[test]
fn bad_numbers_are_refused_naming_the_element_the_attribute_and_the_value() {
    let cases: &[(Changes, &[&str])] = &[
        // Joint limits.
        (
            &[("pan.lower", "1.5"), ("pan.upper", "-1.5")],
            &["joint `pan`", "lower", "1.5", "upper", "-1.5"],
        ),
        (&[("pan.lower", "NaN")], &["joint `pan`", "lower", "NaN"]),
        (&[("pan.upper", "nan")], &["joint `pan`", "upper", "NaN"]),
        (&[("pan.upper", "inf")], &["joint `pan`", "upper", "inf"]),
        (
            &[("pan.lower", "-1e300")],
            &["joint `pan`", "lower", "-1e300"],
        ),
        (&[("pan.effort", "-5")], &["joint `pan`", "effort", "-5"]),
        (&[("pan.effort", "NaN")], &["joint `pan`", "effort", "NaN"]),
        (
            &[("pan.velocity", "NaN")],
            &["joint `pan`", "velocity", "NaN"],
        ),
        // The joint frame.
        (&[("pan.axis", "0 0 0")], &["joint `pan`", "axis", "zero"]),
        (&[("pan.axis", "0 NaN 1")], &["joint `pan`", "axis", "NaN"]),
        (
            &[("pan.xyz", "0 NaN 0.1")],
            &["joint `pan`", "origin", "NaN"],
        ),
        (
            &[("pan.xyz", "0 0 1e300")],
            &["joint `pan`", "origin", "1e300"],
        ),
        (&[("pan.rpy", "inf 0 0")], &["joint `pan`", "rpy", "inf"]),
        // Mass and inertia.
        (&[("upper.mass", "-1")], &["link `upper`", "mass", "-1"]),
        (&[("upper.mass", "NaN")], &["link `upper`", "mass", "NaN"]),
        (
            &[("upper.mass", "1e300")],
            &["link `upper`", "mass", "1e300"],
        ),
        (
            &[("upper.ixx", "-0.002")],
            &["link `upper`", "ixx", "-0.002"],
        ),
        (&[("upper.ixx", "NaN")], &["link `upper`", "ixx", "NaN"]),
        // Off-diagonal terms that leave the tensor with a negative
        // principal moment.
        (
            &[("upper.ixy", "0.01")],
            &["link `upper`", "inertia", "principal"],
        ),
        (
            &[("upper.com", "NaN 0 0.1")],
            &["link `upper`", "<inertial>", "NaN"],
        ),
        // Geometry.
        (
            &[("upper.visual_rpy", "0 NaN 0")],
            &["link `upper`", "<visual>", "NaN"],
        ),
        (
            &[("upper.radius", "-0.02")],
            &["link `upper`", "radius", "-0.02"],
        ),
        (
            &[("base.size", "0.1 NaN 0.1")],
            &["link `base`", "<collision>", "size", "NaN"],
        ),
    ];
    let dir = dir("bad-numbers");
    for (changes, wanted) in cases {
        let urdf = write_arm(&dir, changes, None);
        let error = match load(&urdf) {
            Ok(_) => panic!("{changes:?} loaded"),
            Err(error) => error,
        };
        assert!(
            error.contains(&urdf.display().to_string()),
            "{changes:?}: {error}"
        );
        for word in *wanted {
            assert!(
                error.contains(word),
                "{changes:?}: `{word}` not in: {error}"
            );
        }
    }
}

/// A joint with no range (lower = upper, as a URDF without a `<limit>`
/// gives) is taken as unlimited, as before; only an inverted range is an
/// error.
#[test]
fn an_empty_joint_range_is_unlimited_and_loads() {
    let dir = dir("empty-range");
    let urdf = write_arm(&dir, &[("pan.lower", "0"), ("pan.upper", "0")], None);
    let model = load(&urdf).unwrap();
    assert!(model.joints[0].lower < -6.0 && model.joints[0].upper > 6.0);
}

#[test]
fn a_robot_config_with_bad_numbers_is_refused_naming_the_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[actuators.pan]\nstiffness = nan\ndamping = 1.0\nmax_force = 1.0\n",
            &["actuators.pan.stiffness", "NaN"],
        ),
        (
            "[actuators.pan]\nstiffness = 10.0\ndamping = -1.0\nmax_force = 1.0\n",
            &["actuators.pan.damping", "-1"],
        ),
        (
            "[default_actuator]\nstiffness = 10.0\ndamping = 1.0\nmax_force = inf\n",
            &["default_actuator.max_force", "inf"],
        ),
        ("[home]\npan = nan\n", &["home.pan", "NaN"]),
        ("hull_tolerance = -0.1\n", &["hull_tolerance", "-0.1"]),
        (
            "[gripper]\njoint = \"lift\"\nopen = nan\nclosed = 0.0\n",
            &["gripper.open", "NaN"],
        ),
    ];
    let dir = dir("bad-config");
    for (config, wanted) in cases {
        let urdf = write_arm(&dir, &[], Some(config));
        let error = match load(&urdf) {
            Ok(_) => panic!("{config} loaded"),
            Err(error) => error,
        };
        assert!(error.contains("tiny.toml"), "{config}: {error}");
        for word in *wanted {
            assert!(error.contains(word), "{config}: `{word}` not in: {error}");
        }
    }
}

/// The bundled SO-101 and the test arm on disk pass the checks.
#[test]
fn the_bundled_arms_pass_the_checks() {
    load(&so101_urdf()).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arms/test_arm7/urdf");
    load(&fixtures.join("test_arm7.urdf")).unwrap();
    let options = ArmOptions {
        ee_link: Some("tool_frame".into()),
        ..ArmOptions::default()
    };
    ArmModel::load(&fixtures.join("test_arm7_no_config.urdf"), &options).unwrap();
}

/// A directory or a FIFO where the URDF or its robot config should be is
/// an error naming it, never a read that blocks.
#[test]
fn a_urdf_or_robot_config_that_is_not_a_file_is_refused_naming_it() {
    let dir = dir("not-files");
    let fifo = dir.join("fifo.urdf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let error = load(&fifo).unwrap_err();
    assert!(
        error.contains(&fifo.display().to_string()) && error.contains("not a regular file"),
        "{error}"
    );
    let error = load(&dir).unwrap_err();
    assert!(
        error.contains(&dir.display().to_string()) && error.contains("is a directory"),
        "{error}"
    );
    let urdf = write_arm(&dir, &[], None);
    let options = ArmOptions {
        config: Some(fifo.clone()),
        ..ArmOptions::default()
    };
    let error = ArmModel::load(&urdf, &options).unwrap_err().to_string();
    assert!(
        error.contains(&fifo.display().to_string()) && error.contains("not a regular file"),
        "{error}"
    );
}
