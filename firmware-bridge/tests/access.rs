//! Access control with zenoh's own machinery: user/password authentication
//! on the transport and an ACL on the robot's session. Only the runtime's
//! user may publish commands, resets, e-stops and takeovers; an observer
//! may watch; a stranger without credentials cannot even connect.

use cerebellum_core::{
    Action, ActionSpec, FieldSpec, Observation, ObservationSpec, ResetRequest, Robot, RobotError,
    RobotSpec, StepOutcome, Unit,
};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::operator::Operator;
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, Mode, SessionConfig, free_local_port};
use std::time::Duration;

/// One joint that goes where it is told.
struct OneJoint {
    spec: RobotSpec,
    q: f32,
}

impl OneJoint {
    fn new() -> Self {
        let field = || FieldSpec::new("joint_position", Unit::Radian, &["a"], &[(-1.0, 1.0)]);
        Self {
            spec: RobotSpec {
                name: "one".into(),
                control_rate_hz: 50.0,
                observation: ObservationSpec {
                    fields: vec![field()],
                    cameras: vec![],
                    instruction: false,
                },
                action: ActionSpec {
                    fields: vec![field()],
                },
            },
            q: 0.0,
        }
    }
}

impl Robot for OneJoint {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }
    fn reset(&mut self, _: &ResetRequest) -> Result<Observation, RobotError> {
        self.q = 0.0;
        self.observe()
    }
    fn observe(&mut self) -> Result<Observation, RobotError> {
        Ok(Observation {
            state: vec![self.q],
            images: vec![],
            instruction: None,
            timestamp: 0.0,
        })
    }
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.q = command.values[0];
        Ok(StepOutcome::default())
    }
}

/// The robot's zenoh configuration: a password dictionary and an ACL that
/// denies by default, lets every known user watch, and lets only the
/// `runtime` user put on the robot's input keys.
fn robot_config(dir: &std::path::Path) -> std::path::PathBuf {
    let dictionary = dir.join("users.txt");
    std::fs::write(
        &dictionary,
        "runtime:runtime-secret\nobserver:observer-secret\n",
    )
    .unwrap();
    let config = format!(
        r#"{{
  transport: {{ auth: {{ usrpwd: {{ dictionary_file: "{}" }} }} }},
  access_control: {{
    enabled: true,
    default_permission: "deny",
    rules: [
      {{ id: "watch", permission: "allow", flows: ["egress", "ingress"],
         messages: ["declare_subscriber", "declare_queryable", "query", "reply",
                    "liveliness_token", "declare_liveliness_subscriber", "liveliness_query"],
         key_exprs: ["acl/**"] }},
      {{ id: "receive", permission: "allow", flows: ["egress"], messages: ["put"],
         key_exprs: ["acl/**"] }},
      {{ id: "command", permission: "allow", flows: ["ingress"], messages: ["put"],
         key_exprs: ["acl/arm0/command", "acl/arm0/reset", "acl/arm0/estop", "acl/arm0/teleop"] }},
    ],
    subjects: [
      {{ id: "known", usernames: ["runtime", "observer"] }},
      {{ id: "operators", usernames: ["runtime"] }},
    ],
    policies: [
      {{ rules: ["watch", "receive"], subjects: ["known"] }},
      {{ rules: ["command"], subjects: ["operators"] }},
    ],
  }},
}}"#,
        dictionary.display()
    );
    let path = dir.join("robot.json5");
    std::fs::write(&path, config).unwrap();
    path
}

fn as_user(endpoint: &str, user: Option<(&str, &str)>) -> SessionConfig {
    SessionConfig {
        connect: vec![endpoint.to_owned()],
        credentials: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        connect_timeout: Some(Duration::from_secs(2)),
        ..SessionConfig::default()
    }
}

#[test]
fn only_the_configured_user_may_command_or_stop_the_robot() {
    let dir = std::env::temp_dir().join(format!("cerebellum-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = format!("tcp/127.0.0.1:{}", free_local_port());
    let zenoh = session::open(&SessionConfig {
        mode: Mode::Peer,
        listen: vec![endpoint.clone()],
        config_file: Some(robot_config(&dir)),
        ..SessionConfig::default()
    })
    .unwrap();
    let keys = RobotKeys::new("acl", "arm0").unwrap();
    let mut config = ServerConfig::new(keys.clone());
    config.lockstep = true;
    let server = RobotServer::start(zenoh, OneJoint::new(), config).unwrap();

    // The runtime's user drives the robot.
    let client = ClientConfig::new(
        as_user(&endpoint, Some(("runtime", "runtime-secret"))),
        keys.clone(),
    );
    let mut arm = ZenohRobot::connect(client, ClientHooks::default()).unwrap();
    arm.reset(&ResetRequest { seed: 0 }).unwrap();
    arm.apply(&Action::new(vec![0.5])).unwrap();
    assert_eq!(arm.observe().unwrap().state, vec![0.5]);

    // The observer may watch but its e-stop and commands never arrive.
    let observer = as_user(&endpoint, Some(("observer", "observer-secret")));
    let mut watcher = Operator::connect(&observer, keys.clone()).unwrap();
    watcher.estop(true, "not allowed").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!server.stats().estopped, "the observer stopped the robot");
    let watched = ZenohRobot::connect(
        ClientConfig::new(observer, keys.clone()),
        ClientHooks::default(),
    );
    assert!(watched.is_ok(), "the observer cannot see the robot's Meta");

    // No credentials, or the wrong password: no session at all.
    assert!(Operator::connect(&as_user(&endpoint, None), keys.clone()).is_err());
    assert!(
        Operator::connect(
            &as_user(&endpoint, Some(("runtime", "guess"))),
            keys.clone()
        )
        .is_err()
    );

    // The runtime's user may stop it.
    let mut operator = Operator::connect(
        &as_user(&endpoint, Some(("runtime", "runtime-secret"))),
        keys,
    )
    .unwrap();
    operator.estop(true, "allowed").unwrap();
    let started = std::time::Instant::now();
    while !server.stats().estopped {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the operator's stop never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(server.stop().inbox.rejected_total() == 0);
}
