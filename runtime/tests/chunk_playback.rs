//! Chunk playback (`ControlLoop::with_chunk_playback`): a policy that plans
//! several actions per inference is asked again only when its chunk is
//! nearly played out; a late answer takes over at the index matching its
//! observation's age, and one that is entirely past is refused.
//!
//! The robot counts ticks (its observation is the tick number) and the
//! policy writes into each action the tick of the observation it answered
//! and the action's index, so the log says which action was played when.

use cerebellum_core::{
    Action, ActionChunk, ActionSpec, FieldSpec, Observation, ObservationSpec, Policy, PolicyError,
    PolicyOutput, ResetRequest, Robot, RobotError, RobotSpec, Sampling, SimClock, StepOutcome,
    Transition, Unit, WallClock,
};
use cerebellum_runtime::control_loop::{
    CheckedWeights, ControlLoop, Inference, LoopConfig, LoopCounters, PolicySlot,
};
use cerebellum_runtime::envelope::{EnvelopeConfig, SafetyEnvelope};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RATE_HZ: f64 = 50.0;

/// A robot whose observation is the number of the tick, which ends an
/// episode (truncated) every `episode_ticks` ticks if asked to.
struct TickRobot {
    spec: RobotSpec,
    tick: u64,
    in_episode: u64,
    episode_ticks: Option<u64>,
}

impl TickRobot {
    fn new(episode_ticks: Option<u64>) -> Self {
        let spec = RobotSpec {
            name: "ticker".into(),
            observation: ObservationSpec {
                fields: vec![FieldSpec::new("tick", Unit::Second, &["t"], &[(0.0, 1e6)])],
                cameras: Vec::new(),
                instruction: false,
            },
            action: ActionSpec {
                fields: vec![FieldSpec::new(
                    "plan",
                    Unit::Normalized,
                    &["observed_tick", "index"],
                    &[(0.0, 1e6), (0.0, 1e6)],
                )],
            },
            control_rate_hz: RATE_HZ,
        };
        Self {
            spec,
            tick: 0,
            in_episode: 0,
            episode_ticks,
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            state: vec![self.tick as f32],
            images: Vec::new(),
            instruction: None,
            timestamp: self.tick as f64,
        }
    }
}

impl Robot for TickRobot {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }

    fn reset(&mut self, _: &ResetRequest) -> Result<Observation, RobotError> {
        self.in_episode = 0;
        Ok(self.observation())
    }

    /// Called once a tick: the loop's tick and the robot's are the same.
    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.tick += 1;
        Ok(self.observation())
    }

    fn apply(&mut self, _: &Action) -> Result<StepOutcome, RobotError> {
        self.in_episode += 1;
        Ok(StepOutcome {
            truncated: self.episode_ticks == Some(self.in_episode),
            ..StepOutcome::default()
        })
    }
}

/// Plans `len` actions `[observed tick, index]`, after `delay`; call `n`
/// takes the `n`-th entry of the schedule (the last one repeats). Clones
/// (the worker's copy) share the record of the ticks it was asked at.
#[derive(Clone)]
struct PlanPolicy {
    schedule: Arc<Vec<(usize, Duration)>>,
    asked: Arc<Mutex<Vec<u64>>>,
}

impl PlanPolicy {
    fn new(schedule: Vec<(usize, Duration)>) -> Self {
        Self {
            schedule: Arc::new(schedule),
            asked: Arc::default(),
        }
    }

    /// The ticks of the observations it was asked about, in order.
    fn asked(&self) -> Vec<u64> {
        self.asked.lock().unwrap().clone()
    }
}

impl CheckedWeights for PlanPolicy {
    fn weights_finite(&self) -> bool {
        true
    }
}

impl Policy for PlanPolicy {
    fn version(&self) -> u64 {
        1
    }

    fn act(
        &mut self,
        observations: &[Observation],
        _: Sampling,
    ) -> Result<Vec<PolicyOutput>, PolicyError> {
        let (len, delay) = {
            let mut asked = self.asked.lock().unwrap();
            let call = asked.len().min(self.schedule.len() - 1);
            asked.push(observations[0].state[0] as u64);
            self.schedule[call]
        };
        std::thread::sleep(delay);
        Ok(observations
            .iter()
            .map(|o| PolicyOutput {
                chunk: ActionChunk {
                    actions: (0..len)
                        .map(|i| Action::new(vec![o.state[0], i as f32]))
                        .collect(),
                },
                sampled: None,
                log_prob: None,
                action_log_probs: None,
            })
            .collect())
    }
}

fn envelope(spec: &RobotSpec) -> SafetyEnvelope {
    SafetyEnvelope::new(spec, EnvelopeConfig::default(), None).unwrap()
}

fn config(ticks: u64, inference_deadline: Option<Duration>) -> LoopConfig {
    LoopConfig {
        seed: 7,
        stochastic: false,
        max_episodes: None,
        max_ticks: Some(ticks),
        inference_deadline,
        robot_id: "ticker0".into(),
        episodes_per_start: 1,
    }
}

