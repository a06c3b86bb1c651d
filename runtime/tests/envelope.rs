//! Safety envelope tests: each stage with hand numbers, then a property test
//! of what every returned command satisfies on random specs, configs and
//! inputs (`PROPTEST_CASES` sets its case count, 100 000 by default).

use cerebellum_core::{
    Action, ActionSpec, FieldSpec, ObservationSpec, ResetRequest, Robot, RobotSpec, Unit,
};
use cerebellum_runtime::envelope::{
    Activations, ArmKinematics, EnvelopeConfig, EnvelopeError, ForwardKinematics, Measured,
    SafetyEnvelope, WorkspaceBox,
};
use proptest::prelude::*;
use std::sync::Arc;

/// A hand-built arm whose action is joint position targets: the observation
/// carries `joint_velocity` first, so `joint_position` is not at offset 0.
fn arm_spec(limits: &[(f32, f32)], control_rate_hz: f64) -> RobotSpec {
    let names: Vec<String> = (0..limits.len()).map(|i| format!("j{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let padded: Vec<(f32, f32)> = limits.iter().map(|(lo, hi)| (lo - 1.0, hi + 1.0)).collect();
    RobotSpec {
        name: "test-arm".into(),
        observation: ObservationSpec {
            fields: vec![
                FieldSpec::new(
                    "joint_velocity",
                    Unit::RadianPerSecond,
                    &names,
                    &vec![(-10.0, 10.0); names.len()],
                ),
                FieldSpec::new("joint_position", Unit::Radian, &names, &padded),
            ],
            cameras: Vec::new(),
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new("joint_target", Unit::Radian, &names, limits)],
        },
        control_rate_hz,
    }
}

/// Like the pendulum: the action is a torque, with no joint positions.
fn torque_spec(limits: &[(f32, f32)], control_rate_hz: f64) -> RobotSpec {
    let names: Vec<String> = (0..limits.len()).map(|i| format!("tau{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    RobotSpec {
        name: "test-torque".into(),
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "angle",
                Unit::Normalized,
                &["cos", "sin"],
                &[(-1.0, 1.0); 2],
            )],
            cameras: Vec::new(),
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new("torque", Unit::NewtonMeter, &names, limits)],
        },
        control_rate_hz,
    }
}

/// Three joints at 8 Hz, so that a period is 0.125 s exactly.
const LIMITS: [(f32, f32); 3] = [(-1.0, 1.0), (-2.0, 2.0), (0.0, 0.5)];

fn spec3() -> RobotSpec {
    arm_spec(&LIMITS, 8.0)
}

fn envelope(config: EnvelopeConfig) -> SafetyEnvelope {
    SafetyEnvelope::new(&spec3(), config, None).unwrap()
}

fn at(q: &[f32]) -> Measured<'_> {
    Measured {
        joint_positions: Some(q),
        observation_age_ticks: 0,
    }
}

fn stale(q: &[f32], age: u32) -> Measured<'_> {
    Measured {
        joint_positions: Some(q),
        observation_age_ticks: age,
    }
}

const UNMEASURED: Measured<'static> = Measured {
    joint_positions: None,
    observation_age_ticks: 0,
};

fn act(values: &[f32]) -> Action {
    Action::new(values.to_vec())
}

/// Runs one tick and returns the command's values and the activations.
fn tick(
    envelope: &mut SafetyEnvelope,
    proposed: Option<&[f32]>,
    measured: Measured,
) -> (Vec<f32>, Activations) {
    let proposed = proposed.map(act);
    let checked = envelope.check(proposed.as_ref(), measured);
    (checked.command.values, checked.activations)
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= tolerance,
            "{actual:?} is not within {tolerance} of {expected:?}"
        );
    }
}

/// End effector = the first three joint positions: boxes in joint space,
/// so bisection results have hand numbers.
struct Identity;

impl ForwardKinematics for Identity {
    fn end_effector(&self, q: &[f32]) -> [f32; 3] {
        [q[0], q[1], q[2]]
    }
}

fn identity() -> Option<Arc<dyn ForwardKinematics>> {
    Some(Arc::new(Identity))
}

fn flags(f: impl FnOnce(&mut Activations)) -> Activations {
    let mut a = Activations::default();
    f(&mut a);
    a
}

