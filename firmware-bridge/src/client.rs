//! `ZenohRobot`: a `Robot` reached over zenoh, so the control loop drives a
//! robot across the network exactly as it drives the in-process simulator.
//!
//! On connect it waits for the robot's `Meta` and checks its spec against
//! the one the caller expects (the policy's contract). Each tick `observe`
//! returns the newest checked `State` (with its camera frames), and `apply`
//! sends one envelope-checked command that expires a few periods later. A
//! robot that falls silent is reported lost (`observe`/`apply` fail, so the
//! loop's watchdog holds); when it speaks again the episode in progress is
//! ended as truncated and the loop resets it.

use crate::inbox::{Inbox, InboxCounters, Outbox};
use crate::keys::RobotKeys;
use crate::protocol::{
    self, Body, Command, Floats, Frame, Header, Kind, PROTOCOL_VERSION, Reset, TeleopPhase,
};
use crate::session::{SessionConfig, boot_id, monotonic_now};
use cerebellum_core::{
    Action, Image, Observation, ResetRequest, RewardComponents, Robot, RobotError, RobotSpec,
    StepOutcome,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use zenoh::Wait;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub session: SessionConfig,
    pub keys: RobotKeys,
    /// How long `connect` waits for the robot's `Meta`.
    pub meta_timeout: Duration,
    /// How long a reset (and, in lockstep, a step) may take.
    pub reply_timeout: Duration,
    /// Nothing heard from the robot for this long: it is lost.
    pub lost_after: Duration,
    /// A `State` slower than the fastest recent one by more than this is
    /// stale (dropped and counted).
    pub max_state_age: Duration,
    /// Commands expire this many control periods after the newest state.
    pub command_ttl_periods: u32,
    /// The spec the robot must announce (the policy's contract).
    pub expected_spec: Option<RobotSpec>,
}

impl ClientConfig {
    pub fn new(session: SessionConfig, keys: RobotKeys) -> Self {
        Self {
            session,
            keys,
            meta_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
            lost_after: Duration::from_millis(300),
            max_state_age: Duration::from_millis(100),
            command_ttl_periods: 3,
            expected_spec: None,
        }
    }
}

/// Called with (engaged, reason) when the e-stop is set or cleared.
pub type EStopHook = Box<dyn Fn(bool, &str) + Send + Sync>;
/// Called with each teleop message (phase, the operator's command).
pub type TeleopHook = Box<dyn Fn(TeleopPhase, &[f32]) + Send + Sync>;

/// Callbacks for what operators publish on the robot's keys; they run on
/// zenoh's thread and must be quick (press a button, store a command).
#[derive(Default)]
pub struct ClientHooks {
    pub on_estop: Option<EStopHook>,
    pub on_teleop: Option<TeleopHook>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("zenoh: {0}")]
    Zenoh(String),
    #[error(
        "no Meta from robot `{robot}` on {key} within {timeout:?}: {}",
        if *reached {
            format!("the session reached {endpoints:?}, so the robot id or key prefix is wrong, or the robot's access control does not let this user read its keys")
        } else {
            format!("nothing answered at {endpoints:?}: is `cerebellum serve-sim` (or the firmware) running and reachable there? The robot may not be listening yet: retry the command, or wait longer with --meta-timeout SECONDS. A robot with access control also refuses a wrong zenoh user or password this way")
        }
    )]
    NoMeta {
        robot: String,
        key: String,
        timeout: Duration,
        endpoints: Vec<String>,
        /// The session was connected to some zenoh node when the wait
        /// ended (so the network and authentication were fine).
        reached: bool,
    },
    #[error("robot `{robot}` announced a spec that is not valid JSON: {reason}")]
    BadMeta { robot: String, reason: String },
    #[error(
        "robot `{robot}` announces {meta_hz} Hz in its Meta (`control_rate_hz`) but {spec_hz} Hz in its spec (`spec_json`): commands would expire on the wrong clock. Make the firmware announce one rate."
    )]
    RateMismatch {
        robot: String,
        meta_hz: f64,
        spec_hz: f64,
    },
    #[error(
        "robot `{robot}` does not match the policy's contract: {difference}. Serve the task the policy was trained on (or retrain)."
    )]
    SpecMismatch { robot: String, difference: String },
}

