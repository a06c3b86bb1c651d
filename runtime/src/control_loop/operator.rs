//! The operator's inputs to a loop: the e-stop button and teleop
//! takeovers, fed from any thread; both are reward channels.

use cerebellum_core::Action;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The operator's e-stop: pressed and cleared from any thread (a teleop
/// console, a zenoh subscriber), acted on by the loop at its next tick. While
/// it is pressed the envelope's e-stop latch holds the measured pose.
#[derive(Clone, Debug, Default)]
pub struct EStopButton(Arc<AtomicBool>);

impl EStopButton {
    /// The reason the envelope's latch gives for an operator's stop.
    pub const REASON: &'static str = "operator e-stop";

    pub fn press(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The operator releases the stop; the robot moves again from the next
    /// tick.
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_pressed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reward of the `estop` component at the tick an operator's e-stop is
/// pressed (ALGORITHMS.md §3.4: e-stops are a reward channel like
/// interventions).
pub const ESTOP_PENALTY: f32 = -1.0;

/// Reward of the `intervention` component at the tick an operator takes
/// over (RLIF, ALGORITHMS.md §3.4); every other tick of a loop with a
/// teleop input carries 0.
pub const INTERVENTION_PENALTY: f32 = -1.0;

/// The teleoperator's takeover, fed from any thread (a zenoh subscriber, a
/// console). While it is active the operator's command replaces the
/// policy's (still through the envelope), the transitions are flagged as
/// interventions (demonstrations), and the takeover tick carries the
/// `intervention` reward.
#[derive(Clone, Debug, Default)]
pub struct TeleopInput(Arc<std::sync::Mutex<Takeover>>);

#[derive(Debug, Default)]
struct Takeover {
    active: bool,
    command: Option<Action>,
    /// The takeover has not been recorded yet.
    fresh: bool,
}

impl TeleopInput {
    fn lock(&self) -> std::sync::MutexGuard<'_, Takeover> {
        // A panicking writer leaves a consistent takeover behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator takes over, optionally with a first command.
    pub fn begin(&self, command: Option<Action>) {
        let mut t = self.lock();
        if !t.active {
            t.fresh = true;
        }
        t.active = true;
        if command.is_some() {
            t.command = command;
        }
    }

    /// The operator's command for the coming ticks (ignored unless a
    /// takeover is active).
    pub fn command(&self, command: Action) {
        let mut t = self.lock();
        if t.active {
            t.command = Some(command);
        }
    }

    /// The operator hands back to the policy.
    pub fn end(&self) {
        let mut t = self.lock();
        t.active = false;
        t.command = None;
    }

    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// The operator's command for this tick and whether the takeover
    /// begins at it; `None` when the policy has the arm.
    pub(super) fn poll(&self) -> Option<(Action, bool)> {
        let mut t = self.lock();
        let command = t.command.clone().filter(|_| t.active)?;
        Some((command, std::mem::take(&mut t.fresh)))
    }
}
