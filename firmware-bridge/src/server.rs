//! A robot server: serves any `Robot` over the protocol exactly as firmware
//! would. The runtime hands it the simulator for `cerebellum serve-sim`, so
//! the whole real-robot path is tested against it.
//!
//! Each control period: resets and e-stops first, then the newest command
//! of this episode if it has not expired (else hold position), one
//! `Robot::apply`, the step's `EpisodeEvent`, a fresh `State` and camera
//! frames. Safety does not depend on the runtime: with no command, an
//! expired one, a refused one (wrong length, outside the action spec's
//! limits) or the e-stop latched, the server holds the measured pose.
//! In lockstep it steps once per command instead of per period (throughput
//! measurements, deterministic tests) and ignores expiry.

use crate::inbox::{Inbox, InboxCounters, Outbox};
use crate::keys::RobotKeys;
use crate::protocol::{
    self, Body, EpisodeEvent, Floats, Frame, Header, Heartbeat, Image, ImageEncoding, Kind, Meta,
    PROTOCOL_VERSION, ResetAck, State,
};
use crate::session::{boot_id, monotonic_now};
use cerebellum_core::{
    Action, ActionSpec, Observation, ResetRequest, Robot, RobotSpec, StepOutcome,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zenoh::Wait;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub keys: RobotKeys,
    /// Step once per received command instead of once per period.
    pub lockstep: bool,
    /// Hold position when the newest command is older than this, whatever
    /// its expiry says (firmware's own watchdog).
    pub command_timeout: Duration,
    pub heartbeat_period: Duration,
    /// Frames from the runtime slower than the fastest by more than this
    /// are stale (commands expire on their own; this catches the rest).
    pub max_message_age: Duration,
}

impl ServerConfig {
    pub fn new(keys: RobotKeys) -> Self {
        Self {
            keys,
            lockstep: false,
            command_timeout: Duration::from_millis(100),
            heartbeat_period: Duration::from_millis(100),
            max_message_age: Duration::from_millis(500),
        }
    }
}

/// What a server did, readable while it runs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerStats {
    pub steps: u64,
    /// Steps that applied a received command (a command applied on
    /// several periods counts once per period).
    pub commands_applied: u64,
    /// Steps that held position: no command yet, an expired, timed-out or
    /// refused one, or the e-stop latched.
    pub holds: u64,
    /// Commands of the current episode refused, never applied, because
    /// they carry another number of values than the action spec…
    pub commands_wrong_length: u64,
    /// …or a value outside the action spec's limits.
    pub commands_out_of_limits: u64,
    /// The largest |Δ| of any element between two consecutive received
    /// commands applied in the same episode (the server's own holds are
    /// not commands): how far one command moved a target.
    pub max_command_step: f64,
    pub expired_commands: u64,
    pub estopped_steps: u64,
    pub resets: u64,
    pub episodes_done: u64,
    pub apply_errors: u64,
    /// Commands for an episode other than the current one.
    pub wrong_episode: u64,
    pub estopped: bool,
    pub inbox: InboxCounters,
}

struct CommandIn {
    seq: u32,
    episode: u32,
    expires_at: f64,
    received_at: f64,
    values: Vec<f32>,
    /// Why the robot refuses it (`wrong_length`, `out_of_limits`): a
    /// refused command is kept only to answer it in lockstep, never applied.
    refused: Option<&'static str>,
}

enum Incoming {
    Command(CommandIn),
    Reset { episode: u32, seed: u64 },
    EStop { engaged: bool, reason: String },
}

/// A running server; dropping it (or `stop`) ends the thread and the
/// session.
pub struct RobotServer {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ServerStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("zenoh: {0}")]
    Zenoh(String),
    #[error("the robot: {0}")]
    Robot(String),
}

fn zenoh_error(e: impl std::fmt::Display) -> ServerError {
    ServerError::Zenoh(e.to_string())
}

