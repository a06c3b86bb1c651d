//! `cerebellum train`: the main job. Trains a policy in the simulation,
//! writes the run directory, and evaluates the result on held-out starts.

use super::{RobotSourceArgs, parse_task, print_json};
use crate::learn::eval::{self, EvalReport};
use crate::learn::trainer::{TrainerState, make_envs};
use crate::learn::{Algo, TrainConfig, Trainer};
use crate::report::{self, RunFiles};
use cerebellum_core::Robot;
use cerebellum_policies::checkpoint::{self, ParentRun, TrainingProvenance};
use cerebellum_policies::{GaussianMlpPolicy, TrainablePolicy};
use cerebellum_sim::{ArmModel, EnvConfig, TaskKind};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Train a policy with PPO (or the critic-free GRPO family, --algo) in the
/// simulation.
///
/// With no arguments: PPO teaches the SO-101 arm to reach targets, then the
/// policy is evaluated on 100 held-out targets. The run directory (--out)
/// gets:
///   config.toml          everything needed to repeat the run
///   metrics.csv          learning figures per iteration (same seed → same file)
///   timing.csv           wall-clock figures per iteration
///   learning_curve.png   return and success rate against env steps
///   checkpoint.safetensors + contract.json   the policy and its contract
///   trainer_state.json   optimiser and counters, for --resume (saved before
///                        the checkpoint; trainer_state.previous.json keeps the
///                        one before, so a run stopped between them resumes)
///
/// Settings come from the task's defaults, then --config FILE.toml, then the
/// flags; with --resume RUN, from RUN/config.toml, then the keys of
/// --config overlaid on it, then the flags. Examples:
///
///   cerebellum train
///   cerebellum train --task pendulum --seed 1 --out runs/pendulum1
///   cerebellum train --algo grpo --group 8 --steps 100000
///   cerebellum train --algo mc-grpo --group 2 --clip-high 0.28
///   cerebellum eval --checkpoint runs/reach-s0 --episodes 100
///
/// The vision-language-action policy (camera + instruction + joints → a
/// chunk of actions; docs/vla.md) records its own expert demonstrations and
/// clones them (`[vla]` config table); metrics.csv and learning_curve.png
/// then hold the cloning loss and the validation success per step:
///
///   cerebellum train --task reach-color --policy vla
///
/// Fine-tune a cloned VLA with RL (PPO or GRPO; `[finetune] train = "head"
/// | "lora" | "all"`, docs/vla.md): NEW holds what was trained on the base
/// it names by weights hash, and is evaluated before and after:
///
///   cerebellum train --resume runs/reach-color-s0 --out runs/reach-color-rl \
///       --config bench/vla-finetune/lora-grpo.toml
///
/// Continue a run in place, or fork it into a run of its own (RUN is only
/// read; NEW names RUN and its weights hash in its provenance):
///
///   cerebellum train --resume runs/reach-s0 --steps 100000
///   cerebellum train --resume runs/reach-s0 --out runs/reach-s0-lowlr \
///       --config lowlr.toml --steps 50000
///
/// On the board (--online): the control loop drives the robot at its rate
/// with the checkpoint's policy while a learner thread fine-tunes it and
/// publishes new weights the loop picks up between ticks (docs/online.md):
///
///   cerebellum train --online --resume runs/reach-s0 --duration 1200 \
///       --env-config bench/reach-unseen-dr.toml
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    /// reach, lift or pendulum (default: the config file's, else reach).
    #[arg(long, value_parser = parse_task)]
    pub task: Option<TaskKind>,
    /// TOML file with any subset of the settings (`config.toml` of an
    /// earlier run is one); unknown keys are errors, named. With --resume
    /// its keys are overlaid on the resumed run's config.toml: a key given
    /// replaces that key, tables merge key by key (`[ppo] learning_rate =
    /// 1e-4` changes that rate and keeps the rest of [ppo]), every key left
    /// out keeps the resumed value.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated robots stepped as one batch.
    #[arg(long, value_name = "N")]
    pub envs: Option<usize>,
    /// Simulation threads (results do not depend on it).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Environment steps this run makes (rounded up to whole iterations).
    /// A fresh run or a fork (--resume RUN --out NEW) trains N steps;
    /// --resume continuing a run in place trains N more than it has done.
    /// Without it: the config's total_steps, which count the steps of the
    /// run in that directory (from its start, or from the fork), so an
    /// interrupted run resumed in place without --steps ends where it
    /// would have.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// The learner: ppo (GAE and a critic) or one of the critic-free GRPO
    /// family, each an advantage estimator in front of the same clipped
    /// loss (docs/learning.md, "Which learner"):
    ///   grpo        (r − group mean) / group std, G rollouts per start
    ///   dr-grpo     r − group mean, no std; every action weighs the same
    ///   rloo        r − the mean of the group's other rollouts
    ///   mc-grpo     G + 1 rollouts, median baseline, MAD scale; the median
    ///               rollout out of the loss (small groups: --group 2)
    ///   spo         one rollout per start from a pool of 256 recurring
    ///               starts, each start's tracked return the baseline
    ///   gdpo        each reward component normalised in its group first
    ///   stratified  grpo within nuisance strata (intervened, clamped, …)
    ///   remax       G sampled + 1 mean-action rollout, the baseline
    /// `envs` is rounded up to whole starts (G, or G + 1), and the run
    /// says so.
    #[arg(long, value_parser = parse_algo, verbatim_doc_comment)]
    pub algo: Option<Algo>,
    /// DAPO's clip-higher: the ratio's upper clip is 1 + this (0.28 in the
    /// paper) while the lower stays 1 − ppo.clip (0.2); any --algo.
    #[arg(long, value_name = "EPS")]
    pub clip_high: Option<f32>,
    /// DAPO's dynamic sampling: a start whose rollouts all returned the
    /// same carries no gradient; it is discarded and more starts are
    /// collected (at most estimator.max_resample_rounds more collections
    /// per update; metrics.csv counts both). Any --algo with groups (not
    /// ppo or spo, which are refused with it).
    #[arg(long)]
    pub dynamic_sampling: bool,
    /// mlp (the state MLP, trained by --algo) or vla (the
    /// vision-language-action policy: camera, instruction and joints in,
    /// a chunk of actions out; cloned from demonstrations it records with
    /// the scripted expert; its settings are the config's [vla] table).
    /// Needs a task with a camera and instructions: reach-color,
    /// lift-color.
    ///
    ///   cerebellum train --task reach-color --policy vla
    #[arg(long, value_name = "KIND")]
    pub policy: Option<crate::learn::config::PolicyKind>,
    /// Sampled rollouts per start (G) for the GRPO family, all from one
    /// simulator snapshot (mc-grpo and remax run one more).
    #[arg(long, value_name = "G")]
    pub group: Option<usize>,
    /// Held-out evaluation episodes at the end (0 skips it).
    #[arg(long, value_name = "N")]
    pub eval_episodes: Option<usize>,
    /// The run directory [default: runs/<task>-s<seed>; with --resume DIR,
    /// DIR]. One that already holds a run is refused (nothing of it is
    /// overwritten) unless --resume continues it in place. --resume RUN
    /// --out NEW forks RUN into NEW.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Start from a run's checkpoint, trainer state (optimiser, counters)
    /// and config.toml: the run in DIR (default: --out). Without --out (or
    /// with --out DIR) the run continues in place, appending to its
    /// metrics.csv and timing.csv (--steps N: N steps more). With --out NEW,
    /// another directory, it forks: NEW gets a run of its own, with its own
    /// config.toml (DIR's, --config keys overlaid), a fresh metrics.csv and
    /// timing.csv holding only its own rows, its checkpoint, trainer state,
    /// learning curve and held-out evaluation; DIR is only read. The fork's
    /// iterations and env steps go on from DIR's counters (its first row is
    /// DIR's last update + 1), --steps counts its own steps (default: the
    /// config's total_steps), the learning rate anneals from the configured
    /// one over them (ppo.anneal_lr), and its contract names the parent
    /// (path, weights hash, counters). A NEW that already holds a run is
    /// refused. With --online, DIR is the checkpoint to fine-tune.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Fine-tune through the real-time control loop instead of the batched
    /// simulation: the robot runs at its control rate while a learner
    /// thread updates the policy beside it (needs --resume DIR; the result
    /// goes to --out, default DIR-online). See --duration, --clock.
    #[arg(long)]
    pub online: bool,
    /// --online: seconds to run (wall time, or simulated time with
    /// --clock sim).
    #[arg(long, default_value_t = 1200.0)]
    pub duration: f64,
    /// --online: `wall` holds the robot's rate (the on-board mode); `sim`
    /// runs as fast as the CPU allows, learner in lockstep, deterministic.
    /// A robot on its own clock (real firmware, `serve-sim` without
    /// `--lockstep`) runs only under `wall`.
    #[arg(long, value_enum, default_value_t = OnlineClock::Wall)]
    pub clock: OnlineClock,
    #[command(flatten)]
    pub envelope: crate::robots::EnvelopeArgs,
    /// Train on learned rewards instead of the simulator's: a comma-separated
    /// list of `progress:DIR` (a progress model as a potential: γΦ(s′) − Φ(s);
    /// repeat it for an ensemble), `success:DIR` (success classifier: +1 and
    /// the episode's end when it fires on k consecutive frames) and
    /// `intervention` (−1 at an operator's takeover, −1 at an e-stop). The
    /// simulator's reward is then only logged (return, success rate).
    /// Models are checked against the robot's spec and instruction at load.
    /// The `[reward]` table of --config tunes them: `progress_shaping =
    /// "potential" | "delta" | "level"`, `aggregate` (ensembles), `success_threshold`,
    /// `success_frames`, `success_ends_episode`, `success_lag_ticks`
    /// (docs/rewards.md). metrics.csv logs the learned potential against
    /// the simulator's reward, to catch a policy gaming the model.
    /// Example: --reward progress:models/reach-p,success:models/reach-s
    #[arg(long, value_name = "SOURCES")]
    pub reward: Option<String>,
    /// Behaviour-clone the policy on recorded episodes before RL, instead
    /// of the scripted expert: every tick of successful episodes without
    /// an operator (`cerebellum record --expert`), and the ticks an
    /// operator was in control (`run --record` with teleop). Repeat it to
    /// pool recordings.
    #[arg(long = "init-bc", value_name = "DATA")]
    pub init_bc: Vec<PathBuf>,
    /// RA-BC: weight each cloned tick by the progress this model sees its
    /// next `bc.ra_bc_horizon` ticks make (undoing progress → 0). Default:
    /// the first `--reward progress:` model, if any.
    #[arg(long, value_name = "DIR")]
    pub init_bc_progress: Option<PathBuf>,
    #[command(flatten)]
    pub robot: RobotSourceArgs,
    /// --online: the robot to fine-tune on: `sim` (in process, the
    /// default) or `zenoh:tcp/HOST:PORT[/ROBOT]`. Repeat it for a fleet:
    /// one control loop per robot, all feeding one learner, every
    /// transition stamped with its robot id. A zenoh robot implies
    /// --online.
    #[arg(long = "robot", value_name = "ROBOT")]
    pub robots: Vec<crate::robots::RobotChoice>,
    #[command(flatten)]
    pub zenoh: crate::robots::ZenohArgs,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Include wall-clock figures in the JSON (they differ between runs).
    #[arg(long)]
    pub timings: bool,
}

