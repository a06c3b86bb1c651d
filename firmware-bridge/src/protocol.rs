//! The wire protocol between the runtime and a robot: message types, their
//! encoding, and the checks every received frame passes before anything
//! uses it.
//!
//! A frame is a [`Header`] followed by one [`Body`], encoded with postcard
//! (little-endian floats, LEB128 varints for integers and lengths; the byte
//! layout of every message is in docs/protocol.md). Frames borrow their
//! strings, bytes and float arrays from the received buffer, so decoding
//! allocates nothing and this module builds without `std` or `alloc` for
//! firmware.
//!
//! Bad input is expected here: [`decode`] rejects truncated and malformed
//! bytes, an unknown protocol version and non-finite or nonsensical values
//! with a typed [`DecodeError`]; [`SequenceGuard`] and [`ClockOffset`]
//! reject frames that arrive out of order or too late.

use core::fmt;
use serde::de::{self, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version this build speaks; a frame with any other is refused whole.
pub const PROTOCOL_VERSION: u16 = 1;

/// Most floats one message may carry (joint values plus task fields).
pub const MAX_VALUES: usize = 256;

/// Largest camera side in pixels and most channels.
pub const MAX_IMAGE_SIDE: u16 = 4096;
pub const MAX_IMAGE_CHANNELS: u8 = 4;

/// Fields every frame starts with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// [`PROTOCOL_VERSION`] of the sender; the first bytes of every frame.
    pub protocol: u16,
    /// The robot the frame is from or for.
    pub robot: &'a str,
    /// Changes whenever the sender restarts (a random number or a boot
    /// counter): the receiver then forgets the sender's sequence numbers and
    /// clock offset.
    pub boot: u32,
    /// Per sender and key, +1 per frame (wrapping): a frame whose number is
    /// not newer than the last accepted one is dropped.
    pub seq: u32,
    /// Seconds on the sender's monotonic clock when the frame was sent.
    pub stamp: f64,
}

/// Little-endian `f32`s, borrowed from the received bytes (`Wire`) or from
/// the sender's slice (`Values`). On the wire: a varint byte count (4 per
/// value) followed by the values.
#[derive(Clone, Copy)]
pub enum Floats<'a> {
    Wire(&'a [u8]),
    Values(&'a [f32]),
}

impl<'a> Floats<'a> {
    pub fn len(&self) -> usize {
        match self {
            Floats::Wire(bytes) => bytes.len() / 4,
            Floats::Values(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Floats::Wire(bytes) => bytes
                .get(4 * i..4 * i + 4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Floats::Values(values) => values.get(i).copied(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Copies the values into `out` (which must be exactly as long).
    pub fn copy_to(&self, out: &mut [f32]) -> bool {
        if out.len() != self.len() {
            return false;
        }
        for (o, v) in out.iter_mut().zip(self.iter()) {
            *o = v;
        }
        true
    }

    fn byte_len(&self) -> usize {
        match self {
            Floats::Wire(bytes) => bytes.len(),
            Floats::Values(values) => 4 * values.len(),
        }
    }
}

impl fmt::Debug for Floats<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Floats<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.byte_len() == other.byte_len()
            && self
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Serialize for Floats<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Floats::Wire(bytes) => serializer.serialize_bytes(bytes),
            // A sequence of u8 is laid out exactly like bytes in postcard
            // (length, then the raw bytes), without needing a buffer.
            Floats::Values(values) => {
                let mut seq = serializer.serialize_seq(Some(4 * values.len()))?;
                for value in *values {
                    for byte in value.to_le_bytes() {
                        seq.serialize_element(&byte)?;
                    }
                }
                seq.end()
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Floats<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor<'a>(core::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for BytesVisitor<'a> {
            type Value = Floats<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("little-endian f32 bytes")
            }
            fn visit_borrowed_bytes<E: de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(Floats::Wire(bytes))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor(core::marker::PhantomData))
    }
}

/// What the robot measured: the observation spec's fields, concatenated in
/// the spec's order (joint positions, velocities, efforts, task fields such
/// as a reach target).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct State<'a> {
    /// The episode the robot is in (the one of the last `Reset` it acked).
    pub episode: u32,
    /// Sequence number of the last command the robot applied this episode
    /// (0: none).
    pub applied_command: u32,
    /// The robot held position on its own at this step (no command, an
    /// expired one, or its e-stop latched).
    pub holding: bool,
    /// The robot's own e-stop latch is set.
    pub estopped: bool,
    #[serde(borrow)]
    pub values: Floats<'a>,
}

/// Pixel encodings a camera frame may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageEncoding {
    /// H×W×C bytes, row-major, channels last (RGB for C = 3).
    Raw8,
}

/// One camera frame, on the camera's own key.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image<'a> {
    pub camera: &'a str,
    /// Sequence number of the `State` frame taken at the same instant.
    pub state_seq: u32,
    /// Robot clock when the frame was exposed.
    pub taken_at: f64,
    pub height: u16,
    pub width: u16,
    pub channels: u8,
    pub encoding: ImageEncoding,
    pub data: &'a [u8],
}

/// Joint targets for one tick, already through the runtime's envelope.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command<'a> {
    pub episode: u32,
    /// Version of the policy weights that planned it.
    pub policy_version: u64,
    /// Robot clock time after which the robot must not apply it (it holds
    /// position instead).
    pub expires_at: f64,
    #[serde(borrow)]
    pub values: Floats<'a>,
}

