//! `cerebellum bench zenoh`: the robot path over zenoh on loopback against
//! bare zenoh in the same run, and how many transitions a learner receives
//! from a fleet of simulated robots in lockstep.

use super::print_json;
use crate::control_loop::{ControlLoop, Inference, LoopConfig, PolicySlot};
use crate::envelope::{EnvelopeConfig, SafetyEnvelope};
use crate::learn::TrainConfig;
use crate::learn::online::{LearnerThread, OnlinePpo, Pace};
use crate::learn::trainer::make_envs;
use cerebellum_core::{Policy, Robot, Sampling, SimClock};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::protocol::{self, Body, Floats, Frame, Header, State};
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, Mode, SessionConfig, free_local_port};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_sim::TaskKind;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};
use zenoh::Wait;

/// Round trip over zenoh on loopback, and a fleet's throughput.
///
/// 1. Round trip: the simulated reach arm served in lockstep
///    (`RobotServer`, as `serve-sim --lockstep`), driven by `ZenohRobot`:
///    each tick is state → policy → command → the server steps the
///    physics → the next state. Against it, in the same run, a bare zenoh
///    ping–pong of a payload the size of one State frame between two
///    sessions on the same loopback endpoints. Prints p50/p99 and ratios.
/// 2. Fleet: 1, 2 and 4 lockstep servers, one control loop each, all
///    feeding one online PPO learner; transitions per second it receives.
///
///   cerebellum bench zenoh --round-trips 2000 --fleet-seconds 10 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ZenohBenchArgs {
    #[arg(long, default_value_t = 2000)]
    pub round_trips: usize,
    #[arg(long, default_value_t = 10.0)]
    pub fleet_seconds: f64,
    /// Fleet sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub fleet: Vec<usize>,
    #[arg(long)]
    pub json: bool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn quantiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({"p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max()})
}

fn peer(listen: Option<&str>, connect: Option<&str>) -> anyhow::Result<zenoh::Session> {
    Ok(session::open(&SessionConfig {
        mode: if listen.is_some() {
            Mode::Peer
        } else {
            Mode::Client
        },
        listen: listen.into_iter().map(str::to_owned).collect(),
        connect: connect.into_iter().map(str::to_owned).collect(),
        ..SessionConfig::default()
    })?)
}

/// Bare zenoh: `payload` bytes out, echoed back, `n` times.
fn ping_pong(payload: usize, n: usize) -> anyhow::Result<Histogram<u64>> {
    let endpoint = format!("tcp/127.0.0.1:{}", free_local_port());
    let echo = peer(Some(&endpoint), None)?;
    let pinger = peer(None, Some(&endpoint))?;
    let echo_publisher = echo
        .declare_publisher("bench/pong")
        .express(true)
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _echo = echo
        .declare_subscriber("bench/ping")
        .callback(move |sample| {
            let _ = echo_publisher
                .put(sample.payload().to_bytes().into_owned())
                .wait();
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let _pong = pinger
        .declare_subscriber("bench/pong")
        .callback(move |_| {
            let _ = tx.send(());
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ping = pinger
        .declare_publisher("bench/ping")
        .express(true)
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let message = vec![7u8; payload];
    // Until the routes are up, pings go nowhere.
    let started = Instant::now();
    loop {
        ping.put(message.clone())
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "ping–pong never connected"
        );
    }
    let mut h = histogram();
    for _ in 0..n {
        let t = Instant::now();
        ping.put(message.clone())
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        rx.recv_timeout(Duration::from_secs(5))?;
        h.saturating_record(t.elapsed().as_micros() as u64);
    }
    Ok(h)
}

fn serve_reach(robot_id: &str) -> anyhow::Result<(RobotServer, String)> {
    let config = TrainConfig::for_task(TaskKind::Reach);
    let (env_config, model) = config.robot.load(TaskKind::Reach)?;
    let env = make_envs(&env_config, model, 1)?.remove(0);
    let endpoint = format!("tcp/127.0.0.1:{}", free_local_port());
    let mut server_config =
        ServerConfig::new(RobotKeys::new("bench", robot_id).map_err(anyhow::Error::msg)?);
    server_config.lockstep = true;
    Ok((
        RobotServer::start(peer(Some(&endpoint), None)?, env, server_config)?,
        endpoint,
    ))
}

fn connect(robot_id: &str, endpoint: &str) -> anyhow::Result<ZenohRobot> {
    let config = ClientConfig::new(
        SessionConfig {
            connect: vec![endpoint.to_owned()],
            ..SessionConfig::default()
        },
        RobotKeys::new("bench", robot_id).map_err(anyhow::Error::msg)?,
    );
    Ok(ZenohRobot::connect(config, ClientHooks::default())?)
}

fn reach_policy(spec: &cerebellum_core::RobotSpec) -> anyhow::Result<GaussianMlpPolicy> {
    let mut policy =
        GaussianMlpPolicy::new(spec, TrainConfig::for_task(TaskKind::Reach).policy, 1)?;
    policy.set_version(1);
    Ok(policy)
}

/// The robot path: observe → infer → apply, each apply waiting for the
/// state the command produced. It measures the transport alone, so it
/// commands the robot without the control loop: allowed only because the
/// robot is the simulator in lockstep, served by this bench itself.
fn robot_round_trips(n: usize) -> anyhow::Result<(Histogram<u64>, Histogram<u64>, usize)> {
    let (server, endpoint) = serve_reach("arm0")?;
    let mut arm = connect("arm0", &endpoint)?;
    anyhow::ensure!(
        arm.is_lockstep(),
        "the round-trip bench commands its robot outside the control loop: only a simulator in lockstep may be"
    );
    let spec = arm.spec().clone();
    let mut policy = reach_policy(&spec)?;
    let mut tick = histogram();
    let mut inference = histogram();
    let mut observation = arm.reset(&cerebellum_core::ResetRequest { seed: 1 })?;
    let state_bytes = protocol::encode_to_vec(&Frame {
        header: Header {
            protocol: protocol::PROTOCOL_VERSION,
            robot: "arm0",
            boot: 1,
            seq: 1,
            stamp: 1.0,
        },
        body: Body::State(State {
            episode: 1,
            applied_command: 1,
            holding: false,
            estopped: false,
            values: Floats::Values(&observation.state),
        }),
    })
    .len();
    for i in 0..n {
        let started = Instant::now();
        let output = policy.act(std::slice::from_ref(&observation), Sampling::Deterministic)?;
        inference.saturating_record(started.elapsed().as_micros() as u64);
        let outcome = arm.apply(&output[0].chunk.actions[0])?;
        observation = if outcome.done() {
            arm.reset(&cerebellum_core::ResetRequest { seed: i as u64 })?
        } else {
            arm.observe()?
        };
        if !outcome.done() {
            tick.saturating_record(started.elapsed().as_micros() as u64);
        }
    }
    server.stop();
    Ok((tick, inference, state_bytes))
}

/// Transitions per second one learner receives from `n` lockstep servers,
/// what it received, and what the loops sent (the rest were dropped at a
/// full channel).
fn fleet_throughput(n: usize, seconds: f64) -> anyhow::Result<(f64, u64, u64)> {
    let mut servers = Vec::new();
    let mut arms = Vec::new();
    for i in 0..n {
        let id = format!("arm{i}");
        let (server, endpoint) = serve_reach(&id)?;
        arms.push((id.clone(), connect(&id, &endpoint)?));
        servers.push(server);
    }
    let spec = arms[0].1.spec().clone();
    let policy = reach_policy(&spec)?;
    let slot = PolicySlot::new(policy.clone());
    let config = TrainConfig::for_task(TaskKind::Reach);
    let learner = OnlinePpo::new(policy, config.clone(), None);
    let (sink, learner) = LearnerThread::spawn(
        learner,
        slot.clone(),
        Pace::WallTime {
            capacity: config.online.channel_capacity,
        },
    );
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let loops: Vec<_> = arms
        .into_iter()
        .enumerate()
        .map(|(i, (id, arm))| {
            let mut sink = sink.clone();
            let slot = slot.clone();
            let spec = spec.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let envelope = SafetyEnvelope::new(&spec, EnvelopeConfig::default(), None)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut control = ControlLoop::new(
                    arm,
                    SimClock::new(spec.control_period()),
                    Inference::inline(slot),
                    envelope,
                    LoopConfig {
                        seed: i as u64,
                        stochastic: true,
                        max_episodes: None,
                        max_ticks: Some(0),
                        inference_deadline: None,
                        robot_id: id,
                        episodes_per_start: 1,
                    },
                );
                while Instant::now() < deadline {
                    let ticks = control.stats.counters.ticks;
                    control.config.max_ticks = Some(ticks + 50);
                    control.run(&mut sink)?;
                }
                Ok(control.stats.counters.ticks)
            })
        })
        .collect();
    drop(sink);
    let started = Instant::now();
    let mut ticks = 0;
    for l in loops {
        ticks += l.join().map_err(|_| anyhow::anyhow!("a loop panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let status = learner.join();
    for server in servers {
        server.stop();
    }
    anyhow::ensure!(
        status.failure.is_none(),
        "learner failed: {:?}",
        status.failure
    );
    Ok((
        status.counters.received as f64 / elapsed,
        status.counters.received,
        ticks,
    ))
}

pub fn run(args: ZenohBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.round_trips > 0, "--round-trips must be at least 1");
    let (tick, inference, state_bytes) = robot_round_trips(args.round_trips)?;
    let bare = ping_pong(state_bytes, args.round_trips)?;
    let ratio = |a: &Histogram<u64>, b: &Histogram<u64>, q: f64| {
        a.value_at_quantile(q) as f64 / b.value_at_quantile(q).max(1) as f64
    };
    println!(
        "state → policy → command round trip (lockstep, {} ticks): p50 {} µs, p99 {} µs (policy p50 {} µs)",
        tick.len(),
        tick.value_at_quantile(0.5),
        tick.value_at_quantile(0.99),
        inference.value_at_quantile(0.5)
    );
    println!(
        "bare zenoh ping–pong of {state_bytes} B: p50 {} µs, p99 {} µs → ratio p50 {:.2}, p99 {:.2}",
        bare.value_at_quantile(0.5),
        bare.value_at_quantile(0.99),
        ratio(&tick, &bare, 0.5),
        ratio(&tick, &bare, 0.99)
    );
    let mut fleet = Vec::new();
    for &n in &args.fleet {
        anyhow::ensure!(n > 0, "--fleet sizes must be at least 1");
        let (rate, received, sent) = fleet_throughput(n, args.fleet_seconds)?;
        println!(
            "fleet of {n} lockstep servers → one learner: {rate:.0} transitions/s ({received} in {:.0} s; {} dropped of {sent} sent)",
            args.fleet_seconds,
            sent - received
        );
        fleet.push(json!({"servers": n, "transitions_per_second": rate, "received": received, "sent": sent, "dropped": sent - received}));
    }
    if args.json {
        print_json(&json!({
            "command": "bench zenoh",
            "state_bytes": state_bytes,
            "round_trip": quantiles(&tick),
            "policy": quantiles(&inference),
            "bare_ping_pong": quantiles(&bare),
            "ratio_p50": ratio(&tick, &bare, 0.5),
            "ratio_p99": ratio(&tick, &bare, 0.99),
            "fleet": fleet,
        }));
    }
    Ok(())
}
