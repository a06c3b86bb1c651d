//! The robot server and client over real zenoh sessions on loopback
//! (explicit endpoints, scouting off, a free port per test), with a small
//! kinematic robot standing in for firmware's servos.

use cerebellum_core::{
    Action, ActionSpec, FieldSpec, Observation, ObservationSpec, ResetRequest, Robot, RobotError,
    RobotSpec, StepOutcome, Unit,
};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientError, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::operator::Operator;
use cerebellum_firmware_bridge::protocol::{
    self, Body, Command, Floats, Frame, Header, Meta, PROTOCOL_VERSION,
};
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, SessionConfig, free_local_port};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zenoh::Wait;

/// Two joints that move to their targets at once; records every command.
/// With a horizon, an episode is truncated on its `horizon`th step.
#[derive(Clone)]
struct PointRobot {
    spec: RobotSpec,
    joints: Arc<Mutex<Vec<f32>>>,
    applied: Arc<Mutex<Vec<Vec<f32>>>>,
    time: f64,
    horizon: Option<u32>,
    steps: u32,
}

fn point_spec(rate: f64) -> RobotSpec {
    let limits = [(-1.0, 1.0), (-1.0, 1.0)];
    RobotSpec {
        name: "point2".into(),
        control_rate_hz: rate,
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "joint_position",
                Unit::Radian,
                &["a", "b"],
                &limits,
            )],
            cameras: vec![],
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "joint_position",
                Unit::Radian,
                &["a", "b"],
                &limits,
            )],
        },
    }
}

impl PointRobot {
    fn new(rate: f64) -> Self {
        Self {
            spec: point_spec(rate),
            joints: Arc::new(Mutex::new(vec![0.0, 0.0])),
            applied: Arc::default(),
            time: 0.0,
            horizon: None,
            steps: 0,
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            state: self.joints.lock().unwrap().clone(),
            images: vec![],
            instruction: None,
            timestamp: self.time,
        }
    }
}

impl Robot for PointRobot {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }
    fn reset(&mut self, _: &ResetRequest) -> Result<Observation, RobotError> {
        *self.joints.lock().unwrap() = vec![0.0, 0.0];
        self.steps = 0;
        Ok(self.observation())
    }
    fn observe(&mut self) -> Result<Observation, RobotError> {
        Ok(self.observation())
    }
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.spec.action.check(command)?;
        self.time += 1.0 / self.spec.control_rate_hz;
        *self.joints.lock().unwrap() = command.values.clone();
        self.applied.lock().unwrap().push(command.values.clone());
        self.steps += 1;
        Ok(StepOutcome {
            truncated: self.horizon.is_some_and(|h| self.steps >= h),
            ..StepOutcome::default()
        })
    }
}

fn endpoint() -> String {
    format!("tcp/127.0.0.1:{}", free_local_port())
}

fn keys() -> RobotKeys {
    RobotKeys::new("test", "arm0").unwrap()
}

fn serve(robot: PointRobot, endpoint: &str, lockstep: bool) -> RobotServer {
    let zenoh = session::open(&SessionConfig {
        mode: session::Mode::Peer,
        listen: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    })
    .unwrap();
    let mut config = ServerConfig::new(keys());
    config.lockstep = lockstep;
    RobotServer::start(zenoh, robot, config).unwrap()
}

fn connect_to(endpoint: &str) -> SessionConfig {
    SessionConfig {
        connect: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    }
}

