//! Behaviour cloning of the vision-language-action policy: the scripted
//! expert's demonstrations (camera frames, instructions, joint states and
//! the expert's clean commands, sent with DART noise), turned into chunk
//! labels, and minibatch steps of the VLA on them.
//!
//! A demonstration at tick t is labelled with the expert's next H commands
//! (t … t + H − 1, fewer at the episode's end: a decision of fewer
//! actions), the chunk the policy is to plan from that observation
//! (ACT, Zhao et al. 2023). Each tick also carries the position of the
//! object the instruction names, read from the simulator: a privileged
//! target for the auxiliary head, used in training only (never an input).

use crate::learn::config::{LEARNING_RATE, MAX_GRAD_NORM};
use cerebellum_core::bounds::Limits;
use cerebellum_core::{Action, Observation, ResetRequest, Robot};
use cerebellum_policies::vla::{VlaConfig, VlaDecisions, VlaPolicy};
use cerebellum_policies::{Adam, Decision, EncodedDecisions, TrainablePolicy};
use cerebellum_sim::SimEnv;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// The `[vla]` table: the model (`[vla.model]`) and how it is cloned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlaTrainConfig {
    pub model: VlaConfig,
    /// Episodes of the scripted expert to record (successful ones kept).
    pub expert_episodes: usize,
    /// DART noise on the commands sent while demonstrating (rad).
    pub expert_noise: f32,
    /// Gradient steps of behaviour cloning.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's step size, annealed by a cosine to a tenth of it.
    pub learning_rate: f64,
    pub max_grad_norm: f32,
    /// Random shift of each training frame, up to this many px (DrQ).
    pub augment_shift: u32,
    /// Each instruction word dropped with this probability in training
    /// (one always kept): the policy learns to read the word that matters
    /// whatever the words around it, which carries it to new phrasings.
    pub word_dropout: f32,
    /// Weight of the auxiliary head's loss (the named object's position).
    pub aux_weight: f32,
    /// Gradient steps between held-out evaluations (and checkpoints).
    pub eval_every: usize,
    /// Episodes of each evaluation during training.
    pub eval_episodes: usize,
    /// DAgger rounds after the first `steps` (Ross et al. 2011): the
    /// policy drives `dagger_episodes` fresh episodes, the scripted expert
    /// labels every state it visits, those join the data, and
    /// `dagger_steps` more steps follow. It teaches recovery from the
    /// policy's own mistakes, which cloning the expert's states alone
    /// never shows. 0 = cloning only.
    pub dagger_rounds: usize,
    pub dagger_episodes: usize,
    pub dagger_steps: usize,
}

impl Default for VlaTrainConfig {
    fn default() -> Self {
        Self {
            model: VlaConfig::default(),
            expert_episodes: 400,
            expert_noise: 0.05,
            steps: 10_000,
            batch_size: 64,
            learning_rate: 1e-3,
            max_grad_norm: 1.0,
            augment_shift: 4,
            // Held-out phrasings 80.0% without, 97.5% with (200 starts
            // each; docs/BENCHMARKS.md).
            word_dropout: 0.2,
            aux_weight: 1.0,
            eval_every: 500,
            eval_episodes: 30,
            dagger_rounds: 0,
            dagger_episodes: 100,
            dagger_steps: 1000,
        }
    }
}

pub const EXPERT_EPISODES: Limits<usize> = Limits::closed(1, 100_000).unit("episodes");
pub const EXPERT_NOISE: Limits<f32> = Limits::closed(0.0, 1.0).unit("rad");
pub const STEPS: Limits<usize> = Limits::closed(1, 10_000_000).unit("steps");
pub const BATCH_SIZE: Limits<usize> = Limits::closed(1, 4096).unit("rows");
pub const AUGMENT_SHIFT: Limits<u32> = Limits::closed(0, 16).unit("px");
pub const AUX_WEIGHT: Limits<f32> = Limits::closed(0.0, 100.0);
pub const WORD_DROPOUT: Limits<f32> = Limits::closed_open(0.0, 1.0);
pub const EVAL_EVERY: Limits<usize> = Limits::closed(1, 10_000_000).unit("steps");
pub const EVAL_EPISODES: Limits<usize> = Limits::closed(0, 100_000).unit("episodes");
pub const DAGGER_ROUNDS: Limits<usize> = Limits::closed(0, 1000).unit("rounds");

