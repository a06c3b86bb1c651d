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
            let recorded: EpisodesMeta = serde_json::from_slice(
                &std::fs::read(&meta_path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", meta_path.display()))?,
            )
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

/// Every finished episode in `dir`, in episode order; a malformed line is an
/// error naming the file and line.
pub fn read_episodes(dir: &Path) -> anyhow::Result<(EpisodesMeta, Vec<Vec<Transition>>)> {
    let meta_path = dir.join(META_FILE);
    let meta: EpisodesMeta = serde_json::from_slice(
        &std::fs::read(&meta_path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", meta_path.display()))?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
    anyhow::ensure!(
        meta.format == FORMAT && meta.version == VERSION,
        "{}: format {} version {}, expected {FORMAT} version {VERSION}",
        meta_path.display(),
        meta.format,
        meta.version
    );
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    let mut episodes = Vec::with_capacity(paths.len());
    for path in paths {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        let mut episode = Vec::new();
        for (n, line) in file.lines().enumerate() {
            let transition: Transition = serde_json::from_str(&line?)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?;
            meta.robot
                .observation
                .check(&transition.observation)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?;
            episode.push(transition);
        }
        episodes.push(episode);
    }
    Ok((meta, episodes))
}
