//! The lift task on the SO-101: the jaws' collision shapes, the pose solver
//! the expert aims the gripper with, and the expert itself.

use cerebellum_core::{ResetRequest, Robot};
use cerebellum_sim::kinematics::{AxisGoal, IkOptions};
use cerebellum_sim::robot_config::RobotConfig;
use cerebellum_sim::*;
use nalgebra::Vector3;
use rapier3d::math::{Pose, Rotation, Vector};
use rapier3d::parry::shape::Cuboid;
use std::sync::Arc;

fn so101() -> Arc<ArmModel> {
    ArmModel::load(&so101_urdf(), &ArmOptions::default()).expect("SO-101 loads")
}

/// The SO-101 with its gripper at `opening`, and the pose of a cube held
/// where the robot config says a grasped object sits.
fn gripper_around_cube(model: &Arc<ArmModel>, opening: f32) -> (ArmWorld, Pose) {
    let gripper = model
        .config
        .gripper
        .clone()
        .expect("the SO-101 has a gripper");
    let mut q = model.home.clone();
    // Wrist bent and rolled so the frames under test are not axis-aligned.
    q[3] = 1.2;
    q[4] = -0.7;
    q[model.joint_index(&gripper.joint).unwrap()] = opening;
    let world = ArmWorld::new(model.clone(), &PhysicsConfig::default(), &q, None);
    let q64: Vec<f64> = q.iter().map(|&v| v as f64).collect();
    let ee = model.chain.forward(&q64);
    let [x, y, z] = gripper.grasp_offset.map(|v| v as f64);
    let centre = ee * nalgebra::Point3::new(x, y, z);
    let r = ee.rotation;
    let cube = Pose::from_parts(
        Vector::new(centre.x as f32, centre.y as f32, centre.z as f32),
        Rotation::from_xyzw(r.i as f32, r.j as f32, r.k as f32, r.w as f32),
    );
    (world, cube)
}

const CUBE: f32 = 0.03;

#[test]
fn open_jaws_leave_room_for_a_3_cm_cube_and_closed_jaws_reach_it() {
    let model = so101();
    let gripper = model.config.gripper.clone().unwrap();
    let cube = Cuboid::new(Vector::splat(CUBE / 2.0));

    let (open, pose) = gripper_around_cube(&model, gripper.open);
    assert_eq!(open.links_touching(&cube, &pose), Vec::<&str>::new());

    let (closed, pose) = gripper_around_cube(&model, gripper.closed);
    let touching = closed.links_touching(&cube, &pose);
    assert!(
        touching.contains(&"moving_jaw_so101_v1_link"),
        "closed jaws touch {touching:?}"
    );
}

#[test]
fn without_the_pads_the_jaw_hulls_fill_the_grasp_gap() {
    // The check above means something only if the meshes' convex hulls,
    // which the pads replace, would fail it.
    let mut config = RobotConfig::from_file(&so101_urdf().with_extension("toml")).unwrap();
    config.replace_collision.clear();
    config.pads.clear();
    let path = std::env::temp_dir().join(format!("so101_hulls_{}.toml", std::process::id()));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let options = ArmOptions {
        config: Some(path.clone()),
        ..ArmOptions::default()
    };
    let model = ArmModel::load(&so101_urdf(), &options).unwrap();
    std::fs::remove_file(&path).ok();
    let (world, pose) = gripper_around_cube(&model, config.gripper.unwrap().open);
    let cube = Cuboid::new(Vector::splat(CUBE / 2.0));
    assert!(!world.links_touching(&cube, &pose).is_empty());
}

#[test]
fn gripper_axes_must_be_non_zero_and_not_parallel() {
    let parse = |axes: &str| {
        let text = format!("[gripper]\njoint = \"g\"\nopen = 1.0\nclosed = 0.0\n{axes}\n");
        toml::from_str::<RobotConfig>(&text).unwrap().validate()
    };
    assert!(parse("").is_ok());
    let zero = parse("approach_axis = [0.0, 0.0, 0.0]").unwrap_err();
    assert!(zero.contains("approach_axis"), "{zero}");
    assert!(parse("approach_axis = [0.0, 2.0, 0.0]").is_err());
    assert!(parse("approach_axis = [1.0, 0.0, 0.0]").is_ok());
}

#[test]
fn pose_solver_meets_position_and_axis_goals() {
    let model = so101();
    let chain = &model.chain;
    let (lower, upper) = (model.lower(), model.upper());
    let movable = model.moves_end_effector();
    let goal_q = [0.3, 0.2, 0.4, 1.0, -0.5, 0.0];
    let goal = chain.forward(&goal_q);
    let axes = [Vector3::z(), Vector3::x()].map(|local| AxisGoal {
        local,
        world: goal.rotation * local,
    });
    let seed: Vec<f64> = goal_q.iter().map(|v| v + 0.25).collect();
    let solution = chain.solve_pose(
        goal.translation.vector,
        &axes,
        &seed,
        &lower,
        &upper,
        &movable,
        &IkOptions::default(),
    );
    assert!(solution.converged, "{solution:?}");
    let reached = chain.forward(&solution.q);
    assert!((reached.translation.vector - goal.translation.vector).norm() < 1e-4);
    for axis in &axes {
        assert!((reached.rotation * axis.local).angle(&axis.world) < 1e-3);
    }
    // The gripper joint moves no frame of the chain, so it stays put.
    assert_eq!(solution.q[5], seed[5]);
}

#[test]
fn lift_expert_succeeds_on_at_least_70_percent_of_starts() {
    let model = so101();
    let config = EnvConfig {
        task: TaskKind::Lift,
        ..EnvConfig::default()
    };
    let mut env = SimEnv::new(config, Some(model.clone())).unwrap();
    let rate = env.spec().control_rate_hz;
    let table = env.as_arm().unwrap().world().table_height;
    let spec = env.spec().observation.clone();
    let mut expert = ScriptedExpert::new(model, TaskKind::Lift, rate, table).unwrap();
    let episodes = 30;
    let mut successes = 0;
    for seed in 0..episodes {
        let mut observation = env.reset(&ResetRequest { seed }).unwrap();
        expert.reset();
        loop {
            let outcome = env.apply(&expert.act(&observation, &spec)).unwrap();
            if outcome.done() {
                successes += outcome.success.unwrap() as u32;
                break;
            }
            observation = env.observe().unwrap();
        }
    }
    let rate = successes as f64 / episodes as f64;
    assert!(rate >= 0.7, "lift expert success rate {rate}");
}
