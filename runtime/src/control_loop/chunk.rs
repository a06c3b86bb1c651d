//! The actions of the current chunk still to send.

use cerebellum_core::{Action, PolicyOutput};
use std::collections::VecDeque;

/// Actions still to send, and the tick they were planned for.
pub(super) struct Chunk {
    pub(super) actions: VecDeque<Action>,
    pub(super) sampled: VecDeque<Option<Action>>,
    pub(super) log_prob: Option<f32>,
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
        let sampled = output.sampled.map(|s| s.actions);
        self.actions = output.chunk.actions.into_iter().skip(skip).collect();
        self.sampled = match sampled {
            Some(s) => s.into_iter().skip(skip).map(Some).collect(),
            None => std::iter::repeat_n(None, self.actions.len()).collect(),
        };
        self.log_prob = output.log_prob;
        self.index = skip as u32;
    }

    pub(super) fn next(&mut self) -> Option<(Action, Option<Action>, u32)> {
        let action = self.actions.pop_front()?;
        let sampled = self.sampled.pop_front().flatten();
        let index = self.index;
        self.index += 1;
        Some((action, sampled, index))
    }

    pub(super) fn clear(&mut self) {
        self.actions.clear();
        self.sampled.clear();
    }
}
