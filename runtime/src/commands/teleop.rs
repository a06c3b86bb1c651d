//! `cerebellum teleop`: an operator's console over zenoh. `--scripted`
//! plays an operator for tests and demos: it watches the arm and takes
//! over with the simulator's scripted expert when the arm strays.

use super::{SimRobotArgs, print_json};
use crate::episodes::make_controller;
use crate::robots::{RobotChoice, ZenohArgs};
use cerebellum_core::{Observation, Robot};
use cerebellum_firmware_bridge::inbox::Inbox;
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::operator::Operator;
use cerebellum_firmware_bridge::protocol::{Body, Kind, TeleopPhase};
use cerebellum_firmware_bridge::session::monotonic_now;
use cerebellum_sim::SimEnv;
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};
use zenoh::Wait;

/// Take over a robot over zenoh as a teleoperator.
///
/// With `--scripted` a scripted operator watches the arm's state and takes
/// over when it strays: when the end effector has not come 5 mm closer to
/// the target in `--stray-ticks` ticks. It then commands the arm with the
/// simulator's scripted expert until the end effector is within 1.5 cm of
/// the target (or `--max-takeover-ticks` pass) and hands back. The loop
/// driving the robot executes the operator's commands through its safety
/// envelope, flags those transitions as interventions (demonstrations) and
/// records −1 in the `intervention` reward at each takeover. Example, next
/// to `cerebellum run --robot zenoh:tcp/127.0.0.1:7447/arm0 …`:
///
///   cerebellum teleop --scripted --robot zenoh:tcp/127.0.0.1:7447/arm0 --duration 30
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TeleopArgs {
    /// Play the scripted operator (the only operator built in; a leader
    /// arm or joystick publishes the same Teleop messages, docs/protocol.md).
    #[arg(long)]
    pub scripted: bool,
    /// The robot: `zenoh:tcp/HOST:PORT[/ROBOT]`.
    #[arg(long)]
    pub robot: RobotChoice,
    /// The task the robot runs (for the scripted expert).
    #[command(flatten)]
    pub sim: SimRobotArgs,
    /// Ticks without 5 mm of progress before taking over.
    #[arg(long, default_value_t = 25)]
    pub stray_ticks: u32,
    #[arg(long, default_value_t = 150)]
    pub max_takeover_ticks: u32,
    /// Seconds to watch.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    #[arg(long)]
    pub json: bool,
}

const PROGRESS: f32 = 0.005;
const HAND_BACK_DISTANCE: f32 = 0.015;

pub fn run(args: TeleopArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scripted,
        "only --scripted is built in: a leader arm or joystick publishes Teleop messages itself (docs/protocol.md)"
    );
    let RobotChoice::Zenoh(address) = &args.robot else {
        anyhow::bail!("--robot must be a robot over zenoh (zenoh:tcp/HOST:PORT[/ROBOT])");
    };
    super::seconds("--duration", args.duration, super::MAX_SECONDS)?;
    let (config, model) = args.sim.load()?;
    let env = SimEnv::new(config, model).map_err(anyhow::Error::msg)?;
    let spec = env.spec().clone();
    for field in ["ee_position", "target"] {
        anyhow::ensure!(
            spec.observation.fields.iter().any(|f| f.name == field),
            "the scripted operator watches `ee_position` and `target`; task {} has no `{field}`",
            args.sim.task
        );
    }
    let mut expert = make_controller(true, &env).map_err(anyhow::Error::msg)?;
    let robot = address.robot.as_deref().unwrap_or(&args.zenoh.robot_id);
    let keys = RobotKeys::new(&args.zenoh.prefix, robot).map_err(anyhow::Error::msg)?;
    let mut operator = Operator::connect(
        &args.zenoh.session(Some(&address.endpoint), None)?,
        keys.clone(),
    )?;
    let (states, inbox_rx) = crossbeam_channel::unbounded::<(u32, Vec<f32>)>();
    let inbox = std::sync::Mutex::new(Inbox::new(keys.clone(), None, &[Kind::State]));
    let _subscriber = operator
        .session()
        .declare_subscriber(keys.state())
        .callback(move |sample| {
            let bytes = sample.payload().to_bytes();
            let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(frame) = inbox.accept(sample.key_expr().as_str(), &bytes, monotonic_now())
                && let Body::State(state) = frame.body
            {
                let _ = states.send((state.episode, state.values.iter().collect()));
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("subscribe to {}: {e}", keys.state()))?;
    println!("watching `{robot}` on {}", address.endpoint);

    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let (mut takeovers, mut commands, mut states_seen) = (0u64, 0u64, 0u64);
    let mut episode = None;
    let mut best = f32::INFINITY;
    let mut since_progress = 0u32;
    let mut takeover_ticks: Option<u32> = None;
    while Instant::now() < deadline {
        let Ok((state_episode, values)) = inbox_rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        states_seen += 1;
        if episode != Some(state_episode) {
            if takeover_ticks.take().is_some() {
                operator.teleop(TeleopPhase::End, &[])?;
            }
            episode = Some(state_episode);
            expert.begin_episode(u64::from(state_episode));
            best = f32::INFINITY;
            since_progress = 0;
        }
        let field = |name| spec.observation.field(&values, name).unwrap_or(&[]);
        let distance = field("ee_position")
            .iter()
            .zip(field("target"))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let observation = Observation {
            state: values.clone(),
            images: Vec::new(),
            instruction: None,
            timestamp: 0.0,
        };
        match takeover_ticks.as_mut() {
            None => {
                if distance < best - PROGRESS {
                    best = distance;
                    since_progress = 0;
                } else {
                    since_progress += 1;
                }
                if since_progress >= args.stray_ticks && distance > HAND_BACK_DISTANCE {
                    expert.begin_episode(u64::from(state_episode));
                    let action = expert.act(&observation, &spec);
                    operator.teleop(TeleopPhase::Begin, &action.values)?;
                    takeovers += 1;
                    commands += 1;
                    takeover_ticks = Some(0);
                }
            }
            Some(ticks) => {
                *ticks += 1;
                if distance < HAND_BACK_DISTANCE || *ticks >= args.max_takeover_ticks {
                    operator.teleop(TeleopPhase::End, &[])?;
                    takeover_ticks = None;
                    best = distance;
                    since_progress = 0;
                } else {
                    let action = expert.act(&observation, &spec);
                    operator.teleop(TeleopPhase::Command, &action.values)?;
                    commands += 1;
                }
            }
        }
    }
    if takeover_ticks.is_some() {
        operator.teleop(TeleopPhase::End, &[])?;
    }
    println!("watched {states_seen} states: {takeovers} takeovers, {commands} operator commands");
    if args.json {
        print_json(&json!({
            "command": "teleop",
            "robot": args.robot.to_string(),
            "states": states_seen,
            "takeovers": takeovers,
            "operator_commands": commands,
        }));
    }
    Ok(())
}