/// The loop's clock under `--online` (the one every robot command uses).
pub use crate::robots::ClockMode as OnlineClock;

impl TrainArgs {
    /// Fine-tuning through the loop: `--online`, or implied by a robot
    /// over zenoh.
    pub(super) fn is_online(&self) -> bool {
        self.online
            || self
                .robots
                .iter()
                .any(|r| r != &crate::robots::RobotChoice::Sim)
    }

    /// The run --resume names: its directory, else --out.
    pub(super) fn resume_dir(&self) -> Option<anyhow::Result<PathBuf>> {
        let dir = self.resume.as_ref()?;
        Some(dir.clone().or_else(|| self.out.clone()).ok_or_else(|| {
            anyhow::anyhow!("--resume needs a directory (--resume DIR or --out DIR)")
        }))
    }
}

fn parse_algo(s: &str) -> Result<Algo, String> {
    s.parse()
}

pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    crate::recorder::read_text_file(path)
}

pub(super) fn resolve_config(args: &TrainArgs) -> anyhow::Result<(TrainConfig, PathBuf)> {
    let resume = args.resume_dir().transpose()?;
    let text = match (&args.config, &resume) {
        // A checkpoint directory without a config.toml (not written by
        // `train`): the file alone, over the defaults, as without --resume.
        (Some(path), Some(dir)) if !dir.join("config.toml").exists() => Some(read(path)?),
        (Some(path), Some(dir)) => {
            let base = dir.join("config.toml");
            Some(overlay_config(
                (&base, &read(&base)?),
                (path, &read(path)?),
            )?)
        }
        (Some(path), None) => Some(read(path)?),
        (None, Some(dir)) => Some(read(&dir.join("config.toml"))?),
        (None, None) => None,
    };
    let mut config =
        TrainConfig::from_toml(args.task, text.as_deref()).map_err(anyhow::Error::msg)?;
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = args.$field.clone() {
                config.$field = v;
            }
        };
    }
    set!(seed);
    set!(envs);
    set!(threads);
    set!(algo);
    set!(group);
    set!(eval_episodes);
    if let Some(kind) = args.policy {
        config.policy_kind = kind;
    }
    if config.policy_kind == crate::learn::config::PolicyKind::Vla && config.vla.is_none() {
        config.vla = Some(Default::default());
    }
    // This run's steps; an in-place resume turns them into the run's new
    // total once it knows where the run stands (`run`).
    if let Some(steps) = args.steps {
        config.total_steps = steps;
    }
    if let Some(sources) = &args.reward {
        apply_reward_sources(&mut config, sources)?;
    }
    if !args.init_bc.is_empty() {
        config.bc.data = args.init_bc.clone();
        config.bc.expert_episodes = 0;
        config.bc.ra_bc_progress = args
            .init_bc_progress
            .clone()
            .or_else(|| config.reward.progress.first().cloned());
    }
    if let Some(high) = args.clip_high {
        config.ppo.clip_high = Some(high);
    }
    if args.dynamic_sampling {
        config.estimator.dynamic_sampling = true;
    }
    args.robot.overlay(&mut config.robot);
    config.validate().map_err(anyhow::Error::msg)?;
    // Online, the loop runs the starts one after the other: the envs of a
    // simulated batch do not matter there.
    if let Some(note) = config.round_envs_to_starts()
        && !args.is_online()
    {
        eprintln!("note: {note}");
    }
    config.check_for_algo().map_err(anyhow::Error::msg)?;
    let out = match (&args.out, &resume) {
        (Some(out), _) => out.clone(),
        (None, Some(dir)) if args.is_online() => {
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push("-online");
            dir.with_file_name(name)
        }
        (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from(format!("runs/{}-s{}", config.task, config.seed)),
    };
    // Only an offline --resume into the run's own directory continues it
    // there; anything else (a fresh run, a fork, a fine-tuning) starts a
    // new run in --out, which must not overwrite an old one.
    match &resume {
        Some(dir) if !args.is_online() && same_dir(dir, &out) => {}
        Some(_) if args.is_online() => crate::learn::trainer::check_new_run_dir(&out, true)?,
        Some(_) => crate::learn::trainer::check_new_run_dir(&out, true).map_err(|e| {
            anyhow::anyhow!(
                "{e}; `--resume {}` alone would continue that run in place",
                out.display()
            )
        })?,
        None => crate::learn::trainer::check_new_run_dir(&out, false)?,
    }
    Ok((config, out))
}