/// Start episode `episode` from the task instance `seed` names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    pub episode: u32,
    pub seed: u64,
}

/// The robot started the episode; its first `State` follows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResetAck<'a> {
    pub episode: u32,
    pub seed: u64,
    pub task_instance: u64,
    /// The task instruction in words (empty when the task has none).
    pub instruction: &'a str,
}

/// What the robot knows about the step a command was applied in.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeEvent {
    pub episode: u32,
    pub applied_command: u32,
    /// Ground-truth reward of the step (simulated robots; real firmware
    /// sends `None`).
    pub reward: Option<f32>,
    pub terminated: bool,
    pub truncated: bool,
    pub success: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeleopPhase {
    /// The operator takes over; `values` is their first command.
    Begin,
    /// The operator's command for this tick.
    Command,
    /// The operator hands back to the policy.
    End,
}

/// The teleoperator's side: takeovers and their commands (action spec
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Teleop<'a> {
    pub phase: TeleopPhase,
    #[serde(borrow)]
    pub values: Floats<'a>,
}

/// Set or clear the e-stop. The robot latches it itself; only an explicit
/// clear releases it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EStop<'a> {
    pub engaged: bool,
    pub reason: &'a str,
}

/// The robot is alive; sent at a fixed rate even when nothing moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub episode: u32,
    pub estopped: bool,
}

/// What the robot is: its spec (the `RobotSpec` as JSON: fields, units,
/// limits, cameras), control rate and command timeout.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta<'a> {
    pub control_rate_hz: f32,
    /// The robot holds position when no command arrived for this long.
    pub command_timeout_s: f32,
    /// Steps only when a command arrives (simulated robots in lockstep).
    pub lockstep: bool,
    pub spec_json: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body<'a> {
    #[serde(borrow)]
    State(State<'a>),
    #[serde(borrow)]
    Image(Image<'a>),
    #[serde(borrow)]
    Command(Command<'a>),
    Reset(Reset),
    #[serde(borrow)]
    ResetAck(ResetAck<'a>),
    Episode(EpisodeEvent),
    #[serde(borrow)]
    Teleop(Teleop<'a>),
    #[serde(borrow)]
    EStop(EStop<'a>),
    Heartbeat(Heartbeat),
    #[serde(borrow)]
    Meta(Meta<'a>),
}

/// The kinds of body, for checking that a key carries what it should.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    State,
    Image,
    Command,
    Reset,
    ResetAck,
    Episode,
    Teleop,
    EStop,
    Heartbeat,
    Meta,
}

impl Body<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Body::State(_) => Kind::State,
            Body::Image(_) => Kind::Image,
            Body::Command(_) => Kind::Command,
            Body::Reset(_) => Kind::Reset,
            Body::ResetAck(_) => Kind::ResetAck,
            Body::Episode(_) => Kind::Episode,
            Body::Teleop(_) => Kind::Teleop,
            Body::EStop(_) => Kind::EStop,
            Body::Heartbeat(_) => Kind::Heartbeat,
            Body::Meta(_) => Kind::Meta,
        }
    }
}

/// One message on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// Why a received frame was refused. Nothing refused reaches the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the frame does.
    Truncated,
    /// The bytes are not a frame (a varint that overflows its type or is
    /// not in its shortest form, unknown message tag, invalid UTF-8, a bool
    /// that is neither 0 nor 1, …).
    Malformed,
    /// Bytes left over after a complete frame.
    TrailingBytes {
        count: usize,
    },
    UnknownVersion {
        found: u16,
    },
    /// A float that is NaN or infinite.
    NotFinite {
        field: &'static str,
    },
    /// A value outside what the protocol allows (a negative time, a float
    /// array whose byte count is not a multiple of 4, an image whose size
    /// does not match its data, more than `MAX_VALUES` floats).
    OutOfRange {
        field: &'static str,
    },
    /// A sequence number not newer than the last accepted one.
    Reordered {
        last: u32,
        found: u32,
    },
    /// Sent longer ago than the receiver accepts (seconds, after the clock
    /// offset).
    Stale {
        age_ms: u32,
    },
}

impl DecodeError {
    /// A stable name, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::Malformed => "malformed",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::UnknownVersion { .. } => "unknown_version",
            DecodeError::NotFinite { .. } => "not_finite",
            DecodeError::OutOfRange { .. } => "out_of_range",
            DecodeError::Reordered { .. } => "reordered",
            DecodeError::Stale { .. } => "stale",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("frame truncated"),
            DecodeError::Malformed => f.write_str("malformed frame"),
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} bytes after the end of the frame")
            }
            DecodeError::UnknownVersion { found } => write!(
                f,
                "protocol version {found}, this build speaks {PROTOCOL_VERSION}"
            ),
            DecodeError::NotFinite { field } => write!(f, "`{field}` is not finite"),
            DecodeError::OutOfRange { field } => write!(f, "`{field}` is out of range"),
            DecodeError::Reordered { last, found } => write!(
                f,
                "sequence number {found} is not newer than the last accepted {last}"
            ),
            DecodeError::Stale { age_ms } => write!(f, "frame is {age_ms} ms old"),
        }
    }
}

