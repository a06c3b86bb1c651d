//! The operator's side of a robot: e-stops and teleop takeovers, published
//! on the robot's keys. The robot (firmware or `serve-sim`) latches the
//! e-stop itself; the runtime's loop latches its envelope too and executes
//! takeover commands through it.

use crate::inbox::Outbox;
use crate::keys::RobotKeys;
use crate::protocol::{
    self, Body, EStop, Floats, Frame, Header, PROTOCOL_VERSION, Teleop, TeleopPhase,
};
use crate::session::{SessionConfig, SessionError, boot_id, monotonic_now};
use zenoh::Wait;

/// A connected operator console.
pub struct Operator {
    session: zenoh::Session,
    keys: RobotKeys,
    outbox: Outbox,
    boot: u32,
}

impl Operator {
    pub fn connect(session: &SessionConfig, keys: RobotKeys) -> Result<Self, SessionError> {
        Ok(Self {
            session: crate::session::open(session)?,
            keys,
            outbox: Outbox::default(),
            boot: boot_id(),
        })
    }

    fn publish(&mut self, key: &str, body: Body) -> Result<(), SessionError> {
        let frame = Frame {
            header: Header {
                protocol: PROTOCOL_VERSION,
                robot: &self.keys.robot,
                boot: self.boot,
                seq: self.outbox.next_seq(key),
                stamp: monotonic_now(),
            },
            body,
        };
        self.session
            .put(key, protocol::encode_to_vec(&frame))
            .priority(zenoh::qos::Priority::RealTime)
            .express(true)
            .wait()
            .map_err(|e| SessionError::Open(format!("publish on {key}: {e}")))
    }

    /// Sets (`engaged`) or clears the e-stop.
    pub fn estop(&mut self, engaged: bool, reason: &str) -> Result<(), SessionError> {
        let key = self.keys.estop();
        self.publish(&key, Body::EStop(EStop { engaged, reason }))
    }

    /// One takeover message: `Begin` with the first command, `Command` each
    /// tick, `End` to hand back.
    pub fn teleop(&mut self, phase: TeleopPhase, values: &[f32]) -> Result<(), SessionError> {
        let key = self.keys.teleop();
        self.publish(
            &key,
            Body::Teleop(Teleop {
                phase,
                values: Floats::Values(values),
            }),
        )
    }

    /// The session, to subscribe to the robot's state (a scripted
    /// operator watches the arm).
    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }
}
