//! The control loop driving the simulated arm across zenoh, served by
//! `RobotServer` exactly as firmware would: real sessions on loopback
//! (explicit endpoints, scouting off, free ports), real rapier physics.

mod common;

use cerebellum_core::{Robot, SimClock, Transition, WallClock};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::operator::Operator;
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, SessionConfig, free_local_port};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_runtime::control_loop::{
    ControlLoop, EStopButton, Inference, LoopConfig, PolicySlot, SAFETY_PENALTY, Tee,
};
use cerebellum_runtime::envelope::{ArmKinematics, EnvelopeConfig, SafetyEnvelope};
use cerebellum_runtime::learn::TrainConfig;
use cerebellum_runtime::learn::online::{LearnerThread, OnlinePpo, Pace};
use cerebellum_sim::{EnvConfig, SimEnv, TaskKind};
use common::{SweepPolicy, log_bytes, so101};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn reach_env() -> SimEnv {
    SimEnv::new(EnvConfig::default(), Some(so101())).unwrap()
}

fn endpoint() -> String {
    format!("tcp/127.0.0.1:{}", free_local_port())
}

/// The reach arm served as firmware would, on a peer session.
fn serve(robot_id: &str, endpoint: &str, lockstep: bool) -> RobotServer {
    serve_env(reach_env(), robot_id, endpoint, lockstep)
}

fn serve_env(env: SimEnv, robot_id: &str, endpoint: &str, lockstep: bool) -> RobotServer {
    let zenoh = session::open(&SessionConfig {
        mode: session::Mode::Peer,
        listen: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    })
    .unwrap();
    let mut config = ServerConfig::new(RobotKeys::new("cerebellum", robot_id).unwrap());
    config.lockstep = lockstep;
    RobotServer::start(zenoh, env, config).unwrap()
}

fn connect(robot_id: &str, endpoint: &str, estop: Option<EStopButton>) -> ZenohRobot {
    connect_expecting(reach_env().spec(), robot_id, endpoint, estop)
}

fn connect_expecting(
    spec: &cerebellum_core::RobotSpec,
    robot_id: &str,
    endpoint: &str,
    estop: Option<EStopButton>,
) -> ZenohRobot {
    let session = SessionConfig {
        connect: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    };
    let mut config = ClientConfig::new(session, RobotKeys::new("cerebellum", robot_id).unwrap());
    config.expected_spec = Some(spec.clone());
    let hooks = ClientHooks {
        on_estop: estop.map(|button| {
            Box::new(move |engaged: bool, _: &str| {
                if engaged {
                    button.press()
                } else {
                    button.clear()
                }
            }) as cerebellum_firmware_bridge::client::EStopHook
        }),
        on_teleop: None,
    };
    ZenohRobot::connect(config, hooks).unwrap()
}

fn envelope() -> SafetyEnvelope {
    let spec = reach_env().spec().clone();
    let joints = spec.action.len();
    let config = EnvelopeConfig {
        max_step_per_tick: vec![0.1; joints],
        ..EnvelopeConfig::default()
    };
    SafetyEnvelope::new(&spec, config, Some(Arc::new(ArmKinematics(so101())))).unwrap()
}

fn policy() -> GaussianMlpPolicy {
    let spec = reach_env().spec().clone();
    let mut p =
        GaussianMlpPolicy::new(&spec, TrainConfig::for_task(TaskKind::Reach).policy, 5).unwrap();
    p.set_version(1);
    p
}

fn loop_config(robot_id: &str, episodes: Option<u64>, ticks: Option<u64>) -> LoopConfig {
    LoopConfig {
        seed: 3,
        stochastic: true,
        max_episodes: episodes,
        max_ticks: ticks,
        inference_deadline: None,
        robot_id: robot_id.into(),
        episodes_per_start: 1,
    }
}

