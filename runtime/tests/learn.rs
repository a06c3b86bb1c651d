//! Learning tests: real training runs on small budgets (not timed).

use cerebellum_runtime::learn::eval::evaluate;
use cerebellum_runtime::learn::trainer::make_envs;
use cerebellum_runtime::learn::{Algo, TrainConfig, Trainer};
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, TaskKind};
use std::sync::Arc;

fn env_config(task: TaskKind) -> EnvConfig {
    EnvConfig {
        task,
        ..EnvConfig::default()
    }
}

fn so101() -> Arc<ArmModel> {
    ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
}

/// Mean evaluation return of the deterministic policy.
fn eval_return(trainer: &mut Trainer, model: Option<Arc<ArmModel>>, episodes: usize) -> (f64, f64) {
    let task = trainer.config.task_kind();
    let envs = make_envs(&env_config(task), model, episodes.min(8)).unwrap();
    let report = evaluate(&mut trainer.policy, envs, episodes, 1, 1).unwrap();
    (report.mean_return, report.success_rate)
}

#[test]
fn ppo_learns_pendulum_on_a_small_budget() {
    let mut config = TrainConfig::for_task(TaskKind::Pendulum);
    config.total_steps = 61_440;
    let mut trainer = Trainer::new(config, &env_config(TaskKind::Pendulum), None).unwrap();
    let (random, _) = eval_return(&mut trainer, None, 10);
    while !trainer.done() {
        let report = trainer.iterate().unwrap();
        assert!(!report.update.rolled_back);
    }
    let (trained, _) = eval_return(&mut trainer, None, 10);
    println!("pendulum: initial policy {random:.1}, after 61k steps {trained:.1}");
    assert!(
        trained > random + 400.0,
        "initial {random}, trained {trained}"
    );
}

#[test]
fn same_seed_same_learning_curve_whatever_the_thread_count() {
    let run = |threads: usize| {
        let mut config = TrainConfig::for_task(TaskKind::Reach);
        config.envs = 4;
        config.threads = threads;
        config.rollout_steps = 16;
        config.total_steps = 4 * 16 * 3;
        let mut trainer =
            Trainer::new(config, &env_config(TaskKind::Reach), Some(so101())).unwrap();
        let mut curve = Vec::new();
        while !trainer.done() {
            let r = trainer.iterate().unwrap();
            curve.push((
                r.env_steps,
                r.update.policy_loss,
                r.update.value_loss,
                r.update.approx_kl,
            ));
        }
        (curve, trainer.policy.actor.params().to_vec())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(1), "and again on one thread");
}

#[test]
fn grpo_improves_reach_over_its_starting_policy() {
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.algo = Algo::Grpo;
    config.group = 8;
    config.envs = 16;
    config.total_steps = 16 * 100 * 12;
    config.ppo.epochs = 4;
    config.ppo.minibatch_size = 400;
    let model = so101();
    let mut trainer =
        Trainer::new(config, &env_config(TaskKind::Reach), Some(model.clone())).unwrap();
    let (before, before_success) = eval_return(&mut trainer, Some(model.clone()), 16);
    while !trainer.done() {
        trainer.iterate().unwrap();
    }
    let (after, after_success) = eval_return(&mut trainer, Some(model), 16);
    println!(
        "grpo reach: return {before:.2} → {after:.2}, success {before_success} → {after_success}"
    );
    assert!(after > before + 5.0, "return {before} → {after}");
}

#[test]
fn behaviour_cloning_the_expert_reaches_targets_before_any_rl() {
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.bc.expert_episodes = 100;
    let mut trainer =
        Trainer::new(config.clone(), &env_config(TaskKind::Reach), Some(so101())).unwrap();
    let (_, before) = eval_return(&mut trainer, Some(so101()), 40);
    let report = trainer
        .pretrain_from_expert(&env_config(TaskKind::Reach), Some(so101()))
        .unwrap()
        .expect("bc is on");
    let (_, after) = eval_return(&mut trainer, Some(so101()), 40);
    println!("bc: {report:?}; held-out success {before} → {after}");
    assert!(
        report.demonstrations["successful"].as_u64().unwrap() > 40,
        "{report:?}"
    );
    assert!(report.final_loss < 0.6 * report.initial_loss, "{report:?}");
    assert!(after >= 0.3 && before < 0.05, "success {before} → {after}");

    // Same seed, same demonstrations and weights.
    let mut again = Trainer::new(config, &env_config(TaskKind::Reach), Some(so101())).unwrap();
    again
        .pretrain_from_expert(&env_config(TaskKind::Reach), Some(so101()))
        .unwrap();
    assert_eq!(again.policy.actor, trainer.policy.actor);
}