#[test]
fn joint_positions_are_read_only_when_the_action_targets_them() {
    let e = envelope(EnvelopeConfig::default());
    let state = [9.0, 9.0, 9.0, 0.1, 0.2, 0.3];
    assert_eq!(e.joint_positions(&state), Some(&state[3..6]));
    assert_eq!(e.joint_positions(&state[..4]), None, "short state");

    let torque = torque_spec(&[(-2.0, 2.0)], 20.0);
    let e = SafetyEnvelope::new(&torque, EnvelopeConfig::default(), None).unwrap();
    assert_eq!(e.joint_positions(&[1.0, 0.0]), None);

    let mut renamed = spec3();
    renamed.observation.fields[1].elements[2] = "wrist".into();
    let e = SafetyEnvelope::new(&renamed, EnvelopeConfig::default(), None).unwrap();
    assert_eq!(e.joint_positions(&state), None, "element names differ");

    let mut degrees = spec3();
    degrees.observation.fields[1].unit = Unit::Normalized;
    let e = SafetyEnvelope::new(&degrees, EnvelopeConfig::default(), None).unwrap();
    assert_eq!(e.joint_positions(&state), None, "units differ");
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let config: EnvelopeConfig = toml::from_str("max_step_per_tick = [0.1, 0.2, 0.05]").unwrap();
    assert_eq!(config.max_step_per_tick, vec![0.1, 0.2, 0.05]);
    assert_eq!(
        config.stale_hold_ticks,
        EnvelopeConfig::default().stale_hold_ticks
    );
    assert!(toml::from_str::<EnvelopeConfig>("max_step = [0.1]").is_err());
    envelope(config);
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let base = EnvelopeConfig::default;
    let unit_box = Some(WorkspaceBox {
        min: [-0.5, -1.0, 0.0],
        max: [0.5, 1.0, 0.5],
    });
    let cases: Vec<(&str, EnvelopeConfig, bool, &str)> = vec![
        (
            "step length",
            EnvelopeConfig {
                max_step_per_tick: vec![0.1, 0.1],
                ..base()
            },
            false,
            "envelope.max_step_per_tick: has 2 values, the action has 3",
        ),
        (
            "zero velocity",
            EnvelopeConfig {
                max_joint_velocity: vec![1.0, 0.0, 1.0],
                ..base()
            },
            false,
            "envelope.max_joint_velocity[joint_target.j1]: is 0",
        ),
        (
            "NaN step",
            EnvelopeConfig {
                max_step_per_tick: vec![0.1, 0.1, f32::NAN],
                ..base()
            },
            false,
            "envelope.max_step_per_tick[joint_target.j2]: is NaN",
        ),
        (
            "infinite velocity",
            EnvelopeConfig {
                max_joint_velocity: vec![f32::INFINITY, 1.0, 1.0],
                ..base()
            },
            false,
            "envelope.max_joint_velocity[joint_target.j0]: is inf",
        ),
        (
            "safe pose length",
            EnvelopeConfig {
                safe_pose: Some(vec![0.0, 0.0]),
                ..base()
            },
            false,
            "envelope.safe_pose: has 2 values",
        ),
        (
            "safe pose outside the limits",
            EnvelopeConfig {
                safe_pose: Some(vec![0.0, 3.0, 0.0]),
                ..base()
            },
            false,
            "envelope.safe_pose[joint_target.j1]: is 3, outside the action limits [-2, 2]",
        ),
        (
            "safe pose outside the box",
            EnvelopeConfig {
                safe_pose: Some(vec![0.9, 0.0, 0.25]),
                workspace: unit_box,
                ..base()
            },
            true,
            "envelope.safe_pose: puts the end effector at [0.9, 0.0, 0.25], outside",
        ),
        (
            "workspace without fk",
            EnvelopeConfig {
                workspace: unit_box,
                ..base()
            },
            false,
            "envelope.workspace: a workspace box needs forward kinematics",
        ),
        (
            "inverted box",
            EnvelopeConfig {
                workspace: Some(WorkspaceBox {
                    min: [0.5, 0.0, 0.0],
                    max: [-0.5, 1.0, 1.0],
                }),
                ..base()
            },
            true,
            "envelope.workspace.x: [0.5, -0.5] is not a finite, non-empty interval",
        ),
        (
            "empty box",
            EnvelopeConfig {
                workspace: Some(WorkspaceBox {
                    min: [0.0, 1.0, 0.0],
                    max: [1.0, 1.0, 1.0],
                }),
                ..base()
            },
            true,
            "envelope.workspace.y: [1, 1]",
        ),
        (
            "no stale hold",
            EnvelopeConfig {
                stale_hold_ticks: 0,
                ..base()
            },
            false,
            "envelope.stale_hold_ticks: is 0",
        ),
        (
            "safe pose before the hold",
            EnvelopeConfig {
                stale_hold_ticks: 5,
                stale_safe_pose_ticks: 4,
                ..base()
            },
            false,
            "envelope.stale_safe_pose_ticks: is 4, less than stale_hold_ticks = 5",
        ),
    ];
    for (what, config, with_fk, message) in cases {
        let fk = if with_fk { identity() } else { None };
        let error = SafetyEnvelope::new(&spec3(), config, fk).unwrap_err();
        assert!(
            error.to_string().starts_with(message),
            "{what}: `{error}` should start with `{message}`"
        );
    }

    let torque = torque_spec(&[(-2.0, 2.0)], 20.0);
    let velocity = EnvelopeConfig {
        max_joint_velocity: vec![1.0],
        ..base()
    };
    let error = SafetyEnvelope::new(&torque, velocity, None).unwrap_err();
    assert!(matches!(&error, EnvelopeError::Config { field, .. } if field == "max_joint_velocity"));
    let workspace = EnvelopeConfig {
        workspace: unit_box,
        ..base()
    };
    let error = SafetyEnvelope::new(&torque, workspace, identity()).unwrap_err();
    assert!(matches!(&error, EnvelopeError::Config { field, .. } if field == "workspace"));

    let unbounded = arm_spec(&[(-1.0, f32::INFINITY)], 8.0);
    let error = SafetyEnvelope::new(&unbounded, base(), None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("action `joint_target.j0` has limits [-1, inf]"),
        "{error}"
    );
    let mut stopped = spec3();
    stopped.control_rate_hz = 0.0;
    let error = SafetyEnvelope::new(&stopped, base(), None).unwrap_err();
    assert!(error.to_string().contains("control_rate_hz = 0"), "{error}");
}