/// The log without what differs by construction: wall time, and the
/// robot clock (the simulator's episode time in process, the server's
/// monotonic clock over the wire).
fn comparable(log: &[Transition]) -> Vec<String> {
    log.iter()
        .map(|t| {
            let mut t = t.clone();
            t.sim_time = 0.0;
            t.observation.timestamp = 0.0;
            String::from_utf8(log_bytes(&[t])).unwrap()
        })
        .collect()
}

#[test]
fn a_lockstep_robot_over_zenoh_gives_the_loop_the_same_episodes_as_in_process() {
    let run = |robot: Box<dyn Robot + Send>| {
        let period = robot.spec().control_period();
        let mut control = ControlLoop::new(
            robot,
            SimClock::new(period),
            Inference::inline(PolicySlot::new(policy())),
            envelope(),
            loop_config("arm0", Some(2), None),
        );
        let mut log = Vec::new();
        control.run(&mut log).unwrap();
        (log, control.stats.summary())
    };
    let (local, local_summary) = run(Box::new(reach_env()));
    let endpoint = endpoint();
    let server = serve("arm0", &endpoint, true);
    let arm = connect("arm0", &endpoint, None);
    let (remote, remote_summary) = run(Box::new(arm));
    assert_eq!(remote_summary.counters.episodes, 2);
    assert_eq!(local.len(), remote.len());
    for (i, (a, b)) in comparable(&local)
        .iter()
        .zip(comparable(&remote))
        .enumerate()
    {
        assert!(
            a == &b,
            "transition {i} differs:\n in process: {a}\n over zenoh: {b}"
        );
    }
    assert_eq!(local_summary.counters, remote_summary.counters);
    let stats = server.stop();
    assert_eq!(stats.commands_applied, remote.len() as u64);
    assert_eq!(stats.inbox.rejected_total(), 0);
}

#[test]
fn a_server_killed_mid_episode_makes_the_loop_hold_and_a_new_one_resumes_it() {
    let endpoint = endpoint();
    let first = serve("arm0", &endpoint, false);
    let arm = connect("arm0", &endpoint, None);
    let period = arm.spec().control_period();
    let mut control = ControlLoop::new(
        arm,
        WallClock::new(period, Duration::from_micros(200)),
        Inference::inline(PolicySlot::new(policy())),
        envelope(),
        loop_config("arm0", None, Some(50)),
    );
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    assert_eq!(log.len(), 50, "every tick reached the robot");
    // The robot dies mid-episode; the loop goes on ticking.
    let killed_at = log.len();
    first.stop();
    let holds_before = control.stats.envelope.stale_holds;
    control.config.max_ticks = Some(100);
    control.run(&mut log).unwrap();
    // Until the silence is long enough to call the robot lost (300 ms, 15
    // ticks) commands still go out: from the second silent tick on they
    // hold the last measured pose.
    let sent_after_kill = &log[killed_at..];
    assert!(
        sent_after_kill.len() <= 17,
        "{} sent",
        sent_after_kill.len()
    );
    for t in sent_after_kill.iter().skip(2) {
        assert_eq!(
            t.sent_command.values,
            t.observation.state[..6],
            "not a hold"
        );
    }
    let killed_at = log.len();
    let lost = control.robot().stats();
    assert_eq!(lost.lost, 1, "{lost:?}");
    // The envelope held from the second silent tick on (watchdog at 2).
    let stale = control.stats.envelope.stale_holds - holds_before;
    assert!(stale >= 48, "held on {stale} of 50 silent ticks");
    // A new server appears on the same endpoint: the cut episode ends as
    // truncated and the loop starts a fresh one on it.
    let second = serve("arm0", &endpoint, false);
    let started = Instant::now();
    while control.robot().stats().recovered == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never resumed");
        control.config.max_ticks = Some(control.stats.counters.ticks + 10);
        control.run(&mut log).unwrap();
    }
    control.config.max_ticks = Some(control.stats.counters.ticks + 50);
    control.run(&mut log).unwrap();
    let resumed = &log[killed_at..];
    assert!(
        resumed.len() >= 45,
        "{} ticks after the restart",
        resumed.len()
    );
    // The cut episode's last transition ends it as truncated; the next
    // episode runs on the new server.
    assert!(resumed[0].truncated);
    assert!(resumed[1].provenance.episode_id > resumed[0].provenance.episode_id);
    assert!(second.stop().resets >= 1);
}

