//! The actions of the current chunk still to send.

use cerebellum_core::{Action, PolicyOutput};
use std::collections::VecDeque;

/// Actions still to send, and the tick they were planned for.
pub(super) struct Chunk {
    pub(super) actions: VecDeque<Action>,
    pub(super) sampled: VecDeque<Option<Action>>,
    pub(super) log_prob: Option<f32>,
    /// log π of each action of the whole chunk (before any was skipped).
    action_log_probs: Option<Vec<f32>>,
    /// Actions in the whole chunk.
    planned: usize,
    pub(super) index: u32,
    /// Version of the weights that planned it.
    pub(super) version: u64,
}

impl Chunk {
    pub(super) fn empty() -> Self {
        Self {
            actions: VecDeque::new(),
            sampled: VecDeque::new(),
            log_prob: None,
            action_log_probs: None,
            planned: 0,
            index: 0,
            version: 0,
        }
    }

    /// A fresh answer to the observation of `observed_tick`, received at
    /// `now_tick`: the actions meant for ticks already past are skipped.
    pub(super) fn replace(
        &mut self,
        output: PolicyOutput,
        version: u64,
        observed_tick: u64,
        now_tick: u64,
    ) {
        self.version = version;
        let skip = (now_tick - observed_tick) as usize;
        self.planned = output.chunk.len();
        self.action_log_probs = output.action_log_probs;
        let sampled = output.sampled.map(|s| s.actions);
        self.actions = output.chunk.actions.into_iter().skip(skip).collect();
        self.sampled = match sampled {
            Some(s) => s.into_iter().skip(skip).map(Some).collect(),
            None => std::iter::repeat_n(None, self.actions.len()).collect(),
        };
        self.log_prob = output.log_prob;
        self.index = skip as u32;
    }

    /// Actions still to send.
    pub(super) fn left(&self) -> usize {
        self.actions.len()
    }

    pub(super) fn next(&mut self) -> Option<(Action, Option<Action>, u32)> {
        let action = self.actions.pop_front()?;
        let sampled = self.sampled.pop_front().flatten();
        let index = self.index;
        self.index += 1;
        Some((action, sampled, index))
    }

    /// The behaviour log-probability of the action at chunk index `index`
    /// (ALGORITHMS.md §2, "Chunks as actions"): its own, where the policy
    /// gave one per action; the whole chunk's for a chunk of one action;
    /// none otherwise (a sum over the chunk cannot be credited per action).
    pub(super) fn log_prob_of(&self, index: u32) -> Option<f32> {
        match &self.action_log_probs {
            Some(each) => each.get(index as usize).copied(),
            None => self.log_prob.filter(|_| index == 0 && self.planned == 1),
        }
    }

    pub(super) fn clear(&mut self) {
        self.actions.clear();
        self.sampled.clear();
    }
}
