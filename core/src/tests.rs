use crate::*;
use std::time::Duration;

fn arm_spec() -> RobotSpec {
    RobotSpec {
        name: "test-arm".into(),
        observation: ObservationSpec {
            fields: vec![
                FieldSpec::new(
                    "joint_position",
                    Unit::Radian,
                    &["pan", "lift"],
                    &[(-1.0, 1.0), (-2.0, 2.0)],
                ),
                FieldSpec::new("target", Unit::Meter, &["x", "y", "z"], &[(-1.0, 1.0); 3]),
            ],
            cameras: vec![CameraSpec {
                name: "front".into(),
                height: 2,
                width: 3,
                channels: 3,
            }],
            instruction: true,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "joint_target",
                Unit::Radian,
                &["pan", "lift"],
                &[(-1.0, 1.0), (-2.0, 2.0)],
            )],
        },
        control_rate_hz: 50.0,
    }
}

fn observation() -> Observation {
    Observation {
        state: vec![0.5, -1.5, 0.1, 0.2, 0.3],
        images: vec![Image {
            camera: "front".into(),
            height: 2,
            width: 3,
            channels: 3,
            data: vec![0; 18],
        }],
        instruction: Some("reach the target".into()),
        timestamp: 0.0,
    }
}

#[test]
fn valid_values_pass_their_spec() {
    let spec = arm_spec();
    spec.observation.validate().unwrap();
    spec.action.validate().unwrap();
    spec.observation.check(&observation()).unwrap();
    spec.action.check(&Action::new(vec![1.0, -2.0])).unwrap();
    assert_eq!(
        spec.observation.field(&observation().state, "target"),
        Some(&[0.1, 0.2, 0.3][..])
    );
}

#[test]
fn errors_name_the_field_element_and_value() {
    let spec = arm_spec().action;
    let err = spec.check(&Action::new(vec![0.0, 2.5])).unwrap_err();
    assert!(matches!(err, SpecError::OutOfRange { .. }));
    let message = err.to_string();
    assert!(message.contains("joint_target[lift]"), "{message}");
    assert!(message.contains("2.5"), "{message}");
    assert!(message.contains("rad"), "{message}");

    let err = spec.check(&Action::new(vec![f32::NAN, 0.0])).unwrap_err();
    assert!(err.to_string().contains("joint_target[pan]"), "{err}");
    let err = spec
        .check(&Action::new(vec![f32::INFINITY, 0.0]))
        .unwrap_err();
    assert!(matches!(err, SpecError::NotFinite { .. }), "{err}");

    let err = spec.check(&Action::new(vec![0.0])).unwrap_err();
    assert_eq!(
        err,
        SpecError::WrongLength {
            kind: "action",
            expected: 2,
            actual: 1
        }
    );
}

#[test]
fn observations_with_wrong_images_or_missing_instruction_are_refused() {
    let spec = arm_spec().observation;
    let mut wrong_image = observation();
    wrong_image.images[0].data.pop();
    assert!(
        spec.check(&wrong_image)
            .unwrap_err()
            .to_string()
            .contains("front")
    );

    let mut no_instruction = observation();
    no_instruction.instruction = None;
    assert!(spec.check(&no_instruction).is_err());

    let mut nan_state = observation();
    nan_state.state[3] = f32::NAN;
    let err = spec.check(&nan_state).unwrap_err();
    assert!(err.to_string().contains("target[y]"), "{err}");
}

#[test]
fn malformed_specs_are_refused() {
    let mut spec = arm_spec().action;
    spec.fields[0].lower[0] = 3.0;
    assert!(spec.validate().is_err());
    let mut spec = arm_spec().action;
    spec.fields.push(spec.fields[0].clone());
    assert!(spec.validate().unwrap_err().to_string().contains("twice"));
}

#[test]
fn chunks_are_checked_action_by_action() {
    let spec = arm_spec().action;
    let good = Action::new(vec![0.0, 0.0]);
    let bad = Action::new(vec![0.0, 9.0]);
    spec.check_chunk(&ActionChunk {
        actions: vec![good.clone(), good.clone()],
    })
    .unwrap();
    assert!(
        spec.check_chunk(&ActionChunk {
            actions: vec![good, bad]
        })
        .is_err()
    );
    assert!(spec.check_chunk(&ActionChunk { actions: vec![] }).is_err());
}

#[test]
fn messages_round_trip_through_serde() {
    let spec = arm_spec();
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<RobotSpec>(&json).unwrap(), spec);

    let transition = Transition {
        success: None,
        stage: None,
        reward_version: None,
        provenance: Provenance {
            robot_id: "arm0".into(),
            episode_id: 3,
            task_instance_id: 7,
            group_id: Some(1),
            step: 12,
            policy_version: 4,
        },
        sim_time: 0.24,
        wall_time: 1.0e9,
        observation: observation(),
        policy_action: Action::new(vec![0.5, 0.5]),
        sent_command: Action::new(vec![0.4, 0.5]),
        behaviour_log_prob: Some(-1.5),
        chunk_index: 2,
        intervention: false,
        safety_clamped: true,
        rewards: RewardComponents::new()
            .with(RewardComponents::TASK, -0.3)
            .with(RewardComponents::SAFETY, -1.0),
        terminated: false,
        truncated: false,
    };
    let json = serde_json::to_string(&transition).unwrap();
    let back: Transition = serde_json::from_str(&json).unwrap();
    assert_eq!(back, transition);
    assert_eq!(back.rewards.get("safety"), Some(-1.0));
}

#[test]
fn sim_clock_advances_one_period_per_tick_without_waiting() {
    let mut clock = SimClock::new(Duration::from_millis(20));
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(clock.wait_for_next_tick(), Duration::ZERO);
    }
    assert_eq!(clock.now(), Duration::from_secs(20));
    // 20 simulated seconds must not take anything like 20 real ones.
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn wall_clock_holds_the_period() {
    let period = Duration::from_millis(5);
    let mut clock = WallClock::new(period, Duration::from_micros(200));
    for _ in 0..10 {
        clock.wait_for_next_tick();
    }
    // Ten ticks of 5 ms cannot finish before 50 ms.
    assert!(clock.now() >= period * 10, "{:?}", clock.now());
}
