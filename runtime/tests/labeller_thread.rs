//! Learned rewards beside the loop: a labeller thread between the control
//! loop and the online learner labels each transition with the reward
//! models' progress, stamped with their version; when the models are
//! retrained mid-run the learner relabels what it holds, so every update
//! trains on one version, and it says which.

mod common;

use cerebellum_core::{ResetRequest, Robot, SimClock, Transition};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_reward_models::labeller::{PROGRESS, RewardModelConfig, RewardModels};
use cerebellum_reward_models::progress::{AnnotatedEpisode, ProgressConfig, ProgressModel};
use cerebellum_runtime::control_loop::{
    ControlLoop, Inference, LoopConfig, PolicySlot, Tee, TransitionSink,
};
use cerebellum_runtime::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use cerebellum_runtime::learn::TrainConfig;
use cerebellum_runtime::learn::labeller_thread::{LabellerStatus, LabellerThread, RewardModelSlot};
use cerebellum_runtime::learn::online::{
    LearnerSink, LearnerStatus, LearnerThread, OnlinePpo, Pace,
};
use cerebellum_sim::{EnvConfig, SimEnv, TaskKind};
use common::{log_bytes, so101};
use std::path::PathBuf;
use std::sync::Arc;

/// A small progress model over the reach arm's states: stage 1 in the
/// second half of each episode. What it scores does not matter here, only
/// that it scores and carries a version.
fn progress_models(version: u64, seed: u64) -> RewardModels {
    let mut env = SimEnv::new(EnvConfig::default(), Some(so101())).unwrap();
    let mut episodes = Vec::new();
    for k in 0..3 {
        let mut states = vec![env.reset(&ResetRequest { seed: k }).unwrap().state];
        let hold = cerebellum_core::Action::new(states[0][..6].to_vec());
        for _ in 0..40 {
            env.apply(&hold).unwrap();
            states.push(env.observe().unwrap().state);
        }
        let stages = (0..states.len()).map(|t| u32::from(t >= 20)).collect();
        episodes.push(AnnotatedEpisode { states, stages });
    }
    let config = ProgressConfig {
        epochs: 20,
        hidden: 16,
        seed,
        ..ProgressConfig::default()
    };
    let model = ProgressModel::train(&episodes, 2, &config).unwrap();
    RewardModels::new(vec![model], None, reward_config(), 0.95, version).unwrap()
}

fn reward_config() -> RewardModelConfig {
    RewardModelConfig {
        progress: vec![PathBuf::from("in memory")],
        ..RewardModelConfig::default()
    }
}

/// Publishes the retrained models after `at` transitions.
struct RetrainAfter {
    inner: LearnerSink,
    pushed: usize,
    at: usize,
    slot: Arc<RewardModelSlot>,
    retrained: Option<RewardModels>,
}

impl TransitionSink for RetrainAfter {
    fn push(&mut self, transition: Transition) -> bool {
        if self.pushed == self.at
            && let Some(models) = self.retrained.take()
        {
            self.slot.publish(models).unwrap();
        }
        self.pushed += 1;
        self.inner.push(transition)
    }
}

fn run() -> (Vec<Transition>, LabellerStatus, LearnerStatus) {
    let model = so101();
    let env = SimEnv::new(EnvConfig::default(), Some(model.clone())).unwrap();
    let spec = env.spec().clone();
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.online.batch_transitions = 128;
    config.ppo.epochs = 2;
    config.ppo.minibatch_size = 64;
    config.reward = reward_config();
    config.reward_weights = [(PROGRESS.to_owned(), 1.0)].into();
    let mut initial = GaussianMlpPolicy::new(&spec, config.policy.clone(), 5).unwrap();
    initial.set_version(1);
    let slot = PolicySlot::new(initial.clone());
    let (learner_sink, learner) = LearnerThread::spawn(
        OnlinePpo::new(initial, config, None),
        slot.clone(),
        Pace::Lockstep,
    );
    let reward_slot = RewardModelSlot::new(progress_models(1, 0));
    let (sink, labeller) = LabellerThread::spawn(reward_slot.clone(), learner_sink, Pace::Lockstep);
    let envelope = SafetyEnvelope::new(
        &spec,
        EnvelopeConfig::default(),
        Some(Arc::new(ArmKinematics(model))),
    )
    .unwrap();
    let mut control = ControlLoop::new(
        env,
        SimClock::new(spec.control_period()),
        Inference::inline(slot),
        envelope,
        LoopConfig {
            seed: 11,
            stochastic: true,
            max_episodes: Some(6),
            max_ticks: None,
            inference_deadline: None,
            robot_id: "arm0".into(),
            episodes_per_start: 1,
        },
    );
    let mut log = Vec::new();
    let retrain = RetrainAfter {
        inner: sink,
        pushed: 0,
        at: 200,
        slot: reward_slot,
        retrained: Some(progress_models(2, 1)),
    };
    let mut tee = Tee(retrain, &mut log);
    control.run(&mut tee).unwrap();
    drop(tee);
    let labeller = labeller.join();
    let learner = learner.join();
    (log, labeller, learner)
}

