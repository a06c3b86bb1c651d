//! `cerebellum train --online`: fine-tuning on the board. The control loop
//! drives the robot at its rate with the policy's sampled actions; a
//! learner thread beside it trains on what the loop records and publishes
//! new weights the loop picks up between ticks (learn/online.rs).

use super::print_json;
use super::train::{OnlineClock, TrainArgs, parent_run, resolve_config, source_commit};
use crate::control_loop::{Inference, LoopConfig, LoopSummary, PolicySlot};
use crate::learn::eval::{self, EvalReport};
use crate::learn::labeller_thread::{LabellerThread, RewardModelSlot, watch_models};
use crate::learn::online::{
    LearnablePolicy, LearnerSink, LearnerStatus, LearnerThread, OnlineGrpo, OnlinePpo, Pace,
};
use crate::learn::trainer::{TrainerState, make_envs};
use crate::learn::{Algo, TrainConfig, finetune};
use crate::robots::{OperatorInputs, RobotChoice, RobotLoop, connect_robot};
use crate::success_judge::SuccessJudge;
use cerebellum_core::Policy;
use cerebellum_policies::checkpoint::{self, TrainingProvenance};
use cerebellum_policies::vla::checkpoint::{VLA_KIND, save_on};
use cerebellum_reward_models::contract::{Expected, read_contract};
use cerebellum_reward_models::labeller::{RewardModelConfig, RewardModels};
use cerebellum_sim::{ArmModel, EnvConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Progress is reported (and `online.csv` gets a row) this often, in
/// seconds of robot time.
const WINDOW_SECONDS: f64 = 10.0;

/// One row of `online.csv`: what happened in a window of robot time.
#[derive(Clone, Debug, Serialize)]
struct Window {
    robot_seconds: f64,
    wall_seconds: f64,
    episodes: u64,
    /// Of the episodes that ended in this window (sampled actions).
    success_rate: Option<f64>,
    policy_version: u64,
    updates: u64,
    deadline_misses: u64,
    dropped_transitions: u64,
    clamps: u64,
}

/// What each learner needs from a robot, and the two it cannot have here:
/// the group estimators need `rollouts_per_start` consecutive episodes from
/// one commanded start (the loop's `episodes_per_start`), which any robot
/// that can be reset to a start gives.
fn check_online_algo(algo: Algo) -> anyhow::Result<()> {
    let why = match algo {
        Algo::Spo => {
            "spo draws each episode's start from a pool of recurring starts it tracks, \
             and the loop commands starts in order; train spo in the simulator"
        }
        Algo::Remax => {
            "remax needs one deterministic episode per start beside the sampled ones, \
             and the loop samples every episode of a run alike; train remax in the simulator"
        }
        _ => return Ok(()),
    };
    let on_a_robot = Algo::named(|a| !matches!(a, Algo::Spo | Algo::Remax));
    anyhow::bail!("--online --algo {algo}: {why} (on a robot: {on_a_robot})")
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let from = args.resume_dir().ok_or_else(|| {
        anyhow::anyhow!("--online needs --resume DIR: the checkpoint to fine-tune")
    })??;
    super::seconds("--duration", args.duration, super::MAX_SECONDS)?;
    let (config, out) = resolve_config(args)?;
    check_online_algo(config.algo)?;
    let (env_config, model) = config.load_env(true)?;
    let contract = checkpoint::load_contract(&from)?;
    let choices = if args.robots.is_empty() {
        vec![RobotChoice::Sim]
    } else {
        args.robots.clone()
    };
    let mut robots = Vec::new();
    for choice in &choices {
        let mut operator = OperatorInputs::default();
        let robot = connect_robot(
            choice,
            &args.zenoh,
            &env_config,
            model.clone(),
            &contract.spec,
            &mut operator,
        )?;
        let id = choice.robot_id(&args.zenoh, robot.spec());
        let link = robot.link_stats();
        anyhow::ensure!(
            robots.iter().all(|(other, _, _, _)| other != &id),
            "robot id `{id}` given twice: every robot of a fleet needs its own id"
        );
        robots.push((id, robot, operator, link));
    }
    let spec = robots[0].1.spec().clone();
    let run = Online {
        args,
        from: &from,
        contract: &contract,
        config,
        out,
        env_config,
        model,
        robots,
    };
    if contract.policy_kind == VLA_KIND {
        return online_vla(run, &spec);
    }
    let (policy, _) = checkpoint::load(&from, Some(&spec))?;
    // The trainer state saved with this checkpoint (or refused, naming
    // both candidates, when none matches it).
    let state = TrainerState::load_for(
        &from,
        contract.provenance.updates,
        contract.provenance.env_steps,
    )?;
    let chunks = Chunks {
        lead: None,
        execute: 1,
    };
    run.train(policy, state, chunks, |out, policy, provenance| {
        Ok(checkpoint::save(out, policy, provenance)?)
    })
}

/// A robot connected for an online run: its id, the robot, its operator
/// inputs and its link figures.
type Connected = (
    String,
    crate::robots::ConnectedRobot,
    OperatorInputs,
    Option<crate::robots::LinkStats>,
);

/// What an online run has settled before the policy is known.
struct Online<'a> {
    args: &'a TrainArgs,
    from: &'a Path,
    contract: &'a checkpoint::Contract,
    config: TrainConfig,
    out: std::path::PathBuf,
    env_config: EnvConfig,
    model: Option<Arc<ArmModel>>,
    robots: Vec<Connected>,
}

