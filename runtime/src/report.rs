//! What a training run leaves on disk besides the checkpoint:
//! `metrics.csv` (learning figures only, identical for one seed on one
//! machine), `timing.csv` (wall-clock figures) and `learning_curve.png`.

use crate::learn::IterationReport;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

pub const METRICS_HEADER: &str = "iteration,env_steps,episodes,mean_return,success_rate,policy_loss,value_loss,entropy,approx_kl,clip_fraction,grad_norm,rolled_back,rejected,reward_version,progress_std,learned_successes,learned_truth_pearson,progress_mean,discarded_starts,resample_rounds";
pub const TIMING_HEADER: &str =
    "iteration,env_steps,collect_seconds,update_seconds,steps_per_second";

pub struct RunFiles {
    metrics: BufWriter<File>,
    timing: BufWriter<File>,
}

fn open(path: &Path, header: &str, append: bool) -> anyhow::Result<BufWriter<File>> {
    let exists = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut w = BufWriter::new(file);
    if !(append && exists) {
        writeln!(w, "{header}")?;
    }
    Ok(w)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

/// Drops the rows of `path` written after `iteration` (a run that crashed
/// after its last checkpoint logged iterations the resumed run repeats),
/// rewriting the file atomically; a missing file is left missing.
fn cut_after(path: &Path, iteration: u64) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let mut kept = String::with_capacity(text.len());
    for (k, line) in text.lines().enumerate() {
        let row_iteration = line.split(',').next().and_then(|i| i.parse::<u64>().ok());
        if k == 0 || row_iteration.is_some_and(|i| i <= iteration) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept.len() != text.len() {
        crate::recorder::write_atomically(path, kept.as_bytes())?;
    }
    Ok(())
}

impl RunFiles {
    /// Continues the files of a run resumed at `iteration`: rows logged
    /// after it (by a run that stopped before checkpointing them) are
    /// dropped, so no iteration appears twice.
    pub fn resume(dir: &Path, iteration: u64) -> anyhow::Result<Self> {
        cut_after(&dir.join("metrics.csv"), iteration)?;
        cut_after(&dir.join("timing.csv"), iteration)?;
        Self::open(dir, true)
    }

    /// `append` continues the files of a resumed run.
    pub fn open(dir: &Path, append: bool) -> anyhow::Result<Self> {
        Ok(Self {
            metrics: open(&dir.join("metrics.csv"), METRICS_HEADER, append)?,
            timing: open(&dir.join("timing.csv"), TIMING_HEADER, append)?,
        })
    }

    pub fn write(&mut self, r: &IterationReport) -> anyhow::Result<()> {
        let u = &r.update;
        writeln!(
            self.metrics,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.iteration,
            r.env_steps,
            r.episodes,
            opt(r.mean_return),
            opt(r.success_rate),
            u.policy_loss,
            u.value_loss,
            u.entropy,
            u.approx_kl,
            u.clip_fraction,
            u.grad_norm,
            u.rolled_back as u8,
            r.rejected,
            r.reward_version.map(|v| v.to_string()).unwrap_or_default(),
            opt(r.progress_std),
            r.learned_successes,
            opt(r.learned_truth_pearson),
            opt(r.progress_mean),
            r.discarded_starts,
            r.resample_rounds
        )?;
        let seconds = r.collect_seconds + r.update_seconds;
        writeln!(
            self.timing,
            "{},{},{:.4},{:.4},{:.1}",
            r.iteration,
            r.env_steps,
            r.collect_seconds,
            r.update_seconds,
            r.steps as f64 / seconds.max(1e-9)
        )?;
        self.metrics.flush()?;
        self.timing.flush()?;
        Ok(())
    }
}

/// Reads (env_steps, mean_return, success_rate) back from `metrics.csv`,
/// skipping iterations in which no episode ended.
pub fn read_curve(path: &Path) -> anyhow::Result<Vec<(f64, f64, f64)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            Some((
                cols.get(1)?.parse().ok()?,
                cols.get(3)?.parse().ok()?,
                cols.get(4)?.parse().ok()?,
            ))
        })
        .collect())
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Return and success rate against env steps, one panel each.
pub fn plot_learning_curve(
    curve: &[(f64, f64, f64)],
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(!curve.is_empty(), "no finished episodes to plot");
    let returns: Vec<(f64, f64)> = curve.iter().map(|c| (c.0, c.1)).collect();
    let successes: Vec<(f64, f64)> = curve.iter().map(|c| (c.0, c.2)).collect();
    plot_two_curves(
        title,
        "env steps",
        Curve {
            label: "episode return",
            points: &returns,
            range: None,
        },
        Curve {
            label: "success rate",
            points: &successes,
            range: Some((0.0, 1.0)),
        },
        path,
    )
}

/// One curve of `plot_two_curves`: its y label, its points, and its y
/// range (`None`: fitted to the points).
pub struct Curve<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
    pub range: Option<(f64, f64)>,
}

/// Two curves over one x axis, one above the other (the top one scaled to
/// its values, the bottom one to `bottom.2` when given): the learning
/// curves of `train` (return and success against env steps) and of the
/// VLA's cloning (loss and held-out success against gradient steps).
pub fn plot_two_curves(
    title: &str,
    x_desc: &str,
    top: Curve<'_>,
    bottom: Curve<'_>,
    path: &Path,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    // The font ships inside the binary: no system fonts, no downloads.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (upper, lower) = root.split_vertically(300);
    let all = top.points.iter().chain(bottom.points);
    let max_x = all.map(|c| c.0).fold(1.0f64, f64::max);
    let range = |points: &[(f64, f64)]| {
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
            (lo.min(c.1), hi.max(c.1))
        });
        if lo > hi {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.05).max(1e-3);
        (lo - pad, hi + pad)
    };
    for (area, curve, color) in [(&upper, top, BLUE), (&lower, bottom, RED)] {
        let (desc, points) = (curve.label, curve.points);
        let (lo, hi) = curve.range.unwrap_or_else(|| range(points));
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, lo..hi)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(desc).draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn resuming_drops_the_rows_logged_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("cerebellum-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let metrics = dir.join("metrics.csv");
        std::fs::write(&metrics, "iteration,env_steps\n1,10\n2,20\n3,30\n4,40\n").unwrap();
        drop(super::RunFiles::resume(&dir, 2).unwrap());
        assert_eq!(
            std::fs::read_to_string(&metrics).unwrap(),
            "iteration,env_steps\n1,10\n2,20\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
