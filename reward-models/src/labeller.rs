//! Labelling transitions with learned rewards: the bridge between reward
//! models and a learner. For each transition s → s′ of an episode the
//! labeller adds, as separate named components,
//!
//! - `progress`: the progress ensemble used as a potential (Ng et al.
//!   1999, ALGORITHMS.md §4): γ·Φ(s′) − Φ(s), Φ the aggregated progress of
//!   the model's observation history ending at that state. Raw progress
//!   would pay a policy for hovering in high-progress states (§3.2);
//!   the shaped form sums to γ^T Φ(s_T) − Φ(s_0) over an episode.
//! - `progress_potential`: Φ(s′) itself, logged to compare with a ground
//!   truth where one exists.
//! - `progress_std`: the ensemble members' spread at s′, the
//!   out-of-distribution / reward-hacking alarm (§3.5); logged, never
//!   optimised unless a weight asks for it.
//! - `success_model`: 1 on the tick the success detector fires (k
//!   consecutive frames with P(success | s′) ≥ threshold, §3.3), else 0;
//!   optionally the episode ends there (`terminated`).
//!
//! Each labelled transition carries the reward models' version
//! (`Transition::reward_version`). A non-finite model output leaves the
//! component out of the transition and is counted: a learner must treat
//! it as missing, never as zero.
//!
//! Episodes are told apart by (robot id, episode id); the labeller keeps
//! each open episode's recent frames, so a rollout can be labelled in
//! pieces, and a batch of transitions from many robots is scored with one
//! forward pass per model.

use crate::contract::{Expected, ModelError};
use crate::ensemble::{Aggregate, EnsembleReward, aggregate};
use crate::progress::ProgressModel;
use crate::shaping::{delta, potential_shaping};
use crate::success::{SuccessClassifier, SuccessDetector};
use cerebellum_core::bounds::{Limits, refusal};
use cerebellum_core::{Observation, RewardComponents, Transition};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// The component names the labeller writes.
pub const PROGRESS: &str = RewardComponents::PROGRESS;
pub const PROGRESS_STD: &str = "progress_std";
/// Φ(s′) itself, logged beside the shaped reward (to compare with a
/// ground truth where there is one; never optimised unless asked).
pub const PROGRESS_POTENTIAL: &str = "progress_potential";
pub const LEARNED_SUCCESS: &str = "success_model";
/// P(success | s) as `RewardModel::score` reports it.
pub const SUCCESS_PROBABILITY: &str = "success_probability";

/// Which models to load and how to use them (the `[reward]` table of a
/// training config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardModelConfig {
    /// Progress model directories: one model, or the members of an
    /// ensemble (trained with different seeds / data orders).
    pub progress: Vec<PathBuf>,
    pub aggregate: Aggregate,
    /// Success classifier directory.
    pub success: Option<PathBuf>,
    /// P(success) at or above which a frame counts as successful.
    pub success_threshold: f32,
    /// Consecutive successful frames before the detector fires.
    pub success_frames: u32,
    /// The episode ends (terminated) when the detector fires.
    pub success_ends_episode: bool,
    /// In the wall-clock loop, the detector's verdict on a tick ends the
    /// episode this many ticks later (it runs off the control thread).
    pub success_lag_ticks: u64,
    /// How progress becomes a reward (ALGORITHMS.md §4).
    pub progress_shaping: ProgressShaping,
}

/// How the `progress` component is formed from Φ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressShaping {
    /// γΦ(s′) − Φ(s) (Ng et al. 1999): leaves the optimal policy of the
    /// other components unchanged, and so, with no other reward, prefers
    /// no policy over another: pair it with a success reward.
    #[default]
    Potential,
    /// Φ(s′) − Φ(s): undiscounted, so it pays for progress on its own
    /// (its sum telescopes: repeating a step cannot farm it).
    Delta,
    /// Φ(s′) every tick: progress itself as a dense reward, the form a
    /// task's own distance-style reward has. Pays for every tick spent far
    /// along, so it is only as good as Φ where the policy goes (restrict
    /// the model's `--fields` to what success depends on).
    Level,
}

impl Default for RewardModelConfig {
    fn default() -> Self {
        Self {
            progress: Vec::new(),
            aggregate: Aggregate::Mean,
            success: None,
            success_threshold: 0.9,
            success_frames: 3,
            success_ends_episode: true,
            success_lag_ticks: 2,
            progress_shaping: ProgressShaping::Potential,
        }
    }
}

