//! `cerebellum reward`: train and evaluate learned reward models on
//! recorded episodes (docs/episodes.md).

use super::print_json;
use crate::recorder::{EpisodesMeta, read_episodes};
use cerebellum_core::{RewardComponents, Transition};
use cerebellum_reward_models::contract::{Expected, read_contract};
use cerebellum_reward_models::evaluation::spearman;
use cerebellum_reward_models::fields::FieldSelection;
use cerebellum_reward_models::progress::{
    AnnotatedEpisode, ProgressConfig, ProgressModel, model_input,
};
use cerebellum_reward_models::success::SuccessClassifier;
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

impl RewardArgs {
    /// The subcommand's name, as its `--json` lines say it.
    pub fn name(&self) -> &'static str {
        match self.which {
            RewardCommand::Train(_) => "reward train",
            RewardCommand::Eval(_) => "reward eval",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RewardKind {
    /// Stage-aware progress (SARM): needs stage-annotated episodes.
    Progress,
    /// Success classifier: P(success | observation) on labelled frames.
    Success,
}

/// Train a reward model on recorded episodes.
///
/// `--kind progress` trains the stage-aware progress model on episodes
/// with stage annotations (`cerebellum record --task lift --expert`),
/// holds the last `--held-out` episodes out and reports the Spearman
/// correlation of predicted progress with time on them.
///
/// `--kind success` trains the success classifier. Frame labels: with
/// `--task`, the simulator's success test at each frame (data recorded in
/// the simulation); without it, the last `--positive-frames` frames of
/// every successful episode are positives and all other frames negatives
/// (an operator's "it succeeded here"). Reports frame precision and recall
/// on the held-out episodes at `--threshold`.
///
/// Retraining into the same --out raises the model's version; a run that
/// trains on the model's rewards records which version labelled each
/// transition. Examples:
///
///   cerebellum record --task lift --expert --episodes 50 --out data/lift
///   cerebellum reward train --kind progress --data data/lift --out models/lift-progress
///   cerebellum reward train --kind success --task lift --data data/lift --out models/lift-success
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RewardTrainArgs {
    #[arg(long, value_enum)]
    pub kind: RewardKind,
    /// Recorded episodes (docs/episodes.md); repeat --data to pool several
    /// recordings of one robot (held-out episodes are the last ones).
    #[arg(long = "data", value_name = "DATA", required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub held_out: usize,
    #[arg(long, default_value_t = 400)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// --kind progress: frames of observation history per prediction
    /// (more frames show motion, which a policy can learn to imitate
    /// without progressing; 1 reads the state alone).
    #[arg(long, default_value_t = 3)]
    pub history: usize,
    /// --kind progress: rewound copies of each demonstration (ReWiND):
    /// the episode played backwards from a random frame, each frame keeping
    /// its own progress label, so that moving away from the goal reads as
    /// losing progress.
    #[arg(long, default_value_t = 0)]
    pub rewinds: usize,
    /// --kind progress: also read the first camera's image, pooled to a
    /// P × P grey grid (record with a `[camera]` in --env-config); 0: the
    /// state only.
    #[arg(long, default_value_t = 0)]
    pub image_pool: usize,
    /// --kind progress: recordings of the policy (`cerebellum run
    /// --record`) whose failed episodes teach zero progress: what the
    /// demonstrations cannot say about where a policy goes instead.
    /// Repeatable.
    #[arg(long = "negatives", value_name = "DATA")]
    pub negatives: Vec<PathBuf>,
    /// Observation fields the model reads (comma-separated names from the
    /// robot's spec, e.g. `target_offset`; default: all). A model can only
    /// be gamed through what it reads: leave out what success does not
    /// depend on (how fast the joints move, where the arm's base is).
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',')]
    pub fields: Vec<String>,
    #[command(flatten)]
    pub labels: SuccessLabels,
    #[arg(long)]
    pub json: bool,
}

