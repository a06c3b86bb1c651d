//! Versioned weights a learner publishes and loops pick up between ticks
//! without locking.

use arc_swap::ArcSwap;
use cerebellum_core::Policy;
use std::sync::Arc;

/// Versioned weights published by a learner; readers never block writers.
pub struct PolicySlot<P> {
    current: ArcSwap<P>,
}

/// Weights that can say whether they are fit to publish.
pub trait CheckedWeights {
    /// Every weight finite (a learner that diverged produces NaN).
    fn weights_finite(&self) -> bool;
}

impl CheckedWeights for cerebellum_policies::GaussianMlpPolicy {
    fn weights_finite(&self) -> bool {
        self.is_finite()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "refused weights with non-finite values (version {0}); the loop keeps the last good ones"
    )]
    NonFinite(u64),
    #[error("refused weights of version {new}: not newer than the published {current}")]
    NotNewer { new: u64, current: u64 },
}

impl<P: Policy + CheckedWeights> PolicySlot<P> {
    pub fn new(policy: P) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(policy),
        })
    }

    /// Makes `policy` the one loops pick up next, if its weights are finite
    /// and its version newer.
    pub fn publish(&self, policy: P) -> Result<(), PublishError> {
        if !policy.weights_finite() {
            return Err(PublishError::NonFinite(policy.version()));
        }
        let current = self.version();
        if policy.version() <= current {
            return Err(PublishError::NotNewer {
                new: policy.version(),
                current,
            });
        }
        self.current.store(Arc::new(policy));
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.current.load().version()
    }

    pub fn load(&self) -> Arc<P> {
        self.current.load_full()
    }
}