/// What a client counted.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClientStats {
    pub inbox: InboxCounters,
    pub commands_sent: u64,
    /// Commands refused before sending because they came faster than the
    /// robot's rate allows (wall-clock robots; see `ZenohRobot::apply`).
    pub commands_over_rate: u64,
    /// Commands not sent because the robot had already reported the end of
    /// the episode they belonged to (the apply returned that end instead).
    pub commands_after_end: u64,
    /// States whose values broke the robot's spec (never handed on).
    pub out_of_spec: u64,
    /// Times the robot fell silent, and times it came back.
    pub lost: u64,
    pub recovered: u64,
    /// Steps the robot reported holding position on its own.
    pub robot_holds: u64,
}

#[derive(Clone, Debug)]
struct StateIn {
    seq: u32,
    stamp: f64,
    episode: u32,
    applied_command: u32,
    values: Vec<f32>,
}

#[derive(Clone, Debug)]
struct EventIn {
    episode: u32,
    reward: Option<f32>,
    terminated: bool,
    truncated: bool,
    success: Option<bool>,
}

struct MetaIn {
    control_rate_hz: f64,
    lockstep: bool,
    spec_json: String,
}

struct Shared {
    inbox: Inbox,
    meta: Option<MetaIn>,
    state: Option<StateIn>,
    images: BTreeMap<String, (u32, Image)>,
    events: Vec<EventIn>,
    ack: Option<(u32, String)>,
    last_heard: f64,
    /// The e-stop state last reported to the hook.
    estop: bool,
    /// The robot's `boot`, and whether it changed since the loop last
    /// looked (a robot that restarted faster than `lost_after`).
    robot_boot: Option<u32>,
    rebooted: bool,
    stats: ClientStats,
}

/// Capacity of the pacing bucket: a wall clock that ran one tick late may
/// catch up once, no more.
const PACING_BURST: f64 = 2.0;

/// The bucket refills this much faster than the control rate, so that a
/// loop ticking at exactly the rate, on a period rounded to nanoseconds or
/// a Meta rate rounded to `f32`, is never refused.
const PACING_SLACK: f64 = 1e-4;

/// A token bucket: one token per command, refilled at the control rate.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    tokens: f64,
    refilled_at: f64,
    rate_hz: f64,
}

impl Pacing {
    fn new(rate_hz: f64) -> Self {
        Self {
            tokens: PACING_BURST,
            refilled_at: f64::NEG_INFINITY,
            rate_hz: rate_hz * (1.0 + PACING_SLACK),
        }
    }