/// How the loop plays a chunk policy's chunks: the next chunk is asked
/// for with `lead` actions left (`None`: a per-tick policy), and the
/// evaluations play `execute` actions of each.
#[derive(Clone, Copy)]
struct Chunks {
    lead: Option<u32>,
    execute: usize,
}

/// `train --online --resume VLA_RUN`: the `[finetune]` scope, exploration
/// noise and chunk execution of the offline fine-tune, in the loop; the
/// checkpoint holds what was trained on the base it names.
fn online_vla(run: Online<'_>, spec: &cerebellum_core::RobotSpec) -> anyhow::Result<()> {
    let settings = run.config.finetune_settings();
    let (policy, _, base) = finetune::prepare(run.from, spec, &settings, run.config.seed)?;
    let horizon = policy.horizon();
    let chunks = Chunks {
        lead: Some((horizon - settings.execute) as u32),
        execute: settings.execute,
    };
    run.train(policy, None, chunks, move |out, policy, provenance| {
        Ok(save_on(out, policy, provenance, Some(base.clone()))?)
    })
}

impl Online<'_> {
    /// The loop on every robot with the learner beside it, then the
    /// evaluation and the checkpoint (`save`).
    fn train<P>(
        self,
        policy: P,
        state: Option<TrainerState>,
        chunks: Chunks,
        save: impl Fn(&Path, &P, TrainingProvenance) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>
    where
        P: LearnablePolicy + Clone,
    {
        let Online {
            args,
            from,
            contract,
            config,
            out,
            env_config,
            model,
            robots,
        } = self;
        let from = from.to_path_buf();
        let spec = robots[0].1.spec().clone();
        let before = evaluate(&policy, &config, &env_config, model.clone(), chunks.execute)?;
        if let Some(e) = &before {
            println!(
                "before fine-tuning: held-out success {:.1}% over {} episodes",
                100.0 * e.success_rate,
                e.episodes
            );
        }

        let envelope = || args.envelope.build(&spec, model.clone());
        let period = spec.control_period();
        let start_version = policy.version();
        let slot = PolicySlot::new(policy.clone());
        let pace = match args.clock {
            OnlineClock::Wall => Pace::WallTime {
                capacity: config.online.channel_capacity,
            },
            OnlineClock::Sim => Pace::Lockstep,
        };
        let (sink, learner) = match config.algo {
            Algo::Ppo => LearnerThread::spawn(
                OnlinePpo::new(policy, config.clone(), state),
                slot.clone(),
                pace,
            ),
            Algo::Spo | Algo::Remax => unreachable!("refused by check_online_algo"),
            _ => LearnerThread::spawn(OnlineGrpo::new(policy, config.clone()), slot.clone(), pace),
        };
        // Learned rewards: a labeller thread in front of the learner, and a
        // watcher that reloads retrained models.
        // In the loop, success is the loop's own judge (it ends episodes); the
        // labeller scores progress.
        let progress_only = RewardModelConfig {
            success: None,
            ..config.reward.clone()
        };
        let (sink, labeller) = if progress_only.is_empty() {
            (sink, None)
        } else {
            let load = {
                let (reward, observation) = (progress_only, spec.observation.clone());
                let (instruction, gamma) = (config.task_kind().instruction(), config.gamma as f64);
                move || {
                    let expected = Expected {
                        observation: &observation,
                        instruction: Some(instruction),
                    };
                    RewardModels::load(&reward, expected, gamma)
                }
            };
            let models = load()?;
            println!(
                "learned rewards: {} (version {})",
                config
                    .reward_weights
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                models.version
            );
            let mut loaded_version = models.version;
            let reward_slot = RewardModelSlot::new(models);
            let dirs = config.reward.progress.clone();
            watch_models(
                reward_slot.clone(),
                move || {
                    // Only the contracts are read until a version moved.
                    let version: u64 = dirs
                        .iter()
                        .map(|d| read_contract(d).map_or(0, |c| c.model_version))
                        .sum();
                    if version == loaded_version {
                        return None;
                    }
                    let models = load()
                        .inspect_err(|e| tracing::warn!("reward models: {e}"))
                        .ok()?;
                    loaded_version = models.version;
                    Some(models)
                },
                std::time::Duration::from_secs(2),
            );
            let (sink, thread) = LabellerThread::spawn(reward_slot, sink, pace);
            (sink, Some(thread))
        };
        let loop_config = |index: usize, robot_id: &str| LoopConfig {
            // Each robot of a fleet starts from its own task instances.
            seed: config.seed.wrapping_add(index as u64 * 0x9E37_79B9),
            stochastic: true,
            max_episodes: None,
            max_ticks: None,
            // Set by the clock (`ConnectedRobot::into_loop`).
            inference_deadline: None,
            robot_id: robot_id.to_owned(),
            episodes_per_start: config.algo.rollouts_per_start(config.group) as u64,
        };
        let total_ticks = (args.duration / period.as_secs_f64()).ceil() as u64;
        std::fs::create_dir_all(&out)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
        let drive = Drive {
            sink,
            learner,
            total_ticks,
            window_ticks: ((WINDOW_SECONDS / period.as_secs_f64()) as u64).max(1),
            period,
            out: &out,
            json: args.json,
        };
        // One loop per robot, each on its own thread, all feeding the learner;
        // the first reports the windows.
        let mut loops = Vec::new();
        for (index, (id, robot, operator, link)) in robots.into_iter().enumerate() {
            let loop_settings = loop_config(index, &id);
            // A chunk policy is asked on the inference worker, as `run` asks
            // it: the loop plays the chunk it has meanwhile.
            let inference = match chunks.lead {
                None => Inference::inline(slot.clone()),
                Some(_) => Inference::worker(slot.clone()),
            };
            let judge = || -> anyhow::Result<Option<SuccessJudge>> {
                let reward = &config.reward;
                let Some(dir) = &reward.success else {
                    return Ok(None);
                };
                let expected = Expected {
                    observation: &spec.observation,
                    instruction: Some(config.task_kind().instruction()),
                };
                Ok(Some(crate::success_judge::load(
                    dir,
                    expected,
                    reward.success_threshold,
                    reward.success_frames,
                    args.clock == OnlineClock::Sim,
                    reward.success_lag_ticks,
                )?))
            };
            let mut control = operator.attach(robot.into_loop(
                args.clock,
                inference,
                envelope()?,
                loop_settings,
            )?);
            if let Some(j) = judge()? {
                control = control.with_success_judge(j);
            }
            if let Some(lead) = chunks.lead {
                control = control.with_chunk_playback(lead);
            }
            let control = FleetMember {
                control,
                link: link.clone(),
            };
            loops.push((id, control));
        }
        let (first_id, first) = loops.remove(0);
        let others: Vec<_> = loops
            .into_iter()
            .map(|(id, mut control)| {
                let mut sink = drive.sink.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("loop-{id}"))
                    .spawn(move || {
                        control.run_to(total_ticks, &mut sink)?;
                        Ok::<_, anyhow::Error>(control.finish())
                    })
                    .expect("spawn a control loop thread");
                (id, thread)
            })
            .collect();
        let ((summary, first_link), status, windows, fleet) = drive.run(first, others)?;
        let labeller = labeller.map(LabellerThread::join);
        let mut per_robot = vec![
            json!({"robot_id": first_id, "ticks": summary.counters.ticks, "episodes": summary.counters.episodes, "success_rate": summary.success_rate, "clamps": summary.clamps, "link": first_link}),
        ];
        per_robot.extend(fleet.iter().map(|(id, (s, link))| {
        json!({"robot_id": id, "ticks": s.counters.ticks, "episodes": s.counters.episodes, "success_rate": s.success_rate, "clamps": s.clamps, "link": link})
    }));
        let tuned = (*slot.load()).clone();
        let after = evaluate(&tuned, &config, &env_config, model, chunks.execute)?;
        crate::recorder::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
        save(
            &out,
            &tuned,
            TrainingProvenance {
                config: serde_json::to_value(&config)?,
                seed: config.seed,
                env_steps: summary.counters.ticks,
                updates: status.counters.updates,
                source_commit: source_commit(),
                parent: Some(parent_run(&from, contract)),
            },
        )?;

        let first = window_success(windows.iter().take(WINDOWS_COMPARED));
        let last = window_success(windows.iter().rev().take(WINDOWS_COMPARED));
        println!(
            "fine-tuned {} for {:.0} s of robot time ({} ticks, {} episodes): {} updates, policy v{} → v{}; {} deadline misses, {} clamps, {} dropped transitions → {}",
            config.task,
            summary.counters.ticks as f64 * period.as_secs_f64(),
            summary.counters.ticks,
            summary.counters.episodes,
            status.counters.updates,
            start_version,
            tuned.version(),
            summary.counters.deadline_misses,
            summary.clamps,
            summary.counters.dropped_transitions,
            out.display()
        );
        if let Some(failure) = &status.failure {
            println!("learner failed: {failure} (the loop kept the last good weights)");
        }
        if let (Some(b), Some(a)) = (&before, &after) {
            println!(
                "held-out success {:.1}% → {:.1}% ({:+.1} points)",
                100.0 * b.success_rate,
                100.0 * a.success_rate,
                100.0 * (a.success_rate - b.success_rate)
            );
        }
        if args.json {
            let mut report = json!({
                "command": "train",
                "mode": "online",
                "clock": format!("{:?}", args.clock).to_lowercase(),
                "task": config.task,
                "algo": config.algo,
                "seed": config.seed,
                "from": from,
                "out": out,
                "control_rate_hz": spec.control_rate_hz,
                "success_rate_before": before.as_ref().map(|e| e.success_rate),
                "success_rate": after.as_ref().map(|e| e.success_rate),
                "success_gain": before.as_ref().zip(after.as_ref()).map(|(b, a)| a.success_rate - b.success_rate),
                "eval_episodes": after.as_ref().map(|e| e.episodes),
                "loop_success_first_windows": first,
                "loop_success_last_windows": last,
                "policy_version": tuned.version(),
                "learner": status,
                "labeller": labeller,
                "robots": per_robot,
            });
            report["loop"] = serde_json::to_value(&summary)?;
            for key in [
                "deadline_misses",
                "dropped_transitions",
                "ticks",
                "episodes",
            ] {
                report[key] = report["loop"][key].clone();
            }
            report["clamps"] = json!(summary.clamps);
            report["chunks"] = json!(summary.counters.chunks);
            report["stale_chunks"] = json!(summary.counters.stale_chunks);
            print_json(&report);
        }
        Ok(())
    }
}