#[test]
fn a_retrained_reward_model_relabels_the_learners_buffer_and_each_update_names_its_version() {
    let (log, labeller, learner) = run();
    assert_eq!(log.len(), 600);
    assert!(
        log.iter().all(|t| t.reward_version.is_none()),
        "the loop records the robot's rewards only; labelling happens off its thread"
    );
    assert_eq!(labeller.counts.labelled, 600, "{labeller:?}");
    assert_eq!(labeller.counts.progress_missing, 0);
    assert_eq!((labeller.model_changes, labeller.reward_version), (1, 2));
    assert_eq!(labeller.dropped, 0, "lockstep never drops");
    assert!(labeller.label_us_mean > 0.0 && labeller.failure.is_none());
    // Updates at 129, 258, 387, 516 transitions received; the models
    // changed at the 200th, when the learner held the rows of its second
    // update labelled by version 1: those were labelled again.
    assert_eq!(learner.counters.updates, 4, "{learner:?}");
    assert_eq!(learner.counters.reward_versions, vec![1, 2, 2, 2]);
    assert!(
        (60..=80).contains(&learner.counters.relabelled),
        "{}",
        learner.counters.relabelled
    );
    assert!(learner.failure.is_none());

    // Same seed, same run: the weights changed at the same ticks.
    let (again, _, learner_again) = run();
    assert_eq!(log_bytes(&log), log_bytes(&again));
    assert_eq!(learner.counters, learner_again.counters);
}

/// Runs the sweeping policy on the reach arm for `episodes` with an
/// optional success judge; returns the log and the judge's counters.
fn sweep(
    episodes: u64,
    judge: Option<cerebellum_runtime::success_judge::SuccessJudge>,
) -> (
    Vec<Transition>,
    Option<cerebellum_runtime::success_judge::JudgeCounters>,
    u64,
) {
    let model = so101();
    let env = SimEnv::new(EnvConfig::default(), Some(model.clone())).unwrap();
    let spec = env.spec().clone();
    let envelope = SafetyEnvelope::new(
        &spec,
        EnvelopeConfig::default(),
        Some(Arc::new(ArmKinematics(model))),
    )
    .unwrap();
    let mut control = ControlLoop::new(
        env,
        SimClock::new(spec.control_period()),
        Inference::inline(PolicySlot::new(common::SweepPolicy)),
        envelope,
        LoopConfig {
            seed: 3,
            stochastic: false,
            max_episodes: Some(episodes),
            max_ticks: None,
            inference_deadline: None,
            robot_id: "arm0".into(),
            episodes_per_start: 1,
        },
    );
    if let Some(judge) = judge {
        control = control.with_success_judge(judge);
    }
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    let learned = control.stats.counters.learned_successes;
    (log, control.success_judge_counters(), learned)
}

#[test]
fn a_learned_success_detector_ends_episodes_inline_in_sim_time_and_at_a_fixed_lag_in_wall_time() {
    use cerebellum_reward_models::fields::FieldSelection;
    use cerebellum_reward_models::labeller::LEARNED_SUCCESS;
    use cerebellum_reward_models::success::SuccessClassifier;
    use cerebellum_runtime::success_judge::SuccessJudge;
    // "Success" here: joint 0 swept 0.5 rad past where it started.
    let (plain, _, _) = sweep(1, None);
    let start = plain[0].observation.state[0];
    let frames: Vec<(Vec<f32>, bool)> = plain
        .iter()
        .map(|t| {
            (
                t.observation.state.clone(),
                t.observation.state[0] > start + 0.5,
            )
        })
        .collect();
    let crossing = frames
        .iter()
        .position(|f| f.1)
        .expect("the sweep gets there");
    let classifier =
        || SuccessClassifier::train(&frames, &FieldSelection::all(), 16, 400, 0).unwrap();

    let (inline, counters, learned) = sweep(1, Some(SuccessJudge::inline(classifier(), 0.5, 3)));
    let end = inline.len() - 1;
    assert!(
        (crossing + 1..crossing + 8).contains(&end),
        "ended at step {end}, frames successful from {crossing}"
    );
    let last = &inline[end];
    assert!(last.terminated && last.rewards.get(LEARNED_SUCCESS) == Some(1.0));
    assert!(
        inline[..end]
            .iter()
            .all(|t| t.rewards.get(LEARNED_SUCCESS) == Some(0.0))
    );
    assert_eq!((learned, counters.unwrap().fired), (1, 1));
    // Deterministic under the simulated clock.
    let (again, _, _) = sweep(1, Some(SuccessJudge::inline(classifier(), 0.5, 3)));
    assert_eq!(log_bytes(&inline), log_bytes(&again));

    // Off the control thread, the same verdict lands `lag` ticks later
    // (later still only if the judge thread was late, which is counted).
    let (lagged, counters, _) = sweep(1, Some(SuccessJudge::lagged(classifier(), 0.5, 3, 3)));
    let counters = counters.unwrap();
    let lagged_end = lagged.len() - 1;
    // Never earlier than the lag; exactly the lag when no verdict was late
    // (a late one may be another tick's: the judge thread's first
    // predictions are slow while the simulated clock does not wait).
    assert!(lagged_end >= end + 3, "{lagged_end} vs {end}: {counters:?}");
    if counters.late == 0 {
        assert_eq!(lagged_end, end + 3);
    }
    assert!(lagged[lagged_end].terminated);
}
