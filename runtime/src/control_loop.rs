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
//! New weights arrive as immutable, versioned snapshots (`PolicySlot`); the
//! loop picks up the newest between ticks without locking.

use crate::envelope::{EnvelopeCounters, Measured, SafetyEnvelope};
use crate::tick;
use arc_swap::ArcSwap;
use cerebellum_core::{
    Action, Clock, Observation, Policy, PolicyOutput, Provenance, ResetRequest, RewardComponents,
    Robot, RobotError, RobotSpec, Sampling, Transition,
};
use cerebellum_reward_models::labeller::LEARNED_SUCCESS;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Versioned weights published by a learner; readers never block writers.
pub struct PolicySlot<P> {
    current: ArcSwap<P>,
}

/// Weights that can say whether they are fit to publish.
pub trait CheckedWeights {
    /// Every weight finite (a learner that diverged produces NaN).
    fn weights_finite(&self) -> bool;
}

impl CheckedWeights for cerebellum_policies::GaussianMlpPolicy {
    fn weights_finite(&self) -> bool {
        self.is_finite()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "refused weights with non-finite values (version {0}); the loop keeps the last good ones"
    )]
    NonFinite(u64),
    #[error("refused weights of version {new}: not newer than the published {current}")]
    NotNewer { new: u64, current: u64 },
}

impl<P: Policy + CheckedWeights> PolicySlot<P> {
    pub fn new(policy: P) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(policy),
        })
    }

    /// Makes `policy` the one loops pick up next, if its weights are finite
    /// and its version newer.
    pub fn publish(&self, policy: P) -> Result<(), PublishError> {
        if !policy.weights_finite() {
            return Err(PublishError::NonFinite(policy.version()));
        }
        let current = self.version();
        if policy.version() <= current {
            return Err(PublishError::NotNewer {
                new: policy.version(),
                current,
            });
        }
        self.current.store(Arc::new(policy));
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.current.load().version()
    }

    pub fn load(&self) -> Arc<P> {
        self.current.load_full()
    }
}

/// The operator's e-stop: pressed and cleared from any thread (a teleop
/// console, a zenoh subscriber), acted on by the loop at its next tick. While
/// it is pressed the envelope's e-stop latch holds the measured pose.
#[derive(Clone, Debug, Default)]
pub struct EStopButton(Arc<AtomicBool>);

impl EStopButton {
    /// The reason the envelope's latch gives for an operator's stop.
    pub const REASON: &'static str = "operator e-stop";

