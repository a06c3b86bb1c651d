//! One contract, every path: a checkpoint loaded for the simulated robot
//! (`checkpoint::load`, what `eval`, `run` and `train --resume` call) and
//! a robot reached over zenoh (`ZenohRobot::connect` with the policy's
//! spec) refuse the same differences, naming the same field, through
//! `RobotSpec::check_compatible`; control rates compare within
//! `RATE_TOLERANCE` and the simulator's default rate is exactly 50 Hz; and
//! a checkpoint's weights carry a SHA-256 that is checked before any
//! weight is used.
//!
//! The zenoh half opens real sessions on loopback (explicit endpoints,
//! scouting off, a free port per server) with `RobotServer` serving the
//! simulated arm as firmware would.

use cerebellum_core::{
    Action, Observation, RATE_TOLERANCE, ResetRequest, Robot, RobotError, RobotSpec, StepOutcome,
};
use cerebellum_firmware_bridge::client::{ClientConfig, ClientError, ClientHooks, ZenohRobot};
use cerebellum_firmware_bridge::keys::RobotKeys;
use cerebellum_firmware_bridge::protocol::{self, Body, Frame, Header, Meta, PROTOCOL_VERSION};
use cerebellum_firmware_bridge::server::{RobotServer, ServerConfig};
use cerebellum_firmware_bridge::session::{self, SessionConfig, free_local_port};
use cerebellum_policies::checkpoint::{self, CheckpointError, TrainingProvenance};
use cerebellum_policies::weights_hash::WeightsMismatch;
use cerebellum_policies::{ActionMode, GaussianConfig, GaussianMlpPolicy};
use cerebellum_sim::{ArmModel, ArmOptions, EnvConfig, PendulumEnv, PhysicsConfig, SimEnv};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zenoh::Wait;

fn so101() -> Arc<ArmModel> {
    static MODEL: OnceLock<Arc<ArmModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            ArmModel::load(&cerebellum_sim::so101_urdf(), &ArmOptions::default()).unwrap()
        })
        .clone()
}

/// The default simulated robot: the SO-101 on `reach` at 50 Hz.
fn sim_robot() -> SimEnv {
    SimEnv::new(EnvConfig::default(), Some(so101())).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cerebellum-contract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small policy for the default robot, saved in `dir`.
fn save_policy(dir: &Path) -> GaussianMlpPolicy {
    let config = GaussianConfig {
        hidden: vec![8, 8],
        init_log_std: -0.5,
        action_mode: ActionMode::Delta { max_step: 0.1 },
    };
    let mut policy = GaussianMlpPolicy::new(sim_robot().spec(), config, 7).unwrap();
    for (k, p) in policy.actor.params_mut().iter_mut().enumerate() {
        *p += 0.001 * (k % 17) as f32;
    }
    policy.set_version(3);
    checkpoint::save(dir, &policy, TrainingProvenance::default()).unwrap();
    policy
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// One way a spec can differ from the robot's, and the words that must
/// name it. `edit` changes a spec in its JSON form.
struct Difference {
    edit: Box<dyn Fn(&mut Value)>,
    needle: String,
}

fn difference(edit: impl Fn(&mut Value) + 'static, needle: impl Into<String>) -> Difference {
    Difference {
        edit: Box::new(edit),
        needle: needle.into(),
    }
}

/// Every way a spec can differ that a JSON spec can express as a
/// `RobotSpec`: name, rate, instruction flag, cameras, and for every
/// observation and action field its name, elements, unit and both limits.
fn differences(spec: &RobotSpec) -> Vec<Difference> {
    let mut all = vec![
        difference(|s| s["name"] = json!("arm2"), "robot name"),
        difference(
            |s| s["control_rate_hz"] = json!(30.0),
            "control rate: expected 30 Hz",
        ),
        difference(
            |s| {
                let flag = s["observation"]["instruction"].as_bool().unwrap();
                s["observation"]["instruction"] = json!(!flag);
            },
            "observation instruction",
        ),
        difference(
            |s| {
                s["observation"]["cameras"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "wrist", "height": 4, "width": 4, "channels": 3}))
            },
            "cameras",
        ),
    ];
    let kinds = [
        ("observation", &spec.observation.fields),
        ("action", &spec.action.fields),
    ];
    for (kind, fields) in kinds {
        for (i, field) in fields.iter().enumerate() {
            let name = field.name.clone();
            let first = field.elements[0].clone();
            let other_unit = if field.unit == cerebellum_core::Unit::Radian {
                "meter"
            } else {
                "radian"
            };
            // `f` applied to this field of a spec.
            let edit = move |f: fn(&mut Value)| move |s: &mut Value| f(&mut s[kind]["fields"][i]);
            all.push(difference(
                edit(|f| {
                    let renamed = format!("{}_v2", f["name"].as_str().unwrap());
                    f["name"] = json!(renamed)
                }),
                format!("{kind} fields"),
            ));
            all.push(difference(
                edit(|f| f["elements"][0] = json!("renamed")),
                format!("{kind} field `{name}` elements"),
            ));
            let unit = move |s: &mut Value| s[kind]["fields"][i]["unit"] = json!(other_unit);
            all.push(difference(unit, format!("{kind} field `{name}` unit")));
            all.push(difference(
                edit(|f| f["lower"][0] = json!(f["lower"][0].as_f64().unwrap() - 0.125)),
                format!("{kind} field `{name}[{first}]` lower limit"),
            ));
            all.push(difference(
                edit(|f| f["upper"][0] = json!(f["upper"][0].as_f64().unwrap() + 0.125)),
                format!("{kind} field `{name}[{first}]` upper limit"),
            ));
        }
    }
    all
}