#[test]
fn an_estop_published_mid_chunk_makes_the_next_command_a_hold_until_cleared() {
    let endpoint = endpoint();
    let server = serve("arm0", &endpoint, true);
    let button = EStopButton::default();
    let arm = connect("arm0", &endpoint, Some(button.clone()));
    let period = arm.spec().control_period();
    let mut control = ControlLoop::new(
        arm,
        SimClock::new(period),
        Inference::inline(PolicySlot::new(SweepPolicy)),
        envelope(),
        loop_config("arm0", None, Some(5)),
    )
    .with_estop_button(button.clone());
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    let mut operator = Operator::connect(
        &SessionConfig {
            connect: vec![endpoint.clone()],
            ..SessionConfig::default()
        },
        RobotKeys::new("cerebellum", "arm0").unwrap(),
    )
    .unwrap();
    // In the middle of a ten-tick chunk.
    operator.estop(true, "hand in the cell").unwrap();
    let started = Instant::now();
    while !button.is_pressed() {
        assert!(started.elapsed() < Duration::from_secs(5), "never latched");
        std::thread::sleep(Duration::from_millis(2));
    }
    control.config.max_ticks = Some(15);
    control.run(&mut log).unwrap();
    let measured = log[4].observation.state[..6].to_vec();
    // The press is a reward event on the first stopped tick only.
    assert_eq!(log[5].rewards.get("estop"), Some(-1.0));
    assert!(
        log.iter()
            .enumerate()
            .all(|(i, t)| i == 5 || t.rewards.get("estop").is_none())
    );
    for t in &log[5..15] {
        for (c, m) in t.sent_command.values.iter().zip(&measured) {
            assert!((c - m).abs() < 0.02, "not a hold: {c} vs measured {m}");
        }
        assert_eq!(t.rewards.get("safety"), Some(SAFETY_PENALTY));
    }
    assert!(control.stats.envelope.estop_holds >= 10);
    operator.estop(false, "cleared").unwrap();
    while button.is_pressed() {
        assert!(started.elapsed() < Duration::from_secs(5), "never cleared");
        std::thread::sleep(Duration::from_millis(2));
    }
    control.config.max_ticks = Some(25);
    control.run(&mut log).unwrap();
    let moved = log[15..25]
        .iter()
        .any(|t| (t.sent_command.values[0] - measured[0]).abs() > 0.03);
    assert!(moved, "the arm moves again after the clear");
    assert!(server.stop().estopped_steps >= 10);
}

#[test]
fn two_servers_feed_one_learner_and_every_transition_names_its_robot() {
    let servers: Vec<(String, String, RobotServer)> = ["arm0", "arm1"]
        .iter()
        .map(|id| {
            let endpoint = endpoint();
            let server = serve(id, &endpoint, true);
            (id.to_string(), endpoint, server)
        })
        .collect();
    let mut config = TrainConfig::for_task(TaskKind::Reach);
    config.online.batch_transitions = 128;
    config.ppo.epochs = 1;
    config.ppo.minibatch_size = 64;
    let initial = policy();
    let slot = PolicySlot::new(initial.clone());
    let learner = OnlinePpo::new(initial, config, None);
    let (sink, thread) = LearnerThread::spawn(learner, slot.clone(), Pace::Lockstep);
    let loops: Vec<_> = servers
        .iter()
        .map(|(id, endpoint, _)| {
            let arm = connect(id, endpoint, None);
            let slot = slot.clone();
            let sink = sink.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let period = arm.spec().control_period();
                let mut control = ControlLoop::new(
                    arm,
                    SimClock::new(period),
                    Inference::inline(slot),
                    envelope(),
                    loop_config(&id, None, Some(200)),
                );
                let mut log = Vec::new();
                control.run(&mut Tee(sink, &mut log)).unwrap();
                log
            })
        })
        .collect();
    drop(sink);
    let logs: Vec<Vec<Transition>> = loops.into_iter().map(|l| l.join().unwrap()).collect();
    let status = thread.join();
    for (log, (id, _, _)) in logs.iter().zip(&servers) {
        assert_eq!(log.len(), 200);
        assert!(log.iter().all(|t| &t.provenance.robot_id == id));
    }
    assert_eq!(status.counters.received, 400);
    assert!(status.counters.updates >= 2, "{:?}", status.counters);
    // Versions advanced in both loops' logs: they act with shared weights.
    for log in &logs {
        assert!(log.last().unwrap().provenance.policy_version > 1);
    }
}

