//! The one switch between simulation and reality: `--robot sim` drives the
//! rapier arm in process, `--robot zenoh:tcp/HOST:PORT[/ROBOT]` a robot
//! (or `cerebellum serve-sim`) over zenoh. Nothing else in a command
//! changes; the loop sees a `Robot` either way.
//!
//! A connected robot ([`ConnectedRobot`]) has no `apply` of its own: the
//! only thing it can become is a [`ControlLoop`], so every command a
//! `--robot` receives, whichever subcommand sends it, passes the loop's
//! safety envelope at the robot's rate. A robot that steps on its own clock
//! is driven only under a wall clock at its rate; simulated time (as fast
//! as the CPU allows) is for robots that step only when commanded (the
//! in-process simulator, `serve-sim --lockstep`).

use crate::control_loop::{
    CheckedWeights, ControlLoop, EStopButton, Inference, LoopConfig, TeleopInput,
};
use crate::envelope::{ArmKinematics, EnvelopeConfig, ForwardKinematics, SafetyEnvelope};
use crate::learn::trainer::make_envs;
use cerebellum_core::{
    Action, Clock, Observation, Policy, ResetRequest, Robot, RobotError, RobotSpec, SimClock,
    StepOutcome, WallClock,
};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientHooks, ClientStats, ZenohRobot};
use cerebellum_firmware_bridge::keys::{DEFAULT_PREFIX, RobotKeys};
use cerebellum_firmware_bridge::session::{RobotAddress, SessionConfig};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable that holds the zenoh password.
pub const PASSWORD_VARIABLE: &str = "CEREBELLUM_ZENOH_PASSWORD";

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
    /// The session settings; with `--zenoh-user`, the password must be in
    /// CEREBELLUM_ZENOH_PASSWORD (a missing or empty variable is an error,
    /// never an empty password).
    pub fn session(
        &self,
        connect: Option<&str>,
        listen: Option<&str>,
    ) -> anyhow::Result<SessionConfig> {
        let credentials = match &self.zenoh_user {
            None => None,
            Some(user) => {
                let password = std::env::var(PASSWORD_VARIABLE).map_err(|_| {
                    anyhow::anyhow!(
                        "--zenoh-user {user}: the password must be in the {PASSWORD_VARIABLE} environment variable, which is not set"
                    )
                })?;
                anyhow::ensure!(
                    !password.is_empty(),
                    "--zenoh-user {user}: {PASSWORD_VARIABLE} is empty; an empty password is refused"
                );
                Some((user.clone(), password))
            }
        };
        Ok(SessionConfig {
            connect: connect.into_iter().map(str::to_owned).collect(),
            listen: listen.into_iter().map(str::to_owned).collect(),
            credentials,
            config_file: self.zenoh_config.clone(),
            ..SessionConfig::default()
        })
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
        let mut config = ClientConfig::new(self.session(Some(&address.endpoint), None)?, keys);
        // An hour: longer is a typo, and a client waits that long at most.
        config.meta_timeout =
            crate::commands::seconds("--meta-timeout", self.meta_timeout, 3600.0)?;
        config.expected_spec = Some(spec.clone());
        ZenohRobot::connect(config, hooks).map_err(|e| self.explain(e))
    }

    /// Says what a failed connection most likely means: zenoh refuses a
    /// wrong user or password at connect with the same words as an
    /// endpoint where nothing listens, and an authenticated user the
    /// robot's ACL does not allow to read its keys sees no Meta.
    fn explain(&self, error: cerebellum_firmware_bridge::client::ClientError) -> anyhow::Error {
        use cerebellum_firmware_bridge::client::ClientError;
        match (&error, &self.zenoh_user) {
            (ClientError::NoMeta { reached: false, .. }, Some(user)) => anyhow::anyhow!(
                "{error}. As zenoh user `{user}`: the robot refused the user or password, or nothing listens there yet (retry); check --zenoh-user and {PASSWORD_VARIABLE}"
            ),
            (ClientError::NoMeta { reached: true, .. }, Some(user)) => anyhow::anyhow!(
                "{error}. As zenoh user `{user}`: the robot's ACL must allow `{user}` to subscribe to its keys (<prefix>/<robot>/**)"
            ),
            (ClientError::NoMeta { reached: false, .. }, None) => anyhow::anyhow!(
                "{error}. If the robot requires authentication, pass --zenoh-user with {PASSWORD_VARIABLE}"
            ),
            _ => error.into(),
        }
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
    pub fn attach<
        R: Robot,
        C: Clock,
        P: Policy + CheckedWeights + Clone + Send + Sync + 'static,
    >(
        &self,
        control: ControlLoop<R, C, P>,
    ) -> ControlLoop<R, C, P> {
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
) -> anyhow::Result<ConnectedRobot> {
    Ok(match choice {
        RobotChoice::Sim => ConnectedRobot {
            robot: Box::new(make_envs(env_config, model, 1)?.remove(0)),
            steps: Stepping::Lockstep,
            link: None,
        },
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
            let robot = zenoh.connect(address, expected, hooks)?;
            let steps = if robot.is_lockstep() {
                Stepping::Lockstep
            } else {
                Stepping::OwnClock
            };
            let link = LinkStats::default();
            ConnectedRobot {
                robot: Box::new(Remote {
                    robot,
                    link: link.clone(),
                }),
                steps,
                link: Some(link),
            }
        }
    })
}

