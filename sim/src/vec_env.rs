//! N simulated robots stepped as a batch, optionally on several threads.
//!
//! Each copy owns its world and its generator and episodes are seeded from
//! (base seed, copy index, episode index), so results do not depend on the
//! thread count or on how copies are split between threads.

use crate::env::SimEnv;
use cerebellum_core::{Action, Observation, ResetRequest, Robot, RobotError, StepOutcome};

/// What one copy returned for one batched step.
#[derive(Clone, Debug, PartialEq)]
pub struct VecStep {
    pub outcome: StepOutcome,
    /// The observation to act on next: the first of a new episode when
    /// this step ended one.
    pub observation: Observation,
    /// The last observation of the episode that just ended, for
    /// bootstrapping from a truncated episode.
    pub final_observation: Option<Observation>,
}

struct Slot {
    env: SimEnv,
    episode: u64,
}

pub struct VecEnv {
    slots: Vec<Slot>,
    base_seed: u64,
    threads: usize,
}

/// Seed of episode `episode` of copy `copy` (SplitMix64 of the three, so
/// neighbouring copies and episodes get unrelated streams).
pub fn episode_seed(base_seed: u64, copy: usize, episode: u64) -> u64 {
    let mut z = base_seed
        ^ (copy as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ episode.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl VecEnv {
    /// `threads` = 1 steps the copies in order on the calling thread.
    pub fn new(envs: Vec<SimEnv>, base_seed: u64, threads: usize) -> Self {
        Self {
            slots: envs
                .into_iter()
                .map(|env| Slot { env, episode: 0 })
                .collect(),
            base_seed,
            threads: threads.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn envs(&self) -> impl Iterator<Item = &SimEnv> {
        self.slots.iter().map(|s| &s.env)
    }

    /// Starts episode 0 in every copy.
    pub fn reset(&mut self) -> Result<Vec<Observation>, RobotError> {
        let base = self.base_seed;
        self.map(|index, slot| {
            slot.episode = 0;
            slot.env.reset(&ResetRequest {
                seed: episode_seed(base, index, 0),
            })
        })
        .into_iter()
        .collect()
    }

    /// Starts groups of `group` copies from one state each: the first copy
    /// of group k is reset with `seeds[k]`, and its snapshot (world and
    /// generators) is restored into the others, so the group's rollouts
    /// differ only by the policy's own noise (group-relative learners).
    pub fn reset_groups(
        &mut self,
        group: usize,
        seeds: &[u64],
    ) -> Result<Vec<Observation>, RobotError> {
        assert!(
            group > 0 && self.slots.len() == group * seeds.len(),
            "copies = group × seeds"
        );
        let mut observations = Vec::with_capacity(self.slots.len());
        for (slots, &seed) in self.slots.chunks_mut(group).zip(seeds) {
            let (first, rest) = slots.split_first_mut().expect("group is not empty");
            let observation = first.env.reset(&ResetRequest { seed })?;
            let snapshot = first.env.snapshot();
            observations.push(observation);
            for slot in rest {
                slot.env.restore(&snapshot);
                observations.push(slot.env.observe()?);
            }
        }
        Ok(observations)
    }

    /// Applies one command per copy; copies whose episode ends are reset to
    /// their next episode.
    pub fn step(&mut self, commands: &[Action]) -> Result<Vec<VecStep>, RobotError> {
        assert_eq!(commands.len(), self.slots.len(), "one command per copy");
        let base = self.base_seed;
        self.map(|index, slot| {
            let outcome = slot.env.apply(&commands[index])?;
            let observation = slot.env.observe()?;
            if !outcome.done() {
                return Ok(VecStep {
                    outcome,
                    observation,
                    final_observation: None,
                });
            }
            slot.episode += 1;
            let next = slot.env.reset(&ResetRequest {
                seed: episode_seed(base, index, slot.episode),
            })?;
            Ok(VecStep {
                outcome,
                observation: next,
                final_observation: Some(observation),
            })
        })
        .into_iter()
        .collect()
    }

    /// Runs `f` on every copy, splitting the copies into `threads`
    /// contiguous blocks; results come back in copy order.
    fn map<T: Send>(&mut self, f: impl Fn(usize, &mut Slot) -> T + Sync) -> Vec<T> {
        if self.threads == 1 || self.slots.len() < 2 {
            return self
                .slots
                .iter_mut()
                .enumerate()
                .map(|(i, s)| f(i, s))
                .collect();
        }
        let block = self.slots.len().div_ceil(self.threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .slots
                .chunks_mut(block)
                .enumerate()
                .map(|(b, chunk)| {
                    let f = &f;
                    scope.spawn(move || {
                        chunk
                            .iter_mut()
                            .enumerate()
                            .map(|(i, s)| f(b * block + i, s))
                            .collect::<Vec<T>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a simulation thread panicked"))
                .collect()
        })
    }
}
