//! Episodes on disk, in the one format that `record`, teleop demonstrations
//! and replay buffers share (docs/episodes.md):
//!
//!   DIR/meta.json               format name and version, the robot spec
//!   DIR/episode-NNNNNNNN.jsonl  one `Transition` (serde JSON) per line
//!
//! Format version 2 stores every camera image as a base64 PNG
//! (`{"camera", "height", "width", "channels", "png"}`, see [`encode_png`]);
//! version 1 as one JSON number per byte (`"data": [..]`). Readers read
//! both, by the version in `meta.json`; writers write version 2, except
//! that episodes appended to a version 1 recording stay version 1.
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
use cerebellum_core::{Action, Image, Provenance, RewardComponents, RobotSpec, Transition};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "cerebellum-episodes";
/// The version new recordings are written in: camera images as base64 PNG.
pub const VERSION: u32 = 2;
/// The first version: camera images as arrays of byte values.
pub const VERSION_BYTE_ARRAYS: u32 = 1;
/// The versions this reader reads.
pub const VERSIONS: [u32; 2] = [VERSION_BYTE_ARRAYS, VERSION];
pub const META_FILE: &str = "meta.json";
/// The most bytes one decoded camera frame may hold (a corrupt or hostile
/// file never makes the reader allocate more): 64 MiB, 4096×4096 RGBA.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;

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
    /// The format version of the recording written to: [`VERSION`], or
    /// [`VERSION_BYTE_ARRAYS`] when appending to a version 1 recording.
    version: u32,
    /// The line being written (one `write` per transition).
    line: Vec<u8>,
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
    ///
    /// New recordings are format [`VERSION`] (images as PNG: every camera
    /// of the spec must be 1 to 4 channels, at least 1×1 and at most
    /// [`MAX_FRAME_BYTES`]); a version 1 recording appended to stays
    /// version 1 (images as byte arrays), so no recording mixes the two.
    pub fn open(dir: &Path, mut meta: EpisodesMeta, existing: Existing) -> anyhow::Result<Self> {
        let meta_path = dir.join(META_FILE);
        let check_cameras = |meta: &EpisodesMeta| -> anyhow::Result<()> {
            if meta.version != VERSION {
                return Ok(());
            }
            for camera in &meta.robot.observation.cameras {
                png_shape(camera.height, camera.width, camera.channels).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot record camera `{}` in {}: {e}",
                        camera.name,
                        dir.display()
                    )
                })?;
            }
            Ok(())
        };
        let (complete, partial) = episode_files(dir)?;
        let has_meta = meta_path.exists();
        let next_episode = if !has_meta && complete.is_empty() && partial.is_empty() {
            check_cameras(&meta)?;
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
            if recorded.format == FORMAT && meta.format == FORMAT {
                anyhow::ensure!(
                    VERSIONS.contains(&recorded.version),
                    "cannot append to {}: {} says format version {}, this cerebellum writes versions {} (a newer cerebellum wrote it?); choose another directory",
                    dir.display(),
                    meta_path.display(),
                    recorded.version,
                    versions_in_words()
                );
                // Episodes appended to a version 1 recording are written
                // as version 1: one recording, one format.
                meta.version = recorded.version;
            }
            if let Some(difference) = meta.difference(&recorded) {
                anyhow::bail!(
                    "cannot append to {}: its episodes were recorded differently ({difference}); choose another directory",
                    dir.display()
                );
            }
            check_cameras(&meta)?;
            complete.iter().chain(&partial).max().map_or(0, |n| n + 1)
        };
        Ok(Self {
            dir: dir.to_owned(),
            current: None,
            next_episode,
            episodes_written: 0,
            error: None,
            cause: None,
            version: meta.version,
            line: Vec::new(),
        })
    }

    /// The format version this recorder writes (that of its recording).
    pub fn version(&self) -> u32 {
        self.version
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
        // The whole line first, so an image that cannot be encoded leaves
        // nothing half-written (not even an empty episode file).
        self.line.clear();
        if self.version == VERSION_BYTE_ARRAYS {
            serde_json::to_writer(&mut self.line, transition)?;
        } else {
            serde_json::to_writer(&mut self.line, &DiskTransition::new(transition)?)?;
        }
        self.line.push(b'\n');
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
        writer.write_all(&self.line)?;
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

/// "1 and 2": the versions this reader reads, in words.
fn versions_in_words() -> String {
    let versions: Vec<String> = VERSIONS.iter().map(u32::to_string).collect();
    versions.join(" and ")
}

/// The PNG colour type of an image of `channels` 8-bit channels, and its
/// frame's length in bytes; an error in words for a shape PNG cannot hold
/// (0 or more than 4 channels, an empty image) or one larger than
/// [`MAX_FRAME_BYTES`].
fn png_shape(height: u32, width: u32, channels: u32) -> Result<(png::ColorType, usize), String> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        n => {
            return Err(format!(
                "{n} channels: a frame on disk (PNG) has 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA)"
            ));
        }
    };
    if height == 0 || width == 0 {
        return Err(format!(
            "{height}×{width} (height×width): a frame on disk (PNG) is at least 1×1"
        ));
    }
    let bytes = u64::from(height) * u64::from(width) * u64::from(channels);
    if bytes > MAX_FRAME_BYTES {
        return Err(format!(
            "{height}×{width}×{channels} (height×width×channels) is {bytes} bytes, more than the {MAX_FRAME_BYTES} a frame may hold"
        ));
    }
    Ok((color, bytes as usize))
}