/// The config a resumed run trains with: the keys of `top` (a `--config`
/// file) overlaid onto `base` (the resumed run's `config.toml`): a key of
/// `top` replaces that key, tables merge key by key (`reward_weights`
/// excepted: it is replaced whole), every key `top` leaves out keeps the
/// resumed value. Each is `(path, text)`; an error names the file that is
/// not TOML. Unknown keys are left for `TrainConfig::from_toml` to refuse.
fn overlay_config(base: (&Path, &str), top: (&Path, &str)) -> anyhow::Result<String> {
    let parse = |(path, text): (&Path, &str)| -> anyhow::Result<toml::Table> {
        text.parse().map_err(|e: toml::de::Error| {
            let e = crate::learn::config::one_line(&e);
            anyhow::anyhow!("{} is not valid TOML: {e}", path.display())
        })
    };
    let mut merged = parse(base)?;
    crate::learn::config::merge(&mut merged, parse(top)?);
    Ok(toml::to_string(&merged)?)
}

/// Whether `a` and `b` name one directory (literally, or once resolved).
pub(super) fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        )
}

/// The parent a run forked from `dir` (whose checkpoint has `contract`)
/// names in its provenance.
pub(super) fn parent_run(dir: &Path, contract: &checkpoint::Contract) -> ParentRun {
    ParentRun {
        path: dir.display().to_string(),
        canonical_path: dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string(),
        weights_sha256: contract.weights_sha256.clone(),
        updates: contract.provenance.updates,
        env_steps: contract.provenance.env_steps,
    }
}

