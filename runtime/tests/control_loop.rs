//! The control loop against the real simulated arm: determinism under the
//! simulation clock, and bad input (a failing robot, late observations,
//! non-finite actions and weights, a slow policy) never reaching the robot
//! as an unchecked command nor stopping the loop.

mod common;

use cerebellum_core::{
    Action, ActionChunk, Observation, Policy, PolicyError, PolicyOutput, ResetRequest, Robot,
    RobotError, RobotSpec, Sampling, SimClock, StepOutcome, WallClock,
};
use cerebellum_policies::{GaussianConfig, GaussianMlpPolicy};
use cerebellum_runtime::control_loop::{
    CheckedWeights, ControlLoop, Inference, LoopConfig, PolicySlot,
};
use cerebellum_runtime::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use cerebellum_sim::{EnvConfig, SimEnv};
use common::{SweepPolicy, log_bytes, so101};
use std::sync::Arc;
use std::time::Duration;

fn reach_env() -> SimEnv {
    SimEnv::new(EnvConfig::default(), Some(so101())).unwrap()
}

fn envelope(spec: &RobotSpec) -> SafetyEnvelope {
    let joints = spec.action.len();
    let config = EnvelopeConfig {
        max_step_per_tick: vec![0.1; joints],
        max_joint_velocity: vec![6.0; joints],
        ..EnvelopeConfig::default()
    };
    SafetyEnvelope::new(spec, config, Some(Arc::new(ArmKinematics(so101())))).unwrap()
}

fn config(episodes: u64) -> LoopConfig {
    LoopConfig {
        seed: 7,
        stochastic: true,
        max_episodes: Some(episodes),
        max_ticks: Some(10_000),
        inference_deadline: None,
        robot_id: "arm0".into(),
        episodes_per_start: 1,
    }
}

#[test]
fn same_seed_same_transition_log_under_sim_clock() {
    let run = || {
        let env = reach_env();
        let spec = env.spec().clone();
        let policy = GaussianMlpPolicy::new(&spec, GaussianConfig::default(), 3).unwrap();
        let clock = SimClock::new(spec.control_period());
        let mut control = ControlLoop::new(
            env,
            clock,
            Inference::inline(PolicySlot::new(policy)),
            envelope(&spec),
            config(2),
        );
        let mut log = Vec::new();
        control.run(&mut log).unwrap();
        (log, control.stats.summary())
    };
    let (a, summary) = run();
    let (b, _) = run();
    assert_eq!(summary.counters.episodes, 2);
    assert_eq!(a.len(), 200, "two 2 s episodes at 50 Hz");
    assert_eq!(log_bytes(&a), log_bytes(&b));
    assert!(a.iter().all(|t| t.behaviour_log_prob.is_some()));
    // The worker thread, in lockstep, gives the same log.
    let env = reach_env();
    let spec = env.spec().clone();
    let policy = GaussianMlpPolicy::new(&spec, GaussianConfig::default(), 3).unwrap();
    let mut control = ControlLoop::new(
        env,
        SimClock::new(spec.control_period()),
        Inference::worker(PolicySlot::new(policy)),
        envelope(&spec),
        config(2),
    );
    let mut c = Vec::new();
    control.run(&mut c).unwrap();
    assert_eq!(log_bytes(&a), log_bytes(&c));
}

/// A robot that fails in every way a real one can, and remembers every
/// command it was sent.
struct UnreliableRobot {
    inner: SimEnv,
    tick: u64,
    received: Vec<Action>,
    last: Option<Observation>,
}

impl Robot for UnreliableRobot {
    fn spec(&self) -> &RobotSpec {
        self.inner.spec()
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        self.inner.reset(request)
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.tick += 1;
        match self.tick % 13 {
            // The same measurement again: late.
            1..=3 if self.last.is_some() => Ok(self.last.clone().unwrap()),
            4 => Err(RobotError::Unavailable("link down".into())),
            5 => {
                let mut o = self.inner.observe()?;
                o.state[0] = f32::NAN;
                Ok(o)
            }
            _ => {
                let o = self.inner.observe()?;
                self.last = Some(o.clone());
                Ok(o)
            }
        }
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.received.push(command.clone());
        if self.tick.is_multiple_of(17) {
            return Err(RobotError::Unavailable("bus error".into()));
        }
        self.inner.apply(command)
    }
}

/// Proposes wild commands: NaN, infinities, far outside the limits.
#[derive(Clone)]
struct WildPolicy {
    version: u64,
    calls: u64,
}

impl CheckedWeights for WildPolicy {
    fn weights_finite(&self) -> bool {
        true
    }
}