/// Decodes and checks one frame. The version is read first, so a frame of
/// another version is reported as such even when its layout changed. Only
/// the one encoding [`encode`] writes is accepted: a varint padded with
/// continuation bytes (`80 00` for 0) is malformed.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let version = match postcard::take_from_bytes::<u16>(bytes) {
        Ok((version, rest)) if bytes.len() - rest.len() == varint_len(version.into()) => version,
        Ok(_) => return Err(DecodeError::Malformed),
        Err(postcard::Error::DeserializeUnexpectedEnd) => return Err(DecodeError::Truncated),
        Err(_) => return Err(DecodeError::Malformed),
    };
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    })?;
    // postcard reads a varint padded with continuation bytes (`80 00` for
    // 0) as its value. Every other part of a frame has exactly one
    // encoding and the encoder writes every varint in its shortest form,
    // so a frame read from more bytes than it encodes to held an
    // over-long varint: refused, so that each frame has one encoding.
    if encoded_len(&frame) != bytes.len() - rest.len() {
        return Err(DecodeError::Malformed);
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    frame.validate()?;
    Ok(frame)
}

/// Bytes of the shortest LEB128 varint of `value` (1 for 0..=127).
const fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// How many bytes [`encode`] writes for `frame` (to size a buffer).
pub fn encoded_len(frame: &Frame) -> usize {
    postcard::serialize_with_flavor(frame, postcard::ser_flavors::Size::default())
        .expect("counting bytes cannot fail")
}

/// Encodes a frame into `buffer`, returning the used part.
pub fn encode<'b>(frame: &Frame, buffer: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
    postcard::to_slice(frame, buffer)
}

#[cfg(feature = "std")]
pub fn encode_to_vec(frame: &Frame) -> Vec<u8> {
    postcard::to_stdvec(frame).expect("frames always serialise")
}

fn finite(field: &'static str, value: f64) -> Result<(), DecodeError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DecodeError::NotFinite { field })
    }
}

fn time(field: &'static str, value: f64) -> Result<(), DecodeError> {
    finite(field, value)?;
    if value < 0.0 {
        return Err(DecodeError::OutOfRange { field });
    }
    Ok(())
}

fn floats(field: &'static str, values: &Floats) -> Result<(), DecodeError> {
    if !values.byte_len().is_multiple_of(4) || values.len() > MAX_VALUES {
        return Err(DecodeError::OutOfRange { field });
    }
    if values.iter().all(f32::is_finite) {
        Ok(())
    } else {
        Err(DecodeError::NotFinite { field })
    }
}