#[test]
fn non_finite_commands_hold_the_measured_pose() {
    let mut e = envelope(EnvelopeConfig::default());
    let q = [0.5, -0.5, 0.25];
    for bad in [
        [f32::NAN, 0.0, 0.0],
        [0.0, f32::INFINITY, 0.0],
        [0.0, 0.0, f32::NEG_INFINITY],
    ] {
        let (command, activations) = tick(&mut e, Some(&bad), at(&q));
        assert_eq!(command, q);
        assert_eq!(activations, flags(|a| a.non_finite = true));
    }
    assert_eq!(e.counters().non_finite, 3);
    assert_eq!(e.counters().ticks, 3);
    assert_eq!(e.counters().clamps(), 3);
}

#[test]
fn wrong_length_commands_hold_and_count_as_non_finite() {
    let mut e = envelope(EnvelopeConfig::default());
    let q = [0.5, -0.5, 0.25];
    for bad in [&[0.0, 0.0][..], &[0.0, 0.0, 0.0, 0.0], &[]] {
        let (command, activations) = tick(&mut e, Some(bad), at(&q));
        assert_eq!(command, q);
        assert!(activations.non_finite);
    }
    assert_eq!(e.counters().non_finite, 3);
}

#[test]
fn a_missing_command_holds_without_a_flag() {
    let mut e = envelope(EnvelopeConfig::default());
    let q = [0.5, -0.5, 0.25];
    let (command, activations) = tick(&mut e, None, at(&q));
    assert_eq!(command, q);
    assert!(!activations.any());
    assert_eq!(e.counters().clamps(), 0);
}

#[test]
fn the_hold_pose_is_clamped_and_falls_back_to_the_previous_command_then_the_midpoint() {
    let mut e = envelope(EnvelopeConfig::default());
    let nan = [f32::NAN; 3];
    let (command, _) = tick(&mut e, Some(&nan), UNMEASURED);
    assert_eq!(command, [0.0, 0.0, 0.25], "midpoint of the limits");
    let (command, _) = tick(&mut e, Some(&[0.5, 0.5, 0.5]), UNMEASURED);
    assert_eq!(command, [0.5, 0.5, 0.5]);
    let (command, _) = tick(&mut e, Some(&nan), UNMEASURED);
    assert_eq!(command, [0.5, 0.5, 0.5], "previous command");
    // A servo overshooting its limit is held at the limit.
    let (command, _) = tick(&mut e, None, at(&[1.2, -2.5, 0.25]));
    assert_eq!(command, [1.0, -2.0, 0.25]);
    // Unusable measurements are ignored: the last good one is held.
    let (command, _) = tick(&mut e, None, at(&[f32::NAN, 0.0, 0.0]));
    assert_eq!(command, [1.0, -2.0, 0.25]);
    let (command, _) = tick(&mut e, None, at(&[0.0, 0.0]));
    assert_eq!(command, [1.0, -2.0, 0.25]);
}

#[test]
fn position_stage_clamps_to_the_action_limits() {
    let mut e = envelope(EnvelopeConfig::default());
    let q = [0.0, 0.0, 0.25];
    let (command, activations) = tick(&mut e, Some(&[2.0, -3.0, 0.25]), at(&q));
    assert_eq!(command, [1.0, -2.0, 0.25]);
    assert_eq!(activations, flags(|a| a.position = true));
    let (command, _) = tick(&mut e, Some(&[1e30, f32::MIN, f32::MAX]), at(&q));
    assert_eq!(command, [1.0, -2.0, 0.5]);
    let (command, activations) = tick(&mut e, Some(&[0.5, 1.5, 0.0]), at(&q));
    assert_eq!(command, [0.5, 1.5, 0.0]);
    assert!(!activations.any());
    assert_eq!(e.counters().position_clamps, 2);
}

#[test]
fn velocity_stage_bounds_the_lead_over_the_measured_pose() {
    // 2 rad/s at 8 Hz: 0.25 rad per tick.
    let mut e = envelope(EnvelopeConfig {
        max_joint_velocity: vec![2.0, 2.0, 2.0],
        ..EnvelopeConfig::default()
    });
    let (command, activations) = tick(&mut e, Some(&[1.0, -0.1, 0.0]), at(&[0.0, 0.0, 0.25]));
    assert_eq!(command, [0.25, -0.1, 0.0]);
    assert_eq!(activations, flags(|a| a.velocity = true));
    // Measured beyond the limit: the window is around the clamped pose.
    let (command, _) = tick(&mut e, Some(&[0.0, 0.0, 0.25]), at(&[1.5, 0.0, 0.25]));
    assert_eq!(command, [0.75, 0.0, 0.25]);
    // Nothing measured: no velocity stage.
    let mut e = envelope(EnvelopeConfig {
        max_joint_velocity: vec![2.0, 2.0, 2.0],
        ..EnvelopeConfig::default()
    });
    let (command, activations) = tick(&mut e, Some(&[1.0, 2.0, 0.0]), UNMEASURED);
    assert_eq!(command, [1.0, 2.0, 0.0]);
    assert!(!activations.any());
    assert_eq!(e.counters().velocity_clamps, 0);
}

