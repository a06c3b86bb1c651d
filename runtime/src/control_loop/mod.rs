//! The control loop: one thread driving one `Robot` at a fixed rate, one
//! tick a short pipeline of named stages over the tick stages training uses:
//!
//!   observe → infer → safety envelope → send → record
//!
//! The clock is injected (copper-rs style): under `SimClock` the loop runs
//! as fast as the CPU allows and every tick is reproducible; under
//! `WallClock` it holds the period. The tick has no `if sim` branch: the
//! one difference, whether inference may be abandoned at a deadline, is
//! `LoopConfig::inference_deadline`, which the caller sets from the clock
//! it injects.
//!
//! Inference runs inline (small policies, on this thread, single-threaded)
//! or on a worker thread the loop hands the newest observation to. A policy
//! that has not answered by the deadline is not waited for: the loop sends
//! the next action of the current chunk, or holds if none is left, and
//! counts a miss. A fresh chunk replaces the rest of the old one, aligned by
//! the ticks that passed since its observation was taken.
//!
//! By default the policy is asked for a fresh chunk at every fresh
//! observation. With chunk playback (`with_chunk_playback(lead)`, for a
//! policy that plans H actions per inference, such as a VLA) the loop plays
//! each chunk out and asks for the next only once `lead` or fewer actions
//! are left: inline, that tick runs the policy; on the worker, the request
//! goes out and the loop keeps playing, waiting (up to the deadline) only
//! when the chunk has run dry. The answer takes over at the index matching
//! its observation's age; one with nothing left to play is refused
//! (`stale_chunks`) and the current chunk plays on (`playback`). Whichever
//! the mode, every action passes the safety envelope on the tick it is
//! sent.
//!
//! New weights arrive as immutable, versioned snapshots (`PolicySlot`); the
//! loop picks up the newest between ticks without locking.

mod chunk;
mod inference;
mod operator;
mod playback;
mod sinks;
mod slot;
mod stats;

pub use inference::{Inference, InferenceWorker};
pub use operator::{ESTOP_PENALTY, EStopButton, INTERVENTION_PENALTY, TeleopInput};
pub use sinks::{ChannelSink, NoSink, Tee, TransitionSink};
pub use slot::{CheckedWeights, PolicySlot, PublishError};
pub use stats::{LoopCounters, LoopStats, LoopSummary};

use crate::envelope::{Measured, SafetyEnvelope};
use crate::tick;
use cerebellum_core::{
    Action, Clock, Observation, Policy, PolicyOutput, Provenance, ResetRequest, RewardComponents,
    Robot, RobotError, RobotSpec, Sampling,
};
use cerebellum_reward_models::labeller::LEARNED_SUCCESS;
use chunk::Chunk;
use inference::{InferenceAnswer, InferenceRequest};
use playback::Playback;
use std::time::{Duration, Instant};

/// Reward of the `safety` component at a tick where the envelope changed
/// the command (ALGORITHMS.md §3.4: envelope hits are a reward channel).
pub const SAFETY_PENALTY: f32 = -1.0;

#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Seed of the episode starts and of the policy's noise.
    pub seed: u64,
    /// Draw actions from the policy's distribution (training) or take its
    /// mean (deployment).
    pub stochastic: bool,
    /// Stop after this many finished episodes…
    pub max_episodes: Option<u64>,
    /// …or this many ticks, whichever comes first.
    pub max_ticks: Option<u64>,
    /// How long a tick may wait for inference; `None` waits for every
    /// answer (lockstep, for simulated time and determinism).
    pub inference_deadline: Option<Duration>,
    pub robot_id: String,
    /// Consecutive episodes that start from the same state (one seed): a
    /// GRPO group on the board. 1 gives every episode its own start.
    pub episodes_per_start: u64,
}

impl LoopConfig {
    /// Period minus a margin: what is left of a tick for inference once the
    /// other stages have had theirs.
    pub fn deadline_for(period: Duration) -> Duration {
        period.mul_f64(0.8)
    }
}