/// How a robot advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stepping {
    /// One control period per command, whenever it comes (the in-process
    /// simulator, `serve-sim --lockstep`): any clock may drive it.
    Lockstep,
    /// On its own clock (real firmware, `serve-sim` without `--lockstep`):
    /// only a wall clock at the robot's rate may drive it.
    OwnClock,
}

/// Which clock a loop runs under (`--clock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Hold the robot's control rate in wall time (deployment).
    Wall,
    /// Tick as fast as the robot answers, every result reproducible (a
    /// robot in lockstep only).
    Sim,
}

impl std::fmt::Display for ClockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockMode::Wall => "wall",
            ClockMode::Sim => "sim",
        })
    }
}

/// The loop's clock, chosen at run time.
pub enum LoopClock {
    Wall(WallClock),
    Sim(SimClock),
}

impl Clock for LoopClock {
    fn now(&self) -> Duration {
        match self {
            LoopClock::Wall(c) => c.now(),
            LoopClock::Sim(c) => c.now(),
        }
    }

    fn wait_for_next_tick(&mut self) -> Duration {
        match self {
            LoopClock::Wall(c) => c.wait_for_next_tick(),
            LoopClock::Sim(c) => c.wait_for_next_tick(),
        }
    }

    fn period(&self) -> Duration {
        match self {
            LoopClock::Wall(c) => c.period(),
            LoopClock::Sim(c) => c.period(),
        }
    }
}

/// The control loop every command to a `--robot` goes through.
pub type RobotLoop<P> = ControlLoop<Box<dyn Robot + Send>, LoopClock, P>;

/// What a robot over zenoh counted (refused frames by reason, commands
/// sent, losses and recoveries), as of its last reset or its loop's end.
#[derive(Clone, Default)]
pub struct LinkStats(Arc<Mutex<Option<ClientStats>>>);

impl LinkStats {
    pub fn get(&self) -> Option<ClientStats> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, stats: ClientStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }
}

/// A robot over zenoh that leaves its link figures behind.
struct Remote {
    robot: ZenohRobot,
    link: LinkStats,
}

impl Robot for Remote {
    fn spec(&self) -> &RobotSpec {
        self.robot.spec()
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        let result = self.robot.reset(request);
        self.link.set(self.robot.stats());
        result
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.robot.observe()
    }

    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.robot.apply(command)
    }

    fn set_policy_version(&mut self, version: u64) {
        self.robot.set_policy_version(version)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.link.set(self.robot.stats());
    }
}

