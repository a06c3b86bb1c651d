use cerebellum_sim::*;
use rapier3d::prelude::PhysicsPipeline;

fn so101() -> std::sync::Arc<ArmModel> {
    ArmModel::load(&so101_urdf(), &ArmOptions::default()).expect("SO-101 loads")
}

#[test]
fn so101_loads_with_six_actuated_joints_and_their_limits() {
    let model = so101();
    assert_eq!(
        model.joint_names(),
        [
            "shoulder_pan",
            "shoulder_lift",
            "elbow_flex",
            "wrist_flex",
            "wrist_roll",
            "gripper"
        ]
    );
    let pan = &model.joints[0];
    assert!((pan.lower - -1.91986).abs() < 1e-5 && (pan.upper - 1.91986).abs() < 1e-5);
    let elbow = &model.joints[2];
    assert!((elbow.lower - -1.69).abs() < 1e-6 && (elbow.upper - 1.69).abs() < 1e-6);
    assert_eq!(model.ee_link, "gripper_frame_link");
    assert_eq!(model.joints[0].actuator.max_force, 3.35);
}

#[test]
fn forward_kinematics_matches_mujoco_gripperframe_site() {
    // World positions of the MJCF `gripperframe` site, printed by MuJoCo 3.17
    // for the same arm (bench/peers/mujoco_physics.py).
    let model = so101();
    let at_zero = model.ee_position(&[0.0; 6]);
    let expected = [0.391362, -0.000011, 0.226469];
    for k in 0..3 {
        assert!(
            (at_zero[k] - expected[k]).abs() < 1e-4,
            "{at_zero:?} vs {expected:?}"
        );
    }
    let q = [0.479965, -0.4363325, 0.4225, 0.414515, 0.7468125, 0.5454175];
    let at_q = model.ee_position(&q);
    let expected = [0.291193, -0.137483, 0.169972];
    for k in 0..3 {
        assert!(
            (at_q[k] - expected[k]).abs() < 1e-4,
            "{at_q:?} vs {expected:?}"
        );
    }
}

#[test]
fn motors_track_a_reachable_target() {
    let model = so101();
    let physics = PhysicsConfig::default();
    let mut world = ArmWorld::new(model.clone(), &physics, &[0.0; 6], None);
    let target = [0.479965, -0.4363325, 0.4225, 0.414515, 0.7468125, 0.5454175];
    world.set_joint_targets(&target);
    let mut pipeline = PhysicsPipeline::new();
    for _ in 0..100 {
        world.step_tick(&mut pipeline);
    }
    let q = world.joint_positions();
    for (i, (q, t)) in q.iter().zip(target).enumerate() {
        assert!(
            (q - t).abs() < 0.02,
            "joint {} at {q}, target {t}",
            model.joints[i].name
        );
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arms/test_arm7/urdf")
        .join(name)
}

#[test]
fn a_seven_dof_arm_with_mimic_gripper_and_mixed_meshes_loads() {
    let model = ArmModel::load(&fixture("test_arm7.urdf"), &ArmOptions::default()).unwrap();
    assert_eq!(
        model.joint_names(),
        [
            "joint1",
            "joint2",
            "joint3",
            "joint4",
            "joint5",
            "joint6",
            "joint7",
            "finger_left_joint"
        ]
    );
    assert_eq!(model.mimics.len(), 1);
    assert_eq!(model.ee_link, "tool_frame");
    // Hand-computed by tests/reference/make_test_arm.py.
    let at_zero = model.ee_position(&[0.0; 8]);
    assert!(
        (at_zero[2] - 1.2).abs() < 1e-4 && at_zero[0].abs() < 1e-4,
        "{at_zero:?}"
    );
    let q = [0.3, -0.5, 0.4, 1.2, -0.7, 0.9, 0.5, 0.02];
    let p = model.ee_position(&q);
    let expected = [0.201709, 0.168954, 0.932737];
    for k in 0..3 {
        assert!((p[k] - expected[k]).abs() < 1e-4, "{p:?}");
    }
    // No actuator file: defaults come from the URDF effort limits.
    assert_eq!(model.joints[0].actuator.max_force, 300.0);
    // The mimic finger follows the leader in the physics.
    let mut world = ArmWorld::new(model.clone(), &PhysicsConfig::default(), &model.home, None);
    let mut target = model.home.clone();
    target[7] = 0.03;
    world.set_joint_targets(&target);
    let mut pipeline = PhysicsPipeline::new();
    for _ in 0..50 {
        world.step_tick(&mut pipeline);
    }
    assert!((world.joint_positions()[7] - 0.03).abs() < 0.005);
}

#[test]
fn broken_urdfs_give_errors_naming_the_file_and_element() {
    let dir = std::env::temp_dir().join(format!("cerebellum-urdf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.urdf");
    let err = ArmModel::load(&missing, &ArmOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing.urdf"), "{err}");

    let malformed = dir.join("malformed.urdf");
    std::fs::write(&malformed, "<robot name='x'><link name='a'></robot>").unwrap();
    let err = ArmModel::load(&malformed, &ArmOptions::default()).unwrap_err();
    assert!(err.to_string().contains("malformed.urdf"), "{err}");

    let no_mesh = dir.join("no_mesh.urdf");
    std::fs::write(
        &no_mesh,
        r#"<robot name="x">
  <link name="base"/>
  <link name="arm"><visual><geometry><mesh filename="meshes/gone.stl"/></geometry></visual></link>
  <joint name="j" type="revolute"><parent link="base"/><child link="arm"/>
    <axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
</robot>"#,
    )
    .unwrap();
    let err = ArmModel::load(&no_mesh, &ArmOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no_mesh.urdf") && err.contains("`arm`") && err.contains("gone.stl"),
        "{err}"
    );
    assert!(err.contains("<visual>"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The default solver substeps (fewer than rapier's default, for speed)
/// keep a step response within 0.02 rad of a finely substepped one.
#[test]
fn default_solver_substeps_follow_a_fine_solver_step_response() {
    let model = so101();
    let target = [0.479965, -0.4363325, 0.4225, 0.414515, 0.7468125, 0.5454175];
    let response = |solver_iterations| {
        let physics = PhysicsConfig {
            solver_iterations,
            ..PhysicsConfig::default()
        };
        let mut world = ArmWorld::new(model.clone(), &physics, &model.home, None);
        world.set_joint_targets(&target);
        let mut pipeline = PhysicsPipeline::new();
        (0..400)
            .map(|_| {
                world.step_physics(&mut pipeline);
                world.joint_positions()
            })
            .collect::<Vec<_>>()
    };
    let fine = response(16);
    let default = response(PhysicsConfig::default().solver_iterations);
    let deviation = fine
        .iter()
        .flatten()
        .zip(default.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("largest deviation from the fine solver: {deviation:.2e} rad");
    assert!(deviation < 0.02, "{deviation} rad");
}
