//! `cerebellum serve-sim`: the simulated arm served over zenoh exactly as
//! robot firmware serves a real one.

use super::{SimRobotArgs, print_json};
use crate::robots::ZenohArgs;
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig, ServerStats};
use cerebellum_firmware_bridge::session;
use cerebellum_sim::SimEnv;
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};

/// Serve a simulated robot over zenoh, as its firmware would.
///
/// At the task's control rate the server applies the newest unexpired
/// command (or holds the measured pose when none is fresh, or while its
/// own e-stop latch is set), publishes the state and camera frames, and
/// resets on request. `cerebellum run|train|eval --robot
/// zenoh:tcp/127.0.0.1:7447/arm0` then drives it through the same code
/// path as a real robot. Wire format and keys: docs/protocol.md. Example:
///
///   cerebellum serve-sim --task reach --robot-id arm0 --listen tcp/127.0.0.1:7447
///
/// With `--lockstep` the simulation steps only when a command arrives:
/// results are then reproducible and the throughput is bounded by the
/// loop, not the clock.
///
/// It serves until `--duration` runs out or Ctrl-C (SIGINT) or SIGTERM
/// arrives, then prints what it served (with `--json`, one JSON object as
/// the last line: steps, `commands_applied`, the commands it refused as
/// `commands_wrong_length` and `commands_out_of_limits`,
/// `max_command_step`, `inbox.accepted` and the refused frames by reason).
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ServeSimArgs {
    #[command(flatten)]
    pub robot: SimRobotArgs,
    /// Endpoint to accept connections on.
    #[arg(long, default_value = "tcp/127.0.0.1:7447")]
    pub listen: String,
    /// Also connect to this endpoint (a zenoh router, another peer).
    #[arg(long)]
    pub connect: Option<String>,
    /// `peer`, as robot firmware: the runtime and operators connect to it
    /// as clients and it forwards between them (an operator's e-stop and
    /// teleop reach the runtime through the robot). `router` also routes
    /// for other peers (a small fleet without a separate router).
    #[arg(long, value_enum, default_value_t = ServeMode::Peer)]
    pub mode: ServeMode,
    /// Step once per received command instead of once per control period.
    #[arg(long)]
    pub lockstep: bool,
    /// Hold position when the newest command is older than this (ms).
    #[arg(long, default_value_t = 100)]
    pub command_timeout_ms: u64,
    /// Stop after this many seconds (default: serve until Ctrl-C or
    /// SIGTERM). Either way the summary is printed as it stops.
    #[arg(long)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    /// Print one JSON object as the last line of stdout when it stops
    /// (`--duration` ran out, Ctrl-C or SIGTERM).
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ServeMode {
    Peer,
    Router,
}

pub fn run(args: ServeSimArgs) -> anyhow::Result<()> {
    // Ctrl-C and SIGTERM stop the server cleanly (polled below), so the
    // summary is printed whichever way serving ends.
    crate::interrupt::install();
    let duration = args
        .duration
        .map(|seconds| super::seconds("--duration", seconds, super::MAX_SECONDS))
        .transpose()?;
    let (config, model) = args.robot.load()?;
    let env = SimEnv::new(config.clone(), model).map_err(anyhow::Error::msg)?;
    let keys =
        RobotKeys::new(&args.zenoh.prefix, &args.zenoh.robot_id).map_err(anyhow::Error::msg)?;
    let mut server_config = ServerConfig::new(keys.clone());
    server_config.lockstep = args.lockstep;
    server_config.command_timeout = Duration::from_millis(args.command_timeout_ms.max(1));
    let mut session_config = args
        .zenoh
        .session(args.connect.as_deref(), Some(&args.listen))?;
    session_config.mode = match args.mode {
        ServeMode::Peer => session::Mode::Peer,
        ServeMode::Router => session::Mode::Router,
    };
    let zenoh = session::open(&session_config)?;
    let server = RobotServer::start(zenoh, env, server_config)?;
    // The line scripts and tests wait for.
    println!(
        "serving `{}` ({}) on {} under {}/{} ({})",
        args.zenoh.robot_id,
        config.task,
        args.listen,
        keys.prefix,
        keys.robot,
        if args.lockstep {
            "lockstep"
        } else {
            "wall clock"
        }
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let deadline = duration.map(|d| Instant::now() + d);
    while !crate::interrupt::requested() && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = server.stop();
    println!(
        "served {} steps: {} commands applied, {} holds ({} expired), {} commands refused ({} wrong length, {} out of limits), largest step between commands {:.4}, {} resets, {} frames refused",
        stats.steps,
        stats.commands_applied,
        stats.holds,
        stats.expired_commands,
        stats.commands_wrong_length + stats.commands_out_of_limits,
        stats.commands_wrong_length,
        stats.commands_out_of_limits,
        stats.max_command_step,
        stats.resets,
        stats.inbox.rejected_total()
    );
    if args.json {
        print_json(&report(&stats, &args.zenoh.robot_id)?);
    }
    Ok(())
}

/// The `--json` summary: every `ServerStats` figure, named as there.
fn report(stats: &ServerStats, robot_id: &str) -> anyhow::Result<serde_json::Value> {
    let mut report = serde_json::to_value(stats)?;
    report["command"] = json!("serve-sim");
    report["robot_id"] = json!(robot_id);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_summary_names_the_robot_side_counters() {
        let mut stats = ServerStats {
            commands_applied: 40,
            commands_wrong_length: 1,
            commands_out_of_limits: 2,
            max_command_step: 0.04,
            ..ServerStats::default()
        };
        stats.inbox.accepted = 45;
        let report = report(&stats, "arm0").unwrap();
        assert_eq!(report["command"], "serve-sim");
        assert_eq!(report["robot_id"], "arm0");
        assert_eq!(report["inbox"]["accepted"], 45);
        assert_eq!(report["commands_applied"], 40);
        assert_eq!(report["commands_wrong_length"], 1);
        assert_eq!(report["commands_out_of_limits"], 2);
        assert_eq!(report["max_command_step"], 0.04);
    }
}
