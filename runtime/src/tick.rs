//! The stages of one control tick, shared by training rollouts and the
//! control loop: observe → infer → send → record. Training runs them over a
//! batch of simulated robots under `SimClock`; the loop wraps the same
//! functions with the wall clock, deadlines and the safety envelope. There
//! is no second rollout path.

use cerebellum_core::{
    Action, Observation, Policy, PolicyError, PolicyOutput, Provenance, RobotSpec, Sampling,
    StepOutcome, Transition,
};

/// infer: one chunk per observation, checked against the action spec before
/// anything downstream sees it.
pub fn infer(
    policy: &mut dyn Policy,
    spec: &RobotSpec,
    observations: &[Observation],
    sampling: Sampling,
) -> Result<Vec<PolicyOutput>, PolicyError> {
    let outputs = policy.act(observations, sampling)?;
    if outputs.len() != observations.len() {
        return Err(PolicyError::Other(format!(
            "policy answered {} observations with {} chunks",
            observations.len(),
            outputs.len()
        )));
    }
    for output in &outputs {
        if output.chunk.is_empty() {
            return Err(PolicyError::Other("policy returned an empty chunk".into()));
        }
        spec.action
            .check_chunk(&output.chunk)
            .map_err(PolicyError::Action)?;
    }
    Ok(outputs)
}

/// The command for this tick from a chunk: its first action (chunk
/// alignment and hold-on-miss live in the control loop).
pub fn command(output: &PolicyOutput) -> &Action {
    &output.chunk.actions[0]
}

/// record: one transition with its provenance and every reward component.
/// `policy_action` is what the policy chose (what `log_prob` refers to),
/// `sent` what the robot received.
pub fn record(
    provenance: Provenance,
    observation: Observation,
    policy_action: Action,
    log_prob: Option<f32>,
    sent: Action,
    outcome: &StepOutcome,
    wall_time: f64,
) -> Transition {
    Transition {
        provenance,
        sim_time: observation.timestamp,
        wall_time,
        observation,
        policy_action,
        sent_command: sent,
        behaviour_log_prob: log_prob,
        chunk_index: 0,
        intervention: false,
        safety_clamped: false,
        rewards: outcome.rewards.clone(),
        terminated: outcome.terminated,
        truncated: outcome.truncated,
        success: outcome.success.filter(|_| outcome.done()),
        stage: None,
        reward_version: None,
    }
}

/// Seconds since the Unix epoch.
pub fn wall_clock_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