fn client(endpoint: &str, hooks: ClientHooks) -> ZenohRobot {
    ZenohRobot::connect(ClientConfig::new(connect_to(endpoint), keys()), hooks).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn lockstep_steps_once_per_command_and_answers_each() {
    let robot = PointRobot::new(50.0);
    let applied = robot.applied.clone();
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, true);
    let mut arm = client(&endpoint, ClientHooks::default());
    assert!(arm.is_lockstep());
    assert_eq!(arm.spec(), &point_spec(50.0));
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    for i in 0..20 {
        let target = vec![0.01 * i as f32, -0.02 * i as f32];
        if let Err(e) = arm.apply(&Action::new(target.clone())) {
            panic!("{e}: server {:?} client {:?}", server.stats(), arm.stats());
        }
        // The state after a lockstep apply is the one that command made.
        assert_eq!(arm.observe().unwrap().state, target);
    }
    assert_eq!(applied.lock().unwrap().len(), 20);
    assert_eq!(server.stats().commands_applied, 20);
    assert_eq!(arm.stats().commands_sent, 20);
    // An out-of-spec command never leaves the client.
    assert!(arm.apply(&Action::new(vec![2.0, 0.0])).is_err());
    assert!(arm.apply(&Action::new(vec![f32::NAN, 0.0])).is_err());
    assert_eq!(server.stop().commands_applied, 20);
}

#[test]
fn the_server_holds_position_once_the_last_command_expires() {
    let robot = PointRobot::new(100.0);
    let joints = robot.joints.clone();
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, false);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    for i in 0..30 {
        arm.apply(&Action::new(vec![0.01 * i as f32, 0.3])).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    // The runtime dies.
    drop(arm);
    std::thread::sleep(Duration::from_millis(300));
    let stats = server.stats();
    assert!(stats.expired_commands > 0, "{stats:?}");
    let held = joints.lock().unwrap().clone();
    assert!(
        (held[1] - 0.3).abs() < 1e-6,
        "moved somewhere else: {held:?}"
    );
    let holds_before = stats.holds;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(*joints.lock().unwrap(), held, "still moving after expiry");
    assert!(server.stop().holds > holds_before + 10);
}

fn raw_frame(seq: u32, boot: u32, body: Body) -> Vec<u8> {
    protocol::encode_to_vec(&Frame {
        header: Header {
            protocol: PROTOCOL_VERSION,
            robot: "arm0",
            boot,
            seq,
            stamp: session::monotonic_now(),
        },
        body,
    })
}

#[test]
fn bad_frames_on_the_wire_are_counted_and_never_applied() {
    let robot = PointRobot::new(50.0);
    let applied = robot.applied.clone();
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, true);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    let intruder = session::open(&connect_to(&endpoint)).unwrap();
    let accepted_before = server.stats().inbox.accepted;
    let key = keys().command();
    let command = |values: &'static [f32]| {
        Body::Command(Command {
            episode: 1,
            policy_version: 0,
            expires_at: 1e9,
            values: Floats::Values(values),
        })
    };
    let mut old_version = raw_frame(1, 99, command(&[0.1, 0.1]));
    old_version[0] = 0;
    let valid = raw_frame(5, 99, command(&[0.5, 0.5]));
    let mut wrong_robot = valid.clone();
    wrong_robot[2] = b'x';
    let mut unknown_body = valid.clone();
    unknown_body[16] = 42;
    let frames: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        valid[..valid.len() - 3].to_vec(),
        old_version,
        raw_frame(2, 99, command(&[f32::NAN, 0.0])),
        raw_frame(3, 99, command(&[f32::INFINITY, 0.0])),
        wrong_robot,
        unknown_body,
        raw_frame(
            4,
            99,
            Body::Reset(protocol::Reset {
                episode: 9,
                seed: 0,
            }),
        )[..5]
            .to_vec(),
        valid.clone(),
        // The same frame again, then an older one: reordered.
        valid,
        raw_frame(4, 99, command(&[0.7, 0.7])),
    ];
    for frame in &frames {
        intruder.put(&key, frame.clone()).wait().unwrap();
    }
    wait_until("the server counts all frames", || {
        let inbox = server.stats().inbox;
        inbox.accepted - accepted_before + inbox.rejected_total() >= frames.len() as u64
    });
    let inbox = server.stats().inbox;
    assert_eq!(inbox.accepted - accepted_before, 1, "{inbox:?}");
    for (reason, count) in [
        ("truncated", 4),
        ("malformed", 1),
        ("unknown_version", 1),
        ("not_finite", 2),
        ("wrong_robot", 1),
        ("reordered", 2),
    ] {
        assert_eq!(inbox.rejected(reason), count, "{reason}: {inbox:?}");
    }
    // Only the valid command stepped the robot; nothing non-finite did.
    wait_until("one step", || applied.lock().unwrap().len() == 1);
    assert_eq!(applied.lock().unwrap()[0], vec![0.5, 0.5]);
    drop(arm);
    server.stop();
}

