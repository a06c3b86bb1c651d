//! Opening zenoh sessions the way robots need them: explicit endpoints, no
//! multicast or gossip scouting (a robot cell knows its peers), optional
//! user/password authentication, and the address syntax of `--robot`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

/// How a session joins the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Talks to its direct peers only; what robots (servers) use.
    Peer,
    /// Routes for others (a fleet through one router).
    Router,
    /// Reaches everything through the session it connects to, which
    /// forwards for it (a robot's peer session or a router): what the
    /// runtime and operators use, so that an operator's e-stop and teleop
    /// reach the runtime through the robot.
    #[default]
    Client,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Peer => "peer",
            Mode::Router => "router",
            Mode::Client => "client",
        }
    }
}

/// Everything needed to open one session.
#[derive(Clone, Debug, Default)]
pub struct SessionConfig {
    pub mode: Mode,
    /// Endpoints to accept connections on, e.g. `tcp/127.0.0.1:7447`.
    pub listen: Vec<String>,
    /// Endpoints to connect to.
    pub connect: Vec<String>,
    /// User name and password, checked by the other side's dictionary
    /// (zenoh's `transport/auth/usrpwd`).
    pub credentials: Option<(String, String)>,
    /// How long a client keeps trying to reach its endpoints when opening
    /// (default: one attempt).
    pub connect_timeout: Option<std::time::Duration>,
    /// A zenoh configuration file (JSON5) applied first: access control
    /// rules, password dictionaries, TLS. The fields above override it.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("zenoh configuration: {0}")]
    Config(String),
    #[error("cannot open a zenoh session: {0}")]
    Open(String),
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialise")
}

/// The zenoh configuration a `SessionConfig` stands for.
pub fn zenoh_config(config: &SessionConfig) -> Result<zenoh::Config, SessionError> {
    let mut zenoh = match &config.config_file {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| SessionError::Config(format!("{}: {e}", path.display())))?,
        None => zenoh::Config::default(),
    };
    let mut set = |key: &str, value: String| {
        zenoh
            .insert_json5(key, &value)
            .map_err(|e| SessionError::Config(format!("{key} = {value}: {e}")))
    };
    set("mode", format!("\"{}\"", config.mode.name()))?;
    set("scouting/multicast/enabled", "false".into())?;
    set("scouting/gossip/enabled", "false".into())?;
    if !config.listen.is_empty() {
        set("listen/endpoints", json_list(&config.listen))?;
    }
    if !config.connect.is_empty() {
        set("connect/endpoints", json_list(&config.connect))?;
        // A robot that restarts is found again within a fraction of a
        // second, not zenoh's default of seconds.
        if let Some(timeout) = config.connect_timeout {
            set("connect/timeout_ms", timeout.as_millis().to_string())?;
        }
        set(
            "connect/retry",
            "{period_init_ms: 100, period_max_ms: 500, period_increase_factor: 2}".into(),
        )?;
    }
    if let Some((user, password)) = &config.credentials {
        set(
            "transport/auth/usrpwd/user",
            serde_json::to_string(user).unwrap(),
        )?;
        set(
            "transport/auth/usrpwd/password",
            serde_json::to_string(password).unwrap(),
        )?;
    }
    Ok(zenoh)
}

pub fn open(config: &SessionConfig) -> Result<zenoh::Session, SessionError> {
    use zenoh::Wait;
    zenoh::open(zenoh_config(config)?)
        .wait()
        .map_err(|e| SessionError::Open(e.to_string()))
}

/// A robot reached over zenoh, as written after `--robot zenoh:`:
/// `tcp/127.0.0.1:7447` or `tcp/127.0.0.1:7447/arm0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RobotAddress {
    pub endpoint: String,
    pub robot: Option<String>,
}

impl std::str::FromStr for RobotAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a zenoh robot address; expected PROTO/HOST:PORT[/ROBOT], \
                 e.g. tcp/127.0.0.1:7447/arm0"
            )
        };
        let s = s.strip_prefix("zenoh:").unwrap_or(s);
        let (protocol, rest) = s.split_once('/').ok_or_else(bad)?;
        let (address, robot) = match rest.split_once('/') {
            Some((address, robot)) => (address, Some(robot.to_owned())),
            None => (rest, None),
        };
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if protocol.is_empty() || !port_ok || robot.as_deref() == Some("") {
            return Err(bad());
        }
        Ok(Self {
            endpoint: format!("{protocol}/{address}"),
            robot,
        })
    }
}

/// Seconds on this process's monotonic clock (the robot clock of a server,
/// the local clock of a client).
pub fn monotonic_now() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A number that differs between senders and between their starts (the
/// `boot` field of every header): each server, client and operator draws
/// its own, so a restarted one is told apart from its predecessor.
pub fn boot_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static DRAWN: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    let n = DRAWN.fetch_add(1, Ordering::Relaxed);
    nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9E37_79B9)
}

/// A free TCP port on loopback, for tests and examples.
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_addresses_parse() {
        let a: RobotAddress = "zenoh:tcp/127.0.0.1:7447/arm0".parse().unwrap();
        assert_eq!(a.endpoint, "tcp/127.0.0.1:7447");
        assert_eq!(a.robot.as_deref(), Some("arm0"));
        let b: RobotAddress = "tcp/[::1]:7447".parse().unwrap();
        assert_eq!(b.endpoint, "tcp/[::1]:7447");
        assert_eq!(b.robot, None);
        for bad in [
            "tcp",
            "tcp/127.0.0.1",
            "tcp/127.0.0.1:x",
            "tcp/127.0.0.1:7447/",
            "/a:1",
        ] {
            assert!(bad.parse::<RobotAddress>().is_err(), "{bad}");
        }
    }
}
