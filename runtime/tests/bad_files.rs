//! Bad files get a clear error naming the file (and the field and value),
//! or are skipped and said to be: never a panic, never a hang, never
//! counted as what they are not. Recordings (docs/episodes.md), URDFs,
//! trainer states and reward models, each written here into a temporary
//! directory, read through the library and through the binary.

use cerebellum_runtime::recorder::{
    Recording, read_complete_recording, read_episodes, read_recording,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What a run of the binary left: success, its last stdout line as JSON,
/// stderr.
struct Run {
    ok: bool,
    json: serde_json::Value,
    stderr: String,
}

fn cerebellum(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(args)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    Run {
        ok: output.status.success(),
        json: stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null),
        stderr,
    }
}

impl Run {
    /// The `--json` failure line names `command` and says all of `words`.
    fn refused(&self, command: &str, words: &[&str]) {
        assert!(!self.ok, "accepted: {}", self.json);
        assert_eq!(self.json["command"], command, "{}", self.stderr);
        assert_eq!(self.json["ok"], false, "{}", self.json);
        let error = self.json["error"].as_str().unwrap_or_default();
        for word in words {
            assert!(error.contains(word), "`{word}` not in: {error}");
        }
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-bad-files-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A recording of three reach demonstrations and a progress model trained
/// on it, made once for every test here.
struct Base {
    recording: PathBuf,
    model: PathBuf,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let root = temp("base");
        let (recording, model) = (root.join("recording"), root.join("model"));
        let run = cerebellum(&[
            "record",
            "--task",
            "reach",
            "--expert",
            "--episodes",
            "3",
            "--out",
            recording.to_str().unwrap(),
        ]);
        assert!(run.ok, "{}", run.stderr);
        let run = cerebellum(&[
            "reward",
            "train",
            "--kind",
            "progress",
            "--data",
            recording.to_str().unwrap(),
            "--held-out",
            "1",
            "--epochs",
            "5",
            "--out",
            model.to_str().unwrap(),
        ]);
        assert!(run.ok, "{}", run.stderr);
        Base { recording, model }
    })
}

fn episode_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("episode-{n:08}.jsonl"))
}

/// The lines of episode `n` of the base recording, as JSON values.
fn base_lines(n: u64) -> Vec<serde_json::Value> {
    std::fs::read_to_string(episode_path(&base().recording, n))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[serde_json::Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `lines` as episode `id`.
fn with_id(mut lines: Vec<serde_json::Value>, id: u64) -> Vec<serde_json::Value> {
    for line in &mut lines {
        line["provenance"]["episode_id"] = id.into();
    }
    lines
}

/// A copy of the base recording with one more file, episode-00000003,
/// made by `extra`.
fn case(name: &str, extra: impl FnOnce(&Path)) -> PathBuf {
    let dir = temp(name);
    copy_dir(&base().recording, &dir);
    extra(&dir);
    dir
}

/// The skipped file at `path` and its reason.
fn skip_reason<'a>(recording: &'a Recording, path: &Path) -> &'a str {
    recording
        .skipped
        .iter()
        .find(|s| s.path == path)
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("{} not skipped: {:?}", path.display(), recording.skipped))
}

