//! `cerebellum train --policy vla`: the vision-language-action policy,
//! cloned from the scripted expert's demonstrations, which the run records
//! itself (DART noise), evaluated on held-out starts as it goes, then on
//! held-out starts and held-out phrasings at the end.

use super::print_json;
use super::train::{TrainArgs, source_commit};
use crate::learn::TrainConfig;
use crate::learn::eval::{self, EvalReport};
use crate::learn::trainer::make_envs;
use crate::learn::vla::{
    AuxScale, Cloning, encode_demonstrations, record_demonstrations, record_on_policy,
};
use cerebellum_core::Robot;
use cerebellum_policies::TrainablePolicy;
use cerebellum_policies::checkpoint::TrainingProvenance;
use cerebellum_policies::vla::{InstructionTokenizer, VlaPolicy};
use cerebellum_sim::{ArmModel, EnvConfig, InstructionSet};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Evaluations during training use starts of their own (neither the
/// demonstrations' nor the final held-out evaluation's).
const VALIDATION: u64 = 0x7A11_DA7E;

/// The process's peak resident memory (MiB), where the OS says.
pub(crate) fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `policy` on `episodes` held-out starts of `env_config` (deterministic).
pub(crate) fn evaluate_vla(
    policy: &mut VlaPolicy,
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
    config: &TrainConfig,
    episodes: usize,
    seed: u64,
) -> anyhow::Result<EvalReport> {
    let envs = make_envs(env_config, model, config.envs.min(episodes).max(1))?;
    eval::evaluate(policy, envs, episodes, seed, config.threads)
}

struct Metrics {
    file: std::fs::File,
}

impl Metrics {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("metrics.csv");
        let mut file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        writeln!(
            file,
            "step,samples,imitation_loss,aux_loss,grad_norm,learning_rate,validation_success"
        )?;
        Ok(Self { file })
    }

    fn row(
        &mut self,
        step: usize,
        samples: usize,
        losses: &crate::learn::vla::CloningLosses,
        learning_rate: f64,
        success: Option<f64>,
    ) -> anyhow::Result<()> {
        writeln!(
            self.file,
            "{step},{samples},{:.6},{:.6},{:.4},{learning_rate:.3e},{}",
            losses.imitation,
            losses.aux,
            losses.grad_norm,
            success.map_or(String::new(), |s| format!("{s:.4}"))
        )?;
        Ok(())
    }
}

