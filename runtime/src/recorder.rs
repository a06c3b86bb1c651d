//! Episodes on disk, in the one format that `record`, teleop demonstrations
//! and replay buffers share (docs/episodes.md):
//!
//!   DIR/meta.json               format name and version, the robot spec
//!   DIR/episode-NNNNNNNN.jsonl  one `Transition` (serde JSON) per line
//!
//! An episode is written to `episode-….jsonl.partial` and renamed when it
//! ends, so a reader never sees half an episode; a run that stops mid-way
//! leaves its last episode as `.partial`, which readers skip.
//!
//! Nothing is overwritten: a recorder refuses a directory that already holds
//! a recording unless asked to append to it ([`Existing::Append`]), which
//! needs the same spec, stages and task, and numbers its episodes after the
//! last episode file there.

use crate::control_loop::TransitionSink;
use cerebellum_core::{RobotSpec, Transition};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "cerebellum-episodes";
pub const VERSION: u32 = 1;
pub const META_FILE: &str = "meta.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodesMeta {
    pub format: String,
    pub version: u32,
    pub robot: RobotSpec,
    /// Names of the task stages `Transition::stage` indexes (empty when the
    /// episodes carry no stage annotations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// The task the episodes were recorded on, when the recorder knew it
    /// (`cerebellum record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl EpisodesMeta {
    pub fn new(robot: &RobotSpec, stages: &[&str], task: Option<&str>) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            robot: robot.clone(),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            task: task.map(str::to_owned),
        }
    }

    /// How episodes described by `self` would not belong in a recording
    /// described by `recorded`, in words (`None` when they would).
    pub fn difference(&self, recorded: &EpisodesMeta) -> Option<String> {
        if (self.format.as_str(), self.version) != (recorded.format.as_str(), recorded.version) {
            return Some(format!(
                "format: {} version {} recorded, {} version {} now",
                recorded.format, recorded.version, self.format, self.version
            ));
        }
        if let (Some(now), Some(then)) = (&self.task, &recorded.task)
            && now != then
        {
            return Some(format!("task: `{then}` recorded, `{now}` now"));
        }
        if self.stages != recorded.stages {
            return Some(format!(
                "stages: [{}] recorded, [{}] now",
                recorded.stages.join(", "),
                self.stages.join(", ")
            ));
        }
        // The one compatibility rule (rates within its tolerance), the
        // recording's spec as the one expected.
        recorded
            .robot
            .check_compatible(&self.robot)
            .err()
            .map(|mismatch| mismatch.to_string())
    }
}

/// What a recorder does with a directory that already holds a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse it, naming it (nothing is overwritten).
    Refuse,
    /// Add episodes to it, if they belong there (same format, spec, stages
    /// and task); a directory without a recording gets a new one.
    Append,
}

/// A recording that stopped on a write error (a full disk, a directory
/// that went away) while the loop it recorded went on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "recording to {dir} failed after {episodes_written} complete episode(s): {message} (those are whole; an episode being written is left as .partial)"
)]
pub struct RecordingFailure {
    pub dir: PathBuf,
    /// Episodes written whole before the failure.
    pub episodes_written: u64,
    pub message: String,
}

pub struct EpisodeRecorder {
    dir: PathBuf,
    /// The producer's episode id of the episode being written, its number
    /// here, and its file.
    current: Option<(u64, u64, BufWriter<std::fs::File>)>,
    /// The number the next new episode gets.
    next_episode: u64,
    pub episodes_written: u64,
    /// The first write error, as "recording to DIR: error"; recording
    /// stops, the loop does not (see [`EpisodeRecorder::failure`]).
    pub error: Option<String>,
    /// That error alone, for [`RecordingFailure::message`].
    cause: Option<String>,
}

/// `episode-NNNNNNNN` of an episode file's name (complete or `.partial`).
fn episode_number(name: &str) -> Option<u64> {
    let stem = name
        .strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".jsonl.partial"))?;
    stem.strip_prefix("episode-")?.parse().ok()
}

