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
    evaluate_with(policy, envs, episodes, seed, threads, false)
}

pub fn evaluate_with(
    policy: &mut dyn Policy,
    envs: Vec<SimEnv>,
    episodes: usize,
    seed: u64,
    threads: usize,
    sample: bool,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(episodes > 0, "evaluation needs at least one episode");
    let copies = envs.len().min(episodes);
    let envs: Vec<SimEnv> = envs.into_iter().take(copies).collect();
    let robot_id = cerebellum_core::Robot::spec(&envs[0]).name.clone();
    let mut collector = Collector::new(VecEnv::new(envs, seed ^ HELD_OUT, threads), robot_id)?;
    let quota: Vec<usize> = (0..copies)
        .map(|c| episodes / copies + usize::from(c < episodes % copies))
        .collect();
    let mut results: Vec<Vec<(f64, bool)>> = vec![Vec::new(); copies];
    let mut tick = 0;
    while results.iter().zip(&quota).any(|(r, &q)| r.len() < q) {
        let noise = sample.then_some((seed ^ HELD_OUT, tick));
        tick += 1;
        let rollout = collector.collect(policy, 1, noise)?;
        for f in rollout.finished {
            if results[f.copy].len() < quota[f.copy] {
                results[f.copy].push((f.episode_return, f.success));
            }
        }
    }
    let flat: Vec<(f64, bool)> = results.into_iter().flatten().collect();
    let n = flat.len() as f64;
    Ok(EvalReport {
        episodes: flat.len(),
        success_rate: flat.iter().filter(|r| r.1).count() as f64 / n,
        mean_return: flat.iter().map(|r| r.0).sum::<f64>() / n,
        episode_returns: flat.iter().map(|r| r.0).collect(),
        episode_successes: flat.iter().map(|r| r.1).collect(),
    })
}

/// The same evaluation on one robot of any kind (a robot over zenoh): the
/// held-out starts of `evaluate` with a single copy, one episode after the
/// other through the tick stages, so a lockstep robot gives the figures
/// `evaluate` gives the simulator with `envs = 1`.
pub fn evaluate_robot(
    policy: &mut dyn Policy,
    robot: &mut dyn cerebellum_core::Robot,
    episodes: usize,
    seed: u64,
    sample: bool,
) -> anyhow::Result<EvalReport> {
    use crate::tick;
    use cerebellum_core::{ResetRequest, Sampling};
    anyhow::ensure!(episodes > 0, "evaluation needs at least one episode");
    let base = seed ^ HELD_OUT;
    let spec = robot.spec().clone();
    let (mut returns, mut successes) = (Vec::new(), Vec::new());
    let mut ticks = 0u64;
    for episode in 0..episodes as u64 {
        let start = cerebellum_sim::vec_env::episode_seed(base, 0, episode);
        let mut observation = robot.reset(&ResetRequest { seed: start })?;
        let mut episode_return = 0.0;
        loop {
            let sampling = if sample {
                Sampling::Stochastic {
                    seed: super::rollout::tick_seed(base, ticks),
                }
            } else {
                Sampling::Deterministic
            };
            ticks += 1;
            let output = tick::infer(policy, &spec, std::slice::from_ref(&observation), sampling)?;
            let outcome = robot.apply(tick::command(&output[0]))?;
            episode_return += outcome.rewards.iter().map(|(_, r)| r as f64).sum::<f64>();
            if outcome.done() {
                returns.push(episode_return);
                successes.push(outcome.success.unwrap_or(false));
                break;
            }
            observation = robot.observe()?;
        }
    }
    let n = returns.len() as f64;
    Ok(EvalReport {
        episodes: returns.len(),
        success_rate: successes.iter().filter(|s| **s).count() as f64 / n,
        mean_return: returns.iter().sum::<f64>() / n,
        episode_returns: returns,
        episode_successes: successes,
    })
}