pub fn run(args: &TrainArgs, config: TrainConfig, out: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.resume.is_none(),
        "--resume with --policy vla is not supported yet: a VLA run trains from demonstrations in one go"
    );
    anyhow::ensure!(
        config.bc.data.is_empty(),
        "--init-bc with --policy vla is not supported yet: the VLA records its own demonstrations"
    );
    let settings = config.vla_settings();
    let (env_config, model) = config.load_env(false)?;
    let mut env = make_envs(&env_config, model.clone(), 1)?.remove(0);
    let spec = env.spec().clone();
    let mut policy = VlaPolicy::new(
        &spec,
        settings.model.clone(),
        InstructionTokenizer::shipped(),
        config.seed,
        &cerebellum_policies::device::device(cerebellum_policies::device::DeviceKind::Cpu)
            .map_err(anyhow::Error::msg)?,
    )
    .map_err(|e| anyhow::anyhow!("--policy vla on {}: {e}", config.task))?;
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    crate::recorder::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
    let started = Instant::now();
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(settings.expert_episodes as u64)
    };
    let style = |unit: &str| {
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> ")
    };
    bar.set_style(style("demonstrations"));
    bar.set_message("the scripted expert demonstrates (DART noise)");
    let demos = record_demonstrations(
        &mut env,
        settings.expert_episodes,
        settings.expert_noise,
        config.seed,
        |n| bar.set_position(n as u64),
    )?;
    let demo_seconds = started.elapsed().as_secs_f64();
    // Ticks of data the policy is trained on (the kept demonstrations,
    // then DAgger's): the contract's `env_steps`.
    let mut env_steps = demos.observations.len() as u64;
    let demonstrations = json!({
        "episodes": demos.episodes,
        "successful": demos.successful,
        "ticks": demos.observations.len(),
    });
    let states: Vec<f32> = demos
        .observations
        .iter()
        .flat_map(|o| o.state.iter().copied())
        .collect();
    policy.set_statistics(&states);
    let data = encode_demonstrations(&policy, &demos)?;
    let scale = AuxScale::of(&demos.aux);
    let aux = scale.standardise(&demos.aux);
    drop(demos);
    let mut cloning = Cloning::new(&policy, data, aux, &settings, config.seed);
    let mut metrics = Metrics::create(&out)?;
    let total_steps = settings.total_steps();
    bar.set_length(total_steps as u64);
    bar.set_position(0);
    bar.set_style(style("steps"));
    let provenance = |step: usize, env_steps: u64| -> anyhow::Result<TrainingProvenance> {
        Ok(TrainingProvenance {
            config: serde_json::to_value(&config)?,
            seed: config.seed,
            env_steps,
            updates: step as u64,
            source_commit: source_commit(),
            parent: None,
        })
    };
    let train_started = Instant::now();
    let mut curve_loss = Vec::new();
    let mut curve_success = Vec::new();
    let mut last = Default::default();
    let mut phase_end = settings.steps;
    let mut rounds = Vec::new();
    while cloning.step < total_steps {
        if cloning.step == phase_end {
            // A DAgger round: the policy drives, the expert labels.
            let round = rounds.len();
            bar.set_message(format!(
                "DAgger round {}: the policy drives, the expert labels",
                round + 1
            ));
            let mut envs = make_envs(
                &env_config,
                model.clone(),
                config.envs.min(settings.dagger_episodes).max(1),
            )?;
            let visited = record_on_policy(
                &mut envs,
                &mut policy,
                settings.dagger_episodes,
                config.seed,
                round,
            )?;
            rounds.push(json!({
                "round": round + 1,
                "episodes": visited.episodes,
                "policy_successes": visited.successful,
                "ticks": visited.observations.len(),
            }));
            env_steps += visited.observations.len() as u64;
            let data = encode_demonstrations(&policy, &visited)?;
            cloning.add(data, scale.standardise(&visited.aux))?;
            phase_end += settings.dagger_steps;
        }
        let n = settings.eval_every.min(phase_end - cloning.step);
        let learning_rate = settings.learning_rate_at(cloning.step);
        last = cloning.steps(&mut policy, &settings, n)?;
        let step = cloning.step;
        let success = if settings.eval_episodes > 0 {
            bar.set_message("evaluating");
            let report = evaluate_vla(
                &mut policy,
                &env_config,
                model.clone(),
                &config,
                settings.eval_episodes,
                config.seed ^ VALIDATION,
            )?;
            curve_success.push((step as f64, report.success_rate));
            Some(report.success_rate)
        } else {
            None
        };
        curve_loss.push((step as f64, last.imitation));
        metrics.row(
            step,
            step * settings.batch_size,
            &last,
            learning_rate,
            success,
        )?;
        policy.save(&out, provenance(step, env_steps)?)?;
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {:.4}  aux {:.4}{}",
            last.imitation,
            last.aux,
            success.map_or(String::new(), |s| format!(
                "  validation success {:.0}%",
                100.0 * s
            ))
        ));
    }
    bar.finish_and_clear();
    let train_seconds = train_started.elapsed().as_secs_f64();
    crate::report::plot_two_curves(
        &format!("{} · vla · seed {}", config.task, config.seed),
        "gradient steps",
        crate::report::Curve {
            label: "imitation loss",
            points: &curve_loss,
            range: None,
        },
        crate::report::Curve {
            label: "validation success",
            points: &curve_success,
            range: Some((0.0, 1.0)),
        },
        &out.join("learning_curve.png"),
    )?;
    let mut evaluation = None;
    let mut heldout_phrasings = None;
    if config.eval_episodes > 0 {
        evaluation = Some(evaluate_vla(
            &mut policy,
            &env_config,
            model.clone(),
            &config,
            config.eval_episodes,
            config.seed,
        )?);
        if config.task_kind().is_color() {
            let mut held_out = env_config.clone();
            held_out.instructions = InstructionSet::HeldOut;
            heldout_phrasings = Some(evaluate_vla(
                &mut policy,
                &held_out,
                model,
                &config,
                config.eval_episodes,
                config.seed,
            )?);
        }
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let colors = cerebellum_sim::tasks::color_names();
    println!(
        "trained the VLA ({} parameters) on {} for {} steps of {} in {:.0} s (demonstrations {:.0} s) → {}",
        policy.param_count(),
        config.task,
        total_steps,
        settings.batch_size,
        total_seconds,
        demo_seconds,
        out.display()
    );
    if let Some(e) = &evaluation {
        println!(
            "held-out evaluation: {} episodes, success rate {:.1}% (by colour: {})",
            e.episodes,
            100.0 * e.success_rate,
            e.success_by_color(&colors)
                .iter()
                .map(|(c, s)| format!("{c} {:.0}%", 100.0 * s))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(e) = &heldout_phrasings {
        println!(
            "held-out phrasings: {} episodes, success rate {:.1}%",
            e.episodes,
            100.0 * e.success_rate
        );
    }
    if args.json {
        let mut report = json!({
            "command": "train",
            "ok": true,
            "task": config.task,
            "policy": "vla",
            "seed": config.seed,
            "out": out,
            "parameters": policy.param_count(),
            "demonstrations": demonstrations,
            "steps": total_steps,
            "dagger_rounds": rounds,
            "batch_size": settings.batch_size,
            "final_imitation_loss": last.imitation,
            "final_aux_loss": last.aux,
            "success_rate": evaluation.as_ref().map(|e| e.success_rate),
            "success_by_color": evaluation.as_ref().map(|e| e.success_by_color(&colors)),
            "mean_return": evaluation.as_ref().map(|e| e.mean_return),
            "eval_episodes": evaluation.as_ref().map(|e| e.episodes),
            "success_rate_heldout_phrasings": heldout_phrasings.as_ref().map(|e| e.success_rate),
            "unknown_words": policy.unknown_words,
        });
        if args.timings {
            report["timings"] = json!({
                "total_seconds": total_seconds,
                "demonstration_seconds": demo_seconds,
                "train_seconds": train_seconds,
                "samples_per_second": (total_steps * settings.batch_size) as f64 / train_seconds,
                "peak_memory_mib": peak_memory_mib(),
            });
        }
        print_json(&report);
    }
    Ok(())
}
