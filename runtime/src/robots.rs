//! The one switch between simulation and reality: `--robot sim` drives the
//! rapier arm in process, `--robot zenoh:tcp/HOST:PORT[/ROBOT]` a robot
//! (or `cerebellum serve-sim`) over zenoh. Nothing else in a command
//! changes; the loop sees a `Robot` either way.

use crate::control_loop::{ControlLoop, EStopButton, TeleopInput};
use crate::learn::trainer::make_envs;
use cerebellum_core::{Action, Clock, Robot, RobotSpec};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::{DEFAULT_PREFIX, RobotKeys};
use cerebellum_firmware_bridge::session::{RobotAddress, SessionConfig};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the robot is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RobotChoice {
    Sim,
    Zenoh(RobotAddress),
}

impl std::str::FromStr for RobotChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(Self::Sim),
            s if s.starts_with("zenoh:") => Ok(Self::Zenoh(s.parse()?)),
            other => Err(format!(
                "unknown robot `{other}`: use `sim` or `zenoh:tcp/HOST:PORT[/ROBOT]`"
            )),
        }
    }
}

impl RobotChoice {
    /// The id transitions are stamped with: the zenoh robot's, or the
    /// spec's name in simulation.
    pub fn robot_id(&self, zenoh: &ZenohArgs, spec: &RobotSpec) -> String {
        match self {
            RobotChoice::Sim => spec.name.clone(),
            RobotChoice::Zenoh(address) => address
                .robot
                .clone()
                .unwrap_or_else(|| zenoh.robot_id.clone()),
        }
    }
}

impl std::fmt::Display for RobotChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RobotChoice::Sim => f.write_str("sim"),
            RobotChoice::Zenoh(a) => match &a.robot {
                Some(robot) => write!(f, "zenoh:{}/{robot}", a.endpoint),
                None => write!(f, "zenoh:{}", a.endpoint),
            },
        }
    }
}

/// How to reach robots over zenoh (all commands that take `--robot`).
#[derive(Args, Clone, Debug)]
pub struct ZenohArgs {
    /// Key prefix the robots publish under.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Robot id when the address does not name one.
    #[arg(long, default_value = "arm0")]
    pub robot_id: String,
    /// Seconds to wait for the robot's Meta when connecting.
    #[arg(long, default_value_t = 10.0)]
    pub meta_timeout: f64,
    /// A zenoh configuration file (JSON5): TLS, access control,
    /// user/password dictionaries (docs/protocol.md, "Access").
    #[arg(long, value_name = "FILE")]
    pub zenoh_config: Option<PathBuf>,
    /// User name for zenoh's user/password authentication; the password
    /// comes from the CEREBELLUM_ZENOH_PASSWORD environment variable.
    #[arg(long)]
    pub zenoh_user: Option<String>,
}

impl ZenohArgs {
    pub fn session(&self, connect: Option<&str>, listen: Option<&str>) -> SessionConfig {
        let credentials = self.zenoh_user.as_ref().map(|user| {
            (
                user.clone(),
                std::env::var("CEREBELLUM_ZENOH_PASSWORD").unwrap_or_default(),
            )
        });
        SessionConfig {
            connect: connect.into_iter().map(str::to_owned).collect(),
            listen: listen.into_iter().map(str::to_owned).collect(),
            credentials,
            config_file: self.zenoh_config.clone(),
            ..SessionConfig::default()
        }
    }

    /// Connects to the robot at `address`, which must announce `spec`.
    pub fn connect(
        &self,
        address: &RobotAddress,
        spec: &RobotSpec,
        hooks: ClientHooks,
    ) -> anyhow::Result<ZenohRobot> {
        let robot = address.robot.as_deref().unwrap_or(&self.robot_id);
        let keys = RobotKeys::new(&self.prefix, robot).map_err(anyhow::Error::msg)?;
        let mut config = ClientConfig::new(self.session(Some(&address.endpoint), None), keys);
        anyhow::ensure!(
            self.meta_timeout.is_finite() && self.meta_timeout > 0.0,
            "--meta-timeout must be a positive number of seconds"
        );
        config.meta_timeout = Duration::from_secs_f64(self.meta_timeout);
        config.expected_spec = Some(spec.clone());
        Ok(ZenohRobot::connect(config, hooks)?)
    }
}

/// The operator's inputs to a loop: its e-stop button and, for robots
/// over zenoh, teleop takeovers.
#[derive(Clone, Default)]
pub struct OperatorInputs {
    pub estop: EStopButton,
    pub teleop: Option<TeleopInput>,
}

impl OperatorInputs {
    pub fn attach<R: Robot, C: Clock>(
        &self,
        control: ControlLoop<R, C, cerebellum_policies::GaussianMlpPolicy>,
    ) -> ControlLoop<R, C, cerebellum_policies::GaussianMlpPolicy> {
        let control = control.with_estop_button(self.estop.clone());
        match &self.teleop {
            Some(teleop) => control.with_teleop(teleop.clone()),
            None => control,
        }
    }
}

/// The robot `--robot` names: the simulator built from the run's config,
/// or a robot over zenoh that must announce `expected` (the contract's
/// spec); its e-stop and teleop messages reach the loop through
/// `operator` (a teleop input is added for zenoh robots).
pub fn connect_robot(
    choice: &RobotChoice,
    zenoh: &ZenohArgs,
    env_config: &cerebellum_sim::EnvConfig,
    model: Option<Arc<cerebellum_sim::ArmModel>>,
    expected: &cerebellum_core::RobotSpec,
    operator: &mut OperatorInputs,
) -> anyhow::Result<Box<dyn Robot + Send>> {
    Ok(match choice {
        RobotChoice::Sim => Box::new(make_envs(env_config, model, 1)?.remove(0)),
        RobotChoice::Zenoh(address) => {
            let button = operator.estop.clone();
            let teleop = operator
                .teleop
                .get_or_insert_with(TeleopInput::default)
                .clone();
            let hooks = cerebellum_firmware_bridge::client::ClientHooks {
                on_estop: Some(Box::new(move |engaged, reason| {
                    if engaged {
                        tracing::warn!("e-stop from the wire: {reason}");
                        button.press();
                    } else {
                        button.clear();
                    }
                })),
                on_teleop: Some(Box::new(move |phase, values| {
                    use cerebellum_firmware_bridge::protocol::TeleopPhase;
                    let command = (!values.is_empty()).then(|| Action::new(values.to_vec()));
                    match phase {
                        TeleopPhase::Begin => teleop.begin(command),
                        TeleopPhase::Command => {
                            if let Some(command) = command {
                                teleop.command(command)
                            }
                        }
                        TeleopPhase::End => teleop.end(),
                    }
                })),
            };
            Box::new(zenoh.connect(address, expected, hooks)?)
        }
    })
}