/// The numbers of the episode files in `dir`: complete, and `.partial`.
fn episode_files(dir: &Path) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let (mut complete, mut partial) = (Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((complete, partial)),
        Err(e) => anyhow::bail!("cannot list {}: {e}", dir.display()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = episode_number(&name) {
            if name.ends_with(".partial") {
                partial.push(number);
            } else {
                complete.push(number);
            }
        }
    }
    complete.sort_unstable();
    partial.sort_unstable();
    Ok((complete, partial))
}

impl EpisodeRecorder {
    /// A new recording in `dir`; refuses a directory that holds one.
    pub fn create(dir: &Path, robot: &RobotSpec) -> anyhow::Result<Self> {
        Self::open(dir, EpisodesMeta::new(robot, &[], None), Existing::Refuse)
    }

    /// A new recording whose episodes carry stage annotations named
    /// `stages`; refuses a directory that holds one.
    pub fn create_with_stages(
        dir: &Path,
        robot: &RobotSpec,
        stages: &[&str],
    ) -> anyhow::Result<Self> {
        Self::open(
            dir,
            EpisodesMeta::new(robot, stages, None),
            Existing::Refuse,
        )
    }

    /// A recorder of episodes described by `meta` into `dir`. A directory
    /// with neither `meta.json` nor episode files gets a new recording
    /// (`meta.json` written atomically); one that holds a recording is
    /// refused, naming it, or with [`Existing::Append`] is added to when
    /// its `meta.json` describes the same episodes (an error names what
    /// differs), numbering new episodes after its last episode file, so no
    /// file there is ever replaced.
    pub fn open(dir: &Path, meta: EpisodesMeta, existing: Existing) -> anyhow::Result<Self> {
        let meta_path = dir.join(META_FILE);
        let (complete, partial) = episode_files(dir)?;
        let has_meta = meta_path.exists();
        let next_episode = if !has_meta && complete.is_empty() && partial.is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            write_atomically(&meta_path, &serde_json::to_vec_pretty(&meta)?)?;
            0
        } else {
            let holds = format!(
                "{} already holds a recording ({}{} complete episodes{})",
                dir.display(),
                if has_meta {
                    "meta.json, "
                } else {
                    "no meta.json, "
                },
                complete.len(),
                if partial.is_empty() {
                    String::new()
                } else {
                    format!(", {} unfinished", partial.len())
                }
            );
            anyhow::ensure!(
                existing == Existing::Append,
                "{holds}: pass --append to add episodes to it, or choose another directory"
            );
            anyhow::ensure!(has_meta, "{holds}: cannot append without its meta.json");
            let recorded: EpisodesMeta = serde_json::from_slice(&read_regular_file(&meta_path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
            if let Some(difference) = meta.difference(&recorded) {
                anyhow::bail!(
                    "cannot append to {}: its episodes were recorded differently ({difference}); choose another directory",
                    dir.display()
                );
            }
            complete.iter().chain(&partial).max().map_or(0, |n| n + 1)
        };
        Ok(Self {
            dir: dir.to_owned(),
            current: None,
            next_episode,
            episodes_written: 0,
            error: None,
            cause: None,
        })
    }

    /// The number the next episode's file gets (`episode-NNNNNNNN.jsonl`).
    pub fn next_episode(&self) -> u64 {
        self.next_episode
    }

    /// The write error that stopped this recording, if one did: a run that
    /// recorded must report it in its summary and exit code.
    pub fn failure(&self) -> Option<RecordingFailure> {
        self.cause.as_ref().map(|message| RecordingFailure {
            dir: self.dir.clone(),
            episodes_written: self.episodes_written,
            message: message.clone(),
        })
    }

    fn path(&self, episode: u64) -> PathBuf {
        self.dir.join(format!("episode-{episode:08}.jsonl"))
    }

    fn write(&mut self, transition: &Transition) -> std::io::Result<()> {
        let id = transition.provenance.episode_id;
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _, _)| *current != id)
        {
            // Episodes are numbered in the order they arrive; one left
            // unfinished (the producer moved on) stays `.partial`.
            let number = self.next_episode;
            let path = self.path(number).with_extension("jsonl.partial");
            let file = std::fs::File::create_new(&path)?;
            self.next_episode += 1;
            self.current = Some((id, number, BufWriter::new(file)));
        }
        let (_, _, writer) = self.current.as_mut().expect("opened above");
        serde_json::to_writer(&mut *writer, transition)?;
        writer.write_all(b"\n")?;
        if transition.terminated || transition.truncated {
            let (_, number, writer) = self.current.take().expect("opened above");
            writer
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            let path = self.path(number);
            std::fs::rename(path.with_extension("jsonl.partial"), path)?;
            self.episodes_written += 1;
        }
        Ok(())
    }
}