    /// Takes a token at `now` (seconds) if one is there.
    fn take(&mut self, now: f64) -> bool {
        let earned = (now - self.refilled_at).max(0.0) * self.rate_hz;
        self.tokens = (self.tokens + earned).min(PACING_BURST);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A robot across zenoh.
pub struct ZenohRobot {
    config: ClientConfig,
    spec: RobotSpec,
    lockstep: bool,
    period: f64,
    /// Wall-clock robots: never more commands than the rate allows.
    pacing: Pacing,
    /// The robot reported the end of the current episode: nothing more is
    /// sent for it until the next reset.
    episode_over: bool,
    session: zenoh::Session,
    _subscriber: zenoh::pubsub::Subscriber<()>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    outbox: Outbox,
    boot: u32,
    episode: u32,
    instruction: Option<String>,
    policy_version: u64,
    lost: bool,
}

fn zenoh_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Zenoh(e.to_string())
}

/// Whether the session is connected to any router or peer (a client that
/// was refused at authentication, or found nobody, is connected to none).
fn connected(session: &zenoh::Session) -> bool {
    use zenoh::Wait;
    let info = session.info();
    info.routers_zid().wait().next().is_some() || info.peers_zid().wait().next().is_some()
}

impl ZenohRobot {
    pub fn connect(config: ClientConfig, hooks: ClientHooks) -> Result<Self, ClientError> {
        let keys = config.keys.clone();
        let no_meta = |reached: bool| ClientError::NoMeta {
            robot: keys.robot.clone(),
            key: keys.meta(),
            timeout: config.meta_timeout,
            endpoints: config.session.connect.clone(),
            reached,
        };
        let mut session_config = config.session.clone();
        session_config.connect_timeout = Some(config.meta_timeout);
        // Nobody to connect to within the timeout is the same failure as
        // nobody announcing the robot.
        let session = crate::session::open(&session_config).map_err(|_| no_meta(false))?;
        let inbox = Inbox::new(
            keys.clone(),
            Some(config.max_state_age.as_secs_f64()),
            &[Kind::State],
        );
        let shared = Arc::new((
            Mutex::new(Shared {
                inbox,
                meta: None,
                state: None,
                images: BTreeMap::new(),
                events: Vec::new(),
                ack: None,
                last_heard: f64::NEG_INFINITY,
                estop: false,
                robot_boot: None,
                rebooted: false,
                stats: ClientStats::default(),
            }),
            Condvar::new(),
        ));
        let subscriber = {
            let shared = shared.clone();
            session
                .declare_subscriber(format!("{}/{}/**", keys.prefix, keys.robot))
                .callback(move |sample| {
                    let key = sample.key_expr().as_str();
                    if key.ends_with("/command") {
                        return; // our own commands
                    }
                    let bytes = sample.payload().to_bytes();
                    receive(&shared, &hooks, key, &bytes);
                })
                .wait()
                .map_err(zenoh_error)?
        };
        let meta = {
            let (lock, ready) = &*shared;
            let guard = lock.lock().expect("client lock");
            let (guard, _) = ready
                .wait_timeout_while(guard, config.meta_timeout, |s| s.meta.is_none())
                .expect("client lock");
            match &guard.meta {
                Some(meta) => (meta.control_rate_hz, meta.lockstep, meta.spec_json.clone()),
                None => {
                    drop(guard);
                    return Err(no_meta(connected(&session)));
                }
            }
        };
        let (rate, lockstep, spec_json) = meta;
        let spec: RobotSpec =
            serde_json::from_str(&spec_json).map_err(|e| ClientError::BadMeta {
                robot: keys.robot.clone(),
                reason: e.to_string(),
            })?;
        spec.validate().map_err(|e| ClientError::BadMeta {
            robot: keys.robot.clone(),
            reason: e.to_string(),
        })?;
        // Meta's rate sets command expiry (and pacing), the spec's rate is
        // the one the policy was trained at: they must be one rate.
        if !cerebellum_core::rates_match(rate, spec.control_rate_hz) {
            return Err(ClientError::RateMismatch {
                robot: keys.robot.clone(),
                meta_hz: rate,
                spec_hz: spec.control_rate_hz,
            });
        }
        if let Some(expected) = &config.expected_spec
            && let Some(difference) = spec_difference(expected, &spec)
        {
            return Err(ClientError::SpecMismatch {
                robot: keys.robot.clone(),
                difference,
            });
        }
        if lockstep {
            // A robot in lockstep speaks only when spoken to.
            shared.0.lock().expect("client lock").inbox.max_age = None;
        }
        Ok(Self {
            config,
            lockstep,
            period: 1.0 / rate,
            pacing: Pacing::new(rate.max(spec.control_rate_hz)),
            spec,
            episode_over: false,
            session,
            _subscriber: subscriber,
            shared,
            outbox: Outbox::default(),
            boot: boot_id(),
            episode: 0,
            instruction: None,
            policy_version: 0,
            lost: false,
        })
    }

    pub fn stats(&self) -> ClientStats {
        let shared = self.lock();
        let mut stats = shared.stats.clone();
        stats.inbox = shared.inbox.counters.clone();
        stats
    }

    /// The robot steps only on commands (`serve-sim --lockstep`).
    pub fn is_lockstep(&self) -> bool {
        self.lockstep
    }

    pub fn robot_id(&self) -> &str {
        &self.config.keys.robot
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.0.lock().expect("client lock")
    }

    fn send(&mut self, key: &str, body: Body) -> Result<u32, RobotError> {
        let seq = self.outbox.next_seq(key);
        let frame = Frame {
            header: Header {
                protocol: PROTOCOL_VERSION,
                robot: &self.config.keys.robot,
                boot: self.boot,
                seq,
                stamp: monotonic_now(),
            },
            body,
        };
        self.session
            .put(key, protocol::encode_to_vec(&frame))
            .congestion_control(zenoh::qos::CongestionControl::Drop)
            .priority(zenoh::qos::Priority::RealTime)
            .express(true)
            .wait()
            .map_err(|e| RobotError::Unavailable(format!("publish on {key}: {e}")))?;
        Ok(seq)
    }

