//! Episodes format version 2 (docs/episodes.md): camera frames on disk as
//! base64 PNG. Frames come back bit-exact; version 1 recordings (byte
//! arrays) still read the same; an image in the other version's form, bad
//! base64, a corrupt PNG or a PNG of another shape is an error naming the
//! file, the line and the camera; an interrupted recording is skipped as
//! before; appending to a version 1 recording keeps it version 1; a real
//! 64×64 sim frame costs a few KB.

mod common;

use cerebellum_core::{
    Action, ActionSpec, CameraSpec, FieldSpec, Image, Observation, ObservationSpec, Provenance,
    RewardComponents, RobotSpec, Transition, Unit,
};
use cerebellum_runtime::control_loop::TransitionSink;
use cerebellum_runtime::recorder::{
    EpisodeRecorder, EpisodesMeta, Existing, META_FILE, VERSION, VERSION_BYTE_ARRAYS, decode_png,
    encode_png, read_recording, transition_line,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-episodes-v2-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Cameras of every PNG colour type, odd sizes among them.
fn cameras() -> Vec<CameraSpec> {
    let camera = |name: &str, height, width, channels| CameraSpec {
        name: name.into(),
        height,
        width,
        channels,
    };
    vec![
        camera("front", 64, 64, 3),
        camera("dot", 1, 1, 3),
        camera("grey", 5, 7, 1),
        camera("wrist/left", 9, 13, 4),
        camera("depthish", 3, 2, 2),
    ]
}

fn spec(cameras: Vec<CameraSpec>) -> RobotSpec {
    RobotSpec {
        name: "test-arm".into(),
        observation: ObservationSpec {
            fields: vec![FieldSpec::new(
                "joints",
                Unit::Radian,
                &["a", "b"],
                &[(-1.0, 1.0), (-1.0, 1.0)],
            )],
            cameras,
            instruction: false,
        },
        action: ActionSpec {
            fields: vec![FieldSpec::new(
                "targets",
                Unit::Radian,
                &["a", "b"],
                &[(-1.0, 1.0), (-1.0, 1.0)],
            )],
        },
        control_rate_hz: 30.0,
    }
}

/// An episode of `len` ticks whose images are random bytes.
fn episode(spec: &RobotSpec, id: u64, len: u32, rng: &mut ChaCha8Rng) -> Vec<Transition> {
    (0..len)
        .map(|step| {
            let images = spec
                .observation
                .cameras
                .iter()
                .map(|c| Image {
                    camera: c.name.clone(),
                    height: c.height,
                    width: c.width,
                    channels: c.channels,
                    data: (0..c.frame_len()).map(|_| rng.random()).collect(),
                })
                .collect();
            let last = step + 1 == len;
            Transition {
                provenance: Provenance {
                    robot_id: spec.name.clone(),
                    episode_id: id,
                    task_instance_id: id,
                    group_id: None,
                    step,
                    policy_version: 0,
                },
                sim_time: f64::from(step) / 30.0,
                wall_time: 1.7e9 + f64::from(step),
                observation: Observation {
                    state: vec![rng.random_range(-1.0..1.0), 0.25],
                    images,
                    instruction: None,
                    timestamp: f64::from(step) / 30.0,
                },
                policy_action: Action::new(vec![0.5, -0.5]),
                sent_command: Action::new(vec![0.5, -0.25]),
                behaviour_log_prob: Some(-1.5),
                chunk_index: 0,
                intervention: false,
                safety_clamped: false,
                rewards: RewardComponents::new().with(RewardComponents::TASK, -0.125),
                terminated: false,
                truncated: last,
                success: last.then_some(false),
                stage: None,
                reward_version: None,
            }
        })
        .collect()
}

/// A version 2 recording of two episodes of random frames on every camera
/// of [`cameras`], and the transitions written.
fn v2_recording(name: &str) -> (PathBuf, Vec<Vec<Transition>>) {
    let dir = fresh_dir(name);
    let spec = spec(cameras());
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let episodes = vec![
        episode(&spec, 0, 4, &mut rng),
        episode(&spec, 1, 3, &mut rng),
    ];
    let mut recorder = EpisodeRecorder::create(&dir, &spec).unwrap();
    assert_eq!(recorder.version(), VERSION);
    for t in episodes.iter().flatten() {
        assert!(recorder.push(t.clone()), "{:?}", recorder.error);
    }
    assert_eq!(recorder.episodes_written, 2);
    (dir, episodes)
}

#[test]
fn frames_round_trip_bit_exact_through_disk() {
    let (dir, written) = v2_recording("round-trip");
    let recording = read_recording(&dir).unwrap();
    assert_eq!(recording.meta.version, 2);
    assert!(recording.skipped.is_empty(), "{:?}", recording.skipped);
    assert_eq!(recording.episodes, written, "every transition, bit-exact");
    // On disk every image is a PNG, no byte array.
    let text = std::fs::read_to_string(dir.join("episode-00000000.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let images = line["observation"]["images"].as_array().unwrap();
    assert_eq!(images.len(), cameras().len());
    for (image, camera) in images.iter().zip(cameras()) {
        let keys: Vec<&str> = image
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
        for key in ["camera", "height", "width", "channels", "png"] {
            assert!(keys.contains(&key), "{keys:?}");
        }
        assert_eq!(image["camera"], camera.name.as_str());
        assert!(image["png"].as_str().unwrap().starts_with("iVBORw0KGgo"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any shape PNG holds, any bytes: decode(encode(image)) is the image.
    #[test]
    fn png_frames_round_trip(
        height in 1u32..24,
        width in 1u32..24,
        channels in 1u32..=4,
        seed in any::<u64>(),
        flat in any::<bool>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let len = (height * width * channels) as usize;
        let data: Vec<u8> = if flat {
            vec![rng.random(); len]
        } else {
            (0..len).map(|_| rng.random()).collect()
        };
        let image = Image { camera: "c".into(), height, width, channels, data };
        let png = encode_png(&image).unwrap();
        prop_assert_eq!(decode_png(&png, height, width, channels).unwrap(), image.data);
    }
}

/// Images PNG cannot hold: refused when the recording opens (a camera of
/// the spec) or when the frame is written (an image that does not fill
/// its shape), naming the camera; never a panic.
#[test]
fn frames_png_cannot_hold_are_refused_naming_the_camera() {
    for (camera, words) in [
        (("five", 4, 4, 5), "5 channels"),
        (("empty", 0, 4, 3), "at least 1×1"),
        (("huge", 1 << 16, 1 << 16, 4), "more than"),
    ] {
        let dir = fresh_dir(&format!("refused-{}", camera.0));
        let spec = spec(vec![CameraSpec {
            name: camera.0.into(),
            height: camera.1,
            width: camera.2,
            channels: camera.3,
        }]);
        let error = EpisodeRecorder::create(&dir, &spec)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains(words)
                && error.contains(camera.0)
                && error.contains(dir.to_str().unwrap()),
            "{error}"
        );
        assert!(!dir.exists(), "nothing written");
    }
    let image = Image {
        camera: "short".into(),
        height: 2,
        width: 2,
        channels: 3,
        data: vec![0; 11],
    };
    let error = encode_png(&image).unwrap_err();
    assert!(error.contains("`short`") && error.contains("11"), "{error}");
    // Through the recorder: the recording stops with the cause, and no
    // line (nor an empty episode file) is written.
    let dir = fresh_dir("refused-frame");
    let spec = spec(cameras());
    let mut transitions = episode(&spec, 0, 1, &mut ChaCha8Rng::seed_from_u64(1));
    transitions[0].observation.images[2].data.pop();
    let mut recorder = EpisodeRecorder::create(&dir, &spec).unwrap();
    assert!(!recorder.push(transitions.remove(0)));
    let failure = recorder.failure().unwrap().to_string();
    assert!(
        failure.contains("`grey`") && failure.contains("34") && failure.contains("35"),
        "{failure}"
    );
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "meta.json only");
    let _ = std::fs::remove_dir_all(dir);
    let error = decode_png(b"\x89PNG\r\n\x1a\nnot really", 2, 2, 3).unwrap_err();
    assert!(error.contains("not a PNG"), "{error}");
}

/// Lines of format 2 are those of format 1 but for the images: the v2
/// writer serialises every field of `Transition` as `Transition` does.
#[test]
fn v2_lines_are_v1_lines_but_for_images() {
    let spec = spec(Vec::new());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut transitions = episode(&spec, 7, 2, &mut rng);
    let t = &mut transitions[1];
    t.stage = Some(2);
    t.reward_version = Some(4);
    t.success = Some(true);
    t.observation.instruction = Some("pick \"the\" cube".into());
    t.provenance.group_id = Some(9);
    t.behaviour_log_prob = None;
    for t in &transitions {
        let v1 = transition_line(t, VERSION_BYTE_ARRAYS).unwrap();
        assert_eq!(v1, serde_json::to_string(t).unwrap());
        assert_eq!(transition_line(t, VERSION).unwrap(), v1);
    }
}

/// The version 1 form, by hand: `data` a JSON array of byte values.
fn v1_line(t: &Transition) -> String {
    let images: Vec<serde_json::Value> = t
        .observation
        .images
        .iter()
        .map(|i| {
            serde_json::json!({
                "camera": i.camera, "height": i.height, "width": i.width,
                "channels": i.channels, "data": i.data,
            })
        })
        .collect();
    let mut line = serde_json::to_value(t).unwrap();
    line["observation"]["images"] = images.into();
    serde_json::to_string(&line).unwrap()
}

/// A version 1 recording written by hand: meta.json of version 1 and the
/// byte-array lines.
fn v1_recording(name: &str, episodes: &[Vec<Transition>], spec: &RobotSpec) -> PathBuf {
    let dir = fresh_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let meta = serde_json::json!({
        "format": "cerebellum-episodes",
        "version": 1,
        "robot": spec,
    });
    std::fs::write(dir.join(META_FILE), meta.to_string()).unwrap();
    for (n, episode) in episodes.iter().enumerate() {
        let text: String = episode.iter().map(|t| v1_line(t) + "\n").collect();
        assert!(text.contains("\"data\":["));
        std::fs::write(dir.join(format!("episode-{n:08}.jsonl")), text).unwrap();
    }
    dir
}

#[test]
fn version_1_recordings_read_the_same() {
    let (v2, written) = v2_recording("v1-same");
    let spec = spec(cameras());
    let v1 = v1_recording("v1", &written, &spec);
    let old = read_recording(&v1).unwrap();
    assert_eq!(old.meta.version, 1);
    assert!(old.skipped.is_empty(), "{:?}", old.skipped);
    assert_eq!(old.episodes, written);
    let new = read_recording(&v2).unwrap();
    let observations = |r: &cerebellum_runtime::recorder::Recording| -> Vec<Observation> {
        r.episodes
            .iter()
            .flatten()
            .map(|t| t.observation.clone())
            .collect()
    };
    assert_eq!(observations(&old), observations(&new));

    // Appended to, it stays version 1: one format per recording.
    let meta = EpisodesMeta::new(&spec, &[], None);
    let mut recorder = EpisodeRecorder::open(&v1, meta.clone(), Existing::Append).unwrap();
    assert_eq!(recorder.version(), VERSION_BYTE_ARRAYS);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let more = episode(&spec, 2, 2, &mut rng);
    for t in &more {
        assert!(recorder.push(t.clone()));
    }
    let appended = std::fs::read_to_string(v1.join("episode-00000002.jsonl")).unwrap();
    assert!(
        appended.contains("\"data\":[") && !appended.contains("\"png\""),
        "byte arrays"
    );
    let meta_now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta_now["version"], 1);
    let old = read_recording(&v1).unwrap();
    assert_eq!(old.episodes.len(), 3);
    assert_eq!(old.episodes[2], more);

    // A version 2 recording appended to stays version 2.
    let recorder = EpisodeRecorder::open(&v2, meta.clone(), Existing::Append).unwrap();
    assert_eq!(recorder.version(), VERSION);

    // A version this cerebellum does not know: refused, naming it.
    let v9 = fresh_dir("v9");
    std::fs::create_dir_all(&v9).unwrap();
    let mut meta9 = serde_json::to_value(&meta).unwrap();
    meta9["version"] = 9.into();
    std::fs::write(v9.join(META_FILE), meta9.to_string()).unwrap();
    let error = EpisodeRecorder::open(&v9, meta, Existing::Append)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("version 9") && error.contains("1 and 2") && error.contains(META_FILE),
        "{error}"
    );
    let error = read_recording(&v9).unwrap_err().to_string();
    assert!(
        error.contains("version 9") && error.contains("1 or 2"),
        "{error}"
    );
    for dir in [v1, v2, v9] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Replaces line `line` (1-based) of `path` by `edit` of its JSON.
fn edit_line(path: &Path, line: usize, edit: impl FnOnce(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut value: serde_json::Value = serde_json::from_str(&lines[line - 1]).unwrap();
    edit(&mut value);
    lines[line - 1] = value.to_string();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().unwrap())
        .unwrap()
}

#[test]
fn bad_frames_are_errors_naming_file_line_and_camera() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let grey_png = encode_png(&Image {
        camera: "grey".into(),
        height: 5,
        width: 7,
        channels: 1,
        data: vec![7; 35],
    })
    .unwrap();
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "not-base64",
            Box::new(|v| v["observation"]["images"][2]["png"] = "iVBOR***".into()),
            vec!["`grey`", "not base64"],
        ),
        (
            "not-png",
            Box::new(|v| v["observation"]["images"][2]["png"] = b64(b"GIF89a....").into()),
            vec!["`grey`", "not a PNG"],
        ),
        (
            "truncated-png",
            Box::new(|v| {
                let png = unb64(&v["observation"]["images"][0]["png"]);
                v["observation"]["images"][0]["png"] = b64(&png[..png.len() / 2]).into();
            }),
            vec!["`front`", "corrupt PNG"],
        ),
        (
            "flipped-bytes",
            Box::new(|v| {
                let mut png = unb64(&v["observation"]["images"][0]["png"]);
                let n = png.len();
                for b in &mut png[60..n - 20] {
                    *b ^= 0x5a;
                }
                v["observation"]["images"][0]["png"] = b64(&png).into();
            }),
            vec!["`front`", "corrupt PNG"],
        ),
        (
            "declared-wider",
            Box::new(|v| v["observation"]["images"][2]["width"] = 6.into()),
            vec!["`grey`", "the PNG is 5×7", "declares 5×6×1"],
        ),
        (
            "other-colour-type",
            Box::new(move |v| v["observation"]["images"][1]["png"] = b64(&grey_png).into()),
            vec![
                "`dot`",
                "the PNG is 5×7×1 (Grayscale, 8-bit)",
                "declares 1×1×3",
            ],
        ),
        (
            "declared-huge",
            Box::new(|v| {
                v["observation"]["images"][0]["height"] = 100_000.into();
                v["observation"]["images"][0]["width"] = 100_000.into();
            }),
            vec!["`front`", "more than"],
        ),
        (
            "v1-image-in-v2",
            Box::new(|v| {
                let image = &mut v["observation"]["images"][3];
                image.as_object_mut().unwrap().remove("png");
                image["data"] = serde_json::json!([1, 2, 3]);
            }),
            vec![
                "images[3]",
                "`wrist/left`",
                "byte array",
                "meta.json says version 2",
            ],
        ),
        (
            "missing-png",
            Box::new(|v| {
                v["observation"]["images"][4]
                    .as_object_mut()
                    .unwrap()
                    .remove("png");
            }),
            vec!["images[4]", "missing field `png`"],
        ),
        (
            "images-not-array",
            Box::new(|v| v["observation"]["images"] = "frames".into()),
            vec!["observation.images is \"frames\""],
        ),
    ];
    for (name, edit, words) in cases {
        let (dir, _) = v2_recording(&format!("bad-{name}"));
        let path = dir.join("episode-00000001.jsonl");
        edit_line(&path, 2, edit);
        let error = format!("{:#}", read_recording(&dir).unwrap_err());
        let at = format!("{} line 2", path.display());
        for word in words.iter().copied().chain([at.as_str()]) {
            assert!(error.contains(word), "{name}: `{word}` not in: {error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    // A version 1 recording with a PNG image: refused, naming both forms.
    let (v2, written) = v2_recording("png-in-v1");
    let v1 = v1_recording("png-in-v1-old", &written, &spec(cameras()));
    let png_line = std::fs::read_to_string(v2.join("episode-00000000.jsonl")).unwrap();
    let path = v1.join("episode-00000000.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[2] = png_line.lines().nth(2).unwrap().to_owned();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let error = format!("{:#}", read_recording(&v1).unwrap_err());
    for word in [
        &format!("{} line 3", path.display()),
        "images[0]",
        "`front`",
        "is a PNG",
        "meta.json says version 1",
    ] {
        assert!(error.contains(word), "`{word}` not in: {error}");
    }
    for dir in [v1, v2] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A recording that stops mid-episode leaves that episode `.partial`, in
/// the version 2 form; readers skip it and read the rest.
#[test]
fn an_interrupted_v2_recording_is_skipped_as_before() {
    let dir = fresh_dir("interrupted");
    let spec = spec(cameras());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let whole = episode(&spec, 0, 3, &mut rng);
    let cut = episode(&spec, 1, 5, &mut rng);
    {
        let mut recorder = EpisodeRecorder::create(&dir, &spec).unwrap();
        for t in whole.iter().chain(&cut[..3]) {
            assert!(recorder.push(t.clone()));
        }
        assert_eq!(recorder.episodes_written, 1);
        // Dropped mid-episode, as a run that is killed.
    }
    let partial = dir.join("episode-00000001.jsonl.partial");
    let text = std::fs::read_to_string(&partial).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.contains("\"png\":\"iVBOR") && !text.contains("\"data\""));
    let recording = read_recording(&dir).unwrap();
    assert_eq!(recording.episodes, vec![whole]);
    assert_eq!(recording.skipped.len(), 1);
    assert_eq!(recording.skipped[0].path, partial);
    assert!(recording.skipped[0].reason.contains("unfinished"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A lift episode recorded by `cerebellum record` with the default 64×64
/// RGB camera on.
fn recorded_sim_frames(name: &str, task: &str) -> (PathBuf, Vec<Vec<Transition>>) {
    let dir = fresh_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let env = dir.join("camera.toml");
    std::fs::write(&env, "[camera]\n").unwrap();
    let out = dir.join("data");
    let (ok, _, stderr) = common::cerebellum(&[
        "record",
        "--task",
        task,
        "--expert",
        "--episodes",
        "1",
        "--env-config",
        env.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let recording = read_recording(&out).unwrap();
    assert_eq!(recording.meta.version, VERSION);
    (dir, recording.episodes)
}

/// Bytes per frame on disk for real sim frames: the base64 PNG string of
/// each 64×64 RGB image (12 288 bytes raw, ~40 KB as a version 1 byte
/// array). The measured numbers are in docs/BENCHMARKS.md.
#[test]
fn a_sim_frame_costs_a_few_kilobytes() {
    let (dir, episodes) = recorded_sim_frames("sim-frame", "lift");
    let data = dir.join("data");
    let text = std::fs::read_to_string(data.join("episode-00000000.jsonl")).unwrap();
    let mut sizes = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let image = &value["observation"]["images"][0];
        assert_eq!(
            (image["height"].as_u64(), image["width"].as_u64()),
            (Some(64), Some(64))
        );
        sizes.push(image["png"].as_str().unwrap().len());
    }
    let frames = episodes.iter().flatten().count();
    assert_eq!(sizes.len(), frames);
    let mean = sizes.iter().sum::<usize>() as f64 / frames as f64;
    let max = *sizes.iter().max().unwrap();
    let v1: usize = episodes
        .iter()
        .flatten()
        .map(|t| v1_line(t).len())
        .sum::<usize>();
    println!(
        "{frames} frames: {mean:.0} bytes per frame on disk (base64 PNG), max {max}; lines {:.0} bytes (v1 {:.0})",
        text.len() as f64 / frames as f64,
        v1 as f64 / frames as f64
    );
    assert!(mean < 8192.0, "{mean} bytes per frame");
    assert!(max < 12288, "{max} bytes: never more than the raw frame");
    let _ = std::fs::remove_dir_all(dir);
}

/// Encode and decode time per frame, and size per compression setting,
/// on real sim frames; prints a table for docs/BENCHMARKS.md:
///
///   cargo test --release --workspace --test episodes_v2 -- --ignored --nocapture frame_codec_timing
///
/// FRAME_TASKS=reach-color,lift-color (comma-separated) measures other
/// tasks than lift and reach.
#[test]
#[ignore = "a measurement: run it by name"]
fn frame_codec_timing() {
    use std::time::Instant;
    let tasks = std::env::var("FRAME_TASKS").unwrap_or_else(|_| "lift,reach".into());
    for task in tasks.split(',') {
        let (dir, episodes) = recorded_sim_frames(&format!("timing-{task}"), task);
        let frames: Vec<&Image> = episodes
            .iter()
            .flatten()
            .map(|t| &t.observation.images[0])
            .collect();
        let settings: [(&str, png::DeflateCompression, png::Filter); 7] = [
            (
                "none",
                png::DeflateCompression::NoCompression,
                png::Filter::NoFilter,
            ),
            (
                "fdeflate, Up",
                png::DeflateCompression::FdeflateUltraFast,
                png::Filter::Up,
            ),
            (
                "fdeflate, adaptive",
                png::DeflateCompression::FdeflateUltraFast,
                png::Filter::Adaptive,
            ),
            (
                "zlib 1, adaptive",
                png::DeflateCompression::Level(1),
                png::Filter::Adaptive,
            ),
            (
                "zlib 6, adaptive",
                png::DeflateCompression::Level(6),
                png::Filter::Adaptive,
            ),
            (
                "zlib 9, adaptive",
                png::DeflateCompression::Level(9),
                png::Filter::Adaptive,
            ),
            (
                "zlib 6, Paeth",
                png::DeflateCompression::Level(6),
                png::Filter::Paeth,
            ),
        ];
        println!("{task}: {} frames of 64×64 RGB", frames.len());
        for (name, compression, filter) in settings {
            let start = Instant::now();
            let mut pngs = Vec::new();
            for _ in 0..5 {
                pngs.clear();
                for image in &frames {
                    let mut out = Vec::new();
                    let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
                    encoder.set_color(png::ColorType::Rgb);
                    encoder.set_depth(png::BitDepth::Eight);
                    encoder.set_deflate_compression(compression);
                    encoder.set_filter(filter);
                    let mut writer = encoder.write_header().unwrap();
                    writer.write_image_data(&image.data).unwrap();
                    writer.finish().unwrap();
                    pngs.push(out);
                }
            }
            let encode = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
            let start = Instant::now();
            for _ in 0..5 {
                for (png, image) in pngs.iter().zip(&frames) {
                    let data = decode_png(png, 64, 64, 3).unwrap();
                    assert_eq!(&data, &image.data);
                }
            }
            let decode = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
            let bytes = pngs.iter().map(Vec::len).sum::<usize>() as f64 / frames.len() as f64;
            println!(
                "  {name:20} {bytes:7.0} bytes PNG, {:7.0} base64; encode {:6.1} µs, decode {:6.1} µs",
                (bytes / 3.0).ceil() * 4.0,
                encode * 1e6,
                decode * 1e6
            );
        }
        // The writer's own path: encode_png + base64, and the reader's.
        let start = Instant::now();
        let mut lines = Vec::new();
        for _ in 0..5 {
            lines.clear();
            for t in episodes.iter().flatten() {
                lines.push(transition_line(t, VERSION).unwrap());
            }
        }
        let write = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
        let start = Instant::now();
        for _ in 0..5 {
            for line in &lines {
                let t = cerebellum_runtime::recorder::parse_line(line, VERSION).unwrap();
                assert_eq!(t.observation.images.len(), 1);
            }
        }
        let read = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
        let start = Instant::now();
        let mut v1 = Vec::new();
        for _ in 0..5 {
            v1.clear();
            for t in episodes.iter().flatten() {
                v1.push(transition_line(t, VERSION_BYTE_ARRAYS).unwrap());
            }
        }
        let write_v1 = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
        let start = Instant::now();
        for _ in 0..5 {
            for line in &v1 {
                let t =
                    cerebellum_runtime::recorder::parse_line(line, VERSION_BYTE_ARRAYS).unwrap();
                assert_eq!(t.observation.images.len(), 1);
            }
        }
        let read_v1 = start.elapsed().as_secs_f64() / (5 * frames.len()) as f64;
        let size = |lines: &[String]| {
            lines.iter().map(String::len).sum::<usize>() as f64 / lines.len() as f64
        };
        println!(
            "  whole line: v2 {:.0} bytes, write {:.1} µs, read {:.1} µs; v1 {:.0} bytes, write {:.1} µs, read {:.1} µs",
            size(&lines),
            write * 1e6,
            read * 1e6,
            size(&v1),
            write_v1 * 1e6,
            read_v1 * 1e6
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