/// The compression of frames on disk: `fdeflate`'s fast mode with the
/// adaptive (per-row) filter; measured against the other levels in
/// docs/BENCHMARKS.md ("Frames on disk").
const FRAME_COMPRESSION: png::DeflateCompression = png::DeflateCompression::FdeflateUltraFast;
const FRAME_FILTER: png::Filter = png::Filter::Adaptive;

/// `image` as the PNG stored in episodes format version 2: 8-bit, grey
/// (1 channel), grey and alpha (2), RGB (3) or RGBA (4), not interlaced,
/// no ancillary chunks. An error in words (naming the camera) for an image
/// whose bytes do not fill its shape or that PNG cannot hold.
pub fn encode_png(image: &Image) -> Result<Vec<u8>, String> {
    let (color, bytes) = png_shape(image.height, image.width, image.channels)
        .map_err(|e| format!("camera `{}`: {e}", image.camera))?;
    if image.data.len() != bytes {
        return Err(format!(
            "camera `{}`: {}×{}×{} (height×width×channels) needs {bytes} bytes, the image holds {}",
            image.camera,
            image.height,
            image.width,
            image.channels,
            image.data.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes / 2 + 128);
    let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_deflate_compression(FRAME_COMPRESSION);
    encoder.set_filter(FRAME_FILTER);
    let failed = |e: png::EncodingError| format!("camera `{}`: PNG: {e}", image.camera);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(&image.data).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

/// The bytes of the PNG `png`, which must be an image of exactly `height`
/// × `width` × `channels` 8-bit values as [`encode_png`] writes it (any
/// compression or filter, interlaced or not). An error in words names both
/// shapes when they differ; a corrupt PNG is an error, never a panic, and
/// nothing larger than [`MAX_FRAME_BYTES`] is allocated.
pub fn decode_png(png: &[u8], height: u32, width: u32, channels: u32) -> Result<Vec<u8>, String> {
    let (color, bytes) = png_shape(height, width, channels)?;
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(png),
        png::Limits {
            bytes: MAX_FRAME_BYTES as usize,
        },
    );
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a PNG image: {e}"))?;
    let info = reader.info();
    let found_channels = match info.color_type {
        png::ColorType::Grayscale => Some(1),
        png::ColorType::GrayscaleAlpha => Some(2),
        png::ColorType::Rgb => Some(3),
        png::ColorType::Rgba => Some(4),
        png::ColorType::Indexed => None,
    };
    if found_channels != Some(channels)
        || info.bit_depth != png::BitDepth::Eight
        || (info.height, info.width) != (height, width)
    {
        return Err(format!(
            "the PNG is {}×{}×{} ({:?}, {}-bit), the image declares {height}×{width}×{channels} ({color:?}, 8-bit; height×width×channels)",
            info.height,
            info.width,
            found_channels.map_or_else(|| "?".to_owned(), |c: u32| c.to_string()),
            info.color_type,
            info.bit_depth as u8
        ));
    }
    let mut data = vec![0; bytes];
    let frame = reader
        .next_frame(&mut data)
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    if frame.buffer_size() != bytes {
        return Err(format!(
            "the PNG decodes to {} bytes, the image declares {bytes}",
            frame.buffer_size()
        ));
    }
    Ok(data)
}

/// An image as a line of format version 2 holds it: its shape and its
/// bytes as a base64 (standard alphabet, padded) PNG.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PngImage<'a> {
    #[serde(borrow)]
    camera: std::borrow::Cow<'a, str>,
    height: u32,
    width: u32,
    channels: u32,
    png: String,
}

/// An observation as a line of format version 2 holds it.
#[derive(Serialize)]
struct DiskObservation<'a> {
    state: &'a [f32],
    images: Vec<PngImage<'a>>,
    instruction: &'a Option<String>,
    timestamp: f64,
}

