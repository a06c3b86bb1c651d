//! Learning on the board while the loop runs. The control loop is the
//! actor; a learner thread beside it turns the transitions it records into
//! new weights:
//!
//!   loop ──transitions, bounded channel──▶ learner ──PolicySlot──▶ loop
//!
//! Staleness-aware (decoupled) PPO, ALGORITHMS.md §2 (AReaL: Fu et al.
//! 2025, "AReaL: A Large-Scale Asynchronous Reinforcement Learning System
//! for Language Reasoning"): each transition carries the policy version
//! that planned it and the behaviour log-probability recorded when it
//! acted; the ratio is taken against that recorded log-probability, and a
//! transition more than `max_staleness` versions behind the learner's
//! weights is dropped.
//!
//! Two paces. Wall time (`Pace::WallTime`): the channel is bounded, the
//! loop drops (and counts) what does not fit and never waits; the learner
//! publishes whenever an update is done. Simulated time (`Pace::Lockstep`):
//! the loop waits until the learner has taken each transition, and the
//! update it completed, so weights change at the same tick in every run
//! and a run is a deterministic function of its seed.
//!
//! A learner that panics or produces non-finite weights never stops the
//! loop: the slot refuses non-finite weights, the loop keeps the last good
//! ones, and the failure is reported in `LearnerStatus`.

use super::chunk_credit::chunk_steps;
use super::config::{LEARNING_RATE, TrainConfig};
use super::group_advantages::{self, EpisodeOutcome};
use super::ppo::{self, UpdateStats};
use super::rollout::Rollout;
use super::trainer::{RewardScale, TrainerState, decision_batch, gae_batch};
use crate::control_loop::{CheckedWeights, PolicySlot, TransitionSink};
use cerebellum_core::bounds::Limits;
use cerebellum_core::{Observation, Policy, Transition};
use cerebellum_policies::{Adam, GaussianMlpPolicy, TrainablePolicy};
use cerebellum_reward_models::labeller::{RewardModels, relabel};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// `[online]` in the training config: fine-tuning through the loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    /// Transitions per PPO update (GRPO updates once per full group).
    pub batch_transitions: usize,
    /// Transitions planned by weights more than this many versions older
    /// than the learner's are dropped.
    pub max_staleness: u64,
    /// Transitions the channel from the loop holds before it drops.
    pub channel_capacity: usize,
    /// Constant step size: fine-tuning has no planned end to anneal to.
    pub learning_rate: f64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            batch_transitions: 1024,
            max_staleness: 2,
            channel_capacity: 8192,
            learning_rate: 3e-4,
        }
    }
}

/// Transitions per online update (≈20 s of robot time at 50 Hz by default).
pub const BATCH_TRANSITIONS: Limits<usize> = Limits::closed(2, 1 << 20).unit("transitions");
pub const MAX_STALENESS: Limits<u64> = Limits::closed(0, 1_000_000).unit("versions");
/// The bounded channel allocates its slots (a transition each) up front.
pub const CHANNEL_CAPACITY: Limits<usize> = Limits::closed(1, 1 << 16).unit("transitions");

impl OnlineConfig {
    /// Bounds on every key (`online.*`).
    pub fn validate(&self) -> Result<(), String> {
        BATCH_TRANSITIONS.check("online.batch_transitions", self.batch_transitions)?;
        MAX_STALENESS.check("online.max_staleness", self.max_staleness)?;
        CHANNEL_CAPACITY.check("online.channel_capacity", self.channel_capacity)?;
        LEARNING_RATE.check("online.learning_rate", self.learning_rate)
    }
}