    /// Waits until `done` holds or `timeout` passes.
    fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Shared) -> bool,
    ) -> Option<MutexGuard<'_, Shared>> {
        let (lock, ready) = &*self.shared;
        let guard = lock.lock().expect("client lock");
        let (guard, result) = ready
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .expect("client lock");
        (!result.timed_out()).then_some(guard)
    }

    /// Every camera's frame of the newest state has arrived (images follow
    /// their state on their own keys).
    fn frames_complete(&self, shared: &Shared) -> bool {
        let Some(state) = &shared.state else {
            return false;
        };
        self.spec.observation.cameras.iter().all(|camera| {
            shared
                .images
                .get(&camera.name)
                .is_some_and(|(seq, _)| *seq == state.seq)
        })
    }

    fn heard_recently(&self, shared: &Shared) -> bool {
        monotonic_now() - shared.last_heard <= self.config.lost_after.as_secs_f64()
    }

    fn observation(&self, shared: &Shared, state: &StateIn) -> Observation {
        let images = self
            .spec
            .observation
            .cameras
            .iter()
            .filter_map(|camera| shared.images.get(&camera.name).map(|(_, i)| i.clone()))
            .collect();
        Observation {
            state: state.values.clone(),
            images,
            instruction: self.instruction.clone(),
            timestamp: state.stamp,
        }
    }

    fn lost_error(&mut self) -> RobotError {
        if !self.lost {
            self.lost = true;
            self.lock().stats.lost += 1;
            tracing::warn!(robot = self.robot_id(), "robot lost: nothing heard");
        }
        RobotError::Unavailable(format!(
            "robot `{}` lost: nothing heard for over {:?}",
            self.config.keys.robot, self.config.lost_after
        ))
    }
}

/// Where the robot's spec differs from the expected one, in words; `None`
/// when it fits. The rule every path shares:
/// [`RobotSpec::check_compatible`] (exact equality, control rates within
/// `cerebellum_core::RATE_TOLERANCE`).
fn spec_difference(expected: &RobotSpec, found: &RobotSpec) -> Option<String> {
    expected
        .check_compatible(found)
        .err()
        .map(|m| m.to_string())
}

/// Folds the received events of `episode` into one step's outcome (rewards
/// summed, ends or-ed, the latest success) and drops them with those of
/// earlier episodes.
fn take_outcome(events: &mut Vec<EventIn>, episode: u32) -> StepOutcome {
    let mut outcome = StepOutcome::default();
    let mut reward = None;
    events.retain(|event| {
        if event.episode != episode {
            return event.episode > episode;
        }
        if let Some(r) = event.reward {
            *reward.get_or_insert(0.0) += r;
        }
        outcome.terminated |= event.terminated;
        outcome.truncated |= event.truncated;
        outcome.success = event.success.or(outcome.success);
        false
    });
    if let Some(r) = reward {
        outcome.rewards.set(RewardComponents::TASK, r);
    }
    // At the end, the outcome as a reward component too, as simulated
    // tasks give it.
    if let Some(success) = outcome.success.filter(|_| outcome.done()) {
        outcome
            .rewards
            .set(RewardComponents::SUCCESS, success as u8 as f32);
    }
    outcome
}