#[test]
fn cloning_during_rl_keeps_the_policy_near_the_demonstrations() {
    let env = env_config(TaskKind::Reach);
    let bc_loss_after_rl = |rl_weight: f64| {
        let mut config = TrainConfig::for_task(TaskKind::Reach);
        (config.envs, config.rollout_steps) = (8, 32);
        config.bc.expert_episodes = 30;
        config.bc.epochs = 20;
        (config.bc.rl_weight, config.bc.rl_decay) = (rl_weight, 1.0);
        let mut trainer = Trainer::new(config.clone(), &env, Some(so101())).unwrap();
        trainer.pretrain_from_expert(&env, Some(so101())).unwrap();
        for _ in 0..8 {
            trainer.iterate().unwrap();
        }
        let mut sim = cerebellum_runtime::learn::trainer::make_envs(&env, Some(so101()), 1)
            .unwrap()
            .remove(0);
        let (demos, _) = cerebellum_runtime::learn::bc::expert_demonstrations(
            &mut sim,
            config.bc.expert_episodes,
            config.bc.expert_noise,
            config.seed,
        )
        .unwrap();
        cerebellum_runtime::learn::bc::CloningSet::new(&trainer.policy, &demos, &config.bc, 0)
            .unwrap()
            .loss(&trainer.policy)
            .unwrap()
    };
    let (plain, dapg) = (bc_loss_after_rl(0.0), bc_loss_after_rl(1.0));
    println!("L_BC after 8 PPO updates: {plain} without the cloning term, {dapg} with it");
    assert!(dapg < 0.8 * plain, "{dapg} vs {plain}");
}

#[test]
fn behaviour_cloning_refuses_demonstrations_that_break_the_spec() {
    use cerebellum_runtime::learn::bc::{BcConfig, Demonstration, pretrain};
    let config = TrainConfig::for_task(TaskKind::Reach);
    let mut trainer = Trainer::new(config, &env_config(TaskKind::Reach), Some(so101())).unwrap();
    let observation = trainer.collector.observations()[0].clone();
    let joints = trainer.policy.act_size();
    let mut bad = observation.clone();
    bad.state[0] = f32::NAN;
    let before = trainer.policy.actor.clone();
    for demo in [
        Demonstration {
            observation: bad,
            command: vec![0.0; joints],
            weight: 1.0,
        },
        Demonstration {
            observation: observation.clone(),
            command: vec![1e3; joints],
            weight: 1.0,
        },
        Demonstration {
            observation: observation.clone(),
            command: vec![0.0; joints + 1],
            weight: 1.0,
        },
        Demonstration {
            observation,
            command: vec![0.0; joints],
            weight: f32::NAN,
        },
    ] {
        let err = pretrain(&mut trainer.policy, &[demo], &BcConfig::default(), 0).unwrap_err();
        println!("{err}");
    }
    assert_eq!(
        trainer.policy.actor, before,
        "nothing was learned from bad input"
    );
}

/// The colour tasks' expert demonstrates through the privileged view while
/// the demonstrations keep the policy's observation (no object in the
/// state; instruction and image), with DART noise on the commands sent.
#[test]
fn colour_task_demonstrations_keep_the_policy_observation_under_dart_noise() {
    use cerebellum_core::Robot;
    let model = so101();
    // Noise that stays within the success radius some of the time: reach's
    // own expert keeps about half of its episodes at 0.05 rad (52.5% of
    // 40, reach-color's 70%), lift's 15% (lift-color's 10%), both of 20.
    for (task, noise, episodes, floor) in [
        (TaskKind::ReachColor, 0.05, 10, 0.5),
        (TaskKind::LiftColor, 0.01, 4, 0.75),
    ] {
        let mut env = make_envs(&env_config(task), Some(model.clone()), 1)
            .unwrap()
            .remove(0);
        let state_len = env.spec().observation.state_len();
        let (demos, report) =
            cerebellum_runtime::learn::bc::expert_demonstrations(&mut env, episodes, noise, 0)
                .unwrap();
        let rate = report.successful as f64 / episodes as f64;
        println!("{task}: {rate} of {episodes} noisy ({noise} rad) demonstrations succeed");
        assert!(rate >= floor, "{task}: {report:?}");
        for demo in &demos {
            assert_eq!(demo.observation.state.len(), state_len);
            assert!(demo.observation.instruction.is_some());
            assert_eq!(demo.observation.images.len(), 1);
        }
    }
}
