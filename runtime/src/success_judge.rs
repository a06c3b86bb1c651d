//! Ending episodes on a learned success detector, for robots that cannot
//! judge success themselves (ALGORITHMS.md §3.3: P(success | observation)
//! with a threshold and k consecutive frames against false positives).
//!
//! Two modes, chosen with the clock:
//! - **Inline** (simulated time): the classifier runs on the control thread
//!   at the tick it judges, so where an episode ends is a deterministic
//!   function of the run.
//! - **Lagged** (wall time): a judge thread scores each tick's observation;
//!   the verdict on tick t is applied at tick t + `lag`, never waited for.
//!   A verdict later than that is applied when it arrives and counted
//!   (`late`). The lag is the documented price of keeping the classifier off
//!   the control thread: an episode ends `lag` ticks after the frame that
//!   completed the detector's run.
//!
//! Either way the tick the episode ends on carries `success_model` = 1 and
//! is `terminated` with success; every other tick carries 0.

use cerebellum_core::Observation;
use cerebellum_reward_models::success::{SuccessClassifier, SuccessDetector};
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JudgeCounters {
    pub judged: u64,
    /// Frames whose probability was not finite (they break the run).
    pub missing: u64,
    pub fired: u64,
    /// Lagged: verdicts that arrived after their tick + lag.
    pub late: u64,
}

enum Mode {
    Inline {
        classifier: Box<SuccessClassifier>,
        detector: SuccessDetector,
    },
    Lagged {
        requests: Sender<(u64, u64, Vec<f32>)>,
        /// (episode, tick, fired, missing, the state's buffer back).
        verdicts: Receiver<(u64, u64, bool, bool, Vec<f32>)>,
        /// Buffers the judge thread gave back: after the first few ticks
        /// the control thread allocates nothing to send a state.
        spare: Vec<Vec<f32>>,
        lag: u64,
    },
}

pub struct SuccessJudge {
    mode: Mode,
    pub counters: JudgeCounters,
    /// Lagged: verdicts received, waiting for their tick + lag.
    arrived: std::collections::VecDeque<(u64, bool)>,
    fired_in_episode: bool,
}

impl SuccessJudge {
    /// Judges on the control thread (simulated time).
    pub fn inline(classifier: SuccessClassifier, threshold: f32, frames: u32) -> Self {
        Self::with_mode(Mode::Inline {
            classifier: Box::new(classifier),
            detector: SuccessDetector::new(threshold, frames),
        })
    }

    /// Judges on a thread of its own; verdicts apply `lag` ticks later.
    pub fn lagged(classifier: SuccessClassifier, threshold: f32, frames: u32, lag: u64) -> Self {
        let (requests, inbox) = crossbeam_channel::unbounded::<(u64, u64, Vec<f32>)>();
        let (answers, verdicts) =
            crossbeam_channel::unbounded::<(u64, u64, bool, bool, Vec<f32>)>();
        std::thread::Builder::new()
            .name("success-judge".into())
            .spawn(move || {
                let mut detector = SuccessDetector::new(threshold, frames);
                let mut episode = None;
                for (e, tick, state) in inbox.iter() {
                    if episode != Some(e) {
                        detector.reset();
                        episode = Some(e);
                    }
                    let probability = classifier
                        .predict(std::slice::from_ref(&state))
                        .ok()
                        .and_then(|p| p[0]);
                    let fired = detector.observe(probability);
                    if answers
                        .send((e, tick, fired, probability.is_none(), state))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .expect("spawn the success judge");
        Self::with_mode(Mode::Lagged {
            requests,
            verdicts,
            spare: Vec::new(),
            lag,
        })
    }

    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            counters: JudgeCounters::default(),
            arrived: Default::default(),
            fired_in_episode: false,
        }
    }

    /// A new episode: the detector's run starts again.
    pub fn begin_episode(&mut self) {
        if let Mode::Inline { detector, .. } = &mut self.mode {
            detector.reset();
        }
        self.arrived.clear();
        self.fired_in_episode = false;
    }

    /// Whether the episode `episode` ends at `tick`, having observed
    /// `observation` there.
    pub fn judge(&mut self, episode: u64, tick: u64, observation: &Observation) -> bool {
        if self.fired_in_episode {
            return false;
        }
        self.counters.judged += 1;
        let fired = match &mut self.mode {
            Mode::Inline {
                classifier,
                detector,
            } => {
                let probability = classifier
                    .predict(std::slice::from_ref(&observation.state))
                    .ok()
                    .and_then(|p| p[0]);
                self.counters.missing += u64::from(probability.is_none());
                detector.observe(probability)
            }
            Mode::Lagged {
                requests,
                verdicts,
                spare,
                lag,
            } => {
                let mut state = spare.pop().unwrap_or_default();
                state.clear();
                state.extend_from_slice(&observation.state);
                // A judge thread that died leaves the episode to the robot.
                let _ = requests.send((episode, tick, state));
                for (e, judged, verdict, missing, buffer) in verdicts.try_iter() {
                    spare.push(buffer);
                    if e == episode {
                        self.counters.missing += u64::from(missing);
                        self.arrived.push_back((judged, verdict));
                    }
                }
                // Each verdict applies at its tick + lag; one that came
                // later than that applies now and is counted.
                let mut fired = false;
                while let Some(&(judged, verdict)) = self.arrived.front()
                    && judged + *lag <= tick
                {
                    self.arrived.pop_front();
                    self.counters.late += u64::from(judged + *lag < tick);
                    fired |= verdict;
                }
                fired
            }
        };
        if fired {
            self.counters.fired += 1;
            self.fired_in_episode = true;
        }
        fired
    }
}

/// The judge for a loop: the classifier in `dir`, checked against the
/// robot, inline under the simulated clock, else `lag` ticks behind.
pub fn load(
    dir: &std::path::Path,
    expected: cerebellum_reward_models::contract::Expected<'_>,
    threshold: f32,
    frames: u32,
    simulated_clock: bool,
    lag: u64,
) -> anyhow::Result<SuccessJudge> {
    anyhow::ensure!(
        threshold > 0.0 && threshold <= 1.0 && frames > 0,
        "success threshold must be in (0, 1] and frames at least 1"
    );
    let (classifier, _) = SuccessClassifier::load(dir, Some(expected))?;
    Ok(if simulated_clock {
        SuccessJudge::inline(classifier, threshold, frames)
    } else {
        SuccessJudge::lagged(classifier, threshold, frames, lag)
    })
}