impl VlaTrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate_at("vla.model")?;
        EXPERT_EPISODES.check("vla.expert_episodes", self.expert_episodes)?;
        EXPERT_NOISE.check("vla.expert_noise", self.expert_noise)?;
        STEPS.check("vla.steps", self.steps)?;
        BATCH_SIZE.check("vla.batch_size", self.batch_size)?;
        LEARNING_RATE.check("vla.learning_rate", self.learning_rate)?;
        MAX_GRAD_NORM.check("vla.max_grad_norm", self.max_grad_norm)?;
        AUGMENT_SHIFT.check("vla.augment_shift", self.augment_shift)?;
        AUX_WEIGHT.check("vla.aux_weight", self.aux_weight)?;
        WORD_DROPOUT.check("vla.word_dropout", self.word_dropout)?;
        EVAL_EVERY.check("vla.eval_every", self.eval_every)?;
        EVAL_EPISODES.check("vla.eval_episodes", self.eval_episodes)?;
        DAGGER_ROUNDS.check("vla.dagger_rounds", self.dagger_rounds)?;
        EXPERT_EPISODES.check("vla.dagger_episodes", self.dagger_episodes)?;
        STEPS.check("vla.dagger_steps", self.dagger_steps)
    }

    /// Gradient steps in all: cloning, then every DAgger round's.
    pub fn total_steps(&self) -> usize {
        self.steps + self.dagger_rounds * self.dagger_steps
    }

    /// The step size at gradient step `step` (cosine from the configured
    /// one down to a tenth of it at the last step of the last round).
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        let t = step as f64 / self.total_steps().max(1) as f64;
        let floor = 0.1 * self.learning_rate;
        floor + (self.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The recorded demonstrations, tick by tick.
#[derive(Default)]
pub struct Demonstrations {
    pub observations: Vec<Observation>,
    /// The expert's clean command of each tick.
    pub commands: Vec<Action>,
    /// The named object's position at each tick (3 values).
    pub aux: Vec<[f32; 3]>,
    /// Index of each kept episode's first tick, and the end.
    pub episode_starts: Vec<usize>,
    pub episodes: usize,
    pub successful: usize,
}

/// The named object's position in the expert's view of a colour task: the
/// reach target (`target`) or the named cube's position (the first three
/// values of the field whose name starts with `cube`).
fn named_position(env: &SimEnv) -> [f32; 3] {
    let Some(arm) = env.as_arm() else {
        return [0.0; 3];
    };
    let Some((observation, spec)) = arm.expert_view() else {
        return arm.target();
    };
    let mut at = 0;
    for field in &spec.fields {
        if field.name == "target" || field.name.starts_with("cube") {
            let v = &observation.state[at..];
            return [v[0], v[1], v[2]];
        }
        at += field.len();
    }
    arm.target()
}

/// Runs the scripted expert from `episodes` seeds no training or held-out
/// episode uses, sending its commands plus Gaussian noise of std `noise`
/// (DART), and keeps every tick of the successful episodes.
pub fn record_demonstrations(
    env: &mut SimEnv,
    episodes: usize,
    noise: f32,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Demonstrations> {
    let mut expert = crate::episodes::make_controller(true, env).map_err(anyhow::Error::msg)?;
    let (lower, upper) = env.spec().action.limits();
    let mut out = Demonstrations::default();
    for k in 0..episodes as u64 {
        let seed =
            cerebellum_sim::vec_env::episode_seed(seed ^ super::bc::DEMO_SEEDS, usize::MAX - 2, k);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xDA27);
        let mut observation = env.reset(&ResetRequest { seed })?;
        expert.begin_episode(seed);
        let start = out.observations.len();
        let success = loop {
            let command = expert.act_in(&observation, env);
            let mut sent = command.clone();
            for ((a, lo), hi) in sent.values.iter_mut().zip(&lower).zip(&upper) {
                let z: f32 = StandardNormal.sample(&mut rng);
                *a = (*a + noise * z).clamp(*lo, *hi);
            }
            out.aux.push(named_position(env));
            out.observations.push(observation);
            out.commands.push(command);
            let outcome = env.apply(&sent)?;
            if outcome.done() {
                break outcome.success.unwrap_or(false);
            }
            observation = env.observe()?;
        };
        out.episodes += 1;
        if success {
            out.successful += 1;
            out.episode_starts.push(start);
        } else {
            out.observations.truncate(start);
            out.commands.truncate(start);
            out.aux.truncate(start);
        }
        progress(out.episodes);
    }
    out.episode_starts.push(out.observations.len());
    anyhow::ensure!(
        out.successful > 0,
        "the scripted expert succeeded in none of {episodes} episodes"
    );
    Ok(out)
}

/// The demonstrations as the policy's decisions: each tick's observation
/// with the next `horizon` commands of its episode.
pub fn encode_demonstrations(
    policy: &VlaPolicy,
    demos: &Demonstrations,
) -> anyhow::Result<VlaDecisions> {
    let horizon = policy.horizon();
    let mut decisions = Vec::with_capacity(demos.observations.len());
    for episode in demos.episode_starts.windows(2) {
        let (start, end) = (episode[0], episode[1]);
        for t in start..end {
            decisions.push(Decision {
                observation: &demos.observations[t],
                first_index: 0,
                actions: demos.commands[t..(t + horizon).min(end)].iter().collect(),
            });
        }
    }
    Ok(policy.encode(&decisions)?)
}

/// The auxiliary targets' per-coordinate mean and std over the first
/// demonstrations: targets are standardised with them (mean 0, std 1) so
/// that their loss weighs as much as the chunk's whatever the workspace's
/// size in metres (a centimetre's error is 1e-4 m²: unstandardised, the
/// head would learn nothing).
#[derive(Clone, Copy, Debug)]
pub struct AuxScale {
    mean: [f64; 3],
    std: [f64; 3],
}

impl AuxScale {
    pub fn of(aux: &[[f32; 3]]) -> Self {
        let n = aux.len().max(1) as f64;
        let mut scale = Self {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        for k in 0..3 {
            let mean = aux.iter().map(|a| f64::from(a[k])).sum::<f64>() / n;
            let var = aux
                .iter()
                .map(|a| (f64::from(a[k]) - mean).powi(2))
                .sum::<f64>()
                / n;
            scale.mean[k] = mean;
            scale.std[k] = var.sqrt().max(1e-6);
        }
        scale
    }

    pub fn standardise(&self, aux: &[[f32; 3]]) -> Vec<f32> {
        aux.iter()
            .flat_map(|a| {
                (0..3).map(move |k| ((f64::from(a[k]) - self.mean[k]) / self.std[k]) as f32)
            })
            .collect()
    }
}

/// Behaviour cloning in minibatches, one epoch's shuffled order after
/// another, seeded.
pub struct Cloning {
    pub data: VlaDecisions,
    /// 3 per row.
    pub aux: Vec<f32>,
    pub optimizer: Adam,
    order: Vec<usize>,
    at: usize,
    rng: ChaCha8Rng,
    pub step: usize,
}

/// Mean losses over some steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CloningLosses {
    pub imitation: f64,
    pub aux: f64,
    pub grad_norm: f64,
}

impl Cloning {
    /// Adds decisions (and their standardised auxiliary targets) to the
    /// data the next steps draw from.
    pub fn add(&mut self, data: VlaDecisions, aux: Vec<f32>) -> anyhow::Result<()> {
        self.data.append(data)?;
        self.aux.extend(aux);
        // The next step starts a new epoch over all of it.
        self.at = self.order.len();
        Ok(())
    }

    pub fn new(
        policy: &VlaPolicy,
        data: VlaDecisions,
        aux: Vec<f32>,
        config: &VlaTrainConfig,
        seed: u64,
    ) -> Self {
        Self {
            optimizer: policy.optimizer(config.learning_rate),
            order: Vec::new(),
            at: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xB0C1_0000),
            step: 0,
            data,
            aux,
        }
    }

    /// `n` gradient steps; the mean of their losses.
    pub fn steps(
        &mut self,
        policy: &mut VlaPolicy,
        config: &VlaTrainConfig,
        n: usize,
    ) -> anyhow::Result<CloningLosses> {
        let mut sum = CloningLosses::default();
        let rows_total = self.data.len();
        let batch = config.batch_size.min(rows_total);
        for _ in 0..n {
            if self.at + batch > self.order.len() {
                self.order = (0..rows_total).collect();
                self.order.shuffle(&mut self.rng);
                self.at = 0;
            }
            let rows: Vec<usize> = self.order[self.at..self.at + batch].to_vec();
            self.at += batch;
            let targets: Vec<f32> = rows
                .iter()
                .flat_map(|&r| self.aux[3 * r..3 * r + 3].iter().copied())
                .collect();
            self.optimizer.learning_rate = config.learning_rate_at(self.step);
            let loss = policy.imitation_step(
                &self.data,
                &rows,
                Some(&targets),
                config.aux_weight,
                cerebellum_policies::vla::Augment {
                    shift: config.augment_shift,
                    word_dropout: config.word_dropout,
                },
                &mut self.rng,
                &mut self.optimizer,
                config.max_grad_norm,
            )?;
            self.step += 1;
            sum.imitation += f64::from(loss.imitation);
            sum.aux += f64::from(loss.aux);
            sum.grad_norm += f64::from(loss.grad_norm);
        }
        let n = n.max(1) as f64;
        Ok(CloningLosses {
            imitation: sum.imitation / n,
            aux: sum.aux / n,
            grad_norm: sum.grad_norm / n,
        })
    }
}

