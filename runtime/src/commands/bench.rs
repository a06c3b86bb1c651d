//! `cerebellum bench`: speed measurements printed as ratios against a
//! baseline measured in the same run.

use clap::{Args, Subcommand};

/// Measure speed against a baseline measured in the same run.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: BenchKind,
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Physics steps per second of the SO-101 in rapier against MuJoCo
    /// stepping the same arm, the camera's frames per second, and the
    /// vectorised environment's steps per second for N = 1, 8, 64.
    Physics(super::bench_physics::PhysicsBenchArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchKind::Physics(args) => super::bench_physics::run(args),
    }
}
