//! Episodes on disk, in the one format that `record`, teleop demonstrations
//! and replay buffers share (docs/episodes.md):
//!
//!   DIR/meta.json               format name and version, the robot spec
//!   DIR/episode-NNNNNNNN.jsonl  one `Transition` (serde JSON) per line
//!
//! An episode is written to `episode-….jsonl.partial` and renamed when it
//! ends, so a reader never sees half an episode; a run that stops mid-way
//! leaves its last episode as `.partial`, which readers skip.

use crate::control_loop::TransitionSink;
use cerebellum_core::{RobotSpec, Transition};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "cerebellum-episodes";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodesMeta {
    pub format: String,
    pub version: u32,
    pub robot: RobotSpec,
    /// Names of the task stages `Transition::stage` indexes (empty when the
    /// episodes carry no stage annotations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
}

pub struct EpisodeRecorder {
    dir: PathBuf,
    current: Option<(u64, BufWriter<std::fs::File>)>,
    pub episodes_written: u64,
    /// The first write error; recording stops, the loop does not.
    pub error: Option<String>,
}

impl EpisodeRecorder {
    pub fn create(dir: &Path, robot: &RobotSpec) -> anyhow::Result<Self> {
        Self::create_with_stages(dir, robot, &[])
    }

    /// A recorder whose episodes carry stage annotations named `stages`.
    pub fn create_with_stages(
        dir: &Path,
        robot: &RobotSpec,
        stages: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let meta = EpisodesMeta {
            format: FORMAT.into(),
            version: VERSION,
            robot: robot.clone(),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
        };
        std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: None,
            episodes_written: 0,
            error: None,
        })
    }

    fn path(&self, episode: u64) -> PathBuf {
        self.dir.join(format!("episode-{episode:08}.jsonl"))
    }

    fn write(&mut self, transition: &Transition) -> std::io::Result<()> {
        let episode = transition.provenance.episode_id;
        if self.current.as_ref().is_none_or(|(id, _)| *id != episode) {
            let path = self.path(episode).with_extension("jsonl.partial");
            self.current = Some((episode, BufWriter::new(std::fs::File::create(path)?)));
        }
        let (_, writer) = self.current.as_mut().expect("opened above");
        serde_json::to_writer(&mut *writer, transition)?;
        writer.write_all(b"\n")?;
        if transition.terminated || transition.truncated {
            let (id, writer) = self.current.take().expect("opened above");
            writer
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            std::fs::rename(self.path(id).with_extension("jsonl.partial"), self.path(id))?;
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
                false
            }
        }
    }
}

/// Every finished episode in `dir`, in episode order; a malformed line is an
/// error naming the file and line.
pub fn read_episodes(dir: &Path) -> anyhow::Result<(EpisodesMeta, Vec<Vec<Transition>>)> {
    let meta_path = dir.join("meta.json");
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