/// A transition as a line of format version 2 holds it: `Transition`'s
/// own serialisation, field for field, but for the images (a unit test
/// holds the two together).
#[derive(Serialize)]
struct DiskTransition<'a> {
    provenance: &'a Provenance,
    sim_time: f64,
    wall_time: f64,
    observation: DiskObservation<'a>,
    policy_action: &'a Action,
    sent_command: &'a Action,
    behaviour_log_prob: Option<f32>,
    chunk_index: u32,
    intervention: bool,
    safety_clamped: bool,
    rewards: &'a RewardComponents,
    terminated: bool,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reward_version: Option<u64>,
}

impl<'a> DiskTransition<'a> {
    /// `t` with its images PNG-encoded; an image that cannot be is an
    /// `InvalidInput` error naming its camera.
    fn new(t: &'a Transition) -> std::io::Result<Self> {
        use base64::Engine;
        // Every field by name: a field added to `Transition` fails to
        // compile here until the line format has it.
        let Transition {
            provenance,
            sim_time,
            wall_time,
            observation,
            policy_action,
            sent_command,
            behaviour_log_prob,
            chunk_index,
            intervention,
            safety_clamped,
            rewards,
            terminated,
            truncated,
            success,
            stage,
            reward_version,
        } = t;
        let cerebellum_core::Observation {
            state,
            images,
            instruction,
            timestamp,
        } = observation;
        let images = images
            .iter()
            .map(|image| {
                let png = encode_png(image)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                Ok(PngImage {
                    camera: std::borrow::Cow::Borrowed(&image.camera),
                    height: image.height,
                    width: image.width,
                    channels: image.channels,
                    png: base64::engine::general_purpose::STANDARD.encode(png),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            provenance,
            sim_time: *sim_time,
            wall_time: *wall_time,
            observation: DiskObservation {
                state,
                images,
                instruction,
                timestamp: *timestamp,
            },
            policy_action,
            sent_command,
            behaviour_log_prob: *behaviour_log_prob,
            chunk_index: *chunk_index,
            intervention: *intervention,
            safety_clamped: *safety_clamped,
            rewards,
            terminated: *terminated,
            truncated: *truncated,
            success: *success,
            stage: *stage,
            reward_version: *reward_version,
        })
    }
}

/// `transition` as one line of an episode file of format `version`
/// (without the newline): for tools that write episode files themselves
/// and for tests. An error in words for an image that cannot be stored.
pub fn transition_line(transition: &Transition, version: u32) -> Result<String, String> {
    let line = if version == VERSION_BYTE_ARRAYS {
        serde_json::to_string(transition)
    } else {
        serde_json::to_string(&DiskTransition::new(transition).map_err(|e| e.to_string())?)
    };
    line.map_err(|e| e.to_string())
}

/// The images of a line that are in the other version's form: the index
/// and camera of the first image whose object has `key`.
fn image_with(value: &serde_json::Value, key: &str) -> Option<(usize, String)> {
    let images = value.get("observation")?.get("images")?.as_array()?;
    images.iter().enumerate().find_map(|(i, image)| {
        let image = image.as_object()?;
        image.contains_key(key).then(|| {
            let camera = image.get("camera").and_then(|c| c.as_str()).unwrap_or("?");
            (i, camera.to_owned())
        })
    })
}

/// One line of an episode file of format `version` as a transition; an
/// error in words (the caller adds the file and line) for a line that is
/// not one: malformed JSON, an image in the other version's form, base64
/// or a PNG that does not decode, a PNG whose shape is not the one the
/// image declares.
pub fn parse_line(line: &str, version: u32) -> Result<Transition, String> {
    use base64::Engine;
    if version == VERSION_BYTE_ARRAYS {
        return serde_json::from_str(line).map_err(|e| {
            match serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|value| image_with(&value, "png"))
            {
                Some((i, camera)) => format!(
                    "observation.images[{i}] (camera `{camera}`) is a PNG (`png`, episodes format version {VERSION}) but {META_FILE} says version {VERSION_BYTE_ARRAYS} (images as byte arrays, `data`)"
                ),
                None => e.to_string(),
            }
        });
    }
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if let Some((i, camera)) = image_with(&value, "data") {
        return Err(format!(
            "observation.images[{i}] (camera `{camera}`) is a byte array (`data`, episodes format version {VERSION_BYTE_ARRAYS}) but {META_FILE} says version {version} (images as PNG, `png`)"
        ));
    }
    let encoded = match value
        .get_mut("observation")
        .and_then(|o| o.get_mut("images"))
    {
        Some(images) => std::mem::replace(images, serde_json::Value::Array(Vec::new())),
        None => serde_json::Value::Array(Vec::new()),
    };
    let serde_json::Value::Array(encoded) = encoded else {
        return Err(format!(
            "observation.images is {encoded}, expected an array of images"
        ));
    };
    let mut images = Vec::with_capacity(encoded.len());
    for (i, image) in encoded.iter().enumerate() {
        let image =
            PngImage::deserialize(image).map_err(|e| format!("observation.images[{i}]: {e}"))?;
        let at = |e: String| {
            format!(
                "observation.images[{i}] (camera `{}`, {}×{}×{} height×width×channels): {e}",
                image.camera, image.height, image.width, image.channels
            )
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(&image.png)
            .map_err(|e| at(format!("`png` is not base64: {e}")))?;
        let data = decode_png(&png, image.height, image.width, image.channels).map_err(at)?;
        images.push(Image {
            camera: image.camera.into_owned(),
            height: image.height,
            width: image.width,
            channels: image.channels,
            data,
        });
    }
    let mut transition: Transition = serde_json::from_value(value).map_err(|e| e.to_string())?;
    transition.observation.images = images;
    Ok(transition)
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
        meta.format == FORMAT && VERSIONS.contains(&meta.version),
        "{}: format {} version {}, expected {FORMAT} version {}",
        meta_path.display(),
        meta.format,
        meta.version,
        versions_in_words().replace(" and ", " or ")
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
        let transition = parse_line(&line, meta.version).map_err(|e| at(&e))?;
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
/// `meta.json` does not name); an image in the other format version's form
/// (a byte array in version 2, a PNG in version 1), whose `png` is not
/// base64 or not a PNG, or whose PNG is not the shape the image declares
/// (naming the camera and both shapes).
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