/// How success classifiers' frames are labelled and judged (train and eval).
#[derive(Args, Debug)]
pub struct SuccessLabels {
    /// The task DATA was recorded on: frames are labelled by its success
    /// test (and `reward eval` of a progress model gives the EPIC distance
    /// to its ground-truth reward).
    #[arg(long, value_parser = super::parse_task)]
    pub task: Option<cerebellum_sim::TaskKind>,
    /// Without --task: positives per successful episode (its last frames).
    #[arg(long, default_value_t = 10)]
    pub positive_frames: usize,
    /// P(success) at which a frame counts as successful in precision and
    /// recall.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f32,
}

/// Evaluate a reward model on recorded episodes.
///
/// A success classifier (its reward_model.json says `success`) reports
/// `success_precision` and `success_recall` over every frame of DATA,
/// labelled as for `reward train --kind success`. A progress model:
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
    /// Recorded episodes (docs/episodes.md); repeat --data to pool several
    /// recordings of one robot (held-out episodes are the last ones).
    #[arg(long = "data", value_name = "DATA", required = true)]
    pub data: Vec<PathBuf>,
    #[command(flatten)]
    pub labels: SuccessLabels,
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
        let inputs: Vec<Vec<f32>> = episode
            .iter()
            .map(|t| model.input(&t.observation))
            .collect();
        let progress = model.predict(&inputs)?;
        let cube_start = spec
            .field(&episode[0].observation.state, "cube_position")
            .map_or(0.0, |c| c[2]);
        let states = episode.iter().map(|t| &t.observation.state);
        for (state, phi) in states.zip(progress).skip(1) {
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
            let inputs: Vec<Vec<f32>> = e.iter().map(|t| model.input(&t.observation)).collect();
            let progress = model.predict(&inputs)?;
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

/// The episodes of every recording, in order; all must share one robot
/// spec and one set of stage names.
fn read_all(paths: &[PathBuf]) -> anyhow::Result<(EpisodesMeta, Vec<Vec<Transition>>)> {
    let mut pooled: Option<(EpisodesMeta, Vec<Vec<Transition>>)> = None;
    for path in paths {
        let (meta, mut episodes) = read_episodes(path)?;
        match &mut pooled {
            None => pooled = Some((meta, episodes)),
            Some((first, all)) => {
                first.robot.check_compatible(&meta.robot).map_err(|e| {
                    anyhow::anyhow!(
                        "{} was recorded with another robot spec than {}: {e}",
                        path.display(),
                        paths[0].display()
                    )
                })?;
                anyhow::ensure!(
                    first.stages == meta.stages,
                    "{} was recorded with other stages ({:?}) than {} ({:?})",
                    path.display(),
                    meta.stages,
                    paths[0].display(),
                    first.stages
                );
                all.append(&mut episodes);
            }
        }
    }
    pooled.ok_or_else(|| anyhow::anyhow!("no --data given"))
}

fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The instruction the episodes were recorded under, if any.
fn instruction(episodes: &[Vec<Transition>]) -> Option<&str> {
    episodes
        .first()?
        .first()?
        .observation
        .instruction
        .as_deref()
}

/// An episode's frames (state, successful?).
type LabelledFrames = Vec<(Vec<f32>, bool)>;

/// Each frame with its success label (see `RewardTrainArgs`).
fn success_frames(
    episodes: &[Vec<Transition>],
    spec: &cerebellum_core::ObservationSpec,
    task: Option<cerebellum_sim::TaskKind>,
    positive_frames: usize,
) -> anyhow::Result<Vec<LabelledFrames>> {
    episodes
        .iter()
        .map(|e| {
            let cube_start = spec
                .field(&e[0].observation.state, "cube_position")
                .map_or(0.0, |c| c[2]);
            let positives_from = if succeeded(e) {
                e.len().saturating_sub(positive_frames)
            } else {
                usize::MAX
            };
            e.iter()
                .enumerate()
                .map(|(i, t)| {
                    let s = &t.observation.state;
                    let y = match task {
                        Some(task) => {
                            cerebellum_sim::tasks::success_state(task, spec, s, cube_start)
                                .ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "task {task} has no success test for these observations"
                                    )
                                })?
                        }
                        None => i >= positives_from,
                    };
                    Ok((s.clone(), y))
                })
                .collect()
        })
        .collect()
}

