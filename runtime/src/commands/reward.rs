//! `cerebellum reward`: train and evaluate learned reward models on
//! recorded episodes (docs/episodes.md).

use super::print_json;
use crate::recorder::read_episodes;
use cerebellum_core::{RewardComponents, Transition};
use cerebellum_reward_models::evaluation::spearman;
use cerebellum_reward_models::progress::{AnnotatedEpisode, ProgressConfig, ProgressModel};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

/// Train and evaluate learned reward models.
#[derive(Args, Debug)]
pub struct RewardArgs {
    #[command(subcommand)]
    pub which: RewardCommand,
}

#[derive(Subcommand, Debug)]
pub enum RewardCommand {
    Train(RewardTrainArgs),
    Eval(RewardEvalArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RewardKind {
    /// Stage-aware progress (SARM): needs stage-annotated episodes.
    Progress,
}

/// Train a reward model on recorded episodes.
///
/// `--kind progress` trains the stage-aware progress model on episodes
/// with stage annotations (`cerebellum record --task lift --expert`),
/// holds the last `--held-out` episodes out and reports the Spearman
/// correlation of predicted progress with time on them. Example:
///
///   cerebellum record --task lift --expert --episodes 50 --out data/lift
///   cerebellum reward train --kind progress --data data/lift --out models/lift-progress
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RewardTrainArgs {
    #[arg(long, value_enum)]
    pub kind: RewardKind,
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub held_out: usize,
    #[arg(long, default_value_t = 400)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

/// Evaluate a reward model on recorded episodes.
///
/// Reports `progress_spearman`: the Spearman correlation between predicted
/// progress and time, averaged over the successful episodes in DATA (1 =
/// perfectly monotone), and the same over the failed ones. With `--task`,
/// also `epic_distance` (ALGORITHMS.md §5): the learned progress used as a
/// reward R(s, a, s′) = Φ(s′) against the task's ground-truth reward on
/// every transition in DATA (0 = equivalent up to shaping and scale, 1 =
/// opposite). The model's observation spec must match the episodes'.
/// Example:
///
///   cerebellum reward eval --model models/lift-progress --data data/lift-held-out --task lift --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RewardEvalArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,
    /// The task DATA was recorded on, for the EPIC distance to its
    /// ground-truth reward.
    #[arg(long, value_parser = super::parse_task)]
    pub task: Option<cerebellum_sim::TaskKind>,
    #[arg(long)]
    pub json: bool,
}

/// EPIC distance between the progress model as a potential reward and the
/// task's ground truth, over every transition of `episodes`. Both rewards
/// depend on the next state only, so the states are indices into a table
/// of (Φ(s′), r(s′)) computed with each frame's true history.
fn epic_to_ground_truth(
    model: &ProgressModel,
    episodes: &[Vec<Transition>],
    spec: &cerebellum_core::ObservationSpec,
    task: cerebellum_sim::TaskKind,
) -> anyhow::Result<Option<f64>> {
    use cerebellum_reward_models::evaluation::{Coverage, epic_distance};
    let mut table: Vec<(f64, f64)> = Vec::new();
    for episode in episodes {
        let states: Vec<Vec<f32>> = episode
            .iter()
            .map(|t| t.observation.state.clone())
            .collect();
        let progress = model.predict(&states)?;
        let cube_start = spec
            .field(&states[0], "cube_position")
            .map_or(0.0, |c| c[2]);
        for (state, phi) in states.iter().zip(progress).skip(1) {
            let truth = cerebellum_sim::tasks::ground_truth_reward(task, spec, state, cube_start)
                .ok_or_else(|| {
                anyhow::anyhow!("task {task} has no ground-truth reward for these observations")
            })?;
            table.push((phi, truth as f64));
        }
    }
    let transitions: Vec<(usize, (), usize)> = (0..table.len()).map(|i| (i, (), i)).collect();
    let stride = (table.len() / 200).max(1);
    let coverage_states: Vec<usize> = (0..table.len()).step_by(stride).collect();
    let coverage = Coverage {
        states: &coverage_states,
        actions: &[()],
    };
    let learned = |_: &usize, _: &(), next: &usize| table[*next].0;
    let truth = |_: &usize, _: &(), next: &usize| table[*next].1;
    Ok(epic_distance(
        &learned,
        &truth,
        &transitions,
        &coverage,
        0.99,
    ))
}

pub fn run(args: RewardArgs) -> anyhow::Result<()> {
    match args.which {
        RewardCommand::Train(args) => train(args),
        RewardCommand::Eval(args) => eval(args),
    }
}

fn succeeded(episode: &[Transition]) -> bool {
    episode
        .last()
        .and_then(|t| t.rewards.get(RewardComponents::SUCCESS))
        .is_some_and(|s| s > 0.5)
}

/// Spearman of progress against time for each episode; `None` where it is
/// undefined (constant predictions).
fn spearmans(
    model: &ProgressModel,
    episodes: &[&Vec<Transition>],
) -> anyhow::Result<Vec<Option<f64>>> {
    episodes
        .iter()
        .map(|e| {
            let states: Vec<Vec<f32>> = e.iter().map(|t| t.observation.state.clone()).collect();
            let progress = model.predict(&states)?;
            let time: Vec<f64> = (0..progress.len()).map(|t| t as f64).collect();
            Ok(spearman(&time, &progress))
        })
        .collect()
}

fn summary(values: &[Option<f64>]) -> (Option<f64>, Option<f64>, usize) {
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    let mean = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    let min = defined.iter().copied().reduce(f64::min);
    (mean, min, values.len() - defined.len())
}

fn train(args: RewardTrainArgs) -> anyhow::Result<()> {
    let RewardKind::Progress = args.kind;
    let (meta, episodes) = read_episodes(&args.data)?;
    anyhow::ensure!(
        !meta.stages.is_empty(),
        "{} has no stage annotations: record it with `cerebellum record --expert`",
        args.data.display()
    );
    anyhow::ensure!(
        episodes.len() > args.held_out,
        "{} has {} episodes; --held-out {} leaves none to train on",
        args.data.display(),
        episodes.len(),
        args.held_out
    );
    let mut annotated = Vec::new();
    for (i, e) in episodes.iter().enumerate() {
        let stages: Option<Vec<u32>> = e.iter().map(|t| t.stage).collect();
        let stages =
            stages.ok_or_else(|| anyhow::anyhow!("episode {i} has frames without a stage"))?;
        annotated.push(AnnotatedEpisode {
            states: e.iter().map(|t| t.observation.state.clone()).collect(),
            stages,
        });
    }
    let split = episodes.len() - args.held_out;
    let config = ProgressConfig {
        epochs: args.epochs,
        seed: args.seed,
        ..ProgressConfig::default()
    };
    let started = std::time::Instant::now();
    let model = ProgressModel::train(&annotated[..split], meta.stages.len(), &config)?;
    let seconds = started.elapsed().as_secs_f64();
    let held_out: Vec<&Vec<Transition>> =
        episodes[split..].iter().filter(|e| succeeded(e)).collect();
    let (mean, min, undefined) = summary(&spearmans(&model, &held_out)?);
    let version = ProgressModel::load(&args.out, None).map_or(1, |(_, c)| c.model_version + 1);
    model.save(&args.out, &meta.robot.observation, &meta.stages, version)?;
    println!(
        "progress model v{version} trained on {split} episodes in {seconds:.1} s; held-out Spearman {} (min {}, {} successful episodes) → {}",
        mean.map_or("n/a".into(), |m| format!("{m:.3}")),
        min.map_or("n/a".into(), |m| format!("{m:.3}")),
        held_out.len(),
        args.out.display()
    );
    if args.json {
        print_json(&json!({
            "command": "reward train",
            "kind": "progress",
            "model_version": version,
            "train_episodes": split,
            "held_out_episodes": held_out.len(),
            "progress_spearman": mean,
            "progress_spearman_min": min,
            "undefined": undefined,
            "stage_shares": model.stage_shares,
            "train_seconds": seconds,
            "out": args.out,
        }));
    }
    Ok(())
}

fn eval(args: RewardEvalArgs) -> anyhow::Result<()> {
    let (meta, episodes) = read_episodes(&args.data)?;
    let (model, contract) = ProgressModel::load(&args.model, Some(&meta.robot.observation))?;
    let (good, bad): (Vec<&Vec<Transition>>, Vec<&Vec<Transition>>) =
        episodes.iter().partition(|e| succeeded(e));
    let (mean, min, undefined) = summary(&spearmans(&model, &good)?);
    let (failed_mean, _, _) = summary(&spearmans(&model, &bad)?);
    let epic = match args.task {
        Some(task) => epic_to_ground_truth(&model, &episodes, &meta.robot.observation, task)?,
        None => None,
    };
    println!(
        "progress model v{} on {}: Spearman {} over {} successful episodes (min {}), {} over {} failed",
        contract.model_version,
        args.data.display(),
        mean.map_or("n/a".into(), |m| format!("{m:.3}")),
        good.len(),
        min.map_or("n/a".into(), |m| format!("{m:.3}")),
        failed_mean.map_or("n/a".into(), |m| format!("{m:.3}")),
        bad.len()
    );
    if let Some(d) = epic {
        println!("EPIC distance to the task's ground-truth reward: {d:.3}");
    }
    if args.json {
        print_json(&json!({
            "command": "reward eval",
            "kind": contract.kind,
            "model_version": contract.model_version,
            "episodes": episodes.len(),
            "successful_episodes": good.len(),
            "progress_spearman": mean,
            "progress_spearman_min": min,
            "progress_spearman_failed": failed_mean,
            "epic_distance": epic,
            "undefined": undefined,
        }));
    }
    Ok(())
}