/// Windows at each end of the run whose in-loop success is compared.
const WINDOWS_COMPARED: usize = 6;

fn window_success<'a>(windows: impl Iterator<Item = &'a Window>) -> Option<f64> {
    let (mut episodes, mut successes) = (0.0, 0.0);
    for w in windows {
        if let Some(s) = w.success_rate {
            episodes += w.episodes as f64;
            successes += s * w.episodes as f64;
        }
    }
    (episodes > 0.0).then(|| successes / episodes)
}

/// Held-out success of the deterministic policy under the run's
/// environment (the randomisation it is being fine-tuned for).
fn evaluate<P: Policy + Clone>(
    policy: &P,
    config: &TrainConfig,
    env_config: &EnvConfig,
    model: Option<Arc<ArmModel>>,
    execute: usize,
) -> anyhow::Result<Option<EvalReport>> {
    if config.eval_episodes == 0 {
        return Ok(None);
    }
    let envs = make_envs(env_config, model, config.envs.min(config.eval_episodes))?;
    let mut policy = policy.clone();
    Ok(Some(eval::evaluate_with(
        &mut policy,
        envs,
        config.eval_episodes,
        config.seed,
        config.threads,
        false,
        execute,
    )?))
}

/// The loop in windows, with the learner beside it.
struct Drive<'a> {
    sink: LearnerSink,
    learner: LearnerThread,
    total_ticks: u64,
    window_ticks: u64,
    period: Duration,
    out: &'a Path,
    json: bool,
}

