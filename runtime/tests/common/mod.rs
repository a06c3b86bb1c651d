//! Helpers the loop and actor/learner tests share.

use cerebellum_core::Transition;
use cerebellum_sim::{ArmModel, ArmOptions};
use std::sync::Arc;

pub fn so101() -> Arc<ArmModel> {
    ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
}

/// Wall-clock fields aside, the transition log as bytes.
pub fn log_bytes(log: &[Transition]) -> Vec<u8> {
    let mut log = log.to_vec();
    for t in &mut log {
        t.wall_time = 0.0;
    }
    serde_json::to_vec(&log).unwrap()
}