/// What a learner counted; copied to `LearnerStatus` after every
/// transition.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LearnerCounters {
    pub received: u64,
    /// Transitions that went into an update.
    pub used: u64,
    /// Older than the staleness bound.
    pub stale: u64,
    /// Without a sampled action and its log-probability (holds, later
    /// actions of a chunk, operator commands).
    pub unusable: u64,
    /// Episodes or groups left incomplete by drops, or discarded for a
    /// non-finite return (the GRPO family).
    pub broken: u64,
    /// Groups discarded by dynamic sampling: their returns did not differ.
    pub no_spread: u64,
    pub updates: u64,
    /// Updates whose loss went non-finite (weights restored, nothing
    /// published).
    pub rolled_back: u64,
    pub last_update: Option<UpdateStats>,
    /// Transitions labelled again because the reward models changed.
    pub relabelled: u64,
    /// The reward-model version each update trained on, in order (with
    /// learned rewards; every row of an update carries one version).
    pub reward_versions: Vec<u64>,
}

/// The learner as the loop's owner sees it, updated while it runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LearnerStatus {
    #[serde(flatten)]
    pub counters: LearnerCounters,
    pub published: u64,
    /// Weights the slot refused (non-finite); the loop kept the last good.
    pub refused: u64,
    pub last_refusal: Option<String>,
    /// Why the learner thread stopped, when it did not stop cleanly.
    pub failure: Option<String>,
}

/// Turns transitions into weights.
pub trait OnlineLearner: Send + 'static {
    type Policy: Policy + CheckedWeights + Clone + Send + Sync + 'static;
    /// Takes one transition; returns the new weights when it completed an
    /// update.
    fn learn(&mut self, transition: Transition) -> Option<Self::Policy>;
    /// The reward models were retrained: label what is held for the next
    /// update again, so no update mixes two reward versions.
    fn relabel(&mut self, _models: &Arc<RewardModels>) {}
    /// The slot refused the last weights: go on from the published ones.
    fn recover(&mut self, published: &Self::Policy);
    fn counters(&self) -> LearnerCounters;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Bounded channel, drop when full, publish when ready.
    WallTime { capacity: usize },
    /// The loop waits for the learner on every transition (simulated time).
    Lockstep,
}

/// The loop's end of the channel. A fleet clones it: one per loop, all
/// feeding the same learner (in lockstep each push still waits for one
/// acknowledgement, whichever loop's transition it was for).
#[derive(Clone)]
pub struct LearnerSink {
    sender: Sender<LearnerInput>,
    /// Lockstep: one acknowledgement per transition, sent after the update
    /// (and publication) it completed.
    acks: Option<Receiver<()>>,
}

/// The text a panic carried (`panic!("…")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// What reaches the learner thread, in order.
// Nearly every input is a transition: boxing it would add an allocation
// per tick to save space on the rare relabel message.
#[allow(clippy::large_enum_variant)]
pub enum LearnerInput {
    Transition(Transition),
    /// New reward models: relabel the held transitions with them.
    Relabel(Arc<RewardModels>),
}

impl TransitionSink for LearnerSink {
    fn push(&mut self, transition: Transition) -> bool {
        let input = LearnerInput::Transition(transition);
        match &self.acks {
            None => match self.sender.try_send(input) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            // A learner that stopped answers neither: the transition is
            // dropped and the loop goes on.
            Some(acks) => self.sender.send(input).is_ok() && acks.recv().is_ok(),
        }
    }
}

impl LearnerSink {
    /// A sink and the receiving thread's ends: its inbox, and in lockstep
    /// the sender of the acknowledgement each push waits for.
    pub(crate) fn channel(pace: Pace) -> (LearnerSink, Receiver<LearnerInput>, Option<Sender<()>>) {
        let (sender, inbox) = match pace {
            Pace::WallTime { capacity } => crossbeam_channel::bounded(capacity.max(1)),
            Pace::Lockstep => crossbeam_channel::bounded(1),
        };
        let (ack, acks) = match pace {
            Pace::WallTime { .. } => (None, None),
            Pace::Lockstep => {
                let (s, r) = crossbeam_channel::bounded(1);
                (Some(s), Some(r))
            }
        };
        (LearnerSink { sender, acks }, inbox, ack)
    }