impl Frame<'_> {
    /// The checks a frame passes whatever its key: finite numbers, sane
    /// sizes, times that are not negative. Fields are checked in wire
    /// order (the header's stamp first) and the first failure is
    /// returned; within a field, a time is checked for being finite
    /// before its sign, a float array for its size before its values.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.header.protocol != PROTOCOL_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: self.header.protocol,
            });
        }
        time("header.stamp", self.header.stamp)?;
        match &self.body {
            Body::State(state) => floats("state.values", &state.values),
            Body::Image(image) => {
                time("image.taken_at", image.taken_at)?;
                let expected =
                    image.height as usize * image.width as usize * image.channels as usize;
                if image.height == 0
                    || image.width == 0
                    || image.height > MAX_IMAGE_SIDE
                    || image.width > MAX_IMAGE_SIDE
                    || image.channels == 0
                    || image.channels > MAX_IMAGE_CHANNELS
                    || image.data.len() != expected
                {
                    return Err(DecodeError::OutOfRange {
                        field: "image.data",
                    });
                }
                Ok(())
            }
            Body::Command(command) => {
                time("command.expires_at", command.expires_at)?;
                floats("command.values", &command.values)
            }
            Body::Teleop(teleop) => floats("teleop.values", &teleop.values),
            Body::Episode(event) => match event.reward {
                Some(r) if !r.is_finite() => Err(DecodeError::NotFinite {
                    field: "episode.reward",
                }),
                _ => Ok(()),
            },
            Body::Meta(meta) => {
                finite("meta.control_rate_hz", meta.control_rate_hz as f64)?;
                if meta.control_rate_hz <= 0.0 || meta.control_rate_hz > 100_000.0 {
                    return Err(DecodeError::OutOfRange {
                        field: "meta.control_rate_hz",
                    });
                }
                finite("meta.command_timeout_s", meta.command_timeout_s as f64)?;
                if meta.command_timeout_s <= 0.0 {
                    return Err(DecodeError::OutOfRange {
                        field: "meta.command_timeout_s",
                    });
                }
                Ok(())
            }
            Body::Reset(_) | Body::ResetAck(_) | Body::EStop(_) | Body::Heartbeat(_) => Ok(()),
        }
    }
}

/// Sequence numbers of one sender on one key: accepts only frames newer than
/// the last accepted one (serial-number arithmetic, so the counter may
/// wrap), and starts over when the sender's `boot` changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SequenceGuard {
    last: Option<(u32, u32)>,
}

impl SequenceGuard {
    pub fn admit(&mut self, header: &Header) -> Result<(), DecodeError> {
        if let Some((boot, last)) = self.last
            && boot == header.boot
            && (header.seq.wrapping_sub(last) as i32) <= 0
        {
            return Err(DecodeError::Reordered {
                last,
                found: header.seq,
            });
        }
        self.last = Some((header.boot, header.seq));
        Ok(())
    }

    pub fn last(&self) -> Option<u32> {
        self.last.map(|(_, seq)| seq)
    }
}

/// Samples in the clock-offset window.
const OFFSET_WINDOW: usize = 64;

/// The offset between the sender's clock and ours, estimated from the
/// frames themselves: `local_receive_time − sender_stamp` is the offset
/// plus the transit delay, so the smallest value over the last
/// `OFFSET_WINDOW` frames estimates the offset plus the smallest delay. A
/// frame's age is how much longer it took than that best case; a frame
/// older than `max_age` is stale. The window lets the estimate follow clock
/// drift, and a change of the sender's `boot` clears it.
#[derive(Clone, Copy, Debug)]
pub struct ClockOffset {
    samples: [f64; OFFSET_WINDOW],
    count: usize,
    next: usize,
    boot: Option<u32>,
}

impl Default for ClockOffset {
    fn default() -> Self {
        Self {
            samples: [0.0; OFFSET_WINDOW],
            count: 0,
            next: 0,
            boot: None,
        }
    }
}

impl ClockOffset {
    /// Records a frame received at `local_now` (our seconds) and returns its
    /// age in seconds (0 for the fastest frame in the window).
    pub fn observe(&mut self, header: &Header, local_now: f64) -> f64 {
        if self.boot != Some(header.boot) {
            *self = Self {
                boot: Some(header.boot),
                ..Self::default()
            };
        }
        self.samples[self.next] = local_now - header.stamp;
        self.next = (self.next + 1) % OFFSET_WINDOW;
        self.count = (self.count + 1).min(OFFSET_WINDOW);
        let offset = self.offset().unwrap_or(0.0);
        (local_now - header.stamp - offset).max(0.0)
    }

    /// `local − sender` clock offset (including the smallest transit delay).
    pub fn offset(&self) -> Option<f64> {
        (self.count > 0).then(|| {
            self.samples[..self.count]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
        })
    }

    /// The sender's clock now, from ours.
    pub fn sender_now(&self, local_now: f64) -> Option<f64> {
        self.offset().map(|offset| local_now - offset)
    }

    /// Checks a frame's age against `max_age` (seconds).
    pub fn admit(
        &mut self,
        header: &Header,
        local_now: f64,
        max_age: f64,
    ) -> Result<(), DecodeError> {
        let age = self.observe(header, local_now);
        if age > max_age {
            return Err(DecodeError::Stale {
                age_ms: (age * 1000.0).min(u32::MAX as f64) as u32,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