impl TransitionSink for EpisodeRecorder {
    fn push(&mut self, transition: Transition) -> bool {
        if self.error.is_some() {
            return false;
        }
        match self.write(&transition) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(format!("recording to {}: {e}", self.dir.display()));
                self.cause = Some(e.to_string());
                false
            }
        }
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of `bytes`, never part: a temporary file beside it, synced, renamed
/// over it, the directory synced. The error names `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a power cut once the directory is
        // synced (not every platform can open a directory: best effort).
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// An episode file [`read_recording`] did not count as a complete
/// episode, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A recording as [`read_recording`] found it.
#[derive(Clone, Debug)]
pub struct Recording {
    pub dir: PathBuf,
    pub meta: EpisodesMeta,
    /// The complete episodes, in episode-number order: each non-empty, its
    /// last transition (and no other) terminated or truncated, all of one
    /// robot's episode id, seen in no other file.
    pub episodes: Vec<Vec<Transition>>,
    /// The file each of `episodes` was read from.
    pub files: Vec<PathBuf>,
    /// Every file that looks like an episode and was not counted as one,
    /// with the reason: unfinished (`.partial`), empty, not ended, holding
    /// more than one episode, a duplicate, or not named as an episode file.
    pub skipped: Vec<Skipped>,
}

impl Recording {
    /// The skipped files in words, the first few of them (for a summary
    /// or an error).
    pub fn skipped_summary(&self) -> String {
        const SHOWN: usize = 5;
        let mut text: Vec<String> = self
            .skipped
            .iter()
            .take(SHOWN)
            .map(Skipped::to_string)
            .collect();
        if self.skipped.len() > SHOWN {
            text.push(format!("and {} more", self.skipped.len() - SHOWN));
        }
        text.join("; ")
    }
}

/// The bytes of the regular file at `path`; anything else there (a
/// directory, a FIFO that would block forever, a device) is an error
/// naming it, as is a file that cannot be read. For any file a command
/// reads (a config, a recording's meta.json).
pub fn read_regular_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    anyhow::ensure!(
        metadata.is_file(),
        "{} is {}, expected a file",
        path.display(),
        if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        }
    );
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// [`read_regular_file`] as UTF-8 text (config files: `--config`,
/// `--env-config`, `--envelope`).
pub fn read_text_file(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read_regular_file(path)?)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", path.display()))
}