/// `--reward progress:DIR,success:DIR,intervention`: the learned models to
/// load and the reward components to train on, replacing the simulator's.
pub(super) fn apply_reward_sources(config: &mut TrainConfig, sources: &str) -> anyhow::Result<()> {
    use cerebellum_core::RewardComponents;
    use cerebellum_reward_models::labeller::{LEARNED_SUCCESS, PROGRESS};
    config.reward.progress.clear();
    config.reward.success = None;
    let mut weights = std::collections::BTreeMap::new();
    for source in sources.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match source.split_once(':') {
            Some(("progress", dir)) => {
                config.reward.progress.push(PathBuf::from(dir));
                weights.insert(PROGRESS.to_owned(), 1.0);
            }
            Some(("success", dir)) => {
                anyhow::ensure!(
                    config.reward.success.is_none(),
                    "--reward: one success classifier at most"
                );
                config.reward.success = Some(PathBuf::from(dir));
                weights.insert(LEARNED_SUCCESS.to_owned(), 1.0);
            }
            None if source == "intervention" => {
                weights.insert(RewardComponents::INTERVENTION.to_owned(), 1.0);
                weights.insert(RewardComponents::ESTOP.to_owned(), 1.0);
            }
            _ => anyhow::bail!(
                "--reward: `{source}` is not progress:DIR, success:DIR or intervention"
            ),
        }
    }
    anyhow::ensure!(!weights.is_empty(), "--reward: name at least one source");
    config.reward_weights = weights;
    Ok(())
}