fn rate_config() -> EnvelopeConfig {
    EnvelopeConfig {
        max_step_per_tick: vec![0.25, 0.5, 0.125],
        ..EnvelopeConfig::default()
    }
}

#[test]
fn rate_stage_bounds_the_change_from_the_previous_command() {
    let mut e = envelope(rate_config());
    let (command, activations) = tick(&mut e, Some(&[1.0, 2.0, 0.5]), UNMEASURED);
    assert_eq!(
        command,
        [1.0, 2.0, 0.5],
        "no previous command: no rate stage"
    );
    assert!(!activations.any());
    let (command, activations) = tick(&mut e, Some(&[-1.0, 1.75, 0.0]), UNMEASURED);
    assert_eq!(command, [0.75, 1.75, 0.375]);
    assert_eq!(activations, flags(|a| a.rate = true));
    assert_eq!(e.counters().rate_clamps, 1);
}

#[test]
fn a_hold_is_approached_at_the_rate_limit() {
    let mut e = envelope(rate_config());
    tick(&mut e, Some(&[0.0, 0.0, 0.0]), at(&[0.0, 0.0, 0.0]));
    let (command, activations) = tick(&mut e, Some(&[f32::NAN; 3]), at(&[1.0, 1.0, 0.5]));
    assert_eq!(command, [0.25, 0.5, 0.125]);
    assert_eq!(
        activations,
        flags(|a| {
            a.non_finite = true;
            a.rate = true;
        })
    );
    let (command, _) = tick(&mut e, None, at(&[1.0, 1.0, 0.5]));
    assert_eq!(command, [0.5, 1.0, 0.25]);
}

/// x ∈ [−0.5, 0.5], y ∈ [−1, 1], z ∈ [0, 0.5] in joint space.
fn workspace_config() -> EnvelopeConfig {
    EnvelopeConfig {
        workspace: Some(WorkspaceBox {
            min: [-0.5, -1.0, 0.0],
            max: [0.5, 1.0, 0.5],
        }),
        ..EnvelopeConfig::default()
    }
}

#[test]
fn workspace_stage_moves_the_command_back_to_the_box_edge() {
    let mut e = SafetyEnvelope::new(&spec3(), workspace_config(), identity()).unwrap();
    let q = [0.0, 0.0, 0.25];
    // From the hold pose (no previous command) toward x = 1: the edge x = 0.5.
    let (command, activations) = tick(&mut e, Some(&[1.0, 0.0, 0.25]), at(&q));
    assert_close(&command, &[0.5, 0.0, 0.25], 1e-5);
    assert!(command[0] <= 0.5);
    assert_eq!(activations, flags(|a| a.workspace = true));
    // From the previous command (0.5, 0, 0.25) toward (0, 2, 0.25): y
    // reaches 1 half way.
    let (command, _) = tick(&mut e, Some(&[0.0, 2.0, 0.25]), at(&q));
    assert_close(&command, &[0.25, 1.0, 0.25], 1e-5);
    assert!(command[1] <= 1.0);
    let (command, activations) = tick(&mut e, Some(&[-0.5, 1.0, 0.5]), at(&q));
    assert_eq!(command, [-0.5, 1.0, 0.5], "on the boundary is inside");
    assert!(!activations.any());
    assert_eq!(e.counters().workspace_clamps, 2);
}

#[test]
fn workspace_stage_holds_when_the_hold_pose_is_outside() {
    let mut e = SafetyEnvelope::new(&spec3(), workspace_config(), identity()).unwrap();
    let outside = [0.9, 0.0, 0.25];
    let (command, activations) = tick(&mut e, Some(&[0.8, 0.0, 0.25]), at(&outside));
    assert_eq!(command, outside);
    assert!(activations.workspace);
    // A command inside the box is left alone wherever the robot is.
    let (command, activations) = tick(&mut e, Some(&[0.0, 0.0, 0.25]), at(&outside));
    assert_eq!(command, [0.0, 0.0, 0.25]);
    assert!(!activations.any());
}

#[test]
fn workspace_stage_jumps_to_a_measured_pose_inside_when_nothing_in_reach_is() {
    let config = EnvelopeConfig {
        max_step_per_tick: vec![0.125; 3],
        ..workspace_config()
    };
    let mut e = SafetyEnvelope::new(&spec3(), config, identity()).unwrap();
    let (command, _) = tick(&mut e, None, at(&[0.9, 0.0, 0.25]));
    assert_eq!(command, [0.9, 0.0, 0.25]);
    // The robot is now back inside; the previous command and everything
    // within one step of it are outside.
    let (command, activations) = tick(&mut e, Some(&[0.9, 0.0, 0.25]), at(&[0.0, 0.0, 0.25]));
    assert_eq!(command, [0.0, 0.0, 0.25]);
    assert_eq!(activations, flags(|a| a.workspace = true));
    // Previous command inside: the segment from it stays within one step.
    let (command, _) = tick(&mut e, Some(&[0.9, 0.0, 0.25]), at(&[0.0, 0.0, 0.25]));
    assert_eq!(command, [0.125, 0.0, 0.25]);
}