/// `reward eval` on `dir` succeeds counting the three base episodes and
/// warns about `skipped`; `train --init-bc` clones those three.
fn binary_counts_three(dir: &Path, skipped: &Path, bc_too: bool) {
    let data = dir.to_str().unwrap();
    let run = cerebellum(&[
        "reward",
        "eval",
        "--model",
        base().model.to_str().unwrap(),
        "--data",
        data,
        "--json",
    ]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json["episodes"], 3, "{}", run.json);
    let name = skipped.file_name().unwrap().to_string_lossy();
    assert!(
        run.stderr.contains("skipped") && run.stderr.contains(&*name),
        "{}",
        run.stderr
    );
    if bc_too {
        let out = temp(&format!(
            "bc-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let run = cerebellum(&[
            "train",
            "--steps",
            "256",
            "--envs",
            "2",
            "--eval-episodes",
            "1",
            "--init-bc",
            data,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(run.ok, "{}", run.stderr);
        assert_eq!(
            run.json["bc"]["demonstrations"]["episodes"], 3,
            "{}",
            run.json
        );
    }
}

#[test]
fn incomplete_and_duplicate_episodes_are_skipped_and_said_to_be() {
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "empty",
            case("empty", |d| std::fs::write(episode_path(d, 3), "").unwrap()),
            "empty",
        ),
        (
            "unended",
            case("unended", |d| {
                let mut lines = with_id(base_lines(0), 3);
                lines.pop();
                write_lines(&episode_path(d, 3), &lines);
            }),
            "neither terminated nor truncated",
        ),
        (
            "copied",
            case("copied", |d| {
                std::fs::copy(episode_path(d, 0), episode_path(d, 3)).unwrap();
            }),
            "duplicate: episode id 0",
        ),
        (
            "renumbered",
            case("renumbered", |d| {
                std::fs::copy(episode_path(d, 1), d.join("episode-1.jsonl")).unwrap();
            }),
            "a second file for episode number 1",
        ),
        (
            "goes-on",
            case("goes-on", |d| {
                let mut lines = with_id(base_lines(0), 3);
                lines[10]["truncated"] = true.into();
                write_lines(&episode_path(d, 3), &lines);
            }),
            "ends on line 11",
        ),
        (
            "two-episodes",
            case("two-episodes", |d| {
                let mut lines = with_id(base_lines(0), 3);
                let later = with_id(lines.split_off(20), 4);
                lines.extend(later);
                write_lines(&episode_path(d, 3), &lines);
            }),
            "more than one episode",
        ),
        (
            "repeated-line",
            case("repeated-line", |d| {
                let mut lines = with_id(base_lines(0), 3);
                lines.insert(5, lines[4].clone());
                write_lines(&episode_path(d, 3), &lines);
            }),
            "steps must increase",
        ),
        (
            "partial",
            case("partial", |d| {
                let lines = with_id(base_lines(0), 3);
                write_lines(&d.join("episode-00000003.jsonl.partial"), &lines[..10]);
            }),
            "unfinished",
        ),
        (
            "stray-name",
            case("stray-name", |d| {
                std::fs::copy(episode_path(d, 2), d.join("episode-00000002 (copy).jsonl")).unwrap();
            }),
            "not an episode file name",
        ),
    ];
    for (i, (name, dir, reason)) in cases.iter().enumerate() {
        let recording = read_recording(dir).unwrap();
        assert_eq!(
            recording.episodes.len(),
            3,
            "{name}: {:?}",
            recording.skipped
        );
        assert_eq!(
            recording.skipped.len(),
            1,
            "{name}: {:?}",
            recording.skipped
        );
        let skipped = &recording.skipped[0].path;
        let said = skip_reason(&recording, skipped);
        assert!(said.contains(reason), "{name}: {said}");
        let (_, episodes) = read_episodes(dir).unwrap();
        assert_eq!(episodes.len(), 3, "{name}");
        let complete = read_complete_recording(dir).unwrap();
        assert_eq!(complete.skipped, recording.skipped, "{name}");
        // Every case through `reward eval`; a few through `train --init-bc`
        // too (each is a short training run).
        binary_counts_three(dir, skipped, i < 2);
    }
}