/// The commit the binary was built from (runtime/build.rs), not whatever
/// repository the run happens to start in.
pub(super) fn source_commit() -> Option<String> {
    let commit = env!("CEREBELLUM_GIT_COMMIT");
    (commit != "unknown").then(|| commit.to_owned())
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.is_online() {
        return super::train_online::run(&args);
    }
    let (config, out) = resolve_config(&args)?;
    if config.policy_kind == crate::learn::config::PolicyKind::Vla {
        return match args.resume_dir().transpose()? {
            Some(from) => super::finetune_vla::run(&args, config, out, from),
            None => super::train_vla::run(&args, config, out),
        };
    }
    // The run to start from: --resume's; a fork when it is not --out.
    let resume = args.resume_dir().transpose()?;
    let fork = resume.as_ref().is_some_and(|dir| !same_dir(dir, &out));
    let (env_config, model) = config.load_env(false)?;
    let mut trainer = Trainer::new(config.clone(), &env_config, model.clone())?;
    let mut parent = None;
    if let Some(from) = &resume {
        let (policy, contract) = <GaussianMlpPolicy as TrainablePolicy>::load(
            from,
            Some(
                trainer
                    .collector
                    .vec_env
                    .envs()
                    .next()
                    .expect("copies")
                    .spec(),
            ),
        )?;
        let saved = &contract.provenance;
        let state =
            TrainerState::load_for(from, saved.updates, saved.env_steps)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot resume {}: it has no {}",
                    from.display(),
                    crate::learn::trainer::STATE_FILE
                )
            })?;
        trainer.policy = policy;
        trainer.policy.freeze_statistics(false);
        trainer.state = state;
        if fork {
            // A run of its own, from the parent's weights and counters:
            // its total_steps count from here.
            parent = Some(parent_run(from, &contract));
            trainer.run_start_iteration = saved.updates;
        } else {
            // The run goes on: it keeps its parent, and its total_steps
            // still count from where it started.
            parent = saved.parent.clone();
            trainer.run_start_iteration = parent.as_ref().map_or(0, |p| p.updates);
            if let Some(steps) = args.steps {
                // --steps more than the run has done: its new total.
                let done = trainer
                    .state
                    .iteration
                    .saturating_sub(trainer.run_start_iteration);
                trainer.config.total_steps = done
                    .saturating_mul(trainer.steps_per_iteration())
                    .saturating_add(steps);
                trainer.config.validate().map_err(anyhow::Error::msg)?;
            }
        }
        tracing::info!(
            iteration = trainer.state.iteration,
            fork,
            from = %from.display(),
            "resumed"
        );
    }
    let config = trainer.config.clone();
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    crate::recorder::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
    // A fork's files hold its own rows only (they go on from the parent's
    // counters); an in-place resume continues the run's.
    let mut files = if resume.is_some() && !fork {
        RunFiles::resume(&out, trainer.state.iteration)?
    } else {
        RunFiles::open(&out, false)?
    };

    let remaining = trainer
        .total_iterations()
        .saturating_sub(trainer.state.iteration);
    let total = trainer
        .state
        .env_steps
        .saturating_add(remaining.saturating_mul(trainer.steps_per_iteration()));
    let bar = steps_bar(total, args.json);
    bar.set_position(trainer.state.env_steps);
    let started = Instant::now();
    let bc = if resume.is_some() {
        None
    } else {
        pretrain(&mut trainer, &env_config, model.clone(), &bar)?
    };
    let mut last_return = None;
    let mut last_success = None;
    let mut reward_version = None;
    let mut learned_successes = 0;
    let mut truth_pearson: (Option<f64>, Option<f64>) = (None, None);
    let (mut updates_run, mut updates_rolled_back) = (0u64, 0u64);
    let (mut discarded_starts, mut resample_rounds) = (0usize, 0usize);
    while !trainer.done() {
        let report = trainer.iterate()?;
        if let Some(p) = report.learned_truth_pearson {
            truth_pearson = (truth_pearson.0.or(Some(p)), Some(p));
        }
        reward_version = report.reward_version.or(reward_version);
        learned_successes += report.learned_successes;
        files.write(&report)?;
        updates_run += 1;
        updates_rolled_back += u64::from(report.update.rolled_back);
        discarded_starts += report.discarded_starts;
        resample_rounds += report.resample_rounds;
        if report.update.rolled_back {
            bar.println(format!(
                "iteration {}: non-finite loss, update rolled back to the last good weights",
                report.iteration
            ));
        }
        last_return = report.mean_return.or(last_return);
        last_success = report.success_rate.or(last_success);
        let seconds = report.collect_seconds + report.update_seconds;
        bar.set_position(report.env_steps);
        bar.set_message(format!(
            "return {:>8.2}  success {:>5.1}%  {:>6.0} steps/s",
            last_return.unwrap_or(f64::NAN),
            100.0 * last_success.unwrap_or(0.0),
            report.steps as f64 / seconds.max(1e-9)
        ));
        tracing::debug!(?report, "iteration");
        if report.iteration % 20 == 0 || trainer.done() {
            save(&trainer, &out, parent.as_ref())?;
        }
    }
    bar.finish_and_clear();
    let train_seconds = started.elapsed().as_secs_f64();
    save(&trainer, &out, parent.as_ref())?;
    let curve = report::read_curve(&out.join("metrics.csv"))?;
    if !curve.is_empty() {
        report::plot_learning_curve(
            &curve,
            &format!("{} · {} · seed {}", config.task, config.algo, config.seed),
            &out.join("learning_curve.png"),
        )?;
    }

    let evaluation: Option<EvalReport> = if config.eval_episodes > 0 {
        trainer.policy.freeze_statistics(true);
        Some(held_out_evaluation(&mut trainer, &env_config, model)?)
    } else {
        None
    };
    println!(
        "trained {} for {} env steps ({} updates) in {:.0} s → {}",
        config.task,
        trainer.state.env_steps,
        trainer.state.iteration,
        train_seconds,
        out.display()
    );
    if let Some(p) = parent.as_ref().filter(|_| fork) {
        println!(
            "forked from {} at update {} ({} env steps): this run made {} updates, {} env steps",
            p.path,
            p.updates,
            p.env_steps,
            trainer.state.iteration - p.updates,
            trainer.state.env_steps - p.env_steps
        );
    }
    if let Some(e) = &evaluation {
        println!(
            "held-out evaluation: {} episodes, success rate {:.1}%, mean return {:.3}",
            e.episodes,
            100.0 * e.success_rate,
            e.mean_return
        );
    }
    // A run in which every update was rolled back (a non-finite loss each
    // time) learned nothing: it says so and fails, whatever it saved.
    let failure = all_rolled_back(updates_run, updates_rolled_back);
    if let Some(failure) = &failure {
        println!("{failure}");
    }
    if args.json {
        let mut report = json!({
            "command": "train",
            "task": config.task,
            "algo": config.algo,
            "seed": config.seed,
            "env_steps": trainer.state.env_steps,
            "updates": trainer.state.iteration,
            "final_train_return": last_return,
            "final_train_success_rate": last_success,
            "out": out,
            "success_rate": evaluation.as_ref().map(|e| e.success_rate),
            "mean_return": evaluation.as_ref().map(|e| e.mean_return),
            "eval_episodes": evaluation.as_ref().map(|e| e.episodes),
            "bc": bc,
            "reward_components": config.reward_weights,
            "reward_version": reward_version,
            "learned_successes": learned_successes,
            "learned_truth_pearson_first": truth_pearson.0,
            "learned_truth_pearson_last": truth_pearson.1,
            "updates_rolled_back": updates_rolled_back,
            // The GRPO family: starts left out (a non-finite return, or
            // no spread under dynamic sampling) and extra collections.
            "discarded_starts": discarded_starts,
            "resample_rounds": resample_rounds,
            "parent": parent,
        });
        if args.timings {
            report["timings"] = json!({
                "train_seconds": train_seconds,
                "env_steps_per_second": trainer.state.env_steps as f64 / train_seconds,
            });
        }
        report["ok"] = json!(failure.is_none());
        report["error"] = json!(failure);
        print_json(&report);
    }
    match failure {
        None => Ok(()),
        Some(failure) => Err(super::Reported(failure).into()),
    }
}

