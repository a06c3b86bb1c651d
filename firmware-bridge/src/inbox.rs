//! Where bad input arrives: every received sample goes through
//! [`Inbox::accept`] (decode, key/kind match, robot id, sequence order,
//! age) and is either handed on as a checked frame or counted by the reason
//! it was refused. Nothing refused reaches the loop.

use crate::keys::RobotKeys;
use crate::protocol::{self, ClockOffset, DecodeError, Frame, Kind, SequenceGuard};
use std::collections::{BTreeMap, HashMap};

/// Refusals by reason (`DecodeError::name`, plus `wrong_key` and
/// `wrong_robot`), and how many frames were accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InboxCounters {
    pub accepted: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

impl InboxCounters {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected.get(reason).copied().unwrap_or(0)
    }
}

/// Decoding state of one receiver: sequence guards per key, sender and
/// message kind, and
/// the clock offset of the robot.
pub struct Inbox {
    keys: RobotKeys,
    /// Per key, then per (sender boot, kind): keyed by key first so that a
    /// frame on a known key allocates nothing.
    sequences: HashMap<String, HashMap<(u32, Kind), SequenceGuard>>,
    clock: ClockOffset,
    /// Frames of these kinds older than this (seconds) are stale; `None`
    /// skips the age check (a robot in lockstep only speaks when spoken to).
    pub max_age: Option<f64>,
    /// The kinds whose age is checked (what the robot sends periodically).
    pub aged_kinds: &'static [Kind],
    pub counters: InboxCounters,
}

impl Inbox {
    pub fn new(keys: RobotKeys, max_age: Option<f64>, aged_kinds: &'static [Kind]) -> Self {
        Self {
            keys,
            sequences: HashMap::new(),
            clock: ClockOffset::default(),
            max_age,
            aged_kinds,
            counters: InboxCounters::default(),
        }
    }

    fn refuse(&mut self, reason: &'static str, key: &str, detail: &dyn std::fmt::Display) {
        *self.counters.rejected.entry(reason).or_insert(0) += 1;
        tracing::debug!(key, reason, "refused a frame: {detail}");
    }

    /// Checks one sample received on `key` at `local_now` (seconds on this
    /// process's monotonic clock).
    pub fn accept<'a>(&mut self, key: &str, bytes: &'a [u8], local_now: f64) -> Option<Frame<'a>> {
        let frame = match protocol::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.refuse(e.name(), key, &e);
                return None;
            }
        };
        let kind = frame.body.kind();
        if !self.keys.kinds_on(key).contains(&kind) {
            self.refuse("wrong_key", key, &format_args!("{kind:?} on this key"));
            return None;
        }
        if frame.header.robot != self.keys.robot {
            let robot = frame.header.robot;
            self.refuse(
                "wrong_robot",
                key,
                &format_args!("frame names robot `{robot}`"),
            );
            return None;
        }
        if !self.sequences.contains_key(key) {
            self.sequences.insert(key.to_owned(), HashMap::new());
        }
        let guard = self
            .sequences
            .get_mut(key)
            .expect("inserted above")
            .entry((frame.header.boot, kind))
            .or_default();
        if let Err(e) = guard.admit(&frame.header) {
            self.refuse(e.name(), key, &e);
            return None;
        }
        if self.aged_kinds.contains(&kind) {
            let check = match self.max_age {
                Some(max_age) => self.clock.admit(&frame.header, local_now, max_age),
                None => {
                    self.clock.observe(&frame.header, local_now);
                    Ok(())
                }
            };
            if let Err(e @ DecodeError::Stale { .. }) = check {
                self.refuse(e.name(), key, &e);
                return None;
            }
        }
        self.counters.accepted += 1;
        Some(frame)
    }

    /// The robot's clock now, estimated from its frames.
    pub fn robot_now(&self, local_now: f64) -> Option<f64> {
        self.clock.sender_now(local_now)
    }
}

/// Numbers outgoing frames of one key: `seq` +1 per frame.
#[derive(Debug, Default)]
pub struct Outbox {
    seqs: HashMap<String, u32>,
}

impl Outbox {
    pub fn next_seq(&mut self, key: &str) -> u32 {
        let seq = self.seqs.entry(key.to_owned()).or_insert(0);
        *seq = seq.wrapping_add(1);
        *seq
    }
}