#[test]
fn a_recording_without_a_complete_episode_is_refused_naming_what_was_skipped() {
    let dir = temp("none-complete");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(base().recording.join("meta.json"), dir.join("meta.json")).unwrap();
    std::fs::write(episode_path(&dir, 0), "").unwrap();
    let mut lines = base_lines(1);
    lines.pop();
    write_lines(&episode_path(&dir, 1), &lines);
    let error = read_episodes(&dir).unwrap_err().to_string();
    for word in [
        "holds no complete episode",
        "episode-00000000.jsonl",
        "empty",
    ] {
        assert!(error.contains(word), "{error}");
    }
    let data = dir.to_str().unwrap();
    let model = base().model.to_str().unwrap();
    cerebellum(&["reward", "eval", "--model", model, "--data", data, "--json"])
        .refused("reward eval", &["holds no complete episode", data]);
    let out = temp("none-complete-model");
    cerebellum(&[
        "reward",
        "train",
        "--kind",
        "progress",
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
    .refused("reward train", &["holds no complete episode", data]);
    let out = temp("none-complete-run");
    cerebellum(&[
        "train",
        "--steps",
        "256",
        "--envs",
        "2",
        "--init-bc",
        data,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
    .refused("train", &["holds no complete episode", data]);
}

/// Errors that name the path: a directory (or a FIFO) where a file is
/// expected, a file where the recording's directory is expected, a value
/// the spec refuses, a line that is not a transition.
#[test]
fn files_that_are_not_what_they_should_be_are_errors_naming_the_path() {
    let directory_episode = case("directory-episode", |d| {
        std::fs::create_dir(episode_path(d, 3)).unwrap();
    });
    let directory_meta = case("directory-meta", |d| {
        std::fs::remove_file(d.join("meta.json")).unwrap();
        std::fs::create_dir(d.join("meta.json")).unwrap();
    });
    let fifo = case("fifo", |d| {
        let made = Command::new("mkfifo")
            .arg(episode_path(d, 3))
            .status()
            .unwrap();
        assert!(made.success());
    });
    let out_of_limits = case("out-of-limits", |d| {
        let mut lines = with_id(base_lines(0), 3);
        lines[7]["observation"]["state"][2] = serde_json::json!(1e30);
        write_lines(&episode_path(d, 3), &lines);
    });
    let short_command = case("short-command", |d| {
        let mut lines = with_id(base_lines(0), 3);
        lines[7]["sent_command"]["values"] = serde_json::json!([0.0]);
        write_lines(&episode_path(d, 3), &lines);
    });
    let bad_stage = case("bad-stage", |d| {
        let mut lines = with_id(base_lines(0), 3);
        lines[7]["stage"] = 9.into();
        write_lines(&episode_path(d, 3), &lines);
    });
    let garbage = case("garbage", |d| {
        std::fs::write(episode_path(d, 3), "{\"provenance\": 1}\n").unwrap();
    });
    let meta_file = episode_path(&base().recording, 0);
    let e3 = |d: &Path| episode_path(d, 3).display().to_string();
    let cases: Vec<(PathBuf, Vec<String>)> = vec![
        (
            directory_episode.clone(),
            vec![e3(&directory_episode), "is a directory".into()],
        ),
        (
            directory_meta.clone(),
            vec![
                directory_meta.join("meta.json").display().to_string(),
                "is a directory".into(),
            ],
        ),
        (fifo.clone(), vec![e3(&fifo), "not a regular file".into()]),
        (
            out_of_limits.clone(),
            vec![
                e3(&out_of_limits),
                "line 8".into(),
                "joint_position".into(),
                "outside".into(),
            ],
        ),
        (
            short_command.clone(),
            vec![
                e3(&short_command),
                "line 8".into(),
                "sent_command has 1 values".into(),
            ],
        ),
        (
            bad_stage.clone(),
            vec![e3(&bad_stage), "line 8".into(), "stage 9".into()],
        ),
        (garbage.clone(), vec![e3(&garbage), "line 1".into()]),
        (
            meta_file.clone(),
            vec![
                meta_file.display().to_string(),
                "expected a recording's directory".into(),
            ],
        ),
    ];
    let model = base().model.to_str().unwrap();
    for (dir, words) in &cases {
        let error = format!("{:#}", read_episodes(dir).unwrap_err());
        for word in words {
            assert!(error.contains(word.as_str()), "`{word}` not in: {error}");
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let data = dir.to_str().unwrap();
        cerebellum(&["reward", "eval", "--model", model, "--data", data, "--json"])
            .refused("reward eval", &words);
    }
    // Through `train --init-bc` too (it fails before any training).
    let out = temp("directory-episode-run");
    cerebellum(&[
        "train",
        "--init-bc",
        directory_episode.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
    .refused("train", &[&e3(&directory_episode), "is a directory"]);
}

/// A short training run (behaviour cloning of the base recording, then
/// PPO), made once: its checkpoint and trainer state.
fn base_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = temp("base-run");
        let run = cerebellum(&[
            "train",
            "--steps",
            "512",
            "--envs",
            "2",
            "--eval-episodes",
            "1",
            "--init-bc",
            base().recording.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.ok, "{}", run.stderr);
        out
    })
}

#[test]
fn a_trainer_state_that_does_not_fit_the_policy_is_refused_naming_the_field() {
    use cerebellum_runtime::learn::trainer::{STATE_FILE, TrainerState};
    type Edit = fn(&mut serde_json::Value);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "short-moment",
            |s| {
                s["adam"]["first"][0].as_array_mut().unwrap().pop();
            },
            &["adam.first[0] has", "the policy's actor has", "parameters"],
        ),
        (
            "extra-group",
            |s| {
                let group = s["adam"]["second"][1].clone();
                s["adam"]["second"].as_array_mut().unwrap().push(group);
            },
            &["adam.second has 4 groups", "3 parameter groups"],
        ),
        (
            "null-moment",
            |s| s["adam"]["first"][1][0] = serde_json::Value::Null,
            &["adam.first[1][0] = null"],
        ),
        (
            "negative-second-moment",
            |s| s["adam"]["second"][2][3] = (-1).into(),
            &["adam.second[2][3] = -1", "[0.0,"],
        ),
        (
            "huge-moment",
            |s| s["adam"]["first"][0][0] = serde_json::json!(1e300),
            &["adam.first[0][0] = 1e+300", "finite f32"],
        ),
        (
            "step",
            |s| s["adam"]["step"] = serde_json::json!(1u64 << 40),
            &["adam.step = 1099511627776", "2147483647"],
        ),
        (
            "beta",
            |s| s["adam"]["beta2"] = 1.into(),
            &["adam.beta2 = 1", "[0.0, 1.0)"],
        ),
        (
            "variance",
            |s| s["reward_scale"]["var"] = (-1).into(),
            &["reward_scale.var = -1"],
        ),
    ];
    let contract = cerebellum_policies::checkpoint::load_contract(base_run()).unwrap();
    let (updates, steps) = (contract.provenance.updates, contract.provenance.env_steps);
    for (name, edit, words) in cases {
        let dir = temp(&format!("state-{name}"));
        copy_dir(base_run(), &dir);
        let path = dir.join(STATE_FILE);
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut state);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let error = TrainerState::load_for(&dir, updates, steps)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let path = path.display().to_string();
        for word in words.iter().copied().chain([path.as_str()]) {
            assert!(error.contains(word), "{name}: `{word}` not in: {error}");
        }
        let mut words = words.to_vec();
        words.push(&path);
        cerebellum(&[
            "train",
            "--resume",
            dir.to_str().unwrap(),
            "--steps",
            "1024",
            "--envs",
            "2",
            "--eval-episodes",
            "1",
            "--json",
        ])
        .refused("train", &words);
    }
    // The unchanged state loads.
    assert!(
        TrainerState::load_for(base_run(), updates, steps)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_trainer_state_that_is_not_a_file_is_refused_naming_it() {
    use cerebellum_runtime::learn::trainer::{STATE_FILE, TrainerState};
    let contract = cerebellum_policies::checkpoint::load_contract(base_run()).unwrap();
    let (updates, steps) = (contract.provenance.updates, contract.provenance.env_steps);
    for (name, words) in [
        ("directory", "is a directory"),
        ("fifo", "not a regular file"),
    ] {
        let dir = temp(&format!("state-{name}"));
        copy_dir(base_run(), &dir);
        let path = dir.join(STATE_FILE);
        std::fs::remove_file(&path).unwrap();
        if name == "directory" {
            std::fs::create_dir(&path).unwrap();
        } else {
            assert!(
                Command::new("mkfifo")
                    .arg(&path)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let error = TrainerState::load_for(&dir, updates, steps)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let path = path.display().to_string();
        assert!(error.contains(words) && error.contains(&path), "{error}");
        cerebellum(&["train", "--resume", dir.to_str().unwrap(), "--json"])
            .refused("train", &[words, &path]);
    }
}

/// A success classifier trained on the base recording, made once.
fn base_success_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = temp("base-success");
        let run = cerebellum(&[
            "reward",
            "train",
            "--kind",
            "success",
            "--task",
            "reach",
            "--data",
            base().recording.to_str().unwrap(),
            "--held-out",
            "1",
            "--epochs",
            "5",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.ok, "{}", run.stderr);
        out
    })
}

/// The tensors of a reward model's weights file, to edit.
type Tensors = std::collections::HashMap<String, candle_core::Tensor>;

fn read_tensors(path: &Path) -> Tensors {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// `tensor` with the value at flat index `i` replaced.
fn with_value(tensor: &candle_core::Tensor, i: usize, value: f32) -> candle_core::Tensor {
    let mut values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[i] = value;
    candle_core::Tensor::from_vec(values, tensor.dims(), &candle_core::Device::Cpu).unwrap()
}

/// One bad reward model: its name, what to change in a copy of the base
/// model's directory, and what the refusal must say.
type ModelCase = (&'static str, Box<dyn Fn(&Path)>, Vec<&'static str>);

fn edit_contract(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("reward_model.json");
    let mut contract: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut contract);
    std::fs::write(&path, serde_json::to_vec(&contract).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, file: &str, edit: impl Fn(&mut Tensors)) {
    let path = dir.join(file);
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    write_tensors(&path, &tensors);
}

fn progress_cases() -> Vec<ModelCase> {
    const W: &str = "progress.safetensors";
    vec![
        (
            "truncated",
            Box::new(|d| {
                let bytes = std::fs::read(d.join(W)).unwrap();
                std::fs::write(d.join(W), &bytes[..bytes.len() / 2]).unwrap();
            }),
            vec![W],
        ),
        (
            "empty",
            Box::new(|d| std::fs::write(d.join(W), "").unwrap()),
            vec![W],
        ),
        (
            "nan",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let w = with_value(&t["layer1.weight"], 17, f32::NAN);
                    t.insert("layer1.weight".into(), w);
                })
            }),
            vec![W, "tensor `layer1.weight` holds NaN at 17"],
        ),
        (
            "shape",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let w = t["layer1.weight"].narrow(1, 0, 5).unwrap();
                    t.insert("layer1.weight".into(), w.contiguous().unwrap());
                })
            }),
            vec![W, "tensor `layer1.weight` is F32 [", ", 5], expected F32"],
        ),
        (
            "dtype",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let b = t["tau.bias"].to_dtype(candle_core::DType::F64).unwrap();
                    t.insert("tau.bias".into(), b);
                })
            }),
            vec![W, "tensor `tau.bias` is F64"],
        ),
        (
            "missing",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    t.remove("stage.bias");
                })
            }),
            vec![W, "no tensor `stage.bias`"],
        ),
        (
            "zero-std",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let s = with_value(&t["obs_std"], 2, 0.0);
                    t.insert("obs_std".into(), s);
                })
            }),
            vec![W, "tensor `obs_std` holds 0 at 2", "above 0"],
        ),
        (
            "hidden",
            Box::new(|d| edit_contract(d, |c| c["hidden"] = 64.into())),
            vec![W, "tensor `layer0.weight`", "expected F32 [64,"],
        ),
        (
            "history-zero",
            Box::new(|d| edit_contract(d, |c| c["history"] = 0.into())),
            vec!["reward_model.json", "history = 0", "[1, 1024]"],
        ),
        (
            "history-huge",
            Box::new(|d| edit_contract(d, |c| c["history"] = u64::MAX.into())),
            vec!["reward_model.json", "history = 18446744073709551615"],
        ),
        (
            "image-pool-huge",
            Box::new(|d| edit_contract(d, |c| c["image_pool"] = (1u64 << 40).into())),
            vec!["reward_model.json", "image_pool = 1099511627776"],
        ),
        (
            "no-stages",
            Box::new(|d| {
                edit_contract(d, |c| {
                    c["stage_names"] = serde_json::json!([]);
                    c["stage_shares"] = serde_json::json!([]);
                })
            }),
            vec!["reward_model.json", "stage_names is empty"],
        ),
        (
            "shares",
            Box::new(|d| edit_contract(d, |c| c["stage_shares"] = serde_json::json!([2.0, -1.0]))),
            vec!["reward_model.json", "stage_shares[0] = 2.0"],
        ),
        (
            "spec-limits",
            Box::new(|d| {
                edit_contract(d, |c| {
                    c["observation"]["fields"][0]["lower"][0] = 5.0.into();
                })
            }),
            vec!["reward_model.json", "observation", "limits [5"],
        ),
        (
            "contract-directory",
            Box::new(|d| {
                std::fs::remove_file(d.join("reward_model.json")).unwrap();
                std::fs::create_dir(d.join("reward_model.json")).unwrap();
            }),
            vec!["reward_model.json", "is a directory"],
        ),
        (
            "weights-fifo",
            Box::new(|d| {
                std::fs::remove_file(d.join(W)).unwrap();
                assert!(
                    Command::new("mkfifo")
                        .arg(d.join(W))
                        .status()
                        .unwrap()
                        .success()
                );
            }),
            vec![W, "not a regular file"],
        ),
    ]
}