/// One robot, one clock, one policy, one envelope. The robot is private:
/// the loop is the one place that commands it (`send`, after the envelope).
pub struct ControlLoop<R, C, P> {
    robot: R,
    pub clock: C,
    pub inference: Inference<P>,
    pub envelope: SafetyEnvelope,
    pub config: LoopConfig,
    pub stats: LoopStats,
    estop_button: EStopButton,
    /// The operator's e-stop was pressed at this tick (its reward event).
    estop_pressed_now: bool,
    teleop: Option<TeleopInput>,
    success_judge: Option<crate::success_judge::SuccessJudge>,
    /// Asked between ticks whether to stop (Ctrl-C); see `with_stop`.
    stop: Option<fn() -> bool>,
    /// Stopping, or the tick limit reached, cuts the open episode
    /// (`with_final_truncation`).
    truncate_at_end: bool,
    /// Play chunks out rather than ask for one every tick
    /// (`with_chunk_playback`).
    playback: Option<Playback>,
    stopping: bool,
    /// The robot's spec, read once: the tick checks against it without
    /// copying it.
    spec: RobotSpec,
    observation: Option<Observation>,
    /// An episode has begun and not yet ended.
    episode_open: bool,
    last_timestamp: f64,
    observation_age: u32,
    chunk: Chunk,
    episode_id: u64,
    step: u32,
    tick: u64,
}