/// The subscriber's side: check one sample and update the shared state.
fn receive(shared: &Arc<(Mutex<Shared>, Condvar)>, hooks: &ClientHooks, key: &str, bytes: &[u8]) {
    let (lock, ready) = &**shared;
    let now = monotonic_now();
    let mut s = lock.lock().expect("client lock");
    let Some(frame) = s.inbox.accept(key, bytes, now) else {
        return;
    };
    let from_robot = !matches!(frame.body.kind(), Kind::Teleop | Kind::EStop | Kind::Reset);
    if from_robot {
        s.last_heard = now;
        if s.robot_boot.is_some_and(|boot| boot != frame.header.boot) {
            s.rebooted = true;
        }
        s.robot_boot = Some(frame.header.boot);
    }
    // The e-stop reaches the hook from the operator's frame or, when the
    // operator reaches only the robot (peers do not forward), from the
    // robot's own latch in its state; each change is reported once.
    let estop_change = match frame.body {
        Body::EStop(estop) => Some((estop.engaged, estop.reason.to_owned())),
        Body::State(state) => Some((state.estopped, "the robot reports its e-stop".to_owned())),
        Body::Heartbeat(beat) => Some((beat.estopped, "the robot reports its e-stop".to_owned())),
        _ => None,
    }
    .filter(|(engaged, _)| *engaged != s.estop);
    if let Some((engaged, _)) = &estop_change {
        s.estop = *engaged;
    }
    match frame.body {
        Body::State(state) => {
            s.stats.robot_holds += u64::from(state.holding);
            s.state = Some(StateIn {
                seq: frame.header.seq,
                stamp: frame.header.stamp,
                episode: state.episode,
                applied_command: state.applied_command,
                values: state.values.iter().collect(),
            });
        }
        Body::Image(image) => {
            let value = Image {
                camera: image.camera.to_owned(),
                height: image.height as u32,
                width: image.width as u32,
                channels: image.channels as u32,
                data: image.data.to_vec(),
            };
            s.images
                .insert(image.camera.to_owned(), (image.state_seq, value));
        }
        Body::Episode(event) => s.events.push(EventIn {
            episode: event.episode,
            reward: event.reward,
            terminated: event.terminated,
            truncated: event.truncated,
            success: event.success,
        }),
        Body::ResetAck(ack) => s.ack = Some((ack.episode, ack.instruction.to_owned())),
        Body::Meta(meta) => {
            s.meta = Some(MetaIn {
                control_rate_hz: meta.control_rate_hz as f64,
                lockstep: meta.lockstep,
                spec_json: meta.spec_json.to_owned(),
            })
        }
        Body::EStop(_) => {}
        Body::Teleop(teleop) => {
            let values: Vec<f32> = teleop.values.iter().collect();
            drop(s);
            if let Some(hook) = &hooks.on_teleop {
                hook(teleop.phase, &values);
            }
            return;
        }
        Body::Heartbeat(_) | Body::Reset(_) | Body::Command(_) => {}
    }
    drop(s);
    ready.notify_all();
    if let (Some((engaged, reason)), Some(hook)) = (estop_change, &hooks.on_estop) {
        hook(engaged, &reason);
    }
}