impl Policy for WildPolicy {
    fn version(&self) -> u64 {
        self.version
    }

    fn act(
        &mut self,
        observations: &[Observation],
        _: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        self.calls += 1;
        let value = match self.calls % 5 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => 1e6,
            3 => -40.0,
            _ => 0.3,
        };
        // Three actions ahead, so that the chunk path is exercised.
        let action = Action::new(vec![value; 6]);
        Ok(observations
            .iter()
            .map(|_| PolicyOutput {
                chunk: ActionChunk {
                    actions: vec![action.clone(); 3],
                },
                sampled: None,
                log_prob: Some(0.0),
                action_log_probs: None,
            })
            .collect())
    }
}

#[test]
fn bad_robots_and_wild_policies_never_get_an_unchecked_command_through() {
    let env = reach_env();
    let spec = env.spec().clone();
    let robot = UnreliableRobot {
        inner: env,
        tick: 0,
        received: Vec::new(),
        last: None,
    };
    let mut control = ControlLoop::new(
        robot,
        SimClock::new(spec.control_period()),
        Inference::inline(PolicySlot::new(WildPolicy {
            version: 1,
            calls: 0,
        })),
        envelope(&spec),
        LoopConfig {
            max_episodes: None,
            max_ticks: Some(600),
            ..config(0)
        },
    );
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    let s = control.stats.summary();
    println!("{s:#?}");
    assert_eq!(s.counters.ticks, 600, "the loop ran to the end");
    assert!(
        s.counters.apply_errors > 0 && s.counters.observe_errors > 0 && s.counters.stale_ticks > 0
    );
    assert!(
        s.counters.policy_errors > 0,
        "non-finite chunks are refused at infer"
    );
    assert!(s.clamps + s.holds_forced > 0 && s.counters.holds > 0);
    let (lower, upper) = spec.action.limits();
    let received = &control.robot().received;
    assert_eq!(received.len(), 600);
    for command in received {
        for (j, &b) in command.values.iter().enumerate() {
            assert!(
                b.is_finite() && b >= lower[j] && b <= upper[j],
                "{b} joint {j}"
            );
        }
    }
    assert!(log.iter().any(|t| t.safety_clamped
        && t.rewards.get(cerebellum_core::RewardComponents::SAFETY) == Some(-1.0)));
}

#[test]
fn non_finite_weights_are_refused_and_the_loop_keeps_the_last_good_ones() {
    let env = reach_env();
    let spec = env.spec().clone();
    let good = GaussianMlpPolicy::new(&spec, GaussianConfig::default(), 3).unwrap();
    let slot = PolicySlot::new(good.clone());
    let mut bad = good.clone();
    bad.actor.params_mut()[0] = f32::NAN;
    bad.set_version(good.version() + 1);
    assert!(slot.publish(bad).is_err());
    let mut newer = good.clone();
    newer.set_version(good.version() + 2);
    slot.publish(newer).unwrap();
    let mut control = ControlLoop::new(
        env,
        SimClock::new(spec.control_period()),
        Inference::inline(slot.clone()),
        envelope(&spec),
        config(1),
    );
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    assert!(
        log.iter()
            .all(|t| t.provenance.policy_version == good.version() + 2)
    );
}

/// Answers after `delay`: a policy too slow for the control rate.
#[derive(Clone)]
struct SlowPolicy {
    delay: Duration,
}

impl CheckedWeights for SlowPolicy {
    fn weights_finite(&self) -> bool {
        true
    }
}

impl Policy for SlowPolicy {
    fn version(&self) -> u64 {
        1
    }

    fn act(
        &mut self,
        observations: &[Observation],
        _: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        std::thread::sleep(self.delay);
        Ok(observations
            .iter()
            .map(|o| PolicyOutput {
                chunk: ActionChunk::single(Action::new(o.state[..6].to_vec())),
                sampled: None,
                log_prob: None,
                action_log_probs: None,
            })
            .collect())
    }
}