impl<R: Robot, C: Clock, P: Policy + CheckedWeights + Clone + Send + Sync + 'static>
    ControlLoop<R, C, P>
{
    pub fn new(
        robot: R,
        clock: C,
        inference: Inference<P>,
        envelope: SafetyEnvelope,
        config: LoopConfig,
    ) -> Self {
        Self {
            spec: robot.spec().clone(),
            robot,
            clock,
            inference,
            envelope,
            config,
            stats: LoopStats::new(),
            estop_button: EStopButton::default(),
            estop_pressed_now: false,
            teleop: None,
            success_judge: None,
            stop: None,
            truncate_at_end: false,
            playback: None,
            stopping: false,
            observation: None,
            episode_open: false,
            last_timestamp: f64::NEG_INFINITY,
            observation_age: 0,
            chunk: Chunk::empty(),
            episode_id: 0,
            step: 0,
            tick: 0,
        }
    }

    fn finished(&self) -> bool {
        self.stopping
            || self
                .config
                .max_episodes
                .is_some_and(|n| self.stats.counters.episodes >= n)
            || self
                .config
                .max_ticks
                .is_some_and(|n| self.stats.counters.ticks >= n)
    }

    /// Runs until the configured number of episodes or ticks, handing each
    /// transition to `sink`. Robot and policy errors are counted, not
    /// fatal; only a robot that cannot be reset ends the run. Raising the
    /// limits and calling it again continues the episode in progress.
    pub fn run(&mut self, sink: &mut dyn TransitionSink) -> Result<(), RobotError> {
        if !self.episode_open {
            self.begin_episode()?;
        }
        while !self.finished() {
            self.step_once(sink)?;
            let late = self.clock.wait_for_next_tick();
            self.stats
                .jitter_us
                .saturating_record(late.as_micros() as u64);
        }
        Ok(())
    }

    fn begin_episode(&mut self) -> Result<(), RobotError> {
        let seed = cerebellum_sim::vec_env::episode_seed(self.config.seed, 0, self.start_id());
        let observation = self.robot.reset(&ResetRequest { seed })?;
        self.last_timestamp = f64::NEG_INFINITY;
        self.observation = Some(observation);
        self.observation_age = 0;
        self.chunk.clear();
        if let Some(playback) = &mut self.playback {
            playback.episode_began = self.tick;
        }
        self.envelope.begin_episode();
        if let Some(judge) = &mut self.success_judge {
            judge.begin_episode();
        }
        self.step = 0;
        self.episode_open = true;
        Ok(())
    }

    /// This tick is the last: a stop was asked for, or (with
    /// `with_final_truncation`) the tick limit is reached.
    fn last_tick(&mut self) -> bool {
        if let Some(stop) = self.stop
            && stop()
        {
            self.stopping = true;
        }
        self.stopping
            || (self.truncate_at_end
                && self
                    .config
                    .max_ticks
                    .is_some_and(|n| self.stats.counters.ticks >= n))
    }

    /// One tick: observe → infer → envelope → send → record.
    pub fn step_once(&mut self, sink: &mut dyn TransitionSink) -> Result<(), RobotError> {
        let started = Instant::now();
        self.stats.counters.ticks += 1;
        self.tick += 1;
        let fresh = self.observe();
        let Some(observation) = self.observation.clone() else {
            // Nothing ever observed: only a hold can be sent.
            return self.send(None, None, started).map(|_| ());
        };
        let takeover = self.teleop.as_ref().and_then(TeleopInput::poll);
        if takeover.is_some() {
            // The operator has the arm; the policy's plan is void.
            self.chunk.clear();
        } else if self.playback.is_some() {
            self.infer_playing(&observation, fresh, started);
        } else if fresh {
            self.infer(&observation, started);
        }
        let planned = match &takeover {
            Some((command, _)) => Some((command.clone(), None, 0)),
            None => self.chunk.next(),
        };
        if planned.is_none() {
            self.stats.counters.holds += 1;
        }
        let proposed = planned.as_ref().map(|(a, _, _)| a.clone());
        let Some((mut outcome, checked)) =
            self.send(proposed.as_ref(), Some(&observation), started)?
        else {
            return Ok(());
        };
        if let Some(judge) = &mut self.success_judge {
            let fired = !outcome.done() && judge.judge(self.episode_id, self.tick, &observation);
            outcome
                .rewards
                .set(LEARNED_SUCCESS, f32::from(u8::from(fired)));
            if fired {
                outcome.terminated = true;
                outcome.success = Some(true);
                self.stats.counters.learned_successes += 1;
            }
        }
        if self.last_tick() && !outcome.done() {
            // The run ends here: the episode is cut, so every reader sees
            // it complete (truncated), not left open.
            outcome.truncated = true;
        }
        self.record(sink, observation, planned, checked, &outcome, takeover);
        self.step += 1;
        if outcome.done() {
            self.stats.counters.episodes += 1;
            self.stats.counters.successes += u64::from(outcome.success.unwrap_or(false));
            self.episode_id += 1;
            self.episode_open = false;
            if !self.finished() {
                self.begin_episode()?;
            }
        }
        self.pick_up_new_weights();
        Ok(())
    }

    /// observe: the newest observation; fresh when its robot timestamp moved
    /// on. A failing or repeating robot ages the last one (the envelope's
    /// watchdog acts on the age).
    fn observe(&mut self) -> bool {
        let observation = self.robot.observe().and_then(|o| {
            self.spec
                .observation
                .check(&o)
                .map(|_| o)
                .map_err(Into::into)
        });
        match observation {
            Ok(o) if o.timestamp > self.last_timestamp => {
                self.last_timestamp = o.timestamp;
                self.observation = Some(o);
                self.observation_age = 0;
                return true;
            }
            // The same (or an older) measurement again: the robot is late.
            Ok(_) => {}
            Err(_) => self.stats.counters.observe_errors += 1,
        }
        self.observation_age = self.observation_age.saturating_add(1);
        self.stats.counters.stale_ticks += 1;
        false
    }

    fn sampling(&self) -> Sampling {
        if self.config.stochastic {
            Sampling::Stochastic {
                seed: crate::learn::rollout::tick_seed(self.config.seed, self.tick),
            }
        } else {
            Sampling::Deterministic
        }
    }

    /// infer: a fresh chunk for a fresh observation, inline or from the
    /// worker, within the deadline.
    fn infer(&mut self, observation: &Observation, started: Instant) {
        if matches!(self.inference, Inference::Inline { .. }) {
            return self.infer_inline(observation, started);
        }
        self.request(observation);
        match self.wait_for_answer(started) {
            None => self.stats.counters.deadline_misses += 1,
            Some(answer) => {
                if let Some((output, version, observed_tick)) = self.checked_answer(answer) {
                    self.take_up(output, version, observed_tick);
                }
            }
        }
    }

    /// The policy on this thread, now: the chunk for this tick's
    /// observation.
    fn infer_inline(&mut self, observation: &Observation, started: Instant) {
        let sampling = self.sampling();
        let Inference::Inline { policy, .. } = &mut self.inference else {
            return;
        };
        let answer = tick::infer(
            policy,
            &self.spec,
            std::slice::from_ref(observation),
            sampling,
        );
        let version = policy.version();
        let delay = started.elapsed();
        match answer {
            Ok(mut outputs) => {
                self.stats
                    .inference_delay_us
                    .saturating_record(delay.as_micros() as u64);
                let output = outputs.pop().expect("one answer per observation");
                self.take_up(output, version, self.tick);
                if self.config.inference_deadline.is_some_and(|d| delay > d) {
                    self.stats.counters.deadline_misses += 1;
                }
            }
            Err(error) => {
                self.stats.policy_failed(error.to_string());
                self.chunk.clear();
            }
        }
    }

    /// Hands the worker this tick's observation, unless it is still busy
    /// with an earlier one; whether it was handed over.
    fn request(&mut self, observation: &Observation) -> bool {
        let sampling = self.sampling();
        match &mut self.inference {
            Inference::Worker(worker) => worker.request(InferenceRequest {
                tick: self.tick,
                observation: observation.clone(),
                sampling,
            }),
            Inference::Inline { .. } => false,
        }
    }

    /// The worker's answer, waiting for it until the deadline (counted
    /// from the start of the tick), or for as long as it takes without one.
    fn wait_for_answer(&mut self, started: Instant) -> Option<InferenceAnswer> {
        let timeout = self
            .config
            .inference_deadline
            .map(|deadline| deadline.saturating_sub(started.elapsed()));
        match &mut self.inference {
            Inference::Worker(worker) => worker.wait(timeout),
            Inference::Inline { .. } => None,
        }
    }

    /// A worker's answer, its latency recorded, checked against the action
    /// spec: its chunk, the weights' version and the tick of the
    /// observation it answers. A failure is counted and ends the current
    /// chunk.
    fn checked_answer(&mut self, answer: InferenceAnswer) -> Option<(PolicyOutput, u64, u64)> {
        self.stats
            .inference_delay_us
            .saturating_record(answer.delay.as_micros() as u64);
        match answer.output.and_then(|o| {
            self.spec
                .action
                .check_chunk(&o.chunk)
                .map(|_| o)
                .map_err(|e| cerebellum_core::PolicyError::Action(e).to_string())
        }) {
            Ok(output) => Some((output, answer.version, answer.tick)),
            Err(error) => {
                self.stats.policy_failed(error);
                self.chunk.clear();
                None
            }
        }
    }

    /// A fresh chunk replaces the rest of the current one, aligned by the
    /// ticks since its observation.
    fn take_up(&mut self, output: PolicyOutput, version: u64, observed_tick: u64) {
        self.chunk
            .replace(output, version, observed_tick, self.tick);
        self.stats.counters.chunks += 1;
    }

    /// envelope → send. `None` when the robot refused or failed (counted;
    /// the loop goes on).
    fn send(
        &mut self,
        proposed: Option<&Action>,
        observation: Option<&Observation>,
        started: Instant,
    ) -> Result<Option<(cerebellum_core::StepOutcome, crate::envelope::Checked)>, RobotError> {
        let measured = Measured {
            joint_positions: observation.and_then(|o| self.envelope.joint_positions(&o.state)),
            observation_age_ticks: self.observation_age,
        };
        match (self.estop_button.is_pressed(), self.envelope.estop()) {
            (true, None) => {
                self.envelope.set_estop(EStopButton::REASON);
                self.estop_pressed_now = true;
            }
            (false, Some(EStopButton::REASON)) => self.envelope.clear_estop(),
            _ => {}
        }
        let checked = self.envelope.check(proposed, measured);
        self.stats.envelope = self.envelope.counters();
        self.robot.set_policy_version(self.chunk.version);
        let result = self.robot.apply(&checked.command);
        self.stats
            .tick_latency_us
            .saturating_record(started.elapsed().as_micros() as u64);
        match result {
            Ok(outcome) => Ok(Some((outcome, checked))),
            Err(_) => {
                self.stats.counters.apply_errors += 1;
                Ok(None)
            }
        }
    }

    /// record: the transition with its provenance and the `safety` reward.
    fn record(
        &mut self,
        sink: &mut dyn TransitionSink,
        observation: Observation,
        planned: Option<(Action, Option<Action>, u32)>,
        checked: crate::envelope::Checked,
        outcome: &cerebellum_core::StepOutcome,
        takeover: Option<(Action, bool)>,
    ) {
        // Each action of a chunk carries its own log-probability (the
        // executed part of a chunk is what a learner credits); a hold or
        // the operator's command has none.
        let (policy_action, index, log_prob) = match planned {
            Some((a, s, i)) => (
                s.unwrap_or(a),
                i,
                self.chunk.log_prob_of(i).filter(|_| takeover.is_none()),
            ),
            None => (checked.command.clone(), 0, None),
        };
        let provenance = Provenance {
            robot_id: self.config.robot_id.clone(),
            episode_id: self.episode_id,
            task_instance_id: self.start_id(),
            group_id: (self.config.episodes_per_start > 1).then(|| self.start_id()),
            step: self.step,
            policy_version: self.chunk.version,
        };
        let mut transition = tick::record(
            provenance,
            observation,
            policy_action,
            log_prob,
            checked.command,
            outcome,
            tick::wall_clock_now(),
        );
        transition.chunk_index = index;
        if self.teleop.is_some() {
            let begins = takeover.as_ref().is_some_and(|(_, begins)| *begins);
            transition.intervention = takeover.is_some();
            transition.rewards.set(
                RewardComponents::INTERVENTION,
                if begins { INTERVENTION_PENALTY } else { 0.0 },
            );
            self.stats.counters.intervention_ticks += u64::from(takeover.is_some());
            self.stats.counters.takeovers += u64::from(begins);
        }
        if std::mem::take(&mut self.estop_pressed_now) {
            transition
                .rewards
                .set(RewardComponents::ESTOP, ESTOP_PENALTY);
        }
        transition.safety_clamped = checked.activations.any();
        if transition.safety_clamped {
            transition
                .rewards
                .set(RewardComponents::SAFETY, SAFETY_PENALTY);
        }
        if !sink.push(transition) {
            self.stats.counters.dropped_transitions += 1;
        }
    }

    /// Uses `button` as the loop's e-stop (one created before the loop, for
    /// a zenoh subscriber that must exist before the robot is connected).
    pub fn with_estop_button(mut self, button: EStopButton) -> Self {
        self.estop_button = button;
        self
    }

    /// Ends episodes when a learned success detector fires (see
    /// `success_judge`): inline under simulated time, lagged under wall
    /// time.
    pub fn with_success_judge(mut self, judge: crate::success_judge::SuccessJudge) -> Self {
        self.success_judge = Some(judge);
        self
    }

    /// What the success judge counted, when there is one.
    pub fn success_judge_counters(&self) -> Option<crate::success_judge::JudgeCounters> {
        self.success_judge.as_ref().map(|j| j.counters.clone())
    }

    /// Stops after the tick at which `stop` says so (Ctrl-C:
    /// `crate::interrupt::requested`), closing the open episode as
    /// truncated.
    pub fn with_stop(mut self, stop: fn() -> bool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The tick that reaches `max_ticks` closes the open episode as
    /// truncated (a one-shot run; a loop run in windows leaves it open to
    /// continue).
    pub fn with_final_truncation(mut self) -> Self {
        self.truncate_at_end = true;
        self
    }

    /// Plays each chunk out instead of asking the policy for a fresh one at
    /// every tick: the next chunk is asked for once `lead` or fewer actions
    /// of the current one are left (and the observation is fresh). On the
    /// worker the loop does not wait for it while actions are left; the
    /// answer takes over at the index of its observation's age, or is
    /// refused (`stale_chunks`) when all of it is already past. See
    /// `playback`.
    pub fn with_chunk_playback(mut self, lead: u32) -> Self {
        self.playback = Some(Playback::new(lead));
        self
    }

    /// Lets an operator take over through `teleop` (see `TeleopInput`).
    pub fn with_teleop(mut self, teleop: TeleopInput) -> Self {
        self.teleop = Some(teleop);
        self
    }

    /// The robot, to read (its figures, what it received); only the loop
    /// commands it.
    pub fn robot(&self) -> &R {
        &self.robot
    }

    /// A handle on the loop's e-stop for the operator's side.
    pub fn estop_button(&self) -> EStopButton {
        self.estop_button.clone()
    }

    /// Version of the weights the loop acts with now.
    pub fn policy_version(&self) -> u64 {
        match &self.inference {
            Inference::Inline { policy, .. } => policy.version(),
            Inference::Worker(_) => self.chunk.version,
        }
    }

    /// The start this episode shares with the others of its group.
    fn start_id(&self) -> u64 {
        self.episode_id / self.config.episodes_per_start.max(1)
    }

    /// Between ticks: the newest published weights, without locking.
    fn pick_up_new_weights(&mut self) {
        if let Inference::Inline { slot, policy } = &mut self.inference
            && slot.version() != policy.version()
        {
            *policy = (*slot.load()).clone();
            self.stats.counters.weight_updates += 1;
        }
    }
}
