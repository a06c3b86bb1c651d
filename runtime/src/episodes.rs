//! Running whole episodes of a simulated robot under a controller, through
//! the same observe → act → apply stages the control loop will run.

use cerebellum_core::{Action, Observation, ResetRequest, Robot, RobotError, RobotSpec};
use cerebellum_sim::{ScriptedExpert, SimEnv};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Something that turns an observation into a command, one tick at a time.
pub trait Controller {
    fn begin_episode(&mut self, seed: u64);
    fn act(&mut self, observation: &Observation, spec: &RobotSpec) -> Action;

    /// This tick's command when the controller drives `env` (what
    /// `run_episode` calls): `act` on the observation, unless the
    /// controller may read the simulator's privileged state, as the colour
    /// tasks' scripted expert does.
    fn act_in(&mut self, observation: &Observation, env: &SimEnv) -> Action {
        self.act(observation, env.spec())
    }
}

impl Controller for ScriptedExpert {
    fn begin_episode(&mut self, _seed: u64) {
        self.reset();
    }

    fn act(&mut self, observation: &Observation, spec: &RobotSpec) -> Action {
        ScriptedExpert::act(self, observation, &spec.observation)
    }

    /// The colour tasks' expert reads the named object's pose from the
    /// simulator (`ArmEnv::expert_view`), which the observation lacks.
    fn act_in(&mut self, observation: &Observation, env: &SimEnv) -> Action {
        expert_act(self, observation, env)
    }
}

/// The scripted expert's command for `env`'s current tick, whose
/// observation is `observation`: on the colour tasks from the privileged
/// `ArmEnv::expert_view`.
pub fn expert_act(expert: &mut ScriptedExpert, observation: &Observation, env: &SimEnv) -> Action {
    match env.as_arm().and_then(|arm| arm.expert_view()) {
        Some((view, spec)) => expert.act(&view, &spec),
        None => expert.act(observation, &env.spec().observation),
    }
}

/// Uniformly random commands within the action limits: the baseline that
/// shows what a task looks like without skill.
pub struct RandomController {
    rng: ChaCha8Rng,
}

impl RandomController {
    pub fn new() -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
}

impl Default for RandomController {
    fn default() -> Self {
        Self::new()
    }
}

impl Controller for RandomController {
    fn begin_episode(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
    }

    fn act(&mut self, _observation: &Observation, spec: &RobotSpec) -> Action {
        let (lower, upper) = spec.action.limits();
        let values = lower
            .iter()
            .zip(&upper)
            .map(|(&lo, &hi)| lo + self.rng.random::<f32>() * (hi - lo))
            .collect();
        Action::new(values)
    }
}

/// What one episode gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodeSummary {
    pub seed: u64,
    pub episode_return: f64,
    pub success: bool,
    pub steps: u32,
}

/// Runs one episode from `seed` until it terminates or is truncated.
pub fn run_episode(
    env: &mut SimEnv,
    controller: &mut dyn Controller,
    seed: u64,
) -> Result<EpisodeSummary, RobotError> {
    run_episode_with(env, controller, seed, |_, command| command)
}

/// `run_episode`, where `send` sees each tick's observation and command and
/// returns what the robot is sent (a recorder keeps them, a perturbation
/// changes the command).
pub fn run_episode_with(
    env: &mut SimEnv,
    controller: &mut dyn Controller,
    seed: u64,
    mut send: impl FnMut(&Observation, Action) -> Action,
) -> Result<EpisodeSummary, RobotError> {
    let mut observation = env.reset(&ResetRequest { seed })?;
    controller.begin_episode(seed);
    let mut episode_return = 0.0;
    let mut steps = 0;
    let success = loop {
        let command = send(&observation, controller.act_in(&observation, env));
        let outcome = env.apply(&command)?;
        steps += 1;
        episode_return += outcome.rewards.iter().map(|(_, r)| r as f64).sum::<f64>();
        if outcome.done() {
            break outcome.success.unwrap_or(false);
        }
        observation = env.observe()?;
    };
    Ok(EpisodeSummary {
        seed,
        episode_return,
        success,
        steps,
    })
}

/// The controller `cerebellum sim` runs: the scripted expert when asked
/// and there is one for the task, otherwise random commands.
pub fn make_controller(expert: bool, env: &SimEnv) -> Result<Box<dyn Controller>, String> {
    if !expert {
        return Ok(Box::new(RandomController::new()));
    }
    match env {
        SimEnv::Pendulum(_) => Ok(Box::new(cerebellum_sim::expert::PendulumExpert)),
        SimEnv::Arm(arm) => Ok(Box::new(ScriptedExpert::new(
            arm.model().clone(),
            arm.config().task,
            arm.config().physics.control_rate_hz(),
            arm.world().table_height,
        )?)),
    }
}

impl Controller for cerebellum_sim::expert::PendulumExpert {
    fn begin_episode(&mut self, _seed: u64) {}

    fn act(&mut self, observation: &Observation, _spec: &RobotSpec) -> Action {
        cerebellum_sim::expert::PendulumExpert::act(self, observation)
    }
}
