//! The `cerebellum` runtime: rollouts through the tick stages, and the
//! command-line interface.

pub mod commands;
pub mod episodes;
