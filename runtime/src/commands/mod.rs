//! The command-line interface. Every subcommand has `--help` that teaches
//! and `--json`, which prints one JSON object as the last line of stdout.

mod bench;
mod bench_camera;
mod bench_loop;
mod bench_physics;
mod bench_reward;
mod bench_train;
mod bench_vla;
mod bench_zenoh;
mod checkpoint;
mod eval;
mod finetune_vla;
mod record;
mod reward;
mod run;
mod serve_sim;
mod sim;
mod teleop;
mod train;
mod train_online;
mod train_vla;

use crate::learn::config::RobotSource;
use cerebellum_sim::{ArmModel, EnvConfig, TaskKind};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "cerebellum",
    version = env!("CEREBELLUM_VERSION"),
    about = "Learn robot policies on the robot's own board.",
    long_about = "Cerebellum runs a real-time control loop with learned policies against a \
rapier3d simulation or a real robot, and fine-tunes the policy on the same board.\n\n\
Start with `cerebellum train`: PPO teaches the simulated SO-101 arm to reach, in a \
few minutes on two cores. `cerebellum sim --task reach --expert` runs the scripted expert."
)]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Train(train::TrainArgs),
    Eval(eval::EvalArgs),
    Run(run::RunArgs),
    Record(record::RecordArgs),
    Reward(reward::RewardArgs),
    ServeSim(serve_sim::ServeSimArgs),
    Sim(sim::SimArgs),
    Teleop(teleop::TeleopArgs),
    Bench(bench::BenchArgs),
    Checkpoint(checkpoint::CheckpointArgs),
}

impl Command {
    /// The subcommand's name, as `--json` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Train(_) => "train",
            Command::Eval(_) => "eval",
            Command::Run(_) => "run",
            Command::Record(_) => "record",
            Command::Reward(args) => args.name(),
            Command::ServeSim(_) => "serve-sim",
            Command::Sim(_) => "sim",
            Command::Teleop(_) => "teleop",
            Command::Bench(_) => "bench",
            Command::Checkpoint(_) => "checkpoint",
        }
    }

    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Train(args) => train::run(args),
            Command::Eval(args) => eval::run(args),
            Command::Run(args) => run::run(args),
            Command::Record(args) => record::run(args),
            Command::Reward(args) => reward::run(args),
            Command::ServeSim(args) => serve_sim::run(args),
            Command::Sim(args) => sim::run(args),
            Command::Teleop(args) => teleop::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Checkpoint(args) => checkpoint::run(args),
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose
/// text the message above it already quotes is not repeated.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The longest stretch of time any flag takes: a year. Longer is refused,
/// never saturated (`Duration::from_secs_f64` would panic past ~5.8e11 s).
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A flag's number of seconds, checked: finite, positive, at most `max`.
/// The refusal names the flag, the value and the accepted range.
pub fn seconds(flag: &str, value: f64, max: f64) -> anyhow::Result<std::time::Duration> {
    anyhow::ensure!(
        value.is_finite() && value > 0.0 && value <= max,
        "{flag} {value}: give a number of seconds in (0, {max}]"
    );
    Ok(std::time::Duration::from_secs_f64(value))
}

/// An error the command has already reported on stdout (its `--json`
/// summary says `"ok": false`): the binary exits non-zero without a second
/// JSON line.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// What `--json` prints when a command fails: the error as the last line
/// of stdout.
pub fn print_json_error(command: &str, error: &anyhow::Error) {
    print_json(&serde_json::json!({
        "command": command,
        "ok": false,
        "error": error_text(error),
    }));
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn,zenoh::net::routing::hat::peer=error",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Which simulated robot and task to run; shared by every command that
/// builds a simulation.
#[derive(Args, Debug, Clone)]
pub struct SimRobotArgs {
    /// The task: reach (move the gripper to a target), lift (pick up a
    /// cube), reach-color and lift-color (touch the marker, pick up the
    /// cube, of the colour a drawn instruction names; seen through the
    /// camera only), or pendulum (Pendulum-v1 swing-up, analytic, for
    /// comparing learners with other RL libraries).
    #[arg(long, default_value = "reach", value_parser = parse_task)]
    pub task: TaskKind,
    #[command(flatten)]
    pub source: RobotSourceArgs,
}

/// Which arm and environment settings to simulate; the flags every command
/// that builds a simulation shares.
#[derive(Args, Debug, Clone, Default)]
pub struct RobotSourceArgs {
    /// Load this URDF arm instead of the bundled SO-101. Mesh paths may be
    /// relative to the URDF or package:// URIs; STL and OBJ meshes load.
    #[arg(long, value_name = "PATH")]
    pub urdf: Option<PathBuf>,
    /// The end-effector link, needed when the URDF has several leaf links.
    #[arg(long, value_name = "NAME")]
    pub ee_link: Option<String>,
    /// Robot config (actuator gains, end effector, gripper) instead of the
    /// `<urdf stem>.toml` beside the URDF.
    #[arg(long, value_name = "FILE")]
    pub robot_config: Option<PathBuf>,
    /// Environment config (TOML): physics rate and substeps, cube,
    /// domain randomisation, camera.
    #[arg(long, value_name = "FILE")]
    pub env_config: Option<PathBuf>,
}

pub(super) fn parse_task(s: &str) -> Result<TaskKind, String> {
    s.parse()
}

impl RobotSourceArgs {
    /// The flags given replace those in `source`.
    pub fn overlay(&self, source: &mut RobotSource) {
        let pick = |flag: &Option<PathBuf>, kept: &mut Option<PathBuf>| {
            if flag.is_some() {
                kept.clone_from(flag);
            }
        };
        pick(&self.urdf, &mut source.urdf);
        pick(&self.robot_config, &mut source.robot_config);
        pick(&self.env_config, &mut source.env_config);
        if self.ee_link.is_some() {
            source.ee_link.clone_from(&self.ee_link);
        }
    }
}

impl SimRobotArgs {
    /// The environment settings and, for arm tasks, the arm.
    pub fn load(&self) -> anyhow::Result<(EnvConfig, Option<Arc<ArmModel>>)> {
        let mut source = RobotSource::default();
        self.source.overlay(&mut source);
        source.load(self.task)
    }
}

/// Prints `value` as the one JSON line that ends stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string(value).expect("JSON values serialise")
    );
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("rejected by the robot's spec: {0}")]
    struct Quoting(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the spec requires an instruction")]
    struct Inner;

    #[test]
    fn a_cause_the_message_already_quotes_is_said_once() {
        let error = anyhow::Error::new(Quoting(Inner)).context("cannot reset robot `arm0`");
        assert_eq!(
            super::error_text(&error),
            "cannot reset robot `arm0`: rejected by the robot's spec: the spec requires an instruction"
        );
        assert_eq!(
            format!("{error:#}")
                .matches("requires an instruction")
                .count(),
            2,
            "anyhow's own chain repeats it"
        );
    }
}