#[test]
fn a_teleop_takeover_over_zenoh_drives_the_arm_and_is_recorded_as_an_intervention() {
    use cerebellum_firmware_bridge::protocol::TeleopPhase;
    use cerebellum_runtime::robots::{
        ClockMode, OperatorInputs, RobotChoice, ZenohArgs, connect_robot,
    };
    let endpoint = endpoint();
    // The runtime and the operator are both clients of the robot's peer
    // session, which forwards the operator's frames to the runtime.
    let server = serve("arm0", &endpoint, true);
    let args = ZenohArgs {
        prefix: "cerebellum".into(),
        robot_id: "arm0".into(),
        meta_timeout: 10.0,
        zenoh_config: None,
        zenoh_user: None,
    };
    let choice: RobotChoice = format!("zenoh:{endpoint}/arm0").parse().unwrap();
    let mut inputs = OperatorInputs::default();
    let spec = reach_env().spec().clone();
    let env_config = EnvConfig::default();
    let arm = connect_robot(&choice, &args, &env_config, None, &spec, &mut inputs).unwrap();
    let teleop = inputs.teleop.clone().expect("zenoh robots take teleop");
    let mut control = inputs.attach(
        arm.into_loop(
            ClockMode::Sim,
            Inference::inline(PolicySlot::new(policy())),
            envelope(),
            loop_config("arm0", None, Some(5)),
        )
        .unwrap(),
    );
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    let mut operator = Operator::connect(
        &SessionConfig {
            connect: vec![endpoint.clone()],
            ..SessionConfig::default()
        },
        RobotKeys::new("cerebellum", "arm0").unwrap(),
    )
    .unwrap();
    let mut target = log[4].observation.state[..6].to_vec();
    target[0] += 0.05;
    operator.teleop(TeleopPhase::Begin, &target).unwrap();
    let started = Instant::now();
    while !teleop.is_active() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "takeover never arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    control.config.max_ticks = Some(15);
    control.run(&mut log).unwrap();
    operator.teleop(TeleopPhase::End, &[]).unwrap();
    while teleop.is_active() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "hand-back never arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    control.config.max_ticks = Some(20);
    control.run(&mut log).unwrap();
    for (i, t) in log.iter().enumerate() {
        let operated = (5..15).contains(&i);
        assert_eq!(t.intervention, operated, "tick {i}");
        let expected = if i == 5 { -1.0 } else { 0.0 };
        assert_eq!(t.rewards.get("intervention"), Some(expected), "tick {i}");
        if operated {
            // The operator's command, through the envelope, with no
            // policy log-probability (a demonstration, not a sample).
            assert_eq!(t.sent_command.values, target, "tick {i}");
            assert_eq!(t.policy_action.values, target);
            assert_eq!(t.behaviour_log_prob, None);
        }
    }
    assert_eq!(control.stats.counters.takeovers, 1);
    assert_eq!(control.stats.counters.intervention_ticks, 10);
    server.stop();
}

