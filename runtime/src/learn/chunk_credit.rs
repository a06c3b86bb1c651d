//! Chunk-aware credit assignment: a policy that plans a chunk of H actions
//! from one observation makes one *decision* per chunk, not one per tick
//! (issue 18, "Chunks as actions"; ALGORITHMS.md §2 "Chunks as actions").
//!
//! A **chunk step** (a decision) is a maximal run of consecutive ticks of one
//! env whose actions come from one plan: `chunk_index` goes k, k+1, k+2, …
//! It ends
//! - at the tick before the next plan (`chunk_index` ≠ previous + 1),
//! - at an episode end (terminated or truncated; that tick is included),
//! - at a safety clamp (included: the policy's action was proposed and ran
//!   clamped, and the loop replans),
//! - before an operator takeover: an `intervention` tick is not a policy
//!   action and belongs to no step (it is a demonstration for other learners),
//! - before an invalid tick (`valid[row] == false`), which belongs to no step.
//!
//! Its credited actions are exactly the m ticks that ran, chunk indices
//! `first_index` … `first_index + m − 1`. A chunk planned from the
//! observation of tick t_obs runs its action k at tick t_obs + k, so the
//! step's state s_i is the observation of its **plan tick**, `first_index`
//! ticks before its first tick (same env, same episode, inside the rollout,
//! valid); a step whose plan tick is not there cannot be re-evaluated and is
//! dropped (its ticks counted in `dropped_ticks`).
//!
//! Per step i, over its executed ticks t … t+m−1 (SMDP / options discounting,
//! Sutton, Precup & Singh 1999):
//!
//!   R_i = Σ_{j<m} γ^j r_{t+j}          discount to the next decision: γ^m
//!   δ_i = R_i + γ^m · V(s'_i) · (1 − terminated_i) − V(s_i)
//!   A_i = δ_i + γ^m · λ · (1 − ended_i) · A_{i+1}        returns = A + V
//!
//! s'_i is the next observation of the step's last tick; terminated_i and
//! ended_i are that tick's flags. Steps of one env are taken in time order;
//! the recursion stops where a step ends its episode, and is cut (ended, not
//! terminated: bootstrapping from V(s'_i) as a time limit does) where the
//! next step of its env does not start at the very next tick (takeover,
//! invalid tick or dropped step in between). With m = 1 everywhere this is
//! `advantage::gae` (tested bit for bit).
//!
//! Invalid ticks are handled as `trainer::gae_batch` handles invalid rows:
//! left out, and the step ending on the tick just before one (unless it ends
//! its episode) is cut with `ended = true, terminated = false` and bootstraps
//! from its own value, V(s'_i) := V(s_i) (`bootstrap_self`), since the
//! observation that followed it is the invalid one.
//!
//! With latency (k > 0) s_{i+1} is the plan observation, a few ticks older
//! than s'_i; the recursion chains them as the loop does when it acts.
//! The data cannot tell a hold (the loop sent no plan: `chunk_index` 0, no
//! log-probability) from a one-tick plan; a hold reads as a plan of its own.

use cerebellum_core::Transition;

/// One decision: the ticks one plan ran, credited together.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkStep {
    pub env: usize,
    /// Time-major row of the plan tick: its observation is the step's state.
    pub plan_row: usize,
    /// The executed ticks, time-major rows, in time order.
    pub rows: Vec<usize>,
    /// Chunk index of the first executed action (actions skipped for latency).
    pub first_index: u32,
    /// R = Σ_{j<m} γ^j r_{t+j} over the executed ticks.
    pub reward: f32,
    /// m, the number of executed ticks; the step discounts by γ^m.
    pub ticks: u32,
    /// The last tick terminated its episode: no bootstrap.
    pub terminated: bool,
    /// The recursion stops after this step (episode end, or a cut).
    pub ended: bool,
    /// The tick after the step is invalid: bootstrap from V(s_i) itself.
    pub bootstrap_self: bool,
}

impl ChunkStep {
    /// The last executed tick: its next observation gives V(s'_i).
    pub fn last_row(&self) -> usize {
        *self.rows.last().expect("a step has at least one tick")
    }
}