fn period() -> Duration {
    Duration::from_secs_f64(1.0 / RATE_HZ)
}

/// (observed tick, index) of the action played at each tick (1-based, as
/// the robot counts), `None` where the loop held.
fn played(log: &[Transition]) -> Vec<Option<(u64, u64)>> {
    log.iter()
        .enumerate()
        .map(|(i, t)| {
            let tick = i as u64 + 1;
            let observed = t.policy_action.values[0] as u64;
            let index = t.policy_action.values[1] as u64;
            // A hold repeats an earlier command (or is no plan at all): its
            // "observed tick + index" is not this tick.
            (observed >= 1 && observed + index == tick).then(|| {
                assert_eq!(t.chunk_index as u64, index, "tick {tick}");
                assert_eq!(
                    t.sent_command, t.policy_action,
                    "the envelope let the plan through"
                );
                (observed, index)
            })
        })
        .collect()
}

/// Runs the loop over `ticks` ticks with `policy`, inline or on the worker.
fn run(
    policy: &PlanPolicy,
    worker: bool,
    wall_clock: bool,
    lead: Option<u32>,
    ticks: u64,
    episode_ticks: Option<u64>,
) -> (Vec<Transition>, LoopCounters) {
    let robot = TickRobot::new(episode_ticks);
    let spec = robot.spec().clone();
    let slot = PolicySlot::new(policy.clone());
    let inference = if worker {
        Inference::worker(slot)
    } else {
        Inference::inline(slot)
    };
    let deadline = wall_clock.then(|| LoopConfig::deadline_for(period()));
    let mut log = Vec::new();
    let counters = if wall_clock {
        let clock = WallClock::new(period(), Duration::from_micros(200));
        let mut control = ControlLoop::new(
            robot,
            clock,
            inference,
            envelope(&spec),
            config(ticks, deadline),
        );
        if let Some(lead) = lead {
            control = control.with_chunk_playback(lead);
        }
        control.run(&mut log).unwrap();
        println!("{:#?}", control.stats.summary());
        control.stats.counters
    } else {
        let clock = SimClock::new(period());
        let mut control = ControlLoop::new(
            robot,
            clock,
            inference,
            envelope(&spec),
            config(ticks, deadline),
        );
        if let Some(lead) = lead {
            control = control.with_chunk_playback(lead);
        }
        control.run(&mut log).unwrap();
        control.stats.counters
    };
    assert_eq!(log.len() as u64, ticks);
    (log, counters)
}

/// Holds only where the chunk had run dry: the action before a hold (after
/// the first chunk) was the last of its chunk, or a hold itself.
fn holds_only_when_dry(played: &[Option<(u64, u64)>], chunk_len: u64) {
    let first = played
        .iter()
        .position(Option::is_some)
        .expect("something played");
    for k in first + 1..played.len() {
        if played[k].is_none() {
            assert!(
                played[k - 1].is_none_or(|(_, index)| index == chunk_len - 1),
                "held at tick {} with actions left: {played:?}",
                k + 1
            );
        }
    }
}

#[test]
fn inline_playback_asks_once_per_chunk_and_plays_its_actions_in_order() {
    // H = 5, lead = 1: asked at ticks 1, 5, 9, …; the fifth action of each
    // chunk gives way to the next chunk.
    let policy = PlanPolicy::new(vec![(5, Duration::ZERO)]);
    let (log, counters) = run(&policy, false, false, Some(1), 40, None);
    let asked = policy.asked();
    assert_eq!(asked, (0..10).map(|j| 1 + 4 * j).collect::<Vec<_>>());
    for (k, action) in played(&log).iter().enumerate() {
        let tick = k as u64 + 1;
        let observed = 1 + 4 * ((tick - 1) / 4);
        assert_eq!(*action, Some((observed, tick - observed)), "tick {tick}");
    }
    assert_eq!(counters.chunks, 10);
    assert_eq!(
        (
            counters.holds,
            counters.stale_chunks,
            counters.deadline_misses
        ),
        (0, 0, 0)
    );

    // Without playback the same policy is asked at every tick, and only
    // the first action of each chunk is played (as before playback).
    let policy = PlanPolicy::new(vec![(5, Duration::ZERO)]);
    let (log, counters) = run(&policy, false, false, None, 40, None);
    assert_eq!(policy.asked(), (1..=40).collect::<Vec<_>>());
    assert!(
        played(&log)
            .iter()
            .enumerate()
            .all(|(k, a)| *a == Some((k as u64 + 1, 0)))
    );
    assert_eq!((counters.chunks, counters.stale_chunks), (40, 0));
}

