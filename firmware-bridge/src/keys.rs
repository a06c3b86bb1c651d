//! Key expressions: every robot's traffic lives under
//! `<prefix>/<robot>/…` (docs/protocol.md).

use crate::protocol::Kind;

/// The prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "cerebellum";

/// The keys of one robot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RobotKeys {
    pub prefix: String,
    pub robot: String,
}

impl RobotKeys {
    pub fn new(prefix: &str, robot: &str) -> Result<Self, String> {
        let valid = |s: &str, what: &str| {
            if s.is_empty()
                || s.split('/').any(str::is_empty)
                || s.contains(['*', '$', '?', '#', ' '])
            {
                Err(format!(
                    "{what} `{s}` is not a plain key expression (no empty chunks, wildcards or spaces)"
                ))
            } else {
                Ok(())
            }
        };
        valid(prefix, "key prefix")?;
        valid(robot, "robot id")?;
        if robot.contains('/') {
            return Err(format!("robot id `{robot}` may not contain `/`"));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            robot: robot.to_owned(),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}/{}/{suffix}", self.prefix, self.robot)
    }

    /// Robot → runtime: `State` every control period.
    pub fn state(&self) -> String {
        self.key("state")
    }

    /// Robot → runtime: one camera's frames.
    pub fn camera(&self, name: &str) -> String {
        self.key(&format!("camera/{name}"))
    }

    /// All the robot's cameras, for a subscriber.
    pub fn cameras(&self) -> String {
        self.key("camera/*")
    }

    /// Runtime → robot: `Command`.
    pub fn command(&self) -> String {
        self.key("command")
    }

    /// Runtime → robot: `Reset`; robot → runtime: `ResetAck`.
    pub fn reset(&self) -> String {
        self.key("reset")
    }

    /// Robot → runtime: `EpisodeEvent`.
    pub fn episode(&self) -> String {
        self.key("episode")
    }

    /// Operator → runtime: `Teleop`.
    pub fn teleop(&self) -> String {
        self.key("teleop")
    }

    /// Operator → robot and runtime: `EStop`.
    pub fn estop(&self) -> String {
        self.key("estop")
    }

    /// Robot → runtime: `Meta` and `Heartbeat`.
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// The message kinds a key may carry.
    pub fn kinds_on(&self, key: &str) -> &'static [Kind] {
        let Some(suffix) = key
            .strip_prefix(&self.prefix)
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.strip_prefix(self.robot.as_str()))
            .and_then(|k| k.strip_prefix('/'))
        else {
            return &[];
        };
        match suffix {
            "state" => &[Kind::State],
            "command" => &[Kind::Command],
            "reset" => &[Kind::Reset, Kind::ResetAck],
            "episode" => &[Kind::Episode],
            "teleop" => &[Kind::Teleop],
            "estop" => &[Kind::EStop],
            "meta" => &[Kind::Meta, Kind::Heartbeat],
            s if s.starts_with("camera/") && s.len() > "camera/".len() => &[Kind::Image],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_prefix_and_robot() {
        let keys = RobotKeys::new("lab/cell1", "arm0").unwrap();
        assert_eq!(keys.state(), "lab/cell1/arm0/state");
        assert_eq!(keys.camera("wrist"), "lab/cell1/arm0/camera/wrist");
        assert_eq!(keys.kinds_on("lab/cell1/arm0/camera/wrist"), &[Kind::Image]);
        assert_eq!(keys.kinds_on("lab/cell1/arm1/state"), &[] as &[Kind]);
        assert!(RobotKeys::new("lab", "arm/0").is_err());
        assert!(RobotKeys::new("lab/*", "arm0").is_err());
        assert!(RobotKeys::new("", "arm0").is_err());
    }
}