/// DAgger's data: `policy` (deterministic, one inference per tick for all
/// copies at once) drives `episodes` episodes from seeds of their own
/// (`round` picks them), and the scripted expert labels every tick with
/// the command it would send there. Every episode is kept: the states a
/// failing policy reaches are the ones it must learn to recover from.
pub fn record_on_policy(
    envs: &mut [SimEnv],
    policy: &mut VlaPolicy,
    episodes: usize,
    seed: u64,
    round: usize,
) -> anyhow::Result<Demonstrations> {
    use cerebellum_core::{Policy, Sampling};
    anyhow::ensure!(!envs.is_empty(), "DAgger needs at least one environment");
    let mut experts = envs
        .iter()
        .map(|env| crate::episodes::make_controller(true, env).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = Demonstrations::default();
    // Per copy: this episode's ticks, and its current observation.
    let mut ticks: Vec<Vec<(Observation, Action, [f32; 3])>> = vec![Vec::new(); envs.len()];
    let mut current: Vec<Option<Observation>> = vec![None; envs.len()];
    let mut started = 0;
    let base = seed ^ super::bc::DEMO_SEEDS ^ ((round as u64 + 1) << 40);
    loop {
        for (c, env) in envs.iter_mut().enumerate() {
            if current[c].is_none() && started < episodes {
                let seed =
                    cerebellum_sim::vec_env::episode_seed(base, usize::MAX - 3, started as u64);
                started += 1;
                current[c] = Some(env.reset(&ResetRequest { seed })?);
                experts[c].begin_episode(seed);
            }
        }
        let active: Vec<usize> = (0..envs.len()).filter(|&c| current[c].is_some()).collect();
        if active.is_empty() {
            break;
        }
        let observations: Vec<Observation> = active
            .iter()
            .map(|&c| current[c].clone().expect("active"))
            .collect();
        let outputs = policy.act(&observations, Sampling::Deterministic)?;
        for ((&c, observation), output) in active.iter().zip(observations).zip(outputs) {
            let env = &mut envs[c];
            let label = experts[c].act_in(&observation, env);
            let aux = named_position(env);
            let sent = output.chunk.actions.into_iter().next().expect("a chunk");
            ticks[c].push((observation, label, aux));
            let outcome = env.apply(&sent)?;
            if outcome.done() {
                let start = out.observations.len();
                for (o, a, x) in ticks[c].drain(..) {
                    out.observations.push(o);
                    out.commands.push(a);
                    out.aux.push(x);
                }
                out.episode_starts.push(start);
                out.episodes += 1;
                out.successful += usize::from(outcome.success.unwrap_or(false));
                current[c] = None;
            } else {
                current[c] = Some(env.observe()?);
            }
        }
    }
    out.episode_starts.push(out.observations.len());
    Ok(out)
}
