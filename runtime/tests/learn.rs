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
