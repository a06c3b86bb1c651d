//! Deterministic evaluation on held-out starts, through the same tick
//! stages as training.

use super::rollout::Collector;
use cerebellum_core::Policy;
use cerebellum_sim::{SimEnv, VecEnv};
use serde::Serialize;

/// Held-out starts use a base seed training never uses.
pub const HELD_OUT: u64 = 0xE7A1_0000_0000_0000;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    pub episodes: usize,
    pub success_rate: f64,
    pub mean_return: f64,
    /// In (copy, episode) order, so independent of the thread count.
    pub episode_returns: Vec<f64>,
    pub episode_successes: Vec<bool>,
    /// Each episode's instruction, where the robot sends one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub episode_instructions: Vec<Option<String>>,
}

impl EvalReport {
    /// The success rate of the episodes whose instruction names each of
    /// `colors` (as a whole word); colours no episode named are left out.
    pub fn success_by_color(&self, colors: &[&str]) -> std::collections::BTreeMap<String, f64> {
        let mut tally: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for (instruction, &success) in self
            .episode_instructions
            .iter()
            .zip(&self.episode_successes)
        {
            let Some(text) = instruction else { continue };
            let lower = text.to_lowercase();
            let words: Vec<&str> = lower
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect();
            for color in colors {
                if words.contains(color) {
                    let entry = tally.entry((*color).to_owned()).or_default();
                    entry.0 += usize::from(success);
                    entry.1 += 1;
                }
            }
        }
        tally
            .into_iter()
            .map(|(color, (won, of))| (color, won as f64 / of as f64))
            .collect()
    }
}

/// Runs `episodes` episodes spread over the given copies, starting from
/// seeds derived from `seed ^ HELD_OUT`: the deterministic policy (the mean
/// action), or with `sample` the policy's own noise, seeded from `seed`.
pub fn evaluate(
    policy: &mut dyn Policy,
    envs: Vec<SimEnv>,
    episodes: usize,
    seed: u64,
    threads: usize,
) -> anyhow::Result<EvalReport> {
    evaluate_with(policy, envs, episodes, seed, threads, false, 1)
}

/// [`evaluate`], sampling when `sample`, and playing `execute` actions of
/// each chunk before replanning (1: every tick; a chunk policy fine-tuned
/// with `finetune.execute` is evaluated as it was trained).
pub fn evaluate_with(
    policy: &mut dyn Policy,
    envs: Vec<SimEnv>,
    episodes: usize,
    seed: u64,
    threads: usize,
    sample: bool,
    execute: usize,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(episodes > 0, "evaluation needs at least one episode");
    let copies = envs.len().min(episodes);
    let envs: Vec<SimEnv> = envs.into_iter().take(copies).collect();
    let robot_id = cerebellum_core::Robot::spec(&envs[0]).name.clone();
    let mut collector = Collector::new(VecEnv::new(envs, seed ^ HELD_OUT, threads), robot_id)?
        .with_chunk_execution(execute);
    let quota: Vec<usize> = (0..copies)
        .map(|c| episodes / copies + usize::from(c < episodes % copies))
        .collect();
    let mut results: Vec<Vec<(f64, bool, Option<String>)>> = vec![Vec::new(); copies];
    let mut tick = 0;
    while results.iter().zip(&quota).any(|(r, &q)| r.len() < q) {
        let noise = sample.then_some((seed ^ HELD_OUT, tick));
        tick += 1;
        let rollout = collector.collect(policy, 1, noise)?;
        for f in rollout.finished {
            if results[f.copy].len() < quota[f.copy] {
                results[f.copy].push((f.episode_return, f.success, f.instruction));
            }
        }
    }
    let flat: Vec<(f64, bool, Option<String>)> = results.into_iter().flatten().collect();
    let n = flat.len() as f64;
    let instructions: Vec<Option<String>> = flat.iter().map(|r| r.2.clone()).collect();
    Ok(EvalReport {
        episodes: flat.len(),
        success_rate: flat.iter().filter(|r| r.1).count() as f64 / n,
        mean_return: flat.iter().map(|r| r.0).sum::<f64>() / n,
        episode_returns: flat.iter().map(|r| r.0).collect(),
        episode_successes: flat.iter().map(|r| r.1).collect(),
        episode_instructions: if instructions.iter().any(Option::is_some) {
            instructions
        } else {
            Vec::new()
        },
    })
}

