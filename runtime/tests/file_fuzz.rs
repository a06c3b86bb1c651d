//! Property tests over every kind of file the binary reads: a valid file
//! of each kind (a recording, a checkpoint, a trainer state, a reward
//! model, a URDF), made once per test, is mutated at random (bytes flipped,
//! inserted or deleted, the file truncated, a number replaced by NaN,
//! 1e300, -1 or a huge value, a key or attribute dropped or added), then
//! parsed, validated and used for at most one bounded step (read the
//! episodes; load the checkpoint and act once; load the trainer state and
//! take one optimiser step; load the reward model and predict one episode;
//! load the URDF, build the environment and step it once). Each case must
//! end in `Ok` or `Err`, never a panic, within a watchdog's few seconds.
//!
//! A few dozen cases per kind by default; `PROPTEST_CASES=N` runs N per
//! kind. Each test prints its seed (`--nocapture`); `FILE_FUZZ_SEED=S`
//! repeats a run, `FILE_FUZZ_VERBOSE=1` prints every refusal.

use cerebellum_core::{Observation, Policy, ResetRequest, Robot, Sampling};
use cerebellum_policies::GaussianMlpPolicy;
use cerebellum_runtime::learn::trainer::{STATE_FILE, TrainerState};
use cerebellum_runtime::recorder::read_recording;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long one case may take: parse, validate and one step take well
/// under a second; two busy cores and a debug-free release build leave a
/// wide margin.
const WATCHDOG: Duration = Duration::from_secs(10);

/// Cases per kind unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 32;

// ---------------------------------------------------------------------------
// Mutations.

/// Replacements for a number: not numbers, out of every range, or at the
/// edges of the types the files hold.
const NUMBERS: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e300",
    "-1e300",
    "1e38",
    "3.5e38",
    "-1",
    "0",
    "-0",
    "1e-300",
    "18446744073709551616",
    "4294967296",
    "9999999999",
    "null",
    "\"x\"",
    "true",
    "[]",
    "{}",
];

/// A position among however many there are (`raw % len`).
type Index = usize;

fn pick(raw: Index, len: usize) -> usize {
    if len == 0 { 0 } else { raw % len }
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit of one byte.
    Flip(Index, u8),
    /// Insert bytes at a position.
    Insert(Index, Vec<u8>),
    /// Delete up to `len` bytes from a position.
    Delete(Index, usize),
    /// Keep only a prefix.
    Truncate(Index),
    /// Replace one number by one of [`NUMBERS`].
    Number(Index, Index),
    /// Drop one JSON key (or one XML attribute).
    DropKey(Index),
    /// Add a key (or an attribute) the format does not know, or a second
    /// copy of one it knows.
    AddKey(Index, bool),
    /// In a safetensors file (which byte mutations mostly break at its
    /// header): change one tensor, which the file format itself accepts.
    Tensor(Index, TensorChange),
}

/// What [`Mutation::Tensor`] does to the tensor it picks.
#[derive(Clone, Debug)]
enum TensorChange {
    /// One value replaced (NaN, infinities, huge, zero).
    Value(Index, f32),
    /// One dimension one shorter.
    Shrink(Index),
    /// Stored as f64 or f16.
    DType(bool),
    /// Removed.
    Drop,
    /// A second tensor of the same name's shape under a new name.
    Extra,
}

fn tensor_change() -> impl Strategy<Value = TensorChange> {
    let value = prop::sample::select(vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -1e30,
        0.0,
        -1.0,
    ]);
    prop_oneof![
        (any::<usize>(), value).prop_map(|(i, v)| TensorChange::Value(i, v)),
        any::<usize>().prop_map(TensorChange::Shrink),
        any::<bool>().prop_map(TensorChange::DType),
        Just(TensorChange::Drop),
        Just(TensorChange::Extra),
    ]
}

/// A mutation of the bytes, numbers, keys or attributes of any file.
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, r)| Mutation::Number(i, r)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, r)| Mutation::Number(i, r)),
        any::<usize>().prop_map(Mutation::DropKey),
        (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Mutation::AddKey(i, b)),
    ]
}

