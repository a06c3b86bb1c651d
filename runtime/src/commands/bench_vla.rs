//! `cerebellum bench vla`: the vision-language-action policy's batch-1
//! chunk latency and behaviour-cloning throughput against a PyTorch policy
//! of the same architecture (bench/peers/torch_vla.py), one thread each,
//! measured in the same run.

use super::bench::run_peer;
use super::print_json;
use crate::learn::trainer::make_envs;
use cerebellum_core::{Action, Observation, Policy, Robot, Sampling};
use cerebellum_policies::vla::{InstructionTokenizer, VlaConfig, VlaPolicy};
use cerebellum_policies::{Decision, TrainablePolicy};
use cerebellum_sim::TaskKind;
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::time::Instant;

/// The VLA policy against PyTorch: batch-1 chunk latency and cloning
/// throughput, one thread each.
///
/// Ours: `VlaPolicy::act` on one reach-color observation (64×64 frame,
/// instruction, joints → a chunk of H actions), p50 and p99 over
/// --infer-iters calls; then behaviour-cloning steps at --batch (random
/// ±4 px shift, forward, chunk MSE + auxiliary loss, backward, Adam). The
/// peer runs the same network, the same steps, in PyTorch on one thread
/// (pip install -r bench/peers/requirements-torch.txt). The command runs
/// itself again with RAYON_NUM_THREADS set to --threads, so candle and our
/// convolutions use that many. Example (the numbers in docs/BENCHMARKS.md):
///
///   cerebellum bench vla --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct VlaBenchArgs {
    #[arg(long, default_value_t = 2000)]
    pub infer_iters: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 100)]
    pub train_steps: usize,
    /// Threads for our side (the peer always uses one).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Skip the PyTorch peer (ours only).
    #[arg(long)]
    pub no_peers: bool,
    /// The Python that has torch (e.g. a venv's bin/python).
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub json: bool,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: VlaBenchArgs) -> anyhow::Result<()> {
    let threads = args.threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(threads.as_str()) {
        // candle and gemm read the thread count from the environment.
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("RAYON_NUM_THREADS", &threads)
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    anyhow::ensure!(args.infer_iters >= 10, "--infer-iters must be at least 10");
    anyhow::ensure!(
        (1..=4096).contains(&args.batch),
        "--batch must be 1 to 4096"
    );
    anyhow::ensure!(args.train_steps >= 1, "--train-steps must be at least 1");
    let (env_config, model) =
        crate::learn::config::RobotSource::default().load(TaskKind::ReachColor)?;
    let env = make_envs(&env_config, model, 1)?.remove(0);
    let spec = env.spec().clone();
    let config = VlaConfig::default();
    let tokenizer = InstructionTokenizer::shipped();
    let vocab = tokenizer.vocab_size();
    let device = cerebellum_policies::device::device(cerebellum_policies::device::DeviceKind::Cpu)
        .map_err(anyhow::Error::msg)?;
    let mut policy = VlaPolicy::new(&spec, config.clone(), tokenizer, 0, &device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let camera = &spec.observation.cameras[0];
    let observations: Vec<Observation> = (0..args.batch.max(1))
        .map(|k| Observation {
            // Within every field's limits.
            state: spec
                .observation
                .fields
                .iter()
                .flat_map(|f| f.lower.iter().zip(&f.upper))
                .map(|(lo, hi)| lo + (hi - lo) * rng.random::<f32>())
                .collect(),
            images: vec![cerebellum_core::Image {
                camera: camera.name.clone(),
                height: camera.height,
                width: camera.width,
                channels: camera.channels,
                data: (0..camera.frame_len()).map(|_| rng.random()).collect(),
            }],
            instruction: Some(
                ["touch the red marker", "go to the blue one", "touch green"][k % 3].into(),
            ),
            timestamp: 0.0,
        })
        .collect();
    for _ in 0..50 {
        policy.act(&observations[..1], Sampling::Deterministic)?;
    }
    let mut times = Vec::with_capacity(args.infer_iters);
    for k in 0..args.infer_iters {
        let started = Instant::now();
        policy.act(
            &observations[k % observations.len()..][..1],
            Sampling::Deterministic,
        )?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    let act = spec.action.len();
    let chunks: Vec<Vec<Action>> = observations
        .iter()
        .map(|o| {
            (0..config.horizon)
                .map(|_| Action::new(o.state[..act].to_vec()))
                .collect()
        })
        .collect();
    let decisions: Vec<Decision> = observations
        .iter()
        .zip(&chunks)
        .map(|(observation, chunk)| Decision {
            observation,
            first_index: 0,
            actions: chunk.iter().collect(),
        })
        .collect();
    let data = policy.encode(&decisions)?;
    let rows: Vec<usize> = (0..args.batch).collect();
    let targets = vec![0.1f32; 3 * args.batch];
    let mut optimizer = policy.optimizer(3e-4);
    let mut step = |policy: &mut VlaPolicy, rng: &mut ChaCha8Rng| {
        policy.imitation_step(
            &data,
            &rows,
            Some(&targets),
            1.0,
            cerebellum_policies::vla::Augment {
                shift: 4,
                word_dropout: 0.0,
            },
            rng,
            &mut optimizer,
            1.0,
        )
    };
    for _ in 0..3 {
        step(&mut policy, &mut rng)?;
    }
    let started = Instant::now();
    for _ in 0..args.train_steps {
        step(&mut policy, &mut rng)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let samples_per_second = (args.train_steps * args.batch) as f64 / seconds;
    println!(
        "VLA ({} parameters; {} px image, convolutions {:?}/{:?}/{:?}, chunk {}×{act}), {} thread(s):",
        policy.param_count(),
        config.image_size,
        config.conv_channels,
        config.conv_kernels,
        config.conv_strides,
        config.horizon,
        args.threads
    );
    println!(
        "  ours:    chunk latency p50 {p50:.3} ms, p99 {p99:.3} ms; cloning {samples_per_second:.0} samples/s at batch {}",
        args.batch
    );
    let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let peer = if args.no_peers {
        Err("skipped".to_owned())
    } else {
        let peer_args: Vec<String> = [
            ("--image", config.image_size.to_string()),
            ("--channels", join(&config.conv_channels)),
            ("--kernels", join(&config.conv_kernels)),
            ("--strides", join(&config.conv_strides)),
            ("--words", config.max_words.to_string()),
            ("--vocab", vocab.to_string()),
            ("--text-width", config.text_width.to_string()),
            ("--state-dim", spec.observation.state_len().to_string()),
            ("--horizon", config.horizon.to_string()),
            ("--act", act.to_string()),
            ("--hidden", config.head_hidden[0].to_string()),
            ("--critic-hidden", config.critic_hidden[0].to_string()),
            ("--infer-iters", args.infer_iters.to_string()),
            ("--batch", args.batch.to_string()),
            ("--train-steps", args.train_steps.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect();
        run_peer(
            &args.python,
            "torch_vla.py",
            &peer_args,
            "requirements-torch.txt",
        )
    };
    let ratios = match &peer {
        Ok(r) => {
            let theirs_p50 = r["infer_p50_ms"].as_f64().unwrap_or(f64::NAN);
            let theirs_p99 = r["infer_p99_ms"].as_f64().unwrap_or(f64::NAN);
            let theirs_train = r["train_samples_per_second"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  PyTorch: chunk latency p50 {theirs_p50:.3} ms, p99 {theirs_p99:.3} ms; cloning {theirs_train:.0} samples/s ({} parameters)",
                r["params"]
            );
            let ratios = json!({
                "latency_p50_ours_over_torch": p50 / theirs_p50,
                "latency_p99_ours_over_torch": p99 / theirs_p99,
                "training_ours_over_torch": samples_per_second / theirs_train,
            });
            println!(
                "  ratios:  latency p50 {:.2}× PyTorch's (lower is faster), cloning throughput {:.2}× PyTorch's",
                p50 / theirs_p50,
                samples_per_second / theirs_train
            );
            Some(ratios)
        }
        Err(why) => {
            println!("  PyTorch: not measured: {why}");
            None
        }
    };
    if args.json {
        print_json(&json!({
            "command": "bench vla",
            "ok": true,
            "threads": args.threads,
            "parameters": policy.param_count(),
            "config": config,
            "cerebellum": {
                "infer_p50_ms": p50,
                "infer_p99_ms": p99,
                "train_samples_per_second": samples_per_second,
                "batch": args.batch,
            },
            "peer": peer.as_ref().ok(),
            "peer_error": peer.as_ref().err(),
            "ratios": ratios,
        }));
    }
    Ok(())
}