/// Where an unknown key can hide in a spec.
const UNKNOWN_KEY_AT: [&[&str]; 4] = [
    &[],
    &["observation"],
    &["action"],
    &["observation", "fields", "0"],
];

fn with_unknown_key(spec: &Value, path: &[&str]) -> Value {
    let mut edited = spec.clone();
    let mut at = &mut edited;
    for key in path {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*key],
        };
    }
    at.as_object_mut()
        .unwrap()
        .insert("gain".into(), json!(2.0));
    edited
}

#[test]
fn the_simulation_path_refuses_every_difference_naming_it() {
    let dir = temp_dir("sim");
    save_policy(&dir);
    let robot = sim_robot();
    let contract_path = dir.join(checkpoint::CONTRACT_FILE);
    let saved = read_json(&contract_path);
    let cases = differences(robot.spec());
    assert!(cases.len() > 20, "{} cases", cases.len());
    for case in &cases {
        let mut contract = saved.clone();
        (case.edit)(&mut contract["spec"]);
        write_json(&contract_path, &contract);
        match checkpoint::load(&dir, Some(robot.spec())) {
            Err(e @ CheckpointError::Mismatch(_)) => {
                let text = e.to_string();
                assert!(
                    text.contains(&case.needle),
                    "`{text}` should name `{}`",
                    case.needle
                );
                assert!(text.contains("does not fit this robot"), "{text}");
            }
            other => panic!("{}: {:?}", case.needle, other.map(|_| ())),
        }
    }
    for path in UNKNOWN_KEY_AT {
        let mut contract = saved.clone();
        contract["spec"] = with_unknown_key(&saved["spec"], path);
        write_json(&contract_path, &contract);
        match checkpoint::load(&dir, Some(robot.spec())) {
            Err(e @ CheckpointError::Contract { .. }) => {
                assert!(
                    e.to_string().contains("unknown field `gain`"),
                    "{path:?}: {e}"
                )
            }
            other => panic!("unknown key at {path:?}: {:?}", other.map(|_| ())),
        }
    }
    write_json(&contract_path, &saved);
    checkpoint::load(&dir, Some(robot.spec())).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A robot that announces `spec` whatever the robot inside says.
struct Announcing<R> {
    inner: R,
    spec: RobotSpec,
}

impl<R: Robot> Robot for Announcing<R> {
    fn spec(&self) -> &RobotSpec {
        &self.spec
    }
    fn reset(&mut self, request: &ResetRequest) -> Result<Observation, RobotError> {
        self.inner.reset(request)
    }
    fn observe(&mut self) -> Result<Observation, RobotError> {
        self.inner.observe()
    }
    fn apply(&mut self, command: &Action) -> Result<StepOutcome, RobotError> {
        self.inner.apply(command)
    }
}

fn endpoint() -> String {
    format!("tcp/127.0.0.1:{}", free_local_port())
}

fn keys() -> RobotKeys {
    RobotKeys::new("cerebellum", "arm0").unwrap()
}

fn listen(endpoint: &str) -> zenoh::Session {
    session::open(&SessionConfig {
        mode: session::Mode::Peer,
        listen: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    })
    .unwrap()
}

fn serve(robot: impl Robot + Send + 'static, endpoint: &str) -> RobotServer {
    RobotServer::start(listen(endpoint), robot, ServerConfig::new(keys())).unwrap()
}

/// Connects to the robot at `endpoint` expecting `spec`.
fn connect(endpoint: &str, spec: &RobotSpec) -> Result<ZenohRobot, ClientError> {
    let session = SessionConfig {
        connect: vec![endpoint.to_owned()],
        ..SessionConfig::default()
    };
    let mut config = ClientConfig::new(session, keys());
    config.meta_timeout = Duration::from_secs(5);
    config.expected_spec = Some(spec.clone());
    ZenohRobot::connect(config, ClientHooks::default())
}

#[test]
fn the_zenoh_path_refuses_every_difference_naming_it() {
    let policy_spec = sim_robot().spec().clone();
    let as_json = serde_json::to_value(&policy_spec).unwrap();
    for case in differences(&policy_spec) {
        let mut announced = as_json.clone();
        (case.edit)(&mut announced);
        let robot = Announcing {
            inner: sim_robot(),
            spec: serde_json::from_value(announced).unwrap(),
        };
        let endpoint = endpoint();
        let server = serve(robot, &endpoint);
        match connect(&endpoint, &policy_spec) {
            Err(e @ ClientError::SpecMismatch { .. }) => {
                // The robot is `found` here, the policy `expected`: the
                // same field is named either way round.
                let text = e.to_string();
                let needle = case
                    .needle
                    .replace("control rate: expected 30 Hz", "the robot has 30 Hz");
                assert!(text.contains(&needle), "`{text}` should name `{needle}`");
            }
            other => panic!("{}: {:?}", case.needle, other.map(|_| ())),
        }
        server.stop();
    }
}

/// Announces `spec_json` as a robot's `Meta` until stopped (a firmware
/// whose spec carries a key this build does not know).
fn announce_raw(
    endpoint: &str,
    spec_json: String,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let zenoh = listen(endpoint);
    let stop = Arc::new(AtomicBool::new(false));
    let running = stop.clone();
    let thread = std::thread::spawn(move || {
        let boot = session::boot_id();
        let mut seq = 0;
        while !running.load(Ordering::SeqCst) {
            seq += 1;
            let frame = protocol::encode_to_vec(&Frame {
                header: Header {
                    protocol: PROTOCOL_VERSION,
                    robot: "arm0",
                    boot,
                    seq,
                    stamp: session::monotonic_now(),
                },
                body: Body::Meta(Meta {
                    control_rate_hz: 50.0,
                    command_timeout_s: 0.1,
                    lockstep: false,
                    spec_json: &spec_json,
                }),
            });
            zenoh.put(keys().meta(), frame).wait().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        zenoh.close().wait().unwrap();
    });
    (stop, thread)
}

#[test]
fn the_zenoh_path_refuses_unknown_keys_in_the_spec() {
    let policy_spec = sim_robot().spec().clone();
    let as_json = serde_json::to_value(&policy_spec).unwrap();
    // The raw announcer is heard at all: the spec as it is connects.
    let endpoint = endpoint();
    let (stop, thread) = announce_raw(&endpoint, as_json.to_string());
    connect(&endpoint, &policy_spec).unwrap();
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    for path in UNKNOWN_KEY_AT {
        let endpoint = self::endpoint();
        let (stop, thread) = announce_raw(&endpoint, with_unknown_key(&as_json, path).to_string());
        match connect(&endpoint, &policy_spec) {
            Err(e @ ClientError::BadMeta { .. }) => {
                assert!(
                    e.to_string().contains("unknown field `gain`"),
                    "{path:?}: {e}"
                )
            }
            other => panic!("unknown key at {path:?}: {:?}", other.map(|_| ())),
        }
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
    }
}

#[test]
fn the_simulators_rates_are_exact() {
    assert_eq!(PhysicsConfig::default().control_rate_hz(), 50.0);
    for (dt, substeps, rate) in [
        (0.002, 10, 50.0),
        (0.01, 2, 50.0),
        (0.001, 20, 50.0),
        (0.0025, 4, 100.0),
        (0.004, 5, 50.0),
    ] {
        let physics = PhysicsConfig {
            dt,
            substeps,
            ..PhysicsConfig::default()
        };
        assert_eq!(physics.control_rate_hz(), rate, "dt {dt} × {substeps}");
    }
    assert_eq!(sim_robot().spec().control_rate_hz, 50.0);
    assert_eq!(PendulumEnv::new().spec().control_rate_hz, 20.0);
}

/// The rate as the protocol document writes it (`50.0`), and the rate an
/// `f32` time step used to give, fit the default robot on both paths; a
/// rate off by more than `RATE_TOLERANCE` does not.
#[test]
fn a_spec_written_at_50_hz_fits_the_default_robot_on_both_paths() {
    let robot = sim_robot();
    let from_f32_step = 1.0 / (4.0 * f64::from(1.0f32 / 200.0));
    assert_ne!(from_f32_step, 50.0);
    let off = 50.0 * (1.0 + 3.0 * RATE_TOLERANCE);

    let dir = temp_dir("rate");
    save_policy(&dir);
    let contract_path = dir.join(checkpoint::CONTRACT_FILE);
    let text = std::fs::read_to_string(&contract_path).unwrap();
    assert!(text.contains("\"control_rate_hz\": 50.0"), "{text}");
    let saved = read_json(&contract_path);
    for (rate, fits) in [(50.0, true), (from_f32_step, true), (off, false)] {
        let mut contract = saved.clone();
        contract["spec"]["control_rate_hz"] = json!(rate);
        write_json(&contract_path, &contract);
        let loaded = checkpoint::load(&dir, Some(robot.spec()));
        assert_eq!(loaded.is_ok(), fits, "{rate} Hz: {:?}", loaded.err());
    }
    let _ = std::fs::remove_dir_all(&dir);

    let written: RobotSpec = {
        let mut spec = serde_json::to_value(robot.spec()).unwrap();
        spec["control_rate_hz"] = serde_json::from_str("50.0").unwrap();
        serde_json::from_value(spec).unwrap()
    };
    let endpoint = endpoint();
    let server = serve(sim_robot(), &endpoint);
    let arm = connect(&endpoint, &written).unwrap();
    assert_eq!(arm.spec().control_rate_hz, 50.0);
    drop(arm);
    server.stop();
    for (rate, fits) in [(from_f32_step, true), (off, false)] {
        let mut spec = robot.spec().clone();
        spec.control_rate_hz = rate;
        let endpoint = self::endpoint();
        let server = serve(
            Announcing {
                inner: sim_robot(),
                spec,
            },
            &endpoint,
        );
        let connected = connect(&endpoint, &written);
        assert_eq!(connected.is_ok(), fits, "{rate} Hz: {:?}", connected.err());
        server.stop();
    }
}

/// Each tensor's absolute byte range in a safetensors file.
fn tensor_ranges(file: &[u8]) -> BTreeMap<String, (Value, std::ops::Range<usize>)> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&file[8..8 + n]).unwrap();
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let offsets = &info["data_offsets"];
            let (a, b) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
            (name, (info, 8 + n + a as usize..8 + n + b as usize))
        })
        .collect()
}

