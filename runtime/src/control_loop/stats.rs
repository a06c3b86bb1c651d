//! What a loop counted and how long its ticks took, readable while it
//! runs.

use crate::envelope::EnvelopeCounters;
use hdrhistogram::Histogram;
use serde::Serialize;

/// What a run counted, tick by tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoopCounters {
    pub ticks: u64,
    pub episodes: u64,
    pub successes: u64,
    /// Ticks at which inference overran the deadline: inline, the chunk
    /// came late; on the worker, none came in time and the tick went on
    /// without it.
    pub deadline_misses: u64,
    /// Chunks taken up (a fresh plan replacing the rest of the last one).
    pub chunks: u64,
    /// Answers refused because every action of their chunk was meant for a
    /// tick already past (chunk playback; the current chunk plays on).
    pub stale_chunks: u64,
    /// Ticks with no action left to send (the envelope held position).
    pub holds: u64,
    pub stale_ticks: u64,
    pub observe_errors: u64,
    pub apply_errors: u64,
    pub policy_errors: u64,
    pub dropped_transitions: u64,
    pub weight_updates: u64,
    /// Ticks the operator commanded, and takeovers begun.
    pub intervention_ticks: u64,
    pub takeovers: u64,
    /// Episodes a learned success detector ended (`with_success_judge`).
    pub learned_successes: u64,
}

/// Counters and latency histograms of a run, readable while it runs.
#[derive(Clone, Debug)]
pub struct LoopStats {
    pub counters: LoopCounters,
    pub envelope: EnvelopeCounters,
    /// Time from the start of a tick to its command being sent (µs).
    pub tick_latency_us: Histogram<u64>,
    /// How late each tick started against its schedule (µs).
    pub jitter_us: Histogram<u64>,
    /// Observation-to-answer delay of each chunk (µs).
    pub inference_delay_us: Histogram<u64>,
    /// What the policy said the last time it failed.
    pub last_policy_error: Option<String>,
}

impl LoopStats {
    pub(super) fn new() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self {
            counters: LoopCounters::default(),
            envelope: EnvelopeCounters::default(),
            tick_latency_us: histogram(),
            jitter_us: histogram(),
            inference_delay_us: histogram(),
            last_policy_error: None,
        }
    }

    pub(super) fn policy_failed(&mut self, error: String) {
        self.counters.policy_errors += 1;
        self.last_policy_error = Some(error);
    }

    pub fn summary(&self) -> LoopSummary {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let c = self.counters;
        LoopSummary {
            counters: c,
            success_rate: (c.episodes > 0).then(|| c.successes as f64 / c.episodes as f64),
            clamps: self.envelope.clamps(),
            holds_forced: self.envelope.forced_holds(),
            envelope: self.envelope,
            last_policy_error: self.last_policy_error.clone(),
            tick_latency_p50_us: q(&self.tick_latency_us, 0.5),
            tick_latency_p99_us: q(&self.tick_latency_us, 0.99),
            tick_latency_max_us: self.tick_latency_us.max(),
            jitter_p50_us: q(&self.jitter_us, 0.5),
            jitter_p99_us: q(&self.jitter_us, 0.99),
            jitter_max_us: self.jitter_us.max(),
            inference_delay_p50_us: q(&self.inference_delay_us, 0.5),
            inference_delay_p99_us: q(&self.inference_delay_us, 0.99),
            inference_delay_max_us: self.inference_delay_us.max(),
        }
    }
}

/// The figures of a run, as `cerebellum run --json` prints them (the
/// counters flattened into the top level).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoopSummary {
    #[serde(flatten)]
    pub counters: LoopCounters,
    pub success_rate: Option<f64>,
    /// Ticks where the envelope changed a command the policy (or the
    /// operator) proposed.
    pub clamps: u64,
    /// Ticks the envelope held or moved to the safe pose whatever was
    /// proposed: stale observations, e-stop.
    pub holds_forced: u64,
    pub envelope: EnvelopeCounters,
    pub last_policy_error: Option<String>,
    pub tick_latency_p50_us: u64,
    pub tick_latency_p99_us: u64,
    pub tick_latency_max_us: u64,
    pub jitter_p50_us: u64,
    pub jitter_p99_us: u64,
    pub jitter_max_us: u64,
    /// Percentiles of `LoopStats::inference_delay_us`: the policy's
    /// latency per chunk.
    pub inference_delay_p50_us: u64,
    pub inference_delay_p99_us: u64,
    pub inference_delay_max_us: u64,
}