/// A run in which every update was rolled back (a non-finite loss each
/// time) learned nothing: the failure it reports, if so.
pub(super) fn all_rolled_back(updates: u64, rolled_back: u64) -> Option<String> {
    (updates > 0 && rolled_back == updates).then(|| {
        format!(
            "every one of the {updates} updates this run made had a non-finite loss and was rolled back: the policy did not learn (lower the learning rate, or check the rewards)"
        )
    })
}

/// The progress bar of a training run over `total` env steps (hidden
/// under `--json`).
pub(super) fn steps_bar(total: u64, json: bool) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Behaviour cloning before RL when the config asks for it, and how well
/// the cloned policy does on its own (the bar RL has to beat).
fn pretrain(
    trainer: &mut Trainer,
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
    bar: &ProgressBar,
) -> anyhow::Result<Option<serde_json::Value>> {
    bar.set_message("behaviour cloning the scripted expert");
    let Some(report) = trainer.pretrain_from_expert(env_config, model.clone())? else {
        return Ok(None);
    };
    let config = &trainer.config;
    let mut bc = serde_json::to_value(&report)?;
    if config.eval_episodes > 0 {
        let e = held_out_evaluation(trainer, env_config, model)?;
        bar.suspend(|| println!(
            "behaviour cloning: {} demonstrated ticks, loss {:.4} → {:.4}; held-out success {:.1}% before RL",
            report.demonstrations["ticks"],
            report.initial_loss,
            report.final_loss,
            100.0 * e.success_rate
        ));
        bc["success_rate"] = json!(e.success_rate);
        bc["mean_return"] = json!(e.mean_return);
    }
    Ok(Some(bc))
}