#[test]
fn a_slow_policy_on_the_worker_is_not_waited_for() {
    let env = reach_env();
    let spec = env.spec().clone();
    let period = spec.control_period();
    let mut control = ControlLoop::new(
        env,
        WallClock::new(period, Duration::from_micros(200)),
        Inference::worker(PolicySlot::new(SlowPolicy { delay: period * 3 })),
        envelope(&spec),
        LoopConfig {
            max_episodes: None,
            max_ticks: Some(40),
            inference_deadline: Some(LoopConfig::deadline_for(period)),
            ..config(0)
        },
    );
    let started = std::time::Instant::now();
    control.run(&mut Vec::new()).unwrap();
    let s = control.stats.summary();
    println!("{s:#?} in {:?}", started.elapsed());
    assert_eq!(s.counters.ticks, 40);
    assert!(s.counters.deadline_misses >= 20, "{s:?}");
    assert!(s.counters.holds >= 20, "{s:?}");
    // Each tick waited at most its deadline, never the policy.
    assert!(
        s.tick_latency_max_us < 3 * period.as_micros() as u64,
        "{s:?}"
    );
}

/// The simulated arm, keeping what it was sent.
struct RecordingRobot {
    inner: SimEnv,
    received: Vec<Action>,
}

impl Robot for RecordingRobot {
    fn spec(&self) -> &RobotSpec {
        self.inner.spec()
    }
    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        self.inner.reset(request)
    }
    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.inner.observe()
    }
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.received.push(command.clone());
        self.inner.apply(command)
    }
}

#[test]
fn an_estop_during_a_chunk_holds_the_measured_pose_until_the_operator_clears_it() {
    let env = reach_env();
    let spec = env.spec().clone();
    let mut control = ControlLoop::new(
        RecordingRobot {
            inner: env,
            received: Vec::new(),
        },
        SimClock::new(spec.control_period()),
        Inference::inline(PolicySlot::new(SweepPolicy)),
        envelope(&spec),
        LoopConfig {
            max_episodes: None,
            max_ticks: Some(5),
            stochastic: false,
            ..config(0)
        },
    );
    let button = control.estop_button();
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    // Pressed in the middle of a ten-tick chunk, from another thread.
    std::thread::spawn(move || button.press()).join().unwrap();
    control.config.max_ticks = Some(25);
    control.run(&mut log).unwrap();
    let held = control.robot().received[5..25].to_vec();
    assert!(
        held.iter().all(|c| c == &held[0]),
        "one pose held while the stop is pressed"
    );
    let measured = &log[4].observation.state[..6];
    for (c, m) in held[0].values.iter().zip(measured) {
        assert!(
            (c - m).abs() < 0.05,
            "the measured pose, not the planned one: {held:?} vs {measured:?}"
        );
    }
    assert!(log[5..25].iter().all(|t| t.safety_clamped
        && t.rewards.get(cerebellum_core::RewardComponents::SAFETY) == Some(-1.0)));
    assert_eq!(control.stats.envelope.estop_holds, 20);
    control.estop_button().clear();
    control.config.max_ticks = Some(35);
    control.run(&mut log).unwrap();
    let moved = &control.robot().received[25..35];
    assert!(
        moved.iter().any(|c| c != &held[0]),
        "moving again after the clear"
    );
    assert_eq!(control.stats.summary().counters.ticks, 35);
}

static STOP_AFTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn stop_after_the_countdown() -> bool {
    // Counts down once per tick: the stop comes mid-episode.
    use std::sync::atomic::Ordering;
    STOP_AFTER
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
}

#[test]
fn a_stop_or_the_end_of_a_one_shot_run_closes_the_open_episode_as_truncated() {
    let run = |limit: Option<u64>, stop: bool| {
        let env = reach_env();
        let spec = env.spec().clone();
        let policy = GaussianMlpPolicy::new(&spec, GaussianConfig::default(), 3).unwrap();
        let mut control = ControlLoop::new(
            env,
            SimClock::new(spec.control_period()),
            Inference::inline(PolicySlot::new(policy)),
            envelope(&spec),
            LoopConfig {
                max_episodes: None,
                max_ticks: limit,
                ..config(0)
            },
        )
        .with_final_truncation();
        if stop {
            control = control.with_stop(stop_after_the_countdown);
        }
        let mut log = Vec::new();
        control.run(&mut log).unwrap();
        log
    };
    // 130 ticks: one whole 100-tick episode, then 30 ticks cut short.
    let log = run(Some(130), false);
    assert_eq!(log.len(), 130);
    assert!(log[99].truncated || log[99].terminated);
    assert!(log[129].truncated, "the last tick closes the episode");
    assert_eq!(
        log.iter().filter(|t| t.truncated || t.terminated).count(),
        2
    );
    // Ctrl-C at the 42nd tick: no limit, the loop stops there.
    STOP_AFTER.store(41, std::sync::atomic::Ordering::SeqCst);
    let log = run(None, true);
    assert_eq!(log.len(), 42);
    assert!(log[41].truncated);
    assert!(log[..41].iter().all(|t| !t.truncated && !t.terminated));
}