#[test]
fn a_fleet_reaches_its_robots_through_one_zenoh_router() {
    let router_endpoint = endpoint();
    let _router = session::open(&SessionConfig {
        mode: session::Mode::Router,
        listen: vec![router_endpoint.clone()],
        ..SessionConfig::default()
    })
    .unwrap();
    // The robots only connect to the router; nobody connects to them.
    let servers: Vec<RobotServer> = ["arm0", "arm1"]
        .iter()
        .map(|id| {
            let zenoh = session::open(&SessionConfig {
                mode: session::Mode::Peer,
                connect: vec![router_endpoint.clone()],
                ..SessionConfig::default()
            })
            .unwrap();
            let mut config = ServerConfig::new(RobotKeys::new("cerebellum", id).unwrap());
            config.lockstep = true;
            RobotServer::start(zenoh, reach_env(), config).unwrap()
        })
        .collect();
    for id in ["arm0", "arm1"] {
        let mut arm = connect(id, &router_endpoint, None);
        let first = arm
            .reset(&cerebellum_core::ResetRequest { seed: 5 })
            .unwrap();
        let hold = cerebellum_core::Action::new(first.state[..6].to_vec());
        for _ in 0..10 {
            arm.apply(&hold).unwrap();
        }
        assert_eq!(arm.stats().commands_sent, 10);
    }
    for server in servers {
        assert_eq!(server.stop().commands_applied, 10);
    }
}

#[test]
fn camera_frames_cross_the_wire_with_their_state() {
    let config = EnvConfig {
        cameras: vec![cerebellum_sim::camera::CameraConfig::default()],
        ..EnvConfig::default()
    };
    let make = || SimEnv::new(config.clone(), Some(so101())).unwrap();
    let endpoint = endpoint();
    let server = serve_env(make(), "arm0", &endpoint, true);
    let mut remote = connect_expecting(make().spec(), "arm0", &endpoint, None);
    let mut local = make();
    let request = cerebellum_core::ResetRequest { seed: 9 };
    let first = local.reset(&request).unwrap();
    assert_eq!(remote.reset(&request).unwrap().images, first.images);
    assert_eq!(first.images.len(), 1);
    let mut command = cerebellum_core::Action::new(first.state[..6].to_vec());
    command.values[0] += 0.2;
    for _ in 0..5 {
        local.apply(&command).unwrap();
        remote.apply(&command).unwrap();
        let (l, r) = (local.observe().unwrap(), remote.observe().unwrap());
        assert_eq!(l.state, r.state);
        // The frame taken with this state, not the one before it.
        assert_eq!(l.images, r.images);
    }
    server.stop();
}

#[test]
fn a_robot_that_restarts_faster_than_the_silence_limit_still_cuts_the_episode() {
    let endpoint = endpoint();
    let first = serve("arm0", &endpoint, false);
    let mut config = ClientConfig::new(
        SessionConfig {
            connect: vec![endpoint.clone()],
            ..SessionConfig::default()
        },
        RobotKeys::new("cerebellum", "arm0").unwrap(),
    );
    // Silence alone would take 30 s to call the robot lost: only the new
    // boot id in its frames can tell the loop that it restarted.
    config.lost_after = Duration::from_secs(30);
    let arm = ZenohRobot::connect(config, ClientHooks::default()).unwrap();
    let period = arm.spec().control_period();
    let mut control = ControlLoop::new(
        arm,
        WallClock::new(period, Duration::from_micros(200)),
        Inference::inline(PolicySlot::new(policy())),
        envelope(),
        loop_config("arm0", None, Some(20)),
    );
    let mut log = Vec::new();
    control.run(&mut log).unwrap();
    first.stop();
    let second = serve("arm0", &endpoint, false);
    let started = Instant::now();
    while control.robot().stats().recovered == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never noticed the restart"
        );
        control.config.max_ticks = Some(control.stats.counters.ticks + 10);
        control.run(&mut log).unwrap();
    }
    control.config.max_ticks = Some(control.stats.counters.ticks + 20);
    control.run(&mut log).unwrap();
    let stats = control.robot().stats();
    assert_eq!((stats.lost, stats.recovered), (1, 1), "{stats:?}");
    let last = log.last().unwrap();
    assert!(
        last.provenance.episode_id >= 1,
        "the loop moved on to a new episode"
    );
    assert!(second.stop().resets >= 1);
}
