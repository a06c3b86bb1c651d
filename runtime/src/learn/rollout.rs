//! Collecting experience from a batch of simulated robots through the tick
//! stages (observe → infer → send → record) under the simulation clock.
//!
//! A chunk policy's chunks are played out as the control loop plays them:
//! each copy asks for a new chunk once it has run `execute` actions of the
//! one it has (or its episode ended), and records each tick's chunk index
//! and that action's own log-probability, which is what chunk credit
//! (`chunk_credit`) turns into decisions. `execute = 1` (the default)
//! replans every tick.

use crate::tick;
use cerebellum_core::{
    Action, Observation, Policy, PolicyOutput, Provenance, Robot, Sampling, Transition,
};
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
    /// Actions of a chunk each copy runs before it replans.
    execute: usize,
    /// Each copy's chunk and the index of its next action.
    playing: Vec<Option<(PolicyOutput, usize)>>,
    /// Copies that run the deterministic (mean-action) policy even when the
    /// others sample: ReMax's baseline rollout of each group.
    greedy: Vec<bool>,
}

/// Action `at` of a chunk: (what the policy chose, its log-probability,
/// what is sent).
fn chunk_action(output: &PolicyOutput, at: usize) -> (Action, Option<f32>, Action) {
    let sent = output.chunk.actions[at].clone();
    let chosen = output
        .sampled
        .as_ref()
        .map_or_else(|| sent.clone(), |s| s.actions[at].clone());
    let log_prob = match &output.action_log_probs {
        Some(each) => each.get(at).copied(),
        None if output.chunk.actions.len() == 1 => output.log_prob,
        None => None,
    };
    (chosen, log_prob, sent)
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
            execute: 1,
            playing: vec![None; n],
            greedy: vec![false; n],
        })
    }

    /// Plays up to `execute` actions of each chunk before replanning
    /// (at least 1; a chunk shorter than that is replanned when it ends).
    pub fn with_chunk_execution(mut self, execute: usize) -> Self {
        self.set_chunk_execution(execute);
        self
    }

    pub fn set_chunk_execution(&mut self, execute: usize) {
        self.execute = execute.max(1);
        self.playing.iter_mut().for_each(|p| *p = None);
    }

    /// Marks the copies that act deterministically while the others sample
    /// (`collect` with noise); all `false` by default.
    pub fn set_greedy(&mut self, greedy: Vec<bool>) {
        assert_eq!(greedy.len(), self.envs(), "one flag per copy");
        self.greedy = greedy;
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
        self.playing.iter_mut().for_each(|p| *p = None);
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
            // infer: for the copies whose chunk is played out, in one batch.
            let execute = self.execute;
            let due: Vec<usize> = (0..envs)
                .filter(|&e| {
                    self.playing[e]
                        .as_ref()
                        .is_none_or(|(out, at)| *at >= execute.min(out.chunk.actions.len()))
                })
                .collect();
            // Greedy copies are asked apart, deterministically; a
            // batch of one kind keeps the noise a copy draws independent of
            // whether any copy is greedy.
            let greedy_due: Vec<usize> = due.iter().copied().filter(|&e| self.greedy[e]).collect();
            let sampled_due: Vec<usize> =
                due.iter().copied().filter(|&e| !self.greedy[e]).collect();
            for (copies, sampling) in [
                (sampled_due, sampling),
                (greedy_due, Sampling::Deterministic),
            ] {
                if copies.is_empty() {
                    continue;
                }
                let outputs = if copies.len() == envs {
                    tick::infer(policy, &spec, &self.observations, sampling)?
                } else {
                    let observations: Vec<Observation> = copies
                        .iter()
                        .map(|&e| self.observations[e].clone())
                        .collect();
                    tick::infer(policy, &spec, &observations, sampling)?
                };
                for (&e, output) in copies.iter().zip(outputs) {
                    self.playing[e] = Some((output, 0));
                }
            }
            let mut chosen = Vec::with_capacity(envs);
            let mut commands = Vec::with_capacity(envs);
            for playing in self.playing.iter_mut() {
                let (output, at) = playing.as_mut().expect("every copy has a chunk");
                let (action, log_prob, sent) = chunk_action(output, *at);
                chosen.push((action, log_prob, *at as u32));
                commands.push(sent);
                *at += 1;
            }
            let results = self.vec_env.step(&commands)?;
            let now = tick::wall_clock_now();
            for (e, (((action, log_prob, chunk_index), command), result)) in
                chosen.into_iter().zip(commands).zip(results).enumerate()
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
                let mut transition = tick::record(
                    provenance,
                    observation,
                    action,
                    log_prob,
                    command,
                    &result.outcome,
                    now,
                );
                transition.chunk_index = chunk_index;
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
                        self.playing[e] = None;
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