#[test]
fn an_estop_on_the_wire_latches_the_robot_until_cleared() {
    let robot = PointRobot::new(100.0);
    let joints = robot.joints.clone();
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, false);
    let pressed = Arc::new(Mutex::new(Vec::new()));
    let seen = pressed.clone();
    let hooks = ClientHooks {
        on_estop: Some(Box::new(move |engaged, reason| {
            seen.lock().unwrap().push((engaged, reason.to_owned()))
        })),
        on_teleop: None,
    };
    let mut arm = client(&endpoint, hooks);
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    let mut operator = Operator::connect(&connect_to(&endpoint), keys()).unwrap();
    let drive = |arm: &mut ZenohRobot, target: f32| {
        for _ in 0..10 {
            arm.apply(&Action::new(vec![target, target])).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    drive(&mut arm, 0.2);
    assert_eq!(joints.lock().unwrap()[0], 0.2);
    operator.estop(true, "hand in the cell").unwrap();
    wait_until("the server latches", || server.stats().estopped);
    drive(&mut arm, 0.6);
    assert_eq!(joints.lock().unwrap()[0], 0.2, "moved while e-stopped");
    assert!(server.stats().estopped_steps > 0);
    operator.estop(false, "cleared").unwrap();
    wait_until("the server clears", || !server.stats().estopped);
    drive(&mut arm, 0.6);
    assert_eq!(joints.lock().unwrap()[0], 0.6);
    // The runtime's side heard the stop and the clear once each.
    let heard: Vec<bool> = pressed.lock().unwrap().iter().map(|p| p.0).collect();
    assert_eq!(heard, vec![true, false]);
    server.stop();
}

#[test]
fn connecting_checks_the_spec_and_gives_up_without_meta() {
    let endpoint = endpoint();
    let server = serve(PointRobot::new(50.0), &endpoint, false);
    let mut config = ClientConfig::new(connect_to(&endpoint), keys());
    config.expected_spec = Some(point_spec(25.0));
    match ZenohRobot::connect(config, ClientHooks::default()) {
        Err(ClientError::SpecMismatch { difference, .. }) => {
            assert!(difference.contains("50 Hz"), "{difference}")
        }
        other => panic!("expected a spec mismatch, got {:?}", other.map(|_| ())),
    }
    server.stop();
    // Nobody serving: a clear error after the timeout, no hang.
    let mut config = ClientConfig::new(connect_to(&endpoint), keys());
    config.meta_timeout = Duration::from_millis(300);
    match ZenohRobot::connect(config, ClientHooks::default()) {
        Err(e @ ClientError::NoMeta { .. }) => {
            let message = e.to_string();
            assert!(message.contains("serve-sim"), "{message}");
            // A robot that is not listening yet: say how to go on.
            assert!(message.contains("not be listening yet"), "{message}");
            assert!(message.contains("--meta-timeout"), "{message}");
        }
        other => panic!("expected NoMeta, got {:?}", other.map(|_| ())),
    }
}

/// A robot that announces `meta_hz` in its Meta and the point robot's spec
/// at `spec_hz`, and nothing else, until dropped.
struct AnnouncingRobot {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnnouncingRobot {
    fn start(endpoint: &str, meta_hz: f32, spec_hz: f64) -> Self {
        let session = session::open(&SessionConfig {
            mode: session::Mode::Peer,
            listen: vec![endpoint.to_owned()],
            ..SessionConfig::default()
        })
        .unwrap();
        let spec_json = serde_json::to_string(&point_spec(spec_hz)).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seq = 0;
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                seq += 1;
                let meta = raw_frame(
                    seq,
                    5,
                    Body::Meta(Meta {
                        control_rate_hz: meta_hz,
                        command_timeout_s: 0.1,
                        lockstep: false,
                        spec_json: &spec_json,
                    }),
                );
                session.put(keys().meta(), meta).wait().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            session.close().wait().unwrap();
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AnnouncingRobot {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

#[test]
fn a_robot_whose_meta_rate_is_not_its_spec_rate_is_refused() {
    let endpoint = endpoint();
    let robot = AnnouncingRobot::start(&endpoint, 25.0, 50.0);
    match ZenohRobot::connect(
        ClientConfig::new(connect_to(&endpoint), keys()),
        ClientHooks::default(),
    ) {
        Err(e @ ClientError::RateMismatch { .. }) => {
            let message = e.to_string();
            assert!(message.contains("25 Hz in its Meta"), "{message}");
            assert!(message.contains("50 Hz in its spec"), "{message}");
        }
        other => panic!("expected RateMismatch, got {:?}", other.map(|_| ())),
    }
    drop(robot);
    // A rate that only f32 rounding separates (serve-sim's 50 Hz is
    // 1 / 0.02f32 = 50.00000111758712 Hz, and 50.0 as f32) is one rate.
    let endpoint = self::endpoint();
    let rate = 1.0 / f64::from(0.02f32);
    let server = serve(PointRobot::new(rate), &endpoint, false);
    let arm = client(&endpoint, ClientHooks::default());
    assert_eq!(arm.spec().control_rate_hz, rate);
    drop(arm);
    server.stop();
}

#[test]
fn commands_of_the_wrong_length_or_outside_the_limits_are_refused_and_held() {
    let robot = PointRobot::new(50.0);
    let applied = robot.applied.clone();
    let joints = robot.joints.clone();
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, true);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    arm.apply(&Action::new(vec![0.25, -0.25])).unwrap();
    let holds_before = arm.stats().robot_holds;
    // Firmware's other clients are not bound by the runtime's checks.
    let intruder = session::open(&connect_to(&endpoint)).unwrap();
    let command = |values: &[f32]| -> Vec<u8> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        raw_frame(
            seq,
            77,
            Body::Command(Command {
                episode: 1,
                policy_version: 0,
                expires_at: 1e9,
                values: Floats::Values(values),
            }),
        )
    };
    let refusals = [
        &[0.5][..],
        &[0.5, 0.5, 0.5][..],
        &[1.5, 0.0][..],
        &[0.0, -1.0001][..],
    ];
    for (i, values) in refusals.into_iter().enumerate() {
        intruder
            .put(keys().command(), command(values))
            .wait()
            .unwrap();
        // Each is answered (lockstep) by a step that holds.
        wait_until("a holding step", || server.stats().holds == i as u64 + 1);
    }
    wait_until("four holding states", || {
        arm.stats().robot_holds == holds_before + 4
    });
    let stats = server.stats();
    assert_eq!(
        (stats.commands_wrong_length, stats.commands_out_of_limits),
        (2, 2),
        "{stats:?}"
    );
    assert_eq!(stats.commands_applied, 1, "{stats:?}");
    assert_eq!(stats.holds, 4, "{stats:?}");
    assert_eq!(*joints.lock().unwrap(), vec![0.25, -0.25]);
    assert!(
        applied
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == &vec![0.25, -0.25]),
        "a refused command reached the robot: {applied:?}"
    );
    // Limits are inclusive: a command on them is applied.
    arm.apply(&Action::new(vec![1.0, -1.0])).unwrap();
    assert_eq!(*joints.lock().unwrap(), vec![1.0, -1.0]);
    assert_eq!(server.stop().commands_applied, 2);
}

#[test]
fn the_server_reports_the_largest_step_between_commands_of_an_episode() {
    let endpoint = endpoint();
    let server = serve(PointRobot::new(50.0), &endpoint, true);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    for target in [[0.0, 0.0], [0.1, -0.05], [0.3, 0.0], [0.35, 0.1]] {
        arm.apply(&Action::new(target.to_vec())).unwrap();
    }
    let step = server.stats().max_command_step;
    assert!((step - 0.2).abs() < 1e-6, "{step}");
    // A new episode starts afresh: its first command is no step from the
    // last of the previous one.
    arm.reset(&ResetRequest { seed: 2 }).unwrap();
    arm.apply(&Action::new(vec![-0.9, 0.9])).unwrap();
    arm.apply(&Action::new(vec![-0.8, 0.9])).unwrap();
    let step = server.stop().max_command_step;
    assert!((step - 0.2).abs() < 1e-6, "{step}");
}

/// Samples as they arrived: key and payload.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// What the robot published, in the order it arrived, from a session of
/// its own.
fn watch(endpoint: &str) -> (zenoh::Session, Seen) {
    let session = session::open(&connect_to(endpoint)).unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    session
        .declare_subscriber(format!("{}/{}/**", keys().prefix, keys().robot))
        .callback(move |sample| {
            let key = sample.key_expr().as_str().to_owned();
            let bytes = sample.payload().to_bytes().into_owned();
            log.lock().unwrap().push((key, bytes));
        })
        .background()
        .wait()
        .unwrap();
    (session, seen)
}

#[test]
fn while_latched_every_state_holds_and_a_reset_is_announced_at_once() {
    let endpoint = endpoint();
    let server = serve(PointRobot::new(100.0), &endpoint, false);
    let (_watcher, seen) = watch(&endpoint);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    let mut operator = Operator::connect(&connect_to(&endpoint), keys()).unwrap();
    operator.estop(true, "hand in the cell").unwrap();
    wait_until("the server latches", || server.stats().estopped);
    // Resets while latched: obeyed, and the robot holds from the first
    // State of each episode on.
    for seed in [2, 3] {
        arm.reset(&ResetRequest { seed }).unwrap();
        for _ in 0..5 {
            let _ = arm.apply(&Action::new(vec![0.5, 0.5]));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    operator.estop(false, "cleared").unwrap();
    wait_until("the server clears", || !server.stats().estopped);
    std::thread::sleep(Duration::from_millis(150));
    server.stop();
    let frames = seen.lock().unwrap().clone();
    let decoded: Vec<(String, Frame)> = frames
        .iter()
        .filter_map(|(key, bytes)| Some((key.clone(), protocol::decode(bytes).ok()?)))
        .filter(|(_, frame)| frame.header.robot == "arm0")
        .collect();
    let from_robot = |frame: &Frame| {
        matches!(
            frame.body,
            Body::State(_) | Body::ResetAck(_) | Body::Heartbeat(_) | Body::Meta(_)
        )
    };
    let mut acked = None;
    let mut latched_states = 0;
    for (i, (_, frame)) in decoded.iter().enumerate() {
        match frame.body {
            Body::State(state) if state.estopped => {
                latched_states += 1;
                assert!(state.holding, "#{i}: {state:?}");
            }
            Body::Heartbeat(beat) => {
                if let Some(episode) = acked {
                    assert_eq!(
                        beat.episode, episode,
                        "a Heartbeat after ResetAck {episode}"
                    );
                }
            }
            Body::ResetAck(ack) => {
                acked = Some(ack.episode);
                // The episode's first State, then a Heartbeat naming it,
                // before anything else the robot publishes; while latched
                // (episodes 2 and 3) the State holds from the start.
                let next: Vec<&Body> = decoded[i + 1..]
                    .iter()
                    .map(|(_, f)| f)
                    .filter(|f| from_robot(f))
                    .take(2)
                    .map(|f| &f.body)
                    .collect();
                let latched = ack.episode >= 2;
                assert!(
                    matches!(next[0], Body::State(s) if s.episode == ack.episode
                        && s.applied_command == 0
                        && s.estopped == latched
                        && s.holding == latched),
                    "after ResetAck {}: {next:?}",
                    ack.episode
                );
                assert!(
                    matches!(next[1], Body::Heartbeat(h) if h.episode == ack.episode
                        && h.estopped == latched),
                    "after ResetAck {}: {next:?}",
                    ack.episode
                );
            }
            _ => {}
        }
    }
    assert!(
        latched_states >= 10,
        "{latched_states} states while latched"
    );
    assert_eq!(acked, Some(3));
}

#[test]
fn no_command_goes_out_for_an_episode_the_robot_reported_ended() {
    let mut robot = PointRobot::new(100.0);
    robot.horizon = Some(5);
    let endpoint = endpoint();
    let server = serve(robot, &endpoint, false);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    assert!(!arm.apply(&Action::new(vec![0.2, 0.2])).unwrap().done());
    // The robot steps on its own clock (holding once the command times
    // out) and ends the episode at its fifth step.
    wait_until("the robot ends the episode", || {
        server.stats().episodes_done == 1
    });
    std::thread::sleep(Duration::from_millis(50));
    let sent = arm.stats().commands_sent;
    let outcome = arm.apply(&Action::new(vec![0.3, 0.3])).unwrap();
    assert!(outcome.truncated, "{outcome:?}");
    let stats = arm.stats();
    assert_eq!(
        stats.commands_sent, sent,
        "a command for the closed episode"
    );
    assert_eq!(stats.commands_after_end, 1);
    // Until the next reset the episode stays closed.
    assert!(arm.apply(&Action::new(vec![0.3, 0.3])).is_err());
    assert_eq!(arm.stats().commands_sent, sent);
    arm.reset(&ResetRequest { seed: 2 }).unwrap();
    assert!(!arm.apply(&Action::new(vec![0.3, 0.3])).unwrap().done());
    assert_eq!(arm.stats().commands_sent, sent + 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        server.stop().wrong_episode,
        0,
        "a command reached a closed episode"
    );
}

#[test]
fn a_wall_clock_robot_never_gets_commands_faster_than_its_rate() {
    let rate = 50.0;
    let endpoint = endpoint();
    let server = serve(PointRobot::new(rate), &endpoint, false);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    let accepted_before = server.stats().inbox.accepted;
    let (mut sent, mut refused) = (0u64, 0u64);
    let started = session::monotonic_now();
    let mut last = started;
    // As fast as the CPU allows, for one second.
    while session::monotonic_now() - started < 1.0 {
        match arm.apply(&Action::new(vec![0.1, 0.1])) {
            Ok(_) => sent += 1,
            Err(e) => {
                assert!(e.to_string().contains("exceeds"), "{e}");
                refused += 1;
            }
        }
        last = session::monotonic_now();
    }
    let elapsed = last - started;
    // Counted on the server's side, once every command has arrived.
    wait_until("the server receives every command sent", || {
        server.stats().inbox.accepted - accepted_before == sent
    });
    let bound = rate * elapsed * (1.0 + 1e-4) + 2.0;
    assert!(
        sent as f64 <= bound,
        "{sent} commands in {elapsed:.3} s at {rate} Hz (at most {bound:.1})"
    );
    // Not starved either (a generous floor: the test may be descheduled).
    assert!(sent as f64 >= rate * elapsed / 4.0, "only {sent} sent");
    let stats = arm.stats();
    assert_eq!(stats.commands_sent, sent);
    assert_eq!(stats.commands_over_rate, refused);
    assert!(refused > 0);
    drop(arm);
    server.stop();
}

#[test]
fn a_reset_right_behind_a_command_is_served_before_the_next_period() {
    // One step per second: a reset that waited for the next period would
    // find a step counted before it.
    let endpoint = endpoint();
    let server = serve(PointRobot::new(1.0), &endpoint, false);
    let mut arm = client(&endpoint, ClientHooks::default());
    arm.reset(&ResetRequest { seed: 1 }).unwrap();
    // Just after a step, a command and at once a reset.
    let steps = server.stats().steps;
    wait_until("a step", || server.stats().steps > steps);
    let steps = server.stats().steps;
    let started = std::time::Instant::now();
    arm.apply(&Action::new(vec![0.1, 0.1])).unwrap();
    arm.reset(&ResetRequest { seed: 2 }).unwrap();
    eprintln!(
        "command + reset at 1 Hz: {:?} (a period is 1 s)",
        started.elapsed()
    );
    assert_eq!(server.stats().steps, steps, "the reset waited for a step");
    assert_eq!(server.stats().resets, 2);
    // The robot keeps announcing itself between its slow steps: not lost.
    std::thread::sleep(Duration::from_millis(500));
    assert!(arm.observe().is_ok());
    server.stop();
}