#[test]
fn stale_observations_hold_then_approach_the_safe_pose_at_the_rate_limit() {
    let mut e = envelope(EnvelopeConfig {
        max_step_per_tick: vec![0.25; 3],
        stale_hold_ticks: 2,
        stale_safe_pose_ticks: 4,
        safe_pose: Some(vec![0.5, 0.0, 0.25]),
        ..EnvelopeConfig::default()
    });
    let q = [-0.5, 0.0, 0.25];
    let (command, _) = tick(&mut e, Some(&q), at(&q));
    assert_eq!(command, q);
    let (command, activations) = tick(&mut e, Some(&[0.0, 0.0, 0.25]), stale(&q, 1));
    assert_eq!(
        command,
        [-0.25, 0.0, 0.25],
        "age 1 < 2: the policy still drives"
    );
    assert_eq!(activations, flags(|a| a.rate = true));
    for age in 2..4 {
        let (command, activations) = tick(&mut e, Some(&[1.0, 1.0, 0.5]), stale(&q, age));
        assert_eq!(command, q, "age {age}: hold the last measured pose");
        assert_eq!(activations, flags(|a| a.stale_hold = true));
    }
    let mut path = Vec::new();
    for age in 4..10 {
        let (command, activations) = tick(&mut e, Some(&[1.0, 1.0, 0.5]), stale(&q, age));
        assert_eq!(activations, flags(|a| a.safe_pose = true));
        path.push(command[0]);
        assert_eq!(&command[1..], [0.0, 0.25]);
    }
    assert_eq!(path, [-0.25, 0.0, 0.25, 0.5, 0.5, 0.5]);
    let (command, activations) = tick(&mut e, Some(&[-1.0, 0.0, 0.25]), at(&[0.5, 0.0, 0.25]));
    assert_eq!(
        command,
        [0.25, 0.0, 0.25],
        "fresh again: the policy, rate limited"
    );
    assert_eq!(activations, flags(|a| a.rate = true));
    let c = e.counters();
    assert_eq!((c.stale_holds, c.safe_pose_ticks, c.rate_clamps), (2, 6, 2));
}

#[test]
fn the_safe_pose_without_limits_moves_a_tenth_of_the_range_per_second() {
    let mut e = envelope(EnvelopeConfig {
        stale_hold_ticks: 1,
        stale_safe_pose_ticks: 1,
        safe_pose: Some(vec![1.0, 2.0, 0.5]),
        ..EnvelopeConfig::default()
    });
    let q = [0.0, 0.0, 0.0];
    tick(&mut e, Some(&q), at(&q));
    let (command, _) = tick(&mut e, None, stale(&q, 1));
    // ranges 2, 4, 0.5 × 0.1 /s × 0.125 s
    assert_close(&command, &[0.025, 0.05, 0.00625], 1e-6);
}

#[test]
fn an_estop_during_motion_holds_the_latched_pose_until_cleared() {
    let mut e = envelope(rate_config());
    let mut q = [0.0, 0.0, 0.25];
    let mut last_measured = q;
    for _ in 0..3 {
        let target = [q[0] + 0.2, q[1] + 0.4, q[2]];
        let (command, _) = tick(&mut e, Some(&target), at(&q));
        assert_eq!(command, target);
        last_measured = q;
        q = target;
    }
    e.set_estop("operator pressed stop");
    // The robot is a tick behind its command: the latch holds where it was
    // measured, not where it was sent.
    let latched = last_measured;
    // The robot coasts on; the policy keeps asking for more.
    for i in 0..5 {
        let coasting = [q[0] + 0.05 * i as f32, q[1], q[2]];
        let proposals: [Option<&[f32]>; 3] = [Some(&[1.0, 2.0, 0.5]), Some(&[f32::NAN; 3]), None];
        let (command, activations) = tick(&mut e, proposals[i % 3], stale(&coasting, i as u32));
        assert_eq!(command, latched, "tick {i} under e-stop");
        assert_eq!(activations, flags(|a| a.estop = true));
    }
    e.set_estop("second press");
    assert_eq!(e.estop(), Some("operator pressed stop"));
    let (command, _) = tick(&mut e, Some(&[0.0; 3]), at(&[0.9, 0.0, 0.0]));
    assert_eq!(command, latched, "a second set moves nothing");
    assert_eq!(e.counters().estop_holds, 6);

    e.clear_estop();
    assert_eq!(e.estop(), None);
    let (command, activations) = tick(&mut e, Some(&[-1.0, 0.0, 0.25]), at(&latched));
    assert_eq!(command, [latched[0] - 0.25, latched[1] - 0.5, 0.25]);
    assert_eq!(activations, flags(|a| a.rate = true));
}