#[test]
fn the_worker_in_lockstep_plays_exactly_what_inline_inference_plays() {
    // No deadline (simulated time): the worker is waited for on the tick
    // it is asked, so playback is as reproducible as inline inference.
    let inline = PlanPolicy::new(vec![(7, Duration::ZERO)]);
    let (inline_log, inline_counters) = run(&inline, false, false, Some(2), 60, None);
    let worker = PlanPolicy::new(vec![(7, Duration::ZERO)]);
    let (worker_log, worker_counters) = run(&worker, true, false, Some(2), 60, None);
    assert_eq!(inline.asked(), worker.asked());
    assert_eq!(inline.asked().len(), 12, "every 5 ticks over 60");
    assert_eq!(played(&inline_log), played(&worker_log));
    assert_eq!(inline_counters, worker_counters);
}

#[test]
fn a_late_chunk_starts_at_its_observations_age_and_the_robot_never_holds_mid_chunk() {
    // H = 10, lead = 5, the policy takes 45 ms (2¼ ticks at 50 Hz): the
    // loop plays on while the next chunk is computed; each chunk takes
    // over a couple of indices in.
    let policy = PlanPolicy::new(vec![(10, Duration::from_millis(45))]);
    let (log, counters) = run(&policy, true, true, Some(5), 50, None);
    let asked = policy.asked();
    let played = played(&log);
    println!("asked at {asked:?}\nplayed {played:?}");
    // Every action played is the one its chunk planned for this tick: an
    // answer to tick t taken up at tick n starts at index n − t.
    for (observed, _) in played.iter().flatten() {
        assert!(asked.contains(observed), "{observed} never asked");
    }
    let first = played.iter().flatten().next().expect("a chunk was played");
    assert!(
        first.1 >= 1,
        "the first answer came at least a tick after its observation: {first:?}"
    );
    assert!(
        played.iter().flatten().any(|&(_, index)| index >= 2),
        "a chunk taken up two or more ticks after its observation"
    );
    holds_only_when_dry(&played, 10);
    let holds = played.iter().filter(|a| a.is_none()).count() as u64;
    assert_eq!(counters.holds, holds);
    // The loop waited only with the chunk dry, and each such wait missed.
    assert_eq!(counters.deadline_misses, counters.holds);
    let mut chunks: Vec<u64> = played.iter().flatten().map(|&(t, _)| t).collect();
    chunks.dedup();
    assert_eq!(counters.chunks, chunks.len() as u64);
    assert!(counters.chunks >= 4, "{counters:?}");
    assert!(asked.len() <= 25, "not asked every tick: {asked:?}");
    assert_eq!(counters.stale_chunks, 0);
}

#[test]
fn an_answer_already_past_is_refused_and_the_current_chunk_plays_on() {
    // The first chunk plans 20 ticks; the second answer plans 2 and takes
    // 8 ticks: all of it is past when it comes. The third is quick.
    let policy = PlanPolicy::new(vec![
        (20, Duration::ZERO),
        (2, period() * 8),
        (20, Duration::ZERO),
    ]);
    let (log, counters) = run(&policy, true, true, Some(14), 40, None);
    let asked = policy.asked();
    let played = played(&log);
    println!("asked at {asked:?}\nplayed {played:?}");
    assert_eq!(counters.stale_chunks, 1, "{counters:?}");
    assert!(asked.len() >= 3, "{asked:?}");
    let (stale, next) = (asked[1], asked[2]);
    assert!(played.iter().flatten().all(|&(t, _)| t != stale));
    // The third request went out once the stale answer was in, so the
    // first chunk was still playing, in order, when it was refused.
    assert!(next < 20, "{asked:?}");
    for tick in 1..=next {
        assert_eq!(
            played[tick as usize - 1],
            Some((1, tick - 1)),
            "tick {tick}"
        );
    }
    holds_only_when_dry(&played, 20);
    assert!(counters.chunks >= 2, "{counters:?}");
}

#[test]
fn a_policy_slower_than_its_whole_chunk_never_moves_the_robot() {
    // Two actions planned in five ticks: every answer is past when it
    // comes.
    let policy = PlanPolicy::new(vec![(2, period() * 5)]);
    let (log, counters) = run(&policy, true, true, Some(1), 25, None);
    assert!(played(&log).iter().all(Option::is_none));
    assert_eq!(counters.chunks, 0);
    assert!(counters.stale_chunks >= 2, "{counters:?}");
    assert_eq!(counters.holds, 25);
    assert_eq!(counters.deadline_misses, 25);
}

#[test]
fn an_answer_to_the_episode_before_is_refused() {
    // Episodes of 6 ticks; the policy takes 1½ ticks and is asked again
    // as soon as it answers, so answers to an episode's last observations
    // come in the next episode.
    let policy = PlanPolicy::new(vec![(10, period().mul_f64(1.5))]);
    let (log, counters) = run(&policy, true, true, Some(9), 36, Some(6));
    let played = played(&log);
    println!("asked at {:?}\nplayed {played:?}", policy.asked());
    for (k, action) in played.iter().enumerate() {
        if let Some((observed, _)) = action {
            let began = k as u64 / 6 * 6;
            assert!(
                *observed > began,
                "tick {} played a plan from the episode before",
                k + 1
            );
        }
    }
    assert!(counters.stale_chunks >= 1, "{counters:?}");
    assert!(counters.chunks >= 5, "{counters:?}");
}
