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
    self, Body, Command, Floats, Frame, Header, PROTOCOL_VERSION,
};
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, SessionConfig, free_local_port};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zenoh::Wait;

/// Two joints that move to their targets at once; records every command.
#[derive(Clone)]
struct PointRobot {
    spec: RobotSpec,
    joints: Arc<Mutex<Vec<f32>>>,
    applied: Arc<Mutex<Vec<Vec<f32>>>>,
    time: f64,
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
        Ok(StepOutcome::default())
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
            assert!(e.to_string().contains("serve-sim"), "{e}")
        }
        other => panic!("expected NoMeta, got {:?}", other.map(|_| ())),
    }
}