impl RewardModelConfig {
    pub fn is_empty(&self) -> bool {
        self.progress.is_empty() && self.success.is_none()
    }

    /// Bounds on every key (`reward.*`).
    pub fn validate(&self) -> Result<(), String> {
        if self.progress.len() > MAX_PROGRESS_MODELS {
            return Err(refusal(
                "reward.progress",
                self.progress.len(),
                &format!("at most {MAX_PROGRESS_MODELS} progress models (ensemble members)"),
            ));
        }
        SUCCESS_THRESHOLD.check("reward.success_threshold", self.success_threshold)?;
        SUCCESS_FRAMES.check("reward.success_frames", self.success_frames)?;
        SUCCESS_LAG_TICKS.check("reward.success_lag_ticks", self.success_lag_ticks)?;
        if let Aggregate::MeanMinusStd { lambda } = self.aggregate {
            ENSEMBLE_LAMBDA.check("reward.aggregate.mean_minus_std.lambda", lambda)?;
        }
        Ok(())
    }
}

/// Members of a progress ensemble.
pub const MAX_PROGRESS_MODELS: usize = 64;
pub const SUCCESS_THRESHOLD: Limits<f32> = Limits::open_closed(0.0, 1.0);
pub const SUCCESS_FRAMES: Limits<u32> = Limits::closed(1, 10_000).unit("frames");
pub const SUCCESS_LAG_TICKS: Limits<u64> = Limits::closed(0, 10_000).unit("ticks");
/// λ of mean − λ·std over the ensemble.
pub const ENSEMBLE_LAMBDA: Limits<f64> = Limits::closed(0.0, 100.0);

/// Loaded, checked reward models; immutable once built, shared between
/// threads, replaced whole when one is retrained.
pub struct RewardModels {
    progress: Vec<ProgressModel>,
    success: Option<SuccessClassifier>,
    config: RewardModelConfig,
    gamma: f64,
    /// The sum of the members' `model_version`s: retraining any member
    /// raises it.
    pub version: u64,
}

impl RewardModels {
    /// Loads every model `config` names, each checked against the robot
    /// (`expected`); `gamma` is the learner's discount, for the shaping.
    pub fn load(
        config: &RewardModelConfig,
        expected: Expected<'_>,
        gamma: f64,
    ) -> Result<Self, ModelError> {
        let mut version = 0;
        let mut progress = Vec::new();
        for dir in &config.progress {
            let (model, contract) = ProgressModel::load(dir, Some(expected))?;
            version += contract.model_version;
            progress.push(model);
        }
        let success = match &config.success {
            Some(dir) => {
                let (model, contract) = SuccessClassifier::load(dir, Some(expected))?;
                version += contract.model_version;
                Some(model)
            }
            None => None,
        };
        Self::new(progress, success, config.clone(), gamma, version)
    }

    /// Models already in memory (a test's, or a retrained one).
    pub fn new(
        progress: Vec<ProgressModel>,
        success: Option<SuccessClassifier>,
        config: RewardModelConfig,
        gamma: f64,
        version: u64,
    ) -> Result<Self, ModelError> {
        let bad = |reason: &str| ModelError::File {
            path: "reward models".into(),
            reason: reason.into(),
        };
        if progress.is_empty() && success.is_none() {
            return Err(bad("no progress model and no success classifier"));
        }
        if progress.iter().any(|m| {
            m.history() != progress[0].history() || m.input_len() != progress[0].input_len()
        }) {
            return Err(bad(
                "ensemble members read different inputs or history lengths",
            ));
        }
        config.validate().map_err(|e| bad(&e))?;
        Ok(Self {
            progress,
            success,
            config,
            gamma,
            version,
        })
    }

    pub fn config(&self) -> &RewardModelConfig {
        &self.config
    }

    fn history(&self) -> usize {
        self.progress.first().map_or(1, |m| m.history())
    }
}

/// The models as core's `RewardModel`: the newest frame of a history
/// scored without shaping (Φ, the members' spread, P(success)), for
/// callers that score observations one at a time.
impl cerebellum_core::RewardModel for RewardModels {
    fn version(&self) -> u64 {
        self.version
    }

