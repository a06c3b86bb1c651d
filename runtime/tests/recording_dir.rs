//! A recording's directory: `record --out` never overwrites a recording,
//! `--append` adds to one of the same task and spec (numbered after its
//! last episode file), and a write that fails mid-recording is reported,
//! not lost on stderr.

mod common;

use common::last_json;

use cerebellum_runtime::control_loop::TransitionSink;
use cerebellum_runtime::recorder::{EpisodeRecorder, EpisodesMeta, Existing, read_episodes};
use std::path::{Path, PathBuf};
use std::process::Command;

fn record(out: &Path, task: &str, episodes: &str, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(["record", "--task", task, "--expert", "--episodes", episodes])
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--json")
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-recording-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every file in `dir` with its bytes, by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn record_refuses_a_recording_and_appends_only_to_the_same_task() {
    let out = fresh_dir("append");
    let (ok, _, stderr) = record(&out, "reach", "2", &[]);
    assert!(ok, "{stderr}");
    let before = snapshot(&out);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["task"], "reach");

    // Again without --append, for the same task or another: refused, and
    // nothing there changes.
    for task in ["reach", "lift"] {
        let (ok, stdout, stderr) = record(&out, task, "1", &[]);
        assert!(
            !ok,
            "{task}: a second recording into {} is refused",
            out.display()
        );
        let error = last_json(&stdout)["error"].as_str().unwrap().to_owned();
        for needed in [
            out.to_str().unwrap(),
            "already holds a recording",
            "2 complete episodes",
            "--append",
        ] {
            assert!(error.contains(needed), "`{needed}` missing from: {error}");
        }
        assert!(stderr.contains("already holds a recording"), "{stderr}");
        assert_eq!(snapshot(&out), before, "nothing of the recording changed");
    }

    // --append of another task: refused, naming what differs.
    let (ok, _, stderr) = record(&out, "lift", "1", &["--append"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot append")
            && stderr.contains(out.to_str().unwrap())
            && stderr.contains("task: `reach` recorded, `lift` now"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before);

    // --append of the same task: numbered (and seeded) after the last
    // episode file, including an unfinished one a crash left, which stays.
    let stale = out.join("episode-00000003.jsonl.partial");
    std::fs::write(&stale, "{\"half\": \"an episode\"}\n").unwrap();
    let (ok, stdout, stderr) = record(&out, "reach", "2", &["--append"]);
    assert!(ok, "{stderr}");
    let report = last_json(&stdout);
    assert_eq!(report["first_episode"], 4);
    assert_eq!(report["episodes"], 2);
    for (name, bytes) in &before {
        assert_eq!(
            &std::fs::read(out.join(name)).unwrap(),
            bytes,
            "{name} kept"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&stale).unwrap(),
        "{\"half\": \"an episode\"}\n"
    );
    for n in [4, 5] {
        assert!(out.join(format!("episode-{n:08}.jsonl")).is_file());
    }
    let (_, episodes) = read_episodes(&out).unwrap();
    assert_eq!(episodes.len(), 4);
    let ids: Vec<u64> = episodes
        .iter()
        .map(|e| e[0].provenance.episode_id)
        .collect();
    assert_eq!(ids, [0, 1, 4, 5]);
    let starts: Vec<u64> = episodes
        .iter()
        .map(|e| e[0].provenance.task_instance_id)
        .collect();
    assert_eq!(starts, [0, 1, 4, 5], "appended episodes start anew");

    // --append to a directory without a recording starts one.
    let new = fresh_dir("append-new");
    let (ok, _, stderr) = record(&new, "lift", "1", &["--append"]);
    assert!(ok, "{stderr}");
    assert_eq!(read_episodes(&new).unwrap().1.len(), 1);

    // A directory that cannot be created: an error naming it.
    let blocked = out.join("meta.json").join("data");
    let (ok, _, stderr) = record(&blocked, "reach", "1", &[]);
    assert!(
        !ok && stderr.contains(blocked.to_str().unwrap()),
        "{stderr}"
    );
    for dir in [out, new] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The recorder keeps what it wrote whole and says why it stopped when its
/// directory goes away mid-recording; the producer (the loop) goes on.
#[test]
fn a_recording_that_fails_midway_reports_the_failure() {
    let source = fresh_dir("source");
    let (ok, _, stderr) = record(&source, "reach", "1", &[]);
    assert!(ok, "{stderr}");
    let (meta, episodes) = read_episodes(&source).unwrap();
    let episode = &episodes[0];

    // Appending episodes of another spec: refused, naming the difference.
    let mut other = meta.robot.clone();
    other.control_rate_hz /= 2.0;
    let stages: Vec<&str> = meta.stages.iter().map(String::as_str).collect();
    let append = |robot| {
        let meta = EpisodesMeta::new(robot, &stages, meta.task.as_deref());
        EpisodeRecorder::open(&source, meta, Existing::Append)
    };
    let error = append(&other).err().unwrap().to_string();
    assert!(
        error.contains("cannot append") && error.contains("control rate"),
        "{error}"
    );
    assert_eq!(append(&meta.robot).unwrap().next_episode(), 1);

    let dir = fresh_dir("fails");
    let mut recorder = EpisodeRecorder::create(&dir, &meta.robot).unwrap();
    assert!(recorder.failure().is_none());
    for t in episode {
        assert!(recorder.push(t.clone()));
    }
    assert_eq!(recorder.episodes_written, 1);
    // Refused while it is being written to, as any recording.
    let again = EpisodeRecorder::create(&dir, &meta.robot).err().unwrap();
    assert!(again.to_string().contains("already holds a recording"));

    std::fs::remove_dir_all(&dir).unwrap();
    let mut next = episode.clone();
    for t in &mut next {
        t.provenance.episode_id = 1;
    }
    assert!(!recorder.push(next[0].clone()), "the write fails");
    assert!(
        !recorder.push(next[1].clone()),
        "and recording stays stopped"
    );
    let failure = recorder.failure().expect("reported");
    assert_eq!(failure.episodes_written, 1);
    assert_eq!(failure.dir, dir);
    let text = failure.to_string();
    assert!(
        text.contains(dir.to_str().unwrap()) && text.contains("after 1 complete episode(s)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(source);
}
