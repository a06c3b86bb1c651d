//! Where a loop's transitions go: a file, a learner, a test's vector.

use cerebellum_core::Transition;
use crossbeam_channel::{Sender, TrySendError};

/// Where recorded transitions go: a file, a learner, a test's vector.
pub trait TransitionSink {
    /// Takes one transition; returns false when it had to drop it.
    fn push(&mut self, transition: Transition) -> bool;
}

impl TransitionSink for Vec<Transition> {
    fn push(&mut self, transition: Transition) -> bool {
        Vec::push(self, transition);
        true
    }
}

impl<T: TransitionSink + ?Sized> TransitionSink for &mut T {
    fn push(&mut self, transition: Transition) -> bool {
        (**self).push(transition)
    }
}

/// Hands every transition to both sinks (a learner and a recorder); it
/// counts as dropped when either dropped it.
pub struct Tee<A, B>(pub A, pub B);

impl<A: TransitionSink, B: TransitionSink> TransitionSink for Tee<A, B> {
    fn push(&mut self, transition: Transition) -> bool {
        let first = self.0.push(transition.clone());
        self.1.push(transition) && first
    }
}

/// Discards everything (`cerebellum run` without `--record`).
pub struct NoSink;

impl TransitionSink for NoSink {
    fn push(&mut self, _: Transition) -> bool {
        true
    }
}

/// A bounded channel to a learner: when it is full the loop drops the
/// transition and counts it (wall time), or waits (`blocking`, lockstep
/// under simulated time).
pub struct ChannelSink {
    pub sender: Sender<Transition>,
    pub blocking: bool,
}

impl TransitionSink for ChannelSink {
    fn push(&mut self, transition: Transition) -> bool {
        if self.blocking {
            return self.sender.send(transition).is_ok();
        }
        match self.sender.try_send(transition) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}
