//! Where a tick's chunk comes from: the loop's own thread, or a worker
//! thread the loop never waits on past its deadline.

use super::slot::{CheckedWeights, PolicySlot};
use cerebellum_core::{Observation, Policy, PolicyOutput, Sampling};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request to the inference worker: the observation of one tick.
pub(super) struct InferenceRequest {
    pub(super) tick: u64,
    pub(super) observation: Observation,
    pub(super) sampling: Sampling,
}

pub(super) struct InferenceAnswer {
    pub(super) tick: u64,
    pub(super) version: u64,
    pub(super) output: Result<PolicyOutput, String>,
    pub(super) delay: Duration,
}

/// Runs the policy on its own thread; the loop hands it the newest
/// observation and never waits past its deadline.
pub struct InferenceWorker {
    pub(super) requests: Sender<InferenceRequest>,
    pub(super) answers: Receiver<InferenceAnswer>,
    pub(super) busy: bool,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl InferenceWorker {
    pub fn spawn<P: Policy + CheckedWeights + Clone + Send + Sync + 'static>(
        slot: Arc<PolicySlot<P>>,
    ) -> Self {
        let (requests, inbox) = crossbeam_channel::bounded::<InferenceRequest>(1);
        let (outbox, answers) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                let mut policy = (*slot.load()).clone();
                for request in inbox {
                    if slot.version() != policy.version() {
                        policy = (*slot.load()).clone();
                    }
                    let started = Instant::now();
                    let output = policy
                        .act(std::slice::from_ref(&request.observation), request.sampling)
                        .map_err(|e| e.to_string())
                        .and_then(|mut o| o.pop().ok_or_else(|| "no answer".to_owned()));
                    let answer = InferenceAnswer {
                        tick: request.tick,
                        version: policy.version(),
                        output,
                        delay: started.elapsed(),
                    };
                    if outbox.send(answer).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the inference thread");
        Self {
            requests,
            answers,
            busy: false,
            handle: Some(handle),
        }
    }

    /// Hands the worker `request` unless it is still answering the last
    /// one (one request in flight at a time); whether it was sent.
    pub(super) fn request(&mut self, request: InferenceRequest) -> bool {
        if self.busy {
            return false;
        }
        self.busy = self.requests.send(request).is_ok();
        self.busy
    }

    /// The answer, when it has come; never waits.
    pub(super) fn poll(&mut self) -> Option<InferenceAnswer> {
        let answer = self.answers.try_recv().ok();
        self.busy &= answer.is_none();
        answer
    }

    /// The answer, waiting for it at most `timeout` (`None`: for as long
    /// as it takes).
    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> Option<InferenceAnswer> {
        let answer = match timeout {
            None => self.answers.recv().ok(),
            Some(left) => self.answers.recv_timeout(left).ok(),
        };
        self.busy &= answer.is_none();
        answer
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        // Closing the request channel ends the worker's loop.
        let (closed, _) = crossbeam_channel::bounded(0);
        self.requests = closed;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Where a tick's chunk comes from.
pub enum Inference<P> {
    /// On the loop's thread: its own copy of the newest snapshot.
    Inline {
        slot: Arc<PolicySlot<P>>,
        policy: P,
    },
    Worker(InferenceWorker),
}

impl<P: Policy + CheckedWeights + Clone + Send + Sync + 'static> Inference<P> {
    pub fn inline(slot: Arc<PolicySlot<P>>) -> Self {
        let policy = (*slot.load()).clone();
        Self::Inline { slot, policy }
    }

    pub fn worker(slot: Arc<PolicySlot<P>>) -> Self {
        Self::Worker(InferenceWorker::spawn(slot))
    }
}