    /// Tells the learner the reward models changed; it relabels before it
    /// takes the next transition. Blocks until there is room (it is never
    /// called from the control thread).
    pub fn relabel(&self, models: Arc<RewardModels>) -> bool {
        self.sender.send(LearnerInput::Relabel(models)).is_ok()
    }
}

/// The learner thread; dropping the sink ends it.
pub struct LearnerThread {
    status: Arc<Mutex<LearnerStatus>>,
    handle: Option<JoinHandle<()>>,
}

impl LearnerThread {
    /// Starts `learner` on its own thread, publishing into `slot`.
    pub fn spawn<L: OnlineLearner>(
        mut learner: L,
        slot: Arc<PolicySlot<L::Policy>>,
        pace: Pace,
    ) -> (LearnerSink, LearnerThread) {
        let (sink, inbox, ack) = LearnerSink::channel(pace);
        let status = Arc::new(Mutex::new(LearnerStatus::default()));
        let shared = status.clone();
        let handle = std::thread::Builder::new()
            .name("learner".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    for input in inbox.iter() {
                        let transition = match input {
                            LearnerInput::Transition(t) => t,
                            LearnerInput::Relabel(models) => {
                                learner.relabel(&models);
                                let mut status = shared.lock().unwrap_or_else(|p| p.into_inner());
                                status.counters = learner.counters();
                                continue;
                            }
                        };
                        let weights = learner.learn(transition);
                        let mut status = shared.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(weights) = weights {
                            match slot.publish(weights) {
                                Ok(()) => status.published += 1,
                                Err(e) => {
                                    status.refused += 1;
                                    status.last_refusal = Some(e.to_string());
                                    tracing::warn!("learner: {e}");
                                    learner.recover(&slot.load());
                                }
                            }
                        }
                        status.counters = learner.counters();
                        drop(status);
                        if let Some(ack) = &ack
                            && ack.send(()).is_err()
                        {
                            break;
                        }
                    }
                }));
                if let Err(payload) = outcome {
                    let message = panic_message(payload.as_ref());
                    tracing::error!(
                        "learner thread panicked: {message}; the loop keeps the last good weights"
                    );
                    shared.lock().unwrap_or_else(|p| p.into_inner()).failure =
                        Some(format!("learner panicked: {message}"));
                }
            })
            .expect("spawn the learner thread");
        (
            sink,
            LearnerThread {
                status,
                handle: Some(handle),
            },
        )
    }

    /// The learner's figures so far.
    pub fn status(&self) -> LearnerStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the thread to end (drop the sink first) and returns the
    /// final status.
    pub fn join(mut self) -> LearnerStatus {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.status()
    }
}

/// A policy the online learners can train and the slot can publish.
pub trait LearnablePolicy: TrainablePolicy + CheckedWeights + Sync {}
impl<P: TrainablePolicy + CheckedWeights + Sync> LearnablePolicy for P {}

/// What both online learners carry: the weights they train, the
/// optimiser, the minibatch shuffler and their counts.
struct Learning<P> {
    policy: P,
    config: TrainConfig,
    adam: Adam,
    rng: ChaCha8Rng,
    counters: LearnerCounters,
}