impl Robot for ZenohRobot {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }

    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        let episode = self.episode.wrapping_add(1);
        let key = self.config.keys.reset();
        self.send(
            &key,
            Body::Reset(Reset {
                episode,
                seed: request.seed,
            }),
        )?;
        let timeout = self.config.reply_timeout;
        let answer = self
            .wait_for(timeout, |s| {
                s.ack.as_ref().is_some_and(|(e, _)| *e == episode)
                    && s.state.as_ref().is_some_and(|st| st.episode == episode)
                    && self.frames_complete(s)
            })
            .map(|mut shared| {
                shared.events.retain(|e| e.episode > episode);
                let instruction = shared.ack.as_ref().map(|(_, i)| i.clone());
                (instruction, shared.state.clone().expect("waited for it"))
            });
        let Some((instruction, state)) = answer else {
            return Err(RobotError::Unavailable(format!(
                "robot `{}` did not acknowledge reset {episode} within {timeout:?}",
                self.config.keys.robot
            )));
        };
        self.episode = episode;
        self.episode_over = false;
        self.lost = false;
        // Whatever restarted before this reset, the episode starts on it.
        self.lock().rebooted = false;
        self.instruction = instruction.filter(|i| !i.is_empty());
        if self.spec.observation.instruction && self.instruction.is_none() {
            return Err(RobotError::Other(format!(
                "robot `{}` acknowledged the reset of episode {episode} with an empty instruction, but its spec says every observation carries one (ResetAck.instruction must be non-empty when the spec's `instruction` is true; docs/protocol.md)",
                self.config.keys.robot
            )));
        }
        let shared = self.lock();
        let observation = self.observation(&shared, &state);
        drop(shared);
        self.spec.observation.check(&observation).map_err(|e| {
            RobotError::Other(format!(
                "robot `{}`: the first state of episode {episode} breaks the robot's own spec: {e}",
                self.config.keys.robot
            ))
        })?;
        Ok(observation)
    }

    fn observe(&mut self) -> Result<Observation, RobotError> {
        let mut shared = self.lock();
        // A restart the silence did not reveal loses the episode all the
        // same: report it as lost (it is back, so the next apply cuts it).
        let rebooted = std::mem::take(&mut shared.rebooted);
        if rebooted {
            drop(shared);
            let error = self.lost_error();
            tracing::warn!(robot = self.robot_id(), "robot restarted: {error}");
            shared = self.lock();
        }
        if !self.heard_recently(&shared) || self.lost {
            drop(shared);
            return Err(self.lost_error());
        }
        let Some(state) = shared.state.clone() else {
            return Err(RobotError::Unavailable("no state received yet".into()));
        };
        if state.episode != self.episode {
            return Err(RobotError::Other(format!(
                "state of episode {} while in episode {}",
                state.episode, self.episode
            )));
        }
        let observation = self.observation(&shared, &state);
        drop(shared);
        if let Err(e) = self.spec.observation.check(&observation) {
            self.lock().stats.out_of_spec += 1;
            return Err(e.into());
        }
        Ok(observation)
    }

    /// Sends one command and returns what the robot reported since the
    /// previous one. Nothing is sent when the robot is lost, when the
    /// command breaks the action spec, when the robot has already reported
    /// the end of this episode (the apply returns that end), or, for a
    /// robot on its own clock, when commands come faster than its rate: a
    /// token bucket refilled at the control rate and holding two commands
    /// (a loop that ran one tick late may catch up once) refuses the excess
    /// with an error, counted in `ClientStats::commands_over_rate`.
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        if self.lost {
            let back = self.heard_recently(&self.lock());
            if !back {
                return Err(self.lost_error());
            }
            // The robot is back, but the episode in progress is gone (it
            // may have restarted): end it so the loop resets.
            self.lost = false;
            self.episode_over = true;
            self.lock().stats.recovered += 1;
            tracing::info!(robot = self.robot_id(), "robot back; episode cut");
            return Ok(StepOutcome {
                truncated: true,
                ..StepOutcome::default()
            });
        }
        let episode = self.episode;
        if self.episode_over {
            return Err(RobotError::Other(format!(
                "episode {episode} of robot `{}` has ended: reset it before commanding it",
                self.config.keys.robot
            )));
        }
        {
            // The robot closed the episode and said so: a command for it
            // would only be ignored. Hand the end to the caller instead.
            let mut shared = self.lock();
            let ended = shared
                .events
                .iter()
                .any(|e| e.episode == episode && (e.terminated || e.truncated));
            if ended {
                shared.stats.commands_after_end += 1;
                let outcome = take_outcome(&mut shared.events, episode);
                drop(shared);
                self.episode_over = true;
                return Ok(outcome);
            }
        }
        self.spec.action.check(command)?;
        if !self.lockstep && !self.pacing.take(monotonic_now()) {
            self.lock().stats.commands_over_rate += 1;
            return Err(RobotError::Other(format!(
                "command refused: it exceeds robot `{}`'s rate of {} Hz (more than {PACING_BURST} commands ahead of its clock); nothing was sent",
                self.config.keys.robot, self.spec.control_rate_hz
            )));
        }
        let robot_now = {
            let shared = self.lock();
            let stamp = shared.state.as_ref().map_or(0.0, |s| s.stamp);
            let now = shared.inbox.robot_now(monotonic_now()).unwrap_or(stamp);
            now.max(stamp)
        };
        let expires_at = robot_now + self.config.command_ttl_periods as f64 * self.period;
        let key = self.config.keys.command();
        let body = Body::Command(Command {
            episode,
            policy_version: self.policy_version,
            expires_at,
            values: Floats::Values(&command.values),
        });
        let seq = self.send(&key, body)?;
        let mut shared = if self.lockstep {
            let timeout = self.config.reply_timeout;
            match self.wait_for(timeout, |s| {
                s.state
                    .as_ref()
                    .is_some_and(|st| st.episode != episode || st.applied_command == seq)
                    && self.frames_complete(s)
            }) {
                Some(shared) => shared,
                None => {
                    return Err(RobotError::Unavailable(format!(
                        "robot `{}` did not step within {timeout:?}",
                        self.config.keys.robot
                    )));
                }
            }
        } else {
            self.lock()
        };
        shared.stats.commands_sent += 1;
        let outcome = take_outcome(&mut shared.events, episode);
        drop(shared);
        self.episode_over = outcome.done();
        Ok(outcome)
    }

    fn set_policy_version(&mut self, version: u64) {
        self.policy_version = version;
    }
}

impl Drop for ZenohRobot {
    fn drop(&mut self) {
        let _ = self.session.close().wait();
    }
}