#[test]
fn a_bad_progress_model_is_refused_naming_the_file() {
    use cerebellum_reward_models::progress::ProgressModel;
    let data = base().recording.to_str().unwrap();
    for (i, (name, edit, words)) in progress_cases().into_iter().enumerate() {
        let dir = temp(&format!("progress-{name}"));
        copy_dir(&base().model, &dir);
        edit(&dir);
        let error = match ProgressModel::load(&dir, None) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e.to_string(),
        };
        let shown = dir.display().to_string();
        for word in words.iter().copied().chain([shown.as_str()]) {
            assert!(error.contains(word), "{name}: `{word}` not in: {error}");
        }
        let model = dir.to_str().unwrap();
        let mut words = words.clone();
        words.push(model);
        cerebellum(&["reward", "eval", "--model", model, "--data", data, "--json"])
            .refused("reward eval", &words);
        if i < 3 {
            // Training on the model's rewards loads it before anything runs.
            let out = temp(&format!("progress-{name}-run"));
            cerebellum(&[
                "train",
                "--reward",
                &format!("progress:{model}"),
                "--steps",
                "256",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ])
            .refused("train", &words);
        }
    }
    // The untouched model loads.
    ProgressModel::load(&base().model, None).unwrap();
}

#[test]
fn a_bad_success_classifier_is_refused_naming_the_file() {
    use cerebellum_reward_models::success::SuccessClassifier;
    const W: &str = "success.safetensors";
    let cases: Vec<ModelCase> = vec![
        (
            "truncated",
            Box::new(|d| {
                let bytes = std::fs::read(d.join(W)).unwrap();
                std::fs::write(d.join(W), &bytes[..bytes.len() - 7]).unwrap();
            }),
            vec![W],
        ),
        (
            "nan",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let w = with_value(&t["out.weight"], 3, f32::INFINITY);
                    t.insert("out.weight".into(), w);
                })
            }),
            vec![W, "tensor `out.weight` holds inf at 3"],
        ),
        (
            "shape",
            Box::new(|d| {
                edit_weights(d, W, |t| {
                    let m = t["obs_mean"].narrow(0, 0, 3).unwrap();
                    t.insert("obs_mean".into(), m);
                })
            }),
            vec![W, "tensor `obs_mean` is F32 [3], expected F32 ["],
        ),
        (
            "history",
            Box::new(|d| edit_contract(d, |c| c["history"] = 3.into())),
            vec!["reward_model.json", "history = 3", "[1, 1]"],
        ),
    ];
    let data = base().recording.to_str().unwrap();
    for (name, edit, words) in cases {
        let dir = temp(&format!("success-{name}"));
        copy_dir(base_success_model(), &dir);
        edit(&dir);
        let error = match SuccessClassifier::load(&dir, None) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e.to_string(),
        };
        let shown = dir.display().to_string();
        for word in words.iter().copied().chain([shown.as_str()]) {
            assert!(error.contains(word), "{name}: `{word}` not in: {error}");
        }
        let model = dir.to_str().unwrap();
        let mut words = words.clone();
        words.push(model);
        cerebellum(&["reward", "eval", "--model", model, "--data", data, "--json"])
            .refused("reward eval", &words);
    }
    SuccessClassifier::load(base_success_model(), None).unwrap();
}