/// One robot's loop (a fleet's loops share one type whatever the clock)
/// and its link figures.
struct FleetMember<P: LearnablePolicy + Clone> {
    control: RobotLoop<P>,
    link: Option<crate::robots::LinkStats>,
}

impl<P: LearnablePolicy + Clone> FleetMember<P> {
    fn run_to(&mut self, ticks: u64, sink: &mut LearnerSink) -> anyhow::Result<()> {
        self.control.config.max_ticks = Some(ticks);
        self.control.run(sink)?;
        Ok(())
    }

    fn summary(&self) -> LoopSummary {
        self.control.stats.summary()
    }

    fn policy_version(&self) -> u64 {
        self.control.policy_version()
    }

    /// Ends the loop (closing the robot's link) and returns its figures.
    fn finish(self) -> (LoopSummary, Option<serde_json::Value>) {
        let summary = self.summary();
        let link = self.link.clone();
        drop(self.control);
        (summary, link.and_then(|l| l.get()).map(|s| json!(s)))
    }
}

/// A loop's figures and its robot's link figures (robots over zenoh).
type Figures = (LoopSummary, Option<serde_json::Value>);
type FleetLoop = (String, std::thread::JoinHandle<anyhow::Result<Figures>>);

impl Drive<'_> {
    /// Runs `control` in windows (reporting each) while the `others` of a
    /// fleet run on their threads; returns the first loop's figures, the
    /// learner's, the windows and the others' figures.
    #[allow(clippy::type_complexity)]
    fn run<P: LearnablePolicy + Clone>(
        mut self,
        mut control: FleetMember<P>,
        others: Vec<FleetLoop>,
    ) -> anyhow::Result<(Figures, LearnerStatus, Vec<Window>, Vec<(String, Figures)>)> {
        let bar = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(self.total_ticks)
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ticks  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let mut csv = std::fs::File::create(self.out.join("online.csv"))?;
        writeln!(
            csv,
            "robot_seconds,wall_seconds,episodes,success_rate,policy_version,updates,deadline_misses,dropped_transitions,clamps"
        )?;
        let started = Instant::now();
        let mut windows = Vec::new();
        let mut done = control.summary().counters;
        let mut failure_reported = false;
        while control.summary().counters.ticks < self.total_ticks {
            let target =
                (control.summary().counters.ticks + self.window_ticks).min(self.total_ticks);
            control.run_to(target, &mut self.sink)?;
            let summary = control.summary();
            let now = summary.counters;
            let status = self.learner.status();
            let episodes = now.episodes - done.episodes;
            let window = Window {
                robot_seconds: now.ticks as f64 * self.period.as_secs_f64(),
                wall_seconds: started.elapsed().as_secs_f64(),
                episodes,
                success_rate: (episodes > 0)
                    .then(|| (now.successes - done.successes) as f64 / episodes as f64),
                policy_version: control.policy_version(),
                updates: status.counters.updates,
                deadline_misses: now.deadline_misses,
                dropped_transitions: now.dropped_transitions,
                clamps: summary.clamps,
            };
            writeln!(
                csv,
                "{:.2},{:.2},{},{},{},{},{},{},{}",
                window.robot_seconds,
                window.wall_seconds,
                window.episodes,
                window
                    .success_rate
                    .map_or(String::new(), |s| format!("{s:.4}")),
                window.policy_version,
                window.updates,
                window.deadline_misses,
                window.dropped_transitions,
                window.clamps
            )?;
            bar.set_position(now.ticks);
            bar.set_message(format!(
                "success {:>5.1}%  v{}  {} updates  {} misses  {} dropped",
                100.0 * window.success_rate.unwrap_or(0.0),
                window.policy_version,
                window.updates,
                window.deadline_misses,
                window.dropped_transitions
            ));
            if let Some(failure) = status.failure.as_ref().filter(|_| !failure_reported) {
                bar.println(format!(
                    "{failure}; the loop goes on with the last good weights"
                ));
                failure_reported = true;
            }
            windows.push(window);
            done = now;
        }
        bar.finish_and_clear();
        let figures = control.finish();
        let mut fleet = Vec::new();
        for (id, thread) in others {
            let result = thread
                .join()
                .map_err(|_| anyhow::anyhow!("the control loop of `{id}` panicked"))?;
            fleet.push((id, result?));
        }
        drop(self.sink);
        let status = self.learner.join();
        Ok((figures, status, windows, fleet))
    }
}