/// One to three mutations. With `tensors` (a kind with safetensors
/// files), a quarter of the cases change tensors only instead, since a
/// byte mutation mostly breaks a safetensors file's header before a tensor
/// change could be seen (in the kind's other files they change nothing,
/// which checks that the valid file passes).
fn mutations(tensors: bool) -> BoxedStrategy<Vec<Mutation>> {
    let bytes = prop::collection::vec(mutation(), 1..4);
    if !tensors {
        return bytes.boxed();
    }
    let tensors = (any::<usize>(), tensor_change()).prop_map(|(i, c)| Mutation::Tensor(i, c));
    prop_oneof![
        3 => bytes,
        1 => prop::collection::vec(tensors, 1..3),
    ]
    .boxed()
}

/// Byte ranges of the numbers in `bytes` (an optional minus, digits, a
/// fraction, an exponent), wherever they are.
fn numbers(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i] == b'-' {
            i += 1;
        }
        let digits = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if i > digits {
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'-' || bytes[j] == b'+') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            found.push((start, i));
        } else {
            i = start + 1;
        }
    }
    found
}

/// Byte ranges of the JSON keys (`"name":` with its value up to the next
/// `,` or `}` at the same depth) or XML attributes (` name="value"`) in
/// `bytes`: what [`Mutation::DropKey`] may remove.
fn keys(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // XML attributes.
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b' ' && bytes[i + 1].is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if bytes.get(j..j + 2) == Some(b"=\"")
                && let Some(end) = bytes[j + 2..].iter().position(|&b| b == b'"')
            {
                found.push((i, j + 3 + end));
                i = j + 3 + end;
                continue;
            }
        }
        i += 1;
    }
    // JSON keys: a string followed by a colon, to the end of its value.
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'"') else {
                break;
            };
            let after = i + 2 + len;
            if bytes.get(after) == Some(&b':') {
                let mut depth = 0i32;
                let mut j = after + 1;
                let mut in_string = false;
                while j < bytes.len() {
                    match bytes[j] {
                        b'"' => in_string = !in_string,
                        b'[' | b'{' if !in_string => depth += 1,
                        b']' | b'}' if !in_string => {
                            if depth == 0 {
                                break;
                            }
                            depth -= 1;
                        }
                        b',' if !in_string && depth == 0 => {
                            j += 1;
                            break;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                found.push((i, j));
            }
            i = after;
        } else {
            i += 1;
        }
    }
    found
}

/// Where [`Mutation::AddKey`] may add one: just after a `{` (JSON) or
/// after a tag's name (XML).
fn key_slots(bytes: &[u8]) -> Vec<usize> {
    let mut slots = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'{' {
            slots.push(i + 1);
        }
        if b == b'<' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            let end = bytes[i + 1..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(bytes.len(), |p| i + 1 + p);
            slots.push(end);
        }
    }
    slots
}