    pub fn press(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The operator releases the stop; the robot moves again from the next
    /// tick.
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_pressed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reward of the `estop` component at the tick an operator's e-stop is
/// pressed (ALGORITHMS.md §3.4: e-stops are a reward channel like
/// interventions).
pub const ESTOP_PENALTY: f32 = -1.0;

/// Reward of the `intervention` component at the tick an operator takes
/// over (RLIF, ALGORITHMS.md §3.4); every other tick of a loop with a
/// teleop input carries 0.
pub const INTERVENTION_PENALTY: f32 = -1.0;

/// The teleoperator's takeover, fed from any thread (a zenoh subscriber, a
/// console). While it is active the operator's command replaces the
/// policy's (still through the envelope), the transitions are flagged as
/// interventions (demonstrations), and the takeover tick carries the
/// `intervention` reward.
#[derive(Clone, Debug, Default)]
pub struct TeleopInput(Arc<std::sync::Mutex<Takeover>>);

#[derive(Debug, Default)]
struct Takeover {
    active: bool,
    command: Option<Action>,
    /// The takeover has not been recorded yet.
    fresh: bool,
}

impl TeleopInput {
    fn lock(&self) -> std::sync::MutexGuard<'_, Takeover> {
        // A panicking writer leaves a consistent takeover behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator takes over, optionally with a first command.
    pub fn begin(&self, command: Option<Action>) {
        let mut t = self.lock();
        if !t.active {
            t.fresh = true;
        }
        t.active = true;
        if command.is_some() {
            t.command = command;
        }
    }

    /// The operator's command for the coming ticks (ignored unless a
    /// takeover is active).
    pub fn command(&self, command: Action) {
        let mut t = self.lock();
        if t.active {
            t.command = Some(command);
        }
    }

    /// The operator hands back to the policy.
    pub fn end(&self) {
        let mut t = self.lock();
        t.active = false;
        t.command = None;
    }

    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// The operator's command for this tick and whether the takeover
    /// begins at it; `None` when the policy has the arm.
    fn poll(&self) -> Option<(Action, bool)> {
        let mut t = self.lock();
        let command = t.command.clone().filter(|_| t.active)?;
        Some((command, std::mem::take(&mut t.fresh)))
    }
}

/// Where recorded transitions go: a file, a learner, a test's vector.
pub trait TransitionSink {
    /// Takes one transition; returns false when it had to drop it.
    fn push(&mut self, transition: Transition) -> bool;
}

impl TransitionSink for Vec<Transition> {
    fn push(&mut self, transition: Transition) -> bool {
        Vec::push(self, transition);
        true
    }
}

impl<T: TransitionSink + ?Sized> TransitionSink for &mut T {
    fn push(&mut self, transition: Transition) -> bool {
        (**self).push(transition)
    }
}

/// Hands every transition to both sinks (a learner and a recorder); it
/// counts as dropped when either dropped it.
pub struct Tee<A, B>(pub A, pub B);

impl<A: TransitionSink, B: TransitionSink> TransitionSink for Tee<A, B> {
    fn push(&mut self, transition: Transition) -> bool {
        let first = self.0.push(transition.clone());
        self.1.push(transition) && first
    }
}

/// Discards everything (`cerebellum run` without `--record`).
pub struct NoSink;

impl TransitionSink for NoSink {
    fn push(&mut self, _: Transition) -> bool {
        true
    }
}

/// A bounded channel to a learner: when it is full the loop drops the
/// transition and counts it (wall time), or waits (`blocking`, lockstep
/// under simulated time).
pub struct ChannelSink {
    pub sender: Sender<Transition>,
    pub blocking: bool,
}

impl TransitionSink for ChannelSink {
    fn push(&mut self, transition: Transition) -> bool {
        if self.blocking {
            return self.sender.send(transition).is_ok();
        }
        match self.sender.try_send(transition) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// What a run counted, tick by tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoopCounters {
    pub ticks: u64,
    pub episodes: u64,
    pub successes: u64,
    pub deadline_misses: u64,
    /// Ticks with no action left to send (the envelope held position).
    pub holds: u64,
    pub stale_ticks: u64,
    pub observe_errors: u64,
    pub apply_errors: u64,
    pub policy_errors: u64,
    pub dropped_transitions: u64,
    pub weight_updates: u64,
    /// Ticks the operator commanded, and takeovers begun.
    pub intervention_ticks: u64,
    pub takeovers: u64,
    /// Episodes a learned success detector ended (`with_success_judge`).
    pub learned_successes: u64,
}

/// Counters and latency histograms of a run, readable while it runs.
#[derive(Clone, Debug)]
pub struct LoopStats {
    pub counters: LoopCounters,
    pub envelope: EnvelopeCounters,
    /// Time from the start of a tick to its command being sent (µs).
    pub tick_latency_us: Histogram<u64>,
    /// How late each tick started against its schedule (µs).
    pub jitter_us: Histogram<u64>,
    /// Observation-to-answer delay of each chunk (µs).
    pub inference_delay_us: Histogram<u64>,
}

impl LoopStats {
    fn new() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self {
            counters: LoopCounters::default(),
            envelope: EnvelopeCounters::default(),
            tick_latency_us: histogram(),
            jitter_us: histogram(),
            inference_delay_us: histogram(),
        }
    }

    pub fn summary(&self) -> LoopSummary {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let c = self.counters;
        LoopSummary {
            counters: c,
            success_rate: (c.episodes > 0).then(|| c.successes as f64 / c.episodes as f64),
            clamps: self.envelope.clamps(),
            envelope: self.envelope,
            tick_latency_p50_us: q(&self.tick_latency_us, 0.5),
            tick_latency_p99_us: q(&self.tick_latency_us, 0.99),
            tick_latency_max_us: self.tick_latency_us.max(),
            jitter_p50_us: q(&self.jitter_us, 0.5),
            jitter_p99_us: q(&self.jitter_us, 0.99),
            jitter_max_us: self.jitter_us.max(),
            inference_delay_p50_us: q(&self.inference_delay_us, 0.5),
            inference_delay_max_us: self.inference_delay_us.max(),
        }
    }
}

/// The figures of a run, as `cerebellum run --json` prints them (the
/// counters flattened into the top level).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoopSummary {
    #[serde(flatten)]
    pub counters: LoopCounters,
    pub success_rate: Option<f64>,
    pub clamps: u64,
    pub envelope: EnvelopeCounters,
    pub tick_latency_p50_us: u64,
    pub tick_latency_p99_us: u64,
    pub tick_latency_max_us: u64,
    pub jitter_p50_us: u64,
    pub jitter_p99_us: u64,
    pub jitter_max_us: u64,
    pub inference_delay_p50_us: u64,
    pub inference_delay_max_us: u64,
}

/// A request to the inference worker: the observation of one tick.
struct InferenceRequest {
    tick: u64,
    observation: Observation,
    sampling: Sampling,
}

struct InferenceAnswer {
    tick: u64,
    version: u64,
    output: Result<PolicyOutput, String>,
    delay: Duration,
}

/// Runs the policy on its own thread; the loop hands it the newest
/// observation and never waits past its deadline.
pub struct InferenceWorker {
    requests: Sender<InferenceRequest>,
    answers: Receiver<InferenceAnswer>,
    busy: bool,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl InferenceWorker {
    pub fn spawn<P: Policy + CheckedWeights + Clone + Send + Sync + 'static>(
        slot: Arc<PolicySlot<P>>,
    ) -> Self {
        let (requests, inbox) = crossbeam_channel::bounded::<InferenceRequest>(1);
        let (outbox, answers) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                let mut policy = (*slot.load()).clone();
                for request in inbox {
                    if slot.version() != policy.version() {
                        policy = (*slot.load()).clone();
                    }
                    let started = Instant::now();
                    let output = policy
                        .act(std::slice::from_ref(&request.observation), request.sampling)
                        .map_err(|e| e.to_string())
                        .and_then(|mut o| o.pop().ok_or_else(|| "no answer".to_owned()));
                    let answer = InferenceAnswer {
                        tick: request.tick,
                        version: policy.version(),
                        output,
                        delay: started.elapsed(),
                    };
                    if outbox.send(answer).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the inference thread");
        Self {
            requests,
            answers,
            busy: false,
            handle: Some(handle),
        }
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        // Closing the request channel ends the worker's loop.
        let (closed, _) = crossbeam_channel::bounded(0);
        self.requests = closed;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Where a tick's chunk comes from.
pub enum Inference<P> {
    /// On the loop's thread: its own copy of the newest snapshot.
    Inline {
        slot: Arc<PolicySlot<P>>,
        policy: P,
    },
    Worker(InferenceWorker),
}

impl<P: Policy + CheckedWeights + Clone + Send + Sync + 'static> Inference<P> {
    pub fn inline(slot: Arc<PolicySlot<P>>) -> Self {
        let policy = (*slot.load()).clone();
        Self::Inline { slot, policy }
    }

    pub fn worker(slot: Arc<PolicySlot<P>>) -> Self {
        Self::Worker(InferenceWorker::spawn(slot))
    }
}

/// Actions still to send, and the tick they were planned for.
struct Chunk {
    actions: VecDeque<Action>,
    sampled: VecDeque<Option<Action>>,
    log_prob: Option<f32>,
    index: u32,
    /// Version of the weights that planned it.
    version: u64,
}

impl Chunk {
    fn empty() -> Self {
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
    fn replace(&mut self, output: PolicyOutput, version: u64, observed_tick: u64, now_tick: u64) {
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

    fn next(&mut self) -> Option<(Action, Option<Action>, u32)> {
        let action = self.actions.pop_front()?;
        let sampled = self.sampled.pop_front().flatten();
        let index = self.index;
        self.index += 1;
        Some((action, sampled, index))
    }

    fn clear(&mut self) {
        self.actions.clear();
        self.sampled.clear();
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
        self.config
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
        self.envelope.begin_episode();
        if let Some(judge) = &mut self.success_judge {
            judge.begin_episode();
        }
        self.step = 0;
        self.episode_open = true;
        Ok(())
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
        let sampling = self.sampling();
        match &mut self.inference {
            Inference::Inline { policy, .. } => {
                let answer = tick::infer(
                    policy,
                    &self.spec,
                    std::slice::from_ref(observation),
                    sampling,
                );
                let delay = started.elapsed();
                match answer {
                    Ok(mut outputs) => {
                        self.stats
                            .inference_delay_us
                            .saturating_record(delay.as_micros() as u64);
                        let output = outputs.pop().expect("one answer per observation");
                        self.chunk
                            .replace(output, policy.version(), self.tick, self.tick);
                        if self.config.inference_deadline.is_some_and(|d| delay > d) {
                            self.stats.counters.deadline_misses += 1;
                        }
                    }
                    Err(_) => {
                        self.stats.counters.policy_errors += 1;
                        self.chunk.clear();
                    }
                }
            }
            Inference::Worker(worker) => {
                if !worker.busy {
                    let request = InferenceRequest {
                        tick: self.tick,
                        observation: observation.clone(),
                        sampling,
                    };
                    worker.busy = worker.requests.send(request).is_ok();
                }
                let answer = match self.config.inference_deadline {
                    None => worker.answers.recv().ok(),
                    Some(deadline) => {
                        let left = deadline.saturating_sub(started.elapsed());
                        worker.answers.recv_timeout(left).ok()
                    }
                };
                match answer {
                    None => self.stats.counters.deadline_misses += 1,
                    Some(answer) => {
                        worker.busy = false;
                        self.stats
                            .inference_delay_us
                            .saturating_record(answer.delay.as_micros() as u64);
                        match answer.output.and_then(|o| {
                            self.spec
                                .action
                                .check_chunk(&o.chunk)
                                .map(|_| o)
                                .map_err(|e| e.to_string())
                        }) {
                            Ok(output) => {
                                self.chunk
                                    .replace(output, answer.version, answer.tick, self.tick)
                            }
                            Err(_) => {
                                self.stats.counters.policy_errors += 1;
                                self.chunk.clear();
                            }
                        }
                    }
                }
            }
        }
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
        // The chunk's log-probability belongs to its first action: a hold,
        // a later action of the chunk or the operator's command has none.
        let (policy_action, index, log_prob) = match planned {
            Some((a, s, i)) => (
                s.unwrap_or(a),
                i,
                self.chunk.log_prob.filter(|_| i == 0 && takeover.is_none()),
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