/// `meta.json` of the recording in `dir`, checked: the format and version
/// this reader knows, a well-formed robot spec.
pub fn read_meta(dir: &Path) -> anyhow::Result<EpisodesMeta> {
    let meta_path = dir.join(META_FILE);
    let meta: EpisodesMeta = serde_json::from_slice(&read_regular_file(&meta_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
    anyhow::ensure!(
        meta.format == FORMAT && meta.version == VERSION,
        "{}: format {} version {}, expected {FORMAT} version {VERSION}",
        meta_path.display(),
        meta.format,
        meta.version
    );
    meta.robot
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: robot: {e}", meta_path.display()))?;
    Ok(meta)
}

/// One transition's values checked against the recording's spec: the
/// observation (finite, within limits), both actions (the spec's length,
/// finite), every reward component and the log-probability finite, the
/// stage one that `meta.json` names.
fn check_transition(meta: &EpisodesMeta, t: &Transition) -> Result<(), String> {
    meta.robot
        .observation
        .check(&t.observation)
        .map_err(|e| e.to_string())?;
    let actions = meta.robot.action.len();
    for (name, action) in [
        ("policy_action", &t.policy_action),
        ("sent_command", &t.sent_command),
    ] {
        if action.values.len() != actions {
            return Err(format!(
                "{name} has {} values, the spec's action has {actions}",
                action.values.len()
            ));
        }
        if let Some((i, v)) = action
            .values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(format!("{name}[{i}] is {v}, not a finite number"));
        }
    }
    if let Some((name, value)) = t.rewards.iter().find(|(_, r)| !r.is_finite()) {
        return Err(format!("reward `{name}` is {value}, not a finite number"));
    }
    if let Some(p) = t.behaviour_log_prob.filter(|p| !p.is_finite()) {
        return Err(format!("behaviour_log_prob is {p}, not a finite number"));
    }
    if !(t.sim_time.is_finite() && t.wall_time.is_finite() && t.observation.timestamp.is_finite()) {
        return Err(format!(
            "sim_time {}, wall_time {}, observation timestamp {}: times must be finite",
            t.sim_time, t.wall_time, t.observation.timestamp
        ));
    }
    if let Some(stage) = t.stage
        && stage as usize >= meta.stages.len()
    {
        return Err(format!(
            "stage {stage}, but {META_FILE} names {} stages ([{}]): a stage must be in [0, {})",
            meta.stages.len(),
            meta.stages.join(", "),
            meta.stages.len()
        ));
    }
    Ok(())
}

/// Reads the episode file at `path`: every line a transition the spec
/// accepts (an error names the file, the line and the value), then
/// `Ok(Err(reason))` when the transitions do not make one complete episode.
fn read_episode_file(
    meta: &EpisodesMeta,
    path: &Path,
) -> anyhow::Result<Result<Vec<Transition>, String>> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    anyhow::ensure!(
        metadata.is_file(),
        "{} is {}, expected an episode file (one transition per line)",
        path.display(),
        if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        }
    );
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut episode: Vec<Transition> = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at =
            |e: &dyn std::fmt::Display| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1);
        let line = line.map_err(|e| at(&e))?;
        let transition: Transition = serde_json::from_str(&line).map_err(|e| at(&e))?;
        check_transition(meta, &transition).map_err(|e| at(&e))?;
        episode.push(transition);
    }
    let Some(last) = episode.last() else {
        return Ok(Err("empty: no transition".into()));
    };
    let first = &episode[0].provenance;
    for (n, t) in episode.iter().enumerate() {
        let p = &t.provenance;
        if (&p.robot_id, p.episode_id) != (&first.robot_id, first.episode_id) {
            return Ok(Err(format!(
                "holds more than one episode: line 1 is episode {} of robot `{}`, line {} episode {} of robot `{}`",
                first.episode_id,
                first.robot_id,
                n + 1,
                p.episode_id,
                p.robot_id
            )));
        }
        if n > 0 && p.step <= episode[n - 1].provenance.step {
            return Ok(Err(format!(
                "line {} has step {} after step {} on line {}: steps must increase (a repeated or reordered transition)",
                n + 1,
                p.step,
                episode[n - 1].provenance.step,
                n
            )));
        }
        if (t.terminated || t.truncated) && n + 1 < episode.len() {
            return Ok(Err(format!(
                "the episode ends on line {} ({}) but the file goes on to line {}",
                n + 1,
                if t.terminated {
                    "terminated"
                } else {
                    "truncated"
                },
                episode.len()
            )));
        }
    }
    if !(last.terminated || last.truncated) {
        return Ok(Err(format!(
            "does not end: its last transition (line {}) is neither terminated nor truncated",
            episode.len()
        )));
    }
    Ok(Ok(episode))
}