/// `bytes` as safetensors with one tensor changed, or `None` when they
/// are not safetensors (any more).
fn change_tensor(bytes: &[u8], which: Index, change: &TensorChange) -> Option<Vec<u8>> {
    use candle_core::{DType, Device, Tensor};
    let mut tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).ok()?;
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let name = names.get(pick(which, names.len()))?.clone();
    let tensor = tensors[&name].clone();
    match change {
        TensorChange::Value(i, value) => {
            let mut values = tensor.flatten_all().ok()?.to_vec1::<f32>().ok()?;
            if values.is_empty() {
                return None;
            }
            let k = pick(*i, values.len());
            values[k] = *value;
            let changed = Tensor::from_vec(values, tensor.dims(), &Device::Cpu).ok()?;
            tensors.insert(name, changed);
        }
        TensorChange::Shrink(d) => {
            let dims = tensor.dims().to_vec();
            let d = pick(*d, dims.len());
            let changed = tensor.narrow(d, 0, dims.get(d)?.checked_sub(1)?).ok()?;
            tensors.insert(name, changed.contiguous().ok()?);
        }
        TensorChange::DType(wide) => {
            let dtype = if *wide { DType::F64 } else { DType::F16 };
            tensors.insert(name, tensor.to_dtype(dtype).ok()?);
        }
        TensorChange::Drop => {
            tensors.remove(&name);
        }
        TensorChange::Extra => {
            tensors.insert(format!("{name}.extra"), tensor);
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "cerebellum-file-fuzz-{}-tensors-{}.safetensors",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    candle_core::safetensors::save(&tensors, &scratch).ok()?;
    let changed = std::fs::read(&scratch).ok();
    let _ = std::fs::remove_file(&scratch);
    changed
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |i: &Index, len: usize| pick(*i, len);
    match mutation {
        Mutation::Flip(i, bit) => {
            if !bytes.is_empty() {
                let k = at(i, bytes.len());
                bytes[k] ^= 1 << bit;
            }
        }
        Mutation::Insert(i, inserted) => {
            let k = at(i, bytes.len() + 1);
            bytes.splice(k..k, inserted.iter().copied());
        }
        Mutation::Delete(i, n) => {
            if !bytes.is_empty() {
                let k = at(i, bytes.len());
                let end = (k + n).min(bytes.len());
                bytes.drain(k..end);
            }
        }
        Mutation::Truncate(i) => {
            let k = at(i, bytes.len() + 1);
            bytes.truncate(k);
        }
        Mutation::Number(i, r) => {
            let found = numbers(bytes);
            if !found.is_empty() {
                let (start, end) = found[pick(*i, found.len())];
                let replacement = NUMBERS[pick(*r, NUMBERS.len())];
                bytes.splice(start..end, replacement.bytes());
            }
        }
        Mutation::DropKey(i) => {
            let found = keys(bytes);
            if !found.is_empty() {
                let (start, end) = found[pick(*i, found.len())];
                bytes.drain(start..end);
            }
        }
        Mutation::AddKey(i, known) => {
            let slots = key_slots(bytes);
            if !slots.is_empty() {
                let k = slots[pick(*i, slots.len())];
                let xml = bytes.get(k.wrapping_sub(1)) != Some(&b'{');
                let added: Vec<u8> = match (xml, known) {
                    (true, false) => b" zz_unknown=\"1\"".to_vec(),
                    (true, true) => b" name=\"dup\"".to_vec(),
                    (false, false) => b"\"zz_unknown\":1,".to_vec(),
                    // A second `format` key (serde keeps the first or
                    // refuses duplicates, depending on the type).
                    (false, true) => b"\"format\":\"x\",".to_vec(),
                };
                bytes.splice(k..k, added);
            }
        }
        Mutation::Tensor(which, change) => {
            if let Some(changed) = change_tensor(bytes, *which, change) {
                *bytes = changed;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The runner: a seeded proptest runner, each case on a thread under a
// watchdog.

fn seed() -> u64 {
    std::env::var("FILE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// A fresh directory for one case.
fn case_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cerebellum-file-fuzz-{}-{kind}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What one case's step said: `Ok` or the error, for the tally.
type Outcome = Result<(), String>;

/// Runs `step` on `path` (a copy of `valid` with the file `target` inside
/// it mutated) for every generated case: a panic or a case slower than
/// [`WATCHDOG`] fails the test, naming the seed, the file and the
/// mutations.
fn fuzz<F>(kind: &str, valid: &Path, targets: &[&str], step: F)
where
    F: Fn(&Path) -> Outcome + Send + Sync + 'static,
{
    let seed = seed();
    eprintln!("{kind}: seed {seed} (FILE_FUZZ_SEED={seed} repeats this run)");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let step = Arc::new(step);
    // After a hang, the remaining cases (shrinking included) are skipped:
    // the hung thread still holds its case.
    let hung: Arc<Mutex<Option<String>>> = Arc::default();
    let tally: Arc<Mutex<(u32, u32, Vec<String>)>> = Arc::default();
    let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    let tensors = targets.iter().any(|t| t.ends_with(".safetensors"));
    let strategy = (0..targets.len(), mutations(tensors));
    let result = runner.run(&strategy, |(target, mutations)| {
        if hung.lock().unwrap().is_some() {
            return Ok(());
        }
        let dir = case_dir(kind);
        copy_dir(valid, &dir);
        let file = dir.join(&targets[target]);
        let mut contents = std::fs::read(&file).unwrap();
        for m in &mutations {
            apply(&mut contents, m);
        }
        std::fs::write(&file, &contents).unwrap();
        let (send, receive) = std::sync::mpsc::channel();
        let (step, case) = (step.clone(), dir.clone());
        let worker = std::thread::spawn(move || {
            let outcome = step(&case);
            let _ = send.send(());
            outcome
        });
        let described = format!("{} mutated by {mutations:?}", targets[target]);
        match receive.recv_timeout(WATCHDOG) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let message = format!("{kind}: no answer within {WATCHDOG:?}: {described}");
                *hung.lock().unwrap() = Some(message.clone());
                return Err(TestCaseError::fail(message));
            }
        }
        let outcome = match worker.join() {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                return Err(TestCaseError::fail(format!(
                    "{kind}: panicked ({message}): {described}"
                )));
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        let mut tally = tally.lock().unwrap();
        match outcome {
            Ok(()) => tally.0 += 1,
            Err(error) => {
                tally.1 += 1;
                if std::env::var_os("FILE_FUZZ_VERBOSE").is_some() {
                    eprintln!("{kind} refused: {error}");
                }
                // A sample of the refusals, to see what the cases reach.
                let error: String = error.chars().take(240).collect();
                if tally.2.len() < 12 && !tally.2.contains(&error) {
                    tally.2.push(error);
                }
            }
        }
        Ok(())
    });
    let (ok, refused, sample) = &*tally.lock().unwrap();
    eprintln!("{kind}: {ok} cases accepted, {refused} refused, for example:");
    for error in sample {
        eprintln!("  {error}");
    }
    if let Some(message) = hung.lock().unwrap().take() {
        panic!("seed {seed}: {message}");
    }
    if let Err(failure) = result {
        panic!("seed {seed}: {failure}");
    }
}

// ---------------------------------------------------------------------------
// The valid files, made once per test binary.

fn cerebellum(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_cerebellum"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Valid {
    recording: PathBuf,
    /// A training run: checkpoint and trainer state.
    run: PathBuf,
    progress_model: PathBuf,
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("cerebellum-file-fuzz-{}-valid", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let valid = Valid {
            recording: root.join("recording"),
            run: root.join("run"),
            progress_model: root.join("progress"),
        };
        let recording = valid.recording.to_str().unwrap();
        cerebellum(&[
            "record",
            "--task",
            "reach",
            "--expert",
            "--episodes",
            "2",
            "--out",
            recording,
        ]);
        cerebellum(&[
            "train",
            "--steps",
            "512",
            "--envs",
            "2",
            "--eval-episodes",
            "1",
            "--init-bc",
            recording,
            "--out",
            valid.run.to_str().unwrap(),
        ]);
        cerebellum(&[
            "reward",
            "train",
            "--kind",
            "progress",
            "--data",
            recording,
            "--held-out",
            "0",
            "--epochs",
            "5",
            "--out",
            valid.progress_model.to_str().unwrap(),
        ]);
        valid
    })
}

/// An observation of the SO-101 reach task, as a policy or reward model
/// trained on it reads.
fn observation() -> Observation {
    static OBSERVATION: OnceLock<Observation> = OnceLock::new();
    OBSERVATION
        .get_or_init(|| {
            let model = cerebellum_sim::ArmModel::load(
                &cerebellum_sim::so101_urdf(),
                &cerebellum_sim::ArmOptions::default(),
            )
            .unwrap();
            let mut env =
                cerebellum_sim::SimEnv::new(cerebellum_sim::EnvConfig::default(), Some(model))
                    .unwrap();
            env.reset(&ResetRequest { seed: 0 }).unwrap()
        })
        .clone()
}

fn spec() -> cerebellum_core::RobotSpec {
    read_recording(&valid().recording).unwrap().meta.robot
}

// ---------------------------------------------------------------------------
// One test per kind.

#[test]
fn mutated_recordings_are_read_or_refused() {
    let valid = valid();
    fuzz(
        "recording",
        &valid.recording,
        &[
            "meta.json",
            "episode-00000000.jsonl",
            "episode-00000001.jsonl",
        ],
        |dir| {
            let recording = read_recording(dir).map_err(|e| e.to_string())?;
            // What the reader promises of every episode it counts.
            for episode in &recording.episodes {
                let last = episode.last().expect("a counted episode is not empty");
                assert!(last.terminated || last.truncated, "counted but not ended");
                for t in episode {
                    recording
                        .meta
                        .robot
                        .observation
                        .check(&t.observation)
                        .unwrap();
                }
            }
            // The step `train --init-bc` takes with them.
            cerebellum_runtime::learn::bc::recorded_demonstrations(&recording.episodes, None, 10)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

#[test]
fn mutated_checkpoints_load_and_act_or_are_refused() {
    let spec = spec();
    let observation = observation();
    fuzz(
        "checkpoint",
        &valid().run,
        &[
            cerebellum_policies::checkpoint::CONTRACT_FILE,
            cerebellum_policies::checkpoint::WEIGHTS_FILE,
        ],
        move |dir| {
            let (mut policy, _) = cerebellum_policies::checkpoint::load(dir, Some(&spec))
                .map_err(|e| e.to_string())?;
            policy
                .act(std::slice::from_ref(&observation), Sampling::Deterministic)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

#[test]
fn mutated_trainer_states_load_and_step_or_are_refused() {
    let run = valid().run.clone();
    let (policy, contract) = cerebellum_policies::checkpoint::load(&run, None).unwrap();
    let (updates, steps) = (contract.provenance.updates, contract.provenance.env_steps);
    fuzz("trainer-state", &run, &[STATE_FILE], move |dir| {
        let Some(mut state) = TrainerState::load_for_policy(dir, updates, steps, &policy)
            .map_err(|e| e.to_string())?
        else {
            return Err("no trainer state".into());
        };
        // One optimiser step (zero gradients) and one reward scaling.
        let mut policy: GaussianMlpPolicy = policy.clone();
        let grads = [
            vec![0.0; policy.actor.params().len()],
            vec![0.0; policy.log_std.len()],
            vec![0.0; policy.critic.params().len()],
        ];
        let grads: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        let p = &mut policy;
        state.adam.step(
            &mut [
                p.actor.params_mut(),
                &mut p.log_std[..],
                p.critic.params_mut(),
            ],
            &grads,
        );
        let mut rewards = [1.0f32, -1.0, 0.5, 0.0];
        state
            .reward_scale
            .apply(2, &mut rewards, &[false, false, true, true], 0.99);
        Ok(())
    });
}

#[test]
fn mutated_reward_models_load_and_predict_or_are_refused() {
    use cerebellum_reward_models::contract::Expected;
    use cerebellum_reward_models::progress::ProgressModel;
    let spec = spec();
    let episode: Vec<Observation> = read_recording(&valid().recording).unwrap().episodes[0]
        .iter()
        .map(|t| t.observation.clone())
        .collect();
    fuzz(
        "reward-model",
        &valid().progress_model,
        &["reward_model.json", "progress.safetensors"],
        move |dir| {
            let expected = Expected {
                observation: &spec.observation,
                instruction: None,
            };
            let (model, _) = ProgressModel::load(dir, Some(expected)).map_err(|e| e.to_string())?;
            let inputs: Vec<Vec<f32>> = episode.iter().map(|o| model.input(o)).collect();
            model
                .predict(&inputs)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

/// The SO-101 as files on disk: its URDF, robot config and meshes, read
/// from the binary's embedded copy.
fn so101_on_disk() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("cerebellum-file-fuzz-{}-so101", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = cerebellum_sim::so101_urdf().parent().unwrap().to_path_buf();
        for path in cerebellum_sim::urdf_files::embedded_paths() {
            let relative = path.strip_prefix(&root).unwrap();
            let target = dir.join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, cerebellum_sim::urdf_files::read(&path).unwrap()).unwrap();
        }
        dir
    })
}

#[test]
fn mutated_urdfs_load_and_step_or_are_refused() {
    use cerebellum_core::Action;
    fuzz(
        "urdf",
        so101_on_disk(),
        &[
            "so101_new_calib.urdf",
            "so101_new_calib.urdf",
            "so101_new_calib.toml",
        ],
        |dir| {
            let model = cerebellum_sim::ArmModel::load(
                &dir.join("so101_new_calib.urdf"),
                &cerebellum_sim::ArmOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            // The lift task: it needs no reachable target to start.
            let config = cerebellum_sim::EnvConfig {
                task: cerebellum_sim::TaskKind::Lift,
                ..cerebellum_sim::EnvConfig::default()
            };
            let mut env = cerebellum_sim::SimEnv::new(config, Some(model))?;
            env.reset(&ResetRequest { seed: 0 })
                .map_err(|e| e.to_string())?;
            let command = Action::new(vec![0.0; env.spec().action.len()]);
            env.apply(&command).map(|_| ()).map_err(|e| e.to_string())
        },
    );
}

/// The mutations do what they say, so the cases above are the ones meant.
#[test]
fn mutations_find_numbers_keys_and_slots() {
    let json = br#"{"a": -1.5e3, "b": [1, 2], "c": {"d": "x"}}"#;
    let found: Vec<&str> = numbers(json)
        .iter()
        .map(|&(s, e)| std::str::from_utf8(&json[s..e]).unwrap())
        .collect();
    assert_eq!(found, ["-1.5e3", "1", "2"]);
    let found: Vec<&str> = keys(json)
        .iter()
        .map(|&(s, e)| std::str::from_utf8(&json[s..e]).unwrap())
        .collect();
    assert_eq!(
        found,
        [
            r#""a": -1.5e3,"#,
            r#""b": [1, 2],"#,
            r#""c": {"d": "x"}"#,
            r#""d": "x""#
        ]
    );
    let xml = br#"<joint name="j" type="revolute"><limit lower="-1"/></joint>"#;
    let found: Vec<&str> = keys(xml)
        .iter()
        .map(|&(s, e)| std::str::from_utf8(&xml[s..e]).unwrap())
        .collect();
    assert_eq!(
        found,
        [r#" name="j""#, r#" type="revolute""#, r#" lower="-1""#]
    );
    let mut bytes = xml.to_vec();
    apply(&mut bytes, &Mutation::AddKey(0, false));
    assert!(bytes.starts_with(br#"<joint zz_unknown="1" name="j""#));
    let mut bytes = json.to_vec();
    apply(&mut bytes, &Mutation::Number(0, 0));
    assert!(bytes.starts_with(br#"{"a": NaN,"#));
}

/// Each tensor change gives a safetensors file with that change.
#[test]
fn tensor_changes_change_one_tensor() {
    use candle_core::{DType, Device, Tensor};
    let path = std::env::temp_dir().join(format!(
        "cerebellum-file-fuzz-{}-tensor-changes.safetensors",
        std::process::id()
    ));
    let tensors: std::collections::HashMap<String, Tensor> = [
        (
            "a".to_owned(),
            Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        ),
        (
            "b".to_owned(),
            Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
        ),
    ]
    .into();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let load = |bytes: &[u8]| candle_core::safetensors::load_buffer(bytes, &Device::Cpu).unwrap();
    let changed = |change: TensorChange| load(&change_tensor(&bytes, 0, &change).unwrap());
    let nan = changed(TensorChange::Value(1, f32::NAN));
    let values = nan["a"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values[1].is_nan() && values[0] == 1.0);
    assert_eq!(changed(TensorChange::Shrink(1))["a"].dims(), [2, 2]);
    assert_eq!(changed(TensorChange::DType(true))["a"].dtype(), DType::F64);
    assert_eq!(changed(TensorChange::DType(false))["a"].dtype(), DType::F16);
    assert!(!changed(TensorChange::Drop).contains_key("a"));
    assert!(changed(TensorChange::Extra).contains_key("a.extra"));
    let _ = std::fs::remove_file(&path);
}
