//! reach-color and lift-color: markers and cubes named by colour in a drawn
//! instruction, seen through the camera only; on real rapier physics.

use cerebellum_core::{Action, Image, Observation, ResetRequest, Robot};
use cerebellum_sim::instructions::{self, InstructionSet};
use cerebellum_sim::kinematics::IkOptions;
use cerebellum_sim::tasks::{self, CUBE_COLORS, MARKER_COLORS};
use cerebellum_sim::*;
use nalgebra::Vector3;
use std::sync::Arc;

fn so101() -> Arc<ArmModel> {
    ArmModel::load(&so101_urdf(), &ArmOptions::default()).expect("SO-101 loads")
}

fn env_with(model: &Arc<ArmModel>, task: TaskKind, set: InstructionSet) -> SimEnv {
    let config = EnvConfig {
        task,
        instructions: set,
        ..EnvConfig::default()
    };
    SimEnv::new(config, Some(model.clone())).unwrap()
}

fn arm(env: &SimEnv) -> &ArmEnv {
    env.as_arm().expect("an arm task")
}

/// Drives the episode from `seed` with `act` until it ends; its success.
fn run(env: &mut SimEnv, seed: u64, mut act: impl FnMut(&SimEnv, &Observation) -> Action) -> bool {
    let mut observation = env.reset(&ResetRequest { seed }).unwrap();
    loop {
        let command = act(env, &observation);
        let outcome = env.apply(&command).unwrap();
        if outcome.done() {
            return outcome.success.unwrap();
        }
        observation = env.observe().unwrap();
    }
}

/// The colour task's scripted expert on the privileged view, as
/// `cerebellum sim --expert` runs it.
fn expert_success_rate(model: &Arc<ArmModel>, task: TaskKind, seeds: std::ops::Range<u64>) -> f64 {
    let mut env = env_with(model, task, InstructionSet::Train);
    let rate = env.spec().control_rate_hz;
    let table = arm(&env).world().table_height;
    let mut expert = ScriptedExpert::new(model.clone(), task, rate, table).unwrap();
    let episodes = seeds.end - seeds.start;
    let mut successes = 0;
    for seed in seeds {
        expert.reset();
        successes += u64::from(run(&mut env, seed, |env, _| {
            let (view, spec) = arm(env).expert_view().expect("a colour task");
            expert.act(&view, &spec)
        }));
    }
    successes as f64 / episodes as f64
}

/// Joints that put the end effector at `point`, the rest of the arm above
/// the table: IK from the home pose and a few other starts.
fn joints_at(model: &ArmModel, point: [f32; 3], table: f32) -> Option<Vec<f32>> {
    let target = Vector3::new(point[0] as f64, point[1] as f64, point[2] as f64);
    let movable = model.moves_end_effector();
    let (lower, upper) = (model.lower(), model.upper());
    let home: Vec<f64> = model.home.iter().map(|&v| v as f64).collect();
    (0..8).find_map(|k| {
        let seed: Vec<f64> = home
            .iter()
            .zip(lower.iter().zip(&upper))
            .zip(&movable)
            .enumerate()
            .map(|(j, ((&h, (&lo, &hi)), &m))| {
                if k == 0 || !m {
                    h
                } else {
                    let u = ((k * 7 + j * 3) % 8) as f64 / 8.0 + 1.0 / 16.0;
                    lo + u * (hi - lo)
                }
            })
            .collect();
        let solution = model.chain.solve_pose(
            target,
            &[],
            &seed,
            &lower,
            &upper,
            &movable,
            &IkOptions::default(),
        );
        let q: Vec<f32> = solution.q.iter().map(|&v| v as f32).collect();
        (solution.converged && model.lowest_point(&q) >= table + 0.02).then_some(q)
    })
}

#[test]
fn the_observation_holds_the_joints_a_camera_and_the_episode_instruction() {
    let model = so101();
    let n = model.joints.len();
    let mut env = env_with(&model, TaskKind::ReachColor, InstructionSet::Train);
    let spec = env.spec().observation.clone();
    let names: Vec<&str> = spec.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["joint_position", "joint_velocity"]);
    assert_eq!(spec.state_len(), 2 * n);
    assert!(spec.instruction);
    assert_eq!(spec.cameras.len(), 1, "the default camera is on");

    let lift = env_with(&model, TaskKind::LiftColor, InstructionSet::Train);
    let names: Vec<&str> = lift
        .spec()
        .observation
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["joint_position", "joint_velocity", "ee_position"]);
    assert_eq!(lift.spec().observation.cameras.len(), 1);

    // The episode's instruction on every tick, and the image.
    let first = env.reset(&ResetRequest { seed: 4 }).unwrap();
    let instruction = first.instruction.clone().unwrap();
    assert_eq!(instruction, arm(&env).instruction());
    let colour = MARKER_COLORS[arm(&env).named().unwrap()].0;
    assert!(instruction.contains(colour), "{instruction} names {colour}");
    let hold = Action::new(model.home.clone());
    for _ in 0..5 {
        env.apply(&hold).unwrap();
        let observation = env.observe().unwrap();
        spec.check(&observation).unwrap();
        assert_eq!(
            observation.instruction.as_deref(),
            Some(instruction.as_str())
        );
        assert_eq!(observation.images.len(), 1);
    }
    // The tasks with one fixed instruction keep it.
    let mut reach = env_with(&model, TaskKind::Reach, InstructionSet::HeldOut);
    let observation = reach.reset(&ResetRequest { seed: 4 }).unwrap();
    assert_eq!(
        observation.instruction.as_deref(),
        Some(TaskKind::Reach.instruction())
    );
}