impl RobotServer {
    /// Starts serving `robot` on `session` (which the caller opened with
    /// the endpoints to listen on).
    pub fn start<R: Robot + Send + 'static>(
        session: zenoh::Session,
        robot: R,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ServerStats::default()));
        let (incoming, inbox_rx) = crossbeam_channel::unbounded();
        let subscriber = subscribe(&session, &config, incoming, stats.clone())?;
        let spec_json = serde_json::to_string(robot.spec()).map_err(zenoh_error)?;
        let mut worker = Worker {
            keys: config.keys.clone(),
            outbox: Outbox::default(),
            boot: boot_id(),
            session,
            robot,
            spec_json,
            config,
            stats: stats.clone(),
            episode: 0,
            episode_open: false,
            command: None,
            last_applied: 0,
            previous_command: None,
            last_observation: None,
            estop: None,
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("serve-{}", worker.keys.robot))
            .spawn(move || {
                let _subscriber = subscriber;
                worker.run(&inbox_rx, &thread_stop);
                let _ = worker.session.close().wait();
            })
            .map_err(|e| ServerError::Robot(e.to_string()))?;
        Ok(Self {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> ServerStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Stops serving and closes the session (as if the firmware died).
    pub fn stop(mut self) -> ServerStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Blocks until the server stops (Ctrl-C ends the process).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RobotServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn subscribe(
    session: &zenoh::Session,
    config: &ServerConfig,
    incoming: Sender<Incoming>,
    stats: Arc<Mutex<ServerStats>>,
) -> Result<zenoh::pubsub::Subscriber<()>, ServerError> {
    let keys = config.keys.clone();
    let max_age = (!config.lockstep).then_some(config.max_message_age.as_secs_f64());
    let inbox = Mutex::new(Inbox::new(keys.clone(), max_age, &[Kind::Command]));
    let all = format!("{}/{}/**", keys.prefix, keys.robot);
    session
        .declare_subscriber(all)
        .callback(move |sample| {
            let key = sample.key_expr().as_str().to_owned();
            // What the robot itself publishes comes back on the same keys.
            let suffix = key.rsplit('/').next().unwrap_or("");
            if !matches!(suffix, "command" | "reset" | "estop") {
                return;
            }
            let bytes = sample.payload().to_bytes();
            let now = monotonic_now();
            let mut inbox = inbox.lock().expect("inbox lock");
            let message = match inbox.accept(&key, &bytes, now) {
                Some(Frame {
                    header,
                    body: Body::Command(c),
                }) => Some(Incoming::Command(CommandIn {
                    seq: header.seq,
                    episode: c.episode,
                    expires_at: c.expires_at,
                    received_at: now,
                    values: c.values.iter().collect(),
                    refused: None,
                })),
                Some(Frame {
                    body: Body::Reset(r),
                    ..
                }) => Some(Incoming::Reset {
                    episode: r.episode,
                    seed: r.seed,
                }),
                Some(Frame {
                    body: Body::EStop(e),
                    ..
                }) => Some(Incoming::EStop {
                    engaged: e.engaged,
                    reason: e.reason.to_owned(),
                }),
                _ => None,
            };
            stats.lock().expect("stats lock").inbox = inbox.counters.clone();
            drop(inbox);
            if let Some(message) = message {
                let _ = incoming.send(message);
            }
        })
        .wait()
        .map_err(zenoh_error)
}

struct Worker<R> {
    keys: RobotKeys,
    outbox: Outbox,
    boot: u32,
    session: zenoh::Session,
    robot: R,
    spec_json: String,
    config: ServerConfig,
    stats: Arc<Mutex<ServerStats>>,
    episode: u32,
    episode_open: bool,
    command: Option<CommandIn>,
    last_applied: u32,
    /// The last received command applied this episode (seq, values), for
    /// `max_command_step`.
    previous_command: Option<(u32, Vec<f32>)>,
    last_observation: Option<Observation>,
    estop: Option<String>,
}

/// Why a robot with this action spec refuses `values`, if it does: another
/// number of values (`wrong_length`) or one outside its element's limits,
/// inclusive (`out_of_limits`; NaN is outside every limit).
pub fn command_refusal(spec: &ActionSpec, values: &[f32]) -> Option<&'static str> {
    if values.len() != spec.len() {
        return Some("wrong_length");
    }
    let limits = spec
        .fields
        .iter()
        .flat_map(|field| field.lower.iter().zip(&field.upper));
    values
        .iter()
        .zip(limits)
        .any(|(value, (lower, upper))| !(lower <= value && value <= upper))
        .then_some("out_of_limits")
}

impl<R: Robot> Worker<R> {
    fn spec(&self) -> &RobotSpec {
        self.robot.spec()
    }

    fn period(&self) -> Duration {
        self.spec().control_period()
    }

    fn now(&self) -> f64 {
        monotonic_now()
    }

    /// Publishes one frame and returns its sequence number.
    fn publish(&mut self, key: &str, body: Body) -> u32 {
        let seq = self.outbox.next_seq(key);
        let frame = Frame {
            header: Header {
                protocol: PROTOCOL_VERSION,
                robot: &self.keys.robot,
                boot: self.boot,
                seq,
                stamp: monotonic_now(),
            },
            body,
        };
        let bytes = protocol::encode_to_vec(&frame);
        if let Err(e) = self.session.put(key, bytes).wait() {
            tracing::warn!(key, "publish failed: {e}");
        }
        seq
    }

    fn run(&mut self, incoming: &Receiver<Incoming>, stop: &AtomicBool) {
        let period = self.period();
        let mut next_tick = self.now();
        let mut next_heartbeat = self.now();
        while !stop.load(Ordering::SeqCst) {
            let now = self.now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + self.config.heartbeat_period.as_secs_f64();
            }
            if self.config.lockstep {
                let wait = Duration::from_secs_f64((next_heartbeat - now).clamp(0.0, 0.05));
                match incoming.recv_timeout(wait) {
                    Ok(first) => {
                        // Whatever else arrived meanwhile (a command right
                        // behind a reset) is handled before stepping.
                        let mut step = false;
                        for message in std::iter::once(first).chain(incoming.try_iter()) {
                            step |= matches!(message, Incoming::Command(_));
                            self.handle(message);
                        }
                        if step && self.episode_open {
                            self.step();
                        }
                    }
                    Err(_) => continue,
                }
            } else {
                for message in incoming.try_iter() {
                    self.handle(message);
                }
                if self.episode_open {
                    self.step();
                }
                next_tick += period.as_secs_f64();
                let now = self.now();
                if next_tick < now - period.as_secs_f64() {
                    next_tick = now; // fell behind: do not burst
                }
                // Until the next tick, serve every message as it arrives:
                // a Reset or an e-stop right behind a Command is not left
                // waiting for the next period. Meta and Heartbeat keep
                // their pace however slow the control rate.
                loop {
                    let now = self.now();
                    if now >= next_tick || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if now >= next_heartbeat {
                        self.heartbeat();
                        next_heartbeat = now + self.config.heartbeat_period.as_secs_f64();
                    }
                    let wait =
                        Duration::from_secs_f64((next_tick.min(next_heartbeat) - now).max(0.0));
                    match incoming.recv_timeout(wait) {
                        Ok(message) => self.handle(message),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
                    }
                }
            }
            self.share_stats();
        }
    }

    fn share_stats(&self) {
        let mut stats = self.stats.lock().expect("stats lock");
        stats.estopped = self.estop.is_some();
    }

    fn count(&self, f: impl FnOnce(&mut ServerStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }

    fn handle(&mut self, message: Incoming) {
        match message {
            Incoming::Command(mut command) => {
                if command.episode != self.episode || !self.episode_open {
                    self.count(|s| s.wrong_episode += 1);
                    return;
                }
                // The newest command replaces the stored one even when it
                // is refused: the robot then holds rather than go on with
                // a target the runtime has replaced.
                command.refused = command_refusal(&self.spec().action, &command.values);
                match command.refused {
                    Some("wrong_length") => self.count(|s| s.commands_wrong_length += 1),
                    Some(_) => self.count(|s| s.commands_out_of_limits += 1),
                    None => {}
                }
                if let Some(reason) = command.refused {
                    tracing::warn!(
                        robot = self.keys.robot,
                        seq = command.seq,
                        "command refused ({reason}): {} values {:?}",
                        command.values.len(),
                        command.values
                    );
                }
                self.command = Some(command);
            }
            Incoming::Reset { episode, seed } => self.reset(episode, seed),
            Incoming::EStop { engaged, reason } => {
                let changed = engaged != self.estop.is_some();
                if engaged {
                    tracing::warn!(robot = self.keys.robot, "e-stop: {reason}");
                    self.estop = Some(reason);
                } else {
                    tracing::info!(robot = self.keys.robot, "e-stop cleared");
                    self.estop = None;
                }
                self.share_stats();
                if changed {
                    // Announced at once, not at the next heartbeat.
                    self.publish_heartbeat();
                }
            }
        }
    }

    fn reset(&mut self, episode: u32, seed: u64) {
        match self.robot.reset(&ResetRequest { seed }) {
            Ok(observation) => {
                self.episode = episode;
                self.episode_open = true;
                self.command = None;
                self.last_applied = 0;
                self.previous_command = None;
                self.count(|s| s.resets += 1);
                let instruction = observation.instruction.clone().unwrap_or_default();
                let key = self.keys.reset();
                let _ = self.publish(
                    &key,
                    Body::ResetAck(ResetAck {
                        episode,
                        seed,
                        task_instance: seed,
                        instruction: &instruction,
                    }),
                );
                // Latched, the robot holds from the first State on.
                let holding = self.estop.is_some();
                self.publish_observation(observation, holding);
                // The new episode is announced at once, so no Heartbeat
                // after the ResetAck names the previous one.
                self.publish_heartbeat();
            }
            Err(e) => tracing::warn!(robot = self.keys.robot, "reset failed: {e}"),
        }
    }

    /// The measured joint positions when the action commands them; else
    /// the last command applied.
    fn hold_command(&self, last: Option<&Action>) -> Option<Action> {
        let spec = self.spec();
        let observation = self.last_observation.as_ref()?;
        let mut offset = 0;
        for field in &spec.observation.fields {
            if field.name == "joint_position"
                && spec.action.fields.len() == 1
                && spec.action.fields[0].elements == field.elements
            {
                let values = observation.state.get(offset..offset + field.len())?;
                return Some(Action::new(values.to_vec()));
            }
            offset += field.len();
        }
        last.cloned()
    }

    fn step(&mut self) {
        let now = self.now();
        let timeout = self.config.command_timeout.as_secs_f64();
        let usable = self.command.as_ref().filter(|c| {
            c.refused.is_none()
                && (self.config.lockstep || (now <= c.expires_at && now - c.received_at <= timeout))
        });
        let (command, applied_seq) = match (&self.estop, usable) {
            (None, Some(c)) => (Some(Action::new(c.values.clone())), Some(c.seq)),
            (estop, _) => {
                if estop.is_some() {
                    self.count(|s| s.estopped_steps += 1);
                } else if self.command.as_ref().is_some_and(|c| c.refused.is_none()) {
                    self.count(|s| s.expired_commands += 1);
                }
                (None, None)
            }
        };
        let action = match command {
            Some(a) => a,
            None => match self.hold_command(None) {
                Some(hold) => hold,
                None => return,
            },
        };
        let (outcome, applied_seq) = match self.robot.apply(&action) {
            Ok(outcome) => (outcome, applied_seq),
            Err(e) => {
                // Not applied, whatever was asked: the State says holding.
                self.count(|s| s.apply_errors += 1);
                tracing::warn!(robot = self.keys.robot, "apply failed: {e}");
                (StepOutcome::default(), None)
            }
        };
        let holding = applied_seq.is_none();
        if let Some(seq) = applied_seq {
            self.last_applied = seq;
            self.measure_command_step(seq, &action.values);
        }
        if self.config.lockstep {
            // One step per command, and the state after it answers that
            // command even when the robot held instead (e-stop): the
            // runtime waits for exactly this answer.
            if let Some(command) = self.command.take() {
                self.last_applied = command.seq;
            }
        }
        self.count(|s| {
            s.steps += 1;
            s.commands_applied += u64::from(!holding);
            s.holds += u64::from(holding);
        });
        let reward = outcome.rewards.get(cerebellum_core::RewardComponents::TASK);
        if reward.is_some() || outcome.done() || outcome.success.is_some() {
            let key = self.keys.episode();
            let event = EpisodeEvent {
                episode: self.episode,
                applied_command: self.last_applied,
                reward,
                terminated: outcome.terminated,
                truncated: outcome.truncated,
                success: outcome.success,
            };
            self.publish(&key, Body::Episode(event));
        }
        if outcome.done() {
            self.episode_open = false;
            self.count(|s| s.episodes_done += 1);
        }
        match self.robot.observe() {
            Ok(observation) => self.publish_observation(observation, holding),
            Err(e) => tracing::warn!(robot = self.keys.robot, "observe failed: {e}"),
        }
    }

    /// Folds the step from the previous applied command of the episode to
    /// this one (`seq`) into `max_command_step`, when the two were sent one
    /// after the other (consecutive `seq`): that is the step the runtime's
    /// envelope bounds. A command applied again on a later period is no
    /// new step; after a lost or superseded command (two arriving in one
    /// period) the pair is not consecutive and is not measured.
    fn measure_command_step(&mut self, seq: u32, values: &[f32]) {
        let step = match &self.previous_command {
            Some((previous, _)) if *previous == seq => return,
            Some((previous, _)) if previous.wrapping_add(1) != seq => 0.0,
            Some((_, last)) => last
                .iter()
                .zip(values)
                .map(|(a, b)| (f64::from(*b) - f64::from(*a)).abs())
                .fold(0.0, f64::max),
            None => 0.0,
        };
        self.count(|s| s.max_command_step = s.max_command_step.max(step));
        self.previous_command = Some((seq, values.to_vec()));
    }

    fn publish_observation(&mut self, observation: Observation, holding: bool) {
        let key = self.keys.state();
        let state = State {
            episode: self.episode,
            applied_command: self.last_applied,
            holding,
            estopped: self.estop.is_some(),
            values: Floats::Values(&observation.state),
        };
        let state_seq = self.publish(&key, Body::State(state));
        for image in &observation.images {
            self.publish_image(image, state_seq, observation.timestamp);
        }
        self.last_observation = Some(observation);
    }

    fn publish_image(&mut self, image: &cerebellum_core::Image, state_seq: u32, taken_at: f64) {
        let key = self.keys.camera(&image.camera);
        self.publish(
            &key,
            Body::Image(Image {
                camera: &image.camera,
                state_seq,
                taken_at: taken_at.max(0.0),
                height: image.height as u16,
                width: image.width as u16,
                channels: image.channels as u8,
                encoding: ImageEncoding::Raw8,
                data: &image.data,
            }),
        );
    }

    fn heartbeat(&mut self) {
        let key = self.keys.meta();
        let spec_json = std::mem::take(&mut self.spec_json);
        let rate = self.spec().control_rate_hz as f32;
        self.publish(
            &key,
            Body::Meta(Meta {
                control_rate_hz: rate,
                command_timeout_s: self.config.command_timeout.as_secs_f32(),
                lockstep: self.config.lockstep,
                spec_json: &spec_json,
            }),
        );
        self.spec_json = spec_json;
        self.publish_heartbeat();
    }

    /// The episode of the latest acknowledged Reset and the e-stop latch.
    fn publish_heartbeat(&mut self) {
        let key = self.keys.meta();
        let estopped = self.estop.is_some();
        let episode = self.episode;
        self.publish(&key, Body::Heartbeat(Heartbeat { episode, estopped }));
    }
}