/// A robot `--robot` named, connected, that only a control loop can
/// command (see the module's doc).
pub struct ConnectedRobot {
    robot: Box<dyn Robot + Send>,
    steps: Stepping,
    link: Option<LinkStats>,
}

impl ConnectedRobot {
    pub fn spec(&self) -> &RobotSpec {
        self.robot.spec()
    }

    pub fn stepping(&self) -> Stepping {
        self.steps
    }

    /// The clock a command uses when the user did not choose: simulated
    /// time for a robot in lockstep (as fast and reproducible as
    /// possible), the wall clock otherwise.
    pub fn natural_clock(&self) -> ClockMode {
        match self.steps {
            Stepping::Lockstep => ClockMode::Sim,
            Stepping::OwnClock => ClockMode::Wall,
        }
    }

    /// The link's figures (robots over zenoh), readable after the loop
    /// built from this robot has ended.
    pub fn link_stats(&self) -> Option<LinkStats> {
        self.link.clone()
    }

    /// The control loop that drives this robot: its clock at the robot's
    /// period, an inference deadline in wall time (none in simulated time,
    /// where every answer is waited for). Simulated time is refused for a
    /// robot that steps on its own clock: the loop would command it as
    /// fast as the CPU allows.
    pub fn into_loop<P: Policy + CheckedWeights + Clone + Send + Sync + 'static>(
        self,
        clock: ClockMode,
        inference: Inference<P>,
        envelope: SafetyEnvelope,
        mut config: LoopConfig,
    ) -> anyhow::Result<RobotLoop<P>> {
        let period = self.spec().control_period();
        anyhow::ensure!(
            !(clock == ClockMode::Sim && self.steps == Stepping::OwnClock),
            "--clock sim: robot `{}` steps on its own clock (its Meta says it is not in lockstep), so only the wall clock at its {} Hz may drive it; use --clock wall, or serve the simulator with `serve-sim --lockstep`",
            self.spec().name,
            self.spec().control_rate_hz
        );
        let clock = match clock {
            ClockMode::Wall => {
                config.inference_deadline = Some(LoopConfig::deadline_for(period));
                LoopClock::Wall(WallClock::new(period, Duration::from_micros(200)))
            }
            ClockMode::Sim => {
                config.inference_deadline = None;
                LoopClock::Sim(SimClock::new(period))
            }
        };
        Ok(ControlLoop::new(
            self.robot, clock, inference, envelope, config,
        ))
    }
}

/// The safety envelope's limits beyond the spec's (`--envelope FILE`), for
/// every command that drives a robot.
#[derive(Args, Clone, Debug, Default)]
pub struct EnvelopeArgs {
    /// Safety envelope limits (TOML, the keys of `EnvelopeConfig`: joint
    /// speeds, per-tick steps, an end-effector box, the stale-observation
    /// watchdog, a safe pose; docs/safety.md). Without it only the robot
    /// spec's limits and the watchdog apply.
    #[arg(long, value_name = "FILE")]
    pub envelope: Option<PathBuf>,
}

impl EnvelopeArgs {
    /// The envelope for `spec`, with the arm's forward kinematics for the
    /// workspace box when the robot is a simulated arm model.
    pub fn build(
        &self,
        spec: &RobotSpec,
        model: Option<Arc<cerebellum_sim::ArmModel>>,
    ) -> anyhow::Result<SafetyEnvelope> {
        let config = match &self.envelope {
            Some(path) => read_envelope(path)?,
            None => EnvelopeConfig::default(),
        };
        let fk = model.map(|m| Arc::new(ArmKinematics(m)) as Arc<dyn ForwardKinematics>);
        SafetyEnvelope::new(spec, config, fk).map_err(|e| anyhow::anyhow!("envelope: {e}"))
    }
}

fn read_envelope(path: &Path) -> anyhow::Result<EnvelopeConfig> {
    let text = crate::recorder::read_text_file(path)?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