#[test]
fn the_same_seed_draws_the_same_instruction_and_training_never_a_held_out_one() {
    let model = so101();
    for task in [TaskKind::ReachColor, TaskKind::LiftColor] {
        let colors: Vec<&str> = match task {
            TaskKind::ReachColor => MARKER_COLORS.iter().map(|c| c.0).collect(),
            _ => CUBE_COLORS.iter().map(|c| c.0).collect(),
        };
        let phrasings = |set| -> Vec<String> {
            instructions::templates(task, set)
                .iter()
                .flat_map(|t| colors.iter().map(|c| instructions::fill(t, c)))
                .collect()
        };
        let (train, held_out) = (
            phrasings(InstructionSet::Train),
            phrasings(InstructionSet::HeldOut),
        );
        let mut train_env = env_with(&model, task, InstructionSet::Train);
        let mut again = env_with(&model, task, InstructionSet::Train);
        let mut held_env = env_with(&model, task, InstructionSet::HeldOut);
        let mut named_seen = std::collections::BTreeSet::new();
        let seeds = if task == TaskKind::ReachColor {
            200
        } else {
            60
        };
        for seed in 0..seeds {
            let request = ResetRequest { seed };
            let a = train_env.reset(&request).unwrap().instruction.unwrap();
            let b = again.reset(&request).unwrap().instruction.unwrap();
            let h = held_env.reset(&request).unwrap().instruction.unwrap();
            assert_eq!(a, b, "seed {seed}");
            assert!(train.contains(&a), "{task} seed {seed}: {a}");
            assert!(
                !held_out.contains(&a),
                "{task} seed {seed}: {a} is held out"
            );
            assert!(held_out.contains(&h), "{task} seed {seed}: {h}");
            // The set changes the phrasing only, not the scene.
            let named = arm(&train_env).named().unwrap();
            assert_eq!(arm(&held_env).named(), Some(named));
            assert_eq!(arm(&held_env).target(), arm(&train_env).target());
            assert!(a.contains(colors[named]) && h.contains(colors[named]));
            named_seen.insert(named);
        }
        assert_eq!(
            named_seen.len(),
            colors.len(),
            "{task}: every colour gets named"
        );
    }
}

#[test]
fn an_unknown_instruction_set_is_refused_naming_the_key_and_the_choices() {
    let err = toml::from_str::<EnvConfig>("task = \"reach-color\"\ninstructions = \"test\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("instructions") && err.contains("held_out"),
        "{err}"
    );
    let config: EnvConfig =
        toml::from_str("task = \"reach_color\"\ninstructions = \"held_out\"\n").unwrap();
    assert_eq!(config.task, TaskKind::ReachColor);
    assert_eq!(config.instructions, InstructionSet::HeldOut);
}

/// Which pixels look like each marker's colour: a hue test the table's
/// beige checker, the arm's yellow and black, and shadows never pass.
fn colour_pixels(image: &Image) -> [usize; 3] {
    let mut counts = [0; 3];
    for pixel in image.data.chunks(3) {
        let [r, g, b] = [pixel[0] as f32, pixel[1] as f32, pixel[2] as f32];
        let max = r.max(g).max(b);
        if max < 25.0 {
            continue;
        }
        if r > 2.5 * g && r > 2.5 * b {
            counts[0] += 1;
        } else if g > 1.8 * r && g > 1.8 * b {
            counts[1] += 1;
        } else if b > 1.8 * r && b > 1.4 * g {
            counts[2] += 1;
        }
    }
    counts
}

