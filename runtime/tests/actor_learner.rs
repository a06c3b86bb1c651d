//! Actor and learner on one board: the control loop drives the simulated
//! arm while a learner thread trains on its transitions and publishes
//! weights. Lockstep runs are deterministic; a learner that panics or
//! diverges never stops the loop nor reaches the robot.

mod common;

use cerebellum_core::{Policy, Robot, SimClock, Transition};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_runtime::control_loop::{
    ControlLoop, Inference, LoopConfig, LoopSummary, PolicySlot, Tee,
};
use cerebellum_runtime::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use cerebellum_runtime::learn::TrainConfig;
use cerebellum_runtime::learn::online::{
    LearnerCounters, LearnerStatus, LearnerThread, OnlineGrpo, OnlineLearner, OnlinePpo, Pace,
};
use cerebellum_sim::{EnvConfig, SimEnv, TaskKind};
use common::{log_bytes, so101};
use std::sync::Arc;

fn train_config(batch: usize) -> TrainConfig {
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.online.batch_transitions = batch;
    config.ppo.epochs = 2;
    config.ppo.minibatch_size = 64;
    config.group = 4;
    config
}

fn policy(config: &TrainConfig, spec: &cerebellum_core::RobotSpec) -> GaussianMlpPolicy {
    let mut p = GaussianMlpPolicy::new(spec, config.policy.clone(), 5).unwrap();
    p.set_version(1);
    p
}

fn loop_config(episodes: u64, episodes_per_start: u64) -> LoopConfig {
    LoopConfig {
        seed: 11,
        stochastic: true,
        max_episodes: Some(episodes),
        max_ticks: None,
        inference_deadline: None,
        robot_id: "arm0".into(),
        episodes_per_start,
    }
}

/// Runs `learner` beside a loop of `episodes` on the reach arm; returns
/// the transition log, the loop's figures and the learner's.
fn run_with<L: OnlineLearner<Policy = GaussianMlpPolicy>>(
    learner: impl FnOnce(GaussianMlpPolicy) -> L,
    pace: Pace,
    loop_config: LoopConfig,
) -> (Vec<Transition>, LoopSummary, LearnerStatus, u64) {
    let model = so101();
    let env = SimEnv::new(EnvConfig::default(), Some(model.clone())).unwrap();
    let spec = env.spec().clone();
    let initial = policy(&train_config(128), &spec);
    let slot = PolicySlot::new(initial.clone());
    let (sink, thread) = LearnerThread::spawn(learner(initial), slot.clone(), pace);
    let joints = spec.action.len();
    let envelope = SafetyEnvelope::new(
        &spec,
        EnvelopeConfig {
            max_step_per_tick: vec![0.1; joints],
            ..EnvelopeConfig::default()
        },
        Some(Arc::new(ArmKinematics(model))),
    )
    .unwrap();
    let mut control = ControlLoop::new(
        env,
        SimClock::new(spec.control_period()),
        Inference::inline(slot.clone()),
        envelope,
        loop_config,
    );
    let mut log = Vec::new();
    let mut tee = Tee(sink, &mut log);
    control.run(&mut tee).unwrap();
    let loop_version = control.policy_version();
    let Tee(sink, _) = tee;
    drop(sink);
    let status = thread.join();
    (log, control.stats.summary(), status, loop_version)
}

#[test]
fn online_ppo_in_lockstep_learns_deterministically_beside_the_loop() {
    let run = || {
        run_with(
            |p| OnlinePpo::new(p, train_config(128), None),
            Pace::Lockstep,
            loop_config(6, 1),
        )
    };
    let (a, summary, status, version) = run();
    let (b, _, _, _) = run();
    assert_eq!(summary.counters.episodes, 6);
    assert_eq!(
        summary.counters.dropped_transitions, 0,
        "lockstep never drops"
    );
    assert_eq!(
        log_bytes(&a),
        log_bytes(&b),
        "same seed, same transition log"
    );
    // 600 transitions, one update per 128 (+1 held back for its next state).
    assert_eq!(status.counters.updates, 4, "{status:?}");
    assert_eq!(status.published, 4);
    assert_eq!(version, 5, "the loop acts with the newest weights");
    assert_eq!(summary.counters.weight_updates, 4);
    // Each transition carries the version that planned it, and the versions
    // change exactly after the batches.
    let versions: Vec<u64> = a.iter().map(|t| t.provenance.policy_version).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(versions[0], 1);
    assert_eq!(
        versions[129], 2,
        "new weights from the tick after the first batch"
    );
    assert_eq!(versions[128], 1);
}

/// Learns like `OnlinePpo` until it has published `updates` weights, then
/// panics on the next transition.
struct PanicsAfter {
    inner: OnlinePpo,
    updates: u64,
}

impl OnlineLearner for PanicsAfter {
    type Policy = GaussianMlpPolicy;
    fn learn(&mut self, t: Transition) -> Option<GaussianMlpPolicy> {
        if self.inner.counters().updates >= self.updates {
            panic!("injected learner failure");
        }
        self.inner.learn(t)
    }
    fn recover(&mut self, published: &GaussianMlpPolicy) {
        self.inner.recover(published)
    }
    fn counters(&self) -> LearnerCounters {
        self.inner.counters()
    }
}

