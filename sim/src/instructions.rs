//! The phrasings of the colour tasks' instructions: templates × colour
//! words, one drawn per episode from its seed.
//!
//! Each task has training templates and held-out ones. Training never
//! draws a held-out template; evaluation asks for them
//! (`EnvConfig.instructions = "held_out"`) to see whether a policy follows
//! a phrasing it never saw. Every word of a held-out template is also a
//! word of that task's training templates: what is new is the combination,
//! not the vocabulary (a policy cannot be expected to know a word it never
//! met). `{c}` stands for the colour word.

use crate::tasks::TaskKind;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which templates an environment draws its instructions from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionSet {
    /// The training templates (the default).
    #[default]
    Train,
    /// Only the held-out templates, for evaluation.
    HeldOut,
}

impl InstructionSet {
    pub fn name(self) -> &'static str {
        match self {
            InstructionSet::Train => "train",
            InstructionSet::HeldOut => "held_out",
        }
    }
}

impl std::str::FromStr for InstructionSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(InstructionSet::Train),
            "held_out" | "held-out" => Ok(InstructionSet::HeldOut),
            other => Err(format!(
                "unknown instruction set `{other}`; accepted: train, held_out"
            )),
        }
    }
}

/// The placeholder of the colour word in a template.
pub const COLOR_SLOT: &str = "{c}";

/// `reach-color`, training phrasings.
pub const REACH_TRAIN: &[&str] = &[
    "touch the {c} marker",
    "reach the {c} marker",
    "move to the {c} marker",
    "go to the {c} one",
    "put the gripper on the {c} marker",
    "move the gripper to {c}",
    "touch {c}",
    "reach for the {c} one",
];

/// `reach-color`, held out from training: new combinations of the
/// training words.
pub const REACH_HELD_OUT: &[&str] = &[
    "go to the {c} marker",
    "put the gripper on the {c} one",
    "reach for {c}",
];

/// `lift-color`, training phrasings.
pub const LIFT_TRAIN: &[&str] = &[
    "pick up the {c} cube",
    "lift the {c} block",
    "raise the {c} one",
    "pick the {c} block up",
    "lift {c}",
    "grab the {c} cube and lift it",
];

/// `lift-color`, held out from training.
pub const LIFT_HELD_OUT: &[&str] = &[
    "lift the {c} cube",
    "pick up the {c} one",
    "grab the {c} block and raise it",
];

/// The templates of `task` in `set` (empty for a task whose instruction is
/// one fixed sentence, `TaskKind::instruction`).
pub fn templates(task: TaskKind, set: InstructionSet) -> &'static [&'static str] {
    match (task, set) {
        (TaskKind::ReachColor, InstructionSet::Train) => REACH_TRAIN,
        (TaskKind::ReachColor, InstructionSet::HeldOut) => REACH_HELD_OUT,
        (TaskKind::LiftColor, InstructionSet::Train) => LIFT_TRAIN,
        (TaskKind::LiftColor, InstructionSet::HeldOut) => LIFT_HELD_OUT,
        (TaskKind::Reach | TaskKind::Lift | TaskKind::Pendulum, _) => &[],
    }
}

/// `template` with its colour slot filled.
pub fn fill(template: &str, color: &str) -> String {
    template.replace(COLOR_SLOT, color)
}

/// The words of `templates`, colour slot left out.
pub fn words<'a>(templates: &[&'a str]) -> std::collections::BTreeSet<&'a str> {
    templates
        .iter()
        .flat_map(|t| t.split_whitespace())
        .filter(|w| *w != COLOR_SLOT)
        .collect()
}

/// Every word an instruction of any task can hold: the words of every
/// template (training and held-out), the colour words and the fixed
/// instructions of the tasks without templates. The vision-language
/// policy's shipped tokenizer is built from exactly these
/// (`cerebellum_policies::vla::tokenizer`; a test compares them).
pub fn vocabulary() -> std::collections::BTreeSet<String> {
    let mut all = std::collections::BTreeSet::new();
    for task in TaskKind::ALL {
        for set in [InstructionSet::Train, InstructionSet::HeldOut] {
            all.extend(words(templates(task, set)).into_iter().map(str::to_owned));
        }
        all.extend(task.instruction().split_whitespace().map(str::to_owned));
    }
    let colors = crate::tasks::MARKER_COLORS
        .iter()
        .chain(&crate::tasks::CUBE_COLORS);
    all.extend(colors.map(|(name, _)| (*name).to_owned()));
    all
}

/// The index in `colors` of the one colour `text` names (as a whole word,
/// any case); `None` when it names none or several.
pub fn named_color(text: &str, colors: &[crate::tasks::Color]) -> Option<usize> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = colors
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| words.contains(name));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// One instruction for the object called `color`: a template of `task`'s
/// `set` drawn with one draw of `rng` whatever the set (so an episode's
/// scene does not depend on the set), or `None` for a task without
/// templates.
pub fn draw<R: Rng + ?Sized>(
    task: TaskKind,
    set: InstructionSet,
    color: &str,
    rng: &mut R,
) -> Option<String> {
    let u: f32 = rng.random();
    let templates = templates(task, set);
    if templates.is_empty() {
        return None;
    }
    let index = ((u * templates.len() as f32) as usize).min(templates.len() - 1);
    Some(fill(templates[index], color))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const COLOR_TASKS: [TaskKind; 2] = [TaskKind::ReachColor, TaskKind::LiftColor];

    #[test]
    fn held_out_words_are_all_training_words() {
        for task in COLOR_TASKS {
            let train = words(templates(task, InstructionSet::Train));
            let held_out = words(templates(task, InstructionSet::HeldOut));
            let unseen: Vec<_> = held_out.difference(&train).collect();
            assert!(unseen.is_empty(), "{task}: {unseen:?}");
        }
    }

    #[test]
    fn every_template_names_the_colour_once_and_held_out_ones_are_new() {
        for task in COLOR_TASKS {
            let train = templates(task, InstructionSet::Train);
            let held_out = templates(task, InstructionSet::HeldOut);
            assert!(!train.is_empty() && !held_out.is_empty());
            for t in train.iter().chain(held_out) {
                assert_eq!(t.matches(COLOR_SLOT).count(), 1, "{t}");
            }
            for t in held_out {
                assert!(!train.contains(t), "{t} is also a training template");
            }
        }
    }

    #[test]
    fn training_never_draws_a_held_out_phrasing_and_both_cover_their_templates() {
        for task in COLOR_TASKS {
            for set in [InstructionSet::Train, InstructionSet::HeldOut] {
                let allowed: Vec<String> = templates(task, set)
                    .iter()
                    .map(|t| fill(t, "red"))
                    .collect();
                let mut seen = std::collections::BTreeSet::new();
                for seed in 0..1000 {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let drawn = draw(task, set, "red", &mut rng).unwrap();
                    assert!(allowed.contains(&drawn), "{task} {set:?}: {drawn}");
                    seen.insert(drawn);
                }
                assert_eq!(seen.len(), allowed.len(), "{task} {set:?}");
            }
        }
    }

    #[test]
    fn sets_parse_and_refuse_unknown_names() {
        assert_eq!("train".parse(), Ok(InstructionSet::Train));
        assert_eq!("held_out".parse(), Ok(InstructionSet::HeldOut));
        let err = "test".parse::<InstructionSet>().unwrap_err();
        assert!(
            err.contains("`test`") && err.contains("train, held_out"),
            "{err}"
        );
        assert!(templates(TaskKind::Reach, InstructionSet::Train).is_empty());
    }
}