    fn score(
        &mut self,
        history: &[Observation],
        instruction: Option<&str>,
    ) -> Result<RewardComponents, cerebellum_core::RewardModelError> {
        use cerebellum_core::RewardModelError;
        let _ = instruction; // checked against the contract at load
        let newest = history.last().ok_or(RewardModelError::EmptyHistory)?;
        let other = |e: ModelError| RewardModelError::Other(e.to_string());
        let mut out = RewardComponents::new();
        if !self.progress.is_empty() {
            let h = self.history();
            let window: Vec<f32> = (0..h)
                .rev()
                .flat_map(|back| {
                    let i = history.len().saturating_sub(1 + back);
                    self.progress[0].input(&history[i])
                })
                .collect();
            let members: Option<Vec<f64>> = self
                .progress
                .iter()
                .map(|m| m.predict_windows(&window).map(|p| p[0]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(other)?
                .into_iter()
                .collect();
            if let Some(score) = members.and_then(|m| aggregate(&m, self.config.aggregate)) {
                out.set(PROGRESS, score.reward as f32);
                out.set(PROGRESS_STD, score.std as f32);
            }
        }
        if let Some(classifier) = &self.success {
            let p = classifier
                .predict(std::slice::from_ref(&newest.state))
                .map_err(|e| other(e.into()))?;
            if let Some(p) = p[0] {
                out.set(SUCCESS_PROBABILITY, p);
            }
        }
        Ok(out)
    }
}

/// What labelling found for one transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Label {
    /// A model's output was not finite: its component is absent.
    pub missing: bool,
    /// The success detector fired at this transition.
    pub success: bool,
    /// The detector fired earlier in this episode and it was told to end
    /// it there: the transition belongs to no episode a learner should see.
    pub after_end: bool,
}

impl Label {
    /// Whether a learner may train on the transition.
    pub fn usable(&self) -> bool {
        !self.missing && !self.after_end
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LabelCounts {
    pub labelled: u64,
    pub progress_missing: u64,
    pub success_missing: u64,
    pub successes: u64,
    pub after_end: u64,
}

struct Stream {
    frames: VecDeque<Vec<f32>>,
    /// Φ of the newest frame: known, or a request in the batch being labelled.
    phi: Phi,
    detector: SuccessDetector,
    ended: bool,
}

#[derive(Clone, Copy)]
enum Phi {
    Known(Option<EnsembleReward>),
    Request(usize),
}

/// Per-transition bookkeeping between the passes of `label`.
struct Pending {
    key: (String, u64),
    phi: Phi,
    phi_next: Phi,
    success_row: usize,
    /// The robot ended the episode here.
    robot_ended: bool,
}

/// Labels streams of transitions with one set of reward models.
pub struct Labeller {
    models: Arc<RewardModels>,
    streams: HashMap<(String, u64), Stream>,
    pub counts: LabelCounts,
}

impl Labeller {
    pub fn new(models: Arc<RewardModels>) -> Self {
        Self {
            models,
            streams: HashMap::new(),
            counts: LabelCounts::default(),
        }
    }

    pub fn models(&self) -> &Arc<RewardModels> {
        &self.models
    }

    /// Labels with `models` from now on; the episodes under way start
    /// their history again (their frames were scored by the old models).
    pub fn replace_models(&mut self, models: Arc<RewardModels>) {
        self.models = models;
        self.streams.clear();
    }

    /// Forgets every open episode (labelling a buffer from its start).
    pub fn forget_episodes(&mut self) {
        self.streams.clear();
    }

    /// Labels each transition, in order, given the observation that
    /// followed it; `None` where there is none (the last tick of an
    /// episode the robot recorded no final observation for): then
    /// Φ(s′) = Φ(s) and the success detector reads s. One forward pass per
    /// model for the whole batch.
    pub fn label(
        &mut self,
        items: &mut [(&mut Transition, Option<&Observation>)],
    ) -> Result<Vec<Label>, ModelError> {
        let history = self.models.history();
        let dims = self.models.progress.first().map(|m| m.input_len());
        let input = |o: &Observation| match self.models.progress.first() {
            Some(m) => m.input(o),
            None => o.state.clone(),
        };
        let with_progress = !self.models.progress.is_empty();
        let mut windows: Vec<f32> = Vec::new();
        let mut window_count = 0;
        let mut success_states: Vec<Vec<f32>> = Vec::new();
        let mut pending = Vec::with_capacity(items.len());
        let mut request = |frames: &VecDeque<Vec<f32>>, windows: &mut Vec<f32>| -> Phi {
            if !with_progress || frames.iter().any(|f| Some(f.len()) != dims) {
                return Phi::Known(None);
            }
            for back in (0..history).rev() {
                let i = frames.len().saturating_sub(1 + back);
                windows.extend_from_slice(&frames[i]);
            }
            window_count += 1;
            Phi::Request(window_count - 1)
        };
        for (t, next) in items.iter() {
            let key = (t.provenance.robot_id.clone(), t.provenance.episode_id);
            let config = &self.models.config;
            let stream = self.streams.entry(key.clone()).or_insert_with(|| Stream {
                frames: VecDeque::new(),
                phi: Phi::Known(None),
                detector: SuccessDetector::new(config.success_threshold, config.success_frames),
                ended: false,
            });
            if stream.frames.is_empty() {
                stream.frames.push_back(input(&t.observation));
                stream.phi = request(&stream.frames, &mut windows);
            }
            let phi = stream.phi;
            match next {
                Some(next) => {
                    stream.frames.push_back(input(next));
                    while stream.frames.len() > history {
                        stream.frames.pop_front();
                    }
                    stream.phi = request(&stream.frames, &mut windows);
                    success_states.push(next.state.clone());
                }
                None => success_states.push(t.observation.state.clone()),
            }
            pending.push(Pending {
                key,
                phi,
                phi_next: stream.phi,
                success_row: success_states.len() - 1,
                robot_ended: t.terminated || t.truncated,
            });
        }

        // One forward pass per model.
        let mut members: Vec<Vec<Option<f64>>> = Vec::new();
        for model in &self.models.progress {
            members.push(model.predict_windows(&windows)?);
        }
        let scores: Vec<Option<EnsembleReward>> = (0..window_count)
            .map(|w| {
                let values: Option<Vec<f64>> = members.iter().map(|m| m[w]).collect();
                aggregate(&values?, self.models.config.aggregate)
            })
            .collect();
        let probabilities = match &self.models.success {
            Some(classifier) => Some(classifier.predict(&success_states)?),
            None => None,
        };

        let resolve = |phi: Phi| match phi {
            Phi::Known(v) => v,
            Phi::Request(w) => scores[w],
        };
        let config = &self.models.config;
        let mut labels = Vec::with_capacity(items.len());
        for ((t, _), p) in items.iter_mut().zip(&pending) {
            let mut label = Label::default();
            let stream = self.streams.get_mut(&p.key).expect("opened above");
            if with_progress {
                match (resolve(p.phi), resolve(p.phi_next)) {
                    (Some(a), Some(b)) => {
                        let shaped = match config.progress_shaping {
                            ProgressShaping::Potential => {
                                potential_shaping(0.0, a.reward, b.reward, self.models.gamma, false)
                            }
                            ProgressShaping::Delta => delta(a.reward, b.reward),
                            ProgressShaping::Level => b.reward,
                        };
                        t.rewards.set(PROGRESS, shaped as f32);
                        t.rewards.set(PROGRESS_STD, b.std as f32);
                        t.rewards.set(PROGRESS_POTENTIAL, b.reward as f32);
                    }
                    _ => {
                        label.missing = true;
                        self.counts.progress_missing += 1;
                    }
                }
            }
            if let Some(probabilities) = &probabilities {
                if stream.ended {
                    label.after_end = true;
                    self.counts.after_end += 1;
                } else {
                    let probability = probabilities[p.success_row];
                    let fired = stream.detector.observe(probability);
                    match probability {
                        Some(_) => t.rewards.set(LEARNED_SUCCESS, f32::from(u8::from(fired))),
                        None => {
                            label.missing = true;
                            self.counts.success_missing += 1;
                        }
                    }
                    if fired {
                        label.success = true;
                        self.counts.successes += 1;
                        if config.success_ends_episode {
                            stream.ended = true;
                            t.terminated = true;
                        }
                    }
                }
            }
            t.reward_version = Some(self.models.version);
            self.counts.labelled += 1;
            labels.push(label);
        }
        // Each stream's newest Φ becomes a value; finished episodes go.
        for stream in self.streams.values_mut() {
            if let Phi::Request(w) = stream.phi {
                stream.phi = Phi::Known(scores[w]);
            }
        }
        // An episode the detector ended stays open (its remaining ticks
        // are flagged `after_end`) until the robot ends it too.
        for p in pending.into_iter().filter(|p| p.robot_ended) {
            self.streams.remove(&p.key);
        }
        Ok(labels)
    }
}

/// Labels a buffer again from scratch with `models` (after a retrain):
/// the learned components are cleared first, so a model that now gives
/// no value leaves the component missing rather than stale. Transitions
/// are in arrival order (robots may interleave); a transition's s′ is the
/// next one of its episode when that is the following step. A
/// termination an earlier success detector decided stays.
pub fn relabel(
    models: Arc<RewardModels>,
    transitions: &mut [Transition],
) -> Result<(Vec<Label>, LabelCounts), ModelError> {
    let mut next: Vec<Option<Observation>> = vec![None; transitions.len()];
    let mut last: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, t) in transitions.iter().enumerate() {
        let key = (t.provenance.robot_id.as_str(), t.provenance.episode_id);
        if let Some(&j) = last.get(&key)
            && transitions[j].provenance.step + 1 == t.provenance.step
        {
            next[j] = Some(t.observation.clone());
        }
        last.insert(key, i);
    }
    for t in transitions.iter_mut() {
        for name in [PROGRESS, PROGRESS_STD, PROGRESS_POTENTIAL, LEARNED_SUCCESS] {
            t.rewards.0.remove(name);
        }
    }
    let mut labeller = Labeller::new(models);
    let mut items: Vec<(&mut Transition, Option<&Observation>)> = transitions
        .iter_mut()
        .zip(next.iter().map(Option::as_ref))
        .collect();
    let labels = labeller.label(&mut items)?;
    Ok((labels, labeller.counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldSelection;
    use crate::progress::{AnnotatedEpisode, ProgressConfig};
    use cerebellum_core::{Action, Provenance};

    /// A toy two-stage task: `a` moves 0 → 1, then `b` does; success is
    /// `b` above 0.8.
    fn toy_states(len: usize) -> Vec<Vec<f32>> {
        let half = len / 2;
        (0..len)
            .map(|t| {
                let a = t.min(half) as f32 / half as f32;
                let b = t.saturating_sub(half) as f32 / (len - half) as f32;
                vec![a, b]
            })
            .collect()
    }

    fn toy_models(config: RewardModelConfig, gamma: f64, version: u64) -> RewardModels {
        let with_success = config.success.is_some();
        let episodes: Vec<AnnotatedEpisode> = (0..4)
            .map(|i| {
                let states = toy_states(30 + 4 * i);
                let half = states.len() / 2;
                let stages = (0..states.len()).map(|t| u32::from(t >= half)).collect();
                AnnotatedEpisode { states, stages }
            })
            .collect();
        let progress_config = ProgressConfig {
            epochs: 150,
            hidden: 32,
            ..ProgressConfig::default()
        };
        let progress = ProgressModel::train(&episodes, 2, &progress_config).unwrap();
        let frames: Vec<(Vec<f32>, bool)> = episodes
            .iter()
            .flat_map(|e| e.states.iter().map(|s| (s.clone(), s[1] > 0.8)))
            .collect();
        let success =
            SuccessClassifier::train(&frames, &FieldSelection::all(), 16, 300, 0).unwrap();
        let success = with_success.then_some(success);
        RewardModels::new(vec![progress], success, config, gamma, version).unwrap()
    }

    /// The toy models include the success classifier.
    fn with_success(config: RewardModelConfig) -> RewardModelConfig {
        RewardModelConfig {
            success: Some(PathBuf::from("in memory")),
            ..config
        }
    }

    fn episode(robot: &str, id: u64, states: &[Vec<f32>]) -> Vec<Transition> {
        let n = states.len();
        (0..n)
            .map(|t| Transition {
                provenance: Provenance {
                    robot_id: robot.into(),
                    episode_id: id,
                    step: t as u32,
                    ..Provenance::default()
                },
                sim_time: t as f64 * 0.02,
                wall_time: 0.0,
                observation: Observation {
                    state: states[t].clone(),
                    images: vec![],
                    instruction: None,
                    timestamp: t as f64 * 0.02,
                },
                policy_action: Action::new(vec![0.0]),
                sent_command: Action::new(vec![0.0]),
                behaviour_log_prob: None,
                chunk_index: 0,
                intervention: false,
                safety_clamped: false,
                rewards: RewardComponents::new(),
                terminated: false,
                truncated: t + 1 == n,
                success: None,
                stage: None,
                reward_version: None,
            })
            .collect()
    }

    /// Labels `transitions` (one episode) in pieces of `piece`, the last
    /// transition without a next observation.
    fn label_in_pieces(
        labeller: &mut Labeller,
        transitions: &mut [Transition],
        piece: usize,
    ) -> Vec<Label> {
        let nexts: Vec<Option<Observation>> = (0..transitions.len())
            .map(|i| transitions.get(i + 1).map(|t| t.observation.clone()))
            .collect();
        let mut labels = Vec::new();
        for (chunk, next) in transitions.chunks_mut(piece).zip(nexts.chunks(piece)) {
            let mut items: Vec<(&mut Transition, Option<&Observation>)> = chunk
                .iter_mut()
                .zip(next.iter().map(Option::as_ref))
                .collect();
            labels.extend(labeller.label(&mut items).unwrap());
        }
        labels
    }

    #[test]
    fn shaped_progress_telescopes_and_does_not_depend_on_how_the_stream_is_cut() {
        let config = RewardModelConfig {
            success: None,
            ..RewardModelConfig::default()
        };
        let models = toy_models(config, 1.0, 7);
        let states = toy_states(40);
        let phi = models.progress[0].predict(&states).unwrap();
        let models = Arc::new(models);
        let mut whole = episode("arm0", 1, &states);
        let mut pieces = whole.clone();
        let mut labeller = Labeller::new(models.clone());
        let labels = label_in_pieces(&mut labeller, &mut whole, usize::MAX);
        assert!(labels.iter().all(|l| l.usable()));
        let mut again = Labeller::new(models);
        label_in_pieces(&mut again, &mut pieces, 7);
        // The same labels whatever the batch size (up to the matrix
        // product's rounding, which depends on it).
        for (a, b) in whole.iter().zip(&pieces) {
            let (a, b) = (
                a.rewards.get(PROGRESS).unwrap(),
                b.rewards.get(PROGRESS).unwrap(),
            );
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // γ = 1: Σ (Φ(s′) − Φ(s)) = Φ(s_T) − Φ(s_0), s_T the last state.
        let sum: f64 = whole
            .iter()
            .map(|t| t.rewards.get(PROGRESS).unwrap() as f64)
            .sum();
        assert!(
            (sum - (phi[39] - phi[0])).abs() < 1e-4,
            "{sum} vs {}",
            phi[39] - phi[0]
        );
        assert!(phi[39] - phi[0] > 0.7, "the toy task is learned: {phi:?}");
        assert!(whole.iter().all(|t| t.reward_version == Some(7)));
        // Labelled in pieces of 5 with γ = 0.5 and the given shaping.
        let shaped = |progress_shaping| {
            let models = toy_models(
                RewardModelConfig {
                    success: None,
                    progress_shaping,
                    ..RewardModelConfig::default()
                },
                0.5,
                7,
            );
            let mut run = episode("arm0", 1, &states);
            label_in_pieces(&mut Labeller::new(Arc::new(models)), &mut run, 5);
            run
        };
        // Delta shaping telescopes whatever the learner's discount.
        let sum: f64 = shaped(ProgressShaping::Delta)
            .iter()
            .map(|t| t.rewards.get(PROGRESS).unwrap() as f64)
            .sum();
        assert!((sum - (phi[39] - phi[0])).abs() < 1e-4, "{sum}");
        // Level: Φ(s′) itself each tick (the last one has no s′: Φ(s)).
        let level_run = shaped(ProgressShaping::Level);
        for (t, transition) in level_run.iter().enumerate() {
            let expected = phi[(t + 1).min(39)];
            let got = transition.rewards.get(PROGRESS).unwrap() as f64;
            assert!(
                (got - expected).abs() < 1e-5,
                "tick {t}: {got} vs {expected}"
            );
        }
        // Scored one history at a time, as core's RewardModel, Φ matches.
        let mut scorer = toy_models(
            RewardModelConfig {
                success: None,
                ..RewardModelConfig::default()
            },
            1.0,
            7,
        );
        let history: Vec<Observation> = whole[..3].iter().map(|t| t.observation.clone()).collect();
        let scored = cerebellum_core::RewardModel::score(&mut scorer, &history, None).unwrap();
        assert!((scored.get(PROGRESS).unwrap() as f64 - phi[2]).abs() < 1e-5);
        assert_eq!(cerebellum_core::RewardModel::version(&scorer), 7);
        assert!(
            whole
                .iter()
                .all(|t| t.rewards.get(PROGRESS_STD) == Some(0.0))
        );
        assert_eq!(labeller.counts.labelled, 40);
    }

    #[test]
    fn a_non_finite_state_leaves_the_component_missing_and_counted() {
        let models = Arc::new(toy_models(
            with_success(RewardModelConfig::default()),
            0.99,
            1,
        ));
        let mut states = toy_states(20);
        states[5][0] = f32::NAN;
        let mut transitions = episode("arm0", 1, &states);
        let mut labeller = Labeller::new(models);
        let labels = label_in_pieces(&mut labeller, &mut transitions, 6);
        // Transitions 4 (s′ = frame 5) to 7 (its window still holds frame
        // 5) have no progress; 5 has no success probability either.
        let missing: Vec<usize> = (0..20).filter(|&i| labels[i].missing).collect();
        assert_eq!(missing, vec![4, 5, 6, 7]);
        for &i in &missing {
            assert_eq!(
                transitions[i].rewards.get(PROGRESS),
                None,
                "never a silent 0"
            );
        }
        assert_eq!(transitions[4].rewards.get(LEARNED_SUCCESS), None);
        assert_eq!(labeller.counts.progress_missing, 4);
        assert_eq!(labeller.counts.success_missing, 1);
        assert!(transitions[10].rewards.get(PROGRESS).unwrap().is_finite());
    }

    #[test]
    fn the_success_detector_pays_once_and_ends_the_episode_for_the_learner() {
        let config = with_success(RewardModelConfig {
            success_threshold: 0.5,
            success_frames: 3,
            ..RewardModelConfig::default()
        });
        let models = Arc::new(toy_models(config, 0.99, 1));
        let states = toy_states(40);
        let mut transitions = episode("arm0", 1, &states);
        // A second robot's episode interleaved with the first must not
        // disturb it.
        let mut other = episode("arm1", 1, &toy_states(40)[..10]);
        let mut labeller = Labeller::new(models);
        label_in_pieces(&mut labeller, &mut other, 4);
        let labels = label_in_pieces(&mut labeller, &mut transitions, 9);
        let fired = labels.iter().position(|l| l.success).expect("fires");
        // s′ of transition i is frame i + 1; b > 0.8 from frame 37 on, so
        // three frames at P ≥ 0.5 land near the end.
        assert!((30..39).contains(&fired), "fired at {fired}");
        assert!(transitions[fired].terminated);
        assert_eq!(transitions[fired].rewards.get(LEARNED_SUCCESS), Some(1.0));
        let paid: f32 = transitions
            .iter()
            .filter_map(|t| t.rewards.get(LEARNED_SUCCESS))
            .sum();
        assert_eq!(paid, 1.0, "paid once");
        assert!(
            labels[fired + 1..]
                .iter()
                .all(|l| l.after_end && !l.usable())
        );
        assert!(labels[..=fired].iter().all(|l| l.usable()));
        // The robot ended the episode: nothing of it is kept.
        assert!(labeller.streams.is_empty());
    }

    #[test]
    fn new_models_are_stamped_on_what_they_label() {
        let config = RewardModelConfig {
            success: None,
            ..RewardModelConfig::default()
        };
        let states = toy_states(12);
        let mut transitions = episode("arm0", 1, &states);
        let mut labeller = Labeller::new(Arc::new(toy_models(config.clone(), 0.99, 1)));
        label_in_pieces(&mut labeller, &mut transitions[..6], 6);
        labeller.replace_models(Arc::new(toy_models(config, 0.99, 2)));
        labeller.forget_episodes();
        label_in_pieces(&mut labeller, &mut transitions, 12);
        assert!(transitions.iter().all(|t| t.reward_version == Some(2)));
        // Relabelling a buffer gives what labelling it in order gave.
        let labelled = transitions.clone();
        for t in transitions.iter_mut() {
            t.rewards.set(PROGRESS, 99.0);
        }
        let models = labeller.models().clone();
        let (_, counts) = relabel(models, &mut transitions).unwrap();
        assert_eq!(counts.labelled, 12);
        for (a, b) in labelled.iter().zip(&transitions) {
            let (a, b) = (
                a.rewards.get(PROGRESS).unwrap(),
                b.rewards.get(PROGRESS).unwrap(),
            );
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(
            RewardModels::new(vec![], None, RewardModelConfig::default(), 0.99, 0).is_err(),
            "no model at all is refused"
        );
    }
}
