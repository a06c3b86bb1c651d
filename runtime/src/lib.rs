//! The `cerebellum` runtime: the tick stages, rollouts and learners, and the
//! command-line interface.

pub mod commands;
pub mod control_loop;
pub mod envelope;
pub mod episodes;
pub mod interrupt;
pub mod learn;
pub mod loaded_policy;
pub mod memory;
pub mod recorder;
pub mod report;
pub mod robots;
pub mod success_judge;
pub mod tick;