/// The deterministic policy on the run's held-out starts.
pub(super) fn held_out_evaluation(
    trainer: &mut Trainer,
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
) -> anyhow::Result<EvalReport> {
    let config = &trainer.config;
    let envs = make_envs(env_config, model, config.envs.min(config.eval_episodes))?;
    eval::evaluate(
        &mut trainer.policy,
        envs,
        config.eval_episodes,
        config.seed,
        config.threads,
    )
}

/// The trainer state first, then the checkpoint it belongs to: a crash
/// between them leaves the previous state beside the previous checkpoint
/// (`TrainerState::save` keeps it), so the run resumes from either.
/// `parent`: the run this one forked from, if any.
fn save(trainer: &Trainer, out: &Path, parent: Option<&ParentRun>) -> anyhow::Result<()> {
    trainer.state.save(out)?;
    let provenance = TrainingProvenance {
        config: serde_json::to_value(&trainer.config)?,
        seed: trainer.config.seed,
        env_steps: trainer.state.env_steps,
        updates: trainer.state.iteration,
        source_commit: source_commit(),
        parent: parent.cloned(),
    };
    trainer.policy.save(out, provenance)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(base: &str, top: &str) -> anyhow::Result<String> {
        overlay_config(
            (Path::new("RUN/config.toml"), base),
            (Path::new("top.toml"), top),
        )
    }

    #[test]
    fn overlay_config_replaces_given_keys_and_keeps_the_rest() {
        // A resumed run whose [ppo] differs from the task's defaults.
        let base = "task = \"pendulum\"\ntotal_steps = 4096\n[ppo]\nepochs = 3\nclip = 0.1\n";
        let base = TrainConfig::from_toml(None, Some(base)).unwrap().to_toml();
        let top = "seed = 7\n[ppo]\nlearning_rate = 1e-4\n[reward_weights]\ntask = 2.0\n";
        let merged = overlay(&base, top).unwrap();
        let config = TrainConfig::from_toml(None, Some(&merged)).unwrap();
        let resumed = TrainConfig::from_toml(None, Some(&base)).unwrap();
        assert_eq!(config.task, "pendulum", "the resumed task stays");
        assert_eq!(config.seed, 7);
        assert_eq!(config.ppo.learning_rate, 1e-4);
        // The rest of [ppo] is the resumed run's, not the defaults'.
        assert_eq!((config.ppo.epochs, config.ppo.clip), (3, 0.1));
        assert_eq!(config.gamma, resumed.gamma);
        assert_eq!(config.total_steps, 4096);
        // reward_weights are replaced whole.
        assert_eq!(
            config.reward_weights,
            [("task".to_owned(), 2.0)].into_iter().collect()
        );

        // Unknown keys are still refused, named; bad TOML names its file.
        let bad = overlay(&base, "[ppo]\nlerning_rate = 1e-4\n").unwrap();
        let error = TrainConfig::from_toml(None, Some(&bad)).unwrap_err();
        assert!(error.contains("lerning_rate"), "{error}");
        let error = overlay(&base, "seed = = 1").unwrap_err().to_string();
        assert!(error.contains("top.toml is not valid TOML"), "{error}");
    }
}