#[test]
fn markers_are_spaced_reachable_and_in_view_of_the_default_camera() {
    let model = so101();
    let mut env = env_with(&model, TaskKind::ReachColor, InstructionSet::Train);
    let mut plain = env_with(&model, TaskKind::Reach, InstructionSet::Train);
    let mut fewest = [usize::MAX; 3];
    for seed in 0..200 {
        env.reset(&ResetRequest { seed }).unwrap();
        let world = arm(&env).world();
        let table = world.table_height;
        assert_eq!(world.markers.len(), 3);
        for (i, a) in world.markers.iter().enumerate() {
            assert_eq!(a.rgb, MARKER_COLORS[i].1);
            let radius = a.base[0].hypot(a.base[1]);
            assert!(
                (tasks::MARKER_RADII.0..=tasks::MARKER_RADII.1).contains(&radius),
                "seed {seed}: {a:?}"
            );
            assert_eq!(a.base[2], table);
            for b in &world.markers[i + 1..] {
                let gap = (a.base[0] - b.base[0]).hypot(a.base[1] - b.base[1]);
                assert!(gap >= tasks::MARKER_SPACING, "seed {seed}: {gap}");
            }
            assert!(
                joints_at(&model, a.top(), table).is_some(),
                "seed {seed}: marker {i} at {:?} is out of reach",
                a.top()
            );
        }
        let named = arm(&env).named().unwrap();
        assert_eq!(arm(&env).target(), world.markers[named].top());
        // In view at the start: each marker's colour shows in the image.
        let counts = colour_pixels(&arm(&env).render());
        for (k, count) in counts.iter().enumerate() {
            fewest[k] = fewest[k].min(*count);
        }
        assert!(counts.iter().all(|&c| c >= 4), "seed {seed}: {counts:?}");
        // …and nothing else in the scene has those colours.
        plain.reset(&ResetRequest { seed }).unwrap();
        assert_eq!(colour_pixels(&arm(&plain).render()), [0; 3], "seed {seed}");
    }
    eprintln!("fewest marker pixels over 200 seeds (red, green, blue): {fewest:?}");
}

#[test]
fn success_is_the_gripper_at_the_named_marker_not_another() {
    let model = so101();
    let mut env = env_with(&model, TaskKind::ReachColor, InstructionSet::Train);
    for seed in 0..4 {
        env.reset(&ResetRequest { seed }).unwrap();
        let named = arm(&env).named().unwrap();
        let markers = arm(&env).world().markers.clone();
        let table = arm(&env).world().table_height;
        for (i, marker) in markers.iter().enumerate() {
            let q = joints_at(&model, marker.top(), table).expect("reachable");
            // Commanded there from the start, the servos arrive well
            // within the episode.
            let success = run(&mut env, seed, |_, _| Action::new(q.clone()));
            let ee = arm(&env).world().ee_position();
            assert!(tasks::distance(&ee, &marker.top()) < tasks::REACH_SUCCESS_RADIUS);
            assert_eq!(
                success,
                i == named,
                "seed {seed}, marker {i}, named {named}"
            );
        }
    }
}

#[test]
fn lifting_the_named_cube_succeeds_and_lifting_the_other_fails() {
    let model = so101();
    let mut env = env_with(&model, TaskKind::LiftColor, InstructionSet::Train);
    let rate = env.spec().control_rate_hz;
    let table = arm(&env).world().table_height;
    let n = model.joints.len();
    let mut expert = ScriptedExpert::new(model.clone(), TaskKind::LiftColor, rate, table).unwrap();
    let (mut right, mut wrong) = (0, 0);
    for seed in 0..3 {
        env.reset(&ResetRequest { seed }).unwrap();
        let named = arm(&env).named().unwrap();
        let cubes = arm(&env).color_cubes();
        assert_eq!(cubes.len(), 2);
        for (i, &cube) in cubes.iter().enumerate() {
            // The lift expert, shown cube i's pose instead of the named one's.
            expert.reset();
            let mut highest = f32::NEG_INFINITY;
            let start = {
                env.reset(&ResetRequest { seed }).unwrap();
                arm(&env).world().body_pose(cube).translation.z
            };
            let success = run(&mut env, seed, |env, _| {
                let arm = arm(env);
                let (mut view, spec) = arm.expert_view().unwrap();
                let pose = arm.world().body_pose(cube);
                let k = 2 * n + 3;
                view.state[k..k + 3].copy_from_slice(&pose.translation.to_array());
                view.state[k + 3..k + 7].copy_from_slice(&pose.rotation.to_array());
                highest = highest.max(pose.translation.z - start);
                expert.act(&view, &spec)
            });
            assert!(
                highest >= tasks::LIFT_HEIGHT,
                "seed {seed}: cube {i} was lifted only {highest} m"
            );
            assert_eq!(
                success,
                i == named,
                "seed {seed}: lifted cube {i}, named {named}"
            );
            if i == named {
                right += 1;
            } else {
                wrong += 1;
            }
        }
    }
    assert_eq!((right, wrong), (3, 3));
}

/// 40 episodes for CI; docs/tasks.md has the rate over 200 (`cerebellum sim
/// --task reach-color --expert --episodes 200 --json`).
#[test]
fn reach_color_expert_succeeds_on_at_least_95_percent_of_starts() {
    let rate = expert_success_rate(&so101(), TaskKind::ReachColor, 0..40);
    assert!(rate >= 0.95, "reach-color expert success rate {rate}");
}

/// The floor is below the rate measured over 200 episodes in docs/tasks.md.
#[test]
fn lift_color_expert_lifts_the_named_cube() {
    let rate = expert_success_rate(&so101(), TaskKind::LiftColor, 0..20);
    eprintln!("lift-color expert success rate over 20 episodes: {rate}");
    assert!(rate >= 0.85, "lift-color expert success rate {rate}");
}