#[test]
fn an_estop_before_any_measurement_latches_the_first_measured_pose() {
    let mut e = envelope(EnvelopeConfig::default());
    e.set_estop("boot");
    let (command, _) = tick(&mut e, Some(&[1.0, 1.0, 0.5]), UNMEASURED);
    assert_eq!(command, [0.0, 0.0, 0.25], "nothing measured: the midpoint");
    let (command, _) = tick(&mut e, Some(&[1.0, 1.0, 0.5]), at(&[0.5, 0.5, 0.5]));
    assert_eq!(command, [0.5, 0.5, 0.5]);
    let (command, _) = tick(&mut e, Some(&[1.0, 1.0, 0.5]), at(&[0.75, 0.5, 0.5]));
    assert_eq!(command, [0.5, 0.5, 0.5], "latched, not following");
}

#[test]
fn begin_episode_forgets_the_previous_command_and_keeps_the_latch_and_counters() {
    let mut e = envelope(rate_config());
    tick(&mut e, Some(&[0.0, 0.0, 0.0]), at(&[0.0, 0.0, 0.0]));
    tick(&mut e, Some(&[1.0, 0.0, 0.0]), at(&[0.0, 0.0, 0.0]));
    assert_eq!(e.counters().rate_clamps, 1);
    e.begin_episode();
    let (command, activations) = tick(&mut e, Some(&[1.0, 2.0, 0.5]), UNMEASURED);
    assert_eq!(
        command,
        [1.0, 2.0, 0.5],
        "no previous command after a reset"
    );
    assert!(!activations.any());
    assert_eq!(e.counters().ticks, 3);
    assert_eq!(e.counters().rate_clamps, 1);

    e.set_estop("stop");
    tick(&mut e, None, at(&[0.5, 0.5, 0.5]));
    e.begin_episode();
    assert_eq!(e.estop(), Some("stop"));
    // The reset moved the robot: the latch holds where it is now.
    let (command, activations) = tick(&mut e, Some(&[1.0; 3]), at(&[-0.5, 0.0, 0.0]));
    assert_eq!(command, [-0.5, 0.0, 0.0]);
    assert!(activations.estop);
}

#[test]
fn a_torque_action_gets_only_the_finite_and_limit_stages() {
    let spec = torque_spec(&[(-2.0, 2.0)], 20.0);
    let mut e = SafetyEnvelope::new(&spec, EnvelopeConfig::default(), None).unwrap();
    // A measurement is meaningless for a torque and is ignored.
    let angle = [1.5_f32];
    let (command, activations) = tick(&mut e, Some(&[f32::NAN]), at(&angle));
    assert_eq!(command, [0.0], "zero torque");
    assert_eq!(activations, flags(|a| a.non_finite = true));
    let (command, activations) = tick(&mut e, Some(&[5.0]), at(&angle));
    assert_eq!(command, [2.0]);
    assert_eq!(activations, flags(|a| a.position = true));
    let (command, activations) = tick(&mut e, Some(&[-1.9]), at(&angle));
    assert_eq!(command, [-1.9], "no velocity or rate stage by default");
    assert!(!activations.any());
    let (command, _) = tick(&mut e, Some(&[f32::INFINITY]), at(&angle));
    assert_eq!(command, [-1.9], "the hold is the previous command");
}

#[test]
fn arm_kinematics_matches_the_simulated_so101() {
    use cerebellum_sim::{ArmEnv, ArmModel, ArmOptions, EnvConfig};
    let model = ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap();
    let mut env = ArmEnv::new(model.clone(), EnvConfig::default()).unwrap();
    let spec = env.spec().clone();
    let config = EnvelopeConfig {
        workspace: Some(WorkspaceBox {
            min: [-1.0, -1.0, -1.0],
            max: [1.0, 1.0, 1.0],
        }),
        ..EnvelopeConfig::default()
    };
    let fk: Arc<dyn ForwardKinematics> = Arc::new(ArmKinematics(model.clone()));
    let envelope = SafetyEnvelope::new(&spec, config, Some(fk.clone())).unwrap();

    env.reset(&ResetRequest { seed: 3 }).unwrap();
    // A pose away from home: a quarter of the way from home to each upper limit.
    let (lower, upper) = spec.action.limits();
    let pose: Vec<f32> = model
        .home
        .iter()
        .zip(lower.iter().zip(&upper))
        .map(|(h, (lo, hi))| (h + 0.25 * (hi - h)).clamp(*lo, *hi))
        .collect();
    for _ in 0..30 {
        env.apply(&Action::new(pose.clone())).unwrap();
    }
    let observation = env.observe().unwrap();
    let q = envelope
        .joint_positions(&observation.state)
        .expect("the SO-101's action is joint positions");
    assert!(
        q.iter().zip(&model.home).any(|(a, b)| (a - b).abs() > 0.05),
        "the arm moved away from home: {q:?}"
    );
    let reported = spec
        .observation
        .field(&observation.state, "ee_position")
        .unwrap();
    assert_close(&fk.end_effector(q), reported, 1e-5);
}

// ---------------------------------------------------------------------------
// Property test

/// Planar two-link arm on the first two joints (the second is 0 for a
/// one-joint robot), in the z = 0 plane.
struct TwoLink;

