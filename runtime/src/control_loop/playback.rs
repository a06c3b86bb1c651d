//! Chunk playback (`ControlLoop::with_chunk_playback`): a policy that plans
//! H actions per inference (a vision-language-action model, a few ms a
//! chunk) is asked again only when its chunk is nearly played out, not at
//! every tick.
//!
//! Each tick, before the action is taken from the chunk:
//!
//! 1. the worker's answer, if one came in since the last tick, is taken up
//!    (never waited for here);
//! 2. with a fresh observation and `lead` or fewer actions left, the next
//!    chunk is asked for: inline, it is computed now; on the worker, the
//!    request goes out and the loop plays on;
//! 3. on the worker, the loop waits (up to the deadline, as without
//!    playback) only when the chunk is empty and an answer is on its way;
//!    one that does not come in time is a deadline miss, and the tick
//!    holds.
//!
//! An answer to the observation of tick t taken up at tick n starts at
//! index n − t: its first actions were meant for ticks already past. One
//! with nothing left to play (n − t ≥ its length), or answering an
//! observation from before the episode began, is refused and counted
//! (`stale_chunks`); the current chunk plays on.
//!
//! Without a deadline (lockstep, simulated time) the worker is waited for
//! on the tick it was asked, as without playback, so a run is as
//! reproducible as inline inference.

use super::inference::InferenceAnswer;
use super::{CheckedWeights, ControlLoop, Inference};
use cerebellum_core::{Clock, Observation, Policy, Robot};
use std::time::Instant;

/// When the next chunk is asked for, and which answers still count.
pub(super) struct Playback {
    /// The next chunk is asked for once this many actions, or fewer, are
    /// left of the current one.
    lead: usize,
    /// The tick at which the episode in progress began: an answer to an
    /// observation up to it planned for the episode before.
    pub(super) episode_began: u64,
}

impl Playback {
    pub(super) fn new(lead: u32) -> Self {
        Self {
            lead: lead as usize,
            episode_began: 0,
        }
    }

    /// Whether a chunk of `len` actions planned at `observed_tick` has
    /// nothing left to play at `now_tick`, or belongs to an earlier
    /// episode.
    fn stale(&self, observed_tick: u64, len: usize, now_tick: u64) -> bool {
        observed_tick <= self.episode_began || now_tick.saturating_sub(observed_tick) >= len as u64
    }
}

impl<R: Robot, C: Clock, P: Policy + CheckedWeights + Clone + Send + Sync + 'static>
    ControlLoop<R, C, P>
{
    /// infer, playing chunks out (see the module's documentation).
    pub(super) fn infer_playing(
        &mut self,
        observation: &Observation,
        fresh: bool,
        started: Instant,
    ) {
        let Some(lead) = self.playback.as_ref().map(|p| p.lead) else {
            return;
        };
        let due = |left: usize| fresh && left <= lead;
        if matches!(self.inference, Inference::Inline { .. }) {
            if due(self.chunk.left()) {
                self.infer_inline(observation, started);
            }
            return;
        }
        if let Inference::Worker(worker) = &mut self.inference
            && let Some(answer) = worker.poll()
        {
            self.take_up_playing(answer);
        }
        let lockstep = self.config.inference_deadline.is_none();
        // At most one request a tick; at most two waits (for the answer in
        // flight, then for the one asked after it was refused).
        let mut asked = false;
        loop {
            if !asked && due(self.chunk.left()) {
                asked = self.request(observation);
            }
            let in_flight = matches!(&self.inference, Inference::Worker(w) if w.busy);
            if !(in_flight && (self.chunk.left() == 0 || lockstep)) {
                break;
            }
            match self.wait_for_answer(started) {
                None => {
                    self.stats.counters.deadline_misses += 1;
                    break;
                }
                Some(answer) => self.take_up_playing(answer),
            }
        }
    }

    /// Takes up a worker's answer, or refuses it when it is stale.
    fn take_up_playing(&mut self, answer: InferenceAnswer) {
        let Some((output, version, observed_tick)) = self.checked_answer(answer) else {
            return;
        };
        let stale = self
            .playback
            .as_ref()
            .is_some_and(|p| p.stale(observed_tick, output.chunk.len(), self.tick));
        if stale {
            self.stats.counters.stale_chunks += 1;
        } else {
            self.take_up(output, version, observed_tick);
        }
    }
}
