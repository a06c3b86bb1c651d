//! `cerebellum train --resume VLA_RUN --out NEW`: RL fine-tuning of a
//! cloned vision-language policy in the simulation, with the learners
//! every policy trains with (PPO with chunk GAE, or GRPO from identical
//! snapshots), training its head, low-rank adapters or everything
//! (`[finetune]`, `learn/finetune.rs`).
//!
//! The run evaluates the policy it starts from and the one it ends with on
//! the same held-out starts, playing chunks as it trains
//! (`finetune.execute`), and saves a checkpoint that holds what it trained
//! (the head, or the adapters, with log σ and the critic) on the base it
//! names by weights hash; `eval --checkpoint NEW` loads it on its own.

use super::print_json;
use super::train::{TrainArgs, all_rolled_back, parent_run, same_dir, source_commit, steps_bar};
use super::train_vla::peak_memory_mib;
use crate::learn::TrainConfig;
use crate::learn::eval::{self, EvalReport};
use crate::learn::finetune::{self, FinetuneConfig};
use crate::learn::trainer::{Trainer, make_envs};
use crate::report::{self, RunFiles};
use cerebellum_policies::TrainablePolicy;
use cerebellum_policies::checkpoint::{ParentRun, TrainingProvenance};
use cerebellum_policies::vla::VlaPolicy;
use cerebellum_policies::vla::checkpoint::{BaseWeights, save_on};
use cerebellum_sim::{ArmModel, EnvConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `policy` on the run's held-out starts, chunks played as in training.
fn evaluate(
    policy: &mut VlaPolicy,
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
    config: &TrainConfig,
    execute: usize,
) -> anyhow::Result<EvalReport> {
    let episodes = config.eval_episodes;
    let envs = make_envs(env_config, model, config.envs.min(episodes).max(1))?;
    eval::evaluate_with(
        policy,
        envs,
        episodes,
        config.seed,
        config.threads,
        false,
        execute,
    )
}

/// The trainer state, then the checkpoint (as `train` saves them).
fn save(
    trainer: &Trainer<VlaPolicy>,
    out: &Path,
    parent: &ParentRun,
    base: &BaseWeights,
) -> anyhow::Result<()> {
    trainer.state.save(out)?;
    let provenance = TrainingProvenance {
        config: serde_json::to_value(&trainer.config)?,
        seed: trainer.config.seed,
        env_steps: trainer.state.env_steps,
        updates: trainer.state.iteration,
        source_commit: source_commit(),
        parent: Some(parent.clone()),
    };
    save_on(out, &trainer.policy, provenance, Some(base.clone()))?;
    Ok(())
}

pub fn run(
    args: &TrainArgs,
    config: TrainConfig,
    out: PathBuf,
    from: PathBuf,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !same_dir(&from, &out),
        "--resume {} with --policy vla fine-tunes it into a run of its own: give --out NEW (continuing a fine-tune in place is not supported)",
        from.display()
    );
    anyhow::ensure!(
        config.bc.data.is_empty(),
        "--init-bc with --policy vla is not supported: the VLA was cloned by its own run"
    );
    let settings: FinetuneConfig = config.finetune_settings();
    let (env_config, model) = config.load_env(false)?;
    let mut loaded = None;
    let mut trainer =
        Trainer::with_policy(config.clone(), &env_config, model.clone(), |spec, c| {
            let (policy, contract, base) = finetune::prepare(&from, spec, &settings, c.seed)?;
            loaded = Some((contract, base));
            Ok(policy)
        })?;
    let (contract, base) = loaded.expect("the trainer made its policy");
    // Sized before anything trains: refused now, not killed later.
    let memory = finetune::estimate(
        trainer.policy.config(),
        settings.train,
        trainer.max_steps_per_iteration() as usize,
        settings.execute,
        config.ppo.minibatch_size,
        finetune::resident_mib().unwrap_or(0.0),
    );
    finetune::check_fits(&memory, settings.memory_budget_mib).map_err(anyhow::Error::msg)?;
    let parent = parent_run(&from, &contract);
    let trained_parameters: usize = trainer
        .policy
        .parameter_groups()
        .iter()
        .map(|g| g.len)
        .sum();
    trainer.collector.set_chunk_execution(settings.execute);
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    crate::recorder::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
    let mut files = RunFiles::open(&out, false)?;

    let started = Instant::now();
    let before = if config.eval_episodes > 0 {
        Some(evaluate(
            &mut trainer.policy,
            &env_config,
            model.clone(),
            &config,
            settings.execute,
        )?)
    } else {
        None
    };
    let total = trainer.total_iterations() * trainer.steps_per_iteration();
    let bar = steps_bar(total, args.json);
    if let Some(b) = &before {
        bar.println(format!(
            "fine-tuning `{}` ({trained_parameters} of {} parameters) from {}: held-out success {:.1}% before",
            settings.train.name(),
            trainer.policy.param_count(),
            from.display(),
            100.0 * b.success_rate
        ));
    }
    let train_started = Instant::now();
    let (mut collect_seconds, mut update_seconds) = (0.0, 0.0);
    let (mut updates_run, mut updates_rolled_back) = (0u64, 0u64);
    let mut last_success = None;
    while !trainer.done() {
        let report = trainer.iterate()?;
        files.write(&report)?;
        collect_seconds += report.collect_seconds;
        update_seconds += report.update_seconds;
        updates_run += 1;
        updates_rolled_back += u64::from(report.update.rolled_back);
        last_success = report.success_rate.or(last_success);
        bar.set_position(report.env_steps);
        bar.set_message(format!(
            "train success {:>5.1}%  collect {:.1} s  update {:.1} s",
            100.0 * last_success.unwrap_or(0.0),
            report.collect_seconds,
            report.update_seconds
        ));
        if report.iteration % 10 == 0 || trainer.done() {
            save(&trainer, &out, &parent, &base)?;
        }
    }
    save(&trainer, &out, &parent, &base)?;
    bar.finish_and_clear();
    let train_seconds = train_started.elapsed().as_secs_f64();
    let curve = report::read_curve(&out.join("metrics.csv"))?;
    if !curve.is_empty() {
        report::plot_learning_curve(
            &curve,
            &format!(
                "{} · vla {} · {} · seed {}",
                config.task,
                settings.train.name(),
                config.algo,
                config.seed
            ),
            &out.join("learning_curve.png"),
        )?;
    }
    let after = if config.eval_episodes > 0 {
        Some(evaluate(
            &mut trainer.policy,
            &env_config,
            model,
            &config,
            settings.execute,
        )?)
    } else {
        None
    };
    let env_steps = trainer.state.env_steps;
    println!(
        "fine-tuned `{}` with {:?} for {env_steps} env steps ({} updates) in {train_seconds:.0} s → {}",
        settings.train.name(),
        config.algo,
        trainer.state.iteration,
        out.display()
    );
    if let (Some(b), Some(a)) = (&before, &after) {
        println!(
            "held-out success ({} episodes, chunks of {} played): {:.1}% before → {:.1}% after",
            a.episodes,
            settings.execute,
            100.0 * b.success_rate,
            100.0 * a.success_rate
        );
    }
    let failure = all_rolled_back(updates_run, updates_rolled_back);
    if let Some(failure) = &failure {
        println!("{failure}");
    }
    if args.json {
        let colors = cerebellum_sim::tasks::color_names();
        let mut report = json!({
            "command": "train",
            "ok": failure.is_none(),
            "error": failure,
            "task": config.task,
            "policy": "vla",
            "algo": config.algo,
            "finetune": settings,
            "seed": config.seed,
            "out": out,
            "parent": parent,
            "parameters": trainer.policy.param_count(),
            "trained_parameters": trained_parameters,
            "env_steps": env_steps,
            "updates": trainer.state.iteration,
            "updates_rolled_back": updates_rolled_back,
            "final_train_success_rate": last_success,
            "success_rate_before": before.as_ref().map(|e| e.success_rate),
            "success_rate": after.as_ref().map(|e| e.success_rate),
            "success_by_color": after.as_ref().map(|e| e.success_by_color(&colors)),
            "mean_return_before": before.as_ref().map(|e| e.mean_return),
            "mean_return": after.as_ref().map(|e| e.mean_return),
            "eval_episodes": after.as_ref().map(|e| e.episodes),
            "memory_estimate": memory,
        });
        if args.timings {
            report["timings"] = json!({
                "total_seconds": started.elapsed().as_secs_f64(),
                "train_seconds": train_seconds,
                "collect_seconds": collect_seconds,
                "update_seconds": update_seconds,
                "env_steps_per_second": env_steps as f64 / train_seconds,
                "collect_steps_per_second": env_steps as f64 / collect_seconds.max(1e-9),
                "peak_memory_mib": peak_memory_mib(),
            });
        }
        print_json(&report);
    }
    match failure {
        None => Ok(()),
        Some(failure) => Err(super::Reported(failure).into()),
    }
}
