//! The labeller thread: learned rewards computed off the control thread.
//!
//!   loop ──transitions──▶ labeller ──labelled──▶ learner ──PolicySlot──▶ loop
//!                            ▲
//!                     RewardModelSlot ◀── a retrained model (watch_models)
//!
//! The loop's transitions carry the robot's own reward components (on a
//! real robot: none, or intervention / e-stop / safety); the labeller adds
//! the learned ones (`progress`, `success_model`, `progress_std`), each
//! stamped with the reward models' version. A transition's shaped progress
//! needs the state after it, so the labeller holds each robot's newest
//! transition until the next one arrives (or the episode ends): the
//! learner sees every transition one tick later than without learned
//! rewards.
//!
//! When the slot gets new models (a retrained progress model, say), the
//! labeller switches to them and tells the learner, which relabels what it
//! holds for its next update: no update mixes two reward versions, and
//! the learner reports the version each update trained on.
//!
//! Paces follow the learner's: in lockstep the loop's push returns after
//! the labeller has forwarded (and the learner taken) the transition
//! before it, so runs stay deterministic; in wall time every channel is
//! bounded and drops are counted, never waited on.

use super::online::{LearnerInput, LearnerSink, Pace, panic_message};
use crate::control_loop::TransitionSink;
use arc_swap::ArcSwap;
use cerebellum_core::Transition;
use cerebellum_reward_models::labeller::{LabelCounts, Labeller, RewardModels};
use serde::Serialize;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// The reward models the labeller uses; replaced whole, never edited.
pub struct RewardModelSlot {
    current: ArcSwap<RewardModels>,
}

impl RewardModelSlot {
    pub fn new(models: RewardModels) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(models),
        })
    }

    /// A slot starting from models already shared elsewhere.
    pub fn shared(models: Arc<RewardModels>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(models),
        })
    }

    pub fn load(&self) -> Arc<RewardModels> {
        self.current.load_full()
    }

    /// Replaces the models; refuses a version that is not newer.
    pub fn publish(&self, models: RewardModels) -> Result<(), String> {
        let current = self.current.load().version;
        if models.version <= current {
            return Err(format!(
                "reward models of version {} are not newer than the labeller's {current}",
                models.version
            ));
        }
        self.current.store(Arc::new(models));
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LabellerStatus {
    #[serde(flatten)]
    pub counts: LabelCounts,
    /// The version labelling now.
    pub reward_version: u64,
    pub model_changes: u64,
    /// Labelled transitions the learner's channel had no room for.
    pub dropped: u64,
    /// Time spent in the reward models per transition (µs).
    pub label_us_mean: f64,
    pub label_us_max: f64,
    pub failure: Option<String>,
}

pub struct LabellerThread {
    status: Arc<Mutex<LabellerStatus>>,
    handle: Option<JoinHandle<()>>,
}

struct Forwarding {
    labeller: Labeller,
    downstream: LearnerSink,
    /// Each robot's newest transition, waiting for the state after it.
    held: HashMap<String, Transition>,
    status: Arc<Mutex<LabellerStatus>>,
    label_seconds: f64,
}

impl Forwarding {
    fn label_and_forward(&mut self, mut t: Transition, next: Option<&Transition>) {
        let started = Instant::now();
        let next_observation = next.map(|n| &n.observation);
        let result = self.labeller.label(&mut [(&mut t, next_observation)]);
        let seconds = started.elapsed().as_secs_f64();
        self.label_seconds += seconds;
        if let Err(e) = result {
            // The transition goes on without learned components; the
            // learner leaves it out (`reward` is NaN without them).
            tracing::warn!("labelling failed: {e}");
        }
        let forwarded = self.downstream.push(t);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.counts = self.labeller.counts.clone();
        status.dropped += u64::from(!forwarded);
        let n = status.counts.labelled.max(1) as f64;
        status.label_us_mean = 1e6 * self.label_seconds / n;
        status.label_us_max = status.label_us_max.max(1e6 * seconds);
    }

    fn take(&mut self, t: Transition) {
        let robot = t.provenance.robot_id.clone();
        if let Some(previous) = self.held.remove(&robot) {
            let follows = previous.provenance.episode_id == t.provenance.episode_id
                && previous.provenance.step + 1 == t.provenance.step;
            self.label_and_forward(previous, follows.then_some(&t));
        }
        if t.terminated || t.truncated {
            self.label_and_forward(t, None);
        } else {
            self.held.insert(robot, t);
        }
    }

    fn flush(&mut self) {
        let mut robots: Vec<String> = self.held.keys().cloned().collect();
        robots.sort();
        for robot in robots {
            let t = self.held.remove(&robot).expect("listed");
            self.label_and_forward(t, None);
        }
    }
}

impl LabellerThread {
    /// Starts the labeller in front of `downstream` (the learner's sink);
    /// returns the sink the loop pushes into.
    pub fn spawn(
        slot: Arc<RewardModelSlot>,
        downstream: LearnerSink,
        pace: Pace,
    ) -> (LearnerSink, LabellerThread) {
        let (upstream, inbox, ack) = LearnerSink::channel(pace);
        let status = Arc::new(Mutex::new(LabellerStatus::default()));
        let shared = status.clone();
        let handle = std::thread::Builder::new()
            .name("labeller".into())
            .spawn(move || {
                let models = slot.load();
                shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reward_version = models.version;
                let mut forwarding = Forwarding {
                    labeller: Labeller::new(models),
                    downstream,
                    held: HashMap::new(),
                    status: shared.clone(),
                    label_seconds: 0.0,
                };
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    for input in inbox.iter() {
                        let LearnerInput::Transition(t) = input else {
                            continue;
                        };
                        let models = slot.load();
                        if models.version != forwarding.labeller.models().version {
                            forwarding.labeller.replace_models(models.clone());
                            forwarding.downstream.relabel(models.clone());
                            let mut status = shared.lock().unwrap_or_else(|p| p.into_inner());
                            status.model_changes += 1;
                            status.reward_version = models.version;
                        }
                        forwarding.take(t);
                        if let Some(ack) = &ack
                            && ack.send(()).is_err()
                        {
                            break;
                        }
                    }
                    forwarding.flush();
                }));
                if let Err(payload) = outcome {
                    let message = panic_message(payload.as_ref());
                    tracing::error!("labeller thread panicked: {message}");
                    shared.lock().unwrap_or_else(|p| p.into_inner()).failure =
                        Some(format!("labeller panicked: {message}"));
                }
            })
            .expect("spawn the labeller thread");
        (
            upstream,
            LabellerThread {
                status,
                handle: Some(handle),
            },
        )
    }

    pub fn status(&self) -> LabellerStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the thread to end (drop the loop's sink first).
    pub fn join(mut self) -> LabellerStatus {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.status()
    }
}

/// Polls the model directories every `every` and publishes a reload into
/// `slot` when a contract's model version changed (a `reward train` into
/// the same --out). Stops when `slot` has no other owner.
pub fn watch_models(
    slot: Arc<RewardModelSlot>,
    mut reload: impl FnMut() -> Option<RewardModels> + Send + 'static,
    every: std::time::Duration,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("reward-watch".into())
        .spawn(move || {
            while Arc::strong_count(&slot) > 1 {
                std::thread::sleep(every);
                if let Some(models) = reload()
                    && models.version != slot.load().version
                {
                    match slot.publish(models) {
                        Ok(()) => tracing::info!("reward models reloaded"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
            }
        })
        .expect("spawn the reward-model watcher")
}
