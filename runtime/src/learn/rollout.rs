//! Collecting experience from a batch of simulated robots through the tick
//! stages (observe → infer → send → record) under the simulation clock.

use crate::tick;
use cerebellum_core::{Observation, Policy, Provenance, Robot, Sampling, Transition};
use cerebellum_sim::VecEnv;

/// Experience from `steps` ticks of every copy, time-major
/// (`transitions[t · envs + e]`).
pub struct Rollout {
    pub envs: usize,
    pub transitions: Vec<Transition>,
    /// The observation that followed each transition: the next one, or the
    /// final observation of an episode that ended there (for bootstrapping
    /// a truncated episode from V(s_T)).
    pub next_observations: Vec<Observation>,
    /// Episodes that ended during the rollout.
    pub finished: Vec<FinishedEpisode>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FinishedEpisode {
    pub copy: usize,
    /// Sum of every reward component over the episode (ground truth in sim).
    pub episode_return: f64,
    pub success: bool,
    pub length: u32,
    /// The episode's instruction (its last observation's).
    pub instruction: Option<String>,
}

pub struct Collector {
    pub vec_env: VecEnv,
    robot_id: String,
    observations: Vec<Observation>,
    returns: Vec<f64>,
    lengths: Vec<u32>,
    episode_ids: Vec<u64>,
    next_episode_id: u64,
}

/// A seed for the policy's noise at one tick: the same (run seed, tick)
/// gives the same noise on any thread count.
pub fn tick_seed(seed: u64, tick: u64) -> u64 {
    cerebellum_sim::vec_env::episode_seed(seed, usize::MAX, tick)
}

impl Collector {
    pub fn new(mut vec_env: VecEnv, robot_id: String) -> Result<Self, cerebellum_core::RobotError> {
        let observations = vec_env.reset()?;
        let n = observations.len();
        Ok(Self {
            vec_env,
            robot_id,
            observations,
            returns: vec![0.0; n],
            lengths: vec![0; n],
            episode_ids: (0..n as u64).collect(),
            next_episode_id: n as u64,
        })
    }

    pub fn envs(&self) -> usize {
        self.observations.len()
    }

    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// Starts groups of identical starts (see `VecEnv::reset_groups`).
    pub fn reset_groups(
        &mut self,
        group: usize,
        seeds: &[u64],
    ) -> Result<(), cerebellum_core::RobotError> {
        self.observations = self.vec_env.reset_groups(group, seeds)?;
        self.returns.iter_mut().for_each(|r| *r = 0.0);
        self.lengths.iter_mut().for_each(|l| *l = 0);
        for id in self.episode_ids.iter_mut() {
            *id = self.next_episode_id;
            self.next_episode_id += 1;
        }
        Ok(())
    }

    /// Runs `steps` ticks of every copy. `noise = Some((seed, first_tick))`
    /// samples the policy's noise for tick k from (seed, first_tick + k);
    /// `None` runs the deterministic policy.
    pub fn collect(
        &mut self,
        policy: &mut dyn Policy,
        steps: usize,
        noise: Option<(u64, u64)>,
    ) -> anyhow::Result<Rollout> {
        let envs = self.envs();
        let spec = self
            .vec_env
            .envs()
            .next()
            .expect("at least one copy")
            .spec()
            .clone();
        let mut rollout = Rollout {
            envs,
            transitions: Vec::with_capacity(steps * envs),
            next_observations: Vec::with_capacity(steps * envs),
            finished: Vec::new(),
        };
        for t in 0..steps {
            // observe: the observations the last send returned.
            let sampling = match noise {
                Some((seed, first_tick)) => Sampling::Stochastic {
                    seed: tick_seed(seed, first_tick + t as u64),
                },
                None => Sampling::Deterministic,
            };
            let outputs = tick::infer(policy, &spec, &self.observations, sampling)?;
            let commands: Vec<_> = outputs.iter().map(|o| tick::command(o).clone()).collect();
            let results = self.vec_env.step(&commands)?;
            let now = tick::wall_clock_now();
            for (e, ((output, command), result)) in
                outputs.iter().zip(commands).zip(results).enumerate()
            {
                let provenance = Provenance {
                    robot_id: self.robot_id.clone(),
                    episode_id: self.episode_ids[e],
                    task_instance_id: self.episode_ids[e],
                    group_id: None,
                    step: self.lengths[e],
                    policy_version: policy.version(),
                };
                let observation = std::mem::replace(&mut self.observations[e], result.observation);
                let transition = tick::record(
                    provenance,
                    observation,
                    tick::behaviour_action(output).clone(),
                    output.log_prob,
                    command,
                    &result.outcome,
                    now,
                );
                self.returns[e] += transition
                    .rewards
                    .iter()
                    .map(|(_, r)| r as f64)
                    .sum::<f64>();
                self.lengths[e] += 1;
                rollout.transitions.push(transition);
                match result.final_observation {
                    Some(last) => {
                        let instruction = last.instruction.clone();
                        rollout.next_observations.push(last);
                        rollout.finished.push(FinishedEpisode {
                            copy: e,
                            episode_return: self.returns[e],
                            success: result.outcome.success.unwrap_or(false),
                            length: self.lengths[e],
                            instruction,
                        });
                        self.returns[e] = 0.0;
                        self.lengths[e] = 0;
                        self.episode_ids[e] = self.next_episode_id;
                        self.next_episode_id += 1;
                    }
                    None => rollout.next_observations.push(self.observations[e].clone()),
                }
            }
        }
        Ok(rollout)
    }
}
