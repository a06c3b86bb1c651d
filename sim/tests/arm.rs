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