#[test]
fn a_learner_that_panics_mid_run_leaves_the_loop_finishing_its_episodes() {
    // Lockstep: the panic comes after two published updates. Wall time (the
    // loop does not wait for the learner): on the first transition.
    for (pace, updates) in [(Pace::Lockstep, 2), (Pace::WallTime { capacity: 64 }, 0)] {
        let (log, summary, status, version) = run_with(
            |p| PanicsAfter {
                inner: OnlinePpo::new(p, train_config(128), None),
                updates,
            },
            pace,
            loop_config(5, 1),
        );
        assert_eq!(summary.counters.episodes, 5, "{pace:?}: the loop finished");
        assert_eq!(log.len(), 500);
        let failure = status.failure.expect("the failure is reported");
        assert!(failure.contains("injected learner failure"), "{failure}");
        assert_eq!(version, 1 + updates, "{pace:?}: no weights after the panic");
        assert_eq!(status.published, version - 1);
        assert!(
            summary.counters.dropped_transitions > 0,
            "transitions after the panic are dropped and counted"
        );
        // The last episodes ran on the last good weights.
        assert!(
            log[400..]
                .iter()
                .all(|t| t.provenance.policy_version == version)
        );
        assert!(
            log.iter()
                .all(|t| t.sent_command.values.iter().all(|v| v.is_finite()))
        );
    }
}

/// Publishes weights full of NaN every `every` transitions.
struct Diverges {
    policy: GaussianMlpPolicy,
    every: u64,
    counters: LearnerCounters,
}

impl OnlineLearner for Diverges {
    type Policy = GaussianMlpPolicy;
    fn learn(&mut self, _: Transition) -> Option<GaussianMlpPolicy> {
        self.counters.received += 1;
        if !self.counters.received.is_multiple_of(self.every) {
            return None;
        }
        let mut bad = self.policy.clone();
        bad.actor.params_mut()[0] = f32::NAN;
        bad.set_version(bad.version() + 1);
        self.counters.updates += 1;
        Some(bad)
    }
    fn recover(&mut self, published: &GaussianMlpPolicy) {
        self.policy = published.clone();
    }
    fn counters(&self) -> LearnerCounters {
        self.counters.clone()
    }
}

#[test]
fn non_finite_weights_from_the_learner_are_refused_and_reported() {
    let (log, summary, status, version) = run_with(
        |p| Diverges {
            policy: p,
            every: 50,
            counters: LearnerCounters::default(),
        },
        Pace::Lockstep,
        loop_config(3, 1),
    );
    assert_eq!(summary.counters.episodes, 3);
    assert_eq!(status.refused, 6, "{status:?}");
    assert_eq!(status.published, 0);
    assert!(status.last_refusal.unwrap().contains("non-finite"));
    assert_eq!(version, 1, "the loop kept the first weights");
    assert_eq!(summary.counters.weight_updates, 0);
    assert!(
        log.iter()
            .all(|t| t.sent_command.values.iter().all(|v| v.is_finite()))
    );
}

#[test]
fn transitions_older_than_the_staleness_bound_are_dropped() {
    let (log, ..) = run_with(
        |p| Diverges {
            policy: p,
            every: u64::MAX,
            counters: LearnerCounters::default(),
        },
        Pace::Lockstep,
        loop_config(3, 1),
    );
    let spec = SimEnv::new(EnvConfig::default(), Some(so101()))
        .unwrap()
        .spec()
        .clone();
    let config = train_config(128);
    let mut ahead = policy(&config, &spec);
    ahead.set_version(1 + config.online.max_staleness + 1);
    let mut learner = OnlinePpo::new(ahead, config.clone(), None);
    for t in log.iter().cloned() {
        assert!(learner.learn(t).is_none());
    }
    let c = learner.counters();
    assert_eq!((c.stale, c.used, c.updates), (300, 0, 0));
    // From the weights that made them, the same transitions train (the
    // learner's own updates stay within the bound).
    let near = policy(&config, &spec);
    let mut learner = OnlinePpo::new(near, config, None);
    let updates = log.into_iter().filter_map(|t| learner.learn(t)).count();
    assert_eq!(updates, 2);
    assert_eq!(learner.counters().stale, 0);
}

#[test]
fn online_grpo_updates_once_per_group_of_episodes_from_one_start() {
    let (log, summary, status, version) = run_with(
        |p| {
            let mut config = train_config(128);
            config.algo = cerebellum_runtime::learn::Algo::Grpo;
            OnlineGrpo::new(p, config)
        },
        Pace::Lockstep,
        loop_config(8, 4),
    );
    assert_eq!(summary.counters.episodes, 8);
    assert_eq!(status.counters.updates, 2, "{status:?}");
    assert_eq!(status.counters.broken, 0);
    assert_eq!(version, 3);
    // The four episodes of a group start from the same state.
    let starts: Vec<&Transition> = log.iter().filter(|t| t.provenance.step == 0).collect();
    assert_eq!(starts.len(), 8);
    for group in starts.chunks(4) {
        assert!(
            group
                .iter()
                .all(|t| t.provenance.group_id == group[0].provenance.group_id)
        );
        assert!(
            group
                .iter()
                .all(|t| t.observation.state == group[0].observation.state)
        );
    }
    assert_ne!(starts[0].observation.state, starts[4].observation.state);
}