/// The same tensors (by name, dtype, shape and data) in another file
/// layout: reverse name order, with metadata; `rename` renames tensors.
fn relaid(file: &[u8], rename: &dyn Fn(&str) -> String) -> Vec<u8> {
    let ranges = tensor_ranges(file);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"relaid": "by the test"}));
    let mut data = Vec::new();
    for (name, (info, range)) in ranges.iter().rev() {
        let start = data.len();
        data.extend_from_slice(&file[range.clone()]);
        let mut info = info.clone();
        info["data_offsets"] = json!([start, data.len()]);
        header.insert(rename(name), info);
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

#[test]
fn one_flipped_bit_in_any_tensor_is_refused_naming_it() {
    let dir = temp_dir("flip");
    let policy = save_policy(&dir);
    let robot = sim_robot();
    let weights = dir.join(checkpoint::WEIGHTS_FILE);
    let good = std::fs::read(&weights).unwrap();
    let contract = checkpoint::load_contract(&dir).unwrap();
    assert_eq!(contract.weights_sha256.len(), 64);
    let ranges = tensor_ranges(&good);
    assert_eq!(
        contract.tensor_sha256.keys().collect::<Vec<_>>(),
        ranges.keys().collect::<Vec<_>>()
    );
    for (k, (name, (_, range))) in ranges.iter().enumerate() {
        // A mantissa bit somewhere in the tensor: still a finite weight.
        let at = range.start + 4 * ((k * 7) % (range.len() / 4));
        let mut flipped = good.clone();
        flipped[at] ^= 1 << (k % 8);
        std::fs::write(&weights, &flipped).unwrap();
        match checkpoint::load(&dir, Some(robot.spec())) {
            Err(
                e @ CheckpointError::Integrity {
                    mismatch: WeightsMismatch::Tensor { .. },
                    ..
                },
            ) => {
                let text = e.to_string();
                let expected = &contract.tensor_sha256[name];
                assert!(text.contains(&format!("tensor `{name}`")), "{text}");
                assert!(text.contains(expected.as_str()), "{text}");
                let CheckpointError::Integrity {
                    mismatch: WeightsMismatch::Tensor { found, .. },
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert!(found.len() == 64 && found != *expected && text.contains(&found));
            }
            other => panic!("bit flipped in `{name}`: {:?}", other.map(|_| ())),
        }
    }

    // The same tensors laid out otherwise, in a checkpoint moved elsewhere,
    // verify and load the same weights.
    let moved = temp_dir("flip-moved");
    std::fs::create_dir_all(&moved).unwrap();
    let other_layout = relaid(&good, &|name| name.to_owned());
    assert_ne!(other_layout, good);
    std::fs::write(moved.join(checkpoint::WEIGHTS_FILE), &other_layout).unwrap();
    std::fs::copy(
        dir.join(checkpoint::CONTRACT_FILE),
        moved.join(checkpoint::CONTRACT_FILE),
    )
    .unwrap();
    let (loaded, _) = checkpoint::load(&moved, Some(robot.spec())).unwrap();
    assert_eq!(loaded.actor.params(), policy.actor.params());
    assert_eq!(loaded.critic.params(), policy.critic.params());
    assert_eq!(loaded.log_std, policy.log_std);
    // A renamed tensor is another tensor, even with equal data.
    let renamed = relaid(&good, &|name| name.replace("log_std", "log_sigma"));
    std::fs::write(moved.join(checkpoint::WEIGHTS_FILE), &renamed).unwrap();
    match checkpoint::load(&moved, Some(robot.spec())) {
        Err(e @ CheckpointError::Integrity { .. }) => {
            assert!(e.to_string().contains("tensor `log_sigma`"), "{e}")
        }
        other => panic!("renamed tensor: {:?}", other.map(|_| ())),
    }
    let _ = std::fs::remove_dir_all(&moved);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn format_1_contracts_are_refused_until_deliberately_upgraded() {
    let dir = temp_dir("format1");
    let policy = save_policy(&dir);
    let robot = sim_robot();
    let contract_path = dir.join(checkpoint::CONTRACT_FILE);
    let saved = read_json(&contract_path);
    let mut old = saved.clone();
    old["format_version"] = json!(1);
    let old = old.as_object_mut().unwrap();
    old.remove("weights_sha256");
    old.remove("tensor_sha256");
    write_json(&contract_path, &Value::Object(old.clone()));
    match checkpoint::load(&dir, Some(robot.spec())) {
        Err(e @ CheckpointError::Contract { .. }) => {
            let text = e.to_string();
            assert!(text.contains("format version 1"), "{text}");
            assert!(text.contains("upgrade_format_1"), "{text}");
        }
        other => panic!("format 1: {:?}", other.map(|_| ())),
    }
    let upgraded = checkpoint::upgrade_format_1(&dir).unwrap();
    let current: checkpoint::Contract = serde_json::from_value(saved).unwrap();
    assert_eq!(upgraded, current);
    let (loaded, _) = checkpoint::load(&dir, Some(robot.spec())).unwrap();
    assert_eq!(loaded.actor.params(), policy.actor.params());
    // Only format 1 is upgraded: a current contract is never re-hashed.
    assert!(matches!(
        checkpoint::upgrade_format_1(&dir),
        Err(CheckpointError::Contract { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