/// The same evaluation on one robot of any kind (a robot over zenoh),
/// through the control loop and its safety envelope like every command to a
/// robot: the held-out starts of `evaluate` with a single copy, one episode
/// after the other, so a lockstep robot under `ClockMode::Sim` gives the
/// figures `evaluate` gives the simulator with `envs = 1`. A robot on its
/// own clock is driven at its rate under the wall clock. At most
/// `max_ticks` ticks run: fewer finished episodes than asked is an error.
pub fn evaluate_robot<
    P: Policy + crate::control_loop::CheckedWeights + Clone + Send + Sync + 'static,
>(
    policy: P,
    robot: crate::robots::ConnectedRobot,
    clock: crate::robots::ClockMode,
    envelope: crate::envelope::SafetyEnvelope,
    operator: &crate::robots::OperatorInputs,
    request: RobotEval,
) -> anyhow::Result<(EvalReport, crate::control_loop::LoopSummary)> {
    use crate::control_loop::{Inference, LoopConfig, PolicySlot};
    anyhow::ensure!(
        request.episodes > 0,
        "evaluation needs at least one episode"
    );
    let config = LoopConfig {
        seed: request.seed ^ HELD_OUT,
        stochastic: request.sample,
        max_episodes: Some(request.episodes as u64),
        max_ticks: Some(request.max_ticks),
        inference_deadline: None,
        robot_id: request.robot_id,
        episodes_per_start: 1,
    };
    let inference = Inference::inline(PolicySlot::new(policy));
    let mut control = operator.attach(robot.into_loop(clock, inference, envelope, config)?);
    let mut tally = EpisodeTally::default();
    control.run(&mut tally)?;
    let summary = control.stats.summary();
    drop(control);
    anyhow::ensure!(
        tally.returns.len() == request.episodes,
        "the robot finished {} of {} episodes within {} ticks",
        tally.returns.len(),
        request.episodes,
        request.max_ticks
    );
    let n = tally.returns.len() as f64;
    Ok((
        EvalReport {
            episodes: tally.returns.len(),
            success_rate: tally.successes.iter().filter(|s| **s).count() as f64 / n,
            mean_return: tally.returns.iter().sum::<f64>() / n,
            episode_returns: tally.returns,
            episode_successes: tally.successes,
            episode_instructions: Vec::new(),
        },
        summary,
    ))
}

/// What `evaluate_robot` runs.
pub struct RobotEval {
    pub episodes: usize,
    pub seed: u64,
    /// Sample from the policy's distribution instead of its mean.
    pub sample: bool,
    pub robot_id: String,
    /// Give up after this many ticks.
    pub max_ticks: u64,
}

/// Returns and successes of the episodes a loop finishes. A return sums
/// the robot's reward components, not the ones the loop adds (safety,
/// intervention, e-stop), so it compares with the simulator's.
#[derive(Default)]
struct EpisodeTally {
    current: f64,
    returns: Vec<f64>,
    successes: Vec<bool>,
}

impl crate::control_loop::TransitionSink for EpisodeTally {
    fn push(&mut self, transition: cerebellum_core::Transition) -> bool {
        use cerebellum_core::RewardComponents;
        let added_by_loop = [
            RewardComponents::SAFETY,
            RewardComponents::INTERVENTION,
            RewardComponents::ESTOP,
        ];
        self.current += transition
            .rewards
            .iter()
            .filter(|(name, _)| !added_by_loop.contains(name))
            .map(|(_, r)| r as f64)
            .sum::<f64>();
        if transition.terminated || transition.truncated {
            self.returns.push(std::mem::take(&mut self.current));
            self.successes.push(transition.success.unwrap_or(false));
        }
        true
    }
}