/// The decisions of a rollout, and what became of the other ticks. Every
/// tick is counted once: in a step, dropped, intervention or invalid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkSteps {
    /// Grouped by env, in time order within an env.
    pub steps: Vec<ChunkStep>,
    /// Ticks of steps whose plan tick is outside the rollout, in another
    /// episode, or invalid.
    pub dropped_ticks: usize,
    /// Operator ticks (valid ones; an invalid one counts as invalid).
    pub intervention_ticks: usize,
    pub invalid_ticks: usize,
}

/// Splits a time-major rollout (`transitions[t · envs + e]`) into chunk
/// steps. `rewards[row]` is the (scaled) reward of each tick; `valid[row]`
/// is false for a tick that must be left out (non-finite reward, observation
/// or next observation, or marked unusable), as `trainer::gae_batch` decides.
pub fn chunk_steps(
    envs: usize,
    transitions: &[Transition],
    rewards: &[f32],
    valid: &[bool],
    gamma: f32,
) -> ChunkSteps {
    let n = transitions.len();
    assert!(
        envs > 0 && n.is_multiple_of(envs),
        "transitions must be steps × envs"
    );
    assert_eq!(rewards.len(), n, "one reward per transition");
    assert_eq!(valid.len(), n, "one validity flag per transition");
    let mut out = ChunkSteps::default();
    for env in 0..envs {
        let mut kept: Vec<ChunkStep> = Vec::new();
        // The step being built, with its plan row when it has one.
        let mut open: Option<(ChunkStep, Option<usize>)> = None;
        for row in (env..n).step_by(envs) {
            let tick = &transitions[row];
            if !valid[row] || tick.intervention {
                close(&mut open, &mut kept, &mut out);
                if valid[row] {
                    out.intervention_ticks += 1;
                    continue;
                }
                out.invalid_ticks += 1;
                // gae_batch: the row before is cut and bootstraps from its
                // own value, unless it already ends its episode.
                if let Some(last) = kept.last_mut()
                    && row >= envs
                    && last.last_row() == row - envs
                    && !last.ended
                {
                    (last.ended, last.terminated, last.bootstrap_self) = (true, false, true);
                }
                continue;
            }
            let continues = open
                .as_ref()
                .is_some_and(|(s, _)| tick.chunk_index == s.first_index + s.ticks);
            if !continues {
                close(&mut open, &mut kept, &mut out);
                let step = ChunkStep {
                    env,
                    plan_row: row,
                    rows: Vec::new(),
                    first_index: tick.chunk_index,
                    reward: 0.0,
                    ticks: 0,
                    terminated: false,
                    ended: false,
                    bootstrap_self: false,
                };
                let plan = plan_row(envs, transitions, valid, row, tick.chunk_index);
                open = Some((step, plan));
            }
            let (step, _) = open.as_mut().expect("a step is open");
            step.reward += gamma.powi(step.ticks as i32) * rewards[row];
            step.ticks += 1;
            step.rows.push(row);
            step.terminated = tick.terminated;
            step.ended = tick.terminated || tick.truncated;
            if step.ended || tick.safety_clamped {
                close(&mut open, &mut kept, &mut out);
            }
        }
        close(&mut open, &mut kept, &mut out);
        // A step whose successor does not start at the very next tick (a
        // takeover, an invalid tick or a dropped step lies between) is cut
        // as a time limit cuts: it bootstraps from V(s'_i), carries nothing.
        for i in 1..kept.len() {
            if kept[i].rows[0] != kept[i - 1].last_row() + envs {
                kept[i - 1].ended = true;
            }
        }
        out.steps.extend(kept);
    }
    out
}

/// Files the open step: kept when its plan tick exists, else dropped.
fn close(
    open: &mut Option<(ChunkStep, Option<usize>)>,
    kept: &mut Vec<ChunkStep>,
    out: &mut ChunkSteps,
) {
    match open.take() {
        Some((step, Some(plan_row))) => kept.push(ChunkStep { plan_row, ..step }),
        Some((step, None)) => out.dropped_ticks += step.rows.len(),
        None => {}
    }
}