impl ForwardKinematics for TwoLink {
    fn end_effector(&self, q: &[f32]) -> [f32; 3] {
        let (a, b) = (q[0], q.get(1).copied().unwrap_or(0.0));
        [
            a.cos() + 0.8 * (a + b).cos(),
            a.sin() + 0.8 * (a + b).sin(),
            0.0,
        ]
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Nothing,
    SetEstop,
    ClearEstop,
    BeginEpisode,
}

#[derive(Clone, Debug)]
struct Tick {
    op: Op,
    proposed: Option<Vec<f32>>,
    measured: Option<Vec<f32>>,
    age: u32,
}

#[derive(Clone, Debug)]
struct Case {
    limits: Vec<(f32, f32)>,
    control_rate_hz: f64,
    torque: bool,
    config: EnvelopeConfig,
    ticks: Vec<Tick>,
}

fn wild() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        12 => -6.0_f32..6.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => prop::sample::select(vec![1e30, -1e30, f32::MAX, f32::MIN, 1e-40]),
    ]
}

fn values(
    n: usize,
    element: impl Strategy<Value = f32> + Clone,
) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        12 => prop::collection::vec(element.clone(), n),
        1 => prop::collection::vec(element, 0..=n + 1),
    ]
}

fn tick_strategy(n: usize, stale_span: u32) -> impl Strategy<Value = Tick> {
    let op = prop_oneof![
        20 => Just(Op::Nothing),
        2 => Just(Op::SetEstop),
        2 => Just(Op::ClearEstop),
        1 => Just(Op::BeginEpisode),
    ];
    let measured_element = prop_oneof![
        20 => -6.0_f32..6.0,
        1 => Just(f32::NAN),
    ];
    (
        op,
        prop::option::weighted(0.9, values(n, wild())),
        prop::option::weighted(0.8, values(n, measured_element)),
        prop_oneof![6 => Just(0u32), 2 => 0..4u32, 2 => 0..stale_span],
    )
        .prop_map(|(op, proposed, measured, age)| Tick {
            op,
            proposed,
            measured,
            age,
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (1usize..=7, any::<bool>(), 1u32..5, 0u32..12).prop_flat_map(
        |(n, torque, stale_hold, stale_extra)| {
            let limit = (
                -3.0_f32..3.0,
                prop_oneof![1 => Just(0.0_f32), 12 => 0.001_f32..5.0],
            )
                .prop_map(|(lo, width)| (lo, lo + width));
            let per_joint = |range: std::ops::Range<f32>| {
                prop::option::weighted(0.6, prop::collection::vec(range, n))
            };
            let workspace = (-2.0_f32..2.0, 0.05_f32..3.0, -2.0_f32..2.0, 0.05_f32..3.0).prop_map(
                |(x, w, y, h)| WorkspaceBox {
                    min: [x, y, -1.0],
                    max: [x + w, y + h, 1.0],
                },
            );
            (
                prop::collection::vec(limit, n),
                1.0_f64..1000.0,
                per_joint(0.01..20.0),
                per_joint(0.001..2.0),
                prop::option::weighted(0.5, workspace),
                prop::option::weighted(0.6, prop::collection::vec(0.0_f32..=1.0, n)),
                prop::collection::vec(tick_strategy(n, stale_hold + stale_extra + 4), 1..40),
            )
                .prop_map(
                    move |(limits, control_rate_hz, velocity, step, workspace, safe, ticks)| {
                        let workspace = workspace.filter(|_| !torque);
                        let safe_pose = safe.map(|fractions| {
                            (limits.iter().zip(fractions))
                                .map(|((lo, hi), f)| (lo + f * (hi - lo)).clamp(*lo, *hi))
                                .collect::<Vec<f32>>()
                        });
                        // The envelope refuses a safe pose outside the box.
                        let safe_pose = safe_pose.filter(|pose| {
                            workspace.is_none_or(|b| inside(&b, &TwoLink.end_effector(pose)))
                        });
                        let config = EnvelopeConfig {
                            max_joint_velocity: if torque {
                                Vec::new()
                            } else {
                                velocity.unwrap_or_default()
                            },
                            max_step_per_tick: step.unwrap_or_default(),
                            workspace,
                            stale_hold_ticks: stale_hold,
                            stale_safe_pose_ticks: stale_hold + stale_extra,
                            safe_pose,
                        };
                        Case {
                            limits,
                            control_rate_hz,
                            torque,
                            config,
                            ticks,
                        }
                    },
                )
        },
    )
}

fn inside(b: &WorkspaceBox, p: &[f32; 3]) -> bool {
    (0..3).all(|k| p[k] >= b.min[k] && p[k] <= b.max[k])
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Checks one case against the guarantees of the module documentation,
/// tracking independently what the envelope should know: the previous
/// command, the newest valid measured pose (clamped) of the episode, and
/// the latched pose.
fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let spec = if case.torque {
        torque_spec(&case.limits, case.control_rate_hz)
    } else {
        arm_spec(&case.limits, case.control_rate_hz)
    };
    let config = &case.config;
    let fk = config
        .workspace
        .map(|_| Arc::new(TwoLink) as Arc<dyn ForwardKinematics>);
    let mut envelope = SafetyEnvelope::new(&spec, config.clone(), fk)
        .map_err(|e| TestCaseError::fail(format!("valid config refused: {e}")))?;
    let n = case.limits.len();
    let (lower, upper) = spec.action.limits();
    let clamp =
        |q: &[f32]| -> Vec<f32> { (0..n).map(|i| q[i].max(lower[i]).min(upper[i])).collect() };
    let midpoint: Vec<f32> = (0..n).map(|i| 0.5 * lower[i] + 0.5 * upper[i]).collect();
    let step = (!config.max_step_per_tick.is_empty()).then_some(&config.max_step_per_tick);
    let within_box = |q: &[f32]| {
        config
            .workspace
            .is_none_or(|b| inside(&b, &TwoLink.end_effector(q)))
    };

    let mut previous: Option<Vec<f32>> = None;
    let mut measured: Option<Vec<f32>> = None;
    let mut estop = false;
    let mut latched: Option<Vec<f32>> = None;
    let mut counted = cerebellum_runtime::envelope::EnvelopeCounters::default();

    for (t, tick) in case.ticks.iter().enumerate() {
        match tick.op {
            Op::Nothing => {}
            Op::SetEstop => {
                if !estop {
                    latched = measured.clone();
                }
                estop = true;
                envelope.set_estop("test");
            }
            Op::ClearEstop => {
                estop = false;
                latched = None;
                envelope.clear_estop();
            }
            Op::BeginEpisode => {
                previous = None;
                measured = None;
                latched = None;
                envelope.begin_episode();
            }
        }
        if let Some(q) = &tick.measured
            && !case.torque
            && q.len() == n
            && q.iter().all(|v| v.is_finite())
        {
            measured = Some(clamp(q));
        }
        if estop && latched.is_none() {
            latched = measured.clone();
        }
        let hold = measured
            .clone()
            .or_else(|| previous.clone())
            .unwrap_or_else(|| midpoint.clone());

        let proposed = tick.proposed.clone().map(Action::new);
        let checked = envelope.check(
            proposed.as_ref(),
            Measured {
                joint_positions: tick.measured.as_deref(),
                observation_age_ticks: tick.age,
            },
        );
        let command = &checked.command.values;
        let a = checked.activations;
        let context = || format!("tick {t}: {tick:?} → {command:?} {a:?}");

        prop_assert_eq!(command.len(), n, "{}", context());
        for i in 0..n {
            prop_assert!(command[i].is_finite(), "{}", context());
            prop_assert!(
                command[i] >= lower[i] && command[i] <= upper[i],
                "outside the limits: {}",
                context()
            );
        }
        let safe_pose_tick = tick.age >= config.stale_safe_pose_ticks && config.safe_pose.is_some();
        let stale_hold_tick = !estop && !safe_pose_tick && tick.age >= config.stale_hold_ticks;
        if estop {
            let expected = latched.clone().unwrap_or_else(|| hold.clone());
            prop_assert_eq!(command, &expected, "not the latched hold: {}", context());
            prop_assert!(a.estop, "{}", context());
        }
        if stale_hold_tick {
            prop_assert_eq!(command, &hold, "not the stale hold: {}", context());
        }
        if let (Some(step), Some(prev)) = (step, &previous) {
            let within =
                (0..n).all(|i| command[i] >= prev[i] - step[i] && command[i] <= prev[i] + step[i]);
            // The exceptions: the e-stop hold (checked above to be the
            // latched pose), and a measured pose held by the stale or the
            // workspace stage.
            let measured_hold = measured.as_ref() == Some(command);
            let may_jump = estop || (measured_hold && (stale_hold_tick || a.workspace));
            prop_assert!(within || may_jump, "beyond the rate limit: {}", context());
        }
        if config.workspace.is_some() && !estop && !stale_hold_tick {
            let reachable = within_box(&hold) || previous.as_deref().is_some_and(within_box);
            prop_assert!(
                !reachable || within_box(command),
                "outside the workspace: {}",
                context()
            );
        }
        if !estop && safe_pose_tick && config.workspace.is_none() {
            let safe = config.safe_pose.as_ref().unwrap();
            let base = previous.as_ref().unwrap_or(&hold);
            for i in 0..n {
                prop_assert!(
                    (command[i] - safe[i]).abs() <= (base[i] - safe[i]).abs(),
                    "moved away from the safe pose: {}",
                    context()
                );
            }
        }
        if case.torque {
            prop_assert!(!a.velocity && !a.workspace, "{}", context());
        }

        counted.ticks += 1;
        counted.non_finite += a.non_finite as u64;
        counted.position_clamps += a.position as u64;
        counted.velocity_clamps += a.velocity as u64;
        counted.rate_clamps += a.rate as u64;
        counted.workspace_clamps += a.workspace as u64;
        counted.stale_holds += a.stale_hold as u64;
        counted.safe_pose_ticks += a.safe_pose as u64;
        counted.estop_holds += a.estop as u64;
        prop_assert_eq!(envelope.counters(), counted, "{}", context());
        previous = Some(command.clone());
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn every_command_is_finite_limited_rate_limited_boxed_and_latched(case in case_strategy()) {
        check_case(&case)?;
    }
}