impl<P: LearnablePolicy> Learning<P> {
    fn new(policy: P, config: TrainConfig, adam: Option<Adam>, salt: u64) -> Self {
        Self {
            adam: adam.unwrap_or_else(|| policy.optimizer(config.online.learning_rate)),
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ salt),
            policy,
            config,
            counters: LearnerCounters::default(),
        }
    }

    /// Counts `t` in and says whether a policy-gradient update may use it:
    /// an action the policy sampled (any action of a chunk: the executed
    /// part of a chunk is credited, `chunk_credit`), with its
    /// log-probability, from weights within the staleness bound.
    fn admit(&mut self, t: &Transition) -> bool {
        self.counters.received += 1;
        if t.behaviour_log_prob.is_none() || t.intervention {
            self.counters.unusable += 1;
            return false;
        }
        let behind = self
            .policy
            .version()
            .saturating_sub(t.provenance.policy_version);
        if behind > self.config.online.max_staleness {
            self.counters.stale += 1;
            return false;
        }
        true
    }

    /// Records which reward-model version the rows of an update carry.
    fn note_reward_version(&mut self, rows: &[Transition]) {
        if let Some(version) = rows.iter().filter_map(|t| t.reward_version).max() {
            debug_assert!(
                rows.iter().all(|t| t.reward_version == Some(version)),
                "relabelling keeps one version per update"
            );
            self.counters.reward_versions.push(version);
        }
    }

    /// Labels `transitions` again with `models`.
    fn relabel(&mut self, models: &Arc<RewardModels>, transitions: &mut [Transition]) {
        match relabel(models.clone(), transitions) {
            Ok((_, counts)) => self.counters.relabelled += counts.labelled,
            Err(e) => tracing::error!("relabelling failed: {e}; the rows keep their old labels"),
        }
    }

    /// One update of the clipped loss (`TrainConfig::loss_settings`) at
    /// the online step size; the new weights, one version up, unless it
    /// rolled back.
    fn update(&mut self, batch: &ppo::Batch<P::Encoded>) -> Option<P> {
        if batch.is_empty() {
            return None;
        }
        let ppo_config = self.config.loss_settings();
        let stats = ppo::update(
            &mut self.policy,
            &mut self.adam,
            batch,
            &ppo_config,
            self.config.online.learning_rate,
            &mut self.rng,
        );
        self.counters.used += batch.len() as u64;
        self.counters.last_update = Some(stats.clone());
        if stats.rolled_back || stats.minibatch_steps == 0 {
            self.counters.rolled_back += u64::from(stats.rolled_back);
            return None;
        }
        self.counters.updates += 1;
        let version = self.policy.version() + 1;
        self.policy.set_version(version);
        Some(self.policy.clone())
    }
}

/// Decoupled PPO with GAE on the transitions of one robot, in arrival
/// order: every `batch_transitions` usable transitions make one update.
/// Holes (drops, stale or unusable transitions) end the advantage
/// recursion like a time limit, bootstrapping from the value of the last
/// state seen, as does the episode's time limit (the loop records no final
/// observation).
pub struct OnlinePpo<P: LearnablePolicy = GaussianMlpPolicy> {
    learning: Learning<P>,
    reward_scale: RewardScale,
    pending: Vec<Transition>,
}

impl<P: LearnablePolicy> OnlinePpo<P> {
    /// Continues from `policy` (and the optimiser and reward scale of the
    /// run that trained it, when given).
    pub fn new(policy: P, config: TrainConfig, state: Option<TrainerState>) -> Self {
        let (adam, reward_scale) = match state {
            Some(s) => (Some(s.adam), s.reward_scale),
            None => (None, RewardScale::default()),
        };
        Self {
            learning: Learning::new(policy, config, adam, 0x0041_111E),
            reward_scale,
            pending: Vec::new(),
        }
    }

    /// Ends the recursion at the last pending transition.
    fn cut(&mut self) {
        if let Some(last) = self.pending.last_mut()
            && !last.terminated
        {
            last.truncated = true;
        }
    }

    fn update(&mut self) -> Option<P> {
        let n = self.learning.config.online.batch_transitions;
        let rest = self.pending.split_off(n);
        let rows = std::mem::replace(&mut self.pending, rest);
        self.learning.note_reward_version(&rows);
        let next_observations: Vec<Observation> = rows
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let next = if i + 1 < n {
                    &rows[i + 1]
                } else {
                    &self.pending[0]
                };
                if t.terminated || t.truncated {
                    t.observation.clone()
                } else {
                    next.observation.clone()
                }
            })
            .collect();
        let rollout = Rollout {
            envs: 1,
            transitions: rows,
            next_observations,
            finished: Vec::new(),
        };
        let learning = &mut self.learning;
        let batch = match gae_batch(
            &mut learning.policy,
            &learning.config,
            &mut self.reward_scale,
            &rollout,
            None,
        ) {
            Ok((batch, _)) => batch,
            Err(e) => {
                tracing::error!("online PPO: cannot build the batch, its rows are dropped: {e}");
                learning.counters.unusable += rollout.transitions.len() as u64;
                return None;
            }
        };
        learning.update(&batch)
    }
}