/// Reads the recording in `dir` and decides which of its files are
/// complete episodes; the one reader of recordings (docs/episodes.md).
///
/// Errors, each naming the path (and line, field and value where there is
/// one): `dir` not a directory, `meta.json` missing, malformed, of another
/// format or version or with a malformed spec; an episode file that is not
/// a regular file (a directory); a line that is not a transition or that
/// the spec refuses (wrong length, not finite, out of limits, a stage
/// `meta.json` does not name).
///
/// Skipped, and listed in [`Recording::skipped`] with the reason: a
/// `.partial` file (unfinished), an empty file, one whose last transition
/// is neither terminated nor truncated, one that ends and goes on, holds
/// two episodes or repeats a step, a second file for an episode number or
/// for one robot's episode id already read, a `.jsonl` file not named
/// `episode-NNNNNNNN.jsonl`.
pub fn read_recording(dir: &Path) -> anyhow::Result<Recording> {
    let metadata = std::fs::metadata(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the recording {}: {e}", dir.display()))?;
    anyhow::ensure!(
        metadata.is_dir(),
        "{} is a file, expected a recording's directory (meta.json and episode files)",
        dir.display()
    );
    let meta = read_meta(dir)?;
    let mut skipped = Vec::new();
    let mut candidates: Vec<(u64, bool, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match episode_number(&name) {
            Some(_) if name.ends_with(".partial") => skipped.push(Skipped {
                path,
                reason: "unfinished (.partial): still being written, or its recording stopped mid-episode".into(),
            }),
            Some(number) => {
                let canonical = name == format!("episode-{number:08}.jsonl");
                candidates.push((number, !canonical, path));
            }
            None if name.ends_with(".jsonl") || name.ends_with(".jsonl.partial") => {
                skipped.push(Skipped {
                    path,
                    reason: "not an episode file name (episode-NNNNNNNN.jsonl)".into(),
                })
            }
            None => {}
        }
    }
    // The canonical name of a number first, so a stray copy is the one
    // skipped.
    candidates.sort();
    let mut episodes = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut numbers: std::collections::HashMap<u64, PathBuf> = Default::default();
    // An episode's identity: its robot and episode id, and when and where
    // it began (a run appended to a recording numbers its episodes from 0
    // again; a copied file repeats all of it).
    let mut ids: std::collections::HashMap<(String, u64, u64, u64), PathBuf> = Default::default();
    for (number, _, path) in candidates {
        if let Some(first) = numbers.get(&number) {
            skipped.push(Skipped {
                reason: format!(
                    "a second file for episode number {number} (read {})",
                    first.display()
                ),
                path,
            });
            continue;
        }
        numbers.insert(number, path.clone());
        let episode = match read_episode_file(&meta, &path)? {
            Ok(episode) => episode,
            Err(reason) => {
                skipped.push(Skipped { path, reason });
                continue;
            }
        };
        let first_tick = &episode[0];
        let p = &first_tick.provenance;
        let start = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            first_tick.sim_time.to_bits().hash(&mut hasher);
            for v in &first_tick.observation.state {
                v.to_bits().hash(&mut hasher);
            }
            hasher.finish()
        };
        let id = (
            p.robot_id.clone(),
            p.episode_id,
            first_tick.wall_time.to_bits(),
            start,
        );
        if let Some(first) = ids.get(&id) {
            skipped.push(Skipped {
                reason: format!(
                    "a duplicate: episode id {} of robot `{}` was already read from {}",
                    id.1,
                    id.0,
                    first.display()
                ),
                path,
            });
            continue;
        }
        ids.insert(id, path.clone());
        episodes.push(episode);
        files.push(path);
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Recording {
        dir: dir.to_owned(),
        meta,
        episodes,
        files,
        skipped,
    })
}

/// [`read_recording`] for a command that uses the episodes: each skipped
/// file is logged as a warning with its reason, and a recording with no
/// complete episode is an error that names the files it skipped (never an
/// empty data set). The skipped files stay in the result, for a summary.
pub fn read_complete_recording(dir: &Path) -> anyhow::Result<Recording> {
    let recording = read_recording(dir)?;
    for skipped in &recording.skipped {
        tracing::warn!(
            recording = %dir.display(),
            "skipped {}: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
    anyhow::ensure!(
        !recording.episodes.is_empty(),
        "{} holds no complete episode{}",
        dir.display(),
        if recording.skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped {})", recording.skipped_summary())
        }
    );
    Ok(recording)
}

/// The complete episodes of the recording in `dir`, in episode order, as
/// [`read_complete_recording`] reads them (skipped files logged, none
/// complete an error).
pub fn read_episodes(dir: &Path) -> anyhow::Result<(EpisodesMeta, Vec<Vec<Transition>>)> {
    let recording = read_complete_recording(dir)?;
    Ok((recording.meta, recording.episodes))
}