/// (precision, recall, positives) of `classifier` at `threshold` over labelled frames.
fn precision_recall(
    classifier: &SuccessClassifier,
    frames: &[(Vec<f32>, bool)],
    threshold: f32,
) -> anyhow::Result<(Option<f64>, Option<f64>, usize)> {
    let states: Vec<Vec<f32>> = frames.iter().map(|f| f.0.clone()).collect();
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (p, (_, y)) in classifier.predict(&states)?.iter().zip(frames) {
        match (p.is_some_and(|p| p >= threshold), *y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    Ok((ratio(tp, tp + fp), ratio(tp, tp + fn_), tp + fn_))
}

fn next_version(dir: &std::path::Path) -> u64 {
    read_contract(dir).map_or(1, |c| c.model_version + 1)
}

fn train_success(args: RewardTrainArgs) -> anyhow::Result<()> {
    let (meta, episodes) = read_all(&args.data)?;
    anyhow::ensure!(
        episodes.len() > args.held_out,
        "{} has {} episodes; --held-out {} leaves none to train on",
        show_paths(&args.data),
        episodes.len(),
        args.held_out
    );
    let spec = &meta.robot.observation;
    let labelled = success_frames(
        &episodes,
        spec,
        args.labels.task,
        args.labels.positive_frames,
    )?;
    let split = episodes.len() - args.held_out;
    let train: Vec<(Vec<f32>, bool)> = labelled[..split].iter().flatten().cloned().collect();
    let positives = train.iter().filter(|f| f.1).count();
    anyhow::ensure!(
        positives > 0 && positives < train.len(),
        "the training frames need both classes ({positives} of {} are successful): record failed episodes too (`record --noise`)",
        train.len()
    );
    let started = std::time::Instant::now();
    let fields = FieldSelection::new(spec, &args.fields, 0)?;
    let classifier = SuccessClassifier::train(&train, &fields, 64, args.epochs, args.seed)?;
    let seconds = started.elapsed().as_secs_f64();
    let held: Vec<(Vec<f32>, bool)> = labelled[split..].iter().flatten().cloned().collect();
    let (precision, recall, held_positives) =
        precision_recall(&classifier, &held, args.labels.threshold)?;
    let version = next_version(&args.out);
    classifier.save(&args.out, spec, instruction(&episodes), version)?;
    let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    println!(
        "success classifier v{version} trained on {} frames ({positives} successful) in {seconds:.1} s; held-out frames at {}: precision {}, recall {} ({held_positives} successful) → {}",
        train.len(),
        args.labels.threshold,
        show(precision),
        show(recall),
        args.out.display()
    );
    if args.json {
        print_json(&json!({
            "command": "reward train",
            "kind": "success",
            "model_version": version,
            "fields": fields.names(),
            "train_episodes": split,
            "train_frames": train.len(),
            "train_positives": positives,
            "held_out_frames": held.len(),
            "success_precision": precision,
            "success_recall": recall,
            "threshold": args.labels.threshold,
            "train_seconds": seconds,
            "out": args.out,
        }));
    }
    Ok(())
}

fn train(args: RewardTrainArgs) -> anyhow::Result<()> {
    if let RewardKind::Success = args.kind {
        return train_success(args);
    }
    let (meta, episodes) = read_all(&args.data)?;
    anyhow::ensure!(
        !meta.stages.is_empty(),
        "{} has no stage annotations: record it with `cerebellum record --expert`",
        show_paths(&args.data)
    );
    anyhow::ensure!(
        episodes.len() > args.held_out,
        "{} has {} episodes; --held-out {} leaves none to train on",
        show_paths(&args.data),
        episodes.len(),
        args.held_out
    );
    anyhow::ensure!(
        args.image_pool == 0 || !meta.robot.observation.cameras.is_empty(),
        "--image-pool needs episodes with camera images: record them with a [camera] in --env-config"
    );
    let mut annotated = Vec::new();
    for (i, e) in episodes.iter().enumerate() {
        let stages: Option<Vec<u32>> = e.iter().map(|t| t.stage).collect();
        let stages =
            stages.ok_or_else(|| anyhow::anyhow!("episode {i} has frames without a stage"))?;
        annotated.push(AnnotatedEpisode {
            states: e
                .iter()
                .map(|t| model_input(&t.observation, args.image_pool))
                .collect(),
            stages,
        });
    }
    let split = episodes.len() - args.held_out;
    anyhow::ensure!(args.history >= 1, "--history must be at least 1");
    let config = ProgressConfig {
        epochs: args.epochs,
        seed: args.seed,
        history: args.history,
        rewinds: args.rewinds,
        image_pool: args.image_pool,
        fields: FieldSelection::new(
            &meta.robot.observation,
            &args.fields,
            args.image_pool.pow(2),
        )?,
        ..ProgressConfig::default()
    };
    let started = std::time::Instant::now();
    let mut negatives = Vec::new();
    if !args.negatives.is_empty() {
        let (negative_meta, recorded) = read_all(&args.negatives)?;
        meta.robot
            .check_compatible(&negative_meta.robot)
            .map_err(|e| {
                anyhow::anyhow!("--negatives were recorded on another robot spec than --data: {e}")
            })?;
        negatives.extend(recorded.iter().filter(|e| !succeeded(e)).map(|e| {
            e.iter()
                .map(|t| model_input(&t.observation, args.image_pool))
                .collect::<Vec<_>>()
        }));
    }
    let model = ProgressModel::train_with_negatives(
        &annotated[..split],
        &negatives,
        meta.stages.len(),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let held_out: Vec<&Vec<Transition>> =
        episodes[split..].iter().filter(|e| succeeded(e)).collect();
    let (mean, min, undefined) = summary(&spearmans(&model, &held_out)?);
    let version = next_version(&args.out);
    model.save(
        &args.out,
        &meta.robot.observation,
        instruction(&episodes),
        &meta.stages,
        version,
    )?;
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
            "fields": config.fields.names(),
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

fn eval_success(args: RewardEvalArgs) -> anyhow::Result<()> {
    let (meta, episodes) = read_all(&args.data)?;
    let spec = &meta.robot.observation;
    let expected = Expected {
        observation: spec,
        instruction: instruction(&episodes),
    };
    let (classifier, contract) = SuccessClassifier::load(&args.model, Some(expected))?;
    let frames: Vec<(Vec<f32>, bool)> = success_frames(
        &episodes,
        spec,
        args.labels.task,
        args.labels.positive_frames,
    )?
    .into_iter()
    .flatten()
    .collect();
    let (precision, recall, positives) =
        precision_recall(&classifier, &frames, args.labels.threshold)?;
    let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    println!(
        "success classifier v{} on {} frames ({positives} successful) at {}: precision {}, recall {}",
        contract.model_version,
        frames.len(),
        args.labels.threshold,
        show(precision),
        show(recall)
    );
    if args.json {
        print_json(&json!({
            "command": "reward eval",
            "kind": "success",
            "model_version": contract.model_version,
            "fields": contract.fields,
            "episodes": episodes.len(),
            "frames": frames.len(),
            "successful_frames": positives,
            "success_precision": precision,
            "success_recall": recall,
            "threshold": args.labels.threshold,
        }));
    }
    Ok(())
}

fn eval(args: RewardEvalArgs) -> anyhow::Result<()> {
    if read_contract(&args.model)?.kind == "success" {
        return eval_success(args);
    }
    let (meta, episodes) = read_all(&args.data)?;
    let expected = Expected {
        observation: &meta.robot.observation,
        instruction: instruction(&episodes),
    };
    let (model, contract) = ProgressModel::load(&args.model, Some(expected))?;
    let (good, bad): (Vec<&Vec<Transition>>, Vec<&Vec<Transition>>) =
        episodes.iter().partition(|e| succeeded(e));
    let (mean, min, undefined) = summary(&spearmans(&model, &good)?);
    let (failed_mean, _, _) = summary(&spearmans(&model, &bad)?);
    let epic = match args.labels.task {
        Some(task) => epic_to_ground_truth(&model, &episodes, &meta.robot.observation, task)?,
        None => None,
    };
    println!(
        "progress model v{} on {}: Spearman {} over {} successful episodes (min {}), {} over {} failed",
        contract.model_version,
        show_paths(&args.data),
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
            "fields": contract.fields,
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