impl<P: LearnablePolicy> OnlineLearner for OnlinePpo<P> {
    type Policy = P;

    fn learn(&mut self, t: Transition) -> Option<P> {
        if !self.learning.admit(&t) {
            self.cut();
            return None;
        }
        if let Some(last) = self.pending.last()
            && (last.provenance.episode_id != t.provenance.episode_id
                || last.provenance.step + 1 != t.provenance.step)
        {
            self.cut();
        }
        self.pending.push(t);
        // One beyond the batch: its observation is the last row's next.
        (self.pending.len() > self.learning.config.online.batch_transitions)
            .then(|| self.update())
            .flatten()
    }

    fn relabel(&mut self, models: &Arc<RewardModels>) {
        let mut pending = std::mem::take(&mut self.pending);
        self.learning.relabel(models, &mut pending);
        self.pending = pending;
    }

    fn recover(&mut self, published: &P) {
        self.learning.policy = published.clone();
    }

    fn counters(&self) -> LearnerCounters {
        self.learning.counters.clone()
    }
}

/// Group-relative advantages on the board (ALGORITHMS.md §1): the loop
/// runs `Algo::rollouts_per_start` consecutive episodes from one commanded
/// start (`LoopConfig::episodes_per_start`, which gives them one
/// `group_id`): G for grpo, dr-grpo, rloo, gdpo and stratified, G + 1 for
/// mc-grpo. When a group is complete its episodes are scored by the
/// configured estimator (`group_advantages`) and every step of an episode
/// takes its advantage. No critic. A group an episode of which lost
/// transitions, or with a non-finite return, is discarded whole (its
/// baseline would be wrong); under dynamic sampling so is a group whose
/// returns do not differ, and the next group is the resample. SPO and
/// ReMax are not run on a robot (`train --online` says why).
pub struct OnlineGrpo<P: LearnablePolicy = GaussianMlpPolicy> {
    learning: Learning<P>,
    /// Finished episodes by group, and whether each is whole.
    groups: BTreeMap<u64, Vec<(Vec<Transition>, bool)>>,
    episode: Vec<Transition>,
    episode_whole: bool,
}

impl<P: LearnablePolicy> OnlineGrpo<P> {
    pub fn new(policy: P, config: TrainConfig) -> Self {
        Self {
            learning: Learning::new(policy, config, None, 0x0411_6290),
            groups: BTreeMap::new(),
            episode: Vec::new(),
            episode_whole: true,
        }
    }