/// The row of the tick whose observation planned the action at chunk index
/// `index` run at `row`: `index` ticks earlier, if that tick is in the
/// rollout, valid, and in the same episode (no episode end in between).
fn plan_row(
    envs: usize,
    transitions: &[Transition],
    valid: &[bool],
    row: usize,
    index: u32,
) -> Option<usize> {
    let plan = row.checked_sub(index as usize * envs)?;
    let episode = transitions[row].provenance.episode_id;
    let same_episode = (plan..row).step_by(envs).all(|r| {
        let t = &transitions[r];
        !t.terminated && !t.truncated && t.provenance.episode_id == episode
    });
    (valid[plan] && same_episode).then_some(plan)
}

/// GAE over chunk steps (formula at the top of this file). `values[i]` is
/// V(s_i), the value of step i's plan observation; `next_values[i]` is
/// V(s'_i), the value of the next observation of its last tick (the final
/// observation where an episode ended; ignored when `bootstrap_self`).
/// `steps` as `chunk_steps` returns them: grouped by env, time order within
/// an env, a step followed directly by the next decision of its env unless
/// it is `ended`. Returns (advantages, returns = advantages + values).
pub fn chunk_gae(
    steps: &[ChunkStep],
    values: &[f32],
    next_values: &[f32],
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = steps.len();
    assert_eq!(values.len(), n, "one value per step");
    assert_eq!(next_values.len(), n, "one next value per step");
    let mut advantages = vec![0.0f32; n];
    let mut running = 0.0f32;
    for i in (0..n).rev() {
        let step = &steps[i];
        let discount = gamma.powi(step.ticks as i32);
        let next_value = if step.bootstrap_self {
            values[i]
        } else {
            next_values[i]
        };
        let bootstrap = if step.terminated {
            0.0
        } else {
            discount * next_value
        };
        let delta = step.reward + bootstrap - values[i];
        let last_of_env = steps.get(i + 1).is_none_or(|next| next.env != step.env);
        let carry = if step.ended || last_of_env {
            0.0
        } else {
            discount * lambda * running
        };
        running = delta + carry;
        advantages[i] = running;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::advantage;
    use cerebellum_core::{Action, Observation, Provenance, RewardComponents};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// One tick of episode 0 with the given chunk index; flags set by hand.
    fn tick(chunk_index: u32) -> Transition {
        Transition {
            provenance: Provenance::default(),
            sim_time: 0.0,
            wall_time: 0.0,
            observation: Observation {
                state: vec![0.0],
                images: vec![],
                instruction: None,
                timestamp: 0.0,
            },
            policy_action: Action::new(vec![0.0]),
            sent_command: Action::new(vec![0.0]),
            behaviour_log_prob: None,
            chunk_index,
            intervention: false,
            safety_clamped: false,
            rewards: RewardComponents::new(),
            terminated: false,
            truncated: false,
            success: None,
            stage: None,
            reward_version: None,
        }
    }

    fn ticks(indices: &[u32]) -> Vec<Transition> {
        indices.iter().map(|&k| tick(k)).collect()
    }

    fn close_to(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// (rows, plan_row, first_index, ticks, terminated, ended) per step.
    fn shape(steps: &ChunkSteps) -> Vec<(Vec<usize>, usize, u32, u32, bool, bool)> {
        steps
            .steps
            .iter()
            .map(|s| {
                let flags = (s.terminated, s.ended);
                (
                    s.rows.clone(),
                    s.plan_row,
                    s.first_index,
                    s.ticks,
                    flags.0,
                    flags.1,
                )
            })
            .collect()
    }

    #[test]
    fn a_chunk_run_fully_is_one_step() {
        // γ = 0.5; rewards 1, 2, 3, 4 over chunk indices 0..3:
        // R = 1 + 0.5·2 + 0.25·3 + 0.125·4 = 3.25, discount γ⁴ = 0.0625.
        // V(s) = 2, V(s') = 8, λ = 0.5: δ = 3.25 + 0.0625·8 − 2 = 1.75 = A;
        // return 3.75.
        let steps = chunk_steps(
            1,
            &ticks(&[0, 1, 2, 3]),
            &[1.0, 2.0, 3.0, 4.0],
            &[true; 4],
            0.5,
        );
        assert_eq!(
            shape(&steps),
            vec![(vec![0, 1, 2, 3], 0, 0, 4, false, false)]
        );
        assert_eq!(steps.steps[0].reward, 3.25);
        assert_eq!(0.5f32.powi(steps.steps[0].ticks as i32), 0.0625);
        let (adv, ret) = chunk_gae(&steps.steps, &[2.0], &[8.0], 0.5, 0.5);
        close_to(&adv, &[1.75]);
        close_to(&ret, &[3.75]);
    }

    #[test]
    fn a_new_plan_cuts_a_chunk() {
        // Indices 0, 1 | 0, 1, 2: two steps, m = 2 and m = 3. γ = λ = 0.5.
        // R0 = 1 + 0.5·1 = 1.5 (discount 0.25); R1 = 2 + 0.5·2 + 0.25·2 = 3.5
        // (discount 0.125). V = (1, 2), V' = (2, 4).
        // δ1 = 3.5 + 0.125·4 − 2 = 2 = A1
        // δ0 = 1.5 + 0.25·2 − 1 = 1;  A0 = 1 + 0.25·0.5·2 = 1.25
        // returns: 2.25, 4
        let steps = chunk_steps(
            1,
            &ticks(&[0, 1, 0, 1, 2]),
            &[1.0, 1.0, 2.0, 2.0, 2.0],
            &[true; 5],
            0.5,
        );
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 1], 0, 0, 2, false, false),
                (vec![2, 3, 4], 2, 0, 3, false, false),
            ]
        );
        close_to(
            &steps.steps.iter().map(|s| s.reward).collect::<Vec<_>>(),
            &[1.5, 3.5],
        );
        let (adv, ret) = chunk_gae(&steps.steps, &[1.0, 2.0], &[2.0, 4.0], 0.5, 0.5);
        close_to(&adv, &[1.25, 2.0]);
        close_to(&ret, &[2.25, 4.0]);
    }

    #[test]
    fn a_late_chunk_is_planned_ticks_back() {
        // Plan A at tick 0 runs indices 0, 1, 2; plan B, observed at tick 1
        // and received at tick 3, skips two actions: indices 2, 3, 4 at ticks
        // 3, 4, 5. Its state is tick 1's observation.
        let steps = chunk_steps(1, &ticks(&[0, 1, 2, 2, 3, 4]), &[0.0; 6], &[true; 6], 0.9);
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 1, 2], 0, 0, 3, false, false),
                (vec![3, 4, 5], 1, 2, 3, false, false),
            ]
        );
        assert_eq!(steps.dropped_ticks, 0);
    }

    #[test]
    fn a_plan_outside_the_rollout_or_episode_or_invalid_is_dropped() {
        // Rows 0, 1 run indices 2, 3: planned two ticks before the rollout.
        // Row 2 ends the episode (truncated); rows 3, 4 (episode 1) run
        // indices 1, 2 of a plan from row 2, the old episode. Row 5 runs
        // index 0 (kept); row 6 is invalid; row 7 runs index 1 of a plan
        // from row 6 (dropped: its observation is not trusted).
        let mut ts = ticks(&[2, 3, 0, 1, 2, 0, 0, 1]);
        ts[2].truncated = true;
        for t in &mut ts[3..] {
            t.provenance.episode_id = 1;
        }
        let mut valid = [true; 8];
        valid[6] = false;
        let steps = chunk_steps(1, &ts, &[1.0; 8], &valid, 0.9);
        // Row 2's step ends its episode; row 5's is cut by the invalid row 6
        // and bootstraps from its own value.
        assert_eq!(
            shape(&steps),
            vec![
                (vec![2], 2, 0, 1, false, true),
                (vec![5], 5, 0, 1, false, true)
            ]
        );
        assert!(!steps.steps[0].bootstrap_self && steps.steps[1].bootstrap_self);
        assert_eq!((steps.dropped_ticks, steps.invalid_ticks), (5, 1));
    }

    #[test]
    fn a_safety_clamp_ends_the_step_at_the_clamped_tick() {
        // Indices 0, 1, 2, 3; tick 1 clamped (reward −1). Step 0 = ticks 0, 1;
        // the rest of the plan (indices 2, 3) is a second step from the same
        // plan tick 0. γ = 0.5, λ = 1, rewards 1, −1, 0, 1:
        // R0 = 1 − 0.5 = 0.5; R1 = 0 + 0.5·1 = 0.5; both discount 0.25.
        // V = (1, 1) (same plan observation), V' = (2, 6).
        // δ1 = 0.5 + 0.25·6 − 1 = 1 = A1;  δ0 = 0.5 + 0.25·2 − 1 = 0;
        // A0 = 0 + 0.25·1·1 = 0.25.
        let mut ts = ticks(&[0, 1, 2, 3]);
        ts[1].safety_clamped = true;
        let steps = chunk_steps(1, &ts, &[1.0, -1.0, 0.0, 1.0], &[true; 4], 0.5);
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 1], 0, 0, 2, false, false),
                (vec![2, 3], 0, 2, 2, false, false),
            ]
        );
        let (adv, _) = chunk_gae(&steps.steps, &[1.0, 1.0], &[2.0, 6.0], 0.5, 1.0);
        close_to(&adv, &[0.25, 1.0]);
    }

    #[test]
    fn operator_ticks_belong_to_no_step_and_cut_the_recursion() {
        // Indices 0, 1, then two operator ticks, then a new plan 0, 1.
        // γ = 0.5, λ = 1, rewards 1 everywhere: R0 = R1 = 1.5, discount 0.25.
        // Step 0 is cut (ended, not terminated) and bootstraps from the
        // takeover tick's observation, V' = 4: δ0 = 1.5 + 0.25·4 − 1 = 1.5 =
        // A0 (not 1.5 + 0.25·A1). Step 1: V = 0, V' = 0: A1 = 1.5.
        let mut ts = ticks(&[0, 1, 0, 0, 0, 1]);
        ts[2].intervention = true;
        ts[3].intervention = true;
        let steps = chunk_steps(1, &ts, &[1.0; 6], &[true; 6], 0.5);
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 1], 0, 0, 2, false, true),
                (vec![4, 5], 4, 0, 2, false, false),
            ]
        );
        assert_eq!((steps.intervention_ticks, steps.dropped_ticks), (2, 0));
        let (adv, _) = chunk_gae(&steps.steps, &[1.0, 0.0], &[4.0, 0.0], 0.5, 1.0);
        close_to(&adv, &[1.5, 1.5]);
    }

    #[test]
    fn an_episode_end_ends_the_step_termination_does_not_bootstrap() {
        // Indices 0, 1 | 0, 1, 2; tick 1 ends episode 0. γ = 0.5, λ = 1,
        // rewards 1: R0 = 1.5 (discount 0.25), R1 = 1 + 0.5 + 0.25 = 1.75.
        // V = (1, 0), V' = (10 = V of the final observation, 0).
        // Step 1: A1 = 1.75. Step 0, terminated: δ0 = 1.5 − 1 = 0.5;
        // truncated: δ0 = 1.5 + 0.25·10 − 1 = 3. Neither carries A1.
        let run = |terminated: bool| {
            let mut ts = ticks(&[0, 1, 0, 1, 2]);
            ts[1].terminated = terminated;
            ts[1].truncated = !terminated;
            for t in &mut ts[2..] {
                t.provenance.episode_id = 1;
            }
            let steps = chunk_steps(1, &ts, &[1.0; 5], &[true; 5], 0.5);
            assert_eq!(
                shape(&steps),
                vec![
                    (vec![0, 1], 0, 0, 2, terminated, true),
                    (vec![2, 3, 4], 2, 0, 3, false, false),
                ]
            );
            chunk_gae(&steps.steps, &[1.0, 0.0], &[10.0, 0.0], 0.5, 1.0).0
        };
        close_to(&run(true), &[0.5, 1.75]);
        close_to(&run(false), &[3.0, 1.75]);
    }

    #[test]
    fn an_invalid_tick_cuts_a_chunk_and_its_step_bootstraps_from_itself() {
        // Indices 0, 1, 2, 3; tick 2 invalid (reward NaN). Step A = ticks 0, 1,
        // cut; tick 3 (index 3) is still planned from tick 0: step B.
        // γ = 0.5, λ = 1. R_A = 1 + 0.5 = 1.5, discount 0.25, V(s) = 2, and
        // V(s') := V(s) (the NaN passed as V' is not read):
        // δ_A = 1.5 + 0.25·2 − 2 = 0 = A_A. Step B: R = 1, V = 2, V' = 4:
        // δ_B = 1 + 0.5·4 − 2 = 1 = A_B.
        let steps = chunk_steps(
            1,
            &ticks(&[0, 1, 2, 3]),
            &[1.0, 1.0, f32::NAN, 1.0],
            &[true, true, false, true],
            0.5,
        );
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 1], 0, 0, 2, false, true),
                (vec![3], 0, 3, 1, false, false),
            ]
        );
        assert!(steps.steps[0].bootstrap_self);
        assert_eq!(steps.invalid_ticks, 1);
        let (adv, _) = chunk_gae(&steps.steps, &[2.0, 2.0], &[f32::NAN, 4.0], 0.5, 1.0);
        close_to(&adv, &[0.0, 1.0]);
    }

    #[test]
    fn two_envs_interleaved_time_major() {
        // Rows t·2 + e. Env 0 runs indices 0, 1, 2 (rows 0, 2, 4): one step.
        // Env 1 runs 0 | 0, 1 (rows 1 | 3, 5): two steps. Rewards: env 0 → 1,
        // env 1 → 2 per tick. γ = 0.5, λ = 1, every V = 0:
        // env 0: R = 1 + 0.5 + 0.25 = 1.75 = A (nothing of env 1 carried);
        // env 1: R = 2 and 2 + 0.5·2 = 3; A = 3 and 2 + 0.5·1·3 = 3.5.
        let steps = chunk_steps(
            2,
            &ticks(&[0, 0, 1, 0, 2, 1]),
            &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
            &[true; 6],
            0.5,
        );
        assert_eq!(
            shape(&steps),
            vec![
                (vec![0, 2, 4], 0, 0, 3, false, false),
                (vec![1], 1, 0, 1, false, false),
                (vec![3, 5], 3, 0, 2, false, false),
            ]
        );
        assert_eq!(
            steps.steps.iter().map(|s| s.env).collect::<Vec<_>>(),
            [0, 1, 1]
        );
        let (adv, _) = chunk_gae(&steps.steps, &[0.0; 3], &[0.0; 3], 0.5, 1.0);
        close_to(&adv, &[1.75, 3.5, 3.0]);
    }

    /// A random rollout of one-tick plans: episode ends, clamps, values.
    struct Random {
        envs: usize,
        transitions: Vec<Transition>,
        rewards: Vec<f32>,
        values: Vec<f32>,
        next_values: Vec<f32>,
    }

    fn random_rollout(seed: u64, envs: usize, steps: usize) -> Random {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = envs * steps;
        let mut episode = vec![0u64; envs];
        let mut transitions = Vec::with_capacity(n);
        for row in 0..n {
            let e = row % envs;
            let mut t = tick(0);
            t.provenance.episode_id = episode[e];
            t.safety_clamped = rng.random_bool(0.1);
            t.terminated = rng.random_bool(0.08);
            t.truncated = !t.terminated && rng.random_bool(0.05);
            if t.terminated || t.truncated {
                episode[e] += 1;
            }
            transitions.push(t);
        }
        let mut draw = || (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        Random {
            envs,
            transitions,
            rewards: draw(),
            values: draw(),
            next_values: draw(),
        }
    }

    /// Chunk advantages laid back on the rows of one-tick steps.
    fn by_row(steps: &[ChunkStep], per_step: &[f32], n: usize) -> Vec<Option<f32>> {
        let mut rows = vec![None; n];
        for (s, a) in steps.iter().zip(per_step) {
            assert_eq!(s.rows, [s.plan_row]);
            rows[s.plan_row] = Some(*a);
        }
        rows
    }

    #[test]
    fn one_tick_plans_are_gae_bit_for_bit() {
        let (gamma, lambda) = (0.97, 0.9);
        for seed in 0..8 {
            let r = random_rollout(seed, 3, 40);
            let n = r.transitions.len();
            let terminated: Vec<bool> = r.transitions.iter().map(|t| t.terminated).collect();
            let ended: Vec<bool> = r
                .transitions
                .iter()
                .map(|t| t.terminated || t.truncated)
                .collect();
            let (adv, ret) = advantage::gae(
                r.envs,
                &r.rewards,
                &r.values,
                &r.next_values,
                &terminated,
                &ended,
                gamma,
                lambda,
            );
            let steps = chunk_steps(r.envs, &r.transitions, &r.rewards, &vec![true; n], gamma);
            assert_eq!(steps.steps.len(), n);
            let at =
                |v: &[f32]| -> Vec<f32> { steps.steps.iter().map(|s| v[s.plan_row]).collect() };
            let (chunk_adv, chunk_ret) = chunk_gae(
                &steps.steps,
                &at(&r.values),
                &at(&r.next_values),
                gamma,
                lambda,
            );
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let rows = |v: &[f32]| by_row(&steps.steps, v, n).into_iter().flatten().collect();
            assert_eq!(bits(rows(&chunk_adv)), bits(adv));
            assert_eq!(bits(rows(&chunk_ret)), bits(ret));
        }
    }

    #[test]
    fn invalid_rows_are_cut_as_gae_batch_cuts_them() {
        // gae_batch's rule on plain arrays: an invalid row is zeroed and
        // ended, bootstrapping from itself; the row before is cut the same
        // way unless it already ended its episode. Kept rows must agree.
        let (gamma, lambda) = (0.95, 0.8);
        for seed in 0..8 {
            let mut r = random_rollout(100 + seed, 2, 50);
            let n = r.transitions.len();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let valid: Vec<bool> = (0..n).map(|_| !rng.random_bool(0.1)).collect();
            for i in (0..n).filter(|&i| !valid[i]) {
                r.rewards[i] = f32::NAN;
                r.next_values[i] = f32::NAN;
                // What followed the row before is this invalid row, unless
                // that row ended its episode (then: its final observation).
                let before = &r.transitions[i.saturating_sub(r.envs)];
                if i >= r.envs && !before.terminated && !before.truncated {
                    r.next_values[i - r.envs] = f32::NAN;
                }
            }
            let mut rewards = r.rewards.clone();
            let mut next_values = r.next_values.clone();
            let mut terminated: Vec<bool> = r.transitions.iter().map(|t| t.terminated).collect();
            let mut ended: Vec<bool> = r
                .transitions
                .iter()
                .map(|t| t.terminated || t.truncated)
                .collect();
            for i in (0..n).filter(|&i| !valid[i]) {
                (rewards[i], terminated[i], ended[i], next_values[i]) =
                    (0.0, false, true, r.values[i]);
                if i >= r.envs && !ended[i - r.envs] {
                    ended[i - r.envs] = true;
                    terminated[i - r.envs] = false;
                    next_values[i - r.envs] = r.values[i - r.envs];
                }
            }
            let (adv, _) = advantage::gae(
                r.envs,
                &rewards,
                &r.values,
                &next_values,
                &terminated,
                &ended,
                gamma,
                lambda,
            );
            let steps = chunk_steps(r.envs, &r.transitions, &r.rewards, &valid, gamma);
            let kept = valid.iter().filter(|v| **v).count();
            assert_eq!(steps.steps.len(), kept);
            assert_eq!(steps.invalid_ticks, n - kept);
            let at =
                |v: &[f32]| -> Vec<f32> { steps.steps.iter().map(|s| v[s.plan_row]).collect() };
            let (chunk_adv, _) = chunk_gae(
                &steps.steps,
                &at(&r.values),
                &at(&r.next_values),
                gamma,
                lambda,
            );
            let mine = by_row(&steps.steps, &chunk_adv, n);
            for i in 0..n {
                assert_eq!(mine[i].is_some(), valid[i]);
                if let Some(a) = mine[i] {
                    assert!((a - adv[i]).abs() < 1e-6, "row {i}: {a} vs {}", adv[i]);
                }
            }
        }
    }
}