/// The SO-101 written to `dir` from the binary's embedded copy (URDF,
/// robot config, meshes), its URDF changed by `edit`.
fn so101_with(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let urdf = cerebellum_sim::so101_urdf();
    let root = urdf.parent().unwrap();
    for path in cerebellum_sim::urdf_files::embedded_paths() {
        let target = dir.join(path.strip_prefix(root).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, cerebellum_sim::urdf_files::read(&path).unwrap()).unwrap();
    }
    let target = dir.join(urdf.file_name().unwrap());
    let text = std::fs::read_to_string(&target).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&target, edited).unwrap();
    target
}

#[test]
fn a_urdf_with_bad_numbers_is_refused_by_every_command_naming_the_joint_or_link() {
    let inverted = so101_with(&temp("urdf-inverted"), |t| {
        t.replace(
            r#"lower="-0.174533" upper="1.74533""#,
            r#"lower="1.74533" upper="-0.174533""#,
        )
    });
    let nan_mass = so101_with(&temp("urdf-nan-mass"), |t| {
        t.replace(r#"<mass value="0.100006"/>"#, r#"<mass value="NaN"/>"#)
    });
    for (urdf, words) in [
        (
            &inverted,
            vec!["joint `gripper`", "lower = 1.74533", "upper = -0.174533"],
        ),
        (&nan_mass, vec!["<mass> value = NaN", "link `"]),
    ] {
        let path = urdf.to_str().unwrap();
        let mut words = words.clone();
        words.push(path);
        cerebellum(&["sim", "--task", "reach", "--urdf", path, "--json"]).refused("sim", &words);
        let out = temp("urdf-run");
        cerebellum(&[
            "train",
            "--urdf",
            path,
            "--steps",
            "256",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .refused("train", &words);
    }
}

/// `record --append` reads the recording's meta.json: a FIFO there is an
/// error naming it, never a read that blocks.
#[test]
fn appending_to_a_recording_whose_meta_is_a_fifo_is_refused_naming_it() {
    use cerebellum_runtime::recorder::{EpisodeRecorder, Existing, read_meta};
    let dir = case("append-fifo", |d| {
        std::fs::remove_file(d.join("meta.json")).unwrap();
        assert!(
            Command::new("mkfifo")
                .arg(d.join("meta.json"))
                .status()
                .unwrap()
                .success()
        );
    });
    let meta = read_meta(&base().recording).unwrap();
    let error = match EpisodeRecorder::open(&dir, meta, Existing::Append) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let path = dir.join("meta.json").display().to_string();
    assert!(
        error.contains(&path) && error.contains("not a regular file"),
        "{error}"
    );
}