    fn finish_episode(&mut self) -> Option<P> {
        let episode = std::mem::take(&mut self.episode);
        let whole = std::mem::replace(&mut self.episode_whole, true);
        let learning = &mut self.learning;
        let group = learning.config.group;
        let Some(group_id) = episode.first().and_then(|t| t.provenance.group_id) else {
            // Not run as part of a group (`episodes_per_start` is 1).
            learning.counters.broken += 1;
            return None;
        };
        // Groups older than this one can no longer be completed.
        let older: Vec<u64> = self.groups.range(..group_id).map(|(k, _)| *k).collect();
        for k in older {
            self.groups.remove(&k);
            learning.counters.broken += 1;
        }
        let members = self.groups.entry(group_id).or_default();
        members.push((episode, whole));
        if members.len() < learning.config.algo.rollouts_per_start(group) {
            return None;
        }
        let members = self.groups.remove(&group_id).expect("just filled");
        let rows: Vec<Transition> = members.iter().flat_map(|(e, _)| e.clone()).collect();
        learning.note_reward_version(&rows);
        if members.iter().any(|(_, whole)| !whole) {
            learning.counters.broken += 1;
            return None;
        }
        let horizon = members.iter().map(|(e, _)| e.len()).max().unwrap_or(1);
        let outcomes: Vec<EpisodeOutcome> = members
            .iter()
            .map(|(e, _)| {
                let episode: Vec<&Transition> = e.iter().collect();
                EpisodeOutcome::of(&learning.config, &episode, horizon)
            })
            .collect();
        let estimate = match group_advantages::episode_advantages(&learning.config, &outcomes, None)
        {
            Ok(estimate) => estimate,
            Err(e) => {
                tracing::error!("online {}: the group is dropped: {e}", learning.config.algo);
                learning.counters.broken += 1;
                return None;
            }
        };
        learning.counters.broken += estimate.non_finite as u64;
        learning.counters.no_spread += estimate.no_spread as u64;
        if estimate.kept == 0 {
            return None;
        }
        let mut transitions = Vec::new();
        let mut episode_of = Vec::new();
        let mut valid = Vec::new();
        for (k, ((episode, _), &in_loss)) in members.into_iter().zip(&estimate.in_loss).enumerate()
        {
            episode_of.extend(std::iter::repeat_n(k, episode.len()));
            // MC-GRPO's pivot gives the baseline only.
            valid.extend(
                episode
                    .iter()
                    .map(|t| in_loss && t.observation.state.iter().all(|v| v.is_finite())),
            );
            transitions.extend(episode);
        }
        let zeros = vec![0.0; transitions.len()];
        let steps = chunk_steps(1, &transitions, &zeros, &valid, learning.config.gamma);
        let advantages: Vec<f32> = steps
            .steps
            .iter()
            .map(|s| estimate.advantages[episode_of[s.plan_row]])
            .collect();
        let weights: Vec<f32> = steps
            .steps
            .iter()
            .map(|s| estimate.loss_weights[episode_of[s.plan_row]])
            .collect();
        let zeros = vec![0.0; steps.steps.len()];
        let batch = match decision_batch(
            &learning.policy,
            &transitions,
            &steps.steps,
            &advantages,
            &zeros,
            &zeros,
            &weights,
        ) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!("online GRPO: cannot build the batch, the group is dropped: {e}");
                learning.counters.broken += 1;
                return None;
            }
        };
        learning.update(&batch)
    }
}

impl<P: LearnablePolicy> OnlineLearner for OnlineGrpo<P> {
    type Policy = P;

    fn learn(&mut self, t: Transition) -> Option<P> {
        if let Some(last) = self.episode.last()
            && last.provenance.episode_id != t.provenance.episode_id
        {
            // The end of the last episode never arrived.
            self.episode.clear();
            self.episode_whole = true;
            self.learning.counters.broken += 1;
        }
        let in_step = t.provenance.step == self.episode.len() as u32;
        if !self.learning.admit(&t) || !in_step || t.provenance.group_id.is_none() {
            self.episode_whole = false;
        }
        let ended = t.terminated || t.truncated;
        self.episode.push(t);
        if ended { self.finish_episode() } else { None }
    }

    fn relabel(&mut self, models: &Arc<RewardModels>) {
        // Each episode is labelled on its own: its frames are whole.
        let mut groups = std::mem::take(&mut self.groups);
        for (episode, _) in groups.values_mut().flatten() {
            self.learning.relabel(models, episode);
        }
        self.groups = groups;
        let mut episode = std::mem::take(&mut self.episode);
        self.learning.relabel(models, &mut episode);
        self.episode = episode;
    }

    fn recover(&mut self, published: &P) {
        self.learning.policy = published.clone();
    }

    fn counters(&self) -> LearnerCounters {
        self.learning.counters.clone()
    }
}
